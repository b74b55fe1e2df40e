//! COPY writes the owners files have in the image, not the owners of the roots rbuild unpacks
//! on disk to read them: those belong to whoever runs the build (rootless, `rbuild-test`), and
//! a stage skeleton's files have no inode of their own.
//!
//! The `rootless_` name makes `scripts/test` run this binary again as the unprivileged test
//! user; every check here must hold both as root and as that user. The layer tars of the built
//! image are read as written (`-o type=oci,tar=false`), not unpacked.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::image::{LayerEntry, read_layer};
use common::{Context, TestRoot, run_ok};
use rbuild::layer::{Compression, EntryMeta, LayerWriter};

const EPOCH: &str = "1700000000";

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Builds `ctx` (extra `args` before it) into an OCI layout directory; returns the entries of
/// each layer of the image, base layers first, by path.
fn build_layers(ctx: &Context, args: &[String]) -> Vec<Layer> {
    build_layers_with_mtimes(ctx, args).0
}

/// Entries of one layer by path.
type Layer = BTreeMap<String, LayerEntry>;
/// Header mtimes of one layer's entries by path.
type Mtimes = BTreeMap<String, u64>;

/// [`build_layers`], with each layer's entry mtimes as well.
fn build_layers_with_mtimes(ctx: &Context, args: &[String]) -> (Vec<Layer>, Vec<Mtimes>) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("oci");
    let root = TestRoot::new();
    run_ok(
        root.rbuild()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "--progress", "plain"])
            .args(args)
            .arg("-o")
            .arg(format!("type=oci,tar=false,dest={}", out.display()))
            .arg(ctx.path()),
    );
    let index = read_json(&out.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read_json(&blob_path(&out, manifest_digest));
    (manifest["layers"].as_array().unwrap().iter())
        .map(|l| {
            let path = blob_path(&out, l["digest"].as_str().unwrap());
            let media_type = l["mediaType"].as_str().unwrap();
            let entries = read_layer(&path, media_type)
                .into_iter()
                .map(|e| (e.path.clone(), e))
                .collect();
            (entries, mtimes(&path, media_type))
        })
        .unzip()
}

