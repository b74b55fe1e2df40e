//! The helper process side: enter a user namespace, then run a step or a snapshot job in it.
//!
//! Process tree of a step: rbuild (threads) → helper H (this file, root in the new user
//! namespace; writes the step's layer afterwards, on threads) → mapper M (briefly, writes H's
//! id maps from outside) and namespace process N (owns the mount, PID, UTS and IPC namespaces
//! holding the step's root) → sandbox C (PID 1 of the new PID namespace, own mount namespace,
//! pivots into the root and execs the step; see `sandbox.rs`).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::mounts::{self, Stub};
use super::sandbox;
use super::spawn::{DATA_FD, Job, Ran, Request, Response, STATUS_FD, monotonic_ns};
use super::spec::{ExitStatus, Network, RootSpec, RunSpec};
use super::userns::{self, IdMapping};

/// How the failure of a run job's `after` job starts, so the caller can tell it from a setup
/// failure.
pub(crate) const AFTER_STEP: &str = "after the step";

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Entry point of the re-executed helper.
pub(crate) fn main() -> ExitCode {
    let mut input = Vec::new();
    let response = match std::io::stdin().read_to_end(&mut input) {
        Err(e) => Response::Failed(format!("reading the job from stdin: {e}")),
        Ok(_) => match serde_json::from_slice::<Request>(&input) {
            Err(e) => Response::Failed(format!("undecodable job: {e}")),
            Ok(mut req) => {
                null_stdin();
                // The status pipe must not reach the step's processes (they could write to it).
                // SAFETY: F_SETFD on a descriptor we own.
                unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
                // SAFETY: the parent dup'ed the job's data file onto fd 4 when it says so.
                let data = req
                    .has_data
                    .then(|| unsafe { OwnedFd::from_raw_fd(DATA_FD) });
                if data.is_some() {
                    // Neither may the data file (a step's layer pipe).
                    // SAFETY: F_SETFD on a descriptor we own.
                    unsafe { libc::fcntl(DATA_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
                }
                match pin_paths(&mut req.job) {
                    Err(e) => Response::Failed(e),
                    Ok(_pins) => match enter_userns(&req.idmap) {
                        Err(e) => Response::Failed(e),
                        Ok(()) => dispatch(req, data),
                    },
                }
            }
        },
    };
    // SAFETY: fd 3 was set up by the parent for exactly this; we own it from here on.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let text = serde_json::to_vec(&response).unwrap_or_default();
    if status.write_all(&text).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn dispatch(req: Request, data: Option<OwnedFd>) -> Response {
    match req.job {
        Job::Run {
            spec,
            scratch,
            after,
        } => match run_step(&spec, &scratch, &req.idmap) {
            Ok(status) => {
                let exited_ns = monotonic_ns();
                let after = match after.filter(|_| status.success()) {
                    None => None,
                    Some(job) => match crate::snapshot::run_ns_job(job, data) {
                        Ok(v) => Some(v),
                        Err(e) => return Response::Failed(format!("{AFTER_STEP}: {e}")),
                    },
                };
                Response::Exited(Ran {
                    status,
                    exited_ns,
                    after,
                })
            }
            Err(e) => Response::Failed(e),
        },
        Job::Snapshot(job) => match crate::snapshot::run_ns_job(job, data) {
            Ok(v) => Response::Done(v),
            Err(e) => Response::Failed(e),
        },
    }
}

/// Opens every host path of a snapshot job now, while still outside the user namespace, and
/// replaces it by `/proc/self/fd/N`. Host root's container root is an unprivileged id that
/// could not walk through root-only parents (0700 temp and store dirs); an open fd needs no
/// such walk. Run jobs cannot use this (mount(2) refuses paths from another mount namespace);
/// the parent makes their parents traversable instead (`run::make_traversable`).
fn pin_paths(job: &mut Job) -> Result<Vec<OwnedFd>, String> {
    let paths: Vec<&mut PathBuf> = match job {
        Job::Run { .. } => return Ok(Vec::new()),
        Job::Snapshot(job) => job.host_paths(),
    };
    let mut pins = Vec::with_capacity(paths.len());
    for p in paths {
        let fd = rustix::fs::open(
            p.as_path(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| format!("opening {}: {e}", p.display()))?;
        *p = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ));
        pins.push(fd);
    }
    Ok(pins)
}

fn null_stdin() {
    if let Ok(f) = File::open("/dev/null") {
        // SAFETY: dup2 onto fd 0 of an fd we own.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&f), 0) };
    }
}

/// Creates the user namespace: a forked mapper writes our maps from outside, then we become
/// root inside it.
fn enter_userns(idmap: &IdMapping) -> Result<(), String> {
    // SAFETY: getppid/getpid have no preconditions.
    let (ppid, me) = unsafe { (libc::getppid(), libc::getpid()) };
    let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this process is single-threaded (fresh exec), so the child may allocate.
    let mapper = unsafe { libc::fork() };
    if mapper < 0 {
        return Err(errno("fork of the id-map writer"));
    }
    if mapper == 0 {
        drop(go_w);
        drop(err_r);
        // SAFETY: prctl with constant arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let mut byte = [0u8; 1];
        let code = match File::from(go_r).read(&mut byte) {
            Ok(1) => match userns::write_maps(me, idmap) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = File::from(err_w).write_all(e.as_bytes());
                    1
                }
            },
            _ => 1,
        };
        // SAFETY: leave the forked copy without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(go_r);
    drop(err_w);
    // SAFETY: unshare of a fresh user namespace in a single-threaded process.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    let unshare_err = (unshared != 0).then(|| errno("creating a user namespace (unshare)"));
    if unshare_err.is_none() {
        let _ = File::from(go_w).write_all(b"g");
    } else {
        drop(go_w);
    }
    let mut mapper_err = String::new();
    let _ = File::from(err_r).read_to_string(&mut mapper_err);
    let mut wstatus = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(mapper, &mut wstatus, 0) };
    if let Some(e) = unshare_err {
        return Err(e);
    }
    if !mapper_err.is_empty() || !libc::WIFEXITED(wstatus) || libc::WEXITSTATUS(wstatus) != 0 {
        return Err(format!(
            "setting up the user namespace id maps: {mapper_err}"
        ));
    }
    // SAFETY: plain credential syscalls; ids 0 are mapped now.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 {
            return Err(errno("setresgid(0) in the user namespace"));
        }
        if libc::setresuid(0, 0, 0) != 0 {
            return Err(errno("setresuid(0) in the user namespace"));
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 1);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != ppid {
            libc::_exit(1);
        }
    }
    if idmap.allows_setgroups() {
        // SAFETY: a one-element group list.
        unsafe { libc::setgroups(1, [0 as libc::gid_t].as_ptr()) };
    }
    Ok(())
}

