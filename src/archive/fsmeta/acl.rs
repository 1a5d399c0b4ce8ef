//! POSIX ACLs in the two forms borg deals with: the kernel's `system.posix_acl_*` xattr
//! value and borg's item text.
//!
//! borg (platform/linux.pyx) stores `acl_to_text()` output post-processed by
//! `acl_append_numeric_ids` (or `acl_numeric_ids` with `--numeric-ids`). Reproduced here
//! byte for byte, including two libacl/borg quirks:
//! * names are looked up with `getpwuid`/`getgrgid` (falling back to the number), quoted by
//!   libacl (`:`, `,`, space, tab, CR, LF as `\ooo`, `\` doubled), then looked up *again*
//!   by name with `getpwnam`/`getgrnam` to get the id borg appends (the name itself when
//!   that fails);
//! * `acl_to_text` adds `\t#effective:perm` where the mask restricts an entry; borg's
//!   comment removal (`' *#.*'`) leaves the tab, so such entries keep a trailing tab in
//!   the permission field (`user:nobody:rwx\t:65534`, `group::rwx\t`).

use super::IdResolver;

/// The xattr holding the access ACL.
pub const XATTR_ACCESS: &[u8] = b"system.posix_acl_access";
/// The xattr holding a directory's default ACL.
pub const XATTR_DEFAULT: &[u8] = b"system.posix_acl_default";

const ACL_EA_VERSION: u32 = 2;
const HEADER_LEN: usize = 4;
const ENTRY_LEN: usize = 8;
/// Size of a three-entry ACL; libacl's `acl_extended_*` compares xattr sizes with this.
pub const MINIMAL_XATTR_LEN: usize = HEADER_LEN + 3 * ENTRY_LEN;
const UNDEFINED_ID: u32 = u32::MAX;

const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;

/// Malformed ACL data (xattr value or item text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("ACL xattr value has bad length {0}")]
    BadLength(usize),
    #[error("ACL xattr value has unsupported version {0}")]
    BadVersion(u32),
    #[error("ACL entry has unknown tag {0:#x}")]
    BadTag(u16),
    #[error("ACL text entry {0:?} is malformed")]
    BadEntry(String),
    #[error("ACL text names unknown user or group {0:?}")]
    UnknownName(String),
    #[error("ACL is not valid: {0}")]
    Invalid(&'static str),
}

/// One ACL entry: tag, permission bits (r=4, w=2, x=1), and id for named entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclEntry {
    pub tag: u16,
    pub id: u32,
    pub perm: u16,
}

/// Decodes a `system.posix_acl_*` value into entries in libacl's order (by tag, then id).
pub fn parse_xattr(value: &[u8]) -> Result<Vec<AclEntry>, AclError> {
    if value.len() < HEADER_LEN || (value.len() - HEADER_LEN) % ENTRY_LEN != 0 {
        return Err(AclError::BadLength(value.len()));
    }
    let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
    if version != ACL_EA_VERSION {
        return Err(AclError::BadVersion(version));
    }
    let mut entries = Vec::with_capacity((value.len() - HEADER_LEN) / ENTRY_LEN);
    for e in value[HEADER_LEN..].chunks_exact(ENTRY_LEN) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = match tag {
            TAG_USER | TAG_GROUP => u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            TAG_USER_OBJ | TAG_GROUP_OBJ | TAG_MASK | TAG_OTHER => UNDEFINED_ID,
            _ => return Err(AclError::BadTag(tag)),
        };
        entries.push(AclEntry { tag, id, perm });
    }
    entries.sort_by_key(|e| (e.tag, e.id));
    Ok(entries)
}

