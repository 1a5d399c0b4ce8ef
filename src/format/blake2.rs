//! BLAKE2b-256, by whichever of two bit-identical implementations is faster on this CPU.
//!
//! BLAKE2b is the largest single cost of a repokey-blake2 backup (id hash and MAC: two
//! passes over every byte), and which implementation wins depends on the core: the
//! AVX2 one (`blake2b_simd`) leads on many Intel cores, while on wide cores such as AMD
//! Zen 4 the scalar one (`blake2`) runs 1.8× faster (1.55 GB/s against 0.85). Both
//! produce the same digests; the choice is measured once per process (under a
//! millisecond) and never changes what is written.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blake2::digest::consts::U32;
use blake2::Digest;

/// One of the two implementations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// `blake2b_simd`: AVX2 when the CPU has it, else its portable code.
    Simd,
    /// RustCrypto `blake2`: scalar 64-bit code.
    Scalar,
}

impl Implementation {
    pub const ALL: [Implementation; 2] = [Implementation::Simd, Implementation::Scalar];

    pub fn name(self) -> &'static str {
        match self {
            Implementation::Simd => "blake2b_simd",
            Implementation::Scalar => "scalar",
        }
    }

    /// The faster implementation on this CPU, measured on first use.
    pub fn fastest() -> Implementation {
        static CHOSEN: OnceLock<Implementation> = OnceLock::new();
        *CHOSEN.get_or_init(measure_fastest)
    }
}

/// A running BLAKE2b-256 (unkeyed; borg prepends its 128-byte keys as data).
#[derive(Clone)]
pub enum Blake2b256 {
    Simd(blake2b_simd::State),
    Scalar(blake2::Blake2b<U32>),
}

impl Blake2b256 {
    /// A state of the fastest implementation.
    pub fn new() -> Blake2b256 {
        Blake2b256::with(Implementation::fastest())
    }

    pub fn with(imp: Implementation) -> Blake2b256 {
        match imp {
            Implementation::Simd => {
                Blake2b256::Simd(blake2b_simd::Params::new().hash_length(32).to_state())
            }
            Implementation::Scalar => Blake2b256::Scalar(blake2::Blake2b::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Blake2b256::Simd(st) => {
                st.update(data);
            }
            Blake2b256::Scalar(h) => h.update(data),
        }
    }

    pub fn finalize(self) -> [u8; 32] {
        match self {
            Blake2b256::Simd(st) => st
                .finalize()
                .as_bytes()
                .try_into()
                .expect("hash length is 32"),
            Blake2b256::Scalar(h) => h.finalize().into(),
        }
    }
}

impl Default for Blake2b256 {
    fn default() -> Self {
        Blake2b256::new()
    }
}

/// Inputs [`Lanes`] hashes in one pass on this CPU: 4 with AVX2, 2 with SSE4.1, else 1.
pub fn lanes() -> usize {
    blake2b_simd::many::degree()
}

/// BLAKE2b-256 states fed side by side, one SIMD lane each: with AVX2 four inputs hash
/// in the time of about 1.7 (2.8 GB/s against 1.2 on one core here), where one message
/// can never be split across lanes. The digests equal [`Blake2b256`]'s.
pub struct Lanes {
    states: Vec<blake2b_simd::State>,
    /// Fed a copy of a live lane's block whenever exactly three lanes have input: the
    /// 4-way kernel with one lane wasted hashes three inputs 1.5× as fast as the 2-way and
    /// 1-way kernels that `update_many` would run them in otherwise.
    spare: blake2b_simd::State,
}

impl Lanes {
    /// `n` states, each fed `prefix` first (borg's 128-byte key block).
    pub fn new(n: usize, prefix: &[u8]) -> Lanes {
        Lanes::with_prefixes(&vec![prefix; n])
    }

    /// One state per prefix, each fed its own (the id key for some lanes, the MAC key for
    /// others: a chunk's id and its envelope's MAC hash side by side).
    pub fn with_prefixes(prefixes: &[&[u8]]) -> Lanes {
        let mut params = blake2b_simd::Params::new();
        params.hash_length(32);
        Lanes {
            spare: params.to_state(),
            states: prefixes
                .iter()
                .map(|p| {
                    let mut st = params.to_state();
                    st.update(p);
                    st
                })
                .collect(),
        }
    }

