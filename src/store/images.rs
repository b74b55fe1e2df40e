//! Image records: the versioned tag index (`index-v1.json`) mapping names to manifests, the
//! OCI `index.json` mirror, and docker-style lookup by name, digest or unique ID prefix.
//! Every change is a read-modify-write under the exclusive `index.lock`.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::blob::write_file_atomic;
use super::{Error, Store, lock};
use crate::image::{AnyManifest, Descriptor, Digest, ImageIndex, to_canonical_json};

const INDEX_VERSION: u32 = 1;
const INDEX_FILE: &str = "index-v1.json";
/// The OCI annotation carrying an image's name in `index.json` and OCI archives.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for the full image name (podman and nerdctl read it too).
pub(crate) const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One image in the store: an optional name and the manifest (or index) it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Fully normalised reference (`docker.io/library/app:latest`); `None` for an unnamed build
    /// result (docker's `<none>:<none>`).
    pub name: Option<String>,
    /// The manifest or index the name points at.
    pub target: Descriptor,
    /// Image ID: the config digest for a single-platform image, the index digest for an index
    /// (as docker's containerd store does).
    pub id: Digest,
    /// When this name was last set, seconds since the Unix epoch.
    pub updated_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct TagIndex {
    version: u32,
    images: Vec<ImageRecord>,
}

