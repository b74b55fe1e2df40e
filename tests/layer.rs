//! Layer writer and safe apply against real trees and GNU tar: round trips, determinism,
//! hostile layers built from raw tar headers, whiteouts, a real Debian base layer, and an ignored
//! throughput measurement.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild::image::{Digest, Hasher};
use rbuild::layer::{
    ApplyOptions, Compression, EntryMeta, EntryOptions, LayerError, LayerWriter, OverlayXattrs,
    apply, apply_as_overlay_lower, sort_layer_paths, write_dir_tree,
};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes `root` as a layer into memory; returns (diff_id, blob digest, blob).
fn layer_of(root: &Path, c: Compression, opts: &EntryOptions) -> (Digest, Digest, Vec<u8>) {
    let mut w = LayerWriter::new(Vec::new(), c).unwrap();
    write_dir_tree(&mut w, root, Path::new(""), opts).unwrap();
    let s = w.finish().unwrap();
    let digest = Digest::of(&s.sink);
    (s.diff_id, digest, s.sink)
}

/// A tree exercising everything the writer must keep.
fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/su"), b"#!/bin/sh\necho su\n").unwrap();
    set_mode(&root.join("usr/bin/su"), 0o4755);
    fs::write(root.join("usr/bin/gsetid"), b"g").unwrap();
    set_mode(&root.join("usr/bin/gsetid"), 0o2711);
    fs::create_dir(root.join("tmp")).unwrap();
    set_mode(&root.join("tmp"), 0o1777);
    fs::write(root.join("secret"), b"shh").unwrap();
    set_mode(&root.join("secret"), 0o600);
    fs::write(root.join("big"), vec![0xabu8; 70_000]).unwrap();
    fs::hard_link(root.join("big"), root.join("big-link")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("/usr/bin/su", root.join("su-abs")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    // > 100 bytes and > 255 bytes paths, and a symlink target over 100 bytes.
    let mid = root.join("d".repeat(60)).join("e".repeat(60));
    fs::create_dir_all(&mid).unwrap();
    fs::write(mid.join("f".repeat(50)), b"long").unwrap();
    let deep = mid.join("g".repeat(200));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("h".repeat(120)), b"longer").unwrap();
    symlink(deep.join("h".repeat(120)), root.join("long-target")).unwrap();
    // Extended attributes and a sub-second mtime.
    xattr::set(root.join("secret"), "user.comment", b"hello\0bin").unwrap();
    filetime::set_file_mtime(
        root.join("big"),
        filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789),
    )
    .unwrap();
    if is_root() {
        // `setcap cap_net_bind_service=ep`: a VFS_CAP_REVISION_2 blob with the effective flag.
        let mut cap = Vec::new();
        for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
            cap.extend_from_slice(&word.to_le_bytes());
        }
        xattr::set(root.join("usr/bin/gsetid"), "security.capability", &cap).unwrap();
        std::os::unix::fs::chown(root.join("secret"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("bin"), Some(42), Some(43)).unwrap();
        std::os::unix::fs::chown(root.join("tmp"), Some(3_000_000), Some(3_000_001)).unwrap();
    }
    filetime::set_file_mtime(
        root.join("usr"),
        filetime::FileTime::from_unix_time(1_500_000_000, 0),
    )
    .unwrap();
}

#[derive(Debug, PartialEq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    link: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    content: Option<Vec<u8>>,
}

/// Everything observable about a tree, keyed by relative path, plus groups of hard-linked paths.
fn observe(root: &Path) -> (BTreeMap<String, Seen>, Vec<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let is_link = md.file_type().is_symlink();
        let xattrs = if is_link {
            BTreeMap::new()
        } else {
            xattr::list(e.path())
                .unwrap()
                .filter_map(|n| {
                    let v = xattr::get(e.path(), &n).unwrap()?;
                    Some((n.to_string_lossy().into_owned(), v))
                })
                .collect()
        };
        if md.file_type().is_file() {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        out.insert(
            rel,
            Seen {
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                link: is_link.then(|| fs::read_link(e.path()).unwrap()),
                xattrs,
                content: md
                    .file_type()
                    .is_file()
                    .then(|| fs::read(e.path()).unwrap()),
                rdev: md.rdev(),
            },
        );
    }
    // Sorted by name: inode numbers (the map's order) depend on where the filesystem put them.
    let mut links: Vec<Vec<String>> = inodes.into_values().filter(|v| v.len() > 1).collect();
    links.sort();
    (out, links)
}

