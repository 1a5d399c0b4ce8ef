//! The manifest (`helpers/manifest.py: Manifest.load/write`, `item.pyx: ManifestItem`, §7.2):
//! the repository's list of archives, stored under the all-zero ID.

use std::collections::BTreeMap;

use rmpv::Value;

use super::item::{ChunkId, ITEM_KEYS};
use super::sealed::{self, random_salt, Unpacked};
use super::{field, limits, ObjectError, TamStatus};
use crate::format::msgpack::{
    as_bytes, map_get, write_array_len, write_map_len, write_raw, write_uint,
};
use crate::format::tam::{TamKeySource, CONTEXT_MANIFEST};
use crate::format::{timefmt, MAX_DATA_SIZE};

const OBJ: &str = "manifest";

/// One archive as listed in the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestArchive {
    /// ID of the archive metadata object.
    pub id: ChunkId,
    /// The archive's start time (its `time`); what `list` sorts by and `prune` judges.
    pub time: String,
}

/// The manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Version read (1 or 2); borg 1.x always writes 1, and so do we.
    pub version: u32,
    /// Archives by name (raw bytes, ≤ 255 for borg 1.2).
    pub archives: BTreeMap<Vec<u8>, ManifestArchive>,
    /// The `config` map, preserved as read (`tam_required`, `feature_flags`, ...). Raw
    /// strings decode as `Value::String` (whatever their bytes), as `rmpv` reads them.
    pub config: Value,
    /// Valid item keys: after decoding, borg's `ITEM_KEYS ∪ stored item_keys`, sorted.
    pub item_keys: Vec<Vec<u8>>,
    /// Last-modified time, UTC `%Y-%m-%dT%H:%M:%S.%f`; must grow with every write
    /// (clients compare it as a string to detect rollback). Empty if never written.
    pub timestamp: String,
}

impl Manifest {
    /// The manifest `borg init` writes: no archives, all item keys, and
    /// `config = {tam_required: True}` for keys that require TAM (else `{}`).
    pub fn new_empty(tam_required: bool) -> Manifest {
        let mut m = Manifest {
            version: 1,
            archives: BTreeMap::new(),
            config: Value::Map(Vec::new()),
            item_keys: ITEM_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect(),
            timestamp: String::new(),
        };
        if tam_required {
            m.set_config_tam_required();
        }
        m
    }

    /// borg's truthiness of `config[b'tam_required']`.
    pub fn config_tam_required(&self) -> bool {
        map_get(&self.config, b"tam_required").is_some_and(field::truthy)
    }

    /// Sets `config[b'tam_required'] = True`, as `Manifest.write` does for keys that
    /// require TAM.
    pub fn set_config_tam_required(&mut self) {
        if !matches!(self.config, Value::Map(_)) {
            self.config = Value::Map(Vec::new());
        }
        if let Value::Map(m) = &mut self.config {
            match m
                .iter_mut()
                .find(|(k, _)| as_bytes(k) == Some(b"tam_required"))
            {
                Some((_, v)) => *v = Value::Boolean(true),
                None => m.push((Value::from("tam_required"), Value::Boolean(true))),
            }
        }
    }

    /// Mandatory repository features per operation (`config.feature_flags.<op>.mandatory`).
    /// borg 1.x supports none, so any entry locks borg 1.x — and us — out.
    pub fn mandatory_features(&self) -> Result<BTreeMap<String, Vec<String>>, ObjectError> {
        let mut out = BTreeMap::new();
        let Some(ff) = map_get(&self.config, b"feature_flags") else {
            return Ok(out);
        };
        let Value::Map(ops) = ff else {
            return Err(field::wrong(OBJ, "config.feature_flags", "map"));
        };
        for (op, req) in ops {
            let op = String::from_utf8_lossy(as_bytes(op).ok_or_else(|| {
                field::wrong(OBJ, "config.feature_flags", "byte-string operation")
            })?)
            .into_owned();
            let Value::Map(_) = req else {
                return Err(field::wrong(
                    OBJ,
                    "config.feature_flags",
                    "map per operation",
                ));
            };
            if let Some(m) = map_get(req, b"mandatory") {
                let names = field::bytes_list(m, OBJ, "config.feature_flags.mandatory")?;
                if !names.is_empty() {
                    out.insert(
                        op,
                        names
                            .iter()
                            .map(|n| String::from_utf8_lossy(n).into_owned())
                            .collect(),
                    );
                }
            }
        }
        Ok(out)
    }

