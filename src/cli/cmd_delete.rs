//! `delete` (borg's `delete` for archives): named archives or those matching a glob.

use anyhow::{bail, Result};
use clap::Args;

use super::selection::ArchiveListArgs;
use super::{Common, Outcome};
use proxborg::archive::delete::{ChunkTotals, Deleter, PruneOutcome};
use proxborg::archive::prune::{self, Candidate};
use proxborg::format::timefmt;
use proxborg::session::Session;

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Do not change the repository
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Output a verbose list of archives
    #[arg(long)]
    pub list: bool,
    /// Print statistics for the deleted archives
    #[arg(short = 's', long)]
    pub stats: bool,
    /// Accepted for borg compatibility (no effect)
    #[arg(long)]
    pub save_space: bool,
    /// Delete archives that cannot be read too (from the manifest only; their chunks stay
    /// until `borg check --repair`); twice: without reading any archive
    #[arg(long, action = clap::ArgAction::Count)]
    pub force: u8,
    #[command(flatten)]
    pub select: ArchiveListArgs,
    /// REPOSITORY or REPOSITORY::ARCHIVE
    pub location: Option<String>,
    /// More archives to delete
    pub archives: Vec<String>,
}

pub fn run(common: &Common, args: DeleteArgs) -> Result<Outcome> {
    let loc = super::parse_location(args.location.as_deref())?;
    let filter = args.select.is_set();
    let mut named: Vec<String> = args.archives.clone();
    if let Some(a) = &loc.archive {
        named.insert(0, a.clone());
    }
    if filter && !named.is_empty() {
        bail!("Mixing archive filters and explicitly named archives is not supported.");
    }
    if !filter && named.is_empty() {
        bail!("deleting a whole repository is not supported: name archives (REPO::ARCHIVE) or select them with -a GLOB");
    }
    let env = super::env;
    let repo = super::open_repository(&loc.repo, true, common.lock_wait)?;
    let mut session = Session::open(&env, repo, loc.repo.clone())?;
    let names: Vec<String> = if filter {
        // borg's delete considers checkpoint archives too
        args.select.names(&session.manifest.archives, true)?
    } else {
        named
    };
    let total = names.len();
    let mut outcome = Outcome::Success;
    let mut deleter = Deleter::new(&env, &mut session, args.dry_run)?;
    for (i, name) in names.iter().enumerate() {
        let Some(a) = deleter
            .session()
            .manifest
            .archives
            .get(name.as_bytes())
            .cloned()
        else {
            eprintln!("Archive {name} not found ({}/{total}).", i + 1);
            outcome = Outcome::Warning;
            continue;
        };
        if args.list {
            let c = Candidate {
                name: name.clone(),
                id: a.id,
                ts: timefmt::parse(&a.time).unwrap_or_default(),
            };
            let verb = if args.dry_run {
                "Would delete archive"
            } else {
                "Deleting archive"
            };
            eprintln!("{verb}: {} ({}/{total})", prune::format_archive(&c), i + 1);
        }
        match args.force {
            0 => {
                deleter.delete(name.as_bytes())?;
            }
            1 => {
                if let Some(why) = deleter.delete_forced(name.as_bytes())? {
                    eprintln!("{name}: {why}");
                    eprintln!("forced deletion succeeded, but the deleted archive was corrupted.");
                    eprintln!("borg check --repair is required to free all space.");
                }
            }
            _ => {
                deleter.forget(name.as_bytes());
            }
        }
    }
    let totals = ChunkTotals::of(deleter.chunks());
    let stats = deleter.commit()?;
    if args.force >= 2 && stats.archives > 0 && !args.dry_run {
        eprintln!("Done. Run \"borg check --repair\" to clean up the mess.");
    }
    if args.dry_run && common.verbose {
        eprintln!("Finished dry-run.");
    }
    if args.stats && !args.dry_run {
        super::cmd_prune::print_stats(&PruneOutcome {
            decisions: Vec::new(),
            stats,
            totals: Some(totals),
        });
    }
    Ok(outcome)
}
