//! `init` + `create` on local repositories, proven with upstream borg 1.2 and 1.4.5:
//! check --verify-data, list, extract (full metadata compare), borg create into our repo,
//! and our create into borg's repo — for every encryption mode.

mod common;

use common::tree::{diff, make_tree, scan};
use common::{ok, run, Borg, TestEnv};

const MODES: [&str; 7] = [
    "none",
    "authenticated",
    "authenticated-blake2",
    "repokey",
    "keyfile",
    "repokey-blake2",
    "keyfile-blake2",
];

fn extract_and_compare(env: &TestEnv, v: Borg, repo: &str, archive: &str, src: &std::path::Path) {
    let dest = env.path().join(format!("extract-{}-{archive}", v.name()));
    std::fs::create_dir_all(&dest).unwrap();
    ok(env
        .borg(v)
        .current_dir(&dest)
        .args(["extract", &format!("{repo}::{archive}")]));
    let d = diff(&scan(src), &scan(&dest.join("src")));
    assert!(
        d.is_empty(),
        "{} extract of {archive} differs:\n{}",
        v.name(),
        d.join("\n")
    );
}

fn borg_check_clean(env: &TestEnv, v: Borg, repo: &str) {
    let (rc, out, err) = run(env.borg(v).args(["check", "--verify-data", repo]));
    assert_eq!(rc, 0, "{} check failed: {out}{err}", v.name());
    assert!(err.trim().is_empty(), "{} check warned: {err}", v.name());
}

fn our_repo_roundtrip(mode: &str) {
    let env = TestEnv::new();
    let src = env.path().join("src");
    make_tree(&src);
    let repo = env.init_repo(mode);
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::first"), "src"]));
    for v in Borg::ALL {
        borg_check_clean(&env, v, &repo);
        let list = ok(env.borg(v).args(["list", "--short", &repo]));
        assert!(
            list.lines().any(|l| l == "first"),
            "{} list: {list}",
            v.name()
        );
        extract_and_compare(&env, v, &repo, "first", &src);
    }
    // borg appends to our repository, then we append after borg
    ok(env.borg(Borg::V14).current_dir(env.path()).args([
        "create",
        &format!("{repo}::by-borg14"),
        "src",
    ]));
    ok(env.borg(Borg::V12).current_dir(env.path()).args([
        "create",
        &format!("{repo}::by-borg12"),
        "src",
    ]));
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::second"), "src"]));
    for v in Borg::ALL {
        borg_check_clean(&env, v, &repo);
    }
    extract_and_compare(&env, Borg::V14, &repo, "second", &src);
    let list = ok(env.ours().args(["list", "--short", &repo]));
    assert_eq!(list.lines().count(), 4, "{list}");
}

macro_rules! per_mode {
    ($($name:ident => $mode:expr),* $(,)?) => {$(
        #[test]
        fn $name() {
            our_repo_roundtrip($mode);
        }
    )*};
}

per_mode! {
    roundtrip_none => MODES[0],
    roundtrip_authenticated => MODES[1],
    roundtrip_authenticated_blake2 => MODES[2],
    roundtrip_repokey => MODES[3],
    roundtrip_keyfile => MODES[4],
    roundtrip_repokey_blake2 => MODES[5],
    roundtrip_keyfile_blake2 => MODES[6],
}

/// A repository made by borg: our create appends and dedups against borg's chunks.
#[test]
fn append_to_borg_repo_dedups() {
    for (v, mode) in [(Borg::V14, "repokey-blake2"), (Borg::V12, "keyfile")] {
        let env = TestEnv::new();
        let src = env.path().join("src");
        make_tree(&src);
        let repo = env.path().join("repo").display().to_string();
        ok(env.borg(v).args(["init", "-e", mode, &repo]));
        ok(env
            .borg(v)
            .current_dir(env.path())
            .args(["create", &format!("{repo}::borg"), "src"]));
        let out = ok(env.ours().current_dir(env.path()).args([
            "create",
            "--json",
            &format!("{repo}::ours"),
            "src",
        ]));
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let dedup = j["archive"]["stats"]["deduplicated_size"].as_u64().unwrap();
        // only metadata may be new: item chunks and the archive object
        assert!(
            dedup < 20_000,
            "{}: {dedup} bytes new after borg stored the same tree",
            v.name()
        );
        for w in Borg::ALL {
            borg_check_clean(&env, w, &repo);
        }
        extract_and_compare(&env, Borg::V14, &repo, "ours", &src);
    }
}

