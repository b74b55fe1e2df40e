//! ADD's extras: local tar archives detected by content (gzip, bzip2, xz, zstd or plain) and
//! extracted into the destination, and http(s) URLs downloaded with `--checksum` verification
//! and `Last-Modified` as the file's mtime.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ContextError;
use super::copy::EntrySet;
use super::dockerignore::clean_path;
use super::entry::{EntryKind, LayerEntry, Mtime};
use super::select::join_rel;
use crate::image::{Digest, Hasher};

/// The compression around a tar archive, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An uncompressed tar.
    Tar,
    /// gzip (`1f 8b 08`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

fn sniff(head: &[u8]) -> ArchiveFormat {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        ArchiveFormat::Gzip
    } else if head.starts_with(b"BZh") {
        ArchiveFormat::Bzip2
    } else if head.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        ArchiveFormat::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ArchiveFormat::Zstd
    } else {
        ArchiveFormat::Tar
    }
}

fn open(path: &Path, format: ArchiveFormat) -> Result<Box<dyn Read>, ContextError> {
    let f = BufReader::new(File::open(path).map_err(|e| ContextError::io(path, e))?);
    Ok(match format {
        ArchiveFormat::Tar => Box::new(f),
        ArchiveFormat::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        ArchiveFormat::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        ArchiveFormat::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(f)),
        ArchiveFormat::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| ContextError::io(path, e))?)
        }
    })
}

/// Whether the 512-byte block is a tar header with a valid checksum.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let text = text.trim_start();
    let Ok(want) = u32::from_str_radix(text, 8) else {
        return false;
    };
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == want
}

/// Detects whether `path` is a (possibly compressed) tar archive, as docker does before ADD
/// unpacks it; anything else is copied as a plain file.
pub fn detect_archive(path: &Path) -> Result<Option<ArchiveFormat>, ContextError> {
    let mut head = [0u8; 6];
    let mut f = File::open(path).map_err(|e| ContextError::io(path, e))?;
    let n = read_full(&mut f, &mut head).map_err(|e| ContextError::io(path, e))?;
    let format = sniff(&head[..n]);
    let mut r = open(path, format)?;
    let mut block = vec![0u8; 512];
    // A corrupt compressed stream is simply "not an archive" for ADD.
    let n = read_full(&mut r, &mut block).unwrap_or(0);
    Ok(is_tar_header(&block[..n]).then_some(format))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

static STAGED: AtomicUsize = AtomicUsize::new(0);

fn staged_path(stage: &Path) -> PathBuf {
    stage.join(format!("f{}", STAGED.fetch_add(1, Ordering::Relaxed)))
}

/// Extracts the archive into `dest` (image-relative), adding its entries to `set`; file content
/// is staged under `stage`. Entries escaping `dest` are refused as docker's untar refuses them.
pub(crate) fn extract_archive(
    path: &Path,
    format: ArchiveFormat,
    dest: &str,
    stage: &Path,
    set: &mut EntrySet<'_>,
    origin: &str,
) -> Result<(), ContextError> {
    let bad = |reason: String| ContextError::Archive {
        path: origin.to_string(),
        reason,
    };
    let mut archive = tar::Archive::new(open(path, format)?);
    let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
    if !dest.is_empty() {
        set.ensure_parents(&format!("{dest}/x"))?;
    }
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry.path().map_err(|e| bad(e.to_string()))?;
        let name = name.to_string_lossy().into_owned();
        let rel = clean_path(&format!("/{name}"));
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        if clean_path(&name).starts_with("..") {
            return Err(bad(format!(
                "entry {name:?} points outside the destination"
            )));
        }
        let header = entry.header();
        let mode = header.mode().map_err(|e| bad(e.to_string()))? & 0o7777;
        // Archive entries keep their own owners even with --chown (only the destination
        // directory takes it): what dockerd 20.10's BuildKit produces. An empty numeric field
        // reads as 0, as in Go's archive/tar.
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = Some(Mtime {
            secs: header.mtime().unwrap_or(0) as i64,
            nanos: 0,
        });
        let target = join_rel(dest, rel);
        let kind = match header.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let staged = staged_path(stage);
                let mut out = File::create(&staged).map_err(|e| ContextError::io(&staged, e))?;
                let size =
                    std::io::copy(&mut entry, &mut out).map_err(|e| bad(format!("{name}: {e}")))?;
                EntryKind::File {
                    source: staged,
                    size,
                }
            }
            tar::EntryType::Symlink => {
                let t = entry
                    .link_name()
                    .map_err(|e| bad(e.to_string()))?
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                EntryKind::Symlink { target: t }
            }
            tar::EntryType::Link => {
                let t = entry
                    .link_name()
                    .map_err(|e| bad(e.to_string()))?
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if clean_path(&t).starts_with("..") {
                    return Err(bad(format!(
                        "hard link {name:?} points outside the destination"
                    )));
                }
                let t = clean_path(&format!("/{t}"));
                EntryKind::Hardlink {
                    target: join_rel(dest, t.trim_start_matches('/')),
                }
            }
            other => {
                tracing::warn!(entry = %name, kind = ?other, "ADD {origin}: skipping special archive entry");
                continue;
            }
        };
        let mode = if matches!(kind, EntryKind::Symlink { .. }) {
            0o777
        } else {
            mode
        };
        set.put(LayerEntry {
            path: target,
            kind,
            mode,
            uid,
            gid,
            mtime,
            existing_parent: false,
        })?;
    }
    Ok(())
}

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

    #[test]
    fn plain_files_are_not_archives() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'x'; 2000]).unwrap();
        assert_eq!(detect_archive(&p).unwrap(), None);
        // gzip of a non-tar is not an archive either.
        let gz = dir.path().join("g");
        let mut e = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        e.write_all(&[b'y'; 1000]).unwrap();
        e.finish().unwrap();
        assert_eq!(detect_archive(&gz).unwrap(), None);
    }
}
