//! Entry metadata as read back from a layer tar: header fields with PAX overrides (ids,
//! sub-second mtime, `SCHILY.xattr.*`), names cleaned as if rooted, and the conversions
//! `apply` needs for the `*at` syscalls.

use std::io::{self, Read};

use rustix::fs::{Timespec, Timestamps};

use super::header::parse_pax_time;
use super::{LayerError, Result};

/// Metadata of one entry after PAX overrides.
pub(super) struct Attrs {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: i64,
    pub(super) mtime_nsec: u32,
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The components of an entry name, cleaned as if rooted at `/` (so `..` stops at the root,
/// like containerd's `fs.RootPath`): `../x` and `/x` both mean `x`.
pub(crate) fn clean_components(raw: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out
}

pub(super) fn read_attrs<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Attrs> {
    let header = entry.header();
    let bad = |what: &str| LayerError::UnsupportedEntry {
        entry: shown.to_string(),
        reason: format!("unreadable {what} in the tar header"),
    };
    let old = header.as_old();
    let mut attrs = Attrs {
        mode: numeric(header.mode().map(u64::from), &old.mode).ok_or_else(|| bad("mode"))? as u32,
        uid: numeric(header.uid(), &old.uid)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad("uid"))?,
        gid: numeric(header.gid(), &old.gid)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad("gid"))?,
        mtime: numeric(header.mtime(), &old.mtime).ok_or_else(|| bad("mtime"))? as i64,
        mtime_nsec: 0,
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|source| LayerError::Archive { source })?
    {
        for ext in pax {
            let ext = ext.map_err(|source| LayerError::Archive { source })?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).unwrap_or("");
            match key {
                b"uid" => attrs.uid = text.parse().map_err(|_| bad("PAX uid"))?,
                b"gid" => attrs.gid = text.parse().map_err(|_| bad("PAX gid"))?,
                b"mtime" => {
                    (attrs.mtime, attrs.mtime_nsec) =
                        parse_pax_time(text).ok_or_else(|| bad("PAX mtime"))?
                }
                k if k.starts_with(b"SCHILY.xattr.") => {
                    attrs
                        .xattrs
                        .push((k[b"SCHILY.xattr.".len()..].to_vec(), value.to_vec()));
                }
                _ => {}
            }
        }
    }
    if attrs.uid == u32::MAX || attrs.gid == u32::MAX {
        return Err(bad("owner (-1)"));
    }
    Ok(attrs)
}

/// A numeric header field; an all-NUL or all-space field reads as 0, as Go's archive/tar
/// (which wrote most layers in the wild) does.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

pub(super) fn uid(raw: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(raw)
}

pub(super) fn gid(raw: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(raw)
}

pub(super) fn timespec(secs: i64, nsec: u32) -> Timespec {
    Timespec {
        tv_sec: secs,
        tv_nsec: nsec.into(),
    }
}

pub(super) fn timestamps(attrs: &Attrs) -> Timestamps {
    let t = timespec(attrs.mtime, attrs.mtime_nsec);
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_as_if_rooted() {
        let c = |s: &str| {
            clean_components(s.as_bytes())
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        };
        assert_eq!(c("../../etc/passwd"), "etc/passwd");
        assert_eq!(c("/abs/./x/"), "abs/x");
        assert_eq!(c("a/../../b"), "b");
        assert_eq!(c("./"), "");
    }
}
