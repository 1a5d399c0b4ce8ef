//! proxborg-native: writes BorgBackup 1.x repositories without borg, and backs up
//! Proxmox VE guests from ZFS snapshots into them.
//!
//! Layers (imports point down): `archive` (the writer) → `repo` (repository I/O) →
//! `format` (pure borg 1.x byte layouts, no I/O).

pub mod archive;
pub mod backup;
pub mod format;
pub mod fsutil;
pub mod hugepages;
pub mod location;
pub mod paths;
pub mod placeholders;
pub mod repo;
pub mod secrets;
pub mod session;
