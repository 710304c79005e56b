//! The log backend: one line per event, `time=... level=... msg...`, as Litestream's text
//! handler prints it, to stdout (Litestream's default) or stderr; JSON lines on request.

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
    let json = format == LogFormat::Json;
    let _ = env_logger::Builder::new()
        .filter_level(filter)
        // Dependencies log at debug about every request; keep their warnings only.
        .filter_module("tiny_http", log::LevelFilter::Warn)
        .filter_module("rustls", log::LevelFilter::Warn)
        .filter_module("reqwest", log::LevelFilter::Warn)
        .target(target)
        .format(move |buf, record| {
            let time = crate::timefmt::rfc3339_ms(crate::timefmt::now_ms());
            let level = match record.level() {
                log::Level::Warn => "WARN",
                l => l.as_str(),
            };
            if json {
                let line = serde_json::json!({"time": time, "level": level, "msg": record.args().to_string()});
                writeln!(buf, "{line}")
            } else {
                writeln!(buf, "time={time} level={level} {}", record.args())
            }
        })
        .try_init();
}
