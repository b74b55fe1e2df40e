//! The solver end to end through the `rbuild` binary: cache misses explained in the event
//! stream (changed file, build arg, base image), two builds started at once on one root sharing
//! a step, identical stages running once, and independent stages running in parallel.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Context, Registry, TestRoot, run_ok};

const EPOCH: &str = "1700000000";

fn build(root: &TestRoot, ctx: &Context, extra: &[&str]) -> Output {
    let out = build_cmd(root, ctx, extra).output().unwrap();
    assert!(
        out.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn build_cmd(root: &TestRoot, ctx: &Context, extra: &[&str]) -> Command {
    let mut cmd = root.rbuild();
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "--progress=rawjson"])
        .args(extra)
        .arg(ctx.path());
    cmd
}

/// The rawjson events of a build, parsed.
fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The vertex id of the step whose name ends with `suffix` (which may start with the step's
/// `[stage n/m] ` prefix).
fn vertex(events: &[serde_json::Value], suffix: &str) -> u64 {
    events
        .iter()
        .find(|e| e["kind"] == "started" && e["name"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no step named ...{suffix} in {events:#?}"))["id"]
        .as_u64()
        .unwrap()
}

/// The cache-miss reason reported for the step named `...suffix`, if it missed.
fn miss(events: &[serde_json::Value], suffix: &str) -> Option<String> {
    let id = vertex(events, suffix);
    events
        .iter()
        .find(|e| e["kind"] == "cache_miss" && e["id"] == id)
        .map(|e| e["reason"].as_str().unwrap().to_string())
}

/// Whether the step named `...suffix` came from the cache.
fn cached(events: &[serde_json::Value], suffix: &str) -> bool {
    let id = vertex(events, suffix);
    events
        .iter()
        .any(|e| e["kind"] == "cached" && e["id"] == id)
}

#[test]
fn changed_file_is_named_and_later_steps_blame_the_previous_step() {
    let root = TestRoot::new();
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY src/ /src/\nCOPY other.txt /other.txt\n")
        .file("src/main.c", "int main(void) { return 0; }\n")
        .file("src/util.c", "int util;\n")
        .file("other.txt", "other\n");
    let first = events(&build(&root, &ctx, &[]));
    // A first build has nothing to compare with, and says nothing (as BuildKit).
    assert_eq!(miss(&first, "COPY src/ /src/"), None);
    let again = events(&build(&root, &ctx, &[]));
    assert!(cached(&again, "COPY src/ /src/") && cached(&again, "COPY other.txt /other.txt"));
    assert_eq!(miss(&again, "COPY src/ /src/"), None);

    std::fs::write(ctx.join("src/main.c"), "int main(void) { return 1; }\n").unwrap();
    let changed = events(&build(&root, &ctx, &[]));
    assert_eq!(
        miss(&changed, "COPY src/ /src/").as_deref(),
        Some("file src/main.c changed")
    );
    assert_eq!(
        miss(&changed, "COPY other.txt /other.txt").as_deref(),
        Some("previous step changed")
    );

    for i in 0..5 {
        std::fs::write(ctx.join(&format!("src/new{i}.c")), "new\n").unwrap();
    }
    std::fs::remove_file(ctx.join("src/util.c")).unwrap();
    let many = events(&build(&root, &ctx, &[]));
    assert_eq!(
        miss(&many, "COPY src/ /src/").as_deref(),
        Some("files src/new0.c, src/new1.c, src/new2.c added and 2 more; file src/util.c removed")
    );

    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY src/ /src/\nCOPY other.txt /other.txt\nCOPY other.txt /again.txt\n",
    )
    .unwrap();
    let longer = events(&build(&root, &ctx, &[]));
    assert!(cached(&longer, "COPY other.txt /other.txt"));
    assert_eq!(
        miss(&longer, "COPY other.txt /again.txt").as_deref(),
        Some("no earlier build of this step")
    );
}

/// A scratch image pushed to `registry` as `repo` with `content` in `/base.txt`; returns its
/// reference.
fn push_scratch_base(registry: &Registry, repo: &str, content: &str) -> String {
    let reference = registry.repo(repo);
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY base.txt /base.txt\n")
        .file("base.txt", content);
    let root = TestRoot::new();
    run_ok(
        root.rbuild()
            .args(["build", "-q", "--push", "-t", &reference])
            .arg(ctx.path()),
    );
    reference
}

#[test]
fn pull_of_a_changed_base_says_base_image_changed() {
    let registry = Registry::start();
    let base = push_scratch_base(&registry, "team/base:1", "one\n");
    let root = TestRoot::new();
    let ctx = Context::new()
        .dockerfile(&format!("FROM {base}\nCOPY app.txt /app.txt\n"))
        .file("app.txt", "app\n");
    build(&root, &ctx, &[]);
    push_scratch_base(&registry, "team/base:1", "two\n");
    let pulled = events(&build(&root, &ctx, &["--pull"]));
    let reason = miss(&pulled, "COPY app.txt /app.txt").expect("the COPY must miss");
    let re =
        regex::Regex::new(r"^base image changed \(sha256:[0-9a-f]{64} → sha256:[0-9a-f]{64}\)$")
            .unwrap();
    assert!(re.is_match(&reason), "{reason}");
}

#[test]
fn changed_build_arg_is_named_and_unrelated_steps_stay_cached() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    let ctx = Context::new()
        .dockerfile(&format!(
            "FROM {base}\nCOPY a.txt /a.txt\nARG VERSION=1\nRUN echo \"$VERSION\" > /version\n"
        ))
        .file("a.txt", "a\n");
    build(&root, &ctx, &["--build-arg", "VERSION=1"]);
    let second = events(&build(&root, &ctx, &["--build-arg", "VERSION=2"]));
    assert!(cached(&second, "COPY a.txt /a.txt"), "{second:#?}");
    assert_eq!(
        miss(&second, "RUN echo \"$VERSION\" > /version").as_deref(),
        Some("build arg VERSION changed")
    );
}

/// Reads how many lines the cache mount `/c` log holds, through one more build exporting a file.
fn cache_log_lines(root: &TestRoot, base: &str) -> usize {
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base} AS count\nRUN --mount=type=cache,target=/c wc -l < /c/log > /n; date > /nocache\n\
         FROM scratch\nCOPY --from=count /n /n\n"
    ));
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().display());
    run_ok(
        root.rbuild()
            .args(["build", "-q", "--no-cache", "-o", &dest])
            .arg(ctx.path()),
    );
    std::fs::read_to_string(out.path().join("n"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const SLOW_RUN: &str =
    "RUN --mount=type=cache,target=/c echo ran >> /c/log && sleep 3 && echo done > /marker";

#[test]
fn two_builds_started_at_once_share_the_slow_step() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    let ctx = Context::new().dockerfile(&format!("FROM {base}\n{SLOW_RUN}\n"));
    let spawn = |iid: &Path| {
        build_cmd(&root, &ctx, &["--iidfile", iid.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let work = tempfile::tempdir().unwrap();
    let (iid_a, iid_b) = (work.path().join("a"), work.path().join("b"));
    let a = spawn(&iid_a);
    let b = spawn(&iid_b);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read_to_string(&iid_a).unwrap(),
        std::fs::read_to_string(&iid_b).unwrap(),
        "both builds make the same image"
    );
    let step =
        "RUN --mount=type=cache,target=/c echo ran >> /c/log && sleep 3 && echo done > /marker";
    let cached_count = [events(&a), events(&b)]
        .iter()
        .filter(|e| cached(e, step))
        .count();
    assert_eq!(cached_count, 1, "exactly one build runs the step");
    assert_eq!(cache_log_lines(&root, &base), 1, "the step ran once");
}

#[test]
fn identical_stages_run_their_shared_step_once() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base} AS one\n{SLOW_RUN}\nRUN echo one > /who\n\
         FROM {base} AS two\n{SLOW_RUN}\nRUN echo two > /who\n\
         FROM scratch\nCOPY --from=one /who /one\nCOPY --from=two /who /two\n"
    ));
    let ev = events(&build(&root, &ctx, &[]));
    let step =
        "RUN --mount=type=cache,target=/c echo ran >> /c/log && sleep 3 && echo done > /marker";
    let ran: Vec<bool> = ["[one 2/3] ", "[two 2/3] "]
        .iter()
        .map(|stage| cached(&ev, &format!("{stage}{step}")))
        .collect();
    assert_eq!(
        ran.iter().filter(|c| **c).count(),
        1,
        "one of the two is CACHED: {ran:?}"
    );
    assert_eq!(cache_log_lines(&root, &base), 1, "the step ran once");
}

