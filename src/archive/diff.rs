//! `diff`: what changed between two archives, item by item, as borg 1.4's
//! `Archive.compare_archives_iter` and `ItemDiff` decide it (same pairing of paths, same
//! hardlink handling, same change kinds and order).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::archive::read::{for_each_chunk, ReadError, Selector};
use crate::format::objects::Item;
use crate::session::Session;

/// One side of a pair: an item, or nothing at that path (`deleted`).
#[derive(Clone, Debug)]
pub struct Side {
    pub item: Item,
    pub deleted: bool,
}

impl Side {
    fn present(item: Item) -> Side {
        Side {
            item,
            deleted: false,
        }
    }

    /// borg's `Item.create_deleted`: mode 0, empty chunk list.
    fn deleted(path: &[u8]) -> Side {
        Side {
            item: Item {
                path: path.to_vec(),
                mode: 0,
                chunks: Some(Vec::new()),
                ..Default::default()
            },
            deleted: true,
        }
    }
}

/// One change, in borg's words (`ItemDiff.changes()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `added link`, `removed link`, `changed link`, `added directory`, `removed fifo`, …
    Presence(String),
    /// A regular file appeared (its size).
    Added(u64),
    /// A regular file disappeared (its size).
    Removed(u64),
    /// Content changed: bytes in chunks only the new / only the old version has (`None`
    /// when the chunker parameters differ and only "modified" can be said).
    Modified {
        added: Option<u64>,
        removed: Option<u64>,
    },
    /// (user, group) names, or ids with `numeric_ids`; `None` where the archive has no name.
    Owner {
        old: (Option<String>, Option<String>),
        new: (Option<String>, Option<String>),
    },
    Mode {
        old: u32,
        new: u32,
    },
    /// `ctime` or `mtime`, ns.
    Time {
        attr: &'static str,
        old: i64,
        new: i64,
    },
}

#[derive(Clone, Debug)]
pub struct ItemDiff {
    pub path: Vec<u8>,
    pub old: Side,
    pub new: Side,
    pub changes: Vec<Change>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Chunk ids are comparable (same chunker parameters).
    pub same_chunker_params: bool,
    pub content_only: bool,
    pub numeric_ids: bool,
}

fn content_hash(session: &Session, item: &Item) -> Result<[u8; 32], ReadError> {
    let mut h = Sha256::new();
    for_each_chunk(
        session,
        item.chunks.as_deref().unwrap_or_default(),
        &mut |_, d: &[u8]| -> Result<(), ReadError> {
            h.update(d);
            Ok(())
        },
    )?;
    Ok(h.finalize().into())
}

fn owner(item: &Item, numeric: bool) -> (Option<String>, Option<String>) {
    let s = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    if numeric {
        (Some(item.uid.to_string()), Some(item.gid.to_string()))
    } else {
        (s(&item.user), s(&item.group))
    }
}

fn is_type(item: &Item, t: u32) -> bool {
    item.mode & 0o170000 == t
}

fn presence(a: &Side, b: &Side, what: &str) -> Option<Change> {
    match (a.deleted, b.deleted) {
        (false, true) => Some(Change::Presence(format!("removed {what}"))),
        (true, false) => Some(Change::Presence(format!("added {what}"))),
        _ => None,
    }
}

