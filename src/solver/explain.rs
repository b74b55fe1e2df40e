//! Explaining cache misses: for every step slot (Dockerfile, stage, step position, instruction)
//! the inputs of its last build are remembered under `<root>/cache/explain-v1/`, and when the
//! step misses the cache the new inputs are compared with them to say, in words, what changed
//! (`file src/main.c changed`, `build arg VERSION changed`, `base image changed (...)`).
//!
//! This index only explains; it never decides whether a step is cached (that is the key → layer
//! index in `cache.rs`). Losing or corrupting it costs nothing but a vaguer message, so every
//! read and write here is best effort.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::context::{ContextError, CopyRequest, HashMemo, SelectOptions, select_sources};
use crate::dockerfile::instructions::Instruction;
use crate::image::{Digest, Hasher};
use crate::plan::{Op, Plan};

/// The on-disk format version; a new format gets a new directory instead of a migration.
const DIR: &str = "explain-v1";
/// How many file names a message lists before `and N more`.
const MAX_NAMES: usize = 3;

/// Where one step sits, independent of what it does: the same slot in the next build is
/// compared with this one.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// File name of the slot's records.
    id: String,
}

/// What a step's cache key was made of, in a form that can be compared piece by piece.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StepInputs {
    /// The step's cache key (empty when the step cannot be cached).
    pub key: String,
    /// The key of the stage before this step.
    pub parent: String,
    /// Whether `parent` is the stage's base (this is the stage's first layer step).
    pub parent_is_base: bool,
    /// The stage's base image manifest digest, when it is based on an image.
    pub base_image: Option<String>,
    /// Digest of the planned op without its environment.
    pub command: String,
    /// RUN environment: variable name → digest of its value (values may be credentials).
    pub env: BTreeMap<String, String>,
    /// Keys of the stages/images the step reads (`from`, `mount`), by label.
    pub sources: BTreeMap<String, String>,
    /// Whether the build added a layer (steps that change nothing have no cache entry).
    #[serde(default)]
    pub layer: bool,
}

/// Per-file fingerprints of what a COPY read from a build context: path → kind, mode, owner
/// and content digest.
pub(crate) type FileMap = BTreeMap<String, String>;

/// The explain index of one build.
pub(crate) struct Explainer {
    dir: PathBuf,
    dockerfile: String,
    /// Every ARG the Dockerfile declares (global and per stage) plus the `--build-arg` names.
    arg_names: BTreeSet<String>,
    /// Marker file saying this Dockerfile was built on this root before.
    seen: PathBuf,
    /// Whether `seen` existed when the build started: a first build has nothing to explain
    /// (BuildKit prints nothing either), a later one names the steps that are new.
    known: bool,
}

/// A short digest of `bytes`, enough to tell values apart.
fn short_digest(bytes: &[u8]) -> String {
    Digest::of(bytes).hex()[..16].to_string()
}

impl StepInputs {
    /// Splits `op` into comparable parts; `key` is `None` for a step that is never cached.
    pub(crate) fn new(
        key: Option<&Digest>,
        parent: &Digest,
        parent_is_base: bool,
        base_image: Option<String>,
        op: &Op,
        sources: &[(&str, Vec<u8>)],
    ) -> StepInputs {
        let mut env = BTreeMap::new();
        let command = match op {
            Op::Run(r) => {
                for entry in r.env.iter() {
                    let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
                    env.insert(name.to_string(), short_digest(value.as_bytes()));
                }
                let mut bare = r.clone();
                bare.env = Default::default();
                short_digest(&serde_json::to_vec(&Op::Run(bare)).expect("ops serialize"))
            }
            other => short_digest(&serde_json::to_vec(other).expect("ops serialize")),
        };
        let mut labelled = BTreeMap::new();
        for (label, bytes) in sources {
            let mut name = label.to_string();
            let mut n = 1;
            while labelled.contains_key(&name) {
                n += 1;
                name = format!("{label}{n}");
            }
            labelled.insert(name, String::from_utf8_lossy(bytes).into_owned());
        }
        StepInputs {
            key: key.map(|k| k.to_string()).unwrap_or_default(),
            parent: parent.to_string(),
            parent_is_base,
            base_image,
            command,
            env,
            sources: labelled,
            layer: false,
        }
    }
}

/// Every ARG name `plan` declares, globally or in any stage.
fn declared_args(plan: &Plan) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = plan.global_args.keys().cloned().collect();
    for stage in &plan.stages {
        for (_, instr) in &stage.commands {
            if let Instruction::Arg(a) = instr {
                names.extend(a.args.iter().map(|(k, _)| k.to_string()));
            }
        }
    }
    names.extend(plan.options.build_args.keys().cloned());
    names
}

