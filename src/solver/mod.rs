//! The solver: runs a plan's DAG in parallel, skipping what the target does not need and reusing cached results.
//!
//! [`build`] plans the Dockerfile, resolves base images (store, then registry), and builds the
//! needed stages in waves: every stage whose dependencies are done runs on its own thread. The
//! target stage's layers and config become an OCI image in the store. Steps whose cache key
//! (parent key, planned op, content of what they read) was built before reuse that layer.

mod cache;
mod cache_export;
mod cache_format;
mod cache_mounts;
mod cache_prune;
mod cache_remote;
mod events;
mod explain;
mod image;
mod layer_index;
mod resolve;
mod run;
mod schedule;
mod source;
mod stage;
mod tar_select;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::context::{ContextError, IgnoreMatcher};
use crate::dockerfile::Dockerfile;
use crate::image::{Descriptor, Digest, ImageConfig};
use crate::layer::{Compression, LayerError};
use crate::plan::{BuildOptions, Plan, PlanError, Source, parse_trigger};
use crate::store::Store;

pub use cache_export::CacheExportReport;
pub use cache_format::{CacheExport, CacheImport, CacheLocation, CacheMode, CacheShareError};
pub use cache_prune::{
    CacheMountUsage, CachePruneReport, cache_mount_usage, drop_cache_entries, prune_cache,
};
pub use image::format_rfc3339;
use resolve::{PullPolicy, StoreResolver};
use schedule::run_waves;

