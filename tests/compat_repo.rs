//! The local repository engine against borg's own `borg.repository.Repository` (1.2.4 and
//! 1.4.5): borg reads, checks and compacts what we write without replaying segments, we
//! read and extend what borg writes, locks exclude each other both ways, and a writer
//! killed mid-transaction leaves a repository borg checks cleanly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{prng_bytes, run_py_json, Borg};
use proxborg::format::hashindex::NsIndex;
use proxborg::repo::local::{CreateOptions, LocalRepository, OpenOptions};
use proxborg::repo::{ObjectId, RepoError, Repository, MANIFEST_ID};
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn obj(seed: u64, i: u64) -> (ObjectId, Vec<u8>) {
    let data = prng_bytes(seed * 1_000_003 + i, 50 + (i as usize * 7919) % 6000);
    (Sha256::digest(&data).into(), data)
}

fn open_excl(p: &Path) -> LocalRepository {
    LocalRepository::open(p, OpenOptions::default()).expect("open repository")
}

/// What the repository must contain.
#[derive(Default, Clone)]
struct Expect {
    objects: BTreeMap<String, String>,
    absent: BTreeSet<String>,
}

impl Expect {
    fn put(&mut self, r: &mut LocalRepository, id: &ObjectId, data: &[u8]) {
        r.put(id, data).unwrap();
        self.objects.insert(hex::encode(id), sha(data));
        self.absent.remove(&hex::encode(id));
    }

    fn delete(&mut self, r: &mut LocalRepository, id: &ObjectId) {
        r.delete(id).unwrap();
        self.objects.remove(&hex::encode(id));
        self.absent.insert(hex::encode(id));
    }

    fn json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"objects": self.objects, "absent": self.absent}))
            .unwrap()
    }

    fn apply_borg(&mut self, v: &serde_json::Value) {
        for (k, s) in v["put"].as_object().unwrap() {
            self.objects
                .insert(k.clone(), s.as_str().unwrap().to_string());
            self.absent.remove(k);
        }
        for k in v["deleted"].as_array().unwrap() {
            self.objects.remove(k.as_str().unwrap());
            self.absent.insert(k.as_str().unwrap().to_string());
        }
    }

    fn ids(&self) -> Vec<ObjectId> {
        self.objects
            .keys()
            .map(|k| hex::decode(k).unwrap().try_into().unwrap())
            .collect()
    }
}

/// borg opens the repository, lists/reads every object, checks it: nothing missing or
/// extra, no warning, no replay (index file untouched), and the index borg loaded is ours.
/// Stale-lock removals (expected after a killed writer) are moved from `log` to
/// `stale_locks`.
fn verify_with_borg(borg: Borg, repo: &Path, exp: &Expect) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let ef = common::write_file(dir.path(), "expected.json", &exp.json());
    let mut v = run_py_json(
        borg,
        "repo.py",
        &["verify", repo.to_str().unwrap(), ef.to_str().unwrap()],
        b"",
    );
    let (stale, rest): (Vec<_>, Vec<_>) =
        v["log"].as_array().unwrap().iter().cloned().partition(|m| {
            m.as_str().unwrap().starts_with("WARNING borg.locking: ")
                && m.as_str().unwrap().contains("stale")
        });
    v["log"] = serde_json::Value::Array(rest);
    v["stale_locks"] = serde_json::Value::Array(stale);
    let ctx = format!("{} on {}: {}", borg.name(), repo.display(), v["log"]);
    for k in [
        "missing",
        "extra",
        "mismatched",
        "absent_but_present",
        "log",
    ] {
        assert_eq!(v[k], serde_json::json!([]), "{k} not empty ({ctx})");
    }
    assert_eq!(v["check"], true, "{ctx}");
    assert_eq!(v["index_unchanged"], true, "borg rewrote the index ({ctx})");
    assert_eq!(v["len"].as_u64(), Some(exp.objects.len() as u64), "{ctx}");
    assert_eq!(
        v["listed"].as_u64(),
        Some(exp.objects.len() as u64),
        "{ctx}"
    );
    // The index borg used is exactly the file we wrote.
    let name = v["index_file"].as_str().unwrap();
    let ours = NsIndex::from_bytes(&std::fs::read(repo.join(name)).unwrap()).unwrap();
    let borgs: BTreeMap<String, Vec<u64>> = serde_json::from_value(v["index"].clone()).unwrap();
    let ours: BTreeMap<String, Vec<u64>> = ours
        .iter()
        .map(|(k, (s, o))| (hex::encode(k), vec![s as u64, o as u64]))
        .collect();
    assert_eq!(borgs, ours, "{ctx}");
    v
}

