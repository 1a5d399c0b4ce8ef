//! borg's chunkers (`_chunker.c`, `chunker.pyx`) with bit-identical cut points, so content
//! chunked here deduplicates against archives borg made with the same seed and parameters.
//!
//! The buzhash cut rule, stated over the whole input: a chunk starting at `s` is cut at the
//! first `p >= s + 2^min_exp` whose window `[p, p + window)` hashes with the low `mask_bits`
//! bits clear *and* still has at least one byte after it below `limit = min(len, s + 2^max_exp)`;
//! without such a window the chunk ends at `limit`. When fewer than
//! `2^min_exp + window + 1` bytes remain, they form the last chunk whole. Cuts therefore do
//! not depend on how the input is read.

mod arena;
mod buzhash;
mod parallel;
mod params;
mod source;
pub mod sparse;
mod speculate;
#[cfg(test)]
pub(crate) mod testdata;

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};

pub use buzhash::{buzhash, buzhash_update};
pub use parallel::{parallel_chunk_sizes, Batch, OwnedBatch, ParallelChunker, Span};
pub use params::{ChunkerParams, ParamsError};
pub use source::{BlockSource, PositionalFile};
pub use sparse::{sparse_map, Range};

use buzhash::Tables;

/// Where a chunk's bytes came from (borg's `CH_DATA`, `CH_ALLOC`, `CH_HOLE`). borg stores
/// zero chunks like any other; the distinction only lets callers hash zeros once and
/// skip reading holes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Allocation {
    /// Read, not all zero; `Chunk::data` holds the bytes.
    Data,
    /// Read, but all zero; `Chunk::data` is empty.
    Alloc,
    /// Inside a hole of a sparse file, not read; `Chunk::data` is empty.
    Hole,
}

impl Allocation {
    /// Of bytes read: `Alloc` when they are all zero, else `Data`.
    pub fn of(bytes: &[u8]) -> Allocation {
        match is_zero(bytes) {
            true => Allocation::Alloc,
            false => Allocation::Data,
        }
    }
}

/// One chunk of input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The bytes, empty unless `allocation` is `Data`.
    pub data: Vec<u8>,
    /// Length of the chunk in the input.
    pub size: usize,
    pub allocation: Allocation,
}

/// True when every byte is zero (borg: `zeros.startswith(data)`).
pub fn is_zero(data: &[u8]) -> bool {
    // OR-folding fixed blocks vectorises; stop at the first non-zero block.
    let mut blocks = data.chunks_exact(256);
    for b in blocks.by_ref() {
        if b.iter().fold(0u8, |acc, &x| acc | x) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&x| x == 0)
}

/// The buzhash cut rule for one parameter set and seed.
#[derive(Clone)]
struct Cutter {
    tables: Tables,
    min: usize,
    max: usize,
    mask: u32,
    window: usize,
    /// The hash of an all-zero window, when it is no cut: then no window inside a run of
    /// zeros is one, and the search leaps over long runs (see [`Cutter::scan`]).
    zero_hash: Option<u32>,
}

/// Zero runs are looked for at multiples of this many bytes (one 8-byte load each on
/// other data), and only runs longer than a window and this are leapt over.
const ZERO_PROBE: usize = 16 << 10;
/// How far ahead of the search zero runs are looked for.
const ZERO_STRETCH: usize = 256 << 10;

/// The start of the first all-zero `ZERO_PROBE` block at a multiple of `ZERO_PROBE` in
/// `data[from..]`.
fn zero_block(data: &[u8], from: usize) -> Option<usize> {
    let mut at = from.next_multiple_of(ZERO_PROBE);
    while at + ZERO_PROBE <= data.len() {
        let head = u64::from_ne_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        if head == 0 && is_zero(&data[at..at + ZERO_PROBE]) {
            return Some(at);
        }
        at += ZERO_PROBE;
    }
    None
}

