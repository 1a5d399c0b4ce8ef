//! Keys, envelopes, key blobs, keyfiles and TAMs against borg 1.2.4 and 1.4.5's own key
//! classes, in both directions: borg opens what we seal (and rejects it tampered), we open
//! what borg seals (byte-identical for the same key and IV), ids agree, borg unlocks our
//! key blobs and keyfiles, we unlock the ones `borg init` writes, TAMs verify either way,
//! keyfile names and BORG_PASSCOMMAND splitting match.

mod common;

use common::{ok, prng_bytes, run_py_json, Borg, TestEnv};
use proxborg::format::crypto::{Key, KeyMaterial, KeyMode};
use proxborg::format::keyblob::{
    decrypt_key_blob, encrypt_key_blob, keyfile_name, keyfile_text, parse_keyfile, KeyBlobError,
    PBKDF2_ITERATIONS,
};
use proxborg::format::{msgpack, tam};
use proxborg::secrets::shlex_split;
use serde_json::{json, Value};

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(
        v.as_str()
            .unwrap_or_else(|| panic!("not a hex string: {v}")),
    )
    .unwrap()
}

fn material_json(m: &KeyMaterial) -> Value {
    json!({
        "repository_id": h(&m.repository_id),
        "enc_key": h(&m.enc_key),
        "enc_hmac_key": h(&m.enc_hmac_key),
        "id_key": h(&m.id_key),
        "chunk_seed": m.chunk_seed,
        "tam_required": m.tam_required,
    })
}

fn repo_id(seed: u64) -> [u8; 32] {
    prng_bytes(seed, 32).try_into().unwrap()
}

/// The compressed payload borg's `none` compressor makes.
fn payload(data: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 0];
    p.extend_from_slice(data);
    p
}

/// Plaintexts and IVs covering empty, sub-block, block-edge and large payloads and IVs
/// near the 64-bit edge (the CTR counter carries into the upper half, as OpenSSL's does).
fn cases() -> Vec<(Vec<u8>, u64)> {
    [
        (0usize, 0u64),
        (1, 1),
        (14, 2),
        (30, 3),
        (31, 0x1000_001c),
        (1000, 0xffff_ffff),
        (70_000, u64::MAX - 3),
        (5, u64::MAX),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(n, iv))| (prng_bytes(100 + i as u64, n), iv))
    .collect()
}

#[test]
fn envelopes_both_ways_every_mode() {
    for borg in Borg::ALL {
        for (mi, mode) in KeyMode::ALL.into_iter().enumerate() {
            let key = Key::generate(mode, repo_id(mi as u64));
            let mat = material_json(key.material());
            let cases = cases();

            // borg seals; we must produce the very same envelope and open borg's.
            let items: Vec<Value> = cases
                .iter()
                .map(|(d, iv)| json!({"data": h(d), "iv": iv}))
                .collect();
            let sealed = run_py_json(
                borg,
                "crypto.py",
                &["seal"],
                json!({"mode": mode.name(), "material": mat, "items": items})
                    .to_string()
                    .as_bytes(),
            );
            let sealed = sealed.as_array().unwrap();
            for ((data, iv), s) in cases.iter().zip(sealed) {
                let env = unhex(&s["env"]);
                let id = unhex(&s["id"]);
                let what = format!("{} {mode} len {} iv {iv:#x}", borg.name(), data.len());
                assert_eq!(key.id_hash(data).to_vec(), id, "{what}: id");
                assert_eq!(key.seal(&payload(data), *iv), env, "{what}: envelope");
                let id: [u8; 32] = id.try_into().unwrap();
                assert_eq!(
                    key.open_with_id(&id, &env).unwrap(),
                    payload(data),
                    "{what}"
                );
                if mode.is_encrypted() {
                    assert_eq!(Key::envelope_iv(&env), Some(*iv), "{what}");
                    let mut bad = env.clone();
                    *bad.last_mut().unwrap() ^= 0x80;
                    assert!(
                        key.open(&bad).is_err(),
                        "{what}: tampered borg envelope opened"
                    );
                } else {
                    let mut bad = payload(data);
                    bad.push(b'!');
                    assert!(key.assert_id(&id, &bad[2..]).is_err(), "{what}");
                }
            }

            // we seal; borg opens (type byte, MAC, decrypt, decompress, id check).
            let mut items = Vec::new();
            for (d, iv) in &cases {
                let env = key.seal(&payload(d), *iv);
                let id = key.id_hash(d);
                items.push(json!({"id": h(&id), "env": h(&env)}));
                // tampered in the MAC, the IV and the last ciphertext byte: must fail
                let mut spots = vec![env.len() - 1];
                if mode.is_encrypted() {
                    spots.extend([1, 35]);
                }
                for at in spots {
                    let mut bad = env.clone();
                    bad[at] ^= 0x01;
                    items.push(json!({"id": h(&id), "env": h(&bad), "tampered": true}));
                }
            }
            let wrong_type = Key::generate(
                if mode == KeyMode::Repokey {
                    KeyMode::Keyfile
                } else {
                    KeyMode::Repokey
                },
                repo_id(mi as u64),
            );
            let foreign = wrong_type.seal(&payload(b"x"), 0);
            items.push(json!({"id": h(&key.id_hash(b"x")), "env": h(&foreign), "tampered": true}));
            let opened = run_py_json(
                borg,
                "crypto.py",
                &["open"],
                json!({"mode": mode.name(), "material": mat, "items": items})
                    .to_string()
                    .as_bytes(),
            );
            let opened = opened.as_array().unwrap();
            let mut plain = cases.iter();
            for (it, res) in items.iter().zip(opened) {
                let what = format!("{} {mode} {it}", borg.name());
                if it.get("tampered").is_some() {
                    assert!(
                        res.get("error").is_some(),
                        "{what}: borg accepted a tampered envelope"
                    );
                } else {
                    let data = &plain.next().unwrap().0;
                    assert_eq!(
                        res.get("data").map(unhex),
                        Some(data.clone()),
                        "{what}: {res}"
                    );
                }
            }
        }
    }
}

