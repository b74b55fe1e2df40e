//! Layer entries from the host filesystem: `append_from_fs` turns one lstat'ed path into an
//! entry (hard links detected by (dev, ino), xattrs, SOURCE_DATE_EPOCH clamp), `append_at`
//! does the same for a name inside an open directory (no path walks, for big trees), and
//! `write_dir_tree` appends a whole directory in sorted, reproducible order.

use std::ffi::{CStr, OsStr};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};

use super::meta::{
    DeviceKind, EntryMeta, EntryOptions, host_to_container, normalize_name, xattr_is_portable,
};
use super::writer::LayerWriter;
use super::{LayerError, Result};

impl<W: std::io::Write> LayerWriter<W> {
    /// Appends `host_path` (not following a final symlink) as `name_in_layer`, reading mode
    /// (with setuid/setgid/sticky), owner, mtime and xattrs from disk; `options` override
    /// owner and mode and clamp the mtime. A file whose inode was already appended by this
    /// writer becomes a hard link to the first name. Sockets are refused.
    pub fn append_from_fs(
        &mut self,
        name_in_layer: impl AsRef<Path>,
        host_path: impl AsRef<Path>,
        options: &EntryOptions,
    ) -> Result<()> {
        let host_path = host_path.as_ref();
        let name = name_in_layer.as_ref();
        let host_err = |op, source| LayerError::Host {
            op,
            path: host_path.to_path_buf(),
            source,
        };
        let md = fs::symlink_metadata(host_path).map_err(|e| host_err("lstat", e))?;
        let ft = md.file_type();
        let meta = entry_meta(host_path, &md, options, ft.is_symlink())?;

        if !ft.is_dir() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.inodes.get(&key) {
                let first = PathBuf::from(std::ffi::OsStr::from_bytes(first));
                return self.append_hardlink(name, first, &meta);
            }
            self.inodes.insert(key, normalize_name(name)?);
        }

        if ft.is_dir() {
            self.append_dir(name, &meta)
        } else if ft.is_file() {
            // O_NOFOLLOW: if the file was swapped for a symlink since lstat, fail rather than
            // read whatever the link points at into the layer.
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(host_path)
                .map_err(|e| host_err("open", e))?;
            self.append_file(name, &meta, file, md.len())
        } else if ft.is_symlink() {
            let target = fs::read_link(host_path).map_err(|e| host_err("read link", e))?;
            self.append_symlink(name, target, &meta)
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                DeviceKind::Char
            } else {
                DeviceKind::Block
            };
            let rdev = md.rdev();
            self.append_device(
                name,
                kind,
                rustix::fs::major(rdev),
                rustix::fs::minor(rdev),
                &meta,
            )
        } else if ft.is_fifo() {
            self.append_fifo(name, &meta)
        } else {
            Err(LayerError::UnsupportedFileType {
                path: host_path.to_path_buf(),
                kind: "a socket",
            })
        }
    }
}

fn entry_meta(
    path: &Path,
    md: &fs::Metadata,
    options: &EntryOptions,
    is_symlink: bool,
) -> Result<EntryMeta> {
    let mut meta = base_meta(
        md.mode(),
        (md.uid(), md.gid()),
        (md.mtime(), md.mtime_nsec()),
        options,
        is_symlink,
    );
    if options.xattrs {
        read_xattrs(path, &mut meta)?;
    }
    Ok(meta)
}

/// Entry metadata from raw stat fields with `options` applied; no xattrs yet.
fn base_meta(
    mode: u32,
    (uid, gid): (u32, u32),
    (mtime, mtime_nsec): (i64, i64),
    options: &EntryOptions,
    is_symlink: bool,
) -> EntryMeta {
    let mut meta = EntryMeta {
        mode: match options.mode {
            Some(mode) if !is_symlink => mode & 0o7777,
            _ => mode & 0o7777,
        },
        uid: options
            .uid
            .unwrap_or_else(|| host_to_container(&options.uid_map, uid)),
        gid: options
            .gid
            .unwrap_or_else(|| host_to_container(&options.gid_map, gid)),
        mtime,
        mtime_nsec: mtime_nsec.clamp(0, 999_999_999) as u32,
        xattrs: Default::default(),
    };
    if let Some(epoch) = options.source_date_epoch {
        meta.clamp_mtime(epoch);
    }
    meta
}

