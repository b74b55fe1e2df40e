//! `--name[=value]` flag parsing for one instruction, with BuildKit's `bflag.go` rules: only
//! declared flags, booleans take no value or `true`/`false`, strings need `=`, only list flags
//! may repeat, and `--` ends the flags.

use super::suggest;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link`, `--link=true`, `--link=false`.
    Bool,
    /// `--from=x`; at most once.
    String,
    /// `--mount=x`, repeatable.
    Strings,
}

/// The flags one instruction used, read from its flag words on demand. Nothing is copied
/// or collected: an instruction has a handful of flag words at most, and this runs for every
/// instruction of a Dockerfile, so scanning the words again beats building a map.
#[derive(Debug, Default)]
pub(crate) struct Flags<'w> {
    /// The validated words, up to (not including) a `--` terminator.
    words: &'w [String],
}

/// `--name[=value]` split into the name and the value.
fn split(word: &str) -> (&str, Option<&str>) {
    let body = word.strip_prefix("--").unwrap_or(word);
    match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    }
}

impl<'w> Flags<'w> {
    /// Parses `words` against the declared `spec`. Errors are BuildKit's messages, with the
    /// flag written as the user wrote it (`--name`).
    pub(crate) fn parse(
        words: &'w [String],
        spec: &[(&'static str, FlagKind)],
    ) -> Result<Flags<'w>, String> {
        let mut end = words.len();
        for (i, word) in words.iter().enumerate() {
            let Some(body) = word.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {word}"));
            };
            if body.is_empty() {
                end = i;
                break;
            }
            let (name, value) = split(word);
            let Some(&(name, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(suggest::with_suggestion(
                    format!("unknown flag: --{name}"),
                    name,
                    spec.iter().map(|(n, _)| *n),
                )
                .replace("(did you mean ", "(did you mean --"));
            };
            let seen = words[..i].iter().any(|w| named(w, name).is_some());
            if seen && kind != FlagKind::Strings {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            match kind {
                FlagKind::Bool => {
                    match value {
                        None => {}
                        Some("") => return Err(format!("missing a value on flag: --{name}")),
                        Some(v) if parse_bool(v).is_some() => {}
                        // Unicode case folding (the Kelvin sign folds to `k`) cannot make
                        // `true`/`false` from anything else, so ASCII comparison is exact.
                        Some(v) => {
                            return Err(format!(
                                "expecting boolean value for flag --{name}, not: {v}"
                            ));
                        }
                    }
                }
                FlagKind::String | FlagKind::Strings => {
                    if value.is_none() {
                        return Err(format!("missing a value on flag: --{name}"));
                    }
                }
            }
        }
        Ok(Flags {
            words: &words[..end],
        })
    }

    /// The value of a string flag, if given and not empty.
    pub(crate) fn non_empty(&self, name: &str) -> Option<&'w str> {
        self.str(name).filter(|v| !v.is_empty())
    }

    /// The value of a string flag, borrowed.
    pub(crate) fn str(&self, name: &str) -> Option<&'w str> {
        self.values(name).last()
    }

    /// Every value of a repeatable flag, in order.
    pub(crate) fn strings(&self, name: &str) -> Vec<&'w str> {
        self.values(name).collect()
    }

    /// A boolean flag: `None` when not given (the words were validated by [`Flags::parse`]).
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.words
            .iter()
            .find_map(|w| named(w, name))
            .map(|v| v.is_none_or(|v| parse_bool(v) == Some(true)))
    }

    /// The values given to a string flag, in order (repeatable flags appear once per use).
    fn values(&self, name: &str) -> impl DoubleEndedIterator<Item = &'w str> {
        self.words
            .iter()
            .filter_map(move |w| named(w, name).flatten())
    }
}

/// If `word` is flag `name` (`--name` or `--name=value`), its value. Matched in place, as
/// lookups scan every flag word of the instruction.
fn named<'w>(word: &'w str, name: &str) -> Option<Option<&'w str>> {
    let rest = word.strip_prefix("--")?.strip_prefix(name)?;
    match rest.as_bytes().first() {
        None => Some(None),
        Some(b'=') => Some(Some(&rest[1..])),
        Some(_) => None,
    }
}

/// `true`/`false` in any ASCII case.
fn parse_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[(&str, FlagKind)] = &[
        ("from", FlagKind::String),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::Strings),
    ];

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_each_kind() {
        let w = words(&["--from=a", "--link", "--exclude=x", "--exclude=y"]);
        let f = Flags::parse(&w, SPEC).unwrap();
        assert_eq!(f.str("from"), Some("a"));
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.strings("exclude"), ["x", "y"]);
        let w = words(&["--link=FALSE"]);
        let f = Flags::parse(&w, SPEC).unwrap();
        assert_eq!(f.bool("link"), Some(false));
        assert_eq!(f.str("from"), None);
    }

    #[test]
    fn lookups_match_whole_names() {
        assert_eq!(named("--link", "link"), Some(None));
        assert_eq!(named("--link=false", "link"), Some(Some("false")));
        assert_eq!(named("--from=a=b", "from"), Some(Some("a=b")));
        assert_eq!(named("--linked", "link"), None);
        assert_eq!(named("--lin", "link"), None);
        assert_eq!(named("-link", "link"), None);
        let spec = &[("link", FlagKind::Bool), ("linked", FlagKind::Bool)];
        let w = words(&["--linked=false"]);
        let f = Flags::parse(&w, spec).unwrap();
        assert_eq!((f.bool("link"), f.bool("linked")), (None, Some(false)));
        let w = words(&["--exclude=a", "--", "--exclude=b"]);
        let f = Flags::parse(&w, SPEC).unwrap();
        assert_eq!(f.strings("exclude"), ["a"]);
    }

    #[test]
    fn rejects_bad_flags() {
        let e = Flags::parse(&words(&["--fromm=a"]), SPEC).unwrap_err();
        assert_eq!(e, "unknown flag: --fromm (did you mean --from?)");
        let e = Flags::parse(&words(&["--from=a", "--from=b"]), SPEC).unwrap_err();
        assert_eq!(e, "duplicate flag specified: --from");
        let e = Flags::parse(&words(&["--from"]), SPEC).unwrap_err();
        assert_eq!(e, "missing a value on flag: --from");
        let e = Flags::parse(&words(&["--link=yes"]), SPEC).unwrap_err();
        assert_eq!(e, "expecting boolean value for flag --link, not: yes");
        let e = Flags::parse(&words(&["--link="]), SPEC).unwrap_err();
        assert_eq!(e, "missing a value on flag: --link");
    }
}
