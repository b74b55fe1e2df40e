//! Layer indexes kept across builds: for each layer blob, its tar without file content
//! ([`super::tar_select::Index`]), zstd-compressed under `<root>/cache/layer-index-v1/`.
//!
//! Decompressing layers was most of what a rebuild of a multi-stage service cost: every
//! skeleton root (for COPY destinations, WORKDIR) and every `COPY --from` view inflated the
//! whole toolchain stage again (hundreds of MB of gzip) to learn which paths exist. An index is
//! written the first time a layer is read this way and used from then on; a view decompresses
//! only the layers that hold files it copies.
//!
//! An index is a cache: written atomically (temp file, fsync, rename) with a zstd checksum, so
//! a present index is whole; one that cannot be read is ignored (and rewritten). They are about
//! 0.2% of their layer's size; [`LayerIndexes::prune`] drops those of deleted blobs, but
//! `rbuild prune` does not call it yet.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::image::Digest;

/// The directory of layer indexes of one rbuild root.
pub(crate) struct LayerIndexes {
    dir: PathBuf,
}

impl LayerIndexes {
    /// The indexes of the store whose directory is `store_dir` (kept beside it, in `cache/`).
    pub(crate) fn new(store_dir: &std::path::Path) -> LayerIndexes {
        let root = store_dir.parent().unwrap_or(store_dir);
        LayerIndexes {
            dir: root.join("cache").join("layer-index-v1"),
        }
    }

    fn path(&self, blob: &Digest) -> PathBuf {
        self.dir.join(format!("{}.tar.zst", blob.hex()))
    }

    /// The index tar of layer blob `blob`, if one was written.
    pub(crate) fn read(&self, blob: &Digest) -> Option<Vec<u8>> {
        let path = self.path(blob);
        let file = std::fs::File::open(&path).ok()?;
        let mut tar = Vec::new();
        let read = zstd::stream::Decoder::new(file).and_then(|mut d| d.read_to_end(&mut tar));
        match read {
            Ok(_) => Some(tar),
            Err(e) => {
                tracing::debug!(
                    "ignoring the unreadable layer index {}: {e}",
                    path.display()
                );
                None
            }
        }
    }

    /// Stores `tar` as the index of `blob`. Best effort: a failure only costs a later build
    /// the decompression again.
    pub(crate) fn write(&self, blob: &Digest, tar: &[u8]) {
        if let Err(e) = self.try_write(blob, tar) {
            tracing::debug!("cannot write the layer index of {blob}: {e}");
        }
    }

    fn try_write(&self, blob: &Digest, tar: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".index-")
            .tempfile_in(&self.dir)?;
        let mut enc = zstd::stream::Encoder::new(tmp.as_file_mut(), 1)?;
        enc.include_checksum(true)?;
        enc.write_all(tar)?;
        enc.finish()?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(blob)).map_err(|e| e.error)?;
        Ok(())
    }
}

impl LayerIndexes {
    /// Deletes the indexes of layer blobs `keep` rejects (blobs gone from the store) and
    /// leftover temp files; returns how many files went. For `rbuild prune`.
    #[allow(dead_code)] // Not called by prune yet (see the module docs).
    pub(crate) fn prune(&self, keep: impl Fn(&Digest) -> bool) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let blob = (name.strip_suffix(".tar.zst"))
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok());
            if blob.is_none_or(|b| !keep(&b)) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_round_trip_and_damaged_ones_are_ignored() {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("store");
        let indexes = LayerIndexes::new(&store);
        let blob = Digest::of(b"layer");
        assert!(indexes.read(&blob).is_none());
        indexes.write(&blob, b"header blocks");
        assert_eq!(indexes.read(&blob).unwrap(), b"header blocks");
        let path = indexes.path(&blob);
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        assert!(
            indexes.read(&blob).is_none(),
            "a cut index must not be used"
        );

        let other = Digest::of(b"other layer");
        indexes.write(&other, b"x");
        std::fs::write(indexes.dir.join(".index-left"), b"").unwrap();
        assert_eq!(indexes.prune(|d| *d == other), 2);
        assert_eq!(indexes.read(&other).unwrap(), b"x");
    }
}
