//! Registry client against real programs: Debian's `docker-registry` (plain, htpasswd+TLS and
//! token-auth modes), `skopeo` reading what rbuild pushed, a token issuer
//! (`tests/tokenauth/issuer.py`) and a fault-injecting proxy written here.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Registry, TestRoot, run_ok};
use rbuild::image::{Descriptor, Digest, ImageIndex, ImageManifest, mediatype, to_canonical_json};
use rbuild::store::Store;

#[path = "tokenauth/mod.rs"]
mod tokenauth;

/// A small image written straight into the store at `root` and named `name`: one gzip layer
/// of `layer_bytes` bytes of pseudo-random content derived from `seed`, plus a config.
/// Returns the manifest digest.
fn make_image(root: &Path, name: &str, seed: u64, layer_bytes: usize) -> Digest {
    let desc = make_manifest(root, seed, layer_bytes, "amd64");
    Store::open(root)
        .unwrap()
        .put_image(name, &desc.digest)
        .unwrap();
    desc.digest
}

/// Like [`make_image`] for architecture `arch`, without naming it; returns its descriptor.
fn make_manifest(root: &Path, seed: u64, layer_bytes: usize, arch: &str) -> Descriptor {
    let store = Store::open(root).unwrap();
    let mut data = Vec::with_capacity(layer_bytes);
    let mut x = seed | 1;
    while data.len() < layer_bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(layer_bytes);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "data.bin", &data[..]).unwrap();
    let tar_bytes = tar.into_inner().unwrap();
    let diff_id = Digest::of(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&tar_bytes).unwrap();
    let gz = gz.finish().unwrap();
    let layer = store.write_blob(&gz).unwrap();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created_by": format!("test seed {seed}")}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = store.write_blob(&config_bytes).unwrap();
    let manifest = ImageManifest::new_oci(
        Descriptor::new(
            mediatype::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        vec![Descriptor::new(
            mediatype::OCI_LAYER_GZIP,
            layer,
            gz.len() as u64,
        )],
    );
    let (bytes, digest) = to_canonical_json(&manifest).unwrap();
    store.write_blob(&bytes).unwrap();
    Descriptor::new(mediatype::OCI_MANIFEST, digest, bytes.len() as u64)
}

/// Runs rbuild, returning (success, stdout, stderr).
fn rbuild_out(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("running rbuild");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        format!("{}\n({})", String::from_utf8_lossy(&out.stderr), out.status),
    )
}

/// The `digest:` printed by `rbuild push`.
fn pushed_digest(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in push output:\n{stdout}"))
        .to_string()
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn push_then_pull_round_trip_keeps_digests_and_second_push_skips_blobs() {
    let registry = Registry::start();
    let src = TestRoot::new();
    let name = format!("{}/round/trip:v1", registry.addr());
    let digest = make_image(src.path(), &name, 1, 64 * 1024);
    let out = run_ok(src.rbuild().args(["push", &name]));
    assert_eq!(pushed_digest(&out), digest.to_string(), "{out}");
    assert_eq!(count(&out, ": Pushed"), 1, "{out}");
    let uploads_after_first = count(&registry.log(), "PUT /v2/round/trip/blobs/uploads/");
    assert_eq!(
        uploads_after_first, 2,
        "config and layer uploaded once each"
    );

    // Second push: every blob is found by HEAD, nothing is uploaded.
    let (ok, out, err) = rbuild_out(src.rbuild().args(["push", &name]));
    assert!(ok, "{err}");
    assert_eq!(pushed_digest(&out), digest.to_string());
    assert!(
        err.contains("2 already present, 0 mounted, 0 uploaded"),
        "{err}"
    );
    assert_eq!(
        count(&registry.log(), "PUT /v2/round/trip/blobs/uploads/"),
        uploads_after_first
    );

    let dst = TestRoot::new();
    let out = run_ok(dst.rbuild().args(["pull", &name]));
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(count(&out, ": Pull complete"), 1, "{out}");
    let store = Store::open(dst.path()).unwrap();
    let record = store.resolve(&name).unwrap();
    assert_eq!(record.target.digest, digest);
    let image = store.read_image(&digest, None).unwrap();
    for layer in &image.manifest.layers {
        assert_eq!(
            store.read_blob(&layer.digest).unwrap().len() as u64,
            layer.size
        );
    }
    // Pulling again downloads nothing.
    let out = run_ok(dst.rbuild().args(["pull", &name]));
    assert!(out.contains("Image is up to date"), "{out}");
    assert_eq!(count(&out, ": Already exists"), 1, "{out}");
}

#[test]
fn skopeo_reads_what_rbuild_pushed() {
    let registry = Registry::start();
    let root = TestRoot::new();
    let name = format!("{}/skopeo/check:latest", registry.addr());
    let digest = make_image(root.path(), &name, 2, 32 * 1024);
    run_ok(root.rbuild().args(["push", &name]));
    let inspect = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], digest.to_string(), "{inspect}");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:x", layout.display()),
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.to_string());
}

