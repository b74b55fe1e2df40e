//! Phase 2 of planning: each needed stage's instructions expanded with that stage's variables
//! and turned into [`Step`]s, while the image config evolves exactly as BuildKit's
//! `dockerfile2llb` dispatch changes it (history lines included).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::args::{self, PROXY_ARGS};
use super::expand::{self, Vars};
use super::meta;
use super::{Plan, PlanError, RunEnv, Source, Stage, Step};
use crate::dockerfile::instructions::Instruction;
use crate::dockerfile::{Node, VarLookup};
use crate::image::{Digest, ImageConfig, Platform};

/// Docker's default PATH for Linux, set on images built from scratch.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image a stage starts from, as the driver found it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Normalised reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The manifest digest in the local store, if any.
    pub manifest_digest: Option<Digest>,
    /// The image config.
    pub config: ImageConfig,
}

impl ResolvedImage {
    /// `reference` with an empty config and no digest: what `--dry-run` plans for a base that
    /// is not in the store.
    pub fn empty(reference: &str) -> ResolvedImage {
        ResolvedImage {
            name: reference.to_string(),
            manifest_digest: None,
            config: ImageConfig::default(),
        }
    }
}

/// Resolves every base to [`ResolvedImage::empty`]: planning with no store and no I/O (the
/// front-end benchmark and the `plan` fuzz target).
pub struct EmptyImages;

impl ImageResolver for EmptyImages {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
        Ok(ResolvedImage::empty(reference))
    }
}

/// Parses one ONBUILD trigger expression, as an image config's `OnBuild` stores it, into its
/// node: the `parse_trigger` that [`Plan::dispatch`] takes.
pub fn parse_trigger(text: &str) -> Result<Node, String> {
    let df = crate::dockerfile::parse(text).map_err(|e| e.to_string())?;
    df.nodes
        .into_iter()
        .next()
        .ok_or_else(|| "empty trigger".to_string())
}

/// Finds base images (in the local store, pulling if needed) for the planner.
pub trait ImageResolver: Sync {
    /// The image `reference` (as written in the Dockerfile) for `platform`.
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String>;
}

/// One needed stage after dispatch.
#[derive(Debug, Clone)]
pub struct StageDispatch {
    /// Stage index.
    pub index: usize,
    /// The resolved base.
    pub base: Source,
    /// The base image, when the base is an image.
    pub base_image: Option<ResolvedImage>,
    /// The stage's steps (ONBUILD triggers of the base first).
    pub steps: Vec<Step>,
    /// The final image config: the base's config and history plus one history entry per step
    /// (with `created` unset; the driver stamps it). `rootfs.diff_ids` holds only the base's.
    pub config: ImageConfig,
    /// Index into `config.history` of the first entry this stage added.
    pub first_new_history: usize,
    /// Line of the stage's FROM.
    pub from_line: usize,
}

/// Stage state while dispatching.
pub(crate) struct State<'a> {
    pub plan: &'a Plan<'a>,
    pub stage: &'a Stage<'a>,
    pub config: ImageConfig,
    /// Declared stage ARGs with their values, in declaration order (each name once: a
    /// redeclaration replaces the earlier entry).
    pub args: Vec<(String, Option<String>)>,
    pub cmd_set: bool,
    pub predefined: &'a Vars,
    /// The RUN environment last built, shared by every RUN until ENV or ARG changes it
    /// ([`State::env_changed`]); most RUNs in a stage see the same environment, and copying
    /// it into each was a dozen allocations per RUN.
    pub run_env: Option<Arc<RunEnv>>,
    /// The buffer the last history line was written in, reused for the next one (each step's
    /// line is then copied once, into the `Arc` the step and the image history share).
    pub history_buf: String,
}

/// Variables for expansion: stage ARGs, overridden by ENV. Looked up in place rather than
/// collected into a map, since every word of every instruction asks (a map per word made
/// planning quadratic in the number of ARG/ENV lines).
impl VarLookup for State<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.var(name).map(Cow::Borrowed)
    }
}