/// Second run on an unchanged tree reads no file contents (files cache).
#[test]
fn unchanged_rerun_uses_files_cache() {
    let env = TestEnv::new();
    let src = env.path().join("src");
    make_tree(&src);
    let repo = env.init_repo("repokey-blake2");
    // the files cache does not trust files modified in the same second as the newest one
    std::thread::sleep(std::time::Duration::from_millis(1500));
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::a"), "src"]));
    let out = ok(env.ours().current_dir(env.path()).args([
        "create",
        "--list",
        &format!("{repo}::b"),
        "src",
    ]));
    let _ = out;
    let (_, _, err) = run(env.ours().current_dir(env.path()).args([
        "create",
        "--list",
        "--filter",
        "AM",
        &format!("{repo}::c"),
        "src",
    ]));
    let changed: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("A ") || l.starts_with("M "))
        .collect();
    assert!(
        changed.is_empty(),
        "files re-read on unchanged tree: {changed:?}"
    );
    borg_check_clean(&env, Borg::V14, &repo);
}

/// `create`'s pattern options select what borg 1.4's do: applied in command-line order, a
/// `P` line of a patterns file setting the style of the lines after it, `R` lines adding
/// paths to back up.
#[test]
fn pattern_options_select_like_borg() {
    let env = TestEnv::new();
    make_tree(&env.path().join("src"));
    let repo = env.init_repo("none");
    let pf = env.path().join("patterns");
    std::fs::write(&pf, "R src/sub\nP fm\n+ src/sub/hl2\n- src/sub/*\n").unwrap();
    let pf = pf.display().to_string();
    // (options, paths)
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--patterns-from", &pf, "-e", "src/sub/hl2"],
            &["src/hello.txt"],
        ),
        (
            &["-e", "src/sub/hl2", "--patterns-from", &pf],
            &["src/hello.txt"],
        ),
        (
            &[
                "--pattern=-src/sub/deeper",
                "--pattern=Rsrc/sub",
                "-e",
                "*/link",
            ],
            &[],
        ),
    ];
    for (i, (args, paths)) in cases.iter().enumerate() {
        let list = |who: &str| {
            let (_, out, err) =
                run(env
                    .borg(Borg::V14)
                    .args(["list", "--short", &format!("{repo}::{who}{i}")]));
            assert!(!out.is_empty(), "{who}{i}: {err}");
            out
        };
        ok(env
            .borg(Borg::V14)
            .current_dir(env.path())
            .arg("create")
            .args(*args)
            .arg(format!("{repo}::borg{i}"))
            .args(*paths));
        ok(env
            .ours()
            .current_dir(env.path())
            .arg("create")
            .args(*args)
            .arg(format!("{repo}::ours{i}"))
            .args(*paths));
        assert_eq!(list("borg"), list("ours"), "create {args:?} {paths:?}");
    }
}

/// Small chunks (borg 1.0's default parameters), many per read block: their BLAKE2b ids
/// and MACs are computed side by side, repeats within one group included. borg verifies
/// every MAC and id, extracts the same bytes, and finds every chunk already stored when
/// it backs up the same data with the same parameters.
#[test]
fn small_chunks_hashed_side_by_side_match_borg() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey-blake2");
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let block = common::prng_bytes(3, 96 << 10);
    let mut data = common::prng_bytes(4, 3 << 20);
    for _ in 0..12 {
        data.extend_from_slice(&block);
    }
    let text: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("line {i} of a compressible text {}\n", i % 97).into_bytes())
        .collect();
    data.extend_from_slice(&text);
    data.extend_from_slice(&common::prng_bytes(5, 1 << 20));
    common::write_file(&src, "mixed.bin", &data);
    let params = ["-C", "lz4", "--chunker-params", "10,23,16,4095"];
    stored_as_borg_stores(&env, &repo, &src, &params);
}

/// New chunks are encoded before their dedup lookup once a run of them has come in, with
/// their ids hashed beside their MACs; a chunk then found stored already has its envelope
/// dropped. borg 1.2 and 1.4 verify every id and MAC of chunks stored that way (payloads
/// longer and shorter than the chunk: random and text), extract the same bytes, and find
/// every chunk already stored when they back up the same data.
#[test]
fn chunks_hashed_beside_their_macs_match_borg() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey-blake2");
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let text: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("line {i} of a compressible text {}\n", i % 89).into_bytes())
        .collect();
    // one input, so no other input's chunks break the run of new ones
    let random = common::prng_bytes(6, 16 << 20);
    let mut data = random.clone();
    data.extend_from_slice(&text);
    // the chunker falls back into step within this copy: its later chunks are repeats
    data.extend_from_slice(&random[..8 << 20]);
    data.extend_from_slice(&common::prng_bytes(7, 6 << 20));
    common::write_file(&src, "a.bin", &data);
    // chunks of 0.5-2 MiB: one or two to a group, lanes to spare beside the ids
    let params = ["-C", "lz4", "--chunker-params", "19,21,20,4095"];
    stored_as_borg_stores(&env, &repo, &src, &params);
}