#[test]
fn push_to_another_repository_mounts_known_blobs() {
    let registry = Registry::start();
    let root = TestRoot::new();
    let first = format!("{}/team/app:1", registry.addr());
    let digest = make_image(root.path(), &first, 3, 16 * 1024);
    run_ok(root.rbuild().args(["push", &first]));
    let second = format!("{}/other/app:1", registry.addr());
    let (ok, out, err) = rbuild_out(root.rbuild().args(["push", &first, &second]));
    assert!(ok, "{err}");
    assert_eq!(pushed_digest(&out), digest.to_string());
    assert!(
        err.contains("0 already present, 2 mounted, 0 uploaded"),
        "{err}"
    );
    let log = registry.log();
    assert_eq!(
        count(&log, "POST /v2/other/app/blobs/uploads/?mount="),
        2,
        "{log}"
    );
    assert!(
        log.contains("from=team%2Fapp") || log.contains("from=team/app"),
        "{log}"
    );
    assert_eq!(count(&log, "PUT /v2/other/app/blobs/uploads/"), 0);
}

#[test]
fn login_to_tls_registry_with_basic_auth_then_push_and_logout() {
    let registry = Registry::start_with_auth("alice", "s3cret");
    let root = TestRoot::new();
    let config = tempfile::tempdir().unwrap();
    let name = format!("{}/private/app:1", registry.addr());
    make_image(root.path(), &name, 4, 8 * 1024);
    let with_env = |mut cmd: Command| {
        cmd.env("DOCKER_CONFIG", config.path())
            .env("RBUILD_REGISTRY_CA", registry.ca_cert_path().unwrap());
        cmd
    };

    // Without credentials the push fails and says how to fix it.
    let (ok, _, err) = rbuild_out(with_env(root.rbuild()).args(["push", &name]));
    assert!(!ok);
    assert!(
        err.contains(&format!("rbuild login {}", registry.addr())),
        "{err}"
    );

    // A wrong password is refused by the registry and nothing is stored.
    let (ok, _, err) = login(with_env(root.rbuild()), &registry.addr(), "alice", "wrong");
    assert!(!ok && err.contains("login to"), "{err}");
    assert!(!config.path().join("config.json").exists());

    let (ok, out, err) = login(with_env(root.rbuild()), &registry.addr(), "alice", "s3cret");
    assert!(ok, "{err}");
    assert!(out.contains("Login Succeeded"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.path().join("config.json")).unwrap()).unwrap();
    assert!(cfg["auths"][registry.addr()]["auth"].is_string(), "{cfg}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(config.path().join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    run_ok(with_env(root.rbuild()).args(["push", &name]));
    let out = run_ok(with_env(root.rbuild()).args(["logout", &registry.addr()]));
    assert!(out.contains("Removing login credentials"), "{out}");
    let (ok, _, _) = rbuild_out(with_env(root.rbuild()).args(["push", &name]));
    assert!(!ok, "push after logout must fail");
}

fn login(mut cmd: Command, server: &str, user: &str, password: &str) -> (bool, String, String) {
    cmd.args(["login", "-u", user, "--password-stdin", server])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tls_verification_uses_the_configured_ca() {
    use rbuild::registry::{Client, ClientOptions, Credential, credentials};
    let registry = Registry::start_with_auth("bob", "pw");
    let creds = std::collections::HashMap::from([(
        credentials::auth_key(&registry.addr()),
        Credential::Basic {
            username: "bob".into(),
            password: "pw".into(),
        },
    )]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Verified TLS: trusting the test CA works ...
    let trusted = Client::new(ClientOptions {
        loopback_insecure: false,
        extra_ca_files: vec![registry.ca_cert_path().unwrap().to_path_buf()],
        credentials: creds.clone(),
        ..ClientOptions::default()
    });
    rt.block_on(trusted.check_login(&registry.addr())).unwrap();
    // ... and without it the certificate is rejected.
    let untrusted = Client::new(ClientOptions {
        loopback_insecure: false,
        extra_ca_files: vec![],
        certs_dirs: vec![],
        credentials: creds,
        retry: rbuild::registry::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        },
        ..ClientOptions::default()
    });
    let err = rt
        .block_on(untrusted.check_login(&registry.addr()))
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

fn write_config(dir: &Path, registry: &str, entry: serde_json::Value) {
    let json = serde_json::json!({ "auths": { registry: entry } });
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
}

#[test]
fn token_auth_push_pull_and_cross_repo_mount_with_a_two_scope_token() {
    use base64::Engine as _;
    let reg = tokenauth::TokenRegistry::start("carol", "tok-pw");
    let config = reg.scratch("docker-config");
    let auth = base64::engine::general_purpose::STANDARD.encode("carol:tok-pw");
    write_config(&config, &reg.addr(), serde_json::json!({ "auth": auth }));
    let root = TestRoot::new();
    let first = format!("{}/a/app:1", reg.addr());
    let digest = make_image(root.path(), &first, 5, 16 * 1024);
    let mut push = root.rbuild();
    push.env("DOCKER_CONFIG", &config).args(["push", &first]);
    assert_eq!(pushed_digest(&run_ok(&mut push)), digest.to_string());

    let second = format!("{}/b/app:1", reg.addr());
    let mut push = root.rbuild();
    push.env("DOCKER_CONFIG", &config)
        .args(["push", &first, &second]);
    let (ok, _, err) = rbuild_out(&mut push);
    assert!(ok, "{err}");
    assert!(err.contains("2 mounted"), "{err}");
    let two_scopes = reg.issuer_requests().into_iter().any(|r| {
        let scopes = r["scopes"].to_string();
        scopes.contains("repository:b/app:pull,push") && scopes.contains("repository:a/app:pull")
    });
    assert!(two_scopes, "{:?}", reg.issuer_requests());
    assert!(reg.registry_log().contains("mount="));

    let dst = TestRoot::new();
    let mut pull = dst.rbuild();
    pull.env("DOCKER_CONFIG", &config).args(["pull", &second]);
    assert!(run_ok(&mut pull).contains(&format!("Digest: {digest}")));

    // Once the source repositories are off limits, the mount is refused and the blobs are
    // uploaded instead.
    reg.deny(&["a/app", "b/app"]);
    let third = format!("{}/c/app:1", reg.addr());
    let mut push = root.rbuild();
    push.env("DOCKER_CONFIG", &config)
        .args(["push", &first, &third]);
    let (ok, _, err) = rbuild_out(&mut push);
    assert!(ok, "{err}");
    assert!(err.contains("0 mounted, 2 uploaded"), "{err}");
    reg.deny(&[]);

    // `rbuild login` on a token registry asks the token service, which checks the password.
    let login_dir = reg.scratch("login-config");
    let with_login = |mut cmd: Command| {
        cmd.env("DOCKER_CONFIG", &login_dir);
        cmd
    };
    let (ok, _, err) = login(with_login(dst.rbuild()), &reg.addr(), "carol", "nope");
    assert!(!ok && err.contains("bad credentials"), "{err}");
    let (ok, _, err) = login(with_login(dst.rbuild()), &reg.addr(), "carol", "tok-pw");
    assert!(ok, "{err}");
    run_ok(with_login(dst.rbuild()).args(["pull", &second]));

    // Without credentials the token service refuses, and the error names the fix.
    let empty = reg.scratch("no-config");
    let mut pull = TestRoot::new().rbuild();
    pull.env("DOCKER_CONFIG", &empty).args(["pull", &second]);
    let (ok, _, err) = rbuild_out(&mut pull);
    assert!(!ok);
    assert!(err.contains("rbuild login"), "{err}");
}

#[test]
fn identity_token_is_exchanged_with_an_oauth2_post() {
    let reg = tokenauth::TokenRegistry::start("dave", "pw2");
    let config = reg.scratch("docker-config");
    write_config(
        &config,
        &reg.addr(),
        serde_json::json!({ "identitytoken": reg.refresh_token() }),
    );
    let root = TestRoot::new();
    let name = format!("{}/oauth/app:1", reg.addr());
    make_image(root.path(), &name, 6, 4096);
    let mut push = root.rbuild();
    push.env("DOCKER_CONFIG", &config).args(["push", &name]);
    run_ok(&mut push);
    let requests = reg.issuer_requests();
    assert!(
        requests
            .iter()
            .all(|r| r["method"] == "POST" && r["user"] == "dave"),
        "{requests:?}"
    );
}

/// Faults the proxy injects, each exactly once while armed.
#[derive(Default)]
struct Faults {
    head_500: std::sync::atomic::AtomicBool,
    manifest_429: std::sync::atomic::AtomicBool,
    cut_blob_get: std::sync::atomic::AtomicBool,
    /// Only GETs of this blob are cut (small blobs would finish before the cut point).
    cut_digest: std::sync::Mutex<String>,
    cut_upload: std::sync::atomic::AtomicBool,
    saw_range: std::sync::atomic::AtomicBool,
    /// Every manifest PUT fails with 500 while set (not taken once).
    refuse_manifests: std::sync::atomic::AtomicBool,
    /// The first PATCH that does not start at byte 0 is dropped after part of its body,
    /// before anything reaches the registry (so the session can be resumed).
    drop_later_patch: std::sync::atomic::AtomicBool,
    /// `Content-Range` of every PATCH seen, in order.
    patches: std::sync::Mutex<Vec<String>>,
    /// GETs of an upload session (status queries).
    status_gets: std::sync::atomic::AtomicUsize,
}

impl Faults {
    fn take(flag: &std::sync::atomic::AtomicBool) -> bool {
        flag.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// A plain-HTTP proxy on 127.0.0.1 in front of `upstream`: one request per connection
/// (it forces `Connection: close`), so each request passes the fault checks.
fn start_fault_proxy(upstream: String, faults: std::sync::Arc<Faults>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (upstream, faults) = (upstream.clone(), faults.clone());
            std::thread::spawn(move || proxy_one(client, &upstream, &faults));
        }
    });
    addr
}

fn proxy_one(mut client: std::net::TcpStream, upstream: &str, faults: &Faults) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        let n = match client.read(&mut byte) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if buf.is_empty() && byte[0] == 0x16 {
            return; // a TLS ClientHello: this proxy speaks plain HTTP only
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let rest = buf[head_end..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let reply = |mut c: std::net::TcpStream, status: &str, extra: &str| {
        let _ = c.write_all(
            format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    };
    let is_blob = path.contains("/blobs/sha256:");
    if method == "HEAD" && is_blob && Faults::take(&faults.head_500) {
        return reply(client, "500 Internal Server Error", "");
    }
    if method == "GET" && path.contains("/manifests/") && Faults::take(&faults.manifest_429) {
        return reply(client, "429 Too Many Requests", "Retry-After: 1\r\n");
    }
    if method == "PUT"
        && path.contains("/manifests/")
        && faults.refuse_manifests.load(Ordering::SeqCst)
    {
        return reply(client, "500 Internal Server Error", "");
    }
    if method == "GET" && is_blob && header("range").is_some() {
        faults.saw_range.store(true, Ordering::SeqCst);
    }
    if method == "GET" && path.contains("/blobs/uploads/") {
        faults.status_gets.fetch_add(1, Ordering::SeqCst);
    }
    if method == "PATCH" {
        let range = header("content-range").unwrap_or_default();
        faults.patches.lock().unwrap().push(range.clone());
        if !range.starts_with("0-") && Faults::take(&faults.drop_later_patch) {
            // Swallow some of the body, then hang up without a response.
            let _ = std::io::copy(&mut (&mut client).take(256 * 1024), &mut std::io::sink());
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
    let body_len: u64 = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cut_request = (method == "PUT" || method == "PATCH")
        && body_len > 1024 * 1024
        && Faults::take(&faults.cut_upload);
    let cut_response = method == "GET"
        && is_blob
        && path.contains(faults.cut_digest.lock().unwrap().as_str())
        && Faults::take(&faults.cut_blob_get);

    let Ok(mut up) = std::net::TcpStream::connect(upstream) else {
        return;
    };
    let mut new_head = format!("{request_line}\r\n");
    for h in &headers {
        if !h.to_ascii_lowercase().starts_with("connection:") {
            new_head.push_str(h);
            new_head.push_str("\r\n");
        }
    }
    new_head.push_str("Connection: close\r\n\r\n");
    if up.write_all(new_head.as_bytes()).is_err() || up.write_all(&rest).is_err() {
        return;
    }
    let mut client_in = client.try_clone().unwrap();
    let mut up_out = up.try_clone().unwrap();
    let uploader = std::thread::spawn(move || {
        let limit = if cut_request { 512 * 1024 } else { u64::MAX };
        let _ = std::io::copy(&mut (&mut client_in).take(limit), &mut up_out);
        if cut_request {
            let _ = up_out.shutdown(std::net::Shutdown::Both);
            let _ = client_in.shutdown(std::net::Shutdown::Both);
        }
    });
    let limit = if cut_response { 300 * 1024 } else { u64::MAX };
    let _ = std::io::copy(&mut (&mut up).take(limit), &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = up.shutdown(std::net::Shutdown::Both);
    let _ = uploader.join();
}

#[test]
fn push_and_pull_complete_through_dropped_connections_500_and_429() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let registry = Registry::start();
    let faults = Arc::new(Faults::default());
    let proxy = start_fault_proxy(registry.addr(), faults.clone());
    let root = TestRoot::new();
    let name = format!("{proxy}/faulty/app:1");
    // Over 16 MiB so the layer goes up in PATCH chunks, one of which gets cut.
    let digest = make_image(root.path(), &name, 7, 20 * 1024 * 1024);
    faults.head_500.store(true, Ordering::SeqCst);
    faults.cut_upload.store(true, Ordering::SeqCst);
    let (ok, out, err) = rbuild_out(root.rbuild().args(["push", &name]));
    assert!(ok, "{err}");
    assert_eq!(pushed_digest(&out), digest.to_string());
    assert!(
        !faults.head_500.load(Ordering::SeqCst),
        "500 was not injected"
    );
    assert!(
        !faults.cut_upload.load(Ordering::SeqCst),
        "upload was not cut"
    );

    // What the registry holds (read directly, not through the proxy) is intact.
    let inspect = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/faulty/app:1", registry.addr()),
    ]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], digest.to_string());

    let layer = Store::open(root.path())
        .unwrap()
        .read_image(&digest, None)
        .unwrap()
        .manifest
        .layers[0]
        .digest
        .to_string();
    *faults.cut_digest.lock().unwrap() = layer;
    faults.manifest_429.store(true, Ordering::SeqCst);
    faults.cut_blob_get.store(true, Ordering::SeqCst);
    let dst = TestRoot::new();
    let (ok, out, err) = rbuild_out(dst.rbuild().args(["pull", &name]));
    assert!(ok, "{err}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(
        !faults.manifest_429.load(Ordering::SeqCst),
        "429 was not injected"
    );
    assert!(
        !faults.cut_blob_get.load(Ordering::SeqCst),
        "download was not cut"
    );
    assert!(
        faults.saw_range.load(Ordering::SeqCst),
        "download did not resume with Range"
    );
    let store = Store::open(dst.path()).unwrap();
    let image = store.read_image(&digest, None).unwrap();
    for layer in &image.manifest.layers {
        assert_eq!(
            store.read_blob(&layer.digest).unwrap().len() as u64,
            layer.size
        );
    }
}

#[test]
fn multi_platform_index_is_pushed_and_pull_picks_the_platform() {
    let registry = Registry::start();
    let root = TestRoot::new();
    let mut amd = make_manifest(root.path(), 8, 4096, "amd64");
    amd.platform = Some("linux/amd64".parse().unwrap());
    let mut arm = make_manifest(root.path(), 9, 4096, "arm64");
    arm.platform = Some("linux/arm64".parse().unwrap());
    let store = Store::open(root.path()).unwrap();
    let index = store
        .put_index(&ImageIndex::new_oci(vec![amd.clone(), arm.clone()]))
        .unwrap();
    let name = format!("{}/multi/app:1", registry.addr());
    store.put_image(&name, &index.digest).unwrap();
    let out = run_ok(root.rbuild().args(["push", &name]));
    assert_eq!(pushed_digest(&out), index.digest.to_string());
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]));
    assert_eq!(Digest::of(raw.as_bytes()), index.digest);

    let dst = TestRoot::new();
    let out = run_ok(
        dst.rbuild()
            .args(["pull", "--platform", "linux/arm64", &name]),
    );
    assert!(out.contains(&format!("Digest: {}", index.digest)), "{out}");
    let store = Store::open(dst.path()).unwrap();
    let record = store.resolve(&name).unwrap();
    assert_eq!(record.target.digest, arm.digest);
    assert!(
        !store.has_blob(&amd.digest),
        "only the chosen platform is fetched"
    );
    let (ok, _, err) = rbuild_out(
        dst.rbuild()
            .args(["pull", "--platform", "linux/s390x", &name]),
    );
    assert!(!ok);
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
}

