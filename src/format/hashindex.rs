//! borg's `HashIndex` (`_hashindex.c`): an open-addressing table of 32-byte keys with
//! fixed-size values, which is at the same time the in-memory map and the on-disk file
//! format of the repository index (`index.N`, values `segment, offset`) and of the client
//! chunks cache (`chunks`, values `refcount, size, csize`).
//!
//! Layout: an 18-byte header (`BORG_IDX`, `num_entries` i32le, `num_buckets` i32le,
//! `key_size` i8, `value_size` i8) followed by `num_buckets` buckets of `key ‖ value`.
//! The first value u32 doubles as the bucket state: `0xffffffff` empty, `0xfffffffe`
//! deleted (tombstone), anything ≤ [`MAX_VALUE`] a live entry. Lookups start at
//! `u32le(key[0..4]) % num_buckets` and probe linearly until an empty bucket.
//!
//! The in-memory table *is* this layout, so serialising a table that already has the
//! canonical size and no tombstones is a plain copy, and a loaded file is adopted as-is.

use std::fmt;

/// File magic.
pub const MAGIC: &[u8; 8] = b"BORG_IDX";
/// Size of the packed `HashHeader`.
pub const HEADER_LEN: usize = 18;
/// Key size of every borg index.
pub const KEY_SIZE: usize = 32;
/// Largest value the first value u32 may hold; the two above it are bucket markers.
pub const MAX_VALUE: u32 = u32::MAX - 1024;

const EMPTY: u32 = 0xffff_ffff;
const DELETED: u32 = 0xffff_fffe;

/// borg's table sizes (`hash_sizes[]`): a table only ever has one of these sizes when
/// borg builds it, and borg's writer picks the same.
pub const HASH_SIZES: [usize; 58] = [
    1031, 2053, 4099, 8209, 16411, 32771, 65537, 131101, 262147, 445649, 757607, 1287917, 2189459,
    3065243, 4291319, 6007867, 8410991, 11775359, 16485527, 23079703, 27695653, 33234787, 39881729,
    47858071, 57429683, 68915617, 82698751, 99238507, 119086189, 144378011, 157223263, 173476439,
    190253911, 209915011, 230493629, 253169431, 278728861, 306647623, 337318939, 370742809,
    408229973, 449387209, 493428073, 543105119, 596976533, 657794869, 722676499, 795815791,
    874066969, 962279771, 1057701643, 1164002657, 1280003147, 1407800297, 1548442699, 1703765389,
    1873768367, 2062383853,
];

const HASH_MIN_LOAD: f64 = 0.25;
const HASH_MAX_LOAD: f64 = 0.75;
const HASH_MAX_EFF_LOAD: f64 = 0.93;

/// Errors reading or filling a hash index.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashIndexError {
    #[error("hash index: could not read header (expected {HEADER_LEN} bytes, got {0})")]
    ShortHeader(usize),
    #[error("hash index: unknown magic {0:02x?}")]
    BadMagic([u8; 8]),
    #[error("hash index: expected key size {expected}, got {got}")]
    KeySize { expected: usize, got: i8 },
    #[error("hash index: expected value size {expected}, got {got}")]
    ValueSize { expected: usize, got: i8 },
    #[error("hash index: expected num_buckets >= 1, got {0}")]
    NumBuckets(i32),
    #[error("hash index: expected 0 <= num_entries <= num_buckets ({buckets}), got {entries}")]
    NumEntries { entries: i32, buckets: i32 },
    #[error("hash index: incorrect file length (expected {expected}, got {got})")]
    Length { expected: usize, got: usize },
    #[error("hash index: header says {header} entries, buckets hold {found}")]
    EntryCount { header: usize, found: usize },
    #[error("hash index: bucket {bucket} holds reserved value {value:#x}")]
    ReservedValue { bucket: usize, value: u32 },
    #[error("hash index: key {} stored twice", hex::encode(.0))]
    DuplicateKey([u8; 32]),
    #[error("hash index: value {0:#x} exceeds the maximum {MAX_VALUE:#x}")]
    ValueTooLarge(u32),
    #[error("hash index: table is full ({0} entries)")]
    Full(usize),
}

