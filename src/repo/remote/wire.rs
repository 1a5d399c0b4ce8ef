//! The `borg serve` wire format: requests packed the way borg packs them, and the
//! streaming split of the server's byte stream into replies.
//!
//! Both directions are a bare concatenation of msgpack values (no length prefix), so the
//! receiver has to find where one value ends before it can decode it.

use crate::format::msgpack::{self as mp, DecodeError};
use rmpv::Value;

/// One argument of an RPC call. Byte strings go out as msgpack raw (never bin: a 1.2
/// server's limited unpacker rejects bin).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg<'a> {
    Bytes(&'a [u8]),
    Bool(bool),
    UInt(u64),
    Float(f64),
    Nil,
}

fn write_arg(buf: &mut Vec<u8>, arg: &Arg<'_>) {
    match *arg {
        Arg::Bytes(b) => mp::write_raw(buf, b),
        Arg::Bool(b) => mp::write_bool(buf, b),
        Arg::UInt(v) => mp::write_uint(buf, v),
        Arg::Float(f) => {
            buf.push(0xcb);
            buf.extend_from_slice(&f.to_be_bytes());
        }
        Arg::Nil => mp::write_nil(buf),
    }
}

/// Packs a dict-format request `{b'i': msgid, b'm': method, b'a': {name: value}}`.
///
/// The argument map holds at most a handful of entries, far below the 100-element limit
/// of a 1.2 server's unpacker.
pub fn encode_request(msgid: u64, method: &str, args: &[(&str, Arg<'_>)]) -> Vec<u8> {
    let payload: usize = args
        .iter()
        .map(|(_, a)| match a {
            Arg::Bytes(b) => b.len(),
            _ => 0,
        })
        .sum();
    let mut buf = Vec::with_capacity(payload + 32 + 24 * args.len());
    mp::write_map_len(&mut buf, 3);
    mp::write_raw(&mut buf, b"i");
    mp::write_uint(&mut buf, msgid);
    mp::write_raw(&mut buf, b"m");
    mp::write_raw(&mut buf, method.as_bytes());
    mp::write_raw(&mut buf, b"a");
    mp::write_map_len(&mut buf, args.len());
    for (name, value) in args {
        mp::write_raw(&mut buf, name.as_bytes());
        write_arg(&mut buf, value);
    }
    buf
}

/// Packs the first message, `negotiate`, in the legacy tuple format every server
/// understands: `[1, msgid, b'negotiate', [{b'client_version': version}]]`.
pub fn encode_negotiate(msgid: u64, client_version: &[i64]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(48);
    mp::write_array_len(&mut buf, 4);
    mp::write_uint(&mut buf, 1);
    mp::write_uint(&mut buf, msgid);
    mp::write_raw(&mut buf, b"negotiate");
    mp::write_array_len(&mut buf, 1);
    mp::write_map_len(&mut buf, 1);
    mp::write_raw(&mut buf, b"client_version");
    mp::write_array_len(&mut buf, client_version.len());
    for &v in client_version {
        mp::write_int(&mut buf, v);
    }
    buf
}

fn be(buf: &[u8], at: usize, n: usize) -> Option<u64> {
    let b = buf.get(at..at + n)?;
    Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
}

/// Length of the first complete msgpack value in `buf`: `Ok(None)` while more bytes are
/// needed. Only headers are walked, so a large payload arriving in pieces is never
/// decoded twice. A value that would exceed `max` bytes is an error: a confused peer
/// must not make us buffer without end.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    let mut pos = 0usize;
    let mut remaining: u64 = 1;
    while remaining > 0 {
        remaining -= 1;
        let Some(&m) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        // (bytes to skip, elements to add)
        let (skip, items): (u64, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (m & 0x0f) as u64),
            0x90..=0x9f => (0, (m & 0x0f) as u64),
            0xa0..=0xbf => ((m & 0x1f) as u64, 0),
            0xc4 | 0xd9 => match be(buf, pos, 1) {
                Some(n) => (1 + n, 0),
                None => return Ok(None),
            },
            0xc5 | 0xda => match be(buf, pos, 2) {
                Some(n) => (2 + n, 0),
                None => return Ok(None),
            },
            0xc6 | 0xdb => match be(buf, pos, 4) {
                Some(n) => (4 + n, 0),
                None => return Ok(None),
            },
            0xc7 => match be(buf, pos, 1) {
                Some(n) => (2 + n, 0),
                None => return Ok(None),
            },
            0xc8 => match be(buf, pos, 2) {
                Some(n) => (3 + n, 0),
                None => return Ok(None),
            },
            0xc9 => match be(buf, pos, 4) {
                Some(n) => (5 + n, 0),
                None => return Ok(None),
            },
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => match be(buf, pos, 2) {
                Some(n) => (2, n),
                None => return Ok(None),
            },
            0xdd => match be(buf, pos, 4) {
                Some(n) => (4, n),
                None => return Ok(None),
            },
            0xde => match be(buf, pos, 2) {
                Some(n) => (2, 2 * n),
                None => return Ok(None),
            },
            0xdf => match be(buf, pos, 4) {
                Some(n) => (4, 2 * n),
                None => return Ok(None),
            },
            0xc1 => {
                return Err(DecodeError(format!(
                    "reserved marker 0xc1 at offset {}",
                    pos - 1
                )))
            }
        };
        let end = pos as u64 + skip;
        // Every element takes at least one byte, so this also bounds nested counts.
        if end.saturating_add(items) > max as u64 {
            return Err(DecodeError(format!(
                "message larger than the {max} bytes allowed"
            )));
        }
        pos = end as usize;
        remaining += items;
        if pos > buf.len() {
            return Ok(None);
        }
    }
    Ok(Some(pos))
}

