//! Running the host's command-line tools (`zfs`, `pvesh`, `pct`, ...).

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// A tool that could not be started or did not succeed; names the command line.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("running {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

impl ToolError {
    /// What the tool wrote to stderr, if it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ToolError::Failed { stderr, .. } => Some(stderr),
            ToolError::Spawn { .. } => None,
        }
    }
}

/// Runs `prog args...` with stdin closed and returns its stdout; a non-zero exit is an
/// error carrying its stderr.
pub fn run(prog: impl AsRef<OsStr>, args: &[&str]) -> Result<String, ToolError> {
    let prog = prog.as_ref();
    let cmd = format!("{} {}", prog.to_string_lossy(), args.join(" "));
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
