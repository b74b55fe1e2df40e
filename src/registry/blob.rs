//! Blob transfers: download into the store with digest and size verification and `Range`
//! resume after a broken body; upload from the store as one streamed PUT (small blobs) or
//! chunked PATCHes (large ones) that resume where the registry says the session stands after
//! a failed chunk; HEAD checks and cross-repository mounts. Bytes moved go to a [`Meter`].

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use futures_util::StreamExt as _;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};

use crate::image::{Descriptor, Digest};
use crate::store::{BlobWriter, Store};

use super::RegistryError;
use super::auth::Scope;
use super::client::{Client, Host, status_error};
use super::error::chain_text;
use super::meter::Meter;

/// Blobs up to this size go up in one PUT; larger ones in PATCH chunks of this size.
pub(crate) const CHUNK_SIZE: u64 = 16 * 1024 * 1024;
/// Read size of a streamed PUT: large reads keep syscalls and body frames few.
const STREAM_BUFFER: usize = 256 * 1024;

fn store_err(e: crate::store::Error) -> RegistryError {
    RegistryError::Store(e.to_string())
}

/// Downloads `desc` from `repository` into the store unless it is already there. Retries and
/// resumes (HTTP `Range`) on transient failures; verifies size and digest before committing.
pub(crate) async fn download(
    client: &Client,
    host: &Host,
    repository: &str,
    desc: &Descriptor,
    store: &Store,
    meter: &Meter,
) -> Result<(), RegistryError> {
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    let url = format!("{}/v2/{repository}/blobs/{}", host.base, desc.digest);
    let action = format!("GET /v2/{repository}/blobs/{}", desc.digest);
    let scopes = [Scope::pull(repository)];
    let mut writer: Option<BlobWriter> = None;
    let policy = client.options().retry.clone();
    let () = {
        let mut attempt = 1;
        loop {
            let outcome = async {
                let offset = writer.as_ref().map_or(0, BlobWriter::size);
                if writer.is_none() {
                    writer = Some(store.blob_writer().map_err(store_err)?);
                }
                if attempt > 1 && offset > 0 {
                    tracing::info!("{action}: resuming at byte {offset}");
                }
                let mut resp = client
                    .send(host, repository, &action, &scopes, &mut |http| {
                        let r = http.get(&url);
                        Ok(if offset > 0 {
                            r.header(RANGE, format!("bytes={offset}-"))
                        } else {
                            r
                        })
                    })
                    .await?;
                match resp.status() {
                    StatusCode::OK if offset > 0 => {
                        // The server ignored the Range header: start over.
                        writer = Some(store.blob_writer().map_err(store_err)?);
                    }
                    StatusCode::OK => {}
                    StatusCode::PARTIAL_CONTENT if range_start(&resp) == Some(offset) => {}
                    StatusCode::PARTIAL_CONTENT => {
                        return Err(RegistryError::Status {
                            registry: host.registry.clone(),
                            repository: repository.to_string(),
                            action: action.clone(),
                            status: 206,
                            message: format!("partial content does not start at byte {offset}"),
                            retry_after: None,
                        });
                    }
                    _ => return Err(status_error(host, repository, &action, resp).await),
                }
                let w = writer.as_mut().expect("writer was just set");
                loop {
                    let chunk = resp.chunk().await.map_err(|e| RegistryError::Transport {
                        registry: host.registry.clone(),
                        action: format!("{action} (after {} bytes)", w.size()),
                        reason: chain_text(&e.without_url()),
                    })?;
                    let Some(chunk) = chunk else { break };
                    w.write_all(&chunk).map_err(|e| {
                        RegistryError::Store(format!("writing {}: {e}", desc.digest))
                    })?;
                    meter.set(w.size());
                    if w.size() > desc.size {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            match outcome {
                Ok(v) => break Ok::<_, RegistryError>(v),
                Err(e) => policy.backoff(&action, attempt, e).await?,
            }
            attempt += 1;
        }
    }?;
    let w = writer.expect("download wrote into a writer");
    if w.size() != desc.size {
        return Err(RegistryError::SizeMismatch {
            registry: host.registry.clone(),
            repository: repository.to_string(),
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: w.size(),
        });
    }
    match w.commit(Some(&desc.digest)) {
        Ok(_) => {
            meter.finish();
            Ok(())
        }
        Err(crate::store::Error::DigestMismatch { expected, actual }) => {
            Err(RegistryError::DigestMismatch {
                registry: host.registry.clone(),
                repository: repository.to_string(),
                expected,
                actual,
            })
        }
        Err(e) => Err(store_err(e)),
    }
}

fn range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

/// Whether `repository` already holds `digest` (HEAD).
pub(crate) async fn exists(
    client: &Client,
    host: &Host,
    repository: &str,
    digest: &Digest,
    scopes: &[Scope],
) -> Result<bool, RegistryError> {
    let path = format!("/v2/{repository}/blobs/{digest}");
    let resp = client
        .simple(host, repository, scopes, Method::HEAD, &path, None)
        .await?;
    match resp.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(status_error(host, repository, &format!("HEAD {path}"), resp).await),
    }
}

/// What a pull or push did with one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStatus {
    /// It was there already (in the store for a pull, in the repository for a push).
    Existed,
    /// Mounted from this repository of the same registry.
    Mounted {
        /// Source repository path.
        from: String,
    },
    /// Bytes were uploaded.
    Uploaded,
    /// Bytes were downloaded.
    Downloaded,
}

/// Makes sure `repository` holds the blob `desc` from the store: HEAD, then a mount from one
/// of `mount_from` if given, else an upload. Ends with a HEAD so the caller knows the blob is
/// really there before it pushes a manifest that needs it.
pub(crate) async fn upload(
    client: &Client,
    host: &Host,
    repository: &str,
    desc: &Descriptor,
    store: &Store,
    mount_from: &[String],
    meter: &Arc<Meter>,
) -> Result<BlobStatus, RegistryError> {
    let push_scope = [Scope::push(repository)];
    let what = format!("pushing {} to {}/{repository}", desc.digest, host.registry);
    let policy = client.options().retry.clone();
    {
        let mut attempt = 1;
        loop {
            let outcome = async {
                if exists(client, host, repository, &desc.digest, &push_scope).await? {
                    return Ok(BlobStatus::Existed);
                }
                let mut location = None;
                if let Some(from) = mount_from.first() {
                    match mount(client, host, repository, &desc.digest, from).await {
                        Ok(Ok(())) => {
                            return Ok(BlobStatus::Mounted { from: from.clone() });
                        }
                        Ok(Err(loc)) => location = Some(loc),
                        // No read access to the source repository (any more): just upload.
                        Err(RegistryError::Unauthorized { message, .. }) => {
                            tracing::debug!("mount from {from} refused ({message}); uploading");
                        }
                        Err(e) => return Err(e),
                    }
                }
                let location = match location {
                    Some(l) => l,
                    None => start_upload(client, host, repository).await?,
                };
                send_blob(client, host, repository, desc, store, location, meter).await?;
                if !exists(client, host, repository, &desc.digest, &push_scope).await? {
                    return Err(RegistryError::Status {
                        registry: host.registry.clone(),
                        repository: repository.to_string(),
                        action: format!("HEAD after upload of {}", desc.digest),
                        status: 404,
                        message: "blob missing right after a successful upload".into(),
                        retry_after: None,
                    });
                }
                meter.finish();
                Ok(BlobStatus::Uploaded)
            }
            .await;
            match outcome {
                Ok(v) => break Ok::<_, RegistryError>(v),
                Err(e) => policy.backoff(&what, attempt, e).await?,
            }
            attempt += 1;
        }
    }
}

/// POST `?mount=&from=`: `Ok(Ok(()))` when mounted (201), `Ok(Err(location))` when the
/// registry declined and opened an upload session instead (202).
async fn mount(
    client: &Client,
    host: &Host,
    repository: &str,
    digest: &Digest,
    from: &str,
) -> Result<Result<(), String>, RegistryError> {
    // One token covering both repositories; without the source's pull scope token
    // registries silently refuse the mount.
    let scopes = [Scope::push(repository), Scope::pull(from)];
    let path = format!("/v2/{repository}/blobs/uploads/?mount={digest}&from={from}");
    let url = Client::url(host, &path);
    let action = format!("POST {path}");
    let resp = client
        .send(host, repository, &action, &scopes, &mut |http| {
            Ok(http.post(&url).header(CONTENT_LENGTH, 0))
        })
        .await?;
    match resp.status() {
        StatusCode::CREATED => {
            tracing::debug!("mounted {digest} from {from} into {repository}");
            Ok(Ok(()))
        }
        StatusCode::ACCEPTED => Ok(Err(location(host, repository, &action, &resp)?)),
        _ => Err(status_error(host, repository, &action, resp).await),
    }
}

async fn start_upload(
    client: &Client,
    host: &Host,
    repository: &str,
) -> Result<String, RegistryError> {
    let path = format!("/v2/{repository}/blobs/uploads/");
    let url = Client::url(host, &path);
    let action = format!("POST {path}");
    let resp = client
        .send(
            host,
            repository,
            &action,
            &[Scope::push(repository)],
            &mut |http| Ok(http.post(&url).header(CONTENT_LENGTH, 0)),
        )
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(status_error(host, repository, &action, resp).await);
    }
    location(host, repository, &action, &resp)
}

