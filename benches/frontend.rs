//! Front-end benchmark (issue 3): parse and plan a generated 5,000-line Dockerfile in process,
//! the same calls `rbuild build --dry-run` makes (parse, `Plan::new`, `Plan::dispatch`,
//! `Plan::render`) with base images resolved to an empty config instead of the store.
//!
//! `cargo bench --bench frontend [-- --iterations N] [-- --lines N]` prints the median, the
//! fastest and the slowest run of parse, plan and both together. Uses only std::time, so the
//! numbers are wall time of one thread.

use std::time::{Duration, Instant};

use rbuild::dockerfile::{Node, parse};
use rbuild::image::{ImageConfig, Platform};
use rbuild::plan::{BuildOptions, ImageResolver, Plan, ResolvedImage};

/// Resolves every base image to an empty config, as `--dry-run` does for images not stored.
struct EmptyImages;

impl ImageResolver for EmptyImages {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
        Ok(ResolvedImage {
            name: reference.to_string(),
            manifest_digest: None,
            config: ImageConfig::default(),
        })
    }
}

fn parse_trigger(text: &str) -> Result<Node, String> {
    let df = parse(text).map_err(|e| e.to_string())?;
    df.nodes
        .into_iter()
        .next()
        .ok_or_else(|| "empty trigger".to_string())
}

/// One stage's worth of instructions of the kinds real Dockerfiles use, about 100 lines.
fn stage_block(out: &mut String, stage: usize, prev: Option<usize>) {
    use std::fmt::Write;
    let base = match prev {
        Some(p) => format!("stage{p}"),
        None => "${BASE_IMAGE}:${BASE_TAG}".to_string(),
    };
    let _ = writeln!(out, "# stage {stage}: builds part {stage} of the app");
    let _ = writeln!(out, "FROM --platform=$BUILDPLATFORM {base} AS stage{stage}");
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
        let _ = writeln!(out, "COPY --chown=1000:1000 --chmod=0644 src/part{k}/ ./part{k}/");
        let _ = writeln!(out, "ENV STEP{k}=\"${{VERSION:-dev}}-{k}\" MODE_{k}=${{COMMIT:+release}}");
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
    if let Some(p) = prev {
        let _ = writeln!(out, "COPY --from=stage{p} /opt/app{p}/bin/ /usr/local/bin/");
    }
    let _ = writeln!(out, "USER 1000:1000");
    let _ = writeln!(out, "EXPOSE 80{:02}/tcp", stage % 100);
    let _ = writeln!(out, "HEALTHCHECK --interval=30s CMD curl -f http://localhost/ || exit 1");
    let _ = writeln!(out, "CMD [\"app{stage}\", \"--serve\"]");
    let _ = writeln!(out);
}

/// A Dockerfile of at least `lines` lines: global ARGs, then chained stages.
fn generate(lines: usize) -> String {
    let mut out = String::from(
        "# syntax=docker/dockerfile:1\nARG BASE_IMAGE=debian\nARG BASE_TAG=bookworm-slim\n\n",
    );
    let mut stage = 0;
    while out.lines().count() < lines {
        stage_block(&mut out, stage, stage.checked_sub(1));
        stage += 1;
    }
    out.lines().take(lines).fold(String::new(), |mut s, l| {
        s.push_str(l);
        s.push('\n');
        s
    })
}

fn arg_value(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    let iterations = arg_value("--iterations", 200).max(1);
    let mut text = generate(lines);
    // Cut at a line boundary that does not end inside a heredoc or continuation: the last
    // complete stage block ends with a blank line.
    if let Some(cut) = text.rfind("\n\n") {
        text.truncate(cut + 1);
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

    let (mut parse_t, mut plan_t, mut total_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        let t0 = Instant::now();
        let df = parse(&text).expect("parses");
        let t1 = Instant::now();
        let plan = Plan::new(&df, options.clone()).expect("plans");
        let dispatched = plan.dispatch(&EmptyImages, &parse_trigger).expect("dispatches");
        let rendered = plan.render(Some(&dispatched));
        let t2 = Instant::now();
        std::hint::black_box(rendered);
        parse_t.push(t1 - t0);
        plan_t.push(t2 - t1);
        total_t.push(t2 - t0);
    }
    println!(
        "frontend: {line_count} lines, {} instructions, {} stages, {steps} steps, {iterations} iterations",
        df.nodes.len(),
        plan.stages.len()
    );
    for (what, v) in [("parse", parse_t), ("plan", plan_t), ("parse+plan", total_t)] {
        let (median, min, max) = stats(v);
        println!(
            "{what:<11} median {:>7.3} ms   min {:>7.3} ms   max {:>7.3} ms",
            ms(median),
            ms(min),
            ms(max)
        );
    }
}
