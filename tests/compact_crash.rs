//! kill -9 during our compaction, at precise points: `strace` delivers SIGKILL on entry
//! to the n-th `write`, `fdatasync`, `fsync`, `unlink` or `rename` of the compacting
//! process (data copies, intermediate and final COMMITs, segment removal, index
//! files). After every crash borg 1.4 (`check --verify-data`) and borg 1.2 (`check`)
//! find a consistent repository with every archive, and compacting again completes.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, prng_bytes, run, Borg, TestEnv};

fn copy(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A repository with small segments where every segment is about half garbage: archive
/// "all" (every file) was deleted, "odd" (every other file) and borg's "b14" remain.
fn sparse_repo(env: &TestEnv) -> PathBuf {
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..120u64 {
        std::fs::write(src.join(format!("f{i:03}")), prng_bytes(i, 30_000)).unwrap();
    }
    let other = env.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("x"), prng_bytes(999, 200_000)).unwrap();
    let repo = env.path().join("base");
    let r = repo.display().to_string();
    ok(env.ours().args(["init", "-e", "repokey", &r]));
    let cfg = std::fs::read_to_string(repo.join("config")).unwrap();
    std::fs::write(
        repo.join("config"),
        cfg.replace("max_segment_size = 524288000", "max_segment_size = 65536"),
    )
    .unwrap();
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{r}::all"), "src"]));
    ok(env.ours().current_dir(env.path()).args([
        "create",
        "--exclude",
        "src/f*[02468]",
        &format!("{r}::odd"),
        "src",
    ]));
    ok(env
        .borg(Borg::V14)
        .current_dir(env.path())
        .args(["create", &format!("{r}::b14"), "other"]));
    ok(env.ours().args(["delete", &format!("{r}::all")]));
    repo
}

/// How often the compacting process enters each syscall.
fn syscall_counts(env: &TestEnv, repo: &Path) -> std::collections::HashMap<String, usize> {
    let log = env.path().join("trace.log");
    let st = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .args(["-e", "trace=write,fdatasync,fsync,unlink,rename"])
        .arg(env!("CARGO_BIN_EXE_proxborg-native"))
        .args(["compact", &repo.display().to_string()])
        .envs(
            env.ours()
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .status()
        .unwrap();
    assert!(st.success());
    let mut counts = std::collections::HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let call = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .split('(')
            .next()
            .unwrap_or("");
        *counts.entry(call.to_string()).or_insert(0) += 1;
    }
    counts
}

fn archives(env: &TestEnv, v: Borg, repo: &Path) -> Vec<String> {
    let out = ok(env
        .borg(v)
        .args(["list", "--short", &repo.display().to_string()]));
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn kill_during_compaction_loses_nothing() {
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is required (compat/setup.sh installs it)");
    }
    let env = TestEnv::new();
    let base = sparse_repo(&env);
    let want = vec!["b14".to_string(), "odd".to_string()];
    let probe = env.path().join("probe");
    copy(&base, &probe);
    let counts = syscall_counts(&env, &probe);
    eprintln!("syscalls of one compaction: {counts:?}");
    // crash points spread over each kind of step
    let mut points = Vec::new();
    for (call, samples) in [
        ("rename", 4),
        ("fdatasync", 5),
        ("unlink", 5),
        ("write", 3),
        ("fsync", 2),
    ] {
        let n = counts.get(call).copied().unwrap_or(0);
        assert!(n > 0, "no {call} seen: {counts:?}");
        for k in 1..=samples.min(n) {
            points.push((call, (k * n).div_ceil(samples.min(n)).max(1)));
        }
    }
    points.dedup();
    for (call, when) in points {
        let case = env.path().join(format!("crash-{call}-{when}"));
        copy(&base, &case);
        let st = Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!("inject={call}:signal=KILL:when={when}"))
            .arg(env!("CARGO_BIN_EXE_proxborg-native"))
            .args(["compact", &case.display().to_string()])
            .envs(
                env.ours()
                    .get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .status()
            .unwrap();
        let killed = st.signal() == Some(9) || st.code() == Some(137);
        assert!(killed, "{call} #{when}: compaction was not killed ({st:?})");
        // borg 1.2 on its own copy (checks may replay and rewrite index files)
        let case12 = env.path().join(format!("crash-{call}-{when}-12"));
        copy(&case, &case12);
        let (rc, out, err) =
            run(env
                .borg(Borg::V14)
                .args(["check", "--verify-data", &case.display().to_string()]));
        assert_eq!(rc, 0, "{call} #{when}: borg 1.4 check: {out}{err}");
        let (rc, out, err) = run(env
            .borg(Borg::V12)
            .args(["check", &case12.display().to_string()]));
        assert_eq!(rc, 0, "{call} #{when}: borg 1.2 check: {out}{err}");
        assert_eq!(archives(&env, Borg::V14, &case), want, "{call} #{when}");
        assert_eq!(archives(&env, Borg::V12, &case12), want, "{call} #{when}");
        // compacting again finishes the job; borg 1.2 compacts the other copy
        ok(env.ours().args(["compact", &case.display().to_string()]));
        let (rc, out, err) = run(env.ours().args(["check", &case.display().to_string()]));
        assert_eq!(
            rc, 0,
            "{call} #{when}: our check after resuming: {out}{err}"
        );
        ok(env
            .borg(Borg::V12)
            .args(["compact", &case12.display().to_string()]));
        let _ = std::fs::remove_dir_all(&case12);
    }
    // and a finished compaction of the probe copy is clean for both
    for v in Borg::ALL {
        let (rc, out, err) = run(env.borg(v).args(["check", &probe.display().to_string()]));
        assert_eq!(rc, 0, "{out}{err}");
    }
}
