//! Glob → regex translation, mirroring borg's `shellpattern.translate` and Python's
//! `fnmatch.translate` (3.11) so that `fm:` and `sh:` patterns decide exactly as borg's.
//!
//! Both Python translators hand the contents of `[...]` sets through to Python's `re`, so
//! the set semantics are those of `re`'s class parser (ranges, a leading `]` taken
//! literally, "bad character range" errors). Rust's `regex` reads classes differently
//! (nested `[`, `&&`, `--`, `~~` operators), so sets are re-parsed here the way `re`
//! would parse them and re-emitted with every member escaped.

use std::fmt::Write as _;

/// Why a glob could not be turned into a regex (Python's `re` would raise `re.error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("bad character range {0}-{1}")]
    BadRange(char, char),
    #[error("unterminated character set")]
    UnterminatedSet,
    #[error("unsupported escape \\{0} in character set")]
    BadEscape(char),
}

fn push_char(out: &mut String, c: char) {
    let _ = write!(out, "\\x{{{:X}}}", c as u32);
}

/// A token of Python's class-body tokenizer: a plain character or a two-character escape.
#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Plain(char),
    Escape(char),
}

/// Parses the body of a Python `re` character set (the text between `[` and the `]` the
/// translator appended) and renders it as a Rust `regex` class.
fn python_set_to_rust(body: &[char]) -> Result<String, TranslateError> {
    let mut src: Vec<char> = body.to_vec();
    src.push(']');
    let mut pos = 0usize;
    let get = |pos: &mut usize| -> Result<Option<Tok>, TranslateError> {
        let Some(&c) = src.get(*pos) else {
            return Ok(None);
        };
        *pos += 1;
        if c == '\\' {
            let Some(&e) = src.get(*pos) else {
                return Err(TranslateError::BadEscape('\\'));
            };
            *pos += 1;
            return Ok(Some(Tok::Escape(e)));
        }
        Ok(Some(Tok::Plain(c)))
    };
    // Only escapes of non-alphanumeric ASCII characters occur in translator output; those
    // stand for the character itself (`_class_escape`).
    let lit = |t: Tok| -> Result<char, TranslateError> {
        match t {
            Tok::Plain(c) => Ok(c),
            Tok::Escape(e) if e.is_ascii_alphanumeric() => Err(TranslateError::BadEscape(e)),
            Tok::Escape(e) => Ok(e),
        }
    };
    let negate = src.first() == Some(&'^');
    if negate {
        pos += 1;
    }
    let mut items: Vec<(char, char)> = Vec::new();
    loop {
        let Some(this) = get(&mut pos)? else {
            return Err(TranslateError::UnterminatedSet);
        };
        if this == Tok::Plain(']') && !items.is_empty() {
            break;
        }
        let lo = lit(this)?;
        if src.get(pos) == Some(&'-') {
            pos += 1;
            let Some(that) = get(&mut pos)? else {
                return Err(TranslateError::UnterminatedSet);
            };
            if that == Tok::Plain(']') {
                items.push((lo, lo));
                items.push(('-', '-'));
                break;
            }
            let hi = lit(that)?;
            if hi < lo {
                return Err(TranslateError::BadRange(lo, hi));
            }
            items.push((lo, hi));
        } else {
            items.push((lo, lo));
        }
    }
    if pos != src.len() {
        // The translators cut the set at its first `]`, so the parser always ends exactly
        // at the appended one; anything else means the input was not translator output.
        return Err(TranslateError::UnterminatedSet);
    }
    let mut out = String::from(if negate { "[^" } else { "[" });
    for (lo, hi) in items {
        push_char(&mut out, lo);
        if hi != lo {
            out.push('-');
            push_char(&mut out, hi);
        }
    }
    out.push(']');
    Ok(out)
}

/// Finds the end of a `[...]` set starting after the `[` at `i` the way both translators
/// do: a leading `!` and then a leading `]` belong to the set. Returns the index of the
/// closing `]`, or `None` when there is none (the `[` is then a literal).
fn set_end(pat: &[char], i: usize) -> Option<usize> {
    let n = pat.len();
    let mut j = i;
    if j < n && pat[j] == '!' {
        j += 1;
    }
    if j < n && pat[j] == ']' {
        j += 1;
    }
    while j < n && pat[j] != ']' {
        j += 1;
    }
    (j < n).then_some(j)
}

fn double_backslashes(s: &[char]) -> Vec<char> {
    let mut v = Vec::with_capacity(s.len());
    for &c in s {
        if c == '\\' {
            v.push('\\');
        }
        v.push(c);
    }
    v
}