/// We read back every expected object, and none of the absent ones.
fn verify_ours(repo: &Path, exp: &Expect) {
    let mut r = open_excl(repo);
    assert_eq!(r.len().unwrap(), exp.objects.len() as u64);
    for id in exp.ids() {
        assert_eq!(
            sha(&r.get(&id).unwrap()),
            exp.objects[&hex::encode(id)],
            "object {}",
            hex::encode(id)
        );
    }
    for a in &exp.absent {
        let id: ObjectId = hex::decode(a).unwrap().try_into().unwrap();
        assert!(!r.contains(&id).unwrap());
        assert!(matches!(r.get(&id), Err(RepoError::ObjectNotFound(..))));
    }
    let mut listed = BTreeSet::new();
    let mut marker: Option<ObjectId> = None;
    loop {
        let page = r.list(77, marker.as_ref()).unwrap();
        if page.is_empty() {
            break;
        }
        marker = page.last().copied();
        listed.extend(page.iter().map(hex::encode));
    }
    assert_eq!(listed, exp.objects.keys().cloned().collect::<BTreeSet<_>>());
    assert!(r.take_warnings().is_empty(), "{:?}", r.take_warnings());
}

/// Two transactions of ours: a fresh repo with a manifest and 300 objects, then
/// overwrites, deletes, a new manifest, new objects, and same-transaction churn.
fn write_two_transactions(path: &Path, exp: &mut Expect, seed: u64) {
    let mut r = LocalRepository::create(path, CreateOptions::default()).unwrap();
    exp.put(&mut r, &MANIFEST_ID, b"manifest 1");
    for i in 0..300 {
        let (id, data) = obj(seed, i);
        exp.put(&mut r, &id, &data);
    }
    r.commit().unwrap();

    for i in 0..40 {
        let (id, _) = obj(seed, i);
        exp.put(&mut r, &id, &prng_bytes(seed + 7 + i, 333));
    }
    for i in 40..70 {
        let (id, _) = obj(seed, i);
        exp.delete(&mut r, &id);
    }
    exp.delete(&mut r, &MANIFEST_ID);
    exp.put(&mut r, &MANIFEST_ID, b"manifest 2");
    for i in 1000..1100 {
        let (id, data) = obj(seed, i);
        exp.put(&mut r, &id, &data);
    }
    // Churn inside the open transaction (and the open segment).
    let (id, data) = obj(seed, 5000);
    exp.put(&mut r, &id, &data);
    exp.put(&mut r, &id, b"second version");
    let (id2, data2) = obj(seed, 5001);
    exp.put(&mut r, &id2, &data2);
    exp.delete(&mut r, &id2);
    r.commit().unwrap();
    assert!(r.take_warnings().is_empty());
}

/// Segment refcounts, quota use and (1.4) the shadow index we keep equal what borg
/// computes when it rebuilds the hints from our segments.
fn compare_hints_with_replay(borg: Borg, repo: &Path) {
    let v = run_py_json(
        borg,
        "repo.py",
        &["replay-hints", repo.to_str().unwrap()],
        b"",
    );
    let ctx = format!("{}: {}", borg.name(), v);
    assert_eq!(
        v["ours"]["segments"], v["borg"]["segments"],
        "segments ({ctx})"
    );
    assert_eq!(
        v["ours"]["storage_quota_use"], v["borg"]["storage_quota_use"],
        "{ctx}"
    );
    if borg == Borg::V14 {
        assert_eq!(
            v["ours"]["shadow_index"], v["borg"]["shadow_index"],
            "{ctx}"
        );
    }
}

