//! Passphrases from the places borg looks for them (`key.py: Passphrase`), in its order:
//! `BORG_PASSPHRASE` (an empty value counts), `BORG_PASSCOMMAND`, `BORG_PASSPHRASE_FD`,
//! then an interactive prompt on the terminal.
//!
//! The decision logic takes an environment lookup so it can be tested without touching
//! the process environment; only the public entry points read the real one.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Command, Stdio};

use zeroize::{Zeroize, Zeroizing};

/// How borg asks for a new passphrase before giving up.
const NEW_PASSPHRASE_TRIES: usize = 10;
/// How often borg prompts for an existing key's passphrase after the silent empty try.
const EXISTING_PASSPHRASE_TRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no passphrase given: set BORG_PASSPHRASE, BORG_PASSCOMMAND or BORG_PASSPHRASE_FD")]
    NoPassphrase,
    #[error("BORG_PASSCOMMAND {command:?} failed: {reason}")]
    Passcommand { command: String, reason: String },
    #[error("BORG_PASSPHRASE_FD {fd}: {source}")]
    Fd {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("passphrase from {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("interactive passphrase query failed: {0}")]
    Tty(#[source] std::io::Error),
    #[error("passphrase supplied in BORG_PASSPHRASE, by BORG_PASSCOMMAND or via BORG_PASSPHRASE_FD is incorrect")]
    Wrong,
    #[error("exceeded the maximum passphrase retries")]
    RetriesExceeded,
}

/// Looks an environment variable up (`None` when unset).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The passphrase the environment supplies for an existing key, if any
/// (borg's `Passphrase.env_passphrase`).
pub fn env_passphrase(get: EnvLookup) -> Result<Option<Zeroizing<String>>, SecretError> {
    if let Some(p) = get("BORG_PASSPHRASE") {
        return Ok(Some(Zeroizing::new(p)));
    }
    if let Some(cmd) = get("BORG_PASSCOMMAND") {
        return run_passcommand(&cmd).map(Some);
    }
    fd_passphrase(get)
}

/// The passphrase the environment supplies for a new key: `BORG_NEW_PASSPHRASE`, then the
/// sources of [`env_passphrase`] (borg's `Passphrase.new` before prompting).
pub fn env_new_passphrase(get: EnvLookup) -> Result<Option<Zeroizing<String>>, SecretError> {
    if let Some(p) = get("BORG_NEW_PASSPHRASE") {
        return Ok(Some(Zeroizing::new(p)));
    }
    env_passphrase(get)
}

fn run_passcommand(command: &str) -> Result<Zeroizing<String>, SecretError> {
    let fail = |reason: String| SecretError::Passcommand {
        command: command.to_string(),
        reason,
    };
    let argv = shlex_split(command).map_err(|e| fail(e.to_string()))?;
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| fail("empty command".into()))?;
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let mut stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(fail(out.status.to_string()));
    }
    let text =
        std::str::from_utf8(&stdout).map_err(|_| SecretError::NotUtf8("BORG_PASSCOMMAND"))?;
    let p = Zeroizing::new(text.trim_end_matches('\n').to_string());
    stdout.zeroize();
    Ok(p)
}

/// `BORG_PASSPHRASE_FD`: reads the whole descriptor and closes it (as borg does). A value
/// that is not a number means "not set".
fn fd_passphrase(get: EnvLookup) -> Result<Option<Zeroizing<String>>, SecretError> {
    let Some(fd) = get("BORG_PASSPHRASE_FD").and_then(|v| v.trim().parse::<i32>().ok()) else {
        return Ok(None);
    };
    // Refuse descriptors that are not open rather than adopting a number we do not own.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(SecretError::Fd {
            fd,
            source: std::io::Error::from_raw_os_error(libc::EBADF),
        });
    }
    // SAFETY: the descriptor is open and was handed to this process for exactly this read;
    // borg closes it afterwards too.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut buf = Zeroizing::new(Vec::new());
    f.read_to_end(&mut buf)
        .map_err(|source| SecretError::Fd { fd, source })?;
    let text = std::str::from_utf8(&buf).map_err(|_| SecretError::NotUtf8("BORG_PASSPHRASE_FD"))?;
    Ok(Some(Zeroizing::new(
        text.trim_end_matches('\n').to_string(),
    )))
}

fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(0) == 1 }
}

/// Passphrase for an existing key: the environment sources, else one prompt on the
/// terminal when stdin is one, else [`SecretError::NoPassphrase`].
pub fn passphrase_for_existing() -> Result<Zeroizing<String>, SecretError> {
    if let Some(p) = env_passphrase(&process_env)? {
        return Ok(p);
    }
    if stdin_is_terminal() {
        return prompt("Enter passphrase: ");
    }
    Err(SecretError::NoPassphrase)
}

/// Unlocks an existing key the way borg's `KeyfileKeyBase.detect` does: a passphrase from
/// the environment gets one attempt ([`SecretError::Wrong`] if it fails); otherwise the
/// empty passphrase is tried silently, then the user is asked up to three times.
/// `attempt` returns `Some` when the passphrase opens the key.
pub fn unlock_existing<T>(
    prompt_text: &str,
    attempt: impl FnMut(&str) -> Option<T>,
) -> Result<T, SecretError> {
    unlock_with(
        &process_env,
        stdin_is_terminal(),
        &mut |p| prompt(p),
        prompt_text,
        attempt,
    )
}

fn unlock_with<T>(
    get: EnvLookup,
    interactive: bool,
    ask: &mut dyn FnMut(&str) -> Result<Zeroizing<String>, SecretError>,
    prompt_text: &str,
    mut attempt: impl FnMut(&str) -> Option<T>,
) -> Result<T, SecretError> {
    if let Some(p) = env_passphrase(get)? {
        return attempt(&p).ok_or(SecretError::Wrong);
    }
    if let Some(t) = attempt("") {
        return Ok(t);
    }
    if !interactive {
        return Err(SecretError::NoPassphrase);
    }
    for _ in 0..EXISTING_PASSPHRASE_TRIES {
        let p = ask(prompt_text)?;
        if let Some(t) = attempt(&p) {
            return Ok(t);
        }
    }
    Err(SecretError::RetriesExceeded)
}

/// Passphrase for a new key: `BORG_NEW_PASSPHRASE`, the environment sources, else asked
/// twice on the terminal until both entries match (empty is allowed, as borg allows for
/// repokey/keyfile keys).
pub fn passphrase_for_new() -> Result<Zeroizing<String>, SecretError> {
    if let Some(p) = env_new_passphrase(&process_env)? {
        return Ok(p);
    }
    if !stdin_is_terminal() {
        return Err(SecretError::NoPassphrase);
    }
    let p = new_interactive(&mut |t| prompt(t), &mut |m| eprintln!("{m}"))?;
    if process_env("BORG_DISPLAY_PASSPHRASE")
        .is_some_and(|v| matches!(v.as_str(), "y" | "Y" | "yes" | "YES" | "Yes"))
    {
        eprintln!(
            "Your passphrase (between double-quotes): \"{}\"",
            p.as_str()
        );
        eprintln!("Make sure the passphrase displayed above is exactly what you wanted.");
    }
    Ok(p)
}

fn new_interactive(
    ask: &mut dyn FnMut(&str) -> Result<Zeroizing<String>, SecretError>,
    say: &mut dyn FnMut(&str),
) -> Result<Zeroizing<String>, SecretError> {
    for _ in 0..NEW_PASSPHRASE_TRIES {
        let a = ask("Enter new passphrase: ")?;
        let b = ask("Enter same passphrase again: ")?;
        if a == b {
            return Ok(a);
        }
        say("Passphrases do not match");
    }
    Err(SecretError::RetriesExceeded)
}

/// Restores the terminal mode when the prompt ends, however it ends.
struct EchoGuard {
    fd: i32,
    saved: libc::termios,
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        // SAFETY: restores attributes previously read from the same open descriptor.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSAFLUSH, &self.saved);
        }
    }
}

