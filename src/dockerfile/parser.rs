//! The Dockerfile line scanner, after BuildKit's `parser.Parse`: parser directives, comments,
//! line continuations (with comment and blank lines inside them), heredoc bodies, and one
//! [`Node`] per instruction.

use std::borrow::Cow;

use super::ast::{Directives, Dockerfile, Node};
use super::error::{ParseError, suggest_instruction};
use super::heredoc::heredocs_from_line;
use super::line_parsers::{self as lp, Parsed};

/// BuildKit reads lines with a 64 KiB `bufio.Scanner`.
const MAX_LINE: usize = 64 * 1024;

/// Parses Dockerfile text into nodes, the way BuildKit's parser does.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let mut lines = Lines { text, pos: 0 };
    let mut dirs = DirectiveState::default();
    // One allocation for the node list, sized for the usual instruction density (an
    // instruction per 40 bytes is dense): growing by doubling copied it a dozen times.
    let mut nodes = Vec::with_capacity(text.len() / 40 + 1);
    let mut warnings = Vec::new();
    let mut joined = String::new();
    let mut current = 0usize;
    // Errors BuildKit only raises after parsing (in its instructions package): an unknown
    // instruction or a forbidden ONBUILD trigger. Parse errors further down win over them.
    let mut deferred: Option<ParseError> = None;

    while let Some(raw) = lines.next() {
        let raw = if current == 0 {
            raw.strip_prefix('\u{FEFF}').unwrap_or(raw)
        } else {
            raw
        };
        check_len(raw, current + 1)?;
        let indent = raw.chars().take_while(|c| c.is_whitespace()).count();
        let first = process_line(&mut dirs, raw, true, current + 1)?;
        current += 1;
        let start_line = current;
        let (first, mut eol) = trim_continuation(first, dirs.escape);
        if eol && first.is_empty() {
            continue;
        }
        // A continued instruction is joined in a buffer kept across instructions, then
        // copied once at its exact length (growing each line's own string reallocated it
        // a few times per long RUN).
        joined.clear();
        let single = eol;
        if !single {
            joined.push_str(first);
        }
        let mut empty_continuation = false;
        while !eol {
            let Some(raw) = lines.next() else { break };
            check_len(raw, current + 1)?;
            let token = trim_line_end(raw);
            dirs.possible_directive(token, current + 1)?;
            current += 1;
            // A comment line (also when indented) is skipped, a blank one noted.
            let body = trim_start_ws(token);
            if body.starts_with('#') {
                continue;
            }
            if body.is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, end) = trim_continuation(token, dirs.escape);
            eol = end;
            joined.push_str(part);
        }
        let line = if single {
            first.to_string()
        } else {
            joined.as_str().to_string()
        };
        if empty_continuation {
            warnings.push(format!(
                "line {current}: Empty continuation line found in: {line}"
            ));
        }

        let at = Span {
            start: start_line,
            end: current,
            indent,
            depth: 0,
        };
        let mut node = node_from_line(line, dirs.escape, at, &mut deferred)?;
        if can_contain_heredoc(&node) && node.original.contains("<<") {
            let openers =
                heredocs_from_line(&node.original).map_err(|message| ParseError::Instruction {
                    line: start_line,
                    end_line: current,
                    message,
                })?;
            for opener in openers {
                // A body is a run of whole lines of `text`: one slice, copied once.
                let body_start = lines.pos;
                let mut body_end = None;
                for raw in lines.by_ref() {
                    check_len(raw, current + 1)?;
                    current += 1;
                    let candidate = raw.trim_end_matches(['\r', '\n']);
                    let candidate = if opener.chomp {
                        candidate.trim_start_matches('\t')
                    } else {
                        candidate
                    };
                    if candidate == opener.name {
                        body_end = Some(lines.pos - raw.len());
                        break;
                    }
                }
                let Some(body_end) = body_end else {
                    return Err(ParseError::UnterminatedHeredoc {
                        line: start_line,
                        end_line: current,
                    });
                };
                let content = &text[body_start..body_end];
                if node.onbuild.is_none() {
                    node.original.reserve(content.len() + opener.name.len() + 2);
                    node.original.push('\n');
                    node.original.push_str(content);
                    node.original.push_str(&opener.name);
                }
                node.heredocs.push(opener.into_heredoc(content));
            }
            if !node.heredocs.is_empty() && node.onbuild.is_none() {
                node.original.push('\n');
            }
        }
        set_lines(&mut node, start_line, current);
        nodes.push(node);
    }

    if nodes.is_empty() {
        return Err(ParseError::NoInstructions { line: current });
    }
    if let Some(e) = deferred {
        return Err(e);
    }
    Ok(Dockerfile {
        directives: dirs.into_directives(),
        nodes,
        warnings,
    })
}

