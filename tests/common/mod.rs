//! Shared helpers for tests that drive upstream borg (installed by `compat/setup.sh`).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The project root (where `Cargo.toml` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Which upstream borg a test talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Borg {
    /// Debian's borgbackup 1.2.x (system python).
    V12,
    /// borgbackup 1.4.5 from PyPI in the project venv.
    V14,
}

impl Borg {
    pub const ALL: [Borg; 2] = [Borg::V12, Borg::V14];

    /// The `borg` executable.
    pub fn exe(self) -> PathBuf {
        let p = match self {
            Borg::V12 => PathBuf::from("/usr/bin/borg"),
            Borg::V14 => root().join(".compat-env/borg-1.4.5/bin/borg"),
        };
        assert!(
            p.exists(),
            "{} is missing: run `bash compat/setup.sh` (the README's test command does)",
            p.display()
        );
        p
    }

    /// The python interpreter that can `import borg` for this version.
    pub fn python(self) -> PathBuf {
        let p = match self {
            Borg::V12 => PathBuf::from("/usr/bin/python3"),
            Borg::V14 => root().join(".compat-env/borg-1.4.5/bin/python"),
        };
        assert!(
            p.exists(),
            "{} is missing: run `bash compat/setup.sh`",
            p.display()
        );
        p
    }

    pub fn name(self) -> &'static str {
        match self {
            Borg::V12 => "borg-1.2",
            Borg::V14 => "borg-1.4",
        }
    }
}

/// Runs `compat/py/<script>` with borg's python, feeding `stdin`; returns stdout.
/// Panics with the script's stderr when it fails, so a broken oracle never passes silently.
pub fn run_py(borg: Borg, script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let path = root().join("compat/py").join(script);
    let mut child = Command::new(borg.python())
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
    {
        let mut si = child.stdin.take().unwrap();
        si.write_all(stdin).expect("write to python stdin");
    }
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "{} {script} {args:?} failed: {}\n{}",
        borg.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Like `run_py` but returns stdout parsed as JSON.
pub fn run_py_json(borg: Borg, script: &str, args: &[&str], stdin: &[u8]) -> serde_json::Value {
    let out = run_py(borg, script, args, stdin);
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "{script}: bad JSON from {}: {e}: {}",
            borg.name(),
            String::from_utf8_lossy(&out)
        )
    })
}

/// Writes `data` to a fresh file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Deterministic pseudo-random bytes (xorshift64*), for generated test data.
pub fn prng_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub mod tree;

/// A per-test home for borg and us: keys, security dir and caches never leak between tests.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pbn-test-")
            .tempdir_in(test_tmp())
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        TestEnv { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn apply(&self, c: &mut Command) {
        c.env("BORG_BASE_DIR", self.dir.path().join("home"))
            .env("BORG_PASSPHRASE", "test-passphrase")
            .env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
            .env("BORG_CHECK_I_KNOW_WHAT_I_AM_DOING", "YES")
            .env("BORG_DELETE_I_KNOW_WHAT_I_AM_DOING", "YES")
            .env_remove("BORG_REPO")
            .env_remove("BORG_KEY_FILE")
            .env_remove("BORG_PASSCOMMAND")
            .env_remove("BORG_NEW_PASSPHRASE")
            .stdin(Stdio::null());
    }

    /// Initialises `repo` in this environment's directory with our `init -e mode`;
    /// returns its path.
    #[track_caller]
    pub fn init_repo(&self, mode: &str) -> String {
        let repo = self.dir.path().join("repo").display().to_string();
        ok(self.ours().args(["init", "-e", mode, &repo]));
        repo
    }

    /// Our binary with this environment.
    pub fn ours(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_proxborg-native"));
        self.apply(&mut c);
        c
    }

    /// An upstream borg with this environment.
    pub fn borg(&self, v: Borg) -> Command {
        let mut c = Command::new(v.exe());
        self.apply(&mut c);
        c
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// Where tests put their files: a disk file system with xattrs/ACLs (not tmpfs).
pub fn test_tmp() -> PathBuf {
    let p = root().join("target/test-tmp");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Runs a command, returning (status code, stdout, stderr).
pub fn run(c: &mut Command) -> (i32, String, String) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must exit 0; returns stdout.
#[track_caller]
pub fn ok(c: &mut Command) -> String {
    let (rc, out, err) = run(c);
    assert_eq!(
        rc, 0,
        "{c:?} failed (rc {rc}):\nstdout: {out}\nstderr: {err}"
    );
    out
}
pub mod zfs;
