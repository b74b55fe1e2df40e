//! Per-instruction argument shapes, as BuildKit's `line_parsers.go` and `split_command.go`
//! build them: flag extraction, JSON (exec) form, whitespace lists, `ENV`/`LABEL` pairs,
//! `ARG` words, `HEALTHCHECK` sub-command. Quirks are kept on purpose, since BuildKit's
//! later stages (and ours) rely on these exact shapes.

use std::borrow::Cow;

/// Arguments of one instruction after its line parser ran.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) args: Vec<String>,
    pub(crate) json: bool,
}

/// `[\t\v\f\r ]`, BuildKit's `reWhitespace`. All ASCII, so scanning bytes finds exactly
/// what scanning chars would (no byte of a multi-byte UTF-8 character is ASCII).
fn is_re_ws(b: u8) -> bool {
    matches!(b, b'\t' | 0x0B | 0x0C | b'\r' | b' ')
}

/// `s` without leading `[\t\v\f\r ]`.
fn trim_start_re_ws(s: &str) -> &str {
    let n = s.bytes().take_while(|&b| is_re_ws(b)).count();
    &s[n..]
}

/// Splits on runs of `[\t\v\f\r ]` (Go's `regexp.Split(s, n)`, `n == 2` or all).
fn split_re_ws(s: &str, limit_two: bool) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if !is_re_ws(b[i]) {
            i += 1;
            continue;
        }
        if limit_two && out.len() == 1 {
            break;
        }
        out.push(s[start..i].to_string());
        while i < b.len() && is_re_ws(b[i]) {
            i += 1;
        }
        start = i;
    }
    out.push(s[start..].to_string());
    out
}

/// Splits a joined line into the instruction name, its `--flags` and the trimmed rest
/// (borrowed from `line` unless a flag ended mid-character).
pub(crate) fn split_command(line: &str) -> (&str, Vec<String>, Cow<'_, str>) {
    let trimmed = trim_ws(line);
    let (cmd, rest) = match trimmed.bytes().position(is_re_ws) {
        Some(i) => (&trimmed[..i], Some(trim_start_re_ws(&trimmed[i..]))),
        None => (trimmed, None),
    };
    let (args, flags) = match rest {
        Some(rest) => extract_builder_flags(rest),
        None => (Cow::Borrowed(""), Vec::new()),
    };
    let args = match args {
        Cow::Borrowed(a) => Cow::Borrowed(trim_ws(a)),
        Cow::Owned(a) => Cow::Owned(a.trim().to_string()),
    };
    (cmd, flags, args)
}

/// `str::trim`, taking ASCII whitespace off both ends bytewise and leaving only a
/// non-ASCII end to the Unicode-aware trim.
fn trim_ws(s: &str) -> &str {
    let b = s.as_bytes();
    let mut start = 0;
    while start < b.len() && ascii_ws(b[start]) {
        start += 1;
    }
    let mut end = b.len();
    while end > start && ascii_ws(b[end - 1]) {
        end -= 1;
    }
    let t = &s[start..end];
    let tb = t.as_bytes();
    if tb.first().is_some_and(|c| !c.is_ascii()) || tb.last().is_some_and(|c| !c.is_ascii()) {
        t.trim()
    } else {
        t
    }
}

/// Go's `unicode.IsSpace(rune(b))` on a single byte: the ASCII spaces plus 0x85 and 0xA0.
fn byte_is_space(b: u8) -> bool {
    FLAG_BYTE[usize::from(b)] == FLAG_SPACE
}

/// [`FLAG_BYTE`] class of a byte that ends a flag word.
const FLAG_SPACE: u8 = 1;
/// [`FLAG_BYTE`] class of a byte that needs the byte-by-byte walk (quote, escape, non-ASCII).
const FLAG_SPECIAL: u8 = 2;

/// Byte classes for flag scanning, one table lookup per byte instead of a chain of compares.
static FLAG_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0x80;
    while i < 256 {
        t[i] = FLAG_SPECIAL;
        i += 1;
    }
    t[b'\'' as usize] = FLAG_SPECIAL;
    t[b'"' as usize] = FLAG_SPECIAL;
    t[b'\\' as usize] = FLAG_SPECIAL;
    let spaces = [b'\t', b'\n', 0x0B, 0x0C, b'\r', b' ', 0x85, 0xA0];
    let mut j = 0;
    while j < spaces.len() {
        t[spaces[j] as usize] = FLAG_SPACE;
        j += 1;
    }
    t
};

