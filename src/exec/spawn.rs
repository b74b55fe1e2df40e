//! The parent side of the sandbox helper: re-executes rbuild with a hidden marker, sends the job
//! as JSON on stdin, streams stdout/stderr back line by line, and reads the verdict from fd 3.
//!
//! A user namespace cannot be created by a multi-threaded process (the build runs tokio), so
//! every namespace operation happens in that fresh single-threaded helper process.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use serde::{Deserialize, Serialize};

use super::Error;
use super::spec::{ExitStatus, RunSpec, Stream};
use super::userns::IdMapping;

/// argv[1] that turns the rbuild binary into the sandbox helper.
pub(crate) const HELPER_MARKER: &str = "__rbuild-sandbox-helper";
/// Fd on which the helper reports its [`Response`].
pub(crate) const STATUS_FD: i32 = 3;
/// Fd carrying an optional data file (layer blob in, layer out).
pub(crate) const DATA_FD: i32 = 4;
/// Longest chunk handed to the output callback when a line has no end.
const MAX_LINE: usize = 64 * 1024;

static HELPER_PATH: OnceLock<PathBuf> = OnceLock::new();

/// Sets the program re-executed as the sandbox helper. Defaults to `RBUILD_HELPER` from the
/// environment, else `/proc/self/exe`; test binaries point it at the built `rbuild`.
pub fn set_helper_program(path: PathBuf) {
    let _ = HELPER_PATH.set(path);
}

fn helper_program() -> PathBuf {
    if let Some(p) = HELPER_PATH.get() {
        return p.clone();
    }
    std::env::var_os("RBUILD_HELPER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// Everything the helper needs, sent as one JSON document.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub idmap: IdMapping,
    pub job: Job,
    /// Whether fd 4 carries the job's data file.
    pub has_data: bool,
}

/// What the helper does once inside the user namespace.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Job {
    /// Run a step; `scratch` is a private dir for the merged root, etc files and a tmpfs.
    /// `after` runs in the same helper once the step exited with 0 (the step's diff, so a
    /// RUN costs one helper and one user namespace, not two).
    Run {
        spec: Box<RunSpec>,
        scratch: PathBuf,
        after: Option<crate::snapshot::NsJob>,
    },
    /// A snapshot operation that must see container ids (unpack, diff, remove).
    Snapshot(crate::snapshot::NsJob),
}

/// The helper's verdict.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    /// The step's process ended.
    Exited(Ran),
    /// A snapshot job finished with this JSON result.
    Done(serde_json::Value),
    /// Something failed before or around the step; the text names the operation and path.
    Failed(String),
}

/// How a step ended, and what its `after` job returned.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ran {
    pub status: ExitStatus,
    /// `CLOCK_MONOTONIC` when the helper saw the step's process end (see [`monotonic_ns`]).
    pub exited_ns: u64,
    /// The `after` job's JSON result, when it ran.
    pub after: Option<serde_json::Value>,
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for the helper and the build process, so the
/// build can time what happened after the step's process ended.
pub(crate) fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Stops a running sandbox: every process in it is killed and its mounts go with its namespace.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    pid: Mutex<Option<i32>>,
}

impl CancelHandle {
    /// A handle not cancelled yet.
    pub fn new() -> CancelHandle {
        CancelHandle::default()
    }

    /// Kills the sandbox (if running) and makes the run return [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let pid = self.inner.pid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = *pid {
            // The helper's death takes the sandbox with it (PDEATHSIG + PID namespace).
            // SAFETY: plain kill(2) of our own live child; the lock keeps the pid from being reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }
}

/// Runs `job` in a new helper and returns its verdict, streaming its output to `on_output`.
pub(crate) fn call(
    job: Job,
    data: Option<OwnedFd>,
    cancel: Option<&CancelHandle>,
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Response, Error> {
    // Emptying a snapshot dir is how an interrupted build cleans up, so it still runs then.
    let cleanup = matches!(job, Job::Snapshot(crate::snapshot::NsJob::Empty { .. }));
    if !cleanup && super::interrupt::interrupted().is_some() {
        return Err(Error::Cancelled);
    }
    let request = Request {
        idmap: IdMapping::current(),
        job,
        has_data: data.is_some(),
    };
    let payload = serde_json::to_vec(&request).map_err(|e| Error::Protocol(e.to_string()))?;
    let (status_r, status_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::Spawn(std::io::Error::from(e)))?;
    let program = helper_program();
    let mut cmd = Command::new(&program);
    cmd.arg(HELPER_MARKER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let status_raw = status_w.as_raw_fd();
    let data_raw = data.as_ref().map(|d| d.as_raw_fd());
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut data_raw = data_raw;
            if data_raw == Some(STATUS_FD) {
                let moved = libc::fcntl(STATUS_FD, libc::F_DUPFD_CLOEXEC, 10);
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                data_raw = Some(moved);
            }
            // dup2 onto itself keeps FD_CLOEXEC, so an fd already in place needs it cleared.
            let place = |from: i32, to: i32| {
                let rc = if from == to {
                    libc::fcntl(to, libc::F_SETFD, 0)
                } else {
                    libc::dup2(from, to)
                };
                if rc < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            place(status_raw, STATUS_FD)?;
            if let Some(d) = data_raw {
                place(d, DATA_FD)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::Helper {
        program: program.clone(),
        source: e,
    })?;
    drop(status_w);
    drop(data);
    let pid = child.id() as i32;
    if !cleanup {
        super::interrupt::register(pid);
    }
    if let Some(c) = cancel {
        *c.inner.pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(child.id() as i32);
        if c.is_cancelled() {
            c.cancel();
        }
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A helper that died early closes its stdin; its verdict explains why.
    let _ = stdin.write_all(&payload);
    drop(stdin);

    let (tx, rx) = mpsc::channel::<(Stream, Vec<u8>)>();
    let readers = [
        (
            Stream::Stdout,
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
        ),
        (
            Stream::Stderr,
            Box::new(child.stderr.take().expect("piped")),
        ),
    ]
    .into_iter()
    .map(|(stream, pipe)| {
        let tx = tx.clone();
        std::thread::spawn(move || forward_lines(stream, pipe, tx))
    })
    .collect::<Vec<_>>();
    drop(tx);
    for (stream, chunk) in rx {
        on_output(stream, &chunk);
    }
    for r in readers {
        let _ = r.join();
    }
    // Unlisted before reaping, so no kill can hit a reused pid.
    if !cleanup {
        super::interrupt::unregister(pid);
    }
    if let Some(c) = cancel {
        *c.inner.pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    let wait = child.wait();
    let wait = wait.map_err(|e| Error::Helper { program, source: e })?;
    let mut text = Vec::new();
    File::from(status_r)
        .read_to_end(&mut text)
        .map_err(|e| Error::Protocol(format!("reading the helper's status pipe: {e}")))?;
    let interrupted = !cleanup && super::interrupt::interrupted().is_some();
    if interrupted || cancel.is_some_and(CancelHandle::is_cancelled) {
        return Err(Error::Cancelled);
    }
    if text.is_empty() {
        return Err(Error::Protocol(format!(
            "the sandbox helper ended ({wait}) without reporting a result"
        )));
    }
    serde_json::from_slice(&text)
        .map_err(|e| Error::Protocol(format!("undecodable helper result: {e}")))
}

fn forward_lines(stream: Stream, pipe: Box<dyn Read + Send>, tx: mpsc::Sender<(Stream, Vec<u8>)>) {
    let mut reader = BufReader::with_capacity(MAX_LINE, pipe);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send((stream, line)).is_err() {
                    return;
                }
            }
        }
    }
}
