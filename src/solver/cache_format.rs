//! The shared build cache's format and the user's choice of where it lives.
//!
//! A shared cache is one plain OCI image manifest: its config (media type
//! [`CACHE_CONFIG_MEDIA_TYPE`]) lists every exported cache key with its layer, diff_id and
//! creation time, and its layers are those layer blobs plus, with `cache-mounts=true`, one tar
//! per `RUN --mount=type=cache` directory (annotated with [`MOUNT_ID_ANNOTATION`]). Registries
//! that accept custom config media types (distribution, GHCR, Docker Hub, ECR) store it like
//! any image, and an importer needs only the manifest and the config to know every key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::image::{Descriptor, Digest, ImageManifest, mediatype};
use crate::layer::Compression;
use crate::registry::Reference;

/// Media type of the cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";
/// Annotation naming the cache-mount id a mount layer holds.
pub const MOUNT_ID_ANNOTATION: &str = "dev.rbuild.cache.mount.id";

/// Where a shared cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=registry,ref=R`: a manifest in a registry repository.
    Registry(Reference),
    /// `type=local,dest=DIR` / `src=DIR`: an OCI image layout directory, the manifest
    /// named `tag` in its `index.json`.
    Local {
        /// The layout directory.
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name` of the cache manifest.
        tag: String,
    },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "registry {r}"),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// Which steps a cache export includes (BuildKit's `mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Only the steps whose layers are in the exported image (the default).
    #[default]
    Min,
    /// Every step of every stage built.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// Destination.
    pub location: CacheLocation,
    /// `mode=min|max`.
    pub mode: CacheMode,
    /// `compression=`: layers in another compression are recompressed for the export.
    pub compression: Option<Compression>,
    /// `cache-mounts=true`: also export `RUN --mount=type=cache` directories.
    pub cache_mounts: bool,
    /// `ignore-error=true`: a failed export is a warning instead of failing the build.
    pub ignore_error: bool,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImport {
    /// Source.
    pub location: CacheLocation,
}

/// A shared-cache failure; import failures only become warnings.
#[derive(Debug, thiserror::Error)]
pub enum CacheShareError {
    /// The registry could not be reached or refused a request.
    #[error("{location}: {message}")]
    Registry {
        /// The cache location.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A local cache directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The manifest or config is not an rbuild cache.
    #[error("{location}: not an rbuild cache: {reason}")]
    Format {
        /// The cache location.
        location: String,
        /// Why.
        reason: String,
    },
    /// The local store failed.
    #[error("cache blob {digest}: {message}")]
    Store {
        /// The blob.
        digest: Digest,
        /// What went wrong.
        message: String,
    },
}

/// The cache config: what each exported key produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CacheConfig {
    /// Cache keys and their results, sorted by key so equal caches have equal digests.
    pub entries: Vec<ConfigEntry>,
}

/// One cache key's result in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConfigEntry {
    /// The step's cache key.
    pub key: Digest,
    /// The compressed layer blob (one of the manifest's layers).
    pub layer: Descriptor,
    /// Its uncompressed digest.
    pub diff_id: Digest,
    /// When the layer was first built (RFC 3339), for reproducible history times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

impl CacheConfig {
    /// The cache manifest for this config (already stored as `config`) and mount layers.
    pub(crate) fn manifest(&self, config: Descriptor, mounts: &[Descriptor]) -> ImageManifest {
        let mut layers: Vec<Descriptor> = Vec::new();
        for e in &self.entries {
            if !layers.iter().any(|l| l.digest == e.layer.digest) {
                layers.push(e.layer.clone());
            }
        }
        layers.extend(mounts.iter().cloned());
        ImageManifest::new_oci(config, layers)
    }

    /// Canonical bytes of the config and its descriptor.
    pub(crate) fn to_blob(&self) -> (Vec<u8>, Descriptor) {
        let bytes = serde_json::to_vec(self).expect("cache config serializes");
        let desc = Descriptor::new(
            CACHE_CONFIG_MEDIA_TYPE,
            Digest::of(&bytes),
            bytes.len() as u64,
        );
        (bytes, desc)
    }

    /// Entries by key.
    pub(crate) fn by_key(&self) -> BTreeMap<Digest, ConfigEntry> {
        self.entries
            .iter()
            .map(|e| (e.key.clone(), e.clone()))
            .collect()
    }
}

/// Checks that `manifest_bytes` is a cache manifest; returns it.
pub(crate) fn parse_manifest(
    location: &str,
    manifest_bytes: &[u8],
) -> Result<ImageManifest, CacheShareError> {
    let bad = |reason: String| CacheShareError::Format {
        location: location.to_string(),
        reason,
    };
    let m: ImageManifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| bad(format!("manifest: {e}")))?;
    if m.effective_media_type() != mediatype::OCI_MANIFEST {
        return Err(bad(format!(
            "manifest media type is {}",
            m.effective_media_type()
        )));
    }
    if m.config.media_type != CACHE_CONFIG_MEDIA_TYPE {
        return Err(bad(format!(
            "config media type is {}, expected {CACHE_CONFIG_MEDIA_TYPE}",
            m.config.media_type
        )));
    }
    Ok(m)
}

