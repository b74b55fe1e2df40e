//! `cache-mounts=true`: the contents of `RUN --mount=type=cache` directories
//! (`<root>/cache-mounts/<sha256(id)>/data`, see [`crate::exec::CacheMounts`]) as gzip tar
//! layers of a shared cache, and their restoration on a root that has no such directory yet.
//!
//! The tar is written in sorted order with each file's own mode, owner and mtime (tools such
//! as cargo trust mtimes in their caches) and a gzip header without a time, so unchanged
//! contents give the same blob and a repeated export sends nothing.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::cache_format::{CacheShareError, MOUNT_ID_ANNOTATION};
use crate::image::{Descriptor, Digest, mediatype};
use crate::store::Store;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheShareError + '_ {
    move |source| CacheShareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<root>/cache-mounts`, as the executor lays it out.
fn mounts_dir(root: &Path) -> PathBuf {
    root.join("cache-mounts")
}

/// The `data` directory of cache `id` (the shared instance every step uses by default).
fn data_dir(root: &Path, id: &str) -> PathBuf {
    mounts_dir(root)
        .join(Digest::of(id.as_bytes()).hex())
        .join("data")
}

/// Whether the cache directory recorded as `key` belongs to mount id `id`: the id itself, or
/// the id of a `from=` cache, which the executor keys as `<id>\0from=...`.
fn belongs_to(key: &str, ids: &BTreeSet<String>) -> bool {
    let id = key.split('\0').next().unwrap_or(key);
    ids.contains(id)
}

/// Writes the cache mounts of `root` whose id is in `ids` as layer blobs into `store`;
/// returns their descriptors (annotated with the mount id), sorted by id.
pub(crate) fn export(
    root: &Path,
    store: &Store,
    ids: &BTreeSet<String>,
) -> Result<Vec<Descriptor>, CacheShareError> {
    let dir = mounts_dir(root);
    let Ok(read) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for e in read.flatten() {
        let id_file = e.path().join("id");
        let data = e.path().join("data");
        if let Ok(id) = fs::read_to_string(&id_file)
            && data.is_dir()
            && belongs_to(&id, ids)
        {
            found.push((id, data));
        }
    }
    found.sort();
    let mut out = Vec::new();
    for (id, data) in found {
        let mut desc = tar_dir(&data, store)?;
        desc.annotations.insert(MOUNT_ID_ANNOTATION.into(), id);
        out.push(desc);
    }
    Ok(out)
}

fn tar_dir(dir: &Path, store: &Store) -> Result<Descriptor, CacheShareError> {
    let store_err = |e: crate::store::Error| CacheShareError::Store {
        digest: Digest::of(b""),
        message: e.to_string(),
    };
    let sink = store.blob_writer().map_err(store_err)?;
    let gz = flate2::GzBuilder::new().write(sink, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    // The directory itself comes first as `.`, so its mode and owner (which the sandbox's
    // user must be able to write) travel too.
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| CacheShareError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        let path = entry.path();
        let rel = path
            .strip_prefix(dir)
            .expect("walkdir stays below its root");
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
        let mut header = tar::Header::new_ustar();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err(path))?;
            header.set_size(0);
            tar.append_link(&mut header, rel, &target)
                .map_err(io_err(path))?;
        } else if ft.is_dir() {
            header.set_size(0);
            tar.append_data(&mut header, rel, std::io::empty())
                .map_err(io_err(path))?;
        } else if ft.is_file() {
            let f = fs::File::open(path).map_err(io_err(path))?;
            tar.append_data(&mut header, rel, f).map_err(io_err(path))?;
        }
        // Sockets, fifos and devices are not cache contents worth carrying.
    }
    let gz = tar.into_inner().map_err(io_err(dir))?;
    let mut sink = gz.finish().map_err(io_err(dir))?;
    sink.flush().map_err(io_err(dir))?;
    let (digest, size) = sink.commit(None).map_err(store_err)?;
    Ok(Descriptor::new(mediatype::OCI_LAYER_GZIP, digest, size))
}

/// Whether cache `id` already has contents on `root` (then an import leaves it alone).
pub(crate) fn exists(root: &Path, id: &str) -> bool {
    data_dir(root, id).is_dir()
}

/// Unpacks the stored mount layer `desc` as cache `id` of `root`, unless that cache already
/// exists. The directory appears whole or not at all (unpacked beside it, then renamed).
pub(crate) fn restore(
    root: &Path,
    store: &Store,
    id: &str,
    desc: &Descriptor,
) -> Result<bool, CacheShareError> {
    let target = data_dir(root, id);
    if target.is_dir() {
        return Ok(false);
    }
    let parent = target.parent().expect("data dir has a parent");
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    fs::write(parent.join("id"), id).map_err(io_err(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    let blob = store
        .open_blob(&desc.digest)
        .map_err(|e| CacheShareError::Store {
            digest: desc.digest.clone(),
            message: e.to_string(),
        })?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    // Ownership can only be given back by root; an unprivileged builder owns everything, which
    // is also what its sandbox's root sees.
    archive.set_preserve_ownerships(rustix::process::geteuid().is_root());
    let as_root = rustix::process::geteuid().is_root();
    for entry in archive.entries().map_err(io_err(tmp.path()))? {
        let mut entry = entry.map_err(io_err(tmp.path()))?;
        let is_top = entry
            .path()
            .map(|p| p.as_os_str() == "." || p.as_os_str() == "./")
            .unwrap_or(false);
        if !is_top {
            entry.unpack_in(tmp.path()).map_err(io_err(tmp.path()))?;
            continue;
        }
        let h = entry.header();
        let mode = h.mode().map_err(io_err(tmp.path()))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io_err(tmp.path()))?;
        if as_root && let (Ok(uid), Ok(gid)) = (h.uid(), h.gid()) {
            std::os::unix::fs::chown(tmp.path(), Some(uid as u32), Some(gid as u32))
                .map_err(io_err(tmp.path()))?;
        }
    }
    let unpacked = tmp.keep();
    if let Err(e) = fs::rename(&unpacked, &target) {
        let _ = fs::remove_dir_all(&unpacked);
        if target.is_dir() {
            // Another build restored it first.
            return Ok(false);
        }
        return Err(io_err(&target)(e));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_round_trip_and_repeat_exports_are_identical() {
        let a = tempfile::tempdir().unwrap();
        let store = Store::open(&a.path().join("store")).unwrap();
        let data = data_dir(a.path(), "/root/.cache");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("sub/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/f", data.join("link")).unwrap();
        fs::write(data.parent().unwrap().join("id"), "/root/.cache").unwrap();
        let ids: BTreeSet<String> = ["/root/.cache".to_string()].into();
        let first = export(a.path(), &store, &ids).unwrap();
        let second = export(a.path(), &store, &ids).unwrap();
        assert!(
            export(a.path(), &store, &BTreeSet::new())
                .unwrap()
                .is_empty()
        );
        assert_eq!(first, second);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].annotations[MOUNT_ID_ANNOTATION], "/root/.cache");

        let b = tempfile::tempdir().unwrap();
        assert!(!exists(b.path(), "/root/.cache"));
        assert!(restore(b.path(), &store, "/root/.cache", &first[0]).unwrap());
        let got = data_dir(b.path(), "/root/.cache");
        assert_eq!(fs::read(got.join("sub/f")).unwrap(), b"hello");
        assert_eq!(
            fs::read_link(got.join("link")).unwrap(),
            PathBuf::from("sub/f")
        );
        // An existing cache is never overwritten.
        assert!(!restore(b.path(), &store, "/root/.cache", &first[0]).unwrap());
    }
}
