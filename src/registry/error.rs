//! What can go wrong talking to a registry, worded for the user: which registry and repository,
//! what was being done, and what the registry answered (distribution's error JSON decoded).

use std::path::PathBuf;
use std::time::Duration;

use crate::image::Digest;

/// A registry operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference text is not a valid image reference.
    #[error(transparent)]
    Reference(#[from] super::ReferenceError),
    /// The connection failed or broke (DNS, refused, TLS, reset, timeout, body cut short).
    #[error("{action} on {registry}: {reason}")]
    Transport {
        /// Registry host.
        registry: String,
        /// What was being done, e.g. `GET /v2/x/manifests/latest`.
        action: String,
        /// The transport error, flattened with its causes.
        reason: String,
    },
    /// The registry answered with an unexpected HTTP status.
    #[error("{action} on {registry}/{repository}: {status}: {message}")]
    Status {
        /// Registry host.
        registry: String,
        /// Repository path (empty for registry-wide requests).
        repository: String,
        /// What was being done.
        action: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's own message (`denied: requested access to the resource is denied`).
        message: String,
        /// Seconds the registry asked us to wait (429/503 `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// 401/403: credentials missing or not good enough.
    #[error(
        "{action} on {registry}/{repository}: {message} (run `rbuild login {login_server}` if this registry needs credentials)"
    )]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// What was being done.
        action: String,
        /// The registry's message, e.g. `unauthorized: authentication required`.
        message: String,
        /// The server name to pass to `rbuild login`.
        login_server: String,
    },
    /// The token service refused to issue a token.
    #[error("getting a token from {realm} for {registry}: {message}")]
    Token {
        /// Registry host.
        registry: String,
        /// Token endpoint.
        realm: String,
        /// What the token service said.
        message: String,
    },
    /// Content did not match the digest it was fetched or pushed by.
    #[error("{registry}/{repository}: content of {expected} hashed to {actual}")]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Content length differs from its descriptor.
    #[error("{registry}/{repository}: {digest} is {actual} bytes, descriptor says {expected}")]
    SizeMismatch {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The blob or manifest.
        digest: Digest,
        /// Size in the descriptor.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A manifest or index that could not be understood.
    #[error("{reference}: {reason}")]
    BadManifest {
        /// The image reference.
        reference: String,
        /// Why it could not be used.
        reason: String,
    },
    /// No entry of a multi-platform image matches the wanted platform.
    #[error("{reference}: no image for platform {wanted} (available: {available})")]
    NoMatchingPlatform {
        /// The image reference.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// Platforms the index offers.
        available: String,
    },
    /// A `--platform` value that is not `os/arch[/variant]`.
    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    BadPlatform(String),
    /// Reading or writing a local file (credentials, CA certificates, blob sources).
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A credential helper (`docker-credential-*`) failed.
    #[error("credential helper docker-credential-{helper}: {reason}")]
    CredentialHelper {
        /// Helper suffix, e.g. `pass`.
        helper: String,
        /// Its error output.
        reason: String,
    },
    /// The local content store failed.
    #[error("local store: {0}")]
    Store(String),
    /// A feature this client does not implement yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
}

impl RegistryError {
    /// Whether trying again may succeed: broken connections, 5xx, 429 and 408.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }

    /// The delay the registry asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Turns distribution's error body (`{"errors":[{"code":"DENIED","message":"..."}]}`) into
/// docker's wording, `denied: requested access to the resource is denied`. Falls back to the
/// status text plus a short body excerpt for registries that answer with HTML or plain text.
pub(crate) fn describe_body(status: u16, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(body)
        && !parsed.errors.is_empty()
    {
        return parsed
            .errors
            .iter()
            .map(|e| {
                let code = e.code.to_ascii_lowercase().replace('_', " ");
                match (code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{code}: {}", e.message),
                    (false, true) => code,
                    _ => e.message.clone(),
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let reason = http_reason(status);
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('<') {
        reason.to_string()
    } else {
        let excerpt: String = text.chars().take(200).collect();
        format!("{reason}: {excerpt}")
    }
}

fn http_reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unexpected status")
}

/// Flattens an error and its `source()` chain into one line.
pub(crate) fn chain_text(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_errors_read_like_docker() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        assert_eq!(
            describe_body(403, body),
            "denied: requested access to the resource is denied"
        );
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            describe_body(404, body),
            "manifest unknown: manifest unknown"
        );
        assert_eq!(describe_body(502, b"<html>bad</html>"), "Bad Gateway");
        assert_eq!(describe_body(500, b"boom"), "Internal Server Error: boom");
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let status = |status| RegistryError::Status {
            registry: "r".into(),
            repository: "x".into(),
            action: "GET".into(),
            status,
            message: String::new(),
            retry_after: None,
        };
        assert!(status(500).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(400).is_transient());
    }
}
