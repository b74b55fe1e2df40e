//! pigz-style parallel gzip: the stream is cut into fixed 1 MiB chunks, each deflated on its
//! own thread with the previous chunk's last 32 KiB as dictionary and ended with a sync flush,
//! and the pieces are concatenated in order into one gzip member. The output depends only on
//! the input, the level and the chunk size, never on the number of threads, so layer digests
//! stay reproducible across machines.
//!
//! A chunk that deflate cannot shrink (already compressed or random data) is written as
//! stored blocks instead of being searched for matches that are not there: at level 6 that
//! search ran at about 25 MB/s per core on random data. Whether a chunk is incompressible is
//! decided from samples of the chunk itself, so this too depends only on the input.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// Uncompressed bytes per chunk.
const CHUNK: usize = 1024 * 1024;
/// Deflate's window: the dictionary carried from one chunk to the next.
const WINDOW: usize = 32 * 1024;
/// Bytes per sample when testing whether a chunk compresses.
const SAMPLE: usize = 32 * 1024;
/// Samples per chunk (evenly spaced); the chunk is stored only if none of them compresses.
const SAMPLES: usize = 4;
/// A sample "compresses" when level-1 deflate saves at least 1/32 (about 3%) of it.
const MIN_SAVING_SHIFT: u32 = 5;
/// gzip header: deflate, no flags, mtime 0, no extra flags, OS "unknown".
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

type Job = JoinHandle<io::Result<Vec<u8>>>;

/// A `Write` that gzips into `sink` using worker threads.
pub(crate) struct ParallelGzip<W: Write> {
    sink: W,
    level: u32,
    pending: Vec<u8>,
    dictionary: Option<Vec<u8>>,
    crc: Crc,
    in_flight: VecDeque<Job>,
    max_in_flight: usize,
}

impl<W: Write> ParallelGzip<W> {
    pub(crate) fn new(mut sink: W, level: u32) -> io::Result<Self> {
        sink.write_all(&HEADER)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(ParallelGzip {
            sink,
            level: level.min(9),
            pending: Vec::with_capacity(CHUNK),
            dictionary: None,
            crc: Crc::new(),
            in_flight: VecDeque::new(),
            // One more than the cores so a worker is never idle while the oldest is drained.
            max_in_flight: threads.clamp(1, 8) + 1,
        })
    }

    /// Hands the pending chunk to a worker, first draining the oldest job if at capacity.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if self.in_flight.len() >= self.max_in_flight {
            self.drain_one()?;
        }
        let data = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        self.crc.update(&data);
        let dictionary = self.dictionary.take();
        if !last {
            self.dictionary = Some(data[data.len().saturating_sub(WINDOW)..].to_vec());
        }
        let level = self.level;
        let job = std::thread::Builder::new()
            .name("rbuild-gzip".to_string())
            .spawn(move || deflate_chunk(level, dictionary.as_deref(), &data, last))?;
        self.in_flight.push_back(job);
        Ok(())
    }

    fn drain_one(&mut self) -> io::Result<()> {
        if let Some(job) = self.in_flight.pop_front() {
            let piece = job
                .join()
                .map_err(|_| io::Error::other("gzip worker thread panicked"))??;
            self.sink.write_all(&piece)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.in_flight.is_empty() {
            self.drain_one()?;
        }
        self.sink.write_all(&self.crc.sum().to_le_bytes())?;
        self.sink.write_all(&self.crc.amount().to_le_bytes())?;
        self.sink.flush()?;
        Ok(self.sink)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == CHUNK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    /// Only flushes what is already compressed: cutting a chunk early would make the output
    /// depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

/// Raw-deflates one chunk; every chunk but the last ends with a sync flush (byte aligned,
/// not final) so the pieces concatenate into one deflate stream.
fn deflate_chunk(
    level: u32,
    dictionary: Option<&[u8]>,
    data: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    let level = if level > 0 && incompressible(data) {
        0
    } else {
        level
    };
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if let Some(dict) = dictionary {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        if status == Status::StreamEnd {
            break;
        }
        // zlib's rule: a flush is complete when all input is consumed and the call left
        // output space unused.
        if !last && c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    Ok(out)
}

/// Whether no evenly spaced sample of `data` shrinks under level-1 deflate. Small chunks are
/// always compressed normally.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < SAMPLES * SAMPLE {
        return false;
    }
    let step = (data.len() - SAMPLE) / (SAMPLES - 1);
    let mut out = Vec::with_capacity(SAMPLE + SAMPLE / 8 + 64);
    (0..SAMPLES).all(|i| {
        let sample = &data[i * step..i * step + SAMPLE];
        let mut c = Compress::new(flate2::Compression::new(1), false);
        out.clear();
        match c.compress_vec(sample, &mut out, FlushCompress::Finish) {
            // Output that did not even fit in the buffer did not shrink.
            Ok(Status::StreamEnd) => out.len() > SAMPLE - (SAMPLE >> MIN_SAVING_SHIFT),
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut w = ParallelGzip::new(Vec::new(), level).unwrap();
        // Uneven writes, to cross chunk boundaries at odd places.
        for piece in data.chunks(77_777) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 4 == 0 {
                    (x >> 24) as u8
                } else {
                    (i % 97) as u8
                }
            })
            .collect()
    }

    #[test]
    fn output_is_one_valid_gzip_member() {
        for len in [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            let data = sample(len);
            let blob = gz(&data, 6);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&blob[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "len {len}");
            // Also accepted by GNU gzip.
            let mut child = std::process::Command::new("gzip")
                .args(["-t", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&blob).unwrap();
            assert!(
                child.wait().unwrap().success(),
                "gzip -t rejected len {len}"
            );
        }
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let data = sample(5 * CHUNK + 999);
        let mut one = ParallelGzip::new(Vec::new(), 6).unwrap();
        one.max_in_flight = 1;
        one.write_all(&data).unwrap();
        assert_eq!(one.finish().unwrap(), gz(&data, 6));
    }

    fn random(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn random_chunks_are_stored_and_text_is_not() {
        let noise = random(CHUNK);
        assert!(incompressible(&noise));
        assert!(!incompressible(&sample(CHUNK)));
        // Random data with one compressible sample is compressed normally.
        let mut mixed = noise.clone();
        mixed[CHUNK - SAMPLE..].fill(b'a');
        assert!(!incompressible(&mixed));
        // Stored output round-trips and costs only block headers.
        let data = [noise, sample(CHUNK)].concat();
        let blob = gz(&data, 6);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let text_alone = gz(&sample(CHUNK), 6).len();
        assert!(blob.len() < CHUNK + text_alone + 1024, "{}", blob.len());
    }

    #[test]
    fn compresses_about_as_well_as_a_single_stream() {
        let data = sample(4 * CHUNK);
        let par = gz(&data, 6).len() as f64;
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len() as f64;
        assert!(par < single * 1.01, "parallel {par} vs single {single}");
    }
}
