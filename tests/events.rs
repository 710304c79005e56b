//! The event stream (issue 4, seed 003): `GET /events` on the socket and on `addr:`, with a
//! real writer: `init` first, one `tx` per LTX file whose txID, checksum and size match the
//! replica and a restore at that txid; `replicated`; `?db=`; a subscriber that never reads;
//! a hundred subscribers at once; shutdown; and `litestream events`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const INIT: &str = r#"{"type":"init","data":{"isPrimary":true}}"#;

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap(), 16).unwrap()
}

/// Opens a stream and checks its head and its first line: `init`, always.
fn subscribe(open: impl FnOnce() -> EventStream) -> EventStream {
    let mut s = open();
    assert_eq!(s.status, 200);
    assert_eq!(s.header("Content-Type"), Some("application/json"));
    assert_eq!(s.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(s.next_line().as_deref(), Some(INIT));
    s
}

/// Checks one `tx` line against the seed's shape, byte for byte in its field order.
#[track_caller]
fn check_tx_line(line: &str, db: &Path) -> Value {
    let name = db.file_name().unwrap().to_str().unwrap();
    assert!(
        line.starts_with(&format!(r#"{{"type":"tx","db":"{name}","data":{{"txID":""#)),
        "{line}"
    );
    let e: Value = serde_json::from_str(line).unwrap();
    let d = &e["data"];
    let (txid, sum, ts) = (
        d["txID"].as_str().unwrap(),
        d["postApplyChecksum"].as_str().unwrap(),
        d["timestamp"].as_str().unwrap(),
    );
    let lower_hex = |s: &str| {
        s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(lower_hex(txid) && lower_hex(sum), "{line}");
    // RFC 3339 UTC with milliseconds: 2023-09-06T19:12:34.985Z.
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && &ts[19..20] == "." && &ts[10..11] == "T",
        "{line}"
    );
    assert!(d["commit"].as_u64().unwrap() >= 2, "{line}");
    assert_eq!(
        e,
        json!({"type": "tx", "db": name, "data": {"txID": txid, "postApplyChecksum": sum,
            "pageSize": 4096, "commit": d["commit"], "timestamp": ts, "path": db.display().to_string()}})
    );
    e
}

/// Per database: the `tx` events and the `replicated` txids read so far, in order.
#[derive(Default, Debug)]
struct Seen {
    tx: Vec<Value>,
    replicated: Vec<u64>,
}

/// Reads `s` until every database in `until` has a `replicated` event at its txid.
fn collect(
    s: &mut EventStream,
    dbs: &[&Path],
    until: &BTreeMap<String, u64>,
) -> BTreeMap<String, Seen> {
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let done = |seen: &BTreeMap<String, Seen>| {
        until.iter().all(|(p, t)| {
            seen.get(p)
                .is_some_and(|s| s.replicated.last().is_some_and(|r| r >= t))
        })
    };
    while !done(&seen) {
        let line = s
            .next_line()
            .unwrap_or_else(|| panic!("stream ended ({:?}) early: {seen:?}", s.end));
        let e: Value = serde_json::from_str(&line).unwrap();
        let path = e["data"]["path"].as_str().unwrap().to_string();
        let db = dbs
            .iter()
            .find(|d| d.display().to_string() == path)
            .unwrap_or_else(|| panic!("event for an unknown database: {line}"));
        let entry = seen.entry(path.clone()).or_default();
        match e["type"].as_str() {
            Some("tx") => entry.tx.push(check_tx_line(&line, db)),
            Some("replicated") => {
                assert_eq!(
                    e,
                    json!({"type": "replicated", "db": db.file_name().unwrap().to_str().unwrap(),
                        "data": {"txID": e["data"]["txID"], "path": path}})
                );
                entry.replicated.push(hex(&e["data"]["txID"]));
            }
            _ => panic!("unexpected event {line}"),
        }
    }
    seen
}

#[test]
fn tx_events_match_txid_the_replica_and_restored_checksums() {
    let dir = TestDir::new();
    let (app, other) = (dir.path("app.db"), dir.path("other.db"));
    insert(&app);
    insert(&other);
    let (app_replica, other_replica) = (dir.path("replica-app"), dir.path("replica-other"));
    let config = write_config(
        dir.dir.path(),
        &[
            (&app, &file_url(&app_replica)),
            (&other, &file_url(&other_replica)),
        ],
        "    monitor-interval: 200ms\n",
        "addr: 127.0.0.1:0\n",
    );
    let d = Daemon::start(&config);
    let addr = tcp_addr(&d);
    // The first sync and its upload are over before anyone subscribes: every stream then
    // sees the same events.
    for db in [&app, &other] {
        d.sync_wait(db);
    }

    let app_path = app.display().to_string();
    let mut all = subscribe(|| EventStream::unix(&d.socket, "/events"));
    let mut only_app =
        subscribe(|| EventStream::unix(&d.socket, &format!("/events?db={app_path}")));
    // The name the events carry in `db` selects the same database as its path.
    let mut by_name = subscribe(|| EventStream::unix(&d.socket, "/events?db=app.db"));
    let mut tcp = subscribe(|| EventStream::tcp(&addr, "/events"));
    // An unknown database is a 404, by name or by path, not an open empty stream.
    let r = d.request("GET", "/events?db=nothing.db", None);
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            json!({"error": "database not found", "details": "no registered database is named \"nothing.db\""})
        )
    );
    let r = d.request("GET", "/events?db=/nowhere/app.db", None);
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            json!({"error": "database not found", "details": "/nowhere/app.db"})
        )
    );

    // Writers on both databases, then a final waited sync of each.
    let start = txid_of(&d, &app);
    let w1 = Writer::start(&app, 100);
    let w2 = Writer::start(&other, 50);
    wait_until(WAIT, "a few transactions", || {
        txid_of(&d, &app) >= start + 6
    });
    w1.stop();
    w2.stop();
    let mut finals = BTreeMap::new();
    for db in [&app, &other] {
        let v = d.sync_wait(db);
        assert_eq!(v["txid"], v["replicated_txid"]);
        finals.insert(db.display().to_string(), v["txid"].as_u64().unwrap());
    }
    assert_eq!(
        finals[&app_path],
        txid_of(&d, &app),
        "the same txid /txid reports"
    );

    let dbs = [app.as_path(), other.as_path()];
    let via_filter = collect(
        &mut only_app,
        &dbs,
        &BTreeMap::from([(app_path.clone(), finals[&app_path])]),
    );
    assert_eq!(
        via_filter.len(),
        1,
        "?db= gives only that database: {via_filter:?}"
    );
    let via_name = collect(
        &mut by_name,
        &dbs,
        &BTreeMap::from([(app_path.clone(), finals[&app_path])]),
    );
    assert_eq!(
        via_name.len(),
        1,
        "?db=app.db gives only that database: {via_name:?}"
    );
    let via_tcp = collect(&mut tcp, &dbs, &finals);
    let via_socket = collect(&mut all, &dbs, &finals);

    for (db, replica) in [(&app, &app_replica), (&other, &other_replica)] {
        let path = db.display().to_string();
        let seen = &via_tcp[&path];
        let txids: Vec<u64> = seen.tx.iter().map(|e| hex(&e["data"]["txID"])).collect();
        assert!(txids.len() >= 2, "{path}: {txids:?}");
        // One tx per LTX file: consecutive txids, ending at the one /txid reports.
        for w in txids.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{path}: {txids:?}");
        }
        assert_eq!(*txids.last().unwrap(), finals[&path]);
        for t in &txids {
            assert!(
                replica
                    .join(format!("ltx/0/{t:016x}-{t:016x}.ltx"))
                    .exists(),
                "{path}: no replica file for txid {t:016x}"
            );
        }
        // `replicated` moves forward, never past what was written, and ends at the last txid.
        for w in seen.replicated.windows(2) {
            assert!(w[1] > w[0], "{path}: {:?}", seen.replicated);
        }
        assert!(seen.replicated.iter().all(|r| r <= txids.last().unwrap()));
        assert_eq!(seen.replicated.last(), Some(&finals[&path]));
        assert_eq!(
            seen.tx, via_socket[&path].tx,
            "the socket and TCP streams agree"
        );
        assert_eq!(seen.replicated, via_socket[&path].replicated);
        if db == &app {
            assert_eq!(
                seen.tx, via_filter[&path].tx,
                "?db= has every event of its database"
            );
            assert_eq!(seen.tx, via_name[&path].tx, "so has ?db=<name>");
        }

        // postApplyChecksum and commit are those of the database restored at that txid.
        let picks: Vec<&Value> = if seen.tx.len() <= 4 {
            seen.tx.iter().collect()
        } else {
            let n = seen.tx.len();
            vec![
                &seen.tx[0],
                &seen.tx[n / 3],
                &seen.tx[2 * n / 3],
                &seen.tx[n - 1],
            ]
        };
        for e in picks {
            let txid = e["data"]["txID"].as_str().unwrap();
            let out = dir.path(&format!(
                "restored-{}-{txid}.db",
                db.file_name().unwrap().to_str().unwrap()
            ));
            restore(&file_url(replica), &out, &["-txid", txid]);
            let (pages, sum) = litestream::restore::database_checksum(&out).unwrap();
            assert_eq!(
                sum.to_string(),
                e["data"]["postApplyChecksum"].as_str().unwrap(),
                "{path} at {txid}"
            );
            assert_eq!(
                u64::from(pages),
                e["data"]["commit"].as_u64().unwrap(),
                "{path} at {txid}"
            );
            assert_eq!(integrity(&out), "ok");
        }
    }

    // The TCP listener serves the read-only endpoints, not the control ones.
    assert_eq!(tcp_http(&addr, "GET", "/list", "").status, 200);
    let r = tcp_http(&addr, "POST", "/register", "{}");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "not found", "details": "/register is only served on the control socket"})
    );
}

