//! TAM: borg's "tertiary authentication for metadata" on the manifest and on archive
//! objects. An HMAC-SHA512 over the final msgpack bytes with the 64 `hmac` bytes zeroed;
//! borg verifies exactly the stored bytes (it never re-serializes), so we sign what we write.

use hmac::{Hmac, Mac};
use sha2::Sha512;

/// The only TAM type borg 1.x knows.
pub const TAM_TYPE: &[u8] = b"HKDF_HMAC_SHA512";
/// TAM context of the manifest.
pub const CONTEXT_MANIFEST: &[u8] = b"manifest";
/// TAM context of archive metadata objects.
pub const CONTEXT_ARCHIVE: &[u8] = b"archive";

/// Something that can derive the TAM key for a salt and context (implemented by keys).
pub trait TamKeySource {
    /// The HMAC-SHA512 key: HKDF-SHA512 of the key material in keyed modes,
    /// `salt ‖ context` in plaintext mode (no secret, as borg does).
    fn tam_key(&self, salt: &[u8], context: &[u8]) -> zeroize::Zeroizing<Vec<u8>>;
}

/// borg's `hkdf_hmac_sha512(ikm, salt, b"borg-metadata-authentication-" + context, 64)`.
pub fn hkdf_tam_key(ikm: &[u8], salt: &[u8], context: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    let mut info = b"borg-metadata-authentication-".to_vec();
    info.extend_from_slice(context);
    let hk = hkdf::Hkdf::<Sha512>::new(Some(salt), ikm);
    let mut out = zeroize::Zeroizing::new(vec![0u8; 64]);
    hk.expand(&info, &mut out)
        .expect("64 bytes is a valid HKDF-SHA512 length");
    out
}

/// HMAC-SHA512 of `data` under `key`.
pub fn hmac_sha512(key: &[u8], data: &[u8]) -> [u8; 64] {
    let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Appends borg's `tam` map value `{hmac: <64 zero bytes>, salt, type}` to `buf`
/// (keys sorted as borg writes them) and returns the offset of the 64 hmac bytes.
pub fn write_placeholder(buf: &mut Vec<u8>, salt: &[u8]) -> usize {
    use super::msgpack::{write_map_len, write_raw};
    write_map_len(buf, 3);
    write_raw(buf, b"hmac");
    write_raw(buf, &[0u8; 64]);
    let hmac_at = buf.len() - 64;
    write_raw(buf, b"salt");
    write_raw(buf, salt);
    write_raw(buf, b"type");
    write_raw(buf, TAM_TYPE);
    hmac_at
}

/// Fills in the hmac at `hmac_at` (written by [`write_placeholder`]) over the whole buffer.
pub fn seal(buf: &mut [u8], hmac_at: usize, key: &dyn TamKeySource, salt: &[u8], context: &[u8]) {
    debug_assert!(buf[hmac_at..hmac_at + 64].iter().all(|&b| b == 0));
    let tk = key.tam_key(salt, context);
    let mac = hmac_sha512(&tk, buf);
    buf[hmac_at..hmac_at + 64].copy_from_slice(&mac);
}

/// Verifies a TAM the way borg does: zero the *first* occurrence of the hmac bytes in the
/// raw object and recompute.
pub fn verify(
    raw: &[u8],
    hmac: &[u8],
    salt: &[u8],
    key: &dyn TamKeySource,
    context: &[u8],
) -> bool {
    if hmac.len() != 64 {
        return false;
    }
    let Some(pos) = raw.windows(64).position(|w| w == hmac) else {
        return false;
    };
    let mut buf = raw.to_vec();
    buf[pos..pos + 64].fill(0);
    let tk = key.tam_key(salt, context);
    let mac = hmac_sha512(&tk, &buf);
    // constant-time compare
    mac.iter().zip(hmac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_vector_from_borg_docs() {
        // ikm = id_key ‖ enc_key ‖ enc_hmac_key as in the format reference (§4.1).
        let mut ikm: Vec<u8> = (64u8..96).collect();
        ikm.extend(0u8..32);
        ikm.extend(32u8..64);
        let k = hkdf_tam_key(&ikm, &[0u8; 64], CONTEXT_MANIFEST);
        assert_eq!(
            hex::encode(&*k),
            "1602cb7a7627e552c882c7c9beae19fa192856f2e62651bdf5a3d4fb8914a528f97da471482439fe354a0a3e339d719cb957e3a37ef77f6f1218feed751e5c17"
        );
    }

    struct Plain;
    impl TamKeySource for Plain {
        fn tam_key(&self, salt: &[u8], context: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
            let mut k = salt.to_vec();
            k.extend_from_slice(context);
            zeroize::Zeroizing::new(k)
        }
    }

    #[test]
    fn seal_then_verify_and_tamper() {
        let mut buf = Vec::new();
        super::super::msgpack::write_map_len(&mut buf, 1);
        super::super::msgpack::write_raw(&mut buf, b"tam");
        let salt = [7u8; 64];
        let at = write_placeholder(&mut buf, &salt);
        seal(&mut buf, at, &Plain, &salt, CONTEXT_ARCHIVE);
        let mac = buf[at..at + 64].to_vec();
        assert!(verify(&buf, &mac, &salt, &Plain, CONTEXT_ARCHIVE));
        assert!(!verify(&buf, &mac, &salt, &Plain, CONTEXT_MANIFEST));
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(!verify(&bad, &mac, &salt, &Plain, CONTEXT_ARCHIVE));
    }
}
