//! Builds one stage's layers: COPY/ADD through the context resolver into a deterministic layer,
//! WORKDIR directories, and (until the executor lands) a clear refusal for RUN. Keeps an
//! unpacked root of the stage on disk when COPY needs it (`--chown` names, existing
//! directories, symlinked destinations) or a later stage copies from it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::context::{ChownSpec, CopyRequest, EntryKind, LayerEntry, plan_copy};
use crate::image::{Descriptor, Digest};
use crate::layer::{EntryMeta, LayerWriter};
use crate::plan::{CopyOp, Op, Source, StageDispatch};
use crate::progress::Event;

use super::cache::{self, CacheEntry};
use super::{Shared, SolveError, StageOutput};

/// One stage being built.
pub(crate) struct StageBuilder<'a> {
    pub shared: &'a Shared<'a>,
    pub dispatch: &'a StageDispatch,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    /// Per step: whether it added a layer.
    pub produced: Vec<bool>,
    rootfs: Option<PathBuf>,
    /// How many of `layers` are applied to `rootfs`; the rest are applied when it is next
    /// needed, so a stage whose last COPY is followed only by RUNs never unpacks that layer.
    applied: usize,
    /// Owns `rootfs` when it lives on tmpfs (see `crate::snapshot::tmpfs_dir`).
    skeleton_dir: Option<tempfile::TempDir>,
    /// The image's owners of `rootfs`'s paths (its applied layers' tar headers): the
    /// skeleton's files have no inode of their own, and rootless none of it has them on disk.
    owners: std::sync::Arc<crate::layer::OwnerTable>,
    /// Cache key of the stage so far.
    key: Digest,
    /// Whether cache lookups are allowed for this stage (`--no-cache`, `--no-cache-filter`).
    use_cache: bool,
    /// Progress vertex of the step running now (RUN output lines are reported under it).
    vertex: u64,
}

impl<'a> StageBuilder<'a> {
    pub(crate) fn new(
        shared: &'a Shared<'a>,
        dispatch: &'a StageDispatch,
        base_layers: Vec<Descriptor>,
        base_key: Digest,
        use_cache: bool,
    ) -> Self {
        StageBuilder {
            shared,
            dispatch,
            layers: base_layers,
            diff_ids: dispatch.config.rootfs.diff_ids.clone(),
            produced: Vec::new(),
            rootfs: None,
            applied: 0,
            skeleton_dir: None,
            owners: Default::default(),
            key: base_key,
            use_cache,
            vertex: 0,
        }
    }

    /// Runs every step; returns the stage's layers. A stage that others read is unpacked only
    /// when a step first reads it ([`Shared::source_root`]): a cached build never needs it.
    pub(crate) fn run(mut self, _keep_rootfs: bool) -> Result<StageOutput, SolveError> {
        for (k, step) in self.dispatch.steps.iter().enumerate() {
            if matches!(step.op, Op::Metadata) {
                // Config-only steps are not vertices in BuildKit's progress either.
                self.produced.push(false);
                continue;
            }
            if let Some(signal) = crate::exec::interrupted() {
                return Err(SolveError::Run {
                    line: step.line,
                    message: format!("not started: the build was interrupted (signal {signal})"),
                });
            }
            if self.shared.has_failed() {
                // Another stage failed: the build fails with its error; start nothing new.
                return Err(SolveError::Canceled {
                    line: step.line,
                    reason: "not started: another step failed".into(),
                });
            }
            let vertex = self.shared.vertices.step(self.dispatch.index, k).cloned();
            if let Some(v) = &vertex {
                self.shared.emit(v.started());
                self.vertex = v.id;
            }
            let outcome = self.run_one(k, step);
            if let Some(v) = &vertex {
                self.shared.emit(match &outcome {
                    Ok(true) => Event::Cached { id: v.id },
                    Ok(false) => Event::Finished { id: v.id },
                    // Stopped because another step failed: BuildKit's `#N CANCELED`.
                    Err(SolveError::Canceled { .. }) => Event::Status {
                        id: v.id,
                        text: crate::progress::CANCELED.into(),
                    },
                    Err(e) => Event::Errored {
                        id: v.id,
                        message: e.to_string(),
                    },
                });
            }
            outcome?;
        }
        Ok(StageOutput {
            key: self.key,
            layers: self.layers,
            diff_ids: self.diff_ids,
            produced: self.produced,
            // `self.rootfs` is a skeleton (no file data): not something to read files from.
            rootfs: None,
        })
    }