/// The end of the run of zeros starting at `from`.
fn zero_run_end(data: &[u8], from: usize) -> usize {
    let mut at = from;
    for block in data[from..].chunks(ZERO_PROBE) {
        if !is_zero(block) {
            return at + block.iter().position(|&b| b != 0).unwrap_or(0);
        }
        at += block.len();
    }
    at
}

impl Cutter {
    /// `None` unless `params` are valid buzhash parameters.
    fn new(params: &ChunkerParams, seed: u32) -> Option<Cutter> {
        match *params {
            ChunkerParams::Buzhash {
                min_exp,
                max_exp,
                mask_bits,
                window,
            } if params.validate().is_ok() => {
                let tables = Tables::new(seed, window as usize);
                let mask = ((1u64 << mask_bits) - 1) as u32;
                let zero = tables.zero_hash();
                Some(Cutter {
                    tables,
                    min: 1 << min_exp,
                    max: 1 << max_exp,
                    mask,
                    window: window as usize,
                    zero_hash: (zero & mask != 0).then_some(zero),
                })
            }
            _ => None,
        }
    }

    /// Fewer bytes than this left: they are the last chunk.
    fn need(&self) -> usize {
        self.min + self.window + 1
    }

    /// About how long a chunk is: the minimum plus the mean distance to a hash hit.
    fn typical_len(&self) -> usize {
        self.min + self.mask as usize + 1
    }

    /// The first window at or after `p` (whose hash is `h`) that is a cut, else where the
    /// search stopped. Windows wholly inside a long run of zeros hash to `zero_hash`, which
    /// is no cut: the search skips them and goes on from the last of them, so a disk
    /// image's empty extents cost a memory scan instead of a hash per byte. Runs are looked
    /// for only a stretch ahead of the search, in data it is about to read anyway.
    fn scan(&self, data: &[u8], mut p: usize, mut h: u32) -> Result<usize, usize> {
        let Some(zero) = self.zero_hash else {
            return self.tables.scan(data, p, h, self.mask).map_err(|(q, _)| q);
        };
        let w = self.window;
        loop {
            let end = (p + ZERO_STRETCH).min(data.len());
            let mut run = None;
            let mut from = p;
            while let Some(a) = zero_block(&data[..end], from) {
                let b = zero_run_end(data, a);
                if b - a >= w + ZERO_PROBE {
                    run = Some((a, b));
                    break;
                }
                from = b;
            }
            // the windows up to the run (or the stretch's end) as usual
            let upto = match run {
                Some((a, _)) => a + w,
                None => (end + w).min(data.len()),
            };
            match self.tables.scan(&data[..upto], p, h, self.mask) {
                Ok(cut) => return Ok(cut),
                Err((q, hq)) => match run {
                    // on from the run's last all-zero window
                    Some((_, b)) => (p, h) = (b - w, zero),
                    None if upto == data.len() => return Err(q),
                    None => (p, h) = (q, hq),
                },
            }
        }
    }

    /// Where the chunk starting at `s` ends, if `data` decides it: `data` is all of the
    /// input when `eof`, else what has been read of it so far. Windows before `skip` are
    /// known not to be cuts (an earlier call's [`End::Open`]); pass 0 when nothing is known.
    fn end_of(&self, data: &[u8], s: usize, skip: usize, eof: bool) -> End {
        let rem = data.len() - s;
        if rem < self.need() {
            // Too little for a hash hit: the last chunk at the end, else wait for data.
            return match eof && rem > 0 {
                true => End::At(data.len()),
                false => End::Open {
                    scanned: skip.max(s),
                },
            };
        }
        let limit = data.len().min(s + self.max);
        let chunk = &data[s..limit];
        let p = (skip.max(s) - s).max(self.min);
        let found = if p + self.window < chunk.len() {
            let h = self.tables.hash(&chunk[p..p + self.window]);
            self.scan(chunk, p, h)
        } else {
            Err(p)
        };
        match found {
            Ok(cut) => End::At(s + cut),
            Err(_) if eof || limit == s + self.max => End::At(limit),
            Err(q) => End::Open { scanned: s + q },
        }
    }
}