#[test]
fn borg_loads_our_key_blobs_and_keyfiles() {
    let pass = "pässwörd €";
    let env = TestEnv::new();
    for borg in Borg::ALL {
        for (i, mode) in [
            KeyMode::Repokey,
            KeyMode::KeyfileBlake2,
            KeyMode::AuthenticatedBlake2,
        ]
        .into_iter()
        .enumerate()
        {
            let key = Key::generate(mode, repo_id(50 + i as u64));
            let mat = key.material();
            let text = encrypt_key_blob(mat, pass.as_bytes(), PBKDF2_ITERATIONS);
            let req = |p: &str| {
                json!({"mode": mode.name(), "repository_id": h(&mat.repository_id), "text": text, "passphrase": p})
                    .to_string()
            };
            let r = run_py_json(borg, "crypto.py", &["blob_load"], req(pass).as_bytes());
            assert_eq!(r["ok"], json!(true), "{} {mode}: {r}", borg.name());
            assert_eq!(r["material"], material_json(mat), "{} {mode}", borg.name());
            let r = run_py_json(borg, "crypto.py", &["blob_load"], req("wrong").as_bytes());
            assert_eq!(
                r["ok"],
                json!(false),
                "{} {mode}: wrong passphrase accepted",
                borg.name()
            );

            if mode.key_storage() == proxborg::format::crypto::KeyStorage::KeyFile {
                let path = env.path().join(format!("kf-{}-{i}", borg.name()));
                std::fs::write(&path, keyfile_text(&mat.repository_id, &text)).unwrap();
                let r = run_py_json(
                    borg,
                    "crypto.py",
                    &["keyfile_load"],
                    json!({"mode": mode.name(), "repository_id": h(&mat.repository_id),
                           "path": path.to_str().unwrap(), "passphrase": pass})
                    .to_string()
                    .as_bytes(),
                );
                assert_eq!(r["ok"], json!(true), "{} keyfile: {r}", borg.name());
                assert_eq!(r["material"], material_json(mat));
            }
        }
    }
}

/// `key = …` (with TAB-indented continuation lines) and `id = …` from a repository config.
fn config_value(config: &str, name: &str) -> Option<String> {
    let prefix = format!("{name} = ");
    let mut lines = config.lines();
    let first = lines.by_ref().find(|l| l.starts_with(&prefix))?;
    let mut v = first[prefix.len()..].to_string();
    for l in lines.take_while(|l| l.starts_with('\t') || l.starts_with(' ')) {
        v.push('\n');
        v.push_str(l.trim());
    }
    Some(v)
}

