//! Archive consistency check (borg's `ArchiveChecker.check` without `--repair`): every
//! archive in the manifest is loaded and authenticated (TAM), its item stream decoded
//! and validated, every chunk it references looked up; objects nobody references are
//! orphans. `--verify-data` additionally decrypts, decompresses and re-hashes every
//! object. Messages use borg's wording so reports can be compared.

use std::collections::HashMap;

use rmpv::Value;

use crate::format::compress;
use crate::format::crypto::{Key, KeyMode};
use crate::format::msgpack::as_bytes;
use crate::format::objects::{ArchiveMeta, Item, Manifest, TamStatus};
use crate::format::timefmt;
use crate::repo::local::{CheckLevel, CheckLog};
use crate::repo::{ObjectId, RepoError, Repository, MANIFEST_ID};
use crate::session::{self, SessionError};

/// borg's `LIST_SCAN_LIMIT`.
const LIST_LIMIT: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveCheckError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{0}")]
    Other(String),
}

/// Which archives to check and how deeply.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Decrypt and re-hash every object in the repository.
    pub verify_data: bool,
    /// Only this archive.
    pub archive: Option<String>,
    /// Only archives matching this glob (borg's `-a`).
    pub glob: Option<String>,
    /// Only the first / last N archives by time.
    pub first: usize,
    pub last: usize,
}

/// Opens an object fetched as `id`: MAC, decryption, decompression and (except for
/// the manifest) the id check, like borg's `key.decrypt(id, data)`.
fn open_object(key: &Key, id: &ObjectId, envelope: &[u8]) -> Result<Vec<u8>, String> {
    let payload = key.open_with_id(id, envelope).map_err(|e| e.to_string())?;
    let plain = compress::decompress(&payload).map_err(|e| e.to_string())?;
    if id != &MANIFEST_ID {
        key.assert_id(id, &plain).map_err(|e| e.to_string())?;
    }
    Ok(plain)
}

/// All object ids in the repository, each with a reference count of 0.
fn all_ids(repo: &mut dyn Repository) -> Result<HashMap<ObjectId, u32>, RepoError> {
    let mut out = HashMap::new();
    let mut marker: Option<ObjectId> = None;
    loop {
        let page = repo.list(LIST_LIMIT, marker.as_ref())?;
        if page.is_empty() {
            break;
        }
        marker = page.last().copied();
        let full = page.len() >= LIST_LIMIT;
        out.extend(page.into_iter().map(|id| (id, 0u32)));
        if !full {
            break;
        }
    }
    Ok(out)
}

struct Checker<'a, 'l> {
    repo: &'a mut dyn Repository,
    key: Key,
    chunks: HashMap<ObjectId, u32>,
    log: CheckLog<'l>,
    error_found: bool,
}

impl Checker<'_, '_> {
    fn error(&mut self, msg: String) {
        self.error_found = true;
        (self.log)(CheckLevel::Error, msg);
    }

    fn info(&mut self, msg: String) {
        (self.log)(CheckLevel::Info, msg);
    }

    fn warning(&mut self, msg: String) {
        (self.log)(CheckLevel::Warning, msg);
    }

    fn verify_data(&mut self) {
        self.info("Starting cryptographic data integrity verification...".into());
        let mut ids: Vec<ObjectId> = self.chunks.keys().copied().collect();
        ids.sort_unstable();
        let mut errors = 0u64;
        let mut defect = 0u64;
        for id in &ids {
            match self.repo.get(id) {
                Err(e) => {
                    errors += 1;
                    if matches!(e, RepoError::Integrity { .. }) {
                        defect += 1;
                    }
                    self.error(format!("chunk {}: {e}", hex::encode(id)));
                }
                Ok(envelope) => {
                    if let Err(e) = open_object(&self.key, id, &envelope) {
                        errors += 1;
                        defect += 1;
                        self.error(format!("chunk {}, integrity error: {e}", hex::encode(id)));
                    }
                }
            }
        }
        if defect > 0 {
            self.warning(
                "Found defect chunks. With --repair, they would get deleted, so affected files \
                 could get repaired then and maybe healed later."
                    .into(),
            );
        }
        let msg = format!(
            "Finished cryptographic data integrity verification, verified {} chunks with {errors} integrity errors.",
            ids.len()
        );
        if errors > 0 {
            self.error(msg);
        } else {
            self.info(msg);
        }
    }

