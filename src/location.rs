//! Repository locations exactly as borg parses them: local paths, `file://`,
//! `ssh://user@host:port/path`, scp-style `user@host:path`, IPv6 `[::1]` hosts, the
//! `::ARCHIVE` suffix, and `BORG_REPO` for a location given as `::ARCHIVE`.

use std::path::{Path, PathBuf};

/// Where a repository lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repo {
    /// A local directory (absolute, normalised).
    Local(PathBuf),
    /// A repository behind `borg serve` over ssh.
    Ssh {
        user: Option<String>,
        /// Host as written (IPv6 keeps its brackets).
        host: String,
        port: Option<u16>,
        /// The path as sent to `borg serve` (`/abs`, `/./rel`, `/~/home-rel`, `~user/x`).
        path: String,
    },
}

/// A repository plus an optional archive name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub repo: Repo,
    pub archive: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("invalid location format: {0:?}")]
    Invalid(String),
    #[error("no repository given and BORG_REPO is not set (location {0:?})")]
    NoRepo(String),
}

impl Repo {
    /// borg's `Location.canonical_path()`: stored in the security dir's `location`.
    pub fn canonical(&self) -> String {
        match self {
            Repo::Local(p) => p.to_string_lossy().into_owned(),
            Repo::Ssh {
                user,
                host,
                port,
                path,
            } => {
                let path = if path.starts_with('~') {
                    format!("/{path}")
                } else if !path.starts_with('/') {
                    format!("/./{path}")
                } else {
                    path.clone()
                };
                format!(
                    "ssh://{}{}{}{}",
                    user.as_ref().map(|u| format!("{u}@")).unwrap_or_default(),
                    host,
                    port.map(|p| format!(":{p}")).unwrap_or_default(),
                    path
                )
            }
        }
    }

    /// Host without IPv6 brackets (for ssh's command line), None for local repos.
    pub fn host(&self) -> Option<&str> {
        match self {
            Repo::Local(_) => None,
            Repo::Ssh { host, .. } => Some(host.trim_start_matches('[').trim_end_matches(']')),
        }
    }

    /// The local path, if this is a local repository.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Repo::Local(p) => Some(p),
            Repo::Ssh { .. } => None,
        }
    }

    /// The keyfile base name borg picks for this repository (`Location.to_key_filename`).
    pub fn key_filename(&self) -> String {
        match self {
            Repo::Local(p) => crate::format::keyblob::keyfile_name(None, &p.to_string_lossy()),
            Repo::Ssh { host, path, .. } => crate::format::keyblob::keyfile_name(Some(host), path),
        }
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Python's `os.path.normpath` for POSIX paths (keeps a leading `//`).
pub fn normpath(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let initial = if p.starts_with("//") && !p.starts_with("///") {
        2
    } else if p.starts_with('/') {
        1
    } else {
        0
    };
    let mut parts: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if (initial == 0 && parts.is_empty()) || parts.last() == Some(&"..") {
                    parts.push("..");
                } else if !parts.is_empty() {
                    parts.pop();
                }
            }
            c => parts.push(c),
        }
    }
    let body = parts.join("/");
    let s = format!("{}{}", "/".repeat(initial), body);
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

fn normpath_special(p: &str) -> String {
    let relative = p.starts_with("/./");
    let n = normpath(p);
    if relative {
        format!("/.{n}")
    } else {
        n
    }
}

/// Splits `text` at the first `::` that is not inside an IPv6 `[...]` host.
fn split_archive(text: &str) -> Result<(&str, Option<String>), LocationError> {
    let skip = if let Some(close) = text.find(']') {
        if text[..close].contains('[') {
            close
        } else {
            0
        }
    } else {
        0
    };
    match text[skip..].find("::") {
        Some(i) => {
            let (repo, arch) = (&text[..skip + i], &text[skip + i + 2..]);
            if arch.is_empty() || arch.contains('/') {
                return Err(LocationError::Invalid(text.into()));
            }
            Ok((repo, Some(arch.to_string())))
        }
        None => Ok((text, None)),
    }
}

fn parse_host(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let h = &s[..=end];
        if h[1..h.len() - 1]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            && h.len() > 2
        {
            return Some((h, &s[end + 1..]));
        }
        return None;
    }
    let end = s.find([':', '/']).unwrap_or(s.len());
    if end == 0 || s[..end].ends_with(']') {
        return None;
    }
    Some((&s[..end], &s[end..]))
}

fn parse_user(s: &str) -> (Option<String>, &str) {
    if let Some(at) = s.find('@') {
        let u = &s[..at];
        if !u.is_empty() && !u.contains([':', '/']) {
            return (Some(u.to_string()), &s[at + 1..]);
        }
    }
    (None, s)
}