fn location(
    host: &Host,
    repository: &str,
    action: &str,
    resp: &reqwest::Response,
) -> Result<String, RegistryError> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Status {
            registry: host.registry.clone(),
            repository: repository.to_string(),
            action: action.to_string(),
            status: resp.status().as_u16(),
            message: "upload session without a Location header".into(),
            retry_after: None,
        })?;
    Ok(Client::url(host, loc))
}

/// Sends the blob's bytes to an open upload session and closes it with `?digest=`. Large
/// blobs go in PATCH chunks; when one fails, the session's `Range` (GET on its location) says
/// where to go on, so a dropped connection costs one chunk, not the whole blob. Registries
/// that cannot say (or dropped the session) get the blob again in a new session.
async fn send_blob(
    client: &Client,
    host: &Host,
    repository: &str,
    desc: &Descriptor,
    store: &Store,
    mut location: String,
    meter: &Arc<Meter>,
) -> Result<(), RegistryError> {
    let scopes = [Scope::push(repository)];
    let path = store.blob_path(&desc.digest);
    let mut offset = 0u64;
    if desc.size > CHUNK_SIZE {
        let policy = client.options().retry.clone();
        let what = format!(
            "chunked upload of {} to {}/{repository}",
            desc.digest, host.registry
        );
        let mut attempt = 1;
        while offset < desc.size {
            let len = CHUNK_SIZE.min(desc.size - offset);
            match send_chunk(client, host, repository, &path, &location, offset, len).await {
                Ok(next) => {
                    location = next;
                    offset += len;
                    meter.set(offset);
                    // Failures only count against the chunk they happen on.
                    attempt = 1;
                }
                Err(e) => {
                    policy.backoff(&what, attempt, e).await?;
                    attempt += 1;
                    (location, offset) = match upload_status(client, host, repository, &location)
                        .await
                    {
                        Ok((loc, received)) if received <= desc.size => {
                            tracing::info!("{what}: resuming at byte {received}");
                            (loc, received)
                        }
                        Ok((_, received)) => {
                            tracing::warn!(
                                "{what}: the session holds {received} bytes, more than the blob; starting over"
                            );
                            (start_upload(client, host, repository).await?, 0)
                        }
                        Err(e) => {
                            tracing::warn!(
                                "{what}: cannot resume ({e}); starting over in a new session"
                            );
                            (start_upload(client, host, repository).await?, 0)
                        }
                    };
                    meter.set(offset);
                }
            }
        }
    }
    let url = with_digest(&location, &desc.digest)?;
    let action = format!("PUT {}", super::client::path_of(&url));
    let monolithic = offset == 0;
    let resp = client
        .send(host, repository, &action, &scopes, &mut |http| {
            let req = http.put(&url);
            if !monolithic {
                return Ok(req.header(CONTENT_LENGTH, 0));
            }
            // Stream from the file with an exact Content-Length, so big-but-not-huge blobs
            // never sit in memory and the registry knows the size up front.
            let file = std::fs::File::open(&path).map_err(|e| RegistryError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let meter = meter.clone();
            meter.set(0);
            let stream = tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                STREAM_BUFFER,
            )
            .map(move |chunk| {
                if let Ok(c) = &chunk {
                    meter.add(c.len() as u64);
                }
                chunk
            });
            Ok(req
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, desc.size)
                .body(reqwest::Body::wrap_stream(stream)))
        })
        .await?;
    if resp.status() != StatusCode::CREATED {
        return Err(status_error(host, repository, &action, resp).await);
    }
    Ok(())
}

