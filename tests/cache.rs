//! Shared build cache: `--cache-to`/`--cache-from` through a real registry (`docker-registry`)
//! and OCI layout directories. A build on an empty `--root` importing the cache must reuse
//! every step and reproduce the image digest; changing one context file rebuilds only what
//! reads it; a repeated export sends nothing; cache mounts travel with `cache-mounts=true`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{Context, Registry, TestRoot, TokenPolicy, run_ok};

/// What one build reported: step names with whether each was cached, and the image digest.
struct Built {
    steps: BTreeMap<String, bool>,
    digest: String,
    /// Docker's image ID (the config digest).
    config: String,
    stderr: String,
}

impl Built {
    fn cached(&self) -> Vec<&str> {
        self.names(true)
    }

    fn rebuilt(&self) -> Vec<&str> {
        self.names(false)
    }

    fn names(&self, cached: bool) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|(_, c)| **c == cached)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Builds `ctx` on `root` with `--progress=rawjson` and `extra` flags.
fn build(root: &TestRoot, ctx: &Context, extra: &[&str]) -> Built {
    build_for(root, ctx, extra, None)
}

/// [`build`] with the credentials of `registry` (an authenticated one).
fn build_for(root: &TestRoot, ctx: &Context, extra: &[&str], registry: Option<&Registry>) -> Built {
    let meta = root.path().join("metadata.json");
    let mut cmd = root.rbuild();
    if let Some(r) = registry {
        r.configure_client(&mut cmd, &root.path().join("docker-config"));
    }
    cmd.args(["build", "--progress=rawjson", "--metadata-file"])
        .arg(&meta)
        .args(extra)
        .arg(ctx.path());
    let out = cmd.output().expect("running rbuild");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    let mut names = BTreeMap::new();
    let mut steps = BTreeMap::new();
    for line in stderr.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let id = v["id"].as_u64().unwrap_or(0);
        match v["kind"].as_str() {
            // FROM is a vertex too, CACHED only when the image was already local; the cache
            // is about the steps after it.
            Some("started")
                if !v["step"].is_null() && !v["name"].as_str().unwrap().contains("] FROM ") =>
            {
                names.insert(id, v["name"].as_str().unwrap().to_string());
            }
            Some(kind @ ("cached" | "finished")) => {
                if let Some(n) = names.get(&id) {
                    steps.insert(n.clone(), kind == "cached");
                }
            }
            _ => {}
        }
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata file")).unwrap();
    Built {
        steps,
        digest: meta["containerimage.digest"].as_str().unwrap().to_string(),
        config: meta["containerimage.config.digest"]
            .as_str()
            .unwrap()
            .to_string(),
        stderr,
    }
}

fn two_stage(base: &str) -> Context {
    Context::new()
        .dockerfile(&format!(
            "FROM {base} AS build\n\
             COPY a.txt /a.txt\n\
             RUN cat /a.txt > /b.txt && echo built >> /b.txt\n\
             FROM {base}\n\
             ENV MODE=test\n\
             COPY --from=build /b.txt /b.txt\n\
             COPY c.txt /c.txt\n\
             RUN cat /b.txt /c.txt > /d.txt\n\
             CMD [\"cat\", \"/d.txt\"]\n"
        ))
        .file("a.txt", "a\n")
        .file("c.txt", "c\n")
}

/// Counts requests that write to the registry (blob uploads, manifest PUTs).
fn writes(registry: &Registry) -> usize {
    registry
        .requests()
        .iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "PATCH"))
        .count()
}

