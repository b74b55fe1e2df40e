//! Pull: resolve a reference to a manifest (picking a platform from an index) and fetch its
//! config ([`resolve_remote`]), then fetch the missing layer blobs concurrently into the store,
//! store the manifest bytes as received, and name the image in the store under its normalised
//! reference ([`fetch_remote_with_progress`]). [`pull`] does both.

use std::sync::Arc;

use reqwest::{Method, StatusCode};

use crate::image::{AnyManifest, Descriptor, Digest, ImageIndex, ImageManifest, Platform};
use crate::store::Store;

use super::auth::Scope;
use super::client::{Client, Host, status_error};
use super::error::chain_text;
use super::meter::{Meter, Progress, Ticks, forwarding};
use super::sources::BlobSources;
use super::{BlobStatus, Reference, RegistryError, blob};
use crate::progress::ByteAction;

/// Every manifest type rbuild understands, for the `Accept` header.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Manifests larger than this are refused (distribution's own limit is 4 MiB).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Platform to pick from a multi-platform image; the host platform when `None`.
    pub platform: Option<Platform>,
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The normalised reference the image is recorded under in the store.
    pub name: String,
    /// Digest the reference resolved to on the registry (an index for multi-platform images);
    /// `name@digest` pins exactly what was pulled.
    pub digest: Digest,
    /// Descriptor of the single-platform manifest stored locally.
    pub manifest: Descriptor,
    /// Digest of the image config (docker's image ID).
    pub config: Digest,
    /// Whether any blob had to be downloaded (false: the image was up to date).
    pub downloaded: bool,
    /// Each blob (config first, then layers) and whether it was downloaded or already local.
    pub blobs: Vec<(Digest, BlobStatus)>,
}

/// Pulls `reference` into `store` and names it there as `reference.to_string()`.
pub async fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
) -> Result<PulledImage, RegistryError> {
    pull_with_progress(client, store, reference, options, Progress::none()).await
}

/// [`pull`], reporting each downloaded blob's bytes to `progress` as
/// [`crate::progress::Event::Bytes`] ([`ByteAction::Pull`]).
pub async fn pull_with_progress(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: Progress<'_>,
) -> Result<PulledImage, RegistryError> {
    forwarding(progress, ByteAction::Pull, |ticks| {
        pull_inner(client, store, reference, options, ticks)
    })
    .await
}

async fn pull_inner(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    ticks: Ticks,
) -> Result<PulledImage, RegistryError> {
    // Hold off `prune` from the config blob until the image is named.
    let _gc = store
        .gc_guard()
        .map_err(|e| RegistryError::Store(e.to_string()))?;
    // A plain pull reports the config's bytes too (a build's metadata step does not).
    let remote = resolve_inner(client, store, reference, options, ticks.clone()).await?;
    fetch_remote_inner(client, store, &remote, ticks).await
}

/// An image resolved on its registry by [`resolve_remote`]: its manifest chosen (for the
/// wanted platform) and its config in the store, its layers not fetched yet. BuildKit's split:
/// planning needs only the config (`load metadata for ...`), the FROM step fetches the layers
/// ([`fetch_remote_with_progress`]).
#[derive(Debug, Clone)]
pub struct RemoteImage {
    /// The reference as resolved.
    pub reference: Reference,
    /// Digest the reference resolved to on the registry (an index for multi-platform images).
    pub digest: Digest,
    /// The single-platform manifest.
    pub manifest: ImageManifest,
    /// Digest of [`RemoteImage::manifest`]'s bytes.
    pub manifest_digest: Digest,
    manifest_bytes: Vec<u8>,
    config_downloaded: bool,
}

impl RemoteImage {
    /// The layers not yet in `store` (what [`fetch_remote_with_progress`] will download).
    pub fn missing_layers(&self, store: &Store) -> Vec<Descriptor> {
        (self.manifest.layers.iter())
            .filter(|d| !store.has_blob(&d.digest))
            .cloned()
            .collect()
    }
}

/// Resolves `reference` on its registry to one platform's manifest and downloads the image
/// config (small) into `store`; the layers stay on the registry. The caller holds
/// [`Store::gc_guard`] until [`fetch_remote_with_progress`] has named the image, or `prune`
/// may remove the config in between.
pub async fn resolve_remote(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
) -> Result<RemoteImage, RegistryError> {
    resolve_inner(client, store, reference, options, None).await
}

