//! Writing a shared cache (`--cache-to`): the entries this build used (all of them for
//! `mode=max`, those whose layers are in the image for `mode=min`), optionally the cache
//! mounts, as one OCI manifest pushed to a registry (only the blobs it lacks; nothing at all
//! when the same manifest is already tagged) or written into an OCI image layout directory.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use super::cache::BuildCache;
use super::cache_format::{
    CacheConfig, CacheExport, CacheLocation, CacheMode, CacheShareError, ConfigEntry,
};
use super::cache_remote::{blob_path, head_manifest, runtime};
use super::image::format_rfc3339;
use crate::image::{Descriptor, ImageIndex};
use crate::layer::{Compression, open_decompressed};
use crate::registry::{Client, ClientOptions, PushOptions};
use crate::store::Store;

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExportReport {
    /// The cache manifest's digest.
    pub manifest: crate::image::Digest,
    /// Cache keys exported.
    pub entries: usize,
    /// Layers in the manifest (step layers and cache mounts).
    pub layers: usize,
    /// Blobs sent to the destination (0 when it already held this cache).
    pub sent: usize,
}

fn store_err(digest: &crate::image::Digest) -> impl Fn(crate::store::Error) -> CacheShareError {
    let digest = digest.clone();
    move |e| CacheShareError::Store {
        digest: digest.clone(),
        message: e.to_string(),
    }
}

/// The cache-mount ids (`id=`, else the target) of the RUN steps of every stage this build
/// ran: `cache-mounts=true` exports those, not every cache of a root that other projects may
/// share.
fn used_mount_ids(
    shared: &super::Shared<'_>,
    dispatched: &std::collections::BTreeMap<usize, crate::plan::StageDispatch>,
) -> BTreeSet<String> {
    use crate::dockerfile::instructions::MountKind;
    let built: Vec<usize> = shared
        .outputs
        .lock()
        .expect("outputs lock")
        .keys()
        .copied()
        .collect();
    let mut ids = BTreeSet::new();
    for stage in built.iter().filter_map(|i| dispatched.get(i)) {
        for step in &stage.steps {
            if let crate::plan::Op::Run(r) = &step.op {
                for m in r.mounts.iter().filter(|m| m.kind == MountKind::Cache) {
                    if let Some(id) = m.id.clone().or_else(|| m.target.clone()) {
                        ids.insert(id);
                    }
                }
            }
        }
    }
    ids
}

/// Exports this build's cache as `spec` says. `root` is the rbuild root (for cache mounts);
/// `image_layers` the exported image's layers (for `mode=min`); `mount_ids` the cache mounts
/// the build used (for `cache-mounts=true`).
pub(crate) fn export(
    store: &Store,
    root: &Path,
    cache: &BuildCache,
    image_layers: &[Descriptor],
    mount_ids: &BTreeSet<String>,
    spec: &CacheExport,
    insecure_registries: &[String],
) -> Result<CacheExportReport, CacheShareError> {
    let mut config = CacheConfig::default();
    for (key, stored) in cache.used() {
        let layer = &stored.entry.layer;
        if spec.mode == CacheMode::Min && !image_layers.iter().any(|l| l.digest == layer.digest) {
            continue;
        }
        let layer = match spec.compression {
            Some(want) => recompress(store, layer, want)?,
            None => layer.clone(),
        };
        config.entries.push(ConfigEntry {
            key,
            layer,
            diff_id: stored.entry.diff_id.clone(),
            created: stored.created.map(format_rfc3339),
        });
    }
    let mounts = if spec.cache_mounts {
        super::cache_mounts::export(root, store, mount_ids)?
    } else {
        Vec::new()
    };
    let (config_bytes, config_desc) = config.to_blob();
    store
        .write_blob(&config_bytes)
        .map_err(store_err(&config_desc.digest))?;
    let manifest = config.manifest(config_desc.clone(), &mounts);
    let manifest_desc = store
        .put_manifest(&manifest)
        .map_err(store_err(&config_desc.digest))?;
    let mut report = CacheExportReport {
        manifest: manifest_desc.digest.clone(),
        entries: config.entries.len(),
        layers: manifest.layers.len(),
        sent: 0,
    };
    let mut blobs = vec![config_desc];
    blobs.extend(manifest.layers.iter().cloned());
    match &spec.location {
        CacheLocation::Registry(reference) => {
            let client = Client::new(ClientOptions {
                insecure_registries: insecure_registries.to_vec(),
                ..ClientOptions::default()
            });
            let rt = runtime().map_err(|e| CacheShareError::Registry {
                location: reference.to_string(),
                message: format!("starting the async runtime: {e}"),
            })?;
            rt.block_on(async {
                if head_manifest(&client, reference).await? == Some(manifest_desc.digest.clone()) {
                    return Ok(());
                }
                let pushed = crate::registry::push(
                    &client,
                    store,
                    &manifest_desc.digest,
                    reference,
                    &PushOptions::default(),
                )
                .await
                .map_err(|e| CacheShareError::Registry {
                    location: reference.to_string(),
                    message: e.to_string(),
                })?;
                report.sent = pushed.sent + pushed.mounted + 1;
                Ok::<_, CacheShareError>(())
            })?;
        }
        CacheLocation::Local { dir, tag } => {
            blobs.push(manifest_desc.clone());
            report.sent = write_layout(store, dir, tag, &blobs, &manifest_desc)?;
        }
    }
    Ok(report)
}