/// Reads one line from `/dev/tty` with echo off (Python's `getpass`).
fn prompt(text: &str) -> Result<Zeroizing<String>, SecretError> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(SecretError::Tty)?;
    let fd = tty.as_raw_fd();
    let guard = {
        // SAFETY: termios is plain old data; tcgetattr fills it for an open descriptor.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(SecretError::Tty(std::io::Error::last_os_error()));
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        // SAFETY: sets attributes on the open descriptor from a valid termios value.
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &t) } != 0 {
            return Err(SecretError::Tty(std::io::Error::last_os_error()));
        }
        EchoGuard { fd, saved }
    };
    tty.write_all(text.as_bytes())
        .and_then(|_| tty.flush())
        .map_err(SecretError::Tty)?;
    let mut line = Zeroizing::new(Vec::new());
    let mut byte = [0u8; 1];
    loop {
        match tty.read(&mut byte) {
            Ok(0) if line.is_empty() => {
                return Err(SecretError::Tty(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SecretError::Tty(e)),
        }
    }
    byte.zeroize();
    drop(guard);
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = std::str::from_utf8(&line).map_err(|_| SecretError::NotUtf8("the terminal"))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// A command line that Python's `shlex.split` could not split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShlexError {
    #[error("No closing quotation")]
    NoClosingQuotation,
    #[error("No escaped character")]
    NoEscapedCharacter,
}

/// Python's `shlex.split(s)` (POSIX mode, no comments): whitespace separates words,
/// `'…'` is literal, `"…"` honours `\"` and `\\` only, a backslash outside quotes takes
/// the next character literally; `''` yields an empty word.
pub fn shlex_split(s: &str) -> Result<Vec<String>, ShlexError> {
    #[derive(PartialEq)]
    enum St {
        Between,
        Word,
        Single,
        Double,
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut st = St::Between;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match st {
            St::Between | St::Word => match c {
                ' ' | '\t' | '\r' | '\n' => {
                    if st == St::Word {
                        words.push(std::mem::take(&mut cur));
                        st = St::Between;
                    }
                }
                '\\' => {
                    cur.push(chars.next().ok_or(ShlexError::NoEscapedCharacter)?);
                    st = St::Word;
                }
                '\'' => st = St::Single,
                '"' => st = St::Double,
                c => {
                    cur.push(c);
                    st = St::Word;
                }
            },
            St::Single => match c {
                '\'' => st = St::Word,
                c => cur.push(c),
            },
            St::Double => match c {
                '"' => st = St::Word,
                '\\' => match chars.next() {
                    None => return Err(ShlexError::NoEscapedCharacter),
                    Some(n @ ('"' | '\\')) => cur.push(n),
                    Some(n) => {
                        cur.push('\\');
                        cur.push(n);
                    }
                },
                c => cur.push(c),
            },
        }
    }
    match st {
        St::Single | St::Double => Err(ShlexError::NoClosingQuotation),
        St::Word => {
            words.push(cur);
            Ok(words)
        }
        St::Between => Ok(words),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn got(r: Result<Option<Zeroizing<String>>, SecretError>) -> Option<String> {
        r.unwrap().map(|z| z.as_str().to_string())
    }

    #[test]
    fn order_of_sources() {
        let e = env(&[("BORG_PASSPHRASE", ""), ("BORG_PASSCOMMAND", "echo cmd")]);
        assert_eq!(
            got(env_passphrase(&e)),
            Some(String::new()),
            "empty BORG_PASSPHRASE wins"
        );
        let e = env(&[
            ("BORG_PASSCOMMAND", "printf 'a b\\n\\n'"),
            ("BORG_PASSPHRASE_FD", "abc"),
        ]);
        assert_eq!(got(env_passphrase(&e)), Some("a b".into()));
        let e = env(&[("BORG_PASSPHRASE_FD", "not a number")]);
        assert_eq!(got(env_passphrase(&e)), None);
        assert_eq!(got(env_passphrase(&env(&[]))), None);
        let e = env(&[("BORG_NEW_PASSPHRASE", "new"), ("BORG_PASSPHRASE", "old")]);
        assert_eq!(got(env_new_passphrase(&e)), Some("new".into()));
        assert_eq!(got(env_passphrase(&e)), Some("old".into()));
        let e = env(&[("BORG_PASSPHRASE", "old")]);
        assert_eq!(got(env_new_passphrase(&e)), Some("old".into()));
    }

    #[test]
    fn passcommand_failures() {
        for cmd in ["false", "/nonexistent/cmd", "", "echo 'unterminated"] {
            let e = env(&[("BORG_PASSCOMMAND", cmd)]);
            let err = env_passphrase(&e).unwrap_err();
            assert!(
                matches!(err, SecretError::Passcommand { .. }),
                "{cmd}: {err}"
            );
        }
        let e = env(&[("BORG_PASSCOMMAND", "printf '\\377'")]);
        assert!(matches!(env_passphrase(&e), Err(SecretError::NotUtf8(_))));
    }

    #[test]
    fn passphrase_fd() {
        let mut fds = [0i32; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        w.write_all("sécret\n\n".as_bytes()).unwrap();
        drop(w);
        let e = env(&[("BORG_PASSPHRASE_FD", &fds[0].to_string())]);
        assert_eq!(got(env_passphrase(&e)), Some("sécret".into()));
        // the descriptor was consumed and closed
        assert_eq!(unsafe { libc::fcntl(fds[0], libc::F_GETFD) }, -1);
        let e = env(&[("BORG_PASSPHRASE_FD", "987654")]);
        assert!(matches!(
            env_passphrase(&e),
            Err(SecretError::Fd { fd: 987654, .. })
        ));
    }

    #[test]
    fn unlock_logic() {
        let no_ask =
            &mut |_: &str| -> Result<Zeroizing<String>, SecretError> { panic!("must not prompt") };
        let opens = |want: &'static str| move |p: &str| (p == want).then_some(p.len());
        // environment passphrase: single attempt
        let e = env(&[("BORG_PASSPHRASE", "right")]);
        assert_eq!(
            unlock_with(&e, true, no_ask, "p", opens("right")).unwrap(),
            5
        );
        assert!(matches!(
            unlock_with(&e, true, no_ask, "p", opens("other")),
            Err(SecretError::Wrong)
        ));
        // no environment: the empty passphrase first, silently
        let none = env(&[]);
        assert_eq!(
            unlock_with(&none, false, no_ask, "p", opens("")).unwrap(),
            0
        );
        assert!(matches!(
            unlock_with(&none, false, no_ask, "p", opens("x")),
            Err(SecretError::NoPassphrase)
        ));
        // then up to three prompts
        let mut answers = vec!["a", "b", "right"].into_iter();
        let ask = &mut |_: &str| Ok(Zeroizing::new(answers.next().unwrap().to_string()));
        assert_eq!(
            unlock_with(&none, true, ask, "p", opens("right")).unwrap(),
            5
        );
        let mut n = 0;
        let ask = &mut |_: &str| {
            n += 1;
            Ok(Zeroizing::new("wrong".to_string()))
        };
        assert!(matches!(
            unlock_with(&none, true, ask, "p", opens("right")),
            Err(SecretError::RetriesExceeded)
        ));
        assert_eq!(n, 3);
    }

    #[test]
    fn new_passphrase_needs_confirmation() {
        let mut answers = vec!["a", "b", "c", "c"].into_iter();
        let mut said = Vec::new();
        let p = new_interactive(
            &mut |_| Ok(Zeroizing::new(answers.next().unwrap().to_string())),
            &mut |m| said.push(m.to_string()),
        )
        .unwrap();
        assert_eq!(p.as_str(), "c");
        assert_eq!(said, ["Passphrases do not match"]);
        let r = new_interactive(&mut |_| Ok(Zeroizing::new(String::from("x"))), &mut |_| {});
        assert_eq!(r.unwrap().as_str(), "x");
    }

    #[test]
    fn shlex_like_python() {
        let ok = |s: &str| shlex_split(s).unwrap();
        assert_eq!(ok("pass show borg"), ["pass", "show", "borg"]);
        assert_eq!(ok("  a\t b  "), ["a", "b"]);
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok("'' x"), ["", "x"]);
        assert_eq!(ok(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(ok(r#""a\"b\\c\$d""#), [r#"a"b\c\$d"#]);
        assert_eq!(ok(r"'a\b'"), [r"a\b"]);
        assert_eq!(ok(r"a\ b \'c"), ["a b", "'c"]);
        assert_eq!(ok("a#b # c"), ["a#b", "#", "c"]);
        assert_eq!(shlex_split("'abc"), Err(ShlexError::NoClosingQuotation));
        assert_eq!(shlex_split("\"abc"), Err(ShlexError::NoClosingQuotation));
        assert_eq!(shlex_split("abc\\"), Err(ShlexError::NoEscapedCharacter));
    }
}