fn parse_repo(text: &str, cwd: &Path) -> Option<Repo> {
    if let Some(rest) = text.strip_prefix("ssh://") {
        let (user, rest) = parse_user(rest);
        let (host, rest) = parse_host(rest)?;
        let (port, rest) = if let Some(r) = rest.strip_prefix(':') {
            let end = r.find('/').unwrap_or(r.len());
            (Some(r[..end].parse::<u16>().ok()?), &r[end..])
        } else {
            (None, rest)
        };
        if !rest.starts_with('/') || rest.len() < 2 {
            return None;
        }
        return Some(Repo::Ssh {
            user,
            host: host.to_string(),
            port,
            path: normpath_special(rest),
        });
    }
    if let Some(rest) = text.strip_prefix("file://") {
        if !rest.contains('/') {
            return None;
        }
        return Some(Repo::Local(PathBuf::from(normpath(&absolutize(rest, cwd)))));
    }
    // scp style: [user@]host:path, else a local path
    let (user, after_user) = parse_user(text);
    if let Some((host, rest)) = parse_host(after_user) {
        if let Some(path) = rest.strip_prefix(':') {
            if !path.is_empty()
                && !path.starts_with(':')
                && !path.starts_with("//")
                && !path.starts_with("ssh://")
            {
                return Some(Repo::Ssh {
                    user,
                    host: host.to_string(),
                    port: None,
                    path: normpath_special(path),
                });
            }
        }
    }
    if text.is_empty() || text.starts_with(':') || text.starts_with("//") {
        return None;
    }
    Some(Repo::Local(PathBuf::from(normpath(&absolutize(text, cwd)))))
}

fn absolutize(p: &str, cwd: &Path) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{}", cwd.to_string_lossy(), p)
    }
}

impl Location {
    /// Parses a location, taking the repository from `borg_repo` (the `BORG_REPO`
    /// value) when `text` is empty, `::` or `::ARCHIVE`.
    pub fn parse(
        text: &str,
        borg_repo: Option<&str>,
        cwd: &Path,
    ) -> Result<Location, LocationError> {
        if text.is_empty() || text.starts_with("::") {
            let archive = match text.strip_prefix("::") {
                Some("") | None => None,
                Some(a) if a.contains('/') => return Err(LocationError::Invalid(text.into())),
                Some(a) => Some(a.to_string()),
            };
            let repo_text = borg_repo
                .filter(|r| !r.is_empty())
                .ok_or_else(|| LocationError::NoRepo(text.into()))?;
            let mut loc = Location::parse(repo_text, None, cwd)?;
            if archive.is_some() {
                loc.archive = archive;
            }
            return Ok(loc);
        }
        let (repo_text, archive) = split_archive(text)?;
        let repo = parse_repo(repo_text, cwd).ok_or_else(|| LocationError::Invalid(text.into()))?;
        Ok(Location { repo, archive })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Location {
        Location::parse(t, Some("/env/repo"), Path::new("/cwd")).unwrap()
    }

    #[test]
    fn local_forms() {
        assert_eq!(p("/srv/repo").repo, Repo::Local("/srv/repo".into()));
        assert_eq!(p("repo/").repo, Repo::Local("/cwd/repo".into()));
        assert_eq!(p("file:///a/b/../c::x").repo, Repo::Local("/a/c".into()));
        assert_eq!(p("/srv/repo::arch-1").archive.as_deref(), Some("arch-1"));
        assert_eq!(p("::a").repo, Repo::Local("/env/repo".into()));
        assert_eq!(p("::a").archive.as_deref(), Some("a"));
        assert_eq!(p("").repo, Repo::Local("/env/repo".into()));
        assert!(Location::parse("::a", None, Path::new("/")).is_err());
    }

    #[test]
    fn ssh_forms() {
        let l = p("ssh://bob@host.example:2222/srv/repo::a");
        assert_eq!(
            l.repo,
            Repo::Ssh {
                user: Some("bob".into()),
                host: "host.example".into(),
                port: Some(2222),
                path: "/srv/repo".into()
            }
        );
        assert_eq!(l.repo.canonical(), "ssh://bob@host.example:2222/srv/repo");
        let l = p("bob@host:rel/repo");
        assert_eq!(l.repo.canonical(), "ssh://bob@host/./rel/repo");
        let l = p("host:~/repo");
        assert_eq!(l.repo.canonical(), "ssh://host/~/repo");
        let l = p("ssh://[::1]:22/./repo::x");
        assert_eq!(l.repo.host(), Some("::1"));
        assert_eq!(l.repo.canonical(), "ssh://[::1]:22/./repo");
        assert_eq!(l.archive.as_deref(), Some("x"));
        let l = p("ssh://host/~/r");
        assert_eq!(l.repo.canonical(), "ssh://host/~/r");
    }

    #[test]
    fn key_filenames_like_borg() {
        assert_eq!(p("/srv/ex/repo").repo.key_filename(), "srv_ex_repo");
        assert_eq!(
            p("ssh://u@my-host:22/srv/r").repo.key_filename(),
            "my_host__srv_r"
        );
    }

    #[test]
    fn normpath_like_python() {
        assert_eq!(normpath("/a//b/./c/.."), "/a/b");
        assert_eq!(normpath("a/../.."), "..");
        assert_eq!(normpath("//x"), "//x");
        assert_eq!(normpath("/.."), "/");
    }
}
