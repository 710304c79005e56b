//! Durations the way Go reads and writes them, since users write Litestream's config in Go's
//! syntax: [`parse`] is `time.ParseDuration` (`1h30m`, `100ms`, `1.5s`), [`format`] is
//! `time.Duration.String()` (`5m0s`, `1h0m0s`, `1.5s`, `100ms`).

use std::time::Duration;

const SECOND: u128 = 1_000_000_000;

/// Parses a duration in Go syntax (`1s`, `500ms`, `1m30s`, `1.5h`, `0`), as Litestream's
/// `time.ParseDuration` does. Negative durations are refused since nothing here can use one.
pub fn parse(text: &str) -> Result<Duration, String> {
    match parse_nanos(text) {
        Some(n) if n >= 0 => Ok(Duration::from_nanos(n.unsigned_abs())),
        Some(_) => Err(format!("negative duration \"{text}\"")),
        None => Err(format!("invalid duration \"{text}\"")),
    }
}

/// Go's `time.ParseDuration` as signed nanoseconds; `None` when Go would refuse the text.
/// Units: ns, us, µs, μs, ms, s, m, h; fractions and a sign allowed; a bare `0` allowed.
pub fn parse_nanos(text: &str) -> Option<i64> {
    let (negative, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let (amount, rest) = term(s)?;
        total += amount;
        s = rest;
    }
    let limit = if negative {
        1u128 << 63
    } else {
        (1u128 << 63) - 1
    };
    if total > limit {
        return None;
    }
    let magnitude = i128::try_from(total).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// One `<number><unit>` term of a Go duration: (nanoseconds, rest of text).
fn term(s: &str) -> Option<(u128, &str)> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (int_part, rest) = s.split_at(int_len);
    let (frac_part, rest) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(r.bytes().take_while(u8::is_ascii_digit).count()),
        None => ("", rest),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let unit_len = rest
        .find(|c: char| c == '.' || c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (unit, rest) = rest.split_at(unit_len);
    let scale: u128 = match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => SECOND,
        "m" => 60 * SECOND,
        "h" => 3600 * SECOND,
        _ => return None,
    };
    let whole: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let mut amount = whole.checked_mul(scale)?;
    // Fractions: Go keeps ~19 significant digits; nanosecond precision needs far fewer.
    let frac = &frac_part[..frac_part.len().min(18)];
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        amount += digits * scale / 10u128.pow(u32::try_from(frac.len()).ok()?);
    }
    Some((amount, rest))
}

/// Go's `time.Duration.String()`: `0s`, `100ms`, `1.5s`, `5m0s`, `1h0m0s`, `1.5µs`.
pub fn format(d: Duration) -> String {
    format_unsigned(d.as_nanos())
}

/// [`format`] of signed nanoseconds (`-1m0s`).
pub fn format_nanos(nanos: i64) -> String {
    let text = format_unsigned(u128::from(nanos.unsigned_abs()));
    if nanos < 0 {
        format!("-{text}")
    } else {
        text
    }
}

fn format_unsigned(nanos: u128) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < SECOND {
        let (scale, unit) = if nanos < 1_000 {
            (1, "ns")
        } else if nanos < 1_000_000 {
            (1_000, "\u{b5}s")
        } else {
            (1_000_000, "ms")
        };
        return format!("{}{unit}", decimal(nanos, scale));
    }
    let secs = nanos / SECOND;
    let (hours, minutes) = (secs / 3600, secs / 60 % 60);
    let seconds = decimal(nanos % (60 * SECOND), SECOND);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// `value / scale` as a decimal without trailing zeros (`1500, 1000` → `1.5`).
fn decimal(value: u128, scale: u128) -> String {
    let (whole, rest) = (value / scale, value % scale);
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let fraction = format!("{rest:0width$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        let ok = [
            ("1s", 1_000_000_000i64),
            ("500ms", 500_000_000),
            ("1m30s", 90_000_000_000),
            ("1h", 3_600_000_000_000),
            ("24h", 86_400_000_000_000),
            ("1.5h", 5_400_000_000_000),
            (".5s", 500_000_000),
            ("1µs", 1_000),
            ("1μs", 1_000),
            ("1us", 1_000),
            ("2ns", 2),
            ("1h2m3s4ms", 3_723_004_000_000),
            ("0", 0),
            ("+5s", 5_000_000_000),
            ("-1s", -1_000_000_000),
        ];
        for (text, nanos) in ok {
            assert_eq!(parse_nanos(text), Some(nanos), "{text}");
        }
        for bad in [
            "",
            "1",
            "1d",
            "1 s",
            "s",
            "1S",
            "1m 30s",
            ".s",
            "-",
            "9999999999h",
        ] {
            assert_eq!(parse_nanos(bad), None, "{bad:?}");
        }
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse("-1s").is_err());
    }

    #[test]
    fn durations_format_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_micros(1_250), "1.25ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(27), "27s"),
            (Duration::from_secs(69), "1m9s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3605), "1h0m5s"),
            (Duration::from_nanos(3_723_004_000_000), "1h2m3.004s"),
            (Duration::from_secs(24 * 3600), "24h0m0s"),
        ];
        for (d, text) in cases {
            assert_eq!(format(d), text, "{d:?}");
            let back = parse_nanos(text).expect(text);
            assert_eq!(u128::from(back.unsigned_abs()), d.as_nanos(), "{text}");
        }
        assert_eq!(format_nanos(-60_000_000_000), "-1m0s");
        assert_eq!(format_nanos(0), "0s");
    }
}
