//! `--chunker-params` (borg's `helpers/parseformat.py: ChunkerParams`) and the archive
//! metadata value that records them.

use std::fmt;
use std::str::FromStr;

use crate::format::MAX_DATA_SIZE;

/// How file content is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkerParams {
    /// Content-defined chunking: chunks of `2^min_exp ..= 2^max_exp` bytes, cut where the
    /// buzhash of the last `window` bytes has its low `mask_bits` bits clear.
    Buzhash {
        min_exp: u32,
        max_exp: u32,
        mask_bits: u32,
        window: u32,
    },
    /// An optional header chunk, then fixed-size blocks (borg's `ChunkerFixed`).
    Fixed { block_size: u32, header_size: u32 },
}

/// Why a chunker parameter string or value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("no chunker params given")]
    Empty,
    #[error(
        "invalid chunker params {0:?}: expected \"default\", \"buzhash,CHUNK_MIN_EXP,CHUNK_MAX_EXP,HASH_MASK_BITS,HASH_WINDOW_SIZE\", \
         \"CHUNK_MIN_EXP,CHUNK_MAX_EXP,HASH_MASK_BITS,HASH_WINDOW_SIZE\" or \"fixed,BLOCK_SIZE[,HEADER_SIZE]\""
    )]
    Syntax(String),
    #[error("chunker params: {name} {value:?} is not a valid integer")]
    NotInteger { name: &'static str, value: String },
    #[error("chunker params: {name} {value} must not be negative")]
    Negative { name: &'static str, value: i64 },
    #[error("chunker params: BLOCK_SIZE {0} must not be less than 64 bytes")]
    BlockTooSmall(i64),
    #[error("chunker params: {name} {value} must not exceed MAX_DATA_SIZE [{MAX_DATA_SIZE}]")]
    TooLarge { name: &'static str, value: i64 },
    #[error(
        "chunker params: required CHUNK_MIN_EXP <= HASH_MASK_BITS <= CHUNK_MAX_EXP, got {min_exp}, {mask_bits}, {max_exp}"
    )]
    Order {
        min_exp: i64,
        mask_bits: i64,
        max_exp: i64,
    },
    #[error(
        "chunker params: CHUNK_MIN_EXP {0} must not be less than 6 (2^6 = 64 B min. chunk size)"
    )]
    MinExpTooSmall(i64),
    #[error(
        "chunker params: CHUNK_MAX_EXP {0} must not be more than 23 (2^23 = 8 MiB max. chunk size)"
    )]
    MaxExpTooLarge(i64),
    #[error("chunker params: HASH_WINDOW_SIZE {0} must be an odd number")]
    EvenWindow(i64),
    #[error(
        "chunker params: HASH_WINDOW_SIZE {window} is too large: 2^{min_exp} + {window} + 1 exceeds the max. chunk size 2^{max_exp}"
    )]
    WindowTooLarge {
        min_exp: i64,
        max_exp: i64,
        window: i64,
    },
    #[error("chunker params: unsupported archive value {0}")]
    ArchiveValue(String),
}

impl ChunkerParams {
    /// borg's `CHUNKER_PARAMS`, used for file content.
    pub const DEFAULT: ChunkerParams = ChunkerParams::Buzhash {
        min_exp: 19,
        max_exp: 23,
        mask_bits: 21,
        window: 4095,
    };
    /// borg's `ITEMS_CHUNKER_PARAMS`, used for the archive's item metadata stream.
    pub const ITEMS: ChunkerParams = ChunkerParams::Buzhash {
        min_exp: 15,
        max_exp: 19,
        mask_bits: 17,
        window: 4095,
    };

    /// The largest chunk these parameters produce (the fixed chunker also cuts its header
    /// into blocks, so no chunk exceeds the block size).
    pub fn max_chunk_size(&self) -> usize {
        match *self {
            ChunkerParams::Buzhash { max_exp, .. } => 1usize << max_exp.min(usize::BITS - 1),
            ChunkerParams::Fixed { block_size, .. } => block_size as usize,
        }
    }

    /// The archive metadata `chunker_params` value: `[b"buzhash", 19, 23, 21, 4095]` or
    /// `[b"fixed", block, header]` (borg always records the header size, even 0).
    pub fn archive_value(&self) -> rmpv::Value {
        use rmpv::Value;
        match *self {
            ChunkerParams::Buzhash {
                min_exp,
                max_exp,
                mask_bits,
                window,
            } => Value::Array(vec![
                Value::from("buzhash"),
                Value::from(min_exp),
                Value::from(max_exp),
                Value::from(mask_bits),
                Value::from(window),
            ]),
            ChunkerParams::Fixed {
                block_size,
                header_size,
            } => Value::Array(vec![
                Value::from("fixed"),
                Value::from(block_size),
                Value::from(header_size),
            ]),
        }
    }

