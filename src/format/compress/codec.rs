//! The individual codecs: append-style compressors and size-bounded decompressors.

use std::cell::RefCell;
use std::io::Cursor;

use super::{Codec, CompressError, HEADER_LEN};

pub(super) const HDR_NONE: [u8; 2] = [0x00, 0x00];
pub(super) const HDR_LZ4: [u8; 2] = [0x01, 0x00];
pub(super) const HDR_LZMA: [u8; 2] = [0x02, 0x00];
pub(super) const HDR_ZSTD: [u8; 2] = [0x03, 0x00];

/// Memory a single LZMA decoder may use. Preset 9 (64 MiB dictionary) needs about 65 MiB;
/// a header asking for much more is not something borg writes.
const LZMA_MEMLIMIT: u64 = 256 * 1024 * 1024;

/// Initial output capacity for decoders that cannot learn the decompressed size up front.
fn initial_capacity(input_len: usize, max_output: usize) -> usize {
    input_len
        .saturating_mul(4)
        .max(64 * 1024)
        .min(max_output.saturating_add(1))
}

/// Makes room for more output, never beyond `max_output + 1` (one byte more than allowed is
/// how an over-long stream is detected). Returns false when no room may be added.
fn grow(out: &mut Vec<u8>, max_output: usize) -> bool {
    let cap_limit = max_output.saturating_add(1);
    if out.capacity() >= cap_limit {
        return out.len() < out.capacity();
    }
    let target = out.capacity().saturating_mul(2).clamp(64 * 1024, cap_limit);
    out.reserve_exact(target - out.len());
    true
}

/// Where a streaming decoder stands after a call: at the end of its stream or not, and the
/// bytes it has consumed and produced in all.
struct Progress {
    end: bool,
    total_in: u64,
    total_out: u64,
}

/// Runs a streaming decoder over `input` until its stream ends: `step` feeds it the input
/// not yet consumed and appends to the output, which grows up to `max_output` (beyond is
/// [`CompressError::TooLarge`]). A call that neither consumes nor produces while the output
/// has room means the stream ends early: `truncated` says so.
fn decode_stream(
    codec: Codec,
    input: &[u8],
    max_output: usize,
    truncated: &str,
    mut step: impl FnMut(&[u8], &mut Vec<u8>) -> Result<Progress, String>,
) -> Result<Vec<u8>, CompressError> {
    let too_large = || CompressError::TooLarge {
        codec,
        limit: max_output,
    };
    let mut out = Vec::with_capacity(initial_capacity(input.len(), max_output));
    let (mut seen_in, mut seen_out) = (0, 0);
    loop {
        let consumed = usize::try_from(seen_in).unwrap_or(input.len());
        let rest = input.get(consumed..).unwrap_or_default();
        let p = step(rest, &mut out).map_err(|why| CompressError::corrupt(codec, why))?;
        if out.len() > max_output {
            return Err(too_large());
        }
        if p.end {
            return Ok(out);
        }
        if out.len() == out.capacity() {
            if !grow(&mut out, max_output) {
                return Err(too_large());
            }
        } else if (p.total_in, p.total_out) == (seen_in, seen_out) {
            return Err(CompressError::corrupt(codec, truncated));
        }
        (seen_in, seen_out) = (p.total_in, p.total_out);
    }
}

/// zlib streams are recognised like borg's `ZLIB.detect`: deflate method and a valid
/// header checksum. No other codec header may match this.
/// Drives a streaming encoder over all of `data`, appending to `out` (grown as needed)
/// until the stream ends. `step` feeds the encoder the input it has not consumed and tells
/// whether the stream ended and how much input it has consumed in all.
fn encode_stream(
    data: &[u8],
    out: &mut Vec<u8>,
    mut step: impl FnMut(&[u8], &mut Vec<u8>) -> Result<(bool, u64), String>,
) -> Result<(), String> {
    let mut consumed = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity() / 2 + 4096);
        }
        let rest = data.get(consumed..).unwrap_or_default();
        let (end, total_in) = step(rest, out)?;
        if end {
            return Ok(());
        }
        consumed = usize::try_from(total_in).unwrap_or(data.len());
    }
}

