//! `verify`: a restore drill (read and check every chunk; optionally compare with the
//! source) — suitable for a weekly timer: exit 0 all good, 1 differences, 2 damage or
//! errors.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::cmd_extract::{open_archive_session, SelectArgs};
use super::{Common, Outcome};
use proxborg::archive::verify::{verify_archive, VerifyOptions};
use proxborg::backup::zfs::Zfs;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Compare with this directory (where the archive would be extracted) or ZFS
    /// snapshot (`pool/dataset@snap`)
    #[arg(long, value_name = "PATH|SNAPSHOT")]
    pub against: Option<String>,
    /// Compare numeric user and group ids only
    #[arg(long)]
    pub numeric_ids: bool,
    /// Do not compare flags
    #[arg(long)]
    pub noflags: bool,
    /// Do not compare ACLs
    #[arg(long)]
    pub noacls: bool,
    /// Do not compare xattrs
    #[arg(long)]
    pub noxattrs: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    /// REPOSITORY::ARCHIVE
    pub location: String,
    /// Paths to verify; patterns are supported
    pub paths: Vec<String>,
}

pub fn run(common: &Common, args: VerifyArgs) -> Result<Outcome> {
    let (session, archive) = open_archive_session(common, &args.location)?;
    let mut selector = args.select.selector(&args.paths)?;
    let opts = VerifyOptions {
        numeric_ids: args.numeric_ids,
        noacls: args.noacls,
        noxattrs: args.noxattrs,
        noflags: args.noflags,
    };
    // a snapshot name (not an existing path): make it readable for the drill
    let mut snapshot = None;
    let against: Option<PathBuf> = match &args.against {
        None => None,
        Some(a) if !std::path::Path::new(a).exists() && a.contains('@') => {
            let (ds, snap) = a.split_once('@').unwrap_or((a, ""));
            let zfs = Zfs::default();
            let mount =
                std::env::temp_dir().join(format!("proxborg-verify-{}", std::process::id()));
            let acc = zfs
                .access(ds, snap, &mount)
                .with_context(|| format!("snapshot {a}"))?;
            let p = acc.path.clone();
            snapshot = Some((zfs, acc));
            Some(p)
        }
        Some(a) => Some(PathBuf::from(a)),
    };
    let res = verify_archive(
        &session,
        &archive,
        &mut selector,
        against.as_deref(),
        &opts,
        &mut |f| println!("{f}"),
    );
    if let Some((zfs, acc)) = snapshot {
        if let Err(e) = zfs.release(&acc) {
            eprintln!("warning: {e}");
        }
    }
    let s = res?;
    eprintln!(
        "verified {} items, {} chunks ({} bytes): {} differences, {} errors",
        s.items, s.chunks, s.bytes, s.differences, s.errors
    );
    if s.errors > 0 {
        anyhow::bail!("archive {} is damaged ({} errors)", archive.name, s.errors);
    }
    Ok(if s.differences > 0 {
        Outcome::Warning
    } else {
        Outcome::Success
    })
}
