//! borg's passphrase-protected key blob (`KeyfileKeyBase._save/_load`,
//! `encrypt_key_file/decrypt_key_file`): the text stored as `key` in a repokey
//! repository's `config` and below the `BORG_KEY` line of a keyfile.
//!
//! Inner: msgpack `{chunk_seed, enc_hmac_key, enc_key, id_key, repository_id,
//! tam_required, version: 1}`. Outer: `{algorithm: "sha256", data, hash, iterations,
//! salt, version: 1}` where `kek = PBKDF2-HMAC-SHA256(passphrase, salt, iterations)`,
//! `hash = HMAC-SHA256(kek, inner)` and `data = AES-256-CTR(kek, zero IV)(inner)`.
//! The outer map is base64-encoded and wrapped at 70 columns.

mod keyfile;

pub use keyfile::{keyfile_name, keyfile_text, parse_keyfile};

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::Engine;
use hmac::{Hmac, Mac};
use rmpv::Value;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::crypto::KeyMaterial;
use super::msgpack::{self, as_bytes, map_get};

/// borg's `PBKDF2_ITERATIONS` for new key blobs (any count is accepted when reading).
pub const PBKDF2_ITERATIONS: u32 = 100_000;

/// Shortest decoded blob borg 1.4 accepts (a real one is about 400 bytes).
const MIN_BLOB_LEN: usize = 20;
/// borg's base64 line width (`textwrap.wrap` default).
const LINE_WIDTH: usize = 70;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyBlobError {
    /// The passphrase does not unlock the blob (its HMAC did not verify).
    #[error("passphrase is incorrect for this key")]
    WrongPassphrase,
    #[error("key data is not valid base64: {0}")]
    Base64(String),
    #[error("key data is suspiciously short ({0} bytes)")]
    TooShort(usize),
    #[error("{what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} version {version} is not supported (only version 1)")]
    UnsupportedVersion { what: &'static str, version: String },
    #[error("encrypted key algorithm {0:?} is not supported (only \"sha256\")")]
    UnsupportedAlgorithm(String),
    #[error("not a borg key file: {0}")]
    NotAKeyFile(String),
}

fn malformed(what: &'static str, reason: impl Into<String>) -> KeyBlobError {
    KeyBlobError::Malformed {
        what,
        reason: reason.into(),
    }
}

/// Python's `textwrap.wrap(b2a_base64(data))` for a string without spaces: 70-char lines.
fn wrap_base64(data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(LINE_WIDTH)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    lines.join("\n")
}

/// Decodes base64 leniently like Python's `a2b_base64`: characters outside the alphabet
/// (line breaks, tabs of config continuation lines) are skipped.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, KeyBlobError> {
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(&clean)
        .map_err(|e| KeyBlobError::Base64(e.to_string()))
}

fn aes_ctr_zero_iv(key: &[u8; 32], buf: &mut [u8]) {
    let mut c = Aes256Ctr::new(key.into(), (&[0u8; 16]).into());
    c.apply_keystream(buf);
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m
}

fn kdf(passphrase: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut kek = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(passphrase, salt, iterations, &mut kek[..]);
    kek
}

/// The inner key dict as borg packs it (keys sorted, byte strings as raw).
fn pack_material(m: &KeyMaterial) -> Zeroizing<Vec<u8>> {
    let mut b = Zeroizing::new(Vec::with_capacity(400));
    msgpack::write_map_len(&mut b, 7);
    msgpack::write_raw(&mut b, b"chunk_seed");
    msgpack::write_int(&mut b, m.chunk_seed as i64);
    msgpack::write_raw(&mut b, b"enc_hmac_key");
    msgpack::write_raw(&mut b, &m.enc_hmac_key);
    msgpack::write_raw(&mut b, b"enc_key");
    msgpack::write_raw(&mut b, &m.enc_key);
    msgpack::write_raw(&mut b, b"id_key");
    msgpack::write_raw(&mut b, &m.id_key);
    msgpack::write_raw(&mut b, b"repository_id");
    msgpack::write_raw(&mut b, &m.repository_id);
    msgpack::write_raw(&mut b, b"tam_required");
    msgpack::write_bool(&mut b, m.tam_required);
    msgpack::write_raw(&mut b, b"version");
    msgpack::write_uint(&mut b, 1);
    b
}

