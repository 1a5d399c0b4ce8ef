//! `create`: walk sources in borg's order, read and chunk files on a worker pool, and
//! write one archive. The walker emits one *slot* per item in traversal order; regular
//! files become jobs for the workers and their slot waits for the result, so the item
//! stream keeps borg's order (directory before contents, hardlink master before slaves)
//! while contents are processed in parallel. Lookahead and queued data are bounded.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, Receiver, Sender};

use super::cache::{CacheDir, CacheError, FileEntry, FileKey, FilesCache, FilesCacheMode};
use super::checkpoint::{Checkpointer, Totals};
use super::fsmeta::{self, FsMeta, MetaOptions};
use super::inflight::{Inflight, Tracker};
use super::itemstream::ItemStream;
use super::patterns::PatternMatcher;
use super::store::{ChunkStore, Entry, StoreError};
use crate::format::chunker::ChunkerParams;
use crate::format::compress::Compression;
use crate::format::objects::{ArchiveMeta, Item, ManifestArchive};
use crate::repo::ObjectId;
use crate::session::{Session, SessionError};

mod file;
mod input;
mod whole;

pub use input::{groups_of, GROUP_BYTES};
pub use whole::{FileGroups, GROUP_FILES, READ_BYTES, WHOLE_FILE};

use file::worker_loop;
use input::{chunk_input, InputCtx};

/// Items the walker may run ahead of the slowest unfinished file.
const LOOKAHEAD: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("archive {0:?} already exists")]
    ArchiveExists(String),
    #[error("invalid archive name {0:?}: {1}")]
    BadName(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("archive metadata: {0}")]
    Meta(String),
    #[error("reading {path}: {reason}")]
    Source { path: String, reason: String },
    #[error("interrupted by a signal: the archive was not saved")]
    Interrupted,
}

/// Which timestamp decides "changed while we read it" (borg's `--files-changed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilesChanged {
    Ctime,
    Mtime,
    Disabled,
}

/// What to store for data read from stdin (borg's `--stdin-*`).
#[derive(Clone, Debug)]
pub struct StdinSpec {
    pub name: String,
    pub mode: u32,
    pub user: String,
    pub group: String,
}

/// One tree to back up.
#[derive(Clone, Debug)]
pub struct Root {
    /// Where to read.
    pub fs_path: PathBuf,
    /// The root's own path inside the archive (`.` for a snapshot root).
    pub archive_path: Vec<u8>,
    /// Match patterns on the archive path (proxborg roots) instead of the fs path (create).
    pub match_archive_path: bool,
    /// Store the root directory item itself (false for intermediate slashdot levels).
    pub emit_root: bool,
    /// Archive paths inside this tree that another root provides (mount points): neither
    /// stored nor descended here.
    pub skip: Vec<Vec<u8>>,
    /// Walk the tree (false: store just this path, unmatched by patterns, as borg's
    /// `--paths-from-stdin` does).
    pub recurse: bool,
}

/// A source of one archive: a tree, or a stream stored as one file.
pub enum Source {
    Tree(Root),
    Stream {
        spec: StdinSpec,
        reader: Box<dyn Read + Send>,
    },
    /// A small generated file (e.g. vzdump's `etc/vzdump/pct.conf`), stored as a regular file.
    Memory {
        path: Vec<u8>,
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
    },
}

/// borg's `create` options that shape the archive.
pub struct CreateOptions {
    pub compression: Compression,
    pub chunker: ChunkerParams,
    pub meta: MetaOptions,
    pub atime: bool,
    pub noctime: bool,
    pub read_special: bool,
    pub sparse: bool,
    pub one_file_system: bool,
    pub exclude_caches: bool,
    pub exclude_if_present: Vec<String>,
    pub keep_exclude_tags: bool,
    pub exclude_nodump: bool,
    pub files_cache: FilesCacheMode,
    pub files_changed: FilesChanged,
    pub files_cache_ttl: u8,
    pub matcher: PatternMatcher,
    pub dry_run: bool,
    pub comment: String,
    pub timestamp: Option<DateTime<Utc>>,
    /// Prefix of files-cache keys (e.g. a guest id), so different sources never collide.
    pub cache_tag: Vec<u8>,
    pub cmdline: Vec<Vec<u8>>,
    pub hostname: String,
    pub username: String,
    pub cwd: Vec<u8>,
    /// Map (uid, gid) of stored items (unprivileged container id shifting).
    pub id_map: Option<IdMap>,
    /// Rewrites ACL texts to match `id_map`.
    pub acl_map: Option<AclMap>,
    pub workers: usize,
    /// borg's `--checkpoint-interval`: how often the archive so far is committed as
    /// `NAME.checkpoint` (None: never).
    pub checkpoint_interval: Option<std::time::Duration>,
    /// Set from a signal handler: stop walking and reading, commit nothing.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Last check before the commit (e.g. the exit status of a producer feeding stdin).
    pub pre_commit: Mutex<Option<PreCommit>>,
}

