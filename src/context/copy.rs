//! COPY/ADD resolution with BuildKit's semantics: destination relative to WORKDIR, a trailing
//! `/` (or several sources) making it a directory, a directory source copying its contents,
//! `--parents`, `--exclude`, `--chown`/`--chmod`, created parent directories, symlinks copied as
//! links, and ADD's archive extraction and URLs. The result is an ordered [`LayerEntry`] list.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::dockerignore::{IgnoreMatcher, clean_path};
use super::entry::{EntryKind, EntrySet, LayerEntry, Mtime};
use super::owner::{Chown, ChownSpec};
use super::select::{SelectOptions, inode_key, join_rel, resolve_in_root, select_sources};
use super::{Chmod, ContextError};
use super::{archive, fetch};

/// One COPY or ADD instruction, with variables already expanded.
#[derive(Debug, Clone, Default)]
pub struct CopyRequest {
    /// True for ADD (archives are unpacked, URLs fetched).
    pub is_add: bool,
    /// Where sources are read: the context dir, or a stage/image root for `--from`.
    pub source_root: PathBuf,
    /// Whether `source_root` is the build context (strict symlinks, `.dockerignore` applies).
    pub from_context: bool,
    /// `.dockerignore` rules of the context.
    pub ignore: Option<IgnoreMatcher>,
    /// Sources as written.
    pub sources: Vec<String>,
    /// Destination as written.
    pub dest: String,
    /// The stage's WORKDIR (absolute), for a relative destination.
    pub workdir: String,
    /// The destination image's root as it is before this instruction, if it has one on disk:
    /// used for `--chown` names, existing directories and symlinked destination directories.
    pub dest_root: Option<PathBuf>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// ADD `--unpack`: `None` unpacks local archives only.
    pub unpack: Option<bool>,
    /// ADD `--checksum`.
    pub checksum: Option<String>,
    /// The image's owners of the paths of `source_root` when it is a stage or image root
    /// unpacked without them (rootless): copied files keep these, not the on-disk owners.
    /// A path the table lacks is 0:0. Never used for a build context.
    pub source_owners: Option<std::sync::Arc<crate::layer::OwnerTable>>,
    /// The image's owners of the paths of `dest_root` (existing parent directories the
    /// layer lists keep these); `None`: the owners on disk are the image's.
    pub dest_owners: Option<std::sync::Arc<crate::layer::OwnerTable>>,
}

impl CopyRequest {
    /// The sources read from `source_root` (URLs are fetched instead), in written order.
    pub(crate) fn local_sources(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter(|s| !is_url(s))
            .cloned()
            .collect()
    }

    /// How [`Self::local_sources`] are selected. The copy and its cache-key digest
    /// ([`super::selection_digest`]) both use this, so they always see the same files.
    pub(crate) fn select_options(&self) -> SelectOptions<'_> {
        SelectOptions {
            // `.dockerignore` shapes the context only; stage and image roots are taken whole.
            ignore: if self.from_context {
                self.ignore.as_ref()
            } else {
                None
            },
            excludes: self.excludes.clone(),
            scoped_symlinks: !self.from_context,
        }
    }
}

