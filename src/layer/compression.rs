//! Layer compression: the `Compression` choice with its media types, the encoder the writer
//! streams through, and decompression of any layer or ADD archive detected by its magic bytes.

use std::fmt;
use std::io::{self, BufReader, Read, Write};

use super::pargzip::ParallelGzip;
use super::{LayerError, Result};

/// The gzip level docker and BuildKit use by default (Go's `gzip.DefaultCompression`).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// The zstd level BuildKit uses by default.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (the docker default); `level` is 0..=9.
    Gzip {
        /// Compression level, 0 (store) to 9 (best).
        level: u32,
    },
    /// zstd with multithreaded workers; `level` is 1..=22.
    Zstd {
        /// Compression level.
        level: i32,
    },
    /// A plain tar.
    Uncompressed,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Compression {
    /// The name used by `--output compression=<name>`: `gzip`, `zstd`, `uncompressed`.
    pub fn name(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
            Compression::Uncompressed => "uncompressed",
        }
    }

    /// Parses a BuildKit compression name with an optional level (`compression-level`).
    pub fn from_name(name: &str, level: Option<i32>) -> Option<Compression> {
        match name {
            "gzip" => Some(Compression::Gzip {
                level: level.map_or(DEFAULT_GZIP_LEVEL, |l| l.clamp(0, 9) as u32),
            }),
            "zstd" => Some(Compression::Zstd {
                level: level.map_or(DEFAULT_ZSTD_LEVEL, |l| l.clamp(1, 22)),
            }),
            "uncompressed" => Some(Compression::Uncompressed),
            _ => None,
        }
    }

    /// The OCI layer media type (`application/vnd.oci.image.layer.v1.tar+gzip`...).
    pub fn oci_media_type(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::Uncompressed => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The Docker schema 2 layer media type; zstd has none (BuildKit then uses the OCI type).
    pub fn docker_media_type(&self) -> Option<&'static str> {
        match self {
            Compression::Gzip { .. } => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Zstd { .. } => None,
            Compression::Uncompressed => Some("application/vnd.docker.image.rootfs.diff.tar"),
        }
    }

    /// The compression a layer media type (OCI or Docker) declares, if rbuild knows it.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::default())
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::Uncompressed),
            _ => None,
        }
    }
}

/// Zstd worker count. Fixed (not the core count) because it must not vary between machines;
/// libzstd's output is the same for any count >= 1, but 0 (single-threaded) differs.
const ZSTD_WORKERS: u32 = 2;

/// The compressing stage of the writer pipeline.
pub(crate) enum Encoder<W: Write> {
    Plain(W),
    Gzip(ParallelGzip<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(sink: W, compression: Compression) -> Result<Self> {
        Ok(match compression {
            Compression::Uncompressed => Encoder::Plain(sink),
            Compression::Gzip { level } => {
                Encoder::Gzip(ParallelGzip::new(sink, level).map_err(|source| {
                    LayerError::Compressor {
                        compression: "gzip",
                        source,
                    }
                })?)
            }
            Compression::Zstd { level } => {
                let err = |source| LayerError::Compressor {
                    compression: "zstd",
                    source,
                };
                let mut enc = zstd::Encoder::new(sink, level).map_err(err)?;
                enc.multithread(ZSTD_WORKERS).map_err(err)?;
                Encoder::Zstd(enc)
            }
        })
    }

    pub(crate) fn finish(self) -> Result<W> {
        match self {
            Encoder::Plain(mut w) => {
                w.flush().map_err(|source| LayerError::Sink { source })?;
                Ok(w)
            }
            Encoder::Gzip(e) => e.finish().map_err(|source| LayerError::Compressor {
                compression: "gzip",
                source,
            }),
            Encoder::Zstd(e) => e.finish().map_err(|source| LayerError::Compressor {
                compression: "zstd",
                source,
            }),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// The container format of a stream, as told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// Anything else: read as is (a plain tar, or not an archive at all).
    Plain,
}

/// Classifies a stream by its leading bytes (at least 6 are needed to tell xz).
pub fn detect_format(head: &[u8]) -> ArchiveFormat {
    if head.starts_with(&[0x1f, 0x8b]) {
        ArchiveFormat::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ArchiveFormat::Zstd
    } else if head.starts_with(b"BZh") {
        ArchiveFormat::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        ArchiveFormat::Xz
    } else {
        ArchiveFormat::Plain
    }
}

/// Wraps `reader` in the decompressor its magic bytes call for (gzip, zstd, bzip2, xz) or
/// returns it unchanged when it is not compressed. Multi-member gzip is read to the end.
pub fn open_decompressed<'a, R: Read + Send + 'a>(
    mut reader: R,
) -> Result<Box<dyn Read + Send + 'a>> {
    // A whole header block, so a plain tar whose first name happens to start with a magic
    // (`BZh...`) is still recognised by its `ustar` signature.
    let head = read_prefix(&mut reader, 512).map_err(|source| LayerError::Archive { source })?;
    let format = if is_tar_header(&head) {
        ArchiveFormat::Plain
    } else {
        detect_format(&head)
    };
    let buffered = BufReader::with_capacity(256 * 1024, io::Cursor::new(head).chain(reader));
    Ok(match format {
        ArchiveFormat::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        ArchiveFormat::Zstd => {
            Box::new(zstd::Decoder::with_buffer(buffered).map_err(|source| {
                LayerError::Compressor {
                    compression: "zstd",
                    source,
                }
            })?)
        }
        ArchiveFormat::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        ArchiveFormat::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buffered)),
        ArchiveFormat::Plain => Box::new(buffered),
    })
}

