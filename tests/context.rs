//! COPY/ADD resolution against real temporary contexts: wildcards, destination rules, directory
//! contents, `--parents`, `--exclude`, `.dockerignore` re-includes, symlink escapes, chown/chmod,
//! ADD archives in every compression, ADD from a local HTTP server, and the hash memo.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::Context;
use rbuild::context::{
    ContextError, CopyRequest, EmitTimes, EntryKind, HashMemo, IgnoreMatcher, LayerEntry,
    plan_copy, selection_digest,
};

fn req(ctx: &Context, sources: &[&str], dest: &str) -> CopyRequest {
    CopyRequest {
        source_root: ctx.path().to_path_buf(),
        from_context: true,
        ignore: Some(IgnoreMatcher::for_build(ctx.path(), None).unwrap()),
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        workdir: "/".into(),
        ..Default::default()
    }
}

fn paths(entries: &[LayerEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::Dir => format!("{}/", e.path),
            EntryKind::Symlink { target } => format!("{} -> {target}", e.path),
            EntryKind::Hardlink { target } => format!("{} => {target}", e.path),
            EntryKind::File { .. } => e.path.clone(),
        })
        .collect()
}

fn copy(r: &CopyRequest) -> Vec<String> {
    paths(&plan_copy(r).unwrap().entries)
}

fn content(e: &LayerEntry) -> String {
    match &e.kind {
        EntryKind::File { source, .. } => std::fs::read_to_string(source).unwrap(),
        other => panic!("{} is not a file: {other:?}", e.path),
    }
}

#[test]
fn wildcards_follow_go_filepath_match() {
    let ctx = Context::new()
        .file("a.txt", "a")
        .file("b.txt", "b")
        .file("c.md", "c")
        .file("sub/d.txt", "d");
    assert_eq!(
        copy(&req(&ctx, &["*.txt"], "/dst/")),
        ["dst/", "dst/a.txt", "dst/b.txt"]
    );
    assert_eq!(copy(&req(&ctx, &["?.md"], "/dst/")), ["dst/", "dst/c.md"]);
    assert_eq!(
        copy(&req(&ctx, &["[ac].*"], "/dst/")),
        ["dst/", "dst/a.txt", "dst/c.md"]
    );
    // `*` does not cross `/`.
    assert_eq!(
        copy(&req(&ctx, &["*/*.txt"], "/dst/")),
        ["dst/", "dst/d.txt"]
    );
    // An empty wildcard is allowed (BuildKit's AllowEmptyWildcard) and writes nothing at all.
    assert!(copy(&req(&ctx, &["*.none"], "/dst/")).is_empty());
}

#[test]
fn destination_slash_rules() {
    let ctx = Context::new().file("a.txt", "a").file("b.txt", "b");
    assert_eq!(copy(&req(&ctx, &["a.txt"], "/x")), ["x"]);
    assert_eq!(copy(&req(&ctx, &["a.txt"], "/x/")), ["x/", "x/a.txt"]);
    // A single wildcard match to a non-slash destination names the file (COPY *.jar app.jar).
    assert_eq!(copy(&req(&ctx, &["a.*"], "/app.jar")), ["app.jar"]);
    // Several sources to a path without '/': BuildKit copies each onto it, the last one wins
    // (moby/buildkit#1853; checked against dockerd 20.10's BuildKit).
    let plan = plan_copy(&req(&ctx, &["a.txt", "b.txt"], "/d")).unwrap();
    assert_eq!(paths(&plan.entries), ["d"]);
    assert_eq!(content(&plan.entries[0]), "b");
    assert_eq!(copy(&req(&ctx, &["*.txt"], "/d")), ["d"]);
    // Relative destinations are relative to WORKDIR; `.` is the WORKDIR itself.
    let mut r = req(&ctx, &["a.txt"], "rel/x");
    r.workdir = "/srv/app".into();
    assert_eq!(
        copy(&r),
        ["srv/", "srv/app/", "srv/app/rel/", "srv/app/rel/x"]
    );
    r.dest = ".".into();
    assert_eq!(copy(&r), ["srv/", "srv/app/", "srv/app/a.txt"]);
}

#[test]
fn existing_destination_directory_receives_the_file() {
    let ctx = Context::new().file("a.txt", "a");
    let image = Context::new().dir("opt/tools");
    let mut r = req(&ctx, &["a.txt"], "/opt/tools");
    r.dest_root = Some(image.path().to_path_buf());
    let plan = plan_copy(&r).unwrap();
    assert_eq!(
        paths(&plan.entries),
        ["opt/", "opt/tools/", "opt/tools/a.txt"]
    );
    assert!(plan.entries[0].existing_parent && plan.entries[1].existing_parent);
    assert!(!plan.entries[2].existing_parent);
}

#[test]
fn directory_source_copies_its_contents() {
    let ctx = Context::new()
        .file("dir/f1", "1")
        .file("dir/sub/f2", "2")
        .symlink("dir/link", "f1");
    assert_eq!(
        copy(&req(&ctx, &["dir"], "/d/")),
        ["d/", "d/f1", "d/link -> f1", "d/sub/", "d/sub/f2"]
    );
    // The whole context into the root writes no entry for `/` itself.
    let ctx = Context::new().file("x", "x");
    assert_eq!(copy(&req(&ctx, &["."], "/")), ["x"]);
}

#[test]
fn parents_keep_source_directories() {
    let ctx = Context::new()
        .file("x/a.txt", "a")
        .file("y/b.txt", "b")
        .file("p/q/c.txt", "c");
    let mut r = req(&ctx, &["x/a.txt", "y/b.txt"], "/out/");
    r.parents = true;
    assert_eq!(
        copy(&r),
        ["out/", "out/x/", "out/x/a.txt", "out/y/", "out/y/b.txt"]
    );
    let mut r = req(&ctx, &["./p/./q/*.txt"], "/out/");
    r.parents = true;
    assert_eq!(copy(&r), ["out/", "out/q/", "out/q/c.txt"]);
}

