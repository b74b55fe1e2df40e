//! `--build-context NAME=oci-layout://PATH[:TAG|@DIGEST]`: an OCI image layout directory on
//! disk (as `skopeo copy ... oci:DIR:TAG` or `-o type=oci,tar=false` write it) used as an
//! image. The layout's manifest for the build platform is imported into the content store with
//! every blob's digest verified, so the rest of the build uses it exactly like a pulled image.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use super::ContextError;
use crate::image::{AnyManifest, Descriptor, Digest, ImageIndex, Platform, mediatype};
use crate::store::Store;

/// The scheme prefix of an OCI layout named context.
pub const OCI_LAYOUT_SCHEME: &str = "oci-layout://";

/// Index annotation holding the tag (or, in rbuild's own store, the full name).
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Index annotation containerd and BuildKit use for the full image name.
const IMAGE_NAME: &str = "io.containerd.image.name";
/// Manifests and indexes are small; anything bigger is not what a descriptor claims it is.
const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// A parsed `oci-layout://` value: the layout directory and which image in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayoutRef {
    /// The layout directory (holding `oci-layout`, `index.json` and `blobs/`).
    pub dir: PathBuf,
    /// `:TAG`, matched against the index's `org.opencontainers.image.ref.name`.
    pub tag: Option<String>,
    /// `@sha256:...`: a manifest or index in the layout, by digest.
    pub digest: Option<Digest>,
}