/// borg's `ItemDiff`: whether the two sides are equal, and the list of changes.
fn item_diff(
    session: &Session,
    a: &Side,
    b: &Side,
    o: &DiffOptions,
) -> Result<(bool, Vec<Change>), ReadError> {
    let (i1, i2) = (&a.item, &b.item);
    let mut ch = Vec::new();
    if i1.is_symlink() || i2.is_symlink() {
        if let Some(p) = presence(a, b, "link") {
            ch.push(p);
        } else if i1.source.is_some() && i2.source.is_some() && i1.source != i2.source {
            ch.push(Change::Presence("changed link".into()));
        }
    }
    let both_chunks = i1.chunks.is_some() && i2.chunks.is_some();
    if both_chunks {
        let size = |i: &Item| i.size.unwrap_or_else(|| i.chunks_size());
        if a.deleted {
            ch.push(Change::Added(size(i2)));
        } else if b.deleted {
            ch.push(Change::Removed(size(i1)));
        } else if !o.same_chunker_params {
            ch.push(Change::Modified {
                added: None,
                removed: None,
            });
        } else {
            let ids1: std::collections::HashSet<_> =
                i1.chunks.iter().flatten().map(|c| c.id).collect();
            let ids2: std::collections::HashSet<_> =
                i2.chunks.iter().flatten().map(|c| c.id).collect();
            // get_size(consider_ids=…): every chunk entry whose id is in the set counts
            let added = i2
                .chunks
                .iter()
                .flatten()
                .filter(|c| !ids1.contains(&c.id))
                .map(|c| u64::from(c.size))
                .sum();
            let removed = i1
                .chunks
                .iter()
                .flatten()
                .filter(|c| !ids2.contains(&c.id))
                .map(|c| u64::from(c.size))
                .sum();
            ch.push(Change::Modified {
                added: Some(added),
                removed: Some(removed),
            });
        }
    }
    for (t, what) in [
        (0o040000, "directory"),
        (0o060000, "blkdev"),
        (0o020000, "chrdev"),
        (0o010000, "fifo"),
    ] {
        if is_type(i1, t) || is_type(i2, t) {
            ch.extend(presence(a, b, what));
        }
    }
    if !(a.deleted || b.deleted || o.content_only) {
        let (o1, o2) = (owner(i1, o.numeric_ids), owner(i2, o.numeric_ids));
        if o1 != o2 {
            ch.push(Change::Owner { old: o1, new: o2 });
        }
        if i1.mode != i2.mode {
            ch.push(Change::Mode {
                old: i1.mode,
                new: i2.mode,
            });
        }
        if let (Some(c1), Some(c2)) = (i1.ctime, i2.ctime) {
            if c1 != c2 {
                ch.push(Change::Time {
                    attr: "ctime",
                    old: c1,
                    new: c2,
                });
            }
        }
        if i1.mtime != i2.mtime {
            ch.push(Change::Time {
                attr: "mtime",
                old: i1.mtime,
                new: i2.mtime,
            });
        }
    }
    // ItemDiff._equal
    let equal = if a.deleted && b.deleted {
        true
    } else {
        let mut eq = a.deleted == b.deleted && i1.source == i2.source;
        if eq && !o.content_only {
            eq = i1.mode == i2.mode && i1.ctime == i2.ctime && i1.mtime == i2.mtime;
            eq = eq
                && if o.numeric_ids {
                    (i1.uid, i1.gid) == (i2.uid, i2.gid)
                } else {
                    (&i1.user, &i1.group) == (&i2.user, &i2.group)
                };
        }
        if eq && both_chunks {
            eq = if o.same_chunker_params {
                i1.chunks == i2.chunks
            } else {
                i1.chunks_size() == i2.chunks_size()
                    && content_hash(session, i1)? == content_hash(session, i2)?
            };
        }
        eq
    };
    // "modified" with nothing added or removed is no change (borg's actual_change)
    ch.retain(|c| {
        !matches!(
            c,
            Change::Modified {
                added: Some(0),
                removed: Some(0)
            }
        )
    });
    Ok((equal, ch))
}

fn is_hardlink_master(i: &Item) -> bool {
    i.hardlink_master != Some(false) && i.source.is_none() && i.is_hardlinkable()
}

