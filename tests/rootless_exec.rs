//! The rootless executor and snapshots against a real busybox root filesystem.
//!
//! `scripts/test` runs this file twice: as root and as the unprivileged `rbuild-test` user
//! (which has `/etc/subuid` ranges). The root filesystem is assembled from the host's
//! `busybox-static` in a temp dir, so no image or registry is involved.

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use rbuild::exec::{
    CacheInit, CacheMounts, CancelHandle, ExitStatus, MountSpec, Network, RootSpec, RunSpec,
    Sharing, Stream, run, run_cancellable,
};

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| rbuild::exec::set_helper_program(env!("CARGO_BIN_EXE_rbuild").into()));
}

/// A busybox root: `/bin/busybox`, a symlink per applet, `/etc/passwd`, `/etc/group`, `/tmp`.
fn busybox_root(dir: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is installed");
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", dir.join("bin").join(applet));
        }
    }
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwheel:x:10:root\napp:x:1000:\n",
    )
    .unwrap();
    fs::create_dir_all(dir.join("root")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
}

/// Gives `path` (recursively) to the sandbox's root user: a no-op for ordinary users, who are
/// root in their sandboxes; host root's sandboxes run as a high mapped id instead.
fn hand_to_sandbox_root(path: &Path) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let map = rbuild::exec::IdMapping::current();
    let owner = format!("{}:{}", map.host_uid(0).unwrap(), map.host_gid(0).unwrap());
    let st = Command::new("chown")
        .arg("-hR")
        .arg(owner)
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

fn sandbox_dir(path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    hand_to_sandbox_root(path);
    path.to_path_buf()
}

struct Sandbox {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
}

fn sandbox() -> Sandbox {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_root(&rootfs);
    hand_to_sandbox_root(&rootfs);
    Sandbox { _dir: dir, rootfs }
}

fn sh(root: RootSpec, script: &str) -> RunSpec {
    let mut spec = RunSpec::new(root, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    spec.env.push("PATH=/bin".into());
    spec
}

/// Runs `spec`, returning (status, stdout, stderr).
fn exec(spec: &RunSpec) -> (ExitStatus, String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    let status = run(spec, &mut |stream, line| {
        let text = String::from_utf8_lossy(line);
        match stream {
            Stream::Stdout => out.push_str(&text),
            Stream::Stderr => err.push_str(&text),
        }
    })
    .unwrap_or_else(|e| panic!("run failed: {e}"));
    (status, out, err)
}

fn ok(spec: &RunSpec) -> String {
    let (status, out, err) = exec(spec);
    assert!(status.success(), "{status}; stdout: {out}; stderr: {err}");
    out
}

fn ranges_available() -> bool {
    let me = rustix::process::geteuid();
    if me.is_root() {
        return true;
    }
    rbuild::exec::IdMapping::current().writer == rbuild::exec::MapWriter::NewIdMap
}

#[test]
fn echo_output_is_captured_line_by_line() {
    let sb = sandbox();
    let mut lines = Vec::new();
    let spec = sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "echo hi; echo err >&2; echo two",
    );
    let status = run(&spec, &mut |s, l| {
        lines.push((s, String::from_utf8_lossy(l).into_owned()))
    })
    .unwrap();
    assert!(status.success());
    let out: Vec<_> = lines
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(out, ["hi\n", "two\n"]);
    assert!(lines.contains(&(Stream::Stderr, "err\n".into())));
}

#[test]
fn exit_code_and_signal_are_propagated() {
    let sb = sandbox();
    let (status, _, _) = exec(&sh(RootSpec::Dir(sb.rootfs.clone()), "exit 7"));
    assert_eq!(status, ExitStatus::Code(7));
    // PID 1 ignores signals sent from inside its namespace, so a child reports the signal.
    let (status, _, _) = exec(&sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "sh -c 'kill -9 $$'; exit $?",
    ));
    assert_eq!(status, ExitStatus::Code(137));
    let missing = RunSpec::new(RootSpec::Dir(sb.rootfs.clone()), vec!["nope".into()]);
    let err = run(&missing, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("\"nope\" not found"), "{err}");
}

