//! What a long restore shows: a progress line on a terminal, redrawn in place, and one
//! summary line at the end, as users of `cp` and `rsync` expect.
//!
//! Progress counts the replica's bytes read (the LTX files, as listed, so that the total and
//! an ETA are known from the start) and the files applied. It goes to stderr only when stderr
//! is a terminal (never into a log file or a pipe), at most [`REDRAW`] apart, each time over
//! the previous one (`\r`, then erase to the end of the line), and is erased when the restore
//! ends. The summary is a log line (see [`summary`]), so it appears on terminals and in logs.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use super::{Plan, Report};

/// The least time between two redraws (4 a second), and before the first one: a restore
/// that takes less shows no progress at all.
pub const REDRAW: Duration = Duration::from_millis(250);

/// How far a restore is: files applied and replica bytes read (the file in progress counts
/// with what was read of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub files: usize,
    pub bytes: u64,
}

impl Done {
    /// What the whole plan amounts to.
    pub fn total(plan: &Plan) -> Done {
        Done {
            files: plan.files.len(),
            bytes: plan.files.iter().map(|f| f.size).sum(),
        }
    }
}

/// The progress line for `done` out of `total` after `elapsed` (pure, for tests):
/// `app.db: 52.4 MiB of 200.0 MiB (26%), 3/12 files, 48.1 MiB/s, ETA 3s`.
pub fn render(name: &str, done: Done, total: Done, elapsed: Duration) -> String {
    let percent = match total.bytes {
        0 => 100,
        t => (u128::from(done.bytes.min(t)) * 100 / u128::from(t)) as u64,
    };
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        done.bytes as f64 / secs
    } else {
        0.0
    };
    let eta = if rate > 0.0 {
        let left = total.bytes.saturating_sub(done.bytes) as f64 / rate;
        format_eta(Duration::from_secs_f64(left.min(1e9)))
    } else {
        "--".to_string()
    };
    format!(
        "{name}: {} of {} ({percent}%), {}/{} files, {}/s, ETA {eta}",
        human_bytes(done.bytes),
        human_bytes(total.bytes),
        done.files,
        total.files,
        human_bytes(rate as u64),
    )
}

/// `512 B`, `1.5 KiB`, `52.4 MiB`, `1.2 GiB`: binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `7s`, `2m05s`, `1h02m`: whole seconds, as long as the estimate is worth reading.
fn format_eta(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The progress line on stderr while a restore runs; silent unless stderr is a terminal.
pub struct Meter {
    name: String,
    total: Done,
    started: Instant,
    last: Option<Instant>,
    /// Stderr when it is a terminal; `None` draws nothing.
    out: Option<io::Stderr>,
    drawn: bool,
}

impl Meter {
    /// A meter for restoring `plan` into the file `name`, drawing only if stderr is a
    /// terminal.
    pub fn stderr(name: &str, plan: &Plan) -> Meter {
        let err = io::stderr();
        let out = err.is_terminal().then_some(err);
        Meter {
            name: name.to_string(),
            total: Done::total(plan),
            started: Instant::now(),
            last: None,
            out,
            drawn: false,
        }
    }

    /// Notes how far the restore is; redraws when the last draw is [`REDRAW`] old.
    pub fn update(&mut self, done: Done) {
        let Some(out) = &self.out else {
            return;
        };
        let now = Instant::now();
        let since = now.duration_since(self.last.unwrap_or(self.started));
        if since < REDRAW {
            return;
        }
        self.last = Some(now);
        let line = render(&self.name, done, self.total, now - self.started);
        let mut out = out.lock();
        let _ = write!(out, "\r{line}\x1b[K");
        let _ = out.flush();
        self.drawn = true;
    }

    /// Erases the progress line, so that what follows starts on a clean line.
    pub fn finish(&mut self) {
        if let (Some(out), true) = (&self.out, self.drawn) {
            let mut out = out.lock();
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The worked-out figures of the line a finished restore logs: the database's size, how long
/// the restore took and how fast it went.
pub fn summary(report: &Report, elapsed: Duration) -> Summary {
    let size = u64::from(report.commit) * u64::from(report.page_size);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { size as f64 / secs } else { 0.0 };
    Summary {
        size: human_bytes(size),
        elapsed: crate::duration::format(Duration::from_millis(elapsed.as_millis() as u64)),
        rate: format!("{}/s", human_bytes(rate as u64)),
    }
}

/// The figures of the summary line that are worked out rather than read off the report.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// The database's size, e.g. `10.0 MiB`.
    pub size: String,
    /// How long the restore took, as Go prints a duration.
    pub elapsed: String,
    /// Bytes of database per second, e.g. `20.0 MiB/s`.
    pub rate: String,
}

/// Logs the one line a finished restore ends with: `msg="restore complete" db=... txid=...
/// pages=... page_size=... size=... files=... elapsed=... rate=...`.
pub fn log_summary(output: &str, report: &Report, elapsed: Duration) {
    let s = summary(report, elapsed);
    log::info!(
        db = output,
        txid:% = report.txid,
        pages = report.commit,
        page_size = report.page_size,
        size = s.size.as_str(),
        files = report.files,
        elapsed = s.elapsed.as_str(),
        rate = s.rate.as_str();
        "restore complete"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{Checksum, TxId};

    #[test]
    fn progress_line_shows_bytes_files_rate_and_eta() {
        let total = Done {
            files: 12,
            bytes: 200 << 20,
        };
        let done = Done {
            files: 3,
            bytes: 50 << 20,
        };
        assert_eq!(
            render("app.db", done, total, Duration::from_secs(2)),
            "app.db: 50.0 MiB of 200.0 MiB (25%), 3/12 files, 25.0 MiB/s, ETA 6s"
        );
        // Nothing read yet: no rate, no estimate.
        assert_eq!(
            render("app.db", Done::default(), total, Duration::ZERO),
            "app.db: 0 B of 200.0 MiB (0%), 0/12 files, 0 B/s, ETA --"
        );
        // Slow and long: minutes, then hours.
        let slow = render(
            "a",
            Done {
                files: 0,
                bytes: 1 << 20,
            },
            total,
            Duration::from_secs(1),
        );
        assert!(slow.ends_with("1.0 MiB/s, ETA 3m19s"), "{slow}");
        let slower = render(
            "a",
            Done {
                files: 0,
                bytes: 10,
            },
            total,
            Duration::from_secs(1),
        );
        assert!(slower.ends_with("10 B/s, ETA 5825h25m"), "{slower}");
        // An empty plan is complete.
        assert!(render("a", Done::default(), Done::default(), Duration::ZERO).contains("(100%)"));
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn summary_names_txid_pages_size_and_time() {
        let report = Report {
            txid: TxId::new(0xa1),
            page_size: 4096,
            commit: 2560,
            checksum: Checksum(0),
            files: 4,
            unverified_files: 0,
        };
        assert_eq!(
            summary(&report, Duration::from_millis(500)),
            Summary {
                size: "10.0 MiB".into(),
                elapsed: "500ms".into(),
                rate: "20.0 MiB/s".into(),
            }
        );
    }

    #[test]
    fn a_meter_off_a_terminal_draws_nothing_and_never_reads_the_clock_for_it() {
        let plan = Plan {
            files: vec![],
            txid: TxId::new(1),
        };
        let mut m = Meter::stderr("x", &plan);
        // Under `cargo test` stderr is captured or a pipe in CI; only check the silent path.
        m.out = None;
        m.started -= REDRAW * 2;
        m.update(Done::default());
        assert!(!m.drawn && m.last.is_none());
    }
}
