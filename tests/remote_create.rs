//! `init`/`create`/`list` through a real `borg serve` (1.2.4 and 1.4.5) behind a private
//! sshd on loopback, checked by upstream borg locally and over ssh.

mod common;
#[path = "common/sshd.rs"]
mod sshd;

use common::tree::{diff, make_tree, scan};
use common::{ok, run, Borg, TestEnv};
use sshd::Sshd;

fn remote_cmd(mut c: std::process::Command, rsh: &str, server: Borg) -> std::process::Command {
    c.env("BORG_RSH", rsh).env("BORG_REMOTE_PATH", server.exe());
    c
}

fn ours_then_borg(server: Borg, mode: &str) {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let key = sshd.client_key(None);
    let rsh = sshd.rsh_without_port(&key);
    let src = env.path().join("src");
    make_tree(&src);
    let path = env.path().join("repo");
    let repo = sshd.url(&path);
    ok(remote_cmd(env.ours(), &rsh, server).args(["init", "-e", mode, &repo]));
    ok(remote_cmd(env.ours(), &rsh, server)
        .current_dir(env.path())
        .args(["create", &format!("{repo}::remote1"), "src"]));
    // borg over ssh and borg on the same directory locally (its location differs: accept)
    let (rc, out, err) =
        run(remote_cmd(env.borg(server), &rsh, server).args(["check", "--verify-data", &repo]));
    assert_eq!(rc, 0, "{out}{err}");
    let local = path.display().to_string();
    let (rc, out, err) = run(env.borg(Borg::V14).args(["check", "--verify-data", &local]));
    assert_eq!(rc, 0, "{out}{err}");
    let dest = env.path().join("x");
    std::fs::create_dir_all(&dest).unwrap();
    ok(remote_cmd(env.borg(server), &rsh, server)
        .current_dir(&dest)
        .args(["extract", &format!("{repo}::remote1")]));
    let d = diff(&scan(&src), &scan(&dest.join("src")));
    assert!(d.is_empty(), "extract differs:\n{}", d.join("\n"));
    // borg appends over ssh, then we append again and dedup
    ok(remote_cmd(env.borg(server), &rsh, server)
        .current_dir(env.path())
        .args(["create", &format!("{repo}::by-borg"), "src"]));
    let out = ok(remote_cmd(env.ours(), &rsh, server)
        .current_dir(env.path())
        .args(["create", "--json", &format!("{repo}::remote2"), "src"]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        j["archive"]["stats"]["deduplicated_size"].as_u64().unwrap() < 20_000,
        "{j}"
    );
    // we read over ssh what borg wrote, and small chunks of ours (many per file: fetched
    // in windows of requests in flight)
    ok(remote_cmd(env.ours(), &rsh, server)
        .current_dir(env.path())
        .args([
            "create",
            "--files-cache",
            "disabled",
            "--chunker-params",
            "10,16,12,4095",
        ])
        .args([&format!("{repo}::small"), "src"]));
    for name in ["by-borg", "small"] {
        let dest = env.path().join(format!("ours-{name}"));
        std::fs::create_dir_all(&dest).unwrap();
        ok(remote_cmd(env.ours(), &rsh, server)
            .current_dir(&dest)
            .args(["extract", &format!("{repo}::{name}")]));
        let d = diff(&scan(&src), &scan(&dest.join("src")));
        assert!(
            d.is_empty(),
            "our extract of {name} differs:\n{}",
            d.join("\n")
        );
    }
    let list = ok(remote_cmd(env.ours(), &rsh, server).args(["list", "--short", &repo]));
    assert_eq!(list.lines().count(), 4, "{list}");
    let (rc, out, err) = run(env.borg(Borg::V12).args(["check", &local]));
    assert_eq!(rc, 0, "{out}{err}");
}

#[test]
fn remote_borg12_keyfile() {
    ours_then_borg(Borg::V12, "keyfile");
}

#[test]
fn remote_borg14_repokey_blake2() {
    ours_then_borg(Borg::V14, "repokey-blake2");
}

#[test]
fn restricted_and_append_only_servers() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let allowed = env.path().join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let forced = format!(
        "{} serve --restrict-to-path {} --append-only",
        Borg::V14.exe().display(),
        allowed.display()
    );
    let key = sshd.client_key(Some(&forced));
    let rsh = sshd.rsh_without_port(&key);
    std::fs::create_dir_all(env.path().join("src")).unwrap();
    std::fs::write(env.path().join("src/f"), b"x").unwrap();
    let outside = sshd.url(&env.path().join("elsewhere"));
    let (rc, _, err) =
        run(remote_cmd(env.ours(), &rsh, Borg::V14).args(["init", "-e", "none", &outside]));
    assert_eq!(rc, 2);
    assert!(err.contains("not allowed"), "{err}");
    let inside = sshd.url(&allowed.join("repo"));
    ok(remote_cmd(env.ours(), &rsh, Borg::V14).args(["init", "-e", "repokey", &inside]));
    ok(remote_cmd(env.ours(), &rsh, Borg::V14)
        .current_dir(env.path())
        .args(["create", &format!("{inside}::a"), "src"]));
    let list = ok(remote_cmd(env.ours(), &rsh, Borg::V14).args(["list", "--short", &inside]));
    assert_eq!(list.trim(), "a");
    assert!(
        allowed.join("repo/transactions").exists(),
        "append-only server logs transactions"
    );
}

