//! Walking a directory source of COPY/ADD: every entry below it in sorted pre-order with its
//! metadata, `.dockerignore` and `--exclude` applied, ignored directories pruned unless an
//! exception may re-include something below them. The walk is what a no-change rebuild of a
//! large context spends its time on, so each entry costs one `statx` relative to its open
//! directory, patterns are checked per directory when no pattern reaches below it, and wide
//! trees are walked on several threads.

use std::path::Path;

use super::ContextError;
use super::dockerignore::IgnoreMatcher;
use super::select::{SelectOptions, Selected, join_rel};

/// What every directory of one walk shares.
struct Walk<'a, 'o> {
    index: usize,
    matched: &'a str,
    top: &'a str,
    opts: &'a SelectOptions<'o>,
    excludes: &'a IgnoreMatcher,
}

/// Below this many subdirectories a directory's children are walked on one thread: spawning
/// costs more than it saves.
const PARALLEL_MIN_DIRS: usize = 8;

pub(super) fn walk_dir(
    root: &Path,
    (matched, top): (&str, &str),
    index: usize,
    opts: &SelectOptions<'_>,
    excludes: &IgnoreMatcher,
    out: &mut Vec<Selected>,
) -> Result<(), ContextError> {
    let top_host = root.join(top);
    let walk = Walk {
        index,
        matched,
        top,
        opts,
        excludes,
    };
    // The top-level source was selected, so whether it is ignored only matters for what the
    // walk inherits (an ignored top is walked only when an exception may re-include below it).
    let top_ignored = opts
        .ignore
        .is_some_and(|ig| !top.is_empty() && ig.is_excluded(top));
    walk.walk_into(&top_host, "", (top_ignored, false), out, true)
}

/// One entry of a directory being walked, with its verdicts.
struct Item {
    sel: Selected,
    /// `.dockerignore` excludes it.
    ignored: bool,
    /// `--exclude` excludes it.
    excluded: bool,
    /// A directory whose contents are walked (not pruned).
    descend: bool,
}

