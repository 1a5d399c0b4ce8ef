//! The Proxmox VE command-line tools we drive (`pvesh`, `pct`, `pvesm`, `vzdump`) and the
//! config files under `/etc/pve`. Paths are configurable so tests can run fixture tools.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::pveconf::{self, Resource};
use super::tool::{self, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum PveError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{0}")]
    Parse(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the Proxmox tools and configs are.
#[derive(Clone, Debug)]
pub struct Pve {
    /// `/etc/pve` (guest configs under `lxc/`, firewall rules under `firewall/`).
    pub config_dir: PathBuf,
    /// This node's name (PVE uses the short hostname).
    pub node: String,
}

impl Pve {
    /// Defaults: `/etc/pve` (or `PROXBORG_PVE_DIR`), node = short hostname (or `PROXBORG_NODE`).
    pub fn from_env() -> Self {
        let node = std::env::var("PROXBORG_NODE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .map(|h| h.split('.').next().unwrap_or("").to_string())
                    .unwrap_or_default()
            });
        Pve {
            config_dir: std::env::var_os("PROXBORG_PVE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/etc/pve".into()),
            node,
        }
    }

    fn run(&self, prog: &str, args: &[&str]) -> Result<String, PveError> {
        Ok(tool::run(prog, args)?)
    }

    /// All guests of the cluster (`pvesh get /cluster/resources --type vm`).
    pub fn resources(&self) -> Result<Vec<Resource>, PveError> {
        let out = self.run(
            "pvesh",
            &[
                "get",
                "/cluster/resources",
                "--type",
                "vm",
                "--output-format",
                "json",
            ],
        )?;
        pveconf::parse_resources(&out).map_err(PveError::Parse)
    }

    /// Guest ids in a pool (`pvesh get /pools/<pool>`); pool names are case-sensitive.
    pub fn pool_members(&self, pool: &str) -> Result<Vec<u32>, PveError> {
        let out = self.run(
            "pvesh",
            &["get", &format!("/pools/{pool}"), "--output-format", "json"],
        )?;
        pveconf::parse_pool_members(&out).map_err(PveError::Parse)
    }

    /// The container config text.
    pub fn lxc_config_text(&self, vmid: u32) -> Result<String, PveError> {
        let p = self.config_dir.join("lxc").join(format!("{vmid}.conf"));
        std::fs::read_to_string(&p).map_err(|source| PveError::Read { path: p, source })
    }

    /// The guest's firewall rules, if any (`/etc/pve/firewall/<vmid>.fw`).
    pub fn firewall(&self, vmid: u32) -> Option<Vec<u8>> {
        std::fs::read(self.config_dir.join("firewall").join(format!("{vmid}.fw"))).ok()
    }

    /// Host path of a storage volume (`pvesm path storage:volume`).
    pub fn volume_path(&self, storage: &str, volume: &str) -> Result<PathBuf, PveError> {
        let out = self.run("pvesm", &["path", &format!("{storage}:{volume}")])?;
        Ok(PathBuf::from(out.trim()))
    }

    /// `pct snapshot` (freezes a running container while PVE snapshots each volume).
    pub fn pct_snapshot(&self, vmid: u32, snap: &str, description: &str) -> Result<(), PveError> {
        self.run(
            "pct",
            &[
                "snapshot",
                &vmid.to_string(),
                snap,
                "--description",
                description,
            ],
        )
        .map(|_| ())
    }

    /// `pct delsnapshot` (forced, so a half-made snapshot is removed too).
    pub fn pct_delsnapshot(&self, vmid: u32, snap: &str) -> Result<(), PveError> {
        self.run("pct", &["delsnapshot", &vmid.to_string(), snap, "--force"])
            .map(|_| ())
    }

    /// Starts `vzdump <vmid> --stdout` as proxborg does (no compression, snapshot mode).
    pub fn vzdump_stream(&self, vmid: u32, extra: &[String]) -> Result<Child, PveError> {
        let id = vmid.to_string();
        let mut args: Vec<&str> = vec![
            &id,
            "--compress",
            "0",
            "--mode",
            "snapshot",
            "--dumpdir",
            "/tmp",
            "--stdout",
        ];
        args.extend(extra.iter().map(|s| s.as_str()));
        Command::new("vzdump")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| {
                PveError::Tool(ToolError::Spawn {
                    cmd: format!("vzdump {}", args.join(" ")),
                    source,
                })
            })
    }

    /// Whether the container config lists a snapshot section `[snap]`.
    pub fn config_has_snapshot(&self, vmid: u32, snap: &str) -> bool {
        self.lxc_config_text(vmid)
            .map(|t| t.lines().any(|l| l.trim() == format!("[{snap}]")))
            .unwrap_or(false)
    }

    /// Guest ids with a config under `lxc/`.
    pub fn lxc_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = std::fs::read_dir(self.config_dir.join("lxc"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".conf"))
                            .and_then(|n| n.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A private directory for clone mounts (0700, under the temp dir).
pub fn private_dir(name: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let p = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&p)?;
    Ok(p)
}

/// Realpath of a dataset target (`/local/path`).
pub fn realpath(p: &str) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(Path::new(p))
}
