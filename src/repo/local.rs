//! The local repository engine: borg 1.x's `Repository` + `LoggedIO` on a directory.
//!
//! Everything borg reads is written the way borg 1.4 writes it — segments with PUT /
//! DELETE / COMMIT entries, `index.T`, `hints.T`, `integrity.T`, the `config` INI, the
//! `nonce` file and borg's lock directory + roster — so that borg 1.2 and 1.4 open our
//! repositories without replaying segments, compact them trusting our hints, and can
//! keep writing to them (and we to theirs).
//!
//! Transactions: writes go to segments numbered after the last committed one (`T`);
//! `commit` appends a COMMIT in a segment of its own, syncs, then writes the index files
//! for the new `T`. Until then nothing is visible: segments above `T` are deleted by the
//! next writer (or by our `rollback`/drop).

mod check;
mod compact;
mod config;
mod fsio;
mod lock;
mod segments;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::format::hashindex::{self, NsIndex};
use crate::format::hints::{self, Hints};
use crate::format::integrity::{self, IntegrityData, IntegrityFile};

use super::{ObjectId, RepoError, Repository, Result, MANIFEST_ID};
use config::{parse_bool, parse_file_size, parse_int, Config};
use lock::{Lock, LockError};
use segments::{Layout, SegError, Writer};

pub use check::{CheckLevel, CheckLog};
pub use compact::CompactStats;
pub use lock::host_id;
pub use segments::{MAX_DATA_SIZE, MAX_OBJECT_SIZE};

/// `REPOSITORY_README`.
pub const README: &str =
    "This is a Borg Backup repository.\nSee https://borgbackup.readthedocs.io/\n";
/// `DEFAULT_SEGMENTS_PER_DIR`.
pub const DEFAULT_SEGMENTS_PER_DIR: u32 = 1000;
/// `DEFAULT_MAX_SEGMENT_SIZE` (500 MiB).
pub const DEFAULT_MAX_SEGMENT_SIZE: u64 = 500 * 1024 * 1024;

/// How to create a repository (`borg init` / `Repository(create=True)`).
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub append_only: bool,
    /// Bytes; `None` or 0 = no quota.
    pub storage_quota: Option<u64>,
    /// Create missing parent directories.
    pub make_parent_dirs: bool,
}

/// How to open a repository.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Writers need the exclusive lock; readers take a shared one.
    pub exclusive: bool,
    /// How long to wait for a lock held by someone else (borg's `--lock-wait`).
    pub lock_wait: Duration,
    /// Force append-only mode (OR-ed with the config setting).
    pub append_only: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            exclusive: true,
            lock_wait: Duration::from_secs(1),
            append_only: false,
        }
    }
}

/// Index + hints of the committed transaction, or of the open one while writing.
struct State {
    index: NsIndex,
    /// Loaded only once something is written (readers never need them).
    hints: Option<Hints>,
    /// The committed transaction this state belongs to (or started from).
    transaction_id: Option<u32>,
}

/// A borg 1.x repository in a local directory.
pub struct LocalRepository {
    path: PathBuf,
    layout: Layout,
    lock: Option<Lock>,
    config: Config,
    id: ObjectId,
    max_segment_size: u64,
    additional_free_space: u64,
    append_only: bool,
    storage_quota: u64,
    state: Option<State>,
    active_txn: bool,
    /// Number of the next segment to open (borg's `io.segment`).
    next_segment: u32,
    writer: Option<Writer>,
    /// Quota exceeded: the transaction can only be rolled back.
    doomed: Option<(u64, u64)>,
    read_fds: HashMap<u32, File>,
    warnings: Vec<String>,
    /// Segments removed by compaction since the last `compact` report.
    compacted_segments: usize,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> RepoError {
    let c = context.into();
    move |e| RepoError::io(c, e)
}

fn lock_err(e: LockError) -> RepoError {
    match e {
        LockError::Timeout(p, who) => RepoError::LockTimeout(p, who),
        LockError::Failed(path, reason) => RepoError::LockFailed { path, reason },
    }
}

/// borg's `is_repository`: a README mentioning a Borg repository.
fn is_repository(path: &Path) -> bool {
    use std::io::Read;
    let Ok(f) = File::open(path.join("README")) else {
        return false;
    };
    let mut head = Vec::with_capacity(100);
    if f.take(100).read_to_end(&mut head).is_err() {
        return false;
    }
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    has(b"Borg Backup repository") || has(b"Borg repository")
}

/// borg's `check_can_create_repository`: nothing but an empty directory at `path`, and
/// no repository in any parent.
fn check_can_create(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(RepoError::io(
                format!("cannot access {}", path.display()),
                e,
            ))
        }
        Ok(md) => {
            if is_repository(path) || !md.is_dir() {
                return Err(RepoError::AlreadyExists(path.to_path_buf()));
            }
            let mut rd =
                fs::read_dir(path).map_err(io_err(format!("cannot list {}", path.display())))?;
            if rd.next().is_some() {
                return Err(RepoError::AlreadyExists(path.to_path_buf()));
            }
        }
    }
    let mut p = path;
    while let Some(parent) = p.parent() {
        if is_repository(parent) {
            return Err(RepoError::AlreadyExists(parent.to_path_buf()));
        }
        p = parent;
    }
    Ok(())
}

/// Writes `config` like borg's `save_config`: hard link the old one to `config.old`,
/// replace atomically, then securely erase the old copy (it may hold an old repokey).
fn save_config(repo: &Path, cfg: &Config) -> Result<()> {
    let config = repo.join("config");
    let old = repo.join("config.old");
    if old.is_file() {
        let _ = fsio::secure_erase(&old);
    }
    if config.is_file() {
        let _ = fs::hard_link(&config, &old);
    }
    fsio::save_file(&config, cfg.to_text().as_bytes())
        .map_err(io_err(format!("cannot write {}", config.display())))?;
    if old.is_file() {
        fsio::secure_erase(&old).map_err(io_err(format!("cannot erase {}", old.display())))?;
    }
    Ok(())
}