/// The mtime each entry of the (gzip or zstd) layer at `path` has in its header.
fn mtimes(path: &Path, media_type: &str) -> BTreeMap<String, u64> {
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn std::io::Read> = if media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).unwrap())
    } else {
        Box::new(flate2::read::GzDecoder::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    (archive.entries().unwrap())
        .map(|e| {
            let e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let name = name
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            (name, e.header().mtime().unwrap())
        })
        .collect()
}

fn owner(layer: &BTreeMap<String, LayerEntry>, path: &str) -> (u64, u64) {
    let e = layer
        .get(path)
        .unwrap_or_else(|| panic!("{path} is not in the layer: {:?}", layer.keys()));
    (e.uid, e.gid)
}

/// A stage whose files a RUN created as root and chowned to 1000: `COPY --from` writes those
/// owners into the next image (BuildKit keeps a `--from` source's owners), not the building
/// user's, for named files and for a directory's contents.
#[test]
fn copy_from_a_stage_keeps_the_owners_its_run_gave() {
    let busybox = common::fixtures::busybox_layout();
    let ctx = Context::new().dockerfile(
        "FROM busybox AS build\n\
         RUN mkdir -p /src/sub && echo root > /src/root-file && echo app > /src/app-file \
         && echo deep > /src/sub/deep && chown 1000:1000 /src/app-file /src/sub \
         && chown 1000:1001 /src/sub/deep\n\
         FROM scratch\n\
         COPY --from=build /src/root-file /src/app-file /one/\n\
         COPY --from=build /src/ /all/\n",
    );
    let layers = build_layers(
        &ctx,
        &[
            "--build-context".into(),
            format!("busybox=oci-layout://{}:latest", busybox.display()),
        ],
    );
    assert_eq!(layers.len(), 2, "two COPY layers on scratch");
    let one = &layers[0];
    assert_eq!(owner(one, "one"), (0, 0));
    assert_eq!(owner(one, "one/root-file"), (0, 0));
    assert_eq!(owner(one, "one/app-file"), (1000, 1000));
    assert_eq!(one["one/app-file"].content, b"app\n");
    let all = &layers[1];
    assert_eq!(owner(all, "all/root-file"), (0, 0));
    assert_eq!(owner(all, "all/app-file"), (1000, 1000));
    assert_eq!(owner(all, "all/sub"), (1000, 1000));
    assert_eq!(owner(all, "all/sub/deep"), (1000, 1001));
}

fn meta(mode: u32, id: u32) -> EntryMeta {
    let mut m = EntryMeta::with_mode(mode);
    m.mtime = 1_600_000_000;
    m.uid = id;
    m.gid = id;
    m
}

/// An OCI layout at `layout`, tagged `v1`: one layer with `home/` (0:0) and `home/app/`
/// (1000:1000, 0750) holding a file of 1000's, and a `/srv` owned by 1000 that a second
/// layer's opaque marker and files owned by 7 replace.
fn base_layout(layout: &Path) {
    let mut w = LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap();
    w.append_dir("home", &meta(0o755, 0)).unwrap();
    w.append_dir("home/app", &meta(0o750, 1000)).unwrap();
    w.append_file("home/app/.profile", &meta(0o644, 1000), &b"x"[..], 1)
        .unwrap();
    w.append_dir("srv", &meta(0o755, 1000)).unwrap();
    w.append_dir("srv/data", &meta(0o700, 1000)).unwrap();
    let lower = w.finish().unwrap();
    let mut w = LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap();
    w.append_dir("srv", &meta(0o755, 7)).unwrap();
    w.append_opaque("srv").unwrap();
    w.append_dir("srv/data", &meta(0o711, 7)).unwrap();
    let upper = w.finish().unwrap();
    common::layout::write_oci_layout(
        layout,
        &[(lower.sink, lower.diff_id), (upper.sink, upper.diff_id)],
        "v1",
    );
}

/// A COPY into existing directories of the base image lists them in its layer (as BuildKit's
/// does) with the image's owner, mode and mtime, not the unpacked skeleton's owners; the same
/// for a directory an opaque marker of a later layer replaced, and for one an earlier COPY of
/// the stage created.
#[test]
fn copy_into_existing_base_directories_keeps_their_image_metadata() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("base");
    base_layout(&layout);
    let ctx = Context::new()
        .dockerfile(
            "FROM base\nCOPY f /home/app/\nCOPY f /srv/data/\n\
             COPY --chown=1000:1001 f /opt/tool/\nCOPY f /opt/tool/g\n",
        )
        .file("f", "f\n");
    let (layers, times) = build_layers_with_mtimes(
        &ctx,
        &[
            "--build-context".into(),
            format!("base=oci-layout://{}:v1", layout.display()),
        ],
    );
    assert_eq!(layers.len(), 6, "two base layers and four COPY layers");
    let home = &layers[2];
    assert_eq!(owner(home, "home"), (0, 0));
    assert_eq!(owner(home, "home/app"), (1000, 1000));
    assert_eq!(home["home/app"].mode, 0o750);
    assert_eq!(owner(home, "home/app/f"), (0, 0));
    assert_eq!(times[2]["home/app"], 1_600_000_000, "{:?}", times[2]);
    let srv = &layers[3];
    assert_eq!(owner(srv, "srv"), (7, 7));
    assert_eq!(owner(srv, "srv/data"), (7, 7));
    assert_eq!(srv["srv/data"].mode, 0o711);
    assert_eq!(times[3]["srv/data"], 1_600_000_000, "{:?}", times[3]);
    assert_eq!(owner(srv, "srv/data/f"), (0, 0));
    // A directory an earlier COPY of this stage created (`--chown` owns created parents too).
    assert_eq!(owner(&layers[4], "opt/tool"), (1000, 1001));
    assert_eq!(owner(&layers[5], "opt"), (1000, 1001));
    assert_eq!(owner(&layers[5], "opt/tool"), (1000, 1001));
    assert_eq!(owner(&layers[5], "opt/tool/g"), (0, 0));
}