    /// Builds one filesystem step; returns whether its result came from the cache.
    fn run_one(&mut self, index: usize, step: &crate::plan::Step) -> Result<bool, SolveError> {
        let (step_key, parts) = self.step_key(step.line, &step.op)?;
        let mut hit = match &step_key {
            Some(k) if self.use_cache => self.shared.cache.lookup(self.shared.store, k),
            _ => None,
        };
        // Another build (or stage) may be running this very step: wait for it, then look again.
        let _in_flight = match (&step_key, &hit) {
            (Some(k), None) if self.use_cache => {
                let shared = self.shared;
                let stop = || shared.has_failed() || crate::exec::interrupted().is_some();
                let lock = super::schedule::lock_step(shared.store, k, step.line, &stop)?;
                hit = self.shared.cache.lookup(self.shared.store, k);
                Some(lock)
            }
            _ => None,
        };
        let (slot, mut inputs) = self.explain_inputs(index, step, step_key.as_ref(), &parts);
        let mut files = None;
        if hit.is_none() && self.use_cache {
            files = self.context_files(step)?;
            if let Some(reason) = self.shared.explain.reason(&slot, &inputs, files.as_ref()) {
                self.shared.emit(Event::CacheMiss {
                    id: self.vertex,
                    reason,
                });
            }
        }
        let before = self.layers.len();
        let (changed, cached) = match hit {
            Some(entry) => {
                self.add_layer(entry.layer, entry.diff_id)?;
                (true, true)
            }
            None => {
                let changed = match &step.op {
                    Op::Metadata => false,
                    Op::Run(r) => self.run_step(step.line, r)?,
                    Op::Mkdir { path, user } => self.mkdir(step.line, path, user.as_deref())?,
                    Op::Copy(c) => self.copy(step.line, c)?,
                };
                (changed, false)
            }
        };
        if self.layers.len() > before {
            let entry = CacheEntry {
                layer: self.layers[self.layers.len() - 1].clone(),
                diff_id: self.diff_ids[self.diff_ids.len() - 1].clone(),
            };
            match &step_key {
                Some(k) => {
                    if !cached {
                        self.shared.cache.record(k, &entry);
                    }
                    self.key = k.clone();
                }
                None => {
                    self.key = cache::key(&[
                        ("parent", self.key.to_string().as_bytes()),
                        ("uncached-result", entry.diff_id.to_string().as_bytes()),
                    ]);
                }
            }
        } else if let Some(k) = &step_key {
            self.key = k.clone();
        }
        self.produced.push(changed);
        inputs.layer = self.layers.len() > before;
        // A hit needs no new record unless the slot last built something else (another
        // branch): only then pay for listing the files again.
        let stale = !cached
            || self
                .shared
                .explain
                .previous(&slot)
                .is_none_or(|p| p.key != inputs.key);
        if stale {
            if files.is_none() {
                files = self.context_files(step)?;
            }
            self.shared.explain.record(&slot, &inputs, files.as_ref());
        }
        Ok(cached)
    }

