//! `create` (borg's `create`).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use clap::Args;
use serde_json::json;

use super::output;
use super::selection::{in_order, merged, InOrder, PatternArgs};
use super::{Common, Outcome};
use proxborg::archive::cache::FilesCacheMode;
use proxborg::archive::create::{self, CreateOptions, FilesChanged, Source, StdinSpec};
use proxborg::archive::fsmeta::MetaOptions;
use proxborg::archive::patterns::PatternMatcher;
use proxborg::archive::stats::Stats;
use proxborg::format::chunker::ChunkerParams;
use proxborg::format::compress::Compression;
use proxborg::placeholders::Placeholders;
use proxborg::session::Session;

/// Options shared by `create` and `backup`: what to store and how.
#[derive(Args, Debug, Clone)]
pub struct ArchiveOpts {
    /// Print statistics of the created archive
    #[arg(short = 's', long)]
    pub stats: bool,
    /// Print a status line per item
    #[arg(long)]
    pub list: bool,
    /// Only list items with these status characters (e.g. AME)
    #[arg(long, value_name = "STATUSCHARS")]
    pub filter: Option<String>,
    /// Print statistics as JSON
    #[arg(long)]
    pub json: bool,
    /// Show progress
    #[arg(short = 'p', long)]
    pub progress: bool,
    /// Do not write anything
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Compression (none, lz4, zstd[,L], zlib[,L], lzma[,L], auto,C[,L], obfuscate,SPEC,C[,L])
    #[arg(short = 'C', long, default_value = "lz4", value_name = "COMPRESSION")]
    pub compression: Compression,
    /// Chunker parameters (buzhash,MIN_EXP,MAX_EXP,MASK_BITS,WINDOW | fixed,BLOCK[,HEADER] | default)
    #[arg(long, default_value = "default", value_name = "PARAMS")]
    pub chunker_params: ChunkerParams,
    #[command(flatten)]
    pub patterns: PatternArgs,
    /// Exclude directories that contain a CACHEDIR.TAG file
    #[arg(long)]
    pub exclude_caches: bool,
    /// Exclude directories that contain a file named NAME
    #[arg(long, value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// Keep the tag files of excluded directories
    #[arg(long)]
    pub keep_exclude_tags: bool,
    /// Exclude files flagged NODUMP
    #[arg(long)]
    pub exclude_nodump: bool,
    /// Only store numeric user and group ids
    #[arg(long, visible_alias = "numeric-owner")]
    pub numeric_ids: bool,
    /// Do not read and store ACLs
    #[arg(long)]
    pub noacls: bool,
    /// Do not read and store xattrs
    #[arg(long)]
    pub noxattrs: bool,
    /// Do not read and store flags (e.g. NODUMP, IMMUTABLE)
    #[arg(long)]
    pub noflags: bool,
    /// Store atime
    #[arg(long)]
    pub atime: bool,
    /// Do not store ctime
    #[arg(long)]
    pub noctime: bool,
    /// Do not store birthtime (accepted for compatibility; Linux has none)
    #[arg(long)]
    pub nobirthtime: bool,
    /// Files cache mode: ctime,size,inode (default), mtime,size,inode, rechunk, disabled, ...
    #[arg(long, default_value = "ctime,size,inode", value_name = "MODE")]
    pub files_cache: FilesCacheMode,
    /// How to detect files changing while being read: ctime (default), mtime, disabled
    #[arg(long, default_value = "ctime", value_parser = ["ctime", "mtime", "disabled"])]
    pub files_changed: String,
    /// Comment stored with the archive
    #[arg(long, default_value = "")]
    pub comment: String,
    /// Worker threads for reading and chunking (default: number of CPUs)
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub a: ArchiveOpts,
    /// Stay in the same file system
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Read the contents of block/char devices and fifos instead of storing the nodes
    #[arg(long)]
    pub read_special: bool,
    /// Detect sparse holes (with the fixed chunker) and do not read them
    #[arg(long)]
    pub sparse: bool,
    /// Item name for data read from stdin
    #[arg(long, default_value = "stdin")]
    pub stdin_name: String,
    /// Octal mode for data read from stdin
    #[arg(long, default_value = "0660", value_parser = parse_octal)]
    pub stdin_mode: u32,
    /// Owner name for data read from stdin
    #[arg(long, default_value = "root")]
    pub stdin_user: String,
    /// Group name for data read from stdin
    #[arg(long, default_value = "root")]
    pub stdin_group: String,
    /// Archive start time (yyyy-mm-ddThh:mm:ss[+hh:mm], UTC if no zone) or a reference file
    #[arg(long, value_name = "TIMESTAMP")]
    pub timestamp: Option<String>,
    /// REPOSITORY::ARCHIVE (or ::ARCHIVE with $BORG_REPO)
    pub archive: String,
    /// Paths to back up; `-` reads stdin
    #[arg(value_parser = in_order::<PathBuf>)]
    pub paths: Vec<InOrder<PathBuf>>,
}

