//! A whole `create` into a temporary repository (`cargo bench --bench create`): the built
//! binary backs up a generated tree (random files of several sizes, text files, small
//! files) into a fresh repokey-blake2 repository per run (first backup), and again into
//! the same repository (unchanged re-run, files cache hits).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const EXE: &str = env!("CARGO_BIN_EXE_proxborg-native");

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn random_file(seed: u64, len: usize) -> Vec<u8> {
    let mut r = xorshift(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn text_file(seed: u64, len: usize) -> Vec<u8> {
    let mut r = xorshift(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let x = r();
        out.extend_from_slice(format!("{} {:x} ", x % 977, x >> 52).as_bytes());
        if x & 15 == 0 {
            out.push(b'\n');
        }
    }
    out.truncate(len);
    out
}

/// ~256 MiB: 8 random files of 1..32 MiB, 4 text files of 16 MiB, 4,000 small files.
fn make_tree(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut put = |rel: String, data: Vec<u8>| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        total += data.len() as u64;
        std::fs::write(p, data).unwrap();
    };
    for i in 0..8u64 {
        put(
            format!("random/r{i}"),
            random_file(10 + i, (1 << i.min(5)) << 20),
        );
    }
    for i in 0..4u64 {
        put(format!("text/t{i}"), text_file(20 + i, 16 << 20));
    }
    for i in 0..4000u64 {
        let n = 200 + (i as usize * 7919) % 12_000;
        put(format!("small/{}/f{i}", i / 100), text_file(1000 + i, n));
    }
    total
}

fn run(dir: &Path, args: &[&str]) {
    let st = Command::new(EXE)
        .args(args)
        .env("BORG_BASE_DIR", dir.join("home"))
        .env("BORG_PASSPHRASE", "bench")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run proxborg-native");
    assert!(st.success(), "proxborg-native {args:?} failed");
}

fn init(dir: &Path, repo: &Path) {
    let _ = std::fs::remove_dir_all(repo);
    let _ = std::fs::remove_dir_all(dir.join("home"));
    run(
        dir,
        &["init", "-e", "repokey-blake2", repo.to_str().unwrap()],
    );
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let total = make_tree(&tree);
    let repo: PathBuf = dir.path().join("repo");
    let tree_s = tree.to_str().unwrap().to_string();
    let mut g = c.benchmark_group("create-256MiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Bytes(total));
    let mut n = 0u64;
    g.bench_function("first-backup/repokey-blake2-lz4", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                init(dir.path(), &repo);
                n += 1;
                let archive = format!("{}::a{n}", repo.display());
                let t = Instant::now();
                run(dir.path(), &["create", "-C", "lz4", &archive, &tree_s]);
                spent += t.elapsed();
            }
            spent
        })
    });
    init(dir.path(), &repo);
    run(
        dir.path(),
        &["create", &format!("{}::base", repo.display()), &tree_s],
    );
    g.bench_function("unchanged-rerun/repokey-blake2-lz4", |b| {
        b.iter(|| {
            n += 1;
            run(
                dir.path(),
                &[
                    "create",
                    "-C",
                    "lz4",
                    &format!("{}::a{n}", repo.display()),
                    &tree_s,
                ],
            );
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
