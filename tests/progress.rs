//! What `rbuild build` shows while it works: `--progress=plain` against a checked-in
//! expectation (timings and digests masked), `rawjson` parsed line by line, `CACHED` on a
//! second build, `-q`, `--iidfile`/`--metadata-file` checked against `rbuild inspect`, and the
//! tty view read back from a real terminal (tmux).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::random_image::{push_random_image, random_bytes};
use common::throttle::Throttle;
use common::{Context, TestRoot, run_ok};

const EPOCH: &str = "1700000000";

/// A two-stage FROM-scratch build (no RUN, so it needs no sandbox): 3 filesystem steps,
/// metadata steps in between (numbered in `k/n` but not shown, as in BuildKit).
fn context() -> Context {
    Context::new()
        .dockerfile(
            "FROM scratch AS base\nCOPY index.html /srv/\nENV A=1\n\n\
             FROM base AS final\nWORKDIR /app\nCOPY b.txt ./\nLABEL x=y\n",
        )
        .file("index.html", "<p>hi</p>\n")
        .file("b.txt", "b\n")
}

fn build(root: &TestRoot, ctx: &Context, extra: &[&str]) -> Output {
    let out = root
        .rbuild()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .arg("build")
        .args(extra)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Replaces what differs between runs and machines: times, digests, sizes.
fn mask(text: &str) -> String {
    let secs = regex::Regex::new(r"\b\d+\.\d+s?\b").unwrap();
    let digest = regex::Regex::new(r"sha256:[0-9a-f]{64}").unwrap();
    let size = regex::Regex::new(r"size:( +)\d+(\.\d)? [kMG]?B").unwrap();
    let t = digest.replace_all(text, "sha256:<digest>");
    let t = size.replace_all(&t, "size:${1}<size>");
    secs.replace_all(&t, "<t>").into_owned()
}

fn expected(name: &str) -> (PathBuf, String) {
    let path = common::repo_dir().join("testdata/progress").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    (path, text)
}

/// Compares with `testdata/progress/<name>`; `RBUILD_BLESS=1` rewrites the file.
fn assert_matches_file(name: &str, actual: &str) {
    let (path, want) = expected(name);
    if std::env::var_os("RBUILD_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    assert_eq!(
        actual,
        want,
        "{} differs (RBUILD_BLESS=1 to update)",
        path.display()
    );
}

#[test]
fn plain_output_matches_expectation_and_second_build_is_all_cached() {
    let root = TestRoot::new();
    let ctx = context();
    let first = build(&root, &ctx, &["--progress=plain", "-t", "app"]);
    assert!(first.stdout.is_empty(), "plain progress goes to stderr");
    assert_matches_file("plain-first.txt", &mask(&stderr(&first)));

    let second = build(&root, &ctx, &["--progress=plain", "-t", "app"]);
    let text = stderr(&second);
    assert_matches_file("plain-second.txt", &mask(&text));
    for id in 1..=3 {
        assert!(
            text.lines().any(|l| l == format!("#{id} CACHED")),
            "step #{id} not cached:\n{text}"
        );
    }
    assert!(!text.contains("#1 DONE"), "{text}");
    assert!(text.contains("steps:    0 run, 3 cached"), "{text}");
}

#[test]
fn rawjson_lines_parse_and_cover_every_step() {
    let root = TestRoot::new();
    let ctx = context();
    // An unused build arg makes a warning, which must arrive as JSON too.
    let out = build(
        &root,
        &ctx,
        &["--progress=rawjson", "--build-arg", "NOPE=1"],
    );
    let mut started = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut ended = BTreeMap::new();
    let mut summary = None;
    let mut last_time = 0.0;
    for line in stderr(&out).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let time = v["time"].as_f64().expect("every event has a time");
        assert!(time >= last_time, "times go forward: {line}");
        last_time = time;
        match v["kind"].as_str().unwrap() {
            "started" => {
                started.insert(v["id"].as_u64().unwrap(), v.clone());
            }
            "finished" | "cached" => {
                let id = v["id"].as_u64().unwrap();
                assert!(started.contains_key(&id), "{line} before its start");
                ended.insert(id, v["kind"].as_str().unwrap().to_string());
            }
            "status" => {
                let id = v["id"].as_u64().unwrap();
                assert!(started.contains_key(&id), "{line} before its start");
                assert!(v["text"].is_string(), "{line}");
            }
            "summary" => summary = Some(v.clone()),
            "warning" => warnings.push(v["message"].as_str().unwrap().to_string()),
            other => panic!("unexpected event kind {other}: {line}"),
        }
    }
    let names: Vec<&str> = started
        .values()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "[base 2/3] COPY index.html /srv/",
            "[final 2/4] WORKDIR /app",
            "[final 3/4] COPY b.txt ./",
            "exporting to image",
        ]
    );
    assert_eq!(started[&3]["step"]["line"], 7);
    assert_eq!(started[&3]["step"]["stage_name"], "final");
    assert_eq!(
        ended.keys().copied().collect::<Vec<_>>(),
        started.keys().copied().collect::<Vec<_>>(),
        "every started vertex ends"
    );
    assert_eq!(
        warnings,
        ["One or more build-args [NOPE] were not consumed"]
    );
    let summary = summary.expect("a summary event");
    assert_eq!(summary["layers"], 3);
    assert_eq!(summary["steps_run"], 3);
    assert!(out.stdout.is_empty());
}

