//! Typed instructions built from parser [`Node`](super::Node)s, with every flag validated.
//!
//! Mirrors BuildKit's `frontend/dockerfile/instructions`: one type per instruction, flags parsed
//! by BuildKit's `bflag` rules, argument counts and values checked, error messages in BuildKit's
//! words. Nothing is expanded here: words keep their `$VAR`s and quotes so the planner can
//! expand them with the right variables for each stage.

mod copy;
mod flags;
mod healthcheck;
mod mount;
mod run;
pub(crate) mod suggest;

use std::borrow::Cow;

use serde::Serialize;

pub use copy::{AddInstr, CopyInstr};
pub use healthcheck::Healthcheck;
pub use mount::{CacheSharing, MountKind, RunMount, WordExpander};
pub use run::{NetworkMode, SecurityMode};

use super::{Heredoc, Node};
use flags::{FlagKind, Flags};

/// A command line as CMD, ENTRYPOINT and RUN carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandLine<'a> {
    /// Exec form: the argv. Shell form: one string, the command text (borrowed from the node
    /// unless continuation pieces had to be joined).
    pub args: Vec<Cow<'a, str>>,
    /// True for shell form (the stage's SHELL is prepended when it runs).
    pub prepend_shell: bool,
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FromInstr<'a> {
    /// The base: image reference, stage name, or `scratch` (unexpanded).
    pub image: &'a str,
    /// The stage name, lower-cased as BuildKit does.
    pub name: Option<String>,
    /// `--platform=` (unexpanded).
    pub platform: Option<&'a str>,
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInstr<'a> {
    /// The command.
    pub cmd: CommandLine<'a>,
    /// Raw `--mount` values (expanded and re-parsed by the planner).
    pub mount_specs: Vec<&'a str>,
    /// The mounts as far as they can be validated before expansion.
    pub mounts: Vec<RunMount>,
    /// `--network=`.
    pub network: Option<NetworkMode>,
    /// `--security=`.
    pub security: Option<SecurityMode>,
    /// Heredocs attached to the instruction.
    pub heredocs: &'a [Heredoc],
}

/// `ARG name[=default] ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgInstr<'a> {
    /// Each declared name with its unexpanded default.
    pub args: Vec<(&'a str, Option<&'a str>)>,
}

/// `ONBUILD <instruction>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnbuildInstr<'a> {
    /// The trigger's source text, as stored in the image config's `OnBuild`.
    pub expression: &'a str,
    /// The trigger, validated.
    pub trigger: Box<Instruction<'a>>,
}

