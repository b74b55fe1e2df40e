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

/// The flags one instruction used, by name. Values borrow the node's flag words.
#[derive(Debug, Default)]
pub(crate) struct Flags<'w> {
    // Small vectors rather than maps: an instruction has a handful of flags at most, and
    // this runs for every instruction of a Dockerfile.
    strings: Vec<(&'static str, &'w str)>,
    bools: Vec<(&'static str, bool)>,
}

impl<'w> Flags<'w> {
    /// Parses `words` against the declared `spec`. Errors are BuildKit's messages, with the
    /// flag written as the user wrote it (`--name`).
    pub(crate) fn parse(
        words: &'w [String],
        spec: &[(&'static str, FlagKind)],
    ) -> Result<Flags<'w>, String> {
        let mut flags = Flags::default();
        for word in words {
            let Some(body) = word.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {word}"));
            };
            if body.is_empty() {
                break;
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(name, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(suggest::with_suggestion(
                    format!("unknown flag: --{name}"),
                    name,
                    spec.iter().map(|(n, _)| *n),
                )
                .replace("(did you mean ", "(did you mean --"));
            };
            let seen = flags.str(name).is_some() || flags.bool(name).is_some();
            if seen && kind != FlagKind::Strings {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            match kind {
                FlagKind::Bool => {
                    let v = match value {
                        None => true,
                        Some("") => return Err(format!("missing a value on flag: --{name}")),
                        Some(v) if v.eq_ignore_ascii_case("true") => true,
                        Some(v) if v.eq_ignore_ascii_case("false") => false,
                        // Unicode case folding (the Kelvin sign folds to `k`) cannot make
                        // `true`/`false` from anything else, so ASCII comparison is exact.
                        Some(v) => {
                            return Err(format!(
                                "expecting boolean value for flag --{name}, not: {v}"
                            ));
                        }
                    };
                    flags.bools.push((name, v));
                }
                FlagKind::String | FlagKind::Strings => {
                    let Some(v) = value else {
                        return Err(format!("missing a value on flag: --{name}"));
                    };
                    flags.strings.push((name, v));
                }
            }
        }
        Ok(flags)
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

    /// A boolean flag: `None` when not given.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.bools.iter().find(|(n, _)| *n == name).map(|b| b.1)
    }

    /// The values given to a string flag, in order (repeatable flags appear once per use).
    fn values(&self, name: &str) -> impl DoubleEndedIterator<Item = &'w str> {
        self.strings
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| *v)
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