#[test]
fn credentials_come_from_podman_auth_file_and_credential_helpers() {
    let registry = Registry::start_with_auth("erin", "pw3");
    let root = TestRoot::new();
    let name = format!("{}/creds/app:1", registry.addr());
    make_image(root.path(), &name, 10, 4096);
    let scratch = tempfile::tempdir().unwrap();
    let empty_docker = scratch.path().join("docker-empty");
    std::fs::create_dir(&empty_docker).unwrap();

    // podman's auth.json via REGISTRY_AUTH_FILE.
    use base64::Engine as _;
    let auth_file = scratch.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("erin:pw3");
    let json = serde_json::json!({ "auths": { registry.addr(): { "auth": auth } } });
    std::fs::write(&auth_file, json.to_string()).unwrap();
    let mut push = root.rbuild();
    push.env("DOCKER_CONFIG", &empty_docker)
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["push", &name]);
    run_ok(&mut push);

    // A credsStore helper: login stores through it, push reads through it, logout erases.
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-testhelper");
    let store_file = scratch.path().join("helper-store.json");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nset -e\nF={}\ncase \"$1\" in\n store) cat > \"$F\" ;;\n get) cat >/dev/null; if [ -f \"$F\" ]; then cat \"$F\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n erase) cat >/dev/null; rm -f \"$F\" ;;\nesac\n",
            store_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helper_docker = scratch.path().join("docker-helper");
    std::fs::create_dir(&helper_docker).unwrap();
    std::fs::write(
        helper_docker.join("config.json"),
        r#"{"credsStore":"testhelper"}"#,
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let with_helper = |mut cmd: Command| {
        cmd.env("DOCKER_CONFIG", &helper_docker)
            .env("PATH", &path)
            .env("REGISTRY_AUTH_FILE", scratch.path().join("none.json"));
        cmd
    };
    let (ok, _, err) = login(with_helper(root.rbuild()), &registry.addr(), "erin", "pw3");
    assert!(ok, "{err}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&store_file).unwrap()).unwrap();
    assert_eq!(stored["Username"], "erin");
    assert_eq!(stored["ServerURL"], registry.addr());
    let cfg = std::fs::read_to_string(helper_docker.join("config.json")).unwrap();
    assert!(
        !cfg.contains("pw3"),
        "secret must not land in config.json: {cfg}"
    );
    run_ok(with_helper(root.rbuild()).args(["push", &name]));
    run_ok(with_helper(root.rbuild()).args(["logout", &registry.addr()]));
    assert!(!store_file.exists());
}

#[test]
fn interrupted_push_leaves_no_tag_and_completes_when_rerun() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let registry = Registry::start();
    let faults = Arc::new(Faults::default());
    let proxy = start_fault_proxy(registry.addr(), faults.clone());
    let root = TestRoot::new();
    let name = format!("{proxy}/half/done:1");
    let digest = make_image(root.path(), &name, 11, 64 * 1024);
    faults.refuse_manifests.store(true, Ordering::SeqCst);
    let (ok, _, err) = rbuild_out(root.rbuild().args(["push", &name]));
    assert!(!ok, "push must fail while manifests are refused");
    assert!(err.contains("PUT /v2/half/done/manifests/1"), "{err}");
    assert!(err.contains("500"), "{err}");
    // The blobs went up, but no tag points at anything.
    let tags = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/half/done:1", registry.addr()))
        .output()
        .unwrap();
    assert!(
        !tags.status.success(),
        "tag must not exist after a failed push"
    );

    faults.refuse_manifests.store(false, Ordering::SeqCst);
    let (ok, out, err) = rbuild_out(root.rbuild().args(["push", &name]));
    assert!(ok, "{err}");
    assert_eq!(pushed_digest(&out), digest.to_string());
    assert!(
        err.contains("2 already present, 0 mounted, 0 uploaded"),
        "{err}"
    );

    // A missing image is reported with the registry's own words.
    let (ok, _, err) = rbuild_out(
        TestRoot::new()
            .rbuild()
            .args(["pull", &format!("{}/half/done:nope", registry.addr())]),
    );
    assert!(!ok);
    assert!(err.contains("manifest unknown"), "{err}");
    assert!(
        err.contains(&format!("{}/half/done", registry.addr())),
        "{err}"
    );
}