    /// Feeds `inputs[i]` to state `i`, all at once; states beyond `inputs` and empty
    /// inputs stay as they are.
    pub fn update<T: AsRef<[u8]>>(&mut self, inputs: &[T]) {
        let mut live = inputs.iter().map(AsRef::as_ref).filter(|i| !i.is_empty());
        let first = live.next();
        if lanes() >= 4 && live.count() == 2 {
            let pad = first.expect("three live inputs");
            let jobs = self.states.iter_mut().zip(inputs.iter().map(AsRef::as_ref));
            blake2b_simd::many::update_many(jobs.chain([(&mut self.spare, pad)]));
        } else {
            blake2b_simd::many::update_many(self.states.iter_mut().zip(inputs));
        }
    }

    /// The digest of every state, in order.
    pub fn finalize(&self) -> Vec<[u8; 32]> {
        self.states
            .iter()
            .map(|st| {
                st.finalize()
                    .as_bytes()
                    .try_into()
                    .expect("hash length is 32")
            })
            .collect()
    }
}

/// Hashes a buffer a few times with each implementation, alternating, and keeps the one
/// with the shorter best time (the minimum discards interruptions and clock ramp-up; a
/// tie keeps the first of [`Implementation::ALL`]).
fn measure_fastest() -> Implementation {
    const ROUNDS: usize = 3;
    let buf = vec![0x5au8; 128 << 10];
    let mut best = [Duration::MAX; Implementation::ALL.len()];
    for _ in 0..ROUNDS {
        for (imp, best) in Implementation::ALL.into_iter().zip(best.iter_mut()) {
            let t = Instant::now();
            let mut h = Blake2b256::with(imp);
            h.update(&buf);
            std::hint::black_box(h.finalize());
            *best = (*best).min(t.elapsed());
        }
    }
    Implementation::ALL
        .into_iter()
        .zip(best)
        .min_by_key(|&(_, d)| d)
        .map_or(Implementation::Simd, |(imp, _)| imp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest(imp: Implementation, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Blake2b256::with(imp);
        for p in parts {
            h.update(p);
        }
        h.finalize()
    }

    #[test]
    fn known_vector() {
        // BLAKE2b-256("abc"), as Python's hashlib.blake2b(b"abc", digest_size=32).
        let want = "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319";
        for imp in Implementation::ALL {
            assert_eq!(hex::encode(digest(imp, &[b"abc"])), want, "{}", imp.name());
        }
    }

    #[test]
    fn a_choice_is_made_once() {
        assert_eq!(Implementation::fastest(), Implementation::fastest());
    }

    #[test]
    fn lanes_equal_one_at_a_time() {
        let key = [0x33u8; 128];
        // unequal lengths: lanes run out at different blocks, one input is empty
        let inputs: Vec<Vec<u8>> = [0usize, 1, 127, 128, 129, 5000, 70_001]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 + n) as u8).collect())
            .collect();
        let mut lanes = Lanes::new(inputs.len(), &key);
        // fed in two steps of different cuts, as the fused MAC loop feeds blocks
        let (a, b): (Vec<&[u8]>, Vec<&[u8]>) =
            inputs.iter().map(|d| d.split_at(d.len() / 3)).unzip();
        lanes.update(&a);
        lanes.update(&b);
        for (d, got) in inputs.iter().zip(lanes.finalize()) {
            assert_eq!(got, digest(Implementation::Scalar, &[&key, d]));
        }
    }

    #[test]
    fn three_live_lanes_equal_one_at_a_time() {
        // Steps with exactly three lanes of input (the padded 4-way case) among empty
        // ones: the pad (the first live input) shorter than a block, then as long as the
        // others; then lanes running out.
        let key = [0x44u8; 128];
        for lens in [
            [0usize, 90, 40_000, 0, 70_001],
            [5, 100_000, 0, 40_000, 66_000],
        ] {
            let inputs: Vec<Vec<u8>> = lens
                .iter()
                .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
                .collect();
            let mut lanes = Lanes::new(inputs.len(), &key);
            for step in [(0, 16_000), (16_000, 40_000), (40_000, 100_000)] {
                let blocks: Vec<&[u8]> = inputs
                    .iter()
                    .map(|d| &d[step.0.min(d.len())..step.1.min(d.len())])
                    .collect();
                lanes.update(&blocks);
            }
            for (d, got) in inputs.iter().zip(lanes.finalize()) {
                assert_eq!(got, digest(Implementation::Scalar, &[&key, d]));
            }
        }
    }

    proptest! {
        #[test]
        fn implementations_agree(
            data in proptest::collection::vec(any::<u8>(), 0..1200),
            split in 0usize..1200,
        ) {
            let cut = split.min(data.len());
            let (a, b) = data.split_at(cut);
            let whole = digest(Implementation::Simd, &[&data]);
            prop_assert_eq!(digest(Implementation::Scalar, &[a, b]), whole);
            prop_assert_eq!(digest(Implementation::Simd, &[a, b]), whole);
        }
    }
}