#[test]
fn user_root_and_numeric_user() {
    let sb = sandbox();
    let root = RootSpec::Dir(sb.rootfs.clone());
    assert_eq!(
        ok(&sh(root.clone(), "id -u; id -g; echo $HOME")),
        "0\n0\n/root\n"
    );
    if !ranges_available() {
        eprintln!("no subordinate ids: skipping USER 1000:1000");
        return;
    }
    let mut spec = sh(root.clone(), "id -u; id -g");
    spec.user = Some("1000:1000".into());
    assert_eq!(ok(&spec), "1000\n1000\n");
    let mut spec = sh(root, "id -un; id -G; echo $HOME");
    spec.user = Some("app".into());
    assert_eq!(ok(&spec), "app\n1000\n/home/app\n");
}

#[test]
fn chown_to_any_id_works_with_subordinate_ranges() {
    if !ranges_available() {
        eprintln!("no subordinate ids for this user: skipping");
        return;
    }
    let sb = sandbox();
    let out = ok(&sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "touch /tmp/f && chown 1234:4321 /tmp/f && stat -c '%u %g' /tmp/f",
    ));
    assert_eq!(out, "1234 4321\n");
    // Seen from the host, the file belongs to a mapped (never the real root) id.
    let meta = fs::metadata(sb.rootfs.join("tmp/f")).unwrap();
    assert_ne!(meta.uid(), 1234);
    assert_ne!(meta.uid(), 0);
}

#[test]
fn proc_is_the_sandbox_pid_namespace() {
    let sb = sandbox();
    let out = ok(&sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "echo $$; ls /proc | grep -c '^[0-9]'",
    ));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"));
    let pids: u32 = lines.next().unwrap().parse().unwrap();
    assert!(pids <= 5, "sandbox sees {pids} processes");
}

#[test]
fn etc_files_and_hostname_are_provided_and_not_left_behind() {
    let sb = sandbox();
    let mut spec = sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "cat /etc/hosts; hostname; cat /etc/hostname; test -e /etc/resolv.conf && echo resolv; \
         test -c /dev/null && echo devnull; echo '10.1.2.3 extra' >> /etc/hosts && \
         grep -c extra /etc/hosts; touch /sys/rbuild-probe 2>/dev/null || echo sys-ro",
    );
    spec.hostname = "stepbox".into();
    let out = ok(&spec);
    assert!(out.contains("127.0.0.1\tlocalhost stepbox"), "{out}");
    assert!(
        out.contains("stepbox\nstepbox\nresolv\ndevnull\n1\nsys-ro\n"),
        "{out}"
    );
    for stub in [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "proc",
        "dev",
        "sys",
    ] {
        assert!(!sb.rootfs.join(stub).exists(), "{stub} left in the root");
    }
}

#[test]
fn network_none_has_only_loopback() {
    let sb = sandbox();
    let mut spec = sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip link show lo | grep -c UP",
    );
    spec.network = Network::None;
    assert_eq!(ok(&spec), "lo\n1\n");
}

#[test]
fn secret_mount_is_readable_and_never_in_the_layer() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let (upper, work) = (
        sandbox_dir(&dir.path().join("upper")),
        sandbox_dir(&dir.path().join("work")),
    );
    let root = RootSpec::Overlay {
        lowers: vec![sb.rootfs.clone()],
        upper: upper.clone(),
        work,
    };
    let mut spec = sh(
        root,
        "cat /run/secrets/token; stat -c '%a' /run/secrets/token; echo made > /made",
    );
    spec.mounts.push(MountSpec::Secret {
        data: b"s3cr3t\n".to_vec(),
        target: "/run/secrets/token".into(),
        uid: 0,
        gid: 0,
        mode: 0o400,
    });
    assert_eq!(ok(&spec), "s3cr3t\n400\n");
    assert!(upper.join("made").exists());
    assert!(
        !upper.join("run").exists(),
        "secret mount point left in the upper dir"
    );
    assert!(!upper.join("etc/hosts").exists());
}

