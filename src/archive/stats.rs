//! Counters of a running backup, shared by all workers (borg's `Statistics`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What `--stats` and `--json` report.
#[derive(Default, Debug)]
pub struct Stats {
    /// Regular files archived (borg's `nfiles`).
    pub nfiles: AtomicU64,
    /// Original size of all chunks referenced by this archive.
    pub osize: AtomicU64,
    /// Stored (compressed+encrypted) size of all chunks referenced by this archive.
    pub csize: AtomicU64,
    /// Original size of chunks new to the repository.
    pub usize_new: AtomicU64,
    /// Stored size of chunks new to the repository.
    pub csize_new: AtomicU64,
    /// Chunks new to the repository.
    pub chunks_new: AtomicU64,
    /// Bytes read from sources (excludes files-cache hits).
    pub bytes_read: AtomicU64,
    /// Files whose content came from the files cache.
    pub files_unchanged: AtomicU64,
}

impl Stats {
    pub fn add_ref(&self, size: u64, csize: u64) {
        self.osize.fetch_add(size, Relaxed);
        self.csize.fetch_add(csize, Relaxed);
    }

    pub fn add_new(&self, size: u64, csize: u64) {
        self.usize_new.fetch_add(size, Relaxed);
        self.csize_new.fetch_add(csize, Relaxed);
        self.chunks_new.fetch_add(1, Relaxed);
    }

    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Relaxed)
    }
}
