//! Whiteouts while applying a layer: `.wh.<name>` and the opaque marker `.wh..wh..opq` either
//! take effect on the destination (delete, empty) or are recorded the way overlayfs stores
//! them (0:0 character device, `*.overlay.opaque=y`), for snapshots used as overlay lower dirs.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, Mode, XattrFlags};

use super::apply::State;
use super::rootfd;
use super::{LayerError, Result};

/// Name prefix of a whiteout entry.
pub(super) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker entry.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Which xattr namespace overlayfs reads opaque markers from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayXattrs {
    /// `user.overlay.opaque`: overlay mounted with `userxattr` inside a user namespace.
    User,
    /// `trusted.overlay.opaque`: overlay mounted by real root.
    Trusted,
}

impl OverlayXattrs {
    fn opaque_name(self) -> &'static str {
        match self {
            OverlayXattrs::User => "user.overlay.opaque",
            OverlayXattrs::Trusted => "trusted.overlay.opaque",
        }
    }
}

/// What `apply` does with whiteout entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WhiteoutMode {
    /// Delete what they name (flattening layers into one tree).
    Delete,
    /// Record them in overlayfs format.
    Overlay(OverlayXattrs),
}

impl State<'_> {
    /// Handles an entry whose base name starts with `.wh.` under the directory `parents`.
    pub(super) fn apply_whiteout(
        &mut self,
        parents: &[&[u8]],
        base: &[u8],
        shown: &str,
    ) -> Result<()> {
        let fail = |op: &'static str| {
            move |source: io::Error| LayerError::Apply {
                entry: shown.to_string(),
                op,
                source,
            }
        };
        let target = &base[WHITEOUT_PREFIX.len()..];
        let opaque = base == OPAQUE_MARKER;
        if !opaque
            && (target.is_empty()
                || target == b"."
                || target == b".."
                || target.starts_with(WHITEOUT_PREFIX))
        {
            // `.wh..wh.*` other than the opaque marker are aufs metadata; `.wh..` is hostile.
            tracing::debug!(entry = %shown, "ignoring aufs metadata or invalid whiteout");
            return Ok(());
        }
        if opaque {
            self.stats.opaques += 1;
        } else {
            self.stats.whiteouts += 1;
        }

        if let WhiteoutMode::Overlay(xattrs) = self.whiteouts {
            let dir = self
                .root
                .create_dirs(parents)
                .map_err(fail("create whiteout directory"))?;
            if opaque {
                rustix::fs::fsetxattr(&dir, xattrs.opaque_name(), b"y", XattrFlags::empty())
                    .map_err(|e| fail("set opaque xattr")(e.into()))?;
            } else {
                rootfd::remove_at(&dir, target).map_err(fail("remove before whiteout"))?;
                rustix::fs::mknodat(
                    &dir,
                    OsStr::from_bytes(target),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| fail("mknod overlay whiteout")(e.into()))?;
            }
            return Ok(());
        }

        let parent_rel = parents.join(&b'/');
        let dir = match self.root.open_dir(&parent_rel) {
            Ok(fd) => fd,
            // Nothing below to hide.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(());
            }
            Err(e) => return Err(fail("open whiteout directory")(e)),
        };
        if opaque {
            for child in rootfd::list_names(&dir).map_err(fail("list opaque directory"))? {
                let mut path = parent_rel.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&child);
                if !self.created.contains(&path) {
                    rootfd::remove_at(&dir, &child).map_err(fail("clear opaque directory"))?;
                }
            }
        } else {
            rootfd::remove_at(&dir, target).map_err(fail("whiteout"))?;
        }
        Ok(())
    }
}
