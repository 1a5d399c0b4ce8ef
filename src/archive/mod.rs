//! The writer: walk → read → chunk → hash → dedup → compress → encrypt → put, plus the
//! item stream, archive object, manifest update and client caches; and the way back:
//! reading archives and restoring them.

pub mod cache;
pub mod create;
pub mod diff;
pub mod extract;
pub mod fsmeta;
pub mod itemstream;
pub mod patterns;
pub mod read;
pub mod tar;
pub mod verify;
pub mod stats;
pub mod store;
