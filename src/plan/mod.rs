//! The build plan: stages, ARG/ENV scoping and a DAG of operations, each with what its cache key needs.
//!
//! Two phases, as BuildKit's `dockerfile2llb`:
//! 1. [`Plan::new`] reads the instructions into stages, evaluates global ARGs, expands every
//!    `FROM` line, resolves bases and `--from` references to stages, images or named contexts,
//!    picks the `--target` stage and prunes what it does not need.
//! 2. [`Plan::dispatch`] walks the needed stages in dependency order with each stage's
//!    variables (base image ENV, stage ARGs, `--build-arg`s), turning every instruction into an
//!    [`Op`] with expanded values, an updated image config and the history line BuildKit writes.

mod args;
mod dispatch;
mod display;
mod env;
mod expand;
mod meta;
mod stages;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::dockerfile::instructions::{
    Instruction, InstructionError, NetworkMode, RunMount, SecurityMode,
};
use crate::dockerfile::{Dockerfile, Node};
use crate::image::Platform;

pub use args::{PROXY_ARGS, parse_source_date_epoch};
pub use dispatch::{EmptyImages, ImageResolver, ResolvedImage, StageDispatch, parse_trigger};
pub use env::RunEnv;

/// What a build was asked to do, as far as planning needs it.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `--build-arg` values (bare `KEY` already filled from the environment by the CLI).
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name (case-insensitive) or index.
    pub target: Option<String>,
    /// The platform images are built for.
    pub target_platform: Platform,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// Names given with `--build-context NAME=DIR`.
    pub named_contexts: BTreeSet<String>,
    /// `--build-context NAME=docker-image://REF`: the name stands for that image.
    pub context_images: BTreeMap<String, String>,
}

impl BuildOptions {
    /// Options for the host platform with no arguments.
    pub fn host() -> BuildOptions {
        BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            named_contexts: BTreeSet::new(),
            context_images: BTreeMap::new(),
        }
    }
}

/// Where a stage (or a `COPY --from`, `RUN --mount from=`) takes its files from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `scratch`: nothing.
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference as written (after expansion).
    Image(String),
    /// A `--build-context` name.
    Context(String),
    /// The main build context (only for COPY/ADD without `--from`).
    MainContext,
}

/// One stage: a `FROM` and the instructions up to the next one. Nodes are borrowed from the
/// parsed [`Dockerfile`] (cloning them cost a sixth of planning a large file).
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    /// Position in the Dockerfile (0-based).
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The base, resolved.
    pub base: Source,
    /// `FROM --platform` after expansion.
    pub platform: Option<String>,
    /// The `FROM` node.
    pub from: &'a Node,
    /// The instructions after `FROM`, typed.
    pub commands: Vec<(&'a Node, Instruction<'a>)>,
    /// Stages this one needs (base, `COPY --from`, `RUN --mount from=`).
    pub deps: BTreeSet<usize>,
}

impl Stage<'_> {
    /// `name` if set, else the index, as BuildKit names stages in messages.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// A Dockerfile read into stages, with the target chosen. Borrows the [`Dockerfile`]'s nodes.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// Every stage in source order.
    pub stages: Vec<Stage<'a>>,
    /// The stage the build produces.
    pub target: usize,
    /// Stages the target needs (itself included), dependencies before dependents.
    pub order: Vec<usize>,
    /// Global ARG values (declared before the first FROM), after overrides.
    pub global_args: BTreeMap<String, Option<String>>,
    /// The Dockerfile's escape character.
    pub escape: char,
    /// The options the plan was made with.
    pub options: BuildOptions,
    /// Stage index by (lower-case) name: every `--from` of every step looks a name up.
    pub(crate) stage_names: BTreeMap<String, usize>,
}

/// What one planned step does to the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Only the image config changes (ENV, LABEL, CMD, ...).
    Metadata,
    /// `WORKDIR`: create the directory (and parents) if missing.
    Mkdir {
        /// Absolute path.
        path: String,
        /// The stage's USER at that point, for ownership.
        user: Option<String>,
    },
    /// `COPY` or `ADD`.
    Copy(CopyOp),
    /// `RUN`.
    Run(RunOp),
}