#[test]
fn exclude_flag_filters_the_selection() {
    let ctx = Context::new()
        .file("a.txt", "a")
        .file("README.md", "r")
        .file("docs/x.md", "x")
        .file("docs/y.txt", "y");
    let mut r = req(&ctx, &["."], "/app/");
    r.excludes = vec!["*.md".into(), "docs/*.md".into()];
    assert_eq!(
        copy(&r),
        ["app/", "app/a.txt", "app/docs/", "app/docs/y.txt"]
    );
    let mut r = req(&ctx, &["*"], "/app/");
    r.excludes = vec!["*.md".into()];
    // Inside a matched directory, patterns apply to paths relative to that directory.
    assert_eq!(copy(&r), ["app/", "app/a.txt", "app/y.txt"]);
}

#[test]
fn dockerignore_exceptions_reinclude_files_under_excluded_dirs() {
    let ctx = Context::new()
        .file(
            ".dockerignore",
            "# comment\nvendor\n!vendor/keep.txt\n*.log\n",
        )
        .file("vendor/keep.txt", "k")
        .file("vendor/drop.txt", "d")
        .file("app.log", "l")
        .file("main.go", "m");
    assert_eq!(
        copy(&req(&ctx, &["."], "/src/")),
        [
            "src/",
            "src/.dockerignore",
            "src/main.go",
            "src/vendor/",
            "src/vendor/keep.txt"
        ]
    );
    // A per-Dockerfile ignore file wins over the context's.
    let ctx = ctx
        .file("build/App.Dockerfile", "FROM scratch")
        .file("build/App.Dockerfile.dockerignore", "main.go\n");
    let ig = IgnoreMatcher::for_build(ctx.path(), Some(&ctx.join("build/App.Dockerfile"))).unwrap();
    assert!(ig.is_excluded("main.go") && !ig.is_excluded("app.log"));
}

#[test]
fn missing_source_names_the_ignore_pattern() {
    let ctx = Context::new()
        .file(".dockerignore", "secrets/\n")
        .file("secrets/key", "k");
    let err = plan_copy(&req(&ctx, &["secrets/key"], "/")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ContextError::SourceNotFound { .. }), "{text}");
    assert!(
        text.contains("secrets/key") && text.contains("\"secrets\""),
        "{text}"
    );
    let err = plan_copy(&req(&ctx, &["nope.txt"], "/"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "nope.txt: not found");
}

#[test]
fn symlinks_never_read_outside_the_context() {
    let ctx = Context::new()
        .symlink("x", "/etc/passwd")
        .symlink("up", "..")
        .symlink("rel", "../../../etc/passwd")
        .file("real.txt", "r")
        .symlink("inside", "real.txt");
    for src in ["x", "up/etc/passwd", "rel", "up"] {
        let err = plan_copy(&req(&ctx, &[src], "/out/")).unwrap_err();
        assert!(
            matches!(err, ContextError::OutsideRoot { .. }),
            "{src}: {err}"
        );
    }
    // A top-level symlink inside the context is followed, as BuildKit's FollowSymlinks.
    let plan = plan_copy(&req(&ctx, &["inside"], "/out/")).unwrap();
    assert_eq!(paths(&plan.entries), ["out/", "out/inside"]);
    assert_eq!(content(&plan.entries[1]), "r");
    // Copying the whole context keeps the links as links and never follows them.
    let all = copy(&req(&ctx, &["."], "/c/"));
    assert!(all.contains(&"c/x -> /etc/passwd".to_string()), "{all:?}");
    assert!(all.contains(&"c/up -> ..".to_string()), "{all:?}");
}

#[test]
fn chown_and_chmod_apply_to_files_dirs_and_created_parents() {
    let ctx = Context::new()
        .executable("bin/tool", "t")
        .file("bin/conf", "c");
    let image = Context::new()
        .file(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .file("etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:\n");
    let mut r = req(&ctx, &["bin"], "/opt/app/");
    r.dest_root = Some(image.path().to_path_buf());
    r.chown = Some("app:staff".into());
    r.chmod = Some("go-rwx".into());
    let plan = plan_copy(&r).unwrap();
    let got: Vec<(String, u32, u32, u32)> = plan
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.mode, e.uid, e.gid))
        .collect();
    assert_eq!(
        got,
        [
            ("opt".into(), 0o755, 1000, 50),
            ("opt/app".into(), 0o755, 1000, 50),
            ("opt/app/conf".into(), 0o600, 1000, 50),
            ("opt/app/tool".into(), 0o700, 1000, 50),
        ]
    );
    r.chown = Some("ghost".into());
    let err = plan_copy(&r).unwrap_err().to_string();
    assert!(
        err.contains("\"ghost\"") && err.contains("/etc/passwd"),
        "{err}"
    );
    // Context files are owned by root without --chown.
    let plan = plan_copy(&req(&ctx, &["bin/conf"], "/c")).unwrap();
    assert_eq!((plan.entries[0].uid, plan.entries[0].gid), (0, 0));
}

fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(7);
    h.set_gid(8);
    h.set_size(0);
    b.append_data(&mut h, "pkg/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(1_600_000_000);
    h.set_size(5);
    b.append_data(&mut h, "pkg/hello.txt", &b"hello"[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "pkg/link", "hello.txt").unwrap();
    b.into_inner().unwrap()
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => data.to_vec(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 3).unwrap(),
        _ => unreachable!(),
    }
}