#[test]
fn a_subscriber_that_never_reads_is_cut_off_while_replication_and_others_go_on() {
    let OneDb {
        dir: _dir,
        db,
        config,
        ..
    } = OneDb::with_config("    monitor-interval: 2ms\n", "");
    insert(&db);
    let d = Daemon::start(&config);
    d.sync_wait(&db);

    let slow = subscribe(|| EventStream::unix(&d.socket, "/events"));
    let fast = subscribe(|| EventStream::unix(&d.socket, "/events"));
    let last_fast = Arc::new(AtomicU64::new(0));
    let reader = {
        let last_fast = last_fast.clone();
        std::thread::spawn(move || {
            let mut fast = fast;
            while let Some(e) = fast.next_event() {
                if e["type"] == "tx" {
                    last_fast.store(hex(&e["data"]["txID"]), Ordering::SeqCst);
                }
            }
            fast.end
        })
    };
    let writer = Writer::start(&db, 1000);
    wait_until(
        Duration::from_secs(60),
        "the slow subscriber to be cut off",
        || {
            d.log_text()
                .contains("msg=\"events subscriber fell behind; disconnecting it\" subscriber=")
        },
    );
    let cut_at = txid_of(&d, &db);
    // Replication goes on, and so does the subscriber that reads.
    wait_until(
        WAIT,
        "replication and the other subscriber to go on",
        || last_fast.load(Ordering::SeqCst) > cut_at + 20,
    );
    let v = d.sync_wait(&db);
    assert!(v["txid"].as_u64().unwrap() > cut_at + 20);
    writer.stop();
    let end = d.sync_wait(&db)["txid"].as_u64().unwrap();
    wait_until(WAIT, "the reading subscriber to see the end", || {
        last_fast.load(Ordering::SeqCst) == end
    });

    // The slow one finally reads: what was queued for it, then the end of its stream.
    let mut slow = slow;
    let (mut count, mut last) = (0, 0);
    while let Some(e) = slow.next_event() {
        count += 1;
        if e["type"] == "tx" {
            last = hex(&e["data"]["txID"]);
        }
    }
    assert_eq!(
        slow.end,
        Some(StreamEnd::Terminated),
        "its stream was ended properly"
    );
    assert!(count >= 1024, "it got what was queued: {count}");
    assert!(last < end, "it was cut off before the end ({last} < {end})");
    assert_eq!(d.terminate(), 0);
    assert_eq!(reader.join().unwrap(), Some(StreamEnd::Terminated));
}

