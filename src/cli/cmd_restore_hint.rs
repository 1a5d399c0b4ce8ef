//! `restore-hint`: the `pct restore` command line for a container archive made by
//! `backup` (directory mode), with the rootfs and mount point sizes from the archived
//! `etc/vzdump/pct.conf` — what users otherwise piece together by hand.

use anyhow::{bail, Context, Result};
use clap::Args;

use super::cmd_extract::open_archive_session;
use super::{Common, Outcome};
use proxborg::archive::read::{for_each_chunk, for_each_item, ReadError};
use proxborg::backup::pveconf::{parse_lxc_config, MountPoint, VolumeKind};

#[derive(Args, Debug)]
pub struct RestoreHintArgs {
    /// Restore to this storage instead of the archived volumes' storages
    #[arg(long)]
    pub storage: Option<String>,
    /// Restore as this guest id (default: the id in the archive name)
    #[arg(long)]
    pub vmid: Option<u32>,
    /// REPOSITORY::ARCHIVE
    pub location: String,
}

/// PVE size (`8G`, `512M`, `1T`, bytes without unit) → GiB as `pct restore` wants it
/// after `storage:`.
pub fn size_gib(size: &str) -> Option<String> {
    let s = size.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let n: f64 = num.parse().ok()?;
    let gib = match unit.to_ascii_uppercase().as_str() {
        "T" => n * 1024.0,
        "G" => n,
        "M" => n / 1024.0,
        "K" => n / (1024.0 * 1024.0),
        "" => n / (1024.0 * 1024.0 * 1024.0),
        _ => return None,
    };
    let t = format!("{gib:.3}");
    Some(t.trim_end_matches('0').trim_end_matches('.').to_string())
}

/// The guest id in `dump-101-2024_01_02-03_04_05` / `<hostname>-101-<timestamp>`.
pub fn vmid_from_name(name: &str) -> Option<u32> {
    let re = regex::Regex::new(r"-(\d+)-\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}$").ok()?;
    re.captures(name)?.get(1)?.as_str().parse().ok()
}

fn volume_spec(
    mp: &MountPoint,
    storage_override: Option<&str>,
    notes: &mut Vec<String>,
) -> Option<String> {
    let VolumeKind::Volume { storage, .. } = &mp.kind else {
        notes.push(format!(
            "# {} is a bind/device mount ({}), not in the archive",
            mp.key, mp.path
        ));
        return None;
    };
    let storage = storage_override.unwrap_or(storage);
    let size = match mp.size.as_deref().and_then(size_gib) {
        Some(s) => s,
        None => {
            notes.push(format!(
                "# {} has no size in pct.conf; 8 GiB assumed",
                mp.key
            ));
            "8".into()
        }
    };
    Some(format!("{storage}:{size}"))
}