#[test]
fn independent_stages_run_in_parallel() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    // Warm the base's snapshots so the measurement is about the steps.
    let warm = Context::new().dockerfile(&format!("FROM {base}\nRUN true\n"));
    build(&root, &warm, &[]);
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base} AS a\nRUN sleep 2 && echo a > /a\n\
         FROM {base} AS b\nRUN sleep 2 && echo b > /b\n\
         FROM {base} AS c\nRUN sleep 2 && echo c > /c\n\
         FROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n"
    ));
    let start = Instant::now();
    // No --jobs: by default every independent stage runs at once, even on a 2-CPU machine.
    build(&root, &ctx, &[]);
    let wall = start.elapsed();
    assert!(
        wall < Duration::from_millis(4500),
        "three 2 s stages took {wall:?}: they did not run in parallel"
    );
}

/// `rbuild du` output as text.
fn du(root: &TestRoot, extra: &[&str]) -> String {
    run_ok(root.rbuild().arg("du").args(extra))
}

/// The `du` summary row for `kind`: (count, size, reclaimable), if listed.
fn du_row(text: &str, kind: &str) -> Option<(usize, String, String)> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(kind)?.trim_start();
        let cols: Vec<&str> = rest.split_whitespace().collect();
        (cols.len() == 3 && cols[0].chars().all(|c| c.is_ascii_digit()))
            .then(|| (cols[0].parse().unwrap(), cols[1].into(), cols[2].into()))
    })
}

