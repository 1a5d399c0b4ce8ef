//! Transparent huge pages for the buffers a backup streams its data through.
//!
//! Every byte of a backup is read into a few large buffers: the chunkers' read rings and
//! the buffers groups of small files are read into. A fresh stretch of such a buffer costs
//! a page fault per 4 KiB page when first written (in a VM a few microseconds each; a first
//! backup of 2.4 GB took 235,000 faults, a sixth of its kernel time). Huge pages fault in
//! 2 MiB at once where the kernel allows them for memory that asks (`madvise` mode, the
//! default of Debian and Proxmox VE): 75,000-95,000 faults and 0.4 s less kernel time for
//! that backup, for 2-3 MiB more peak RSS. Elsewhere this is a no-op. (Envelope buffers
//! are left out: they are recycled already, and asking for them cost an image backup
//! 9 MiB of RSS for nothing.)

/// Buffers smaller than this hold no whole huge page worth asking for.
const HUGE: usize = 2 << 20;

/// Asks the kernel to back `buf`'s allocation (its capacity) with huge pages. Cheap to
/// repeat; without effect on small buffers and where the kernel declines.
pub fn advise(buf: &Vec<u8>) {
    if buf.capacity() < HUGE {
        return;
    }
    advise_range(buf.as_ptr() as usize, buf.capacity());
}

/// Reserves room for `len` bytes in `buf` (exactly, as the buffer pools keep buffers up to
/// a size) and, when that moved it to a new allocation, advises it (see [`advise`]).
pub fn reserve(buf: &mut Vec<u8>, len: usize) {
    if buf.capacity() >= len {
        return;
    }
    buf.reserve_exact(len - buf.len());
    advise(buf);
}

/// The system's (base) page size: what `madvise` ranges are aligned to.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(target_os = "linux")]
fn advise_range(start: usize, len: usize) {
    let page = page_size();
    let (from, to) = (start / page * page, (start + len) / page * page);
    // SAFETY: [from, to) covers whole pages of live mappings (the allocation's, its start
    // rounded down to a page); MADV_HUGEPAGE changes how the kernel backs them, never what
    // they hold.
    unsafe {
        libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_start: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advised_buffers_keep_their_contents_and_grow() {
        let mut b: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        advise(&b);
        assert!(b.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
        reserve(&mut b, 9 << 20);
        assert!(b.capacity() >= 9 << 20);
        assert_eq!(b.len(), 3 << 20);
        b.resize(9 << 20, 7);
        assert!(b[..3 << 20]
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i % 251) as u8));
        assert!(b[3 << 20..].iter().all(|&x| x == 7));
        // small and already large enough buffers are left as they are
        let mut small = vec![1u8; 10];
        advise(&small);
        reserve(&mut small, 5);
        assert_eq!(small, vec![1u8; 10]);
    }
}