/// What the buffered input tells about where a chunk ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// At this offset.
    At(usize),
    /// Not yet: no window in `[start + min, scanned)` is a cut.
    Open { scanned: usize },
}

/// Cuts whole inputs held in memory where the buzhash chunkers cut them as streams, its
/// tables built once for many inputs (a group of small files read whole).
#[derive(Clone)]
pub struct SliceCutter(Cutter);

impl SliceCutter {
    /// `None` unless `params` are valid buzhash parameters.
    pub fn new(params: &ChunkerParams, seed: u32) -> Option<SliceCutter> {
        Cutter::new(params, seed).map(SliceCutter)
    }

    /// Sizes of the consecutive chunks of `data`, one whole input (none when it is empty).
    pub fn sizes(&self, data: &[u8]) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut start = 0;
        while let End::At(end) = self.0.end_of(data, start, 0, true) {
            sizes.push(end - start);
            start = end;
        }
        sizes
    }
}

/// Sizes of the consecutive chunks `params` cut `data` into (no sparse handling: the fixed
/// chunker yields its header and then blocks). Used for in-memory streams such as the
/// archive's items.
///
/// # Panics
/// If `params` fail [`ChunkerParams::validate`] (the parser never produces such values).
pub fn chunk_sizes(params: &ChunkerParams, seed: u32, data: &[u8]) -> Vec<usize> {
    if let Err(e) = params.validate() {
        panic!("chunk_sizes: {e}");
    }
    let mut sizes = Vec::new();
    match *params {
        ChunkerParams::Buzhash { .. } => {
            if let Some(c) = SliceCutter::new(params, seed) {
                sizes = c.sizes(data);
            }
        }
        ChunkerParams::Fixed {
            block_size,
            header_size,
        } => {
            let (block, header) = (block_size as usize, header_size as usize);
            let mut rest = data.len();
            let mut header_left = header.min(rest);
            while header_left > 0 {
                let n = header_left.min(block);
                sizes.push(n);
                header_left -= n;
                rest -= n;
            }
            while rest > 0 {
                let n = rest.min(block);
                sizes.push(n);
                rest -= n;
            }
        }
    }
    sizes
}

/// How much the buzhash chunker asks a reader for at once: large enough to keep system calls
/// rare, small next to the buffer so that little is moved when the buffer is compacted.
fn read_block(max: usize) -> usize {
    (max / 8).clamp(64 << 10, 1 << 20)
}

