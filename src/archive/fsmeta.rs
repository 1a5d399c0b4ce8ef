//! What borg stores about a file-system object on Linux (`archive.py: MetadataCollector`,
//! `platform/linux.pyx`, `xattr.py`): stat fields, owner names, xattrs, POSIX ACLs in
//! borg's text form, and inode flags mapped to BSD flags.
//!
//! Everything is read without following symlinks. Regular files and directories are read
//! through a descriptor (like borg), so that stat, xattrs, ACLs and flags all describe the
//! same inode even if the path is replaced meanwhile.

pub mod acl;
mod ids;
mod sys;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use acl::AclError;
pub use ids::{IdNames, IdResolver};
use sys::Target;

/// Metadata of one file-system object, as borg's item fields need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsMeta {
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Owner name (`None` with `numeric_ids` or when the id has no name).
    pub user: Option<Vec<u8>>,
    pub group: Option<Vec<u8>>,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub atime_ns: i64,
    pub size: u64,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub rdev: u64,
    /// Extended attributes except `system.posix_acl_*` (those are the ACL fields); an empty
    /// value is an empty vector (borg stores it as nil).
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// borg's ACL text; only present when the object has an extended ACL (more than the
    /// three mode-equivalent entries, or a default ACL).
    pub acl_access: Option<Vec<u8>>,
    /// Default ACL text of a directory with an extended ACL; may be empty (borg stores the
    /// empty text for a directory that has only an extended access ACL).
    pub acl_default: Option<Vec<u8>>,
    /// BSD flags (`UF_NODUMP` 1, `UF_IMMUTABLE` 2, `UF_APPEND` 4) from `FS_IOC_GETFLAGS`;
    /// `None` when none is set or the file system has no flags.
    pub bsdflags: Option<u32>,
    /// Single xattrs that could not be read; borg logs a warning and skips them.
    pub warnings: Vec<XattrWarning>,
}

/// borg's `--numeric-ids`, `--noacls`, `--noxattrs`, `--noflags`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaOptions {
    pub numeric_ids: bool,
    pub noacls: bool,
    pub noxattrs: bool,
    pub noflags: bool,
}

/// An xattr that could not be read (the object is still backed up without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrWarning {
    pub name: Vec<u8>,
    pub errno: i32,
}

impl fmt::Display for XattrWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "when getting extended attribute {}: {}",
            String::from_utf8_lossy(&self.name),
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

/// Reading metadata failed; borg reports such a file as an error and skips it.
#[derive(Debug, thiserror::Error)]
pub enum FsMetaError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Acl { path: PathBuf, source: AclError },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> FsMetaError + 'a {
    move |source| FsMetaError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

const S_IFMT: u32 = libc::S_IFMT;

fn is_type(mode: u32, t: u32) -> bool {
    mode & S_IFMT == t
}

/// Metadata of `path` itself (symlinks are not followed). Regular files and directories
/// are opened read-only (`O_NOFOLLOW`, `O_NOATIME` where permitted) and read through the
/// descriptor; other types, and files that cannot be opened, are read by path.
pub fn read_meta(path: &Path, opts: &MetaOptions) -> Result<FsMeta, FsMetaError> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| FsMetaError::Io {
        path: path.to_path_buf(),
        op: "stat",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let st = sys::lstat(&cpath).map_err(io_err(path, "stat"))?;
    let mode = st.st_mode;
    if is_type(mode, libc::S_IFREG) || is_type(mode, libc::S_IFDIR) {
        if let Ok(fd) = sys::open_nofollow(&cpath, is_type(mode, libc::S_IFDIR)) {
            return read_meta_fd(fd.as_fd(), path, opts);
        }
    }
    collect(Target::Path(&cpath), &st, path, opts)
}

/// Metadata of the object open as `fd` (a regular descriptor, not `O_PATH`): stat, xattrs,
/// ACLs and flags are all read through it. `path` is only used in errors.
pub fn read_meta_fd(
    fd: BorrowedFd<'_>,
    path: &Path,
    opts: &MetaOptions,
) -> Result<FsMeta, FsMetaError> {
    let st = sys::fstat(fd).map_err(io_err(path, "fstat"))?;
    collect(Target::Fd(fd), &st, path, opts)
}

/// borg's `acl_set` conversion: item ACL text → `system.posix_acl_*` xattr value, using
/// the stored ids (`numeric_ids`) or the local ids of the stored names. `Ok(None)` when the
/// text is empty (nothing to set).
pub fn acl_text_to_xattr(
    text: &[u8],
    numeric_ids: bool,
    ids: &dyn IdResolver,
) -> Result<Option<Vec<u8>>, AclError> {
    acl::borg_text_to_xattr(text, numeric_ids, ids)
}

