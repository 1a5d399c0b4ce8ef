//! `check` on damaged repositories, side by side with borg 1.2.4 and 1.4.5 on identical
//! copies: flipped bytes in a segment, a truncated segment, a lost index, an object whose
//! data no longer matches its MAC/id (found only by --verify-data), a missing file chunk
//! and an orphan. Our findings must be borg's findings (same lines, same exit status),
//! and nothing may panic. `list` of an archive missing an item-stream chunk still shows
//! the items before it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, prng_bytes, run, Borg, TestEnv};
use proxborg::repo::local::{LocalRepository, OpenOptions};
use proxborg::repo::Repository;

struct Fixture {
    env: TestEnv,
    base: PathBuf,
}

/// A repository with one archive of ours and one of borg 1.4 (two files, one chunk
/// each), checked clean by everybody.
fn fixture() -> Fixture {
    let env = TestEnv::new();
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), prng_bytes(1, 300_000)).unwrap();
    std::fs::write(src.join("b"), prng_bytes(2, 100_000)).unwrap();
    let base = env.path().join("base");
    let b = base.display().to_string();
    ok(env.ours().args(["init", "-e", "repokey", &b]));
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{b}::ours"), "src"]));
    std::fs::write(src.join("c"), prng_bytes(3, 50_000)).unwrap();
    ok(env
        .borg(Borg::V14)
        .current_dir(env.path())
        .args(["create", &format!("{b}::borgs"), "src"]));
    Fixture { env, base }
}

impl Fixture {
    /// A fresh copy of the base repository for one case.
    fn copy(&self, name: &str) -> PathBuf {
        let to = self.env.path().join(name);
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.base)
            .arg(&to)
            .status()
            .unwrap();
        assert!(st.success());
        to
    }

    /// The largest segment file (the one holding the file chunks).
    fn data_segment(repo: &Path) -> PathBuf {
        let mut best: Option<(u64, PathBuf)> = None;
        for d in std::fs::read_dir(repo.join("data")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                let f = f.unwrap();
                let len = f.metadata().unwrap().len();
                if best.as_ref().is_none_or(|b| len > b.0) {
                    best = Some((len, f.path()));
                }
            }
        }
        best.unwrap().1
    }
}

/// Exit status and the finding lines (relocation chatter dropped) of one checker.
fn check(env: &TestEnv, mut cmd: Command, repo: &Path, extra: &[&str]) -> (i32, Vec<String>) {
    let (rc, out, err) = run(cmd.arg("check").args(extra).arg(repo));
    let _ = env;
    let mut lines: Vec<String> = format!("{out}{err}")
        .lines()
        .filter(|l| {
            !l.starts_with("Warning: The repository at location")
                && !l.starts_with("Do you want to continue")
                && !l.trim().is_empty()
        })
        .map(|l| l.trim_end().to_string())
        .collect();
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:?}");
    lines.sort();
    (rc, lines)
}

/// Runs every checker on its own copy of `repo` (checks may rebuild index files) and
/// compares with ours; `normalize` maps lines whose wording may legitimately differ.
fn compare(
    f: &Fixture,
    case: &str,
    damage: impl Fn(&Path),
    extra: &[&str],
    normalize: &dyn Fn(&str) -> String,
) -> (i32, Vec<String>) {
    let mut results = Vec::new();
    for who in ["ours", "borg-1.4", "borg-1.2"] {
        let repo = f.copy(&format!("{case}-{who}"));
        damage(&repo);
        let cmd = match who {
            "ours" => f.env.ours(),
            "borg-1.4" => f.env.borg(Borg::V14),
            _ => f.env.borg(Borg::V12),
        };
        let (rc, lines) = check(&f.env, cmd, &repo, extra);
        let mut lines: Vec<String> = lines
            .iter()
            .map(|l| normalize(l))
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        results.push((who, rc, lines));
    }
    let (_, rc, ours) = results[0].clone();
    for (who, brc, blines) in &results[1..] {
        assert_eq!(
            (rc, &ours),
            (*brc, blines),
            "{case}: ours (left) vs {who} (right) differ"
        );
    }
    (rc, ours)
}

fn same(l: &str) -> String {
    l.to_string()
}