/// The buzhash chunker's input window. The buffer is allocated once (twice the largest chunk,
/// so compaction moves at most about one byte per byte consumed, and usually far less); a data
/// chunk is copied out of it once, into a vector of its exact size.
struct BuzState {
    cutter: Cutter,
    /// Read input; `buf[start..]` is the current chunk and the bytes after it.
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl BuzState {
    /// Reads one more block, compacting first when the spare room is too small.
    fn fill<R: Read>(&mut self, reader: &mut R) -> io::Result<()> {
        let block = read_block(self.cutter.max);
        if self.buf.capacity() - self.buf.len() < block {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        let want = block.min(self.buf.capacity() - self.buf.len());
        if read_up_to(reader, &mut self.buf, want)? < want {
            self.eof = true;
        }
        Ok(())
    }

    /// Cuts the first `n` bytes after `start` off as a chunk.
    fn take(&mut self, n: usize) -> Chunk {
        let bytes = &self.buf[self.start..self.start + n];
        let chunk = if is_zero(bytes) {
            Chunk {
                data: Vec::new(),
                size: n,
                allocation: Allocation::Alloc,
            }
        } else {
            Chunk {
                data: bytes.to_vec(),
                size: n,
                allocation: Allocation::Data,
            }
        };
        self.start += n;
        chunk
    }
}

struct FixedState {
    block: usize,
    header: u64,
    /// The ranges still to do, as borg's `fmap`.
    ranges: VecDeque<Range>,
    /// The range in progress: bytes left and whether it is data.
    current: Option<(u64, bool)>,
    /// Input offset of the next byte.
    offset: u64,
    /// A buffer whose bytes turned out to be zero, reused for the next block.
    spare: Vec<u8>,
    /// Whether a chunk has been produced (a sparse map may only be set before that).
    started: bool,
}

enum State {
    Buzhash(Box<BuzState>),
    Fixed(FixedState),
    /// The parameters were invalid: report that once.
    Invalid(ParamsError),
    Done,
}

/// Seeks a reader; set only once the reader is known to implement `Seek`.
type SeekFn<R> = fn(&mut R, SeekFrom) -> io::Result<u64>;

/// A streaming chunker over any reader, with memory bounded by the largest chunk plus one
/// read block. Yields `Err` once on a read error (or invalid parameters) and then ends.
pub struct Chunker<R> {
    reader: R,
    state: State,
    seek: Option<SeekFn<R>>,
}

/// borg's fixed-chunker map without sparse information: an optional header range, then data
/// to the end.
fn plain_map(header: u64) -> VecDeque<Range> {
    const ALL: u64 = 1 << 62;
    if header > 0 {
        VecDeque::from([(0, header, true), (header, ALL, true)])
    } else {
        VecDeque::from([(0, ALL, true)])
    }
}

impl<R: Read> Chunker<R> {
    pub fn new(params: &ChunkerParams, seed: u32, reader: R) -> Self {
        let state = match params.validate() {
            Err(e) => State::Invalid(e),
            Ok(()) => match *params {
                ChunkerParams::Buzhash { .. } => match Cutter::new(params, seed) {
                    Some(cutter) => State::Buzhash(Box::new(BuzState {
                        buf: Vec::with_capacity(2 * cutter.max),
                        cutter,
                        start: 0,
                        eof: false,
                    })),
                    None => State::Done,
                },
                ChunkerParams::Fixed {
                    block_size,
                    header_size,
                } => State::Fixed(FixedState {
                    block: block_size as usize,
                    header: header_size.into(),
                    ranges: plain_map(header_size.into()),
                    current: None,
                    offset: 0,
                    spare: Vec::new(),
                    started: false,
                }),
            },
        };
        Chunker {
            reader,
            state,
            seek: None,
        }
    }

    /// Gives back the reader.
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn next_buzhash(reader: &mut R, st: &mut BuzState) -> io::Result<Option<Chunk>> {
        // How far past the chunk's start the search got before the data ran out (relative,
        // as a fill may move the chunk to the front of the buffer).
        let mut scanned = 0;
        loop {
            match st
                .cutter
                .end_of(&st.buf, st.start, st.start + scanned, st.eof)
            {
                End::At(end) => return Ok(Some(st.take(end - st.start))),
                // At the end of input a chunk is always decided; nothing is left.
                End::Open { .. } if st.eof => return Ok(None),
                End::Open { scanned: at } => {
                    scanned = at - st.start;
                    st.fill(reader)?;
                }
            }
        }
    }

    fn next_fixed(
        reader: &mut R,
        seek: Option<SeekFn<R>>,
        st: &mut FixedState,
    ) -> io::Result<Option<Chunk>> {
        loop {
            let (left, is_data) = match st.current {
                Some(cur) if cur.0 > 0 => cur,
                _ => {
                    let Some((start, len, is_data)) = st.ranges.pop_front() else {
                        return Ok(None);
                    };
                    if start != st.offset {
                        let seek = seek.ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::Unsupported,
                                "chunker: sparse map needs a seekable input",
                            )
                        })?;
                        seek(reader, SeekFrom::Start(start))?;
                        st.offset = start;
                    }
                    st.current = Some((len, is_data));
                    continue;
                }
            };
            let wanted = left.min(st.block as u64) as usize;
            let (got, chunk) = if is_data {
                let mut buf = std::mem::take(&mut st.spare);
                buf.clear();
                let got = read_up_to(reader, &mut buf, wanted)?;
                let chunk = if is_zero(&buf) {
                    st.spare = buf;
                    Chunk {
                        data: Vec::new(),
                        size: got,
                        allocation: Allocation::Alloc,
                    }
                } else {
                    Chunk {
                        data: buf,
                        size: got,
                        allocation: Allocation::Data,
                    }
                };
                (got, chunk)
            } else {
                let seek = seek.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::Unsupported,
                        "chunker: holes need a seekable input",
                    )
                })?;
                let pos = seek(reader, SeekFrom::Current(wanted as i64))?;
                let got = pos.saturating_sub(st.offset).min(wanted as u64) as usize;
                (
                    got,
                    Chunk {
                        data: Vec::new(),
                        size: got,
                        allocation: Allocation::Hole,
                    },
                )
            };
            st.started = true;
            if got < wanted {
                // Short read: the input ended (or shrank since the map was made).
                st.ranges.clear();
                st.current = Some((0, is_data));
            } else {
                st.offset += got as u64;
                st.current = Some((left - got as u64, is_data));
            }
            return Ok((got > 0).then_some(chunk));
        }
    }
}