#[test]
fn chunked_upload_resumes_from_the_session_range_after_a_dropped_patch() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let registry = Registry::start();
    let faults = Arc::new(Faults::default());
    let proxy = start_fault_proxy(registry.addr(), faults.clone());
    let root = TestRoot::new();
    let name = format!("{proxy}/resume/app:1");
    // Three 16 MiB chunks; the second one is dropped.
    let digest = make_image(root.path(), &name, 13, 40 * 1024 * 1024);
    faults.drop_later_patch.store(true, Ordering::SeqCst);
    let (ok, out, err) = rbuild_out(root.rbuild().args(["push", &name]));
    assert!(ok, "{err}");
    assert_eq!(pushed_digest(&out), digest.to_string());
    assert!(
        !faults.drop_later_patch.load(Ordering::SeqCst),
        "no PATCH was dropped"
    );
    assert!(
        faults.status_gets.load(Ordering::SeqCst) >= 1,
        "no status GET"
    );
    let patches = faults.patches.lock().unwrap().clone();
    let chunk = 16 * 1024 * 1024u64;
    let layer_size = Store::open(root.path())
        .unwrap()
        .read_image(&digest, None)
        .unwrap()
        .manifest
        .layers[0]
        .size;
    assert_eq!(
        patches,
        vec![
            format!("0-{}", chunk - 1),
            format!("{chunk}-{}", 2 * chunk - 1),
            format!("{chunk}-{}", 2 * chunk - 1),
            format!("{}-{}", 2 * chunk, layer_size - 1),
        ],
        "the first chunk must not be sent again"
    );
    let inspect = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/resume/app:1", registry.addr()),
    ]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], digest.to_string());
    // Pulling it back verifies every blob's digest.
    run_ok(TestRoot::new().rbuild().args(["pull", &name]));
}