impl State<'_> {
    /// A variable's value, borrowed: ENV first, then the last declaration of a stage ARG.
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        // `KEY=value` entries whose key is `name`, compared in place: splitting every entry
        // at its `=` was a search per entry per lookup. A name holding `=` never matches a
        // key (keys end at the first `=`).
        let env = if name.contains('=') {
            None
        } else {
            self.config
                .config
                .env
                .iter()
                .rev()
                .find_map(|e| env_value(e, name))
        };
        // An ARG without a value leaves it unset.
        env.or_else(|| {
            self.args
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_deref())
        })
    }

    pub(crate) fn expand(&self, node: &Node, word: &str) -> Result<String, PlanError> {
        expand::expand(word, self, self.plan.escape).map_err(|m| PlanError::invalid(node, m))
    }

    /// [`State::expand`], borrowing words that expansion leaves as they are.
    pub(crate) fn expand_cow<'w>(
        &self,
        node: &Node,
        word: &'w str,
    ) -> Result<Cow<'w, str>, PlanError> {
        expand::expand_cow(word, self, self.plan.escape).map_err(|m| PlanError::invalid(node, m))
    }

    /// The working directory (`/` when unset or empty).
    pub(crate) fn workdir(&self) -> &str {
        match self.config.config.working_dir.as_deref() {
            Some(w) if !w.is_empty() => w,
            _ => "/",
        }
    }

    /// What `--from=name` (already expanded) means from this stage.
    pub(crate) fn resolve_from(&self, node: &Node, name: &str) -> Result<Source, PlanError> {
        if self.plan.options.named_contexts.contains(name) {
            return Ok(Source::Context(name.to_string()));
        }
        if let Some(image) = self.plan.options.context_images.get(name) {
            return Ok(Source::Image(image.clone()));
        }
        let by_name = match self.plan.stage_names.get(name) {
            Some(&i) => Some(i),
            None if name.bytes().any(|b| !b.is_ascii_lowercase()) => {
                self.plan.stage_names.get(&name.to_lowercase()).copied()
            }
            None => None,
        };
        let found = by_name.or_else(|| name.parse::<usize>().ok());
        match found {
            Some(i) if i < self.stage.index => Ok(Source::Stage(i)),
            Some(i) if i < self.plan.stages.len() => Err(PlanError::ForwardReference {
                name: name.to_string(),
                line: node.start_line,
                defined_line: self.plan.stages[i].from.start_line,
            }),
            _ => Ok(Source::Image(name.to_string())),
        }
    }

    /// Forgets the shared RUN environment: call after changing ENV or the stage's ARGs.
    pub(crate) fn env_changed(&mut self) {
        self.run_env = None;
    }

    /// The RUN environment, shared with earlier RUNs while ENV and ARG are unchanged.
    pub(crate) fn shared_run_env(&mut self) -> Arc<RunEnv> {
        if let Some(env) = &self.run_env {
            return Arc::clone(env);
        }
        let env = Arc::new(self.run_env());
        self.run_env = Some(Arc::clone(&env));
        env
    }

    /// The RUN environment: ENV, then declared ARGs not shadowed by ENV, then proxy build args.
    pub(crate) fn run_env(&self) -> RunEnv {
        let image_env = &self.config.config.env;
        let proxies = || {
            PROXY_ARGS
                .iter()
                .filter_map(|p| Some((*p, self.plan.options.build_args.get(*p)?)))
        };
        let entries = image_env.len() + self.args.len() + 1 + proxies().count();
        let bytes = image_env.iter().map(String::len).sum::<usize>()
            + "PATH=".len()
            + DEFAULT_PATH.len()
            + self
                .args
                .iter()
                .map(|(k, v)| k.len() + 1 + v.as_ref().map_or(0, String::len))
                .sum::<usize>();
        let mut env = RunEnv::with_capacity(entries, bytes);
        for e in image_env {
            env.push_parts(&[e]);
        }
        // Which names the environment already holds. A linear scan beats hashing for the
        // usual few dozen entries; very large environments get a set.
        let keys: Option<HashSet<&str>> = (image_env.len() * (self.args.len() + 1) > 4096)
            .then(|| image_env.iter().map(|e| env_key(e)).collect());
        let in_image = |k: &str| match &keys {
            Some(set) => set.contains(k),
            None => image_env.iter().any(|e| env_value(e, k).is_some()),
        };
        if !in_image("PATH") {
            env.push_parts(&["PATH=", DEFAULT_PATH]);
        }
        // Stage ARG names are unique (see `args`), so only ENV can shadow one.
        for (k, v) in &self.args {
            if let Some(v) = v
                && k != "PATH"
                && !in_image(k)
            {
                env.push_parts(&[k, "=", v]);
            }
        }
        for (p, v) in proxies() {
            let declared = self.args.iter().any(|(k, v)| k == p && v.is_some());
            if !declared && !in_image(p) {
                env.push_parts(&[p, "=", v]);
            }
        }
        env
    }
}

