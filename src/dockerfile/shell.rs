//! Shell word expansion and splitting with BuildKit's `shell/lex.go` semantics: quotes,
//! escapes, `$a`, `${a}`, `${a:-b}` `${a-b}` `${a:+b}` `${a+b}` `${a:?m}` `${a?m}`,
//! `${a#p}` `${a##p}` `${a%p}` `${a%%p}` `${a/p/r}` `${a//p/r}`. It does not run commands:
//! `$(...)` and backticks stay literal text, as in BuildKit.
//!
//! ```
//! use std::collections::HashMap;
//! use rbuild::dockerfile::Lexer;
//! let env = HashMap::from([("V".to_string(), "1.2.3".to_string())]);
//! let lex = Lexer::new('\\');
//! assert_eq!(lex.process_word("v${V%%.*}", &env).unwrap(), "v1");
//! assert_eq!(lex.process_words("a 'b c' $V", &env).unwrap(), ["a", "b c", "1.2.3"]);
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use super::shell_pattern::Pattern;

/// Where the lexer looks variables up. `None` means unset (which differs from empty for
/// `${a-b}`, `${a+b}` and `${a?m}`).
pub trait VarLookup {
    /// The value of `name`, if set; borrowed when the lookup holds it as text (expanding a
    /// word then copies the value once, into the result).
    fn get(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl<S: BuildHasher> VarLookup for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        HashMap::get(self, name).map(|v| Cow::Borrowed(v.as_str()))
    }
}

impl VarLookup for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        BTreeMap::get(self, name).map(|v| Cow::Borrowed(v.as_str()))
    }
}

/// An ordered env list: a later entry overrides an earlier one with the same name.
impl VarLookup for [(String, String)] {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
    }
}

impl VarLookup for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        VarLookup::get(self.as_slice(), name)
    }
}

/// A word expansion failure, worded as BuildKit words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ShellError {
    /// The word being expanded.
    pub word: String,
    /// What went wrong (`syntax error: bad substitution`, `A: is not allowed to be unset`...).
    pub message: String,
}

/// The result of [`Lexer::process_word_with_matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word, spaces kept (what `process_word` returns).
    pub value: String,
    /// The expanded word split into words (what `process_words` returns).
    pub words: Vec<String>,
    /// Variable names that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variable names that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// BuildKit's lexer knobs that only the parser needs (heredoc detection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LexMode {
    /// Keep quote characters in the output.
    pub(crate) raw_quotes: bool,
    /// Keep escape characters in the output.
    pub(crate) raw_escapes: bool,
    /// Leave references to unset variables as written.
    pub(crate) skip_unset_env: bool,
    /// Do not record which variables were referenced (callers that want only the value;
    /// recording costs an allocation per lookup).
    pub(crate) untracked: bool,
}

/// Shell-like word processor; `escape` is the Dockerfile's escape character (`\` or `` ` ``).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character.
    pub escape: char,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer { escape: '\\' }
    }
}

impl Lexer {
    /// A lexer using `escape` as its escape character.
    pub fn new(escape: char) -> Self {
        Lexer { escape }
    }

    /// Expands variables and removes quotes, keeping the whitespace between words.
    pub fn process_word(&self, word: &str, env: &dyn VarLookup) -> Result<String, ShellError> {
        Ok(self.process_mode(word, env, LexMode::default())?.value)
    }

