//! Writing a resolved COPY/ADD into a layer: each [`LayerEntry`] becomes one tar entry through
//! [`crate::layer::LayerWriter`], with the build's timestamp for directories the copy created
//! and `SOURCE_DATE_EPOCH` clamping applied as BuildKit rewrites timestamps. Files keep the
//! extended attributes of their source (`security.capability`, `user.*`), as BuildKit's copy
//! does, and so do copied directories, so they reach the layer as PAX `SCHILY.xattr.` records.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::ContextError;
use super::copy::CopyPlan;
use super::entry::{EntryKind, LayerEntry};
use crate::layer::{EntryMeta, LayerWriter};

/// Timestamps used while writing a plan's entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmitTimes {
    /// Seconds since the epoch for entries without their own mtime (created directories):
    /// `SOURCE_DATE_EPOCH` when set, otherwise the build's start time.
    pub created: i64,
    /// Clamp every mtime to this value (`SOURCE_DATE_EPOCH` with rewrite-timestamp semantics).
    pub clamp: Option<i64>,
}

fn meta_of(entry: &LayerEntry, times: EmitTimes) -> EntryMeta {
    let (mtime, mtime_nsec) = match entry.mtime {
        Some(m) => (m.secs, m.nanos),
        None => (times.created, 0),
    };
    let mut meta = EntryMeta {
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        mtime,
        mtime_nsec,
        ..EntryMeta::default()
    };
    if let Some(epoch) = times.clamp {
        meta.clamp_mtime(epoch);
    }
    meta
}

impl CopyPlan {
    /// Appends every entry, in order, to `writer`. File content is streamed from its host
    /// source (context, stage root or ADD staging), which the plan keeps alive.
    pub fn write_to<W: Write>(
        &self,
        writer: &mut LayerWriter<W>,
        times: EmitTimes,
    ) -> Result<(), ContextError> {
        for entry in &self.entries {
            let mut meta = meta_of(entry, times);
            if let Some(from) = &entry.xattrs_from {
                meta.xattrs = source_xattrs(from)?;
            }
            let layer_err = |source| ContextError::Layer {
                path: entry.path.clone(),
                source,
            };
            match &entry.kind {
                EntryKind::Dir => writer.append_dir(&entry.path, &meta).map_err(layer_err)?,
                EntryKind::File { source, size } => {
                    let f = File::open(source).map_err(|e| ContextError::io(source, e))?;
                    writer
                        .append_file(&entry.path, &meta, f, *size)
                        .map_err(layer_err)?
                }
                EntryKind::Symlink { target } => writer
                    .append_symlink(&entry.path, target, &meta)
                    .map_err(layer_err)?,
                EntryKind::Hardlink { target } => writer
                    .append_hardlink(&entry.path, target, &meta)
                    .map_err(layer_err)?,
            }
        }
        Ok(())
    }
}

/// The portable extended attributes of a COPY/ADD source file (none where the file system has
/// none), for [`EntryMeta::xattrs`]. Overlay-internal and SELinux attributes of the host are
/// left out, as for RUN layers.
pub fn source_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, ContextError> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(ContextError::io(path, e)),
    };
    for name in names {
        let Some(key) = name.to_str() else {
            tracing::warn!(path = %path.display(), name = ?name, "skipping non-UTF-8 xattr name");
            continue;
        };
        if key.starts_with("trusted.overlay.")
            || key.starts_with("user.overlay.")
            || key == "security.selinux"
        {
            continue;
        }
        match xattr::get(path, &name) {
            Ok(Some(value)) => {
                out.insert(key.to_string(), value);
            }
            // Removed between list and get.
            Ok(None) => {}
            Err(e) => return Err(ContextError::io(path, e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Mtime;

    #[test]
    fn created_dirs_take_the_build_time_and_clamping_applies() {
        let dir = LayerEntry {
            path: "a".into(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 1,
            gid: 2,
            mtime: None,
            existing_parent: false,
            xattrs_from: None,
        };
        let m = meta_of(
            &dir,
            EmitTimes {
                created: 100,
                clamp: None,
            },
        );
        assert_eq!((m.mtime, m.uid, m.gid, m.mode), (100, 1, 2, 0o755));
        let file = LayerEntry {
            mtime: Some(Mtime {
                secs: 500,
                nanos: 7,
            }),
            ..dir
        };
        let m = meta_of(
            &file,
            EmitTimes {
                created: 100,
                clamp: Some(200),
            },
        );
        assert_eq!((m.mtime, m.mtime_nsec), (200, 0));
        let m = meta_of(
            &file,
            EmitTimes {
                created: 100,
                clamp: Some(900),
            },
        );
        assert_eq!((m.mtime, m.mtime_nsec), (500, 7));
    }
}
