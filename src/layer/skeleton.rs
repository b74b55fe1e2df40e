//! Skeleton roots: a layer chain applied with every directory, symlink and special file and
//! their metadata, but with regular files reduced to hard links to one empty file (except user
//! and group databases, which keep their data). A build needs such a root only to resolve a
//! COPY destination, `--chown` names or a WORKDIR: which paths exist, which are directories,
//! where symlinks lead. Writing (and later deleting) every file of an image for that made
//! throwaway roots the slowest part of a build on this project's disks: each new inode and
//! each freed data block cost about a millisecond once many files had come and gone.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};

use super::Result;
use super::apply::{ApplyOptions, ApplyStats, run};
use super::owners::OwnerTable;
use super::whiteout::WhiteoutMode;

/// Which regular files get their content written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Content {
    /// Every file.
    All,
    /// Only user and group databases (`passwd`, `group`, wherever they are, so a symlinked
    /// `/etc/passwd` still resolves); every other regular file is a hard link to one empty
    /// file ([`SKELETON_FILE`] in the root), so it has neither data nor metadata of its own.
    Skeleton,
}

/// The empty file that a skeleton's data-less regular files link to, in the root.
pub const SKELETON_FILE: &str = ".rbuild-skeleton-file";

impl Content {
    pub(super) fn wants(self, base: &[u8]) -> bool {
        match self {
            Content::All => true,
            Content::Skeleton => base == b"passwd" || base == b"group",
        }
    }
}

/// Applies `layer` onto `dest` like [`super::apply`], except that regular files other than
/// `passwd` and `group` files become hard links to `dest/`[`SKELETON_FILE`]: they exist, with
/// no data and no metadata of their own. Never read files from such a root.
pub fn apply_skeleton<R: Read + Send>(
    layer: R,
    dest: &Path,
    options: &ApplyOptions,
) -> Result<ApplyStats> {
    run(
        layer,
        dest,
        options,
        WhiteoutMode::Delete,
        Content::Skeleton,
        None,
    )
}

/// Applies `layer` as a skeleton like [`apply_skeleton`], recording the image's owners in
/// `owners` as [`super::apply_recording_owners`] does: a skeleton's files have no inode of
/// their own, so the table is the only place their owners are.
pub fn apply_skeleton_recording_owners<R: Read + Send>(
    layer: R,
    dest: &Path,
    options: &ApplyOptions,
    owners: &mut OwnerTable,
) -> Result<ApplyStats> {
    run(
        layer,
        dest,
        options,
        WhiteoutMode::Delete,
        Content::Skeleton,
        Some(owners),
    )
}

/// Links `parent/name` to the root's [`SKELETON_FILE`], creating it (again, when it has as
/// many links as the filesystem allows). A link allocates no inode: creating thousands of
/// empty files cost seconds on a disk whose inode bitmaps many deletions had fragmented.
pub(super) fn link_placeholder(root: &OwnedFd, parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    for attempt in 0..2 {
        match rustix::fs::linkat(root, SKELETON_FILE, parent, name, AtFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::NOENT) if attempt == 0 => {}
            Err(rustix::io::Errno::MLINK) if attempt == 0 => {
                rustix::fs::unlinkat(root, SKELETON_FILE, AtFlags::empty())?;
            }
            Err(e) => return Err(e.into()),
        }
        rustix::fs::openat(
            root,
            SKELETON_FILE,
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from(0o644),
        )?;
    }
    Err(io::Error::other(
        "the skeleton's empty file keeps disappearing",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Compression, EntryMeta, LayerWriter};
    use std::os::unix::fs::MetadataExt;

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap();
        let mut dir = EntryMeta::with_mode(0o750);
        dir.mtime = 7;
        w.append_dir("etc", &dir).unwrap();
        w.append_dir("app", &dir).unwrap();
        for (name, data) in files {
            w.append_file(name, &EntryMeta::with_mode(0o755), *data, data.len() as u64)
                .unwrap();
        }
        w.append_symlink("bin", "app", &EntryMeta::with_mode(0o777))
            .unwrap();
        w.finish().unwrap().sink
    }

    #[test]
    fn skeleton_keeps_paths_dirs_links_and_account_data_only() {
        let one = layer(&[
            ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            ("app/a", b"aaa"),
            ("app/b", b"bee"),
        ]);
        let two = layer(&[("app/c", b"sea")]);
        let dest = tempfile::tempdir().unwrap();
        let opts = ApplyOptions {
            chown: false,
            xattrs: false,
        };
        let stats = apply_skeleton(&one[..], dest.path(), &opts).unwrap();
        assert_eq!(stats.files, 3);
        apply_skeleton(&two[..], dest.path(), &opts).unwrap();
        let p = |n: &str| dest.path().join(n);
        assert_eq!(
            std::fs::read(p("etc/passwd")).unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        let empty = std::fs::symlink_metadata(p(SKELETON_FILE)).unwrap();
        for f in ["app/a", "app/b", "app/c"] {
            let m = std::fs::symlink_metadata(p(f)).unwrap();
            assert!(m.is_file());
            assert_eq!(m.len(), 0, "{f}");
            assert_eq!(m.ino(), empty.ino(), "{f} is a link to the empty file");
        }
        let app = std::fs::symlink_metadata(p("app")).unwrap();
        assert_eq!((app.mode() & 0o7777, app.mtime()), (0o750, 7));
        assert_eq!(std::fs::read_link(p("bin")).unwrap(), Path::new("app"));
        assert!(std::fs::symlink_metadata(p("nope")).is_err());
    }
}
