//! Parallel compression for backhand's single-threaded squashfs writer.
//!
//! backhand compresses every data block on the writing thread. It lets a
//! program supply its own compressor, though, and its data layout is a pure
//! function of the files in path order: each block of a file of one block or
//! more, and fragment blocks packed from whole small files. So a planner
//! thread reads the files ahead in that order and queues the same blocks;
//! worker threads compress them with backhand's own compressor; when backhand
//! asks for a block it is looked up by content (verified byte for byte):
//! taken if done, waited for if a worker has it, compressed right there if
//! still queued, and compressed inline if it was never planned (metadata).
//! The image is identical to a single-threaded write; only the time changes.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use backhand::compression::{CompressionAction, Compressor, DefaultCompressor};
use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemCompressor, SuperBlock};

/// Input bytes the planner may hold ahead of backhand.
const AHEAD_LIMIT: usize = 96 << 20;
/// Input bytes planned before backhand starts writing.
const HEAD_START: usize = 4 << 20;

enum Status {
    Queued,
    Running,
    Done(Result<Vec<u8>, String>),
}

/// One block planned ahead.
struct Slot {
    input: Arc<Vec<u8>>,
    status: Status,
    /// How many times backhand will ask for it (identical blocks repeat).
    uses: usize,
}

#[derive(Default)]
struct State {
    slots: HashMap<u64, Vec<Slot>>,
    queue: VecDeque<(u64, Arc<Vec<u8>>)>,
    held: usize,
    stop: bool,
    /// The planner has queued every block.
    planned: bool,
    /// Blocks backhand found planned.
    hits: usize,
}

impl State {
    fn slot(&mut self, k: u64, input: &Arc<Vec<u8>>) -> Option<&mut Slot> {
        self.slots
            .get_mut(&k)?
            .iter_mut()
            .find(|s| Arc::ptr_eq(&s.input, input))
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
}

fn key(bytes: &[u8]) -> u64 {
    (bytes.len() as u64) << 32 | u64::from(crc32fast::hash(bytes))
}

/// The pre-compression of the write in progress (one at a time per process).
static CURRENT: Mutex<Option<Arc<Shared>>> = Mutex::new(None);
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// backhand's compressor, answering from the blocks planned ahead.
struct AheadCompressor;
static AHEAD: AheadCompressor = AheadCompressor;

impl CompressionAction for AheadCompressor {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        c: Compressor,
    ) -> Result<(), BackhandError> {
        DefaultCompressor.decompress(bytes, out, c)
    }

    fn compress(
        &self,
        bytes: &[u8],
        fc: FilesystemCompressor,
        block_size: u32,
    ) -> Result<Vec<u8>, BackhandError> {
        let shared = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match shared.and_then(|s| take(&s, bytes, fc, block_size)) {
            Some(found) => found.map_err(|e| BackhandError::StdIo(std::io::Error::other(e))),
            None => DefaultCompressor.compress(bytes, fc, block_size),
        }
    }

    fn compression_options(
        &self,
        sb: &mut SuperBlock,
        kind: &Kind,
        fc: FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(sb, kind, fc)
    }
}

fn compress(input: &[u8], fc: FilesystemCompressor, block_size: u32) -> Result<Vec<u8>, String> {
    std::panic::catch_unwind(|| DefaultCompressor.compress(input, fc, block_size))
        .map_err(|_| "compressor panicked".to_string())
        .and_then(|r| r.map_err(|e| super::error::bh_text(&e)))
}

/// The compressed form of `bytes` if it was planned, else None.
fn take(
    shared: &Shared,
    bytes: &[u8],
    fc: FilesystemCompressor,
    block_size: u32,
) -> Option<Result<Vec<u8>, String>> {
    let k = key(bytes);
    let mut state = shared.lock();
    let input = loop {
        let slot = state
            .slots
            .get_mut(&k)?
            .iter_mut()
            .find(|s| s.input.as_slice() == bytes)?;
        match slot.status {
            Status::Done(_) => break Arc::clone(&slot.input),
            Status::Running => state = shared.wait(state),
            Status::Queued => {
                // Nobody has started it: do it here rather than wait.
                slot.status = Status::Running;
                let input = Arc::clone(&slot.input);
                drop(state);
                let out = compress(&input, fc, block_size);
                state = shared.lock();
                if let Some(slot) = state.slot(k, &input) {
                    slot.status = Status::Done(out);
                }
                break input;
            }
        }
    };
    state.hits += 1;
    let slots = state.slots.get_mut(&k)?;
    let i = slots.iter().position(|s| Arc::ptr_eq(&s.input, &input))?;
    slots[i].uses -= 1;
    let out = if slots[i].uses == 0 {
        let slot = slots.swap_remove(i);
        if slots.is_empty() {
            state.slots.remove(&k);
        }
        state.held -= slot.input.len();
        slot.status
    } else {
        match &slots[i].status {
            Status::Done(out) => Status::Done(out.clone()),
            _ => Status::Running,
        }
    };
    shared.changed.notify_all();
    match out {
        Status::Done(out) => Some(out),
        _ => None,
    }
}

