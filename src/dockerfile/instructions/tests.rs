//! Unit tests for node → instruction conversion, using hand-built nodes.

use super::*;

/// A node that lives for the whole test run, so instructions may borrow it.
fn node(instr: &str, flags: &[&str], args: &[&str], json: bool) -> &'static Node {
    Box::leak(Box::new(Node {
        instruction: instr.to_string().into(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        json_form: json,
        start_line: 7,
        end_line: 7,
        heredocs: vec![],
        onbuild: None,
        original: format!("{instr} {}", args.join(" ")),
    }))
}

fn err(n: &Node) -> String {
    Instruction::parse(n).unwrap_err().to_string()
}

#[test]
fn from_with_stage_name_and_platform() {
    let i = Instruction::parse(node(
        "FROM",
        &["--platform=$BUILDPLATFORM"],
        &["golang:1", "AS", "Build"],
        false,
    ))
    .unwrap();
    assert_eq!(
        i,
        Instruction::From(FromInstr {
            image: "golang:1",
            name: Some("build".into()),
            platform: Some("$BUILDPLATFORM"),
        })
    );
}

#[test]
fn from_errors() {
    assert_eq!(
        err(node("FROM", &[], &["a", "b"], false)),
        "line 7: FROM: FROM requires either one or three arguments"
    );
    assert_eq!(
        err(node("FROM", &[], &["a", "as", "1x"], false)),
        "line 7: FROM: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        err(node("FROM", &["--platfrom=x"], &["a"], false)),
        "line 7: FROM: unknown flag: --platfrom (did you mean --platform?)"
    );
}

#[test]
fn run_forms_and_flags() {
    let i = Instruction::parse(node(
        "RUN",
        &[
            "--mount=type=cache,target=/c",
            "--network=none",
            "--security=sandbox",
        ],
        &["echo hi"],
        false,
    ))
    .unwrap();
    let Instruction::Run(r) = i else { panic!() };
    assert_eq!(r.cmd.args, ["echo hi"]);
    assert!(r.cmd.prepend_shell);
    assert_eq!(r.mounts[0].kind, MountKind::Cache);
    assert_eq!(r.network, Some(NetworkMode::None));
    assert_eq!(r.security, Some(SecurityMode::Sandbox));
    let Instruction::Run(r) = Instruction::parse(node("RUN", &[], &["echo", "hi"], true)).unwrap()
    else {
        panic!()
    };
    assert_eq!(r.cmd.args, ["echo", "hi"]);
    assert!(!r.cmd.prepend_shell);
    assert_eq!(
        err(node("RUN", &["--network=bridge"], &["x"], false)),
        "line 7: RUN: unsupported network mode \"bridge\""
    );
    assert_eq!(
        err(node("RUN", &["--mount=type=bogus"], &["x"], false)),
        "line 7: RUN: unsupported mount type \"bogus\""
    );
    assert_eq!(
        err(node("RUN", &["--mnt=x"], &["x"], false)),
        "line 7: RUN: unknown flag: --mnt (did you mean --mount?)"
    );
}

#[test]
fn metadata_instructions() {
    assert_eq!(
        Instruction::parse(node("ENV", &[], &["A", "1", "B", "\"two words\""], false)).unwrap(),
        Instruction::Env(vec![("A", "1"), ("B", "\"two words\"")])
    );
    assert_eq!(
        Instruction::parse(node("EXPOSE", &[], &["8080/tcp", "80"], false)).unwrap(),
        Instruction::Expose(vec!["80", "8080/tcp"])
    );
    assert_eq!(
        Instruction::parse(node("VOLUME", &[], &["/a", "/b"], true)).unwrap(),
        Instruction::Volume(vec!["/a", "/b"])
    );
    assert_eq!(
        Instruction::parse(node("ARG", &[], &["A=1", "B"], false)).unwrap(),
        Instruction::Arg(ArgInstr {
            args: vec![("A", Some("1")), ("B", None)]
        })
    );
    assert_eq!(
        Instruction::parse(node("SHELL", &[], &["/bin/bash", "-c"], true)).unwrap(),
        Instruction::Shell(vec!["/bin/bash", "-c"])
    );
    let Instruction::Cmd(c) = Instruction::parse(node("CMD", &[], &["a", "b"], true)).unwrap()
    else {
        panic!()
    };
    assert_eq!(c.args, ["a", "b"]);
}

#[test]
fn argument_count_errors() {
    assert_eq!(
        err(node("USER", &[], &[], false)),
        "line 7: USER: USER requires exactly one argument"
    );
    assert_eq!(
        err(node("WORKDIR", &[], &["a", "b"], false)),
        "line 7: WORKDIR: WORKDIR requires exactly one argument"
    );
    assert_eq!(
        err(node("ARG", &[], &["=x"], false)),
        "line 7: ARG: ARG names can not be blank"
    );
    assert_eq!(
        err(node("EXPOSE", &[], &[], false)),
        "line 7: EXPOSE: EXPOSE requires at least one argument"
    );
    assert_eq!(
        err(node("VOLUME", &[], &[" "], true)),
        "line 7: VOLUME: VOLUME specified can not be an empty string"
    );
    assert!(err(node("SHELL", &[], &["/bin/sh -c"], false)).contains("JSON form"));
    assert_eq!(
        err(node("ENV", &["--x"], &["a", "b"], false)),
        "line 7: ENV: unknown flag: --x"
    );
    assert_eq!(
        err(node("COPPY", &[], &["a", "b"], false)),
        "line 7: COPPY: unknown instruction: COPPY (did you mean COPY?)"
    );
}

#[test]
fn onbuild_nesting() {
    let onbuild = |inner: &Node| {
        let mut n = node("ONBUILD", &[], &[], false).clone();
        n.original = "ONBUILD COPY . /app".into();
        n.onbuild = Some(Box::new(inner.clone()));
        n
    };
    let n = onbuild(node("COPY", &[], &[".", "/app"], false));
    let Instruction::Onbuild(o) = Instruction::parse(&n).unwrap() else {
        panic!()
    };
    assert_eq!(o.expression, "COPY . /app");
    assert!(matches!(*o.trigger, Instruction::Copy(_)));
    assert_eq!(
        err(&onbuild(node("FROM", &[], &["x"], false))),
        "line 7: ONBUILD: FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err(&onbuild(node("ONBUILD", &[], &[], false))),
        "line 7: ONBUILD: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
}

#[test]
fn healthcheck_via_node() {
    let i = Instruction::parse(node(
        "HEALTHCHECK",
        &["--timeout=3s"],
        &["CMD", "curl x"],
        false,
    ))
    .unwrap();
    let Instruction::Healthcheck(Healthcheck::Cmd { test, timeout, .. }) = i else {
        panic!()
    };
    assert_eq!(test, ["CMD-SHELL", "curl x"]);
    assert_eq!(timeout, std::time::Duration::from_secs(3));
}
