//! Unpacking one layer into its own snapshot directory in overlayfs' on-disk format, so
//! snapshots can be stacked as overlay lower dirs: `.wh.<name>` becomes a 0:0 character device
//! and `.wh..wh..opq` the `user.overlay.opaque` xattr (the `userxattr` flavour used inside user
//! namespaces). Runs inside the user namespace, so ownership is set with container ids.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::exec::secure_join;
use crate::layer::{ApplyOptions, apply, open_decompressed};

/// Counts reported back to the parent.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct UnpackStats {
    pub files: u64,
    pub dirs: u64,
    pub whiteouts: u64,
    pub opaques: u64,
    pub skipped_devices: u64,
}

/// Applies `blob` onto the empty dir `dest`, then records its whiteouts overlay-style.
pub(crate) fn unpack(mut blob: File, dest: &Path) -> Result<UnpackStats, String> {
    let options = ApplyOptions {
        chown: true,
        xattrs: true,
    };
    let stats = apply(&mut blob, dest, &options).map_err(|e| e.to_string())?;
    let mut out = UnpackStats {
        files: stats.files,
        dirs: stats.dirs,
        whiteouts: 0,
        opaques: 0,
        skipped_devices: stats.skipped_devices,
    };
    if stats.whiteouts + stats.opaques == 0 {
        return Ok(out);
    }
    // `apply` deleted what the whiteouts name (nothing, in an empty dir); a second pass over
    // the tar records them so they hide files of the layers below in the overlay.
    blob.seek(SeekFrom::Start(0))
        .map_err(|e| format!("rewinding the layer blob: {e}"))?;
    let reader = open_decompressed(blob).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("reading the layer: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading the layer: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("layer entry name: {e}"))?
            .into_owned();
        let Some(base) = path.file_name().map(|b| b.as_bytes().to_vec()) else {
            continue;
        };
        if !base.starts_with(b".wh.") {
            continue;
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        let dir = secure_join(dest, &format!("/{}", parent.display()))?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if base == b".wh..wh..opq" {
            xattr::set(&dir, "user.overlay.opaque", b"y")
                .map_err(|e| format!("marking {} opaque: {e}", parent.display()))?;
            out.opaques += 1;
            continue;
        }
        let target = &base[4..];
        if target.is_empty() || target == b"." || target == b".." || target.starts_with(b".wh.") {
            continue;
        }
        let node = dir.join(std::ffi::OsStr::from_bytes(target));
        if std::fs::symlink_metadata(&node).is_ok() {
            continue;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| format!("creating overlay whiteout {}: {e}", node.display()))?;
        out.whiteouts += 1;
    }
    Ok(out)
}