#[test]
fn cache_mount_persists_across_runs() {
    let sb = sandbox();
    let store = tempfile::tempdir().unwrap();
    let caches = CacheMounts::new(store.path());
    let init = CacheInit {
        uid: 0,
        gid: 0,
        mode: 0o755,
    };
    let lease = caches.acquire("apt-cache", Sharing::Locked).unwrap();
    let mut spec = sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "echo kept > /var/cache/x/f",
    );
    spec.mounts.push(lease.mount("/var/cache/x", init, false));
    ok(&spec);
    drop(lease);
    let lease = caches.acquire("apt-cache", Sharing::Locked).unwrap();
    assert!(!lease.is_fresh());
    let mut spec = sh(RootSpec::Dir(sb.rootfs.clone()), "cat /var/cache/x/f");
    spec.mounts.push(lease.mount("/var/cache/x", init, false));
    assert_eq!(ok(&spec), "kept\n");
    assert!(!sb.rootfs.join("var/cache/x").exists());
}

#[test]
fn bind_mounts_are_read_only_or_discard_writes() {
    let sb = sandbox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("in.txt"), "context\n").unwrap();
    fs::set_permissions(
        ctx.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut spec = sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "cat /ro/in.txt; touch /ro/x 2>/dev/null || echo ro; echo w > /rw/new; cat /rw/new; \
         mount | grep -c ' /tmpfs type tmpfs'",
    );
    spec.mounts.push(MountSpec::Bind {
        source: ctx.path().into(),
        target: "/ro".into(),
        writable: false,
    });
    spec.mounts.push(MountSpec::Bind {
        source: ctx.path().into(),
        target: "/rw".into(),
        writable: true,
    });
    spec.mounts.push(MountSpec::Tmpfs {
        target: "/tmpfs".into(),
        size: Some(1 << 20),
    });
    assert_eq!(ok(&spec), "context\nro\nw\n1\n");
    assert!(
        !ctx.path().join("new").exists(),
        "rw bind mount wrote to the host"
    );
}

fn processes_with_arg(arg: &str) -> usize {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(arg))
        .count()
}

#[test]
fn cancelled_run_leaves_no_processes_behind() {
    let sb = sandbox();
    let marker = format!("{}", 400_000 + std::process::id() % 100_000);
    let spec = sh(
        RootSpec::Dir(sb.rootfs.clone()),
        &format!("sleep {marker} & sleep {marker}"),
    );
    let cancel = CancelHandle::new();
    let c2 = cancel.clone();
    let t = std::thread::spawn(move || run_cancellable(&spec, &c2, &mut |_, _| {}));
    let start = Instant::now();
    while processes_with_arg(&marker) < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(processes_with_arg(&marker) >= 2, "sleepers never started");
    cancel.cancel();
    let result = t.join().unwrap();
    assert!(
        matches!(result, Err(rbuild::exec::Error::Cancelled)),
        "{result:?}"
    );
    let start = Instant::now();
    while processes_with_arg(&marker) > 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processes_with_arg(&marker),
        0,
        "sandbox processes survived cancel"
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("rbuild-run-"),
        "a sandbox mount leaked into the host"
    );
}

#[test]
fn startup_time_of_true_is_noted() {
    let sb = sandbox();
    let spec = RunSpec::new(RootSpec::Dir(sb.rootfs.clone()), vec!["/bin/true".into()]);
    ok(&spec);
    let start = Instant::now();
    for _ in 0..5 {
        ok(&spec);
    }
    eprintln!(
        "sandbox start-up of `true`: {:?} per run",
        start.elapsed() / 5
    );
}

