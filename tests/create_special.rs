//! stdin backups, `--read-special` on a device-like file, `--sparse` with the fixed chunker,
//! and crash safety.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{ok, prng_bytes, run, Borg, TestEnv};

#[test]
fn stdin_backup_extracts_identically() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey-blake2");
    // 1 GiB: random blocks, repeats and zeros, generated on the fly
    let block = prng_bytes(11, 16 << 20);
    let mut hasher_in = blake2b_digest_new();
    let mut child = env
        .ours()
        .args([
            "create",
            "--stdin-name",
            "vm.raw",
            &format!("{repo}::stdin"),
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        for i in 0..64u32 {
            let chunk: Vec<u8> = match i % 4 {
                0 => vec![0u8; 16 << 20],
                1 => block.clone(),
                _ => prng_bytes(100 + i as u64, 16 << 20),
            };
            hasher_in.update(&chunk);
            si.write_all(&chunk).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = env.borg(Borg::V14);
    c.args(["extract", "--stdout", &format!("{repo}::stdin")])
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut h = blake2b_digest_new();
    let mut so = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = std::io::Read::read(&mut so, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(total, 1 << 30);
    assert_eq!(
        h.finalize().as_bytes(),
        hasher_in.finalize().as_bytes(),
        "stdin content differs"
    );
    let list = ok(env
        .borg(Borg::V12)
        .args(["list", &format!("{repo}::stdin")]));
    assert!(list.contains("vm.raw"), "{list}");
}

fn blake2b_digest_new() -> blake2b_simd::State {
    blake2b_simd::Params::new().hash_length(32).to_state()
}

#[test]
fn read_special_reads_device_content() {
    let env = TestEnv::new();
    let repo = env.init_repo("none");
    // a FIFO fed with an image stands in for a block device (no loop devices here)
    let dir = env.path().join("dev");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("disk0");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let data = prng_bytes(5, 5 << 20);
    let writer = {
        let (fifo, data) = (fifo.clone(), data.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            f.write_all(&data).unwrap();
        })
    };
    ok(env.ours().current_dir(env.path()).args([
        "create",
        "--read-special",
        &format!("{repo}::img"),
        "dev/disk0",
    ]));
    writer.join().unwrap();
    let out = std::process::Command::new(Borg::V14.exe())
        .env("BORG_BASE_DIR", env.path().join("home"))
        .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
        .args(["extract", "--stdout", &format!("{repo}::img"), "dev/disk0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "read-special content differs");
    let list = ok(env.borg(Borg::V14).args([
        "list",
        "--format",
        "{mode} {path}{NL}",
        &format!("{repo}::img"),
    ]));
    assert!(
        list.contains("-rw------- dev/disk0"),
        "special file must be stored as a regular file: {list}"
    );
}

#[test]
fn kill_during_create_leaves_a_clean_repo() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey");
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..48 {
        std::fs::write(src.join(format!("f{i}")), prng_bytes(1000 + i, 4 << 20)).unwrap();
    }
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::before"), "src/f0"]));
    let mut child = env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::killed"), "src"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // kill once data segments are being written
    let data = std::path::Path::new(&repo).join("data/0");
    let start = std::time::Instant::now();
    loop {
        let bytes: u64 = std::fs::read_dir(&data)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if bytes >= 64 << 20 || start.elapsed().as_secs() > 30 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for v in Borg::ALL {
        let (rc, out, err) = run(env.borg(v).args(["check", &repo]));
        assert_eq!(rc, 0, "{} check after kill: {out}{err}", v.name());
    }
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::after"), "src"]));
    for v in Borg::ALL {
        let (rc, out, err) = run(env.borg(v).args(["check", "--verify-data", &repo]));
        assert_eq!(
            rc,
            0,
            "{} check after rerun (orphans?): {out}{err}",
            v.name()
        );
        assert!(!err.contains("orphan"), "{err}");
    }
    let list = ok(env.ours().args(["list", "--short", &repo]));
    assert_eq!(list.lines().collect::<Vec<_>>(), vec!["before", "after"]);
}

/// `--sparse` with the fixed chunker: holes are not read, yet the archive holds the same
/// chunks borg's own `create --sparse` makes (borg adds nothing new to the repository) and
/// extracts to the same bytes.
#[test]
fn sparse_fixed_chunks_match_borg() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey-blake2");
    let dir = env.path().join("src");
    std::fs::create_dir_all(&dir).unwrap();
    // data, a 1 MiB hole, data, and a hole at the end; the data ends off the 64 KiB grid, so
    // a chunker that ignored the holes would cut other chunks than borg's
    let path = dir.join("disk.raw");
    let (a, b) = (prng_bytes(1, 100_000), prng_bytes(2, 100_000));
    {
        let f = std::fs::File::create(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &a, 0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &b, (128 << 10) + (1 << 20)).unwrap();
        f.set_len(3 << 20).unwrap();
    }
    let params = ["--sparse", "--chunker-params", "fixed,65536"];
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create"])
        .args(params)
        .args([&format!("{repo}::ours"), "src"]));
    let json = ok(env
        .borg(Borg::V14)
        .current_dir(env.path())
        .args(["create", "--json"])
        .args(params)
        .args([&format!("{repo}::borg"), "src"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["archive"]["stats"]["deduplicated_size"], 0,
        "borg found chunks we did not store: {json}"
    );
    let out = env
        .borg(Borg::V14)
        .args([
            "extract",
            "--stdout",
            &format!("{repo}::ours"),
            "src/disk.raw",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == std::fs::read(&path).unwrap(),
        "sparse file differs"
    );
}

/// `--content-from-command` stores the command's output as one file, as borg's does; when
/// the command fails, or cannot start, there is no archive and the repository stays clean.
#[test]
fn content_from_command_stores_output_and_fails_with_the_command() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey-blake2");
    let data = prng_bytes(21, 5 << 20);
    let file = env.path().join("disk.raw");
    std::fs::write(&file, &data).unwrap();
    let cat = format!("cat '{}'", file.display());
    ok(env.ours().args([
        "create",
        "--content-from-command",
        "--stdin-name",
        "vm.raw",
        &format!("{repo}::good"),
        "--",
        "sh",
        "-c",
        &cat,
    ]));
    let out = std::process::Command::output(env.borg(Borg::V14).args([
        "extract",
        "--stdout",
        &format!("{repo}::good"),
    ]))
    .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout == data,
        "borg extracts other bytes than the command wrote"
    );
    let listed = ok(env.borg(Borg::V12).args(["list", &format!("{repo}::good")]));
    assert!(
        listed.contains("vm.raw") && listed.contains(&data.len().to_string()),
        "{listed}"
    );

    let fail = format!("{cat}; exit 3");
    let (rc, _, err) = run(env.ours().args([
        "create",
        "--content-from-command",
        &format!("{repo}::bad"),
        "--",
        "sh",
        "-c",
        &fail,
    ]));
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("exited with status 3"), "{err}");
    let (rc, _, err) = run(env.ours().args([
        "create",
        "--content-from-command",
        &format!("{repo}::missing"),
        "--",
        "/nonexistent/command",
    ]));
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("/nonexistent/command"), "{err}");
    let archives = ok(env.borg(Borg::V14).args(["list", "--short", &repo]));
    assert_eq!(archives.trim(), "good");
    ok(env.borg(Borg::V14).args(["check", "--verify-data", &repo]));
}

/// `--paths-from-stdin` and `--paths-from-command` (with `--paths-delimiter`) store
/// exactly the paths given, directories without their contents, as borg 1.4 does.
#[test]
fn paths_from_stdin_and_command_store_the_paths_given() {
    let env = TestEnv::new();
    common::tree::make_tree(&env.path().join("src"));
    let repo = env.init_repo("none");
    let list = |archive: &str| {
        ok(env
            .borg(Borg::V14)
            .args(["list", "--short", &format!("{repo}::{archive}")]))
    };
    let from_stdin = |cmd: &mut std::process::Command, archive: &str| {
        let mut child = cmd
            .current_dir(env.path())
            .args([
                "create",
                "--paths-from-stdin",
                &format!("{repo}::{archive}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"src/hello.txt\nsrc/sub\n\nsrc/sub/link\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    from_stdin(&mut env.borg(Borg::V14), "borg-stdin");
    from_stdin(&mut env.ours(), "ours-stdin");
    // the empty line stands for `.`, as in borg
    assert_eq!(list("borg-stdin"), list("ours-stdin"));
    assert_eq!(list("ours-stdin").lines().count(), 4);

    let printf = r"printf 'src/sub/hl2\0src\0src/empty\0'";
    for (who, archive) in [("borg", "borg-cmd"), ("ours", "ours-cmd")] {
        let mut c = if who == "borg" {
            env.borg(Borg::V14)
        } else {
            env.ours()
        };
        ok(c.current_dir(env.path()).args([
            "create",
            "--paths-from-command",
            "--paths-delimiter",
            "\\0",
            &format!("{repo}::{archive}"),
            "--",
            "sh",
            "-c",
            printf,
        ]));
    }
    assert_eq!(list("borg-cmd"), list("ours-cmd"));
    assert_eq!(list("ours-cmd").lines().count(), 3);
}
