//! Property tests: every value round-trips through our encoding, and no byte sequence
//! makes a decoder panic.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use rmpv::Value;
use zeroize::Zeroizing;

use super::*;
use crate::format::tam::TamKeySource;

struct Plain;
impl TamKeySource for Plain {
    fn tam_key(&self, salt: &[u8], context: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new([salt, context].concat())
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn chunk() -> impl Strategy<Value = ChunkRef> {
    (any::<[u8; 32]>(), any::<u32>(), any::<u32>()).prop_map(|(id, size, csize)| ChunkRef {
        id,
        size,
        csize,
    })
}

fn item() -> impl Strategy<Value = Item> {
    let a = (
        bytes(80),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(bytes(20)),
        proptest::option::of(bytes(20)),
        any::<i64>(),
    );
    let b = (
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(vec(chunk(), 0..20)),
        proptest::option::of(any::<bool>()),
        proptest::option::of(bytes(40)),
        proptest::option::of(any::<u64>()),
    );
    let c = (
        proptest::option::of(btree_map(bytes(20), proptest::option::of(bytes(40)), 0..5)),
        proptest::option::of(bytes(60)),
        proptest::option::of(bytes(60)),
        proptest::option::of(bytes(10)),
        proptest::option::of(bytes(10)),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(vec(chunk(), 0..3)),
    );
    (a, b, c).prop_map(|(a, b, c)| Item {
        path: a.0,
        mode: a.1,
        uid: a.2,
        gid: a.3,
        user: a.4,
        group: a.5,
        mtime: a.6,
        ctime: b.0,
        atime: b.1,
        birthtime: b.2,
        size: b.3,
        chunks: b.4,
        hardlink_master: b.5,
        source: b.6,
        rdev: b.7,
        xattrs: c.0,
        acl_access: c.1,
        acl_default: c.2,
        acl_extended: c.3,
        acl_nfs4: c.4,
        bsdflags: c.5,
        part: c.6,
        chunks_healthy: c.7,
    })
}

/// borg timestamps: any instant with microseconds, as `timefmt` writes them.
fn timestamp() -> impl Strategy<Value = String> {
    (0i64..4_102_444_800, 0u32..1_000_000).prop_map(|(s, us)| {
        let t = chrono::DateTime::from_timestamp(s, us * 1000).unwrap_or_default();
        crate::format::timefmt::format(t)
    })
}

fn text_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[a-z]{0,20}".prop_map(Value::from),
    ]
}

