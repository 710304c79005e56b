//! Time as users read it: RFC 3339 in UTC, as Litestream prints it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch (LTX header timestamps).
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// A `SystemTime` as milliseconds since the Unix epoch (negative before 1970).
pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-24T21:27:36.374Z`: RFC 3339, UTC, always three fractional digits (the event
/// stream's and S3 metadata's format).
pub fn rfc3339_ms(ms: i64) -> String {
    let t = datetime(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `2026-11-24T21:16:39Z`: whole seconds, as Litestream's human-readable CLI output.
pub fn rfc3339_secs(ms: i64) -> String {
    let t = datetime(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// RFC 3339 with nanoseconds and no trailing zeros, as Go's `time.RFC3339Nano` (the IPC JSON).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let base = rfc3339_secs(d.as_millis() as i64);
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return base;
    }
    let frac = format!("{nanos:09}");
    format!(
        "{}.{}Z",
        &base[..base.len() - 1],
        frac.trim_end_matches('0')
    )
}

/// Parses an RFC 3339 timestamp (any offset, optional fraction) into milliseconds since the
/// epoch, for `restore -timestamp`.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|e| {
            format!("invalid timestamp {s:?} (want RFC 3339, e.g. 2026-11-24T21:27:36Z): {e}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let ms = 1_795_987_656_374; // 2026-11-29T...
        let s = rfc3339_ms(ms);
        assert_eq!(parse_rfc3339(&s).unwrap(), ms);
        assert!(s.ends_with(".374Z"), "{s}");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_secs(1_500), "1970-01-01T00:00:01Z");
        assert_eq!(
            parse_rfc3339("2026-11-24T21:27:36+01:00").unwrap(),
            parse_rfc3339("2026-11-24T20:27:36Z").unwrap()
        );
        assert!(parse_rfc3339("2026-11-24 21:27").is_err());
        let t = UNIX_EPOCH + Duration::new(5, 120_000_000);
        assert_eq!(rfc3339_nanos(t), "1970-01-01T00:00:05.12Z");
        assert_eq!(
            rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(5)),
            "1970-01-01T00:00:05Z"
        );
    }
}