impl Explainer {
    /// The explain index under `rbuild_root` for a build of `plan` from `dockerfile` (the
    /// Dockerfile's path, or `None` when it came from stdin) in `context`.
    pub(crate) fn new(
        rbuild_root: &Path,
        plan: &Plan,
        dockerfile: Option<&Path>,
        context: Option<&Path>,
    ) -> Explainer {
        let canonical = |p: &Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .to_string_lossy()
                .into_owned()
        };
        let dockerfile = match (dockerfile, context) {
            (Some(d), _) => canonical(d),
            (None, Some(c)) => format!("{}\0stdin", canonical(c)),
            (None, None) => "stdin".to_string(),
        };
        let dir = rbuild_root.join("cache").join(DIR);
        let seen = dir.join(format!("{}.seen", short_digest(dockerfile.as_bytes())));
        Explainer {
            known: seen.exists(),
            seen,
            dir,
            dockerfile,
            arg_names: declared_args(plan),
        }
    }

    /// The slot of step `step` (index in the stage's dispatched steps) of stage `stage`.
    pub(crate) fn slot(
        &self,
        stage: usize,
        stage_name: Option<&str>,
        step: usize,
        instruction: &str,
    ) -> Slot {
        let mut h = Hasher::new();
        for part in [
            self.dockerfile.as_str(),
            &stage.to_string(),
            stage_name.unwrap_or(""),
            &step.to_string(),
            &instruction.to_ascii_uppercase(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Slot {
            id: h.finish().hex().to_string(),
        }
    }

    fn path(&self, slot: &Slot, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", slot.id))
    }

    /// The inputs recorded for `slot` by its last build, if any.
    pub(crate) fn previous(&self, slot: &Slot) -> Option<StepInputs> {
        let bytes = std::fs::read(self.path(slot, "json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The file fingerprints recorded for `slot`, if its step read a build context.
    pub(crate) fn previous_files(&self, slot: &Slot) -> Option<FileMap> {
        let bytes = std::fs::read(self.path(slot, "files")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Remembers `inputs` (and `files`, for a COPY from a context) as `slot`'s last build.
    pub(crate) fn record(&self, slot: &Slot, inputs: &StepInputs, files: Option<&FileMap>) {
        let write = |path: PathBuf, bytes: Vec<u8>| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(&bytes)?;
            tmp.persist(path)?;
            Ok(())
        };
        let mut result = write(
            self.path(slot, "json"),
            serde_json::to_vec(inputs).expect("inputs serialize"),
        );
        if result.is_ok() {
            let files_path = self.path(slot, "files");
            result = match files {
                Some(f) => write(files_path, serde_json::to_vec(f).expect("files serialize")),
                None => match std::fs::remove_file(&files_path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
        }
        if result.is_ok() && !self.known && !self.seen.exists() {
            result = std::fs::write(&self.seen, b"");
        }
        if let Err(e) = result {
            tracing::debug!("cannot record cache-miss explanation inputs: {e}");
        }
    }

    /// Why a step with `now` inputs missed the cache, compared with `slot`'s last build;
    /// `None` on the first build of this Dockerfile on this root. `files` is what the step
    /// reads from a build context now (for COPY/ADD).
    pub(crate) fn reason(
        &self,
        slot: &Slot,
        now: &StepInputs,
        files: Option<&FileMap>,
    ) -> Option<String> {
        match self.previous(slot) {
            Some(before) => Some(self.compare(&before, now, slot, files)),
            None => self.known.then(|| "no earlier build of this step".into()),
        }
    }

    fn compare(
        &self,
        before: &StepInputs,
        now: &StepInputs,
        slot: &Slot,
        files: Option<&FileMap>,
    ) -> String {
        if now.key.is_empty() {
            return "this step is never cached (it bind-mounts a build context)".into();
        }
        if before.base_image != now.base_image {
            let show = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".into());
            return format!(
                "base image changed ({} → {})",
                show(&before.base_image),
                show(&now.base_image)
            );
        }
        if let Some(files) = files
            && let Some(old) = self.previous_files(slot)
            && let Some(msg) = describe_files(&old, files)
        {
            return msg;
        }
        let mut changed_sources: Vec<&str> = now
            .sources
            .iter()
            .filter(|(label, key)| before.sources.get(*label) != Some(*key))
            .map(|(label, _)| label.as_str())
            .collect();
        changed_sources.extend(
            before
                .sources
                .keys()
                .filter(|l| !now.sources.contains_key(*l))
                .map(String::as_str),
        );
        if !changed_sources.is_empty() {
            return if changed_sources.iter().all(|l| l.starts_with("mount")) {
                "a mounted stage or image changed".into()
            } else {
                "the stage or image it copies from changed".into()
            };
        }
        let vars: BTreeSet<&String> = now
            .env
            .iter()
            .filter(|(k, v)| before.env.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(before.env.keys().filter(|k| !now.env.contains_key(*k)))
            .collect();
        if !vars.is_empty() {
            let (args, envs): (Vec<&String>, Vec<&String>) =
                vars.into_iter().partition(|v| self.arg_names.contains(*v));
            let mut parts = Vec::new();
            if !args.is_empty() {
                parts.push(name_list("build arg", "build args", &args));
            }
            if !envs.is_empty() {
                parts.push(name_list(
                    "environment variable",
                    "environment variables",
                    &envs,
                ));
            }
            return parts.join("; ");
        }
        if before.command != now.command {
            return "command changed".into();
        }
        if before.parent != now.parent {
            return if now.parent_is_base {
                "base stage changed".into()
            } else {
                "previous step changed".into()
            };
        }
        if before.key == now.key {
            return if before.layer {
                "its cached result was removed (pruned)".into()
            } else {
                "it changed no files last time, so there was nothing to cache".into()
            };
        }
        "cache key changed (a different rbuild version or platform)".into()
    }
}

/// `build arg VERSION changed`, `build args A, B changed`.
fn name_list(one: &str, many: &str, names: &[&String]) -> String {
    let list: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    if list.len() == 1 {
        format!("{one} {} changed", list[0])
    } else {
        format!("{many} {} changed", list.join(", "))
    }
}

/// `file a changed`, `files a, b, c changed and 4 more; file d removed`, or `None` when the two
/// maps are equal.
pub(crate) fn describe_files(before: &FileMap, now: &FileMap) -> Option<String> {
    let mut groups: [(&str, Vec<&str>); 3] =
        [("changed", vec![]), ("added", vec![]), ("removed", vec![])];
    for (path, value) in now {
        match before.get(path) {
            Some(old) if old != value => groups[0].1.push(path),
            None => groups[1].1.push(path),
            _ => {}
        }
    }
    groups[2].1 = before
        .keys()
        .filter(|p| !now.contains_key(*p))
        .map(String::as_str)
        .collect();
    let parts: Vec<String> = groups
        .iter()
        .filter(|(_, paths)| !paths.is_empty())
        .map(|(verb, paths)| {
            let shown: Vec<&str> = paths.iter().take(MAX_NAMES).copied().collect();
            let more = paths.len() - shown.len();
            let noun = if paths.len() == 1 { "file" } else { "files" };
            let mut s = format!("{noun} {} {verb}", shown.join(", "));
            if more > 0 {
                s.push_str(&format!(" and {more} more"));
            }
            s
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Fingerprints of every file and directory a COPY/ADD selects from a build context (the same
/// selection its cache key digests). URL sources are not listed.
pub(crate) fn context_files(
    req: &CopyRequest,
    memo: &mut HashMemo,
) -> Result<FileMap, ContextError> {
    let local: Vec<String> = req
        .sources
        .iter()
        .filter(|s| !s.starts_with("http://") && !s.starts_with("https://"))
        .cloned()
        .collect();
    let opts = SelectOptions {
        ignore: req.ignore.as_ref(),
        excludes: req.excludes.clone(),
        scoped_symlinks: false,
    };
    let mut files = FileMap::new();
    for sel in select_sources(&req.source_root, &local, &opts)? {
        let path = sel.root_path();
        let meta = &sel.meta;
        let ft = meta.file_type();
        let detail = if ft.is_file() {
            memo.file_digest(&req.source_root, &path, meta)?
                .hex()
                .to_string()
        } else if ft.is_symlink() {
            std::fs::read_link(&sel.host)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        let shown = if path.is_empty() { ".".into() } else { path };
        files.insert(
            shown,
            format!(
                "{kind}:{:o}:{}:{}:{detail}",
                meta.mode(),
                meta.uid(),
                meta.gid()
            ),
        );
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, &str)]) -> FileMap {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_differences_name_a_few_files_then_count_the_rest() {
        let before = map(&[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("e", "1")]);
        assert_eq!(describe_files(&before, &before), None);
        let mut now = before.clone();
        now.insert("b".into(), "2".into());
        assert_eq!(describe_files(&before, &now).unwrap(), "file b changed");
        for k in ["a", "c", "d", "e"] {
            now.insert(k.into(), "2".into());
        }
        now.insert("z".into(), "1".into());
        now.remove("a");
        assert_eq!(
            describe_files(&before, &now).unwrap(),
            "files b, c, d changed and 1 more; file z added; file a removed"
        );
    }

    fn plan(text: &str) -> Plan<'static> {
        let df = Box::leak(Box::new(crate::dockerfile::parse(text).unwrap()));
        Plan::new(df, crate::plan::BuildOptions::host()).unwrap()
    }

    fn run_inputs(env: &[&str], parent: &Digest) -> StepInputs {
        let op = Op::Run(crate::plan::RunOp {
            argv: vec!["/bin/sh".into(), "-c".into(), "make".into()],
            env: std::sync::Arc::new(env.iter().collect()),
            cwd: "/".into(),
            user: None,
            mounts: vec![],
            mount_sources: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        });
        let key = crate::solver::cache::key(&[
            ("parent", parent.to_string().as_bytes()),
            ("op", &serde_json::to_vec(&op).unwrap()),
        ]);
        StepInputs::new(Some(&key), parent, false, None, &op, &[])
    }

    #[test]
    fn reasons_name_args_environment_and_parents() {
        let root = tempfile::tempdir().unwrap();
        let p = plan("FROM scratch\nARG VERSION=1\nENV X=1\nRUN make\n");
        let ex = Explainer::new(
            root.path(),
            &p,
            Some(Path::new("/nowhere/Dockerfile")),
            None,
        );
        let slot = ex.slot(0, None, 2, "run");
        let parent = Digest::of(b"p");
        let first = run_inputs(&["VERSION=1", "X=1"], &parent);
        assert_eq!(ex.reason(&slot, &first, None), None, "first build");
        let mut built = first.clone();
        built.layer = true;
        ex.record(&slot, &built, None);
        assert_eq!(ex.previous(&slot).as_ref(), Some(&built));
        assert_eq!(
            ex.reason(&slot, &run_inputs(&["VERSION=2", "X=1"], &parent), None)
                .as_deref(),
            Some("build arg VERSION changed")
        );
        assert_eq!(
            ex.reason(&slot, &run_inputs(&["VERSION=1", "X=2"], &parent), None)
                .as_deref(),
            Some("environment variable X changed")
        );
        assert_eq!(
            ex.reason(
                &slot,
                &run_inputs(&["VERSION=1", "X=1"], &Digest::of(b"q")),
                None
            )
            .as_deref(),
            Some("previous step changed")
        );
        let mut rebased = first.clone();
        rebased.base_image = Some("sha256:new".into());
        assert_eq!(
            ex.reason(&slot, &rebased, None).as_deref(),
            Some("base image changed (none → sha256:new)")
        );
        assert_eq!(
            ex.reason(&slot, &first, None).as_deref(),
            Some("its cached result was removed (pruned)")
        );
        // Another slot of the same Dockerfile has no history of its own.
        let ex = Explainer::new(
            root.path(),
            &p,
            Some(Path::new("/nowhere/Dockerfile")),
            None,
        );
        assert_eq!(
            ex.reason(&ex.slot(0, None, 3, "run"), &first, None)
                .as_deref(),
            Some("no earlier build of this step")
        );
    }

    #[test]
    fn context_files_fingerprint_content_not_mtime() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::create_dir(ctx.path().join("src")).unwrap();
        std::fs::write(ctx.path().join("src/main.c"), "int main;").unwrap();
        let req = CopyRequest {
            source_root: ctx.path().to_path_buf(),
            from_context: true,
            sources: vec!["src".into()],
            ..Default::default()
        };
        let mut memo = HashMemo::in_memory();
        let before = context_files(&req, &mut memo).unwrap();
        assert!(before.contains_key("src/main.c"), "{before:?}");
        let t = filetime::FileTime::from_unix_time(1, 0);
        filetime::set_file_mtime(ctx.path().join("src/main.c"), t).unwrap();
        assert_eq!(context_files(&req, &mut memo).unwrap(), before);
        std::fs::write(ctx.path().join("src/main.c"), "int main2;").unwrap();
        let now = context_files(&req, &mut memo).unwrap();
        assert_eq!(
            describe_files(&before, &now).unwrap(),
            "file src/main.c changed"
        );
    }
}
