//! `diff` (borg 1.4's command of the same name and output format).

use anyhow::Result;
use chrono::{DateTime, Utc};
use clap::Args;
use rmpv::Value;
use serde_json::json;

use super::cmd_extract::{open_archive_session, SelectArgs};
use super::output::{self, file_size};
use super::{Common, Outcome};
use proxborg::archive::diff::{compare_archives, Change, DiffOptions, ItemDiff};
use proxborg::archive::read::{load_items, open_archive};

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Only consider numeric user and group identifiers
    #[arg(long, visible_alias = "numeric-owner")]
    pub numeric_ids: bool,
    /// Override the check of chunker parameters
    #[arg(long)]
    pub same_chunker_params: bool,
    /// Sort the output lines by file path (deprecated, as in borg: use --sort-by=path)
    #[arg(long)]
    pub sort: bool,
    /// Sort by these comma-separated fields (path, size_diff, size_added, size_removed,
    /// size, user, group, uid, gid, ctime, mtime, ctime_diff, mtime_diff); prefix ">"
    /// for descending
    #[arg(long, value_name = "FIELDS")]
    pub sort_by: Option<String>,
    /// Only compare differences in content (exclude metadata differences)
    #[arg(long)]
    pub content_only: bool,
    /// Format output as JSON lines
    #[arg(long)]
    pub json_lines: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    /// REPOSITORY::ARCHIVE1
    pub location: String,
    /// ARCHIVE2 (in the same repository)
    pub archive2: String,
    /// Paths of items inside the archives to compare; patterns are supported
    pub paths: Vec<String>,
}

/// borg's `safe_timestamp`: `datetime.fromtimestamp(ns / 1e9)`, i.e. the float seconds
/// with the fraction rounded half-even to microseconds (as CPython does).
pub fn ts(ns: i64) -> DateTime<Utc> {
    let f = ns as f64 / 1e9;
    let (int, frac) = (f.trunc(), f.fract());
    let mut us = frac * 1e6;
    let r = us.round();
    us = if (us - us.trunc()).abs() == 0.5 {
        2.0 * (us / 2.0).round()
    } else {
        r
    };
    let micros = int as i64 * 1_000_000 + us as i64;
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default()
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "None".into())
}

/// JSON value of an owner field: ids are numbers, missing names null.
fn owner_json(v: &Option<String>, numeric: bool) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(s) if numeric => s
            .parse::<u64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| s.clone().into()),
        Some(s) => s.clone().into(),
    }
}

fn text(c: &Change) -> String {
    match c {
        Change::Presence(s) => s.clone(),
        Change::Added(s) => format!("added {:>13}", file_size(*s as i64, 2, false)),
        Change::Removed(s) => format!("removed {:>11}", file_size(*s as i64, 2, false)),
        Change::Modified {
            added: Some(a),
            removed: Some(r),
        } => {
            format!(
                "{:>9} {:>9}",
                file_size(*a as i64, 1, true),
                file_size(-(*r as i64), 1, true)
            )
        }
        Change::Modified { .. } => "modified".into(),
        Change::Owner { old, new } => format!(
            "[{}:{} -> {}:{}]",
            opt(&old.0),
            opt(&old.1),
            opt(&new.0),
            opt(&new.1)
        ),
        Change::Mode { old, new } => format!(
            "[{} -> {}]",
            output::mode_string(*old),
            output::mode_string(*new)
        ),
        Change::Time { attr, old, new } => format!(
            "[{attr}: {} -> {}]",
            output::time(ts(*old)),
            output::time(ts(*new))
        ),
    }
}

fn to_json(c: &Change, numeric: bool) -> serde_json::Value {
    let o = |v: &Option<String>| owner_json(v, numeric);
    match c {
        Change::Presence(s) => json!({"type": s}),
        Change::Added(s) => json!({"type": "added", "size": s}),
        Change::Removed(s) => json!({"type": "removed", "size": s}),
        Change::Modified {
            added: Some(a),
            removed: Some(r),
        } => json!({"type": "modified", "added": a, "removed": r}),
        Change::Modified { .. } => json!({"type": "modified"}),
        Change::Owner { old, new } => {
            json!({"type": "owner", "old_user": o(&old.0), "old_group": o(&old.1), "new_user": o(&new.0), "new_group": o(&new.1)})
        }
        Change::Mode { old, new } => {
            json!({"type": "mode", "old_mode": output::mode_string(*old), "new_mode": output::mode_string(*new)})
        }
        Change::Time { attr, old, new } => {
            json!({"type": attr, format!("old_{attr}"): output::iso(ts(*old)), format!("new_{attr}"): output::iso(ts(*new))})
        }
    }
}

/// borg's `normalize_chunker_params`: old archives store 4 numbers without the algorithm.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.len() == 4 && a.iter().all(|x| x.is_u64()) => {
            let mut n = vec![Value::from("buzhash")];
            n.extend(a.iter().cloned());
            Value::Array(n)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| match x.as_slice() {
                    Some(b) => Value::from(String::from_utf8_lossy(b).into_owned()),
                    None => x.clone(),
                })
                .collect(),
        ),
        v => v.clone(),
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Num(i128),
    Text(Vec<u8>),
}

