//! What a layer entry carries besides its name and content, how callers override it, and the
//! normalisation of entry names into the relative form docker writes.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::{LayerError, Result};

/// Metadata of one layer entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits including setuid (0o4000), setgid (0o2000) and sticky (0o1000).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Sub-second part of the modification time; non-zero values are written as PAX `mtime`.
    pub mtime_nsec: u32,
    /// Extended attributes (`user.*`, `security.capability`...), written as PAX
    /// `SCHILY.xattr.<name>`. Sorted so the output is deterministic.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryMeta {
    /// Metadata with the given mode, owned by root, at time 0, no xattrs.
    pub fn with_mode(mode: u32) -> EntryMeta {
        EntryMeta {
            mode,
            ..EntryMeta::default()
        }
    }

    /// Clamps the modification time to `epoch` (BuildKit's SOURCE_DATE_EPOCH rewrite): later
    /// times become exactly `epoch`, earlier ones are kept.
    pub fn clamp_mtime(&mut self, epoch: i64) {
        if self.mtime > epoch || (self.mtime == epoch && self.mtime_nsec > 0) {
            self.mtime = epoch;
            self.mtime_nsec = 0;
        }
    }
}

/// The kind of a device node entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device (tar type `3`).
    Char,
    /// A block device (tar type `4`).
    Block,
}

/// How `append_from_fs`/`write_dir_tree` turn host metadata into entry metadata
/// (COPY `--chown`, `--chmod`, SOURCE_DATE_EPOCH).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryOptions {
    /// Owner for every entry instead of the host file's uid.
    pub uid: Option<u32>,
    /// Group for every entry instead of the host file's gid.
    pub gid: Option<u32>,
    /// Permission bits for every file and directory instead of the host mode (not symlinks).
    pub mode: Option<u32>,
    /// Clamp modification times to this epoch (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<i64>,
    /// Record extended attributes. Overlayfs-internal (`trusted.overlay.*`,
    /// `user.overlay.*`) and `security.selinux` labels of the host are never recorded.
    pub xattrs: bool,
    /// Translates host uids (for example subuids owning a rootless RUN's upper dir) back to
    /// container uids. Empty means ids are written as they are on disk. Applied before the
    /// `uid` override, which wins.
    pub uid_map: Vec<IdMapping>,
    /// Like `uid_map`, for gids.
    pub gid_map: Vec<IdMapping>,
}

/// One range of a user namespace id map (a line of `/proc/<pid>/uid_map`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapping {
    /// First id inside the container.
    pub container_id: u32,
    /// First id on the host.
    pub host_id: u32,
    /// Number of ids in the range.
    pub size: u32,
}

/// The id the kernel shows for unmapped ids (`/proc/sys/kernel/overflowuid`).
const OVERFLOW_ID: u32 = 65534;

/// Maps a host id to its container id; unmapped ids become the overflow id 65534, as the
/// kernel shows them inside the namespace. An empty map is the identity.
pub(crate) fn host_to_container(map: &[IdMapping], host: u32) -> u32 {
    if map.is_empty() {
        return host;
    }
    map.iter()
        .find(|m| host >= m.host_id && u64::from(host) < u64::from(m.host_id) + u64::from(m.size))
        .map_or(OVERFLOW_ID, |m| m.container_id + (host - m.host_id))
}

impl Default for EntryOptions {
    fn default() -> Self {
        EntryOptions {
            uid: None,
            gid: None,
            mode: None,
            source_date_epoch: None,
            xattrs: true,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
        }
    }
}

/// Whether a host xattr belongs in a layer.
pub(crate) fn xattr_is_portable(name: &OsStr) -> bool {
    let n = name.as_bytes();
    !(n.starts_with(b"trusted.overlay.")
        || n.starts_with(b"user.overlay.")
        || n == b"security.selinux")
}

/// Turns a caller's entry name into the relative, `/`-separated form stored in layers:
/// leading `/` and `./` dropped, `.` components removed. `..` and empty names are refused
/// because a layer we write must never point outside its root.
pub(crate) fn normalize_name(name: &Path) -> Result<Vec<u8>> {
    let invalid = |reason| LayerError::InvalidName {
        name: name.display().to_string(),
        reason,
    };
    let mut out: Vec<u8> = Vec::with_capacity(name.as_os_str().len());
    for comp in name.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("`..` components are not allowed")),
            Component::Prefix(_) => return Err(invalid("path prefixes are not allowed")),
            Component::Normal(part) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part.as_bytes());
            }
        }
    }
    if out.is_empty() {
        return Err(invalid("the name is empty (the layer root has no entry)"));
    }
    if out.contains(&0) {
        return Err(invalid("NUL bytes are not allowed"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_relative_and_dotdot_is_refused() {
        assert_eq!(
            normalize_name(Path::new("/usr//bin/./sh")).unwrap(),
            b"usr/bin/sh"
        );
        assert_eq!(normalize_name(Path::new("./a/")).unwrap(), b"a");
        assert!(normalize_name(Path::new("a/../../b")).is_err());
        assert!(normalize_name(Path::new("/")).is_err());
        assert!(normalize_name(Path::new("")).is_err());
    }

    #[test]
    fn clamp_only_lowers_times() {
        let mut m = EntryMeta {
            mtime: 100,
            mtime_nsec: 5,
            ..EntryMeta::default()
        };
        m.clamp_mtime(200);
        assert_eq!((m.mtime, m.mtime_nsec), (100, 5));
        m.clamp_mtime(100);
        assert_eq!((m.mtime, m.mtime_nsec), (100, 0));
        m.mtime = 300;
        m.clamp_mtime(100);
        assert_eq!(m.mtime, 100);
    }

    #[test]
    fn host_ids_map_back_to_container_ids() {
        let map = [
            IdMapping {
                container_id: 0,
                host_id: 1000,
                size: 1,
            },
            IdMapping {
                container_id: 1,
                host_id: 100_000,
                size: 65_536,
            },
        ];
        assert_eq!(host_to_container(&map, 1000), 0);
        assert_eq!(host_to_container(&map, 100_000), 1);
        assert_eq!(host_to_container(&map, 100_999), 1000);
        assert_eq!(host_to_container(&map, 5), 65534);
        assert_eq!(host_to_container(&[], 5), 5);
    }

    #[test]
    fn overlay_and_selinux_xattrs_are_not_portable() {
        assert!(!xattr_is_portable(OsStr::new("trusted.overlay.opaque")));
        assert!(!xattr_is_portable(OsStr::new("security.selinux")));
        assert!(xattr_is_portable(OsStr::new("security.capability")));
        assert!(xattr_is_portable(OsStr::new("user.comment")));
    }
}
