//! Reading one input into the store: the buzhash chunker's pipeline (the reading thread
//! searches for cut points while the pool stores the batches before) and the fixed
//! chunker's batches, and the grouping of chunks whose ids and MACs hash side by side.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;
use rayon::prelude::*;

use crate::archive::bufpool;
use crate::archive::dropbehind::DropBehind;
use crate::archive::inflight::Tracker;
use crate::archive::store::{ChunkStore, StoreError};
use crate::format::chunker::{Allocation, Chunker, ChunkerParams, OwnedBatch, ParallelChunker};
use crate::format::objects::ChunkRef;

/// Bytes of chunk data one file worker hands to the pool at once.
const BATCH_BYTES: usize = 32 << 20;

/// Bytes a pipelined input reads at once: about one default chunk, so a batch is stored
/// soon after it is read and few bytes wait in read buffers.
const READ_BLOCK: usize = 2 << 20;
/// Batches of one input being stored on the pool while its reader searches on, while
/// other inputs share the pool.
const IN_FLIGHT: usize = 1;
/// The same for an input being the only one pipelined (one image, one stream): its
/// batches are all the pool has to do. One more than the pool has threads, so a thread
/// that finishes a batch finds the next one read already instead of waiting for the
/// reader (on 2 cores, with 2 in flight: 13% idle, the image backup 7% slower; 3-6 MiB
/// less peak RSS).
fn in_flight_alone() -> usize {
    rayon::current_num_threads() + 1
}
/// Read blocks of room in an input's read buffer per batch in flight (see
/// [`ParallelChunker::with_room`]): enough that the reader seldom waits for a batch to
/// leave the bytes it reads into. A 2 GiB image on 2 cores waited in 35-58 of its ~1000
/// reads with 2 blocks per batch, 17-21 with 3, 9-12 with 4, at a peak RSS of 49, 55 and
/// 62 MiB (80 MiB with a read buffer per batch, before the ring).
const ROOM_PER_BATCH: usize = 4;
/// Inputs currently pipelined (see [`chunk_parallel`]).
static PIPELINED: AtomicUsize = AtomicUsize::new(0);

/// Counts an input as pipelined while it lives.
struct Pipelined;

impl Pipelined {
    fn start() -> Self {
        PIPELINED.fetch_add(1, Ordering::Relaxed);
        Pipelined
    }

    /// Batches this input may have in flight now.
    fn in_flight(&self) -> usize {
        match PIPELINED.load(Ordering::Relaxed) {
            1 => in_flight_alone(),
            _ => IN_FLIGHT,
        }
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        PIPELINED.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) type Stored = Result<Vec<ChunkRef>, StoreError>;

/// Where an input's chunks go, and what watches its reading.
pub(super) struct InputCtx<'a> {
    pub(super) store: &'a Arc<ChunkStore>,
    /// Lets the page cache drop what was read.
    pub(super) behind: Option<&'a DropBehind<'a>>,
    /// Records the stored batches for checkpoints.
    pub(super) track: Option<&'a Tracker>,
    /// Set on SIGINT/SIGTERM: stop reading.
    pub(super) cancel: Option<&'a AtomicBool>,
}

impl InputCtx<'_> {
    /// Counts `n` bytes the chunker took from its input, and lets the page cache drop them.
    pub(super) fn consumed(&self, n: usize) {
        self.store
            .stats
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
        if let Some(b) = self.behind {
            b.advance(n as u64);
        }
    }

    /// Runs `store` as batch `index` of the input (see [`Tracker::store`]).
    fn tracked(&self, index: usize, store: impl FnOnce() -> Stored) -> Stored {
        match self.track {
            Some(t) => t.store(index, store),
            None => store(),
        }
    }

    /// An error once the run is cancelled: the input ends there, as a read error would.
    pub(super) fn check_cancel(&self) -> std::io::Result<()> {
        match self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted by a signal",
            )),
            _ => Ok(()),
        }
    }
}

/// Chunks a reader with the chunker `params` describe into `ctx`'s store; `prepare` may
/// set up the fixed chunker (a sparse map) before it reads.
pub(super) fn chunk_input<R: Read>(
    params: &ChunkerParams,
    seed: u32,
    reader: R,
    ctx: &InputCtx,
    prepare: impl FnOnce(Chunker<R>) -> Chunker<R>,
) -> Result<Result<Vec<ChunkRef>, std::io::Error>, StoreError> {
    match params {
        ChunkerParams::Buzhash { .. } => chunk_parallel(params, seed, reader, ctx),
        ChunkerParams::Fixed { .. } => {
            chunk_reader(prepare(Chunker::new(params, seed, reader)), ctx)
        }
    }
}

