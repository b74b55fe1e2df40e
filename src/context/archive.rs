//! ADD's local archives: tar streams detected by content (gzip, bzip2, xz, zstd or plain) as
//! docker does, and extracted into the destination as layer entries with the archive's own
//! modes, owners, times and PAX xattrs; content is staged in a temporary directory.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ContextError;
use super::dockerignore::clean_path;
use super::entry::{EntryKind, EntrySet, LayerEntry, Mtime};
use super::select::join_rel;

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

pub(crate) static STAGED: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn staged_path(stage: &Path) -> PathBuf {
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
        // Where the layer writer finds a directory's xattrs: an empty staged directory.
        let mut dir_xattrs = None;
        let kind = match header.entry_type() {
            tar::EntryType::Directory => {
                let xattrs = pax_xattrs(&mut entry).map_err(|e| bad(format!("{name}: {e}")))?;
                if !xattrs.is_empty() {
                    let staged = staged_path(stage);
                    std::fs::create_dir(&staged).map_err(|e| ContextError::io(&staged, e))?;
                    for (key, value) in xattrs {
                        if let Err(e) = xattr::set(&staged, &key, &value) {
                            tracing::warn!(entry = %name, xattr = %key, "ADD {origin}: not kept: {e}");
                        }
                    }
                    dir_xattrs = Some(staged);
                }
                EntryKind::Dir
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let xattrs = pax_xattrs(&mut entry).map_err(|e| bad(format!("{name}: {e}")))?;
                let staged = staged_path(stage);
                let mut out = File::create(&staged).map_err(|e| ContextError::io(&staged, e))?;
                let size =
                    std::io::copy(&mut entry, &mut out).map_err(|e| bad(format!("{name}: {e}")))?;
                // The layer writer reads xattrs from the staged file, as from a context file.
                for (key, value) in xattrs {
                    if let Err(e) = xattr::set(&staged, &key, &value) {
                        // Docker's untar also skips what the file system or the user cannot
                        // set (e.g. `security.*` without CAP_SETFCAP).
                        tracing::warn!(entry = %name, xattr = %key, "ADD {origin}: not kept: {e}");
                    }
                }
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
        let xattrs_from = match &kind {
            EntryKind::File { source, .. } => Some(source.clone()),
            _ => dir_xattrs,
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
            xattrs_from,
        })?;
    }
    Ok(())
}

/// The `SCHILY.xattr.*` records of a tar entry's PAX header, as `(name, value)`.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
