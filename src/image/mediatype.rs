//! Media type strings for OCI and Docker schema 2 manifests, configs and layers, and the
//! mapping between the two families (used by `oci-mediatypes=false` exports).

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip-compressed layer tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd-compressed layer tar.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI empty JSON descriptor (`{}`), used by artifacts and attestations.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker uncompressed layer tar.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker gzip-compressed layer tar.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker schema 2 has no zstd layer type; BuildKit uses the OCI one even in Docker manifests.
pub const DOCKER_LAYER_ZSTD: &str = OCI_LAYER_ZSTD;
/// Docker foreign (non-distributable) gzip layer.
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Whether `media_type` names a single-platform image manifest (OCI or Docker).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Whether `media_type` names an index / manifest list (OCI or Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether `media_type` names an image config (OCI or Docker).
pub fn is_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// Whether `media_type` names a filesystem layer of either family.
pub fn is_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER_TAR
            | OCI_LAYER_GZIP
            | OCI_LAYER_ZSTD
            | DOCKER_LAYER_TAR
            | DOCKER_LAYER_GZIP
            | DOCKER_LAYER_FOREIGN_GZIP
    ) || media_type.starts_with("application/vnd.oci.image.layer.")
}

/// The Docker schema 2 equivalent of an OCI media type; unknown types pass through unchanged
/// (as BuildKit does for zstd layers and attestation blobs).
pub fn to_docker(media_type: &str) -> &str {
    match media_type {
        OCI_MANIFEST => DOCKER_MANIFEST,
        OCI_INDEX => DOCKER_MANIFEST_LIST,
        OCI_CONFIG => DOCKER_CONFIG,
        OCI_LAYER_TAR => DOCKER_LAYER_TAR,
        OCI_LAYER_GZIP => DOCKER_LAYER_GZIP,
        other => other,
    }
}

/// The OCI equivalent of a Docker schema 2 media type; unknown types pass through unchanged.
pub fn to_oci(media_type: &str) -> &str {
    match media_type {
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_MANIFEST_LIST => OCI_INDEX,
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_LAYER_TAR => OCI_LAYER_TAR,
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_oci_types_round_trip() {
        for t in [
            OCI_MANIFEST,
            OCI_INDEX,
            OCI_CONFIG,
            OCI_LAYER_TAR,
            OCI_LAYER_GZIP,
        ] {
            assert_ne!(to_docker(t), t);
            assert_eq!(to_oci(to_docker(t)), t);
        }
        assert_eq!(to_docker(OCI_LAYER_ZSTD), OCI_LAYER_ZSTD);
        assert!(is_layer(DOCKER_LAYER_GZIP) && is_layer(OCI_LAYER_ZSTD));
        assert!(!is_layer(OCI_CONFIG));
    }
}
