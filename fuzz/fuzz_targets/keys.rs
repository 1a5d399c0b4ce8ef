//! Arbitrary bytes as key material containers and object envelopes: a key blob, a keyfile,
//! and envelopes opened under every key mode. Errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxborg::format::crypto::{Key, KeyMaterial, KeyMode};
use proxborg::format::keyblob;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keyblob::parse_keyfile(text);
        let _ = keyblob::decrypt_key_blob(text, b"passphrase");
    }
    let mut m = KeyMaterial::empty([7u8; 32]);
    m.enc_key = [1u8; 32];
    for mode in KeyMode::ALL {
        if mode.uses_blake2() {
            m.enc_hmac_key = [2u8; 128].to_vec();
            m.id_key = [3u8; 128].to_vec();
        } else {
            m.enc_hmac_key = [2u8; 32].to_vec();
            m.id_key = [3u8; 32].to_vec();
        }
        let key = if mode == KeyMode::Plaintext {
            Key::plaintext([7u8; 32])
        } else {
            Key::from_material(mode, m.clone())
        };
        let _ = key.open(data);
        let _ = Key::envelope_iv(data);
    }
});
