use super::*;
use proptest::prelude::*;

fn text(len: usize) -> Vec<u8> {
    b"The quick brown fox jumps over the lazy dog. "
        .iter()
        .cycle()
        .take(len)
        .copied()
        .collect()
}

/// Deterministic incompressible bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn all_specs() -> Vec<Compression> {
    [
        "none",
        "lz4",
        "zstd,1",
        "zstd,3",
        "zstd,22",
        "lzma,0",
        "lzma,6",
        "lzma,9",
        "zlib,0",
        "zlib,6",
        "zlib,9",
        "auto,zstd,3",
        "auto,lzma,6",
        "auto,zlib,6",
        "auto,none",
        "obfuscate,1,lz4",
        "obfuscate,6,zstd,3",
        "obfuscate,110,none",
        "obfuscate,250,auto,lzma,1",
        "obfuscate,3,obfuscate,250,lz4",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

#[test]
fn round_trips_every_codec() {
    let inputs = [
        Vec::new(),
        vec![7],
        text(100_000),
        noise(100_000),
        vec![0; 300_000],
    ];
    for c in all_specs() {
        for data in &inputs {
            let z = c.compress(data);
            assert_eq!(
                decompress(&z).unwrap(),
                *data,
                "{c} on {} bytes",
                data.len()
            );
        }
    }
}

#[test]
fn headers_and_fallback() {
    let t = text(10_000);
    assert_eq!(Compression::Lz4.compress(&t)[..2], [1, 0]);
    assert_eq!(Compression::Zstd { level: 3 }.compress(&t)[..2], [3, 0]);
    assert_eq!(Compression::Lzma { level: 6 }.compress(&t)[..2], [2, 0]);
    assert_eq!(Compression::None.compress(&t)[..2], [0, 0]);
    let z = Compression::Zlib { level: 6 }.compress(&t);
    assert_eq!(z[..2], [0x78, 0x9c]);
    assert_eq!(detect(&z).unwrap(), Codec::Zlib);
    // borg's own example: 16 incompressible bytes under lz4 are stored raw.
    let small: Vec<u8> = (0..16).collect();
    let mut want = vec![0, 0];
    want.extend_from_slice(&small);
    assert_eq!(Compression::Lz4.compress(&small), want);
    for c in ["lz4", "zstd,3", "lzma,6"] {
        let c: Compression = c.parse().unwrap();
        assert_eq!(c.compress(&noise(5000))[..2], [0, 0], "{c}");
        assert_eq!(c.compress(b""), [0, 0], "{c}");
    }
    // zlib is not a deciding compressor: even empty input is a zlib stream.
    assert_eq!(
        detect(&Compression::Zlib { level: 6 }.compress(b"")).unwrap(),
        Codec::Zlib
    );
}

#[test]
fn compress_into_appends() {
    let mut out = b"prefix".to_vec();
    let t = text(5000);
    for c in all_specs() {
        out.truncate(6);
        c.compress_into(&t, &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(decompress(&out[6..]).unwrap(), t, "{c}");
    }
}

#[test]
fn compress_reusing_writes_what_compress_into_appends() {
    let inputs = [
        Vec::new(),
        vec![7],
        text(70_000),
        noise(70_000),
        vec![0; 90_000],
    ];
    for c in all_specs() {
        // a recycled buffer: stale bytes, longer or shorter than what comes next
        let mut out = vec![0xa5u8; 200_000];
        for data in inputs.iter().chain(inputs.iter().rev()) {
            let end = c.compress_reusing(data, &mut out, 41);
            assert_payload_at_41(&c, &out, end, data);
        }
    }
}

/// `out[41..end]` is what `c` compresses `data` to, and the 41 bytes in front are kept.
fn assert_payload_at_41(c: &Compression, out: &[u8], end: usize, data: &[u8]) {
    assert!(out.len() >= end);
    assert_eq!(out[..41], [0xa5; 41], "{c}: the room in front is kept");
    assert_eq!(decompress(&out[41..end]).unwrap(), *data, "{c}");
    if !c.to_string().starts_with("obfuscate") {
        assert_eq!(
            out[41..end],
            c.compress(data),
            "{c} on {} bytes",
            data.len()
        );
    }
}

#[test]
fn deferred_payloads_are_the_data_after_the_header() {
    let inputs = [Vec::new(), vec![7], text(70_000), noise(70_000)];
    for c in all_specs() {
        let mut out = vec![0xa5u8; 200_000];
        for data in inputs.iter().chain(inputs.iter().rev()) {
            let (end, stored) = c.compress_deferring(data, &mut out, 41);
            if stored {
                // what the caller writes: the data after the `none` header
                assert_eq!(end, 41 + HEADER_LEN + data.len(), "{c}");
                out[41 + HEADER_LEN..end].copy_from_slice(data);
            }
            assert_payload_at_41(&c, &out, end, data);
        }
    }
    // LZ4 defers exactly what it cannot shrink; `none` always
    let mut out = Vec::new();
    assert!(
        Compression::Lz4
            .compress_deferring(&noise(70_000), &mut out, 0)
            .1
    );
    assert!(
        !Compression::Lz4
            .compress_deferring(&text(70_000), &mut out, 0)
            .1
    );
    assert!(
        Compression::None
            .compress_deferring(&text(10), &mut out, 0)
            .1
    );
}

#[test]
fn zstd_frames_record_content_size() {
    for level in [1, 3, 19, 22] {
        for len in [100usize, 70_000, 1 << 20] {
            let z = Compression::Zstd { level }.compress(&text(len));
            assert_eq!(z[..2], [3, 0]);
            let size = zstd::zstd_safe::get_frame_content_size(&z[2..]).unwrap();
            assert_eq!(size, Some(len as u64), "level {level}, {len} bytes");
        }
    }
}

#[test]
fn levels_take_effect() {
    // Mixed text that leaves room between fast and strong settings.
    let mut data = Vec::new();
    for i in 0..40_000u32 {
        data.extend_from_slice(format!("line {i} value {} {}\n", i * 7 % 1013, i % 17).as_bytes());
    }
    let size = |c: Compression| c.compress(&data).len();
    assert!(size(Compression::Lzma { level: 9 }) < size(Compression::Lzma { level: 0 }));
    assert!(size(Compression::Zstd { level: 19 }) < size(Compression::Zstd { level: 1 }));
    assert!(size(Compression::Zlib { level: 9 }) < size(Compression::Zlib { level: 1 }));
    assert!(size(Compression::Zlib { level: 0 }) > data.len()); // stored blocks
}

#[test]
fn auto_decisions() {
    let auto: Compression = "auto,lzma,6".parse().unwrap();
    assert_eq!(auto.compress(&noise(50_000))[..2], [0, 0]);
    assert_eq!(auto.compress(&text(50_000))[..2], [2, 0]);
    assert_eq!(auto.compress(b""), [0, 0]);
    // The inner compressor must beat LZ4 by 1 %; LZ4 against itself never does.
    let auto_lz4: Compression = "auto,lz4".parse().unwrap();
    assert_eq!(
        auto_lz4.compress(&text(50_000)),
        Compression::Lz4.compress(&text(50_000))
    );
    // auto,none on compressible data keeps the LZ4 result.
    let auto_none: Compression = "auto,none".parse().unwrap();
    assert_eq!(auto_none.compress(&text(50_000))[..2], [1, 0]);
}

#[test]
fn obfuscation_layout_and_padding() {
    let data = text(10_000);
    let inner = Compression::Lz4.compress(&data);
    let c: Compression = "obfuscate,250,lz4".parse().unwrap();
    let z = c.compress(&data);
    assert_eq!(z[..2], [4, 0]);
    assert_eq!(
        u32::from_be_bytes(z[2..6].try_into().unwrap()) as usize,
        inner.len()
    );
    assert_eq!(z[6..6 + inner.len()], inner[..]);
    assert_eq!(z.len(), 6 + inner.len() + obfuscate::padme(inner.len()));
    assert!(z[6 + inner.len()..].iter().all(|&b| b == 0));

    // Padmé values (as borg's float formula computes them).
    assert_eq!(obfuscate::padme(0), 0);
    assert_eq!(obfuscate::padme(1), 0);
    assert_eq!(obfuscate::padme(3), 0);
    assert_eq!(obfuscate::padme(1000), 24); // E=9, S=4: multiples of 32
    assert_eq!(obfuscate::padme(1 << 20), 0);
    assert_eq!(obfuscate::padme((1 << 20) + 1), (1 << 15) - 1); // E=20, S=5
    let r = |v: f64| move || v;
    assert_eq!(obfuscate::padding_len(1, 1000, &mut r(0.5)), 20);
    assert_eq!(
        obfuscate::padding_len(6, 1000, &mut r(0.0)),
        MAX_DATA_SIZE - 2024
    );
    assert_eq!(obfuscate::padding_len(110, 1000, &mut r(0.5)), 512);
    assert_eq!(
        obfuscate::padding_len(123, 1000, &mut r(0.999_999_999)),
        8_388_607
    );
    assert_eq!(obfuscate::padding_len(7, 1000, &mut r(0.5)), 0);

    let mut fixed = || 0.25;
    let mut out = Vec::new();
    "obfuscate,120,none"
        .parse::<Compression>()
        .unwrap()
        .compress_with(b"abc", &mut out, &mut fixed);
    assert_eq!(out.len(), 6 + 5 + (1 << 20) / 4);
    assert_eq!(decompress(&out).unwrap(), b"abc");
}

#[test]
fn spec_parsing() {
    for (s, canon) in [
        ("none", "none"),
        ("lz4", "lz4"),
        ("zstd", "zstd,3"),
        ("zstd,22", "zstd,22"),
        ("lzma", "lzma,6"),
        ("zlib,0", "zlib,0"),
        ("auto,lzma", "auto,lzma,6"),
        ("auto,zstd,9", "auto,zstd,9"),
        ("obfuscate,110,lz4", "obfuscate,110,lz4"),
        ("obfuscate,250,auto,zstd,5", "obfuscate,250,auto,zstd,5"),
        ("obfuscate,1,obfuscate,2,lz4", "obfuscate,1,obfuscate,2,lz4"),
        ("zstd, 4", "zstd,4"),
    ] {
        let c: Compression = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(c.to_string(), canon);
        assert_eq!(canon.parse::<Compression>().unwrap(), c);
    }
    for bad in [
        "",
        "zstd,0",
        "zstd,23",
        "lzma,10",
        "zlib,-1",
        "zlib,x",
        "lz4,1",
        "zstd,3,4",
        "auto",
        "auto,obfuscate,1,lz4",
        "obfuscate,7,lz4",
        "obfuscate,124,lz4",
        "obfuscate,1",
        "obfuscate,250",
        "brotli",
        "auto,brotli",
    ] {
        let e = bad.parse::<Compression>().unwrap_err();
        assert_eq!(e.spec, bad);
    }
    let e = "zstd,99".parse::<Compression>().unwrap_err().to_string();
    assert!(e.contains("zstd,99") && e.contains("99"), "{e}");
}

#[test]
fn decompress_errors() {
    assert!(matches!(
        decompress(b""),
        Err(CompressError::TooShort { len: 0 })
    ));
    assert!(matches!(
        decompress(b"\x01"),
        Err(CompressError::TooShort { len: 1 })
    ));
    assert!(matches!(
        decompress(b"\x05\x00abc"),
        Err(CompressError::UnknownHeader([5, 0]))
    ));
    for bad in [
        &b"\x01\x00"[..],
        b"\x01\x00\xf0",
        b"\x01\x00\x10a\x05\x00",
        b"\x03\x00\x28\xb5\x2f",
        b"\x02\x00\xfd7zXZ\x00",
        b"\x78\x9c\x01",
        b"\x04\x00\x00\x00",
        b"\x04\x00\x00\x00\x00\x09\x00\x00",
    ] {
        assert!(
            matches!(decompress(bad), Err(CompressError::Corrupt { .. })),
            "{bad:02x?}: {:?}",
            decompress(bad)
        );
    }
    // A truncated payload of each codec fails as corrupt.
    let t = text(100_000);
    for c in ["lz4", "zstd,3", "lzma,6", "zlib,6"] {
        let z = c.parse::<Compression>().unwrap().compress(&t);
        assert!(decompress(&z[..z.len() / 2]).is_err(), "{c}");
    }
}

#[test]
fn output_limits() {
    let zeros = vec![0u8; 1 << 20];
    for c in [
        "lz4",
        "zstd,3",
        "lzma,6",
        "zlib,6",
        "none",
        "obfuscate,2,lz4",
    ] {
        let z = c.parse::<Compression>().unwrap().compress(&zeros);
        assert!(
            matches!(
                decompress_limited(&z, 1000),
                Err(CompressError::TooLarge { limit: 1000, .. })
            ),
            "{c}"
        );
        assert_eq!(decompress_limited(&z, 1 << 20).unwrap(), zeros, "{c}");
    }
}

#[test]
fn deep_obfuscation_nesting_does_not_recurse() {
    let mut z = Compression::None.compress(b"x");
    for _ in 0..100_000 {
        let mut w = vec![4, 0];
        w.extend_from_slice(&(z.len() as u32).to_be_bytes());
        w.extend_from_slice(&z);
        z = w;
        if z.len() > 400_000 {
            break;
        }
    }
    assert_eq!(decompress(&z).unwrap(), b"x");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decompress_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decompress(&data);
    }

    #[test]
    fn decompress_never_panics_behind_valid_headers(
        hdr in prop::sample::select(vec![
            vec![1u8, 0], vec![3, 0, 0x28, 0xb5, 0x2f, 0xfd], vec![2, 0, 0xfd, b'7', b'z', b'X', b'Z', 0],
            vec![0x78, 0x9c], vec![4, 0, 0, 0, 0, 8], vec![2, 0, 0x5d, 0, 0, 0x80, 0],
        ]),
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut data = hdr;
        data.extend_from_slice(&tail);
        let _ = decompress(&data);
    }

    #[test]
    fn corrupted_payloads_never_panic(
        seed in 0usize..4,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let c: Compression = ["lz4", "zstd,3", "lzma,1", "zlib,6"][seed].parse().unwrap();
        let mut z = c.compress(&text(3000));
        for (i, v) in flips {
            let i = i.index(z.len());
            z[i] ^= v;
        }
        let _ = decompress(&z);
    }

    #[test]
    fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), seed in 0usize..5) {
        let c: Compression = ["lz4", "zstd,1", "lzma,0", "zlib,1", "auto,zstd,1"][seed].parse().unwrap();
        prop_assert_eq!(decompress(&c.compress(&data)).unwrap(), data);
    }
}

#[test]
fn lz4_room_grows_to_what_a_chunk_needs() {
    // A recycled envelope grows for a larger chunk to the room it needs (the chunk's size:
    // LZ4 output as large is stored as `none`), not to twice its capacity: the store keeps
    // buffers up to a bound just above the largest chunk's.
    let mut out = vec![0u8; 41 + 2 + 5_000_000];
    let data = noise(8 << 20);
    let end = Compression::Lz4.compress_reusing(&data, &mut out, 41);
    let room = 41 + 2 + data.len();
    assert!(
        out.capacity() <= room + (64 << 10),
        "capacity {} for {room}",
        out.capacity()
    );
    assert_eq!(decompress(&out[41..end]).unwrap(), data);
}
