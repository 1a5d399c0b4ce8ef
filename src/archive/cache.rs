//! Client-side caches, kept in our own files under the cache dir borg users know
//! (`<cache dir>/proxborg-native/<repo id>/`, honouring `BORG_CACHE_DIR`/`BORG_BASE_DIR`)
//! so borg's own cache beside them stays untouched and correct (borg resyncs on the
//! changed manifest).
//!
//! * chunks: every chunk referenced by the manifest's archives with refcount and sizes,
//!   rebuilt from per-archive lists when the manifest changed (another writer);
//! * files: per file (keyed on source tag + path *inside the archive*, so snapshot
//!   mount paths that change every run still hit) its inode, size, c/mtime and chunks.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh64::xxh64;

use super::store::Entry;
use crate::format::objects::{ArchiveMeta, ChunkRef, ItemStreamDecoder};
use crate::repo::ObjectId;
use crate::session::{Session, SessionError};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading archive {name}: {reason}")]
    Archive { name: String, reason: String },
    #[error(transparent)]
    Session(#[from] SessionError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The per-repository cache directory.
pub struct CacheDir {
    pub dir: PathBuf,
}

const CHUNKS_MAGIC: &[u8; 8] = b"PBNCHNK1";
const FILES_MAGIC: &[u8; 8] = b"PBNFILE2";
const REC: usize = 32 + 12;

fn encode_entries(entries: &[(ObjectId, Entry)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * REC);
    out.extend_from_slice(CHUNKS_MAGIC);
    for (id, e) in entries {
        out.extend_from_slice(id);
        out.extend_from_slice(&e.refcount.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.csize.to_le_bytes());
    }
    let sum = xxh64(&out, 0);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode_entries(data: &[u8]) -> Option<Vec<(ObjectId, Entry)>> {
    if data.len() < 16 || &data[..8] != CHUNKS_MAGIC {
        return None;
    }
    let (body, sum) = data.split_at(data.len() - 8);
    if xxh64(body, 0).to_le_bytes() != sum {
        return None;
    }
    let recs = &body[8..];
    if recs.len() % REC != 0 {
        return None;
    }
    let u = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    Some(
        recs.chunks_exact(REC)
            .map(|r| {
                let mut id = [0u8; 32];
                id.copy_from_slice(&r[..32]);
                (
                    id,
                    Entry {
                        refcount: u(&r[32..36]),
                        size: u(&r[36..40]),
                        csize: u(&r[40..44]),
                    },
                )
            })
            .collect(),
    )
}

fn bump(map: &mut HashMap<ObjectId, Entry>, id: ObjectId, size: u32, csize: u32, n: u32) {
    let e = map.entry(id).or_insert(Entry {
        refcount: 0,
        size,
        csize,
    });
    e.refcount = e.refcount.saturating_add(n);
}

impl CacheDir {
    pub fn open(env: crate::paths::Env, repo_id: &ObjectId) -> Result<Self, CacheError> {
        let root = crate::paths::cache_dir(env).join("proxborg-native");
        let dir = root.join(hex::encode(repo_id));
        crate::fsutil::ensure_private_dir(&dir.join("archives")).map_err(io_err(&dir))?;
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            crate::fsutil::save_file(&tag, crate::paths::CACHE_TAG_CONTENTS)
                .map_err(io_err(&tag))?;
        }
        Ok(CacheDir { dir })
    }

    fn archive_file(&self, id: &ObjectId) -> PathBuf {
        self.dir.join("archives").join(hex::encode(id))
    }

    /// Drops the saved chunk list of an archive that no longer exists.
    pub fn forget_archive(&self, id: &ObjectId) {
        let _ = std::fs::remove_file(self.archive_file(id));
    }

    /// Chunks referenced by one archive (its metadata and item chunks included).
    pub fn archive_chunks(
        &self,
        session: &Session,
        name: &[u8],
        id: &ObjectId,
    ) -> Result<Vec<(ObjectId, Entry)>, CacheError> {
        let path = self.archive_file(id);
        if let Ok(data) = std::fs::read(&path) {
            if let Some(v) = decode_entries(&data) {
                return Ok(v);
            }
        }
        let aerr = |reason: String| CacheError::Archive {
            name: String::from_utf8_lossy(name).into_owned(),
            reason,
        };
        let mut map: HashMap<ObjectId, Entry> = HashMap::new();
        let envelope = session
            .repo
            .lock()
            .expect("repository lock")
            .get(id)
            .map_err(SessionError::from)?;
        let raw = session.open_object(id, &envelope)?;
        bump(&mut map, *id, raw.len() as u32, envelope.len() as u32, 1);
        let (meta, _) =
            ArchiveMeta::decode(&raw, session.key.as_ref()).map_err(|e| aerr(e.to_string()))?;
        let mut dec = ItemStreamDecoder::new();
        for iid in &meta.items {
            let env = session
                .repo
                .lock()
                .expect("repository lock")
                .get(iid)
                .map_err(SessionError::from)?;
            let plain = session.open_object(iid, &env)?;
            bump(&mut map, *iid, plain.len() as u32, env.len() as u32, 1);
            dec.feed(&plain);
            while let Some(item) = dec.next_item().map_err(|e| aerr(e.to_string()))? {
                for c in item.chunks.iter().flatten() {
                    bump(&mut map, c.id, c.size, c.csize, 1);
                }
            }
        }
        dec.finish().map_err(|e| aerr(e.to_string()))?;
        let v: Vec<_> = map.into_iter().collect();
        crate::fsutil::save_file(&path, &encode_entries(&v)).map_err(io_err(&path))?;
        Ok(v)
    }

    /// The chunks index for the session's current manifest, resynced if another writer
    /// (borg, or an interrupted run of ours) changed the repository.
    pub fn load_chunks(&self, session: &Session) -> Result<HashMap<ObjectId, Entry>, CacheError> {
        let state = self.dir.join("manifest");
        let chunks = self.dir.join("chunks");
        if std::fs::read_to_string(&state).ok().as_deref()
            == Some(hex::encode(session.manifest_id).as_str())
        {
            if let Some(v) = std::fs::read(&chunks)
                .ok()
                .as_deref()
                .and_then(decode_entries)
            {
                return Ok(v.into_iter().collect());
            }
        }
        let mut map: HashMap<ObjectId, Entry> = HashMap::new();
        let mut live = HashSet::new();
        for (name, a) in &session.manifest.archives {
            live.insert(hex::encode(a.id));
            for (id, e) in self.archive_chunks(session, name, &a.id)? {
                bump(&mut map, id, e.size, e.csize, e.refcount);
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("archives")) {
            for f in rd.flatten() {
                if !live.contains(f.file_name().to_string_lossy().as_ref()) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        Ok(map)
    }

    /// Saves the chunks index for a committed manifest, plus the new archive's share.
    pub fn save_chunks(
        &self,
        manifest_id: &ObjectId,
        all: &[(ObjectId, Entry)],
        new_archive: Option<(&ObjectId, &[(ObjectId, Entry)])>,
    ) -> Result<(), CacheError> {
        if let Some((aid, entries)) = new_archive {
            let p = self.archive_file(aid);
            crate::fsutil::save_file(&p, &encode_entries(entries)).map_err(io_err(&p))?;
        }
        let chunks = self.dir.join("chunks");
        crate::fsutil::save_file(&chunks, &encode_entries(all)).map_err(io_err(&chunks))?;
        let state = self.dir.join("manifest");
        crate::fsutil::save_file(&state, hex::encode(manifest_id).as_bytes())
            .map_err(io_err(&state))
    }
}

/// A files-cache key: a hash of the source tag and the archived path, as borg keys its
/// files cache by a hash of the path. A fixed 16 bytes instead of the path keeps the cache
/// small in memory (it holds an entry for every file of the run until the commit).
pub type FileKey = [u8; 16];

/// The files-cache key of `path` archived from the source `tag`.
pub fn file_key(tag: &[u8], path: &[u8]) -> FileKey {
    let h = blake2b_simd::Params::new()
        .hash_length(16)
        .to_state()
        .update(tag)
        .update(b"\0")
        .update(path)
        .finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(h.as_bytes());
    k
}

/// What the files cache remembers about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub inode: u64,
    pub size: u64,
    pub cmtime_ns: i64,
    pub age: u8,
    pub chunks: Vec<ChunkRef>,
}

impl FileEntry {
    /// The entry of a file read or confirmed in this run.
    pub fn fresh(inode: u64, size: u64, cmtime_ns: i64, chunks: Vec<ChunkRef>) -> Self {
        FileEntry {
            inode,
            size,
            cmtime_ns,
            age: 0,
            chunks,
        }
    }
}

/// borg's `--files-cache` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilesCacheMode {
    pub ctime: bool,
    pub mtime: bool,
    pub size: bool,
    pub inode: bool,
    pub rechunk: bool,
    pub disabled: bool,
}

impl std::str::FromStr for FilesCacheMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = FilesCacheMode {
            ctime: false,
            mtime: false,
            size: false,
            inode: false,
            rechunk: false,
            disabled: false,
        };
        for part in s.split(',') {
            match part {
                "ctime" => m.ctime = true,
                "mtime" => m.mtime = true,
                "size" => m.size = true,
                "inode" => m.inode = true,
                "rechunk" => m.rechunk = true,
                "disabled" => m.disabled = true,
                other => return Err(format!("invalid files cache mode element {other:?} in {s:?} (use ctime,mtime,size,inode,rechunk,disabled)")),
            }
        }
        if m.ctime && m.mtime {
            return Err(format!(
                "files cache mode {s:?}: ctime and mtime are mutually exclusive"
            ));
        }
        if m.disabled && (m.ctime || m.mtime || m.size || m.inode || m.rechunk) {
            return Err(format!(
                "files cache mode {s:?}: disabled excludes every other mode"
            ));
        }
        Ok(m)
    }
}