    /// Reads an archive's `chunker_params` (algorithm as raw string or bytes; borg 1.0/1.1
    /// archives store four bare integers, meaning buzhash). The result is validated like the
    /// command-line form.
    pub fn from_archive_value(v: &rmpv::Value) -> Result<ChunkerParams, ParamsError> {
        let bad = || ParamsError::ArchiveValue(v.to_string());
        let list = v.as_array().ok_or_else(bad)?;
        let algo = match list.first() {
            Some(rmpv::Value::String(s)) => Some(s.as_bytes()),
            Some(rmpv::Value::Binary(b)) => Some(b.as_slice()),
            _ => None,
        };
        let ints = |items: &[rmpv::Value]| -> Result<Vec<i64>, ParamsError> {
            items.iter().map(|x| x.as_i64().ok_or_else(bad)).collect()
        };
        let p = match (algo, list.len()) {
            (Some(b"buzhash"), 5) => {
                let n = ints(&list[1..])?;
                buzhash_checked(n[0], n[1], n[2], n[3])?
            }
            (Some(b"fixed"), 2 | 3) => {
                let n = ints(&list[1..])?;
                fixed_checked(n[0], n.get(1).copied().unwrap_or(0))?
            }
            (None, 4) => {
                let n = ints(list)?;
                buzhash_checked(n[0], n[1], n[2], n[3])?
            }
            _ => return Err(bad()),
        };
        Ok(p)
    }

    /// Checks the rules the parser enforces, plus what the buzhash chunker needs to work at
    /// all (`2^min_exp + window + 1 <= 2^max_exp`, borg's assertion in `Chunker.__cinit__`).
    /// Values built directly (not parsed) should be checked with this before use.
    pub fn validate(&self) -> Result<(), ParamsError> {
        match *self {
            ChunkerParams::Buzhash {
                min_exp,
                max_exp,
                mask_bits,
                window,
            } => buzhash_checked(
                min_exp.into(),
                max_exp.into(),
                mask_bits.into(),
                window.into(),
            )
            .map(drop),
            ChunkerParams::Fixed {
                block_size,
                header_size,
            } => fixed_checked(block_size.into(), header_size.into()).map(drop),
        }
    }
}

fn buzhash_checked(
    min_exp: i64,
    max_exp: i64,
    mask_bits: i64,
    window: i64,
) -> Result<ChunkerParams, ParamsError> {
    if !(min_exp <= mask_bits && mask_bits <= max_exp) {
        return Err(ParamsError::Order {
            min_exp,
            mask_bits,
            max_exp,
        });
    }
    if min_exp < 6 {
        return Err(ParamsError::MinExpTooSmall(min_exp));
    }
    if max_exp > 23 {
        return Err(ParamsError::MaxExpTooLarge(max_exp));
    }
    if window < 0 {
        return Err(ParamsError::Negative {
            name: "HASH_WINDOW_SIZE",
            value: window,
        });
    }
    if window % 2 == 0 {
        return Err(ParamsError::EvenWindow(window));
    }
    if (1i64 << min_exp) + window + 1 > (1i64 << max_exp) {
        return Err(ParamsError::WindowTooLarge {
            min_exp,
            max_exp,
            window,
        });
    }
    // All four are now within 1..=2^23, so the narrowing casts are lossless.
    Ok(ChunkerParams::Buzhash {
        min_exp: min_exp as u32,
        max_exp: max_exp as u32,
        mask_bits: mask_bits as u32,
        window: window as u32,
    })
}

fn fixed_checked(block_size: i64, header_size: i64) -> Result<ChunkerParams, ParamsError> {
    if block_size < 64 {
        return Err(ParamsError::BlockTooSmall(block_size));
    }
    if header_size < 0 {
        return Err(ParamsError::Negative {
            name: "HEADER_SIZE",
            value: header_size,
        });
    }
    for (name, value) in [("BLOCK_SIZE", block_size), ("HEADER_SIZE", header_size)] {
        if value > MAX_DATA_SIZE as i64 {
            return Err(ParamsError::TooLarge { name, value });
        }
    }
    Ok(ChunkerParams::Fixed {
        block_size: block_size as u32,
        header_size: header_size as u32,
    })
}

