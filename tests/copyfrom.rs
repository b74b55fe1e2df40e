//! `COPY --from=<stage|image>` reads a view of the source root that holds only what its sources
//! can reach. These builds check that the view gives exactly what a full unpack gives: every
//! image is built twice, on separate stores, with views and with
//! `RBUILD_COPY_FROM_UNPACK_ALL=1` (the full unpack), and the image IDs must be equal; the
//! copied files are checked as well. The source image is an OCI layout written here, whose
//! upper layer deletes (whiteouts), hides (an opaque directory) and replaces files of the lower
//! one, with symlinked directories, symlinks leading out of a wildcard's directory and a hard
//! link whose other name lies outside the copied directory.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Context, TestRoot, run_ok};
use rbuild::image::Digest;
use rbuild::layer::{Compression, EntryMeta, LayerWriter};

const EPOCH: &str = "1700000000";

fn meta(mode: u32) -> EntryMeta {
    let mut m = EntryMeta::with_mode(mode);
    m.mtime = 1_600_000_000;
    m.uid = 1000;
    m.gid = 1000;
    m
}

fn file(w: &mut LayerWriter<Vec<u8>>, name: &str, data: &str) {
    w.append_file(name, &meta(0o640), data.as_bytes(), data.len() as u64)
        .unwrap();
}

/// The two layers of the source image (gzip blobs and their diff IDs).
fn layers() -> Vec<(Vec<u8>, Digest)> {
    let mut w = LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap();
    for d in [
        "etc", "opt", "opt/z", "other", "src", "src/sub", "usr", "usr/lib",
    ] {
        w.append_dir(d, &meta(0o755)).unwrap();
    }
    w.append_dir("usr/lib/x", &meta(0o750)).unwrap();
    w.append_symlink("etc/alt", "../opt/z", &meta(0o777))
        .unwrap();
    w.append_symlink("lib", "usr/lib", &meta(0o777)).unwrap();
    file(&mut w, "opt/z/libq.so.1", "Q");
    for i in 0..30 {
        file(&mut w, &format!("other/f{i}"), &format!("other {i}"));
    }
    file(&mut w, "src/keep", "keep");
    file(&mut w, "src/old", "old");
    file(&mut w, "src/sub/deep", "deep");
    w.append_hardlink("src/hl", "other/f0", &meta(0o640))
        .unwrap();
    file(&mut w, &format!("src/{}", "n".repeat(120)), "long name");
    file(&mut w, "usr/lib/x/libz.so.1", "Z");
    w.append_symlink("usr/lib/x/libz.so", "libz.so.1", &meta(0o777))
        .unwrap();
    w.append_symlink("usr/lib/x/libq.so", "/opt/z/libq.so.1", &meta(0o777))
        .unwrap();
    let lower = w.finish().unwrap();

    let mut w = LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap();
    w.append_whiteout("src/old").unwrap();
    w.append_dir("src/sub", &meta(0o700)).unwrap();
    w.append_opaque("src/sub").unwrap();
    file(&mut w, "src/sub/new", "new");
    file(&mut w, "src/keep", "replaced");
    w.append_whiteout("other/f3").unwrap();
    let upper = w.finish().unwrap();
    vec![(lower.sink, lower.diff_id), (upper.sink, upper.diff_id)]
}

/// An OCI layout at `layout` holding the source image, tagged `v1`.
fn source_layout(layout: &Path) {
    common::layout::write_oci_layout(layout, &layers(), "v1");
}

/// Builds `dockerfile` (with the source image as build context `base`) on a fresh store, with
/// views or with full unpacks; returns the image ID and the final filesystem as
/// `path -> "mode uid:gid content-or-target"`.
fn build(dockerfile: &str, unpack_all: bool) -> (String, BTreeMap<String, String>) {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    source_layout(&layout);
    let ctx = Context::new()
        .dockerfile(dockerfile)
        .file("extra.txt", "extra\n");
    // COPY keeps a context file's mtime: the same in every build, so the images can agree.
    std::fs::File::options()
        .write(true)
        .open(ctx.join("extra.txt"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_650_000_000))
        .unwrap();
    let out = work.path().join("out");
    let root = TestRoot::new();
    let mut cmd = root.rbuild();
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
        .env(
            "RBUILD_COPY_FROM_UNPACK_ALL",
            if unpack_all { "1" } else { "0" },
        )
        .args(["build", "-q", "--build-context"])
        .arg(format!("base=oci-layout://{}:v1", layout.display()))
        .arg(ctx.path());
    let id = run_ok(&mut cmd).trim().to_string();
    run_ok(
        root.rbuild()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "-q", "--build-context"])
            .arg(format!("base=oci-layout://{}:v1", layout.display()))
            .arg("-o")
            .arg(format!("type=local,dest={}", out.display()))
            .arg(ctx.path()),
    );
    (id, tree(&out))
}

fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let m = e.path().symlink_metadata().unwrap();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            "/".to_string()
        } else {
            String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned()
        };
        let owner = format!("{}:{}", m.uid(), m.gid());
        out.insert(rel, format!("{:o} {owner} {what}", m.mode() & 0o7777));
    }
    out
}

/// Builds both ways; the image IDs must agree. Returns the tree.
fn build_both(dockerfile: &str) -> BTreeMap<String, String> {
    let (id, files) = build(dockerfile, false);
    let (full_id, full_files) = build(dockerfile, true);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(files, full_files);
    assert_eq!(id, full_id, "views and full unpacks give different images");
    files
}

fn owner() -> &'static str {
    // Owners are kept only where the builder may set them (root, or a mapped user namespace).
    if rustix::process::geteuid().is_root() {
        "1000:1000"
    } else {
        ""
    }
}

/// Whiteouts and opaque directories of an upper layer hide lower files; a hard link whose other
/// name is outside the copied directory is still a file with its content.
#[test]
fn copy_from_a_multi_layer_stage_sees_deletions_and_replacements() {
    let files = build_both(
        "FROM base AS build\nCOPY extra.txt /src/extra.txt\n\
         FROM scratch\nCOPY --from=build /src/ /out/\n",
    );
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    let long = format!("out/{}", "n".repeat(120));
    assert_eq!(
        names,
        [
            "out",
            "out/extra.txt",
            "out/hl",
            "out/keep",
            &long,
            "out/sub",
            "out/sub/new"
        ]
    );
    assert!(files["out/keep"].ends_with(" replaced"), "{files:?}");
    assert!(files["out/hl"].ends_with(" other 0"), "{files:?}");
    assert!(files["out/sub"].starts_with("700 "), "{files:?}");
    if !owner().is_empty() {
        assert!(files["out/keep"].starts_with(&format!("640 {} ", owner())));
    }
}

/// A source reached through a symlinked directory (`/lib -> usr/lib`), a source that is itself
/// a symlink, a symlinked directory with `..` in its target, and a wildcard whose matches are
/// symlinks leading inside and outside its directory.
#[test]
fn copy_from_follows_symlinks_like_a_full_unpack() {
    let files = build_both(
        "FROM base AS build\nCOPY extra.txt /etc/extra.txt\n\
         FROM scratch\n\
         COPY --from=build /lib/x/libz.so /one/\n\
         COPY --from=build /etc/alt/libq.so.1 /two/q\n\
         COPY --from=build /usr/lib/x/lib*.so /wild/\n\
         COPY --from=build /lib/x /dir/\n",
    );
    assert!(files["one/libz.so"].ends_with(" Z"), "{files:?}");
    assert!(files["two/q"].ends_with(" Q"), "{files:?}");
    assert!(files["wild/libz.so"].ends_with(" Z"), "{files:?}");
    assert!(files["wild/libq.so"].ends_with(" Q"), "{files:?}");
    // A directory's contents are copied as they are: symlinks stay symlinks.
    assert!(
        files["dir/libq.so"].ends_with("-> /opt/z/libq.so.1"),
        "{files:?}"
    );
    assert!(files["dir/libz.so"].ends_with("-> libz.so.1"), "{files:?}");
}

/// `COPY --from=<image>` (a named context, not a stage), and `COPY --from=x / /` of everything.
#[test]
fn copy_from_an_image_and_of_the_whole_root() {
    let files = build_both(
        "FROM scratch AS tiny\nCOPY extra.txt /e/extra.txt\n\
         FROM scratch\nCOPY --from=base /src/keep /usr/lib/x/*.so.1 /img/\n\
         COPY --from=base / /all/\nCOPY --from=tiny / /\n",
    );
    assert!(files["img/keep"].ends_with(" replaced"), "{files:?}");
    assert!(files["img/libz.so.1"].ends_with(" Z"), "{files:?}");
    assert!(files["e/extra.txt"].ends_with(" extra\n"), "{files:?}");
    assert!(files["all/lib"].ends_with("-> usr/lib"), "{files:?}");
    assert!(files["all/src/keep"].ends_with(" replaced"), "{files:?}");
    assert!(!files.contains_key("all/src/old") && !files.contains_key("all/other/f3"));
    assert!(!files.contains_key("all/src/sub/deep"));
    assert_eq!(
        files.keys().filter(|k| k.starts_with("all/other/")).count(),
        29
    );
}

/// A missing source in a view is the same clear error as before, naming the path.
#[test]
fn a_missing_source_is_still_an_error() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    source_layout(&layout);
    let ctx = Context::new().dockerfile("FROM scratch\nCOPY --from=base /src/old /x\n");
    let out = TestRoot::new()
        .rbuild()
        .args(["build", "-q", "--build-context"])
        .arg(format!("base=oci-layout://{}:v1", layout.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("src/old"), "{err}");
}