#[test]
fn round_trip_write_then_apply_preserves_the_tree() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    for c in [
        Compression::Uncompressed,
        Compression::default(),
        Compression::Zstd { level: 3 },
    ] {
        let (_, _, blob) = layer_of(src.path(), c, &EntryOptions::default());
        let dest = tempfile::tempdir().unwrap();
        let stats = apply(&blob[..], dest.path(), &ApplyOptions::default()).unwrap();
        assert_eq!(stats.hardlinks, 1, "{c}");
        assert_eq!(stats.xattr_failures, 0, "{c}");
        let (want, want_links) = observe(src.path());
        let (got, got_links) = observe(dest.path());
        assert_eq!(
            want_links,
            vec![vec!["big".to_string(), "big-link".to_string()]]
        );
        assert_eq!(got_links, want_links, "{c}: hard links must stay links");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (path, w) in &want {
            let g = &got[path];
            if is_root() {
                assert_eq!(g, w, "{c}: {path}");
            } else {
                assert_eq!(
                    (g.mode, &g.link, &g.content),
                    (w.mode, &w.link, &w.content),
                    "{path}"
                );
            }
        }
        assert_eq!(got["big"].mtime, (1_600_000_000, 123_456_789));
        assert_eq!(got["usr/bin/su"].mode & 0o7777, 0o4755);
        assert_eq!(got["tmp"].mode & 0o7777, 0o1777);
        assert_eq!(got["secret"].xattrs["user.comment"], b"hello\0bin");
        if is_root() {
            assert!(
                got["usr/bin/gsetid"]
                    .xattrs
                    .contains_key("security.capability")
            );
        }
    }
}

#[test]
fn gnu_tar_reads_our_layers() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let (_, _, blob) = layer_of(src.path(), Compression::default(), &EntryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("layer.tar.gz");
    fs::write(&file, &blob).unwrap();

    let list = Command::new("tar")
        .arg("-tvzf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listing = String::from_utf8(list.stdout).unwrap();
    assert!(listing.contains("-rwsr-xr-x"), "{listing}");
    assert!(listing.contains("drwxrwxrwt"), "{listing}");
    assert!(listing.contains("big-link link to big"), "{listing}");
    assert!(
        listing.contains(&format!("{}/", "g".repeat(200))),
        "{listing}"
    );
    assert!(
        listing.contains("usr/bin/\n") || listing.contains("usr/bin/"),
        "{listing}"
    );

    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    let x = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpzf"])
        .arg(&file)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let (want, _) = observe(src.path());
    let (got, got_links) = observe(&out);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert_eq!(got_links.len(), 1);
    assert_eq!(got["secret"].xattrs["user.comment"], b"hello\0bin");
    assert_eq!(got["big"].mtime, (1_600_000_000, 123_456_789));
    for (path, w) in &want {
        assert_eq!(got[path].content, w.content, "{path}");
        assert_eq!(got[path].link, w.link, "{path}");
    }
}

/// The same content created in two different orders and at different times.
fn twin_trees() -> (tempfile::TempDir, tempfile::TempDir) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let names = ["zeta", "alpha", "mid/deep/file", "mid/other", "Upper"];
    for (tree, order, time) in [
        (a.path(), names.to_vec(), 1_700_000_000),
        (
            b.path(),
            names.iter().rev().copied().collect(),
            1_800_000_000,
        ),
    ] {
        for n in order {
            let p = tree.join(n);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, n.repeat(1000)).unwrap();
        }
        for e in walkdir::WalkDir::new(tree).min_depth(1) {
            let e = e.unwrap();
            let t = filetime::FileTime::from_unix_time(time, 999);
            filetime::set_symlink_file_times(e.path(), t, t).unwrap();
        }
    }
    (a, b)
}

