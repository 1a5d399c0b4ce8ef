//! One archive item (`item.pyx: Item`): a msgpack map per file-system object. File types,
//! hardlinks and devices are told apart by field combinations (§7.4), not by a tag.

use std::collections::BTreeMap;

use rmpv::{Value, ValueRef};

use super::field::wrong;
use super::ObjectError;
use crate::format::msgpack::{
    write_array_len, write_bool, write_int, write_map_len, write_nil, write_raw, write_uint,
};

/// A chunk ID (`id_hash` of the chunk plaintext).
pub type ChunkId = [u8; 32];

const OBJ: &str = "item";

/// Every key borg 1.x items may carry, sorted — what borg stores as the manifest's
/// `item_keys` and what `borg check` accepts.
pub const ITEM_KEYS: [&str; 23] = [
    "acl_access",
    "acl_default",
    "acl_extended",
    "acl_nfs4",
    "atime",
    "birthtime",
    "bsdflags",
    "chunks",
    "chunks_healthy",
    "ctime",
    "gid",
    "group",
    "hardlink_master",
    "mode",
    "mtime",
    "part",
    "path",
    "rdev",
    "size",
    "source",
    "uid",
    "user",
    "xattrs",
];

/// One entry of an item's chunk list, packed as the 3-array `[id, size, csize]` that
/// borg 1.x's cache sync and `check` insist on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub id: ChunkId,
    /// Plaintext size.
    pub size: u32,
    /// Size of the stored (compressed, encrypted) object.
    pub csize: u32,
}

impl ChunkRef {
    fn encode(&self, buf: &mut Vec<u8>) {
        write_array_len(buf, 3);
        write_raw(buf, &self.id);
        write_uint(buf, self.size.into());
        write_uint(buf, self.csize.into());
    }

    fn decode(v: &ValueRef<'_>, key: &str) -> Result<ChunkRef, ObjectError> {
        let expected = "chunk list entry [id, size, csize]";
        match v {
            ValueRef::Array(a) if a.len() == 3 => Ok(ChunkRef {
                id: ref_bytes(&a[0])
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| wrong(OBJ, key, expected))?,
                size: ref_uint(&a[1], key, expected)?,
                csize: ref_uint(&a[2], key, expected)?,
            }),
            _ => Err(wrong(OBJ, key, expected)),
        }
    }
}

/// An archive item. Byte strings are raw OS bytes (paths need not be UTF-8); timestamps
/// are nanoseconds since the epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Item {
    /// Relative path, `/`-separated, no leading `/`.
    pub path: Vec<u8>,
    /// Full `st_mode` including the file-type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Owner name; `None` is stored as nil (borg always writes the key).
    pub user: Option<Vec<u8>>,
    /// Group name; `None` is stored as nil (borg always writes the key).
    pub group: Option<Vec<u8>>,
    pub mtime: i64,
    pub ctime: Option<i64>,
    pub atime: Option<i64>,
    pub birthtime: Option<i64>,
    /// Σ chunk sizes, for items with their own chunk list.
    pub size: Option<u64>,
    /// Content chunks; `Some(vec![])` for empty regular files.
    pub chunks: Option<Vec<ChunkRef>>,
    /// `Some(true)` on the first path of a multiply linked inode, `Some(false)` on other
    /// regular files, fifos and devices.
    pub hardlink_master: Option<bool>,
    /// Symlink target, or the master's path for a hardlink slave.
    pub source: Option<Vec<u8>>,
    /// Device number of character and block devices.
    pub rdev: Option<u64>,
    /// Extended attributes; borg stores empty values as nil (`None` here).
    pub xattrs: Option<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    pub acl_access: Option<Vec<u8>>,
    pub acl_default: Option<Vec<u8>>,
    pub acl_extended: Option<Vec<u8>>,
    pub acl_nfs4: Option<Vec<u8>>,
    pub bsdflags: Option<u32>,
    /// Part number of a checkpoint part file.
    pub part: Option<u64>,
    /// Original chunk list of a file `borg check --repair` patched.
    pub chunks_healthy: Option<Vec<ChunkRef>>,
}

const S_IFMT: u32 = 0o170000;

