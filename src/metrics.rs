//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4), with Litestream
//! 0.5.17's names, types and labels, so that existing dashboards and alerts work unchanged,
//! plus a few of our own (replicated TXID, replication lag, spool bytes, event subscribers).
//!
//! Counters live in one process-wide table (as Prometheus client libraries keep theirs),
//! updated by the database threads, the replica clients and compaction with one short lock
//! per event; gauges that describe the present (file sizes, TXIDs, lag) are read when scraped,
//! so they are never stale. No crate: the format is a few lines of text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use crate::registry::DbView;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Litestream's buckets for `litestream_replica_operation_duration_seconds`.
const DURATION_BUCKETS: [f64; 9] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0];

/// Counters of one database.
#[derive(Default)]
struct DbCounters {
    total_wal_bytes: u64,
    sync_count: u64,
    sync_error_count: u64,
    sync_seconds: f64,
    /// The last sync failed because the local disk is full.
    disk_full: bool,
    /// By checkpoint mode (`PASSIVE`, `TRUNCATE`): count, errors, seconds.
    checkpoints: BTreeMap<&'static str, (u64, u64, f64)>,
    compaction_verify_errors: u64,
}

/// A per-database family: name, type, help, and its value from the counters.
type DbFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DbCounters) -> f64,
);

/// A per-database, per-checkpoint-mode family: name, help, value from (count, errors, seconds).
type ModeFamily = (&'static str, &'static str, fn(&(u64, u64, f64)) -> f64);

/// Counters of one replica operation (`GET`, `PUT`, `LIST`, `DELETE`) on one replica type.
#[derive(Default)]
struct OpStats {
    total: u64,
    bytes: u64,
    /// Observations at or below each of [`DURATION_BUCKETS`] (not yet cumulative).
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
    errors: u64,
}

#[derive(Default)]
struct Table {
    dbs: BTreeMap<String, DbCounters>,
    ops: BTreeMap<(&'static str, &'static str), OpStats>,
}

/// The process's metrics.
pub struct Metrics {
    table: Mutex<Table>,
}

