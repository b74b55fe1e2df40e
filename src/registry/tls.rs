//! Transport security per registry host, following docker: which hosts are "insecure"
//! (`--insecure-registry`, plus `localhost`, `127.0.0.0/8` and `::1` by default), and which CA
//! certificates are trusted besides the system roots: `RBUILD_REGISTRY_CA`,
//! `/etc/docker/certs.d/<host>/*.crt` and `/etc/containers/certs.d/<host>/*.crt`.
//!
//! Insecure hosts get HTTPS without certificate verification first and plain HTTP when that
//! fails at the connection level (docker's order); see `Client::connect`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::RegistryError;
use super::client::ClientOptions;
use super::error::chain_text;

/// Whether `host` (`host[:port]`) gets docker's insecure treatment.
pub(crate) fn is_insecure(opts: &ClientOptions, host: &str) -> bool {
    if opts.insecure_registries.iter().any(|h| h == host) {
        return true;
    }
    if !opts.loopback_insecure {
        return false;
    }
    let bare = strip_port(host);
    bare == "localhost"
        || bare
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An HTTP client for registry API host `api` with its trust settings.
pub(crate) fn build_http(
    opts: &ClientOptions,
    api: &str,
    insecure: bool,
) -> Result<reqwest::Client, RegistryError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(120));
    if insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    let mut certs = Vec::new();
    for file in ca_files(opts, api) {
        let pem = std::fs::read(&file).map_err(|e| RegistryError::File {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        let found =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::File {
                path: file.clone(),
                reason: format!("not a PEM certificate bundle: {e}"),
            })?;
        certs.extend(found);
    }
    if !certs.is_empty() {
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| RegistryError::Transport {
        registry: api.to_string(),
        action: "setting up the HTTP client".into(),
        reason: chain_text(&e),
    })
}

/// Makes `ring` rustls' process-wide crypto provider, which reqwest then uses. reqwest's own
/// default, aws-lc, seeds its random generator from CPU jitter on first use: about 0.2 s of
/// CPU in every rbuild process that opens a TLS connection, which would be most of a push
/// whose blobs are all present already. (The cost: no post-quantum hybrid key exchange.)
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if something installed a provider first; that one is then used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The CA files trusted for `api` in addition to the system roots.
fn ca_files(opts: &ClientOptions, api: &str) -> Vec<PathBuf> {
    let mut out = opts.extra_ca_files.clone();
    for dir in &opts.certs_dirs {
        out.extend(crt_files(&dir.join(api)));
    }
    out
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// `*.crt` in `dir` (docker's CA naming; `*.cert`/`*.key` are client certificates).
fn crt_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_configured_hosts_are_insecure() {
        let opts = ClientOptions {
            insecure_registries: vec!["reg.internal:5000".into()],
            ..ClientOptions::default()
        };
        for host in [
            "localhost:5000",
            "localhost",
            "127.0.0.1:41000",
            "127.5.6.7",
            "[::1]:5000",
            "reg.internal:5000",
        ] {
            assert!(is_insecure(&opts, host), "{host}");
        }
        for host in ["reg.internal", "ghcr.io", "docker.io"] {
            assert!(!is_insecure(&opts, host), "{host}");
        }
        let strict = ClientOptions {
            loopback_insecure: false,
            ..ClientOptions::default()
        };
        assert!(!is_insecure(&strict, "127.0.0.1:5000"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("h:5000"), "h");
        assert_eq!(strip_port("[::1]:5000"), "[::1]");
        assert_eq!(strip_port("h"), "h");
    }

    #[test]
    fn per_host_certificate_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("reg:5000");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("ca.crt"), "x").unwrap();
        std::fs::write(host.join("client.key"), "x").unwrap();
        let opts = ClientOptions {
            certs_dirs: vec![dir.path().to_path_buf()],
            extra_ca_files: vec![],
            ..ClientOptions::default()
        };
        assert_eq!(ca_files(&opts, "reg:5000"), vec![host.join("ca.crt")]);
        assert!(ca_files(&opts, "other").is_empty());
    }
}
