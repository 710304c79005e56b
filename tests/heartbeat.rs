//! `heartbeat-url` (issue 13): a GET while every database replicates, never more often than
//! `heartbeat-interval`, none while a replica fails; and the config's limits, as Litestream's.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A local HTTP server that answers 200 to every request and counts them; it stops by itself
/// after `lifetime`.
fn counting_server(lifetime: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/ping/abc", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        let until = Instant::now() + lifetime;
        while Instant::now() < until {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 2048];
                    let n = s.read(&mut buf).unwrap_or(0);
                    if String::from_utf8_lossy(&buf[..n]).starts_with("GET /ping/abc ") {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (url, count)
}

#[test]
fn a_ping_while_healthy_and_none_more_often_than_the_interval() {
    let (url, pings) = counting_server(Duration::from_secs(60));
    let dir = TestDir::new();
    let db = dir.path("app.db");
    create_db(&db);
    let replica = format!("file://{}", dir.path("replica").display());
    let top = format!("heartbeat-url: {url}\nheartbeat-interval: 1m\n");
    let d = Daemon::start(&write_config(dir.dir.path(), &[(&db, &replica)], "", &top));
    d.sync_wait(&db);
    wait_until(Duration::from_secs(20), "the first ping", || {
        pings.load(Ordering::SeqCst) >= 1
    });
    // The window observed, not a synchronisation: two checks pass, no second ping.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(pings.load(Ordering::SeqCst), 1);
    assert!(d.log_text().contains("starting heartbeat monitor"));
    assert_eq!(d.terminate(), 0);
}

#[test]
fn no_ping_while_a_replica_fails() {
    let (url, pings) = counting_server(Duration::from_secs(60));
    let dir = TestDir::new();
    let db = dir.path("app.db");
    create_db(&db);
    // The replica's directory cannot be created: a file is in its way.
    let blocked = dir.path("blocked");
    std::fs::write(&blocked, b"a file").unwrap();
    let replica = format!("file://{}/replica", blocked.display());
    let top = format!("heartbeat-url: {url}\nheartbeat-interval: 1m\n");
    let d = Daemon::start(&write_config(dir.dir.path(), &[(&db, &replica)], "", &top));
    wait_until(Duration::from_secs(20), "the replica error", || {
        d.request("GET", "/list", None).json()["databases"][0]["replica_error"].is_string()
    });
    // The window observed: two checks pass with the replica failing, and nothing is sent.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(pings.load(Ordering::SeqCst), 0);
    assert_eq!(d.terminate(), 0);
}

#[test]
fn the_config_refuses_what_litestream_refuses() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    create_db(&db);
    let replica = format!("file://{}", dir.path("replica").display());
    for (top, want) in [
        (
            "heartbeat-url: ftp://example.com/x\n",
            "heartbeat URL must be a valid HTTP or HTTPS URL",
        ),
        (
            "heartbeat-url: http://127.0.0.1:9/x\nheartbeat-interval: 30s\n",
            "heartbeat interval must be at least 1m0s (got 30s)",
        ),
    ] {
        let config = write_config(dir.dir.path(), &[(&db, &replica)], "", top);
        let o = run(&["replicate", "-config", config.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{top}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{top}: {err}");
    }
}