    /// Packs the manifest with a TAM (context `manifest`) under a fresh random salt.
    pub fn encode_with_tam(&self, key: &dyn TamKeySource) -> Result<Vec<u8>, ObjectError> {
        self.encode_with_tam_salt(key, &random_salt()?)
    }

    /// Packs with a given salt, byte for byte what borg's `Manifest.write` produces for the
    /// same content and salt. Refuses anything borg 1.2's limited manifest unpacker would
    /// reject (strings > 255 bytes, arrays > 100, > 400 000 archives, ext types) and
    /// objects over `MAX_DATA_SIZE`.
    pub fn encode_with_tam_salt(
        &self,
        key: &dyn TamKeySource,
        salt: &[u8],
    ) -> Result<Vec<u8>, ObjectError> {
        self.validate()?;
        let mut item_keys = self.item_keys.clone();
        item_keys.sort();
        item_keys.dedup();
        let mut archives = Vec::with_capacity(self.archives.len() * 90 + 8);
        write_map_len(&mut archives, self.archives.len());
        for (name, a) in &self.archives {
            write_raw(&mut archives, name);
            write_map_len(&mut archives, 2);
            write_raw(&mut archives, b"id");
            write_raw(&mut archives, &a.id);
            write_raw(&mut archives, b"time");
            write_raw(&mut archives, a.time.as_bytes());
        }
        let mut config = Vec::new();
        match &self.config {
            Value::Nil => write_map_len(&mut config, 0),
            c => sealed::write_sorted(&mut config, c),
        }
        let mut keys = Vec::new();
        write_array_len(&mut keys, item_keys.len());
        for k in &item_keys {
            write_raw(&mut keys, k);
        }
        let mut ts = Vec::new();
        write_raw(&mut ts, self.timestamp.as_bytes());
        let mut version = Vec::new();
        write_uint(&mut version, 1);
        let entries = vec![
            (b"archives".to_vec(), archives),
            (b"config".to_vec(), config),
            (b"item_keys".to_vec(), keys),
            (b"timestamp".to_vec(), ts),
            (b"version".to_vec(), version),
        ];
        let out = sealed::pack_sealed(entries, key, CONTEXT_MANIFEST, salt);
        if out.len() > MAX_DATA_SIZE {
            return Err(limit(format!(
                "{} bytes is more than a repository object may hold ({MAX_DATA_SIZE})",
                out.len()
            )));
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), ObjectError> {
        if self.archives.len() > limits::MAX_ARCHIVES {
            return Err(limit(format!(
                "{} archives, borg allows {}",
                self.archives.len(),
                limits::MAX_ARCHIVES
            )));
        }
        for (name, a) in &self.archives {
            if name.len() > limits::MANIFEST_MAX_STR {
                return Err(limit(format!(
                    "archive name {:?} is {} bytes, borg 1.2 reads at most 255",
                    String::from_utf8_lossy(name),
                    name.len()
                )));
            }
            check_time(&a.time, "archive time")?;
        }
        check_time(&self.timestamp, "timestamp")?;
        if self.item_keys.len() > limits::MANIFEST_MAX_ARRAY {
            return Err(limit(format!(
                "{} item keys, borg 1.2 reads at most 100",
                self.item_keys.len()
            )));
        }
        if let Some(k) = self
            .item_keys
            .iter()
            .find(|k| k.len() > limits::MANIFEST_MAX_STR)
        {
            return Err(limit(format!("item key of {} bytes", k.len())));
        }
        match &self.config {
            Value::Map(_) | Value::Nil => check_limits(&self.config, "config"),
            _ => Err(field::wrong(OBJ, "config", "map")),
        }
    }

    /// Decodes and authenticates a manifest like borg's `Manifest.load`:
    /// `tam_required` and no TAM → [`ObjectError::TamRequired`]; a TAM that does not match →
    /// [`ObjectError::TamInvalid`] (always); version must be 1 or 2; mandatory feature
    /// flags → [`ObjectError::MandatoryFeatureUnsupported`].
    pub fn decode(
        raw: &[u8],
        key: &dyn TamKeySource,
        tam_required: bool,
    ) -> Result<(Manifest, TamStatus), ObjectError> {
        if raw.starts_with(&[0xc1; 4]) {
            return Err(ObjectError::UnsupportedManifest);
        }
        let Unpacked {
            entries,
            tam,
            suite,
        } = sealed::unpack(raw, key, CONTEXT_MANIFEST, OBJ)?;
        match tam {
            TamStatus::Missing if tam_required => {
                return Err(ObjectError::TamRequired { object: OBJ })
            }
            TamStatus::Invalid => return Err(ObjectError::TamInvalid { object: OBJ }),
            TamStatus::UnsupportedSuite if tam_required => {
                return Err(ObjectError::TamUnsupportedSuite { object: OBJ, suite })
            }
            _ => {}
        }
        let version = match sealed::get(&entries, "version") {
            Some(v) => sealed::version(v, OBJ)?,
            None => 0,
        };
        if version != 1 && version != 2 {
            return Err(ObjectError::UnknownVersion {
                object: OBJ,
                version: version.to_string(),
            });
        }
        let Value::Map(arch) = sealed::require(&entries, "archives", OBJ)? else {
            return Err(field::wrong(OBJ, "archives", "map"));
        };
        let mut archives = BTreeMap::new();
        for (name, a) in arch {
            let name = field::bytes(name, OBJ, "archives")?;
            let Value::Map(_) = a else {
                return Err(field::wrong(OBJ, "archives", "map {id, time} per archive"));
            };
            let id = map_get(a, b"id").ok_or(ObjectError::MissingKey {
                object: OBJ,
                key: "archives.id",
            })?;
            let time = map_get(a, b"time").ok_or(ObjectError::MissingKey {
                object: OBJ,
                key: "archives.time",
            })?;
            archives.insert(
                name,
                ManifestArchive {
                    id: field::id32(id, OBJ, "archives.id")?,
                    time: field::text(time, OBJ, "archives.time")?,
                },
            );
        }
        let config = match sealed::get(&entries, "config") {
            None => Value::Map(Vec::new()),
            Some(c @ Value::Map(_)) => c.clone(),
            Some(_) => return Err(field::wrong(OBJ, "config", "map")),
        };
        let mut item_keys: Vec<Vec<u8>> = ITEM_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect();
        if let Some(k) = sealed::get(&entries, "item_keys") {
            item_keys.extend(field::bytes_list(k, OBJ, "item_keys")?);
        }
        item_keys.sort();
        item_keys.dedup();
        let timestamp = match sealed::get(&entries, "timestamp") {
            None | Some(Value::Nil) => String::new(),
            Some(t) => field::text(t, OBJ, "timestamp")?,
        };
        let m = Manifest {
            version: version as u32,
            archives,
            config,
            item_keys,
            timestamp,
        };
        let mandatory = m.mandatory_features()?;
        if !mandatory.is_empty() {
            let mut all: Vec<String> = mandatory.into_values().flatten().collect();
            all.sort();
            all.dedup();
            return Err(ObjectError::MandatoryFeatureUnsupported(all));
        }
        Ok((m, tam))
    }
}

fn limit(what: String) -> ObjectError {
    ObjectError::Limit { object: OBJ, what }
}

fn check_time(t: &str, what: &str) -> Result<(), ObjectError> {
    if t.len() > limits::MANIFEST_MAX_STR || timefmt::parse(t).is_none() {
        return Err(ObjectError::Invalid {
            object: OBJ,
            reason: format!("{what} {t:?} is not borg's %Y-%m-%dT%H:%M:%S.%f"),
        });
    }
    Ok(())
}

/// borg 1.2's limited unpacker, applied to a value we are about to write.
fn check_limits(v: &Value, path: &str) -> Result<(), ObjectError> {
    match v {
        Value::String(s) if s.as_bytes().len() > limits::MANIFEST_MAX_STR => Err(limit(format!(
            "{path}: string of {} bytes (borg 1.2 reads at most 255)",
            s.as_bytes().len()
        ))),
        Value::Binary(b) if b.len() > limits::MANIFEST_MAX_STR => Err(limit(format!(
            "{path}: string of {} bytes (borg 1.2 reads at most 255)",
            b.len()
        ))),
        Value::Array(a) => {
            if a.len() > limits::MANIFEST_MAX_ARRAY {
                return Err(limit(format!(
                    "{path}: array of {} (borg 1.2 reads at most 100)",
                    a.len()
                )));
            }
            a.iter().try_for_each(|x| check_limits(x, path))
        }
        Value::Map(m) => {
            if m.len() > limits::MAX_ARCHIVES {
                return Err(limit(format!("{path}: map of {} entries", m.len())));
            }
            m.iter().try_for_each(|(k, x)| {
                check_limits(k, path)?;
                check_limits(x, &format!("{path}.{}", super::key_name(k)))
            })
        }
        Value::Ext(..) => Err(limit(format!(
            "{path}: msgpack ext type (borg 1.2 refuses them)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    struct Plain;
    impl TamKeySource for Plain {
        fn tam_key(&self, salt: &[u8], context: &[u8]) -> Zeroizing<Vec<u8>> {
            Zeroizing::new([salt, context].concat())
        }
    }

    fn manifest() -> Manifest {
        let mut m = Manifest::new_empty(false);
        m.timestamp = "2026-11-23T06:23:30.142571".into();
        m.archives.insert(
            b"arch1".to_vec(),
            ManifestArchive {
                id: [0xa3; 32],
                time: "2026-11-23T06:23:30.136596".into(),
            },
        );
        m
    }

    #[test]
    fn layout_like_borg_example() {
        let raw = manifest().encode_with_tam(&Plain).unwrap();
        // §7.2/§11: 504 bytes, `86 a8 "archives" 81 a5 "arch1" ...`
        assert_eq!(raw.len(), 504);
        assert!(hex::encode(&raw).starts_with("86a8617263686976657381a56172636831"));
        let (m, tam) = Manifest::decode(&raw, &Plain, true).unwrap();
        assert_eq!(tam, TamStatus::Verified);
        assert_eq!(m, manifest());
    }

    #[test]
    fn tam_policy() {
        let raw = manifest().encode_with_tam(&Plain).unwrap();
        let mut bad = raw.clone();
        let at = bad.windows(5).position(|w| w == b"arch1").unwrap();
        bad[at] = b'A';
        assert!(matches!(
            Manifest::decode(&bad, &Plain, false),
            Err(ObjectError::TamInvalid { .. })
        ));
        // strip the tam: rebuild the map without it
        let mut v = crate::format::msgpack::decode_one(&raw).unwrap();
        if let Value::Map(m) = &mut v {
            m.retain(|(k, _)| as_bytes(k) != Some(b"tam"));
        }
        let mut untagged = Vec::new();
        crate::format::msgpack::write_value(&mut untagged, &v);
        assert!(matches!(
            Manifest::decode(&untagged, &Plain, true),
            Err(ObjectError::TamRequired { .. })
        ));
        assert_eq!(
            Manifest::decode(&untagged, &Plain, false).unwrap().1,
            TamStatus::Missing
        );
        assert!(matches!(
            Manifest::decode(&[0xc1; 8], &Plain, false),
            Err(ObjectError::UnsupportedManifest)
        ));
    }

    #[test]
    fn config_flags() {
        let mut m = manifest();
        assert!(!m.config_tam_required());
        m.set_config_tam_required();
        m.set_config_tam_required();
        assert!(m.config_tam_required());
        assert_eq!(Manifest::new_empty(true).config, m.config);
        let ff = Value::Map(vec![(
            Value::from("write"),
            Value::Map(vec![(
                Value::from("mandatory"),
                Value::Array(vec![Value::from("future")]),
            )]),
        )]);
        if let Value::Map(c) = &mut m.config {
            c.push((Value::from("feature_flags"), ff));
        }
        let raw = m.encode_with_tam(&Plain).unwrap();
        match Manifest::decode(&raw, &Plain, true) {
            Err(ObjectError::MandatoryFeatureUnsupported(f)) => {
                assert_eq!(f, vec!["future".to_string()])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_of_borg_12() {
        let mut m = manifest();
        m.archives.insert(
            vec![b'x'; 256],
            ManifestArchive {
                id: [0; 32],
                time: m.timestamp.clone(),
            },
        );
        assert!(matches!(
            m.encode_with_tam(&Plain),
            Err(ObjectError::Limit { .. })
        ));
        let mut m = manifest();
        m.config = Value::Map(vec![(
            Value::from("k"),
            Value::Array(vec![Value::Nil; 101]),
        )]);
        assert!(matches!(
            m.encode_with_tam(&Plain),
            Err(ObjectError::Limit { .. })
        ));
        let mut m = manifest();
        m.timestamp = String::new();
        assert!(m.encode_with_tam(&Plain).is_err());
    }

    #[test]
    fn item_keys_union_and_version() {
        let mut m = manifest();
        m.item_keys.push(b"zz_future".to_vec());
        let raw = m.encode_with_tam(&Plain).unwrap();
        let (d, _) = Manifest::decode(&raw, &Plain, false).unwrap();
        assert_eq!(d.item_keys.len(), 24);
        let pos = raw
            .windows(9)
            .position(|w| w == b"\xa7version\x01")
            .unwrap();
        let mut v3 = raw.clone();
        v3[pos + 8] = 3;
        // the TAM breaks first; the version check needs an untagged manifest
        assert!(Manifest::decode(&v3, &Plain, false).is_err());
    }
}