#[test]
fn add_extracts_local_archives_in_every_compression() {
    for kind in ["tar", "gz", "bz2", "xz", "zst"] {
        let name = format!("bundle.{kind}");
        let ctx = Context::new().file(&name, compress(kind, &tar_bytes()));
        let mut r = req(&ctx, &[&name], "/opt");
        r.is_add = true;
        let plan = plan_copy(&r).unwrap();
        assert_eq!(
            paths(&plan.entries),
            [
                "opt/",
                "opt/pkg/",
                "opt/pkg/hello.txt",
                "opt/pkg/link -> hello.txt"
            ],
            "{kind}"
        );
        let f = &plan.entries[2];
        assert_eq!((f.mode, f.uid, f.gid), (0o640, 7, 8), "{kind}");
        assert_eq!(f.mtime.unwrap().secs, 1_600_000_000);
        assert_eq!(content(f), "hello");
        // --unpack=false and COPY keep the archive as a file.
        r.unpack = Some(false);
        assert_eq!(copy(&r), ["opt"], "{kind}");
        let r = req(&ctx, &[&name], "/opt/");
        assert_eq!(copy(&r), ["opt/", format!("opt/{name}").as_str()]);
    }
}

#[test]
fn add_checksum_is_only_for_urls() {
    let ctx = Context::new().file("a", "a");
    let mut r = req(&ctx, &["a"], "/");
    r.is_add = true;
    r.checksum = Some(format!("sha256:{}", "0".repeat(64)));
    let err = plan_copy(&r).unwrap_err().to_string();
    assert!(err.contains("non-HTTP"), "{err}");
    let mut r = req(&ctx, &["https://example.invalid/x.git"], "/");
    r.is_add = true;
    assert!(matches!(plan_copy(&r), Err(ContextError::Unsupported(_))));
    let r = req(&ctx, &["http://127.0.0.1:1/x"], "/");
    assert!(
        plan_copy(&r)
            .unwrap_err()
            .to_string()
            .contains("can't be a URL for COPY")
    );
}

/// Serves `body` for every request on 127.0.0.1 (a fixed number of times).
fn serve(body: Vec<u8>, requests: usize) -> String {
    serve_with(vec![body; requests], true)
}

