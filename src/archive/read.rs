//! Reading archives back: find an archive by name, stream its items, fetch file contents
//! in order, and select items the way `borg extract` / `export-tar` do (patterns,
//! `--strip-components`, hardlink masters outside the selection).
//!
//! File contents are fetched by one thread (the repository is a single stream of
//! requests) while decryption, decompression and id checks of a window of chunks run on
//! the rayon pool, and the caller consumes the previous window: a restore is bounded by
//! the slowest of the three, not by their sum.

use std::collections::HashMap;
use std::sync::mpsc;

use crate::archive::patterns::{Pattern, PatternMatcher, PatternStyle};
use crate::format::objects::{ArchiveMeta, ChunkRef, Item, ItemStreamDecoder, ObjectError};
use crate::repo::ObjectId;
use crate::session::{Session, SessionError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{0}")]
    Object(#[from] ObjectError),
    #[error("archive {0:?} does not exist")]
    NoArchive(String),
    #[error("archive {name:?}: {source}")]
    ArchiveMeta { name: String, source: ObjectError },
}

/// An archive found in the manifest, with its metadata object.
#[derive(Clone, Debug)]
pub struct ArchiveRef {
    pub name: String,
    pub id: ObjectId,
    pub meta: ArchiveMeta,
}

/// Loads the archive object of `name` (authenticated against its TAM when the key has one).
pub fn open_archive(session: &Session, name: &str) -> Result<ArchiveRef, ReadError> {
    let a = session
        .manifest
        .archives
        .get(name.as_bytes())
        .ok_or_else(|| ReadError::NoArchive(name.to_string()))?;
    let raw = session.get_object(&a.id)?;
    Ok(ArchiveRef {
        name: name.to_string(),
        id: a.id,
        meta: decode_archive(session, name, &raw)?,
    })
}

/// The archive object `raw` of archive `name`, authenticated.
fn decode_archive(session: &Session, name: &str, raw: &[u8]) -> Result<ArchiveMeta, ReadError> {
    let (meta, _) = ArchiveMeta::decode(raw, session.key.as_ref()).map_err(|source| {
        ReadError::ArchiveMeta {
            name: name.to_string(),
            source,
        }
    })?;
    Ok(meta)
}

/// Archive objects fetched at once by [`archives_totals`].
const ARCHIVE_WINDOW: usize = 64;

/// borg 1.2+'s "All archives" original and compressed sizes: the sums of every archive's
/// own `size` and `csize` (archives of borg < 1.2, which have none, count 0).
pub fn archives_totals(session: &Session) -> Result<(u64, u64), ReadError> {
    let all: Vec<(&Vec<u8>, ObjectId)> = session
        .manifest
        .archives
        .iter()
        .map(|(n, a)| (n, a.id))
        .collect();
    let (mut size, mut csize) = (0u64, 0u64);
    for window in all.chunks(ARCHIVE_WINDOW) {
        let ids: Vec<ObjectId> = window.iter().map(|(_, id)| *id).collect();
        for ((name, _), raw) in window.iter().zip(session.get_objects(&ids)?) {
            let meta = decode_archive(session, &String::from_utf8_lossy(name), &raw)?;
            size += meta.size;
            csize += meta.csize;
        }
    }
    Ok((size, csize))
}

/// Item-stream chunks fetched at once (borg's item chunks average 128 KiB).
const ITEM_WINDOW: usize = 16;

/// Streams the items of an archive, in stream order, to `f`.
pub fn for_each_item<E: From<ReadError>>(
    session: &Session,
    meta: &ArchiveMeta,
    f: &mut dyn FnMut(Item) -> Result<(), E>,
) -> Result<(), E> {
    for_each_item_batch(session, meta, &mut |items: Vec<Item>| -> Result<(), E> {
        items.into_iter().try_for_each(&mut *f)
    })
}

/// Streams the items `selector` takes, in stream order, to `f` (with the selector, for its
/// hardlink bookkeeping). The chunks of small files are read ahead in batches
/// ([`prefetch_small_files`]), which saves a round trip per file over ssh.
pub fn for_each_selected<E: From<ReadError>>(
    session: &Session,
    meta: &ArchiveMeta,
    selector: &mut Selector,
    f: &mut dyn FnMut(Item, &mut Selector) -> Result<(), E>,
) -> Result<(), E> {
    for_each_item_batch(session, meta, &mut |items: Vec<Item>| -> Result<(), E> {
        // Selecting only looks back at earlier items, so a batch can be selected first.
        let mut items: Vec<Item> = items.into_iter().filter(|i| selector.select(i)).collect();
        while !items.is_empty() {
            let n = prefetch_small_files(session, &items);
            for item in items.drain(..n) {
                f(item, selector)?;
            }
        }
        Ok(())
    })
}

/// Streams the items of an archive in stream order, in batches (those of a few item-stream
/// chunks), so the caller can look ahead.
fn for_each_item_batch<E: From<ReadError>>(
    session: &Session,
    meta: &ArchiveMeta,
    f: &mut dyn FnMut(Vec<Item>) -> Result<(), E>,
) -> Result<(), E> {
    let mut dec = ItemStreamDecoder::new();
    for ids in meta.items.chunks(ITEM_WINDOW) {
        let plains: Vec<Result<Vec<u8>, SessionError>> = match session.get_objects(ids) {
            Ok(v) => v.into_iter().map(Ok).collect(),
            // A damaged chunk: fetched one by one, so the items before it still go out.
            Err(_) => ids.iter().map(|id| session.get_object(id)).collect(),
        };
        let mut batch = Vec::new();
        let mut decode = |plain: Result<Vec<u8>, SessionError>| -> Result<(), ReadError> {
            dec.feed(&plain?);
            while let Some(item) = dec.next_item()? {
                batch.push(item);
            }
            Ok(())
        };
        let failed = plains.into_iter().map(&mut decode).find_map(Result::err);
        f(batch)?;
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    dec.finish().map_err(ReadError::from)?;
    Ok(())
}

/// Compressed bytes of small files read ahead at once.
const PREFETCH_BYTES: u64 = 8 << 20;

/// Reads ahead the chunks of the small files (one or two chunks, which
/// [`for_each_chunk`] fetches one by one) among `items`, from the first, as far as
/// [`PREFETCH_BYTES`] go; returns how many items that covers (at least one).
fn prefetch_small_files(session: &Session, items: &[Item]) -> usize {
    let (mut ids, mut bytes, mut n) = (Vec::new(), 0u64, 0);
    for item in items {
        let small = item.chunks.as_ref().filter(|c| (1..=2).contains(&c.len()));
        let size: u64 = small.map_or(0, |c| c.iter().map(|c| u64::from(c.csize)).sum());
        if n > 0 && bytes + size > PREFETCH_BYTES {
            break;
        }
        ids.extend(small.into_iter().flatten().map(|c| c.id));
        bytes += size;
        n += 1;
    }
    if ids.len() > 1 {
        // A failed read ahead only costs the round trips: each object is then fetched,
        // and its error reported, for its own item.
        let _ = session.prefetch(&ids);
    }
    n
}

/// All items of an archive (for commands that need random access, e.g. `diff`).
pub fn load_items(session: &Session, meta: &ArchiveMeta) -> Result<Vec<Item>, ReadError> {
    let mut v = Vec::new();
    for_each_item(session, meta, &mut |it: Item| -> Result<(), ReadError> {
        v.push(it);
        Ok(())
    })?;
    Ok(v)
}

/// Receives each chunk reference with its plaintext.
pub type ChunkSink<'a, E> = dyn FnMut(&ChunkRef, &[u8]) -> Result<(), E> + 'a;

/// Chunks per window: enough to keep two cores busy, small enough (with borg's ≤ 8 MiB
/// chunks) to bound memory.
const WINDOW: usize = 8;

/// Fetches the plaintexts of `chunks` and hands them to `f` in order. Every chunk is
/// authenticated and id-checked ([`Session::open_object`]).
pub fn for_each_chunk<E: From<ReadError> + Send>(
    session: &Session,
    chunks: &[ChunkRef],
    f: &mut ChunkSink<'_, E>,
) -> Result<(), E> {
    if chunks.len() <= 2 {
        for c in chunks {
            let data = session.get_object(&c.id).map_err(ReadError::from)?;
            f(c, &data)?;
        }
        return Ok(());
    }
    let fetch_window = |w: &[ChunkRef]| -> Result<Vec<Vec<u8>>, ReadError> {
        let ids: Vec<ObjectId> = w.iter().map(|c| c.id).collect();
        Ok(session.get_objects(&ids)?)
    };
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<Vec<u8>>, ReadError>>(1);
        s.spawn(move || {
            for w in chunks.chunks(WINDOW) {
                let r = fetch_window(w);
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    break;
                }
            }
        });
        let mut refs = chunks.iter();
        for window in rx {
            for data in window? {
                // windows arrive in order and hold one plaintext per chunk reference
                let Some(c) = refs.next() else { break };
                f(c, &data)?;
            }
        }
        Ok(())
    })
}

