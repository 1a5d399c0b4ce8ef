//! uid/gid ↔ name lookups through the system databases (NSS), cached like borg's
//! `lru_cache`d `uid2user`/`gid2group`/`user2uid`/`group2gid`.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// Name lookups ACL rendering needs; a trait so the ACL code can be tested without NSS.
pub trait IdResolver {
    /// `getpwuid(uid).pw_name`.
    fn user_name(&self, uid: u32) -> Option<Vec<u8>>;
    /// `getgrgid(gid).gr_name`.
    fn group_name(&self, gid: u32) -> Option<Vec<u8>>;
    /// `getpwnam(name).pw_uid`.
    fn user_id(&self, name: &[u8]) -> Option<u32>;
    /// `getgrnam(name).gr_gid`.
    fn group_id(&self, name: &[u8]) -> Option<u32>;
}

/// Thread-safe cache of the system's user and group databases. Entries are never
/// evicted: a backup sees few distinct ids.
#[derive(Default)]
pub struct IdNames {
    users: Mutex<HashMap<u32, Option<Vec<u8>>>>,
    groups: Mutex<HashMap<u32, Option<Vec<u8>>>>,
    uids: Mutex<HashMap<Vec<u8>, Option<u32>>>,
    gids: Mutex<HashMap<Vec<u8>, Option<u32>>>,
}

fn cached<K: std::hash::Hash + Eq + Clone, V: Clone>(
    map: &Mutex<HashMap<K, V>>,
    key: &K,
    lookup: impl FnOnce() -> V,
) -> V {
    if let Some(v) = map.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
        return v.clone();
    }
    // Looked up outside the lock: NSS may be slow (LDAP) and other threads can proceed.
    let v = lookup();
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone(), v.clone());
    v
}

impl IdNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide cache.
    pub fn global() -> &'static IdNames {
        static GLOBAL: OnceLock<IdNames> = OnceLock::new();
        GLOBAL.get_or_init(IdNames::new)
    }

    /// User name of `uid`, `None` if unknown (borg's `uid2user`).
    pub fn user(&self, uid: u32) -> Option<Vec<u8>> {
        cached(&self.users, &uid, || pw_by_uid(uid).map(|(n, _)| n))
    }

    /// Group name of `gid`, `None` if unknown (borg's `gid2group`).
    pub fn group(&self, gid: u32) -> Option<Vec<u8>> {
        cached(&self.groups, &gid, || gr_by_gid(gid).map(|(n, _)| n))
    }

    /// uid of user `name` (borg's `user2uid`).
    pub fn uid(&self, name: &[u8]) -> Option<u32> {
        cached(&self.uids, &name.to_vec(), || {
            pw_by_name(name).map(|(_, id)| id)
        })
    }

    /// gid of group `name` (borg's `group2gid`).
    pub fn gid(&self, name: &[u8]) -> Option<u32> {
        cached(&self.gids, &name.to_vec(), || {
            gr_by_name(name).map(|(_, id)| id)
        })
    }
}

impl IdResolver for IdNames {
    fn user_name(&self, uid: u32) -> Option<Vec<u8>> {
        self.user(uid)
    }
    fn group_name(&self, gid: u32) -> Option<Vec<u8>> {
        self.group(gid)
    }
    fn user_id(&self, name: &[u8]) -> Option<u32> {
        self.uid(name)
    }
    fn group_id(&self, name: &[u8]) -> Option<u32> {
        self.gid(name)
    }
}

/// Runs a reentrant NSS call with a growing buffer; `call` returns the errno-style result
/// and whether an entry was found.
fn with_buffer<T>(mut call: impl FnMut(&mut [c_char]) -> (i32, Option<T>)) -> Option<T> {
    let mut buf: Vec<c_char> = vec![0; 1024];
    loop {
        let (rc, found) = call(&mut buf);
        if rc == libc::ERANGE && buf.len() < (1 << 22) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return if rc == 0 { found } else { None };
    }
}

fn pw_by_uid(uid: u32) -> Option<(Vec<u8>, u32)> {
    with_buffer(|buf| {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: pointers are valid for the call; `buf` outlives the use of `pwd`'s fields.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut res) };
        let found = (!res.is_null() && !pwd.pw_name.is_null()).then(|| {
            // SAFETY: NSS filled `pw_name` with a NUL-terminated string inside `buf`.
            (
                unsafe { CStr::from_ptr(pwd.pw_name) }.to_bytes().to_vec(),
                pwd.pw_uid,
            )
        });
        (rc, found)
    })
}

fn pw_by_name(name: &[u8]) -> Option<(Vec<u8>, u32)> {
    let cname = CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: as in `pw_by_uid`.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as in `pw_by_uid`; `cname` is NUL-terminated.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut res,
            )
        };
        (rc, (!res.is_null()).then(|| (name.to_vec(), pwd.pw_uid)))
    })
}

fn gr_by_gid(gid: u32) -> Option<(Vec<u8>, u32)> {
    with_buffer(|buf| {
        // SAFETY: all-zero is a valid `group`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::group = std::ptr::null_mut();
        // SAFETY: pointers are valid for the call.
        let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut res) };
        let found = (!res.is_null() && !grp.gr_name.is_null()).then(|| {
            // SAFETY: NSS filled `gr_name` with a NUL-terminated string inside `buf`.
            (
                unsafe { CStr::from_ptr(grp.gr_name) }.to_bytes().to_vec(),
                grp.gr_gid,
            )
        });
        (rc, found)
    })
}

fn gr_by_name(name: &[u8]) -> Option<(Vec<u8>, u32)> {
    let cname = CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: all-zero is a valid `group`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut res: *mut libc::group = std::ptr::null_mut();
        // SAFETY: pointers are valid for the call; `cname` is NUL-terminated.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut res,
            )
        };
        (rc, (!res.is_null()).then(|| (name.to_vec(), grp.gr_gid)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_known() {
        let ids = IdNames::new();
        assert_eq!(ids.user(0).as_deref(), Some(&b"root"[..]));
        assert_eq!(ids.group(0).as_deref(), Some(&b"root"[..]));
        assert_eq!(ids.uid(b"root"), Some(0));
        assert_eq!(ids.gid(b"root"), Some(0));
        assert_eq!(ids.uid(b"no such user \x01"), None);
        assert_eq!(ids.user(0xfffe_fff0), None);
        // cached answers stay the same
        assert_eq!(ids.user(0).as_deref(), Some(&b"root"[..]));
    }
}
