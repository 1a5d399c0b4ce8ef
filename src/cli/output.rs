//! Human output in borg's formats (sizes, times, stats tables) and JSON helpers.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Local, Utc};

/// `--iec`: sizes in powers of 1024 (`KiB`, `MiB`) instead of 1000 (`kB`, `MB`).
static IEC: AtomicBool = AtomicBool::new(false);

/// Sets the units of every size shown from now on (borg's common `--iec`).
pub fn set_iec(on: bool) {
    IEC.store(on, Ordering::Relaxed);
}

const DECIMAL: [&str; 9] = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
const BINARY: [&str; 9] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"];

/// A size in statistics (`create --stats`, `info`, `delete`/`prune --stats`): borg's
/// `format_file_size` with two decimals (`287 B`, `1.04 kB`), in IEC units with `--iec`.
pub fn size(v: u64) -> String {
    let v = i64::try_from(v).unwrap_or(i64::MAX);
    if IEC.load(Ordering::Relaxed) {
        sized(v, 2, false, &BINARY, 1024.0)
    } else {
        sized(v, 2, false, &DECIMAL, 1000.0)
    }
}

/// borg's `format_file_size(v, precision, sign)` in decimal units, as `diff` prints sizes
/// (borg's `--iec` leaves them alone).
pub fn file_size(v: i64, precision: usize, sign: bool) -> String {
    sized(v, precision, sign, &DECIMAL, 1000.0)
}

/// borg's `sizeof_fmt`.
fn sized(v: i64, precision: usize, sign: bool, units: &[&str; 9], power: f64) -> String {
    let mut num = v as f64;
    let mut prec = 0;
    let mut unit = units[units.len() - 1];
    let p = 10f64.powi(precision as i32);
    for u in &units[..units.len() - 1] {
        if ((num * p).round() / p).abs() < power {
            unit = u;
            break;
        }
        num /= power;
        prec = precision;
    }
    if sign && v > 0 {
        format!("{num:+.prec$} {unit}B")
    } else {
        format!("{num:.prec$} {unit}B")
    }
}

/// borg's `format_time`: local time with weekday.
pub fn time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%a, %Y-%m-%d %H:%M:%S")
        .to_string()
}

/// ISO 8601 local time with microseconds, as borg's JSON (`isoformat_time`).
pub fn iso(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// borg's `format_timedelta`.
pub fn duration(secs: f64) -> String {
    let s = secs % 60.0;
    let m = (secs / 60.0) as u64 % 60;
    let h = (secs / 3600.0) as u64 % 24;
    let d = (secs / 86400.0) as u64;
    let mut txt = format!("{s:.2} seconds");
    if m > 0 {
        txt = format!("{m} minutes {txt}");
    }
    if h > 0 {
        txt = format!("{h} hours {txt}");
    }
    if d > 0 {
        txt = format!("{d} days {txt}");
    }
    txt
}

pub const RULE: &str =
    "------------------------------------------------------------------------------";

/// The "Original size / Compressed size / Deduplicated size" table row.
pub fn stats_row(label: &str, osize: u64, csize: u64, dsize: u64) -> String {
    // borg's Statistics.summary: "{label:15} {osize:>20s} {csize:>20s} {dsize:>20s}"
    format!(
        "{:<15} {:>20} {:>20} {:>20}",
        label,
        size(osize),
        size(csize),
        size(dsize)
    )
}

pub fn stats_header() -> String {
    "                       Original size      Compressed size    Deduplicated size".to_string()
}

/// `{mode}` column of `borg list`: `drwxr-xr-x` etc.
pub fn mode_string(mode: u32) -> String {
    let t = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (b, c)) in bits.iter().enumerate() {
        let mut ch = if mode & b != 0 { *c } else { '-' };
        if i == 2 && mode & 0o4000 != 0 {
            ch = if ch == 'x' { 's' } else { 'S' };
        }
        if i == 5 && mode & 0o2000 != 0 {
            ch = if ch == 'x' { 's' } else { 'S' };
        }
        if i == 8 && mode & 0o1000 != 0 {
            ch = if ch == 'x' { 't' } else { 'T' };
        }
        s.push(ch);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_borg() {
        assert_eq!(size(287), "287 B");
        assert_eq!(size(1036), "1.04 kB");
        assert_eq!(size(999_999), "1.00 MB");
        assert_eq!(size(0), "0 B");
        assert_eq!(sized(1023, 2, false, &BINARY, 1024.0), "1023 B");
        assert_eq!(sized(1536, 2, false, &BINARY, 1024.0), "1.50 KiB");
        assert_eq!(sized(5 << 30, 2, false, &BINARY, 1024.0), "5.00 GiB");
        assert_eq!(sized(-1536, 1, true, &BINARY, 1024.0), "-1.5 KiB");
    }

    #[test]
    fn modes() {
        assert_eq!(mode_string(0o40755), "drwxr-xr-x");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o41777), "drwxrwxrwt");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(3.5), "3.50 seconds");
        assert_eq!(duration(3725.0), "1 hours 2 minutes 5.00 seconds");
    }
}