/// Where a hardlink group's content is, while a partial selection is processed: the
/// chunks of a master that was not selected, or the path its first selected member was
/// written to (`hardlink_masters` in borg).
#[derive(Clone, Debug, Default)]
pub struct HardlinkMaster {
    pub chunks: Option<Vec<ChunkRef>>,
    pub link_target: Option<Vec<u8>>,
}

/// A path for display as borg shows it (`remove_surrogates`): bytes that are not UTF-8
/// each become `?`.
pub fn display_path(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, bad) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let n = e.error_len().unwrap_or(bad.len()).max(1);
                out.extend(std::iter::repeat_n('?', n));
                bytes = &bad[n..];
            }
        }
    }
}

/// Splits on `/` and drops the first `n` components (`os.sep.join(p.split(os.sep)[n:])`).
pub fn strip_components(path: &[u8], n: usize) -> Vec<u8> {
    if n == 0 {
        return path.to_vec();
    }
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts.len() <= n {
        return Vec::new();
    }
    parts[n..].join(&b'/')
}

/// Which items an extraction takes: borg's `build_matcher` + `build_filter` +
/// `peek_and_store_hardlink_masters`, and the part-file filter.
pub struct Selector {
    matcher: PatternMatcher,
    strip: usize,
    /// A pattern or `--strip-components` is in effect (borg's `partial_extract`).
    pub partial: bool,
    includes: Vec<(String, Pattern, u64)>,
    /// Unselected masters (partial only), keyed by archived path.
    pub masters: HashMap<Vec<u8>, HardlinkMaster>,
}