/// One PATCH of `len` bytes at `offset`; returns the session's next location.
async fn send_chunk(
    client: &Client,
    host: &Host,
    repository: &str,
    path: &std::path::Path,
    location: &str,
    offset: u64,
    len: u64,
) -> Result<String, RegistryError> {
    let chunk = read_range(path, offset, len)?;
    let action = format!(
        "PATCH {} ({offset}+{len})",
        super::client::path_of(location)
    );
    let resp = client
        .send(
            host,
            repository,
            &action,
            &[Scope::push(repository)],
            &mut |http| {
                Ok(http
                    .patch(location)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, format!("{offset}-{}", offset + len - 1))
                    .header(CONTENT_LENGTH, len)
                    .body(chunk.clone()))
            },
        )
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(status_error(host, repository, &action, resp).await);
    }
    self::location(host, repository, &action, &resp)
}

/// Asks an upload session how much it holds (`GET` on its location: `204` with
/// `Range: 0-<last byte>`); returns its location to go on with and the byte count.
async fn upload_status(
    client: &Client,
    host: &Host,
    repository: &str,
    location: &str,
) -> Result<(String, u64), RegistryError> {
    let action = format!("GET {}", super::client::path_of(location));
    let resp = client
        .send(
            host,
            repository,
            &action,
            &[Scope::push(repository)],
            &mut |http| Ok(http.get(location)),
        )
        .await?;
    if resp.status() != StatusCode::NO_CONTENT {
        return Err(status_error(host, repository, &action, resp).await);
    }
    let range = resp
        .headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let received =
        range
            .as_deref()
            .and_then(received_bytes)
            .ok_or_else(|| RegistryError::Status {
                registry: host.registry.clone(),
                repository: repository.to_string(),
                action: action.clone(),
                status: 204,
                message: format!("upload status without a usable Range header ({range:?})"),
                retry_after: None,
            })?;
    let next = match resp.headers().get(LOCATION) {
        Some(_) => self::location(host, repository, &action, &resp)?,
        None => location.to_string(),
    };
    Ok((next, received))
}