/// The smallest `HASH_SIZES` index whose size is ≥ `size` (the largest if none is).
fn size_idx(size: usize) -> usize {
    HASH_SIZES
        .iter()
        .position(|&s| s >= size)
        .unwrap_or(HASH_SIZES.len() - 1)
}

/// The table size borg's writer would give `n` entries: the smallest size keeping the
/// load ≤ 0.75.
pub fn canonical_buckets(n: usize) -> usize {
    HASH_SIZES
        .iter()
        .copied()
        .find(|&s| n.saturating_mul(4) <= s.saturating_mul(3))
        .unwrap_or(HASH_SIZES[HASH_SIZES.len() - 1])
}

fn upper_limit(num_buckets: usize) -> usize {
    if num_buckets >= HASH_SIZES[HASH_SIZES.len() - 1] {
        num_buckets
    } else {
        (num_buckets as f64 * HASH_MAX_LOAD) as usize
    }
}

fn lower_limit(num_buckets: usize) -> usize {
    if num_buckets <= HASH_SIZES[0] {
        0
    } else {
        (num_buckets as f64 * HASH_MIN_LOAD) as usize
    }
}

fn min_empty(num_buckets: usize) -> usize {
    1 + (num_buckets as f64 * (1.0 - HASH_MAX_EFF_LOAD)) as usize
}

/// A borg hash index with `V`-byte values (`V ≥ 4`; the first 4 bytes are a LE u32
/// that must stay ≤ [`MAX_VALUE`]).
#[derive(Clone)]
pub struct HashIndex<const V: usize> {
    buckets: Vec<u8>,
    num_buckets: usize,
    num_entries: usize,
    /// Never-used buckets (not counting tombstones).
    num_empty: usize,
}

impl<const V: usize> Default for HashIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const V: usize> fmt::Debug for HashIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashIndex")
            .field("value_size", &V)
            .field("num_entries", &self.num_entries)
            .field("num_buckets", &self.num_buckets)
            .finish()
    }
}

impl<const V: usize> PartialEq for HashIndex<V> {
    /// Equal contents, regardless of table size or bucket order.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<const V: usize> HashIndex<V> {
    /// Bytes per bucket.
    pub const BUCKET: usize = KEY_SIZE + V;
    const VALUE_OK: () = assert!(V >= 4 && V <= 127, "value size must be 4..=127");

    /// An empty table of borg's smallest size (1031 buckets).
    pub fn new() -> Self {
        Self::with_buckets(HASH_SIZES[0])
    }

    /// An empty table that holds `n` entries without growing.
    pub fn with_capacity(n: usize) -> Self {
        Self::with_buckets(canonical_buckets(n))
    }

    fn with_buckets(num_buckets: usize) -> Self {
        #[allow(clippy::let_unit_value)]
        let _ = Self::VALUE_OK;
        let num_buckets = num_buckets.max(1);
        let mut buckets = vec![0u8; num_buckets * Self::BUCKET];
        for b in buckets.chunks_exact_mut(Self::BUCKET) {
            b[KEY_SIZE..KEY_SIZE + 4].copy_from_slice(&EMPTY.to_le_bytes());
        }
        HashIndex {
            buckets,
            num_buckets,
            num_entries: 0,
            num_empty: num_buckets,
        }
    }

    pub fn len(&self) -> usize {
        self.num_entries
    }

    pub fn is_empty(&self) -> bool {
        self.num_entries == 0
    }

    /// Current table size (buckets).
    pub fn num_buckets(&self) -> usize {
        self.num_buckets
    }

    /// Size of the serialised file (`to_bytes().len()`).
    pub fn serialized_len(&self) -> usize {
        HEADER_LEN + canonical_buckets(self.num_entries) * Self::BUCKET
    }

    /// Removes every entry and shrinks to the smallest size.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    #[inline]
    fn marker(&self, idx: usize) -> u32 {
        let o = idx * Self::BUCKET + KEY_SIZE;
        u32::from_le_bytes([
            self.buckets[o],
            self.buckets[o + 1],
            self.buckets[o + 2],
            self.buckets[o + 3],
        ])
    }

    #[inline]
    fn key_at(&self, idx: usize) -> &[u8] {
        let o = idx * Self::BUCKET;
        &self.buckets[o..o + KEY_SIZE]
    }

