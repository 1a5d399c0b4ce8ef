//! Where borg keeps its per-user state, resolved exactly as borg 1.4 does so that a
//! user who switches between borg and us finds keys, security data and caches in the
//! places they expect (`BORG_BASE_DIR`, `BORG_CONFIG_DIR`, `BORG_KEYS_DIR`,
//! `BORG_SECURITY_DIR`, `BORG_CACHE_DIR`, XDG variables, `$HOME`).

use std::path::PathBuf;

/// An environment lookup, so resolution can be tested without touching process env.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment (empty values count as unset where borg tests truthiness).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn nonempty(env: Env, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// borg's `get_base_dir`: `BORG_BASE_DIR`, else `HOME`, else the passwd home.
pub fn base_dir(env: Env) -> PathBuf {
    if let Some(b) = nonempty(env, "BORG_BASE_DIR") {
        return PathBuf::from(b);
    }
    if let Some(h) = nonempty(env, "HOME") {
        return PathBuf::from(h);
    }
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// borg's `get_config_dir`.
pub fn config_dir(env: Env) -> PathBuf {
    if let Some(d) = env("BORG_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    let mut home = base_dir(env).join(".config");
    if nonempty(env, "BORG_BASE_DIR").is_none() {
        if let Some(x) = env("XDG_CONFIG_HOME") {
            home = PathBuf::from(x);
        }
    }
    home.join("borg")
}

/// borg's `get_cache_dir`.
pub fn cache_dir(env: Env) -> PathBuf {
    if let Some(d) = env("BORG_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let mut home = base_dir(env).join(".cache");
    if nonempty(env, "BORG_BASE_DIR").is_none() {
        if let Some(x) = env("XDG_CACHE_HOME") {
            home = PathBuf::from(x);
        }
    }
    home.join("borg")
}

/// borg's `get_keys_dir`.
pub fn keys_dir(env: Env) -> PathBuf {
    env("BORG_KEYS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| config_dir(env).join("keys"))
}

/// borg's `get_security_dir(repository_id)`.
pub fn security_dir(env: Env, repo_id_hex: &str) -> PathBuf {
    env("BORG_SECURITY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| config_dir(env).join("security"))
        .join(repo_id_hex)
}

/// `BORG_KEY_FILE`, made absolute like borg does.
pub fn key_file_override(env: Env) -> Option<PathBuf> {
    let p = PathBuf::from(nonempty(env, "BORG_KEY_FILE")?);
    Some(if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p)
    })
}

/// The cache directory's tag, so backup tools (and borg's `--exclude-caches`) skip it.
pub const CACHE_TAG_CONTENTS: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by Borg.\n# For information about cache directory tags, see:\n#       http://www.bford.info/cachedir/spec.html\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn base_dir_wins_over_xdg() {
        let e = env_of(&[
            ("BORG_BASE_DIR", "/b"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(config_dir(&e), PathBuf::from("/b/.config/borg"));
        assert_eq!(cache_dir(&e), PathBuf::from("/b/.cache/borg"));
        assert_eq!(keys_dir(&e), PathBuf::from("/b/.config/borg/keys"));
        assert_eq!(
            security_dir(&e, "ab"),
            PathBuf::from("/b/.config/borg/security/ab")
        );
    }

    #[test]
    fn xdg_and_explicit_dirs() {
        let e = env_of(&[
            ("XDG_CONFIG_HOME", "/x"),
            ("XDG_CACHE_HOME", "/c"),
            ("HOME", "/h"),
        ]);
        assert_eq!(config_dir(&e), PathBuf::from("/x/borg"));
        assert_eq!(cache_dir(&e), PathBuf::from("/c/borg"));
        let e = env_of(&[
            ("HOME", "/h"),
            ("BORG_KEYS_DIR", "/k"),
            ("BORG_SECURITY_DIR", "/s"),
            ("BORG_CACHE_DIR", "/cc"),
        ]);
        assert_eq!(keys_dir(&e), PathBuf::from("/k"));
        assert_eq!(security_dir(&e, "id"), PathBuf::from("/s/id"));
        assert_eq!(cache_dir(&e), PathBuf::from("/cc"));
        assert_eq!(config_dir(&e), PathBuf::from("/h/.config/borg"));
    }
}
