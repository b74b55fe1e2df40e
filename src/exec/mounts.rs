//! Mount primitives for the sandbox helper: mount(2) wrappers, symlink-safe path resolution
//! inside a root, and mount-point stubs that are removed again so they never reach a layer.
//!
//! Everything here runs in the re-executed helper (single-threaded), so it may allocate. Errors
//! are strings that already name the path and operation; they travel to the parent verbatim.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use filetime::FileTime;

fn cstr(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("path {} contains NUL", p.display()))
}

/// mount(2) with errors naming what was mounted where.
pub(crate) fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    let src = source.map(cstr).transpose()?;
    let tgt = cstr(target)?;
    let fs = fstype.map(|f| CString::new(f).expect("static fs name"));
    let dat = data
        .map(|d| CString::new(d).map_err(|_| "mount options contain NUL".to_string()))
        .transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings or null for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!(
            "mounting {} ({}) on {}{}: {err}",
            source.map_or("none".into(), |s| s.display().to_string()),
            fstype.unwrap_or("bind"),
            target.display(),
            data.map(|d| format!(" with options {d}"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// Bind-mounts `source` on `target` (recursively), then makes it read-only when asked, with
/// `mount_setattr` so the whole subtree becomes read-only without touching locked flags.
pub(crate) fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), String> {
    mount(
        Some(source),
        target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    if readonly {
        set_readonly(target)?;
    }
    Ok(())
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Marks the mount tree at `target` read-only.
pub(crate) fn set_readonly(target: &Path) -> Result<(), String> {
    let tgt = cstr(target)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: valid path pointer and a correctly sized `struct mount_attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            tgt.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "making {} read-only: {}",
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Resolves `path` (absolute, as seen in the sandbox) to a host path under `root`, following
/// symlinks as the sandbox would see them: `..` and absolute link targets never leave `root`.
pub(crate) fn secure_join(root: &Path, path: &str) -> Result<PathBuf, String> {
    let mut pending: Vec<PathBuf> = Path::new(path)
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next() {
            None | Some(Component::RootDir) | Some(Component::CurDir) => continue,
            Some(Component::ParentDir) => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(format!(
                        "too many levels of symbolic links resolving {path}"
                    ));
                }
                let target = fs::read_link(&full)
                    .map_err(|e| format!("reading symlink {}: {e}", full.display()))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    pending.push(PathBuf::from(c.as_os_str()));
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// A mount point the sandbox created in the root; removed after the step when still empty.
#[derive(Debug)]
pub(crate) struct Stub {
    /// Every path created, outermost first.
    created: Vec<PathBuf>,
    /// The existing directory the first created path lives in, and its times before.
    parent: PathBuf,
    parent_times: (FileTime, FileTime),
}

/// Makes sure `path` exists as a file or directory, creating it (and missing parents) if not.
/// Returns the resolved host path and the stub to undo afterwards.
pub(crate) fn ensure_target(host: &Path, is_file: bool) -> Result<Option<Stub>, String> {
    if fs::symlink_metadata(host).is_ok() {
        return Ok(None);
    }
    let mut missing = vec![host.to_path_buf()];
    let mut parent = host.parent().map(Path::to_path_buf);
    while let Some(p) = parent.clone() {
        if fs::symlink_metadata(&p).is_ok() {
            break;
        }
        missing.push(p.clone());
        parent = p.parent().map(Path::to_path_buf);
    }
    let parent = parent.ok_or_else(|| format!("no existing parent for {}", host.display()))?;
    let meta = fs::metadata(&parent).map_err(|e| format!("stat {}: {e}", parent.display()))?;
    let parent_times = (
        FileTime::from_last_access_time(&meta),
        FileTime::from_last_modification_time(&meta),
    );
    missing.reverse();
    for (i, p) in missing.iter().enumerate() {
        let last = i + 1 == missing.len();
        if last && is_file {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(p)
                .map_err(|e| format!("creating mount point {}: {e}", p.display()))?;
        } else {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(p)
                .map_err(|e| format!("creating mount point {}: {e}", p.display()))?;
        }
    }
    Ok(Some(Stub {
        created: missing,
        parent,
        parent_times,
    }))
}

impl Stub {
    /// Removes what was created, innermost first, if it is still an empty dir or empty file,
    /// and puts the parent's times back so the diff sees no change there.
    pub(crate) fn remove(&self) {
        for p in self.created.iter().rev() {
            match fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => {
                    let _ = fs::remove_dir(p);
                }
                Ok(m) if m.is_file() && m.len() == 0 => {
                    let _ = fs::remove_file(p);
                }
                _ => return,
            }
        }
        let _ = filetime::set_file_times(&self.parent, self.parent_times.0, self.parent_times.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn secure_join_clamps_links_and_dotdot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/real")).unwrap();
        symlink("/etc/real", root.join("etc/abs")).unwrap();
        symlink("../../../../..", root.join("etc/up")).unwrap();
        assert_eq!(
            secure_join(root, "/etc/abs/x").unwrap(),
            root.join("etc/real/x")
        );
        assert_eq!(
            secure_join(root, "/etc/up/passwd").unwrap(),
            root.join("passwd")
        );
        assert_eq!(secure_join(root, "/../../x").unwrap(), root.join("x"));
        symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, "/loop/x").is_err());
    }

    #[test]
    fn stubs_are_removed_and_parent_times_restored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("etc")).unwrap();
        let old = FileTime::from_unix_time(1_000_000, 0);
        filetime::set_file_times(root.join("etc"), old, old).unwrap();
        let stub = ensure_target(&root.join("etc/a/b/hosts"), true)
            .unwrap()
            .unwrap();
        assert!(root.join("etc/a/b/hosts").is_file());
        stub.remove();
        assert!(!root.join("etc/a").exists());
        let m = fs::metadata(root.join("etc")).unwrap();
        assert_eq!(FileTime::from_last_modification_time(&m), old);
        assert!(ensure_target(&root.join("etc"), false).unwrap().is_none());
    }

    #[test]
    fn stub_with_content_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stub = ensure_target(&dir.path().join("d/f"), true)
            .unwrap()
            .unwrap();
        fs::write(dir.path().join("d/f"), b"data").unwrap();
        stub.remove();
        assert!(dir.path().join("d/f").exists());
    }
}
