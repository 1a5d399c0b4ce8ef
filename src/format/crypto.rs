//! borg 1.x keys and the object envelope every repository object is wrapped in
//! (`crypto/key.py`, `crypto/low_level.pyx`).
//!
//! The envelope starts with a type byte naming the key mode. Plaintext and authenticated
//! modes store the compressed payload right after it (their integrity rests on the id
//! check). AES modes add a 32-byte MAC over `IV8 ‖ ciphertext` (the type byte is not
//! authenticated), the low 64 bits of the CTR counter block, and the AES-256-CTR
//! ciphertext. The counter is global to the repository; callers hand in the IV they
//! reserved and advance it by [`Key::cipher_blocks`].

use std::fmt;
use std::str::FromStr;

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::blake2::{self, Blake2b256, Lanes};
use super::tam::{hkdf_tam_key, TamKeySource};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// Bytes before the ciphertext in AES envelopes: type byte, MAC, IV8 (borg's `PAYLOAD_OVERHEAD`).
pub const AES_OVERHEAD: usize = 1 + 32 + 8;
const MAC_RANGE: std::ops::Range<usize> = 1..33;
const IV_RANGE: std::ops::Range<usize> = 33..41;
/// Type byte of borg 0.x's `passphrase` mode; borg reads such objects as repokey.
pub const LEGACY_PASSPHRASE_TYPE: u8 = 0x01;

/// A borg 1.x encryption mode (`borg init --encryption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// `none`: no key; ids are plain SHA-256.
    Plaintext,
    Authenticated,
    AuthenticatedBlake2,
    Repokey,
    Keyfile,
    RepokeyBlake2,
    KeyfileBlake2,
}

/// Where the key blob of a mode lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStorage {
    None,
    /// The `key` entry of the repository `config`.
    Repository,
    /// A file in the keys directory (or `BORG_KEY_FILE`).
    KeyFile,
}

impl KeyMode {
    /// Every mode, in the order borg lists them in `--encryption` help.
    pub const ALL: [KeyMode; 7] = [
        KeyMode::Plaintext,
        KeyMode::Authenticated,
        KeyMode::AuthenticatedBlake2,
        KeyMode::Repokey,
        KeyMode::Keyfile,
        KeyMode::RepokeyBlake2,
        KeyMode::KeyfileBlake2,
    ];

    /// The first byte of every object this mode writes.
    pub fn type_byte(self) -> u8 {
        match self {
            KeyMode::Plaintext => 0x02,
            KeyMode::Authenticated => 0x07,
            KeyMode::AuthenticatedBlake2 => 0x06,
            KeyMode::Repokey => 0x03,
            KeyMode::Keyfile => 0x00,
            KeyMode::RepokeyBlake2 => 0x05,
            KeyMode::KeyfileBlake2 => 0x04,
        }
    }

    /// The mode borg picks for a manifest starting with `b` (`identify_key`): the legacy
    /// passphrase type is read as repokey.
    pub fn from_type_byte(b: u8) -> Option<KeyMode> {
        if b == LEGACY_PASSPHRASE_TYPE {
            return Some(KeyMode::Repokey);
        }
        KeyMode::ALL.into_iter().find(|m| m.type_byte() == b)
    }

    /// borg's `--encryption` name (also what `borg info --json` reports as mode).
    pub fn name(self) -> &'static str {
        match self {
            KeyMode::Plaintext => "none",
            KeyMode::Authenticated => "authenticated",
            KeyMode::AuthenticatedBlake2 => "authenticated-blake2",
            KeyMode::Repokey => "repokey",
            KeyMode::Keyfile => "keyfile",
            KeyMode::RepokeyBlake2 => "repokey-blake2",
            KeyMode::KeyfileBlake2 => "keyfile-blake2",
        }
    }

    /// Whether objects are AES-encrypted (and carry a MAC and IV).
    pub fn is_encrypted(self) -> bool {
        matches!(
            self,
            KeyMode::Repokey | KeyMode::Keyfile | KeyMode::RepokeyBlake2 | KeyMode::KeyfileBlake2
        )
    }

    /// Whether ids (and, when encrypted, MACs) use BLAKE2b-256 instead of HMAC-SHA256.
    pub fn uses_blake2(self) -> bool {
        matches!(
            self,
            KeyMode::AuthenticatedBlake2 | KeyMode::RepokeyBlake2 | KeyMode::KeyfileBlake2
        )
    }

    pub fn key_storage(self) -> KeyStorage {
        match self {
            KeyMode::Plaintext => KeyStorage::None,
            KeyMode::Keyfile | KeyMode::KeyfileBlake2 => KeyStorage::KeyFile,
            _ => KeyStorage::Repository,
        }
    }

    /// Whether objects with type byte `b` belong to this mode (repokey also reads legacy
    /// passphrase-mode objects, as borg does).
    pub fn accepts_type_byte(self, b: u8) -> bool {
        b == self.type_byte() || (self == KeyMode::Repokey && b == LEGACY_PASSPHRASE_TYPE)
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An `--encryption` value that names no borg 1.x mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid encryption mode {given:?} (valid: none, authenticated, authenticated-blake2, repokey, keyfile, repokey-blake2, keyfile-blake2)")]
pub struct ParseKeyModeError {
    pub given: String,
}

impl FromStr for KeyMode {
    type Err = ParseKeyModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| ParseKeyModeError {
                given: s.to_string(),
            })
    }
}

