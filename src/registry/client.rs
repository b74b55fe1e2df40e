//! The HTTP side of the registry client: one `reqwest` client per registry host with that
//! host's TLS settings, the `http`/`https` decision, and authentication attached to every
//! request (anonymous, basic, or bearer tokens from the `WWW-Authenticate` challenge).
//!
//! Scheme choice follows docker: HTTPS always comes first. For insecure registries
//! (`--insecure-registry HOST`, plus `localhost` and `127.0.0.0/8`/`::1`, which docker treats as
//! insecure by default) certificates are not verified and plain HTTP is used when the HTTPS
//! attempt fails at the connection level.
//!
//! TLS trust: the system roots, plus `/etc/docker/certs.d/<host>/*.crt`,
//! `/etc/containers/certs.d/<host>/*.crt` and the PEM file named by `RBUILD_REGISTRY_CA`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::auth::{Scope, TokenCache};
use super::challenge::Challenge;
use super::credentials::{self, Credential};
use super::error::{chain_text, describe_body};
use super::retry::{RetryPolicy, parse_retry_after};
use super::{RegistryError, tls};

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host[:port]`) allowed plain HTTP and unverified TLS.
    pub insecure_registries: Vec<String>,
    /// Retry policy for every operation.
    pub retry: RetryPolicy,
    /// Treat `localhost` and loopback addresses as insecure, as docker does (default true).
    pub loopback_insecure: bool,
    /// Blobs transferred at once per pull or push.
    pub max_concurrent_transfers: usize,
    /// Extra PEM CA files trusted for every registry (default: `$RBUILD_REGISTRY_CA`).
    pub extra_ca_files: Vec<PathBuf>,
    /// Directories holding `<host>/*.crt` per-registry CAs.
    pub certs_dirs: Vec<PathBuf>,
    /// Credentials to use instead of the stored ones, keyed by [`credentials::auth_key`]
    /// (used by `rbuild login` to check new credentials before storing them).
    pub credentials: HashMap<String, Credential>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            retry: RetryPolicy::default(),
            loopback_insecure: true,
            max_concurrent_transfers: 3,
            extra_ca_files: std::env::var_os("RBUILD_REGISTRY_CA")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .into_iter()
                .collect(),
            certs_dirs: vec![
                "/etc/docker/certs.d".into(),
                "/etc/containers/certs.d".into(),
            ],
            credentials: HashMap::new(),
        }
    }
}

/// A registry client shared by pulls and pushes; cheap to clone. Tokens, schemes and
/// credentials are remembered per registry host for the client's lifetime.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    hosts: tokio::sync::Mutex<HashMap<String, Arc<Host>>>,
}

/// One registry host after its first contact.
pub(crate) struct Host {
    /// Registry as the user wrote it (credential key, messages).
    pub(crate) registry: String,
    /// `https://host[:port]` or `http://host[:port]`.
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    challenge: Mutex<Option<Challenge>>,
    credential: Option<Credential>,
    tokens: TokenCache,
}

impl Client {
    /// A client with `options`.
    pub fn new(options: ClientOptions) -> Client {
        Client {
            inner: Arc::new(Inner {
                options,
                hosts: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Whether `host` gets docker's insecure treatment (configured, localhost or loopback).
    pub fn is_insecure(&self, host: &str) -> bool {
        tls::is_insecure(&self.inner.options, host)
    }

    /// Connects to `registry` (a [`super::Reference::registry`] value) once: picks the scheme
    /// and learns the auth challenge from `GET /v2/`.
    pub(crate) async fn host(&self, registry: &str) -> Result<Arc<Host>, RegistryError> {
        let mut hosts = self.inner.hosts.lock().await;
        if let Some(h) = hosts.get(registry) {
            return Ok(h.clone());
        }
        let host = Arc::new(self.connect(registry).await?);
        hosts.insert(registry.to_string(), host.clone());
        Ok(host)
    }

    async fn connect(&self, registry: &str) -> Result<Host, RegistryError> {
        let api = api_host(registry);
        let insecure = self.is_insecure(registry);
        let key = credentials::auth_key(registry);
        let credential = match self.inner.options.credentials.get(&key) {
            Some(c) => Some(c.clone()),
            None => credentials::lookup(registry)?,
        };
        let https = tls::build_http(&self.inner.options, &api, insecure)?;
        let plain = if insecure {
            Some(tls::build_http(&self.inner.options, &api, true)?)
        } else {
            None
        };
        let https_base = format!("https://{api}");
        let http_base = format!("http://{api}");
        // Each attempt tries HTTPS and, for insecure hosts, plain HTTP right after, so a
        // plain-HTTP registry does not cost a round of backoff before it is found.
        let policy = &self.inner.options.retry;
        let what = format!("contacting {registry}");
        let mut attempt = 1;
        let (base, http, challenge) = loop {
            let outcome = match ping(&https, registry, &https_base).await {
                Ok(c) => Ok((https_base.clone(), https.clone(), c)),
                Err(err @ RegistryError::Transport { .. }) => match &plain {
                    Some(plain) => {
                        tracing::debug!("{registry}: HTTPS failed ({err}); trying plain HTTP");
                        ping(plain, registry, &http_base)
                            .await
                            .map(|c| (http_base.clone(), plain.clone(), c))
                    }
                    None => Err(with_insecure_hint(err, registry)),
                },
                Err(err) => Err(err),
            };
            match outcome {
                Ok(v) => break v,
                Err(e) => policy.backoff(&what, attempt, e).await?,
            }
            attempt += 1;
        };
        tracing::debug!("{registry}: using {base}, challenge {challenge:?}");
        Ok(Host {
            registry: registry.to_string(),
            base,
            http,
            challenge: Mutex::new(challenge),
            credential,
            tokens: TokenCache::default(),
        })
    }

    /// answered anew) with authentication for `scopes` attached. Returns the response for any
    /// status except 401, which becomes [`RegistryError::Unauthorized`] after one fresh try.
    pub(crate) async fn send(
        &self,
        host: &Host,
        repository: &str,
        action: &str,
        scopes: &[Scope],
        make: &mut (dyn FnMut(&reqwest::Client) -> Result<RequestBuilder, RegistryError> + Send),
    ) -> Result<Response, RegistryError> {
        let mut refreshed = false;
        loop {
            let mut req = make(&host.http)?;
            req = self.authorize(host, scopes, req).await?;
            let resp = req.send().await.map_err(|e| RegistryError::Transport {
                registry: host.registry.clone(),
                action: action.to_string(),
                reason: chain_text(&e.without_url()),
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let fresh = Challenge::parse_all(
                resp.headers()
                    .get_all(reqwest::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            if refreshed || fresh.is_none() {
                return Err(status_error(host, repository, action, resp).await);
            }
            // The registry's challenge may differ from the ping's (e.g. a new realm), or the
            // cached token no longer suffices: learn it and try once more.
            *host.challenge.lock().expect("challenge lock poisoned") = fresh;
            host.tokens.forget(scopes);
            refreshed = true;
        }
    }

    async fn authorize(
        &self,
        host: &Host,
        scopes: &[Scope],
        req: RequestBuilder,
    ) -> Result<RequestBuilder, RegistryError> {
        let challenge = host
            .challenge
            .lock()
            .expect("challenge lock poisoned")
            .clone();
        match (challenge, &host.credential) {
            (None, _) => Ok(req),
            (Some(Challenge::Basic), Some(Credential::Basic { username, password })) => {
                Ok(req.basic_auth(username, Some(password)))
            }
            (Some(Challenge::Basic), _) => Ok(req),
            (Some(bearer @ Challenge::Bearer { .. }), cred) => {
                let token = match host.tokens.get(scopes) {
                    Some(t) => t,
                    None => {
                        host.tokens
                            .fetch(&host.http, &host.registry, &bearer, cred.as_ref(), scopes)
                            .await?
                    }
                };
                Ok(req.bearer_auth(token))
            }
        }
    }

    /// Checks credentials the way `docker login` does: `GET /v2/` and, on a token registry,
    /// a token request with no scope, which the token service only grants to valid logins.
    pub async fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let host = self.host(registry).await?;
        let challenge = host
            .challenge
            .lock()
            .expect("challenge lock poisoned")
            .clone();
        match challenge {
            Some(bearer @ Challenge::Bearer { .. }) => {
                host.tokens
                    .fetch(&host.http, registry, &bearer, host.credential.as_ref(), &[])
                    .await?;
                Ok(())
            }
            _ => {
                let url = format!("{}/v2/", host.base);
                let resp = self
                    .send(&host, "", "GET /v2/", &[], &mut |http| Ok(http.get(&url)))
                    .await?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(status_error(&host, "", "GET /v2/", resp).await)
                }
            }
        }
    }

    /// A generic request helper: `method` on `url` (absolute, or a path below the base).
    pub(crate) fn url(host: &Host, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", host.base, path_or_url)
        }
    }

    /// Shorthand for a body-less request with `headers`.
    pub(crate) async fn simple(
        &self,
        host: &Host,
        repository: &str,
        scopes: &[Scope],
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let url = Client::url(host, path);
        let action = format!("{method} {}", path_of(&url));
        self.send(host, repository, &action, scopes, &mut |http| {
            let mut r = http.request(method.clone(), &url);
            if let Some(a) = accept {
                r = r.header(reqwest::header::ACCEPT, a);
            }
            Ok(r)
        })
        .await
    }
}

/// A TLS failure against a registry that may only speak plain HTTP: say how to allow that.
fn with_insecure_hint(err: RegistryError, registry: &str) -> RegistryError {
    match err {
        RegistryError::Transport {
            registry: r,
            action,
            reason,
        } if !reason.contains("Connection refused") => RegistryError::Transport {
            registry: r,
            action,
            reason: format!(
                "{reason} (if {registry} serves plain HTTP or a self-signed certificate, pass --insecure-registry {registry})"
            ),
        },
        other => other,
    }
}

/// Turns an unexpected response into an error that says what the registry answered.
pub(crate) async fn status_error(
    host: &Host,
    repository: &str,
    action: &str,
    resp: Response,
) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
    let body = resp.bytes().await.unwrap_or_default();
    let message = describe_body(status, &body);
    if status == 401 || status == 403 {
        return RegistryError::Unauthorized {
            registry: host.registry.clone(),
            repository: repository.to_string(),
            action: action.to_string(),
            message,
            login_server: login_server(&host.registry),
        };
    }
    RegistryError::Status {
        registry: host.registry.clone(),
        repository: repository.to_string(),
        action: action.to_string(),
        status,
        message,
        retry_after,
    }
}

/// What to type after `rbuild login` for this registry (nothing for Docker Hub).
fn login_server(registry: &str) -> String {
    if registry == super::DOCKER_HUB {
        String::new()
    } else {
        registry.to_string()
    }
}

async fn ping(
    http: &reqwest::Client,
    registry: &str,
    base: &str,
) -> Result<Option<Challenge>, RegistryError> {
    let url = format!("{base}/v2/");
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| RegistryError::Transport {
            registry: registry.to_string(),
            action: format!("GET {url}"),
            reason: chain_text(&e.without_url()),
        })?;
    let status = resp.status().as_u16();
    if status == 401 {
        return Ok(Challenge::parse_all(
            resp.headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        ));
    }
    if resp.status().is_success() {
        return Ok(None);
    }
    let retry_after = parse_retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
    let body = resp.bytes().await.unwrap_or_default();
    Err(RegistryError::Status {
        registry: registry.to_string(),
        repository: String::new(),
        action: format!("GET {url}"),
        status,
        message: describe_body(status, &body),
        retry_after,
    })
}

/// Single-request operations on one repository for callers outside the registry module (the
/// registry build cache): each retries transient failures with the client's policy and
/// authenticates like pulls and pushes do.
impl Client {
    /// GETs the manifest `reference` names (its digest if it has one, else its tag), offering
    /// `accept` as the media types wanted; returns its bytes and their digest, or `None` when
    /// the registry has no such manifest (404). Manifests over 4 MiB are refused.
    pub async fn get_manifest(
        &self,
        reference: &super::Reference,
        accept: &str,
    ) -> Result<Option<(Vec<u8>, crate::image::Digest)>, RegistryError> {
        let host = self.host(reference.registry()).await?;
        super::pull::get_manifest(
            self,
            &host,
            reference,
            &reference.manifest_ref(),
            accept,
            true,
        )
        .await
    }

    /// The digest of the manifest `reference` names, from a HEAD request (`accept` as in
    /// [`Client::get_manifest`]); `None` when there is none or the registry does not say.
    pub async fn head_manifest(
        &self,
        reference: &super::Reference,
        accept: &str,
    ) -> Result<Option<crate::image::Digest>, RegistryError> {
        let host = self.host(reference.registry()).await?;
        let repo = reference.repository();
        let path = format!("/v2/{repo}/manifests/{}", reference.manifest_ref());
        let action = format!("HEAD {path}");
        let policy = self.options().retry.clone();
        policy
            .run(&action, |_| async {
                let resp = self
                    .simple(
                        &host,
                        repo,
                        &[Scope::pull(repo)],
                        Method::HEAD,
                        &path,
                        Some(accept),
                    )
                    .await?;
                match resp.status() {
                    StatusCode::NOT_FOUND => Ok(None),
                    s if s.is_success() => Ok(resp
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())),
                    _ => Err(status_error(&host, repo, &action, resp).await),
                }
            })
            .await
    }

    /// Downloads blob `desc` of `reference`'s repository into `store` unless it is there:
    /// verified against its size and digest, resumed with `Range` after a broken body.
    pub async fn fetch_blob(
        &self,
        reference: &super::Reference,
        desc: &crate::image::Descriptor,
        store: &crate::store::Store,
    ) -> Result<(), RegistryError> {
        let host = self.host(reference.registry()).await?;
        let meter = super::meter::Meter::new(&None, desc.digest.to_string(), desc.size);
        super::blob::download(self, &host, reference.repository(), desc, store, &meter).await
    }

    /// The bytes of a small blob (a config) of `reference`'s repository, verified against
    /// `desc`'s digest; blobs over `max` bytes are refused before they are read.
    pub async fn fetch_blob_bytes(
        &self,
        reference: &super::Reference,
        desc: &crate::image::Descriptor,
        max: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let host = self.host(reference.registry()).await?;
        let repo = reference.repository();
        let path = format!("/v2/{repo}/blobs/{}", desc.digest);
        let action = format!("GET {path}");
        let too_big = |size: u64| RegistryError::SizeMismatch {
            registry: host.registry.clone(),
            repository: repo.to_string(),
            digest: desc.digest.clone(),
            expected: desc.size.min(max),
            actual: size,
        };
        if desc.size > max {
            return Err(too_big(desc.size));
        }
        let policy = self.options().retry.clone();
        let bytes = policy
            .run(&action, |_| async {
                let resp = self
                    .simple(&host, repo, &[Scope::pull(repo)], Method::GET, &path, None)
                    .await?;
                if resp.status() != StatusCode::OK {
                    return Err(status_error(&host, repo, &action, resp).await);
                }
                let bytes = resp.bytes().await.map_err(|e| RegistryError::Transport {
                    registry: host.registry.clone(),
                    action: action.clone(),
                    reason: chain_text(&e.without_url()),
                })?;
                Ok(bytes.to_vec())
            })
            .await?;
        if bytes.len() as u64 != desc.size {
            return Err(too_big(bytes.len() as u64));
        }
        let actual = crate::image::Digest::of(&bytes);
        if actual != desc.digest {
            return Err(RegistryError::DigestMismatch {
                registry: host.registry.clone(),
                repository: repo.to_string(),
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

fn api_host(registry: &str) -> String {
    if registry == super::DOCKER_HUB {
        super::DOCKER_HUB_API.to_string()
    } else {
        registry.to_string()
    }
}
pub(crate) fn path_of(url: &str) -> &str {
    url.find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| &url[i + 3 + j..]))
        .unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        assert_eq!(
            path_of("http://h:1/v2/x/blobs/uploads/?a=b"),
            "/v2/x/blobs/uploads/?a=b"
        );
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn tls_failures_suggest_insecure_registry_but_refusals_do_not() {
        let err = |reason: &str| RegistryError::Transport {
            registry: "reg:5000".into(),
            action: "GET https://reg:5000/v2/".into(),
            reason: reason.into(),
        };
        let hinted = with_insecure_hint(err("received corrupt message"), "reg:5000").to_string();
        assert!(
            hinted.contains("pass --insecure-registry reg:5000"),
            "{hinted}"
        );
        let plain = with_insecure_hint(err("Connection refused (os error 111)"), "reg:5000");
        assert!(!plain.to_string().contains("--insecure-registry"));
    }
}
