//! Repositories: one trait over borg's key→value store, spoken by every command; the
//! local engine writes segments itself, the remote one (later) speaks `borg serve`.
//! The methods mirror borg's `Repository` / RPC methods so both backends map 1:1.

pub mod local;
pub mod remote;

use std::path::PathBuf;

/// A 32-byte object id (the manifest's is all zeros).
pub type ObjectId = [u8; 32];

/// The manifest's fixed id.
pub const MANIFEST_ID: ObjectId = [0u8; 32];

/// Errors of the repository layer (local files or a remote `borg serve`).
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository {0} does not exist")]
    DoesNotExist(PathBuf),
    #[error("{0} is not a valid borg repository: {1}")]
    InvalidRepository(PathBuf, String),
    #[error("repository {0} already exists")]
    AlreadyExists(PathBuf),
    #[error("parent path of {0} does not exist (use --make-parent-dirs)")]
    ParentPathDoesNotExist(PathBuf),
    #[error("object {} not found in repository {}", hex::encode(.0), .1.display())]
    ObjectNotFound(ObjectId, PathBuf),
    #[error("failed to lock {path}: {reason}")]
    LockFailed { path: PathBuf, reason: String },
    #[error("timed out waiting for the lock on {0} (held by {1}); try --lock-wait or check for a running borg")]
    LockTimeout(PathBuf, String),
    #[error("repository {0} is in append-only mode: {1}")]
    AppendOnly(PathBuf, String),
    #[error("storage quota of {quota} bytes exceeded ({used} used)")]
    StorageQuotaExceeded { quota: u64, used: u64 },
    #[error("integrity error in {path}: {detail}")]
    Integrity { path: PathBuf, detail: String },
    #[error("nonce reservation changed under us in {0}; another writer is active")]
    NonceMismatch(PathBuf),
    #[error("{0}")]
    Other(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RepoError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RepoError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, RepoError>;

/// borg's repository operations. Writes are transactional: nothing is visible to
/// readers before `commit`, and `rollback` (or dropping without commit) discards them.
#[allow(clippy::len_without_is_empty)]
pub trait Repository: Send {
    /// The repository id (config `id`).
    fn id(&self) -> ObjectId;
    /// Where the repository lives, for messages and the security dir's `location`.
    fn location(&self) -> String;
    /// Reads an object (an envelope as stored).
    fn get(&mut self, id: &ObjectId) -> Result<Vec<u8>>;
    /// Reads many objects, in the order of `ids`. A remote repository sends the requests
    /// together instead of waiting a round trip for each.
    fn get_many(&mut self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        ids.iter().map(|id| self.get(id)).collect()
    }
    /// Whether the committed state (or this transaction) holds `id`.
    fn contains(&mut self, id: &ObjectId) -> Result<bool>;
    /// Stores an object; replaces an existing one (borg writes a DELETE first).
    fn put(&mut self, id: &ObjectId, data: &[u8]) -> Result<()>;
    /// Removes an object.
    fn delete(&mut self, id: &ObjectId) -> Result<()>;
    /// Makes the transaction durable (never compacts).
    fn commit(&mut self) -> Result<()>;
    /// Discards the open transaction.
    fn rollback(&mut self) -> Result<()>;
    /// Object ids in index order, paged like borg's `list(limit, marker)`.
    fn list(&mut self, limit: usize, marker: Option<&ObjectId>) -> Result<Vec<ObjectId>>;
    /// Number of objects, manifest included.
    fn len(&mut self) -> Result<u64>;
    /// The repokey text from `config` (empty if none).
    fn load_key(&mut self) -> Result<Vec<u8>>;
    /// Stores the repokey text in `config`.
    fn save_key(&mut self, keydata: &[u8]) -> Result<()>;
    /// The repository's `nonce` file: next unreserved AES-CTR counter, if any.
    fn get_free_nonce(&mut self) -> Result<Option<u64>>;
    /// Compare-and-set of the `nonce` file: fails unless it still holds `start_nonce`.
    fn commit_nonce_reservation(
        &mut self,
        next_unreserved: u64,
        start_nonce: Option<u64>,
    ) -> Result<()>;
    /// Whether the repository refuses to delete or overwrite (append-only mode).
    fn append_only(&self) -> bool;
}
