//! The sandbox process: PID 1 of the step's PID namespace. It gets its own mount namespace,
//! mounts `/proc`, a minimal `/dev`, read-only `/sys` and the planned mounts into the root,
//! pivots into it, switches to the step's user and execs the command.
//!
//! Setup errors are written to a close-on-exec pipe; an empty pipe at EOF means exec succeeded.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::mounts;
use super::spec::{DEFAULT_PATH, ExitStatus, RunSpec};
use super::user;

/// One mount the sandbox performs, with host paths already resolved inside the root.
#[derive(Debug)]
pub(crate) enum Planned {
    Proc(PathBuf),
    Dev(PathBuf),
    Sys(PathBuf),
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
    Tmpfs {
        target: PathBuf,
        size: Option<u64>,
    },
    /// An overlay of `lowers` mounted at `merged` (a private staging dir), then its
    /// `subpath` bound at `target`.
    LayersBind {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        merged: PathBuf,
        subpath: String,
        target: PathBuf,
        readonly: bool,
    },
}

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Forks the sandbox, waits for it and returns how the step's process ended.
pub(crate) fn spawn_and_wait(
    spec: &RunSpec,
    root: &Path,
    plan: &[Planned],
    setgroups: bool,
) -> Result<ExitStatus, String> {
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    // The sandbox checks through this pidfd that the helper did not die (an interrupted build
    // kills it) before its own death signal was armed.
    // SAFETY: pidfd_open of our own pid; the result is a new fd or -1.
    let helper_fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as i32;
    // SAFETY: single-threaded helper; the child may allocate.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno("fork of the sandbox process"));
    }
    if pid == 0 {
        drop(err_r);
        // SAFETY: constant prctl; poll of a pidfd we own.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if helper_fd >= 0 {
                let mut pfd = libc::pollfd {
                    fd: helper_fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                if libc::poll(&mut pfd, 1, 0) != 0 {
                    libc::_exit(127);
                }
                libc::close(helper_fd);
            }
        }
        let err = setup_and_exec(spec, root, plan, setgroups);
        let _ = File::from(err_w).write_all(err.as_bytes());
        // SAFETY: leave the forked child without running destructors.
        unsafe { libc::_exit(127) };
    }
    drop(err_w);
    if helper_fd >= 0 {
        // SAFETY: closing the pidfd opened above.
        unsafe { libc::close(helper_fd) };
    }
    let mut setup_err = String::new();
    let _ = File::from(err_r).read_to_string(&mut setup_err);
    let mut wstatus = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut wstatus, 0) };
        if rc == pid {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(errno("waiting for the sandbox"));
        }
    }
    if !setup_err.is_empty() {
        return Err(setup_err);
    }
    if libc::WIFSIGNALED(wstatus) {
        return Ok(ExitStatus::Signal(libc::WTERMSIG(wstatus)));
    }
    Ok(ExitStatus::Code(libc::WEXITSTATUS(wstatus)))
}

