//! `extract` (borg's command of the same name) and the selection options it shares with
//! `export-tar`.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::selection::PatternArgs;
use super::{Common, Outcome};
use proxborg::archive::extract::{Event, ExtractOptions, Extractor};
use proxborg::archive::read::{display_path, open_archive, ArchiveRef, Selector};
use proxborg::session::Session;

/// Which items of an archive to take (borg's PATH arguments and exclusion options).
#[derive(Args, Debug, Clone)]
pub struct SelectArgs {
    #[command(flatten)]
    pub patterns: PatternArgs,
    /// Remove the specified number of leading path elements; paths with fewer elements
    /// are silently skipped
    #[arg(long, value_name = "NUMBER", default_value_t = 0)]
    pub strip_components: usize,
}

impl SelectArgs {
    /// borg's `build_matcher(args.patterns, args.paths)` + the strip count; `R` lines of
    /// the patterns add to the paths, as in borg.
    pub fn selector(&self, paths: &[String]) -> Result<Selector> {
        self.patterns.selector(paths, self.strip_components)
    }
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// Print each extracted path
    #[arg(long = "list")]
    pub list: bool,
    /// Do not actually change any files
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Only obey numeric user and group identifiers
    #[arg(long, visible_alias = "numeric-owner")]
    pub numeric_ids: bool,
    /// Do not extract/set flags (e.g. NODUMP, IMMUTABLE)
    #[arg(long, visible_alias = "nobsdflags")]
    pub noflags: bool,
    /// Do not extract/set ACLs
    #[arg(long)]
    pub noacls: bool,
    /// Do not extract/set xattrs
    #[arg(long)]
    pub noxattrs: bool,
    /// Write all extracted data to stdout
    #[arg(long)]
    pub stdout: bool,
    /// Create holes in the output sparse file from all-zero chunks
    #[arg(long)]
    pub sparse: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    /// REPOSITORY::ARCHIVE
    pub location: String,
    /// Paths to extract; patterns are supported
    pub paths: Vec<String>,
}

/// Opens the repository (shared lock) and the archive named in `loc_text`.
pub fn open_archive_session(common: &Common, loc_text: &str) -> Result<(Session, ArchiveRef)> {
    let loc = super::parse_location(Some(loc_text))?;
    let Some(name) = loc.archive.clone() else {
        bail!("{loc_text}: an archive name is required (REPOSITORY::ARCHIVE)");
    };
    let repo = super::open_repository(&loc.repo, false, common.lock_wait)?;
    let env = super::env;
    let session = Session::open(&env, repo, loc.repo.clone())?;
    let archive = open_archive(&session, &name)?;
    Ok((session, archive))
}

pub fn run(common: &Common, args: ExtractArgs) -> Result<Outcome> {
    let (session, archive) = open_archive_session(common, &args.location)?;
    let mut selector = args.select.selector(&args.paths)?;
    let opts = ExtractOptions {
        numeric_ids: args.numeric_ids,
        sparse: args.sparse,
        dry_run: args.dry_run,
        stdout: args.stdout,
        noacls: args.noacls,
        noxattrs: args.noxattrs,
        noflags: args.noflags,
    };
    // borg's default --umask: what extraction creates implicitly (parents) is private
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cwd = std::env::current_dir().context("current directory")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let list = args.list;
    let mut events = |e: Event<'_>| match e {
        Event::Item(p) if list => eprintln!("{}", display_path(p)),
        Event::Item(_) => {}
        Event::Warning(w) => eprintln!("{w}"),
    };
    let summary = {
        let sink: Option<&mut dyn Write> = if args.stdout { Some(&mut out) } else { None };
        Extractor::new(&session, &cwd, opts, sink).run(&archive, &mut selector, &mut events)?
    };
    out.flush().context("write to stdout")?;
    Ok(if summary.warnings > 0 {
        Outcome::Warning
    } else {
        Outcome::Success
    })
}
