//! The command line: borg-compatible commands, options, environment and exit codes
//! (0 success, 1 warning, 2 error).

mod bench_pipeline;
mod cmd_backup;
mod cmd_benchmark;
mod cmd_check;
mod cmd_compact;
mod cmd_create;
mod cmd_delete;
mod cmd_diff;
mod cmd_export_tar;
mod cmd_extract;
mod cmd_init;
mod cmd_list;
mod cmd_prune;
mod cmd_restore_hint;
mod cmd_verify;
pub mod output;
mod selection;
mod signals;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use proxborg::location::{Location, Repo};
use proxborg::repo::local::{LocalRepository, OpenOptions};
use proxborg::repo::remote::{LogLevel, RemoteOptions, RemoteRepository};
use proxborg::repo::Repository;

/// Exit status of a command that did not fail outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Success = 0,
    Warning = 1,
}

#[derive(Parser, Debug)]
#[command(
    name = "proxborg-native",
    version,
    about = "Writes BorgBackup 1.x repositories natively (no borg needed) and backs up Proxmox VE guests",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub cmd: Command,
}

/// Options every command accepts (as borg's common options).
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Wait at most SECONDS for the repository lock (borg's default: 1)
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 1.0)]
    pub lock_wait: f64,
    /// Print the return code at the end, as borg does
    #[arg(long, global = true)]
    pub show_rc: bool,
    /// Log more (borg's --info / -v)
    #[arg(short = 'v', long = "verbose", visible_alias = "info", global = true)]
    pub verbose: bool,
    /// Log debugging output
    #[arg(long, global = true)]
    pub debug: bool,
    /// Only log errors
    #[arg(long, global = true)]
    pub error: bool,
    /// Command used to reach remote repositories (default: $BORG_RSH or "ssh")
    #[arg(long, global = true, value_name = "RSH")]
    pub rsh: Option<String>,
    /// Path of borg on the remote host (default: $BORG_REMOTE_PATH or "borg")
    #[arg(long, global = true, value_name = "PATH")]
    pub remote_path: Option<String>,
    /// Upload rate limit for remote repositories in KiB/s (0: unlimited)
    #[arg(
        long,
        global = true,
        value_name = "RATE",
        visible_alias = "remote-ratelimit",
        default_value_t = 0
    )]
    pub upload_ratelimit: u64,
    /// Sizes in powers of 1024 (KiB, MiB) instead of 1000 (kB, MB)
    #[arg(long, global = true)]
    pub iec: bool,
    /// umask for files we create (octal; borg's default 0077)
    #[arg(long, global = true, value_name = "M", default_value = "0077", value_parser = parse_umask)]
    pub umask: u32,
}

fn parse_umask(s: &str) -> std::result::Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("invalid umask {s:?} (octal, e.g. 0077)"))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Initialise an empty repository
    Init(cmd_init::InitArgs),
    /// Create a new archive
    Create(Box<cmd_create::CreateArgs>),
    /// List archives or the contents of an archive
    List(cmd_list::ListArgs),
    /// Show repository or archive information
    Info(cmd_list::InfoArgs),
    /// Delete archives that the retention rules do not keep
    Prune(cmd_prune::PruneArgs),
    /// Delete archives
    Delete(cmd_delete::DeleteArgs),
    /// Free the space of deleted objects (rewrite sparse segments)
    Compact(cmd_compact::CompactArgs),
    /// Check repository and archive consistency
    Check(cmd_check::CheckArgs),
    /// Extract archive contents
    Extract(Box<cmd_extract::ExtractArgs>),
    /// Export archive contents as a tarball (PAX with ACLs and xattrs by default)
    ExportTar(Box<cmd_export_tar::ExportTarArgs>),
    /// Restore drill: read and check every chunk of an archive, optionally compare with a source tree
    Verify(Box<cmd_verify::VerifyArgs>),
    /// Find differences between two archives
    Diff(Box<cmd_diff::DiffArgs>),
    /// Print the `pct restore` command line for a container archive made by `backup`
    RestoreHint(cmd_restore_hint::RestoreHintArgs),
    /// Back up Proxmox guests and ZFS datasets (proxborg's targets and settings)
    Backup(Box<cmd_backup::BackupArgs>),
    /// Back up this source tree into a local demo repository (what the README's first command runs)
    Demo(cmd_init::DemoArgs),
    /// Measure this machine: primitives (cpu) or a whole create (create)
    Benchmark(cmd_benchmark::BenchmarkArgs),
}

