//! Push: upload what a registry repository lacks of an image (HEAD first, cross-repository
//! mount when the blob is known to live elsewhere on the same registry, else upload), then
//! the manifest(s), then the tag. A manifest is only sent after every blob it names has been
//! confirmed present, so an interrupted push never leaves a tag pointing at missing content;
//! running it again completes it.

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::image::{AnyManifest, Descriptor, Digest};
use crate::store::Store;

use super::auth::Scope;
use super::blob::{self, BlobStatus};
use super::client::{Client, Host, status_error};
use super::meter::{Meter, Progress, Ticks, forwarding};
use super::sources::BlobSources;
use super::{Reference, RegistryError};
use crate::progress::ByteAction;

/// Push settings.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Do not try cross-repository mounts.
    pub no_mount: bool,
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// Where it went.
    pub reference: Reference,
    /// Digest of the top-level manifest or index on the registry.
    pub digest: Digest,
    /// Its size in bytes (docker prints it).
    pub size: u64,
    /// Blobs that were already present.
    pub existed: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs uploaded.
    pub sent: usize,
    /// What happened to each blob, config first, then layers in manifest order.
    pub blobs: Vec<(Digest, BlobStatus)>,
}

/// Pushes the manifest or index `manifest` (stored in `store`) to `dest`. An index is pushed
/// with every child manifest it lists; all of them must be in the store.
pub async fn push(
    client: &Client,
    store: &Store,
    manifest: &Digest,
    dest: &Reference,
    options: &PushOptions,
) -> Result<PushedImage, RegistryError> {
    push_with_progress(client, store, manifest, dest, options, Progress::none()).await
}

/// [`push`], reporting each uploaded blob's bytes to `progress` as
/// [`crate::progress::Event::Bytes`] ([`ByteAction::Push`]). Blobs that were already in the
/// repository or were mounted move no bytes and get no events.
pub async fn push_with_progress(
    client: &Client,
    store: &Store,
    manifest: &Digest,
    dest: &Reference,
    options: &PushOptions,
    progress: Progress<'_>,
) -> Result<PushedImage, RegistryError> {
    forwarding(progress, ByteAction::Push, |ticks| {
        push_inner(client, store, manifest, dest, options, ticks)
    })
    .await
}

async fn push_inner(
    client: &Client,
    store: &Store,
    manifest: &Digest,
    dest: &Reference,
    options: &PushOptions,
    ticks: Ticks,
) -> Result<PushedImage, RegistryError> {
    if let Some(pinned) = dest.digest()
        && pinned != manifest
    {
        return Err(RegistryError::DigestMismatch {
            registry: dest.registry().to_string(),
            repository: dest.repository().to_string(),
            expected: pinned.clone(),
            actual: manifest.clone(),
        });
    }
    let host = client.host(dest.registry()).await?;
    let repo = dest.repository();
    let sources = store.dir().parent().map(BlobSources::new);
    let read = |d: &Digest| -> Result<(Vec<u8>, AnyManifest), RegistryError> {
        let bytes = store
            .read_blob(d)
            .map_err(|e| RegistryError::Store(format!("manifest {d}: {e}")))?;
        let parsed = AnyManifest::parse(&bytes).map_err(|e| RegistryError::BadManifest {
            reference: format!("{d} in the local store"),
            reason: e.to_string(),
        })?;
        Ok((bytes, parsed))
    };
    let (top_bytes, top) = read(manifest)?;
    // Image manifests to push before the top-level one, each with its blobs.
    let mut images = Vec::new();
    match &top {
        AnyManifest::Image(m) => images.push((None, m.clone())),
        AnyManifest::Index(index) => {
            for child in &index.manifests {
                match read(&child.digest)? {
                    (bytes, AnyManifest::Image(m)) => {
                        images.push((Some((child.clone(), bytes)), m))
                    }
                    (_, AnyManifest::Index(_)) => {
                        return Err(RegistryError::Unsupported(format!(
                            "pushing nested image indexes ({})",
                            child.digest
                        )));
                    }
                }
            }
        }
    }
    let mut blobs: Vec<Descriptor> = Vec::new();
    for (_, m) in &images {
        for d in std::iter::once(&m.config).chain(&m.layers) {
            if !blobs.iter().any(|b| b.digest == d.digest) {
                blobs.push(d.clone());
            }
        }
    }
    let statuses = upload_all(
        client,
        &host,
        dest,
        store,
        &blobs,
        sources.as_ref().filter(|_| !options.no_mount),
        &ticks,
    )
    .await?;
    for (child, m) in &images {
        if let Some((desc, bytes)) = child {
            put_manifest(
                client,
                &host,
                repo,
                &desc.digest.to_string(),
                m.effective_media_type(),
                bytes,
            )
            .await?;
        }
    }
    // The tag (or digest, for digest-only destinations) goes last.
    let target = dest
        .tag()
        .map_or_else(|| manifest.to_string(), str::to_string);
    let digest = put_manifest(client, &host, repo, &target, top.media_type(), &top_bytes).await?;
    if digest != *manifest {
        return Err(RegistryError::DigestMismatch {
            registry: dest.registry().to_string(),
            repository: repo.to_string(),
            expected: manifest.clone(),
            actual: digest,
        });
    }
    if let Some(s) = &sources {
        let digests: Vec<Digest> = blobs.iter().map(|b| b.digest.clone()).collect();
        if let Err(e) = s.record(dest.registry(), repo, &digests) {
            tracing::warn!("not remembering blob sources: {e}");
        }
    }
    Ok(PushedImage {
        reference: dest.clone(),
        digest,
        size: top_bytes.len() as u64,
        existed: count(&statuses, |s| *s == BlobStatus::Existed),
        mounted: count(&statuses, |s| matches!(s, BlobStatus::Mounted { .. })),
        sent: count(&statuses, |s| *s == BlobStatus::Uploaded),
        blobs: statuses,
    })
}

