//! An open repository with its key and manifest: everything a command needs before it
//! reads or writes archives. Loads the key the way borg finds it (repokey in `config`,
//! keyfile in the keys dir or `BORG_KEY_FILE`), decrypts and authenticates the manifest,
//! runs borg's security checks and owns the AES-CTR counter allocator.

pub mod nonce;
pub mod security;

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::format::compress::{self, Compression};
use crate::format::crypto::{Key, KeyMode, KeyStorage};
use crate::format::keyblob;
use crate::format::objects::{Manifest, TamStatus};
use crate::location::Repo;
use crate::paths::Env;
use crate::repo::{ObjectId, RepoError, Repository, MANIFEST_ID};

pub use nonce::{NonceAllocator, NonceError};
pub use security::{SecurityDir, SecurityError};

/// Where sealed envelopes go.
pub enum Outs<'a> {
    /// Envelope `i` at the start of buffer `i`.
    Each(&'a mut [Vec<u8>]),
    /// All of them back to back in one buffer: chunks sealed side by side then take one
    /// recycled buffer between them instead of one each.
    One(&'a mut Vec<u8>),
}

/// Compresses each of `plaintexts` into `outs` behind room for the envelope header,
/// reserves a fresh counter range for it, and seals them all in place together (BLAKE2b
/// MACs side by side, see [`Key::seal_many_in_place`]): the payload is never copied.
/// Returns where each envelope lies in its buffer; a buffer keeps its length beyond (see
/// [`Compression::compress_reusing`]), so a recycled buffer is not zeroed again. Without
/// `reserve` nothing is reserved and counter 0 is used: only for envelopes that are never
/// written (a dry run).
pub fn seal_many_into(
    key: &Key,
    nonces: &NonceAllocator,
    compression: &Compression,
    plaintexts: &[&[u8]],
    reserve: bool,
    outs: Outs<'_>,
) -> std::result::Result<Vec<Range<usize>>, NonceError> {
    seal_many_with(
        key,
        compression,
        plaintexts,
        outs,
        reserving(nonces, reserve),
    )
}

/// Counter ranges from `nonces`, or counter 0 without `reserve` (see [`seal_many_into`]).
fn reserving(
    nonces: &NonceAllocator,
    reserve: bool,
) -> impl FnMut(u64) -> std::result::Result<u64, NonceError> + '_ {
    move |blocks| {
        if blocks > 0 && reserve {
            nonces.allocate(blocks)
        } else {
            Ok(0)
        }
    }
}

/// [`seal_many_into`] with each counter range taken from `iv_for(blocks)` (what a
/// benchmark that writes nothing uses in place of the repository's reservation).
pub fn seal_many_with<E>(
    key: &Key,
    compression: &Compression,
    plaintexts: &[&[u8]],
    mut outs: Outs<'_>,
    iv_for: impl FnMut(u64) -> std::result::Result<u64, E>,
) -> std::result::Result<Vec<Range<usize>>, E> {
    let c = compress_all(key, compression, plaintexts, &mut outs, iv_for)?;
    key.seal_many_deferred(
        &mut envelopes(outs, &c.ranges),
        &c.ivs,
        plaintexts,
        &c.deferred,
    );
    Ok(c.ranges)
}

/// [`seal_many_into`] of the `chunks` at `sealed` that also returns the id of every chunk,
/// in the order of `chunks`, hashed beside the MACs (see [`Key::seal_and_id_many`]): for
/// chunks expected to be new, whose ids would otherwise be hashed on their own before the
/// dedup lookup. The chunks not in `sealed` are those whose envelopes do not fit beside
/// these; their ids keep otherwise idle lanes busy. The ranges follow `sealed`.
pub fn seal_and_id_many_into(
    key: &Key,
    nonces: &NonceAllocator,
    compression: &Compression,
    chunks: &[&[u8]],
    sealed: &[usize],
    reserve: bool,
    outs: Outs<'_>,
) -> std::result::Result<(Vec<ObjectId>, Vec<Range<usize>>), NonceError> {
    seal_and_id_many_with(
        key,
        compression,
        chunks,
        sealed,
        outs,
        reserving(nonces, reserve),
    )
}

