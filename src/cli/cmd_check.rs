//! `check` (borg's `check` without `--repair`): repository and archive consistency.
//! Exit status as borg: 0 no problems, 1 problems found, 2 the check itself failed.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::selection::{FirstLastArgs, GlobArgs};
use super::{Common, Outcome};
use proxborg::archive::check::{check_archives, CheckOptions};
use proxborg::location::Repo;
use proxborg::repo::local::{CheckLevel, LocalRepository, OpenOptions};
use proxborg::repo::remote::RemoteRepository;
use proxborg::repo::Repository;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Only perform repository checks
    #[arg(long = "repository-only")]
    pub repo_only: bool,
    /// Only perform archives checks
    #[arg(long, conflicts_with = "repo_only")]
    pub archives_only: bool,
    /// Decrypt and verify the integrity of all data (slow)
    #[arg(long)]
    pub verify_data: bool,
    #[command(flatten)]
    pub select: GlobArgs,
    #[command(flatten)]
    pub range: FirstLastArgs,
    /// REPOSITORY or REPOSITORY::ARCHIVE
    pub location: Option<String>,
}

pub fn run(common: &Common, args: CheckArgs) -> Result<Outcome> {
    let loc = super::parse_location(args.location.as_deref())?;
    let filters = args.verify_data || args.range.is_set() || args.select.is_set();
    if args.repo_only && filters {
        bail!("--repository-only contradicts --first, --last, --glob-archives, --prefix and --verify-data arguments.");
    }
    let (verbose, debug) = (common.verbose, common.debug);
    let mut log = move |lvl: CheckLevel, msg: String| {
        let show = match lvl {
            CheckLevel::Error | CheckLevel::Warning => true,
            CheckLevel::Info => verbose || debug,
            CheckLevel::Debug => debug,
        };
        if show {
            eprintln!("{msg}");
        }
    };
    let env = super::env;
    let mut repo: Box<dyn Repository> = match &loc.repo {
        Repo::Local(path) => {
            let mut r = LocalRepository::open(
                path,
                OpenOptions {
                    exclusive: true,
                    lock_wait: Duration::from_secs_f64(common.lock_wait.max(0.0)),
                    append_only: false,
                },
            )?;
            if !args.archives_only && !r.check(&mut log)? {
                return Ok(Outcome::Warning);
            }
            Box::new(r)
        }
        Repo::Ssh { .. } => {
            let opts = super::remote_options(super::common_remote(), true, common.lock_wait);
            let mut r = RemoteRepository::open(&loc.repo, &opts)?;
            if !args.archives_only && !r.check()? {
                return Ok(Outcome::Warning);
            }
            Box::new(r)
        }
    };
    if args.repo_only {
        return Ok(Outcome::Success);
    }
    let opts = CheckOptions {
        verify_data: args.verify_data,
        archive: loc.archive.clone(),
        glob: args.select.glob()?,
        first: args.range.first.unwrap_or(0),
        last: args.range.last.unwrap_or(0),
    };
    let ok = check_archives(&env, repo.as_mut(), &opts, &mut log)?;
    Ok(if ok {
        Outcome::Success
    } else {
        Outcome::Warning
    })
}
