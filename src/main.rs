//! `proxborg-native`: borg-compatible backups without borg.

mod cli;

use clap::Parser;

/// Large allocations (chunk data, envelopes) get their own mappings, returned to the
/// system when freed. glibc otherwise raises this threshold to the largest block freed
/// so far and keeps multi-MiB blocks in per-thread heaps, which leaves tens of MiB of
/// freed memory resident. The buffers worth keeping are recycled explicitly.
const MMAP_THRESHOLD: i32 = 256 << 10;

fn main() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
    let args = cli::Cli::parse();
    std::process::exit(cli::run(args));
}
