//! Garbage collection: `prune` deletes blobs that no image and no registered gc root reaches,
//! plus temp files left by killed writers. It runs only under the exclusive `gc.lock`, which
//! every live [`super::BlobWriter`] and [`Store::gc_guard`] holder blocks.
//!
//! Other modules (the build cache) keep blobs alive by writing a root file with
//! [`Store::set_gc_roots`]: `gc-roots/<name>` holds one digest per line. A rooted manifest or
//! index keeps everything it references, a rooted layer keeps itself.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::blob::{TEMP_PREFIX, sync_dir, write_file_atomic};
use super::policy::PruneOptions;
use super::{Error, Store, lock};
use crate::image::Digest;

pub(crate) const ROOTS_DIR: &str = "gc-roots";
pub(crate) const SCRATCH_DIR: &str = "tmp";
/// Temp files outside `blobs/` are written under the index lock, not the gc lock, so only
/// remove ones old enough to be certainly abandoned.
const STALE_META_TEMP: Duration = Duration::from_secs(3600);

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Deleted blobs.
    pub removed_blobs: Vec<Digest>,
    /// Deleted leftover temp files.
    pub removed_temp_files: usize,
    /// Bytes freed (blobs and temp files).
    pub reclaimed_bytes: u64,
}

impl Store {
    /// Registers (or replaces) the gc root set `name`: these digests and everything they
    /// reference survive `prune`. Names are file names: letters, digits, `-`, `_`, `.`.
    pub fn set_gc_roots(&self, name: &str, digests: &[Digest]) -> Result<(), Error> {
        let path = self.dir.join(ROOTS_DIR).join(check_root_name(name)?);
        let mut text = String::new();
        for d in digests {
            text.push_str(&d.to_string());
            text.push('\n');
        }
        write_file_atomic(&path, text.as_bytes())
    }