async fn resolve_inner(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    ticks: Ticks,
) -> Result<RemoteImage, RegistryError> {
    let host = client.host(reference.registry()).await?;
    let repo = reference.repository();
    let (top_bytes, top_digest) =
        fetch_manifest(client, &host, reference, &reference.manifest_ref()).await?;
    if let Some(pinned) = reference.digest()
        && *pinned != top_digest
    {
        return Err(RegistryError::DigestMismatch {
            registry: reference.registry().to_string(),
            repository: repo.to_string(),
            expected: pinned.clone(),
            actual: top_digest,
        });
    }
    let bad = |reason: String| RegistryError::BadManifest {
        reference: reference.to_string(),
        reason,
    };
    let parsed = AnyManifest::parse(&top_bytes).map_err(|e| bad(e.to_string()))?;
    let (manifest_bytes, manifest_digest, manifest) = match parsed {
        AnyManifest::Image(m) => (top_bytes, top_digest.clone(), m),
        AnyManifest::Index(index) => {
            let want = options.platform.clone().unwrap_or_else(Platform::host);
            let child = index.select_platform(&want, false).ok_or_else(|| {
                RegistryError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    wanted: want.to_string(),
                    available: available_platforms(&index),
                }
            })?;
            let (bytes, digest) =
                fetch_manifest(client, &host, reference, &child.digest.to_string()).await?;
            if digest != child.digest {
                return Err(RegistryError::DigestMismatch {
                    registry: reference.registry().to_string(),
                    repository: repo.to_string(),
                    expected: child.digest.clone(),
                    actual: digest,
                });
            }
            match AnyManifest::parse(&bytes).map_err(|e| bad(e.to_string()))? {
                AnyManifest::Image(m) => (bytes, digest, m),
                AnyManifest::Index(_) => {
                    return Err(RegistryError::Unsupported(format!(
                        "{reference}: nested image indexes"
                    )));
                }
            }
        }
    };
    let config_downloaded = !store.has_blob(&manifest.config.digest);
    if config_downloaded {
        let _gc = store
            .gc_guard()
            .map_err(|e| RegistryError::Store(e.to_string()))?;
        fetch_all(
            client,
            &host,
            repo,
            store,
            vec![manifest.config.clone()],
            ticks,
        )
        .await?;
    }
    Ok(RemoteImage {
        reference: reference.clone(),
        digest: top_digest,
        manifest,
        manifest_digest,
        manifest_bytes,
        config_downloaded,
    })
}

/// Downloads the layers of `image` that `store` lacks, concurrently, reporting each one's
/// bytes to `progress` ([`ByteAction::Pull`]), then stores the manifest and names the image
/// `image.reference.to_string()` in the store.
pub async fn fetch_remote_with_progress(
    client: &Client,
    store: &Store,
    image: &RemoteImage,
    progress: Progress<'_>,
) -> Result<PulledImage, RegistryError> {
    forwarding(progress, ByteAction::Pull, |ticks| {
        fetch_remote_inner(client, store, image, ticks)
    })
    .await
}

async fn fetch_remote_inner(
    client: &Client,
    store: &Store,
    image: &RemoteImage,
    ticks: Ticks,
) -> Result<PulledImage, RegistryError> {
    let reference = &image.reference;
    let repo = reference.repository();
    let manifest = &image.manifest;
    // Hold off `prune` from the first blob until the image is named.
    let _gc = store
        .gc_guard()
        .map_err(|e| RegistryError::Store(e.to_string()))?;
    let missing = image.missing_layers(store);
    let downloaded = image.config_downloaded || !missing.is_empty();
    let mut blobs = vec![(
        manifest.config.digest.clone(),
        if image.config_downloaded {
            BlobStatus::Downloaded
        } else {
            BlobStatus::Existed
        },
    )];
    blobs.extend(manifest.layers.iter().map(|d| {
        let status = if missing.iter().any(|m| m.digest == d.digest) {
            BlobStatus::Downloaded
        } else {
            BlobStatus::Existed
        };
        (d.digest.clone(), status)
    }));
    if !missing.is_empty() {
        let host = client.host(reference.registry()).await?;
        fetch_all(client, &host, repo, store, missing, ticks).await?;
    }
    let stored = store
        .write_blob(&image.manifest_bytes)
        .map_err(|e| RegistryError::Store(e.to_string()))?;
    debug_assert_eq!(stored, image.manifest_digest);
    let name = reference.to_string();
    store
        .put_image(&name, &image.manifest_digest)
        .map_err(|e| RegistryError::Store(e.to_string()))?;
    let digests: Vec<Digest> = blobs.iter().map(|(d, _)| d.clone()).collect();
    if let Some(root) = store.dir().parent()
        && let Err(e) = BlobSources::new(root).record(reference.registry(), repo, &digests)
    {
        tracing::warn!("not remembering blob sources: {e}");
    }
    Ok(PulledImage {
        name,
        digest: image.digest.clone(),
        manifest: Descriptor::new(
            manifest.effective_media_type(),
            image.manifest_digest.clone(),
            image.manifest_bytes.len() as u64,
        ),
        config: manifest.config.digest.clone(),
        downloaded,
        blobs,
    })
}