/// Bytes an upload session holds from its `Range: 0-<last>` header. distribution answers
/// `0-0` for an empty session as well as for a one-byte one; both resume at 0, which at
/// worst resends one byte.
fn received_bytes(range: &str) -> Option<u64> {
    let range = range.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    let (start, end) = range.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    match end.trim().parse::<u64>().ok()? {
        0 => Some(0),
        last => Some(last + 1),
    }
}

fn with_digest(location: &str, digest: &Digest) -> Result<String, RegistryError> {
    let mut url = reqwest::Url::parse(location).map_err(|e| RegistryError::Status {
        registry: String::new(),
        repository: String::new(),
        action: "parsing upload location".into(),
        status: 0,
        message: format!("{location}: {e}"),
        retry_after: None,
    })?;
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    Ok(url.to_string())
}

fn read_range(
    path: &std::path::Path,
    offset: u64,
    len: u64,
) -> Result<bytes::Bytes, RegistryError> {
    let err = |e: std::io::Error| RegistryError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    f.seek(SeekFrom::Start(offset)).map_err(err)?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf).map_err(err)?;
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_appended_to_upload_locations() {
        let d = Digest::of(b"x");
        let u = with_digest("http://h:1/v2/r/blobs/uploads/abc?_state=s%2B1", &d).unwrap();
        assert_eq!(
            u,
            format!(
                "http://h:1/v2/r/blobs/uploads/abc?_state=s%2B1&digest=sha256%3A{}",
                d.hex()
            )
        );
    }

    #[test]
    fn upload_session_ranges_give_the_bytes_held() {
        assert_eq!(received_bytes("0-16777215"), Some(16 * 1024 * 1024));
        assert_eq!(received_bytes("bytes=0-99"), Some(100));
        assert_eq!(received_bytes("0-0"), Some(0));
        assert_eq!(received_bytes("5-9"), None);
        assert_eq!(received_bytes("0-"), None);
        assert_eq!(received_bytes("junk"), None);
    }

    #[test]
    fn ranges_of_a_file_are_read_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(&read_range(&p, 3, 4).unwrap()[..], b"3456");
        assert_eq!(&read_range(&p, 8, 4).unwrap()[..], b"89");
    }
}
