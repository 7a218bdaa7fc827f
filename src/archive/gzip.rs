//! Parallel gzip for overlays and initrds: the input is cut into fixed 1 MiB
//! chunks, each compressed as raw deflate on a worker thread (primed with
//! the previous chunk's last 32 KiB, as pigz does, so the ratio stays that of
//! one stream) and ended with a sync flush; the results are written in order
//! as ONE gzip member with the combined CRC. The output depends only on the
//! input and the level, never on the number of threads, and it is a plain
//! gzip file for the kernel, busybox and `gzip -d` alike.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes of input per chunk (fixed: part of the output format's determinism).
const CHUNK: usize = 1 << 20;
/// deflate's window: the dictionary a chunk is primed with.
const WINDOW: usize = 32 * 1024;

struct Job {
    index: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

struct Done {
    index: u64,
    out: io::Result<Vec<u8>>,
    crc: crc32fast::Hasher,
}

/// A `Write` that gzips what it is given on worker threads. Call
/// [`ParGzWriter::finish`] to write the end of the stream.
pub struct ParGzWriter<W: Write> {
    out: Option<W>,
    level: u32,
    buf: Vec<u8>,
    dict: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_index: u64,
    next_write: u64,
    pending: BTreeMap<u64, Done>,
    crc: crc32fast::Hasher,
    total: u64,
}

impl<W: Write> ParGzWriter<W> {
    /// Gzip at `level` (0–9) into `out`, on as many threads as the machine has (≤ 8).
    pub fn new(mut out: W, level: u32) -> io::Result<Self> {
        // gzip header: deflate, no flags, mtime 0, no extra flags, OS = Unix.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads * 2);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx: Sender<Done> = done_tx.clone();
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let mut crc = crc32fast::Hasher::new();
                    crc.update(&job.data);
                    let out = deflate_chunk(&job.data, &job.dict, level.min(9), job.last);
                    if tx
                        .send(Done {
                            index: job.index,
                            out,
                            crc,
                        })
                        .is_err()
                    {
                        return;
                    }
                })
            })
            .collect();
        Ok(ParGzWriter {
            out: Some(out),
            level: level.min(9),
            buf: Vec::with_capacity(CHUNK),
            dict: Vec::new(),
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            next_index: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let dict = std::mem::take(&mut self.dict);
        self.dict = data[data.len().saturating_sub(WINDOW)..].to_vec();
        let job = Job {
            index: self.next_index,
            data,
            dict,
            last,
        };
        self.next_index += 1;
        // Keep the number of chunks in flight bounded: write finished ones first.
        while self.next_index - self.next_write > 4 * self.workers.len() as u64 {
            self.collect_one()?;
        }
        let sender = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        sender
            .send(job)
            .map_err(|_| io::Error::other("gzip worker thread died"))
    }

    /// Wait for one result and write every chunk that is now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let done = self
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.pending.insert(done.index, done);
        while let Some(done) = self.pending.remove(&self.next_write) {
            let bytes = done.out?;
            self.out
                .as_mut()
                .ok_or_else(|| io::Error::other("gzip writer already finished"))?
                .write_all(&bytes)?;
            self.crc.combine(&done.crc);
            self.next_write += 1;
        }
        Ok(())
    }

    /// Compress what is left, write the gzip trailer and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.jobs = None;
        while self.next_write < self.next_index {
            self.collect_one()?;
        }
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        out.write_all(&self.crc.clone().finalize().to_le_bytes())?;
        out.write_all(&(self.total as u32).to_le_bytes())?;
        out.flush()?;
        Ok(out)
    }

    /// The compression level in use.
    pub fn level(&self) -> u32 {
        self.level
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                self.submit(false)?;
            }
        }
        self.total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParGzWriter<W> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Raw deflate of one chunk, primed with `dict`; ends byte-aligned with a
/// sync flush, or with the final block when `last`.
fn deflate_chunk(data: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete once all input is in and output space is left over.
            _ if !last && done_input && out.capacity() - out.len() >= 1024 => return Ok(out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text-like with a counter.
        (0..len)
            .map(|i| b"the quick brown fox jumps over 0123456789 "[(i * 7 + i / 1000) % 42])
            .collect()
    }

    #[test]
    fn round_trips_across_chunks_and_is_deterministic() {
        for len in [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 12345] {
            let data = sample(len);
            let mut w = ParGzWriter::new(Vec::new(), 6).unwrap();
            w.write_all(&data).unwrap();
            let gz = w.finish().unwrap();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
            let mut w2 = ParGzWriter::new(Vec::new(), 6).unwrap();
            for piece in data.chunks(777) {
                w2.write_all(piece).unwrap();
            }
            assert_eq!(
                w2.finish().unwrap(),
                gz,
                "len {len}: output depends on write sizes"
            );
        }
    }
}
