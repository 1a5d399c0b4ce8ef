//! `diff` and `list --format` against upstream borg 1.4.5 on the same repository: the
//! diff of two archives (content, mode, owner, added/removed files, dirs and links,
//! changed links, times) and list's item keys (incl. content hashes) print the same.

mod common;

use common::tree::make_tree;
use common::{ok, run, Borg, TestEnv};

#[test]
fn diff_and_list_match_borg() {
    let env = TestEnv::new();
    let src = env.path().join("src");
    make_tree(&src);
    let repo = env.path().join("repo").display().to_string();
    ok(env
        .borg(Borg::V14)
        .args(["init", "-e", "repokey-blake2", &repo]));
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::one"), "src"]));
    // changes of every kind diff reports
    std::fs::write(src.join("hello.txt"), b"hello changed world\n").unwrap();
    std::fs::set_permissions(
        src.join("setuid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    nix::unistd::chown(&src.join("empty"), Some(4242.into()), None).unwrap();
    std::fs::remove_file(src.join("sub/deeper/file")).unwrap();
    std::fs::write(src.join("added.txt"), b"new file").unwrap();
    std::fs::create_dir(src.join("newdir")).unwrap();
    std::fs::remove_file(src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("elsewhere", src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("x", src.join("newlink")).unwrap();
    std::fs::remove_file(src.join("fifo")).unwrap();
    ok(env.borg(Borg::V14).current_dir(env.path()).args([
        "create",
        &format!("{repo}::two"),
        "src",
    ]));

    for extra in [
        &["--sort-by=path"][..],
        &["--sort-by=path", "--content-only"],
        &["--sort-by=path", "--json-lines"],
        &["--sort-by=>size_diff,path"],
        &["--sort"],
    ] {
        let mut a = vec!["diff"];
        a.extend_from_slice(extra);
        let one = format!("{repo}::one");
        a.extend([one.as_str(), "two"]);
        let (rb, ob, eb) = run(env.borg(Borg::V14).args(&a));
        let (ro, oo, eo) = run(env.ours().args(&a));
        assert_eq!(
            (rb, eb.trim()),
            (ro, eo.trim()),
            "diff {extra:?} status/stderr"
        );
        assert!(ob.lines().count() >= 7, "{ob}");
        if extra.contains(&"--json-lines") {
            let parse = |s: &str| {
                s.lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(parse(&ob), parse(&oo), "diff {extra:?}");
        } else {
            assert_eq!(ob, oo, "diff {extra:?}");
        }
    }
    // a path filter
    let (_, ob, _) = run(env.borg(Borg::V14).args([
        "diff",
        "--sort-by=path",
        &format!("{repo}::one"),
        "two",
        "src/sub",
    ]));
    let (_, oo, _) = run(env.ours().args([
        "diff",
        "--sort-by=path",
        &format!("{repo}::one"),
        "two",
        "src/sub",
    ]));
    assert_eq!(ob, oo);

    let fmt = "{mode} {type} {user}:{group} {uid}:{gid} {size} {num_chunks} {mtime} {isomtime} {isoctime} {path}{extra} [{source}] {flags} {health} {sha256} {sha512} {blake2b} {xxh64} {archivename}{NL}";
    for arch in ["one", "two"] {
        let a = format!("{repo}::{arch}");
        let b = ok(env.borg(Borg::V14).args(["list", "--format", fmt, &a]));
        let o = ok(env.ours().args(["list", "--format", fmt, &a]));
        for (lb, lo) in b.lines().zip(o.lines()) {
            assert_eq!(lb, lo, "list --format of {arch}");
        }
        assert_eq!(b.lines().count(), o.lines().count());
    }
}
