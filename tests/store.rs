//! The content store under stress and through the CLI: atomic ingest (dropped and killed
//! writers), concurrent writers of one blob (threads and processes), prune vs. references and
//! locks, and docker-style image lookup by ID prefix.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rbuild::image::{Descriptor, Digest, ImageConfig, ImageManifest, mediatype};
use rbuild::store::{Error, Store};

/// Set in child processes this test binary spawns of itself; holds the store root.
const CHILD_ROOT: &str = "RBUILD_STORE_TEST_CHILD_ROOT";

fn big_payload() -> Vec<u8> {
    (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn temp_files(store: &Store) -> Vec<String> {
    std::fs::read_dir(store.dir().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// Spawns this test binary running only `test`, as a child acting on `root`.
fn spawn_self(test: &str, root: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROOT, root)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn image(store: &Store, author: &str) -> (Descriptor, Digest) {
    let layer = store
        .write_blob(format!("layer of {author}").as_bytes())
        .unwrap();
    let cfg = store
        .put_config(&ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            author: Some(author.into()),
            ..Default::default()
        })
        .unwrap();
    let id = cfg.digest.clone();
    let layer = Descriptor::new(mediatype::OCI_LAYER_TAR, layer, author.len() as u64 + 9);
    let m = store
        .put_manifest(&ImageManifest::new_oci(cfg, vec![layer]))
        .unwrap();
    (m, id)
}

#[test]
fn dropped_writer_leaves_neither_blob_nor_temp_file() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let payload = big_payload();
    {
        let mut w = store.blob_writer().unwrap();
        w.write_all(&payload[..payload.len() / 2]).unwrap();
        assert_eq!(
            temp_files(&store).len(),
            1,
            "the writer streams into a temp file"
        );
    }
    assert!(!store.has_blob(&Digest::of(&payload)));
    assert!(!store.has_blob(&Digest::of(&payload[..payload.len() / 2])));
    assert!(temp_files(&store).is_empty());
}

#[test]
fn killed_writer_process_leaves_only_a_temp_file_that_prune_removes() {
    if let Ok(root) = std::env::var(CHILD_ROOT) {
        // Child: stream half the payload, then hang until killed.
        let store = Store::open(Path::new(&root)).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(&big_payload()[..4 << 20]).unwrap();
        w.flush().unwrap();
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let mut child = spawn_self(
        "killed_writer_process_leaves_only_a_temp_file_that_prune_removes",
        root.path(),
    );
    let start = Instant::now();
    loop {
        let grown = temp_files(&store).iter().any(|n| {
            std::fs::metadata(store.dir().join("blobs/sha256").join(n))
                .map(|m| m.len() >= 4 << 20)
                .unwrap_or(false)
        });
        if grown {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never wrote its temp file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!store.has_blob(&Digest::of(&big_payload()[..4 << 20])));
    assert_eq!(temp_files(&store).len(), 1);
    let report = store.prune().unwrap();
    assert_eq!(report.removed_temp_files, 1);
    assert!(report.reclaimed_bytes >= 4 << 20);
    assert!(temp_files(&store).is_empty());
}

#[test]
fn two_threads_write_the_same_blob() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let payload = big_payload();
    let digests: Vec<Digest> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut w = store.blob_writer().unwrap();
                    for chunk in payload.chunks(64 << 10) {
                        w.write_all(chunk).unwrap();
                    }
                    w.commit(Some(&Digest::of(&payload))).unwrap().0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(digests[0], digests[1]);
    assert_eq!(store.read_blob(&digests[0]).unwrap(), payload);
    assert!(temp_files(&store).is_empty());
}

#[test]
fn two_processes_write_the_same_blob() {
    let payload = big_payload();
    let digest = Digest::of(&payload);
    if let Ok(root) = std::env::var(CHILD_ROOT) {
        let store = Store::open(Path::new(&root)).unwrap();
        let mut w = store.blob_writer().unwrap();
        for chunk in payload.chunks(16 << 10) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.commit(Some(&digest)).unwrap().0, digest);
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| spawn_self("two_processes_write_the_same_blob", root.path()))
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a writer process failed");
    }
    let store = Store::open(root.path()).unwrap();
    assert_eq!(store.read_blob(&digest).unwrap(), payload);
    assert!(temp_files(&store).is_empty());
}

#[test]
fn prune_keeps_referenced_blobs_and_drops_untagged_ones() {
    let root = common::TestRoot::new();
    let store = Store::open(root.path()).unwrap();
    let (kept, kept_id) = image(&store, "kept");
    let (dropped, _) = image(&store, "dropped");
    store
        .put_image("docker.io/library/kept:1", &kept.digest)
        .unwrap();
    store
        .put_image("docker.io/library/dropped:1", &dropped.digest)
        .unwrap();
    let junk = store.write_blob(b"not referenced by anything").unwrap();

    common::run_ok(root.rbuild().args(["rmi", "dropped:1"]));
    let out = common::run_ok(root.rbuild().arg("prune"));
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert!(out.contains(&junk.to_string()), "{out}");
    assert!(!store.has_blob(&junk));
    assert!(!store.has_blob(&dropped.digest));
    let kept_image = store.read_image(&kept.digest, None).unwrap();
    assert_eq!(kept_image.manifest.config.digest, kept_id);
    for layer in &kept_image.manifest.layers {
        assert!(store.has_blob(&layer.digest));
    }
}

#[test]
fn prune_waits_for_gc_guard_holders() {
    let root = common::TestRoot::new();
    let store = Store::open(root.path()).unwrap();
    let junk = store.write_blob(b"junk").unwrap();
    let guard = store.gc_guard().unwrap();
    let mut prune = root
        .rbuild()
        .arg("prune")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        prune.try_wait().unwrap().is_none(),
        "prune ran while a build held the store"
    );
    assert!(store.has_blob(&junk));
    drop(guard);
    assert!(prune.wait().unwrap().success());
    assert!(!store.has_blob(&junk));
}

