//! Copy-based snapshots, used when overlayfs cannot be mounted in a user namespace: the layer
//! chain is copied into a plain directory (applying overlay-format whiteouts and opaque dirs),
//! and the diff compares that directory with a pristine copy by metadata, as docker's naive
//! differ does. Runs inside the user namespace.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use walkdir::WalkDir;

use crate::exec::secure_join;
use crate::layer::{EntryOptions, LayerWriter};

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    matches!(xattr::get(dir, "user.overlay.opaque"), Ok(Some(v)) if v == b"y")
}

fn remove_any(path: &Path) -> Result<(), String> {
    let result = match fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    result.map_err(|e| format!("removing {}: {e}", path.display()))
}

/// Copies the snapshot dirs `layers` (base first) on top of each other into `dest`.
pub(crate) fn materialize(layers: &[PathBuf], dest: &Path) -> Result<(), String> {
    for layer in layers {
        copy_layer(layer, dest)?;
    }
    Ok(())
}

/// Copies the directory `subpath` of the root that `layers` (base first) stack up into
/// `dest`: from the top-most layer that deletes or replaces it (whiteout, opaque dir, or
/// not a directory) upwards. Nothing is copied when no layer has it as a directory.
pub(crate) fn materialize_sub(
    layers: &[PathBuf],
    subpath: &str,
    dest: &Path,
) -> Result<(), String> {
    let rel = Path::new(subpath.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("source {subpath:?} must stay inside its root"));
    }
    let mut start = 0;
    for (i, layer) in layers.iter().enumerate().rev() {
        let here = layer.join(rel);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => {
                if is_opaque(&here) {
                    start = i;
                    break;
                }
            }
            Ok(_) => {
                start = i + 1;
                break;
            }
            Err(_) => {}
        }
    }
    for layer in &layers[start..] {
        let src = layer.join(rel);
        if fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
            copy_layer(&src, dest)?;
        }
    }
    Ok(())
}

fn copy_layer(src: &Path, dest: &Path) -> Result<(), String> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    for entry in WalkDir::new(src).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("walking {}: {e}", src.display()))?;
        let rel = entry.path().strip_prefix(src).expect("under the walk root");
        let parent = secure_join(
            dest,
            &format!("/{}", rel.parent().unwrap_or(Path::new("")).display()),
        )?;
        let target = parent.join(rel.file_name().expect("non-root entry"));
        let meta = entry
            .metadata()
            .map_err(|e| format!("lstat {}: {e}", rel.display()))?;
        let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", rel.display());
        if is_whiteout(&meta) {
            remove_any(&target)?;
            continue;
        }
        if meta.is_dir() {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {
                    if is_opaque(entry.path()) {
                        for child in fs::read_dir(&target).map_err(|e| err("listing", e))? {
                            remove_any(&child.map_err(|e| err("listing", e))?.path())?;
                        }
                    }
                }
                Ok(_) => {
                    remove_any(&target)?;
                    fs::create_dir(&target).map_err(|e| err("creating", e))?;
                }
                Err(_) => fs::create_dir(&target).map_err(|e| err("creating", e))?,
            }
            set_attrs(entry.path(), &target, &meta)?;
            dirs.push((target, meta));
            continue;
        }
        remove_any(&target)?;
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = links.get(&key)
        {
            fs::hard_link(first, &target).map_err(|e| err("linking", e))?;
            continue;
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            let to = fs::read_link(entry.path()).map_err(|e| err("reading link", e))?;
            symlink(&to, &target).map_err(|e| err("creating symlink", e))?;
        } else if ft.is_file() {
            fs::copy(entry.path(), &target).map_err(|e| err("copying", e))?;
        } else {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                continue; // sockets are never part of a layer
            };
            let mode = rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777);
            if let Err(e) = rustix::fs::mknodat(rustix::fs::CWD, &target, kind, mode, meta.rdev()) {
                tracing::warn!(path = %rel.display(), error = %e, "skipping special file");
                continue;
            }
        }
        set_attrs(entry.path(), &target, &meta)?;
        if meta.nlink() > 1 {
            links.insert(key, target);
        }
    }
    // Directory times last: creating their entries changed them.
    for (dir, meta) in dirs.iter().rev() {
        let _ = filetime::set_file_times(
            dir,
            FileTime::from_last_access_time(meta),
            FileTime::from_last_modification_time(meta),
        );
    }
    Ok(())
}

fn set_attrs(src: &Path, target: &Path, meta: &fs::Metadata) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", target.display());
    std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| err("chown", e))?;
    if !meta.file_type().is_symlink() {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(target, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| err("chmod", e))?;
        if let Ok(names) = xattr::list(src) {
            for name in names.filter(|n| !n.to_string_lossy().starts_with("user.overlay.")) {
                if let Ok(Some(v)) = xattr::get(src, &name) {
                    let _ = xattr::set(target, &name, &v);
                }
            }
        }
    }
    filetime::set_symlink_file_times(
        target,
        FileTime::from_last_access_time(meta),
        FileTime::from_last_modification_time(meta),
    )
    .map_err(|e| err("setting times of", e))
}

fn same(a: &fs::Metadata, b: &fs::Metadata, pa: &Path, pb: &Path) -> bool {
    let basic = a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.rdev() == b.rdev()
        && (a.is_dir()
            || (a.size() == b.size()
                && a.mtime() == b.mtime()
                && a.mtime_nsec() == b.mtime_nsec()));
    if !basic {
        return false;
    }
    if a.file_type().is_symlink() {
        return fs::read_link(pa).ok() == fs::read_link(pb).ok();
    }
    let xa: Vec<_> = xattr::list(pa).map(|l| l.collect()).unwrap_or_default();
    let xb: Vec<_> = xattr::list(pb).map(|l| l.collect()).unwrap_or_default();
    xa == xb
        && xa
            .iter()
            .all(|n| xattr::get(pa, n).ok() == xattr::get(pb, n).ok())
}