#[test]
fn du_accounts_for_images_cache_and_snapshots_and_prune_reclaims_them() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    let ctx = Context::new()
        .dockerfile(&format!(
            "FROM {base}\nRUN echo hi > /hi\nCOPY a.txt /a.txt\n"
        ))
        .file("a.txt", "a\n");
    run_ok(
        root.rbuild()
            .args(["build", "-q", "-t", "app:1"])
            .arg(ctx.path()),
    );
    let unnamed = Context::new()
        .dockerfile("FROM scratch\nCOPY b.txt /b.txt\n")
        .file("b.txt", "unnamed build result\n");
    run_ok(root.rbuild().args(["build", "-q"]).arg(unnamed.path()));

    let text = du(&root, &[]);
    let (images, _, reclaim) = du_row(&text, "image").unwrap_or_else(|| panic!("{text}"));
    assert!(images >= 3, "config, manifest, layers: {text}");
    assert_eq!(reclaim, "0B", "named images are not reclaimable: {text}");
    assert!(du_row(&text, "unnamed image").is_some(), "{text}");
    let (snapshots, _, _) = du_row(&text, "snapshot").unwrap_or_else(|| panic!("{text}"));
    assert!(snapshots >= 1, "the RUN unpacked busybox: {text}");
    assert!(
        text.contains("Reclaimable:") && text.contains("Total:"),
        "{text}"
    );
    let verbose = du(&root, &["--verbose"]);
    assert!(
        verbose
            .lines()
            .any(|l| l.contains(" snapshot ") && l.contains("sha256:")),
        "{verbose}"
    );

    // A recent unnamed image survives an `until` filter, then goes with a plain prune.
    run_ok(root.rbuild().args(["prune", "--filter", "until=1h"]));
    assert!(du_row(&du(&root, &[]), "unnamed image").is_some());
    run_ok(root.rbuild().arg("prune"));
    let text = du(&root, &[]);
    assert!(du_row(&text, "unnamed image").is_none(), "{text}");
    assert!(du_row(&text, "image").is_some(), "{text}");
    assert!(
        du_row(&text, "snapshot").is_some(),
        "snapshots of a named image's layers stay: {text}"
    );
    // Keeping more storage than there is removes nothing.
    run_ok(root.rbuild().args(["prune", "--keep-storage", "10GB"]));
    assert_eq!(du_row(&du(&root, &[]), "image"), du_row(&text, "image"));

    let out = run_ok(root.rbuild().args(["prune", "--all"]));
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let text = du(&root, &[]);
    assert!(du_row(&text, "image").is_none(), "{text}");
    assert!(du_row(&text, "snapshot").is_none(), "{text}");
    assert!(text.contains("Reclaimable:\t0B"), "{text}");
    for gone in ["cache/explain-v1", "cache/locks"] {
        assert!(
            !root.path().join(gone).exists(),
            "{gone} survived prune --all"
        );
    }
}

