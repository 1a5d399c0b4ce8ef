//! The chunk store: dedup → compress → encrypt → put into the repository.
//! Many workers call [`ChunkStore::store`] at once; the first to claim an id encodes it
//! and puts it, others referencing the same id wait only until it is in the repository
//! (borg's item chunk lists need `csize`, and a checkpoint must not commit a reference
//! before its chunk).
//!
//! Each worker puts its own envelopes, under the repository's lock: no writer thread, no
//! queue. A single writer fed through a queue left a core idle whenever the queue filled
//! and every worker waited on it (runs of 1-15 ms, 15% of a first backup's wall time on 2
//! cores); putting in place keeps the cores busy (first backup and image 5-7% faster, peak
//! RSS 3-8 MiB lower) and bounds memory by the workers alone.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{Receiver, Sender};

use super::stats::Stats;
use crate::format::compress::Compression;
use crate::format::crypto::Key;
use crate::format::objects::ChunkRef;
use crate::repo::ObjectId;
use crate::session::{seal_and_id_many_into, seal_many_into, NonceAllocator, Outs, SharedRepo};

const SHARDS: usize = 64;
/// An envelope buffer larger than this (a chunk beyond borg's largest chunker maximum,
/// 8 MiB, e.g. item metadata) is not kept.
const KEEP_BUF: usize = 9 << 20;

const PENDING: u32 = u32::MAX;
/// Put envelope buffers kept for reuse: a recycled buffer is already faulted in,
/// a fresh multi-MiB allocation costs a page fault per page (the kernel zeroes each).
const POOL: usize = 2;
/// Only envelopes of chunks at least this large go through the pool: small allocations
/// come from the allocator's free lists without page faults.
const POOLED_MIN: usize = 256 << 10;
/// New chunks in a row (any chunk found stored already resets the count) from which
/// [`ChunkStore::store_many`] encodes chunks before it looks them up, so that their ids
/// hash beside their MACs. On new data that saves a sixth of the hashing; a chunk that
/// turns out stored already costs a wasted compression and encryption, which a run of
/// known chunks (an unchanged disk image) then never pays again.
const NEW_STREAK: u32 = 8;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("encrypting chunk {id}: {reason}", id = hex::encode(.0), reason = .1)]
    Seal(ObjectId, String),
    #[error("writing to the repository: {0}")]
    Write(String),
    #[error("chunk of {0} bytes exceeds borg's maximum object size")]
    TooLarge(usize),
}

