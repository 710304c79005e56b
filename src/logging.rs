//! The log backend: one line per event in Go slog's shape, as Litestream prints it, to stdout
//! (Litestream's default) or stderr.
//!
//! Call sites log a short constant message and their variables as key-values (the `log`
//! crate's `kv` feature): `log::info!(db:% = path.display(), txid:% = t; "compaction
//! complete")`. The text form is slog's `TextHandler` line, `time=... level=INFO
//! msg="compaction complete" db=/data/app.db txid=0000000000000007`, values quoted as Go
//! quotes them; the JSON form (`logging.type: json`) is one object per line with the same keys
//! in the same order, `{"time":..,"level":"INFO","msg":"..","db":"..",..}`, numbers and
//! booleans as JSON numbers and booleans. Keys are never repeated: `time`, `level` and `msg` are
//! the record's own, so a compaction level is logged as `compaction_level`.

use std::fmt::Write as _;
use std::io::Write;

use crate::config::{LogFormat, LogLevel};

/// Installs the global logger. `RUST_LOG` style module filters are not needed: one level.
pub fn init(level: LogLevel, format: LogFormat, stderr: bool) {
    let filter = match level {
        LogLevel::Trace => log::LevelFilter::Trace,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Error => log::LevelFilter::Error,
    };
    let target = if stderr {
        env_logger::Target::Stderr
    } else {
        env_logger::Target::Stdout
    };
    let _ = env_logger::Builder::new()
        .filter_level(filter)
        // Dependencies log at debug about every request; keep their warnings only.
        .filter_module("tiny_http", log::LevelFilter::Warn)
        .filter_module("rustls", log::LevelFilter::Warn)
        .filter_module("reqwest", log::LevelFilter::Warn)
        .target(target)
        .format(move |buf, record| {
            let time = crate::timefmt::rfc3339_ms(crate::timefmt::now_ms());
            writeln!(buf, "{}", render(&time, record, format))
        })
        .try_init();
}

/// slog's name for a level: `WARN`, not `WARNING`; Rust's `TRACE` kept (slog has no trace).
fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARN",
        log::Level::Info => "INFO",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

/// One record as a line (without the newline) in `format`.
fn render(time: &str, record: &log::Record, format: LogFormat) -> String {
    let msg = match record.args().as_str() {
        Some(s) => s.to_string(),
        None => record.args().to_string(),
    };
    let level = level_name(record.level());
    let mut fields = Fields(vec![]);
    // The visitor never fails; a source that does keeps the pairs read so far.
    let _ = record.key_values().visit(&mut fields);
    match format {
        LogFormat::Text => {
            let mut line = format!("time={time} level={level} msg=");
            push_text_value(&mut line, &msg);
            for (key, value) in &fields.0 {
                line.push(' ');
                push_text_value(&mut line, key);
                line.push('=');
                push_text_value(&mut line, &value.to_string());
            }
            line
        }
        LogFormat::Json => {
            // Written by hand, not through a `serde_json::Map`, to keep slog's key order.
            let json = |v: serde_json::Value| v.to_string();
            let mut line = format!(
                "{{\"time\":{},\"level\":{},\"msg\":{}",
                json(time.into()),
                json(level.into()),
                json(msg.into())
            );
            for (key, value) in fields.0 {
                let _ = write!(line, ",{}:{}", json(key.into()), json(value.into_json()));
            }
            line.push('}');
            line
        }
    }
}

/// A value as the record carried it: typed where the call site passed a number or a
/// boolean (JSON keeps them as such), else its text.
enum FieldValue {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Text(String),
}

impl FieldValue {
    fn from_value(v: &log::kv::Value) -> FieldValue {
        if let Some(b) = v.to_bool() {
            FieldValue::Bool(b)
        } else if let Some(n) = v.to_u64() {
            FieldValue::U64(n)
        } else if let Some(n) = v.to_i64() {
            FieldValue::I64(n)
        } else if let Some(f) = v.to_f64().filter(|f| f.is_finite()) {
            FieldValue::F64(f)
        } else {
            FieldValue::Text(v.to_string())
        }
    }

    fn into_json(self) -> serde_json::Value {
        match self {
            FieldValue::Bool(b) => b.into(),
            FieldValue::U64(n) => n.into(),
            FieldValue::I64(n) => n.into(),
            FieldValue::F64(f) => f.into(),
            FieldValue::Text(s) => s.into(),
        }
    }
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::U64(n) => write!(f, "{n}"),
            FieldValue::I64(n) => write!(f, "{n}"),
            FieldValue::F64(x) => write!(f, "{x}"),
            FieldValue::Text(s) => f.write_str(s),
        }
    }
}

/// The record's key-values in the order the call site wrote them.
struct Fields(Vec<(String, FieldValue)>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.0
            .push((key.as_str().to_string(), FieldValue::from_value(&value)));
        Ok(())
    }
}