#[test]
fn registry_cache_on_an_empty_root_reuses_every_step_and_the_digest() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let cache = registry.repo("app/cache:max");
    let ctx = two_stage(&base);

    let first_root = TestRoot::new();
    let to = format!("type=registry,ref={cache},mode=max");
    let first = build(&first_root, &ctx, &["--cache-to", &to]);
    assert!(first.cached().is_empty(), "{:?}", first.steps);
    assert_eq!(first.steps.len(), 5, "{:?}", first.steps);

    // The cache is a plain OCI manifest with rbuild's config media type.
    let manifest = common::image::raw_manifest(&registry, &cache);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.rbuild.cache.config.v1+json"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 5);

    // A no-change rebuild on the same root keeps the digest.
    let again = build(&first_root, &ctx, &[]);
    assert!(again.rebuilt().is_empty(), "{:?}", again.steps);
    assert_eq!(again.digest, first.digest);

    let from = format!("type=registry,ref={cache}");
    let second_root = TestRoot::new();
    let second = build(&second_root, &ctx, &["--cache-from", &from]);
    assert!(
        second.rebuilt().is_empty(),
        "every step should be CACHED: {:?}\n{}",
        second.steps,
        second.stderr
    );
    assert_eq!(second.digest, first.digest);

    // One changed file: only the COPY reading it and the steps after it rebuild.
    std::fs::write(ctx.join("c.txt"), "changed\n").unwrap();
    let third_root = TestRoot::new();
    let third = build(&third_root, &ctx, &["--cache-from", &from]);
    assert_eq!(
        third.rebuilt(),
        [
            "[stage-1 4/6] COPY c.txt /c.txt",
            "[stage-1 5/6] RUN cat /b.txt /c.txt > /d.txt"
        ],
        "{:?}",
        third.steps
    );
    assert_eq!(third.cached().len(), 3, "{:?}", third.steps);
}

#[test]
fn exporting_a_fully_cached_build_again_sends_nothing() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let cache = registry.repo("app/cache:again");
    let ctx = two_stage(&base);
    let root = TestRoot::new();
    let to = format!("type=registry,ref={cache},mode=max");
    build(&root, &ctx, &["--cache-to", &to]);
    let before = writes(&registry);
    let started = Instant::now();
    let again = build(&root, &ctx, &["--cache-to", &to]);
    eprintln!(
        "fully cached build with registry cache export: {:?}",
        started.elapsed()
    );
    assert!(again.rebuilt().is_empty(), "{:?}", again.steps);
    assert_eq!(
        writes(&registry),
        before,
        "a repeated export wrote to the registry: {:?}",
        registry.requests()
    );
}

/// The layer count of the cache manifest named `latest` in the OCI layout `dir`.
fn layout_layers(dir: &Path) -> usize {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.rbuild.cache.config.v1+json"
    );
    manifest["layers"].as_array().unwrap().len()
}

#[test]
fn local_cache_round_trip_and_min_exports_fewer_layers_than_max() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = two_stage(&base);
    let dirs = tempfile::tempdir().unwrap();
    let (min, max) = (dirs.path().join("min"), dirs.path().join("max"));
    let root = TestRoot::new();
    let first = build(
        &root,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={}", min.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", max.display()),
        ],
    );
    // min: the final stage's three layers; max: also the build stage's two.
    assert_eq!(layout_layers(&min), 3);
    assert_eq!(layout_layers(&max), 5);

    let fresh = TestRoot::new();
    let second = build(
        &fresh,
        &ctx,
        &["--cache-from", &format!("type=local,src={}", max.display())],
    );
    assert!(second.rebuilt().is_empty(), "{:?}", second.steps);
    assert_eq!(second.digest, first.digest);

    // With only the min cache the final stage's steps still hit: the build stage reruns but
    // produces the same key chain for COPY --from (its output is identical).
    let third = build(
        &TestRoot::new(),
        &ctx,
        &["--cache-from", &format!("type=local,src={}", min.display())],
    );
    assert!(
        third.rebuilt().contains(&"[build 2/3] COPY a.txt /a.txt"),
        "{:?}",
        third.steps
    );
}