/// Maps (uid, gid) of stored items.
pub type IdMap = Arc<dyn Fn(u32, u32) -> (u32, u32) + Send + Sync>;
/// Rewrites an ACL text.
pub type AclMap = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;
/// A last check before the commit.
pub type PreCommit = Box<dyn FnOnce() -> Result<(), String> + Send>;
/// A files-cache entry to remember after the commit.
type Memo = (FileKey, FileEntry);

/// Per-item status line (borg's `--list` letters).
pub type StatusFn<'a> = &'a (dyn Fn(char, &str) + Sync);

/// What a finished `create` reports.
pub struct CreateResult {
    pub name: String,
    pub id: ObjectId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub stats: Arc<ChunkStore>,
    pub nfiles: u64,
    pub size: u64,
    pub csize: u64,
    pub warnings: Vec<String>,
    pub dry_run: bool,
}

struct FileJob {
    fs_path: PathBuf,
    arch_path: Vec<u8>,
    ino: u64,
    dev: u64,
    hardlink_master: bool,
    special: bool,
}

/// Files a worker processes one after the other, answering once for all: files up to
/// [`whole::WHOLE_FILE`] go in groups, so a group costs one hand-over to a worker and one
/// back to the sink where each file would cost its own (on 30,000 small files: 18,000
/// context switches down to 4,000, 8-12% less CPU), and its files are stored together
/// (see [`whole`]).
struct Job {
    files: Vec<FileJob>,
    reply: Sender<Vec<FileOutcome>>,
}

struct FileOutcome {
    item: Option<Item>,
    status: char,
    warning: Option<String>,
    memorize: Option<Memo>,
    /// The input as tracked for checkpoints, when its contents were read.
    input: Option<u64>,
}

enum Slot {
    Ready(Box<FileOutcome>, Vec<u8>),
    /// The outcomes of a [`Job`], and the archive paths of its files.
    Pending(Receiver<Vec<FileOutcome>>, Vec<Vec<u8>>),
}

