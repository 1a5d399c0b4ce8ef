//! One file's way through `create`: opened and looked up in the files cache, read (as a
//! stream, or whole in a group, see `whole`), and its outcome for the item stream.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Receiver;

use super::input::{chunk_input, InputCtx};
use super::{item_from_meta, whole, FileJob, FileOutcome, FilesChanged, Job, Memo, Shared};
use crate::archive::cache::{file_key, FileEntry, FileKey};
use crate::archive::dropbehind::DropBehind;
use crate::archive::fsmeta;
use crate::archive::inflight::Tracker;
use crate::archive::store::StoreError;
use crate::format::objects::{ChunkRef, Item};

/// Whether a file changed while it was read, by the timestamp `how` names (borg's
/// `--files-changed`).
fn stat_changed(open: &OpenFile, now: &std::fs::Metadata, how: FilesChanged) -> bool {
    match how {
        FilesChanged::Disabled => false,
        FilesChanged::Ctime => open.ctime_ns != fsmeta::ns(now.ctime(), now.ctime_nsec()),
        FilesChanged::Mtime => open.mtime_ns != fsmeta::ns(now.mtime(), now.mtime_nsec()),
    }
}

/// A regular file opened for backup whose contents must be read (not in the files cache,
/// or its chunks gone).
pub(super) struct OpenFile {
    pub(super) file: std::fs::File,
    pub(super) item: Item,
    key: FileKey,
    ino: u64,
    /// The size fstat gave when the file was opened, as the files cache records it.
    pub(super) size: u64,
    /// Its times then, to tell whether it changed while it was read.
    ctime_ns: i64,
    mtime_ns: i64,
    cmtime: i64,
    status: char,
    pub(super) shown: String,
    pub(super) special: bool,
    /// Set in the finished item only: part items leave it out.
    hardlink_master: bool,
}

/// What opening a file for backup came to.
pub(super) enum Opened {
    /// Nothing to read: an error, or unchanged contents found in the files cache.
    Done(Box<FileOutcome>),
    Read(Box<OpenFile>),
}

/// An outcome with only a warning (the file is left out).
pub(super) fn skipped(status: char, msg: String) -> FileOutcome {
    FileOutcome {
        item: None,
        status,
        warning: Some(msg),
        memorize: None,
        input: None,
    }
}

/// Opens `job`'s file, reads its metadata and looks it up in the files cache.
pub(super) fn open_file(sh: &Shared, job: &FileJob) -> Opened {
    let opts = &sh.opts;
    let shown = job.fs_path.display().to_string();
    let mut oo = std::fs::OpenOptions::new();
    oo.read(true);
    let flags = if job.special {
        libc::O_NOFOLLOW
    } else {
        libc::O_NOFOLLOW | libc::O_NONBLOCK
    };
    oo.custom_flags(flags | libc::O_NOATIME);
    let file = match oo.open(&job.fs_path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // O_NOATIME needs ownership; retry without it as borg does
            let mut oo = std::fs::OpenOptions::new();
            oo.read(true).custom_flags(flags);
            match oo.open(&job.fs_path) {
                Ok(f) => f,
                Err(e) => {
                    return Opened::Done(Box::new(skipped('E', format!("{shown}: open: {e}"))))
                }
            }
        }
        Err(e) => return Opened::Done(Box::new(skipped('E', format!("{shown}: open: {e}")))),
    };
    // one fstat, through the metadata, tells whether this is the file the walk found
    let meta = match fsmeta::read_meta_fd(std::os::fd::AsFd::as_fd(&file), &job.fs_path, &opts.meta)
    {
        Ok(m) => m,
        Err(e) => return Opened::Done(Box::new(skipped('E', format!("{shown}: {e}")))),
    };
    if meta.ino != job.ino || meta.dev != job.dev {
        return Opened::Done(Box::new(skipped(
            'E',
            format!("{shown}: file inode changed (race condition), skipping file"),
        )));
    }
    let mut item = item_from_meta(job.arch_path.clone(), &meta, opts);
    if job.special {
        item.mode = libc::S_IFREG | (item.mode & 0o7777);
    }
    let mut status = 'A';
    let key = file_key(&opts.cache_tag, &job.arch_path);
    let cmtime = sh.files.cmtime(meta.ctime_ns, meta.mtime_ns);
    if !job.special {
        if let Some(cached) = sh.files.lookup(&key, meta.ino, meta.size, cmtime) {
            status = 'M';
            if cached.iter().all(|c| sh.store.seen(&c.id)) {
                let refs: Option<Vec<ChunkRef>> =
                    cached.iter().map(|c| sh.store.incref(&c.id)).collect();
                if let Some(refs) = refs {
                    sh.store
                        .stats
                        .files_unchanged
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let memo = FileEntry::fresh(meta.ino, meta.size, cmtime, refs.clone());
                    item.hardlink_master = Some(job.hardlink_master);
                    return Opened::Done(Box::new(with_chunks(
                        item,
                        'U',
                        refs,
                        Some((key, memo)),
                        None,
                    )));
                }
            }
        }
    }
    Opened::Read(Box::new(OpenFile {
        file,
        item,
        key,
        ino: meta.ino,
        size: meta.size,
        ctime_ns: meta.ctime_ns,
        mtime_ns: meta.mtime_ns,
        cmtime,
        status,
        shown,
        special: job.special,
        hardlink_master: job.hardlink_master,
    }))
}

