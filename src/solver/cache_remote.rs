//! Reading a shared cache (`--cache-from`): the manifest and config first, a layer blob only
//! when a lookup hits and the store lacks it. Registry caches go through the registry
//! client (its auth, TLS and retries); local caches are OCI image layouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::cache_format::{
    CacheLocation, CacheShareError, ConfigEntry, parse_config, parse_manifest,
};
use crate::image::{Descriptor, Digest, ImageManifest, mediatype};
use crate::registry::{Client, ClientOptions, Reference};
use crate::store::Store;

/// An open cache location that blobs can be fetched from.
pub(crate) enum CacheSource {
    /// A registry repository; the runtime drives the async client from stage threads.
    Registry {
        client: Client,
        reference: Reference,
        runtime: tokio::runtime::Runtime,
    },
    /// An OCI image layout directory.
    Local { dir: PathBuf, tag: String },
}

/// An imported cache: its manifest, its entries by key, and where to fetch blobs.
pub(crate) struct ImportedCache {
    pub source: CacheSource,
    pub manifest: ImageManifest,
    pub entries: BTreeMap<Digest, ConfigEntry>,
}

fn registry_err(r: &Reference, message: impl std::fmt::Display) -> CacheShareError {
    CacheShareError::Registry {
        location: r.to_string(),
        message: message.to_string(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheShareError + '_ {
    move |source| CacheShareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The largest cache config read (it lists every entry of the cache).
const MAX_CONFIG: u64 = 64 << 20;

/// The async runtime used for cache transfers (several stage threads may block on it).
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

impl CacheSource {
    /// Opens `location` (nothing is read yet).
    pub(crate) fn open(
        location: &CacheLocation,
        insecure_registries: &[String],
    ) -> Result<CacheSource, CacheShareError> {
        Ok(match location {
            CacheLocation::Registry(reference) => CacheSource::Registry {
                client: Client::new(ClientOptions {
                    insecure_registries: insecure_registries.to_vec(),
                    ..ClientOptions::default()
                }),
                reference: reference.clone(),
                runtime: runtime().map_err(|e| registry_err(reference, e))?,
            },
            CacheLocation::Local { dir, tag } => CacheSource::Local {
                dir: dir.clone(),
                tag: tag.clone(),
            },
        })
    }

    fn describe(&self) -> String {
        match self {
            CacheSource::Registry { reference, .. } => reference.to_string(),
            CacheSource::Local { dir, tag } => format!("{}:{tag}", dir.display()),
        }
    }

    /// Reads the cache manifest and config.
    pub(crate) fn import(self) -> Result<ImportedCache, CacheShareError> {
        let location = self.describe();
        let manifest_bytes = match &self {
            CacheSource::Registry {
                client,
                reference,
                runtime,
            } => runtime.block_on(get_manifest(client, reference))?,
            CacheSource::Local { dir, tag } => {
                let desc = local_manifest(dir, tag)?;
                let bytes = read_local_blob(dir, &desc.digest)?;
                if Digest::of(&bytes) != desc.digest {
                    return Err(CacheShareError::Format {
                        location,
                        reason: format!("manifest blob does not match {}", desc.digest),
                    });
                }
                bytes
            }
        };
        let manifest = parse_manifest(&location, &manifest_bytes)?;
        let config_bytes = self.read_blob(&manifest.config)?;
        let config = parse_config(&location, &manifest.config, &config_bytes)?;
        Ok(ImportedCache {
            source: self,
            manifest,
            entries: config.by_key(),
        })
    }

    /// The bytes of a small blob (the config), verified.
    fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, CacheShareError> {
        match self {
            CacheSource::Registry {
                client,
                reference,
                runtime,
            } => runtime
                .block_on(client.fetch_blob_bytes(reference, desc, MAX_CONFIG))
                .map_err(|e| registry_err(reference, e)),
            CacheSource::Local { dir, .. } => read_local_blob(dir, &desc.digest),
        }
    }

    /// Copies blob `desc` into `store` unless it is there; the digest is verified.
    pub(crate) fn fetch_into(
        &self,
        store: &Store,
        desc: &Descriptor,
    ) -> Result<(), CacheShareError> {
        if store.has_blob(&desc.digest) {
            return Ok(());
        }
        let store_err = |e: crate::store::Error| CacheShareError::Store {
            digest: desc.digest.clone(),
            message: e.to_string(),
        };
        match self {
            CacheSource::Registry {
                client,
                reference,
                runtime,
            } => runtime
                .block_on(client.fetch_blob(reference, desc, store))
                .map_err(|e| registry_err(reference, e))?,
            CacheSource::Local { dir, .. } => {
                let mut writer = store.blob_writer().map_err(store_err)?;
                let path = blob_path(dir, &desc.digest);
                let mut f = std::fs::File::open(&path).map_err(io_err(&path))?;
                std::io::copy(&mut f, &mut writer).map_err(io_err(&path))?;
                writer.commit(Some(&desc.digest)).map_err(store_err)?;
            }
        }
        tracing::info!(
            "fetched cache blob {} from {}",
            desc.digest,
            self.describe()
        );
        Ok(())
    }
}

/// `DIR/blobs/sha256/<hex>`.
pub(crate) fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm())
        .join(digest.hex())
}

fn read_local_blob(dir: &Path, digest: &Digest) -> Result<Vec<u8>, CacheShareError> {
    let path = blob_path(dir, digest);
    std::fs::read(&path).map_err(io_err(&path))
}

/// The manifest named `tag` in a layout's `index.json` (or its only manifest).
fn local_manifest(dir: &Path, tag: &str) -> Result<Descriptor, CacheShareError> {
    let path = dir.join("index.json");
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let index: crate::image::ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| CacheShareError::Format {
            location: dir.display().to_string(),
            reason: format!("index.json: {e}"),
        })?;
    let named = index.manifests.iter().find(|d| {
        d.annotations
            .get("org.opencontainers.image.ref.name")
            .is_some_and(|n| n == tag)
    });
    let only = (index.manifests.len() == 1).then(|| &index.manifests[0]);
    named
        .or(only)
        .cloned()
        .ok_or_else(|| CacheShareError::Format {
            location: dir.display().to_string(),
            reason: format!("index.json names no manifest {tag:?}"),
        })
}

