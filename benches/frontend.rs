//! Front-end benchmark (issue 3): parse and plan a generated 5,000-line Dockerfile in process,
//! the same calls `rbuild build --dry-run` makes (parse, `Plan::new`, `Plan::dispatch`,
//! `Plan::render`) with base images resolved to an empty config instead of the store.
//!
//! `cargo bench --bench frontend [-- --iterations N] [-- --lines N] [-- --write PATH]` prints the median, the
//! fastest and the slowest run of parse, plan and both together, the thread's CPU time, and
//! how many heap allocations one parse + plan makes (a number the machine's load cannot move).

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rbuild::dockerfile::parse;
use rbuild::plan::{BuildOptions, EmptyImages, Plan, parse_trigger};

/// The allocator the `rbuild` binary uses (mimalloc, see src/main.rs), counting allocations
/// (the front end's time was mostly malloc/free).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `MiMalloc`; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `MiMalloc` with this layout.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One stage's worth of instructions of the kinds real Dockerfiles use, about 100 lines.
/// Stages build on a shared `base` stage or on an image, as large multi-stage files do.
fn stage_block(out: &mut String, stage: usize) {
    use std::fmt::Write;
    let base = match stage % 4 {
        0 => "${BASE_IMAGE}:${BASE_TAG}".to_string(),
        1 => "golang:1.22-bookworm".to_string(),
        _ => "base".to_string(),
    };
    let _ = writeln!(out, "# stage {stage}: builds part {stage} of the app");
    let _ = writeln!(out, "FROM --platform=$BUILDPLATFORM {base} AS part{stage}");
    let _ = writeln!(out, "ARG BASE_TAG");
    let _ = writeln!(out, "ARG VERSION=1.{stage}.0 COMMIT");
    let _ = writeln!(out, "ENV APP_HOME=/opt/app{stage} \\");
    let _ = writeln!(out, "    PATH=/opt/app{stage}/bin:$PATH \\");
    let _ = writeln!(out, "    LANG=C.UTF-8");
    let _ = writeln!(out, "WORKDIR ${{APP_HOME}}/src");
    let _ = writeln!(
        out,
        "LABEL org.opencontainers.image.version=\"${{VERSION}}\" \\"
    );
    let _ = writeln!(
        out,
        "      org.opencontainers.image.title=\"part {stage}\" maintainer=\"dev@example.com\""
    );
    for k in 0..6 {
        let _ = writeln!(out, "RUN --mount=type=cache,target=/var/cache/apt{k} \\");
        let _ = writeln!(out, "    set -eux; \\");
        let _ = writeln!(out, "    apt-get update && \\");
        let _ = writeln!(out, "    # a comment inside the continuation");
        let _ = writeln!(out, "    apt-get install -y --no-install-recommends \\");
        let _ = writeln!(out, "        pkg{k}a pkg{k}b \"pkg-${{VERSION}}\" && \\");
        let _ = writeln!(out, "    rm -rf /var/lib/apt/lists/*");
        let _ = writeln!(
            out,
            "COPY --chown=1000:1000 --chmod=0644 src/part{k}/ ./part{k}/"
        );
        let _ = writeln!(
            out,
            "ENV STEP{k}=\"${{VERSION:-dev}}-{k}\" MODE_{k}=${{COMMIT:+release}}"
        );
    }
    let _ = writeln!(out, "COPY <<EOF /etc/app{stage}.conf");
    let _ = writeln!(out, "name = part{stage}");
    let _ = writeln!(out, "version = ${{VERSION}}");
    let _ = writeln!(out, "EOF");
    let _ = writeln!(out, "RUN <<-SCRIPT bash");
    for k in 0..8 {
        let _ = writeln!(out, "\techo \"step {k} of stage {stage}\" >> /log.txt");
    }
    let _ = writeln!(out, "SCRIPT");
    let _ = writeln!(out, "RUN [\"/bin/sh\", \"-c\", \"echo exec form {stage}\"]");
    if stage > 1 {
        let _ = writeln!(
            out,
            "COPY --from=part{} /opt/app/bin/ /usr/local/bin/",
            stage - 1
        );
    }
    let _ = writeln!(out, "USER 1000:1000");
    let _ = writeln!(out, "EXPOSE 80{:02}/tcp", stage % 100);
    let _ = writeln!(
        out,
        "HEALTHCHECK --interval=30s CMD curl -f http://localhost/ || exit 1"
    );
    let _ = writeln!(out, "CMD [\"app{stage}\", \"--serve\"]");
    let _ = writeln!(out);
}