/// `layer` in `want`'s compression: itself when it already is, else a recompressed blob with
/// the same diff_id.
fn recompress(
    store: &Store,
    layer: &Descriptor,
    want: Compression,
) -> Result<Descriptor, CacheShareError> {
    if Compression::from_media_type(&layer.media_type).map(|c| c.name()) == Some(want.name()) {
        return Ok(layer.clone());
    }
    let err = store_err(&layer.digest);
    let blob = store.open_blob(&layer.digest).map_err(&err)?;
    let io = |e: std::io::Error| CacheShareError::Store {
        digest: layer.digest.clone(),
        message: format!("recompressing: {e}"),
    };
    let mut reader = open_decompressed(blob).map_err(|e| CacheShareError::Store {
        digest: layer.digest.clone(),
        message: e.to_string(),
    })?;
    let sink = store.blob_writer().map_err(&err)?;
    let sink = match want {
        Compression::Gzip { level } => {
            let mut enc = flate2::GzBuilder::new().write(sink, flate2::Compression::new(level));
            std::io::copy(&mut reader, &mut enc).map_err(io)?;
            enc.finish().map_err(io)?
        }
        Compression::Zstd { level } => {
            let mut enc = zstd::Encoder::new(sink, level).map_err(io)?;
            std::io::copy(&mut reader, &mut enc).map_err(io)?;
            enc.finish().map_err(io)?
        }
        Compression::Uncompressed => {
            let mut sink = sink;
            std::io::copy(&mut reader, &mut sink).map_err(io)?;
            sink
        }
    };
    let (digest, size) = sink.commit(None).map_err(&err)?;
    Ok(Descriptor::new(want.oci_media_type(), digest, size))
}

/// Writes `blobs` (those missing) into the OCI layout `dir` and names `manifest` `tag` in its
/// `index.json`, keeping other names. Returns how many blobs were written.
fn write_layout(
    store: &Store,
    dir: &Path,
    tag: &str,
    blobs: &[Descriptor],
    manifest: &Descriptor,
) -> Result<usize, CacheShareError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CacheShareError::Io { path, source }
    };
    let blob_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(io(&blob_dir))?;
    let mut sent = 0;
    for b in blobs {
        let dest = blob_path(dir, &b.digest);
        if dest.exists() {
            continue;
        }
        let mut src = store.open_blob(&b.digest).map_err(store_err(&b.digest))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&blob_dir).map_err(io(&blob_dir))?;
        std::io::copy(&mut src, &mut tmp).map_err(io(&dest))?;
        tmp.as_file().sync_all().map_err(io(&dest))?;
        tmp.persist(&dest).map_err(|e| io(&dest)(e.error))?;
        sent += 1;
    }
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index_path = dir.join("index.json");
    let mut index = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<ImageIndex>(&b).ok())
        .unwrap_or_else(|| ImageIndex::new_oci(Vec::new()));
    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    index
        .manifests
        .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
    let mut entry = manifest.clone();
    entry.annotations.insert(REF_NAME.into(), tag.to_string());
    index.manifests.push(entry);
    let bytes = serde_json::to_vec(&index).expect("index serializes");
    write_atomic(&index_path, &bytes)?;
    remove_unreferenced(dir, &index);
    Ok(sent)
}

