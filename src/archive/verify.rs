//! `verify`: a restore drill without writing anything. Every chunk the archive references
//! is read, authenticated and id-checked (each distinct chunk once); optionally the
//! archive is compared with a source tree (or a ZFS snapshot of it) the way an extraction
//! into that tree would be: content, type, mode, owner, ns mtime, symlink targets,
//! devices, hardlinks, xattrs, ACLs and flags, plus files the archive does not have.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::archive::extract::item_uid_gid;
use crate::archive::fsmeta::{self, MetaOptions};
use crate::archive::read::{
    for_each_chunk, for_each_selected, strip_components, ArchiveRef, ReadError, Selector,
};
use crate::format::objects::{ChunkId, Item};
use crate::fsutil::read_full;
use crate::session::Session;

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Compare numeric ids instead of the local ids of the archived names.
    pub numeric_ids: bool,
    pub noacls: bool,
    pub noxattrs: bool,
    pub noflags: bool,
}

/// One way the source differs from the archive (or the archive from itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// In the archive, not in the source.
    Missing(Vec<u8>),
    /// In the source (below an archived directory), not in the archive.
    Extra(Vec<u8>),
    /// Type, mode, owner, … differ: (path, what, archived, source).
    Changed(Vec<u8>, &'static str, String, String),
    /// Content differs from this byte offset on.
    Content(Vec<u8>, u64),
    /// A chunk could not be read or failed authentication / its id check.
    BadChunk(Vec<u8>, String),
    /// The source could not be read.
    Unreadable(Vec<u8>, String),
}