#[test]
fn borg_reads_checks_extends_and_compacts_our_repo() {
    for borg in Borg::ALL {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let mut exp = Expect::default();
        write_two_transactions(&repo, &mut exp, 1);
        verify_ours(&repo, &exp);
        let v = verify_with_borg(borg, &repo, &exp);
        assert_eq!(
            v["transaction_id"].as_u64(),
            Some(open_excl(&repo).transaction_id().unwrap().unwrap() as u64)
        );
        compare_hints_with_replay(borg, &repo);

        // borg writes into our repository; we read its additions without replaying.
        let bw = run_py_json(
            borg,
            "repo.py",
            &["borg-write", repo.to_str().unwrap(), "9", "60"],
            b"",
        );
        assert_eq!(bw["log"], serde_json::json!([]));
        exp.apply_borg(&bw);
        verify_ours(&repo, &exp);

        // We append to borg's transaction: overwrite and delete some of borg's objects.
        {
            let mut r = open_excl(&repo);
            let borg_ids: Vec<ObjectId> = bw["put"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| hex::decode(k).unwrap().try_into().unwrap())
                .collect();
            for id in &borg_ids[..10] {
                exp.put(&mut r, id, b"rewritten by us");
            }
            for id in &borg_ids[10..20] {
                exp.delete(&mut r, id);
            }
            for i in 2000..2050 {
                let (id, data) = obj(1, i);
                exp.put(&mut r, &id, &data);
            }
            r.commit().unwrap();
            assert!(r.take_warnings().is_empty());
        }
        verify_with_borg(borg, &repo, &exp);
        compare_hints_with_replay(borg, &repo);

        // borg compacts trusting our hints (1.2 asserts on wrong refcounts, 1.4 warns).
        let c = run_py_json(borg, "repo.py", &["compact", repo.to_str().unwrap()], b"");
        assert_eq!(c["log"], serde_json::json!([]), "{}", borg.name());
        verify_with_borg(borg, &repo, &exp);
        verify_ours(&repo, &exp);
    }
}

#[test]
fn we_extend_a_borg_created_repo() {
    for borg in Borg::ALL {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let v = run_py_json(
            borg,
            "repo.py",
            &["create", repo.to_str().unwrap(), "3", "120"],
            b"",
        );
        let mut exp = Expect::default();
        exp.apply_borg(&v);
        verify_ours(&repo, &exp);
        {
            let mut r = open_excl(&repo);
            assert_eq!(
                r.transaction_id().unwrap(),
                v["transaction_id"].as_u64().map(|t| t as u32)
            );
            let ids = exp.ids();
            exp.delete(&mut r, &MANIFEST_ID);
            exp.put(&mut r, &MANIFEST_ID, b"our manifest");
            for id in ids.iter().filter(|i| **i != MANIFEST_ID).take(15) {
                exp.put(&mut r, id, b"ours now");
            }
            for id in ids.iter().filter(|i| **i != MANIFEST_ID).skip(15).take(15) {
                exp.delete(&mut r, id);
            }
            for i in 0..80 {
                let (id, data) = obj(4, i);
                exp.put(&mut r, &id, &data);
            }
            r.commit().unwrap();
            assert!(
                r.take_warnings().is_empty(),
                "we replayed borg's repository"
            );
        }
        verify_with_borg(borg, &repo, &exp);
        compare_hints_with_replay(borg, &repo);
        let c = run_py_json(borg, "repo.py", &["compact", repo.to_str().unwrap()], b"");
        assert_eq!(c["log"], serde_json::json!([]));
        verify_with_borg(borg, &repo, &exp);
    }
}

