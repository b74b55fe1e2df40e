//! `LayerWriter`: streams tar entries through one pass that hashes the uncompressed bytes
//! (the diffID), counts them and compresses them into the caller's sink. Entries are written
//! in the order the caller appends them; nothing of the layer is held beyond a few 1 MiB
//! chunks. Hashing runs on its own thread once a layer outgrows one chunk, so SHA-256
//! (about 1.7 GB/s) overlaps reading and compressing instead of adding to them.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use tar::EntryType;

use super::compression::{Compression, Encoder};
use super::header::{self, BLOCK, EntryHeader};
use super::meta::{DeviceKind, EntryMeta, normalize_name};
use super::{LayerError, Result};
use crate::image::{Digest, Hasher};

/// Buffer for copying file content into the stream.
const STREAM_BUFFER: usize = 256 * 1024;
/// Bytes the compressor and the hash thread get at a time.
const CHUNK: usize = 1024 * 1024;
/// Chunks in circulation between the writer and the hash thread (bounds memory and lag).
const CHUNKS_IN_FLIGHT: usize = 4;

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

/// Collects the uncompressed stream into chunks, hands each to the compressor and then to
/// the hash stage, and counts the bytes.
pub(super) struct DiffIdTee<W: Write> {
    chunk: Vec<u8>,
    size: u64,
    stages: Stages<W>,
}

enum Stages<W: Write> {
    /// The writer's thread compresses; hashing moves to a thread once the layer is big.
    Inline {
        encoder: Encoder<W>,
        hash: HashStage,
    },
    /// Compression and hashing each on a thread of their own, so reading files, compressing
    /// and hashing overlap (see [`LayerWriter::new_pipelined`]).
    Threads(Pipeline<W>),
}

/// writer → compressor thread → hash thread → back to the writer as an empty buffer.
struct Pipeline<W: Write> {
    to_compress: Option<SyncSender<Vec<u8>>>,
    empty: Receiver<Vec<u8>>,
    allocated: usize,
    compressor: Option<JoinHandle<io::Result<Encoder<W>>>>,
    hasher: JoinHandle<Hasher>,
}

impl<W: Write + Send + 'static> Pipeline<W> {
    fn start(mut encoder: Encoder<W>) -> io::Result<Self> {
        let (to_compress, compress_rx) = sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let (to_hash, hash_rx) = sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let (empty_tx, empty) = channel::<Vec<u8>>();
        let hasher = std::thread::Builder::new()
            .name("rbuild-diffid".into())
            .spawn(move || hash_chunks(Hasher::new(), hash_rx, empty_tx))?;
        let compressor = std::thread::Builder::new()
            .name("rbuild-compress".into())
            .spawn(move || {
                for chunk in compress_rx {
                    encoder.write_all(&chunk)?;
                    if to_hash.send(chunk).is_err() {
                        break;
                    }
                }
                Ok(encoder)
            })?;
        Ok(Pipeline {
            to_compress: Some(to_compress),
            empty,
            allocated: 1,
            compressor: Some(compressor),
            hasher,
        })
    }
}

impl<W: Write> Pipeline<W> {
    /// Queues `chunk` and returns a buffer for the next one.
    fn take(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        let sent = match &self.to_compress {
            Some(tx) => tx.send(chunk).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.failure());
        }
        if let Ok(buf) = self.empty.try_recv() {
            return Ok(buf);
        }
        if self.allocated < CHUNKS_IN_FLIGHT + 2 {
            self.allocated += 1;
            return Ok(Vec::with_capacity(CHUNK));
        }
        self.empty.recv().map_err(|_| self.failure())
    }

    /// The compressor's error, once it stopped taking chunks.
    fn failure(&mut self) -> io::Error {
        self.to_compress = None;
        match self.compressor.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the layer compressor thread panicked"),
            _ => io::Error::other("the layer compressor thread ended early"),
        }
    }

    fn finish(mut self, last: Vec<u8>) -> io::Result<(Digest, Encoder<W>)> {
        if self
            .to_compress
            .take()
            .is_none_or(|tx| tx.send(last).is_err())
        {
            return Err(self.failure());
        }
        let encoder = match self.compressor.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            _ => return Err(io::Error::other("the layer compressor thread panicked")),
        };
        let hasher = self
            .hasher
            .join()
            .map_err(|_| io::Error::other("the layer hash thread panicked"))?;
        Ok((hasher.finish(), encoder))
    }
}

