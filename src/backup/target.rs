//! proxborg's target grammar: `VMID`, `HOSTNAME`, `@POOL`, each optionally followed by
//! `:` (LXC directory mode) or `:!` (directory mode including mount points without
//! `backup=1`), and `/path` (the ZFS dataset mounted there).

/// How a guest is backed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// vzdump image (QEMU always; LXC without suffix).
    Image,
    /// LXC directory tree: rootfs + mount points with `backup=1`.
    Dir,
    /// LXC directory tree including mount points without `backup=1`.
    DirAll,
}

/// Which guest(s) a target names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Vmid(u32),
    Name(String),
    Pool(String),
}

/// One command-line target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Guests { selector: Selector, mode: Mode },
    Dataset(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("empty target")]
    Empty,
    #[error("invalid target {0:?}: {1}")]
    Invalid(String, String),
}

/// Parses one argument the way proxborg does: only the first word of the first line counts.
pub fn parse_target(arg: &str) -> Result<Target, TargetError> {
    let word = arg
        .lines()
        .next()
        .unwrap_or("")
        .split(' ')
        .next()
        .unwrap_or("")
        .trim();
    if word.is_empty() {
        return Err(TargetError::Empty);
    }
    if word.contains('/') {
        return Ok(Target::Dataset(word.to_string()));
    }
    let (base, mode) = if let Some(b) = word.strip_suffix(":!") {
        (b, Mode::DirAll)
    } else if let Some(b) = word.strip_suffix(':') {
        (b, Mode::Dir)
    } else {
        (word, Mode::Image)
    };
    if base.is_empty() {
        return Err(TargetError::Invalid(
            word.into(),
            "no guest given before ':'".into(),
        ));
    }
    if base.contains(':') {
        return Err(TargetError::Invalid(
            word.into(),
            "only ':' or ':!' may follow a guest".into(),
        ));
    }
    let selector = if let Some(pool) = base.strip_prefix('@') {
        if pool.is_empty() {
            return Err(TargetError::Invalid(word.into(), "empty pool name".into()));
        }
        Selector::Pool(pool.to_string())
    } else if base.bytes().all(|b| b.is_ascii_digit()) {
        let id: u32 = base
            .parse()
            .map_err(|_| TargetError::Invalid(word.into(), "guest id out of range".into()))?;
        Selector::Vmid(id)
    } else {
        Selector::Name(base.to_string())
    };
    Ok(Target::Guests { selector, mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        assert_eq!(
            parse_target("101").unwrap(),
            Target::Guests {
                selector: Selector::Vmid(101),
                mode: Mode::Image
            }
        );
        assert_eq!(
            parse_target("0101:").unwrap(),
            Target::Guests {
                selector: Selector::Vmid(101),
                mode: Mode::Dir
            }
        );
        assert_eq!(
            parse_target("web:!").unwrap(),
            Target::Guests {
                selector: Selector::Name("web".into()),
                mode: Mode::DirAll
            }
        );
        assert_eq!(
            parse_target("@Prod:").unwrap(),
            Target::Guests {
                selector: Selector::Pool("Prod".into()),
                mode: Mode::Dir
            }
        );
        assert_eq!(
            parse_target("/rpool/data").unwrap(),
            Target::Dataset("/rpool/data".into())
        );
        assert_eq!(
            parse_target("101 trailing words\nsecond line").unwrap(),
            Target::Guests {
                selector: Selector::Vmid(101),
                mode: Mode::Image
            }
        );
        assert!(parse_target("").is_err());
        assert!(parse_target(":").is_err());
        assert!(parse_target("@").is_err());
        assert!(parse_target("a:b").is_err());
    }
}
