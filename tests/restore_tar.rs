//! `export-tar`: GNU tar restores our PAX stream with POSIX ACLs and xattrs (including
//! `security.capability`) identical to the source, where borg's export of the same
//! archive loses them; `--tar-format GNU` is byte-identical to borg 1.x's export.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::tree::{diff, make_tree, scan, Node};
use common::{ok, Borg, TestEnv};

/// `cap_net_raw+ep` as setcap stores it (VFS_CAP_REVISION_2).
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn setup() -> (TestEnv, String) {
    let env = TestEnv::new();
    let src = env.path().join("src");
    make_tree(&src);
    std::fs::write(src.join("ping"), b"\x7fELF pretend").unwrap();
    xattr::set(src.join("ping"), "security.capability", &CAP_NET_RAW).unwrap();
    let long = src.join("a-directory-name-that-is-quite-long-to-need-more-than-one-hundred-bytes");
    std::fs::create_dir(&long).unwrap();
    std::fs::write(
        long.join("and-a-file-name-that-pushes-the-path-well-beyond-the-ustar-limit.txt"),
        b"long",
    )
    .unwrap();
    let repo = env.init_repo("repokey");
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::a"), "src"]));
    (env, format!("{repo}::a"))
}

/// Pipes `producer`'s stdout into `tar --acls --xattrs -xpf -` run in `dest`.
fn untar(mut producer: Command, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let mut p = producer.stdout(Stdio::piped()).spawn().unwrap();
    let st = Command::new("tar")
        .args([
            "--acls",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-xpf",
            "-",
        ])
        .current_dir(dest)
        .stdin(p.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(p.wait().unwrap().success(), "export-tar failed");
    assert!(st.success(), "tar failed");
}

/// Scans a tree, dropping what tar cannot carry (Linux inode flags).
fn scan_tar(p: &Path) -> std::collections::BTreeMap<Vec<u8>, Node> {
    let mut s = scan(p);
    for n in s.values_mut() {
        n.flags = None;
    }
    s
}

#[test]
fn pax_export_restores_acls_and_xattrs_borg_loses_them() {
    let (env, arch) = setup();
    let src = env.path().join("src");
    let ours = env.path().join("ours");
    let mut c = env.ours();
    c.args(["export-tar", &arch, "-"]);
    untar(c, &ours);
    let d = diff(&scan_tar(&src), &scan_tar(&ours.join("src")));
    assert!(
        d.is_empty(),
        "GNU tar restore of our PAX export differs from the source:\n{}",
        d.join("\n")
    );

    // the same archive through borg 1.4.5's export-tar: ACLs and xattrs are gone
    let theirs = env.path().join("theirs");
    let mut c = env.borg(Borg::V14);
    c.args(["export-tar", &arch, "-"]);
    untar(c, &theirs);
    let d = diff(&scan_tar(&src), &scan_tar(&theirs.join("src")));
    let lost = |path: &str, attr: &str| {
        d.iter()
            .any(|l| l.starts_with(&format!("{path}:")) && !l.contains(attr))
    };
    assert!(
        lost("acl", "system.posix_acl_access"),
        "borg export kept the ACL? {d:#?}"
    );
    assert!(
        lost("defacl", "system.posix_acl_default"),
        "borg export kept the default ACL? {d:#?}"
    );
    assert!(
        lost("ping", "security.capability"),
        "borg export kept the capability? {d:#?}"
    );
    assert!(
        lost("xattrs", "user.k"),
        "borg export kept user xattrs? {d:#?}"
    );
    let ours_tree = scan(&ours.join("src"));
    assert!(ours_tree[&b"ping".to_vec()]
        .xattrs
        .contains_key(b"security.capability".as_slice()));
}

#[test]
fn filter_strip_components_and_paths() {
    let (env, arch) = setup();
    let out = env.path().join("part.tar.gz");
    ok(env.ours().args([
        "export-tar",
        "--strip-components",
        "1",
        &arch,
        out.to_str().unwrap(),
        "src/sub",
        "src/acl",
    ]));
    let head = std::fs::read(&out).unwrap();
    assert_eq!(&head[..2], b"\x1f\x8b", "auto filter did not gzip");
    let dest = env.path().join("part");
    std::fs::create_dir_all(&dest).unwrap();
    ok(Command::new("tar")
        .args(["--acls", "--xattrs", "-xpzf"])
        .arg(&out)
        .current_dir(&dest));
    let got = scan(&dest);
    let want = scan(&env.path().join("src"));
    // sub/hl2 carries the content of hl1 (not selected); sub/deeper/hl3 links to it
    for p in ["sub/hl2", "sub/deeper/hl3", "sub/text.txt", "acl"] {
        let g = &got[p.as_bytes()];
        let w = &want[p.as_bytes()];
        assert_eq!(g.content, w.content, "{p}");
        assert_eq!(g.xattrs, w.xattrs, "{p}");
    }
    assert!(
        got[&b"sub/hl2".to_vec()].nlink_group > 0
            && got[&b"sub/hl2".to_vec()].nlink_group
                == got[&b"sub/deeper/hl3".to_vec()].nlink_group
    );
    assert!(!got.contains_key(b"hl1".as_slice()));
}

#[test]
fn gnu_format_is_byte_identical_to_borg() {
    let (env, arch) = setup();
    for v in Borg::ALL {
        let b = Command::output(env.borg(v).args(["export-tar", &arch, "-"])).unwrap();
        let o = Command::output(
            env.ours()
                .args(["export-tar", "--tar-format", "GNU", &arch, "-"]),
        )
        .unwrap();
        assert!(b.status.success() && o.status.success());
        if b.stdout != o.stdout {
            let at = b
                .stdout
                .iter()
                .zip(&o.stdout)
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "{}: GNU export differs at byte {at} (block {}) of {}/{}",
                v.name(),
                at / 512,
                b.stdout.len(),
                o.stdout.len()
            );
        }
    }
}
