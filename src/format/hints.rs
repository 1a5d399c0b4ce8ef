//! The repository hints file (`hints.N`, `Repository.write_index` / `prepare_txn`): per
//! segment live-object counts and freeable bytes, the storage quota use and the shadow
//! index. borg's compaction trusts these numbers (1.2 asserts on wrong refcounts), so
//! they are kept exactly as borg keeps them.
//!
//! msgpack map, raw-string keys, in borg's order: `version` (2), `segments` {seg: count},
//! `compact` {seg: bytes}, `storage_quota_use` int, `shadow_index` {id(32 raw): [seg…]}.

use std::collections::BTreeMap;

use rmpv::Value;

use super::msgpack::{self, as_bytes, map_get};

/// Current hints version.
pub const VERSION: u64 = 2;

/// Errors decoding a hints file.
#[derive(Debug, thiserror::Error)]
pub enum HintsError {
    #[error("hints: {0}")]
    Msgpack(#[from] msgpack::DecodeError),
    #[error("hints: {0}")]
    Malformed(String),
    #[error("hints: unknown version {0}")]
    UnknownVersion(i64),
}

/// Decoded hints (version 2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// segment → number of live PUTs in it (borg lets this go negative on corrupt state).
    pub segments: BTreeMap<u32, i64>,
    /// segment → bytes that compaction could free.
    pub compact: BTreeMap<u32, u64>,
    /// Σ (len(data) + 41) over all PUT entries still present in segment files.
    pub storage_quota_use: u64,
    /// id → segments holding an older PUT of it that a later DELETE/PUT superseded.
    pub shadow_index: BTreeMap<[u8; 32], Vec<u32>>,
}

/// What a hints file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Version 2: usable as is.
    Current(Hints),
    /// Version 1 (borg 1.0): lacks freeable-space data; the caller must rebuild the
    /// hints (borg re-scans the sparse segments, replaying all segments is also correct).
    NeedsRebuild,
}

impl Hints {
    /// Encodes exactly as borg packs the dict.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            64 + self.segments.len() * 8 + self.compact.len() * 10 + self.shadow_index.len() * 40,
        );
        msgpack::write_map_len(&mut b, 5);
        msgpack::write_raw(&mut b, b"version");
        msgpack::write_uint(&mut b, VERSION);
        msgpack::write_raw(&mut b, b"segments");
        msgpack::write_map_len(&mut b, self.segments.len());
        for (&s, &n) in &self.segments {
            msgpack::write_uint(&mut b, s as u64);
            msgpack::write_int(&mut b, n);
        }
        msgpack::write_raw(&mut b, b"compact");
        msgpack::write_map_len(&mut b, self.compact.len());
        for (&s, &n) in &self.compact {
            msgpack::write_uint(&mut b, s as u64);
            msgpack::write_uint(&mut b, n);
        }
        msgpack::write_raw(&mut b, b"storage_quota_use");
        msgpack::write_uint(&mut b, self.storage_quota_use);
        msgpack::write_raw(&mut b, b"shadow_index");
        msgpack::write_map_len(&mut b, self.shadow_index.len());
        for (k, segs) in &self.shadow_index {
            msgpack::write_raw(&mut b, k);
            msgpack::write_array_len(&mut b, segs.len());
            for &s in segs {
                msgpack::write_uint(&mut b, s as u64);
            }
        }
        b
    }
}

fn int(v: &Value, what: &str) -> Result<i64, HintsError> {
    v.as_i64()
        .ok_or_else(|| HintsError::Malformed(format!("{what}: expected an integer, got {v}")))
}

fn segment_no(v: &Value, what: &str) -> Result<u32, HintsError> {
    let n = int(v, what)?;
    u32::try_from(n)
        .map_err(|_| HintsError::Malformed(format!("{what}: segment number {n} out of range")))
}

fn map<'a>(v: &'a Value, what: &str) -> Result<&'a [(Value, Value)], HintsError> {
    match v {
        Value::Map(m) => Ok(m),
        _ => Err(HintsError::Malformed(format!("{what}: expected a map"))),
    }
}

