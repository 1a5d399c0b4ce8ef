//! `benchmark pipeline` (hidden): the CPU cost of the per-chunk work of `create` on the
//! files given — chunk, zero check, id hash, dedup, compress, encrypt and MAC, segment
//! CRC — with reading, walking and writing left out: the files are read into memory first.
//! Its throughput on all cores is the ceiling of the write pipeline on that data (what the
//! primitives allow); `compat/bench.sh` sets the first backup's throughput against it.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use rayon::prelude::*;

use super::Outcome;
use proxborg::archive::create::{groups_of, FileGroups, GROUP_BYTES, WHOLE_FILE};
use proxborg::archive::store::{fits_one_buffer, sealed_with_ids};
use proxborg::format::chunker::{chunk_sizes, Allocation, ChunkerParams};
use proxborg::format::compress::Compression;
use proxborg::format::crypto::{Key, KeyMaterial, KeyMode};
use proxborg::session::{seal_and_id_many_with, seal_many_with, Outs};

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Files and directories (walked, symlinks not followed)
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Encryption mode whose id hash and envelope are measured
    #[arg(short = 'e', long = "encryption", default_value = "repokey-blake2")]
    pub encryption: KeyMode,
    /// Compression
    #[arg(short = 'C', long, default_value = "lz4")]
    pub compression: Compression,
    /// Chunker parameters
    #[arg(long, default_value = "default")]
    pub chunker_params: ChunkerParams,
}

/// What every worker shares: the key, the ids seen, and the counters.
struct Run {
    key: Key,
    compression: Compression,
    params: ChunkerParams,
    seen: Mutex<HashSet<[u8; 32]>>,
    zero_ids: Mutex<HashMap<usize, [u8; 32]>>,
    /// Next free AES counter value: every envelope gets its own range, as in `create`.
    next_iv: AtomicU64,
    cpu_ns: AtomicU64,
    bytes: AtomicU64,
    chunks: AtomicU64,
}

/// Nanoseconds of CPU time the calling thread has used.
fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime only writes the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let md = std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
    if md.is_file() {
        out.push(p.to_path_buf());
    } else if md.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading directory {}", p.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading directory {}", p.display()))?;
        names.sort();
        for n in names {
            walk(&n, out)?;
        }
    }
    Ok(())
}

/// Chunks of a file larger than [`WHOLE_FILE`] taken together: `create` reads such a file
/// in blocks of about one chunk and stores what each block completes, at least two chunks
/// (see its `input` module), so the model stores up to 1 MiB of chunks or two larger ones.
const STREAM_BATCH_BYTES: usize = 1 << 20;

/// What one task of the model processes: files read whole together, grouped as
/// `create`'s walker groups them (see [`FileGroups`]), or one file larger than
/// [`WHOLE_FILE`].
fn units(data: &[Vec<u8>]) -> Vec<Vec<usize>> {
    let (mut units, mut groups) = (Vec::new(), FileGroups::default());
    for (i, d) in data.iter().enumerate() {
        let len = d.len() as u64;
        if len > WHOLE_FILE {
            units.push(groups.take());
            units.push(vec![i]);
        } else {
            units.extend(groups.push(i, len));
        }
    }
    units.push(groups.take());
    units.retain(|u| !u.is_empty());
    units
}

impl Run {
    /// The per-chunk work on one unit (see [`units`]), timed on this thread's CPU clock:
    /// each file cut on its own, the chunks of files read whole stored together in groups
    /// of up to [`GROUP_BYTES`], a larger file's in [`STREAM_BATCH_BYTES`].
    fn process(&self, files: &[&[u8]], envelopes: &mut Vec<u8>) {
        let t = thread_cpu_ns();
        let mut chunks: Vec<(Allocation, usize, &[u8])> = Vec::new();
        for data in files {
            let mut off = 0;
            for size in chunk_sizes(&self.params, self.key.chunk_seed(), data) {
                let c = &data[off..off + size];
                chunks.push((Allocation::of(c), size, c));
                off += size;
            }
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let whole = files.iter().all(|d| d.len() as u64 <= WHOLE_FILE);
        let max = if whole {
            GROUP_BYTES
        } else {
            STREAM_BATCH_BYTES
        };
        for r in groups_of(&chunks, max) {
            self.process_batch(&chunks[r], envelopes);
        }
        self.cpu_ns
            .fetch_add(thread_cpu_ns() - t, Ordering::Relaxed);
        self.chunks
            .fetch_add(chunks.len() as u64, Ordering::Relaxed);
    }

    /// One group: ids side by side, dedup, then the new chunks sealed side by side (or
    /// each alone where their envelopes do not fit one buffer); or, as `create` does on new
    /// data, the chunks that fit one buffer (see [`sealed_with_ids`]) encoded first, the
    /// group's ids hashed beside their MACs.
    fn process_batch(&self, batch: &[(Allocation, usize, &[u8])], envelopes: &mut Vec<u8>) {
        let of = |zero: bool| -> Vec<&[u8]> {
            batch
                .iter()
                .filter(|c| (c.0 != Allocation::Data) == zero)
                .map(|c| c.2)
                .collect()
        };
        let (zeros, data) = (of(true), of(false));
        let next = |blocks| Ok::<_, Infallible>(self.next_iv.fetch_add(blocks, Ordering::Relaxed));
        let sealed = match self.key.macs_in_lanes() && !data.is_empty() {
            true => sealed_with_ids(&data.iter().map(|d| d.len()).collect::<Vec<_>>()),
            false => Vec::new(),
        };
        let mut ids = if sealed.is_empty() {
            self.key.id_hashes(&data)
        } else {
            let outs = Outs::One(envelopes);
            let Ok((ids, at)) =
                seal_and_id_many_with(&self.key, &self.compression, &data, &sealed, outs, next);
            crc(envelopes, &at);
            ids
        };
        for c in &zeros {
            let mut z = self.zero_ids.lock().expect("zero ids");
            ids.push(*z.entry(c.len()).or_insert_with(|| self.key.id_hash(c)));
        }
        let fresh: Vec<&[u8]> = {
            let mut seen = self.seen.lock().expect("seen ids");
            data.iter()
                .chain(&zeros)
                .zip(&ids)
                .enumerate()
                .filter(|(_, (_, id))| seen.insert(**id))
                // sealed already (zeros come after the data chunks, never sealed)
                .filter(|(i, _)| !sealed.contains(i))
                .map(|(_, (c, _))| *c)
                .collect()
        };
        if fits_one_buffer(&fresh) {
            let outs = Outs::One(envelopes);
            let Ok(at) = seal_many_with(&self.key, &self.compression, &fresh, outs, next);
            crc(envelopes, &at);
        } else {
            for c in fresh {
                let outs = Outs::One(envelopes);
                let Ok(at) = seal_many_with(&self.key, &self.compression, &[c], outs, next);
                crc(envelopes, &at);
            }
        }
    }
}

/// The segment CRC of each envelope in `buf`.
fn crc(buf: &[u8], at: &[std::ops::Range<usize>]) {
    for r in at {
        std::hint::black_box(crc32fast::hash(&buf[r.clone()]));
    }
}

/// Bytes free for the data set: half of what the kernel calls available.
fn memory_budget() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024 / 2)
}

