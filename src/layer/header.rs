//! Hand-built tar headers: USTAR blocks with empty user/group names and no atime/ctime,
//! preceded by a PAX extended header whenever a value does not fit USTAR (names or link
//! targets over 100 bytes, ids over 2097151, sizes over 8 GiB, sub-second mtimes, xattrs).
//! `tar::HeaderMode::Deterministic` is not used because it rewrites modes and owners.

use tar::{EntryType, Header};

use super::meta::EntryMeta;

/// Tar block size.
pub(crate) const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (uid, gid).
const MAX_OCTAL_ID: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (size, mtime).
const MAX_OCTAL_SIZE: u64 = 0o77_777_777_777;
/// USTAR name and link name field width.
const NAME_LEN: usize = 100;

/// Everything needed to encode one entry's header(s).
pub(crate) struct EntryHeader<'a> {
    /// Normalised name; directories already carry their trailing `/`.
    pub name: &'a [u8],
    pub kind: EntryType,
    pub meta: &'a EntryMeta,
    /// Content size (0 for everything but regular files).
    pub size: u64,
    /// Symlink target or hard link target name.
    pub link: Option<&'a [u8]>,
    /// Device major/minor for device nodes.
    pub device: Option<(u32, u32)>,
}

/// Encodes the header blocks of `entry` (a PAX header and its records when needed, then the
/// USTAR header) into `out`.
pub(crate) fn encode(entry: &EntryHeader<'_>, out: &mut Vec<u8>) {
    let meta = entry.meta;
    let mut pax: Vec<u8> = Vec::new();
    if entry.name.len() > NAME_LEN {
        pax_record(&mut pax, b"path", entry.name);
    }
    if let Some(link) = entry.link.filter(|l| l.len() > NAME_LEN) {
        pax_record(&mut pax, b"linkpath", link);
    }
    if u64::from(meta.uid) > MAX_OCTAL_ID {
        pax_record(&mut pax, b"uid", meta.uid.to_string().as_bytes());
    }
    if u64::from(meta.gid) > MAX_OCTAL_ID {
        pax_record(&mut pax, b"gid", meta.gid.to_string().as_bytes());
    }
    if entry.size > MAX_OCTAL_SIZE {
        pax_record(&mut pax, b"size", entry.size.to_string().as_bytes());
    }
    if meta.mtime_nsec != 0 || meta.mtime < 0 || meta.mtime as u64 > MAX_OCTAL_SIZE {
        pax_record(
            &mut pax,
            b"mtime",
            pax_time(meta.mtime, meta.mtime_nsec).as_bytes(),
        );
    }
    for (key, value) in &meta.xattrs {
        let mut k = b"SCHILY.xattr.".to_vec();
        k.extend_from_slice(key.as_bytes());
        pax_record(&mut pax, &k, value);
    }

    if !pax.is_empty() {
        let pax_meta = EntryMeta::default();
        let pax_name = pax_header_name(entry.name);
        let header = ustar(&EntryHeader {
            name: &pax_name,
            kind: EntryType::XHeader,
            meta: &pax_meta,
            size: pax.len() as u64,
            link: None,
            device: None,
        });
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&pax);
        out.resize(out.len() + padding(pax.len() as u64), 0);
    }
    out.extend_from_slice(ustar(entry).as_bytes());
}

/// Zero bytes needed after `size` bytes of content to reach the next block.
pub(crate) fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

/// The USTAR block; fields that overflow were already put in PAX and are written as 0 or
/// truncated here, as Go's archive/tar does.
fn ustar(entry: &EntryHeader<'_>) -> Header {
    let meta = entry.meta;
    let mut h = Header::new_ustar();
    copy_truncated(&mut h.as_old_mut().name, entry.name);
    if let Some(link) = entry.link {
        copy_truncated(&mut h.as_old_mut().linkname, link);
    }
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(octal_id(meta.uid));
    h.set_gid(octal_id(meta.gid));
    h.set_size(if entry.size > MAX_OCTAL_SIZE {
        0
    } else {
        entry.size
    });
    h.set_mtime(if meta.mtime < 0 {
        0
    } else {
        (meta.mtime as u64).min(MAX_OCTAL_SIZE)
    });
    h.set_entry_type(entry.kind);
    if let Some((major, minor)) = entry.device {
        // Both fit the 8-byte octal fields for every device Linux can create (12/20 bits).
        let _ = h.set_device_major(major);
        let _ = h.set_device_minor(minor);
    }
    h.set_cksum();
    h
}

