//! Deleting archives (borg's `Archive.delete` + `do_delete`): every reference an archive
//! holds — its metadata object, its item-stream chunks, its file chunks — is dropped
//! from the chunks index; a chunk nobody references any more gets a repository DELETE.
//! The manifest forgets the archives, the repository commits (without compaction, as
//! borg's `delete`/`prune` do: space returns with `compact`), then the cache is saved.

use std::collections::HashMap;

use super::cache::{CacheDir, CacheError};
use super::prune::{self, Candidate, Decision, KeepRules, PruneError, Verdict};
use super::store::Entry;
use crate::format::timefmt;
use crate::repo::{ObjectId, RepoError};
use crate::session::{Session, SessionError};

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Prune(#[from] PruneError),
    /// borg's `ChunksIndexError`: the cache does not know a chunk the archive uses.
    #[error("chunk {0} missing from the chunks index (or with too few references): corrupted chunks cache, transaction aborted")]
    ChunksIndex(String),
}

/// What the deleted archives freed (borg's "Deleted data" statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteStats {
    pub archives: usize,
    /// Σ size × references dropped.
    pub original_size: u64,
    /// Σ csize × references dropped.
    pub compressed_size: u64,
    /// Σ csize of the chunks deleted from the repository.
    pub deduplicated_size: u64,
    /// Number of repository objects deleted.
    pub chunks_deleted: u64,
}

/// An open delete transaction on a session: archives are removed one by one, then
/// [`Deleter::commit`] makes it durable.
pub struct Deleter<'a> {
    session: &'a mut Session,
    cache: CacheDir,
    chunks: HashMap<ObjectId, Entry>,
    stats: DeleteStats,
    dry_run: bool,
    deleted_ids: Vec<ObjectId>,
    /// Archives deleted with `--force` whose references were unreadable or whose
    /// objects were missing: the chunks index no longer matches the repository, so it is
    /// not saved and the next run rebuilds it.
    forgotten: usize,
}

impl<'a> Deleter<'a> {
    /// Loads (or rebuilds) the chunks index for the session's manifest.
    pub fn new(
        env: crate::paths::Env,
        session: &'a mut Session,
        dry_run: bool,
    ) -> Result<Self, DeleteError> {
        let repo_id = session.repo.lock().expect("repository lock").id();
        let cache = CacheDir::open(env, &repo_id)?;
        let chunks = cache.load_chunks(session)?;
        Ok(Deleter {
            session,
            cache,
            chunks,
            stats: DeleteStats::default(),
            dry_run,
            deleted_ids: Vec::new(),
            forgotten: 0,
        })
    }

    /// The session (for its manifest and location).
    pub fn session(&self) -> &Session {
        self.session
    }

    /// Removes one archive; `Ok(false)` if the manifest has no archive of that name.
    /// A dry run only counts what would be freed.
    pub fn delete(&mut self, name: &[u8]) -> Result<bool, DeleteError> {
        let Some(a) = self.session.manifest.archives.get(name).cloned() else {
            return Ok(false);
        };
        let share = self.cache.archive_chunks(self.session, name, &a.id)?;
        self.drop_share(name, &a.id, &share, false)?;
        Ok(true)
    }

    /// borg's `delete --force`: as [`delete`](Self::delete), but an archive whose items
    /// cannot be read is only removed from the manifest; its chunks stay until
    /// `borg check --repair`. Returns why it could not be read, then.
    pub fn delete_forced(&mut self, name: &[u8]) -> Result<Option<String>, DeleteError> {
        let Some(a) = self.session.manifest.archives.get(name).cloned() else {
            return Ok(None);
        };
        match self.cache.archive_chunks(self.session, name, &a.id) {
            Ok(share) => match self.drop_share(name, &a.id, &share, true)? {
                0 => Ok(None),
                n => Ok(Some(format!("{n} of its objects were missing"))),
            },
            Err(e) => {
                self.forget(name);
                Ok(Some(e.to_string()))
            }
        }
    }

    /// borg's `delete --force --force`: removes the archive from the manifest without
    /// reading it; its chunks stay until `borg check --repair`.
    pub fn forget(&mut self, name: &[u8]) -> bool {
        let Some(a) = self.session.manifest.archives.remove(name) else {
            return false;
        };
        self.deleted_ids.push(a.id);
        self.stats.archives += 1;
        self.forgotten += 1;
        true
    }

