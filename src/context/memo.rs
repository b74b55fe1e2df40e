//! The memo of file digests: under `<root>/context-hash-v3/`, one file per context, keyed by
//! (path, size, mtime, inode, ctime) so an unchanged context is not read again on the next
//! build. The memo files are a compact binary list, because a no-change rebuild of a large
//! context spent a fifth of its time parsing them as JSON; in memory, digests are kept as hex
//! arrays in a map with a fast hasher, because the same rebuild does 20,000 lookups.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ContextError;
use crate::image::{Digest, Hasher};

/// The on-disk format version; bump the directory name instead of migrating.
const MEMO_DIR: &str = "context-hash-v3";
/// First bytes of a memo file.
const MEMO_MAGIC: &[u8] = b"rbuild-context-hash-v3\n";

/// A content digest as its 64 lower-case hex characters: what cache-key lines hash, kept
/// without a heap allocation per remembered file.
pub(super) type Hex = [u8; 64];

fn hex_of(digest: &Digest) -> Hex {
    let mut hex = [0u8; 64];
    hex.copy_from_slice(digest.hex().as_bytes());
    hex
}

fn digest_of(hex: &Hex) -> Digest {
    let text = std::str::from_utf8(hex).expect("hex digits");
    format!("sha256:{text}")
        .parse()
        .expect("checked when stored")
}

/// The `sha256:<hex>` text of a memo record as a [`Hex`], if it is one.
fn parse_hex(text: &[u8]) -> Option<Hex> {
    let hex = text.strip_prefix(b"sha256:")?;
    if hex.len() != 64 || !hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex.try_into().ok()
}

/// FxHash-style hashing for memo paths: they come from the user's own context, so the
/// DoS-resistant default (SipHash) only costs time on 20,000 lookups per build.
#[derive(Debug, Default, Clone, Copy)]
struct PathHasher(u64);

impl std::hash::Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type PathMap<V> = HashMap<String, V, std::hash::BuildHasherDefault<PathHasher>>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    ctime_ns: i128,
    digest: Hex,
}

impl Record {
    fn matches(&self, meta: &std::fs::Metadata) -> bool {
        self.size == meta.len()
            && self.mtime_ns == ns(meta.mtime(), meta.mtime_nsec())
            && self.ino == meta.ino()
            && self.ctime_ns == ns(meta.ctime(), meta.ctime_nsec())
    }
}

fn ns(secs: i64, nsec: i64) -> i128 {
    secs as i128 * 1_000_000_000 + nsec as i128
}

/// Memo file bytes: the magic, then per record the path (u32 length + UTF-8), size (u64),
/// mtime (i128 ns), inode (u64), ctime (i128 ns) and digest (u8 length + text), little endian.
fn encode_records(records: &PathMap<Record>) -> Vec<u8> {
    let mut out = Vec::with_capacity(MEMO_MAGIC.len() + records.len() * 160);
    out.extend_from_slice(MEMO_MAGIC);
    for (path, r) in records {
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&r.size.to_le_bytes());
        out.extend_from_slice(&r.mtime_ns.to_le_bytes());
        out.extend_from_slice(&r.ino.to_le_bytes());
        out.extend_from_slice(&r.ctime_ns.to_le_bytes());
        out.push(b"sha256:".len() as u8 + 64);
        out.extend_from_slice(b"sha256:");
        out.extend_from_slice(&r.digest);
    }
    out
}

/// The records of a memo file, or `None` when it is not one (or is cut short).
fn decode_records(bytes: &[u8]) -> Option<PathMap<Record>> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(head)
        }
        fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
            self.take(N)?.try_into().ok()
        }
    }
    let mut c = Cursor(bytes.strip_prefix(MEMO_MAGIC)?);
    // Records are at least 120 bytes: reserve once instead of rehashing as the map grows.
    let mut records = PathMap::with_capacity_and_hasher(c.0.len() / 120, Default::default());
    while !c.0.is_empty() {
        let len = u32::from_le_bytes(c.array()?) as usize;
        let path = std::str::from_utf8(c.take(len)?).ok()?.to_string();
        let size = u64::from_le_bytes(c.array()?);
        let mtime_ns = i128::from_le_bytes(c.array()?);
        let ino = u64::from_le_bytes(c.array()?);
        let ctime_ns = i128::from_le_bytes(c.array()?);
        let dlen = c.take(1)?[0] as usize;
        let digest = parse_hex(c.take(dlen)?)?;
        records.insert(
            path,
            Record {
                size,
                mtime_ns,
                ino,
                ctime_ns,
                digest,
            },
        );
    }
    Some(records)
}

/// Counters showing how much work the memo saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoStats {
    /// Files whose digest came from the memo.
    pub hits: u64,
    /// Files that had to be read.
    pub misses: u64,
    /// Content bytes read while hashing.
    pub bytes_read: u64,
}

#[derive(Debug, Default)]
pub(super) struct RootMemo {
    records: PathMap<Record>,
    dirty: bool,
}

