//! `backup`: Proxmox guests and ZFS datasets, the proxborg way (proxborg's settings are
//! accepted from the same environment variables, so an existing cron line keeps working).

use std::sync::atomic::Ordering;

use anyhow::{bail, Context as _, Result};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};

use super::cmd_create::{build_matcher, build_options, ArchiveOpts};
use super::cmd_prune::{KeepArgs, PruneOptsLine};
use super::{output, Common, Outcome};
use proxborg::backup::pve::Pve;
use proxborg::backup::run::{self, Context, Result_, Settings, SnapshotMethod};
use proxborg::backup::zfs::Zfs;
use proxborg::placeholders::Placeholders;
use proxborg::session::Session;

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub a: ArchiveOpts,
    /// Repository (default: $BORG_REPO)
    #[arg(long, env = "BORG_REPO", hide_env_values = true)]
    pub repo: Option<String>,
    /// Name archives after the guest / host instead of vzdump/dump/dataset
    #[arg(long, env = "HOSTNAME_IN_ARCHIVENAME", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub hostname_in_archivename: bool,
    /// Stop after the first target that fails
    #[arg(long, env = "EXIT_ON_ERRORS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub exit_on_errors: bool,
    /// Show repository information at the end
    #[arg(long, env = "SHOW_SUMMARY", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub show_summary: bool,
    /// Extra vzdump options for image mode
    #[arg(
        long,
        env = "VZDUMP_OPTS",
        default_value = "--quiet",
        allow_hyphen_values = true
    )]
    pub vzdump_opts: String,
    /// Snapshot name (default: pbn<epoch seconds>)
    #[arg(long, env = "SNAPNAME")]
    pub snapname: Option<String>,
    /// Seconds to wait before deleting snapshots
    #[arg(long, env = "SLEEP_BEFORE_DELETE", default_value_t = 0)]
    pub sleep_before_delete: u64,
    /// How directory mode snapshots: pct (freezes running containers) or zfs (one atomic zfs snapshot)
    #[arg(long, default_value = "pct", value_parser = ["pct", "zfs"])]
    pub snapshot_method: String,
    /// Archive name template, e.g. "{prefix}{ts}" (default) or "{hostname}-{vmid}-{now}"
    #[arg(long, value_name = "TEMPLATE")]
    pub archive_name: Option<String>,
    /// After the targets, prune every archive-name prefix backed up and compact (the
    /// retention step; keep rules from --keep-* and PRUNE_OPTS)
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// borg prune options as one string, e.g. "--keep-daily=7 --keep-weekly=4" (implies --prune)
    #[arg(
        long,
        env = "PRUNE_OPTS",
        allow_hyphen_values = true,
        value_name = "OPTS"
    )]
    pub prune_opts: Option<String>,
    /// Prune also when the run ended with warnings
    #[arg(long, env = "PRUNE_ON_WARNINGS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub prune_on_warnings: bool,
    /// Do not compact the repository after pruning
    #[arg(long)]
    pub no_compact: bool,
    /// Lock file preventing two runs on one host
    #[arg(long, default_value = "/run/lock/proxborg-native.lock")]
    pub lock_file: std::path::PathBuf,
    /// VMID | HOSTNAME | @POOL, each optionally with ":" or ":!", or /dataset/mountpoint
    #[arg(required = true)]
    pub targets: Vec<String>,
}

