//! Which files a COPY/ADD source list selects inside a source root (the context, or a stage or
//! image root for `--from`): wildcard expansion per Go `filepath.Match`, symlinks resolved only
//! inside the root, directory sources walked in sorted order, `.dockerignore` and `--exclude`
//! applied, and a missing source reported with the ignore pattern that hid it.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::dockerignore::{IgnoreMatcher, clean_path};
use super::walk::walk_dir;
use super::{ContextError, pathmatch};

/// How sources are looked up in the source root.
#[derive(Debug, Clone, Default)]
pub struct SelectOptions<'a> {
    /// `.dockerignore` rules (only for the build context).
    pub ignore: Option<&'a IgnoreMatcher>,
    /// `--exclude` patterns, matched against paths relative to each top-level source.
    pub excludes: Vec<String>,
    /// Resolve absolute symlink targets and `..` past the root inside the root (as a container
    /// would see them) instead of failing. Right for stage/image roots; the context is strict.
    pub scoped_symlinks: bool,
}

/// One file or directory a source selects.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Index of the source (in the request's list) this came from.
    pub source_index: usize,
    /// The top-level match as the wildcard expansion named it, relative to the source root
    /// (before symlink resolution; its base name names the copy).
    pub matched: String,
    /// The top-level match, relative to the source root after symlink resolution.
    pub top: String,
    /// Path relative to `top` (`""` for the top-level match itself).
    pub rel: String,
    /// Host path to read.
    pub host: PathBuf,
    /// Metadata (of the symlink itself, except a followed top-level source).
    pub meta: Metadata,
    /// Target of a symlink that is copied as a link.
    pub link_target: Option<String>,
}

impl Selected {
    /// The path relative to the source root.
    pub fn root_path(&self) -> String {
        join_rel(&self.top, &self.rel)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.meta.is_dir()
    }
}

pub(crate) fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty() || a == ".", b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => {
            // Called once or twice per walked file: no formatting machinery.
            let mut out = String::with_capacity(a.len() + 1 + b.len());
            out.push_str(a);
            out.push('/');
            out.push_str(b);
            out
        }
    }
}

fn lstat(path: &Path) -> Result<Option<Metadata>, ContextError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(ContextError::io(path, e)),
    }
}

/// Resolves `rel` inside `root`, following symlinks (the last one only if `follow_last`) and
/// never leaving the root. Returns the resolved root-relative path, or `None` if it is missing.
pub(crate) fn resolve_in_root(
    root: &Path,
    rel: &str,
    follow_last: bool,
    scoped: bool,
    written: &str,
) -> Result<Option<String>, ContextError> {
    let mut todo: Vec<String> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .rev()
        .map(str::to_string)
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = todo.pop() {
        if comp == ".." {
            if done.pop().is_none() && !scoped {
                return Err(ContextError::OutsideRoot {
                    path: written.to_string(),
                    target: format!("../{}", rel),
                });
            }
            continue;
        }
        done.push(comp);
        let host = root.join(done.join("/"));
        let Some(meta) = lstat(&host)? else {
            return Ok(None);
        };
        let is_last = todo.is_empty();
        if meta.file_type().is_symlink() && (!is_last || follow_last) {
            hops += 1;
            if hops > 40 {
                return Err(ContextError::io(
                    host,
                    std::io::Error::from_raw_os_error(libc::ELOOP),
                ));
            }
            let target = std::fs::read_link(&host).map_err(|e| ContextError::io(&host, e))?;
            let target = target.to_string_lossy().into_owned();
            done.pop();
            if target.starts_with('/') {
                if !scoped {
                    return Err(ContextError::OutsideRoot {
                        path: written.to_string(),
                        target,
                    });
                }
                done.clear();
            }
            todo.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .rev()
                    .map(str::to_string),
            );
        }
    }
    Ok(Some(done.join("/")))
}

/// Expands one cleaned source into root-relative matches (sorted), resolving every directory
/// on the way inside the root.
fn expand(
    root: &Path,
    src: &str,
    opts: &SelectOptions<'_>,
    written: &str,
) -> Result<Vec<String>, ContextError> {
    if !pathmatch::has_meta(src) {
        return Ok(vec![src.to_string()]);
    }
    let mut prefixes = vec![String::new()];
    let comps: Vec<&str> = src.split('/').collect();
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for prefix in prefixes {
            if !pathmatch::has_meta(comp) {
                let unescaped: String = unescape(comp);
                next.push(join_rel(&prefix, &unescaped));
                continue;
            }
            pathmatch::validate(comp).map_err(|e| ContextError::BadPattern {
                pattern: written.to_string(),
                reason: e.to_string(),
            })?;
            let Some(dir) = resolve_in_root(root, &prefix, true, opts.scoped_symlinks, written)?
            else {
                continue;
            };
            let host = root.join(&dir);
            let Ok(rd) = std::fs::read_dir(&host) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                if pathmatch::matches(comp, &name).unwrap_or(false) {
                    let path = join_rel(&dir, &name);
                    // The context as BuildKit receives it has no ignored files to match.
                    if last && opts.ignore.is_some_and(|ig| ig.is_excluded(&path)) {
                        continue;
                    }
                    next.push(path);
                }
            }
        }
        prefixes = next;
    }
    Ok(prefixes)
}

