//! Groups of small and medium files read whole and stored together. Hashing is the largest
//! cost of a backup, and BLAKE2b hashes several inputs side by side but never one input
//! faster: a file of one chunk stored alone fills two lanes (its id and its MAC), while the
//! chunks of a group's files fill all four (see `ChunkStore::store_many`). Each file is
//! still cut where borg cuts it, as an input of its own.

use std::io::Seek;
use std::ops::Range;

use super::file::{open_file, process_file, skipped, OpenFile, Opened};
use super::input::{store_chunks, InputCtx};
use super::{FileJob, FileOutcome, Shared};
use crate::archive::bufpool;
use crate::archive::dropbehind::DropBehind;
use crate::archive::inflight::{store_inputs, Tracker};
use crate::archive::store::StoreError;
use crate::format::chunker::{Allocation, SliceCutter};
use crate::fsutil::read_full;

/// Regular files up to this size go into groups and are read whole.
pub const WHOLE_FILE: u64 = 4 << 20;
/// Bytes of file contents a group holds before they are stored (the walker makes groups
/// about this large; a file that grew since may make one larger).
pub const READ_BYTES: u64 = 8 << 20;

/// A group of files ends at this many files, or before it holds more than [`READ_BYTES`].
pub const GROUP_FILES: usize = 32;

/// Files up to [`WHOLE_FILE`] gathered, in walk order, into the groups a worker reads
/// whole: a group ends at [`GROUP_FILES`] files, or before it would hold more than
/// [`READ_BYTES`].
pub struct FileGroups<T> {
    files: Vec<T>,
    bytes: u64,
}

impl<T> Default for FileGroups<T> {
    fn default() -> Self {
        FileGroups {
            files: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> FileGroups<T> {
    /// Adds a file of `len` bytes; returns the group this completes, if any: the group
    /// before when the file does not fit it, or the group with the file when that makes
    /// it full.
    pub fn push(&mut self, file: T, len: u64) -> Option<Vec<T>> {
        let before = (self.bytes + len > READ_BYTES).then(|| self.take());
        self.files.push(file);
        self.bytes += len;
        // a group the file began holds one file, never full
        debug_assert!(before.is_none() || self.files.len() < GROUP_FILES);
        before
            .filter(|g| !g.is_empty())
            .or_else(|| (self.files.len() >= GROUP_FILES).then(|| self.take()))
    }

    /// The files gathered so far (none, maybe), as a group of their own.
    pub fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.files)
    }
}

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
            let size = open.size;
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

    /// Reads the file at `at` (`size` bytes when opened) into the buffer, counted and let
    /// go from the page cache as a streamed input is (see [`InputCtx`]).
    fn read(&mut self, at: usize, open: Box<OpenFile>, size: usize) -> Result<(), StoreError> {
        let sh = self.sh;
        let read = {
            let behind = DropBehind::new(std::os::fd::AsFd::as_fd(&open.file));
            let ctx = InputCtx {
                store: &sh.store,
                behind: Some(&behind),
                track: None,
                cancel: sh.opts.cancel.as_deref(),
            };
            match ctx.check_cancel() {
                Err(e) => Err(e),
                Ok(()) => {
                    let read = self.read_into(&open.file, size)?;
                    // a file that grew is counted as it is streamed
                    if let Some(&n) = read.as_ref().ok().filter(|&&n| n <= size) {
                        ctx.consumed(n);
                    }
                    read
                }
            }
        };
        let from = self.filled;
        match read {
            Ok(n) if n <= size => {
                self.filled += n;
                self.pending.push(Read {
                    at,
                    open,
                    bytes: from..from + n,
                });
            }
            // it grew since fstat: streamed instead
            Ok(_) => {
                self.outcomes[at] = Some(match (&open.file).rewind() {
                    Ok(()) => open.read_streaming(sh)?,
                    Err(e) => skipped('E', format!("{}: seek: {e}", open.shown)),
                });
            }
            Err(e) => {
                self.outcomes[at] = Some(skipped('E', format!("{}: read: {e}", open.shown)));
            }
        }
        Ok(())
    }

    /// Reads `file` into the buffer after the files it holds, up to one byte more than its
    /// `size` when opened (to tell that it grew); first stores those files if the buffer
    /// would grow beyond [`READ_BYTES`].
    fn read_into(
        &mut self,
        file: &std::fs::File,
        size: usize,
    ) -> Result<std::io::Result<usize>, StoreError> {
        if self.filled + size > READ_BYTES as usize {
            self.store()?;
        }
        let (from, to) = (self.filled, self.filled + size + 1);
        if self.buf.len() < to {
            if self.buf.is_empty() {
                self.buf = bufpool::take().unwrap_or_default();
            }
            if self.buf.len() < to {
                // room for a whole group at once: one allocation, advised once
                crate::hugepages::reserve(&mut self.buf, to.max(READ_BYTES as usize + 1));
                self.buf.resize(to, 0);
            }
        }
        self.high = self.high.max(to);
        Ok(read_full(&mut &*file, &mut self.buf[from..to]))
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
                chunks.push((Allocation::of(bytes), size, bytes));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_end_at_their_file_count_or_before_their_bytes() {
        let mut g = FileGroups::<usize>::default();
        let third = READ_BYTES / 3;
        assert_eq!(g.push(0, third), None);
        assert_eq!(g.push(1, third), None);
        assert_eq!(g.push(2, third), None);
        // the fourth third does not fit: the three before go, it begins the next group
        assert_eq!(g.push(3, third), Some(vec![0, 1, 2]));
        assert_eq!(g.take(), vec![3]);
        assert_eq!(g.take(), Vec::<usize>::new());
        // a group that is full goes with the file that filled it
        let full: Vec<Option<Vec<usize>>> = (0..GROUP_FILES).map(|i| g.push(i, 1)).collect();
        assert!(full[..GROUP_FILES - 1].iter().all(Option::is_none));
        assert_eq!(full[GROUP_FILES - 1], Some((0..GROUP_FILES).collect()));
        // a file larger than a group alone still gets a group
        assert_eq!(g.push(7, READ_BYTES + 1), None);
        assert_eq!(g.take(), vec![7]);
    }
}