#[test]
fn clamped_layers_are_byte_identical_across_mtimes_and_creation_order() {
    let (a, b) = twin_trees();
    let opts = EntryOptions {
        source_date_epoch: Some(1_000_000_000),
        uid: Some(0),
        gid: Some(0),
        ..EntryOptions::default()
    };
    for c in [Compression::default(), Compression::Zstd { level: 3 }] {
        let (da, ba, _) = layer_of(a.path(), c, &opts);
        let (db, bb, _) = layer_of(b.path(), c, &opts);
        assert_eq!(da, db, "{c} diff_id");
        assert_eq!(ba, bb, "{c} blob digest");
    }
    // Without the clamp the mtimes differ, and so must the layers.
    let (da, _, _) = layer_of(
        a.path(),
        Compression::Uncompressed,
        &EntryOptions::default(),
    );
    let (db, _, _) = layer_of(
        b.path(),
        Compression::Uncompressed,
        &EntryOptions::default(),
    );
    assert_ne!(da, db);
}

#[test]
fn sorted_appends_match_the_tree_walk() {
    let (a, _b) = twin_trees();
    let opts = EntryOptions {
        source_date_epoch: Some(1_000_000_000),
        ..EntryOptions::default()
    };
    let (walked, _, _) = layer_of(a.path(), Compression::Uncompressed, &opts);
    let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(a.path())
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(a.path())
                .unwrap()
                .to_path_buf()
        })
        .collect();
    paths.reverse();
    sort_layer_paths(&mut paths);
    let mut w = LayerWriter::new(Hasher::new(), Compression::Uncompressed).unwrap();
    for p in &paths {
        w.append_from_fs(p, a.path().join(p), &opts).unwrap();
    }
    assert_eq!(w.finish().unwrap().diff_id, walked);
}

/// A tar entry with a name written straight into the header, bypassing the tar crate's checks.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(data.len() as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// Applies a hand-made hostile layer into `<tmp>/dest` next to `<tmp>/outside/keep`, and checks
/// nothing outside `dest` changed, whether or not apply reports an error.
fn assert_contained(build: impl Fn(&mut tar::Builder<Vec<u8>>, &Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&dest).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("keep"), b"untouched").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b, &outside);
    let bytes = b.into_inner().unwrap();
    let result = apply(&bytes[..], &dest, &ApplyOptions::default());
    // Refusing the entry as malformed would prove nothing about containment.
    assert!(
        !matches!(
            result,
            Err(LayerError::UnsupportedEntry { .. } | LayerError::Archive { .. })
        ),
        "{result:?}"
    );
    let mut top: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["dest", "outside"], "apply result: {result:?}");
    let outside_names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside_names, ["keep"], "apply result: {result:?}");
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"untouched");
    assert_eq!(fs::metadata(outside.join("keep")).unwrap().nlink(), 1);
}

#[test]
fn hostile_dotdot_and_absolute_names_stay_inside() {
    use tar::EntryType::*;
    assert_contained(|b, _| raw_entry(b, "../escape", Regular, "", b"x"));
    assert_contained(|b, _| raw_entry(b, "../../outside/keep", Regular, "", b"x"));
    assert_contained(|b, o| {
        let abs = o.join("abs");
        raw_entry(b, abs.to_str().unwrap(), Regular, "", b"x")
    });
    assert_contained(|b, _| raw_entry(b, "a/../../../escape", Directory, "", b""));
}