fn archive() -> impl Strategy<Value = ArchiveMeta> {
    (
        bytes(255),
        vec(any::<[u8; 32]>(), 0..50),
        vec(bytes(40), 0..6),
        (bytes(30), bytes(30), bytes(80)),
        (timestamp(), timestamp()),
        vec(text_value(), 0..6),
        proptest::option::of(bytes(50)),
        any::<[u64; 6]>(),
        btree_map(
            "recreate_[a-z]{1,8}".prop_map(String::into_bytes),
            text_value(),
            0..3,
        ),
    )
        .prop_map(
            |(
                name,
                items,
                cmdline,
                (hostname, username, comment),
                (time, time_end),
                cp,
                cwd,
                s,
                extra,
            )| ArchiveMeta {
                version: 1,
                name,
                items,
                cmdline,
                hostname,
                username,
                time,
                time_end,
                comment,
                chunker_params: if cp.is_empty() {
                    Value::Nil
                } else {
                    Value::Array(cp)
                },
                cwd,
                size: s[0],
                csize: s[1],
                nfiles: s[2],
                size_parts: s[3],
                csize_parts: s[4],
                nfiles_parts: s[5],
                extra,
            },
        )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        btree_map(bytes(255), (any::<[u8; 32]>(), timestamp()), 0..30),
        any::<bool>(),
        timestamp(),
        vec(("[a-z]{1,10}".prop_map(Value::from), text_value()), 0..4),
    )
        .prop_map(|(archives, tam_required, timestamp, extra_config)| {
            let mut m = Manifest::new_empty(tam_required);
            m.timestamp = timestamp;
            m.archives = archives
                .into_iter()
                .map(|(n, (id, time))| (n, ManifestArchive { id, time }))
                .collect();
            if let Value::Map(c) = &mut m.config {
                for (k, v) in extra_config {
                    if !c.iter().any(|(x, _)| x == &k) && k.as_str() != Some("feature_flags") {
                        c.push((k, v));
                    }
                }
                // decoding hands the map back in borg's (sorted) order
                c.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn item_round_trip(it in item()) {
        let b = it.to_msgpack();
        prop_assert_eq!(&decode_item_stream(&b).unwrap()[..], std::slice::from_ref(&it));
    }

    #[test]
    fn item_stream_round_trip(items in vec(item(), 0..8), step in 1usize..300) {
        let mut s = Vec::new();
        for it in &items {
            it.encode(&mut s);
        }
        let mut d = ItemStreamDecoder::new();
        let mut got = Vec::new();
        for piece in s.chunks(step) {
            d.feed(piece);
            while let Some(x) = d.next_item().unwrap() {
                got.push(x);
            }
        }
        d.finish().unwrap();
        prop_assert_eq!(got, items);
    }

    #[test]
    fn archive_round_trip(a in archive()) {
        let raw = a.encode_with_tam(&Plain).unwrap();
        let (back, tam) = ArchiveMeta::decode(&raw, &Plain).unwrap();
        prop_assert_eq!(tam, TamStatus::Verified);
        prop_assert_eq!(back, a);
    }

    #[test]
    fn manifest_round_trip(m in manifest()) {
        let raw = m.encode_with_tam(&Plain).unwrap();
        let (back, tam) = Manifest::decode(&raw, &Plain, true).unwrap();
        prop_assert_eq!(tam, TamStatus::Verified);
        prop_assert_eq!(back, m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..400)) {
        let _ = decode_item_stream(&data);
        let _ = Manifest::decode(&data, &Plain, false);
        let _ = ArchiveMeta::decode_unverified(&data, &Plain);
    }

    #[test]
    fn mutated_objects_never_panic(it in item(), a in archive(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut m = Manifest::new_empty(true);
        m.timestamp = "2020-01-01T00:00:00.000000".into();
        let objs = vec![it.to_msgpack(), a.encode_with_tam(&Plain).unwrap(), m.encode_with_tam(&Plain).unwrap()];
        for orig in &objs {
            let mut o = orig.clone();
            for (i, x) in &flips {
                let n = o.len();
                o[i.index(n)] ^= x;
            }
            let short = &o[..cut.index(o.len())];
            for data in [&o[..], short] {
                let _ = decode_item_stream(data);
                // whatever changed in a sealed object must not verify
                if let Ok((_, TamStatus::Verified)) = Manifest::decode(data, &Plain, true) {
                    prop_assert_eq!(data, &orig[..]);
                }
                if let Ok((_, TamStatus::Verified)) = ArchiveMeta::decode(data, &Plain) {
                    prop_assert_eq!(data, &orig[..]);
                }
            }
        }
    }
}

#[test]
fn bin_encoded_objects_decode_like_raw() {
    // another writer's bin strings (rejected by borg 1.2, but valid msgpack): we read them
    let it = Item {
        path: b"a".to_vec(),
        mode: 0o100644,
        user: Some(b"u".to_vec()),
        mtime: 1,
        chunks: Some(vec![ChunkRef {
            id: [7; 32],
            size: 1,
            csize: 2,
        }]),
        xattrs: Some(BTreeMap::from([(b"k".to_vec(), Some(b"v".to_vec()))])),
        ..Default::default()
    };
    let v = crate::format::msgpack::decode_one(&it.to_msgpack()).unwrap();
    fn to_bin(v: Value) -> Value {
        match v {
            Value::String(s) => Value::Binary(s.into_bytes()),
            Value::Array(a) => Value::Array(a.into_iter().map(to_bin).collect()),
            Value::Map(m) => {
                Value::Map(m.into_iter().map(|(k, x)| (to_bin(k), to_bin(x))).collect())
            }
            o => o,
        }
    }
    let mut b = Vec::new();
    rmpv::encode::write_value(&mut b, &to_bin(v)).unwrap();
    assert!(b.contains(&0xc4));
    assert_eq!(decode_item_stream(&b).unwrap(), vec![it]);
}
