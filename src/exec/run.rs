//! Running one step: the host-side preparation (scratch dir, generated `/etc/hosts`,
//! `/etc/resolv.conf`, `/etc/hostname`) and the call into the helper.

use std::fs;
use std::path::{Path, PathBuf};

use super::Error;
use super::spawn::{CancelHandle, Job, Ran, Response, call};
use super::spec::{ExitStatus, MountSpec, Network, RootSpec, RunSpec, Stream};
use super::userns::IdMapping;

/// Runs `spec` in a fresh sandbox, streaming its output line by line to `on_output`, and
/// returns how the process ended. A non-zero exit is `Ok`; only setup failures are errors.
pub fn run(spec: &RunSpec, on_output: &mut dyn FnMut(Stream, &[u8])) -> Result<ExitStatus, Error> {
    run_cancellable(spec, &CancelHandle::new(), on_output)
}

/// [`run`] that stops (killing every process of the step) when `cancel` is triggered, and then
/// returns [`Error::Cancelled`].
pub fn run_cancellable(
    spec: &RunSpec,
    cancel: &CancelHandle,
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<ExitStatus, Error> {
    run_then(spec, cancel, on_output, None).map(|ran| ran.status)
}

/// [`run_cancellable`] that, when the step exits with 0, runs the snapshot job `after` in the
/// same helper with `data` as its data file (the step's diff), and returns its result too.
pub(crate) fn run_then(
    spec: &RunSpec,
    cancel: &CancelHandle,
    on_output: &mut dyn FnMut(Stream, &[u8]),
    after: Option<(crate::snapshot::NsJob, std::os::fd::OwnedFd)>,
) -> Result<Ran, Error> {
    let scratch = tempfile::Builder::new()
        .prefix(crate::snapshot::RUN_SCRATCH_PREFIX)
        .tempdir()
        .map_err(|e| Error::Host {
            action: "creating a scratch dir in",
            path: std::env::temp_dir(),
            source: e,
        })?;
    // Locked while in use, so the next rbuild removes it if this process is killed.
    let _lock = crate::snapshot::lock_dir(scratch.path()).map_err(|e| Error::Host {
        action: "locking",
        path: scratch.path().to_path_buf(),
        source: e,
    })?;
    prepare_scratch(scratch.path(), spec)?;
    for path in host_paths(spec) {
        make_traversable(&path)?;
    }
    let (after, data) = match after {
        Some((job, fd)) => (Some(job), Some(fd)),
        None => (None, None),
    };
    let job = Job::Run {
        spec: Box::new(spec.clone()),
        scratch: scratch.path().to_path_buf(),
        after,
    };
    match call(job, data, Some(cancel), on_output)? {
        Response::Exited(ran) => Ok(ran),
        Response::Failed(e) => Err(Error::Sandbox(e)),
        Response::Done(_) => Err(Error::Protocol("unexpected reply to a run job".into())),
    }
}

fn prepare_scratch(dir: &Path, spec: &RunSpec) -> Result<(), Error> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| Error::Host {
            action: "writing",
            path,
            source: e,
        })
    };
    write("hosts", hosts_file(spec))?;
    write("resolv.conf", resolv_conf(spec.network))?;
    write("hostname", format!("{}\n", spec.hostname))?;
    for sub in ["root", "tmp"] {
        let path = dir.join(sub);
        fs::create_dir(&path).map_err(|e| Error::Host {
            action: "creating",
            path: path.clone(),
            source: e,
        })?;
    }
    for sub in ["", "root", "tmp", "hosts", "resolv.conf", "hostname"] {
        hand_over(&dir.join(sub))?;
    }
    Ok(())
}

/// Gives `path` to the container's root user when rbuild runs as host root (whose container
/// root is a high unprivileged id); a no-op for ordinary users, who are container root.
pub(crate) fn hand_over(path: &Path) -> Result<(), Error> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let map = IdMapping::current();
    std::os::unix::fs::chown(path, map.host_uid(0), map.host_gid(0)).map_err(|e| Error::Host {
        action: "handing over to the sandbox's root user",
        path: path.to_path_buf(),
        source: e,
    })
}

fn host_paths(spec: &RunSpec) -> Vec<PathBuf> {
    let mut out = vec![std::env::temp_dir()];
    match &spec.root {
        RootSpec::Dir(d) => out.push(d.clone()),
        RootSpec::Overlay {
            lowers,
            upper,
            work,
        } => {
            out.extend(lowers.iter().cloned());
            out.push(upper.clone());
            out.push(work.clone());
        }
    }
    for m in &spec.mounts {
        match m {
            MountSpec::Bind { source, .. } | MountSpec::Cache { source, .. } => {
                out.push(source.clone())
            }
            MountSpec::Ssh { socket, .. } => out.push(socket.clone()),
            MountSpec::Layers { lowers, .. } => out.extend(lowers.iter().cloned()),
            MountSpec::Tmpfs { .. } | MountSpec::Secret { .. } => {}
        }
    }
    out
}

/// As host root, the sandbox's root user is an unprivileged id, so every root-owned parent of
/// the paths it uses needs the search bit for others (0700 → 0711, like containers/storage
/// does for user-namespaced containers). Names stay unlistable. A no-op for other users.
pub(crate) fn make_traversable(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        if meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o001 == 0 {
            let mode = (meta.mode() & 0o7777) | 0o001;
            tracing::warn!(
                "made {} traversable by others (o+x): RUN steps started by root run as a mapped \
                 unprivileged user that must reach {}",
                dir.display(),
                path.display()
            );
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(|e| {
                Error::Host {
                    action: "making traversable for the sandbox",
                    path: dir.to_path_buf(),
                    source: e,
                }
            })?;
        }
    }
    Ok(())
}

/// BuildKit's generated hosts file: localhost entries, the sandbox hostname, `--add-host`s.
fn hosts_file(spec: &RunSpec) -> String {
    let mut out = format!(
        "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        spec.hostname
    );
    for (name, ip) in &spec.extra_hosts {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    out
}

/// The host's resolver configuration; loopback name servers are useless without the host
/// network, so then they are replaced by public defaults as docker does.
fn resolv_conf(network: Network) -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if network == Network::Host {
        return host;
    }
    let kept: Vec<&str> = host
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            !(w.next() == Some("nameserver")
                && w.next()
                    .is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .collect();
    let mut out = kept.join("\n");
    if !kept.iter().any(|l| l.starts_with("nameserver")) {
        out.push_str("\nnameserver 8.8.8.8\nnameserver 8.8.4.4");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_sandbox_and_extra_hosts() {
        let mut spec = RunSpec::new(RootSpec::Dir("/x".into()), vec!["true".into()]);
        spec.extra_hosts
            .push(("db".into(), "10.0.0.5".parse().unwrap()));
        let text = hosts_file(&spec);
        assert!(text.starts_with("127.0.0.1\tlocalhost buildkitsandbox\n"));
        assert!(text.ends_with("10.0.0.5\tdb\n"));
    }

    #[test]
    fn resolv_conf_without_network_has_no_loopback_servers() {
        let text = resolv_conf(Network::None);
        assert!(!text.contains("nameserver 127."));
        assert!(text.contains("nameserver"));
    }
}
