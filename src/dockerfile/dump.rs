//! BuildKit's `Node.Dump()` text form, as used by its parser golden files:
//! `(run ["--mount=x"] "echo hi")`, one instruction per line, `ONBUILD` nesting its trigger.

use super::ast::{Dockerfile, Node};
use super::line_parsers::{parse_words, split_command};

/// Quotes like Go's `strconv.Quote`: `"` and `\` escaped, control and non-printing characters
/// as `\n`, `\x1b`, `\u00a0`...
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{7F}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || c.is_whitespace() || is_go_unprintable(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Format characters and specials Go refuses to print raw (a practical subset of `Cf`/`Co`).
fn is_go_unprintable(c: char) -> bool {
    matches!(c as u32,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF
        | 0xFFFE | 0xFFFF)
}

/// One instruction's dump, without the surrounding parentheses. `escape` is the file's
/// escape character.
///
/// `ENV` and `LABEL` print BuildKit's triples (key, value, separator): the separator is `=`
/// for `k=v` and empty for the legacy `ENV k v` form, as BuildKit's node list carries it.
pub fn dump_node(node: &Node, escape: char) -> String {
    let mut s = node.instruction.to_lowercase();
    if !node.flags.is_empty() {
        let flags: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        s.push_str(&format!(" [{}]", flags.join(" ")));
    }
    if let Some(inner) = &node.onbuild {
        s.push_str(&format!(" ({})", dump_node(inner, escape)));
    } else if matches!(&*node.instruction, "ENV" | "LABEL") {
        let sep = if is_legacy_key_value(node, escape) {
            ""
        } else {
            "="
        };
        for pair in node.args.chunks(2) {
            for a in pair.iter().map(String::as_str).chain([sep]) {
                s.push(' ');
                s.push_str(&go_quote(a));
            }
        }
    } else {
        for a in &node.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
    }
    s.trim().to_string()
}

/// Whether an `ENV`/`LABEL` node was written as `KEY value` rather than `KEY=value`.
pub fn is_legacy_key_value(node: &Node, escape: char) -> bool {
    let (_, _, rest) = split_command(&node.original);
    let first_line = rest.lines().next().unwrap_or("");
    parse_words(first_line, escape)
        .first()
        .is_some_and(|w| !w.contains('='))
}

/// The whole file's dump: `(...)` per instruction, each followed by a newline (the exact
/// content of a BuildKit `testfiles/<case>/result` file).
pub fn dump(file: &Dockerfile) -> String {
    let escape = file.directives.escape;
    file.nodes
        .iter()
        .map(|n| format!("({})\n", dump_node(n, escape)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_go() {
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote("\t\u{1b}é\u{a0}"), "\"\\t\\x1bé\\u00a0\"");
    }

    #[test]
    fn env_triples() {
        let file = crate::dockerfile::parse("ENV a=b c=d\nENV k v w\nLABEL x=\"y z\"\n").unwrap();
        assert_eq!(
            dump(&file),
            "(env \"a\" \"b\" \"=\" \"c\" \"d\" \"=\")\n(env \"k\" \"v w\" \"\")\n(label \"x\" \"\\\"y z\\\"\" \"=\")\n"
        );
    }

    #[test]
    fn nodes() {
        let inner = Node {
            instruction: "RUN".into(),
            flags: vec!["--mount=x".into()],
            args: vec!["echo hi".into()],
            json_form: false,
            start_line: 1,
            end_line: 1,
            heredocs: vec![],
            onbuild: None,
            original: String::new(),
        };
        let outer = Node {
            instruction: "ONBUILD".into(),
            flags: vec![],
            args: vec!["RUN --mount=x echo hi".into()],
            onbuild: Some(Box::new(inner.clone())),
            ..inner.clone()
        };
        let file = Dockerfile {
            nodes: vec![inner, outer],
            ..Default::default()
        };
        assert_eq!(
            dump(&file),
            "(run [\"--mount=x\"] \"echo hi\")\n(onbuild (run [\"--mount=x\"] \"echo hi\"))\n"
        );
    }
}