#[test]
fn killed_connection_leaves_a_clean_repo() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let key = sshd.client_key(None);
    let rsh = sshd.rsh_without_port(&key);
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        std::fs::write(
            src.join(format!("f{i}")),
            common::prng_bytes(500 + i, 4 << 20),
        )
        .unwrap();
    }
    let path = env.path().join("repo");
    let repo = sshd.url(&path);
    ok(remote_cmd(env.ours(), &rsh, Borg::V14).args(["init", "-e", "repokey-blake2", &repo]));
    let child = remote_cmd(env.ours(), &rsh, Borg::V14)
        .current_dir(env.path())
        .args(["create", &format!("{repo}::killed"), "src"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seg_bytes = || -> u64 {
        std::fs::read_dir(path.join("data/0"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let t = std::time::Instant::now();
    while seg_bytes() < 24 << 20 && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(sshd.kill_sessions() > 0, "no ssh session to kill");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = path.display().to_string();
    // the killed server left its lock behind; its process may linger as a zombie here
    // (no init reaps it in this sandbox), so clear it the documented way
    ok(env.borg(Borg::V14).args(["break-lock", &local]));
    let (rc, o, e) = run(env.borg(Borg::V14).args(["check", &local]));
    assert_eq!(rc, 0, "{o}{e}");
    ok(remote_cmd(env.ours(), &rsh, Borg::V14)
        .current_dir(env.path())
        .args(["create", &format!("{repo}::after"), "src"]));
    let (rc, o, e) = run(env.borg(Borg::V12).args(["check", "--verify-data", &local]));
    assert_eq!(rc, 0, "{o}{e}");
    let list = ok(env.borg(Borg::V14).args(["list", "--short", &local]));
    assert_eq!(list.trim(), "after");
}

/// `--upload-ratelimit` (KiB/s, borg's `SleepingBandwidthLimiter`) paces what goes to the
/// server: 2 MiB of incompressible data at 512 KiB/s cannot arrive in under about 3.8 s
/// (a lower bound only, which a slow machine cannot break), and the archive is intact.
#[test]
fn upload_ratelimit_paces_remote_writes() {
    let env = TestEnv::new();
    let sshd = Sshd::start();
    let key = sshd.client_key(None);
    let rsh = sshd.rsh_without_port(&key);
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("random.bin"), common::prng_bytes(5, 2 << 20)).unwrap();
    let repo = sshd.url(&env.path().join("repo"));
    ok(remote_cmd(env.ours(), &rsh, Borg::V14).args(["init", "-e", "none", &repo]));
    let t = std::time::Instant::now();
    ok(remote_cmd(env.ours(), &rsh, Borg::V14)
        .current_dir(env.path())
        .args([
            "create",
            "--upload-ratelimit",
            "512",
            "-C",
            "none",
            &format!("{repo}::paced"),
            "src",
        ]));
    let secs = t.elapsed().as_secs_f64();
    assert!(secs >= 3.5, "2 MiB went out in {secs:.2} s at 512 KiB/s");
    let (rc, out, err) = run(remote_cmd(env.borg(Borg::V14), &rsh, Borg::V14).args([
        "check",
        "--verify-data",
        &repo,
    ]));
    assert_eq!(rc, 0, "{out}{err}");
}
