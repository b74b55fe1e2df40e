//! The build context: walking it, `.dockerignore` matching, COPY/ADD source resolution with
//! BuildKit's semantics, ADD archives and URLs, and content hashes of what COPY/ADD read.
//!
//! The build driver calls [`plan_copy`] with a [`CopyRequest`] (one COPY or ADD instruction,
//! already variable-expanded) and gets a [`CopyPlan`]: the ordered [`LayerEntry`] list to write
//! into a layer. For cache keys it calls [`selection_digest`], which reads the same sources the
//! copy would, hashing content through an on-disk [`HashMemo`] so an unchanged context is not
//! re-read. [`CopyPlan::write_to`] streams the entries into a [`crate::layer::LayerWriter`].
//! This module never writes into an image root; it only reads the source root and inspects the
//! destination root (for `/etc/passwd`, `/etc/group` and existing directories).

mod archive;
mod chmod;
mod copy;
mod dockerignore;
mod emit;
mod entry;
mod fetch;
mod hash;
mod layout;
mod memo;
mod owner;
mod pathmatch;
mod remote;
mod select;
mod walk;

use std::path::PathBuf;

pub use archive::{ArchiveFormat, detect_archive};
pub use chmod::Chmod;
pub use copy::{CopyPlan, CopyRequest, plan_copy};
pub use dockerignore::{IgnoreMatcher, Pattern, parse_dockerignore};
pub use emit::{EmitTimes, source_xattrs};
pub use entry::{EntryKind, LayerEntry, Mtime};
pub use hash::selection_digest;
pub use layout::{OCI_LAYOUT_SCHEME, OciLayoutRef, import_oci_layout};
pub use memo::{HashMemo, MemoStats};
pub use owner::{Chown, ChownSpec};
pub use remote::{fetch_remote_context, is_git_url, is_remote_tarball};
pub use select::{SelectOptions, Selected, select_sources, walk_context};

/// Everything that can go wrong reading a context or resolving COPY/ADD sources.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A file system operation failed on a specific path.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `.dockerignore` or `--exclude` pattern is malformed.
    #[error("invalid pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A COPY/ADD source does not exist (or only wildcards matched nothing).
    #[error("{path}: not found{}", excluded_note(.excluded_by, .ignore_file))]
    SourceNotFound {
        /// The source as written in the Dockerfile.
        path: String,
        /// The `.dockerignore` pattern that excluded it, if that is why it is missing.
        excluded_by: Option<String>,
        /// The ignore file holding that pattern.
        ignore_file: Option<PathBuf>,
    },
    /// A source path (or a symlink on its way) points outside the source root.
    #[error("{path}: resolves outside the build context ({target})")]
    OutsideRoot {
        /// The source as written.
        path: String,
        /// Where the symlink chain led.
        target: String,
    },
    /// The destination rules forbid this combination.
    #[error("{0}")]
    Destination(String),
    /// `--chown` could not be parsed or resolved.
    #[error("--chown={spec}: {reason}")]
    Chown {
        /// The flag value.
        spec: String,
        /// What failed (e.g. the user name not in `/etc/passwd`).
        reason: String,
    },
    /// `--chmod` could not be parsed.
    #[error("--chmod={spec}: {reason}")]
    Chmod {
        /// The flag value.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An ADD archive could not be read.
    #[error("ADD {path}: cannot extract archive: {reason}")]
    Archive {
        /// The archive source.
        path: String,
        /// What failed.
        reason: String,
    },
    /// An ADD URL could not be fetched.
    #[error("ADD {url}: {reason}")]
    Fetch {
        /// The URL (as written).
        url: String,
        /// What failed.
        reason: String,
    },
    /// `--checksum` did not match the downloaded content.
    #[error("ADD {url}: checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The `--checksum` value.
        expected: String,
        /// What the content hashed to.
        actual: String,
    },
    /// The layer writer refused an entry.
    #[error("writing {path} into the layer: {source}")]
    Layer {
        /// Image path of the entry.
        path: String,
        /// The layer error.
        source: crate::layer::LayerError,
    },
    /// An `oci-layout://` named context could not be read or imported.
    #[error("oci-layout {path}: {reason}")]
    OciLayout {
        /// The layout directory (or the value as given when it did not parse).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A feature that rbuild does not implement yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
}

fn excluded_note(pattern: &Option<String>, file: &Option<PathBuf>) -> String {
    match (pattern, file) {
        (Some(p), Some(f)) => format!(" (excluded by pattern {p:?} in {})", f.display()),
        (Some(p), None) => format!(" (excluded by .dockerignore pattern {p:?})"),
        _ => String::new(),
    }
}

impl ContextError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ContextError {
        ContextError::Io {
            path: path.into(),
            source,
        }
    }
}