/// Parses and checks a config blob against its descriptor.
pub(crate) fn parse_config(
    location: &str,
    desc: &Descriptor,
    bytes: &[u8],
) -> Result<CacheConfig, CacheShareError> {
    if Digest::of(bytes) != desc.digest {
        return Err(CacheShareError::Format {
            location: location.to_string(),
            reason: format!("config blob does not match its digest {}", desc.digest),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| CacheShareError::Format {
        location: location.to_string(),
        reason: format!("config: {e}"),
    })
}

/// The cache-mount layers of a cache manifest, with their mount ids.
pub(crate) fn mount_layers(manifest: &ImageManifest) -> Vec<(String, Descriptor)> {
    manifest
        .layers
        .iter()
        .filter_map(|l| {
            l.annotations
                .get(MOUNT_ID_ANNOTATION)
                .map(|id| (id.clone(), l.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &[u8], layer: &[u8]) -> ConfigEntry {
        ConfigEntry {
            key: Digest::of(key),
            layer: Descriptor::new(mediatype::OCI_LAYER_GZIP, Digest::of(layer), 3),
            diff_id: Digest::of(b"diff"),
            created: Some("2024-01-02T03:04:05Z".into()),
        }
    }

    #[test]
    fn manifest_round_trips_and_dedups_layers() {
        let config = CacheConfig {
            entries: vec![entry(b"a", b"l1"), entry(b"b", b"l1"), entry(b"c", b"l2")],
        };
        let (bytes, desc) = config.to_blob();
        let mut mount = Descriptor::new(mediatype::OCI_LAYER_GZIP, Digest::of(b"m"), 1);
        mount
            .annotations
            .insert(MOUNT_ID_ANNOTATION.into(), "/root/.cache".into());
        let m = config.manifest(desc.clone(), &[mount]);
        assert_eq!(m.layers.len(), 3);
        let json = serde_json::to_vec(&m).unwrap();
        let parsed = parse_manifest("test", &json).unwrap();
        assert_eq!(parsed.config.media_type, CACHE_CONFIG_MEDIA_TYPE);
        assert_eq!(parse_config("test", &desc, &bytes).unwrap(), config);
        assert_eq!(mount_layers(&parsed)[0].0, "/root/.cache");
        assert!(parse_config("test", &desc, b"{}").is_err());
    }

    #[test]
    fn image_manifests_are_not_caches() {
        let cfg = Descriptor::new(mediatype::OCI_CONFIG, Digest::of(b"{}"), 2);
        let json = serde_json::to_vec(&ImageManifest::new_oci(cfg, vec![])).unwrap();
        let err = parse_manifest("r", &json).unwrap_err().to_string();
        assert!(err.contains("not an rbuild cache"), "{err}");
    }
}
