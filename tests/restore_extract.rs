//! `extract` against upstream borg: for archives written by borg 1.2.4, borg 1.4.5 and by
//! us, our extraction equals borg's (full metadata compare of the trees), `--stdout`
//! output is byte-identical, and partial extractions (paths, `--strip-components`, a
//! hardlink whose master is outside the selection, `--sparse`) match too.

mod common;

use std::path::Path;

use common::tree::{diff, make_tree, scan};
use common::{ok, run, Borg, TestEnv};

#[derive(Clone, Copy, Debug)]
enum Writer {
    Borg(Borg),
    Ours,
}

fn setup(w: Writer) -> (TestEnv, String) {
    let env = TestEnv::new();
    make_tree(&env.path().join("src"));
    let repo = env.path().join("repo").display().to_string();
    let arch = format!("{repo}::a");
    match w {
        Writer::Borg(v) => {
            ok(env.borg(v).args(["init", "-e", "repokey-blake2", &repo]));
            ok(env
                .borg(v)
                .current_dir(env.path())
                .args(["create", &arch, "src"]));
        }
        Writer::Ours => {
            ok(env.ours().args(["init", "-e", "repokey", &repo]));
            ok(env
                .ours()
                .current_dir(env.path())
                .args(["create", &arch, "src"]));
        }
    }
    (env, arch)
}

fn reference(w: Writer) -> Borg {
    match w {
        Writer::Borg(v) => v,
        Writer::Ours => Borg::V14,
    }
}

/// Extracts with borg and with us into fresh dirs (same extra args); returns both dirs.
fn both(
    env: &TestEnv,
    v: Borg,
    tag: &str,
    args: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let b = env.path().join(format!("borg-{tag}"));
    let o = env.path().join(format!("ours-{tag}"));
    std::fs::create_dir_all(&b).unwrap();
    std::fs::create_dir_all(&o).unwrap();
    let (rb, outb, errb) = run(env.borg(v).current_dir(&b).arg("extract").args(args));
    let (ro, outo, erro) = run(env.ours().current_dir(&o).arg("extract").args(args));
    assert_eq!(
        rb, ro,
        "exit codes differ for extract {args:?}:\nborg: {outb}{errb}\nours: {outo}{erro}"
    );
    (b, o)
}

