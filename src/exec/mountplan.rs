//! The step's mount plan: every mount point resolved inside the root (symlinks clamped, stubs
//! created and remembered for removal) and each `MountSpec` turned into a concrete mount, with
//! secrets and writable-bind scratch dirs placed in the helper's private tmpfs.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use super::mounts::{self, Stub};
use super::sandbox::{self, Planned};
use super::spec::{ExitStatus, MountSpec, RunSpec};
use super::userns::IdMapping;

pub(super) fn target(
    root: &Path,
    path: &str,
    is_file: bool,
    stubs: &mut Vec<Stub>,
) -> Result<PathBuf, String> {
    if !path.starts_with('/') {
        return Err(format!("mount target {path:?} is not an absolute path"));
    }
    let host = mounts::secure_join(root, path)?;
    if host == root {
        return Err(format!("cannot mount over the root directory ({path})"));
    }
    if let Some(stub) = mounts::ensure_target(&host, is_file)? {
        stubs.push(stub);
    }
    Ok(host)
}

pub(super) fn plan_and_run(
    spec: &RunSpec,
    scratch: &Path,
    root: &Path,
    tmp: &Path,
    idmap: &IdMapping,
    stubs: &mut Vec<Stub>,
) -> Result<ExitStatus, String> {
    let mut plan = vec![
        Planned::Proc(target(root, "/proc", false, stubs)?),
        Planned::Dev(target(root, "/dev", false, stubs)?),
        Planned::Sys(target(root, "/sys", false, stubs)?),
    ];
    for name in ["hosts", "resolv.conf", "hostname"] {
        plan.push(Planned::Bind {
            source: scratch.join(name),
            target: target(root, &format!("/etc/{name}"), true, stubs)?,
            // Writable like BuildKit's: writes land in the per-step copy and are discarded.
            readonly: false,
        });
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        let host = target(root, m.target(), m.target_is_file(), stubs)?;
        plan.push(plan_mount(m, host, tmp, i)?);
    }
    sandbox::spawn_and_wait(spec, root, &plan, idmap.allows_setgroups())
}

fn plan_mount(m: &MountSpec, host: PathBuf, tmp: &Path, i: usize) -> Result<Planned, String> {
    Ok(match m {
        MountSpec::Bind {
            source,
            writable: false,
            ..
        } => Planned::Bind {
            source: source.clone(),
            target: host,
            readonly: true,
        },
        MountSpec::Bind {
            source,
            writable: true,
            ..
        } if source.is_dir() => {
            let (upper, work) = (
                tmp.join(format!("bind{i}-u")),
                tmp.join(format!("bind{i}-w")),
            );
            for d in [&upper, &work] {
                fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
            Planned::Overlay {
                lower: source.clone(),
                upper,
                work,
                target: host,
            }
        }
        MountSpec::Bind { source, .. } => {
            let copy = tmp.join(format!("bind{i}"));
            fs::copy(source, &copy)
                .map_err(|e| format!("copying {} for a writable bind: {e}", source.display()))?;
            Planned::Bind {
                source: copy,
                target: host,
                readonly: false,
            }
        }
        MountSpec::Layers {
            lowers,
            source,
            writable,
            ..
        } => {
            let base = tmp.join(format!("layers{i}"));
            let dirs = ["u", "w", "m", "empty"].map(|n| base.join(n));
            for d in &dirs {
                fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
            let [upper, work, merged, empty] = dirs;
            Planned::LayersBind {
                // A stage with no layers (FROM scratch) is an empty directory.
                lowers: if lowers.is_empty() {
                    vec![empty]
                } else {
                    lowers.clone()
                },
                upper,
                work,
                merged,
                subpath: source.clone(),
                target: host,
                readonly: !writable,
            }
        }
        MountSpec::Tmpfs { size, .. } => Planned::Tmpfs {
            target: host,
            size: *size,
        },
        MountSpec::Cache {
            source,
            init,
            readonly,
            ..
        } => {
            if let Some(init) = init {
                chown(source, Some(init.uid), Some(init.gid))
                    .map_err(|e| format!("chown of cache dir {}: {e}", source.display()))?;
                fs::set_permissions(source, fs::Permissions::from_mode(init.mode))
                    .map_err(|e| format!("chmod of cache dir {}: {e}", source.display()))?;
            }
            Planned::Bind {
                source: source.clone(),
                target: host,
                readonly: *readonly,
            }
        }
        MountSpec::Secret {
            data,
            uid,
            gid,
            mode,
            ..
        } => {
            let file = tmp.join(format!("secret{i}"));
            fs::write(&file, data)
                .map_err(|e| format!("writing secret {}: {e}", file.display()))?;
            chown(&file, Some(*uid), Some(*gid))
                .map_err(|e| format!("chown of secret to {uid}:{gid}: {e}"))?;
            fs::set_permissions(&file, fs::Permissions::from_mode(*mode))
                .map_err(|e| format!("chmod of secret: {e}"))?;
            Planned::Bind {
                source: file,
                target: host,
                readonly: true,
            }
        }
        MountSpec::Ssh { socket, .. } => Planned::Bind {
            source: socket.clone(),
            target: host,
            readonly: false,
        },
    })
}
