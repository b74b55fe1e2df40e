//! What `rbuild prune` removes from the build cache beside the store's blobs: cache index
//! entries (`<root>/cache/index-v1/`) whose layer is gone or that are older than `until`,
//! cache-miss explanations (`cache/explain-v1/`) of steps whose entry went, in-flight step
//! locks (`cache/locks/`), layer indexes (`cache/layer-index-v1/`) of deleted blobs, and
//! `RUN --mount=type=cache` directories (`<root>/cache-mounts/`), as `docker builder prune
//! --all` removes BuildKit's cache mounts.
//!
//! Everything here runs under the store's exclusive gc lock (see
//! [`crate::store::Store::prune_locked`]), so no build is reading or writing these files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::cache::{BuildCache, CacheEntry};
use crate::image::Digest;
use crate::store::Store;
use crate::store::tree_size;

/// The cache index directory of the rbuild root `root` (as `cache.rs` lays it out).
fn index_dir(root: &Path) -> PathBuf {
    root.join("cache").join("index-v1")
}

/// One `RUN --mount=type=cache` directory and when a step last used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountUsage {
    /// The mount's id as the executor recorded it (`id=`, else the target; `from=` caches
    /// carry their source after a NUL).
    pub id: String,
    /// The directory holding its instances (`data`, `private-N`).
    pub path: PathBuf,
    /// Bytes of its files.
    pub size: u64,
    /// When a step last acquired it (the executor rewrites its `id` file on every use).
    pub last_used: SystemTime,
}

/// What [`prune_cache`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachePruneReport {
    /// Cache index entries removed.
    pub index_entries: usize,
    /// Cache-miss explanation records removed.
    pub explain_records: usize,
    /// Cache mount directories removed.
    pub cache_mounts: usize,
    /// Layer indexes (content-free copies of layers) removed with their blobs.
    pub layer_indexes: usize,
    /// Bytes freed (metadata files and cache mount contents).
    pub reclaimed_bytes: u64,
}

fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Every cache mount directory of the rbuild root `root`, least recently used first.
pub fn cache_mount_usage(root: &Path) -> Vec<CacheMountUsage> {
    let Ok(entries) = fs::read_dir(root.join("cache-mounts")) else {
        return Vec::new();
    };
    let mut out: Vec<CacheMountUsage> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let path = e.path();
            let id_file = path.join("id");
            let id = fs::read_to_string(&id_file)
                .unwrap_or_else(|_| e.file_name().to_string_lossy().into_owned());
            let last_used = match fs::symlink_metadata(&id_file) {
                Ok(m) => m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                Err(_) => mtime(&path),
            };
            CacheMountUsage {
                id,
                size: tree_size(&path),
                path,
                last_used,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.last_used, &a.id).cmp(&(b.last_used, &b.id)));
    out
}

/// Removes cache index entries last used before `until` (every entry when `until` is `None`)
/// and registers what is left as the build cache's gc roots, so the removed entries' layers
/// go with the blob prune that follows. Returns how many entries went. Call under the gc lock,
/// before the blob prune.
pub fn drop_cache_entries(store: &Store, until: Option<SystemTime>) -> usize {
    let root = store.dir().parent().unwrap_or(store.dir());
    let mut removed = 0;
    if let Ok(entries) = fs::read_dir(index_dir(root)) {
        for e in entries.flatten() {
            let path = e.path();
            if until.is_none_or(|u| mtime(&path) < u) && remove_file(&path) {
                removed += 1;
            }
        }
    }
    if until.is_none() {
        if let Err(e) = store.remove_gc_roots(BUILD_CACHE_ROOTS) {
            tracing::warn!("cannot drop the build cache's gc roots: {e}");
        }
    } else {
        BuildCache::open(store).protect(store);
    }
    removed
}

/// Where `layer_index.rs` keeps its indexes, under `<root>/cache/`.
const LAYER_INDEX_DIR: &str = "layer-index-v1";

/// The gc root set `BuildCache::protect` writes.
const BUILD_CACHE_ROOTS: &str = "build-cache";

fn remove_file(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!("cannot remove {}: {e}", path.display());
            false
        }
    }
}