/// One typed instruction. Words borrow the parsed [`Node`]'s text (typing every instruction
/// of a large Dockerfile used to copy each of its words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Instruction<'a> {
    /// `FROM`.
    From(FromInstr<'a>),
    /// `RUN`.
    Run(RunInstr<'a>),
    /// `CMD`.
    Cmd(CommandLine<'a>),
    /// `LABEL k=v ...` (unexpanded pairs).
    Label(Vec<(&'a str, &'a str)>),
    /// `MAINTAINER name`.
    Maintainer(&'a str),
    /// `EXPOSE port[/proto] ...` (unexpanded, sorted as BuildKit sorts them).
    Expose(Vec<&'a str>),
    /// `ENV k=v ...` (unexpanded pairs).
    Env(Vec<(&'a str, &'a str)>),
    /// `ADD`.
    Add(AddInstr<'a>),
    /// `COPY`.
    Copy(CopyInstr<'a>),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine<'a>),
    /// `VOLUME path ...` (unexpanded).
    Volume(Vec<&'a str>),
    /// `USER user[:group]` (unexpanded).
    User(&'a str),
    /// `WORKDIR path` (unexpanded).
    Workdir(&'a str),
    /// `ARG`.
    Arg(ArgInstr<'a>),
    /// `ONBUILD`.
    Onbuild(OnbuildInstr<'a>),
    /// `STOPSIGNAL signal` (unexpanded).
    StopSignal(&'a str),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL ["exe", "arg"...]`.
    Shell(Vec<&'a str>),
}

/// An instruction that cannot be built: names the instruction and its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {instruction}: {message}")]
pub struct InstructionError {
    /// 1-based source line of the instruction.
    pub line: usize,
    /// Upper-case instruction name.
    pub instruction: String,
    /// BuildKit's wording of the problem.
    pub message: String,
}

impl<'a> Instruction<'a> {
    /// Builds the typed instruction for `node`, validating flags and arguments.
    pub fn parse(node: &'a Node) -> Result<Instruction<'a>, InstructionError> {
        parse_node(node).map_err(|message| InstructionError {
            line: node.start_line,
            instruction: node.instruction.to_uppercase(),
            message,
        })
    }

    /// The upper-case instruction name.
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Env(_) => "ENV",
            Instruction::Add(_) => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Arg(_) => "ARG",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
        }
    }
}

fn no_flags(node: &Node) -> Result<(), String> {
    Flags::parse(&node.flags, &[]).map(|_| ())
}

fn exactly_one<'a>(node: &'a Node, name: &str) -> Result<&'a str, String> {
    no_flags(node)?;
    match node.args.as_slice() {
        [one] => Ok(one),
        _ => Err(format!("{name} requires exactly one argument")),
    }
}

fn at_least_one(node: &Node, name: &str) -> Result<(), String> {
    no_flags(node)?;
    if node.args.is_empty() {
        return Err(format!("{name} requires at least one argument"));
    }
    Ok(())
}

fn command_line(node: &Node) -> CommandLine<'_> {
    let args = match node.args.as_slice() {
        [one] => vec![Cow::Borrowed(one.as_str())],
        all if node.json_form || all.is_empty() => {
            all.iter().map(|a| Cow::Borrowed(a.as_str())).collect()
        }
        all => vec![Cow::Owned(all.join(" "))],
    };
    CommandLine {
        args,
        prepend_shell: !node.json_form,
    }
}

fn pairs<'a>(node: &'a Node, name: &str) -> Result<Vec<(&'a str, &'a str)>, String> {
    at_least_one(node, name)?;
    if !node.args.len().is_multiple_of(2) {
        return Err(format!("{name} has too many arguments"));
    }
    node.args
        .chunks(2)
        .map(|kv| {
            if kv[0].is_empty() {
                Err(format!("{name} names can not be blank"))
            } else {
                Ok((kv[0].as_str(), kv[1].as_str()))
            }
        })
        .collect()
}

const RUN_FLAGS: &[(&str, FlagKind)] = &[
    ("mount", FlagKind::Strings),
    ("network", FlagKind::String),
    ("security", FlagKind::String),
];

fn parse_node(node: &Node) -> Result<Instruction<'_>, String> {
    // The parser already upper-cases names; only hand-made nodes need the conversion.
    let name = if node
        .instruction
        .bytes()
        .any(|b| b.is_ascii_lowercase() || !b.is_ascii())
    {
        std::borrow::Cow::Owned(node.instruction.to_uppercase())
    } else {
        std::borrow::Cow::Borrowed(&*node.instruction)
    };
    Ok(match name.as_ref() {
        "FROM" => {
            let flags = Flags::parse(&node.flags, &[("platform", FlagKind::String)])?;
            let stage = match node.args.as_slice() {
                [_] => None,
                [_, kw, stage] if kw.eq_ignore_ascii_case("as") => {
                    let lower = stage.to_lowercase();
                    let valid = lower.starts_with(|c: char| c.is_ascii_lowercase())
                        && lower.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)
                        });
                    if !valid {
                        return Err(format!(
                            "invalid name for build stage: {stage:?}, name can't start with a number or contain symbols"
                        ));
                    }
                    Some(lower)
                }
                _ => return Err("FROM requires either one or three arguments".into()),
            };
            Instruction::From(FromInstr {
                image: &node.args[0],
                name: stage,
                platform: flags.non_empty("platform"),
            })
        }
        "RUN" => {
            let flags = Flags::parse(&node.flags, RUN_FLAGS)?;
            let mount_specs = flags.strings("mount");
            let mounts = mount_specs
                .iter()
                .map(|m: &&str| RunMount::parse(m, None))
                .collect::<Result<_, _>>()?;
            Instruction::Run(RunInstr {
                cmd: command_line(node),
                mount_specs,
                mounts,
                network: flags.str("network").map(NetworkMode::parse).transpose()?,
                security: flags.str("security").map(SecurityMode::parse).transpose()?,
                heredocs: &node.heredocs,
            })
        }
        "CMD" => {
            no_flags(node)?;
            Instruction::Cmd(command_line(node))
        }
        "ENTRYPOINT" => {
            no_flags(node)?;
            Instruction::Entrypoint(command_line(node))
        }
        "LABEL" => Instruction::Label(pairs(node, "LABEL")?),
        "ENV" => Instruction::Env(pairs(node, "ENV")?),
        "MAINTAINER" => Instruction::Maintainer(exactly_one(node, "MAINTAINER")?),
        "EXPOSE" => {
            at_least_one(node, "EXPOSE")?;
            let mut ports: Vec<&str> = node.args.iter().map(String::as_str).collect();
            ports.sort_unstable();
            Instruction::Expose(ports)
        }
        "ADD" => Instruction::Add(copy::parse_add(&node.flags, &node.args)?),
        "COPY" => Instruction::Copy(copy::parse_copy(&node.flags, &node.args)?),
        "VOLUME" => {
            at_least_one(node, "VOLUME")?;
            let mut vols = Vec::new();
            for v in &node.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                vols.push(v);
            }
            Instruction::Volume(vols)
        }
        "USER" => Instruction::User(exactly_one(node, "USER")?),
        "WORKDIR" => Instruction::Workdir(exactly_one(node, "WORKDIR")?),
        "STOPSIGNAL" => Instruction::StopSignal(exactly_one(node, "STOPSIGNAL")?),
        "ARG" => {
            at_least_one(node, "ARG")?;
            let mut args = Vec::new();
            for word in &node.args {
                match word.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".into()),
                    Some((k, v)) => args.push((k, Some(v))),
                    None => args.push((word.as_str(), None)),
                }
            }
            Instruction::Arg(ArgInstr { args })
        }
        "ONBUILD" => {
            no_flags(node)?;
            let Some(inner) = node.onbuild.as_deref() else {
                return Err("ONBUILD requires at least one argument".into());
            };
            let trigger = inner.instruction.to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into());
                }
                "MAINTAINER" | "FROM" => {
                    return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"));
                }
                _ => {}
            }
            let parsed = parse_node(inner)?;
            let original = node.original.trim_start();
            let expression = original
                .get(..7)
                .filter(|p| p.eq_ignore_ascii_case("onbuild"))
                .map(|_| original[7..].trim_start())
                .unwrap_or(inner.original.as_str());
            Instruction::Onbuild(OnbuildInstr {
                expression,
                trigger: Box::new(parsed),
            })
        }
        "HEALTHCHECK" => {
            Instruction::Healthcheck(healthcheck::parse(&node.flags, &node.args, node.json_form)?)
        }
        "SHELL" => {
            no_flags(node)?;
            if node.args.is_empty() {
                return Err("SHELL requires at least one argument".into());
            }
            if !node.json_form {
                return Err(format!(
                    "SHELL requires the arguments to be in JSON form (e.g. SHELL [\"/bin/sh\", \"-c\"]), not: {}",
                    node.original.trim()
                ));
            }
            Instruction::Shell(node.args.iter().map(String::as_str).collect())
        }
        other => {
            return Err(suggest::with_suggestion(
                format!("unknown instruction: {other}"),
                other,
                crate::dockerfile::error::INSTRUCTIONS.iter().copied(),
            ));
        }
    })
}

#[cfg(test)]
mod tests;