/// Answers the i-th request with `bodies[i]`; `validators` adds a `Last-Modified` header.
fn serve_with(bodies: Vec<Vec<u8>>, validators: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for body in bodies {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let modified = if validators {
                "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n"
            } else {
                ""
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{modified}Connection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn add_downloads_urls_with_checksum_and_last_modified() {
    let body = b"remote content\n".to_vec();
    let base = serve(body.clone(), 5);
    let ctx = Context::new();
    let mut r = req(&ctx, &[&format!("{base}/files/tool.sh")], "/usr/local/bin/");
    r.is_add = true;
    r.checksum = Some(rbuild::image::Digest::of(&body).to_string());
    let plan = plan_copy(&r).unwrap();
    assert_eq!(
        paths(&plan.entries),
        [
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/tool.sh"
        ]
    );
    let f = &plan.entries[3];
    assert_eq!(f.mode, 0o600);
    assert_eq!(f.mtime.unwrap().secs, 1_445_412_480);
    assert_eq!(content(f), "remote content\n");
    // sha512 (and sha384) checksums are accepted as BuildKit does.
    use sha2::Digest as _;
    r.checksum = Some(format!(
        "sha512:{}",
        hex::encode(sha2::Sha512::digest(&body))
    ));
    assert_eq!(plan_copy(&r).unwrap().entries.len(), 4);
    // A non-slash destination names the file.
    let mut r2 = req(&ctx, &[&format!("{base}/x")], "/named");
    r2.is_add = true;
    assert_eq!(copy(&r2), ["named"]);
    // A wrong checksum fails and says both digests.
    r.checksum = Some(format!("sha256:{}", "a".repeat(64)));
    let err = plan_copy(&r).unwrap_err();
    assert!(
        matches!(err, ContextError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&rbuild::image::Digest::of(&body).to_string())
    );
}

#[test]
fn add_unpacks_remote_archives_only_when_asked() {
    let base = serve(compress("gz", &tar_bytes()), 2);
    let ctx = Context::new();
    let mut r = req(&ctx, &[&format!("{base}/b.tar.gz")], "/x/");
    r.is_add = true;
    assert_eq!(copy(&r), ["x/", "x/b.tar.gz"]);
    r.unpack = Some(true);
    assert_eq!(
        copy(&r),
        ["x/", "x/pkg/", "x/pkg/hello.txt", "x/pkg/link -> hello.txt"]
    );
}

#[test]
fn hash_memo_skips_unchanged_files() {
    let ctx = Context::new()
        .file("a.txt", "aaaa")
        .file("dir/b.txt", "bbbb")
        .file("ignored.log", "llll")
        .file(".dockerignore", "*.log\n");
    let store = tempfile::tempdir().unwrap();
    let r = req(&ctx, &["."], "/app/");
    let mut memo = HashMemo::open(store.path());
    let d1 = selection_digest(&r, &mut memo).unwrap();
    assert!(memo.stats().bytes_read > 0);
    memo.save().unwrap();
    assert!(store.path().join("context-hash-v3").is_dir());

    let mut memo = HashMemo::open(store.path());
    let d2 = selection_digest(&r, &mut memo).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(memo.stats().bytes_read, 0, "{:?}", memo.stats());
    assert_eq!(memo.stats().hits, 3, "{:?}", memo.stats());

    // An ignored file does not change the digest; a selected one does.
    std::fs::write(ctx.join("ignored.log"), "changed").unwrap();
    assert_eq!(selection_digest(&r, &mut memo).unwrap(), d1);
    std::fs::write(ctx.join("dir/b.txt"), "BBBB").unwrap();
    let d3 = selection_digest(&r, &mut memo).unwrap();
    assert_ne!(d3, d1);
    // mtime alone is not part of the key.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.join("a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(selection_digest(&r, &mut memo).unwrap(), d3);
    // A narrower COPY selects (and hashes) less.
    let one = req(&ctx, &["a.txt"], "/app/");
    assert_ne!(selection_digest(&one, &mut memo).unwrap(), d3);
}

#[test]
fn plan_writes_into_a_layer() {
    use rbuild::layer::{Compression, LayerWriter};
    let ctx = Context::new()
        .file("dir/a.txt", "hello")
        .symlink("dir/l", "a.txt");
    let plan = plan_copy(&req(&ctx, &["dir"], "/app/")).unwrap();
    let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
    plan.write_to(
        &mut w,
        EmitTimes {
            created: 1000,
            clamp: None,
        },
    )
    .unwrap();
    let bytes = w.finish().unwrap().sink;
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut s = String::new();
        if e.header().entry_type().is_file() {
            e.read_to_string(&mut s).unwrap();
        }
        seen.push(format!("{name}:{s}"));
    }
    assert_eq!(seen, ["app/:", "app/a.txt:hello", "app/l:"]);
}

#[test]
fn hard_links_in_a_selection_stay_links() {
    let ctx = Context::new().file("d/a", "same");
    std::fs::hard_link(ctx.join("d/a"), ctx.join("d/b")).unwrap();
    assert_eq!(copy(&req(&ctx, &["d"], "/x/")), ["x/", "x/a", "x/b => x/a"]);
    // Separate sources are separate copies in BuildKit: no link between them.
    assert_eq!(
        copy(&req(&ctx, &["d/a", "d/b"], "/y/")),
        ["y/", "y/a", "y/b"]
    );
}

#[test]
fn copy_from_a_stage_root_keeps_owners_and_scopes_symlinks() {
    // A stage root: absolute links resolve inside it, as in the container.
    let stage = Context::new()
        .file("usr/lib/libfoo.so.1", "lib")
        .symlink("usr/lib/libfoo.so", "/usr/lib/libfoo.so.1")
        .symlink("lib", "usr/lib");
    let ctx = Context::new();
    let mut r = req(&ctx, &["/lib/libfoo.so"], "/out/");
    r.source_root = stage.path().to_path_buf();
    r.from_context = false;
    r.ignore = None;
    let plan = plan_copy(&r).unwrap();
    assert_eq!(paths(&plan.entries), ["out/", "out/libfoo.so"]);
    assert_eq!(content(&plan.entries[1]), "lib");
    let meta = std::fs::metadata(stage.join("usr/lib/libfoo.so.1")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(plan.entries[1].uid, meta.uid());
}

#[test]
fn directories_never_replace_image_symlinks_or_files() {
    let ctx = Context::new()
        .file("rootfs/bin/tool", "t")
        .file("rootfs/etc/x", "x");
    let image = Context::new()
        .dir("usr/bin")
        .symlink("bin", "usr/bin")
        .file("etc", "file");
    let mut r = req(&ctx, &["rootfs/bin"], "/bin/");
    r.dest_root = Some(image.path().to_path_buf());
    // The destination itself is resolved through the image's symlink.
    assert_eq!(copy(&r), ["usr/", "usr/bin/", "usr/bin/tool"]);
    // A nested directory landing on a symlink or a file is refused, as BuildKit refuses it.
    let mut r = req(&ctx, &["rootfs"], "/");
    r.dest_root = Some(image.path().to_path_buf());
    let err = plan_copy(&r).unwrap_err().to_string();
    assert!(err.contains("cannot copy to non-directory: /bin"), "{err}");
    // A file landing on an image directory is refused as well (a top-level file goes into it).
    let ctx = Context::new().file("tree/usr", "file named like a dir");
    let mut r = req(&ctx, &["tree"], "/");
    r.dest_root = Some(image.path().to_path_buf());
    let err = plan_copy(&r).unwrap_err().to_string();
    assert!(
        err.contains("cannot replace to directory /usr with file"),
        "{err}"
    );
    let mut r = req(&ctx, &["tree/usr"], "/usr");
    r.dest_root = Some(image.path().to_path_buf());
    assert_eq!(copy(&r), ["usr/", "usr/usr"]);
}

#[test]
fn add_archive_entries_keep_their_owners_under_chown() {
    // dockerd 20.10's BuildKit chowns only the created destination, not the archive's entries.
    let ctx = Context::new().file("b.tgz", compress("gz", &tar_bytes()));
    let mut r = req(&ctx, &["b.tgz"], "/o/");
    r.is_add = true;
    r.chown = Some("5:6".into());
    let plan = plan_copy(&r).unwrap();
    let owners: Vec<(String, u32, u32)> = plan
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.uid, e.gid))
        .collect();
    assert_eq!(owners[0], ("o".into(), 5, 6));
    assert_eq!(owners[2], ("o/pkg/hello.txt".into(), 7, 8));
}

#[test]
fn directory_metadata_matches_buildkit() {
    // Checked against dockerd 20.10's BuildKit: the destination of a directory source is
    // 0755 with the --chown owner, slash or not; nested dirs keep their mode (and get --chmod);
    // directories carry the build time while files keep their own mtime.
    let ctx = Context::new()
        .file("dir/sub/s", "s")
        .mode("dir", 0o700)
        .mode("dir/sub", 0o750);
    let mut r = req(&ctx, &["dir"], "/y");
    r.chown = Some("7:8".into());
    let plan = plan_copy(&r).unwrap();
    let got: Vec<(String, u32, u32, bool)> = plan
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.mode, e.uid, e.mtime.is_some()))
        .collect();
    assert_eq!(
        got,
        [
            ("y".into(), 0o755, 7, false),
            ("y/sub".into(), 0o750, 7, false),
            ("y/sub/s".into(), 0o644, 7, true),
        ]
    );
    let mut r = req(&ctx, &["dir"], "/y/");
    r.chmod = Some("700".into());
    let modes: Vec<u32> = plan_copy(&r)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.mode)
        .collect();
    assert_eq!(modes, [0o755, 0o700, 0o700]);
}

