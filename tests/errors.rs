//! What a failed build prints at exit: for a step that failed on one Dockerfile line (a COPY
//! whose source is missing, a RUN that exits non-zero, a bad flag value), the Dockerfile
//! excerpt with line numbers and the instruction marked, a hint, and the cause as the last
//! line; exit code 1.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::registry::Registry;
use common::{Context, TestRoot};

fn build(root: &TestRoot, ctx: &Context) -> Output {
    root.rbuild()
        .args(["build", "--progress=plain"])
        .arg(ctx.path())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines from the `Dockerfile:N` header to the end, with the context path shortened.
fn report(out: &Output, ctx: &Context) -> String {
    let text = stderr(out).replace(&ctx.path().display().to_string(), "<ctx>");
    let start = text
        .find("<ctx>/Dockerfile:")
        .unwrap_or_else(|| panic!("no excerpt in:\n{text}"));
    text[start..].to_string()
}

#[test]
fn missing_copy_source_shows_the_line_and_a_hint() {
    let root = TestRoot::new();
    let ctx = Context::new()
        .dockerfile("FROM scratch\nENV A=1\n\nCOPY missing.txt /app/\nENV B=2\n")
        .file("present.txt", "x");
    let out = build(&root, &ctx);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        report(&out, &ctx),
        "<ctx>/Dockerfile:4\n\
         --------------------\n \
         2 |     ENV A=1\n \
         3 |     \n \
         4 | >>> COPY missing.txt /app/\n   \
         |     ^^^^^^^^^^^^^^^^^^^^^^\n\
         --------------------\n\
         hint: COPY and ADD read sources from the build context (<ctx>); check the path and \
         that the file exists there\n\
         rbuild: line 4: missing.txt: not found\n"
    );
}

#[test]
fn bad_flag_value_shows_the_line_and_what_the_flag_takes() {
    let root = TestRoot::new();
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY --chmod=999 \\\n    a /a\n")
        .file("a", "a");
    let out = build(&root, &ctx);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        report(&out, &ctx),
        "<ctx>/Dockerfile:2\n\
         --------------------\n \
         1 |     FROM scratch\n \
         2 | >>> COPY --chmod=999 \\\n   \
         |     ^^^^^^^^^^^^^^^^^^\n \
         3 | >>>     a /a\n\
         --------------------\n\
         hint: --chmod takes an octal mode (0755) or a symbolic one (u=rwx,go=rx)\n\
         rbuild: line 2: COPY: --chmod=999: invalid octal mode\n"
    );
}

#[test]
fn failing_run_keeps_its_output_and_shows_the_line() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base}\nRUN echo first line; echo last words; exit 3\n"
    ));
    let out = build(&root, &ctx);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    // The step's output stays in the progress lines above the report (#1 loads the base's
    // metadata, #2 is its FROM).
    assert!(
        text.lines()
            .any(|l| l.starts_with("#3 ") && l.ends_with(" last words")),
        "{text}"
    );
    let report = report(&out, &ctx);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "<ctx>/Dockerfile:2");
    assert_eq!(
        lines[3],
        " 2 | >>> RUN echo first line; echo last words; exit 3"
    );
    assert!(lines[4].trim_start().starts_with("|     ^^^^"), "{report}");
    assert!(
        lines[6].starts_with("hint: the command exited with an error"),
        "{report}"
    );
    assert!(
        lines[7].starts_with("rbuild: line 2: RUN: process ")
            && lines[7].ends_with("did not complete successfully: exit code: 3"),
        "{report}"
    );
    assert_eq!(lines.len(), 8, "{report}");
}

/// `rbuild build --progress=plain ARGS` with `dockerfile` on stdin.
fn build_stdin(root: &TestRoot, args: &[&str], dockerfile: &str) -> Output {
    let mut child = root
        .rbuild()
        .args(["build", "--progress=plain"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn dockerfile_from_stdin_gets_the_same_excerpt() {
    let root = TestRoot::new();
    let ctx = Context::new().file("present.txt", "x");
    let out = build_stdin(
        &root,
        &["-f", "-", &ctx.path().display().to_string()],
        "FROM scratch\nENV A=1\n\nCOPY missing.txt /app/\nENV B=2\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out).replace(&ctx.path().display().to_string(), "<ctx>");
    let start = text.find("Dockerfile:").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        &text[start..],
        "Dockerfile:4\n\
         --------------------\n \
         2 |     ENV A=1\n \
         3 |     \n \
         4 | >>> COPY missing.txt /app/\n   \
         |     ^^^^^^^^^^^^^^^^^^^^^^\n\
         --------------------\n\
         hint: COPY and ADD read sources from the build context (<ctx>); check the path and \
         that the file exists there\n\
         rbuild: line 4: missing.txt: not found\n"
    );
}

#[test]
fn stdin_as_the_context_gets_the_excerpt_too() {
    let root = TestRoot::new();
    let out = build_stdin(
        &root,
        &["-"],
        "FROM scratch\nCOPY --chmod=999 \\\n    a /a\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    let start = text.find("Dockerfile:").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        &text[start..],
        "Dockerfile:2\n\
         --------------------\n \
         1 |     FROM scratch\n \
         2 | >>> COPY --chmod=999 \\\n   \
         |     ^^^^^^^^^^^^^^^^^^\n \
         3 | >>>     a /a\n\
         --------------------\n\
         hint: --chmod takes an octal mode (0755) or a symbolic one (u=rwx,go=rx)\n\
         rbuild: line 2: COPY: --chmod=999: invalid octal mode\n"
    );
}