/// borg's `key_for` of `--sort-by`.
fn sort_key(field: &str, d: &ItemDiff) -> Result<SortKey> {
    let (mut added, mut removed) = (0i128, 0i128);
    for c in &d.changes {
        match c {
            Change::Modified {
                added: a,
                removed: r,
            } => {
                added += a.unwrap_or(0) as i128;
                removed += r.unwrap_or(0) as i128;
            }
            Change::Added(s) => added += *s as i128,
            Change::Removed(s) => removed += *s as i128,
            _ => {}
        }
    }
    let cur = if d.new.deleted {
        &d.old.item
    } else {
        &d.new.item
    };
    let name = |v: &Option<Vec<u8>>| v.clone().unwrap_or_default();
    Ok(match field {
        "path" => SortKey::Text(d.path.clone()),
        "size_diff" => SortKey::Num(added - removed),
        "size_added" => SortKey::Num(added),
        "size_removed" => SortKey::Num(removed),
        "ctime_diff" => SortKey::Num(
            i128::from(d.new.item.ctime.unwrap_or(0)) - i128::from(d.old.item.ctime.unwrap_or(0)),
        ),
        "mtime_diff" => SortKey::Num(i128::from(d.new.item.mtime) - i128::from(d.old.item.mtime)),
        "size" if d.new.deleted => SortKey::Num(0),
        "size" => SortKey::Num(d.new.item.size.unwrap_or_else(|| d.new.item.chunks_size()) as i128),
        "user" => SortKey::Text(name(&cur.user)),
        "group" => SortKey::Text(name(&cur.group)),
        "uid" => SortKey::Num(cur.uid.into()),
        "gid" => SortKey::Num(cur.gid.into()),
        "ctime" => SortKey::Num(cur.ctime.unwrap_or(0).into()),
        "mtime" => SortKey::Num(cur.mtime.into()),
        f => anyhow::bail!("Invalid field name: {f}"),
    })
}

pub fn run(common: &Common, args: DiffArgs) -> Result<Outcome> {
    let (session, a1) = open_archive_session(common, &args.location)?;
    let a2 = open_archive(&session, &args.archive2)?;
    let mut selector = args.select.selector(&args.paths)?;
    let (cp1, cp2) = (&a1.meta.chunker_params, &a2.meta.chunker_params);
    let same = if args.same_chunker_params {
        true
    } else if !cp1.is_nil() && !cp2.is_nil() {
        let same = normalize(cp1) == normalize(cp2);
        if !same {
            eprintln!("--chunker-params are different between archives, diff will be slow.");
        }
        same
    } else {
        eprintln!(
            "--chunker-params might be different between archives, diff will be slow.\n\
             If you know for certain that they are the same, pass --same-chunker-params to override this check."
        );
        false
    };
    let opts = DiffOptions {
        same_chunker_params: same,
        content_only: args.content_only,
        numeric_ids: args.numeric_ids,
    };
    let items1 = load_items(&session, &a1.meta)?;
    let items2 = load_items(&session, &a2.meta)?;
    let mut warnings = 0;
    let mut diffs = compare_archives(&session, items1, items2, &mut selector, &opts, &mut |w| {
        warnings += 1;
        eprintln!("{w}");
    })?;
    let specs: Vec<String> = match (&args.sort_by, args.sort) {
        (Some(s), _) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        (None, true) => {
            eprintln!("Warning: \"--sort\" is deprecated. Use \"--sort-by=path\" instead.");
            vec!["path".into()]
        }
        (None, false) => Vec::new(),
    };
    for spec in specs.iter().rev() {
        let (desc, field) = match spec.strip_prefix('>') {
            Some(f) => (true, f),
            None => (false, spec.strip_prefix('<').unwrap_or(spec)),
        };
        let mut keyed: Vec<(SortKey, ItemDiff)> = Vec::with_capacity(diffs.len());
        for d in diffs {
            keyed.push((sort_key(field, &d)?, d));
        }
        keyed.sort_by(|a, b| if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
        diffs = keyed.into_iter().map(|(_, d)| d).collect();
    }
    for d in &diffs {
        let path = proxborg::archive::read::display_path(&d.path);
        if args.json_lines {
            let changes: Vec<_> = d
                .changes
                .iter()
                .map(|c| to_json(c, args.numeric_ids))
                .collect();
            println!("{}", json!({"changes": changes, "path": path}));
        } else {
            let t: Vec<String> = d.changes.iter().map(text).collect();
            println!("{:<19} {path}", t.join(" "));
        }
    }
    for p in selector.unmatched_includes() {
        warnings += 1;
        eprintln!("Include pattern '{p}' never matched.");
    }
    Ok(if warnings > 0 {
        Outcome::Warning
    } else {
        Outcome::Success
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_borg() {
        assert_eq!(file_size(0, 1, true), "0 B");
        assert_eq!(file_size(1234, 1, true), "+1.2 kB");
        assert_eq!(file_size(-1234, 1, true), "-1.2 kB");
        assert_eq!(file_size(999, 1, true), "+999 B");
        assert_eq!(file_size(3_000_000, 2, false), "3.00 MB");
    }
}
