//! File-system metadata equals what borg 1.2.4's and 1.4.5's own `MetadataCollector`
//! collects (path- and fd-based), byte for byte, with and without `--numeric-ids`:
//! owner names, times, xattrs (incl. empty values, symlinks, devices), POSIX ACLs (named
//! entries, ids without a name, masks that restrict entries, default ACLs) and inode flags.
//! Also: ACL xattr values built by `acl_text_to_xattr` give the same ACL as borg's
//! `acl_set` applied to the same item text.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run_py_json, Borg};
use proxborg::archive::fsmeta::{acl_text_to_xattr, read_meta, FsMeta, IdNames, MetaOptions};
use serde_json::{json, Map, Value};

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
        .success()
}

fn must(cmd: &str, args: &[&str]) {
    assert!(run(cmd, args), "{cmd} {args:?} failed");
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Removes append-only/immutable flags so the temporary directory can be deleted.
struct FlagCleanup(Vec<PathBuf>);

impl Drop for FlagCleanup {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = Command::new("chattr").args(["-a", "-i", p(f)]).status();
        }
    }
}

/// Our metadata in the shape of borg's attribute dict (bytes as hex).
fn as_item(m: &FsMeta, numeric: bool) -> Value {
    let mut o = Map::new();
    o.insert("mode".into(), json!(m.mode));
    o.insert("uid".into(), json!(m.uid));
    o.insert("gid".into(), json!(m.gid));
    let name = |n: &Option<Vec<u8>>| n.as_ref().map(hex::encode).map_or(Value::Null, Value::from);
    o.insert(
        "user".into(),
        if numeric { Value::Null } else { name(&m.user) },
    );
    o.insert(
        "group".into(),
        if numeric { Value::Null } else { name(&m.group) },
    );
    o.insert("mtime".into(), json!(m.mtime_ns));
    o.insert("atime".into(), json!(m.atime_ns));
    o.insert("ctime".into(), json!(m.ctime_ns));
    if let Some(f) = m.bsdflags {
        o.insert("bsdflags".into(), json!(f));
    }
    if !m.xattrs.is_empty() {
        let x: Map<String, Value> = m
            .xattrs
            .iter()
            .map(|(k, v)| {
                let v = if v.is_empty() {
                    Value::Null
                } else {
                    json!(hex::encode(v))
                };
                (hex::encode(k), v)
            })
            .collect();
        o.insert("xattrs".into(), Value::Object(x));
    }
    if let Some(a) = &m.acl_access {
        o.insert("acl_access".into(), json!(hex::encode(a)));
    }
    if let Some(a) = &m.acl_default {
        o.insert("acl_default".into(), json!(hex::encode(a)));
    }
    Value::Object(o)
}

fn getfacl(path: &Path, numeric: bool) -> String {
    let mut args = vec!["-c", "-p"];
    if numeric {
        args.push("-n");
    }
    args.push(p(path));
    let out = Command::new("getfacl").args(&args).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let v = format!("0x{}", hex::encode(value));
    must("setfattr", &["-n", name, "-v", &v, p(path)]);
}