impl Item {
    fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == 0o040000
    }

    pub fn is_reg(&self) -> bool {
        self.file_type() == 0o100000
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == 0o120000
    }

    pub fn is_fifo(&self) -> bool {
        self.file_type() == 0o010000
    }

    pub fn is_chr(&self) -> bool {
        self.file_type() == 0o020000
    }

    pub fn is_blk(&self) -> bool {
        self.file_type() == 0o060000
    }

    /// Types borg 1.x hardlinks (`hardlinkable`): regular files, devices and fifos.
    pub fn is_hardlinkable(&self) -> bool {
        self.is_reg() || self.is_chr() || self.is_blk() || self.is_fifo()
    }

    /// A later path of a multiply linked inode: `source` names the master's path.
    pub fn is_hardlink_slave(&self) -> bool {
        self.is_hardlinkable() && self.source.is_some()
    }

    pub fn is_hardlink_master(&self) -> bool {
        self.hardlink_master == Some(true)
    }

    /// A checkpoint part file (`<path>.borg_part_N`).
    pub fn is_part(&self) -> bool {
        self.part.is_some()
    }

    /// Σ plaintext sizes of the chunk list (0 without one).
    pub fn chunks_size(&self) -> u64 {
        self.chunks
            .iter()
            .flatten()
            .map(|c| u64::from(c.size))
            .sum()
    }

    /// Appends the item exactly as borg's `msgpack.packb(item.as_dict())` would.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let n = 7 // path, mode, uid, gid, user, group, mtime
            + [
                self.acl_access.is_some(),
                self.acl_default.is_some(),
                self.acl_extended.is_some(),
                self.acl_nfs4.is_some(),
                self.atime.is_some(),
                self.birthtime.is_some(),
                self.bsdflags.is_some(),
                self.chunks.is_some(),
                self.chunks_healthy.is_some(),
                self.ctime.is_some(),
                self.hardlink_master.is_some(),
                self.part.is_some(),
                self.rdev.is_some(),
                self.size.is_some(),
                self.source.is_some(),
                self.xattrs.is_some(),
            ]
            .iter()
            .filter(|&&p| p)
            .count();
        write_map_len(buf, n);
        // keys in borg's StableDict order (ITEM_KEYS is sorted)
        let opt_raw = |buf: &mut Vec<u8>, k: &[u8], v: &Option<Vec<u8>>| {
            if let Some(v) = v {
                write_raw(buf, k);
                write_raw(buf, v);
            }
        };
        let opt_ts = |buf: &mut Vec<u8>, k: &[u8], v: Option<i64>| {
            if let Some(v) = v {
                write_raw(buf, k);
                write_timestamp(buf, v);
            }
        };
        let opt_uint = |buf: &mut Vec<u8>, k: &[u8], v: Option<u64>| {
            if let Some(v) = v {
                write_raw(buf, k);
                write_uint(buf, v);
            }
        };
        let opt_chunks = |buf: &mut Vec<u8>, k: &[u8], v: &Option<Vec<ChunkRef>>| {
            if let Some(v) = v {
                write_raw(buf, k);
                write_array_len(buf, v.len());
                for c in v {
                    c.encode(buf);
                }
            }
        };
        let raw_or_nil = |buf: &mut Vec<u8>, v: &Option<Vec<u8>>| match v {
            Some(v) => write_raw(buf, v),
            None => write_nil(buf),
        };
        opt_raw(buf, b"acl_access", &self.acl_access);
        opt_raw(buf, b"acl_default", &self.acl_default);
        opt_raw(buf, b"acl_extended", &self.acl_extended);
        opt_raw(buf, b"acl_nfs4", &self.acl_nfs4);
        opt_ts(buf, b"atime", self.atime);
        opt_ts(buf, b"birthtime", self.birthtime);
        opt_uint(buf, b"bsdflags", self.bsdflags.map(u64::from));
        opt_chunks(buf, b"chunks", &self.chunks);
        opt_chunks(buf, b"chunks_healthy", &self.chunks_healthy);
        opt_ts(buf, b"ctime", self.ctime);
        write_raw(buf, b"gid");
        write_uint(buf, self.gid.into());
        write_raw(buf, b"group");
        raw_or_nil(buf, &self.group);
        if let Some(h) = self.hardlink_master {
            write_raw(buf, b"hardlink_master");
            write_bool(buf, h);
        }
        write_raw(buf, b"mode");
        write_uint(buf, self.mode.into());
        write_raw(buf, b"mtime");
        write_timestamp(buf, self.mtime);
        opt_uint(buf, b"part", self.part);
        write_raw(buf, b"path");
        write_raw(buf, &self.path);
        opt_uint(buf, b"rdev", self.rdev);
        opt_uint(buf, b"size", self.size);
        opt_raw(buf, b"source", &self.source);
        write_raw(buf, b"uid");
        write_uint(buf, self.uid.into());
        write_raw(buf, b"user");
        raw_or_nil(buf, &self.user);
        if let Some(x) = &self.xattrs {
            write_raw(buf, b"xattrs");
            write_map_len(buf, x.len());
            for (k, v) in x {
                write_raw(buf, k);
                raw_or_nil(buf, v);
            }
        }
    }

    /// The packed item as a fresh buffer.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160);
        self.encode(&mut b);
        b
    }

    /// Decodes one item map. `path`, `mode` and `mtime` are required; missing `uid`/`gid`
    /// read as 0. Keys outside [`ITEM_KEYS`] (borg's in-memory `deleted`/`nlink`, attic's
    /// stray `acl`) are dropped: writing them back would make `borg check` complain.
    pub fn decode(v: &Value) -> Result<Item, ObjectError> {
        Self::decode_ref(&v.as_ref())
    }

    /// [`decode`](Self::decode) on a borrowed value (no copies of strings until the item's
    /// own fields), which is what the item-stream decoder uses.
    pub fn decode_ref(v: &ValueRef<'_>) -> Result<Item, ObjectError> {
        let ValueRef::Map(entries) = v else {
            return Err(ObjectError::NotAMap { object: OBJ });
        };
        let mut it = Item::default();
        let (mut have_path, mut have_mode, mut have_mtime) = (false, false, false);
        for (k, v) in entries {
            let Some(key) = ref_bytes(k) else {
                return Err(wrong(OBJ, &format!("{k}"), "byte-string key"));
            };
            let bytes = |v: &ValueRef<'_>| {
                ref_bytes(v)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| wrong(OBJ, &String::from_utf8_lossy(key), "byte string"))
            };
            match key {
                b"path" => {
                    it.path = bytes(v)?;
                    have_path = true;
                }
                b"mode" => {
                    it.mode = ref_uint(v, "mode", "u32")?;
                    have_mode = true;
                }
                b"uid" => it.uid = ref_uint(v, "uid", "u32")?,
                b"gid" => it.gid = ref_uint(v, "gid", "u32")?,
                b"user" => it.user = nil_or(v, bytes)?,
                b"group" => it.group = nil_or(v, bytes)?,
                b"mtime" => {
                    it.mtime = read_timestamp(v, "mtime")?;
                    have_mtime = true;
                }
                b"ctime" => it.ctime = Some(read_timestamp(v, "ctime")?),
                b"atime" => it.atime = Some(read_timestamp(v, "atime")?),
                b"birthtime" => it.birthtime = Some(read_timestamp(v, "birthtime")?),
                b"size" => it.size = Some(ref_uint(v, "size", "u64")?),
                b"chunks" => it.chunks = read_chunks(v, "chunks")?,
                b"chunks_healthy" => it.chunks_healthy = read_chunks(v, "chunks_healthy")?,
                b"hardlink_master" => match v {
                    ValueRef::Boolean(b) => it.hardlink_master = Some(*b),
                    _ => return Err(wrong(OBJ, "hardlink_master", "bool")),
                },
                b"source" => it.source = Some(bytes(v)?),
                b"rdev" => it.rdev = Some(ref_uint(v, "rdev", "u64")?),
                b"xattrs" => it.xattrs = Some(read_xattrs(v)?),
                b"acl_access" => it.acl_access = Some(bytes(v)?),
                b"acl_default" => it.acl_default = Some(bytes(v)?),
                b"acl_extended" => it.acl_extended = Some(bytes(v)?),
                b"acl_nfs4" => it.acl_nfs4 = Some(bytes(v)?),
                b"bsdflags" => it.bsdflags = Some(ref_uint(v, "bsdflags", "u32")?),
                b"part" => it.part = Some(ref_uint(v, "part", "u64")?),
                _ => {}
            }
        }
        for (have, key) in [
            (have_path, "path"),
            (have_mode, "mode"),
            (have_mtime, "mtime"),
        ] {
            if !have {
                return Err(ObjectError::MissingKey { object: OBJ, key });
            }
        }
        Ok(it)
    }
}

