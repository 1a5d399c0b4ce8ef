//! One stream chunked on several cores, with borg's cut points.
//!
//! Where a chunk ends depends only on where it starts, so the buffered input is split
//! among the threads, each chunking its part from a guessed start until it falls into
//! step with the true cuts (see `speculate`). On one thread this is borg's own loop: the
//! search for a cut starts after each chunk's minimum size and stops at the first hit.
//!
//! Chunks are handed out in batches that borrow the chunker's read buffer, or pin their
//! bytes in it ([`OwnedBatch`]) so a consumer can store them on other threads while the
//! chunker reads on into the rest of the buffer (see `arena`); either way their bytes are
//! never copied before they are hashed, compressed and encrypted.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::arena::{Arena, Pin};
use super::{speculate, Allocation, BlockSource, ChunkerParams, Cutter, End};

/// Bytes read from the input at once by a lone chunking thread: small enough that what was
/// read is still in cache when it is searched (16 MiB chunked a file from the page cache
/// 20-35% slower than 4, 8 MiB 5% slower).
const BLOCK_ALONE: usize = 4 << 20;
/// Bytes read at once per thread when several chunk: every block costs each thread a
/// guessed start, a hand-over and a wait for the slowest, so they take more (on two
/// threads, 8 MiB each chunked a cached file 15-25% faster than 4 or 6, and 10-30% faster
/// than 10 to 16).
const BLOCK_PER_THREAD: usize = 8 << 20;
/// With less than this much input per thread beyond the hand-over overlap, the calling
/// thread chunks alone.
const PAR_MIN: usize = 1 << 20;
/// The smallest read block.
const MIN_BLOCK: usize = 4 << 10;

/// One chunk of a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Start of the chunk in [`Batch::data`].
    pub offset: usize,
    pub size: usize,
    /// `Data` or `Alloc` (all zero); holes are not detected by the buzhash chunker.
    pub allocation: Allocation,
}

/// Consecutive chunks of the stream, borrowed from the chunker until its next call.
pub struct Batch<'a> {
    /// The bytes of all chunks of the batch, back to back.
    pub data: &'a [u8],
    pub spans: &'a [Span],
}

impl Batch<'_> {
    /// The bytes of chunk `i`.
    pub fn bytes(&self, i: usize) -> &[u8] {
        let s = self.spans[i];
        &self.data[s.offset..s.offset + s.size]
    }
}

/// Consecutive chunks of the stream, pinned in the chunker's read buffer: the chunker goes
/// on reading into the rest of it, and waits before it would write over these bytes.
pub struct OwnedBatch {
    /// The bytes of all chunks of the batch; span offsets are relative to them.
    data: Pin,
    pub spans: Vec<Span>,
}

impl OwnedBatch {
    /// The bytes of chunk `i`.
    pub fn bytes(&self, i: usize) -> &[u8] {
        let s = self.spans[i];
        &self.data.bytes()[s.offset..s.offset + s.size]
    }