/// Python's `int(str)` for decimal input: surrounding whitespace, an optional sign, and
/// digits with single underscores between them.
fn py_int(name: &'static str, s: &str) -> Result<i64, ParamsError> {
    let err = || ParamsError::NotInteger {
        name,
        value: s.to_string(),
    };
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(err());
    }
    let mut v: i64 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let d = c.to_digit(10).ok_or_else(err)?;
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d)))
            .ok_or_else(err)?;
    }
    Ok(if neg { -v } else { v })
}

impl FromStr for ChunkerParams {
    type Err = ParamsError;

    /// borg's `--chunker-params` syntax, with borg's checks in borg's order.
    fn from_str(s: &str) -> Result<Self, ParamsError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParamsError::Empty);
        }
        let parts: Vec<&str> = s.split(',').collect();
        let algo = parts[0].to_lowercase();
        match (algo.as_str(), parts.len()) {
            ("fixed", 2 | 3) => {
                let block = py_int("BLOCK_SIZE", parts[1])?;
                let header = match parts.get(2) {
                    Some(h) => py_int("HEADER_SIZE", h)?,
                    None => 0,
                };
                fixed_checked(block, header)
            }
            ("default", 1) => Ok(ChunkerParams::DEFAULT),
            ("buzhash", 5) | (_, 4) => {
                let n = parts.len();
                let min_exp = py_int("CHUNK_MIN_EXP", parts[n - 4])?;
                let max_exp = py_int("CHUNK_MAX_EXP", parts[n - 3])?;
                let mask_bits = py_int("HASH_MASK_BITS", parts[n - 2])?;
                let window = py_int("HASH_WINDOW_SIZE", parts[n - 1])?;
                buzhash_checked(min_exp, max_exp, mask_bits, window)
            }
            _ => Err(ParamsError::Syntax(s.to_string())),
        }
    }
}