/// GETs the cache manifest of `reference` (an OCI image manifest).
async fn get_manifest(client: &Client, reference: &Reference) -> Result<Vec<u8>, CacheShareError> {
    match client
        .get_manifest(reference, mediatype::OCI_MANIFEST)
        .await
    {
        Ok(Some((bytes, _))) => Ok(bytes),
        Ok(None) => Err(registry_err(reference, "no cache manifest (404)")),
        Err(e) => Err(registry_err(reference, e)),
    }
}

/// The digest the registry holds under `reference`'s tag, if any (a HEAD request), so an
/// export whose manifest is already there sends nothing.
pub(crate) async fn head_manifest(
    client: &Client,
    reference: &Reference,
) -> Result<Option<Digest>, CacheShareError> {
    client
        .head_manifest(reference, mediatype::OCI_MANIFEST)
        .await
        .map_err(|e| registry_err(reference, e))
}

/// Reads every `--cache-from` of `request` and restores the cache mounts they carry that this
/// root lacks. A cache that cannot be read is a warning, as in BuildKit: the build goes on
/// without it.
pub(crate) fn import_all(
    request: &super::BuildRequest,
    store: &Store,
    reporter: &dyn crate::progress::Reporter,
) -> Vec<ImportedCache> {
    let root = store.dir().parent().unwrap_or(store.dir());
    let warn = |message: String| {
        tracing::warn!("{message}");
        reporter.event(crate::progress::Event::Warning { message });
    };
    let mut out = Vec::new();
    for spec in &request.cache_from {
        let imported = CacheSource::open(&spec.location, &request.insecure_registries)
            .and_then(CacheSource::import);
        let imported = match imported {
            Ok(i) => i,
            Err(e) => {
                warn(format!(
                    "failed to import cache from {}: {e}",
                    spec.location
                ));
                continue;
            }
        };
        for (id, desc) in super::cache_format::mount_layers(&imported.manifest) {
            if super::cache_mounts::exists(root, &id) {
                continue;
            }
            let restored = imported
                .source
                .fetch_into(store, &desc)
                .and_then(|()| super::cache_mounts::restore(root, store, &id, &desc));
            match restored {
                Ok(_) => tracing::info!("restored cache mount {id} from {}", spec.location),
                Err(e) => warn(format!(
                    "cannot restore cache mount {id} from {}: {e}",
                    spec.location
                )),
            }
        }
        out.push(imported);
    }
    out
}
