//! Conformance runner over `../shared/corpus` (relative to the crate root).
//!
//! Each sub-directory of the corpus is a *part*; its layout decides which runner reads it:
//! - `testfiles/<case>/{Dockerfile,result}` and `testfiles-negative/<case>/Dockerfile`
//!   (BuildKit's parser golden files): the text dump must equal `result`; negative cases must
//!   fail to parse.
//! - `envVarTest` / `wordsTest` (BuildKit's shell tables, `input | expected` lines, `ENV A=B`
//!   or bare `A=B` lines set up variables): word expansion and word splitting.
//! - anything else: `UNKNOWN FORMAT <part>`, which counts as a failure.
//!
//! Failures listed in `tests/conformance-known-failures.txt` (`part/case  # reason`, or
//! `part/*`) are reported but do not fail the test. New layouts are added to `RUNNERS`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rbuild::dockerfile::{Lexer, dump, parse};

/// Outcome of one part.
#[derive(Debug, Default)]
struct PartReport {
    passed: usize,
    failed: Vec<(String, String)>,
}

/// A runner: whether it understands a part's layout, and how to run it.
struct Runner {
    name: &'static str,
    detect: fn(&Path) -> bool,
    run: fn(&Path) -> PartReport,
}

const RUNNERS: &[Runner] = &[
    Runner {
        name: "buildkit-parser",
        detect: |p| p.join("testfiles").is_dir() || p.join("testfiles-negative").is_dir(),
        run: run_parser_part,
    },
    Runner {
        name: "buildkit-shell",
        detect: |p| p.join("envVarTest").is_file() || p.join("wordsTest").is_file(),
        run: run_shell_part,
    },
];

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn run_parser_part(part: &Path) -> PartReport {
    let mut r = PartReport::default();
    for case in sorted_dirs(&part.join("testfiles")) {
        let name = name_of(&case);
        let (Ok(src), Ok(want)) = (
            std::fs::read(case.join("Dockerfile")),
            std::fs::read_to_string(case.join("result")),
        ) else {
            r.failed.push((name, "missing Dockerfile or result".into()));
            continue;
        };
        match parse(&String::from_utf8_lossy(&src)) {
            Ok(df) if dump(&df) == want => r.passed += 1,
            Ok(df) => r
                .failed
                .push((name, format!("dump differs:\n{}", dump(&df)))),
            Err(e) => r.failed.push((name, format!("parse failed: {e}"))),
        }
    }
    for case in sorted_dirs(&part.join("testfiles-negative")) {
        let name = format!("negative/{}", name_of(&case));
        let src = std::fs::read(case.join("Dockerfile")).unwrap_or_default();
        match parse(&String::from_utf8_lossy(&src)) {
            Err(_) => r.passed += 1,
            Ok(df) => r
                .failed
                .push((name, format!("parsed but must fail:\n{}", dump(&df)))),
        }
    }
    r
}

/// Variables BuildKit's `envVarTest` runs with.
const ENV_VAR_TEST_ENV: &[(&str, &str)] = &[
    ("PWD", "/home"),
    ("SHELL", "bash"),
    ("KOREAN", "한국어"),
    ("NULL", ""),
];

/// `ENV A=B` or bare `A=B` (no `|`): a variable for the following lines.
fn env_line(line: &str) -> Option<(String, String)> {
    let body = line
        .strip_prefix("ENV ")
        .map(|l| l.trim_start_matches(' '))
        .unwrap_or(line);
    if line.contains('|') || (!line.starts_with("ENV ") && !line.contains('=')) {
        return None;
    }
    let (k, v) = body.split_once('=').unwrap_or((body, ""));
    Some((k.to_string(), v.to_string()))
}