/// Compares two extraction directories (their own mtimes aside).
fn assert_same(a: &Path, b: &Path, what: &str) {
    let strip = |p: &Path| {
        let mut s = scan(p);
        s.remove(&Vec::new());
        s
    };
    let d = diff(&strip(a), &strip(b));
    assert!(d.is_empty(), "{what}:\n{}", d.join("\n"));
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

fn extract_equals_borg(w: Writer) {
    let (env, arch) = setup(w);
    let v = reference(w);
    let src = env.path().join("src");

    let (b, o) = both(&env, v, "full", &[&arch]);
    assert_same(
        &b,
        &o,
        &format!("{w:?}: full extract differs from {}", v.name()),
    );
    let d = diff(&scan(&src), &scan(&o.join("src")));
    assert!(
        d.is_empty(),
        "{w:?}: our extract differs from the source:\n{}",
        d.join("\n")
    );

    // a subtree: sub/hl2 and sub/deeper/hl3 link to hl1, which is not selected
    let (b, o) = both(
        &env,
        v,
        "partial",
        &["--strip-components", "1", &arch, "src/sub", "src/nodump"],
    );
    assert_same(&b, &o, &format!("{w:?}: partial extract differs"));
    assert!(o.join("sub/hl2").exists() && o.join("nodump").exists());

    let (b, o) = both(&env, v, "sparse", &["--sparse", "-e", "src/sub", &arch]);
    assert_same(&b, &o, &format!("{w:?}: sparse extract differs"));
    let (sb, so) = (
        allocated(&b.join("src/zeros.bin")),
        allocated(&o.join("src/zeros.bin")),
    );
    assert_eq!(sb, so, "allocated size of a zero file after --sparse");
    assert!(
        so < 1 << 20,
        "--sparse left {so} bytes allocated for 2 MiB of zeros"
    );

    let sb =
        std::process::Command::output(env.borg(v).args(["extract", "--stdout", &arch])).unwrap();
    let so =
        std::process::Command::output(env.ours().args(["extract", "--stdout", &arch])).unwrap();
    assert!(sb.status.success() && so.status.success());
    assert!(sb.stdout.len() > 5 << 20);
    assert!(
        sb.stdout == so.stdout,
        "--stdout output differs ({} vs {} bytes)",
        sb.stdout.len(),
        so.stdout.len()
    );

    // dry run and --list print the same paths
    let (_, _, eb) = run(env
        .borg(v)
        .args(["extract", "--dry-run", "--list", &arch, "src/sub"]));
    let (ro, _, eo) = run(env
        .ours()
        .args(["extract", "--dry-run", "--list", &arch, "src/sub"]));
    assert_eq!(ro, 0);
    assert_eq!(eb, eo, "--list output differs");
}

#[test]
fn extract_borg12_archive() {
    extract_equals_borg(Writer::Borg(Borg::V12));
}

#[test]
fn extract_borg14_archive() {
    extract_equals_borg(Writer::Borg(Borg::V14));
}

#[test]
fn extract_our_archive() {
    extract_equals_borg(Writer::Ours);
}

/// `--numeric-ids` and a path that matches nothing (warning, rc 1) behave as borg's.
#[test]
fn numeric_ids_and_unmatched_path() {
    let (env, arch) = setup(Writer::Ours);
    let (b, o) = both(
        &env,
        Borg::V14,
        "numeric",
        &[
            "--numeric-ids",
            "--strip-components",
            "1",
            &arch,
            "src/acl",
            "src/owned",
        ],
    );
    assert_same(&b, &o, "--numeric-ids extract differs");
    let (rc, _, err) = run(env
        .ours()
        .current_dir(&o)
        .args(["extract", &arch, "src/nothing-here"]));
    assert_eq!(rc, 1, "{err}");
    assert!(
        err.contains("Include pattern 'src/nothing-here' never matched."),
        "{err}"
    );
}

/// borg applies `--exclude`, `--exclude-from`, `--pattern` and `--patterns-from` as one
/// list in command-line order (the first match decides), and `R` lines add paths: the same
/// options in other orders select what borg 1.4 selects.
#[test]
fn pattern_options_apply_in_command_line_order() {
    let (env, arch) = setup(Writer::Ours);
    let ef = env.path().join("excludes");
    let pf = env.path().join("patterns");
    std::fs::write(&ef, "# comment\nsrc/sub/*\n").unwrap();
    std::fs::write(&pf, "P fm\n+ src/sub/hl2\n").unwrap();
    let (ef, pf) = (ef.display().to_string(), pf.display().to_string());
    let cases: [&[&str]; 6] = [
        &["-e", "src/sub/*", "--pattern", "+src/sub/text.txt"],
        &["--pattern", "+src/sub/text.txt", "-e", "src/sub/*"],
        &["--exclude-from", &ef, "--patterns-from", &pf],
        &["--patterns-from", &pf, "--exclude-from", &ef],
        &["--pattern=Rsrc/sub", "--pattern=-src/sub/deeper"],
        &[
            "--pattern=-src/sub/link",
            "-e",
            "src/sub/l*",
            "--pattern=+src/sub/*",
        ],
    ];
    let listed = |out: &str| {
        let mut v: Vec<&str> = out.lines().collect();
        v.sort_unstable();
        v.join("\n")
    };
    let mut selected = Vec::new();
    for args in cases {
        let run_one = |cmd: &mut std::process::Command| {
            run(cmd
                .args(["extract", "--dry-run", "--list"])
                .args(args)
                .arg(&arch))
        };
        let (rb, _, eb) = run_one(&mut env.borg(Borg::V14));
        let (ro, _, eo) = run_one(&mut env.ours());
        assert_eq!((rb, ro), (0, 0), "{args:?}:\nborg: {eb}\nours: {eo}");
        assert_eq!(listed(&eb), listed(&eo), "{args:?}: selection differs");
        selected.push(listed(&eb));
    }
    // the first cases differ only in order, and that changes borg's selection
    assert_ne!(selected[0], selected[1], "order of -e and --pattern");
    assert_ne!(selected[2], selected[3], "order of the pattern files");
}
