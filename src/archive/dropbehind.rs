//! Reading a file without filling the page cache with it, as borg does: a backup reads
//! every file once, and keeping those pages would push out what the host actually uses
//! (and, on a busy host, make the kernel reclaim memory on the backup's own time).
//!
//! This follows the reader from outside (the chunkers report how far they got) rather
//! than wrapping it: a wrapped `File` would lose the standard library's reads into
//! uninitialised buffers and pay for zeroing every block before it is read.

use std::cell::Cell;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Pages read are dropped from the cache once this many bytes are behind.
const DROP_EVERY: u64 = 32 << 20;

/// Tells the kernel that a file's pages before the reader's position are not needed again.
pub struct DropBehind<'a> {
    fd: BorrowedFd<'a>,
    /// Bytes consumed so far; the pages before `dropped` are already let go.
    pos: Cell<u64>,
    dropped: Cell<u64>,
}

impl<'a> DropBehind<'a> {
    pub fn new(fd: BorrowedFd<'a>) -> Self {
        DropBehind {
            fd,
            pos: Cell::new(0),
            dropped: Cell::new(0),
        }
    }

    /// The reader consumed `n` more bytes (holes of a sparse file included).
    pub fn advance(&self, n: u64) {
        self.pos.set(self.pos.get() + n);
        if self.pos.get() - self.dropped.get() >= DROP_EVERY {
            self.advise(self.pos.get() - self.dropped.get());
        }
    }

    /// Drops `len` bytes from `dropped` on (`0`: to the end of the file).
    fn advise(&self, len: u64) {
        // Advice only: a pipe or a file system that ignores it is no error.
        // SAFETY: posix_fadvise reads nothing of ours; the fd is borrowed, so open.
        unsafe {
            libc::posix_fadvise(
                self.fd.as_raw_fd(),
                self.dropped.get() as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        self.dropped.set(self.pos.get());
    }
}

impl Drop for DropBehind<'_> {
    /// Lets go of the rest, including what was read ahead of the last report.
    fn drop(&mut self) {
        self.advise(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn drops_in_steps_and_the_rest_at_the_end() {
        let f = tempfile::tempfile().unwrap();
        let d = DropBehind::new(f.as_fd());
        d.advance(DROP_EVERY - 1);
        assert_eq!(d.dropped.get(), 0);
        d.advance(1);
        assert_eq!(d.dropped.get(), DROP_EVERY);
        d.advance(5);
        assert_eq!(d.dropped.get(), DROP_EVERY);
        drop(d);
    }
}