/// Remembered file digests, one memo file per source root under `<root>/context-hash-v3/`.
#[derive(Debug, Default)]
pub struct HashMemo {
    dir: Option<PathBuf>,
    roots: HashMap<PathBuf, RootMemo>,
    stats: MemoStats,
    /// Digests computed in this process by (device, inode, size, mtime, ctime), so the names
    /// of one hard-linked file are read once, not once per link (busybox's 300 applets).
    by_inode: HashMap<(u64, u64, u64, i128, i128), Hex>,
}

fn inode_key(meta: &std::fs::Metadata) -> (u64, u64, u64, i128, i128) {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        ns(meta.mtime(), meta.mtime_nsec()),
        ns(meta.ctime(), meta.ctime_nsec()),
    )
}

impl HashMemo {
    /// A memo persisted under `store_root/context-hash-v3/` (created on first save).
    pub fn open(store_root: &Path) -> HashMemo {
        HashMemo {
            dir: Some(store_root.join(MEMO_DIR)),
            ..Default::default()
        }
    }

    /// A memo that lives only in memory.
    pub fn in_memory() -> HashMemo {
        HashMemo::default()
    }

    /// Counters since this memo was opened.
    pub fn stats(&self) -> MemoStats {
        self.stats
    }

    fn memo_file(&self, root: &Path) -> Option<PathBuf> {
        // The same context reached through another spelling shares one memo.
        let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let name = Digest::of(canonical.as_os_str().as_encoded_bytes());
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.json", name.hex())))
    }

    pub(super) fn root_memo(&mut self, root: &Path) -> &mut RootMemo {
        if !self.roots.contains_key(root) {
            let mut memo = RootMemo::default();
            if let Some(file) = self.memo_file(root) {
                // A missing or unreadable memo only costs a re-read of the files.
                if let Ok(bytes) = std::fs::read(&file) {
                    match decode_records(&bytes) {
                        Some(records) => memo.records = records,
                        None => {
                            tracing::warn!(file = %file.display(), "ignoring corrupt hash memo")
                        }
                    }
                }
            }
            self.roots.insert(root.to_path_buf(), memo);
        }
        self.roots.get_mut(root).expect("inserted above")
    }

    /// The digest of the regular file `root/rel`: of its content, and also of its xattrs
    /// when it has any (BuildKit's content hash covers them, and COPY keeps them). Comes from
    /// the memo when size, mtime, inode and ctime are unchanged (setting an xattr changes the
    /// ctime), or from another link of the same inode hashed earlier in this process.
    pub fn file_digest(
        &mut self,
        root: &Path,
        rel: &str,
        meta: &std::fs::Metadata,
    ) -> Result<Digest, ContextError> {
        self.file_hex(root, rel, meta).map(|hex| digest_of(&hex))
    }

    /// [`Self::file_digest`] as hex digits, without allocating on a memo hit.
    pub(super) fn file_hex(
        &mut self,
        root: &Path,
        rel: &str,
        meta: &std::fs::Metadata,
    ) -> Result<Hex, ContextError> {
        if let Some(rec) = self.root_memo(root).records.get(rel)
            && rec.matches(meta)
        {
            let digest = rec.digest;
            self.stats.hits += 1;
            return Ok(digest);
        }
        let record = |digest: Hex, after: &std::fs::Metadata| Record {
            size: after.len(),
            mtime_ns: ns(after.mtime(), after.mtime_nsec()),
            ino: after.ino(),
            ctime_ns: ns(after.ctime(), after.ctime_nsec()),
            digest,
        };
        if let Some(&digest) = self.by_inode.get(&inode_key(meta)) {
            self.stats.hits += 1;
            let memo = self.root_memo(root);
            memo.records.insert(rel.to_string(), record(digest, meta));
            memo.dirty = true;
            return Ok(digest);
        }
        let path = root.join(rel);
        let mut f = File::open(&path).map_err(|e| ContextError::io(&path, e))?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut read = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| ContextError::io(&path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            read += n as u64;
        }
        let mut digest = h.finish();
        let xattrs = super::source_xattrs(&path)?;
        if !xattrs.is_empty() {
            // Files without xattrs keep the plain content digest (and their cache keys).
            digest = hash_xattrs(b"content+xattrs\0", &digest.to_string(), &xattrs);
        }
        let digest = hex_of(&digest);
        // Re-stat: a file changing while read must not be remembered with the new stamp.
        let after = std::fs::symlink_metadata(&path).map_err(|e| ContextError::io(&path, e))?;
        self.stats.misses += 1;
        self.stats.bytes_read += read;
        let record = record(digest, &after);
        if record.matches(meta) {
            self.by_inode.insert(inode_key(meta), digest);
            let memo = self.root_memo(root);
            memo.records.insert(rel.to_string(), record);
            memo.dirty = true;
        }
        Ok(digest)
    }