/// BuildKit's `extractBuilderFlags`. It walks bytes, so a non-ASCII byte inside a flag
/// becomes the Latin-1 character of that byte (BuildKit does the same).
fn extract_builder_flags(line: &str) -> (Cow<'_, str>, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    // The rest starts after an ASCII space, or mid-character after a 0x85/0xA0 byte.
    let rest_at = |pos: usize| match line.get(pos..) {
        Some(rest) => Cow::Borrowed(rest),
        None => String::from_utf8_lossy(&b[pos..]),
    };
    let mut pos = 0;
    while pos <= b.len() {
        let ch = if pos < b.len() { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if byte_is_space(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (rest_at(pos), words);
            }
            // The usual flag (ASCII, no quotes or escapes) is the bytes up to the next space:
            // take it whole instead of byte by byte.
            let mut end = pos;
            let mut simple = true;
            while end < b.len() {
                match FLAG_BYTE[usize::from(b[end])] {
                    FLAG_SPACE => break,
                    FLAG_SPECIAL => simple = false,
                    _ => {}
                }
                end += 1;
            }
            if simple && end < b.len() {
                let flag = &line[pos..end];
                if flag == "--" {
                    return (rest_at(end), words);
                }
                words.push(flag.to_string());
                pos = end;
                continue;
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if byte_is_space(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest_at(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(char::from(c));
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if c == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(char::from(c));
        pos += 1;
    }
    (Cow::Borrowed(""), words)
}

/// BuildKit's `parseWords`: splits on whitespace, keeping quotes and escapes in the words.
/// Every character is kept (whitespace inside quotes or after an escape included), so each
/// word is a slice of `rest`; only an escape as the very last character is dropped.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<&str> {
    words(rest, escape).collect()
}

/// [`parse_words`] as an iterator, for callers that look at each word once (no list).
pub(crate) fn words(rest: &str, escape: char) -> Words<'_> {
    Words {
        text: rest,
        pos: 0,
        escape,
    }
}

/// The character at byte `i` of `s` and its length; ASCII without decoding.
#[inline]
fn char_at(s: &str, i: usize) -> (char, usize) {
    let b = s.as_bytes()[i];
    if b.is_ascii() {
        return (char::from(b), 1);
    }
    let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
    (c, c.len_utf8())
}

/// `char::is_whitespace` for an ASCII byte.
#[inline]
fn ascii_ws(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | b' ')
}

/// ASCII bytes that [`Words`] passes over outside quotes: all but whitespace, quotes and
/// the two escape characters a directive can choose.
static WORD_ORDINARY: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = !matches!(c, b'\t'..=b'\r' | b' ' | b'\'' | b'"' | b'\\' | b'`');
        i += 1;
    }
    t
};

