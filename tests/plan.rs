//! `rbuild build` planning through the binary: `--dry-run` output, flag refusals (exit 2 with
//! the exact message), unknown targets with suggestions, and error rendering.

mod common;

use std::process::Output;

use common::Context;

fn build(ctx: &Context, extra: &[&str]) -> Output {
    common::rbuild()
        .arg("build")
        .args(extra)
        .arg(ctx.path())
        .output()
        .expect("running rbuild")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const MULTI: &str = "FROM scratch AS base\nCOPY a /a\n\nFROM scratch AS unused\nRUN echo never\n\nFROM base AS final\nCOPY --from=base /a /b\nLABEL x=y\n";

#[test]
fn dry_run_prints_needed_stages_in_order() {
    let ctx = Context::new().dockerfile(MULTI).file("a", "a");
    let out = build(&ctx, &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("target: final (stage 2)"), "{text}");
    assert!(text.contains("order: base -> final"), "{text}");
    assert!(text.contains("skipped: unused"), "{text}");
    assert!(text.contains("needs: base"), "{text}");
    assert!(text.contains("COPY /a /b # buildkit"), "{text}");
    assert!(text.contains("LABEL x=y"), "{text}");
}

#[test]
fn dry_run_with_target_only_plans_that_stage() {
    let ctx = Context::new().dockerfile(MULTI).file("a", "a");
    let out = build(&ctx, &["--dry-run", "--target", "UNUSED"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("order: unused\n"), "{text}");
    assert!(
        text.contains("RUN /bin/sh -c echo never # buildkit"),
        "{text}"
    );
}

#[test]
fn unknown_target_suggests_a_stage() {
    let ctx = Context::new().dockerfile(MULTI).file("a", "a");
    let out = build(&ctx, &["--target", "fnial"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "rbuild: target stage \"fnial\" could not be found (did you mean final?)"
    );
}

#[test]
fn unfinished_flags_are_refused_with_exit_2() {
    let ctx = Context::new().dockerfile("FROM scratch\n");
    for (flags, name) in [
        (vec!["--cache-to", "type=gha"], "--cache-to type=gha"),
        (
            vec!["--platform", "linux/amd64,linux/arm64"],
            "--platform with several platforms",
        ),
    ] {
        let out = build(&ctx, &flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!("rbuild: {name} is not supported yet\n"),
            "{flags:?}"
        );
    }
}

#[test]
fn features_refused_for_one_dockerfile_line_also_exit_2() {
    let ctx = Context::new().dockerfile("FROM scratch\nRUN --security=insecure true\n");
    let out = build(&ctx, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The step's progress lines (`#1 ... ERROR: ...`) come first; the error is the last line.
    assert_eq!(
        stderr(&out).lines().last(),
        Some("rbuild: line 2: RUN --security=insecure is not supported yet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let ctx = Context::new().dockerfile("FROM scratch\n");
    for flags in [
        vec!["--network", "bridge"],
        vec!["--jobs", "0"],
        vec!["-t", "UPPER:case"],
        vec!["-o", "type=nope"],
        vec!["--build-arg", "=x"],
    ] {
        let out = build(&ctx, &flags);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
    }
}

#[test]
fn instruction_errors_name_line_instruction_and_flag() {
    let ctx = Context::new().dockerfile("FROM scratch\nCOPY --fromm=base a /a\n");
    let out = build(&ctx, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    // The Dockerfile excerpt comes first; the cause is the last line.
    assert!(text.contains(">>> COPY --fromm=base a /a\n"), "{text}");
    assert_eq!(
        text.lines().last(),
        Some("rbuild: line 2: COPY: unknown flag: --fromm (did you mean --from?)")
    );
}

#[test]
fn parse_errors_are_rendered_with_the_source_line() {
    let ctx = Context::new().dockerfile("FROM scratch\nCOPPY a /a\n");
    let out = build(&ctx, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("unknown instruction: COPPY"), "{err}");
    assert!(err.contains("2 | COPPY a /a"), "{err}");
}

#[test]
fn forward_stage_reference_is_an_error() {
    let ctx =
        Context::new().dockerfile("FROM scratch\nCOPY --from=later /x /x\nFROM scratch AS later\n");
    let out = build(&ctx, &["--target", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("stage \"later\" is used before it is defined (line 3)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn build_context_image_alias_replaces_a_base_name() {
    let ctx = Context::new().dockerfile("FROM base\nLABEL a=b\n");
    let out = build(
        &ctx,
        &[
            "--dry-run",
            "--build-context",
            "base=docker-image://busybox:1.36",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FROM image busybox:1.36"), "{text}");
}
