//! Filesystem snapshots: unpacked base layers, overlay mounts for RUN steps, and diffs of what a step changed.
//!
//! Layout under `<root>/snapshots/`:
//! - `layers/<diff_id hex>/`: one layer unpacked ONCE, in overlayfs format (whiteouts are 0:0
//!   char devices, opaque dirs carry `user.overlay.opaque`), shared by all builds. Written into
//!   `tmp/` and renamed into place, so a present dir is always complete.
//! - `active/<id>/{upper,work}`: a RUN step's writable layer over a chain of `layers/`.
//!
//! Unpacking, diffing and deleting run in the executor's user namespace (through
//! [`crate::exec`]'s helper), so ownership works rootless and layers carry container ids.
//! When overlayfs cannot be mounted in a user namespace (old kernels, odd filesystems), steps
//! run on a plain copy of the chain and the diff compares metadata ([`Backend::Copy`]); a
//! warning says so once. Refuses: verifying that an unpacked blob matches its diff_id (the
//! store verified the blob's digest).

mod copy;
mod diff;
mod leftovers;
mod nsjob;
mod step;
mod unpack;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::exec::{self, Job, Response, RootSpec, hand_over, make_traversable};
use crate::image::Digest;
use crate::layer::Compression;

pub(crate) use leftovers::{RUN_SCRATCH_PREFIX, lock_dir, locked_tempdir_in, tmpfs_dir};
pub(crate) use nsjob::{NsJob, run_ns_job};
pub use step::{LayerOutput, StepOutcome};

/// Errors of the snapshotter; each names the layer or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host-side file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Unpacking a layer failed.
    #[error("unpacking layer {diff_id}: {message}")]
    Unpack {
        /// The layer.
        diff_id: Digest,
        /// What went wrong, with the entry or path.
        message: String,
    },
    /// A layer of a requested chain has not been unpacked.
    #[error("layer {0} is not unpacked in the snapshot store")]
    MissingLayer(Digest),
    /// Writing a step's diff failed.
    #[error("writing the layer of {upper}: {message}")]
    Diff {
        /// The upper dir.
        upper: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The executor's helper failed.
    #[error(transparent)]
    Exec(#[from] exec::Error),
}

/// What a diff produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffSummary {
    /// SHA-256 of the uncompressed layer tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// How writable snapshots are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An overlay mount (inside the user namespace) over the layer chain; the diff is the
    /// upper dir.
    Overlay,
    /// A full copy of the chain; the diff compares it with a pristine copy. Slow fallback.
    Copy,
}

/// The snapshot area of an rbuild root.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
    backend: Backend,
}

/// A writable snapshot for one RUN step over a layer chain.
#[derive(Debug)]
pub struct Active {
    dir: PathBuf,
    lowers: Vec<PathBuf>,
    backend: Backend,
}

impl Active {
    /// The root to give [`crate::exec::RunSpec::root`].
    pub fn root(&self) -> RootSpec {
        match self.backend {
            Backend::Overlay => RootSpec::Overlay {
                lowers: self.lowers.clone(),
                upper: self.upper(),
                work: self.dir.join("work"),
            },
            Backend::Copy => RootSpec::Dir(self.dir.join("rootfs")),
        }
    }

