//! `extract`: writes an archive's items back to the file system the way `borg extract`
//! does (`archive.py: Archive.extract_item`, `extract_helper`, `restore_attrs`), so that a
//! tree restored by us equals one restored by borg: contents, type, mode, owner (names
//! mapped to local ids unless `numeric_ids`), ns mtimes, symlinks, hardlinks, devices,
//! fifos, xattrs, POSIX ACLs and the nodump/immutable/append flags.
//!
//! Order matters and follows borg: owner before mode (chown clears set-id bits), ACLs
//! after mode (an access ACL rewrites the group bits), xattrs after chown (chown drops
//! `security.capability`), times after everything that changes ctime/mtime, flags last
//! (immutable forbids all other changes). Directory attributes are set once their
//! contents are written, so their mtimes survive.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::archive::fsmeta::{self, IdNames};
use crate::archive::read::{
    for_each_chunk, for_each_selected, ArchiveRef, HardlinkMaster, ReadError, Selector,
};
use crate::format::chunker::is_zero;
use crate::format::objects::Item;
use crate::session::Session;

/// borg's `extract` options.
#[derive(Clone, Debug, Default)]
pub struct ExtractOptions {
    /// Use the stored uid/gid, not the ids of the stored names (`--numeric-ids`).
    pub numeric_ids: bool,
    /// Turn all-zero chunks into holes (`--sparse`).
    pub sparse: bool,
    /// Read and check everything, write nothing (`--dry-run`).
    pub dry_run: bool,
    /// Write file contents to the output stream instead of the file system (`--stdout`).
    pub stdout: bool,
    pub noacls: bool,
    pub noxattrs: bool,
    pub noflags: bool,
}

/// Progress and problems, reported while extracting.
pub enum Event<'a> {
    /// An item is being processed (`--list`), with its output path.
    Item(&'a [u8]),
    /// A problem with one item; the extraction goes on and ends with a warning status.
    Warning(String),
}

/// What an extraction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    pub items: u64,
    /// Bytes of file content read from the repository.
    pub bytes: u64,
    pub warnings: u64,
}

/// A per-item failure: reported, then the next item is processed.
enum Fail {
    Item(String),
    Read(ReadError),
}

impl From<ReadError> for Fail {
    fn from(e: ReadError) -> Self {
        Fail::Read(e)
    }
}

fn os_err(path: &Path, op: &str, e: std::io::Error) -> Fail {
    Fail::Item(format!("{}: {op}: {e}", path.display()))
}

fn cpath(p: &Path) -> Result<CString, Fail> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Fail::Item(format!("{}: path contains a NUL byte", p.display())))
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const FS_IOC_GETFLAGS: libc::c_ulong =
    nix::request_code_read!(b'f', 1, std::mem::size_of::<libc::c_long>()) as libc::c_ulong;
const FS_IOC_SETFLAGS: libc::c_ulong =
    nix::request_code_write!(b'f', 2, std::mem::size_of::<libc::c_long>()) as libc::c_ulong;
/// borg's `BSD_TO_LINUX_FLAGS`: nodump, immutable, append.
const BSD_TO_LINUX: [(u32, libc::c_int); 3] = [(1, 0x40), (2, 0x10), (4, 0x20)];

/// borg's `set_flags`: replaces only the bits borg controls, keeps the others; silently
/// gives up where the file system has no flags.
fn set_flags(fd: RawFd, bsd: u32) {
    let mask: libc::c_int = BSD_TO_LINUX.iter().map(|(_, l)| l).fold(0, |a, b| a | b);
    let new: libc::c_int = BSD_TO_LINUX
        .iter()
        .filter(|(b, _)| bsd & b != 0)
        .map(|(_, l)| l)
        .fold(0, |a, b| a | b);
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one int through the pointer.
    unsafe {
        if libc::ioctl(fd, FS_IOC_GETFLAGS as _, &mut flags) == -1 {
            return;
        }
        flags = (flags & !mask) | (new & mask);
        libc::ioctl(fd, FS_IOC_SETFLAGS as _, &flags);
    }
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// The uid/gid to restore: the local ids of the stored names, falling back to the stored
/// ids (borg's `get_item_uid_gid`).
pub fn item_uid_gid(item: &Item, numeric_ids: bool) -> (u32, u32) {
    let ids = IdNames::global();
    if numeric_ids {
        return (item.uid, item.gid);
    }
    let uid = item
        .user
        .as_deref()
        .filter(|u| !u.is_empty())
        .and_then(|u| ids.uid(u))
        .unwrap_or(item.uid);
    let gid = item
        .group
        .as_deref()
        .filter(|g| !g.is_empty())
        .and_then(|g| ids.gid(g))
        .unwrap_or(item.gid);
    (uid, gid)
}

/// Restores archived items below one destination directory.
pub struct Extractor<'s> {
    session: &'s Session,
    dest: PathBuf,
    opts: ExtractOptions,
    /// Directories known to be real directories (not symlinks) during this extraction.
    safe_dirs: HashSet<PathBuf>,
    out: Option<&'s mut dyn Write>,
    summary: ExtractSummary,
}