/// The last `Event::Bytes` per blob name, and how many there were, checking `id` and `action`.
fn byte_events(
    events: &[rbuild::progress::Event],
    vertex: u64,
    want: rbuild::progress::ByteAction,
) -> std::collections::BTreeMap<String, (u64, Option<u64>, usize)> {
    let mut last = std::collections::BTreeMap::new();
    for e in events {
        if let rbuild::progress::Event::Bytes {
            id,
            action,
            name,
            current,
            total,
        } = e
        {
            assert_eq!((*id, *action), (vertex, want), "{e:?}");
            let entry = last.entry(name.clone()).or_insert((0, None, 0));
            assert!(*current <= total.unwrap_or(u64::MAX), "{e:?}");
            *entry = (*current, *total, entry.2 + 1);
        }
    }
    last
}

#[test]
fn push_and_pull_report_byte_progress_for_every_blob() {
    use rbuild::progress::{ByteAction, Collect};
    use rbuild::registry::{
        Client, ClientOptions, Progress, PullOptions, PushOptions, Reference, pull_with_progress,
        push_with_progress,
    };
    let registry = Registry::start();
    let src = TestRoot::new();
    let name = format!("{}/bytes/app:1", registry.addr());
    // One layer big enough to go up in chunks, plus a small config (one streamed PUT).
    let digest = make_image(src.path(), &name, 17, 20 * 1024 * 1024);
    let store = Store::open(src.path()).unwrap();
    let image = store.read_image(&digest, None).unwrap();
    let mut blobs: Vec<(String, u64)> = vec![(
        image.manifest.config.digest.to_string(),
        image.manifest.config.size,
    )];
    blobs.extend(
        image
            .manifest
            .layers
            .iter()
            .map(|l| (l.digest.to_string(), l.size)),
    );
    let reference = Reference::parse(&name).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(ClientOptions::default());

    let collect = Collect::default();
    let started = std::time::Instant::now();
    let pushed = rt
        .block_on(push_with_progress(
            &client,
            &store,
            &digest,
            &reference,
            &PushOptions::default(),
            Progress {
                reporter: &collect,
                vertex: 4,
            },
        ))
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(pushed.sent, 2);
    let seen = byte_events(&collect.events(), 4, ByteAction::Push);
    assert_eq!(seen.len(), blobs.len(), "{seen:?}");
    for (digest, size) in &blobs {
        let (current, total, count) = seen[digest];
        assert_eq!((current, total), (*size, Some(*size)), "{digest}");
        // Throttled: about 4 a second, plus the first and the final one.
        assert!(
            count as f64 <= elapsed * 4.0 + 3.0,
            "{count} events in {elapsed}s"
        );
    }

    // A second push moves no bytes, so it reports none.
    let again = Collect::default();
    rt.block_on(push_with_progress(
        &client,
        &store,
        &digest,
        &reference,
        &PushOptions::default(),
        Progress {
            reporter: &again,
            vertex: 4,
        },
    ))
    .unwrap();
    assert!(byte_events(&again.events(), 4, ByteAction::Push).is_empty());

    let dst = TestRoot::new();
    let dst_store = Store::open(dst.path()).unwrap();
    let collect = Collect::default();
    rt.block_on(pull_with_progress(
        &client,
        &dst_store,
        &reference,
        &PullOptions::default(),
        Progress {
            reporter: &collect,
            vertex: 9,
        },
    ))
    .unwrap();
    let seen = byte_events(&collect.events(), 9, ByteAction::Pull);
    assert_eq!(seen.len(), blobs.len(), "{seen:?}");
    for (digest, size) in &blobs {
        assert_eq!(seen[digest].0, *size, "{digest}");
        assert_eq!(seen[digest].1, Some(*size), "{digest}");
    }
}