/// Splits an option string like a POSIX shell would (quotes, backslashes).
fn split_words(s: &str) -> Result<Vec<String>> {
    proxborg::secrets::shlex_split(s).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn run(common: &Common, args: BackupArgs) -> Result<Outcome> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&args.lock_file)
        .with_context(|| format!("lock file {}", args.lock_file.display()))?;
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, e)| {
            anyhow::anyhow!(
                "another proxborg-native backup is running (lock {} held: {e})",
                args.lock_file.display()
            )
        },
    )?;
    // retention options are checked before any guest is touched
    let prune_line = match args.prune_opts.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => Some(PruneOptsLine::parse_str(s)?),
        None => None,
    };
    let retention = if args.prune || prune_line.is_some() {
        let base = prune_line
            .as_ref()
            .map(|l| l.keep.clone())
            .unwrap_or_default();
        let rules = base.overridden_by(&args.keep).rules();
        rules.validate().context("--prune")?;
        let list = a_list_or(prune_line.as_ref(), args.a.list);
        let stats = prune_line.as_ref().is_some_and(|l| l.stats) || args.a.stats;
        Some((rules, list, stats))
    } else {
        None
    };
    let cancel = super::signals::install();
    let ph = Placeholders::current();
    let loc = super::parse_location(args.repo.as_deref())?;
    if loc.archive.is_some() {
        bail!("--repo takes a repository, not an archive");
    }
    let env = super::env;
    let repo = super::open_repository(&loc.repo, true, common.lock_wait)?;
    let mut session = Session::open(&env, repo, loc.repo.clone())?;
    let settings = Settings {
        hostname_in_archivename: args.hostname_in_archivename,
        exit_on_errors: args.exit_on_errors,
        vzdump_opts: split_words(&args.vzdump_opts)?,
        snapname: args
            .snapname
            .clone()
            .unwrap_or_else(|| format!("pbn{}", chrono::Utc::now().timestamp())),
        sleep_before_delete: args.sleep_before_delete,
        method: if args.snapshot_method == "zfs" {
            SnapshotMethod::Zfs
        } else {
            SnapshotMethod::Pct
        },
        name_template: args.archive_name.clone(),
        dry_run: args.a.dry_run,
    };
    let a = args.a.clone();
    let comment = ph.expand(&a.comment)?;
    // fail fast on bad patterns before touching any guest
    build_matcher(&a)?;
    let make_opts = || {
        let (m, _) = build_matcher(&a).expect("patterns were checked");
        build_options(&a, &ph, m, comment.clone()).expect("options were checked")
    };
    let list = a.list;
    let filter = a.filter.clone();
    // progress only on a terminal; under systemd the per-target lines are the log
    let progress = a.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let last = std::sync::Mutex::new((std::time::Instant::now(), 0u64));
    let status = move |c: char, path: &str| {
        if list && filter.as_ref().is_none_or(|f| f.contains(c)) {
            eprintln!("{c} {path}");
        }
        if progress {
            let mut l = last.lock().expect("progress lock");
            l.1 += 1;
            if l.0.elapsed().as_millis() >= 200 {
                l.0 = std::time::Instant::now();
                let shown: String = path.chars().take(60).collect();
                eprint!("\r{} items, {shown}\x1b[K", l.1);
            }
        }
    };
    let ctx = Context {
        env: &env,
        pve: Pve::from_env(),
        zfs: Zfs::default(),
        settings,
        make_opts: &make_opts,
        status: &status,
        cancel: cancel.clone(),
        host_hostname: ph.hostname.clone(),
    };
    for msg in run::sweep_stale(&ctx) {
        eprintln!("{msg}");
    }
    let outcomes = run::run(&ctx, &mut session, &args.targets);
    let mut worst = Outcome::Success;
    let mut failed = false;
    for o in &outcomes {
        let what = o.archive.as_deref().unwrap_or("-");
        match o.result {
            Result_::Ok => eprintln!(
                "{}: ok, archive {what} ({}, {:.1} s)",
                o.target,
                output::size(o.original_size),
                o.seconds
            ),
            Result_::Warning => {
                worst = Outcome::Warning;
                eprintln!("{}: WARNING, archive {what}: {}", o.target, o.message)
            }
            Result_::Failed => {
                failed = true;
                eprintln!("{}: FAILED: {}", o.target, o.message)
            }
        }
    }
    let location = session.location.canonical();
    let mut session = Some(session);
    let mut retention_error: Option<String> = None;
    let mut pruned_json = Vec::new();
    if let Some((rules, list, stats)) = &retention {
        let prefixes = run::prune_prefixes(&outcomes);
        if failed || cancel.load(Ordering::SeqCst) {
            eprintln!("prune skipped: the run had errors");
        } else if worst == Outcome::Warning && !args.prune_on_warnings {
            eprintln!(
                "prune skipped: the run had warnings (set PRUNE_ON_WARNINGS=1 to prune anyway)"
            );
        } else if prefixes.is_empty() {
            eprintln!("prune skipped: no archive was created");
        } else {
            let mut pruned_any = false;
            for p in &prefixes {
                let glob = format!("{p}*");
                let Some(sess) = session.as_mut() else { break };
                match super::cmd_prune::prune_session(
                    sess,
                    Some(&glob),
                    rules,
                    a.dry_run,
                    *list,
                    common.verbose,
                ) {
                    Ok(o) => {
                        let pruned: Vec<&str> = o
                            .decisions
                            .iter()
                            .filter(|d| d.verdict == proxborg::archive::prune::Verdict::Prune)
                            .map(|d| d.archive.name.as_str())
                            .collect();
                        pruned_any |= !pruned.is_empty();
                        eprintln!(
                            "prune {glob}: {} kept, {} pruned",
                            o.decisions.len() - pruned.len(),
                            pruned.len()
                        );
                        if *stats && !a.dry_run {
                            super::cmd_prune::print_stats(&o);
                        }
                        pruned_json.push(serde_json::json!({"prefix": p, "pruned": pruned, "kept": o.decisions.len() - pruned.len()}));
                    }
                    Err(e) => {
                        eprintln!("prune {glob}: FAILED: {e:#}");
                        retention_error = Some(format!("prune {glob}: {e:#}"));
                        break;
                    }
                }
            }
            if retention_error.is_none() && pruned_any && !a.dry_run && !args.no_compact {
                // compaction opens the repository itself: release our lock first
                session = None;
                if let Err(e) = super::cmd_compact::compact_repo(&loc.repo, common, 10.0) {
                    eprintln!("compact: FAILED: {e:#}");
                    retention_error = Some(format!("compact: {e:#}"));
                }
            }
        }
    }
    if a.json {
        let j = serde_json::json!({
            "repository": location,
            "prune": pruned_json,
            "snapshot": ctx.settings.snapname,
            "targets": outcomes,
            "result": if failed { "failed" } else if worst == Outcome::Warning { "warning" } else { "ok" },
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    }
    if args.show_summary {
        drop(session);
        let _ = super::cmd_list::run_info(
            common,
            super::cmd_list::InfoArgs {
                json: false,
                archives: Default::default(),
                location: Some(loc.repo.canonical()),
            },
        );
    }
    drop(lock);
    if failed {
        bail!(
            "{} of {} target(s) failed",
            outcomes
                .iter()
                .filter(|o| o.result == Result_::Failed)
                .count(),
            outcomes.len()
        );
    }
    if cancel.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    if let Some(e) = retention_error {
        bail!("retention step failed: {e}");
    }
    Ok(worst)
}

/// `--list` for prune: from PRUNE_OPTS or the archive options.
fn a_list_or(line: Option<&PruneOptsLine>, list: bool) -> bool {
    line.is_some_and(|l| l.list) || list
}
