//! prune / delete / compact / check end to end, against upstream borg 1.2.4 and 1.4.5:
//! on a repository holding archives of ours and of both borgs (faked times), our prune
//! keeps exactly what borg's own prune keeps on a copy, the kept archives extract
//! identically to borg's pruned copy, our compact frees what borg's does, and borg's
//! `check --verify-data` is clean afterwards — locally and through `borg serve`.

mod common;
#[path = "common/sshd.rs"]
mod sshd;

use std::path::Path;
use std::process::Command;

use common::tree::{diff, scan};
use common::{ok, prng_bytes, run, Borg, TestEnv};

const TZ: &str = "Europe/Berlin";
const KEEP: [&str; 6] = [
    "--keep-daily",
    "3",
    "--keep-weekly",
    "2",
    "--keep-monthly",
    "3",
];

fn tz(mut c: Command) -> Command {
    c.env("TZ", TZ).env_remove("BORG_HOSTNAME");
    c
}

/// What `{hostname}` expands to (borg: the short host name).
fn host() -> String {
    proxborg::placeholders::Placeholders::current().hostname
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        n += if md.is_dir() {
            dir_size(&e.path())
        } else {
            md.len()
        };
    }
    n
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn borg_check_clean(env: &TestEnv, v: Borg, repo: &str) {
    let (rc, out, err) = run(tz(env.borg(v)).args(["check", "--verify-data", repo]));
    assert_eq!(rc, 0, "{} check: {out}{err}", v.name());
    assert!(err.trim().is_empty(), "{} check warned: {err}", v.name());
}

/// Names from `--list` lines ("Keeping archive (rule: …): NAME  TIME [ID]").
fn listed(out: &str, prefix: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l[44..].split_whitespace().next().unwrap().to_string())
        .collect()
}

/// 18 archives over a year (ours, borg 1.4's and borg 1.2's), two checkpoints, and two
/// archives outside the glob; every archive adds new data.
fn build_repo(env: &TestEnv, repo: &str) -> Vec<String> {
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("shared"), prng_bytes(7, 100_000)).unwrap();
    ok(tz(env.ours()).args(["init", "-e", "repokey-blake2", repo]));
    let times = [
        "2024-01-05T10:00:00",
        "2024-01-20T10:00:00",
        "2024-02-11T23:30:00",
        "2024-02-29T12:00:00",
        "2024-03-30T12:00:00",
        "2024-03-31T00:30:00",
        "2024-03-31T03:30:00",
        "2024-04-07T09:00:00",
        "2024-04-08T09:00:00",
        "2024-04-15T09:00:00",
        "2024-04-16T21:59:59",
        "2024-04-16T22:00:01",
        "2024-04-17T08:00:00",
        "2024-04-18T08:00:00",
        "2024-04-18T20:00:00",
        "2024-04-19T06:00:00",
        "2024-04-20T06:00:00",
        "2024-04-21T06:00:00",
    ];
    let mut names = Vec::new();
    for (i, t) in times.iter().enumerate() {
        // every archive has data of its own (freed when it is pruned) and shared data
        let _ = std::fs::remove_file(src.join("own"));
        std::fs::write(src.join("own"), prng_bytes(100 + i as u64, 60_000)).unwrap();
        let name = format!("{}-{i:02}", host());
        let target = format!("{repo}::{{hostname}}-{i:02}");
        let cmd = match i % 4 {
            1 => tz(env.borg(Borg::V14)),
            3 if i < 10 => tz(env.borg(Borg::V12)),
            _ => tz(env.ours()),
        };
        let mut cmd = cmd;
        ok(cmd
            .current_dir(env.path())
            .args(["create", "--timestamp", t, &target, "src"]));
        names.push(name);
    }
    // an old checkpoint (pruned), the newest one (kept), and archives outside the glob
    let h = host();
    let extra = [
        (format!("{h}-02.checkpoint"), "2024-02-12T10:00:00"),
        (format!("{h}-17.checkpoint.1"), "2024-04-21T07:00:00"),
        ("other-1".to_string(), "2024-01-01T00:00:00"),
        ("other-2".to_string(), "2024-04-21T08:00:00"),
    ];
    for (n, t) in extra {
        ok(tz(env.ours()).current_dir(env.path()).args([
            "create",
            "--timestamp",
            t,
            &format!("{repo}::{n}"),
            "src",
        ]));
        names.push(n.to_string());
    }
    names
}