#[test]
fn hostile_symlinks_cannot_be_followed_out() {
    use tar::EntryType::*;
    // Absolute symlink to a real directory outside, then a file through it.
    assert_contained(|b, o| {
        raw_entry(b, "etc", Symlink, o.to_str().unwrap(), b"");
        raw_entry(b, "etc/pwned", Regular, "", b"x");
    });
    // Relative symlink climbing out, then a file and a directory through it.
    assert_contained(|b, _| {
        raw_entry(b, "up", Symlink, "../..", b"");
        raw_entry(b, "up/outside/pwned", Regular, "", b"x");
        raw_entry(b, "up/newdir/", Directory, "", b"");
    });
    // A symlink replacing an existing file of the same name is not written through.
    assert_contained(|b, o| {
        raw_entry(b, "f", Symlink, o.join("keep").to_str().unwrap(), b"");
        raw_entry(b, "f", Regular, "", b"replaced");
    });
    // The classic /etc case, with a file name no real system has.
    let probe = format!("rbuild-layer-test-{}", std::process::id());
    assert_contained(|b, _| {
        raw_entry(b, "etc", Symlink, "/etc", b"");
        raw_entry(b, &format!("etc/{probe}"), Regular, "", b"x");
    });
    assert!(!Path::new("/etc").join(&probe).exists());
}

#[test]
fn hostile_hard_links_cannot_target_outside_files() {
    use tar::EntryType::*;
    assert_contained(|b, _| raw_entry(b, "shadow", Link, "/etc/shadow", b""));
    assert_contained(|b, _| raw_entry(b, "x", Link, "../../outside/keep", b""));
    assert_contained(|b, o| raw_entry(b, "x", Link, o.join("keep").to_str().unwrap(), b""));
    assert_contained(|b, o| {
        raw_entry(b, "out", Symlink, o.to_str().unwrap(), b"");
        raw_entry(b, "x", Link, "out/keep", b"");
    });
    // A whiteout naming `..` must not delete the parent.
    assert_contained(|b, _| raw_entry(b, "sub/.wh..", Regular, "", b""));
}

#[test]
fn whiteouts_and_opaque_directories_hide_lower_layers() {
    let lower = {
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        let dir = EntryMeta::with_mode(0o755);
        let file = EntryMeta::with_mode(0o644);
        for d in ["a", "a/sub", "keep", "opq"] {
            w.append_dir(d, &dir).unwrap();
        }
        for f in ["a/sub/f", "a/g", "keep/k", "opq/old"] {
            w.append_file(f, &file, &b"x"[..], 1).unwrap();
        }
        w.finish().unwrap().sink
    };
    let upper = {
        let mut w = LayerWriter::new(Vec::new(), Compression::Zstd { level: 3 }).unwrap();
        w.append_whiteout("a/sub").unwrap();
        w.append_whiteout("missing/x").unwrap();
        w.append_dir("opq", &EntryMeta::with_mode(0o700)).unwrap();
        w.append_file("opq/new", &EntryMeta::with_mode(0o644), &b"n"[..], 1)
            .unwrap();
        w.append_opaque("opq").unwrap();
        w.finish().unwrap().sink
    };
    let dest = tempfile::tempdir().unwrap();
    apply(&lower[..], dest.path(), &ApplyOptions::default()).unwrap();
    let stats = apply(&upper[..], dest.path(), &ApplyOptions::default()).unwrap();
    // Every whiteout entry counts, including the one with nothing below it.
    assert_eq!((stats.whiteouts, stats.opaques), (2, 1));
    let (seen, _) = observe(dest.path());
    let names: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "a/g", "keep", "keep/k", "opq", "opq/new"]);
    assert_eq!(seen["opq"].mode & 0o7777, 0o700);
}