/// Encrypts key material under a passphrase with a fresh random salt; returns borg's
/// wrapped base64 text (no trailing newline).
pub fn encrypt_key_blob(material: &KeyMaterial, passphrase: &[u8], iterations: u32) -> String {
    let mut salt = [0u8; 32];
    getrandom::getrandom(&mut salt).expect("the operating system's random number generator failed");
    encrypt_key_blob_with_salt(material, passphrase, iterations, &salt)
}

fn encrypt_key_blob_with_salt(
    material: &KeyMaterial,
    passphrase: &[u8],
    iterations: u32,
    salt: &[u8; 32],
) -> String {
    let iterations = iterations.max(1);
    let mut data = pack_material(material);
    let kek = kdf(passphrase, salt, iterations);
    let hash = hmac_sha256(&kek[..], &data).finalize().into_bytes();
    aes_ctr_zero_iv(&kek, &mut data);
    let mut outer = Vec::with_capacity(data.len() + 120);
    msgpack::write_map_len(&mut outer, 6);
    msgpack::write_raw(&mut outer, b"algorithm");
    msgpack::write_raw(&mut outer, b"sha256");
    msgpack::write_raw(&mut outer, b"data");
    msgpack::write_raw(&mut outer, &data);
    msgpack::write_raw(&mut outer, b"hash");
    msgpack::write_raw(&mut outer, &hash);
    msgpack::write_raw(&mut outer, b"iterations");
    msgpack::write_uint(&mut outer, iterations as u64);
    msgpack::write_raw(&mut outer, b"salt");
    msgpack::write_raw(&mut outer, salt);
    msgpack::write_raw(&mut outer, b"version");
    msgpack::write_uint(&mut outer, 1);
    wrap_base64(&outer)
}

fn get<'a>(map: &'a Value, what: &'static str, key: &str) -> Result<&'a Value, KeyBlobError> {
    map_get(map, key.as_bytes()).ok_or_else(|| malformed(what, format!("missing {key:?}")))
}

fn get_bytes<'a>(map: &'a Value, what: &'static str, key: &str) -> Result<&'a [u8], KeyBlobError> {
    as_bytes(get(map, what, key)?)
        .ok_or_else(|| malformed(what, format!("{key:?} is not a byte string")))
}

fn check_version(map: &Value, what: &'static str) -> Result<(), KeyBlobError> {
    let v = get(map, what, "version")?;
    if v.as_u64() != Some(1) {
        return Err(KeyBlobError::UnsupportedVersion {
            what,
            version: v.to_string(),
        });
    }
    Ok(())
}

fn fixed32(b: &[u8], what: &'static str, key: &str) -> Result<[u8; 32], KeyBlobError> {
    b.try_into()
        .map_err(|_| malformed(what, format!("{key:?} has {} bytes, expected 32", b.len())))
}

/// Overwrites every byte string inside a decoded value (they hold key secrets).
fn scrub(v: Value) {
    match v {
        Value::Binary(mut b) => b.zeroize(),
        Value::String(s) => s.into_bytes().zeroize(),
        Value::Map(m) => m.into_iter().for_each(|(k, x)| {
            scrub(k);
            scrub(x)
        }),
        Value::Array(a) => a.into_iter().for_each(scrub),
        _ => {}
    }
}

fn unpack_material(plain: &[u8]) -> Result<KeyMaterial, KeyBlobError> {
    const WHAT: &str = "key";
    let (v, _) = msgpack::read_value(plain).map_err(|e| malformed(WHAT, e.to_string()))?;
    let r = (|| {
        if !matches!(v, Value::Map(_)) {
            return Err(malformed(WHAT, "not a map"));
        }
        check_version(&v, WHAT)?;
        let seed = get(&v, WHAT, "chunk_seed")?
            .as_i64()
            .and_then(|s| i32::try_from(s).ok())
            .ok_or_else(|| malformed(WHAT, "\"chunk_seed\" is not a 32-bit integer"))?;
        let tam_required = match map_get(&v, b"tam_required") {
            None => false,
            Some(Value::Boolean(b)) => *b,
            Some(Value::Integer(i)) => i.as_u64() != Some(0),
            Some(_) => return Err(malformed(WHAT, "\"tam_required\" is not a boolean")),
        };
        Ok(KeyMaterial {
            repository_id: fixed32(get_bytes(&v, WHAT, "repository_id")?, WHAT, "repository_id")?,
            enc_key: fixed32(get_bytes(&v, WHAT, "enc_key")?, WHAT, "enc_key")?,
            enc_hmac_key: get_bytes(&v, WHAT, "enc_hmac_key")?.to_vec(),
            id_key: get_bytes(&v, WHAT, "id_key")?.to_vec(),
            chunk_seed: seed,
            tam_required,
        })
    })();
    scrub(v);
    r
}

