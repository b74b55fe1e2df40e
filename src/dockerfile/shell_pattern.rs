//! Shell patterns for `${a#p}`, `${a%p}` and `${a/p/r}`: `*`, `?` and literals, matched the
//! way BuildKit does after translating them to Go regular expressions (so `*` and `?` never
//! match a newline, like Go's `.`).

/// One element of a compiled pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// `*`: any run of non-newline characters.
    Star,
    /// `?`: one non-newline character.
    One,
    /// A literal character.
    Lit(char),
}

/// A compiled shell pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    /// Compiles `pattern`, whose backslashes are still raw. `\}` and `\/` stand for the
    /// character itself; `\*`, `\?` and `\\` are literals; any other escape is an error, with
    /// BuildKit's message.
    pub(crate) fn compile(pattern: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                '\\' => {
                    if matches!(chars.get(i), Some('}') | Some('/')) {
                        continue;
                    }
                    match chars.get(i) {
                        Some(&n @ ('*' | '?' | '\\')) => {
                            toks.push(Tok::Lit(n));
                            i += 1;
                        }
                        Some(&n) => return Err(format!("invalid escape '\\{n}'")),
                        None => return Err("invalid escape '\\\u{FFFD}'".to_string()),
                    }
                }
                other => toks.push(Tok::Lit(other)),
            }
        }
        Ok(Pattern { toks })
    }

    /// Removes the shortest (or, `greedy`, the longest) matching prefix of `value`.
    pub(crate) fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let reach = reach_from(&self.toks, &chars);
        let end = if greedy {
            reach.iter().rposition(|&r| r)
        } else {
            reach.iter().position(|&r| r)
        };
        match end {
            Some(end) => chars[end..].iter().collect(),
            None => value.to_string(),
        }
    }

    /// Removes the shortest (or, `greedy`, the longest) matching suffix of `value`.
    pub(crate) fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let mut rev: Vec<char> = value.chars().collect();
        rev.reverse();
        let toks: Vec<Tok> = self.toks.iter().rev().copied().collect();
        let reach = reach_from(&toks, &rev);
        let len = if greedy {
            reach.iter().rposition(|&r| r)
        } else {
            reach.iter().position(|&r| r)
        };
        match len {
            Some(len) => rev[len..].iter().rev().collect(),
            None => value.to_string(),
        }
    }

    /// The leftmost match at or after `from`, longest at that start (Go's greedy `.*`).
    fn find(&self, chars: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=chars.len()).find_map(|start| {
            let reach = reach_from(&self.toks, &chars[start..]);
            reach
                .iter()
                .rposition(|&r| r)
                .map(|len| (start, start + len))
        })
    }

    /// Replaces the first match (or every match, `all`) with `replacement`, following Go's
    /// `ReplaceAllString` rules for empty matches.
    pub(crate) fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        if !all {
            return match self.find(&chars, 0) {
                Some((s, e)) => {
                    let mut out: String = chars[..s].iter().collect();
                    out.push_str(replacement);
                    out.extend(&chars[e..]);
                    out
                }
                None => value.to_string(),
            };
        }
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= chars.len() {
            let Some((s, e)) = self.find(&chars, search) else {
                break;
            };
            out.extend(&chars[last_end..s]);
            if e > last_end || s == 0 {
                out.push_str(replacement);
            }
            last_end = e;
            search = if search + 1 > e { search + 1 } else { e };
        }
        if last_end < chars.len() {
            out.extend(&chars[last_end..]);
        }
        out
    }
}

/// `reach[j]` is true when the whole pattern matches `text[..j]`. Linear in the pattern times
/// the text, so hostile patterns (`*a*a*a*...`) cannot blow up.
fn reach_from(toks: &[Tok], text: &[char]) -> Vec<bool> {
    let n = text.len();
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    for tok in toks {
        let mut next = vec![false; n + 1];
        match tok {
            Tok::Star => {
                let mut running = false;
                for j in 0..=n {
                    running |= cur[j];
                    next[j] = running;
                    if j < n && text[j] == '\n' {
                        running = false;
                    }
                }
            }
            Tok::One => {
                for j in 0..n {
                    next[j + 1] = cur[j] && text[j] != '\n';
                }
            }
            Tok::Lit(c) => {
                for j in 0..n {
                    next[j + 1] = cur[j] && text[j] == *c;
                }
            }
        }
        cur = next;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::compile(s).unwrap()
    }

    #[test]
    fn prefix_and_suffix_trimming() {
        assert_eq!(p("*/").trim_prefix("a/b/c", false), "b/c");
        assert_eq!(p("*/").trim_prefix("a/b/c", true), "c");
        assert_eq!(p("/*").trim_suffix("a/b/c", false), "a/b");
        assert_eq!(p("/*").trim_suffix("a/b/c", true), "a");
        assert_eq!(p("x").trim_prefix("abc", false), "abc");
        assert_eq!(p("a?").trim_prefix("abc", false), "c");
    }

    #[test]
    fn replace_first_and_all() {
        assert_eq!(p("o").replace("foo", "0", false), "f0o");
        assert_eq!(p("o").replace("foo", "0", true), "f00");
        assert_eq!(p("").replace("ab", "-", true), "-a-b-");
        assert_eq!(p("b*").replace("abbc", "X", true), "aX");
        assert_eq!(p("b?").replace("abbcbd", "X", true), "aXcX");
    }

    #[test]
    fn escapes() {
        assert_eq!(p("\\*").trim_prefix("*a", false), "a");
        assert_eq!(p("\\}").trim_prefix("}a", false), "a");
        assert!(Pattern::compile("\\q").is_err());
        assert!(Pattern::compile("\\").is_err());
    }

    #[test]
    fn star_does_not_cross_newlines() {
        assert_eq!(p("*b").trim_prefix("a\nb", true), "a\nb");
        assert_eq!(p("a*").trim_suffix("xa\nb", true), "xa\nb");
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let value = "a".repeat(2000);
        let pat = p(&"*a".repeat(30));
        let t = std::time::Instant::now();
        assert_eq!(pat.trim_prefix(&value, true), "");
        assert_eq!(pat.trim_suffix(&value, false), "a".repeat(1970));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