#[test]
fn prune_compact_match_borg() {
    let env = TestEnv::new();
    let repo_path = env.path().join("repo");
    let repo = repo_path.display().to_string();
    let all = build_repo(&env, &repo);

    // borg's verdict on an identical copy (own home: same cache/security state)
    let env2 = TestEnv::new();
    std::fs::remove_dir_all(env2.path().join("home")).unwrap();
    copy_tree(&env.path().join("home"), &env2.path().join("home"));
    copy_tree(&repo_path, &env2.path().join("repo"));
    let repo2 = env2.path().join("repo").display().to_string();
    let mut borg_dry = tz(env2.borg(Borg::V14));
    borg_dry
        .args(["prune", "--dry-run", "--list", "-a", "{hostname}-*"])
        .args(KEEP)
        .arg(&repo2);
    let (rc, _, borg_lines) = run(&mut borg_dry);
    assert_eq!(rc, 0, "{borg_lines}");
    // the copy lives elsewhere: drop borg's relocation notice
    let borg_lines: String = borg_lines
        .lines()
        .filter(|l| l.starts_with("Keeping") || l.starts_with("Would prune"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut our_dry = tz(env.ours());
    our_dry
        .args(["prune", "--dry-run", "--list", "-a", "{hostname}-*"])
        .args(KEEP)
        .arg(&repo);
    let (rc, _, our_lines) = run(&mut our_dry);
    assert_eq!(rc, 0, "{our_lines}");
    assert_eq!(
        our_lines, borg_lines,
        "dry-run --list output differs from borg 1.4's"
    );
    let borg_pruned = listed(&borg_lines, "Would prune:");
    let h = host();
    assert!(
        borg_pruned.len() >= 8 && borg_pruned.contains(&format!("{h}-02.checkpoint")),
        "{borg_lines}"
    );
    assert!(
        borg_lines.contains("Keeping checkpoint archive:"),
        "{borg_lines}"
    );
    // borg 1.2 (no quarterly rules, 40-column messages) decides the same
    let mut borg12 = tz(env2.borg(Borg::V12));
    borg12
        .args(["prune", "--dry-run", "--list", "--prefix", &format!("{h}-")])
        .args(KEEP)
        .arg(&repo2);
    let (rc, _, lines12) = run(&mut borg12);
    assert_eq!(rc, 0, "{lines12}");
    let pruned12: Vec<String> = lines12
        .lines()
        .filter(|l| l.starts_with("Would prune:"))
        .map(|l| l[40..].split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(pruned12, borg_pruned);

    // borg prunes and compacts its copy; we prune and compact ours
    let before = dir_size(&repo_path.join("data"));
    let mut bp = tz(env2.borg(Borg::V14));
    ok(bp
        .args(["prune", "-a", "{hostname}-*"])
        .args(KEEP)
        .arg(&repo2));
    ok(tz(env2.borg(Borg::V14)).args(["compact", &repo2]));
    let mut op = tz(env.ours());
    let (rc, out, err) = run(op
        .args(["prune", "--list", "--stats", "-a", "{hostname}-*"])
        .args(KEEP)
        .arg(&repo));
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(listed(&err, "Pruning archive"), borg_pruned);
    assert!(err.contains("Deleted data:"), "{err}");
    ok(tz(env.ours()).args(["compact", "-v", &repo]));
    let ours_after = dir_size(&repo_path.join("data"));
    let borg_after = dir_size(&env2.path().join("repo/data"));
    eprintln!("data/ before {before}, after: ours {ours_after}, borg {borg_after}");
    assert!(
        ours_after < before * 2 / 3,
        "compaction freed too little: {before} -> {ours_after}"
    );
    assert!(
        ours_after <= borg_after + borg_after / 50 + 4096,
        "ours {ours_after} vs borg {borg_after}"
    );

    // borg accepts the result and sees exactly the archives its own prune kept
    for v in Borg::ALL {
        borg_check_clean(&env, v, &repo);
    }
    let mut list =
        ok(tz(env.borg(Borg::V14)).args(["list", "--short", "--consider-checkpoints", &repo]))
            .lines()
            .map(String::from)
            .collect::<Vec<_>>();
    let mut want: Vec<String> = all
        .iter()
        .filter(|n| !borg_pruned.contains(n))
        .cloned()
        .collect();
    list.sort();
    want.sort();
    assert_eq!(list, want);
    let mut borg_list =
        ok(tz(env2.borg(Borg::V14)).args(["list", "--short", "--consider-checkpoints", &repo2]))
            .lines()
            .map(String::from)
            .collect::<Vec<_>>();
    borg_list.sort();
    assert_eq!(list, borg_list);

    // kept archives (ours and borg's) extract identically from both pruned repositories
    for n in ["16", "17", "07", "01"] {
        let name = &format!("{h}-{n}");
        assert!(
            list.contains(&name.to_string()),
            "{name} not kept: {list:?}"
        );
        let a = env.path().join(format!("x-{name}"));
        let b = env2.path().join(format!("x-{name}"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        ok(tz(env.borg(Borg::V14))
            .current_dir(&a)
            .args(["extract", &format!("{repo}::{name}")]));
        ok(tz(env2.borg(Borg::V14))
            .current_dir(&b)
            .args(["extract", &format!("{repo2}::{name}")]));
        let d = diff(&scan(&b.join("src")), &scan(&a.join("src")));
        assert!(d.is_empty(), "{name} differs:\n{}", d.join("\n"));
    }
    // our own check agrees
    let (rc, out, err) = run(tz(env.ours()).args(["check", "--verify-data", &repo]));
    assert_eq!(rc, 0, "{out}{err}");

    // delete: named archives and a glob, then borg is still happy and can write
    ok(tz(env.ours()).args([
        "delete",
        "--stats",
        &format!("{repo}::other-1"),
        &format!("{h}-16"),
    ]));
    let (rc, _, err) = run(tz(env.ours()).args(["delete", &format!("{repo}::nope")]));
    assert_eq!(rc, 1, "{err}");
    ok(tz(env.ours()).args(["delete", "-a", "*.checkpoint*", &repo]));
    ok(tz(env.ours()).args(["compact", &repo]));
    for v in Borg::ALL {
        borg_check_clean(&env, v, &repo);
    }
    let list = ok(tz(env.ours()).args(["list", "--short", &repo]));
    assert!(
        !list.contains("other-1")
            && !list.contains(&format!("{h}-16"))
            && !list.contains("checkpoint"),
        "{list}"
    );
    ok(tz(env.borg(Borg::V12)).current_dir(env.path()).args([
        "create",
        &format!("{repo}::after"),
        "src",
    ]));
    ok(tz(env.borg(Borg::V14)).args(["delete", &format!("{repo}::after")]));
    ok(tz(env.borg(Borg::V14)).args(["compact", &repo]));
    let (rc, out, err) = run(tz(env.ours()).args(["check", &repo]));
    assert_eq!(rc, 0, "{out}{err}");

    // --first / --last pick by archive time, as borg's own selection does
    let oldest = ok(tz(env.borg(Borg::V14)).args(["list", "--short", "--first", "1", &repo]));
    let newest = ok(tz(env.borg(Borg::V14)).args(["list", "--short", "--last", "1", &repo]));
    let (oldest, newest) = (oldest.trim(), newest.trim());
    assert!(!oldest.is_empty() && oldest != newest, "{oldest} {newest}");
    let listed = || ok(tz(env.borg(Borg::V14)).args(["list", "--short", &repo]));
    let has = |list: &str, name: &str| list.lines().any(|l| l == name);
    ok(tz(env.ours()).args(["delete", "--last", "1", "-a", "*", &repo]));
    let list = listed();
    assert!(!has(&list, newest) && has(&list, oldest), "{list}");
    ok(tz(env.ours()).args(["delete", "--first", "1", &repo]));
    let list = listed();
    assert!(!has(&list, oldest), "{list}");
    // --sort-by name: the last name in borg's own order goes
    let by_name = ok(tz(env.borg(Borg::V14)).args([
        "list",
        "--short",
        "--sort-by",
        "name",
        "--last",
        "1",
        &repo,
    ]));
    let by_name = by_name.trim();
    assert!(has(&list, by_name), "{by_name}");
    ok(tz(env.ours()).args(["delete", "--sort-by", "name", "--last", "1", &repo]));
    let list = listed();
    assert!(!has(&list, by_name), "{list}");
    borg_check_clean(&env, Borg::V14, &repo);
}

#[test]
fn prune_options_are_checked_like_borg() {
    let env = TestEnv::new();
    let repo = env.init_repo("none");
    let (rc, _, err) = run(env.ours().args(["prune", &repo]));
    assert_eq!(rc, 2);
    assert!(err.contains("At least one of the"), "{err}");
    let (rc, _, err) = run(env.ours().args(["prune", "--keep-within", "3x", &repo]));
    assert_eq!(rc, 2, "{err}");
    let (rc, _, err) = run(env.ours().args(["prune", "--keep-daily=0", &repo]));
    assert_eq!(rc, 2, "{err}");
    ok(env
        .ours()
        .args(["prune", "--keep-daily=-1", "--keep-within", "2d", &repo]));
}

/// Through `borg serve`: our prune deletes, the server compacts itself, both checks pass.
#[test]
fn remote_prune_compact_check() {
    let env = TestEnv::new();
    let sshd = sshd::Sshd::start();
    let key = sshd.client_key(None);
    let path = env.path().join("repo");
    let repo = sshd.url(&path);
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let remote = |c: Command, server: Borg| sshd.via(tz(c), &key, &server.exe());
    ok(remote(env.ours(), Borg::V14).args(["init", "-e", "repokey", &repo]));
    for (i, day) in ["01", "02", "03", "10", "11"].iter().enumerate() {
        std::fs::write(src.join("f"), prng_bytes(i as u64, 200_000)).unwrap();
        ok(remote(env.ours(), Borg::V14).current_dir(env.path()).args([
            "create",
            "--timestamp",
            &format!("2024-05-{day}T12:00:00"),
            &format!("{repo}::a-{day}"),
            "src",
        ]));
    }
    let before = dir_size(&path.join("data"));
    for server in Borg::ALL {
        let (rc, out, err) =
            run(remote(env.ours(), server).args(["prune", "--list", "--keep-daily", "2", &repo]));
        assert_eq!(rc, 0, "{out}{err}");
        ok(remote(env.ours(), server).args(["compact", &repo]));
        let (rc, out, err) =
            run(remote(env.ours(), server).args(["check", "--verify-data", &repo]));
        assert_eq!(rc, 0, "{} {out}{err}", server.name());
    }
    let after = dir_size(&path.join("data"));
    assert!(after < before / 2, "{before} -> {after}");
    let list = ok(remote(env.ours(), Borg::V12).args(["list", "--short", &repo]));
    assert_eq!(list, "a-10\na-11\n");
    borg_check_clean(&env, Borg::V14, &path.display().to_string());
}
