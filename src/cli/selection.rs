//! Archive selection options several commands share, with borg's names and rules.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use clap::Args;

use proxborg::archive::patterns::PatternMatcher;
use proxborg::archive::prune;
use proxborg::archive::read::Selector;
use proxborg::format::objects::ManifestArchive;
use proxborg::format::timefmt;
use proxborg::placeholders::Placeholders;

/// A command-line value with its place among the pattern options: borg applies
/// `--exclude`, `--exclude-from`, `--pattern` and `--patterns-from` as one list in
/// command-line order, and the first pattern that matches decides.
#[derive(Clone, Debug)]
pub struct InOrder<T> {
    seq: usize,
    pub value: T,
}

/// Places handed out so far (clap parses values in command-line order).
static SEQ: AtomicUsize = AtomicUsize::new(0);

impl<T> InOrder<T> {
    /// `value` placed after everything parsed so far.
    pub fn next(value: T) -> Self {
        InOrder {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            value,
        }
    }
}

/// clap's value parser for options whose order matters.
pub fn in_order<T: From<String>>(s: &str) -> Result<InOrder<T>, std::convert::Infallible> {
    Ok(InOrder::next(T::from(s.to_string())))
}

/// The values of `lists` in command-line order.
pub fn merged<T: Clone>(lists: &[&[InOrder<T>]]) -> Vec<T> {
    let mut all: Vec<&InOrder<T>> = lists.iter().flat_map(|l| l.iter()).collect();
    all.sort_by_key(|o| o.seq);
    all.into_iter().map(|o| o.value.clone()).collect()
}

/// borg's pattern options, shared by `create`, `backup`, `extract`, `export-tar`, ...
#[derive(Args, Debug, Clone, Default)]
pub struct PatternArgs {
    /// Exclude paths matching PATTERN
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN", value_parser = in_order::<String>)]
    pub exclude: Vec<InOrder<String>>,
    /// Read exclude patterns from EXCLUDEFILE, one per line
    #[arg(long, value_name = "EXCLUDEFILE", value_parser = in_order::<PathBuf>)]
    pub exclude_from: Vec<InOrder<PathBuf>>,
    /// Include/exclude paths matching PATTERN (+, -, ! prefixes; R adds a path to back up)
    #[arg(long, value_name = "PATTERN", value_parser = in_order::<String>)]
    pub pattern: Vec<InOrder<String>>,
    /// Read include/exclude patterns from PATTERNFILE, one per line
    #[arg(long, value_name = "PATTERNFILE", value_parser = in_order::<PathBuf>)]
    pub patterns_from: Vec<InOrder<PathBuf>>,
}

