//! End to end, the way a user starts with a container: a Debian base from the local registry,
//! `apt-get install` in a RUN step (host network, the machine's apt mirror), an app copied in,
//! and the image then run by podman, which must print what the app prints.
//!
//! The `rootless_` name makes `scripts/test` run this binary again as the unprivileged test
//! user, so the build is checked both as root and as an ordinary user with subordinate ids.
//! podman runs the result only when the test runs as root (rootless podman needs a login
//! session of its own); the unprivileged run checks the image's files instead.

mod common;

use std::process::Command;

use common::{Context, Registry, TestRoot, run_ok};

const APP: &str = "import sys\nprint('hello from app.py on python', sys.version_info[0])\n";
const EXPECTED: &str = "hello from app.py on python 3\n";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn python_app_on_debian_builds_rootless_and_runs_in_podman() {
    let registry = Registry::start();
    let base = common::fixtures::debian(&registry);
    let ctx = Context::new()
        .dockerfile(&format!(
            "FROM {base}\n\
             RUN apt-get update && apt-get install -y --no-install-recommends curl python3-minimal\n\
             COPY app.py /app.py\n\
             CMD [\"python3\", \"/app.py\"]\n"
        ))
        .file("app.py", APP);
    let root = TestRoot::new();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("app.tar");
    let tag = format!("rbuild-e2e-app-{}", std::process::id());
    run_ok(
        root.rbuild()
            .args(["build", "--progress", "plain", "-t", &tag, "-o"])
            .arg(format!("type=docker,dest={}", archive.display()))
            .arg(ctx.path()),
    );

    // apt-get ran for real inside the sandbox: its files are in the image, owned as dpkg set
    // them (the `_apt` user and root), which needs the subordinate id range when rootless.
    let fs = work.path().join("rootfs");
    run_ok(
        root.rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!("type=local,dest={}", fs.display()))
            .arg(ctx.path()),
    );
    assert!(fs.join("usr/bin/curl").exists(), "curl was not installed");
    assert!(
        fs.join("usr/bin/python3").exists(),
        "python3 was not installed"
    );
    assert_eq!(std::fs::read_to_string(fs.join("app.py")).unwrap(), APP);

    if !is_root() {
        eprintln!("SKIP podman run: rootless podman is not set up for this user; files checked");
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("SKIP podman run: podman is not installed");
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    run_ok(&mut common::podman::podman(
        storage.path(),
        &["load", "-i", archive.to_str().unwrap()],
    ));
    let image = format!("docker.io/library/{tag}:latest");
    let out = run_ok(&mut common::podman::podman(
        storage.path(),
        &common::podman::run_args(&image, &[]),
    ));
    assert_eq!(out, EXPECTED);
}
