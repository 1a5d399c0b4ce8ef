//! Pure borg 1.x formats: every byte layout lives here once, with no I/O.

pub mod blake2;
pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod hashindex;
pub mod hints;
pub mod integrity;
pub mod keyblob;
pub mod msgpack;
pub mod objects;
pub mod tam;
pub mod timefmt;

/// borg's `MAX_DATA_SIZE`: the largest object a repository accepts (20 MiB - 41).
pub const MAX_DATA_SIZE: usize = 20_971_479;