/// The full hint: the command line, plus `#` notes.
pub fn pct_restore_command(
    exe: &str,
    location: &str,
    vmid: u32,
    conf_text: &str,
    storage: Option<&str>,
) -> Result<String> {
    let conf = parse_lxc_config(vmid, conf_text)?;
    let mut notes = Vec::new();
    let mut cmd = format!(
        "{exe} export-tar {} - | pct restore {vmid} -",
        shell_quote(location)
    );
    if let Some(r) = volume_spec(&conf.rootfs, storage, &mut notes) {
        cmd.push_str(&format!(" --rootfs {r}"));
    }
    for mp in &conf.mountpoints {
        if !mp.backup_enabled() && matches!(mp.kind, VolumeKind::Volume { .. }) {
            notes.push(format!(
                "# {} ({}) was not backed up (backup=0); it is restored empty",
                mp.key, mp.path
            ));
        }
        if let Some(v) = volume_spec(mp, storage, &mut notes) {
            let mut opt = format!("{v},mp={}", mp.path);
            if let Some(acl) = mp.acl {
                opt.push_str(&format!(",acl={}", u8::from(acl)));
            }
            if mp.backup {
                opt.push_str(",backup=1");
            }
            cmd.push_str(&format!(" --{} {}", mp.key, shell_quote(&opt)));
        }
    }
    if conf.unprivileged {
        cmd.push_str(" --unprivileged 1");
    }
    let mut out = cmd;
    for n in notes {
        out.push('\n');
        out.push_str(&n);
    }
    Ok(out)
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn run(common: &Common, args: RestoreHintArgs) -> Result<Outcome> {
    let (session, archive) = open_archive_session(common, &args.location)?;
    let mut conf: Option<(usize, Vec<u8>)> = None;
    for_each_item(
        &session,
        &archive.meta,
        &mut |item| -> Result<(), ReadError> {
            let p = &item.path;
            if item.is_reg()
                && (p == b"etc/vzdump/pct.conf" || p.ends_with(b"/etc/vzdump/pct.conf"))
            {
                // the shallowest one is the container's own
                if conf.as_ref().is_none_or(|(d, _)| p.len() < *d) {
                    let mut data = Vec::new();
                    for_each_chunk(
                        &session,
                        item.chunks.as_deref().unwrap_or_default(),
                        &mut |_, d: &[u8]| -> Result<(), ReadError> {
                            data.extend_from_slice(d);
                            Ok(())
                        },
                    )?;
                    conf = Some((p.len(), data));
                }
            }
            Ok(())
        },
    )?;
    let Some((_, conf)) = conf else {
        bail!(
            "archive {} has no etc/vzdump/pct.conf: not a container archive made by `backup`",
            archive.name
        );
    };
    let vmid = match args.vmid.or_else(|| vmid_from_name(&archive.name)) {
        Some(v) => v,
        None => bail!(
            "cannot tell the guest id from archive name {:?}; pass --vmid",
            archive.name
        ),
    };
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "proxborg-native".into());
    let text = String::from_utf8(conf).context("pct.conf is not UTF-8")?;
    println!(
        "{}",
        pct_restore_command(&exe, &args.location, vmid, &text, args.storage.as_deref())?
    );
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size_gib("8G").as_deref(), Some("8"));
        assert_eq!(size_gib("512M").as_deref(), Some("0.5"));
        assert_eq!(size_gib("2T").as_deref(), Some("2048"));
        assert_eq!(size_gib("x"), None);
    }

    #[test]
    fn vmids() {
        assert_eq!(vmid_from_name("dump-101-2024_01_02-03_04_05"), Some(101));
        assert_eq!(
            vmid_from_name("web-01-4711-2024_01_02-03_04_05"),
            Some(4711)
        );
        assert_eq!(vmid_from_name("dataset-rpool--2024_01_02-03_04_05"), None);
    }

    #[test]
    fn command_line() {
        let conf = "arch: amd64\nhostname: web\nrootfs: local-zfs:subvol-101-disk-0,size=8G\n\
                    mp0: tank:subvol-101-disk-1,mp=/srv/data,acl=1,backup=1,size=512M\n\
                    mp1: /mnt/host,mp=/host\nunprivileged: 1\n";
        let c = pct_restore_command(
            "proxborg-native",
            "/r::dump-101-2024_01_02-03_04_05",
            101,
            conf,
            None,
        )
        .unwrap();
        let first = c.lines().next().unwrap();
        assert_eq!(
            first,
            "proxborg-native export-tar /r::dump-101-2024_01_02-03_04_05 - | pct restore 101 - --rootfs local-zfs:8 \
             --mp0 tank:0.5,mp=/srv/data,acl=1,backup=1 --unprivileged 1"
        );
        assert!(c.contains("# mp1 is a bind/device mount (/host)"));
        let c = pct_restore_command("p", "r::a", 101, conf, Some("other")).unwrap();
        assert!(c.contains("--rootfs other:8 --mp0 other:0.5,"));
    }
}