/// The hash thread's loop: hashes chunks in order and returns their buffers.
fn hash_chunks(mut hasher: Hasher, chunks: Receiver<Vec<u8>>, empty: Sender<Vec<u8>>) -> Hasher {
    for mut buf in chunks {
        hasher.update(&buf);
        buf.clear();
        // The writer may be gone (finished or failed); the buffer then just drops.
        let _ = empty.send(buf);
    }
    hasher
}

/// SHA-256 of the uncompressed stream: inline until the first full chunk, then on a thread
/// that receives the chunks in order and sends the buffers back for reuse.
enum HashStage {
    Inline(Hasher),
    Thread {
        full: SyncSender<Vec<u8>>,
        empty: Receiver<Vec<u8>>,
        allocated: usize,
        handle: JoinHandle<Hasher>,
    },
}

impl HashStage {
    /// Moves hashing to a thread, starting from the state of the inline hasher.
    fn spawn(hasher: Hasher) -> io::Result<HashStage> {
        let (full, full_rx) = sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let (empty_tx, empty) = channel::<Vec<u8>>();
        let handle = std::thread::Builder::new()
            .name("rbuild-diffid".into())
            .spawn(move || hash_chunks(hasher, full_rx, empty_tx))?;
        Ok(HashStage::Thread {
            full,
            empty,
            allocated: 1,
            handle,
        })
    }

    /// Hashes `chunk` (on the thread, started on first use) and returns a buffer for the next.
    fn take(&mut self, chunk: Vec<u8>) -> io::Result<Vec<u8>> {
        if let HashStage::Inline(hasher) = self {
            *self = HashStage::spawn(std::mem::take(hasher))?;
        }
        let HashStage::Thread {
            full,
            empty,
            allocated,
            ..
        } = self
        else {
            unreachable!()
        };
        full.send(chunk)
            .map_err(|_| io::Error::other("the layer hash thread ended early"))?;
        if let Ok(buf) = empty.try_recv() {
            return Ok(buf);
        }
        if *allocated < CHUNKS_IN_FLIGHT {
            *allocated += 1;
            return Ok(Vec::with_capacity(CHUNK));
        }
        empty
            .recv()
            .map_err(|_| io::Error::other("the layer hash thread ended early"))
    }

    fn finish(self, last: &[u8]) -> io::Result<Digest> {
        match self {
            HashStage::Inline(mut h) => {
                h.update(last);
                Ok(h.finish())
            }
            HashStage::Thread { full, handle, .. } => {
                let sent = full.send(last.to_vec());
                drop(full);
                let hasher = handle
                    .join()
                    .map_err(|_| io::Error::other("the layer hash thread panicked"))?;
                sent.map_err(|_| io::Error::other("the layer hash thread ended early"))?;
                Ok(hasher.finish())
            }
        }
    }
}

impl<W: Write> DiffIdTee<W> {
    fn new_threaded(pipeline: Pipeline<W>) -> Self {
        DiffIdTee {
            chunk: Vec::with_capacity(CHUNK),
            size: 0,
            stages: Stages::Threads(pipeline),
        }
    }

    fn new(encoder: Encoder<W>) -> Self {
        DiffIdTee {
            chunk: Vec::with_capacity(CHUNK),
            size: 0,
            stages: Stages::Inline {
                encoder,
                hash: HashStage::Inline(Hasher::new()),
            },
        }
    }

    /// Hands the full chunk on (compressed then hashed) and starts the next.
    fn pass_on(&mut self) -> io::Result<()> {
        self.size += self.chunk.len() as u64;
        let full = std::mem::take(&mut self.chunk);
        self.chunk = match &mut self.stages {
            Stages::Inline { encoder, hash } => {
                encoder.write_all(&full)?;
                hash.take(full)?
            }
            Stages::Threads(pipeline) => pipeline.take(full)?,
        };
        Ok(())
    }

    /// Compresses and hashes what is left; returns the diffID, the size and the encoder.
    fn finish(mut self) -> io::Result<(Digest, u64, Encoder<W>)> {
        self.size += self.chunk.len() as u64;
        let (digest, encoder) = match self.stages {
            Stages::Inline { mut encoder, hash } => {
                encoder.write_all(&self.chunk)?;
                (hash.finish(&self.chunk)?, encoder)
            }
            Stages::Threads(pipeline) => pipeline.finish(self.chunk)?,
        };
        Ok((digest, self.size, encoder))
    }
}

impl<W: Write> Write for DiffIdTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.pass_on()?;
        }
        Ok(n)
    }

    /// Only flushes what the writer's thread already compressed; the chunk boundaries stay
    /// fixed (so the output does not depend on flushes).
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stages {
            Stages::Inline { encoder, .. } => encoder.flush(),
            Stages::Threads(_) => Ok(()),
        }
    }
}