#[test]
fn a_hundred_subscribers_at_once_all_get_init_and_events() {
    let OneDb {
        dir: _dir,
        db,
        config,
        ..
    } = OneDb::with_config("", "");
    insert(&db);
    let d = Daemon::start(&config);
    d.sync_wait(&db);
    let n = 100;
    let barrier = Arc::new(Barrier::new(n + 1));
    let (init_tx, init_rx) = crossbeam_channel::unbounded();
    let (tx_tx, tx_rx) = crossbeam_channel::unbounded();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, socket, init_tx, tx_tx) = (
                barrier.clone(),
                d.socket.clone(),
                init_tx.clone(),
                tx_tx.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let mut s = subscribe(|| EventStream::unix(&socket, "/events"));
                init_tx.send(()).unwrap();
                let e = s.until("a tx event", |e| e["type"] == "tx");
                tx_tx.send(hex(&e["data"]["txID"])).unwrap();
            })
        })
        .collect();
    barrier.wait();
    for i in 0..n {
        init_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("only {i} of {n} subscribers got init"));
    }
    insert(&db);
    let t = d.sync_wait(&db)["txid"].as_u64().unwrap();
    for i in 0..n {
        let got = tx_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("only {i} of {n} subscribers got the tx event"));
        assert_eq!(got, t);
    }
    for t in threads {
        t.join().unwrap();
    }
    // The daemon still answers after the burst.
    assert_eq!(d.request("GET", "/list", None).status, 200);
}

