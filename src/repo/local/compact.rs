//! Compaction (borg's `Repository.compact_segments`): segments whose freeable share
//! exceeds the threshold get their live PUTs (and the DELETEs that still hide an older
//! PUT) copied to new segments, then are removed.
//!
//! Crash safety follows from the order of operations, the same as borg's: copies are
//! written and fdatasync'ed, an intermediate COMMIT makes them part of a committed
//! transaction, and only then are the emptied segments unlinked. A kill at any point
//! leaves either uncommitted copies (deleted by the next writer) or committed copies
//! next to (some of) their originals; replaying the segments after the last index
//! gives the same objects either way.

use super::segments::{self, SegError, TAG_COMMIT, TAG_DELETE, TAG_PUT};
use super::{fsio, io_err, LocalRepository};
use crate::repo::{ObjectId, RepoError, Repository, Result, MANIFEST_ID};

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Segments rewritten and removed.
    pub segments_compacted: usize,
    /// Segment files before and after.
    pub segments_before: usize,
    pub segments_after: usize,
    /// Bytes of segment files before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// borg's "compaction freed about …": the drop in storage quota use.
    pub freed: u64,
}

/// Where a copy of an entry landed, or that the segment being written is full.
enum Placed {
    At(u32, u32),
    Full,
}

impl LocalRepository {
    /// `borg compact`: rewrites the manifest (so the commit lands in a fresh segment, as
    /// borg does) and commits with compaction at `threshold` (a fraction, borg's
    /// `--threshold 10` = 0.1). In append-only mode nothing is compacted.
    pub fn compact(&mut self, threshold: f64) -> Result<CompactStats> {
        self.require_exclusive("compacting")?;
        let before = self.segment_usage()?;
        let quota_before = self.storage_quota()?.1;
        let manifest = self.get(&MANIFEST_ID)?;
        self.put(&MANIFEST_ID, &manifest)?;
        self.commit_inner(Some(threshold))?;
        let after = self.segment_usage()?;
        let quota_after = self.storage_quota()?.1;
        Ok(CompactStats {
            segments_compacted: std::mem::take(&mut self.compacted_segments),
            segments_before: before.0,
            segments_after: after.0,
            bytes_before: before.1,
            bytes_after: after.1,
            freed: quota_before.saturating_sub(quota_after),
        })
    }

    /// Number of segment files and their total size.
    fn segment_usage(&self) -> Result<(usize, u64)> {
        let segs = self.layout.list().map_err(io_err("cannot list segments"))?;
        let mut total = 0;
        for s in &segs {
            total += self
                .layout
                .size(*s)
                .map_err(io_err("cannot stat a segment"))?;
        }
        Ok((segs.len(), total))
    }

    /// borg's `compact_segments`, run inside `commit` after the transaction's COMMIT.
    /// Returns the last committed segment (the new transaction id).
    pub(super) fn compact_segments(&mut self, threshold: f64) -> Result<u32> {
        let index_txn = self.index_transaction_id()?;
        let candidates: Vec<(u32, u64)> = {
            let h = self.hints_mut()?;
            h.compact.iter().map(|(&s, &f)| (s, f)).collect()
        };
        let mut unused: Vec<u32> = Vec::new();
        for (segment, freeable) in candidates {
            if !self.layout.exists(segment) {
                self.warn(format!(
                    "segment {segment} not found, but listed in compaction data"
                ));
                let h = self.hints_mut()?;
                h.compact.remove(&segment);
                h.segments.remove(&segment);
                continue;
            }
            let size = self
                .layout
                .size(segment)
                .map_err(io_err("cannot stat a segment"))?;
            let ratio = freeable as f64 / size as f64;
            // `<=` also skips a NaN ratio, as borg's `not (ratio > threshold)` does
            if ratio.is_nan() || ratio <= threshold {
                continue;
            }
            self.hints_mut()?.segments.entry(segment).or_insert(0);
            self.compact_one(segment, index_txn, &mut unused)?;
            let left = self
                .hints_mut()?
                .segments
                .get(&segment)
                .copied()
                .unwrap_or(0);
            if left != 0 {
                self.warn(format!(
                    "Corrupted segment reference count {left} (expected 0) for segment {segment} - corrupted index or hints"
                ));
            }
            unused.push(segment);
            self.compacted_segments += 1;
        }
        let last = self.complete_xfer(false, &mut unused)?;
        self.clear_empty_dirs();
        Ok(last)
    }