/// Stores the chunks of one batch (see [`store_chunks`]).
fn store_batch(store: &ChunkStore, batch: &OwnedBatch) -> Stored {
    let chunks: Vec<(Allocation, usize, &[u8])> = (0..batch.spans.len())
        .map(|i| {
            (
                batch.spans[i].allocation,
                batch.spans[i].size,
                batch.bytes(i),
            )
        })
        .collect();
    store_chunks(store, &chunks)
}

/// Bytes of data chunks stored side by side at most (see [`store_chunks`]): their
/// envelopes fit one buffer the store keeps.
pub const GROUP_BYTES: usize = 8 << 20;

/// Stores consecutive chunks `(allocation, size, bytes)` in groups of up to
/// [`GROUP_BYTES`] of data, the groups in parallel when there are several. Within a group
/// the key hashes side by side (see [`ChunkStore::store_many`]): a lane whose chunk ends
/// takes the next, so a group of several chunks keeps every lane busy. Chunks larger than
/// half a group go two per group; the envelopes of a group share one buffer where they fit
/// it (see [`ChunkStore::store_many`]), so a thread holds no more envelope memory than for
/// one of borg's largest chunks.
pub(super) fn store_chunks(store: &ChunkStore, chunks: &[(Allocation, usize, &[u8])]) -> Stored {
    let groups = groups_of(chunks, GROUP_BYTES);
    if groups.len() == 1 {
        return store_group(store, chunks);
    }
    let stored: Vec<Vec<ChunkRef>> = groups
        .into_par_iter()
        .map(|r| store_group(store, &chunks[r]))
        .collect::<Result<_, _>>()?;
    Ok(stored.concat())
}

/// Splits `chunks` into consecutive groups of at most `max` bytes of data chunks each, or
/// of two data chunks where two are larger; all-zero chunks cost nothing and join the group
/// at hand.
pub fn groups_of(chunks: &[(Allocation, usize, &[u8])], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes, mut n) = (0, 0, 0);
    for (i, c) in chunks.iter().enumerate() {
        if c.0 != Allocation::Data {
            continue;
        }
        if n >= 2 && bytes + c.1 > max {
            groups.push(start..i);
            (start, bytes, n) = (i, 0, 0);
        }
        bytes += c.1;
        n += 1;
    }
    groups.push(start..chunks.len());
    groups
}

/// Stores a group of chunks on this thread: the data chunks through one
/// [`ChunkStore::store_many`], all-zero ones by their size.
fn store_group(store: &ChunkStore, group: &[(Allocation, usize, &[u8])]) -> Stored {
    let data: Vec<&[u8]> = group
        .iter()
        .filter(|c| c.0 == Allocation::Data)
        .map(|c| c.2)
        .collect();
    let mut stored = store.store_many(&data).into_iter();
    group
        .iter()
        .map(|&(allocation, size, _)| match allocation {
            Allocation::Data => stored.next().expect("one result per data chunk"),
            Allocation::Alloc | Allocation::Hole => store.store_zeros(size),
        })
        .collect()
}

/// The batches of one input in order, as they are stored (some on the pool).
#[derive(Default)]
struct BatchResults {
    parts: Vec<Option<Vec<ChunkRef>>>,
    /// Batches stored on the pool whose results have not arrived.
    pending: usize,
    failed: Option<StoreError>,
}

impl BatchResults {
    /// Reserves the next batch's place; returns its index.
    fn open(&mut self) -> usize {
        self.parts.push(None);
        self.parts.len() - 1
    }

    fn settle(&mut self, i: usize, r: Stored) {
        match r {
            Ok(v) => self.parts[i] = Some(v),
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
    }

    /// Takes results from `rx` until at most `max` batches are pending.
    fn wait(&mut self, rx: &Receiver<(usize, Stored)>, max: usize) {
        while self.pending > max {
            let (i, r) = rx.recv().expect("a batch's sender lives until it reports");
            self.pending -= 1;
            self.settle(i, r);
        }
    }

    /// The chunk list of the whole input, or the first store error.
    fn finish(self) -> Stored {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.parts.into_iter().flatten().flatten().collect()),
        }
    }
}

