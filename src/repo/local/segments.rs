//! Segment files (borg's `LoggedIO`): naming, listing, commit detection, reading entries
//! with CRC checks, and the append-only writer.
//!
//! A segment is `BORG_SEG` followed by entries `crc32 ‖ size ‖ tag [‖ key ‖ data]`
//! (LE; the CRC covers everything after itself). Tags: PUT 0, DELETE 1, COMMIT 2.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::fsio::{safe_unlink, sync_dir};
use crate::fsutil::read_full;

pub const MAGIC: &[u8; 8] = b"BORG_SEG";
pub const ATTIC_MAGIC: &[u8; 8] = b"ATTICSEG";
pub const TAG_PUT: u8 = 0;
pub const TAG_DELETE: u8 = 1;
pub const TAG_COMMIT: u8 = 2;
/// `crc ‖ size ‖ tag`.
pub const HEADER_SIZE: u32 = 9;
/// `crc ‖ size ‖ tag ‖ key`.
pub const PUT_HEADER_SIZE: u32 = 41;
/// Largest PUT payload (`MAX_DATA_SIZE`).
pub const MAX_DATA_SIZE: usize = 20_971_479;
/// Largest entry (`MAX_OBJECT_SIZE` = 20 MiB).
pub const MAX_OBJECT_SIZE: u32 = MAX_DATA_SIZE as u32 + PUT_HEADER_SIZE;
/// `max_segment_size` must stay below this so offsets fit a u32.
pub const MAX_SEGMENT_SIZE_LIMIT: u64 = (1u64 << 32) - MAX_OBJECT_SIZE as u64;
/// The constant COMMIT entry.
pub const COMMIT: [u8; 9] = commit_entry();

const fn commit_entry() -> [u8; 9] {
    // crc32 of `09 00 00 00 02`, computed at compile time (bitwise, poly 0xEDB88320).
    let body = [9u8, 0, 0, 0, TAG_COMMIT];
    let mut crc: u32 = 0xffff_ffff;
    let mut i = 0;
    while i < body.len() {
        crc ^= body[i] as u32;
        let mut k = 0;
        while k < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            k += 1;
        }
        i += 1;
    }
    let c = (!crc).to_le_bytes();
    [c[0], c[1], c[2], c[3], 9, 0, 0, 0, TAG_COMMIT]
}

/// Errors found in segment contents (borg's `IntegrityError`).
#[derive(Debug)]
pub enum SegError {
    Io(io::Error),
    Integrity(String),
}

impl From<io::Error> for SegError {
    fn from(e: io::Error) -> Self {
        SegError::Io(e)
    }
}

/// One entry as found in a segment.
pub struct Entry {
    pub tag: u8,
    pub key: Option<[u8; 32]>,
    pub offset: u32,
    pub size: u32,
}

/// Where segments live and how big they may get.
pub struct Layout {
    pub repo: PathBuf,
    pub segments_per_dir: u32,
}

