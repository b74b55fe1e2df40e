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

/// The flags one instruction used, by name.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    // Small vectors rather than maps: an instruction has a handful of flags at most, and
    // this runs for every instruction of a Dockerfile.
    strings: Vec<(&'static str, Vec<String>)>,
    bools: Vec<(&'static str, bool)>,
}

impl Flags {
    /// Parses `words` against the declared `spec`. Errors are BuildKit's messages, with the
    /// flag written as the user wrote it (`--name`).
    pub(crate) fn parse(
        words: &[String],
        spec: &[(&'static str, FlagKind)],
    ) -> Result<Flags, String> {
        let mut flags = Flags::default();
        let mut seen: Vec<&'static str> = Vec::new();
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
            if seen.contains(&name) && kind != FlagKind::Strings {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            seen.push(name);
            match kind {
                FlagKind::Bool => {
                    let v = match value.map(str::to_lowercase).as_deref() {
                        None => true,
                        Some("") => return Err(format!("missing a value on flag: --{name}")),
                        Some("true") => true,
                        Some("false") => false,
                        Some(_) => {
                            return Err(format!(
                                "expecting boolean value for flag --{name}, not: {}",
                                value.unwrap_or_default()
                            ));
                        }
                    };
                    match flags.bools.iter_mut().find(|(n, _)| *n == name) {
                        Some(b) => b.1 = v,
                        None => flags.bools.push((name, v)),
                    }
                }
                FlagKind::String | FlagKind::Strings => {
                    let Some(v) = value else {
                        return Err(format!("missing a value on flag: --{name}"));
                    };
                    match flags.strings.iter_mut().find(|(n, _)| *n == name) {
                        Some(list) => list.1.push(v.to_string()),
                        None => flags.strings.push((name, vec![v.to_string()])),
                    }
                }
            }
        }
        Ok(flags)
    }

    /// The value of a string flag, if given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.list(name).and_then(|v| v.last().cloned())
    }

    /// Every value of a repeatable flag, in order.
    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.list(name).map(<[String]>::to_vec).unwrap_or_default()
    }

    /// A boolean flag: `None` when not given.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.bools.iter().find(|(n, _)| *n == name).map(|b| b.1)
    }

    fn list(&self, name: &str) -> Option<&[String]> {
        self.strings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
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
        let f = Flags::parse(
            &words(&["--from=a", "--link", "--exclude=x", "--exclude=y"]),
            SPEC,
        )
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.strings("exclude"), ["x", "y"]);
        let f = Flags::parse(&words(&["--link=FALSE"]), SPEC).unwrap();
        assert_eq!(f.bool("link"), Some(false));
        assert_eq!(f.string("from"), None);
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
