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