/// Files up to 4 MiB are read whole in groups and their chunks stored together, each file
/// still cut as an input of its own: tiny, empty and all-zero files, files of one and of
/// several chunks, random and text, exactly 4 MiB (read whole) and one byte more
/// (streamed). borg verifies every id and MAC, extracts the same bytes, and finds every
/// chunk already stored when it backs up the same files with the same parameters: with
/// borg's default chunker and with one that cuts each medium file into many chunks.
#[test]
fn files_read_whole_in_groups_match_borg() {
    let env = TestEnv::new();
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let text = |seed: usize, len: usize| -> Vec<u8> {
        let mut t = Vec::with_capacity(len + 64);
        for i in 0.. {
            if t.len() >= len {
                break;
            }
            t.extend_from_slice(
                format!("line {i} of text {seed}: {}\n", i * seed % 101).as_bytes(),
            );
        }
        t.truncate(len);
        t
    };
    for i in 0..40u64 {
        common::write_file(
            &src,
            &format!("tiny{i:02}"),
            &common::prng_bytes(i, (i * 73) as usize),
        );
    }
    let sizes = [300_000, 700_000, 1 << 20, 2_500_000, 3_900_000];
    for (i, &n) in sizes.iter().enumerate() {
        common::write_file(
            &src,
            &format!("random{i}"),
            &common::prng_bytes(100 + i as u64, n),
        );
        common::write_file(&src, &format!("text{i}"), &text(i + 1, n));
    }
    common::write_file(&src, "zeros", &vec![0; 1 << 20]);
    common::write_file(&src, "whole-4m", &common::prng_bytes(200, 4 << 20));
    common::write_file(
        &src,
        "streamed-4m1",
        &common::prng_bytes(201, (4 << 20) + 1),
    );
    for params in ["19,23,21,4095", "16,20,17,4095"] {
        let repo = env
            .path()
            .join(format!("repo-{params}"))
            .display()
            .to_string();
        ok(env.ours().args(["init", "-e", "repokey-blake2", &repo]));
        let args = ["-C", "lz4", "--chunker-params", params];
        stored_as_borg_stores(&env, &repo, &src, &args);
    }
}

/// Backs up `src` (a directory of the test env) with `create_args`, checks the repository
/// with every borg (ids and MACs), extracts and compares, and has borg 1.4 back up the same
/// data with the same arguments: only metadata (item chunks, the archive object) may be new.
fn stored_as_borg_stores(env: &TestEnv, repo: &str, src: &std::path::Path, create_args: &[&str]) {
    let name = src.file_name().unwrap();
    ok(env
        .ours()
        .current_dir(env.path())
        .arg("create")
        .args(create_args)
        .arg(format!("{repo}::ours"))
        .arg(name));
    for v in Borg::ALL {
        borg_check_clean(env, v, repo);
    }
    extract_and_compare(env, Borg::V14, repo, "ours", src);
    let json = ok(env
        .borg(Borg::V14)
        .current_dir(env.path())
        .args(["create", "--json"])
        .args(create_args)
        .arg(format!("{repo}::borg"))
        .arg(name));
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    let dedup = j["archive"]["stats"]["deduplicated_size"].as_u64().unwrap();
    assert!(
        dedup < 20_000,
        "{dedup} bytes new after we stored the same data"
    );
}

/// Items enter the archive in borg's traversal order, whichever worker read them: small
/// files handed to workers in groups, large files alone, directories, symlinks and
/// hardlinks in between come out as borg 1.4 lists the same tree backed up by itself.
#[test]
fn items_in_borg_order() {
    let env = TestEnv::new();
    let src = env.path().join("src");
    for d in 0..3 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for i in 0..70 {
            // more files than a group holds, some read whole in their group, and one
            // larger than a group's files, streamed alone between groups
            let len = match i {
                50 => 5 << 20,
                i if i % 23 == 5 => 700_000,
                i => 100 + i * 37,
            };
            let data: Vec<u8> = (0..len).map(|j| (j * 31 + i + d) as u8).collect();
            std::fs::write(dir.join(format!("f{i:02}")), data).unwrap();
            if i % 17 == 3 {
                std::fs::write(dir.join("sub").join(format!("s{i}")), b"x").unwrap();
                std::os::unix::fs::symlink(format!("f{i:02}"), dir.join(format!("l{i}"))).unwrap();
            }
        }
        std::fs::hard_link(dir.join("f10"), dir.join("sub/h10")).unwrap();
    }
    let repo = env.init_repo("repokey-blake2");
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::ours"), "src"]));
    ok(env.borg(Borg::V14).current_dir(env.path()).args([
        "create",
        &format!("{repo}::borg"),
        "src",
    ]));
    let paths = |archive: &str| {
        ok(env.borg(Borg::V14).args([
            "list",
            "--format",
            "{path} {type}{NL}",
            &format!("{repo}::{archive}"),
        ]))
    };
    let (ours, borg) = (paths("ours"), paths("borg"));
    assert!(ours.lines().count() > 200, "{ours}");
    assert_eq!(ours, borg);
}
