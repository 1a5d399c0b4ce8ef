//! Proxmox VE guest configs (`/etc/pve/lxc/<vmid>.conf`), read the way pve-container
//! reads them: the current section only (snapshot sections follow in `[name]` blocks),
//! mount point volume strings, `unprivileged`, `lxc.idmap`, and the `pct.conf` vzdump
//! stores in its archives.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("config of guest {vmid}: line {line:?}: {reason}")]
    Line {
        vmid: u32,
        line: String,
        reason: String,
    },
    #[error("config of guest {0} has no rootfs")]
    NoRootfs(u32),
}

/// What a mount point is backed by (pve-container's `classify_mountpoint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// `storage:volume` on a Proxmox storage.
    Volume { storage: String, volume: String },
    /// A host directory bind-mounted into the container.
    Bind(String),
    /// A host device.
    Device(String),
}

/// `rootfs` or one `mpN` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    /// `rootfs`, `mp0`, `mp1`, …
    pub key: String,
    pub kind: VolumeKind,
    /// Mount path inside the container (`/` for rootfs).
    pub path: String,
    pub backup: bool,
    pub ro: bool,
    pub acl: Option<bool>,
    pub size: Option<String>,
}

impl MountPoint {
    /// pve-container's `mountpoint_backup_enabled`: rootfs always, other volumes only with
    /// `backup=1`, bind and device mounts never.
    pub fn backup_enabled(&self) -> bool {
        if self.key == "rootfs" {
            return true;
        }
        matches!(self.kind, VolumeKind::Volume { .. }) && self.backup
    }
}

/// One `lxc.idmap: u|g CONTAINER HOST COUNT` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub user: bool,
    pub container: u32,
    pub host: u32,
    pub count: u32,
}

/// A parsed container config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LxcConfig {
    pub vmid: u32,
    pub hostname: Option<String>,
    pub unprivileged: bool,
    pub rootfs: MountPoint,
    pub mountpoints: Vec<MountPoint>,
    pub idmap: Vec<IdRange>,
    /// The current section's lines as written (description comments included).
    pub current: Vec<String>,
    pub keys: BTreeMap<String, String>,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

fn parse_mountpoint(vmid: u32, key: &str, value: &str) -> Result<MountPoint, ConfError> {
    let err = |reason: &str| ConfError::Line {
        vmid,
        line: format!("{key}: {value}"),
        reason: reason.into(),
    };
    let mut volume = None;
    let mut mp = MountPoint {
        key: key.into(),
        kind: VolumeKind::Bind(String::new()),
        path: if key == "rootfs" {
            "/".into()
        } else {
            String::new()
        },
        backup: false,
        ro: false,
        acl: None,
        size: None,
    };
    for (i, part) in value.split(',').enumerate() {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None if i == 0 => ("volume", part.trim()),
            None => return Err(err(&format!("option {part:?} without a value"))),
        };
        match k {
            "volume" => volume = Some(v.to_string()),
            "mp" => mp.path = v.to_string(),
            "backup" => mp.backup = parse_bool(v).ok_or_else(|| err("bad backup flag"))?,
            "ro" => mp.ro = parse_bool(v).ok_or_else(|| err("bad ro flag"))?,
            "acl" => mp.acl = Some(parse_bool(v).ok_or_else(|| err("bad acl flag"))?),
            "size" => mp.size = Some(v.to_string()),
            _ => {}
        }
    }
    let volume = volume.ok_or_else(|| err("no volume"))?;
    mp.kind = if volume.starts_with("/dev/") {
        VolumeKind::Device(volume)
    } else if volume.starts_with('/') {
        VolumeKind::Bind(volume)
    } else if let Some((s, v)) = volume.split_once(':') {
        VolumeKind::Volume {
            storage: s.into(),
            volume: v.into(),
        }
    } else {
        return Err(err("volume is neither storage:volume nor an absolute path"));
    };
    if mp.path.is_empty() || !mp.path.starts_with('/') {
        return Err(err("mount point without an absolute mp= path"));
    }
    Ok(mp)
}