impl<R: Read + Seek> Chunker<R> {
    /// Uses a data/hole map of the input (see [`sparse_map`]; ranges from offset 0) so the
    /// fixed chunker emits `Hole` chunks for holes without reading them, like borg's
    /// `--sparse`. Block alignment restarts at every range; the header stays one range.
    /// Has no effect on the buzhash chunker or once chunks have been produced.
    pub fn with_sparse_map(mut self, map: Vec<Range>) -> Self {
        if let State::Fixed(st) = &mut self.state {
            if !st.started {
                // borg maps the body from the header's end on; clipping the whole-file map
                // there gives the same ranges.
                let header = st.header;
                let mut ranges = VecDeque::with_capacity(map.len() + 1);
                if header > 0 {
                    ranges.push_back((0, header, true));
                }
                for (start, len, is_data) in map {
                    let end = start.saturating_add(len);
                    let start = start.max(header);
                    if end > start {
                        ranges.push_back((start, end - start, is_data));
                    }
                }
                st.ranges = ranges;
                self.seek = Some(|r: &mut R, pos| r.seek(pos));
            }
        }
        self
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = match &mut self.state {
            State::Done => return None,
            State::Invalid(e) => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, e.clone());
                self.state = State::Done;
                return Some(Err(e));
            }
            State::Buzhash(st) => Self::next_buzhash(&mut self.reader, st),
            State::Fixed(st) => Self::next_fixed(&mut self.reader, self.seek, st),
        };
        match r {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => {
                self.state = State::Done;
                None
            }
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }
}

/// Appends up to `n` bytes to `buf`, fewer only at end of input; returns how many.
/// (`read_to_end` reads into the spare capacity without zeroing it first.)
fn read_up_to<R: Read>(reader: &mut R, buf: &mut Vec<u8>, n: usize) -> io::Result<usize> {
    buf.reserve(n);
    reader.by_ref().take(n as u64).read_to_end(buf)
}

#[cfg(test)]
mod tests {
    use super::testdata::{mixed, Dribble};
    use super::*;
    use proptest::prelude::*;

    fn data(seed: u64, len: usize) -> Vec<u8> {
        mixed(seed, len, 5000)
    }

    fn streamed<R: Read>(c: Chunker<R>, input: &[u8]) -> Vec<usize> {
        let mut off = 0;
        c.map(|r| {
            let ch = r.unwrap();
            let bytes = &input[off..off + ch.size];
            match ch.allocation {
                Allocation::Data => {
                    assert_eq!(ch.data, bytes);
                    assert!(!is_zero(bytes));
                }
                Allocation::Alloc => {
                    assert!(ch.data.is_empty());
                    assert!(is_zero(bytes));
                }
                Allocation::Hole => panic!("hole without a sparse map"),
            }
            off += ch.size;
            ch.size
        })
        .collect()
    }