/// Compares two archives' item lists (already loaded, in archive order); returns the
/// pairs that are not equal, in borg's output order. `selector` restricts the paths
/// (its strip count is ignored). Unresolvable hardlinks are reported to `warn`.
pub fn compare_archives(
    session: &Session,
    items1: Vec<Item>,
    items2: Vec<Item>,
    selector: &mut Selector,
    opts: &DiffOptions,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<ItemDiff>, ReadError> {
    let items1: Vec<Item> = items1.into_iter().filter(|i| selector.select(i)).collect();
    let items2: Vec<Item> = items2.into_iter().filter(|i| selector.select(i)).collect();
    let mut masters: HashMap<Vec<u8>, (Side, Side)> = HashMap::new();
    let mut out = Vec::new();
    let mut deferred: Vec<(Side, Side)> = Vec::new();

    let seen = |i: &Item, m: &HashMap<Vec<u8>, (Side, Side)>| {
        i.source.is_none()
            || !i.is_hardlinkable()
            || i.source.as_ref().is_some_and(|s| m.contains_key(s))
    };
    let compare = |a: Side,
                   b: Side,
                   m: &HashMap<Vec<u8>, (Side, Side)>,
                   out: &mut Vec<ItemDiff>|
     -> Result<(), ReadError> {
        let path = a.item.path.clone();
        let pick = |s: &Side, first: bool| -> Side {
            if s.item.is_hardlinkable() {
                if let Some((m1, m2)) = s.item.source.as_ref().and_then(|src| m.get(src)) {
                    return if first { m1.clone() } else { m2.clone() };
                }
            }
            s.clone()
        };
        let (x, y) = (pick(&a, true), pick(&b, false));
        let (equal, changes) = item_diff(session, &x, &y, opts)?;
        if !equal {
            out.push(ItemDiff {
                path,
                old: a,
                new: b,
                changes,
            });
        }
        Ok(())
    };
    let update = |a: &Side, b: &Side, m: &mut HashMap<Vec<u8>, (Side, Side)>| {
        if is_hardlink_master(&a.item) || is_hardlink_master(&b.item) {
            m.insert(a.item.path.clone(), (a.clone(), b.clone()));
        }
    };
    // insertion-ordered orphan maps (Python's OrderedDict)
    let mut orphans1: Vec<Option<Side>> = Vec::new();
    let mut idx1: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut orphans2: Vec<Option<Side>> = Vec::new();
    let mut idx2: HashMap<Vec<u8>, usize> = HashMap::new();
    let n = items1.len().max(items2.len());
    let mut it1 = items1.into_iter();
    let mut it2 = items2.into_iter();
    for _ in 0..n {
        let i1 = it1.next().map(Side::present);
        let i2 = it2.next().map(Side::present);
        let mut pair = |a: Side,
                        b: Side,
                        masters: &mut HashMap<Vec<u8>, (Side, Side)>,
                        out: &mut Vec<ItemDiff>|
         -> Result<(), ReadError> {
            update(&a, &b, masters);
            if !seen(&a.item, masters) || !seen(&b.item, masters) {
                deferred.push((a, b));
                Ok(())
            } else {
                compare(a, b, masters, out)
            }
        };
        if let (Some(a), Some(b)) = (&i1, &i2) {
            if a.item.path == b.item.path {
                pair(a.clone(), b.clone(), &mut masters, &mut out)?;
                continue;
            }
        }
        if let Some(a) = i1 {
            match idx2.remove(&a.item.path).and_then(|k| orphans2[k].take()) {
                Some(b) => pair(a, b, &mut masters, &mut out)?,
                None => {
                    idx1.insert(a.item.path.clone(), orphans1.len());
                    orphans1.push(Some(a));
                }
            }
        }
        if let Some(b) = i2 {
            match idx1.remove(&b.item.path).and_then(|k| orphans1[k].take()) {
                Some(a) => pair(a, b, &mut masters, &mut out)?,
                None => {
                    idx2.insert(b.item.path.clone(), orphans2.len());
                    orphans2.push(Some(b));
                }
            }
        }
    }
    for added in orphans2.into_iter().flatten() {
        let d = Side::deleted(&added.item.path);
        update(&d, &added, &mut masters);
        compare(d, added, &masters, &mut out)?;
    }
    for removed in orphans1.into_iter().flatten() {
        let d = Side::deleted(&removed.item.path);
        update(&removed, &d, &mut masters);
        compare(removed, d, &masters, &mut out)?;
    }
    for (a, b) in deferred {
        let (s1, s2) = (seen(&a.item, &masters), seen(&b.item, &masters));
        if s1 && s2 {
            compare(a, b, &masters, &mut out)?;
        } else {
            for s in [(&a, s1), (&b, s2)]
                .iter()
                .filter(|(_, ok)| !ok)
                .map(|(s, _)| s)
            {
                warn(format!(
                    "cannot find hardlink source for {} ({}), skipping compare.",
                    String::from_utf8_lossy(&s.item.path),
                    String::from_utf8_lossy(s.item.source.as_deref().unwrap_or_default())
                ));
            }
        }
    }
    Ok(out)
}
