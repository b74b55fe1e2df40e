//! The build cache: a step's cache key (its parent's key, the planned op with every expanded
//! value, and the content digest of what it reads) mapped to the layer it produced. Entries are
//! small JSON files under `<root>/cache/index-v1/`, written atomically; their layers are
//! registered as store gc roots so `rbuild prune` keeps them.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// The on-disk cache index.
pub(crate) struct BuildCache {
    dir: PathBuf,
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

impl BuildCache {
    /// The cache of the rbuild root that holds `store`.
    pub(crate) fn open(store: &Store) -> BuildCache {
        let root = store.dir().parent().unwrap_or(store.dir()).to_path_buf();
        BuildCache {
            dir: root.join("cache").join("index-v1"),
        }
    }

    /// The entry for `key`, if its layer is still in the store.
    pub(crate) fn lookup(&self, store: &Store, key: &Digest) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.dir.join(key.hex())).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        store.has_blob(&entry.layer.digest).then_some(entry)
    }

    /// Records `entry` under `key` (best effort: a cache that cannot be written only costs
    /// time, so failures are logged, not fatal).
    pub(crate) fn record(&self, key: &Digest, entry: &CacheEntry) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(&serde_json::to_vec(entry)?)?;
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