#[test]
fn findings_match_borg() {
    let f = fixture();
    for v in Borg::ALL {
        let (rc, lines) = check(&f.env, f.env.borg(v), &f.base, &["--verify-data"]);
        assert_eq!((rc, lines.len()), (0, 0), "{lines:?}");
    }

    // a flipped byte inside a PUT: CRC mismatch, that segment's objects unreadable
    let (rc, lines) = compare(
        &f,
        "flip",
        |r| {
            let p = Fixture::data_segment(r);
            let mut b = std::fs::read(&p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0xff;
            std::fs::write(&p, b).unwrap();
        },
        &[],
        &same,
    );
    assert_eq!(rc, 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Segment entry checksum mismatch")),
        "{lines:?}"
    );

    // a truncated segment (mid-entry)
    let (rc, lines) = compare(
        &f,
        "truncate",
        |r| {
            let p = Fixture::data_segment(r);
            let len = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len - 1000)
                .unwrap();
        },
        &[],
        &same,
    );
    assert_eq!(rc, 1);
    assert!(lines.iter().any(|l| l.contains("short read")), "{lines:?}");

    // a lost index: rebuilt by replaying the segments, no finding
    let replay = |l: &str| {
        if l.starts_with("Replaying segments") {
            String::new()
        } else {
            l.to_string()
        }
    };
    let (rc, _) = compare(
        &f,
        "noindex",
        |r| {
            for e in std::fs::read_dir(r).unwrap() {
                let e = e.unwrap();
                if e.file_name().to_string_lossy().starts_with("index.") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        },
        &["--verify-data"],
        &replay,
    );
    assert_eq!(rc, 0);

    // data changed under an intact CRC: only --verify-data sees it
    let mac_damage = |r: &Path| {
        let p = Fixture::data_segment(r);
        let mut b = std::fs::read(&p).unwrap();
        let size = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
        b[8 + 41 + size / 2] ^= 0x01;
        let crc = crc32fast::hash(&b[12..8 + size]);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&p, b).unwrap();
    };
    let (rc, _) = compare(&f, "mac-plain", mac_damage, &[], &same);
    assert_eq!(rc, 0, "without --verify-data the damage is invisible");
    // borg's wording of the crypto error differs from ours: compare up to it
    let cut = |l: &str| match l.find(", integrity error:") {
        Some(i) => l[..i + ", integrity error:".len()].to_string(),
        None => l.to_string(),
    };
    let (rc, lines) = compare(&f, "mac", mac_damage, &["--verify-data"], &cut);
    assert_eq!(rc, 1);
    assert!(
        lines.iter().any(|l| l.ends_with(", integrity error:")),
        "{lines:?}"
    );

    // a file chunk deleted (consistently) from the repository: missing in both archives
    let largest_object = |r: &Path| {
        let mut repo = LocalRepository::open(r, OpenOptions::default()).unwrap();
        let ids = repo.list(1000, None).unwrap();
        let big = ids
            .iter()
            .max_by_key(|id| repo.get(id).unwrap().len())
            .copied()
            .unwrap();
        (repo, big)
    };
    // (borg 1.2.4 words it as if repairing even without --repair)
    let wording = |l: &str| {
        l.replace(
            "Replacing with all-zero chunk.",
            "Would replace it with all-zero chunk with --repair.",
        )
    };
    let (rc, lines) = compare(
        &f,
        "missing",
        |r| {
            let (mut repo, big) = largest_object(r);
            repo.delete(&big).unwrap();
            repo.commit().unwrap();
        },
        &[],
        &wording,
    );
    assert_eq!(rc, 1);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("New missing file chunk detected"))
            .count(),
        2,
        "{lines:?}"
    );

    // an object nobody references
    let (rc, lines) = compare(
        &f,
        "orphan",
        |r| {
            let (mut repo, big) = largest_object(r);
            let data = repo.get(&big).unwrap();
            repo.put(&[0x42; 32], &data).unwrap();
            repo.commit().unwrap();
        },
        &[],
        &same,
    );
    assert_eq!(rc, 1);
    assert!(
        lines.iter().any(|l| l == "1 orphaned objects found!"),
        "{lines:?}"
    );
}

