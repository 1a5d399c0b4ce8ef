//! The archive's item stream: items packed back to back and cut with borg's items
//! chunker (15,19,17,4095 and the key's seed), so metadata of unchanged trees dedups
//! across archives exactly like borg's own (`CacheChunkBuffer`).

use super::store::{ChunkStore, StoreError};
use crate::format::chunker::{chunk_sizes, ChunkerParams};
use crate::format::objects::Item;
use crate::repo::ObjectId;

/// Packed items held before they are cut and stored. borg flushes at 8 MiB; a cut depends
/// only on the bytes since the previous cut, and the last (partial) chunk is kept for the
/// next flush, so any threshold above the items chunker's maximum (512 KiB) yields borg's
/// chunks, and a small one keeps 7 MiB less resident for a large tree.
const FLUSH_AT: usize = 1 << 20;

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
            buf: Vec::with_capacity(2 * FLUSH_AT),
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
        let mut off = 0;
        for s in to_store(self.seed, &self.buf, last) {
            let r = store.store_meta(&self.buf[off..off + s])?;
            self.ids.push(r.id);
            off += s;
        }
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

/// Sizes of the chunks of `buf` to store now: all of them for the `last` flush, else all
/// but the last, which the items after it may still extend.
fn to_store(seed: u32, buf: &[u8], last: bool) -> Vec<usize> {
    let mut sizes = chunk_sizes(&ChunkerParams::ITEMS, seed, buf);
    if !last {
        sizes.pop();
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunk sizes a stream of `data` added `piece` bytes at a time gets when flushed
    /// at `flush_at` bytes.
    fn flushed(data: &[u8], piece: usize, flush_at: usize) -> Vec<usize> {
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for p in data.chunks(piece) {
            buf.extend_from_slice(p);
            if buf.len() >= flush_at {
                let sizes = to_store(7, &buf, false);
                buf.drain(..sizes.iter().sum::<usize>());
                out.extend(sizes);
            }
        }
        out.extend(to_store(7, &buf, true));
        out
    }

    #[test]
    fn flush_threshold_does_not_move_cuts() {
        let data = crate::format::chunker::testdata::mixed(5, 12 << 20, 3000);
        let whole = chunk_sizes(&ChunkerParams::ITEMS, 7, &data);
        assert!(whole.len() > 50);
        for at in [FLUSH_AT, 8 << 20, (512 << 10) + 1] {
            assert_eq!(flushed(&data, 333, at), whole, "flushed at {at}");
        }
    }
}