/// The bytes of a raw/str or bin value.
fn ref_bytes<'v>(v: &'v ValueRef<'_>) -> Option<&'v [u8]> {
    match v {
        ValueRef::String(s) => Some(s.as_bytes()),
        ValueRef::Binary(b) => Some(b),
        _ => None,
    }
}

fn ref_uint<T: TryFrom<u64>>(
    v: &ValueRef<'_>,
    key: &str,
    expected: &'static str,
) -> Result<T, ObjectError> {
    v.as_u64()
        .and_then(|u| T::try_from(u).ok())
        .ok_or_else(|| wrong(OBJ, key, expected))
}

fn nil_or<'v, 'a, T>(
    v: &'v ValueRef<'a>,
    f: impl FnOnce(&'v ValueRef<'a>) -> Result<T, ObjectError>,
) -> Result<Option<T>, ObjectError> {
    match v {
        ValueRef::Nil => Ok(None),
        v => f(v).map(Some),
    }
}

fn read_chunks(v: &ValueRef<'_>, key: &str) -> Result<Option<Vec<ChunkRef>>, ObjectError> {
    match v {
        // borg's property allows None ("list or None")
        ValueRef::Nil => Ok(None),
        ValueRef::Array(a) => a
            .iter()
            .map(|c| ChunkRef::decode(c, key))
            .collect::<Result<_, _>>()
            .map(Some),
        _ => Err(wrong(OBJ, key, "chunk list")),
    }
}

