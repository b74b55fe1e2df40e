//! Blob ingest: a writer that hashes while writing into a temp file inside `blobs/sha256/`, then
//! verifies, fsyncs and renames it into place. A temp file is never visible under a digest name,
//! so a killed rbuild leaves at most a `.tmp-*` file that `prune` removes later.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::Error;
use super::lock::LockGuard;
use crate::image::{Digest, Hasher};

/// Prefix of in-progress blob files; `prune` deletes leftovers with this prefix.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Streams bytes into the store. Implements [`std::io::Write`]; call [`BlobWriter::commit`] to
/// publish the blob. Dropping it without commit deletes the temp file.
pub struct BlobWriter {
    temp: NamedTempFile,
    hasher: Hasher,
    size: u64,
    blobs_dir: PathBuf,
    // Keeps prune from treating our temp file as stale while we write.
    _gc_guard: LockGuard,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.temp.path())
            .field("size", &self.size)
            .finish()
    }
}

impl BlobWriter {
    pub(crate) fn new(blobs_dir: &Path, gc_guard: LockGuard) -> Result<BlobWriter, Error> {
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(blobs_dir)
            .map_err(Error::io("create temp blob in", blobs_dir))?;
        Ok(BlobWriter {
            temp,
            hasher: Hasher::new(),
            size: 0,
            blobs_dir: blobs_dir.to_path_buf(),
            _gc_guard: gc_guard,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies the digest (when `expected` is given), fsyncs, and renames the temp file to
    /// `blobs/sha256/<hex>`. If the blob already exists (another writer won the race) the temp
    /// file is discarded: same digest, same bytes. Returns the digest and size.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), Error> {
        let temp_path = self.temp.path().to_path_buf();
        self.temp
            .flush()
            .map_err(Error::io("write", temp_path.clone()))?;
        let digest = self.hasher.clone().finish();
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let final_path = self.blobs_dir.join(digest.hex());
        if final_path.exists() {
            return Ok((digest, self.size));
        }
        let file = self.temp.as_file();
        file.sync_all()
            .map_err(Error::io("fsync", temp_path.clone()))?;
        // Blobs are immutable; readable by others so tools like skopeo/umoci run as other users.
        file.set_permissions(Permissions::from_mode(0o444))
            .map_err(Error::io("chmod", temp_path.clone()))?;
        self.temp.persist(&final_path).map_err(|e| Error::Io {
            op: "rename temp blob to",
            path: final_path.clone(),
            source: e.error,
        })?;
        sync_dir(&self.blobs_dir)?;
        tracing::debug!(%digest, size = self.size, "blob committed");
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.temp.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Makes a rename or unlink inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    // A no-change rebuild rewrites the same tag index and gc roots: skip the temp file and
    // its two fsyncs (~15 ms each on ext4) when the file already holds exactly these bytes.
    if std::fs::metadata(path).is_ok_and(|m| m.len() == bytes.len() as u64)
        && std::fs::read(path).is_ok_and(|old| old == bytes)
    {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(Error::io("create temp file in", dir))?;
    temp.write_all(bytes)
        .and_then(|_| temp.as_file().sync_all())
        .map_err(Error::io("write", temp.path().to_path_buf()))?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(0o644))
        .map_err(Error::io("chmod", temp.path().to_path_buf()))?;
    temp.persist(path).map_err(|e| Error::Io {
        op: "rename into",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(dir)
}
