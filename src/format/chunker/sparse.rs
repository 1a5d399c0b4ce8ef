//! The data/hole map of a sparse file (borg's `chunker.pyx: sparsemap`). This is the one
//! place in the chunker that touches the file system: two `lseek` queries per range.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// One range of a file: `(start, length, is_data)`; holes have `is_data == false`.
pub type Range = (u64, u64, bool);

fn lseek(fd: libc::c_int, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek only reads its integer arguments; an invalid fd yields EBADF.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// The data and hole ranges of `file` from offset 0 to its end, in order, as borg builds
/// them with `SEEK_HOLE`/`SEEK_DATA` (no empty ranges; a trailing hole is reported up to the
/// file size). The file position is restored afterwards.
///
/// Returns `Ok(None)` when the file (or its file system) does not support hole queries, so
/// the caller reads it as all data — what borg does when seeking fails.
pub fn sparse_map(file: &File) -> io::Result<Option<Vec<Range>>> {
    let fd = file.as_raw_fd();
    let cur = match lseek(fd, 0, libc::SEEK_CUR) {
        Ok(c) => c,
        Err(e) if unsupported(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let result = lseek(fd, 0, libc::SEEK_END).and_then(|len| ranges(fd, len));
    lseek(fd, cur, libc::SEEK_SET)?;
    match result {
        Ok(map) => Ok(Some(map)),
        Err(e) if unsupported(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ESPIPE)
    )
}

fn ranges(fd: libc::c_int, file_len: u64) -> io::Result<Vec<Range>> {
    let mut map = Vec::new();
    let mut start = 0u64;
    let mut whence = libc::SEEK_HOLE;
    loop {
        // Looking for the next hole means we are standing in data, and vice versa.
        let is_data = whence == libc::SEEK_HOLE;
        match lseek(fd, start, whence) {
            Ok(end) => {
                if end > start {
                    map.push((start, end - start, is_data));
                }
                start = end;
                whence = if is_data {
                    libc::SEEK_DATA
                } else {
                    libc::SEEK_HOLE
                };
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                // SEEK_DATA inside a trailing hole finds no data: the hole runs to the end.
                if !is_data && start < file_len {
                    map.push((start, file_len - start, false));
                }
                return Ok(map);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn map_covers_the_file_and_restores_position() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        f.seek(SeekFrom::Start(300_000)).unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        f.seek(SeekFrom::Start(1234)).unwrap();
        let Some(map) = sparse_map(&f).unwrap() else {
            return;
        };
        assert_eq!(f.stream_position().unwrap(), 1234);
        let mut off = 0;
        for &(start, len, _) in &map {
            assert_eq!(start, off);
            assert!(len > 0);
            off += len;
        }
        assert_eq!(off, 1 << 20);
        let data_at = |pos: u64| {
            map.iter()
                .find(|r| r.0 <= pos && pos < r.0 + r.1)
                .map(|r| r.2)
        };
        assert_eq!(data_at(300_000), Some(true));
        assert_eq!(data_at(304_999), Some(true));
    }
}
