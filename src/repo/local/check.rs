//! Repository consistency check (borg's `Repository.check` without `--repair`): every
//! committed segment is read with all CRCs verified, an index is rebuilt from the
//! entries and compared with the committed `index.T`. Messages and their wording are
//! borg's, so reports of both programs on the same damage can be compared line by line.

use super::segments::{self, SegError};
use super::{io_err, LocalRepository};
use crate::format::hashindex::NsIndex;
use crate::format::hints::Hints;
use crate::repo::{ObjectId, Result};

/// Severity of a check message (borg's log levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckLevel {
    Debug,
    Info,
    Warning,
    Error,
}

/// Receives check messages as they are produced.
pub type CheckLog<'a> = &'a mut dyn FnMut(CheckLevel, String);

fn fmt_value(v: Option<(u32, u32)>) -> String {
    match v {
        Some((s, o)) => format!("({s}, {o})"),
        None => "<not found>".into(),
    }
}

impl LocalRepository {
    /// Checks the repository; returns whether it is free of errors. Like borg, it may
    /// rebuild a missing or corrupt index first (that is repair borg does on any open,
    /// not a finding), and it needs the exclusive lock.
    pub fn check(&mut self, log: CheckLog<'_>) -> Result<bool> {
        self.require_exclusive("checking")?;
        if self.active_txn {
            use crate::repo::Repository;
            self.rollback()?;
        }
        let mut error_found = false;
        let mut report = |log: &mut dyn FnMut(CheckLevel, String), msg: String| {
            error_found = true;
            log(CheckLevel::Error, msg);
        };
        log(CheckLevel::Info, "Starting repository check".into());
        self.state = None;
        self.writer = None;
        self.read_fds.clear();
        let (mut transaction_id, current_index) = match self.ensure_index() {
            Ok(()) => {
                let st = self.state.take();
                let t = st.as_ref().and_then(|s| s.transaction_id);
                if let Some(t) = t {
                    log(
                        CheckLevel::Debug,
                        format!("Read committed index of transaction {t}"),
                    );
                }
                (t, st.map(|s| s.index))
            }
            Err(e) => {
                log(
                    CheckLevel::Debug,
                    format!("Failed to read committed index ({e})"),
                );
                (self.segments_transaction_id()?, None)
            }
        };
        for w in self.take_warnings() {
            log(CheckLevel::Warning, w);
        }
        if transaction_id.is_none() {
            transaction_id = self.index_transaction_id()?;
        }
        if transaction_id.is_none() {
            transaction_id = self
                .layout
                .list()
                .map_err(io_err("cannot list segments"))?
                .last()
                .copied();
        }
        let Some(transaction_id) = transaction_id else {
            report(log, "This repository contains no valid data.".into());
            return Ok(false);
        };
        let seg_txn = self.segments_transaction_id()?;
        log(
            CheckLevel::Debug,
            format!("Segment transaction is    {seg_txn:?}"),
        );
        log(
            CheckLevel::Debug,
            format!("Determined transaction is {transaction_id}"),
        );
        let all = self.layout.list().map_err(io_err("cannot list segments"))?;
        log(CheckLevel::Debug, format!("Found {} segments", all.len()));
        let mut index = NsIndex::new();
        let mut hints = Hints::default();
        let mut last = None;
        for seg in all {
            if seg > transaction_id {
                continue;
            }
            last = Some(seg);
            let path = self.layout.filename(seg);
            let mut entries: Vec<(u8, Option<ObjectId>, u32, u32)> = Vec::new();
            let r = segments::iter_entries(&path, seg, |e| {
                entries.push((e.tag, e.key, e.offset, e.size));
                Ok(())
            });
            match r {
                Ok(()) => {}
                Err(SegError::Integrity(msg)) => {
                    report(log, format!("Data integrity error: {msg}"));
                    entries.clear();
                }
                Err(e) => return Err(self.seg_err(Some(seg), e)),
            }
            self.apply_entries(seg, &entries, &mut index, &mut hints)?;
        }
        self.read_fds.clear();
        log(
            CheckLevel::Info,
            format!(
                "finished segment check at segment {}",
                last.map_or(-1, |s| s as i64)
            ),
        );
        log(CheckLevel::Info, "Starting repository index check".into());
        if let Some(current) = current_index.filter(|c| !c.is_empty()) {
            if current.len() != index.len() {
                report(log, "Index object count mismatch.".into());
                report(log, format!("committed index: {} objects", current.len()));
                report(log, format!("rebuilt index:   {} objects", index.len()));
            } else {
                log(CheckLevel::Info, "Index object count match.".into());
            }
            let line =
                |k: &ObjectId, rebuilt: Option<(u32, u32)>, committed: Option<(u32, u32)>| {
                    format!(
                        "ID: {:<64} rebuilt index: {:<16} committed index: {:<16}",
                        hex::encode(k),
                        fmt_value(rebuilt),
                        fmt_value(committed)
                    )
                };
            for (k, v) in index.iter() {
                let cur = current.get(k);
                if cur != Some(v) {
                    report(log, line(k, Some(v), cur));
                }
            }
            for (k, v) in current.iter() {
                if !index.contains_key(k) {
                    report(log, line(k, None, Some(v)));
                }
            }
        }
        self.state = None;
        if error_found {
            log(
                CheckLevel::Error,
                "Finished full repository check, errors found.".into(),
            );
        } else {
            log(
                CheckLevel::Info,
                "Finished full repository check, no problems found.".into(),
            );
        }
        Ok(!error_found)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CreateOptions, OpenOptions};
    use super::*;
    use crate::repo::{Repository, MANIFEST_ID};

    fn collect(r: &mut LocalRepository) -> (bool, Vec<String>) {
        let mut msgs = Vec::new();
        let ok = r
            .check(&mut |lvl, m| {
                if lvl == CheckLevel::Error {
                    msgs.push(m)
                }
            })
            .unwrap();
        (ok, msgs)
    }

    #[test]
    fn clean_then_flipped_then_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("repo");
        let mut r = LocalRepository::create(&p, CreateOptions::default()).unwrap();
        for i in 0..20u8 {
            r.put(&[i + 1; 32], &[i; 500]).unwrap();
        }
        r.put(&MANIFEST_ID, b"m").unwrap();
        r.commit().unwrap();
        assert_eq!(collect(&mut r), (true, vec![]));
        drop(r);
        // segment 0 holds the objects, 1 the manifest, 2 the COMMIT
        let seg = p.join("data/0/0");
        let mut b = std::fs::read(&seg).unwrap();
        b[8 + 41 + 10] ^= 0x55;
        std::fs::write(&seg, &b).unwrap();
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        let (ok, msgs) = collect(&mut r);
        assert!(!ok);
        assert_eq!(
            msgs[0],
            "Data integrity error: Segment entry checksum mismatch [segment 0, offset 8]"
        );
        assert!(msgs.iter().any(|m| m == "Index object count mismatch."));
        assert_eq!(msgs.iter().filter(|m| m.starts_with("ID: ")).count(), 20);
        assert_eq!(
            msgs.last().unwrap(),
            "Finished full repository check, errors found."
        );
        drop(r);
        b[8 + 41 + 10] ^= 0x55;
        std::fs::write(&seg, &b[..b.len() - 100]).unwrap();
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        let (ok, msgs) = collect(&mut r);
        assert!(!ok);
        assert!(
            msgs[0].starts_with(
                "Data integrity error: Segment entry data short read [segment 0, offset "
            ),
            "{msgs:?}"
        );
    }
}
