//! Heredoc detection on an instruction line (`<<EOF`, `<<-EOF`, `3<<EOF`, quoted delimiters),
//! as BuildKit's `heredocsFromLine`/`ParseHeredoc` do it: the line is split by the shell lexer
//! with quotes and escapes kept and unset variables left alone, and each word shaped like
//! `N<<-WORD` whose delimiter is a single shell word becomes a heredoc.

use std::collections::HashMap;

use super::ast::Heredoc;
use super::shell::{LexMode, Lexer};

/// A heredoc opened on a line, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opener {
    pub(crate) name: String,
    pub(crate) fd: u32,
    pub(crate) expand: bool,
    pub(crate) chomp: bool,
}

impl Opener {
    pub(crate) fn into_heredoc(self, content: &str) -> Heredoc {
        let content = if self.chomp {
            chomp(content)
        } else {
            content.to_string()
        };
        Heredoc {
            name: self.name,
            content,
            expand: self.expand,
            chomp: self.chomp,
            fd: self.fd,
        }
    }
}

/// Removes leading tabs from every line (`<<-`).
pub(crate) fn chomp(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

/// The heredocs a line opens, in order. Errors carry BuildKit's lexer message.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Opener>, String> {
    // The lexer here keeps quotes and escapes and leaves every variable as written, so its
    // words are pieces of the line: no `<<` in the line, no heredoc (and no lexing, which
    // is most of the parser's time on long RUN lines).
    if !line.contains("<<") {
        return Ok(Vec::new());
    }
    let lex = Lexer::new('\\');
    if lex.is_plain(line) {
        // Nothing for the lexer to do: its words are the whitespace-separated pieces.
        let mut out = Vec::new();
        for word in line.split(char::is_whitespace).filter(|w| !w.is_empty()) {
            if let Some(h) = parse_heredoc(word)? {
                out.push(h);
            }
        }
        return Ok(out);
    }
    let empty: HashMap<String, String> = HashMap::new();
    let mode = LexMode {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        untracked: false,
    };
    // BuildKit ignores a lexing error of the whole line here (the line may be, say, a shell
    // script with an unbalanced quote that only the heredoc body closes).
    let words = lex
        .process_mode(line, &empty, mode)
        .map(|x| x.words)
        .unwrap_or_default();
    let mut out = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// `^(\d*)<<(-?)([^<]*)$` followed by the single-word and quoting checks.
fn parse_heredoc(word: &str) -> Result<Option<Opener>, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = if digits == 0 {
        0
    } else {
        // Go's ParseUint error is ignored there too: an overflowing fd becomes 0.
        word[..digits].parse::<u32>().unwrap_or(0)
    };
    let lex = Lexer::new('\\');
    if lex.is_plain(rest) && !rest.contains(char::is_whitespace) {
        // Both lexings would return `rest` itself as the one word, quotes counted equal.
        return Ok(Some(Opener {
            name: rest.to_string(),
            fd,
            expand: true,
            chomp,
        }));
    }
    let empty: HashMap<String, String> = HashMap::new();
    let plain = LexMode {
        raw_quotes: false,
        raw_escapes: false,
        skip_unset_env: true,
        untracked: false,
    };
    let words = lex
        .process_mode(rest, &empty, plain)
        .map_err(|e| e.to_string())?
        .words;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = LexMode {
        raw_quotes: true,
        ..plain
    };
    let words_raw = lex
        .process_mode(rest, &empty, raw)
        .map_err(|e| e.to_string())?
        .words;
    if words_raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = quotes(&words[0]) == quotes(&words_raw[0]);
    Ok(Some(Opener {
        name: words[0].clone(),
        fd,
        expand,
        chomp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<(String, u32, bool, bool)> {
        heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|h| (h.name, h.fd, h.expand, h.chomp))
            .collect()
    }

    #[test]
    fn openers() {
        assert_eq!(names("RUN <<EOF"), [("EOF".into(), 0, true, false)]);
        assert_eq!(names("RUN <<-'EOF' cat"), [("EOF".into(), 0, false, true)]);
        assert_eq!(
            names("RUN 3<<\"E\"\"F\" x"),
            [("EF".into(), 3, false, false)]
        );
        assert_eq!(names("RUN <<E\\F cat"), [("EF".into(), 0, true, false)]);
        assert_eq!(
            names("COPY <<a <<b /dst"),
            [("a".into(), 0, true, false), ("b".into(), 0, true, false)]
        );
        assert!(names("RUN echo a<<b").is_empty());
        assert!(names("RUN cat <<").is_empty());
        assert!(names("RUN cat <<<x").is_empty());
    }

    #[test]
    fn plain_lines_split_like_the_lexer() {
        // Lines with nothing for the lexer to do are split on any Unicode whitespace, as
        // the lexer splits them; a byte-order mark sends the line through the lexer.
        assert_eq!(
            names("RUN 3<<EOF\u{2003}<<-X\u{a0}cat"),
            [("EOF".into(), 3, true, false), ("X".into(), 0, true, true)]
        );
        assert_eq!(names("\u{feff}RUN <<EOF"), [("EOF".into(), 0, true, false)]);
        assert_eq!(
            names("RUN 99999999999<<EOF"),
            [("EOF".into(), 0, true, false)]
        );
        assert!(names("RUN <<-").is_empty());
    }

    #[test]
    fn chomping() {
        assert_eq!(chomp("\t\ta\n\tb\n c\n"), "a\nb\n c\n");
    }
}
