//! `prune` (borg 1.4's `prune`) and the retention options `backup` shares with it.

use anyhow::{Context, Result};
use clap::{Args, Parser};

use super::output;
use super::selection::GlobArgs;
use super::{Common, Outcome};
use proxborg::archive::delete::{prune_archives, DeleteStats, PruneOutcome};
use proxborg::archive::prune::{decision_line, interval_hours, KeepRules, Rule};
use proxborg::session::Session;

/// borg's `--keep-*` options.
#[derive(Args, Debug, Clone, Default)]
pub struct KeepArgs {
    /// Keep all archives within this time interval (e.g. 2d, 12H, 1w, 1m, 1y)
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    pub keep_within: Option<u64>,
    /// Number of secondly archives to keep (alias of --keep-secondly)
    #[arg(
        long = "keep-last",
        visible_alias = "keep-secondly",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub keep_secondly: Option<i64>,
    /// Number of minutely archives to keep
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_minutely: Option<i64>,
    /// Number of hourly archives to keep
    #[arg(short = 'H', long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Number of daily archives to keep
    #[arg(short = 'd', long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Number of weekly archives to keep
    #[arg(short = 'w', long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Number of monthly archives to keep
    #[arg(short = 'm', long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Number of quarterly archives to keep (13 week strategy)
    #[arg(
        long = "keep-13weekly",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub keep_13weekly: Option<i64>,
    /// Number of quarterly archives to keep (3 month strategy)
    #[arg(
        long = "keep-3monthly",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub keep_3monthly: Option<i64>,
    /// Number of yearly archives to keep
    #[arg(short = 'y', long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
}

fn parse_interval(s: &str) -> std::result::Result<u64, String> {
    interval_hours(s).map_err(|e| e.to_string())
}

impl KeepArgs {
    /// The rules these options ask for.
    pub fn rules(&self) -> KeepRules {
        let mut r = KeepRules {
            within_hours: self.keep_within,
            counts: Vec::new(),
        };
        let pairs = [
            (Rule::Secondly, self.keep_secondly),
            (Rule::Minutely, self.keep_minutely),
            (Rule::Hourly, self.keep_hourly),
            (Rule::Daily, self.keep_daily),
            (Rule::Weekly, self.keep_weekly),
            (Rule::Monthly, self.keep_monthly),
            (Rule::Quarterly13Weekly, self.keep_13weekly),
            (Rule::Quarterly3Monthly, self.keep_3monthly),
            (Rule::Yearly, self.keep_yearly),
        ];
        for (rule, n) in pairs {
            if let Some(n) = n {
                r.set(rule, n);
            }
        }
        r
    }

    /// `self` with every option `over` sets taking precedence.
    pub fn overridden_by(&self, over: &KeepArgs) -> KeepArgs {
        KeepArgs {
            keep_within: over.keep_within.or(self.keep_within),
            keep_secondly: over.keep_secondly.or(self.keep_secondly),
            keep_minutely: over.keep_minutely.or(self.keep_minutely),
            keep_hourly: over.keep_hourly.or(self.keep_hourly),
            keep_daily: over.keep_daily.or(self.keep_daily),
            keep_weekly: over.keep_weekly.or(self.keep_weekly),
            keep_monthly: over.keep_monthly.or(self.keep_monthly),
            keep_13weekly: over.keep_13weekly.or(self.keep_13weekly),
            keep_3monthly: over.keep_3monthly.or(self.keep_3monthly),
            keep_yearly: over.keep_yearly.or(self.keep_yearly),
        }
    }
}

/// What a `PRUNE_OPTS` string may contain: borg prune's retention and output flags.
#[derive(Parser, Debug)]
#[command(name = "PRUNE_OPTS", no_binary_name = true, disable_help_flag = true)]
pub struct PruneOptsLine {
    #[command(flatten)]
    pub keep: KeepArgs,
    #[arg(long)]
    pub list: bool,
    #[arg(short = 's', long)]
    pub stats: bool,
    /// Accepted for borg compatibility (no effect)
    #[arg(long)]
    pub save_space: bool,
    #[arg(short = 'v', long = "verbose", visible_alias = "info")]
    pub verbose: bool,
}

