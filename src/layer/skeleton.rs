//! Skeleton roots: a layer chain applied with every path, type, mode, owner, time and link, but
//! with regular files left empty (except user and group databases). A build needs such a root
//! to resolve a COPY destination, `--chown` names or a WORKDIR, and to select what a
//! `COPY --from` reads; file data is filled in afterwards for exactly the files a copy selects
//! ([`fill_content`]). Writing, and later deleting, the data of every file of an image made
//! throwaway roots the slowest part of a build: freeing thousands of small files' blocks costs
//! milliseconds each on a disk mounted with `discard`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use tar::EntryType;

use super::apply::{ApplyOptions, ApplyStats, Content, run};
use super::rootfd::Root;
use super::tar_meta::clean_components;
use super::whiteout::WhiteoutMode;
use super::{LayerError, Result, open_decompressed};

/// Applies `layer` onto `dest` like [`super::apply`], except that regular files other than
/// `passwd` and `group` files are created empty: same metadata, no data.
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

/// Writes the data of the files of skeleton root `dest` whose inode (dev, ino) is in `wanted`,
/// reading `layer`, one of the layers the skeleton was applied from. Call it for every layer of
/// the chain in order: a file's data then ends up from the last layer that wrote it, because
/// a later regular-file entry for a name made a new inode in the skeleton and an earlier
/// layer's data for the same inode is overwritten. Mode, owner and times stay as the skeleton
/// has them. Returns the number of data bytes written.
pub fn fill_content<R: Read + Send>(
    layer: R,
    dest: &Path,
    wanted: &HashSet<(u64, u64)>,
) -> Result<u64> {
    if wanted.is_empty() {
        return Ok(0);
    }
    let root = Root::open(dest).map_err(|source| LayerError::Destination {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut archive = tar::Archive::new(open_decompressed(layer)?);
    let entries = archive
        .entries()
        .map_err(|source| LayerError::Archive { source })?;
    let mut written = 0;
    for entry in entries {
        let mut entry = entry.map_err(|source| LayerError::Archive { source })?;
        if !matches!(
            entry.header().entry_type(),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
        ) {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let comps = clean_components(&raw);
        let Some((base, parents)) = comps.split_last() else {
            continue;
        };
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let fail = |op: &'static str| {
            let entry = shown.clone();
            move |source: io::Error| LayerError::Apply { entry, op, source }
        };
        // A name that is gone or no longer a directory path in the final tree: the skeleton
        // has nothing of this entry to fill.
        let Ok(parent) = root.open_dir(&parents.join(&b'/')) else {
            continue;
        };
        let name = OsStr::from_bytes(base);
        let st = match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(fail("stat")(e.into())),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || !wanted.contains(&(st.st_dev, st.st_ino))
        {
            continue;
        }
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open for filling")(e.into()))?;
        let mut file = File::from(fd);
        written += io::copy(&mut entry, &mut file).map_err(fail("write content"))?;
        // Writing clears setuid/setgid; the times must stay the layer's (COPY keeps them).
        let times = Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        rustix::fs::fchmod(&file, Mode::from_raw_mode(st.st_mode & 0o7777))
            .and_then(|()| rustix::fs::futimens(&file, &times))
            .map_err(|e| fail("restore mode and times")(e.into()))?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Compression, EntryMeta, LayerWriter};
    use std::os::unix::fs::MetadataExt;

    fn layer(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut w = LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap();
        w.append_dir("etc", &EntryMeta::with_mode(0o755)).unwrap();
        w.append_dir("app", &EntryMeta::with_mode(0o755)).unwrap();
        for (name, data) in files {
            let mut meta = EntryMeta::with_mode(0o4755);
            meta.mtime = 1_000_000;
            w.append_file(name, &meta, *data, data.len() as u64)
                .unwrap();
        }
        for (name, target) in links {
            w.append_hardlink(name, target, &EntryMeta::with_mode(0o644))
                .unwrap();
        }
        w.finish().unwrap().sink
    }

    #[test]
    fn skeleton_keeps_metadata_and_only_account_data_then_fills_what_is_wanted() {
        let one = layer(
            &[
                ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                ("app/a", b"old a"),
                ("app/b", b"bee"),
            ],
            &[],
        );
        // The second layer rewrites a and links c to it.
        let two = layer(&[("app/a", b"new a!")], &[("app/c", "app/a")]);
        let dest = tempfile::tempdir().unwrap();
        let opts = ApplyOptions {
            chown: false,
            xattrs: false,
        };
        apply_skeleton(&one[..], dest.path(), &opts).unwrap();
        apply_skeleton(&two[..], dest.path(), &opts).unwrap();
        let p = |n: &str| dest.path().join(n);
        assert_eq!(
            std::fs::read(p("etc/passwd")).unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        let meta_a = std::fs::symlink_metadata(p("app/a")).unwrap();
        assert_eq!(meta_a.len(), 0);
        assert_eq!(meta_a.mode() & 0o7777, 0o4755);
        assert_eq!(meta_a.mtime(), 1_000_000);

        let wanted: HashSet<(u64, u64)> =
            [meta_a.dev()].iter().map(|&d| (d, meta_a.ino())).collect();
        let mut bytes = 0;
        for l in [&one, &two] {
            bytes += fill_content(&l[..], dest.path(), &wanted).unwrap();
        }
        assert_eq!(bytes, "old a".len() as u64 + "new a!".len() as u64);
        assert_eq!(std::fs::read(p("app/a")).unwrap(), b"new a!");
        assert_eq!(std::fs::read(p("app/c")).unwrap(), b"new a!");
        assert_eq!(std::fs::read(p("app/b")).unwrap(), b"", "not wanted");
        let after = std::fs::symlink_metadata(p("app/a")).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o4755);
        assert_eq!(after.mtime(), 1_000_000);
    }
}
