//! Roots that `COPY --from=<stage|image>` reads, materialized only as far as the COPY can look.
//!
//! Unpacking a whole toolchain stage to copy one binary out of it created (and at the end of
//! the build deleted) tens of thousands of files, which on this project's disks took longer than
//! compiling. A COPY reads below the literal prefixes of its sources (the components before the
//! first wildcard), so a view holds the layers' entries in those subtrees and the ancestors on
//! the way to them, applied in order with whiteouts ([`super::tar_select`]). Where a path can
//! lead elsewhere the view grows and is built again: through a symlink that is an ancestor of
//! (or is) a prefix, or that a wildcard may match or descend through, to the symlink's target;
//! and to the target of a hard link inside the view. Views are kept per (root, prefix set) for
//! the rest of the build.
//!
//! Each view keeps the [`OwnerTable`] of what it holds: it is applied as the user running the
//! build, so rootless its files belong to that user on disk, not to the image's owners.
//!
//! `RBUILD_COPY_FROM_UNPACK_ALL=1` makes every view a full unpack, as before views existed:
//! the tests build both ways and compare image digests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::image::{Descriptor, Digest};
use crate::layer::{
    ApplyOptions, OwnerTable, apply_recording_owners, apply_skeleton_recording_owners,
    open_decompressed,
};

use super::tar_select::{Finds, Index, SelectingReader, Subtrees, normalize, within};
use super::{Shared, SolveError};

/// What applying a layer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Files with their content.
    Content,
    /// A skeleton: see [`crate::layer::apply_skeleton`].
    Skeleton,
}

/// Set to `1`: views are full unpacks (for comparing against them).
const UNPACK_ALL_ENV: &str = "RBUILD_COPY_FROM_UNPACK_ALL";
/// How many prefixes a view may grow to before it becomes a full unpack instead.
const MAX_PREFIXES: usize = 64;
/// How many times a view is rebuilt with more prefixes before it becomes a full unpack.
const MAX_ROUNDS: usize = 4;

/// A subtree a COPY may read: its root-relative path (`""`: everything) and whether paths
/// inside it are resolved through symlinks (a wildcard matches below it), not only walked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReadPrefix {
    path: String,
    follow_inside: bool,
}

/// The subtrees `sources` (COPY sources as written, relative to the source root) can read.
pub(crate) fn read_prefixes(sources: &[String]) -> BTreeSet<ReadPrefix> {
    sources
        .iter()
        .map(|s| {
            let cleaned = String::from_utf8_lossy(&normalize(s.as_bytes())).into_owned();
            let mut literal = Vec::new();
            let mut wildcard = false;
            for comp in cleaned.split('/').filter(|c| !c.is_empty()) {
                // `\` escapes count as a wildcard: the escaped name is not what is written.
                if comp.contains(['*', '?', '[', '\\']) {
                    wildcard = true;
                    break;
                }
                literal.push(comp);
            }
            ReadPrefix {
                path: literal.join("/"),
                follow_inside: wildcard,
            }
        })
        .collect()
}

/// Grows `prefixes` until every symlink that resolving them may follow leads into a prefix;
/// returns false when that takes more than [`MAX_PREFIXES`].
fn close_over_symlinks(
    prefixes: &mut BTreeSet<ReadPrefix>,
    symlinks: &[(Vec<u8>, Vec<u8>)],
) -> bool {
    loop {
        let mut added = Vec::new();
        for p in prefixes.iter() {
            let pb = p.path.as_bytes();
            for (link, target) in symlinks {
                let new = if within(pb, link) && !link.is_empty() {
                    // An ancestor of the prefix, or the prefix itself: followed on the way.
                    let rest = &pb[link.len()..];
                    let mut t = resolve_target(link, target);
                    t.extend_from_slice(rest);
                    ReadPrefix {
                        path: String::from_utf8_lossy(&normalize(&t)).into_owned(),
                        follow_inside: p.follow_inside,
                    }
                } else if p.follow_inside && within(link, pb) {
                    ReadPrefix {
                        path: String::from_utf8_lossy(&resolve_target(link, target)).into_owned(),
                        follow_inside: true,
                    }
                } else {
                    continue;
                };
                let known = prefixes.iter().any(|q| {
                    within(new.path.as_bytes(), q.path.as_bytes())
                        && (q.follow_inside || !new.follow_inside)
                });
                if !known {
                    added.push(new);
                }
            }
        }
        if added.is_empty() {
            return true;
        }
        prefixes.extend(added);
        if prefixes.len() > MAX_PREFIXES {
            return false;
        }
    }
}

