//! borg's `--compression` syntax (`CompressionSpec`), parsed and printed.

use std::fmt;
use std::str::FromStr;

use super::Compression;

/// A `--compression` value borg would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid compression spec {spec:?}: {reason}")]
pub struct SpecError {
    /// The whole spec as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Compression {
    type Err = SpecError;

    /// `none | lz4 | zstd[,1-22] | lzma[,0-9] | zlib[,0-9] | auto,C[,L] |
    /// obfuscate,SPEC,C[,L]` with SPEC in 1–6, 110–123 or 250 (Padmé, borg ≥ 1.4).
    /// Unlike borg, extra arguments after `none`/`lz4` are rejected rather than ignored.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let values: Vec<&str> = s.split(',').collect();
        parse(&values).map_err(|reason| SpecError {
            spec: s.to_owned(),
            reason,
        })
    }
}

fn parse(values: &[&str]) -> Result<Compression, String> {
    let level = |v: &str, lo: i64, hi: i64| -> Result<i64, String> {
        let l: i64 = v
            .trim()
            .parse()
            .map_err(|_| format!("level {v:?} is not an integer"))?;
        if (lo..=hi).contains(&l) {
            Ok(l)
        } else {
            Err(format!("level must be >= {lo} and <= {hi}, not {l}"))
        }
    };
    // Ranges checked above make the narrowing casts below lossless.
    match values {
        ["none"] => Ok(Compression::None),
        ["lz4"] => Ok(Compression::Lz4),
        ["none" | "lz4", ..] => Err(format!("{} takes no level", values[0])),
        ["zstd"] => Ok(Compression::Zstd { level: 3 }),
        ["zstd", l] => Ok(Compression::Zstd {
            level: level(l, 1, 22)? as i32,
        }),
        ["lzma"] => Ok(Compression::Lzma { level: 6 }),
        ["lzma", l] => Ok(Compression::Lzma {
            level: level(l, 0, 9)? as u32,
        }),
        ["zlib"] => Ok(Compression::Zlib { level: 6 }),
        ["zlib", l] => Ok(Compression::Zlib {
            level: level(l, 0, 9)? as u32,
        }),
        ["zstd" | "lzma" | "zlib", ..] => Err("too many arguments".into()),
        ["auto", inner @ ..] if (1..=2).contains(&inner.len()) => {
            Ok(Compression::Auto(Box::new(parse(inner)?)))
        }
        ["auto", ..] => Err("auto needs a compressor and at most a level after it".into()),
        ["obfuscate", l, inner @ ..] if (1..=3).contains(&inner.len()) => {
            let l = level(l, 1, 250)?;
            if !matches!(l, 1..=6 | 110..=123 | 250) {
                return Err(format!(
                    "obfuscation level must be within 1...6, 110...123 or equal to 250, not {l}"
                ));
            }
            Ok(Compression::Obfuscate {
                level: l as u32,
                inner: Box::new(parse(inner)?),
            })
        }
        ["obfuscate", ..] => Err("obfuscate needs a level and a compressor".into()),
        [name, ..] => Err(format!("unsupported compression type {name:?}")),
        [] => Err("empty".into()),
    }
}

impl fmt::Display for Compression {
    /// The canonical spec, with every level spelled out (`zstd` prints as `zstd,3`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Lz4 => f.write_str("lz4"),
            Compression::Zstd { level } => write!(f, "zstd,{level}"),
            Compression::Lzma { level } => write!(f, "lzma,{level}"),
            Compression::Zlib { level } => write!(f, "zlib,{level}"),
            Compression::Auto(inner) => write!(f, "auto,{inner}"),
            Compression::Obfuscate { level, inner } => write!(f, "obfuscate,{level},{inner}"),
        }
    }
}