/// A Dockerfile of about `lines` lines: global ARGs, a `base` stage, part stages, and a final
/// stage that copies from every part (so every stage is needed).
fn generate(lines: usize) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "# syntax=docker/dockerfile:1\nARG BASE_IMAGE=debian\nARG BASE_TAG=bookworm-slim\n\n\
         FROM ${BASE_IMAGE}:${BASE_TAG} AS base\nRUN apt-get update && apt-get install -y curl\n\n",
    );
    let mut stage = 0;
    // Leave room for the final stage: one COPY line per part.
    while out.lines().count() + 100 + stage < lines {
        stage_block(&mut out, stage);
        stage += 1;
    }
    let _ = writeln!(out, "FROM base AS final");
    for p in 0..stage {
        let _ = writeln!(out, "COPY --from=part{p} /opt/app{p}/ /opt/app{p}/");
    }
    while out.lines().count() < lines {
        let n = out.len();
        let _ = writeln!(out, "LABEL com.example.build.note{n}=\"generated\"");
    }
    let _ = writeln!(out, "ENTRYPOINT [\"/opt/app0/bin/app\"]");
    out
}

fn arg_value(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of this thread: on a shared, loaded machine wall time also counts waiting for a
/// core, so both are reported.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let lines = arg_value("--lines", 5000);
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // in a debug build, where a few rounds show that it still works.
    let measuring = std::env::args().any(|a| a == "--bench");
    let iterations = arg_value("--iterations", if measuring { 200 } else { 3 }).max(1);
    let text = generate(lines);
    // `--write PATH`: only write the generated Dockerfile (scripts/bench-frontend hands it to
    // BuildKit's own parser for comparison).
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
    {
        std::fs::write(path, &text).expect("write the generated Dockerfile");
        return;
    }
    let line_count = text.lines().count();
    let options = BuildOptions::host();

    // Check once that the input is meaningful: it parses, plans and dispatches every stage.
    let df = parse(&text).expect("generated Dockerfile parses");
    let plan = Plan::new(&df, options.clone()).expect("generated Dockerfile plans");
    let dispatched = plan
        .dispatch(&EmptyImages, &parse_trigger)
        .expect("generated Dockerfile dispatches");
    let steps: usize = dispatched.values().map(|d| d.steps.len()).sum();
    assert_eq!(dispatched.len(), plan.stages.len(), "every stage is needed");
    drop(dispatched);

    // Allocations (and reallocations) of one parse + plan, phase by phase.
    let count = || ALLOCATIONS.load(Ordering::Relaxed);
    let a0 = count();
    let df2 = parse(&text).expect("parses");
    let a1 = count();
    let plan2 = Plan::new(&df2, options.clone()).expect("plans");
    let a2 = count();
    let dispatched2 = plan2
        .dispatch(&EmptyImages, &parse_trigger)
        .expect("dispatches");
    let a3 = count();
    std::hint::black_box(plan2.render(Some(&dispatched2)));
    let a4 = count();
    drop((dispatched2, plan2));
    drop(df2);

    let (mut parse_t, mut plan_t, mut total_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu_t = Vec::new();
    let (mut stages_t, mut dispatch_t, mut render_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        let c0 = thread_cpu();
        let t0 = Instant::now();
        let df = parse(&text).expect("parses");
        let t1 = Instant::now();
        let plan = Plan::new(&df, options.clone()).expect("plans");
        let ta = Instant::now();
        let dispatched = plan
            .dispatch(&EmptyImages, &parse_trigger)
            .expect("dispatches");
        let tb = Instant::now();
        let rendered = plan.render(Some(&dispatched));
        let t2 = Instant::now();
        cpu_t.push(thread_cpu() - c0);
        std::hint::black_box(rendered);
        parse_t.push(t1 - t0);
        stages_t.push(ta - t1);
        dispatch_t.push(tb - ta);
        render_t.push(t2 - tb);
        plan_t.push(t2 - t1);
        total_t.push(t2 - t0);
    }
    println!(
        "frontend: {line_count} lines, {} instructions, {} stages, {steps} steps, {iterations} iterations",
        df.nodes.len(),
        plan.stages.len()
    );
    for (what, v) in [
        ("parse", parse_t),
        ("  stages", stages_t),
        ("  dispatch", dispatch_t),
        ("  render", render_t),
        ("plan", plan_t),
        ("parse+plan", total_t),
        ("  cpu time", cpu_t),
    ] {
        let (median, min, max) = stats(v);
        println!(
            "{what:<11} median {:>7.3} ms   min {:>7.3} ms   max {:>7.3} ms",
            ms(median),
            ms(min),
            ms(max)
        );
    }
    println!(
        "allocations parse {}  stages {}  dispatch {}  render {}  total {}",
        a1 - a0,
        a2 - a1,
        a3 - a2,
        a4 - a3,
        a4 - a0
    );
}