    /// Expands variables, then splits into words (quoted whitespace does not split; whitespace
    /// coming from a variable's value does).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn VarLookup,
    ) -> Result<Vec<String>, ShellError> {
        Ok(self.process_mode(word, env, LexMode::default())?.words)
    }

    /// Like [`Lexer::process_word`], also reporting which variables were referenced.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn VarLookup,
    ) -> Result<Expansion, ShellError> {
        self.process_mode(word, env, LexMode::default())
    }

    /// [`Lexer::process_word`] for callers that want only the value: a word the lexer would
    /// not change is copied without building its word list.
    pub(crate) fn process_value(
        &self,
        word: &str,
        env: &dyn VarLookup,
    ) -> Result<String, ShellError> {
        if self.is_plain(word) {
            return Ok(word.to_string());
        }
        let mode = LexMode {
            untracked: true,
            ..LexMode::default()
        };
        Ok(self.lex(word, env, mode)?.value)
    }

    /// Whether expanding `word` is the identity: no `$`, no quotes, no escape character and
    /// no leading byte-order mark. Most words (paths, package names, flags) are like that,
    /// and skipping the char-by-char walk is what keeps planning a large Dockerfile fast.
    pub(crate) fn is_plain(&self, word: &str) -> bool {
        if word.starts_with('\u{FEFF}') {
            return false;
        }
        match u8::try_from(self.escape) {
            // The characters looked for are ASCII, and no byte of a multi-byte UTF-8
            // character is, so a byte scan finds exactly what a char scan would.
            Ok(esc) if esc.is_ascii() => !has_any_byte(word.as_bytes(), [b'$', b'\'', b'"', esc]),
            _ => !word
                .chars()
                .any(|c| c == '$' || c == '\'' || c == '"' || c == self.escape),
        }
    }

    pub(crate) fn process_mode(
        &self,
        word: &str,
        env: &dyn VarLookup,
        mode: LexMode,
    ) -> Result<Expansion, ShellError> {
        if self.is_plain(word) {
            return Ok(Expansion {
                value: word.to_string(),
                words: word
                    .split(char::is_whitespace)
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect(),
                matched: BTreeSet::new(),
                unmatched: BTreeSet::new(),
            });
        }
        self.lex(word, env, mode)
    }

    /// The character walk, for a word [`Lexer::is_plain`] said needs it.
    fn lex(&self, word: &str, env: &dyn VarLookup, mode: LexMode) -> Result<Expansion, ShellError> {
        // Go's text/scanner drops a leading byte-order mark.
        let chars = word.strip_prefix('\u{FEFF}').unwrap_or(word);
        let mut sw = ShellWord {
            chars,
            pos: 0,
            env,
            escape: self.escape,
            escape_byte: u8::try_from(self.escape).ok().filter(u8::is_ascii),
            mode,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        };
        let raw = mode.raw_escapes;
        match sw.process_stop_on(None, raw, true) {
            Ok((value, words)) => Ok(Expansion {
                value,
                words,
                matched: sw.matched,
                unmatched: sw.unmatched,
            }),
            Err(message) => Err(ShellError {
                word: word.to_string(),
                message,
            }),
        }
    }
}

/// Whether `b` holds one of `needles`: the planner asks this of every word it expands,
/// heredoc bodies included, so it is a vectorised search rather than a byte loop.
fn has_any_byte(b: &[u8], needles: [u8; 4]) -> bool {
    memchr::memchr3(needles[0], needles[1], needles[2], b).is_some()
        || memchr::memchr(needles[3], b).is_some()
}

struct ShellWord<'a> {
    /// The word, walked in place (collecting it into a `Vec<char>` was an allocation per
    /// expanded word).
    chars: &'a str,
    /// Byte offset of the next character in `chars`.
    pos: usize,
    env: &'a dyn VarLookup,
    escape: char,
    /// The escape as a byte when it is ASCII (always, for the escapes a Dockerfile can
    /// set): runs of ordinary characters are then found by a byte scan.
    escape_byte: Option<u8>,
    mode: LexMode,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    /// Nesting of `${...}`; bounded so a hostile word cannot exhaust the stack.
    depth: usize,
}

/// Deeper `${a:-${b:-...}}` nesting than this is refused (Go's growable stacks never hit a
/// limit; ours are fixed, and no real Dockerfile comes close).
const MAX_DEPTH: usize = 200;

