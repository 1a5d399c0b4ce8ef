//! borg's security directory (`~/.config/borg/security/<repo id>`): remembers each
//! repository's location, key type and newest manifest timestamp so that a swapped,
//! relocated or rolled-back repository is noticed — by us and by borg alike.

use std::path::{Path, PathBuf};

use crate::paths::Env;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("repository at {current} was previously located at {previous}; set BORG_RELOCATED_REPO_ACCESS_IS_OK=yes to accept")]
    Relocated { current: String, previous: String },
    #[error("attempting to access a previously unknown unencrypted repository {0}; set BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes to accept")]
    UnknownUnencrypted(String),
    #[error("the repository's encryption method changed since the last access (key type {found}, expected {expected}); refusing to continue")]
    EncryptionMethodMismatch { expected: String, found: String },
    #[error("the repository manifest is older than the last one seen ({current} < {seen}): a replay attack or a repository with a reused id")]
    Replay { current: String, seen: String },
    #[error("security dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One repository's entry in the security directory.
pub struct SecurityDir {
    pub dir: PathBuf,
}

fn yes(env: Env, var: &str) -> bool {
    env(var).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "yes" | "y" | "1" | "true"))
}

impl SecurityDir {
    pub fn new(env: Env, repo_id: &[u8; 32]) -> Self {
        SecurityDir {
            dir: crate::paths::security_dir(env, &hex::encode(repo_id)),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(name)).ok()
    }

    fn write(&self, name: &str, data: &str) -> Result<(), SecurityError> {
        let io = |path: &Path, source| SecurityError::Io {
            path: path.to_path_buf(),
            source,
        };
        crate::fsutil::ensure_private_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        let p = self.file(name);
        crate::fsutil::save_file(&p, data.as_bytes()).map_err(|e| io(&p, e))
    }

    /// Whether borg would consider this repository known.
    pub fn known(&self) -> bool {
        ["key-type", "location", "manifest-timestamp"]
            .iter()
            .all(|f| self.file(f).exists())
    }

    /// The local nonce file (shared with borg's `NonceManager`).
    pub fn nonce_file(&self) -> PathBuf {
        self.file("nonce")
    }

    /// Whether the `tam_required` marker exists.
    pub fn tam_required(&self) -> bool {
        self.file("tam_required").exists()
    }

    /// Creates or removes the `tam_required` marker (borg syncs it with the manifest).
    pub fn set_tam_required(&self, required: bool) -> Result<(), SecurityError> {
        let p = self.file("tam_required");
        if required {
            if !p.exists() {
                self.write("tam_required", "")?;
            }
        } else if p.exists() {
            std::fs::remove_file(&p).map_err(|e| SecurityError::Io { path: p, source: e })?;
        }
        Ok(())
    }

    /// borg's `assert_secure`: unknown-unencrypted, location, key type and replay checks;
    /// remembers the repository if it was unknown.
    pub fn assert_secure(
        &self,
        env: Env,
        location: &str,
        key_type: u8,
        encrypted: bool,
        manifest_timestamp: &str,
        warn_if_unencrypted: bool,
    ) -> Result<(), SecurityError> {
        if !encrypted && !self.known() {
            if warn_if_unencrypted && !yes(env, "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK") {
                return Err(SecurityError::UnknownUnencrypted(location.into()));
            }
            return self.save(location, key_type, manifest_timestamp);
        }
        if let Some(prev) = self.read("location") {
            if prev != location {
                if !yes(env, "BORG_RELOCATED_REPO_ACCESS_IS_OK") {
                    return Err(SecurityError::Relocated {
                        current: location.into(),
                        previous: prev,
                    });
                }
                self.write("location", location)?;
            }
        }
        if self.known() {
            let found = self.read("key-type").unwrap_or_default();
            if found != key_type.to_string() {
                return Err(SecurityError::EncryptionMethodMismatch {
                    expected: found,
                    found: key_type.to_string(),
                });
            }
        }
        if let Some(seen) = self.read("manifest-timestamp") {
            if !seen.is_empty() && seen.as_str() > manifest_timestamp {
                return Err(SecurityError::Replay {
                    current: manifest_timestamp.into(),
                    seen,
                });
            }
        }
        if !self.known() {
            self.save(location, key_type, manifest_timestamp)?;
        }
        Ok(())
    }

    /// Records location, key type and the manifest timestamp we just wrote or read.
    pub fn save(
        &self,
        location: &str,
        key_type: u8,
        manifest_timestamp: &str,
    ) -> Result<(), SecurityError> {
        self.write("location", location)?;
        self.write("key-type", &key_type.to_string())?;
        self.write("manifest-timestamp", manifest_timestamp)
    }
}