pub fn run(args: PipelineArgs) -> Result<Outcome> {
    let mut files = Vec::new();
    for p in &args.paths {
        walk(p, &mut files)?;
    }
    // Everything is read first, so the timed part has no I/O in it at all.
    let mut total = 0u64;
    for f in &files {
        total += std::fs::metadata(f)
            .with_context(|| format!("{}", f.display()))?
            .len();
    }
    if let Some(budget) = memory_budget() {
        if total > budget {
            bail!(
                "the files hold {} MB, more than half of the available memory ({} MB): pass fewer",
                total / 1_000_000,
                budget * 2 / 1_000_000
            );
        }
    }
    let data: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).with_context(|| format!("reading {}", f.display())))
        .collect::<Result<_>>()?;
    let mut material = KeyMaterial::empty([0x5a; 32]);
    material.enc_key = [0x11; 32];
    material.enc_hmac_key = vec![0x22; 128];
    material.id_key = vec![0x33; 128];
    material.chunk_seed = 0x1234_5678;
    let run = Run {
        key: Key::from_material(args.encryption, material),
        compression: args.compression.clone(),
        params: args.chunker_params,
        seen: Mutex::new(HashSet::new()),
        zero_ids: Mutex::new(HashMap::new()),
        next_iv: AtomicU64::new(0),
        cpu_ns: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        chunks: AtomicU64::new(0),
    };
    let t = Instant::now();
    let units = units(&data);
    units.par_iter().for_each_init(Vec::new, |envelope, u| {
        let files: Vec<&[u8]> = u.iter().map(|&i| data[i].as_slice()).collect();
        run.process(&files, envelope)
    });
    let wall = t.elapsed().as_secs_f64();
    let cpu = run.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let bytes = run.bytes.load(Ordering::Relaxed);
    println!(
        "files={} chunks={} bytes={bytes} cpu={cpu:.3} wall={wall:.3} threads={} per_core_MB/s={:.1} MB/s={:.1}",
        files.len(),
        run.chunks.load(Ordering::Relaxed),
        rayon::current_num_threads(),
        bytes as f64 / cpu.max(1e-9) / 1e6,
        bytes as f64 / wall.max(1e-9) / 1e6,
    );
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxborg::archive::create::GROUP_FILES;

    #[test]
    fn units_group_files_as_the_walker_does() {
        let mib = |n: u64| vec![0u8; (n << 20) as usize];
        let data = vec![
            mib(3),
            mib(3),
            mib(3), // would pass READ_BYTES: a new group
            mib(5), // larger than WHOLE_FILE: alone, ending the group before
            vec![1u8; 10],
        ];
        assert_eq!(units(&data), vec![vec![0, 1], vec![2], vec![3], vec![4]]);
        let many: Vec<Vec<u8>> = (0..GROUP_FILES + 1).map(|_| vec![1u8]).collect();
        let u = units(&many);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].len(), GROUP_FILES);
    }

    #[test]
    fn batches_hold_up_to_max_bytes_or_two_chunks() {
        // the model batches a unit's chunks with create's own rule
        let (a, b, c) = ([1u8; 3], [1u8; 4], [1u8; 9]);
        let chunks: Vec<(Allocation, usize, &[u8])> = [&a[..], &a, &b, &c, &a]
            .iter()
            .map(|c| (Allocation::Data, c.len(), *c))
            .collect();
        let lens = |max| -> Vec<Vec<usize>> {
            groups_of(&chunks, max)
                .into_iter()
                .map(|r| chunks[r].iter().map(|c| c.1).collect())
                .collect()
        };
        assert_eq!(lens(10), vec![vec![3, 3, 4], vec![9, 3]]);
        assert_eq!(lens(1), vec![vec![3, 3], vec![4, 9], vec![3]]);
    }
}
