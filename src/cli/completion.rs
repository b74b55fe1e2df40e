//! Documentation generated from the clap definitions in [`super::args`]: shell completion
//! scripts (`clap_complete`), the rbuild(1) man page (`clap_mangen`) and the Markdown CLI
//! reference checked in as `docs/cli.md`. Generating all three from the same `Command` keeps
//! them from drifting away from what the binary actually accepts.

use std::fmt::Write as _;
use std::io::Write;

use anyhow::Context;
use clap::{Arg, ArgAction, CommandFactory};
use clap_complete::Shell;

use super::args::{Cli, CompletionArgs, CompletionTarget};

/// `rbuild completion SHELL`: writes the script or man page to stdout.
pub(super) fn run(args: &CompletionArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    match args.shell {
        CompletionTarget::Bash => completion_script(Shell::Bash, &mut out),
        CompletionTarget::Zsh => completion_script(Shell::Zsh, &mut out),
        CompletionTarget::Fish => completion_script(Shell::Fish, &mut out),
        CompletionTarget::Elvish => completion_script(Shell::Elvish, &mut out),
        CompletionTarget::Powershell => completion_script(Shell::PowerShell, &mut out),
        CompletionTarget::Man => man_page(&mut out).context("rendering the man page")?,
    }
    write_stdout(&out)
}

/// `rbuild debug cli-reference`: writes the Markdown reference to stdout.
pub(super) fn print_cli_reference() -> anyhow::Result<()> {
    write_stdout(cli_reference().as_bytes())
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    Ok(())
}

/// The fully built command tree: `build()` fills in bin names (`rbuild build`) and the
/// generated `help`/`--version` entries that completions and the reference must show.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

fn completion_script(shell: Shell, out: &mut Vec<u8>) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "rbuild", out);
}

/// One page for the whole tool: the top-level page from `clap_mangen`, then a COMMANDS section
/// with a subsection per subcommand. A single `rbuild.1` is easier to install than a page per
/// subcommand, and `man rbuild` then answers questions about any flag.
fn man_page(out: &mut Vec<u8>) -> std::io::Result<()> {
    let cmd = command();
    let man = clap_mangen::Man::new(cmd.clone());
    // Not `render`: its SUBCOMMANDS section points at rbuild-build(1) and friends, pages
    // that do not exist because everything is on this one page.
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    out.extend_from_slice(
        b".SH COMMANDS\nThe global options above are accepted by every command as well.\n",
    );
    for sub in visible_subcommands(&cmd) {
        man_subcommand(sub, out)?;
    }
    man.render_version_section(out)?;
    out.extend_from_slice(
        b".SH \"EXIT STATUS\"\n\
          0 success; 1 the build or command failed; 2 bad usage, or a feature that is not \
          supported yet.\n\
          .SH \"SEE ALSO\"\n\
          The docs/ directory of the rbuild sources: cli.md, rootless.md, registry\\-auth.md, \
          ci.md, kubernetes.md, differences.md, exit\\-codes.md, completion.md.\n",
    );
    Ok(())
}

/// Renders a subcommand's synopsis and options with `clap_mangen` and demotes its `.SH`
/// headings to `.SS` so that they nest under COMMANDS.
fn man_subcommand(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let name = display_name(cmd);
    let subs: Vec<&clap::Command> = visible_subcommands(cmd).collect();
    if subs.is_empty() {
        let man = clap_mangen::Man::new(without_globals(cmd));
        let mut section = Vec::new();
        man.render_synopsis_section(&mut section)?;
        if cmd
            .get_arguments()
            .any(|a| !a.is_hide_set() && !a.is_global_set())
        {
            man.render_options_section(&mut section)?;
        }
        let section = String::from_utf8_lossy(&section);
        writeln!(out, ".SS \"{name}\"")?;
        if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
            writeln!(out, "{}", roff_escape(&about.to_string()))?;
        }
        for line in section.lines() {
            match line.strip_prefix(".SH ") {
                Some(heading) => {
                    let heading = heading.trim_matches('"');
                    writeln!(out, ".PP\n\\fB{}:\\fR", title_case(heading))?;
                }
                None => writeln!(out, "{line}")?,
            }
        }
    } else {
        for sub in subs {
            man_subcommand(sub, out)?;
        }
    }
    Ok(())
}

/// A subcommand with the propagated global options hidden: the page and the reference list
/// them once, at the top, instead of under every command.
fn without_globals(cmd: &clap::Command) -> clap::Command {
    cmd.clone().mut_args(|arg| {
        if arg.is_global_set() {
            arg.hide(true)
        } else {
            arg
        }
    })
}

