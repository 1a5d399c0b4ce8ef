//! Durable file updates the way borg's `platform` module does them: `SaveFile` (temp file
//! in the same directory, fsync, atomic rename, directory fsync), `sync_dir`, and the
//! secure erase of an old config that may hold key material.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// fsyncs a directory so renames/creations in it are durable (EINVAL, as on some
/// network file systems, is ignored like borg does).
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    match f.sync_all() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

/// A random lowercase alphanumeric suffix for temporary names.
pub fn random_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    let mut raw = vec![0u8; n];
    if getrandom::getrandom(&mut raw).is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ std::process::id() as u64;
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
    raw.iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

/// Creates `dir/<prefix><random><suffix>` exclusively (mode 0666 & umask, like borg's
/// `mkstemp_mode(..., mode=0o666)`).
fn create_temp(dir: &Path, prefix: &str, suffix: &str) -> io::Result<(File, PathBuf)> {
    loop {
        let p = dir.join(format!("{prefix}{}{suffix}", random_suffix(8)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&p)
        {
            Ok(f) => return Ok((f, p)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Atomically replaces `path` with `data` (borg's `SaveFile`): `<name>-XXXXXXXX.tmp`,
/// fdatasync, rename, fsync of the directory. The temp file is removed on failure.
pub fn save_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mut f, tmp) = create_temp(dir, &format!("{name}-"), ".tmp")?;
    let r = (|| {
        f.write_all(data)?;
        f.sync_data()?;
        drop(f);
        sync_dir(dir)?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let r2 = sync_dir(dir);
    r.and(r2)
}

/// Writes `path` (a `.tmp` name) with `data` and fsyncs it; the caller renames.
pub fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Overwrites a file with random bytes before unlinking it, unless other hard links
/// share its inode (borg's `secure_erase(avoid_collateral_damage=True)`).
pub fn secure_erase(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    {
        let mut f = OpenOptions::new().read(true).write(true).open(path)?;
        let md = f.metadata()?;
        if md.nlink() <= 1 {
            let mut left = md.len();
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                let _ = getrandom::getrandom(&mut buf[..n]);
                f.write_all(&buf[..n])?;
                left -= n as u64;
            }
            f.flush()?;
            f.sync_all()?;
        }
    }
    fs::remove_file(path)
}

/// Unlinks a file; on ENOSPC truncates it first (when it has no other link), as borg's
/// `safe_unlink` does to let a full file system recover.
pub fn safe_unlink(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match fs::remove_file(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
            let md = fs::metadata(path)?;
            if md.nlink() > 1 {
                return Err(e);
            }
            OpenOptions::new().write(true).open(path)?.set_len(0)?;
            fs::remove_file(path)
        }
        r => r,
    }
}
