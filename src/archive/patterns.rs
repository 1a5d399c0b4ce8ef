//! borg's include/exclude patterns (`patterns.py`, `shellpattern.py`, `borg help patterns`),
//! reproduced so that `--exclude`, `--exclude-from`, `--pattern` and `--patterns-from`
//! select exactly the files borg 1.2/1.4 would.
//!
//! Semantics worth knowing:
//! * paths are matched with leading `/` removed;
//! * `fm:` (fnmatch) and `sh:` (shell) patterns match the whole path or any leading run of
//!   whole components (`foo` matches `foo/bar`); a trailing `/` matches only what is *inside*
//!   a directory; `*` crosses `/` in `fm:` but not in `sh:`, where `**/` spans directories;
//! * `re:` is an unanchored search; `pp:` a path prefix at component boundaries;
//!   `pf:` an exact path;
//! * `pf:` patterns are looked up first, whatever their position (borg keeps them in a
//!   dictionary, a later `pf:` for the same path replacing the earlier); all other patterns
//!   are tried in order, first match wins;
//! * `--exclude` patterns default to `fm:` and never recurse into an excluded directory;
//!   `--pattern` lines default to `sh:`: `-` excludes but still descends, `!` does not descend.

mod pystr;
mod translate;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use regex::Regex;

pub use translate::{shell_to_regex, TranslateError};

/// Why a pattern or pattern-file line was rejected. borg rejects the same inputs.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("unknown pattern style {style:?} in {pattern:?}")]
    UnknownStyle { style: String, pattern: String },
    #[error("invalid glob {pattern:?}: {source}")]
    BadGlob {
        pattern: String,
        source: TranslateError,
    },
    #[error("invalid regular expression {pattern:?}: {source}")]
    BadRegex {
        pattern: String,
        source: Box<regex::Error>,
    },
    #[error("pattern/command line {line:?}: {reason}")]
    BadLine { line: String, reason: &'static str },
}

/// A pattern style, selected by a two-letter prefix such as `sh:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatternStyle {
    /// `fm:` — Python `fnmatch`; default for `--exclude`.
    Fnmatch,
    /// `sh:` — shell style with `**`; default for `--pattern` / `--patterns-from`.
    Shell,
    /// `re:` — regular expression, searched anywhere in the path.
    Regex,
    /// `pp:` — path prefix.
    PathPrefix,
    /// `pf:` — full path.
    PathFull,
}

impl PatternStyle {
    pub fn prefix(self) -> &'static str {
        match self {
            PatternStyle::Fnmatch => "fm",
            PatternStyle::Shell => "sh",
            PatternStyle::Regex => "re",
            PatternStyle::PathPrefix => "pp",
            PatternStyle::PathFull => "pf",
        }
    }

    pub fn from_prefix(prefix: &str) -> Option<Self> {
        Some(match prefix {
            "fm" => PatternStyle::Fnmatch,
            "sh" => PatternStyle::Shell,
            "re" => PatternStyle::Regex,
            "pp" => PatternStyle::PathPrefix,
            "pf" => PatternStyle::PathFull,
            _ => return None,
        })
    }
}

#[derive(Debug)]
enum Matcher {
    /// Exact normalised path (`pf:`).
    Full(String),
    /// Normalised prefix ending in `/`, compared with `path + "/"` (`pp:`).
    Prefix(String),
    /// Anchored regex applied to `path + "/"` (`fm:`, `sh:`).
    Glob(Regex),
    /// Unanchored search in `path` (`re:`).
    Search(Regex),
}

/// One compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    style: PatternStyle,
    original: String,
    matcher: Matcher,
}

