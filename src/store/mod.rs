//! The content store under `--root`: blobs by digest in an OCI image layout, a versioned tag
//! index, atomic writes, cross-process locks and garbage collection.
//!
//! Layout (`<root>/store/`):
//! - `oci-layout`, `blobs/sha256/<hex>`: a standard OCI image layout; `index.json` mirrors the
//!   tag index (rewritten on every change) with `org.opencontainers.image.ref.name` set to the
//!   full name, so `umoci ls --layout <root>/store` lists it. skopeo's `oci:` transport only
//!   sees entries with OCI media types, not Docker-typed images.
//! - `index-v1.json`: rbuild's tag index (names → manifest digest + image ID). The version is in
//!   the file name and the file; a newer format gets a new name instead of a migration.
//! - `gc-roots/<name>`: extra GC roots other modules register (digests, one per line).
//! - `tmp/`: scratch directories ([`Store::scratch_dir`]), emptied by `prune`.
//! - `gc.lock`: shared by blob writers and [`Store::gc_guard`] holders, exclusive for `prune`;
//!   `index.lock`: exclusive around every tag index read-modify-write.
//!
//! The store does not parse image names: callers pass fully normalised reference strings.
//! Blob reads are lock-free (blobs are immutable and appear atomically). Anything that writes
//! blobs and names them later should hold [`Store::gc_guard`] in between so `prune` waits.

mod blob;
mod error;
mod gc;
mod images;
mod lock;
mod policy;
mod read;
mod usage;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use blob::BlobWriter;
pub use error::Error;
pub use gc::PruneReport;
pub(crate) use gc::tree_size;
pub use images::ImageRecord;
pub use lock::LockGuard;
pub use policy::{PolicyError, PruneOptions};
pub use read::LoadedImage;
pub use usage::{BlobOwner, BlobUsage};

use crate::image::Digest;

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// An opened content store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    blobs: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `<root>/store/`.
    pub fn open(root: &Path) -> Result<Store, Error> {
        let dir = root.join("store");
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(Error::io("create directory", blobs.clone()))?;
        let roots = dir.join(gc::ROOTS_DIR);
        fs::create_dir_all(&roots).map_err(Error::io("create directory", roots.clone()))?;
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            blob::write_file_atomic(&layout, OCI_LAYOUT.as_bytes())?;
        }
        let store = Store { dir, blobs };
        if !store.dir.join("index.json").exists() {
            let _g = lock::exclusive(&store.dir.join("index.lock"))?;
            // Another process may have created it (and named images) while we waited.
            if !store.dir.join("index.json").exists() {
                store.write_oci_index(&store.load_tag_index()?)?;
            }
        }
        Ok(store)
    }

    /// The store directory (`<root>/store`), an OCI image layout.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The blob's size in bytes.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64, Error> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(Error::Io {
                op: "stat",
                path,
                source: e,
            }),
        }
    }

    /// Opens a blob for streaming reads (no digest check; see [`Store::read_blob`]).
    pub fn open_blob(&self, digest: &Digest) -> Result<File, Error> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::BlobNotFound(digest.clone())
            } else {
                Error::Io {
                    op: "open",
                    path,
                    source: e,
                }
            }
        })
    }

    /// Reads a whole blob and checks that it still hashes to its name. Meant for manifests and
    /// configs; stream layers with [`Store::open_blob`].
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::BlobNotFound(digest.clone())
            } else {
                Error::Io {
                    op: "read",
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Stores `bytes` and returns their digest (a no-op if the blob exists).
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(Error::io("write", self.blobs.clone()))?;
        let (d, _) = w.commit(Some(&digest))?;
        Ok(d)
    }

    /// Starts streaming a new blob (see [`BlobWriter`]). Holds a shared gc lock until committed
    /// or dropped, so do not call [`Store::prune`] from the same thread while one is open.
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        let guard = self.gc_guard()?;
        BlobWriter::new(&self.blobs, guard)
    }

    /// A scratch directory under `<store>/tmp/`, removed when dropped. Hold a
    /// [`Store::gc_guard`] while using it: `prune` empties `tmp/` of anything left behind by
    /// killed processes.
    pub fn scratch_dir(&self, prefix: &str) -> Result<tempfile::TempDir, Error> {
        let tmp = self.dir.join(gc::SCRATCH_DIR);
        fs::create_dir_all(&tmp).map_err(Error::io("create directory", tmp.clone()))?;
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(Error::io("create scratch directory in", tmp))
    }

    /// A shared lock that keeps `prune` from running. Hold it from writing a build's blobs until
    /// the image is named (or its gc root written), so nothing is collected in between.
    pub fn gc_guard(&self) -> Result<LockGuard, Error> {
        lock::shared(&self.dir.join("gc.lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_an_oci_layout() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        assert!(store.dir().join("oci-layout").is_file());
        assert!(store.dir().join("blobs/sha256").is_dir());
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(store.dir().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        Store::open(root.path()).unwrap();
    }

    #[test]
    fn write_then_read_blob() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let d = store.write_blob(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(store.has_blob(&d));
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        assert_eq!(store.blob_size(&d).unwrap(), 5);
        assert!(matches!(
            store.read_blob(&Digest::of(b"nope")),
            Err(Error::BlobNotFound(_))
        ));
    }

    #[test]
    fn writer_checks_expected_digest_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        let err = w.commit(Some(&Digest::of(b"xyz"))).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
        assert!(!store.has_blob(&Digest::of(b"abc")));
        let leftovers = fs::read_dir(store.dir().join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0);
    }
}
