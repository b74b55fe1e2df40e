//! RUN steps: the stage's layers as overlay lowers (unpacked once per diff_id by the
//! snapshotter), the rootless executor with the step's mounts, and the upper dir's changes as
//! the next layer.

use std::path::{Component, Path, PathBuf};

use crate::dockerfile::instructions::{CacheSharing, MountKind, NetworkMode, RunMount};
use crate::exec::{
    CacheInit, CacheLease, CacheMounts, CacheSeed, MountSpec, Network, RunSpec, Sharing, Stream,
};
use crate::image::{Descriptor, Digest};
use crate::plan::{RunOp, Source};
use crate::snapshot::Snapshotter;

use super::{Shared, SolveError};
use crate::progress::{Event, LogStream};

/// A finished RUN step's layer.
pub(crate) struct RunLayer {
    pub layer: Descriptor,
    pub diff_id: Digest,
}

fn snap_err(line: usize) -> impl Fn(crate::snapshot::Error) -> SolveError {
    move |e| SolveError::Run {
        line,
        message: e.to_string(),
    }
}

/// `path` inside `root`, refusing `..` and absolute escapes (bind sources are plain subpaths).
fn sub_path(root: &Path, path: Option<&str>, line: usize) -> Result<PathBuf, SolveError> {
    let Some(p) = path.filter(|p| !p.is_empty()) else {
        return Ok(root.to_path_buf());
    };
    let rel = Path::new(p.trim_start_matches('/'));
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SolveError::Run {
            line,
            message: format!("mount source {p:?} must stay inside its root"),
        });
    }
    Ok(root.join(rel))
}

/// Runs one RUN step on top of `layers` and returns the layer it produced.
pub(crate) fn run_step(
    shared: &Shared<'_>,
    vertex: u64,
    line: usize,
    op: &RunOp,
    layers: &[Descriptor],
    diff_ids: &[Digest],
) -> Result<RunLayer, SolveError> {
    let snap = Snapshotter::new(shared.store.dir().parent().unwrap_or(shared.store.dir()))
        .map_err(snap_err(line))?;
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        snap.unpack_layer(diff_id, &shared.store.blob_path(&layer.digest))
            .map_err(snap_err(line))?;
    }
    let active = snap.prepare(diff_ids).map_err(snap_err(line))?;
    let result = run_in(shared, &snap, &active, vertex, line, op);
    match result {
        Ok(out) => {
            snap.commit(active, &out.diff_id).map_err(snap_err(line))?;
            Ok(out)
        }
        Err(e) => {
            let _ = snap.remove(active);
            Err(e)
        }
    }
}

fn run_in(
    shared: &Shared<'_>,
    snap: &Snapshotter,
    active: &crate::snapshot::Active,
    vertex: u64,
    line: usize,
    op: &RunOp,
) -> Result<RunLayer, SolveError> {
    if op.security == Some(crate::dockerfile::instructions::SecurityMode::Insecure) {
        return Err(SolveError::Unsupported {
            line,
            what: "RUN --security=insecure".into(),
        });
    }
    let target = &shared.request.options.target_platform;
    let host = crate::image::Platform::host();
    if target.os != host.os || target.architecture != host.architecture {
        return Err(SolveError::Unsupported {
            line,
            what: format!(
                "RUN for platform {}/{} on a {}/{} host (no emulation)",
                target.os, target.architecture, host.os, host.architecture
            ),
        });
    }
    let caches = CacheMounts::new(shared.store.dir().parent().unwrap_or(shared.store.dir()));
    let mut leases: Vec<CacheLease> = Vec::new();
    let mut mounts = Vec::new();
    for (m, src) in op.mounts.iter().zip(&op.mount_sources) {
        if let Some(spec) = mount_spec(shared, snap, line, m, src, &caches, &mut leases)? {
            mounts.push(spec);
        }
    }
    let network = match op.network.or(shared.request.network) {
        Some(NetworkMode::None) => Network::None,
        _ => Network::Host,
    };
    let spec = RunSpec {
        root: active.root(),
        argv: op.argv.clone(),
        env: op
            .env
            .iter()
            .map(str::to_string)
            .chain(secret_env(shared, op))
            .collect(),
        cwd: op.cwd.clone(),
        user: op.user.clone(),
        network,
        mounts,
        ..RunSpec::new(active.root(), op.argv.clone())
    };
    let mut partial = [String::new(), String::new()];
    let log = |stream: usize, text: String| {
        shared.emit(Event::Log {
            id: vertex,
            stream: if stream == 1 {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            },
            text,
        });
    };
    let mut on_output = |stream: Stream, bytes: &[u8]| {
        let which = usize::from(stream == Stream::Stderr);
        let buf = &mut partial[which];
        buf.push_str(&String::from_utf8_lossy(bytes));
        while let Some(i) = buf.find('\n') {
            let l: String = buf.drain(..=i).collect();
            log(which, l.trim_end_matches(['\n', '\r']).to_string());
        }
    };
    // Tracked for this build, so a failure in another stage kills this step's processes.
    let sandbox = shared.sandboxes.track();
    // The step and its diff run in one sandbox helper; the layer streams into the store.
    let mut w = shared.store.blob_writer()?;
    let layer_out = crate::snapshot::LayerOutput {
        compression: shared.compression,
        source_date_epoch: shared.epoch,
        sink: &mut w,
    };
    let started = std::time::Instant::now();
    let outcome = snap
        .run_step(active, &spec, sandbox.handle(), &mut on_output, layer_out)
        .map_err(|e| match e {
            crate::snapshot::Error::Exec(crate::exec::Error::Cancelled) => SolveError::Canceled {
                line,
                reason: match crate::exec::interrupted() {
                    Some(signal) => format!("the build was interrupted (signal {signal})"),
                    None => "another step failed".into(),
                },
            },
            e => SolveError::Run {
                line,
                message: e.to_string(),
            },
        })?;
    drop(sandbox);
    for (which, rest) in partial.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
        log(which, rest.clone());
    }
    drop(leases);
    let status = outcome.status;
    let Some(summary) = outcome.layer.as_ref().filter(|_| status.success()) else {
        return Err(SolveError::Run {
            line,
            message: format!(
                "process {:?} did not complete successfully: {status}",
                op.argv.join(" ")
            ),
        });
    };
    let (digest, size) = w.commit(None)?;
    // Measured, for scripts/bench-exec: step start to blob committed, and the layer's part
    // (from the step's process exit, as the helper saw it, to the blob committed).
    tracing::info!(
        target: "rbuild::timing",
        line,
        step_ms = started.elapsed().as_secs_f64() * 1e3,
        layer_ms = outcome.since_exit().as_secs_f64() * 1e3,
        uncompressed = summary.uncompressed_size,
        compressed = size,
        "run step"
    );
    Ok(RunLayer {
        layer: Descriptor::new(shared.compression.oci_media_type(), digest, size),
        diff_id: summary.diff_id.clone(),
    })
}