/// The secrets of a key, as stored in borg's key blob (`item.pyx: Key`).
///
/// HMAC modes use 32-byte `enc_hmac_key`/`id_key`; BLAKE2b modes 128 bytes (64 random
/// bytes padded with 64 zeros). Plaintext keys carry only the repository id.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyMaterial {
    pub repository_id: [u8; 32],
    pub enc_key: [u8; 32],
    pub enc_hmac_key: Vec<u8>,
    pub id_key: Vec<u8>,
    /// Seed of the buzhash chunker, signed as borg stores it.
    pub chunk_seed: i32,
    /// The key blob's `tam_required` (absent in keys older than borg 1.0.9: then false,
    /// and the security directory's `tam_required` file decides).
    pub tam_required: bool,
}

impl KeyMaterial {
    /// Material of a `none`-mode key: no secrets.
    pub fn empty(repository_id: [u8; 32]) -> KeyMaterial {
        KeyMaterial {
            repository_id,
            enc_key: [0; 32],
            enc_hmac_key: Vec::new(),
            id_key: Vec::new(),
            chunk_seed: 0,
            tam_required: false,
        }
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("repository_id", &hex::encode(self.repository_id))
            .field("secrets", &"<redacted>")
            .field("tam_required", &self.tam_required)
            .finish()
    }
}

/// A loaded key: mode plus material. `Send + Sync`; sealing needs only `&self`.
#[derive(Clone)]
pub struct Key {
    mode: KeyMode,
    material: KeyMaterial,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("mode", &self.mode)
            .field("material", &self.material)
            .finish()
    }
}

/// Why an envelope could not be opened or an id did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("{}: empty envelope", subject(.id))]
    Empty { id: Option<String> },
    #[error("{}: invalid encryption envelope: expected type byte {:#04x} ({expected}), found {}", subject(.id), .expected.type_byte(), describe_type(*.found))]
    WrongType {
        id: Option<String>,
        expected: KeyMode,
        found: u8,
    },
    #[error("{}: envelope of {len} bytes is shorter than the {min} bytes of its header", subject(.id))]
    TooShort {
        id: Option<String>,
        len: usize,
        min: usize,
    },
    #[error("{}: MAC authentication failed", subject(.id))]
    MacFailed { id: Option<String> },
    #[error("object {id}: id verification failed (data does not match its id)")]
    IdMismatch { id: String },
}

fn subject(id: &Option<String>) -> String {
    match id {
        Some(id) => format!("object {id}"),
        None => "object (unknown id)".into(),
    }
}

fn describe_type(b: u8) -> String {
    if b == LEGACY_PASSPHRASE_TYPE {
        return format!("{b:#04x} (legacy passphrase)");
    }
    match KeyMode::ALL.into_iter().find(|m| m.type_byte() == b) {
        Some(m) => format!("{b:#04x} ({m})"),
        None => format!("{b:#04x} (unknown key type)"),
    }
}

/// borg's BLAKE2b construction: unkeyed BLAKE2b-256 over `key ‖ parts…` (not BLAKE2's
/// keyed mode, which yields other digests).
fn blake2b_256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut st = Blake2b256::new();
    st.update(key);
    for p in parts {
        st.update(p);
    }
    st.finalize()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bytes encrypted and MACed per step of the fused loop: small enough to stay in L1/L2.
const FUSE_BLOCK: usize = 16 * 1024;

/// The running envelope MAC: HMAC-SHA256(enc_hmac_key) or unkeyed BLAKE2b-256 started
/// with the 128-byte enc_hmac_key.
enum EnvelopeMac {
    HmacSha256(HmacSha256),
    Blake2b(Blake2b256),
}

impl EnvelopeMac {
    fn update(&mut self, data: &[u8]) {
        match self {
            EnvelopeMac::HmacSha256(m) => m.update(data),
            EnvelopeMac::Blake2b(st) => st.update(data),
        }
    }

    fn finalize(self) -> [u8; 32] {
        match self {
            EnvelopeMac::HmacSha256(m) => m.finalize().into_bytes().into(),
            EnvelopeMac::Blake2b(st) => st.finalize(),
        }
    }
}

/// Random bytes from the OS. Failure of the system RNG is unrecoverable for key creation.
fn random_bytes<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut b = Zeroizing::new([0u8; N]);
    getrandom::getrandom(&mut b[..])
        .expect("the operating system's random number generator failed");
    b
}

/// borg's `random_blake2b_256_key`: 64 random bytes padded with 64 zeros.
fn random_blake2b_key() -> Vec<u8> {
    let mut k = random_bytes::<64>().to_vec();
    k.resize(128, 0);
    k
}

impl Key {
    /// The `none`-mode key.
    pub fn plaintext(repository_id: [u8; 32]) -> Key {
        Key {
            mode: KeyMode::Plaintext,
            material: KeyMaterial::empty(repository_id),
        }
    }

    /// A fresh key as `borg init` makes it (`init_from_random_data`).
    pub fn generate(mode: KeyMode, repository_id: [u8; 32]) -> Key {
        if mode == KeyMode::Plaintext {
            return Key::plaintext(repository_id);
        }
        let r = random_bytes::<100>();
        let mut enc_key = [0u8; 32];
        enc_key.copy_from_slice(&r[0..32]);
        let seed = u32::from_be_bytes([r[96], r[97], r[98], r[99]]);
        let mut material = KeyMaterial {
            repository_id,
            enc_key,
            enc_hmac_key: r[32..64].to_vec(),
            id_key: r[64..96].to_vec(),
            chunk_seed: seed as i32,
            tam_required: true,
        };
        enc_key.zeroize();
        if mode.uses_blake2() {
            material.enc_hmac_key.zeroize();
            material.id_key.zeroize();
            material.enc_hmac_key = random_blake2b_key();
            material.id_key = random_blake2b_key();
        }
        Key { mode, material }
    }