impl Default for FilesCacheMode {
    fn default() -> Self {
        "ctime,size,inode".parse().expect("valid default")
    }
}

/// The files cache with borg's ageing (`BORG_FILES_CACHE_TTL`, default 20 runs).
///
/// A file read in this run is only trusted later if its c/mtime is older than
/// `trust_before` (the run's start minus a second): a file changed again within the same
/// timestamp tick after we read it would otherwise look unchanged. borg instead drops the
/// entries with the run's newest c/mtime, which re-reads the newest file on every run.
pub struct FilesCache {
    entries: HashMap<FileKey, FileEntry>,
    mode: FilesCacheMode,
    ttl: u8,
    trust_before: i64,
}

impl FilesCache {
    pub fn new(mode: FilesCacheMode, ttl: u8, trust_before: i64) -> Self {
        FilesCache {
            entries: HashMap::new(),
            mode,
            ttl,
            trust_before,
        }
    }

    pub fn mode(&self) -> FilesCacheMode {
        self.mode
    }

    /// Loads the cache file (missing or damaged → empty); every entry ages by one run.
    pub fn load(cache: &CacheDir, mode: FilesCacheMode, ttl: u8, trust_before: i64) -> Self {
        let mut fc = FilesCache::new(mode, ttl, trust_before);
        if mode.disabled {
            return fc;
        }
        if let Ok(data) = std::fs::read(cache.dir.join("files")) {
            if let Some(entries) = decode_files(&data) {
                for (k, mut e) in entries {
                    e.age = e.age.saturating_add(1);
                    fc.entries.insert(k, e);
                }
            }
        }
        fc
    }