/// Runs the step from a forked child N that owns the step's namespaces: a process that
/// unshared its PID namespace can no longer start threads (EINVAL), and the step's diff,
/// which this helper writes afterwards, compresses and hashes on threads.
fn run_step(spec: &RunSpec, scratch: &Path, idmap: &IdMapping) -> Result<ExitStatus, String> {
    if spec.argv.is_empty() {
        return Err("empty command".to_string());
    }
    let (result_r, result_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SAFETY: this helper is single-threaded here, so the child may allocate.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno("fork of the step's namespace process"));
    }
    if pid == 0 {
        drop(result_r);
        // SAFETY: constant prctl; then make sure the helper did not die before it was armed.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != me {
                libc::_exit(1);
            }
        }
        let result = step_in_namespaces(spec, scratch, idmap);
        let text = serde_json::to_vec(&result).unwrap_or_default();
        let _ = File::from(result_w).write_all(&text);
        // SAFETY: leave the forked copy without running the helper's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(result_w);
    let mut text = Vec::new();
    let read = File::from(result_r).read_to_end(&mut text);
    let mut wstatus = 0;
    loop {
        // SAFETY: reaping our own child.
        let rc = unsafe { libc::waitpid(pid, &mut wstatus, 0) };
        if rc == pid
            || (rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
        {
            break;
        }
    }
    if let Err(e) = read {
        return Err(format!("reading the step's result: {e}"));
    }
    serde_json::from_slice(&text).unwrap_or_else(|_| {
        Err(format!(
            "the step's namespace process ended without a result (wait status {wstatus:#x})"
        ))
    })
}

fn step_in_namespaces(
    spec: &RunSpec,
    scratch: &Path,
    idmap: &IdMapping,
) -> Result<ExitStatus, String> {
    let root = scratch.join("root");
    let tmp = scratch.join("tmp");
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: single-threaded; we are root in our user namespace.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(errno("creating mount/PID/UTS/IPC namespaces"));
    }
    mounts::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mount_root(&spec.root, &root)?;
    mounts::mount(
        Some(Path::new("tmpfs")),
        &tmp,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0700"),
    )?;
    // SAFETY: sethostname with a valid buffer; we own the UTS namespace.
    if unsafe { libc::sethostname(spec.hostname.as_ptr().cast(), spec.hostname.len()) } != 0 {
        return Err(errno(&format!("setting hostname {:?}", spec.hostname)));
    }
    if spec.network == Network::None {
        sandbox::loopback_up()?;
    }
    let mut stubs: Vec<Stub> = Vec::new();
    let result = super::mountplan::plan_and_run(spec, scratch, &root, &tmp, idmap, &mut stubs);
    for stub in stubs.iter().rev() {
        stub.remove();
    }
    result
}

/// Longest overlay option string the classic mount(2) call accepts (one page, minus slack).
const MAX_MOUNT_DATA: usize = 4000;

fn mount_root(root: &RootSpec, at: &Path) -> Result<(), String> {
    match root {
        RootSpec::Dir(dir) => mounts::bind(dir, at, false),
        RootSpec::Overlay {
            lowers,
            upper,
            work,
        } => {
            if lowers.is_empty() {
                // overlayfs needs a lower layer; an empty base is an empty directory.
                let empty = at.with_file_name("empty");
                fs::create_dir_all(&empty)
                    .map_err(|e| format!("creating {}: {e}", empty.display()))?;
                return mount_overlay(&[empty], upper, work, at);
            }
            mount_overlay(lowers, upper, work, at)
        }
    }
}

/// Mounts an overlay with `userxattr` (required inside a user namespace).
pub(crate) fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    at: &Path,
) -> Result<(), String> {
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\\']) {
            return Err(format!(
                "overlay layer path {s} contains ',', ':' or '\\' (not supported)"
            ));
        }
    }
    let lower = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={},userxattr",
        upper.display(),
        work.display()
    );
    if data.len() <= MAX_MOUNT_DATA {
        return mounts::mount(
            Some(Path::new("overlay")),
            at,
            Some("overlay"),
            0,
            Some(&data),
        );
    }
    sandbox::mount_overlay_fsconfig(lowers, upper, work, at)
}
