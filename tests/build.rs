//! End-to-end builds through the `rbuild` binary, checked by real consumers:
//! `skopeo inspect` of OCI archives, `umoci unpack` and file comparison, a registry base image,
//! ONBUILD triggers, stdin Dockerfiles, and reproducibility under SOURCE_DATE_EPOCH.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Context, Registry, TestRoot, run_ok};

const EPOCH: &str = "1700000000";

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let out = run_ok(Command::new("skopeo").args(args));
    serde_json::from_str(&out).expect("skopeo JSON")
}

/// The image config exactly as stored in an OCI archive (skopeo's `--config` view drops
/// Docker's extensions such as Healthcheck).
fn archive_config(archive: &Path) -> serde_json::Value {
    let arch = format!("oci-archive:{}", archive.display());
    let manifest = skopeo_json(&["inspect", "--raw", &arch]);
    let digest = manifest["config"]["digest"].as_str().unwrap();
    let member = format!("blobs/{}", digest.replace(':', "/"));
    let out = run_ok(Command::new("tar").arg("-xOf").arg(archive).arg(member));
    serde_json::from_str(&out).expect("config JSON")
}

fn oci_build(root: &TestRoot, ctx: &Context, out: &Path, extra: &[&str]) -> String {
    let dest = format!("type=oci,dest={}", out.display());
    run_ok(
        root.rbuild()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "-q", "-o", &dest])
            .args(extra)
            .arg(ctx.path()),
    )
    .trim()
    .to_string()
}

fn multi_stage_context() -> Context {
    Context::new()
        .dockerfile(
            "FROM scratch AS assets\nCOPY --chmod=0600 secret.txt /s/secret.txt\nCOPY dir/ /d/\n\n\
             FROM scratch\nARG GREETING=hello\nENV GREETING=$GREETING PATH=/bin\nWORKDIR /app\n\
             COPY --from=assets /s/secret.txt ./\nCOPY --from=assets /d /data\nCOPY --chown=1234:5678 top.txt /top.txt\n\
             LABEL org.example.greeting=$GREETING\nEXPOSE 8080/tcp 53/udp\nVOLUME /data\nUSER 1234\n\
             ENTRYPOINT [\"/app/run\"]\nCMD [\"--help\"]\nSTOPSIGNAL SIGINT\n\
             HEALTHCHECK --interval=30s --retries=3 CMD [\"/app/run\", \"--check\"]\n",
        )
        .file("secret.txt", "s3cret\n")
        .file("dir/one.txt", "one\n")
        .file("dir/sub/two.txt", "two\n")
        .file("top.txt", "top\n")
        .file("ignored.log", "never copied\n")
        .file(".dockerignore", "*.log\n")
}

