//! The command-line edge: argument parsing, dispatch, error printing and exit codes.
//! This is the only module that uses `anyhow` and prints to stdout/stderr.
//!
//! Exit codes: 0 success; 1 the build or command failed; 2 bad usage or a feature that is not
//! built yet (`rbuild: <flag> is not supported yet`, also when refused for one Dockerfile line).

pub mod args;
mod build;
mod cache_spec;
mod completion;
mod debug;
mod diagnostic;
mod du;
mod images;
mod progress;
mod registry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// An error at the CLI edge that decides its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag or subcommand whose feature is not built yet.
    #[error("{0} is not supported yet")]
    Unsupported(String),
    /// Arguments that parse but make no sense together.
    #[error("{0}")]
    Usage(String),
}

/// Settings every subcommand shares.
#[derive(Debug, Clone)]
pub struct Globals {
    /// The store root (`--root`).
    pub root: PathBuf,
}

/// Entry point used by `main`: parse, run, print the error chain, map to an exit code.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let globals = Globals {
        root: cli.root.clone().unwrap_or_else(default_root),
    };
    if matches!(cli.command, Command::Build(_)) {
        // Warnings logged before the build's progress view exists wait for it.
        progress::hold_warnings();
    }
    let dockerfile = match &cli.command {
        Command::Build(args) => Some((diagnostic::dockerfile_of(args), args.context.clone())),
        _ => None,
    };
    let result = run(cli.command, &globals);
    for message in progress::release_held_warnings() {
        eprintln!("WARNING: {message}");
    }
    if let Some(signal) = crate::exec::interrupted() {
        // A build stopped by SIGINT/SIGTERM (sandboxes killed, snapshots cleaned up) ends
        // like a shell job killed by that signal.
        eprintln!("rbuild: interrupted by signal {signal}; the build was stopped");
        return ExitCode::from(128 + signal as u8);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some((source, context)) = &dockerfile {
                print_build_context(&err, source, context);
            }
            eprintln!("rbuild: {}", render_error(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

fn run(command: Command, globals: &Globals) -> anyhow::Result<()> {
    match command {
        Command::Build(args) => build::run(*args, globals),
        Command::Push(args) => registry::push(args, globals),
        Command::Pull(args) => registry::pull(args, globals),
        Command::Login(args) => registry::login(args, globals),
        Command::Logout(args) => registry::logout(args, globals),
        Command::Images(args) => images::images(args, globals),
        Command::Inspect(args) => images::inspect(args, globals),
        Command::Tag(args) => images::tag(args, globals),
        Command::Rmi(args) => images::rmi(args, globals),
        Command::Prune(args) => images::prune(args, globals),
        Command::Du(args) => du::du(args, globals),
        Command::Debug(cmd) => debug::run(cmd, globals),
        Command::Completion(args) => completion::run(&args),
    }
}

/// For a build that failed on one Dockerfile line: the excerpt around it and a hint, before
/// the final `rbuild: <cause>` line (which stays last, as BuildKit's `ERROR:` line does).
fn print_build_context(err: &anyhow::Error, source: &diagnostic::DockerfileSource, context: &str) {
    let Some(line) = diagnostic::failing_line(err) else {
        return;
    };
    if let Some(text) = source.text()
        && let Some(excerpt) = diagnostic::excerpt(&source.name, &text, line)
    {
        eprint!("{excerpt}");
    }
    if let Some(hint) = diagnostic::hint(err, Some(context)) {
        eprintln!("hint: {hint}");
    }
}

/// Joins the error chain as `outer: cause: root cause`, skipping causes whose text the outer
/// message already contains (thiserror's `#[error("...: {0}")]` would otherwise repeat them).
fn render_error(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// 2 for usage errors and for any feature that is not built yet, wherever in the chain it was
/// refused (the CLI, the solver for one Dockerfile line, an exporter, the registry client);
/// 1 for everything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    let not_built_yet = |cause: &(dyn std::error::Error + 'static)| {
        matches!(
            cause.downcast_ref::<CliError>(),
            Some(CliError::Unsupported(_) | CliError::Usage(_))
        ) || matches!(
            cause.downcast_ref::<crate::solver::SolveError>(),
            Some(crate::solver::SolveError::Unsupported { .. })
        ) || matches!(
            cause.downcast_ref::<crate::export::Error>(),
            Some(crate::export::Error::Unsupported(_))
        ) || matches!(
            cause.downcast_ref::<crate::registry::RegistryError>(),
            Some(crate::registry::RegistryError::Unsupported(_))
        ) || matches!(
            cause.downcast_ref::<crate::context::ContextError>(),
            Some(crate::context::ContextError::Unsupported(_))
        )
    };
    if err.chain().any(not_built_yet) { 2 } else { 1 }
}

/// Rust ignores SIGPIPE (and socket writes to a registry that hung up must stay plain `EPIPE`
/// errors that the retry logic handles), so `rbuild inspect x | head` would end in a panic
/// on the first `println!` after the reader left. Treat exactly that as a normal end, as
/// command-line tools do; every other panic keeps the default report.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout")
            && message.contains(&std::io::Error::from(std::io::ErrorKind::BrokenPipe).to_string())
        {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

/// Diagnostics to stderr at `level` (or `RUST_LOG`), except that warnings logged while a
/// build's progress view is up go through that view (so they do not garble the tty view and
/// rawjson stays pure JSON lines).
fn init_logging(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, filter};

    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Decided per event (not cached per call site): routing is on only while a build runs.
    let not_routed = filter::dynamic_filter_fn(|meta, _| {
        *meta.level() != tracing::Level::WARN || !progress::warnings_routed()
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .without_time()
        .with_filter(not_routed);
    let _ = tracing_subscriber::registry()
        .with(env)
        .with(stderr)
        .with(progress::ProgressWarnings)
        .try_init();
}

/// `$XDG_DATA_HOME/rbuild`, else `$HOME/.local/share/rbuild`.
fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("rbuild");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/rbuild")
}

/// Refuses a feature that is not built yet, with the one message users and scripts can rely on.
pub(crate) fn unsupported(what: &str) -> anyhow::Error {
    CliError::Unsupported(what.to_string()).into()
}