    /// A key from stored material (e.g. a decrypted key blob).
    pub fn from_material(mode: KeyMode, material: KeyMaterial) -> Key {
        Key { mode, material }
    }

    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }

    /// The chunker seed as the buzhash chunker uses it (borg masks the signed value to 32 bits).
    pub fn chunk_seed(&self) -> u32 {
        if self.mode == KeyMode::Plaintext {
            0
        } else {
            self.material.chunk_seed as u32
        }
    }

    /// The object id of `data`: SHA-256 (none), HMAC-SHA256(id_key) or unkeyed
    /// BLAKE2b-256(id_key ‖ data).
    pub fn id_hash(&self, data: &[u8]) -> [u8; 32] {
        match self.mode {
            KeyMode::Plaintext => Sha256::digest(data).into(),
            m if m.uses_blake2() => blake2b_256(&self.material.id_key, &[data]),
            _ => hmac_sha256(&self.material.id_key, &[data]),
        }
    }

    /// [`Key::id_hash`] of each of several chunks; BLAKE2b ids are hashed side by side
    /// (see [`Lanes`]).
    pub fn id_hashes(&self, chunks: &[&[u8]]) -> Vec<[u8; 32]> {
        if self.mode.uses_blake2() && chunks.len() > 1 && blake2::lanes() > 1 {
            let mut lanes = Lanes::new(chunks.len(), &self.material.id_key);
            lanes.update(chunks);
            lanes.finalize()
        } else {
            chunks.iter().map(|c| self.id_hash(c)).collect()
        }
    }

    /// A fresh envelope MAC state (to be fed `IV8 ‖ ciphertext`).
    fn mac_state(&self) -> EnvelopeMac {
        let key = &self.material.enc_hmac_key;
        if self.mode.uses_blake2() {
            let mut st = Blake2b256::new();
            st.update(key);
            EnvelopeMac::Blake2b(st)
        } else {
            EnvelopeMac::HmacSha256(
                HmacSha256::new_from_slice(key).expect("HMAC accepts any key length"),
            )
        }
    }

    fn ctr(&self, iv: u64) -> Aes256Ctr {
        let mut block = [0u8; 16];
        block[8..].copy_from_slice(&iv.to_be_bytes());
        Aes256Ctr::new((&self.material.enc_key).into(), (&block).into())
    }

    /// Envelope for a compressed payload (compressor header included): type byte, and in
    /// AES modes MAC, IV8 and AES-256-CTR ciphertext. `iv` is the first counter value of a
    /// range of [`Key::cipher_blocks`] reserved for this payload; non-AES modes ignore it.
    pub fn seal(&self, compressed: &[u8], iv: u64) -> Vec<u8> {
        let header = self.envelope_header_len();
        let mut out = Vec::with_capacity(header + compressed.len());
        out.resize(header, 0);
        out.extend_from_slice(compressed);
        self.seal_in_place(&mut out, iv);
        out
    }

    /// Bytes an envelope of this key's mode has before the payload.
    pub fn envelope_header_len(&self) -> usize {
        if self.mode.is_encrypted() {
            AES_OVERHEAD
        } else {
            1
        }
    }

    /// [`Key::seal`] in place: `buf` is [`Key::envelope_header_len`] bytes of room followed
    /// by the compressed payload, which a caller compressed straight into its (recycled)
    /// envelope buffer, so the payload is neither copied nor held twice.
    pub fn seal_in_place(&self, buf: &mut [u8], iv: u64) {
        buf[0] = self.mode.type_byte();
        if !self.mode.is_encrypted() {
            return;
        }
        buf[IV_RANGE].copy_from_slice(&iv.to_be_bytes());
        let mut cipher = self.ctr(iv);
        let mut mac = self.mac_state();
        mac.update(&iv.to_be_bytes());
        // Encrypt and MAC block by block while the block is in cache.
        for block in buf[AES_OVERHEAD..].chunks_mut(FUSE_BLOCK) {
            cipher.apply_keystream(block);
            mac.update(block);
        }
        buf[MAC_RANGE].copy_from_slice(&mac.finalize());
    }

    /// [`Key::seal_in_place`] of several envelopes, `ivs[i]` for `bufs[i]`. BLAKE2b MACs
    /// run side by side (see [`Lanes`]), block by block behind the encryption as in the
    /// single form, so each block is MACed while it is in cache.
    pub fn seal_many_in_place(&self, bufs: &mut [&mut [u8]], ivs: &[u64]) {
        assert_eq!(bufs.len(), ivs.len(), "one counter per envelope");
        if !self.macs_in_lanes() || bufs.len() < 2 {
            for (buf, &iv) in bufs.iter_mut().zip(ivs) {
                self.seal_in_place(buf, iv);
            }
            return;
        }
        self.seal_in_lanes(bufs, ivs, &[], &[], &[]);
    }

    /// [`Key::seal_many_in_place`] where `deferred[j] == Some(at)` says that envelope `j`'s
    /// payload from `at` on is `sources[j]`, not yet written (see
    /// [`Key::seal_and_id_many`]): encrypted straight from it.
    pub fn seal_many_deferred(
        &self,
        bufs: &mut [&mut [u8]],
        ivs: &[u64],
        sources: &[&[u8]],
        deferred: &[Option<usize>],
    ) {
        assert_eq!(bufs.len(), ivs.len(), "one counter per envelope");
        if deferred.iter().all(Option::is_none) {
            return self.seal_many_in_place(bufs, ivs);
        }
        assert_eq!(
            deferred.len(),
            bufs.len(),
            "deferred payloads name every envelope"
        );
        assert_eq!(sources.len(), bufs.len(), "a source for every envelope");
        if !self.macs_in_lanes() {
            self.write_deferred(bufs, sources, deferred);
            return self.seal_many_in_place(bufs, ivs);
        }
        self.seal_in_lanes(bufs, ivs, &[], sources, deferred);
    }

    /// Copies each deferred payload into its envelope, for the sealing paths that encrypt
    /// in place.
    fn write_deferred(
        &self,
        bufs: &mut [&mut [u8]],
        sources: &[&[u8]],
        deferred: &[Option<usize>],
    ) {
        let header = self.envelope_header_len();
        for ((buf, at), source) in bufs.iter_mut().zip(deferred).zip(sources) {
            if let Some(at) = at {
                buf[header + at..].copy_from_slice(source);
            }
        }
    }

    /// [`Key::seal_many_in_place`] of `bufs`, returning the [`Key::id_hash`]es of
    /// `plaintexts` too: those of the envelopes, in order, and maybe more (chunks whose
    /// envelopes do not fit beside them; they get their MACs later). With BLAKE2b the ids
    /// hash in lanes beside the MACs, block by block: one chunk alone fills two lanes (1.2×
    /// the speed of hashing id and MAC one after the other), two chunks fill four (2.1×). A
    /// caller that needs the id before deciding to encode (dedup) can use this only when it
    /// expects new chunks.
    ///
    /// `deferred[j] == Some(at)` says that envelope `j`'s payload from `at` on is
    /// `plaintexts[j]` itself, not yet written (a chunk stored uncompressed, see
    /// [`Compression::compress_deferring`](crate::format::compress::Compression::compress_deferring)):
    /// it is encrypted straight from the plaintext into the envelope, one copy fewer. An
    /// empty `deferred` defers nothing.
    pub fn seal_and_id_many(
        &self,
        bufs: &mut [&mut [u8]],
        ivs: &[u64],
        plaintexts: &[&[u8]],
        deferred: &[Option<usize>],
    ) -> Vec<[u8; 32]> {
        assert_eq!(bufs.len(), ivs.len(), "one counter per envelope");
        assert!(
            bufs.len() <= plaintexts.len(),
            "a plaintext for every envelope"
        );
        assert!(
            deferred.is_empty() || deferred.len() == bufs.len(),
            "deferred payloads name every envelope"
        );
        if !self.macs_in_lanes() {
            self.write_deferred(bufs, plaintexts, deferred);
            self.seal_many_in_place(bufs, ivs);
            return self.id_hashes(plaintexts);
        }
        self.seal_in_lanes(bufs, ivs, plaintexts, plaintexts, deferred)
    }

    /// Whether envelope MACs are BLAKE2b and this CPU hashes several at once.
    pub fn macs_in_lanes(&self) -> bool {
        self.mode.is_encrypted() && self.mode.uses_blake2() && blake2::lanes() > 1
    }

    /// Encrypts `bufs` and MACs them in lanes, with the ids of `plaintexts` (if any) in
    /// further lanes; returns those ids. Each MAC and id is a job; the longest start first
    /// and a lane whose job ends takes the next, so with more jobs than lanes every lane
    /// stays busy until the last jobs (envelopes and chunks differ in length several
    /// times over). A MAC job encrypts each block just before it hashes it, in cache.
    /// `sources` and `deferred` as for [`Key::seal_many_deferred`].
    fn seal_in_lanes(
        &self,
        bufs: &mut [&mut [u8]],
        ivs: &[u64],
        plaintexts: &[&[u8]],
        sources: &[&[u8]],
        deferred: &[Option<usize>],
    ) -> Vec<[u8; 32]> {
        let prefixes: Vec<&[u8]> = std::iter::repeat_n(&self.material.enc_hmac_key[..], bufs.len())
            .chain(std::iter::repeat_n(
                &self.material.id_key[..],
                plaintexts.len(),
            ))
            .collect();
        let mut lanes = Lanes::with_prefixes(&prefixes);
        let iv_bytes: Vec<[u8; 8]> = ivs.iter().map(|iv| iv.to_be_bytes()).collect();
        lanes.update(&iv_bytes);
        let mut ciphers: Vec<Aes256Ctr> = ivs.iter().map(|&iv| self.ctr(iv)).collect();
        // job j: the MAC of bufs[j]'s payload, then the id of plaintexts[j - bufs.len()]
        let macs = bufs.len();
        let lens: Vec<usize> = bufs
            .iter()
            .map(|b| b.len() - AES_OVERHEAD)
            .chain(plaintexts.iter().map(|p| p.len()))
            .collect();
        let mut queue: Vec<usize> = (0..lens.len()).filter(|&j| lens[j] > 0).collect();
        queue.sort_by_key(|&j| std::cmp::Reverse(lens[j]));
        let mut queue = queue.into_iter();
        let mut pos = vec![0; lens.len()];
        let mut active: Vec<usize> = Vec::with_capacity(blake2::lanes());
        loop {
            active.retain(|&j| pos[j] < lens[j]);
            active.extend(queue.by_ref().take(blake2::lanes() - active.len()));
            if active.is_empty() {
                break;
            }
            let step = |j: usize| pos[j]..lens[j].min(pos[j] + FUSE_BLOCK);
            for &j in active.iter().filter(|&&j| j < macs) {
                let (r, payload) = (step(j), &mut bufs[j][AES_OVERHEAD..]);
                match deferred.get(j).copied().flatten() {
                    None => ciphers[j].apply_keystream(&mut payload[r]),
                    Some(at) => {
                        // what precedes the plaintext in place, the rest straight from it
                        let split = at.clamp(r.start, r.end);
                        ciphers[j].apply_keystream(&mut payload[r.start..split]);
                        if split < r.end {
                            ciphers[j]
                                .apply_keystream_b2b(
                                    &sources[j][split - at..r.end - at],
                                    &mut payload[split..r.end],
                                )
                                .expect("equally long blocks");
                        }
                    }
                }
            }
            let mut blocks: Vec<&[u8]> = vec![&[]; lens.len()];
            for &j in &active {
                blocks[j] = match j < macs {
                    true => &bufs[j][AES_OVERHEAD..][step(j)],
                    false => &plaintexts[j - macs][step(j)],
                };
            }
            lanes.update(&blocks);
            for &j in &active {
                pos[j] = lens[j].min(pos[j] + FUSE_BLOCK);
            }
        }
        let mut digests = lanes.finalize();
        let ids = digests.split_off(bufs.len());
        for ((buf, iv), mac) in bufs.iter_mut().zip(iv_bytes).zip(digests) {
            buf[0] = self.mode.type_byte();
            buf[IV_RANGE].copy_from_slice(&iv);
            buf[MAC_RANGE].copy_from_slice(&mac);
        }
        ids
    }

    /// Checks type byte and MAC and decrypts; returns the compressed payload (still with
    /// its compressor header). Does not check the id (see [`Key::open_with_id`]).
    pub fn open(&self, envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_inner(envelope, None)
    }

    /// Like [`Key::open`] for an envelope fetched as object `id`; errors name the object.
    pub fn open_with_id(&self, id: &[u8; 32], envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_inner(envelope, Some(id))
    }

    fn open_inner(&self, envelope: &[u8], id: Option<&[u8; 32]>) -> Result<Vec<u8>, CryptoError> {
        let id = || id.map(hex::encode);
        let &found = envelope
            .first()
            .ok_or_else(|| CryptoError::Empty { id: id() })?;
        if !self.mode.accepts_type_byte(found) {
            return Err(CryptoError::WrongType {
                id: id(),
                expected: self.mode,
                found,
            });
        }
        if !self.mode.is_encrypted() {
            return Ok(envelope[1..].to_vec());
        }
        if envelope.len() < AES_OVERHEAD {
            return Err(CryptoError::TooShort {
                id: id(),
                len: envelope.len(),
                min: AES_OVERHEAD,
            });
        }
        let mut iv8 = [0u8; 8];
        iv8.copy_from_slice(&envelope[IV_RANGE]);
        let mut cipher = self.ctr(u64::from_be_bytes(iv8));
        let mut mac = self.mac_state();
        mac.update(&iv8);
        // One pass: MAC the ciphertext block, then decrypt the copy. Nothing leaves before
        // the MAC verified; on failure the decrypted bytes are wiped.
        let ct = &envelope[AES_OVERHEAD..];
        let mut out = Vec::with_capacity(ct.len());
        for src in ct.chunks(FUSE_BLOCK) {
            mac.update(src);
            let at = out.len();
            out.extend_from_slice(src);
            cipher.apply_keystream(&mut out[at..]);
        }
        if !ct_eq(&mac.finalize(), &envelope[MAC_RANGE]) {
            out.zeroize();
            return Err(CryptoError::MacFailed { id: id() });
        }
        Ok(out)
    }

    /// borg's `assert_id`: `id` must be the id hash of the (decompressed) plaintext.
    pub fn assert_id(&self, id: &[u8; 32], plaintext: &[u8]) -> Result<(), CryptoError> {
        if ct_eq(&self.id_hash(plaintext), id) {
            Ok(())
        } else {
            Err(CryptoError::IdMismatch {
                id: hex::encode(id),
            })
        }
    }

    /// AES-CTR counter blocks a payload of `len` bytes consumes: `ceil(len / 16)`, 0 in
    /// modes without encryption.
    pub fn cipher_blocks(&self, len: usize) -> u64 {
        if self.mode.is_encrypted() {
            (len as u64).div_ceil(16)
        } else {
            0
        }
    }

    /// The IV stored in an AES envelope (judged by its type byte); `None` for other modes
    /// or an envelope too short to hold one.
    pub fn envelope_iv(envelope: &[u8]) -> Option<u64> {
        let mode = KeyMode::from_type_byte(*envelope.first()?)?;
        if !mode.is_encrypted() || envelope.len() < AES_OVERHEAD {
            return None;
        }
        let mut iv8 = [0u8; 8];
        iv8.copy_from_slice(&envelope[IV_RANGE]);
        Some(u64::from_be_bytes(iv8))
    }
}