impl fmt::Display for ChunkerParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ChunkerParams::Buzhash {
                min_exp,
                max_exp,
                mask_bits,
                window,
            } => {
                write!(f, "buzhash,{min_exp},{max_exp},{mask_bits},{window}")
            }
            ChunkerParams::Fixed {
                block_size,
                header_size: 0,
            } => write!(f, "fixed,{block_size}"),
            ChunkerParams::Fixed {
                block_size,
                header_size,
            } => write!(f, "fixed,{block_size},{header_size}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<ChunkerParams, ParamsError> {
        s.parse()
    }

    #[test]
    fn parses_borg_forms() {
        assert_eq!(p("default"), Ok(ChunkerParams::DEFAULT));
        assert_eq!(p(" Default "), Ok(ChunkerParams::DEFAULT));
        assert_eq!(p("buzhash,19,23,21,4095"), Ok(ChunkerParams::DEFAULT));
        assert_eq!(p("BUZHASH, 15 ,19,17,4095"), Ok(ChunkerParams::ITEMS));
        assert_eq!(p("19,23,21,4095"), Ok(ChunkerParams::DEFAULT));
        assert_eq!(
            p("10,16,12,63"),
            Ok(ChunkerParams::Buzhash {
                min_exp: 10,
                max_exp: 16,
                mask_bits: 12,
                window: 63
            })
        );
        assert_eq!(
            p("fixed,4194304"),
            Ok(ChunkerParams::Fixed {
                block_size: 4_194_304,
                header_size: 0
            })
        );
        assert_eq!(
            p("fixed,4_194_304,4096"),
            Ok(ChunkerParams::Fixed {
                block_size: 4_194_304,
                header_size: 4096
            })
        );
        assert_eq!(
            p("fixed,64,+0"),
            Ok(ChunkerParams::Fixed {
                block_size: 64,
                header_size: 0
            })
        );
        assert_eq!(
            p("fixed,20971479"),
            Ok(ChunkerParams::Fixed {
                block_size: 20_971_479,
                header_size: 0
            })
        );
    }

    #[test]
    fn rejects_like_borg_and_names_the_part() {
        assert_eq!(p(""), Err(ParamsError::Empty));
        assert!(matches!(p("buzhash"), Err(ParamsError::Syntax(_))));
        assert!(matches!(p("fixed"), Err(ParamsError::Syntax(_))));
        assert!(matches!(p("default,1"), Err(ParamsError::Syntax(_))));
        assert!(matches!(p("rabin,1,2,3,4"), Err(ParamsError::Syntax(_))));
        assert_eq!(p("fixed,63"), Err(ParamsError::BlockTooSmall(63)));
        assert_eq!(
            p("fixed,20971480"),
            Err(ParamsError::TooLarge {
                name: "BLOCK_SIZE",
                value: 20_971_480
            })
        );
        assert_eq!(
            p("fixed,64,20971480"),
            Err(ParamsError::TooLarge {
                name: "HEADER_SIZE",
                value: 20_971_480
            })
        );
        assert_eq!(
            p("fixed,64,-1"),
            Err(ParamsError::Negative {
                name: "HEADER_SIZE",
                value: -1
            })
        );
        assert_eq!(
            p("fixed,4M"),
            Err(ParamsError::NotInteger {
                name: "BLOCK_SIZE",
                value: "4M".into()
            })
        );
        assert_eq!(
            p("fixed,1,2,3"),
            Err(ParamsError::NotInteger {
                name: "CHUNK_MIN_EXP",
                value: "fixed".into()
            })
        );
        assert_eq!(
            p("19,23,24,4095"),
            Err(ParamsError::Order {
                min_exp: 19,
                mask_bits: 24,
                max_exp: 23
            })
        );
        assert_eq!(p("5,23,21,4095"), Err(ParamsError::MinExpTooSmall(5)));
        assert_eq!(p("19,24,21,4095"), Err(ParamsError::MaxExpTooLarge(24)));
        assert_eq!(p("19,23,21,4096"), Err(ParamsError::EvenWindow(4096)));
        assert_eq!(
            p("19,23,21,-1"),
            Err(ParamsError::Negative {
                name: "HASH_WINDOW_SIZE",
                value: -1
            })
        );
        assert!(matches!(
            p("12,12,12,4095"),
            Err(ParamsError::WindowTooLarge { .. })
        ));
        assert!(matches!(
            p("19,23,21,1__0"),
            Err(ParamsError::NotInteger {
                name: "HASH_WINDOW_SIZE",
                ..
            })
        ));
        assert!(matches!(
            p("19,23,21,99999999999999999999"),
            Err(ParamsError::NotInteger { .. })
        ));
        let msg = p("19,24,21,4095").unwrap_err().to_string();
        assert!(msg.contains("CHUNK_MAX_EXP 24"), "{msg}");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "buzhash,19,23,21,4095",
            "buzhash,10,16,12,63",
            "fixed,4194304",
            "fixed,65536,4096",
        ] {
            let v = p(s).unwrap();
            assert_eq!(v.to_string(), s);
            assert_eq!(p(&v.to_string()), Ok(v));
            assert_eq!(ChunkerParams::from_archive_value(&v.archive_value()), Ok(v));
        }
        assert_eq!(p("fixed,4194304,0").unwrap().to_string(), "fixed,4194304");
    }

    #[test]
    fn archive_value_shape() {
        let v = ChunkerParams::DEFAULT.archive_value();
        assert_eq!(v.to_string(), r#"["buzhash", 19, 23, 21, 4095]"#);
        let f = ChunkerParams::Fixed {
            block_size: 4096,
            header_size: 0,
        }
        .archive_value();
        assert_eq!(f.to_string(), r#"["fixed", 4096, 0]"#);
        let legacy = rmpv::Value::Array(vec![19.into(), 23.into(), 21.into(), 4095.into()]);
        assert_eq!(
            ChunkerParams::from_archive_value(&legacy),
            Ok(ChunkerParams::DEFAULT)
        );
        let bin = rmpv::Value::Array(vec![
            rmpv::Value::Binary(b"fixed".to_vec()),
            4096.into(),
            512.into(),
        ]);
        assert_eq!(
            ChunkerParams::from_archive_value(&bin),
            Ok(ChunkerParams::Fixed {
                block_size: 4096,
                header_size: 512
            })
        );
        assert!(ChunkerParams::from_archive_value(&rmpv::Value::from(3)).is_err());
        assert!(
            ChunkerParams::from_archive_value(&rmpv::Value::Array(vec!["buzhash".into()])).is_err()
        );
    }

    #[test]
    fn max_chunk_size() {
        assert_eq!(ChunkerParams::DEFAULT.max_chunk_size(), 8 << 20);
        assert_eq!(ChunkerParams::ITEMS.max_chunk_size(), 512 << 10);
        assert_eq!(
            ChunkerParams::Fixed {
                block_size: 4096,
                header_size: 100_000
            }
            .max_chunk_size(),
            4096
        );
    }
}
