//! Layer tar streams: the deterministic writer (hand-built headers, PAX for long names, large ids,
//! xattrs and sub-second times, hard links, whiteouts), gzip/zstd compression with a one-pass
//! diffID, decompression by magic, and the safe `apply` that unpacks untrusted layers with
//! fd-relative operations confined to the destination.
//!
//! This module does not know about the content store or registries: the writer is generic over
//! any `Write` sink (the store's blob writer computes the compressed digest) and the reader takes
//! any `Read`.
//!
//! ```
//! use rbuild::image::Digest;
//! use rbuild::layer::{ApplyOptions, Compression, EntryMeta, LayerWriter, apply};
//!
//! // A Vec as sink; in a build it is the store's blob writer, which hashes the blob.
//! let mut w = LayerWriter::new(Vec::new(), Compression::Zstd { level: 3 }).unwrap();
//! w.append_dir("etc", &EntryMeta::with_mode(0o755)).unwrap();
//! w.append_file("etc/motd", &EntryMeta::with_mode(0o644), &b"hi\n"[..], 3).unwrap();
//! w.append_whiteout("etc/issue").unwrap();
//! let layer = w.finish().unwrap();
//! let blob_digest = Digest::of(&layer.sink);
//! assert_ne!(blob_digest, layer.diff_id);
//!
//! let dest = tempfile::tempdir().unwrap();
//! apply(&layer.sink[..], dest.path(), &ApplyOptions::default()).unwrap();
//! assert_eq!(std::fs::read(dest.path().join("etc/motd")).unwrap(), b"hi\n");
//! ```

mod apply;
mod compression;
mod header;
mod meta;
mod owners;
mod pargzip;
mod rootfd;
mod skeleton;
mod tar_meta;
mod tree;
mod whiteout;
mod writer;

use std::io;
use std::path::PathBuf;

pub use apply::{ApplyOptions, ApplyStats, apply, apply_as_overlay_lower, apply_recording_owners};
pub use compression::{ArchiveFormat, Compression, detect_format, open_decompressed};
pub use meta::{DeviceKind, EntryMeta, EntryOptions, IdMapping};
pub use owners::OwnerTable;
pub use skeleton::{SKELETON_FILE, apply_skeleton, apply_skeleton_recording_owners};
pub(crate) use tar_meta::clean_components;
pub use tree::{sort_layer_paths, write_dir_tree};
pub use whiteout::OverlayXattrs;
pub use writer::{LayerSummary, LayerWriter};

/// Everything that can go wrong while writing, reading or applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The sink (blob writer, file, pipe) refused bytes of the layer stream.
    #[error("writing the layer stream failed: {source}")]
    Sink {
        /// The underlying error.
        source: io::Error,
    },
    /// A compressor could not be set up or finished.
    #[error("{compression} compressor failed: {source}")]
    Compressor {
        /// Which compression (`gzip`, `zstd`).
        compression: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// An entry name cannot be written into a layer.
    #[error("invalid layer entry name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file's content reader delivered fewer bytes than announced.
    #[error("layer entry {name:?}: expected {expected} bytes of content, the reader gave {actual}")]
    ShortContent {
        /// Entry name in the layer.
        name: String,
        /// Announced size.
        expected: u64,
        /// Bytes actually read.
        actual: u64,
    },
    /// Reading a file's content for the layer failed.
    #[error("reading content for layer entry {name:?}: {source}")]
    ReadContent {
        /// Entry name in the layer.
        name: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading a host file, its metadata or its xattrs failed.
    #[error("{op} {path}: {source}")]
    Host {
        /// What was being done (`lstat`, `open`, `read link`, `list xattrs of`, `walk`).
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A host file type that has no tar representation (sockets).
    #[error("{path}: {kind} cannot be stored in a layer")]
    UnsupportedFileType {
        /// The host path.
        path: PathBuf,
        /// The kind of file.
        kind: &'static str,
    },
    /// The input stream is not a readable (compressed) tar.
    #[error("reading layer archive: {source}")]
    Archive {
        /// The underlying error.
        source: io::Error,
    },
    /// Applying one entry to the destination failed.
    #[error("applying layer entry {entry:?}: {op} failed: {source}")]
    Apply {
        /// Entry path as stored in the layer.
        entry: String,
        /// Which operation failed (`mkdir`, `create`, `chown`, `link`...).
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A layer entry that `apply` refuses (unknown type, a hard link to a directory...).
    #[error("layer entry {entry:?} is not supported: {reason}")]
    UnsupportedEntry {
        /// Entry path as stored in the layer.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The destination directory could not be opened.
    #[error("opening apply destination {path}: {source}")]
    Destination {
        /// The destination.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Shorthand used throughout the module.
pub(crate) type Result<T, E = LayerError> = std::result::Result<T, E>;
