//! `create --checkpoint-interval`: checkpoints as borg writes them (`NAME.checkpoint`,
//! part items `PATH.borg_part_N`), checked by borg 1.2 and 1.4 after an interrupted run
//! and after a completed one, locally and through `borg serve` over ssh.
//!
//! The inputs are slow on purpose (a producer that pauses, a FIFO fed in steps) so that
//! checkpoints fall while files are half stored, with an interval of one second.

mod common;
#[path = "common/sshd.rs"]
mod sshd;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ok, prng_bytes, run, Borg, TestEnv};
use sshd::Sshd;

const MB: usize = 1_000_000;

/// Checks with `borg check --verify-data` (both versions); borg 1.2 reports chunks no
/// archive references as errors, so this fails on a checkpoint that misses any.
fn check_clean(env: &TestEnv, repo: &str) {
    for v in Borg::ALL {
        let (rc, out, err) = run(env.borg(v).args(["check", "-v", "--verify-data", repo]));
        assert_eq!(rc, 0, "{} check: {out}{err}", v.name());
        assert!(!err.contains("orphan"), "{} check: {err}", v.name());
    }
}

fn archives(env: &TestEnv, repo: &str) -> Vec<String> {
    let out = ok(env
        .borg(Borg::V14)
        .args(["list", "--consider-checkpoints", "--short", repo]));
    out.lines().map(str::to_string).collect()
}

/// `PATH SIZE` of every item, part items included.
fn listing(env: &TestEnv, archive: &str) -> Vec<String> {
    let out = ok(env.borg(Borg::V14).args([
        "list",
        "--consider-part-files",
        "--format",
        "{path} {size}{NL}",
        archive,
    ]));
    out.lines().map(str::to_string).collect()
}

