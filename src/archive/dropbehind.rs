//! Reading a file without filling the page cache with it, as borg does: a backup reads
//! every file once, and keeping those pages would push out what the host actually uses
//! (and, on a busy host, make the kernel reclaim memory on the backup's own time).

use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};

/// Pages read are dropped from the cache once this many bytes are behind.
const DROP_EVERY: u64 = 32 << 20;

/// A reader that tells the kernel it will not need what it has read again.
pub struct DropBehind<R: Read + AsFd> {
    inner: R,
    /// Bytes read so far; everything before `dropped` is already let go.
    pos: u64,
    dropped: u64,
}

impl<R: Read + AsFd> DropBehind<R> {
    pub fn new(inner: R) -> Self {
        DropBehind {
            inner,
            pos: 0,
            dropped: 0,
        }
    }

    fn drop_read(&mut self) {
        if self.pos > self.dropped {
            let (off, len) = (self.dropped, self.pos - self.dropped);
            // Advice only: a pipe or a file system that ignores it is no error.
            // SAFETY: posix_fadvise reads nothing of ours; the fd stays open meanwhile.
            unsafe {
                libc::posix_fadvise(
                    self.inner.as_fd().as_raw_fd(),
                    off as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
            self.dropped = self.pos;
        }
    }
}

impl<R: Read + AsFd> Read for DropBehind<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        if self.pos - self.dropped >= DROP_EVERY {
            self.drop_read();
        }
        Ok(n)
    }
}

/// Seeking (over the holes of a sparse file) first lets go of what was read.
impl<R: Read + AsFd + Seek> Seek for DropBehind<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.drop_read();
        let at = self.inner.seek(to)?;
        (self.pos, self.dropped) = (at, at);
        Ok(at)
    }
}

impl<R: Read + AsFd> Drop for DropBehind<R> {
    fn drop(&mut self) {
        self.drop_read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_everything_and_tracks_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let mut r = DropBehind::new(std::fs::File::open(&p).unwrap());
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(r.pos, data.len() as u64);
        r.drop_read();
        assert_eq!(r.dropped, r.pos);
    }
}
