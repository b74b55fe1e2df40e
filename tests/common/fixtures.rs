//! Base images for tests, built from Debian packages by the scripts in `scripts/fixtures/`
//! (the same scripts serve benchmarks) and pushed to a test [`Registry`].
//!
//! rbuild builds the busybox image itself (`FROM scratch` + `COPY rootfs/ /`, with the rbuild
//! binary under test); debian is still assembled by `umoci` from an mmdebstrap tar. `skopeo`
//! pushes them. The OCI layouts are cached in `${RBUILD_TEST_CACHE:-/var/cache/rbuild-test}`
//! (falling back to `~/.cache/rbuild-test` for users who cannot write there): busybox by
//! package version and script content, debian per day.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::Registry;

/// Which registries already hold which fixture, keyed by the registry's storage dir (unique
/// per registry, unlike ports, which a later registry may reuse).
static PUSHED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// A BusyBox image shaped like docker-library's `busybox` (applets in `/bin`, buildroot's
/// passwd/group, `/tmp` 1777, plus a `/bin/adduser` script), pushed to `registry` on first use.
/// Returns its reference, `127.0.0.1:PORT/busybox:latest`.
pub fn busybox(registry: &Registry) -> String {
    push_once(registry, "busybox", "busybox:latest")
}

/// A Debian bookworm minbase image (mmdebstrap, this machine's apt sources), pushed to
/// `registry` on first use. Returns `127.0.0.1:PORT/debian:bookworm`. The first build of the day
/// takes 30-60 s.
pub fn debian(registry: &Registry) -> String {
    push_once(registry, "debian", "debian:bookworm")
}

/// The cached OCI layout (image tagged `latest`) of the busybox fixture, built if missing.
pub fn busybox_layout() -> PathBuf {
    layout("busybox")
}

/// The cached OCI layout (image tagged `latest`) of the debian fixture, built if missing.
pub fn debian_layout() -> PathBuf {
    layout("debian")
}

/// Pushes fixture `fixture` (`busybox` or `debian`) to `registry` as `repo_tag` (e.g.
/// `team/base:1`) every time it is called, and returns the full reference.
pub fn push_as(registry: &Registry, fixture: &str, repo_tag: &str) -> String {
    let dest = registry.repo(repo_tag);
    let mut cmd = Command::new(script("push"));
    cmd.arg(fixture).arg(&dest);
    cmd.args(registry.skopeo_args("dest-"));
    run_script(&mut cmd);
    dest
}

fn push_once(registry: &Registry, fixture: &str, repo_tag: &str) -> String {
    let key = (registry.storage_dir(), repo_tag.to_string());
    // Held across the push so two tests sharing a registry do not push the same image at once.
    let mut pushed = PUSHED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if pushed.contains(&key) {
        return registry.repo(repo_tag);
    }
    let reference = push_as(registry, fixture, repo_tag);
    pushed.push(key);
    reference
}

fn layout(fixture: &str) -> PathBuf {
    let out = run_script(&mut Command::new(script(fixture)));
    let path = PathBuf::from(out.trim());
    assert!(
        path.join("index.json").is_file(),
        "fixture script {fixture} printed {path:?}, which is not an OCI layout"
    );
    path
}

fn script(name: &str) -> PathBuf {
    super::repo_dir().join("scripts/fixtures").join(name)
}

/// Runs a fixture script; its progress goes to the test's stderr, its result is stdout. A
/// fixture that is not cached yet is built with the rbuild binary of this test run, never by a
/// `cargo build` from inside `cargo test`.
fn run_script(cmd: &mut Command) -> String {
    cmd.env("RBUILD", env!("CARGO_BIN_EXE_rbuild"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    super::run_ok(cmd)
}
