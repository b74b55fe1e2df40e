//! `apply`: unpacks a (possibly compressed) layer onto a directory the way a container
//! runtime stacks layers — whiteouts delete, opaque markers hide lower contents — while
//! treating the layer as hostile: every path is resolved inside the destination through
//! [`super::rootfd`], so `..`, absolute names and symlinks (absolute or relative, from this
//! layer or lower ones) cannot reach outside it, and hard links can only target files inside.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use tar::EntryType;

use super::owners::OwnerTable;
use super::rootfd::{self, Root};
use super::skeleton::{Content, link_placeholder};
use super::tar_meta::{Attrs, clean_components, gid, read_attrs, timespec, timestamps, uid};
use super::whiteout::{OverlayXattrs, WHITEOUT_PREFIX, WhiteoutMode};
use super::{LayerError, Result, open_decompressed};

/// How `apply` treats ownership and attributes it may not be allowed to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Set owners from the layer. Defaults to true when running as uid 0 (in the current
    /// user namespace); without it files belong to the applying user. A chown that fails
    /// while enabled is an error (for example an id the user namespace does not map).
    pub chown: bool,
    /// Restore extended attributes (best effort: failures are counted, not fatal).
    pub xattrs: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            chown: rustix::process::geteuid().is_root(),
            xattrs: true,
        }
    }
}

/// What `apply` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Device nodes and FIFOs created.
    pub nodes: u64,
    /// Whiteout entries (`.wh.<name>`) seen, whether or not something was there to delete.
    pub whiteouts: u64,
    /// Opaque directory markers (`.wh..wh..opq`) seen.
    pub opaques: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Device nodes skipped because mknod was not permitted (rootless).
    pub skipped_devices: u64,
    /// Extended attributes that could not be set.
    pub xattr_failures: u64,
}

/// Applies the tar layer read from `layer` (plain, gzip, zstd, bzip2 or xz) onto `dest`:
/// whiteouts delete what they name in `dest`, opaque markers empty their directory of
/// everything this layer did not write.
pub fn apply<R: Read + Send>(layer: R, dest: &Path, options: &ApplyOptions) -> Result<ApplyStats> {
    run(
        layer,
        dest,
        options,
        WhiteoutMode::Delete,
        Content::All,
        None,
    )
}

/// Applies `layer` onto `dest` like [`apply`], and records in `owners` the owner every entry
/// has in the image (from its tar header, whatever `options.chown` did on disk), forgetting
/// what whiteouts and opaque directories delete: `owners` then describes `dest` if it
/// described it before.
pub fn apply_recording_owners<R: Read + Send>(
    layer: R,
    dest: &Path,
    options: &ApplyOptions,
    owners: &mut OwnerTable,
) -> Result<ApplyStats> {
    run(
        layer,
        dest,
        options,
        WhiteoutMode::Delete,
        Content::All,
        Some(owners),
    )
}

/// Unpacks `layer` into the empty directory `dest` as an overlayfs lower layer: whiteouts
/// become 0:0 character devices and opaque markers set `<namespace>.overlay.opaque=y` on
/// their directory, so snapshots stack with overlay mounts instead of being merged.
pub fn apply_as_overlay_lower<R: Read + Send>(
    layer: R,
    dest: &Path,
    options: &ApplyOptions,
    xattrs: OverlayXattrs,
) -> Result<ApplyStats> {
    run(
        layer,
        dest,
        options,
        WhiteoutMode::Overlay(xattrs),
        Content::All,
        None,
    )
}