impl OciLayoutRef {
    /// Parses `oci-layout://PATH[:TAG][@DIGEST]` (the scheme is required). A `:` belongs to the
    /// tag only after the last `/`, so `oci-layout:///a:b/c` is the directory `/a:b/c`.
    pub fn parse(value: &str) -> Result<OciLayoutRef, ContextError> {
        let bad = |reason: &str| ContextError::OciLayout {
            path: PathBuf::from(value),
            reason: reason.to_string(),
        };
        let rest = value
            .strip_prefix(OCI_LAYOUT_SCHEME)
            .ok_or_else(|| bad("expected oci-layout://PATH[:TAG][@DIGEST]"))?;
        let (rest, digest) = match rest.rsplit_once('@') {
            Some((r, d)) => {
                let d = d
                    .parse::<Digest>()
                    .map_err(|e| bad(&format!("invalid digest {d:?}: {e}")))?;
                (r, Some(d))
            }
            None => (rest, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (dir, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if dir.is_empty() {
            return Err(bad("the layout directory is empty"));
        }
        if tag.as_deref() == Some("") {
            return Err(bad("the tag after `:` is empty"));
        }
        Ok(OciLayoutRef {
            dir: PathBuf::from(dir),
            tag,
            digest,
        })
    }

    /// The value as given, for messages and progress (`oci-layout://DIR:TAG@DIGEST`).
    pub fn display(&self) -> String {
        let mut s = format!("{OCI_LAYOUT_SCHEME}{}", self.dir.display());
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    fn error(&self, reason: impl Into<String>) -> ContextError {
        ContextError::OciLayout {
            path: self.dir.clone(),
            reason: reason.into(),
        }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// Reads a small blob (manifest, index) from the layout and checks its digest.
    fn read_small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, ContextError> {
        if desc.size > MAX_MANIFEST_SIZE {
            return Err(self.error(format!(
                "{} claims {} bytes, too big for a manifest",
                desc.digest, desc.size
            )));
        }
        let path = self.blob_path(&desc.digest);
        let bytes = std::fs::read(&path).map_err(|e| ContextError::io(&path, e))?;
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(self.error(format!(
                "blob {} has digest {actual}: the layout is corrupt",
                desc.digest
            )));
        }
        Ok(bytes)
    }

    /// The `index.json` entry this reference names.
    fn select_entry(&self, index: &ImageIndex) -> Result<Descriptor, ContextError> {
        if let Some(d) = &self.digest {
            if let Some(e) = index.manifests.iter().find(|e| &e.digest == d) {
                return Ok(e.clone());
            }
            // A digest need not be listed in index.json (a child of a listed index); the blob
            // itself tells its media type once read.
            let path = self.blob_path(d);
            let size = std::fs::metadata(&path)
                .map_err(|e| ContextError::io(&path, e))?
                .len();
            return Ok(Descriptor::new(mediatype::OCI_MANIFEST, d.clone(), size));
        }
        let tagged: Vec<&Descriptor> = match &self.tag {
            Some(tag) => index
                .manifests
                .iter()
                .filter(|e| entry_has_tag(e, tag))
                .collect(),
            None => {
                let latest: Vec<&Descriptor> = index
                    .manifests
                    .iter()
                    .filter(|e| entry_has_tag(e, "latest"))
                    .collect();
                // An untagged reference means `latest`, or the only image when there is one.
                if latest.is_empty() && index.manifests.len() == 1 {
                    index.manifests.iter().collect()
                } else {
                    latest
                }
            }
        };
        let mut digests: Vec<&Digest> = tagged.iter().map(|e| &e.digest).collect();
        digests.dedup();
        match (tagged.first(), digests.len()) {
            (Some(e), 1) => Ok((*e).clone()),
            (None, _) => Err(self.error(format!(
                "no image tagged {:?} in index.json ({} entries)",
                self.tag.as_deref().unwrap_or("latest"),
                index.manifests.len()
            ))),
            _ => Err(self.error(format!(
                "{} different images are tagged {:?}; give @DIGEST",
                digests.len(),
                self.tag.as_deref().unwrap_or("latest")
            ))),
        }
    }
}

/// Whether an index.json entry carries `tag`: as its ref name (skopeo, umoci), as the tag of
/// a full name in its ref name (rbuild's store) or in `io.containerd.image.name` (BuildKit).
fn entry_has_tag(entry: &Descriptor, tag: &str) -> bool {
    let tag_of = |name: &str| {
        let last = name.rsplit('/').next().unwrap_or(name);
        last.split_once(':').map(|(_, t)| t.to_string())
    };
    let ref_name = entry.annotations.get(REF_NAME);
    ref_name.is_some_and(|r| r == tag || tag_of(r).as_deref() == Some(tag))
        || entry
            .annotations
            .get(IMAGE_NAME)
            .is_some_and(|n| tag_of(n).as_deref() == Some(tag))
}

/// Imports the image `layout` names, for `platform`, into `store`; returns the digest of the
/// single-platform manifest now in the store. Blobs already in the store are not copied again;
/// every copied blob is verified against its digest. A gc root keeps the import until the
/// store's gc roots are cleared (`rbuild prune --all`), so a rebuild does not copy it again.
pub fn import_oci_layout(
    store: &Store,
    layout: &OciLayoutRef,
    platform: &Platform,
) -> Result<Digest, ContextError> {
    let marker = layout.dir.join("oci-layout");
    if !marker.is_file() {
        return Err(layout.error("not an OCI image layout (no oci-layout file)"));
    }
    let index_path = layout.dir.join("index.json");
    let index_bytes = std::fs::read(&index_path).map_err(|e| ContextError::io(&index_path, e))?;
    let index: ImageIndex = serde_json::from_slice(&index_bytes)
        .map_err(|e| layout.error(format!("index.json: {e}")))?;
    let mut desc = layout.select_entry(&index)?;
    let _guard = store.gc_guard().map_err(|e| layout.error(e.to_string()))?;
    // Nested indexes (a tag pointing at a multi-platform index) are followed a few levels.
    for _ in 0..4 {
        let bytes = layout.read_small_blob(&desc)?;
        let parsed = AnyManifest::parse(&bytes)
            .map_err(|e| layout.error(format!("{}: {e}", desc.digest)))?;
        match parsed {
            AnyManifest::Index(child_index) => {
                desc = child_index
                    .select_platform(platform, true)
                    .ok_or_else(|| {
                        layout.error(format!(
                            "index {} has no image for platform {platform}",
                            desc.digest
                        ))
                    })?
                    .clone();
            }
            AnyManifest::Image(manifest) => {
                for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                    copy_blob(store, layout, blob)?;
                }
                let digest = store
                    .write_blob(&bytes)
                    .map_err(|e| layout.error(e.to_string()))?;
                store
                    .set_gc_roots(
                        &format!("oci-layout-{}", digest.hex()),
                        std::slice::from_ref(&digest),
                    )
                    .map_err(|e| layout.error(e.to_string()))?;
                tracing::debug!(layout = %layout.display(), %digest, "imported OCI layout image");
                return Ok(digest);
            }
        }
    }
    Err(layout.error("indexes nested more than 4 deep"))
}

/// Streams one blob from the layout into the store, verifying its digest and size.
fn copy_blob(store: &Store, layout: &OciLayoutRef, blob: &Descriptor) -> Result<(), ContextError> {
    if store.has_blob(&blob.digest) {
        return Ok(());
    }
    let path = layout.blob_path(&blob.digest);
    let mut src = File::open(&path).map_err(|e| ContextError::io(&path, e))?;
    let mut writer = store
        .blob_writer()
        .map_err(|e| layout.error(e.to_string()))?;
    copy_stream(&mut src, &mut writer).map_err(|e| ContextError::io(&path, e))?;
    if writer.size() != blob.size {
        return Err(layout.error(format!(
            "blob {} is {} bytes, the manifest says {}",
            blob.digest,
            writer.size(),
            blob.size
        )));
    }
    writer
        .commit(Some(&blob.digest))
        .map_err(|e| layout.error(format!("blob {}: {e}", blob.digest)))?;
    Ok(())
}

fn copy_stream(src: &mut File, dst: &mut impl std::io::Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_path_tag_and_digest() {
        let r = OciLayoutRef::parse("oci-layout:///tmp/lay:v1").unwrap();
        assert_eq!(
            (r.dir.to_str().unwrap(), r.tag.as_deref()),
            ("/tmp/lay", Some("v1"))
        );
        let r = OciLayoutRef::parse("oci-layout://rel/dir").unwrap();
        assert_eq!((r.dir.to_str().unwrap(), r.tag), ("rel/dir", None));
        let r = OciLayoutRef::parse("oci-layout:///a:b/c").unwrap();
        assert_eq!((r.dir.to_str().unwrap(), r.tag), ("/a:b/c", None));
        let hex = "a".repeat(64);
        let r = OciLayoutRef::parse(&format!("oci-layout:///l:t@sha256:{hex}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.digest.unwrap().hex(), hex);
        assert_eq!(
            OciLayoutRef::parse(&format!("oci-layout:///l@sha256:{hex}"))
                .unwrap()
                .display(),
            format!("oci-layout:///l@sha256:{hex}")
        );
        assert!(OciLayoutRef::parse("oci-layout://").is_err());
        assert!(OciLayoutRef::parse("oci-layout:///l:").is_err());
        assert!(OciLayoutRef::parse("oci-layout:///l@sha256:zz").is_err());
        assert!(OciLayoutRef::parse("/l").is_err());
    }

    #[test]
    fn tags_match_ref_names_and_full_names() {
        let mut d = Descriptor::new(mediatype::OCI_MANIFEST, Digest::of(b"x"), 1);
        d.annotations.insert(REF_NAME.into(), "v1".into());
        assert!(entry_has_tag(&d, "v1"));
        assert!(!entry_has_tag(&d, "v2"));
        d.annotations
            .insert(REF_NAME.into(), "localhost:5000/app:v2".into());
        assert!(entry_has_tag(&d, "v2"));
        assert!(!entry_has_tag(&d, "5000/app"));
        let mut e = Descriptor::new(mediatype::OCI_MANIFEST, Digest::of(b"y"), 1);
        e.annotations
            .insert(IMAGE_NAME.into(), "docker.io/library/app:latest".into());
        assert!(entry_has_tag(&e, "latest"));
    }

    /// A layout directory written by hand: blobs by digest, `index.json` over `top`.
    struct TestLayout {
        dir: tempfile::TempDir,
    }

    impl TestLayout {
        fn new() -> TestLayout {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
            std::fs::write(
                dir.path().join("oci-layout"),
                r#"{"imageLayoutVersion":"1.0.0"}"#,
            )
            .unwrap();
            TestLayout { dir }
        }

        fn blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
            let d = Digest::of(bytes);
            std::fs::write(self.dir.path().join("blobs/sha256").join(d.hex()), bytes).unwrap();
            Descriptor::new(media_type, d, bytes.len() as u64)
        }

        fn json(&self, media_type: &str, value: &impl serde::Serialize) -> Descriptor {
            self.blob(
                media_type,
                &crate::image::to_canonical_json(value).unwrap().0,
            )
        }

        /// An image for `arch` with one layer holding `content`.
        fn image(&self, arch: &str, content: &[u8]) -> Descriptor {
            let config = crate::image::ImageConfig {
                architecture: arch.into(),
                os: "linux".into(),
                ..Default::default()
            };
            let c = self.json(mediatype::OCI_CONFIG, &config);
            let l = self.blob(mediatype::OCI_LAYER_TAR, content);
            let m = crate::image::ImageManifest::new_oci(c, vec![l]);
            let mut d = self.json(mediatype::OCI_MANIFEST, &m);
            d.platform = Some(format!("linux/{arch}").parse().unwrap());
            d
        }

        fn index(&self, entries: Vec<Descriptor>) {
            let index = ImageIndex::new_oci(entries);
            let bytes = crate::image::to_canonical_json(&index).unwrap().0;
            std::fs::write(self.dir.path().join("index.json"), bytes).unwrap();
        }

        fn reference(&self, suffix: &str) -> OciLayoutRef {
            OciLayoutRef::parse(&format!(
                "{OCI_LAYOUT_SCHEME}{}{suffix}",
                self.dir.path().display()
            ))
            .unwrap()
        }
    }

    #[test]
    fn import_follows_tag_and_platform_through_nested_indexes() {
        let layout = TestLayout::new();
        let amd = layout.image("amd64", b"amd layer");
        let arm = layout.image("arm64", b"arm layer");
        let mut multi = layout.json(
            mediatype::OCI_INDEX,
            &ImageIndex::new_oci(vec![amd.clone(), arm.clone()]),
        );
        multi.annotations.insert(REF_NAME.into(), "v1".into());
        layout.index(vec![multi.clone()]);
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let arm64: Platform = "linux/arm64".parse().unwrap();
        let got = import_oci_layout(&store, &layout.reference(":v1"), &arm64).unwrap();
        assert_eq!(got, arm.digest);
        let img = store.read_image(&got, None).unwrap();
        assert_eq!(img.config.architecture, "arm64");
        assert!(store.has_blob(&img.manifest.layers[0].digest));
        // Only the chosen platform's blobs are copied.
        let amd_layer = Digest::of(b"amd layer");
        assert!(!store.has_blob(&amd_layer));
        // No `latest` tag and a single entry: an untagged reference takes that entry.
        let amd64: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(
            import_oci_layout(&store, &layout.reference(""), &amd64).unwrap(),
            amd.digest
        );
        // By digest of the index, or of a manifest not listed in index.json.
        let by_index = layout.reference(&format!("@{}", multi.digest));
        assert_eq!(
            import_oci_layout(&store, &by_index, &arm64).unwrap(),
            arm.digest
        );
        let by_child = layout.reference(&format!("@{}", amd.digest));
        assert_eq!(
            import_oci_layout(&store, &by_child, &arm64).unwrap(),
            amd.digest
        );
        let s390x: Platform = "linux/s390x".parse().unwrap();
        let err = import_oci_layout(&store, &layout.reference(":v1"), &s390x).unwrap_err();
        assert!(err.to_string().contains("no image for platform"), "{err}");
        let err = import_oci_layout(&store, &layout.reference(":v2"), &arm64).unwrap_err();
        assert!(err.to_string().contains("no image tagged \"v2\""), "{err}");
    }

    #[test]
    fn corrupt_blobs_are_refused_and_not_stored() {
        let layout = TestLayout::new();
        let mut img = layout.image("amd64", b"good layer");
        img.annotations.insert(REF_NAME.into(), "latest".into());
        layout.index(vec![img]);
        let layer = Digest::of(b"good layer");
        std::fs::write(
            layout.dir.path().join("blobs/sha256").join(layer.hex()),
            b"evil layer",
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let err = import_oci_layout(&store, &layout.reference(""), &amd64).unwrap_err();
        assert!(err.to_string().contains(&layer.to_string()), "{err}");
        assert!(!store.has_blob(&layer));
        let missing = TestLayout::new();
        let err = import_oci_layout(&store, &missing.reference(""), &amd64).unwrap_err();
        assert!(err.to_string().contains("index.json"), "{err}");
    }
}