/// Deletes the blobs of the layout `dir` that no manifest of `index` names any more (layers
/// of earlier exports under the same tag), so a directory that CI saves and restores does
/// not grow without bound. Best effort: a blob that cannot be read or removed stays.
fn remove_unreferenced(dir: &Path, index: &ImageIndex) {
    let mut keep = BTreeSet::new();
    for m in &index.manifests {
        keep.insert(m.digest.hex().to_string());
        let Ok(bytes) = std::fs::read(blob_path(dir, &m.digest)) else {
            // A manifest we cannot read may need any blob: keep everything.
            return;
        };
        let Ok(manifest) = serde_json::from_slice::<crate::image::ImageManifest>(&bytes) else {
            return;
        };
        keep.insert(manifest.config.digest.hex().to_string());
        for l in &manifest.layers {
            keep.insert(l.digest.hex().to_string());
        }
    }
    let Ok(entries) = std::fs::read_dir(dir.join("blobs").join("sha256")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Temp files of a concurrent export start with `.tmp`; leave them alone.
        if name.len() == 64
            && !keep.contains(&name)
            && let Err(err) = std::fs::remove_file(e.path())
        {
            tracing::warn!(
                "cannot remove stale cache blob {}: {err}",
                e.path().display()
            );
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheShareError> {
    let err = |source| CacheShareError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Runs every `--cache-to` of the build, each as its own progress vertex after the solver's.
pub(crate) fn export_all(
    shared: &super::Shared<'_>,
    dispatched: &std::collections::BTreeMap<usize, crate::plan::StageDispatch>,
    image_layers: &[Descriptor],
    first_vertex: u64,
) -> Result<Vec<CacheExportReport>, super::SolveError> {
    use crate::progress::Event;
    let store = shared.store;
    let root = store.dir().parent().unwrap_or(store.dir());
    let mount_ids = used_mount_ids(shared, dispatched);
    let mut reports = Vec::new();
    for (n, spec) in shared.request.cache_to.iter().enumerate() {
        let id = first_vertex + n as u64;
        shared.emit(Event::Started {
            id,
            name: format!("exporting cache to {}", spec.location),
            step: None,
        });
        let started = std::time::Instant::now();
        match export(
            store,
            root,
            &shared.cache,
            image_layers,
            &mount_ids,
            spec,
            &shared.request.insecure_registries,
        ) {
            Ok(report) => {
                tracing::info!(
                    "exported cache to {} in {:?}: {report:?}",
                    spec.location,
                    started.elapsed()
                );
                shared.emit(Event::Status {
                    id,
                    text: format!(
                        "{} entries, {} layers, {} blobs sent, manifest {} done",
                        report.entries, report.layers, report.sent, report.manifest
                    ),
                });
                shared.emit(Event::Finished { id });
                reports.push(report);
            }
            Err(e) if spec.ignore_error => {
                let message = format!("exporting cache to {}: {e}", spec.location);
                shared.emit(Event::Errored {
                    id,
                    message: message.clone(),
                });
                shared.emit(Event::Warning { message });
            }
            Err(source) => {
                shared.emit(Event::Errored {
                    id,
                    message: source.to_string(),
                });
                return Err(super::SolveError::CacheExport {
                    location: spec.location.to_string(),
                    source,
                });
            }
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::super::cache::CacheEntry;
    use super::super::cache_remote::CacheSource;
    use super::*;
    use crate::image::{Digest, mediatype};

    #[test]
    fn local_export_then_import_fetches_the_layer_on_a_hit_with_its_time() {
        let a = tempfile::tempdir().unwrap();
        let store_a = Store::open(&a.path().join("store")).unwrap();
        let cache_a = BuildCache::open(&store_a);
        let blob = store_a.write_blob(b"layer bytes").unwrap();
        let entry = CacheEntry {
            layer: Descriptor::new(mediatype::OCI_LAYER_TAR, blob.clone(), 11),
            diff_id: blob.clone(),
        };
        let key = super::super::cache::key(&[("t", b"1")]);
        cache_a.record(&key, &entry);
        let created = cache_a.created_of(&blob).expect("recorded with a time");

        let out = tempfile::tempdir().unwrap();
        let location = CacheLocation::Local {
            dir: out.path().to_path_buf(),
            tag: "latest".into(),
        };
        let spec = CacheExport {
            location: location.clone(),
            mode: CacheMode::Max,
            compression: None,
            cache_mounts: false,
            ignore_error: false,
        };
        let first = export(
            &store_a,
            a.path(),
            &cache_a,
            &[],
            &BTreeSet::new(),
            &spec,
            &[],
        )
        .unwrap();
        assert_eq!((first.entries, first.layers), (1, 1));
        assert_eq!(first.sent, 3, "config, layer and manifest");
        let again = export(
            &store_a,
            a.path(),
            &cache_a,
            &[],
            &BTreeSet::new(),
            &spec,
            &[],
        )
        .unwrap();
        assert_eq!((again.manifest, again.sent), (first.manifest.clone(), 0));
        // mode=min keeps only layers of the image, which has none here.
        let min = CacheExport {
            mode: CacheMode::Min,
            ..spec.clone()
        };
        assert_eq!(
            export(
                &store_a,
                a.path(),
                &cache_a,
                &[],
                &BTreeSet::new(),
                &min,
                &[]
            )
            .unwrap()
            .entries,
            0
        );

        let b = tempfile::tempdir().unwrap();
        let store_b = Store::open(&b.path().join("store")).unwrap();
        // The min export replaced `latest`: the layer blob no manifest names is gone.
        assert!(!blob_path(out.path(), &blob).exists());
        // Re-export max so `latest` names the full cache again.
        export(
            &store_a,
            a.path(),
            &cache_a,
            &[],
            &BTreeSet::new(),
            &spec,
            &[],
        )
        .unwrap();
        let imported = CacheSource::open(&location, &[]).unwrap().import().unwrap();
        let cache_b = BuildCache::open(&store_b).with_imports(vec![imported]);
        assert!(!store_b.has_blob(&blob), "import reads metadata only");
        assert!(cache_b.lookup(&store_b, &Digest::of(b"other")).is_none());
        let hit = cache_b.lookup(&store_b, &key).expect("hit from the import");
        assert_eq!(hit.layer.digest, blob);
        assert!(store_b.has_blob(&blob), "fetched on the hit");
        assert_eq!(cache_b.created_of(&blob), Some(created));
        // The hit is now a local entry of root b.
        let local_only = BuildCache::open(&store_b);
        assert!(local_only.lookup(&store_b, &key).is_some());
    }
}
