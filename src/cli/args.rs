//! The command line as the user writes it (clap derive). Flag names follow `docker build` and
//! `docker buildx build` so existing scripts keep working.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// rbuild: build container images from Dockerfiles, rootless and without a daemon.
#[derive(Debug, Parser)]
#[command(name = "rbuild", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Directory holding rbuild's content store, cache and snapshots.
    /// Defaults to `$XDG_DATA_HOME/rbuild` (or `~/.local/share/rbuild`).
    #[arg(long, global = true, env = "RBUILD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Log verbosity for diagnostics on stderr (`RUST_LOG` syntax also works via the environment).
    #[arg(long, global = true, value_name = "LEVEL", default_value = "warn")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context directory.
    Build(Box<BuildArgs>),
    /// Push an image from the local store to a registry.
    Push(PushArgs),
    /// Pull an image from a registry into the local store.
    Pull(PullArgs),
    /// List the images in the local store.
    Images(ImagesArgs),
    /// Show an image's manifest and config as JSON.
    Inspect(InspectArgs),
    /// Give an image in the local store another name.
    Tag(TagArgs),
    /// Remove image names from the local store.
    Rmi(RmiArgs),
    /// Log in to a registry and store the credentials the way docker does.
    Login(LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(LogoutArgs),
    /// Remove unreferenced blobs and cache from the local store.
    Prune(PruneArgs),
    /// Show disk usage: images, build cache, snapshots, cache mounts, and what prune reclaims.
    Du(DuArgs),
    /// Tools for looking inside rbuild.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Print a shell completion script or the man page to stdout.
    Completion(CompletionArgs),
}

/// `rbuild completion` options.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// What to generate: a completion script for a shell, or `man` for the rbuild(1) page.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: CompletionTarget,
}

/// Output of `rbuild completion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionTarget {
    /// Bash completion script.
    Bash,
    /// Zsh completion script (`_rbuild`).
    Zsh,
    /// Fish completion script.
    Fish,
    /// Elvish completion script.
    Elvish,
    /// PowerShell completion script.
    Powershell,
    /// The rbuild(1) man page (roff).
    Man,
}

/// `rbuild build` options, shaped like `docker buildx build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory, or `-` to read a Dockerfile (no context) from stdin.
    #[arg(value_name = "PATH|-")]
    pub context: String,

    /// Name and optionally a tag (`name:tag`) for the image; repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,

    /// Name of the Dockerfile (default `PATH/Dockerfile`); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<String>,

    /// Set a build-time variable; a bare `KEY` takes its value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// Build this stage (by name or index) and what it needs, nothing else.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Set metadata on the image; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Target platform(s), e.g. `linux/amd64`.
    #[arg(
        long = "platform",
        value_name = "OS/ARCH[/VARIANT]",
        value_delimiter = ','
    )]
    pub platforms: Vec<String>,

    /// Do not use the cache when building.
    #[arg(long)]
    pub no_cache: bool,

    /// Do not use the cache for these stages.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Always re-resolve base image tags against their registry.
    #[arg(long)]
    pub pull: bool,

    /// Push the image to its registry after building (same as `--output type=image,push=true`).
    #[arg(long)]
    pub push: bool,

    /// Allow plain HTTP (and unverified TLS) for this registry host, for base image pulls and
    /// `--push`; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,

    /// Output destination, e.g. `type=oci,dest=out.tar`, `type=local,dest=dir`.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// External cache source, e.g. `type=registry,ref=REF`.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,

    /// Cache export destination, e.g. `type=registry,ref=REF,mode=max`.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,

    /// Progress output: `auto`, `tty`, `plain`, `rawjson` or `quiet`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Secret to expose to RUN --mount=type=secret: `id=ID,src=FILE` or `id=ID,env=VAR`.
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,

    /// SSH agent socket or keys to expose to RUN --mount=type=ssh: `default` or `ID=PATH`.
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,

    /// Additional named build context: `NAME=DIR`, `NAME=docker-image://REF`,
    /// `NAME=oci-layout://PATH[:TAG]`, `NAME=https://HOST/x.tar`
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    /// Network mode for RUN steps: `default`, `none` or `host`.
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,

    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Write build result metadata (JSON) to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Print only the image ID at the end.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Print the build plan (stages, order, dependencies) and stop.
    #[arg(long)]
    pub dry_run: bool,

    /// Maximum number of stages built at once (default: no limit, as BuildKit's
    /// max-parallelism). Steps of one stage always run in order; parallel work inside a step
    /// (layer compression, downloads) is not counted.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// How build progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// `tty` when stderr is a terminal, else `plain`.
    Auto,
    /// Live progress bars.
    Tty,
    /// BuildKit-style numbered log lines.
    Plain,
    /// One JSON object per event.
    Rawjson,
    /// Only the image ID at the end.
    Quiet,
}

/// `rbuild push` options.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image to push, as named in the local store.
    #[arg(value_name = "NAME[:TAG]")]
    pub image: String,
    /// Push to this reference instead of the image's own name.
    #[arg(value_name = "DESTINATION")]
    pub destination: Option<String>,
    /// Allow plain HTTP (and unverified TLS) for this registry host; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

/// `rbuild pull` options.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. `busybox`, `ghcr.io/owner/app:1.0`.
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub image: String,
    /// Platform to select from a multi-platform image.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Allow plain HTTP (and unverified TLS) for this registry host; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

/// `rbuild images` options.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print only image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print digests.
    #[arg(long)]
    pub digests: bool,
}

/// `rbuild inspect` options.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image name or ID in the local store.
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// `rbuild tag` options.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image name or ID.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// New name.
    #[arg(value_name = "TARGET")]
    pub target: String,
}

/// `rbuild rmi` options.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image names or IDs to remove.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

/// `rbuild login` options.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (default Docker Hub).
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password or token (prefer `--password-stdin`).
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Allow plain HTTP (and unverified TLS) for this registry host.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

/// `rbuild logout` options.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host (default Docker Hub).
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// `rbuild du` options.
#[derive(Debug, Args)]
pub struct DuArgs {
    /// List every blob, snapshot and cache mount instead of one line per kind.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// `rbuild prune` options.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove images, the build cache and `RUN --mount=type=cache` directories, not
    /// only unreferenced blobs and unnamed images.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Keep this much storage (e.g. `10GB`).
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Filter, e.g. `until=24h`.
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
}

/// `rbuild debug` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse a Dockerfile and print its syntax tree.
    Parse(DebugParseArgs),
    /// Print the Markdown CLI reference (`docs/cli.md`) generated from these definitions.
    CliReference,
}

/// `rbuild debug parse` options.
#[derive(Debug, Args)]
pub struct DebugParseArgs {
    /// Dockerfile to parse (`-` for stdin).
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ParseFormat::Text)]
    pub format: ParseFormat,
}

/// Output format of `rbuild debug parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParseFormat {
    /// BuildKit's S-expression-like dump.
    Text,
    /// The stable JSON interface for tools.
    Json,
}
