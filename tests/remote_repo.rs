//! `RemoteRepository` against real `borg serve` 1.2.4 and 1.4.5 behind a private sshd on
//! loopback; borg's own `Repository` class (local access to the same directory) is the
//! oracle for what ended up on disk.

mod common;
#[path = "common/sshd.rs"]
mod sshd;

use common::{prng_bytes, run_py_json, Borg, TestEnv};
use proxborg::location::Repo;
use proxborg::repo::remote::{RemoteOptions, RemoteRepository};
use proxborg::repo::{ObjectId, RepoError, Repository};
use sha2::{Digest, Sha256};
use sshd::Sshd;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn oid(seed: u64) -> ObjectId {
    prng_bytes(seed ^ 0x1d5, 32).try_into().unwrap()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn location(sshd: &Sshd, path: &Path) -> Repo {
    Repo::Ssh {
        user: None,
        host: "127.0.0.1".into(),
        port: Some(sshd.port),
        path: path.to_string_lossy().into_owned(),
    }
}

fn options(borg: Borg, sshd: &Sshd, key: &Path) -> RemoteOptions {
    RemoteOptions {
        rsh: Some(sshd.rsh_without_port(key)),
        remote_path: Some(borg.exe().to_string_lossy().into_owned()),
        ..Default::default()
    }
}

/// What borg's own `Repository` sees in the directory.
fn dump(borg: Borg, path: &Path) -> serde_json::Value {
    run_py_json(
        borg,
        "remote_repo.py",
        &["dump", path.to_str().unwrap()],
        b"",
    )
}

fn objects_of(d: &serde_json::Value) -> BTreeMap<String, String> {
    d["objects"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// Sizes from empty to a few MiB, mostly small like real chunks.
fn size_of(i: u64) -> usize {
    match i % 50 {
        0 => (1 << 20) + (i as usize * 7919) % (3 << 20),
        1 => 0,
        _ => (i as usize * 2654435761) % 24_000,
    }
}

fn roundtrip(borg: Borg) {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let key = sshd.client_key(None);
    let path = env.path().join("repo");
    let loc = location(&sshd, &path);
    let mut want: BTreeMap<ObjectId, Vec<u8>> = BTreeMap::new();

    // init + first transaction, pipelined.
    let mut opts = options(borg, &sshd, &key);
    opts.create = true;
    let mut r = RemoteRepository::open(&loc, &opts).unwrap();
    let repo_id = r.id();
    assert_ne!(repo_id, [0; 32]);
    assert_eq!(
        r.location(),
        format!("ssh://127.0.0.1:{}{}", sshd.port, path.display())
    );
    assert!(r
        .server_version()
        .starts_with(&[1, if borg == Borg::V12 { 2 } else { 4 }]));
    assert_eq!(r.load_key().unwrap(), b"");
    r.save_key(b"BORG_KEY 0123abcd\nline2").unwrap();
    assert_eq!(r.load_key().unwrap(), b"BORG_KEY 0123abcd\nline2");

    // Nonce reservation is a compare-and-set.
    assert_eq!(r.get_free_nonce().unwrap(), None);
    r.commit_nonce_reservation(1000, None).unwrap();
    assert_eq!(r.get_free_nonce().unwrap(), Some(1000));
    match r.commit_nonce_reservation(2000, Some(999)) {
        Err(RepoError::NonceMismatch(_)) => {}
        other => panic!("stale start nonce accepted: {other:?}"),
    }
    match r.commit_nonce_reservation(2000, None) {
        Err(RepoError::NonceMismatch(_)) => {}
        other => panic!("missing start nonce accepted: {other:?}"),
    }
    r.commit_nonce_reservation(0x1_0000_0000, Some(1000))
        .unwrap();
    assert_eq!(r.get_free_nonce().unwrap(), Some(0x1_0000_0000));

    let t = Instant::now();
    let mut bytes = 0;
    for i in 0..300u64 {
        let data = prng_bytes(i, size_of(i));
        bytes += data.len();
        r.put(&oid(i), &data).unwrap();
        want.insert(oid(i), data);
    }
    // Uncommitted puts are visible to this transaction.
    assert!(r.contains(&oid(7)).unwrap());
    assert!(!r.contains(&oid(100_000)).unwrap());
    r.commit().unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{}: put+commit of 300 objects, {:.1} MB in {secs:.2} s ({:.0} MB/s)",
        borg.name(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs
    );
    assert_eq!(r.len().unwrap(), 300);
    drop(r);

    // Existing repository: create again fails, a missing one is reported as such.
    match RemoteRepository::open(&loc, &opts) {
        Err(RepoError::AlreadyExists(p)) => assert!(p.to_string_lossy().contains("ssh://")),
        Err(e) => panic!("create over an existing repo: {e}"),
        Ok(_) => panic!("create over an existing repo succeeded"),
    }
    let missing = location(&sshd, &env.path().join("nope"));
    match RemoteRepository::open(&missing, &options(borg, &sshd, &key)) {
        Err(RepoError::DoesNotExist(_)) => {}
        Err(e) => panic!("open of a missing repo: {e}"),
        Ok(_) => panic!("open of a missing repo succeeded"),
    }

    // Reopen: everything reads back, list pages, deletes commit.
    let opts = options(borg, &sshd, &key);
    let mut r = RemoteRepository::open(&loc, &opts).unwrap();
    assert_eq!(r.id(), repo_id);
    assert_eq!(r.len().unwrap(), 300);
    let ids: Vec<ObjectId> = want.keys().copied().collect();
    let got = r.get_many(&ids).unwrap();
    for (id, data) in ids.iter().zip(&got) {
        assert!(want[id] == *data, "object {} differs", hex::encode(id));
    }
    assert_eq!(r.get(&oid(50)).unwrap(), want[&oid(50)]);
    let mut listed = BTreeSet::new();
    let mut marker = None;
    loop {
        let page = r.list(64, marker.as_ref()).unwrap();
        assert!(page.len() <= 64);
        marker = page.last().copied();
        let n = page.len();
        listed.extend(page);
        if n < 64 {
            break;
        }
    }
    assert_eq!(listed, want.keys().copied().collect::<BTreeSet<_>>());
    match r.get(&oid(100_001)) {
        Err(RepoError::ObjectNotFound(id, _)) => assert_eq!(id, oid(100_001)),
        other => panic!("get of a missing object: {other:?}"),
    }
    for i in (0..300u64).step_by(6) {
        r.delete(&oid(i)).unwrap();
        want.remove(&oid(i));
    }
    assert!(!r.contains(&oid(0)).unwrap());
    assert!(r.contains(&oid(1)).unwrap());
    r.commit().unwrap();
    assert_eq!(r.len().unwrap(), want.len() as u64);

    // Rolled back and dropped-uncommitted writes leave no trace.
    r.put(&oid(5000), b"rolled back").unwrap();
    r.delete(&oid(1)).unwrap();
    r.rollback().unwrap();
    assert_eq!(r.len().unwrap(), want.len() as u64);
    assert!(r.contains(&oid(1)).unwrap());
    r.put(&oid(5001), b"never committed").unwrap();
    drop(r);

    // A failed pipelined write dooms the transaction until rollback.
    let mut r = RemoteRepository::open(&loc, &opts).unwrap();
    r.put(&oid(6000), b"doomed").unwrap();
    r.delete(&oid(0)).unwrap(); // deleted above: ObjectNotFound arrives asynchronously
    match r.commit() {
        Err(RepoError::ObjectNotFound(id, _)) => assert_eq!(id, oid(0)),
        other => panic!("commit after a failed delete: {other:?}"),
    }
    let e = r.commit().unwrap_err().to_string();
    assert!(e.contains("roll back"), "{e}");
    r.rollback().unwrap();
    assert_eq!(r.len().unwrap(), want.len() as u64);
    drop(r);

    let d = dump(borg, &path);
    assert_eq!(d["check"], true, "borg check failed: {d}");
    let expect: BTreeMap<String, String> =
        want.iter().map(|(k, v)| (hex::encode(k), sha(v))).collect();
    assert_eq!(objects_of(&d), expect);
    assert_eq!(d["key"], "BORG_KEY 0123abcd\nline2");
    assert_eq!(d["nonce"], "0000000100000000");
    assert_eq!(d["append_only"], false);
}

fn restrict_to_path(borg: Borg) {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let allowed = env.path().join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(env.path().join("allowedfoo")).unwrap();
    let forced = format!(
        "{} serve --restrict-to-path {}",
        borg.exe().display(),
        allowed.display()
    );
    let key = sshd.client_key(Some(&forced));
    let mut opts = options(borg, &sshd, &key);
    opts.create = true;

    let inside = allowed.join("repo");
    let mut r = RemoteRepository::open(&location(&sshd, &inside), &opts).unwrap();
    r.put(&oid(1), b"inside").unwrap();
    r.commit().unwrap();
    drop(r);

    // A sibling sharing the prefix is outside, as in borg (trailing-slash comparison).
    for outside in [env.path().join("allowedfoo/repo"), env.path().join("repo")] {
        match RemoteRepository::open(&location(&sshd, &outside), &opts) {
            Err(e @ RepoError::Other(_)) => {
                let m = e.to_string();
                eprintln!("{}: {m}", borg.name());
                assert!(
                    m.contains("not allowed") && m.contains(&outside.to_string_lossy().to_string()),
                    "{m}"
                );
            }
            Err(e) => panic!("unexpected error: {e:?}"),
            Ok(_) => panic!(
                "{} was opened despite --restrict-to-path",
                outside.display()
            ),
        }
        assert!(!outside.exists());
    }
    let d = dump(borg, &inside);
    assert_eq!(d["check"], true);
    assert_eq!(objects_of(&d).len(), 1);
}

/// `borg serve --append-only`: init ignores it (the new repo is not append-only), later
/// opens get it. Deletes are allowed and commit; the data stays in the segments and the
/// transaction is logged in `transactions`.
fn append_only(borg: Borg) {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let forced = format!("{} serve --append-only", borg.exe().display());
    let key = sshd.client_key(Some(&forced));
    let path = env.path().join("repo");
    let loc = location(&sshd, &path);
    let mut opts = options(borg, &sshd, &key);
    opts.create = true;
    let mut r = RemoteRepository::open(&loc, &opts).unwrap();
    for i in 0..10 {
        r.put(&oid(i), &prng_bytes(i, 5000)).unwrap();
    }
    r.commit().unwrap();
    drop(r);
    assert!(
        !path.join("transactions").exists(),
        "init must not be append-only"
    );

    opts.create = false;
    let mut r = RemoteRepository::open(&loc, &opts).unwrap();
    for i in 0..3 {
        r.delete(&oid(i)).unwrap();
    }
    r.commit().unwrap();
    assert_eq!(r.len().unwrap(), 7);
    drop(r);

    let d = dump(borg, &path);
    assert_eq!(d["check"], true);
    assert_eq!(objects_of(&d).len(), 7);
    assert_eq!(
        d["transactions"], true,
        "append-only mode did not log the transaction"
    );
    // The deleted objects' bytes are still in the segment files.
    let needle = &prng_bytes(0, 5000)[..64];
    let mut found = false;
    for entry in walk(&path.join("data")) {
        let data = std::fs::read(entry).unwrap();
        found |= data.windows(needle.len()).any(|w| w == needle);
    }
    assert!(found, "append-only delete removed the data");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The server dies mid-transaction: our calls fail promptly with the reason, and the
/// repository (after borg breaks the dead server's stale lock) holds only committed data.
fn server_death(borg: Borg) {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let key = sshd.client_key(None);
    let path = env.path().join("repo");
    let loc = location(&sshd, &path);
    let mut opts = options(borg, &sshd, &key);
    opts.create = true;
    let mut r = RemoteRepository::open(&loc, &opts).unwrap();
    for i in 0..20 {
        r.put(&oid(i), &prng_bytes(i, 1000)).unwrap();
    }
    r.commit().unwrap();

    let t = Instant::now();
    let mut failure = None;
    for i in 100..5000u64 {
        if i == 300 {
            assert!(sshd.kill_sessions() > 0, "no server processes found");
        }
        let res = r.put(&oid(i), &prng_bytes(i, 64 << 10));
        if let Err(e) = res {
            failure = Some(e);
            break;
        }
    }
    let e = match failure {
        Some(e) => e,
        None => r.commit().expect_err("commit after the server died"),
    };
    let m = e.to_string();
    eprintln!("{}: after server death: {m}", borg.name());
    assert!(
        m.contains("connection to ssh://") && m.contains("closed"),
        "{m}"
    );
    // Every later call fails the same way, at once.
    assert!(r.len().unwrap_err().to_string().contains("closed"));
    drop(r);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );

    let d = dump(borg, &path);
    assert_eq!(d["check"], true);
    let expect: BTreeSet<String> = (0..20).map(|i| hex::encode(oid(i))).collect();
    assert_eq!(
        objects_of(&d).keys().cloned().collect::<BTreeSet<_>>(),
        expect
    );
}

fn lock_timeout(borg: Borg) {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let key = sshd.client_key(None);
    let path = env.path().join("repo");
    let loc = location(&sshd, &path);
    let mut opts = options(borg, &sshd, &key);
    opts.create = true;
    let first = RemoteRepository::open(&loc, &opts).unwrap();
    opts.create = false;
    opts.lock_wait = 1.0;
    let t = Instant::now();
    match RemoteRepository::open(&loc, &opts) {
        Err(e @ RepoError::LockTimeout(..)) => {
            eprintln!("{}: {e}", borg.name());
            assert!(e.to_string().contains("lock"), "{e}");
        }
        Err(e) => panic!("expected a lock timeout: {e:?}"),
        Ok(_) => panic!("second exclusive open succeeded"),
    }
    assert!(t.elapsed() >= Duration::from_secs(1));
    drop(first);
    // Released on close: a new open gets the lock at once.
    let mut again = RemoteRepository::open(&loc, &opts).unwrap();
    assert_eq!(again.len().unwrap(), 0);
    // Nothing written: commit is a no-op (the server would fail without a transaction).
    again.commit().unwrap();
    again.rollback().unwrap();
    assert_eq!(again.len().unwrap(), 0);
}

/// A server command that does not exist: a clear error, not a hang.
fn broken_server(borg: Borg) {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let key = sshd.client_key(None);
    let mut opts = options(borg, &sshd, &key);
    opts.remote_path = Some("/nonexistent/borg".into());
    let t = Instant::now();
    let e = match RemoteRepository::open(&location(&sshd, &env.path().join("r")), &opts) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened through a missing borg"),
    };
    eprintln!("{}: {e}", borg.name());
    assert!(
        e.contains("closed") && e.contains("/nonexistent/borg") && e.contains("is borg working"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
}

macro_rules! both {
    ($($f:ident),*) => {
        mod v12 {
            $( #[test] fn $f() { super::$f(super::Borg::V12) } )*
        }
        mod v14 {
            $( #[test] fn $f() { super::$f(super::Borg::V14) } )*
        }
    };
}

both!(
    roundtrip,
    restrict_to_path,
    append_only,
    server_death,
    lock_timeout,
    broken_server
);