impl Pattern {
    /// Compiles `pattern` (without style prefix) in the given style, normalising it like
    /// borg's pattern classes do.
    pub fn new(style: PatternStyle, pattern: &str) -> Result<Pattern, PatternError> {
        let bad_glob = |source| PatternError::BadGlob {
            pattern: pattern.to_string(),
            source,
        };
        let compile = |re: &str| {
            Regex::new(re).map_err(|e| PatternError::BadRegex {
                pattern: pattern.to_string(),
                source: Box::new(e),
            })
        };
        let matcher = match style {
            PatternStyle::PathFull => {
                Matcher::Full(pystr::normpath(pattern).trim_start_matches('/').to_string())
            }
            PatternStyle::PathPrefix => {
                let mut p = pystr::normpath(pattern).trim_end_matches('/').to_string();
                p.push('/');
                Matcher::Prefix(p.trim_start_matches('/').to_string())
            }
            PatternStyle::Fnmatch | PatternStyle::Shell => {
                let tail = if style == PatternStyle::Shell {
                    "/**/*"
                } else {
                    "/*"
                };
                let p = if pattern.ends_with('/') {
                    format!("{}{tail}/", pystr::normpath(pattern).trim_end_matches('/'))
                } else {
                    format!("{}{tail}", pystr::normpath(pattern))
                };
                let p = p.trim_start_matches('/');
                let re = if style == PatternStyle::Shell {
                    translate::shell_to_regex(p)
                } else {
                    translate::fnmatch_to_regex(p)
                }
                .map_err(bad_glob)?;
                Matcher::Glob(compile(&re)?)
            }
            PatternStyle::Regex => Matcher::Search(compile(&python_regex_to_rust(pattern))?),
        };
        Ok(Pattern {
            style,
            original: pattern.to_string(),
            matcher,
        })
    }

    /// Parses `xx:pattern` (any two alphanumerics before a colon select a style, unknown
    /// ones are an error) or a bare pattern in `default_style` (borg's `parse_pattern`).
    pub fn parse(text: &str, default_style: PatternStyle) -> Result<Pattern, PatternError> {
        let mut it = text.char_indices();
        if let (Some(_), Some(_), Some((colon_at, ':'))) = (it.next(), it.next(), it.next()) {
            let prefix = &text[..colon_at];
            if pystr::py_isalnum(prefix) {
                let style = PatternStyle::from_prefix(prefix).ok_or_else(|| {
                    PatternError::UnknownStyle {
                        style: prefix.to_string(),
                        pattern: text.to_string(),
                    }
                })?;
                return Pattern::new(style, &text[colon_at + 1..]);
            }
        }
        Pattern::new(default_style, text)
    }

    pub fn style(&self) -> PatternStyle {
        self.style
    }

    /// The pattern text as given (without style prefix).
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// Whether `path` (leading `/` already removed) matches.
    pub fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Full(p) => path == p,
            Matcher::Prefix(p) => with_sep(path).starts_with(p.as_str()),
            Matcher::Glob(re) => re.is_match(&with_sep(path)),
            Matcher::Search(re) => re.is_match(path),
        }
    }
}

fn with_sep(path: &str) -> String {
    let mut s = String::with_capacity(path.len() + 1);
    s.push_str(path);
    s.push('/');
    s
}

/// `re:` patterns are Python regular expressions; Rust's `regex` accepts the same syntax for
/// everything but look-around and back-references (which are rejected). Python's `\Z`
/// (end of text) is spelled `\z` in Rust.
fn python_regex_to_rust(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('Z') => out.push_str("\\z"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a pattern line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternAction {
    /// `+`: include.
    Include,
    /// `-`: exclude, but still descend into an excluded directory.
    Exclude,
    /// `!` and `--exclude`: exclude and do not descend.
    ExcludeNoRecurse,
}

impl PatternAction {
    /// Whether the walker still descends into a directory this action applied to.
    pub fn recurses_dir(self) -> bool {
        self != PatternAction::ExcludeNoRecurse
    }
}

/// The outcome of matching one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchResult {
    Include,
    Exclude,
    ExcludeNoRecurse,
    /// No pattern matched: the matcher's fallback applies, and directories are descended.
    NoMatch,
}

impl From<PatternAction> for MatchResult {
    fn from(a: PatternAction) -> Self {
        match a {
            PatternAction::Include => MatchResult::Include,
            PatternAction::Exclude => MatchResult::Exclude,
            PatternAction::ExcludeNoRecurse => MatchResult::ExcludeNoRecurse,
        }
    }
}

impl MatchResult {
    /// Whether to descend into the directory (borg's `matcher.recurse_dir`).
    pub fn recurse_dir(self) -> bool {
        self != MatchResult::ExcludeNoRecurse
    }
}

/// Include/exclude decision for one path: borg's `match()` value and `recurse_dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub included: bool,
    pub recurse_dir: bool,
}

