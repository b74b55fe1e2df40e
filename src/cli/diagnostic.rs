//! Compiler-style context for a build that failed on one Dockerfile line: the file and line
//! (`Dockerfile:7`), the lines around it with numbers, the instruction marked (`>>>` and an
//! underline, as BuildKit frames it), and a hint where one helps. Printed before the final
//! `rbuild: <cause>` line, which stays last for scripts that read it.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::args::BuildArgs;
use crate::context::ContextError;
use crate::dockerfile::instructions::InstructionError;
use crate::plan::PlanError;
use crate::solver::SolveError;

/// Lines shown before the failing instruction.
const BEFORE: usize = 2;
/// At most this many lines of a long instruction are shown.
const MAX_INSTRUCTION_LINES: usize = 6;

/// The Dockerfile read from stdin (`-f -` or context `-`), kept for the excerpt: stdin cannot
/// be read twice.
static STDIN_DOCKERFILE: OnceLock<String> = OnceLock::new();

/// Keeps the Dockerfile text `rbuild build` read from stdin, for [`DockerfileSource::text`].
pub(super) fn keep_stdin_dockerfile(text: &str) {
    let _ = STDIN_DOCKERFILE.set(text.to_string());
}

/// Where a build's Dockerfile comes from, as `rbuild build` picks it.
#[derive(Debug, Clone)]
pub(super) struct DockerfileSource {
    /// The name parse errors and excerpts use (`Dockerfile` for stdin, as docker).
    pub name: String,
    /// The file; `None` for stdin.
    path: Option<PathBuf>,
}

impl DockerfileSource {
    /// The Dockerfile's text: read again from the file (small; a file gone or changed since
    /// only loses the excerpt), or the text kept from stdin.
    pub(super) fn text(&self) -> Option<String> {
        match &self.path {
            Some(p) => std::fs::read_to_string(p).ok(),
            None => STDIN_DOCKERFILE.get().cloned(),
        }
    }
}

/// The Dockerfile a build reads (see [`DockerfileSource`]).
pub(super) fn dockerfile_of(args: &BuildArgs) -> DockerfileSource {
    let stdin = DockerfileSource {
        name: "Dockerfile".into(),
        path: None,
    };
    if args.context == "-" {
        return stdin;
    }
    let (name, path) = match args.file.as_deref() {
        Some("-") => return stdin,
        Some(f) => (f.to_string(), PathBuf::from(f)),
        None => {
            let context = PathBuf::from(&args.context);
            let path = context.join("Dockerfile");
            let path = if path.exists() || !context.join("dockerfile").exists() {
                path
            } else {
                context.join("dockerfile")
            };
            (path.display().to_string(), path)
        }
    };
    DockerfileSource {
        name,
        path: Some(path),
    }
}

/// The Dockerfile line an error happened on, from the first error in the chain that has one.
pub(super) fn failing_line(err: &anyhow::Error) -> Option<usize> {
    err.chain().find_map(|cause| {
        let line = if let Some(e) = cause.downcast_ref::<SolveError>() {
            match e {
                SolveError::Layer { line, .. }
                | SolveError::Context { line, .. }
                | SolveError::Run { line, .. }
                | SolveError::Unsupported { line, .. } => Some(*line),
                SolveError::Plan(p) => p.line(),
                _ => None,
            }
        } else if let Some(e) = cause.downcast_ref::<PlanError>() {
            e.line()
        } else {
            cause.downcast_ref::<InstructionError>().map(|e| e.line)
        };
        line.filter(|l| *l > 0)
    })
}

/// What to try, for the failures where rbuild can tell.
pub(super) fn hint(err: &anyhow::Error, context: Option<&str>) -> Option<String> {
    for cause in err.chain() {
        if let Some(SolveError::Run { message, .. }) = cause.downcast_ref::<SolveError>() {
            if message.contains("exit code") {
                return Some(
                    "the command exited with an error; its last output lines are shown above \
                     (run with --progress=plain to see all of them)"
                        .into(),
                );
            }
            return None;
        }
        if let Some(e) = cause.downcast_ref::<ContextError>() {
            return match e {
                ContextError::SourceNotFound {
                    excluded_by: None, ..
                } => Some(match context {
                    Some(dir) => format!(
                        "COPY and ADD read sources from the build context ({dir}); check the \
                         path and that the file exists there"
                    ),
                    None => {
                        "COPY and ADD read sources from the build context; check the path".into()
                    }
                }),
                ContextError::SourceNotFound { .. } => Some(
                    "remove the pattern from the ignore file, or add an exception line `!PATH` \
                     after it"
                        .into(),
                ),
                ContextError::Chmod { .. } => Some(
                    "--chmod takes an octal mode (0755) or a symbolic one (u=rwx,go=rx)".into(),
                ),
                _ => None,
            };
        }
        let message = match (cause.downcast_ref::<InstructionError>(), plan_error(cause)) {
            (Some(e), _) | (None, Some(PlanError::Instruction(e))) => &e.message,
            (None, Some(PlanError::Invalid { message, .. })) => message,
            _ => continue,
        };
        return flag_hint(message);
    }
    None
}