impl Walk<'_, '_> {
    /// Appends everything below `dir` (host path; `rel` relative to the top source) to `out`,
    /// in sorted pre-order. `ignored`/`excluded` are the directory's own verdicts, which its
    /// entries share when no pattern can match below it (the common case: patterns are checked
    /// once per directory, not per file). Directories excluded but kept open for exceptions
    /// are listed only when something below them is included, as the context transfer carries
    /// them. Entries go straight into `out`: a 20,000-file walk spent a tenth of its time
    /// copying them between per-directory vectors (and faulting in their pages).
    fn walk_into(
        &self,
        dir: &Path,
        rel: &str,
        (ignored, excluded): (bool, bool),
        out: &mut Vec<Selected>,
        may_fork: bool,
    ) -> Result<(), ContextError> {
        let mut entries: Vec<(std::ffi::OsString, std::fs::DirEntry)> = std::fs::read_dir(dir)
            .and_then(|rd| {
                rd.map(|e| e.map(|e| (e.file_name(), e)))
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .map_err(|e| ContextError::io(dir, e))?;
        // Byte order of the names, as walkdir's sort_by_file_name and BuildKit's walk.
        entries.sort_unstable_by(|a, b| {
            use std::os::unix::ffi::OsStrExt;
            a.0.as_bytes().cmp(b.0.as_bytes())
        });
        let root_rel_dir = join_rel(self.top, rel);
        let ignore = self.opts.ignore;
        let checks = (
            ignore.is_some_and(|ig| root_rel_dir.is_empty() || ig.may_match_below(&root_rel_dir)),
            !self.excludes.is_empty() && (rel.is_empty() || self.excludes.may_match_below(rel)),
        );
        let verdicts = (ignored, excluded);
        // The entry type from the directory listing (no stat) says how many subtrees there are.
        let dirs = entries
            .iter()
            .filter(|(_, e)| e.file_type().is_ok_and(|t| t.is_dir()))
            .count();
        if may_fork && dirs >= PARALLEL_MIN_DIRS && walk_threads() > 1 {
            let mut items = Vec::with_capacity(entries.len());
            for (name, entry) in entries {
                items.extend(self.item(&name, &entry, rel, verdicts, checks)?);
            }
            return self.emit_parallel(items, out);
        }
        for (name, entry) in entries {
            if let Some(item) = self.item(&name, &entry, rel, verdicts, checks)? {
                self.emit(item, out, may_fork)?;
            }
        }
        Ok(())
    }

    /// Stats one directory entry and decides its fate; `None` when it is left out.
    fn item(
        &self,
        name: &std::ffi::OsStr,
        entry: &std::fs::DirEntry,
        rel: &str,
        (ignored, excluded): (bool, bool),
        (check_ignore, check_excludes): (bool, bool),
    ) -> Result<Option<Item>, ContextError> {
        let io_err = |path: &Path, e| ContextError::io(path, e);
        let host = entry.path();
        // statx relative to the open directory: no path walk per file.
        let meta = entry.metadata().map_err(|e| io_err(&host, e))?;
        let child_rel = join_rel(rel, &name.to_string_lossy());
        let ignore = self.opts.ignore;
        // Only needed when patterns are checked here (rarely, below the top directory).
        let root_rel = || join_rel(self.top, &child_rel);
        let is_ignored = if check_ignore {
            ignore.is_some_and(|ig| ig.is_excluded(&root_rel()))
        } else {
            ignored
        };
        let is_excluded = if check_excludes {
            self.excludes.is_excluded(&child_rel)
        } else {
            excluded
        };
        let descend = meta.is_dir()
            && (!is_ignored || !ignore.is_some_and(|ig| ig.can_prune(&root_rel())))
            && (!is_excluded || !self.excludes.can_prune(&child_rel));
        if (is_ignored || is_excluded) && !descend {
            return Ok(None);
        }
        let link_target = if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&host).map_err(|e| io_err(&host, e))?;
            Some(t.to_string_lossy().into_owned())
        } else {
            None
        };
        Ok(Some(Item {
            sel: Selected {
                source_index: self.index,
                matched: self.matched.to_string(),
                top: self.top.to_string(),
                rel: child_rel,
                host,
                meta,
                link_target,
            },
            ignored: is_ignored,
            excluded: is_excluded,
            descend,
        }))
    }

    /// Appends `item` and, for a directory, its subtree (dropping an excluded directory again
    /// when nothing below it was included).
    fn emit(
        &self,
        item: Item,
        out: &mut Vec<Selected>,
        may_fork: bool,
    ) -> Result<(), ContextError> {
        if !item.descend {
            out.push(item.sel);
            return Ok(());
        }
        let (host, rel) = (item.sel.host.clone(), item.sel.rel.clone());
        let mark = out.len();
        out.push(item.sel);
        self.walk_into(&host, &rel, (item.ignored, item.excluded), out, may_fork)?;
        if (item.ignored || item.excluded) && out.len() == mark + 1 {
            out.pop();
        }
        Ok(())
    }

    /// Emits `items` split into contiguous runs walked on scoped threads, appended in order,
    /// so the result is the sequential one.
    fn emit_parallel(&self, items: Vec<Item>, out: &mut Vec<Selected>) -> Result<(), ContextError> {
        let threads = walk_threads().min(items.len()).max(1);
        let chunk = items.len().div_ceil(threads).max(1);
        let mut runs: Vec<Vec<Item>> = Vec::with_capacity(threads);
        let mut items = items.into_iter();
        loop {
            let run: Vec<Item> = items.by_ref().take(chunk).collect();
            if run.is_empty() {
                break;
            }
            runs.push(run);
        }
        let results: Vec<Result<Vec<Selected>, ContextError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = runs
                .into_iter()
                .map(|run| {
                    scope.spawn(move || {
                        let mut local = Vec::new();
                        for item in run {
                            self.emit(item, &mut local, false)?;
                        }
                        Ok(local)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("walk thread panicked"))
                .collect()
        });
        for r in results {
            out.append(&mut r?);
        }
        Ok(())
    }
}

/// How many threads walk a large directory tree: stat calls are cheap but many, and the
/// kernel serves them in parallel.
fn walk_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