/// An ordered set of patterns, as borg's `PatternMatcher`.
#[derive(Debug)]
pub struct PatternMatcher {
    full: HashMap<String, PatternAction>,
    items: Vec<(Pattern, PatternAction)>,
    fallback_include: bool,
}

impl PatternMatcher {
    /// `fallback_include` is the decision for paths no pattern matches (`borg create`: true).
    pub fn new(fallback_include: bool) -> Self {
        PatternMatcher {
            full: HashMap::new(),
            items: Vec::new(),
            fallback_include,
        }
    }

    pub fn fallback_include(&self) -> bool {
        self.fallback_include
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty() && self.items.is_empty()
    }

    /// Adds a compiled pattern with its action (in order; `pf:` into the full-path table).
    pub fn add(&mut self, pattern: Pattern, action: PatternAction) {
        match &pattern.matcher {
            Matcher::Full(p) => {
                self.full.insert(p.clone(), action);
            }
            _ => self.items.push((pattern, action)),
        }
    }

    /// `--exclude PATTERN`: default style `fm:`, excluded directories are not descended.
    pub fn add_exclude(&mut self, pattern: &str) -> Result<(), PatternError> {
        let p = Pattern::parse(pattern, PatternStyle::Fnmatch)?;
        self.add(p, PatternAction::ExcludeNoRecurse);
        Ok(())
    }

    /// `--exclude-from FILE` contents: one `--exclude` pattern per line; lines are stripped
    /// of surrounding whitespace, empty lines and `#` comment lines skipped.
    pub fn add_exclude_from(&mut self, text: &str) -> Result<(), PatternError> {
        for line in pystr::clean_lines(text) {
            self.add_exclude(line)?;
        }
        Ok(())
    }

    /// One `--pattern` option. Returns the path of an `R` (root) line. A `P` line is
    /// accepted but, as in borg, does not change the style of later `--pattern` options
    /// (each option starts again from `sh:`); use [`add_patterns_from`] for files.
    ///
    /// [`add_patterns_from`]: PatternMatcher::add_patterns_from
    pub fn add_pattern_line(&mut self, line: &str) -> Result<Option<PathBuf>, PatternError> {
        let mut style = PatternStyle::Shell;
        self.pattern_line(line, &mut style)
    }

    /// `--patterns-from FILE` contents: lines cleaned as in [`add_exclude_from`]; a `P`
    /// line sets the default style for the following lines of this file. Returns the
    /// paths of `R` lines, in order.
    ///
    /// [`add_exclude_from`]: PatternMatcher::add_exclude_from
    pub fn add_patterns_from(&mut self, text: &str) -> Result<Vec<PathBuf>, PatternError> {
        let mut style = PatternStyle::Shell;
        let mut roots = Vec::new();
        for line in pystr::clean_lines(text) {
            if let Some(root) = self.pattern_line(line, &mut style)? {
                roots.push(root);
            }
        }
        Ok(roots)
    }

    /// Include paths given on the command line (`borg extract ARCHIVE PATH...`): `pp:` by
    /// default; when any are given, everything else is excluded.
    pub fn add_include_paths<S: AsRef<str>>(&mut self, paths: &[S]) -> Result<(), PatternError> {
        for p in paths {
            let pat = Pattern::parse(p.as_ref(), PatternStyle::PathPrefix)?;
            self.add(pat, PatternAction::Include);
        }
        self.fallback_include = paths.is_empty();
        Ok(())
    }