pub(super) fn is_zlib_header([cmf, flg]: [u8; 2]) -> bool {
    cmf & 0x0f == 8 && (u16::from(cmf) * 256 + u16::from(flg)) % 31 == 0
}

pub(super) fn none_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(HEADER_LEN + data.len());
    out.extend_from_slice(&HDR_NONE);
    out.extend_from_slice(data);
}

/// borg's `DecidingCompressor`: write `header` + body, but fall back to `none` when the
/// body is not smaller than the input (or, defensively, if the codec failed).
fn deciding_into(
    data: &[u8],
    out: &mut Vec<u8>,
    header: [u8; 2],
    body: impl FnOnce(&[u8], &mut Vec<u8>) -> Result<(), String>,
) {
    let start = out.len();
    out.extend_from_slice(&header);
    let ok = body(data, out);
    debug_assert!(ok.is_ok(), "compression failed: {ok:?}");
    if ok.is_err() || out.len() - start - HEADER_LEN >= data.len() {
        out.truncate(start);
        none_into(data, out);
    }
}

// ---------------------------------------------------------------------------------------
// LZ4: a raw block (`LZ4_compress_default`), no frame and no size prefix.

/// [`lz4_at`], appended to `out`.
pub(super) fn lz4_into(data: &[u8], out: &mut Vec<u8>) {
    let end = lz4_at(data, out, out.len());
    out.truncate(end);
}

/// LZ4 (borg's deciding compressor: `none` when not smaller) written at `at` in `out`,
/// reusing the room `out` already has (see
/// [`Compression::compress_reusing`](super::Compression::compress_reusing)); returns where
/// it ends.
///
/// Compressed by the reference C library, as borg does (the same bytes, ~8% faster than
/// `lz4_flex` on text here), into room one byte short of the input: on incompressible
/// data LZ4 gives up before it copies the input out as literals, and the input is copied
/// once, as `none`, instead of twice.
pub(super) fn lz4_at(data: &[u8], out: &mut Vec<u8>, at: usize) -> usize {
    let (end, stored) = lz4_at_deferred(data, out, at);
    if stored {
        out[at + HEADER_LEN..end].copy_from_slice(data);
    }
    end
}

/// [`lz4_at`], except that data LZ4 cannot shrink is not copied: only the `none` header is
/// written, and `true` says that `data` itself belongs after it (see
/// [`Compression::compress_deferring`](super::Compression::compress_deferring)).
pub(super) fn lz4_at_deferred(data: &[u8], out: &mut Vec<u8>, at: usize) -> (usize, bool) {
    let body = at + HEADER_LEN;
    let room = body + data.len();
    make_room(out, room);
    let smaller = &mut out[body..body + data.len().saturating_sub(1)];
    match lz4::block::compress_to_buffer(data, None, false, smaller) {
        Ok(n) if n < data.len() => {
            out[at..body].copy_from_slice(&HDR_LZ4);
            (body + n, false)
        }
        // not smaller (LZ4 reports that as a failure to fit): stored as is, as borg's
        // deciding compressor does
        _ => {
            out[at..body].copy_from_slice(&HDR_NONE);
            (room, true)
        }
    }
}

/// The `none` header at `at`, with room for `data` after it, which is not copied (see
/// [`lz4_at_deferred`]); returns where the payload ends.
pub(super) fn none_at_deferred(data: &[u8], out: &mut Vec<u8>, at: usize) -> usize {
    let body = at + HEADER_LEN;
    let room = body + data.len();
    make_room(out, room);
    out[at..body].copy_from_slice(&HDR_NONE);
    room
}

/// Lengthens `out` to `room` bytes if it is shorter, exactly: doubling a recycled envelope
/// would take it past what the store keeps (an 8 MiB chunk's room after a 5 MiB one's),
/// and it would be dropped and faulted in afresh for the next large chunk.
fn make_room(out: &mut Vec<u8>, room: usize) {
    if out.len() < room {
        out.reserve_exact(room - out.len());
        out.resize(room, 0);
    }
}

