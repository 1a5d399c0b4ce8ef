//! Chunker read buffers kept between inputs. A reused buffer is already faulted in, where a
//! fresh one costs a page fault (and the kernel's zeroing) per page; but a kept buffer also
//! stays resident, so only a few are kept and only their head stays resident.

use std::sync::Mutex;

/// Buffers up to this capacity are kept; larger ones are freed.
const KEEP_CAPACITY: usize = 16 << 20;
/// Buffers kept, for all workers together: enough for one pipelined input on its own
/// (its batches in flight and the block being read).
fn keep_at_most() -> usize {
    super::create::in_flight_alone() + 1
}
/// Bytes of a kept buffer left resident: most inputs, and the start of every input, fit.
const RESIDENT: usize = 2 << 20;

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Takes up to `n` kept buffers.
pub(super) fn take(n: usize) -> Vec<Vec<u8>> {
    let mut kept = KEPT.lock().expect("chunk buffers");
    let at = kept.len().saturating_sub(n);
    kept.split_off(at)
}

/// Keeps buffers for later inputs, up to [`keep_at_most`]; all but their first [`RESIDENT`] bytes
/// go back to the system (a long chunk once read into a buffer would otherwise keep its
/// whole capacity resident for the rest of the run). `read_len` is how much of the input
/// was read into them: none was filled beyond it, so only pages below it can be resident,
/// and after an input no longer than [`RESIDENT`] (most files) there is nothing to give
/// back and no system call to make.
pub(super) fn keep(bufs: Vec<Vec<u8>>, read_len: u64) {
    let filled = usize::try_from(read_len).unwrap_or(usize::MAX);
    let mut kept = KEPT.lock().expect("chunk buffers");
    for mut b in bufs {
        if kept.len() < keep_at_most() && b.capacity() <= KEEP_CAPACITY {
            release_tail(&mut b, RESIDENT, filled);
            kept.push(b);
        }
    }
}

/// Empties `buf` and returns the whole pages of its capacity beyond `keep` bytes, up to
/// the first `filled` bytes (pages beyond were never written since the last release), to
/// the system; they read as zeros and are faulted in again when used.
fn release_tail(buf: &mut Vec<u8>, keep: usize, filled: usize) {
    buf.clear();
    let page = page_size();
    let base = buf.as_mut_ptr() as usize;
    let from = (base + keep).next_multiple_of(page);
    let end = (base + buf.capacity()) / page * page;
    let to = base
        .saturating_add(filled)
        .saturating_add(page - 1)
        .min(end)
        / page
        * page;
    if to > from {
        // SAFETY: [from, to) lies inside the buffer's own allocation, holds no live data
        // (the buffer is empty) and stays mapped: MADV_DONTNEED on private anonymous memory
        // only drops the pages, which read as zeros afterwards.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_tail_reads_as_zeros_and_stays_usable() {
        let mut b = vec![0xa5u8; 8 << 20];
        let cap = b.capacity();
        release_tail(&mut b, 1 << 20, cap);
        assert!(b.is_empty());
        assert_eq!(b.capacity(), cap);
        b.resize(cap, 0x5a);
        assert!(b.iter().all(|&x| x == 0x5a));
    }

    #[test]
    fn kept_buffers_come_back_empty() {
        let before = take(usize::MAX);
        keep(vec![vec![1u8; 1000], vec![2u8; 3 << 20]], 3 << 20);
        keep(vec![vec![3u8; 100]], 100);
        let back = take(usize::MAX);
        assert_eq!(back.len(), 3.min(keep_at_most()));
        assert!(back.iter().all(|b| b.is_empty() && b.capacity() >= 100));
        keep(before, 0);
    }
}
