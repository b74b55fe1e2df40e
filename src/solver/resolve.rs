//! Base images for the planner: looked up in the local store by normalised name (or ID), pulled
//! from their registry when missing (or always with `--pull`).

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::image::{Descriptor, Platform};
use crate::plan::{ImageResolver, ResolvedImage};
use crate::progress::{Collect, Event};
use crate::registry::{Client, ClientOptions, Progress, PullOptions, Reference};
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
    /// The last byte-progress event of each blob of each pull, by reference as written. Pulls
    /// happen while planning, before vertices are numbered, so the FROM vertex replays them
    /// ([`StoreResolver::take_pull_progress`]).
    pub pull_progress: Mutex<Vec<(String, Vec<Event>)>>,
    /// The `oci-layout://` values of `--build-context`: the only layout references a build may
    /// resolve (a Dockerfile's own `FROM oci-layout://...` is not a reference docker accepts).
    pub layouts: BTreeSet<String>,
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

    /// The byte progress recorded when `reference` was pulled (once; later calls get nothing).
    pub(crate) fn take_pull_progress(&self, reference: &str) -> Vec<Event> {
        let mut all = self.pull_progress.lock().expect("resolver lock");
        match all.iter().position(|(r, _)| r == reference) {
            Some(i) => all.remove(i).1,
            None => Vec::new(),
        }
    }

    fn pull(
        &self,
        reference: &Reference,
        written: &str,
        platform: &Platform,
    ) -> Result<(), String> {
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
        let collect = Collect::default();
        let progress = Progress {
            reporter: &collect,
            vertex: 0,
        };
        rt.block_on(crate::registry::pull_with_progress(
            &client, self.store, reference, &opts, progress,
        ))
        .map_err(|e| format!("pulling {reference}: {e}"))?;
        // Replayed all at once, the intermediate ticks would only flicker: keep each blob's last.
        let mut last: Vec<Event> = Vec::new();
        for e in collect.events() {
            if let Event::Bytes { name, .. } = &e {
                last.retain(|l| !matches!(l, Event::Bytes { name: n, .. } if n == name));
                last.push(e);
            }
        }
        self.pull_progress
            .lock()
            .expect("resolver lock")
            .push((written.to_string(), last));
        Ok(())
    }
}

impl ImageResolver for StoreResolver<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        if self.layouts.contains(reference) {
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
                self.pull(&parsed, reference, platform)?;
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