/// Parses a container config; only the current (top) section counts.
pub fn parse_lxc_config(vmid: u32, text: &str) -> Result<LxcConfig, ConfError> {
    let mut current = Vec::new();
    let mut keys = BTreeMap::new();
    let mut rootfs = None;
    let mut mountpoints = Vec::new();
    let mut idmap = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            break; // snapshot or pending sections
        }
        current.push(line.to_string());
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((k, v)) = t.split_once(':') else {
            return Err(ConfError::Line {
                vmid,
                line: line.into(),
                reason: "expected 'key: value'".into(),
            });
        };
        let (k, v) = (k.trim(), v.trim());
        if k == "rootfs" {
            rootfs = Some(parse_mountpoint(vmid, k, v)?);
        } else if k.starts_with("mp") && k[2..].parse::<u32>().is_ok() {
            mountpoints.push(parse_mountpoint(vmid, k, v)?);
        } else if k == "lxc.idmap" {
            let f: Vec<&str> = v.split_whitespace().collect();
            let bad = || ConfError::Line {
                vmid,
                line: line.into(),
                reason: "expected 'u|g CONTAINER HOST COUNT'".into(),
            };
            if f.len() != 4 || !(f[0] == "u" || f[0] == "g") {
                return Err(bad());
            }
            let n = |s: &str| s.parse::<u32>().map_err(|_| bad());
            idmap.push(IdRange {
                user: f[0] == "u",
                container: n(f[1])?,
                host: n(f[2])?,
                count: n(f[3])?,
            });
        }
        if !k.starts_with("lxc.") {
            keys.insert(k.to_string(), v.to_string());
        }
    }
    let rootfs = rootfs.ok_or(ConfError::NoRootfs(vmid))?;
    mountpoints.sort_by_key(|m| m.key[2..].parse::<u32>().unwrap_or(u32::MAX));
    Ok(LxcConfig {
        vmid,
        hostname: keys.get("hostname").cloned(),
        unprivileged: keys
            .get("unprivileged")
            .and_then(|v| parse_bool(v))
            .unwrap_or(false),
        rootfs,
        mountpoints,
        idmap,
        current,
        keys,
    })
}

impl LxcConfig {
    /// Mount points to archive: rootfs plus `backup=1` volumes, or every volume with `all`
    /// (bind and device mounts never: they are not the container's data).
    pub fn selected(&self, all: bool) -> Vec<&MountPoint> {
        let mut v = vec![&self.rootfs];
        v.extend(self.mountpoints.iter().filter(|m| {
            m.backup_enabled() || (all && matches!(m.kind, VolumeKind::Volume { .. }))
        }));
        v
    }

    /// `etc/vzdump/pct.conf` as vzdump writes it: the current section without `lock`,
    /// `parent` and (pending/snapshot sections are already excluded) — the file as PVE
    /// wrote it otherwise.
    pub fn vzdump_pct_conf(&self) -> String {
        let mut out = String::new();
        for l in &self.current {
            let key = l.split(':').next().unwrap_or("").trim();
            if matches!(key, "lock" | "parent") && !l.trim_start().starts_with('#') {
                continue;
            }
            out.push_str(l);
            out.push('\n');
        }
        while out.ends_with("\n\n") {
            out.pop();
        }
        out
    }

    /// The id map to apply (host id → container id); the PVE default for unprivileged
    /// containers without `lxc.idmap` lines is 0:100000:65536 for users and groups.
    pub fn id_mapper(&self) -> Option<IdMapper> {
        if !self.unprivileged {
            return None;
        }
        let ranges = if self.idmap.is_empty() {
            vec![
                IdRange {
                    user: true,
                    container: 0,
                    host: 100000,
                    count: 65536,
                },
                IdRange {
                    user: false,
                    container: 0,
                    host: 100000,
                    count: 65536,
                },
            ]
        } else {
            self.idmap.clone()
        };
        Some(IdMapper { ranges })
    }
}

