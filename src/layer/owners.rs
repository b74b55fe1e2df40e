//! Owner tables: the uid and gid each path of an unpacked root has in the image, as its layers'
//! tar headers give them. A root applied without chown (rootless, and every stage skeleton)
//! has the applying user's owners on disk, and a file of a skeleton has no inode of its own;
//! COPY must still write the owners the image has, so it reads them here instead of from disk.

use std::collections::BTreeMap;
use std::path::Path;

/// Owners `(uid, gid)` by root-relative path (normalized: no leading `/`, no `.` or empty
/// components; `""` is the root itself), kept up to date by
/// [`super::apply_recording_owners`] and [`super::apply_skeleton_recording_owners`]
/// with whiteouts and opaque directories removing what they delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerTable {
    owners: BTreeMap<Vec<u8>, (u32, u32)>,
}

impl OwnerTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The owner recorded for root-relative `path` (`/`-separated, leading `/` ignored).
    pub fn get(&self, path: &str) -> Option<(u32, u32)> {
        self.owners
            .get(path.trim_start_matches('/').as_bytes())
            .copied()
    }

    /// The owner recorded for `host`, a path inside `root` (the root this table describes);
    /// `None` when it is not inside `root` or not recorded.
    pub fn get_host(&self, root: &Path, host: &Path) -> Option<(u32, u32)> {
        use std::os::unix::ffi::OsStrExt;
        let rel = host.strip_prefix(root).ok()?;
        let mut key = Vec::new();
        for comp in rel.components() {
            match comp {
                std::path::Component::Normal(c) => {
                    if !key.is_empty() {
                        key.push(b'/');
                    }
                    key.extend_from_slice(c.as_bytes());
                }
                std::path::Component::CurDir => {}
                // `..` or a root would make `rel` mean something the table cannot answer.
                _ => return None,
            }
        }
        self.owners.get(&key).copied()
    }

    /// How many paths are recorded.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Records the owner of `path` (normalized, as the applier names it).
    pub(super) fn set(&mut self, path: &[u8], owner: (u32, u32)) {
        self.owners.insert(path.to_vec(), owner);
    }

    /// The owner recorded for normalized `path`.
    pub(super) fn get_raw(&self, path: &[u8]) -> Option<(u32, u32)> {
        self.owners.get(path).copied()
    }

    /// Forgets `path` and everything below it.
    pub(super) fn remove_tree(&mut self, path: &[u8]) {
        if path.is_empty() {
            self.owners.clear();
            return;
        }
        self.owners.remove(path);
        self.remove_below(path, |_| false);
    }

    /// Forgets everything strictly below directory `dir` (`""`: the root) except the paths
    /// `keep` accepts.
    pub(super) fn remove_below(&mut self, dir: &[u8], keep: impl Fn(&[u8]) -> bool) {
        let mut start = dir.to_vec();
        if !start.is_empty() {
            start.push(b'/');
        }
        // Every path below `dir/` sorts between `dir/` and `dir0` (`'0'` follows `'/'`).
        let doomed: Vec<Vec<u8>> = if start.is_empty() {
            (self.owners.keys())
                .filter(|k| !k.is_empty() && !keep(k))
                .cloned()
                .collect()
        } else {
            let mut end = dir.to_vec();
            end.push(b'0');
            (self.owners.range(start..end))
                .map(|(k, _)| k)
                .filter(|k| !keep(k))
                .cloned()
                .collect()
        };
        for k in doomed {
            self.owners.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_removal_is_component_wise() {
        let mut t = OwnerTable::new();
        for (p, o) in [
            ("", 0),
            ("a", 1),
            ("a/b", 2),
            ("a/b/c", 3),
            ("a/b0", 4),
            ("a/b.x", 5),
            ("a/bc", 6),
        ] {
            t.set(p.as_bytes(), (o, o));
        }
        t.remove_tree(b"a/b");
        assert_eq!(t.get("a/b"), None);
        assert_eq!(t.get("/a/b/c"), None);
        for (p, o) in [("a/b0", 4), ("a/b.x", 5), ("a/bc", 6), ("a", 1)] {
            assert_eq!(t.get(p), Some((o, o)), "{p}");
        }
        t.remove_below(b"a", |k| k == b"a/bc");
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(t.get("a/bc"), Some((6, 6)));
        t.remove_below(b"", |_| false);
        assert_eq!(t.get(""), Some((0, 0)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn host_paths_are_looked_up_relative_to_the_root() {
        let mut t = OwnerTable::new();
        t.set(b"usr/bin/x", (1000, 50));
        let root = Path::new("/tmp/view-1");
        assert_eq!(
            t.get_host(root, Path::new("/tmp/view-1/usr/./bin/x")),
            Some((1000, 50))
        );
        assert_eq!(t.get_host(root, Path::new("/tmp/view-2/usr/bin/x")), None);
        assert_eq!(
            t.get_host(root, Path::new("/tmp/view-1/usr/../usr/bin/x")),
            None
        );
    }

    #[test]
    fn applying_records_header_owners_and_forgets_what_whiteouts_delete() {
        use crate::layer::{
            ApplyOptions, Compression, EntryMeta, LayerWriter, apply_recording_owners,
            apply_skeleton_recording_owners,
        };
        let owned = |mode, id| {
            let mut m = EntryMeta::with_mode(mode);
            m.uid = id;
            m.gid = id + 1;
            m
        };
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        w.append_dir("home", &owned(0o755, 0)).unwrap();
        w.append_dir("home/app", &owned(0o750, 1000)).unwrap();
        w.append_file("home/app/a", &owned(0o644, 1000), &b"a"[..], 1)
            .unwrap();
        w.append_hardlink("home/b", "home/app/a", &owned(0o644, 0))
            .unwrap();
        w.append_dir("opt", &owned(0o755, 7)).unwrap();
        w.append_file("opt/old", &owned(0o644, 7), &b""[..], 0)
            .unwrap();
        w.append_symlink("link", "opt", &owned(0o777, 33)).unwrap();
        let lower = w.finish().unwrap().sink;
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        w.append_file("opt/new", &owned(0o644, 9), &b""[..], 0)
            .unwrap();
        w.append_opaque("opt").unwrap();
        w.append_whiteout("home/app").unwrap();
        let upper = w.finish().unwrap().sink;

        let opts = ApplyOptions {
            chown: false,
            xattrs: false,
        };
        let content = tempfile::tempdir().unwrap();
        let skeleton = tempfile::tempdir().unwrap();
        let (mut a, mut b) = (OwnerTable::new(), OwnerTable::new());
        apply_recording_owners(&lower[..], content.path(), &opts, &mut a).unwrap();
        apply_skeleton_recording_owners(&lower[..], skeleton.path(), &opts, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("home/app"), Some((1000, 1001)));
        assert_eq!(a.get("home/app/a"), Some((1000, 1001)));
        assert_eq!(
            a.get("home/b"),
            Some((1000, 1001)),
            "a link is its target's inode"
        );
        assert_eq!(a.get("link"), Some((33, 34)));
        assert_eq!(
            a.get_host(content.path(), &content.path().join("opt/old")),
            Some((7, 8))
        );
        apply_recording_owners(&upper[..], content.path(), &opts, &mut a).unwrap();
        apply_skeleton_recording_owners(&upper[..], skeleton.path(), &opts, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("opt/old"), None, "hidden by the opaque marker");
        assert_eq!(a.get("opt/new"), Some((9, 10)));
        assert_eq!(a.get("opt"), Some((7, 8)));
        assert_eq!(a.get("home/app"), None);
        assert_eq!(a.get("home/app/a"), None);
        assert!(!content.path().join("home/app").exists());
        assert_eq!(a.len(), 5, "{a:?}");
    }
}