    fn pattern_line(
        &mut self,
        line: &str,
        style: &mut PatternStyle,
    ) -> Result<Option<PathBuf>, PatternError> {
        let bad = |reason| PatternError::BadLine {
            line: line.to_string(),
            reason,
        };
        let mut chars = line.chars();
        let cmd = chars.next().ok_or_else(|| bad("must not be empty"))?;
        let rest = pystr::py_lstrip(chars.as_str());
        let action = match cmd {
            '-' => PatternAction::Exclude,
            '!' => PatternAction::ExcludeNoRecurse,
            '+' => PatternAction::Include,
            'R' | 'r' | 'P' | 'p' => {
                if rest.is_empty() {
                    return Err(bad("must have a value part"));
                }
                if matches!(cmd, 'R' | 'r') {
                    return Ok(Some(PathBuf::from(rest)));
                }
                *style =
                    PatternStyle::from_prefix(rest).ok_or_else(|| bad("invalid pattern style"))?;
                return Ok(None);
            }
            _ => return Err(bad("must start with one of -, !, +, R, r, P, p")),
        };
        if rest.is_empty() {
            return Err(bad("must have a value part"));
        }
        let p = Pattern::parse(rest, *style)?;
        self.add(p, action);
        Ok(None)
    }

    /// Matches `path` (leading `/` ignored): full-path patterns first, then the others in
    /// order, first match wins.
    pub fn matches(&self, path: &str) -> MatchResult {
        let path = path.trim_start_matches('/');
        if let Some(&a) = self.full.get(path) {
            return a.into();
        }
        for (p, a) in &self.items {
            if p.matches(path) {
                return (*a).into();
            }
        }
        MatchResult::NoMatch
    }

    /// Like [`matches`](PatternMatcher::matches) for raw path bytes: bytes that are not
    /// UTF-8 each count as one character that no pattern character equals (as Python's
    /// surrogate escapes do).
    pub fn matches_bytes(&self, path: &[u8]) -> MatchResult {
        match std::str::from_utf8(path) {
            Ok(s) => self.matches(s),
            Err(_) => self.matches(&escape_invalid_utf8(path)),
        }
    }

    /// borg's decision for `path`: whether it is included, and whether to descend into it.
    pub fn decide(&self, path: &str) -> Decision {
        let m = self.matches(path);
        Decision {
            included: match m {
                MatchResult::Include => true,
                MatchResult::Exclude | MatchResult::ExcludeNoRecurse => false,
                MatchResult::NoMatch => self.fallback_include,
            },
            recurse_dir: m.recurse_dir(),
        }
    }
}

/// Maps each byte of an invalid UTF-8 sequence to a private-use character
/// (U+10FF00 + byte), keeping valid parts unchanged.
fn escape_invalid_utf8(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, bad) = bytes.split_at(e.valid_up_to());
                // `good` was just validated.
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let n = e.error_len().unwrap_or(bad.len()).max(1);
                for &b in &bad[..n] {
                    out.push(char::from_u32(0x10FF00 + u32::from(b)).unwrap_or('\u{FFFD}'));
                }
                bytes = &bad[n..];
            }
        }
    }
}

/// The `CACHEDIR.TAG` signature (<https://bford.info/cachedir/>); only these first bytes
/// are compared, as borg does.
pub const CACHE_TAG_NAME: &str = "CACHEDIR.TAG";
pub const CACHE_TAG_CONTENTS: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// `--exclude-caches`: whether `dir` holds a `CACHEDIR.TAG` (symlinks followed) starting
/// with the signature. Unreadable tags count as absent.
pub fn is_cachedir(dir: &Path) -> bool {
    let Ok(mut f) = File::open(dir.join(CACHE_TAG_NAME)) else {
        return false;
    };
    let mut buf = Vec::with_capacity(CACHE_TAG_CONTENTS.len());
    match f
        .by_ref()
        .take(CACHE_TAG_CONTENTS.len() as u64)
        .read_to_end(&mut buf)
    {
        Ok(_) => buf == CACHE_TAG_CONTENTS,
        Err(_) => false,
    }
}

