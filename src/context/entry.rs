//! The output of COPY/ADD resolution: one [`LayerEntry`] per path the instruction writes into
//! the image, with its final metadata already decided (chown, chmod, archive headers), so the
//! layer writer only has to stream content.

use std::path::PathBuf;

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
}

impl LayerEntry {
    /// Whether this entry is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }
}
