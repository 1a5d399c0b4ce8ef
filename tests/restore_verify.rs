//! `verify`: reads every chunk; with `--against` it passes on an identical tree and
//! detects a changed byte, a changed mode, a missing file and an extra file; a damaged
//! repository object makes it fail with exit status 2.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::tree::make_tree;
use common::{ok, run, Borg, TestEnv};

#[test]
fn verify_detects_differences() {
    let env = TestEnv::new();
    let src = env.path().join("src");
    make_tree(&src);
    let repo = env.path().join("repo").display().to_string();
    let arch = format!("{repo}::a");
    ok(env
        .borg(Borg::V14)
        .args(["init", "-e", "repokey-blake2", &repo]));
    ok(env
        .borg(Borg::V14)
        .current_dir(env.path())
        .args(["create", &arch, "src"]));

    let (rc, out, err) = run(env.ours().args(["verify", &arch]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(err.contains("0 differences, 0 errors"), "{err}");

    let root = env.path().display().to_string();
    let (rc, out, err) = run(env.ours().args(["verify", "--against", &root, &arch]));
    assert_eq!(rc, 0, "identical tree reported differences:\n{out}{err}");

    // one changed byte in the middle of a 3 MiB file (same size, same mtime)
    let big = src.join("big.bin");
    let mtime = std::fs::metadata(&big).unwrap().modified().unwrap();
    let mut data = std::fs::read(&big).unwrap();
    data[1_500_000] ^= 1;
    std::fs::write(&big, &data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::set_permissions(
        src.join("hello.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::remove_file(src.join("sub/deeper/file")).unwrap();
    std::fs::write(src.join("sub/new"), b"new").unwrap();
    let (rc, out, err) = run(env.ours().args(["verify", "--against", &root, &arch]));
    assert_eq!(rc, 1, "{out}{err}");
    for want in [
        "src/big.bin: content differs from byte 1500000",
        "src/hello.txt: mode differs: archive 0644, source 0600",
        "missing in source: src/sub/deeper/file",
        "not in archive: src/sub/new",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "{want:?} not reported:\n{out}"
        );
    }
    // the modified directories' mtimes are reported too, nothing else
    let unexpected: Vec<&str> = out
        .lines()
        .filter(|l| {
            !l.contains("big.bin")
                && !l.contains("hello.txt")
                && !l.contains("sub/deeper/file")
                && !l.contains("sub/new")
        })
        .filter(|l| !(l.starts_with("src/sub: mtime") || l.starts_with("src/sub/deeper: mtime")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected findings: {unexpected:#?}"
    );

    // damage one data segment byte: verify fails with 2
    let seg = walk_segments(&env.path().join("repo/data"));
    let biggest = seg
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut s = std::fs::read(biggest).unwrap();
    let at = s.len() / 2;
    s[at] ^= 0xff;
    std::fs::write(biggest, &s).unwrap();
    let (rc, out, err) = run(env.ours().args(["verify", &arch]));
    assert_eq!(rc, 2, "damage not detected:\n{out}{err}");
    assert!(out.contains("damaged archive data"), "{out}");
}

fn walk_segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk_segments(&p));
        } else {
            v.push(p);
        }
    }
    v
}

/// `restore-hint` reads the archived `etc/vzdump/pct.conf` of a container archive.
#[test]
fn restore_hint_for_container_archive() {
    let env = TestEnv::new();
    let root = env.path().join("ct");
    std::fs::create_dir_all(root.join("etc/vzdump")).unwrap();
    std::fs::write(
        root.join("etc/vzdump/pct.conf"),
        "arch: amd64\nhostname: web\nrootfs: local-zfs:subvol-101-disk-0,size=8G\n\
         mp0: local-zfs:subvol-101-disk-1,mp=/srv,backup=1,size=32G\nunprivileged: 1\n",
    )
    .unwrap();
    let repo = env.path().join("repo").display().to_string();
    let arch = format!("{repo}::dump-101-2024_01_02-03_04_05");
    ok(env.ours().args(["init", "-e", "none", &repo]));
    ok(env.ours().current_dir(&root).args(["create", &arch, "etc"]));
    let out = ok(env.ours().args(["restore-hint", &arch]));
    let line = out.lines().next().unwrap();
    assert!(
        line.ends_with(&format!(
            "export-tar {arch} - | pct restore 101 - --rootfs local-zfs:8 --mp0 local-zfs:32,mp=/srv,backup=1 --unprivileged 1"
        )),
        "{out}"
    );
    let (rc, _, err) = run(env
        .ours()
        .args(["restore-hint", "--storage", "tank", &arch]));
    assert_eq!(rc, 0, "{err}");
}