fn set_lines(node: &mut Node, start: usize, end: usize) {
    node.start_line = start;
    node.end_line = end;
    if let Some(inner) = node.onbuild.as_deref_mut() {
        set_lines(inner, start, end);
    }
}

fn check_len(raw: &str, line: usize) -> Result<(), ParseError> {
    if raw.len() > MAX_LINE {
        return Err(ParseError::LineTooLong { line });
    }
    Ok(())
}

/// Lines with their endings kept (BuildKit's `scanLines`), remembering where the next one
/// starts so a heredoc body can be taken as one slice of the text.
struct Lines<'a> {
    text: &'a str,
    /// Byte offset of the next line.
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.text.get(self.pos..).filter(|r| !r.is_empty())?;
        let len = memchr::memchr(b'\n', rest.as_bytes()).map_or(rest.len(), |i| i + 1);
        self.pos += len;
        Some(&rest[..len])
    }
}

/// `raw` without its line ending (any run of `\r` and `\n` at the end).
fn trim_line_end(raw: &str) -> &str {
    let b = raw.as_bytes();
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    &raw[..end]
}

/// `str::trim_start`, skipping ASCII whitespace bytewise first (the usual indentation).
fn trim_start_ws(s: &str) -> &str {
    let n = s
        .bytes()
        .take_while(|b| matches!(b, b'\t'..=b'\r' | b' '))
        .count();
    let rest = &s[n..];
    if rest.as_bytes().first().is_some_and(|b| !b.is_ascii()) {
        rest.trim_start()
    } else {
        rest
    }
}

/// Trims the line ending (and, on an instruction's first line, leading whitespace), looks
/// for a parser directive, and blanks a comment line.
fn process_line<'a>(
    dirs: &mut DirectiveState,
    raw: &'a str,
    strip_left: bool,
    line_no: usize,
) -> Result<&'a str, ParseError> {
    let mut token = trim_line_end(raw);
    if strip_left {
        token = trim_start_ws(token);
    }
    dirs.possible_directive(token, line_no)?;
    Ok(if token.starts_with('#') { "" } else { token })
}

/// Strips a trailing escape (plus spaces/tabs) that continues the line, unless the escape is
/// itself escaped. Returns the text and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let b = line.as_bytes();
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    let body = &line[..end];
    // The escape is `\` or `` ` `` (one byte); a byte compare saves encoding it twice.
    let before = match u8::try_from(escape) {
        Ok(e) if e.is_ascii() => match body.as_bytes().last() {
            Some(&last) if last == e => &body[..body.len() - 1],
            _ => return (line, true),
        },
        _ => match body.strip_suffix(escape) {
            Some(before) => before,
            None => return (line, true),
        },
    };
    if before.is_empty() {
        return ("", false);
    }
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// Directive scanning state: BuildKit stops looking at the first line that is not a
/// recognised `# key=value` directive.
struct DirectiveState {
    done: bool,
    escape: char,
    syntax: Option<String>,
    check: Option<String>,
    seen_escape: bool,
}