    /// Copies what must survive of one segment into the segment being written.
    fn compact_one(
        &mut self,
        segment: u32,
        index_txn: Option<u32>,
        unused: &mut Vec<u32>,
    ) -> Result<()> {
        let path = self.layout.filename(segment);
        let mut failure: Option<RepoError> = None;
        let r = segments::iter_entries_with_data(&path, segment, |e, data| {
            let step = (|| -> Result<()> {
                let Some(key) = e.key else { return Ok(()) };
                match e.tag {
                    TAG_COMMIT => Ok(()),
                    TAG_PUT => self.compact_put(segment, e.offset, &key, data, unused),
                    TAG_DELETE => self.compact_delete(segment, &key, index_txn, unused),
                    _ => Ok(()),
                }
            })();
            step.map_err(|err| {
                failure = Some(err);
                SegError::Integrity(String::new())
            })
        });
        if let Some(e) = failure {
            return Err(e);
        }
        r.map_err(|e| self.seg_err(Some(segment), e))
    }

    fn compact_put(
        &mut self,
        segment: u32,
        offset: u32,
        key: &ObjectId,
        data: &[u8],
        unused: &mut Vec<u32>,
    ) -> Result<()> {
        let in_index = self.index_mut()?.get(key);
        if in_index == Some((segment, offset)) {
            let (new_seg, new_off) = match self.copy_put(key, data, true)? {
                Placed::At(s, o) => (s, o),
                Placed::Full => {
                    self.complete_xfer(true, unused)?;
                    match self.copy_put(key, data, false)? {
                        Placed::At(s, o) => (s, o),
                        Placed::Full => unreachable_full()?,
                    }
                }
            };
            self.index_mut()?
                .insert(key, new_seg, new_off)
                .map_err(|e| RepoError::Other(e.to_string()))?;
            let h = self.hints_mut()?;
            *h.segments.entry(new_seg).or_insert(0) += 1;
            *h.segments.entry(segment).or_insert(0) -= 1;
        } else {
            // superseded: gone with this segment, so no longer a shadowed PUT
            let h = self.hints_mut()?;
            if let Some(list) = h.shadow_index.get_mut(key) {
                if let Some(pos) = list.iter().position(|&s| s == segment) {
                    list.remove(pos);
                }
            }
            h.storage_quota_use = h
                .storage_quota_use
                .saturating_sub(data.len() as u64 + segments::PUT_HEADER_SIZE as u64);
        }
        Ok(())
    }

    fn compact_delete(
        &mut self,
        segment: u32,
        key: &ObjectId,
        index_txn: Option<u32>,
        unused: &mut Vec<u32>,
    ) -> Result<()> {
        if self.index_mut()?.contains_key(key) {
            // a later PUT revived the key: this DELETE hides nothing the index needs
            return Ok(());
        }
        let h = self.hints_mut()?;
        let shadowed_put_exists = match h.shadow_index.get(key) {
            None => true,
            Some(list) => list.iter().any(|&s| s < segment),
        };
        let delete_is_not_stable = index_txn.is_none_or(|t| segment > t);
        if shadowed_put_exists || delete_is_not_stable {
            // keep it: an older PUT may still exist (or may reappear after a crash)
            let (new_seg, size) = match self.copy_delete(key, true)? {
                Placed::At(s, size) => (s, size),
                Placed::Full => {
                    self.complete_xfer(true, unused)?;
                    match self.copy_delete(key, false)? {
                        Placed::At(s, size) => (s, size),
                        Placed::Full => unreachable_full()?,
                    }
                }
            };
            let h = self.hints_mut()?;
            *h.compact.entry(new_seg).or_insert(0) += size as u64;
            h.segments.entry(new_seg).or_insert(0);
        } else if h.shadow_index.get(key).is_some_and(|l| l.is_empty()) {
            h.shadow_index.remove(key);
        }
        Ok(())
    }