/// Where symlink `link` (normalized) with target `target` leads, normalized, inside the root.
fn resolve_target(link: &[u8], target: &[u8]) -> Vec<u8> {
    if target.starts_with(b"/") {
        return normalize(target);
    }
    let parent = match link.iter().rposition(|&b| b == b'/') {
        Some(i) => &link[..i],
        None => &[][..],
    };
    let mut joined = parent.to_vec();
    joined.push(b'/');
    joined.extend_from_slice(target);
    normalize(&joined)
}

/// Materialized roots of one build, one slot per (root, prefix set): a second COPY of the
/// same paths reuses the first one's view, and different views build in parallel.
#[derive(Default)]
pub(crate) struct Views {
    slots: Mutex<std::collections::BTreeMap<String, Arc<Mutex<Option<PathBuf>>>>>,
    count: std::sync::atomic::AtomicUsize,
    /// The image's owners of each view's paths, by view directory.
    owners: Mutex<std::collections::BTreeMap<PathBuf, Arc<OwnerTable>>>,
}

impl Views {
    fn slot(&self, key: &str) -> Arc<Mutex<Option<PathBuf>>> {
        let mut slots = self.slots.lock().expect("views lock");
        slots.entry(key.to_string()).or_default().clone()
    }

    /// The owners the image gives the paths of view `dir` (`None`: `dir` is not a view).
    pub(crate) fn owners_of(&self, dir: &Path) -> Option<Arc<OwnerTable>> {
        self.owners.lock().expect("views lock").get(dir).cloned()
    }
}