/// The process-wide metrics table.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        table: Mutex::new(Table::default()),
    })
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Counters stay usable after a panic elsewhere: they are plain numbers.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn db(&self, path: &Path, f: impl FnOnce(&mut DbCounters)) {
        let key = path.display().to_string();
        f(self.lock().dbs.entry(key).or_default());
    }

    /// One sync pass of `db` ended: its time, and whether it failed (and for want of space).
    pub fn sync_done(&self, db: &Path, elapsed: Duration, failed: bool, disk_full: bool) {
        self.db(db, |c| {
            c.sync_count += 1;
            c.sync_seconds += elapsed.as_secs_f64();
            if failed {
                c.sync_error_count += 1;
            }
            c.disk_full = disk_full;
        });
    }

    /// WAL bytes turned into an LTX file by a pass of `db`.
    pub fn wal_bytes(&self, db: &Path, bytes: u64) {
        self.db(db, |c| c.total_wal_bytes += bytes);
    }

    /// A checkpoint of `db` in `mode` (`PASSIVE`, `TRUNCATE`) ended.
    pub fn checkpoint_done(&self, db: &Path, mode: &'static str, elapsed: Duration, failed: bool) {
        self.db(db, |c| {
            let e = c.checkpoints.entry(mode).or_default();
            e.0 += 1;
            if failed {
                e.1 += 1;
            }
            e.2 += elapsed.as_secs_f64();
        });
    }

    /// A compacted file of `db` failed its verification before upload.
    pub fn compaction_verify_error(&self, db: &Path) {
        self.db(db, |c| c.compaction_verify_errors += 1);
    }

    /// One replica request: `replica_type` `file` or `s3`, `operation` as Litestream names
    /// them (`GET`, `PUT`, `LIST`, `DELETE`), the bytes it moved, its time, and whether it
    /// failed.
    pub fn replica_op(
        &self,
        replica_type: &'static str,
        operation: &'static str,
        bytes: u64,
        elapsed: Duration,
        failed: bool,
    ) {
        let mut t = self.lock();
        let s = t.ops.entry((replica_type, operation)).or_default();
        if failed {
            s.errors += 1;
            return;
        }
        s.total += 1;
        s.bytes += bytes;
        let secs = elapsed.as_secs_f64();
        s.count += 1;
        s.sum += secs;
        if let Some(i) = DURATION_BUCKETS.iter().position(|&b| secs <= b) {
            s.buckets[i] += 1;
        }
    }

    /// Bytes read from a `GET` after it was counted (the body streams after the request).
    pub fn replica_bytes(&self, replica_type: &'static str, operation: &'static str, bytes: u64) {
        self.lock()
            .ops
            .entry((replica_type, operation))
            .or_default()
            .bytes += bytes;
    }

    /// The exposition: counters from the table, gauges from `dbs` (the registry's views, with
    /// each database's spool directory) read now.
    pub fn render(&self, dbs: &[(DbView, Option<u64>)], subscribers: usize) -> String {
        let mut out = Exposition::default();
        let now = SystemTime::now();
        let t = self.lock();
        let db_label = |v: &DbView| vec![("db", v.path.display().to_string())];

        out.family(
            "litestream_db_size",
            "gauge",
            "The current size of the real DB",
        );
        for (v, _) in dbs {
            out.sample("", &db_label(v), file_size(&v.path) as f64);
        }
        out.family(
            "litestream_wal_size",
            "gauge",
            "The current size of the real WAL",
        );
        for (v, _) in dbs {
            let wal = crate::sqlite::wal_path(&v.path);
            out.sample("", &db_label(v), file_size(&wal) as f64);
        }
        out.family("litestream_txid", "gauge", "The current transaction ID");
        for (v, _) in dbs {
            out.sample("", &db_label(v), v.txid.get() as f64);
        }
        out.family(
            "litestream_total_wal_bytes",
            "counter",
            "Total number of bytes written to shadow WAL",
        );
        for (db, c) in &t.dbs {
            out.sample("", &[("db", db.clone())], c.total_wal_bytes as f64);
        }
        let per_db: [DbFamily; 4] = [
            (
                "litestream_sync_count",
                "counter",
                "Number of sync operations performed",
                |c| c.sync_count as f64,
            ),
            (
                "litestream_sync_error_count",
                "counter",
                "Number of sync errors that have occurred",
                |c| c.sync_error_count as f64,
            ),
            (
                "litestream_sync_seconds",
                "counter",
                "Time spent syncing shadow WAL, in seconds",
                |c| c.sync_seconds,
            ),
            (
                "litestream_disk_full",
                "gauge",
                "Whether replication is paused because the local disk is full",
                |c| f64::from(u8::from(c.disk_full)),
            ),
        ];
        for (name, kind, help, value) in per_db {
            out.family(name, kind, help);
            for (db, c) in &t.dbs {
                out.sample("", &[("db", db.clone())], value(c));
            }
        }
        let per_mode: [ModeFamily; 3] = [
            (
                "litestream_checkpoint_count",
                "Number of checkpoint operations performed",
                |e| e.0 as f64,
            ),
            (
                "litestream_checkpoint_error_count",
                "Number of checkpoint errors that have occurred",
                |e| e.1 as f64,
            ),
            (
                "litestream_checkpoint_seconds",
                "Time spent checkpointing WAL, in seconds",
                |e| e.2,
            ),
        ];
        for (name, help, value) in per_mode {
            out.family(name, "counter", help);
            for (db, c) in &t.dbs {
                for (mode, e) in &c.checkpoints {
                    let labels = [("db", db.clone()), ("mode", mode.to_string())];
                    out.sample("", &labels, value(e));
                }
            }
        }
        out.family(
            "litestream_compaction_verify_error_count",
            "counter",
            "Number of post-compaction verification failures",
        );
        for (db, c) in &t.dbs {
            out.sample("", &[("db", db.clone())], c.compaction_verify_errors as f64);
        }

        let op_labels = |(ty, op): &(&str, &str)| {
            vec![
                ("replica_type", ty.to_string()),
                ("operation", op.to_string()),
            ]
        };
        out.family(
            "litestream_replica_operation_total",
            "counter",
            "The number of replica operations performed",
        );
        for (k, s) in &t.ops {
            out.sample("", &op_labels(k), s.total as f64);
        }
        out.family(
            "litestream_replica_operation_bytes",
            "counter",
            "The number of bytes used by replica operations",
        );
        for (k, s) in &t.ops {
            out.sample("", &op_labels(k), s.bytes as f64);
        }
        out.family(
            "litestream_replica_operation_duration_seconds",
            "histogram",
            "Duration of replica operations by type and operation",
        );
        for (k, s) in &t.ops {
            let mut cumulative = 0;
            for (le, n) in DURATION_BUCKETS.iter().zip(s.buckets) {
                cumulative += n;
                let mut labels = op_labels(k);
                labels.push(("le", format_value(*le)));
                out.sample("_bucket", &labels, cumulative as f64);
            }
            let mut labels = op_labels(k);
            labels.push(("le", "+Inf".into()));
            out.sample("_bucket", &labels, s.count as f64);
            out.sample("_sum", &op_labels(k), s.sum);
            out.sample("_count", &op_labels(k), s.count as f64);
        }
        out.family(
            "litestream_replica_operation_errors_total",
            "counter",
            "Number of replica operation errors by type, operation, and error code",
        );
        for (k, s) in t.ops.iter().filter(|(_, s)| s.errors > 0) {
            let mut labels = op_labels(k);
            labels.push(("code", "error".into()));
            out.sample("", &labels, s.errors as f64);
        }
        drop(t);

        out.family(
            "litestream_replicated_txid",
            "gauge",
            "The newest transaction ID the replica confirmed",
        );
        for (v, _) in dbs {
            out.sample("", &db_label(v), v.replicated_txid.get() as f64);
        }
        out.family(
            "litestream_replication_lag_seconds",
            "gauge",
            "How long the replica has been behind the newest local transaction (0 when caught up)",
        );
        for (v, _) in dbs {
            let lag = v
                .behind_since
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            out.sample("", &db_label(v), lag.as_secs_f64());
        }
        out.family(
            "litestream_spool_bytes",
            "gauge",
            "Bytes of LTX files spooled locally and not yet removed",
        );
        for (v, spool) in dbs {
            out.sample("", &db_label(v), spool.unwrap_or(0) as f64);
        }
        out.family(
            "litestream_event_subscribers",
            "gauge",
            "Open /events streams",
        );
        out.sample("", &[], subscribers as f64);
        process_metrics(&mut out);
        out.text
    }
}