fn run_shell_part(part: &Path) -> PartReport {
    let mut r = PartReport::default();
    let lex = Lexer::new('\\');
    if let Ok(text) = std::fs::read_to_string(part.join("envVarTest")) {
        let mut env: Vec<(String, String)> = ENV_VAR_TEST_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if raw.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(kv) = env_line(line) {
                env.push(kv);
                continue;
            }
            let name = format!("envVarTest:{}", i + 1);
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            let (source, expected) = match cols.as_slice() {
                [platform, s, e] if *platform == "W" => {
                    let _ = (s, e);
                    continue;
                }
                [_, s, e] | [s, e] => (*s, *e),
                _ => {
                    r.failed.push((name, format!("bad line: {raw:?}")));
                    continue;
                }
            };
            match (lex.process_word(source, &env), expected) {
                (Err(_), "error") => r.passed += 1,
                (Ok(got), want) if got == want => r.passed += 1,
                (got, want) => r
                    .failed
                    .push((name, format!("{source:?}: want {want:?}, got {got:?}"))),
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(part.join("wordsTest")) {
        let mut env: Vec<(String, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.starts_with('#') || raw.trim().is_empty() {
                continue;
            }
            if let Some(kv) = env_line(raw) {
                env.push(kv);
                continue;
            }
            let name = format!("wordsTest:{}", i + 1);
            let Some((input, expected)) = raw.split_once('|') else {
                r.failed.push((name, format!("bad line: {raw:?}")));
                continue;
            };
            let want: Vec<String> = expected
                .trim_start_matches(' ')
                .split(',')
                .map(String::from)
                .collect();
            let got = lex
                .process_words(input.trim(), &env)
                .unwrap_or_else(|_| vec!["error".to_string()]);
            if got == want {
                r.passed += 1;
            } else {
                r.failed
                    .push((name, format!("{input:?}: want {want:?}, got {got:?}")));
            }
        }
    }
    r
}

/// `part/case` entries (and `part/*`) from the known-failures file.
fn known_failures() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance-known-failures.txt");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Runs every part under `corpus`; returns the unexpected failures as `part/case`.
fn run_corpus(corpus: &Path, known: &BTreeSet<String>) -> Vec<String> {
    let mut unexpected = Vec::new();
    for part in sorted_dirs(corpus) {
        let part_name = name_of(&part);
        let Some(runner) = RUNNERS.iter().find(|r| (r.detect)(&part)) else {
            println!("UNKNOWN FORMAT {part_name}");
            if !known.contains(&format!("{part_name}/*")) {
                unexpected.push(format!("{part_name}/*"));
            }
            continue;
        };
        let report = (runner.run)(&part);
        println!(
            "{part_name} ({}): {} passed, {} failed",
            runner.name,
            report.passed,
            report.failed.len()
        );
        for (case, why) in &report.failed {
            let id = format!("{part_name}/{case}");
            let listed = known.contains(&id) || known.contains(&format!("{part_name}/*"));
            println!("  {} {id}: {why}", if listed { "KNOWN" } else { "FAIL " });
            if !listed {
                unexpected.push(id);
            }
        }
    }
    unexpected
}

#[test]
fn conformance_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if !corpus.is_dir() {
        println!("SKIP conformance: ../shared/corpus not found");
        return;
    }
    let unexpected = run_corpus(&corpus, &known_failures());
    assert!(
        unexpected.is_empty(),
        "unexpected conformance failures: {unexpected:?}"
    );
}

/// The runner itself, on a small corpus written here (not BuildKit's files).
#[test]
fn runner_reads_both_layouts_and_flags_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |rel: &str, body: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    write(
        "p/testfiles/ok/Dockerfile",
        "FROM x\nENV a=b\nRUN [\"sh\"]\n",
    );
    write(
        "p/testfiles/ok/result",
        "(from \"x\")\n(env \"a\" \"b\" \"=\")\n(run \"sh\")\n",
    );
    write("p/testfiles/wrong/Dockerfile", "FROM y\n");
    write("p/testfiles/wrong/result", "(from \"z\")\n");
    write("p/testfiles-negative/bad/Dockerfile", "FROM x\nCOPPY a b\n");
    write(
        "s/envVarTest",
        "# comment\nA|$PWD/x|/home/x\nU|${NULL:-d}|d\nW|%PWD%|ignored\nA|${x|error\nA|${SHELL}|wrong\n",
    );
    write(
        "s/wordsTest",
        "ENV V=a b\n$V c|a,b,c\n'x y'|x y\nQ=1\n$Q|1\n",
    );
    write("u/something-else.txt", "?");

    let none = BTreeSet::new();
    let mut got = run_corpus(root, &none);
    got.sort();
    assert_eq!(got, ["p/wrong", "s/envVarTest:6", "u/*"]);

    let known: BTreeSet<String> = ["p/wrong", "s/envVarTest:6", "u/*"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(run_corpus(root, &known).is_empty());
}
