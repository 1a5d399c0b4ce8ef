//! Chunker read buffers kept between inputs. A reused buffer is already faulted in, where a
//! fresh one costs a page fault (and the kernel's zeroing) per page; but a kept buffer also
//! stays resident, so only a few are kept and only their head stays resident. A buffer
//! keeps its length: all of it is initialised (see `ParallelChunker::with_buffer`).

use std::sync::Mutex;

use crate::hugepages::page_size;

/// Buffers up to this capacity are kept; larger ones are freed.
const KEEP_CAPACITY: usize = 64 << 20;
/// Buffers kept, for all workers together: one per input chunked at once (a file on
/// each core and a stream).
fn keep_at_most() -> usize {
    rayon::current_num_threads() + 1
}
/// Bytes of a kept buffer left resident: most inputs, and the start of every input, fit.
const RESIDENT: usize = 2 << 20;

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Takes a kept buffer, if there is one.
pub(super) fn take() -> Option<Vec<u8>> {
    KEPT.lock().expect("chunk buffers").pop()
}

/// Keeps a buffer for later inputs, up to [`keep_at_most`]; all but its first [`RESIDENT`]
/// bytes go back to the system (a stream read through the buffer would otherwise keep all
/// of it resident for the rest of the run). `read_len` is how much of the input was read
/// into it: none was written beyond it, so only pages below it can be resident, and after
/// an input no longer than [`RESIDENT`] (most files) there is nothing to give back and no
/// system call to make.
pub(super) fn keep(mut buf: Vec<u8>, read_len: u64) {
    let filled = usize::try_from(read_len).unwrap_or(usize::MAX);
    let mut kept = KEPT.lock().expect("chunk buffers");
    if kept.len() < keep_at_most() && !buf.is_empty() && buf.len() <= KEEP_CAPACITY {
        release_tail(&mut buf, RESIDENT, filled);
        kept.push(buf);
    }
}

/// Returns the whole pages of `buf` beyond its first `keep` bytes, up to the first
/// `filled` bytes (pages beyond were not written since the last release), to the system;
/// they read as zeros and are faulted in again when written.
fn release_tail(buf: &mut [u8], keep: usize, filled: usize) {
    let page = page_size();
    let base = buf.as_mut_ptr() as usize;
    let from = (base + keep).next_multiple_of(page);
    let end = (base + buf.len()) / page * page;
    let to = base
        .saturating_add(filled)
        .saturating_add(page - 1)
        .min(end)
        / page
        * page;
    if to > from {
        // SAFETY: [from, to) lies inside the buffer, which this function borrows mutably,
        // and stays mapped: MADV_DONTNEED on private anonymous memory only drops the pages,
        // which read as zeros afterwards (still initialised bytes; the old contents are of
        // no use).
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_tail_reads_as_zeros_and_stays_usable() {
        let mut b = vec![0xa5u8; 8 << 20];
        release_tail(&mut b, 1 << 20, 6 << 20);
        let page = page_size();
        // the head and the pages beyond `filled` are untouched; the pages between are zero
        assert!(b[..1 << 20].iter().all(|&x| x == 0xa5));
        assert!(b[(1 << 20) + page..(6 << 20) - page]
            .iter()
            .all(|&x| x == 0));
        assert!(b[(6 << 20) + page..].iter().all(|&x| x == 0xa5));
        b.fill(0x5a);
        assert!(b.iter().all(|&x| x == 0x5a));
    }

    #[test]
    fn kept_buffers_come_back_whole() {
        let mut before = Vec::new();
        while let Some(b) = take() {
            before.push(b);
        }
        for (n, fill) in [
            (1000, 1u8),
            (3 << 20, 2),
            (100, 3),
            (0, 4),
            (KEEP_CAPACITY + 1, 5),
        ] {
            keep(vec![fill; n], n as u64);
        }
        let mut back = Vec::new();
        while let Some(b) = take() {
            back.push(b);
        }
        // empty and oversized buffers are not kept; the others keep their length
        let mut lens: Vec<usize> = back.iter().map(Vec::len).collect();
        lens.sort_unstable();
        let want = [100, 1000, 3 << 20];
        assert_eq!(lens, want[..want.len().min(keep_at_most())]);
        for b in before {
            keep(b, 0);
        }
    }
}