#[test]
fn locks_exclude_each_other() {
    for borg in Borg::ALL {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let mut exp = Expect::default();
        {
            let mut r = LocalRepository::create(&repo, CreateOptions::default()).unwrap();
            exp.put(&mut r, &MANIFEST_ID, b"m");
            r.commit().unwrap();
        }
        // borg holds the lock: we time out and name the holder.
        let mut child = Command::new(borg.python())
            .arg(common::root().join("compat/py/repo.py"))
            .args(["hold", repo.to_str().unwrap(), "60"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line
            .trim()
            .strip_prefix("locked ")
            .unwrap()
            .parse()
            .unwrap();
        let t = Instant::now();
        let opts = OpenOptions {
            lock_wait: Duration::from_secs(1),
            ..Default::default()
        };
        match LocalRepository::open(&repo, opts.clone()) {
            Err(RepoError::LockTimeout(_, who)) => {
                assert!(who.contains(&format!(".{pid}-0")), "{who}")
            }
            Err(e) => panic!("expected a lock timeout, got {e}"),
            Ok(_) => panic!("opened a repository borg holds locked"),
        }
        assert!(t.elapsed() >= Duration::from_secs(1));
        let shared = OpenOptions {
            exclusive: false,
            ..opts.clone()
        };
        assert!(matches!(
            LocalRepository::open(&repo, shared),
            Err(RepoError::LockTimeout(..))
        ));

        // Kill borg: its lock is stale (same host id, dead pid) and gets removed.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(repo.join("lock.exclusive").exists());
        let r = LocalRepository::open(&repo, opts.clone()).expect("stale borg lock not removed");

        // We hold the lock: borg times out.
        let base = tempfile::tempdir().unwrap();
        let out = Command::new(borg.exe())
            .args([
                "with-lock",
                "--lock-wait",
                "1",
                repo.to_str().unwrap(),
                "true",
            ])
            .env("BORG_BASE_DIR", base.path())
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "borg with-lock succeeded while we hold the lock"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("lock"), "{err}");
        drop(r);
        assert!(!repo.join("lock.exclusive").exists());
        assert!(!repo.join("lock.roster").exists());
        verify_with_borg(borg, &repo, &exp);
    }
}

const CRASH_ENV: &str = "PROXBORG_TEST_CRASH_REPO";

/// Runs only as the child of `crash_mid_transaction`: writes without committing, then
/// dies like `kill -9` (no destructors, lock left behind).
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_ENV) else {
        return;
    };
    let mut r = open_excl(Path::new(&path));
    r.put(&MANIFEST_ID, b"uncommitted manifest").unwrap();
    for i in 0..200 {
        let (id, data) = obj(77, i);
        r.put(&id, &data).unwrap();
    }
    // Big enough to push data past the write buffer into the file.
    for i in 200..203 {
        let (id, _) = obj(77, i);
        r.put(&id, &prng_bytes(i, 5 << 20)).unwrap();
    }
    let (id, _) = obj(5, 3);
    r.delete(&id).unwrap();
    std::process::abort();
}