/// Appends the not yet written parent dirs of `rel` (containerd's change writer includes them).
fn parents<W: Write>(
    rel: &Path,
    rootfs: &Path,
    emitted: &mut HashSet<PathBuf>,
    writer: &mut LayerWriter<W>,
    options: &EntryOptions,
) -> Result<(), String> {
    let mut chain: Vec<&Path> = rel
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    chain.reverse();
    for dir in chain {
        if emitted.insert(dir.to_path_buf()) {
            writer
                .append_from_fs(dir, rootfs.join(dir), options)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Writes what differs between `rootfs` and its pristine copy `base` as a layer.
pub(crate) fn write_diff<W: Write>(
    base: &Path,
    rootfs: &Path,
    writer: &mut LayerWriter<W>,
    source_date_epoch: Option<i64>,
) -> Result<(), String> {
    let options = EntryOptions {
        source_date_epoch,
        ..EntryOptions::default()
    };
    let mut emitted = HashSet::new();
    let mut walk = WalkDir::new(base)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| format!("walking the base copy: {e}"))?;
        let rel = entry
            .path()
            .strip_prefix(base)
            .expect("under the walk root");
        let was_dir = entry.file_type().is_dir();
        match fs::symlink_metadata(rootfs.join(rel)) {
            Err(_) => {
                parents(rel, rootfs, &mut emitted, writer, &options)?;
                writer.append_whiteout(rel).map_err(|e| e.to_string())?;
                if was_dir {
                    walk.skip_current_dir();
                }
            }
            Ok(now) if was_dir && !now.is_dir() => walk.skip_current_dir(),
            Ok(_) => {}
        }
    }
    for entry in WalkDir::new(rootfs).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("walking the root: {e}"))?;
        let rel = entry
            .path()
            .strip_prefix(rootfs)
            .expect("under the walk root");
        let now = entry
            .metadata()
            .map_err(|e| format!("lstat {}: {e}", rel.display()))?;
        let before = base.join(rel);
        let unchanged =
            fs::symlink_metadata(&before).is_ok_and(|b| same(&now, &b, entry.path(), &before));
        if unchanged || emitted.contains(rel) {
            continue;
        }
        parents(rel, rootfs, &mut emitted, writer, &options)?;
        if now.is_dir() {
            emitted.insert(rel.to_path_buf());
        }
        writer
            .append_from_fs(rel, entry.path(), &options)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whiteout(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn materialize_applies_overlay_whiteouts_and_opaque_dirs() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, dest) = (
            t.path().join("l1"),
            t.path().join("l2"),
            t.path().join("dest"),
        );
        for d in [
            l1.join("a"),
            l1.join("b"),
            l2.join("a"),
            l2.join("b"),
            dest.clone(),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(l1.join("a/x"), "x").unwrap();
        fs::write(l1.join("b/z"), "z").unwrap();
        fs::write(l1.join("b/keep"), "k").unwrap();
        fs::write(l2.join("a/w"), "w").unwrap();
        if xattr::set(l2.join("a"), "user.overlay.opaque", b"y").is_err() {
            eprintln!("no user xattrs on this filesystem: skipping");
            return;
        }
        whiteout(&l2.join("b/z"));
        materialize(&[l1, l2], &dest).unwrap();
        assert_eq!(names(&dest.join("a")), ["w"]);
        assert_eq!(names(&dest.join("b")), ["keep"]);
        assert!(
            xattr::get(dest.join("a"), "user.overlay.opaque")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn materialize_sub_starts_at_the_layer_that_replaced_the_path() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, l3) = (
            t.path().join("l1"),
            t.path().join("l2"),
            t.path().join("l3"),
        );
        for d in [l1.join("d/old"), l2.join("x"), l3.join("d")] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(l1.join("d/old/f"), "1").unwrap();
        fs::write(l1.join("d/keep"), "1").unwrap();
        // l2 deletes d, l3 creates it again: only l3's files belong to the seed.
        whiteout(&l2.join("d"));
        fs::write(l3.join("d/new"), "3").unwrap();
        let layers = [l1.clone(), l2.clone(), l3.clone()];
        let dest = t.path().join("dest");
        fs::create_dir(&dest).unwrap();
        materialize_sub(&layers, "/d", &dest).unwrap();
        assert_eq!(names(&dest), ["new"]);
        let dest2 = t.path().join("dest2");
        fs::create_dir(&dest2).unwrap();
        materialize_sub(&layers[..1], "d", &dest2).unwrap();
        assert_eq!(names(&dest2), ["keep", "old"]);
        assert!(materialize_sub(&layers, "../etc", &dest2).is_err());
    }

    #[test]
    fn diff_reports_changes_deletions_and_parents() {
        use crate::layer::{Compression, LayerWriter};
        let t = tempfile::tempdir().unwrap();
        let (base, root) = (t.path().join("base"), t.path().join("root"));
        for d in [base.join("d/sub"), root.join("d/sub")] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(base.join("d/sub/same"), "s").unwrap();
        fs::write(base.join("d/gone"), "g").unwrap();
        materialize(std::slice::from_ref(&base), &root).unwrap();
        fs::remove_file(root.join("d/gone")).unwrap();
        fs::write(root.join("d/sub/new"), "n").unwrap();
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        write_diff(&base, &root, &mut w, None).unwrap();
        let tar = w.finish().unwrap().sink;
        let mut archive = tar::Archive::new(&tar[..]);
        let got: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(got, ["d/", "d/.wh.gone", "d/sub/", "d/sub/new"]);
    }
}
