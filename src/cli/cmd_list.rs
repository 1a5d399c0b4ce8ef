//! `list` and `info` (borg's commands of the same names).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::json;

use super::output;
use super::selection::{ArchiveListArgs, PatternArgs};
use super::{Common, Outcome};
use proxborg::archive::cache::CacheDir;
use proxborg::archive::read;
use proxborg::format::crypto::KeyMode;
use proxborg::format::objects::{ArchiveMeta, Item};
use proxborg::format::timefmt;
use proxborg::session::Session;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only print archive names / file paths
    #[arg(long)]
    pub short: bool,
    /// Archive list as JSON
    #[arg(long)]
    pub json: bool,
    /// Archive contents as JSON lines
    #[arg(long)]
    pub json_lines: bool,
    /// Output format with borg's placeholders, e.g. "{archive}{NL}" or "{mode} {path}{NL}"
    #[arg(long, visible_alias = "list-format")]
    pub format: Option<String>,
    #[command(flatten)]
    pub archives: ArchiveListArgs,
    /// Include checkpoint archives
    #[arg(long)]
    pub consider_checkpoints: bool,
    #[command(flatten)]
    pub patterns: PatternArgs,
    /// REPOSITORY or REPOSITORY::ARCHIVE
    pub location: Option<String>,
    /// Only list these paths inside the archive; patterns are supported
    pub paths: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Output as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub archives: ArchiveListArgs,
    /// REPOSITORY or REPOSITORY::ARCHIVE
    pub location: Option<String>,
}

/// Python `str.format` subset: `{key}` and `{key:[fill]align width}`; `{{`/`}}` escapes.
pub fn format_line(fmt: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = fmt;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i] as char;
        let after = &rest[i + 1..];
        if after.starts_with(c) {
            out.push(c);
            rest = &after[1..];
            continue;
        }
        if c == '}' {
            bail!("single '}}' in format {fmt:?}");
        }
        let end = after
            .find('}')
            .with_context(|| format!("unterminated '{{' in format {fmt:?}"))?;
        let field = &after[..end];
        let (key, spec) = field.split_once(':').unwrap_or((field, ""));
        let v =
            get(key).with_context(|| format!("unknown placeholder {{{key}}} in format {fmt:?}"))?;
        out.push_str(&apply_spec(&v, spec));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn apply_spec(v: &str, spec: &str) -> String {
    if spec.is_empty() {
        return v.to_string();
    }
    let chars: Vec<char> = spec.chars().collect();
    let (fill, align, rest) = if chars.len() >= 2 && matches!(chars[1], '<' | '>' | '^') {
        (chars[0], chars[1], &spec[chars[0].len_utf8() + 1..])
    } else if matches!(chars[0], '<' | '>' | '^') {
        (' ', chars[0], &spec[1..])
    } else {
        (' ', '<', spec)
    };
    let width: usize = rest.parse().unwrap_or(0);
    let n = v.chars().count();
    if n >= width {
        return v.to_string();
    }
    let pad = width - n;
    let f = |k: usize| std::iter::repeat_n(fill, k).collect::<String>();
    match align {
        '>' => format!("{}{v}", f(pad)),
        '^' => format!("{}{v}{}", f(pad / 2), f(pad - pad / 2)),
        _ => format!("{v}{}", f(pad)),
    }
}

fn parse_time(s: &str) -> DateTime<Utc> {
    timefmt::parse(s).unwrap_or_default()
}

fn open_session(common: &Common, loc_text: Option<&str>) -> Result<(Session, Option<String>)> {
    let loc = super::parse_location(loc_text)?;
    let repo = super::open_repository(&loc.repo, false, common.lock_wait)?;
    let env = super::env;
    Ok((Session::open(&env, repo, loc.repo.clone())?, loc.archive))
}

fn load_archive(session: &Session, name: &str) -> Result<(proxborg::repo::ObjectId, ArchiveMeta)> {
    let a = read::open_archive(session, name)?;
    Ok((a.id, a.meta))
}

