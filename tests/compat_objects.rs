//! Metadata objects against upstream borg 1.2.4 and 1.4.5 (`borg.item`, `borg.crypto.key`,
//! `borg.helpers.manifest`, `borg.hashindex.CacheSynchronizer`), both directions:
//! items pack byte-identically and read back in borg's unpackers and cache sync; manifests
//! and archive objects we seal pass borg's unpack-and-verify, and borg's sealed ones pass ours
//! (and re-encode byte-identically with the same salt).

mod common;

use std::collections::BTreeMap;

use common::{prng_bytes, run_py_json, Borg};
use proxborg::format::objects::{
    decode_item_stream, ArchiveMeta, ChunkRef, Item, ItemStreamDecoder, Manifest, ManifestArchive,
    ObjectError, TamStatus,
};
use proxborg::format::tam::{hkdf_tam_key, TamKeySource};
use rmpv::Value;
use serde_json::{json, Value as Json};
use zeroize::Zeroizing;

/// borg's `PlaintextKey._tam_key`: no secret.
struct Plain;
impl TamKeySource for Plain {
    fn tam_key(&self, salt: &[u8], context: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new([salt, context].concat())
    }
}

/// A keyed mode's TAM key from fixed key material.
struct Keyed {
    id_key: Vec<u8>,
    enc_key: Vec<u8>,
    enc_hmac_key: Vec<u8>,
    blake2: bool,
}

impl Keyed {
    fn new(blake2: bool, seed: u64) -> Keyed {
        let (id_len, hmac_len) = if blake2 { (128, 128) } else { (32, 32) };
        Keyed {
            id_key: prng_bytes(seed, id_len),
            enc_key: prng_bytes(seed + 1, 32),
            enc_hmac_key: prng_bytes(seed + 2, hmac_len),
            blake2,
        }
    }

    fn json(&self) -> Json {
        json!({"kind": "keyed", "blake2": self.blake2, "id_key": hex::encode(&self.id_key),
               "enc_key": hex::encode(&self.enc_key), "enc_hmac_key": hex::encode(&self.enc_hmac_key)})
    }
}

impl TamKeySource for Keyed {
    fn tam_key(&self, salt: &[u8], context: &[u8]) -> Zeroizing<Vec<u8>> {
        let ikm = Zeroizing::new([&self.id_key[..], &self.enc_key, &self.enc_hmac_key].concat());
        hkdf_tam_key(&ikm, salt, context)
    }
}

/// The keys every metadata test runs under: (JSON for the oracle, key, TAM required).
fn keys() -> Vec<(Json, Box<dyn TamKeySource>, bool)> {
    let hmac = Keyed::new(false, 11);
    let blake = Keyed::new(true, 21);
    vec![
        (json!({"kind": "plain"}), Box::new(Plain), false),
        (hmac.json(), Box::new(hmac), true),
        (blake.json(), Box::new(blake), true),
    ]
}

fn cref(seed: u8, size: u32, csize: u32) -> ChunkRef {
    let mut id = [0u8; 32];
    id.copy_from_slice(&prng_bytes(u64::from(seed), 32));
    ChunkRef { id, size, csize }
}

fn base(path: &[u8], mode: u32) -> Item {
    Item {
        path: path.to_vec(),
        mode,
        uid: 1000,
        gid: 1000,
        user: Some(b"alice".to_vec()),
        group: Some(b"users".to_vec()),
        mtime: 1_704_164_645_123_456_789,
        ctime: Some(1_795_415_009_336_887_977),
        ..Default::default()
    }
}