    /// Drops an archive's references (`share`) and the archive; returns how many objects
    /// to delete were missing, which only `forced` tolerates.
    fn drop_share(
        &mut self,
        name: &[u8],
        archive: &ObjectId,
        share: &[(ObjectId, Entry)],
        forced: bool,
    ) -> Result<usize, DeleteError> {
        let mut doomed = Vec::new();
        let mut missing = 0;
        for (id, e) in share {
            let Some(c) = self.chunks.get_mut(id) else {
                return Err(DeleteError::ChunksIndex(hex::encode(id)));
            };
            if c.refcount < e.refcount {
                return Err(DeleteError::ChunksIndex(hex::encode(id)));
            }
            c.refcount -= e.refcount;
            self.stats.original_size += c.size as u64 * e.refcount as u64;
            self.stats.compressed_size += c.csize as u64 * e.refcount as u64;
            if c.refcount == 0 {
                self.stats.deduplicated_size += c.csize as u64;
                self.stats.chunks_deleted += 1;
                doomed.push(*id);
            }
        }
        for id in &doomed {
            self.chunks.remove(id);
        }
        if !self.dry_run {
            let mut repo = self.session.repo.lock().expect("repository lock");
            for id in &doomed {
                match repo.delete(id) {
                    Err(RepoError::ObjectNotFound(..)) if forced => missing += 1,
                    r => r?,
                }
            }
        }
        self.session.manifest.archives.remove(name);
        self.deleted_ids.push(*archive);
        self.stats.archives += 1;
        if missing > 0 {
            // the index counted objects that are gone: rebuild it next time
            self.forgotten += 1;
        }
        Ok(missing)
    }

    /// Chunks still referenced after the deletions so far (for "All archives" stats).
    pub fn chunks(&self) -> &HashMap<ObjectId, Entry> {
        &self.chunks
    }

    /// Writes the manifest, commits, and saves the chunks cache for the new manifest.
    /// A dry run (or a run that deleted nothing) writes nothing.
    pub fn commit(self) -> Result<DeleteStats, DeleteError> {
        if self.dry_run || self.stats.archives == 0 {
            return Ok(self.stats);
        }
        self.session.write_manifest()?;
        self.session.commit()?;
        if self.forgotten == 0 {
            let all: Vec<(ObjectId, Entry)> = self.chunks.iter().map(|(k, v)| (*k, *v)).collect();
            self.cache
                .save_chunks(&self.session.manifest_id, &all, None)?;
        }
        for id in &self.deleted_ids {
            self.cache.forget_archive(id);
        }
        Ok(self.stats)
    }
}

/// Totals of a chunks index (borg's "All archives" row and "Chunk index" line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkTotals {
    pub total_size: u64,
    pub total_csize: u64,
    pub unique_size: u64,
    pub unique_csize: u64,
    pub unique_chunks: u64,
    pub total_chunks: u64,
}

impl ChunkTotals {
    pub fn of(chunks: &HashMap<ObjectId, Entry>) -> Self {
        let mut t = ChunkTotals::default();
        for e in chunks.values() {
            t.total_size += e.size as u64 * e.refcount as u64;
            t.total_csize += e.csize as u64 * e.refcount as u64;
            t.unique_size += e.size as u64;
            t.unique_csize += e.csize as u64;
            t.unique_chunks += 1;
            t.total_chunks += e.refcount as u64;
        }
        t
    }
}

/// What a prune run decided and freed.
#[derive(Clone, Debug, Default)]
pub struct PruneOutcome {
    /// Every matching archive, newest first, with its verdict.
    pub decisions: Vec<Decision>,
    pub stats: DeleteStats,
    /// The chunks index after pruning (`None` for a dry run).
    pub totals: Option<ChunkTotals>,
}

/// `borg prune`: picks the archives matching `glob` (borg's `-a`; `None` = all),
/// decides with [`prune::decide`] (local time, `now` for `--keep-within`) and deletes
/// the pruned ones in one transaction. `on_line` sees each decision in borg's order
/// together with the running number of the deletion and the total to delete.
pub fn prune_archives(
    env: crate::paths::Env,
    session: &mut Session,
    glob: Option<&str>,
    rules: &KeepRules,
    dry_run: bool,
    now: chrono::DateTime<chrono::Utc>,
    on_line: &mut dyn FnMut(&Decision, usize, usize),
) -> Result<PruneOutcome, DeleteError> {
    rules.validate()?;
    let re = prune::prune_glob_regex(glob)?;
    let candidates: Vec<Candidate> = session
        .manifest
        .archives
        .iter()
        .filter_map(|(name, a)| {
            let name = String::from_utf8_lossy(name).into_owned();
            re.is_match(&name).then(|| Candidate {
                name,
                id: a.id,
                ts: timefmt::parse(&a.time).unwrap_or_default(),
            })
        })
        .collect();
    let decisions = prune::decide(&candidates, rules, now, &prune::localtime);
    let to_delete = decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Prune)
        .count();
    if dry_run {
        for d in &decisions {
            on_line(d, 0, to_delete);
        }
        return Ok(PruneOutcome {
            decisions,
            ..Default::default()
        });
    }
    let mut deleter = Deleter::new(env, session, false)?;
    let mut n = 0;
    for d in &decisions {
        if d.verdict == Verdict::Prune {
            n += 1;
            deleter.delete(d.archive.name.as_bytes())?;
        }
        on_line(d, n, to_delete);
    }
    let totals = ChunkTotals::of(deleter.chunks());
    let stats = deleter.commit()?;
    Ok(PruneOutcome {
        decisions,
        stats,
        totals: Some(totals),
    })
}