/// Writes `tree` as an uncompressed layer file and returns (diff_id, path).
fn layer_from_tree(tree: &Path, out: &Path) -> rbuild::image::Digest {
    use rbuild::layer::{Compression, EntryOptions, LayerWriter, write_dir_tree};
    let file = fs::File::create(out).unwrap();
    let mut w = LayerWriter::new(file, Compression::Gzip { level: 1 }).unwrap();
    write_dir_tree(
        &mut w,
        tree,
        Path::new(""),
        &EntryOptions {
            uid: Some(0),
            gid: Some(0),
            ..EntryOptions::default()
        },
    )
    .unwrap();
    w.finish().unwrap().diff_id
}

/// (name, uid, kind) of every entry of an uncompressed layer tar.
fn tar_entries(path: &Path) -> Vec<(String, u64, tar::EntryType)> {
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.uid().unwrap(),
                h.entry_type(),
            )
        })
        .collect()
}

fn run_in(root: RootSpec, script: &str) -> String {
    ok(&sh(root, script))
}

#[test]
fn overlay_diff_has_whiteouts_opaque_dirs_and_container_ids() {
    setup();
    let work = tempfile::tempdir().unwrap();
    let snaps = rbuild::snapshot::Snapshotter::new(&work.path().join("store")).unwrap();
    assert_eq!(
        snaps.backend(),
        rbuild::snapshot::Backend::Overlay,
        "overlayfs works on this kernel"
    );
    diff_round_trip(rbuild::snapshot::Backend::Overlay);
}

#[test]
fn copy_snapshots_give_the_same_layer_semantics() {
    diff_round_trip(rbuild::snapshot::Backend::Copy);
}