    /// Removes the gc root set `name` (no error if it does not exist).
    pub fn remove_gc_roots(&self, name: &str) -> Result<(), Error> {
        let path = self.dir.join(ROOTS_DIR).join(check_root_name(name)?);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                op: "remove",
                path,
                source: e,
            }),
        }
    }

    /// Every digest named by a gc root file.
    pub fn gc_roots(&self) -> Result<Vec<Digest>, Error> {
        let dir = self.dir.join(ROOTS_DIR);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io("list", dir.clone()))? {
            let entry = entry.map_err(Error::io("list", dir.clone()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = entry.path();
            let text = fs::read_to_string(&path).map_err(Error::io("read", path.clone()))?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                match line.parse::<Digest>() {
                    Ok(d) => out.push(d),
                    Err(e) => tracing::warn!(path = %path.display(), "ignoring gc root line: {e}"),
                }
            }
        }
        Ok(out)
    }

    /// Removes image records without a name (docker's dangling images), only those recorded
    /// before `until` if given; returns how many.
    pub fn remove_unnamed_images(&self, until: Option<SystemTime>) -> Result<usize, Error> {
        self.remove_images_before(until, false)
    }

    /// Removes every image record, named or not (only those named before `until` if given);
    /// returns how many. Their blobs go at the next prune.
    pub fn remove_all_images(&self, until: Option<SystemTime>) -> Result<usize, Error> {
        self.remove_images_before(until, true)
    }

    fn remove_images_before(&self, until: Option<SystemTime>, named: bool) -> Result<usize, Error> {
        let cutoff = until.map(|u| {
            u.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        self.update_tag_index(|images| {
            let before = images.len();
            images.retain(|r| {
                let eligible = named || r.name.is_none();
                !eligible || cutoff.is_some_and(|c| r.updated_at >= c)
            });
            Ok(before - images.len())
        })
    }

    /// Removes every gc root set (the build cache's included; its entries then miss), only
    /// those last written before `until` if given; returns how many.
    pub fn clear_gc_roots(&self, until: Option<SystemTime>) -> Result<usize, Error> {
        let dir = self.dir.join(ROOTS_DIR);
        let mut n = 0;
        for entry in fs::read_dir(&dir).map_err(Error::io("list", dir.clone()))? {
            let entry = entry.map_err(Error::io("list", dir.clone()))?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            let old = until.is_none_or(|u| {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m < u)
            });
            if old {
                remove(&entry.path())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every blob reachable from an image record or a gc root.
    pub fn reachable_blobs(&self) -> Result<BTreeSet<Digest>, Error> {
        let images = self.list_images()?.into_iter().map(|r| r.target.digest);
        Ok(self.closure(images.chain(self.gc_roots()?)))
    }

    /// Deletes unreachable blobs and stale temp files. Waits for the exclusive gc lock, so it
    /// must not be called while this process holds a [`Store::gc_guard`] or a blob writer.
    pub fn prune(&self) -> Result<PruneReport, Error> {
        self.prune_with(&PruneOptions::default())
    }

    /// [`Store::prune`] limited by `options`: only blobs older than `until`, and (oldest
    /// first) only until the blobs fit in `keep_bytes`. Temp files are always removed.
    pub fn prune_with(&self, options: &PruneOptions) -> Result<PruneReport, Error> {
        self.prune_with_also(options, |_| 0)
    }

    /// [`Store::prune_with`], then `also` while the exclusive gc lock is still held (so no
    /// build runs): for caches kept beside the store, such as unpacked snapshots. The bytes
    /// `also` returns are added to the report.
    pub fn prune_with_also(
        &self,
        options: &PruneOptions,
        also: impl FnOnce(&Store) -> u64,
    ) -> Result<PruneReport, Error> {
        self.prune_locked(options, |_| Ok(()), also)
    }

    /// [`Store::prune_with_also`] that first runs `before` under the same exclusive gc lock,
    /// before reachability is computed: for dropping image records and gc roots (such as old
    /// build cache entries) so that the blobs they kept go in this very prune, with no build
    /// running in between.
    pub fn prune_locked(
        &self,
        options: &PruneOptions,
        before: impl FnOnce(&Store) -> Result<(), Error>,
        also: impl FnOnce(&Store) -> u64,
    ) -> Result<PruneReport, Error> {
        let lock_path = self.dir.join("gc.lock");
        let _guard = match lock::try_exclusive(&lock_path)? {
            Some(g) => g,
            None => {
                tracing::info!("waiting for other rbuild processes to release the store");
                lock::exclusive(&lock_path)?
            }
        };
        before(self)?;
        let keep = self.reachable_blobs()?;
        let mut report = PruneReport::default();
        let mut total = 0u64;
        let mut candidates = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(Error::io("list", self.blobs.clone()))? {
            let entry = entry.map_err(Error::io("list", self.blobs.clone()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let meta = entry.metadata().map_err(Error::io("stat", path.clone()))?;
            if name.starts_with(TEMP_PREFIX) {
                remove(&path)?;
                report.removed_temp_files += 1;
                report.reclaimed_bytes += meta.len();
                continue;
            }
            total += meta.len();
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let old_enough = options.until.is_none_or(|until| mtime < until);
            if !keep.contains(&digest) && old_enough {
                candidates.push((mtime, digest, path, meta.len()));
            }
        }
        candidates.sort();
        for (_, digest, path, size) in candidates {
            if options.keep_bytes.is_some_and(|limit| total <= limit) {
                break;
            }
            remove(&path)?;
            total -= size;
            report.reclaimed_bytes += size;
            report.removed_blobs.push(digest);
        }
        sync_dir(&self.blobs)?;
        // Scratch users hold the shared gc lock, so under the exclusive one all of tmp/ is stale.
        let scratch = self.dir.join(SCRATCH_DIR);
        if let Ok(entries) = fs::read_dir(&scratch) {
            for entry in entries.flatten() {
                let path = entry.path();
                report.reclaimed_bytes += tree_size(&path);
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(Error::io("remove", path))?;
                report.removed_temp_files += 1;
            }
        }
        for dir in [self.dir.clone(), self.dir.join(ROOTS_DIR)] {
            report.removed_temp_files += remove_old_temps(&dir, &mut report.reclaimed_bytes)?;
        }
        report.reclaimed_bytes += also(self);
        tracing::info!(
            blobs = report.removed_blobs.len(),
            bytes = report.reclaimed_bytes,
            "pruned store"
        );
        Ok(report)
    }
}

fn remove(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Bytes of every regular file under `path` (files that cannot be stat'ed are not counted).
pub(crate) fn tree_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn remove_old_temps(dir: &Path, reclaimed: &mut u64) -> Result<usize, Error> {
    let mut n = 0;
    let now = SystemTime::now();
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > STALE_META_TEMP);
        if old {
            remove(&entry.path())?;
            *reclaimed += meta.len();
            n += 1;
        }
    }
    Ok(n)
}

fn check_root_name(name: &str) -> Result<&str, Error> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(name)
    } else {
        Err(Error::InvalidRootName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Descriptor, ImageConfig, ImageManifest, mediatype};

    #[test]
    fn prune_keeps_images_and_roots_and_drops_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let s = Store::open(root.path()).unwrap();
        let layer = s.write_blob(b"layer bytes").unwrap();
        let cfg = s
            .put_config(&ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                ..Default::default()
            })
            .unwrap();
        let m = s
            .put_manifest(&ImageManifest::new_oci(
                cfg.clone(),
                vec![Descriptor::new(mediatype::OCI_LAYER_TAR, layer.clone(), 11)],
            ))
            .unwrap();
        s.put_image("docker.io/library/x:latest", &m.digest)
            .unwrap();
        let rooted = s.write_blob(b"cache blob").unwrap();
        s.set_gc_roots("cache", std::slice::from_ref(&rooted))
            .unwrap();
        let junk = s.write_blob(b"junk").unwrap();
        fs::write(s.blobs.join(".tmp-dead"), b"partial").unwrap();
        let scratch = s.scratch_dir("export-").unwrap().keep();
        fs::write(scratch.join("leftover"), b"12345").unwrap();

        let report = s.prune().unwrap();
        assert_eq!(report.removed_blobs, vec![junk.clone()]);
        assert_eq!(report.removed_temp_files, 2);
        assert_eq!(report.reclaimed_bytes, 4 + 7 + 5);
        assert!(!scratch.exists());
        for d in [&layer, &cfg.digest, &m.digest, &rooted] {
            assert!(s.has_blob(d), "{d} should survive");
        }
        s.remove_gc_roots("cache").unwrap();
        s.remove_name("docker.io/library/x:latest").unwrap();
        let report = s.prune().unwrap();
        assert_eq!(report.removed_blobs.len(), 4);
        assert!(s.set_gc_roots("../evil", &[]).is_err());
    }

    #[test]
    fn prune_with_until_and_keep_storage_removes_oldest_unreferenced_first() {
        let root = tempfile::tempdir().unwrap();
        let s = Store::open(root.path()).unwrap();
        let age = |d: &Digest, secs_ago: i64| {
            let t = filetime::FileTime::from_unix_time(
                filetime::FileTime::now().unix_seconds() - secs_ago,
                0,
            );
            filetime::set_file_mtime(s.blob_path(d), t).unwrap();
        };
        let ancient = s.write_blob(&[1u8; 100]).unwrap();
        let old = s.write_blob(&[2u8; 100]).unwrap();
        let fresh = s.write_blob(&[3u8; 100]).unwrap();
        age(&ancient, 7200);
        age(&old, 3000);

        let until = PruneOptions {
            until: Some(SystemTime::now() - Duration::from_secs(3600)),
            keep_bytes: None,
        };
        assert_eq!(s.prune_with(&until).unwrap().removed_blobs, vec![ancient]);
        assert!(s.has_blob(&old) && s.has_blob(&fresh));

        let keep = PruneOptions {
            until: None,
            keep_bytes: Some(150),
        };
        assert_eq!(s.prune_with(&keep).unwrap().removed_blobs, vec![old]);
        assert!(s.has_blob(&fresh));
    }
}
