//! Exporters against real consumers: a small image made by hand in the store (a static
//! busybox, a `cat` link and `/file`) is exported with rbuild's `--output` syntax and read back
//! with skopeo, umoci and podman.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild::export::{OutputSpec, export};
use rbuild::image::{
    Descriptor, Digest, History, ImageConfig, ImageIndex, ImageManifest, Platform, mediatype,
};
use rbuild::store::Store;

const FILE_CONTENT: &str = "hello from rbuild\n";

/// A store with one image named `name`; returns the manifest descriptor.
fn make_image(root: &Path, name: &str) -> (Store, Descriptor) {
    let store = Store::open(root).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    tar.append_data(&mut dir, "bin/", std::io::empty()).unwrap();
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", &busybox[..])
        .unwrap();
    for applet in ["cat", "sh"] {
        let mut l = tar::Header::new_ustar();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        l.set_mode(0o777);
        tar.append_link(&mut l, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let mut f = tar::Header::new_ustar();
    f.set_mode(0o644);
    f.set_size(FILE_CONTENT.len() as u64);
    tar.append_data(&mut f, "file", FILE_CONTENT.as_bytes())
        .unwrap();
    let plain = tar.into_inner().unwrap();
    let diff_id = Digest::of(&plain);

    let mut gz =
        flate2::write::GzEncoder::new(store.blob_writer().unwrap(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let (layer_digest, layer_size) = gz.finish().unwrap().commit(None).unwrap();

    let host = Platform::host();
    let mut config = ImageConfig {
        architecture: host.architecture.clone(),
        os: host.os.clone(),
        variant: host.variant.clone(),
        created: Some("2024-01-01T00:00:00Z".into()),
        ..Default::default()
    };
    config.config.env = vec!["PATH=/bin".into()];
    config.config.cmd = Some(vec!["/bin/cat".into(), "/file".into()]);
    config.rootfs.diff_ids = vec![diff_id];
    config.history = vec![History {
        created_by: Some("hand-made test layer".into()),
        ..Default::default()
    }];
    let config_desc = store.put_config(&config).unwrap();
    let layer = Descriptor::new(mediatype::OCI_LAYER_GZIP, layer_digest, layer_size);
    let manifest = store
        .put_manifest(&ImageManifest::new_oci(config_desc, vec![layer]))
        .unwrap();
    store.put_image(name, &manifest.digest).unwrap();
    (store, manifest)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo_inspect(transport: &str) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(Command::new("skopeo")
        .env("TMPDIR", tmp.path())
        .args(["inspect", transport]));
    serde_json::from_str(&out).unwrap()
}

fn skopeo_raw(transport: &str) -> serde_json::Value {
    let out = run(Command::new("skopeo").args(["inspect", "--raw", transport]));
    serde_json::from_str(&out).unwrap()
}

fn out_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[test]
fn oci_archive_is_read_by_skopeo_with_the_same_digest() {
    let root = tempfile::tempdir().unwrap();
    let (store, manifest) = make_image(root.path(), "docker.io/library/exp:1");
    let dest = out_path(root.path(), "image.tar");
    let spec = OutputSpec::parse(&format!("type=oci,dest={}", dest.display())).unwrap();
    let names = vec!["docker.io/library/exp:1".to_string()];
    let exported = export(&store, &manifest, &names, None, &spec).unwrap();
    assert_eq!(
        exported.digest, manifest.digest,
        "OCI export must not rewrite an OCI image"
    );
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "archives are ordinary output files");

    let info = skopeo_inspect(&format!("oci-archive:{}", dest.display()));
    assert_eq!(info["Digest"], manifest.digest.to_string());
    assert_eq!(info["Env"][0], "PATH=/bin");
    let tagged = skopeo_inspect(&format!("oci-archive:{}:1", dest.display()));
    assert_eq!(tagged["Digest"], manifest.digest.to_string());

    // index.json carries both name annotations.
    let listing = run(Command::new("tar").arg("-xOf").arg(&dest).arg("index.json"));
    let index: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["io.containerd.image.name"], "docker.io/library/exp:1");
    assert_eq!(ann["org.opencontainers.image.ref.name"], "1");
}

#[test]
fn oci_directory_unpacks_with_umoci() {
    let root = tempfile::tempdir().unwrap();
    let (store, manifest) = make_image(root.path(), "docker.io/library/exp:dir");
    let dest = out_path(root.path(), "layout");
    let spec = OutputSpec::parse(&format!("type=oci,dest={},tar=false", dest.display())).unwrap();
    export(
        &store,
        &manifest,
        &["docker.io/library/exp:dir".into()],
        None,
        &spec,
    )
    .unwrap();

    let bundle = root.path().join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !rustix::process::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    run(cmd
        .arg("--image")
        .arg(format!("{}:dir", dest.display()))
        .arg(&bundle));
    let content = std::fs::read_to_string(bundle.join("rootfs/file")).unwrap();
    assert_eq!(content, FILE_CONTENT);
    assert!(bundle.join("rootfs/bin/cat").is_symlink());
}

#[test]
fn docker_media_types_change_the_digest_and_skopeo_reads_them() {
    let root = tempfile::tempdir().unwrap();
    let (store, manifest) = make_image(root.path(), "docker.io/library/exp:dm");
    let dest = out_path(root.path(), "docker-types.tar");
    let spec = OutputSpec::parse(&format!(
        "type=oci,dest={},oci-mediatypes=false",
        dest.display()
    ))
    .unwrap();
    let exported = export(&store, &manifest, &[], None, &spec).unwrap();
    assert_ne!(exported.digest, manifest.digest);
    assert_eq!(exported.media_type, mediatype::DOCKER_MANIFEST);

    let raw = skopeo_raw(&format!("oci-archive:{}", dest.display()));
    assert_eq!(raw["mediaType"], mediatype::DOCKER_MANIFEST);
    assert_eq!(raw["config"]["mediaType"], mediatype::DOCKER_CONFIG);
    assert_eq!(raw["layers"][0]["mediaType"], mediatype::DOCKER_LAYER_GZIP);
    let info = skopeo_inspect(&format!("oci-archive:{}", dest.display()));
    assert_eq!(info["Digest"], exported.digest.to_string());
}

#[test]
fn forced_zstd_recompression_keeps_the_diff_id() {
    let root = tempfile::tempdir().unwrap();
    let (store, manifest) = make_image(root.path(), "docker.io/library/exp:zstd");
    let dest = out_path(root.path(), "zstd.tar");
    let spec = OutputSpec::parse(&format!(
        "type=oci,dest={},compression=zstd,force-compression=true",
        dest.display()
    ))
    .unwrap();
    let exported = export(&store, &manifest, &[], None, &spec).unwrap();
    let image = store.read_image(&exported.digest, None).unwrap();
    assert_eq!(
        image.manifest.layers[0].media_type,
        mediatype::OCI_LAYER_ZSTD
    );
    let original = store.read_image(&manifest.digest, None).unwrap();
    assert_eq!(
        image.config.rootfs.diff_ids,
        original.config.rootfs.diff_ids
    );

    // The zstd CLI decompresses the exported layer back to the original diffID.
    let dest_dir = root.path().join("unpacked");
    std::fs::create_dir_all(&dest_dir).unwrap();
    let blob = format!("blobs/sha256/{}", image.manifest.layers[0].digest.hex());
    run(Command::new("tar")
        .arg("-xf")
        .arg(&dest)
        .arg("-C")
        .arg(&dest_dir)
        .arg(&blob));
    let plain = run(Command::new("sh").arg("-c").arg(format!(
        "zstd -dc {} | sha256sum",
        dest_dir.join(&blob).display()
    )));
    assert_eq!(
        format!("sha256:{}", plain.split_whitespace().next().unwrap()),
        original.config.rootfs.diff_ids[0].to_string()
    );
    let info = skopeo_inspect(&format!("oci-archive:{}", dest.display()));
    assert_eq!(info["Digest"], exported.digest.to_string());
}

#[test]
fn docker_archive_is_read_by_skopeo_and_runs_in_podman() {
    let root = tempfile::tempdir().unwrap();
    let tag = format!("rbuild-export-test-{}", std::process::id());
    let name = format!("docker.io/library/{tag}:latest");
    let (store, manifest) = make_image(root.path(), &name);
    let dest = out_path(root.path(), "docker.tar");
    let spec = OutputSpec::parse(&format!("type=docker,dest={}", dest.display())).unwrap();
    let exported = export(&store, &manifest, std::slice::from_ref(&name), None, &spec).unwrap();
    assert_eq!(exported.media_type, mediatype::DOCKER_MANIFEST);

    let info = skopeo_inspect(&format!("docker-archive:{}", dest.display()));
    assert_eq!(info["Env"][0], "PATH=/bin");
    let listing = run(Command::new("tar")
        .arg("-xOf")
        .arg(&dest)
        .arg("manifest.json"));
    let legacy: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(legacy[0]["RepoTags"][0], format!("{tag}:latest"));

    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("podman is not installed: skipping the podman load/run half");
        return;
    }
    let storage = tempfile::tempdir().unwrap();
    run(&mut common::podman::podman(
        storage.path(),
        &["load", "-i", dest.to_str().unwrap()],
    ));
    let image = format!("docker.io/library/{tag}:latest");
    let out = run(&mut common::podman::podman(
        storage.path(),
        &common::podman::run_args(&image, &["cat", "/file"]),
    ));
    assert_eq!(out, FILE_CONTENT);
}

#[test]
fn local_and_tar_outputs_hold_the_final_filesystem() {
    let root = tempfile::tempdir().unwrap();
    let (store, manifest) = make_image(root.path(), "docker.io/library/exp:fs");
    let dir = root.path().join("rootfs");
    export(
        &store,
        &manifest,
        &[],
        None,
        &OutputSpec::parse(dir.to_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("file")).unwrap(),
        FILE_CONTENT
    );
    assert_eq!(
        std::fs::read_link(dir.join("bin/cat")).unwrap(),
        Path::new("busybox")
    );

    let tarball = root.path().join("fs.tar");
    let spec = OutputSpec::parse(&format!("type=tar,dest={}", tarball.display())).unwrap();
    export(&store, &manifest, &[], None, &spec).unwrap();
    let listing = run(Command::new("tar").arg("-tf").arg(&tarball));
    let names: Vec<&str> = listing.lines().collect();
    assert!(
        names.iter().any(|n| n.trim_start_matches("./") == "file"),
        "{listing}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "bin/busybox"),
        "{listing}"
    );
    let content = run(Command::new("tar").arg("-xOf").arg(&tarball).arg("file"));
    assert_eq!(content, FILE_CONTENT);
}

#[test]
fn multi_platform_index_exports_whole_to_oci_and_narrows_for_docker() {
    let root = tempfile::tempdir().unwrap();
    let (store, host_manifest) = make_image(root.path(), "docker.io/library/multi:host");
    // A second platform sharing the layer, with its own config.
    let host_image = store.read_image(&host_manifest.digest, None).unwrap();
    let other_arch = if host_image.config.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mut other_config = host_image.config.clone();
    other_config.architecture = other_arch.into();
    other_config.variant = None;
    let other_cfg = store.put_config(&other_config).unwrap();
    let other = store
        .put_manifest(&ImageManifest::new_oci(
            other_cfg,
            host_image.manifest.layers.clone(),
        ))
        .unwrap();
    let mut entries = vec![host_manifest.clone(), other.clone()];
    entries[0].platform = Some(Platform::host());
    entries[1].platform = Some(format!("linux/{other_arch}").parse().unwrap());
    let index = store.put_index(&ImageIndex::new_oci(entries)).unwrap();
    let name = "docker.io/library/multi:1".to_string();
    store.put_image(&name, &index.digest).unwrap();

    let oci = root.path().join("multi-oci.tar");
    let spec = OutputSpec::parse(&format!("type=oci,dest={}", oci.display())).unwrap();
    export(&store, &index, std::slice::from_ref(&name), None, &spec).unwrap();
    let raw = skopeo_raw(&format!("oci-archive:{}", oci.display()));
    assert_eq!(raw["mediaType"], mediatype::OCI_INDEX);
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
    let tmp = tempfile::tempdir().unwrap();
    let other_info = run(Command::new("skopeo")
        .env("TMPDIR", tmp.path())
        .args(["--override-arch", other_arch, "inspect"])
        .arg(format!("oci-archive:{}", oci.display())));
    let other_info: serde_json::Value = serde_json::from_str(&other_info).unwrap();
    assert_eq!(other_info["Architecture"], other_arch);

    let docker = root.path().join("multi-docker.tar");
    let spec = OutputSpec::parse(&format!("type=docker,dest={}", docker.display())).unwrap();
    export(&store, &index, std::slice::from_ref(&name), None, &spec).unwrap();
    let info = skopeo_inspect(&format!("docker-archive:{}", docker.display()));
    assert_eq!(info["Architecture"], Platform::host().architecture);
}
