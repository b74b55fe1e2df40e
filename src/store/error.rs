//! The store's error type: every variant names the path, digest or image involved.

use std::path::PathBuf;

use crate::image::{Digest, ManifestError};

/// What can go wrong in the content store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("create", "read", "rename", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The blob is not in the store.
    #[error("blob {0} not found in the store")]
    BlobNotFound(Digest),
    /// Written or stored bytes do not hash to the digest they should.
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller or the file name promised.
        expected: Digest,
        /// What the bytes actually hash to.
        actual: Digest,
    },
    /// No image has this name, digest or ID prefix.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// An ID prefix matches more than one image.
    #[error("image ID prefix {prefix:?} is ambiguous: matches {}", matches.join(", "))]
    AmbiguousId {
        /// What the user typed.
        prefix: String,
        /// Short IDs of the candidates.
        matches: Vec<String>,
    },
    /// A stored JSON file (tag index, gc roots) does not parse.
    #[error("corrupt store file {}: {source}", path.display())]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// The parser error.
        #[source]
        source: serde_json::Error,
    },
    /// The tag index was written by a newer rbuild.
    #[error("{} has version {found}; this rbuild understands version {expected}", path.display())]
    IndexVersion {
        /// The index file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// A blob that should be a manifest or index is not one.
    #[error("blob {digest} is not a usable manifest: {source}")]
    Manifest {
        /// The blob.
        digest: Digest,
        /// Why it was rejected.
        #[source]
        source: ManifestError,
    },
    /// A blob that should be an image config is not one.
    #[error("blob {digest} is not a valid image config: {source}")]
    Config {
        /// The blob.
        digest: Digest,
        /// The parser error.
        #[source]
        source: serde_json::Error,
    },
    /// An index has no manifest for the wanted platform.
    #[error("image index {digest} has no manifest for platform {platform}")]
    NoMatchingPlatform {
        /// The index.
        digest: Digest,
        /// The platform that was asked for.
        platform: String,
    },
    /// A value could not be serialised (should not happen for our own types).
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serialiser error.
        #[source]
        source: serde_json::Error,
    },
    /// A gc root name that would escape the roots directory.
    #[error("invalid gc root name {0:?}: use letters, digits, '-', '_' and '.' only")]
    InvalidRootName(String),
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