#[test]
fn a_failing_stage_stops_the_others_from_starting_new_steps() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base} AS slow\nRUN sleep 2\nRUN echo second > /s\n\
         FROM {base} AS bad\nRUN echo failing; exit 3\n\
         FROM scratch\nCOPY --from=slow /s /s\nCOPY --from=bad /etc/passwd /p\n"
    ));
    let out = build_cmd(&root, &ctx, &[]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("line 5: RUN:") && last.contains("exit code: 3"),
        "the failing stage's error is the build's: {stderr}"
    );
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events.iter().any(|e| e["kind"] == "started"
            && e["name"].as_str().unwrap().ends_with("RUN sleep 2")),
        "{stderr}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "started" && e["name"].as_str().unwrap().contains("echo second")),
        "no step starts after another stage failed: {stderr}"
    );
}

/// Processes (any user's that /proc shows) whose command line contains `arg`.
fn processes_with_arg(arg: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(arg))
        .count()
}

/// Names in `dir` (none when it does not exist).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn first_failure_kills_running_steps_of_other_stages() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    // Warm the base's snapshots so the timing is about stopping the build.
    build(
        &root,
        &Context::new().dockerfile(&format!("FROM {base}\nRUN true\n")),
        &[],
    );
    // 40 s and a fraction no other process uses, so /proc can tell whether the sleeps
    // survived, and a build that waits for them fails the timing check instead of hanging.
    let marker = format!("40.{}", 600_000 + std::process::id() % 100_000);
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base} AS slow\n\
         RUN echo slow-started; sleep {marker} & sleep {marker}\n\
         RUN echo never > /never\n\
         FROM {base} AS bad\n\
         RUN sleep 1; echo failing; exit 3\n\
         FROM scratch\nCOPY --from=slow /etc/passwd /a\nCOPY --from=bad /etc/passwd /b\n"
    ));
    for progress in ["rawjson", "plain"] {
        let start = Instant::now();
        let out = root
            .rbuild()
            .args(["build", &format!("--progress={progress}")])
            .arg(ctx.path())
            .output()
            .unwrap();
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            took < Duration::from_secs(20),
            "the failed build waited for the other stage's sleep ({took:?}): {stderr}"
        );
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("line 5: RUN:") && last.contains("exit code: 3"),
            "the failing step's error is the build's, not the cancellation: {stderr}"
        );
        let step = format!("RUN echo slow-started; sleep {marker} & sleep {marker}");
        if progress == "rawjson" {
            let events: Vec<serde_json::Value> = stderr
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let id = vertex(&events, &step);
            let of_slow: Vec<&serde_json::Value> =
                events.iter().filter(|e| e["id"] == id).collect();
            assert!(
                of_slow
                    .iter()
                    .any(|e| e["kind"] == "status" && e["text"] == "CANCELED"),
                "the slow step shows as canceled: {of_slow:#?}"
            );
            assert!(
                !of_slow
                    .iter()
                    .any(|e| e["kind"] == "errored" || e["kind"] == "finished"),
                "{of_slow:#?}"
            );
            assert!(
                !events.iter().any(|e| e["kind"] == "started"
                    && e["name"].as_str().unwrap().contains("echo never")),
                "no step starts after the failure: {stderr}"
            );
        } else {
            let id = stderr
                .lines()
                .find(|l| l.ends_with(&step))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {step} vertex: {stderr}"));
            assert!(
                stderr.lines().any(|l| l == format!("{id} CANCELED")),
                "plain shows `{id} CANCELED`: {stderr}"
            );
        }
        let waited = Instant::now();
        while processes_with_arg(&marker) > 0 && waited.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(processes_with_arg(&marker), 0, "sleep processes survived");
        for sub in ["snapshots/active", "snapshots/tmp", "store/tmp"] {
            assert_eq!(
                leftovers(&root.path().join(sub)),
                Vec::<String>::new(),
                "{sub} after the canceled build"
            );
        }
    }
    // The canceled step left nothing behind in the cache: it runs (and fails) again, and the
    // root builds the next thing fine.
    let fixed = Context::new().dockerfile(&format!(
        "FROM {base} AS slow\nRUN echo slow > /s\nFROM {base} AS ok\nRUN echo ok > /o\n\
         FROM scratch\nCOPY --from=slow /s /s\nCOPY --from=ok /o /o\n"
    ));
    build(&root, &fixed, &[]);
}

