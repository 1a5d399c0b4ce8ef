//! borg 1.x metadata objects: items (one per file-system object, packed back to back into
//! the item stream), the archive metadata object and the manifest.
//!
//! Encoding reproduces borg's bytes exactly (`StableDict` key order, smallest ints, raw
//! strings only — see [`crate::format::msgpack`]) so that metadata we write deduplicates with
//! borg's and passes borg's byte-level heuristics (`valid_msgpacked_dict`). Decoding accepts
//! what any borg 1.x writes: raw or bin strings, str8, bigint timestamps, missing optional keys.

mod archive;
mod item;
mod manifest;
#[cfg(test)]
mod proptests;
mod sealed;
mod stream;

pub use archive::{ArchiveMeta, ARCHIVE_KEYS, REQUIRED_ARCHIVE_KEYS};
pub use item::{ChunkId, ChunkRef, Item, ITEM_KEYS};
pub use manifest::{Manifest, ManifestArchive};
pub use stream::{decode_item_stream, ItemStreamDecoder};

/// Limits of borg 1.2's manifest unpacker (`get_limited_unpacker('manifest')`): anything
/// beyond them makes 1.2 refuse the whole repository.
pub mod limits {
    /// Longest string anywhere in the manifest (archive names, config values).
    pub const MANIFEST_MAX_STR: usize = 255;
    /// Longest array in the manifest (`item_keys`, feature lists).
    pub const MANIFEST_MAX_ARRAY: usize = 100;
    /// borg's `MAX_ARCHIVES`: largest map in the manifest.
    pub const MAX_ARCHIVES: usize = 400_000;
    /// Nesting depth we accept when decoding; borg's objects nest at most four deep.
    pub const MAX_DEPTH: usize = 64;
}

/// What the TAM (§4) of a manifest or archive object told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TamStatus {
    /// A `HKDF_HMAC_SHA512` TAM matched the stored bytes.
    Verified,
    /// No `tam` key at all (objects written before borg 1.0.9, or by careless writers).
    Missing,
    /// A TAM is present but does not match, or is malformed. Only
    /// [`ArchiveMeta::decode_unverified`] reports this as a status; everything else
    /// refuses such an object with [`ObjectError::TamInvalid`].
    Invalid,
    /// A TAM of another suite; borg ignores it unless a TAM is required.
    UnsupportedSuite,
}

/// Why a metadata object could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("malformed msgpack in {object}: {reason}")]
    Msgpack {
        object: &'static str,
        reason: String,
    },
    #[error("{object} is not a msgpack map")]
    NotAMap { object: &'static str },
    #[error("{object} has no {key:?} key")]
    MissingKey {
        object: &'static str,
        key: &'static str,
    },
    #[error("{object} key {key:?} has the wrong type (expected {expected})")]
    WrongType {
        object: &'static str,
        key: String,
        expected: &'static str,
    },
    #[error("unknown {object} version {version}")]
    UnknownVersion {
        object: &'static str,
        version: String,
    },
    #[error("{object} has no TAM but the repository requires one (borg: TAMRequiredError)")]
    TamRequired { object: &'static str },
    #[error(
        "{object} TAM authentication failed: the object was modified or forged (borg: TAMInvalid)"
    )]
    TamInvalid { object: &'static str },
    #[error("{object} TAM uses an unsupported suite {suite:?} but the repository requires TAM")]
    TamUnsupportedSuite { object: &'static str, suite: String },
    #[error(
        "the manifest was written by a newer borg and cannot be read (UnsupportedManifestError)"
    )]
    UnsupportedManifest,
    #[error("repository requires features this program does not support: {}", .0.join(", "))]
    MandatoryFeatureUnsupported(Vec<String>),
    #[error("{object} exceeds a borg limit: {what}")]
    Limit { object: &'static str, what: String },
    #[error("{object}: {reason}")]
    Invalid {
        object: &'static str,
        reason: String,
    },
    #[error("item stream ends inside an item ({0} bytes left over)")]
    TruncatedStream(usize),
    #[error("cannot draw a random TAM salt: {0}")]
    Random(String),
}

/// Decodes one msgpack value filling `data` exactly, with a bounded nesting depth.
pub(crate) fn decode_exact(data: &[u8], object: &'static str) -> Result<rmpv::Value, ObjectError> {
    let mut rd = data;
    let v = rmpv::decode::read_value_with_max_depth(&mut rd, limits::MAX_DEPTH).map_err(|e| {
        ObjectError::Msgpack {
            object,
            reason: e.to_string(),
        }
    })?;
    if !rd.is_empty() {
        return Err(ObjectError::Msgpack {
            object,
            reason: format!("{} trailing bytes after the value", rd.len()),
        });
    }
    Ok(v)
}

/// The text of a byte-string key, for error messages.
pub(crate) fn key_name(k: &rmpv::Value) -> String {
    match crate::format::msgpack::as_bytes(k) {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => format!("{k}"),
    }
}

/// Typed access to msgpack values with errors that name the object and key.
pub(crate) mod field {
    use super::ObjectError;
    use crate::format::msgpack::as_bytes;
    use rmpv::Value;

    pub fn wrong(object: &'static str, key: &str, expected: &'static str) -> ObjectError {
        ObjectError::WrongType {
            object,
            key: key.to_string(),
            expected,
        }
    }

    pub fn bytes(v: &Value, object: &'static str, key: &str) -> Result<Vec<u8>, ObjectError> {
        as_bytes(v)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| wrong(object, key, "byte string"))
    }

    pub fn text(v: &Value, object: &'static str, key: &str) -> Result<String, ObjectError> {
        let b = as_bytes(v).ok_or_else(|| wrong(object, key, "string"))?;
        String::from_utf8(b.to_vec()).map_err(|_| wrong(object, key, "UTF-8 string"))
    }

    pub fn id32(v: &Value, object: &'static str, key: &str) -> Result<[u8; 32], ObjectError> {
        as_bytes(v)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| wrong(object, key, "32-byte id"))
    }

    pub fn uint<T: TryFrom<u64>>(
        v: &Value,
        object: &'static str,
        key: &str,
        expected: &'static str,
    ) -> Result<T, ObjectError> {
        v.as_u64()
            .and_then(|u| T::try_from(u).ok())
            .ok_or_else(|| wrong(object, key, expected))
    }

    pub fn array<'a>(
        v: &'a Value,
        object: &'static str,
        key: &str,
    ) -> Result<&'a [Value], ObjectError> {
        match v {
            Value::Array(a) => Ok(a),
            _ => Err(wrong(object, key, "array")),
        }
    }

    pub fn bytes_list(
        v: &Value,
        object: &'static str,
        key: &str,
    ) -> Result<Vec<Vec<u8>>, ObjectError> {
        array(v, object, key)?
            .iter()
            .map(|x| bytes(x, object, key))
            .collect()
    }

    /// borg's truthiness of a config flag (`config.get(b'tam_required', False)`).
    pub fn truthy(v: &Value) -> bool {
        match v {
            Value::Nil => false,
            Value::Boolean(b) => *b,
            Value::Integer(i) => i.as_i64() != Some(0) && i.as_u64() != Some(0),
            Value::F32(f) => *f != 0.0,
            Value::F64(f) => *f != 0.0,
            Value::String(s) => !s.as_bytes().is_empty(),
            Value::Binary(b) => !b.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Ext(..) => true,
        }
    }
}
