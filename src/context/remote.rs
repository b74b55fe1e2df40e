//! `--build-context NAME=https://…/x.tar[.gz]`: a tar archive (plain, gzip, bzip2, xz or
//! zstd) downloaded with ADD's fetcher and unpacked into a local directory, which the build then
//! uses like `--build-context NAME=DIR`; any other download becomes a directory holding that
//! one file. Unpacking goes through ADD's archive reader, and no
//! entry is ever written below a symlink or outside the directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ContextError;
use super::archive::{detect_archive, extract_archive};
use super::entry::{EntryKind, EntrySet, LayerEntry, Mtime};
use super::fetch::fetch_url;
use super::owner::Chown;

/// Whether a `--build-context` value is an http(s) URL this module fetches. Git URLs
/// (`*.git`, `git://`, `git@`) are not: they need a Git checkout.
pub fn is_remote_tarball(value: &str) -> bool {
    (value.starts_with("https://") || value.starts_with("http://")) && !is_git_url(value)
}

/// Whether a `--build-context` value names a Git repository.
pub fn is_git_url(value: &str) -> bool {
    let path = value.split(['?', '#']).next().unwrap_or(value);
    value.starts_with("git://")
        || value.starts_with("git@")
        || path.trim_end_matches('/').ends_with(".git")
}

/// Downloads `url` and unpacks it (an archive) or places it (any other file) into
/// `work/context`, returning that directory. `work` must be an empty directory that outlives the build (the download is
/// staged in it too, so unpacked files are moved into place rather than copied).
pub fn fetch_remote_context(url: &str, work: &Path) -> Result<PathBuf, ContextError> {
    let stage = work.join("download");
    let dir = work.join("context");
    for d in [&stage, &dir] {
        std::fs::create_dir(d).map_err(|e| ContextError::io(d, e))?;
    }
    let fetched = fetch_url(url, None, &stage)?;
    match detect_archive(&fetched.path)? {
        Some(format) => {
            let mut set = EntrySet::new(None, Chown { uid: 0, gid: 0 });
            extract_archive(&fetched.path, format, "", &stage, &mut set, url)?;
            materialize(&set.entries, &dir, url)?;
        }
        None => {
            // Anything else is the single file BuildKit's HTTP source makes of a URL: named
            // after the URL's last path segment, mode 0600, the server's Last-Modified time.
            let file = dir.join(&fetched.file_name);
            std::fs::rename(&fetched.path, &file).map_err(|e| ContextError::io(&file, e))?;
            set_meta(&file, 0o600, fetched.mtime)?;
        }
    }
    let _ = std::fs::remove_dir_all(&stage);
    Ok(dir)
}

/// Writes unpacked entries into `dir`. Every entry's ancestors must be directories of the
/// archive itself (never a symlink it also contains), so no write can follow a link out.
fn materialize(entries: &[LayerEntry], dir: &Path, url: &str) -> Result<(), ContextError> {
    let bad = |reason: String| ContextError::Archive {
        path: url.to_string(),
        reason,
    };
    let kinds: HashMap<&str, &EntryKind> =
        entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
    let ancestors_are_dirs = |path: &str| {
        let mut prefix = path;
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if !matches!(kinds.get(parent), Some(EntryKind::Dir)) {
                return false;
            }
            prefix = parent;
        }
        true
    };
    for e in entries {
        if !ancestors_are_dirs(&e.path) {
            return Err(bad(format!(
                "entry {:?} lies below a non-directory",
                e.path
            )));
        }
    }
    // Directories and files first, then hard links to those files, then symlinks, so that
    // nothing is created through a link; directory modes last so read-only ones can be filled.
    for e in entries {
        let target = dir.join(&e.path);
        match &e.kind {
            EntryKind::Dir => match std::fs::create_dir(&target) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(ContextError::io(&target, err)),
            },
            EntryKind::File { source, .. } => {
                std::fs::rename(source, &target).map_err(|err| ContextError::io(&target, err))?;
                set_meta(&target, e.mode, e.mtime)?;
            }
            _ => {}
        }
    }
    for e in entries {
        if let EntryKind::Hardlink { target: to } = &e.kind {
            if !matches!(kinds.get(to.as_str()), Some(EntryKind::File { .. })) {
                return Err(bad(format!(
                    "hard link {:?} points at {to:?}, which is not a regular file in the archive",
                    e.path
                )));
            }
            let link = dir.join(&e.path);
            std::fs::hard_link(dir.join(to), &link).map_err(|err| ContextError::io(&link, err))?;
        }
    }
    for e in entries {
        if let EntryKind::Symlink { target: to } = &e.kind {
            let link = dir.join(&e.path);
            std::os::unix::fs::symlink(to, &link).map_err(|err| ContextError::io(&link, err))?;
            if let Some(m) = e.mtime {
                let t = filetime::FileTime::from_unix_time(m.secs, m.nanos);
                filetime::set_symlink_file_times(&link, t, t)
                    .map_err(|err| ContextError::io(&link, err))?;
            }
        }
    }
    for e in entries.iter().rev().filter(|e| e.is_dir()) {
        set_meta(&dir.join(&e.path), e.mode, e.mtime)?;
    }
    Ok(())
}

/// Applies an entry's permission bits and mtime (owners stay the current user's: COPY from a
/// local context ignores them anyway).
fn set_meta(path: &Path, mode: u32, mtime: Option<Mtime>) -> Result<(), ContextError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(m) = mtime {
        let t = filetime::FileTime::from_unix_time(m.secs, m.nanos);
        filetime::set_file_times(path, t, t).map_err(|err| ContextError::io(path, err))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|err| ContextError::io(path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_are_told_apart_from_tarballs() {
        assert!(is_remote_tarball("https://h/x.tar.gz"));
        assert!(is_remote_tarball("http://127.0.0.1:8080/ctx.tar"));
        assert!(!is_remote_tarball("https://github.com/a/b.git"));
        assert!(!is_remote_tarball("https://github.com/a/b.git#main"));
        assert!(!is_remote_tarball("git://h/r"));
        assert!(!is_remote_tarball("/some/dir"));
        assert!(is_git_url("git@github.com:a/b"));
    }

    fn entry(path: &str, kind: EntryKind) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: None,
            existing_parent: false,
            xattrs_from: None,
        }
    }

    #[test]
    fn entries_below_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("f");
        std::fs::write(&src, "x").unwrap();
        let entries = [
            entry(
                "l",
                EntryKind::Symlink {
                    target: "/etc".into(),
                },
            ),
            entry(
                "l/passwd",
                EntryKind::File {
                    source: src,
                    size: 1,
                },
            ),
        ];
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let err = materialize(&entries, &out, "http://x/a.tar").unwrap_err();
        assert!(err.to_string().contains("below a non-directory"), "{err}");
        assert!(std::fs::read_dir(&out).unwrap().next().is_none());
    }
}