impl Default for DirectiveState {
    fn default() -> Self {
        DirectiveState {
            done: false,
            escape: '\\',
            syntax: None,
            check: None,
            seen_escape: false,
        }
    }
}

impl DirectiveState {
    fn possible_directive(&mut self, line: &str, line_no: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = directive_parts(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        let err = |message: String| ParseError::Directive {
            line: line_no,
            message,
        };
        let seen = match key.as_str() {
            "escape" => std::mem::replace(&mut self.seen_escape, true),
            "syntax" => self.syntax.is_some(),
            "check" => self.check.is_some(),
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if seen {
            return Err(err(format!("only one {key} parser directive can be used")));
        }
        match key.as_str() {
            "escape" => match value {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                other => {
                    return Err(err(format!(
                        "invalid escape token '{other}' does not match ` or \\"
                    )));
                }
            },
            "syntax" => self.syntax = Some(value.to_string()),
            _ => self.check = Some(value.to_string()),
        }
        Ok(())
    }

    fn into_directives(self) -> Directives {
        Directives {
            syntax: self.syntax,
            escape: self.escape,
            check: self.check,
        }
    }
}

/// `#` then `\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (Go's `\s` is ASCII only).
fn directive_parts(line: &str) -> Option<(&str, &str)> {
    let is_s = |c: char| matches!(c, '\t' | '\n' | '\u{0C}' | '\r' | ' ');
    let rest = line.strip_prefix('#')?.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, after) = rest.split_at(key_len);
    let raw = after.trim_start_matches(is_s).strip_prefix('=')?;
    let value = raw.trim_start_matches(is_s).trim_end_matches(is_s);
    if value.is_empty() {
        // `(.+?)` still needs one character: the regex settles on the last whitespace one.
        let last = raw.char_indices().last()?.0;
        return Some((key, &raw[last..]));
    }
    Some((key, value))
}

fn can_contain_heredoc(node: &Node) -> bool {
    let target = node.onbuild.as_deref().unwrap_or(node);
    matches!(&*target.instruction, "ADD" | "COPY" | "RUN") && !target.json_form
}

/// Where an instruction sits: its lines, and the indentation its first line had.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    indent: usize,
    /// ONBUILD nesting level.
    depth: usize,
}

const MAX_ONBUILD_DEPTH: usize = 16;

/// How an instruction's arguments are read (BuildKit's per-instruction line parser).
#[derive(Clone, Copy)]
enum Shape {
    /// `ADD`, `COPY`, `VOLUME`: JSON array or whitespace-separated words.
    JsonOrList,
    /// `ARG`: words, quotes kept.
    Words,
    /// `CMD`, `ENTRYPOINT`, `RUN`, `SHELL`: JSON array or the rest as one string.
    JsonOrString,
    /// `ENV`, `LABEL`: key/value pairs.
    NameVal,
    /// `EXPOSE`, `FROM`: whitespace-separated words.
    List,
    /// `HEALTHCHECK`: sub-command, then a command.
    Health,
    /// `MAINTAINER`, `STOPSIGNAL`, `USER`, `WORKDIR`: the rest as one string.
    Single,
    /// `ONBUILD`: a nested instruction.
    OnBuild,
}

/// The instructions BuildKit knows, as `Node.instruction` spells them.
const INSTRUCTIONS: [(&str, Shape); 18] = [
    ("ADD", Shape::JsonOrList),
    ("ARG", Shape::Words),
    ("CMD", Shape::JsonOrString),
    ("COPY", Shape::JsonOrList),
    ("ENTRYPOINT", Shape::JsonOrString),
    ("ENV", Shape::NameVal),
    ("EXPOSE", Shape::List),
    ("FROM", Shape::List),
    ("HEALTHCHECK", Shape::Health),
    ("LABEL", Shape::NameVal),
    ("MAINTAINER", Shape::Single),
    ("ONBUILD", Shape::OnBuild),
    ("RUN", Shape::JsonOrString),
    ("SHELL", Shape::JsonOrString),
    ("STOPSIGNAL", Shape::Single),
    ("USER", Shape::Single),
    ("VOLUME", Shape::JsonOrList),
    ("WORKDIR", Shape::Single),
];

