//! `create` (borg's `create`).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    /// Write a checkpoint (the archive so far, as NAME.checkpoint) every SECONDS; 0: never
    #[arg(short = 'c', long, default_value_t = 1800, value_name = "SECONDS")]
    pub checkpoint_interval: u64,
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
    #[arg(long, visible_alias = "nobsdflags")]
    pub noflags: bool,
    /// Store atime
    #[arg(long)]
    pub atime: bool,
    /// Do not store atime (borg's deprecated option; that is the default)
    #[arg(long, hide = true, conflicts_with = "atime")]
    pub noatime: bool,
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
    /// Run PATH... as a command and store its output as one file (named by --stdin-name);
    /// no archive is saved when the command fails
    #[arg(long, conflicts_with_all = ["paths_from_stdin", "paths_from_command"])]
    pub content_from_command: bool,
    /// Read DELIM-separated paths from stdin and store exactly those (no recursion, no
    /// patterns)
    #[arg(long, conflicts_with = "paths_from_command")]
    pub paths_from_stdin: bool,
    /// Run PATH... as a command and treat its output as --paths-from-stdin does
    #[arg(long)]
    pub paths_from_command: bool,
    /// Path delimiter for --paths-from-stdin and --paths-from-command (backslash escapes
    /// such as \0 work; default: newline)
    #[arg(long, value_name = "DELIM")]
    pub paths_delimiter: Option<String>,
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
    if args.paths_from_stdin && !paths.is_empty() {
        bail!("must not pass PATH with --paths-from-stdin");
    }
    if (args.content_from_command || args.paths_from_command) && paths.is_empty() {
        bail!("no command given");
    }
    if paths.is_empty() && !args.paths_from_stdin {
        bail!("no paths given to back up");
    }
    let timestamp = args.timestamp.as_deref().map(parse_timestamp).transpose()?;
    let comment = ph.expand(&args.a.comment)?;
    let env = super::env;
    let repo = super::open_repository(&loc.repo, true, common.lock_wait)?;
    let mut session = Session::open(&env, repo, loc.repo.clone())?;

    let stdin_spec = || StdinSpec {
        name: args.stdin_name.clone(),
        mode: args.stdin_mode,
        user: args.stdin_user.clone(),
        group: args.stdin_group.clone(),
    };
    let mut sources = Vec::new();
    let mut command = None;
    if args.content_from_command && args.a.dry_run {
        // as borg: a dry run does not start the command
        if args.a.list {
            eprintln!("- {}", args.stdin_name);
        }
    } else if args.content_from_command {
        let mut child = spawn_command(&paths)?;
        let out = child.stdout.take().expect("piped stdout");
        sources.push(Source::Stream {
            spec: stdin_spec(),
            reader: Box::new(out),
        });
        command = Some(child);
    } else if args.paths_from_stdin || args.paths_from_command {
        let delim = eval_escapes(args.paths_delimiter.as_deref().unwrap_or("\n"))?;
        let mut list = Vec::new();
        if args.paths_from_command {
            let mut child = spawn_command(&paths)?;
            let mut out = child.stdout.take().expect("piped stdout");
            out.read_to_end(&mut list)
                .with_context(|| format!("reading the output of {:?}", paths[0]))?;
            wait_command(&mut child, &paths)?;
        } else {
            std::io::stdin()
                .read_to_end(&mut list)
                .context("reading paths from stdin")?;
        }
        for p in split_paths(&list, &delim) {
            let p = if p.is_empty() { &b"."[..] } else { p };
            let mut root = create::root_for_path(&String::from_utf8_lossy(p));
            root.fs_path = PathBuf::from(OsStr::from_bytes(p));
            root.recurse = false;
            sources.push(Source::Tree(root));
        }
    }
    let plain = !(args.content_from_command || args.paths_from_stdin || args.paths_from_command);
    let mut stdin_used = false;
    for p in paths.iter().filter(|_| plain) {
        if p.as_os_str() == "-" {
            if stdin_used {
                bail!("stdin (-) given more than once");
            }
            stdin_used = true;
            sources.push(Source::Stream {
                spec: stdin_spec(),
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
    // Ctrl-C / SIGTERM: stop reading, write a last checkpoint, exit with an error (borg's)
    let cancel = super::signals::install();
    opts.cancel = Some(cancel.clone());
    let command = command.map(|c| Arc::new(Mutex::new(Some(c))));
    let _stop_on_cancel = command
        .as_ref()
        .map(|c| terminate_on_cancel(c.clone(), cancel));
    if let Some(c) = &command {
        // the archive is only saved once the command has exited with 0
        let (c, paths) = (c.clone(), paths.clone());
        opts.pre_commit = Mutex::new(Some(Box::new(move || {
            let mut child = c.lock().expect("command").take().ok_or("command reaped")?;
            wait_command(&mut child, &paths).map_err(|e| format!("{e:#}"))
        })));
    }
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
    let res = create::create(&env, &mut session, &name, sources, opts, &status);
    if let Some(mut c) = command.and_then(|c| c.lock().expect("command").take()) {
        // create failed before it waited: do not leave the command running
        let _ = c.kill();
        let _ = c.wait();
    }
    let res = res?;
    if a.progress {
        eprint!("\r\x1b[K");
    }
    for w in &res.warnings {
        eprintln!("{w}");
    }
    let stats: &Stats = &res.stats.stats;
    let dsize_archive = Stats::get(&stats.csize_new);
    let all = res.stats.entries();
    let (mut uu, mut uc, mut tchunks) = (0u64, 0u64, 0u64);
    for (_, e) in &all {
        uu += e.size as u64;
        uc += e.csize as u64;
        tchunks += e.refcount as u64;
    }
    // as borg 1.2+: the archives' own totals (read only when shown)
    let (tu, tc) = if a.json || a.stats {
        proxborg::archive::read::archives_totals(&session)?
    } else {
        (0, 0)
    };
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

/// Starts `argv` with its output piped to us (borg's `--content-from-command` and
/// `--paths-from-command`).
fn spawn_command(argv: &[PathBuf]) -> Result<std::process::Child> {
    std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to execute command {:?}", argv[0]))
}

/// Waits for a command started by [`spawn_command`]; an error unless it exited with 0.
fn wait_command(child: &mut std::process::Child, argv: &[PathBuf]) -> Result<()> {
    let st = child
        .wait()
        .with_context(|| format!("waiting for command {:?}", argv[0]))?;
    if !st.success() {
        let why = match st.code() {
            Some(c) => format!("exited with status {c}"),
            None => format!("was killed ({st})"),
        };
        bail!("command {:?} {why}", argv[0]);
    }
    Ok(())
}

/// Python's `codecs.escape_decode`, which borg applies to `--paths-delimiter`: `\n`, `\t`,
/// `\r`, `\0`, `\\`, `\xHH` and octal `\NNN`; other characters stay as they are.
fn eval_escapes(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'\'' | b'"' => out.push(c),
            b'x' => {
                let hex = s
                    .get(i..i + 2)
                    .filter(|h| h.bytes().all(|d| d.is_ascii_hexdigit()));
                let Some(hex) = hex else {
                    bail!("--paths-delimiter {s:?}: \\x needs two hex digits");
                };
                out.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            _ => out.extend_from_slice(&[b'\\', c]),
        }
    }
    if out.is_empty() {
        bail!("--paths-delimiter must not be empty");
    }
    Ok(out)
}

/// The paths in `list`, separated by `delim`, as borg's `iter_separated` yields them: an
/// empty path between two delimiters stays (borg then stores `.`), an empty end does not.
fn split_paths<'a>(list: &'a [u8], delim: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(list);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(delim.len()).position(|w| w == delim) {
            Some(at) => {
                rest = Some(&r[at + delim.len()..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r).filter(|p| !p.is_empty())
            }
        }
    })
}

/// Sends SIGTERM to the command once the run is cancelled: a read from a producer that
/// keeps its pipe open but silent would otherwise block the interrupted run. Stops with
/// the returned guard.
fn terminate_on_cancel(
    child: Arc<Mutex<Option<std::process::Child>>>,
    cancel: Arc<std::sync::atomic::AtomicBool>,
) -> StopOnDrop {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    std::thread::spawn(move || {
        use std::sync::atomic::Ordering;
        while !stop.load(Ordering::Relaxed) {
            if cancel.load(Ordering::Relaxed) {
                if let Some(c) = child.lock().expect("command").as_ref() {
                    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    StopOnDrop(done)
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
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
        checkpoint_interval: (a.checkpoint_interval > 0)
            .then(|| std::time::Duration::from_secs(a.checkpoint_interval)),
        workers: a.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
    })
}

#[cfg(test)]
mod path_list_tests {
    use super::{eval_escapes, split_paths};

    #[test]
    fn escapes_decode_as_python_does() {
        assert_eq!(eval_escapes("\\n").unwrap(), b"\n");
        assert_eq!(eval_escapes("\\0").unwrap(), b"\0");
        assert_eq!(eval_escapes("\\x1e").unwrap(), b"\x1e");
        assert_eq!(eval_escapes("\\101;").unwrap(), b"A;");
        assert_eq!(eval_escapes("a\\\\b\\q").unwrap(), b"a\\b\\q");
        assert!(eval_escapes("\\xg1").is_err());
        assert!(eval_escapes("").is_err());
    }

    #[test]
    fn paths_split_as_borgs_iter_separated() {
        let v: Vec<&[u8]> = split_paths(b"a\n\nb\n", b"\n").collect();
        assert_eq!(v, [&b"a"[..], b"", b"b"]);
        let v: Vec<&[u8]> = split_paths(b"a::b::c", b"::").collect();
        assert_eq!(v, [&b"a"[..], b"b", b"c"]);
        assert_eq!(split_paths(b"", b"\n").count(), 0);
        assert_eq!(split_paths(b"\n", b"\n").collect::<Vec<_>>(), [&b""[..]]);
    }
}
