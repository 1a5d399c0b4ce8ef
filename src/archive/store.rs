//! The chunk store: dedup → compress → encrypt → hand to the single repository writer.
//! Many workers call [`ChunkStore::store`] at once; the first to claim an id encodes it,
//! others referencing the same id wait only for its stored size (borg's item chunk
//! lists need `csize`). Memory is bounded by a byte budget on queued envelopes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::stats::Stats;
use crate::format::compress::Compression;
use crate::format::crypto::Key;
use crate::format::objects::ChunkRef;
use crate::repo::ObjectId;
use crate::session::{seal_into, NonceAllocator, SharedRepo};

const SHARDS: usize = 64;
/// An envelope buffer larger than this (a chunk beyond borg's largest chunker maximum,
/// 8 MiB, e.g. item metadata) is not kept.
const KEEP_BUF: usize = 9 << 20;

const PENDING: u32 = u32::MAX;
/// Envelopes queued for the writer at most (bytes): enough to keep it busy while the
/// encoders finish the next chunks, small enough to keep the resident set low.
const QUEUE_BUDGET: usize = 4 << 20;
/// Written envelope buffers kept for reuse: a recycled buffer is already faulted in,
/// a fresh multi-MiB allocation costs a page fault per page (the kernel zeroes each).
const POOL: usize = 2;
/// Only envelopes of chunks at least this large go through the pool: small allocations
/// come from the allocator's free lists without page faults.
const POOLED_MIN: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("encrypting chunk {id}: {reason}", id = hex::encode(.0), reason = .1)]
    Seal(ObjectId, String),
    #[error("writing to the repository: {0}")]
    Write(String),
    #[error("chunk of {0} bytes exceeds borg's maximum object size")]
    TooLarge(usize),
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

/// A byte-counting semaphore so queued envelopes never exceed [`QUEUE_BUDGET`].
struct Budget {
    used: Mutex<usize>,
    cv: Condvar,
}

impl Budget {
    fn acquire(&self, n: usize) {
        let mut u = self.used.lock().expect("budget lock");
        while *u > 0 && *u + n > QUEUE_BUDGET {
            u = self.cv.wait(u).expect("budget lock");
        }
        *u += n;
    }
    fn release(&self, n: usize) {
        let mut u = self.used.lock().expect("budget lock");
        *u -= n;
        self.cv.notify_all();
    }
}

enum WriterOp {
    Put {
        id: ObjectId,
        data: Vec<u8>,
    },
    /// Answered once every put queued before it is in the repository.
    Flush(Sender<Result<(), String>>),
}