/// Builds the split-words view alongside the plain result, when someone reads it (not for
/// nested `${...}` words, nor when only the value is wanted).
#[derive(Default)]
struct Words {
    enabled: bool,
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        if self.enabled {
            self.buf.push(ch);
            self.in_word = true;
        }
    }
    /// [`Words::add_char`] for each character of `s`, a whitespace-free piece at a time.
    fn add_string(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        let mut rest = s;
        while let Some(i) = rest.find(char::is_whitespace) {
            if i > 0 {
                self.add_raw_string(&rest[..i]);
            }
            let ws_len = rest[i..].chars().next().map_or(1, char::len_utf8);
            self.add_char(' ');
            rest = &rest[i + ws_len..];
        }
        if !rest.is_empty() {
            self.add_raw_string(rest);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        if self.enabled {
            self.buf.push_str(s);
            self.in_word = true;
        }
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

/// A value under construction that is only written when someone will read it.
struct Value {
    buf: String,
    build: bool,
}

impl Value {
    fn push_str(&mut self, s: &str) {
        if self.build {
            self.buf.push_str(s);
        }
    }
    fn push(&mut self, c: char) {
        if self.build {
            self.buf.push(c);
        }
    }
}

/// What Go prints for `string(scanner.EOF)`.
const EOF_CHAR: char = '\u{FFFD}';

impl<'a> ShellWord<'a> {
    fn peek(&self) -> Option<char> {
        let b = *self.chars.as_bytes().get(self.pos)?;
        if b.is_ascii() {
            return Some(char::from(b));
        }
        self.chars[self.pos..].chars().next()
    }

    /// Byte offset of the next character at or after the cursor that is `$`, `"`, the
    /// escape, `stop`, or (when `single` is set) `'`: everything before it is copied as
    /// it is. The end of the word when there is none.
    fn next_special(&self, stop: Option<char>, single: bool) -> usize {
        let rest = &self.chars[self.pos..];
        let stop_byte = match stop {
            None => Some(None),
            Some(c) => u8::try_from(c).ok().filter(u8::is_ascii).map(Some),
        };
        let found = match (self.escape_byte, stop_byte) {
            // All the characters looked for are ASCII, and no byte of a multi-byte UTF-8
            // character is, so a byte scan finds exactly what a char scan would.
            (Some(esc), Some(stop)) => rest.bytes().position(|b| {
                b == b'$' || b == b'"' || b == esc || (single && b == b'\'') || Some(b) == stop
            }),
            _ => rest.find(|c: char| {
                c == '$' || c == '"' || c == self.escape || (single && c == '\'') || Some(c) == stop
            }),
        };
        found.map_or(self.chars.len(), |i| self.pos + i)
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if let Some(c) = c {
            self.pos += c.len_utf8();
        }
        c
    }

    /// Processes up to `stop` (or the end). With `build` false the word is only walked
    /// (its errors and nested substitutions still happen) and an empty value returned: the
    /// caller has no use for it, e.g. the default of `${a:-word}` when `a` is set.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        build: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.mode.raw_escapes;
        self.mode.raw_escapes = raw_escapes;
        let out = self.stop_on_inner(stop, build);
        self.mode.raw_escapes = saved;
        out
    }

    fn stop_on_inner(
        &mut self,
        stop: Option<char>,
        build: bool,
    ) -> Result<(String, Vec<String>), String> {
        // The value is about as long as the rest of the word (one allocation, not a few).
        let mut result = Value {
            buf: String::with_capacity(if stop.is_none() {
                self.chars.len() - self.pos
            } else {
                0
            }),
            build,
        };
        let mut words = Words {
            // Nested words (`${a:-word}`) only need their value.
            enabled: stop.is_none() && !self.mode.untracked,
            ..Words::default()
        };
        loop {
            // Ordinary characters are copied a run at a time.
            let run_end = self.next_special(stop, true);
            if run_end > self.pos {
                let run = &self.chars[self.pos..run_end];
                result.push_str(run);
                words.add_string(run);
                self.pos = run_end;
            }
            let Some(ch) = self.peek() else { break };
            if stop == Some(ch) {
                self.next();
                return Ok((result.buf, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '\'' => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(tmp);
                    words.add_raw_string(tmp);
                }
                '"' => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    // The escape (the scan stops at nothing else).
                    self.next();
                    if self.mode.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result.buf, words.finish()))
    }

    /// A single-quoted string: a slice of the word (nothing inside is special), with its
    /// quotes when they are kept.
    fn process_single_quote(&mut self) -> Result<&'a str, String> {
        let chars = self.chars;
        let open = self.pos;
        let start = open + 1;
        let Some(len) = chars[start..].find('\'') else {
            self.pos = chars.len();
            return Err(
                "unexpected end of statement while looking for matching single-quote".into(),
            );
        };
        let end = start + len;
        self.pos = end + 1;
        Ok(if self.mode.raw_quotes {
            &chars[open..=end]
        } else {
            &chars[start..end]
        })
    }

    /// A double-quoted string: borrowed from the word when nothing inside needs expanding
    /// or unescaping.
    fn process_double_quote(&mut self) -> Result<Cow<'a, str>, String> {
        let chars = self.chars;
        let open = self.pos;
        self.next();
        let run_end = self.next_special(None, false);
        if chars.as_bytes().get(run_end) == Some(&b'"') {
            self.pos = run_end + 1;
            return Ok(Cow::Borrowed(if self.mode.raw_quotes {
                &chars[open..=run_end]
            } else {
                &chars[open + 1..run_end]
            }));
        }
        let mut result = String::new();
        if self.mode.raw_quotes {
            result.push('"');
        }
        loop {
            let run_end = self.next_special(None, false);
            result.push_str(&chars[self.pos..run_end]);
            self.pos = run_end;
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.mode.raw_quotes {
                        result.push('"');
                    }
                    return Ok(Cow::Owned(result));
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    // The escape (the scan stops at nothing else).
                    let mut ch = self.next().unwrap_or(EOF_CHAR);
                    if self.mode.raw_escapes {
                        result.push(ch);
                    }
                    match self.peek() {
                        None => continue,
                        Some(n) if n == '"' || n == '$' || n == self.escape => {
                            ch = n;
                            self.next();
                        }
                        Some(_) => {}
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn lookup(&mut self, name: &str) -> Option<Cow<'a, str>> {
        let env = self.env;
        let v = env.get(name);
        if self.mode.untracked {
            return v;
        }
        if v.is_some() {
            self.matched.insert(name.to_string());
        } else {
            self.unmatched.insert(name.to_string());
        }
        v
    }

    fn process_dollar(&mut self) -> Result<Cow<'a, str>, String> {
        if self.depth >= MAX_DEPTH {
            return Err("syntax error: substitutions nested too deeply".into());
        }
        self.depth += 1;
        let out = self.process_dollar_inner();
        self.depth -= 1;
        out
    }

    fn process_dollar_inner(&mut self) -> Result<Cow<'a, str>, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok(Cow::Borrowed("$"));
            }
            return Ok(match self.lookup(name) {
                Some(v) => v,
                None if self.mode.skip_unset_env => Cow::Owned(format!("${name}")),
                None => Cow::Borrowed(""),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut modifier = first.unwrap_or(EOF_CHAR);
        // The modifier as written (`-` or `:-`); an array, since only errors print it.
        let mut chs = ['\0', modifier];
        let chs_text = |chs: [char; 2]| chs.iter().filter(|c| **c != '\0').collect::<String>();
        let mut null_is_unset = false;
        match first {
            Some('}') => {
                return Ok(match self.lookup(name) {
                    Some(v) => v,
                    None if self.mode.skip_unset_env => Cow::Owned(format!("${{{name}}}")),
                    None => Cow::Borrowed(""),
                });
            }
            Some(':') => {
                null_is_unset = true;
                modifier = self.next().unwrap_or(EOF_CHAR);
                chs = [':', modifier];
            }
            Some('+' | '-' | '?' | '#' | '%') => {}
            Some('/') => return self.process_replace(name).map(Cow::Owned),
            _ => {
                let chs = chs_text(chs);
                return Err(format!("unsupported modifier ({chs}) in substitution"));
            }
        }
        let raw = modifier == '#' || modifier == '%';
        if null_is_unset && raw {
            let chs = chs_text(chs);
            return Err(format!("unsupported modifier ({chs}) in substitution"));
        }
        // The variable is looked up before its word is processed (lookups have no effect
        // but the reported names, a set), so a word that will not be used is not built.
        let value = self.lookup(name);
        let unset_or_null = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        let keep_as_written = self.mode.skip_unset_env && value.is_none();
        let word_used = keep_as_written
            || match modifier {
                '-' | '?' => unset_or_null,
                '+' => !unset_or_null,
                _ => true,
            };
        let word = match self.process_stop_on(Some('}'), raw, word_used) {
            Ok((w, _)) => w,
            Err(e) if self.peek().is_none() => {
                let _ = e;
                return Err("syntax error: missing '}'".into());
            }
            Err(e) => return Err(e),
        };
        if keep_as_written {
            let chs = chs_text(chs);
            return Ok(Cow::Owned(format!("${{{name}{chs}{word}}}")));
        }
        match modifier {
            '-' => Ok(if unset_or_null {
                Cow::Owned(word)
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset_or_null {
                Cow::Borrowed("")
            } else {
                Cow::Owned(word)
            }),
            '?' => {
                if value.is_none() || unset_or_null {
                    let default = if value.is_none() {
                        "is not allowed to be unset"
                    } else {
                        "is not allowed to be empty"
                    };
                    let message = if word.is_empty() { default } else { &word };
                    return Err(format!("{name}: {message}"));
                }
                Ok(value.unwrap_or_default())
            }
            '#' | '%' => {
                let value = value.unwrap_or_default();
                let (greedy, pat) = match word.strip_prefix(modifier) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                let pattern = Pattern::compile(&pat)
                    .map_err(|e| format!("invalid pattern ({pat}) in substitution: {e}"))?;
                Ok(Cow::Owned(if modifier == '%' {
                    pattern.trim_suffix(&value, greedy)
                } else {
                    pattern.trim_prefix(&value, greedy)
                }))
            }
            _ => {
                let chs = chs_text(chs);
                Err(format!("unsupported modifier ({chs}) in substitution"))
            }
        }
    }

    fn process_replace(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = match self.process_stop_on(Some('/'), true, true) {
            Ok((p, _)) => p,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".into());
            }
            Err(e) => return Err(e),
        };
        let replacement = match self.process_stop_on(Some('}'), true, true) {
            Ok((r, _)) => r,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".into()),
            Err(e) => return Err(e),
        };
        let Some(value) = self.lookup(name) else {
            if self.mode.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let compiled = Pattern::compile(&pattern)
            .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
        Ok(compiled.replace(&value, &replacement, all))
    }

    /// The variable name at the cursor, as a slice of the word (names are contiguous, so
    /// no copy is needed).
    fn process_name(&mut self) -> &'a str {
        let chars = self.chars;
        let start = self.pos;
        while let Some(ch) = self.peek() {
            let empty = self.pos == start;
            if empty && ch.is_ascii_digit() {
                while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                    self.next();
                }
                return &chars[start..self.pos];
            }
            if empty && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return &chars[start..self.pos];
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
        }
        &chars[start..self.pos]
    }
}

#[cfg(test)]
mod tests;