/// An id for the 8-byte octal field; larger ids are in the PAX header and read as 0 here.
fn octal_id(id: u32) -> u64 {
    let id = u64::from(id);
    if id > MAX_OCTAL_ID { 0 } else { id }
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Go's naming for PAX headers: `<dir>/PaxHeaders.0/<base>`, truncated to fit USTAR.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"PaxHeaders.0/");
    out.extend_from_slice(base);
    out.truncate(NAME_LEN);
    out
}

/// Appends one `"<len> <key>=<value>\n"` record; `len` counts its own digits.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// PAX time: seconds, then the fraction with trailing zeros removed (Go's `formatPAXTime`).
pub(crate) fn pax_time(secs: i64, nsec: u32) -> String {
    if nsec == 0 {
        return secs.to_string();
    }
    let frac = format!("{nsec:09}");
    let frac = frac.trim_end_matches('0');
    if secs < 0 {
        // -1.25 means one and a quarter seconds before the epoch: secs + 1, inverted fraction.
        let total = i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        let abs = -total;
        let f = format!("{:09}", abs % 1_000_000_000);
        return format!("-{}.{}", abs / 1_000_000_000, f.trim_end_matches('0'));
    }
    format!("{secs}.{frac}")
}

/// Parses a PAX time back into seconds and nanoseconds.
pub(crate) fn parse_pax_time(value: &str) -> Option<(i64, u32)> {
    let (neg, v) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if !neg {
        return Some((secs, nsec));
    }
    let total = -(i128::from(secs) * 1_000_000_000 + i128::from(nsec));
    Some((
        total.div_euclid(1_000_000_000) as i64,
        total.rem_euclid(1_000_000_000) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", b"a");
        assert_eq!(out, b"9 path=a\n");
        let mut out = Vec::new();
        let value = vec![b'x'; 93];
        pax_record(&mut out, b"path", &value);
        // 4 + 93 + 3 = 100 body bytes; with "103" the record is 103 bytes long.
        assert_eq!(out.len(), 103);
        assert!(out.starts_with(b"103 path="));
    }

    #[test]
    fn pax_times_round_trip() {
        for (s, n) in [
            (0, 0),
            (1_700_000_000, 500_000_000),
            (5, 1),
            (-2, 250_000_000),
        ] {
            let text = pax_time(s, n);
            assert_eq!(parse_pax_time(&text), Some((s, n)), "{text}");
        }
        assert_eq!(pax_time(1, 500_000_000), "1.5");
        assert_eq!(pax_time(-2, 750_000_000), "-1.25");
    }

    #[test]
    fn short_plain_entries_get_no_pax_header() {
        let meta = EntryMeta::with_mode(0o4755);
        let mut out = Vec::new();
        encode(
            &EntryHeader {
                name: b"usr/bin/su",
                kind: EntryType::Regular,
                meta: &meta,
                size: 3,
                link: None,
                device: None,
            },
            &mut out,
        );
        assert_eq!(out.len(), BLOCK);
        let h = Header::from_byte_slice(&out);
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.username().unwrap(), Some(""));
    }

    #[test]
    fn long_names_and_big_ids_go_to_pax() {
        let name = vec![b'n'; 150];
        let meta = EntryMeta {
            uid: 100_000_000,
            mtime_nsec: 1,
            ..EntryMeta::with_mode(0o644)
        };
        let mut out = Vec::new();
        encode(
            &EntryHeader {
                name: &name,
                kind: EntryType::Regular,
                meta: &meta,
                size: 0,
                link: None,
                device: None,
            },
            &mut out,
        );
        assert_eq!(out.len(), 3 * BLOCK);
        let text = String::from_utf8_lossy(&out[BLOCK..2 * BLOCK]);
        assert!(text.contains("uid=100000000\n"), "{text}");
        assert!(text.contains("mtime=0.000000001\n"), "{text}");
        assert!(text.contains(&format!("path={}\n", "n".repeat(150))));
    }
}