    const SMALL: ChunkerParams = ChunkerParams::Buzhash {
        min_exp: 6,
        max_exp: 9,
        mask_bits: 6,
        window: 63,
    };

    fn random(seed: u64, len: usize) -> Vec<u8> {
        // the low-entropy stretches of `mixed` hold no zero, so every byte is data
        mixed(seed, len * 6, 1)
            .chunks(6)
            .map(|c| c[3] ^ c[4].rotate_left(3) ^ c[5])
            .collect()
    }

    /// Cuts of `data` by `c`, in memory.
    fn cuts(c: &Cutter, data: &[u8]) -> Vec<usize> {
        let mut start = 0;
        let mut ends = Vec::new();
        while let End::At(end) = c.end_of(data, start, 0, true) {
            ends.push(end);
            start = end;
        }
        ends
    }

    #[test]
    fn leaping_zero_runs_keeps_every_cut() {
        // random stretches and zero runs around the leap's thresholds, at odd offsets
        let mut d = Vec::new();
        let mut seed = 7;
        let w = 4095;
        for run in [
            1,
            w,
            ZERO_PROBE,
            w + ZERO_PROBE - 1,
            w + ZERO_PROBE,
            2 * ZERO_PROBE + w + 1,
            ZERO_STRETCH + 3,
            300_001,
            3 << 20,
        ] {
            seed += 1;
            d.extend(random(seed, 70_001 + run % 9_973));
            d.resize(d.len() + run, 0);
        }
        d.extend(random(99, 5000));
        for (params, seed) in [
            (ChunkerParams::DEFAULT, 0),
            (ChunkerParams::DEFAULT, 0x1234_5678),
            ("10,23,16,4095".parse().unwrap(), 5),
            ("12,20,14,63".parse().unwrap(), 9),
        ] {
            let leaping = Cutter::new(&params, seed).unwrap();
            assert!(leaping.zero_hash.is_some(), "{params} seed {seed}");
            let plain = Cutter {
                zero_hash: None,
                ..leaping.clone()
            };
            assert_eq!(cuts(&leaping, &d), cuts(&plain, &d), "{params} seed {seed}");
            // and wherever a read happens to end
            for end in [d.len() / 3, d.len() / 2 + 4321] {
                let prefix = &d[..end];
                for s in [0, 65_536, 200_000] {
                    assert_eq!(
                        leaping.end_of(prefix, s, 0, false),
                        plain.end_of(prefix, s, 0, false),
                        "{params} seed {seed} end {end} start {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn sizes_obey_the_bounds() {
        let d = data(3, 300_000);
        for p in [
            SMALL,
            ChunkerParams::Buzhash {
                min_exp: 10,
                max_exp: 16,
                mask_bits: 12,
                window: 63,
            },
        ] {
            let sizes = chunk_sizes(&p, 42, &d);
            assert_eq!(sizes.iter().sum::<usize>(), d.len());
            let (min, max) = match p {
                ChunkerParams::Buzhash {
                    min_exp, max_exp, ..
                } => (1 << min_exp, 1 << max_exp),
                _ => unreachable!(),
            };
            for &s in &sizes[..sizes.len() - 1] {
                assert!((min..=max).contains(&s), "{s}");
            }
        }
    }

    #[test]
    fn short_inputs_are_one_chunk() {
        let p = SMALL; // need = 64 + 63 + 1 = 128
        assert!(chunk_sizes(&p, 0, &[]).is_empty());
        assert_eq!(chunk_sizes(&p, 0, &[1; 127]), vec![127]);
        assert_eq!(
            streamed(Chunker::new(&p, 0, &[1u8; 127][..]), &[1; 127]),
            vec![127]
        );
        assert_eq!(
            streamed(Chunker::new(&p, 0, &[][..]), &[]),
            Vec::<usize>::new()
        );
        let f = ChunkerParams::Fixed {
            block_size: 64,
            header_size: 100,
        };
        assert_eq!(chunk_sizes(&f, 0, &[1; 300]), vec![64, 36, 64, 64, 64, 8]);
        assert_eq!(chunk_sizes(&f, 0, &[1; 70]), vec![64, 6]);
    }

    #[test]
    fn zero_runs_are_alloc() {
        let mut d = vec![0u8; 5000];
        d.extend(data(9, 3000).iter().map(|b| b | 1));
        let chunks: Vec<Chunk> = Chunker::new(&SMALL, 7, &d[..])
            .map(Result::unwrap)
            .collect();
        assert!(chunks.iter().any(|c| c.allocation == Allocation::Alloc));
        assert!(chunks.iter().any(|c| c.allocation == Allocation::Data));
        let f = ChunkerParams::Fixed {
            block_size: 1000,
            header_size: 0,
        };
        let kinds: Vec<Allocation> = Chunker::new(&f, 0, &d[..])
            .map(|c| c.unwrap().allocation)
            .collect();
        assert_eq!(kinds[..5], [Allocation::Alloc; 5]);
        assert_eq!(kinds[5..], [Allocation::Data; 3]);
    }

    #[test]
    fn invalid_params_report_once() {
        let bad = ChunkerParams::Buzhash {
            min_exp: 10,
            max_exp: 10,
            mask_bits: 10,
            window: 63,
        };
        let mut c = Chunker::new(&bad, 0, &b"abc"[..]);
        assert_eq!(
            c.next().unwrap().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(c.next().is_none());
    }

    #[test]
    fn read_errors_end_the_stream() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let mut c = Chunker::new(&ChunkerParams::DEFAULT, 0, Failing);
        assert!(c.next().unwrap().is_err());
        assert!(c.next().is_none());
    }

    #[test]
    fn sparse_map_drives_the_fixed_chunker() {
        let mut d = vec![0u8; 10_000];
        d[..3000].fill(1);
        d[7000..].fill(2);
        let f = ChunkerParams::Fixed {
            block_size: 2048,
            header_size: 1000,
        };
        let map = vec![(0, 3000, true), (3000, 4000, false), (7000, 3000, true)];
        let got: Vec<(usize, Allocation)> = Chunker::new(&f, 0, io::Cursor::new(&d))
            .with_sparse_map(map)
            .map(|c| c.map(|c| (c.size, c.allocation)).unwrap())
            .collect();
        use Allocation::*;
        assert_eq!(
            got,
            vec![
                (1000, Data),
                (2000, Data),
                (2048, Hole),
                (1952, Hole),
                (2048, Data),
                (952, Data)
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn streaming_equals_in_memory(
            seed in any::<u32>(),
            dseed in any::<u64>(),
            len in 0usize..40_000,
            sizes in prop::collection::vec(1usize..3000, 1..8),
            which in 0usize..4,
        ) {
            let params = [
                SMALL,
                ChunkerParams::Buzhash { min_exp: 7, max_exp: 12, mask_bits: 8, window: 31 },
                ChunkerParams::Fixed { block_size: 700, header_size: 0 },
                ChunkerParams::Fixed { block_size: 64, header_size: 333 },
            ][which];
            let d = data(dseed, len);
            let expect = chunk_sizes(&params, seed, &d);
            let got = streamed(Chunker::new(&params, seed, Dribble::new(&d, sizes)), &d);
            prop_assert_eq!(got, expect);
        }
    }

    #[test]
    fn streaming_equals_in_memory_large_chunks() {
        let d = data(11, 3 << 20);
        for params in [
            ChunkerParams::ITEMS,
            ChunkerParams::Buzhash {
                min_exp: 16,
                max_exp: 20,
                mask_bits: 17,
                window: 4095,
            },
        ] {
            let expect = chunk_sizes(&params, 5, &d);
            for sizes in [vec![1 << 20], vec![4096, 1, 65_537], vec![777]] {
                let got = streamed(Chunker::new(&params, 5, Dribble::new(&d, sizes)), &d);
                assert_eq!(got, expect);
            }
        }
    }
}