/// The standard `process_*` metrics of Prometheus clients, from `/proc/self` (Linux): what
/// the heap profile does not show (it answers with a pointer here).
fn process_metrics(out: &mut Exposition) {
    // SAFETY: sysconf with a constant name has no preconditions.
    let (page, ticks) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE),
            libc::sysconf(libc::_SC_CLK_TCK),
        )
    };
    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
    {
        out.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        out.sample("", &[], rss * page as f64);
    }
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th of them.
    if let Some(cpu) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks_used = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks_used / ticks as f64)
        })
    {
        out.family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        out.sample("", &[], cpu);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        out.sample("", &[], fds.count() as f64);
    }
}

/// Whether an error comes from a full disk (or quota), anywhere in its chain: such a sync
/// sets `litestream_disk_full`.
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    let full =
        |io: &std::io::Error| matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    e.chain().any(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return full(io);
        }
        matches!(
            cause.downcast_ref::<crate::ltx::Error>(),
            Some(crate::ltx::Error::Io { source, .. }) if full(source)
        )
    })
}

/// A file's size, 0 when it does not exist (a WAL between checkpoints that removed it).
fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The text being built, with the family whose samples follow.
#[derive(Default)]
struct Exposition {
    text: String,
    family: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.family = name.to_string();
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, String)], value: f64) {
        let _ = write!(self.text, "{}{suffix}", self.family);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }
}

/// Label values escape backslash, double quote and newline (exposition format 0.0.4).
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers without a fraction; everything else as Rust prints an f64 (which Prometheus
/// parses).
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_is_well_formed_and_escapes_labels() {
        let m = Metrics {
            table: Mutex::new(Table::default()),
        };
        let db = Path::new("/data/we\"ird\\name\n.db");
        m.sync_done(db, Duration::from_millis(1500), false, false);
        m.sync_done(db, Duration::from_millis(500), true, true);
        m.checkpoint_done(db, "PASSIVE", Duration::from_millis(2), false);
        m.replica_op("s3", "PUT", 100, Duration::from_millis(30), false);
        m.replica_op("s3", "PUT", 50, Duration::from_secs(2), false);
        m.replica_op("s3", "PUT", 0, Duration::from_secs(2), true);
        let text = m.render(&[], 3);
        let label = r#"db="/data/we\"ird\\name\n.db""#;
        for line in [
            format!("litestream_sync_count{{{label}}} 2"),
            format!("litestream_sync_error_count{{{label}}} 1"),
            format!("litestream_sync_seconds{{{label}}} 2"),
            format!("litestream_disk_full{{{label}}} 1"),
            format!("litestream_checkpoint_count{{{label},mode=\"PASSIVE\"}} 1"),
            "litestream_replica_operation_total{replica_type=\"s3\",operation=\"PUT\"} 2".into(),
            "litestream_replica_operation_bytes{replica_type=\"s3\",operation=\"PUT\"} 150".into(),
            "litestream_replica_operation_duration_seconds_bucket{replica_type=\"s3\",operation=\"PUT\",le=\"0.05\"} 1".into(),
            "litestream_replica_operation_duration_seconds_bucket{replica_type=\"s3\",operation=\"PUT\",le=\"1\"} 1".into(),
            "litestream_replica_operation_duration_seconds_bucket{replica_type=\"s3\",operation=\"PUT\",le=\"5\"} 2".into(),
            "litestream_replica_operation_duration_seconds_bucket{replica_type=\"s3\",operation=\"PUT\",le=\"+Inf\"} 2".into(),
            "litestream_replica_operation_duration_seconds_count{replica_type=\"s3\",operation=\"PUT\"} 2".into(),
            "litestream_replica_operation_errors_total{replica_type=\"s3\",operation=\"PUT\",code=\"error\"} 1".into(),
            "litestream_event_subscribers 3".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
        // Every sample follows the HELP and TYPE of its family.
        let mut family = String::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
            } else if !l.starts_with('#') {
                assert!(l.starts_with(&family), "{l} outside {family}");
            }
        }
    }
}
