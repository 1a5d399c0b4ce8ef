//! How we reach a `borg serve`: a byte pipe in each direction plus the server's stderr.
//! The default spawns the user's ssh with exactly the command line borg builds.

use super::stderr::LogLevel;
use std::io::{self, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The three byte streams of a connection.
pub struct TransportIo {
    /// Requests go here (the server's stdin).
    pub input: Box<dyn Write + Send>,
    /// Replies come from here (the server's stdout).
    pub output: Box<dyn Read + Send>,
    /// Log lines and diagnostics (the server's / ssh's stderr), if the transport has them.
    pub errors: Option<Box<dyn Read + Send>>,
}

/// A way to talk to `borg serve`.
pub trait Transport: Send {
    /// Hands out the streams; called exactly once.
    fn take_io(&mut self) -> io::Result<TransportIo>;
    /// Waits up to `timeout` for the connection's process to end (after its input was
    /// closed); returns how it ended, or `None` if it is still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<String>;
    /// Ends the connection by force.
    fn kill(&mut self);
    /// The local process carrying the connection (ssh), if any.
    fn pid(&self) -> Option<u32>;
    /// The command line or address, for messages.
    fn describe(&self) -> String;
}

/// A child process whose stdin/stdout carry the protocol (ssh, or `borg serve` itself).
pub struct CommandTransport {
    child: Child,
    argv: Vec<String>,
    exited: Option<String>,
}

impl CommandTransport {
    /// Starts `argv` with piped stdio. SIGINT is ignored in the child, as borg does: a
    /// Ctrl-C must not cut the connection the client still needs for its clean-up.
    pub fn spawn(argv: Vec<String>) -> io::Result<Self> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls are allowed;
        // signal(2) is one.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {prog}: {e}")))?;
        Ok(CommandTransport {
            child,
            argv,
            exited: None,
        })
    }
}

impl Transport for CommandTransport {
    fn take_io(&mut self) -> io::Result<TransportIo> {
        let missing = || io::Error::other("the connection's pipes were already taken");
        Ok(TransportIo {
            input: Box::new(self.child.stdin.take().ok_or_else(missing)?),
            output: Box::new(self.child.stdout.take().ok_or_else(missing)?),
            errors: self
                .child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn Read + Send>),
        })
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<String> {
        if self.exited.is_some() {
            return self.exited.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let name = self
                        .argv
                        .first()
                        .map(String::as_str)
                        .unwrap_or("connection");
                    self.exited = Some(format!("{name} {status}"));
                    return self.exited.clone();
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => return None,
                Err(e) => {
                    self.exited = Some(format!("cannot wait for the connection process: {e}"));
                    return self.exited.clone();
                }
            }
        }
    }

    fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = Some("killed".into());
        }
    }

    fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    fn describe(&self) -> String {
        self.argv.join(" ")
    }
}

impl Drop for CommandTransport {
    fn drop(&mut self) {
        // Never leave a zombie or an orphaned ssh behind.
        if self.wait_exit(Duration::ZERO).is_none() {
            self.kill();
        }
    }
}

/// What goes into the ssh + `borg serve` command line.
#[derive(Clone, Debug, Default)]
pub struct SshCommand<'a> {
    /// `--rsh`; falls back to `$BORG_RSH`, then `ssh`.
    pub rsh: Option<&'a str>,
    /// `--remote-path`; falls back to `$BORG_REMOTE_PATH`, then `borg`. Placeholders are
    /// expanded.
    pub remote_path: Option<&'a str>,
    pub user: Option<&'a str>,
    /// Host without IPv6 brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// Mirrored to the server so its log verbosity matches ours.
    pub log_level: LogLevel,
    /// Only sent when creating a repository (`borg init --storage-quota`).
    pub storage_quota: Option<u64>,
}

