//! Parser errors: what went wrong, where (line, and column when known), and a compiler-style
//! rendering with the offending source lines and a caret.

/// A Dockerfile that BuildKit's parser would reject. Lines and columns are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A parser directive that is repeated or has a bad value (`# escape=x`).
    #[error("line {line}: {message}")]
    Directive {
        /// Line of the directive.
        line: usize,
        /// BuildKit's message, e.g. `only one escape parser directive can be used`.
        message: String,
    },
    /// An instruction name BuildKit does not know.
    #[error("line {line}: unknown instruction: {instruction}{}", suggestion_text(.suggestion))]
    UnknownInstruction {
        /// First line of the instruction.
        line: usize,
        /// Column where the instruction name starts.
        column: usize,
        /// The name as written.
        instruction: String,
        /// The closest known instruction, upper-case, if one is close enough.
        suggestion: Option<String>,
    },
    /// Arguments that do not fit the instruction (bad JSON array, `ENV a` ...).
    #[error("line {line}: {message}")]
    Instruction {
        /// First line of the instruction.
        line: usize,
        /// Last line of the instruction.
        end_line: usize,
        /// BuildKit's message.
        message: String,
    },
    /// A heredoc whose closing delimiter never appears.
    #[error("line {line}: unterminated heredoc")]
    UnterminatedHeredoc {
        /// Line of the instruction that opened it.
        line: usize,
        /// Last line of the file.
        end_line: usize,
    },
    /// A line longer than BuildKit's scanner accepts.
    #[error("line {line}: dockerfile line greater than max allowed size of 65535")]
    LineTooLong {
        /// The long line.
        line: usize,
    },
    /// A file with only comments, directives and blank lines.
    #[error("line {line}: file with no instructions")]
    NoInstructions {
        /// Last line of the file (0 for an empty file).
        line: usize,
    },
}

fn suggestion_text(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

impl ParseError {
    /// First line the error refers to (1-based; 0 only for an empty file).
    pub fn line(&self) -> usize {
        match self {
            ParseError::Directive { line, .. }
            | ParseError::UnknownInstruction { line, .. }
            | ParseError::Instruction { line, .. }
            | ParseError::UnterminatedHeredoc { line, .. }
            | ParseError::LineTooLong { line }
            | ParseError::NoInstructions { line } => *line,
        }
    }

    /// Last line the error refers to.
    pub fn end_line(&self) -> usize {
        match self {
            ParseError::Instruction { end_line, .. }
            | ParseError::UnterminatedHeredoc { end_line, .. } => *end_line,
            other => other.line(),
        }
    }

    /// Column (1-based) where known.
    pub fn column(&self) -> Option<usize> {
        match self {
            ParseError::UnknownInstruction { column, .. } => Some(*column),
            _ => None,
        }
    }

    /// The message without the location prefix.
    pub fn message(&self) -> String {
        let full = self.to_string();
        match full.split_once(": ") {
            Some((_, rest)) => rest.to_string(),
            None => full,
        }
    }

    /// A compiler-style excerpt: `file:line:col: message`, then the source lines (at most five
    /// from the error's range) with line numbers, and a caret under the column.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let line = self.line();
        let col = self.column().unwrap_or(1);
        let mut out = format!("{file_name}:{line}:{col}: {}\n", self.message());
        if line == 0 {
            return out;
        }
        let lines: Vec<&str> = source.lines().collect();
        let last = self.end_line().max(line).min(lines.len()).min(line + 4);
        let width = last.to_string().len();
        for n in line..=last {
            let text = lines.get(n - 1).copied().unwrap_or("");
            out.push_str(&format!("{n:>width$} | {}\n", text.trim_end_matches('\r')));
            if n == line {
                let pad: String = text
                    .chars()
                    .take(col - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!("{:>width$} | {pad}^\n", ""));
            }
        }
        out
    }
}

/// Every instruction name BuildKit knows, upper-case.
pub(crate) const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The closest instruction name by edit distance, as BuildKit's `suggest.WrapError` picks it:
/// case-insensitive, distance below 3, first best match wins; the suggestion takes the
/// case of what was written when it is all upper-case, lower-case otherwise.
pub(crate) fn suggest_instruction(name: &str) -> Option<String> {
    let lower = name.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for cand in INSTRUCTIONS {
        let d = levenshtein(&lower, &cand.to_lowercase());
        if d < best.map_or(3, |(b, _)| b) {
            best = Some((d, cand));
        }
    }
    let (_, cand) = best?;
    // Go's matchCase: all-lower (checked first) → lower, all-upper → upper, mixed → lower.
    Some(if name != lower && name == name.to_uppercase() {
        cand.to_string()
    } else {
        cand.to_lowercase()
    })
}

/// Edit distance between two words, counted in characters; shared by every "did you mean".
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest_instruction("COPPY").as_deref(), Some("COPY"));
        assert_eq!(suggest_instruction("runn").as_deref(), Some("run"));
        assert_eq!(suggest_instruction("Workdri").as_deref(), Some("workdir"));
        assert_eq!(suggest_instruction("COPPY").as_deref(), Some("COPY"));
        assert_eq!(suggest_instruction("ENTRYPIONTS"), None);
        assert_eq!(suggest_instruction("XYZZYQUUX"), None);
    }

    #[test]
    fn unknown_instruction_wording() {
        let e = ParseError::UnknownInstruction {
            line: 2,
            column: 3,
            instruction: "COPPY".into(),
            suggestion: Some("COPY".into()),
        };
        assert_eq!(
            e.message(),
            "unknown instruction: COPPY (did you mean COPY?)"
        );
        let r = e.render("Dockerfile", "FROM a\n  COPPY x y\n");
        assert_eq!(
            r,
            "Dockerfile:2:3: unknown instruction: COPPY (did you mean COPY?)\n\
             2 |   COPPY x y\n  |   ^\n"
        );
    }

    #[test]
    fn multi_line_render_is_bounded() {
        let e = ParseError::UnterminatedHeredoc {
            line: 1,
            end_line: 20,
        };
        let src = (1..=20).map(|i| format!("l{i}\n")).collect::<String>();
        let r = e.render("f", &src);
        assert_eq!(r.lines().count(), 1 + 5 + 1);
        assert!(r.starts_with("f:1:1: unterminated heredoc\n"));
    }
}