/// A name other than `localhost` that this machine resolves to a loopback address (Debian's
/// `/etc/hosts` maps the host name to 127.0.1.1), so a registry on 127.0.0.1 can be reached
/// through a host rbuild does not treat as insecure by default.
fn non_default_loopback_name() -> String {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    hosts
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip: std::net::IpAddr = words.next()?.parse().ok()?;
            ip.is_loopback()
                .then(|| words.find(|w| *w != "localhost" && !w.starts_with("localhost.")))
                .flatten()
                .map(str::to_string)
        })
        .next()
        .expect("/etc/hosts names no loopback host other than localhost")
}

/// `Event::Bytes` lines of a rawjson progress stream: (vertex, action, name, current, total).
fn rawjson_bytes(stderr: &str) -> Vec<(u64, String, String, u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "bytes")
        .map(|v| {
            (
                v["id"].as_u64().unwrap(),
                v["action"].as_str().unwrap().to_string(),
                v["name"].as_str().unwrap().to_string(),
                v["current"].as_u64().unwrap(),
                v["total"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn build_insecure_registry_applies_to_from_pulls_and_push() {
    let registry = Registry::start();
    let host = format!("{}:{}", non_default_loopback_name(), registry.port());
    let src = TestRoot::new();
    let base = format!("{host}/base/img:1");
    let base_digest = make_image(src.path(), &base, 19, 256 * 1024);
    run_ok(
        src.rbuild()
            .args(["push", "--insecure-registry", &host, &base]),
    );
    let layer = Store::open(src.path())
        .unwrap()
        .read_image(&base_digest, None)
        .unwrap()
        .manifest
        .layers[0]
        .clone();

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY hello.txt /hello.txt\n"),
    )
    .unwrap();
    std::fs::write(ctx.path().join("hello.txt"), "hi\n").unwrap();
    let ctx_arg = ctx.path().to_str().unwrap();

    // Without the flag, the plain-HTTP registry is refused, with the hint.
    let root = TestRoot::new();
    let (ok, _, err) = rbuild_out(root.rbuild().args(["build", "-t", "app", ctx_arg]));
    assert!(
        !ok,
        "FROM a plain-HTTP registry must need --insecure-registry"
    );
    assert!(
        err.contains(&format!("--insecure-registry {host}")),
        "{err}"
    );

    let app = format!("{host}/built/app:1");
    let (ok, _, err) = rbuild_out(root.rbuild().args([
        "build",
        "--progress=rawjson",
        "--insecure-registry",
        &host,
        "--push",
        "-t",
        &app,
        ctx_arg,
    ]));
    assert!(ok, "{err}");
    assert!(registry.has_tag("built/app", "1"));
    let bytes = rawjson_bytes(&err);
    // The FROM vertex (#2, after #1 loading the base's metadata) shows the base layer
    // pulled; the exporting vertex the pushed blobs.
    let pulled: Vec<_> = bytes.iter().filter(|b| b.1 == "pull").collect();
    assert!(
        pulled
            .iter()
            .any(|b| b.0 == 2 && b.2 == layer.digest.to_string() && b.3 == layer.size),
        "{err}"
    );
    let pushed: Vec<_> = bytes.iter().filter(|b| b.1 == "push").collect();
    assert!(!pushed.is_empty(), "{err}");
    let export_vertex = pushed[0].0;
    assert!(export_vertex > 2, "{err}");
    // The new COPY layer and the config went up; the base layer was mounted from base/img.
    for b in &pushed {
        assert_eq!(b.0, export_vertex, "{err}");
    }
    let finals = pushed.iter().filter(|b| b.3 == b.4).count();
    assert!(finals >= 2, "{err}");

    // `registry.insecure=true` in --output covers its own push without the flag.
    let other = format!("{host}/built/other:1");
    let (ok, _, err) = rbuild_out(root.rbuild().args([
        "build",
        "-o",
        &format!("type=image,name={other},push=true,registry.insecure=true"),
        ctx_arg,
    ]));
    assert!(ok, "{err}");
    assert!(registry.has_tag("built/other", "1"));
    let (ok, _, err) = rbuild_out(root.rbuild().args([
        "build",
        "-o",
        &format!("type=image,name={host}/built/third:1,push=true"),
        ctx_arg,
    ]));
    assert!(
        !ok,
        "a push to a plain-HTTP registry must need registry.insecure=true"
    );
    assert!(err.contains("--insecure-registry"), "{err}");
}