impl<'s> Extractor<'s> {
    /// `out` receives file contents with `opts.stdout`.
    pub fn new(
        session: &'s Session,
        dest: &Path,
        opts: ExtractOptions,
        out: Option<&'s mut dyn Write>,
    ) -> Self {
        Extractor {
            session,
            dest: dest.to_path_buf(),
            opts,
            safe_dirs: HashSet::new(),
            out,
            summary: ExtractSummary::default(),
        }
    }

    /// Extracts the selected items of `archive`, in archive order. Repository and
    /// decoding errors abort; problems with single items are reported as warnings.
    pub fn run(
        mut self,
        archive: &ArchiveRef,
        selector: &mut Selector,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<ExtractSummary, ReadError> {
        let mut dirs: Vec<Item> = Vec::new();
        let write_fs = !self.opts.dry_run && !self.opts.stdout;
        let session = self.session;
        let mut extract_one = |mut item: Item, selector: &mut Selector| -> Result<(), ReadError> {
            let orig_path = std::mem::take(&mut item.path);
            item.path = crate::archive::read::strip_components(&orig_path, selector.strip());
            if !self.opts.dry_run {
                while let Some(d) = dirs.last() {
                    if item.path.starts_with(&d.path) {
                        break;
                    }
                    let d = dirs.pop().expect("non-empty");
                    if write_fs {
                        let r = self.extract_dir(&d, true);
                        self.report(r, &d.path, events)?;
                    }
                }
            }
            events(Event::Item(&item.path));
            self.summary.items += 1;
            let r = if self.opts.dry_run || self.opts.stdout {
                self.stream_item(&item)
            } else if item.is_dir() {
                let r = self.extract_dir(&item, false);
                dirs.push(item.clone());
                r
            } else {
                self.extract_item(&mut item, &orig_path, selector)
            };
            self.report(r, &orig_path, events)
        };
        for_each_selected(session, &archive.meta, selector, &mut extract_one)?;
        if write_fs {
            while let Some(d) = dirs.pop() {
                let r = self.extract_dir(&d, true);
                self.report(r, &d.path, events)?;
            }
        }
        for p in selector.unmatched_includes() {
            self.summary.warnings += 1;
            events(Event::Warning(format!(
                "Include pattern '{p}' never matched."
            )));
        }
        Ok(self.summary)
    }

    fn report(
        &mut self,
        r: Result<(), Fail>,
        path: &[u8],
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ReadError> {
        match r {
            Ok(()) => Ok(()),
            Err(Fail::Read(e)) => Err(e),
            Err(Fail::Item(msg)) => {
                self.summary.warnings += 1;
                events(Event::Warning(format!(
                    "{}: {msg}",
                    String::from_utf8_lossy(path)
                )));
                Ok(())
            }
        }
    }

    /// `--stdout` / `--dry-run`: reads (and with `--stdout` writes out) the content.
    fn stream_item(&mut self, item: &Item) -> Result<(), Fail> {
        if let Some(chunks) = &item.chunks {
            let mut n = 0u64;
            let stdout = self.opts.stdout;
            let out = &mut self.out;
            for_each_chunk(self.session, chunks, &mut |_,
                                                       data: &[u8]|
             -> Result<(), Fail> {
                n += data.len() as u64;
                if stdout {
                    if let Some(o) = out.as_mut() {
                        o.write_all(data)
                            .map_err(|e| Fail::Item(format!("write to output: {e}")))?;
                    }
                }
                Ok(())
            })?;
            if let Some(o) = self.out.as_mut() {
                o.flush()
                    .map_err(|e| Fail::Item(format!("write to output: {e}")))?;
            }
            self.summary.bytes += n;
            check_size(item, n)?;
        }
        damaged(item)
    }

    /// borg's `_check_safe_parent`: no `..` and no symlinked (or otherwise non-directory)
    /// parent, so a crafted archive cannot write outside the destination.
    fn check_safe_parent(&mut self, archived: &[u8]) -> Result<(), Fail> {
        let mut comps: Vec<&[u8]> = archived.split(|&b| b == b'/').collect();
        comps.pop();
        comps.retain(|c| !c.is_empty() && *c != b".");
        let shown = || String::from_utf8_lossy(archived).into_owned();
        if comps.iter().any(|c| *c == b"..") {
            return Err(Fail::Item(format!(
                "refusing to extract {}: path contains '..'",
                shown()
            )));
        }
        let mut cur = self.dest.clone();
        for c in comps {
            cur.push(OsStr::from_bytes(c));
            if self.safe_dirs.contains(&cur) {
                continue;
            }
            match std::fs::symlink_metadata(&cur) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(os_err(&cur, "lstat", e)),
                Ok(m) if !m.file_type().is_dir() => {
                    return Err(Fail::Item(format!(
                        "refusing to extract {}: parent {} is not a directory (symlink?)",
                        shown(),
                        cur.display()
                    )))
                }
                Ok(_) => {
                    self.safe_dirs.insert(cur.clone());
                }
            }
        }
        Ok(())
    }

    /// Common start of every item: safety checks, removal of what is in the way, parent.
    fn prepare(&mut self, item: &Item) -> Result<PathBuf, Fail> {
        if item.path.starts_with(b"/") || item.path.starts_with(b"../") {
            return Err(Fail::Item("path should be relative and local".into()));
        }
        let path = self.dest.join(OsStr::from_bytes(&item.path));
        self.safe_dirs.remove(&path);
        self.check_safe_parent(&item.path)?;
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            let _ = if m.file_type().is_dir() {
                std::fs::remove_dir(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
        if let Some(parent) = path.parent() {
            if !self.safe_dirs.contains(parent) {
                if std::fs::symlink_metadata(parent).is_err() {
                    std::fs::create_dir_all(parent).map_err(|e| os_err(parent, "makedirs", e))?;
                }
                self.safe_dirs.insert(parent.to_path_buf());
            }
        }
        Ok(path)
    }

    fn extract_dir(&mut self, item: &Item, restore_attrs: bool) -> Result<(), Fail> {
        let path = self.prepare(item)?;
        if std::fs::symlink_metadata(&path).is_err() {
            std::fs::create_dir(&path).map_err(|e| os_err(&path, "mkdir", e))?;
        }
        if restore_attrs {
            self.restore_attrs(&path, item, None)?;
        }
        Ok(())
    }

    /// borg's `extract_helper` before the item is written: links a hardlink slave to
    /// its already extracted master, or gives it the chunks of an unselected master.
    /// Returns whether the item was linked.
    fn link_slave(
        &mut self,
        item: &mut Item,
        path: &Path,
        selector: &Selector,
    ) -> Result<bool, Fail> {
        let Some(source) = item.source.clone() else {
            return Ok(false);
        };
        let comps = crate::archive::read::strip_components(&source, selector.strip());
        if self.check_safe_parent(&comps).is_err() {
            return Err(Fail::Item(format!(
                "refusing to link to unsafe hardlink source {}",
                String::from_utf8_lossy(&source)
            )));
        }
        let entry = selector
            .masters
            .get(&source)
            .cloned()
            .unwrap_or(HardlinkMaster {
                chunks: None,
                link_target: Some(
                    self.dest
                        .join(OsStr::from_bytes(&comps))
                        .into_os_string()
                        .into_vec(),
                ),
            });
        if let Some(target) = entry.link_target {
            let target = PathBuf::from(OsStr::from_bytes(&target));
            // linkat without AT_SYMLINK_FOLLOW: a symlink is linked, not its target
            std::fs::hard_link(&target, path).map_err(|e| os_err(path, "link", e))?;
            return Ok(true);
        }
        if let Some(chunks) = entry.chunks {
            item.chunks = Some(chunks);
        }
        Ok(false)
    }

    /// After a hardlinkable item was written: later members of its group link to it.
    fn remember_master(&self, item: &Item, orig_path: &[u8], path: &Path, selector: &mut Selector) {
        if selector.partial && (item.source.is_some() || item.hardlink_master != Some(false)) {
            let key = item.source.clone().unwrap_or_else(|| orig_path.to_vec());
            selector.masters.insert(
                key,
                HardlinkMaster {
                    chunks: None,
                    link_target: Some(path.as_os_str().as_bytes().to_vec()),
                },
            );
        }
    }

    fn extract_item(
        &mut self,
        item: &mut Item,
        orig_path: &[u8],
        selector: &mut Selector,
    ) -> Result<(), Fail> {
        let path = self.prepare(item)?;
        if item.is_reg() {
            if self.link_slave(item, &path, selector)? {
                return Ok(());
            }
            self.write_file(&path, item)?;
            self.remember_master(item, orig_path, &path, selector);
            check_size(item, item.chunks_size())?;
            return damaged(item);
        }
        if item.is_symlink() {
            let target = item.source.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
                .map_err(|e| os_err(&path, "symlink", e))?;
            return self.restore_attrs(&path, item, None);
        }
        if item.is_fifo() || item.is_chr() || item.is_blk() {
            if self.link_slave(item, &path, selector)? {
                return Ok(());
            }
            let c = cpath(&path)?;
            // SAFETY: c is a valid NUL-terminated path.
            let rc = if item.is_fifo() {
                unsafe { libc::mkfifo(c.as_ptr(), 0o666) }
            } else {
                unsafe {
                    libc::mknod(
                        c.as_ptr(),
                        item.mode as libc::mode_t,
                        item.rdev.unwrap_or(0) as libc::dev_t,
                    )
                }
            };
            check(rc)
                .map_err(|e| os_err(&path, if item.is_fifo() { "mkfifo" } else { "mknod" }, e))?;
            self.restore_attrs(&path, item, None)?;
            self.remember_master(item, orig_path, &path, selector);
            return Ok(());
        }
        Err(Fail::Item(format!(
            "unknown archive item type {:o}",
            item.mode
        )))
    }

    fn write_file(&mut self, path: &Path, item: &Item) -> Result<(), Fail> {
        let mut f = File::create(path).map_err(|e| os_err(path, "open", e))?;
        let sparse = self.opts.sparse;
        let mut n = 0u64;
        if let Some(chunks) = &item.chunks {
            for_each_chunk(self.session, chunks, &mut |_,
                                                       data: &[u8]|
             -> Result<(), Fail> {
                n += data.len() as u64;
                if sparse && is_zero(data) {
                    f.seek(SeekFrom::Current(data.len() as i64))
                        .map_err(|e| os_err(path, "seek", e))?;
                } else {
                    f.write_all(data).map_err(|e| os_err(path, "write", e))?;
                }
                Ok(())
            })?;
        }
        self.summary.bytes += n;
        f.set_len(n).map_err(|e| os_err(path, "truncate", e))?;
        self.restore_attrs(path, item, Some(f.as_raw_fd()))
    }

    /// borg's `restore_attrs` (by descriptor for regular files, else by path without
    /// following symlinks).
    fn restore_attrs(&mut self, path: &Path, item: &Item, fd: Option<RawFd>) -> Result<(), Fail> {
        let c = cpath(path)?;
        let (uid, gid) = item_uid_gid(item, self.opts.numeric_ids);
        let symlink = item.is_symlink();
        // SAFETY (all libc calls below): fd is an open descriptor owned by the caller, c a
        // valid NUL-terminated path; pointers to locals live across the call.
        let _ = check(unsafe {
            match fd {
                Some(fd) => libc::fchown(fd, uid, gid),
                None => libc::fchownat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    uid,
                    gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                ),
            }
        });
        let perm = (item.mode & 0o7777) as libc::mode_t;
        match fd {
            Some(fd) => {
                check(unsafe { libc::fchmod(fd, perm) }).map_err(|e| os_err(path, "chmod", e))?
            }
            // Linux cannot change a symlink's mode
            None if !symlink => check(unsafe { libc::chmod(c.as_ptr(), perm) })
                .map_err(|e| os_err(path, "chmod", e))?,
            None => {}
        }
        if !self.opts.noacls && !symlink {
            self.set_acls(path, item, fd)?;
        }
        let mut xattr_warnings = Vec::new();
        if !self.opts.noxattrs {
            for (k, v) in item.xattrs.iter().flatten() {
                let name = OsStr::from_bytes(k);
                let value = v.as_deref().unwrap_or_default();
                let r = match fd {
                    Some(fd) => set_xattr_fd(fd, k, value),
                    None => xattr::set(path, name, value),
                };
                if let Err(e) = r {
                    xattr_warnings.push(format!(
                        "{}: when setting extended attribute {}: {e}",
                        path.display(),
                        String::from_utf8_lossy(k)
                    ));
                }
            }
        }
        let atime = timespec(item.atime.unwrap_or(item.mtime));
        let times = [atime, timespec(item.mtime)];
        let _ = check(unsafe {
            match fd {
                Some(fd) => libc::futimens(fd, times.as_ptr()),
                None => libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                ),
            }
        });
        if !self.opts.noflags {
            if let Some(flags) = item.bsdflags {
                match fd {
                    Some(fd) => set_flags(fd, flags),
                    None if item.is_dir() || item.is_reg() || item.is_fifo() => {
                        // SAFETY: see above; the descriptor is closed right after use.
                        let fd = unsafe {
                            libc::open(
                                c.as_ptr(),
                                libc::O_RDONLY
                                    | libc::O_NONBLOCK
                                    | libc::O_NOFOLLOW
                                    | libc::O_CLOEXEC,
                            )
                        };
                        if fd >= 0 {
                            set_flags(fd, flags);
                            unsafe { libc::close(fd) };
                        }
                    }
                    None => {}
                }
            }
        }
        if xattr_warnings.is_empty() {
            Ok(())
        } else {
            Err(Fail::Item(xattr_warnings.join("; ")))
        }
    }

    /// borg's `acl_set`: stored text → `system.posix_acl_*` (access through the
    /// descriptor when there is one; default by path, directories only). ENOTSUP (no ACL
    /// support on this file system) is ignored.
    fn set_acls(&self, path: &Path, item: &Item, fd: Option<RawFd>) -> Result<(), Fail> {
        let ids = IdNames::global();
        let conv = |text: &[u8]| {
            fsmeta::acl_text_to_xattr(text, self.opts.numeric_ids, ids)
                .map_err(|e| Fail::Item(format!("{}: ACL: {e}", path.display())))
        };
        let ignore_notsup = |r: std::io::Result<()>, what: &str| match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(()),
            Err(e) => Err(os_err(path, what, e)),
            Ok(()) => Ok(()),
        };
        if let Some(text) = item.acl_access.as_deref().filter(|t| !t.is_empty()) {
            if let Some(v) = conv(text)? {
                let r = match fd {
                    Some(fd) => set_xattr_fd(fd, b"system.posix_acl_access", &v),
                    None => xattr::set(path, "system.posix_acl_access", &v),
                };
                ignore_notsup(r, "set access ACL")?;
            }
        }
        if let Some(text) = item.acl_default.as_deref().filter(|t| !t.is_empty()) {
            if let Some(v) = conv(text)? {
                ignore_notsup(
                    xattr::set(path, "system.posix_acl_default", &v),
                    "set default ACL",
                )?;
            }
        }
        Ok(())
    }
}

fn set_xattr_fd(fd: RawFd, name: &[u8], value: &[u8]) -> std::io::Result<()> {
    let n =
        CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: valid descriptor, NUL-terminated name, value pointer/length from a slice.
    check(unsafe { libc::fsetxattr(fd, n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

fn check_size(item: &Item, got: u64) -> Result<(), Fail> {
    match item.size {
        Some(s) if s != got => Err(Fail::Item(format!(
            "Size inconsistency detected: size {s}, chunks size {got}"
        ))),
        _ => Ok(()),
    }
}

fn damaged(item: &Item) -> Result<(), Fail> {
    if item.chunks_healthy.is_some() {
        return Err(Fail::Item(
            "File has damaged (all-zero) chunks. Try running borg check --repair.".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4099]));
        assert!(is_zero(&[]));
        let mut v = vec![0u8; 4099];
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[17] = 1;
        assert!(!is_zero(&v));
    }

    #[test]
    fn timespecs_before_1970() {
        let t = timespec(-1);
        assert_eq!((t.tv_sec, t.tv_nsec), (-1, 999_999_999));
        let t = timespec(1_000_000_001);
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 1));
    }
}
