//! Cross-process locks on the store (flock via `fs4`). Two lock files:
//! `gc.lock` is held shared by anything that writes or relies on unreferenced blobs (blob
//! writers, builds between writing blobs and naming the image) and exclusive by `prune`;
//! `index.lock` is held exclusive for every tag index read-modify-write.

use std::fs::{File, OpenOptions};
use std::path::Path;

use fs4::fs_std::FileExt;

use super::Error;

/// A held lock; released when dropped (closing the descriptor drops the flock).
#[derive(Debug)]
pub struct LockGuard {
    file: File,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

fn open_lock_file(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Error::io("open lock file", path))
}

/// Blocks until a shared lock on `path` is held.
pub(crate) fn shared(path: &Path) -> Result<LockGuard, Error> {
    let file = open_lock_file(path)?;
    FileExt::lock_shared(&file).map_err(Error::io("lock (shared)", path))?;
    Ok(LockGuard { file })
}

/// Blocks until an exclusive lock on `path` is held.
pub(crate) fn exclusive(path: &Path) -> Result<LockGuard, Error> {
    let file = open_lock_file(path)?;
    FileExt::lock_exclusive(&file).map_err(Error::io("lock (exclusive)", path))?;
    Ok(LockGuard { file })
}

/// Takes an exclusive lock only if nobody holds the lock right now.
pub(crate) fn try_exclusive(path: &Path) -> Result<Option<LockGuard>, Error> {
    let file = open_lock_file(path)?;
    match FileExt::try_lock_exclusive(&file) {
        Ok(true) => Ok(Some(LockGuard { file })),
        Ok(false) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(Error::Io {
            op: "lock (exclusive)",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_lock_excludes_shared_holders() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gc.lock");
        let s = shared(&p).unwrap();
        assert!(try_exclusive(&p).unwrap().is_none());
        drop(s);
        let x = try_exclusive(&p).unwrap();
        assert!(x.is_some());
    }
}