/// Seconds and nanoseconds as borg's nanosecond timestamps.
pub fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn collect(
    target: Target<'_>,
    st: &libc::stat,
    path: &Path,
    opts: &MetaOptions,
) -> Result<FsMeta, FsMetaError> {
    let mode = st.st_mode;
    let ids = IdNames::global();
    let (user, group) = if opts.numeric_ids {
        (None, None)
    } else {
        (ids.user(st.st_uid), ids.group(st.st_gid))
    };
    let mut meta = FsMeta {
        mode,
        uid: st.st_uid,
        gid: st.st_gid,
        user,
        group,
        mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
        ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        atime_ns: ns(st.st_atime, st.st_atime_nsec),
        size: st.st_size as u64,
        ino: st.st_ino,
        dev: st.st_dev,
        nlink: st.st_nlink,
        rdev: st.st_rdev,
        xattrs: BTreeMap::new(),
        acl_access: None,
        acl_default: None,
        bsdflags: None,
        warnings: Vec::new(),
    };
    // borg opens only regular files and directories for flags (devices may be slow to
    // open; symlinks cannot be opened); an open failure means "no flags".
    if !opts.noflags && (is_type(mode, libc::S_IFREG) || is_type(mode, libc::S_IFDIR)) {
        if let Target::Fd(fd) = target {
            meta.bsdflags = sys::get_bsd_flags(fd).filter(|&f| f != 0);
        }
    }
    if !opts.noxattrs {
        read_xattrs(target, path, &mut meta)?;
    }
    if !opts.noacls && !is_type(mode, libc::S_IFLNK) {
        read_acls(target, path, opts.numeric_ids, &mut meta)?;
    }
    Ok(meta)
}

fn read_xattrs(target: Target<'_>, path: &Path, meta: &mut FsMeta) -> Result<(), FsMetaError> {
    let names = match sys::list_xattrs(target) {
        Ok(n) => n,
        // Not supported by the file system, or not permitted to list: no xattrs.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
            return Ok(())
        }
        Err(e) => return Err(io_err(path, "listxattr")(e)),
    };
    for name in names.split(|&b| b == 0) {
        if name.is_empty() || name.starts_with(b"system.posix_acl_") {
            continue;
        }
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        match sys::get_xattr(target, &cname) {
            Ok(v) => {
                meta.xattrs.insert(name.to_vec(), v);
            }
            // Removed since listing.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => meta.warnings.push(XattrWarning {
                name: name.to_vec(),
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            }),
        }
    }
    Ok(())
}

/// Reads one ACL xattr: `Ok(None)` if absent, `Err` with the errno otherwise.
fn acl_xattr(target: Target<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    match sys::get_xattr(target, &cname) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_acls(
    target: Target<'_>,
    path: &Path,
    numeric_ids: bool,
    meta: &mut FsMeta,
) -> Result<(), FsMetaError> {
    let read = |name| match acl_xattr(target, name) {
        Ok(v) => Ok(Some(v)),
        // No ACL support here (borg 1.4 ignores ENOTSUP).
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(None),
        Err(e) => Err(io_err(path, "get ACL")(e)),
    };
    let Some(access) = read(acl::XATTR_ACCESS)? else {
        return Ok(());
    };
    let Some(default) = read(acl::XATTR_DEFAULT)? else {
        return Ok(());
    };
    // libacl's acl_extended_file(): more than three access entries, or any default ACL.
    let extended = access
        .as_ref()
        .is_some_and(|a| a.len() > acl::MINIMAL_XATTR_LEN)
        || default
            .as_ref()
            .is_some_and(|d| d.len() >= acl::MINIMAL_XATTR_LEN);
    if !extended {
        return Ok(());
    }
    let acl_err = |source| FsMetaError::Acl {
        path: path.to_path_buf(),
        source,
    };
    let ids = IdNames::global();
    let access_entries = match &access {
        Some(a) => acl::parse_xattr(a).map_err(acl_err)?,
        None => acl::from_mode(meta.mode),
    };
    meta.acl_access = Some(acl::to_borg_text(&access_entries, numeric_ids, ids));
    if is_type(meta.mode, libc::S_IFDIR) {
        let default_entries = match &default {
            Some(d) => acl::parse_xattr(d).map_err(acl_err)?,
            None => Vec::new(),
        };
        meta.acl_default = Some(acl::to_borg_text(&default_entries, numeric_ids, ids));
    }
    Ok(())
}