#[test]
fn multi_stage_scratch_image_is_read_by_skopeo_and_umoci() {
    let root = TestRoot::new();
    let ctx = multi_stage_context();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("img.tar");
    let id = oci_build(
        &root,
        &ctx,
        &archive,
        &["--label", "cli.label=yes", "-t", "multi:1"],
    );
    assert!(id.starts_with("sha256:"), "{id}");

    let arch = format!("oci-archive:{}", archive.display());
    let summary = skopeo_json(&["inspect", &arch]);
    assert_eq!(summary["Layers"].as_array().unwrap().len(), 4, "{summary}");
    assert_eq!(summary["Labels"]["org.example.greeting"], "hello");
    assert_eq!(summary["Labels"]["cli.label"], "yes");
    assert_eq!(summary["Created"], "2023-11-14T22:13:20Z");

    let config = archive_config(&archive);
    let c = &config["config"];
    assert_eq!(c["Env"], serde_json::json!(["PATH=/bin", "GREETING=hello"]));
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "1234");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/app/run"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--help"]));
    assert_eq!(c["StopSignal"], "SIGINT");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object() && c["ExposedPorts"]["53/udp"].is_object());
    assert!(c["Volumes"]["/data"].is_object());
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/app/run", "--check"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(c["Healthcheck"]["Retries"], 3);
    let history: Vec<(String, bool)> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            assert_eq!(h["created"], "2023-11-14T22:13:20Z");
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let expect: Vec<(&str, bool)> = vec![
        ("ARG GREETING=hello", true),
        ("ENV GREETING=hello PATH=/bin", true),
        ("WORKDIR /app", false),
        ("COPY /s/secret.txt ./ # buildkit", false),
        ("COPY /d /data # buildkit", false),
        ("COPY top.txt /top.txt # buildkit", false),
        ("LABEL org.example.greeting=hello", true),
        ("EXPOSE 53/udp 8080/tcp", true),
        ("VOLUME [/data]", true),
        ("USER 1234", true),
        ("ENTRYPOINT [\"/app/run\"]", true),
        ("CMD [\"--help\"]", true),
        ("STOPSIGNAL SIGINT", true),
        (
            "HEALTHCHECK &{[\"CMD\" \"/app/run\" \"--check\"] \"30s\" \"0s\" \"0s\" \"0s\" '\\x03'}",
            true,
        ),
    ];
    let got: Vec<(&str, bool)> = history.iter().map(|(s, e)| (s.as_str(), *e)).collect();
    assert_eq!(got, expect);

    // Unpack with umoci and compare the files.
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    );
    let bundle = work.path().join("bundle");
    let image = format!("{}:latest", layout.display());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let image =
        match index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].as_str() {
            Some(tag) => format!("{}:{tag}", layout.display()),
            None => image,
        };
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/secret.txt")).unwrap(),
        "s3cret\n"
    );
    let mode = std::fs::metadata(rootfs.join("app/secret.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("data/one.txt")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("data/sub/two.txt")).unwrap(),
        "two\n"
    );
    let top = std::fs::metadata(rootfs.join("top.txt")).unwrap();
    if rustix_is_root() {
        assert_eq!((top.uid(), top.gid()), (1234, 5678));
    }
    assert!(!rootfs.join("ignored.log").exists());
    assert!(rootfs.join("app").is_dir());
}

fn rustix_is_root() -> bool {
    // umoci only restores ownership when it runs as root.
    run_ok(Command::new("id").arg("-u")).trim() == "0"
}

#[test]
fn same_inputs_and_epoch_give_the_same_digest() {
    let ctx = multi_stage_context();
    let work = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for i in 0..2 {
        let root = TestRoot::new();
        let meta = work.path().join(format!("meta-{i}.json"));
        run_ok(
            root.rbuild()
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .args(["build", "-q", "--metadata-file"])
                .arg(&meta)
                .arg(ctx.path()),
        );
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        digests.push(m["containerimage.digest"].as_str().unwrap().to_string());
    }
    assert_eq!(digests[0], digests[1]);
    // A different epoch changes the config, so the digest.
    let root = TestRoot::new();
    let meta = work.path().join("meta-other.json");
    run_ok(
        root.rbuild()
            .args([
                "build",
                "-q",
                "--build-arg",
                "SOURCE_DATE_EPOCH=1600000000",
                "--metadata-file",
            ])
            .arg(&meta)
            .arg(ctx.path()),
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_ne!(m["containerimage.digest"].as_str().unwrap(), digests[0]);
}

#[test]
fn failing_run_reports_the_command_and_target_skips_it() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new()
        .dockerfile(&format!(
            "FROM {base} AS ok\nCOPY a /a\nFROM ok\nRUN echo failing; exit 3\n"
        ))
        .file("a", "a");
    let root = TestRoot::new();
    let out = root.rbuild().arg("build").arg(ctx.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // Vertices: #1 the base's metadata, #2 FROM, #3 COPY (stage ok), #4 the RUN; output lines
    // carry the step's time.
    assert!(
        err.contains("#4 [stage-1 2/2] RUN echo failing; exit 3"),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("#4 ") && l.ends_with(" failing")),
        "{err}"
    );
    assert!(err.contains("#4 ERROR: line 4: RUN: process"), "{err}");
    assert_eq!(
        err.lines().last().unwrap(),
        "rbuild: line 4: RUN: process \"/bin/sh -c echo failing; exit 3\" did not complete successfully: exit code: 3"
    );
    run_ok(
        root.rbuild()
            .args(["build", "-q", "--target", "ok"])
            .arg(ctx.path()),
    );
}

