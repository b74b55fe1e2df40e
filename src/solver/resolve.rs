//! Base images for the planner: looked up in the local store by normalised name (or ID), pulled
//! from their registry when missing (or always with `--pull`).

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::image::{Descriptor, Platform};
use crate::plan::{ImageResolver, ResolvedImage};
use crate::registry::{Client, ClientOptions, PullOptions, Reference};
use crate::store::Store;

/// Resolves image references against a store, pulling when allowed.
pub(crate) struct StoreResolver<'a> {
    pub store: &'a Store,
    pub pull: PullPolicy,
    pub insecure_registries: Vec<String>,
    /// Layers of every image resolved so far, by normalised name.
    pub layers: Mutex<Vec<(String, Vec<Descriptor>)>>,
    /// References pulled from their registry during this build (the others came from the
    /// store: their FROM is reported as cached).
    pub pulled: Mutex<BTreeSet<String>>,
}

/// When to contact a registry for a base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PullPolicy {
    /// Only when the image is not in the store.
    Missing,
    /// Always re-resolve the tag (`--pull`).
    Always,
    /// Never: the store only (`--dry-run`).
    Never,
}

impl StoreResolver<'_> {
    /// Whether `reference` was pulled during this build.
    pub(crate) fn was_pulled(&self, reference: &str) -> bool {
        self.pulled
            .lock()
            .expect("resolver lock")
            .contains(reference)
    }

    /// The layers recorded for `name` by an earlier [`ImageResolver::resolve`].
    pub(crate) fn layers_of(&self, name: &str) -> Option<Vec<Descriptor>> {
        let l = self.layers.lock().expect("resolver lock");
        l.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone())
    }

    /// `--build-context NAME=oci-layout://...`: imported into the store, never pulled.
    fn resolve_oci_layout(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, String> {
        use crate::context::{OciLayoutRef, import_oci_layout};
        let layout = OciLayoutRef::parse(reference).map_err(|e| e.to_string())?;
        let digest = import_oci_layout(self.store, &layout, platform).map_err(|e| e.to_string())?;
        let img = self
            .store
            .read_image(&digest, Some(platform))
            .map_err(|e| e.to_string())?;
        self.layers
            .lock()
            .expect("resolver lock")
            .push((reference.to_string(), img.manifest.layers.clone()));
        Ok(ResolvedImage {
            name: reference.to_string(),
            manifest_digest: Some(img.manifest_descriptor.digest.clone()),
            config: img.config,
        })
    }

    fn pull(&self, reference: &Reference, platform: &Platform) -> Result<(), String> {
        let client = Client::new(ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            ..ClientOptions::default()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the async runtime: {e}"))?;
        let opts = PullOptions {
            platform: Some(platform.clone()),
        };
        rt.block_on(crate::registry::pull(&client, self.store, reference, &opts))
            .map_err(|e| format!("pulling {reference}: {e}"))?;
        Ok(())
    }
}

impl ImageResolver for StoreResolver<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        if reference.starts_with(crate::context::OCI_LAYOUT_SCHEME) {
            return self.resolve_oci_layout(reference, platform);
        }
        let parsed = Reference::parse(reference).map_err(|e| format!("invalid reference: {e}"))?;
        let name = parsed.to_string();
        let local = self
            .store
            .resolve(&name)
            .or_else(|_| self.store.resolve(reference));
        let record = match (local, self.pull) {
            (Ok(rec), PullPolicy::Missing | PullPolicy::Never) => rec,
            (Err(e), PullPolicy::Never) => return Err(e.to_string()),
            _ => {
                tracing::info!("pulling {name}");
                self.pull(&parsed, platform)?;
                self.pulled
                    .lock()
                    .expect("resolver lock")
                    .insert(reference.to_string());
                self.store
                    .resolve(&name)
                    .map_err(|e| format!("{name} not in the local store after pulling: {e}"))?
            }
        };
        let img = self
            .store
            .read_image(&record.target.digest, Some(platform))
            .map_err(|e| e.to_string())?;
        self.layers
            .lock()
            .expect("resolver lock")
            .push((reference.to_string(), img.manifest.layers.clone()));
        Ok(ResolvedImage {
            name,
            manifest_digest: Some(img.manifest_descriptor.digest.clone()),
            config: img.config,
        })
    }
}
