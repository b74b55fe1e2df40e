//! The registry client: references, authentication, pull and push over the OCI distribution API.
//!
//! [`Reference`] parses image names exactly as docker does. Everything that talks to a registry
//! goes through one [`Client`] so that auth tokens, TLS settings and retries have a single
//! owner ([`RetryPolicy`] in `retry.rs`).

mod auth;
mod challenge;
mod client;
pub mod credentials;
mod error;
mod reference;
mod retry;

pub use auth::Scope;
pub use client::{Client, ClientOptions};
pub use credentials::Credential;
pub use error::RegistryError;
pub use reference::{DEFAULT_TAG, DOCKER_HUB, DOCKER_HUB_API, Reference, ReferenceError};
pub use retry::RetryPolicy;
