//! Maps carrying a TAM (manifest, archive): packing with sorted keys and a sealed `tam`
//! entry, and borg's unpack-and-verify (`KeyBase.unpack_and_verify_*`).

use rmpv::Value;

use super::{decode_exact, ObjectError, TamStatus};
use crate::format::msgpack::{as_bytes, write_map_len, write_raw, write_value};
use crate::format::tam::{self, TamKeySource};

/// Length of the random salt borg puts into every TAM.
pub const SALT_LEN: usize = 64;

/// Draws a fresh TAM salt.
pub fn random_salt() -> Result<[u8; SALT_LEN], ObjectError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::getrandom(&mut salt).map_err(|e| ObjectError::Random(e.to_string()))?;
    Ok(salt)
}

/// Packs `entries` (key, already packed value) plus a `tam` entry as one map with keys in
/// borg's `StableDict` order, then seals the TAM over the final bytes.
pub fn pack_sealed(
    mut entries: Vec<(Vec<u8>, Vec<u8>)>,
    key: &dyn TamKeySource,
    context: &[u8],
    salt: &[u8],
) -> Vec<u8> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let tam_at = entries.partition_point(|(k, _)| k.as_slice() < b"tam".as_slice());
    let total: usize = entries.iter().map(|(k, v)| k.len() + v.len() + 5).sum();
    let mut buf = Vec::with_capacity(total + 200);
    write_map_len(&mut buf, entries.len() + 1);
    let mut hmac_at = 0;
    for (i, (k, v)) in entries.iter().enumerate() {
        if i == tam_at {
            write_raw(&mut buf, b"tam");
            hmac_at = tam::write_placeholder(&mut buf, salt);
        }
        write_raw(&mut buf, k);
        buf.extend_from_slice(v);
    }
    if tam_at == entries.len() {
        write_raw(&mut buf, b"tam");
        hmac_at = tam::write_placeholder(&mut buf, salt);
    }
    tam::seal(&mut buf, hmac_at, key, salt, context);
    buf
}

/// Packs an arbitrary value like borg does after loading it with `object_hook=StableDict`:
/// every map's keys sorted (byte-string keys bytewise; others keep their place at the end).
pub fn write_sorted(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Map(m) => {
            let mut idx: Vec<usize> = (0..m.len()).collect();
            idx.sort_by(|&a, &b| match (as_bytes(&m[a].0), as_bytes(&m[b].0)) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.cmp(&b),
            });
            write_map_len(buf, m.len());
            for i in idx {
                write_sorted(buf, &m[i].0);
                write_sorted(buf, &m[i].1);
            }
        }
        Value::Array(a) => {
            crate::format::msgpack::write_array_len(buf, a.len());
            for x in a {
                write_sorted(buf, x);
            }
        }
        other => write_value(buf, other),
    }
}

/// The entries of an unpacked object with `tam` removed, and what the TAM said.
pub struct Unpacked {
    pub entries: Vec<(Value, Value)>,
    pub tam: TamStatus,
    /// The suite named by an unsupported TAM, for error messages.
    pub suite: String,
}

/// borg's `unpack_and_verify_*` without the policy: decodes `raw`, removes `tam` and
/// checks it against exactly the stored bytes. Callers turn the status into errors.
pub fn unpack(
    raw: &[u8],
    key: &dyn TamKeySource,
    context: &[u8],
    object: &'static str,
) -> Result<Unpacked, ObjectError> {
    let v = decode_exact(raw, object)?;
    let Value::Map(mut entries) = v else {
        return Err(ObjectError::NotAMap { object });
    };
    let mut tam_value = None;
    entries.retain(|(k, v)| {
        if as_bytes(k) == Some(b"tam") {
            // like a Python dict, the last duplicate wins
            tam_value = Some(v.clone());
            false
        } else {
            true
        }
    });
    let (tam, suite) = match tam_value {
        None => (TamStatus::Missing, String::new()),
        Some(t) => check(raw, &t, key, context),
    };
    Ok(Unpacked {
        entries,
        tam,
        suite,
    })
}

fn check(raw: &[u8], t: &Value, key: &dyn TamKeySource, context: &[u8]) -> (TamStatus, String) {
    let Value::Map(_) = t else {
        return (TamStatus::Invalid, String::new());
    };
    let get = |k: &[u8]| crate::format::msgpack::map_get(t, k);
    let suite = get(b"type")
        .map(|v| match as_bytes(v) {
            Some(b) => String::from_utf8_lossy(b).into_owned(),
            None => format!("{v}"),
        })
        .unwrap_or_else(|| "<none>".into());
    if suite.as_bytes() != tam::TAM_TYPE {
        return (TamStatus::UnsupportedSuite, suite);
    }
    let (Some(hmac), Some(salt)) = (
        get(b"hmac").and_then(as_bytes),
        get(b"salt").and_then(as_bytes),
    ) else {
        return (TamStatus::Invalid, suite);
    };
    if tam::verify(raw, hmac, salt, key, context) {
        (TamStatus::Verified, suite)
    } else {
        (TamStatus::Invalid, suite)
    }
}

/// Looks a key up among unpacked entries (the last duplicate wins, as in Python).
pub fn get<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| as_bytes(k) == Some(key.as_bytes()))
        .map(|(_, v)| v)
}

pub fn require<'a>(
    entries: &'a [(Value, Value)],
    key: &'static str,
    object: &'static str,
) -> Result<&'a Value, ObjectError> {
    get(entries, key).ok_or(ObjectError::MissingKey { object, key })
}

/// An integer version field, rendered for error messages if it is not one.
pub fn version(v: &Value, object: &'static str) -> Result<u64, ObjectError> {
    v.as_u64().ok_or_else(|| ObjectError::UnknownVersion {
        object,
        version: format!("{v}"),
    })
}