/// borg's `shellpattern.translate(pat)` as an anchored Rust regex (borg uses `re.match`
/// with the `\Z` end it appends): `**/` = zero or more whole directories, `*` and `?` never
/// cross `/`, `[...]` sets as in `re`.
pub fn shell_to_regex(pattern: &str) -> Result<String, TranslateError> {
    let pat: Vec<char> = pattern.chars().collect();
    let n = pat.len();
    let mut res = String::from("(?s)^");
    let mut i = 0;
    while i < n {
        let c = pat[i];
        i += 1;
        match c {
            '*' => {
                if i + 1 < n && pat[i] == '*' && pat[i + 1] == '/' {
                    res.push_str("(?:[^/]*/)*");
                    i += 2;
                } else {
                    res.push_str("[^/]*");
                }
            }
            '?' => res.push_str("[^/]"),
            '[' => match set_end(&pat, i) {
                None => res.push_str("\\["),
                Some(j) => {
                    let mut stuff = double_backslashes(&pat[i..j]);
                    i = j + 1;
                    if stuff[0] == '!' {
                        stuff[0] = '^';
                    } else if stuff[0] == '^' {
                        stuff.insert(0, '\\');
                    }
                    res.push_str(&python_set_to_rust(&stuff)?);
                }
            },
            _ => res.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    res.push_str("\\z");
    Ok(res)
}

/// Python 3.11's `fnmatch.translate(pat)` as an anchored Rust regex: `*` and `?` match any
/// character including `/`, sets as in `re` after fnmatch's own range clean-up (empty
/// ranges dropped, `-`, `\`, `&`, `~`, `|` escaped). The atomic groups Python emits for
/// inner stars only speed up matching; `.*` decides the same.
pub fn fnmatch_to_regex(pattern: &str) -> Result<String, TranslateError> {
    let pat: Vec<char> = pattern.chars().collect();
    let n = pat.len();
    let mut res = String::from("^(?s:");
    let mut last_star = false;
    let mut i = 0;
    while i < n {
        let c = pat[i];
        i += 1;
        if c == '*' {
            if !last_star {
                res.push_str(".*");
            }
            last_star = true;
            continue;
        }
        last_star = false;
        match c {
            '?' => res.push('.'),
            '[' => match set_end(&pat, i) {
                None => res.push_str("\\["),
                Some(j) => {
                    let stuff = fnmatch_set_body(&pat, i, j);
                    i = j + 1;
                    if stuff.is_empty() {
                        // Python emits `(?!)`: never matches.
                        res.push_str("[^\\x{0}-\\x{10FFFF}]");
                    } else if stuff == ['!'] {
                        res.push('.');
                    } else {
                        let mut stuff = stuff;
                        if stuff[0] == '!' {
                            stuff[0] = '^';
                        } else if stuff[0] == '^' || stuff[0] == '[' {
                            stuff.insert(0, '\\');
                        }
                        res.push_str(&python_set_to_rust(&stuff)?);
                    }
                }
            },
            _ => res.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    res.push_str(")\\z");
    Ok(res)
}

/// The set body `fnmatch.translate` produces for `pat[i..j]` (before the `!`/`^` fix-up).
fn fnmatch_set_body(pat: &[char], i: usize, j: usize) -> Vec<char> {
    let raw = &pat[i..j];
    let mut stuff = if !raw.contains(&'-') {
        double_backslashes(raw)
    } else {
        let mut chunks: Vec<Vec<char>> = Vec::new();
        let mut i = i;
        let mut k = if pat[i] == '!' { i + 2 } else { i + 1 };
        while let Some(off) = pat.get(k..j).and_then(|s| s.iter().position(|&c| c == '-')) {
            let found = k + off;
            chunks.push(pat[i..found].to_vec());
            i = found + 1;
            k = found + 3;
        }
        let chunk = &pat[i..j];
        if !chunk.is_empty() {
            chunks.push(chunk.to_vec());
        } else if let Some(last) = chunks.last_mut() {
            last.push('-');
        }
        // Remove empty ranges (`z-a`), merging the neighbouring chunks.
        let mut k = chunks.len();
        while k > 1 {
            k -= 1;
            let (Some(&prev_last), Some(&next_first)) = (chunks[k - 1].last(), chunks[k].first())
            else {
                break;
            };
            if prev_last > next_first {
                let next = chunks.remove(k);
                let prev = &mut chunks[k - 1];
                prev.pop();
                prev.extend_from_slice(&next[1..]);
            }
        }
        let mut out = Vec::new();
        for (n, ch) in chunks.iter().enumerate() {
            if n > 0 {
                out.push('-');
            }
            for &c in ch {
                match c {
                    '\\' => out.extend(['\\', '\\']),
                    '-' => out.extend(['\\', '-']),
                    _ => out.push(c),
                }
            }
        }
        out
    };
    // Escape set operations (&&, ~~ and ||).
    let mut k = 0;
    while k < stuff.len() {
        if matches!(stuff[k], '&' | '~' | '|') {
            stuff.insert(k, '\\');
            k += 1;
        }
        k += 1;
    }
    stuff
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn sh(p: &str, s: &str) -> bool {
        Regex::new(&shell_to_regex(p).unwrap()).unwrap().is_match(s)
    }
    fn fm(p: &str, s: &str) -> bool {
        Regex::new(&fnmatch_to_regex(p).unwrap())
            .unwrap()
            .is_match(s)
    }

    #[test]
    fn shell_basics() {
        assert!(sh("**/*.txt", "a/b/c.txt"));
        assert!(sh("**/*.txt", "c.txt"));
        assert!(!sh("*.txt", "a/c.txt"));
        assert!(sh("a?c", "abc") && !sh("a?c", "a/c"));
        assert!(sh("[!a]x", "bx") && !sh("[!a]x", "ax"));
        assert!(sh("[]]", "]") && sh("[^a]", "^") && sh("[^a]", "a"));
        assert!(sh("[a", "[a"));
        assert!(sh("[a&&b]", "&") && sh("[[]", "["));
        assert!(sh("[\\]", "\\"));
        assert_eq!(
            shell_to_regex("[b-a]"),
            Err(TranslateError::BadRange('b', 'a'))
        );
    }

    #[test]
    fn fnmatch_basics() {
        assert!(fm("*.txt", "a/b.txt"));
        assert!(fm("a?c", "a/c"));
        assert!(!fm("[b-a]x", "bx") && !fm("[b-a]x", "ax"));
        assert!(fm("[!b-a]", "q"));
        assert!(fm("[a-]", "-") && fm("[-a]", "-"));
        assert!(fm("[a-c-e]", "-") && fm("[a-c-e]", "e") && !fm("[a-c-e]", "d"));
        assert!(fm("[z-a-c]", "-") && !fm("[z-a-c]", "b") && fm("[z-a-c]", "c"));
        assert!(fm("a\nb", "a\nb") && fm("*", "x\ny"));
    }
}