/// Maps host ids to container ids; ids the container cannot see become 65534 (the
/// kernel's overflow id), as a tar run inside the container's namespace would store them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMapper {
    pub ranges: Vec<IdRange>,
}

/// The kernel's overflow uid/gid.
pub const OVERFLOW_ID: u32 = 65534;

impl IdMapper {
    fn map(&self, user: bool, id: u32) -> u32 {
        for r in self.ranges.iter().filter(|r| r.user == user) {
            if id >= r.host && (id - r.host) < r.count {
                return r.container + (id - r.host);
            }
        }
        OVERFLOW_ID
    }

    pub fn uid(&self, id: u32) -> u32 {
        self.map(true, id)
    }

    pub fn gid(&self, id: u32) -> u32 {
        self.map(false, id)
    }

    /// Rewrites borg ACL text (`user:NAME:perm:ID` / `group:…`) to container ids; named
    /// entries get the mapped numeric id in both fields, as with `--numeric-ids`.
    pub fn map_acl_text(&self, text: &[u8]) -> Vec<u8> {
        let s = String::from_utf8_lossy(text);
        let mut out = Vec::new();
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() == 4 && (f[0] == "user" || f[0] == "group") && !f[1].is_empty() {
                if let Ok(id) = f[3].trim().parse::<u32>() {
                    let m = if f[0] == "user" {
                        self.uid(id)
                    } else {
                        self.gid(id)
                    };
                    out.extend_from_slice(format!("{}:{m}:{}:{m}", f[0], f[2]).as_bytes());
                    continue;
                }
            }
            out.extend_from_slice(line.as_bytes());
        }
        out
    }
}

/// One guest as `pvesh get /cluster/resources --type vm --output-format json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Resource {
    pub vmid: u32,
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// Parses the cluster resource list, keeping guests (`lxc`, `qemu`) only.
pub fn parse_resources(json: &str) -> Result<Vec<Resource>, String> {
    let v: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("pvesh resources: {e}"))?;
    let mut out = Vec::new();
    for r in v {
        let kind = r.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if kind != "lxc" && kind != "qemu" {
            continue;
        }
        let mut r = r.clone();
        // vmid may come as a number or a string depending on the API path
        if let Some(s) = r
            .get("vmid")
            .and_then(|v| v.as_str())
            .map(|s| s.to_string())
        {
            if let Ok(n) = s.parse::<u32>() {
                r["vmid"] = serde_json::json!(n);
            }
        }
        out.push(serde_json::from_value(r).map_err(|e| format!("pvesh resource entry: {e}"))?);
    }
    Ok(out)
}

