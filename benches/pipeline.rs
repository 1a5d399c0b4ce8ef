//! The per-chunk stage of the write pipeline (`cargo bench --bench pipeline`): id hash,
//! compression and encryption with MAC of 2 MiB chunks, on one thread and on all threads,
//! for random and text-like data; and the BLAKE2b work of 64 KiB chunks one at a time
//! against side by side in SIMD lanes, as `create` does for the chunks of one read block;
//! and pairs of 2 MiB chunks encoded with their ids beside their MACs, as `create` encodes
//! new chunks (random data is stored as it is: encrypted straight from the chunk).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proxborg::format::compress::Compression;
use proxborg::format::crypto::{Key, KeyMode};
use proxborg::session::{seal_and_id_many_with, Outs};
use rayon::prelude::*;

const LEN: usize = 64 << 20;
const CHUNK: usize = 2 << 20;

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn random_data(len: usize) -> Vec<u8> {
    let mut r = xorshift(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Words with a skewed distribution and numbers: compresses like logs or source code.
fn text_data(len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "the", "of", "and", "value", "return", "error", "chunk", "archive", "if", "else", "data",
        "let", "path", "size", "key", "item",
    ];
    let mut r = xorshift(2);
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let x = r();
        let w = WORDS[(x >> 60) as usize & (x >> 56) as usize & 15];
        out.extend_from_slice(w.as_bytes());
        if x & 7 == 0 {
            out.extend_from_slice(format!(" {}", x % 10_000).as_bytes());
        }
        out.push(if x & 0xf0 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// What `ChunkStore` does to a new chunk before handing it to the repository writer.
fn stage(key: &Key, comp: &Compression, chunk: &[u8], iv: u64) -> usize {
    let id = key.id_hash(chunk);
    let payload = comp.compress(chunk);
    black_box(id);
    key.seal(&payload, iv).len()
}

fn bench(c: &mut Criterion) {
    let sets = [("random", random_data(LEN)), ("text", text_data(LEN))];
    let all = rayon::current_num_threads();
    let mut g = c.benchmark_group("chunk-stage-64MiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(LEN as u64));
    for (mode, mname) in [
        (KeyMode::RepokeyBlake2, "repokey-blake2"),
        (KeyMode::Repokey, "repokey"),
    ] {
        let key = Key::generate(mode, [3; 32]);
        for (comp, cname) in [
            (Compression::Lz4, "lz4"),
            (Compression::None, "none"),
            (Compression::Zstd { level: 3 }, "zstd3"),
        ] {
            for (dname, data) in &sets {
                g.bench_function(format!("{mname}/{cname}/{dname}/1-thread"), |b| {
                    b.iter(|| {
                        data.chunks(CHUNK)
                            .enumerate()
                            .map(|(i, ch)| stage(&key, &comp, ch, (i as u64) << 20))
                            .sum::<usize>()
                    })
                });
                g.bench_function(format!("{mname}/{cname}/{dname}/{all}-threads"), |b| {
                    b.iter(|| {
                        data.par_chunks(CHUNK)
                            .enumerate()
                            .map(|(i, ch)| stage(&key, &comp, ch, (i as u64) << 20))
                            .sum::<usize>()
                    })
                });
            }
        }
    }
    g.finish();

    let data = random_data(LEN);
    let small: Vec<&[u8]> = data.chunks(64 << 10).collect();
    let key = Key::generate(KeyMode::RepokeyBlake2, [3; 32]);
    let mut g = c.benchmark_group("blake2b-64KiB-chunks-64MiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("id/one-at-a-time", |b| {
        b.iter(|| {
            small
                .iter()
                .map(|c| key.id_hash(c)[0])
                .fold(0, |a, x| a ^ x)
        })
    });
    g.bench_function("id/side-by-side", |b| {
        b.iter(|| {
            small
                .chunks(32)
                .map(|g| key.id_hashes(g)[0][0])
                .fold(0, |a, x| a ^ x)
        })
    });
    let header = key.envelope_header_len();
    let mut envelopes: Vec<Vec<u8>> = small
        .iter()
        .map(|c| [vec![0; header], c.to_vec()].concat())
        .collect();
    g.bench_function("seal/one-at-a-time", |b| {
        b.iter(|| {
            for (i, e) in envelopes.iter_mut().enumerate() {
                key.seal_in_place(e, (i as u64) << 20);
            }
            black_box(&envelopes);
        })
    });
    g.bench_function("seal/side-by-side", |b| {
        b.iter(|| {
            for (n, group) in envelopes.chunks_mut(32).enumerate() {
                let ivs: Vec<u64> = (0..group.len() as u64)
                    .map(|i| (n as u64 * 32 + i) << 20)
                    .collect();
                let mut views: Vec<&mut [u8]> = group.iter_mut().map(|e| &mut e[..]).collect();
                key.seal_many_in_place(&mut views, &ivs);
            }
            black_box(&envelopes);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("seal-and-id-2MiB-pairs-64MiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(LEN as u64));
    let mut out = Vec::new();
    for (dname, data) in [("random", random_data(LEN)), ("text", text_data(LEN))] {
        let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
        for comp in [Compression::Lz4, Compression::None] {
            g.bench_function(format!("{comp}/{dname}"), |b| {
                b.iter(|| {
                    let mut next = 0u64;
                    for pair in chunks.chunks(2) {
                        let iv_for = |blocks| {
                            next += blocks;
                            Ok::<_, std::convert::Infallible>(next - blocks)
                        };
                        let Ok((ids, _)) = seal_and_id_many_with(
                            &key,
                            &comp,
                            pair,
                            &[],
                            Outs::One(&mut out),
                            iv_for,
                        );
                        black_box(ids);
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
