//! Base images for the planner: looked up in the local store by normalised name (or ID), or
//! resolved on their registry when missing (or always with `--pull`).
//!
//! As in BuildKit, planning only loads an image's metadata from its registry (the manifest and
//! the config: an `[internal] load metadata for REF` vertex), and the layers are downloaded by
//! the stage's FROM step ([`StoreResolver::run_from_step`]), which reports each blob's bytes
//! live. Images read by COPY/RUN mounts but not built upon are fetched before the stages
//! start ([`StoreResolver::fetch_unstaged`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::events::Vertex;
use super::{Shared, SolveError};
use crate::image::{Descriptor, Platform};
use crate::plan::{ImageResolver, Op, PlanError, ResolvedImage, Source, StageDispatch};
use crate::progress::{Event, Reporter};
use crate::registry::{Client, ClientOptions, Progress, PullOptions, Reference, RemoteImage};
use crate::store::Store;

/// A registry image whose layers are not fetched yet; `None` once they are (or were tried).
type PendingFetch = Arc<Mutex<Option<RemoteImage>>>;

/// Resolved images with their layers, by (reference as written, platform).
type Resolved = BTreeMap<(String, String), (ResolvedImage, Vec<Descriptor>)>;

/// Resolves image references against a store, contacting registries when allowed.
pub(crate) struct StoreResolver<'a> {
    store: &'a Store,
    pull: PullPolicy,
    insecure_registries: Vec<String>,
    /// The `oci-layout://` values of `--build-context`: the only layout references a build may
    /// resolve (a Dockerfile's own `FROM oci-layout://...` is not a reference docker accepts).
    layouts: BTreeSet<String>,
    /// Receives the metadata vertices.
    reporter: &'a dyn Reporter,
    /// Vertex ids handed out to metadata loads so far (they come first: `#1`, `#2`...).
    metadata_vertices: AtomicU64,
    /// Every image resolved so far with its layers, by reference as written and platform: the
    /// planner and the solver ask again for cache keys, and must get the same image.
    resolved: Mutex<Resolved>,
    /// Registry images whose layers are still to be fetched, by reference as written.
    pending: Mutex<Vec<(String, PendingFetch)>>,
    /// Cleared when planning is over ([`StoreResolver::fetch_unstaged`]): vertex ids are taken
    /// then, so an image first resolved later is pulled whole, without a vertex of its own.
    planning: AtomicBool,
    /// One runtime and client per build: token caches and connections are shared by every
    /// metadata load and layer fetch (a reqwest client must stay on the runtime it started on).
    network: OnceLock<Result<(tokio::runtime::Runtime, Client), String>>,
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

impl<'a> StoreResolver<'a> {
    /// A resolver for one build; `reporter` gets the `[internal] load metadata` vertices.
    pub(crate) fn new(
        store: &'a Store,
        pull: PullPolicy,
        insecure_registries: Vec<String>,
        layouts: BTreeSet<String>,
        reporter: &'a dyn Reporter,
    ) -> Self {
        StoreResolver {
            store,
            pull,
            insecure_registries,
            layouts,
            reporter,
            metadata_vertices: AtomicU64::new(0),
            resolved: Mutex::default(),
            pending: Mutex::default(),
            network: OnceLock::new(),
            planning: AtomicBool::new(true),
        }
    }

    /// How many vertex ids the metadata loads used (the steps are numbered after them).
    pub(crate) fn vertices_used(&self) -> u64 {
        self.metadata_vertices.load(Ordering::SeqCst)
    }

    /// The layers recorded for `reference` by an earlier [`ImageResolver::resolve`].
    pub(crate) fn layers_of(&self, reference: &str) -> Option<Vec<Descriptor>> {
        let resolved = self.resolved.lock().expect("resolver lock");
        (resolved.iter())
            .find(|((r, _), _)| r == reference)
            .map(|(_, (_, layers))| layers.clone())
    }