fn diff_round_trip(backend: rbuild::snapshot::Backend) {
    use rbuild::layer::Compression;
    use rbuild::snapshot::{Backend, Snapshotter};
    setup();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    busybox_root(&base);
    fs::create_dir_all(base.join("data")).unwrap();
    for f in ["keep", "modify", "delete"] {
        fs::write(base.join("data").join(f), f).unwrap();
    }
    fs::create_dir_all(base.join("olddir")).unwrap();
    fs::write(base.join("olddir/a"), "a").unwrap();
    let base_blob = work.path().join("base.tar.gz");
    let base_id = layer_from_tree(&base, &base_blob);

    let snaps = Snapshotter::with_backend(&work.path().join("store"), backend).unwrap();
    let dir = snaps.unpack_layer(&base_id, &base_blob).unwrap();
    assert!(snaps.has_layer(&base_id));
    assert_eq!(
        snaps.unpack_layer(&base_id, &base_blob).unwrap(),
        dir,
        "unpacked once"
    );

    let active = snaps.prepare(std::slice::from_ref(&base_id)).unwrap();
    let chown = if ranges_available() {
        "chown 1234:1234 /data/new"
    } else {
        "true"
    };
    let mut spec = sh(
        active.root(),
        &format!(
            "echo new > /data/new && {chown} && echo more >> /data/modify && rm /data/delete && \
             rm -rf /olddir && mkdir /olddir && echo c > /olddir/c && cat /run/secrets/s"
        ),
    );
    spec.mounts.push(MountSpec::Secret {
        data: b"hidden".to_vec(),
        target: "/run/secrets/s".into(),
        uid: 0,
        gid: 0,
        mode: 0o400,
    });
    assert_eq!(ok(&spec), "hidden");

    let diff_path = work.path().join("diff.tar");
    let out = fs::File::create(&diff_path).unwrap();
    let summary = snaps
        .diff(&active, Compression::Uncompressed, None, out)
        .unwrap();
    let bytes = fs::read(&diff_path).unwrap();
    assert_eq!(rbuild::image::Digest::of(&bytes), summary.diff_id);
    let entries = tar_entries(&diff_path);
    let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    let replaced = if backend == Backend::Overlay {
        "olddir/.wh..wh..opq"
    } else {
        "olddir/.wh.a"
    };
    for expected in [
        "data/",
        "data/.wh.delete",
        "data/modify",
        "data/new",
        "olddir/",
        replaced,
        "olddir/c",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for absent in [
        "data/keep",
        "olddir/a",
        "etc/hosts",
        "proc/",
        "run/",
        "run/secrets/s",
    ] {
        assert!(
            !names.contains(&absent),
            "{absent} must not be in {names:?}"
        );
    }
    if ranges_available() {
        let new = entries.iter().find(|(n, _, _)| n == "data/new").unwrap();
        assert_eq!(new.1, 1234, "layer must carry the container uid");
    }

    // The diff unpacked as a layer of its own stacks with overlay whiteouts.
    let gz = work.path().join("diff-copy.tar");
    fs::copy(&diff_path, &gz).unwrap();
    snaps.unpack_layer(&summary.diff_id, &gz).unwrap();
    let top = snaps
        .prepare(&[base_id.clone(), summary.diff_id.clone()])
        .unwrap();
    assert_eq!(
        run_in(top.root(), "ls /data; ls /olddir"),
        "keep\nmodify\nnew\nc\n"
    );
    snaps.remove(top).unwrap();

    // Committing the upper dir gives the same view without unpacking.
    snaps.remove_layer(&summary.diff_id).unwrap();
    assert!(!snaps.has_layer(&summary.diff_id));
    snaps.commit(active, &summary.diff_id).unwrap();
    let top = snaps
        .prepare(&[base_id.clone(), summary.diff_id.clone()])
        .unwrap();
    assert_eq!(
        run_in(top.root(), "cat /data/modify; ls /olddir"),
        "modifymore\nc\n"
    );
    snaps.remove(top).unwrap();
    assert_eq!(
        fs::read_dir(work.path().join("store/snapshots/active"))
            .unwrap()
            .count(),
        0
    );
}

/// Layer production for a RUN writing 20,000 small files and one 200 MB file. Timing is
/// printed, not asserted: `cargo test --release --test rootless_exec -- --ignored --nocapture`.
#[test]
#[ignore = "slow performance note"]
fn perf_run_and_diff_of_20000_files_and_200mb() {
    use rbuild::layer::Compression;
    use rbuild::snapshot::Snapshotter;
    setup();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    busybox_root(&base);
    let blob = work.path().join("base.tar.gz");
    let base_id = layer_from_tree(&base, &blob);
    let snaps = Snapshotter::new(&work.path().join("store")).unwrap();
    snaps.unpack_layer(&base_id, &blob).unwrap();
    let active = snaps.prepare(std::slice::from_ref(&base_id)).unwrap();
    let start = Instant::now();
    run_in(
        active.root(),
        "mkdir /many && cd /many && for d in $(seq 1 100); do mkdir $d; \
         for f in $(seq 1 200); do echo $d$f > $d/$f; done; done && \
         head -c 200000000 /dev/urandom > /big",
    );
    eprintln!("RUN writing 20,000 files + 200 MB: {:?}", start.elapsed());
    for compression in [
        Compression::Uncompressed,
        Compression::Zstd { level: 3 },
        Compression::Gzip { level: 6 },
    ] {
        let out = fs::File::create(work.path().join("diff")).unwrap();
        let start = Instant::now();
        let summary = snaps.diff(&active, compression, None, out).unwrap();
        eprintln!(
            "diff {compression}: {:?} ({} bytes uncompressed)",
            start.elapsed(),
            summary.uncompressed_size
        );
    }
    snaps.remove(active).unwrap();
}

#[test]
fn sandbox_root_is_never_host_root() {
    let sb = sandbox();
    let out = ok(&sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "cat /proc/self/uid_map",
    ));
    let first: Vec<u64> = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(first[0], 0);
    assert_ne!(first[1], 0, "container root mapped to host root: {out}");
    if !rustix::process::geteuid().is_root() {
        assert_eq!(first[1], u64::from(rustix::process::geteuid().as_raw()));
    }
}

#[test]
fn ssh_agent_socket_is_bound_into_the_sandbox() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    hand_to_sandbox_root(dir.path());
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut spec = sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "test -S /run/buildkit/ssh_agent.0 && echo socket",
    );
    spec.mounts.push(MountSpec::Ssh {
        socket: sock,
        target: "/run/buildkit/ssh_agent.0".into(),
    });
    assert_eq!(ok(&spec), "socket\n");
    drop(listener);
    assert!(!sb.rootfs.join("run").exists());
}