/// A planning error, also inside the solver's error (which shows it transparently, so the
/// chain never yields it separately).
fn plan_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a PlanError> {
    match cause.downcast_ref::<SolveError>() {
        Some(SolveError::Plan(p)) => Some(p),
        _ => cause.downcast_ref::<PlanError>(),
    }
}

/// Hints for flag values an instruction refused.
fn flag_hint(message: &str) -> Option<String> {
    let hint = if message.contains("--chmod") {
        "--chmod takes an octal mode (0755) or a symbolic one (u=rwx,go=rx)"
    } else if message.contains("--chown") {
        "--chown takes USER[:GROUP], as names or numeric ids"
    } else if message.contains("network mode") {
        "RUN --network takes default, none or host"
    } else if message.starts_with("unknown flag") && !message.contains("did you mean") {
        "this instruction does not take that flag; the Dockerfile reference lists the flags \
         each instruction accepts"
    } else {
        return None;
    };
    Some(hint.into())
}

/// The excerpt for `line` of `source`: `name:line`, then up to [`BEFORE`] lines before and the
/// instruction's lines, numbered, the instruction marked with `>>>` and underlined.
pub(super) fn excerpt(name: &str, source: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    if line == 0 || line > lines.len() {
        return None;
    }
    // The instruction may continue on later lines (continuations, heredocs).
    let end = crate::dockerfile::parse(source)
        .ok()
        .and_then(|df| {
            df.nodes
                .iter()
                .find(|n| n.start_line == line)
                .map(|n| n.end_line)
        })
        .unwrap_or(line)
        .clamp(line, lines.len())
        .min(line + MAX_INSTRUCTION_LINES - 1);
    let first = line.saturating_sub(BEFORE).max(1);
    let width = end.to_string().len();
    let rule = "-".repeat(20);
    let mut out = format!("{name}:{line}\n{rule}\n");
    for n in first..=end {
        let text = lines[n - 1].trim_end_matches('\r').trim_end();
        let mark = if (line..=end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {n:>width$} | {mark} {text}\n"));
        if n == line {
            let indent = text.len() - text.trim_start().len();
            let pad: String = text[..indent]
                .chars()
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let len = text.trim_start().chars().count().max(1);
            out.push_str(&format!(" {:>width$} |     {pad}{}\n", "", "^".repeat(len)));
        }
    }
    out.push_str(&rule);
    out.push('\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_the_instruction_and_its_continuation_lines() {
        let src = "FROM scratch\nENV A=1\n\nRUN make \\\n    all\nCOPY x /\n";
        assert_eq!(
            excerpt("Dockerfile", src, 4).unwrap(),
            "Dockerfile:4\n\
             --------------------\n \
             2 |     ENV A=1\n \
             3 |     \n \
             4 | >>> RUN make \\\n   \
             |     ^^^^^^^^^^\n \
             5 | >>>     all\n\
             --------------------\n"
        );
        assert_eq!(
            excerpt("f", "FROM a\n", 1).unwrap(),
            "f:1\n--------------------\n 1 | >>> FROM a\n   |     ^^^^^^\n--------------------\n"
        );
        assert_eq!(excerpt("f", "FROM a\n", 3), None);
    }

    #[test]
    fn line_and_hint_come_from_the_error_chain() {
        let e: anyhow::Error = SolveError::Context {
            line: 7,
            source: ContextError::SourceNotFound {
                path: "a.txt".into(),
                excluded_by: None,
                ignore_file: None,
            },
        }
        .into();
        assert_eq!(failing_line(&e), Some(7));
        assert!(hint(&e, Some("/ctx")).unwrap().contains("(/ctx)"));
        let e: anyhow::Error = SolveError::Run {
            line: 3,
            message: "process \"x\" did not complete successfully: exit code: 3".into(),
        }
        .into();
        assert_eq!(failing_line(&e), Some(3));
        assert!(hint(&e, None).unwrap().contains("last output lines"));
        let e: anyhow::Error = SolveError::Plan(PlanError::NoStages).into();
        assert_eq!(failing_line(&e), None);
        let e: anyhow::Error = SolveError::Plan(PlanError::Invalid {
            line: 2,
            instruction: "COPY".into(),
            message: "--chmod=999: invalid octal mode".into(),
        })
        .into();
        assert_eq!(failing_line(&e), Some(2));
        assert!(hint(&e, None).unwrap().starts_with("--chmod takes"));
    }
}
