//! borg's `ObfuscateSize`: `04 00 ‖ u32 BE inner_len ‖ inner payload ‖ zero padding`,
//! hiding the chunk size from whoever can see the repository.

use super::{Codec, CompressError, MAX_DATA_SIZE};

pub(super) const HDR_OBFUSCATE: [u8; 2] = [0x04, 0x00];

/// Strips the obfuscation framing (the part after the 2-byte header) and returns the
/// wrapped payload, which carries its own codec header.
pub(super) fn unwrap(body: &[u8]) -> Result<&[u8], CompressError> {
    let (len, rest) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| CompressError::corrupt(Codec::Obfuscate, "truncated length field"))?;
    let len = u32::from_be_bytes(*len) as usize;
    rest.get(..len).ok_or_else(|| {
        CompressError::corrupt(
            Codec::Obfuscate,
            format!("length field says {len} bytes, only {} present", rest.len()),
        )
    })
}

/// A uniform float in [0, 1) with 53 random bits, like Python's `random.random()`.
pub(super) fn os_random() -> f64 {
    let mut b = [0u8; 8];
    // Without an OS random source the padding would be predictable, defeating its purpose.
    getrandom::getrandom(&mut b).expect("the OS random number generator is unavailable");
    (u64::from_le_bytes(b) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// How many zero bytes to append after an inner payload of `compr_size` bytes, following
/// borg's `ObfuscateSize._obfuscate` for `level`, capped to stay 1 KiB below
/// `MAX_DATA_SIZE`. Levels borg does not define add nothing.
pub(super) fn padding_len(level: u32, compr_size: usize, random: &mut dyn FnMut() -> f64) -> usize {
    let wanted = match level {
        // Relative: factor / r with r in [0.0001, 1), so usually a few percent, rarely 1000×.
        1..=6 => {
            let factor = 0.001 * f64::from(10u32.pow(level));
            let r = random().max(0.0001);
            (compr_size as f64 * (factor / r)) as usize
        }
        // Absolute: uniform in [0, 2^(level-100)), 1 KiB … 8 MiB.
        110..=123 => (f64::from(1u32 << (level - 100)) * random()) as usize,
        250 => padme(compr_size),
        _ => 0,
    };
    let room = (MAX_DATA_SIZE - 1024).saturating_sub(compr_size);
    wanted.min(room)
}

/// Padmé (Nikitin et al., PETS 2019): round up to a size whose low bits are zero, leaking
/// only O(log log n) bits of the length.
pub(super) fn padme(size: usize) -> usize {
    if size < 2 {
        return 0;
    }
    let e = size.ilog2();
    let s = e.ilog2() + 1;
    let mask = (1usize << (e - s)) - 1;
    ((size + mask) & !mask) - size
}
