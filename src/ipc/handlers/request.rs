//! Reading requests: the JSON body (size-capped), query parameters, and the fields endpoints
//! share (a database path, a timeout).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tiny_http::Request;

use super::reply::ApiError;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// Reads and parses a JSON body of at most [`MAX_BODY`] bytes.
pub(super) fn read_json<T: for<'de> Deserialize<'de>>(rq: &mut Request) -> Result<T, ApiError> {
    if rq.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::new(413, "request body too large")
            .details(format!("limit is {MAX_BODY} bytes")));
    }
    let mut body = Vec::new();
    rq.as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::new(400, "invalid request body").details(e.to_string()))?;
    if body.len() > MAX_BODY {
        return Err(ApiError::new(413, "request body too large")
            .details(format!("limit is {MAX_BODY} bytes")));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, "invalid request body").details(e.to_string()))
}

pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Decodes `%XX` escapes and `+` in a query value; a `%` not followed by two hex digits is
/// kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A database path from a request: required and absolute.
pub(super) fn db_path(path: Option<String>) -> Result<PathBuf, ApiError> {
    let p = path.filter(|p| !p.is_empty()).ok_or_else(|| {
        ApiError::new(400, "path required").details("give the database's absolute path")
    })?;
    let p = PathBuf::from(p);
    if !p.is_absolute() {
        return Err(ApiError::new(400, "path must be absolute")
            .details(format!("got {:?}", p.display().to_string())));
    }
    Ok(p)
}

/// A `timeout` field: seconds, more than 0; `default` when absent.
pub(super) fn timeout_field(t: Option<f64>, default: f64) -> Result<Duration, ApiError> {
    let t = t.unwrap_or(default);
    if !(t.is_finite() && t > 0.0) {
        return Err(
            ApiError::new(400, "invalid timeout").details(format!("{t} (want seconds > 0)"))
        );
    }
    Ok(Duration::from_secs_f64(t.min(86_400.0)))
}

/// A `timeout` given as seconds (`30`, as `/sync` and `/stop` take it) or as a Go duration
/// (`"1m30s"`, as the CLI's `-timeout` flags are written).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum TimeoutValue {
    Seconds(f64),
    Duration(String),
}

/// A `timeout` field in either form; `default` when absent.
pub(super) fn timeout_value(
    t: Option<TimeoutValue>,
    default: Duration,
) -> Result<Duration, ApiError> {
    match t {
        None => Ok(default),
        Some(TimeoutValue::Seconds(s)) => timeout_field(Some(s), default.as_secs_f64()),
        Some(TimeoutValue::Duration(text)) => match crate::duration::parse(&text) {
            Ok(d) if !d.is_zero() => Ok(d.min(Duration::from_secs(86_400))),
            Ok(_) => Err(ApiError::new(400, "invalid timeout")
                .details(format!("{text:?} (want more than 0)"))),
            Err(e) => Err(ApiError::new(400, "invalid timeout").details(format!("{text:?}: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("path=/a%20b.db&x=1", "path").as_deref(),
            Some("/a b.db")
        );
        assert_eq!(
            query_param("x=1&path=%2Fdata%2Fapp.db", "path").as_deref(),
            Some("/data/app.db")
        );
        assert_eq!(query_param("x=1", "path"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn timeouts_are_seconds_or_go_durations() {
        let d = Duration::from_secs(60);
        let parse = |json: &str| {
            let v: Option<TimeoutValue> = serde_json::from_str(json).unwrap();
            timeout_value(v, d).map_err(|e| e.details.unwrap_or_default())
        };
        assert_eq!(parse("null").ok(), Some(d));
        assert_eq!(parse("2.5").ok(), Some(Duration::from_millis(2500)));
        assert_eq!(parse("\"1m30s\"").ok(), Some(Duration::from_secs(90)));
        assert!(parse("\"0s\"").unwrap_err().contains("more than 0"));
        assert!(parse("\"soon\"").unwrap_err().contains("soon"));
        assert!(parse("-1").is_err());
    }
}