/// One item of every shape borg 1.x writes, plus edge values.
fn sample_items() -> Vec<Item> {
    let mut v = Vec::new();
    let mut f = base(b"srv/data/file.bin", 0o100644);
    f.chunks = Some(vec![
        cref(1, 12, 15),
        cref(2, 65_536, 40_000),
        cref(3, 8_388_608, 8_388_650),
    ]);
    f.size = Some(12 + 65_536 + 8_388_608);
    f.hardlink_master = Some(false);
    v.push(f);
    let mut empty = base(b"srv/empty", 0o100600);
    empty.chunks = Some(vec![]);
    empty.size = Some(0);
    empty.hardlink_master = Some(false);
    v.push(empty);
    let mut d = base(b"srv", 0o040755);
    d.acl_access = Some(b"user::rwx\ngroup::r-x\nother::r-x".to_vec());
    d.acl_default =
        Some(b"user::rwx\ngroup::r-x\ngroup:nogroup:r-x:65534\nmask::r-x\nother::r-x".to_vec());
    v.push(d);
    let mut l = base(b"srv/link", 0o120777);
    l.source = Some(b"../target with spaces/\xff".to_vec());
    v.push(l);
    let mut master = base(b"srv/hard-a", 0o100644);
    master.chunks = Some(vec![cref(4, 100, 60)]);
    master.size = Some(100);
    master.hardlink_master = Some(true);
    v.push(master);
    let mut slave = base(b"srv/hard-b", 0o100644);
    slave.source = Some(b"srv/hard-a".to_vec());
    v.push(slave);
    let mut fifo = base(b"srv/fifo", 0o010644);
    fifo.hardlink_master = Some(false);
    v.push(fifo);
    let mut chr = base(b"dev/null", 0o020666);
    chr.rdev = Some(0x103);
    chr.hardlink_master = Some(false);
    v.push(chr);
    let mut blk = base(b"dev/sda", 0o060660);
    blk.rdev = Some(u64::from(u32::MAX) + 5);
    blk.hardlink_master = Some(false);
    v.push(blk);
    let mut x = base(b"srv/xattrs", 0o100664);
    x.chunks = Some(vec![cref(5, 2, 5)]);
    x.size = Some(2);
    x.hardlink_master = Some(false);
    x.xattrs = Some(BTreeMap::from([
        (b"user.empty".to_vec(), None),
        (b"user.k".to_vec(), Some(b"val".to_vec())),
        (b"user.bin\xfe".to_vec(), Some(prng_bytes(9, 300))),
    ]));
    x.acl_access =
        Some(b"user::rw-\nuser:nobody:rw-:65534\ngroup::r--\nmask::rw-\nother::r--".to_vec());
    x.acl_extended = Some(b"!#acl 1\nuser:FFFFEEEE:alice:1000:allow:read".to_vec());
    x.acl_nfs4 = Some(b"owner@:rwxp--aARWcCos:-------:allow".to_vec());
    x.bsdflags = Some(0x1 | 0x4);
    v.push(x);
    let mut nonutf = base(b"srv/caf\xe9/\xff\xfe-\x80name", 0o100644);
    nonutf.chunks = Some(vec![]);
    nonutf.size = Some(0);
    nonutf.hardlink_master = Some(false);
    nonutf.user = Some(b"us\xe9r".to_vec());
    v.push(nonutf);
    let mut times = base(b"srv/times", 0o100644);
    times.mtime = i64::MIN;
    times.ctime = Some(i64::MAX);
    times.atime = Some(-1);
    times.birthtime = Some(-1_000_000_000_000_000_000);
    times.chunks = Some(vec![]);
    times.size = Some(0);
    times.hardlink_master = Some(false);
    v.push(times);
    let mut numeric = base(b"srv/numeric", 0o100644);
    numeric.user = None;
    numeric.group = None;
    numeric.uid = u32::MAX;
    numeric.gid = 0;
    numeric.ctime = None;
    numeric.hardlink_master = Some(false);
    numeric.chunks = Some(vec![]);
    numeric.size = Some(0);
    v.push(numeric);
    // every key at once: a map16 with 23 entries; many chunks: array16
    let mut all = base(&vec![b'p'; 70_000], 0o100644);
    all.atime = Some(5);
    all.birthtime = Some(6);
    all.bsdflags = Some(2);
    all.chunks = Some((0..40).map(|i| cref(i, 1000 + u32::from(i), 500)).collect());
    all.chunks_healthy = Some(vec![cref(99, 1, 1)]);
    all.size = Some(all.chunks_size());
    all.hardlink_master = Some(true);
    all.part = Some(3);
    all.rdev = Some(0);
    all.source = Some(b"s".to_vec());
    all.xattrs = Some(BTreeMap::new());
    all.acl_access = Some(vec![]);
    all.acl_default = Some(b"a".to_vec());
    all.acl_extended = Some(b"b".to_vec());
    all.acl_nfs4 = Some(b"c".to_vec());
    v.push(all);
    v
}

