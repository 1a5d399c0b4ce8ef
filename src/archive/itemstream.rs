//! The archive's item stream: items packed back to back and cut with borg's items
//! chunker (15,19,17,4095 and the key's seed), so metadata of unchanged trees dedups
//! across archives exactly like borg's own (`CacheChunkBuffer`).

use super::store::{ChunkStore, StoreError};
use crate::format::chunker::{chunk_sizes, ChunkerParams};
use crate::format::objects::Item;
use crate::repo::ObjectId;

/// borg flushes its item buffer every 8 MiB (keeping the last partial chunk).
const FLUSH_AT: usize = 8 << 20;

/// Accumulates packed items and stores the cut chunks.
pub struct ItemStream {
    buf: Vec<u8>,
    ids: Vec<ObjectId>,
    seed: u32,
    /// Number of items added.
    pub count: u64,
}

impl ItemStream {
    pub fn new(seed: u32) -> Self {
        ItemStream {
            buf: Vec::with_capacity(FLUSH_AT + (1 << 20)),
            ids: Vec::new(),
            seed,
            count: 0,
        }
    }

    /// Appends one item, flushing full chunks to the store.
    pub fn add(&mut self, item: &Item, store: &ChunkStore) -> Result<(), StoreError> {
        item.encode(&mut self.buf);
        self.count += 1;
        if self.buf.len() >= FLUSH_AT {
            self.flush(store, false)?;
        }
        Ok(())
    }

    fn flush(&mut self, store: &ChunkStore, last: bool) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let sizes = chunk_sizes(&ChunkerParams::ITEMS, self.seed, &self.buf);
        let keep = if last {
            0
        } else {
            sizes.last().copied().unwrap_or(0)
        };
        let mut off = 0;
        for s in &sizes[..sizes.len() - usize::from(!last && !sizes.is_empty())] {
            let r = store.store_meta(&self.buf[off..off + s])?;
            self.ids.push(r.id);
            off += s;
        }
        debug_assert_eq!(off + keep, self.buf.len());
        self.buf.drain(..off);
        Ok(())
    }

    /// Stores everything added so far (cutting the last chunk short, as borg's
    /// `flush(flush=True)` before a checkpoint) and returns the item chunk ids until here;
    /// later items go on in new chunks.
    pub fn cut(&mut self, store: &ChunkStore) -> Result<Vec<ObjectId>, StoreError> {
        self.flush(store, true)?;
        Ok(self.ids.clone())
    }

    /// Stores the rest and returns the item chunk ids in stream order.
    pub fn finish(mut self, store: &ChunkStore) -> Result<Vec<ObjectId>, StoreError> {
        self.flush(store, true)?;
        Ok(self.ids)
    }
}
