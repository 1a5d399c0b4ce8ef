//! borg 1.x chunk compression (`borg/compress.pyx`): a 2-byte codec header followed by the
//! codec's payload, except zlib, whose bare stream is recognised by its own header.
//!
//! Compression runs on the plaintext after the chunk ID is computed, so compressed bytes need
//! not match borg's bit for bit — they only have to decode in borg (and borg's in ours).

mod codec;
mod obfuscate;
mod spec;

use std::fmt;

pub use spec::SpecError;

/// Length of the codec header in front of every (non-zlib) payload.
pub const HEADER_LEN: usize = 2;
/// borg's `MAX_DATA_SIZE`: the largest object payload a repository stores (20 MiB − 41).
pub const MAX_DATA_SIZE: usize = 20_971_479;
/// Default bound on decompressed output. borg never stores chunks larger than
/// `MAX_DATA_SIZE`; the slack tolerates foreign writers without letting a hostile
/// object make us allocate without limit.
pub const DEFAULT_MAX_OUTPUT: usize = 3 * 20 * 1024 * 1024;

/// A compression setting, as given to `borg create --compression`.
///
/// Levels outside a codec's range (possible only when building the value directly, the
/// parser rejects them) are clamped by the codec rather than failing at compression time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `00 00` + raw data.
    None,
    /// Raw LZ4 block (borg's default).
    Lz4,
    /// One zstd frame, levels 1–22.
    Zstd { level: i32 },
    /// xz container without integrity check, presets 0–9.
    Lzma { level: u32 },
    /// Bare zlib stream (legacy attic format), levels 0–9.
    Zlib { level: u32 },
    /// Try LZ4 first and use the inner compressor only when the data looks compressible.
    Auto(Box<Compression>),
    /// Pad the inner compressor's output to hide the chunk size.
    Obfuscate { level: u32, inner: Box<Compression> },
}

impl Default for Compression {
    /// borg's default for `create` and for metadata objects.
    fn default() -> Self {
        Compression::Lz4
    }
}

/// The codec a stored payload was written with, as detected from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    None,
    Lz4,
    Zstd,
    Lzma,
    Zlib,
    Obfuscate,
}

impl Codec {
    /// borg's name for the codec.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
            Codec::Lzma => "lzma",
            Codec::Zlib => "zlib",
            Codec::Obfuscate => "obfuscate",
        }
    }

    /// The 2-byte header borg writes for this codec (zlib has none of its own; its
    /// stream header starts `78 ..` for the usual window size).
    pub fn header(self) -> Option<[u8; 2]> {
        match self {
            Codec::None => Some(codec::HDR_NONE),
            Codec::Lz4 => Some(codec::HDR_LZ4),
            Codec::Zstd => Some(codec::HDR_ZSTD),
            Codec::Lzma => Some(codec::HDR_LZMA),
            Codec::Obfuscate => Some(obfuscate::HDR_OBFUSCATE),
            Codec::Zlib => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stored payload could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("compressed data is {len} bytes, too short for a compression header")]
    TooShort { len: usize },
    #[error("no decompressor for compression header {:02x}{:02x}", .0[0], .0[1])]
    UnknownHeader([u8; 2]),
    #[error("corrupt {codec} data: {reason}")]
    Corrupt { codec: Codec, reason: String },
    #[error("{codec} data decompresses to more than {limit} bytes")]
    TooLarge { codec: Codec, limit: usize },
}

impl CompressError {
    fn corrupt(codec: Codec, reason: impl fmt::Display) -> Self {
        CompressError::Corrupt {
            codec,
            reason: reason.to_string(),
        }
    }
}

/// Detects the codec of a stored payload, testing headers in borg's order
/// (LZ4, ZSTD, CNONE, ZLIB, LZMA, ObfuscateSize).
pub fn detect(data: &[u8]) -> Result<Codec, CompressError> {
    let hdr: [u8; 2] = match data {
        [a, b, ..] => [*a, *b],
        _ => return Err(CompressError::TooShort { len: data.len() }),
    };
    Ok(match hdr {
        codec::HDR_LZ4 => Codec::Lz4,
        codec::HDR_ZSTD => Codec::Zstd,
        codec::HDR_NONE => Codec::None,
        h if codec::is_zlib_header(h) => Codec::Zlib,
        codec::HDR_LZMA => Codec::Lzma,
        obfuscate::HDR_OBFUSCATE => Codec::Obfuscate,
        h => return Err(CompressError::UnknownHeader(h)),
    })
}

/// Decompresses anything borg 1.2/1.4 writes, with output bounded by [`DEFAULT_MAX_OUTPUT`].
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    decompress_limited(data, DEFAULT_MAX_OUTPUT)
}