#[test]
fn tags_land_in_the_store_and_onbuild_triggers_fire() {
    let root = TestRoot::new();
    let base = Context::new()
        .dockerfile("FROM scratch\nCOPY base.txt /\nONBUILD COPY child.txt /from-trigger.txt\n")
        .file("base.txt", "base\n");
    run_ok(
        root.rbuild()
            .args(["build", "-q", "-t", "onbase:1"])
            .arg(base.path()),
    );
    let images = run_ok(root.rbuild().arg("images"));
    assert!(images.contains("onbase"), "{images}");

    let child = Context::new()
        .dockerfile("FROM onbase:1\nLABEL child=1\n")
        .file("child.txt", "child\n");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("child.tar");
    oci_build(&root, &child, &archive, &[]);
    let arch = format!("oci-archive:{}", archive.display());
    let config = skopeo_json(&["inspect", "--config", &arch]);
    let created: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        [
            "COPY base.txt / # buildkit",
            "ONBUILD COPY child.txt /from-trigger.txt",
            "COPY child.txt /from-trigger.txt # buildkit",
            "LABEL child=1",
        ]
    );
    assert!(config["config"]["OnBuild"].is_null(), "{config}");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
}

#[test]
fn dockerfile_from_stdin_with_and_without_context() {
    let root = TestRoot::new();
    let ctx = Context::new().file("f.txt", "f\n");
    let mut child = root
        .rbuild()
        .args(["build", "-q", "-f", "-"])
        .arg(ctx.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nCOPY f.txt /\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = root
        .rbuild()
        .args(["build", "-q", "-t", "nocontext", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nLABEL a=b\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let inspect = run_ok(root.rbuild().args(["inspect", "nocontext"]));
    assert!(
        inspect.contains(id.trim_start_matches("sha256:")),
        "{inspect}"
    );
}

#[test]
fn builds_on_a_registry_base_image_with_named_owner() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new()
        .dockerfile(&format!(
            "FROM {base}\nCOPY --chown=www-data:www-data site.html /srv/www/index.html\nWORKDIR /srv/app\nUSER nobody\n"
        ))
        .file("site.html", "<h1>hi</h1>\n");
    let root = TestRoot::new();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("img.tar");
    oci_build(&root, &ctx, &archive, &[]);
    let arch = format!("oci-archive:{}", archive.display());
    let config = skopeo_json(&["inspect", "--config", &arch]);
    assert_eq!(config["config"]["User"], "nobody");
    assert_eq!(config["config"]["WorkingDir"], "/srv/app");
    // The last two layers are ours; read the COPY layer's tar to check the owner.
    let manifest = skopeo_json(&["inspect", "--raw", &arch]);
    let layers = manifest["layers"].as_array().unwrap();
    assert!(layers.len() >= 3, "{manifest}");
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    );
    let copy_layer = layers[layers.len() - 2]["digest"]
        .as_str()
        .unwrap()
        .replace(':', "/");
    let listing = run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(layout.join("blobs").join(copy_layer)),
    );
    let line = listing
        .lines()
        .find(|l| l.ends_with("srv/www/index.html"))
        .expect(&listing);
    assert!(line.contains("33/33"), "{listing}");
}

#[test]
fn run_steps_execute_on_a_registry_base_image() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new()
        .dockerfile(&format!(
            "FROM {base} AS build\nARG WHO=world\nRUN echo \"hello $WHO\" > /greeting && mkdir -p /out && cp /greeting /out/g\n\
             FROM {base}\nCOPY --from=build /out/g /g\nRUN rm /bin/vi && test \"$(cat /g)\" = 'hello world'\n\
             RUN --mount=type=cache,target=/cache echo cached > /cache/x && cat /cache/x > /from-cache\n"
        ));
    let root = TestRoot::new();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("img.tar");
    oci_build(&root, &ctx, &archive, &["-t", "run:1"]);
    let config = archive_config(&archive);
    let history: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["created_by"].as_str())
        .collect();
    assert!(
        history.contains(
            &"RUN /bin/sh -c rm /bin/vi && test \"$(cat /g)\" = 'hello world' # buildkit"
        ),
        "{history:?}"
    );
    // The RUN layers hold the deletion as a whiteout and the file written through the cache.
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    );
    let manifest = skopeo_json(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", archive.display()),
    ]);
    let layers = manifest["layers"].as_array().unwrap();
    let list = |i: usize| {
        let blob = layers[i]["digest"].as_str().unwrap().replace(':', "/");
        run_ok(
            Command::new("tar")
                .arg("-tzf")
                .arg(layout.join("blobs").join(blob)),
        )
    };
    let n = layers.len();
    assert!(
        list(n - 2).lines().any(|l| l == "bin/.wh.vi"),
        "{}",
        list(n - 2)
    );
    assert!(
        list(n - 1).lines().any(|l| l == "from-cache"),
        "{}",
        list(n - 1)
    );
    assert!(
        !list(n - 1).lines().any(|l| l.starts_with("cache")),
        "{}",
        list(n - 1)
    );
}

