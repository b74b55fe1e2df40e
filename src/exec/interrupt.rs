//! Ctrl-C and `kill` for a whole build: SIGINT/SIGTERM mark the process interrupted and kill
//! every running sandbox helper at once, so each RUN's processes die with it (the helper's
//! death takes the step's PID namespace down through `PR_SET_PDEATHSIG`, and its mount
//! namespace, with the step's overlay, goes with its last process). The build then unwinds
//! normally: half-written snapshots and temp dirs are removed by their owners, store locks are
//! released, and the CLI exits with 128 + the signal number.
//!
//! Cleanup jobs (emptying a snapshot dir) still run after an interrupt; every other helper job
//! is refused with [`Error::Cancelled`](super::Error::Cancelled).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The signal that interrupted this process, 0 while none did.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Write end of the self-pipe the signal handler reports through (-1 before installation).
static PIPE_W: AtomicI32 = AtomicI32::new(-1);
/// Running helpers that an interrupt must kill (cleanup helpers are not listed).
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// How long an interrupted build may take to clean up before the process exits anyway (a
/// step blocked somewhere no cancellation reaches, such as a registry download).
const GRACE: Duration = Duration::from_secs(10);

/// The signal (SIGINT, SIGTERM) that interrupted this process, if one did.
pub fn interrupted() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Marks the process interrupted by `signal` and kills every running sandbox helper. Later
/// helper jobs other than cleanup fail with [`Error::Cancelled`](super::Error::Cancelled).
pub fn interrupt(signal: i32) {
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for &pid in live.iter() {
        // SAFETY: kill(2) of our own child; it is listed only until just before it is reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Lists a just-started helper so an interrupt kills it; kills it at once when the interrupt
/// came first.
pub(super) fn register(pid: i32) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.push(pid);
    if interrupted().is_some() {
        // SAFETY: kill(2) of our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Removes a helper from the list; called before it is reaped so its pid cannot be reused
/// while listed.
pub(super) fn unregister(pid: i32) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = PIPE_W.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe only loses a duplicate report.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Catches SIGINT and SIGTERM for the rest of the process's life: the first one calls
/// [`interrupt`] and gives the build [`GRACE`] to clean up before the process exits with
/// 128 + signal; a second one exits at once (after killing the helpers again). Call once, from
/// the CLI, before a build starts; later calls do nothing.
pub fn catch_interrupts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok((r, w)) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) else {
            tracing::warn!("cannot create a pipe for signal handling: Ctrl-C kills the build");
            return;
        };
        PIPE_W.store(std::os::fd::IntoRawFd::into_raw_fd(w), Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("rbuild-signals".into())
            .spawn(move || watch(std::fs::File::from(r)));
        if spawned.is_err() {
            tracing::warn!("cannot start the signal thread: Ctrl-C kills the build");
            return;
        }
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: installs a handler that only calls write(2); the zeroed struct is a
            // valid sigaction with an empty mask.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
    });
}

fn watch(mut pipe: std::fs::File) {
    use std::io::Read;
    let mut byte = [0u8; 1];
    if pipe.read_exact(&mut byte).is_err() {
        return;
    }
    let signal = i32::from(byte[0]);
    tracing::debug!(signal, "interrupted: stopping every sandbox");
    interrupt(signal);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let again = pipe.read_exact(&mut byte).is_ok();
        let _ = tx.send(again);
    });
    match rx.recv_timeout(GRACE) {
        Ok(true) => interrupt(signal),
        _ => eprintln!(
            "rbuild: the interrupted build did not stop within {}s; exiting",
            GRACE.as_secs()
        ),
    }
    std::process::exit(128 + signal);
}