    /// The bytes of all chunks of the batch.
    pub fn len(&self) -> usize {
        self.spans.iter().map(|s| s.size).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// How long the chunker waits for a batch to leave the bytes it would read into before it
/// moves to a new buffer instead: batches are stored in milliseconds, but a caller that
/// keeps them on the reading thread would otherwise wait forever.
const PATIENCE: Duration = Duration::from_secs(1);

/// A buzhash chunker over a reader that chunks on `threads` cores (rayon's pool) and
/// yields borrowed batches of chunks. Cut points equal
/// [`chunk_sizes`](super::chunk_sizes) and borg's for the same parameters and seed.
pub struct ParallelChunker<R> {
    reader: R,
    cutter: Cutter,
    threads: usize,
    block: usize,
    /// See [`PAR_MIN`].
    par_min: usize,
    /// Read input: `[start, len)` of it is the current chunk and what follows it; bytes
    /// before `start` may be pinned by [`OwnedBatch`]es.
    arena: Arc<Arena>,
    len: usize,
    /// Blocks the buffer holds beyond one block and the longest chunk (see
    /// [`with_room`](Self::with_room)).
    room: usize,
    /// See [`PATIENCE`].
    patience: Duration,
    /// See [`with_min_batch`](Self::with_min_batch).
    min_batch: usize,
    start: usize,
    /// Ends of the chunks after `start` that are already known, in order.
    ends: VecDeque<usize>,
    /// While `ends` is empty: no window in `[start + min, scanned)` is a cut.
    scanned: usize,
    spans: Vec<Span>,
    /// Bytes read from the input so far.
    read: u64,
    eof: bool,
    done: bool,
}

impl<R: BlockSource> ParallelChunker<R> {
    /// `None` unless `params` are valid buzhash parameters (the fixed chunker needs no
    /// search, so it has no parallel form). `threads <= 1` searches on the calling thread.
    pub fn new(params: &ChunkerParams, seed: u32, reader: R, threads: usize) -> Option<Self> {
        let cutter = Cutter::new(params, seed)?;
        let threads = threads.max(1);
        let block = match threads {
            1 => BLOCK_ALONE,
            n => n * BLOCK_PER_THREAD,
        };
        Some(ParallelChunker {
            reader,
            threads,
            block,
            par_min: PAR_MIN,
            arena: Arc::new(Arena::new(Vec::new())),
            len: 0,
            room: 0,
            patience: PATIENCE,
            min_batch: 1,
            cutter,
            start: 0,
            ends: VecDeque::new(),
            scanned: 0,
            spans: Vec::new(),
            read: 0,
            eof: false,
            done: false,
        })
    }

    /// Reads `bytes` per fill (at least 4 KiB): smaller blocks keep less of the
    /// input resident and hand out smaller batches, larger ones give the scanning threads
    /// more to share. A chunk longer than a block is simply read in several fills.
    pub fn with_block(mut self, bytes: usize) -> Self {
        self.block = bytes.max(MIN_BLOCK);
        self
    }

    /// Hands out batches of at least `chunks` chunks unless the input ends first (a
    /// consumer that hashes two large chunks side by side). A chunk cut while the batch is
    /// short is kept in the buffer across the next read, so the buffer must take it too:
    /// a ring with little room (see [`with_room`](Self::with_room)) then moves to a new
    /// buffer more often.
    pub fn with_min_batch(mut self, chunks: usize) -> Self {
        self.min_batch = chunks.max(1);
        self
    }

    /// Reads into `buf` (its contents are discarded) if its length, all of it initialised,
    /// is enough for the buffer the chunker needs (see [`into_buffer`](Self::into_buffer)):
    /// a buffer kept from an earlier chunker saves allocating and faulting in fresh memory
    /// for every input.
    pub fn with_buffer(mut self, buf: Vec<u8>) -> Self {
        self.arena = Arc::new(Arena::new(buf));
        self
    }

    /// Lets the buffer hold `blocks` more blocks (as well as the block being read and the
    /// longest chunk): the chunker reads on in place while [`OwnedBatch`]es pin no more
    /// than that, and waits for them where they do (see [`PATIENCE`]). The buffer is used
    /// as a ring, all of it touched in turn: more room costs memory, less makes the chunker
    /// wait more often while batches are stored.
    pub fn with_room(mut self, blocks: usize) -> Self {
        self.set_room(blocks);
        self
    }

    /// Changes the room (see [`with_room`](Self::with_room)) from the next read on; a
    /// buffer too small for more room is replaced when the ring next wraps.
    pub fn set_room(&mut self, blocks: usize) {
        self.room = blocks;
    }

    /// Gives back the reader.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// Gives back the read buffer, all of its length initialised, for
    /// [`with_buffer`](Self::with_buffer) (an empty one while a batch still pins it). No
    /// byte of it was written beyond [`bytes_read`](Self::bytes_read).
    pub fn into_buffer(self) -> Vec<u8> {
        Arc::try_unwrap(self.arena)
            .map(Arena::into_vec)
            .unwrap_or_default()
    }

    /// The next chunks: as many as the buffered input allows, at least one (see
    /// [`with_min_batch`](Self::with_min_batch)); `None` at the end. After an error the
    /// chunker is finished.
    pub fn next_batch(&mut self) -> io::Result<Option<Batch<'_>>> {
        Ok(self.advance()?.map(|first| Batch {
            data: &self.buffered()[first..self.start],
            spans: &self.spans,
        }))
    }

    /// Like [`next_batch`](Self::next_batch), but the batch pins its bytes in the read
    /// buffer instead of borrowing the chunker: later calls read on into the rest of the
    /// buffer while this batch is still being stored.
    pub fn next_owned_batch(&mut self) -> io::Result<Option<OwnedBatch>> {
        Ok(self.advance()?.map(|first| OwnedBatch {
            data: self.arena.pin(first..self.start),
            spans: std::mem::take(&mut self.spans),
        }))
    }

    /// The input in the buffer's current lap: the chunks handed out last and the rest.
    fn buffered(&self) -> &[u8] {
        // SAFETY: only this chunker writes to the arena, and not while `&self` is borrowed.
        unsafe { self.arena.bytes(0..self.len) }
    }

    /// Bytes read from the input so far: no read buffer was filled beyond this length.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Whether the whole input is buffered (nothing more will be read).
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Cuts the next batch into `spans`; returns where it starts in `buf`. With too few
    /// chunks cut it reads on from the batch's start, so the batch stays in one piece when
    /// the read moves the buffered input.
    fn advance(&mut self) -> io::Result<Option<usize>> {
        self.spans.clear();
        if self.done {
            return Ok(None);
        }
        let mut first = self.start;
        loop {
            if let Some(n) = self.try_cut() {
                let bytes = &self.buffered()[self.start..self.start + n];
                self.spans.push(Span {
                    offset: self.start - first,
                    size: n,
                    allocation: Allocation::of(bytes),
                });
                self.start += n;
                continue;
            }
            if self.eof || self.spans.len() >= self.min_batch {
                break;
            }
            let cut = self.start - first;
            self.start = first;
            if let Err(e) = self.fill() {
                self.done = true;
                return Err(e);
            }
            first = self.start;
            self.start += cut;
        }
        if self.spans.is_empty() {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(first))
    }

    /// Reads one more block after the buffered input, in place up to the end of the ring
    /// (see [`set_room`](Self::set_room); its last half block or more is read short rather
    /// than left unused), then after moving the unchunked rest back to the front. Where
    /// batches pin what it would write over, the chunker waits for them, for at most
    /// [`PATIENCE`], then moves to a new buffer.
    fn fill(&mut self) -> io::Result<()> {
        let (s, mut block) = (self.start, self.block);
        let rest = self.len - s;
        let least = (block + self.cutter.max).max(rest + block);
        let wanted = least.max(self.cutter.max + (self.room + 1) * block);
        if self.arena.len() < least {
            self.relocate(wanted);
        } else {
            let end = self.arena.len().min(wanted);
            let tail = end.saturating_sub(self.len);
            if tail < block && tail >= block / 2 {
                // half a block or more up to the end: read that much rather than leave it
                block = tail;
            }
            let wrap = self.len + block > end;
            // a wrap into a buffer smaller than the room asked for moves to a larger one
            let free = if wrap {
                self.arena.len() >= wanted
                    && self.arena.wait_unpinned(&(0..rest + block), self.patience)
            } else {
                self.arena
                    .wait_unpinned(&(self.len..self.len + block), self.patience)
            };
            if !free {
                self.relocate(wanted);
            } else if wrap {
                // SAFETY: this chunker is the only writer and no batch pins the front; the
                // rest was never handed out, so nothing pins it either.
                unsafe { self.arena.copy_within(s..self.len, 0) };
                self.rebase(rest);
            }
        }
        let at = self.len;
        // SAFETY: the range lies beyond the buffered input and no batch pins it (above).
        let into = unsafe { self.arena.bytes_mut(at..at + block) };
        let got = self.reader.read_block(into, self.threads);
        // a failed read may have filled part of the block: count all of it
        self.read += got.as_ref().map_or(block, |&n| n) as u64;
        let n = got?;
        self.len += n;
        if n < block {
            self.eof = true;
        }
        Ok(())
    }

    /// Moves the unchunked rest to the front of a new buffer of `size` bytes; batches keep
    /// the old one alive while they pin it.
    fn relocate(&mut self, size: usize) {
        let rest = self.len - self.start;
        let buf = vec![0u8; size];
        crate::hugepages::advise(&buf);
        let fresh = Arena::new(buf);
        // SAFETY: the new arena is not shared yet; the rest of the old one is never pinned
        // and only this chunker writes to it.
        unsafe {
            fresh
                .bytes_mut(0..rest)
                .copy_from_slice(self.arena.bytes(self.start..self.len));
        }
        self.arena = Arc::new(fresh);
        self.rebase(rest);
    }

    /// Positions after the rest moved to the front of the buffer (`rest` bytes).
    fn rebase(&mut self, rest: usize) {
        let s = self.start;
        self.scanned = self.scanned.saturating_sub(s);
        for e in self.ends.iter_mut() {
            *e -= s;
        }
        self.start = 0;
        self.len = rest;
    }

    /// The size of the chunk at `start` if the buffered input decides it.
    fn try_cut(&mut self) -> Option<usize> {
        let s = self.start;
        if self.ends.is_empty() {
            let overlap = self.cutter.typical_len();
            if self.threads > 1 && self.len - s >= self.threads * (self.par_min + overlap) {
                let c = speculate::cuts(
                    &self.cutter,
                    self.buffered(),
                    s,
                    self.scanned,
                    self.eof,
                    self.threads,
                );
                self.ends.extend(c.ends);
                self.scanned = c.scanned.unwrap_or(0);
            } else {
                match self
                    .cutter
                    .end_of(self.buffered(), s, self.scanned, self.eof)
                {
                    End::At(e) => {
                        self.ends.push_back(e);
                        self.scanned = 0;
                    }
                    End::Open { scanned } => self.scanned = scanned,
                }
            }
        }
        self.ends.pop_front().map(|e| e - s)
    }
}

/// Sizes of the chunks of `data` as [`ParallelChunker`] with `threads` cuts them (equal to
/// [`chunk_sizes`](super::chunk_sizes) for buzhash parameters); `None` for fixed parameters.
pub fn parallel_chunk_sizes(
    params: &ChunkerParams,
    seed: u32,
    data: &[u8],
    threads: usize,
) -> Option<Vec<usize>> {
    let mut c = ParallelChunker::new(params, seed, data, threads)?;
    let mut sizes = Vec::new();
    // An in-memory reader never fails.
    while let Ok(Some(b)) = c.next_batch() {
        sizes.extend(b.spans.iter().map(|s| s.size));
    }
    Some(sizes)
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{mixed, Dribble};
    use super::super::{chunk_sizes, is_zero};
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    fn data(seed: u64, len: usize) -> Vec<u8> {
        mixed(seed, len, 70_000)
    }

    fn batched<R: Read>(mut c: ParallelChunker<R>, input: &[u8]) -> Vec<usize> {
        let mut off = 0;
        let mut sizes = Vec::new();
        while let Some(b) = c.next_batch().unwrap() {
            assert!(!b.spans.is_empty());
            for (i, s) in b.spans.iter().enumerate() {
                let bytes = &input[off..off + s.size];
                assert_eq!(b.bytes(i), bytes);
                assert_eq!(s.allocation == Allocation::Alloc, is_zero(bytes));
                off += s.size;
                sizes.push(s.size);
            }
        }
        assert_eq!(off, input.len());
        sizes
    }

    const PARAMS: [ChunkerParams; 4] = [
        ChunkerParams::Buzhash {
            min_exp: 6,
            max_exp: 9,
            mask_bits: 6,
            window: 63,
        },
        ChunkerParams::Buzhash {
            min_exp: 10,
            max_exp: 16,
            mask_bits: 12,
            window: 255,
        },
        ChunkerParams::ITEMS,
        ChunkerParams::DEFAULT,
    ];

    #[test]
    fn equals_sequential_on_large_inputs() {
        let d = data(7, 9 << 20);
        for p in PARAMS {
            let want = chunk_sizes(&p, 0xdead_beef, &d);
            for threads in [1, 2, 3, 8] {
                for block in [0, 3 << 20, 64 << 20] {
                    let mut c = ParallelChunker::new(&p, 0xdead_beef, &d[..], threads)
                        .unwrap()
                        .with_block(block);
                    c.par_min = 4096;
                    assert_eq!(batched(c, &d), want, "{p} threads={threads} block={block}");
                }
            }
        }
    }

    /// Checks that `b` holds `d[at..]`'s chunks.
    fn check_batch(d: &[u8], at: usize, b: &OwnedBatch) {
        let mut o = at;
        for (i, s) in b.spans.iter().enumerate() {
            assert_eq!(b.bytes(i), &d[o..o + s.size]);
            o += s.size;
        }
    }

    #[test]
    fn owned_batches_stay_valid_while_the_chunker_reads_on() {
        let d = data(11, 40 << 20);
        let p = ChunkerParams::DEFAULT;
        let want = chunk_sizes(&p, 5, &d);
        for (keep, room, min_batch) in [
            (1usize, 0, 1),
            (3, 0, 1),
            (1, 4, 1),
            (3, 4, 1),
            (3, 0, 2),
            (3, 4, 2),
        ] {
            // batches kept on the reading thread are never dropped while it waits: it
            // reads on in place where it can, and moves to a new buffer where it cannot
            let mut c = ParallelChunker::new(&p, 5, &d[..], 1)
                .unwrap()
                .with_block(1 << 20)
                .with_room(room)
                .with_min_batch(min_batch);
            c.patience = Duration::from_millis(1);
            let mut alive: VecDeque<(usize, OwnedBatch)> = VecDeque::new();
            let (mut off, mut sizes) = (0, Vec::new());
            while let Some(b) = c.next_owned_batch().unwrap() {
                // a short batch only at the end of the input
                assert!(b.spans.len() >= min_batch || off + b.len() == d.len());
                sizes.extend(b.spans.iter().map(|s| s.size));
                let len = b.len();
                alive.push_back((off, b));
                off += len;
                while alive.len() > keep {
                    let (at, b) = alive.pop_front().unwrap();
                    check_batch(&d, at, &b);
                }
            }
            for (at, b) in &alive {
                check_batch(&d, *at, b);
            }
            drop(alive);
            assert_eq!(sizes, want, "keep={keep} room={room} min_batch={min_batch}");
            assert!(!c.into_buffer().is_empty());
        }
    }

    #[test]
    fn batches_stored_elsewhere_unpin_their_bytes_for_the_reader() {
        let d = data(12, 30 << 20);
        let p = ChunkerParams::DEFAULT;
        let want = chunk_sizes(&p, 6, &d);
        let block = 1 << 20;
        let mut c = ParallelChunker::new(&p, 6, &d[..], 1)
            .unwrap()
            .with_block(block)
            .with_room(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, OwnedBatch)>(4);
        let checker = std::thread::spawn({
            let d = d.clone();
            move || {
                let mut sizes = Vec::new();
                for (at, b) in rx {
                    // slower than the reader: it waits for room
                    std::thread::sleep(Duration::from_millis(2));
                    check_batch(&d, at, &b);
                    sizes.extend(b.spans.iter().map(|s| s.size));
                }
                sizes
            }
        });
        let mut off = 0;
        while let Some(b) = c.next_owned_batch().unwrap() {
            let len = b.len();
            tx.send((off, b)).unwrap();
            off += len;
        }
        drop(tx);
        assert_eq!(checker.join().unwrap(), want);
        // one buffer all along, of the size asked for
        assert_eq!(c.into_buffer().len(), 2 * block + p.max_chunk_size());
    }

    #[test]
    fn fixed_params_have_no_parallel_form() {
        let f = ChunkerParams::Fixed {
            block_size: 4096,
            header_size: 0,
        };
        assert!(parallel_chunk_sizes(&f, 0, b"x", 2).is_none());
    }

    #[test]
    fn empty_and_short_inputs() {
        for p in PARAMS {
            assert_eq!(parallel_chunk_sizes(&p, 1, &[], 2), Some(vec![]));
            assert_eq!(parallel_chunk_sizes(&p, 1, &[9; 100], 2), Some(vec![100]));
        }
    }

    #[test]
    fn read_errors_end_the_chunker() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let mut c = ParallelChunker::new(&ChunkerParams::DEFAULT, 0, Failing, 2).unwrap();
        assert!(c.next_batch().is_err());
        assert!(c.next_batch().unwrap().is_none());
        // the failed block may have been partly read into the buffer: it counts as read
        assert_eq!(c.bytes_read(), c.block as u64);
    }

