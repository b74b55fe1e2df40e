//! `LayerWriter`: streams tar entries through one pass that hashes the uncompressed bytes
//! (the diffID), counts them and compresses them into the caller's sink. Entries are written
//! in the order the caller appends them; nothing of the layer is held in memory.

use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use tar::EntryType;

use super::compression::{Compression, Encoder};
use super::header::{self, BLOCK, EntryHeader};
use super::meta::{DeviceKind, EntryMeta, normalize_name};
use super::{LayerError, Result};
use crate::image::{Digest, Hasher};

/// Buffer between tar generation and hashing/compression, so both see large writes.
const STREAM_BUFFER: usize = 256 * 1024;

/// What a finished layer is: its diffID, uncompressed size, and the sink given back.
#[derive(Debug)]
pub struct LayerSummary<W> {
    /// SHA-256 of the uncompressed tar (the image config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
    /// The sink, holding the compressed blob (its digest is the sink's business).
    pub sink: W,
}

/// Hashes and counts the uncompressed stream, then hands it to the compressor.
pub(super) struct DiffIdTee<W: Write> {
    hasher: Hasher,
    size: u64,
    encoder: Encoder<W>,
}

impl<W: Write> Write for DiffIdTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

/// A streaming, deterministic layer tar writer. See the module docs of [`crate::layer`].
pub struct LayerWriter<W: Write> {
    pub(super) out: BufWriter<DiffIdTee<W>>,
    header_buf: Vec<u8>,
    copy_buf: Vec<u8>,
    /// First layer name seen for each host (dev, ino) with more than one link.
    pub(super) inodes: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> LayerWriter<W> {
    /// Starts a layer that is compressed with `compression` into `sink`.
    pub fn new(sink: W, compression: Compression) -> Result<LayerWriter<W>> {
        let encoder = Encoder::new(sink, compression)?;
        Ok(LayerWriter {
            out: BufWriter::with_capacity(
                STREAM_BUFFER,
                DiffIdTee {
                    hasher: Hasher::new(),
                    size: 0,
                    encoder,
                },
            ),
            header_buf: Vec::with_capacity(4 * BLOCK),
            copy_buf: vec![0; STREAM_BUFFER],
            inodes: HashMap::new(),
        })
    }

    /// Appends a directory; its name is written with the trailing `/` docker uses.
    pub fn append_dir(&mut self, name: impl AsRef<Path>, meta: &EntryMeta) -> Result<()> {
        let mut name = normalize_name(name.as_ref())?;
        name.push(b'/');
        self.write_header(&name, EntryType::Directory, meta, 0, None, None)
    }

    /// Appends a regular file whose `size` bytes of content come from `content`. Fails with
    /// [`LayerError::ShortContent`] when the reader ends early; extra bytes are not read.
    pub fn append_file(
        &mut self,
        name: impl AsRef<Path>,
        meta: &EntryMeta,
        content: impl Read,
        size: u64,
    ) -> Result<()> {
        let name = normalize_name(name.as_ref())?;
        self.write_header(&name, EntryType::Regular, meta, size, None, None)?;
        self.copy_content(&name, content, size)
    }

    /// Appends a symbolic link to `target` (stored verbatim, absolute or relative).
    pub fn append_symlink(
        &mut self,
        name: impl AsRef<Path>,
        target: impl AsRef<Path>,
        meta: &EntryMeta,
    ) -> Result<()> {
        let name = normalize_name(name.as_ref())?;
        let target = os_bytes(target.as_ref());
        self.write_header(&name, EntryType::Symlink, meta, 0, Some(&target), None)
    }

    /// Appends a hard link to `target`, an entry name written earlier in this layer or present
    /// in a lower layer.
    pub fn append_hardlink(
        &mut self,
        name: impl AsRef<Path>,
        target: impl AsRef<Path>,
        meta: &EntryMeta,
    ) -> Result<()> {
        let name = normalize_name(name.as_ref())?;
        let target = normalize_name(target.as_ref())?;
        self.write_header(&name, EntryType::Link, meta, 0, Some(&target), None)
    }

    /// Appends a character or block device node.
    pub fn append_device(
        &mut self,
        name: impl AsRef<Path>,
        kind: DeviceKind,
        major: u32,
        minor: u32,
        meta: &EntryMeta,
    ) -> Result<()> {
        let name = normalize_name(name.as_ref())?;
        let ty = match kind {
            DeviceKind::Char => EntryType::Char,
            DeviceKind::Block => EntryType::Block,
        };
        self.write_header(&name, ty, meta, 0, None, Some((major, minor)))
    }

    /// Appends a named pipe.
    pub fn append_fifo(&mut self, name: impl AsRef<Path>, meta: &EntryMeta) -> Result<()> {
        let name = normalize_name(name.as_ref())?;
        self.write_header(&name, EntryType::Fifo, meta, 0, None, None)
    }

    /// Appends the whiteout `dir/.wh.<base>` that deletes `path` from lower layers.
    pub fn append_whiteout(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let name = normalize_name(path.as_ref())?;
        let split = name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let mut wh = name[..split].to_vec();
        wh.extend_from_slice(b".wh.");
        wh.extend_from_slice(&name[split..]);
        self.write_header(
            &wh,
            EntryType::Regular,
            &EntryMeta::default(),
            0,
            None,
            None,
        )
    }

    /// Appends the opaque marker `dir/.wh..wh..opq`: `dir`'s lower-layer contents are hidden.
    pub fn append_opaque(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        let mut name = normalize_name(dir.as_ref())?;
        name.extend_from_slice(b"/.wh..wh..opq");
        self.write_header(
            &name,
            EntryType::Regular,
            &EntryMeta::default(),
            0,
            None,
            None,
        )
    }

    /// Writes the end-of-archive blocks, finishes compression and returns the diffID,
    /// the uncompressed size and the sink.
    pub fn finish(mut self) -> Result<LayerSummary<W>> {
        self.out
            .write_all(&[0; 2 * BLOCK])
            .map_err(|source| LayerError::Sink { source })?;
        let tee = self.out.into_inner().map_err(|e| LayerError::Sink {
            source: e.into_error(),
        })?;
        let sink = tee.encoder.finish()?;
        Ok(LayerSummary {
            diff_id: tee.hasher.finish(),
            uncompressed_size: tee.size,
            sink,
        })
    }

    pub(super) fn write_header(
        &mut self,
        name: &[u8],
        kind: EntryType,
        meta: &EntryMeta,
        size: u64,
        link: Option<&[u8]>,
        device: Option<(u32, u32)>,
    ) -> Result<()> {
        self.header_buf.clear();
        header::encode(
            &EntryHeader {
                name,
                kind,
                meta,
                size,
                link,
                device,
            },
            &mut self.header_buf,
        );
        self.out
            .write_all(&self.header_buf)
            .map_err(|source| LayerError::Sink { source })
    }

    /// Copies exactly `size` content bytes and the block padding.
    pub(super) fn copy_content(
        &mut self,
        name: &[u8],
        content: impl Read,
        size: u64,
    ) -> Result<()> {
        let mut limited = content.take(size);
        let mut copied = 0u64;
        loop {
            let n = match limited.read(&mut self.copy_buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LayerError::ReadContent {
                        name: String::from_utf8_lossy(name).into_owned(),
                        source,
                    });
                }
            };
            self.out
                .write_all(&self.copy_buf[..n])
                .map_err(|source| LayerError::Sink { source })?;
            copied += n as u64;
        }
        if copied != size {
            return Err(LayerError::ShortContent {
                name: String::from_utf8_lossy(name).into_owned(),
                expected: size,
                actual: copied,
            });
        }
        let pad = header::padding(size);
        self.out
            .write_all(&[0; BLOCK][..pad])
            .map_err(|source| LayerError::Sink { source })
    }
}