/// Everything one build needs.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The parsed Dockerfile.
    pub dockerfile: Dockerfile,
    /// The context directory; `None` when the Dockerfile came from stdin without a context.
    pub context: Option<PathBuf>,
    /// The Dockerfile's path (for `<Dockerfile>.dockerignore`), if it is a file.
    pub dockerfile_path: Option<PathBuf>,
    /// Planner options (build args, target, platforms, named context names).
    pub options: BuildOptions,
    /// `--build-context NAME=DIR` directories.
    pub named_contexts: BTreeMap<String, PathBuf>,
    /// `--label` values for the final image.
    pub labels: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH`: image and history times, and the mtime of created directories.
    pub source_date_epoch: Option<i64>,
    /// `--pull`: re-resolve base images against their registry.
    pub pull: bool,
    /// Registries allowed plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Layer compression.
    pub compression: Compression,
    /// `--no-cache`: never reuse cached steps (results are still recorded).
    pub no_cache: bool,
    /// `--no-cache-filter`: stage names or indices that must not reuse cached steps.
    pub no_cache_filter: BTreeSet<String>,
    /// `--secret` values by id (never part of cache keys or layers).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh` agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--jobs`: at most this many stages build at once (default: no limit).
    pub jobs: Option<usize>,
    /// `--network` for RUN steps without their own `--network`.
    pub network: Option<crate::dockerfile::instructions::NetworkMode>,
    /// `--cache-from`: shared caches consulted for keys the local cache lacks.
    pub cache_from: Vec<CacheImport>,
    /// `--cache-to`: where to export this build's cache after it succeeds.
    pub cache_to: Vec<CacheExport>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image manifest in the store.
    pub manifest: Descriptor,
    /// The config digest (docker's image ID).
    pub config_digest: Digest,
    /// The final config.
    pub config: ImageConfig,
    /// Things the user should hear about (unused build args...).
    pub warnings: Vec<String>,
    /// The image's layers, base layers first.
    pub layers: Vec<Descriptor>,
    /// How many progress vertices the build numbered (later vertices, such as exporting,
    /// continue from this plus one).
    pub vertices: u64,
    /// One report per `--cache-to`, in order.
    pub cache_exports: Vec<CacheExportReport>,
}

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The content store failed.
    #[error(transparent)]
    Store {
        /// The store's error.
        #[from]
        source: crate::store::Error,
    },
    /// Writing or applying a layer failed.
    #[error("line {line}: {source}")]
    Layer {
        /// Dockerfile line (0 when unpacking a base layer).
        line: usize,
        /// The layer error.
        source: LayerError,
    },
    /// COPY/ADD resolution failed.
    #[error("line {line}: {source}")]
    Context {
        /// Dockerfile line.
        line: usize,
        /// The context error.
        source: ContextError,
    },
    /// A file the build needs could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A RUN step failed (sandbox setup or a non-zero exit).
    #[error("line {line}: RUN: {message}")]
    Run {
        /// Dockerfile line.
        line: usize,
        /// What happened.
        message: String,
    },
    /// The step was stopped before it finished: another step of the build failed first (its
    /// error is the build's), or the build was interrupted. BuildKit shows it as `CANCELED`.
    #[error("line {line}: canceled: {reason}")]
    Canceled {
        /// Dockerfile line of the stopped step.
        line: usize,
        /// Why it was stopped.
        reason: String,
    },
    /// Exporting the build cache (`--cache-to`) failed.
    #[error("exporting cache to {location}: {source}")]
    CacheExport {
        /// The destination.
        location: String,
        /// What went wrong.
        source: CacheShareError,
    },
    /// A feature the build uses that rbuild cannot do yet.
    #[error("line {line}: {what} is not supported yet")]
    Unsupported {
        /// Dockerfile line.
        line: usize,
        /// The feature.
        what: String,
    },
}

/// State shared by the stage threads of one build.
pub(crate) struct Shared<'a> {
    pub store: &'a Store,
    pub request: &'a BuildRequest,
    pub resolver: StoreResolver<'a>,
    pub ignore: Option<IgnoreMatcher>,
    pub compression: Compression,
    pub epoch: Option<i64>,
    pub start_time: i64,
    pub scratch: tempfile::TempDir,
    pub outputs: Mutex<BTreeMap<usize, StageOutput>>,
    /// Stage and image roots unpacked for COPY --from and RUN mounts ([`source`]).
    pub views: source::Views,
    /// Content-free copies of layers, so skeletons and views skip decompressing them.
    pub layer_indexes: layer_index::LayerIndexes,
    pub reporter: &'a dyn crate::progress::Reporter,
    pub vertices: events::Vertices,
    pub cache: cache::BuildCache,
    /// Stage names by index (for `--no-cache-filter`).
    pub plan_names: BTreeMap<usize, Option<String>>,
    pub memo: Mutex<crate::context::HashMemo>,
    /// Why steps miss the cache (the inputs of each step's last build).
    pub explain: explain::Explainer,
    /// Set when a stage fails: the other stages start no further step.
    pub failed: std::sync::atomic::AtomicBool,
    /// This build's running RUN sandboxes, killed when a stage fails (see [`Shared::fail`]).
    pub sandboxes: schedule::Sandboxes,
}

/// A finished stage.
#[derive(Debug, Clone)]
pub(crate) struct StageOutput {
    pub key: Digest,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    pub produced: Vec<bool>,
    pub rootfs: Option<PathBuf>,
}

impl Shared<'_> {
    pub(crate) fn emit(&self, event: crate::progress::Event) {
        self.reporter.event(event);
    }

    /// A fresh directory inside this build's scratch space (removed when the build ends).
    pub(crate) fn scratch_dir(&self, name: &str) -> Result<PathBuf, SolveError> {
        let dir = self.scratch.path().join(name);
        std::fs::create_dir_all(&dir).map_err(|source| SolveError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// The directory a RUN mount reads from, and whether it is a build context.
    pub(crate) fn source_root(
        &self,
        line: usize,
        from: &Source,
    ) -> Result<(PathBuf, bool), SolveError> {
        self.copy_source_root(line, from, None)
    }

    /// The directory a COPY of `sources` reads from (a stage or image root holds only what
    /// those sources can reach; `None`: everything), and whether it is a build context.
    pub(crate) fn copy_source_root(
        &self,
        line: usize,
        from: &Source,
        sources: Option<&[String]>,
    ) -> Result<(PathBuf, bool), SolveError> {
        match from {
            Source::MainContext => match &self.request.context {
                Some(c) => Ok((c.clone(), true)),
                None => Err(SolveError::Unsupported {
                    line,
                    what: "COPY/ADD from the context when the Dockerfile is read from stdin with no context (`-`)".into(),
                }),
            },
            Source::Context(name) => match self.request.named_contexts.get(name) {
                Some(dir) => Ok((dir.clone(), true)),
                None => Err(SolveError::Unsupported {
                    line,
                    what: format!("build context {name:?}"),
                }),
            },
            Source::Stage(i) => {
                let output = {
                    let outputs = self.outputs.lock().expect("outputs lock");
                    outputs.get(i).map(|o| (o.rootfs.clone(), o.layers.clone()))
                };
                match output {
                    Some((Some(root), _)) => Ok((root, false)),
                    Some((None, layers)) => {
                        self.stage_root(*i, &layers, sources).map(|r| (r, false))
                    }
                    None => Err(SolveError::Unsupported {
                        line,
                        what: format!("copying from stage {i} before it is built"),
                    }),
                }
            }
            Source::Image(r) => self.image_root(line, r, sources).map(|p| (p, false)),
            Source::Scratch => Ok((self.scratch_dir("empty")?, false)),
        }
    }

    /// What identifies image `reference` in cache keys: its manifest digest.
    pub(crate) fn image_key(&self, line: usize, reference: &str) -> Result<String, SolveError> {
        use crate::plan::ImageResolver as _;
        let platform = self.request.options.target_platform.clone();
        let img = self
            .resolver
            .resolve(reference, &platform)
            .map_err(|message| {
                SolveError::Plan(PlanError::Base {
                    line,
                    image: reference.to_string(),
                    message,
                })
            })?;
        Ok(img
            .manifest_digest
            .map(|d| d.to_string())
            .unwrap_or_else(|| img.name.clone()))
    }

    /// The root of finished stage `i` as a COPY of `sources` reads it (the whole root for
    /// `None`), unpacked from its `layers` the first time a step reads it, so a build whose
    /// readers are all cached never unpacks it.
    fn stage_root(
        &self,
        i: usize,
        layers: &[Descriptor],
        sources: Option<&[String]>,
    ) -> Result<PathBuf, SolveError> {
        self.view_of(&format!("stage {i}"), layers, sources)
    }

    /// The root of image `reference` as a COPY of `sources` reads it (see [`Self::stage_root`]).
    fn image_root(
        &self,
        line: usize,
        reference: &str,
        sources: Option<&[String]>,
    ) -> Result<PathBuf, SolveError> {
        let platform = self.request.options.target_platform.clone();
        use crate::plan::ImageResolver as _;
        self.resolver
            .resolve(reference, &platform)
            .map_err(|message| {
                SolveError::Plan(PlanError::Base {
                    line,
                    image: reference.to_string(),
                    message,
                })
            })?;
        let layers = self.resolver.layers_of(reference).unwrap_or_default();
        self.view_of(&format!("image {reference}"), &layers, sources)
    }
}

/// Plans without building: `--dry-run`. Base images are looked up in the store only; images
/// that are not there are reported as such and planned with an empty config.
pub fn dry_run(request: &BuildRequest, store: &Store) -> Result<String, SolveError> {
    struct Lenient<'a>(StoreResolver<'a>);
    impl crate::plan::ImageResolver for Lenient<'_> {
        fn resolve(
            &self,
            r: &str,
            p: &crate::image::Platform,
        ) -> Result<crate::plan::ResolvedImage, String> {
            Ok(self
                .0
                .resolve(r, p)
                .unwrap_or_else(|_| crate::plan::ResolvedImage::empty(r)))
        }
    }
    let plan = Plan::new(&request.dockerfile, request.options.clone())?;
    let resolver = Lenient(StoreResolver::new(
        store,
        PullPolicy::Never,
        Vec::new(),
        oci_layouts(&request.options),
        &crate::progress::Discard,
    ));
    let dispatched = plan.dispatch(&resolver, &parse_trigger)?;
    Ok(plan.render(Some(&dispatched)))
}

/// The `--build-context` values that name OCI layouts.
fn oci_layouts(options: &BuildOptions) -> BTreeSet<String> {
    (options.context_images.values())
        .filter(|v| v.starts_with(crate::context::OCI_LAYOUT_SCHEME))
        .cloned()
        .collect()
}

/// Builds the request's target into `store` (not yet named: see [`crate::export`]),
/// reporting progress to `reporter`.
pub fn build(
    request: &BuildRequest,
    store: &Store,
    reporter: &dyn crate::progress::Reporter,
) -> Result<BuildResult, SolveError> {
    // Blobs and scratch dirs of a running build are not referenced yet: `rbuild prune` must
    // wait for the build instead of deleting them under it.
    let _gc_guard = store.gc_guard()?;
    let plan = Plan::new(&request.dockerfile, request.options.clone())?;
    let resolver = StoreResolver::new(
        store,
        if request.pull {
            PullPolicy::Always
        } else {
            PullPolicy::Missing
        },
        request.insecure_registries.clone(),
        oci_layouts(&request.options),
        reporter,
    );
    let dispatched = plan.dispatch(&resolver, &parse_trigger)?;
    // Layers of registry images are fetched by their FROM steps, except for images no FROM
    // step fetches first.
    resolver.fetch_unstaged(&dispatched, &request.options.target_platform)?;
    let metadata_vertices = resolver.vertices_used();
    let ignore = match &request.context {
        Some(c) => Some(
            IgnoreMatcher::for_build(c, request.dockerfile_path.as_deref())
                .map_err(|source| SolveError::Context { line: 0, source })?,
        ),
        None => None,
    };
    let tmp_root = store.dir().join("tmp");
    std::fs::create_dir_all(&tmp_root).map_err(|source| SolveError::Io {
        path: tmp_root.clone(),
        source,
    })?;
    let scratch = crate::snapshot::locked_tempdir_in(&tmp_root, "build-").map_err(|source| {
        SolveError::Io {
            path: tmp_root.clone(),
            source,
        }
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let shared = Shared {
        store,
        request,
        resolver,
        ignore,
        compression: request.compression,
        epoch: request.source_date_epoch,
        start_time: now,
        scratch,
        outputs: Mutex::new(BTreeMap::new()),
        views: source::Views::default(),
        layer_indexes: layer_index::LayerIndexes::new(store.dir()),
        reporter,
        vertices: events::Vertices::number_after(&plan, &dispatched, metadata_vertices),
        cache: cache::BuildCache::open(store)
            .with_imports(cache_remote::import_all(request, store, reporter)),
        plan_names: plan
            .stages
            .iter()
            .map(|s| (s.index, s.name.clone()))
            .collect(),
        memo: Mutex::new(crate::context::HashMemo::open(store.dir())),
        explain: explain::Explainer::new(
            store.dir().parent().unwrap_or(store.dir()),
            &plan,
            request.dockerfile_path.as_deref(),
            request.context.as_deref(),
        ),
        failed: Default::default(),
        sandboxes: Default::default(),
    };
    let built = run_waves(&plan, &dispatched, &shared);
    if let Err(e) = shared.memo.lock().expect("memo lock").save() {
        tracing::warn!("cannot save the context hash memo: {e}");
    }
    shared.cache.protect(store);
    built?;
    let outputs = shared.outputs.lock().expect("outputs lock").clone();
    let mut result = image::assemble(&shared, &dispatched[&plan.target], &outputs[&plan.target])?;
    result.vertices = shared.vertices.count();
    result.cache_exports =
        cache_export::export_all(&shared, &dispatched, &result.layers, result.vertices + 1)?;
    result.vertices += request.cache_to.len() as u64;
    let unused = plan.unused_build_args();
    if !unused.is_empty() {
        // BuildKit's wording.
        result.warnings.push(format!(
            "One or more build-args [{}] were not consumed",
            unused.join(" ")
        ));
    }
    Ok(result)
}
