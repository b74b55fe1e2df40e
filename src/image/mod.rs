//! The OCI image data model shared by the store, registry and exporters: digests, descriptors,
//! media types, manifests and configs.

mod digest;

pub use digest::{Digest, DigestError, Hasher};