struct Shared {
    store: Arc<ChunkStore>,
    /// Inputs being stored, when checkpoints are written.
    inflight: Option<Arc<Inflight>>,
    files: Arc<FilesCache>,
    opts: Arc<CreateOptions>,
    seed: u32,
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// borg's `make_path_safe`: no leading `/` or `../` runs; empty → `.`.
pub fn make_path_safe(p: &[u8]) -> Vec<u8> {
    let mut s = p;
    loop {
        if let Some(r) = s.strip_prefix(b"../") {
            s = r;
        } else if let Some(r) = s.strip_prefix(b"/") {
            s = r;
        } else {
            break;
        }
    }
    if s.is_empty() {
        b".".to_vec()
    } else {
        s.to_vec()
    }
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a == b"." || a.is_empty() {
        return b.to_vec();
    }
    let mut v = a.to_vec();
    if !v.ends_with(b"/") {
        v.push(b'/');
    }
    v.extend_from_slice(b);
    v
}

fn item_from_meta(path: Vec<u8>, m: &FsMeta, opts: &CreateOptions) -> Item {
    let (uid, gid) = match &opts.id_map {
        Some(f) => f(m.uid, m.gid),
        None => (m.uid, m.gid),
    };
    let (user, group) = if opts.meta.numeric_ids || opts.id_map.is_some() {
        (None, None)
    } else {
        (m.user.clone(), m.group.clone())
    };
    let xattrs = if m.xattrs.is_empty() {
        None
    } else {
        Some(
            m.xattrs
                .iter()
                .map(|(k, v)| (k.clone(), if v.is_empty() { None } else { Some(v.clone()) }))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    Item {
        path,
        mode: m.mode,
        uid,
        gid,
        user,
        group,
        mtime: m.mtime_ns,
        ctime: (!opts.noctime).then_some(m.ctime_ns),
        atime: opts.atime.then_some(m.atime_ns),
        xattrs,
        acl_access: m.acl_access.as_ref().map(|a| match &opts.acl_map {
            Some(f) => f(a),
            None => a.clone(),
        }),
        acl_default: m.acl_default.as_ref().map(|a| match &opts.acl_map {
            Some(f) => f(a),
            None => a.clone(),
        }),
        bsdflags: m.bsdflags,
        ..Default::default()
    }
}

/// The walker: borg's `_rec_walk`, emitting slots in traversal order.
struct Walker<'a> {
    sh: Arc<Shared>,
    slots: Sender<Slot>,
    jobs: Sender<Job>,
    /// Files not yet handed to a worker (see [`whole::WHOLE_FILE`]).
    group: FileGroups<FileJob>,
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    skip_inodes: std::collections::HashSet<(u64, u64)>,
    status: StatusFn<'a>,
    warnings: Vec<String>,
}

fn is_cache_tagged(dir: &Path) -> bool {
    super::patterns::is_cachedir(dir)
}

impl Walker<'_> {
    /// Hands the files in `files` to a worker as one job, their slot next in order.
    fn send_job(&mut self, files: Vec<FileJob>) {
        if files.is_empty() {
            return;
        }
        let (tx, rx) = bounded(1);
        let paths = files.iter().map(|f| f.arch_path.clone()).collect();
        let _ = self.slots.send(Slot::Pending(rx, paths));
        let _ = self.jobs.send(Job { files, reply: tx });
    }

    /// Hands the group of small files gathered so far to a worker: before any other slot,
    /// so that slots stay in traversal order, and when the walk pauses.
    fn flush(&mut self) {
        let group = self.group.take();
        self.send_job(group);
    }

    /// An item done on the walker's thread; `input` if its contents were tracked.
    fn ready(&mut self, item: Item, status: char, input: Option<u64>) {
        self.flush();
        let p = item.path.clone();
        let _ = self.slots.send(Slot::Ready(
            Box::new(FileOutcome {
                item: Some(item),
                status,
                warning: None,
                memorize: None,
                input,
            }),
            p,
        ));
    }

    fn warn(&mut self, path: &Path, msg: impl std::fmt::Display) {
        let w = format!("{}: {msg}", path.display());
        (self.status)('E', &path.display().to_string());
        self.warnings.push(w);
    }

    fn match_path(root: &Root, fs_path: &Path, arch: &[u8]) -> String {
        if root.match_archive_path {
            lossy(arch)
        } else {
            lossy(&make_path_safe(
                crate::location::normpath(&fs_path.to_string_lossy()).as_bytes(),
            ))
        }
    }

    fn cancelled(&self) -> bool {
        self.sh
            .opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn walk(
        &mut self,
        root: &Root,
        fs_path: &Path,
        arch: Vec<u8>,
        restrict_dev: Option<u64>,
        is_root: bool,
    ) {
        if self.cancelled() {
            return;
        }
        let opts = self.sh.opts.clone();
        let mpath = Self::match_path(root, fs_path, &arch);
        let mut recurse_excluded_dir = false;
        let decision = opts.matcher.decide(&mpath);
        if !decision.included && root.recurse {
            (self.status)('x', &lossy(&arch));
            if !decision.recurse_dir {
                return;
            }
            recurse_excluded_dir = true;
        }
        let st = match std::fs::symlink_metadata(fs_path) {
            Ok(s) => s,
            Err(e) => {
                self.warn(fs_path, e);
                return;
            }
        };
        if recurse_excluded_dir && !st.is_dir() {
            return;
        }
        if self.skip_inodes.contains(&(st.dev(), st.ino())) {
            return;
        }
        let recurse = root.recurse && restrict_dev.is_none_or(|d| d == st.dev());
        let ft = st.file_type();
        if opts.exclude_nodump && !ft.is_symlink() {
            if let Ok(m) = fsmeta::read_meta(fs_path, &opts.meta) {
                if m.bsdflags.unwrap_or(0) & 1 != 0 {
                    (self.status)('x', &lossy(&arch));
                    return;
                }
            }
        }
        let emit = !is_root || root.emit_root;
        if ft.is_dir() {
            if recurse {
                let mut tags: Vec<String> = Vec::new();
                if opts.exclude_caches && is_cache_tagged(fs_path) {
                    tags.push("CACHEDIR.TAG".into());
                }
                for t in &opts.exclude_if_present {
                    if fs_path.join(t).symlink_metadata().is_ok() {
                        tags.push(t.clone());
                    }
                }
                if !tags.is_empty() {
                    if !recurse_excluded_dir {
                        if opts.keep_exclude_tags {
                            self.emit_dir(fs_path, arch.clone(), emit);
                            for t in tags {
                                let child_arch = join(&arch, t.as_bytes());
                                self.walk(root, &fs_path.join(&t), child_arch, restrict_dev, false);
                            }
                        }
                        (self.status)('x', &lossy(&arch));
                    }
                    return;
                }
            }
            if !recurse_excluded_dir {
                self.emit_dir(fs_path, arch.clone(), emit);
            }
            if recurse {
                // borg's scandir_inorder: by inode number (readdir's d_ino, no stat), which
                // reads a directory's files in on-disk order; hardlinks keep readdir order.
                let mut entries: Vec<(u64, std::ffi::OsString)> = match std::fs::read_dir(fs_path) {
                    Ok(rd) => rd
                        .filter_map(|e| e.ok().map(|e| (e.ino(), e.file_name())))
                        .collect(),
                    Err(e) => {
                        self.warn(fs_path, format!("scandir: {e}"));
                        return;
                    }
                };
                entries.sort_by_key(|(ino, _)| *ino);
                for (_, n) in entries {
                    let child_arch = join(&arch, n.as_bytes());
                    if root.skip.contains(&child_arch) {
                        continue;
                    }
                    self.walk(root, &fs_path.join(&n), child_arch, restrict_dev, false);
                }
            }
            return;
        }
        if !emit {
            return;
        }
        if ft.is_file()
            || (opts.read_special && (ft.is_block_device() || ft.is_char_device() || ft.is_fifo()))
        {
            self.emit_file(fs_path, arch, &st, false);
        } else if ft.is_symlink() {
            if opts.read_special {
                if let Ok(target) = std::fs::metadata(fs_path) {
                    let tt = target.file_type();
                    if tt.is_block_device() || tt.is_char_device() || tt.is_fifo() {
                        self.emit_file(fs_path, arch, &target, true);
                        return;
                    }
                }
            }
            match (
                std::fs::read_link(fs_path),
                fsmeta::read_meta(fs_path, &opts.meta),
            ) {
                (Ok(target), Ok(m)) => {
                    let mut item = item_from_meta(arch, &m, &opts);
                    item.source = Some(target.as_os_str().as_bytes().to_vec());
                    self.ready(item, 's', None);
                }
                (Err(e), _) => self.warn(fs_path, format!("readlink: {e}")),
                (_, Err(e)) => self.warn(fs_path, e),
            }
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let letter = if ft.is_fifo() {
                'f'
            } else if ft.is_char_device() {
                'c'
            } else {
                'b'
            };
            match fsmeta::read_meta(fs_path, &opts.meta) {
                Ok(m) => {
                    let mut item = item_from_meta(arch.clone(), &m, &opts);
                    if !ft.is_fifo() {
                        item.rdev = Some(m.rdev);
                    }
                    let (slave_of, master) = self.hardlink(&st, &arch);
                    match slave_of {
                        Some(src) => {
                            item.source = Some(src);
                            self.ready(item, 'h', None);
                        }
                        None => {
                            item.hardlink_master = Some(master);
                            self.ready(item, letter, None);
                        }
                    }
                }
                Err(e) => self.warn(fs_path, e),
            }
        } else {
            // sockets and doors are not archived (as borg)
            (self.status)('x', &lossy(&arch));
        }
    }

    /// Hardlink bookkeeping: (Some(master path), _) for a slave, (None, is_master) otherwise.
    fn hardlink(&mut self, st: &std::fs::Metadata, arch: &[u8]) -> (Option<Vec<u8>>, bool) {
        if st.nlink() <= 1 {
            return (None, false);
        }
        match self.hardlinks.get(&(st.ino(), st.dev())) {
            Some(src) => (Some(src.clone()), false),
            None => {
                self.hardlinks.insert((st.ino(), st.dev()), arch.to_vec());
                (None, true)
            }
        }
    }

    fn emit_dir(&mut self, fs_path: &Path, arch: Vec<u8>, emit: bool) {
        if !emit {
            return;
        }
        match fsmeta::read_meta(fs_path, &self.sh.opts.meta) {
            Ok(m) => {
                let item = item_from_meta(arch, &m, &self.sh.opts);
                self.ready(item, 'd', None);
            }
            Err(e) => self.warn(fs_path, e),
        }
    }

    fn emit_file(
        &mut self,
        fs_path: &Path,
        arch: Vec<u8>,
        st: &std::fs::Metadata,
        special_via_link: bool,
    ) {
        let special = special_via_link || !st.file_type().is_file();
        let (slave_of, master) = if special_via_link {
            (None, false)
        } else {
            self.hardlink(st, &arch)
        };
        if let Some(src) = slave_of {
            match fsmeta::read_meta(fs_path, &self.sh.opts.meta) {
                Ok(m) => {
                    let mut item = item_from_meta(arch, &m, &self.sh.opts);
                    if special {
                        item.mode = libc::S_IFREG | (item.mode & 0o7777);
                    }
                    item.source = Some(src);
                    self.ready(item, 'h', None);
                }
                Err(e) => self.warn(fs_path, e),
            }
            return;
        }
        let job = FileJob {
            fs_path: fs_path.to_path_buf(),
            arch_path: arch,
            ino: st.ino(),
            dev: st.dev(),
            hardlink_master: master,
            special,
        };
        if special || st.len() > whole::WHOLE_FILE {
            self.flush();
            self.send_job(vec![job]);
            return;
        }
        if let Some(full) = self.group.push(job, st.len()) {
            self.send_job(full);
        }
    }
}

struct SinkOut {
    items: Vec<ObjectId>,
    totals: Totals,
    warnings: Vec<String>,
    memorize: Vec<Memo>,
}

/// Receives the slots in traversal order and writes the item stream (and the
/// checkpoints, when `checkpoints` is set).
fn sink(
    store: &ChunkStore,
    seed: u32,
    slots: Receiver<Slot>,
    status: StatusFn,
    dry_run: bool,
    mut checkpoints: Option<Checkpointer>,
) -> Result<SinkOut, CreateError> {
    let mut stream = ItemStream::new(seed);
    let mut out = SinkOut {
        items: Vec::new(),
        totals: Totals::default(),
        warnings: Vec::new(),
        memorize: Vec::new(),
    };
    let cp = &mut checkpoints;
    while let Some(slot) = next(&slots, cp, &mut stream, &mut out.totals)? {
        let done: Vec<(FileOutcome, Vec<u8>)> = match slot {
            Slot::Ready(o, p) => vec![(*o, p)],
            Slot::Pending(rx, paths) => match next(&rx, cp, &mut stream, &mut out.totals)? {
                Some(outcomes) => outcomes.into_iter().zip(paths).collect(),
                None => continue,
            },
        };
        for (res, path) in done {
            status(
                if dry_run && res.item.is_some() {
                    '-'
                } else {
                    res.status
                },
                &lossy(&path),
            );
            if let Some(w) = res.warning {
                out.warnings.push(w);
            }
            if let Some(m) = res.memorize {
                out.memorize.push(m);
            }
            if let (Some(c), Some(input)) = (cp.as_mut(), res.input) {
                c.finish_input(input, &mut stream, &mut out.totals)?;
            }
            if let Some(item) = res.item {
                out.totals.add(&item);
                if !dry_run {
                    stream.add(&item, store)?;
                }
            }
        }
    }
    if let Some(c) = cp {
        c.finish(&mut stream, &mut out.totals)?;
    }
    if !dry_run {
        out.items = stream.finish(store)?;
    }
    Ok(out)
}

/// The next message from `rx` (None once it is disconnected), writing the checkpoints due
/// while waiting.
fn next<T>(
    rx: &Receiver<T>,
    checkpoints: &mut Option<Checkpointer>,
    stream: &mut ItemStream,
    totals: &mut Totals,
) -> Result<Option<T>, CreateError> {
    match checkpoints {
        Some(c) => c.recv(rx, stream, totals),
        None => Ok(rx.recv().ok()),
    }
}

/// Validates an archive name as borg does (no `/`, at most 255 bytes, not empty).
pub fn check_archive_name(name: &str) -> Result<(), CreateError> {
    if name.is_empty() {
        return Err(CreateError::BadName(name.into(), "empty".into()));
    }
    if name.contains('/') {
        return Err(CreateError::BadName(
            name.into(),
            "must not contain '/'".into(),
        ));
    }
    if name.len() > 255 {
        return Err(CreateError::BadName(
            name.into(),
            "longer than 255 bytes".into(),
        ));
    }
    Ok(())
}

/// Runs one backup into a new archive `name` and commits it. On any error the open
/// transaction is rolled back, so nothing of the failed run (no orphan) is ever committed.
pub fn create(
    env: crate::paths::Env,
    session: &mut Session,
    name: &str,
    sources: Vec<Source>,
    opts: CreateOptions,
    status: StatusFn,
) -> Result<CreateResult, CreateError> {
    let res = create_inner(env, session, name, sources, opts, status);
    if res.is_err() {
        let _ = session.repo.lock().expect("repository lock").rollback();
    }
    res
}

fn create_inner(
    env: crate::paths::Env,
    session: &mut Session,
    name: &str,
    sources: Vec<Source>,
    opts: CreateOptions,
    status: StatusFn,
) -> Result<CreateResult, CreateError> {
    check_archive_name(name)?;
    if session.manifest.archives.contains_key(name.as_bytes()) {
        return Err(CreateError::ArchiveExists(name.into()));
    }
    let start = opts.timestamp.unwrap_or_else(Utc::now);
    let t0 = Instant::now();
    let cache = CacheDir::open(env, &session.repo.lock().expect("repository lock").id())?;
    let known = cache.load_chunks(session)?;
    let before: HashMap<ObjectId, u32> = known.iter().map(|(k, e)| (*k, e.refcount)).collect();
    let trust_before = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX) - 1_000_000_000;
    let files = FilesCache::load(&cache, opts.files_cache, opts.files_cache_ttl, trust_before);
    let seed = session.key.chunk_seed();
    let dry_run = opts.dry_run;
    let store = Arc::new(ChunkStore::new(
        session.repo.clone(),
        session.key.clone(),
        session.nonces.clone(),
        opts.compression.clone(),
        known,
        dry_run,
    ));
    let workers = opts.workers.max(1);
    let interval = opts.checkpoint_interval.filter(|_| !dry_run);
    let sh = Arc::new(Shared {
        inflight: interval.map(|_| Arc::new(Inflight::default())),
        store: store.clone(),
        files: Arc::new(files),
        opts: Arc::new(opts),
        seed,
    });
    let (slot_tx, slot_rx) = bounded::<Slot>(LOOKAHEAD);
    let (job_tx, job_rx) = bounded::<Job>(workers * 4);
    let fatal = Arc::new(Mutex::new(None::<StoreError>));

    let sink_session = &mut *session;
    let (walk_warnings, sink_out) = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (sh, rx, fatal) = (sh.clone(), job_rx.clone(), fatal.clone());
            handles.push(s.spawn(move || worker_loop(sh, rx, fatal)));
        }
        drop(job_rx);
        let store_ref = store.clone();
        let (inflight, opts) = (sh.inflight.clone(), &sh.opts);
        let sink_handle = s.spawn(move || {
            let meta = |n: &str, items, t: &Totals| {
                archive_meta(opts, n, items, start, start + elapsed(t0), t)
            };
            let checkpoints = interval.zip(inflight).map(|(every, inflight)| {
                let name = checkpoint_name(&sink_session.manifest, name);
                Checkpointer::new(sink_session, &store_ref, inflight, every, name, &meta)
                    .with_cancel(opts.cancel.clone())
            });
            sink(&store_ref, seed, slot_rx, status, dry_run, checkpoints)
        });
        let mut walker = Walker {
            sh: sh.clone(),
            slots: slot_tx,
            jobs: job_tx,
            group: FileGroups::default(),
            hardlinks: HashMap::new(),
            skip_inodes: Default::default(),
            status,
            warnings: Vec::new(),
        };
        let mut stream_err = None;
        for src in sources {
            match src {
                Source::Tree(root) => {
                    let restrict = if sh.opts.one_file_system {
                        std::fs::symlink_metadata(&root.fs_path)
                            .ok()
                            .map(|m| m.dev())
                    } else {
                        None
                    };
                    let rp = root.fs_path.clone();
                    let ra = root.archive_path.clone();
                    walker.walk(&root, &rp, ra, restrict, true);
                    walker.flush();
                    if let Ok(m) = std::fs::symlink_metadata(&rp) {
                        walker.skip_inodes.insert((m.dev(), m.ino()));
                    }
                }
                Source::Memory {
                    path,
                    data,
                    mode,
                    uid,
                    gid,
                    mtime_ns,
                } => {
                    let mut item = Item {
                        path,
                        mode: libc::S_IFREG | (mode & 0o7777),
                        uid,
                        gid,
                        mtime: mtime_ns,
                        ctime: Some(mtime_ns),
                        hardlink_master: Some(false),
                        ..Default::default()
                    };
                    let track = sh.inflight.as_ref().map(|f| f.register(item.clone()));
                    let ctx = InputCtx {
                        store: &sh.store,
                        behind: None,
                        track: track.as_ref(),
                        cancel: sh.opts.cancel.as_deref(),
                    };
                    let data = std::io::Cursor::new(data);
                    match chunk_input(&sh.opts.chunker, sh.seed, data, &ctx, |c| c) {
                        Ok(Ok(refs)) => {
                            item.size = Some(refs.iter().map(|c| c.size as u64).sum());
                            item.chunks = Some(refs);
                            walker.ready(item, 'A', track.as_ref().map(Tracker::id));
                        }
                        Ok(Err(e)) => walker.warnings.push(format!("generated file: {e}")),
                        Err(e) => {
                            stream_err = Some(e);
                            break;
                        }
                    }
                }
                Source::Stream { spec, reader } => match stream_item(&sh, &spec, reader) {
                    Ok(Ok((item, input))) => walker.ready(item, 'i', input),
                    Ok(Err(msg)) => walker.warnings.push(msg),
                    Err(e) => {
                        stream_err = Some(e);
                        break;
                    }
                },
            }
        }
        walker.flush();
        let Walker {
            slots,
            jobs,
            warnings,
            ..
        } = walker;
        drop(jobs);
        drop(slots);
        for h in handles {
            let _ = h.join();
        }
        let sink_res = sink_handle.join().expect("sink thread");
        (
            warnings,
            stream_err.map(|e| Err(e.into())).unwrap_or(sink_res),
        )
    });
    if let Some(e) = fatal.lock().expect("fatal lock").take() {
        return Err(e.into());
    }
    if sh
        .opts
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    {
        return Err(CreateError::Interrupted);
    }
    let sink_out = sink_out?;
    let mut warnings = walk_warnings;
    warnings.extend(sink_out.warnings);
    let end = start + elapsed(t0);
    let totals = sink_out.totals;
    let meta = archive_meta(&sh.opts, name, sink_out.items, start, end, &totals);
    if dry_run {
        return Ok(CreateResult {
            name: name.into(),
            id: [0; 32],
            start,
            end,
            stats: store,
            nfiles: totals.nfiles,
            size: totals.size,
            csize: totals.csize,
            warnings,
            dry_run,
        });
    }
    let raw = meta
        .encode_with_tam(session.key.as_ref())
        .map_err(|e| CreateError::Meta(e.to_string()))?;
    let archive_ref = store.store_meta(&raw)?;
    store.writes_ok()?;
    let pre_commit = sh.opts.pre_commit.lock().expect("pre-commit lock").take();
    if let Some(check) = pre_commit {
        check().map_err(|reason| CreateError::Source {
            path: name.into(),
            reason,
        })?;
    }
    session.manifest.archives.insert(
        name.as_bytes().to_vec(),
        ManifestArchive {
            id: archive_ref.id,
            time: meta.time.clone(),
        },
    );
    session.write_manifest()?;
    session.commit()?;
    // caches only after a durable commit: a crash before leaves them describing the old state
    let all = store.entries();
    let share: Vec<(ObjectId, Entry)> = all
        .iter()
        .filter_map(|(id, e)| {
            let d = e.refcount - before.get(id).copied().unwrap_or(0);
            (d > 0).then_some((*id, Entry { refcount: d, ..*e }))
        })
        .collect();
    cache.save_chunks(&session.manifest_id, &all, Some((&archive_ref.id, &share)))?;
    drop((all, share));
    let files = Arc::try_unwrap(sh)
        .ok()
        .and_then(|s| Arc::try_unwrap(s.files).ok())
        .unwrap_or_else(|| FilesCache::new(FilesCacheMode::default(), 20, trust_before));
    files.save(&cache, sink_out.memorize)?;
    Ok(CreateResult {
        name: name.into(),
        id: archive_ref.id,
        start,
        end,
        stats: store,
        nfiles: totals.nfiles,
        size: totals.size,
        csize: totals.csize,
        warnings,
        dry_run,
    })
}