/// The raw bytes of a host path (layer names are bytes, not necessarily UTF-8).
pub(super) fn os_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let ty = e.header().entry_type();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, ty, data)
            })
            .collect()
    }

    #[test]
    fn entries_come_out_in_append_order_with_docker_names() {
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        w.append_dir("/etc", &EntryMeta::with_mode(0o755)).unwrap();
        w.append_file(
            "etc/hosts",
            &EntryMeta::with_mode(0o644),
            &b"127.0.0.1"[..],
            9,
        )
        .unwrap();
        w.append_whiteout("etc/old").unwrap();
        w.append_opaque("var/cache").unwrap();
        w.append_symlink("bin", "usr/bin", &EntryMeta::with_mode(0o777))
            .unwrap();
        let s = w.finish().unwrap();
        assert_eq!(s.uncompressed_size, s.sink.len() as u64);
        assert_eq!(s.diff_id, Digest::of(&s.sink));
        let got = entries(&s.sink);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/hosts",
                "etc/.wh.old",
                "var/cache/.wh..wh..opq",
                "bin"
            ]
        );
        assert_eq!(got[1].2, b"127.0.0.1");
    }

    #[test]
    fn short_content_is_an_error() {
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        let err = w
            .append_file("f", &EntryMeta::default(), &b"abc"[..], 10)
            .unwrap_err();
        assert!(
            matches!(err, LayerError::ShortContent { actual: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn diff_id_is_of_the_uncompressed_stream() {
        let mut w = LayerWriter::new(Vec::new(), Compression::Gzip { level: 1 }).unwrap();
        w.append_file("a", &EntryMeta::with_mode(0o600), &[1u8; 1000][..], 1000)
            .unwrap();
        let s = w.finish().unwrap();
        let mut plain = Vec::new();
        super::super::open_decompressed(&s.sink[..])
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(s.diff_id, Digest::of(&plain));
        assert_eq!(s.uncompressed_size, plain.len() as u64);
    }
}
