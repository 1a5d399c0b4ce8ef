//! Maintenance a `borg serve` does on its own repository: compaction (a commit with
//! `compact=True`, exactly what `borg compact` sends) and the repository check.

use rmpv::Value;

use super::wire::Arg;
use super::RemoteRepository;
use crate::repo::{Repository, Result, MANIFEST_ID};

impl RemoteRepository {
    /// `borg compact` through the server: re-put the manifest (so the transaction is
    /// not empty and the manifest lands in a fresh segment), then commit with
    /// compaction at `threshold` (a fraction). An append-only server skips compaction.
    pub fn compact(&mut self, threshold: f64) -> Result<()> {
        let manifest = self.get(&MANIFEST_ID)?;
        self.put(&MANIFEST_ID, &manifest)?;
        self.drain()?;
        self.call(
            "commit",
            &[
                ("save_space", Arg::Bool(false)),
                ("compact", Arg::Bool(true)),
                ("threshold", Arg::Float(threshold)),
                ("cleanup_commits", Arg::Bool(false)),
            ],
            None,
        )?;
        self.in_txn = false;
        Ok(())
    }

    /// The server's `Repository.check(repair=False)`: true if no problem was found.
    /// Its findings arrive as the server's log lines (shown like other server output).
    pub fn check(&mut self) -> Result<bool> {
        let v = self.call(
            "check",
            &[
                ("repair", Arg::Bool(false)),
                ("save_space", Arg::Bool(false)),
                ("max_duration", Arg::UInt(0)),
            ],
            None,
        )?;
        Ok(matches!(v, Value::Boolean(true)))
    }
}
