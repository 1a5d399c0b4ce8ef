//! The item stream: item maps packed back to back, cut into chunks without regard for item
//! boundaries (`archive.py: DownloadPipeline.unpack_many`). A resumable scanner finds where
//! each item ends before it is decoded, so an item spanning many chunks costs O(size) in
//! total rather than one full re-parse per chunk fed.

use super::item::Item;
use super::{limits, ObjectError};

const OBJ: &str = "item stream";

/// Decodes a whole item stream (the item-chunk plaintexts concatenated in order).
pub fn decode_item_stream(data: &[u8]) -> Result<Vec<Item>, ObjectError> {
    let mut d = ItemStreamDecoder::new();
    d.feed(data);
    let mut out = Vec::new();
    while let Some(it) = d.next_item()? {
        out.push(it);
    }
    d.finish()?;
    Ok(out)
}

/// Incremental item-stream decoder: feed chunk plaintexts in stream order, pull items.
#[derive(Debug, Default)]
pub struct ItemStreamDecoder {
    buf: Vec<u8>,
    /// Start of the next undecoded item in `buf`.
    start: usize,
    scan: Scanner,
    failed: bool,
}

impl ItemStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the next piece of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        // drop consumed bytes once they outweigh what is left, so moves stay amortised O(1)
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete item, or `None` if more data must be fed first.
    pub fn next_item(&mut self) -> Result<Option<Item>, ObjectError> {
        if self.failed {
            return Err(ObjectError::Invalid {
                object: OBJ,
                reason: "decoding already failed".into(),
            });
        }
        let r = self.next_inner();
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<Item>, ObjectError> {
        let rest = &self.buf[self.start..];
        if rest.is_empty() {
            return Ok(None);
        }
        let Some(len) = self.scan.advance(rest)? else {
            return Ok(None);
        };
        let mut rd = &rest[..len];
        let v = rmpv::decode::read_value_ref_with_max_depth(&mut rd, limits::MAX_DEPTH).map_err(
            |e| ObjectError::Msgpack {
                object: "item",
                reason: e.to_string(),
            },
        )?;
        let item = Item::decode_ref(&v)?;
        self.start += len;
        self.scan = Scanner::default();
        Ok(Some(item))
    }

    /// Checks that the stream ended on an item boundary.
    pub fn finish(self) -> Result<(), ObjectError> {
        match self.buf.len() - self.start {
            0 => Ok(()),
            n => Err(ObjectError::TruncatedStream(n)),
        }
    }
}

/// Finds the end of one msgpack value, resumable across feeds. It only reads headers
/// (no allocation); `pending` holds, per open container, how many values it still needs.
#[derive(Debug, Default)]
struct Scanner {
    pos: usize,
    pending: Vec<u64>,
    started: bool,
}

impl Scanner {
    /// Length of the value at the start of `buf` once complete, `None` while incomplete.
    fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, ObjectError> {
        if !self.started {
            self.pending.push(1);
            self.started = true;
        }
        loop {
            while self.pending.last() == Some(&0) {
                self.pending.pop();
            }
            if self.pending.is_empty() {
                return Ok(Some(self.pos));
            }
            let Some((head, body, children)) = header(&buf[self.pos..])? else {
                return Ok(None);
            };
            let end = (self.pos as u64)
                .checked_add(head + body)
                .filter(|&e| e <= buf.len() as u64);
            let Some(end) = end else {
                return Ok(None);
            };
            if let Some(top) = self.pending.last_mut() {
                *top -= 1;
            }
            self.pos = end as usize;
            if children > 0 {
                if self.pending.len() >= limits::MAX_DEPTH {
                    return Err(ObjectError::Msgpack {
                        object: "item",
                        reason: "nesting too deep".into(),
                    });
                }
                self.pending.push(children);
            }
        }
    }
}