/// A `tracing::warn!` inside the build (COPY skipping a FIFO in the context) arrives as a
/// `warning` event: every stderr line stays JSON. The same warning in plain mode is one
/// `WARNING:` line, not a log-formatter line.
#[test]
fn logged_warnings_go_through_the_progress_stream() {
    let root = TestRoot::new();
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY . /app/\n")
        .file("a", "a\n");
    let fifo = ctx.join("pipe");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let out = build(&root, &ctx, &["--progress=rawjson"]);
    let mut warnings = Vec::new();
    for line in stderr(&out).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if v["kind"] == "warning" {
            warnings.push(v["message"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        warnings,
        [format!(
            "skipping special file in COPY source path={}",
            fifo.display()
        )]
    );
    let out = build(&root, &ctx, &["--progress=plain", "--no-cache"]);
    let text = stderr(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("WARNING: skipping special file in COPY source path=")),
        "{text}"
    );
    assert!(!text.contains(" WARN "), "{text}");
}

#[test]
fn quiet_prints_only_the_image_id() {
    let root = TestRoot::new();
    let ctx = context();
    let id_line = regex::Regex::new(r"^sha256:[0-9a-f]{64}\n$").unwrap();
    for flag in ["-q", "--progress=quiet"] {
        let out = build(&root, &ctx, &[flag]);
        let stdout = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(id_line.is_match(&stdout), "{flag}: {stdout:?}");
        assert_eq!(stderr(&out), "", "{flag}");
    }
}

#[test]
fn iidfile_and_metadata_file_match_inspect() {
    let root = TestRoot::new();
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let iid = dir.path().join("iid");
    let meta = dir.path().join("meta.json");
    build(
        &root,
        &ctx,
        &[
            "-q",
            "-t",
            "meta-test:1",
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(root.rbuild().args(["inspect", "meta-test:1"]))).unwrap();
    let image = &inspect[0];
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(id, image["Id"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], image["Id"]);
    let repo_digest = image["RepoDigests"][0].as_str().unwrap();
    let manifest = repo_digest.split_once('@').unwrap().1;
    assert_eq!(m["containerimage.digest"], manifest);
    assert_eq!(m["containerimage.descriptor"]["digest"], manifest);
    assert_eq!(
        m["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(m["containerimage.descriptor"]["size"].as_u64().unwrap() > 0);
    assert_eq!(m["image.name"], "docker.io/library/meta-test:1");
}

/// A tmux server on a private socket (a path), so a test never touches a user's sessions;
/// the server goes away with the value, whatever the assertions do.
struct Tmux {
    _dir: tempfile::TempDir,
    socket: String,
}

impl Tmux {
    /// A server for the test `test`, or `None` (after saying so) when tmux is not installed.
    fn start(test: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("SKIPPED {test}: tmux is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux").display().to_string();
        Some(Tmux { _dir: dir, socket })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-S", &self.socket])
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts `cmd` in a detached `width`x40 session named `session`.
    fn session(&self, session: &str, width: u32, cmd: &str) {
        let width = width.to_string();
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            &width,
            "-y",
            "40",
            cmd,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the pane shows `needle`; returns what it shows.
    fn pane_until(&self, session: &str, needle: &str) -> String {
        self.pane_where(session, |text| text.contains(needle))
    }

    /// Waits (up to a minute) until what the pane shows satisfies `done`; returns it.
    fn pane_where(&self, session: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.run(&["capture-pane", "-p", "-t", session]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if done(&text) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn tty_view_in_a_real_terminal() {
    let Some(tmux) = Tmux::start("tty_view_in_a_real_terminal") else {
        return;
    };
    let root = TestRoot::new();
    let ctx = context();
    let run = |n: u32| {
        // One session per run, all kept until the end: killing the last session stops the
        // server, and a new session racing that shutdown fails.
        let session = format!("build{n}");
        let cmd = format!(
            "SOURCE_DATE_EPOCH={EPOCH} {} --root {} build -t tty-test {}; echo EXIT{n}=$?; sleep 60",
            env!("CARGO_BIN_EXE_rbuild"),
            root.path().display(),
            ctx.path().display()
        );
        tmux.session(&session, 120, &cmd);
        tmux.pane_until(&session, &format!("EXIT{n}="))
    };
    let first = run(1);
    assert!(first.contains("EXIT1=0"), "{first}");
    assert!(first.contains("[+] Building"), "{first}");
    assert!(first.contains("(4/4) FINISHED"), "{first}");
    for step in [
        " => [base 2/3] COPY index.html /srv/",
        " => [final 2/4] WORKDIR /app",
        " => [final 3/4] COPY b.txt ./",
        " => exporting to image",
    ] {
        assert!(
            first.lines().any(|l| l.starts_with(step)),
            "{step}:\n{first}"
        );
    }
    assert!(first.contains("steps:    3 run, 0 cached"), "{first}");
    assert!(
        first.contains("tags:     docker.io/library/tty-test:latest"),
        "{first}"
    );
    // The summary comes after the finished view, not above it.
    assert!(first.find("FINISHED").unwrap() < first.find("Built sha256:").unwrap());
    // Plain's numbered lines must not leak into the terminal view.
    assert!(!first.contains("#1 "), "{first}");

    let second = run(2);
    assert!(second.contains("EXIT2=0"), "{second}");
    assert!(
        second
            .lines()
            .any(|l| l.starts_with(" => CACHED [base 2/3] COPY index.html /srv/")),
        "{second}"
    );
    assert!(
        second.contains(" => CACHED [final 3/4] COPY b.txt ./"),
        "{second}"
    );
    assert!(second.contains("steps:    0 run, 3 cached"), "{second}");
}

#[test]
fn from_an_image_is_pulled_once_then_cached() {
    let registry = common::Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new()
        .dockerfile(&format!("FROM {base}\nCOPY a /a\n"))
        .file("a", "a\n");
    let root = TestRoot::new();
    let first = stderr(&build(&root, &ctx, &["--progress=plain"]));
    // Planning loads only the manifest and config, as BuildKit's first vertex...
    assert!(
        first.starts_with(&format!("#1 [internal] load metadata for {base}\n#1 DONE ")),
        "{first}"
    );
    // ...and the FROM step, pinned to the digest, downloads the layer with byte lines.
    let from_line = first
        .lines()
        .find(|l| l.starts_with("#2 "))
        .unwrap()
        .to_string();
    assert!(
        from_line.starts_with(&format!("#2 [1/2] FROM {base}@sha256:")),
        "{first}"
    );
    let layer_done = regex::Regex::new(
        r"(?m)^#2 sha256:[0-9a-f]{12,64} [0-9.]+[kM]?B / [0-9.]+[kM]?B [0-9.]+s done$",
    )
    .unwrap();
    assert!(layer_done.is_match(&first), "{first}");
    assert!(first.contains("\n#2 DONE "), "{first}");
    assert!(first.contains("#3 [2/2] COPY a /a\n#3 DONE "), "{first}");

    // The image is in the store now: no registry, FROM is CACHED, same name.
    let second = stderr(&build(&root, &ctx, &["--progress=plain"]));
    assert!(!second.contains("load metadata"), "{second}");
    let from_again = from_line.replacen("#2 ", "#1 ", 1);
    assert!(
        second.contains(&format!("{from_again}\n#1 CACHED")),
        "{second}"
    );
    assert!(second.contains("#2 CACHED"), "{second}");

    // --pull resolves the tag again; the layers are there, so nothing is downloaded.
    let pulled = stderr(&build(&root, &ctx, &["--progress=plain", "--pull"]));
    assert!(
        pulled.contains("#1 [internal] load metadata for"),
        "{pulled}"
    );
    assert!(
        pulled.contains(&format!("{from_line}\n#2 CACHED")),
        "{pulled}"
    );
    assert!(!layer_done.is_match(&pulled), "{pulled}");
}

#[test]
fn tty_view_shows_running_output_then_collapses() {
    let Some(tmux) = Tmux::start("tty_view_shows_running_output_then_collapses") else {
        return;
    };
    let registry = common::Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base}\nRUN echo first-line; echo second-line; sleep 3; echo last-line\n"
    ));
    let root = TestRoot::new();
    let cmd = format!(
        "{} --root {} build {}; echo EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_rbuild"),
        root.path().display(),
        ctx.path().display()
    );
    tmux.session("run", 120, &cmd);
    // While the step sleeps, its line is live with the output so far under it.
    let running = tmux.pane_until("run", " => => # second-line");
    assert!(running.contains(" => => # first-line"), "{running}");
    assert!(
        running
            .lines()
            .any(|l| l.starts_with(" => [2/2] RUN echo first-line;")),
        "{running}"
    );
    assert!(!running.contains("FINISHED"), "{running}");
    let done = tmux.pane_until("run", "EXIT=");
    assert!(done.contains("EXIT=0"), "{done}");
    // Metadata load, FROM, RUN, exporting.
    assert!(done.contains("(4/4) FINISHED"), "{done}");
    // The finished step collapsed to one line: its output is gone from the view.
    assert!(!done.contains("=> => #"), "{done}");
    assert!(
        done.lines()
            .any(|l| l.starts_with(" => [2/2] RUN echo first-line;") && l.ends_with('s')),
        "{done}"
    );
    assert!(done.contains("steps:    1 run, 0 cached"), "{done}");
}

/// A base image of 8 MB of random data behind a proxy that moves 2 MB/s: its FROM step lasts
/// a few seconds. Returns the registry (keep it alive), the proxy and the base reference.
fn slow_random_base(tag: &str) -> (common::Registry, Throttle, String) {
    let registry = common::Registry::start();
    let direct = push_random_image(&registry, &format!("randbase:{tag}"), 8);
    let throttle = Throttle::start(&registry.addr(), 2_000_000);
    let base = direct.replacen(&registry.addr(), &throttle.addr(), 1);
    (registry, throttle, base)
}

#[test]
fn rawjson_reports_growing_pull_bytes_before_the_from_step_ends() {
    let (_registry, _throttle, base) = slow_random_base("rawjson");
    let ctx = Context::new()
        .dockerfile(&format!("FROM {base}\nCOPY a /a\n"))
        .file("a", "a\n");
    let root = TestRoot::new();
    let out = build(&root, &ctx, &["--progress=rawjson"]);
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let started = |prefix: &str| {
        events
            .iter()
            .find(|v| v["kind"] == "started" && v["name"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no vertex {prefix}: {events:#?}"))["id"]
            .as_u64()
            .unwrap()
    };
    let metadata = started(&format!("[internal] load metadata for {base}"));
    let from = started(&format!("[1/2] FROM {base}@sha256:"));
    assert!(metadata < from);
    let finished = events
        .iter()
        .position(|v| v["kind"] == "finished" && v["id"] == from)
        .expect("the FROM step finishes");
    // The 8 MB layer's ticks, all before the FROM step ends, growing to its size.
    let ticks: Vec<(u64, u64)> = events[..finished]
        .iter()
        .filter(|v| v["kind"] == "bytes" && v["id"] == from && v["action"] == "pull")
        .filter(|v| v["total"].as_u64().unwrap() > 8_000_000)
        .map(|v| (v["current"].as_u64().unwrap(), v["total"].as_u64().unwrap()))
        .collect();
    assert!(ticks.len() >= 4, "{ticks:?}");
    let total = ticks[0].1;
    assert!(ticks.windows(2).all(|w| w[0].0 <= w[1].0), "{ticks:?}");
    assert!(
        ticks.iter().filter(|(c, _)| *c < total).count() >= 3,
        "{ticks:?}"
    );
    assert_eq!(ticks.last().unwrap().0, total);
    assert!(
        !events[finished..]
            .iter()
            .any(|v| v["kind"] == "bytes" && v["id"] == from),
        "no bytes after the step ended"
    );
}

/// What a person sees in a terminal while a base of several MB is pulled and the result
/// pushed through a slow link: a bar per blob under its step (short digest, sizes, rate),
/// gone once the step is done.
#[test]
fn tty_shows_byte_bars_while_pulling_and_pushing_then_collapses() {
    let Some(tmux) = Tmux::start("tty_shows_byte_bars_while_pulling_and_pushing") else {
        return;
    };
    let (_registry, throttle, base) = slow_random_base("tty");
    let ctx = Context::new()
        .dockerfile(&format!("FROM {base}\nCOPY data.bin /data.bin\n"))
        .file("data.bin", random_bytes(7, 6_000_000));
    let root = TestRoot::new();
    let cmd = format!(
        "{} --root {} build --push -t {}/app:1 {}; echo EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_rbuild"),
        root.path().display(),
        throttle.addr(),
        ctx.path().display()
    );
    tmux.session("bars", 140, &cmd);
    let bar = |verb: &str| {
        regex::Regex::new(&format!(
            r"(?m)^ => => {verb} sha256:[0-9a-f]{{12}} [0-9.]+ [kM]?B/[0-9.]+ MB \[[=> ]+\] [0-9.]+ [kM]?B/s"
        ))
        .unwrap()
    };
    let (pulling_bar, pushing_bar) = (bar("pulling"), bar("pushing"));
    let pulling = tmux.pane_where("bars", |t| pulling_bar.is_match(t));
    assert!(bar("pulling").is_match(&pulling), "{pulling}");
    // The bar sits right under its step's running line.
    let lines: Vec<&str> = pulling.lines().collect();
    let at = lines
        .iter()
        .position(|l| bar("pulling").is_match(l))
        .unwrap();
    assert!(
        lines[..at]
            .last()
            .is_some_and(|l| l.starts_with(&format!(" => [1/2] FROM {base}@sha256:"))),
        "{pulling}"
    );
    let pushing = tmux.pane_where("bars", |t| pushing_bar.is_match(t));
    assert!(bar("pushing").is_match(&pushing), "{pushing}");
    assert!(pushing.contains(" => exporting to image"), "{pushing}");
    let done = tmux.pane_until("bars", "EXIT=");
    assert!(done.contains("EXIT=0"), "{done}");
    // Every bar collapsed with its step: only the steps' one-line summaries remain.
    assert!(!done.contains(" => => "), "{done}");
    assert!(
        done.lines()
            .any(|l| l.starts_with(&format!(" => [1/2] FROM {base}@sha256:")) && l.ends_with('s')),
        "{done}"
    );
}

/// Waits until the pane shows a line matching `re`; returns what it shows.
#[test]
fn copy_from_an_image_loads_its_metadata_first() {
    let registry = common::Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new().dockerfile(&format!(
        "FROM scratch\nCOPY --from={base} /etc/passwd /passwd\n"
    ));
    let root = TestRoot::new();
    let out = stderr(&build(&root, &ctx, &["--progress=plain"]));
    assert!(
        out.starts_with(&format!("#1 [internal] load metadata for {base}\n#1 DONE ")),
        "{out}"
    );
    assert!(out.contains("#2 [2/2] COPY --from="), "{out}");
    // Its layers are fetched before the stages start, under no vertex: no `#0` lines.
    assert!(!out.lines().any(|l| l.starts_with("#0")), "{out}");
}
