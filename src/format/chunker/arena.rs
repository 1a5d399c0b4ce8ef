//! The parallel chunker's read buffer: one allocation used as a ring. Blocks are read in
//! after the input buffered so far while batches cut from earlier bytes are stored on
//! other threads; each batch *pins* its bytes, and the chunker writes only where no pin
//! lies. A stream therefore keeps one buffer resident, sized for the batches in flight,
//! instead of one buffer per batch, each as large as the longest chunk plus a block.

use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A fixed-size byte buffer, shared by the chunker (the one writer) and its batches.
pub(super) struct Arena {
    /// Start of `buf`'s bytes, taken once so that no reference to the whole buffer is
    /// made while parts of it are read and written.
    ptr: *mut u8,
    len: usize,
    /// Owns the bytes (all initialised: `len` of them) until the arena is dropped or
    /// given back.
    buf: Vec<u8>,
    pins: Mutex<Vec<Range<usize>>>,
    unpinned: Condvar,
}

// SAFETY: the bytes are only reached through `ptr`: shared reads of pinned ranges, and
// writes by the chunker, which owns the arena's only writing handle and writes only ranges
// no pin overlaps (checked under `pins`' lock, whose release by a dropped pin orders the
// batch's reads before the chunker's next write there).
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    /// An arena over `buf`'s initialised bytes (`buf.len()` of them).
    pub(super) fn new(mut buf: Vec<u8>) -> Self {
        Arena {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            buf,
            pins: Mutex::new(Vec::new()),
            unpinned: Condvar::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Gives the buffer back (the arena is no longer shared, so nothing is pinned).
    pub(super) fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    fn pins(&self) -> MutexGuard<'_, Vec<Range<usize>>> {
        self.pins.lock().expect("arena pins")
    }

    /// Pins `r` for as long as the returned handle lives.
    pub(super) fn pin(self: &Arc<Self>, r: Range<usize>) -> Pin {
        assert!(r.end <= self.len, "pinned range beyond the arena");
        self.pins().push(r.clone());
        Pin {
            arena: self.clone(),
            range: r,
        }
    }

    /// Waits until no pin overlaps `r`, for at most `patience`: false if one still does.
    pub(super) fn wait_unpinned(&self, r: &Range<usize>, patience: Duration) -> bool {
        let overlaps =
            |pins: &mut Vec<Range<usize>>| pins.iter().any(|p| p.start < r.end && r.start < p.end);
        let (_pins, timeout) = self
            .unpinned
            .wait_timeout_while(self.pins(), patience, overlaps)
            .expect("arena pins");
        !timeout.timed_out()
    }

    /// The bytes of `r`.
    ///
    /// # Safety
    /// Nothing writes to `r` while the slice lives: `r` is pinned, or the caller is the
    /// writer.
    pub(super) unsafe fn bytes(&self, r: Range<usize>) -> &[u8] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "range beyond the arena"
        );
        // SAFETY: in bounds of the initialised buffer; no writes per the contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(r.start), r.end - r.start) }
    }

    /// The bytes of `r`, for writing.
    ///
    /// # Safety
    /// The caller is the only writer, no pin overlaps `r` (see
    /// [`wait_unpinned`](Self::wait_unpinned)), and it holds no other slice of `r`.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn bytes_mut(&self, r: Range<usize>) -> &mut [u8] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "range beyond the arena"
        );
        // SAFETY: in bounds; exclusive per the contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }

    /// Copies `from` to `to` (which may overlap it).
    ///
    /// # Safety
    /// As for [`bytes_mut`](Self::bytes_mut) on `to`, and nothing writes to `from`.
    pub(super) unsafe fn copy_within(&self, from: Range<usize>, to: usize) {
        let n = from.end - from.start;
        assert!(
            from.end <= self.len && to + n <= self.len,
            "copy beyond the arena"
        );
        // SAFETY: both ranges are in bounds; `copy` allows overlap.
        unsafe { std::ptr::copy(self.ptr.add(from.start), self.ptr.add(to), n) }
    }
}

/// Bytes of an [`Arena`] that the chunker does not write over while this lives.
pub(super) struct Pin {
    arena: Arc<Arena>,
    range: Range<usize>,
}

impl Pin {
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: the range is pinned while `self` lives.
        unsafe { self.arena.bytes(self.range.clone()) }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.arena.pins();
        if let Some(i) = pins.iter().position(|p| *p == self.range) {
            pins.swap_remove(i);
        }
        drop(pins);
        self.arena.unpinned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_hold_off_writes_until_dropped() {
        let a = Arc::new(Arena::new(vec![7u8; 100]));
        let p = a.pin(10..20);
        let short = Duration::from_millis(1);
        assert!(!a.wait_unpinned(&(0..11), short));
        assert!(!a.wait_unpinned(&(19..30), short));
        assert!(a.wait_unpinned(&(0..10), short));
        assert!(a.wait_unpinned(&(20..100), short));
        assert_eq!(p.bytes(), &[7u8; 10]);
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.wait_unpinned(&(0..100), Duration::from_secs(30)))
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(p);
        assert!(waiter.join().unwrap());
        // SAFETY: this thread is the only writer and nothing is pinned.
        unsafe {
            a.bytes_mut(0..4).copy_from_slice(b"abcd");
            a.copy_within(0..4, 2);
            assert_eq!(a.bytes(0..6), b"ababcd");
        }
    }

    #[test]
    fn the_same_range_pinned_twice_stays_pinned_until_both_go() {
        let a = Arc::new(Arena::new(vec![0u8; 10]));
        let (p, q) = (a.pin(0..5), a.pin(0..5));
        drop(p);
        assert!(!a.wait_unpinned(&(0..5), Duration::from_millis(1)));
        drop(q);
        assert!(a.wait_unpinned(&(0..5), Duration::from_millis(1)));
        assert_eq!(Arc::try_unwrap(a).ok().unwrap().into_vec().len(), 10);
    }
}