/// The decompressed size of an LZ4 block, from its sequence headers alone. borg's
/// format stores no size, and walking the tokens is far cheaper than decoding into
/// ever larger guesses.
fn lz4_block_len(block: &[u8], max_output: usize) -> Result<usize, CompressError> {
    let corrupt = |why: &str| CompressError::corrupt(Codec::Lz4, why);
    // Length extension bytes: 255 means "add and continue".
    fn ext(block: &[u8], pos: &mut usize) -> Option<usize> {
        let mut n = 0usize;
        loop {
            let b = *block.get(*pos)?;
            *pos += 1;
            n = n.checked_add(usize::from(b))?;
            if b != 255 {
                return Some(n);
            }
        }
    }
    let too_large = || CompressError::TooLarge {
        codec: Codec::Lz4,
        limit: max_output,
    };
    let mut pos = 0usize;
    let mut total = 0usize;
    loop {
        let token = *block
            .get(pos)
            .ok_or_else(|| corrupt("block ends inside a sequence"))?;
        pos += 1;
        let mut literals = usize::from(token >> 4);
        if literals == 15 {
            literals += ext(block, &mut pos).ok_or_else(|| corrupt("truncated literal length"))?;
        }
        pos = pos
            .checked_add(literals)
            .filter(|&end| end <= block.len())
            .ok_or_else(|| corrupt("literals run past the end of the block"))?;
        total = total.checked_add(literals).ok_or_else(too_large)?;
        if total > max_output {
            return Err(too_large());
        }
        if pos == block.len() {
            return Ok(total); // the last sequence carries literals only
        }
        if block.len() - pos < 2 {
            return Err(corrupt("truncated match offset"));
        }
        pos += 2;
        let mut match_len = usize::from(token & 0x0f);
        if match_len == 15 {
            match_len += ext(block, &mut pos).ok_or_else(|| corrupt("truncated match length"))?;
        }
        total = total
            .checked_add(match_len + 4)
            .filter(|&t| t <= max_output)
            .ok_or_else(too_large)?;
    }
}