    fn network(&self) -> Result<&(tokio::runtime::Runtime, Client), String> {
        self.network
            .get_or_init(|| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("starting the async runtime: {e}"))?;
                let client = Client::new(ClientOptions {
                    insecure_registries: self.insecure_registries.clone(),
                    ..ClientOptions::default()
                });
                Ok((rt, client))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `--build-context NAME=oci-layout://...`: imported into the store, never pulled.
    fn resolve_oci_layout(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(ResolvedImage, Vec<Descriptor>), String> {
        use crate::context::{OciLayoutRef, import_oci_layout};
        let layout = OciLayoutRef::parse(reference).map_err(|e| e.to_string())?;
        let digest = import_oci_layout(self.store, &layout, platform).map_err(|e| e.to_string())?;
        let img = self
            .store
            .read_image(&digest, Some(platform))
            .map_err(|e| e.to_string())?;
        let resolved = ResolvedImage {
            name: reference.to_string(),
            manifest_digest: Some(img.manifest_descriptor.digest.clone()),
            config: img.config,
        };
        Ok((resolved, img.manifest.layers))
    }

    /// Loads manifest and config from the registry under an `[internal] load metadata for`
    /// vertex; the layers are left for [`StoreResolver::run_from_step`].
    fn load_metadata(
        &self,
        reference: &Reference,
        written: &str,
        platform: &Platform,
    ) -> Result<(ResolvedImage, Vec<Descriptor>), String> {
        if !self.planning.load(Ordering::SeqCst) {
            return self.pull_now(reference, platform);
        }
        let id = self.metadata_vertices.fetch_add(1, Ordering::SeqCst) + 1;
        self.reporter.event(Event::Started {
            id,
            name: format!("[internal] load metadata for {reference}"),
            step: None,
        });
        let loaded = self.network().and_then(|(rt, client)| {
            tracing::info!("resolving {reference}");
            let opts = PullOptions {
                platform: Some(platform.clone()),
            };
            let remote = rt
                .block_on(crate::registry::resolve_remote(
                    client, self.store, reference, &opts,
                ))
                .map_err(|e| format!("pulling {reference}: {e}"))?;
            let config = self
                .store
                .read_config(&remote.manifest.config.digest)
                .map_err(|e| format!("reading the config of {reference}: {e}"))?;
            Ok((remote, config))
        });
        let (remote, config) = match loaded {
            Ok(v) => v,
            Err(message) => {
                self.reporter.event(Event::Errored {
                    id,
                    message: message.clone(),
                });
                return Err(message);
            }
        };
        self.reporter.event(Event::Finished { id });
        let resolved = ResolvedImage {
            name: display_name(reference, &remote.manifest_digest),
            manifest_digest: Some(remote.manifest_digest.clone()),
            config,
        };
        let layers = remote.manifest.layers.clone();
        self.pending
            .lock()
            .expect("resolver lock")
            .push((written.to_string(), Arc::new(Mutex::new(Some(remote)))));
        Ok((resolved, layers))
    }

    /// Pulls the whole image at once (no progress: there is no vertex to show it under).
    fn pull_now(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<(ResolvedImage, Vec<Descriptor>), String> {
        let (rt, client) = self.network()?;
        let opts = PullOptions {
            platform: Some(platform.clone()),
        };
        let pulled = rt
            .block_on(crate::registry::pull(client, self.store, reference, &opts))
            .map_err(|e| format!("pulling {reference}: {e}"))?;
        let img = self
            .store
            .read_image(&pulled.manifest.digest, Some(platform))
            .map_err(|e| e.to_string())?;
        let resolved = ResolvedImage {
            name: display_name(reference, &img.manifest_descriptor.digest),
            manifest_digest: Some(img.manifest_descriptor.digest.clone()),
            config: img.config,
        };
        Ok((resolved, img.manifest.layers))
    }

    fn resolve_uncached(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(ResolvedImage, Vec<Descriptor>), String> {
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
            _ => return self.load_metadata(&parsed, reference, platform),
        };
        let img = self
            .store
            .read_image(&record.target.digest, Some(platform))
            .map_err(|e| e.to_string())?;
        let resolved = ResolvedImage {
            name: display_name(&parsed, &img.manifest_descriptor.digest),
            manifest_digest: Some(img.manifest_descriptor.digest.clone()),
            config: img.config,
        };
        Ok((resolved, img.manifest.layers))
    }

    /// Downloads the missing layers of `reference` (if it was resolved on its registry and not
    /// fetched yet), reporting bytes under `vertex` (none without one). Returns whether any
    /// blob was downloaded.
    /// A second caller for the same image waits for the first one's fetch.
    fn fetch_layers(&self, reference: &str, vertex: Option<u64>) -> Result<bool, String> {
        let slots: Vec<PendingFetch> = (self.pending.lock().expect("resolver lock").iter())
            .filter(|(r, _)| r == reference)
            .map(|(_, slot)| slot.clone())
            .collect();
        let mut downloaded = false;
        for slot in slots {
            let mut slot = slot.lock().expect("fetch lock");
            let Some(remote) = slot.take() else {
                continue;
            };
            let (rt, client) = self.network()?;
            let progress = match vertex {
                Some(vertex) => Progress {
                    reporter: self.reporter,
                    vertex,
                },
                None => Progress::none(),
            };
            let pulled = rt
                .block_on(crate::registry::fetch_remote_with_progress(
                    client, self.store, &remote, progress,
                ))
                .map_err(|e| format!("pulling {}: {e}", remote.reference))?;
            downloaded |= pulled.downloaded;
        }
        Ok(downloaded)
    }

    /// Ends planning: resolves the images steps read files from (`COPY --from`,
    /// `RUN --mount from=`; each gets its metadata vertex, as in BuildKit), then fetches the
    /// registry images no FROM step will fetch: those only read that way, and those read that
    /// way by one stage while another builds on them (the reader must not see half an image).
    pub(crate) fn fetch_unstaged(
        &self,
        dispatched: &BTreeMap<usize, StageDispatch>,
        platform: &Platform,
    ) -> Result<(), SolveError> {
        let read = images_read_by_steps(dispatched);
        for (reference, line) in &read {
            self.resolve(reference, platform).map_err(|message| {
                SolveError::Plan(PlanError::Base {
                    line: *line,
                    image: reference.clone(),
                    message,
                })
            })?;
        }
        self.planning.store(false, Ordering::SeqCst);
        let pending: BTreeSet<String> = (self.pending.lock().expect("resolver lock").iter())
            .map(|(r, _)| r.clone())
            .collect();
        for reference in pending {
            let is_base = dispatched
                .values()
                .any(|d| matches!(&d.base, Source::Image(r) if *r == reference));
            if is_base && !read.contains_key(&reference) {
                continue;
            }
            self.fetch_layers(&reference, None).map_err(|message| {
                SolveError::Plan(PlanError::Base {
                    line: 0,
                    image: reference.clone(),
                    message,
                })
            })?;
        }
        Ok(())
    }

    /// The FROM step of a stage built on image `reference`: downloads the layers the store
    /// lacks, showing their bytes under vertex `v`; CACHED when nothing had to be fetched.
    pub(crate) fn run_from_step(
        &self,
        shared: &Shared<'_>,
        v: &Vertex,
        reference: &str,
        line: usize,
    ) -> Result<(), SolveError> {
        shared.emit(v.started());
        match self.fetch_layers(reference, Some(v.id)) {
            Ok(true) => shared.emit(Event::Finished { id: v.id }),
            Ok(false) => shared.emit(Event::Cached { id: v.id }),
            Err(message) => {
                shared.emit(Event::Errored {
                    id: v.id,
                    message: message.clone(),
                });
                return Err(SolveError::Plan(PlanError::Base {
                    line,
                    image: reference.to_string(),
                    message,
                }));
            }
        }
        Ok(())
    }
}

/// The name a FROM vertex shows, as BuildKit: the normalised reference pinned to the digest
/// it resolved to (the platform's manifest here: the store keeps no index digest).
fn display_name(reference: &Reference, manifest: &crate::image::Digest) -> String {
    if reference.digest().is_some() {
        reference.to_string()
    } else {
        format!("{reference}@{manifest}")
    }
}

/// Images that steps read files from (`COPY --from=IMAGE`, `RUN --mount from=IMAGE`), with
/// the Dockerfile line of the first step reading each.
fn images_read_by_steps(dispatched: &BTreeMap<usize, StageDispatch>) -> BTreeMap<String, usize> {
    let mut read = BTreeMap::new();
    for step in dispatched.values().flat_map(|d| &d.steps) {
        let sources: Vec<&Source> = match &step.op {
            Op::Copy(c) => vec![&c.from],
            Op::Run(r) => r.mount_sources.iter().collect(),
            _ => Vec::new(),
        };
        for s in sources {
            if let Source::Image(r) = s {
                read.entry(r.clone()).or_insert(step.line);
            }
        }
    }
    read
}

impl ImageResolver for StoreResolver<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let key = (reference.to_string(), platform.to_string());
        if let Some((img, _)) = self.resolved.lock().expect("resolver lock").get(&key) {
            return Ok(img.clone());
        }
        let (img, layers) = self.resolve_uncached(reference, platform)?;
        self.resolved
            .lock()
            .expect("resolver lock")
            .insert(key, (img.clone(), layers));
        Ok(img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_pins_the_digest_once() {
        let d = crate::image::Digest::of(b"m");
        let tagged = Reference::parse("busybox").unwrap();
        assert_eq!(
            display_name(&tagged, &d),
            format!("docker.io/library/busybox:latest@{d}")
        );
        let pinned = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(display_name(&pinned, &d), pinned.to_string());
    }
}