/// [`seal_and_id_many_into`] with each counter range taken from `iv_for(blocks)`.
pub fn seal_and_id_many_with<E>(
    key: &Key,
    compression: &Compression,
    chunks: &[&[u8]],
    sealed: &[usize],
    mut outs: Outs<'_>,
    iv_for: impl FnMut(u64) -> std::result::Result<u64, E>,
) -> std::result::Result<(Vec<ObjectId>, Vec<Range<usize>>), E> {
    // the sealed chunks first, as the key takes them, then the others
    let others = (0..chunks.len()).filter(|i| !sealed.contains(i));
    let order: Vec<usize> = sealed.iter().copied().chain(others).collect();
    let ordered: Vec<&[u8]> = order.iter().map(|&i| chunks[i]).collect();
    let c = compress_all(
        key,
        compression,
        &ordered[..sealed.len()],
        &mut outs,
        iv_for,
    )?;
    let hashed = key.seal_and_id_many(
        &mut envelopes(outs, &c.ranges),
        &c.ivs,
        &ordered,
        &c.deferred,
    );
    let mut ids = vec![ObjectId::default(); chunks.len()];
    for (&i, id) in order.iter().zip(hashed) {
        ids[i] = id;
    }
    Ok((ids, c.ranges))
}

/// What [`compress_all`] left in the envelope buffers.
struct Compressed {
    /// The counter each envelope is to be sealed with.
    ivs: Vec<u64>,
    /// Where each envelope lies in its buffer.
    ranges: Vec<Range<usize>>,
    /// Where in its payload an envelope's plaintext belongs, not yet written (see
    /// [`Key::seal_and_id_many`]).
    deferred: Vec<Option<usize>>,
}

/// Compresses each plaintext into `outs` behind room for the envelope header; chunks
/// stored as they are get only their compression header (see [`Compressed::deferred`]).
fn compress_all<E>(
    key: &Key,
    compression: &Compression,
    plaintexts: &[&[u8]],
    outs: &mut Outs<'_>,
    mut iv_for: impl FnMut(u64) -> std::result::Result<u64, E>,
) -> std::result::Result<Compressed, E> {
    if let Outs::Each(bufs) = outs {
        assert_eq!(
            plaintexts.len(),
            bufs.len(),
            "one envelope buffer per chunk"
        );
    }
    let header = key.envelope_header_len();
    let mut ivs = Vec::with_capacity(plaintexts.len());
    let mut ranges: Vec<Range<usize>> = Vec::with_capacity(plaintexts.len());
    let mut deferred = Vec::with_capacity(plaintexts.len());
    for (i, plaintext) in plaintexts.iter().enumerate() {
        let (out, start) = match outs {
            Outs::Each(bufs) => (&mut bufs[i], 0),
            Outs::One(buf) => (&mut **buf, ranges.last().map_or(0, |r| r.end)),
        };
        let at = start + header;
        if out.len() < at {
            out.resize(at, 0);
        }
        let (end, stored) = compression.compress_deferring(plaintext, out, at);
        ivs.push(iv_for(key.cipher_blocks(end - at))?);
        ranges.push(start..end);
        deferred.push(stored.then_some(crate::format::compress::HEADER_LEN));
    }
    Ok(Compressed {
        ivs,
        ranges,
        deferred,
    })
}