/// Iterator over [`parse_words`]' words.
pub(crate) struct Words<'a> {
    text: &'a str,
    /// Byte offset where the next word's search starts.
    pos: usize,
    escape: char,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.text;
        let b = s.as_bytes();
        let len = b.len();
        let mut i = self.pos;
        while i < len {
            let c = b[i];
            if c.is_ascii() {
                if !ascii_ws(c) {
                    break;
                }
                i += 1;
            } else {
                let (ch, n) = char_at(s, i);
                if !ch.is_whitespace() {
                    break;
                }
                i += n;
            }
        }
        if i >= len {
            self.pos = len;
            return None;
        }
        let start = i;
        // ASCII bytes are compared as bytes; a non-ASCII escape (not one a directive can
        // set) is compared as a char.
        let escape_byte = u8::try_from(self.escape).ok().filter(u8::is_ascii);
        // The open quote, while inside one.
        let mut quote = 0u8;
        loop {
            // Ordinary bytes (not whitespace, a quote or either escape outside quotes; not
            // the quote or either escape inside) only move on: skipped in a tight loop.
            if quote == 0 {
                while i < len && WORD_ORDINARY[usize::from(b[i])] {
                    i += 1;
                }
            } else {
                while i < len && b[i].is_ascii() && !matches!(b[i], b'\\' | b'`') && b[i] != quote {
                    i += 1;
                }
            }
            if i >= len {
                break;
            }
            let c = b[i];
            let is_escape = if c.is_ascii() {
                i += 1;
                if quote == 0 {
                    if ascii_ws(c) {
                        self.pos = i;
                        return Some(&s[start..i - 1]);
                    }
                    if c == b'\'' || c == b'"' {
                        quote = c;
                        continue;
                    }
                } else if c == quote {
                    quote = 0;
                    continue;
                }
                escape_byte == Some(c)
            } else {
                let (ch, n) = char_at(s, i);
                i += n;
                if quote == 0 && ch.is_whitespace() {
                    self.pos = i;
                    return Some(&s[start..i - n]);
                }
                escape_byte.is_none() && ch == self.escape
            };
            if is_escape && quote != b'\'' {
                // The escape takes the next character into the word, whatever it is; one
                // that escapes nothing at the very end is dropped.
                if i >= len {
                    self.pos = len;
                    let end = len - self.escape.len_utf8();
                    return (end > start).then(|| &s[start..end]);
                }
                i += char_at(s, i).1;
            }
        }
        self.pos = len;
        Some(&s[start..])
    }
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// `Ok(Some)` for a JSON array of strings, `Ok(None)` when the text is not a JSON array,
/// `Err` for a JSON array holding something other than strings.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    if let Some(items) = plain_string_array(rest) {
        return Ok(Some(items));
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(rest)
    else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(NOT_STRING_ARRAY.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The usual exec form, `["a", "b c"]`: strings without escapes or control characters,
/// read straight from the text (serde_json builds a `Value` tree first). `None` for
/// anything else, which then goes through serde_json, so the accepted language is
/// serde_json's either way.
fn plain_string_array(s: &str) -> Option<Vec<String>> {
    let b = s.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    let mut items = Vec::new();
    let mut i = skip_ws(1);
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let start = i + 1;
            let len = b[start..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            let end = start + len;
            if b[end] != b'"' {
                return None;
            }
            items.push(s[start..end].to_string());
            i = skip_ws(end + 1);
            match b.get(i)? {
                b',' => i = skip_ws(i + 1),
                b']' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(i) == b.len()).then_some(items)
}

/// `RUN`, `CMD`, `ENTRYPOINT`, `SHELL`: JSON array or the whole rest as one string.
pub(crate) fn maybe_json(rest: &str) -> Result<Parsed, String> {
    if rest.is_empty() {
        return Ok(Parsed::default());
    }
    Ok(match parse_json(rest)? {
        Some(args) => Parsed { args, json: true },
        None => Parsed {
            args: vec![rest.to_string()],
            json: false,
        },
    })
}

/// `ADD`, `COPY`, `VOLUME`: JSON array or whitespace-separated words.
pub(crate) fn maybe_json_to_list(rest: &str) -> Result<Parsed, String> {
    Ok(match parse_json(rest)? {
        Some(args) => Parsed { args, json: true },
        None => whitespace_delimited(rest),
    })
}

/// `FROM`, `EXPOSE`: whitespace-separated words.
pub(crate) fn whitespace_delimited(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::default();
    }
    Parsed {
        args: split_re_ws(rest, false),
        json: false,
    }
}

/// `USER`, `WORKDIR`, `STOPSIGNAL`, `MAINTAINER`: the rest as one string.
pub(crate) fn single_string(rest: &str) -> Parsed {
    Parsed {
        args: if rest.is_empty() {
            vec![]
        } else {
            vec![rest.to_string()]
        },
        json: false,
    }
}

/// `ARG`: words, quotes kept.
pub(crate) fn name_or_name_val(rest: &str, escape: char) -> Parsed {
    Parsed {
        args: words(rest, escape).map(str::to_string).collect(),
        json: false,
    }
}

/// `ENV`, `LABEL`: key, value, key, value...; the legacy `KEY value with spaces` form when the
/// first word has no `=`. `what` is the instruction name used in error messages.
pub(crate) fn name_val<'a>(rest: &'a str, what: &str, escape: char) -> Result<Parsed, String> {
    let mut words = words(rest, escape);
    let Some(first) = words.next() else {
        return Ok(Parsed::default());
    };
    // Words are short: a plain byte loop beats memchr's setup.
    let split_eq = |w: &'a str| {
        w.bytes()
            .position(|b| b == b'=')
            .map(|i| (&w[..i], &w[i + 1..]))
    };
    if !first.as_bytes().contains(&b'=') {
        let parts = split_re_ws(rest, true);
        if parts.len() < 2 {
            return Err(format!("{what} must have two arguments"));
        }
        return Ok(Parsed {
            args: parts,
            json: false,
        });
    }
    let mut args = Vec::with_capacity(4);
    for word in std::iter::once(first).chain(words) {
        let Some((k, v)) = split_eq(word) else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                super::dump::go_quote(word)
            ));
        };
        args.push(k.to_string());
        args.push(v.to_string());
    }
    Ok(Parsed { args, json: false })
}

/// `HEALTHCHECK`: the first word (`CMD`, `NONE`...) then the command as `maybe_json` reads it.
pub(crate) fn health_config(rest: &str) -> Result<Parsed, String> {
    let b = rest.as_bytes();
    let sep = b.iter().position(|&c| byte_is_space(c)).unwrap_or(b.len());
    if sep == 0 {
        return Ok(Parsed::default());
    }
    let next = b[sep..]
        .iter()
        .position(|&c| !byte_is_space(c))
        .map_or(b.len(), |i| sep + i);
    let typ = String::from_utf8_lossy(&b[..sep]).into_owned();
    let cmd = maybe_json(&String::from_utf8_lossy(&b[next..]))?;
    let mut args = Vec::with_capacity(1 + cmd.args.len());
    args.push(typ);
    args.extend(cmd.args);
    Ok(Parsed {
        args,
        json: cmd.json,
    })
}

#[cfg(test)]
mod tests;
