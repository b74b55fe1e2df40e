//! Snapshot work that must happen inside the user namespace, where files carry container ids:
//! unpacking a layer (ownership needs chown to mapped ids), writing the diff of an upper dir
//! (its subuid-owned files may be unreadable to the user outside), and deleting trees.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::layer::{Compression, LayerWriter};

/// A snapshot operation executed by the sandbox helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NsJob {
    /// Empties `dir`, a tree owned by container ids (the caller removes `dir` itself: its
    /// parent belongs to the host user, who may be unmapped in the namespace).
    Empty { dir: PathBuf },
    /// Creates `parent/name` and unpacks the layer blob passed as data fd into it, with overlay
    /// whiteouts (char 0:0) and opaque markers (`user.overlay.opaque`).
    Unpack { parent: PathBuf, name: String },
    /// Copy-based snapshots: copies `layers` (base first) into a new dir `parent/name`.
    Materialize {
        layers: Vec<PathBuf>,
        parent: PathBuf,
        name: String,
    },
    /// Copies `subpath` of the root made of `layers` (snapshot dirs or plain dirs, base
    /// first) into the existing dir `dest`, keeping ownership (seeds a
    /// `RUN --mount=type=cache,from=...` directory).
    Seed {
        layers: Vec<PathBuf>,
        subpath: String,
        dest: PathBuf,
    },
    /// Copy-based snapshots: writes what differs between `rootfs` and `base` to the data fd.
    DiffCopy {
        base: PathBuf,
        rootfs: PathBuf,
        compression: String,
        level: Option<i32>,
        source_date_epoch: Option<i64>,
    },
    /// Whether overlayfs mounts in this user namespace, tried in `dir` (not pinned: mounting
    /// needs paths of the helper's own mount namespace).
    ProbeOverlay { dir: PathBuf },
    /// Writes the layer for the overlay upper dir `upper` to the data fd.
    Diff {
        upper: PathBuf,
        compression: String,
        level: Option<i32>,
        source_date_epoch: Option<i64>,
    },
}

/// What a diff job reports back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DiffReport {
    pub diff_id: String,
    pub uncompressed_size: u64,
}

impl NsJob {
    /// Host paths the job touches; the helper pins them before entering the namespace.
    pub(crate) fn host_paths(&mut self) -> Vec<&mut PathBuf> {
        match self {
            NsJob::Empty { dir } => vec![dir],
            NsJob::Unpack { parent, .. } => vec![parent],
            NsJob::Diff { upper, .. } => vec![upper],
            NsJob::Materialize { layers, parent, .. } => {
                let mut v: Vec<&mut PathBuf> = layers.iter_mut().collect();
                v.push(parent);
                v
            }
            NsJob::DiffCopy { base, rootfs, .. } => vec![base, rootfs],
            NsJob::Seed { layers, dest, .. } => {
                let mut v: Vec<&mut PathBuf> = layers.iter_mut().collect();
                v.push(dest);
                v
            }
            NsJob::ProbeOverlay { .. } => Vec::new(),
        }
    }
}

/// Runs `job` inside the helper; `data` is the job's data file, if the caller passed one.
pub(crate) fn run_ns_job(job: NsJob, data: Option<OwnedFd>) -> Result<serde_json::Value, String> {
    match job {
        NsJob::Empty { dir } => {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("listing: {e}"))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("listing: {e}"))?;
                let path = entry.path();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let removed = if is_dir {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match removed {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(format!("removing {:?}: {e}", entry.file_name()));
                    }
                    _ => {}
                }
            }
            Ok(serde_json::Value::Null)
        }
        NsJob::Unpack { parent, name } => {
            let blob = File::from(data.ok_or("unpack job without a layer blob")?);
            let dest = parent.join(&name);
            std::fs::create_dir(&dest).map_err(|e| format!("creating {name}: {e}"))?;
            let stats = super::unpack::unpack(blob, &dest)?;
            serde_json::to_value(stats).map_err(|e| e.to_string())
        }
        NsJob::Materialize {
            layers,
            parent,
            name,
        } => {
            let dest = parent.join(&name);
            std::fs::create_dir(&dest).map_err(|e| format!("creating {name}: {e}"))?;
            super::copy::materialize(&layers, &dest)?;
            Ok(serde_json::Value::Null)
        }
        NsJob::Seed {
            layers,
            subpath,
            dest,
        } => {
            super::copy::materialize_sub(&layers, &subpath, &dest)?;
            Ok(serde_json::Value::Null)
        }
        NsJob::ProbeOverlay { dir } => {
            // SAFETY: single-threaded helper, root in its user namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Ok(serde_json::Value::Bool(false));
            }
            let sub = |n: &str| dir.join(n);
            for n in ["lower", "upper", "work", "merged"] {
                std::fs::create_dir(sub(n)).map_err(|e| format!("creating probe dir {n}: {e}"))?;
            }
            let ok = crate::exec::mount_overlay(
                &[sub("lower")],
                &sub("upper"),
                &sub("work"),
                &sub("merged"),
            );
            Ok(serde_json::Value::Bool(ok.is_ok()))
        }
        NsJob::DiffCopy {
            base,
            rootfs,
            compression,
            level,
            source_date_epoch,
        } => write_layer(data, &compression, level, |w| {
            super::copy::write_diff(&base, &rootfs, w, source_date_epoch)
        }),
        NsJob::Diff {
            upper,
            compression,
            level,
            source_date_epoch,
        } => write_layer(data, &compression, level, |w| {
            super::diff::write_upper(&upper, w, source_date_epoch)
        }),
    }
}

fn write_layer(
    data: Option<OwnedFd>,
    compression: &str,
    level: Option<i32>,
    body: impl FnOnce(&mut LayerWriter<File>) -> Result<(), String>,
) -> Result<serde_json::Value, String> {
    let out = File::from(data.ok_or("diff job without an output file")?);
    let compression = Compression::from_name(compression, level)
        .ok_or_else(|| format!("unknown compression {compression}"))?;
    // Reading the tree, compressing and hashing overlap on three threads.
    let mut writer = LayerWriter::new_pipelined(out, compression)
        .map_err(|e| format!("starting the layer: {e}"))?;
    body(&mut writer)?;
    let summary = writer
        .finish()
        .map_err(|e| format!("finishing the layer: {e}"))?;
    // A pipe (the parent streams the layer into the store) has nothing to sync.
    if summary.sink.metadata().is_ok_and(|m| m.is_file()) {
        summary
            .sink
            .sync_all()
            .map_err(|e| format!("syncing the layer file: {e}"))?;
    }
    serde_json::to_value(DiffReport {
        diff_id: summary.diff_id.to_string(),
        uncompressed_size: summary.uncompressed_size,
    })
    .map_err(|e| e.to_string())
}