/// Cleans the build cache after the store's blobs were pruned: index entries whose layer blob
/// is gone (they could never hit again), the explanations of steps whose entry is gone, every
/// step lock (no build runs under the gc lock, so none is held), and, with `all`, the cache
/// mounts last used before `until`, least recently used first, only until the store's blobs
/// and the remaining mounts fit in `keep_bytes`. With `all` and no `until` the explanations
/// go entirely. Call under the gc lock, after the blob prune.
pub fn prune_cache(
    store: &Store,
    all: bool,
    until: Option<SystemTime>,
    keep_bytes: Option<u64>,
) -> CachePruneReport {
    let root = store.dir().parent().unwrap_or(store.dir());
    let mut report = CachePruneReport::default();
    let index = index_dir(root);
    if let Ok(entries) = fs::read_dir(&index) {
        for e in entries.flatten() {
            let path = e.path();
            let dangling = match fs::read(&path) {
                Ok(bytes) => serde_json::from_slice::<CacheEntry>(&bytes)
                    .map_or(true, |entry| !store.has_blob(&entry.layer.digest)),
                Err(_) => false,
            };
            if dangling {
                let size = file_len(&path);
                if remove_file(&path) {
                    report.index_entries += 1;
                    report.reclaimed_bytes += size;
                }
            }
        }
    }
    let cache = root.join("cache");
    let explain = cache.join("explain-v1");
    if all && until.is_none() {
        report.reclaimed_bytes += remove_dir(&explain);
    } else {
        let (n, bytes) = prune_explanations(&explain, &index);
        report.explain_records += n;
        report.reclaimed_bytes += bytes;
    }
    report.reclaimed_bytes += remove_dir(&cache.join("locks"));
    let indexes = super::layer_index::LayerIndexes::new(store.dir());
    let before = tree_size(&cache.join(LAYER_INDEX_DIR));
    report.layer_indexes = indexes.prune(|blob| store.has_blob(blob));
    let after = tree_size(&cache.join(LAYER_INDEX_DIR));
    report.reclaimed_bytes += before.saturating_sub(after);
    if all {
        prune_mounts(store, root, until, keep_bytes, &mut report);
    }
    report
}

fn file_len(path: &Path) -> u64 {
    fs::symlink_metadata(path).map_or(0, |m| m.len())
}

/// Removes `dir` and everything in it; returns the bytes freed.
fn remove_dir(dir: &Path) -> u64 {
    if !dir.exists() {
        return 0;
    }
    let size = tree_size(dir);
    match fs::remove_dir_all(dir) {
        Ok(()) => size,
        Err(e) => {
            tracing::warn!("cannot remove {}: {e}", dir.display());
            0
        }
    }
}

/// Removes the explanation records (`<slot>.json` and `<slot>.files`) of steps that produced a
/// layer whose cache entry no longer exists: the next build of that step is a first build.
fn prune_explanations(explain: &Path, index: &Path) -> (usize, u64) {
    let Ok(entries) = fs::read_dir(explain) else {
        return (0, 0);
    };
    let (mut n, mut bytes) = (0, 0);
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(record) = fs::read(&path)
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|_| ()))
        else {
            continue;
        };
        let key = record["key"].as_str().unwrap_or_default();
        let had_layer = record["layer"].as_bool().unwrap_or(false);
        let Ok(key) = key.parse::<Digest>() else {
            continue;
        };
        if !had_layer || index.join(key.hex()).exists() {
            continue;
        }
        for p in [path.clone(), path.with_extension("files")] {
            let size = file_len(&p);
            if remove_file(&p) {
                bytes += size;
            }
        }
        n += 1;
    }
    (n, bytes)
}

/// Removes cache mounts last used before `until`, oldest first, until the store's blobs and
/// the remaining mounts fit in `keep_bytes`. Their files may belong to container ids, so the
/// executor's helper empties them inside the user namespace.
fn prune_mounts(
    store: &Store,
    root: &Path,
    until: Option<SystemTime>,
    keep_bytes: Option<u64>,
    report: &mut CachePruneReport,
) {
    let mounts = cache_mount_usage(root);
    let mut total = match keep_bytes {
        Some(_) => blob_bytes(store) + mounts.iter().map(|m| m.size).sum::<u64>(),
        None => 0,
    };
    for m in mounts {
        if keep_bytes.is_some_and(|limit| total <= limit) {
            break;
        }
        if until.is_some_and(|u| m.last_used >= u) {
            continue;
        }
        match empty_and_remove(&m.path) {
            Ok(()) => {
                total = total.saturating_sub(m.size);
                report.cache_mounts += 1;
                report.reclaimed_bytes += m.size;
            }
            Err(e) => tracing::warn!("cannot remove cache mount {:?}: {e}", m.id),
        }
    }
}

fn blob_bytes(store: &Store) -> u64 {
    store
        .usage()
        .map(|u| u.iter().map(|b| b.size).sum())
        .unwrap_or(0)
}

