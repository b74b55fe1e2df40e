//! The registry client: references, authentication, pull and push over the OCI distribution API.
//!
//! [`Reference`] parses image names exactly as docker does. Everything that talks to a registry
//! goes through one client so that auth tokens, TLS settings and retries have a single owner.

mod reference;

pub use reference::{DEFAULT_TAG, DOCKER_HUB, DOCKER_HUB_API, Reference, ReferenceError};
