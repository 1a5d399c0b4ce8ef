//! Arbitrary bytes must never make `decompress` panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxborg::format::compress::{decompress_limited, Compression};

fuzz_target!(|data: &[u8]| {
    // A small output bound keeps each run fast while exercising the limit checks.
    if let Ok(plain) = decompress_limited(data, 1 << 20) {
        // Whatever decodes must survive a round trip through our own encoder.
        let again = Compression::Lz4.compress(&plain);
        assert_eq!(
            decompress_limited(&again, 1 << 20).ok().as_deref(),
            Some(&plain[..])
        );
    }
});