/// The envelopes in `outs`, at `ranges`.
fn envelopes<'a>(outs: Outs<'a>, ranges: &[Range<usize>]) -> Vec<&'a mut [u8]> {
    match outs {
        Outs::Each(bufs) => bufs
            .iter_mut()
            .zip(ranges)
            .map(|(b, r)| &mut b[r.clone()])
            .collect(),
        Outs::One(buf) => {
            // disjoint and in order: split them off one after the other
            let (mut rest, mut at) = (&mut buf[..], 0);
            ranges
                .iter()
                .map(|r| {
                    let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - at);
                    let (envelope, tail) = tail.split_at_mut(r.len());
                    (rest, at) = (tail, r.end);
                    envelope
                })
                .collect()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Nonce(#[from] NonceError),
    #[error("repository {0} has no manifest; it is not initialised or is damaged (borg check --repair may help)")]
    NoManifest(String),
    #[error("manifest of {0} uses an unknown key type byte {1:#04x}")]
    UnknownKeyType(String, u8),
    #[error("no key file for repository {id} found in {dir} (set BORG_KEY_FILE?)")]
    KeyfileNotFound { id: String, dir: PathBuf },
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("repository {0} has no key in its config although its manifest needs one")]
    NoRepoKey(String),
    #[error("passphrase supplied in BORG_PASSPHRASE, by BORG_PASSCOMMAND or via BORG_PASSPHRASE_FD is incorrect")]
    WrongPassphrase,
    #[error("{0}")]
    Passphrase(String),
    #[error("key: {0}")]
    Key(String),
    #[error("object {id}: {reason}")]
    Object { id: String, reason: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, SessionError>;

/// Shared handle to the repository (workers reserve nonces while the writer puts).
pub type SharedRepo = Arc<Mutex<Box<dyn Repository>>>;

/// An open repository, its key and its current manifest.
pub struct Session {
    pub repo: SharedRepo,
    pub key: Arc<Key>,
    pub manifest: Manifest,
    pub location: Repo,
    pub security: SecurityDir,
    pub nonces: Arc<NonceAllocator>,
    /// Id hash of the manifest plaintext as loaded (borg's cache compares it).
    pub manifest_id: ObjectId,
    /// Envelopes read ahead for coming items ([`Session::prefetch`]), taken by
    /// [`Session::get_object`].
    prefetched: Mutex<HashMap<ObjectId, Vec<u8>>>,
}

fn passphrase_error(e: crate::secrets::SecretError) -> SessionError {
    SessionError::Passphrase(e.to_string())
}

/// Finds the keyfile for `repo_id`: `BORG_KEY_FILE`, else any file in the keys dir that
/// starts with `BORG_KEY <id hex>`.
pub fn find_keyfile(env: Env, repo_id: &[u8; 32]) -> Result<(PathBuf, String)> {
    if let Some(p) = crate::paths::key_file_override(env) {
        let text = std::fs::read_to_string(&p).map_err(|e| SessionError::Io {
            path: p.clone(),
            source: e,
        })?;
        let (id, blob) = keyblob::parse_keyfile(&text).map_err(|e| SessionError::KeyFile {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if &id != repo_id {
            return Err(SessionError::KeyFile {
                path: p,
                reason: format!(
                    "belongs to repository {}, not {}",
                    hex::encode(id),
                    hex::encode(repo_id)
                ),
            });
        }
        return Ok((p, blob));
    }
    let dir = crate::paths::keys_dir(env);
    let want = format!("BORG_KEY {}", hex::encode(repo_id));
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            if !text.starts_with(&want) {
                continue;
            }
            if let Ok((id, blob)) = keyblob::parse_keyfile(&text) {
                if &id == repo_id {
                    return Ok((p, blob));
                }
            }
        }
    }
    Err(SessionError::KeyfileNotFound {
        id: hex::encode(repo_id),
        dir,
    })
}

/// Where a new keyfile goes: `BORG_KEY_FILE`, else `<keys dir>/<name>[.N]` like borg.
pub fn new_keyfile_path(env: Env, location: &Repo) -> PathBuf {
    if let Some(p) = crate::paths::key_file_override(env) {
        return p;
    }
    let dir = crate::paths::keys_dir(env);
    let base = dir.join(location.key_filename());
    let mut p = base.clone();
    let mut n = 1;
    while p.exists() {
        n += 1;
        p = PathBuf::from(format!("{}.{n}", base.display()));
    }
    p
}

fn decrypt_blob(blob: &str, mode: KeyMode) -> Result<Key> {
    // borg's order: a passphrase from the environment gets one try; at a terminal the
    // empty passphrase is tried silently, then the user is asked
    let mut malformed = None;
    let res = crate::secrets::unlock_existing("Enter passphrase for key: ", |p| {
        match keyblob::decrypt_key_blob(blob, p.as_bytes()) {
            Ok(m) => Some(m),
            Err(keyblob::KeyBlobError::WrongPassphrase) => None,
            Err(e) => {
                malformed = Some(e.to_string());
                None
            }
        }
    });
    if let Some(e) = malformed {
        return Err(SessionError::Key(e));
    }
    match res {
        Ok(material) => Ok(Key::from_material(mode, material)),
        Err(crate::secrets::SecretError::Wrong) => Err(SessionError::WrongPassphrase),
        Err(e) => Err(passphrase_error(e)),
    }
}

/// Loads the key for a repository whose manifest envelope starts with `type_byte`.
pub fn load_key(env: Env, repo: &mut dyn Repository, type_byte: u8) -> Result<Key> {
    let loc = repo.location();
    let mode = KeyMode::from_type_byte(type_byte)
        .ok_or(SessionError::UnknownKeyType(loc.clone(), type_byte))?;
    let repo_id = repo.id();
    match mode.key_storage() {
        KeyStorage::None => Ok(Key::plaintext(repo_id)),
        KeyStorage::Repository => {
            let data = repo.load_key()?;
            let text = String::from_utf8_lossy(&data).trim().to_string();
            if text.is_empty() {
                return Err(SessionError::NoRepoKey(loc));
            }
            let key = decrypt_blob(&text, mode)?;
            check_key_repo_id(&key, &repo_id)?;
            Ok(key)
        }
        KeyStorage::KeyFile => {
            let (_, blob) = find_keyfile(env, &repo_id)?;
            let key = decrypt_blob(&blob, mode)?;
            check_key_repo_id(&key, &repo_id)?;
            Ok(key)
        }
    }
}

fn check_key_repo_id(key: &Key, repo_id: &[u8; 32]) -> Result<()> {
    if &key.material().repository_id != repo_id {
        return Err(SessionError::Key(format!(
            "key belongs to repository {}, not {}",
            hex::encode(key.material().repository_id),
            hex::encode(repo_id)
        )));
    }
    Ok(())
}

impl Session {
    /// Opens an initialised repository: manifest, key, security checks.
    pub fn open(env: Env, mut repo: Box<dyn Repository>, location: Repo) -> Result<Session> {
        let loc = repo.location();
        let envelope = match repo.get(&MANIFEST_ID) {
            Ok(e) => e,
            Err(RepoError::ObjectNotFound(..)) => return Err(SessionError::NoManifest(loc)),
            Err(e) => return Err(e.into()),
        };
        let type_byte = *envelope
            .first()
            .ok_or_else(|| SessionError::NoManifest(loc.clone()))?;
        let key = load_key(env, repo.as_mut(), type_byte)?;
        let security = SecurityDir::new(env, &repo.id());
        let payload = key
            .open(&envelope)
            .map_err(|e| SessionError::Manifest(e.to_string()))?;
        let plain =
            compress::decompress(&payload).map_err(|e| SessionError::Manifest(e.to_string()))?;
        let tam_required =
            key.material().tam_required || (key.mode().is_encrypted() && security.tam_required());
        let tam_required = tam_required && key.mode() != KeyMode::Plaintext;
        let (manifest, tam) = Manifest::decode(&plain, &key, tam_required)
            .map_err(|e| SessionError::Manifest(e.to_string()))?;
        if matches!(tam, TamStatus::Verified) && key.mode() != KeyMode::Plaintext {
            security.set_tam_required(true)?;
        }
        security.assert_secure(
            env,
            &location.canonical(),
            key.mode().type_byte(),
            key.mode() != KeyMode::Plaintext,
            &manifest.timestamp,
            true,
        )?;
        let manifest_id = key.id_hash(&plain);
        let manifest_nonce =
            Key::envelope_iv(&envelope).map(|iv| iv + (envelope.len() as u64).div_ceil(16));
        let repo: SharedRepo = Arc::new(Mutex::new(repo));
        let nonces = Arc::new(NonceAllocator::new(
            repo.clone(),
            security.nonce_file(),
            manifest_nonce,
        ));
        Ok(Session {
            repo,
            key: Arc::new(key),
            manifest,
            location,
            security,
            nonces,
            manifest_id,
            prefetched: Mutex::default(),
        })
    }

    /// Initialises a freshly created repository: new key (stored per its mode), empty
    /// manifest, commit, security dir — what `borg init` does after creating the directory.
    pub fn init(
        env: Env,
        mut repo: Box<dyn Repository>,
        location: Repo,
        mode: KeyMode,
    ) -> Result<(Session, Option<PathBuf>)> {
        let repo_id = repo.id();
        let key = if mode == KeyMode::Plaintext {
            Key::plaintext(repo_id)
        } else {
            Key::generate(mode, repo_id)
        };
        let mut keyfile = None;
        if mode != KeyMode::Plaintext {
            let pass = crate::secrets::passphrase_for_new().map_err(passphrase_error)?;
            let blob = keyblob::encrypt_key_blob(
                key.material(),
                pass.as_bytes(),
                keyblob::PBKDF2_ITERATIONS,
            );
            match mode.key_storage() {
                KeyStorage::Repository => repo.save_key(blob.as_bytes())?,
                KeyStorage::KeyFile => {
                    let path = new_keyfile_path(env, &location);
                    if let Some(dir) = path.parent() {
                        crate::fsutil::ensure_private_dir(dir).map_err(|e| SessionError::Io {
                            path: dir.to_path_buf(),
                            source: e,
                        })?;
                    }
                    crate::fsutil::save_file(
                        &path,
                        keyblob::keyfile_text(&repo_id, &blob).as_bytes(),
                    )
                    .map_err(|e| SessionError::Io {
                        path: path.clone(),
                        source: e,
                    })?;
                    keyfile = Some(path);
                }
                KeyStorage::None => {}
            }
        }
        let security = SecurityDir::new(env, &repo_id);
        let manifest =
            Manifest::new_empty(key.material().tam_required && mode != KeyMode::Plaintext);
        let repo: SharedRepo = Arc::new(Mutex::new(repo));
        let nonces = Arc::new(NonceAllocator::new(
            repo.clone(),
            security.nonce_file(),
            None,
        ));
        let mut s = Session {
            repo,
            key: Arc::new(key),
            manifest,
            location,
            security,
            nonces,
            manifest_id: [0; 32],
            prefetched: Mutex::default(),
        };
        s.write_manifest()?;
        s.commit()?;
        if mode != KeyMode::Plaintext {
            s.security.set_tam_required(true)?;
        }
        Ok((s, keyfile))
    }

    /// Compresses (lz4, like borg's metadata), seals with a fresh counter range.
    pub fn seal(&self, plaintext: &[u8], compression: &Compression) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let at = seal_many_into(
            &self.key,
            &self.nonces,
            compression,
            &[plaintext],
            true,
            Outs::One(&mut out),
        )?;
        out.truncate(at[0].end);
        Ok(out)
    }

    /// Writes the manifest with a strictly newer timestamp (not yet committed).
    pub fn write_manifest(&mut self) -> Result<()> {
        self.manifest.timestamp = crate::format::timefmt::next_manifest_timestamp(
            Some(&self.manifest.timestamp)
                .filter(|t| !t.is_empty())
                .map(|s| s.as_str()),
            chrono::Utc::now(),
        );
        let plain = self
            .manifest
            .encode_with_tam(self.key.as_ref())
            .map_err(|e| SessionError::Manifest(e.to_string()))?;
        let envelope = self.seal(&plain, &Compression::Lz4)?;
        self.repo
            .lock()
            .expect("repository lock")
            .put(&MANIFEST_ID, &envelope)?;
        self.manifest_id = self.key.id_hash(&plain);
        Ok(())
    }

    /// Commits the repository and remembers the new manifest timestamp.
    pub fn commit(&mut self) -> Result<()> {
        self.repo.lock().expect("repository lock").commit()?;
        self.security.save(
            &self.location.canonical(),
            self.key.mode().type_byte(),
            &self.manifest.timestamp,
        )?;
        Ok(())
    }

    /// Reads, authenticates, decrypts, decompresses and id-checks one object.
    pub fn get_object(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let ahead = self.prefetched.lock().expect("prefetch lock").remove(id);
        let envelope = match ahead {
            Some(e) => e,
            None => self.repo.lock().expect("repository lock").get(id)?,
        };
        self.open_object(id, &envelope)
    }

    /// Reads the objects `ids` ahead, all requests in flight together, for the
    /// [`Session::get_object`] calls that follow; drops what an earlier call read ahead and
    /// nobody took. Saves a round trip per object on a remote repository.
    pub fn prefetch(&self, ids: &[ObjectId]) -> Result<()> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let envelopes = self.repo.lock().expect("repository lock").get_many(&ids)?;
        let mut ahead = self.prefetched.lock().expect("prefetch lock");
        ahead.clear();
        ahead.extend(ids.into_iter().zip(envelopes));
        Ok(())
    }

    /// The plaintexts of many objects, in the order of `ids`: fetched together, then
    /// decoded on the pool.
    pub fn get_objects(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        use rayon::prelude::*;
        let envelopes = self.repo.lock().expect("repository lock").get_many(ids)?;
        ids.par_iter()
            .zip(&envelopes)
            .map(|(id, e)| self.open_object(id, e))
            .collect()
    }

    /// Decodes an envelope fetched for `id`.
    pub fn open_object(&self, id: &ObjectId, envelope: &[u8]) -> Result<Vec<u8>> {
        let err = |reason: String| SessionError::Object {
            id: hex::encode(id),
            reason,
        };
        let payload = self.key.open(envelope).map_err(|e| err(e.to_string()))?;
        let plain = compress::decompress(&payload).map_err(|e| err(e.to_string()))?;
        if &self.key.id_hash(&plain) != id {
            return Err(err(
                "id verification failed (data does not match its id)".into()
            ));
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::KeyMode;

    #[test]
    fn envelopes_in_one_buffer_equal_envelopes_each_in_its_own() {
        let key = Key::generate(KeyMode::RepokeyBlake2, [3; 32]);
        let text: Vec<u8> = b"a line of text, again and again; "
            .iter()
            .cycle()
            .take(300_000)
            .copied()
            .collect();
        let noise: Vec<u8> = (0..200_001u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let plaintexts = [&text[..], &noise[..], b"x"];
        for compression in [Compression::Lz4, Compression::None] {
            let counter = |start: u64| {
                let mut next = start;
                move |blocks: u64| {
                    next += blocks;
                    Ok::<_, std::convert::Infallible>(next - blocks)
                }
            };
            let mut each = vec![Vec::new(); 3];
            let Ok((ids, at)) = seal_and_id_many_with(
                &key,
                &compression,
                &plaintexts,
                &[0, 1, 2],
                Outs::Each(&mut each),
                counter(5),
            );
            // a recycled buffer: longer than needed, and not zeroed
            let mut one = vec![0xee; 2 << 20];
            let Ok((ids_one, at_one)) = seal_and_id_many_with(
                &key,
                &compression,
                &plaintexts,
                &[0, 1, 2],
                Outs::One(&mut one),
                counter(5),
            );
            assert_eq!(ids, ids_one);
            // the last chunk's id hashed beside, its envelope left out: the same ids, and
            // the same envelopes for the others
            let mut two = Vec::new();
            let Ok((ids_two, at_two)) = seal_and_id_many_with(
                &key,
                &compression,
                &plaintexts,
                &[0, 1],
                Outs::One(&mut two),
                counter(5),
            );
            assert_eq!(ids, ids_two);
            assert_eq!(at_two, at_one[..2]);
            assert_eq!(two[..at_two[1].end], one[..at_one[1].end]);
            assert_eq!(at_one[0].start, 0);
            for i in 0..3 {
                assert_eq!(at[i].start, 0);
                assert_eq!(each[i][at[i].clone()], one[at_one[i].clone()], "{i}");
                if i > 0 {
                    assert_eq!(at_one[i].start, at_one[i - 1].end, "back to back");
                }
                let payload = key.open(&one[at_one[i].clone()]).unwrap();
                assert_eq!(compress::decompress(&payload).unwrap(), plaintexts[i]);
            }
        }
    }
}