fn hexo(b: &Option<Vec<u8>>) -> Json {
    b.as_ref().map_or(Json::Null, |b| json!(hex::encode(b)))
}

fn chunks_json(c: &[ChunkRef]) -> Json {
    c.iter()
        .map(|c| json!([hex::encode(c.id), c.size, c.csize]))
        .collect()
}

/// The oracle's description of an item (what borg's `Item(**kwargs)` gets).
fn item_json(it: &Item) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("path".into(), json!(hex::encode(&it.path)));
    m.insert("mode".into(), json!(it.mode));
    m.insert("uid".into(), json!(it.uid));
    m.insert("gid".into(), json!(it.gid));
    m.insert("user".into(), hexo(&it.user));
    m.insert("group".into(), hexo(&it.group));
    m.insert("mtime".into(), json!(it.mtime));
    for (k, v) in [
        ("ctime", it.ctime),
        ("atime", it.atime),
        ("birthtime", it.birthtime),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [
        ("size", it.size),
        ("rdev", it.rdev),
        ("part", it.part),
        ("bsdflags", it.bsdflags.map(u64::from)),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [
        ("source", &it.source),
        ("acl_access", &it.acl_access),
        ("acl_default", &it.acl_default),
        ("acl_extended", &it.acl_extended),
        ("acl_nfs4", &it.acl_nfs4),
    ] {
        if v.is_some() {
            m.insert(k.into(), hexo(v));
        }
    }
    if let Some(h) = it.hardlink_master {
        m.insert("hardlink_master".into(), json!(h));
    }
    if let Some(c) = &it.chunks {
        m.insert("chunks".into(), chunks_json(c));
    }
    if let Some(c) = &it.chunks_healthy {
        m.insert("chunks_healthy".into(), chunks_json(c));
    }
    if let Some(x) = &it.xattrs {
        m.insert(
            "xattrs".into(),
            x.iter()
                .map(|(k, v)| json!([hex::encode(k), hexo(v)]))
                .collect(),
        );
    }
    Json::Object(m)
}

fn oracle(borg: Borg, reqs: &[Json]) -> Vec<Json> {
    let out = run_py_json(
        borg,
        "objects.py",
        &[],
        serde_json::to_vec(&reqs).unwrap().as_slice(),
    );
    out.as_array().expect("a list of results").clone()
}

fn ok(borg: Borg, r: &Json, what: &str) -> Json {
    assert!(
        r.get("error").is_none(),
        "{}: {what}: {}",
        borg.name(),
        r["error"]
    );
    r.clone()
}

#[test]
fn items_are_byte_identical_and_read_by_borg() {
    let items = sample_items();
    let ours: Vec<Vec<u8>> = items.iter().map(Item::to_msgpack).collect();
    // the refcounts borg's cache sync must find: every chunk list entry counts once
    let mut want_sync: BTreeMap<String, (u64, u32, u32)> = BTreeMap::new();
    for c in items.iter().flat_map(|i| i.chunks.iter().flatten()) {
        let e = want_sync
            .entry(hex::encode(c.id))
            .or_insert((0, c.size, c.csize));
        e.0 += 1;
    }
    for borg in Borg::ALL {
        let req = json!({"op": "items", "items": items.iter().map(item_json).collect::<Vec<_>>(),
                         "ours": ours.iter().map(hex::encode).collect::<Vec<_>>()});
        let r = ok(borg, &oracle(borg, &[req])[0], "items");
        let packed: Vec<Vec<u8>> = r["packed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
            .collect();
        for ((it, mine), theirs) in items.iter().zip(&ours).zip(&packed) {
            assert_eq!(
                hex::encode(mine),
                hex::encode(theirs),
                "{}: packing of {:?}",
                borg.name(),
                String::from_utf8_lossy(&it.path[..it.path.len().min(40)])
            );
        }
        for (i, e) in r["equal"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                e,
                &json!(true),
                "{}: borg reads our item {i} differently",
                borg.name()
            );
        }
        assert_eq!(
            r["stream_equal"],
            json!(true),
            "{}: item stream",
            borg.name()
        );
        let sync: BTreeMap<String, (u64, u32, u32)> = r["sync"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let v: (u64, u32, u32) = serde_json::from_value(v.clone()).unwrap();
                (k.clone(), v)
            })
            .collect();
        assert_eq!(
            sync,
            want_sync,
            "{}: cache sync of our item stream",
            borg.name()
        );
        // borg's packed items, one by one and as a stream cut anywhere, decode to ours
        for (it, theirs) in items.iter().zip(&packed) {
            let v = rmpv::decode::read_value(&mut &theirs[..]).unwrap();
            assert_eq!(&Item::decode(&v).unwrap(), it);
        }
        let stream: Vec<u8> = packed.concat();
        assert_eq!(decode_item_stream(&stream).unwrap(), items);
        for step in [1usize, 13, 4096, 100_000] {
            let mut d = ItemStreamDecoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                d.feed(piece);
                while let Some(it) = d.next_item().unwrap() {
                    got.push(it);
                }
            }
            d.finish().unwrap();
            assert_eq!(
                got,
                items,
                "{}: stream fed in {step}-byte pieces",
                borg.name()
            );
        }
    }
}

