//! What a failed build prints at exit: for a step that failed on one Dockerfile line (a COPY
//! whose source is missing, a RUN that exits non-zero, a bad flag value), the Dockerfile
//! excerpt with line numbers and the instruction marked, a hint, and the cause as the last
//! line; exit code 1.

mod common;

use std::process::Output;

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
    // The step's output stays in the progress lines above the report.
    assert!(
        text.lines()
            .any(|l| l.starts_with("#2 ") && l.ends_with(" last words")),
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