    fn add_reference(&mut self, id: &ObjectId) -> bool {
        match self.chunks.get_mut(id) {
            Some(n) => {
                *n = n.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// Validates one decoded item map like borg's `valid_item`.
    fn valid_item(v: &Value, item_keys: &[Vec<u8>]) -> Result<(), String> {
        let Value::Map(entries) = v else {
            return Err("not a dictionary".into());
        };
        let keys: Vec<&[u8]> = entries
            .iter()
            .filter_map(|(k, _)| as_bytes(k))
            .filter(|k| *k != b"acl")
            .collect();
        if keys.len()
            != entries
                .iter()
                .filter(|(k, _)| as_bytes(k) != Some(b"acl"))
                .count()
        {
            return Err("not a dictionary".into());
        }
        let missing: Vec<&str> = ["mtime", "path"]
            .into_iter()
            .filter(|r| !keys.contains(&r.as_bytes()))
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing required keys: {}", missing.join(", ")));
        }
        let invalid: Vec<String> = keys
            .iter()
            .filter(|k| !item_keys.iter().any(|ik| ik.as_slice() == **k))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        if !invalid.is_empty() {
            return Err(format!("invalid keys: {}", invalid.join(", ")));
        }
        Ok(())
    }

    fn check_item(&mut self, archive: &str, item: &Item) {
        let Some(chunks) = &item.chunks else { return };
        let path = String::from_utf8_lossy(&item.path).into_owned();
        let mut offset = 0u64;
        let healthy = item
            .chunks_healthy
            .as_ref()
            .filter(|h| h.len() == chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            let want = healthy.map_or(c, |h| &h[i]);
            if !self.add_reference(&c.id) {
                if healthy.is_none() || want == c {
                    self.error(format!(
                        "{archive}: {path}: New missing file chunk detected (Byte {offset}-{}, Chunk {}). Would replace it with all-zero chunk with --repair.",
                        offset + c.size as u64,
                        hex::encode(c.id)
                    ));
                } else {
                    self.warning(format!(
                        "{archive}: {path}: Missing all-zero replacement chunk detected (Byte {offset}-{}, Chunk {}). Would generate new replacement chunk with --repair.",
                        offset + c.size as u64,
                        hex::encode(c.id)
                    ));
                    self.error_found = true;
                }
            } else if want != c && self.chunks.contains_key(&want.id) {
                self.info(format!(
                    "{archive}: {path}: Missing file chunk would be healed with --repair! (Byte {offset}-{}, Chunk {})",
                    offset + c.size as u64,
                    hex::encode(want.id)
                ));
                self.add_reference(&want.id);
            }
            offset += c.size as u64;
        }
        if let Some(size) = item.size {
            let from_chunks: u64 = chunks.iter().map(|c| c.size as u64).sum();
            if size != from_chunks {
                self.warning(format!(
                    "{archive}: {path}: size inconsistency detected: size {size}, chunks size {from_chunks}"
                ));
            }
        }
    }

    /// Walks one archive's item stream; missing or damaged item chunks are reported
    /// and skipped (the stream restarts at the next chunk, as borg's resync does).
    fn check_items(&mut self, name: &str, meta: &ArchiveMeta, item_keys: &[Vec<u8>]) {
        let mut buf: Vec<u8> = Vec::new();
        // after a gap or damage the stream restarts mid-item: skip bytes until a valid
        // item decodes (borg's RobustUnpacker.resync)
        let mut resync = false;
        for (no, id) in meta.items.iter().enumerate() {
            let report = |c: &mut Self, msg: String| {
                c.error(format!("{msg} [chunk: {no:06}_{}]", hex::encode(id)));
            };
            if !self.add_reference(id) {
                report(self, "item metadata chunk missing".into());
                buf.clear();
                resync = true;
                continue;
            }
            let plain = match self
                .repo
                .get(id)
                .map_err(|e| e.to_string())
                .and_then(|env| open_object(&self.key, id, &env))
            {
                Ok(p) => p,
                Err(e) => {
                    report(self, e);
                    buf.clear();
                    resync = true;
                    continue;
                }
            };
            buf.extend_from_slice(&plain);
            let mut pos = 0;
            while pos < buf.len() {
                let mut rd = &buf[pos..];
                let before = rd.len();
                match rmpv::decode::read_value_with_max_depth(&mut rd, 64) {
                    Ok(v) => {
                        let valid = Self::valid_item(&v, item_keys)
                            .and_then(|()| Item::decode(&v).map_err(|e| e.to_string()));
                        match valid {
                            Ok(item) => {
                                resync = false;
                                pos += before - rd.len();
                                self.check_item(name, &item);
                            }
                            Err(_) if resync => pos += 1,
                            Err(reason) => {
                                pos += before - rd.len();
                                report(
                                    self,
                                    format!("Did not get expected metadata dict when unpacking item metadata ({reason})"),
                                );
                            }
                        }
                    }
                    Err(e) if is_eof(&e) => break,
                    Err(_) if resync => pos += 1,
                    Err(_) => {
                        report(
                            self,
                            "Unpacker crashed while unpacking item metadata, trying to resync..."
                                .into(),
                        );
                        resync = true;
                        pos += 1;
                    }
                }
            }
            buf.drain(..pos);
        }
        if !buf.is_empty() && !resync {
            self.error(format!(
                "{name}: item metadata stream ends inside an item ({} bytes left over)",
                buf.len()
            ));
        }
    }

    fn check_archive(
        &mut self,
        name: &str,
        id: &ObjectId,
        item_keys: &[Vec<u8>],
        tam_required: bool,
    ) {
        if !self.chunks.contains_key(id) {
            self.error(format!(
                "Archive metadata block {} is missing!",
                hex::encode(id)
            ));
            return;
        }
        self.add_reference(id);
        let data = match self
            .repo
            .get(id)
            .map_err(|e| e.to_string())
            .and_then(|env| open_object(&self.key, id, &env))
        {
            Ok(d) => d,
            Err(e) => {
                self.error(format!(
                    "Archive metadata block {} is corrupted: {e}",
                    hex::encode(id)
                ));
                return;
            }
        };
        let tam_issue = |c: &mut Self, why: String| {
            c.error(format!(
                "Archive TAM authentication issue for archive {name}: {why}"
            ));
            c.error("This archive would be *removed* / *deleted* when using --repair!".into());
        };
        let meta = match ArchiveMeta::decode_unverified(&data, &self.key) {
            Ok((meta, TamStatus::Verified)) => meta,
            Ok((meta, TamStatus::Missing | TamStatus::UnsupportedSuite)) if !tam_required => meta,
            Ok((_, TamStatus::Missing)) => {
                return tam_issue(self, format!("Archive '{name}' is unauthenticated, but it is required for this repository."));
            }
            Ok((_, TamStatus::UnsupportedSuite)) => {
                return tam_issue(
                    self,
                    "Could not verify archive TAM: unsupported suite".into(),
                );
            }
            Ok((_, TamStatus::Invalid)) => {
                return tam_issue(self, "Archive authentication did not verify".into());
            }
            Err(e) => {
                self.error(format!(
                    "Archive metadata block {} is corrupted: {e}",
                    hex::encode(id)
                ));
                return;
            }
        };
        self.check_items(name, &meta, item_keys);
    }
}

fn is_eof(e: &rmpv::decode::Error) -> bool {
    match e {
        rmpv::decode::Error::InvalidMarkerRead(io) | rmpv::decode::Error::InvalidDataRead(io) => {
            io.kind() == std::io::ErrorKind::UnexpectedEof
        }
        _ => false,
    }
}

/// Runs the archive check on an open repository (the exclusive lock is the caller's
/// business); returns whether no problem was found. Fatal conditions (no key, I/O
/// failures of the repository itself) are errors.
pub fn check_archives(
    env: crate::paths::Env,
    repo: &mut dyn Repository,
    opts: &CheckOptions,
    log: CheckLog<'_>,
) -> Result<bool, ArchiveCheckError> {
    log(
        CheckLevel::Info,
        "Starting archive consistency check...".into(),
    );
    let check_all =
        opts.archive.is_none() && opts.glob.is_none() && opts.first == 0 && opts.last == 0;
    let chunks = all_ids(repo)?;
    if chunks.is_empty() {
        log(
            CheckLevel::Error,
            "Repository contains no apparent data at all, cannot continue check/repair.".into(),
        );
        return Ok(false);
    }
    // the key: from the manifest's type byte if possible, else from any object
    let mut key = None;
    let mut tried = 0;
    let mut ids: Vec<ObjectId> = Vec::with_capacity(1000);
    if chunks.contains_key(&MANIFEST_ID) {
        ids.push(MANIFEST_ID);
    }
    ids.extend(
        chunks
            .keys()
            .filter(|k| **k != MANIFEST_ID)
            .take(998)
            .copied(),
    );
    let mut last_err = None;
    for id in ids {
        tried += 1;
        let env_bytes = repo.get(&id)?;
        let Some(&t) = env_bytes.first() else {
            continue;
        };
        if KeyMode::from_type_byte(t).is_none() {
            continue;
        }
        match session::load_key(env, repo, t) {
            Ok(k) => {
                key = Some(k);
                break;
            }
            Err(e @ SessionError::UnknownKeyType(..)) => last_err = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    let Some(key) = key else {
        return Err(ArchiveCheckError::Other(match last_err {
            Some(e) => format!("make_key: failed to create the key (tried {tried} chunks): {e}"),
            None => format!("make_key: failed to create the key (tried {tried} chunks)"),
        }));
    };
    let security = crate::session::SecurityDir::new(env, &repo.id());
    let keyed = key.mode() != KeyMode::Plaintext;
    let tam_required = keyed && (key.material().tam_required || security.tam_required());
    let mut c = Checker {
        repo,
        key,
        chunks,
        log,
        error_found: false,
    };
    if opts.verify_data {
        c.verify_data();
    }
    let manifest = if !c.chunks.contains_key(&MANIFEST_ID) {
        c.error("Repository manifest not found!".into());
        None
    } else {
        let r = c
            .repo
            .get(&MANIFEST_ID)
            .map_err(|e| e.to_string())
            .and_then(|env| open_object(&c.key, &MANIFEST_ID, &env))
            .and_then(|plain| {
                Manifest::decode(&plain, &c.key, tam_required).map_err(|e| e.to_string())
            });
        match r {
            Ok((m, _)) => Some(m),
            Err(e) => {
                c.error(format!("Repository manifest is corrupted: {e}"));
                None
            }
        }
    };
    c.chunks.remove(&MANIFEST_ID);
    let Some(manifest) = manifest else {
        c.warning("Without a manifest the archives cannot be checked (a rebuild needs borg check --repair).".into());
        c.error("Archive consistency check complete, problems found.".into());
        return Ok(false);
    };
    let mut archives: Vec<(String, ObjectId, chrono::DateTime<chrono::Utc>)> = manifest
        .archives
        .iter()
        .map(|(n, a)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                a.id,
                timefmt::parse(&a.time).unwrap_or_default(),
            )
        })
        .collect();
    archives.sort_by_key(|a| a.2);
    let selected: Vec<_> = if let Some(name) = &opts.archive {
        match archives.iter().find(|a| &a.0 == name) {
            Some(a) => vec![a.clone()],
            None => {
                c.error(format!("Archive '{name}' not found."));
                Vec::new()
            }
        }
    } else {
        let mut v = archives.clone();
        if let Some(g) = &opts.glob {
            let re = super::prune::glob_regex(g, r"\z")
                .map_err(|e| ArchiveCheckError::Other(e.to_string()))?;
            v.retain(|a| re.is_match(&a.0));
            if v.is_empty() {
                c.warning(format!("--glob-archives {g} does not match any archives"));
            }
        }
        let (flag, n) = match opts.first {
            0 => ("--last", opts.last),
            n => ("--first", n),
        };
        if n > 0 && v.len() < n {
            c.warning(format!(
                "{flag} {n} archives: only found {} archives",
                v.len()
            ));
        }
        let set = |n: usize| (n > 0).then_some(n);
        super::prune::keep_first_last(&mut v, set(opts.first), set(opts.last));
        v
    };
    let n = selected.len();
    for (i, (name, id, _)) in selected.iter().enumerate() {
        c.info(format!("Analyzing archive {name} ({}/{n})", i + 1));
        c.check_archive(name, id, &manifest.item_keys, tam_required);
    }
    if check_all {
        let orphaned = c.chunks.values().filter(|&&n| n == 0).count();
        if orphaned > 0 {
            c.error(format!("{orphaned} orphaned objects found!"));
        }
    } else {
        c.info("Orphaned objects check skipped (needs all archives checked).".into());
    }
    if c.error_found {
        c.error("Archive consistency check complete, problems found.".into());
    } else {
        c.info("Archive consistency check complete, no problems found.".into());
    }
    Ok(!c.error_found)
}