/// Returns only on failure, with the error text.
fn setup_and_exec(spec: &RunSpec, root: &Path, plan: &[Planned], setgroups: bool) -> String {
    match setup(spec, root, plan, setgroups) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn setup(spec: &RunSpec, root: &Path, plan: &[Planned], setgroups: bool) -> Result<Never, String> {
    // SAFETY: constant prctl/unshare arguments in a single-threaded process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(errno("creating the sandbox mount namespace"));
        }
        libc::umask(0o022);
    }
    mounts::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    for p in plan {
        perform(p)?;
    }
    pivot(root)?;
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let who = user::resolve(spec.user.as_deref(), &passwd, &group)?;
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    fs::create_dir_all(cwd).map_err(|e| format!("creating working directory {cwd}: {e}"))?;
    std::env::set_current_dir(cwd)
        .map_err(|e| format!("changing to working directory {cwd}: {e}"))?;
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", who.home));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let program = find_program(&spec.argv[0], &path_var)?;
    let c =
        |s: &str| CString::new(s).map_err(|_| format!("argument or variable {s:?} contains NUL"));
    let argv = spec
        .argv
        .iter()
        .map(|a| c(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let prog = CString::new(program.as_os_str().as_bytes()).map_err(|_| "NUL in program path")?;
    // SAFETY: credential syscalls and execve with NUL-terminated arrays that outlive the call.
    unsafe {
        if setgroups && libc::setgroups(who.groups.len(), who.groups.as_ptr()) != 0 {
            return Err(errno(&format!(
                "setting supplementary groups {:?}",
                who.groups
            )));
        }
        if libc::setresgid(who.gid, who.gid, who.gid) != 0 {
            return Err(errno(&format!(
                "switching to gid {} (is it mapped?)",
                who.gid
            )));
        }
        if libc::setresuid(who.uid, who.uid, who.uid) != 0 {
            return Err(errno(&format!(
                "switching to uid {} (is it mapped?)",
                who.uid
            )));
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        reset_signals();
        libc::execve(prog.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr());
    }
    Err(errno(&format!("executing {}", spec.argv[0])))
}

/// The Rust runtime of the helper ignores SIGPIPE, and ignored signals survive exec: give the
/// step default dispositions and an empty signal mask, as a container runtime does.
unsafe fn reset_signals() {
    // SAFETY: plain signal(2)/sigprocmask(2) calls with valid arguments.
    unsafe {
        // The raw syscall also reaches 32 and 33, which glibc's wrappers refuse to touch.
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: u64,
            restorer: usize,
            mask: u64,
        }
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn find_program(name: &str, path_var: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if let Ok(meta) = fs::metadata(&candidate)
            && meta.is_file()
        {
            return Ok(candidate);
        }
    }
    Err(format!(
        "executable file {name:?} not found in $PATH ({path_var})"
    ))
}

fn perform(p: &Planned) -> Result<(), String> {
    match p {
        Planned::Proc(t) => mounts::mount(
            Some(Path::new("proc")),
            t,
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        ),
        Planned::Dev(t) => mount_dev(t),
        Planned::Sys(t) => mounts::bind(Path::new("/sys"), t, true),
        Planned::Bind {
            source,
            target,
            readonly,
        } => mounts::bind(source, target, *readonly),
        Planned::Overlay {
            lower,
            upper,
            work,
            target,
        } => super::helper::mount_overlay(std::slice::from_ref(lower), upper, work, target),
        Planned::LayersBind {
            lowers,
            upper,
            work,
            merged,
            subpath,
            target,
            readonly,
        } => {
            super::helper::mount_overlay(lowers, upper, work, merged)?;
            let source = mounts::secure_join(merged, subpath)?;
            mounts::bind(&source, target, *readonly)
        }
        Planned::Tmpfs { target, size } => {
            let data = size.map(|s| format!("size={s}"));
            mounts::mount(
                Some(Path::new("tmpfs")),
                target,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_deref(),
            )
        }
    }
}

/// A tmpfs `/dev` with the host's harmless character devices bound in, a private devpts and
/// a shm tmpfs, as runc sets it up for rootless containers.
fn mount_dev(dev: &Path) -> Result<(), String> {
    mounts::mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let node = dev.join(name);
        File::create(&node).map_err(|e| io("creating", &node, e))?;
        mounts::bind(&host, &node, false)?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).map_err(|e| io("creating", &pts, e))?;
    mounts::mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).map_err(|e| io("creating", &shm, e))?;
    mounts::mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let l = dev.join(link);
        symlink(to, &l).map_err(|e| io("creating symlink", &l, e))?;
    }
    Ok(())
}

fn pivot(root: &Path) -> Result<(), String> {
    std::env::set_current_dir(root).map_err(|e| format!("entering {}: {e}", root.display()))?;
    let dot = c".";
    // SAFETY: pivot_root(".", ".") stacks the old root under the new one; then we detach it.
    unsafe {
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0 {
            return Err(errno(&format!("pivot_root into {}", root.display())));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(errno("detaching the old root"));
        }
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// Brings `lo` up in a fresh network namespace.
pub(crate) fn loopback_up() -> Result<(), String> {
    // SAFETY: a socket and two SIOC*IFFLAGS ioctls on a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno("socket for bringing lo up"));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = (rc != 0).then(|| errno("bringing lo up"));
        libc::close(fd);
        err.map_or(Ok(()), Err)
    }
}

/// Overlay mount through the new mount API, appending lowers one by one (`lowerdir+`), for
/// layer chains whose option string exceeds one page.
pub(crate) fn mount_overlay_fsconfig(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    at: &Path,
) -> Result<(), String> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let ctx = |what: &str, e: rustix::io::Errno| {
        format!("overlay mount on {} ({what}): {e}", at.display())
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| ctx("fsopen", e))?;
    for l in lowers {
        fsconfig_set_string(&fs, "lowerdir+", l.as_path()).map_err(|e| ctx("lowerdir+", e))?;
    }
    fsconfig_set_string(&fs, "upperdir", upper).map_err(|e| ctx("upperdir", e))?;
    fsconfig_set_string(&fs, "workdir", work).map_err(|e| ctx("workdir", e))?;
    fsconfig_set_flag(&fs, "userxattr").map_err(|e| ctx("userxattr", e))?;
    fsconfig_create(&fs).map_err(|e| ctx("create", e))?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| ctx("fsmount", e))?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        at,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| ctx("move_mount", e))
}
