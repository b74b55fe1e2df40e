//! `.dockerignore` files and the pattern matcher behind them, ported from moby/patternmatcher so
//! that every pattern selects exactly what docker selects: anchored at the context root, `*`/`?`/
//! `[...]` never crossing `/`, `**` spanning directories, `!` exceptions evaluated in order with
//! the last match winning, and a pattern that matches a directory also covering everything below.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::ContextError;
use super::pathmatch;

/// How one compiled pattern is checked, mirroring patternmatcher's fast paths.
#[derive(Debug, Clone)]
enum MatchType {
    Exact,
    /// `foo/**`: everything starting with `foo/` (and `foo/` itself).
    Prefix,
    /// `**/foo`: everything ending with `/foo`, and `foo` itself.
    Suffix,
    Regexp(Regex),
}

/// One `.dockerignore` line after cleaning.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The cleaned pattern text, without the leading `!`.
    cleaned: String,
    /// `!pattern`: re-includes what earlier patterns excluded.
    exclusion: bool,
    /// The pattern split at `/`, used to decide whether a directory can be pruned.
    dirs: Vec<String>,
    match_type: MatchType,
}

impl Pattern {
    /// The pattern as written in the ignore file (cleaned, with `!` restored).
    pub fn text(&self) -> String {
        if self.exclusion {
            format!("!{}", self.cleaned)
        } else {
            self.cleaned.clone()
        }
    }

