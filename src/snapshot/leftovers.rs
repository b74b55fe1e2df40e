//! Temp dirs outside the store that a killed rbuild leaves behind: skeleton roots on tmpfs
//! (`/dev/shm/rbuild-skeleton-*`) and RUN scratch dirs (`$TMPDIR/rbuild-run-*`).
//!
//! Each such dir is locked (a shared `flock` on the directory itself) for as long as it is in
//! use; the lock goes with the process, however it ends. The first RUN or skeleton root of a
//! process sweeps once: a dir of ours whose lock is free and that is older than
//! [`MIN_AGE`] (so one just created and not yet locked is never taken) is deleted.

use std::collections::HashMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, Mode, OFlags};

/// Name prefix of skeleton roots on tmpfs.
pub(crate) const SKELETON_PREFIX: &str = "rbuild-skeleton-";
/// Name prefix of RUN scratch dirs (see `exec::run`).
pub(crate) const RUN_SCRATCH_PREFIX: &str = "rbuild-run-";
/// A free lock on a dir younger than this does not make it stale: its creator may not have
/// locked it yet.
pub(crate) const MIN_AGE: Duration = Duration::from_secs(30);
/// Where skeleton roots go when it is a tmpfs.
const SHM: &str = "/dev/shm";

/// Locks `dir` as in use until the returned descriptor is closed (or the process dies).
pub(crate) fn lock_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // Blocks only while a sweeper holds its probing lock, which it drops at once for a dir
    // this young.
    rustix::fs::flock(&fd, FlockOperation::LockShared)?;
    Ok(fd)
}

/// A fresh temp dir in `/dev/shm` when that is a writable tmpfs, else `None`. For scratch
/// trees of empty files (COPY's skeleton roots): creating thousands of inodes costs 150-300 µs
/// each on a busy disk and a few µs on tmpfs, and without file data they take little memory.
/// The dir stays locked while it exists (see the module docs).
pub(crate) fn tmpfs_dir(prefix: &str) -> Option<tempfile::TempDir> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let shm = Path::new(SHM);
    let fs = rustix::fs::statfs(shm).ok()?;
    if fs.f_type as i64 != TMPFS_MAGIC {
        return None;
    }
    sweep_once();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(shm)
        .ok()?;
    hold_lock(dir.path());
    Some(dir)
}

/// A fresh temp dir `parent/<prefix>*`, locked while it exists, after removing this user's
/// stale ones there (left by killed rbuild processes). For scratch space on the store's disk.
pub(crate) fn locked_tempdir_in(parent: &Path, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let removed = sweep(parent, prefix, MIN_AGE);
    if removed > 0 {
        tracing::info!(
            removed,
            "removed scratch dirs left by killed rbuild processes"
        );
    }
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
    hold_lock(dir.path());
    Ok(dir)
}

/// Locks for dirs handed out as plain `TempDir`s: kept until the dir is gone. Entries of
/// deleted dirs are dropped whenever another lock is added, so a long-lived process holds no
/// more descriptors than it has such dirs.
static HELD: Mutex<Option<HashMap<PathBuf, OwnedFd>>> = Mutex::new(None);

fn hold_lock(dir: &Path) {
    let Ok(fd) = lock_dir(dir) else {
        tracing::debug!(dir = %dir.display(), "cannot lock temp dir; a crash may leave it behind");
        return;
    };
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let held = held.get_or_insert_with(HashMap::new);
    held.retain(|path, _| path.exists());
    held.insert(dir.to_path_buf(), fd);
}

/// Sweeps stale dirs once per process.
pub(crate) fn sweep_once() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let removed = sweep(Path::new(SHM), SKELETON_PREFIX, MIN_AGE)
            + sweep(&std::env::temp_dir(), RUN_SCRATCH_PREFIX, MIN_AGE);
        if removed > 0 {
            tracing::info!(removed, "removed temp dirs left by killed rbuild processes");
        }
    });
}

/// Deletes the dirs `parent/<prefix>*` of this user whose lock is free and that are older
/// than `min_age`. Returns how many were removed; failures are logged and skipped (another
/// sweeper may be at the same dir).
pub(crate) fn sweep(parent: &Path, prefix: &str, min_age: Duration) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let me = rustix::process::geteuid().as_raw();
    // Host root hands RUN scratch dirs to its sandbox's root user (see `exec::hand_over`).
    let sandbox_root = crate::exec::IdMapping::current().host_uid(0);
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        let ours = meta.uid() == me || (me == 0 && Some(meta.uid()) == sandbox_root);
        if !meta.is_dir() || !ours || age < min_age {
            continue;
        }
        let Ok(fd) = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // in use
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::debug!(dir = %path.display(), "removed stale temp dir");
                removed += 1;
            }
            Err(e) => tracing::debug!(dir = %path.display(), "cannot remove stale temp dir: {e}"),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unlocked_dirs_are_swept() {
        let parent = tempfile::tempdir().unwrap();
        let stale = parent.path().join("rbuild-skeleton-stale");
        let busy = parent.path().join("rbuild-skeleton-busy");
        let other = parent.path().join("unrelated");
        for d in [&stale, &busy, &other] {
            fs::create_dir_all(d.join("sub")).unwrap();
            fs::write(d.join("sub/f"), b"x").unwrap();
        }
        let lock = lock_dir(&busy).unwrap();
        // Young dirs are left alone whatever their lock.
        assert_eq!(sweep(parent.path(), SKELETON_PREFIX, MIN_AGE), 0);
        assert!(stale.exists());
        assert_eq!(sweep(parent.path(), SKELETON_PREFIX, Duration::ZERO), 1);
        assert!(!stale.exists());
        assert!(busy.join("sub/f").exists(), "a locked dir is in use");
        assert!(other.exists());
        drop(lock);
        assert_eq!(sweep(parent.path(), SKELETON_PREFIX, Duration::ZERO), 1);
        assert!(!busy.exists());
    }

    #[test]
    fn tmpfs_dirs_stay_locked_while_they_exist() {
        let Some(dir) = tmpfs_dir(SKELETON_PREFIX) else {
            return; // no tmpfs /dev/shm here
        };
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        assert!(rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err());
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
