//! borg's buzhash (`_chunker.c`): a cyclic-polynomial rolling hash over a byte window, with
//! the per-repository chunk seed XORed into every table entry.

/// borg's `table_base` (identical in 1.2 and 1.4).
const TABLE_BASE: [u32; 256] = [
    0xe7f831ec, 0xf4026465, 0xafb50cae, 0x6d553c7a, 0xd639efe3, 0x19a7b895, 0x9aba5b21, 0x5417d6d4,
    0x35fd2b84, 0xd1f6a159, 0x3f8e323f, 0xb419551c, 0xf444cebf, 0x21dc3b80, 0xde8d1e36, 0x84a32436,
    0xbeb35a9d, 0xa36f24aa, 0xa4e60186, 0x98d18ffe, 0x3f042f9e, 0xdb228bcd, 0x096474b7, 0x5c20c2f7,
    0xf9eec872, 0xe8625275, 0xb9d38f80, 0xd48eb716, 0x22a950b4, 0x3cbaaeaa, 0xc37cddd3, 0x8fea6f6a,
    0x1d55d526, 0x7fd6d3b3, 0xdaa072ee, 0x4345ac40, 0xa077c642, 0x8f2bd45b, 0x28509110, 0x55557613,
    0xffc17311, 0xd961ffef, 0xe532c287, 0xaab95937, 0x46d38365, 0xb065c703, 0xf2d91d0f, 0x92cd4bb0,
    0x4007c712, 0xf35509dd, 0x505b2f69, 0x557ead81, 0x310f4563, 0xbddc5be8, 0x9760f38c, 0x701e0205,
    0x00157244, 0x14912826, 0xdc4ca32b, 0x67b196de, 0x5db292e8, 0x8c1b406b, 0x01f34075, 0xfa2520f7,
    0x73bc37ab, 0x1e18bc30, 0xfe2c6cb3, 0x20c522d0, 0x5639e3db, 0x942bda35, 0x899af9d1, 0xced44035,
    0x98cc025b, 0x255f5771, 0x70fefa24, 0xe928fa4d, 0x2c030405, 0xb9325590, 0x20cb63bd, 0xa166305d,
    0x80e52c0a, 0xa8fafe2f, 0x1ad13f7d, 0xcfaf3685, 0x6c83a199, 0x7d26718a, 0xde5dfcd9, 0x79cf7355,
    0x8979d7fb, 0xebf8c55e, 0xebe408e4, 0xcd2affba, 0xe483be6e, 0xe239d6de, 0x5dc1e9e0, 0x0473931f,
    0x851b097c, 0xac5db249, 0x09c0f9f2, 0xd8d2f134, 0xe6f38e41, 0xb1c71bf1, 0x52b6e4db, 0x07224424,
    0x6cf73e85, 0x4f25d89c, 0x782a7d74, 0x10a68dcd, 0x3a868189, 0xd570d2dc, 0x69630745, 0x9542ed86,
    0x331cd6b2, 0xa84b5b28, 0x07879c9d, 0x38372f64, 0x7185db11, 0x25ba7c83, 0x01061523, 0xe6792f9f,
    0xe5df07d1, 0x4321b47f, 0x7d2469d8, 0x1a3a4f90, 0x48be29a3, 0x669071af, 0x8ec8dd31, 0x0810bfbf,
    0x813a06b4, 0x68538345, 0x65865ddc, 0x43a71b8e, 0x78619a56, 0x5a34451d, 0x5bdaa3ed, 0x71edc7e9,
    0x17ac9a20, 0x78d10bfa, 0x6c1e7f35, 0xd51839d9, 0x240cbc51, 0x33513cc1, 0xd2b4f795, 0xccaa8186,
    0x0babe682, 0xa33cf164, 0x18c643ea, 0xc1ca105f, 0x9959147a, 0x6d3d94de, 0x0b654fbe, 0xed902ca0,
    0x7d835cb5, 0x99ba1509, 0x6445c922, 0x495e76c2, 0xf07194bc, 0xa1631d7e, 0x677076a5, 0x89fffe35,
    0x1a49bcf3, 0x8e6c948a, 0x0144c917, 0x8d93aea1, 0x16f87ddf, 0xc8f25d49, 0x1fb11297, 0x27e750cd,
    0x2f422da1, 0xdee89a77, 0x1534c643, 0x457b7b8b, 0xaf172f7a, 0x6b9b09d6, 0x33573f7f, 0xf14e15c4,
    0x526467d5, 0xaf488241, 0x87c3ee0d, 0x33be490c, 0x95aa6e52, 0x43ec242e, 0xd77de99b, 0xd018334f,
    0x5b78d407, 0x498eb66b, 0xb1279fa8, 0xb38b0ea6, 0x90718376, 0xe325dee2, 0x8e2f2cba, 0xcaa5bdec,
    0x9d652c56, 0xad68f5cb, 0xa77591af, 0x88e37ee8, 0xf8faa221, 0xfcbbbe47, 0x4f407786, 0xaf393889,
    0xf444a1d9, 0x15ae1a2f, 0x40aa7097, 0x6f9486ac, 0x29d232a3, 0xe47609e9, 0xe8b631ff, 0xba8565f4,
    0x11288749, 0x46c9a838, 0xeb1b7cd8, 0xf516bbb1, 0xfb74fda0, 0x010996e6, 0x4c994653, 0x1d889512,
    0x53dcd9a3, 0xdd074697, 0x1e78e17c, 0x637c98bf, 0x930bb219, 0xcf7f75b0, 0xcb9355fb, 0x9e623009,
    0xe466d82c, 0x28f968d3, 0xfeb385d9, 0x238e026c, 0xb8ed0560, 0x0c6a027a, 0x3d6fec4b, 0xbb4b2ec2,
    0xe715031c, 0xeded011d, 0xcdc4d3b9, 0xc456fc96, 0xdd0eea20, 0xb3df8ec9, 0x12351993, 0xd9cbb01c,
    0x603147a2, 0xcf37d17d, 0xf7fcd9dc, 0xd8556fa3, 0x104c8131, 0x13152774, 0xb4715811, 0x6a72c2c9,
    0xc5ae37bb, 0xa76ce12a, 0x8150d8f3, 0x2ec29218, 0xa35f0984, 0x48c0647e, 0x0b5ff98c, 0x71893f7b,
];

