//! Logs a machine can read (issue 13): every line `replicate` prints is a Go slog line
//! (`time=... level=INFO msg="..." key=value`, one `msg`, no key twice) and, with
//! `logging: {type: json}`, a JSON object with the same keys.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// A line's keys and values in the order printed.
type Pairs = Vec<(String, String)>;

/// Runs a daemon with short compaction intervals, an unknown config key, writes and a sync,
/// until it logged a compaction and a snapshot; stops it and returns everything it printed.
fn daemon_log(logging: &str) -> String {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = format!("file://{}", dir.path("replica").display());
    let top = format!(
        "levels:\n  - interval: 1s\nsnapshot:\n  interval: 1s\n  retention: 1h\n\
         logging:\n  level: debug\n{logging}"
    );
    let config = write_config(
        dir.dir.path(),
        &[(&db, &url)],
        "    frobnicate: 1\n    monitor-interval: 100ms\n",
        &top,
    );
    let d = Daemon::start(&config);
    for i in 0..20 {
        conn.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    d.sync_wait(&db);
    wait_until(
        Duration::from_secs(30),
        "a compaction and a snapshot",
        || {
            let log = d.log_text();
            log.contains("compaction complete") && log.contains("snapshot complete")
        },
    );
    let log_path = d.log.clone();
    assert_eq!(d.terminate(), 0);
    std::fs::read_to_string(log_path).unwrap()
}

/// Go's `strconv.Unquote` for the escapes slog's quoting writes.
fn unquote(chars: &mut std::iter::Peekable<std::str::Chars>, line: &str) -> String {
    let mut out = String::new();
    loop {
        let c = chars
            .next()
            .unwrap_or_else(|| panic!("unterminated quote: {line}"));
        match c {
            '"' => return out,
            '\\' => {
                let e = chars.next().unwrap_or_else(|| panic!("bad escape: {line}"));
                let hex = |chars: &mut std::iter::Peekable<std::str::Chars>, n: usize| {
                    let digits: String = chars.take(n).collect();
                    char::from_u32(u32::from_str_radix(&digits, 16).unwrap()).unwrap()
                };
                out.push(match e {
                    '"' => '"',
                    '\\' => '\\',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'v' => '\u{b}',
                    'x' => hex(chars, 2),
                    'u' => hex(chars, 4),
                    'U' => hex(chars, 8),
                    other => panic!("unknown escape \\{other}: {line}"),
                });
            }
            c => out.push(c),
        }
    }
}

/// One logfmt line as slog's TextHandler writes it: `key=value` pairs separated by one
/// space, a value bare (no space, `=` or `"`) or Go-quoted.
fn parse_logfmt(line: &str) -> Pairs {
    let mut pairs = vec![];
    let mut chars = line.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert!(
            !key.is_empty() && !key.contains([' ', '"']),
            "bad key {key:?}: {line}"
        );
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            let v = unquote(&mut chars, line);
            match chars.next() {
                None | Some(' ') => {}
                Some(c) => panic!("{c:?} after a quoted value: {line}"),
            }
            v
        } else {
            let v: String = chars.by_ref().take_while(|&c| c != ' ').collect();
            assert!(
                !v.is_empty() && !v.contains(['=', '"']),
                "a bare value needing quotes {v:?}: {line}"
            );
            v
        };
        pairs.push((key, value));
    }
    pairs
}

/// Checks what every line has: `time`, `level`, `msg` first, in that order, and no key
/// twice.
fn check_shape(line: &str, keys: &[&str], level: &str) {
    assert_eq!(keys.get(..3), Some(&["time", "level", "msg"][..]), "{line}");
    let unique: BTreeSet<&&str> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a key twice: {line}");
    assert!(
        ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
        "level {level:?}: {line}"
    );
}

/// The key sets seen for each message (the lines each message was logged with).
type KeysByMsg = BTreeMap<String, BTreeSet<Vec<String>>>;

/// The messages both runs must print, whatever the timing.
const EXPECTED: &[&str] = &[
    "litestream",
    "config warning",
    "starting compaction monitor",
    "replicating to",
    "control socket listening",
    "compaction complete",
    "snapshot complete",
    "signal received, litestream shutting down",
    "litestream shut down",
];

fn assert_expected(by_msg: &KeysByMsg, log: &str) {
    for msg in EXPECTED {
        assert!(by_msg.contains_key(*msg), "no {msg:?} line: {log}");
    }
}

#[test]
fn text_lines_are_slog_lines_and_json_lines_carry_the_same_keys() {
    // Text (the default).
    let log = daemon_log("");
    let mut text_keys = KeysByMsg::new();
    let mut compaction = None;
    for line in log.lines() {
        let pairs = parse_logfmt(line);
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        check_shape(line, &keys, &pairs[1].1);
        let msg = pairs[2].1.clone();
        if msg == "compaction complete" {
            compaction = Some(pairs.clone());
        }
        if msg == "config warning" {
            let get = |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(pairs[1].1, "WARN", "{line}");
            assert!(
                get("file").is_some_and(|f| f.ends_with("/litestream.yml")),
                "{line}"
            );
            assert_eq!(get("line"), Some("5"), "{line}");
            assert_eq!(get("key"), Some("dbs[0].frobnicate"), "{line}");
            assert_eq!(
                get("warning"),
                Some(r#"unknown key "dbs[0].frobnicate" (ignored)"#),
                "{line}"
            );
            assert!(line.contains(r#"warning="unknown key \"dbs[0].frobnicate\" (ignored)""#));
        }
        text_keys
            .entry(msg)
            .or_default()
            .insert(keys.iter().map(|k| k.to_string()).collect());
    }
    assert_expected(&text_keys, &log);
    // The compaction level is not a second `level`.
    let compaction = compaction.unwrap();
    let keys: Vec<&str> = compaction.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "time",
            "level",
            "msg",
            "db",
            "compaction_level",
            "txid.min",
            "txid.max",
            "size",
            "files"
        ],
        "{compaction:?}"
    );
    assert_eq!(compaction[1].1, "INFO");
    assert_eq!(compaction[4].1, "1");
    assert!(
        Path::new(&compaction[3].1).ends_with("app.db"),
        "{compaction:?}"
    );
    assert_eq!(
        compaction[5].1.len(),
        16,
        "txid as 16 hex digits: {compaction:?}"
    );

    // JSON.
    let log = daemon_log("  type: json\n");
    let mut json_keys = KeysByMsg::new();
    for line in log.lines() {
        let Entries(entries) = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        let level = entries[1].1.as_str().unwrap_or_default();
        check_shape(line, &keys, level);
        let msg = entries[2].1.as_str().expect("msg is a string").to_string();
        // A whole logfmt line inside `msg` was the old shape.
        assert!(!msg.contains("level=") && !msg.contains("msg="), "{line}");
        if msg == "compaction complete" {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["compaction_level"], 1, "a number in JSON: {line}");
            assert!(v["size"].is_u64(), "{line}");
            assert!(v["txid.min"].is_string(), "{line}");
        }
        json_keys
            .entry(msg)
            .or_default()
            .insert(keys.iter().map(|k| k.to_string()).collect());
    }
    assert_expected(&json_keys, &log);
    for msg in EXPECTED {
        assert_eq!(
            text_keys[*msg], json_keys[*msg],
            "{msg:?}: the same keys in text and JSON"
        );
    }
}

/// A JSON object's entries in order, duplicates kept (a `Map` would keep one silently).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = vec![];
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}
