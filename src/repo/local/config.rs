//! The repository `config` file, read and written the way Python's
//! `ConfigParser(interpolation=None)` does: `[section]` headers, `key = value` lines
//! (keys lower-cased), multi-line values as TAB-indented continuation lines, a blank
//! line after each section. Keeping borg's exact layout keeps the file diff-clean for
//! borg and for people comparing repositories.

/// Parsed INI text, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Config {
    /// Parses like `ConfigParser.read_file` (strict: no duplicate sections or options).
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut cfg = Config::default();
        // (section index, option index, indent of the option line)
        let mut cur: Option<usize> = None;
        let mut opt: Option<(usize, usize)> = None;
        let mut indent_level = 0usize;
        let mut pending: Vec<Vec<String>> = Vec::new();
        for (lineno, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if trimmed.is_empty() {
                // Empty lines inside a multi-line value are kept (and trailing ones
                // stripped later); elsewhere they end the value.
                if let (Some((s, o)), Some(_)) = (opt, cur) {
                    let idx = cfg.value_slot(s, o);
                    pending[idx].push(String::new());
                } else {
                    indent_level = usize::MAX;
                }
                continue;
            }
            let indent = raw.len() - raw.trim_start().len();
            if let (Some(_), Some((s, o))) = (cur, opt) {
                if indent > indent_level {
                    let idx = cfg.value_slot(s, o);
                    pending[idx].push(trimmed.to_string());
                    continue;
                }
            }
            indent_level = indent;
            if trimmed.starts_with('[') && trimmed.ends_with(']') {
                let name = trimmed[1..trimmed.len() - 1].to_string();
                if cfg.sections.iter().any(|(n, _)| *n == name) {
                    return Err(format!(
                        "line {}: section {name:?} already exists",
                        lineno + 1
                    ));
                }
                cfg.sections.push((name, Vec::new()));
                cur = Some(cfg.sections.len() - 1);
                opt = None;
                continue;
            }
            let Some(s) = cur else {
                return Err(format!(
                    "line {}: no section header before {trimmed:?}",
                    lineno + 1
                ));
            };
            let pos = trimmed
                .find(['=', ':'])
                .ok_or_else(|| format!("line {}: cannot parse {trimmed:?}", lineno + 1))?;
            let key = trimmed[..pos].trim_end().to_lowercase();
            if key.is_empty() {
                return Err(format!("line {}: empty option name", lineno + 1));
            }
            let value = trimmed[pos + 1..].trim().to_string();
            let items = &mut cfg.sections[s].1;
            if items.iter().any(|(k, _)| *k == key) {
                return Err(format!(
                    "line {}: option {key:?} already exists",
                    lineno + 1
                ));
            }
            items.push((key, String::new()));
            let o = items.len() - 1;
            opt = Some((s, o));
            let idx = cfg.value_slot(s, o);
            while pending.len() <= idx {
                pending.push(Vec::new());
            }
            pending[idx] = vec![value];
        }
        // Join multi-line values.
        let mut n = 0;
        for (_, items) in cfg.sections.iter_mut() {
            for (_, v) in items.iter_mut() {
                if let Some(lines) = pending.get(n) {
                    *v = lines.join("\n").trim_end().to_string();
                }
                n += 1;
            }
        }
        Ok(cfg)
    }

    /// Flat position of an option among all options (file order).
    fn value_slot(&self, s: usize, o: usize) -> usize {
        self.sections[..s]
            .iter()
            .map(|(_, i)| i.len())
            .sum::<usize>()
            + o
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections.iter().any(|(n, _)| n == section)
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        let key = key.to_lowercase();
        self.sections
            .iter()
            .find(|(n, _)| n == section)
            .and_then(|(_, items)| items.iter().find(|(k, _)| *k == key))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a value (in place if present, else appended; the section is created if needed).
    pub fn set(&mut self, section: &str, key: &str, value: &str) {
        let key = key.to_lowercase();
        let idx = match self.sections.iter().position(|(n, _)| n == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let items = &mut self.sections[idx].1;
        match items.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => items.push((key, value.to_string())),
        }
    }

    /// Text as `ConfigParser.write` produces it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (name, items) in &self.sections {
            out.push('[');
            out.push_str(name);
            out.push_str("]\n");
            for (k, v) in items {
                out.push_str(k);
                out.push_str(" = ");
                out.push_str(&v.replace('\n', "\n\t"));
                out.push('\n');
            }
            out.push('\n');
        }
        out
    }
}

/// `ConfigParser.getint`: Python `int()` of the stripped value.
pub fn parse_int(v: &str) -> Option<i64> {
    let v = v.trim().replace('_', "");
    v.strip_prefix('+')
        .unwrap_or(&v)
        .parse::<i64>()
        .ok()
        .or_else(|| v.parse().ok())
}

/// `ConfigParser.getboolean`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// borg's `parse_file_size`: an integer or a number with a decimal K/M/G/T/P suffix.
pub fn parse_file_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, factor) = match v.chars().last()? {
        'K' => (&v[..v.len() - 1], 1e3),
        'M' => (&v[..v.len() - 1], 1e6),
        'G' => (&v[..v.len() - 1], 1e9),
        'T' => (&v[..v.len() - 1], 1e12),
        'P' => (&v[..v.len() - 1], 1e15),
        _ => return parse_int(v).and_then(|n| u64::try_from(n).ok()),
    };
    let f: f64 = num.trim().parse().ok()?;
    if !(f.is_finite() && f >= 0.0) {
        return None;
    }
    Some((f * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borg_layout_roundtrip() {
        let text = "[repository]\nversion = 1\nsegments_per_dir = 1000\nmax_segment_size = 524288000\nappend_only = 0\nstorage_quota = 0\nadditional_free_space = 0\nid = 3fb7edd26ea536ee1f6db9ebfaa3630779eca208f7dd7b8d21a3685f9da92178\n\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(c.to_text(), text);
        assert_eq!(c.get("repository", "max_segment_size"), Some("524288000"));
    }

    #[test]
    fn multiline_key_values() {
        let mut c = Config::default();
        c.set("repository", "version", "1");
        c.set("repository", "key", "aaaa\nbbbb\ncc");
        let t = c.to_text();
        assert_eq!(t, "[repository]\nversion = 1\nkey = aaaa\n\tbbbb\n\tcc\n\n");
        let back = Config::parse(&t).unwrap();
        assert_eq!(back.get("repository", "key"), Some("aaaa\nbbbb\ncc"));
        assert_eq!(back, c);
    }

    #[test]
    fn parser_details() {
        let c = Config::parse("# c\n[repository]\nID: abc \n; x\nKey = a\n  b\n\n\n[other]\nx=1\n")
            .unwrap();
        assert_eq!(c.get("repository", "id"), Some("abc"));
        assert_eq!(c.get("repository", "key"), Some("a\nb"));
        assert_eq!(c.get("other", "x"), Some("1"));
        assert!(Config::parse("x = 1\n").is_err());
        assert!(Config::parse("[a]\nx = 1\nx = 2\n").is_err());
        assert!(Config::parse("[a]\n[a]\n").is_err());
        assert!(Config::parse("[a]\nnovalue\n").is_err());
        assert_eq!(parse_file_size("500M"), Some(500_000_000));
        assert_eq!(parse_file_size("1.5K"), Some(1500));
        assert_eq!(parse_file_size("1234"), Some(1234));
        assert_eq!(parse_file_size("x"), None);
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_int(" 12 "), Some(12));
    }
}