    /// Whether this is a `!` exception.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn compile(raw: &str) -> Result<Pattern, ContextError> {
        let bad = |reason: String| ContextError::BadPattern {
            pattern: raw.to_string(),
            reason,
        };
        let trimmed = raw.trim();
        let mut p = clean_path(trimmed);
        let mut exclusion = false;
        if let Some(rest) = p.strip_prefix('!') {
            if rest.is_empty() {
                return Err(bad("illegal exclusion pattern: \"!\"".into()));
            }
            exclusion = true;
            p = rest.to_string();
        }
        // patternmatcher calls filepath.Match(p, ".") only for its syntax errors.
        pathmatch::validate(&p).map_err(|e| bad(e.to_string()))?;
        let mut re = String::from("^");
        let mut match_type = 0u8; // 0 exact, 1 prefix, 2 suffix, 3 regexp
        let chars: Vec<char> = p.chars().collect();
        let mut i = 0;
        let mut idx = 0;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            if ch == '*' {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        if match_type == 0 {
                            match_type = 1;
                        } else {
                            re.push_str(".*");
                            match_type = 3;
                        }
                    } else {
                        re.push_str("(.*/)?");
                        match_type = 3;
                    }
                    if idx == 0 {
                        match_type = 2;
                    }
                } else {
                    re.push_str("[^/]*");
                    match_type = 3;
                }
            } else if ch == '?' {
                re.push_str("[^/]");
                match_type = 3;
            } else if ".+()|{}$".contains(ch) {
                re.push('\\');
                re.push(ch);
            } else if ch == '\\' {
                if let Some(&next) = chars.get(i) {
                    i += 1;
                    re.push_str(&regex::escape(&next.to_string()));
                    match_type = 3;
                } else {
                    re.push_str("\\\\");
                }
            } else if ch == '[' || ch == ']' {
                re.push(ch);
                match_type = 3;
            } else {
                // Raw, as patternmatcher does: inside `[...]` this keeps ranges like `b-d`.
                re.push(ch);
            }
            idx += 1;
        }
        re.push('$');
        let match_type = match match_type {
            0 => MatchType::Exact,
            1 => MatchType::Prefix,
            2 => MatchType::Suffix,
            _ => MatchType::Regexp(Regex::new(&re).map_err(|e| bad(e.to_string()))?),
        };
        Ok(Pattern {
            dirs: p.split('/').map(str::to_string).collect(),
            cleaned: p,
            exclusion,
            match_type,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.match_type {
            MatchType::Exact => path == self.cleaned,
            MatchType::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchType::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            MatchType::Regexp(re) => re.is_match(path),
        }
    }

    /// Whether this pattern (an exception) could match `dir` or something below it.
    fn could_match_below(&self, dir: &str) -> bool {
        let comps: Vec<&str> = dir.split('/').collect();
        for (i, comp) in comps.iter().enumerate() {
            let Some(pat) = self.dirs.get(i) else {
                // The pattern is shorter than the dir: it can only match the dir or a parent,
                // which already decided the dir's fate.
                return false;
            };
            if pat.contains("**") {
                return true;
            }
            if !pathmatch::matches(pat, comp).unwrap_or(false) {
                return false;
            }
        }
        true
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub(crate) fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|c| *c != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// An ordered list of `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
    /// The file the patterns came from, for error messages.
    source: Option<PathBuf>,
}

impl IgnoreMatcher {
    /// Compiles patterns already normalised as [`parse_dockerignore`] does.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<IgnoreMatcher, ContextError> {
        let mut out = IgnoreMatcher::default();
        for raw in patterns {
            let raw = raw.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let p = Pattern::compile(raw)?;
            out.has_exclusions |= p.exclusion;
            out.patterns.push(p);
        }
        Ok(out)
    }

    /// Loads the ignore file that applies to a build: `<Dockerfile>.dockerignore` next to the
    /// Dockerfile wins over `.dockerignore` at the context root; neither existing means no rules.
    pub fn for_build(context: &Path, dockerfile: Option<&Path>) -> Result<Self, ContextError> {
        let mut candidates = Vec::new();
        if let Some(name) = dockerfile.and_then(Path::file_name) {
            let mut n = name.to_os_string();
            n.push(".dockerignore");
            candidates.push(dockerfile.expect("has a name").with_file_name(n));
        }
        candidates.push(context.join(".dockerignore"));
        for path in candidates {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let mut m = IgnoreMatcher::new(&parse_dockerignore(&text))?;
                    m.source = Some(path);
                    return Ok(m);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ContextError::Io { path, source }),
            }
        }
        Ok(IgnoreMatcher::default())
    }

    /// The ignore file these rules were read from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any `!` exception exists.
    pub fn has_exclusions(&self) -> bool {
        self.has_exclusions
    }

    /// The compiled patterns in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether `path` (relative to the context root, `/`-separated) is excluded, either itself
    /// or through a parent directory (patternmatcher's `MatchesOrParentMatches`).
    pub fn is_excluded(&self, path: &str) -> bool {
        self.excluding_pattern(path).is_some()
    }

    /// The pattern that finally excludes `path`, or `None` if it is included.
    pub fn excluding_pattern(&self, path: &str) -> Option<&Pattern> {
        let path = clean_path(path.trim_start_matches('/'));
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched: Option<&Pattern> = None;
        for pattern in &self.patterns {
            // Only inclusions can flip "not matched" and only exceptions can flip "matched".
            if pattern.exclusion != matched.is_some() {
                continue;
            }
            let mut hit = pattern.matches(&path);
            if !hit {
                for i in 0..parents.len() {
                    if pattern.matches(&parents[..=i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = if pattern.exclusion {
                    None
                } else {
                    Some(pattern)
                };
            }
        }
        matched
    }

    /// Whether any pattern could match something strictly below `dir` (a non-empty path
    /// relative to the context root). When none can, every path below `dir` gets `dir`'s own
    /// verdict, so a walk checks the patterns once per directory instead of once per file.
    /// Errs on the side of `true` (e.g. for bracket expressions, which may match a `/`).
    pub fn may_match_below(&self, dir: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| p.cleaned.contains('[') || p.could_match_below(dir))
    }

    /// Whether a walk may skip everything below the excluded directory `dir`: true unless some
    /// exception could re-include a path inside it.
    pub fn can_prune(&self, dir: &str) -> bool {
        !self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| p.could_match_below(dir))
    }
}