#[test]
fn cache_mount_contents_travel_with_cache_mounts_true() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let cache = registry.repo("app/cache:mounts");
    let writer = Context::new().dockerfile(&format!(
        "FROM {base}\nRUN --mount=type=cache,id=shared,target=/cache echo from-first-root > /cache/note\n"
    ));
    build(
        &TestRoot::new(),
        &writer,
        &[
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max,cache-mounts=true"),
        ],
    );
    let manifest = common::image::raw_manifest(&registry, &cache);
    let annotated: Vec<&serde_json::Value> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["annotations"]["dev.rbuild.cache.mount.id"] == "shared")
        .collect();
    assert_eq!(annotated.len(), 1, "{manifest}");

    // A different RUN (not cached) on an empty root sees the imported mount contents.
    let reader = Context::new().dockerfile(&format!(
        "FROM {base}\nRUN --mount=type=cache,id=shared,target=/cache cp /cache/note /seen\n"
    ));
    let out = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    let built = build(
        &root,
        &reader,
        &[
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "-o",
            &format!("type=local,dest={}", out.path().display()),
        ],
    );
    assert_eq!(built.rebuilt().len(), 1, "{:?}", built.steps);
    assert_eq!(
        std::fs::read_to_string(out.path().join("seen")).unwrap(),
        "from-first-root\n"
    );
}

#[test]
fn unreachable_cache_from_is_a_warning_and_bad_specs_are_usage_errors() {
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY a /a\n")
        .file("a", "x");
    let root = TestRoot::new();
    // Port 9 (discard) on loopback: nothing listens there.
    let built = build(
        &root,
        &ctx,
        &["--cache-from", "type=registry,ref=127.0.0.1:9/nothing:here"],
    );
    assert!(
        built.stderr.contains("failed to import cache from"),
        "{}",
        built.stderr
    );
    let status = |args: &[&str]| {
        let mut cmd: Command = root.rbuild();
        cmd.arg("build").args(args).arg(ctx.path());
        cmd.output().unwrap()
    };
    let bad = status(&["--cache-to", "type=registry,mode=max"]);
    assert_eq!(bad.status.code(), Some(2));
    let gha = status(&["--cache-to", "type=gha"]);
    assert_eq!(gha.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&gha.stderr).contains("--cache-to type=gha is not supported yet")
    );
    run_ok(root.rbuild().arg("build").arg("-q").arg(ctx.path()));
}

/// The media types of the cache manifest's layers in the OCI layout `dir`.
fn layout_layer_types(dir: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let path = dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn zstd_cache_layers_are_recompressed_and_still_hit() {
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY a /a\nCOPY b /b\nENV X=1\n")
        .file("a", "alpha\n")
        .file("b", "beta\n");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = build(
        &TestRoot::new(),
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},compression=zstd", cache.display()),
        ],
    );
    assert_eq!(
        layout_layer_types(&cache),
        ["application/vnd.oci.image.layer.v1.tar+zstd"; 2]
    );
    let second = build(
        &TestRoot::new(),
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    assert!(second.rebuilt().is_empty(), "{:?}", second.steps);
    assert_eq!(second.cached().len(), 2);
    // The layers now are zstd ones, so the manifest differs; the config (diff_ids, history
    // times) is the same, so docker's image ID is too.
    assert_ne!(second.digest, first.digest);
    assert_eq!(second.config, first.config);
}

