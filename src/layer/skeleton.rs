//! Skeleton roots: a layer chain applied with every directory, symlink and special file and
//! their metadata, but with regular files reduced to hard links to one empty file (except user
//! and group databases, which keep their data). A build needs such a root only to resolve a
//! COPY destination, `--chown` names or a WORKDIR: which paths exist, which are directories,
//! where symlinks lead. Writing (and later deleting) every file of an image for that made
//! throwaway roots the slowest part of a build on this project's disks: each new inode and
//! each freed data block cost about a millisecond once many files had come and gone.

use std::io::Read;
use std::path::Path;

use super::Result;
use super::apply::{ApplyOptions, ApplyStats, Content, run};
use super::whiteout::WhiteoutMode;

pub use super::apply::SKELETON_FILE;

/// Applies `layer` onto `dest` like [`super::apply`], except that regular files other than
/// `passwd` and `group` files become hard links to `dest/`[`SKELETON_FILE`]: they exist, with
/// no data and no metadata of their own. Never read files from such a root.
pub fn apply_skeleton<R: Read + Send>(
    layer: R,
    dest: &Path,
    options: &ApplyOptions,
) -> Result<ApplyStats> {
    run(
        layer,
        dest,
        options,
        WhiteoutMode::Delete,
        Content::Skeleton,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Compression, EntryMeta, LayerWriter};
    use std::os::unix::fs::MetadataExt;

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap();
        let mut dir = EntryMeta::with_mode(0o750);
        dir.mtime = 7;
        w.append_dir("etc", &dir).unwrap();
        w.append_dir("app", &dir).unwrap();
        for (name, data) in files {
            w.append_file(name, &EntryMeta::with_mode(0o755), *data, data.len() as u64)
                .unwrap();
        }
        w.append_symlink("bin", "app", &EntryMeta::with_mode(0o777))
            .unwrap();
        w.finish().unwrap().sink
    }

    #[test]
    fn skeleton_keeps_paths_dirs_links_and_account_data_only() {
        let one = layer(&[
            ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            ("app/a", b"aaa"),
            ("app/b", b"bee"),
        ]);
        let two = layer(&[("app/c", b"sea")]);
        let dest = tempfile::tempdir().unwrap();
        let opts = ApplyOptions {
            chown: false,
            xattrs: false,
        };
        let stats = apply_skeleton(&one[..], dest.path(), &opts).unwrap();
        assert_eq!(stats.files, 3);
        apply_skeleton(&two[..], dest.path(), &opts).unwrap();
        let p = |n: &str| dest.path().join(n);
        assert_eq!(
            std::fs::read(p("etc/passwd")).unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        let empty = std::fs::symlink_metadata(p(SKELETON_FILE)).unwrap();
        for f in ["app/a", "app/b", "app/c"] {
            let m = std::fs::symlink_metadata(p(f)).unwrap();
            assert!(m.is_file());
            assert_eq!(m.len(), 0, "{f}");
            assert_eq!(m.ino(), empty.ino(), "{f} is a link to the empty file");
        }
        let app = std::fs::symlink_metadata(p("app")).unwrap();
        assert_eq!((app.mode() & 0o7777, app.mtime()), (0o750, 7));
        assert_eq!(std::fs::read_link(p("bin")).unwrap(), Path::new("app"));
        assert!(std::fs::symlink_metadata(p("nope")).is_err());
    }
}