impl Plan<'_> {
    /// Dispatches every needed stage in dependency order (phase 2). `parse_trigger` parses one
    /// ONBUILD trigger expression of a base image into a node.
    pub fn dispatch(
        &self,
        resolver: &dyn ImageResolver,
        parse_trigger: &dyn Fn(&str) -> Result<Node, String>,
    ) -> Result<BTreeMap<usize, StageDispatch>, PlanError> {
        let mut done: BTreeMap<usize, StageDispatch> = BTreeMap::new();
        let target_name = self.stages[self.target].name.clone().unwrap_or_default();
        let predefined = args::predefined(
            &self.options.target_platform,
            &self.options.build_platform,
            &target_name,
        );
        for &i in &self.order {
            let stage = &self.stages[i];
            let platform = match &stage.platform {
                Some(p) => p
                    .parse::<Platform>()
                    .map_err(|e| PlanError::invalid(stage.from, e.to_string()))?,
                None => self.options.target_platform.clone(),
            };
            let (config, base_image) = match &stage.base {
                Source::Stage(p) => (done[p].config.clone(), None),
                Source::Image(r) => {
                    let img =
                        resolver
                            .resolve(r, &platform)
                            .map_err(|message| PlanError::Base {
                                line: stage.from.start_line,
                                image: r.clone(),
                                message,
                            })?;
                    let mut c = img.config.clone();
                    c.created = None;
                    (c, Some(img))
                }
                Source::Scratch | Source::Context(_) | Source::MainContext => {
                    (empty_config(&platform), None)
                }
            };
            let mut state = State {
                plan: self,
                stage,
                config,
                args: Vec::new(),
                cmd_set: false,
                predefined: &predefined,
                run_env: None,
                history_buf: String::new(),
            };
            let first_new_history = state.config.history.len();
            let mut steps = Vec::new();
            if let Source::Context(name) = &stage.base {
                // A stage based on a `--build-context` directory starts with its files.
                steps.push(Step {
                    line: stage.from.start_line,
                    instruction: "FROM",
                    op: super::Op::Copy(super::CopyOp {
                        add: false,
                        from: Source::Context(name.clone()),
                        sources: vec![".".into()],
                        heredocs: Vec::new(),
                        dest: "/".into(),
                        chown: None,
                        chmod: None,
                        link: false,
                        parents: false,
                        excludes: Vec::new(),
                        checksum: None,
                        keep_git_dir: false,
                        unpack: None,
                    }),
                    created_by: format!("FROM {name}").into(),
                    empty_layer: false,
                });
            }
            if base_image.is_some() && !state.config.config.on_build.is_empty() {
                let triggers = std::mem::take(&mut state.config.config.on_build);
                for t in triggers {
                    let node = parse_trigger(&t).map_err(|m| {
                        PlanError::invalid(stage.from, format!("ONBUILD trigger {t:?}: {m}"))
                    })?;
                    let instr = Instruction::parse(&node)?;
                    steps.push(meta::dispatch_one(&mut state, &node, &instr)?);
                }
            }
            for (node, instr) in &stage.commands {
                steps.push(meta::dispatch_one(&mut state, node, instr)?);
            }
            for step in &steps {
                state.config.history.push(crate::image::History {
                    created: None,
                    created_by: Some(Arc::clone(&step.created_by)),
                    author: None,
                    comment: Some(Cow::Borrowed("buildkit.dockerfile.v0")),
                    empty_layer: step.empty_layer,
                });
            }
            done.insert(
                i,
                StageDispatch {
                    index: i,
                    base: stage.base.clone(),
                    base_image,
                    steps,
                    config: state.config,
                    first_new_history,
                    from_line: stage.from.start_line,
                },
            );
        }
        Ok(done)
    }
}

/// The value of environment entry `entry` (`KEY=value`, or a bare `KEY` meaning empty) if its
/// key is `name`, which holds no `=`. The byte after the name is checked before the name
/// itself: every variable lookup scans the whole environment, and most entries differ there.
pub(crate) fn env_value<'e>(entry: &'e str, name: &str) -> Option<&'e str> {
    let n = name.len();
    let b = entry.as_bytes();
    match b.get(n) {
        None if b.len() == n && entry == name => Some(""),
        Some(b'=') if &b[..n] == name.as_bytes() => Some(&entry[n + 1..]),
        _ => None,
    }
}

/// The name part of a `KEY=value` environment entry.
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |p| p.0)
}

/// BuildKit's `emptyImage`: the platform, default PATH and `/` as working directory.
pub(crate) fn empty_config(platform: &Platform) -> ImageConfig {
    let mut c = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        ..Default::default()
    };
    c.config.env = vec![format!("PATH={DEFAULT_PATH}")];
    c.config.working_dir = Some("/".into());
    c
}