/// Decrypts a key blob (repokey `config` value or keyfile body; whitespace anywhere is
/// ignored). A passphrase that does not verify is [`KeyBlobError::WrongPassphrase`]; every
/// other error means the blob itself is damaged or unsupported.
pub fn decrypt_key_blob(text: &str, passphrase: &[u8]) -> Result<KeyMaterial, KeyBlobError> {
    const WHAT: &str = "encrypted key";
    let raw = decode_base64(text)?;
    if raw.len() < MIN_BLOB_LEN {
        return Err(KeyBlobError::TooShort(raw.len()));
    }
    let (outer, _) = msgpack::read_value(&raw).map_err(|e| malformed(WHAT, e.to_string()))?;
    if !matches!(outer, Value::Map(_)) {
        return Err(malformed(WHAT, "not a map"));
    }
    check_version(&outer, WHAT)?;
    let algorithm = get_bytes(&outer, WHAT, "algorithm")?;
    if algorithm != b"sha256" {
        return Err(KeyBlobError::UnsupportedAlgorithm(
            String::from_utf8_lossy(algorithm).into_owned(),
        ));
    }
    let iterations = get(&outer, WHAT, "iterations")?
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .filter(|&i| i > 0)
        .ok_or_else(|| malformed(WHAT, "\"iterations\" is not a positive 32-bit integer"))?;
    let salt = get_bytes(&outer, WHAT, "salt")?;
    let hash = get_bytes(&outer, WHAT, "hash")?;
    let mut data = Zeroizing::new(get_bytes(&outer, WHAT, "data")?.to_vec());
    let kek = kdf(passphrase, salt, iterations);
    aes_ctr_zero_iv(&kek, &mut data);
    if hmac_sha256(&kek[..], &data).verify_slice(hash).is_err() {
        return Err(KeyBlobError::WrongPassphrase);
    }
    unpack_material(&data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::{Key, KeyMode};

    const ITER: u32 = 10; // keep unit tests fast; borg accepts any count

    fn material(mode: KeyMode) -> KeyMaterial {
        Key::generate(mode, [0x5a; 32]).material().clone()
    }

    fn same(a: &KeyMaterial, b: &KeyMaterial) -> bool {
        a.repository_id == b.repository_id
            && a.enc_key == b.enc_key
            && a.enc_hmac_key == b.enc_hmac_key
            && a.id_key == b.id_key
            && a.chunk_seed == b.chunk_seed
            && a.tam_required == b.tam_required
    }

    #[test]
    fn round_trip_and_wrong_passphrase() {
        for mode in [KeyMode::Repokey, KeyMode::KeyfileBlake2] {
            let m = material(mode);
            let text = encrypt_key_blob(&m, "pässword".as_bytes(), ITER);
            assert!(text.lines().all(|l| l.len() <= 70));
            assert!(text.lines().rev().skip(1).all(|l| l.len() == 70));
            assert!(!text.ends_with('\n'));
            let back = decrypt_key_blob(&text, "pässword".as_bytes()).unwrap();
            assert!(same(&m, &back));
            assert_eq!(
                decrypt_key_blob(&text, b"nope").unwrap_err(),
                KeyBlobError::WrongPassphrase
            );
            assert_eq!(
                decrypt_key_blob(&text, b"").unwrap_err(),
                KeyBlobError::WrongPassphrase
            );
            // config continuation lines carry a leading tab
            let tabbed = text.replace('\n', "\n\t");
            assert!(same(
                &m,
                &decrypt_key_blob(&tabbed, "pässword".as_bytes()).unwrap()
            ));
        }
    }

    #[test]
    fn layout_like_borg() {
        let mut m = material(KeyMode::RepokeyBlake2);
        m.chunk_seed = -1325427408;
        let inner = pack_material(&m);
        // map of 7, "chunk_seed" as fixstr, int32 seed, then "enc_hmac_key" with str16 length 0x80.
        assert_eq!(&inner[..12], b"\x87\xaachunk_seed");
        assert_eq!(&inner[12..17], b"\xd2\xb0\xff\x95\x30");
        assert_eq!(&inner[17..30], b"\xacenc_hmac_key");
        assert_eq!(&inner[30..33], b"\xda\x00\x80");
        let text = encrypt_key_blob_with_salt(&m, b"pw", 100_000, &[7; 32]);
        let outer = decode_base64(&text).unwrap();
        assert_eq!(&outer[..11], b"\x86\xa9algorithm");
        let v = msgpack::decode_one(&outer).unwrap();
        let keys: Vec<_> = v
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| as_bytes(k).unwrap().to_vec())
            .collect();
        assert_eq!(
            keys,
            [
                &b"algorithm"[..],
                b"data",
                b"hash",
                b"iterations",
                b"salt",
                b"version"
            ]
        );
        assert_eq!(map_get(&v, b"iterations").unwrap().as_u64(), Some(100_000));
    }

    #[test]
    fn missing_tam_required_is_false() {
        // A pre-1.0.9 key: no tam_required field.
        let m = material(KeyMode::Repokey);
        let mut inner = Vec::new();
        msgpack::write_map_len(&mut inner, 6);
        msgpack::write_raw(&mut inner, b"chunk_seed");
        msgpack::write_int(&mut inner, 12);
        for (k, v) in [
            (&b"enc_hmac_key"[..], &m.enc_hmac_key[..]),
            (b"enc_key", &m.enc_key[..]),
            (b"id_key", &m.id_key[..]),
            (b"repository_id", &m.repository_id[..]),
        ] {
            msgpack::write_raw(&mut inner, k);
            msgpack::write_raw(&mut inner, v);
        }
        msgpack::write_raw(&mut inner, b"version");
        msgpack::write_uint(&mut inner, 1);
        let got = unpack_material(&inner).unwrap();
        assert!(!got.tam_required);
        assert_eq!(got.chunk_seed, 12);
        assert_eq!(got.id_key, m.id_key);
    }

    #[test]
    fn garbage_is_an_error() {
        for text in [
            "",
            "!!!!",
            "AAAA",
            "hello world this is not a key",
            "gqFhAQ==",
        ] {
            let e = decrypt_key_blob(text, b"x").unwrap_err();
            assert_ne!(e, KeyBlobError::WrongPassphrase, "{text:?}");
        }
        // a valid blob cut short or with bytes flipped never panics
        let text = encrypt_key_blob(&material(KeyMode::Repokey), b"pw", ITER);
        let raw = decode_base64(&text).unwrap();
        for cut in (0..raw.len()).step_by(7) {
            let t = base64::engine::general_purpose::STANDARD.encode(&raw[..cut]);
            assert!(decrypt_key_blob(&t, b"pw").is_err());
        }
        for i in 0..raw.len() {
            let mut r = raw.clone();
            r[i] ^= 0x41;
            let t = base64::engine::general_purpose::STANDARD.encode(&r);
            let _ = decrypt_key_blob(&t, b"pw");
        }
    }

    #[test]
    fn unsupported_versions() {
        let mut outer = Vec::new();
        msgpack::write_map_len(&mut outer, 2);
        msgpack::write_raw(&mut outer, b"version");
        msgpack::write_uint(&mut outer, 2);
        msgpack::write_raw(&mut outer, b"padding-padding-padding");
        msgpack::write_raw(&mut outer, b"x");
        let t = base64::engine::general_purpose::STANDARD.encode(&outer);
        assert!(matches!(
            decrypt_key_blob(&t, b"pw"),
            Err(KeyBlobError::UnsupportedVersion { .. })
        ));
    }
}