/// The item of a stream's contents, and the stream's input as tracked for checkpoints.
/// The archive object for `name` over the item chunks `items`.
fn archive_meta(
    opts: &CreateOptions,
    name: &str,
    items: Vec<ObjectId>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    t: &Totals,
) -> ArchiveMeta {
    ArchiveMeta {
        version: 1,
        name: name.as_bytes().to_vec(),
        items,
        cmdline: opts.cmdline.clone(),
        hostname: opts.hostname.as_bytes().to_vec(),
        username: opts.username.as_bytes().to_vec(),
        time: crate::format::timefmt::format(start),
        time_end: crate::format::timefmt::format(end),
        comment: opts.comment.as_bytes().to_vec(),
        chunker_params: opts.chunker.archive_value(),
        cwd: Some(opts.cwd.clone()),
        size: t.size,
        csize: t.csize,
        nfiles: t.nfiles,
        size_parts: t.size_parts,
        csize_parts: t.csize_parts,
        nfiles_parts: t.nfiles_parts,
        ..Default::default()
    }
}

/// Time since `t0`; with `--timestamp` an archive keeps its real duration after the
/// given start.
fn elapsed(t0: Instant) -> chrono::Duration {
    chrono::Duration::from_std(t0.elapsed()).unwrap_or_default()
}