pub(super) fn lz4_decompress(block: &[u8], max_output: usize) -> Result<Vec<u8>, CompressError> {
    let len = lz4_block_len(block, max_output)?;
    let mut out = vec![0u8; len];
    let n = lz4_flex::block::decompress_into(block, &mut out)
        .map_err(|e| CompressError::corrupt(Codec::Lz4, e))?;
    if n != len {
        return Err(CompressError::corrupt(
            Codec::Lz4,
            format!("decoded {n} bytes, sequences promise {len}"),
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// zstd: one frame from the simple API, which records the content size borg's reader needs.

thread_local! {
    /// Compression contexts are costly to set up; keep one per thread (and level).
    static ZSTD_CCTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static ZSTD_DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

pub(super) fn zstd_into(data: &[u8], level: i32, out: &mut Vec<u8>) {
    deciding_into(data, out, HDR_ZSTD, |data, out| {
        ZSTD_CCTX.with(|cell| {
            let mut slot = cell.borrow_mut();
            if !matches!(&*slot, Some((l, _)) if *l == level) {
                let c = zstd::bulk::Compressor::new(level).map_err(|e| e.to_string())?;
                *slot = Some((level, c));
            }
            let (_, cctx) = slot.as_mut().ok_or("zstd context missing")?;
            let base = out.len();
            out.reserve(zstd::zstd_safe::compress_bound(data.len()));
            let mut cursor = Cursor::new(&mut *out);
            cursor.set_position(base as u64);
            cctx.compress_to_buffer(data, &mut cursor)
                .map(drop)
                .map_err(|e| e.to_string())
        })
    })
}

pub(super) fn zstd_decompress(frame: &[u8], max_output: usize) -> Result<Vec<u8>, CompressError> {
    let corrupt = |why: String| CompressError::corrupt(Codec::Zstd, why);
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(corrupt("frame does not record its content size".into())),
        Err(_) => return Err(corrupt("not a zstd frame".into())),
    };
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s <= max_output)
        .ok_or(CompressError::TooLarge {
            codec: Codec::Zstd,
            limit: max_output,
        })?;
    let mut out = Vec::with_capacity(size);
    let n = ZSTD_DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| corrupt(e.to_string()))?);
        }
        let dctx = slot
            .as_mut()
            .ok_or_else(|| corrupt("no decompression context".into()))?;
        dctx.decompress_to_buffer(frame, &mut out)
            .map_err(|e| corrupt(e.to_string()))
    })?;
    if n != size {
        return Err(corrupt(format!(
            "decoded {n} bytes, frame header says {size}"
        )));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// LZMA: Python's `lzma.compress(data, preset=level, check=CHECK_NONE)`, i.e. an .xz stream.

pub(super) fn lzma_into(data: &[u8], level: u32, out: &mut Vec<u8>) {
    use liblzma::stream::{Action, Check, Status, Stream};
    deciding_into(data, out, HDR_LZMA, |data, out| {
        let mut stream =
            Stream::new_easy_encoder(level.min(9), Check::None).map_err(|e| e.to_string())?;
        // Anything larger than the input is discarded by the caller anyway.
        out.reserve(data.len() / 2 + 256);
        encode_stream(data, out, |rest, out| {
            let status = stream
                .process_vec(rest, out, Action::Finish)
                .map_err(|e| e.to_string())?;
            Ok((status == Status::StreamEnd, stream.total_in()))
        })
    })
}

pub(super) fn lzma_decompress(xz: &[u8], max_output: usize) -> Result<Vec<u8>, CompressError> {
    use liblzma::stream::{Action, Status, Stream};
    // Python's lzma.decompress uses FORMAT_AUTO, so accept legacy .lzma as well as .xz.
    let mut stream = Stream::new_auto_decoder(LZMA_MEMLIMIT, 0)
        .map_err(|e| CompressError::corrupt(Codec::Lzma, e.to_string()))?;
    decode_stream(
        Codec::Lzma,
        xz,
        max_output,
        "stream is truncated",
        |rest, out| {
            let status = stream
                .process_vec(rest, out, Action::Finish)
                .map_err(|e| format!("{e:?}"))?;
            Ok(Progress {
                end: status == Status::StreamEnd,
                total_in: stream.total_in(),
                total_out: stream.total_out(),
            })
        },
    )
}

// ---------------------------------------------------------------------------------------
// zlib: the bare stream from Python's `zlib.compress(data, level)`; no borg header.

pub(super) fn zlib_into(data: &[u8], level: u32, out: &mut Vec<u8>) {
    use flate2::{Compress, Compression, FlushCompress, Status};
    let start = out.len();
    let mut z = Compress::new(Compression::new(level.min(9)), true);
    out.reserve(data.len() + data.len() / 1000 + 64);
    let done = encode_stream(data, out, |rest, out| {
        let status = z
            .compress_vec(rest, out, FlushCompress::Finish)
            .map_err(|e| e.to_string())?;
        Ok((status == Status::StreamEnd, z.total_in()))
    });
    if let Err(e) = done {
        // Cannot happen for a fresh in-memory deflate; never emit a broken stream.
        debug_assert!(false, "zlib compression failed: {e}");
        out.truncate(start);
        none_into(data, out);
    }
}

pub(super) fn zlib_decompress(stream: &[u8], max_output: usize) -> Result<Vec<u8>, CompressError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut z = Decompress::new(true);
    let truncated = "incomplete or truncated stream";
    decode_stream(Codec::Zlib, stream, max_output, truncated, |rest, out| {
        let status = z
            .decompress_vec(rest, out, FlushDecompress::None)
            .map_err(|e| e.to_string())?;
        // Like Python's zlib.decompress, bytes after the end of the stream are ignored.
        Ok(Progress {
            end: status == Status::StreamEnd,
            total_in: z.total_in(),
            total_out: z.total_out(),
        })
    })
}