/// Chunks a reader with the buzhash chunker. An input that fits one read block is stored
/// right here; a larger one is a pipeline: this thread reads and searches for cut points
/// while the pool stores the batches before (up to [`IN_FLIGHT`] of them, or
/// [`in_flight_alone`] for the only input pipelined), straight from the chunker's read
/// buffer, which holds that many batches beside the block being read.
fn chunk_parallel<R: Read>(
    params: &ChunkerParams,
    seed: u32,
    reader: R,
    ctx: &InputCtx,
) -> Result<Result<Vec<ChunkRef>, std::io::Error>, StoreError> {
    let store = ctx.store;
    let Some(chunker) = ParallelChunker::new(params, seed, reader, 1) else {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid chunker params {params}"),
        );
        return Ok(Err(e));
    };
    let mut chunker = chunker
        .with_block(READ_BLOCK)
        .with_room(ROOM_PER_BATCH * in_flight_alone())
        // large chunks are stored in pairs (see `store_chunks`)
        .with_min_batch(2)
        .with_buffer(bufpool::take().unwrap_or_default());
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, Stored)>();
    let mut results = BatchResults::default();
    let mut pipelined = None;
    let read = loop {
        if let Err(e) = ctx.check_cancel() {
            break Err(e);
        }
        let batch = match chunker.next_owned_batch() {
            Ok(Some(b)) => b,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        ctx.consumed(batch.len());
        let i = results.open();
        if i == 0 && chunker.at_eof() {
            results.settle(i, ctx.tracked(i, || store_batch(store, &batch)));
            continue;
        }
        let in_flight = pipelined.get_or_insert_with(Pipelined::start).in_flight();
        chunker.set_room(ROOM_PER_BATCH * in_flight);
        results.wait(&rx, in_flight - 1);
        let (store, tx) = (store.clone(), tx.clone());
        // the gate is passed here, on the reading thread, never on the pool
        let gate = ctx.track.map(|t| t.begin(i));
        results.pending += 1;
        rayon::spawn(move || {
            let r = store_batch(&store, &batch);
            // unpinned before the reader hears of it: once every result is in, the read
            // buffer is the reader's alone again, to be kept for the next input
            drop(batch);
            if let Some(g) = gate {
                g.end(&r);
            }
            let _ = tx.send((i, r));
        });
        if results.failed.is_some() {
            break Ok(());
        }
    };
    results.wait(&rx, 0);
    let read_len = chunker.bytes_read();
    bufpool::keep(chunker.into_buffer(), read_len);
    let refs = results.finish()?;
    Ok(read.map(|()| refs))
}

/// Chunks a reader into the store; large inputs are processed in parallel batches.
fn chunk_reader<R: Read>(
    mut chunker: Chunker<R>,
    ctx: &InputCtx,
) -> Result<Result<Vec<ChunkRef>, std::io::Error>, StoreError> {
    let store: &ChunkStore = ctx.store;
    let mut refs = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    let mut index = 0;
    let mut flush = |batch: &mut Vec<(Allocation, usize, Vec<u8>)>,
                     refs: &mut Vec<ChunkRef>|
     -> Result<(), StoreError> {
        let out = ctx.tracked(index, || {
            let chunks: Vec<(Allocation, usize, &[u8])> = batch
                .iter()
                .map(|(a, n, d)| (*a, *n, d.as_slice()))
                .collect();
            store_chunks(store, &chunks)
        });
        index += 1;
        refs.extend(out?);
        batch.clear();
        Ok(())
    };
    for c in chunker.by_ref() {
        let c = match c.and_then(|c| ctx.check_cancel().map(|()| c)) {
            Ok(c) => c,
            Err(e) => {
                flush(&mut batch, &mut refs)?;
                return Ok(Err(e));
            }
        };
        ctx.consumed(c.size);
        batch_bytes += c.data.len();
        batch.push((c.allocation, c.size, c.data));
        if batch_bytes >= BATCH_BYTES {
            flush(&mut batch, &mut refs)?;
            batch_bytes = 0;
        }
    }
    flush(&mut batch, &mut refs)?;
    Ok(Ok(refs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hold_up_to_max_data_bytes() {
        use crate::format::chunker::Allocation::{Alloc, Data};
        let sizes = |v: &[(Allocation, usize)]| -> Vec<(Allocation, usize, &'static [u8])> {
            v.iter().map(|&(a, n)| (a, n, &[][..])).collect()
        };
        let c = sizes(&[
            (Data, 3),
            (Data, 3),
            (Alloc, 50),
            (Data, 4),
            (Data, 9),
            (Data, 1),
        ]);
        assert_eq!(groups_of(&c, 10), vec![0..4, 4..6]);
        assert_eq!(groups_of(&c, 100), vec![0..6]);
        // large chunks go in pairs (the zeros join the group at hand)
        assert_eq!(groups_of(&c, 1), vec![0..3, 3..5, 5..6]);
        assert_eq!(groups_of(&sizes(&[(Alloc, 8)]), 1), vec![0..1]);
        assert_eq!(groups_of(&[], 1), vec![0..0]);
    }
}
