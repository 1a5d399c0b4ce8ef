//! Archive selection options several commands share, with borg's names and rules.

use anyhow::Result;
use clap::Args;

use proxborg::placeholders::Placeholders;

/// borg's `-P PREFIX` / `-a GLOB`.
#[derive(Args, Debug, Default)]
pub struct GlobArgs {
    /// Only consider archive names starting with this prefix (deprecated; use -a 'PREFIX*')
    #[arg(short = 'P', long, conflicts_with = "glob_archives")]
    pub prefix: Option<String>,
    /// Only consider archive names matching the glob (placeholders like {hostname} work)
    #[arg(short = 'a', long, value_name = "GLOB")]
    pub glob_archives: Option<String>,
}

impl GlobArgs {
    pub fn is_set(&self) -> bool {
        self.prefix.is_some() || self.glob_archives.is_some()
    }

    /// The glob selected, placeholders expanded (a prefix `P` is the glob `P*`).
    pub fn glob(&self) -> Result<Option<String>> {
        let ph = Placeholders::current();
        Ok(match (&self.prefix, &self.glob_archives) {
            (Some(p), _) => Some(format!("{}*", ph.expand(p)?)),
            (None, Some(g)) => Some(ph.expand(g)?),
            (None, None) => None,
        })
    }
}

/// borg's `--first N` / `--last N` (by archive time, after the glob).
#[derive(Args, Debug, Default)]
pub struct FirstLastArgs {
    /// Consider the first N archives (by time) after the glob
    #[arg(long, value_name = "N")]
    pub first: Option<usize>,
    /// Consider the last N archives (by time) after the glob
    #[arg(long, value_name = "N", conflicts_with = "first")]
    pub last: Option<usize>,
}

impl FirstLastArgs {
    pub fn is_set(&self) -> bool {
        self.first.is_some() || self.last.is_some()
    }
}