impl<W: std::io::Write> LayerWriter<W> {
    /// [`append_from_fs`](Self::append_from_fs) for `file` inside the open directory `dir`,
    /// whose `lstat` the caller already has in `st` (from `statat` with
    /// `AT_SYMLINK_NOFOLLOW`): files and directories are opened relative to `dir` and their
    /// xattrs read through the descriptor, so a tree of many small files costs no path
    /// walks. Returns the opened directory when the entry is one, for the caller's descent.
    /// The entry is the same as `append_from_fs` writes for that path.
    pub fn append_at(
        &mut self,
        name: impl AsRef<Path>,
        dir: BorrowedFd<'_>,
        file: &CStr,
        st: &Stat,
        options: &EntryOptions,
    ) -> Result<Option<OwnedFd>> {
        let name = name.as_ref();
        let host_err = |op, source: rustix::io::Errno| LayerError::Host {
            op,
            path: name.to_path_buf(),
            source: source.into(),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let mut meta = base_meta(
            st.st_mode,
            (st.st_uid, st.st_gid),
            (st.st_mtime, st.st_mtime_nsec as i64),
            options,
            ft == FileType::Symlink,
        );
        let opened = match ft {
            FileType::Directory => Some(
                rustix::fs::openat(
                    dir,
                    file,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| host_err("open", e))?,
            ),
            // O_NOFOLLOW: if the file was swapped for a symlink since the stat, fail rather
            // than read whatever the link points at into the layer.
            FileType::RegularFile => Some(
                rustix::fs::openat(
                    dir,
                    file,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| host_err("open", e))?,
            ),
            _ => None,
        };
        if options.xattrs {
            match &opened {
                Some(fd) => read_xattrs_fd(fd.as_fd(), name, &mut meta)?,
                // Symlinks, devices and fifos cannot be opened for their xattrs; the path
                // through the directory's descriptor does not follow the final name.
                None => {
                    let mut path = PathBuf::from(format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(&dir)
                    ));
                    path.push(OsStr::from_bytes(file.to_bytes()));
                    read_xattrs(&path, &mut meta)?;
                }
            }
        }
        if ft != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.inodes.get(&key) {
                let first = PathBuf::from(OsStr::from_bytes(first));
                self.append_hardlink(name, first, &meta)?;
                return Ok(None);
            }
            self.inodes.insert(key, normalize_name(name)?);
        }
        match ft {
            FileType::Directory => {
                self.append_dir(name, &meta)?;
                Ok(opened)
            }
            FileType::RegularFile => {
                let file = fs::File::from(opened.expect("opened above"));
                self.append_file(name, &meta, file, st.st_size as u64)?;
                Ok(None)
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, file, Vec::new())
                    .map_err(|e| host_err("read link", e))?;
                self.append_symlink(name, OsStr::from_bytes(target.as_bytes()), &meta)?;
                Ok(None)
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let kind = if ft == FileType::CharacterDevice {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                let rdev = st.st_rdev;
                self.append_device(
                    name,
                    kind,
                    rustix::fs::major(rdev),
                    rustix::fs::minor(rdev),
                    &meta,
                )?;
                Ok(None)
            }
            FileType::Fifo => {
                self.append_fifo(name, &meta)?;
                Ok(None)
            }
            _ => Err(LayerError::UnsupportedFileType {
                path: name.to_path_buf(),
                kind: "a socket",
            }),
        }
    }
}