/// Removes a cache mount directory. Its `id` and lock files belong to the host user (or host
/// root, which has no id inside the sandbox's user namespace), its instance dirs to the
/// sandbox's root and their files to any container id: the host removes what it can, the
/// executor's helper empties each instance dir inside the user namespace, and the host then
/// removes the rest.
fn empty_and_remove(dir: &Path) -> Result<(), String> {
    if fs::remove_dir_all(dir).is_ok() {
        return Ok(());
    }
    let subdirs = fs::read_dir(dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path());
    for sub in subdirs {
        let job = crate::snapshot::NsJob::Empty { dir: sub.clone() };
        match crate::exec::call(crate::exec::Job::Snapshot(job), None, None, &mut |_, _| {}) {
            Ok(crate::exec::Response::Done(_)) => {}
            Ok(crate::exec::Response::Failed(m)) => return Err(format!("{}: {m}", sub.display())),
            Ok(crate::exec::Response::Exited(_)) => {
                return Err("unexpected reply to an empty job".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Descriptor;

    fn entry(store: &Store, key: &Digest, layer: &Digest) {
        let root = store.dir().parent().unwrap();
        let dir = index_dir(root);
        fs::create_dir_all(&dir).unwrap();
        let e = CacheEntry {
            layer: Descriptor::new("application/vnd.oci.image.layer.v1.tar", layer.clone(), 1),
            diff_id: Digest::of(b"diff"),
        };
        fs::write(dir.join(key.hex()), serde_json::to_vec(&e).unwrap()).unwrap();
    }

    fn explanation(root: &Path, slot: &str, key: &Digest, layer: bool) -> PathBuf {
        let dir = root.join("cache/explain-v1");
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{slot}.json"));
        let text = serde_json::json!({"key": key.to_string(), "layer": layer});
        fs::write(&p, text.to_string()).unwrap();
        fs::write(dir.join(format!("{slot}.files")), "{}").unwrap();
        p
    }

    #[test]
    fn dangling_entries_their_explanations_and_locks_go() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let kept_blob = store.write_blob(b"kept").unwrap();
        let (kept, gone, nolayer) = (Digest::of(b"k1"), Digest::of(b"k2"), Digest::of(b"k3"));
        entry(&store, &kept, &kept_blob);
        entry(&store, &gone, &Digest::of(b"pruned blob"));
        let kept_x = explanation(root.path(), "a", &kept, true);
        let gone_x = explanation(root.path(), "b", &gone, true);
        let nolayer_x = explanation(root.path(), "c", &nolayer, false);
        fs::create_dir_all(root.path().join("cache/locks")).unwrap();
        fs::write(root.path().join("cache/locks").join(gone.hex()), "").unwrap();

        let indexes = root.path().join("cache").join(LAYER_INDEX_DIR);
        fs::create_dir_all(&indexes).unwrap();
        let kept_index = indexes.join(format!("{}.tar.zst", kept_blob.hex()));
        let gone_index = indexes.join(format!("{}.tar.zst", Digest::of(b"pruned blob").hex()));
        fs::write(&kept_index, "index").unwrap();
        fs::write(&gone_index, "index").unwrap();

        let report = prune_cache(&store, false, None, None);
        assert_eq!(report.layer_indexes, 1);
        assert!(kept_index.exists() && !gone_index.exists());
        assert_eq!(report.index_entries, 1);
        assert_eq!(report.explain_records, 1);
        assert!(index_dir(root.path()).join(kept.hex()).exists());
        assert!(!index_dir(root.path()).join(gone.hex()).exists());
        assert!(kept_x.exists() && nolayer_x.exists());
        assert!(!gone_x.exists() && !gone_x.with_extension("files").exists());
        assert!(!root.path().join("cache/locks").exists());

        prune_cache(&store, true, None, None);
        assert!(!root.path().join("cache/explain-v1").exists());
    }

    #[test]
    fn dropping_entries_by_age_reroots_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (old_blob, new_blob) = (
            store.write_blob(b"old").unwrap(),
            store.write_blob(b"new").unwrap(),
        );
        let (old, new) = (Digest::of(b"old key"), Digest::of(b"new key"));
        entry(&store, &old, &old_blob);
        entry(&store, &new, &new_blob);
        let hour_ago =
            filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() - 3600, 0);
        filetime::set_file_mtime(index_dir(root.path()).join(old.hex()), hour_ago).unwrap();
        let until = SystemTime::now() - std::time::Duration::from_secs(600);
        assert_eq!(drop_cache_entries(&store, Some(until)), 1);
        assert_eq!(store.gc_roots().unwrap(), vec![new_blob.clone()]);
        assert_eq!(drop_cache_entries(&store, None), 1);
        assert!(store.gc_roots().unwrap().is_empty());
    }

    #[test]
    fn cache_mounts_are_listed_least_recently_used_first() {
        let root = tempfile::tempdir().unwrap();
        for (hex, id, age) in [("aa", "apt", 100), ("bb", "go", 7200)] {
            let d = root.path().join("cache-mounts").join(hex);
            fs::create_dir_all(d.join("data")).unwrap();
            fs::write(d.join("data/f"), "12345").unwrap();
            fs::write(d.join("id"), id).unwrap();
            let t = filetime::FileTime::from_unix_time(
                filetime::FileTime::now().unix_seconds() - age,
                0,
            );
            filetime::set_file_mtime(d.join("id"), t).unwrap();
        }
        let usage = cache_mount_usage(root.path());
        let ids: Vec<&str> = usage.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["go", "apt"]);
        assert!(usage.iter().all(|u| u.size == 7 || u.size == 8));
    }
}