/// Reads `.dockerignore` text into normalised patterns as moby's `ignorefile.ReadAll` does:
/// BOM stripped, `#` comment lines dropped, whitespace trimmed, paths cleaned, leading `/` removed.
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean_path(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        out.push(if invert { format!("!{p}") } else { p });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str], path: &str) -> bool {
        IgnoreMatcher::new(patterns).unwrap().is_excluded(path)
    }

    // Ported from moby/patternmatcher TestMatches (Unix cases), which checks
    // MatchesOrParentMatches.
    #[test]
    fn pattern_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "/", true),
            ("**/", "/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("a\\\\", "a\\", true),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("a\\*b", "a*b", true),
        ];
        for (pattern, path, want) in cases {
            let got = m(&[*pattern], path);
            assert_eq!(got, *want, "pattern {pattern:?} on {path:?}");
        }
    }

    #[test]
    fn parent_directories_and_exceptions() {
        assert!(m(&["docs"], "docs/a/b.md"));
        assert!(!m(&["docs"], "src/docs"));
        assert!(m(&["*.md", "!README.md"], "CHANGES.md"));
        assert!(!m(&["*.md", "!README.md"], "README.md"));
        // An exception re-includes a file under an excluded directory.
        assert!(!m(&["vendor", "!vendor/keep.txt"], "vendor/keep.txt"));
        assert!(m(&["vendor", "!vendor/keep.txt"], "vendor/drop.txt"));
        // Last match wins.
        assert!(m(&["!a.txt", "a.txt"], "a.txt"));
        assert!(!m(&["a.txt", "!a.txt"], "a.txt"));
        assert!(m(&["a.txt", "!a.txt", "*.txt"], "a.txt"));
    }

    #[test]
    fn pruning_only_when_no_exception_can_match_below() {
        let plain = IgnoreMatcher::new(&["node_modules"]).unwrap();
        assert!(plain.can_prune("node_modules"));
        let keep = IgnoreMatcher::new(&["vendor", "!vendor/keep/*.txt"]).unwrap();
        assert!(!keep.can_prune("vendor"));
        assert!(!keep.can_prune("vendor/keep"));
        assert!(keep.can_prune("vendor/other"));
        let deep = IgnoreMatcher::new(&["build", "!**/important"]).unwrap();
        assert!(!deep.can_prune("build"));
    }

    #[test]
    fn may_match_below_only_where_a_pattern_reaches() {
        let ig = IgnoreMatcher::new(&["gen.sh", "build/*.o", "!keep/x"]).unwrap();
        assert!(!ig.may_match_below("tree"));
        assert!(!ig.may_match_below("tree/d1"));
        assert!(ig.may_match_below("build"));
        assert!(!ig.may_match_below("build/sub"));
        assert!(ig.may_match_below("keep"));
        for anywhere in ["**/*.o", "a/[/]b"] {
            let ig = IgnoreMatcher::new(&[anywhere]).unwrap();
            assert!(ig.may_match_below("tree/d1"), "{anywhere}");
        }
    }

    #[test]
    fn dockerignore_file_normalisation() {
        let text =
            "\u{feff}# comment\n  /abs/path  \n\n!  /keep/../keep2\n./x/./y/\n #notcomment\n";
        assert_eq!(
            parse_dockerignore(text),
            vec!["abs/path", "!keep2", "x/y", "#notcomment"]
        );
    }

    #[test]
    fn lone_bang_is_an_error() {
        let err = IgnoreMatcher::new(&["!"]).unwrap_err();
        assert!(err.to_string().contains("illegal exclusion"), "{err}");
        assert!(IgnoreMatcher::new(&["[a-"]).is_err());
        // A trailing escape is a filepath.Match syntax error.
        assert!(IgnoreMatcher::new(&["a\\"]).is_err());
    }

    #[test]
    fn clean_matches_go() {
        assert_eq!(clean_path("a/../../b"), "../b");
        assert_eq!(clean_path("/../a//b/."), "/a/b");
        assert_eq!(clean_path("./"), ".");
        assert_eq!(clean_path(""), ".");
    }
}
