//! `init` (borg's `init`) and `demo`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{Common, Outcome};
use proxborg::format::crypto::{KeyMode, KeyStorage};
use proxborg::location::Repo;
use proxborg::repo::local::{CreateOptions, LocalRepository};
use proxborg::repo::remote::RemoteRepository;
use proxborg::repo::Repository;
use proxborg::session::Session;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Encryption mode: none, authenticated, authenticated-blake2, repokey, keyfile, repokey-blake2, keyfile-blake2
    #[arg(short = 'e', long = "encryption", value_name = "MODE")]
    pub encryption: KeyMode,
    /// Create an append-only repository
    #[arg(long)]
    pub append_only: bool,
    /// Set a storage quota (e.g. 500G)
    #[arg(long, value_name = "QUOTA", value_parser = parse_file_size)]
    pub storage_quota: Option<u64>,
    /// Create missing parent directories of the repository
    #[arg(long)]
    pub make_parent_dirs: bool,
    /// Repository to create (default: $BORG_REPO)
    pub repository: Option<String>,
}

/// borg's `parse_file_size`: a number with an optional decimal suffix K M G T P E Z Y.
pub fn parse_file_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let p = match c.to_ascii_uppercase() {
                'K' => 1,
                'M' => 2,
                'G' => 3,
                'T' => 4,
                'P' => 5,
                'E' => 6,
                _ => {
                    return Err(format!(
                        "invalid size suffix in {s:?} (use K, M, G, T, P or E)"
                    ))
                }
            };
            (&s[..s.len() - 1], 1000u64.pow(p))
        }
        _ => (s, 1),
    };
    let v: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    if v < 0.0 {
        return Err(format!("invalid size {s:?}"));
    }
    Ok((v * mult as f64) as u64)
}

pub fn init_repo(repo: &Repo, args: &InitArgs) -> Result<(Session, Option<PathBuf>)> {
    let r: Box<dyn Repository> = match repo {
        Repo::Local(p) => Box::new(LocalRepository::create(
            p,
            CreateOptions {
                append_only: args.append_only,
                storage_quota: args.storage_quota,
                make_parent_dirs: args.make_parent_dirs,
            },
        )?),
        Repo::Ssh { .. } => {
            let mut o = super::remote_options(super::common_remote(), true, 1.0);
            o.create = true;
            o.append_only = args.append_only;
            o.make_parent_dirs = args.make_parent_dirs;
            o.storage_quota = args.storage_quota;
            Box::new(RemoteRepository::open(repo, &o)?)
        }
    };
    let env = super::env;
    Ok(Session::init(&env, r, repo.clone(), args.encryption)?)
}

pub fn run(_common: &Common, args: InitArgs) -> Result<Outcome> {
    let loc = super::parse_location(args.repository.as_deref())?;
    if loc.archive.is_some() {
        bail!("init takes a repository, not an archive");
    }
    let (session, keyfile) = init_repo(&loc.repo, &args)?;
    match args.encryption.key_storage() {
        KeyStorage::Repository => eprintln!(
            "By default repositories initialized with this version will produce security\n\
             errors if written to with an older version (up to and including Borg 1.0.8).\n\n\
             IMPORTANT: you will need both KEY AND PASSPHRASE to access this repo!\n\
             The key is stored in the repository config ({}); back it up\n\
             (e.g. `borg key export`) and keep your passphrase safe.",
            session.location.canonical()
        ),
        KeyStorage::KeyFile => {
            if let Some(k) = keyfile {
                eprintln!(
                    "IMPORTANT: you will need both KEY AND PASSPHRASE to access this repo!\n\
                     The key is stored in {} — back it up separately.",
                    k.display()
                );
            }
        }
        KeyStorage::None => {}
    }
    Ok(Outcome::Success)
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// What to back up (default: this source tree's `src` directory, else the current directory)
    pub path: Option<PathBuf>,
}

/// Initialises `<demo dir>/repo` (unencrypted) if needed and backs up a tree into it twice,
/// showing the second run's files-cache speed-up.
pub fn run_demo(common: &Common, args: DemoArgs) -> Result<Outcome> {
    let dir = super::demo_dir();
    let repo_path = dir.join("repo");
    let path = args.path.unwrap_or_else(|| {
        let src = PathBuf::from("src");
        if src.is_dir() {
            src
        } else {
            PathBuf::from(".")
        }
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::env::set_var("BORG_BASE_DIR", dir.join("home"));
    let repo = Repo::Local(repo_path.clone());
    if !repo_path.join("config").exists() {
        println!(
            "demo: initialising an unencrypted repository at {}",
            repo_path.display()
        );
        init_repo(
            &repo,
            &InitArgs {
                encryption: KeyMode::Plaintext,
                append_only: false,
                storage_quota: None,
                make_parent_dirs: true,
                repository: None,
            },
        )?;
    }
    for run in 1..=2 {
        let name = format!("demo-{{now:%Y-%m-%dT%H:%M:%S}}-{run}");
        println!(
            "demo: backing up {} into {}::{name}",
            path.display(),
            repo_path.display()
        );
        let args = super::cmd_create::CreateArgs::for_demo(
            format!("{}::{name}", repo_path.display()),
            path.clone(),
        );
        let o = super::cmd_create::run(common, args)?;
        if o != Outcome::Success {
            return Ok(o);
        }
    }
    println!("demo: archives now in {}:", repo_path.display());
    super::cmd_list::run_list(
        common,
        super::cmd_list::ListArgs {
            short: false,
            json: false,
            json_lines: false,
            format: None,
            archives: Default::default(),
            consider_checkpoints: false,
            patterns: Default::default(),
            location: Some(repo_path.display().to_string()),
            paths: vec![],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sizes() {
        assert_eq!(parse_file_size("10G").unwrap(), 10_000_000_000);
        assert_eq!(parse_file_size("1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_file_size("123").unwrap(), 123);
        assert!(parse_file_size("1X").is_err());
        assert!(parse_file_size("abc").is_err());
    }
}