fn parse_octal(s: &str) -> std::result::Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("invalid octal mode {s:?}"))
}

impl CreateArgs {
    /// Arguments the demo uses: defaults plus stats.
    pub fn for_demo(archive: String, path: PathBuf) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            a: CreateArgs,
        }
        let mut w = W::parse_from(["demo", "--stats", &archive]);
        w.a.paths = vec![InOrder::next(path)];
        w.a
    }
}

fn parse_timestamp(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%:z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f) {
            return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
        }
    }
    let m = std::fs::metadata(s)
        .with_context(|| format!("--timestamp {s:?} is neither a time nor a readable file"))?;
    Ok(DateTime::<Utc>::from(m.modified()?))
}

pub fn build_matcher(args: &ArchiveOpts) -> Result<(PatternMatcher, Vec<InOrder<PathBuf>>)> {
    let mut m = PatternMatcher::new(true);
    let roots = args.patterns.apply(&mut m)?;
    Ok((m, roots))
}

pub fn run(common: &Common, args: CreateArgs) -> Result<Outcome> {
    let ph = Placeholders::current();
    let loc = super::parse_location(Some(&ph.expand(&args.archive)?))?;
    let Some(name) = loc.archive.clone() else {
        bail!(
            "{}: an archive name is required (REPOSITORY::ARCHIVE)",
            args.archive
        );
    };
    create::check_archive_name(&name)?;
    let (matcher, pattern_roots) = build_matcher(&args.a)?;
    // in command-line order, as borg's `paths` (action "extend") collects them
    let paths = merged(&[&args.paths, &pattern_roots]);
    if paths.is_empty() {
        bail!("no paths given to back up");
    }
    let timestamp = args.timestamp.as_deref().map(parse_timestamp).transpose()?;
    let comment = ph.expand(&args.a.comment)?;
    let env = super::env;
    let repo = super::open_repository(&loc.repo, true, common.lock_wait)?;
    let mut session = Session::open(&env, repo, loc.repo.clone())?;

    let mut sources = Vec::new();
    let mut stdin_used = false;
    for p in &paths {
        if p.as_os_str() == "-" {
            if stdin_used {
                bail!("stdin (-) given more than once");
            }
            stdin_used = true;
            sources.push(Source::Stream {
                spec: StdinSpec {
                    name: args.stdin_name.clone(),
                    mode: args.stdin_mode,
                    user: args.stdin_user.clone(),
                    group: args.stdin_group.clone(),
                },
                reader: Box::new(std::io::stdin()),
            });
        } else {
            sources.push(Source::Tree(create::root_for_path(&p.to_string_lossy())));
        }
    }
    let mut opts = build_options(&args.a, &ph, matcher, comment)?;
    opts.read_special = args.read_special;
    opts.sparse = args.sparse;
    opts.one_file_system = args.one_file_system;
    opts.timestamp = timestamp;
    let a = &args.a;
    let filter = a.filter.clone();
    let list = a.list;
    let progress = a.progress;
    let last = Mutex::new((Instant::now(), 0u64));
    let status = move |c: char, path: &str| {
        if list && filter.as_ref().is_none_or(|f| f.contains(c)) {
            eprintln!("{c} {path}");
        }
        if progress {
            let mut l = last.lock().expect("progress lock");
            l.1 += 1;
            if l.0.elapsed().as_millis() >= 200 {
                l.0 = Instant::now();
                let shown: String = path.chars().take(60).collect();
                eprint!("\r{} items, {shown}\x1b[K", l.1);
            }
        }
    };
    let res = create::create(&env, &mut session, &name, sources, opts, &status)?;
    if a.progress {
        eprint!("\r\x1b[K");
    }
    for w in &res.warnings {
        eprintln!("{w}");
    }
    let stats: &Stats = &res.stats.stats;
    let dsize_archive = Stats::get(&stats.csize_new);
    let all = res.stats.entries();
    let (mut tu, mut tc, mut uu, mut uc, mut tchunks) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for (_, e) in &all {
        tu += e.size as u64 * e.refcount as u64;
        tc += e.csize as u64 * e.refcount as u64;
        uu += e.size as u64;
        uc += e.csize as u64;
        tchunks += e.refcount as u64;
    }
    let duration = (res.end - res.start).num_microseconds().unwrap_or(0) as f64 / 1e6;
    if a.json {
        let j = json!({
            "archive": {
                "name": res.name,
                "id": hex::encode(res.id),
                "start": output::iso(res.start),
                "end": output::iso(res.end),
                "duration": duration,
                "command_line": std::env::args().collect::<Vec<_>>(),
                "stats": {
                    "original_size": res.size,
                    "compressed_size": res.csize,
                    "deduplicated_size": dsize_archive,
                    "nfiles": res.nfiles,
                },
                "limits": {"max_archive_size": 0.0},
            },
            "repository": {"id": hex::encode(session.repo.lock().expect("repository lock").id()), "location": session.location.canonical()},
            "encryption": {"mode": session.key.mode().name()},
            "cache": {"stats": {
                "total_chunks": tchunks, "total_size": tu, "total_csize": tc,
                "total_unique_chunks": all.len(), "unique_size": uu, "unique_csize": uc,
            }},
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else if a.stats {
        println!("{}", output::RULE);
        println!("Repository: {}", session.location.canonical());
        println!("Archive name: {}", res.name);
        println!("Archive fingerprint: {}", hex::encode(res.id));
        println!("Time (start): {}", output::time(res.start));
        println!("Time (end):   {}", output::time(res.end));
        println!("Duration: {}", output::duration(duration));
        println!("Number of files: {}", res.nfiles);
        println!("Utilization of max. archive size: 0%");
        println!("{}", output::RULE);
        println!("{}", output::stats_header());
        println!(
            "{}",
            output::stats_row("This archive:", res.size, res.csize, dsize_archive)
        );
        println!("{}", output::stats_row("All archives:", tu, tc, uc));
        println!();
        println!("                       Unique chunks         Total chunks");
        println!("Chunk index: {:>23}{:>21}", all.len(), tchunks);
        println!("{}", output::RULE);
    }
    Ok(if res.warnings.is_empty() {
        Outcome::Success
    } else {
        Outcome::Warning
    })
}

/// CreateOptions from the shared options (sources-specific fields left at defaults).
pub fn build_options(
    a: &ArchiveOpts,
    ph: &Placeholders,
    matcher: PatternMatcher,
    comment: String,
) -> Result<CreateOptions> {
    let cwd = std::env::current_dir()
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    let cmdline: Vec<Vec<u8>> = std::env::args_os().map(|x| x.as_bytes().to_vec()).collect();
    Ok(CreateOptions {
        compression: a.compression.clone(),
        chunker: a.chunker_params,
        meta: MetaOptions {
            numeric_ids: a.numeric_ids,
            noacls: a.noacls,
            noxattrs: a.noxattrs,
            noflags: a.noflags,
        },
        atime: a.atime,
        noctime: a.noctime,
        read_special: false,
        sparse: false,
        one_file_system: false,
        exclude_caches: a.exclude_caches,
        exclude_if_present: a.exclude_if_present.clone(),
        keep_exclude_tags: a.keep_exclude_tags,
        exclude_nodump: a.exclude_nodump,
        files_cache: a.files_cache,
        files_changed: match a.files_changed.as_str() {
            "mtime" => FilesChanged::Mtime,
            "disabled" => FilesChanged::Disabled,
            _ => FilesChanged::Ctime,
        },
        files_cache_ttl: std::env::var("BORG_FILES_CACHE_TTL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
        matcher,
        dry_run: a.dry_run,
        comment,
        timestamp: None,
        cache_tag: Vec::new(),
        cmdline,
        hostname: ph.hostname.clone(),
        username: ph.user.clone(),
        cwd,
        id_map: None,
        acl_map: None,
        cancel: None,
        pre_commit: Mutex::new(None),
        workers: a.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
    })
}