#[test]
fn we_load_keys_borg_init_wrote() {
    for borg in Borg::ALL {
        let env = TestEnv::new();
        let pass = "test-passphrase"; // TestEnv's BORG_PASSPHRASE

        // repokey-blake2: the key lives in the repository config
        let repo = env.path().join("rk");
        ok(env
            .borg(borg)
            .args(["init", "-e", "repokey-blake2"])
            .arg(&repo));
        let config = std::fs::read_to_string(repo.join("config")).unwrap();
        let id: [u8; 32] = hex::decode(config_value(&config, "id").unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let text = config_value(&config, "key").expect("repokey config has a key");
        let mat = decrypt_key_blob(&text, pass.as_bytes()).unwrap();
        assert_eq!(mat.repository_id, id);
        assert!(mat.tam_required);
        assert_eq!((mat.enc_hmac_key.len(), mat.id_key.len()), (128, 128));
        let r = run_py_json(
            borg,
            "crypto.py",
            &["blob_load"],
            json!({"mode": "repokey-blake2", "repository_id": h(&id), "text": text, "passphrase": pass})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r["material"], material_json(&mat), "{}", borg.name());
        assert_eq!(
            decrypt_key_blob(&text, b"Test-passphrase").unwrap_err(),
            KeyBlobError::WrongPassphrase
        );

        // keyfile: the key lives in <base>/.config/borg/keys/<name borg derives from the path>
        let repo = env.path().join("kf repo");
        ok(env.borg(borg).args(["init", "-e", "keyfile"]).arg(&repo));
        let config = std::fs::read_to_string(repo.join("config")).unwrap();
        assert!(config_value(&config, "key").is_none_or(|k| k.is_empty()));
        let id: [u8; 32] = hex::decode(config_value(&config, "id").unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let keys = env.path().join("home/.config/borg/keys");
        let names: Vec<String> = std::fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            [keyfile_name(None, repo.to_str().unwrap())],
            "{}",
            borg.name()
        );
        let kf = std::fs::read_to_string(keys.join(&names[0])).unwrap();
        let (kid, blob) = parse_keyfile(&kf).unwrap();
        assert_eq!(kid, id);
        let mat = decrypt_key_blob(&blob, pass.as_bytes()).unwrap();
        assert_eq!(mat.repository_id, id);
        assert_eq!((mat.enc_hmac_key.len(), mat.id_key.len()), (32, 32));
        // what we write for the same material is accepted by parse_keyfile the same way
        let ours = keyfile_text(&id, &encrypt_key_blob(&mat, b"x", 1000));
        assert_eq!(ours.lines().next(), kf.lines().next());
        assert_eq!(
            decrypt_key_blob(&blob, b"").unwrap_err(),
            KeyBlobError::WrongPassphrase
        );
    }
}

/// A small manifest-shaped map with a TAM placeholder, sealed with `key`.
fn our_tam_object(key: &Key, context: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    msgpack::write_map_len(&mut b, 4);
    msgpack::write_raw(&mut b, b"archives");
    msgpack::write_map_len(&mut b, 0);
    msgpack::write_raw(&mut b, b"tam");
    let salt = prng_bytes(7, 64);
    let at = tam::write_placeholder(&mut b, &salt);
    msgpack::write_raw(&mut b, b"timestamp");
    msgpack::write_raw(&mut b, b"2024-01-02T03:04:05.000000");
    msgpack::write_raw(&mut b, b"version");
    msgpack::write_uint(&mut b, 1);
    tam::seal(&mut b, at, key, &salt, context);
    b
}

fn verify_borg_tam(raw: &[u8], key: &Key, context: &[u8]) -> bool {
    let v = msgpack::decode_one(raw).unwrap();
    let t = msgpack::map_get(&v, b"tam").expect("borg wrote a tam");
    let hmac = msgpack::as_bytes(msgpack::map_get(t, b"hmac").unwrap()).unwrap();
    let salt = msgpack::as_bytes(msgpack::map_get(t, b"salt").unwrap()).unwrap();
    tam::verify(raw, hmac, salt, key, context)
}

#[test]
fn tam_both_ways_every_mode() {
    for borg in Borg::ALL {
        for (mi, mode) in KeyMode::ALL.into_iter().enumerate() {
            let key = Key::generate(mode, repo_id(200 + mi as u64));
            let mat = material_json(key.material());
            for context in ["manifest", "archive"] {
                let what = format!("{} {mode} {context}", borg.name());
                let ours = our_tam_object(&key, context.as_bytes());
                let mut tampered = ours.clone();
                let n = tampered.len();
                tampered[n - 20] ^= 1; // inside the timestamp
                for (data, good) in [(&ours, true), (&tampered, false)] {
                    let r = run_py_json(
                        borg,
                        "crypto.py",
                        &["tam_verify"],
                        json!({"mode": mode.name(), "material": mat, "context": context, "data": h(data)})
                            .to_string()
                            .as_bytes(),
                    );
                    if r.get("unsupported").is_some() {
                        // borg 1.2.4 never verifies archive TAMs
                        assert_eq!((borg, context), (Borg::V12, "archive"), "{what}");
                        continue;
                    }
                    if good {
                        assert_eq!(r["verified"], json!(true), "{what}: {r}");
                    } else {
                        assert!(
                            r.get("error").is_some(),
                            "{what}: tampered TAM accepted: {r}"
                        );
                    }
                }

                let r = run_py_json(
                    borg,
                    "crypto.py",
                    &["tam_seal"],
                    json!({"mode": mode.name(), "material": mat, "context": context,
                           "dict": {"version": 1, "timestamp": "2024-01-02T03:04:05.000000", "name": "x"}})
                    .to_string()
                    .as_bytes(),
                );
                let raw = unhex(&r["data"]);
                assert!(
                    verify_borg_tam(&raw, &key, context.as_bytes()),
                    "{what}: borg's TAM"
                );
                let other = if context == "manifest" {
                    "archive"
                } else {
                    "manifest"
                };
                assert!(
                    !verify_borg_tam(&raw, &key, other.as_bytes()),
                    "{what}: wrong context"
                );
                let stranger = Key::generate(
                    if mode == KeyMode::Plaintext {
                        KeyMode::Repokey
                    } else {
                        mode
                    },
                    [0; 32],
                );
                assert!(
                    !verify_borg_tam(&raw, &stranger, context.as_bytes()),
                    "{what}: other key"
                );
            }
        }
    }
}

#[test]
fn keyfile_names_like_borg() {
    let long = format!("/srv/{}", "ä-b".repeat(60));
    let locations = [
        "/srv/ex/repo",
        "/srv/ex/kfrepo/",
        "/tmp/a b/ç-repo",
        "/x/ÆØÅ_ſ²½/ⅻ/日本/e\u{301}",
        "/x/हिन्दी/ॐ",
        "ssh://user@host.example:2222/srv/borg/repo",
        "ssh://backup@[::1]/~/repo",
        "ssh://h-1.x/./rel/repo",
        "user@host:relative/repo",
        "host:/abs/p.repo",
        long.as_str(),
    ];
    for borg in Borg::ALL {
        let r = run_py_json(
            borg,
            "crypto.py",
            &["keyname"],
            json!({"locations": locations}).to_string().as_bytes(),
        );
        for (loc, res) in locations.iter().zip(r.as_array().unwrap()) {
            let ours = keyfile_name(res["host"].as_str(), res["path"].as_str().unwrap());
            assert_eq!(
                ours,
                res["name"].as_str().unwrap(),
                "{} {loc}: {res}",
                borg.name()
            );
        }
    }
}

#[test]
fn passcommand_splits_like_python_shlex() {
    let alphabet = [
        "a", "b", "é", " ", "  ", "\t", "'", "\"", "\\", "$", "#", "\n", "x y", "''", "\"\"",
    ];
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut strings = vec![String::new()];
    for _ in 0..400 {
        let mut t = String::new();
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let n = (s % 9) as usize;
        for k in 0..n {
            t.push_str(alphabet[((s >> (k * 5 + 8)) % alphabet.len() as u64) as usize]);
        }
        strings.push(t);
    }
    let r = run_py_json(
        Borg::V14,
        "crypto.py",
        &["shlex"],
        json!({"strings": strings}).to_string().as_bytes(),
    );
    for (t, res) in strings.iter().zip(r.as_array().unwrap()) {
        match shlex_split(t) {
            Ok(words) => assert_eq!(json!(words), res["words"], "{t:?}: {res}"),
            Err(e) => assert_eq!(json!(e.to_string()), res["error"], "{t:?}: {res}"),
        }
    }
}