#[test]
fn url_cache_keys_use_checksum_validators_or_content() {
    let ctx = Context::new();
    let mut memo = HashMemo::in_memory();
    let base = serve(b"v1".to_vec(), 2);
    let mut r = req(&ctx, &[&format!("{base}/f")], "/");
    r.is_add = true;
    let with_validators = selection_digest(&r, &mut memo).unwrap();
    assert_eq!(selection_digest(&r, &mut memo).unwrap(), with_validators);
    r.checksum = Some(rbuild::image::Digest::of(b"v1").to_string());
    assert_ne!(selection_digest(&r, &mut memo).unwrap(), with_validators);
    // Without validators the content itself is fetched and hashed: the same URL gives a new
    // key when the content changes (each call makes a HEAD then a GET).
    let bodies = [b"one", b"one", b"one", b"one", b"two", b"two"].map(|b| b.to_vec());
    let base = serve_with(bodies.to_vec(), false);
    let mut r = req(&ctx, &[&format!("{base}/f")], "/");
    r.is_add = true;
    let keys: Vec<_> = (0..3)
        .map(|_| selection_digest(&r, &mut memo).unwrap())
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
}

/// Selections recorded from dockerd 20.10's BuildKit (`COPY . /c/`, `-o type=tar`) for the same
/// context and ignore files. Variant 7 differs there: that fsutil pruned `**` before looking at
/// `!**/*.go`; current fsutil only prunes when every exception is a plain prefix, so the `.go`
/// files come back, which is what is expected here.
#[test]
fn dockerignore_selections_match_docker() {
    let files = [
        "a/x.log",
        "a/b/y.log",
        "a/b/c/z.log",
        "a/b/c/keep.log",
        "node_modules/x/i.js",
        "logs/1.txt",
        "src/temp1/t.go",
        "src/keep/k.go",
        "src/main.go",
        "docs/README.md",
        "docs/a.md",
        "README.md",
        ".git/objects/o",
        "Dockerfile.tmp",
        "sp ace.txt",
        "x.txt",
        "Dockerfile.x",
    ];
    let cases: &[(&str, &[&str])] = &[
        (
            "**/*.log\n!**/keep.log",
            &[
                ".dockerignore",
                ".git",
                ".git/objects",
                ".git/objects/o",
                "Dockerfile.tmp",
                "Dockerfile.x",
                "README.md",
                "a",
                "a/b",
                "a/b/c",
                "a/b/c/keep.log",
                "docs",
                "docs/README.md",
                "docs/a.md",
                "logs",
                "logs/1.txt",
                "node_modules",
                "node_modules/x",
                "node_modules/x/i.js",
                "sp ace.txt",
                "src",
                "src/keep",
                "src/keep/k.go",
                "src/main.go",
                "src/temp1",
                "src/temp1/t.go",
                "x.txt",
            ],
        ),
        (
            "node_modules\nlogs/\n*/temp*\n.git",
            &[
                ".dockerignore",
                "Dockerfile.tmp",
                "Dockerfile.x",
                "README.md",
                "a",
                "a/b",
                "a/b/c",
                "a/b/c/keep.log",
                "a/b/c/z.log",
                "a/b/y.log",
                "a/x.log",
                "docs",
                "docs/README.md",
                "docs/a.md",
                "sp ace.txt",
                "src",
                "src/keep",
                "src/keep/k.go",
                "src/main.go",
                "x.txt",
            ],
        ),
        (
            "/a\n!a/b/c\na/b/c/z.log",
            &[
                ".dockerignore",
                ".git",
                ".git/objects",
                ".git/objects/o",
                "Dockerfile.tmp",
                "Dockerfile.x",
                "README.md",
                "a",
                "a/b",
                "a/b/c",
                "a/b/c/keep.log",
                "docs",
                "docs/README.md",
                "docs/a.md",
                "logs",
                "logs/1.txt",
                "node_modules",
                "node_modules/x",
                "node_modules/x/i.js",
                "sp ace.txt",
                "src",
                "src/keep",
                "src/keep/k.go",
                "src/main.go",
                "src/temp1",
                "src/temp1/t.go",
                "x.txt",
            ],
        ),
        (
            "*\n!src\nsrc/temp*",
            &["src", "src/keep", "src/keep/k.go", "src/main.go"],
        ),
        (
            "docs/*.md\n!docs/README.md\n**/README.md",
            &[
                ".dockerignore",
                ".git",
                ".git/objects",
                ".git/objects/o",
                "Dockerfile.tmp",
                "Dockerfile.x",
                "a",
                "a/b",
                "a/b/c",
                "a/b/c/keep.log",
                "a/b/c/z.log",
                "a/b/y.log",
                "a/x.log",
                "docs",
                "logs",
                "logs/1.txt",
                "node_modules",
                "node_modules/x",
                "node_modules/x/i.js",
                "sp ace.txt",
                "src",
                "src/keep",
                "src/keep/k.go",
                "src/main.go",
                "src/temp1",
                "src/temp1/t.go",
                "x.txt",
            ],
        ),
        (
            "?.txt\n[a-c]\n!a/b",
            &[
                ".dockerignore",
                ".git",
                ".git/objects",
                ".git/objects/o",
                "Dockerfile.tmp",
                "Dockerfile.x",
                "README.md",
                "a",
                "a/b",
                "a/b/c",
                "a/b/c/keep.log",
                "a/b/c/z.log",
                "a/b/y.log",
                "docs",
                "docs/README.md",
                "docs/a.md",
                "logs",
                "logs/1.txt",
                "node_modules",
                "node_modules/x",
                "node_modules/x/i.js",
                "sp ace.txt",
                "src",
                "src/keep",
                "src/keep/k.go",
                "src/main.go",
                "src/temp1",
                "src/temp1/t.go",
            ],
        ),
        (
            "**\n!**/*.go",
            &[
                "src",
                "src/keep",
                "src/keep/k.go",
                "src/main.go",
                "src/temp1",
                "src/temp1/t.go",
            ],
        ),
        (
            "src/**/*.go\n!src/keep/**",
            &[
                ".dockerignore",
                ".git",
                ".git/objects",
                ".git/objects/o",
                "Dockerfile.tmp",
                "Dockerfile.x",
                "README.md",
                "a",
                "a/b",
                "a/b/c",
                "a/b/c/keep.log",
                "a/b/c/z.log",
                "a/b/y.log",
                "a/x.log",
                "docs",
                "docs/README.md",
                "docs/a.md",
                "logs",
                "logs/1.txt",
                "node_modules",
                "node_modules/x",
                "node_modules/x/i.js",
                "sp ace.txt",
                "src",
                "src/keep",
                "src/keep/k.go",
                "src/temp1",
                "x.txt",
            ],
        ),
    ];
    for (ignore, want) in cases {
        let mut ctx = Context::new().file(".dockerignore", format!("{ignore}\n"));
        for f in files {
            ctx = ctx.file(f, f);
        }
        let got: Vec<String> = plan_copy(&req(&ctx, &["."], "/c/"))
            .unwrap()
            .entries
            .iter()
            .map(|e| e.path.strip_prefix("c/").unwrap_or("").to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got_sorted, want, "ignore file {ignore:?}");
    }
}