/// Like [`decompress`], refusing payloads that would expand beyond `max_output` bytes.
pub fn decompress_limited(data: &[u8], max_output: usize) -> Result<Vec<u8>, CompressError> {
    // Obfuscation layers only wrap another payload: peel them iteratively so nesting
    // depth cannot exhaust the stack.
    let mut data = data;
    loop {
        let codec = detect(data)?;
        let body = &data[HEADER_LEN..];
        return match codec {
            Codec::Obfuscate => {
                data = obfuscate::unwrap(body)?;
                continue;
            }
            Codec::None => {
                if body.len() > max_output {
                    return Err(CompressError::TooLarge {
                        codec,
                        limit: max_output,
                    });
                }
                Ok(body.to_vec())
            }
            Codec::Lz4 => codec::lz4_decompress(body, max_output),
            Codec::Zstd => codec::zstd_decompress(body, max_output),
            Codec::Lzma => codec::lzma_decompress(body, max_output),
            Codec::Zlib => codec::zlib_decompress(data, max_output),
        };
    }
}

impl Compression {
    /// Compressed payload with borg's 2-byte header (zlib: the bare zlib stream, as borg).
    /// LZ4, zstd and LZMA store `00 00` + raw data when compressing does not make the data
    /// smaller (borg's `DecidingCompressor`); `auto` applies borg's heuristic exactly.
    pub fn compress(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.compress_into(data, &mut out);
        out
    }

    /// Appends the compressed payload to `out`, so callers can reserve room for their own
    /// envelope in front of it without copying.
    pub fn compress_into(&self, data: &[u8], out: &mut Vec<u8>) {
        self.compress_with(data, out, &mut obfuscate::os_random)
    }

    /// Writes the compressed payload into `out` from `at` on (`out` holds at least `at`
    /// bytes) and returns where it ends. Bytes of `out` past `at`, left from an earlier
    /// use of the buffer, are overwritten or stay past the end, and `out` keeps its
    /// length: LZ4 needs the input's size as room, and a recycled buffer that keeps it is
    /// not zeroed again for every chunk (4% of an image backup's CPU).
    pub fn compress_reusing(&self, data: &[u8], out: &mut Vec<u8>, at: usize) -> usize {
        match self {
            Compression::Lz4 => codec::lz4_at(data, out, at),
            _ => {
                out.truncate(at);
                self.compress_into(data, out);
                out.len()
            }
        }
    }

    /// [`compress_reusing`](Self::compress_reusing), except that a chunk stored as it is
    /// (`none`, or LZ4 that cannot shrink it) is not copied: only the header is written and
    /// `true` says that `data` itself belongs in `out[at + HEADER_LEN..end]`. A caller that
    /// encrypts can write it there as it encrypts, instead of copying it first.
    pub fn compress_deferring(&self, data: &[u8], out: &mut Vec<u8>, at: usize) -> (usize, bool) {
        match self {
            Compression::Lz4 => codec::lz4_at_deferred(data, out, at),
            Compression::None => (codec::none_at_deferred(data, out, at), true),
            _ => (self.compress_reusing(data, out, at), false),
        }
    }

    /// `compress_into` with the random source for size obfuscation injected.
    fn compress_with(&self, data: &[u8], out: &mut Vec<u8>, random: &mut dyn FnMut() -> f64) {
        match self {
            Compression::None => codec::none_into(data, out),
            Compression::Lz4 => codec::lz4_into(data, out),
            Compression::Zstd { level } => codec::zstd_into(data, *level, out),
            Compression::Lzma { level } => codec::lzma_into(data, *level, out),
            Compression::Zlib { level } => codec::zlib_into(data, *level, out),
            Compression::Auto(inner) => {
                // borg's Auto: LZ4 decides. If LZ4 gains less than 3 % (ratio over data plus
                // a header), keep LZ4's result (which may be `none`); otherwise try the inner
                // compressor and keep it only if it beats LZ4 by at least 1 %.
                let start = out.len();
                codec::lz4_into(data, out);
                let cheap_len = out.len() - start;
                if (cheap_len as f64) / ((data.len() + HEADER_LEN) as f64) >= 0.97 {
                    return;
                }
                let mid = out.len();
                inner.compress_with(data, out, random);
                let expensive_len = out.len() - mid;
                if (expensive_len as f64) / (cheap_len as f64) < 0.99 {
                    out.copy_within(mid.., start);
                    out.truncate(start + expensive_len);
                } else {
                    out.truncate(mid);
                }
            }
            Compression::Obfuscate { level, inner } => {
                let start = out.len();
                out.extend_from_slice(&obfuscate::HDR_OBFUSCATE);
                out.extend_from_slice(&[0; 4]);
                let inner_start = out.len();
                inner.compress_with(data, out, random);
                let inner_len = out.len() - inner_start;
                // An inner payload can't exceed u32 in practice (objects are < 20 MiB); if it
                // ever did, borg's struct.pack would fail too, so saturate rather than wrap.
                let len32 = u32::try_from(inner_len).unwrap_or(u32::MAX);
                out[start + HEADER_LEN..inner_start].copy_from_slice(&len32.to_be_bytes());
                let pad = obfuscate::padding_len(*level, inner_len, random);
                out.resize(out.len() + pad, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests;