/// A sealed envelope: `range` of `buf`, which keeps its length beyond for the next chunk
/// encoded into it (see [`seal_many_into`]). Envelopes sealed side by side may share one
/// buffer; it is recycled once the last of them is put.
struct Envelope {
    buf: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl Envelope {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

/// One chunk known to the cache: references and sizes (`csize == PENDING` while encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub refcount: u32,
    pub size: u32,
    pub csize: u32,
}

struct Shard {
    map: Mutex<HashMap<ObjectId, Entry>>,
    cv: Condvar,
}

/// Shared dedup index + encoder for one backup.
pub struct ChunkStore {
    key: Arc<Key>,
    compression: Compression,
    nonces: Arc<NonceAllocator>,
    shards: Vec<Shard>,
    repo: SharedRepo,
    /// Envelope buffers already put, for reuse.
    spare_tx: Sender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    /// The first failed put's error: every put after it fails with it too.
    first_error: Mutex<Option<String>>,
    zero_ids: Mutex<HashMap<usize, ObjectId>>,
    /// See [`NEW_STREAK`].
    new_streak: AtomicU32,
    pub stats: Stats,
    dry_run: bool,
}

/// The most an envelope of a chunk of `len` bytes may take of its buffer: the envelope and
/// compression headers and the chunk (borg's deciding codecs store data they cannot shrink
/// as `none`, and LZ4 is given no more room than that).
fn envelope_room(len: usize) -> usize {
    64 + len
}

/// The most the envelopes of `datas` may take of one buffer, back to back.
fn room_of(datas: &[&[u8]]) -> usize {
    datas.iter().map(|d| envelope_room(d.len())).sum()
}

/// Whether the envelopes of `datas` fit one buffer that the pool keeps.
pub fn fits_one_buffer(datas: &[&[u8]]) -> bool {
    room_of(datas) <= KEEP_BUF
}

/// Which of the chunks of `lens` bytes [`ChunkStore::store_many`] seals while it hashes
/// the ids of all of them (on new data), in order: all whose envelopes fit one buffer
/// together, else the largest that do, at least one. The ids of the others hash beside
/// those MACs in lanes that the group's ids alone would leave idle (a pair of large
/// chunks: three lanes, then one MAC alone, where it was two ids and then each MAC alone),
/// and their MACs follow.
pub fn sealed_with_ids(lens: &[usize]) -> Vec<usize> {
    let mut by_size: Vec<usize> = (0..lens.len()).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let (mut room, mut take) = (0, Vec::new());
    for i in by_size {
        let r = envelope_room(lens[i]);
        if take.is_empty() || room + r <= KEEP_BUF {
            room += r;
            take.push(i);
        }
    }
    take.sort_unstable();
    take
}

fn shard_of(id: &ObjectId) -> usize {
    id[0] as usize % SHARDS
}

impl ChunkStore {
    /// `known` seeds the dedup index with chunks already in the repository.
    pub fn new(
        repo: SharedRepo,
        key: Arc<Key>,
        nonces: Arc<NonceAllocator>,
        compression: Compression,
        known: impl IntoIterator<Item = (ObjectId, Entry)>,
        dry_run: bool,
    ) -> Self {
        let shards: Vec<Shard> = (0..SHARDS)
            .map(|_| Shard {
                map: Mutex::new(HashMap::new()),
                cv: Condvar::new(),
            })
            .collect();
        for (id, e) in known {
            shards[shard_of(&id)]
                .map
                .lock()
                .expect("shard lock")
                .insert(id, e);
        }
        let (spare_tx, spare) = crossbeam_channel::bounded(POOL);
        ChunkStore {
            key,
            compression,
            nonces,
            shards,
            repo,
            spare_tx,
            spare,
            first_error: Mutex::new(None),
            zero_ids: Mutex::new(HashMap::new()),
            new_streak: AtomicU32::new(0),
            stats: Stats::default(),
            dry_run,
        }
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Whether the chunk is known (committed or stored in this run).
    pub fn seen(&self, id: &ObjectId) -> bool {
        self.shards[shard_of(id)]
            .map
            .lock()
            .expect("shard lock")
            .contains_key(id)
    }

    /// Adds a reference to a chunk known to exist (files-cache hit); None if unknown.
    pub fn incref(&self, id: &ObjectId) -> Option<ChunkRef> {
        let e = self.wait_ready(id, true)?;
        self.stats.add_ref(e.size as u64, e.csize as u64);
        Some(ChunkRef {
            id: *id,
            size: e.size,
            csize: e.csize,
        })
    }

    /// Waits until `id`'s csize is known; increments its refcount if `incref`.
    fn wait_ready(&self, id: &ObjectId, incref: bool) -> Option<Entry> {
        let sh = &self.shards[shard_of(id)];
        let mut map = sh.map.lock().expect("shard lock");
        loop {
            match map.get_mut(id) {
                None => return None,
                Some(e) if e.csize != PENDING => {
                    if incref {
                        e.refcount += 1;
                    }
                    return Some(*e);
                }
                Some(_) => map = sh.cv.wait(map).expect("shard lock"),
            }
        }
    }

    /// Stores `data` (dedup'd) and returns its chunk list entry.
    pub fn store(&self, data: &[u8]) -> Result<ChunkRef, StoreError> {
        let id = self.key.id_hash(data);
        self.store_with_id(id, data)
    }

    /// Stores an all-zero chunk of `size` bytes without hashing zeros again (and without
    /// materialising them when the chunk is already known).
    pub fn store_zeros(&self, size: usize) -> Result<ChunkRef, StoreError> {
        let cached = self.zero_ids.lock().expect("zero ids").get(&size).copied();
        if let Some(id) = cached {
            if let Some(e) = self.wait_ready(&id, true) {
                self.stats.add_ref(e.size as u64, e.csize as u64);
                return Ok(ChunkRef {
                    id,
                    size: e.size,
                    csize: e.csize,
                });
            }
        }
        let zeros = vec![0u8; size];
        let id = match cached {
            Some(id) => id,
            None => {
                let id = self.key.id_hash(&zeros);
                self.zero_ids.lock().expect("zero ids").insert(size, id);
                id
            }
        };
        self.store_with_id(id, &zeros)
    }

    /// Stores archive metadata (item-stream chunks, the archive object) like [`store`],
    /// but outside the archive's statistics, as borg keeps it (its `meta_stats`).
    ///
    /// [`store`]: ChunkStore::store
    pub fn store_meta(&self, data: &[u8]) -> Result<ChunkRef, StoreError> {
        let id = self.key.id_hash(data);
        self.store_counted(id, data, false)
    }

    /// Stores `data` whose id is already computed.
    pub fn store_with_id(&self, id: ObjectId, data: &[u8]) -> Result<ChunkRef, StoreError> {
        self.store_counted(id, data, true)
    }

    /// Stores several chunks as [`store`](Self::store) stores each, with their ids and the
    /// MACs of the new ones computed side by side (see [`Key::id_hashes`]); results in
    /// the order of `chunks`. While chunks keep coming new (see [`NEW_STREAK`]), chunks are
    /// encoded first, their ids hashed beside the MACs (all of the group's ids, beside the
    /// MACs of those whose envelopes fit one buffer, see [`sealed_with_ids`]), and the
    /// envelopes of chunks found stored already are dropped.
    pub fn store_many(&self, chunks: &[&[u8]]) -> Vec<Result<ChunkRef, StoreError>> {
        let (ids, mut early) = if self.encode_first(chunks) {
            let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
            match self.encode_with_ids(chunks, &sealed_with_ids(&lens)) {
                Ok(done) => done,
                Err(e) => return vec![Err(e); chunks.len()],
            }
        } else {
            let none = std::iter::repeat_with(|| None).take(chunks.len());
            (self.key.id_hashes(chunks), none.collect())
        };
        let mut out: Vec<Option<Result<ChunkRef, StoreError>>> = vec![None; chunks.len()];
        // Claim all before waiting on any: a chunk repeated within the group waits for
        // its first occurrence, which must be put first.
        let mut mine = Vec::new();
        for (i, (id, data)) in ids.iter().zip(chunks).enumerate() {
            if data.len() > crate::format::MAX_DATA_SIZE {
                out[i] = Some(Err(StoreError::TooLarge(data.len())));
            } else if self.claim(id, data.len()) {
                mine.push(i);
            }
        }
        self.note_lookups(
            mine.len(),
            out.iter().filter(|o| o.is_none()).count() - mine.len(),
        );
        // envelopes of chunks found stored already are not needed; those sealed of new
        // ones are put first, so that their buffer is free for the rest
        let mut rest = Vec::new();
        for (i, envelope) in early.iter_mut().enumerate() {
            match (envelope.take(), mine.contains(&i)) {
                (Some(e), true) => {
                    out[i] = Some(self.settle(ids[i], chunks[i].len(), Ok(e), true));
                }
                (Some(e), false) => self.recycle(e),
                (None, true) => rest.push(i),
                (None, false) => {}
            }
        }
        if rest.is_empty() {
            return self.finish(out, &ids, chunks);
        }
        let datas: Vec<&[u8]> = rest.iter().map(|&i| chunks[i]).collect();
        if !fits_one_buffer(&datas) {
            // one at a time: a thread never holds more than one large buffer
            for &i in &rest {
                let envelope = self
                    .encode(&ids[i], &[chunks[i]])
                    .map(|mut e| e.pop().expect("one envelope"));
                out[i] = Some(self.settle(ids[i], chunks[i].len(), envelope, true));
            }
            return self.finish(out, &ids, chunks);
        }
        let envelopes: Vec<Result<Envelope, StoreError>> = match self.encode(&ids[rest[0]], &datas)
        {
            Ok(envelopes) => envelopes.into_iter().map(Ok).collect(),
            Err(e) => rest.iter().map(|_| Err(e.clone())).collect(),
        };
        for (&i, envelope) in rest.iter().zip(envelopes) {
            out[i] = Some(self.settle(ids[i], chunks[i].len(), envelope, true));
        }
        self.finish(out, &ids, chunks)
    }

    /// The results of [`store_many`](Self::store_many): those settled, and references to
    /// the chunks stored already (once they are in the repository).
    fn finish(
        &self,
        out: Vec<Option<Result<ChunkRef, StoreError>>>,
        ids: &[ObjectId],
        chunks: &[&[u8]],
    ) -> Vec<Result<ChunkRef, StoreError>> {
        out.into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|| self.reference(ids[i], chunks[i], true)))
            .collect()
    }

