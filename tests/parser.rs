//! `rbuild debug parse` end to end: golden JSON/text output and error rendering for the
//! fixtures in `testdata/parser/`, the differential test against BuildKit's Go parser, and a
//! bounded randomized no-panic/no-hang run over the parser and the shell lexer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rbuild::dockerfile::{Lexer, parse};

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rbuild(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(args)
        .current_dir(crate_root())
        .env(
            "RBUILD_ROOT",
            std::env::temp_dir().join("rbuild-parser-test-root"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn rbuild");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for rbuild")
}

fn cases(kind: &str) -> Vec<(String, PathBuf)> {
    let dir = crate_root().join("testdata/parser").join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(crate_root())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn json_and_text_output_match_fixtures() {
    for (name, dir) in cases("ok") {
        let file = rel(&dir.join("Dockerfile"));
        for (format, expected) in [("json", "expected.json"), ("text", "expected.txt")] {
            let out = rbuild(&["debug", "parse", "--format", format, &file], None);
            assert!(
                out.status.success(),
                "{name} ({format}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let want = std::fs::read_to_string(dir.join(expected)).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                want,
                "{name} ({format})"
            );
        }
    }
}

#[test]
fn json_output_is_the_serde_form_of_node() {
    let out = rbuild(
        &["debug", "parse", "--format", "json", "-"],
        Some(b"FROM a\nRUN <<EOF\nhi\nEOF\nONBUILD COPY --link x y\n"),
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &v[1];
    let keys: Vec<&str> = run
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "instruction",
        "flags",
        "args",
        "json_form",
        "start_line",
        "end_line",
        "heredocs",
        "onbuild",
    ];
    want.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, want);
    assert_eq!(run["heredocs"][0]["name"], "EOF");
    assert_eq!(run["heredocs"][0]["content"], "hi\n");
    assert_eq!(run["heredocs"][0]["fd"], 0);
    assert_eq!(run["end_line"], 4);
    assert_eq!(v[2]["onbuild"]["instruction"], "COPY");
    assert_eq!(v[2]["onbuild"]["flags"][0], "--link");
}

#[test]
fn errors_are_rendered_with_an_excerpt_and_exit_1() {
    for (name, dir) in cases("err") {
        let file = rel(&dir.join("Dockerfile"));
        let out = rbuild(&["debug", "parse", &file], None);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(out.stdout.is_empty(), "{name}");
        let want = std::fs::read_to_string(dir.join("expected.stderr")).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), want, "{name}");
    }
}

#[test]
fn missing_file_is_an_error() {
    let out = rbuild(&["debug", "parse", "testdata/parser/does-not-exist"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
}

/// Runs `scripts/difftest-parser` (BuildKit's Go parser through the PyPI `dockerfile`
/// package) with a fixed seed when python3 and the package are available.
#[test]
fn differential_against_buildkit_parser() {
    let probe = Command::new("python3")
        .args(["-c", "import dockerfile"])
        .output();
    match probe {
        Err(e) => {
            println!("SKIP difftest: python3 not runnable ({e})");
            return;
        }
        Ok(o) if !o.status.success() => {
            println!(
                "SKIP difftest: python package 'dockerfile' not importable (pip install dockerfile)"
            );
            return;
        }
        Ok(_) => {}
    }
    let out = Command::new("python3")
        .current_dir(crate_root())
        .args([
            "scripts/difftest-parser",
            "--seed",
            "20261128",
            "--count",
            "400",
            "--rbuild",
            env!("CARGO_BIN_EXE_rbuild"),
        ])
        .output()
        .expect("run difftest");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "difftest found divergences:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small deterministic PRNG (xorshift64*), so failures replay from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "RUN ",
    "FROM ",
    "COPY ",
    "ENV ",
    "LABEL ",
    "ARG ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "CMD ",
    "\n",
    "\r\n",
    "\\\n",
    "`\n",
    " ",
    "\t",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    "<<",
    "<<-",
    "EOF",
    "\tEOF\n",
    "EOF\n",
    "3<<",
    "'",
    "\"",
    "\\",
    "`",
    "$",
    "${",
    "}",
    "${a:-",
    "${a#",
    "${a//",
    "/",
    ":",
    "?",
    "*",
    "=",
    "--",
    "--mount=",
    "[",
    "]",
    "[\"a\"]",
    ",",
    "é",
    "\u{a0}",
    "\u{85}",
    "\u{feff}",
    "a",
    "b c",
    "0",
    "{",
    "%",
    "%%",
    "##",
];

fn random_text(rng: &mut Rng) -> String {
    let n = rng.below(40);
    (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
}

/// Edge inputs always run first (byte-wise space quirks, empty heredoc names, BOM, EOF in
/// the middle of a substitution). Crash inputs found by `fuzz/` belong here too.
const REGRESSIONS: &[&str] = &[
    "\\\n\n",
    "RUN --a=\u{a0}b x",
    "HEALTHCHECK\u{85}CMD",
    "RUN <<\n",
    "RUN <<''\nx\n",
    "RUN ${a:",
    "ENV \"",
    "# escape=\n",
    "#escape=\u{a0}\nRUN x",
];

#[test]
fn randomized_inputs_never_panic_or_hang() {
    let deadline = Instant::now() + Duration::from_secs(4);
    let env: Vec<(String, String)> =
        vec![("a".into(), "x.y/z".into()), ("b".into(), String::new())];
    let lexers = [Lexer::new('\\'), Lexer::new('`')];
    for input in REGRESSIONS {
        let _ = parse(input);
        for lex in &lexers {
            let _ = lex.process_words(input, &env);
        }
    }
    let mut done = 0;
    for seed in 1..=u64::MAX {
        if Instant::now() > deadline {
            break;
        }
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        for _ in 0..50 {
            let text = random_text(&mut rng);
            let started = Instant::now();
            if let Ok(df) = parse(&text) {
                let _ = rbuild::dockerfile::dump(&df);
                for node in &df.nodes {
                    for arg in &node.args {
                        for lex in &lexers {
                            let _ = lex.process_word_with_matches(arg, &env);
                        }
                    }
                }
            }
            for lex in &lexers {
                let _ = lex.process_words(&text, &env);
            }
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "seed {seed}: input took {:?}: {text:?}",
                started.elapsed()
            );
            done += 1;
        }
        if seed >= 400 {
            break;
        }
    }
    assert!(done > 1000, "only {done} inputs ran");
}
