//! The OCI image data model shared by the store, registry and exporters: digests, descriptors,
//! media types, manifests and configs, and the canonical JSON bytes that get hashed and pushed.
//!
//! ```
//! use rbuild::image::{Descriptor, ImageManifest, mediatype, to_canonical_json, Digest};
//! let config = Descriptor::new(mediatype::OCI_CONFIG, Digest::of(b"{}"), 2);
//! let manifest = ImageManifest::new_oci(config, vec![]);
//! let (bytes, digest) = to_canonical_json(&manifest).unwrap();
//! assert_eq!(digest, Digest::of(&bytes));
//! ```

mod config;
mod descriptor;
mod digest;
mod manifest;
pub mod mediatype;

pub use config::{
    EmptyObject, Healthcheck, History, ImageConfig, RootFs, RuntimeConfig, parse_rfc3339,
};
pub use descriptor::{Descriptor, Platform, PlatformError};
pub use digest::{Digest, DigestError, Hasher};
pub use manifest::{AnyManifest, ImageIndex, ImageManifest, ManifestError, to_canonical_json};