#[test]
fn shutdown_ends_every_stream_cleanly() {
    let OneDb {
        dir: _dir,
        db,
        config,
        ..
    } = OneDb::with_config("", "addr: 127.0.0.1:0\n");
    insert(&db);
    let d = Daemon::start(&config);
    let addr = tcp_addr(&d);
    d.sync_wait(&db);
    let filter = format!("/events?db={}", db.display());
    let mut streams = vec![
        subscribe(|| EventStream::unix(&d.socket, "/events")),
        subscribe(|| EventStream::unix(&d.socket, "/events")),
        subscribe(|| EventStream::unix(&d.socket, &filter)),
        subscribe(|| EventStream::tcp(&addr, "/events")),
        subscribe(|| EventStream::tcp(&addr, &filter)),
    ];
    insert(&db);
    let t = d.sync_wait(&db)["txid"].as_u64().unwrap();
    for s in &mut streams {
        s.until("the tx event", |e| {
            e["type"] == "tx" && hex(&e["data"]["txID"]) == t
        });
    }
    // A write just before SIGTERM: the final sync's events reach the streams before they end.
    insert(&db);
    let socket = d.socket.clone();
    assert_eq!(d.terminate(), 0);
    for (i, s) in streams.iter_mut().enumerate() {
        let mut last_tx = 0;
        while let Some(e) = s.next_event() {
            if e["type"] == "tx" {
                last_tx = hex(&e["data"]["txID"]);
            }
        }
        assert_eq!(
            s.end,
            Some(StreamEnd::Terminated),
            "stream {i} ended without its terminator"
        );
        assert_eq!(last_tx, t + 1, "stream {i} saw the final sync");
    }
    assert!(!socket.exists());
}

#[test]
fn events_cli_prints_the_stream_and_exits_when_the_daemon_stops() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    insert(&db);
    let other = dir.path("other.db");
    insert(&other);
    let config = write_config(
        dir.dir.path(),
        &[
            (&db, &file_url(&dir.path("replica"))),
            (&other, &file_url(&dir.path("replica-o"))),
        ],
        "",
        "",
    );
    let d = Daemon::start(&config);
    d.sync_wait(&db);
    d.sync_wait(&other);
    let mut child = Command::new(bin())
        .current_dir(dir.dir.path())
        .args(["events", "-socket"])
        .arg(&d.socket)
        .args(["-db", "app.db"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = crossbeam_channel::unbounded();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            lines_tx.send(line.unwrap()).unwrap();
        }
    });
    let next = || {
        lines
            .recv_timeout(WAIT)
            .expect("a line from `litestream events`")
    };
    assert_eq!(next(), INIT);
    insert(&other);
    d.sync_wait(&other);
    insert(&db);
    let t = d.sync_wait(&db)["txid"].as_u64().unwrap();
    let line = next();
    let e = check_tx_line(&line, &db);
    assert_eq!(
        hex(&e["data"]["txID"]),
        t,
        "only app.db (the relative -db resolved): {line}"
    );
    assert_eq!(
        next(),
        format!(
            r#"{{"type":"replicated","db":"app.db","data":{{"txID":"{t:016x}","path":"{}"}}}}"#,
            db.display()
        )
    );
    assert_eq!(d.terminate(), 0);
    let mut status = None;
    wait_until(WAIT, "`litestream events` to exit after the daemon", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().all(|l| l.contains(r#""db":"app.db""#)),
        "{rest:?}"
    );
}

/// A subscriber that stops reading for good does not hold a thread and a queue until the
/// daemon exits: once its connection has been unable to take a write for the deadline (15 s)
/// its stream ends. (The socket itself stays with tiny_http until the client closes it.)
#[test]
fn a_subscriber_that_never_reads_has_its_stream_ended_after_the_deadline() {
    let OneDb {
        dir: _dir,
        db,
        config,
        ..
    } = OneDb::with_config("    monitor-interval: 2ms\n", "");
    insert(&db);
    let d = Daemon::start(&config);
    d.sync_wait(&db);
    let mut silent = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    silent
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let writer = Writer::start(&db, 1000);
    wait_until(
        Duration::from_secs(120),
        "the silent subscriber's stream to end",
        || {
            d.log_text().contains(
                "msg=\"events subscriber has not read in time; ending its stream\" deadline=15s",
            )
        },
    );
    writer.stop();
    // Replication went on all along, and a new subscriber is served.
    insert(&db);
    d.sync_wait(&db);
    let mut fresh = EventStream::unix(&d.socket, "/events");
    assert_eq!(fresh.next_event().unwrap()["type"], "init");
    drop(silent);
    assert_eq!(d.terminate(), 0);
}
