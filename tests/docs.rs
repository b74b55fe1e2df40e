//! Generated documentation stays usable and current: shell completions, the man page (rendered
//! by the real `man`/`groff` when installed) and the checked-in `docs/cli.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rbuild(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(args)
        .output()
        .expect("run rbuild");
    assert!(
        out.status.success(),
        "rbuild {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_of(args: &[&str]) -> String {
    String::from_utf8(rbuild(args).stdout).expect("utf-8 output")
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[test]
fn completions_for_bash_zsh_fish_know_build_and_build_arg() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completion", shell]);
        assert!(!script.trim().is_empty(), "{shell}: empty script");
        assert!(script.contains("build"), "{shell}: no `build` subcommand");
        assert!(script.contains("build-arg"), "{shell}: no --build-arg flag");
        assert!(script.contains("rbuild"), "{shell}: not about rbuild");
    }
    for shell in ["elvish", "powershell"] {
        let script = stdout_of(&["completion", shell]);
        assert!(script.contains("build-arg"), "{shell}: no --build-arg flag");
    }
}

#[test]
fn bash_completion_offers_build_arg() {
    let Some(bash) = on_path("bash") else {
        eprintln!("skipping: bash is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("rbuild.bash");
    std::fs::write(&script, stdout_of(&["completion", "bash"])).expect("write script");
    // Sourcing it must register a completion for `rbuild`, and asking it to complete
    // `rbuild build --build-a` must offer `--build-arg`.
    let out = Command::new(bash)
        .arg("-c")
        .arg(format!(
            "source {} && complete -p rbuild && \
             COMP_WORDS=(rbuild build --build-a) && COMP_CWORD=2 && \
             _rbuild rbuild --build-a build && echo \"offered: ${{COMPREPLY[*]}}\"",
            script.display()
        ))
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("complete"), "bash output: {stdout}");
    assert!(
        stdout.contains("offered: --build-arg"),
        "bash did not complete --build-a to --build-arg: {stdout}"
    );
}

#[test]
fn man_page_renders() {
    let page = stdout_of(&["completion", "man"]);
    assert!(page.contains(".TH rbuild 1"), "no .TH header:\n{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH COMMANDS"] {
        assert!(page.contains(section), "missing {section}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rbuild.1");
    std::fs::write(&file, &page).expect("write page");

    if let Some(groff) = on_path("groff") {
        // -ww turns on every warning; -z formats without output, so stderr holds only complaints.
        let out = Command::new(groff)
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&file)
            .output()
            .expect("run groff");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "groff: {stderr}"
        );
    }
    let Some(man) = on_path("man") else {
        eprintln!("skipping the man -l rendering: man is not installed");
        return;
    };
    let out = Command::new(man)
        .arg("-l")
        .arg(&file)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("run man");
    assert!(
        out.status.success(),
        "man -l: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // man may embolden with backspaces when it thinks it writes to a terminal.
    let plain = strip_overstrike(&String::from_utf8_lossy(&out.stdout));
    for needle in ["NAME", "rbuild build", "--build-arg", "EXIT STATUS"] {
        assert!(
            plain.contains(needle),
            "rendered page lacks {needle}:\n{plain}"
        );
    }
}

/// Removes `x\bx` bold and `_\bx` underline sequences.
fn strip_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{8}' {
            out.pop();
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

fn cli_md_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md")
}

#[test]
fn cli_md_is_current() {
    let generated = stdout_of(&["debug", "cli-reference"]);
    let path = cli_md_path();
    if std::env::var_os("RBUILD_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write docs/cli.md");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let first_difference = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "docs/cli.md is stale (first difference at line {}). The CLI in src/cli/args.rs \
             changed; regenerate with:\n    RBUILD_BLESS=1 cargo test --test docs cli_md_is_current",
            first_difference + 1
        );
    }
}

#[test]
fn cli_md_documents_every_build_flag_shown_by_help() {
    let help = stdout_of(&["build", "--help"]);
    let reference = std::fs::read_to_string(cli_md_path()).expect("read docs/cli.md");
    let flags: Vec<&str> = help
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .filter(|w| {
            w.len() > 2
                && w.starts_with("--")
                && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .collect();
    assert!(flags.contains(&"--build-arg"), "help: {help}");
    for flag in flags {
        let as_word = regex::Regex::new(&format!("(^|[ `]){flag}($|[^A-Za-z0-9-])")).unwrap();
        assert!(
            as_word.is_match(&reference),
            "{flag} from `rbuild build --help` is not in docs/cli.md"
        );
    }
}

/// Every fixed "not supported yet" message in the sources (`unsupported("...")` at the CLI,
/// `what: "..."` in the solver, `Unsupported("...")` elsewhere) is listed in
/// `docs/differences.md`, so the page cannot silently fall behind the code.
#[test]
fn differences_md_lists_every_fixed_unsupported_message() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/differences.md"))
        .expect("read docs/differences.md")
        .replace('`', "");
    let patterns = [
        regex::Regex::new(r#"unsupported\(\s*"([^"]+)",?\s*\)"#).unwrap(),
        regex::Regex::new(r#"what:\s*"([^"]+)"\.into\(\)"#).unwrap(),
        regex::Regex::new(r#"Unsupported\("([^"]+)"\.into\(\)"#).unwrap(),
    ];
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(root.join("src")) {
        let entry = entry.expect("walk src");
        if entry.path().extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("read source");
        for re in &patterns {
            for cap in re.captures_iter(&text) {
                found.push((entry.path().to_path_buf(), cap[1].replace('`', "")));
            }
        }
    }
    // The CLI refuses several things today; finding none means the patterns broke.
    assert!(
        found.iter().any(|(p, _)| p.ends_with("src/cli/build.rs")),
        "the scan found no refusal in src/cli/build.rs; are the patterns out of date? {found:?}"
    );
    let missing: Vec<String> = found
        .iter()
        .filter(|(_, m)| !doc.contains(m.as_str()))
        .map(|(p, m)| format!("{m:?} ({})", p.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/differences.md does not mention these \"not supported yet\" features; add a row \
         for each (or remove the refusal from the code):\n{}",
        missing.join("\n")
    );
}