#[test]
fn images_resolve_by_unique_id_prefix_and_refuse_ambiguous_ones() {
    let root = common::TestRoot::new();
    let store = Store::open(root.path()).unwrap();
    // Make images until two IDs share their first hex digit (at most 17 by pigeonhole).
    let mut by_first: HashMap<char, Vec<(Descriptor, Digest)>> = HashMap::new();
    let mut n = 0;
    let (a, b) = loop {
        let (m, id) = image(&store, &format!("author {n}"));
        store
            .put_image(&format!("docker.io/library/img{n}:latest"), &m.digest)
            .unwrap();
        n += 1;
        let first = id.hex().chars().next().unwrap();
        let list = by_first.entry(first).or_default();
        list.push((m, id));
        if list.len() == 2 {
            break (list[0].clone(), list[1].clone());
        }
    };
    let shared = &a.1.hex()[..1];
    match store.resolve(shared) {
        Err(Error::AmbiguousId { matches, .. }) => assert_eq!(matches.len(), 2),
        other => panic!("expected an ambiguous prefix, got {other:?}"),
    }
    // The shortest unique prefix works, through the library and the CLI.
    let unique = (2..=64)
        .map(|len| &a.1.hex()[..len])
        .find(|p| !b.1.hex().starts_with(p))
        .unwrap();
    assert_eq!(store.resolve(unique).unwrap().id, a.1);
    let out = common::run_ok(root.rbuild().args(["inspect", unique]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["Id"], a.1.to_string());
    assert_eq!(json[0]["Descriptor"]["digest"], a.0.digest.to_string());

    common::run_ok(
        root.rbuild()
            .args(["tag", unique, "example.com/team/app:v2"]),
    );
    let again = store.resolve("example.com/team/app:v2").unwrap();
    assert_eq!(again.id, a.1);
    let ids = common::run_ok(root.rbuild().args(["images", "-q"]));
    assert_eq!(ids.lines().filter(|l| *l == a.1.short()).count(), 2);
    let table = common::run_ok(root.rbuild().arg("images"));
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains("example.com/team/app"), "{table}");

    let out = root.rbuild().args(["rmi", "nosuch:tag"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch:tag"));
}

#[test]
fn concurrent_taggers_in_two_processes_lose_no_names() {
    const PER_PROCESS: usize = 15;
    if let Ok(root) = std::env::var(CHILD_ROOT) {
        let store = Store::open(Path::new(&root)).unwrap();
        let (m, _) = image(&store, "shared");
        let me = std::process::id();
        for i in 0..PER_PROCESS {
            store
                .put_image(&format!("docker.io/library/p{me}:{i}"), &m.digest)
                .unwrap();
        }
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            spawn_self(
                "concurrent_taggers_in_two_processes_lose_no_names",
                root.path(),
            )
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a tagging process failed");
    }
    let store = Store::open(root.path()).unwrap();
    assert_eq!(store.list_images().unwrap().len(), 2 * PER_PROCESS);
    // The OCI index.json mirror lists every name too.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.dir().join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        2 * PER_PROCESS
    );
}

#[test]
fn prune_all_removes_images_and_build_cache_roots() {
    let root = common::TestRoot::new();
    let store = Store::open(root.path()).unwrap();
    let (m, _) = image(&store, "everything");
    store
        .put_image("docker.io/library/all:1", &m.digest)
        .unwrap();
    let cached = store.write_blob(b"cached layer").unwrap();
    store
        .set_gc_roots("build-cache", std::slice::from_ref(&cached))
        .unwrap();

    common::run_ok(root.rbuild().arg("prune"));
    assert!(
        store.has_blob(&m.digest) && store.has_blob(&cached),
        "plain prune keeps both"
    );

    let recent = common::run_ok(
        root.rbuild()
            .args(["prune", "--all", "--filter", "until=1h"]),
    );
    assert!(
        !recent.contains("deleted:"),
        "nothing is an hour old yet: {recent}"
    );
    assert!(store.has_blob(&cached));

    let out = common::run_ok(root.rbuild().args(["prune", "--all"]));
    assert!(out.contains("Removed 1 image(s)"), "{out}");
    assert!(store.list_images().unwrap().is_empty());
    assert!(store.gc_roots().unwrap().is_empty());
    assert!(!store.has_blob(&m.digest) && !store.has_blob(&cached));
    let left = std::fs::read_dir(store.dir().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "every blob goes with --all");
}
