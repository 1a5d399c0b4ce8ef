//! borg's placeholders in archive names, comments and globs (`{hostname}`, `{now:%Y-%m-%d}`,
//! …), expanded with Python `str.format` rules: `{{`/`}}` escape braces, an unknown
//! placeholder is an error naming it.

use chrono::{DateTime, Local, Utc};

/// Values the placeholders expand to; captured once so one run uses one `{now}`.
#[derive(Clone, Debug)]
pub struct Placeholders {
    pub hostname: String,
    pub fqdn: String,
    pub user: String,
    pub pid: u32,
    pub now: DateTime<Utc>,
}

/// The borg version whose formats we write; `{borgversion}` etc. expand to it.
pub const BORG_COMPAT_VERSION: (u32, u32, u32) = (1, 4, 5);

#[derive(Debug, thiserror::Error)]
pub enum PlaceholderError {
    #[error("invalid placeholder {{{0}}} in {1:?}")]
    Unknown(String, String),
    #[error("unbalanced braces in {0:?}")]
    Unbalanced(String),
}

impl Placeholders {
    /// Captures the current host, user, pid and time (`BORG_HOSTNAME`/`BORG_USERNAME` honoured).
    pub fn current() -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let fqdn = fqdn_of(&host);
        let hostname = std::env::var("BORG_HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| host.split('.').next().unwrap_or(&host).to_string());
        let user = std::env::var("BORG_USERNAME")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(os_username);
        Placeholders {
            hostname,
            fqdn,
            user,
            pid: std::process::id(),
            now: Utc::now(),
        }
    }

    fn value(&self, key: &str, spec: Option<&str>) -> Option<String> {
        let local: DateTime<Local> = self.now.with_timezone(&Local);
        Some(match key {
            "hostname" => self.hostname.clone(),
            "fqdn" => self.fqdn.clone(),
            "reverse-fqdn" => self.fqdn.rsplit('.').collect::<Vec<_>>().join("."),
            "user" => self.user.clone(),
            "pid" => self.pid.to_string(),
            "now" => local
                .format(spec.unwrap_or("%Y-%m-%dT%H:%M:%S"))
                .to_string(),
            "utcnow" => self
                .now
                .format(spec.unwrap_or("%Y-%m-%dT%H:%M:%S"))
                .to_string(),
            "unixtime" => self.now.timestamp().to_string(),
            "uuid4" => uuid4(),
            "borgversion" => {
                let (a, b, c) = BORG_COMPAT_VERSION;
                format!("{a}.{b}.{c}")
            }
            "borgmajor" => BORG_COMPAT_VERSION.0.to_string(),
            "borgminor" => format!("{}.{}", BORG_COMPAT_VERSION.0, BORG_COMPAT_VERSION.1),
            "borgpatch" => {
                let (a, b, c) = BORG_COMPAT_VERSION;
                format!("{a}.{b}.{c}")
            }
            _ => return None,
        })
    }

    /// Expands every placeholder in `text`.
    pub fn expand(&self, text: &str) -> Result<String, PlaceholderError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let c = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.starts_with(c as char) {
                out.push(c as char);
                rest = &after[1..];
                continue;
            }
            if c == b'}' {
                return Err(PlaceholderError::Unbalanced(text.into()));
            }
            let end = after
                .find('}')
                .ok_or_else(|| PlaceholderError::Unbalanced(text.into()))?;
            let field = &after[..end];
            let (key, spec) = match field.split_once(':') {
                Some((k, s)) => (k, Some(s)),
                None => (field, None),
            };
            let v = self
                .value(key, spec)
                .ok_or_else(|| PlaceholderError::Unknown(key.into(), text.into()))?;
            out.push_str(&v);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The login name of the effective user (borg's `getosusername`).
pub fn os_username() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::geteuid().to_string())
}

/// Fully qualified name of `host` as Python's `socket.getfqdn` finds it (first name
/// with a dot among the resolver's canonical name and aliases, else `host`).
pub fn fqdn_of(host: &str) -> String {
    if host.contains('.') {
        return host.to_string();
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for line in hosts.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut f = line.split_whitespace();
            let _addr = f.next();
            let names: Vec<&str> = f.collect();
            if names.contains(&host) {
                if let Some(n) = names.iter().find(|n| n.contains('.')) {
                    return n.to_string();
                }
            }
        }
    }
    host.to_string()
}

fn uuid4() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("system randomness is available");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ph() -> Placeholders {
        Placeholders {
            hostname: "pve1".into(),
            fqdn: "pve1.example.org".into(),
            user: "root".into(),
            pid: 42,
            now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        }
    }

    #[test]
    fn expands_like_python_format() {
        let p = ph();
        assert_eq!(p.expand("{hostname}-{user}-{pid}").unwrap(), "pve1-root-42");
        assert_eq!(p.expand("{utcnow}").unwrap(), "2026-01-02T03:04:05");
        assert_eq!(p.expand("{utcnow:%Y_%m_%d}").unwrap(), "2026_01_02");
        assert_eq!(p.expand("{reverse-fqdn}").unwrap(), "org.example.pve1");
        assert_eq!(p.expand("a{{b}}c").unwrap(), "a{b}c");
        assert_eq!(p.expand("{unixtime}").unwrap(), "1767323045");
    }

    #[test]
    fn errors_name_the_placeholder() {
        let e = ph().expand("x-{nope}").unwrap_err().to_string();
        assert!(e.contains("{nope}"), "{e}");
        assert!(ph().expand("x-{now").is_err());
        assert!(ph().expand("x}").is_err());
    }
}
