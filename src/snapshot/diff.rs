//! The layer of a RUN step, read from its overlay upper dir only (never by walking the whole
//! root): 0:0 character devices are deletions (`.wh.<name>`), `user.overlay.opaque` dirs were
//! replaced (`.wh..wh..opq`). Runs inside the user namespace, so `lstat` already reports
//! container uids and gids and every file is readable.
//!
//! The walk is descriptor-relative: each directory is opened once, listed with `getdents`,
//! and its entries are `statat`'ed and opened relative to it, so a step that wrote 20,000
//! small files costs no path lookups beyond one name each.

use std::ffi::{CStr, CString, OsStr};
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::layer::{EntryOptions, LayerWriter};

/// Bytes of `getdents` buffer per directory listing.
const DIRENT_BUFFER: usize = 64 * 1024;

/// Appends every change recorded in `upper` to `writer`, in sorted order (directories before
/// their contents, siblings by bytes, as a sorted `walkdir` yields them).
pub(crate) fn write_upper<W: Write>(
    upper: &Path,
    writer: &mut LayerWriter<W>,
    source_date_epoch: Option<i64>,
) -> Result<(), String> {
    let options = EntryOptions {
        source_date_epoch,
        ..EntryOptions::default()
    };
    let root = rustix::fs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening the upper dir: {e}"))?;
    let mut walk = Walk {
        writer,
        options,
        name: PathBuf::new(),
        dirents: vec![MaybeUninit::uninit(); DIRENT_BUFFER],
    };
    walk.dir(root.as_fd())
}

struct Walk<'w, W: Write> {
    writer: &'w mut LayerWriter<W>,
    options: EntryOptions,
    /// The current entry's name in the layer.
    name: PathBuf,
    dirents: Vec<MaybeUninit<u8>>,
}

impl<W: Write> Walk<'_, W> {
    fn dir(&mut self, dir: BorrowedFd<'_>) -> Result<(), String> {
        for file in self.list(dir)? {
            self.name.push(OsStr::from_bytes(file.to_bytes()));
            let result = self.entry(dir, &file);
            self.name.pop();
            result?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, file: &CStr) -> Result<(), String> {
        let st = rustix::fs::statat(dir, file, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| format!("lstat {}: {e}", self.name.display()))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0 {
            return self
                .writer
                .append_whiteout(&self.name)
                .map_err(|e| e.to_string());
        }
        let sub = self
            .writer
            .append_at(&self.name, dir, file, &st, &self.options)
            .map_err(|e| e.to_string())?;
        if let Some(sub) = sub {
            if is_opaque(sub.as_fd()) {
                self.writer
                    .append_opaque(&self.name)
                    .map_err(|e| e.to_string())?;
            }
            self.dir(sub.as_fd())?;
        }
        Ok(())
    }

    /// The names in `dir` (a freshly opened descriptor), sorted by bytes.
    fn list(&mut self, dir: BorrowedFd<'_>) -> Result<Vec<CString>, String> {
        let mut names = Vec::new();
        let mut entries = rustix::fs::RawDir::new(dir, &mut self.dirents);
        while let Some(entry) = entries.next() {
            let entry = entry.map_err(|e| format!("listing {}: {e}", shown(&self.name)))?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable();
        Ok(names)
    }
}

fn shown(name: &Path) -> String {
    if name.as_os_str().is_empty() {
        "the upper dir".into()
    } else {
        name.display().to_string()
    }
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut v = [0u8; 2];
            matches!(rustix::fs::fgetxattr(dir, *name, &mut v[..]), Ok(1) if v[0] == b'y')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Compression, write_dir_tree};
    use std::os::unix::fs::symlink;

    /// Without overlay markers the descriptor walk must write exactly what the path-based
    /// tree writer writes (same entries, same bytes, same diffID).
    #[test]
    fn walk_matches_the_path_based_tree_writer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("a.d")).unwrap();
        std::fs::write(root.join("a/b/small"), b"x").unwrap();
        std::fs::write(root.join("a/big"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(root.join("A"), b"upper case first").unwrap();
        std::fs::hard_link(root.join("a/b/small"), root.join("z-link")).unwrap();
        symlink("a/b/small", root.join("sym")).unwrap();
        xattr::set(root.join("a/big"), "user.test", b"v").unwrap_or_default();
        let mut many = root.join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..300 {
            many.push(format!("f{i}"));
            std::fs::write(&many, i.to_string()).unwrap();
            many.pop();
        }

        let mut ours = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        write_upper(root, &mut ours, Some(1_700_000_000)).unwrap();
        let ours = ours.finish().unwrap();

        let mut theirs = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        let options = EntryOptions {
            source_date_epoch: Some(1_700_000_000),
            ..EntryOptions::default()
        };
        write_dir_tree(&mut theirs, root, Path::new(""), &options).unwrap();
        let theirs = theirs.finish().unwrap();
        assert_eq!(ours.diff_id, theirs.diff_id);
        assert!(ours.sink == theirs.sink);
        assert!(ours.uncompressed_size > 3 << 20);
    }

    #[test]
    fn opaque_dirs_get_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cache")).unwrap();
        if xattr::set(dir.path().join("cache"), "user.overlay.opaque", b"y").is_err() {
            return; // no user xattrs on this filesystem
        }
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        write_upper(dir.path(), &mut w, None).unwrap();
        let tar = w.finish().unwrap().sink;
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["cache/", "cache/.wh..wh..opq"]);
    }
}