/// A streaming, deterministic layer tar writer. See the module docs of [`crate::layer`].
pub struct LayerWriter<W: Write> {
    pub(super) out: DiffIdTee<W>,
    header_buf: Vec<u8>,
    copy_buf: Vec<u8>,
    /// First layer name seen for each host (dev, ino) with more than one link.
    pub(super) inodes: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write + Send + 'static> LayerWriter<W> {
    /// Like [`new`](Self::new), but compression and hashing run on threads of their own, so
    /// they overlap the caller's reading of files: for big layers (a RUN step's diff). The
    /// bytes written are the same.
    pub fn new_pipelined(sink: W, compression: Compression) -> Result<LayerWriter<W>> {
        let encoder = Encoder::new(sink, compression)?;
        let pipeline = Pipeline::start(encoder).map_err(|source| LayerError::Sink { source })?;
        Ok(LayerWriter::with_tee(DiffIdTee::new_threaded(pipeline)))
    }
}

impl<W: Write> LayerWriter<W> {
    fn with_tee(out: DiffIdTee<W>) -> LayerWriter<W> {
        LayerWriter {
            out,
            header_buf: Vec::with_capacity(4 * BLOCK),
            copy_buf: vec![0; STREAM_BUFFER],
            inodes: HashMap::new(),
        }
    }

    /// Starts a layer that is compressed with `compression` into `sink`.
    pub fn new(sink: W, compression: Compression) -> Result<LayerWriter<W>> {
        let encoder = Encoder::new(sink, compression)?;
        Ok(LayerWriter::with_tee(DiffIdTee::new(encoder)))
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
        let (diff_id, uncompressed_size, encoder) = self
            .out
            .finish()
            .map_err(|source| LayerError::Sink { source })?;
        let sink = encoder.finish()?;
        Ok(LayerSummary {
            diff_id,
            uncompressed_size,
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

    #[test]
    fn diff_id_of_a_layer_hashed_on_the_thread_matches_the_plain_bytes() {
        // Well past CHUNK * CHUNKS_IN_FLIGHT, with writes that straddle chunk boundaries.
        let mut w = LayerWriter::new(Vec::new(), Compression::Uncompressed).unwrap();
        for i in 0..7u32 {
            let body: Vec<u8> = (0..CHUNK as u32 + 4097 * i)
                .map(|b| (b % 251) as u8)
                .collect();
            w.append_file(
                format!("f{i}"),
                &EntryMeta::with_mode(0o644),
                &body[..],
                body.len() as u64,
            )
            .unwrap();
        }
        let s = w.finish().unwrap();
        assert!(s.sink.len() > CHUNK * (CHUNKS_IN_FLIGHT + 2));
        assert_eq!(s.uncompressed_size, s.sink.len() as u64);
        assert_eq!(s.diff_id, Digest::of(&s.sink));
    }

    #[test]
    fn pipelined_writer_writes_the_same_bytes() {
        let body: Vec<u8> = (0..5 * CHUNK as u32 + 777)
            .map(|b| (b % 97) as u8)
            .collect();
        for c in [
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
            Compression::Uncompressed,
        ] {
            let write = |mut w: LayerWriter<Vec<u8>>| {
                w.append_dir("d", &EntryMeta::with_mode(0o755)).unwrap();
                w.append_file(
                    "d/f",
                    &EntryMeta::with_mode(0o644),
                    &body[..],
                    body.len() as u64,
                )
                .unwrap();
                w.finish().unwrap()
            };
            let plain = write(LayerWriter::new(Vec::new(), c).unwrap());
            let piped = write(LayerWriter::new_pipelined(Vec::new(), c).unwrap());
            assert_eq!(plain.diff_id, piped.diff_id, "{c}");
            assert_eq!(plain.uncompressed_size, piped.uncompressed_size, "{c}");
            assert!(plain.sink == piped.sink, "{c}");
        }
    }

    #[test]
    fn pipelined_writer_reports_the_sink_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "sink closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = LayerWriter::new_pipelined(Broken, Compression::Uncompressed).unwrap();
        let body = vec![1u8; 8 * CHUNK];
        let err = w
            .append_file("f", &EntryMeta::default(), &body[..], body.len() as u64)
            .and_then(|_| w.finish().map(drop))
            .unwrap_err();
        assert!(err.to_string().contains("sink closed"), "{err}");
    }
}