/// Parses a location argument, falling back to `BORG_REPO` like borg.
pub fn parse_location(text: Option<&str>) -> Result<Location> {
    let cwd = std::env::current_dir().context("current directory")?;
    let env_repo = std::env::var("BORG_REPO").ok();
    Ok(Location::parse(
        text.unwrap_or(""),
        env_repo.as_deref(),
        &cwd,
    )?)
}

/// Opens the repository behind a location.
pub(crate) fn open_repository(
    repo: &Repo,
    exclusive: bool,
    lock_wait: f64,
) -> Result<Box<dyn Repository>> {
    match repo {
        Repo::Local(path) => {
            let r = LocalRepository::open(
                path,
                OpenOptions {
                    exclusive,
                    lock_wait: Duration::from_secs_f64(lock_wait.max(0.0)),
                    append_only: false,
                },
            )?;
            Ok(Box::new(r))
        }
        Repo::Ssh { .. } => {
            let r = RemoteRepository::open(
                repo,
                &remote_options(common_remote(), exclusive, lock_wait),
            )?;
            Ok(Box::new(r))
        }
    }
}

/// The common options that shape `borg serve` connections.
#[derive(Clone, Debug, Default)]
pub(crate) struct RemoteCommon {
    rsh: Option<String>,
    remote_path: Option<String>,
    verbose: bool,
    /// Bytes per second; 0 is unlimited.
    upload_ratelimit: u64,
}

/// `--rsh`, `--remote-path`, ... as given on the command line (borg's env vars otherwise).
static REMOTE: std::sync::OnceLock<RemoteCommon> = std::sync::OnceLock::new();

pub(crate) fn common_remote() -> RemoteCommon {
    REMOTE.get().cloned().unwrap_or_default()
}

/// Options for `borg serve` connections.
pub(crate) fn remote_options(r: RemoteCommon, exclusive: bool, lock_wait: f64) -> RemoteOptions {
    RemoteOptions {
        exclusive,
        lock_wait,
        rsh: r.rsh,
        remote_path: r.remote_path,
        log_level: if r.verbose {
            LogLevel::Info
        } else {
            LogLevel::Warning
        },
        upload_ratelimit: (r.upload_ratelimit > 0).then_some(r.upload_ratelimit),
        ..Default::default()
    }
}

pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let show_rc = cli.common.show_rc;
    output::set_iec(cli.common.iec);
    // SAFETY: umask only changes the process's file creation mask.
    unsafe {
        libc::umask(cli.common.umask as libc::mode_t);
    }
    let _ = REMOTE.set(RemoteCommon {
        rsh: cli.common.rsh.clone(),
        remote_path: cli.common.remote_path.clone(),
        verbose: cli.common.verbose || cli.common.debug,
        upload_ratelimit: cli.common.upload_ratelimit.saturating_mul(1024),
    });
    let res = match cli.cmd {
        Command::Init(a) => cmd_init::run(&cli.common, a),
        Command::Create(a) => cmd_create::run(&cli.common, *a),
        Command::List(a) => cmd_list::run_list(&cli.common, a),
        Command::Info(a) => cmd_list::run_info(&cli.common, a),
        Command::Prune(a) => cmd_prune::run(&cli.common, a),
        Command::Delete(a) => cmd_delete::run(&cli.common, a),
        Command::Compact(a) => cmd_compact::run(&cli.common, a),
        Command::Check(a) => cmd_check::run(&cli.common, a),
        Command::Extract(a) => cmd_extract::run(&cli.common, *a),
        Command::ExportTar(a) => cmd_export_tar::run(&cli.common, *a),
        Command::Verify(a) => cmd_verify::run(&cli.common, *a),
        Command::Diff(a) => cmd_diff::run(&cli.common, *a),
        Command::RestoreHint(a) => cmd_restore_hint::run(&cli.common, a),
        Command::Backup(a) => cmd_backup::run(&cli.common, *a),
        Command::Demo(a) => cmd_init::run_demo(&cli.common, a),
        Command::Benchmark(a) => cmd_benchmark::run(&cli.common, a),
    };
    let rc = match res {
        Ok(o) => o as i32,
        Err(e) => {
            eprintln!("Error: {e:#}");
            2
        }
    };
    if show_rc {
        let what = match rc {
            0 => "success",
            1 => "warning",
            _ => "error",
        };
        eprintln!("terminating with {what} status, rc {rc}");
    }
    rc
}

/// Where the demo repository lives (`PROXBORG_DEMO_DIR` or a temp dir).
pub fn demo_dir() -> PathBuf {
    std::env::var_os("PROXBORG_DEMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("proxborg-native-demo"))
}
