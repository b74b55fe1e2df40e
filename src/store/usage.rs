//! Disk usage of the content store for `rbuild du`: every blob classified by what keeps it
//! alive (a named image, an unnamed build result, the build cache's gc roots, or nothing), with
//! its size and last write time, so the command can say what `rbuild prune` would reclaim.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::time::SystemTime;

use super::blob::TEMP_PREFIX;
use super::{Error, Store};
use crate::image::{AnyManifest, Digest};

/// Manifests and indexes are small; bigger blobs are layers and never parsed.
const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// What keeps a blob in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlobOwner {
    /// Part of an image with a name: only `rbuild rmi` (or `prune --all`) lets it go.
    NamedImage,
    /// Part of an unnamed build result only: `rbuild prune` removes it.
    UnnamedImage,
    /// Kept only by a gc root (the build cache): `rbuild prune --all` removes it.
    BuildCache,
    /// Referenced by nothing (or a leftover temp file): `rbuild prune` removes it.
    Unreferenced,
}

impl BlobOwner {
    /// Whether `rbuild prune` (without `--all`) deletes blobs owned this way.
    pub fn pruned_by_default(self) -> bool {
        matches!(self, BlobOwner::UnnamedImage | BlobOwner::Unreferenced)
    }
}

/// One blob (or leftover temp file) and what keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobUsage {
    /// The blob's digest; `None` for a temp file a killed writer left behind.
    pub digest: Option<Digest>,
    /// Bytes on disk.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
    /// What keeps it.
    pub owner: BlobOwner,
}

impl Store {
    /// Every blob whose closure (manifest → config, layers, child manifests) starts at `roots`.
    pub(crate) fn closure(&self, roots: impl IntoIterator<Item = Digest>) -> BTreeSet<Digest> {
        let mut queue: VecDeque<Digest> = roots.into_iter().collect();
        let mut seen = BTreeSet::new();
        while let Some(d) = queue.pop_front() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if !self.blob_size(&d).is_ok_and(|s| s <= MAX_MANIFEST_SIZE) {
                continue;
            }
            let Ok(bytes) = self.read_blob(&d) else {
                continue;
            };
            if bytes.first() != Some(&b'{') {
                continue;
            }
            if let Ok(m) = AnyManifest::parse(&bytes) {
                queue.extend(m.children().into_iter().map(|c| c.digest.clone()));
            }
        }
        seen
    }

    /// Every blob in the store with its size and owner, sorted by owner then digest. A blob
    /// reachable several ways is listed once, under the strongest owner (named image first).
    pub fn usage(&self) -> Result<Vec<BlobUsage>, Error> {
        let images = self.list_images()?;
        let named = self.closure(
            images
                .iter()
                .filter(|r| r.name.is_some())
                .map(|r| r.target.digest.clone()),
        );
        let unnamed = self.closure(
            images
                .iter()
                .filter(|r| r.name.is_none())
                .map(|r| r.target.digest.clone()),
        );
        let cached = self.closure(self.gc_roots()?);
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(Error::io("list", self.blobs.clone()))? {
            let entry = entry.map_err(Error::io("list", self.blobs.clone()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // A blob deleted between listing and stat is simply no longer in use.
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let digest = if name.starts_with(TEMP_PREFIX) {
                None
            } else {
                format!("sha256:{name}").parse::<Digest>().ok()
            };
            let owner = match &digest {
                Some(d) if named.contains(d) => BlobOwner::NamedImage,
                Some(d) if unnamed.contains(d) => BlobOwner::UnnamedImage,
                Some(d) if cached.contains(d) => BlobOwner::BuildCache,
                _ => BlobOwner::Unreferenced,
            };
            out.push(BlobUsage {
                digest,
                size: meta.len(),
                modified,
                owner,
            });
        }
        out.sort_by(|a, b| (a.owner, &a.digest).cmp(&(b.owner, &b.digest)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Descriptor, ImageConfig, ImageManifest, mediatype};

    fn image(s: &Store, layer: &[u8]) -> Descriptor {
        let layer_digest = s.write_blob(layer).unwrap();
        let cfg = s
            .put_config(&ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                ..Default::default()
            })
            .unwrap();
        s.put_manifest(&ImageManifest::new_oci(
            cfg,
            vec![Descriptor::new(
                mediatype::OCI_LAYER_TAR,
                layer_digest,
                layer.len() as u64,
            )],
        ))
        .unwrap()
    }

    #[test]
    fn blobs_are_classified_by_their_strongest_owner() {
        let root = tempfile::tempdir().unwrap();
        let s = Store::open(root.path()).unwrap();
        let named = image(&s, b"named layer");
        s.put_image("docker.io/library/a:1", &named.digest).unwrap();
        let unnamed = image(&s, b"unnamed layer");
        s.put_unnamed_image(&unnamed.digest).unwrap();
        let cache = s.write_blob(b"cache layer").unwrap();
        // The named image's layer is also a cache root: it counts as the image's.
        let shared = s.write_blob(b"named layer").unwrap();
        s.set_gc_roots("build-cache", &[cache.clone(), shared.clone()])
            .unwrap();
        let junk = s.write_blob(b"junk").unwrap();
        fs::write(s.blobs.join(format!("{TEMP_PREFIX}dead")), b"partial").unwrap();

        let usage = s.usage().unwrap();
        let owner = |d: &Digest| {
            usage
                .iter()
                .find(|u| u.digest.as_ref() == Some(d))
                .unwrap()
                .owner
        };
        assert_eq!(owner(&named.digest), BlobOwner::NamedImage);
        assert_eq!(owner(&shared), BlobOwner::NamedImage);
        assert_eq!(owner(&unnamed.digest), BlobOwner::UnnamedImage);
        assert_eq!(owner(&cache), BlobOwner::BuildCache);
        assert_eq!(owner(&junk), BlobOwner::Unreferenced);
        let temp = usage.iter().find(|u| u.digest.is_none()).unwrap();
        assert_eq!((temp.size, temp.owner), (7, BlobOwner::Unreferenced));
        // What default prune would free is exactly what it frees.
        let expected: u64 = usage
            .iter()
            .filter(|u| u.owner.pruned_by_default())
            .map(|u| u.size)
            .sum();
        s.remove_unnamed_images(None).unwrap();
        let report = s.prune().unwrap();
        assert_eq!(report.reclaimed_bytes, expected);
    }
}
