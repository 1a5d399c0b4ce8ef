//! borg's file integrity digests (`crypto/file_integrity.py`) and the repository's
//! `integrity.N` file.
//!
//! One streaming hash (XXH64, seed 0; borg also reads SHA512) is fed the file's basename
//! (`"%10d" % len(name)` then the name), the file bytes, and at each *part* boundary
//! `"%10d" % len(part)`, the part name and the decimal file position; the hex digest at
//! that point is the part's digest and the state continues. Index files have a part
//! `HashHeader` after their 18 header bytes; every file ends with the part `final`.
//! Digests travel as JSON text (`{"algorithm": "XXH64", "digests": {...}}`), in
//! `integrity.N` as msgpack `{version: 2, hints: <json>, index: <json>}`.

use rmpv::Value;
use sha2::Digest;

use super::msgpack::{self, as_bytes, map_get};

/// Version of `integrity.N` (equal to the hints version).
pub const INTEGRITY_VERSION: u64 = 2;
/// Part name at the end of the index header.
pub const HASH_HEADER_PART: &str = "HashHeader";
/// Part name at the end of every file.
pub const FINAL_PART: &str = "final";
/// Where the `HashHeader` part sits in index files (`sizeof(HashHeader)`).
pub const HASH_HEADER_LEN: usize = 18;

/// Errors of integrity data or verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntegrityError {
    #[error("integrity data for {file} is malformed: {detail}")]
    Malformed { file: String, detail: String },
    #[error("file failed integrity check: {file} (part {part}: expected {expected}, computed {computed})")]
    Mismatch {
        file: String,
        part: String,
        expected: String,
        computed: String,
    },
    #[error("integrity file is malformed: {0}")]
    BadIntegrityFile(String),
}

/// Digest algorithms borg knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Xxh64,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Xxh64 => "XXH64",
            Algorithm::Sha512 => "SHA512",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "XXH64" => Some(Algorithm::Xxh64),
            "SHA512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum State {
    Xxh64(xxhash_rust::xxh64::Xxh64),
    Sha512(sha2::Sha512),
}

/// Streaming digest of one file, fed in write (or read) order.
#[derive(Clone)]
pub struct FileHasher {
    state: State,
    pos: u64,
}

impl FileHasher {
    /// Starts a digest for a file whose final basename is `filename` (e.g. `index.5`,
    /// never the temporary name).
    pub fn new(algorithm: Algorithm, filename: &str) -> Self {
        let state = match algorithm {
            Algorithm::Xxh64 => State::Xxh64(xxhash_rust::xxh64::Xxh64::new(0)),
            Algorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
        };
        let mut h = FileHasher { state, pos: 0 };
        h.feed_name(filename);
        h
    }

    fn feed(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Xxh64(s) => s.update(data),
            State::Sha512(s) => s.update(data),
        }
    }

    fn feed_name(&mut self, name: &str) {
        self.feed(format!("{:>10}", name.len()).as_bytes());
        self.feed(name.as_bytes());
    }

    fn hexdigest(&self) -> String {
        match &self.state {
            State::Xxh64(s) => format!("{:016x}", s.digest()),
            State::Sha512(s) => hex::encode(s.clone().finalize()),
        }
    }

    /// Feeds file bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.feed(data);
        self.pos += data.len() as u64;
    }

    /// Closes a part at the current file position and returns its digest.
    pub fn part(&mut self, name: &str) -> String {
        self.feed_name(name);
        let pos = self.pos.to_string();
        self.feed(pos.as_bytes());
        self.hexdigest()
    }

    /// The `final` digest.
    pub fn finish(mut self) -> String {
        self.part(FINAL_PART)
    }
}

/// Digests of one file, in the order borg records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrityData {
    pub algorithm: Algorithm,
    pub digests: Vec<(String, String)>,
}

impl IntegrityData {
    pub fn get(&self, part: &str) -> Option<&str> {
        self.digests
            .iter()
            .find(|(p, _)| p == part)
            .map(|(_, d)| d.as_str())
    }