/// The seeded table plus a second table holding each entry already rotated by the window
/// length, so one rolling step costs two lookups, one rotate and two XORs.
#[derive(Clone)]
pub(crate) struct Tables {
    t: [u32; 256],
    out: [u32; 256],
    window: usize,
}

impl Tables {
    pub(crate) fn new(seed: u32, window: usize) -> Self {
        let t = TABLE_BASE.map(|v| v ^ seed);
        // borg rotates by `window & 0x1f`; rotate_left already reduces modulo 32.
        let out = t.map(|v| v.rotate_left((window & 31) as u32));
        Tables { t, out, window }
    }

    /// Hash of a whole window: the first byte is rotated most (by `len - 1`, modulo 32).
    pub(crate) fn hash(&self, data: &[u8]) -> u32 {
        let n = data.len();
        data.iter().enumerate().fold(0u32, |sum, (k, &b)| {
            sum ^ self.t[usize::from(b)].rotate_left(((n - 1 - k) & 31) as u32)
        })
    }

    /// [`hash`](Self::hash) of an all-zero window, without walking it: byte `j` from the
    /// end adds `t[0]` rotated by `j % 32`, so each rotation that occurs an odd number of
    /// times is XORed in once (32 steps where the walk takes a window's length, paid for
    /// every input chunked).
    pub(crate) fn zero_hash(&self) -> u32 {
        let w = self.window;
        (0..32.min(w))
            .filter(|&r| (w - r).div_ceil(32) % 2 == 1)
            .fold(0, |h, r| h ^ self.t[0].rotate_left(r as u32))
    }

    /// One rolling step: `remove` leaves the window, `add` enters it.
    pub(crate) fn update(&self, sum: u32, remove: u8, add: u8) -> u32 {
        sum.rotate_left(1) ^ self.out[usize::from(remove)] ^ self.t[usize::from(add)]
    }