#[test]
fn step_starts_with_default_signal_dispositions() {
    let sb = sandbox();
    let out = ok(&sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -n 1",
    ));
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\ny\n"
    );
}

#[test]
fn step_inherits_only_stdio() {
    // busybox ash keeps fds 10 and 251 for itself; the helper's status (3) and data (4)
    // descriptors must not reach the step.
    let sb = sandbox();
    let out = ok(&sh(
        RootSpec::Dir(sb.rootfs.clone()),
        "{ test -e /proc/$$/fd/3 || test -e /proc/$$/fd/4; } && echo leaked || echo clean",
    ));
    assert_eq!(out, "clean\n");
}

#[test]
fn stale_snapshots_of_dead_builds_are_pruned() {
    use rbuild::snapshot::{Backend, Snapshotter};
    setup();
    let work = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::with_backend(work.path(), Backend::Overlay).unwrap();
    let live = snaps.prepare(&[]).unwrap();
    // A dir named like one of ours, from a pid that cannot exist (above pid_max).
    let dead = work.path().join("snapshots/active/run-999999999-1-0");
    fs::create_dir_all(dead.join("upper/d")).unwrap();
    hand_to_sandbox_root(&dead);
    assert_eq!(snaps.prune_stale().unwrap(), 1);
    assert!(!dead.exists());
    assert!(live.upper().exists(), "a live build's snapshot must stay");
    snaps.remove(live).unwrap();
}