fn read_xattrs(v: &ValueRef<'_>) -> Result<BTreeMap<Vec<u8>, Option<Vec<u8>>>, ObjectError> {
    let ValueRef::Map(m) = v else {
        return Err(wrong(OBJ, "xattrs", "map"));
    };
    let bytes = |v: &ValueRef<'_>| {
        ref_bytes(v)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| wrong(OBJ, "xattrs", "byte string"))
    };
    m.iter()
        .map(|(k, x)| {
            let k = bytes(k)?;
            let x = nil_or(x, bytes)?;
            Ok((k, x))
        })
        .collect()
}

/// A timestamp as borg packs it (`int_to_bigint`): a plain int when it fits 63 bits,
/// otherwise little-endian signed bytes — which, for an `i64`, happens only for `i64::MIN`.
fn write_timestamp(buf: &mut Vec<u8>, v: i64) {
    if v == i64::MIN {
        let mut b = v.to_le_bytes().to_vec();
        b.push(0xff);
        write_raw(buf, &b);
    } else {
        write_int(buf, v);
    }
}

/// borg's `bigint_to_int`: an int, or little-endian signed bytes (borg 1.0 archives).
fn read_timestamp(v: &ValueRef<'_>, key: &str) -> Result<i64, ObjectError> {
    if let ValueRef::Integer(i) = v {
        return i
            .as_i64()
            .ok_or_else(|| wrong(OBJ, key, "timestamp within 64 bits"));
    }
    let b = ref_bytes(v).ok_or_else(|| wrong(OBJ, key, "int nanoseconds"))?;
    let neg = b.last().is_some_and(|&x| x & 0x80 != 0);
    let fill = if neg { 0xff } else { 0 };
    let mut le = [fill; 8];
    for (i, &x) in b.iter().enumerate() {
        if i < 8 {
            le[i] = x;
        } else if x != fill {
            return Err(wrong(OBJ, key, "timestamp within 64 bits"));
        }
    }
    let out = i64::from_le_bytes(le);
    // bytes beyond the 8th only sign-extend: the sign of the result must agree
    if b.len() > 8 && (out < 0) != neg {
        return Err(wrong(OBJ, key, "timestamp within 64 bits"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::msgpack::decode_one;

    fn file() -> Item {
        Item {
            path: b"src/hello.txt".to_vec(),
            mode: 0o100644,
            user: Some(b"root".to_vec()),
            group: Some(b"root".to_vec()),
            mtime: 1_704_164_645_123_456_789,
            ctime: Some(1_795_415_009_336_887_977),
            size: Some(12),
            chunks: Some(vec![ChunkRef {
                id: [0xa9; 32],
                size: 12,
                csize: 15,
            }]),
            hardlink_master: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn keys_are_sorted() {
        let mut k = ITEM_KEYS;
        k.sort_unstable();
        assert_eq!(k, ITEM_KEYS);
    }

    #[test]
    fn directory_bytes_match_borg_example() {
        // §11.3: the first item of a borg 1.4.5 stream
        let d = Item {
            path: b"src".to_vec(),
            mode: 16877,
            user: Some(b"root".to_vec()),
            group: Some(b"root".to_vec()),
            mtime: 1_704_164_645_123_456_789,
            ctime: Some(1_795_415_009_336_887_977),
            ..Default::default()
        };
        let b = d.to_msgpack();
        let want = "88a56374696d65cf18ea98703fee0aa9a3676964\
                    00a567726f7570a4726f6f74a46d6f6465cd41eda56d74696d65cf17a668b7375cff15a470617468a3737263";
        assert!(hex::encode(&b).starts_with(want), "{}", hex::encode(&b));
    }

    #[test]
    fn round_trip() {
        let mut f = file();
        f.xattrs = Some(BTreeMap::from([
            (b"user.empty".to_vec(), None),
            (b"user.k".to_vec(), Some(b"val".to_vec())),
        ]));
        f.mtime = i64::MIN;
        f.atime = Some(-1);
        let b = f.to_msgpack();
        assert_eq!(Item::decode(&decode_one(&b).unwrap()).unwrap(), f);
    }

    #[test]
    fn bigint_timestamps() {
        let mut b = Vec::new();
        write_timestamp(&mut b, i64::MIN);
        assert_eq!(hex::encode(&b), "a90000000000000080ff");
        let v = decode_one(&b).unwrap();
        assert_eq!(read_timestamp(&v.as_ref(), "t").unwrap(), i64::MIN);
        for (bytes, want) in [
            (&[][..], Some(0)),
            (&[0xff][..], Some(-1)),
            (&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], Some(1)),
        ] {
            assert_eq!(read_timestamp(&raw_value_ref(bytes), "t").ok(), want);
        }
        assert!(read_timestamp(&raw_value_ref(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), "t").is_err());
        assert!(read_timestamp(&raw_value_ref(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), "t").is_err());
        assert!(read_timestamp(&Value::from(u64::MAX).as_ref(), "t").is_err());
    }

    fn raw_value_ref(b: &[u8]) -> ValueRef<'_> {
        ValueRef::Binary(b)
    }

    #[test]
    fn errors_name_the_key() {
        let mut b = Vec::new();
        write_map_len(&mut b, 2);
        write_raw(&mut b, b"path");
        write_uint(&mut b, 5);
        write_raw(&mut b, b"mtime");
        write_uint(&mut b, 5);
        let e = Item::decode(&decode_one(&b).unwrap()).unwrap_err();
        assert!(e.to_string().contains("\"path\""), "{e}");
        let e = Item::decode(&Value::from(3)).unwrap_err();
        assert!(matches!(e, ObjectError::NotAMap { .. }));
    }

    #[test]
    fn chunk_entries_must_have_three_fields() {
        let v = Value::Array(vec![Value::Binary(vec![0; 32]), Value::from(1)]);
        assert!(ChunkRef::decode(&v.as_ref(), "chunks").is_err());
        let v = Value::Array(vec![
            Value::Binary(vec![0; 31]),
            Value::from(1),
            Value::from(1),
        ]);
        assert!(ChunkRef::decode(&v.as_ref(), "chunks").is_err());
    }

    #[test]
    fn predicates() {
        let mut slave = file();
        slave.chunks = None;
        slave.size = None;
        slave.hardlink_master = None;
        slave.source = Some(b"src/a".to_vec());
        assert!(slave.is_hardlink_slave() && slave.is_reg());
        let link = Item {
            mode: 0o120777,
            source: Some(b"t".to_vec()),
            ..Default::default()
        };
        assert!(link.is_symlink() && !link.is_hardlink_slave());
        assert_eq!(file().chunks_size(), 12);
    }
}
