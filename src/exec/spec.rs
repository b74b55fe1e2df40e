//! What a sandboxed step is: root filesystem, process, network and extra mounts, in host paths.
//!
//! These types are the executor-level shape. The Dockerfile-level `RUN --mount` structs live in
//! `plan`; it converts them into [`MountSpec`]s whose sources are host paths.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Hostname BuildKit gives RUN steps; docker builds see the same.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// PATH used to find `argv[0]` when the step's environment has none (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One process to run in a fresh sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// The root filesystem the process sees as `/`.
    pub root: RootSpec,
    /// Program and arguments; `argv[0]` without a `/` is looked up in the step's `PATH`.
    pub argv: Vec<String>,
    /// Environment as `KEY=value` entries, in order.
    pub env: Vec<String>,
    /// Working directory inside the root; created (owned by root, 0755) when missing.
    pub cwd: String,
    /// `USER` as docker accepts it: `name`, `uid`, `name:group`, `uid:gid`; `None` is root.
    pub user: Option<String>,
    /// Network mode.
    pub network: Network,
    /// Extra mounts, applied in order after the standard ones.
    pub mounts: Vec<MountSpec>,
    /// Hostname inside the UTS namespace.
    pub hostname: String,
    /// `--add-host` entries appended to the generated `/etc/hosts`.
    pub extra_hosts: Vec<(String, IpAddr)>,
}

impl RunSpec {
    /// A spec running `argv` as root in `/` with host networking and no extra mounts.
    pub fn new(root: RootSpec, argv: Vec<String>) -> RunSpec {
        RunSpec {
            root,
            argv,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".to_string(),
            user: None,
            network: Network::Host,
            mounts: Vec::new(),
            hostname: DEFAULT_HOSTNAME.to_string(),
            extra_hosts: Vec::new(),
        }
    }
}

/// Where the step's `/` comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RootSpec {
    /// An overlay: read-only `lowers` (top-most first), and the writable `upper` + `work` dirs
    /// (same filesystem, both created by the caller). The step's changes land in `upper`.
    Overlay {
        /// Lower directories, top-most layer first (overlayfs `lowerdir` order).
        lowers: Vec<PathBuf>,
        /// Receives every change the step makes.
        upper: PathBuf,
        /// Overlayfs scratch dir; must be empty and on the same filesystem as `upper`.
        work: PathBuf,
    },
    /// A plain directory used read-write as the root (copy-based snapshots, tests).
    Dir(PathBuf),
}

/// Network mode of a step (`RUN --network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Network {
    /// Share the host's network (docker build's default with `--network=host`, and ours).
    #[default]
    Host,
    /// A new, empty network namespace with only `lo` (brought up).
    None,
}

/// An extra mount for the step, sources given as host paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountSpec {
    /// `type=bind`: a host directory or file. Read-only, or writable with writes discarded
    /// (an overlay over a private tmpfs, as BuildKit's `rw` bind mounts).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path in the sandbox.
        target: String,
        /// `rw`: writes allowed and thrown away after the step.
        writable: bool,
    },
    /// `type=bind` from another stage or an image: an overlay of that root's unpacked layers
    /// (so files keep their container owners), of which `source` is bound at `target`.
    /// Writable with writes discarded when `writable`.
    Layers {
        /// The root's snapshot layer dirs, top-most first (overlayfs `lowerdir` order).
        lowers: Vec<PathBuf>,
        /// Path inside that root to mount (`/` for all of it).
        source: String,
        /// Absolute path in the sandbox.
        target: String,
        /// `rw`: writes allowed and thrown away after the step.
        writable: bool,
    },
    /// `type=tmpfs`.
    Tmpfs {
        /// Absolute path in the sandbox.
        target: String,
        /// Size limit in bytes; `None` uses the kernel default (half of RAM).
        size: Option<u64>,
    },
    /// `type=cache`: a persistent host directory (see [`crate::exec::CacheMounts`]).
    Cache {
        /// Host directory holding the cache contents.
        source: PathBuf,
        /// Absolute path in the sandbox.
        target: String,
        /// Owner and mode to give the cache root when it is new (container ids).
        init: Option<CacheInit>,
        /// `ro`.
        readonly: bool,
    },
    /// `type=secret` as a file: the bytes live only in a private tmpfs, never in the layer.
    Secret {
        /// The secret's contents (read by the caller from the CLI's `--secret` source).
        data: Vec<u8>,
        /// Absolute path in the sandbox (default `/run/secrets/<id>`, chosen by the caller).
        target: String,
        /// Owner uid in the container (default 0).
        uid: u32,
        /// Owner gid in the container (default 0).
        gid: u32,
        /// File mode (default 0o400).
        mode: u32,
    },
    /// `type=ssh`: the host agent socket (`SSH_AUTH_SOCK`) bound at `target`; the caller sets
    /// `SSH_AUTH_SOCK` in the step's environment.
    Ssh {
        /// Host socket path.
        socket: PathBuf,
        /// Absolute path in the sandbox (BuildKit: `/run/buildkit/ssh_agent.<n>`).
        target: String,
    },
}

impl MountSpec {
    /// The sandbox path this mount covers.
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Layers { target, .. }
            | MountSpec::Tmpfs { target, .. }
            | MountSpec::Cache { target, .. }
            | MountSpec::Secret { target, .. }
            | MountSpec::Ssh { target, .. } => target,
        }
    }

    /// Whether the mount point is a file (true) or a directory.
    pub(crate) fn target_is_file(&self) -> bool {
        match self {
            MountSpec::Bind { source, .. } => !source.is_dir(),
            // The top-most layer holding the path decides (a whiteout there means missing).
            MountSpec::Layers { lowers, source, .. } => lowers
                .iter()
                .find_map(|l| {
                    std::fs::symlink_metadata(l.join(source.trim_start_matches('/'))).ok()
                })
                .is_some_and(|m| {
                    use std::os::unix::fs::{FileTypeExt, MetadataExt};
                    let whiteout = m.file_type().is_char_device() && m.rdev() == 0;
                    !m.is_dir() && !whiteout
                }),
            MountSpec::Secret { .. } | MountSpec::Ssh { .. } => true,
            MountSpec::Tmpfs { .. } | MountSpec::Cache { .. } => false,
        }
    }
}

/// Ownership and mode applied to a cache mount's root when it is first created.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheInit {
    /// Container uid.
    pub uid: u32,
    /// Container gid.
    pub gid: u32,
    /// Permission bits (BuildKit default 0o755).
    pub mode: u32,
}

/// Which output stream a chunk of step output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// How a step's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code: {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}