/// Whether `head` starts with a USTAR/GNU/PAX tar header (magic `ustar` at offset 257).
fn is_tar_header(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

/// Reads up to `n` bytes, looping over short reads (pipes deliver a few bytes at a time).
fn read_prefix<R: Read>(reader: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.by_ref().take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], c: Compression) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new(), c).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_compression_round_trips_through_open_decompressed() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            Compression::default(),
            Compression::Zstd { level: 3 },
            Compression::Uncompressed,
        ] {
            let blob = compress(&data, c);
            let mut out = Vec::new();
            open_decompressed(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c}");
        }
    }

    #[test]
    fn bzip2_and_xz_archives_are_decompressed() {
        let data = b"ADD archives may be bzip2 or xz".repeat(1000);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&data).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        for blob in [bz.finish().unwrap(), xz.finish().unwrap()] {
            let mut out = Vec::new();
            open_decompressed(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn compressed_output_is_deterministic() {
        let data = vec![7u8; 5_000_000];
        for c in [
            Compression::Gzip { level: 1 },
            Compression::Zstd { level: 3 },
        ] {
            assert_eq!(compress(&data, c), compress(&data, c), "{c}");
        }
    }

    #[test]
    fn zstd_output_does_not_depend_on_worker_count() {
        let data: Vec<u8> = (0..12_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8 ^ (i / 1000) as u8)
            .collect();
        let with = |workers| {
            let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
            e.multithread(workers).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(with(1), with(4));
    }

    #[test]
    fn media_types_map_back_to_compression() {
        for c in [
            Compression::default(),
            Compression::Zstd { level: 3 },
            Compression::Uncompressed,
        ] {
            assert_eq!(Compression::from_media_type(c.oci_media_type()), Some(c));
        }
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::default())
        );
        assert_eq!(Compression::from_name("brotli", None), None);
    }

    #[test]
    fn a_plain_tar_named_like_a_magic_is_not_decompressed() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("BZh9-looks-like-bzip2").unwrap();
        h.set_size(1);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let plain = b.into_inner().unwrap();
        let mut out = Vec::new();
        open_decompressed(&plain[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn magic_bytes_are_detected() {
        assert_eq!(
            detect_format(&[0x1f, 0x8b, 8, 0, 0, 0]),
            ArchiveFormat::Gzip
        );
        assert_eq!(detect_format(b"BZh91AY"), ArchiveFormat::Bzip2);
        assert_eq!(
            detect_format(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            ArchiveFormat::Xz
        );
        assert_eq!(detect_format(b"hello"), ArchiveFormat::Plain);
    }
}