/// An archive whose last item-stream chunk is gone: `list` still shows the items of the
/// chunks before it (they are fetched together, but not lost together) and then fails.
#[test]
fn list_shows_items_before_a_missing_item_chunk() {
    let env = TestEnv::new();
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let long = "x".repeat(150);
    for i in 0..6000 {
        std::fs::write(src.join(format!("file-{i:05}-{long}")), b"").unwrap();
    }
    let repo = env.init_repo("repokey");
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::a"), "src"]));
    // borg names the item-stream chunks in order: 000000_<id>.items, ...
    let dump = env.path().join("dump");
    std::fs::create_dir_all(&dump).unwrap();
    ok(env.borg(Borg::V14).current_dir(&dump).args([
        "debug",
        "dump-archive-items",
        &format!("{repo}::a"),
    ]));
    let mut objs: Vec<String> = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    objs.sort();
    assert!(objs.len() >= 3, "want several item chunks: {objs:?}");
    let last = objs.last().unwrap();
    let id = last.split(['_', '.']).nth(1).unwrap();
    ok(env.borg(Borg::V14).args(["debug", "delete-obj", &repo, id]));
    let (rc, out, err) = run(env.ours().args(["list", "--short", &format!("{repo}::a")]));
    assert_eq!(rc, 2, "{err}");
    let shown = out.lines().filter(|l| l.starts_with("src/file-")).count();
    assert!(
        shown > 1000 && shown < 6000,
        "{shown} items shown before the missing chunk; {err}"
    );
}

/// `delete --force` removes an archive whose item chunk is gone (from the manifest only,
/// as borg's); `--force --force` removes one without reading it. borg's `check --repair`
/// then cleans up, and our next `create` rebuilds the chunks index instead of trusting
/// chunks the repair deleted.
#[test]
fn delete_force_removes_unreadable_archives() {
    let env = TestEnv::new();
    let repo = env.init_repo("repokey");
    for (dir, seed) in [("src", 1), ("other", 2)] {
        let d = env.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..20u64 {
            common::write_file(
                &d,
                &format!("f{i}"),
                &common::prng_bytes(seed * 100 + i, 5000),
            );
        }
    }
    for (name, dir) in [("a", "src"), ("b", "other")] {
        ok(env
            .ours()
            .current_dir(env.path())
            .args(["create", &format!("{repo}::{name}"), dir]));
    }
    let dump = env.path().join("dump");
    std::fs::create_dir_all(&dump).unwrap();
    ok(env.borg(Borg::V14).current_dir(&dump).args([
        "debug",
        "dump-archive-items",
        &format!("{repo}::a"),
    ]));
    let first = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .min()
        .unwrap();
    let id = first.split(['_', '.']).nth(1).unwrap().to_string();
    ok(env
        .borg(Borg::V14)
        .args(["debug", "delete-obj", &repo, &id]));

    let (rc, _, err) = run(env.ours().args(["delete", &format!("{repo}::a")]));
    assert_eq!(rc, 2, "{err}");
    let (rc, _, err) = run(env
        .ours()
        .args(["delete", "--force", &format!("{repo}::a")]));
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("forced deletion succeeded"), "{err}");
    let (rc, _, err) =
        run(env
            .ours()
            .args(["delete", "--force", "--force", &format!("{repo}::b")]));
    assert_eq!(rc, 0, "{err}");
    assert!(err.contains("borg check --repair"), "{err}");
    let listed = ok(env.borg(Borg::V14).args(["list", "--short", &repo]));
    assert_eq!(listed.trim(), "");
    ok(env.borg(Borg::V14).args(["check", "--repair", &repo]));
    ok(env.borg(Borg::V14).args(["check", &repo]));

    // the repair deleted a's and b's chunks: a new archive of the same files must store
    // them again, and borg must read it back whole
    ok(env
        .ours()
        .current_dir(env.path())
        .args(["create", &format!("{repo}::c"), "src"]));
    let (rc, out, err) = run(env
        .borg(Borg::V14)
        .args(["check", "-v", "--verify-data", &repo]));
    assert_eq!(rc, 0, "{out}{err}");
    let dest = env.path().join("x");
    std::fs::create_dir_all(&dest).unwrap();
    ok(env
        .borg(Borg::V14)
        .current_dir(&dest)
        .args(["extract", &format!("{repo}::c")]));
    for i in 0..20u64 {
        let f = format!("src/f{i}");
        assert_eq!(
            std::fs::read(dest.join(&f)).unwrap(),
            std::fs::read(env.path().join(&f)).unwrap(),
            "{f}"
        );
    }
}
