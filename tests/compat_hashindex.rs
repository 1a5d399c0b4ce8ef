//! Our `HashIndex` files against borg's own `borg.hashindex` (1.2.4 and 1.4.5): borg reads
//! what we write with identical contents, we read what borg writes, and our XXH64 integrity
//! digests equal borg's `IntegrityCheckedFile` for index and hints files.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{run_py, run_py_json, Borg};
use proxborg::format::hashindex::{ChunkEntry, ChunkIndex, NsIndex};
use proxborg::format::hints::Hints;
use proxborg::format::integrity::{self, IntegrityData};
use sha2::{Digest, Sha256};

fn key(seed: u64, i: u64) -> [u8; 32] {
    Sha256::digest(format!("{seed}:{i}").as_bytes()).into()
}

fn dump_ns(ix: &NsIndex) -> BTreeMap<String, Vec<u64>> {
    ix.iter()
        .map(|(k, (s, o))| (hex::encode(k), vec![s as u64, o as u64]))
        .collect()
}

fn dump_chunks(ix: &ChunkIndex) -> BTreeMap<String, Vec<u64>> {
    ix.iter()
        .map(|(k, e)| {
            (
                hex::encode(k),
                vec![e.refcount as u64, e.size as u64, e.csize as u64],
            )
        })
        .collect()
}

fn json_entries(v: &serde_json::Value) -> BTreeMap<String, Vec<u64>> {
    serde_json::from_value(v["entries"].clone()).expect("entries map")
}

fn build_ns(n: u64, seed: u64) -> NsIndex {
    let mut ix = NsIndex::new();
    for i in 0..n {
        ix.insert(
            &key(seed, i),
            (i % 7000) as u32,
            (8 + i * 97 % 500_000_000) as u32,
        )
        .unwrap();
    }
    for i in (0..n).step_by(9) {
        ix.remove(&key(seed, i));
    }
    ix
}

fn build_chunks(n: u64, seed: u64) -> ChunkIndex {
    let mut ix = ChunkIndex::new();
    for i in 0..n {
        let e = ChunkEntry {
            refcount: 1 + (i % 3) as u32,
            size: (i * 13 % 8_000_000) as u32,
            csize: (i * 7 % 9_000_000) as u32,
        };
        ix.insert(&key(seed, i), e).unwrap();
    }
    ix
}

#[test]
fn borg_reads_our_index_files() {
    let dir = tempfile::tempdir().unwrap();
    for borg in Borg::ALL {
        for (n, seed) in [(0u64, 1u64), (1, 2), (100_000, 3)] {
            let t = Instant::now();
            let ns = build_ns(n, seed);
            let bytes = ns.to_bytes();
            let built = t.elapsed();
            let p = common::write_file(dir.path(), &format!("ns{n}"), &bytes);
            let v = run_py_json(
                borg,
                "hashindex.py",
                &["dump", "ns", p.to_str().unwrap()],
                b"",
            );
            assert_eq!(
                v["len"].as_u64(),
                Some(ns.len() as u64),
                "{} n={n}",
                borg.name()
            );
            assert_eq!(json_entries(&v), dump_ns(&ns), "{} n={n}", borg.name());
            if n == 100_000 {
                eprintln!(
                    "NsIndex: {} entries built+serialised in {:?} ({} bytes)",
                    ns.len(),
                    built,
                    bytes.len()
                );
            }

            let ch = build_chunks(n, seed);
            let p = common::write_file(dir.path(), &format!("chunks{n}"), &ch.to_bytes());
            let v = run_py_json(
                borg,
                "hashindex.py",
                &["dump", "chunks", p.to_str().unwrap()],
                b"",
            );
            assert_eq!(v["len"].as_u64(), Some(ch.len() as u64));
            assert_eq!(
                json_entries(&v),
                dump_chunks(&ch),
                "{} chunks n={n}",
                borg.name()
            );
        }
    }
}