    pub fn cmtime(&self, ctime_ns: i64, mtime_ns: i64) -> i64 {
        if self.mode.mtime {
            mtime_ns
        } else {
            ctime_ns
        }
    }

    /// The cached chunks if the file is unchanged per the mode.
    pub fn lookup(
        &self,
        key: &FileKey,
        inode: u64,
        size: u64,
        cmtime_ns: i64,
    ) -> Option<&[ChunkRef]> {
        if self.mode.disabled || self.mode.rechunk {
            return None;
        }
        let e = self.entries.get(key)?;
        if (self.mode.size && e.size != size)
            || (self.mode.inode && e.inode != inode)
            || ((self.mode.ctime || self.mode.mtime) && e.cmtime_ns != cmtime_ns)
        {
            return None;
        }
        Some(&e.chunks)
    }

    /// Writes the cache for the next run: `fresh`, the files read or confirmed in this run
    /// (age 0; those changed too recently to be trusted are left out), and the loaded
    /// entries they do not replace, below the TTL. Encoded straight from `fresh` and the
    /// loaded table, without a table of all entries (for a large tree, that table and the
    /// slack of its growth were the largest allocation of the run).
    pub fn save(
        self,
        cache: &CacheDir,
        fresh: Vec<(FileKey, FileEntry)>,
    ) -> Result<(), CacheError> {
        if self.mode.disabled {
            return Ok(());
        }
        let data = self.encode(&fresh);
        let p = cache.dir.join("files");
        crate::fsutil::save_file(&p, &data).map_err(io_err(&p))
    }

