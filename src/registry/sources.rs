//! Which registry repositories are known to hold each blob, remembered from pulls and pushes
//! in `<root>/registry/blob-sources-v1.json`, so a push can ask for a cross-repository mount
//! instead of uploading. The file is only a hint: losing an entry costs an upload, nothing
//! more, so concurrent writers simply last-write-win.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::Digest;

use super::RegistryError;

const FILE: &str = "blob-sources-v1.json";
/// Repositories remembered per blob; older ones fall off.
const MAX_PER_BLOB: usize = 8;

#[derive(Debug, Default, Serialize, Deserialize)]
struct SourcesFile {
    version: u32,
    /// digest → `registry/repository` names, most recent last.
    blobs: BTreeMap<String, Vec<String>>,
}

/// The blob-source memory of one rbuild root.
#[derive(Debug, Clone)]
pub struct BlobSources {
    path: PathBuf,
}

impl BlobSources {
    /// The memory kept under `root` (the `--root` directory).
    pub fn new(root: &Path) -> BlobSources {
        BlobSources {
            path: root.join("registry").join(FILE),
        }
    }

    /// Repositories of `registry` other than `except` known to hold `digest`.
    pub fn repositories(&self, digest: &Digest, registry: &str, except: &str) -> Vec<String> {
        let file = self.load();
        let prefix = format!("{registry}/");
        file.blobs
            .get(&digest.to_string())
            .map(|names| {
                names
                    .iter()
                    .rev()
                    .filter_map(|n| n.strip_prefix(&prefix))
                    .filter(|repo| *repo != except)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Remembers that `registry/repository` holds all of `digests`.
    pub fn record(
        &self,
        registry: &str,
        repository: &str,
        digests: &[Digest],
    ) -> Result<(), RegistryError> {
        let mut file = self.load();
        file.version = 1;
        let name = format!("{registry}/{repository}");
        for d in digests {
            let names = file.blobs.entry(d.to_string()).or_default();
            names.retain(|n| *n != name);
            names.push(name.clone());
            if names.len() > MAX_PER_BLOB {
                names.remove(0);
            }
        }
        self.save(&file)
    }

    fn load(&self) -> SourcesFile {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable {}: {e}", self.path.display());
                SourcesFile::default()
            }),
            Err(_) => SourcesFile::default(),
        }
    }

    fn save(&self, file: &SourcesFile) -> Result<(), RegistryError> {
        let dir = self.path.parent().expect("sources file has a parent");
        let err = |path: &Path, e: &dyn std::fmt::Display| RegistryError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(dir, &e))?;
        let bytes = serde_json::to_vec(file).map_err(|e| err(&self.path, &e))?;
        tmp.write_all(&bytes).map_err(|e| err(tmp.path(), &e))?;
        tmp.persist(&self.path)
            .map_err(|e| err(&self.path, &e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_repositories_per_registry() {
        let root = tempfile::tempdir().unwrap();
        let s = BlobSources::new(root.path());
        let d = Digest::of(b"layer");
        assert!(s.repositories(&d, "r:1", "x").is_empty());
        s.record("r:1", "a", std::slice::from_ref(&d)).unwrap();
        s.record("r:1", "b", std::slice::from_ref(&d)).unwrap();
        s.record("other:2", "c", std::slice::from_ref(&d)).unwrap();
        assert_eq!(s.repositories(&d, "r:1", "x"), vec!["b", "a"]);
        assert_eq!(s.repositories(&d, "r:1", "b"), vec!["a"]);
        assert_eq!(s.repositories(&d, "other:2", "x"), vec!["c"]);
        for i in 0..20 {
            s.record("r:1", &format!("n{i}"), std::slice::from_ref(&d))
                .unwrap();
        }
        assert_eq!(s.repositories(&d, "r:1", "").len(), MAX_PER_BLOB);
    }
}