pub(super) fn run<R: Read + Send>(
    layer: R,
    dest: &Path,
    options: &ApplyOptions,
    whiteouts: WhiteoutMode,
    content: Content,
    owners: Option<&mut OwnerTable>,
) -> Result<ApplyStats> {
    let root = Root::open(dest).map_err(|source| LayerError::Destination {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut archive = tar::Archive::new(open_decompressed(layer)?);
    let mut state = State {
        root,
        options,
        whiteouts,
        content,
        skeleton_root: None,
        stats: ApplyStats::default(),
        created: HashSet::new(),
        deferred_dirs: Vec::new(),
        owners,
    };
    let entries = archive
        .entries()
        .map_err(|source| LayerError::Archive { source })?;
    for entry in entries {
        let entry = entry.map_err(|source| LayerError::Archive { source })?;
        state.apply_entry(entry)?;
    }
    state.finish_dirs()?;
    Ok(state.stats)
}

pub(super) struct State<'o> {
    pub(super) root: Root,
    options: &'o ApplyOptions,
    pub(super) whiteouts: WhiteoutMode,
    content: Content,
    /// The root, opened once, holding [`SKELETON_FILE`].
    skeleton_root: Option<OwnedFd>,
    pub(super) stats: ApplyStats,
    /// Paths written by this layer; an opaque marker keeps them and hides the rest.
    pub(super) created: HashSet<Vec<u8>>,
    /// Directory modes and mtimes, set at the end: later entries would change the mtime, and
    /// a read-only mode would stop a non-root applier from filling the directory.
    deferred_dirs: Vec<(Vec<u8>, u32, i64, u32)>,
    /// Where the image's owners of applied paths are recorded, if wanted.
    owners: Option<&'o mut OwnerTable>,
}

impl State<'_> {
    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = clean_components(&raw);
        let attrs = read_attrs(&mut entry, &shown)?;
        let fail = |op: &'static str| {
            let entry = shown.clone();
            move |source: io::Error| LayerError::Apply { entry, op, source }
        };

        let Some((base, parents)) = comps.split_last() else {
            // The root itself (`./`): only a directory entry means something here.
            if kind == EntryType::Directory {
                let fd = self.root.open_dir(b"").map_err(fail("open root"))?;
                self.set_owner_and_xattrs(&fd, &attrs, &shown)?;
                self.deferred_dirs
                    .push((Vec::new(), attrs.mode, attrs.mtime, attrs.mtime_nsec));
                if let Some(owners) = self.owners.as_deref_mut() {
                    owners.set(b"", (attrs.uid, attrs.gid));
                }
            }
            return Ok(());
        };

        if base.starts_with(WHITEOUT_PREFIX) {
            self.apply_whiteout(parents, base, &shown)?;
            self.forget_whited_out(parents, base);
            return Ok(());
        }

        let parent = self
            .root
            .create_dirs(parents)
            .map_err(fail("create parent directories"))?;
        let existing = rootfd::file_type_at(&parent, base).map_err(fail("stat"))?;
        let keep_dir = kind == EntryType::Directory && existing == Some(FileType::Directory);
        let rel = comps.join(&b'/');
        if existing.is_some() && !keep_dir {
            rootfd::remove_at(&parent, base).map_err(fail("remove existing"))?;
            if let Some(owners) = self.owners.as_deref_mut() {
                owners.remove_tree(&rel);
            }
        }
        let name = OsStr::from_bytes(base);
        // A hard link shares its target's inode, so its owner is the target's.
        let mut owner = (attrs.uid, attrs.gid);

        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
                if !self.content.wants(base) =>
            {
                let root = match &self.skeleton_root {
                    Some(fd) => fd,
                    None => self
                        .skeleton_root
                        .insert(self.root.open_dir(b"").map_err(fail("open root"))?),
                };
                link_placeholder(root, &parent, name)
                    .map_err(fail("link the skeleton's empty file"))?;
                self.stats.files += 1;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from(0o600),
                )
                .map_err(|e| fail("create")(e.into()))?;
                let mut file = File::from(fd);
                let n = io::copy(&mut entry, &mut file).map_err(fail("write content"))?;
                self.stats.files += 1;
                self.stats.bytes += n;
                let fd = OwnedFd::from(file);
                self.set_owner_and_xattrs(&fd, &attrs, &shown)?;
                // After chown, which clears setuid/setgid.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(attrs.mode & 0o7777))
                    .map_err(|e| fail("chmod")(e.into()))?;
                rustix::fs::futimens(&fd, &timestamps(&attrs))
                    .map_err(|e| fail("set times")(e.into()))?;
            }
            EntryType::Directory => {
                if !keep_dir {
                    rustix::fs::mkdirat(&parent, name, Mode::from(0o700))
                        .map_err(|e| fail("mkdir")(e.into()))?;
                }
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fail("open directory")(e.into()))?;
                self.set_owner_and_xattrs(&fd, &attrs, &shown)?;
                self.deferred_dirs
                    .push((rel.clone(), attrs.mode, attrs.mtime, attrs.mtime_nsec));
                self.stats.dirs += 1;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name)
                    .map_err(|e| fail("symlink")(e.into()))?;
                if self.options.chown {
                    rustix::fs::chownat(
                        &parent,
                        name,
                        Some(uid(attrs.uid)),
                        Some(gid(attrs.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| fail("chown")(e.into()))?;
                }
                rustix::fs::utimensat(
                    &parent,
                    name,
                    &timestamps(&attrs),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| fail("set times")(e.into()))?;
                self.stats.symlinks += 1;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let tcomps = clean_components(&target);
                let Some((tbase, tparents)) = tcomps.split_last() else {
                    return Err(LayerError::UnsupportedEntry {
                        entry: shown,
                        reason: "hard link to the layer root".to_string(),
                    });
                };
                let tdir = self
                    .root
                    .open_dir(&tparents.join(&b'/'))
                    .map_err(fail("resolve hard link target"))?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself, and the
                // target name is a single component inside a directory resolved in the root.
                rustix::fs::linkat(
                    &tdir,
                    OsStr::from_bytes(tbase),
                    &parent,
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| fail("hard link")(e.into()))?;
                self.stats.hardlinks += 1;
                let target_owner =
                    (self.owners.as_deref()).and_then(|t| t.get_raw(&tcomps.join(&b'/')));
                if let Some(o) = target_owner {
                    owner = o;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !self.make_node(&parent, name, kind, &entry, &attrs, &shown)? {
                    return Ok(());
                }
            }
            other => {
                return Err(LayerError::UnsupportedEntry {
                    entry: shown,
                    reason: format!("tar entry type {:?}", other.as_byte() as char),
                });
            }
        }
        if let Some(owners) = self.owners.as_deref_mut() {
            owners.set(&rel, owner);
        }
        self.created.insert(rel);
        Ok(())
    }

    /// Forgets in the owner table what whiteout entry `parents/base` deleted (nothing for
    /// overlay lower layers, whose whiteouts delete nothing yet, and for aufs metadata).
    fn forget_whited_out(&mut self, parents: &[&[u8]], base: &[u8]) {
        if self.whiteouts != WhiteoutMode::Delete {
            return;
        }
        let Some(owners) = self.owners.as_deref_mut() else {
            return;
        };
        let dir = parents.join(&b'/');
        let target = &base[WHITEOUT_PREFIX.len()..];
        if base == b".wh..wh..opq" {
            let created = &self.created;
            owners.remove_below(&dir, |p| created.contains(p));
        } else if !(target.is_empty()
            || target == b"."
            || target == b".."
            || target.starts_with(WHITEOUT_PREFIX))
        {
            let mut path = dir;
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(target);
            owners.remove_tree(&path);
        }
    }

    /// Creates a device node or FIFO; returns false when a device was skipped for lack of
    /// permission (rootless), as rootless docker does.
    fn make_node<R: Read>(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        kind: EntryType,
        entry: &tar::Entry<'_, R>,
        attrs: &Attrs,
        shown: &str,
    ) -> Result<bool> {
        let fail = |op: &'static str| {
            move |e: rustix::io::Errno| LayerError::Apply {
                entry: shown.to_string(),
                op,
                source: e.into(),
            }
        };
        let header = entry.header();
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let ft = match kind {
            EntryType::Char => FileType::CharacterDevice,
            EntryType::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        let dev = rustix::fs::makedev(major, minor);
        match rustix::fs::mknodat(parent, name, ft, Mode::from(0o600), dev) {
            Ok(()) => {}
            Err(rustix::io::Errno::PERM) if kind != EntryType::Fifo => {
                tracing::warn!(
                    entry = %shown,
                    "skipping device node: mknod is not permitted"
                );
                self.stats.skipped_devices += 1;
                return Ok(false);
            }
            Err(e) => return Err(fail("mknod")(e)),
        }
        if self.options.chown {
            rustix::fs::chownat(
                parent,
                name,
                Some(uid(attrs.uid)),
                Some(gid(attrs.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(fail("chown"))?;
        }
        // The name was just created as a node, not a symlink, so following is harmless.
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(attrs.mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(fail("chmod"))?;
        rustix::fs::utimensat(parent, name, &timestamps(attrs), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(fail("set times"))?;
        self.stats.nodes += 1;
        Ok(true)
    }

    fn set_owner_and_xattrs(&mut self, fd: &OwnedFd, attrs: &Attrs, shown: &str) -> Result<()> {
        if self.options.chown {
            rustix::fs::fchown(fd, Some(uid(attrs.uid)), Some(gid(attrs.gid))).map_err(|e| {
                LayerError::Apply {
                    entry: shown.to_string(),
                    op: "chown",
                    source: e.into(),
                }
            })?;
        }
        if self.options.xattrs {
            for (name, value) in &attrs.xattrs {
                if let Err(e) = rustix::fs::fsetxattr(
                    fd.as_fd(),
                    OsStr::from_bytes(name),
                    value,
                    XattrFlags::empty(),
                ) {
                    tracing::warn!(entry = %shown, xattr = %String::from_utf8_lossy(name), error = %e, "could not set xattr");
                    self.stats.xattr_failures += 1;
                }
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        // In entry order, so the last entry for a directory wins.
        for (rel, mode, mtime, nsec) in std::mem::take(&mut self.deferred_dirs) {
            let shown = String::from_utf8_lossy(&rel).into_owned();
            let fd = match self.root.open_dir_nofollow(&rel) {
                Ok(fd) => fd,
                // Removed, or replaced by a file or a symlink later in the layer: the mode
                // belongs to the directory entry, never to what a symlink points at.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                    ) =>
                {
                    continue;
                }
                Err(source) => {
                    return Err(LayerError::Apply {
                        entry: shown,
                        op: "reopen directory",
                        source,
                    });
                }
            };
            let times = Timestamps {
                last_access: timespec(mtime, nsec),
                last_modification: timespec(mtime, nsec),
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))
                .and_then(|()| rustix::fs::futimens(&fd, &times))
                .map_err(|e| LayerError::Apply {
                    entry: shown,
                    op: "set directory mode and times",
                    source: e.into(),
                })?;
        }
        Ok(())
    }
}
