//! `COPY` and `ADD`: sources, destination and their flags (`--from --chown --chmod --link
//! --parents --exclude`, ADD's `--checksum --keep-git-dir --unpack`). Values stay unexpanded;
//! the planner expands them with the stage's variables.

use serde::Serialize;

use super::flags::{FlagKind, Flags};

/// A parsed `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyInstr<'a> {
    /// Source paths or patterns (or `<<EOF` heredoc words), unexpanded.
    pub sources: Vec<&'a str>,
    /// Destination, unexpanded.
    pub dest: &'a str,
    /// `--from=`: stage name/index, image, or named context.
    pub from: Option<&'a str>,
    /// `--chown=user[:group]`.
    pub chown: Option<&'a str>,
    /// `--chmod=` (octal or symbolic; checked by the planner).
    pub chmod: Option<&'a str>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude=` patterns.
    pub excludes: Vec<&'a str>,
}

/// A parsed `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddInstr<'a> {
    /// Source paths, URLs or git references, unexpanded.
    pub sources: Vec<&'a str>,
    /// Destination, unexpanded.
    pub dest: &'a str,
    /// `--chown=user[:group]`.
    pub chown: Option<&'a str>,
    /// `--chmod=` (octal or symbolic; checked by the planner).
    pub chmod: Option<&'a str>,
    /// `--link`.
    pub link: bool,
    /// `--checksum=sha256:...` for URL sources.
    pub checksum: Option<&'a str>,
    /// `--keep-git-dir` for git sources.
    pub keep_git_dir: bool,
    /// `--exclude=` patterns.
    pub excludes: Vec<&'a str>,
    /// `--unpack=true|false`: `None` means ADD's default (unpack local archives, not URLs).
    pub unpack: Option<bool>,
}

const COPY_FLAGS: &[(&str, FlagKind)] = &[
    ("from", FlagKind::String),
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::Strings),
];

const ADD_FLAGS: &[(&str, FlagKind)] = &[
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("checksum", FlagKind::String),
    ("keep-git-dir", FlagKind::Bool),
    ("exclude", FlagKind::Strings),
    ("unpack", FlagKind::Bool),
];

fn split_sources<'a>(args: &'a [String], name: &str) -> Result<(Vec<&'a str>, &'a str), String> {
    if args.len() < 2 {
        return Err(format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let (dest, sources) = args.split_last().expect("len >= 2");
    Ok((sources.iter().map(String::as_str).collect(), dest))
}

pub(crate) fn parse_copy<'a>(
    flag_words: &'a [String],
    args: &'a [String],
) -> Result<CopyInstr<'a>, String> {
    let flags = Flags::parse(flag_words, COPY_FLAGS)?;
    let (sources, dest) = split_sources(args, "COPY")?;
    let chmod = flags.non_empty("chmod");
    Ok(CopyInstr {
        sources,
        dest,
        from: flags.non_empty("from"),
        chown: flags.non_empty("chown"),
        chmod,
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        excludes: flags.strings("exclude"),
    })
}

pub(crate) fn parse_add<'a>(
    flag_words: &'a [String],
    args: &'a [String],
) -> Result<AddInstr<'a>, String> {
    let flags = Flags::parse(flag_words, ADD_FLAGS)?;
    let (sources, dest) = split_sources(args, "ADD")?;
    let chmod = flags.non_empty("chmod");
    let checksum = flags.non_empty("checksum");
    if let Some(c) = checksum.filter(|c| !c.contains('$')) {
        let ok = c.split_once(':').is_some_and(|(alg, hex)| {
            matches!(alg, "sha256" | "sha384" | "sha512")
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if !ok {
            return Err(format!("invalid checksum digest format {c:?}"));
        }
    }
    Ok(AddInstr {
        sources,
        dest,
        chown: flags.non_empty("chown"),
        chmod,
        link: flags.bool("link").unwrap_or(false),
        checksum,
        keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
        excludes: flags.strings("exclude"),
        unpack: flags.bool("unpack"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words that live for the whole test run, so instructions may borrow them.
    fn w(v: &[&str]) -> &'static [String] {
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>().leak()
    }

    #[test]
    fn copy_flags() {
        let c = parse_copy(
            w(&[
                "--from=build",
                "--chown=1:2",
                "--chmod=0755",
                "--link",
                "--parents",
                "--exclude=*.md",
            ]),
            w(&["a", "b", "/dst/"]),
        )
        .unwrap();
        assert_eq!(c.sources, ["a", "b"]);
        assert_eq!(c.dest, "/dst/");
        assert_eq!(c.from, Some("build"));
        assert_eq!(c.chown, Some("1:2"));
        assert!(c.link && c.parents);
        assert_eq!(c.excludes, ["*.md"]);
    }

    #[test]
    fn add_flags() {
        let a = parse_add(
            w(&["--checksum=sha256:abcd", "--keep-git-dir", "--unpack=false"]),
            w(&["https://x/y.tar", "/"]),
        )
        .unwrap();
        assert_eq!(a.checksum, Some("sha256:abcd"));
        assert!(a.keep_git_dir);
        assert_eq!(a.unpack, Some(false));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_copy(&[], w(&["a"])).unwrap_err(),
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert_eq!(
            parse_add(w(&["--from=x"]), w(&["a", "b"])).unwrap_err(),
            "unknown flag: --from"
        );
        assert_eq!(
            parse_copy(w(&["--checksum=sha256:ab"]), w(&["a", "b"])).unwrap_err(),
            "unknown flag: --checksum"
        );
        assert!(parse_copy(w(&["--chmod=$MODE"]), w(&["a", "b"])).is_ok());
        assert!(parse_add(w(&["--checksum=md5:ab"]), w(&["a", "b"])).is_err());
    }
}