/// One pattern option as given.
enum PatternOpt<'a> {
    Exclude(&'a str),
    ExcludeFrom(&'a PathBuf),
    Pattern(&'a str),
    PatternsFrom(&'a PathBuf),
}

impl PatternArgs {
    /// Adds every pattern option to `m` in command-line order; returns the paths of `R`
    /// lines, placed where their option stood (borg adds them to the paths given).
    pub fn apply(&self, m: &mut PatternMatcher) -> Result<Vec<InOrder<PathBuf>>> {
        let mut opts: Vec<(usize, PatternOpt)> = Vec::new();
        opts.extend(
            self.exclude
                .iter()
                .map(|o| (o.seq, PatternOpt::Exclude(&o.value))),
        );
        opts.extend(
            self.exclude_from
                .iter()
                .map(|o| (o.seq, PatternOpt::ExcludeFrom(&o.value))),
        );
        opts.extend(
            self.pattern
                .iter()
                .map(|o| (o.seq, PatternOpt::Pattern(&o.value))),
        );
        opts.extend(
            self.patterns_from
                .iter()
                .map(|o| (o.seq, PatternOpt::PatternsFrom(&o.value))),
        );
        opts.sort_by_key(|(seq, _)| *seq);
        let read = |f: &PathBuf, opt: &str| {
            std::fs::read_to_string(f).with_context(|| format!("{opt} {}", f.display()))
        };
        let mut roots = Vec::new();
        for (seq, o) in opts {
            let at = |p: PathBuf| InOrder { seq, value: p };
            match o {
                PatternOpt::Exclude(e) => m
                    .add_exclude(e)
                    .with_context(|| format!("--exclude {e:?}"))?,
                PatternOpt::ExcludeFrom(f) => m
                    .add_exclude_from(&read(f, "--exclude-from")?)
                    .with_context(|| format!("--exclude-from {}", f.display()))?,
                PatternOpt::Pattern(p) => roots.extend(
                    m.add_pattern_line(p)
                        .with_context(|| format!("--pattern {p:?}"))?
                        .map(at),
                ),
                PatternOpt::PatternsFrom(f) => roots.extend(
                    m.add_patterns_from(&read(f, "--patterns-from")?)
                        .with_context(|| format!("--patterns-from {}", f.display()))?
                        .into_iter()
                        .map(at),
                ),
            }
        }
        Ok(roots)
    }

    /// borg's `build_matcher(args.patterns, args.paths)` for reading an archive, with the
    /// strip count: `R` lines add to the include paths, as in borg.
    pub fn selector(&self, paths: &[String], strip: usize) -> Result<Selector> {
        let mut m = PatternMatcher::new(true);
        let roots = self.apply(&mut m)?;
        let mut paths = paths.to_vec();
        paths.extend(roots.iter().map(|r| r.value.to_string_lossy().into_owned()));
        Ok(Selector::new(m, &paths, strip)?)
    }
}

/// borg's `-P PREFIX` / `-a GLOB`.
#[derive(Args, Debug, Default, Clone)]
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
#[derive(Args, Debug, Default, Clone)]
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

/// borg's archive filters for `list`, `info` and `delete`: glob, sort keys, first/last.
#[derive(Args, Debug, Default, Clone)]
pub struct ArchiveListArgs {
    #[command(flatten)]
    pub glob: GlobArgs,
    #[command(flatten)]
    pub range: FirstLastArgs,
    /// Comma-separated sort keys: timestamp (the default), archive (or name), id
    #[arg(long, value_name = "KEYS")]
    pub sort_by: Option<String>,
}

impl ArchiveListArgs {
    /// Whether any option narrows or reorders the list.
    pub fn is_set(&self) -> bool {
        self.glob.is_set() || self.range.is_set()
    }

    /// An error when an archive was named as well (borg's `list_considering`).
    pub fn check_unnamed(&self, archive: Option<&str>) -> Result<()> {
        if archive.is_some() && self.is_set() {
            anyhow::bail!(
                "archive filters (-a, -P, --first, --last) cannot be used with an archive name"
            );
        }
        Ok(())
    }

    /// The names [`ArchiveListArgs::select`] picks.
    pub fn names(
        &self,
        archives: &std::collections::BTreeMap<Vec<u8>, ManifestArchive>,
        consider_checkpoints: bool,
    ) -> Result<Vec<String>> {
        Ok(self
            .select(archives, consider_checkpoints)?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// borg's `Archives.list`: names matching the glob, checkpoints dropped unless
    /// considered, a stable sort by each key from the last to the first, then first/last.
    pub fn select<'a>(
        &self,
        archives: &'a std::collections::BTreeMap<Vec<u8>, ManifestArchive>,
        consider_checkpoints: bool,
    ) -> Result<Vec<(String, &'a ManifestArchive)>> {
        let glob = self.glob.glob()?.unwrap_or_else(|| "*".into());
        let re = prune::glob_regex(&glob, r"\z")?;
        let mut v: Vec<(String, &ManifestArchive)> = archives
            .iter()
            .map(|(n, a)| (String::from_utf8_lossy(n).into_owned(), a))
            .filter(|(n, _)| re.is_match(n))
            .filter(|(n, _)| consider_checkpoints || !n.contains(".checkpoint"))
            .collect();
        let keys = self.sort_by.as_deref().unwrap_or("timestamp");
        for key in keys.split(',').rev() {
            match key.trim() {
                "timestamp" => v.sort_by_key(|(_, a)| timefmt::parse(&a.time).unwrap_or_default()),
                "archive" | "name" => v.sort_by(|x, y| x.0.cmp(&y.0)),
                "id" => v.sort_by_key(|(_, a)| a.id),
                k => anyhow::bail!(
                    "--sort-by {keys:?}: invalid key {k:?} (valid: timestamp, archive, name, id)"
                ),
            }
        }
        prune::keep_first_last(&mut v, self.range.first, self.range.last);
        Ok(v)
    }
}