/// borg's `dir_is_tagged`: the tag names that cause `dir` to be excluded — `CACHEDIR.TAG`
/// (with `exclude_caches`) and every `--exclude-if-present` name that exists in it
/// (symlinks followed, any file type).
pub fn tagged_names<S: AsRef<OsStr>>(
    dir: &Path,
    exclude_caches: bool,
    exclude_if_present: &[S],
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if exclude_caches && is_cachedir(dir) {
        out.push(PathBuf::from(CACHE_TAG_NAME));
    }
    for tag in exclude_if_present {
        let tag = Path::new(tag.as_ref());
        if dir.join(tag).exists() {
            out.push(tag.to_path_buf());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(lines: &[&str]) -> PatternMatcher {
        let mut pm = PatternMatcher::new(true);
        for l in lines {
            pm.add_pattern_line(l).unwrap();
        }
        pm
    }

    #[test]
    fn styles() {
        let pm = m(&[
            "- fm:*.o",
            "- sh:**/tmp/*",
            "+ re:^keep",
            "! pp:/var/cache",
            "- pf:/a/b",
        ]);
        assert_eq!(pm.matches("/x/y.o"), MatchResult::Exclude);
        assert_eq!(pm.matches("a/tmp/x"), MatchResult::Exclude);
        assert_eq!(pm.matches("tmp/x"), MatchResult::Exclude);
        assert_eq!(pm.matches("keep/x"), MatchResult::Include);
        assert_eq!(pm.matches("var/cache"), MatchResult::ExcludeNoRecurse);
        assert_eq!(pm.matches("var/cache/z"), MatchResult::ExcludeNoRecurse);
        assert_eq!(pm.matches("var/cachex"), MatchResult::NoMatch);
        assert_eq!(pm.matches("a/b"), MatchResult::Exclude);
        assert_eq!(pm.matches("a/b/c"), MatchResult::NoMatch);
    }

    #[test]
    fn full_path_patterns_win_over_order() {
        let pm = m(&["+ *", "- pf:a"]);
        assert_eq!(pm.matches("a"), MatchResult::Exclude);
        assert_eq!(pm.matches("b"), MatchResult::Include);
    }

    #[test]
    fn trailing_slash_matches_contents_only() {
        let mut pm = PatternMatcher::new(true);
        pm.add_exclude("dir/").unwrap();
        assert_eq!(pm.matches("dir"), MatchResult::NoMatch);
        assert_eq!(pm.matches("dir/x"), MatchResult::ExcludeNoRecurse);
        assert!(!pm.decide("dir/x").included && pm.decide("dir").included);
    }

    #[test]
    fn line_errors_and_roots() {
        let mut pm = PatternMatcher::new(true);
        assert!(pm.add_pattern_line("").is_err());
        assert!(pm.add_pattern_line("x foo").is_err());
        assert!(pm.add_pattern_line("+").is_err());
        assert!(pm.add_pattern_line("P xx").is_err());
        assert!(pm.add_pattern_line("- zz:foo").is_err());
        assert!(pm.add_pattern_line("- re:(").is_err());
        assert_eq!(
            pm.add_pattern_line("R  /srv").unwrap(),
            Some(PathBuf::from("/srv"))
        );
        let roots = pm
            .add_patterns_from("# c\nR /a\nP fm\n- *.x\n\n  r /b  \n")
            .unwrap();
        assert_eq!(roots, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(pm.matches("q/w.x"), MatchResult::Exclude);
    }

    #[test]
    fn invalid_utf8_is_one_char() {
        let mut pm = PatternMatcher::new(true);
        pm.add_exclude("sh:a?b").unwrap();
        assert_eq!(pm.matches_bytes(b"a\xffb"), MatchResult::ExcludeNoRecurse);
        assert_eq!(pm.matches_bytes(b"a\xff\xfeb"), MatchResult::NoMatch);
    }

    #[test]
    fn cachedir() {
        let d = tempfile::tempdir().unwrap();
        assert!(!is_cachedir(d.path()));
        std::fs::write(
            d.path().join(CACHE_TAG_NAME),
            b"Signature: 8a477f597d28d172789f06886806bc55\n# x",
        )
        .unwrap();
        assert!(is_cachedir(d.path()));
        std::fs::write(d.path().join(".nobackup"), b"").unwrap();
        let t = tagged_names(d.path(), true, &[".nobackup", "absent"]);
        assert_eq!(
            t,
            vec![PathBuf::from(CACHE_TAG_NAME), PathBuf::from(".nobackup")]
        );
    }
}