    /// Whether [`store_many`](Self::store_many) encodes `chunks` before looking them up:
    /// BLAKE2b MACs in lanes and a run of new chunks. Ids and MACs then share one pass
    /// over the lanes, whose jobs run out once; hashed in two passes, each pass ends in
    /// lanes idling while its longest jobs finish (on a first backup, 2% fewer
    /// instructions and a third less of the slow 2-way kernel than with groups of up to
    /// four chunks encoded first).
    fn encode_first(&self, chunks: &[&[u8]]) -> bool {
        self.key.macs_in_lanes()
            && !chunks.is_empty()
            && chunks
                .iter()
                .all(|c| c.len() <= crate::format::MAX_DATA_SIZE)
            && self.new_streak.load(Ordering::Relaxed) >= NEW_STREAK
    }

    /// Counts `new` chunks claimed and `known` ones found stored already (see
    /// [`NEW_STREAK`]).
    fn note_lookups(&self, new: usize, known: usize) {
        if known > 0 {
            self.new_streak.store(0, Ordering::Relaxed);
        } else if new > 0 {
            let add = u32::try_from(new).unwrap_or(NEW_STREAK);
            let _ = self
                .new_streak
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    Some(s.saturating_add(add).min(NEW_STREAK))
                });
        }
    }

    /// Stores `data`; `counted` adds it to the archive's statistics.
    fn store_counted(
        &self,
        id: ObjectId,
        data: &[u8],
        counted: bool,
    ) -> Result<ChunkRef, StoreError> {
        if data.len() > crate::format::MAX_DATA_SIZE {
            return Err(StoreError::TooLarge(data.len()));
        }
        if !self.claim(&id, data.len()) {
            return self.reference(id, data, counted);
        }
        let envelope = self
            .encode(&id, &[data])
            .map(|mut e| e.pop().expect("one envelope"));
        self.settle(id, data.len(), envelope, counted)
    }

    /// Enters `id` as being stored by the caller, unless it is known (then false).
    fn claim(&self, id: &ObjectId, size: usize) -> bool {
        let mut map = self.shards[shard_of(id)].map.lock().expect("shard lock");
        match map.entry(*id) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Entry {
                    refcount: 1,
                    size: size as u32,
                    csize: PENDING,
                });
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        }
    }

    /// A reference to a known chunk, once it is in the repository.
    fn reference(&self, id: ObjectId, data: &[u8], counted: bool) -> Result<ChunkRef, StoreError> {
        match self.wait_ready(&id, true) {
            Some(e) => {
                if counted {
                    self.stats.add_ref(e.size as u64, e.csize as u64);
                }
                Ok(ChunkRef {
                    id,
                    size: e.size,
                    csize: e.csize,
                })
            }
            // the claimant failed and removed the entry: claim it ourselves
            None => self.store_counted(id, data, counted),
        }
    }

    /// Puts the envelope of a chunk the caller claimed and publishes its size, or drops
    /// the claim when encoding or putting failed.
    fn settle(
        &self,
        id: ObjectId,
        size: usize,
        envelope: Result<Envelope, StoreError>,
        counted: bool,
    ) -> Result<ChunkRef, StoreError> {
        let sh = &self.shards[shard_of(&id)];
        let put = envelope.and_then(|envelope| {
            let csize = envelope.range.len() as u32;
            self.put(id, envelope).map(|()| csize)
        });
        match put {
            Ok(csize) => {
                // Published only now: whoever references the chunk from here on finds
                // it in the repository.
                {
                    let mut map = sh.map.lock().expect("shard lock");
                    if let Some(e) = map.get_mut(&id) {
                        e.csize = csize;
                    }
                    sh.cv.notify_all();
                }
                if counted {
                    self.stats.add_ref(size as u64, csize as u64);
                    self.stats.add_new(size as u64, csize as u64);
                }
                Ok(ChunkRef {
                    id,
                    size: size as u32,
                    csize,
                })
            }
            Err(e) => {
                sh.map.lock().expect("shard lock").remove(&id);
                sh.cv.notify_all();
                Err(e)
            }
        }
    }

    /// Envelopes of `datas`, compressed straight into recycled envelope buffers (already
    /// faulted in) and sealed in place: no separate payload buffer, no copy. `id` names
    /// the first chunk in an error.
    fn encode(&self, id: &ObjectId, datas: &[&[u8]]) -> Result<Vec<Envelope>, StoreError> {
        self.sealed(datas, |outs| {
            seal_many_into(
                &self.key,
                &self.nonces,
                &self.compression,
                datas,
                !self.dry_run,
                outs,
            )
            .map_err(|e| StoreError::Seal(*id, e.to_string()))
        })
    }

    /// [`encode`](Self::encode) of the chunks at `sealed` that hashes the ids of all
    /// `chunks` beside their MACs; returns the ids and the envelopes, in the order of
    /// `chunks` (none for those not sealed).
    fn encode_with_ids(
        &self,
        chunks: &[&[u8]],
        sealed: &[usize],
    ) -> Result<(Vec<ObjectId>, Vec<Option<Envelope>>), StoreError> {
        let datas: Vec<&[u8]> = sealed.iter().map(|&i| chunks[i]).collect();
        let mut ids = Vec::new();
        let envelopes = self.sealed(&datas, |outs| {
            let (i, ranges) = seal_and_id_many_into(
                &self.key,
                &self.nonces,
                &self.compression,
                chunks,
                sealed,
                !self.dry_run,
                outs,
            )
            .map_err(|e| StoreError::Seal(self.key.id_hash(datas[0]), e.to_string()))?;
            ids = i;
            Ok(ranges)
        })?;
        let mut out: Vec<Option<Envelope>> =
            std::iter::repeat_with(|| None).take(chunks.len()).collect();
        for (&i, e) in sealed.iter().zip(envelopes) {
            out[i] = Some(e);
        }
        Ok((ids, out))
    }

    /// The envelopes `seal` puts into buffers for `datas`: all in one recycled buffer
    /// when together they fit a buffer the pool keeps (two chunks sealed side by side then
    /// hold one buffer, as one chunk alone does), else each in its own, recycled for large
    /// chunks.
    fn sealed(
        &self,
        datas: &[&[u8]],
        seal: impl FnOnce(Outs<'_>) -> Result<Vec<Range<usize>>, StoreError>,
    ) -> Result<Vec<Envelope>, StoreError> {
        if datas.len() > 1 && (POOLED_MIN..=KEEP_BUF).contains(&room_of(datas)) {
            let mut buf = self.spare.try_recv().unwrap_or_default();
            let ranges = seal(Outs::One(&mut buf))?;
            let buf = Arc::new(buf);
            return Ok(ranges
                .into_iter()
                .map(|range| Envelope {
                    buf: buf.clone(),
                    range,
                })
                .collect());
        }
        let mut bufs: Vec<Vec<u8>> = datas
            .iter()
            .map(|d| {
                if d.len() >= POOLED_MIN {
                    self.spare.try_recv().unwrap_or_default()
                } else {
                    Vec::new()
                }
            })
            .collect();
        let ranges = seal(Outs::Each(&mut bufs))?;
        Ok(bufs
            .into_iter()
            .zip(ranges)
            .map(|(buf, range)| Envelope {
                buf: Arc::new(buf),
                range,
            })
            .collect())
    }

    /// Keeps the buffer of an envelope no longer needed for reuse once no other envelope
    /// shares it, unless the pool is full or the buffer is too small or too large to be
    /// worth keeping.
    fn recycle(&self, envelope: Envelope) {
        let Ok(buf) = Arc::try_unwrap(envelope.buf) else {
            return;
        };
        if (POOLED_MIN..=KEEP_BUF).contains(&buf.capacity()) {
            let _ = self.spare_tx.try_send(buf);
        }
    }

    /// Puts an envelope into the repository, or fails once a put has failed.
    fn put(&self, id: ObjectId, envelope: Envelope) -> Result<(), StoreError> {
        self.writes_ok()?;
        if self.dry_run {
            return Ok(());
        }
        let r = self
            .repo
            .lock()
            .map_err(|_| "repository lock poisoned".to_string())
            .and_then(|mut r| r.put(&id, envelope.bytes()).map_err(|e| e.to_string()));
        self.recycle(envelope);
        r.map_err(|e| {
            let mut first = self.first_error.lock().expect("first error lock");
            StoreError::Write(first.get_or_insert(e).clone())
        })
    }

    /// The first failed put, if any. Every chunk a [`store`](Self::store) call returned is
    /// in the repository already; this catches a failure whose caller went unheard.
    pub fn writes_ok(&self) -> Result<(), StoreError> {
        match &*self.first_error.lock().expect("first error lock") {
            Some(e) => Err(StoreError::Write(e.clone())),
            None => Ok(()),
        }
    }

    /// Adds a reference from a part item (a checkpoint's piece of an unfinished file) to
    /// a stored chunk. It stays out of the archive's statistics: borg counts these refs
    /// apart (`size_parts`), but a chunk cache must count them as borg's would.
    pub fn add_part_ref(&self, id: &ObjectId) {
        self.wait_ready(id, true);
    }

    /// Drops a stored object from the index (a superseded checkpoint's archive object,
    /// deleted from the repository in the same transaction).
    pub fn forget(&self, id: &ObjectId) {
        self.shards[shard_of(id)]
            .map
            .lock()
            .expect("shard lock")
            .remove(id);
    }

    /// Every chunk with its final refcount and sizes.
    pub fn entries(&self) -> Vec<(ObjectId, Entry)> {
        let mut v = Vec::new();
        for sh in &self.shards {
            let map = sh.map.lock().expect("shard lock");
            v.extend(
                map.iter()
                    .filter(|(_, e)| e.csize != PENDING)
                    .map(|(k, e)| (*k, *e)),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::repo::{RepoError, Repository, Result as RepoResult};

    /// A repository in memory whose puts take `delay` and fail with `fail` once set.
    struct Recording {
        ids: Arc<Mutex<HashSet<ObjectId>>>,
        /// What was put, by id.
        objects: Objects,
        delay: Duration,
        fail: Option<&'static str>,
        started: crossbeam_channel::Sender<()>,
    }

    impl Repository for Recording {
        fn id(&self) -> ObjectId {
            [7; 32]
        }
        fn location(&self) -> String {
            "memory".into()
        }
        fn get(&mut self, id: &ObjectId) -> RepoResult<Vec<u8>> {
            Err(RepoError::Other(format!(
                "{} is never read",
                hex::encode(id)
            )))
        }
        fn contains(&mut self, id: &ObjectId) -> RepoResult<bool> {
            Ok(self.ids.lock().unwrap().contains(id))
        }
        fn put(&mut self, id: &ObjectId, data: &[u8]) -> RepoResult<()> {
            let _ = self.started.try_send(());
            std::thread::sleep(self.delay);
            match self.fail {
                Some(why) => Err(RepoError::Other(why.into())),
                None => {
                    self.ids.lock().unwrap().insert(*id);
                    self.objects.lock().unwrap().insert(*id, data.to_vec());
                    Ok(())
                }
            }
        }
        fn delete(&mut self, id: &ObjectId) -> RepoResult<()> {
            self.ids.lock().unwrap().remove(id);
            Ok(())
        }
        fn commit(&mut self) -> RepoResult<()> {
            Ok(())
        }
        fn rollback(&mut self) -> RepoResult<()> {
            Ok(())
        }
        fn list(&mut self, _: usize, _: Option<&ObjectId>) -> RepoResult<Vec<ObjectId>> {
            Ok(self.ids.lock().unwrap().iter().copied().collect())
        }
        fn len(&mut self) -> RepoResult<u64> {
            Ok(self.ids.lock().unwrap().len() as u64)
        }
        fn load_key(&mut self) -> RepoResult<Vec<u8>> {
            Ok(Vec::new())
        }
        fn save_key(&mut self, _: &[u8]) -> RepoResult<()> {
            Ok(())
        }
        fn get_free_nonce(&mut self) -> RepoResult<Option<u64>> {
            Ok(None)
        }
        fn commit_nonce_reservation(&mut self, _: u64, _: Option<u64>) -> RepoResult<()> {
            Ok(())
        }
        fn append_only(&self) -> bool {
            false
        }
    }

    /// A plaintext-key store over a [`Recording`] repository; returns its put ids and a
    /// receiver told when each put starts.
    fn store(
        delay: Duration,
        fail: Option<&'static str>,
    ) -> (
        Arc<ChunkStore>,
        Arc<Mutex<HashSet<ObjectId>>>,
        crossbeam_channel::Receiver<()>,
    ) {
        let (s, ids, on_start, _) = recording_store(delay, fail);
        (s, ids, on_start)
    }

    /// What was put, by id.
    type Objects = Arc<Mutex<HashMap<ObjectId, Vec<u8>>>>;

    /// A store, its put ids, a receiver told when each put starts, and what was put.
    type Recorded = (
        Arc<ChunkStore>,
        Arc<Mutex<HashSet<ObjectId>>>,
        crossbeam_channel::Receiver<()>,
        Objects,
    );

    /// [`store`], and what was put.
    fn recording_store(delay: Duration, fail: Option<&'static str>) -> Recorded {
        let ids = Arc::new(Mutex::new(HashSet::new()));
        let objects = Objects::default();
        let (started, on_start) = crossbeam_channel::unbounded();
        let repo: SharedRepo = Arc::new(Mutex::new(Box::new(Recording {
            ids: ids.clone(),
            objects: objects.clone(),
            delay,
            fail,
            started,
        })));
        // a plaintext key reserves no nonces: the allocator's files are never touched
        let nonces = Arc::new(NonceAllocator::new(
            repo.clone(),
            std::env::temp_dir().join("proxborg-store-test-nonce-unused"),
            None,
        ));
        let key = Arc::new(Key::plaintext([7; 32]));
        let s = ChunkStore::new(repo, key, nonces, Compression::None, [], false);
        (Arc::new(s), ids, on_start, objects)
    }

    #[test]
    fn many_at_once_store_as_one_at_a_time() {
        // authenticated-blake2 hashes ids side by side and reserves no nonces
        let key = Arc::new(Key::generate(
            crate::format::crypto::KeyMode::AuthenticatedBlake2,
            [7; 32],
        ));
        let (plain, _, _) = store(Duration::ZERO, None);
        let (many, one) = (
            beside(&plain, &key, Compression::None, false),
            beside(&plain, &key, Compression::None, false),
        );
        let chunks: Vec<Vec<u8>> = [&b"a"[..], b"bb", b"a", &[9; 5000], b"bb", b""]
            .iter()
            .map(|c| c.to_vec())
            .collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        one.store(b"bb").unwrap();
        many.store(b"bb").unwrap();
        // repeats within the group wait for their first occurrence, which is put first
        let got: Vec<ChunkRef> = many
            .store_many(&refs)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let want: Vec<ChunkRef> = refs.iter().map(|c| one.store(c).unwrap()).collect();
        let entries = assert_stored_alike(&many, &one, &got, &want);
        assert_eq!(
            entries
                .iter()
                .find(|e| e.0 == got[1].id)
                .unwrap()
                .1
                .refcount,
            3
        );
    }

    /// A store over `plain`'s repository and nonces with `key`.
    fn beside(plain: &ChunkStore, key: &Arc<Key>, c: Compression, dry_run: bool) -> ChunkStore {
        ChunkStore::new(
            plain.repo.clone(),
            key.clone(),
            plain.nonces.clone(),
            c,
            [],
            dry_run,
        )
    }

    /// Asserts that two stores returned the same refs and hold the same entries and
    /// statistics; returns the entries, sorted.
    fn assert_stored_alike(
        a: &ChunkStore,
        b: &ChunkStore,
        got: &[ChunkRef],
        want: &[ChunkRef],
    ) -> Vec<(ObjectId, Entry)> {
        assert_eq!(got, want);
        let (mut x, mut y) = (a.entries(), b.entries());
        x.sort_by_key(|e| e.0);
        y.sort_by_key(|e| e.0);
        assert_eq!(x, y);
        let counts = |s: &ChunkStore| {
            let st = &s.stats;
            [
                &st.osize,
                &st.csize,
                &st.usize_new,
                &st.csize_new,
                &st.chunks_new,
            ]
            .map(Stats::get)
        };
        assert_eq!(counts(a), counts(b));
        x
    }

    #[test]
    fn chunks_encoded_before_lookup_store_as_one_at_a_time() {
        let key = Arc::new(Key::generate(
            crate::format::crypto::KeyMode::RepokeyBlake2,
            [7; 32],
        ));
        assert!(key.macs_in_lanes(), "this CPU hashes BLAKE2b in lanes");
        let (plain, _, _) = store(Duration::ZERO, None);
        // a dry run reserves no nonces; envelopes are made and measured all the same
        let (early, one) = (
            beside(&plain, &key, Compression::Lz4, true),
            beside(&plain, &key, Compression::Lz4, true),
        );
        let chunk = |i: u32, n: usize| -> Vec<u8> {
            (0..n).map(|j| (j as u32 * (i + 3) + i) as u8).collect()
        };
        let mut want = Vec::new();
        let mut got = Vec::new();
        // a run of new chunks opens the early path
        for i in 0..NEW_STREAK {
            assert!(!early.encode_first(&[b"x"]), "after {i} new chunks");
            let c = chunk(i, 1000);
            got.extend(early.store_many(&[&c]));
            want.push(one.store(&c));
        }
        assert!(early.encode_first(&[b"x"]));
        // more chunks than lanes: ids and MACs share the pass all the same
        let many: Vec<Vec<u8>> = (200..206).map(|i| chunk(i, 3000 * i as usize)).collect();
        let many: Vec<&[u8]> = many.iter().map(|c| &c[..]).collect();
        assert!(many.len() > crate::format::blake2::lanes());
        assert!(early.encode_first(&many));
        got.extend(early.store_many(&many));
        want.extend(many.iter().map(|c| one.store(c)));
        let (a, b) = (chunk(100, 70_000), chunk(101, 5));
        for group in [vec![&a[..]], vec![&b[..], &a[..]]] {
            assert!(early.encode_first(&group));
            got.extend(early.store_many(&group));
            want.extend(group.iter().map(|c| one.store(c)));
        }
        // `a` was found stored already: the run is over, the next chunk is looked up first
        assert!(!early.encode_first(&[b"x"]));
        let got: Vec<ChunkRef> = got.into_iter().map(|r| r.unwrap()).collect();
        let want: Vec<ChunkRef> = want.into_iter().map(|r| r.unwrap()).collect();
        let entries = assert_stored_alike(&early, &one, &got, &want);
        let a_id = got[NEW_STREAK as usize + many.len()].id;
        assert_eq!(entries.iter().find(|e| e.0 == a_id).unwrap().1.refcount, 2);
    }

    #[test]
    fn a_second_reference_returns_only_once_the_chunk_is_put() {
        let (s, ids, on_start) = store(Duration::from_millis(300), None);
        let first = {
            let s = s.clone();
            std::thread::spawn(move || s.store(b"shared chunk").unwrap())
        };
        on_start.recv().unwrap();
        // the first store has claimed the id and is inside its put
        let second = s.store(b"shared chunk").unwrap();
        assert!(
            ids.lock().unwrap().contains(&second.id),
            "a reference returned before its chunk was in the repository"
        );
        assert_eq!(first.join().unwrap(), second);
        assert_eq!(s.entries()[0].1.refcount, 2);
        s.writes_ok().unwrap();
    }

    #[test]
    fn a_failed_put_fails_every_later_store() {
        let (s, ids, _) = store(Duration::ZERO, Some("disk full"));
        let e = s.store(b"one").unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        let e = s.store(b"two").unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert!(s.writes_ok().unwrap_err().to_string().contains("disk full"));
        assert!(ids.lock().unwrap().is_empty());
        // the failed chunks are not in the index: a later archive would reference them
        assert!(s.entries().is_empty());
    }

    /// An encrypting lz4 store over `plain`'s repository, with its own nonce file in
    /// `dir`, on the path that encodes new chunks before their lookup.
    fn encrypting(plain: &ChunkStore, key: &Arc<Key>, dir: &std::path::Path) -> ChunkStore {
        let nonces = Arc::new(NonceAllocator::new(
            plain.repo.clone(),
            dir.join("nonce"),
            None,
        ));
        let s = ChunkStore::new(
            plain.repo.clone(),
            key.clone(),
            nonces,
            Compression::Lz4,
            [],
            false,
        );
        s.new_streak.store(NEW_STREAK, Ordering::Relaxed);
        s
    }

    /// `n` bytes: text-like (lz4 halves it) or, with `noise`, incompressible.
    fn bytes(seed: u64, n: usize, noise: bool) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match noise {
                    true => x as u8,
                    false => b"the quick brown fox "[(i + (x % 3) as usize) % 20],
                }
            })
            .collect()
    }

    /// Asserts that `refs` were put as envelopes that open to `chunks`.
    fn assert_put(objects: &Objects, key: &Key, refs: &[ChunkRef], chunks: &[&[u8]]) {
        let objects = objects.lock().unwrap();
        for (r, c) in refs.iter().zip(chunks) {
            let envelope = &objects[&r.id];
            assert_eq!(r.csize as usize, envelope.len());
            assert_eq!(r.id, key.id_hash(c));
            let payload = key.open_with_id(&r.id, envelope).unwrap();
            assert_eq!(crate::format::compress::decompress(&payload).unwrap(), *c);
        }
    }

    /// A repokey-blake2 key, the nonce file's directory, an [`encrypting`] store and what
    /// it puts.
    fn pair_store() -> (Arc<Key>, tempfile::TempDir, ChunkStore, Objects) {
        let key = Arc::new(Key::generate(
            crate::format::crypto::KeyMode::RepokeyBlake2,
            [7; 32],
        ));
        let dir = tempfile::tempdir().unwrap();
        let (plain, _, _, objects) = recording_store(Duration::ZERO, None);
        let s = encrypting(&plain, &key, dir.path());
        (key, dir, s, objects)
    }

    /// Stores `pair` at once and asserts that both were put as envelopes that open to them.
    fn store_pair(s: &ChunkStore, key: &Key, objects: &Objects, pair: &[&[u8]]) {
        let refs: Vec<ChunkRef> = s.store_many(pair).into_iter().map(|r| r.unwrap()).collect();
        assert_put(objects, key, &refs, pair);
    }

    #[test]
    fn a_pair_of_chunks_is_sealed_into_one_buffer() {
        let (key, _dir, s, objects) = pair_store();
        for round in 0..3u64 {
            // a compressible chunk and an incompressible one, then the other way round
            let (a, b) = (
                bytes(round, 600_000, round == 1),
                bytes(round + 9, 700_001, round != 1),
            );
            let pair = [&a[..], &b[..]];
            assert!(fits_one_buffer(&pair) && s.encode_first(&pair));
            store_pair(&s, &key, &objects, &pair);
            // one buffer held both envelopes, and it is back in the pool
            assert_eq!(s.spare.len(), 1, "round {round}");
        }
    }

    #[test]
    fn a_pair_too_large_for_one_buffer_seals_the_larger_beside_both_ids() {
        let (key, _dir, s, objects) = pair_store();
        let (a, b) = (bytes(1, 4 << 20, false), bytes(2, 5 << 20, true));
        let pair = [&a[..], &b[..]];
        assert!(!fits_one_buffer(&pair) && s.encode_first(&pair));
        assert_eq!(sealed_with_ids(&[a.len(), b.len()]), vec![1]);
        store_pair(&s, &key, &objects, &pair);
        // the first was sealed afterwards, into the buffer the second was put from
        assert_eq!(s.spare.len(), 1);
        // without a run of new chunks: ids first, then sealed one at a time
        s.new_streak.store(0, Ordering::Relaxed);
        let (c, d) = (bytes(3, 5 << 20, true), bytes(4, 4 << 20, false));
        let pair = [&c[..], &d[..]];
        assert!(!s.encode_first(&pair));
        store_pair(&s, &key, &objects, &pair);
        assert_eq!(s.spare.len(), 1);
    }

    #[test]
    fn the_largest_chunks_that_fit_one_buffer_are_sealed_beside_the_ids() {
        let mib = |n: usize| n << 20;
        assert_eq!(sealed_with_ids(&[mib(1), mib(2), mib(3)]), vec![0, 1, 2]);
        assert_eq!(sealed_with_ids(&[mib(4), mib(5)]), vec![1]);
        // 5 and 3 MiB fit; 4 MiB more would not, nor would 1 MiB after the 3
        assert_eq!(
            sealed_with_ids(&[mib(5), mib(4), mib(1), mib(3)]),
            vec![0, 3]
        );
        // one at least, even beyond a buffer
        assert_eq!(sealed_with_ids(&[mib(10)]), vec![0]);
        assert!(sealed_with_ids(&[]).is_empty());
    }
}