impl Selector {
    /// `matcher` holds the `-e`/`--pattern` rules; `paths` are the PATH arguments.
    pub fn new(
        mut matcher: PatternMatcher,
        paths: &[String],
        strip: usize,
    ) -> Result<Selector, crate::archive::patterns::PatternError> {
        let mut includes = Vec::new();
        for p in paths {
            includes.push((p.clone(), Pattern::parse(p, PatternStyle::PathPrefix)?, 0));
        }
        matcher.add_include_paths(paths)?;
        let partial = !matcher.is_empty() || strip > 0;
        Ok(Selector {
            matcher,
            strip,
            partial,
            includes,
            masters: HashMap::new(),
        })
    }

    /// Whether `item` is taken; records an unselected hardlink master's chunks.
    pub fn select(&mut self, item: &Item) -> bool {
        if item.is_part() {
            return false;
        }
        let d = self.matcher.matches_bytes(&item.path);
        let mut matched = match d {
            crate::archive::patterns::MatchResult::Include => true,
            crate::archive::patterns::MatchResult::NoMatch => self.matcher.fallback_include(),
            _ => false,
        };
        if matched {
            let text = String::from_utf8_lossy(&item.path);
            if let Some(inc) = self.includes.iter_mut().find(|(_, p, _)| p.matches(&text)) {
                inc.2 += 1;
            }
        }
        if matched && self.strip > 0 && strip_components(&item.path, self.strip).is_empty() {
            matched = false;
        }
        if self.partial
            && !matched
            && item.is_hardlinkable()
            && item.hardlink_master != Some(false)
            && item.source.is_none()
        {
            self.masters.insert(
                item.path.clone(),
                HardlinkMaster {
                    chunks: item.chunks.clone(),
                    link_target: None,
                },
            );
        }
        matched
    }

    /// The item's path after `--strip-components`.
    pub fn output_path(&self, item: &Item) -> Vec<u8> {
        strip_components(&item.path, self.strip)
    }

    pub fn strip(&self) -> usize {
        self.strip
    }

    /// PATH arguments no item matched (borg warns "Include pattern '…' never matched.").
    pub fn unmatched_includes(&self) -> Vec<String> {
        self.includes
            .iter()
            .filter(|(_, _, n)| *n == 0)
            .map(|(s, _, _)| s.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_like_remove_surrogates() {
        assert_eq!(display_path(b"a-\xff\xfe-\xc3\xa4"), "a-??-\u{e4}");
        assert_eq!(display_path(b"\xe2\x82"), "??");
    }

    #[test]
    fn strips_like_python_split() {
        assert_eq!(strip_components(b"a/b/c", 1), b"b/c");
        assert_eq!(strip_components(b"a/b/c", 2), b"c");
        assert_eq!(strip_components(b"a/b/c", 3), b"");
        assert_eq!(strip_components(b"a", 0), b"a");
    }

    #[test]
    fn selector_records_unselected_masters() {
        let mut s = Selector::new(PatternMatcher::new(true), &["sub".to_string()], 0).unwrap();
        assert!(s.partial);
        let master = Item {
            path: b"hl1".to_vec(),
            mode: 0o100644,
            hardlink_master: Some(true),
            chunks: Some(vec![]),
            ..Default::default()
        };
        assert!(!s.select(&master));
        assert!(s.masters.contains_key(b"hl1".as_slice()));
        let slave = Item {
            path: b"sub/hl2".to_vec(),
            mode: 0o100644,
            source: Some(b"hl1".to_vec()),
            ..Default::default()
        };
        assert!(s.select(&slave));
        assert!(s.unmatched_includes().is_empty());
        let part = Item {
            path: b"sub/x.borg_part_1".to_vec(),
            mode: 0o100644,
            part: Some(1),
            ..Default::default()
        };
        assert!(!s.select(&part));
    }
}