#[test]
fn config_only_steps_on_a_stage_of_the_build_keep_the_digest() {
    // The final stage adds no layer of its own: its times must come from the cached layers
    // of the stage it is built on, not from the clock.
    let ctx = Context::new()
        .dockerfile("FROM scratch AS base\nCOPY a /a\nFROM base\nENV X=1\nCMD [\"/a\"]\n")
        .file("a", "alpha\n");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = build(
        &TestRoot::new(),
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    // Builds in different seconds would differ if any time came from the clock.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let root = TestRoot::new();
    let second = build(
        &root,
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    assert!(second.rebuilt().is_empty(), "{:?}", second.steps);
    assert_eq!(second.digest, first.digest);
    let inspect = run_ok(root.rbuild().args(["inspect", &second.config]));
    assert!(!inspect.contains("\"created\": null"), "{inspect}");
}

#[test]
fn registry_cache_behind_token_auth() {
    let registry = Registry::start_with_token(TokenPolicy::new("ci", "ci-pass"));
    let cache = registry.repo("team/app:buildcache");
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY a /a\nCOPY b /b\n")
        .file("a", "alpha\n")
        .file("b", "beta\n");
    let to = format!("type=registry,ref={cache},mode=max");
    let first = build_for(
        &TestRoot::new(),
        &ctx,
        &["--cache-to", &to],
        Some(&registry),
    );
    let from = format!("type=registry,ref={cache}");
    let second = build_for(
        &TestRoot::new(),
        &ctx,
        &["--cache-from", &from],
        Some(&registry),
    );
    assert!(
        second.rebuilt().is_empty(),
        "{:?}\n{}",
        second.steps,
        second.stderr
    );
    assert_eq!(second.digest, first.digest);
    // Without credentials the cache cannot be read: a warning, and the steps run.
    let anonymous = build(&TestRoot::new(), &ctx, &["--cache-from", &from]);
    assert!(anonymous.cached().is_empty(), "{:?}", anonymous.steps);
    assert!(
        anonymous.stderr.contains("failed to import cache from"),
        "{}",
        anonymous.stderr
    );
}

/// A plain-HTTP proxy on 127.0.0.1 in front of `upstream`, one request per connection (it
/// forces `Connection: close`), that answers `503` to the first GET of a manifest and the
/// first two GETs of blobs, and counts the faults it injected.
fn start_flaky_proxy(upstream: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let injected = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    let seen = injected.clone();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let (upstream, counts, seen) = (upstream.clone(), counts.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut byte) {
                        // A TLS ClientHello: this proxy speaks plain HTTP only.
                        Ok(1) if head.is_empty() && byte[0] == 0x16 => return,
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut lines = text.split("\r\n");
                let request_line = lines.next().unwrap_or_default().to_string();
                let fail = {
                    let mut c = counts.lock().unwrap();
                    if request_line.starts_with("GET ") && request_line.contains("/manifests/") {
                        c.0 += 1;
                        c.0 == 1
                    } else if request_line.starts_with("GET ") && request_line.contains("/blobs/") {
                        c.1 += 1;
                        c.1 <= 2
                    } else {
                        false
                    }
                };
                if fail {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                let mut forwarded = format!("{request_line}\r\n");
                for h in lines.filter(|l| !l.is_empty()) {
                    if !h.to_ascii_lowercase().starts_with("connection:") {
                        forwarded.push_str(h);
                        forwarded.push_str("\r\n");
                    }
                }
                forwarded.push_str("Connection: close\r\n\r\n");
                if up.write_all(forwarded.as_bytes()).is_ok() {
                    let _ = std::io::copy(&mut up, &mut client);
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, injected)
}

#[test]
fn registry_cache_import_retries_transient_registry_errors() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = two_stage(&base);
    let cache = registry.repo("app/cache:flaky");
    let first = build(
        &TestRoot::new(),
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert!(first.cached().is_empty(), "{:?}", first.steps);

    // The cache manifest, its config and a layer each fail once with 503 on the way in.
    let (proxy, injected) = start_flaky_proxy(registry.addr());
    let from = format!("type=registry,ref={proxy}/app/cache:flaky");
    let second = build(&TestRoot::new(), &ctx, &["--cache-from", &from]);
    assert_eq!(
        injected.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "the proxy saw the manifest and blob GETs:\n{}",
        second.stderr
    );
    assert!(
        second.rebuilt().is_empty(),
        "every step should be CACHED despite the 503s: {:?}\n{}",
        second.steps,
        second.stderr
    );
    assert_eq!(second.digest, first.digest);
}