    /// borg's `get_write_fd(raise_full=True)`: full when the object must start a new
    /// segment (the manifest) or the current one is past `max_segment_size`.
    fn write_would_roll(&self, id: &ObjectId) -> bool {
        *id == MANIFEST_ID
            || self
                .writer
                .as_ref()
                .is_some_and(|w| w.offset > 0 && w.offset > self.max_segment_size)
    }

    fn copy_put(&mut self, id: &ObjectId, data: &[u8], raise_full: bool) -> Result<Placed> {
        if raise_full && self.write_would_roll(id) {
            return Ok(Placed::Full);
        }
        let (s, o) = self.write_put(id, data)?;
        Ok(Placed::At(s, o))
    }

    fn copy_delete(&mut self, id: &ObjectId, raise_full: bool) -> Result<Placed> {
        if raise_full && self.write_would_roll(id) {
            return Ok(Placed::Full);
        }
        let (s, size) = self.write_delete(id)?;
        Ok(Placed::At(s, size))
    }

    /// borg's `complete_xfer`: COMMIT what was copied (an intermediate COMMIT goes into
    /// the current segment after an fdatasync; the final one into a segment of its own),
    /// then remove the segments emptied so far. Returns the committed segment.
    fn complete_xfer(&mut self, intermediate: bool, unused: &mut Vec<u32>) -> Result<u32> {
        let seg = if intermediate {
            self.write_intermediate_commit()?
        } else {
            self.write_commit()?
        };
        {
            let h = self.hints_mut()?;
            h.segments.entry(seg).or_insert(0);
            *h.compact.entry(seg).or_insert(0) += segments::HEADER_SIZE as u64;
        }
        for s in std::mem::take(unused) {
            let count = self.hints_mut()?.segments.remove(&s).unwrap_or(0);
            if count != 0 {
                self.warn(format!(
                    "Corrupted segment reference count {count} (expected 0) for segment {s} - corrupted index or hints"
                ));
            }
            self.delete_segment(s)?;
            self.hints_mut()?.compact.remove(&s);
        }
        Ok(seg)
    }

    /// An intermediate COMMIT: appended to the open segment (or a new one if none is
    /// open) once its contents are durable; the segment is closed afterwards.
    fn write_intermediate_commit(&mut self) -> Result<u32> {
        if self.writer.is_none() {
            self.write_fd(false)?;
        }
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| RepoError::Other("no open segment".into()))?;
        w.sync().map_err(io_err("cannot sync a segment"))?;
        w.commit().map_err(io_err("cannot write to a segment"))?;
        let seg = w.segment;
        self.close_segment()?;
        Ok(seg)
    }

    /// borg's `delete_segment`: drop cached handles, unlink (truncating first on ENOSPC).
    fn delete_segment(&mut self, segment: u32) -> Result<()> {
        self.read_fds.remove(&segment);
        let p = self.layout.filename(segment);
        match fsio::safe_unlink(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RepoError::io(format!("cannot remove {}", p.display()), e)),
        }
    }

    /// borg 1.4's `clear_empty_dirs`: remove segment directories without segments. The
    /// directory of the last segment always stays (it holds the final COMMIT).
    fn clear_empty_dirs(&self) {
        let data = self.layout.data_dir();
        if let Ok(rd) = std::fs::read_dir(&data) {
            for d in rd.flatten() {
                let name = d.file_name();
                let digits = name
                    .to_str()
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if digits && d.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(d.path());
                }
            }
        }
        let _ = fsio::sync_dir(&data);
    }
}