/// Encodes entries (sorted by tag and id, as the kernel keeps them) as an xattr value.
pub fn to_xattr(entries: &[AclEntry]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| (e.tag, e.id));
    let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * sorted.len());
    out.extend_from_slice(&ACL_EA_VERSION.to_le_bytes());
    for e in sorted {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

/// The ACL libacl synthesises from the permission bits when no access ACL xattr exists.
pub fn from_mode(mode: u32) -> Vec<AclEntry> {
    let p = |shift: u32| ((mode >> shift) & 7) as u16;
    vec![
        AclEntry {
            tag: TAG_USER_OBJ,
            id: UNDEFINED_ID,
            perm: p(6),
        },
        AclEntry {
            tag: TAG_GROUP_OBJ,
            id: UNDEFINED_ID,
            perm: p(3),
        },
        AclEntry {
            tag: TAG_OTHER,
            id: UNDEFINED_ID,
            perm: p(0),
        },
    ]
}

fn perm_str(perm: u16) -> [u8; 3] {
    [
        if perm & 4 != 0 { b'r' } else { b'-' },
        if perm & 2 != 0 { b'w' } else { b'-' },
        if perm & 1 != 0 { b'x' } else { b'-' },
    ]
}

/// libacl's `__acl_quote(name, ":, \t\n\r")`.
fn quote(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for &b in name {
        if b":, \t\n\r".contains(&b) {
            out.extend_from_slice(&[
                b'\\',
                b'0' + (b >> 6),
                b'0' + ((b >> 3) & 7),
                b'0' + (b & 7),
            ]);
        } else if b == b'\\' {
            out.extend_from_slice(b"\\\\");
        } else {
            out.push(b);
        }
    }
    out
}

/// Renders entries as borg's item text (`acl_get` → `acl_to_text` → converter).
pub fn to_borg_text(entries: &[AclEntry], numeric_ids: bool, ids: &dyn IdResolver) -> Vec<u8> {
    let mask = entries.iter().find(|e| e.tag == TAG_MASK).map(|e| e.perm);
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(entries.len());
    for e in entries {
        let (kind, masked): (&[u8], bool) = match e.tag {
            TAG_USER_OBJ => (b"user", false),
            TAG_USER => (b"user", true),
            TAG_GROUP_OBJ | TAG_GROUP => (b"group", true),
            TAG_MASK => (b"mask", false),
            _ => (b"other", false),
        };
        let mut perm = perm_str(e.perm).to_vec();
        if masked {
            if let Some(m) = mask {
                if e.perm & m != e.perm {
                    // What remains of "\t#effective:..." after borg strips the comment.
                    perm.push(b'\t');
                }
            }
        }
        let mut line = kind.to_vec();
        line.push(b':');
        if e.tag == TAG_USER || e.tag == TAG_GROUP {
            let user = e.tag == TAG_USER;
            let looked_up = if user {
                ids.user_name(e.id)
            } else {
                ids.group_name(e.id)
            };
            let name = match looked_up {
                Some(n) => quote(&n),
                None => e.id.to_string().into_bytes(),
            };
            let back = if user {
                ids.user_id(&name)
            } else {
                ids.group_id(&name)
            };
            let id_text = match back {
                Some(id) => id.to_string().into_bytes(),
                None => name.clone(),
            };
            line.extend_from_slice(if numeric_ids { &id_text } else { &name });
            line.push(b':');
            line.extend_from_slice(&perm);
            line.push(b':');
            line.extend_from_slice(&id_text);
        } else {
            line.push(b':');
            line.extend_from_slice(&perm);
        }
        lines.push(line);
    }
    lines.join(&b'\n')
}

/// libacl's `__acl_unquote`: `\ooo` octal escapes and `\\`.
fn unquote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            if s.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            let oct = s.get(i + 1..i + 4).filter(|d| {
                (b'0'..=b'3').contains(&d[0]) && d[1..].iter().all(|c| (b'0'..=b'7').contains(c))
            });
            if let Some(d) = oct {
                out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn parse_uint(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Turns borg item text back into the xattr value to store, as borg's `acl_set` would:
/// with `numeric_ids` the stored ids are used; otherwise names are mapped to local ids
/// (falling back to the stored id). `Ok(None)` for empty text (borg sets nothing).
pub fn borg_text_to_xattr(
    text: &[u8],
    numeric_ids: bool,
    ids: &dyn IdResolver,
) -> Result<Option<Vec<u8>>, AclError> {
    let mut entries: Vec<AclEntry> = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        // acl_from_text ignores comments and surrounding whitespace.
        let line = match line.iter().position(|&b| b == b'#') {
            Some(p) => &line[..p],
            None => line,
        };
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let bad = || AclError::BadEntry(String::from_utf8_lossy(line).into_owned());
        let fields: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        if fields.len() < 3 || fields.len() > 4 {
            return Err(bad());
        }
        let (kind, name, perm) = (fields[0], fields[1], fields[2].trim_ascii());
        let stored_id = fields.get(3).map(|f| f.trim_ascii());
        let tag = match (kind, name.is_empty()) {
            (b"user" | b"u", true) => TAG_USER_OBJ,
            (b"user" | b"u", false) => TAG_USER,
            (b"group" | b"g", true) => TAG_GROUP_OBJ,
            (b"group" | b"g", false) => TAG_GROUP,
            (b"mask" | b"m", true) => TAG_MASK,
            (b"other" | b"o", true) => TAG_OTHER,
            _ => return Err(bad()),
        };
        let id = if tag == TAG_USER || tag == TAG_GROUP {
            let user = tag == TAG_USER;
            // Which qualifier acl_from_text gets to see (borg's converters).
            let qualifier: Vec<u8> = match (numeric_ids, stored_id) {
                (true, Some(sid)) => sid.to_vec(),
                (true, None) => name.to_vec(),
                (false, Some(sid)) => {
                    let local = if user {
                        ids.user_id(name)
                    } else {
                        ids.group_id(name)
                    };
                    match local {
                        Some(id) => id.to_string().into_bytes(),
                        None => sid.to_vec(),
                    }
                }
                (false, None) => return Err(bad()),
            };
            let q = unquote(&qualifier);
            match parse_uint(&q) {
                Some(id) => id,
                None => {
                    let found = if user {
                        ids.user_id(&q)
                    } else {
                        ids.group_id(&q)
                    };
                    found.ok_or_else(|| {
                        AclError::UnknownName(String::from_utf8_lossy(&q).into_owned())
                    })?
                }
            }
        } else {
            UNDEFINED_ID
        };
        let mut bits = 0u16;
        for &c in perm {
            bits |= match c {
                b'r' => 4,
                b'w' => 2,
                b'x' => 1,
                b'-' => 0,
                _ => return Err(bad()),
            };
        }
        entries.push(AclEntry {
            tag,
            id,
            perm: bits,
        });
    }
    if entries.is_empty() {
        return Ok(None);
    }
    validate(&mut entries)?;
    Ok(Some(to_xattr(&entries)))
}

/// libacl's `acl_valid`: one owner, owning group and other entry; no duplicate qualifiers;
/// a mask whenever named entries exist.
fn validate(entries: &mut [AclEntry]) -> Result<(), AclError> {
    entries.sort_by_key(|e| (e.tag, e.id));
    let count = |t| entries.iter().filter(|e| e.tag == t).count();
    if count(TAG_USER_OBJ) != 1 || count(TAG_GROUP_OBJ) != 1 || count(TAG_OTHER) != 1 {
        return Err(AclError::Invalid(
            "needs exactly one user::, group:: and other:: entry",
        ));
    }
    if count(TAG_MASK) > 1 {
        return Err(AclError::Invalid("more than one mask entry"));
    }
    if entries
        .windows(2)
        .any(|w| w[0].tag == w[1].tag && w[0].id == w[1].id)
    {
        return Err(AclError::Invalid("duplicate entry"));
    }
    if (count(TAG_USER) > 0 || count(TAG_GROUP) > 0) && count(TAG_MASK) == 0 {
        return Err(AclError::Invalid("named entries need a mask entry"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        users: HashMap<u32, Vec<u8>>,
        groups: HashMap<u32, Vec<u8>>,
    }

    impl IdResolver for Fake {
        fn user_name(&self, uid: u32) -> Option<Vec<u8>> {
            self.users.get(&uid).cloned()
        }
        fn group_name(&self, gid: u32) -> Option<Vec<u8>> {
            self.groups.get(&gid).cloned()
        }
        fn user_id(&self, name: &[u8]) -> Option<u32> {
            self.users
                .iter()
                .find(|(_, n)| n.as_slice() == name)
                .map(|(i, _)| *i)
        }
        fn group_id(&self, name: &[u8]) -> Option<u32> {
            self.groups
                .iter()
                .find(|(_, n)| n.as_slice() == name)
                .map(|(i, _)| *i)
        }
    }

    fn fake() -> Fake {
        Fake {
            users: [
                (0, b"root".to_vec()),
                (1001, b"we ird".to_vec()),
                (65534, b"nobody".to_vec()),
            ]
            .into(),
            groups: [(0, b"root".to_vec()), (65534, b"nogroup".to_vec())].into(),
        }
    }

    fn e(tag: u16, id: u32, perm: u16) -> AclEntry {
        AclEntry { tag, id, perm }
    }

    #[test]
    fn text_like_borg() {
        let acl = vec![
            e(TAG_USER_OBJ, UNDEFINED_ID, 6),
            e(TAG_USER, 65534, 7),
            e(TAG_USER, 1001, 6),
            e(TAG_USER, 4242, 4),
            e(TAG_GROUP_OBJ, UNDEFINED_ID, 5),
            e(TAG_GROUP, 65534, 4),
            e(TAG_MASK, UNDEFINED_ID, 4),
            e(TAG_OTHER, UNDEFINED_ID, 0),
        ];
        let bytes = to_xattr(&acl);
        let parsed = parse_xattr(&bytes).unwrap();
        let t = to_borg_text(&parsed, false, &fake());
        assert_eq!(
            String::from_utf8(t.clone()).unwrap(),
            "user::rw-\nuser:we\\040ird:rw-\t:we\\040ird\nuser:4242:r--:4242\n\
             user:nobody:rwx\t:65534\ngroup::r-x\t\ngroup:nogroup:r--:65534\nmask::r--\nother::---"
        );
        let n = to_borg_text(&parsed, true, &fake());
        assert_eq!(
            String::from_utf8(n.clone()).unwrap(),
            "user::rw-\nuser:we\\040ird:rw-\t:we\\040ird\nuser:4242:r--:4242\n\
             user:65534:rwx\t:65534\ngroup::r-x\t\ngroup:65534:r--:65534\nmask::r--\nother::---"
        );
        // Back to the xattr: the quoted name resolves to its id via unquoting.
        assert_eq!(
            borg_text_to_xattr(&t, false, &fake()).unwrap().unwrap(),
            bytes
        );
        assert_eq!(
            borg_text_to_xattr(
                b"user::rw-\nuser:nobody:rwx\t:65534\ngroup::r--\nmask::rwx\nother::---",
                true,
                &fake()
            )
            .unwrap()
            .unwrap(),
            to_xattr(&[
                e(TAG_USER_OBJ, UNDEFINED_ID, 6),
                e(TAG_USER, 65534, 7),
                e(TAG_GROUP_OBJ, UNDEFINED_ID, 4),
                e(TAG_MASK, UNDEFINED_ID, 7),
                e(TAG_OTHER, UNDEFINED_ID, 0)
            ])
        );
    }

    #[test]
    fn stored_id_used_when_name_unknown_locally() {
        let x = borg_text_to_xattr(
            b"user::rw-\nuser:alice:r--:1234\ngroup::r--\nmask::r--\nother::r--",
            false,
            &fake(),
        )
        .unwrap()
        .unwrap();
        assert!(parse_xattr(&x).unwrap().contains(&e(TAG_USER, 1234, 4)));
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse_xattr(b"\x02\0\0\0\x01").is_err());
        assert!(parse_xattr(b"\x01\0\0\0").is_err());
        assert!(parse_xattr(b"\x02\0\0\0\x40\0\x07\0\0\0\0\0").is_err());
        let f = fake();
        assert!(borg_text_to_xattr(b"user::rwz\ngroup::r--\nother::r--", true, &f).is_err());
        assert!(borg_text_to_xattr(b"user::rw-\nother::r--", true, &f).is_err());
        assert!(
            borg_text_to_xattr(b"user::rw-\nuser:5:r--:5\ngroup::r--\nother::r--", true, &f)
                .is_err()
        );
        assert_eq!(borg_text_to_xattr(b"", true, &f).unwrap(), None);
    }

    #[test]
    fn empty_acl_text_is_empty() {
        assert_eq!(
            to_borg_text(&parse_xattr(b"\x02\0\0\0").unwrap(), false, &fake()),
            b""
        );
        assert_eq!(
            to_borg_text(&from_mode(0o40751), false, &fake()),
            b"user::rwx\ngroup::r-x\nother::--x"
        );
    }
}
