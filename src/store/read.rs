//! Typed reads and writes of manifests, indexes and configs on top of raw blobs.

use crate::image::{
    AnyManifest, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, Platform, mediatype,
    to_canonical_json,
};

use super::{Error, Store};

/// A single-platform image loaded from the store.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// Descriptor of the image manifest (not of the index it may have been picked from).
    pub manifest_descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The parsed config.
    pub config: ImageConfig,
}

impl Store {
    /// Reads and parses a manifest or index blob.
    pub fn read_manifest(&self, digest: &Digest) -> Result<AnyManifest, Error> {
        let bytes = self.read_blob(digest)?;
        AnyManifest::parse(&bytes).map_err(|source| Error::Manifest {
            digest: digest.clone(),
            source,
        })
    }

    /// Reads and parses an image config blob.
    pub fn read_config(&self, digest: &Digest) -> Result<ImageConfig, Error> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Config {
            digest: digest.clone(),
            source,
        })
    }

    /// Loads manifest + config for `digest`. If it is an index, picks the manifest for
    /// `platform` (default: the host platform); attestation entries (`unknown/unknown`) are
    /// never picked.
    pub fn read_image(
        &self,
        digest: &Digest,
        platform: Option<&Platform>,
    ) -> Result<LoadedImage, Error> {
        let (desc, manifest) = match self.read_manifest(digest)? {
            AnyManifest::Image(m) => {
                let size = self.blob_size(digest)?;
                let desc = Descriptor::new(m.effective_media_type(), digest.clone(), size);
                (desc, m)
            }
            AnyManifest::Index(index) => {
                let want = platform.cloned().unwrap_or_else(Platform::host);
                let child = index.select_platform(&want, false).ok_or_else(|| {
                    Error::NoMatchingPlatform {
                        digest: digest.clone(),
                        platform: want.to_string(),
                    }
                })?;
                match self.read_manifest(&child.digest)? {
                    AnyManifest::Image(m) => (child.clone(), m),
                    AnyManifest::Index(_) => {
                        return Err(Error::NoMatchingPlatform {
                            digest: digest.clone(),
                            platform: format!("{want} (nested indexes are not supported yet)"),
                        });
                    }
                }
            }
        };
        let config = self.read_config(&manifest.config.digest)?;
        Ok(LoadedImage {
            manifest_descriptor: desc,
            manifest,
            config,
        })
    }

    /// Stores a config as canonical JSON; returns its OCI descriptor.
    pub fn put_config(&self, config: &ImageConfig) -> Result<Descriptor, Error> {
        let (bytes, _) = to_canonical_json(config).map_err(|source| Error::Serialize {
            what: "image config",
            source,
        })?;
        let digest = self.write_blob(&bytes)?;
        Ok(Descriptor::new(
            mediatype::OCI_CONFIG,
            digest,
            bytes.len() as u64,
        ))
    }

    /// Stores a manifest as canonical JSON; returns its descriptor.
    pub fn put_manifest(&self, manifest: &ImageManifest) -> Result<Descriptor, Error> {
        let (bytes, _) = to_canonical_json(manifest).map_err(|source| Error::Serialize {
            what: "image manifest",
            source,
        })?;
        let digest = self.write_blob(&bytes)?;
        Ok(Descriptor::new(
            manifest.effective_media_type(),
            digest,
            bytes.len() as u64,
        ))
    }

    /// Stores an index as canonical JSON; returns its descriptor.
    pub fn put_index(&self, index: &ImageIndex) -> Result<Descriptor, Error> {
        let (bytes, _) = to_canonical_json(index).map_err(|source| Error::Serialize {
            what: "image index",
            source,
        })?;
        let digest = self.write_blob(&bytes)?;
        Ok(Descriptor::new(
            index.effective_media_type(),
            digest,
            bytes.len() as u64,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let root = tempfile::tempdir().unwrap();
        let s = Store::open(root.path()).unwrap();
        (root, s)
    }

    fn image(store: &Store, arch: &str) -> Descriptor {
        let cfg = ImageConfig {
            architecture: arch.into(),
            os: "linux".into(),
            ..Default::default()
        };
        let c = store.put_config(&cfg).unwrap();
        store
            .put_manifest(&ImageManifest::new_oci(c, vec![]))
            .unwrap()
    }

    #[test]
    fn read_image_picks_platform_from_index() {
        let (_root, s) = store();
        let mut amd = image(&s, "amd64");
        amd.platform = Some("linux/amd64".parse().unwrap());
        let mut arm = image(&s, "arm64");
        arm.platform = Some("linux/arm64".parse().unwrap());
        let idx = s
            .put_index(&ImageIndex::new_oci(vec![amd, arm.clone()]))
            .unwrap();
        let want: Platform = "linux/arm64".parse().unwrap();
        let img = s.read_image(&idx.digest, Some(&want)).unwrap();
        assert_eq!(img.config.architecture, "arm64");
        assert_eq!(img.manifest_descriptor.digest, arm.digest);
        let none: Platform = "linux/s390x".parse().unwrap();
        assert!(matches!(
            s.read_image(&idx.digest, Some(&none)),
            Err(Error::NoMatchingPlatform { .. })
        ));
    }

    #[test]
    fn names_resolve_by_name_digest_and_id_prefix() {
        let (_root, s) = store();
        let m = image(&s, "amd64");
        let rec = s
            .put_image("docker.io/library/a:latest", &m.digest)
            .unwrap();
        assert_eq!(s.resolve("docker.io/library/a:latest").unwrap(), rec);
        assert_eq!(s.resolve(&rec.id.to_string()).unwrap().id, rec.id);
        assert_eq!(s.resolve(&m.digest.to_string()).unwrap().id, rec.id);
        assert_eq!(s.resolve(&rec.id.hex()[..6]).unwrap().id, rec.id);
        assert!(matches!(s.resolve("zzz"), Err(Error::ImageNotFound(_))));
        s.put_image("docker.io/library/b:latest", &m.digest)
            .unwrap();
        assert_eq!(s.list_images().unwrap().len(), 2);
        s.remove_name("docker.io/library/a:latest").unwrap();
        assert!(s.remove_name("docker.io/library/a:latest").is_err());
        assert_eq!(s.list_images().unwrap().len(), 1);
    }
}
