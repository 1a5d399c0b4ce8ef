//! `export-tar`: an archive as a tar stream that GNU tar extracts.
//!
//! Three formats, as borg's `--tar-format`:
//! - `PAX` (default): POSIX.1-2001 with GNU tar's `SCHILY.*` records, so that
//!   `tar --acls --xattrs -xpf` restores POSIX ACLs (`SCHILY.acl.access` /
//!   `SCHILY.acl.default`, in the newline-separated text `acl_to_text` gives) and xattrs
//!   (`SCHILY.xattr.<name>`, e.g. `security.capability`) — what `pct restore` needs and
//!   what borg 1.x's GNU-format export drops. ns mtimes, long names, big ids and sizes go
//!   into pax records too.
//! - `GNU`: borg 1.x's output (GNU long-name entries, no ACLs or xattrs).
//! - `BORG`: `PAX` plus `BORG.item.version` / `BORG.item.meta` (the whole item, msgpack,
//!   base64) as borg 2 writes them.
//!
//! ACL qualifiers are written as numeric ids by default: restoring hosts (and the user
//! namespace `pct restore` runs tar in) need the archived ids, not whatever the names
//! mean locally. `acl_names` writes names where the archive has them, like GNU tar does.

use std::io::Write;

use base64::Engine;

use crate::archive::read::{
    for_each_chunk, for_each_selected, strip_components, ArchiveRef, HardlinkMaster, ReadError,
    Selector,
};
use crate::format::objects::Item;
use crate::session::Session;

const BLOCK: usize = 512;
/// tar pads the stream to whole records of 20 blocks (GNU tar's and Python's default).
const RECORD: u64 = 20 * BLOCK as u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TarFormat {
    Gnu,
    #[default]
    Pax,
    Borg,
}

impl TarFormat {
    pub fn parse(s: &str) -> Option<TarFormat> {
        match s.to_ascii_uppercase().as_str() {
            "GNU" => Some(TarFormat::Gnu),
            "PAX" => Some(TarFormat::Pax),
            "BORG" => Some(TarFormat::Borg),
            _ => None,
        }
    }