/// Guest ids of a pool from `pvesh get /pools/<pool> --output-format json`
/// (`{"members": [{"vmid": 101, "type": "lxc", …}, {"type": "storage", …}]}`); members
/// that are not guests are skipped.
pub fn parse_pool_members(json: &str) -> Result<Vec<u32>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("pvesh pool: {e}"))?;
    let members = v
        .get("members")
        .and_then(|m| m.as_array())
        .ok_or_else(|| "pvesh pool: no members list".to_string())?;
    let mut ids = Vec::new();
    for m in members {
        let t = m.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if t != "lxc" && t != "qemu" {
            continue;
        }
        let id = match m.get("vmid") {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n as u32),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        if let Some(id) = id {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "#web server\n#second line\narch: amd64\nhostname: web1\nlock: backup\nmp0: local-zfs:subvol-101-disk-1,mp=/srv/data,backup=1,size=8G\nmp1: local-zfs:subvol-101-disk-2,mp=/srv/scratch,size=2G\nmp2: /host/share,mp=/mnt/share\nparent: before-upgrade\nrootfs: local-zfs:subvol-101-disk-0,size=8G\nunprivileged: 1\nlxc.idmap: u 0 100000 1000\nlxc.idmap: g 0 100000 1000\nlxc.idmap: u 1000 1000 1\nlxc.idmap: g 1000 1000 1\nlxc.idmap: u 1001 101001 64535\nlxc.idmap: g 1001 101001 64535\n\n[before-upgrade]\nhostname: web1\nrootfs: local-zfs:subvol-101-disk-0,size=8G\n";

    #[test]
    fn parses_current_section() {
        let c = parse_lxc_config(101, CONF).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("web1"));
        assert!(c.unprivileged);
        assert_eq!(c.mountpoints.len(), 3);
        assert_eq!(
            c.selected(false)
                .iter()
                .map(|m| m.path.as_str())
                .collect::<Vec<_>>(),
            ["/", "/srv/data"]
        );
        assert_eq!(
            c.selected(true)
                .iter()
                .map(|m| m.path.as_str())
                .collect::<Vec<_>>(),
            ["/", "/srv/data", "/srv/scratch"]
        );
        let pct = c.vzdump_pct_conf();
        assert!(!pct.contains("lock:") && !pct.contains("parent:") && !pct.contains("[before"));
        assert!(pct.starts_with("#web server\n#second line\narch: amd64\n"));
        assert!(pct.ends_with("lxc.idmap: g 1001 101001 64535\n"));
    }

    #[test]
    fn idmap_shifts_ids_and_acls() {
        let c = parse_lxc_config(101, CONF).unwrap();
        let m = c.id_mapper().unwrap();
        assert_eq!(m.uid(100000), 0);
        assert_eq!(m.uid(100999), 999);
        assert_eq!(m.uid(1000), 1000);
        assert_eq!(m.uid(101001), 1001);
        assert_eq!(m.uid(5), OVERFLOW_ID);
        assert_eq!(
            m.map_acl_text(b"user::rw-\nuser:someone:rw-:101005\ngroup::r--\ngroup:g:r-x:100033\nmask::rw-\nother::r--"),
            b"user::rw-\nuser:1005:rw-:1005\ngroup::r--\ngroup:33:r-x:33\nmask::rw-\nother::r--".to_vec()
        );
        let priv_conf = "rootfs: local-zfs:subvol-102-disk-0,size=8G\n";
        assert!(parse_lxc_config(102, priv_conf)
            .unwrap()
            .id_mapper()
            .is_none());
        let unpriv_default = "rootfs: local-zfs:subvol-102-disk-0\nunprivileged: 1\n";
        assert_eq!(
            parse_lxc_config(102, unpriv_default)
                .unwrap()
                .id_mapper()
                .unwrap()
                .uid(100033),
            33
        );
    }

    #[test]
    fn bad_configs_name_the_line() {
        assert_eq!(
            parse_lxc_config(1, "hostname: x\n"),
            Err(ConfError::NoRootfs(1))
        );
        let e = parse_lxc_config(1, "rootfs: local:vol\nmp0: local:vol2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mp0"), "{e}");
        let e = parse_lxc_config(1, "rootfs: local:vol\nlxc.idmap: x 0 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lxc.idmap"), "{e}");
    }

    #[test]
    fn resources_and_pools() {
        let r = parse_resources(r#"[{"id":"lxc/101","vmid":101,"name":"web1","node":"pve1","type":"lxc","status":"running","pool":"Prod"},{"id":"qemu/200","vmid":"200","name":"db","node":"pve2","type":"qemu"},{"id":"storage/pve1/local","type":"storage","node":"pve1"}]"#).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].vmid, 200);
        assert_eq!(r[0].pool.as_deref(), Some("Prod"));
        let p = parse_pool_members(r#"{"members":[{"vmid":101,"type":"lxc"},{"type":"storage","storage":"local"},{"vmid":"200","type":"qemu"}]}"#).unwrap();
        assert_eq!(p, vec![101, 200]);
    }
}
