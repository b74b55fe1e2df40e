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
        NsJob::Diff {
            upper,
            compression,
            level,
            source_date_epoch,
        } => {
            let out = File::from(data.ok_or("diff job without an output file")?);
            let compression = Compression::from_name(&compression, level)
                .ok_or_else(|| format!("unknown compression {compression}"))?;
            let mut writer = LayerWriter::new(out, compression)
                .map_err(|e| format!("starting the layer: {e}"))?;
            super::diff::write_upper(&upper, &mut writer, source_date_epoch)?;
            let summary = writer
                .finish()
                .map_err(|e| format!("finishing the layer: {e}"))?;
            summary
                .sink
                .sync_all()
                .map_err(|e| format!("syncing the layer file: {e}"))?;
            serde_json::to_value(DiffReport {
                diff_id: summary.diff_id.to_string(),
                uncompressed_size: summary.uncompressed_size,
            })
            .map_err(|e| e.to_string())
        }
    }
}
