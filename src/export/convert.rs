//! Rewrites an image before export: Docker schema 2 ↔ OCI media types (`oci-mediatypes=`) and
//! layer recompression (`force-compression=true`). Rewritten manifests and layers are new blobs
//! in the store, so the result has new digests; untouched images keep theirs.

use std::io::{self, Read, Write};

use super::Error;
use crate::image::{AnyManifest, Descriptor, ImageIndex, ImageManifest, mediatype};
use crate::layer::{Compression, open_decompressed};
use crate::store::Store;

/// What the exported image should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertOptions {
    /// OCI media types (true) or Docker schema 2 (false).
    pub oci_mediatypes: bool,
    /// Recompress every layer that is not already in this compression.
    pub force_compression: Option<Compression>,
}

/// Converts the image or index behind `desc`; returns `desc` itself when nothing changes.
pub fn convert_image(
    store: &Store,
    desc: &Descriptor,
    opts: &ConvertOptions,
) -> Result<Descriptor, Error> {
    match store.read_manifest(&desc.digest)? {
        AnyManifest::Image(m) => convert_manifest(store, desc, m, opts),
        AnyManifest::Index(index) => {
            let mut changed = false;
            let mut manifests = Vec::with_capacity(index.manifests.len());
            for child in &index.manifests {
                let new = if mediatype::is_manifest(&child.media_type)
                    || mediatype::is_index(&child.media_type)
                {
                    convert_image(store, child, opts)?
                } else {
                    child.clone()
                };
                changed |= new != *child;
                manifests.push(new);
            }
            let media_type = family(index.effective_media_type(), opts.oci_mediatypes);
            changed |= index.media_type.as_deref() != Some(media_type);
            if !changed {
                return Ok(desc.clone());
            }
            let new_index = ImageIndex {
                media_type: Some(media_type.to_string()),
                manifests,
                ..index
            };
            let stored = store.put_index(&new_index)?;
            Ok(Descriptor {
                media_type: stored.media_type,
                digest: stored.digest,
                size: stored.size,
                ..desc.clone()
            })
        }
    }
}

fn convert_manifest(
    store: &Store,
    desc: &Descriptor,
    manifest: ImageManifest,
    opts: &ConvertOptions,
) -> Result<Descriptor, Error> {
    let mut m = manifest.clone();
    m.media_type = Some(family(manifest.effective_media_type(), opts.oci_mediatypes).to_string());
    m.config.media_type = family(&m.config.media_type, opts.oci_mediatypes).to_string();
    for layer in &mut m.layers {
        if let Some(want) = opts.force_compression
            && Compression::from_media_type(&layer.media_type).map(|c| c.name())
                != Some(want.name())
        {
            *layer = recompress(store, layer, want)?;
        }
        layer.media_type = family(&layer.media_type, opts.oci_mediatypes).to_string();
    }
    if m == manifest {
        return Ok(desc.clone());
    }
    let stored = store.put_manifest(&m)?;
    Ok(Descriptor {
        media_type: stored.media_type,
        digest: stored.digest,
        size: stored.size,
        ..desc.clone()
    })
}

fn family(media_type: &str, oci: bool) -> &str {
    if oci {
        mediatype::to_oci(media_type)
    } else {
        mediatype::to_docker(media_type)
    }
}

/// Decompresses a layer and compresses it again as `to`; the diffID is unchanged.
fn recompress(store: &Store, layer: &Descriptor, to: Compression) -> Result<Descriptor, Error> {
    let layer_err = |source| Error::Layer {
        digest: layer.digest.clone(),
        source,
    };
    let src = store.open_blob(&layer.digest)?;
    let mut plain = open_decompressed(src).map_err(layer_err)?;
    let writer = store.blob_writer()?;
    let write_err = |source| Error::Write {
        what: "recompressed layer",
        source,
    };
    let writer = match to {
        Compression::Gzip { level } => {
            let mut enc = flate2::write::GzEncoder::new(writer, flate2::Compression::new(level));
            copy(&mut plain, &mut enc).map_err(write_err)?;
            enc.finish().map_err(write_err)?
        }
        Compression::Zstd { level } => {
            let mut enc = zstd::Encoder::new(writer, level).map_err(write_err)?;
            copy(&mut plain, &mut enc).map_err(write_err)?;
            enc.finish().map_err(write_err)?
        }
        Compression::Uncompressed => {
            let mut w = writer;
            copy(&mut plain, &mut w).map_err(write_err)?;
            w
        }
    };
    let (digest, size) = writer.commit(None)?;
    tracing::debug!(from = %layer.digest, to = %digest, compression = to.name(), "recompressed layer");
    Ok(Descriptor {
        media_type: to.oci_media_type().to_string(),
        digest,
        size,
        ..layer.clone()
    })
}

fn copy(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    io::copy(r, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageConfig;

    fn docker_image(store: &Store) -> Descriptor {
        let cfg = store
            .put_config(&ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                ..Default::default()
            })
            .unwrap();
        let layer = store.write_blob(b"not really a tar").unwrap();
        let mut m = ImageManifest::new_oci(
            Descriptor::new(mediatype::DOCKER_CONFIG, cfg.digest, cfg.size),
            vec![Descriptor::new(mediatype::DOCKER_LAYER_TAR, layer, 16)],
        );
        m.media_type = Some(mediatype::DOCKER_MANIFEST.to_string());
        store.put_manifest(&m).unwrap()
    }

    #[test]
    fn media_type_conversion_round_trips_to_the_same_digest() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let docker = docker_image(&store);
        let to_oci = ConvertOptions {
            oci_mediatypes: true,
            force_compression: None,
        };
        let oci = convert_image(&store, &docker, &to_oci).unwrap();
        assert_eq!(oci.media_type, mediatype::OCI_MANIFEST);
        let AnyManifest::Image(m) = store.read_manifest(&oci.digest).unwrap() else {
            panic!("expected an image manifest");
        };
        assert_eq!(m.config.media_type, mediatype::OCI_CONFIG);
        assert_eq!(m.layers[0].media_type, mediatype::OCI_LAYER_TAR);
        assert_eq!(convert_image(&store, &oci, &to_oci).unwrap(), oci, "no-op");

        let to_docker = ConvertOptions {
            oci_mediatypes: false,
            force_compression: None,
        };
        let back = convert_image(&store, &oci, &to_docker).unwrap();
        assert_eq!(back.digest, docker.digest);
    }

    #[test]
    fn index_children_are_converted_and_keep_their_platform() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let mut child = docker_image(&store);
        child.platform = Some("linux/amd64".parse().unwrap());
        let mut index = ImageIndex::new_oci(vec![child.clone()]);
        index.media_type = Some(mediatype::DOCKER_MANIFEST_LIST.to_string());
        let list = store.put_index(&index).unwrap();
        let opts = ConvertOptions {
            oci_mediatypes: true,
            force_compression: None,
        };
        let oci = convert_image(&store, &list, &opts).unwrap();
        assert_eq!(oci.media_type, mediatype::OCI_INDEX);
        let AnyManifest::Index(i) = store.read_manifest(&oci.digest).unwrap() else {
            panic!("expected an index");
        };
        assert_eq!(i.manifests[0].platform, child.platform);
        assert_eq!(i.manifests[0].media_type, mediatype::OCI_MANIFEST);
        assert_ne!(i.manifests[0].digest, child.digest);
    }
}