/// (header length, payload length, number of child values) of the value starting `b`.
fn header(b: &[u8]) -> Result<Option<(u64, u64, u64)>, ObjectError> {
    let Some(&m) = b.first() else {
        return Ok(None);
    };
    // big-endian length of `n` bytes following the marker
    let len = |n: usize| -> Option<u64> {
        b.get(1..1 + n)
            .map(|s| s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    };
    let r = match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
        0x80..=0x8f => (1, 0, 2 * u64::from(m & 0x0f)),
        0x90..=0x9f => (1, 0, u64::from(m & 0x0f)),
        0xa0..=0xbf => (1, u64::from(m & 0x1f), 0),
        0xc4 | 0xd9 => match len(1) {
            Some(n) => (2, n, 0),
            None => return Ok(None),
        },
        0xc5 | 0xda => match len(2) {
            Some(n) => (3, n, 0),
            None => return Ok(None),
        },
        0xc6 | 0xdb => match len(4) {
            Some(n) => (5, n, 0),
            None => return Ok(None),
        },
        // ext 8/16/32: length, then a type byte
        0xc7 => match len(1) {
            Some(n) => (3, n, 0),
            None => return Ok(None),
        },
        0xc8 => match len(2) {
            Some(n) => (4, n, 0),
            None => return Ok(None),
        },
        0xc9 => match len(4) {
            Some(n) => (6, n, 0),
            None => return Ok(None),
        },
        0xca => (1, 4, 0),
        0xcb => (1, 8, 0),
        0xcc | 0xd0 => (1, 1, 0),
        0xcd | 0xd1 => (1, 2, 0),
        0xce | 0xd2 => (1, 4, 0),
        0xcf | 0xd3 => (1, 8, 0),
        // fixext 1/2/4/8/16: type byte + data
        0xd4 => (2, 1, 0),
        0xd5 => (2, 2, 0),
        0xd6 => (2, 4, 0),
        0xd7 => (2, 8, 0),
        0xd8 => (2, 16, 0),
        0xdc => match len(2) {
            Some(n) => (3, 0, n),
            None => return Ok(None),
        },
        0xdd => match len(4) {
            Some(n) => (5, 0, n),
            None => return Ok(None),
        },
        0xde => match len(2) {
            Some(n) => (3, 0, 2 * n),
            None => return Ok(None),
        },
        0xdf => match len(4) {
            Some(n) => (5, 0, 2 * n),
            None => return Ok(None),
        },
        0xc1 => {
            return Err(ObjectError::Msgpack {
                object: "item",
                reason: "reserved marker 0xc1".into(),
            })
        }
    };
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::msgpack::{write_array_len, write_map_len, write_raw};
    use crate::format::objects::ChunkRef;

    fn items() -> Vec<Item> {
        (0..50u32)
            .map(|i| Item {
                path: format!("dir/file{i}").into_bytes(),
                mode: 0o100644,
                mtime: i64::from(i) * 1_000_000_007,
                chunks: Some(
                    (0..i)
                        .map(|j| ChunkRef {
                            id: [j as u8; 32],
                            size: j,
                            csize: j + 1,
                        })
                        .collect(),
                ),
                size: Some((0..i).map(u64::from).sum()),
                hardlink_master: Some(false),
                ..Default::default()
            })
            .collect()
    }

    fn stream(items: &[Item]) -> Vec<u8> {
        let mut b = Vec::new();
        for it in items {
            it.encode(&mut b);
        }
        b
    }

    #[test]
    fn whole_stream() {
        let it = items();
        assert_eq!(decode_item_stream(&stream(&it)).unwrap(), it);
        assert!(decode_item_stream(&[]).unwrap().is_empty());
    }

    #[test]
    fn any_cut_points() {
        let it = items();
        let s = stream(&it);
        for step in [1usize, 2, 7, 31, 100, 4096] {
            let mut d = ItemStreamDecoder::new();
            let mut got = Vec::new();
            for piece in s.chunks(step) {
                d.feed(piece);
                while let Some(x) = d.next_item().unwrap() {
                    got.push(x);
                }
            }
            d.finish().unwrap();
            assert_eq!(got, it, "step {step}");
        }
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let s = stream(&items());
        for cut in [1, s.len() / 2, s.len() - 1] {
            assert!(decode_item_stream(&s[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn non_map_and_bad_markers() {
        assert!(decode_item_stream(&[0x01]).is_err());
        assert!(decode_item_stream(&[0xc1]).is_err());
        let mut d = ItemStreamDecoder::new();
        d.feed(&[0xc1]);
        assert!(d.next_item().is_err());
        assert!(d.next_item().is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut b = vec![0x91; 100_000];
        b.push(0xc0);
        assert!(decode_item_stream(&b).is_err());
    }

    #[test]
    fn huge_claimed_lengths_just_wait() {
        let mut d = ItemStreamDecoder::new();
        d.feed(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xdb, 0xff, 0xff, 0xff]);
        assert!(d.next_item().unwrap().is_none());
        assert!(matches!(d.finish(), Err(ObjectError::TruncatedStream(9))));
    }

    #[test]
    fn bin_and_str8_variants_decode() {
        // borg 1.x never writes bin or str8, but other writers may: decode both
        let mut b = Vec::new();
        write_map_len(&mut b, 3);
        b.extend_from_slice(&[0xc4, 4]);
        b.extend_from_slice(b"path");
        b.extend_from_slice(&[0xd9, 3]);
        b.extend_from_slice(b"a/b");
        write_raw(&mut b, b"mode");
        b.push(0x01);
        write_raw(&mut b, b"mtime");
        write_array_len(&mut b, 0);
        assert!(decode_item_stream(&b).is_err(), "mtime as array");
        let n = b.len();
        b[n - 1] = 0x05;
        // now a 3-key map whose last value is 5: path+mode+mtime present
        let got = decode_item_stream(&b).unwrap();
        assert_eq!(got[0].path, b"a/b");
        assert_eq!(got[0].mtime, 5);
    }
}