    /// JSON text as Python's `json.dumps` writes it.
    pub fn to_json(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""));
        let digests: Vec<String> = self
            .digests
            .iter()
            .map(|(p, d)| format!("{}: {}", q(p), q(d)))
            .collect();
        format!(
            "{{\"algorithm\": {}, \"digests\": {{{}}}}}",
            q(self.algorithm.name()),
            digests.join(", ")
        )
    }

    /// Parses borg's JSON. `Ok(None)` for an unknown algorithm (borg warns and does not
    /// verify); an error when the JSON is malformed or lacks the `final` digest (borg
    /// treats the file as corrupt).
    pub fn parse(file: &str, json: &str) -> Result<Option<Self>, IntegrityError> {
        let bad = |detail: String| IntegrityError::Malformed {
            file: file.to_string(),
            detail,
        };
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let alg = v
            .get("algorithm")
            .and_then(|a| a.as_str())
            .ok_or_else(|| bad("no algorithm".into()))?;
        let Some(algorithm) = Algorithm::from_name(alg) else {
            return Ok(None);
        };
        let d = v
            .get("digests")
            .and_then(|d| d.as_object())
            .ok_or_else(|| bad("no digests".into()))?;
        let mut digests = Vec::new();
        for (k, x) in d {
            let s = x
                .as_str()
                .ok_or_else(|| bad(format!("digest {k} is not a string")))?;
            digests.push((k.clone(), s.to_string()));
        }
        if !digests.iter().any(|(p, _)| p == FINAL_PART) {
            return Err(bad("no final digest".into()));
        }
        Ok(Some(IntegrityData { algorithm, digests }))
    }
}

/// Digests `data` (the whole file named `filename`) with parts closed at the given
/// positions (ascending) and `final` at the end.
pub fn digest(
    algorithm: Algorithm,
    filename: &str,
    data: &[u8],
    parts: &[(&str, usize)],
) -> IntegrityData {
    let mut h = FileHasher::new(algorithm, filename);
    let mut digests = Vec::with_capacity(parts.len() + 1);
    let mut at = 0usize;
    for &(name, pos) in parts {
        let pos = pos.clamp(at, data.len());
        h.update(&data[at..pos]);
        at = pos;
        digests.push((name.to_string(), h.part(name)));
    }
    h.update(&data[at..]);
    digests.push((FINAL_PART.to_string(), h.finish()));
    IntegrityData { algorithm, digests }
}

/// Digests of a hash index file (`index.N`, the chunks cache): `HashHeader` + `final`.
pub fn index_digests(filename: &str, data: &[u8]) -> IntegrityData {
    digest(
        Algorithm::Xxh64,
        filename,
        data,
        &[(HASH_HEADER_PART, HASH_HEADER_LEN)],
    )
}

/// Digests of a plain file (`hints.N`, files cache): only `final`.
pub fn plain_digests(filename: &str, data: &[u8]) -> IntegrityData {
    digest(Algorithm::Xxh64, filename, data, &[])
}

/// Checks `data` against `expected`, recomputing every part borg would check (the parts
/// listed, then `final`); a missing expected digest is a mismatch, as in borg.
pub fn verify(
    filename: &str,
    data: &[u8],
    parts: &[(&str, usize)],
    expected: &IntegrityData,
) -> Result<(), IntegrityError> {
    let got = digest(expected.algorithm, filename, data, parts);
    for (part, computed) in &got.digests {
        let want = expected.get(part).unwrap_or("");
        if want != computed {
            return Err(IntegrityError::Mismatch {
                file: filename.to_string(),
                part: part.clone(),
                expected: want.to_string(),
                computed: computed.clone(),
            });
        }
    }
    Ok(())
}

/// Verifies an index file (`HashHeader` + `final`).
pub fn verify_index(
    filename: &str,
    data: &[u8],
    expected: &IntegrityData,
) -> Result<(), IntegrityError> {
    verify(
        filename,
        data,
        &[(HASH_HEADER_PART, HASH_HEADER_LEN)],
        expected,
    )
}

/// Verifies a plain file (`final` only).
pub fn verify_plain(
    filename: &str,
    data: &[u8],
    expected: &IntegrityData,
) -> Result<(), IntegrityError> {
    verify(filename, data, &[], expected)
}

/// Contents of `integrity.N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrityFile {
    pub version: i64,
    /// JSON text for `hints.N`.
    pub hints: Option<String>,
    /// JSON text for `index.N`.
    pub index: Option<String>,
}

impl IntegrityFile {
    /// `{version: 2, hints: <json>, index: <json>}` in borg's key order, strings as raw.
    pub fn encode(hints: &IntegrityData, index: &IntegrityData) -> Vec<u8> {
        let mut b = Vec::with_capacity(256);
        msgpack::write_map_len(&mut b, 3);
        msgpack::write_raw(&mut b, b"version");
        msgpack::write_uint(&mut b, INTEGRITY_VERSION);
        msgpack::write_raw(&mut b, b"hints");
        msgpack::write_raw(&mut b, hints.to_json().as_bytes());
        msgpack::write_raw(&mut b, b"index");
        msgpack::write_raw(&mut b, index.to_json().as_bytes());
        b
    }