/// The log lines of the vertex named `...suffix` in rawjson events.
fn logs(events: &[serde_json::Value], suffix: &str) -> Vec<String> {
    let id = vertex(events, suffix);
    events
        .iter()
        .filter(|e| e["kind"] == "log" && e["id"] == id)
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn prune_all_removes_cache_mounts_and_dangling_cache_entries() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    // `/c/d` belongs to another container user: rootless rbuild can only delete it inside
    // the sandbox's user namespace.
    let step = "RUN --mount=type=cache,target=/c,id=prune-test echo \"seen:$(ls /c | tr '\\n' ,)\" \
                && echo data > /c/f && mkdir /c/d && echo x > /c/d/x && chown -R 1000:1000 /c/d \
                && chmod 700 /c/d && echo done > /done";
    let ctx = Context::new().dockerfile(&format!("FROM {base}\n{step}\n"));
    let first = events(&build(&root, &ctx, &[]));
    assert_eq!(
        logs(&first, step),
        ["seen:"],
        "a new cache mount starts empty"
    );
    let text = du(&root, &[]);
    let (mounts, _, reclaim) = du_row(&text, "cache mount").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(mounts, 1, "{text}");
    assert_ne!(reclaim, "0B", "prune --all reclaims cache mounts: {text}");

    // Used just now: an `until` filter keeps it (and the build cache).
    run_ok(
        root.rbuild()
            .args(["prune", "--all", "--filter", "until=1h"]),
    );
    assert!(du_row(&du(&root, &[]), "cache mount").is_some());
    let kept = events(&build(&root, &ctx, &[]));
    assert!(cached(&kept, step), "{kept:#?}");

    let out = run_ok(root.rbuild().args(["prune", "--all"]));
    assert!(out.contains("Removed 1 cache mount(s)"), "{out}");
    let text = du(&root, &[]);
    assert!(du_row(&text, "cache mount").is_none(), "{text}");
    assert_eq!(
        leftovers(&root.path().join("cache/index-v1")),
        Vec::<String>::new(),
        "cache index entries survived prune --all"
    );
    assert!(!root.path().join("cache/explain-v1").exists());

    // The step runs again (no CACHED from an entry whose layer is gone), on an empty mount.
    let again = events(&build(&root, &ctx, &[]));
    assert!(!cached(&again, step), "stale CACHED after prune --all");
    assert_eq!(
        logs(&again, step),
        ["seen:"],
        "the cache mount was not emptied"
    );
}

#[test]
fn a_failed_build_stops_waiting_for_a_step_another_build_is_running() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let root = TestRoot::new();
    build(
        &root,
        &Context::new().dockerfile(&format!("FROM {base}\nRUN true\n")),
        &[],
    );
    let marker = format!("50.{}", 700_000 + std::process::id() % 100_000);
    let slow = format!("RUN sleep {marker} && echo done > /marker");
    // Build A runs the slow step and so holds its in-flight lock.
    let a_ctx = Context::new().dockerfile(&format!("FROM {base}\n{slow}\n"));
    let mut a = build_cmd(&root, &a_ctx, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while processes_with_arg(&marker) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "build A never started its step"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    // The shell and its sleep both carry the marker.
    let of_a = processes_with_arg(&marker);
    // Build B needs the same step (it waits for A) and fails in another stage meanwhile.
    let b_ctx = Context::new().dockerfile(&format!(
        "FROM {base} AS same\n{slow}\n\
         FROM {base} AS bad\nRUN sleep 1; exit 4\n\
         FROM scratch\nCOPY --from=same /marker /a\nCOPY --from=bad /etc/passwd /b\n"
    ));
    let b = build_cmd(&root, &b_ctx, &[]).output().unwrap();
    let still_running = a.try_wait().unwrap().is_none();
    let sleeps = processes_with_arg(&marker);
    let _ = Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status();
    let _ = a.wait();
    let stderr = String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success(), "{stderr}");
    assert!(
        stderr.contains("exit code: 4"),
        "B fails with its own error: {stderr}"
    );
    assert!(
        still_running,
        "B ended only after A's step: it should stop waiting when it fails"
    );
    assert_eq!(
        sleeps, of_a,
        "B ran the shared step itself instead of waiting"
    );
    let ev: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let id = vertex(&ev, &format!("[same 2/2] {slow}"));
    assert!(
        ev.iter()
            .any(|e| e["id"] == id && e["kind"] == "status" && e["text"] == "CANCELED"),
        "the waiting step shows CANCELED: {stderr}"
    );
}