fn extract_stdout(env: &TestEnv, archive: &str, paths: &[&str]) -> Vec<u8> {
    let out = env
        .borg(Borg::V14)
        .args(["extract", "--consider-part-files", "--stdout", archive])
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn wait_for(path: &Path, limit: Duration) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(t0.elapsed() < limit, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A run killed after its checkpoints leaves one `NAME.checkpoint` whose parts hold a
/// prefix of the stream; borg checks the repository clean, and the next run completes.
#[test]
fn interrupted_run_leaves_a_checkpoint_borg_accepts() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey-blake2");
    let data = prng_bytes(41, 40 * MB);
    let file = common::write_file(env.path(), "disk.raw", &data);
    let (mark, pid) = (env.path().join("sent"), env.path().join("pid"));
    // the producer sends half, pauses past a checkpoint, sends the rest but never ends
    let script = format!(
        "echo $$ > '{pid}'; head -c {half} '{f}'; sleep 2.5; tail -c +{rest} '{f}'; \
         touch '{mark}'; exec sleep 60",
        pid = pid.display(),
        half = 20 * MB,
        rest = 20 * MB + 1,
        f = file.display(),
        mark = mark.display(),
    );
    let mut child = env
        .ours()
        .args([
            "create",
            "--checkpoint-interval",
            "1",
            "--content-from-command",
            "--stdin-name",
            "vm.raw",
            &format!("{repo}::vm"),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .spawn()
        .unwrap();
    wait_for(&mark, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    let producer: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(producer),
        nix::sys::signal::Signal::SIGKILL,
    );

    // borg breaks the dead process's lock itself (same host, pid gone)
    assert_eq!(archives(&env, &repo), ["vm.checkpoint"]);
    let items = listing(&env, &format!("{repo}::vm.checkpoint"));
    assert!(!items.is_empty(), "the checkpoint has no part items");
    for (i, line) in items.iter().enumerate() {
        let want = format!("vm.raw.borg_part_{} ", i + 1);
        assert!(line.starts_with(&want), "{items:?}");
    }
    let parts = extract_stdout(&env, &format!("{repo}::vm.checkpoint"), &[]);
    assert!(
        parts.len() >= 12 * MB,
        "only {} bytes in the checkpoint's parts",
        parts.len()
    );
    assert!(
        parts[..] == data[..parts.len()],
        "the parts are not a prefix of the stream"
    );
    check_clean(&env, &repo);

    // the next run completes; its archive replaces nothing, the checkpoint stays until
    // deleted (as borg's), and deleting it leaves no orphans
    ok(env.ours().args([
        "create",
        "--content-from-command",
        "--stdin-name",
        "vm.raw",
        &format!("{repo}::vm2"),
        "--",
        "cat",
        &file.display().to_string(),
    ]));
    assert!(extract_stdout(&env, &format!("{repo}::vm2"), &[]) == data);
    ok(env
        .ours()
        .args(["delete", &format!("{repo}::vm.checkpoint")]));
    assert_eq!(archives(&env, &repo), ["vm2"]);
    check_clean(&env, &repo);
}

/// Ctrl-C (SIGINT) stops reading and writes a last checkpoint, as borg's first Ctrl-C
/// does, though no interval has passed; the run fails and the archive is not saved.
#[test]
fn sigint_writes_a_last_checkpoint() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey");
    let data = prng_bytes(42, 20 * MB);
    let file = common::write_file(env.path(), "disk.raw", &data);
    let (mark, pid) = (env.path().join("sent"), env.path().join("pid"));
    let script = format!(
        "echo $$ > '{pid}'; cat '{f}'; touch '{mark}'; exec sleep 60",
        pid = pid.display(),
        f = file.display(),
        mark = mark.display(),
    );
    let child = env
        .ours()
        .args([
            "create",
            "--content-from-command",
            &format!("{repo}::vm"),
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mark, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let signalled = Instant::now();
    let out = child.wait_with_output().unwrap();
    // the silent producer (it sleeps 60 s with its pipe open) is terminated, not awaited
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "the interrupted run waited for its producer"
    );
    let producer: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(producer),
        nix::sys::signal::Signal::SIGKILL,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(archives(&env, &repo), ["vm.checkpoint"]);
    let parts = extract_stdout(&env, &format!("{repo}::vm.checkpoint"), &[]);
    assert!(!parts.is_empty(), "the last checkpoint has no data");
    assert!(
        parts[..] == data[..parts.len()],
        "the parts are not a prefix of the stream"
    );
    check_clean(&env, &repo);
}

/// A completed run with checkpoints: the archive keeps the part items of the file read
/// across checkpoints (hidden unless asked for, concatenating to the whole file), no
/// checkpoint archive stays, and refcounts match borg's: deleting the archive with our
/// tool leaves nothing behind.
fn completed_run(env: &TestEnv, repo: &str, cmd: impl Fn() -> std::process::Command) {
    // regular files around a FIFO (`--read-special` would block on make_tree's own FIFO)
    let src = env.path().join("src");
    for i in 0..40u64 {
        std::fs::create_dir_all(src.join(format!("d{}", i % 4))).unwrap();
        let len = (i as usize * 37_000) % 300_000;
        common::write_file(
            &src.join(format!("d{}", i % 4)),
            &format!("f{i}"),
            &prng_bytes(i, len),
        );
    }
    let fifo = src.join("disk0");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let data = prng_bytes(43, 30 * MB);
    // fed in two steps: a checkpoint falls while the FIFO's file is half stored
    let feed = |pause: Duration| {
        let (fifo, data) = (fifo.clone(), data.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            f.write_all(&data[..20 * MB]).unwrap();
            std::thread::sleep(pause);
            f.write_all(&data[20 * MB..]).unwrap();
        })
    };
    let writer = feed(Duration::from_millis(2500));
    ok(cmd().current_dir(env.path()).args([
        "create",
        "-c",
        "1",
        "--read-special",
        &format!("{repo}::t"),
        "src",
    ]));
    writer.join().unwrap();
    let local = env.path().join("repo").display().to_string();
    assert_eq!(archives(env, &local), ["t"]);
    let items = listing(env, &format!("{local}::t"));
    let parts: Vec<&String> = items
        .iter()
        .filter(|l| l.starts_with("src/disk0.borg_part_"))
        .collect();
    assert!(!parts.is_empty(), "no part items: {items:?}");
    let part_paths: Vec<String> = parts
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let part_refs: Vec<&str> = part_paths.iter().map(String::as_str).collect();
    let joined = extract_stdout(env, &format!("{local}::t"), &part_refs);
    assert!(joined == data, "the parts do not concatenate to the file");
    assert!(extract_stdout(env, &format!("{local}::t"), &["src/disk0"]) == data);
    let plain = ok(env
        .borg(Borg::V14)
        .args(["list", "--short", &format!("{local}::t")]));
    assert!(!plain.contains("borg_part"), "{plain}");
    check_clean(env, &local);

    // a second archive shares every chunk; deleting the first with our chunk counts
    // must keep all of them (part refs undercounted would lose some), deleting the
    // second must leave none (overcounted would leave orphans)
    let writer = feed(Duration::ZERO);
    ok(cmd().current_dir(env.path()).args([
        "create",
        "--read-special",
        &format!("{repo}::u"),
        "src",
    ]));
    writer.join().unwrap();
    // without the cache's per-archive lists, delete counts t's references from its items
    // (as borg's resync does): the saved totals must include the part items' references
    let cache = env.path().join("home/.cache/borg/proxborg-native");
    for d in std::fs::read_dir(&cache).unwrap().flatten() {
        let _ = std::fs::remove_dir_all(d.path().join("archives"));
    }
    ok(cmd().args(["delete", &format!("{repo}::t")]));
    check_clean(env, &local);
    assert!(extract_stdout(env, &format!("{local}::u"), &["src/disk0"]) == data);
    ok(cmd().args(["delete", &format!("{repo}::u")]));
    check_clean(env, &local);
}

#[test]
fn completed_run_keeps_parts_and_no_checkpoint() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey");
    completed_run(&env, &repo, || env.ours());
}

/// The same through `borg serve` 1.2 over ssh: a commit in mid-run, then more puts.
#[test]
fn completed_run_through_borg_serve() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let key = sshd.client_key(None);
    let repo = sshd.url(&env.path().join("repo"));
    let remote = || sshd.via(env.ours(), &key, &Borg::V12.exe());
    ok(remote().args(["init", "-e", "repokey-blake2", &repo]));
    completed_run(&env, &repo, remote);
}
