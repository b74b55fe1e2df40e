//! The output of COPY/ADD resolution: one [`LayerEntry`] per path the instruction writes into
//! the image, with its final metadata already decided (chown, chmod, archive headers), so the
//! layer writer only has to stream content; and the [`EntrySet`] that orders them, fills in
//! parent directories and refuses to turn an image's symlink or file into a directory.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ContextError;
use super::owner::Chown;

/// A modification time with nanoseconds, as stored in PAX headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Sub-second part.
    pub nanos: u32,
}

impl Mtime {
    /// The modification time recorded in `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Mtime {
        use std::os::unix::fs::MetadataExt;
        Mtime {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        }
    }
}

/// What kind of file an entry is, and where its content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file whose bytes are read from `source` on the host.
    File {
        /// Host path of the content (in the context, a stage root, or ADD's staging dir).
        source: PathBuf,
        /// Content length in bytes.
        size: u64,
    },
    /// A symbolic link, target kept verbatim.
    Symlink {
        /// The link target.
        target: String,
    },
    /// A hard link to another path in the image (from an ADD archive).
    Hardlink {
        /// Image path (no leading `/`) of the earlier entry it links to.
        target: String,
    },
}

/// One path COPY/ADD writes into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Path inside the image, relative to its root (no leading `/`, no trailing `/`).
    pub path: String,
    /// File kind and content source.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (no file-type bits).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time; `None` for directories the copy creates, which get the build's
    /// timestamp (`SOURCE_DATE_EPOCH` or now) chosen by the driver.
    pub mtime: Option<Mtime>,
    /// Whether the path already exists in the destination root and is listed only because a
    /// layer must carry the parents of what it adds (its metadata is the existing one).
    pub existing_parent: bool,
    /// Host path whose extended attributes the entry keeps (`user.*`, `security.capability`):
    /// the source file or directory of a copy. `None` for entries the copy creates itself
    /// (parent directories, links), which carry no xattrs.
    pub xattrs_from: Option<PathBuf>,
}

impl LayerEntry {
    /// Whether this entry is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }
}

/// Ordered, de-duplicated entries with parent directories filled in.
pub(crate) struct EntrySet<'a> {
    pub(crate) entries: Vec<LayerEntry>,
    index: HashMap<String, usize>,
    dest_root: Option<&'a Path>,
    owner: Chown,
    /// The image's owners of `dest_root`'s paths, when the disk does not have them.
    dest_owners: Option<&'a crate::layer::OwnerTable>,
}

impl<'a> EntrySet<'a> {
    pub(crate) fn new(dest_root: Option<&'a Path>, owner: Chown) -> Self {
        EntrySet {
            entries: Vec::new(),
            index: HashMap::new(),
            dest_root,
            owner,
            dest_owners: None,
        }
    }

    /// Takes existing parents' owners from `owners` (a path it lacks is 0:0) instead of
    /// from `dest_root` on disk, which belongs to whoever unpacked it.
    pub(crate) fn with_dest_owners(mut self, owners: Option<&'a crate::layer::OwnerTable>) -> Self {
        self.dest_owners = owners;
        self
    }

    /// Ensures every ancestor of `path` is listed: existing directories of the destination root
    /// with their own metadata, new ones as 0755 owned by the `--chown` owner (or root). An
    /// ancestor that exists in the image as a non-directory (a file, or a symlink such as a
    /// merged-usr `/bin`) is refused as BuildKit refuses it, instead of replacing it.
    pub(crate) fn ensure_parents(&mut self, path: &str) -> Result<(), ContextError> {
        let comps: Vec<&str> = path.split('/').collect();
        for i in 1..comps.len() {
            let dir = comps[..i].join("/");
            if let Some(&idx) = self.index.get(&dir) {
                if !self.entries[idx].is_dir() {
                    return Err(non_directory(&dir));
                }
                continue;
            }
            let existing = self
                .dest_root
                .and_then(|r| std::fs::symlink_metadata(r.join(&dir)).ok());
            let owner = (existing.as_ref()).map_or((0, 0), |m| self.existing_owner(&dir, m));
            let entry = match existing {
                Some(m) if m.is_dir() => LayerEntry {
                    path: dir.clone(),
                    kind: EntryKind::Dir,
                    mode: m.mode() & 0o7777,
                    uid: owner.0,
                    gid: owner.1,
                    mtime: Some(Mtime::of(&m)),
                    existing_parent: true,
                    xattrs_from: None,
                },
                Some(_) => return Err(non_directory(&dir)),
                None => LayerEntry {
                    path: dir.clone(),
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    uid: self.owner.uid,
                    gid: self.owner.gid,
                    mtime: None,
                    existing_parent: false,
                    xattrs_from: None,
                },
            };
            self.index.insert(dir, self.entries.len());
            self.entries.push(entry);
        }
        Ok(())
    }

    /// Adds or replaces an entry (a later copy of the same path wins, keeping its position).
    pub(crate) fn put(&mut self, entry: LayerEntry) -> Result<(), ContextError> {
        if entry.path.is_empty() {
            return Ok(());
        }
        self.ensure_parents(&entry.path)?;
        if let Some(root) = self.dest_root
            && !self.index.contains_key(&entry.path)
            && let Ok(m) = std::fs::symlink_metadata(root.join(&entry.path))
        {
            if entry.is_dir() && !m.is_dir() {
                return Err(non_directory(&entry.path));
            }
            if !entry.is_dir() && m.is_dir() {
                // fsutil's ensureEmptyFileTarget refuses this too.
                return Err(ContextError::Destination(format!(
                    "cannot replace to directory /{} with file",
                    entry.path
                )));
            }
        }
        match self.index.get(&entry.path) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.index.insert(entry.path.clone(), self.entries.len());
                self.entries.push(entry);
            }
        }
        Ok(())
    }

    /// The image's owner of `path`, which exists in the destination root with metadata `m`.
    fn existing_owner(&self, path: &str, m: &std::fs::Metadata) -> (u32, u32) {
        match self.dest_owners {
            Some(t) => t.get(path).unwrap_or((0, 0)),
            None => (m.uid(), m.gid()),
        }
    }

    pub(crate) fn existing_dir(&self, path: &str) -> bool {
        if self
            .index
            .get(path)
            .is_some_and(|&i| self.entries[i].is_dir())
        {
            return true;
        }
        // Never follow a symlink on the host: an image's absolute link points into the host.
        self.dest_root
            .is_some_and(|r| std::fs::symlink_metadata(r.join(path)).is_ok_and(|m| m.is_dir()))
    }
}

fn non_directory(path: &str) -> ContextError {
    ContextError::Destination(format!("cannot copy to non-directory: /{path}"))
}
