//! What [`ParallelChunker`](super::ParallelChunker) reads its blocks from: any reader, one
//! read after another, or a file that every chunking thread reads a part of at once.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use rayon::prelude::*;

/// Reads blocks of input into a buffer.
pub trait BlockSource {
    /// Fills `buf`; short only at the end of the input. `parts` is how many threads may
    /// share the read.
    fn read_block(&mut self, buf: &mut [u8], parts: usize) -> io::Result<usize>;
}

impl<R: Read> BlockSource for R {
    fn read_block(&mut self, buf: &mut [u8], _parts: usize) -> io::Result<usize> {
        crate::fsutil::read_full(self, buf)
    }
}

/// Parts smaller than this are not worth a thread of their own.
const MIN_PART: usize = 256 << 10;

/// A regular file read by position: a block is split among the chunking threads, each
/// copying its part out of the page cache straight into the buffer. On one thread the copy
/// is a third of what chunking a cached file costs, so a single reading thread holds back
/// all the others.
///
/// The file's own offset does not move while it is read; [`into_inner`](Self::into_inner)
/// sets it to where reading stopped.
pub struct PositionalFile {
    file: File,
    offset: u64,
}

impl PositionalFile {
    /// Reads `file` from its current offset on.
    pub fn new(mut file: File) -> io::Result<Self> {
        let offset = file.stream_position()?;
        Ok(PositionalFile { file, offset })
    }

    /// Gives back the file, its offset just past what was read.
    pub fn into_inner(mut self) -> io::Result<File> {
        self.file.seek(SeekFrom::Start(self.offset))?;
        Ok(self.file)
    }
}

impl BlockSource for PositionalFile {
    fn read_block(&mut self, buf: &mut [u8], parts: usize) -> io::Result<usize> {
        let n = buf.len();
        let part = n.div_ceil(parts.max(1)).max(MIN_PART);
        let (file, base) = (&self.file, self.offset);
        let got: Vec<io::Result<usize>> = if part >= n {
            vec![read_full_at(file, buf, base)]
        } else {
            buf.par_chunks_mut(part)
                .enumerate()
                .map(|(i, s)| read_full_at(file, s, base + (i * part) as u64))
                .collect()
        };
        // The parts up to the first short one are contiguous input; what a later part read
        // (a file that grew meanwhile) is read again with the next block.
        let mut filled = 0;
        for (i, r) in got.into_iter().enumerate() {
            let r = r?;
            filled += r;
            if r < part.min(n - i * part) {
                break;
            }
        }
        self.offset += filled as u64;
        Ok(filled)
    }
}

/// Fills `buf` from `offset` on; short only at the end of the file.
fn read_full_at(file: &File, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::super::testdata::mixed;
    use super::super::{chunk_sizes, ChunkerParams, ParallelChunker};
    use super::*;
    use std::io::Write;

    fn file_with(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    }

    #[test]
    fn blocks_split_among_parts_read_the_file_in_order() {
        let d = mixed(3, 5_000_000, 30_000);
        for parts in [1, 2, 3, 8] {
            for n in [4099, MIN_PART - 1, MIN_PART * 3 + 17, 4 << 20] {
                let mut src = PositionalFile::new(file_with(&d)).unwrap();
                let mut buf = vec![0u8; 4 + d.len() + n];
                buf[..4].copy_from_slice(b"kept");
                let mut len = 4;
                loop {
                    let got = src.read_block(&mut buf[len..len + n], parts).unwrap();
                    len += got;
                    if got < n {
                        break;
                    }
                }
                assert_eq!(&buf[..4], b"kept");
                assert_eq!(&buf[4..len], &d[..], "parts={parts} n={n}");
                assert_eq!(src.read_block(&mut buf[len..len + n], parts).unwrap(), 0);
            }
        }
    }

    #[test]
    fn starts_at_the_file_offset_and_leaves_it_past_what_was_read() {
        let d = mixed(4, 1_000_000, 10_000);
        let mut f = file_with(&d);
        f.seek(SeekFrom::Start(1000)).unwrap();
        let mut src = PositionalFile::new(f).unwrap();
        let mut buf = vec![0u8; 600_000];
        assert_eq!(src.read_block(&mut buf, 2).unwrap(), 600_000);
        assert_eq!(buf, &d[1000..601_000]);
        let mut f = src.into_inner().unwrap();
        assert_eq!(f.stream_position().unwrap(), 601_000);
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &d[601_000..]);
    }

    #[test]
    fn chunked_on_every_thread_count_like_one_pass() {
        let d = mixed(8, 9 << 20, 70_000);
        let p = ChunkerParams::Buzhash {
            min_exp: 10,
            max_exp: 16,
            mask_bits: 12,
            window: 255,
        };
        let want = chunk_sizes(&p, 9, &d);
        for threads in [1, 2, 3] {
            let src = PositionalFile::new(file_with(&d)).unwrap();
            let mut c = ParallelChunker::new(&p, 9, src, threads)
                .unwrap()
                .with_block(3 << 20);
            let mut sizes = Vec::new();
            while let Some(b) = c.next_batch().unwrap() {
                let at: usize = sizes.iter().sum();
                assert_eq!(b.data, &d[at..at + b.data.len()]);
                sizes.extend(b.spans.iter().map(|s| s.size));
            }
            assert_eq!(sizes, want, "threads={threads}");
        }
    }

    #[test]
    fn read_errors_are_reported() {
        // A directory opens but cannot be read.
        let dir = tempfile::tempdir().unwrap();
        let mut src = PositionalFile::new(File::open(dir.path()).unwrap()).unwrap();
        let e = src.read_block(&mut [0u8; 4096], 2).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
    }
}
