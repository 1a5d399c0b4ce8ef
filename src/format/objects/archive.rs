//! The archive metadata object (`archive.py: Archive.save`, `item.pyx: ArchiveItem`, §7.3).

use std::collections::BTreeMap;

use rmpv::Value;

use super::item::ChunkId;
use super::sealed::{self, random_salt, require, Unpacked};
use super::{field, limits, ObjectError, TamStatus};
use crate::format::msgpack::{as_bytes, write_array_len, write_raw, write_uint};
use crate::format::tam::{TamKeySource, CONTEXT_ARCHIVE};
use crate::format::{timefmt, MAX_DATA_SIZE};

const OBJ: &str = "archive";

/// borg's `ARCHIVE_KEYS`, sorted: the keys `rebuild_manifest` recognises as the first key
/// of an archive object.
pub const ARCHIVE_KEYS: [&str; 21] = [
    "chunker_params",
    "cmdline",
    "comment",
    "csize",
    "csize_parts",
    "cwd",
    "hostname",
    "items",
    "name",
    "nfiles",
    "nfiles_parts",
    "recreate_args",
    "recreate_cmdline",
    "recreate_partial_chunks",
    "recreate_source_id",
    "size",
    "size_parts",
    "time",
    "time_end",
    "username",
    "version",
];

/// Keys `borg check` requires in an archive object.
pub const REQUIRED_ARCHIVE_KEYS: [&str; 5] = ["cmdline", "items", "name", "time", "version"];

/// Keys modelled by named fields; everything else lives in [`ArchiveMeta::extra`].
const MODELLED: [&str; 17] = [
    "chunker_params",
    "cmdline",
    "comment",
    "csize",
    "csize_parts",
    "cwd",
    "hostname",
    "items",
    "name",
    "nfiles",
    "nfiles_parts",
    "size",
    "size_parts",
    "time",
    "time_end",
    "username",
    "version",
];

/// Archive metadata. Byte strings are stored as given (borg's surrogate-escaped text).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveMeta {
    /// Always 1 in borg 1.x; readers refuse anything else.
    pub version: u32,
    pub name: Vec<u8>,
    /// Item-stream chunk IDs in stream order.
    pub items: Vec<ChunkId>,
    pub cmdline: Vec<Vec<u8>>,
    pub hostname: Vec<u8>,
    pub username: Vec<u8>,
    /// Start time, UTC `%Y-%m-%dT%H:%M:%S.%f` (also the manifest entry's `time`).
    pub time: String,
    pub time_end: String,
    pub comment: Vec<u8>,
    /// e.g. `[b"buzhash", 19, 23, 21, 4095]`; `Nil` means absent (very old archives).
    pub chunker_params: Value,
    /// Written by borg 1.4 only.
    pub cwd: Option<Vec<u8>>,
    /// Original size, stored size and number of regular files of the archive's content.
    pub size: u64,
    pub csize: u64,
    pub nfiles: u64,
    pub size_parts: u64,
    pub csize_parts: u64,
    pub nfiles_parts: u64,
    /// Keys not modelled above (`recreate_cmdline` and other recreate leftovers), kept
    /// verbatim so re-writing an archive object loses nothing.
    pub extra: BTreeMap<Vec<u8>, Value>,
}

impl Default for ArchiveMeta {
    fn default() -> Self {
        ArchiveMeta {
            version: 1,
            name: Vec::new(),
            items: Vec::new(),
            cmdline: Vec::new(),
            hostname: Vec::new(),
            username: Vec::new(),
            time: String::new(),
            time_end: String::new(),
            comment: Vec::new(),
            chunker_params: Value::Nil,
            cwd: None,
            size: 0,
            csize: 0,
            nfiles: 0,
            size_parts: 0,
            csize_parts: 0,
            nfiles_parts: 0,
            extra: BTreeMap::new(),
        }
    }
}

impl ArchiveMeta {
    /// Packs the object with a TAM (context `archive`) under a fresh random salt.
    pub fn encode_with_tam(&self, key: &dyn TamKeySource) -> Result<Vec<u8>, ObjectError> {
        self.encode_with_tam_salt(key, &random_salt()?)
    }

