//! msgpack the way borg 1.x packs it: every byte string and text string as a *raw/str*
//! type, never *bin* (borg 1.2's limited unpackers reject bin, 1.4's cache sync dies on
//! it). Decoding goes through `rmpv` and accepts both.

use rmpv::Value;

/// Appends a byte string as msgpack raw/str, with the framing Python's packer uses
/// (fixstr, str16, str32 — it never emits str8).
pub fn write_raw(buf: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n < 32 {
        buf.push(0xa0 | n as u8);
    } else if n < 0x1_0000 {
        buf.push(0xda);
        buf.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        buf.push(0xdb);
        buf.extend_from_slice(&(n as u32).to_be_bytes());
    }
    buf.extend_from_slice(b);
}

/// Appends an unsigned integer in its smallest encoding.
pub fn write_uint(buf: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
    } else if v <= u8::MAX as u64 {
        buf.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u16::MAX as u64 {
        buf.push(0xcd);
        buf.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u32::MAX as u64 {
        buf.push(0xce);
        buf.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        buf.push(0xcf);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends a signed integer in its smallest encoding (non-negative values as uint).
pub fn write_int(buf: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(buf, v as u64);
    } else if v >= -32 {
        buf.push(v as i8 as u8);
    } else if v >= i8::MIN as i64 {
        buf.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i16::MIN as i64 {
        buf.push(0xd1);
        buf.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN as i64 {
        buf.push(0xd2);
        buf.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        buf.push(0xd3);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn write_bool(buf: &mut Vec<u8>, v: bool) {
    buf.push(if v { 0xc3 } else { 0xc2 });
}

pub fn write_nil(buf: &mut Vec<u8>) {
    buf.push(0xc0);
}

pub fn write_map_len(buf: &mut Vec<u8>, n: usize) {
    if n < 16 {
        buf.push(0x80 | n as u8);
    } else if n < 0x1_0000 {
        buf.push(0xde);
        buf.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        buf.push(0xdf);
        buf.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

pub fn write_array_len(buf: &mut Vec<u8>, n: usize) {
    if n < 16 {
        buf.push(0x90 | n as u8);
    } else if n < 0x1_0000 {
        buf.push(0xdc);
        buf.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        buf.push(0xdd);
        buf.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Writes an `rmpv::Value` with borg's conventions (strings and binaries both as raw).
/// Used to carry through values we do not model (e.g. the manifest `config`).
pub fn write_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Nil => write_nil(buf),
        Value::Boolean(b) => write_bool(buf, *b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                write_uint(buf, u)
            } else {
                write_int(buf, i.as_i64().unwrap_or_default())
            }
        }
        Value::F32(f) => {
            buf.push(0xca);
            buf.extend_from_slice(&f.to_be_bytes());
        }
        Value::F64(f) => {
            buf.push(0xcb);
            buf.extend_from_slice(&f.to_be_bytes());
        }
        Value::String(s) => write_raw(buf, s.as_bytes()),
        Value::Binary(b) => write_raw(buf, b),
        Value::Array(a) => {
            write_array_len(buf, a.len());
            for x in a {
                write_value(buf, x);
            }
        }
        Value::Map(m) => {
            write_map_len(buf, m.len());
            for (k, x) in m {
                write_value(buf, k);
                write_value(buf, x);
            }
        }
        Value::Ext(t, d) => {
            // borg never writes ext types; keep them intact if a reader handed us one.
            let _ = rmp::encode::write_ext_meta(buf, d.len() as u32, *t);
            buf.extend_from_slice(d);
        }
    }
}

/// Error decoding a msgpack value.
#[derive(Debug, thiserror::Error)]
#[error("malformed msgpack: {0}")]
pub struct DecodeError(pub String);

/// Decodes exactly one value from the start of `data`, returning it and the bytes used.
pub fn read_value(data: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut rd = data;
    let v = rmpv::decode::read_value(&mut rd).map_err(|e| DecodeError(e.to_string()))?;
    Ok((v, data.len() - rd.len()))
}

/// Decodes a buffer that must hold exactly one value.
pub fn decode_one(data: &[u8]) -> Result<Value, DecodeError> {
    let (v, used) = read_value(data)?;
    if used != data.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes after the value",
            data.len() - used
        )));
    }
    Ok(v)
}

/// The bytes of a raw/str or bin value.
pub fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::String(s) => Some(s.as_bytes()),
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// Looks a key up in a msgpack map whose keys are byte strings.
pub fn map_get<'a>(v: &'a Value, key: &[u8]) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| as_bytes(k) == Some(key))
            .map(|(_, x)| x),
        _ => None,
    }
}

/// Builds a raw-string `Value` (what borg's unpacker gives back for bytes).
pub fn raw(b: &[u8]) -> Value {
    Value::Binary(b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_never_uses_bin_or_str8() {
        for n in [0usize, 31, 32, 255, 256, 65535, 65536] {
            let mut b = Vec::new();
            write_raw(&mut b, &vec![b'x'; n]);
            assert!(!matches!(b[0], 0xc4..=0xc6 | 0xd9), "len {n}: {:#x}", b[0]);
            let (v, used) = read_value(&b).unwrap();
            assert_eq!(used, b.len());
            assert_eq!(as_bytes(&v).unwrap().len(), n);
        }
    }

    #[test]
    fn ints_round_trip_smallest() {
        for v in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            -1,
            -32,
            -33,
            -128,
            -129,
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = Vec::new();
            write_int(&mut b, v);
            let mut r = &b[..];
            let got = rmpv::decode::read_value(&mut r).unwrap();
            assert_eq!(got.as_i64(), Some(v));
            let mut b2 = Vec::new();
            rmp::encode::write_sint(&mut b2, v).unwrap();
            assert_eq!(b, b2, "{v}");
        }
    }

    #[test]
    fn non_utf8_bytes_survive() {
        let mut b = Vec::new();
        write_raw(&mut b, b"\xff\xfe name");
        let v = decode_one(&b).unwrap();
        assert_eq!(as_bytes(&v), Some(&b"\xff\xfe name"[..]));
        let mut again = Vec::new();
        write_value(&mut again, &v);
        assert_eq!(again, b);
    }

    #[test]
    fn truncated_is_error() {
        let mut b = Vec::new();
        write_raw(&mut b, b"hello world");
        assert!(decode_one(&b[..5]).is_err());
    }
}