impl PruneOptsLine {
    /// Parses `PRUNE_OPTS` (shell words), e.g. `--keep-last=2 --keep-daily=7`.
    pub fn parse_str(s: &str) -> Result<Self> {
        let words =
            proxborg::secrets::shlex_split(s).map_err(|e| anyhow::anyhow!("PRUNE_OPTS: {e}"))?;
        PruneOptsLine::try_parse_from(words).map_err(|e| anyhow::anyhow!("PRUNE_OPTS {s:?}: {e}"))
    }
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not change the repository
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print statistics for the deleted archives
    #[arg(short = 's', long)]
    pub stats: bool,
    /// Output a verbose list of archives it keeps/prunes
    #[arg(long)]
    pub list: bool,
    /// Accepted for borg compatibility (no effect)
    #[arg(long)]
    pub save_space: bool,
    /// Accepted for borg compatibility (one transaction is committed at the end)
    #[arg(short = 'c', long, value_name = "SECONDS")]
    pub checkpoint_interval: Option<u64>,
    #[command(flatten)]
    pub keep: KeepArgs,
    #[command(flatten)]
    pub select: GlobArgs,
    /// Repository (default: $BORG_REPO)
    pub location: Option<String>,
}

/// borg's "Deleted data" statistics block.
pub fn print_stats(o: &PruneOutcome) {
    let neg = |v: u64| {
        if v == 0 {
            "0 B".to_string()
        } else {
            format!("-{}", output::size(v))
        }
    };
    let s: &DeleteStats = &o.stats;
    eprintln!("{}", output::RULE);
    eprintln!("{}", output::stats_header());
    eprintln!(
        "{:<13}{:>20}{:>21}{:>21}",
        "Deleted data:",
        neg(s.original_size),
        neg(s.compressed_size),
        neg(s.deduplicated_size)
    );
    if let Some(t) = &o.totals {
        eprintln!(
            "{}",
            output::stats_row("All archives:", t.total_size, t.total_csize, t.unique_csize)
        );
        eprintln!();
        eprintln!("                       Unique chunks         Total chunks");
        eprintln!("Chunk index: {:>23}{:>21}", t.unique_chunks, t.total_chunks);
    }
    eprintln!("{}", output::RULE);
}

/// Runs prune on an open session; prints borg's lines as asked.
pub fn prune_session(
    session: &mut Session,
    glob: Option<&str>,
    rules: &KeepRules,
    dry_run: bool,
    list: bool,
    verbose: bool,
) -> Result<PruneOutcome> {
    let env = super::env;
    let mut on_line = |d: &proxborg::archive::prune::Decision, n: usize, total: usize| {
        if list {
            eprintln!("{}", decision_line(d, dry_run, n, total));
        }
    };
    let o = prune_archives(
        &env,
        session,
        glob,
        rules,
        dry_run,
        chrono::Utc::now(),
        &mut on_line,
    )?;
    if verbose {
        let kept = o
            .decisions
            .iter()
            .filter(|d| !d.checkpoint && d.verdict != proxborg::archive::prune::Verdict::Prune)
            .count();
        let kept_cp = o
            .decisions
            .iter()
            .filter(|d| d.checkpoint && d.verdict != proxborg::archive::prune::Verdict::Prune)
            .count();
        let cps = o.decisions.iter().filter(|d| d.checkpoint).count();
        eprintln!(
            "Keeping {kept} archives and {kept_cp} checkpoints, pruning {} archives and {} checkpoints.",
            o.decisions.len() - cps - kept,
            cps - kept_cp
        );
    }
    Ok(o)
}

pub fn run(common: &Common, args: PruneArgs) -> Result<Outcome> {
    let rules = args.keep.rules();
    rules.validate()?;
    let glob = args.select.glob()?;
    let loc = super::parse_location(args.location.as_deref())?;
    if loc.archive.is_some() {
        anyhow::bail!("prune takes a repository, not an archive");
    }
    let env = super::env;
    let repo = super::open_repository(&loc.repo, true, common.lock_wait)?;
    let mut session = Session::open(&env, repo, loc.repo.clone())?;
    if common.verbose {
        let total = session.manifest.archives.len();
        let cps = session
            .manifest
            .archives
            .keys()
            .filter(|n| proxborg::archive::prune::is_checkpoint(&String::from_utf8_lossy(n)))
            .count();
        eprintln!(
            "Repository contains {} normal archives and {cps} checkpoint archives.",
            total - cps
        );
    }
    let o = prune_session(
        &mut session,
        glob.as_deref(),
        &rules,
        args.dry_run,
        args.list,
        common.verbose,
    )
    .context("prune")?;
    if args.stats {
        print_stats(&o);
    }
    Ok(Outcome::Success)
}