#[test]
fn heredocs_in_run_and_copy() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base}\nARG NAME=heredoc\nCOPY <<EOF /etc/motd\nhello $NAME\nEOF\n\
         RUN <<EOF\nset -e\necho one > /one\necho two >> /one\nEOF\n\
         RUN cat <<EOT > /two\nfrom cat\nEOT\n\
         RUN test \"$(cat /etc/motd)\" = 'hello heredoc' && test \"$(cat /two)\" = 'from cat' && test \"$(wc -l < /one)\" -eq 2\n"
    ));
    let root = TestRoot::new();
    run_ok(root.rbuild().args(["build", "-q"]).arg(ctx.path()));
}

#[test]
fn second_build_reuses_cached_steps_until_inputs_change() {
    let root = TestRoot::new();
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY a.txt /a\nWORKDIR /w\nCOPY b.txt /b\n")
        .file("a.txt", "a\n")
        .file("b.txt", "b\n");
    let build = |extra: &[&str]| {
        let out = root
            .rbuild()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "--progress=plain"])
            .args(extra)
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // `--progress=plain` numbers the steps: #1 COPY a, #2 WORKDIR, #3 COPY b.
    let cached = |log: &str, id: u32| log.lines().any(|l| l == format!("#{id} CACHED"));
    let first = build(&[]);
    assert!(!first.contains("CACHED"), "{first}");
    assert!(
        first.contains("#1 [2/4] COPY a.txt /a\n#1 DONE "),
        "{first}"
    );
    let second = build(&[]);
    assert!(
        second.contains("#1 [2/4] COPY a.txt /a\n#1 CACHED"),
        "{second}"
    );
    assert!(
        second.contains("#2 [3/4] WORKDIR /w\n#2 CACHED"),
        "{second}"
    );
    assert!(
        second.contains("#3 [4/4] COPY b.txt /b\n#3 CACHED"),
        "{second}"
    );
    let id = |log: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix("Built "))
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .to_string()
    };
    assert_eq!(id(&first), id(&second));

    std::fs::write(ctx.join("b.txt"), "changed\n").unwrap();
    let third = build(&[]);
    assert!(cached(&third, 1), "{third}");
    assert!(
        third.contains("#3 [4/4] COPY b.txt /b\n#3 cache miss: file b.txt changed\n#3 DONE "),
        "{third}"
    );
    assert!(!cached(&third, 3), "{third}");
    assert_ne!(id(&first), id(&third));

    let fourth = build(&["--no-cache"]);
    assert!(!fourth.contains("CACHED"), "{fourth}");
    assert_eq!(id(&third), id(&fourth));
}

#[test]
fn push_iidfile_and_unused_build_arg_warning() {
    let registry = Registry::start();
    let ctx = Context::new()
        .dockerfile("FROM scratch\nARG USED=1\nCOPY f /f\nLABEL used=$USED\n")
        .file("f", "pushed\n");
    let root = TestRoot::new();
    let work = tempfile::tempdir().unwrap();
    let iid = work.path().join("iid");
    let name = format!("{}/built/app:1", registry.addr());
    let out = root
        .rbuild()
        .args([
            "build",
            "--push",
            "--build-arg",
            "NOPE=x",
            "-t",
            &name,
            "--iidfile",
        ])
        .arg(&iid)
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARNING: One or more build-args [NOPE] were not consumed"),
        "{err}"
    );
    let id = std::fs::read_to_string(&iid).unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // The push is reported under the export vertex (#2 after the COPY's #1).
    assert!(
        err.contains("#2 pushing layers done (0 already present, 0 mounted, 2 uploaded)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("#2 pushing manifest for {name}@sha256:")),
        "{err}"
    );
    let remote = skopeo_json(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{name}"),
    ]);
    assert_eq!(remote["config"]["Labels"]["used"], "1");
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        "--config",
        &format!("docker://{name}"),
    ]));
    assert_eq!(
        format!("sha256:{}", common_sha256(raw.as_bytes())),
        id.trim()
    );
}