fn title_case(heading: &str) -> String {
    let lower = heading.to_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Escapes text for a roff body line: backslashes, and a leading `.` or `'` that roff would
/// take for a request.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn display_name(cmd: &clap::Command) -> String {
    cmd.get_bin_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// The Markdown CLI reference: every subcommand with its usage, arguments and options, help
/// text as written in `args.rs`. Deterministic, so a test can compare it with `docs/cli.md`.
pub(crate) fn cli_reference() -> String {
    let cmd = command();
    let mut md = String::new();
    md.push_str("# rbuild command-line reference\n\n");
    md.push_str(
        "<!-- Generated by `rbuild debug cli-reference` from src/cli/args.rs; do not edit.\n     \
         Regenerate: RBUILD_BLESS=1 cargo test --test docs -->\n\n",
    );
    md.push_str("Commands:\n\n");
    toc(&cmd, &mut md);
    md.push('\n');
    reference_section(&cmd, true, &mut md);
    md
}

fn toc(cmd: &clap::Command, md: &mut String) {
    for sub in visible_subcommands(cmd) {
        let name = display_name(sub);
        let depth = name.split(' ').count().saturating_sub(2);
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(
            md,
            "{}- [`{name}`](#{}): {about}",
            "  ".repeat(depth),
            anchor(&name)
        );
        toc(sub, md);
    }
}

/// GitHub's heading anchors: lowercase, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn reference_section(cmd: &clap::Command, is_root: bool, md: &mut String) {
    let cmd = &if is_root {
        cmd.clone()
    } else {
        without_globals(cmd)
    };
    let name = display_name(cmd);
    let _ = writeln!(md, "## {name}\n");
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(md, "{about}\n");
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let _ = writeln!(md, "```text\n{usage}\n```\n");

    let positionals: Vec<&Arg> = cmd.get_positionals().filter(|a| !a.is_hide_set()).collect();
    if !positionals.is_empty() {
        md.push_str("Arguments:\n\n");
        for arg in positionals {
            arg_entry(arg, md);
        }
        md.push('\n');
    }
    let options: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .collect();
    if !options.is_empty() {
        md.push_str("Options:\n\n");
        for arg in options {
            arg_entry(arg, md);
        }
        md.push('\n');
    }
    for sub in visible_subcommands(cmd) {
        reference_section(sub, false, md);
    }
}

fn arg_entry(arg: &Arg, md: &mut String) {
    let _ = write!(md, "- `{}`", arg_synopsis(arg));
    if let Some(help) = arg.get_long_help().or(arg.get_help()) {
        let help = help.to_string().replace('\n', " ");
        let _ = write!(md, ": {help}");
    }
    let mut notes = Vec::new();
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| match v.get_help() {
            Some(help) => format!("`{}` ({help})", v.get_name()),
            None => format!("`{}`", v.get_name()),
        })
        .collect();
    if !values.is_empty() && takes_value(arg) {
        notes.push(format!("values: {}", values.join(", ")));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && takes_value(arg) {
        notes.push(format!("default: `{}`", defaults.join(",")));
    }
    if let Some(env) = arg.get_env() {
        notes.push(format!("env: `{}`", env.to_string_lossy()));
    }
    if arg.is_global_set() {
        notes.push("global: accepted by every command".to_string());
    }
    let help_says_repeatable = arg
        .get_help()
        .is_some_and(|h| h.to_string().contains("repeatable"));
    if matches!(arg.get_action(), ArgAction::Append)
        && !arg.is_positional()
        && !help_says_repeatable
    {
        notes.push("repeatable".to_string());
    }
    if let Some(delim) = arg.get_value_delimiter() {
        notes.push(format!("`{delim}`-separated lists accepted"));
    }
    if !notes.is_empty() {
        let _ = write!(md, " ({})", notes.join("; "));
    }
    md.push('\n');
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

/// `-t, --tag <NAME[:TAG]>` or `<PATH|->`, the way `--help` shows it.
fn arg_synopsis(arg: &Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|names| {
            names
                .iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase()));
    if arg.is_positional() {
        let repeated = matches!(arg.get_action(), ArgAction::Append);
        return if repeated {
            format!("{value}...")
        } else {
            value
        };
    }
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("-{short}"));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("--{long}"));
    }
    let mut out = names.join(", ");
    if takes_value(arg) {
        out.push(' ');
        out.push_str(&value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_lists_every_subcommand_and_build_flag() {
        let md = cli_reference();
        for sub in Cli::command().get_subcommands() {
            assert!(
                md.contains(&format!("## rbuild {}\n", sub.get_name())),
                "missing section for {}",
                sub.get_name()
            );
        }
        assert!(md.contains("- `--build-arg <KEY[=VALUE]>`: Set a build-time variable"));
        assert!(md.contains("- `-t, --tag <NAME[:TAG]>`"));
        assert!(md.contains("env: `RBUILD_ROOT`"));
        assert!(md.contains("## rbuild debug parse\n"));
    }

    #[test]
    fn anchors_match_github_slugs() {
        assert_eq!(anchor("rbuild debug parse"), "rbuild-debug-parse");
        assert_eq!(anchor("rbuild cli-reference"), "rbuild-cli-reference");
    }

    #[test]
    fn man_page_nests_subcommands_under_commands() {
        let mut out = Vec::new();
        man_page(&mut out).expect("render");
        let page = String::from_utf8(out).expect("utf-8");
        assert!(page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH rbuild 1"));
        assert!(page.contains(".SH COMMANDS\n"));
        assert!(page.contains(".SS \"rbuild build\""));
        assert!(page.contains("build\\-arg"));
        // Only the page's own top-level sections are .SH; subcommand ones were demoted.
        assert_eq!(page.matches(".SH OPTIONS").count(), 1);
        assert!(
            !page.contains("rbuild\\-build(1)"),
            "no links to pages that do not exist"
        );
    }

    #[test]
    fn roff_escape_protects_leading_dot() {
        assert_eq!(roff_escape(".hidden"), "\\&.hidden");
        assert_eq!(roff_escape("a\\b-c"), "a\\eb\\-c");
    }
}
