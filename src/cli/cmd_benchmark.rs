//! `benchmark`: how fast this machine runs the backup primitives (`cpu`) and a whole
//! `create` into a throw-away repository (`create`), for judging hardware.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::{Common, Outcome};
use proxborg::format::blake2;
use proxborg::format::chunker::{
    chunk_sizes, BlockSource, Chunker, ChunkerParams, ParallelChunker, PositionalFile,
};
use proxborg::format::compress::Compression;
use proxborg::format::crypto::{Key, KeyMode};
use proxborg::location::Repo;

#[derive(Args, Debug)]
pub struct BenchmarkArgs {
    #[command(subcommand)]
    pub what: BenchmarkCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchmarkCommand {
    /// Throughput of each primitive on one core (and the chunker on all cores)
    Cpu(CpuArgs),
    /// Time `create` of a generated data set into a temporary repository, then an unchanged re-run
    Create(CreateBenchArgs),
    /// Chunk one file with the parallel chunker and print chunks, bytes, seconds, CPU seconds
    #[command(hide = true)]
    Chunk(ChunkArgs),
    /// CPU cost of create's per-chunk work on the given files (the pipeline's ceiling)
    #[command(hide = true)]
    Pipeline(super::bench_pipeline::PipelineArgs),
}

#[derive(Args, Debug)]
pub struct ChunkArgs {
    /// The file to chunk
    pub file: PathBuf,
    /// Chunker parameters (buzhash only)
    #[arg(long, default_value = "default")]
    pub chunker_params: ChunkerParams,
    /// Chunk seed
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Threads searching for cut points (default: all)
    #[arg(long)]
    pub threads: Option<usize>,
    /// MiB read at once (default: 4 on one thread, 8 per thread on several)
    #[arg(long, value_name = "MIB")]
    pub block: Option<usize>,
}

#[derive(Args, Debug)]
pub struct CpuArgs {
    /// MiB of data per measurement
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    pub size: usize,
}

#[derive(Args, Debug)]
pub struct CreateBenchArgs {
    /// MiB of data to generate
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub size: usize,
    /// Directory for the data set and the repository (default: the system's temp dir);
    /// everything created there is removed at the end
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Encryption mode of the repository
    #[arg(
        short = 'e',
        long = "encryption",
        default_value = "repokey-blake2",
        value_name = "MODE"
    )]
    pub encryption: KeyMode,
    /// Compression
    #[arg(short = 'C', long, default_value = "lz4", value_name = "COMPRESSION")]
    pub compression: Compression,
}

pub fn run(common: &Common, args: BenchmarkArgs) -> Result<Outcome> {
    match args.what {
        BenchmarkCommand::Cpu(a) => run_cpu(a),
        BenchmarkCommand::Create(a) => run_create(common, a),
        BenchmarkCommand::Chunk(a) => run_chunk(a),
        BenchmarkCommand::Pipeline(a) => super::bench_pipeline::run(a),
    }
}

/// CPU seconds of this process (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Same output as compat/py/bench_chunker.py, for side-by-side runs with borg's chunker.
fn run_chunk(args: ChunkArgs) -> Result<Outcome> {
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let f = std::fs::File::open(&args.file)
        .and_then(PositionalFile::new)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let Some(mut c) = ParallelChunker::new(&args.chunker_params, args.seed, f, threads) else {
        bail!("{}: not buzhash chunker params", args.chunker_params);
    };
    if let Some(mib) = args.block {
        c = c.with_block(mib << 20);
    }
    let (t, c0) = (Instant::now(), cpu_seconds());
    let (chunks, bytes) =
        drain(&mut c).with_context(|| format!("reading {}", args.file.display()))?;
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c0);
    println!(
        "chunks={chunks} bytes={bytes} seconds={secs:.4} cpu={cpu:.4} MB/s={:.1}",
        bytes as f64 / secs / 1e6
    );
    Ok(Outcome::Success)
}

