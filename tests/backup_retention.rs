//! `backup`'s retention step (proxborg's PRUNE_OPTS / PRUNE_ON_WARNINGS, plus compact):
//! image-mode backups with the fixture Proxmox tools into a repository that already holds
//! older archives of the same and of other guests (faked times). Prune runs once per
//! prefix backed up, only on success (or warnings, if asked), and compacts; borg 1.2 and
//! 1.4 check the result.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, prng_bytes, run, Borg, TestEnv};

fn fixture(env: &TestEnv) -> PathBuf {
    let f = env.path().join("pve");
    for d in ["etc/pve/lxc", "vzdump"] {
        std::fs::create_dir_all(f.join(d)).unwrap();
    }
    std::fs::write(
        f.join("resources.json"),
        r#"[{"id":"qemu/200","vmid":200,"name":"vm200","node":"pve1","type":"qemu","status":"running"},
{"id":"qemu/201","vmid":201,"name":"vm201","node":"pve1","type":"qemu","status":"running"},
{"id":"lxc/300","vmid":300,"name":"far","node":"pve2","type":"lxc","status":"running"}]"#,
    )
    .unwrap();
    f
}

fn backup(env: &TestEnv, fixture: &Path, repo: &str) -> Command {
    let mut c = env.ours();
    let path = format!(
        "{}:{}",
        common::root().join("tests/fixtures/pve/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.env("PATH", path)
        .env("PBN_FIXTURE", fixture)
        .env("PROXBORG_PVE_DIR", fixture.join("etc/pve"))
        .env("PROXBORG_NODE", "pve1")
        .env("BORG_REPO", repo)
        .env("TZ", "UTC")
        .env_remove("PRUNE_OPTS")
        .env_remove("PRUNE_ON_WARNINGS")
        .arg("backup")
        .arg("--lock-file")
        .arg(fixture.join("lock"));
    c
}

fn archives(env: &TestEnv, repo: &str) -> Vec<String> {
    let out = ok(env.borg(Borg::V14).args(["list", "--short", repo]));
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

fn data_size(repo: &Path) -> u64 {
    std::fs::read_dir(repo.join("data/0"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn backup_prunes_per_prefix_and_compacts() {
    let env = TestEnv::new();
    let fx = fixture(&env);
    let repo_path = env.path().join("repo");
    let repo = repo_path.display().to_string();
    ok(env.ours().args(["init", "-e", "repokey-blake2", &repo]));
    // older archives: five days of guest 200, two of guest 201 (other prefix)
    let old = env.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    for (i, day) in ["01", "02", "03", "04", "05"].iter().enumerate() {
        std::fs::write(old.join("img"), prng_bytes(i as u64, 300_000)).unwrap();
        ok(env.ours().current_dir(env.path()).args([
            "create",
            "--timestamp",
            &format!("2024-06-{day}T03:00:00"),
            &format!("{repo}::vzdump-qemu-200-2024_06_{day}-03_00_00.vma"),
            "old",
        ]));
    }
    for day in ["01", "02"] {
        ok(env.borg(Borg::V14).current_dir(env.path()).args([
            "create",
            "--timestamp",
            &format!("2024-06-{day}T04:00:00"),
            &format!("{repo}::vzdump-qemu-201-2024_06_{day}-04_00_00.vma"),
            "old",
        ]));
    }
    std::fs::write(fx.join("vzdump/200.bin"), prng_bytes(50, 400_000)).unwrap();
    std::fs::write(fx.join("vzdump/201.bin"), prng_bytes(51, 100_000)).unwrap();

    // a warning (guest on another node): no prune unless PRUNE_ON_WARNINGS
    let before = archives(&env, &repo);
    let (rc, _, err) = run(backup(&env, &fx, &repo)
        .env("PRUNE_OPTS", "--keep-daily=2 --list")
        .args(["200", "far"]));
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("prune skipped"), "{err}");
    let after_warn = archives(&env, &repo);
    assert_eq!(after_warn.len(), before.len() + 1, "{after_warn:?}");

    // a failure: never prune
    std::fs::write(fx.join("vzdump/200.fail"), b"").unwrap();
    let (rc, _, err) = run(backup(&env, &fx, &repo)
        .env("PRUNE_OPTS", "--keep-daily=1")
        .env("PRUNE_ON_WARNINGS", "1")
        .arg("200"));
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("prune skipped"), "{err}");
    std::fs::remove_file(fx.join("vzdump/200.fail")).unwrap();
    assert_eq!(archives(&env, &repo), after_warn);

    // warnings allowed: prune guest 200's prefix only, keep 2 days, then compact
    let size_before = data_size(&repo_path);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (rc, _, err) = run(backup(&env, &fx, &repo)
        .env("PRUNE_OPTS", "--keep-daily=2 --list")
        .env("PRUNE_ON_WARNINGS", "1")
        .args(["200", "far"]));
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("prune vzdump-qemu-200-*: 2 kept, 5 pruned"),
        "{err}"
    );
    let now = archives(&env, &repo);
    let g200: Vec<&String> = now
        .iter()
        .filter(|n| n.starts_with("vzdump-qemu-200-"))
        .collect();
    let g201: Vec<&String> = now
        .iter()
        .filter(|n| n.starts_with("vzdump-qemu-201-"))
        .collect();
    assert_eq!(g200.len(), 2, "{now:?}");
    // one per day: today's newest run and June 5th
    assert!(
        g200.iter()
            .any(|n| n.as_str() == "vzdump-qemu-200-2024_06_05-03_00_00.vma"),
        "{now:?}"
    );
    assert_eq!(g201.len(), 2, "other prefixes are not touched: {now:?}");
    assert!(
        data_size(&repo_path) < size_before,
        "compaction freed nothing"
    );

    // command-line rules override PRUNE_OPTS; two prefixes in one run
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (rc, _, err) = run(backup(&env, &fx, &repo)
        .env("PRUNE_OPTS", "--keep-daily=5")
        .args(["--prune", "--keep-daily", "1", "200", "201"]));
    assert_eq!(rc, 0, "{err}");
    assert!(
        err.contains("prune vzdump-qemu-200-*: 1 kept, 2 pruned"),
        "{err}"
    );
    assert!(
        err.contains("prune vzdump-qemu-201-*: 1 kept, 2 pruned"),
        "{err}"
    );
    assert_eq!(archives(&env, &repo).len(), 2);
    for v in Borg::ALL {
        let (rc, out, err) = run(env.borg(v).args(["check", "--verify-data", &repo]));
        assert_eq!(rc, 0, "{}: {out}{err}", v.name());
    }

    // bad retention options are refused before anything is backed up
    let (rc, _, err) = run(backup(&env, &fx, &repo)
        .env("PRUNE_OPTS", "--keep-bogus=1")
        .arg("200"));
    assert_eq!(rc, 2, "{err}");
    let (rc, _, err) = run(backup(&env, &fx, &repo).arg("--prune").arg("200"));
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("At least one of"), "{err}");
    assert_eq!(archives(&env, &repo).len(), 2);
}