/// Reads the portable xattrs of an open file or directory.
fn read_xattrs_fd(fd: BorrowedFd<'_>, name: &Path, meta: &mut EntryMeta) -> Result<()> {
    let host_err = |op, e: rustix::io::Errno| LayerError::Host {
        op,
        path: name.to_path_buf(),
        source: e.into(),
    };
    let unsupported = |e: rustix::io::Errno| {
        matches!(
            e,
            rustix::io::Errno::NOTSUP | rustix::io::Errno::NODATA | rustix::io::Errno::PERM
        )
    };
    let mut list = [0u8; 1024];
    let mut big = Vec::new();
    let names: &[u8] = match rustix::fs::flistxattr(fd, &mut list[..]) {
        Ok(n) => &list[..n],
        Err(rustix::io::Errno::RANGE) => {
            let len =
                rustix::fs::flistxattr_query(fd).map_err(|e| host_err("list xattrs of", e))?;
            big.resize(len, 0);
            let n = rustix::fs::flistxattr(fd, &mut big[..])
                .map_err(|e| host_err("list xattrs of", e))?;
            &big[..n]
        }
        Err(e) if unsupported(e) => return Ok(()),
        Err(e) => return Err(host_err("list xattrs of", e)),
    };
    for key in names.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        if !xattr_is_portable(OsStr::from_bytes(key)) {
            continue;
        }
        let Ok(key_str) = std::str::from_utf8(key) else {
            continue;
        };
        let value = match rustix::fs::fgetxattr_query(fd, key) {
            Ok(len) => {
                let mut value = vec![0u8; len];
                match rustix::fs::fgetxattr(fd, key, &mut value[..]) {
                    Ok(n) => {
                        value.truncate(n);
                        value
                    }
                    Err(e) if unsupported(e) => continue,
                    Err(e) => return Err(host_err("read xattrs of", e)),
                }
            }
            Err(e) if unsupported(e) => continue,
            Err(e) => return Err(host_err("read xattrs of", e)),
        };
        meta.xattrs.insert(key_str.to_string(), value);
    }
    Ok(())
}

/// Reads the portable xattrs of `path` without following a symlink. Filesystems without
/// xattr support simply have none.
fn read_xattrs(path: &Path, meta: &mut EntryMeta) -> Result<()> {
    let unsupported = |e: &std::io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOTSUP) | Some(libc::ENODATA) | Some(libc::EPERM)
        )
    };
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(()),
        Err(source) => {
            return Err(LayerError::Host {
                op: "list xattrs of",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    for name in names.filter(|n| xattr_is_portable(n)) {
        let Some(key) = name.to_str() else { continue };
        match xattr::get(path, &name) {
            Ok(Some(value)) => {
                meta.xattrs.insert(key.to_string(), value);
            }
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(source) => {
                return Err(LayerError::Host {
                    op: "read xattrs of",
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Appends everything under `host_root` (depth first, names sorted bytewise, symlinks not
/// followed) with names under `prefix`. When `prefix` is not empty the root directory itself
/// is written as `prefix/`; parents of `prefix` are the caller's business. Sockets are skipped
/// with a warning, as docker does. Returns the number of entries written.
pub fn write_dir_tree<W: std::io::Write>(
    writer: &mut LayerWriter<W>,
    host_root: &Path,
    prefix: &Path,
    options: &EntryOptions,
) -> Result<u64> {
    let mut count = 0;
    let walk = walkdir::WalkDir::new(host_root)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(host_root).to_path_buf();
            LayerError::Host {
                op: "walk",
                path,
                source: e.into(),
            }
        })?;
        let rel = entry
            .path()
            .strip_prefix(host_root)
            .expect("walkdir yields paths under its root");
        let name = prefix.join(rel);
        // The root itself is only an entry when it gets a name in the layer.
        if rel.as_os_str().is_empty() && normalize_name(prefix).is_err() {
            continue;
        }
        if entry.file_type().is_socket() {
            tracing::warn!(path = %entry.path().display(), "skipping socket: it cannot be stored in a layer");
            continue;
        }
        writer.append_from_fs(&name, entry.path(), options)?;
        count += 1;
    }
    Ok(count)
}

/// Sorts layer entry paths the way `write_dir_tree` walks: component by component, so each
/// directory comes right before its contents and siblings are in byte order.
pub fn sort_layer_paths<P: AsRef<Path>>(paths: &mut [P]) {
    paths.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_matches_the_walk_order() {
        let mut paths = vec!["a.txt", "a/x", "b", "a", "a/x/y", "A"];
        sort_layer_paths(&mut paths);
        assert_eq!(paths, ["A", "a", "a/x", "a/x/y", "a.txt", "b"]);
    }
}
