//! The registry client: references, authentication, pull and push over the OCI distribution API.
//!
//! [`Reference`] parses image names exactly as docker does. Everything that talks to a registry
//! goes through one [`Client`] so that auth tokens, TLS settings and retries have a single
//! owner ([`RetryPolicy`] in `retry.rs`). [`pull`] and [`push`] move images between a
//! registry and the local [`crate::store::Store`].
//!
//! ```no_run
//! # async fn demo(store: &rbuild::store::Store) -> Result<(), rbuild::registry::RegistryError> {
//! use rbuild::registry::{Client, ClientOptions, PullOptions, Reference, pull};
//! let client = Client::new(ClientOptions::default());
//! let image = pull(&client, store, &Reference::parse("busybox")?, &PullOptions::default()).await?;
//! println!("{} -> {}", image.name, image.digest);
//! # Ok(()) }
//! ```

mod auth;
mod blob;
mod challenge;
mod client;
pub mod credentials;
mod error;
mod meter;
mod pull;
mod push;
mod reference;
mod retry;
mod sources;
mod tls;

pub use auth::Scope;
pub use blob::BlobStatus;
pub use client::{Client, ClientOptions};
pub use credentials::Credential;
pub use error::RegistryError;
pub use meter::Progress;
pub use pull::{
    PullOptions, PulledImage, RemoteImage, fetch_remote_with_progress, pull, pull_with_progress,
    resolve_remote,
};
pub use push::{PushOptions, PushedImage, push, push_with_progress};
pub use reference::{DEFAULT_TAG, DOCKER_HUB, DOCKER_HUB_API, Reference, ReferenceError};
pub use retry::RetryPolicy;
pub use sources::BlobSources;
