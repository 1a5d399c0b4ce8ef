//! borg's keyfile container (`KeyfileKey.save/load/sanity_check`) and the name borg gives
//! a new keyfile (`Location.to_key_filename`).

use std::sync::OnceLock;

use super::{decode_base64, KeyBlobError, MIN_BLOB_LEN};

const FILE_ID: &str = "BORG_KEY ";

/// A keyfile's text: `BORG_KEY <repo id hex>`, the blob lines, a final newline.
pub fn keyfile_text(repository_id: &[u8; 32], blob: &str) -> String {
    format!(
        "{FILE_ID}{}\n{}\n",
        hex::encode(repository_id),
        blob.trim_end_matches('\n')
    )
}

/// Splits a keyfile into its repository id and blob text, with the checks borg 1.4 applies
/// before it considers a file a key (`sanity_check`): the `BORG_KEY <64 lowercase hex>`
/// header, at least two lines, a first line no longer than that header, base64 after it
/// decoding to at least 20 bytes.
pub fn parse_keyfile(text: &str) -> Result<([u8; 32], String), KeyBlobError> {
    let bad = |why: &str| KeyBlobError::NotAKeyFile(why.to_string());
    let rest = text
        .strip_prefix(FILE_ID)
        .ok_or_else(|| bad("does not start with \"BORG_KEY \""))?;
    let id_hex = rest
        .get(..64)
        .ok_or_else(|| bad("repository id is cut short"))?;
    // borg compares the id bytes with its own lowercase hex, so only that form matches.
    if !id_hex
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(bad("repository id is not 64 lowercase hex digits"));
    }
    let mut id = [0u8; 32];
    hex::decode_to_slice(id_hex, &mut id).map_err(|_| bad("repository id is not hex"))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    if lines.len() < 2 {
        return Err(bad("expected two or more lines"));
    }
    if lines[0].trim_end().len() > FILE_ID.len() + 64 {
        return Err(bad("first line is too long"));
    }
    let body: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let blob = body.join("\n");
    let raw = decode_base64(&blob)?;
    if raw.len() < MIN_BLOB_LEN {
        return Err(KeyBlobError::TooShort(raw.len()));
    }
    Ok((id, blob))
}

/// The base name borg gives a new keyfile: the repository path with every character that
/// is not a (Unicode) word character replaced by `_` and outer `_` stripped; for remote
/// repositories prefixed by the host (brackets of IPv6 literals removed) and `__`; at
/// most 100 characters.
pub fn keyfile_name(host: Option<&str>, path: &str) -> String {
    static NON_WORD: OnceLock<regex::Regex> = OnceLock::new();
    // Python's `\w` on str: letters, numbers and '_' (`str.isalnum()` or underscore).
    let re = NON_WORD.get_or_init(|| regex::Regex::new(r"[^\p{L}\p{N}_]").expect("static regex"));
    let mut name = re.replace_all(path, "_").trim_matches('_').to_string();
    if let Some(host) = host {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        name = format!("{}__{}", re.replace_all(host, "_"), name);
    }
    match name.char_indices().nth(100) {
        Some((cut, _)) => name[..cut].to_string(),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::{Key, KeyMode};
    use crate::format::keyblob::{decrypt_key_blob, encrypt_key_blob};

    #[test]
    fn keyfile_round_trip() {
        let key = Key::generate(KeyMode::Keyfile, [0xc3; 32]);
        let blob = encrypt_key_blob(key.material(), b"pw", 5);
        let text = keyfile_text(&[0xc3; 32], &blob);
        assert!(text.starts_with(&format!("BORG_KEY {}\n", "c3".repeat(32))));
        assert!(text.ends_with('\n') && !text.ends_with("\n\n"));
        let (id, b) = parse_keyfile(&text).unwrap();
        assert_eq!(id, [0xc3; 32]);
        assert_eq!(b, blob);
        assert_eq!(
            decrypt_key_blob(&b, b"pw").unwrap().id_key,
            key.material().id_key
        );
        // CRLF line ends are tolerated
        assert_eq!(parse_keyfile(&text.replace('\n', "\r\n")).unwrap().1, blob);
    }

    #[test]
    fn sanity_checks() {
        let id = "ab".repeat(32);
        let good_body = "A".repeat(40);
        for (text, why) in [
            ("", "empty"),
            ("BORG_KEY", "short header"),
            (&*format!("BORG_KEY {}", &id[..10]), "short id"),
            (&*format!("BORG_KEY {}\n", id.to_uppercase()), "uppercase"),
            (&*format!("BORG_KEY {id}"), "one line"),
            (
                &*format!("BORG_KEY {id}x\n{good_body}\n"),
                "long first line",
            ),
            (&*format!("BORG_KEY {id}\nAAAA\n"), "short body"),
            (&*format!("XORG_KEY {id}\n{good_body}\n"), "magic"),
            (
                &*format!("BORG_KEY {}é\n{good_body}\n", &id[..63]),
                "non-ascii id",
            ),
        ] {
            assert!(parse_keyfile(text).is_err(), "{why}");
        }
        assert!(parse_keyfile(&format!("BORG_KEY {id}\n{good_body}\n")).is_ok());
    }

    #[test]
    fn names_like_borg() {
        assert_eq!(keyfile_name(None, "/srv/ex/repo"), "srv_ex_repo");
        assert_eq!(keyfile_name(None, "/srv/ex/kfrepo/"), "srv_ex_kfrepo");
        assert_eq!(keyfile_name(Some("my-host"), "/srv/r"), "my_host__srv_r");
        assert_eq!(keyfile_name(Some("[::1]"), "/~/r"), "__1__r");
        assert_eq!(keyfile_name(None, "/data/bäckup-ü"), "data_bäckup_ü");
        let long = format!("/{}", "é".repeat(150));
        assert_eq!(keyfile_name(None, &long).chars().count(), 100);
    }
}