/// An exception the server reported for one call.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteError {
    /// The Python class name (`ObjectNotFound`, `LockTimeout`, …).
    pub class: String,
    /// `exception_args`, as sent (absent from pre-1.1 servers).
    pub args: Vec<Value>,
    /// `exception_short` joined: the message borg would print.
    pub short: String,
}

impl RemoteError {
    /// Argument `i` as text (bytes decoded lossily, numbers formatted).
    pub fn arg(&self, i: usize) -> Option<String> {
        match self.args.get(i)? {
            Value::Integer(n) => Some(n.to_string()),
            v => mp::as_bytes(v).map(|b| String::from_utf8_lossy(b).into_owned()),
        }
    }
}

/// One reply: the id of the request it answers and its result or exception.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub msgid: u64,
    pub outcome: Result<Value, RemoteError>,
}

fn text_lines(v: &Value) -> String {
    match v {
        Value::Array(lines) => lines
            .iter()
            .filter_map(mp::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
        other => mp::as_bytes(other)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
    }
}

/// Interprets one value from the server: a dict-format reply (`{i, r}` or an exception
/// dict) or a legacy tuple `[1, msgid, error_class_or_nil, result]`.
pub fn parse_reply(v: Value) -> Result<Reply, DecodeError> {
    match v {
        Value::Map(entries) => {
            let mut msgid = None;
            let mut result = None;
            let mut class = None;
            let mut args = Vec::new();
            let mut short = String::new();
            for (k, x) in entries {
                match mp::as_bytes(&k) {
                    Some(b"i") => msgid = x.as_u64(),
                    Some(b"r") => result = Some(x),
                    Some(b"exception_class") => {
                        class = mp::as_bytes(&x).map(|b| String::from_utf8_lossy(b).into_owned())
                    }
                    Some(b"exception_args") => {
                        if let Value::Array(a) = x {
                            args = a;
                        }
                    }
                    Some(b"exception_short") => short = text_lines(&x),
                    _ => {}
                }
            }
            let msgid = msgid.ok_or_else(|| DecodeError("reply without a message id".into()))?;
            let outcome = match (class, result) {
                (Some(class), _) => {
                    let short = if short.trim().is_empty() {
                        class.clone()
                    } else {
                        short.trim_end().to_string()
                    };
                    Err(RemoteError { class, args, short })
                }
                (None, Some(r)) => Ok(r),
                (None, None) => {
                    return Err(DecodeError(format!(
                        "reply {msgid} holds neither a result nor an exception"
                    )))
                }
            };
            Ok(Reply { msgid, outcome })
        }
        Value::Array(mut a) if a.len() == 4 => {
            let result = a.pop().unwrap_or(Value::Nil);
            let error = a.pop().unwrap_or(Value::Nil);
            let msgid = a[1]
                .as_u64()
                .ok_or_else(|| DecodeError("tuple reply without a message id".into()))?;
            let outcome = match error {
                Value::Nil => Ok(result),
                e => {
                    let class = mp::as_bytes(&e)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_else(|| "Exception".into());
                    Err(RemoteError {
                        short: class.clone(),
                        class,
                        args: Vec::new(),
                    })
                }
            };
            Ok(Reply { msgid, outcome })
        }
        other => Err(DecodeError(format!(
            "unexpected reply from the server: {}",
            short_debug(&other)
        ))),
    }
}

fn short_debug(v: &Value) -> String {
    let mut s = format!("{v}");
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Splits a growing byte stream into replies.
#[derive(Default)]
pub struct ReplyStream {
    buf: Vec<u8>,
    start: usize,
}

impl ReplyStream {
    /// Room to read into: returns the tail slice of `n` fresh bytes; call
    /// [`ReplyStream::commit`] with how many were filled.
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + n, 0);
        &mut self.buf[len..]
    }

    /// Keeps `filled` of the bytes handed out by the last [`ReplyStream::spare`].
    pub fn commit(&mut self, spare: usize, filled: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - spare + filled.min(spare));
    }

    /// Appends bytes (for callers that read into their own buffer).
    #[cfg(test)]
    pub fn feed(&mut self, data: &[u8]) {
        let spare = self.spare(data.len());
        spare.copy_from_slice(data);
    }

    /// The next complete reply, if all its bytes have arrived.
    pub fn next_reply(&mut self, max: usize) -> Result<Option<Reply>, DecodeError> {
        let pending = &self.buf[self.start..];
        let Some(n) = frame_len(pending, max)? else {
            return Ok(None);
        };
        let value = mp::decode_one(&pending[..n])?;
        self.start += n;
        parse_reply(value).map(Some)
    }

    /// Bytes received but not yet part of a complete reply.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &Value) -> &[u8] {
        mp::as_bytes(v).unwrap()
    }

    #[test]
    fn negotiate_matches_borg_bytes() {
        // borg 1.4.5's first message, as captured on the wire.
        let mut want = vec![0x94, 0x01, 0x01, 0xa9];
        want.extend_from_slice(b"negotiate");
        want.extend_from_slice(&[0x91, 0x81, 0xae]);
        want.extend_from_slice(b"client_version");
        want.extend_from_slice(&[0x94, 0x01, 0x04, 0x05, 0xff]);
        assert_eq!(encode_negotiate(1, &[1, 4, 5, -1]), want);
    }

    #[test]
    fn open_request_matches_borg_bytes() {
        let got = encode_request(
            2,
            "open",
            &[
                ("path", Arg::Bytes(b"/srv/ex/rrepo")),
                ("create", Arg::Bool(false)),
                ("lock_wait", Arg::UInt(1)),
                ("lock", Arg::Bool(true)),
                ("exclusive", Arg::Bool(true)),
                ("append_only", Arg::Bool(false)),
                ("make_parent_dirs", Arg::Bool(false)),
            ],
        );
        let mut want = vec![0x83, 0xa1, b'i', 0x02, 0xa1, b'm', 0xa4];
        want.extend_from_slice(b"open");
        want.extend_from_slice(&[0xa1, b'a', 0x87, 0xa4]);
        want.extend_from_slice(b"path");
        want.push(0xad);
        want.extend_from_slice(b"/srv/ex/rrepo");
        want.push(0xa6);
        want.extend_from_slice(b"create");
        want.push(0xc2);
        want.push(0xa9);
        want.extend_from_slice(b"lock_wait");
        want.push(0x01);
        want.push(0xa4);
        want.extend_from_slice(b"lock");
        want.push(0xc3);
        want.push(0xa9);
        want.extend_from_slice(b"exclusive");
        want.push(0xc3);
        want.push(0xab);
        want.extend_from_slice(b"append_only");
        want.push(0xc2);
        want.push(0xb0);
        want.extend_from_slice(b"make_parent_dirs");
        want.push(0xc2);
        assert_eq!(got, want);
    }

    #[test]
    fn requests_never_use_bin_and_floats_are_f64() {
        let data = vec![7u8; 70_000];
        let got = encode_request(
            9,
            "put",
            &[("id", Arg::Bytes(&[1; 32])), ("data", Arg::Bytes(&data))],
        );
        let v = mp::decode_one(&got).unwrap();
        let a = mp::map_get(&v, b"a").unwrap();
        assert_eq!(bytes(mp::map_get(a, b"data").unwrap()).len(), 70_000);
        // rmpv decodes raw/str as String and bin as Binary.
        assert!(matches!(mp::map_get(a, b"data").unwrap(), Value::String(_)));
        assert!(matches!(mp::map_get(a, b"id").unwrap(), Value::String(_)));
        let f = encode_request(1, "open", &[("lock_wait", Arg::Float(2.5))]);
        let v = mp::decode_one(&f).unwrap();
        assert_eq!(
            mp::map_get(mp::map_get(&v, b"a").unwrap(), b"lock_wait")
                .unwrap()
                .as_f64(),
            Some(2.5)
        );
    }

    #[test]
    fn frame_len_handles_every_split_point() {
        let mut stream = Vec::new();
        let big = vec![0xabu8; 100_000];
        let mut one = Vec::new();
        mp::write_map_len(&mut one, 2);
        mp::write_raw(&mut one, b"i");
        mp::write_uint(&mut one, 3);
        mp::write_raw(&mut one, b"r");
        mp::write_raw(&mut one, &big);
        stream.extend_from_slice(&one);
        let mut two = Vec::new();
        mp::write_map_len(&mut two, 2);
        mp::write_raw(&mut two, b"i");
        mp::write_uint(&mut two, 4);
        mp::write_raw(&mut two, b"r");
        mp::write_array_len(&mut two, 3);
        for x in [-1i64, 1 << 40, 0] {
            mp::write_int(&mut two, x);
        }
        stream.extend_from_slice(&two);
        for cut in [
            0,
            1,
            2,
            5,
            6,
            7,
            one.len() - 1,
            one.len(),
            one.len() + 3,
            stream.len() - 1,
        ] {
            let got = frame_len(&stream[..cut], 1 << 20).unwrap();
            if cut >= one.len() {
                assert_eq!(got, Some(one.len()), "cut {cut}");
            } else {
                assert_eq!(got, None, "cut {cut}");
            }
        }
        assert_eq!(frame_len(&two, 1 << 20).unwrap(), Some(two.len()));
        let mut rs = ReplyStream::default();
        for piece in stream.chunks(777) {
            rs.feed(piece);
        }
        let r1 = rs.next_reply(1 << 20).unwrap().unwrap();
        assert_eq!(r1.msgid, 3);
        assert_eq!(bytes(r1.outcome.as_ref().unwrap()), &big[..]);
        let r2 = rs.next_reply(1 << 20).unwrap().unwrap();
        assert_eq!(r2.msgid, 4);
        assert!(rs.next_reply(1 << 20).unwrap().is_none());
        assert_eq!(rs.pending(), 0);
    }

    #[test]
    fn frame_len_agrees_with_rmpv_on_all_types() {
        let vals = vec![
            Value::Nil,
            Value::Boolean(true),
            Value::from(-5),
            Value::from(200u64),
            Value::from(70000u64),
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::F32(1.5),
            Value::F64(2.5),
            Value::Binary(vec![1; 300]),
            Value::String("x".repeat(40).into()),
            Value::Array(vec![Value::from(1); 20]),
            Value::Map(vec![(Value::from(1), Value::Nil); 20]),
            Value::Ext(5, vec![1]),
            Value::Ext(5, vec![1; 16]),
            Value::Ext(5, vec![1; 17]),
        ];
        for v in vals {
            let mut b = Vec::new();
            rmpv::encode::write_value(&mut b, &v).unwrap();
            assert_eq!(frame_len(&b, 1 << 20).unwrap(), Some(b.len()), "{v:?}");
            for cut in 0..b.len() {
                assert_eq!(
                    frame_len(&b[..cut], 1 << 20).unwrap(),
                    None,
                    "{v:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn frame_len_rejects_garbage_and_oversize() {
        assert!(frame_len(&[0xc1], 100).is_err());
        // A str32 claiming 4 GiB must not be waited for.
        assert!(frame_len(&[0xdb, 0xff, 0xff, 0xff, 0xff], 1 << 20).is_err());
        assert!(frame_len(&[0xdd, 0xff, 0xff, 0xff, 0xff], 1 << 20).is_err());
    }

    #[test]
    fn parses_error_dicts_and_tuples() {
        let mut b = Vec::new();
        mp::write_map_len(&mut b, 4);
        mp::write_raw(&mut b, b"i");
        mp::write_uint(&mut b, 7);
        mp::write_raw(&mut b, b"exception_class");
        mp::write_raw(&mut b, b"ObjectNotFound");
        mp::write_raw(&mut b, b"exception_args");
        mp::write_array_len(&mut b, 2);
        mp::write_raw(&mut b, b"abcd");
        mp::write_raw(&mut b, b"/srv/r");
        mp::write_raw(&mut b, b"exception_short");
        mp::write_array_len(&mut b, 1);
        mp::write_raw(
            &mut b,
            b"Object with key abcd not found in repository /srv/r.",
        );
        let r = parse_reply(mp::decode_one(&b).unwrap()).unwrap();
        assert_eq!(r.msgid, 7);
        let e = r.outcome.unwrap_err();
        assert_eq!(e.class, "ObjectNotFound");
        assert_eq!(e.arg(0).as_deref(), Some("abcd"));
        assert_eq!(e.arg(1).as_deref(), Some("/srv/r"));
        assert!(e.short.contains("not found"));

        // The negotiate answer comes as a tuple.
        let v = Value::Array(vec![
            Value::from(1),
            Value::from(1),
            Value::Nil,
            Value::Map(vec![(
                mp::raw(b"server_version"),
                Value::Array(vec![Value::from(1), Value::from(2)]),
            )]),
        ]);
        let r = parse_reply(v).unwrap();
        assert_eq!(r.msgid, 1);
        assert!(mp::map_get(r.outcome.as_ref().unwrap(), b"server_version").is_some());
        let v = Value::Array(vec![
            Value::from(1),
            Value::from(3),
            mp::raw(b"TypeError"),
            mp::raw(b"x"),
        ]);
        assert_eq!(
            parse_reply(v).unwrap().outcome.unwrap_err().class,
            "TypeError"
        );

        assert!(parse_reply(Value::from(5)).is_err());
        assert!(parse_reply(Value::Map(vec![(mp::raw(b"i"), Value::from(1))])).is_err());
    }
}