/// A second write right after `complete_xfer` always has a segment to go to.
fn unreachable_full<T>() -> Result<T> {
    Err(RepoError::Other(
        "segment writer reported full right after a commit".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{CreateOptions, OpenOptions};
    use super::*;

    fn id(i: u32) -> ObjectId {
        let mut k = [0u8; 32];
        let h = crc32fast::hash(&i.to_le_bytes());
        k[..4].copy_from_slice(&h.to_le_bytes());
        k[4..8].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn compaction_frees_space_and_keeps_objects() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("repo");
        let mut r = LocalRepository::create(&p, CreateOptions::default()).unwrap();
        r.put(&MANIFEST_ID, b"m1").unwrap();
        for i in 0..200 {
            r.put(&id(i), &vec![i as u8; 1000]).unwrap();
        }
        r.commit().unwrap();
        for i in 0..150 {
            r.delete(&id(i)).unwrap();
        }
        r.put(&id(7), b"revived").unwrap();
        r.put(&MANIFEST_ID, b"m2").unwrap();
        r.commit().unwrap();
        let st = r.compact(0.1).unwrap();
        assert!(st.bytes_after < st.bytes_before / 2, "{st:?}");
        assert!(st.freed >= 150 * 1041, "{st:?}");
        assert!(st.segments_compacted > 0);
        assert!(r.take_warnings().is_empty());
        let h = r.state.as_ref().unwrap().hints.clone().unwrap();
        assert!(h.segments.values().all(|&c| c >= 0));
        drop(r);
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        assert!(r.take_warnings().is_empty());
        assert_eq!(r.len().unwrap(), 52);
        assert_eq!(r.get(&id(7)).unwrap(), b"revived");
        assert_eq!(r.get(&id(199)).unwrap(), vec![199u8; 1000]);
        assert_eq!(r.get(&MANIFEST_ID).unwrap(), b"m2");
        assert!(!r.contains(&id(3)).unwrap());
        // the index we wrote equals a full replay of what is left
        let t = r.transaction_id().unwrap().unwrap();
        let before: Vec<_> = r
            .state
            .as_ref()
            .unwrap()
            .index
            .iter()
            .map(|(k, v)| (*k, v))
            .collect();
        drop(r);
        std::fs::remove_file(p.join(format!("index.{t}"))).unwrap();
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        assert_eq!(r.len().unwrap(), 52);
        let mut after: Vec<_> = r
            .state
            .as_ref()
            .unwrap()
            .index
            .iter()
            .map(|(k, v)| (*k, v))
            .collect();
        let mut before = before;
        before.sort();
        after.sort();
        assert_eq!(before, after);
        // compacting again frees nothing more
        let st = r.compact(0.1).unwrap();
        assert_eq!(st.freed, 0, "{st:?}");
    }

    #[test]
    fn small_segments_roll_over_with_intermediate_commits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("repo");
        drop(LocalRepository::create(&p, CreateOptions::default()).unwrap());
        // tiny segments: many segments and intermediate commits during compaction
        let cfg = std::fs::read_to_string(p.join("config")).unwrap();
        std::fs::write(
            p.join("config"),
            cfg.replace("max_segment_size = 524288000", "max_segment_size = 4000"),
        )
        .unwrap();
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        r.put(&MANIFEST_ID, b"m").unwrap();
        for i in 0..100 {
            r.put(&id(i), &vec![i as u8; 900]).unwrap();
        }
        r.commit().unwrap();
        for i in (0..100).step_by(3) {
            r.delete(&id(i)).unwrap();
        }
        r.commit().unwrap();
        r.compact(0.1).unwrap();
        drop(r);
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        for i in 0..100 {
            assert_eq!(r.contains(&id(i)).unwrap(), i % 3 != 0, "{i}");
            if i % 3 != 0 {
                assert_eq!(r.get(&id(i)).unwrap(), vec![i as u8; 900]);
            }
        }
        assert!(r.take_warnings().is_empty());
    }
}