fn sample_manifest(tam_required: bool) -> Manifest {
    let mut m = Manifest::new_empty(tam_required);
    m.timestamp = "2026-11-23T06:23:30.142571".into();
    let names: Vec<Vec<u8>> = vec![
        b"host-2026-11-23".to_vec(),
        b"caf\xe9 non-utf8".to_vec(),
        vec![b'n'; 255],
        "ünïcødé".as_bytes().to_vec(),
    ];
    for (i, n) in names.into_iter().enumerate() {
        let mut id = [0u8; 32];
        id.copy_from_slice(&prng_bytes(100 + i as u64, 32));
        m.archives.insert(
            n,
            ManifestArchive {
                id,
                time: format!("2026-11-2{i}T06:23:30.13659{i}"),
            },
        );
    }
    m
}

fn sample_archive(cwd: bool) -> ArchiveMeta {
    ArchiveMeta {
        version: 1,
        name: b"caf\xe9-archive".to_vec(),
        items: (0..40u64)
            .map(|i| {
                let mut id = [0u8; 32];
                id.copy_from_slice(&prng_bytes(200 + i, 32));
                id
            })
            .collect(),
        cmdline: vec![
            b"proxborg-native".to_vec(),
            b"create".to_vec(),
            b"/srv/\xff".to_vec(),
            vec![b'x'; 40],
        ],
        hostname: b"pve1".to_vec(),
        username: b"root".to_vec(),
        time: "2026-11-23T06:23:30.136596".into(),
        time_end: "2026-11-23T06:25:01.000001".into(),
        comment: b"nightly \xe2\x9c\x93".to_vec(),
        chunker_params: Value::Array(vec![
            Value::from("buzhash"),
            19.into(),
            23.into(),
            21.into(),
            4095.into(),
        ]),
        cwd: cwd.then(|| b"/root".to_vec()),
        size: 1 << 40,
        csize: 123_456_789_012,
        nfiles: 70_000,
        size_parts: 0,
        csize_parts: 0,
        nfiles_parts: 0,
        extra: BTreeMap::new(),
    }
}

