//! A generated source tree holding every kind of file-system object borg archives, and
//! a strict comparison of two trees (content, type, mode, owner, ns mtime, symlinks,
//! hardlink groups, xattrs incl. POSIX ACLs, devices, Linux flags).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(cmd: &str, args: &[&OsStr]) {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(st.success(), "{cmd} {args:?} failed");
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(sec, nsec);
    utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink).expect("utimensat");
}

/// Builds the tree under `root` (which must not exist yet). Needs root (devices, chown).
pub fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("hello.txt"), b"hello world\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("big.bin"), super::prng_bytes(7, 3 << 20)).unwrap();
    let mut text = Vec::new();
    for i in 0..40_000 {
        text.extend_from_slice(format!("line {i} of a compressible text file\n").as_bytes());
    }
    std::fs::write(root.join("sub/text.txt"), &text).unwrap();
    std::fs::write(root.join("zeros.bin"), vec![0u8; 2 << 20]).unwrap();
    {
        let f = std::fs::File::create(root.join("sparse.img")).unwrap();
        f.set_len(6 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&super::prng_bytes(9, 100_000), 1 << 20)
            .unwrap();
    }
    std::fs::write(root.join("sub/deeper/file"), b"deep").unwrap();
    std::os::unix::fs::symlink("../hello.txt", root.join("sub/link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::fs::write(root.join("hl1"), b"hardlinked content").unwrap();
    std::fs::hard_link(root.join("hl1"), root.join("sub/hl2")).unwrap();
    std::fs::hard_link(root.join("hl1"), root.join("sub/deeper/hl3")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    sh(
        "mknod",
        &[
            root.join("null").as_os_str(),
            "c".as_ref(),
            "1".as_ref(),
            "3".as_ref(),
        ],
    );
    sh(
        "mknod",
        &[
            root.join("blk").as_os_str(),
            "b".as_ref(),
            "7".as_ref(),
            "200".as_ref(),
        ],
    );
    let odd = root.join(OsStr::from_bytes(b"non-utf8-\xff\xfe-name"));
    std::fs::write(&odd, b"odd name").unwrap();
    std::fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir(root.join("sticky")).unwrap();
    std::fs::set_permissions(root.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(root.join("owned"), b"someone else's").unwrap();
    nix::unistd::chown(&root.join("owned"), Some(1234.into()), Some(5678.into())).unwrap();
    std::fs::write(root.join("xattrs"), b"x").unwrap();
    xattr::set(root.join("xattrs"), "user.k", b"val").unwrap();
    xattr::set(root.join("xattrs"), "user.empty", b"").unwrap();
    xattr::set(root.join("xattrs"), "security.test", b"sec").unwrap();
    std::fs::write(root.join("acl"), b"acl").unwrap();
    sh(
        "setfacl",
        &[
            "-m".as_ref(),
            "u:nobody:rw-,g:nogroup:r--,u:4321:r--".as_ref(),
            root.join("acl").as_os_str(),
        ],
    );
    std::fs::create_dir(root.join("defacl")).unwrap();
    sh(
        "setfacl",
        &[
            "-d".as_ref(),
            "-m".as_ref(),
            "g:nogroup:r-x".as_ref(),
            root.join("defacl").as_os_str(),
        ],
    );
    std::fs::write(root.join("nodump"), b"flagged").unwrap();
    sh("chattr", &["+d".as_ref(), root.join("nodump").as_os_str()]);
    // ns timestamps, including before 1970 and with odd nanoseconds (files first, dirs last)
    set_mtime(&root.join("hello.txt"), 1_704_164_645, 123_456_789);
    set_mtime(&root.join("empty"), 86_400, 1);
    set_mtime(&root.join("sub/link"), 1_600_000_000, 999_999_999);
    set_mtime(&root.join("sub/deeper"), 1_500_000_000, 42);
}

/// What we compare about one path.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: u32,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub content: Option<Vec<u8>>,
    pub link: Option<Vec<u8>>,
    pub rdev: Option<u64>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub flags: Option<String>,
    pub nlink_group: usize,
}

fn lsattr(p: &Path) -> Option<String> {
    let out = Command::new("lsattr").arg("-d").arg(p).output().ok()?;
    out.status
        .success()
        // only the flags borg archives (nodump, immutable, append); ext4 sets others itself
        .then(|| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| "dia".contains(*c))
                .collect()
        })
}

/// Snapshot of a tree: relative path → node.
pub fn scan(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<u64, usize> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
        let is_link = ft.is_symlink();
        let mut xattrs = BTreeMap::new();
        if !is_link {
            for n in xattr::list(&p).unwrap() {
                let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                xattrs.insert(n.as_bytes().to_vec(), v);
            }
        }
        let group = if m.nlink() > 1 && !ft.is_dir() {
            let n = groups.len();
            *groups.entry(m.ino()).or_insert(n + 1)
        } else {
            0
        };
        let node = Node {
            kind: m.mode() & 0o170000,
            perm: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            content: ft.is_file().then(|| std::fs::read(&p).unwrap()),
            link: is_link.then(|| {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            rdev: (ft.is_file() || ft.is_dir() || is_link)
                .then_some(0)
                .or(Some(m.rdev())),
            xattrs,
            flags: if ft.is_file() { lsattr(&p) } else { None },
            nlink_group: group,
        };
        out.insert(rel.as_os_str().as_bytes().to_vec(), node);
    }
    out
}

/// Differences between two scans (empty = identical). Hardlink groups are compared by
/// partition, not by numbering.
pub fn diff(a: &BTreeMap<Vec<u8>, Node>, b: &BTreeMap<Vec<u8>, Node>) -> Vec<String> {
    let mut d = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (p, na) in a {
        match b.get(p) {
            None => d.push(format!("missing: {}", show(p))),
            Some(nb) => {
                let strip = |n: &Node| Node {
                    nlink_group: 0,
                    content: None,
                    xattrs: n.xattrs.clone(),
                    flags: n.flags.clone(),
                    link: n.link.clone(),
                    ..*n
                };
                if strip(na) != strip(nb) {
                    d.push(format!("{}: {:?} != {:?}", show(p), strip(na), strip(nb)));
                }
                if na.content != nb.content {
                    d.push(format!("{}: content differs", show(p)));
                }
            }
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            d.push(format!("extra: {}", show(p)));
        }
    }
    let groups = |s: &BTreeMap<Vec<u8>, Node>| {
        let mut g: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        for (p, n) in s {
            if n.nlink_group > 0 {
                g.entry(n.nlink_group).or_default().push(p.clone());
            }
        }
        let mut v: Vec<Vec<Vec<u8>>> = g.into_values().collect();
        v.sort();
        v
    };
    if groups(a) != groups(b) {
        d.push(format!(
            "hardlink groups differ: {:?} vs {:?}",
            groups(a),
            groups(b)
        ));
    }
    d
}
