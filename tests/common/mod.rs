//! Shared fixtures for rbuild's integration tests: a throw-away registry, base images built
//! from Debian packages, and a way to run the `rbuild` binary against a private store.
//!
//! Each test binary pulls this in with `mod common;` and uses only part of it, hence the
//! crate-wide `dead_code`/`unused_imports` allowance.
#![allow(dead_code, unused_imports)]

pub mod context;
pub mod fixtures;
pub mod http;
pub mod image;
pub mod layout;
pub mod podman;
pub mod random_image;
pub mod registry;
mod registry_config;
pub mod throttle;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use context::Context;
pub use image::PulledImage;
pub use registry::{LoggedRequest, Registry};
pub use token::TokenPolicy;

/// A `rbuild` command (the binary built for this test run) whose `--root` is a fresh
/// directory of its own, for one-shot invocations.
///
/// The directory lives under `$TMPDIR/rbuild-test-roots/` and is not removed afterwards (a
/// `Command` cannot own it); `scripts/test` points `TMPDIR` at a per-run directory and deletes
/// it. Tests that run several commands against one store use [`TestRoot`] instead.
pub fn rbuild() -> Command {
    let parent = std::env::temp_dir().join("rbuild-test-roots");
    std::fs::create_dir_all(&parent)
        .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    let root = tempfile::Builder::new()
        .prefix("root-")
        .tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("creating a temp dir in {}: {e}", parent.display()))
        .keep();
    rbuild_with_root(&root)
}

/// A `rbuild` command using `root` as its `--root` (content store, cache, snapshots).
pub fn rbuild_with_root(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root").arg(root);
    cmd
}

/// A private rbuild store directory, removed when dropped; hands out commands that share it,
/// e.g. `build` followed by `push`.
pub struct TestRoot {
    dir: tempfile::TempDir,
}

impl TestRoot {
    /// Creates an empty store directory under the system temp dir.
    pub fn new() -> TestRoot {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-root-")
            .tempdir()
            .expect("creating a temp dir for the rbuild root");
        TestRoot { dir }
    }

    /// The store directory passed as `--root`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `rbuild` command bound to this store.
    pub fn rbuild(&self) -> Command {
        rbuild_with_root(self.dir.path())
    }
}

impl Default for TestRoot {
    fn default() -> Self {
        TestRoot::new()
    }
}

/// The repository checkout this test binary was built from (where `scripts/` lives).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, panicking with its full command line, exit status, stdout and stderr when it
/// does not succeed. Returns stdout as text.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}
