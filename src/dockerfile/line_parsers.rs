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

/// `[\t\v\f\r ]`, BuildKit's `reWhitespace`.
fn is_re_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{0B}' | '\u{0C}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]` (Go's `regexp.Split(s, n)`, `n == 2` or all).
fn split_re_ws(s: &str, limit_two: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        match rest.find(is_re_ws) {
            Some(i) if !(limit_two && out.len() == 1) => {
                out.push(rest[..i].to_string());
                rest = rest[i..].trim_start_matches(is_re_ws);
            }
            _ => {
                out.push(rest.to_string());
                return out;
            }
        }
    }
}

/// Splits a joined line into the instruction name, its `--flags` and the trimmed rest
/// (borrowed from `line` unless a flag ended mid-character).
pub(crate) fn split_command(line: &str) -> (&str, Vec<String>, Cow<'_, str>) {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(is_re_ws) {
        Some(i) => (
            &trimmed[..i],
            Some(trimmed[i..].trim_start_matches(is_re_ws)),
        ),
        None => (trimmed, None),
    };
    let (args, flags) = match rest {
        Some(rest) => extract_builder_flags(rest),
        None => (Cow::Borrowed(""), Vec::new()),
    };
    let args = match args {
        Cow::Borrowed(a) => Cow::Borrowed(a.trim()),
        Cow::Owned(a) => Cow::Owned(a.trim().to_string()),
    };
    (cmd, flags, args)
}

/// Go's `unicode.IsSpace(rune(b))` on a single byte: the ASCII spaces plus 0x85 and 0xA0.
fn byte_is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' | 0x85 | 0xA0)
}

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
            let end = b[pos..]
                .iter()
                .position(|&c| byte_is_space(c))
                .map_or(b.len(), |n| pos + n);
            let simple = b[pos..end]
                .iter()
                .all(|&c| c.is_ascii() && !matches!(c, b'\'' | b'"' | b'\\'));
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
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut chars = rest.char_indices();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut start = 0;
    let mut quote = '\0';
    // Length of a final escape that escapes nothing (dropped).
    let mut dropped = 0;
    loop {
        let cur = chars.next();
        if phase == Phase::Spaces {
            let Some((i, c)) = cur else { break };
            if c.is_whitespace() {
                continue;
            }
            start = i;
            phase = Phase::Word;
        }
        let Some((i, ch)) = cur else {
            let end = rest.len() - dropped;
            if end > start {
                words.push(&rest[start..end]);
            }
            break;
        };
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                words.push(&rest[start..i]);
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                phase = Phase::Quote;
            }
            // An escape takes the next character into the word, whatever it is.
            if ch == escape && chars.next().is_none() {
                dropped = ch.len_utf8();
            }
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' && chars.next().is_none() {
            dropped = ch.len_utf8();
            phase = Phase::Word;
        }
    }
    words
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
        args: parse_words(rest, escape)
            .into_iter()
            .map(str::to_string)
            .collect(),
        json: false,
    }
}

/// `ENV`, `LABEL`: key, value, key, value...; the legacy `KEY value with spaces` form when the
/// first word has no `=`. `what` is the instruction name used in error messages.
pub(crate) fn name_val(rest: &str, what: &str, escape: char) -> Result<Parsed, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Parsed::default());
    }
    if !words[0].contains('=') {
        let parts = split_re_ws(rest, true);
        if parts.len() < 2 {
            return Err(format!("{what} must have two arguments"));
        }
        return Ok(Parsed {
            args: parts,
            json: false,
        });
    }
    let mut args = Vec::with_capacity(words.len() * 2);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
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
    let mut args = vec![typ];
    args.extend(cmd.args);
    Ok(Parsed {
        args,
        json: cmd.json,
    })
}

#[cfg(test)]
mod tests;