/// What a COPY/ADD writes, in order, plus the staging directory holding fetched or extracted
/// content (kept alive as long as the plan).
#[derive(Debug)]
pub struct CopyPlan {
    /// Entries in the order they must be written (parents before children).
    pub entries: Vec<LayerEntry>,
    _staging: Option<TempDir>,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// BuildKit's `isGitURL` shapes: `git://`, `git@host:`, `github.com/...`, or an http(s) URL
/// whose path ends in `.git` (optionally followed by a `#ref:subdir` fragment).
fn is_git(s: &str) -> bool {
    if s.starts_with("git@") || s.starts_with("git://") || s.starts_with("github.com/") {
        return true;
    }
    let path = s.split('#').next().unwrap_or(s);
    is_url(s) && path.trim_end_matches('/').ends_with(".git")
}

/// The destination made absolute against WORKDIR, resolved through symlinked directories of the
/// destination root; returns (root-relative path, whether it names a directory).
fn resolve_dest(req: &CopyRequest) -> Result<(String, bool), ContextError> {
    let d = &req.dest;
    let is_dir = d.is_empty() || d == "." || d.ends_with('/') || d.ends_with("/.");
    let abs = if d.starts_with('/') {
        d.clone()
    } else {
        format!(
            "{}/{}",
            if req.workdir.is_empty() {
                "/"
            } else {
                &req.workdir
            },
            d
        )
    };
    let cleaned = clean_path(&abs).trim_start_matches('/').to_string();
    let Some(root) = req.dest_root.as_deref() else {
        return Ok((cleaned, is_dir));
    };
    // Directories on the way may be symlinks in the image (merged /usr: /bin -> usr/bin).
    let (parent, last) = match cleaned.rsplit_once('/') {
        Some((p, l)) => (p.to_string(), l.to_string()),
        None => (String::new(), cleaned.clone()),
    };
    let parent = resolve_in_root(root, &parent, true, true, &req.dest)?.unwrap_or(parent);
    let joined = join_rel(&parent, &last);
    let full = resolve_in_root(root, &joined, true, true, &req.dest)?;
    match full {
        Some(p) if std::fs::symlink_metadata(root.join(&p)).is_ok_and(|m| m.is_dir()) => {
            Ok((p, true))
        }
        _ => Ok((joined, is_dir)),
    }
}

/// Resolves one COPY/ADD into the entries it writes.
pub fn plan_copy(req: &CopyRequest) -> Result<CopyPlan, ContextError> {
    if req.sources.is_empty() {
        return Err(ContextError::Destination(
            "COPY/ADD needs at least one source".into(),
        ));
    }
    let what = if req.is_add { "ADD" } else { "COPY" };
    if let Some(c) = &req.checksum {
        if !req.is_add {
            return Err(ContextError::Destination(
                "--checksum is only valid for ADD".into(),
            ));
        }
        if req.sources.len() != 1 {
            return Err(ContextError::Destination(
                "checksum can't be specified for multiple sources".into(),
            ));
        }
        if !is_url(&req.sources[0]) {
            return Err(ContextError::Destination(format!(
                "checksum can't be specified for non-HTTP(S) sources (--checksum={c})"
            )));
        }
    }
    for s in &req.sources {
        if is_git(s) {
            return Err(ContextError::Unsupported(format!(
                "{what} from a Git repository ({s})"
            )));
        }
        if is_url(s) && !req.is_add {
            return Err(ContextError::Destination(format!(
                "source can't be a URL for COPY: {s}"
            )));
        }
    }
    let chown = match &req.chown {
        Some(spec) => Some(ChownSpec::parse(spec)?.resolve(req.dest_root.as_deref(), &req.dest)?),
        None => None,
    };
    let chmod = req.chmod.as_deref().map(Chmod::parse).transpose()?;
    let owner = chown.unwrap_or(Chown { uid: 0, gid: 0 });

    let local = req.local_sources();
    let selected = select_sources(&req.source_root, &local, &req.select_options())?;
    let tops = selected.iter().filter(|s| s.rel.is_empty()).count()
        + req.sources.iter().filter(|s| is_url(s)).count();
    let (dest, dest_is_dir) = resolve_dest(req)?;
    if tops > 1 && !dest_is_dir {
        // BuildKit copies each source onto the same path, the last one winning
        // (moby/buildkit#1853, #4550); the classic builder refused this.
        tracing::warn!(
            "{what} with {tops} sources to {:?}, which does not end with '/': each source \
             overwrites the previous one, as BuildKit does",
            req.dest
        );
    }

    let mut set =
        EntrySet::new(req.dest_root.as_deref(), owner).with_dest_owners(req.dest_owners.as_deref());
    let mut staging: Option<TempDir> = None;
    // Hard links are kept within one source's copy only: BuildKit copies each source in its own
    // action, so `COPY a b /d/` with a and b linked writes two files.
    let mut links: HashMap<(usize, u64, u64), String> = HashMap::new();
    // Where each top-level match lands: for a directory, the dir its contents go to.
    let mut top_target = String::new();
    for sel in &selected {
        let meta_mode = sel.meta.mode() & 0o7777;
        let (uid, gid) = match chown {
            Some(c) => (c.uid, c.gid),
            None if req.from_context => (0, 0),
            None => match &req.source_owners {
                Some(t) => (t.get_host(&req.source_root, &sel.host)).unwrap_or((0, 0)),
                None => (sel.meta.uid(), sel.meta.gid()),
            },
        };
        let is_dir = sel.meta.is_dir();
        let target = if sel.rel.is_empty() {
            let written = &local[sel.source_index];
            let base = sel.matched.rsplit('/').next().unwrap_or("").to_string();
            let within = if req.parents {
                parents_path(written, &sel.matched)
            } else if is_dir {
                String::new()
            } else {
                base
            };
            top_target = if is_dir || dest_is_dir || set.existing_dir(&dest) || req.parents {
                join_rel(&dest, &within)
            } else {
                dest.clone()
            };
            top_target.clone()
        } else {
            join_rel(&top_target, &sel.rel)
        };
        if sel.rel.is_empty()
            && !is_dir
            && req.is_add
            && req.unpack != Some(false)
            && let Some(format) = archive::detect_archive(&sel.host)?
        {
            let stage = staging_dir(&mut staging)?;
            // Docker extracts into the destination as a directory, slash or not.
            let origin = &local[sel.source_index];
            archive::extract_archive(&sel.host, format, &dest, stage, &mut set, origin)?;
            continue;
        }
        let mtime = Some(Mtime::of(&sel.meta));
        let ft = sel.meta.file_type();
        let entry = if is_dir {
            if sel.rel.is_empty() {
                // The directory a source's contents go to is created like a parent (0755, the
                // --chown owner, build time) or kept as it is, never given the source dir's
                // metadata: what BuildKit produces.
                if !target.is_empty() {
                    set.ensure_parents(&format!("{target}/x"))?;
                }
                continue;
            }
            LayerEntry {
                path: target,
                kind: EntryKind::Dir,
                mode: chmod
                    .as_ref()
                    .map_or(meta_mode, |c| c.apply(meta_mode, true)),
                uid,
                gid,
                // BuildKit's copied directories carry the build time, not the source's mtime.
                mtime: None,
                existing_parent: false,
                // ...but keep the source directory's xattrs, as continuity's copy does.
                xattrs_from: Some(sel.host.clone()),
            }
        } else if ft.is_symlink() {
            let t = match &sel.link_target {
                Some(t) => t.clone(),
                None => std::fs::read_link(&sel.host)
                    .map_err(|e| ContextError::io(&sel.host, e))?
                    .to_string_lossy()
                    .into_owned(),
            };
            LayerEntry {
                path: target,
                kind: EntryKind::Symlink { target: t },
                mode: 0o777,
                uid,
                gid,
                mtime,
                existing_parent: false,
                xattrs_from: None,
            }
        } else if ft.is_file() {
            let mode = chmod
                .as_ref()
                .map_or(meta_mode, |c| c.apply(meta_mode, false));
            let (dev, ino) = inode_key(&sel.meta);
            let key = (sel.source_index, dev, ino);
            let (kind, xattrs_from) = match links.get(&key) {
                // The link's xattrs are the inode's, carried by the first entry.
                Some(first) if sel.meta.nlink() > 1 => (
                    EntryKind::Hardlink {
                        target: first.clone(),
                    },
                    None,
                ),
                _ => {
                    if sel.meta.nlink() > 1 {
                        links.insert(key, target.clone());
                    }
                    let kind = EntryKind::File {
                        source: sel.host.clone(),
                        size: sel.meta.len(),
                    };
                    (kind, Some(sel.host.clone()))
                }
            };
            LayerEntry {
                path: target,
                kind,
                mode,
                uid,
                gid,
                mtime,
                existing_parent: false,
                xattrs_from,
            }
        } else {
            tracing::warn!(path = %sel.host.display(), "skipping special file in {what} source");
            continue;
        };
        set.put(entry)?;
    }

    for url in req.sources.iter().filter(|s| is_url(s)) {
        let stage = staging_dir(&mut staging)?;
        let fetched = fetch::fetch_url(url, req.checksum.as_deref(), stage)?;
        if req.unpack == Some(true)
            && let Some(format) = archive::detect_archive(&fetched.path)?
        {
            archive::extract_archive(&fetched.path, format, &dest, stage, &mut set, url)?;
            continue;
        }
        let target = if dest_is_dir || set.existing_dir(&dest) {
            join_rel(&dest, &fetched.file_name)
        } else {
            dest.clone()
        };
        let mode = chmod.as_ref().map_or(0o600, |c| c.apply(0o600, false));
        set.put(LayerEntry {
            path: target,
            kind: EntryKind::File {
                source: fetched.path.clone(),
                size: fetched.size,
            },
            mode,
            uid: owner.uid,
            gid: owner.gid,
            mtime: fetched.mtime,
            existing_parent: false,
            xattrs_from: Some(fetched.path.clone()),
        })?;
    }
    Ok(CopyPlan {
        entries: set.entries,
        _staging: staging,
    })
}

fn staging_dir(staging: &mut Option<TempDir>) -> Result<&Path, ContextError> {
    if staging.is_none() {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-add-")
            .tempdir()
            .map_err(|e| ContextError::io(std::env::temp_dir(), e))?;
        *staging = Some(dir);
    }
    Ok(staging.as_ref().map(TempDir::path).expect("set above"))
}

/// `--parents`: the matched path relative to the pivot (`a/./b/c` keeps `b/c`), else relative to
/// the source root.
fn parents_path(written: &str, matched: &str) -> String {
    let w = written.trim_start_matches("./");
    if let Some((pivot, _)) = w.split_once("/./") {
        let pivot = clean_path(&format!("/{pivot}"));
        let pivot = pivot.trim_start_matches('/');
        if let Some(rest) = matched.strip_prefix(pivot) {
            return rest.trim_start_matches('/').to_string();
        }
    }
    matched.to_string()
}

impl CopyPlan {
    /// Whether the instruction writes nothing (e.g. only empty wildcards).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_pivot() {
        assert_eq!(parents_path("x/a.txt", "x/a.txt"), "x/a.txt");
        assert_eq!(parents_path("./x/./y/a.txt", "x/y/a.txt"), "y/a.txt");
        assert_eq!(parents_path("x/./*.txt", "x/b.txt"), "b.txt");
    }

