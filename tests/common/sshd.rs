//! A private OpenSSH server on loopback, so tests reach `borg serve` through real ssh.
//!
//! Each `Sshd` runs `/usr/sbin/sshd -D` as a child with its own config, host key and
//! authorized_keys in a temp dir, on a free high port of 127.0.0.1; dropping it kills
//! the server and every session it started.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    keys: AtomicU32,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "proxborg-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(st.success(), "ssh-keygen failed for {}", path.display());
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

impl Sshd {
    /// Starts a server; panics with its log if it does not come up.
    pub fn start() -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: apt-get install openssh-server (compat/setup.sh)"
        );
        // Privilege separation needs this directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("pbn-sshd-")
            .tempdir_in(crate::common::test_tmp())
            .unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        std::fs::write(d.join("authorized_keys"), "").unwrap();
        std::fs::create_dir_all(d.join("server-home")).unwrap();
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\n\
                 AuthorizedKeysFile {ak}\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nSetEnv BORG_BASE_DIR={home}\n",
                hk = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
                home = d.join("server-home").display(),
            );
            std::fs::write(d.join("sshd_config"), config).unwrap();
            let log = d.join("sshd.log");
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .spawn()
                .expect("start sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        dir,
                        child,
                        port,
                        keys: AtomicU32::new(0),
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("sshd did not start:\n{last_log}");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new client key that may log in; with `forced`, the key can only run that command
    /// (`command="…",restrict`, as borg's docs recommend for `borg serve`).
    pub fn client_key(&self, forced: Option<&str>) -> PathBuf {
        let n = self.keys.fetch_add(1, Ordering::SeqCst);
        let key = self.dir().join(format!("client_key_{n}"));
        keygen(&key);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let line = match forced {
            Some(cmd) => format!(
                "command=\"{}\",restrict {}",
                cmd.replace('"', "\\\""),
                public.trim()
            ),
            None => public.trim().to_string(),
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir().join("authorized_keys"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
        key
    }

    /// `BORG_RSH` for `key`, without the port (give it in the location).
    pub fn rsh_without_port(&self, key: &Path) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            key.display()
        )
    }

    /// `BORG_RSH` for `key`, port included.
    pub fn rsh(&self, key: &Path) -> String {
        format!("ssh -p {} {}", self.port, &self.rsh_without_port(key)[4..])
    }

    /// The `ssh://` location of `path` on this server.
    pub fn url(&self, path: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, path.display())
    }

    /// `c` reaching this server with `key` and running the borg at `server` there.
    pub fn via(&self, mut c: Command, key: &Path, server: &Path) -> Command {
        c.env("BORG_RSH", self.rsh_without_port(key))
            .env("BORG_REMOTE_PATH", server);
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs every process below the server (its sessions and the commands they run,
    /// e.g. `borg serve`): the server side dies the hard way, the listener stays.
    pub fn kill_sessions(&self) -> usize {
        let mut parent_of = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": comm may hold spaces, so split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
        let mut victims = vec![self.child.id() as i32];
        let mut i = 0;
        while i < victims.len() {
            let p = victims[i];
            victims.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
            i += 1;
        }
        let mut n = 0;
        for &pid in &victims[1..] {
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