fn count(statuses: &[(Digest, BlobStatus)], pred: impl Fn(&BlobStatus) -> bool) -> usize {
    statuses.iter().filter(|(_, s)| pred(s)).count()
}

/// Uploads `blobs` concurrently, mounting from repositories `sources` knows (if given);
/// returns what happened to each.
async fn upload_all(
    client: &Client,
    host: &Arc<Host>,
    dest: &Reference,
    store: &Store,
    blobs: &[Descriptor],
    sources: Option<&BlobSources>,
    ticks: &Ticks,
) -> Result<Vec<(Digest, BlobStatus)>, RegistryError> {
    let limit = Arc::new(tokio::sync::Semaphore::new(
        client.options().max_concurrent_transfers.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for desc in blobs {
        if !store.has_blob(&desc.digest) {
            return Err(RegistryError::Store(format!(
                "blob {} of the image is not in the local store",
                desc.digest
            )));
        }
        let mount_from = match sources {
            Some(s) => s.repositories(&desc.digest, dest.registry(), dest.repository()),
            None => Vec::new(),
        };
        let (client, host, store, limit, desc) = (
            client.clone(),
            host.clone(),
            store.clone(),
            limit.clone(),
            desc.clone(),
        );
        let repository = dest.repository().to_string();
        let meter = Arc::new(Meter::new(ticks, desc.digest.to_string(), desc.size));
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore never closed");
            let how = blob::upload(
                &client,
                &host,
                &repository,
                &desc,
                &store,
                &mount_from,
                &meter,
            )
            .await?;
            tracing::info!("{}: {how:?}", desc.digest);
            Ok::<_, RegistryError>((desc.digest, how))
        });
    }
    let mut done = Vec::with_capacity(blobs.len());
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.map_err(|e| RegistryError::Store(format!("upload task failed: {e}")))??);
    }
    // Report in manifest order, not completion order.
    done.sort_by_key(|(d, _)| blobs.iter().position(|b| b.digest == *d));
    Ok(done)
}

/// PUTs manifest `bytes` under `tag_or_digest`; returns the digest the registry reports.
async fn put_manifest(
    client: &Client,
    host: &Host,
    repo: &str,
    tag_or_digest: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<Digest, RegistryError> {
    let path = format!("/v2/{repo}/manifests/{tag_or_digest}");
    let url = Client::url(host, &path);
    let action = format!("PUT {path}");
    let body = bytes::Bytes::copy_from_slice(bytes);
    let policy = client.options().retry.clone();
    {
        let mut attempt = 1;
        loop {
            let outcome = async {
                let resp = client
                    .send(host, repo, &action, &[Scope::push(repo)], &mut |http| {
                        Ok(http
                            .put(&url)
                            .header(CONTENT_TYPE, media_type)
                            .header(CONTENT_LENGTH, body.len())
                            .body(body.clone()))
                    })
                    .await?;
                if resp.status() != StatusCode::CREATED && resp.status() != StatusCode::OK {
                    return Err(status_error(host, repo, &action, resp).await);
                }
                let reported = resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Digest>().ok());
                Ok(reported.unwrap_or_else(|| Digest::of(bytes)))
            }
            .await;
            match outcome {
                Ok(v) => break Ok::<_, RegistryError>(v),
                Err(e) => policy.backoff(&action, attempt, e).await?,
            }
            attempt += 1;
        }
    }
}