impl LocalRepository {
    /// Creates an empty repository at `path` (README, config, data/) and opens it with
    /// the exclusive lock.
    pub fn create(path: impl AsRef<Path>, opts: CreateOptions) -> Result<Self> {
        let path = std::path::absolute(path.as_ref())
            .map_err(io_err("cannot resolve the repository path"))?;
        check_can_create(&path)?;
        if opts.make_parent_dirs {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .map_err(io_err(format!("cannot create {}", parent.display())))?;
            }
        }
        if !path.exists() {
            fs::create_dir(&path).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    RepoError::ParentPathDoesNotExist(path.clone())
                } else {
                    RepoError::io(format!("cannot create {}", path.display()), e)
                }
            })?;
        }
        fs::write(path.join("README"), README).map_err(io_err("cannot write README"))?;
        fs::create_dir(path.join("data")).map_err(io_err("cannot create data/"))?;
        let mut id = [0u8; 32];
        getrandom::getrandom(&mut id)
            .map_err(|e| RepoError::Other(format!("no randomness for the repository id: {e}")))?;
        let mut cfg = Config::default();
        let r = "repository";
        cfg.set(r, "version", "1");
        cfg.set(r, "segments_per_dir", &DEFAULT_SEGMENTS_PER_DIR.to_string());
        cfg.set(r, "max_segment_size", &DEFAULT_MAX_SEGMENT_SIZE.to_string());
        cfg.set(r, "append_only", if opts.append_only { "1" } else { "0" });
        cfg.set(
            r,
            "storage_quota",
            &opts.storage_quota.unwrap_or(0).to_string(),
        );
        cfg.set(r, "additional_free_space", "0");
        cfg.set(r, "id", &hex::encode(id));
        save_config(&path, &cfg)?;
        Self::open(
            &path,
            OpenOptions {
                exclusive: true,
                lock_wait: Duration::from_secs(1),
                append_only: opts.append_only,
            },
        )
    }

    /// Opens an existing repository: takes the lock, reads and validates `config`.
    /// Index and hints are loaded (and rebuilt if needed) on first use.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Self> {
        let path = std::path::absolute(path.as_ref())
            .map_err(io_err("cannot resolve the repository path"))?;
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RepoError::DoesNotExist(path))
            }
            Err(e) => {
                return Err(RepoError::io(
                    format!("cannot access {}", path.display()),
                    e,
                ))
            }
            Ok(md) if !md.is_dir() => {
                return Err(RepoError::InvalidRepository(path, "not a directory".into()))
            }
            Ok(_) => {}
        }
        let lock = Lock::acquire(&path, opts.exclusive, Some(opts.lock_wait)).map_err(lock_err)?;
        let invalid = |msg: String| RepoError::InvalidRepository(path.clone(), msg);
        let text = match fs::read_to_string(path.join("config")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid("no config file".into()))
            }
            Err(e) => return Err(RepoError::io("cannot read the repository config", e)),
        };
        let config = Config::parse(&text).map_err(|e| invalid(format!("config: {e}")))?;
        if !config.has_section("repository") {
            return Err(invalid("no repository section found in config".into()));
        }
        let get = |k: &str| config.get("repository", k);
        let need = |k: &str| get(k).ok_or_else(|| invalid(format!("config has no {k}")));
        let version = parse_int(need("version")?)
            .ok_or_else(|| invalid("config version is not a number".into()))?;
        if version != 1 {
            return Err(invalid(format!(
                "repository version {version} is not supported by this borg version"
            )));
        }
        let max_segment_size = parse_file_size(need("max_segment_size")?)
            .ok_or_else(|| invalid("bad max_segment_size".into()))?;
        if max_segment_size >= segments::MAX_SEGMENT_SIZE_LIMIT {
            return Err(invalid(format!(
                "max_segment_size >= {}",
                segments::MAX_SEGMENT_SIZE_LIMIT
            )));
        }
        let segments_per_dir = parse_int(need("segments_per_dir")?)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid("bad segments_per_dir".into()))?;
        let additional_free_space = match get("additional_free_space") {
            Some(v) => {
                parse_file_size(v).ok_or_else(|| invalid("bad additional_free_space".into()))?
            }
            None => 0,
        };
        let append_only = opts.append_only
            || match get("append_only") {
                Some(v) => parse_bool(v)
                    .ok_or_else(|| invalid(format!("append_only: not a boolean: {v:?}")))?,
                None => false,
            };
        let storage_quota = match get("storage_quota") {
            Some(v) => parse_file_size(v).ok_or_else(|| invalid("bad storage_quota".into()))?,
            None => 0,
        };
        let id: ObjectId = hex::decode(need("id")?.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("config id is not 64 hex digits".into()))?;
        let layout = Layout {
            repo: path.clone(),
            segments_per_dir,
        };
        if let Some(&latest) = layout
            .list()
            .map_err(io_err("cannot list segments"))?
            .last()
        {
            if layout
                .magic(latest)
                .map_err(io_err("cannot read a segment"))?
                == *segments::ATTIC_MAGIC
            {
                return Err(invalid(
                    "Attic repository detected; run borg upgrade".into(),
                ));
            }
        }
        Ok(LocalRepository {
            path,
            layout,
            lock: Some(lock),
            config,
            id,
            max_segment_size,
            additional_free_space,
            append_only,
            storage_quota,
            state: None,
            active_txn: false,
            next_segment: 0,
            writer: None,
            doomed: None,
            read_fds: HashMap::new(),
            warnings: Vec::new(),
            compacted_segments: 0,
        })
    }

    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last committed transaction (segment number), rebuilding the index if needed.
    pub fn transaction_id(&mut self) -> Result<Option<u32>> {
        self.ensure_index()?;
        Ok(self.state.as_ref().and_then(|s| s.transaction_id))
    }

    /// Storage quota in bytes (0 = none) and the current use.
    pub fn storage_quota(&mut self) -> Result<(u64, u64)> {
        self.prepare_hints()?;
        let used = self
            .state
            .as_ref()
            .and_then(|s| s.hints.as_ref())
            .map_or(0, |h| h.storage_quota_use);
        Ok((self.storage_quota, used))
    }

    /// Warnings borg would have logged (index rebuilt, replays, …), oldest first.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Rolls back an open transaction and releases the lock, reporting errors that
    /// dropping would swallow.
    pub fn close(mut self) -> Result<()> {
        if self.active_txn {
            self.rollback()?;
        }
        if let Some(mut l) = self.lock.take() {
            l.release()
                .map_err(io_err("cannot release the repository lock"))?;
        }
        Ok(())
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    fn seg_err(&self, segment: Option<u32>, e: SegError) -> RepoError {
        match e {
            SegError::Io(e) => RepoError::io(
                match segment {
                    Some(s) => format!("segment {}", self.layout.filename(s).display()),
                    None => "reading segments".to_string(),
                },
                e,
            ),
            SegError::Integrity(detail) => RepoError::Integrity {
                path: segment.map_or_else(|| self.layout.data_dir(), |s| self.layout.filename(s)),
                detail,
            },
        }
    }

    fn require_exclusive(&self, what: &str) -> Result<()> {
        match &self.lock {
            Some(l) if l.got_exclusive_lock() => Ok(()),
            _ => Err(RepoError::LockFailed {
                path: self.path.join("lock.exclusive"),
                reason: format!("{what} needs the exclusive repository lock (opened shared)"),
            }),
        }
    }

    /// Replays need the exclusive lock; a shared holder upgrades, as borg does.
    fn ensure_exclusive_for_replay(&mut self) -> Result<()> {
        match self.lock.as_mut() {
            Some(l) if l.got_exclusive_lock() => Ok(()),
            Some(l) => l.upgrade().map_err(lock_err),
            None => Err(RepoError::LockFailed {
                path: self.path.join("lock.exclusive"),
                reason: "repository is closed".into(),
            }),
        }
    }

    /// Highest `index.N` with non-zero size.
    fn index_transaction_id(&self) -> Result<Option<u32>> {
        let mut best = None;
        for e in fs::read_dir(&self.path).map_err(io_err("cannot list the repository"))? {
            let e = e.map_err(io_err("cannot list the repository"))?;
            let name = e.file_name();
            let Some(n) = name.to_str().and_then(|s| s.strip_prefix("index.")) else {
                continue;
            };
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(n) = n.parse::<u32>() else { continue };
            if e.metadata().map(|m| m.len() != 0).unwrap_or(false) {
                best = best.max(Some(n));
            }
        }
        Ok(best)
    }

    fn segments_transaction_id(&self) -> Result<Option<u32>> {
        self.layout
            .transaction_id()
            .map_err(|e| self.seg_err(None, e))
    }

    /// borg's `check_transaction`: replays segments when the index lags behind (or is
    /// ahead of) the last committed segment.
    fn check_transaction(&mut self) -> Result<()> {
        let index_txn = self.index_transaction_id()?;
        let seg_txn = self.segments_transaction_id()?;
        match (index_txn, seg_txn) {
            (Some(_), None) => Err(RepoError::Integrity {
                path: self.path.clone(),
                detail: "inconsistency detected: an index exists but no committed segment \
                         (likely beyond repair); run borg check"
                    .into(),
            }),
            (i, Some(s)) if i != Some(s) => {
                let from = i.filter(|&i| i < s);
                self.replay_segments(from, s)
            }
            _ => Ok(()),
        }
    }

    fn get_transaction_id(&mut self) -> Result<Option<u32>> {
        self.check_transaction()?;
        self.index_transaction_id()
    }

    /// Reads `integrity.T` for `index`/`hints`. `Ok(None)`: nothing to verify against.
    fn read_integrity(
        &mut self,
        t: u32,
        which: &str,
    ) -> std::result::Result<Option<IntegrityData>, String> {
        let name = format!("integrity.{t}");
        let data = match fs::read(self.path.join(&name)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let f = IntegrityFile::decode(&data).map_err(|e| format!("{name}: {e}"))?;
        if f.version != 2 {
            self.warn(format!(
                "Unknown integrity data version {} in {name}",
                f.version
            ));
            return Ok(None);
        }
        let json = match which {
            "index" => f.index,
            _ => f.hints,
        }
        .ok_or_else(|| format!("{name} has no {which} entry"))?;
        let file = format!("{which}.{t}");
        match IntegrityData::parse(&file, &json).map_err(|e| e.to_string())? {
            Some(d) => Ok(Some(d)),
            None => {
                self.warn(format!(
                    "Cannot verify integrity of {file}: unknown algorithm"
                ));
                Ok(None)
            }
        }
    }

    /// Loads and verifies `index.T`.
    fn load_index_file(&mut self, t: u32) -> std::result::Result<NsIndex, String> {
        let name = format!("index.{t}");
        let data = fs::read(self.path.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        if let Some(d) = self.read_integrity(t, "index")? {
            integrity::verify_index(&name, &data, &d).map_err(|e| e.to_string())?;
        }
        NsIndex::from_bytes(&data).map_err(|e| format!("{name}: {e}"))
    }

    /// Loads and verifies `hints.T` (version 2 only; version 1 asks for a rebuild).
    fn load_hints_file(&mut self, t: u32) -> std::result::Result<Hints, String> {
        let name = format!("hints.{t}");
        let data = fs::read(self.path.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        if let Some(d) = self.read_integrity(t, "hints")? {
            integrity::verify_plain(&name, &data, &d).map_err(|e| e.to_string())?;
        }
        match hints::decode(&data).map_err(|e| format!("{name}: {e}"))? {
            hints::Decoded::Current(h) => Ok(h),
            hints::Decoded::NeedsRebuild => Err(format!("{name}: version 1 hints, rebuilding")),
        }
    }

    /// borg's `open_index` with auto-recovery: a missing/corrupt index is deleted and
    /// rebuilt from the segments.
    fn open_index(&mut self, t: Option<u32>) -> Result<NsIndex> {
        let Some(t) = t else {
            return Ok(NsIndex::new());
        };
        match self.load_index_file(t) {
            Ok(ix) => Ok(ix),
            Err(e) => {
                self.warn(format!(
                    "Repository index missing or corrupted, trying to recover from: {e}"
                ));
                self.remove_aux(t, &["index"])?;
                self.check_transaction()?;
                if let Some(s) = self.state.take() {
                    if s.transaction_id == Some(t) {
                        return Ok(s.index);
                    }
                }
                let t2 = self.index_transaction_id()?;
                match t2 {
                    Some(t2) => self
                        .load_index_file(t2)
                        .map_err(|detail| RepoError::Integrity {
                            path: self.path.join(format!("index.{t2}")),
                            detail,
                        }),
                    None => Ok(NsIndex::new()),
                }
            }
        }
    }

    fn remove_aux(&self, t: u32, which: &[&str]) -> Result<()> {
        for w in which {
            let p = self.path.join(format!("{w}.{t}"));
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(RepoError::io(format!("cannot remove {}", p.display()), e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Loads the committed index (readers' entry point; borg's lazy `self.index`).
    fn ensure_index(&mut self) -> Result<()> {
        if self.state.is_some() {
            return Ok(());
        }
        let t = self.get_transaction_id()?;
        if self.state.as_ref().is_some_and(|s| s.transaction_id == t) {
            return Ok(()); // a replay just built it
        }
        let index = self.open_index(t)?;
        self.state = Some(State {
            index,
            hints: None,
            transaction_id: t,
        });
        Ok(())
    }

    /// Makes sure the committed state includes hints (rebuilding them if needed).
    fn prepare_hints(&mut self) -> Result<()> {
        self.ensure_index()?;
        if self.state.as_ref().is_some_and(|s| s.hints.is_some()) {
            return Ok(());
        }
        let t = self.state.as_ref().and_then(|s| s.transaction_id);
        let Some(t) = t else {
            if let Some(s) = self.state.as_mut() {
                s.hints = Some(Hints::default());
            }
            return Ok(());
        };
        match self.load_hints_file(t) {
            Ok(h) => {
                if let Some(s) = self.state.as_mut() {
                    s.hints = Some(h);
                }
                Ok(())
            }
            Err(e) => {
                self.warn(format!(
                    "Repository hints file missing or corrupted, trying to recover: {e}"
                ));
                self.ensure_exclusive_for_replay()?;
                self.remove_aux(t, &["hints", "index"])?;
                self.state = None;
                self.check_transaction()?;
                self.ensure_index()?;
                if self.state.as_ref().is_some_and(|s| s.hints.is_some()) {
                    Ok(())
                } else {
                    Err(RepoError::Integrity {
                        path: self.path.join(format!("hints.{t}")),
                        detail: "hints could not be rebuilt".into(),
                    })
                }
            }
        }
    }

    /// borg's `prepare_txn`: exclusive lock, committed state with hints, uncommitted
    /// segments removed, writing continues at `T + 1`.
    fn prepare_txn(&mut self) -> Result<()> {
        if self.active_txn {
            return Ok(());
        }
        self.require_exclusive("writing")?;
        self.prepare_hints()?;
        let t = self.state.as_ref().and_then(|s| s.transaction_id);
        self.writer = None;
        self.read_fds.clear();
        let removed = self
            .layout
            .cleanup(t)
            .map_err(io_err("cannot remove uncommitted segments"))?;
        if removed > 0 {
            self.warn(format!(
                "Cleaned up {removed} uncommitted segment files (everything after segment {t:?})"
            ));
        }
        self.next_segment = t.map_or(0, |t| t + 1);
        if let Some(h) = self.state.as_mut().and_then(|s| s.hints.as_mut()) {
            match t {
                Some(t) => {
                    for segs in h.shadow_index.values_mut() {
                        segs.retain(|&s| s <= t);
                    }
                }
                None => *h = Hints::default(),
            }
        }
        self.active_txn = true;
        Ok(())
    }

    /// borg's `replay_segments`: rebuilds index + hints from the segments after `from`
    /// up to `to` (all of them for `None`) and writes them for `to`.
    fn replay_segments(&mut self, from: Option<u32>, to: u32) -> Result<()> {
        self.ensure_exclusive_for_replay()?;
        self.warn("Replaying segments. Please wait, this can take a while...".into());
        let (mut index, mut h, from) = match from {
            Some(f) => match (self.load_index_file(f), self.load_hints_file(f)) {
                (Ok(i), Ok(h)) => (i, h, Some(f)),
                _ => (NsIndex::new(), Hints::default(), None),
            },
            None => (NsIndex::new(), Hints::default(), None),
        };
        if let Some(f) = from {
            for segs in h.shadow_index.values_mut() {
                segs.retain(|&s| s <= f);
            }
        }
        if let Some(w) = self.writer.as_mut() {
            w.flush().map_err(io_err("cannot flush the open segment"))?;
        }
        for seg in self.layout.list().map_err(io_err("cannot list segments"))? {
            if from.is_some_and(|f| seg <= f) {
                continue;
            }
            if seg > to {
                break;
            }
            self.update_index(seg, &mut index, &mut h)?;
        }
        write_index(&self.path, self.append_only, to, &index, &h)?;
        self.state = Some(State {
            index,
            hints: Some(h),
            transaction_id: Some(to),
        });
        Ok(())
    }

    /// borg's `_update_index` (replay and check): applies one segment's entries.
    fn update_index(&mut self, seg: u32, index: &mut NsIndex, h: &mut Hints) -> Result<()> {
        let path = self.layout.filename(seg);
        let mut entries = Vec::new();
        segments::iter_entries(&path, seg, |e| {
            entries.push((e.tag, e.key, e.offset, e.size));
            Ok(())
        })
        .map_err(|e| self.seg_err(Some(seg), e))?;
        self.apply_entries(seg, &entries, index, h)
    }

    /// The body of borg's `_update_index` for entries already read from segment `seg`.
    fn apply_entries(
        &mut self,
        seg: u32,
        entries: &[(u8, Option<ObjectId>, u32, u32)],
        index: &mut NsIndex,
        h: &mut Hints,
    ) -> Result<()> {
        h.segments.insert(seg, 0);
        for &(tag, key, offset, size) in entries {
            let Some(key) = key else { continue };
            match tag {
                segments::TAG_PUT => {
                    if let Some((s, _)) = index.get(&key) {
                        // borg counts the new entry's size as freeable in the old segment.
                        *h.compact.entry(s).or_insert(0) += size as u64;
                        *h.segments.entry(s).or_insert(0) -= 1;
                        h.shadow_index.entry(key).or_default().push(s);
                    }
                    index
                        .insert(&key, seg, offset)
                        .map_err(|e| RepoError::Other(e.to_string()))?;
                    *h.segments.entry(seg).or_insert(0) += 1;
                    h.storage_quota_use += size as u64;
                }
                segments::TAG_DELETE => {
                    if let Some((s, off)) = index.remove(&key) {
                        if self.layout.exists(s) {
                            *h.segments.entry(s).or_insert(0) -= 1;
                            let size = self.entry_size(s, off, &key)?;
                            *h.compact.entry(s).or_insert(0) += size as u64;
                            h.shadow_index.entry(key).or_default().push(s);
                        }
                    }
                }
                _ => {}
            }
        }
        if h.segments.get(&seg) == Some(&0) {
            let size = self
                .layout
                .size(seg)
                .map_err(io_err("cannot stat a segment"))?;
            h.compact.insert(seg, size);
        }
        Ok(())
    }

    /// An open read handle for a segment (a few are cached).
    fn segment_file(&mut self, seg: u32) -> Result<&File> {
        if let Some(w) = self.writer.as_mut() {
            if w.segment == seg {
                w.flush().map_err(io_err("cannot flush the open segment"))?;
            }
        }
        if !self.read_fds.contains_key(&seg) {
            if self.read_fds.len() >= 64 {
                self.read_fds.clear();
            }
            let p = self.layout.filename(seg);
            let f =
                File::open(&p).map_err(io_err(format!("cannot open segment {}", p.display())))?;
            self.read_fds.insert(seg, f);
        }
        self.read_fds.get(&seg).ok_or_else(|| {
            RepoError::Other(format!("segment {seg} vanished from the handle cache"))
        })
    }

    /// Size of the PUT entry of `key` at `seg`/`off` (header only, like borg).
    fn entry_size(&mut self, seg: u32, off: u32, key: &ObjectId) -> Result<u32> {
        let f = self.segment_file(seg)?;
        let r = segments::read_put(f, seg, off, key, false);
        r.map(|(size, _)| size)
            .map_err(|e| self.seg_err(Some(seg), e))
    }

    /// borg's `get_write_fd`: manifest writes and full segments start a new segment.
    fn write_fd(&mut self, want_new: bool) -> Result<&mut Writer> {
        let roll = match &self.writer {
            Some(w) => want_new || w.offset > self.max_segment_size,
            None => false,
        };
        if roll {
            self.close_segment()?;
        }
        if self.writer.is_none() {
            self.read_fds.remove(&self.next_segment);
            let w = Writer::create(&self.layout, self.next_segment).map_err(io_err(format!(
                "cannot create segment {}",
                self.layout.filename(self.next_segment).display()
            )))?;
            self.writer = Some(w);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| RepoError::Other("no open segment".into()))
    }

    /// Syncs and closes the current segment (borg's `close_segment`).
    fn close_segment(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            self.next_segment += 1;
            let seg = w.segment;
            w.close()
                .map_err(io_err(format!("cannot sync segment {seg}")))?;
        }
        Ok(())
    }

    fn write_put(&mut self, id: &ObjectId, data: &[u8]) -> Result<(u32, u32)> {
        let w = self.write_fd(*id == MANIFEST_ID)?;
        let off = w
            .put(id, data)
            .map_err(io_err("cannot write to a segment"))?;
        Ok((w.segment, off))
    }

    fn write_delete(&mut self, id: &ObjectId) -> Result<(u32, u32)> {
        let w = self.write_fd(*id == MANIFEST_ID)?;
        w.delete(id).map_err(io_err("cannot write to a segment"))?;
        Ok((w.segment, segments::PUT_HEADER_SIZE))
    }

    fn write_commit(&mut self) -> Result<u32> {
        let w = self.write_fd(true)?;
        w.commit().map_err(io_err("cannot write to a segment"))?;
        let seg = w.segment;
        self.close_segment()?;
        Ok(seg)
    }

    fn hints_mut(&mut self) -> Result<&mut Hints> {
        self.state
            .as_mut()
            .and_then(|s| s.hints.as_mut())
            .ok_or_else(|| RepoError::Other("no open transaction".into()))
    }

    fn index_mut(&mut self) -> Result<&mut NsIndex> {
        self.state
            .as_mut()
            .map(|s| &mut s.index)
            .ok_or_else(|| RepoError::Other("no index loaded".into()))
    }

    fn index(&mut self) -> Result<&NsIndex> {
        self.ensure_index()?;
        self.state
            .as_ref()
            .map(|s| &s.index)
            .ok_or_else(|| RepoError::Other("no index loaded".into()))
    }

    /// borg's `_delete`: supersede the PUT at `seg`/`off` with a DELETE entry.
    fn supersede(&mut self, id: &ObjectId, seg: u32, off: u32) -> Result<()> {
        {
            let h = self.hints_mut()?;
            h.shadow_index.entry(*id).or_default().push(seg);
            *h.segments.entry(seg).or_insert(0) -= 1;
        }
        let size = self.entry_size(seg, off, id)?;
        *self.hints_mut()?.compact.entry(seg).or_insert(0) += size as u64;
        let (dseg, dsize) = self.write_delete(id)?;
        let h = self.hints_mut()?;
        *h.compact.entry(dseg).or_insert(0) += dsize as u64;
        h.segments.entry(dseg).or_insert(0);
        Ok(())
    }

    /// borg's `check_free_space`: refuse to commit when the index files and (unless
    /// append-only) compaction working space might not fit.
    fn check_free_space(&mut self) -> Result<()> {
        let Some(st) = self.state.as_ref() else {
            return Ok(());
        };
        let Some(h) = st.hints.as_ref() else {
            return Ok(());
        };
        let index_size = (hashindex::HEADER_LEN + st.index.raw().num_buckets() * 40) as i128;
        let mut required =
            index_size * 4 + (h.segments.len() * 10 + h.compact.len() * 10 + 4096) as i128;
        required += self.additional_free_space as i128;
        if !self.append_only {
            let full = (self.max_segment_size + MAX_OBJECT_SIZE as u64) as i128;
            if h.compact.len() < 10 {
                let mut working: i128 = 0;
                for (&seg, &free) in &h.compact {
                    if let Ok(md) = fs::metadata(self.layout.filename(seg)) {
                        working += md.len() as i128 - free as i128;
                    }
                }
                required += working.min(full);
            } else {
                required += full;
            }
        }
        let free = match nix::sys::statvfs::statvfs(&self.path) {
            Ok(s) => s.blocks_available() as i128 * s.fragment_size() as i128,
            Err(_) => return Ok(()),
        };
        if free < required {
            self.rollback()?;
            return Err(RepoError::Other(format!(
                "insufficient free space to complete the transaction (required: {required} bytes, available: {free} bytes)"
            )));
        }
        Ok(())
    }

    /// borg's `commit(compact=…)`: the COMMIT, then (unless append-only) compaction of
    /// sparse segments, then the index files for the last committed segment.
    fn commit_inner(&mut self, compact: Option<f64>) -> Result<()> {
        if let Some((quota, used)) = self.doomed {
            self.rollback()?;
            return Err(RepoError::StorageQuotaExceeded { quota, used });
        }
        self.prepare_txn()?;
        self.check_free_space()?;
        let r = (|| {
            let seg = self.write_commit()?;
            {
                let h = self.hints_mut()?;
                h.segments.entry(seg).or_insert(0);
                *h.compact.entry(seg).or_insert(0) += segments::HEADER_SIZE as u64;
            }
            let seg = match compact {
                Some(threshold) if !self.append_only => self.compact_segments(threshold)?,
                _ => seg,
            };
            let st = self
                .state
                .as_mut()
                .ok_or_else(|| RepoError::Other("no open transaction".into()))?;
            let h = st
                .hints
                .as_ref()
                .ok_or_else(|| RepoError::Other("no open transaction".into()))?;
            write_index(&self.path, self.append_only, seg, &st.index, h)?;
            st.transaction_id = Some(seg);
            Ok(())
        })();
        self.active_txn = false;
        if r.is_err() {
            // The COMMIT may be durable without its index: reload (and replay) lazily.
            self.writer = None;
            self.state = None;
        }
        r
    }
}

/// borg's `write_index`: hints, index and integrity for `t` via tmp + fsync + rename
/// (integrity first), then the older ones are removed. Logs append-only transactions.
fn write_index(repo: &Path, append_only: bool, t: u32, index: &NsIndex, h: &Hints) -> Result<()> {
    if append_only {
        let line = format!(
            "transaction {t}, UTC time {}\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f")
        );
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(repo.join("transactions"))
            .map_err(io_err("cannot open the transactions log"))?;
        f.write_all(line.as_bytes())
            .map_err(io_err("cannot write the transactions log"))?;
    }
    let hints_name = format!("hints.{t}");
    let index_name = format!("index.{t}");
    let integrity_name = format!("integrity.{t}");
    let tmp = |n: &str| repo.join(format!("{n}.tmp"));

    let hints_bytes = h.to_bytes();
    fsio::write_synced(&tmp(&hints_name), &hints_bytes)
        .map_err(io_err(format!("cannot write {hints_name}")))?;
    let hints_digest = integrity::plain_digests(&hints_name, &hints_bytes);
    drop(hints_bytes);

    let index_bytes = index.to_bytes();
    fsio::write_synced(&tmp(&index_name), &index_bytes)
        .map_err(io_err(format!("cannot write {index_name}")))?;
    let index_digest = integrity::index_digests(&index_name, &index_bytes);
    drop(index_bytes);

    let integ = IntegrityFile::encode(&hints_digest, &index_digest);
    fsio::write_synced(&tmp(&integrity_name), &integ)
        .map_err(io_err(format!("cannot write {integrity_name}")))?;

    let rename = |n: &str| {
        fs::rename(tmp(n), repo.join(n)).map_err(io_err(format!("cannot rename {n}.tmp")))
    };
    rename(&integrity_name)?;
    fsio::sync_dir(repo).map_err(io_err("cannot sync the repository directory"))?;
    rename(&hints_name)?;
    rename(&index_name)?;
    fsio::sync_dir(repo).map_err(io_err("cannot sync the repository directory"))?;

    let current = format!(".{t}");
    for e in fs::read_dir(repo).map_err(io_err("cannot list the repository"))? {
        let e = e.map_err(io_err("cannot list the repository"))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("index.")
            || name.starts_with("hints.")
            || name.starts_with("integrity."))
        {
            continue;
        }
        if name.ends_with(&current) {
            continue;
        }
        fs::remove_file(e.path()).map_err(io_err(format!("cannot remove {name}")))?;
    }
    Ok(())
}

impl Repository for LocalRepository {
    fn id(&self) -> ObjectId {
        self.id
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn get(&mut self, id: &ObjectId) -> Result<Vec<u8>> {
        let (seg, off) = self
            .index()?
            .get(id)
            .ok_or_else(|| RepoError::ObjectNotFound(*id, self.path.clone()))?;
        let f = self.segment_file(seg)?;
        let r = segments::read_put(f, seg, off, id, true);
        match r {
            Ok((_, Some(data))) => Ok(data),
            Ok((_, None)) => Err(RepoError::Other("segment read returned no data".into())),
            Err(e) => Err(self.seg_err(Some(seg), e)),
        }
    }

    fn contains(&mut self, id: &ObjectId) -> Result<bool> {
        Ok(self.index()?.contains_key(id))
    }

    fn put(&mut self, id: &ObjectId, data: &[u8]) -> Result<()> {
        if data.len() > MAX_DATA_SIZE {
            return Err(RepoError::Other(format!(
                "object {} too large for a segment entry ({} > {MAX_DATA_SIZE} bytes)",
                hex::encode(id),
                data.len()
            )));
        }
        self.prepare_txn()?;
        if let Some((seg, off)) = self.index_mut()?.get(id) {
            self.supersede(id, seg, off)?;
        }
        let (seg, off) = self.write_put(id, data)?;
        let used = {
            let h = self.hints_mut()?;
            h.storage_quota_use += data.len() as u64 + segments::PUT_HEADER_SIZE as u64;
            *h.segments.entry(seg).or_insert(0) += 1;
            h.storage_quota_use
        };
        self.index_mut()?
            .insert(id, seg, off)
            .map_err(|e| RepoError::Other(e.to_string()))?;
        if self.storage_quota > 0 && used > self.storage_quota {
            self.doomed = Some((self.storage_quota, used));
            return Err(RepoError::StorageQuotaExceeded {
                quota: self.storage_quota,
                used,
            });
        }
        Ok(())
    }

    fn delete(&mut self, id: &ObjectId) -> Result<()> {
        self.prepare_txn()?;
        let (seg, off) = self
            .index_mut()?
            .remove(id)
            .ok_or_else(|| RepoError::ObjectNotFound(*id, self.path.clone()))?;
        self.supersede(id, seg, off)
    }

    fn commit(&mut self) -> Result<()> {
        self.commit_inner(None)
    }
    fn rollback(&mut self) -> Result<()> {
        self.doomed = None;
        if !self.active_txn {
            return Ok(());
        }
        self.active_txn = false;
        let t = self.state.as_ref().and_then(|s| s.transaction_id);
        self.writer = None;
        self.read_fds.clear();
        self.state = None;
        self.layout
            .cleanup(t)
            .map_err(io_err("cannot remove uncommitted segments"))?;
        Ok(())
    }

    fn list(&mut self, limit: usize, marker: Option<&ObjectId>) -> Result<Vec<ObjectId>> {
        let path = self.path.clone();
        let index = self.index()?;
        match marker {
            None => Ok(index.iter().take(limit).map(|(k, _)| *k).collect()),
            Some(m) => Ok(index
                .iter_after(m)
                .ok_or(RepoError::ObjectNotFound(*m, path))?
                .take(limit)
                .map(|(k, _)| *k)
                .collect()),
        }
    }

    fn len(&mut self) -> Result<u64> {
        Ok(self.index()?.len() as u64)
    }

    fn load_key(&mut self) -> Result<Vec<u8>> {
        Ok(self
            .config
            .get("repository", "key")
            .unwrap_or("")
            .trim()
            .as_bytes()
            .to_vec())
    }

    fn save_key(&mut self, keydata: &[u8]) -> Result<()> {
        self.require_exclusive("saving the key")?;
        let text = std::str::from_utf8(keydata)
            .map_err(|_| RepoError::Other("key data is not UTF-8 text".into()))?;
        self.config.set("repository", "key", text);
        save_config(&self.path, &self.config)
    }

    fn get_free_nonce(&mut self) -> Result<Option<u64>> {
        self.require_exclusive("reading the nonce")?;
        let p = self.path.join("nonce");
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RepoError::io("cannot read the nonce file", e)),
        };
        let bytes: [u8; 8] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                RepoError::Other(format!(
                    "Repository has an invalid nonce file: {:?}",
                    text.trim()
                ))
            })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    fn commit_nonce_reservation(
        &mut self,
        next_unreserved: u64,
        start_nonce: Option<u64>,
    ) -> Result<()> {
        self.require_exclusive("reserving nonces")?;
        if self.get_free_nonce()? != start_nonce {
            return Err(RepoError::NonceMismatch(self.path.join("nonce")));
        }
        fsio::save_file(
            &self.path.join("nonce"),
            format!("{next_unreserved:016x}").as_bytes(),
        )
        .map_err(io_err("cannot write the nonce file"))
    }

    fn append_only(&self) -> bool {
        self.append_only
    }
}

impl Drop for LocalRepository {
    fn drop(&mut self) {
        if self.active_txn {
            let _ = self.rollback();
        }
        // The lock releases itself when dropped.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> ObjectId {
        let mut k = [0u8; 32];
        let h = crc32fast::hash(&i.to_le_bytes());
        k[..4].copy_from_slice(&h.to_le_bytes());
        k[4..8].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn create_put_commit_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("repo");
        let mut r = LocalRepository::create(&p, CreateOptions::default()).unwrap();
        assert!(matches!(
            LocalRepository::create(&p, CreateOptions::default()),
            Err(RepoError::AlreadyExists(_))
        ));
        assert!(matches!(
            LocalRepository::create(p.join("data/inner"), CreateOptions::default()),
            Err(RepoError::AlreadyExists(x)) if x == p
        ));
        fs::create_dir(dir.path().join("full")).unwrap();
        fs::write(dir.path().join("full/f"), b"x").unwrap();
        assert!(matches!(
            LocalRepository::create(dir.path().join("full"), CreateOptions::default()),
            Err(RepoError::AlreadyExists(_))
        ));
        assert!(matches!(
            LocalRepository::create(dir.path().join("a/b"), CreateOptions::default()),
            Err(RepoError::ParentPathDoesNotExist(_))
        ));
        let nested = CreateOptions {
            make_parent_dirs: true,
            ..Default::default()
        };
        drop(LocalRepository::create(dir.path().join("a/b"), nested).unwrap());
        assert!(matches!(
            LocalRepository::open(dir.path().join("nope"), OpenOptions::default()),
            Err(RepoError::DoesNotExist(_))
        ));
        r.put(&MANIFEST_ID, b"manifest").unwrap();
        for i in 0..100 {
            r.put(&id(i), format!("object {i}").as_bytes()).unwrap();
        }
        r.commit().unwrap();
        assert_eq!(r.transaction_id().unwrap(), Some(1));
        r.put(&id(5), b"again").unwrap();
        r.delete(&id(6)).unwrap();
        assert!(matches!(
            r.delete(&id(6)),
            Err(RepoError::ObjectNotFound(..))
        ));
        r.put(&MANIFEST_ID, b"manifest 2").unwrap();
        r.commit().unwrap();
        assert_eq!(r.len().unwrap(), 100);
        drop(r);
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        assert_eq!(r.get(&id(5)).unwrap(), b"again");
        assert_eq!(r.get(&MANIFEST_ID).unwrap(), b"manifest 2");
        assert!(!r.contains(&id(6)).unwrap());
        assert_eq!(r.len().unwrap(), 100);
        assert!(r.take_warnings().is_empty());
        let all = r.list(1000, None).unwrap();
        assert_eq!(all.len(), 100);
        let page = r.list(10, Some(&all[9])).unwrap();
        assert_eq!(page, all[10..20]);
        // Uncommitted writes vanish.
        r.put(&id(1000), b"uncommitted").unwrap();
        drop(r);
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        assert!(!r.contains(&id(1000)).unwrap());
        // Lost index: rebuilt by replay, same contents.
        let t = r.transaction_id().unwrap().unwrap();
        drop(r);
        fs::remove_file(p.join(format!("index.{t}"))).unwrap();
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        assert_eq!(r.len().unwrap(), 100);
        assert_eq!(r.get(&id(5)).unwrap(), b"again");
        assert!(r.take_warnings().iter().any(|w| w.contains("Replaying")));
    }

    #[test]
    fn corrupt_aux_files_are_rebuilt_and_shared_readers_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("repo");
        let mut r = LocalRepository::create(&p, CreateOptions::default()).unwrap();
        for i in 0..50 {
            r.put(&id(i), &[i as u8; 100]).unwrap();
        }
        r.commit().unwrap();
        let t = r.transaction_id().unwrap().unwrap();
        drop(r);
        // A flipped bit in the index: the integrity digest catches it, replay rebuilds.
        let ip = p.join(format!("index.{t}"));
        let mut b = fs::read(&ip).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(&ip, &b).unwrap();
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        assert_eq!(r.len().unwrap(), 50);
        let w = r.take_warnings();
        assert!(
            w.iter().any(|m| m.contains("index missing or corrupted")),
            "{w:?}"
        );
        drop(r);
        // Missing hints: rebuilt when a write transaction starts.
        fs::remove_file(p.join(format!("hints.{t}"))).unwrap();
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        r.put(&id(100), b"x").unwrap();
        r.commit().unwrap();
        assert!(r
            .take_warnings()
            .iter()
            .any(|m| m.contains("hints file missing")));
        assert_eq!(r.len().unwrap(), 51);
        drop(r);
        // Shared lock: reads work, writes and nonces need the exclusive lock.
        let shared = OpenOptions {
            exclusive: false,
            ..Default::default()
        };
        let mut r = LocalRepository::open(&p, shared.clone()).unwrap();
        let mut r2 = LocalRepository::open(&p, shared).unwrap();
        assert_eq!(r.get(&id(3)).unwrap(), [3u8; 100]);
        assert_eq!(r2.len().unwrap(), 51);
        assert!(matches!(
            r.put(&id(200), b"y"),
            Err(RepoError::LockFailed { .. })
        ));
        assert!(matches!(
            r.get_free_nonce(),
            Err(RepoError::LockFailed { .. })
        ));
        assert!(matches!(
            LocalRepository::open(
                &p,
                OpenOptions {
                    lock_wait: Duration::from_millis(50),
                    ..Default::default()
                }
            ),
            Err(RepoError::LockTimeout(..))
        ));
        drop((r, r2));
        // Within one process the lock still excludes a second writer.
        let quick = OpenOptions {
            lock_wait: Duration::from_millis(50),
            ..Default::default()
        };
        let a = LocalRepository::open(&p, quick.clone()).unwrap();
        assert!(matches!(
            LocalRepository::open(&p, quick.clone()),
            Err(RepoError::LockTimeout(..))
        ));
        let shared = OpenOptions {
            exclusive: false,
            ..quick.clone()
        };
        assert!(matches!(
            LocalRepository::open(&p, shared),
            Err(RepoError::LockTimeout(..))
        ));
        drop(a);
        LocalRepository::open(&p, quick).unwrap();
    }

    #[test]
    fn nonce_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("repo");
        let mut r = LocalRepository::create(&p, CreateOptions::default()).unwrap();
        assert_eq!(r.get_free_nonce().unwrap(), None);
        r.commit_nonce_reservation(0x1000_001c, None).unwrap();
        assert_eq!(fs::read(p.join("nonce")).unwrap(), b"000000001000001c");
        assert_eq!(r.get_free_nonce().unwrap(), Some(0x1000_001c));
        assert!(matches!(
            r.commit_nonce_reservation(5, None),
            Err(RepoError::NonceMismatch(_))
        ));
        let key = "a".repeat(70) + "\n" + &"b".repeat(70) + "\nccc";
        r.save_key(key.as_bytes()).unwrap();
        let cfg = fs::read_to_string(p.join("config")).unwrap();
        assert!(cfg.ends_with(&format!(
            "key = {}\n\t{}\n\tccc\n\n",
            "a".repeat(70),
            "b".repeat(70)
        )));
        assert!(!p.join("config.old").exists());
        drop(r);
        let mut r = LocalRepository::open(&p, OpenOptions::default()).unwrap();
        assert_eq!(r.load_key().unwrap(), key.as_bytes());
    }

    #[test]
    fn quota_dooms_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("repo");
        let mut r = LocalRepository::create(
            &p,
            CreateOptions {
                storage_quota: Some(1000),
                ..Default::default()
            },
        )
        .unwrap();
        r.put(&id(1), &[0u8; 500]).unwrap();
        assert!(matches!(
            r.put(&id(2), &[0u8; 500]),
            Err(RepoError::StorageQuotaExceeded { .. })
        ));
        assert!(matches!(
            r.commit(),
            Err(RepoError::StorageQuotaExceeded { .. })
        ));
        assert_eq!(r.len().unwrap(), 0);
    }
}
