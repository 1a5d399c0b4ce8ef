//! Bad input gives a clear one-line error (exit 2) and leaves the repository untouched;
//! an unreadable source is a warning (exit 1) and the archive is still written.

mod common;

use common::{ok, run, Borg, TestEnv};

fn repo_state(path: &std::path::Path) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                v.push((e.path().display().to_string(), m.len()));
            }
        }
    }
    v.sort();
    v
}

fn setup(mode: &str) -> (TestEnv, String) {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path().join("src")).unwrap();
    std::fs::write(env.path().join("src/f"), b"data").unwrap();
    let repo = env.init_repo(mode);
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::a"), "src"]));
    (env, repo)
}

#[track_caller]
fn fails_cleanly(env: &TestEnv, repo: &str, cmd: &mut std::process::Command, needle: &str) {
    let before = repo_state(std::path::Path::new(repo));
    let (rc, _out, err) = run(cmd);
    assert_eq!(rc, 2, "expected rc 2, got {rc}: {err}");
    assert!(
        err.contains(needle),
        "error should mention {needle:?}: {err}"
    );
    assert!(
        err.lines().filter(|l| !l.trim().is_empty()).count() <= 2,
        "error should be short: {err}"
    );
    assert_eq!(
        before,
        repo_state(std::path::Path::new(repo)),
        "repository changed"
    );
    let _ = env;
}

#[test]
fn wrong_passphrase() {
    let (env, repo) = setup("repokey-blake2");
    let mut c = env.ours();
    c.env("BORG_PASSPHRASE", "wrong")
        .current_dir(env.path())
        .args(["create", &format!("{repo}::b"), "src"]);
    fails_cleanly(&env, &repo, &mut c, "passphrase");
}

#[test]
fn not_a_repository() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path().join("plain/dir")).unwrap();
    let p = env.path().join("plain").display().to_string();
    let (rc, _, err) = run(env.ours().args(["list", &p]));
    assert_eq!(rc, 2);
    assert!(
        err.contains("not a valid") || err.contains("does not exist") || err.contains("repository"),
        "{err}"
    );
}

#[test]
fn unknown_compression() {
    let (env, repo) = setup("none");
    let mut c = env.ours();
    c.current_dir(env.path())
        .args(["create", "-C", "snappy", &format!("{repo}::b"), "src"]);
    fails_cleanly(&env, &repo, &mut c, "snappy");
}

#[test]
fn archive_exists() {
    let (env, repo) = setup("repokey");
    let mut c = env.ours();
    c.current_dir(env.path())
        .args(["create", &format!("{repo}::a"), "src"]);
    fails_cleanly(&env, &repo, &mut c, "already exists");
}

#[test]
fn locked_by_live_borg() {
    let (env, repo) = setup("none");
    let mut holder = env
        .borg(Borg::V14)
        .args(["with-lock", &repo, "sleep", "20"])
        .spawn()
        .unwrap();
    // wait until borg holds the lock
    let lockdir = std::path::Path::new(&repo).join("lock.exclusive");
    for _ in 0..200 {
        if lockdir.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(lockdir.exists(), "borg did not take the lock");
    let mut c = env.ours();
    c.current_dir(env.path())
        .args(["create", "--lock-wait", "1", &format!("{repo}::b"), "src"]);
    let (rc, _, err) = run(&mut c);
    holder.kill().ok();
    holder.wait().ok();
    assert_eq!(rc, 2, "{err}");
    assert!(err.to_lowercase().contains("lock"), "{err}");
}

#[test]
fn unreadable_source_is_a_warning() {
    let (env, repo) = setup("none");
    std::fs::create_dir_all(env.path().join("src2")).unwrap();
    std::fs::write(env.path().join("src2/ok"), b"fine").unwrap();
    let (rc, _, err) = run(env.ours().current_dir(env.path()).args([
        "create",
        &format!("{repo}::b"),
        "src2",
        "missing-path",
    ]));
    assert_eq!(rc, 1, "missing source must be a warning: {err}");
    assert!(err.contains("missing-path"), "{err}");
    let list = ok(env.ours().args(["list", "--short", &format!("{repo}::b")]));
    assert!(list.contains("src2/ok"), "{list}");
    let (rc, out, err) = run(env.borg(Borg::V14).args(["check", &repo]));
    assert_eq!(rc, 0, "{out}{err}");
}