/// Shared dedup index + encoder + writer queue for one backup.
pub struct ChunkStore {
    key: Arc<Key>,
    compression: Compression,
    nonces: Arc<NonceAllocator>,
    shards: Vec<Shard>,
    tx: Mutex<Option<Sender<WriterOp>>>,
    budget: Arc<Budget>,
    /// Envelope buffers the writer is done with.
    spare: Receiver<Vec<u8>>,
    writer: Mutex<Option<JoinHandle<Result<(), String>>>>,
    failed: Arc<AtomicBool>,
    zero_ids: Mutex<HashMap<usize, ObjectId>>,
    pub stats: Stats,
    dry_run: bool,
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
        let (tx, rx) = crossbeam_channel::unbounded::<WriterOp>();
        let budget = Arc::new(Budget {
            used: Mutex::new(0),
            cv: Condvar::new(),
        });
        let failed = Arc::new(AtomicBool::new(false));
        let (spare_tx, spare) = crossbeam_channel::bounded(POOL);
        let writer = {
            let budget = budget.clone();
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("repo-writer".into())
                .spawn(move || writer_loop(repo, rx, budget, failed, spare_tx))
                .expect("spawn writer thread")
        };
        ChunkStore {
            key,
            compression,
            nonces,
            shards,
            tx: Mutex::new(Some(tx)),
            budget,
            spare,
            writer: Mutex::new(Some(writer)),
            failed,
            zero_ids: Mutex::new(HashMap::new()),
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
        let sh = &self.shards[shard_of(&id)];
        {
            let mut map = sh.map.lock().expect("shard lock");
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry(id) {
                v.insert(Entry {
                    refcount: 1,
                    size: data.len() as u32,
                    csize: PENDING,
                });
            } else {
                drop(map);
                if let Some(e) = self.wait_ready(&id, true) {
                    if counted {
                        self.stats.add_ref(e.size as u64, e.csize as u64);
                    }
                    return Ok(ChunkRef {
                        id,
                        size: e.size,
                        csize: e.csize,
                    });
                }
                // the claimant failed and removed the entry: claim it ourselves
                return self.store_counted(id, data, counted);
            }
        }
        match self.encode(&id, data) {
            Ok(envelope) => {
                let csize = envelope.len() as u32;
                {
                    let mut map = sh.map.lock().expect("shard lock");
                    if let Some(e) = map.get_mut(&id) {
                        e.csize = csize;
                    }
                    sh.cv.notify_all();
                }
                if counted {
                    self.stats.add_ref(data.len() as u64, csize as u64);
                    self.stats.add_new(data.len() as u64, csize as u64);
                }
                self.send(id, envelope)?;
                Ok(ChunkRef {
                    id,
                    size: data.len() as u32,
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

    fn encode(&self, id: &ObjectId, data: &[u8]) -> Result<Vec<u8>, StoreError> {
        // Compress straight into a recycled envelope buffer (already faulted in) and seal
        // it in place: no separate payload buffer, no copy.
        let mut envelope = if data.len() >= POOLED_MIN {
            self.spare.try_recv().unwrap_or_default()
        } else {
            Vec::new()
        };
        seal_into(
            &self.key,
            &self.nonces,
            &self.compression,
            data,
            !self.dry_run,
            &mut envelope,
        )
        .map_err(|e| StoreError::Seal(*id, e.to_string()))?;
        Ok(envelope)
    }

    fn send(&self, id: ObjectId, data: Vec<u8>) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(StoreError::Write(
                "the repository writer stopped after an error".into(),
            ));
        }
        if self.dry_run {
            return Ok(());
        }
        // Capacity, not length: a recycled buffer is resident in full.
        self.budget.acquire(data.capacity());
        let tx = self.tx.lock().expect("tx lock").clone();
        match tx {
            Some(tx) => tx
                .send(WriterOp::Put { id, data })
                .map_err(|_| StoreError::Write("the repository writer has stopped".into())),
            None => Err(StoreError::Write("the chunk store is closed".into())),
        }
    }

    /// Waits until every envelope queued so far is in the repository (a checkpoint's
    /// commit must not precede its chunks); the writer goes on afterwards.
    pub fn flush_writes(&self) -> Result<(), StoreError> {
        if self.dry_run {
            return Ok(());
        }
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let tx = self.tx.lock().expect("tx lock").clone();
        let stopped = || StoreError::Write("the repository writer has stopped".into());
        tx.ok_or_else(stopped)?
            .send(WriterOp::Flush(done_tx))
            .map_err(|_| stopped())?;
        done.recv()
            .map_err(|_| stopped())?
            .map_err(StoreError::Write)
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

    /// Waits until every queued envelope is in the repository; returns the first write error.
    pub fn finish_writes(&self) -> Result<(), StoreError> {
        self.tx.lock().expect("tx lock").take();
        if let Some(h) = self.writer.lock().expect("writer lock").take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(StoreError::Write(e)),
                Err(_) => return Err(StoreError::Write("the repository writer panicked".into())),
            }
        }
        Ok(())
    }

    /// Every chunk with its final refcount and sizes (after `finish_writes`).
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

fn writer_loop(
    repo: SharedRepo,
    rx: Receiver<WriterOp>,
    budget: Arc<Budget>,
    failed: Arc<AtomicBool>,
    spare: Sender<Vec<u8>>,
) -> Result<(), String> {
    let mut first_err: Option<String> = None;
    for op in rx {
        let (id, data) = match op {
            WriterOp::Put { id, data } => (id, data),
            WriterOp::Flush(done) => {
                let _ = done.send(first_err.clone().map_or(Ok(()), Err));
                continue;
            }
        };
        let n = data.capacity();
        if first_err.is_none() {
            let r = repo
                .lock()
                .map_err(|_| "repository lock poisoned".to_string())
                .and_then(|mut r| r.put(&id, &data).map_err(|e| e.to_string()));
            if let Err(e) = r {
                failed.store(true, Ordering::Relaxed);
                first_err = Some(e);
            }
        }
        budget.release(n);
        if (POOLED_MIN..=KEEP_BUF).contains(&n) {
            // a full pool drops the buffer
            let _ = spare.try_send(data);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
