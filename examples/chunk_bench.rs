//! Times the streaming chunker on a file: `chunk_bench FILE [PARAMS] [SEED]`.
//!
//! Prints one line: `chunks=N bytes=B seconds=S cpu=C MB/s=R` (wall and process CPU seconds;
//! MB = 10^6 bytes). Chunk bytes are produced (as for a backup) but not further processed.

use std::fs::File;
use std::time::Instant;

use proxborg::format::chunker::{Chunker, ChunkerParams};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: chunk_bench FILE [PARAMS] [SEED]");
        std::process::exit(2);
    };
    let params: ChunkerParams = match args.next().as_deref().unwrap_or("default").parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let seed: u32 = match args.next().map(|s| s.parse::<i64>()) {
        None => 0,
        Some(Ok(s)) => s as u32,
        Some(Err(e)) => {
            eprintln!("bad seed: {e}");
            std::process::exit(2);
        }
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let (mut chunks, mut bytes) = (0u64, 0u64);
    for c in Chunker::new(&params, seed, file) {
        match c {
            Ok(c) => {
                chunks += 1;
                bytes += c.size as u64;
            }
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "chunks={chunks} bytes={bytes} seconds={secs:.4} cpu={cpu:.4} MB/s={:.1}",
        bytes as f64 / secs / 1e6
    );
}

/// CPU time of this process (user + system), which stays meaningful on a busy machine.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