/// Downloads `blobs` with at most `max_concurrent_transfers` at a time.
async fn fetch_all(
    client: &Client,
    host: &Arc<Host>,
    repository: &str,
    store: &Store,
    blobs: Vec<Descriptor>,
    ticks: Ticks,
) -> Result<(), RegistryError> {
    let limit = Arc::new(tokio::sync::Semaphore::new(
        client.options().max_concurrent_transfers.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for desc in blobs {
        let (client, host, store, limit) =
            (client.clone(), host.clone(), store.clone(), limit.clone());
        let repository = repository.to_string();
        let meter = Meter::new(&ticks, desc.digest.to_string(), desc.size);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore never closed");
            tracing::info!("pulling {} ({} bytes)", desc.digest, desc.size);
            blob::download(&client, &host, &repository, &desc, &store, &meter).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(RegistryError::Store(format!("download task failed: {e}"))),
        }
    }
    Ok(())
}

/// GETs a manifest by tag or digest; returns its bytes and their digest.
pub(crate) async fn fetch_manifest(
    client: &Client,
    host: &Host,
    reference: &Reference,
    tag_or_digest: &str,
) -> Result<(Vec<u8>, Digest), RegistryError> {
    get_manifest(
        client,
        host,
        reference,
        tag_or_digest,
        ACCEPT_MANIFESTS,
        false,
    )
    .await
    .map(|found| found.expect("a 404 is an error when missing_ok is false"))
}

/// GETs a manifest by tag or digest, offering `accept`, retrying transient failures; returns
/// its bytes and their digest. A 404 is `Ok(None)` when `missing_ok`, else the registry's error
/// (with its `manifest unknown` text). Manifests over 4 MiB are refused.
pub(crate) async fn get_manifest(
    client: &Client,
    host: &Host,
    reference: &Reference,
    tag_or_digest: &str,
    accept: &str,
    missing_ok: bool,
) -> Result<Option<(Vec<u8>, Digest)>, RegistryError> {
    let repo = reference.repository();
    let path = format!("/v2/{repo}/manifests/{tag_or_digest}");
    let action = format!("GET {path}");
    let policy = client.options().retry.clone();
    policy
        .run(&action, |_| async {
            let resp = client
                .simple(
                    host,
                    repo,
                    &[Scope::pull(repo)],
                    Method::GET,
                    &path,
                    Some(accept),
                )
                .await?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND if missing_ok => return Ok(None),
                _ => return Err(status_error(host, repo, &action, resp).await),
            }
            let bytes = resp.bytes().await.map_err(|e| RegistryError::Transport {
                registry: host.registry.clone(),
                action: action.clone(),
                reason: chain_text(&e.without_url()),
            })?;
            if bytes.len() > MAX_MANIFEST {
                return Err(RegistryError::BadManifest {
                    reference: reference.to_string(),
                    reason: format!(
                        "manifest is {} bytes, more than the 4 MiB limit",
                        bytes.len()
                    ),
                });
            }
            let digest = Digest::of(&bytes);
            Ok(Some((bytes.to_vec(), digest)))
        })
        .await
}

fn available_platforms(index: &ImageIndex) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(Platform::to_string)
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::mediatype;

    fn entry(platform: &str, byte: &[u8]) -> Descriptor {
        let mut d = Descriptor::new(mediatype::OCI_MANIFEST, Digest::of(byte), 1);
        d.platform = Some(platform.parse().unwrap());
        d
    }

    #[test]
    fn platform_selection_matches_os_arch_and_variant() {
        let index = ImageIndex::new_oci(vec![
            entry("unknown/unknown", b"att"),
            entry("linux/arm/v6", b"armv6"),
            entry("linux/arm/v7", b"armv7"),
            entry("linux/amd64", b"amd64"),
            entry("linux/arm64", b"arm64"),
        ]);
        let pick = |p: &str| {
            index
                .select_platform(&p.parse().unwrap(), false)
                .map(|d| d.digest.clone())
        };
        assert_eq!(pick("linux/amd64"), Some(Digest::of(b"amd64")));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::of(b"armv7")));
        assert_eq!(pick("linux/arm64/v8"), Some(Digest::of(b"arm64")));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(
            available_platforms(&index),
            "linux/arm/v6, linux/arm/v7, linux/amd64, linux/arm64"
        );
    }
}