fn digits(name: &std::ffi::OsStr) -> Option<u32> {
    let s = name.to_str()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Layout {
    pub fn data_dir(&self) -> PathBuf {
        self.repo.join("data")
    }

    pub fn dir_of(&self, segment: u32) -> PathBuf {
        self.data_dir()
            .join((segment / self.segments_per_dir).to_string())
    }

    pub fn filename(&self, segment: u32) -> PathBuf {
        self.dir_of(segment).join(segment.to_string())
    }

    /// All segment numbers (all-digit names in all-digit dirs), ascending.
    pub fn list(&self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(self.data_dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for d in rd {
            let d = d?;
            if digits(&d.file_name()).is_none() || !d.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(d.path())? {
                let f = f?;
                if let Some(n) = digits(&f.file_name()) {
                    if f.file_type()?.is_file() {
                        out.push(n);
                    }
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Size of a segment file (0 if missing).
    pub fn size(&self, segment: u32) -> io::Result<u64> {
        match fs::metadata(self.filename(segment)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// borg's `segment_exists`: present and not truncated to zero.
    pub fn exists(&self, segment: u32) -> bool {
        self.size(segment).map(|s| s > 0).unwrap_or(false)
    }

    /// borg's `is_committed_segment`: ends with COMMIT, all entries parse with valid
    /// CRCs, and no PUT/DELETE follows a COMMIT.
    pub fn is_committed(&self, segment: u32) -> Result<bool, SegError> {
        let path = self.filename(segment);
        let f = File::open(&path)?;
        let len = f.metadata()?.len();
        if len < HEADER_SIZE as u64 {
            return Ok(false);
        }
        let mut tail = [0u8; 9];
        f.read_exact_at(&mut tail, len - 9)?;
        if tail != COMMIT {
            return Ok(false);
        }
        let mut seen_commit = false;
        let mut bad_order = false;
        let r = iter_entries(&path, segment, |e| {
            if e.tag == TAG_COMMIT {
                seen_commit = true;
            } else if seen_commit {
                bad_order = true;
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(seen_commit && !bad_order),
            Err(SegError::Integrity(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The last committed segment (borg's `get_segments_transaction_id`).
    pub fn transaction_id(&self) -> Result<Option<u32>, SegError> {
        for s in self.list()?.into_iter().rev() {
            if self.is_committed(s)? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Deletes every segment above `transaction_id` (all of them for `None`).
    pub fn cleanup(&self, transaction_id: Option<u32>) -> io::Result<usize> {
        let mut n = 0;
        for s in self.list()?.into_iter().rev() {
            if transaction_id.is_some_and(|t| s <= t) {
                break;
            }
            safe_unlink(&self.filename(s))?;
            n += 1;
        }
        if n > 0 {
            let _ = sync_dir(&self.data_dir());
        }
        Ok(n)
    }

    /// Reads the magic of a segment.
    pub fn magic(&self, segment: u32) -> io::Result<[u8; 8]> {
        let mut m = [0u8; 8];
        let f = File::open(self.filename(segment))?;
        let n = f.read_at(&mut m, 0)?;
        if n < 8 {
            m[n..].fill(0);
        }
        Ok(m)
    }
}

fn integrity(msg: String) -> SegError {
    SegError::Integrity(msg)
}

/// Parses an entry header + body already read into `buf` (borg's `LoggedIO._read`).
fn check_entry(
    header: &[u8; 9],
    body: &[u8],
    segment: u32,
    offset: u32,
) -> Result<(u8, Option<[u8; 32]>), SegError> {
    let crc = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let tag = header[8];
    let mut h = crc32fast::Hasher::new();
    h.update(&header[4..]);
    h.update(body);
    if h.finalize() != crc {
        return Err(integrity(format!(
            "Segment entry checksum mismatch [segment {segment}, offset {offset}]"
        )));
    }
    let key = if tag == TAG_PUT || tag == TAG_DELETE {
        let k: [u8; 32] = body
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| {
                integrity(format!(
                    "Segment entry key short read [segment {segment}, offset {offset}]"
                ))
            })?;
        Some(k)
    } else {
        None
    };
    if tag > TAG_COMMIT {
        return Err(integrity(format!(
            "Invalid segment entry header, did not get acceptable tag [segment {segment}, offset {offset}]"
        )));
    }
    Ok((tag, key))
}

fn check_size(size: u32, min: u32, segment: u32, offset: u32) -> Result<(), SegError> {
    if size > MAX_OBJECT_SIZE {
        return Err(integrity(format!(
            "Invalid segment entry size {size} - too big [segment {segment}, offset {offset}]"
        )));
    }
    if size < min {
        return Err(integrity(format!(
            "Invalid segment entry size {size} - too small [segment {segment}, offset {offset}]"
        )));
    }
    Ok(())
}

/// Walks all entries of a segment file in order, verifying magic, sizes, CRCs and tags:
/// every byte is read so every CRC is checked, as borg's `iter_objects` does.
pub fn iter_entries(
    path: &Path,
    segment: u32,
    mut f: impl FnMut(Entry) -> Result<(), SegError>,
) -> Result<(), SegError> {
    iter_entries_with_data(path, segment, |e, _| f(e))
}

/// [`iter_entries`] that also hands over each entry's payload (PUT data after the key;
/// empty for DELETE and COMMIT), as borg's `iter_objects(include_data=True)`.
pub fn iter_entries_with_data(
    path: &Path,
    segment: u32,
    mut f: impl FnMut(Entry, &[u8]) -> Result<(), SegError>,
) -> Result<(), SegError> {
    let file = File::open(path)?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if read_full(&mut r, &mut magic)? != 8 || &magic != MAGIC {
        return Err(integrity(format!(
            "Invalid segment magic [segment {segment}, offset 0]"
        )));
    }
    let mut offset: u64 = 8;
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; 9];
        let n = read_full(&mut r, &mut header)?;
        if n == 0 {
            return Ok(());
        }
        let off32 =
            u32::try_from(offset).map_err(|_| integrity(format!("segment {segment} too large")))?;
        if n < 9 {
            return Err(integrity(format!(
                "Invalid segment entry header [segment {segment}, offset {offset}]: unpack requires a buffer of 9 bytes"
            )));
        }
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        check_size(size, HEADER_SIZE, segment, off32)?;
        let len = (size - HEADER_SIZE) as usize;
        body.resize(len, 0);
        let got = read_full(&mut r, &mut body)?;
        if got != len {
            return Err(integrity(format!(
                "Segment entry data short read [segment {segment}, offset {offset}]: expected {len}, got {got} bytes"
            )));
        }
        let (tag, key) = check_entry(&header, &body, segment, off32)?;
        let data = if key.is_some() {
            &body[32..]
        } else {
            &body[..0]
        };
        f(
            Entry {
                tag,
                key,
                offset: off32,
                size,
            },
            data,
        )?;
        offset += size as u64;
    }
}

/// Reads the PUT at `offset` of an open segment; with `read_data` checks its CRC and
/// returns the payload, else only returns the entry size (borg's `LoggedIO.read`).
pub fn read_put(
    file: &File,
    segment: u32,
    offset: u32,
    id: &[u8; 32],
    read_data: bool,
) -> Result<(u32, Option<Vec<u8>>), SegError> {
    let mut header = [0u8; 41];
    let n = read_at_full(file, &mut header, offset as u64)?;
    if n < 41 {
        return Err(integrity(format!(
            "Invalid segment entry header [segment {segment}, offset {offset}]: short read"
        )));
    }
    let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    check_size(size, PUT_HEADER_SIZE, segment, offset)?;
    let tag = header[8];
    let data = if read_data {
        let mut body = vec![0u8; (size - HEADER_SIZE) as usize];
        body[..32].copy_from_slice(&header[9..41]);
        let got = read_at_full(file, &mut body[32..], offset as u64 + 41)?;
        if got != body.len() - 32 {
            return Err(integrity(format!(
                "Segment entry data short read [segment {segment}, offset {offset}]: expected {}, got {got} bytes",
                body.len() - 32
            )));
        }
        let mut h9 = [0u8; 9];
        h9.copy_from_slice(&header[..9]);
        check_entry(&h9, &body, segment, offset)?;
        body.drain(..32);
        Some(body)
    } else {
        None
    };
    if tag != TAG_PUT {
        return Err(integrity(format!(
            "Invalid segment entry header, did not get acceptable tag [segment {segment}, offset {offset}]"
        )));
    }
    if &header[9..41] != id {
        return Err(integrity(format!(
            "Invalid segment entry header, is not for wanted id [segment {segment}, offset {offset}]"
        )));
    }
    Ok((size, data))
}

fn read_at_full(f: &File, buf: &mut [u8], mut pos: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], pos) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                pos += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The segment being appended to.
pub struct Writer {
    pub segment: u32,
    pub offset: u64,
    path: PathBuf,
    out: BufWriter<File>,
}

/// Buffer of the segment writer: gathers small entries into large appends; entries at
/// least this large bypass it (no second copy of chunk data).
const WRITE_BUFFER: usize = 256 << 10;

impl Writer {
    /// Creates segment `segment` (it must not exist, like borg's `'xb'` open), making its
    /// directory if needed, and writes the magic.
    pub fn create(layout: &Layout, segment: u32) -> io::Result<Writer> {
        let dir = layout.dir_of(segment);
        if !dir.exists() {
            fs::create_dir(&dir)?;
            sync_dir(&layout.data_dir())?;
        }
        let path = layout.filename(segment);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, f);
        out.write_all(MAGIC)?;
        Ok(Writer {
            segment,
            offset: MAGIC.len() as u64,
            path,
            out,
        })
    }

    /// Appends a PUT; returns its offset.
    pub fn put(&mut self, id: &[u8; 32], data: &[u8]) -> io::Result<u32> {
        let size = PUT_HEADER_SIZE + data.len() as u32;
        let mut hdr = [0u8; 41];
        hdr[4..8].copy_from_slice(&size.to_le_bytes());
        hdr[8] = TAG_PUT;
        hdr[9..].copy_from_slice(id);
        let mut h = crc32fast::Hasher::new();
        h.update(&hdr[4..]);
        h.update(data);
        hdr[..4].copy_from_slice(&h.finalize().to_le_bytes());
        let offset = self.offset as u32;
        self.out.write_all(&hdr)?;
        self.out.write_all(data)?;
        self.offset += size as u64;
        Ok(offset)
    }

    /// Appends a DELETE; returns its offset.
    pub fn delete(&mut self, id: &[u8; 32]) -> io::Result<u32> {
        let mut hdr = [0u8; 41];
        hdr[4..8].copy_from_slice(&PUT_HEADER_SIZE.to_le_bytes());
        hdr[8] = TAG_DELETE;
        hdr[9..].copy_from_slice(id);
        let crc = crc32fast::hash(&hdr[4..]);
        hdr[..4].copy_from_slice(&crc.to_le_bytes());
        let offset = self.offset as u32;
        self.out.write_all(&hdr)?;
        self.offset += PUT_HEADER_SIZE as u64;
        Ok(offset)
    }

    pub fn commit(&mut self) -> io::Result<()> {
        self.out.write_all(&COMMIT)?;
        self.offset += HEADER_SIZE as u64;
        Ok(())
    }

    /// Makes everything written so far durable (flush + fdatasync), as borg does before
    /// an intermediate COMMIT so the COMMIT can never reach the disk before the data.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    /// Makes buffered bytes visible to readers of the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flush, fdatasync, drop the pages from the cache, close, fsync the directory
    /// (borg's `SyncFile.close`).
    pub fn close(mut self) -> io::Result<()> {
        self.out.flush()?;
        let f = self.out.get_mut();
        f.sync_data()?;
        // SAFETY: advisory call on a valid open descriptor.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
        drop(self.out);
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_constant() {
        assert_eq!(COMMIT, [0x40, 0xf4, 0x3c, 0x25, 9, 0, 0, 0, 2]);
    }
}