#[test]
fn borg_verifies_our_manifest_and_archives() {
    for borg in Borg::ALL {
        let mut reqs = Vec::new();
        let mut expect = Vec::new();
        for (kj, key, req) in keys() {
            let m = sample_manifest(req);
            reqs.push(json!({"op": "verify_manifest", "key": kj, "data": hex::encode(m.encode_with_tam(key.as_ref()).unwrap())}));
            expect.push(("manifest", req));
            for cwd in [false, true] {
                let a = sample_archive(cwd);
                reqs.push(json!({"op": "verify_archive", "key": kj, "data": hex::encode(a.encode_with_tam(key.as_ref()).unwrap())}));
                expect.push(("archive", cwd));
            }
        }
        let out = oracle(borg, &reqs);
        for (r, (what, flag)) in out.iter().zip(expect) {
            let r = ok(borg, r, what);
            assert_eq!(r["verified"], json!(true), "{}: {what} TAM", borg.name());
            if what == "manifest" {
                let m = sample_manifest(flag);
                assert_eq!(r["version"], json!(1));
                assert_eq!(r["timestamp"], json!(m.timestamp));
                assert_eq!(r["tam_required"], json!(flag));
                assert_eq!(r["item_keys"].as_array().unwrap().len(), 23);
                let want: serde_json::Map<String, Json> = m
                    .archives
                    .iter()
                    .map(|(n, a)| (hex::encode(n), json!([hex::encode(a.id), a.time])))
                    .collect();
                assert_eq!(
                    r["archives"],
                    Json::Object(want),
                    "{}: archive list",
                    borg.name()
                );
            } else {
                let a = sample_archive(flag);
                for k in ["valid_msgpacked_dict", "rebuild_markers", "required_keys"] {
                    assert_eq!(r[k], json!(true), "{}: {k}", borg.name());
                }
                assert_eq!(r["name"], json!(hex::encode(&a.name)));
                assert_eq!(
                    r["items"],
                    json!(a.items.iter().map(hex::encode).collect::<Vec<_>>())
                );
                assert_eq!(
                    r["cmdline"],
                    json!(a.cmdline.iter().map(hex::encode).collect::<Vec<_>>())
                );
                assert_eq!(r["hostname"], json!(hex::encode(&a.hostname)));
                assert_eq!(r["username"], json!(hex::encode(&a.username)));
                assert_eq!(r["time"], json!(a.time));
                assert_eq!(r["time_end"], json!(a.time_end));
                assert_eq!(r["comment"], json!(hex::encode(&a.comment)));
                assert_eq!(r["chunker_params"], json!(["buzhash", 19, 23, 21, 4095]));
                assert_eq!(
                    r["cwd"],
                    a.cwd.as_ref().map_or(Json::Null, |c| json!(hex::encode(c)))
                );
                assert_eq!(r["stats"], json!([a.size, a.csize, a.nfiles, 0, 0, 0]));
            }
        }
    }
}

#[test]
fn borg_refuses_our_objects_once_tampered() {
    for borg in Borg::ALL {
        let mut reqs = Vec::new();
        for (kj, key, _) in keys() {
            let mut m = sample_manifest(true).encode_with_tam(key.as_ref()).unwrap();
            let at = m.windows(15).position(|w| w == b"host-2026-11-23").unwrap();
            m[at] = b'H';
            reqs.push(json!({"op": "verify_manifest", "key": kj, "data": hex::encode(&m)}));
            let mut a = sample_archive(true).encode_with_tam(key.as_ref()).unwrap();
            let at = a.windows(4).position(|w| w == b"pve1").unwrap();
            a[at] = b'P';
            reqs.push(json!({"op": "verify_archive", "key": kj, "data": hex::encode(&a)}));
        }
        for (i, r) in oracle(borg, &reqs).iter().enumerate() {
            let refused = r.get("error").is_some() || r["verified"] == json!(false);
            assert!(
                refused,
                "{}: tampered object {i} accepted: {r}",
                borg.name()
            );
        }
    }
}

fn salt_of(raw: &[u8]) -> Vec<u8> {
    let v = rmpv::decode::read_value(&mut &raw[..]).unwrap();
    let tam = proxborg::format::msgpack::map_get(&v, b"tam").unwrap();
    proxborg::format::msgpack::as_bytes(proxborg::format::msgpack::map_get(tam, b"salt").unwrap())
        .unwrap()
        .to_vec()
}

/// borg 1.2 never writes `cwd` (its `ArchiveItem` refuses the key); 1.4 always does.
fn cwds(borg: Borg) -> &'static [bool] {
    match borg {
        Borg::V12 => &[false],
        Borg::V14 => &[true],
    }
}

