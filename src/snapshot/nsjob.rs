//! Snapshot work that must happen inside the user namespace, where files carry container ids.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A snapshot operation executed by the sandbox helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NsJob {
    /// Deletes `parent/name`, a tree owned by container ids.
    Remove { parent: PathBuf, name: String },
}

impl NsJob {
    /// Host paths the job touches; the helper pins them before entering the namespace.
    pub(crate) fn host_paths(&mut self) -> Vec<&mut PathBuf> {
        match self {
            NsJob::Remove { parent, .. } => vec![parent],
        }
    }
}

/// Runs `job` inside the helper; `data` is the job's data file, if the caller passed one.
pub(crate) fn run_ns_job(job: NsJob, _data: Option<OwnedFd>) -> Result<serde_json::Value, String> {
    match job {
        NsJob::Remove { parent, name } => {
            let path = parent.join(&name);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => Ok(serde_json::Value::Null),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::Value::Null),
                Err(e) => Err(format!("removing {name}: {e}")),
            }
        }
    }
}
