//! AES-CTR counter management. borg 1.x uses one 64-bit block counter per repository as
//! the IV; reusing a value would reveal plaintext, so counter space is *reserved* in the
//! repository's `nonce` file and in the local security dir before any ciphertext using it
//! exists (crash-safe), exactly like borg's `NonceManager` — except that our workers take
//! ranges from one shared allocator, so parallel encryption never overlaps.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::repo::{RepoError, Repository};

/// borg's `NONCE_SPACE_RESERVATION`: each reservation skips 2^28 blocks ahead.
pub const NONCE_SPACE_RESERVATION: u64 = 1 << 28;
/// We reserve larger windows (64 GiB of ciphertext) so a big backup needs few round trips.
const OUR_RESERVATION: u64 = 1 << 32;

#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    #[error("local security dir has an invalid nonce file {0}: {1:?}")]
    BadLocalFile(PathBuf, String),
    #[error("nonce reservation in {0} changed under us; another writer is active")]
    LocalMismatch(PathBuf),
    #[error("AES-CTR counter space exhausted")]
    Exhausted,
    #[error("nonce reservation: {0}")]
    Repo(#[from] RepoError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct State {
    next: u64,
    end: Option<u64>,
}

/// Hands out non-overlapping counter ranges, reserving ahead in repo and security dir.
pub struct NonceAllocator {
    repo: Arc<Mutex<Box<dyn Repository>>>,
    local_file: PathBuf,
    manifest_nonce: Option<u64>,
    state: Mutex<State>,
}

fn parse_hex_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

impl NonceAllocator {
    /// `manifest_nonce` = IV of the current manifest + its blocks (borg's safe lower bound).
    pub fn new(
        repo: Arc<Mutex<Box<dyn Repository>>>,
        local_file: PathBuf,
        manifest_nonce: Option<u64>,
    ) -> Self {
        NonceAllocator {
            repo,
            local_file,
            manifest_nonce,
            state: Mutex::new(State { next: 0, end: None }),
        }
    }

    fn local_free(&self) -> Result<Option<u64>, NonceError> {
        match std::fs::read_to_string(&self.local_file) {
            Ok(s) => parse_hex_u64(&s)
                .map(Some)
                .ok_or_else(|| NonceError::BadLocalFile(self.local_file.clone(), s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NonceError::Io {
                path: self.local_file.clone(),
                source: e,
            }),
        }
    }

    /// Returns the first of `blocks` consecutive counter values, reserved and unused.
    pub fn allocate(&self, blocks: u64) -> Result<u64, NonceError> {
        let mut st = self.state.lock().expect("nonce state lock");
        if let Some(end) = st.end {
            if st.next.checked_add(blocks).is_some_and(|e| e <= end) {
                let n = st.next;
                st.next += blocks;
                return Ok(n);
            }
        }
        let mut repo = self.repo.lock().expect("repository lock");
        let repo_free = repo.get_free_nonce()?;
        let local_free = self.local_free()?;
        let free = [
            repo_free,
            local_free,
            self.manifest_nonce,
            st.end,
            Some(st.next),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        let reservation_end = free
            .checked_add(blocks)
            .and_then(|x| x.checked_add(OUR_RESERVATION.max(NONCE_SPACE_RESERVATION)))
            .ok_or(NonceError::Exhausted)?;
        repo.commit_nonce_reservation(reservation_end, repo_free)?;
        drop(repo);
        if self.local_free()? != local_free {
            return Err(NonceError::LocalMismatch(self.local_file.clone()));
        }
        if let Some(dir) = self.local_file.parent() {
            crate::fsutil::ensure_private_dir(dir).map_err(|e| NonceError::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        crate::fsutil::save_file(
            &self.local_file,
            format!("{reservation_end:016x}").as_bytes(),
        )
        .map_err(|e| NonceError::Io {
            path: self.local_file.clone(),
            source: e,
        })?;
        st.end = Some(reservation_end);
        st.next = free + blocks;
        Ok(free)
    }
}
