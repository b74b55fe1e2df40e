//! ADD's URLs: http(s) downloads with `--checksum` verification (sha256/384/512),
//! `Last-Modified` as the file's mtime, BuildKit's file naming, and the validators that key
//! the cache for a URL.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ContextError;
use super::archive::staged_path;
use super::dockerignore::clean_path;
use super::entry::Mtime;
use crate::image::{Digest, Hasher};

/// Splits `--checksum=<alg>:<hex>` for the algorithms BuildKit accepts (sha256/384/512).
fn parse_checksum(c: &str) -> Result<(&'static str, String), ContextError> {
    let bad = |reason: &str| ContextError::Destination(format!("invalid --checksum={c}: {reason}"));
    let (alg, hex) = c
        .split_once(':')
        .ok_or_else(|| bad("expected <algorithm>:<hex>"))?;
    let (alg, len) = match alg {
        "sha256" => ("sha256", 64),
        "sha384" => ("sha384", 96),
        "sha512" => ("sha512", 128),
        _ => return Err(bad("unsupported algorithm (sha256, sha384 or sha512)")),
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(&format!("expected {len} hex characters")));
    }
    Ok((alg, hex.to_ascii_lowercase()))
}

/// The hex digest of a staged file with a SHA-2 variant other than sha256.
fn file_hex(path: &Path, alg: &str) -> Result<String, ContextError> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).map_err(|e| ContextError::io(path, e))?;
    Ok(match alg {
        "sha384" => hex::encode(sha2::Sha384::digest(&bytes)),
        _ => hex::encode(sha2::Sha512::digest(&bytes)),
    })
}

/// A downloaded ADD URL.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub path: PathBuf,
    pub file_name: String,
    pub size: u64,
    pub mtime: Option<Mtime>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The file name BuildKit gives an ADD URL: the last path segment, or `__unnamed__`.
pub(crate) fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path);
    let cleaned = clean_path(&format!("/{decoded}"));
    match cleaned.rsplit('/').next() {
        Some(base) if !base.is_empty() && base != "." => base.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// Downloads `url` into `stage`, verifying `checksum` (`sha256:<hex>`) when given.
pub(crate) fn fetch_url(
    url: &str,
    checksum: Option<&str>,
    stage: &Path,
) -> Result<Fetched, ContextError> {
    let fail = |reason: String| ContextError::Fetch {
        url: url.to_string(),
        reason,
    };
    let expected = checksum.map(parse_checksum).transpose()?;
    let path = staged_path(stage);
    let url_owned = url.to_string();
    let path_owned = path.clone();
    let (size, digest, mtime) =
        run_blocking(async move { download(&url_owned, &path_owned).await }).map_err(fail)?;
    if let Some((alg, want)) = expected {
        let actual = match alg {
            "sha256" => digest.hex().to_string(),
            _ => file_hex(&path, alg)?,
        };
        if actual != want {
            return Err(ContextError::ChecksumMismatch {
                url: url.to_string(),
                expected: format!("{alg}:{want}"),
                actual: format!("{alg}:{actual}"),
            });
        }
    }
    Ok(Fetched {
        path,
        file_name: url_file_name(url),
        size,
        mtime,
    })
}

/// Runs `fut` on a private runtime on its own thread, which works whether or not the caller is
/// inside tokio (where blocking on the caller's runtime would panic).
fn run_blocking<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(fut)
    })
    .join()
    .map_err(|_| "download thread panicked".to_string())?
}

/// What identifies the content behind an ADD URL for cache keys: the `--checksum` when given
/// (the content is pinned), else the server's validators (`ETag`, `Last-Modified`,
/// `Content-Length`) from a HEAD request, else the digest of the downloaded content.
pub(crate) fn url_cache_key(url: &str, checksum: Option<&str>) -> Result<String, ContextError> {
    if let Some(c) = checksum {
        return Ok(format!("checksum\0{c}"));
    }
    let fail = |reason: String| ContextError::Fetch {
        url: url.to_string(),
        reason,
    };
    let url_owned = url.to_string();
    let validators = run_blocking(async move {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .head(&url_owned)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        let h = resp.headers();
        let get = |name| {
            h.get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let etag = get(reqwest::header::ETAG);
        let modified = get(reqwest::header::LAST_MODIFIED);
        if etag.is_empty() && modified.is_empty() {
            return Ok(None);
        }
        let length = get(reqwest::header::CONTENT_LENGTH);
        Ok(Some(format!("etag\0{etag}\0{modified}\0{length}")))
    })
    .map_err(fail)?;
    if let Some(v) = validators {
        return Ok(v);
    }
    let stage = tempfile::tempdir().map_err(|e| ContextError::io(std::env::temp_dir(), e))?;
    let fetched = fetch_url(url, None, stage.path())?;
    let digest =
        Digest::of(&std::fs::read(&fetched.path).map_err(|e| ContextError::io(&fetched.path, e))?);
    Ok(format!("content\0{digest}"))
}

async fn download(url: &str, path: &Path) -> Result<(u64, Digest, Option<Mtime>), String> {
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("server answered {}", resp.status()));
    }
    let mtime = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Mtime {
            secs: d.as_secs() as i64,
            nanos: 0,
        });
    let mut out = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Hasher::new();
    let mut size = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        hasher.update(&chunk);
        out.write_all(&chunk)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        size += chunk.len() as u64;
    }
    Ok((size, hasher.finish(), mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_name_their_algorithm() {
        let ok = parse_checksum(&format!("sha512:{}", "AB".repeat(64))).unwrap();
        assert_eq!(ok, ("sha512", "ab".repeat(64)));
        assert!(parse_checksum("md5:00").is_err());
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum("deadbeef").is_err());
    }

    #[test]
    fn url_names_follow_buildkit() {
        assert_eq!(url_file_name("http://h/a/b.tar.gz"), "b.tar.gz");
        assert_eq!(url_file_name("http://h/a/b.txt?x=1#f"), "b.txt");
        assert_eq!(url_file_name("http://h/"), "__unnamed__");
        assert_eq!(url_file_name("http://h"), "__unnamed__");
        assert_eq!(url_file_name("https://h/dir/"), "dir");
        assert_eq!(url_file_name("https://h/a%20b"), "a b");
    }
}