    /// Looks for a cut point among the windows starting at `p, p+1, ...` whose last byte is
    /// *not* the last byte of `data` (borg only honours a hash hit while more data follows the
    /// window). `h` must be the hash of the window at `p`.
    ///
    /// Returns `Ok(cut)` at the first window whose hash has all `mask` bits clear, or
    /// `Err((q, hq))` where `q + window == data.len()` and `hq` is the not yet examined hash
    /// of the window at `q`, so the scan can resume once more data is available.
    #[inline]
    pub(crate) fn scan(
        &self,
        data: &[u8],
        p: usize,
        mut h: u32,
        mask: u32,
    ) -> Result<usize, (usize, u32)> {
        let w = self.window;
        let Some(stop) = data.len().checked_sub(w) else {
            return Err((p, h));
        };
        if p >= stop {
            return Err((p, h));
        }
        // Two equally long slices over the outgoing and incoming bytes, walked eight bytes
        // at a time: no bounds checks inside. The table lookups of a step are combined into
        // `x` before they meet the hash, and the hash leaps four bytes at once: with
        // `y_k = rol(x_0, k) ^ ... ^ x_k`, the hash `k + 1` bytes on is `rol(h, k + 1) ^ y_k`.
        // The loop-carried dependency is one rotate and one XOR per four bytes instead of
        // per byte (borg's loop, and ours before, waited on that chain: 25-30% slower); the
        // three hashes in between are derived from `h` off the chain, only to be tested.
        let (t, out) = (&self.t, &self.out);
        let outs = &data[p..stop];
        let ins = &data[p + w..];
        let mut at = p;
        let mut o8 = outs.chunks_exact(8);
        let mut a8 = ins.chunks_exact(8);
        for (o, a) in o8.by_ref().zip(a8.by_ref()) {
            let x: [u32; 8] =
                std::array::from_fn(|i| out[usize::from(o[i])] ^ t[usize::from(a[i])]);
            for i in (0..8).step_by(4) {
                let y1 = x[i].rotate_left(1) ^ x[i + 1];
                let y2 = y1.rotate_left(1) ^ x[i + 2];
                let y3 = y2.rotate_left(1) ^ x[i + 3];
                let h1 = h.rotate_left(1) ^ x[i];
                let h2 = h.rotate_left(2) ^ y1;
                let h3 = h.rotate_left(3) ^ y2;
                if h & mask == 0 {
                    return Ok(at + i);
                }
                if h1 & mask == 0 {
                    return Ok(at + i + 1);
                }
                if h2 & mask == 0 {
                    return Ok(at + i + 2);
                }
                if h3 & mask == 0 {
                    return Ok(at + i + 3);
                }
                h = h.rotate_left(4) ^ y3;
            }
            at += 8;
        }
        for (&o, &a) in o8.remainder().iter().zip(a8.remainder()) {
            if h & mask == 0 {
                return Ok(at);
            }
            h = self.update(h, o, a);
            at += 1;
        }
        Err((stop, h))
    }
}

/// borg's `buzhash(data, seed)`: the hash of `data` as one window.
pub fn buzhash(data: &[u8], seed: u32) -> u32 {
    Tables::new(seed, data.len()).hash(data)
}

/// borg's `buzhash_update(sum, remove, add, len, seed)`: rolls a window of `window` bytes on
/// by one byte.
pub fn buzhash_update(sum: u32, remove: u8, add: u8, window: usize, seed: u32) -> u32 {
    Tables::new(seed, window).update(sum, remove, add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_equals_full_hash() {
        let data: Vec<u8> = (0..2000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for &w in &[1usize, 31, 32, 33, 63, 64, 4095 % 1000] {
            for &seed in &[0u32, 0xb100_0c50, 0x7fff_ffff] {
                let t = Tables::new(seed, w);
                let mut h = t.hash(&data[..w]);
                for p in 0..data.len() - w {
                    h = t.update(h, data[p], data[p + w]);
                    assert_eq!(
                        h,
                        t.hash(&data[p + 1..p + 1 + w]),
                        "w={w} seed={seed:#x} p={p}"
                    );
                }
            }
        }
    }

    #[test]
    fn scan_finds_the_first_hit_like_brute_force() {
        // Long ranges with sparse and dense hits, starts on and off the 4-byte steps, and
        // starts near the end where no window may be a cut.
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 11) as u8)
            .collect();
        let w = 48;
        let t = Tables::new(0xb100_0c50, w);
        let hashes: Vec<u32> = (0..=data.len() - w)
            .map(|q| t.hash(&data[q..q + w]))
            .collect();
        let stop = data.len() - w;
        for mask in [0x3ff, 0x7fff, 0xffff, 0x3_ffff, 0xff_ffff] {
            for p in [
                0,
                1,
                31,
                1000,
                40_000,
                150_001,
                stop - 70_000,
                stop - 1,
                stop,
            ] {
                let want = (p..stop)
                    .find(|&q| hashes[q] & mask == 0)
                    .ok_or((stop, hashes[stop]));
                assert_eq!(
                    t.scan(&data, p, hashes[p], mask),
                    want,
                    "mask={mask:#x} p={p}"
                );
            }
        }
    }

    #[test]
    fn zero_hash_equals_hashing_zeros() {
        for window in [1, 2, 31, 32, 33, 63, 64, 65, 4095, 4096] {
            for seed in [0, 1, 0xdead_beef] {
                let t = Tables::new(seed, window);
                assert_eq!(t.zero_hash(), t.hash(&vec![0; window]), "{window} {seed}");
            }
        }
    }

    #[test]
    fn empty_window_hashes_to_zero() {
        assert_eq!(buzhash(b"", 12345), 0);
    }

    #[test]
    fn scan_stops_before_the_last_window() {
        // mask 0 makes every window a hit; the window ending at the end of data is never one.
        let t = Tables::new(0, 4);
        let data = [1u8; 10];
        assert_eq!(t.scan(&data, 3, 1, 0), Ok(3));
        assert!(matches!(t.scan(&data, 6, 1, 0), Err((6, 1))));
        assert!(matches!(t.scan(&data[..3], 0, 7, 0), Err((0, 7))));
    }
}