/// Chunks all of `c`'s input; returns the chunks and bytes. Runs on one of the pool's
/// threads, so the chunking threads do not wait for a third one that reads.
fn drain<R: BlockSource + Send>(c: &mut ParallelChunker<R>) -> std::io::Result<(u64, u64)> {
    rayon::scope(|_| {
        let (mut chunks, mut bytes) = (0u64, 0u64);
        while let Some(b) = c.next_batch()? {
            chunks += b.spans.len() as u64;
            bytes += b.data.len() as u64;
        }
        Ok((chunks, bytes))
    })
}

/// Deterministic incompressible bytes (xorshift64*), fast enough not to dominate set-up.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic text-like bytes that compress about as well as source code or logs.
fn text_bytes(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 32] = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "for",
        "that",
        "return",
        "self",
        "value",
        "data",
        "if",
        "else",
        "error",
        "let",
        "with",
        "from",
        "file",
        "chunk",
        "size",
        "path",
        "none",
        "while",
        "buffer",
        "index",
        "repository",
        "archive",
        "item",
        "key",
        "time",
        "count",
    ];
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 64);
    let mut col = 0;
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let w = WORDS[(r >> 59) as usize % WORDS.len()];
        out.extend_from_slice(w.as_bytes());
        if r & 0xf == 0 {
            out.extend_from_slice(format!(" {}", (r >> 20) % 100_000).as_bytes());
        }
        col += w.len() + 1;
        if col > 60 + (r >> 40) as usize % 30 {
            out.push(b'\n');
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// Runs `f` over `bytes` bytes at least twice and for at least half a second; MB/s of the
/// fastest run.
fn measure(bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut runs = 0;
    while runs < 2 || start.elapsed() < Duration::from_millis(500) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    bytes as f64 / best / 1e6
}

fn report(name: &str, mbs: f64) {
    println!("{name:<44} {mbs:>9.0} MB/s");
    let _ = std::io::stdout().flush();
}

fn run_cpu(args: CpuArgs) -> Result<Outcome> {
    let size = args.size.max(1) << 20;
    let random = random_bytes(1, size);
    let text = text_bytes(2, size);
    let threads = rayon::current_num_threads();
    println!(
        "{} MiB per measurement, {threads} threads; MB = 10^6 bytes",
        args.size.max(1)
    );

    println!("Chunkers");
    let seed = 0x1234_5678;
    for (name, p) in [
        ("buzhash,19,23,21,4095", ChunkerParams::DEFAULT),
        ("buzhash,15,19,17,4095 (items)", ChunkerParams::ITEMS),
    ] {
        report(
            &format!("  {name} in memory"),
            measure(size, || {
                std::hint::black_box(chunk_sizes(&p, seed, &random));
            }),
        );
        report(
            &format!("  {name} stream, copying"),
            measure(size, || {
                let n: usize = Chunker::new(&p, seed, &random[..])
                    .map(|c| c.map(|c| c.size).unwrap_or(0))
                    .sum();
                std::hint::black_box(n);
            }),
        );
        let mut buf = Vec::new();
        for t in [1, threads] {
            report(
                &format!("  {name} parallel, {t} thread(s)"),
                measure(size, || {
                    let mut c = ParallelChunker::new(&p, seed, &random[..], t)
                        .expect("buzhash params")
                        .with_buffer(std::mem::take(&mut buf));
                    std::hint::black_box(drain(&mut c).expect("in-memory reads do not fail"));
                    buf = c.into_buffer();
                }),
            );
            if threads == 1 {
                break;
            }
        }
    }
    let fixed = ChunkerParams::Fixed {
        block_size: 4 << 20,
        header_size: 0,
    };
    report(
        "  fixed,4194304 stream, copying",
        measure(size, || {
            let n: usize = Chunker::new(&fixed, 0, &random[..])
                .map(|c| c.map(|c| c.size).unwrap_or(0))
                .sum();
            std::hint::black_box(n);
        }),
    );

    println!("Id hashes (2 MiB chunks)");
    let chunks: Vec<&[u8]> = random.chunks(2 << 20).collect();
    let repo_id = [7u8; 32];
    for (name, mode) in [
        ("sha256 (none)", KeyMode::Plaintext),
        ("hmac-sha256 (repokey)", KeyMode::Repokey),
        ("blake2b-256 (repokey-blake2)", KeyMode::RepokeyBlake2),
    ] {
        let key = Key::generate(mode, repo_id);
        report(
            &format!("  {name}"),
            measure(size, || {
                for c in &chunks {
                    std::hint::black_box(key.id_hash(c));
                }
            }),
        );
    }
    // Both BLAKE2b implementations; the id hash and MAC above use the faster one.
    for imp in blake2::Implementation::ALL {
        let chosen = if imp == blake2::Implementation::fastest() {
            ", used"
        } else {
            ""
        };
        report(
            &format!("  blake2b-256 by {}{chosen}", imp.name()),
            measure(size, || {
                for c in &chunks {
                    let mut h = blake2::Blake2b256::with(imp);
                    h.update(c);
                    std::hint::black_box(h.finalize());
                }
            }),
        );
    }

    // Many chunks at once, as `create` hashes the chunks of one read block: the ids run
    // side by side in SIMD lanes.
    let small: Vec<&[u8]> = random.chunks(64 << 10).collect();
    let blake2_key = Key::generate(KeyMode::RepokeyBlake2, repo_id);
    report(
        &format!("  blake2b-256, {} lanes (64 KiB chunks)", blake2::lanes()),
        measure(size, || {
            for group in small.chunks(32) {
                std::hint::black_box(blake2_key.id_hashes(group));
            }
        }),
    );

    println!("Encryption with MAC (2 MiB chunks)");
    for (name, mode) in [
        ("aes-256-ctr + hmac-sha256 (repokey)", KeyMode::Repokey),
        (
            "aes-256-ctr + blake2b (repokey-blake2)",
            KeyMode::RepokeyBlake2,
        ),
    ] {
        let key = Key::generate(mode, repo_id);
        // In place in one envelope buffer, as `create` seals (no allocation per chunk);
        // each pass encrypts the previous ciphertext again, under a new counter range.
        let mut envelope = vec![0u8; key.envelope_header_len() + (2 << 20)];
        let mut iv = 0u64;
        report(
            &format!("  {name}"),
            measure(size, || {
                for c in &chunks {
                    let n = key.envelope_header_len() + c.len();
                    key.seal_in_place(&mut envelope[..n], iv);
                    iv += key.cipher_blocks(c.len());
                    std::hint::black_box(&envelope);
                }
            }),
        );
    }
    let key = &blake2_key;
    let mut envelopes: Vec<Vec<u8>> = small
        .iter()
        .map(|c| vec![0u8; key.envelope_header_len() + c.len()])
        .collect();
    let mut iv = 0u64;
    report(
        &format!(
            "  aes-256-ctr + blake2b, {} lanes (64 KiB)",
            blake2::lanes()
        ),
        measure(size, || {
            for group in envelopes.chunks_mut(32) {
                let ivs: Vec<u64> = group
                    .iter()
                    .map(|e| {
                        let at = iv;
                        iv += key.cipher_blocks(e.len() - key.envelope_header_len());
                        at
                    })
                    .collect();
                let mut views: Vec<&mut [u8]> = group.iter_mut().map(|e| &mut e[..]).collect();
                key.seal_many_in_place(&mut views, &ivs);
            }
            std::hint::black_box(&envelopes);
        }),
    );

    println!("Compression (2 MiB chunks; random / text)");
    let text_chunks: Vec<&[u8]> = text.chunks(2 << 20).collect();
    for spec in ["lz4", "zstd,1", "zstd,3", "zlib,6", "lzma,6"] {
        let c: Compression = spec.parse().map_err(|e| anyhow::anyhow!("{spec}: {e}"))?;
        // lzma is slow: a quarter of the data is enough to measure it.
        let part = if spec.starts_with("lzma") {
            chunks.len().div_ceil(4)
        } else {
            chunks.len()
        };
        let bytes: usize = chunks[..part].iter().map(|c| c.len()).sum();
        // Into one reused buffer, as `create` compresses into a recycled envelope.
        let mut out = Vec::new();
        let r = measure(bytes, || {
            for ch in &chunks[..part] {
                out.clear();
                c.compress_into(ch, &mut out);
                std::hint::black_box(&out);
            }
        });
        let mut out_len = 0;
        let t = measure(bytes, || {
            out_len = 0;
            for ch in &text_chunks[..part] {
                out.clear();
                c.compress_into(ch, &mut out);
                out_len += std::hint::black_box(&out).len();
            }
        });
        println!(
            "  {spec:<42} {r:>9.0} MB/s {t:>9.0} MB/s  (text ratio {:.2})",
            bytes as f64 / out_len.max(1) as f64
        );
    }
    Ok(Outcome::Success)
}

/// Writes the data set: ~45 % random files of many sizes, ~35 % text, ~20 % small files.
/// Returns (bytes, files).
fn generate(root: &Path, size: usize) -> Result<(u64, u64)> {
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut write = |rel: String, data: &[u8]| -> Result<()> {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        bytes += data.len() as u64;
        files += 1;
        Ok(())
    };
    let mut left = size * 45 / 100;
    let mut i = 0u64;
    while left > 0 {
        let n = (((i % 9) as usize + 1).pow(3) << 15).min(left);
        write(format!("random/r{i:04}"), &random_bytes(100 + i, n))?;
        left -= n;
        i += 1;
    }
    let mut left = size * 35 / 100;
    let mut i = 0u64;
    while left > 0 {
        let n = (((i % 7) as usize + 1) << 20).min(left);
        write(format!("text/t{i:04}.txt"), &text_bytes(200 + i, n))?;
        left -= n;
        i += 1;
    }
    let mut left = size * 20 / 100;
    let mut i = 0u64;
    let pool = text_bytes(3, 1 << 20);
    while left > 0 {
        let n = (512 + (i as usize * 7919) % 8192).min(left);
        let off = (i as usize * 104_729) % (pool.len() - n);
        let mut data = pool[off..off + n].to_vec();
        data.extend_from_slice(format!("\n{i}\n").as_bytes());
        write(format!("small/{:03}/f{i:06}", i / 200), &data)?;
        left = left.saturating_sub(n);
        i += 1;
    }
    Ok((bytes, files))
}

fn run_create(common: &Common, args: CreateBenchArgs) -> Result<Outcome> {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = parent.join(format!("proxborg-benchmark-{}", std::process::id()));
    if work.exists() {
        bail!("{} exists already", work.display());
    }
    std::fs::create_dir_all(&work)?;
    let res = bench_create(common, &args, &work);
    let _ = std::fs::remove_dir_all(&work);
    res
}

fn bench_create(common: &Common, args: &CreateBenchArgs, work: &Path) -> Result<Outcome> {
    let data = work.join("data");
    let t = Instant::now();
    let (bytes, files) = generate(&data, args.size.max(1) << 20)?;
    println!(
        "generated {files} files, {:.1} MB in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // A private home for keys, caches and security files, and a passphrase of our own.
    std::env::set_var("BORG_BASE_DIR", work.join("home"));
    std::env::set_var("BORG_PASSPHRASE", "benchmark");
    std::env::remove_var("BORG_NEW_PASSPHRASE");
    let repo_path = work.join("repo");
    super::cmd_init::init_repo(
        &Repo::Local(repo_path.clone()),
        &super::cmd_init::InitArgs {
            encryption: args.encryption,
            append_only: false,
            storage_quota: None,
            make_parent_dirs: false,
            repository: None,
        },
    )?;
    let comp = format!("{}", args.compression);
    for (run, what) in [(1, "first backup"), (2, "unchanged re-run")] {
        let archive = format!("{}::bench-{run}", repo_path.display());
        let mut cargs = super::cmd_create::CreateArgs::for_demo(archive, data.clone());
        cargs.a.stats = false;
        cargs.a.compression = args.compression.clone();
        let t = Instant::now();
        let o = super::cmd_create::run(common, cargs)?;
        let secs = t.elapsed().as_secs_f64();
        if o != Outcome::Success {
            bail!("create reported warnings");
        }
        println!(
            "{what:<18} {secs:>7.2} s {:>8.0} MB/s {:>8.0} files/s  ({}, {comp})",
            bytes as f64 / secs / 1e6,
            files as f64 / secs,
            args.encryption.name()
        );
    }
    Ok(Outcome::Success)
}