impl Finding {
    /// Whether this is damage in the archive (exit status 2) rather than a difference.
    pub fn is_error(&self) -> bool {
        matches!(self, Finding::BadChunk(..))
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Finding::Missing(path) => write!(f, "missing in source: {}", p(path)),
            Finding::Extra(path) => write!(f, "not in archive: {}", p(path)),
            Finding::Changed(path, what, a, s) => {
                write!(f, "{}: {what} differs: archive {a}, source {s}", p(path))
            }
            Finding::Content(path, off) => {
                write!(f, "{}: content differs from byte {off}", p(path))
            }
            Finding::BadChunk(path, e) => write!(f, "{}: damaged archive data: {e}", p(path)),
            Finding::Unreadable(path, e) => write!(f, "{}: cannot read source: {e}", p(path)),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifySummary {
    pub items: u64,
    /// Distinct chunks read and checked.
    pub chunks: u64,
    /// Plaintext bytes of those chunks.
    pub bytes: u64,
    pub differences: u64,
    pub errors: u64,
}

enum Stop {
    Read(ReadError),
    Chunk(String),
}

impl From<ReadError> for Stop {
    fn from(e: ReadError) -> Self {
        Stop::Read(e)
    }
}

/// Runs the drill over the selected items; findings go to `report` as they are made.
/// Repository errors outside file contents (item stream, archive object) abort.
pub fn verify_archive(
    session: &Session,
    archive: &ArchiveRef,
    selector: &mut Selector,
    against: Option<&Path>,
    opts: &VerifyOptions,
    report: &mut dyn FnMut(&Finding),
) -> Result<VerifySummary, ReadError> {
    let mut sum = VerifySummary::default();
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut archived: HashSet<Vec<u8>> = HashSet::new();
    let mut dirs: Vec<Vec<u8>> = Vec::new();
    let mut emit = |f: Finding, sum: &mut VerifySummary| {
        if f.is_error() {
            sum.errors += 1;
        } else {
            sum.differences += 1;
        }
        report(&f);
    };
    let meta_opts = MetaOptions {
        numeric_ids: opts.numeric_ids,
        noacls: opts.noacls,
        noxattrs: opts.noxattrs,
        noflags: opts.noflags,
    };
    for_each_selected(
        session,
        &archive.meta,
        selector,
        &mut |item: Item, selector: &mut Selector| -> Result<(), ReadError> {
            sum.items += 1;
            let path = strip_components(&item.path, selector.strip());
            let Some(root) = against else {
                // chunk check only: every distinct chunk once
                let fresh: Vec<_> = item
                    .chunks
                    .iter()
                    .flatten()
                    .filter(|c| seen.insert(c.id))
                    .copied()
                    .collect();
                let r =
                    for_each_chunk(session, &fresh, &mut |_, data: &[u8]| -> Result<(), Stop> {
                        sum.chunks += 1;
                        sum.bytes += data.len() as u64;
                        Ok(())
                    });
                return chunk_result(r, &path, &mut sum, &mut emit);
            };
            archived.insert(path.clone());
            if item.is_dir() {
                dirs.push(path.clone());
            }
            let fs_path = root.join(OsStr::from_bytes(&path));
            let st = match std::fs::symlink_metadata(&fs_path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    emit(Finding::Missing(path), &mut sum);
                    return check_chunks_only(session, &item, &mut seen, &mut sum, &mut emit);
                }
                Err(e) => {
                    emit(Finding::Unreadable(path, e.to_string()), &mut sum);
                    return check_chunks_only(session, &item, &mut seen, &mut sum, &mut emit);
                }
            };
            macro_rules! changed {
                ($what:expr, $a:expr, $s:expr, $sum:expr) => {
                    emit(Finding::Changed(path.clone(), $what, $a, $s), $sum)
                };
            }
            if st.mode() & 0o170000 != item.mode & 0o170000 {
                changed!(
                    "type",
                    type_name(item.mode).into(),
                    type_name(st.mode()).into(),
                    &mut sum
                );
                return check_chunks_only(session, &item, &mut seen, &mut sum, &mut emit);
            }
            if !item.is_symlink() && st.mode() & 0o7777 != item.mode & 0o7777 {
                changed!(
                    "mode",
                    format!("{:04o}", item.mode & 0o7777),
                    format!("{:04o}", st.mode() & 0o7777),
                    &mut sum
                );
            }
            let (uid, gid) = item_uid_gid(&item, opts.numeric_ids);
            if (st.uid(), st.gid()) != (uid, gid) {
                changed!(
                    "owner",
                    format!("{uid}:{gid}"),
                    format!("{}:{}", st.uid(), st.gid()),
                    &mut sum
                );
            }
            let mtime = st.mtime() * 1_000_000_000 + st.mtime_nsec();
            if mtime != item.mtime {
                changed!("mtime", item.mtime.to_string(), mtime.to_string(), &mut sum);
            }
            if item.is_symlink() {
                let target = std::fs::read_link(&fs_path)
                    .map(|t| t.into_os_string().into_encoded_bytes())
                    .unwrap_or_default();
                let want = item.source.clone().unwrap_or_default();
                if target != want {
                    changed!("symlink target", lossy(&want), lossy(&target), &mut sum);
                }
            }
            if (item.is_chr() || item.is_blk()) && item.rdev.unwrap_or(0) != st.rdev() {
                changed!(
                    "device",
                    item.rdev.unwrap_or(0).to_string(),
                    st.rdev().to_string(),
                    &mut sum
                );
            }
            if item.is_hardlink_slave() {
                let master = root.join(OsStr::from_bytes(&strip_components(
                    item.source.as_deref().unwrap_or_default(),
                    selector.strip(),
                )));
                match std::fs::symlink_metadata(&master) {
                    Ok(m) if m.ino() == st.ino() && m.dev() == st.dev() => {}
                    _ => changed!(
                        "hardlink",
                        lossy(item.source.as_deref().unwrap_or_default()),
                        "not linked".into(),
                        &mut sum
                    ),
                }
            }
            match fsmeta::read_meta(&fs_path, &meta_opts) {
                Err(e) => emit(Finding::Unreadable(path.clone(), e.to_string()), &mut sum),
                Ok(m) => {
                    if !opts.noxattrs && !item.is_symlink() {
                        let a: Vec<(Vec<u8>, Vec<u8>)> = item
                            .xattrs
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
                            .collect();
                        let s: Vec<(Vec<u8>, Vec<u8>)> = m.xattrs.into_iter().collect();
                        if a != s {
                            changed!("xattrs", names(&a), names(&s), &mut sum);
                        }
                    }
                    if !opts.noacls {
                        let norm = |t: &Option<Vec<u8>>| t.clone().filter(|t| !t.is_empty());
                        if norm(&item.acl_access) != norm(&m.acl_access)
                            || norm(&item.acl_default) != norm(&m.acl_default)
                        {
                            let show = |a: &Option<Vec<u8>>, d: &Option<Vec<u8>>| {
                                format!(
                                    "{:?}/{:?}",
                                    lossy(&norm(a).unwrap_or_default()),
                                    lossy(&norm(d).unwrap_or_default())
                                )
                            };
                            changed!(
                                "ACL",
                                show(&item.acl_access, &item.acl_default),
                                show(&m.acl_access, &m.acl_default),
                                &mut sum
                            );
                        }
                    }
                    if !opts.noflags
                        && (item.is_reg() || item.is_dir())
                        && item.bsdflags.unwrap_or(0) != m.bsdflags.unwrap_or(0)
                    {
                        changed!(
                            "flags",
                            item.bsdflags.unwrap_or(0).to_string(),
                            m.bsdflags.unwrap_or(0).to_string(),
                            &mut sum
                        );
                    }
                }
            }
            if item.is_reg() && item.chunks.is_some() {
                compare_content(
                    session,
                    &item,
                    &path,
                    &fs_path,
                    st.len(),
                    &mut seen,
                    &mut sum,
                    &mut emit,
                )?;
            }
            Ok(())
        },
    )?;
    if let Some(root) = against {
        let mut extra = BTreeSet::new();
        for d in &dirs {
            let Ok(rd) = std::fs::read_dir(root.join(OsStr::from_bytes(d))) else {
                continue;
            };
            for e in rd.flatten() {
                let mut p = d.clone();
                if !p.is_empty() && p != b"." {
                    p.push(b'/');
                } else {
                    p.clear();
                }
                p.extend_from_slice(e.file_name().as_bytes());
                if !archived.contains(&p) {
                    extra.insert(p);
                }
            }
        }
        for p in extra {
            emit(Finding::Extra(p), &mut sum);
        }
    }
    Ok(sum)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn names(x: &[(Vec<u8>, Vec<u8>)]) -> String {
    let v: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{}({} bytes)", lossy(k), v.len()))
        .collect();
    format!("[{}]", v.join(", "))
}

fn type_name(mode: u32) -> &'static str {
    match mode & 0o170000 {
        0o100000 => "regular file",
        0o040000 => "directory",
        0o120000 => "symlink",
        0o020000 => "character device",
        0o060000 => "block device",
        0o010000 => "fifo",
        0o140000 => "socket",
        _ => "unknown",
    }
}

fn chunk_result(
    r: Result<(), Stop>,
    path: &[u8],
    sum: &mut VerifySummary,
    emit: &mut dyn FnMut(Finding, &mut VerifySummary),
) -> Result<(), ReadError> {
    match r {
        Ok(()) => Ok(()),
        // damage in file contents is reported per file; the drill goes on
        Err(Stop::Read(ReadError::Session(e))) => {
            emit(Finding::BadChunk(path.to_vec(), e.to_string()), sum);
            Ok(())
        }
        Err(Stop::Read(e)) => Err(e),
        Err(Stop::Chunk(msg)) => {
            emit(Finding::BadChunk(path.to_vec(), msg), sum);
            Ok(())
        }
    }
}

fn check_chunks_only(
    session: &Session,
    item: &Item,
    seen: &mut HashSet<ChunkId>,
    sum: &mut VerifySummary,
    emit: &mut dyn FnMut(Finding, &mut VerifySummary),
) -> Result<(), ReadError> {
    let fresh: Vec<_> = item
        .chunks
        .iter()
        .flatten()
        .filter(|c| seen.insert(c.id))
        .copied()
        .collect();
    let (mut n, mut b) = (0, 0);
    let r = for_each_chunk(session, &fresh, &mut |_, data: &[u8]| -> Result<(), Stop> {
        n += 1;
        b += data.len() as u64;
        Ok(())
    });
    sum.chunks += n;
    sum.bytes += b;
    chunk_result(r, &item.path, sum, emit)
}

/// Streams the archived content against the source file; reports the first differing
/// byte (or the size difference).
#[allow(clippy::too_many_arguments)]
fn compare_content(
    session: &Session,
    item: &Item,
    path: &[u8],
    fs_path: &PathBuf,
    fs_len: u64,
    seen: &mut HashSet<ChunkId>,
    sum: &mut VerifySummary,
    emit: &mut dyn FnMut(Finding, &mut VerifySummary),
) -> Result<(), ReadError> {
    let chunks = item.chunks.clone().unwrap_or_default();
    let mut f = match File::open(fs_path) {
        Ok(f) => f,
        Err(e) => {
            emit(Finding::Unreadable(path.to_vec(), e.to_string()), sum);
            return check_chunks_only(session, item, seen, sum, emit);
        }
    };
    let mut off = 0u64;
    let mut differs: Option<u64> = None;
    let mut buf = Vec::new();
    let (mut n, mut b) = (0u64, 0u64);
    let r = for_each_chunk(session, &chunks, &mut |c,
                                                   data: &[u8]|
     -> Result<(), Stop> {
        if seen.insert(c.id) {
            n += 1;
            b += data.len() as u64;
        }
        if differs.is_none() {
            buf.resize(data.len(), 0);
            let got = read_full(&mut f, &mut buf)
                .map_err(|e| Stop::Chunk(format!("reading source: {e}")))?;
            if let Some(i) = (0..got).find(|&i| buf[i] != data[i]) {
                differs = Some(off + i as u64);
            } else if got < data.len() {
                differs = Some(off + got as u64);
            }
        }
        off += data.len() as u64;
        Ok(())
    });
    sum.chunks += n;
    sum.bytes += b;
    chunk_result(r, path, sum, emit)?;
    if differs.is_none() && fs_len != off {
        differs = Some(off.min(fs_len));
    }
    if let Some(at) = differs {
        emit(Finding::Content(path.to_vec(), at), sum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_read_well() {
        let f = Finding::Changed(b"a/b".to_vec(), "mode", "0644".into(), "0600".into());
        assert_eq!(
            f.to_string(),
            "a/b: mode differs: archive 0644, source 0600"
        );
        assert!(!f.is_error());
        assert!(Finding::BadChunk(b"x".to_vec(), "gone".into()).is_error());
        assert_eq!(
            Finding::Content(b"f".to_vec(), 7).to_string(),
            "f: content differs from byte 7"
        );
    }
}