#[test]
fn metadata_like_borg() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mk = |name: &str, data: &[u8]| {
        let f = d.join(name);
        std::fs::write(&f, data).unwrap();
        f
    };
    let mkdir = |name: &str| {
        let f = d.join(name);
        std::fs::create_dir(&f).unwrap();
        f
    };

    let plain = mk("plain", b"x");
    let f_acl = mk("f_acl", b"ab");
    must("setfacl", &["-m", "u:nobody:rw-", p(&f_acl)]);
    let f_mask = mk("f_mask", b"");
    must(
        "setfacl",
        &[
            "-m",
            "u:nobody:rwx,g::rwx,g:nogroup:rwx,u:54321:r-x,m::r--",
            p(&f_mask),
        ],
    );
    must("setfacl", &["-n", "-m", "m::r--", p(&f_mask)]);
    let f_noname = mk("f_noname", b"");
    must(
        "setfacl",
        &["-m", "u:54321:r--,g:54322:rw-,g:0:r--", p(&f_noname)],
    );
    let d_default = mkdir("d_default");
    must("setfacl", &["-d", "-m", "g:nogroup:r-x", p(&d_default)]);
    let d_both = mkdir("d_both");
    must("setfacl", &["-m", "u:nobody:rwx", p(&d_both)]);
    must("setfacl", &["-d", "-m", "u:54321:rw-,m::r--", p(&d_both)]);
    let d_access = mkdir("d_access");
    must("setfacl", &["-m", "g:nogroup:-w-", p(&d_access)]);
    let d_plain = mkdir("d_plain");
    let f_x = mk("f_xattr", b"data");
    must("setfattr", &["-n", "user.k", "-v", "val", p(&f_x)]);
    must("setfattr", &["-n", "user.empty", p(&f_x)]);
    set_xattr(&f_x, "user.bin", &[0, 1, 2, 255, 0]);
    must("setfattr", &["-n", "user.ü name", "-v", "x", p(&f_x)]);
    must("setfattr", &["-n", "trusted.t", "-v", "1", p(&f_x)]);
    must("setfacl", &["-m", "u:nobody:r--", p(&f_x)]);
    let link = d.join("link");
    std::os::unix::fs::symlink("f_xattr", &link).unwrap();
    must("setfattr", &["-h", "-n", "trusted.l", "-v", "L", p(&link)]);
    let fifo = d.join("fifo");
    must("mkfifo", &[p(&fifo)]);
    must("setfacl", &["-m", "u:nobody:rw-", p(&fifo)]);
    must("setfattr", &["-n", "trusted.f", "-v", "F", p(&fifo)]);
    let dev = d.join("dev");
    let have_dev = run("mknod", &[p(&dev), "c", "1", "3"]);
    if have_dev {
        must("setfattr", &["-n", "trusted.d", "-v", "D", p(&dev)]);
    }
    let owned = mk("owned", b"");
    std::os::unix::fs::chown(&owned, Some(54321), Some(65534)).unwrap();

    let mut cleanup = FlagCleanup(Vec::new());
    let f_flags = mk("f_flags", b"");
    let d_flags = mkdir("d_flags");
    let f_append = mk("f_append", b"");
    let have_flags = run("chattr", &["+d", "+A", p(&f_flags)]);
    if have_flags {
        must("chattr", &["+d", p(&d_flags)]);
        must("chattr", &["+a", p(&f_append)]);
        cleanup.0.push(f_append.clone());
    } else {
        eprintln!(
            "note: {} does not support inode flags; flags not exercised",
            d.display()
        );
    }

    let mut paths = vec![
        plain,
        f_acl,
        f_mask,
        f_noname,
        d_default,
        d_both,
        d_access,
        d_plain,
        f_x,
        link,
        fifo,
        owned,
        f_flags,
        d_flags,
        f_append,
        d.to_path_buf(),
    ];
    if have_dev {
        paths.push(dev);
    }

    // Ours, for both numeric_ids settings.
    let mut ours: BTreeMap<String, [FsMeta; 2]> = BTreeMap::new();
    for path in &paths {
        let get = |numeric_ids| {
            read_meta(
                path,
                &MetaOptions {
                    numeric_ids,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let m = [get(false), get(true)];
        assert!(m[0].warnings.is_empty(), "{:?}", m[0].warnings);
        ours.insert(p(path).to_string(), m);
    }
    if have_flags {
        assert_eq!(ours[p(&paths[12])][0].bsdflags, Some(1), "nodump");
        assert_eq!(ours[p(&paths[13])][0].bsdflags, Some(1), "nodump dir");
        assert_eq!(ours[p(&paths[14])][0].bsdflags, Some(4), "append");
    }
    let mask_text = String::from_utf8(ours[p(&paths[2])][0].acl_access.clone().unwrap()).unwrap();
    assert!(
        mask_text.contains("user:nobody:rwx\t:65534"),
        "{mask_text:?}"
    );

    let input = json!({"paths": paths.iter().map(|x| p(x)).collect::<Vec<_>>()});
    let input = serde_json::to_vec(&input).unwrap();
    for borg in Borg::ALL {
        let theirs = run_py_json(borg, "fsmeta.py", &["collect"], &input);
        for (path, m) in &ours {
            for (n, key) in ["0", "1"].iter().enumerate() {
                let mine = as_item(&m[n], n == 1);
                let t = &theirs[path.as_str()][key];
                assert_eq!(
                    mine,
                    t["path"],
                    "{}: {path} numeric={n} (by path)",
                    borg.name()
                );
                if !t["fd"].is_null() {
                    assert_eq!(mine, t["fd"], "{}: {path} numeric={n} (by fd)", borg.name());
                }
            }
        }
        eprintln!("{}: metadata of {} objects agrees", borg.name(), ours.len());
    }

    // Text → xattr: our xattr values give the same ACLs as borg's acl_set.
    let ids = IdNames::new();
    let mut jobs = Vec::new();
    let mut pairs = Vec::new();
    for (i, (path, m)) in ours.iter().enumerate() {
        for (n, meta) in m.iter().enumerate() {
            if meta.acl_access.is_none() {
                continue;
            }
            let is_dir = meta.acl_default.is_some();
            let numeric = n == 1;
            let make = |tag: &str| {
                let t = d.join(format!("set_{tag}_{i}_{n}"));
                if is_dir {
                    std::fs::create_dir(&t).unwrap();
                } else {
                    std::fs::write(&t, b"").unwrap();
                }
                t
            };
            let (theirs_t, ours_t) = (make("borg"), make("ours"));
            for (name, text) in [
                ("system.posix_acl_access", &meta.acl_access),
                ("system.posix_acl_default", &meta.acl_default),
            ] {
                let Some(text) = text else { continue };
                let x = acl_text_to_xattr(text, numeric, &ids)
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                if let Some(x) = x {
                    set_xattr(&ours_t, name, &x);
                }
            }
            jobs.push(json!({
                "target": p(&theirs_t), "numeric": numeric, "mode": meta.mode,
                "acl_access": meta.acl_access.as_ref().map(hex::encode),
                "acl_default": meta.acl_default.as_ref().map(hex::encode),
            }));
            pairs.push((path.clone(), theirs_t, ours_t));
        }
    }
    assert!(pairs.len() >= 16, "too few ACL cases: {}", pairs.len());
    for borg in Borg::ALL {
        // borg applies its ACLs to fresh copies each round.
        let input = serde_json::to_vec(&jobs).unwrap();
        run_py_json(borg, "fsmeta.py", &["acl_set"], &input);
        for (src, theirs_t, ours_t) in &pairs {
            for numeric in [false, true] {
                assert_eq!(
                    getfacl(ours_t, numeric),
                    getfacl(theirs_t, numeric),
                    "{}: ACL restored from {src}",
                    borg.name()
                );
            }
            assert_eq!(
                std::fs::metadata(ours_t).unwrap().permissions(),
                std::fs::metadata(theirs_t).unwrap().permissions()
            );
        }
        eprintln!("{}: {} restored ACLs agree", borg.name(), pairs.len());
    }
    // Sanity: the file names survive as bytes.
    assert!(paths.iter().all(|x| !x.as_os_str().as_bytes().is_empty()));
}
