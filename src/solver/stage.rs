//! Builds one stage's layers: COPY/ADD through the context resolver into a deterministic layer,
//! WORKDIR directories, and (until the executor lands) a clear refusal for RUN. Keeps an
//! unpacked root of the stage on disk when COPY needs it (`--chown` names, existing
//! directories, symlinked destinations) or a later stage copies from it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::context::{ChownSpec, CopyRequest, EntryKind, LayerEntry, plan_copy};
use crate::image::{Descriptor, Digest};
use crate::layer::{ApplyOptions, EntryMeta, LayerWriter, apply, open_decompressed};
use crate::plan::{CopyOp, Op, Source, StageDispatch};

use super::{Shared, SolveError, StageOutput};

/// One stage being built.
pub(crate) struct StageBuilder<'a> {
    pub shared: &'a Shared<'a>,
    pub dispatch: &'a StageDispatch,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    /// Per step: `Some(true)` a layer was added, `Some(false)` nothing changed.
    pub produced: Vec<bool>,
    rootfs: Option<PathBuf>,
}

impl<'a> StageBuilder<'a> {
    pub(crate) fn new(
        shared: &'a Shared<'a>,
        dispatch: &'a StageDispatch,
        base_layers: Vec<Descriptor>,
    ) -> Self {
        StageBuilder {
            shared,
            dispatch,
            layers: base_layers,
            diff_ids: dispatch.config.rootfs.diff_ids.clone(),
            produced: Vec::new(),
            rootfs: None,
        }
    }

    /// Runs every step; returns the stage's layers and (if asked) its unpacked root.
    pub(crate) fn run(mut self, keep_rootfs: bool) -> Result<StageOutput, SolveError> {
        for step in &self.dispatch.steps {
            let changed = match &step.op {
                Op::Metadata => false,
                Op::Run(r) => self.run_step(step.line, r)?,
                Op::Mkdir { path, user } => self.mkdir(step.line, path, user.as_deref())?,
                Op::Copy(c) => self.copy(step.line, c)?,
            };
            self.produced.push(changed);
            self.shared.progress(&format!(
                "stage {} line {}: {}{}",
                self.dispatch.index,
                step.line,
                step.created_by,
                if !step.empty_layer && !changed {
                    " (no changes)"
                } else {
                    ""
                }
            ));
        }
        if keep_rootfs {
            self.rootfs()?;
        }
        Ok(StageOutput {
            layers: self.layers,
            diff_ids: self.diff_ids,
            produced: self.produced,
            rootfs: self.rootfs,
        })
    }

    /// The stage's root on disk, unpacked from its layers the first time it is needed.
    fn rootfs(&mut self) -> Result<PathBuf, SolveError> {
        if let Some(r) = &self.rootfs {
            return Ok(r.clone());
        }
        let dir = self
            .shared
            .scratch_dir(&format!("stage-{}", self.dispatch.index))?;
        for layer in &self.layers {
            apply_layer(self.shared, &layer.digest, &dir)?;
        }
        self.rootfs = Some(dir.clone());
        Ok(dir)
    }

    fn run_step(&mut self, line: usize, op: &crate::plan::RunOp) -> Result<bool, SolveError> {
        let out = super::run::run_step(self.shared, line, op, &self.layers, &self.diff_ids)?;
        if let Some(root) = &self.rootfs {
            apply_layer(self.shared, &out.layer.digest, root)?;
        }
        self.layers.push(out.layer);
        self.diff_ids.push(out.diff_id);
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
            })
            .collect::<Vec<_>>();
        self.write_layer(line, &entries)?;
        Ok(true)
    }

    fn copy(&mut self, line: usize, c: &CopyOp) -> Result<bool, SolveError> {
        let dest_root = self.rootfs()?;
        let heredoc_dir;
        let (source_root, from_context, sources) = if !c.heredocs.is_empty() {
            heredoc_dir = self
                .shared
                .scratch_dir(&format!("heredoc-{}-{line}", self.dispatch.index))?;
            let mut sources = Vec::new();
            for s in &c.sources {
                let Some(name) = s.strip_prefix("<<").map(|n| {
                    n.trim_start_matches('-')
                        .trim_matches(|ch| ch == '"' || ch == '\'')
                }) else {
                    return Err(SolveError::Unsupported {
                        line,
                        what: "mixing heredocs and files in one COPY".into(),
                    });
                };
                let content = c
                    .heredocs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, body)| body.clone())
                    .unwrap_or_default();
                let file = heredoc_dir.join(name);
                fs::write(&file, content).map_err(|source| SolveError::Io {
                    path: file.clone(),
                    source,
                })?;
                sources.push(name.to_string());
            }
            (heredoc_dir.clone(), false, sources)
        } else {
            let (root, is_ctx) = self.shared.source_root(line, &c.from)?;
            (root, is_ctx, c.sources.clone())
        };
        let req = CopyRequest {
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
            dest_root: Some(dest_root),
            chown: c.chown.clone(),
            chmod: c.chmod.clone(),
            parents: c.parents,
            excludes: c.excludes.clone(),
            unpack: c.unpack,
            checksum: c.checksum.clone(),
        };
        let copy = plan_copy(&req).map_err(|source| SolveError::Context { line, source })?;
        self.write_layer(line, &copy.entries)?;
        Ok(true)
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
        let desc = Descriptor::new(shared.compression.oci_media_type(), digest.clone(), size);
        if let Some(root) = &self.rootfs {
            apply_layer(shared, &digest, root)?;
        }
        self.layers.push(desc);
        self.diff_ids.push(summary.diff_id);
        Ok(())
    }
}

/// Unpacks one stored layer onto `dir`.
pub(crate) fn apply_layer(
    shared: &Shared<'_>,
    digest: &Digest,
    dir: &Path,
) -> Result<(), SolveError> {
    let blob = shared
        .store
        .open_blob(digest)
        .map_err(|source| SolveError::Store { source })?;
    let reader = open_decompressed(blob).map_err(|source| SolveError::Layer { line: 0, source })?;
    apply(reader, dir, &ApplyOptions::default())
        .map_err(|source| SolveError::Layer { line: 0, source })?;
    Ok(())
}