#[test]
fn crash_mid_transaction() {
    for borg in Borg::ALL {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let mut exp = Expect::default();
        {
            let mut r = LocalRepository::create(&repo, CreateOptions::default()).unwrap();
            exp.put(&mut r, &MANIFEST_ID, b"committed manifest");
            for i in 0..50 {
                let (id, data) = obj(5, i);
                exp.put(&mut r, &id, &data);
            }
            r.commit().unwrap();
        }
        let committed = exp.clone();
        for i in 0..203 {
            exp.absent.insert(hex::encode(obj(77, i).0));
        }
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_ENV, &repo)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the writer was supposed to die");
        assert!(
            repo.join("lock.exclusive").exists(),
            "a killed writer leaves its lock"
        );
        // Also tear the last uncommitted segment mid-entry, as a crash during a write would.
        let segs: Vec<_> = std::fs::read_dir(repo.join("data/0"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let last = segs
            .iter()
            .max_by_key(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            })
            .unwrap();
        let len = std::fs::metadata(last).unwrap().len();
        assert!(
            len > 5 << 20,
            "the dead writer's data reached the segment file"
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(last)
            .unwrap()
            .set_len(len - 20)
            .unwrap();

        let mut exp_b = committed.clone();
        exp_b.absent = exp.absent.clone();
        let v = verify_with_borg(borg, &repo, &exp_b);
        // borg recognised our lock as its own host's dead process (same host id) and removed it.
        assert!(
            v["stale_locks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m.as_str().unwrap().contains("Killed stale lock")),
            "{}",
            v["stale_locks"]
        );
        verify_ours(&repo, &exp_b);
        // The next writer of ours cleans up and commits on top.
        {
            let mut r = open_excl(&repo);
            let (id, data) = obj(6, 1);
            exp_b.put(&mut r, &id, &data);
            r.commit().unwrap();
        }
        verify_with_borg(borg, &repo, &exp_b);
    }
}

#[test]
fn append_only_and_quota() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let mut exp = Expect::default();
    {
        let mut r = LocalRepository::create(
            &repo,
            CreateOptions {
                append_only: true,
                storage_quota: Some(1_000_000),
                make_parent_dirs: false,
            },
        )
        .unwrap();
        assert!(r.append_only());
        exp.put(&mut r, &MANIFEST_ID, b"m");
        r.commit().unwrap();
        let (id, data) = obj(8, 1);
        exp.put(&mut r, &id, &data);
        exp.delete(&mut r, &id); // borg allows deletes in append-only mode
        r.commit().unwrap();
        assert!(matches!(
            r.put(&obj(8, 2).0, &vec![0u8; 1_100_000]),
            Err(RepoError::StorageQuotaExceeded { .. })
        ));
        assert!(matches!(
            r.commit(),
            Err(RepoError::StorageQuotaExceeded { .. })
        ));
    }
    let log = std::fs::read_to_string(repo.join("transactions")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(log.starts_with("transaction 1, UTC time "), "{log}");
    let cfg = std::fs::read_to_string(repo.join("config")).unwrap();
    assert!(
        cfg.contains("\nappend_only = 1\nstorage_quota = 1000000\n"),
        "{cfg}"
    );
    for borg in Borg::ALL {
        verify_with_borg(borg, &repo, &exp);
    }
}

/// Our `config` has borg's exact layout, and repokeys travel both ways through it.
#[test]
fn config_layout_and_repokey() {
    let key_text = |n: usize| -> String {
        let b64: String = (0..n).map(|i| (b'A' + (i % 26) as u8) as char).collect();
        b64.as_bytes()
            .chunks(70)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    };
    for borg in Borg::ALL {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        run_py_json(
            borg,
            "repo.py",
            &["create", theirs.to_str().unwrap(), "1", "1"],
            b"",
        );
        let ours = dir.path().join("ours");
        let mut r = LocalRepository::create(&ours, CreateOptions::default()).unwrap();
        let strip_id = |p: &Path| -> String {
            std::fs::read_to_string(p.join("config"))
                .unwrap()
                .lines()
                .map(|l| {
                    if l.starts_with("id = ") {
                        "id = <id>"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip_id(&ours), strip_id(&theirs), "{}", borg.name());
        assert_eq!(
            std::fs::read(ours.join("README")).unwrap(),
            std::fs::read(theirs.join("README")).unwrap()
        );

        // Our key, borg reads it; borg's key, we read it; the config text is identical.
        let k1 = key_text(545);
        r.save_key(k1.as_bytes()).unwrap();
        drop(r);
        let v = run_py_json(borg, "repo.py", &["key", ours.to_str().unwrap()], b"");
        assert_eq!(v["key"].as_str().unwrap(), k1);
        let ours_cfg = std::fs::read_to_string(ours.join("config")).unwrap();
        let k2 = key_text(300);
        run_py_json(
            borg,
            "repo.py",
            &["key", theirs.to_str().unwrap(), &k1],
            b"",
        );
        let theirs_cfg = std::fs::read_to_string(theirs.join("config")).unwrap();
        let without_id = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with("id = "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            without_id(&ours_cfg),
            without_id(&theirs_cfg),
            "{}",
            borg.name()
        );
        run_py_json(
            borg,
            "repo.py",
            &["key", theirs.to_str().unwrap(), &k2],
            b"",
        );
        let mut r = open_excl(&theirs);
        assert_eq!(r.load_key().unwrap(), k2.as_bytes());
        assert!(!theirs.join("config.old").exists());
    }
}

#[test]
fn write_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let mut r = LocalRepository::create(&repo, CreateOptions::default()).unwrap();
    let data = prng_bytes(1, 1 << 20);
    let n = 256u64;
    let t = Instant::now();
    for i in 0..n {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        id[8..16].copy_from_slice(&i.to_le_bytes());
        r.put(&id, &data[(i as usize % 1024)..]).unwrap();
    }
    r.commit().unwrap();
    let el = t.elapsed();
    eprintln!(
        "put+commit of {n} MiB: {el:?} ({:.0} MB/s)",
        (n << 20) as f64 / el.as_secs_f64() / 1e6
    );
    let t = Instant::now();
    for i in 0..n {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        id[8..16].copy_from_slice(&i.to_le_bytes());
        assert_eq!(r.get(&id).unwrap().len(), (1 << 20) - (i as usize % 1024));
    }
    eprintln!("get of {n} MiB: {:?}", t.elapsed());
}
