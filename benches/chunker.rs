//! Chunker throughput on 256 MiB of random data (`cargo bench --bench chunker`): the
//! sequential chunkers and the parallel single-stream chunker on one and on all threads.
//! compat/bench_chunker.sh compares the same code against borg's C chunker.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proxborg::format::chunker::{chunk_sizes, Chunker, ChunkerParams, ParallelChunker};

const LEN: usize = 256 << 20;

/// Deterministic random bytes (xorshift64*).
fn random_data(len: usize) -> Vec<u8> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
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

/// Runs the streaming chunker over `data`; returns the bytes chunked.
fn stream(params: &ChunkerParams, data: &[u8]) -> usize {
    Chunker::new(params, 0x1234_5678, Cursor::new(data))
        .map(|c| black_box(c.expect("in-memory reads do not fail")).size)
        .sum()
}

/// Runs the parallel chunker over `data` with `threads`, reusing `buf`; returns the chunks.
fn parallel(params: &ChunkerParams, data: &[u8], threads: usize, buf: &mut Vec<u8>) -> usize {
    let mut c = ParallelChunker::new(params, 0x1234_5678, data, threads)
        .expect("buzhash parameters")
        .with_buffer(std::mem::take(buf));
    // On one of the pool's threads, so the chunking threads do not wait for a third.
    let n = rayon::scope(|_| {
        let mut n = 0;
        while let Some(b) = c.next_batch().expect("in-memory reads do not fail") {
            n += black_box(b.spans).len();
        }
        n
    });
    *buf = c.into_buffer();
    n
}

fn bench(c: &mut Criterion) {
    let data = random_data(LEN);
    let mut g = c.benchmark_group("chunker-256MiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("buzhash-default/in-memory", |b| {
        b.iter(|| chunk_sizes(&ChunkerParams::DEFAULT, 0x1234_5678, black_box(&data)).len())
    });
    g.bench_function("buzhash-default/stream", |b| {
        b.iter(|| stream(&ChunkerParams::DEFAULT, black_box(&data)))
    });
    g.bench_function("buzhash-items/stream", |b| {
        b.iter(|| stream(&ChunkerParams::ITEMS, black_box(&data)))
    });
    let all = rayon::current_num_threads();
    let mut buf = Vec::new();
    for threads in [1, all] {
        for (name, p) in [
            ("default", ChunkerParams::DEFAULT),
            ("items", ChunkerParams::ITEMS),
        ] {
            g.bench_function(format!("buzhash-{name}/parallel-{threads}-threads"), |b| {
                b.iter(|| parallel(&p, black_box(&data), threads, &mut buf))
            });
        }
    }
    let fixed = ChunkerParams::Fixed {
        block_size: 4 << 20,
        header_size: 0,
    };
    g.bench_function("fixed-4MiB/stream", |b| {
        b.iter(|| stream(&fixed, black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