/// A planned `COPY`/`ADD`, every value expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyOp {
    /// True for `ADD` (URLs, archives unpacked).
    pub add: bool,
    /// Where the sources are read from.
    pub from: Source,
    /// Source paths/patterns (for heredocs, the heredoc name).
    pub sources: Vec<String>,
    /// Inline files from heredocs: (name, content).
    pub heredocs: Vec<(String, String)>,
    /// Destination as written, made absolute against WORKDIR (a trailing `/` kept).
    pub dest: String,
    /// `--chown` (expanded).
    pub chown: Option<String>,
    /// `--chmod` (octal or symbolic, validated).
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// ADD `--checksum`.
    pub checksum: Option<String>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD `--unpack`.
    pub unpack: Option<bool>,
}

/// A planned `RUN`, every value resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOp {
    /// Full argv (the SHELL prepended for shell form).
    pub argv: Vec<String>,
    /// Environment: image ENV, then stage ARGs and proxy args. Shared by the RUNs of a stage
    /// that see the same ENV and ARGs; serialized as a plain list (cache keys depend on it).
    pub env: Arc<RunEnv>,
    /// Working directory.
    pub cwd: String,
    /// USER at this point.
    pub user: Option<String>,
    /// Mounts, expanded; `from` resolved into `mount_sources` by position.
    pub mounts: Vec<RunMount>,
    /// Resolved `from=` of each mount (`MainContext` when none).
    pub mount_sources: Vec<Source>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
    /// Heredoc bodies (name, content) for heredoc RUNs.
    pub heredocs: Vec<(String, String)>,
}

/// One dispatched instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Source line.
    pub line: usize,
    /// Instruction name.
    pub instruction: &'static str,
    /// What it does to the filesystem.
    pub op: Op,
    /// The history line BuildKit writes for it (shared with the image config's history).
    pub created_by: Arc<str>,
    /// Whether it adds no layer.
    pub empty_layer: bool,
}

/// Everything that can go wrong while planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An instruction failed validation.
    #[error(transparent)]
    Instruction(#[from] InstructionError),
    /// No FROM at all.
    #[error("the Dockerfile has no FROM instruction")]
    NoStages,
    /// An instruction other than ARG before the first FROM.
    #[error("line {line}: no build stage in current context: {instruction} must come after FROM")]
    BeforeFrom {
        /// Line of the instruction.
        line: usize,
        /// Instruction name.
        instruction: String,
    },
    /// Two stages with one name.
    #[error("line {line}: duplicate stage name {name:?} (first defined on line {first_line})")]
    DuplicateStage {
        /// The name.
        name: String,
        /// Second definition.
        line: usize,
        /// First definition.
        first_line: usize,
    },
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found{hint}")]
    UnknownTarget {
        /// What was asked for.
        target: String,
        /// ` (did you mean x?)` or empty.
        hint: String,
    },
    /// A stage used before its definition (or by itself).
    #[error(
        "line {line}: stage {name:?} is used before it is defined (line {defined_line}); a stage can only use earlier stages"
    )]
    ForwardReference {
        /// The name used.
        name: String,
        /// Where it was used.
        line: usize,
        /// Where the stage is defined.
        defined_line: usize,
    },
    /// A word could not be expanded or a value is invalid.
    #[error("line {line}: {instruction}: {message}")]
    Invalid {
        /// Line of the instruction.
        line: usize,
        /// Instruction name.
        instruction: String,
        /// What is wrong.
        message: String,
    },
    /// The base image could not be resolved.
    #[error("line {line}: FROM {image}: {message}")]
    Base {
        /// Line of FROM.
        line: usize,
        /// The reference.
        image: String,
        /// Why.
        message: String,
    },
}

impl PlanError {
    /// The Dockerfile line the error is about, when it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            PlanError::Instruction(e) => Some(e.line),
            PlanError::BeforeFrom { line, .. }
            | PlanError::DuplicateStage { line, .. }
            | PlanError::ForwardReference { line, .. }
            | PlanError::Invalid { line, .. }
            | PlanError::Base { line, .. } => Some(*line),
            PlanError::NoStages | PlanError::UnknownTarget { .. } => None,
        }
    }

    pub(crate) fn invalid(node: &Node, message: impl Into<String>) -> PlanError {
        PlanError::Invalid {
            line: node.start_line,
            instruction: node.instruction.to_uppercase(),
            message: message.into(),
        }
    }
}

impl<'a> Plan<'a> {
    /// Reads `dockerfile` into stages and picks the target (phase 1).
    pub fn new(dockerfile: &'a Dockerfile, options: BuildOptions) -> Result<Plan<'a>, PlanError> {
        stages::build(dockerfile, options)
    }

    /// Build args that no needed stage declares (BuildKit warns about these).
    pub fn unused_build_args(&self) -> Vec<String> {
        args::unused(self)
    }
}

#[cfg(test)]
mod tests;