    /// Writes changed memo files atomically (temp file, fsync, rename).
    pub fn save(&mut self) -> Result<(), ContextError> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let dirty: Vec<PathBuf> = self
            .roots
            .iter()
            .filter(|(_, m)| m.dirty)
            .map(|(r, _)| r.clone())
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(|e| ContextError::io(&dir, e))?;
        for root in dirty {
            let file = self.memo_file(&root).expect("dir is set");
            let memo = self.roots.get_mut(&root).expect("listed above");
            // Forget files that are gone so the memo tracks the context, not its history.
            memo.records
                .retain(|rel, _| std::fs::symlink_metadata(root.join(rel)).is_ok());
            let bytes = encode_records(&memo.records);
            let mut tmp =
                tempfile::NamedTempFile::new_in(&dir).map_err(|e| ContextError::io(&dir, e))?;
            tmp.write_all(&bytes)
                .and_then(|_| tmp.as_file().sync_all())
                .map_err(|e| ContextError::io(tmp.path(), e))?;
            tmp.persist(&file)
                .map_err(|e| ContextError::io(&file, e.error))?;
            memo.dirty = false;
        }
        Ok(())
    }
}

/// A digest of `xattrs` (sorted by name), prefixed by a domain tag and what they belong to.
pub(super) fn hash_xattrs(tag: &[u8], base: &str, xattrs: &BTreeMap<String, Vec<u8>>) -> Digest {
    let mut h = Hasher::new();
    h.update(tag);
    h.update(base.as_bytes());
    for (name, value) in xattrs {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_file_round_trips_and_rejects_garbage() {
        let mut records = PathMap::default();
        for (i, name) in ["a", "dir/ünï code", ""].iter().enumerate() {
            records.insert(
                name.to_string(),
                Record {
                    size: i as u64 * 1000,
                    mtime_ns: -5 + i as i128 * 1_700_000_000_123_456_789,
                    ino: 42 + i as u64,
                    ctime_ns: 1_700_000_000_000_000_001,
                    digest: hex_of(&Digest::of(name.as_bytes())),
                },
            );
        }
        let bytes = encode_records(&records);
        assert_eq!(decode_records(&bytes), Some(records));
        assert_eq!(decode_records(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_records(b"{}"), None);
    }

    #[test]
    fn memo_skips_unchanged_files_and_notices_changes() {
        let ctx = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("a"), "one").unwrap();
        let meta = std::fs::symlink_metadata(ctx.path().join("a")).unwrap();
        let mut memo = HashMemo::open(store.path());
        let d1 = memo.file_digest(ctx.path(), "a", &meta).unwrap();
        assert_eq!(d1, Digest::of(b"one"));
        memo.save().unwrap();
        let mut memo = HashMemo::open(store.path());
        assert_eq!(memo.file_digest(ctx.path(), "a", &meta).unwrap(), d1);
        assert_eq!(memo.stats().hits, 1);
        assert_eq!(memo.stats().bytes_read, 0);
        std::fs::write(ctx.path().join("a"), "two!").unwrap();
        let meta = std::fs::symlink_metadata(ctx.path().join("a")).unwrap();
        assert_eq!(
            memo.file_digest(ctx.path(), "a", &meta).unwrap(),
            Digest::of(b"two!")
        );
        assert_eq!(memo.stats().misses, 1);
    }

    #[test]
    fn hard_links_are_read_once() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("a"), "linked").unwrap();
        for n in ["b", "c"] {
            std::fs::hard_link(ctx.path().join("a"), ctx.path().join(n)).unwrap();
        }
        let mut memo = HashMemo::in_memory();
        for n in ["a", "b", "c"] {
            let meta = std::fs::symlink_metadata(ctx.path().join(n)).unwrap();
            assert_eq!(
                memo.file_digest(ctx.path(), n, &meta).unwrap(),
                Digest::of(b"linked")
            );
        }
        assert_eq!(memo.stats().misses, 1);
        assert_eq!(memo.stats().hits, 2);
        assert_eq!(memo.stats().bytes_read, 6);
    }

    #[test]
    fn xattrs_change_the_digest_and_invalidate_the_memo() {
        let ctx = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let file = ctx.path().join("a");
        std::fs::write(&file, "same").unwrap();
        let mut memo = HashMemo::open(store.path());
        let meta = std::fs::symlink_metadata(&file).unwrap();
        let plain = memo.file_digest(ctx.path(), "a", &meta).unwrap();
        assert_eq!(plain, Digest::of(b"same"));
        memo.save().unwrap();
        if let Err(e) = xattr::set(&file, "user.rbuild-test", b"1") {
            eprintln!("SKIP: user xattrs not supported here: {e}");
            return;
        }
        let mut memo = HashMemo::open(store.path());
        let meta = std::fs::symlink_metadata(&file).unwrap();
        let with = memo.file_digest(ctx.path(), "a", &meta).unwrap();
        assert_ne!(with, plain);
        xattr::set(&file, "user.rbuild-test", b"2").unwrap();
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert_ne!(memo.file_digest(ctx.path(), "a", &meta).unwrap(), with);
        assert_eq!(memo.stats().misses, 2);
    }
}