    #[test]
    fn destination_rules() {
        let mut req = CopyRequest {
            dest: "app".into(),
            workdir: "/srv".into(),
            ..Default::default()
        };
        assert_eq!(resolve_dest(&req).unwrap(), ("srv/app".into(), false));
        req.dest = "app/".into();
        assert_eq!(resolve_dest(&req).unwrap(), ("srv/app".into(), true));
        req.dest = ".".into();
        assert_eq!(resolve_dest(&req).unwrap(), ("srv".into(), true));
        req.dest = "/abs/../x".into();
        assert_eq!(resolve_dest(&req).unwrap(), ("x".into(), false));
        req.workdir = String::new();
        req.dest = "rel".into();
        assert_eq!(resolve_dest(&req).unwrap(), ("rel".into(), false));
    }

    #[test]
    fn destination_through_image_symlinks() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        let req = CopyRequest {
            dest: "/bin/tool".into(),
            dest_root: Some(root.path().to_path_buf()),
            ..Default::default()
        };
        assert_eq!(resolve_dest(&req).unwrap(), ("usr/bin/tool".into(), false));
        let req = CopyRequest {
            dest: "/bin".into(),
            ..req
        };
        assert_eq!(resolve_dest(&req).unwrap(), ("usr/bin".into(), true));
    }
}