    #[inline]
    fn value_at(&self, idx: usize) -> [u8; V] {
        let o = idx * Self::BUCKET + KEY_SIZE;
        let mut v = [0u8; V];
        v.copy_from_slice(&self.buckets[o..o + V]);
        v
    }

    #[inline]
    fn start_bucket(&self, key: &[u8; 32]) -> usize {
        let h = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
        (h as usize) % self.num_buckets
    }

    /// Finds `key`: `Ok(bucket)` if present, else `Err(first free bucket on its probe path)`
    /// (a tombstone if one was passed, else the terminating empty bucket; `None` if the
    /// table has neither).
    fn lookup(&self, key: &[u8; 32]) -> Result<usize, Option<usize>> {
        let start = self.start_bucket(key);
        let mut idx = start;
        let mut tomb = None;
        loop {
            match self.marker(idx) {
                EMPTY => return Err(tomb.or(Some(idx))),
                DELETED => {
                    if tomb.is_none() {
                        tomb = Some(idx);
                    }
                }
                _ => {
                    if self.key_at(idx) == key {
                        return Ok(idx);
                    }
                }
            }
            idx += 1;
            if idx == self.num_buckets {
                idx = 0;
            }
            if idx == start {
                return Err(tomb);
            }
        }
    }

    /// The value stored for `key`.
    #[inline]
    pub fn get(&self, key: &[u8; 32]) -> Option<[u8; V]> {
        self.lookup(key).ok().map(|i| self.value_at(i))
    }

    pub fn contains_key(&self, key: &[u8; 32]) -> bool {
        self.lookup(key).is_ok()
    }

    /// Stores `value` for `key`, returning the previous value.
    pub fn insert(
        &mut self,
        key: &[u8; 32],
        value: [u8; V],
    ) -> Result<Option<[u8; V]>, HashIndexError> {
        let first = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if first > MAX_VALUE {
            return Err(HashIndexError::ValueTooLarge(first));
        }
        match self.lookup(key) {
            Ok(idx) => {
                let old = self.value_at(idx);
                let o = idx * Self::BUCKET + KEY_SIZE;
                self.buckets[o..o + V].copy_from_slice(&value);
                Ok(Some(old))
            }
            Err(mut slot) => {
                if self.num_entries >= upper_limit(self.num_buckets) {
                    let next =
                        HASH_SIZES[(size_idx(self.num_buckets) + 1).min(HASH_SIZES.len() - 1)];
                    if next > self.num_buckets {
                        self.resize(next);
                        slot = self.lookup(key).err().flatten();
                    } else if self.num_entries >= self.num_buckets {
                        return Err(HashIndexError::Full(self.num_entries));
                    }
                }
                let mut idx = slot.ok_or(HashIndexError::Full(self.num_entries))?;
                if self.marker(idx) == EMPTY {
                    if self.num_empty <= min_empty(self.num_buckets) {
                        // Too many tombstones: rebuild at the same size, like borg.
                        self.resize(self.num_buckets);
                        idx = self
                            .lookup(key)
                            .err()
                            .flatten()
                            .ok_or(HashIndexError::Full(self.num_entries))?;
                    }
                    self.num_empty -= 1;
                }
                let o = idx * Self::BUCKET;
                self.buckets[o..o + KEY_SIZE].copy_from_slice(key);
                self.buckets[o + KEY_SIZE..o + Self::BUCKET].copy_from_slice(&value);
                self.num_entries += 1;
                Ok(None)
            }
        }
    }

    /// Changes the value of an existing entry in place; `f` may not set a first u32 above
    /// [`MAX_VALUE`] (it is clamped to `MAX_VALUE` if it does). Returns the new value.
    pub fn update(&mut self, key: &[u8; 32], f: impl FnOnce(&mut [u8; V])) -> Option<[u8; V]> {
        let idx = self.lookup(key).ok()?;
        let mut v = self.value_at(idx);
        f(&mut v);
        if u32::from_le_bytes([v[0], v[1], v[2], v[3]]) > MAX_VALUE {
            v[..4].copy_from_slice(&MAX_VALUE.to_le_bytes());
        }
        let o = idx * Self::BUCKET + KEY_SIZE;
        self.buckets[o..o + V].copy_from_slice(&v);
        Some(v)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &[u8; 32]) -> Option<[u8; V]> {
        let idx = self.lookup(key).ok()?;
        let old = self.value_at(idx);
        let o = idx * Self::BUCKET + KEY_SIZE;
        self.buckets[o..o + 4].copy_from_slice(&DELETED.to_le_bytes());
        self.num_entries -= 1;
        if self.num_entries < lower_limit(self.num_buckets) {
            let smaller = HASH_SIZES[size_idx(self.num_buckets).saturating_sub(1)];
            self.resize(smaller);
        }
        Some(old)
    }