/// Appends `s` to `line` as slog's `TextHandler` writes a key or value: bare, or quoted like
/// Go's `strconv.Quote` when it is empty or holds a space, `=`, `"`, or a character that is not
/// printable.
fn push_text_value(line: &mut String, s: &str) {
    if !needs_quoting(s) {
        line.push_str(s);
        return;
    }
    line.push('"');
    for c in s.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            '\u{7}' => line.push_str("\\a"),
            '\u{8}' => line.push_str("\\b"),
            '\u{c}' => line.push_str("\\f"),
            '\u{b}' => line.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(line, "\\x{:02x}", c as u32);
            }
            c if !is_print(c) && (c as u32) < 0x10000 => {
                let _ = write!(line, "\\u{:04x}", c as u32);
            }
            c if !is_print(c) => {
                let _ = write!(line, "\\U{:08x}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// slog's `needsQuoting`: empty, or an ASCII space, `=`, `"` or control character (a
/// backslash alone does not), or a non-ASCII character that is a space or not printable.
fn needs_quoting(s: &str) -> bool {
    s.is_empty()
        || s.chars().any(|c| {
            if c.is_ascii() {
                c == ' ' || c == '=' || c == '"' || c.is_ascii_control()
            } else {
                c.is_whitespace() || !is_print(c)
            }
        })
}

/// Go's `unicode.IsPrint`, as far as Rust's standard library can tell it: not a control
/// character, not a space other than U+0020, and not one of the invisible format characters
/// (soft hyphen, zero-width and direction marks, BOM) that would hide in a log line.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{ad}'
                | '\u{600}'..='\u{605}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e000}'..='\u{f8ff}'
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        let mut line = String::new();
        push_text_value(&mut line, s);
        line
    }

    #[test]
    fn plain_values_stay_bare() {
        for s in [
            "compaction",
            "/data/app.db",
            "0000000000000007",
            "s3://bucket/path?x",
            "a\\b",
            "1m0s",
            "héllo",
        ] {
            assert_eq!(text(s), s);
        }
    }

    #[test]
    fn values_are_quoted_as_go_quotes_them() {
        assert_eq!(text(""), r#""""#);
        assert_eq!(text("compaction complete"), r#""compaction complete""#);
        assert_eq!(text("a=b"), r#""a=b""#);
        assert_eq!(text(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(text("tab\there"), r#""tab\there""#);
        assert_eq!(text("line\nbreak"), r#""line\nbreak""#);
        assert_eq!(text("bell\u{7}"), r#""bell\a""#);
        assert_eq!(text("esc\u{1b}"), r#""esc\x1b""#);
        assert_eq!(text("del\u{7f}"), r#""del\x7f""#);
        // A backslash alone is left bare, but once quoted it is escaped.
        assert_eq!(text(r"a\b c"), r#""a\\b c""#);
        // Non-ASCII spaces and invisible characters are quoted and escaped.
        assert_eq!(text("no\u{a0}break"), r#""no\u00a0break""#);
        assert_eq!(text("zero\u{200b}width"), r#""zero\u200bwidth""#);
        assert_eq!(text("é ü"), "\"é ü\"");
    }

    fn record_line(
        format: LogFormat,
        level: log::Level,
        msg: &str,
        kvs: &[(&str, log::kv::Value)],
    ) -> String {
        let kvs: Vec<(&str, log::kv::Value)> = kvs.to_vec();
        render(
            "2026-12-02T04:45:39.123Z",
            &log::Record::builder()
                .level(level)
                .args(format_args!("{msg}"))
                .key_values(&kvs)
                .build(),
            format,
        )
    }

    #[test]
    fn text_line_has_time_level_msg_then_the_keys_in_order() {
        let line = record_line(
            LogFormat::Text,
            log::Level::Warn,
            "compaction complete",
            &[
                ("db", log::kv::Value::from("/data/my app.db")),
                ("compaction_level", log::kv::Value::from(1u64)),
                ("txid.min", log::kv::Value::from("0000000000000001")),
                ("ok", log::kv::Value::from(true)),
                ("error", log::kv::Value::from("")),
            ],
        );
        assert_eq!(
            line,
            "time=2026-12-02T04:45:39.123Z level=WARN msg=\"compaction complete\" \
             db=\"/data/my app.db\" compaction_level=1 txid.min=0000000000000001 ok=true error=\"\""
        );
        let bare = record_line(LogFormat::Text, log::Level::Info, "litestream", &[]);
        assert_eq!(
            bare,
            "time=2026-12-02T04:45:39.123Z level=INFO msg=litestream"
        );
    }

    #[test]
    fn json_line_has_the_same_keys_with_typed_values() {
        let path = std::path::Path::new("/data/app.db");
        let display = path.display();
        let line = record_line(
            LogFormat::Json,
            log::Level::Error,
            "sync error",
            &[
                ("db", log::kv::Value::from_display(&display)),
                ("attempt", log::kv::Value::from(4u64)),
                ("lag", log::kv::Value::from(-2i64)),
                ("ratio", log::kv::Value::from(0.5f64)),
                ("ok", log::kv::Value::from(false)),
                ("error", log::kv::Value::from("a \"quoted\"\nline")),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2026-12-02T04:45:39.123Z",
                "level": "ERROR",
                "msg": "sync error",
                "db": "/data/app.db",
                "attempt": 4,
                "lag": -2,
                "ratio": 0.5,
                "ok": false,
                "error": "a \"quoted\"\nline",
            })
        );
        assert!(
            line.starts_with(
                r#"{"time":"2026-12-02T04:45:39.123Z","level":"ERROR","msg":"sync error","db":"#
            ),
            "slog's key order: {line}"
        );
    }
}