    /// Packs with a given salt — what `borg check --repair` does when it re-seals an
    /// archive it rewrites (it keeps the old salt).
    ///
    /// Keys are sorted like borg's `StableDict` (`chunker_params` first) and `version` is a
    /// positive fixint, so `rebuild_manifest` can recognise the object. Refuses what borg
    /// could not read back: a version other than 1, names over 255 bytes (the manifest
    /// limit of borg 1.2), objects over `MAX_DATA_SIZE`.
    pub fn encode_with_tam_salt(
        &self,
        key: &dyn TamKeySource,
        salt: &[u8],
    ) -> Result<Vec<u8>, ObjectError> {
        self.validate()?;
        let mut e: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(18 + self.extra.len());
        let mut put = |k: &str, f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = Vec::new();
            f(&mut v);
            e.push((k.as_bytes().to_vec(), v));
        };
        if !self.chunker_params.is_nil() {
            put("chunker_params", &|b| {
                sealed::write_sorted(b, &self.chunker_params)
            });
        }
        put("cmdline", &|b| write_bytes_list(b, &self.cmdline));
        put("comment", &|b| write_raw(b, &self.comment));
        put("csize", &|b| write_uint(b, self.csize));
        put("csize_parts", &|b| write_uint(b, self.csize_parts));
        if let Some(cwd) = &self.cwd {
            put("cwd", &|b| write_raw(b, cwd));
        }
        put("hostname", &|b| write_raw(b, &self.hostname));
        put("items", &|b| {
            write_array_len(b, self.items.len());
            for id in &self.items {
                write_raw(b, id);
            }
        });
        put("name", &|b| write_raw(b, &self.name));
        put("nfiles", &|b| write_uint(b, self.nfiles));
        put("nfiles_parts", &|b| write_uint(b, self.nfiles_parts));
        put("size", &|b| write_uint(b, self.size));
        put("size_parts", &|b| write_uint(b, self.size_parts));
        put("time", &|b| write_raw(b, self.time.as_bytes()));
        put("time_end", &|b| write_raw(b, self.time_end.as_bytes()));
        put("username", &|b| write_raw(b, &self.username));
        put("version", &|b| write_uint(b, self.version.into()));
        for (k, v) in &self.extra {
            let mut b = Vec::new();
            sealed::write_sorted(&mut b, v);
            e.push((k.clone(), b));
        }
        let out = sealed::pack_sealed(e, key, CONTEXT_ARCHIVE, salt);
        if out.len() > MAX_DATA_SIZE {
            return Err(ObjectError::Limit {
                object: OBJ,
                what: format!(
                    "{} bytes is more than a repository object may hold ({MAX_DATA_SIZE}); {} item chunks",
                    out.len(),
                    self.items.len()
                ),
            });
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), ObjectError> {
        if self.version != 1 {
            return Err(ObjectError::UnknownVersion {
                object: OBJ,
                version: self.version.to_string(),
            });
        }
        if self.name.len() > limits::MANIFEST_MAX_STR {
            return Err(ObjectError::Limit {
                object: OBJ,
                what: format!(
                    "name is {} bytes, borg 1.2 reads at most 255",
                    self.name.len()
                ),
            });
        }
        for (what, t) in [("time", &self.time), ("time_end", &self.time_end)] {
            if timefmt::parse(t).is_none() {
                return Err(ObjectError::Invalid {
                    object: OBJ,
                    reason: format!("{what} {t:?} is not borg's %Y-%m-%dT%H:%M:%S.%f"),
                });
            }
        }
        for k in self.extra.keys() {
            if k == b"tam" || MODELLED.iter().any(|m| m.as_bytes() == k.as_slice()) {
                return Err(ObjectError::Invalid {
                    object: OBJ,
                    reason: format!(
                        "extra key {:?} clashes with a field",
                        String::from_utf8_lossy(k)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Decodes an archive object the way borg 1.4 loads one for list/extract/cache sync
    /// (`unpack_and_verify_archive(force_tam_not_required=True)`): a missing TAM is
    /// reported as [`TamStatus::Missing`] for the caller to judge (`borg check` refuses such
    /// archives in keyed modes), an invalid TAM is an error.
    pub fn decode(
        raw: &[u8],
        key: &dyn TamKeySource,
    ) -> Result<(ArchiveMeta, TamStatus), ObjectError> {
        let (meta, tam) = Self::decode_unverified(raw, key)?;
        if tam == TamStatus::Invalid {
            return Err(ObjectError::TamInvalid { object: OBJ });
        }
        Ok((meta, tam))
    }

    /// Like [`decode`](Self::decode) but reports an invalid TAM as a status instead of
    /// failing — for tools that must look at such an object (check, repair).
    pub fn decode_unverified(
        raw: &[u8],
        key: &dyn TamKeySource,
    ) -> Result<(ArchiveMeta, TamStatus), ObjectError> {
        let Unpacked { entries, tam, .. } = sealed::unpack(raw, key, CONTEXT_ARCHIVE, OBJ)?;
        let version = sealed::version(require(&entries, "version", OBJ)?, OBJ)?;
        if version != 1 {
            return Err(ObjectError::UnknownVersion {
                object: OBJ,
                version: version.to_string(),
            });
        }
        let mut m = ArchiveMeta {
            version: 1,
            ..Default::default()
        };
        let (mut name, mut items, mut cmdline, mut time) = (false, false, false, false);
        let mut time_end = None;
        for (k, v) in entries {
            let Some(key) = as_bytes(&k) else {
                return Err(field::wrong(OBJ, &super::key_name(&k), "byte-string key"));
            };
            let kn = String::from_utf8_lossy(key).into_owned();
            let uint = |v: &Value| field::uint::<u64>(v, OBJ, &kn, "unsigned int");
            match key {
                b"version" => {}
                b"name" => {
                    m.name = field::bytes(&v, OBJ, &kn)?;
                    name = true;
                }
                b"items" => {
                    m.items = field::array(&v, OBJ, &kn)?
                        .iter()
                        .map(|x| field::id32(x, OBJ, &kn))
                        .collect::<Result<_, _>>()?;
                    items = true;
                }
                b"cmdline" => {
                    m.cmdline = field::bytes_list(&v, OBJ, &kn)?;
                    cmdline = true;
                }
                b"hostname" => m.hostname = field::bytes(&v, OBJ, &kn)?,
                b"username" => m.username = field::bytes(&v, OBJ, &kn)?,
                b"time" => {
                    m.time = field::text(&v, OBJ, &kn)?;
                    time = true;
                }
                b"time_end" => time_end = Some(field::text(&v, OBJ, &kn)?),
                b"comment" => m.comment = field::bytes(&v, OBJ, &kn)?,
                b"chunker_params" => m.chunker_params = v,
                b"cwd" => m.cwd = Some(field::bytes(&v, OBJ, &kn)?),
                b"size" => m.size = uint(&v)?,
                b"csize" => m.csize = uint(&v)?,
                b"nfiles" => m.nfiles = uint(&v)?,
                b"size_parts" => m.size_parts = uint(&v)?,
                b"csize_parts" => m.csize_parts = uint(&v)?,
                b"nfiles_parts" => m.nfiles_parts = uint(&v)?,
                _ => {
                    m.extra.insert(key.to_vec(), v);
                }
            }
        }
        for (have, key) in [
            (name, "name"),
            (items, "items"),
            (cmdline, "cmdline"),
            (time, "time"),
        ] {
            if !have {
                return Err(ObjectError::MissingKey { object: OBJ, key });
            }
        }
        // borg: `metadata.get('time_end') or metadata.time`
        m.time_end = time_end
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| m.time.clone());
        Ok((m, tam))
    }
}

fn write_bytes_list(buf: &mut Vec<u8>, l: &[Vec<u8>]) {
    write_array_len(buf, l.len());
    for x in l {
        write_raw(buf, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::msgpack::{write_map_len, write_value};
    use zeroize::Zeroizing;

    struct Plain;
    impl TamKeySource for Plain {
        fn tam_key(&self, salt: &[u8], context: &[u8]) -> Zeroizing<Vec<u8>> {
            Zeroizing::new([salt, context].concat())
        }
    }

    fn meta() -> ArchiveMeta {
        ArchiveMeta {
            version: 1,
            name: b"arch1".to_vec(),
            items: vec![[0xb0; 32]],
            cmdline: vec![b"borg".to_vec(), b"create".to_vec()],
            hostname: b"vm".to_vec(),
            username: b"root".to_vec(),
            time: "2026-11-23T06:23:30.136596".into(),
            time_end: "2026-11-23T06:23:30.139603".into(),
            comment: vec![],
            chunker_params: Value::Array(vec![
                Value::from("buzhash"),
                19.into(),
                23.into(),
                21.into(),
                4095.into(),
            ]),
            cwd: Some(b"/srv/ex".to_vec()),
            size: 1036,
            csize: 287,
            nfiles: 2,
            ..Default::default()
        }
    }

    #[test]
    fn layout_like_borg() {
        let raw = meta().encode_with_tam(&Plain).unwrap();
        // §11.3: de 00 12, "chunker_params", [buzhash, 19, 23, 21, 4095]
        assert_eq!(
            hex::encode(&raw[..33]),
            "de0012ae6368756e6b65725f706172616d7395a762757a68617368131715cd0fff"
        );
        assert!(raw.windows(9).any(|w| w == b"\xa7version\x01"));
        let (m, tam) = ArchiveMeta::decode(&raw, &Plain).unwrap();
        assert_eq!(tam, TamStatus::Verified);
        assert_eq!(m, meta());
    }

    #[test]
    fn tampered_is_refused_missing_is_reported() {
        let mut raw = meta().encode_with_tam(&Plain).unwrap();
        let at = raw.windows(3).position(|w| w == b"\xa2vm").unwrap() + 1;
        raw[at] = b'V';
        assert!(matches!(
            ArchiveMeta::decode(&raw, &Plain),
            Err(ObjectError::TamInvalid { .. })
        ));
        assert_eq!(
            ArchiveMeta::decode_unverified(&raw, &Plain).unwrap().1,
            TamStatus::Invalid
        );
        // without tam
        let mut b = Vec::new();
        write_map_len(&mut b, 5);
        for (k, v) in [
            ("version", Value::from(1)),
            ("name", Value::from("a")),
            ("items", Value::Array(vec![])),
            ("cmdline", Value::Array(vec![])),
            ("time", Value::from("2020-01-01T00:00:00")),
        ] {
            write_raw(&mut b, k.as_bytes());
            write_value(&mut b, &v);
        }
        let (m, tam) = ArchiveMeta::decode(&b, &Plain).unwrap();
        assert_eq!(tam, TamStatus::Missing);
        assert_eq!(m.time_end, m.time);
    }

    #[test]
    fn encode_refuses_what_borg_cannot_read() {
        let mut m = meta();
        m.name = vec![b'n'; 256];
        assert!(matches!(
            m.encode_with_tam(&Plain),
            Err(ObjectError::Limit { .. })
        ));
        let mut m = meta();
        m.version = 2;
        assert!(m.encode_with_tam(&Plain).is_err());
        let mut m = meta();
        m.time = "yesterday".into();
        assert!(m.encode_with_tam(&Plain).is_err());
        let mut m = meta();
        m.extra.insert(b"name".to_vec(), Value::Nil);
        assert!(m.encode_with_tam(&Plain).is_err());
        let mut m = meta();
        m.items = vec![[0; 32]; MAX_DATA_SIZE / 34];
        assert!(matches!(
            m.encode_with_tam(&Plain),
            Err(ObjectError::Limit { .. })
        ));
    }

    #[test]
    fn extra_keys_survive() {
        let mut m = meta();
        m.extra.insert(
            b"recreate_cmdline".to_vec(),
            Value::Array(vec![Value::from("borg")]),
        );
        let raw = m.encode_with_tam(&Plain).unwrap();
        assert_eq!(ArchiveMeta::decode(&raw, &Plain).unwrap().0, m);
    }

    #[test]
    fn wrong_version_and_types() {
        let mut m = meta();
        m.extra.insert(b"zzz".to_vec(), Value::Nil);
        let raw = m.encode_with_tam(&Plain).unwrap();
        let pos = raw
            .windows(9)
            .position(|w| w == b"\xa7version\x01")
            .unwrap();
        let mut bad = raw.clone();
        bad[pos + 8] = 2;
        assert!(matches!(
            ArchiveMeta::decode_unverified(&bad, &Plain),
            Err(ObjectError::UnknownVersion { .. })
        ));
        assert!(ArchiveMeta::decode(&raw[..raw.len() - 1], &Plain).is_err());
        assert!(ArchiveMeta::decode(&[0x91, 0x01], &Plain).is_err());
    }
}
