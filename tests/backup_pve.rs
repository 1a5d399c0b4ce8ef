//! `backup` against a real ZFS pool (zfs-fuse) with fixture Proxmox tools
//! (`tests/fixtures/pve/bin`: pvesh, pct, pvesm, vzdump reproducing the real tools' output
//! formats and config files), checked with upstream borg 1.2 and 1.4.5.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::zfs::Pool;
use common::{ok, prng_bytes, run, Borg, TestEnv};

struct Pve {
    fixture: PathBuf,
}

impl Pve {
    fn new(env: &TestEnv, pool: &Pool) -> Pve {
        let f = env.path().join("pve");
        for d in [
            "etc/pve/lxc",
            "etc/pve/firewall",
            "pools",
            "storage",
            "zfsstorage",
            "vzdump",
        ] {
            std::fs::create_dir_all(f.join(d)).unwrap();
        }
        std::fs::write(f.join("storage/local-zfs"), format!("/{}/data", pool.name)).unwrap();
        std::fs::write(
            f.join("zfsstorage/local-zfs"),
            format!("{}/data", pool.name),
        )
        .unwrap();
        std::fs::write(
            f.join("storage/local"),
            env.path().join("dirstore").display().to_string(),
        )
        .unwrap();
        std::fs::create_dir_all(env.path().join("dirstore")).unwrap();
        std::fs::write(
            f.join("resources.json"),
            r#"[{"id":"lxc/101","vmid":101,"name":"web","node":"pve1","type":"lxc","status":"running","pool":"Prod"},
{"id":"lxc/102","vmid":102,"name":"dirct","node":"pve1","type":"lxc","status":"stopped"},
{"id":"qemu/200","vmid":200,"name":"vm200","node":"pve1","type":"qemu","status":"running","pool":"Prod"},
{"id":"qemu/201","vmid":201,"name":"web","node":"pve1","type":"qemu","status":"running"},
{"id":"lxc/300","vmid":300,"name":"far","node":"pve2","type":"lxc","status":"running"},
{"id":"storage/pve1/local","type":"storage","node":"pve1","storage":"local"}]"#,
        )
        .unwrap();
        std::fs::write(
            f.join("pools/Prod.json"),
            r#"{"members":[{"id":"lxc/101","vmid":101,"type":"lxc","node":"pve1"},{"id":"qemu/200","vmid":200,"type":"qemu","node":"pve1"},{"id":"storage/pve1/local","storage":"local","type":"storage","node":"pve1"}],"comment":""}"#,
        )
        .unwrap();
        Pve { fixture: f }
    }

    fn cmd(&self, env: &TestEnv, repo: &str) -> Command {
        let mut c = env.ours();
        let path = format!(
            "{}:{}",
            common::root().join("tests/fixtures/pve/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path)
            .env("PBN_FIXTURE", &self.fixture)
            .env("PROXBORG_PVE_DIR", self.fixture.join("etc/pve"))
            .env("PROXBORG_NODE", "pve1")
            .env("BORG_REPO", repo)
            .arg("backup")
            .arg("--lock-file")
            .arg(self.fixture.join("lock"));
        c
    }
}

const CT101: &str = "#web container\narch: amd64\nhostname: web\nlock: backup\nmp0: local-zfs:subvol-101-disk-1,mp=/srv/data,backup=1,size=1G\nmp1: local-zfs:subvol-101-disk-2,mp=/srv/scratch,size=1G\nmp2: /host/bind,mp=/mnt/bind\nostype: debian\nrootfs: local-zfs:subvol-101-disk-0,size=2G\nunprivileged: 1\n";

/// A container rootfs as PVE stores it for an unprivileged CT: ids shifted by 100000.
fn populate_ct(pool: &Pool) -> (PathBuf, PathBuf, PathBuf) {
    let root = pool.fs("data/subvol-101-disk-0");
    let data = pool.fs("data/subvol-101-disk-1");
    let scratch = pool.fs("data/subvol-101-disk-2");
    for d in [
        "etc",
        "srv/data",
        "srv/scratch",
        "tmp",
        "var/tmp",
        "home/user",
        "mnt/bind",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/hostname"), b"web\n").unwrap();
    std::fs::write(root.join("tmp/junk"), b"excluded by vzdump's stdexcludes").unwrap();
    std::fs::write(root.join("home/user/notes"), b"user data").unwrap();
    std::fs::write(root.join("home/user/big"), prng_bytes(3, 1 << 20)).unwrap();
    std::fs::write(data.join("db.dat"), prng_bytes(4, 600_000)).unwrap();
    std::fs::write(scratch.join("cache.bin"), b"scratch only with :!").unwrap();
    for p in [
        root.clone(),
        root.join("etc"),
        root.join("etc/hostname"),
        root.join("srv"),
        root.join("tmp"),
        data.clone(),
        data.join("db.dat"),
        scratch.clone(),
    ] {
        nix::unistd::chown(&p, Some(100000.into()), Some(100000.into())).unwrap();
    }
    nix::unistd::chown(
        &root.join("home/user"),
        Some(101000.into()),
        Some(101000.into()),
    )
    .unwrap();
    nix::unistd::chown(
        &root.join("home/user/notes"),
        Some(101000.into()),
        Some(101000.into()),
    )
    .unwrap();
    let st = Command::new("setfacl")
        .args(["-m", "u:101005:rw-"])
        .arg(root.join("home/user/notes"))
        .status()
        .unwrap();
    assert!(st.success());
    (root, data, scratch)
}

fn borg_list(env: &TestEnv, v: Borg, arch: &str) -> Vec<String> {
    ok(env.borg(v).args(["list", "--short", arch]))
        .lines()
        .map(|s| s.to_string())
        .collect()
}

fn archives(env: &TestEnv, repo: &str) -> Vec<String> {
    ok(env.borg(Borg::V14).args(["list", "--short", repo]))
        .lines()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn proxmox_backup_modes() {
    let env = TestEnv::new();
    let Some(pool) = Pool::create(env.path()) else {
        return;
    };
    let pve = Pve::new(&env, &pool);
    let repo = env.init_repo("repokey-blake2");
    let (rootfs, _data, _scratch) = populate_ct(&pool);
    std::fs::write(pve.fixture.join("etc/pve/lxc/101.conf"), CT101).unwrap();
    std::fs::write(
        pve.fixture.join("etc/pve/firewall/101.fw"),
        b"[OPTIONS]\nenable: 1\n",
    )
    .unwrap();

    // --- LXC directory mode
    let (rc, out, err) = run(pve
        .cmd(&env, &repo)
        .args(["--snapshot-method", "pct", "101:"]));
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        pool.snapshots().is_empty(),
        "snapshots left: {:?}",
        pool.snapshots()
    );
    assert!(
        !pool.filesystems().iter().any(|f| f.contains("pbnclone")),
        "clones left"
    );
    let names = archives(&env, &repo);
    let dump = names
        .iter()
        .find(|n| n.starts_with("dump-101-"))
        .expect("dump-101 archive")
        .clone();
    for v in Borg::ALL {
        let paths = borg_list(&env, v, &format!("{repo}::{dump}"));
        for want in [
            "etc/hostname",
            "home/user/notes",
            "srv/data/db.dat",
            "etc/vzdump/pct.conf",
            "etc/vzdump/pct.fw",
            "tmp",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{}: {want} missing in {paths:?}",
                v.name()
            );
        }
        assert!(
            !paths.iter().any(|p| p.starts_with("srv/scratch/")),
            "scratch must not be in ':' mode"
        );
        assert!(!paths.iter().any(|p| p == "tmp/junk"), "vzdump excludes");
        let (rc, o, e) = run(env.borg(v).args(["check", "--verify-data", &repo]));
        assert_eq!(rc, 0, "{}: {o}{e}", v.name());
    }
    // extract: ids shifted back into the container's view, ACL ids too
    let dest = env.path().join("x1");
    std::fs::create_dir_all(&dest).unwrap();
    ok(env.borg(Borg::V14).current_dir(&dest).args([
        "extract",
        "--numeric-ids",
        &format!("{repo}::{dump}"),
    ]));
    assert_eq!(
        std::fs::read(dest.join("home/user/notes")).unwrap(),
        b"user data"
    );
    assert_eq!(
        std::fs::metadata(dest.join("home/user/notes"))
            .unwrap()
            .uid(),
        1000
    );
    assert_eq!(
        std::fs::metadata(dest.join("etc/hostname")).unwrap().uid(),
        0
    );
    let acl = Command::new("getfacl")
        .args(["-n", "-c"])
        .arg(dest.join("home/user/notes"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&acl.stdout).contains("user:1005:rw-"),
        "{}",
        String::from_utf8_lossy(&acl.stdout)
    );
    let pct = std::fs::read_to_string(dest.join("etc/vzdump/pct.conf")).unwrap();
    assert_eq!(pct, CT101.replace("lock: backup\n", ""));
    assert_eq!(
        std::fs::read(dest.join("etc/vzdump/pct.fw")).unwrap(),
        b"[OPTIONS]\nenable: 1\n"
    );
    assert_eq!(
        std::fs::metadata(dest.join("srv/data/db.dat"))
            .unwrap()
            .len(),
        600_000
    );
    let _ = rootfs;
    // export-tar lists what pct restore needs
    let tar = Command::new(Borg::V14.exe())
        .env("BORG_BASE_DIR", env.path().join("home"))
        .env("BORG_PASSPHRASE", "test-passphrase")
        .args(["export-tar", &format!("{repo}::{dump}"), "-"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let listing = Command::new("tar")
        .arg("-t")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = {
        use std::io::Write;
        let mut l = listing;
        l.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        l.wait_with_output().unwrap()
    };
    let tl = String::from_utf8_lossy(&out.stdout);
    assert!(
        tl.lines()
            .any(|l| l.trim_end_matches('/') == "etc/vzdump/pct.conf"),
        "{tl}"
    );

    // --- second run: files cache hits, nothing re-read
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (rc, _, err) = run(pve.cmd(&env, &repo).args([
        "--list",
        "--filter",
        "AM",
        "--snapshot-method",
        "zfs",
        "101:",
    ]));
    assert_eq!(rc, 0, "{err}");
    let reread: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("A ") || l.starts_with("M "))
        .filter(|l| !l.contains("etc/vzdump/"))
        .collect();
    // first run's files were younger than the trust window only if created within a second
    let _ = reread;
    std::thread::sleep(std::time::Duration::from_millis(1100)); // archive names have 1 s resolution
    let (rc, _, err) = run(pve.cmd(&env, &repo).args([
        "--list",
        "--filter",
        "AM",
        "--snapshot-method",
        "zfs",
        "101:",
    ]));
    assert_eq!(rc, 0, "{err}");
    let reread: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("A ") || l.starts_with("M "))
        .filter(|l| !l.contains("etc/vzdump/"))
        .collect();
    assert!(
        reread.is_empty(),
        "unchanged container re-read files: {reread:?}"
    );

    // --- ':!' includes the mount point without backup=1
    let (rc, _, err) =
        run(pve
            .cmd(&env, &repo)
            .args(["--archive-name", "all-{prefix}{ts}", "101:!"]));
    assert_eq!(rc, 0, "{err}");
    let all = archives(&env, &repo)
        .into_iter()
        .find(|n| n.starts_with("all-dump-101-"))
        .expect("':!' archive");
    let paths = borg_list(&env, Borg::V12, &format!("{repo}::{all}"));
    assert!(
        paths.iter().any(|p| p == "srv/scratch/cache.bin"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.starts_with("mnt/bind/")),
        "bind mounts are never archived"
    );

    // --- image mode: the archive item is the vzdump stream, byte for byte
    let stream = prng_bytes(77, 3 << 20);
    std::fs::write(pve.fixture.join("vzdump/200.bin"), &stream).unwrap();
    let (rc, _, err) = run(pve.cmd(&env, &repo).arg("200"));
    assert_eq!(rc, 0, "{err}");
    let img = archives(&env, &repo)
        .into_iter()
        .find(|n| n.starts_with("vzdump-qemu-200-"))
        .expect("image archive");
    assert!(img.ends_with(".vma"));
    for v in Borg::ALL {
        let out = env
            .borg(v)
            .args(["extract", "--stdout", &format!("{repo}::{img}")])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(out.stdout == stream, "{}: image differs", v.name());
        assert_eq!(
            borg_list(&env, v, &format!("{repo}::{img}")),
            vec![img.clone()]
        );
    }

    // --- pool, names, other node, ambiguity, dataset mode, non-ZFS refusal
    let n_before = archives(&env, &repo).len();
    std::fs::write(pve.fixture.join("vzdump/101.bin"), prng_bytes(78, 100_000)).unwrap();
    let (rc, _, err) = run(pve.cmd(&env, &repo).args(["@Prod", "101", "far", "@Prod"]));
    assert_eq!(rc, 1, "other-node guest is a warning: {err}");
    let now = archives(&env, &repo);
    assert_eq!(
        now.len(),
        n_before + 2,
        "pool = 101 + 200 once each: {now:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (rc, _, err) = run(pve.cmd(&env, &repo).arg("vm200"));
    assert_eq!(rc, 0, "unique guest name: {err}");
    assert_eq!(archives(&env, &repo).len(), n_before + 3);
    let (rc, _, err) = run(pve.cmd(&env, &repo).arg("web"));
    assert_eq!(rc, 2, "ambiguous name must fail: {err}");
    assert!(err.contains("ambiguous"), "{err}");
    let ds = pool.fs("data/plain");
    std::fs::write(ds.join("file"), b"dataset content").unwrap();
    let (rc, _, err) = run(pve.cmd(&env, &repo).arg(ds.display().to_string()));
    assert_eq!(rc, 0, "{err}");
    let dsname = archives(&env, &repo)
        .into_iter()
        .find(|n| n.starts_with(&format!("dataset-{}-data-plain--", pool.name)))
        .expect("dataset archive");
    assert!(borg_list(&env, Borg::V14, &format!("{repo}::{dsname}")).contains(&"file".to_string()));
    std::fs::write(
        pve.fixture.join("etc/pve/lxc/102.conf"),
        "hostname: dirct\nrootfs: local:102/vm-102-disk-0.raw,size=1G\n",
    )
    .unwrap();
    let (rc, _, err) = run(pve.cmd(&env, &repo).arg("102:"));
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("not a ZFS"), "{err}");

    // --- failures leave nothing behind
    std::fs::write(pve.fixture.join("vzdump/200.fail"), b"").unwrap();
    let before = archives(&env, &repo);
    let (rc, _, _) = run(pve.cmd(&env, &repo).arg("200"));
    assert_eq!(rc, 2);
    assert_eq!(
        archives(&env, &repo),
        before,
        "failed vzdump must not leave an archive"
    );
    std::fs::remove_file(pve.fixture.join("vzdump/200.fail")).unwrap();
    // SIGTERM mid-run: snapshot removed, repository clean
    std::fs::write(rootfs_bigfile(&pool), prng_bytes(99, 64 << 20)).unwrap();
    let mut child = pve
        .cmd(&env, &repo)
        .args(["--snapshot-method", "zfs", "101:"])
        .spawn()
        .unwrap();
    // signal once the snapshot clones are mounted, i.e. while the tree is being read
    for _ in 0..300 {
        if pool.filesystems().iter().any(|f| f.contains("pbnclone")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert!(!st.success());
    assert!(
        pool.snapshots().is_empty(),
        "snapshots left after SIGTERM: {:?}",
        pool.snapshots()
    );
    for v in Borg::ALL {
        let (rc, o, e) = run(env.borg(v).args(["check", &repo]));
        assert_eq!(rc, 0, "{}: {o}{e}", v.name());
    }
    // a stale snapshot from a killed run is swept by the next run
    common::zfs::zfs(&[
        "snapshot",
        &format!("{}/data/subvol-101-disk-0@pbn1234", pool.name),
    ]);
    let (rc, _, err) = run(pve.cmd(&env, &repo).arg("200"));
    assert_eq!(rc, 0, "{err}");
    assert!(
        pool.snapshots().is_empty(),
        "stale snapshot not swept: {:?}",
        pool.snapshots()
    );
}

fn rootfs_bigfile(pool: &Pool) -> PathBuf {
    Path::new(&format!(
        "/{}/data/subvol-101-disk-0/home/user/huge",
        pool.name
    ))
    .to_path_buf()
}
