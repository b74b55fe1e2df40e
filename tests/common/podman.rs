//! podman as a consumer of rbuild's images: a private store per test and the flags this
//! machine needs to run a container.

use std::path::Path;
use std::process::Command;

/// A `podman` command with its own storage under `storage` (vfs, so it works anywhere) and the
/// runc runtime (Debian's crun fails on hybrid cgroup hosts).
pub fn podman(storage: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .arg("--storage-driver")
        .arg("vfs")
        .arg("--runtime")
        .arg("runc")
        .args(args);
    c
}

/// `podman run --rm` of `image` without network. podman raises nofile/nproc by default; this
/// machine's bounding set lacks CAP_SYS_RESOURCE, so ask for limits below the hard ones.
pub fn run_args<'a>(image: &'a str, command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        image,
    ];
    args.extend_from_slice(command);
    args
}