impl Shared<'_> {
    /// The root of `layers` (named `root` in keys and directory names) as far as a COPY of
    /// `sources` reads it; the whole root when a source is `/` or the view would not stay small.
    pub(crate) fn view_of(
        &self,
        root: &str,
        layers: &[Descriptor],
        sources: Option<&[String]>,
    ) -> Result<PathBuf, SolveError> {
        let mut prefixes = sources.map(read_prefixes).unwrap_or_default();
        let full_key = format!("{root} (all)");
        let full = sources.is_none()
            || prefixes.iter().any(|p| p.path.is_empty())
            || std::env::var_os(UNPACK_ALL_ENV).is_some_and(|v| v == "1");
        if !full
            && let Some(done) = self
                .views
                .slot(&full_key)
                .lock()
                .expect("view lock")
                .clone()
        {
            return Ok(done);
        }
        let key = if full {
            full_key
        } else {
            let listed: Vec<&str> = prefixes.iter().map(|p| p.path.as_str()).collect();
            format!("{root} {listed:?}")
        };
        let slot = self.views.slot(&key);
        let mut slot = slot.lock().expect("view lock");
        if let Some(done) = slot.clone() {
            return Ok(done);
        }
        let dir = if full {
            self.unpack_view(layers, None)?
        } else {
            self.grow_view(layers, &mut prefixes)?
        };
        *slot = Some(dir.clone());
        Ok(dir)
    }

    /// Applies `layers` filtered to `prefixes`, again with more prefixes while the view is
    /// missing something its paths lead to; a full unpack when that does not settle.
    fn grow_view(
        &self,
        layers: &[Descriptor],
        prefixes: &mut BTreeSet<ReadPrefix>,
    ) -> Result<PathBuf, SolveError> {
        for _ in 0..MAX_ROUNDS {
            let subtrees = Subtrees::new(prefixes.iter().map(|p| p.path.as_str()));
            let mut finds = Finds::default();
            let dir = match self.unpack_view(layers, Some((&subtrees, &mut finds))) {
                Ok(dir) => dir,
                Err(e) => {
                    tracing::debug!("selective unpack failed ({e}); unpacking everything");
                    return self.unpack_view(layers, None);
                }
            };
            let settled = close_over_symlinks(prefixes, &finds.symlinks);
            for t in finds.link_targets {
                prefixes.insert(ReadPrefix {
                    path: String::from_utf8_lossy(&t).into_owned(),
                    follow_inside: false,
                });
            }
            if !settled || prefixes.len() > MAX_PREFIXES {
                break;
            }
            if prefixes.iter().all(|p| subtrees.covers(p.path.as_bytes())) {
                tracing::debug!(?prefixes, "selective view of {} layers", layers.len());
                return Ok(dir);
            }
            // Built again from scratch: layering the new subtrees onto this view would let
            // their whiteouts act on what is already there out of order.
            let _ = std::fs::remove_dir_all(&dir);
        }
        self.unpack_view(layers, None)
    }

    /// A new scratch directory with `layers` applied, filtered through `filter` if given.
    fn unpack_view(
        &self,
        layers: &[Descriptor],
        mut filter: Option<(&Subtrees, &mut Finds)>,
    ) -> Result<PathBuf, SolveError> {
        let n = self
            .views
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.scratch_dir(&format!("view-{n}"))?;
        let mut owners = OwnerTable::new();
        for l in layers {
            match &mut filter {
                None => self.apply_whole(&l.digest, &dir, Fill::Content, &mut owners)?,
                Some((subtrees, finds)) => self.apply_selected(
                    &l.digest,
                    &dir,
                    subtrees,
                    finds,
                    Fill::Content,
                    &mut owners,
                )?,
            }
        }
        (self.views.owners.lock().expect("views lock")).insert(dir.clone(), Arc::new(owners));
        Ok(dir)
    }

    /// Applies layer blob `layer` onto `dir`, only the entries `subtrees` wants. Read from the
    /// layer's index when that holds all it needs (for a skeleton, or when no file with content
    /// is wanted), else from the blob, writing the index on the way if there is none yet.
    /// `owners` (describing `dir`) gets the image's owners of what is applied.
    pub(crate) fn apply_selected(
        &self,
        layer: &Digest,
        dir: &Path,
        subtrees: &Subtrees,
        finds: &mut Finds,
        fill: Fill,
        owners: &mut OwnerTable,
    ) -> Result<(), SolveError> {
        let layer_err = |source| SolveError::Layer { line: 0, source };
        let opts = ApplyOptions::default();
        let index = self.layer_indexes.read(layer);
        if let Some(index) = &index {
            let enough = fill == Fill::Skeleton || {
                let mut probe = Finds::default();
                let mut r = SelectingReader::new(&index[..], subtrees, &mut probe);
                std::io::copy(&mut r, &mut std::io::sink()).is_ok() && !probe.files
            };
            if enough {
                let r = SelectingReader::new(&index[..], subtrees, finds);
                match fill {
                    Fill::Skeleton => apply_skeleton_recording_owners(r, dir, &opts, owners),
                    Fill::Content => apply_recording_owners(r, dir, &opts, owners),
                }
                .map_err(layer_err)?;
                return Ok(());
            }
        }
        let blob = (self.store.open_blob(layer)).map_err(|source| SolveError::Store { source })?;
        let reader = open_decompressed(blob).map_err(layer_err)?;
        let mut written = Index::default();
        let mut r = SelectingReader::new(reader, subtrees, finds);
        if index.is_none() {
            r = r.with_index(&mut written);
        }
        match fill {
            Fill::Skeleton => apply_skeleton_recording_owners(r, dir, &opts, owners),
            Fill::Content => apply_recording_owners(r, dir, &opts, owners),
        }
        .map_err(layer_err)?;
        if index.is_none() && written.complete && !written.tar.is_empty() {
            self.layer_indexes.write(layer, &written.tar);
        }
        Ok(())
    }

    /// Applies all of layer blob `layer` onto `dir`, through its index where possible: a
    /// skeleton needs no file content. `owners` (describing `dir`) gets the image's owners.
    pub(crate) fn apply_whole(
        &self,
        layer: &Digest,
        dir: &Path,
        fill: Fill,
        owners: &mut OwnerTable,
    ) -> Result<(), SolveError> {
        let everything = Subtrees::new([""]);
        let selected =
            self.apply_selected(layer, dir, &everything, &mut Finds::default(), fill, owners);
        match selected {
            Err(SolveError::Layer { source, .. }) => {
                // Something the filter cannot read (GNU sparse members): the layer as it is.
                // Applying it again over the partial result gives what one application gives.
                tracing::debug!("layer {layer} through its filter: {source}; applying it directly");
                let layer_err = |source| SolveError::Layer { line: 0, source };
                let blob =
                    (self.store.open_blob(layer)).map_err(|source| SolveError::Store { source })?;
                let opts = ApplyOptions::default();
                match fill {
                    Fill::Skeleton => apply_skeleton_recording_owners(blob, dir, &opts, owners),
                    Fill::Content => apply_recording_owners(blob, dir, &opts, owners),
                }
                .map_err(layer_err)?;
                Ok(())
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(path: &str, follow_inside: bool) -> ReadPrefix {
        ReadPrefix {
            path: path.into(),
            follow_inside,
        }
    }

    #[test]
    fn prefixes_stop_at_the_first_wildcard() {
        let got = read_prefixes(&[
            "/src/hello".into(),
            "usr/lib/*.so".into(),
            "a/./b/../c/".into(),
            "x/\\*y".into(),
        ]);
        let want: BTreeSet<_> = [
            prefix("a/c", false),
            prefix("src/hello", false),
            prefix("usr/lib", true),
            prefix("x", true),
        ]
        .into();
        assert_eq!(got, want);
        assert!(read_prefixes(&["/".into()]).contains(&prefix("", false)));
        assert!(read_prefixes(&["*".into()]).contains(&prefix("", true)));
    }

    #[test]
    fn symlinks_on_the_way_add_their_targets() {
        let links = vec![
            (b"lib".to_vec(), b"usr/lib".to_vec()),
            (b"usr/lib/x/libz.so".to_vec(), b"/opt/z/libz.so.1".to_vec()),
            (b"usr/lib/x/libq.so".to_vec(), b"libq.so.1".to_vec()),
            (b"etc/alt".to_vec(), b"../srv".to_vec()),
        ];
        let mut p: BTreeSet<_> = [prefix("lib/x/libz.so", false)].into();
        assert!(close_over_symlinks(&mut p, &links));
        let want: BTreeSet<_> = [
            prefix("lib/x/libz.so", false),
            prefix("usr/lib/x/libz.so", false),
            prefix("opt/z/libz.so.1", false),
        ]
        .into();
        assert_eq!(p, want);

        // A wildcard below usr/lib may match any link there; a link inside the subtree it
        // already covers adds nothing, one leading out does.
        let mut p: BTreeSet<_> = [prefix("usr/lib", true)].into();
        assert!(close_over_symlinks(&mut p, &links));
        let want: BTreeSet<_> = [prefix("usr/lib", true), prefix("opt/z/libz.so.1", true)].into();
        assert_eq!(p, want);

        // Plain directories are walked, not resolved: links inside lead nowhere new.
        let mut p: BTreeSet<_> = [prefix("usr/lib", false)].into();
        assert!(close_over_symlinks(&mut p, &links));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn symlink_loops_give_up() {
        let links = vec![(b"a".to_vec(), b"a/b".to_vec())];
        let mut p: BTreeSet<_> = [prefix("a/c", false)].into();
        assert!(!close_over_symlinks(&mut p, &links));
    }
}