impl Store {
    fn tag_index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    pub(crate) fn load_tag_index(&self) -> Result<TagIndex, Error> {
        let path = self.tag_index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TagIndex {
                    version: INDEX_VERSION,
                    images: Vec::new(),
                });
            }
            Err(e) => {
                return Err(Error::Io {
                    op: "read",
                    path,
                    source: e,
                });
            }
        };
        let index: TagIndex =
            serde_json::from_slice(&bytes).map_err(|source| Error::CorruptFile {
                path: path.clone(),
                source,
            })?;
        if index.version != INDEX_VERSION {
            return Err(Error::IndexVersion {
                path,
                found: index.version,
                expected: INDEX_VERSION,
            });
        }
        Ok(index)
    }

    /// Runs `change` on the tag index under the exclusive index lock, then writes the tag index
    /// and the OCI `index.json` mirror atomically.
    pub(crate) fn update_tag_index<T>(
        &self,
        change: impl FnOnce(&mut Vec<ImageRecord>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _guard = lock::exclusive(&self.dir.join("index.lock"))?;
        let mut index = self.load_tag_index()?;
        index.version = INDEX_VERSION;
        let out = change(&mut index.images)?;
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| Error::Serialize {
            what: "tag index",
            source,
        })?;
        write_file_atomic(&self.tag_index_path(), &bytes)?;
        self.write_oci_index(&index)?;
        Ok(out)
    }

    /// Rewrites `index.json` so the store stays a valid OCI layout that lists every image.
    pub(crate) fn write_oci_index(&self, index: &TagIndex) -> Result<(), Error> {
        let mut manifests = Vec::new();
        for rec in &index.images {
            let mut desc = rec.target.clone();
            if let Some(name) = &rec.name {
                desc.annotations.insert(REF_NAME.to_string(), name.clone());
                desc.annotations
                    .insert(CONTAINERD_NAME.to_string(), name.clone());
            }
            manifests.push(desc);
        }
        let oci = ImageIndex::new_oci(manifests);
        let (bytes, _) = to_canonical_json(&oci).map_err(|source| Error::Serialize {
            what: "OCI index.json",
            source,
        })?;
        write_file_atomic(&self.dir.join("index.json"), &bytes)
    }

    /// Describes a stored manifest or index: its descriptor and the image ID it gives.
    pub fn describe_manifest(&self, digest: &Digest) -> Result<(Descriptor, Digest), Error> {
        let bytes = self.read_blob(digest)?;
        let manifest = AnyManifest::parse(&bytes).map_err(|source| Error::Manifest {
            digest: digest.clone(),
            source,
        })?;
        let id = match &manifest {
            AnyManifest::Image(m) => m.config.digest.clone(),
            AnyManifest::Index(_) => digest.clone(),
        };
        let desc = Descriptor::new(manifest.media_type(), digest.clone(), bytes.len() as u64);
        Ok((desc, id))
    }

    /// Points `name` (a fully normalised reference) at a stored manifest or index, replacing
    /// whatever it named before. The manifest blob must already be in the store.
    pub fn put_image(&self, name: &str, manifest_digest: &Digest) -> Result<ImageRecord, Error> {
        let (target, id) = self.describe_manifest(manifest_digest)?;
        let record = ImageRecord {
            name: Some(name.to_string()),
            target,
            id,
            updated_at: now(),
        };
        let named = self.update_tag_index(|images| {
            // Naming the same manifest again (a no-change rebuild) changes nothing, not even
            // the time: docker keeps such an image's age too, and the index is not rewritten.
            if let Some(same) = images.iter().find(|r| {
                r.name.as_deref() == Some(name) && r.target == record.target && r.id == record.id
            }) {
                return Ok(same.clone());
            }
            images.retain(|r| {
                r.name.as_deref() != Some(name)
                    && !(r.name.is_none() && r.target.digest == *manifest_digest)
            });
            images.push(record.clone());
            Ok(record.clone())
        })?;
        tracing::debug!(name, digest = %manifest_digest, "image named");
        Ok(named)
    }

    /// Records a build result that has no name (`<none>:<none>`), so it can be found by ID and
    /// survives `prune` of blobs until the next image prune. No-op if something already points
    /// at this manifest.
    pub fn put_unnamed_image(&self, manifest_digest: &Digest) -> Result<ImageRecord, Error> {
        let (target, id) = self.describe_manifest(manifest_digest)?;
        let record = ImageRecord {
            name: None,
            target,
            id,
            updated_at: now(),
        };
        self.update_tag_index(|images| {
            if let Some(existing) = images.iter().find(|r| r.target.digest == *manifest_digest) {
                return Ok(existing.clone());
            }
            images.push(record.clone());
            Ok(record)
        })
    }

    /// All image records, in the order they were named.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, Error> {
        Ok(self.load_tag_index()?.images)
    }

    /// Finds an image as docker does: exact name, then a full digest (manifest digest or ID),
    /// then a unique hex prefix of an image ID (with or without `sha256:`).
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord, Error> {
        let images = self.list_images()?;
        if let Some(r) = images
            .iter()
            .find(|r| r.name.as_deref() == Some(name_or_id))
        {
            return Ok(r.clone());
        }
        if let Ok(d) = name_or_id.parse::<Digest>() {
            let by_digest = images
                .iter()
                .filter(|r| r.id == d || r.target.digest == d)
                .min_by_key(|r| r.name.is_none());
            return by_digest
                .cloned()
                .ok_or_else(|| Error::ImageNotFound(name_or_id.to_string()));
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        let is_hex = !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex {
            let ids: BTreeSet<&Digest> = images
                .iter()
                .filter(|r| r.id.hex().starts_with(prefix))
                .map(|r| &r.id)
                .collect();
            match ids.len() {
                0 => {}
                1 => {
                    let id = *ids.iter().next().expect("one id");
                    let rec = images
                        .iter()
                        .filter(|r| &r.id == id)
                        .min_by_key(|r| r.name.is_none())
                        .expect("record for id");
                    return Ok(rec.clone());
                }
                _ => {
                    return Err(Error::AmbiguousId {
                        prefix: name_or_id.to_string(),
                        matches: ids.iter().map(|d| d.short().to_string()).collect(),
                    });
                }
            }
        }
        Err(Error::ImageNotFound(name_or_id.to_string()))
    }

    /// Removes one name. Blobs stay until `prune`. Errors if the name is unknown.
    pub fn remove_name(&self, name: &str) -> Result<ImageRecord, Error> {
        self.update_tag_index(|images| {
            let pos = images
                .iter()
                .position(|r| r.name.as_deref() == Some(name))
                .ok_or_else(|| Error::ImageNotFound(name.to_string()))?;
            Ok(images.remove(pos))
        })
    }

    /// Removes every record (named or not) whose image ID is `id`; returns what was removed.
    pub fn remove_id(&self, id: &Digest) -> Result<Vec<ImageRecord>, Error> {
        self.update_tag_index(|images| {
            let (gone, keep): (Vec<_>, Vec<_>) = images.drain(..).partition(|r| r.id == *id);
            *images = keep;
            if gone.is_empty() {
                return Err(Error::ImageNotFound(id.to_string()));
            }
            Ok(gone)
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