/// A build context holding a busybox root under `rootfs/` and `dockerfile`.
fn busybox_context(dockerfile: &str) -> tempfile::TempDir {
    setup();
    let ctx = tempfile::tempdir().unwrap();
    busybox_root(&ctx.path().join("rootfs"));
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// `rbuild build` of `ctx` on the store `root`, with its own `TMPDIR` (checked for leftovers).
fn rbuild_build(root: &Path, tmp: &Path, ctx: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root")
        .arg(root)
        .args(["build", "--progress=rawjson"])
        .arg(ctx)
        .env("TMPDIR", tmp)
        .stdin(std::process::Stdio::null());
    cmd
}

/// Names left in `dir` (empty when it does not exist).
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes (any user's, as far as /proc lets us read) that still see a mount under `path`.
fn mounts_under(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let text = fs::read_to_string(e.path().join("mountinfo")).ok()?;
            text.lines()
                .find(|l| l.contains(&needle))
                .map(|l| format!("pid {}: {l}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Starts a build whose RUN writes files and then sleeps, sends `signal` once the RUN printed
/// its marker, and checks the build stops at once, cleanly, with 128 + signal, and that the
/// next build on the same root works.
fn interrupted_build_cleans_up(signal: i32) {
    let marker = format!(
        "{}",
        500_000 + signal * 1000 + (std::process::id() % 1000) as i32
    );
    let ctx = busybox_context(&format!(
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n\
         RUN mkdir -p /data && for i in 1 2 3 4 5 6 7 8 9; do echo $i > /data/f$i; done \
         && head -c 3000000 /dev/urandom > /data/big && echo started-{marker} \
         && sleep {marker} & sleep {marker}\n"
    ));
    let root = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = rbuild_build(root.path(), tmp.path(), ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = format!("started-{marker}");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(&wanted) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let started = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    let start = Instant::now();
    while processes_with_arg(&marker) < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(8) {
            let _ = child.kill();
            panic!("rbuild did not stop within 8 s of signal {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = reader.join().unwrap();
    assert!(started, "the RUN step never started:\n{output}");
    assert_eq!(status.code(), Some(128 + signal), "{status}:\n{output}");
    eprintln!("signal {signal}: rbuild exited after {:?}", sent.elapsed());
    let start = Instant::now();
    while processes_with_arg(&marker) > 0 && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_with_arg(&marker), 0, "sandbox processes survived");
    assert_eq!(mounts_under(root.path()), Vec::<String>::new());
    for sub in ["snapshots/active", "snapshots/tmp", "store/tmp"] {
        assert_eq!(
            leftovers(&root.path().join(sub)),
            Vec::<String>::new(),
            "{sub}"
        );
    }
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new(), "TMPDIR");
    let blobs = leftovers(&root.path().join("store/blobs/sha256"));
    assert!(
        blobs.iter().all(|b| !b.starts_with('.')),
        "half-written blobs: {blobs:?}"
    );

    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nRUN mkdir -p /data && echo again > /data/f1\n",
    )
    .unwrap();
    let out = rbuild_build(root.path(), tmp.path(), ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the build after the interrupted one failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigint_stops_the_build_and_cleans_up() {
    interrupted_build_cleans_up(libc::SIGINT);
}

#[test]
fn sigterm_stops_the_build_and_cleans_up() {
    interrupted_build_cleans_up(libc::SIGTERM);
}

/// Runs `rbuild build` to success, returning its stderr.
fn build_ok(root: &Path, tmp: &Path, ctx: &Path, extra: &[&str]) -> String {
    let out = rbuild_build(root, tmp, ctx).args(extra).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{err}");
    err
}

#[test]
fn rw_bind_mounts_discard_writes_for_context_stage_and_image() {
    let root = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let seed = busybox_context("FROM scratch\nCOPY rootfs/ /\n");
    build_ok(root.path(), tmp.path(), seed.path(), &["-t", "rwseed:1"]);
    let ctx = busybox_context(
        "FROM scratch AS src\nCOPY rootfs/ /\nENV PATH=/bin\nRUN mkdir /data && echo stage > /data/s\n\
         FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n\
         RUN --mount=type=bind,target=/ctx,rw echo x > /ctx/new && rm /ctx/hello.txt && ls /ctx/new \
         && ! test -e /ctx/hello.txt\n\
         RUN --mount=type=bind,target=/ctx test \"$(cat /ctx/hello.txt)\" = hello && ! test -e /ctx/new\n\
         RUN --mount=type=bind,from=src,source=/data,target=/st,rw echo y >> /st/s \
         && test \"$(cat /st/s)\" = \"$(printf 'stage\\ny')\"\n\
         RUN --mount=type=bind,from=src,source=/data,target=/st test \"$(cat /st/s)\" = stage\n\
         RUN --mount=type=bind,from=rwseed:1,source=/etc,target=/im,rw echo z > /im/passwd \
         && test \"$(cat /im/passwd)\" = z && touch /im/extra\n\
         RUN --mount=type=bind,from=rwseed:1,source=/etc,target=/im grep -q root /im/passwd \
         && ! test -e /im/extra\n\
         RUN --mount=type=bind,source=hello.txt,target=/h.txt,rw echo changed > /h.txt \
         && test \"$(cat /h.txt)\" = changed\n\
         RUN ! test -e /ctx/new && ! test -e /st && ! test -e /im\n",
    );
    fs::write(ctx.path().join("hello.txt"), "hello").unwrap();
    build_ok(root.path(), tmp.path(), ctx.path(), &[]);
    assert!(
        !ctx.path().join("new").exists(),
        "a rw bind wrote to the context"
    );
    assert_eq!(
        fs::read_to_string(ctx.path().join("hello.txt")).unwrap(),
        "hello"
    );
}

#[test]
fn cache_mount_from_a_stage_or_image_is_seeded_once() {
    let root = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let seed = busybox_context("FROM scratch\nCOPY rootfs/ /\n");
    build_ok(root.path(), tmp.path(), seed.path(), &["-t", "cacheseed:1"]);
    let dockerfile = "FROM scratch AS src\nCOPY rootfs/ /\nENV PATH=/bin\n\
         RUN mkdir -p /data/sub && echo seed > /data/sub/s && echo top > /data/t\n\
         FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nARG ROUND\n\
         RUN --mount=type=cache,target=/c,from=src,source=/data/sub,id=c1 echo $ROUND >> /c/s \
         && cat /c/s > /seen && ! test -e /c/t\n\
         RUN --mount=type=cache,target=/c,from=src,source=/data/sub,id=c1 cat /c/s > /seen2\n\
         RUN --mount=type=bind,from=src,source=/data/sub,target=/b test \"$(cat /b/s)\" = seed\n\
         RUN --mount=type=cache,target=/i,from=cacheseed:1,source=/etc,id=c2 grep -q root /i/passwd \
         && echo $ROUND >> /i/rounds && cat /i/rounds > /irounds\n\
         RUN --mount=type=cache,target=/p,id=plain ! test -e /p/passwd\n\
         RUN test \"$(cat /seen2)\" = \"$(cat /seen)\"\n";
    let ctx = busybox_context(dockerfile);
    let first = build_ok(
        root.path(),
        tmp.path(),
        ctx.path(),
        &["--build-arg", "ROUND=1"],
    );
    // A second build with another arg reruns the steps: the caches keep what the first wrote.
    let check = format!(
        "{dockerfile}RUN test \"$(cat /seen)\" = \"$(printf 'seed\\n1\\n2')\" \
         && test \"$(cat /irounds)\" = \"$(printf '1\\n2')\"\n"
    );
    fs::write(ctx.path().join("Dockerfile"), check).unwrap();
    let second = build_ok(
        root.path(),
        tmp.path(),
        ctx.path(),
        &["--build-arg", "ROUND=2"],
    );
    assert!(!first.is_empty() && !second.is_empty());
}

/// Skeleton roots on tmpfs that hold the file `marker` (a killed build's).
fn skeletons_with(marker: &str) -> Vec<PathBuf> {
    fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("rbuild-skeleton-")
                })
                .map(|e| e.path())
                .filter(|p| p.join(marker).exists())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL gives rbuild no chance to clean up: its RUN scratch dir and tmpfs skeleton root
/// stay. The next build removes them (their locks died with the process), once they are
/// older than a just-created dir could be.
#[test]
fn temp_dirs_of_a_killed_build_are_removed_by_the_next_build() {
    let marker = format!(
        "killed-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let ctx = busybox_context(&format!(
        "FROM scratch\nCOPY rootfs/ /\nCOPY {marker} /{marker}\nRUN echo running && sleep 600\n"
    ));
    fs::write(ctx.path().join(&marker), b"x").unwrap();
    let root = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = rbuild_build(root.path(), tmp.path(), ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !leftovers(tmp.path())
        .iter()
        .any(|n| n.starts_with("rbuild-run-"))
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let runs: Vec<PathBuf> = leftovers(tmp.path())
        .iter()
        .filter(|n| n.starts_with("rbuild-run-"))
        .map(|n| tmp.path().join(n))
        .collect();
    assert!(!runs.is_empty(), "the RUN step never started");
    let skeletons = skeletons_with(&marker);
    let store_tmp = root.path().join("store").join("tmp");
    let scratches: Vec<PathBuf> = leftovers(&store_tmp)
        .iter()
        .filter(|n| n.starts_with("build-"))
        .map(|n| store_tmp.join(n))
        .collect();
    assert!(
        !scratches.is_empty(),
        "the build's scratch dir was not found"
    );
    // Leftovers younger than 30 s are not touched (their creator may still be locking them).
    let old = filetime::FileTime::from_unix_time(1_600_000_000, 0);
    for dir in runs.iter().chain(&skeletons).chain(&scratches) {
        filetime::set_file_mtime(dir, old).unwrap();
    }
    // The sandbox died with rbuild (PDEATHSIG); give the kernel a moment to reap it.
    std::thread::sleep(Duration::from_millis(200));

    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY rootfs/ /\nCOPY {marker} /again\nRUN true\n"),
    )
    .unwrap();
    build_ok(root.path(), tmp.path(), ctx.path(), &[]);
    for dir in runs.iter().chain(&scratches) {
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }
    assert_eq!(skeletons_with(&marker), Vec::<PathBuf>::new());
}
