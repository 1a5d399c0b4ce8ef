//! Inputs shared by the chunker tests.

use std::io::{self, Read};

/// Deterministic bytes in stretches of `stretch`: zero runs, a constant byte, low-entropy
/// and random stretches in turn, so cuts fall in every kind of data.
pub(crate) fn mixed(seed: u64, len: usize, stretch: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match (i / stretch) % 6 {
                0 => 0,
                1 => 0x55,
                2 => (s % 3) as u8,
                _ => s as u8,
            }
        })
        .collect()
}

/// A reader that hands out at most the next of `sizes` (cycled) bytes per call, as pipes
/// and sockets do.
pub(super) struct Dribble<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    i: usize,
}

impl<'a> Dribble<'a> {
    pub(super) fn new(data: &'a [u8], sizes: Vec<usize>) -> Self {
        Dribble { data, sizes, i: 0 }
    }
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sizes[self.i % self.sizes.len()]
            .min(buf.len())
            .min(self.data.len());
        self.i += 1;
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
