//! The few Python string operations borg's pattern code relies on, reproduced exactly:
//! `str.strip()` / `lstrip()` (Python's notion of whitespace), `posixpath.normpath`,
//! `str.isalnum()` and reading a text file with universal newlines.

/// Python's `str.isspace()` for one character. Differs from `char::is_whitespace` in
/// also accepting the information separators U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip()` without arguments.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// `str.lstrip()` without arguments.
pub fn py_lstrip(s: &str) -> &str {
    s.trim_start_matches(is_py_space)
}

/// `str.isalnum()`: non-empty and every character is a letter or a number.
/// (`char::is_alphanumeric` is the Unicode Alphabetic/Numeric property, which agrees with
/// Python's category-based test on all letters and digits a pattern style prefix can hold.)
pub fn py_isalnum(s: &str) -> bool {
    !s.is_empty() && s.chars().all(char::is_alphanumeric)
}

/// `posixpath.normpath`: collapses separators and `.` components and resolves `..`
/// lexically; keeps exactly two leading slashes (POSIX leaves `//` implementation-defined),
/// three or more become one; the empty result is `.`.
pub fn normpath(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let initial_slashes = if path.starts_with("//") && !path.starts_with("///") {
        2
    } else if path.starts_with('/') {
        1
    } else {
        0
    };
    let mut comps: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." {
            continue;
        }
        if comp != ".." || (initial_slashes == 0 && comps.is_empty()) || comps.last() == Some(&"..")
        {
            comps.push(comp);
        } else {
            comps.pop();
        }
    }
    let mut out = "/".repeat(initial_slashes);
    out.push_str(&comps.join("/"));
    if out.is_empty() {
        ".".to_string()
    } else {
        out
    }
}

/// Splits text into lines the way Python's text-mode file iteration does with universal
/// newlines: `\n`, `\r\n` and a lone `\r` all end a line. Line ends are dropped.
pub fn universal_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push(&text[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                out.push(&text[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        out.push(&text[start..]);
    }
    out
}

/// borg's `clean_lines` with default arguments: strip both ends, drop empty lines and lines
/// starting with `#` (only whole-line comments exist).
pub fn clean_lines(text: &str) -> impl Iterator<Item = &str> {
    universal_lines(text)
        .into_iter()
        .map(py_strip)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normpath_like_python() {
        for (i, o) in [
            ("", "."),
            ("/", "/"),
            ("//", "//"),
            ("///", "/"),
            ("//a//b/", "//a/b"),
            ("a/./b/../c", "a/c"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("a/..", "."),
            ("./", "."),
            ("../../x/..", "../.."),
        ] {
            assert_eq!(normpath(i), o, "normpath({i:?})");
        }
    }

    #[test]
    fn lines_and_strip() {
        assert_eq!(
            universal_lines("a\r\nb\rc\n\nd"),
            vec!["a", "b", "c", "", "d"]
        );
        assert_eq!(py_strip("\u{1f} x \u{a0}"), "x");
        let v: Vec<&str> = clean_lines(" # c\n\n  a \r\n#x\nb").collect();
        assert_eq!(v, vec!["a", "b"]);
        assert!(py_isalnum("sh") && !py_isalnum("s-") && !py_isalnum(""));
    }
}