/// The planner and workers of one write; stopped and joined on drop.
pub(crate) struct Ahead {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    _serial: MutexGuard<'static, ()>,
}

impl Ahead {
    /// Start compressing `files` (regular files, in backhand's path order)
    /// ahead; returns the `Kind` to give the writer.
    pub fn start(files: Vec<PathBuf>, fc: FilesystemCompressor, block_size: u32) -> (Ahead, Kind) {
        let serial = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let shared = Arc::new(Shared::default());
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&shared));
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(16);
        let mut threads = Vec::new();
        for _ in 0..workers {
            let shared = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || work(&shared, fc, block_size)));
        }
        let planner = Arc::clone(&shared);
        threads.push(std::thread::spawn(move || {
            plan(files, block_size as usize, &planner);
            planner.lock().planned = true;
            planner.changed.notify_all();
        }));
        // Give the planner a head start, so backhand finds its first blocks planned.
        let mut state = shared.lock();
        while !state.planned && state.held < HEAD_START {
            state = shared.wait(state);
        }
        drop(state);
        (
            Ahead {
                shared,
                threads,
                _serial: serial,
            },
            Kind::new_v4(&AHEAD),
        )
    }

    /// (blocks backhand found planned, blocks planned in vain).
    pub fn stats(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.hits, state.slots.values().map(Vec::len).sum())
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        let (hits, unused) = self.stats();
        tracing::debug!(hits, unused, "squashfs blocks compressed ahead");
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A worker: compress queued blocks until the plan is done or the write stops.
fn work(shared: &Shared, fc: FilesystemCompressor, block_size: u32) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        let Some((k, input)) = state.queue.pop_front() else {
            if state.planned {
                return;
            }
            state = shared.wait(state);
            continue;
        };
        match state.slot(k, &input) {
            Some(slot) if matches!(slot.status, Status::Queued) => slot.status = Status::Running,
            _ => continue, // taken by the writer meanwhile
        }
        drop(state);
        let out = compress(&input, fc, block_size);
        state = shared.lock();
        if let Some(slot) = state.slot(k, &input) {
            slot.status = Status::Done(out);
        }
        shared.changed.notify_all();
    }
}

/// Cut the blocks backhand will compress, in its order, and queue them.
/// A file that cannot be read is skipped here: backhand reports it.
fn plan(files: Vec<PathBuf>, block: usize, shared: &Shared) {
    let mut fragment: Vec<u8> = Vec::with_capacity(block);
    for path in files {
        let Ok(mut file) = File::open(&path) else {
            continue;
        };
        let mut first = true;
        loop {
            // Read straight into the block that is queued: no copy.
            let mut chunk = Vec::with_capacity(block);
            match (&mut file).take(block as u64).read_to_end(&mut chunk) {
                Ok(1..) => {}
                _ => break,
            }
            if first && chunk.len() < block {
                // A file smaller than a block goes into the fragment block.
                if fragment.len() + chunk.len() > block
                    && !queue(
                        shared,
                        std::mem::replace(&mut fragment, Vec::with_capacity(block)),
                    )
                {
                    return;
                }
                fragment.extend_from_slice(&chunk);
                break;
            }
            first = false;
            // An all-zero block is stored as a hole, not compressed.
            if chunk.iter().any(|&b| b != 0) && !queue(shared, chunk) {
                return;
            }
        }
    }
    if !fragment.is_empty() {
        queue(shared, fragment);
    }
}

/// Register a block for the workers; false once the write stopped.
fn queue(shared: &Shared, input: Vec<u8>) -> bool {
    let k = key(&input);
    let mut state = shared.lock();
    while state.held > AHEAD_LIMIT && !state.stop {
        state = shared.wait(state);
    }
    if state.stop {
        return false;
    }
    let slots = state.slots.entry(k).or_default();
    if let Some(slot) = slots.iter_mut().find(|s| *s.input == input) {
        slot.uses += 1;
        return true;
    }
    let input = Arc::new(input);
    slots.push(Slot {
        input: Arc::clone(&input),
        status: Status::Queued,
        uses: 1,
    });
    state.held += input.len();
    state.queue.push_back((k, input));
    shared.changed.notify_all();
    true
}