/// Decodes a hints file.
pub fn decode(data: &[u8]) -> Result<Decoded, HintsError> {
    let v = msgpack::decode_one(data)?;
    map(&v, "hints")?;
    let version = map_get(&v, b"version")
        .ok_or_else(|| HintsError::Malformed("no version".into()))
        .and_then(|x| int(x, "version"))?;
    match version {
        1 => return Ok(Decoded::NeedsRebuild),
        2 => {}
        n => return Err(HintsError::UnknownVersion(n)),
    }
    let mut h = Hints::default();
    let segs =
        map_get(&v, b"segments").ok_or_else(|| HintsError::Malformed("no segments".into()))?;
    for (k, n) in map(segs, "segments")? {
        h.segments
            .insert(segment_no(k, "segments")?, int(n, "segments")?);
    }
    let compact =
        map_get(&v, b"compact").ok_or_else(|| HintsError::Malformed("no compact".into()))?;
    for (k, n) in map(compact, "compact")? {
        let bytes = int(n, "compact")?;
        let bytes = u64::try_from(bytes)
            .map_err(|_| HintsError::Malformed(format!("compact: negative size {bytes}")))?;
        h.compact.insert(segment_no(k, "compact")?, bytes);
    }
    if let Some(q) = map_get(&v, b"storage_quota_use") {
        let q = int(q, "storage_quota_use")?;
        h.storage_quota_use = u64::try_from(q)
            .map_err(|_| HintsError::Malformed(format!("storage_quota_use: negative {q}")))?;
    }
    if let Some(si) = map_get(&v, b"shadow_index") {
        for (k, segs) in map(si, "shadow_index")? {
            let key: [u8; 32] = as_bytes(k)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| HintsError::Malformed("shadow_index: key is not 32 bytes".into()))?;
            let list = match segs {
                Value::Array(a) => a,
                _ => {
                    return Err(HintsError::Malformed(
                        "shadow_index: value is not a list".into(),
                    ))
                }
            };
            let list = list
                .iter()
                .map(|s| segment_no(s, "shadow_index"))
                .collect::<Result<Vec<_>, _>>()?;
            h.shadow_index.insert(key, list);
        }
    }
    Ok(Decoded::Current(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borg_example_bytes() {
        // hints.5 of the worked example in the format reference (borg 1.4.5, init + create).
        let mut h = Hints::default();
        for (s, n) in [(0, 0), (1, 0), (2, 4), (3, 0), (4, 1), (5, 0)] {
            h.segments.insert(s, n);
        }
        for (s, n) in [(1, 9), (0, 468), (3, 41), (5, 9)] {
            h.compact.insert(s, n);
        }
        h.storage_quota_use = 2184;
        h.shadow_index.insert([0u8; 32], vec![0]);
        let b = h.to_bytes();
        assert_eq!(b.len(), 123);
        assert_eq!(&b[..20], b"\x85\xa7version\x02\xa8segments\x86");
        assert_eq!(&b[b.len() - 3..], &[0x00, 0x91, 0x00]);
        assert_eq!(decode(&b).unwrap(), Decoded::Current(h));
    }

    #[test]
    fn version_handling() {
        let mut b = Vec::new();
        msgpack::write_map_len(&mut b, 3);
        msgpack::write_raw(&mut b, b"version");
        msgpack::write_uint(&mut b, 1);
        msgpack::write_raw(&mut b, b"segments");
        msgpack::write_map_len(&mut b, 0);
        msgpack::write_raw(&mut b, b"compact");
        msgpack::write_array_len(&mut b, 0);
        assert_eq!(decode(&b).unwrap(), Decoded::NeedsRebuild);
        b[9] = 3;
        assert!(matches!(decode(&b), Err(HintsError::UnknownVersion(3))));
        assert!(decode(b"\x92\x01").is_err());
        assert!(decode(&b[..5]).is_err());
    }

    #[test]
    fn optional_fields_and_negative_counts() {
        let mut b = Vec::new();
        msgpack::write_map_len(&mut b, 3);
        msgpack::write_raw(&mut b, b"version");
        msgpack::write_uint(&mut b, 2);
        msgpack::write_raw(&mut b, b"segments");
        msgpack::write_map_len(&mut b, 1);
        msgpack::write_uint(&mut b, 7);
        msgpack::write_int(&mut b, -1);
        msgpack::write_raw(&mut b, b"compact");
        msgpack::write_map_len(&mut b, 0);
        let Decoded::Current(h) = decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(h.segments[&7], -1);
        assert_eq!(h.storage_quota_use, 0);
        assert!(h.shadow_index.is_empty());
    }
}