impl TamKeySource for Key {
    fn tam_key(&self, salt: &[u8], context: &[u8]) -> Zeroizing<Vec<u8>> {
        if self.mode == KeyMode::Plaintext {
            // borg's PlaintextKey._tam_key: no secret to derive from.
            let mut k = Zeroizing::new(Vec::with_capacity(salt.len() + context.len()));
            k.extend_from_slice(salt);
            k.extend_from_slice(context);
            return k;
        }
        let m = &self.material;
        let mut ikm = Zeroizing::new(Vec::with_capacity(
            m.id_key.len() + 32 + m.enc_hmac_key.len(),
        ));
        ikm.extend_from_slice(&m.id_key);
        ikm.extend_from_slice(&m.enc_key);
        ikm.extend_from_slice(&m.enc_hmac_key);
        hkdf_tam_key(&ikm, salt, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The key material of the format reference's test vectors (§3.2).
    fn vector_key(mode: KeyMode) -> Key {
        let blake = mode.uses_blake2();
        let pad = |r: std::ops::Range<u8>| {
            let mut v: Vec<u8> = r.collect();
            v.resize(128, 0);
            v
        };
        let mut enc_key = [0u8; 32];
        enc_key
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        Key::from_material(
            mode,
            KeyMaterial {
                repository_id: [9; 32],
                enc_key,
                enc_hmac_key: if blake {
                    pad(96..160)
                } else {
                    (32..64).collect()
                },
                id_key: if blake {
                    pad(160..224)
                } else {
                    (64..96).collect()
                },
                chunk_seed: -5,
                tam_required: true,
            },
        )
    }

    const FOX: &[u8] = b"The quick brown fox jumps over the lazy dog";

    fn fox_payload() -> Vec<u8> {
        let mut p = vec![0, 0];
        p.extend_from_slice(FOX);
        p
    }

    #[test]
    fn reference_vectors() {
        let ct = "71816862afdc50dc44ee812709894bd50bdae83389727ec0f4d0b1cf352620a1767fa0acb3bc65ee61915988cf";
        let env = vector_key(KeyMode::Repokey).seal(&fox_payload(), 0x0102030405);
        assert_eq!(
            hex::encode(&env),
            format!("03851928acf70a28a17e4670d2990c87efa5bfd813f5eb7c4de473d1de89b0f7c40000000102030405{ct}")
        );
        let env = vector_key(KeyMode::RepokeyBlake2).seal(&fox_payload(), 0x0102030405);
        assert_eq!(
            hex::encode(&env),
            format!("0506aee8239793581af732d6b3d80721e0627a0f4ac24c6b08d03e46a40bca318b0000000102030405{ct}")
        );
        assert_eq!(
            hex::encode(vector_key(KeyMode::Repokey).id_hash(FOX)),
            "d01fa7532e82039ac32bd20090141b4f13aa8f2f4b666b8231b438f43b8fc290"
        );
        assert_eq!(
            hex::encode(vector_key(KeyMode::KeyfileBlake2).id_hash(FOX)),
            "b16b19a49dd1e99c751e3690f8b19f581fd40f0f135ea3347136e526d0da7f8e"
        );
        assert_eq!(
            hex::encode(Key::plaintext([0; 32]).id_hash(FOX)),
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
        );
    }

    #[test]
    fn tam_key_matches_reference_hkdf() {
        // Same ikm as the format reference's §4.1 vector: id_key ‖ enc_key ‖ enc_hmac_key.
        let k = vector_key(KeyMode::Repokey).tam_key(&[0u8; 64], b"manifest");
        assert_eq!(
            hex::encode(&*k),
            "1602cb7a7627e552c882c7c9beae19fa192856f2e62651bdf5a3d4fb8914a528f97da471482439fe354a0a3e339d719cb957e3a37ef77f6f1218feed751e5c17"
        );
        assert_eq!(
            &*Key::plaintext([0; 32]).tam_key(b"salt", b"archive"),
            b"saltarchive"
        );
    }

    #[test]
    fn mode_table() {
        for m in KeyMode::ALL {
            assert_eq!(KeyMode::from_type_byte(m.type_byte()), Some(m));
            assert_eq!(m.name().parse::<KeyMode>(), Ok(m));
            assert!(m.accepts_type_byte(m.type_byte()));
            assert_eq!(m.accepts_type_byte(0x01), m == KeyMode::Repokey);
        }
        assert_eq!(KeyMode::from_type_byte(0x01), Some(KeyMode::Repokey));
        assert_eq!(KeyMode::from_type_byte(0x08), None);
        let err = "repokey-sha3".parse::<KeyMode>().unwrap_err().to_string();
        assert!(
            err.contains("repokey-sha3") && err.contains("keyfile-blake2"),
            "{err}"
        );
        assert_eq!(KeyMode::Keyfile.key_storage(), KeyStorage::KeyFile);
        assert_eq!(
            KeyMode::AuthenticatedBlake2.key_storage(),
            KeyStorage::Repository
        );
        assert_eq!(KeyMode::Plaintext.key_storage(), KeyStorage::None);
    }

    #[test]
    fn generate_like_borg() {
        for m in KeyMode::ALL {
            let k = Key::generate(m, [1; 32]);
            let mat = k.material();
            assert_eq!(mat.repository_id, [1; 32]);
            if m == KeyMode::Plaintext {
                assert!(mat.id_key.is_empty() && !mat.tam_required);
                assert_eq!(k.chunk_seed(), 0);
                continue;
            }
            assert!(mat.tam_required);
            let len = if m.uses_blake2() { 128 } else { 32 };
            assert_eq!(
                (mat.enc_hmac_key.len(), mat.id_key.len()),
                (len, len),
                "{m}"
            );
            if m.uses_blake2() {
                assert!(mat.id_key[64..].iter().all(|&b| b == 0));
                assert!(mat.enc_hmac_key[64..].iter().all(|&b| b == 0));
            }
            assert_ne!(mat.enc_key, [0; 32]);
        }
        let a = Key::generate(KeyMode::Repokey, [0; 32]);
        let b = Key::generate(KeyMode::Repokey, [0; 32]);
        assert_ne!(a.material().id_key, b.material().id_key);
    }

    #[test]
    fn chunk_seed_is_masked() {
        let mut m = vector_key(KeyMode::Repokey).material().clone();
        m.chunk_seed = -1;
        assert_eq!(
            Key::from_material(KeyMode::Repokey, m).chunk_seed(),
            0xffff_ffff
        );
    }

    #[test]
    fn layout_and_iv() {
        let k = vector_key(KeyMode::Keyfile);
        let env = k.seal(b"\x00\x00abc", 77);
        assert_eq!(env.len(), AES_OVERHEAD + 5);
        assert_eq!(env[0], 0x00);
        assert_eq!(Key::envelope_iv(&env), Some(77));
        assert_eq!(Key::envelope_iv(&env[..40]), None);
        assert_eq!(k.cipher_blocks(0), 0);
        assert_eq!(k.cipher_blocks(16), 1);
        assert_eq!(k.cipher_blocks(17), 2);
        let p = Key::plaintext([0; 32]);
        assert_eq!(p.seal(b"\x00\x00abc", 77), b"\x02\x00\x00abc");
        assert_eq!(Key::envelope_iv(b"\x02\x00\x00abc"), None);
        assert_eq!(p.cipher_blocks(100), 0);
    }

    #[test]
    fn errors_are_specific() {
        let k = vector_key(KeyMode::RepokeyBlake2);
        let id = [0xab; 32];
        let env = k.seal(&fox_payload(), 3);
        assert!(matches!(k.open(&[]), Err(CryptoError::Empty { .. })));
        let e = k
            .open_with_id(&id, &vector_key(KeyMode::Repokey).seal(b"x", 0))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("0x05 (repokey-blake2)")
                && msg.contains("0x03 (repokey)")
                && msg.contains("abab"),
            "{msg}"
        );
        assert!(matches!(
            k.open(&env[..40]),
            Err(CryptoError::TooShort { len: 40, .. })
        ));
        for i in 1..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(k.open(&bad), Err(CryptoError::MacFailed { .. })),
                "byte {i}"
            );
        }
        let e = k.open_with_id(&id, &{
            let mut b = env.clone();
            b[50] ^= 1;
            b
        });
        assert!(e.unwrap_err().to_string().contains(&hex::encode(id)));
        assert!(k.assert_id(&k.id_hash(FOX), FOX).is_ok());
        let e = k.assert_id(&id, FOX).unwrap_err();
        assert_eq!(
            e,
            CryptoError::IdMismatch {
                id: hex::encode(id)
            }
        );
        // unknown type bytes are named as such
        let e = k.open(&[0x42, 0, 0]).unwrap_err().to_string();
        assert!(e.contains("0x42 (unknown key type)"), "{e}");
    }

    #[test]
    fn repokey_reads_legacy_passphrase_objects() {
        let k = vector_key(KeyMode::Repokey);
        let mut env = k.seal(&fox_payload(), 9);
        env[0] = LEGACY_PASSPHRASE_TYPE;
        assert_eq!(k.open(&env).unwrap(), fox_payload());
        assert!(vector_key(KeyMode::Keyfile).open(&env).is_err());
    }

    #[test]
    fn fused_loop_matches_one_shot() {
        for mode in [KeyMode::Repokey, KeyMode::KeyfileBlake2] {
            let k = vector_key(mode);
            for len in [
                FUSE_BLOCK - 1,
                FUSE_BLOCK,
                FUSE_BLOCK + 1,
                3 * FUSE_BLOCK + 7,
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let iv = u64::MAX - 5;
                let env = k.seal(&data, iv);
                let key = &k.material().enc_hmac_key;
                let mac = if mode.uses_blake2() {
                    blake2b_256(key, &[&env[33..]])
                } else {
                    hmac_sha256(key, &[&env[33..]])
                };
                assert_eq!(&env[1..33], &mac, "{mode} {len}");
                let mut plain = env[AES_OVERHEAD..].to_vec();
                k.ctr(iv).apply_keystream(&mut plain);
                assert_eq!(plain, data, "{mode} {len}");
                assert_eq!(k.open(&env).unwrap(), data);
            }
        }
    }

    #[test]
    fn many_at_once_equals_one_at_a_time() {
        let lens = [
            0,
            1,
            FUSE_BLOCK - 1,
            FUSE_BLOCK,
            FUSE_BLOCK + 1,
            3 * FUSE_BLOCK + 7,
            100_000,
        ];
        let chunks: Vec<Vec<u8>> = lens
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        for mode in KeyMode::ALL {
            let k = vector_key(mode);
            let one: Vec<[u8; 32]> = refs.iter().map(|c| k.id_hash(c)).collect();
            assert_eq!(k.id_hashes(&refs), one, "{mode}");
            let ivs: Vec<u64> = (0..refs.len() as u64)
                .map(|i| u64::MAX - 100 + i * 9)
                .collect();
            let header = k.envelope_header_len();
            let mut bufs: Vec<Vec<u8>> = refs
                .iter()
                .map(|c| [vec![0; header], c.to_vec()].concat())
                .collect();
            let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            k.seal_many_in_place(&mut views, &ivs);
            for ((buf, c), &iv) in bufs.iter().zip(&refs).zip(&ivs) {
                assert_eq!(buf, &k.seal(c, iv), "{mode} {}", c.len());
            }
        }
    }

    #[test]
    fn ids_beside_macs_equal_ids_and_macs_apart() {
        // payloads (compressed) shorter and longer than their plaintexts: lanes run out
        // at different blocks
        let lens = [
            (0, 5),
            (1, 0),
            (FUSE_BLOCK + 1, 40_000),
            (3 * FUSE_BLOCK + 7, 100),
        ];
        for mode in KeyMode::ALL {
            let k = vector_key(mode);
            let header = k.envelope_header_len();
            for n in 1..=lens.len() {
                let plain: Vec<Vec<u8>> = lens[..n]
                    .iter()
                    .map(|&(p, _)| (0..p).map(|i| (i * 3 + p) as u8).collect())
                    .collect();
                let plain: Vec<&[u8]> = plain.iter().map(|p| p.as_slice()).collect();
                let payloads: Vec<Vec<u8>> = lens[..n]
                    .iter()
                    .map(|&(_, c)| (0..c).map(|i| (i * 5 + c) as u8).collect())
                    .collect();
                let ivs: Vec<u64> = (0..n as u64).map(|i| 1000 + i * 77).collect();
                // all envelopes, or all but the last: its id hashes beside the others
                for m in [n, n - 1] {
                    let mut bufs: Vec<Vec<u8>> = payloads[..m]
                        .iter()
                        .map(|c| [vec![0; header], c.to_vec()].concat())
                        .collect();
                    let mut views: Vec<&mut [u8]> =
                        bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
                    let ids = k.seal_and_id_many(&mut views, &ivs[..m], &plain, &[]);
                    assert_eq!(ids, k.id_hashes(&plain), "{mode} {n} {m}");
                    for ((buf, c), &iv) in bufs.iter().zip(&payloads).zip(&ivs) {
                        assert_eq!(buf, &k.seal(c, iv), "{mode} {n} {m} {}", c.len());
                    }
                }
            }
        }
    }

    #[test]
    fn deferred_payloads_seal_as_if_copied_first() {
        // plaintexts across block boundaries, one envelope not deferred, one empty
        let lens = [3 * FUSE_BLOCK + 5, 10, FUSE_BLOCK - 1, 0, 2 * FUSE_BLOCK];
        let plain: Vec<Vec<u8>> = lens
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let plain: Vec<&[u8]> = plain.iter().map(|p| p.as_slice()).collect();
        let deferred: Vec<Option<usize>> = (0..lens.len()).map(|j| (j != 1).then_some(2)).collect();
        let ivs: Vec<u64> = (0..lens.len() as u64).map(|i| 500 + i * 1000).collect();
        for mode in KeyMode::ALL {
            let k = vector_key(mode);
            let header = k.envelope_header_len();
            // the payload: a two-byte prefix, then the plaintext
            let copied: Vec<Vec<u8>> = plain
                .iter()
                .map(|p| [vec![0; header], vec![0xab, 0xcd], p.to_vec()].concat())
                .collect();
            let mut want = copied.clone();
            let mut views: Vec<&mut [u8]> = want.iter_mut().map(|b| b.as_mut_slice()).collect();
            let ids = k.seal_and_id_many(&mut views, &ivs, &plain, &[]);
            // deferred ones hold stale bytes where the plaintext goes
            let mut got: Vec<Vec<u8>> = copied
                .iter()
                .zip(&deferred)
                .map(|(b, d)| {
                    let mut b = b.clone();
                    if d.is_some() {
                        b[header + 2..].fill(0x5a);
                    }
                    b
                })
                .collect();
            let stale = got.clone();
            let mut views: Vec<&mut [u8]> = got.iter_mut().map(|b| b.as_mut_slice()).collect();
            assert_eq!(k.seal_and_id_many(&mut views, &ivs, &plain, &deferred), ids);
            assert_eq!(got, want, "{mode}");
            // MACs alone, of all the envelopes and of one (one lane)
            for n in [lens.len(), 1] {
                let mut got = stale[..n].to_vec();
                let mut views: Vec<&mut [u8]> = got.iter_mut().map(|b| b.as_mut_slice()).collect();
                k.seal_many_deferred(&mut views, &ivs[..n], &plain[..n], &deferred[..n]);
                assert_eq!(got, want[..n], "{mode} {n}");
            }
        }
    }

    #[test]
    fn key_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Key>();
    }

    #[test]
    fn debug_hides_secrets() {
        let k = vector_key(KeyMode::Repokey);
        let s = format!("{k:?}");
        assert!(!s.contains("000102030405"), "{s}");
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..600), iv in any::<u64>(), mi in 0usize..7) {
            let mode = KeyMode::ALL[mi];
            let k = Key::generate(mode, [3; 32]);
            let env = k.seal(&data, iv);
            let mut in_place = vec![0xa5; k.envelope_header_len()];
            in_place.extend_from_slice(&data);
            k.seal_in_place(&mut in_place, iv);
            prop_assert_eq!(&in_place, &env);
            prop_assert_eq!(env[0], mode.type_byte());
            prop_assert_eq!(k.open(&env).unwrap(), data.clone());
            if mode.is_encrypted() {
                prop_assert_eq!(Key::envelope_iv(&env), Some(iv));
                prop_assert_eq!(env.len(), data.len() + AES_OVERHEAD);
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..100), mi in 0usize..7) {
            let k = Key::generate(KeyMode::ALL[mi], [3; 32]);
            let r = k.open(&data);
            if k.mode().is_encrypted() {
                // A random 32-byte MAC never verifies.
                prop_assert!(r.is_err());
            }
            let _ = Key::envelope_iv(&data);
        }
    }
}