fn unescape(comp: &str) -> String {
    let mut out = String::new();
    let mut chars = comp.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Selects everything `sources` name in `root`, in order: each source's matches sorted, each
/// directory's contents in sorted walk order after the directory itself.
pub fn select_sources(
    root: &Path,
    sources: &[String],
    opts: &SelectOptions<'_>,
) -> Result<Vec<Selected>, ContextError> {
    let excludes = IgnoreMatcher::new(&opts.excludes)?;
    let mut out = Vec::new();
    for (index, written) in sources.iter().enumerate() {
        let cleaned = clean_path(&format!("/{written}"));
        let cleaned = cleaned.trim_start_matches('/');
        let wildcard = pathmatch::has_meta(cleaned);
        let matches = expand(root, cleaned, opts, written)?;
        if matches.is_empty() {
            // BuildKit's COPY allows an empty wildcard (AllowEmptyWildcard).
            continue;
        }
        for m in matches {
            let Some(resolved) = resolve_in_root(root, &m, true, opts.scoped_symlinks, written)?
            else {
                return Err(not_found(written, &m, opts.ignore));
            };
            let host = root.join(&resolved);
            let Some(meta) = lstat(&host)? else {
                return Err(not_found(written, &m, opts.ignore));
            };
            if let Some(ig) = opts.ignore
                && !resolved.is_empty()
                && ig.is_excluded(&resolved)
                && (!meta.is_dir() || ig.can_prune(&resolved))
            {
                return Err(not_found(written, &resolved, opts.ignore));
            }
            let base = m.rsplit('/').next().unwrap_or("").to_string();
            if wildcard && !base.is_empty() && excludes.is_excluded(&base) {
                continue;
            }
            let top = Selected {
                source_index: index,
                matched: m.clone(),
                top: resolved.clone(),
                rel: String::new(),
                host: host.clone(),
                meta: meta.clone(),
                link_target: None,
            };
            out.push(top);
            if meta.is_dir() {
                walk_dir(root, (&m, &resolved), index, opts, &excludes, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The whole source root as a `COPY . /` would select it: a sorted walk honouring `ignore`.
pub fn walk_context(
    root: &Path,
    ignore: Option<&IgnoreMatcher>,
) -> Result<Vec<Selected>, ContextError> {
    let opts = SelectOptions {
        ignore,
        ..SelectOptions::default()
    };
    select_sources(root, &[".".to_string()], &opts)
}

fn not_found(written: &str, path: &str, ignore: Option<&IgnoreMatcher>) -> ContextError {
    let pattern = ignore.and_then(|ig| ig.excluding_pattern(path));
    ContextError::SourceNotFound {
        path: written.to_string(),
        excluded_by: pattern.map(|p| p.text()),
        ignore_file: pattern.and(ignore.and_then(|ig| ig.source().map(Path::to_path_buf))),
    }
}

/// The inode identity used to spot hard links within one selection.
pub(crate) fn inode_key(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolution_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "x").unwrap();
        symlink("d", root.join("ld")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("..", root.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(root, "ld/f", true, false, "ld/f").unwrap(),
            Some("d/f".into())
        );
        assert!(matches!(
            resolve_in_root(root, "abs/passwd", true, false, "abs/passwd"),
            Err(ContextError::OutsideRoot { .. })
        ));
        assert!(matches!(
            resolve_in_root(root, "up/x", true, false, "up/x"),
            Err(ContextError::OutsideRoot { .. })
        ));
        // A stage root sees absolute links as the container would.
        assert_eq!(
            resolve_in_root(root, "abs", true, true, "abs").unwrap(),
            None,
            "/etc is looked up inside the root, where it does not exist"
        );
        assert_eq!(
            resolve_in_root(root, "up/d/f", true, true, "up/d/f").unwrap(),
            Some("d/f".into())
        );
        assert_eq!(
            resolve_in_root(root, "nope/x", true, false, "x").unwrap(),
            None
        );
    }
}
