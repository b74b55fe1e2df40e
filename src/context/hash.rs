//! Content hashes for COPY/ADD cache keys: a line per selected item over (relative path,
//! kind, mode, uid, gid, symlink target, content digest, xattrs), never mtime, hashed into one
//! digest of exactly what the instruction reads. File digests come from the [`HashMemo`].

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::ContextError;
use super::copy::CopyRequest;
use super::memo::{HashMemo, hash_xattrs};
use super::select::{Selected, select_sources};
use crate::image::{Digest, Hasher};

/// The digest of one selected item: relative path, kind, mode, owner, link target, content
/// (and xattrs, for files and for the directories a copy recreates).
fn item_line(
    root: &Path,
    sel: &Selected,
    memo: &mut HashMemo,
    line: &mut Vec<u8>,
) -> Result<(), ContextError> {
    use std::io::Write as _;
    let meta = &sel.meta;
    let path = sel.root_path();
    let ft = meta.file_type();
    line.clear();
    write!(line, "{}\0{path}\0", sel.source_index).expect("writing to memory");
    if ft.is_dir() {
        line.extend_from_slice(b"dir");
    } else if ft.is_symlink() {
        line.extend_from_slice(b"symlink");
    } else if ft.is_file() {
        line.extend_from_slice(b"file");
    } else {
        line.extend_from_slice(b"special");
    }
    write!(
        line,
        "\0{:o}\0{}\0{}\0",
        meta.mode(),
        meta.uid(),
        meta.gid()
    )
    .expect("writing to memory");
    if ft.is_dir() {
        // A source's top directory is not copied itself (its contents are), so only the
        // directories below it carry their xattrs into the layer. None: an empty detail.
        if !sel.rel.is_empty() {
            let xattrs = super::source_xattrs(&sel.host)?;
            if !xattrs.is_empty() {
                let d = hash_xattrs(b"dir-xattrs\0", "", &xattrs);
                write!(line, "{d}").expect("writing to memory");
            }
        }
    } else if ft.is_symlink() {
        match &sel.link_target {
            Some(t) => line.extend_from_slice(t.as_bytes()),
            None => {
                let t =
                    std::fs::read_link(&sel.host).map_err(|e| ContextError::io(&sel.host, e))?;
                line.extend_from_slice(t.to_string_lossy().as_bytes());
            }
        }
    } else if ft.is_file() {
        line.extend_from_slice(b"sha256:");
        line.extend_from_slice(&memo.file_hex(root, &path, meta)?);
    }
    line.push(b'\n');
    Ok(())
}

/// The cache-key digest of exactly what a COPY/ADD selects from its source root: sources after
/// wildcard expansion, `--exclude` and `.dockerignore`, every file's content via the memo. URL
/// sources contribute their URL plus `--checksum`, or the server's `ETag`/`Last-Modified`, or
/// (when the server gives neither) the digest of the downloaded content. The instruction's
/// own settings (destination, `--chown`, `--chmod`, `--parents`...) are not part of this digest:
/// they belong in the step's cache key next to it. Call [`HashMemo::save`] afterwards to keep
/// the memo for the next build.
pub fn selection_digest(req: &CopyRequest, memo: &mut HashMemo) -> Result<Digest, ContextError> {
    let local = req.local_sources();
    // Stage and image roots are temporary directories: remembering them on disk would only
    // grow the memo, so they get a memo for this call alone.
    let mut scratch = HashMemo::in_memory();
    let memo = if req.from_context { memo } else { &mut scratch };
    // Reading the memo of a large context overlaps with the walk.
    let selected = std::thread::scope(|scope| {
        let loading = scope.spawn(|| {
            memo.root_memo(&req.source_root);
        });
        let selected = select_sources(&req.source_root, &local, &req.select_options());
        loading.join().expect("memo loading panicked");
        selected
    })?;
    let mut h = Hasher::new();
    let mut line = Vec::with_capacity(256);
    for sel in &selected {
        item_line(&req.source_root, sel, memo, &mut line)?;
        h.update(&line);
    }
    for url in req.sources.iter().filter(|s| !local.contains(s)) {
        let key = super::fetch::url_cache_key(url, req.checksum.as_deref())?;
        h.update(format!("url\0{url}\0{key}\n").as_bytes());
    }
    Ok(h.finish())
}
