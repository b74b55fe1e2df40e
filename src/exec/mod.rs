//! The rootless executor: runs RUN steps in user, mount, PID, UTS and IPC namespaces.
//!
//! Works as an ordinary user with no daemon: the only privileged programs involved are the
//! setuid `newuidmap`/`newgidmap` (Debian package `uidmap`). Because a multi-threaded process
//! cannot create a user namespace, every sandbox runs in a re-executed rbuild helper
//! (`/proc/self/exe __rbuild-sandbox-helper`, see [`helper_entry`]) that receives its job as
//! JSON. Host root is never root in a step: it gets a mapped id range too.
//!
//! ```no_run
//! use rbuild::exec::{RootSpec, RunSpec, run};
//! let spec = RunSpec::new(RootSpec::Dir("/tmp/rootfs".into()), vec!["echo".into(), "hi".into()]);
//! let status = run(&spec, &mut |_stream, line| print!("{}", String::from_utf8_lossy(line)))?;
//! assert!(status.success());
//! # Ok::<(), rbuild::exec::Error>(())
//! ```

mod cache;
mod helper;
mod interrupt;
mod mountplan;
mod mounts;
mod run;
mod sandbox;
mod spawn;
mod spec;
mod user;
mod userns;

use std::path::PathBuf;

pub use cache::{CacheLease, CacheMounts, CacheSeed, Sharing};
pub use interrupt::{catch_interrupts, interrupt, interrupted};
pub use run::{run, run_cancellable};
pub use spawn::{CancelHandle, set_helper_program};
pub use spec::{
    CacheInit, DEFAULT_HOSTNAME, DEFAULT_PATH, ExitStatus, MountSpec, Network, RootSpec, RunSpec,
    Stream,
};
pub use userns::{IdMapping, IdRange, MapWriter};

pub(crate) use helper::{AFTER_STEP, mount_overlay};
pub(crate) use mounts::secure_join;
pub(crate) use run::{hand_over, make_traversable, run_then};
pub(crate) use spawn::{Job, Response, call, monotonic_ns};

/// Errors of the executor. Setup failures inside the sandbox arrive as [`Error::Sandbox`] with
/// the failing operation and path spelled out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The helper program could not be started or waited for.
    #[error("cannot run the sandbox helper {program}: {source}")]
    Helper {
        /// The program re-executed as helper.
        program: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A pipe for talking to the helper could not be created.
    #[error("cannot create a pipe for the sandbox helper: {0}")]
    Spawn(std::io::Error),
    /// The helper and this process did not understand each other.
    #[error("sandbox helper protocol error: {0}")]
    Protocol(String),
    /// Setting up the sandbox failed (namespaces, id maps, mounts, user, exec).
    #[error("sandbox setup failed: {0}")]
    Sandbox(String),
    /// Preparing host-side files for the step failed.
    #[error("{action} {path}: {source}")]
    Host {
        /// What was being done.
        action: &'static str,
        /// The host path involved.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The run was cancelled through its [`CancelHandle`], or the process was interrupted
    /// (see [`interrupt`]).
    #[error("the step was cancelled")]
    Cancelled,
}

/// Call first thing in `main`: when this process was started as the sandbox helper, does the
/// helper's work and returns its exit code; otherwise returns `None` at once.
pub fn helper_entry() -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os();
    args.next();
    if args.next().as_deref() != Some(std::ffi::OsStr::new(spawn::HELPER_MARKER)) {
        return None;
    }
    Some(helper::main())
}