/// The snapshot layer dirs (base first) of a stage or image a RUN mount reads from, unpacked
/// now if needed; `None` for build contexts, which are plain host directories. Layer dirs keep
/// the files' container owners, which a host-side copy of the root cannot when rbuild runs as
/// host root (its sandbox root is an unprivileged id).
fn source_layers(
    shared: &Shared<'_>,
    snap: &Snapshotter,
    line: usize,
    src: &Source,
) -> Result<Option<Vec<PathBuf>>, SolveError> {
    let (layers, diff_ids) = match src {
        Source::Stage(i) => {
            let outputs = shared.outputs.lock().expect("outputs lock");
            let Some(out) = outputs.get(i) else {
                return Err(SolveError::Unsupported {
                    line,
                    what: format!("mounting stage {i} before it is built"),
                });
            };
            (out.layers.clone(), out.diff_ids.clone())
        }
        Source::Image(r) => {
            use crate::plan::ImageResolver as _;
            let platform = shared.request.options.target_platform.clone();
            let img = shared.resolver.resolve(r, &platform).map_err(|message| {
                SolveError::Plan(crate::plan::PlanError::Base {
                    line,
                    image: r.clone(),
                    message,
                })
            })?;
            let layers = shared.resolver.layers_of(r).unwrap_or_default();
            (layers, img.config.rootfs.diff_ids.clone())
        }
        Source::Scratch => (Vec::new(), Vec::new()),
        Source::MainContext | Source::Context(_) => return Ok(None),
    };
    if layers.len() != diff_ids.len() {
        return Err(SolveError::Run {
            line,
            message: format!(
                "mount source has {} layers but {} diff_ids",
                layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut dirs = Vec::with_capacity(layers.len());
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let dir = snap
            .unpack_layer(diff_id, &shared.store.blob_path(&layer.digest))
            .map_err(snap_err(line))?;
        dirs.push(dir);
    }
    Ok(Some(dirs))
}

/// Top-most first, each layer once (overlayfs refuses a repeated lower).
fn overlay_order(base_first: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::with_capacity(base_first.len());
    for d in base_first.iter().rev() {
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn mount_spec(
    shared: &Shared<'_>,
    snap: &Snapshotter,
    line: usize,
    m: &RunMount,
    src: &Source,
    caches: &CacheMounts,
    leases: &mut Vec<CacheLease>,
) -> Result<Option<MountSpec>, SolveError> {
    let target = m.target.clone().unwrap_or_default();
    Ok(Some(match m.kind {
        MountKind::Tmpfs => MountSpec::Tmpfs {
            target,
            size: m.size,
        },
        MountKind::Bind => {
            if let Some(layers) = source_layers(shared, snap, line, src)? {
                let source = m.source.clone().unwrap_or_else(|| "/".into());
                sub_path(Path::new("/"), Some(&source), line)?;
                return Ok(Some(MountSpec::Layers {
                    lowers: overlay_order(&layers),
                    source,
                    target,
                    writable: !m.read_only,
                }));
            }
            let (root, _) = shared.source_root(line, src)?;
            MountSpec::Bind {
                source: sub_path(&root, m.source.as_deref(), line)?,
                target,
                // `rw`: the executor mounts an overlay with a throwaway upper dir (a copy for a
                // file), so writes never reach the context or the other stage.
                writable: !m.read_only,
            }
        }
        MountKind::Cache => {
            let id = m.id.clone().unwrap_or_else(|| target.clone());
            let sharing = match m.sharing.unwrap_or(CacheSharing::Shared) {
                CacheSharing::Shared => Sharing::Shared,
                CacheSharing::Private => Sharing::Private,
                CacheSharing::Locked => Sharing::Locked,
            };
            // `from=`: a cache created now starts as a copy of that stage's, image's or
            // context's `source=` dir. BuildKit keys such a cache by id and its base, so a
            // changed base gets a new cache instead of the old one's contents.
            let (key_id, seed) = match src {
                Source::MainContext => (id.clone(), None),
                other => {
                    let subpath = m.source.clone().unwrap_or_else(|| "/".into());
                    sub_path(Path::new("/"), Some(&subpath), line)?;
                    let seed = match source_layers(shared, snap, line, other)? {
                        Some(layers) => CacheSeed { layers, subpath },
                        None => CacheSeed {
                            layers: vec![shared.source_root(line, other)?.0],
                            subpath,
                        },
                    };
                    let base = match other {
                        Source::Stage(i) => {
                            let outputs = shared.outputs.lock().expect("outputs lock");
                            outputs
                                .get(i)
                                .map(|o| o.key.to_string())
                                .unwrap_or_default()
                        }
                        Source::Image(r) => shared.image_key(line, r)?,
                        _ => seed.layers[0].display().to_string(),
                    };
                    let key = format!(
                        "{id}\0from={base}\0source={}",
                        m.source.as_deref().unwrap_or("/")
                    );
                    (key, Some(seed))
                }
            };
            let lease = caches
                .acquire_seeded(&key_id, sharing, seed.as_ref())
                .map_err(|e| SolveError::Run {
                    line,
                    message: e.to_string(),
                })?;
            let init = CacheInit {
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                mode: m.mode.unwrap_or(0o755),
            };
            let spec = lease.mount(&target, init, m.read_only);
            leases.push(lease);
            spec
        }
        MountKind::Secret => {
            let id = secret_id(m);
            let Some(data) = shared.request.secrets.get(&id) else {
                // BuildKit skips an optional secret that was not given.
                return if m.required {
                    Err(SolveError::Run {
                        line,
                        message: format!(
                            "secret {id} not found (give it with --secret id={id},src=FILE)"
                        ),
                    })
                } else {
                    Ok(None)
                };
            };
            if m.env.is_some() && m.target.is_none() {
                // Exposed only as an environment variable (see `secret_env`).
                return Ok(None);
            }
            MountSpec::Secret {
                data: data.clone(),
                target: m
                    .target
                    .clone()
                    .unwrap_or_else(|| format!("/run/secrets/{id}")),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                mode: m.mode.unwrap_or(0o400),
            }
        }
        MountKind::Ssh => {
            let id = m.id.clone().unwrap_or_else(|| "default".into());
            let Some(socket) = shared.request.ssh.get(&id) else {
                return if m.required {
                    Err(SolveError::Run {
                        line,
                        message: format!(
                            "no SSH agent socket {id:?} (give it with --ssh {id}[=SOCKET])"
                        ),
                    })
                } else {
                    Ok(None)
                };
            };
            MountSpec::Ssh {
                socket: socket.clone(),
                target: m.target.clone().unwrap_or_else(|| SSH_TARGET.into()),
            }
        }
    }))
}

/// Where BuildKit puts the default SSH agent socket.
const SSH_TARGET: &str = "/run/buildkit/ssh_agent.0";

/// A secret mount's id: `id=`, else the target's file name (BuildKit's rule).
fn secret_id(m: &RunMount) -> String {
    m.id.clone().unwrap_or_else(|| {
        m.target
            .as_deref()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or_default()
            .to_string()
    })
}

/// Environment entries secrets and SSH mounts add to a RUN (`env=` secrets, `SSH_AUTH_SOCK`).
fn secret_env(shared: &Shared<'_>, op: &RunOp) -> Vec<String> {
    let mut env = Vec::new();
    for m in &op.mounts {
        match m.kind {
            MountKind::Secret => {
                if let (Some(var), Some(data)) = (&m.env, shared.request.secrets.get(&secret_id(m)))
                {
                    env.push(format!("{var}={}", String::from_utf8_lossy(data)));
                }
            }
            MountKind::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                if shared.request.ssh.contains_key(&id) {
                    let target = m.target.clone().unwrap_or_else(|| SSH_TARGET.into());
                    env.push(format!("SSH_AUTH_SOCK={target}"));
                }
            }
            _ => {}
        }
    }
    env
}