/// borg's checkpoint name: `NAME.checkpoint`, or `NAME.checkpoint.N` for the first N
/// not taken.
fn checkpoint_name(manifest: &crate::format::objects::Manifest, name: &str) -> String {
    (0..)
        .map(|i| match i {
            0 => format!("{name}.checkpoint"),
            i => format!("{name}.checkpoint.{i}"),
        })
        .find(|n| !manifest.archives.contains_key(n.as_bytes()))
        .expect("a free checkpoint name")
}

fn stream_item(
    sh: &Shared,
    spec: &StdinSpec,
    reader: Box<dyn Read + Send>,
) -> Result<Result<(Item, Option<u64>), String>, StoreError> {
    let uid = nix::unistd::User::from_name(&spec.user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    let gid = nix::unistd::Group::from_name(&spec.group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    let (Some(uid), Some(gid)) = (uid, gid) else {
        return Ok(Err(format!(
            "{}: no such user {:?} or group {:?}",
            spec.name, spec.user, spec.group
        )));
    };
    let t = Utc::now().timestamp() * 1_000_000_000;
    let mut item = Item {
        path: make_path_safe(spec.name.as_bytes()),
        mode: (spec.mode & 0o107777) | 0o100000,
        uid,
        gid,
        user: Some(spec.user.as_bytes().to_vec()),
        group: Some(spec.group.as_bytes().to_vec()),
        mtime: t,
        atime: Some(t),
        ctime: Some(t),
        hardlink_master: Some(false),
        ..Default::default()
    };
    let track = sh.inflight.as_ref().map(|f| f.register(item.clone()));
    let ctx = InputCtx {
        store: &sh.store,
        behind: None,
        track: track.as_ref(),
        cancel: sh.opts.cancel.as_deref(),
    };
    let chunked = chunk_input(&sh.opts.chunker, sh.seed, reader, &ctx, |c| c)?;
    let refs = match chunked {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("{}: reading stdin: {e}", spec.name))),
    };
    item.size = Some(refs.iter().map(|c| c.size as u64).sum());
    item.chunks = Some(refs);
    Ok(Ok((item, track.as_ref().map(Tracker::id))))
}