/// The outcome of a file stored as `chunks`.
fn with_chunks(
    mut item: Item,
    status: char,
    chunks: Vec<ChunkRef>,
    memorize: Option<Memo>,
    input: Option<u64>,
) -> FileOutcome {
    item.size = Some(chunks.iter().map(|c| c.size as u64).sum());
    item.chunks = Some(chunks);
    FileOutcome {
        item: Some(item),
        status,
        warning: None,
        memorize,
        input,
    }
}

impl OpenFile {
    /// Streams the file through the chunker into the store.
    pub(super) fn read_streaming(self, sh: &Shared) -> Result<FileOutcome, StoreError> {
        let opts = &sh.opts;
        let behind = DropBehind::new(std::os::fd::AsFd::as_fd(&self.file));
        let sparse = opts.sparse && !self.special;
        let track = sh.inflight.as_ref().map(|f| f.register(self.item.clone()));
        let input = track.as_ref().map(Tracker::id);
        let ctx = InputCtx {
            store: &sh.store,
            behind: Some(&behind),
            track: track.as_ref(),
            cancel: opts.cancel.as_deref(),
        };
        let file = &self.file;
        let read = chunk_input(&opts.chunker, sh.seed, file, &ctx, |chunker| {
            match sparse.then(|| crate::format::chunker::sparse_map(file)) {
                Some(Ok(Some(map))) => chunker.with_sparse_map(map),
                _ => chunker,
            }
        })?;
        drop(behind);
        Ok(self.finish(sh, read, input))
    }

    /// The outcome once the contents were read (`read`: their chunks, or the read error);
    /// `input` if the input was tracked for checkpoints.
    pub(super) fn finish(
        mut self,
        sh: &Shared,
        read: Result<Vec<ChunkRef>, std::io::Error>,
        input: Option<u64>,
    ) -> FileOutcome {
        self.item.hardlink_master = Some(self.hardlink_master);
        let refs = match read {
            Ok(r) => r,
            Err(e) => {
                return FileOutcome {
                    input,
                    ..skipped('E', format!("{}: read: {e}", self.shown))
                }
            }
        };
        let changed = match self.file.metadata() {
            Ok(st2) => !self.special && stat_changed(&self, &st2, sh.opts.files_changed),
            Err(_) => false,
        };
        if changed {
            let warning = format!("{}: file changed while we backed it up", self.shown);
            return FileOutcome {
                warning: Some(warning),
                ..with_chunks(self.item, 'C', refs, None, input)
            };
        }
        let memorize = (!self.special).then(|| {
            let entry = FileEntry::fresh(self.ino, self.size, self.cmtime, refs.clone());
            (self.key, entry)
        });
        with_chunks(self.item, self.status, refs, memorize, input)
    }
}

pub(super) fn process_file(sh: &Shared, job: &FileJob) -> Result<FileOutcome, StoreError> {
    match open_file(sh, job) {
        Opened::Done(outcome) => Ok(*outcome),
        Opened::Read(open) => open.read_streaming(sh),
    }
}

pub(super) fn worker_loop(
    sh: Arc<Shared>,
    jobs: Receiver<Job>,
    fatal: Arc<Mutex<Option<StoreError>>>,
) {
    let failed = || FileOutcome {
        item: None,
        status: 'E',
        warning: None,
        memorize: None,
        input: None,
    };
    let stop = || fatal.lock().expect("fatal lock").is_some();
    for job in jobs {
        let outcomes = match whole::process_group(&sh, &job.files, stop, failed) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                fatal.lock().expect("fatal lock").get_or_insert(e);
                job.files.iter().map(|_| failed()).collect()
            }
        };
        let _ = job.reply.send(outcomes);
    }
}