#[test]
fn we_read_borgs_index_files() {
    let dir = tempfile::tempdir().unwrap();
    for borg in Borg::ALL {
        for n in [0u64, 1, 100_000] {
            let p = dir.path().join(format!("{}-ns{n}", borg.name()));
            let v = run_py_json(
                borg,
                "hashindex.py",
                &["write", "ns", p.to_str().unwrap(), &n.to_string(), "7"],
                b"",
            );
            let data = std::fs::read(&p).unwrap();
            let t = Instant::now();
            let ix = NsIndex::from_bytes(&data).unwrap();
            if n == 100_000 {
                eprintln!(
                    "NsIndex::from_bytes of {} bytes: {:?}",
                    data.len(),
                    t.elapsed()
                );
            }
            assert_eq!(ix.len() as u64, v["len"].as_u64().unwrap());
            assert_eq!(dump_ns(&ix), json_entries(&v), "{} n={n}", borg.name());
            for (k, val) in json_entries(&v) {
                let k: [u8; 32] = hex::decode(k).unwrap().try_into().unwrap();
                assert_eq!(ix.get(&k), Some((val[0] as u32, val[1] as u32)));
            }
            // And back: our canonical re-serialisation still reads the same in borg.
            let p2 = common::write_file(dir.path(), "rt", &ix.to_bytes());
            let v2 = run_py_json(
                borg,
                "hashindex.py",
                &["dump", "ns", p2.to_str().unwrap()],
                b"",
            );
            assert_eq!(json_entries(&v2), json_entries(&v));

            let p = dir.path().join(format!("{}-chunks{n}", borg.name()));
            let v = run_py_json(
                borg,
                "hashindex.py",
                &["write", "chunks", p.to_str().unwrap(), &n.to_string(), "8"],
                b"",
            );
            let ix = ChunkIndex::from_bytes(&std::fs::read(&p).unwrap()).unwrap();
            assert_eq!(
                dump_chunks(&ix),
                json_entries(&v),
                "{} chunks n={n}",
                borg.name()
            );
        }
    }
}

fn digests_of(v: &serde_json::Value) -> IntegrityData {
    IntegrityData::parse("x", v["integrity"].as_str().unwrap())
        .unwrap()
        .unwrap()
}

#[test]
fn integrity_digests_equal_borgs() {
    let dir = tempfile::tempdir().unwrap();
    let ns = build_ns(5000, 11);
    let index_bytes = ns.to_bytes();
    let ip = common::write_file(dir.path(), "index-file", &index_bytes);
    let ch = build_chunks(3000, 12);
    let chunk_bytes = ch.to_bytes();
    let cp = common::write_file(dir.path(), "chunks-file", &chunk_bytes);
    let mut h = Hints::default();
    for s in 0..50u32 {
        h.segments.insert(s, (s % 4) as i64);
        if s % 3 == 0 {
            h.compact.insert(s, 41 * s as u64 + 9);
        }
    }
    h.storage_quota_use = 123_456_789;
    h.shadow_index.insert(key(1, 1), vec![3, 7]);
    let hints_bytes = h.to_bytes();
    let hp = common::write_file(dir.path(), "hints-file", &hints_bytes);

    for borg in Borg::ALL {
        for (name, path, bytes) in [
            ("index.17", &ip, &index_bytes),
            ("chunks", &cp, &chunk_bytes),
        ] {
            let v = run_py_json(
                borg,
                "hashindex.py",
                &["digests", "index", name, path.to_str().unwrap()],
                b"",
            );
            assert_eq!(v["same_bytes"], true, "borg rewrote {name} differently");
            let ours = integrity::index_digests(name, bytes);
            assert_eq!(digests_of(&v), ours, "{} {name}", borg.name());
            let out = run_py(
                borg,
                "hashindex.py",
                &[
                    "verify",
                    "index",
                    name,
                    path.to_str().unwrap(),
                    &ours.to_json(),
                ],
                b"",
            );
            assert_eq!(out, b"ok\n");
        }
        let v = run_py_json(
            borg,
            "hashindex.py",
            &["digests", "plain", "hints.17", hp.to_str().unwrap()],
            b"",
        );
        let ours = integrity::plain_digests("hints.17", &hints_bytes);
        assert_eq!(digests_of(&v), ours, "{} hints", borg.name());
        let out = run_py(
            borg,
            "hashindex.py",
            &[
                "verify",
                "plain",
                "hints.17",
                hp.to_str().unwrap(),
                &ours.to_json(),
            ],
            b"",
        );
        assert_eq!(out, b"ok\n");
    }
}

#[test]
fn million_entries_timing() {
    let n = 1_000_000u64;
    let keys: Vec<[u8; 32]> = (0..n).map(|i| key(99, i)).collect();
    let t = Instant::now();
    let mut ix = ChunkIndex::new();
    for (i, k) in keys.iter().enumerate() {
        ix.insert(
            k,
            ChunkEntry {
                refcount: 1,
                size: i as u32,
                csize: 1,
            },
        )
        .unwrap();
    }
    let ins = t.elapsed();
    let t = Instant::now();
    let mut hits = 0;
    for k in &keys {
        hits += ix.get(k).is_some() as u64;
    }
    let get = t.elapsed();
    let t = Instant::now();
    let b = ix.to_bytes();
    let ser = t.elapsed();
    let t = Instant::now();
    let back = ChunkIndex::from_bytes(&b).unwrap();
    let de = t.elapsed();
    assert_eq!(hits, n);
    assert_eq!(back.len(), ix.len());
    eprintln!(
        "1M entries: insert {ins:?}, get {get:?}, to_bytes {ser:?}, from_bytes {de:?} ({} MB)",
        b.len() >> 20
    );
}
