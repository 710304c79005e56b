//! `GET /metrics` (issue 13): the Prometheus text exposition, parsed here, with Litestream
//! 0.5.17's metric names and labels; values move with writes, syncs and uploads.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// Samples by `name{labels}` as written, and the TYPE of each family.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses exposition format 0.0.4, asserting its shape: every sample after the HELP and
    /// TYPE of its family, a float value, no sample written twice.
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                family = name.to_string();
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "{name} declared twice"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            assert!(series.starts_with(&family), "{line} outside {family}");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "{series} twice"
            );
        }
        Scrape { samples, types }
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing: {:#?}", self.samples.keys()))
    }
}

fn scrape(d: &Daemon) -> Scrape {
    let r = d.request("GET", "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(&r.body)
}

#[test]
fn metrics_have_litestreams_names_and_move_with_writes() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = format!("file://{}", dir.path("replica").display());
    let config = write_config(
        dir.dir.path(),
        &[(&db, &url)],
        "    monitor-interval: 100ms\n",
        "addr: 127.0.0.1:0\n",
    );
    let d = Daemon::start(&config);
    d.sync_wait(&db);
    let before = scrape(&d);
    let label = format!("{{db=\"{}\"}}", db.display());
    for (name, kind) in [
        ("litestream_db_size", "gauge"),
        ("litestream_wal_size", "gauge"),
        ("litestream_total_wal_bytes", "counter"),
        ("litestream_txid", "gauge"),
        ("litestream_sync_count", "counter"),
        ("litestream_sync_error_count", "counter"),
        ("litestream_sync_seconds", "counter"),
        ("litestream_checkpoint_count", "counter"),
        ("litestream_checkpoint_error_count", "counter"),
        ("litestream_checkpoint_seconds", "counter"),
        ("litestream_replica_operation_total", "counter"),
        ("litestream_replica_operation_bytes", "counter"),
        ("litestream_replica_operation_errors_total", "counter"),
        ("litestream_replica_operation_duration_seconds", "histogram"),
        ("litestream_compaction_verify_error_count", "counter"),
        ("litestream_disk_full", "gauge"),
        ("litestream_replicated_txid", "gauge"),
        ("litestream_replication_lag_seconds", "gauge"),
        ("litestream_spool_bytes", "gauge"),
        ("litestream_event_subscribers", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(
            before.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    assert!(before.get(&format!("litestream_db_size{label}")) > 0.0);
    assert_eq!(before.get(&format!("litestream_disk_full{label}")), 0.0);
    assert!(before.get("process_resident_memory_bytes") > 1e6);
    let put = "{replica_type=\"file\",operation=\"PUT\"}";
    let puts_before = before.get(&format!("litestream_replica_operation_total{put}"));

    // Writes, each synced and waited for: the counters move, and the gauges say where the
    // database and its replica stand.
    let mut events = EventStream::unix(&d.socket, "/events");
    assert_eq!(events.status, 200);
    for i in 0..5 {
        conn.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")])
            .unwrap();
        d.sync_wait(&db);
    }
    let list = d.request("GET", "/list", None).json();
    let txid = list["databases"][0]["txid"].as_u64().unwrap() as f64;
    let after = scrape(&d);
    assert!(
        after.get(&format!("litestream_sync_count{label}"))
            >= before.get(&format!("litestream_sync_count{label}")) + 5.0
    );
    assert!(
        after.get(&format!("litestream_total_wal_bytes{label}"))
            > before.get(&format!("litestream_total_wal_bytes{label}"))
    );
    assert_eq!(after.get(&format!("litestream_txid{label}")), txid);
    assert_eq!(
        after.get(&format!("litestream_replicated_txid{label}")),
        txid
    );
    assert_eq!(
        after.get(&format!("litestream_replication_lag_seconds{label}")),
        0.0
    );
    assert!(after.get(&format!("litestream_replica_operation_total{put}")) >= puts_before + 5.0);
    assert!(after.get(&format!("litestream_replica_operation_bytes{put}")) > 0.0);
    let count = after.get(&format!(
        "litestream_replica_operation_duration_seconds_count{put}"
    ));
    let inf = after.get(
        "litestream_replica_operation_duration_seconds_bucket{replica_type=\"file\",operation=\"PUT\",le=\"+Inf\"}",
    );
    assert_eq!(count, inf);
    assert_eq!(after.get("litestream_event_subscribers"), 1.0);
    assert!(events.next_event().is_some());

    // The same on `addr:`.
    let r = tcp_http(&tcp_addr(&d), "GET", "/metrics", "");
    assert_eq!(r.status, 200);
    let tcp = Scrape::parse(&r.body);
    assert_eq!(tcp.get(&format!("litestream_txid{label}")), txid);
    assert_eq!(d.terminate(), 0);
}

#[test]
fn a_failing_replica_shows_in_errors_and_lag() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let replica = dir.path("replica");
    let url = format!("file://{}", replica.display());
    let d = Daemon::start(&write_config(
        dir.dir.path(),
        &[(&db, &url)],
        "    monitor-interval: 100ms\n",
        "",
    ));
    d.sync_wait(&db);
    // Uploads fail from here on: the level-0 directory becomes a file.
    let down = Blocked::dir(&replica.join("ltx/0"));
    conn.execute("INSERT INTO t(v) VALUES ('stuck')", [])
        .unwrap();
    let label = format!("{{db=\"{}\"}}", db.display());
    let errors = "litestream_replica_operation_errors_total{replica_type=\"file\",operation=\"PUT\",code=\"error\"}";
    wait_until(
        Duration::from_secs(20),
        "a counted upload error and a lag",
        || {
            let s = scrape(&d);
            s.samples.get(errors).is_some_and(|&n| n >= 1.0)
                && s.get(&format!("litestream_replication_lag_seconds{label}")) > 0.0
                && s.get(&format!("litestream_spool_bytes{label}")) > 0.0
        },
    );
    let s = scrape(&d);
    assert!(
        s.get(&format!("litestream_replicated_txid{label}"))
            < s.get(&format!("litestream_txid{label}"))
    );
    // The replica comes back: the lag returns to 0.
    down.unblock();
    d.sync_wait(&db);
    assert_eq!(
        scrape(&d).get(&format!("litestream_replication_lag_seconds{label}")),
        0.0
    );
    assert_eq!(d.terminate(), 0);
}