fn common_sha256(bytes: &[u8]) -> String {
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("sha256sum | cut -d' ' -f1")
            .stdin({
                let f = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(f.path(), bytes).unwrap();
                std::fs::File::open(f.path()).unwrap()
            }),
    );
    out.trim().to_string()
}

#[test]
fn local_and_tar_outputs_hold_the_final_filesystem() {
    let ctx = Context::new()
        .dockerfile(
            "FROM scratch AS a\nCOPY x /x\nFROM scratch\nCOPY --from=a /x /y/x\nWORKDIR /w\n",
        )
        .file("x", "content\n");
    let root = TestRoot::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let tar = work.path().join("out.tar");
    run_ok(
        root.rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!("type=local,dest={}", dir.display()))
            .arg(ctx.path()),
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("y/x")).unwrap(),
        "content\n"
    );
    assert!(dir.join("w").is_dir());
    run_ok(
        root.rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!("type=tar,dest={}", tar.display()))
            .arg(ctx.path()),
    );
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&tar));
    assert!(
        listing.lines().any(|l| l.trim_start_matches("./") == "y/x"),
        "{listing}"
    );
}

#[test]
fn copy_from_an_image_reference() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new().dockerfile(&format!(
        "FROM scratch\nCOPY --from={base} /etc/passwd /etc/group /etc/\n"
    ));
    let root = TestRoot::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    run_ok(
        root.rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!("type=local,dest={}", dir.display()))
            .arg(ctx.path()),
    );
    let passwd = std::fs::read_to_string(dir.join("etc/passwd")).unwrap();
    assert!(passwd.contains("www-data:x:33:33"), "{passwd}");
    assert!(dir.join("etc/group").is_file());
}

#[test]
fn stage_based_on_a_named_context_directory() {
    let extra = Context::new()
        .file("bin/tool", "#!/bin/sh\n")
        .file("README", "r\n");
    let ctx = Context::new()
        .dockerfile("FROM tools\nCOPY local.txt /local.txt\n")
        .file("local.txt", "l\n");
    let root = TestRoot::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    run_ok(
        root.rbuild()
            .args(["build", "-q", "--build-context"])
            .arg(format!("tools={}", extra.path().display()))
            .arg("-o")
            .arg(format!("type=local,dest={}", dir.display()))
            .arg(ctx.path()),
    );
    assert!(dir.join("bin/tool").is_file());
    assert!(dir.join("README").is_file());
    assert!(dir.join("local.txt").is_file());
}

#[test]
fn run_layers_are_reproducible_under_source_date_epoch() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base}\nRUN mkdir -p /out && echo built > /out/file && rm -f /bin/wget\n"
    ));
    let work = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for i in 0..2 {
        let root = TestRoot::new();
        let meta = work.path().join(format!("meta-{i}.json"));
        run_ok(
            root.rbuild()
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .args(["build", "-q", "--metadata-file"])
                .arg(&meta)
                .arg(ctx.path()),
        );
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        digests.push(m["containerimage.digest"].as_str().unwrap().to_string());
        // RUN steps take at least a second apart so unclamped times would differ.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn secrets_reach_run_but_not_the_image() {
    let registry = Registry::start();
    let base = common::fixtures::busybox(&registry);
    let ctx = Context::new().dockerfile(&format!(
        "FROM {base}\nRUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOKEN \
         test \"$(cat /run/secrets/tok)\" = s3cret && test \"$TOKEN\" = s3cret && touch /ok\n\
         RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n"
    ));
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("tok");
    std::fs::write(&secret, "s3cret").unwrap();
    let out_dir = work.path().join("out");
    let root = TestRoot::new();
    run_ok(
        root.rbuild()
            .args(["build", "-q", "--secret"])
            .arg(format!("id=tok,src={}", secret.display()))
            .arg("-o")
            .arg(format!("type=local,dest={}", out_dir.display()))
            .arg(ctx.path()),
    );
    assert!(out_dir.join("ok").exists());
    assert!(!out_dir.join("run/secrets/tok").exists());
    let missing = Context::new().dockerfile(&format!(
        "FROM {base}\nRUN --mount=type=secret,id=need,required true\n"
    ));
    let out = root
        .rbuild()
        .arg("build")
        .arg(missing.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secret need not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