    /// The cache file [`save`](Self::save) writes.
    fn encode(mut self, fresh: &[(FileKey, FileEntry)]) -> Vec<u8> {
        for (k, _) in fresh {
            self.entries.remove(k);
        }
        let trusted = |e: &FileEntry| e.cmtime_ns < self.trust_before;
        let keep = fresh
            .iter()
            .filter(|(_, e)| trusted(e))
            .map(|(k, e)| (k, e))
            .chain(self.entries.iter().filter(|(_, e)| e.age < self.ttl));
        encode_files(keep.clone().map(|(_, e)| encoded_len(e)).sum(), keep)
    }
}

/// Bytes of one entry in the cache file.
fn encoded_len(e: &FileEntry) -> usize {
    16 + 8 + 8 + 8 + 1 + 4 + e.chunks.len() * (32 + 4 + 4)
}

/// The cache file of `entries`, `len` bytes of them (see [`encoded_len`]).
fn encode_files<'a>(
    len: usize,
    entries: impl Iterator<Item = (&'a FileKey, &'a FileEntry)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILES_MAGIC.len() + len + 8);
    out.extend_from_slice(FILES_MAGIC);
    for (k, e) in entries {
        out.extend_from_slice(k);
        out.extend_from_slice(&e.inode.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.cmtime_ns.to_le_bytes());
        out.push(e.age);
        out.extend_from_slice(&(e.chunks.len() as u32).to_le_bytes());
        for c in &e.chunks {
            out.extend_from_slice(&c.id);
            out.extend_from_slice(&c.size.to_le_bytes());
            out.extend_from_slice(&c.csize.to_le_bytes());
        }
    }
    let sum = xxh64(&out, 0);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn decode_files(data: &[u8]) -> Option<Vec<(FileKey, FileEntry)>> {
    if data.len() < 16 || &data[..8] != FILES_MAGIC {
        return None;
    }
    let (body, sum) = data.split_at(data.len() - 8);
    if xxh64(body, 0).to_le_bytes() != sum {
        return None;
    }
    let mut r = &body[8..];
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (a, b) = r.split_at(n);
        r = b;
        Some(a)
    };
    let mut out = Vec::new();
    while let Some(key) = take(16) {
        let key: FileKey = key.try_into().ok()?;
        let inode = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let cmtime_ns = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let age = take(1)?[0];
        let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut chunks = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let mut id = [0u8; 32];
            id.copy_from_slice(take(32)?);
            let size = u32::from_le_bytes(take(4)?.try_into().ok()?);
            let csize = u32::from_le_bytes(take(4)?.try_into().ok()?);
            chunks.push(ChunkRef { id, size, csize });
        }
        out.push((
            key,
            FileEntry {
                inode,
                size,
                cmtime_ns,
                age,
                chunks,
            },
        ));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_detect_damage() {
        let v = vec![(
            [7u8; 32],
            Entry {
                refcount: 3,
                size: 10,
                csize: 20,
            },
        )];
        let b = encode_entries(&v);
        assert_eq!(decode_entries(&b).unwrap(), v);
        let mut bad = b.clone();
        bad[10] ^= 1;
        assert!(decode_entries(&bad).is_none());
        assert!(decode_entries(&b[..b.len() - 1]).is_none());
    }

    fn entry(inode: u64, size: u64, cmtime_ns: i64, age: u8, chunks: &[ChunkRef]) -> FileEntry {
        FileEntry {
            inode,
            size,
            cmtime_ns,
            age,
            chunks: chunks.to_vec(),
        }
    }

    #[test]
    fn files_cache_modes_and_ageing() {
        let mut fc = FilesCache::new(FilesCacheMode::default(), 20, 200);
        let c = vec![ChunkRef {
            id: [1; 32],
            size: 5,
            csize: 9,
        }];
        let (a, b) = (file_key(b"", b"a"), file_key(b"", b"b"));
        assert_ne!(a, b);
        assert_ne!(
            file_key(b"101", b"a"),
            a,
            "the source tag is part of the key"
        );
        fc.entries.insert(a, entry(1, 5, 100, 1, &c));
        assert_eq!(fc.lookup(&a, 1, 5, 100), Some(&c[..]));
        assert_eq!(fc.lookup(&a, 9, 5, 100), None);
        assert_eq!(fc.lookup(&a, 1, 6, 100), None);
        assert_eq!(fc.lookup(&a, 1, 5, 101), None);
        let fresh = vec![(b, entry(2, 5, 200, 0, &c))];
        let back = decode_files(&fc.encode(&fresh)).unwrap();
        assert_eq!(
            back.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [a],
            "an entry changed too recently is not trusted"
        );
        assert!("ctime,mtime".parse::<FilesCacheMode>().is_err());
        assert!("mtime,size".parse::<FilesCacheMode>().unwrap().mtime);
        assert!("bogus".parse::<FilesCacheMode>().is_err());
    }

    #[test]
    fn saved_cache_holds_fresh_entries_and_loaded_ones_they_do_not_replace() {
        let c = [ChunkRef {
            id: [2; 32],
            size: 7,
            csize: 8,
        }];
        let mut fc = FilesCache::new(FilesCacheMode::default(), 3, 1000);
        let [kept, replaced, expired, new] = [b"k", b"r", b"e", b"n"].map(|p| file_key(b"", p));
        fc.entries.insert(kept, entry(1, 1, 10, 2, &c));
        fc.entries.insert(replaced, entry(2, 2, 20, 1, &c));
        fc.entries.insert(expired, entry(3, 3, 30, 3, &c));
        let fresh = vec![
            (replaced, entry(4, 4, 40, 0, &c)),
            (new, entry(5, 5, 50, 0, &c[..0])),
        ];
        let data = fc.encode(&fresh);
        let mut back = decode_files(&data).unwrap();
        back.sort_by_key(|(k, _)| *k);
        let mut want = vec![
            (kept, entry(1, 1, 10, 2, &c)),
            (replaced, entry(4, 4, 40, 0, &c)),
            (new, entry(5, 5, 50, 0, &[])),
        ];
        want.sort_by_key(|(k, _)| *k);
        assert_eq!(back, want);
        assert_eq!(data.capacity(), data.len(), "reserved exactly");
    }
}
