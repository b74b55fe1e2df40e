//! Filesystem operations confined to a root directory fd. Every path is resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and absolute or relative
//! symlinks planted by a layer resolve inside the root; the final component of every
//! operation is a plain name acted on with `*at` calls that never follow it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};

/// A directory that all operations stay inside.
pub(super) struct Root {
    fd: OwnedFd,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

impl Root {
    /// Opens `path` (the caller's trusted destination) as the root.
    pub(super) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(Root { fd })
    }

    /// Opens the directory at `rel` (components joined by `/`, empty for the root itself),
    /// resolving every component inside the root.
    pub(super) fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let path: &[u8] = if rel.is_empty() { b"." } else { rel };
        Ok(rustix::fs::openat2(
            &self.fd,
            OsStr::from_bytes(path),
            DIR_FLAGS,
            Mode::empty(),
            resolve_flags(),
        )?)
    }

    /// Like [`Root::open_dir`], but the last component must itself be a directory, not a
    /// symlink to one.
    pub(super) fn open_dir_nofollow(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let Some(split) = rel.iter().rposition(|&b| b == b'/') else {
            if rel.is_empty() {
                return self.open_dir(b"");
            }
            return Ok(rustix::fs::openat(
                &self.fd,
                OsStr::from_bytes(rel),
                DIR_FLAGS | OFlags::NOFOLLOW,
                Mode::empty(),
            )?);
        };
        let parent = self.open_dir(&rel[..split])?;
        Ok(rustix::fs::openat(
            &parent,
            OsStr::from_bytes(&rel[split + 1..]),
            DIR_FLAGS | OFlags::NOFOLLOW,
            Mode::empty(),
        )?)
    }

    /// Like [`Root::open_dir`], creating missing directories (mode 0755, as docker does).
    pub(super) fn create_dirs(&self, comps: &[&[u8]]) -> io::Result<OwnedFd> {
        let full = comps.join(&b'/');
        match self.open_dir(&full) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        let mut parent = self.open_dir(b"")?;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join(&b'/');
            parent = match self.open_dir(&prefix) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // `comps[i]` is one plain name, so this creates inside `parent`, which
                    // was itself resolved inside the root.
                    match rustix::fs::mkdirat(
                        &parent,
                        OsStr::from_bytes(comps[i]),
                        Mode::from(0o755),
                    ) {
                        Ok(()) => {}
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.open_dir(&prefix)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(parent)
    }
}

/// The type of `name` in `dir`, without following a symlink; `None` when absent.
pub(super) fn file_type_at(dir: impl AsFd, name: &[u8]) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `dir`: a file, link or node is unlinked, a directory is emptied
/// recursively (never following symlinks) and removed. A missing name is not an error.
pub(super) fn remove_at(dir: impl AsFd, name: &[u8]) -> io::Result<()> {
    let dir = dir.as_fd();
    let Some(ft) = file_type_at(dir, name)? else {
        return Ok(());
    };
    let os = OsStr::from_bytes(name);
    if ft == FileType::Directory {
        let sub = rustix::fs::openat(dir, os, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
        // An unwritable directory (0555) cannot lose its entries until it is writable.
        let st = rustix::fs::fstat(&sub)?;
        if st.st_mode & 0o300 != 0o300 {
            rustix::fs::fchmod(&sub, Mode::from_raw_mode(st.st_mode | 0o700))?;
        }
        for child in list_names(&sub)? {
            remove_at(&sub, &child)?;
        }
        rustix::fs::unlinkat(dir, os, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, os, AtFlags::empty())?;
    }
    Ok(())
}

/// The names in directory `dir`, without `.` and `..`.
pub(super) fn list_names(dir: impl AsFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root_path = outer.path().join("root");
        std::fs::create_dir(&root_path).unwrap();
        std::os::unix::fs::symlink("/", root_path.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", root_path.join("up")).unwrap();
        let root = Root::open(&root_path).unwrap();
        let made = root.create_dirs(&[b"abs", b"made"]).unwrap();
        rustix::fs::mkdirat(&made, "x", Mode::from(0o755)).unwrap();
        assert!(root_path.join("made/x").is_dir());
        root.create_dirs(&[b"up", b"also"]).unwrap();
        assert!(root_path.join("also").is_dir());
        assert_eq!(std::fs::read_dir(outer.path()).unwrap().count(), 1);
    }

    #[test]
    fn remove_at_does_not_follow_symlinks() {
        let outer = tempfile::tempdir().unwrap();
        let keep = outer.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("f"), "x").unwrap();
        let root_path = outer.path().join("root");
        std::fs::create_dir_all(root_path.join("d/ro")).unwrap();
        std::os::unix::fs::symlink(&keep, root_path.join("d/link")).unwrap();
        std::fs::write(root_path.join("d/ro/f"), "x").unwrap();
        std::fs::set_permissions(
            root_path.join("d/ro"),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
        let root = Root::open(&root_path).unwrap();
        remove_at(root.open_dir(b"").unwrap(), b"d").unwrap();
        assert!(!root_path.join("d").exists());
        assert!(keep.join("f").exists());
    }
}
