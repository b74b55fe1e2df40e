//! The layer of a RUN step, read from its overlay upper dir only (never by walking the whole
//! root): 0:0 character devices are deletions (`.wh.<name>`), `user.overlay.opaque` dirs were
//! replaced (`.wh..wh..opq`). Runs inside the user namespace, so `lstat` already reports
//! container uids and gids and every file is readable.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use walkdir::WalkDir;

use crate::layer::{EntryOptions, LayerWriter};

/// Appends every change recorded in `upper` to `writer`, in sorted order.
pub(crate) fn write_upper<W: Write>(
    upper: &Path,
    writer: &mut LayerWriter<W>,
    source_date_epoch: Option<i64>,
) -> Result<(), String> {
    let options = EntryOptions {
        source_date_epoch,
        ..EntryOptions::default()
    };
    for entry in WalkDir::new(upper).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("walking the upper dir: {e}"))?;
        let rel = entry
            .path()
            .strip_prefix(upper)
            .map_err(|_| format!("{} is outside the upper dir", entry.path().display()))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("lstat {}: {e}", rel.display()))?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            writer.append_whiteout(rel).map_err(|e| e.to_string())?;
            continue;
        }
        writer
            .append_from_fs(rel, entry.path(), &options)
            .map_err(|e| e.to_string())?;
        if ft.is_dir() && is_opaque(entry.path()) {
            writer.append_opaque(rel).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn is_opaque(dir: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}