    fn is_pax(self) -> bool {
        self != TarFormat::Gnu
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TarOptions {
    pub format: TarFormat,
    /// Write ACL qualifiers as names (where archived) instead of numeric ids.
    pub acl_names: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing the tar stream: {0}")]
    Write(#[from] std::io::Error),
}

/// Progress and problems, reported while exporting.
pub enum TarEvent<'a> {
    Item(&'a [u8]),
    Warning(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarSummary {
    pub entries: u64,
    /// Bytes of the tar stream written.
    pub bytes: u64,
    pub warnings: u64,
}

/// Entry type flags.
mod kind {
    pub const REG: u8 = b'0';
    pub const LNK: u8 = b'1';
    pub const SYM: u8 = b'2';
    pub const CHR: u8 = b'3';
    pub const BLK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const PAX: u8 = b'x';
    pub const GNU_LONGNAME: u8 = b'L';
    pub const GNU_LONGLINK: u8 = b'K';
}

/// One tar member's header fields.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub size: u64,
    pub mtime_ns: i64,
    pub linkname: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
}

/// A pax record `"<len> <key>=<value>\n"`, where `len` counts the whole record.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let digits = |n: usize| n.to_string().len();
    let mut n = base + 1;
    while base + digits(n) != n {
        n = base + digits(n);
    }
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    debug_assert_eq!(out.len(), n);
    out
}

/// Seconds with nanoseconds as pax writes times (`-1.5` s is `-1.500000000`).
pub fn pax_time(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let a = ns.unsigned_abs();
    let (s, f) = (a / 1_000_000_000, a % 1_000_000_000);
    if f == 0 {
        format!("{sign}{s}")
    } else {
        format!("{sign}{s}.{f:09}")
    }
}

/// Writes `v` as NUL-terminated octal into `field`; `false` if it does not fit.
fn octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

/// GNU base-256 number (two's complement, high bit of the first byte set).
fn base256(field: &mut [u8], v: i64) {
    let bytes = v.to_be_bytes();
    let n = field.len();
    let fill = if v < 0 { 0xff } else { 0 };
    for (i, b) in field.iter_mut().enumerate() {
        let from_end = n - 1 - i;
        *b = if from_end < 8 {
            bytes[7 - from_end]
        } else {
            fill
        };
    }
    field[0] |= 0x80;
}

/// A number field: octal, else (GNU) base-256; for pax the caller adds a record.
fn number(field: &mut [u8], v: i64, gnu: bool) -> bool {
    if v >= 0 && octal(field, v as u64) {
        return true;
    }
    if gnu {
        base256(field, v);
        return true;
    }
    octal(field, 0);
    false
}

fn dev_major(d: u64) -> u64 {
    ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff)
}

fn dev_minor(d: u64) -> u64 {
    (d & 0xff) | ((d >> 12) & !0xff)
}

/// Builds one 512-byte header. Fields that do not fit are truncated (pax) or
/// base-256 encoded (GNU); `overflow` lists the pax records the caller must add.
fn header(e: &Entry, gnu: bool, overflow: &mut Vec<(&'static str, Vec<u8>)>) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = e.name.len().min(100);
    h[..n].copy_from_slice(&e.name[..n]);
    octal(&mut h[100..108], u64::from(e.mode & 0o7777));
    if !number(&mut h[108..116], e.uid as i64, gnu) {
        overflow.push(("uid", e.uid.to_string().into_bytes()));
    }
    if !number(&mut h[116..124], e.gid as i64, gnu) {
        overflow.push(("gid", e.gid.to_string().into_bytes()));
    }
    if !number(&mut h[124..136], e.size as i64, gnu) {
        overflow.push(("size", e.size.to_string().into_bytes()));
    }
    // GNU: borg 1.x's `int(item.mtime / 1e9)` (a float, so .999999999 may round up);
    // pax: exact floor, the record carries the nanoseconds
    let secs = if gnu {
        (e.mtime_ns as f64 / 1e9) as i64
    } else {
        e.mtime_ns.div_euclid(1_000_000_000)
    };
    if !number(&mut h[136..148], secs, gnu) {
        overflow.push(("mtime", pax_time(e.mtime_ns).into_bytes()));
    }
    h[156] = e.kind;
    let n = e.linkname.len().min(100);
    h[157..157 + n].copy_from_slice(&e.linkname[..n]);
    if gnu {
        h[257..265].copy_from_slice(b"ustar  \0");
    } else {
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
    }
    let n = e.uname.len().min(32);
    h[265..265 + n].copy_from_slice(&e.uname[..n]);
    let n = e.gname.len().min(32);
    h[297..297 + n].copy_from_slice(&e.gname[..n]);
    // device numbers only for devices (empty otherwise, as Python's tarfile writes them)
    if matches!(e.kind, kind::CHR | kind::BLK) {
        if !number(&mut h[329..337], e.devmajor as i64, gnu) {
            overflow.push(("SCHILY.devmajor", e.devmajor.to_string().into_bytes()));
        }
        if !number(&mut h[337..345], e.devminor as i64, gnu) {
            overflow.push(("SCHILY.devminor", e.devminor.to_string().into_bytes()));
        }
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Writes tar members to a stream, counting bytes.
pub struct TarWriter<W: Write> {
    out: W,
    format: TarFormat,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W, format: TarFormat) -> Self {
        TarWriter {
            out,
            format,
            written: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let rem = (self.written % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// A special member (pax header, GNU long name) carrying `data`.
    fn meta_member(
        &mut self,
        name: &[u8],
        kind: u8,
        data: &[u8],
        mtime_ns: i64,
    ) -> std::io::Result<()> {
        let e = Entry {
            name: name.to_vec(),
            kind,
            mode: if kind == self::kind::PAX { 0o644 } else { 0 },
            size: data.len() as u64,
            mtime_ns: if kind == self::kind::PAX {
                mtime_ns.max(0)
            } else {
                0
            },
            ..Default::default()
        };
        let mut ignored = Vec::new();
        let h = header(&e, !self.format.is_pax(), &mut ignored);
        self.put(&h)?;
        self.put(data)?;
        self.pad()
    }

    /// Writes the header(s) of `e`, with `records` (pax key, value) for pax formats. The
    /// caller then writes exactly `e.size` content bytes via [`write_content`] and
    /// [`finish_member`].
    ///
    /// [`write_content`]: TarWriter::write_content
    /// [`finish_member`]: TarWriter::finish_member
    pub fn begin(&mut self, e: &Entry, records: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
        let gnu = !self.format.is_pax();
        if gnu {
            if e.name.len() > 100 {
                let mut d = e.name.clone();
                d.push(0);
                self.meta_member(b"././@LongLink", kind::GNU_LONGNAME, &d, 0)?;
            }
            if e.linkname.len() > 100 {
                let mut d = e.linkname.clone();
                d.push(0);
                self.meta_member(b"././@LongLink", kind::GNU_LONGLINK, &d, 0)?;
            }
            let h = header(e, true, &mut Vec::new());
            return self.put(&h);
        }
        let mut overflow = Vec::new();
        let h = header(e, false, &mut overflow);
        let mut pax = Vec::new();
        // Names that are not UTF-8 are stored as raw bytes, as GNU tar does (it warns
        // about, and ignores, `hdrcharset`).
        if e.name.len() > 100 || !e.name.is_ascii() {
            pax.extend(pax_record(b"path", &e.name));
        }
        if e.linkname.len() > 100 || !e.linkname.is_ascii() {
            pax.extend(pax_record(b"linkpath", &e.linkname));
        }
        if e.uname.len() > 32 || !e.uname.is_ascii() {
            pax.extend(pax_record(b"uname", &e.uname));
        }
        if e.gname.len() > 32 || !e.gname.is_ascii() {
            pax.extend(pax_record(b"gname", &e.gname));
        }
        for (k, v) in overflow {
            if k != "mtime" {
                pax.extend(pax_record(k.as_bytes(), &v));
            }
        }
        for (k, v) in records {
            pax.extend(pax_record(k, v));
        }
        if !pax.is_empty() {
            self.meta_member(b"././@PaxHeader", kind::PAX, &pax, e.mtime_ns)?;
        }
        self.put(&h)
    }

    pub fn write_content(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.put(data)
    }

    pub fn finish_member(&mut self) -> std::io::Result<()> {
        self.pad()
    }

    /// End-of-archive blocks and padding to a whole record; returns the stream length.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.put(&[0u8; 2 * BLOCK])?;
        let rem = self.written % RECORD;
        if rem != 0 {
            let zeros = vec![0u8; (RECORD - rem) as usize];
            self.put(&zeros)?;
        }
        self.out.flush()?;
        Ok(self.written)
    }
}

/// borg's ACL text (`user:name:rw-:1000` lines) → the text GNU tar stores and feeds to
/// `acl_from_text` (`user:1000:rw-`, or `user:name:rw-` with `names`).
pub fn acl_text_for_tar(borg_text: &[u8], names: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for line in borg_text.split(|&b| b == b'\n') {
        let line = match line.iter().position(|&b| b == b'#') {
            Some(p) => &line[..p],
            None => line,
        };
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        if f.len() < 3 {
            continue;
        }
        let qualifier = match (f[1].is_empty(), f.get(3)) {
            (true, _) => &b""[..],
            (false, Some(id)) if !names => id,
            (false, _) => f[1],
        };
        out.extend_from_slice(f[0]);
        out.push(b':');
        out.extend_from_slice(qualifier);
        out.push(b':');
        out.extend_from_slice(f[2]);
        out.push(b'\n');
    }
    out
}

/// The pax records that carry what GNU-format tar cannot: times, xattrs, ACLs, and for
/// `BORG` the whole item.
fn item_records(item: &Item, opts: &TarOptions) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut r: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if !opts.format.is_pax() {
        return r;
    }
    if let Some(t) = item.atime {
        r.push((b"atime".to_vec(), pax_time(t).into_bytes()));
    }
    if let Some(t) = item.ctime {
        r.push((b"ctime".to_vec(), pax_time(t).into_bytes()));
    }
    r.push((b"mtime".to_vec(), pax_time(item.mtime).into_bytes()));
    for (k, v) in item.xattrs.iter().flatten() {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        r.push((key, v.clone().unwrap_or_default()));
    }
    if let Some(a) = item.acl_access.as_deref().filter(|a| !a.is_empty()) {
        r.push((
            b"SCHILY.acl.access".to_vec(),
            acl_text_for_tar(a, opts.acl_names),
        ));
    }
    if let Some(d) = item.acl_default.as_deref().filter(|d| !d.is_empty()) {
        r.push((
            b"SCHILY.acl.default".to_vec(),
            acl_text_for_tar(d, opts.acl_names),
        ));
    }
    if opts.format == TarFormat::Borg {
        r.push((b"BORG.item.version".to_vec(), b"1".to_vec()));
        let meta = base64::engine::general_purpose::STANDARD.encode(item.to_msgpack());
        r.push((b"BORG.item.meta".to_vec(), meta.into_bytes()));
    }
    r
}

/// Exports the selected items of `archive` to `out` (borg's `_export_tar`).
pub fn export_tar<W: Write>(
    session: &Session,
    archive: &ArchiveRef,
    selector: &mut Selector,
    out: W,
    opts: &TarOptions,
    events: &mut dyn FnMut(TarEvent<'_>),
) -> Result<TarSummary, TarError> {
    let mut tar = TarWriter::new(out, opts.format);
    let mut summary = TarSummary::default();
    for_each_selected(
        session,
        &archive.meta,
        selector,
        &mut |mut item: Item, selector: &mut Selector| -> Result<(), TarError> {
            let orig_path = std::mem::take(&mut item.path);
            item.path = strip_components(&orig_path, selector.strip());
            let ft = item.mode & 0o170000;
            let kind = match ft {
                0o100000 => kind::REG,
                0o040000 => kind::DIR,
                0o120000 => kind::SYM,
                0o020000 => kind::CHR,
                0o060000 => kind::BLK,
                0o010000 => kind::FIFO,
                _ => {
                    summary.warnings += 1;
                    events(TarEvent::Warning(format!(
                        "{}: unsupported file type {ft:o} for tar export",
                        String::from_utf8_lossy(&item.path)
                    )));
                    return Ok(());
                }
            };
            let mut name = item.path.clone();
            if kind == kind::DIR && !name.ends_with(b"/") {
                name.push(b'/');
            }
            let mut e = Entry {
                name,
                kind,
                mode: item.mode,
                uid: item.uid.into(),
                gid: item.gid.into(),
                uname: item.user.clone().unwrap_or_default(),
                gname: item.group.clone().unwrap_or_default(),
                mtime_ns: item.mtime,
                ..Default::default()
            };
            let mut content = None;
            match kind {
                kind::SYM => e.linkname = item.source.clone().unwrap_or_default(),
                kind::CHR | kind::BLK => {
                    let rdev = item.rdev.unwrap_or(0);
                    e.devmajor = dev_major(rdev);
                    e.devminor = dev_minor(rdev);
                }
                _ => {}
            }
            if item.is_hardlink_slave() {
                let source = item.source.clone().unwrap_or_default();
                let stripped = strip_components(&source, selector.strip());
                let m = if selector.partial {
                    selector
                        .masters
                        .get(&source)
                        .cloned()
                        .unwrap_or(HardlinkMaster {
                            chunks: None,
                            link_target: Some(stripped),
                        })
                } else {
                    HardlinkMaster {
                        chunks: None,
                        link_target: Some(stripped),
                    }
                };
                if let Some(target) = m.link_target {
                    e.kind = kind::LNK;
                    e.linkname = target;
                } else if let Some(chunks) = m.chunks {
                    // the group's master was not selected: this member carries the content
                    item.chunks = Some(chunks);
                    selector.masters.insert(
                        source,
                        HardlinkMaster {
                            chunks: None,
                            link_target: Some(item.path.clone()),
                        },
                    );
                }
            }
            if e.kind == kind::REG {
                let chunks = item.chunks.clone().unwrap_or_default();
                e.size = chunks.iter().map(|c| u64::from(c.size)).sum();
                content = Some(chunks);
            }
            events(TarEvent::Item(&orig_path));
            let records = if e.kind == kind::LNK {
                Vec::new()
            } else {
                item_records(&item, opts)
            };
            tar.begin(&e, &records)?;
            if let Some(chunks) = content {
                for_each_chunk(
                    session,
                    &chunks,
                    &mut |_, data: &[u8]| -> Result<(), TarError> {
                        tar.write_content(data)?;
                        Ok(())
                    },
                )?;
                tar.finish_member()?;
            }
            summary.entries += 1;
            Ok(())
        },
    )?;
    summary.bytes = tar.finish()?;
    for p in selector.unmatched_includes() {
        summary.warnings += 1;
        events(TarEvent::Warning(format!(
            "Include pattern '{p}' never matched."
        )));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        assert_eq!(pax_record(b"path", b"abc"), b"12 path=abc\n");
        // 9-byte base grows to two digits
        let r = pax_record(b"k", &[b'v'; 5]);
        assert_eq!(
            r.len(),
            String::from_utf8_lossy(&r)
                .split(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        );
        for n in 0..300 {
            let v = vec![b'x'; n];
            let r = pax_record(b"key", &v);
            let len: usize = String::from_utf8_lossy(&r)
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, r.len(), "value length {n}");
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(1_704_164_645_123_456_789), "1704164645.123456789");
        assert_eq!(pax_time(86_400_000_000_000), "86400");
        assert_eq!(pax_time(-1), "-0.000000001");
        assert_eq!(pax_time(-1_500_000_000), "-1.500000000");
    }

    #[test]
    fn acl_text_conversion() {
        let borg = b"user::rw-\nuser:nobody:rw-:65534\ngroup::r--\ngroup:nogroup:r--:65534\nmask::rw-\nother::r--\n";
        assert_eq!(
            acl_text_for_tar(borg, false),
            b"user::rw-\nuser:65534:rw-\ngroup::r--\ngroup:65534:r--\nmask::rw-\nother::r--\n"
        );
        assert_eq!(
            acl_text_for_tar(borg, true),
            b"user::rw-\nuser:nobody:rw-\ngroup::r--\ngroup:nogroup:r--\nmask::rw-\nother::r--\n"
        );
    }

    #[test]
    fn header_checksum_and_numbers() {
        let e = Entry {
            name: b"a".to_vec(),
            kind: kind::REG,
            mode: 0o100644,
            uid: 3_000_000,
            size: 5,
            mtime_ns: -5,
            ..Default::default()
        };
        let mut ov = Vec::new();
        let h = header(&e, false, &mut ov);
        let names: Vec<&str> = ov.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["uid", "mtime"]);
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut c = h;
        c[148..156].fill(b' ');
        assert_eq!(stored, c.iter().map(|&b| u32::from(b)).sum::<u32>());
        let g = header(&e, true, &mut Vec::new());
        assert_eq!(g[108] & 0x80, 0x80, "GNU base-256 uid");
        assert_eq!(&g[257..265], b"ustar  \0");
    }

    #[test]
    fn devices_split_like_glibc() {
        // glibc's makedev(259, 70000)
        let (ma, mi) = (259u64, 70000u64);
        let d = ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12);
        assert_eq!((dev_major(d), dev_minor(d)), (259, 70000));
    }
}