    /// The overlay upper dir (the step's changes); the whole root for copy snapshots.
    pub fn upper(&self) -> PathBuf {
        match self.backend {
            Backend::Overlay => self.dir.join("upper"),
            Backend::Copy => self.dir.join("rootfs"),
        }
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A compression as the helper's diff jobs name it: name and level.
fn compression_job_args(compression: Compression) -> (&'static str, Option<i32>) {
    match compression {
        Compression::Gzip { level } => ("gzip", Some(level as i32)),
        Compression::Zstd { level } => ("zstd", Some(level)),
        Compression::Uncompressed => ("uncompressed", None),
    }
}

fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Snapshotter {
    /// Opens (creating) the snapshot area `<rbuild_root>/snapshots/`, with overlay snapshots
    /// when overlayfs works in a user namespace here (probed once per process), else copies.
    pub fn new(rbuild_root: &Path) -> Result<Snapshotter, Error> {
        static PROBED: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
        let mut snap = Snapshotter::with_backend(rbuild_root, Backend::Overlay)?;
        let backend = match PROBED.get() {
            Some(b) => *b,
            None => {
                let b = snap.probe_overlay()?;
                if b == Backend::Copy {
                    tracing::warn!(
                        "overlayfs cannot be mounted in a user namespace here: RUN steps use \
                         copy-based snapshots, which are much slower"
                    );
                }
                *PROBED.get_or_init(|| b)
            }
        };
        snap.backend = backend;
        snap.prune_stale()?;
        leftovers::sweep_once();
        Ok(snap)
    }

    /// Deletes active snapshots and temp dirs left by rbuild processes that no longer run
    /// (killed builds). Their names carry the creating pid.
    pub fn prune_stale(&self) -> Result<usize, Error> {
        let mut removed = 0;
        for sub in ["active", "tmp"] {
            let dir = self.dir.join(sub);
            let entries = fs::read_dir(&dir).map_err(io("listing", &dir))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
                let alive = pid.is_none_or(|p| Path::new("/proc").join(p.to_string()).exists());
                if !alive {
                    tracing::debug!(path = %entry.path().display(), "removing stale snapshot dir");
                    self.remove_tree(&entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Like [`new`](Self::new) with a chosen backend and no probe.
    pub fn with_backend(rbuild_root: &Path, backend: Backend) -> Result<Snapshotter, Error> {
        let dir = rbuild_root.join("snapshots");
        for sub in ["layers", "active", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io("creating", &p))?;
        }
        make_traversable(&dir.join("layers").join("x"))?;
        make_traversable(&dir.join("tmp").join("x"))?;
        Ok(Snapshotter { dir, backend })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn probe_overlay(&self) -> Result<Backend, Error> {
        let tmp = self.dir.join("tmp").join(unique_name("probe-"));
        fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
        hand_over(&tmp)?;
        let result = call(NsJob::ProbeOverlay { dir: tmp.clone() }, None);
        self.remove_tree(&tmp)?;
        Ok(match result? {
            serde_json::Value::Bool(true) => Backend::Overlay,
            _ => Backend::Copy,
        })
    }

    /// Where layer `diff_id` is (or would be) unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers").join(diff_id.hex())
    }

    /// Whether layer `diff_id` is unpacked.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// Unpacks the layer blob at `blob` (any compression) as `diff_id`, unless it already is.
    /// Returns the snapshot dir.
    pub fn unpack_layer(&self, diff_id: &Digest, blob: &Path) -> Result<PathBuf, Error> {
        let final_dir = self.layer_dir(diff_id);
        if final_dir.is_dir() {
            return Ok(final_dir);
        }
        let file = File::open(blob).map_err(io("opening layer blob", blob))?;
        let tmp = self.dir.join("tmp").join(unique_name("unpack-"));
        fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
        hand_over(&tmp)?;
        let job = NsJob::Unpack {
            parent: tmp.clone(),
            name: "fs".into(),
        };
        let result = call(job, Some(file.into()));
        let result = match result {
            Ok(v) => {
                let stats: unpack::UnpackStats = serde_json::from_value(v).unwrap_or_default();
                if stats.skipped_devices > 0 {
                    tracing::warn!(
                        layer = %diff_id,
                        count = stats.skipped_devices,
                        "device nodes skipped: mknod is not permitted in a user namespace"
                    );
                }
                match fs::rename(tmp.join("fs"), &final_dir) {
                    Ok(()) => Ok(final_dir.clone()),
                    // Another build unpacked the same layer meanwhile.
                    Err(_) if final_dir.is_dir() => Ok(final_dir.clone()),
                    Err(e) => Err(io("moving unpacked layer to", &final_dir)(e)),
                }
            }
            Err(Error::Exec(exec::Error::Sandbox(message))) => Err(Error::Unpack {
                diff_id: diff_id.clone(),
                message,
            }),
            Err(e) => Err(e),
        };
        self.remove_tree(&tmp)?;
        result
    }

    /// A fresh writable snapshot over `chain` (base layer first; all must be unpacked).
    pub fn prepare(&self, chain: &[Digest]) -> Result<Active, Error> {
        let mut lowers = Vec::with_capacity(chain.len());
        for d in chain.iter().rev() {
            if !self.has_layer(d) {
                return Err(Error::MissingLayer(d.clone()));
            }
            // A layer can repeat in a chain (two steps with the same empty diff); overlayfs
            // refuses a repeated lower (ELOOP). The top-most copy covers every path, whiteout
            // and opaque dir of the lower copies, so dropping those changes nothing.
            let dir = self.layer_dir(d);
            if !lowers.contains(&dir) {
                lowers.push(dir);
            }
        }
        let dir = self.dir.join("active").join(unique_name("run-"));
        fs::create_dir(&dir).map_err(io("creating", &dir))?;
        hand_over(&dir)?;
        let active = Active {
            dir: dir.clone(),
            lowers,
            backend: self.backend,
        };
        let made = match self.backend {
            Backend::Overlay => [dir.join("upper"), dir.join("work")]
                .iter()
                .try_for_each(|p| {
                    fs::create_dir(p).map_err(io("creating", p))?;
                    hand_over(p).map_err(Error::from)
                }),
            Backend::Copy => {
                let layers: Vec<PathBuf> = active.lowers.iter().rev().cloned().collect();
                ["base", "rootfs"].iter().try_for_each(|name| {
                    let job = NsJob::Materialize {
                        layers: layers.clone(),
                        parent: dir.clone(),
                        name: name.to_string(),
                    };
                    call(job, None).map(drop)
                })
            }
        };
        match made {
            Ok(()) => Ok(active),
            Err(e) => {
                let _ = self.remove(active);
                Err(e)
            }
        }
    }

    /// Writes the changes of `active` as a layer into `out` (a file the caller then stores).
    pub fn diff(
        &self,
        active: &Active,
        compression: Compression,
        source_date_epoch: Option<i64>,
        out: File,
    ) -> Result<DiffSummary, Error> {
        let (name, level) = compression_job_args(compression);
        let upper = active.upper();
        let job = match active.backend {
            Backend::Overlay => NsJob::Diff {
                upper: upper.clone(),
                compression: name.into(),
                level,
                source_date_epoch,
            },
            Backend::Copy => NsJob::DiffCopy {
                base: active.dir.join("base"),
                rootfs: upper.clone(),
                compression: name.into(),
                level,
                source_date_epoch,
            },
        };
        let fail = |message: String| Error::Diff {
            upper: upper.clone(),
            message,
        };
        let v = match call(job, Some(out.into())) {
            Err(Error::Exec(exec::Error::Sandbox(m))) => return Err(fail(m)),
            other => other?,
        };
        let report: nsjob::DiffReport =
            serde_json::from_value(v).map_err(|e| fail(format!("bad diff report: {e}")))?;
        Ok(DiffSummary {
            diff_id: report.diff_id.parse().map_err(|e| fail(format!("{e}")))?,
            uncompressed_size: report.uncompressed_size,
        })
    }

    /// [`diff`](Self::diff) streamed into `sink` through a pipe while the helper writes it,
    /// so a big layer is written to disk once (into the store) instead of into a temp file
    /// that is then copied.
    pub fn diff_to(
        &self,
        active: &Active,
        compression: Compression,
        source_date_epoch: Option<i64>,
        sink: &mut dyn std::io::Write,
    ) -> Result<DiffSummary, Error> {
        let (r, w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| Error::Diff {
                upper: active.upper(),
                message: format!("creating a pipe for the layer: {e}"),
            })?;
        std::thread::scope(|scope| {
            let helper =
                scope.spawn(move || self.diff(active, compression, source_date_epoch, w.into()));
            let mut reader = std::io::BufReader::with_capacity(1 << 20, File::from(r));
            // On a failed write the reader is dropped, so the helper fails on EPIPE and ends.
            let copied = std::io::copy(&mut reader, sink);
            drop(reader);
            let summary = helper.join().unwrap_or_else(|_| {
                Err(Error::Diff {
                    upper: active.upper(),
                    message: "the layer writer thread panicked".into(),
                })
            })?;
            copied.map_err(|e| Error::Diff {
                upper: active.upper(),
                message: format!("storing the layer: {e}"),
            })?;
            Ok(summary)
        })
    }

    /// Turns the upper dir of `active` into the unpacked snapshot of layer `diff_id` (the
    /// upper dir is already in overlay format), so the next step stacks on it without
    /// unpacking. Returns the layer dir.
    pub fn commit(&self, active: Active, diff_id: &Digest) -> Result<PathBuf, Error> {
        if active.backend == Backend::Copy {
            return self.commit_copy(active, diff_id);
        }
        let final_dir = self.layer_dir(diff_id);
        if !final_dir.is_dir()
            && let Err(e) = fs::rename(active.upper(), &final_dir)
            && !final_dir.is_dir()
        {
            return Err(io("committing upper dir to", &final_dir)(e));
        }
        self.remove(active)?;
        Ok(final_dir)
    }

    /// Copy snapshots have no overlay-format upper dir: the diff is unpacked as the layer.
    fn commit_copy(&self, active: Active, diff_id: &Digest) -> Result<PathBuf, Error> {
        let tar = self.dir.join("tmp").join(unique_name("commit-"));
        let file = File::create(&tar).map_err(io("creating", &tar))?;
        let result = self
            .diff(&active, Compression::Uncompressed, None, file)
            .and_then(|_| self.unpack_layer(diff_id, &tar));
        let _ = fs::remove_file(&tar);
        self.remove(active)?;
        result
    }

    /// Deletes `active` and everything the step wrote.
    pub fn remove(&self, active: Active) -> Result<(), Error> {
        self.remove_tree(&active.dir)
    }

    /// Deletes the unpacked layer `diff_id` (nothing may be using it).
    pub fn remove_layer(&self, diff_id: &Digest) -> Result<(), Error> {
        self.remove_tree(&self.layer_dir(diff_id))
    }

    fn remove_tree(&self, path: &Path) -> Result<(), Error> {
        if fs::symlink_metadata(path).is_err() {
            return Ok(());
        }
        // Most trees (a committed step's active dir holds only overlayfs's work dir) are ours
        // to delete: that saves starting a helper and a user namespace. Files of other
        // container ids are left to the helper.
        let _ = fs::set_permissions(path.join("work").join("work"), {
            use std::os::unix::fs::PermissionsExt;
            fs::Permissions::from_mode(0o700)
        });
        if fs::remove_dir_all(path).is_ok() {
            return Ok(());
        }
        call(
            NsJob::Empty {
                dir: path.to_path_buf(),
            },
            None,
        )?;
        match fs::remove_dir(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", path)(e)),
            _ => Ok(()),
        }
    }
}

fn call(job: NsJob, data: Option<std::os::fd::OwnedFd>) -> Result<serde_json::Value, Error> {
    // The helper prints nothing itself; anything on its stderr is a crash worth showing.
    let mut stderr = Vec::new();
    let reply = exec::call(Job::Snapshot(job), data, None, &mut |_, chunk| {
        if stderr.len() < 4096 {
            stderr.extend_from_slice(chunk)
        }
    });
    let reply = match reply {
        Err(exec::Error::Protocol(m)) if !stderr.is_empty() => {
            return Err(Error::Exec(exec::Error::Protocol(format!(
                "{m}: {}",
                String::from_utf8_lossy(&stderr).trim()
            ))));
        }
        other => other?,
    };
    match reply {
        Response::Done(v) => Ok(v),
        Response::Failed(m) => Err(Error::Exec(exec::Error::Sandbox(m))),
        Response::Exited(_) => Err(Error::Exec(exec::Error::Protocol(
            "unexpected reply to a snapshot job".into(),
        ))),
    }
}