/// The upper-case instruction name and its shape: the name borrowed from [`INSTRUCTIONS`]
/// for a known instruction (no allocation per node), upper-cased into a new string and no
/// shape for an unknown one.
fn instruction_name(cmd: &str) -> (Cow<'static, str>, Option<Shape>) {
    let first = cmd.as_bytes().first().map(u8::to_ascii_uppercase);
    let known = INSTRUCTIONS.iter().find(|(k, _)| {
        k.len() == cmd.len() && Some(k.as_bytes()[0]) == first && k.eq_ignore_ascii_case(cmd)
    });
    match known {
        Some(&(name, shape)) => (Cow::Borrowed(name), Some(shape)),
        None => (Cow::Owned(cmd.to_ascii_uppercase()), None),
    }
}

/// Builds the node for one joined instruction line (BuildKit's `newNodeFromLine`). Errors
/// BuildKit raises only after parsing go to `deferred` (first one kept) and the node is
/// still built, with no arguments for an unknown instruction (BuildKit's `parseIgnore`).
/// The line becomes the node's `original`.
fn node_from_line(
    line: String,
    escape: char,
    at: Span,
    deferred: &mut Option<ParseError>,
) -> Result<Node, ParseError> {
    let (cmd, flags, rest) = lp::split_command(&line);
    let (upper, shape) = instruction_name(cmd);
    let fail = |message: String| ParseError::Instruction {
        line: at.start,
        end_line: at.end,
        message,
    };
    let mut onbuild = None;
    let parsed = match shape {
        Some(Shape::JsonOrList) => lp::maybe_json_to_list(&rest).map_err(fail)?,
        Some(Shape::Words) => lp::name_or_name_val(&rest, escape),
        Some(Shape::JsonOrString) => lp::maybe_json(&rest).map_err(fail)?,
        Some(Shape::NameVal) => lp::name_val(&rest, &upper, escape).map_err(fail)?,
        Some(Shape::List) => lp::whitespace_delimited(&rest),
        Some(Shape::Health) => lp::health_config(&rest).map_err(fail)?,
        Some(Shape::Single) => lp::single_string(&rest),
        Some(Shape::OnBuild) => {
            // Any ONBUILD under ONBUILD is already an error; stop descending so a line of
            // repeated ONBUILDs cannot exhaust the stack.
            if !rest.is_empty() && at.depth < MAX_ONBUILD_DEPTH {
                let inner_at = Span {
                    indent: 0,
                    depth: at.depth + 1,
                    ..at
                };
                let inner = node_from_line(rest.to_string(), escape, inner_at, deferred)?;
                let trigger_error = match &*inner.instruction {
                    "ONBUILD" => {
                        Some("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
                    }
                    "FROM" | "MAINTAINER" => Some(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        inner.instruction
                    )),
                    _ => None,
                };
                if let Some(message) = trigger_error {
                    deferred.get_or_insert(fail(message));
                }
                onbuild = Some(Box::new(inner));
            }
            Parsed {
                args: if rest.is_empty() {
                    vec![]
                } else {
                    vec![rest.into_owned()]
                },
                json: false,
            }
        }
        None => {
            let column = at.indent + line.chars().take_while(|c| c.is_whitespace()).count() + 1;
            deferred.get_or_insert(ParseError::UnknownInstruction {
                line: at.start,
                column,
                suggestion: suggest_instruction(cmd),
                instruction: cmd.to_string(),
            });
            Parsed::default()
        }
    };
    Ok(Node {
        instruction: upper,
        flags,
        args: parsed.args,
        json_form: parsed.json,
        start_line: at.start,
        end_line: at.end,
        heredocs: Vec::new(),
        onbuild,
        original: line,
    })
}

#[cfg(test)]
mod tests;
