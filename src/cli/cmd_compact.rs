//! `compact` (borg's `compact`): frees the space of deleted objects.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::{output, Common, Outcome};
use proxborg::location::Repo;
use proxborg::repo::local::{LocalRepository, OpenOptions};
use proxborg::repo::remote::RemoteRepository;

#[derive(Args, Debug)]
pub struct CompactArgs {
    /// Do nothing (borg accepts this to simplify scripting)
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Only compact segments that would free more than PERCENT of their size
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    pub threshold: f64,
    /// Accepted for borg compatibility (no effect)
    #[arg(long)]
    pub cleanup_commits: bool,
    /// Repository (default: $BORG_REPO)
    pub location: Option<String>,
}

/// Compacts a repository: locally segment by segment, remotely by asking `borg serve`.
/// Prints borg's "compaction freed about …" line when `verbose`.
pub fn compact_repo(repo: &Repo, common: &Common, threshold_percent: f64) -> Result<()> {
    let threshold = threshold_percent / 100.0;
    match repo {
        Repo::Local(path) => {
            let mut r = LocalRepository::open(
                path,
                OpenOptions {
                    exclusive: true,
                    lock_wait: Duration::from_secs_f64(common.lock_wait.max(0.0)),
                    append_only: false,
                },
            )?;
            let st = r.compact(threshold)?;
            for w in r.take_warnings() {
                eprintln!("{w}");
            }
            r.close()?;
            if common.verbose {
                eprintln!(
                    "compaction freed about {} repository space.",
                    output::file_size(st.freed as i64, 2, false)
                );
                eprintln!(
                    "compacted {} segments: {} segment files ({}) before, {} ({}) after",
                    st.segments_compacted,
                    st.segments_before,
                    output::file_size(st.bytes_before as i64, 2, false),
                    st.segments_after,
                    output::file_size(st.bytes_after as i64, 2, false)
                );
            }
        }
        Repo::Ssh { .. } => {
            let opts = super::remote_options(super::common_remote(), true, common.lock_wait);
            let mut r = RemoteRepository::open(repo, &opts)?;
            r.compact(threshold)?;
        }
    }
    Ok(())
}

pub fn run(common: &Common, args: CompactArgs) -> Result<Outcome> {
    let loc = super::parse_location(args.location.as_deref())?;
    if loc.archive.is_some() {
        bail!("compact takes a repository, not an archive");
    }
    if !(0.0..=100.0).contains(&args.threshold) {
        bail!("--threshold must be between 0 and 100");
    }
    if !args.dry_run {
        compact_repo(&loc.repo, common, args.threshold)?;
    }
    Ok(Outcome::Success)
}
