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
        &["--sort-by=path", "--iec"],
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

/// `list`'s archive options (`-a`, `-P`, `--sort-by`, `--first`, `--last`,
/// `--consider-checkpoints`) and content options (paths, `--pattern`, `-e`) select what
/// borg 1.4's do; part files that borg's checkpoints leave in an archive stay hidden;
/// `info` on selected archives prints what borg's prints.
#[test]
fn list_filters_match_borg() {
    let env = TestEnv::new();
    make_tree(&env.path().join("src"));
    let repo = env.path().join("repo").display().to_string();
    ok(env.borg(Borg::V14).args(["init", "-e", "none", &repo]));
    for name in ["web-2", "db-1", "web-1", "web-3.checkpoint", "db-2"] {
        ok(env.borg(Borg::V14).current_dir(env.path()).args([
            "create",
            &format!("{repo}::{name}"),
            "src/hello.txt",
        ]));
    }
    // a stream slower than the checkpoint interval: borg writes part items into "parts"
    let script = "for i in 1 2 3; do head -c 70000 /dev/urandom; sleep 1.2; done";
    let mut c = env.borg(Borg::V14);
    c.args([
        "create",
        "--checkpoint-interval",
        "1",
        "--chunker-params",
        "fixed,65536",
        &format!("{repo}::parts"),
        "-",
    ]);
    let mut feed = std::process::Command::new("sh")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin(feed.stdout.take().unwrap());
    ok(&mut c);
    assert!(feed.wait().unwrap().success());
    ok(env.borg(Borg::V14).current_dir(env.path()).args([
        "create",
        &format!("{repo}::tree"),
        "src",
    ]));

    let both = |args: &[&str]| {
        let (rb, ob, eb) = run(env.borg(Borg::V14).arg("list").args(args));
        let (ro, oo, eo) = run(env.ours().arg("list").args(args));
        assert_eq!((rb, ro), (0, 0), "list {args:?}:\nborg: {eb}\nours: {eo}");
        assert_eq!(ob, oo, "list {args:?}");
        ob
    };
    let all = both(&["--short", &repo]);
    assert!(!all.contains("checkpoint"), "{all}");
    assert!(both(&["--short", "--consider-checkpoints", &repo]).contains("web-3.checkpoint"));
    both(&["--short", "-a", "web-*", &repo]);
    both(&["--short", "-P", "db", "--last", "1", &repo]);
    both(&["--short", "--sort-by", "name", "--first", "3", &repo]);
    both(&["--short", "--sort-by", "id,timestamp", &repo]);
    let parts = ok(env.borg(Borg::V14).args([
        "list",
        "--short",
        "--consider-part-files",
        &format!("{repo}::parts"),
    ]));
    assert!(
        parts.contains("stdin.borg_part_1"),
        "borg wrote no part file:\n{parts}"
    );
    assert_eq!(
        both(&["--short", &format!("{repo}::parts")]).trim(),
        "stdin"
    );
    let tree = format!("{repo}::tree");
    both(&["--short", &tree, "src/sub"]);
    both(&[
        "--short",
        "-e",
        "src/sub/*",
        "--pattern",
        "+src/sub/hl2",
        &tree,
    ]);
    both(&[
        "--short",
        "--pattern",
        "+src/sub/hl2",
        "-e",
        "src/sub/*",
        &tree,
    ]);
    // info: the same selection (checkpoints included), the same text and sizes
    let info = |args: &[&str]| {
        let (rb, ob, eb) = run(env.borg(Borg::V14).arg("info").args(args));
        let (ro, oo, eo) = run(env.ours().arg("info").args(args));
        assert_eq!((rb, ro), (0, 0), "info {args:?}:\nborg: {eb}\nours: {eo}");
        assert_eq!(ob, oo, "info {args:?}");
    };
    info(&["-a", "web-*", &repo]);
    info(&["--sort-by", "name", "--last", "2", &repo]);
    info(&["--iec", "-a", "web-*", &repo]);
    info(&[&format!("{repo}::parts")]);
    let (rc, _, err) = run(env.ours().args(["list", "--sort-by", "size", &repo]));
    assert_eq!(rc, 2);
    assert!(err.contains("size"), "{err}");
}