#[test]
fn walk_context_is_sorted_and_honours_ignore_rules() {
    let ctx = Context::new()
        .file(".dockerignore", "b\n")
        .file("c/z", "z")
        .file("b/x", "x")
        .file("a", "a");
    let ig = IgnoreMatcher::for_build(ctx.path(), None).unwrap();
    let walked: Vec<String> = rbuild::context::walk_context(ctx.path(), Some(&ig))
        .unwrap()
        .iter()
        .map(|s| s.root_path())
        .collect();
    assert_eq!(walked, ["", ".dockerignore", "a", "c", "c/z"]);
}

#[test]
fn git_sources_are_refused_clearly() {
    let ctx = Context::new();
    for src in [
        "https://github.com/moby/buildkit.git#v0.12",
        "git@github.com:moby/buildkit.git",
        "git://example.invalid/repo",
    ] {
        let mut r = req(&ctx, &[src], "/src/");
        r.is_add = true;
        let err = plan_copy(&r).unwrap_err().to_string();
        assert!(
            err.contains("Git repository") && err.contains("not supported yet"),
            "{err}"
        );
    }
}

/// Through the binary: `.dockerignore` exceptions, ADD extraction and symbolic `--chmod` end up
/// in the exported filesystem as dockerd 20.10's BuildKit produced for the same context.
#[test]
fn build_through_the_cli_exports_the_expected_tree() {
    let pkg = Context::new().file("pkg/h", "h\n");
    let mut tgz = Vec::new();
    {
        let enc = flate2::write::GzEncoder::new(&mut tgz, flate2::Compression::default());
        let mut b = tar::Builder::new(enc);
        b.append_dir_all("pkg", pkg.join("pkg")).unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    let ctx = Context::new()
        .dockerfile(
            "FROM scratch\nCOPY . /c/\nADD a.tgz /x/\nCOPY --chmod=u+x,go-r vendor/keep.txt /k\n",
        )
        .file(".dockerignore", "vendor\n!vendor/keep.txt\nt\n")
        .file("vendor/keep.txt", "k\n")
        .file("vendor/drop.txt", "d\n")
        .file("t/ignored", "i\n")
        .file("a.tgz", tgz);
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("fs.tar");
    common::run_ok(common::rbuild().args([
        "build",
        "-q",
        "-o",
        &format!("type=tar,dest={}", tar_path.display()),
        ctx.path().to_str().unwrap(),
    ]));
    let mut got = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let mode = e.header().mode().unwrap() & 0o7777;
        got.push(format!("{:o} {}", mode, e.path().unwrap().display()));
    }
    got.sort();
    assert_eq!(
        got,
        [
            "644 c/.dockerignore",
            "644 c/Dockerfile",
            "644 c/a.tgz",
            "644 c/vendor/keep.txt",
            "644 x/pkg/h",
            "700 k",
            "755 c/",
            "755 c/vendor/",
            "755 x/",
            "755 x/pkg/",
        ]
    );
}

/// Files of a `-o type=tar` export, as `MODE PATH` lines (sorted), with file contents.
fn exported_tree(tar_path: &std::path::Path) -> Vec<String> {
    let mut got = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mode = e.header().mode().unwrap() & 0o7777;
        let path = e.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        if e.header().entry_type().is_file() {
            e.read_to_end(&mut bytes).unwrap();
        }
        let body = String::from_utf8(bytes).unwrap_or_else(|_| "<binary>".into());
        got.push(format!("{mode:o} {path} {}", body.trim_end()));
    }
    got.sort();
    got
}

/// Builds `ctx` with extra `rbuild build` flags into a filesystem tar and lists it.
fn build_tree(root: &common::TestRoot, ctx: &Context, flags: &[&str]) -> Vec<String> {
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("fs.tar");
    common::run_ok(
        root.rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!("type=tar,dest={}", tar_path.display()))
            .args(flags)
            .arg(ctx.path()),
    );
    exported_tree(&tar_path)
}