/// Streams the items of an archive to `f`.
pub fn for_each_item(
    session: &Session,
    meta: &ArchiveMeta,
    f: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    read::for_each_item(session, meta, &mut |it| f(it).map_err(ItemStop::Other)).map_err(
        |e| match e {
            ItemStop::Read(e) => e.into(),
            ItemStop::Other(e) => e,
        },
    )
}

/// Stops an item walk: a read error, or the caller's own.
enum ItemStop {
    Read(read::ReadError),
    Other(anyhow::Error),
}

impl From<read::ReadError> for ItemStop {
    fn from(e: read::ReadError) -> Self {
        ItemStop::Read(e)
    }
}

/// borg's content hash keys (`hashlib` names plus `xxh64`) we can compute.
const HASH_KEYS: [&str; 6] = ["sha224", "sha256", "sha384", "sha512", "blake2b", "xxh64"];

/// Hex digests of an item's content for the hash keys used in `fmt` ("" without chunks).
fn content_hashes(
    session: &Session,
    item: &Item,
    fmt: &str,
) -> Result<HashMap<&'static str, String>> {
    use sha2::Digest;
    let used: Vec<&'static str> = HASH_KEYS
        .iter()
        .copied()
        .filter(|k| fmt.contains(&format!("{{{k}")))
        .collect();
    let mut out = HashMap::new();
    let Some(chunks) = &item.chunks else {
        for k in used {
            out.insert(k, String::new());
        }
        return Ok(out);
    };
    if used.is_empty() {
        return Ok(out);
    }
    let mut s224 = sha2::Sha224::new();
    let mut s256 = sha2::Sha256::new();
    let mut s384 = sha2::Sha384::new();
    let mut s512 = sha2::Sha512::new();
    let mut b2 = blake2b_simd::Params::new().hash_length(64).to_state();
    let mut xx = xxhash_rust::xxh64::Xxh64::new(0);
    read::for_each_chunk(session, chunks, &mut |_,
                                                d: &[u8]|
     -> Result<(), read::ReadError> {
        for k in &used {
            match *k {
                "sha224" => s224.update(d),
                "sha256" => s256.update(d),
                "sha384" => s384.update(d),
                "sha512" => s512.update(d),
                "blake2b" => {
                    b2.update(d);
                }
                _ => xx.update(d),
            }
        }
        Ok(())
    })?;
    for k in used {
        let v = match k {
            "sha224" => hex::encode(s224.clone().finalize()),
            "sha256" => hex::encode(s256.clone().finalize()),
            "sha384" => hex::encode(s384.clone().finalize()),
            "sha512" => hex::encode(s512.clone().finalize()),
            "blake2b" => b2.finalize().to_hex().to_string(),
            _ => format!("{:016x}", xx.digest()),
        };
        out.insert(k, v);
    }
    Ok(out)
}

fn encryption_desc(mode: KeyMode) -> String {
    match mode {
        KeyMode::Plaintext => "No".into(),
        m => format!("Yes ({})", m.name()),
    }
}

fn item_type(mode: u32) -> &'static str {
    match mode & 0o170000 {
        0o040000 => "d",
        0o120000 => "l",
        0o020000 => "c",
        0o060000 => "b",
        0o010000 => "p",
        _ => "-",
    }
}

