//! `type=docker`: a docker-archive that `docker load` and `podman load` accept. Laid out as
//! Docker 25+ `docker save` does: an OCI layout (so it is also a valid OCI archive) plus the
//! legacy `manifest.json` and `repositories`. Layers are stored as they are in the store
//! (gzip/zstd/plain); both loaders detect the compression.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::Error;
use super::layout::LayoutSink;
use super::oci::write_oci_layout;
use crate::image::{Descriptor, Platform};
use crate::registry::Reference;
use crate::store::Store;

#[derive(Serialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Writes a docker-archive of the single-platform image `target` (an index is narrowed to
/// `platform`, default the host's) into `sink`.
pub(crate) fn write_docker_archive<W: Write>(
    store: &Store,
    target: &Descriptor,
    names: &[String],
    platform: Option<&Platform>,
    sink: &mut LayoutSink<W>,
) -> Result<Descriptor, Error> {
    let image = store.read_image(&target.digest, platform)?;
    let manifest_desc = image.manifest_descriptor.clone();
    write_oci_layout(store, &manifest_desc, names, sink)?;

    let mut repo_tags = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let top_layer = image
        .manifest
        .layers
        .last()
        .map(|l| l.digest.hex().to_string());
    for name in names {
        let Ok(r) = Reference::parse(name) else {
            continue;
        };
        if r.digest().is_some() {
            continue;
        }
        let Some(tag) = r.tag() else { continue };
        repo_tags.push(format!("{}:{tag}", r.familiar_name()));
        if let Some(top) = &top_layer {
            repositories
                .entry(r.familiar_name())
                .or_default()
                .insert(tag.to_string(), top.clone());
        }
    }
    let entry = ManifestEntry {
        config: format!("blobs/sha256/{}", image.manifest.config.digest.hex()),
        repo_tags: (!repo_tags.is_empty()).then_some(repo_tags),
        layers: image
            .manifest
            .layers
            .iter()
            .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
            .collect(),
    };
    let manifest_json = serde_json::to_vec(&vec![entry]).map_err(|source| Error::Json {
        what: "manifest.json",
        source,
    })?;
    sink.put_file("manifest.json", &manifest_json)?;
    if !repositories.is_empty() {
        let repos_json = serde_json::to_vec(&repositories).map_err(|source| Error::Json {
            what: "repositories",
            source,
        })?;
        sink.put_file("repositories", &repos_json)?;
    }
    Ok(manifest_desc)
}