    pub fn decode(data: &[u8]) -> Result<Self, IntegrityError> {
        let v = msgpack::decode_one(data)
            .map_err(|e| IntegrityError::BadIntegrityFile(e.to_string()))?;
        if !matches!(v, Value::Map(_)) {
            return Err(IntegrityError::BadIntegrityFile("not a map".into()));
        }
        let version = map_get(&v, b"version")
            .and_then(|x| x.as_i64())
            .ok_or_else(|| IntegrityError::BadIntegrityFile("no integer version".into()))?;
        let text = |key: &[u8]| -> Result<Option<String>, IntegrityError> {
            match map_get(&v, key) {
                None => Ok(None),
                Some(x) => {
                    let b = as_bytes(x).ok_or_else(|| {
                        IntegrityError::BadIntegrityFile(format!(
                            "{} is not a string",
                            String::from_utf8_lossy(key)
                        ))
                    })?;
                    String::from_utf8(b.to_vec()).map(Some).map_err(|_| {
                        IntegrityError::BadIntegrityFile("digest text is not UTF-8".into())
                    })
                }
            }
        };
        Ok(IntegrityFile {
            version,
            hints: text(b"hints")?,
            index: text(b"index")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_python_layout() {
        let d = IntegrityData {
            algorithm: Algorithm::Xxh64,
            digests: vec![
                ("HashHeader".into(), "e414c029ae9b1095".into()),
                ("final".into(), "6ae1129f9478d3b8".into()),
            ],
        };
        let j = d.to_json();
        assert_eq!(
            j,
            r#"{"algorithm": "XXH64", "digests": {"HashHeader": "e414c029ae9b1095", "final": "6ae1129f9478d3b8"}}"#
        );
        assert_eq!(j.len(), 0x62);
        assert_eq!(IntegrityData::parse("index.5", &j).unwrap().unwrap(), d);
        assert_eq!(
            IntegrityData::parse("x", r#"{"algorithm": "MD5", "digests": {}}"#).unwrap(),
            None
        );
        assert!(IntegrityData::parse("x", r#"{"algorithm": "XXH64", "digests": {}}"#).is_err());
        assert!(IntegrityData::parse("x", "{").is_err());
    }

    #[test]
    fn parts_chain_one_state() {
        let data = vec![7u8; 100];
        let d = index_digests("index.3", &data);
        assert_eq!(d.digests.len(), 2);
        // Manual feed: name, 18 bytes, part, rest, final.
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        h.update(b"         7index.3");
        h.update(&data[..18]);
        h.update(b"        10HashHeader18");
        let hh = format!("{:016x}", h.digest());
        h.update(&data[18..]);
        h.update(b"         5final100");
        assert_eq!(d.get("HashHeader"), Some(hh.as_str()));
        assert_eq!(
            d.get("final"),
            Some(format!("{:016x}", h.digest()).as_str())
        );
        verify_index("index.3", &data, &d).unwrap();
        assert!(verify_index("index.4", &data, &d).is_err());
        let mut bad = data.clone();
        bad[50] = 0;
        assert!(matches!(
            verify_index("index.3", &bad, &d),
            Err(IntegrityError::Mismatch { .. })
        ));
        let only_final = IntegrityData {
            algorithm: Algorithm::Xxh64,
            digests: vec![d.digests[1].clone()],
        };
        assert!(verify_index("index.3", &data, &only_final).is_err());
        let s = digest(Algorithm::Sha512, "hints.1", &data, &[]);
        verify_plain("hints.1", &data, &s).unwrap();
        assert_eq!(s.get("final").unwrap().len(), 128);
    }

    #[test]
    fn integrity_file_roundtrip() {
        let h = plain_digests("hints.5", b"abc");
        let i = index_digests("index.5", &[0u8; 40]);
        let b = IntegrityFile::encode(&h, &i);
        assert_eq!(b[0], 0x83);
        let f = IntegrityFile::decode(&b).unwrap();
        assert_eq!(f.version, 2);
        assert_eq!(f.hints.unwrap(), h.to_json());
        assert_eq!(f.index.unwrap(), i.to_json());
        assert!(IntegrityFile::decode(b"\x01").is_err());
    }
}
