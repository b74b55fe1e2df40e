//! The build cache: a step's cache key (its parent's key, the planned op with every expanded
//! value, and the content digest of what it reads) mapped to the layer it produced. Entries are
//! small JSON files under `<root>/cache/index-v1/`, written atomically; their layers are
//! registered as store gc roots so `rbuild prune` keeps them. Caches imported with
//! `--cache-from` answer the keys the local index lacks; a hit copies the entry (and, only
//! then, its layer blob) into this root. Every entry a build uses is remembered for
//! `--cache-to` and for the history times of the image.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::cache_remote::ImportedCache;
use crate::image::{Descriptor, Digest, Hasher};
use crate::store::Store;

/// One cached step result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CacheEntry {
    /// The compressed layer blob.
    pub layer: Descriptor,
    /// Its uncompressed digest.
    pub diff_id: Digest,
}

/// A cache entry as stored: the result and when its layer was first built (Unix seconds;
/// absent in entries written before times were recorded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    #[serde(flatten)]
    pub entry: CacheEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

/// The on-disk cache index, the imported caches, and what this build used.
pub(crate) struct BuildCache {
    dir: PathBuf,
    imported: Vec<ImportedCache>,
    /// Every entry this build hit or recorded, by key.
    used: Mutex<BTreeMap<Digest, StoredEntry>>,
}

/// A cache key built from labelled parts, so different inputs can never collide by
/// concatenation.
pub(crate) fn key(parts: &[(&str, &[u8])]) -> Digest {
    let mut h = Hasher::new();
    h.update(b"rbuild-cache-v1\0");
    for (label, bytes) in parts {
        h.update(label.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finish()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl BuildCache {
    /// The cache of the rbuild root that holds `store`.
    pub(crate) fn open(store: &Store) -> BuildCache {
        let root = store.dir().parent().unwrap_or(store.dir()).to_path_buf();
        BuildCache {
            dir: root.join("cache").join("index-v1"),
            imported: Vec::new(),
            used: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds caches read with `--cache-from`; they answer keys the local index lacks.
    pub(crate) fn with_imports(mut self, imported: Vec<ImportedCache>) -> BuildCache {
        self.imported = imported;
        self
    }

    /// The entry for `key`, if its layer is in the store or can be fetched from an imported
    /// cache. A fetch failure is a miss (logged), never an error.
    pub(crate) fn lookup(&self, store: &Store, key: &Digest) -> Option<CacheEntry> {
        let local = std::fs::read(self.dir.join(key.hex()))
            .ok()
            .and_then(|b| serde_json::from_slice::<StoredEntry>(&b).ok());
        if let Some(stored) = local
            && store.has_blob(&stored.entry.layer.digest)
        {
            // The entry file's mtime is its last use: `prune --filter until=` ages entries by it.
            touch(&self.dir.join(key.hex()));
            return Some(self.use_entry(key, stored));
        }
        for imported in &self.imported {
            let Some(found) = imported.entries.get(key) else {
                continue;
            };
            if let Err(e) = imported.source.fetch_into(store, &found.layer) {
                tracing::warn!("cache hit for {key} but its layer could not be fetched: {e}");
                continue;
            }
            let stored = StoredEntry {
                entry: CacheEntry {
                    layer: found.layer.clone(),
                    diff_id: found.diff_id.clone(),
                },
                created: found
                    .created
                    .as_deref()
                    .and_then(crate::image::parse_rfc3339)
                    .map(|t| t as i64),
            };
            self.write(key, &stored);
            return Some(self.use_entry(key, stored));
        }
        None
    }

    fn use_entry(&self, key: &Digest, stored: StoredEntry) -> CacheEntry {
        let entry = stored.entry.clone();
        self.used
            .lock()
            .expect("cache lock")
            .insert(key.clone(), stored);
        entry
    }

    /// Records `entry` under `key`, its layer built now (best effort: a cache that cannot be
    /// written only costs time, so failures are logged, not fatal).
    pub(crate) fn record(&self, key: &Digest, entry: &CacheEntry) {
        let stored = StoredEntry {
            entry: entry.clone(),
            created: Some(now()),
        };
        self.write(key, &stored);
        self.use_entry(key, stored);
    }

    fn write(&self, key: &Digest, stored: &StoredEntry) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(&serde_json::to_vec(stored)?)?;
            tmp.persist(self.dir.join(key.hex()))?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(
                "cannot record build cache entry in {}: {e}",
                self.dir.display()
            );
        }
    }

    /// Every entry this build hit or recorded, by key.
    pub(crate) fn used(&self) -> BTreeMap<Digest, StoredEntry> {
        self.used.lock().expect("cache lock").clone()
    }

    /// When the layer `digest` was first built, per the entries this build used (the earliest
    /// when several steps produced the same blob, so the answer does not depend on order).
    pub(crate) fn created_of(&self, digest: &Digest) -> Option<i64> {
        self.used
            .lock()
            .expect("cache lock")
            .values()
            .filter(|s| s.entry.layer.digest == *digest)
            .filter_map(|s| s.created)
            .min()
    }

    /// Registers every cached layer as a gc root of the store.
    pub(crate) fn protect(&self, store: &Store) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut layers = Vec::new();
        for e in dir.flatten() {
            if let Ok(bytes) = std::fs::read(e.path())
                && let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes)
            {
                layers.push(entry.layer.digest);
            }
        }
        layers.sort();
        layers.dedup();
        if let Err(e) = store.set_gc_roots("build-cache", &layers) {
            tracing::warn!("cannot register build cache layers as gc roots: {e}");
        }
    }
}

/// Marks a cache entry as used now (best effort: a failure only makes `prune --filter until=`
/// see the entry as older than it is).
fn touch(path: &std::path::Path) {
    let done = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = done {
        tracing::debug!("could not mark cache entry {} as used: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key(&[("a", b"bc")]), key(&[("ab", b"c")]));
        assert_ne!(key(&[("a", b"b"), ("c", b"")]), key(&[("a", b"bc")]));
        assert_eq!(key(&[("a", b"b")]), key(&[("a", b"b")]));
    }

    #[test]
    fn lookup_requires_the_layer_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cache = BuildCache::open(&store);
        let blob = store.write_blob(b"layer").unwrap();
        let entry = CacheEntry {
            layer: Descriptor::new("application/vnd.oci.image.layer.v1.tar", blob, 5),
            diff_id: Digest::of(b"x"),
        };
        let k = key(&[("t", b"1")]);
        cache.record(&k, &entry);
        assert!(cache.lookup(&store, &k).is_some());
        assert!(cache.lookup(&store, &key(&[("t", b"2")])).is_none());
        let gone = CacheEntry {
            layer: Descriptor::new(
                "application/vnd.oci.image.layer.v1.tar",
                Digest::of(b"missing"),
                1,
            ),
            ..entry
        };
        cache.record(&k, &gone);
        assert!(cache.lookup(&store, &k).is_none());
    }
}
