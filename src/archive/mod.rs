//! The writer: walk → read → chunk → hash → dedup → compress → encrypt → put, plus the
//! item stream, archive object, manifest update and client caches.

pub mod cache;
pub mod check;
pub mod create;
pub mod delete;
pub mod fsmeta;
pub mod itemstream;
pub mod patterns;
pub mod prune;
pub mod stats;
pub mod store;
