//! ZFS through its CLI (the only portable interface; works with OpenZFS and zfs-fuse):
//! datasets by mountpoint, atomic multi-dataset snapshots, and read access to a snapshot
//! — through `<mountpoint>/.zfs/snapshot/<snap>` where the pool offers it, else through a
//! temporary clone mounted under a private directory. Everything created here carries a
//! recognisable name so a later run can sweep what a killed run left behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tool::{self, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("creating {path}: {source}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no ZFS filesystem is mounted at {0}")]
    NotZfs(PathBuf),
}

/// Marker in names of clones we create (`<dataset>--pbnclone--<snap>`).
pub const CLONE_MARK: &str = "--pbnclone--";

/// The `zfs` command (overridable for tests and unusual installs).
#[derive(Clone, Debug)]
pub struct Zfs {
    pub bin: PathBuf,
}

impl Default for Zfs {
    fn default() -> Self {
        Zfs {
            bin: std::env::var_os("PROXBORG_ZFS")
                .map(PathBuf::from)
                .unwrap_or_else(|| "zfs".into()),
        }
    }
}

impl Zfs {
    fn run(&self, args: &[&str]) -> Result<String, ZfsError> {
        Ok(tool::run(&self.bin, args)?)
    }

    /// `(name, mountpoint)` of every mounted filesystem dataset.
    pub fn filesystems(&self) -> Result<Vec<(String, String)>, ZfsError> {
        let out = self.run(&["list", "-H", "-t", "filesystem", "-o", "name,mountpoint"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, m)| (n.to_string(), m.to_string()))
            .collect())
    }

    /// The dataset mounted exactly at `path`.
    pub fn dataset_at(&self, path: &Path) -> Result<String, ZfsError> {
        let want = path.to_string_lossy();
        let want = want.trim_end_matches('/');
        self.filesystems()?
            .into_iter()
            .find(|(_, m)| m.trim_end_matches('/') == want && !want.is_empty())
            .map(|(n, _)| n)
            .ok_or_else(|| ZfsError::NotZfs(path.to_path_buf()))
    }

    /// The mountpoint of a dataset.
    pub fn mountpoint(&self, dataset: &str) -> Result<String, ZfsError> {
        Ok(self
            .run(&["get", "-H", "-o", "value", "mountpoint", dataset])?
            .trim()
            .to_string())
    }

    /// One atomic `zfs snapshot a@s b@s …` (all correspond to the same moment). ZFS
    /// versions without multi-snapshot support (zfs-fuse) get one call per dataset; then
    /// the set is only as consistent as the data is quiet, and `Ok(false)` says so.
    pub fn snapshot(&self, datasets: &[String], snap: &str) -> Result<bool, ZfsError> {
        let names: Vec<String> = datasets.iter().map(|d| format!("{d}@{snap}")).collect();
        let mut args = vec!["snapshot"];
        args.extend(names.iter().map(|s| s.as_str()));
        match self.run(&args) {
            Ok(_) => Ok(true),
            Err(ZfsError::Tool(e))
                if names.len() > 1
                    && e.stderr().is_some_and(|s| s.contains("too many arguments")) =>
            {
                for (i, n) in names.iter().enumerate() {
                    if let Err(e) = self.run(&["snapshot", n]) {
                        for made in &names[..i] {
                            let _ = self.destroy(made);
                        }
                        return Err(e);
                    }
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// All snapshot names (`dataset@snap`).
    pub fn snapshots(&self) -> Result<Vec<String>, ZfsError> {
        Ok(self
            .run(&["list", "-H", "-t", "snapshot", "-o", "name"])?
            .lines()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }

    /// `zfs destroy`, retried while the dataset is busy (a just-unmounted clone often is).
    pub fn destroy(&self, name: &str) -> Result<(), ZfsError> {
        let mut last = None;
        for i in 0..20 {
            let e = match self.run(&["destroy", name]) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let stderr = match &e {
                ZfsError::Tool(t) => t.stderr().unwrap_or_default(),
                _ => "",
            };
            if stderr.contains("could not find") || stderr.contains("does not exist") {
                return Ok(());
            }
            if !stderr.contains("busy") {
                return Err(e);
            }
            last = Some(e);
            std::thread::sleep(Duration::from_millis(100 * (i + 1)));
        }
        Err(last.expect("at least one attempt"))
    }

    /// Makes `dataset@snap` readable: `.zfs/snapshot/<snap>` under the mountpoint if it
    /// exists, else a read-write clone mounted at `mount_dir` (zfs-fuse has no `.zfs`;
    /// its read-only clones cannot read xattr values, so the clone is writable but private).
    pub fn access(
        &self,
        dataset: &str,
        snap: &str,
        mount_dir: &Path,
    ) -> Result<SnapshotAccess, ZfsError> {
        let mp = self.mountpoint(dataset)?;
        if mp.starts_with('/') {
            let dir = Path::new(&mp).join(".zfs/snapshot").join(snap);
            if dir.is_dir() {
                return Ok(SnapshotAccess {
                    path: dir,
                    clone: None,
                });
            }
        }
        std::fs::create_dir_all(mount_dir).map_err(|source| ZfsError::Mkdir {
            path: mount_dir.to_path_buf(),
            source,
        })?;
        let clone = format!("{dataset}{CLONE_MARK}{snap}");
        let mpopt = format!("mountpoint={}", mount_dir.display());
        self.run(&["clone", "-o", &mpopt, &format!("{dataset}@{snap}"), &clone])?;
        // zfs-fuse may need an explicit mount after clone
        if !is_mounted(mount_dir) {
            let _ = self.run(&["mount", &clone]);
        }
        Ok(SnapshotAccess {
            path: mount_dir.to_path_buf(),
            clone: Some(clone),
        })
    }

    /// Unmounts and destroys a clone made by [`Zfs::access`].
    pub fn release(&self, access: &SnapshotAccess) -> Result<(), ZfsError> {
        if let Some(c) = &access.clone {
            let _ = self.run(&["umount", c]);
            self.destroy(c)?;
            let _ = std::fs::remove_dir(&access.path);
        }
        Ok(())
    }
}

/// A readable view of a snapshot.
#[derive(Debug)]
pub struct SnapshotAccess {
    pub path: PathBuf,
    /// The clone backing `path`, if one was needed.
    pub clone: Option<String>,
}

fn is_mounted(dir: &Path) -> bool {
    let Ok(m) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = dir.to_string_lossy();
    m.lines().any(|l| l.split(' ').nth(1) == Some(&want))
}

/// Whether a snapshot name was generated by us (`pbn<digits>`), for the stale sweep.
pub fn is_our_snapname(snap: &str) -> bool {
    snap.strip_prefix("pbn")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_names() {
        assert!(is_our_snapname("pbn1700000000"));
        assert!(!is_our_snapname("pb1700000000"));
        assert!(!is_our_snapname("pbn"));
        assert!(!is_our_snapname("pbnx1"));
    }
}