#[test]
fn we_verify_borgs_manifest_and_archives_and_match_its_bytes() {
    for borg in Borg::ALL {
        let mut reqs = Vec::new();
        for (kj, _, req) in keys() {
            let m = sample_manifest(req);
            let archives: Vec<Json> = m
                .archives
                .iter()
                .map(|(n, a)| json!([hex::encode(n), hex::encode(a.id), a.time]))
                .collect();
            reqs.push(
                json!({"op": "pack_manifest", "key": kj, "archives": archives,
                             "timestamp": m.timestamp, "tam_required": req}),
            );
            for &cwd in cwds(borg) {
                let a = sample_archive(cwd);
                let meta = json!({
                    "name": hex::encode(&a.name), "comment": hex::encode(&a.comment),
                    "items": a.items.iter().map(hex::encode).collect::<Vec<_>>(),
                    "cmdline": a.cmdline.iter().map(hex::encode).collect::<Vec<_>>(),
                    "hostname": hex::encode(&a.hostname), "username": hex::encode(&a.username),
                    "time": a.time, "time_end": a.time_end, "chunker_params": ["buzhash", 19, 23, 21, 4095],
                    "stats": [a.size, a.csize, a.nfiles, 0, 0, 0],
                    "cwd": a.cwd.as_ref().map(hex::encode),
                });
                reqs.push(json!({"op": "pack_archive", "key": kj, "meta": meta}));
            }
        }
        let out = oracle(borg, &reqs);
        let mut out = out.iter();
        for (_, key, req) in keys() {
            let raw = hex::decode(
                ok(borg, out.next().unwrap(), "pack_manifest")["data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            let (m, tam) = Manifest::decode(&raw, key.as_ref(), req).unwrap();
            assert_eq!(
                tam,
                TamStatus::Verified,
                "{}: borg's manifest TAM",
                borg.name()
            );
            assert_eq!(m, sample_manifest(req));
            let again = m
                .encode_with_tam_salt(key.as_ref(), &salt_of(&raw))
                .unwrap();
            assert_eq!(
                hex::encode(&again),
                hex::encode(&raw),
                "{}: manifest bytes",
                borg.name()
            );
            // someone else's key must not verify it
            assert!(matches!(
                Manifest::decode(&raw, &Keyed::new(false, 999), false),
                Err(ObjectError::TamInvalid { .. })
            ));
            for &cwd in cwds(borg) {
                let raw = hex::decode(
                    ok(borg, out.next().unwrap(), "pack_archive")["data"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
                let (a, tam) = ArchiveMeta::decode(&raw, key.as_ref()).unwrap();
                assert_eq!(
                    tam,
                    TamStatus::Verified,
                    "{}: borg's archive TAM",
                    borg.name()
                );
                assert_eq!(a, sample_archive(cwd));
                let again = a
                    .encode_with_tam_salt(key.as_ref(), &salt_of(&raw))
                    .unwrap();
                assert_eq!(
                    hex::encode(&again),
                    hex::encode(&raw),
                    "{}: archive bytes (cwd {cwd})",
                    borg.name()
                );
                assert!(matches!(
                    ArchiveMeta::decode(&raw, &Keyed::new(true, 998)),
                    Err(ObjectError::TamInvalid { .. })
                ));
            }
        }
    }
}

#[test]
fn limits_are_refused_before_borg_would() {
    let mut m = sample_manifest(false);
    m.archives.insert(
        vec![b'x'; 256],
        ManifestArchive {
            id: [0; 32],
            time: m.timestamp.clone(),
        },
    );
    assert!(matches!(
        m.encode_with_tam(&Plain),
        Err(ObjectError::Limit { .. })
    ));
    // the limit is borg 1.2's, not ours: an untagged manifest (fine for a plaintext key)
    // with a 256-byte name, packed without our checks, is refused by 1.2 and read by 1.4
    let name = Value::Binary(vec![b'x'; 256]);
    let entry = Value::Map(vec![
        (Value::from("id"), Value::Binary(vec![0; 32])),
        (
            Value::from("time"),
            Value::from("2026-11-23T06:23:30.136596"),
        ),
    ]);
    let v = Value::Map(vec![
        (Value::from("archives"), Value::Map(vec![(name, entry)])),
        (Value::from("config"), Value::Map(vec![])),
        (
            Value::from("timestamp"),
            Value::from("2026-11-23T06:23:30.142571"),
        ),
        (Value::from("version"), Value::from(1)),
    ]);
    let mut raw = Vec::new();
    proxborg::format::msgpack::write_value(&mut raw, &v);
    let req =
        [json!({"op": "verify_manifest", "key": {"kind": "plain"}, "data": hex::encode(&raw)})];
    let r12 = oracle(Borg::V12, &req);
    assert!(
        r12[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_str_len")),
        "borg 1.2: {}",
        r12[0]
    );
    let r14 = oracle(Borg::V14, &req);
    assert_eq!(
        ok(Borg::V14, &r14[0], "long name")["verified"],
        json!(false)
    );
}