pub fn run_list(common: &Common, args: ListArgs) -> Result<Outcome> {
    let (session, archive) = open_session(common, args.location.as_deref())?;
    args.archives.check_unnamed(archive.as_deref())?;
    let Some(name) = archive else {
        let archives = args
            .archives
            .select(&session.manifest.archives, args.consider_checkpoints)?;
        if args.json {
            let list: Vec<_> = archives
                .iter()
                .map(|(n, a)| {
                    let t = output::iso(parse_time(&a.time));
                    json!({"archive": n, "barchive": n, "name": n, "id": hex::encode(a.id), "start": t, "time": t})
                })
                .collect();
            let j = json!({
                "archives": list,
                "encryption": {"mode": session.key.mode().name()},
                "repository": {
                    "id": hex::encode(session.repo.lock().expect("repository lock").id()),
                    "last_modified": output::iso(parse_time(&session.manifest.timestamp)),
                    "location": session.location.canonical(),
                },
            });
            println!("{}", serde_json::to_string_pretty(&j)?);
            return Ok(Outcome::Success);
        }
        let fmt = match (&args.format, args.short) {
            (Some(f), _) => f.clone(),
            (None, true) => "{archive}{NL}".into(),
            (None, false) => "{archive:<36} {time} [{id}]{NL}".into(),
        };
        let mut out = String::new();
        for (n, a) in archives {
            let t = parse_time(&a.time);
            let get = |k: &str| -> Option<String> {
                Some(match k {
                    "archive" | "name" | "barchive" => n.clone(),
                    "time" | "start" => output::time(t),
                    "id" | "fingerprint" => hex::encode(a.id),
                    "NL" | "NEWLINE" => "\n".into(),
                    "TAB" => "\t".into(),
                    "SPACE" => " ".into(),
                    "CR" => "\r".into(),
                    "LF" => "\n".into(),
                    _ => return None,
                })
            };
            out.push_str(&format_line(&fmt, &get)?);
        }
        print!("{out}");
        return Ok(Outcome::Success);
    };
    let (archive_id, meta) = load_archive(&session, &name)?;
    let fmt = match (&args.format, args.short) {
        (Some(f), _) => f.clone(),
        (None, true) => "{path}{NL}".into(),
        (None, false) => "{mode} {user:6} {group:6} {size:8} {mtime} {path}{extra}{NL}".into(),
    };
    // the selector hides part files, as borg's list does
    let mut selector = args.patterns.selector(&args.paths, 0)?;
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    use std::io::Write;
    for_each_item(&session, &meta, &mut |item: Item| {
        if !selector.select(&item) {
            return Ok(());
        }
        let path = read::display_path(&item.path);
        let mtime = super::cmd_diff::ts(item.mtime);
        let user = item
            .user
            .as_ref()
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_else(|| item.uid.to_string());
        let group = item
            .group
            .as_ref()
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_else(|| item.gid.to_string());
        // borg's Item.get_size: a symlink's size is the length of its target
        let link_len = item
            .is_symlink()
            .then(|| item.source.as_ref().map_or(0, |s| s.len() as u64));
        let size = item.size.or(link_len).unwrap_or_else(|| item.chunks_size());
        let source = item.source.as_ref().map(|s| read::display_path(s));
        let is_link = item.mode & 0o170000 == 0o120000;
        if args.json_lines {
            let j = json!({
                "type": item_type(item.mode), "mode": output::mode_string(item.mode), "user": user, "group": group,
                "uid": item.uid, "gid": item.gid, "path": path, "healthy": item.chunks_healthy.is_none(),
                "source": source.clone().unwrap_or_default(), "linktarget": source.clone().unwrap_or_default(),
                "flags": item.bsdflags, "mtime": output::iso(mtime), "size": size,
            });
            writeln!(lock, "{j}")?;
            return Ok(());
        }
        let extra = match &source {
            Some(s) if is_link => format!(" -> {s}"),
            Some(s) => format!(" link to {s}"),
            None => String::new(),
        };
        let hashes = content_hashes(&session, &item, &fmt)?;
        let iso = |t: Option<i64>| {
            t.map(|t| output::iso(super::cmd_diff::ts(t)))
                .unwrap_or_default()
        };
        let get = |k: &str| -> Option<String> {
            if let Some(h) = hashes.get(k) {
                return Some(h.clone());
            }
            Some(match k {
                // hardlink slaves show as 'h' (borg's ItemFormatter)
                "mode" if source.is_some() && !is_link => {
                    format!("h{}", &output::mode_string(item.mode)[1..])
                }
                "mode" => output::mode_string(item.mode),
                "isoctime" => iso(item.ctime),
                "isoatime" => iso(item.atime),
                "archiveid" => hex::encode(archive_id),
                "type" => item_type(item.mode).into(),
                "user" => user.clone(),
                "group" => group.clone(),
                "uid" => item.uid.to_string(),
                "gid" => item.gid.to_string(),
                "size" => size.to_string(),
                "csize" => link_len
                    .unwrap_or_else(|| {
                        item.chunks
                            .iter()
                            .flatten()
                            .map(|c| c.csize as u64)
                            .sum::<u64>()
                    })
                    .to_string(),
                "num_chunks" => item.chunks.as_ref().map_or(0, |c| c.len()).to_string(),
                "mtime" => output::time(mtime),
                "isomtime" => output::iso(mtime),
                "ctime" => item
                    .ctime
                    .map(|t| output::time(super::cmd_diff::ts(t)))
                    .unwrap_or_default(),
                "atime" => item
                    .atime
                    .map(|t| output::time(super::cmd_diff::ts(t)))
                    .unwrap_or_default(),
                "path" | "bpath" => path.clone(),
                "source" | "linktarget" => source.clone().unwrap_or_default(),
                "extra" => extra.clone(),
                "flags" => item.bsdflags.unwrap_or(0).to_string(),
                "health" => if item.chunks_healthy.is_some() {
                    "broken"
                } else {
                    "healthy"
                }
                .into(),
                "archivename" => name.clone(),
                "NL" | "NEWLINE" | "LF" => "\n".into(),
                "TAB" => "\t".into(),
                "SPACE" => " ".into(),
                "CR" => "\r".into(),
                _ => return None,
            })
        };
        lock.write_all(format_line(&fmt, &get)?.as_bytes())?;
        Ok(())
    })?;
    lock.flush()?;
    Ok(Outcome::Success)
}

