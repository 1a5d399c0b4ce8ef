//! A real ZFS pool for tests: Debian's zfs-fuse daemon (started here if not running) with
//! a pool on a sparse file. zfs-fuse has no `.zfs/snapshot` directory, so code under test
//! reads snapshots through clones — the path real pools without snapdir access take too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

static ZFS_LOCK: Mutex<()> = Mutex::new(());

fn zpool_answers() -> bool {
    Command::new("zpool")
        .arg("list")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A pool that exists for the lifetime of the value (one test at a time).
pub struct Pool {
    pub name: String,
    img: PathBuf,
    daemon: Option<Child>,
    _guard: MutexGuard<'static, ()>,
}

pub fn zfs(args: &[&str]) -> String {
    let out = Command::new("zfs").args(args).output().expect("zfs");
    assert!(
        out.status.success(),
        "zfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Pool {
    /// Starts zfs-fuse if needed and creates a pool; None (with a note) if this machine
    /// cannot run zfs-fuse.
    pub fn create(dir: &Path) -> Option<Pool> {
        let guard = ZFS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if !Path::new("/sbin/zfs-fuse").exists() || !Path::new("/dev/fuse").exists() {
            eprintln!("NOTE: zfs-fuse or /dev/fuse missing: ZFS cases skipped on this machine");
            return None;
        }
        let mut daemon = None;
        if !zpool_answers() {
            std::fs::create_dir_all("/var/run/zfs").ok();
            let child = Command::new("/sbin/zfs-fuse")
                .args(["--no-daemon", "--no-kstat-mount", "--enable-xattr"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start zfs-fuse");
            daemon = Some(child);
            for _ in 0..100 {
                if zpool_answers() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if !zpool_answers() {
                eprintln!("NOTE: zfs-fuse did not start: ZFS cases skipped on this machine");
                return None;
            }
        }
        let name = format!("pbn{}", std::process::id());
        let img = dir.join("pool.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(768 << 20).unwrap();
        let st = Command::new("zpool")
            .args([
                "create",
                "-f",
                "-o",
                "cachefile=none",
                "-m",
                &format!("/{name}"),
                &name,
            ])
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success(), "zpool create failed");
        Some(Pool {
            name,
            img,
            daemon,
            _guard: guard,
        })
    }

    /// Creates a filesystem dataset `<pool>/<rel>` and returns its mountpoint.
    pub fn fs(&self, rel: &str) -> PathBuf {
        zfs(&["create", "-p", &format!("{}/{rel}", self.name)]);
        PathBuf::from(format!("/{}/{rel}", self.name))
    }

    /// Every snapshot in the pool.
    pub fn snapshots(&self) -> Vec<String> {
        zfs(&["list", "-H", "-t", "snapshot", "-o", "name"])
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{}/", self.name))
                    || l.starts_with(&format!("{}@", self.name))
            })
            .map(|s| s.to_string())
            .collect()
    }

    /// Every filesystem in the pool.
    pub fn filesystems(&self) -> Vec<String> {
        zfs(&["list", "-H", "-t", "filesystem", "-o", "name"])
            .lines()
            .filter(|l| l.starts_with(&self.name))
            .map(|s| s.to_string())
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for _ in 0..20 {
            let ok = Command::new("zpool")
                .args(["destroy", "-f", &self.name])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = std::fs::remove_file(&self.img);
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}