    /// Rebuilds the table with `num_buckets` buckets (drops tombstones).
    fn resize(&mut self, num_buckets: usize) {
        let mut new = Self::with_buckets(num_buckets.max(self.num_entries + 1));
        for idx in 0..self.num_buckets {
            if self.marker(idx) < DELETED {
                let o = idx * Self::BUCKET;
                new.place_new(&self.buckets[o..o + Self::BUCKET]);
            }
        }
        *self = new;
    }

    /// Puts a bucket whose key is known to be absent into a table without tombstones.
    fn place_new(&mut self, bucket: &[u8]) {
        let mut key = [0u8; 32];
        key.copy_from_slice(&bucket[..KEY_SIZE]);
        let mut idx = self.start_bucket(&key);
        while self.marker(idx) != EMPTY {
            idx += 1;
            if idx == self.num_buckets {
                idx = 0;
            }
        }
        let o = idx * Self::BUCKET;
        self.buckets[o..o + Self::BUCKET].copy_from_slice(bucket);
        self.num_entries += 1;
        self.num_empty -= 1;
    }

    /// Entries in bucket order (borg's iteration order).
    pub fn iter(&self) -> Iter<'_, V> {
        Iter {
            index: self,
            next: 0,
        }
    }

    /// Entries after `marker` in bucket order (borg's `iteritems(marker=…)`); `None` if
    /// `marker` is not in the table.
    pub fn iter_after(&self, marker: &[u8; 32]) -> Option<Iter<'_, V>> {
        let idx = self.lookup(marker).ok()?;
        Some(Iter {
            index: self,
            next: idx + 1,
        })
    }

    /// The file bytes borg writes: canonical size, no tombstones, exact entry count, empty
    /// buckets as 32 zero bytes + `ff ff ff ff` + zeros.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.serialized_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the file bytes to `out` (see [`HashIndex::to_bytes`]).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let target = canonical_buckets(self.num_entries);
        let header = |n_buckets: usize, out: &mut Vec<u8>| {
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&(self.num_entries as i32).to_le_bytes());
            out.extend_from_slice(&(n_buckets as i32).to_le_bytes());
            out.push(KEY_SIZE as u8);
            out.push(V as u8);
        };
        if target == self.num_buckets && self.num_entries + self.num_empty == self.num_buckets {
            header(self.num_buckets, out);
            out.extend_from_slice(&self.buckets);
        } else {
            let mut t = Self::with_buckets(target);
            for idx in 0..self.num_buckets {
                if self.marker(idx) < DELETED {
                    let o = idx * Self::BUCKET;
                    t.place_new(&self.buckets[o..o + Self::BUCKET]);
                }
            }
            header(t.num_buckets, out);
            out.extend_from_slice(&t.buckets);
        }
    }

    /// Parses an index file with borg 1.4's validation (magic, key/value size, bucket and
    /// entry bounds, exact length), accepting any bucket count. Tables that borg could read
    /// but that are awkward to probe (too few empty buckets, keys behind an empty bucket)
    /// are rebuilt; an entry count that disagrees with the buckets is an error.
    pub fn from_bytes(data: &[u8]) -> Result<Self, HashIndexError> {
        if data.len() < HEADER_LEN {
            return Err(HashIndexError::ShortHeader(data.len()));
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&data[..8]);
        if &magic != MAGIC {
            return Err(HashIndexError::BadMagic(magic));
        }
        let num_entries = i32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        let num_buckets = i32::from_le_bytes([data[12], data[13], data[14], data[15]]);
        let key_size = data[16] as i8;
        let value_size = data[17] as i8;
        if key_size as i64 != KEY_SIZE as i64 {
            return Err(HashIndexError::KeySize {
                expected: KEY_SIZE,
                got: key_size,
            });
        }
        if value_size as i64 != V as i64 {
            return Err(HashIndexError::ValueSize {
                expected: V,
                got: value_size,
            });
        }
        if num_buckets < 1 {
            return Err(HashIndexError::NumBuckets(num_buckets));
        }
        if num_entries < 0 || num_entries > num_buckets {
            return Err(HashIndexError::NumEntries {
                entries: num_entries,
                buckets: num_buckets,
            });
        }
        let n_buckets = num_buckets as usize;
        let expected = HEADER_LEN + n_buckets * Self::BUCKET;
        if data.len() != expected {
            return Err(HashIndexError::Length {
                expected,
                got: data.len(),
            });
        }
        let mut t = HashIndex::<V> {
            buckets: data[HEADER_LEN..].to_vec(),
            num_buckets: n_buckets,
            num_entries: 0,
            num_empty: 0,
        };
        let mut live = 0usize;
        let mut empty = 0usize;
        for idx in 0..n_buckets {
            let o = idx * Self::BUCKET;
            match t.marker(idx) {
                EMPTY => {
                    empty += 1;
                    // Normalise the bytes of empty buckets so re-serialising is canonical.
                    let b = &mut t.buckets[o..o + Self::BUCKET];
                    b.fill(0);
                    b[KEY_SIZE..KEY_SIZE + 4].copy_from_slice(&EMPTY.to_le_bytes());
                }
                DELETED => {}
                m if m > MAX_VALUE => {
                    return Err(HashIndexError::ReservedValue {
                        bucket: idx,
                        value: m,
                    });
                }
                _ => live += 1,
            }
        }
        if live != num_entries as usize {
            return Err(HashIndexError::EntryCount {
                header: num_entries as usize,
                found: live,
            });
        }
        t.num_entries = live;
        t.num_empty = empty;
        // Every live key must be found where it sits (reachable, stored once).
        let mut consistent = empty >= min_empty(n_buckets);
        if consistent {
            for idx in 0..n_buckets {
                if t.marker(idx) < DELETED {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(t.key_at(idx));
                    if t.lookup(&key) != Ok(idx) {
                        consistent = false;
                        break;
                    }
                }
            }
        }
        if !consistent {
            let mut fresh = Self::with_capacity(live);
            for idx in 0..n_buckets {
                if t.marker(idx) < DELETED {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(t.key_at(idx));
                    if fresh.insert(&key, t.value_at(idx))?.is_some() {
                        return Err(HashIndexError::DuplicateKey(key));
                    }
                }
            }
            t = fresh;
        }
        Ok(t)
    }
}