/// `--build-context NAME=oci-layout://...` with a layout written by rbuild's own OCI exporter
/// (by tag and by digest) and one written by `skopeo copy` from it: `FROM NAME` takes the
/// image's files and config, `COPY --from=NAME` its files, and the name wins over a stage.
#[test]
fn oci_layout_contexts_act_as_images() {
    let root = common::TestRoot::new();
    let base = Context::new()
        .dockerfile("FROM scratch\nCOPY a.txt /a.txt\nENV FROM_LAYOUT=yes\n")
        .file("a.txt", "from layout\n");
    let work = tempfile::tempdir().unwrap();
    let own = work.path().join("own");
    common::run_ok(
        root.rbuild()
            .args(["build", "-q", "-t", "app:v1", "-o"])
            .arg(format!("type=oci,tar=false,dest={}", own.display()))
            .arg(base.path()),
    );
    let copied = work.path().join("copied");
    common::run_ok(
        std::process::Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet"])
            .arg(format!("oci:{}:v1", own.display()))
            .arg(format!("oci:{}:other", copied.display())),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(own.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // A fresh store: everything must come from the layouts.
    let root = common::TestRoot::new();
    let ctx = Context::new()
        .dockerfile(
            "FROM scratch AS files\nCOPY b.txt /never\n\
             FROM base\nCOPY --from=files /a.txt /b.txt\nCOPY --from=bydigest /a.txt /c.txt\n\
             COPY <<EOF /env.txt\n${FROM_LAYOUT}\nEOF\n",
        )
        .file("b.txt", "stage\n");
    let tree = build_tree(
        &root,
        &ctx,
        &[
            "--build-context",
            &format!("base=oci-layout://{}:other", copied.display()),
            "--build-context",
            &format!("files=oci-layout://{}:v1", own.display()),
            "--build-context",
            &format!("bydigest=oci-layout://{}@{digest}", own.display()),
        ],
    );
    assert_eq!(
        tree,
        [
            "644 a.txt from layout",
            "644 b.txt from layout",
            "644 c.txt from layout",
            "644 env.txt yes",
        ]
    );

    // A tag the layout does not have is a clear error naming it.
    let out = root
        .rbuild()
        .args(["build", "-q", "--build-context"])
        .arg(format!("base=oci-layout://{}:nope", own.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no image tagged \"nope\""), "{err}");
}

/// A layout is reachable only through `--build-context`: written in the Dockerfile itself,
/// `FROM oci-layout://...` is an image reference docker refuses, and so does rbuild.
#[test]
fn oci_layout_in_a_dockerfile_is_not_a_reference() {
    let root = common::TestRoot::new();
    let layout = tempfile::tempdir().unwrap();
    common::run_ok(
        root.rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!(
                "type=oci,tar=false,dest={}",
                layout.path().display()
            ))
            .arg(Context::new().dockerfile("FROM scratch\nENV A=1\n").path()),
    );
    let ctx = Context::new().dockerfile(&format!(
        "FROM oci-layout://{}\nENV B=2\n",
        layout.path().display()
    ));
    let out = root
        .rbuild()
        .args(["build", "-q"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("invalid reference"), "{err}");
}

/// Serves one file body at any path on 127.0.0.1 for `requests` requests.
fn serve_file(body: Vec<u8>, requests: usize) -> String {
    serve_with(vec![body; requests], false)
}

/// `--build-context NAME=http://…/ctx.tar.gz` downloads and unpacks the archive, which then
/// acts as a local directory context (modes, symlinks and hard links kept); any other file is
/// a context of that one file; Git URLs stay refused.
#[test]
fn remote_tarball_contexts_are_unpacked() {
    let src = Context::new()
        .file("pkg/h.txt", "h\n")
        .executable("pkg/run.sh", "#!/bin/sh\n")
        .symlink("pkg/link", "h.txt");
    std::fs::hard_link(src.join("pkg/h.txt"), src.join("pkg/hard.txt")).unwrap();
    // GNU tar keeps the hard link as a link entry.
    let tgz = std::process::Command::new("tar")
        .args(["-czf", "-", "-C"])
        .arg(src.path())
        .arg(".")
        .output()
        .unwrap();
    assert!(tgz.status.success());
    let tgz = tgz.stdout;
    let base = serve_file(tgz, 2);
    let ctx = Context::new().dockerfile("FROM scratch\nCOPY --from=remote /pkg /p/\n");
    let root = common::TestRoot::new();
    let tree = build_tree(
        &root,
        &ctx,
        &["--build-context", &format!("remote={base}/ctx.tar.gz")],
    );
    assert_eq!(
        tree,
        [
            "644 p/h.txt h",
            "644 p/hard.txt ",
            "755 p/ ",
            "755 p/run.sh #!/bin/sh",
            "777 p/link ",
        ]
    );

    // Not an archive: a context holding that one file, named after the URL (mode 0600).
    let plain = serve_file(b"just a file\n".to_vec(), 2);
    let one = Context::new().dockerfile("FROM scratch\nCOPY --from=one notes.txt /n\n");
    assert_eq!(
        build_tree(
            &root,
            &one,
            &["--build-context", &format!("one={plain}/dir/notes.txt")]
        ),
        ["600 n just a file"]
    );

    for url in ["https://example.invalid/r.git", "git://example.invalid/r"] {
        let out = root
            .rbuild()
            .args(["build", "-q", "--build-context"])
            .arg(format!("remote={url}"))
            .arg(ctx.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("is not supported yet"), "{err}");
    }
}

/// The PAX `SCHILY.xattr.*` records of every entry in layer `n` of an OCI layout's image, as
/// `(path, name, value)`.
fn layer_xattrs(layout: &std::path::Path, n: usize) -> Vec<(String, String, Vec<u8>)> {
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let json = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index = json(layout.join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let layer = manifest["layers"][n]["digest"].as_str().unwrap();
    let file = std::fs::File::open(blob(layer)).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    out.push((path.clone(), name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

/// Extended attributes of context files (`user.*` set with setfattr, `security.capability`
/// set with setcap) reach the COPY layer as PAX `SCHILY.xattr.` records, as BuildKit keeps them.
#[test]
fn copy_keeps_context_file_xattrs() {
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY f ping /d/\nCOPY plain /plain\n")
        .file("f", "f\n")
        .file("ping", "p\n")
        .file("plain", "n\n");
    let set = std::process::Command::new("setfattr")
        .args(["-n", "user.test", "-v", "x"])
        .arg(ctx.join("f"))
        .status()
        .unwrap();
    if !set.success() {
        eprintln!("no user xattrs on {}: skipping", ctx.path().display());
        return;
    }
    // setcap needs CAP_SETFCAP; as an ordinary user only the user.* part is checked.
    let with_cap = std::process::Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(ctx.join("ping"))
        .status()
        .is_ok_and(|s| s.success());
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    common::run_ok(
        common::rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!("type=oci,tar=false,dest={}", layout.display()))
            .arg(ctx.path()),
    );
    let got = layer_xattrs(&layout, 0);
    assert!(
        got.contains(&("d/f".into(), "user.test".into(), b"x".to_vec())),
        "{got:?}"
    );
    if with_cap {
        let want = xattr::get(ctx.join("ping"), "security.capability")
            .unwrap()
            .unwrap();
        assert!(
            got.contains(&("d/ping".into(), "security.capability".into(), want)),
            "{got:?}"
        );
    }
    assert_eq!(got.len(), if with_cap { 2 } else { 1 }, "{got:?}");
    // A file without xattrs gets no records.
    assert!(layer_xattrs(&layout, 1).is_empty());
}

/// Directories below a COPY source keep their xattrs in the layer too (the source's top
/// directory is not copied, only its contents), and a changed directory xattr is a cache miss:
/// the rebuilt layer carries the new value instead of the cached old one.
#[test]
fn copy_keeps_context_directory_xattrs() {
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY src /app/\n")
        .file("src/sub/f", "f\n")
        .file("src/plain/g", "g\n");
    let setfattr = |path: &str, value: &str| {
        std::process::Command::new("setfattr")
            .args(["-n", "user.dirtest", "-v", value])
            .arg(ctx.join(path))
            .status()
            .unwrap()
            .success()
    };
    if !setfattr("src/sub", "y") {
        eprintln!("no user xattrs on {}: skipping", ctx.path().display());
        return;
    }
    assert!(setfattr("src", "top"));
    let root = common::TestRoot::new();
    let out = tempfile::tempdir().unwrap();
    let build = |name: &str| {
        let layout = out.path().join(name);
        common::run_ok(
            root.rbuild()
                .args(["build", "-q", "-o"])
                .arg(format!("type=oci,tar=false,dest={}", layout.display()))
                .arg(ctx.path()),
        );
        layer_xattrs(&layout, 0)
    };
    let dir_xattr = |v: &str| ("app/sub/".to_string(), "user.dirtest".to_string(), v.into());
    assert_eq!(build("first"), vec![dir_xattr("y")]);
    assert!(setfattr("src/sub", "z"));
    assert_eq!(build("second"), vec![dir_xattr("z")]);
}

/// An OCI layout context is a full image for RUN too: `FROM NAME` runs its busybox, and
/// `RUN --mount from=NAME` mounts another layout's files.
#[test]
fn oci_layout_contexts_serve_run_and_mounts() {
    let root = common::TestRoot::new();
    let files = Context::new()
        .dockerfile("FROM scratch\nCOPY a.txt /a.txt\n")
        .file("a.txt", "mounted\n");
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("files");
    common::run_ok(
        root.rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!("type=oci,tar=false,dest={}", layout.display()))
            .arg(files.path()),
    );
    let ctx = Context::new().dockerfile(
        "FROM bb\nRUN --mount=from=files,target=/m cat /m/a.txt > /got && busybox true\n",
    );
    let tree = build_tree(
        &root,
        &ctx,
        &[
            "--build-context",
            &format!(
                "bb=oci-layout://{}:latest",
                common::fixtures::busybox_layout().display()
            ),
            "--build-context",
            &format!("files=oci-layout://{}", layout.display()),
        ],
    );
    assert!(tree.contains(&"644 got mounted".to_string()), "{tree:?}");
    assert!(tree.iter().any(|l| l.contains(" bin/busybox")), "{tree:?}");
}

/// `COPY` with heredocs next to context files (BuildKit allows it): both land in the directory
/// destination, a changed context file is not served from the cache, and a destination
/// without `/` is refused as BuildKit refuses several sources.
#[test]
fn copy_mixes_heredocs_and_files() {
    let ctx = Context::new()
        .dockerfile("FROM scratch\nCOPY a.txt <<EOF b.txt /d/\nfrom heredoc\nEOF\n")
        .file("a.txt", "a\n")
        .file("b.txt", "b\n");
    let root = common::TestRoot::new();
    let want = |a: &str| {
        vec![
            "644 d/EOF from heredoc".to_string(),
            format!("644 d/a.txt {a}"),
            "644 d/b.txt b".to_string(),
            "755 d/ ".to_string(),
        ]
    };
    assert_eq!(build_tree(&root, &ctx, &[]), want("a"));
    std::fs::write(ctx.join("a.txt"), "changed\n").unwrap();
    assert_eq!(build_tree(&root, &ctx, &[]), want("changed"));

    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY a.txt <<EOF /d\nx\nEOF\n",
    )
    .unwrap();
    let out = root
        .rbuild()
        .args(["build", "-q"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("must be a directory and end with a /"),
        "{err}"
    );
}

/// ADD of a tar whose entries carry PAX `SCHILY.xattr.` records keeps them in the layer, as
/// docker's untar applies them.
#[test]
fn add_archives_keep_pax_xattrs() {
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        b.append_pax_extensions([("SCHILY.xattr.user.kind", b"dir".as_slice())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "sub/", std::io::empty()).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.origin", b"archive".as_slice())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"f\n"[..]).unwrap();
        b.finish().unwrap();
    }
    let ctx = Context::new()
        .dockerfile("FROM scratch\nADD x.tar /d/\n")
        .file("x.tar", raw);
    let probe = ctx.join("probe");
    std::fs::write(&probe, "p").unwrap();
    if xattr::set(&probe, "user.probe", b"1").is_err() {
        eprintln!("no user xattrs under {}: skipping", ctx.path().display());
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    common::run_ok(
        common::rbuild()
            .args(["build", "-q", "-o"])
            .arg(format!("type=oci,tar=false,dest={}", layout.display()))
            .arg(ctx.path()),
    );
    let mut found = layer_xattrs(&layout, 0);
    found.sort();
    assert_eq!(
        found,
        [
            (
                "d/f".to_string(),
                "user.origin".to_string(),
                b"archive".to_vec()
            ),
            (
                "d/sub/".to_string(),
                "user.kind".to_string(),
                b"dir".to_vec()
            ),
        ]
    );
}
