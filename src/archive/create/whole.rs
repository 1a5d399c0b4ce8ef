//! Groups of small and medium files read whole and stored together. Hashing is the largest
//! cost of a backup, and BLAKE2b hashes several inputs side by side but never one input
//! faster: a file of one chunk stored alone fills two lanes (its id and its MAC), while the
//! chunks of a group's files fill all four (see `ChunkStore::store_many`). Each file is
//! still cut where borg cuts it, as an input of its own.

use std::io::Seek;
use std::ops::Range;
use std::sync::atomic::Ordering;

use super::file::{open_file, process_file, skipped, OpenFile, Opened};
use super::input::store_chunks;
use super::{FileJob, FileOutcome, Shared};
use crate::archive::bufpool;
use crate::archive::dropbehind::DropBehind;
use crate::archive::inflight::{store_inputs, Tracker};
use crate::archive::store::StoreError;
use crate::format::chunker::{is_zero, Allocation, SliceCutter};
use crate::fsutil::read_full;

/// Regular files up to this size go into groups and are read whole.
pub(super) const WHOLE_FILE: u64 = 4 << 20;
/// Bytes of file contents a group holds before they are stored (the walker makes groups
/// about this large; a file that grew since may make one larger).
pub(super) const READ_BYTES: u64 = 8 << 20;

/// A file read whole, waiting to be stored with the others.
struct Read {
    /// The file's place in its job.
    at: usize,
    open: Box<OpenFile>,
    bytes: Range<usize>,
}

/// The files of one job, read into one buffer and stored together.
struct Group<'a> {
    sh: &'a Shared,
    cutter: SliceCutter,
    buf: Vec<u8>,
    /// Bytes of `buf` the files read so far fill, and the most they filled.
    filled: usize,
    high: usize,
    pending: Vec<Read>,
    outcomes: Vec<Option<FileOutcome>>,
}

/// Processes a job's files in order: those small enough are read whole and stored
/// together, the others as single files are. Once `stop` tells that the run failed, the
/// files left get `stopped`'s outcome instead of being read.
pub(super) fn process_group(
    sh: &Shared,
    files: &[FileJob],
    stop: impl Fn() -> bool,
    stopped: impl Fn() -> FileOutcome,
) -> Result<Vec<FileOutcome>, StoreError> {
    let Some(cutter) = SliceCutter::new(&sh.opts.chunker, sh.seed) else {
        // fixed-size blocks: read as a stream, with its sparse map
        return files
            .iter()
            .map(|f| match stop() {
                true => Ok(stopped()),
                false => process_file(sh, f),
            })
            .collect();
    };
    let mut group = Group {
        sh,
        cutter,
        buf: Vec::new(),
        filled: 0,
        high: 0,
        pending: Vec::new(),
        outcomes: files.iter().map(|_| None).collect(),
    };
    let result = group.run(files, stop, stopped);
    if group.buf.capacity() > 0 {
        bufpool::keep(std::mem::take(&mut group.buf), group.high as u64);
    }
    result
}

impl Group<'_> {
    fn run(
        &mut self,
        files: &[FileJob],
        stop: impl Fn() -> bool,
        stopped: impl Fn() -> FileOutcome,
    ) -> Result<Vec<FileOutcome>, StoreError> {
        for (at, job) in files.iter().enumerate() {
            if stop() {
                self.outcomes[at] = Some(stopped());
                continue;
            }
            let open = match open_file(self.sh, job) {
                Opened::Done(outcome) => {
                    self.outcomes[at] = Some(*outcome);
                    continue;
                }
                Opened::Read(open) => open,
            };
            let size = open.st.len();
            if open.special || size > WHOLE_FILE {
                self.outcomes[at] = Some(open.read_streaming(self.sh)?);
                continue;
            }
            self.read(at, open, size as usize)?;
        }
        self.store()?;
        Ok(self
            .outcomes
            .drain(..)
            .map(|o| o.expect("an outcome for every file"))
            .collect())
    }

    /// Reads the file at `at` (`size` bytes when opened) into the buffer, after storing
    /// what the buffer holds if it would grow beyond [`READ_BYTES`].
    fn read(&mut self, at: usize, open: Box<OpenFile>, size: usize) -> Result<(), StoreError> {
        if let Some(e) = self.cancelled() {
            self.outcomes[at] = Some(skipped('E', format!("{}: read: {e}", open.shown)));
            return Ok(());
        }
        if self.filled + size > READ_BYTES as usize {
            self.store()?;
        }
        // one byte more than fstat said: a file that grew since is streamed instead
        let (from, to) = (self.filled, self.filled + size + 1);
        if self.buf.len() < to {
            if self.buf.is_empty() {
                self.buf = bufpool::take().unwrap_or_default();
            }
            if self.buf.len() < to {
                self.buf.resize(to, 0);
            }
        }
        let read = read_full(&mut &open.file, &mut self.buf[from..to]);
        drop(DropBehind::new(std::os::fd::AsFd::as_fd(&open.file)));
        let n = match read {
            Ok(n) if n <= size => n,
            Ok(_) => {
                let outcome = match (&open.file).rewind() {
                    Ok(()) => open.read_streaming(self.sh)?,
                    Err(e) => skipped('E', format!("{}: seek: {e}", open.shown)),
                };
                self.outcomes[at] = Some(outcome);
                return Ok(());
            }
            Err(e) => {
                self.outcomes[at] = Some(skipped('E', format!("{}: read: {e}", open.shown)));
                return Ok(());
            }
        };
        self.sh
            .store
            .stats
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
        self.filled += n;
        self.high = self.high.max(to);
        self.pending.push(Read {
            at,
            open,
            bytes: from..from + n,
        });
        Ok(())
    }

    /// The error a read ends with once the run is cancelled.
    fn cancelled(&self) -> Option<&'static str> {
        let cancel = self.sh.opts.cancel.as_deref()?;
        cancel
            .load(Ordering::Relaxed)
            .then_some("interrupted by a signal")
    }

    /// Stores the files read so far, each cut as an input of its own, all their chunks
    /// together, and settles their outcomes.
    fn store(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut chunks = Vec::new();
        let mut counts = Vec::with_capacity(pending.len());
        for r in &pending {
            let data = &self.buf[r.bytes.clone()];
            let sizes = self.cutter.sizes(data);
            let mut at = 0;
            for &size in &sizes {
                let bytes = &data[at..at + size];
                at += size;
                chunks.push(match is_zero(bytes) {
                    true => (Allocation::Alloc, size, &[][..]),
                    false => (Allocation::Data, size, bytes),
                });
            }
            counts.push(sizes.len());
        }
        let trackers: Vec<Tracker> = match &self.sh.inflight {
            Some(f) => pending
                .iter()
                .map(|r| f.register(r.open.item.clone()))
                .collect(),
            None => Vec::new(),
        };
        let refs = match trackers.is_empty() {
            true => store_chunks(&self.sh.store, &chunks)?,
            false => store_inputs(&trackers, &counts, || store_chunks(&self.sh.store, &chunks))?,
        };
        let mut refs = refs.into_iter();
        for (i, (r, n)) in pending.into_iter().zip(counts).enumerate() {
            let input = trackers.get(i).map(Tracker::id);
            let mine = refs.by_ref().take(n).collect();
            self.outcomes[r.at] = Some(r.open.finish(self.sh, Ok(mine), input));
        }
        self.filled = 0;
        Ok(())
    }
}