    /// The explain slot of step `index` and the inputs its key was made of.
    fn explain_inputs(
        &self,
        index: usize,
        step: &crate::plan::Step,
        key: Option<&Digest>,
        parts: &[(&'static str, Vec<u8>)],
    ) -> (super::explain::Slot, super::explain::StepInputs) {
        let name = self
            .shared
            .plan_names
            .get(&self.dispatch.index)
            .cloned()
            .flatten();
        let slot = self.shared.explain.slot(
            self.dispatch.index,
            name.as_deref(),
            index,
            step.instruction,
        );
        let base_image = match &self.dispatch.base {
            Source::Image(r) => Some(
                self.dispatch
                    .base_image
                    .as_ref()
                    .and_then(|i| i.manifest_digest.as_ref().map(|d| d.to_string()))
                    .unwrap_or_else(|| r.clone()),
            ),
            _ => None,
        };
        let sources: Vec<(&str, Vec<u8>)> = parts
            .iter()
            .filter(|(label, _)| *label != "selection")
            .map(|(l, b)| (*l, b.clone()))
            .collect();
        let inputs = super::explain::StepInputs::new(
            key,
            &self.key,
            self.produced.iter().all(|p| !p),
            base_image,
            &step.op,
            &sources,
        );
        (slot, inputs)
    }

    /// Per-file fingerprints of what a COPY/ADD reads from a build context (`None` for other
    /// steps), for explaining its next miss.
    fn context_files(
        &self,
        step: &crate::plan::Step,
    ) -> Result<Option<super::explain::FileMap>, SolveError> {
        let Op::Copy(c) = &step.op else {
            return Ok(None);
        };
        if !c.heredocs.is_empty() || !matches!(c.from, Source::MainContext | Source::Context(_)) {
            return Ok(None);
        }
        let req = self.copy_request(step.line, c, None)?;
        let mut memo = self.shared.memo.lock().expect("memo lock");
        match super::explain::context_files(&req, &mut memo) {
            Ok(f) => Ok(Some(f)),
            Err(e) => {
                // The step itself reports real selection errors; explaining is best effort.
                tracing::debug!("cannot list the files of line {}: {e}", step.line);
                Ok(None)
            }
        }
    }

    /// The stage's root on disk as a skeleton (every path and its metadata, but no file data
    /// except `passwd`/`group`), unpacked from its layers the first time it is needed: enough
    /// to resolve COPY destinations, `--chown` names and WORKDIR, and cheap to write and delete.
    fn rootfs(&mut self) -> Result<PathBuf, SolveError> {
        let dir = match &self.rootfs {
            Some(r) => r.clone(),
            None => {
                // An image's thousands of empty files are far cheaper to create (and delete)
                // on tmpfs than on disk; the skeleton holds no file data.
                let dir = match crate::snapshot::tmpfs_dir("rbuild-skeleton-") {
                    Some(t) => self.skeleton_dir.insert(t).path().to_path_buf(),
                    None => self
                        .shared
                        .scratch_dir(&format!("stage-{}", self.dispatch.index))?,
                };
                self.rootfs = Some(dir.clone());
                dir
            }
        };
        for layer in &self.layers[self.applied..] {
            let owners = std::sync::Arc::make_mut(&mut self.owners);
            apply_skeleton_layer(self.shared, &layer.digest, &dir, owners)?;
        }
        self.applied = self.layers.len();
        Ok(dir)
    }

    /// Appends a finished layer (the skeleton root catches up when it is next needed).
    fn add_layer(&mut self, layer: Descriptor, diff_id: Digest) -> Result<(), SolveError> {
        self.layers.push(layer);
        self.diff_ids.push(diff_id);
        Ok(())
    }

    /// The cache key of `op` on top of this stage, or `None` when its inputs cannot be
    /// fingerprinted (a RUN bind-mounting a build context).
    #[allow(clippy::type_complexity)]
    fn step_key(
        &self,
        line: usize,
        op: &Op,
    ) -> Result<(Option<Digest>, Vec<(&'static str, Vec<u8>)>), SolveError> {
        let op_json = serde_json::to_vec(op).expect("ops serialize");
        let mut extra: Vec<(&'static str, Vec<u8>)> = Vec::new();
        let source_key = |from: &Source| -> Result<Option<Vec<u8>>, SolveError> {
            Ok(match from {
                Source::Stage(i) => {
                    let outputs = self.shared.outputs.lock().expect("outputs lock");
                    outputs.get(i).map(|o| o.key.to_string().into_bytes())
                }
                Source::Image(r) => Some(self.shared.image_key(line, r)?.into_bytes()),
                Source::Scratch => Some(b"scratch".to_vec()),
                Source::MainContext | Source::Context(_) => None,
            })
        };
        match op {
            Op::Metadata | Op::Mkdir { .. } => {}
            Op::Copy(c) => {
                // Heredoc bodies are in `op_json`; only the files a COPY reads need a digest.
                if let (Some(c), _) = split_heredocs(c) {
                    match source_key(&c.from)? {
                        Some(k) => extra.push(("from", k)),
                        None => {
                            let req = self.copy_request(line, &c, None)?;
                            let mut memo = self.shared.memo.lock().expect("memo lock");
                            let d = crate::context::selection_digest(&req, &mut memo)
                                .map_err(|source| SolveError::Context { line, source })?;
                            extra.push(("selection", d.to_string().into_bytes()));
                        }
                    }
                }
            }
            Op::Run(r) => {
                for src in &r.mount_sources {
                    match src {
                        Source::MainContext => {}
                        other => match source_key(other)? {
                            Some(k) => extra.push(("mount", k)),
                            None => return Ok((None, extra)),
                        },
                    }
                }
                let binds_context = r.mounts.iter().zip(&r.mount_sources).any(|(m, s)| {
                    m.kind == crate::dockerfile::instructions::MountKind::Bind
                        && matches!(s, Source::MainContext | Source::Context(_))
                });
                if binds_context {
                    return Ok((None, extra));
                }
            }
        }
        let parent = self.key.to_string();
        let mut parts: Vec<(&str, &[u8])> = vec![("parent", parent.as_bytes()), ("op", &op_json)];
        for (label, bytes) in &extra {
            parts.push((label, bytes));
        }
        Ok((Some(cache::key(&parts)), extra))
    }

    fn run_step(&mut self, line: usize, op: &crate::plan::RunOp) -> Result<bool, SolveError> {
        let out = super::run::run_step(
            self.shared,
            self.vertex,
            line,
            op,
            &self.layers,
            &self.diff_ids,
        )?;
        self.add_layer(out.layer, out.diff_id)?;
        Ok(true)
    }

    fn mkdir(&mut self, line: usize, path: &str, user: Option<&str>) -> Result<bool, SolveError> {
        let root = self.rootfs()?;
        let owner = match user {
            Some(u) => ChownSpec::parse(u)
                .and_then(|s| s.resolve(Some(&root), "WORKDIR"))
                .map(|c| (c.uid, c.gid))
                .map_err(|source| SolveError::Context { line, source })?,
            None => (0, 0),
        };
        let mut missing = Vec::new();
        let mut rel = PathBuf::new();
        for comp in path
            .trim_start_matches('/')
            .split('/')
            .filter(|c| !c.is_empty())
        {
            rel.push(comp);
            match fs::symlink_metadata(root.join(&rel)) {
                Ok(m) if m.file_type().is_symlink() => {
                    // Creating below an image symlink would need resolving it inside the root;
                    // treat the rest as existing rather than writing through the host path.
                    tracing::warn!(
                        "WORKDIR {path}: {} is a symlink in the image; not creating below it",
                        rel.display()
                    );
                    break;
                }
                Ok(_) => {}
                Err(_) => missing.push(rel.to_string_lossy().into_owned()),
            }
        }
        if missing.is_empty() {
            return Ok(false);
        }
        let entries = missing
            .into_iter()
            .map(|p| LayerEntry {
                path: p,
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: owner.0,
                gid: owner.1,
                mtime: None,
                existing_parent: false,
                xattrs_from: None,
            })
            .collect::<Vec<_>>();
        self.write_layer(line, &entries)?;
        Ok(true)
    }

    fn copy(&mut self, line: usize, c: &CopyOp) -> Result<bool, SolveError> {
        let dest_root = self.rootfs()?;
        let (files, docs) = split_heredocs(c);
        let (Some(files), Some(docs)) = (files, docs) else {
            let req = self.copy_request(line, c, Some(dest_root))?;
            let copy = plan_copy(&req).map_err(|source| SolveError::Context { line, source })?;
            self.write_layer(line, &copy.entries)?;
            return Ok(true);
        };
        // BuildKit allows heredocs next to files; several sources need a directory destination.
        if !c.dest.ends_with('/') {
            let err = "When using COPY with more than one source file, the destination must be \
                       a directory and end with a /";
            return Err(SolveError::Context {
                line,
                source: crate::context::ContextError::Destination(err.into()),
            });
        }
        let mut plans = Vec::new();
        for part in [&*files, &docs] {
            let req = self.copy_request(line, part, Some(dest_root.clone()))?;
            plans.push(plan_copy(&req).map_err(|source| SolveError::Context { line, source })?);
        }
        // Both plans list the destination's parents; the first copy creates them, as
        // BuildKit's first copy action does. A later file of the same path wins.
        let mut entries: Vec<LayerEntry> = Vec::new();
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for e in plans.iter().flat_map(|p| &p.entries) {
            match at.get(&e.path) {
                Some(&i) if e.is_dir() && entries[i].is_dir() => {}
                Some(&i) => entries[i] = e.clone(),
                None => {
                    at.insert(e.path.clone(), entries.len());
                    entries.push(e.clone());
                }
            }
        }
        self.write_layer(line, &entries)?;
        Ok(true)
    }

    /// The context module's view of a COPY/ADD (heredoc bodies written to scratch files).
    fn copy_request(
        &self,
        line: usize,
        c: &CopyOp,
        dest_root: Option<PathBuf>,
    ) -> Result<CopyRequest, SolveError> {
        let (source_root, from_context, sources) = if !c.heredocs.is_empty() {
            let heredoc_dir = self
                .shared
                .scratch_dir(&format!("heredoc-{}-{line}", self.dispatch.index))?;
            let mut sources = Vec::new();
            for s in &c.sources {
                let Some(name) = s.strip_prefix("<<").map(|n| {
                    n.trim_start_matches('-')
                        .trim_matches(|ch| ch == '"' || ch == '\'')
                }) else {
                    // `split_heredocs` hands only heredoc sources to this branch.
                    return Err(SolveError::Context {
                        line,
                        source: crate::context::ContextError::Destination(format!(
                            "{s}: not a heredoc source"
                        )),
                    });
                };
                let content = c
                    .heredocs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, body)| body.clone())
                    .unwrap_or_default();
                let file = heredoc_dir.join(name);
                // BuildKit creates heredoc files as root-owned 0644 whatever the builder's
                // uid and umask are; the scratch file's own metadata must not leak in.
                fs::write(&file, content)
                    .and_then(|()| {
                        fs::set_permissions(
                            &file,
                            std::os::unix::fs::PermissionsExt::from_mode(0o644),
                        )
                    })
                    .map_err(|source| SolveError::Io {
                        path: file.clone(),
                        source,
                    })?;
                sources.push(name.to_string());
            }
            (heredoc_dir, false, sources)
        } else {
            let (root, is_ctx) = self
                .shared
                .copy_source_root(line, &c.from, Some(&c.sources))?;
            (root, is_ctx, c.sources.clone())
        };
        // A stage or image view is unpacked by this user: its owners on disk are not the image's.
        let source_owners = (!from_context)
            .then(|| self.shared.views.owners_of(&source_root))
            .flatten();
        Ok(CopyRequest {
            is_add: c.add,
            source_root,
            from_context,
            ignore: if from_context && c.from == Source::MainContext {
                self.shared.ignore.clone()
            } else {
                None
            },
            sources,
            dest: c.dest.clone(),
            workdir: "/".into(),
            dest_owners: dest_root.as_ref().map(|_| self.owners.clone()),
            dest_root,
            chown: match (&c.chown, c.heredocs.is_empty()) {
                (None, false) => Some("0:0".to_string()),
                (chown, _) => chown.clone(),
            },
            chmod: c.chmod.clone(),
            parents: c.parents,
            excludes: c.excludes.clone(),
            unpack: c.unpack,
            checksum: c.checksum.clone(),
            source_owners,
        })
    }

    /// Writes `entries` as a new layer into the store and onto the unpacked root.
    fn write_layer(&mut self, line: usize, entries: &[LayerEntry]) -> Result<(), SolveError> {
        let shared = self.shared;
        let store_err = |source| SolveError::Store { source };
        let layer_err = |source| SolveError::Layer { line, source };
        let sink = shared.store.blob_writer().map_err(store_err)?;
        let mut w = LayerWriter::new(sink, shared.compression).map_err(layer_err)?;
        let default_mtime = shared.epoch.unwrap_or(shared.start_time);
        for e in entries {
            let mut meta = EntryMeta::with_mode(e.mode);
            meta.uid = e.uid;
            meta.gid = e.gid;
            match e.mtime {
                Some(m) => {
                    meta.mtime = m.secs;
                    meta.mtime_nsec = m.nanos;
                }
                None => meta.mtime = default_mtime,
            }
            // BuildKit's copy keeps xattrs (`security.capability`, `user.*`) of files and
            // directories.
            if let Some(from) = &e.xattrs_from {
                meta.xattrs = crate::context::source_xattrs(from)
                    .map_err(|source| SolveError::Context { line, source })?;
            }
            let name = Path::new(&e.path);
            match &e.kind {
                EntryKind::Dir => w.append_dir(name, &meta),
                EntryKind::File { source, size } => {
                    let f = fs::File::open(source).map_err(|s| SolveError::Io {
                        path: source.clone(),
                        source: s,
                    })?;
                    w.append_file(name, &meta, f, *size)
                }
                EntryKind::Symlink { target } => w.append_symlink(name, target, &meta),
                EntryKind::Hardlink { target } => w.append_hardlink(name, target, &meta),
            }
            .map_err(layer_err)?;
        }
        let summary = w.finish().map_err(layer_err)?;
        let (digest, size) = summary.sink.commit(None).map_err(store_err)?;
        let desc = Descriptor::new(shared.compression.oci_media_type(), digest, size);
        self.add_layer(desc, summary.diff_id)
    }
}

/// Splits a COPY/ADD into the part reading files from its source and the part writing its
/// heredocs (each `None` when it has no such sources); a COPY without heredocs is all files.
fn split_heredocs(c: &CopyOp) -> (Option<std::borrow::Cow<'_, CopyOp>>, Option<CopyOp>) {
    use std::borrow::Cow;
    if c.heredocs.is_empty() {
        return (Some(Cow::Borrowed(c)), None);
    }
    let (docs, files): (Vec<String>, Vec<String>) =
        c.sources.iter().cloned().partition(|s| s.starts_with("<<"));
    if files.is_empty() {
        return (None, Some(c.clone()));
    }
    let files = CopyOp {
        sources: files,
        heredocs: Vec::new(),
        ..c.clone()
    };
    let docs = (!docs.is_empty()).then(|| CopyOp {
        sources: docs,
        ..c.clone()
    });
    (Some(Cow::Owned(files)), docs)
}

/// Unpacks one stored layer onto the skeleton root `dir` (see [`crate::layer::apply_skeleton`]).
fn apply_skeleton_layer(
    shared: &Shared<'_>,
    digest: &Digest,
    dir: &Path,
    owners: &mut crate::layer::OwnerTable,
) -> Result<(), SolveError> {
    shared.apply_whole(digest, dir, super::source::Fill::Skeleton, owners)
}
