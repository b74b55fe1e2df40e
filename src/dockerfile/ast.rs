//! The parser's output: one untyped [`Node`] per instruction, keeping its source location.

use std::borrow::Cow;

use serde::Serialize;

/// A parsed Dockerfile: its parser directives and its instructions in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// Parser directives found before the first instruction or comment.
    pub directives: Directives,
    /// Instructions in source order.
    pub nodes: Vec<Node>,
    /// Non-fatal findings (e.g. empty continuation lines), each with its line.
    pub warnings: Vec<String>,
}

/// Parser directives (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// `# syntax=` value, if given.
    pub syntax: Option<String>,
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` value, if given.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// One instruction as BuildKit's parser sees it, before variable expansion.
///
/// The serde form is the stable JSON of `rbuild debug parse --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Instruction name, upper-case (`RUN`, `COPY`, ...): a static string for the names
    /// BuildKit knows (no allocation per node), owned for an unknown one.
    pub instruction: Cow<'static, str>,
    /// `--name[=value]` words that preceded the arguments, verbatim.
    pub flags: Vec<String>,
    /// Arguments as BuildKit's node list: shell form is one string with continuations joined;
    /// JSON form one string per element; `ENV`/`LABEL` key, value, key, value (quotes kept;
    /// the legacy `ENV k v w` form gives `k`, `v w`); `ARG` one word per name (`a=1` kept
    /// whole); `HEALTHCHECK` the sub-command word then the command; `ONBUILD` the trigger's
    /// text (its parsed form is in `onbuild`).
    pub args: Vec<String>,
    /// Whether the arguments were written in JSON (exec) form.
    pub json_form: bool,
    /// First source line (1-based).
    pub start_line: usize,
    /// Last source line (for heredocs, the line of the closing delimiter).
    pub end_line: usize,
    /// Heredocs attached to this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// For `ONBUILD`, the nested instruction.
    pub onbuild: Option<Box<Node>>,
    /// The instruction's source text with continuations joined (comment lines dropped, first
    /// line left-trimmed), as BuildKit's `Node.Original`. With heredocs (except under
    /// `ONBUILD`), each body and its delimiter follow on new lines, ending in a newline.
    #[serde(skip)]
    pub original: String,
}

/// A heredoc body attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word (without quotes).
    pub name: String,
    /// The body, including its final newline (line endings as in the file). For `<<-` the
    /// leading tabs are already removed (BuildKit does that later; doing it again is harmless).
    pub content: String,
    /// False when the delimiter was quoted (no variable expansion).
    pub expand: bool,
    /// True for `<<-` (leading tabs stripped).
    pub chomp: bool,
    /// File descriptor the heredoc feeds (`3<<EOF` → 3; default 0).
    pub fd: u32,
}
