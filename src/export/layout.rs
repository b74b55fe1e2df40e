//! Writing an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) into either a tar
//! stream or a directory, and collecting the blobs an image needs. Shared by the OCI and Docker
//! archive exporters.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::Error;
use crate::image::{AnyManifest, Descriptor, Digest, mediatype};
use crate::store::Store;

/// Where layout files go.
pub(crate) enum LayoutSink<W: Write> {
    /// A tar stream (archive file or stdout). Headers are deterministic: mtime 0, root-owned.
    Tar(tar::Builder<W>),
    /// A directory on disk.
    Dir(PathBuf),
}

impl<W: Write> LayoutSink<W> {
    /// Starts a tar layout with the `blobs/` and `blobs/sha256/` directory entries.
    pub(crate) fn tar(out: W) -> Result<LayoutSink<W>, Error> {
        let mut b = tar::Builder::new(out);
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = header(tar::EntryType::Directory, 0, 0o755);
            b.append_data(&mut h, dir, io::empty())
                .map_err(|e| Error::Write {
                    what: "tar entry",
                    source: e,
                })?;
        }
        Ok(LayoutSink::Tar(b))
    }

    /// Starts a directory layout at `dir` (created if missing).
    pub(crate) fn dir(dir: &Path) -> Result<LayoutSink<W>, Error> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|e| Error::io("create directory", &blobs, e))?;
        Ok(LayoutSink::Dir(dir.to_path_buf()))
    }

    /// Adds a small metadata file (`index.json`, `manifest.json`, ...).
    pub(crate) fn put_file(&mut self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        match self {
            LayoutSink::Tar(b) => {
                let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
                b.append_data(&mut h, rel, bytes).map_err(|e| Error::Write {
                    what: "tar entry",
                    source: e,
                })
            }
            LayoutSink::Dir(dir) => {
                let path = dir.join(rel);
                write_atomic(&path, bytes)
            }
        }
    }

    /// Copies a blob from the store to `blobs/sha256/<hex>`.
    pub(crate) fn put_blob(&mut self, store: &Store, digest: &Digest) -> Result<(), Error> {
        let rel = format!("blobs/sha256/{}", digest.hex());
        match self {
            LayoutSink::Tar(b) => {
                let size = store.blob_size(digest)?;
                let file = store.open_blob(digest)?;
                let mut h = header(tar::EntryType::Regular, size, 0o644);
                b.append_data(&mut h, &rel, file).map_err(|e| Error::Write {
                    what: "tar entry",
                    source: e,
                })
            }
            LayoutSink::Dir(dir) => {
                let dst = dir.join(&rel);
                if dst.exists() {
                    return Ok(());
                }
                // Store blobs are immutable, so a hard link is safe and free; copy across
                // filesystems.
                if fs::hard_link(store.blob_path(digest), &dst).is_ok() {
                    return Ok(());
                }
                let mut src = store.open_blob(digest)?;
                let tmp = dst.with_extension("tmp");
                let mut out = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
                io::copy(&mut src, &mut out).map_err(|e| Error::io("write", &tmp, e))?;
                out.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
                fs::rename(&tmp, &dst).map_err(|e| Error::io("rename into", &dst, e))
            }
        }
    }

    /// Ends the tar stream (writes the trailer) and returns the writer.
    pub(crate) fn finish(self) -> Result<Option<W>, Error> {
        match self {
            LayoutSink::Tar(b) => b.into_inner().map(Some).map_err(|e| Error::Write {
                what: "tar trailer",
                source: e,
            }),
            LayoutSink::Dir(_) => Ok(None),
        }
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))
}

/// Every blob reachable from `root` (itself included), parents before children, each once.
/// Layers and configs missing from the store are an error: an archive must be complete.
pub(crate) fn collect_blobs(store: &Store, root: &Descriptor) -> Result<Vec<Digest>, Error> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(desc) = stack.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        if !store.has_blob(&desc.digest) {
            return Err(Error::Store(crate::store::Error::BlobNotFound(desc.digest)));
        }
        if mediatype::is_manifest(&desc.media_type) || mediatype::is_index(&desc.media_type) {
            let children = match store.read_manifest(&desc.digest)? {
                AnyManifest::Image(m) => std::iter::once(m.config).chain(m.layers).collect(),
                AnyManifest::Index(i) => i.manifests,
            };
            stack.extend(children.into_iter().rev());
        }
        out.push(desc.digest);
    }
    Ok(out)
}
