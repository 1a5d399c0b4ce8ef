//! Thin, safe wrappers over the Linux calls metadata collection needs.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Where xattrs are read from: an open descriptor, or a path that is not followed.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a CStr),
}

pub fn lstat(path: &CStr) -> io::Result<libc::stat> {
    // SAFETY: all-zero is a valid `stat`; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated, `st` is writable.
    if unsafe { libc::lstat(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: as in `lstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the duration of the call.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Opens read-only without following a final symlink and without blocking, trying
/// `O_NOATIME` first (only permitted to the owner or a privileged process).
pub fn open_nofollow(path: &CStr, dir: bool) -> io::Result<OwnedFd> {
    let mut flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    for extra in [libc::O_NOATIME, 0] {
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe { libc::open(path.as_ptr(), flags | extra) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and is owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if extra == 0 || e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EPERM))
}

/// Calls a size-query-then-fill xattr function until the buffer is large enough.
fn sized_call(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n as usize];
        let got = call(buf.as_mut_ptr().cast(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        // Grew between the two calls: ask again.
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

/// The raw NUL-separated list of xattr names.
pub fn list_xattrs(t: Target<'_>) -> io::Result<Vec<u8>> {
    sized_call(|buf, len| match t {
        // SAFETY: `buf` is null with `len` 0, or valid for `len` bytes.
        Target::Fd(fd) => unsafe { libc::flistxattr(fd.as_raw_fd(), buf.cast(), len) },
        // SAFETY: as above; `p` is NUL-terminated.
        Target::Path(p) => unsafe { libc::llistxattr(p.as_ptr(), buf.cast(), len) },
    })
}

pub fn get_xattr(t: Target<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    sized_call(|buf, len| match t {
        // SAFETY: `buf` is null with `len` 0, or valid for `len` bytes; names NUL-terminated.
        Target::Fd(fd) => unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf, len) },
        // SAFETY: as above.
        Target::Path(p) => unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf, len) },
    })
}

const FS_IOC_GETFLAGS: libc::c_ulong =
    nix::request_code_read!(b'f', 1, std::mem::size_of::<libc::c_long>()) as libc::c_ulong;
const FS_APPEND_FL: u32 = 0x20;
const FS_IMMUTABLE_FL: u32 = 0x10;
const FS_NODUMP_FL: u32 = 0x40;

/// Linux inode flags mapped to BSD flags as borg 1.4 does (`BSD_TO_LINUX_FLAGS`):
/// nodump → `UF_NODUMP` (1), immutable → `UF_IMMUTABLE` (2), append → `UF_APPEND` (4).
/// (borg 1.2 also maps `FS_COMPR_FL` to `UF_COMPRESSED`; 1.4 dropped it because it cannot
/// be restored reliably.) `None` when the file system does not support flags.
pub fn get_bsd_flags(fd: BorrowedFd<'_>) -> Option<u32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int to the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) };
    if rc == -1 {
        return None;
    }
    let linux = flags as u32;
    let mut bsd = 0;
    for (bsd_bit, linux_bit) in [(1, FS_NODUMP_FL), (2, FS_IMMUTABLE_FL), (4, FS_APPEND_FL)] {
        if linux & linux_bit != 0 {
            bsd |= bsd_bit;
        }
    }
    Some(bsd)
}