/// Iterator over `(key, value)` in bucket order.
pub struct Iter<'a, const V: usize> {
    index: &'a HashIndex<V>,
    next: usize,
}

impl<'a, const V: usize> Iterator for Iter<'a, V> {
    type Item = (&'a [u8; 32], [u8; V]);

    fn next(&mut self) -> Option<Self::Item> {
        let ix = self.index;
        while self.next < ix.num_buckets {
            let idx = self.next;
            self.next += 1;
            if ix.marker(idx) < DELETED {
                let o = idx * HashIndex::<V>::BUCKET;
                let key: &[u8; 32] = ix.buckets[o..o + KEY_SIZE].try_into().ok()?;
                return Some((key, ix.value_at(idx)));
            }
        }
        None
    }
}

#[inline]
fn u32_at(v: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]])
}

/// The repository index (`index.N`): object id → (segment, offset of the entry header).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NsIndex(HashIndex<8>);

impl NsIndex {
    pub fn new() -> Self {
        NsIndex(HashIndex::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        NsIndex(HashIndex::with_capacity(n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[inline]
    pub fn get(&self, key: &[u8; 32]) -> Option<(u32, u32)> {
        self.0.get(key).map(|v| (u32_at(&v, 0), u32_at(&v, 1)))
    }

    pub fn contains_key(&self, key: &[u8; 32]) -> bool {
        self.0.contains_key(key)
    }

    /// Sets the location of `key`, returning the previous one.
    pub fn insert(
        &mut self,
        key: &[u8; 32],
        segment: u32,
        offset: u32,
    ) -> Result<Option<(u32, u32)>, HashIndexError> {
        let mut v = [0u8; 8];
        v[..4].copy_from_slice(&segment.to_le_bytes());
        v[4..].copy_from_slice(&offset.to_le_bytes());
        Ok(self
            .0
            .insert(key, v)?
            .map(|v| (u32_at(&v, 0), u32_at(&v, 1))))
    }

    pub fn remove(&mut self, key: &[u8; 32]) -> Option<(u32, u32)> {
        self.0.remove(key).map(|v| (u32_at(&v, 0), u32_at(&v, 1)))
    }

    /// `(id, (segment, offset))` in bucket order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 32], (u32, u32))> + '_ {
        self.0
            .iter()
            .map(|(k, v)| (k, (u32_at(&v, 0), u32_at(&v, 1))))
    }

    /// Entries after `marker` (borg's `iteritems(marker)`); `None` if `marker` is absent.
    pub fn iter_after(
        &self,
        marker: &[u8; 32],
    ) -> Option<impl Iterator<Item = (&[u8; 32], (u32, u32))> + '_> {
        Some(
            self.0
                .iter_after(marker)?
                .map(|(k, v)| (k, (u32_at(&v, 0), u32_at(&v, 1)))),
        )
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self, HashIndexError> {
        HashIndex::from_bytes(data).map(NsIndex)
    }

    /// The untyped table.
    pub fn raw(&self) -> &HashIndex<8> {
        &self.0
    }
}

/// One chunks-cache entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChunkEntry {
    pub refcount: u32,
    pub size: u32,
    pub csize: u32,
}

impl ChunkEntry {
    fn to_value(self) -> [u8; 12] {
        let mut v = [0u8; 12];
        v[..4].copy_from_slice(&self.refcount.min(MAX_VALUE).to_le_bytes());
        v[4..8].copy_from_slice(&self.size.to_le_bytes());
        v[8..].copy_from_slice(&self.csize.to_le_bytes());
        v
    }

    fn from_value(v: &[u8; 12]) -> Self {
        ChunkEntry {
            refcount: u32_at(v, 0),
            size: u32_at(v, 1),
            csize: u32_at(v, 2),
        }
    }
}

/// borg's chunks cache (`ChunkIndex`): id → (refcount, size, csize). Refcounts saturate
/// at [`MAX_VALUE`] and then never change again, as in borg.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkIndex(HashIndex<12>);

impl ChunkIndex {
    pub fn new() -> Self {
        ChunkIndex(HashIndex::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        ChunkIndex(HashIndex::with_capacity(n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[inline]
    pub fn get(&self, key: &[u8; 32]) -> Option<ChunkEntry> {
        self.0.get(key).map(|v| ChunkEntry::from_value(&v))
    }

    pub fn contains_key(&self, key: &[u8; 32]) -> bool {
        self.0.contains_key(key)
    }

    /// Sets the entry (a refcount above `MAX_VALUE` is stored as `MAX_VALUE`).
    pub fn insert(
        &mut self,
        key: &[u8; 32],
        entry: ChunkEntry,
    ) -> Result<Option<ChunkEntry>, HashIndexError> {
        Ok(self
            .0
            .insert(key, entry.to_value())?
            .map(|v| ChunkEntry::from_value(&v)))
    }

    pub fn remove(&mut self, key: &[u8; 32]) -> Option<ChunkEntry> {
        self.0.remove(key).map(|v| ChunkEntry::from_value(&v))
    }

    /// Adds one reference (borg's `incref`); returns the updated entry.
    pub fn incref(&mut self, key: &[u8; 32]) -> Option<ChunkEntry> {
        self.add_refs(key, 1)
    }

    /// Drops one reference (borg's `decref`; saturated counts stay). `None` if absent.
    pub fn decref(&mut self, key: &[u8; 32]) -> Option<ChunkEntry> {
        self.0
            .update(key, |v| {
                let rc = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                if rc != MAX_VALUE && rc > 0 {
                    v[..4].copy_from_slice(&(rc - 1).to_le_bytes());
                }
            })
            .map(|v| ChunkEntry::from_value(&v))
    }

    fn add_refs(&mut self, key: &[u8; 32], refs: u32) -> Option<ChunkEntry> {
        self.0
            .update(key, |v| {
                let rc = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                let new = if rc == MAX_VALUE {
                    rc
                } else {
                    (rc as u64 + refs as u64).min(MAX_VALUE as u64) as u32
                };
                v[..4].copy_from_slice(&new.to_le_bytes());
            })
            .map(|v| ChunkEntry::from_value(&v))
    }

    /// borg's `add(key, refs, size, csize)`: adds `refs` references to an existing entry
    /// (sizes are overwritten) or creates it.
    pub fn add(
        &mut self,
        key: &[u8; 32],
        refs: u32,
        size: u32,
        csize: u32,
    ) -> Result<ChunkEntry, HashIndexError> {
        if let Some(mut e) = self.get(key) {
            if e.refcount != MAX_VALUE {
                e.refcount = (e.refcount as u64 + refs as u64).min(MAX_VALUE as u64) as u32;
            }
            e.size = size;
            e.csize = csize;
            self.insert(key, e)?;
            Ok(e)
        } else {
            let e = ChunkEntry {
                refcount: refs.min(MAX_VALUE),
                size,
                csize,
            };
            self.insert(key, e)?;
            Ok(e)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 32], ChunkEntry)> + '_ {
        self.0.iter().map(|(k, v)| (k, ChunkEntry::from_value(&v)))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self, HashIndexError> {
        HashIndex::from_bytes(data).map(ChunkIndex)
    }

    pub fn raw(&self) -> &HashIndex<12> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> [u8; 32] {
        // Spread like a hash: mix i into all bytes.
        let mut k = [0u8; 32];
        let mut s = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x1234_5678;
        for c in k.chunks_mut(8) {
            s ^= s >> 31;
            s = s.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            c.copy_from_slice(&s.to_le_bytes());
        }
        k
    }

    #[test]
    fn empty_table_layout() {
        let t = NsIndex::new();
        let b = t.to_bytes();
        assert_eq!(b.len(), 18 + 1031 * 40);
        assert_eq!(&b[..8], b"BORG_IDX");
        assert_eq!(&b[8..18], &[0, 0, 0, 0, 7, 4, 0, 0, 32, 8]);
        assert_eq!(&b[18..50], &[0u8; 32]);
        assert_eq!(&b[50..58], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn insert_get_remove_grow_shrink() {
        let mut t = NsIndex::new();
        for i in 0..50_000u64 {
            assert_eq!(t.insert(&key(i), i as u32, (i * 3) as u32).unwrap(), None);
        }
        assert_eq!(t.len(), 50_000);
        assert!(t.raw().num_buckets() >= 65537);
        for i in 0..50_000u64 {
            assert_eq!(t.get(&key(i)), Some((i as u32, (i * 3) as u32)));
        }
        assert_eq!(t.insert(&key(7), 1, 2).unwrap(), Some((7, 21)));
        for i in 0..49_990u64 {
            assert!(t.remove(&key(i)).is_some());
        }
        assert_eq!(t.remove(&key(0)), None);
        assert_eq!(t.len(), 10);
        for i in 49_990..50_000u64 {
            assert_eq!(t.get(&key(i)), Some((i as u32, (i * 3) as u32)));
        }
        let back = NsIndex::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.raw().num_buckets(), 1031);
    }

    #[test]
    fn tombstone_churn_stays_bounded() {
        let mut t = ChunkIndex::new();
        for round in 0..20_000u64 {
            t.insert(
                &key(round),
                ChunkEntry {
                    refcount: 1,
                    size: 2,
                    csize: 3,
                },
            )
            .unwrap();
            if round >= 500 {
                t.remove(&key(round - 500)).unwrap();
            }
        }
        assert_eq!(t.len(), 500);
        assert_eq!(t.raw().num_buckets(), 1031);
        for i in 19_500..20_000 {
            assert!(t.contains_key(&key(i)));
        }
    }

    #[test]
    fn canonical_sizes() {
        assert_eq!(canonical_buckets(0), 1031);
        assert_eq!(canonical_buckets(773), 1031);
        assert_eq!(canonical_buckets(774), 2053);
        let mut t = NsIndex::with_capacity(1);
        for i in 0..774 {
            t.insert(&key(i), 0, 8).unwrap();
        }
        let b = t.to_bytes();
        assert_eq!(b.len(), 18 + 2053 * 40);
        assert_eq!(i32::from_le_bytes(b[8..12].try_into().unwrap()), 774);
    }

    #[test]
    fn rejects_malformed() {
        let good = NsIndex::new().to_bytes();
        assert!(matches!(
            NsIndex::from_bytes(&good[..10]),
            Err(HashIndexError::ShortHeader(10))
        ));
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(
            NsIndex::from_bytes(&b),
            Err(HashIndexError::BadMagic(_))
        ));
        let mut b = good.clone();
        b[17] = 12;
        assert!(matches!(
            NsIndex::from_bytes(&b),
            Err(HashIndexError::ValueSize { .. })
        ));
        assert!(matches!(
            ChunkIndex::from_bytes(&good),
            Err(HashIndexError::ValueSize { .. })
        ));
        let mut b = good.clone();
        b.push(0);
        assert!(matches!(
            NsIndex::from_bytes(&b),
            Err(HashIndexError::Length { .. })
        ));
        let mut b = good.clone();
        b[8] = 1;
        assert!(matches!(
            NsIndex::from_bytes(&b),
            Err(HashIndexError::EntryCount { .. })
        ));
        let mut b = good.clone();
        b[12..16].copy_from_slice(&0i32.to_le_bytes());
        assert!(matches!(
            NsIndex::from_bytes(&b),
            Err(HashIndexError::NumBuckets(0))
        ));
        let mut b = good;
        b[18 + 32..18 + 36].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(matches!(
            NsIndex::from_bytes(&b),
            Err(HashIndexError::ReservedValue { .. })
        ));
        let mut t = NsIndex::new();
        assert_eq!(
            t.insert(&key(1), MAX_VALUE + 1, 0),
            Err(HashIndexError::ValueTooLarge(MAX_VALUE + 1))
        );
    }

    #[test]
    fn odd_sizes_and_full_tables_are_rebuilt() {
        // 3 buckets, all full, no empty bucket: legal for borg to read, must not hang us.
        let mut b = Vec::new();
        b.extend_from_slice(b"BORG_IDX");
        b.extend_from_slice(&3i32.to_le_bytes());
        b.extend_from_slice(&3i32.to_le_bytes());
        b.extend_from_slice(&[32, 8]);
        for i in 0..3u64 {
            b.extend_from_slice(&key(i));
            b.extend_from_slice(&(i as u32).to_le_bytes());
            b.extend_from_slice(&8u32.to_le_bytes());
        }
        let t = NsIndex::from_bytes(&b).unwrap();
        for i in 0..3u64 {
            assert_eq!(t.get(&key(i)), Some((i as u32, 8)));
        }
        assert_eq!(t.get(&key(9)), None);
        // A duplicated key is corruption.
        let mut d = b.clone();
        let (a, rest) = d[18..].split_at_mut(40);
        rest[..32].copy_from_slice(&a[..32]);
        assert!(NsIndex::from_bytes(&d).is_err());
    }

    #[test]
    fn chunk_refcounts_saturate() {
        let mut t = ChunkIndex::new();
        let k = key(1);
        t.add(&k, 2, 10, 5).unwrap();
        assert_eq!(t.incref(&k).unwrap().refcount, 3);
        assert_eq!(t.decref(&k).unwrap().refcount, 2);
        t.insert(
            &k,
            ChunkEntry {
                refcount: MAX_VALUE,
                size: 1,
                csize: 1,
            },
        )
        .unwrap();
        assert_eq!(t.incref(&k).unwrap().refcount, MAX_VALUE);
        assert_eq!(t.decref(&k).unwrap().refcount, MAX_VALUE);
        assert_eq!(t.add(&k, 5, 1, 1).unwrap().refcount, MAX_VALUE);
        assert_eq!(t.incref(&key(2)), None);
    }

    #[test]
    fn iteration_and_markers() {
        let mut t = NsIndex::new();
        for i in 0..100 {
            t.insert(&key(i), i as u32, 0).unwrap();
        }
        let all: Vec<_> = t.iter().map(|(k, _)| *k).collect();
        assert_eq!(all.len(), 100);
        let after: Vec<_> = t.iter_after(&all[49]).unwrap().map(|(k, _)| *k).collect();
        assert_eq!(after, all[50..]);
        assert!(t.iter_after(&key(1000)).is_none());
    }
}
