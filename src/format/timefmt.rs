//! borg's timestamp strings: UTC, naive, `%Y-%m-%dT%H:%M:%S.%f` (always six digits of
//! microseconds). Manifest timestamps are compared *as strings* by borg, so the format
//! must never vary.

use chrono::{DateTime, NaiveDateTime, Utc};

const FMT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// Formats a UTC instant the way borg stores it.
pub fn format(t: DateTime<Utc>) -> String {
    t.naive_utc().format(FMT).to_string()
}

/// Parses borg's format (also without fractional seconds, as borg accepts).
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .ok()
        .map(|n| n.and_utc())
}

/// A manifest timestamp strictly after `previous` (borg: `max(previous + 1µs, now)`).
pub fn next_manifest_timestamp(previous: Option<&str>, now: DateTime<Utc>) -> String {
    let floor = previous
        .and_then(parse)
        .map(|p| p + chrono::Duration::microseconds(1));
    match floor {
        Some(f) if f > now => format(f),
        _ => format(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn six_digit_micros() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 6, 23, 30).unwrap();
        assert_eq!(format(t), "2026-11-23T06:23:30.000000");
        assert_eq!(
            parse("2026-11-23T06:23:30.136596").map(format).unwrap(),
            "2026-11-23T06:23:30.136596"
        );
        assert_eq!(
            parse("2026-11-23T06:23:30").map(format).unwrap(),
            "2026-11-23T06:23:30.000000"
        );
    }

    #[test]
    fn manifest_timestamp_increases() {
        let now = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        let prev = "2030-01-01T00:00:00.999999";
        assert_eq!(
            next_manifest_timestamp(Some(prev), now),
            "2030-01-01T00:00:01.000000"
        );
        assert_eq!(
            next_manifest_timestamp(None, now),
            "2020-01-01T00:00:00.000000"
        );
        assert_eq!(
            next_manifest_timestamp(Some("2019-01-01T00:00:00.000000"), now),
            "2020-01-01T00:00:00.000000"
        );
    }
}