#[test]
fn device_nodes_and_fifos_are_applied_or_counted() {
    let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
    w.append_dir("dev", &EntryMeta::with_mode(0o755)).unwrap();
    w.append_device(
        "dev/null",
        rbuild::layer::DeviceKind::Char,
        1,
        3,
        &EntryMeta::with_mode(0o666),
    )
    .unwrap();
    w.append_fifo("dev/pipe", &EntryMeta::with_mode(0o620))
        .unwrap();
    let blob = w.finish().unwrap().sink;
    let dest = tempfile::tempdir().unwrap();
    let stats = apply(&blob[..], dest.path(), &ApplyOptions::default()).unwrap();
    let pipe = fs::symlink_metadata(dest.path().join("dev/pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
    assert_eq!(pipe.mode() & 0o7777, 0o620);
    if is_root() {
        let null = fs::symlink_metadata(dest.path().join("dev/null")).unwrap();
        assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!(stats.nodes, 2);
    } else {
        assert_eq!(stats.skipped_devices, 1);
    }
}

#[test]
fn layers_replace_files_with_directories_and_back() {
    let one = {
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        w.append_file("p", &EntryMeta::with_mode(0o644), &b"file"[..], 4)
            .unwrap();
        w.append_dir("q", &EntryMeta::with_mode(0o755)).unwrap();
        w.append_file("q/inner", &EntryMeta::with_mode(0o644), &b"i"[..], 1)
            .unwrap();
        w.finish().unwrap().sink
    };
    let two = {
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        w.append_dir("p", &EntryMeta::with_mode(0o750)).unwrap();
        w.append_symlink("q", "p", &EntryMeta::with_mode(0o777))
            .unwrap();
        w.finish().unwrap().sink
    };
    let dest = tempfile::tempdir().unwrap();
    apply(&one[..], dest.path(), &ApplyOptions::default()).unwrap();
    apply(&two[..], dest.path(), &ApplyOptions::default()).unwrap();
    assert!(dest.path().join("p").is_dir());
    assert_eq!(
        fs::read_link(dest.path().join("q")).unwrap(),
        Path::new("p")
    );
}

/// Throughput of writing a ~256 MB tree copied from `/usr` (binaries, libraries, docs: a
/// realistic layer) against GNU tar piped into gzip/zstd. Run with
/// `cargo test --release --test layer -- --ignored --nocapture layer_throughput`.
#[test]
#[ignore = "a measurement, not a check; run on demand in release mode"]
fn layer_throughput() {
    let src = tempfile::tempdir().unwrap();
    let mut total = 0u64;
    for e in walkdir::WalkDir::new("/usr").sort_by_file_name() {
        let Ok(e) = e else { continue };
        if !e.file_type().is_file() || total >= 256_000_000 {
            continue;
        }
        let rel = e.path().strip_prefix("/usr").unwrap();
        let dest = src.path().join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if let Ok(n) = fs::copy(e.path(), &dest) {
            total += n;
        }
    }
    let mb = total as f64 / 1e6;
    // CPU seconds of this process and its waited-for children: on a loaded machine wall time
    // says little, MB per CPU second still compares implementations.
    let cpu = || {
        let mut total = 0.0;
        for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
            let mut u: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage only writes into the struct we pass.
            unsafe { libc::getrusage(who, &mut u) };
            for t in [u.ru_utime, u.ru_stime] {
                total += t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            }
        }
        total
    };
    let time = |f: &mut dyn FnMut() -> usize| {
        let (t, c) = (std::time::Instant::now(), cpu());
        let size = f();
        let (wall, cpu_s) = (t.elapsed().as_secs_f64(), cpu() - c);
        println!(
            "    wall {wall:.2} s, cpu {cpu_s:.2} s ({:.0} MB per cpu-second)",
            mb / cpu_s
        );
        (mb / wall, size as f64 / total as f64)
    };
    let mut tar_bytes = Vec::new();
    let (rate, _) = time(&mut || {
        let (_, _, blob) = layer_of(
            src.path(),
            Compression::Uncompressed,
            &EntryOptions::default(),
        );
        tar_bytes = blob;
        tar_bytes.len()
    });
    println!("{mb:.0} MB tree; rbuild tar + diffID only: {rate:.0} MB/s");
    for level in [1, 6] {
        let (rate, ratio) = time(&mut || {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(&tar_bytes).unwrap();
            e.finish().unwrap().len()
        });
        println!("single-stream flate2 gzip -{level} of the tar: {rate:.0} MB/s, ratio {ratio:.3}");
    }
    for c in [
        Compression::Gzip { level: 1 },
        Compression::default(),
        Compression::Zstd { level: 3 },
    ] {
        let mut blob = Vec::new();
        let (rate, ratio) = time(&mut || {
            blob = layer_of(src.path(), c, &EntryOptions::default()).2;
            blob.len()
        });
        println!("rbuild layer {c:?}: {rate:.0} MB/s, ratio {ratio:.3}");
        let dest = tempfile::tempdir().unwrap();
        let (rate, _) = time(&mut || {
            apply(&blob[..], dest.path(), &ApplyOptions::default()).unwrap();
            0
        });
        println!("rbuild apply of that layer: {rate:.0} MB/s");
    }
    for (name, cmd) in [
        ("tar | gzip -1", "tar -cf - . | gzip -1 | wc -c"),
        ("tar | gzip -6", "tar -cf - . | gzip -6 | wc -c"),
        ("tar | zstd -3 -T0", "tar -cf - . | zstd -3 -T0 -q | wc -c"),
    ] {
        let (rate, _) = time(&mut || {
            let out = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(src.path())
                .output()
                .unwrap();
            let mut size = String::new();
            out.stdout.as_slice().read_to_string(&mut size).unwrap();
            size.trim().parse().unwrap_or(0)
        });
        println!("{name}: {rate:.0} MB/s");
    }
}

#[test]
fn overlay_lower_snapshots_record_whiteouts_that_overlayfs_honours() {
    let lower = {
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        w.append_dir("a", &EntryMeta::with_mode(0o755)).unwrap();
        w.append_dir("opq", &EntryMeta::with_mode(0o755)).unwrap();
        for f in ["a/b", "a/c", "opq/old"] {
            w.append_file(f, &EntryMeta::with_mode(0o644), &b"x"[..], 1)
                .unwrap();
        }
        w.finish().unwrap().sink
    };
    // The whiteout's directory is not in the upper layer: it must still be recorded.
    let upper = {
        let mut w = LayerWriter::new(Vec::new(), Compression::default()).unwrap();
        w.append_whiteout("a/b").unwrap();
        w.append_dir("opq", &EntryMeta::with_mode(0o755)).unwrap();
        w.append_opaque("opq").unwrap();
        w.append_file("opq/new", &EntryMeta::with_mode(0o644), &b"n"[..], 1)
            .unwrap();
        w.finish().unwrap().sink
    };
    let tmp = tempfile::tempdir().unwrap();
    let (l1, l2, merged) = (
        tmp.path().join("l1"),
        tmp.path().join("l2"),
        tmp.path().join("m"),
    );
    for d in [&l1, &l2, &merged] {
        fs::create_dir(d).unwrap();
    }
    let opts = ApplyOptions::default();
    apply_as_overlay_lower(&lower[..], &l1, &opts, OverlayXattrs::Trusted).unwrap();
    let stats = apply_as_overlay_lower(&upper[..], &l2, &opts, OverlayXattrs::Trusted);
    if !is_root() {
        // Unprivileged outside a user namespace: neither 0:0 nodes nor trusted.* are allowed.
        assert!(stats.is_err());
        return;
    }
    let stats = stats.unwrap();
    assert_eq!((stats.whiteouts, stats.opaques), (1, 1));
    let wh = fs::symlink_metadata(l2.join("a/b")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        xattr::get(l2.join("opq"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(l2.join("opq/new").exists());

    let options = format!("lowerdir={}:{}", l2.display(), l1.display());
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&merged)
        .status()
        .unwrap();
    if !mounted.success() {
        eprintln!("SKIP overlay mount check: mount -t overlay is not permitted here");
        return;
    }
    let names = |rel: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(merged.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let (a, opq) = (names("a"), names("opq"));
    Command::new("umount").arg(&merged).status().unwrap();
    assert_eq!(a, ["c"]);
    assert_eq!(opq, ["new"]);
}

/// A real base layer (the Debian minbase fixture, devices and all) must unpack exactly as GNU
/// tar unpacks it, and survive being written back and applied again.
#[test]
fn debian_base_layer_applies_like_gnu_tar_and_round_trips() {
    if !is_root() {
        eprintln!("SKIP debian layer comparison: needs root for ownership and device nodes");
        return;
    }
    let layout = common::fixtures::debian_layout();
    let blob_path = |digest: &str| layout.join("blobs/sha256").join(&digest[7..]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blob_path(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layer = blob_path(manifest["layers"][0]["digest"].as_str().unwrap());

    let tmp = tempfile::tempdir().unwrap();
    let (ours, gnu, again) = (
        tmp.path().join("ours"),
        tmp.path().join("gnu"),
        tmp.path().join("again"),
    );
    for d in [&ours, &gnu, &again] {
        fs::create_dir(d).unwrap();
    }
    // Decompressed once by GNU gzip: inflating in an unoptimised test build would dominate.
    let plain = tmp.path().join("layer.tar");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' > '{}'",
            layer.display(),
            plain.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let t = std::time::Instant::now();
    let stats = apply(
        fs::File::open(&plain).unwrap(),
        &ours,
        &ApplyOptions::default(),
    )
    .unwrap();
    println!("rbuild apply: {:?} for {stats:?}", t.elapsed());
    let t = std::time::Instant::now();
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&plain)
        .arg("-C")
        .arg(&gnu)
        .status()
        .unwrap();
    assert!(status.success());
    println!("GNU tar -x: {:?}", t.elapsed());

    let (want, want_links) = observe(&gnu);
    let (got, got_links) = observe(&ours);
    assert!(
        want.len() > 5000,
        "the fixture looks too small: {}",
        want.len()
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, w) in &want {
        assert_eq!(&got[path], w, "{path}");
    }
    assert_eq!(got_links, want_links);

    // Written back: the subtrees holding devices, symlinks, hard links and setuid files, not
    // all 160 MB (hashing that is slow in unoptimised test builds).
    let subtrees = ["dev", "etc", "usr/bin", "var"];
    let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
    for sub in subtrees {
        write_dir_tree(
            &mut w,
            &ours.join(sub),
            Path::new(sub),
            &EntryOptions::default(),
        )
        .unwrap();
    }
    let blob = w.finish().unwrap().sink;
    apply(&blob[..], &again, &ApplyOptions::default()).unwrap();
    let (back, back_links) = observe(&again);
    assert_eq!(back_links, got_links);
    let mut compared = 0;
    for (path, g) in &got {
        if subtrees
            .iter()
            .any(|s| path == s || path.starts_with(&format!("{s}/")))
        {
            assert_eq!(&back[path], g, "{path}");
            compared += 1;
        }
    }
    assert!(compared > 1000, "only {compared} entries compared");
}

#[test]
fn directory_modes_land_on_the_directory_not_on_a_later_symlink() {
    let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
    w.append_dir("target", &EntryMeta::with_mode(0o750))
        .unwrap();
    w.append_dir("d", &EntryMeta::with_mode(0o700)).unwrap();
    w.append_dir("d", &EntryMeta::with_mode(0o711)).unwrap();
    w.append_dir("gone", &EntryMeta::with_mode(0o777)).unwrap();
    w.append_symlink("gone", "target", &EntryMeta::with_mode(0o777))
        .unwrap();
    let blob = w.finish().unwrap().sink;
    let dest = tempfile::tempdir().unwrap();
    apply(&blob[..], dest.path(), &ApplyOptions::default()).unwrap();
    let mode = |p: &str| fs::metadata(dest.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("d"), 0o711, "the last entry for a directory wins");
    assert_eq!(
        mode("target"),
        0o750,
        "the 0777 of `gone/` must not follow its symlink"
    );
}
