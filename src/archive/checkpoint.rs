//! Checkpoints of a running `create` (borg's `--checkpoint-interval`): every so often the
//! archive so far is committed as `NAME.checkpoint`, so an interrupted backup keeps what
//! it stored, and the next run finds those chunks in the repository.
//!
//! As in borg, a checkpoint leaves the manifest again right after its commit and its
//! archive object is deleted in the next transaction: the next checkpoint or the final
//! archive replaces it atomically, so at most one checkpoint of a run is in the
//! repository, and none once the run completes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::create::CreateError;
use super::inflight::Inflight;
use super::itemstream::ItemStream;
use super::store::ChunkStore;
use crate::format::objects::{ArchiveMeta, Item, ManifestArchive};
use crate::repo::ObjectId;
use crate::session::Session;

/// Sizes and file counts of an archive, part items apart (borg's `*_parts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub size: u64,
    pub csize: u64,
    pub nfiles: u64,
    pub size_parts: u64,
    pub csize_parts: u64,
    pub nfiles_parts: u64,
}

impl Totals {
    /// Counts a regular file's item (or a part item apart).
    pub fn add(&mut self, item: &Item) {
        let Some(chunks) = &item.chunks else { return };
        let size = item.size.unwrap_or(0);
        let csize: u64 = chunks.iter().map(|c| u64::from(c.csize)).sum();
        if item.part.is_some() {
            self.nfiles_parts += 1;
            self.size_parts += size;
            self.csize_parts += csize;
        } else {
            self.nfiles += 1;
            self.size += size;
            self.csize += csize;
        }
    }
}

/// Builds an archive object named `name` over the item chunks `items`.
pub type MetaFn<'a> = dyn Fn(&str, Vec<ObjectId>, &Totals) -> ArchiveMeta + Sync + 'a;

/// Writes the checkpoints of one `create`, from the thread that writes the item stream.
pub struct Checkpointer<'a> {
    session: &'a mut Session,
    store: &'a ChunkStore,
    inflight: Arc<Inflight>,
    interval: Duration,
    next: Instant,
    name: String,
    meta: &'a MetaFn<'a>,
    cancel: Option<Arc<AtomicBool>>,
}

impl<'a> Checkpointer<'a> {
    /// `name` is the checkpoint's archive name (borg's `NAME.checkpoint[.N]`).
    pub fn new(
        session: &'a mut Session,
        store: &'a ChunkStore,
        inflight: Arc<Inflight>,
        interval: Duration,
        name: String,
        meta: &'a MetaFn<'a>,
    ) -> Self {
        Checkpointer {
            session,
            store,
            inflight,
            interval,
            next: Instant::now() + interval,
            name,
            meta,
            cancel: None,
        }
    }

    /// After `cancel` is set (SIGINT/SIGTERM), [`finish`](Self::finish) writes a last
    /// checkpoint, as borg does on its first Ctrl-C.
    pub fn with_cancel(mut self, cancel: Option<Arc<AtomicBool>>) -> Self {
        self.cancel = cancel;
        self
    }

    /// At the end of the item stream: a last checkpoint if the run was cancelled (the
    /// archive itself is then not saved, and this checkpoint stays).
    pub fn finish(
        &mut self,
        stream: &mut ItemStream,
        totals: &mut Totals,
    ) -> Result<(), CreateError> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            self.write(stream, totals)?;
        }
        Ok(())
    }

    /// Receives from `rx`, writing checkpoints whenever one is due meanwhile; None once
    /// `rx` is disconnected.
    pub fn recv<T>(
        &mut self,
        rx: &Receiver<T>,
        stream: &mut ItemStream,
        totals: &mut Totals,
    ) -> Result<Option<T>, CreateError> {
        loop {
            if Instant::now() >= self.next {
                self.write(stream, totals)?;
            }
            match rx.recv_deadline(self.next) {
                Ok(v) => return Ok(Some(v)),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Before a finished input's item enters the stream: if it went into part items,
    /// its last part goes first, so that its parts concatenate to the whole file.
    pub fn finish_input(
        &mut self,
        input: u64,
        stream: &mut ItemStream,
        totals: &mut Totals,
    ) -> Result<(), CreateError> {
        if let (Some(last), _) = self.inflight.finish(input) {
            self.add_part(&last, stream, totals)?;
        }
        Ok(())
    }

    fn add_part(
        &self,
        part: &Item,
        stream: &mut ItemStream,
        totals: &mut Totals,
    ) -> Result<(), CreateError> {
        for c in part.chunks.iter().flatten() {
            self.store.add_part_ref(&c.id);
        }
        totals.add(part);
        stream.add(part, self.store)?;
        Ok(())
    }

    /// Writes a checkpoint now: storing pauses, unfinished inputs go into part items, and
    /// the archive so far is committed under the checkpoint's name.
    pub fn write(
        &mut self,
        stream: &mut ItemStream,
        totals: &mut Totals,
    ) -> Result<(), CreateError> {
        self.inflight.pause();
        let r = self.write_paused(stream, totals);
        self.inflight.resume();
        self.next = Instant::now() + self.interval;
        r
    }

    fn write_paused(
        &mut self,
        stream: &mut ItemStream,
        totals: &mut Totals,
    ) -> Result<(), CreateError> {
        for part in self.inflight.part_items() {
            self.add_part(&part, stream, totals)?;
        }
        let items = stream.cut(self.store)?;
        let meta = (self.meta)(&self.name, items, totals);
        let raw = meta
            .encode_with_tam(self.session.key.as_ref())
            .map_err(|e| CreateError::Meta(e.to_string()))?;
        let archive = self.store.store_meta(&raw)?;
        self.store.writes_ok()?;
        let name = self.name.as_bytes().to_vec();
        self.session.manifest.archives.insert(
            name.clone(),
            ManifestArchive {
                id: archive.id,
                time: meta.time.clone(),
            },
        );
        self.session.write_manifest()?;
        self.session.commit()?;
        // borg's write_checkpoint: out of the manifest again, its object deleted in the
        // transaction that commits the next checkpoint or the archive
        self.session.manifest.archives.remove(&name);
        self.session
            .repo
            .lock()
            .expect("repository lock")
            .delete(&archive.id)
            .map_err(crate::session::SessionError::from)?;
        self.store.forget(&archive.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::objects::ChunkRef;

    #[test]
    fn part_items_count_apart() {
        let chunk = ChunkRef {
            id: [1; 32],
            size: 100,
            csize: 40,
        };
        let file = Item {
            size: Some(200),
            chunks: Some(vec![chunk, chunk]),
            ..Default::default()
        };
        let part = Item {
            size: Some(100),
            chunks: Some(vec![chunk]),
            part: Some(1),
            ..Default::default()
        };
        let dir = Item::default();
        let mut t = Totals::default();
        for i in [&file, &part, &dir] {
            t.add(i);
        }
        assert_eq!(
            t,
            Totals {
                size: 200,
                csize: 80,
                nfiles: 1,
                size_parts: 100,
                csize_parts: 40,
                nfiles_parts: 1,
            }
        );
    }
}