    #[test]
    fn bytes_read_bounds_what_the_buffer_holds() {
        let d = data(3, 5 << 20);
        let mut c = ParallelChunker::new(&ChunkerParams::DEFAULT, 0, &d[..], 1)
            .unwrap()
            .with_block(1 << 20)
            .with_buffer(vec![0xee; 32 << 20]);
        assert_eq!(c.bytes_read(), 0);
        let first = c.next_batch().unwrap().unwrap().data.len() as u64;
        assert!(c.bytes_read() >= first && c.bytes_read() % (1 << 20) == 0);
        while c.next_batch().unwrap().is_some() {}
        assert_eq!(c.bytes_read(), d.len() as u64);
        let buf = c.into_buffer();
        assert_eq!(
            buf.len(),
            32 << 20,
            "a buffer large enough is used as it is"
        );
        assert_eq!(&buf[..d.len()], &d[..]);
        assert!(buf[d.len()..].iter().all(|&b| b == 0xee));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn equals_sequential(
            seed in any::<u32>(),
            dseed in any::<u64>(),
            len in 0usize..300_000,
            sizes in prop::collection::vec(1usize..70_000, 1..6),
            threads in 1usize..4,
            block in 0usize..200_000,
            which in 0usize..2,
        ) {
            let p = PARAMS[which];
            let d = data(dseed, len);
            let want = chunk_sizes(&p, seed, &d);
            let mut c = ParallelChunker::new(&p, seed, Dribble::new(&d, sizes), threads)
                .unwrap()
                .with_block(block);
            c.par_min = 512;
            prop_assert_eq!(batched(c, &d), want);
        }
    }
}