/// Archive path of a command-line path, with borg's slashdot hack (`/a/b/./c` → `c`).
pub fn root_for_path(path: &str) -> Root {
    let strip = path.find("/./").filter(|&p| p > 0);
    let norm = crate::location::normpath(path);
    let arch = match strip {
        Some(p) => {
            let prefix = crate::location::normpath(&path[..p]);
            let rest = norm
                .strip_prefix(&prefix)
                .unwrap_or(&norm)
                .trim_start_matches('/');
            if rest.is_empty() {
                b".".to_vec()
            } else {
                rest.as_bytes().to_vec()
            }
        }
        None => make_path_safe(norm.as_bytes()),
    };
    Root {
        fs_path: PathBuf::from(OsStr::from_bytes(norm.as_bytes())),
        archive_path: arch,
        match_archive_path: false,
        emit_root: true,
        skip: Vec::new(),
        recurse: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_safety_like_borg() {
        assert_eq!(make_path_safe(b"/etc/x"), b"etc/x");
        assert_eq!(make_path_safe(b"../../a"), b"a");
        assert_eq!(make_path_safe(b"/"), b".");
        assert_eq!(make_path_safe(b"a/../b"), b"a/../b");
    }

    #[test]
    fn slashdot_roots() {
        assert_eq!(root_for_path("/srv/./data/x").archive_path, b"data/x");
        assert_eq!(root_for_path("/srv/./").archive_path, b".");
        assert_eq!(root_for_path("./").archive_path, b".");
        assert_eq!(root_for_path("src/").archive_path, b"src");
        assert_eq!(root_for_path("/etc").archive_path, b"etc");
    }
}