/// borg's `ssh_cmd(location) + borg_cmd(args)`:
/// `shlex.split(rsh) [-p PORT] [user@]host remote_path serve [opts]`.
pub fn ssh_argv(c: &SshCommand<'_>) -> Result<Vec<String>, String> {
    let env_rsh = std::env::var("BORG_RSH").ok();
    let rsh = c.rsh.or(env_rsh.as_deref()).unwrap_or("ssh");
    let mut argv = shlex_split(rsh).map_err(|e| format!("BORG_RSH / --rsh {rsh:?}: {e}"))?;
    if argv.is_empty() {
        return Err(format!("BORG_RSH / --rsh {rsh:?} names no program"));
    }
    if let Some(p) = c.port {
        argv.push("-p".into());
        argv.push(p.to_string());
    }
    argv.push(match c.user {
        Some(u) => format!("{u}@{}", c.host),
        None => c.host.to_string(),
    });
    let env_rp = std::env::var("BORG_REMOTE_PATH").ok();
    let remote_path = c.remote_path.or(env_rp.as_deref()).unwrap_or("borg");
    let remote_path = crate::placeholders::Placeholders::current()
        .expand(remote_path)
        .map_err(|e| format!("--remote-path: {e}"))?;
    argv.push(remote_path);
    argv.push("serve".into());
    if let Some(o) = c.log_level.serve_option() {
        argv.push(o.into());
    }
    if let Some(q) = c.storage_quota.filter(|&q| q > 0) {
        argv.push(format!("--storage-quota={q}"));
    }
    Ok(argv)
}

/// Python's `shlex.split(s)` (POSIX mode, no comments): whitespace separates words,
/// `'…'` is literal, `"…"` allows `\"` and `\\`, a backslash outside quotes escapes the
/// next character, `''` is an empty word.
pub fn shlex_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("no closing quotation".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("no closing quotation".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(x) => cur.push(x),
                    None => return Err("no escaped character".into()),
                }
            }
            x => {
                in_word = true;
                cur.push(x);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shlex_like_python() {
        let w = |s: &str| shlex_split(s).unwrap();
        assert_eq!(w("ssh"), ["ssh"]);
        assert_eq!(w("  ssh   -i  key "), ["ssh", "-i", "key"]);
        assert_eq!(
            w(r#"ssh -o "ProxyCommand=nc %h 22" -i 'my key'"#),
            ["ssh", "-o", "ProxyCommand=nc %h 22", "-i", "my key"]
        );
        assert_eq!(w(r#"a\ b "x\"y\z" ''"#), ["a b", "x\"y\\z", ""]);
        assert_eq!(w(r#"pre'mid'"post""#), ["premidpost"]);
        assert_eq!(w(""), Vec::<String>::new());
        assert!(shlex_split("'open").is_err());
        assert!(shlex_split("\"open").is_err());
        assert!(shlex_split("trailing\\").is_err());
    }

    #[test]
    fn command_line_like_borg() {
        let c = SshCommand {
            rsh: Some("ssh -i /k -o BatchMode=yes"),
            remote_path: Some("/opt/borg"),
            user: Some("backup"),
            host: "::1",
            port: Some(2222),
            log_level: LogLevel::Info,
            storage_quota: Some(5_000_000_000),
        };
        assert_eq!(
            ssh_argv(&c).unwrap(),
            [
                "ssh",
                "-i",
                "/k",
                "-o",
                "BatchMode=yes",
                "-p",
                "2222",
                "backup@::1",
                "/opt/borg",
                "serve",
                "--info",
                "--storage-quota=5000000000"
            ]
        );
        let c = SshCommand {
            rsh: Some("ssh"),
            remote_path: Some("borg"),
            host: "h",
            ..Default::default()
        };
        assert_eq!(ssh_argv(&c).unwrap(), ["ssh", "h", "borg", "serve"]);
        let c = SshCommand {
            rsh: Some("   "),
            host: "h",
            ..Default::default()
        };
        assert!(ssh_argv(&c).is_err());
    }

    #[test]
    fn command_transport_pipes_and_exit() {
        let mut t = CommandTransport::spawn(vec!["cat".into()]).unwrap();
        let mut io = t.take_io().unwrap();
        io.input.write_all(b"ping").unwrap();
        drop(io.input);
        let mut out = Vec::new();
        io.output.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ping");
        assert!(t
            .wait_exit(Duration::from_secs(5))
            .unwrap()
            .contains("exit status: 0"));
        assert!(t.take_io().is_err());
        assert!(CommandTransport::spawn(vec!["/nonexistent/prog".into()]).is_err());
    }
}