pub fn run_info(common: &Common, args: InfoArgs) -> Result<Outcome> {
    let (session, archive) = open_session(common, args.location.as_deref())?;
    let env = super::env;
    let repo_id = session.repo.lock().expect("repository lock").id();
    let cache = CacheDir::open(&env, &repo_id)?;
    let chunks = cache.load_chunks(&session)?;
    let (mut uc, mut total) = (0u64, 0u64);
    for e in chunks.values() {
        uc += e.csize as u64;
        total += e.refcount as u64;
    }
    // borg 1.2+: "All archives" original and compressed sizes add up the archives' own
    // totals (so part files do not count twice); the unique sizes are the whole index's
    let (tu, tc) = read::archives_totals(&session)?;
    let repo_json = json!({
        "id": hex::encode(repo_id),
        "last_modified": output::iso(parse_time(&session.manifest.timestamp)),
        "location": session.location.canonical(),
    });
    let cache_json = json!({"path": cache.dir.display().to_string(), "stats": {
        "total_chunks": total, "total_csize": tc, "total_size": tu,
        "total_unique_chunks": chunks.len(), "unique_csize": uc,
        "unique_size": chunks.values().map(|e| e.size as u64).sum::<u64>(),
    }});
    args.archives.check_unnamed(archive.as_deref())?;
    let names: Vec<String> = match archive {
        Some(name) => vec![name],
        // borg's info always considers checkpoint archives
        None if args.archives.is_set() => args.archives.names(&session.manifest.archives, true)?,
        None => Vec::new(),
    };
    if !names.is_empty() {
        let mut infos = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (id, meta) = load_archive(&session, name)?;
            let share = cache.archive_chunks(&session, name.as_bytes(), &id)?;
            let per: HashMap<_, _> = share.iter().map(|(k, e)| (*k, e.refcount)).collect();
            // borg counts the file contents only: not the archive object, not item chunks
            let metadata: std::collections::HashSet<_> =
                meta.items.iter().chain(std::iter::once(&id)).collect();
            let dsize: u64 = chunks
                .iter()
                .filter(|(k, _)| !metadata.contains(k))
                .filter(|(k, e)| per.get(*k) == Some(&e.refcount))
                .map(|(_, e)| e.csize as u64)
                .sum();
            let start = parse_time(&meta.time);
            let end = parse_time(&meta.time_end);
            let duration = (end - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
            let cmdline: Vec<String> = meta
                .cmdline
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let cwd = meta
                .cwd
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .unwrap_or_default();
            let limit = meta.items.len() as f64 / 500_000.0;
            if args.json {
                infos.push(json!({
                    "name": name, "id": hex::encode(id), "start": output::iso(start), "end": output::iso(end),
                    "duration": duration, "hostname": String::from_utf8_lossy(&meta.hostname),
                    "username": String::from_utf8_lossy(&meta.username), "comment": String::from_utf8_lossy(&meta.comment),
                    "command_line": cmdline, "chunker_params": format!("{:?}", meta.chunker_params),
                    "limits": {"max_archive_size": limit},
                    "stats": {"original_size": meta.size, "compressed_size": meta.csize, "deduplicated_size": dsize, "nfiles": meta.nfiles},
                }));
                continue;
            }
            if i > 0 {
                println!();
            }
            println!("Archive name: {name}");
            println!("Archive fingerprint: {}", hex::encode(id));
            println!("Comment: {}", String::from_utf8_lossy(&meta.comment));
            println!("Hostname: {}", String::from_utf8_lossy(&meta.hostname));
            println!("Username: {}", String::from_utf8_lossy(&meta.username));
            println!("Time (start): {}", output::time(start));
            println!("Time (end): {}", output::time(end));
            println!("Duration: {}", output::duration(duration));
            println!("Number of files: {}", meta.nfiles);
            println!("Working Directory: {cwd}");
            println!("Command line: {}", cmdline.join(" "));
            println!(
                "Utilization of maximum supported archive size: {:.0}%",
                limit * 100.0
            );
            println!("{}", output::RULE);
            println!("{}", output::stats_header());
            println!(
                "{}",
                output::stats_row("This archive:", meta.size, meta.csize, dsize)
            );
            println!("{}", output::stats_row("All archives:", tu, tc, uc));
            println!();
            println!("                       Unique chunks         Total chunks");
            println!("Chunk index: {:>23}{:>21}", chunks.len(), total);
        }
        if args.json {
            let j = json!({
                "archives": infos,
                "repository": repo_json, "cache": cache_json, "encryption": {"mode": session.key.mode().name()},
            });
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        return Ok(Outcome::Success);
    }
    if args.json {
        let j = json!({"repository": repo_json, "cache": cache_json, "encryption": {"mode": session.key.mode().name()}});
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("Repository ID: {}", hex::encode(repo_id));
        println!("Location: {}", session.location.canonical());
        println!("Encrypted: {}", encryption_desc(session.key.mode()));
        println!("Cache: {}", cache.dir.display());
        println!("Security dir: {}", session.security.dir.display());
        println!("{}", output::RULE);
        println!("{}", output::stats_header());
        println!("{}", output::stats_row("All archives:", tu, tc, uc));
        println!();
        println!("                       Unique chunks         Total chunks");
        println!("Chunk index: {:>23}{:>21}", chunks.len(), total);
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_like_format() {
        let get = |k: &str| match k {
            "a" => Some("xy".to_string()),
            "NL" => Some("\n".to_string()),
            _ => None,
        };
        assert_eq!(
            format_line("{a:<5}|{a:>4}|{a}{NL}", &get).unwrap(),
            "xy   |  xy|xy\n"
        );
        assert_eq!(format_line("{{a}}", &get).unwrap(), "{a}");
        assert_eq!(format_line("{a:6}", &get).unwrap(), "xy    ");
        assert!(format_line("{zz}", &get).is_err());
    }
}
