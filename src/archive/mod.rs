//! The writer: walk → read → chunk → hash → dedup → compress → encrypt → put, plus the
//! item stream, archive object, manifest update and client caches; and the way back:
//! reading archives and restoring them.

mod bufpool;
pub mod cache;
pub mod check;
pub mod checkpoint;
pub mod create;
pub mod delete;
pub mod diff;
mod dropbehind;
pub mod extract;
pub mod fsmeta;
pub mod inflight;
pub mod itemstream;
pub mod patterns;
pub mod prune;
pub mod read;
pub mod stats;
pub mod store;
pub mod tar;
pub mod verify;
