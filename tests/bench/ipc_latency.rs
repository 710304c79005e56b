//! Latency of the control socket under load (issue 3): 50 concurrent clients hammering
//! `GET /list` and `GET /txid` while 10 databases replicate (a writer on each, ~100 rows/s)
//! and a client forces waited syncs round robin. Reports p50/p90/p99/max per endpoint, the
//! error count, and how long waited syncs took meanwhile.
//!
//!     cargo bench --bench ipc_latency
//!     LITESTREAM_BENCH_SECS=30 LITESTREAM_BENCH_CLIENTS=50 cargo bench --bench ipc_latency
//!
//! Not a test: it asserts nothing but the absence of errors, and prints its figures.

#[path = "../common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request; `Err` on anything but a 200 with a JSON body.
fn request(socket: &Path, method: &str, path: &str, body: &str) -> Result<(), String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let r = parse_response(&raw);
    if r.status != 200 || serde_json::from_str::<serde_json::Value>(&r.body).is_err() {
        return Err(format!("{} {}", r.status, r.body));
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>, secs: f64) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<12} n={:<7} {:>8.0}/s  p50={:>7.0}us  p90={:>7.0}us  p99={:>7.0}us  max={:>8.0}us",
        v.len(),
        v.len() as f64 / secs,
        us(percentile(&v, 0.50)),
        us(percentile(&v, 0.90)),
        us(percentile(&v, 0.99)),
        us(*v.last().unwrap_or(&Duration::ZERO)),
    );
}

fn main() {
    let secs = env_or("LITESTREAM_BENCH_SECS", 10);
    let clients = env_or("LITESTREAM_BENCH_CLIENTS", 50) as usize;
    let n_dbs = 10;
    let dir = TestDir::new();
    let dbs: Vec<PathBuf> = (0..n_dbs).map(|i| dir.path(&format!("db{i}.db"))).collect();
    let urls: Vec<String> = (0..n_dbs)
        .map(|i| format!("file://{}", dir.path(&format!("replica{i}")).display()))
        .collect();
    for db in &dbs {
        create_db(db);
    }
    let pairs: Vec<(&Path, &str)> = dbs
        .iter()
        .zip(&urls)
        .map(|(d, u)| (d.as_path(), u.as_str()))
        .collect();
    let config = write_config(dir.dir.path(), &pairs, "", "");
    let d = Daemon::start(&config);
    let writers: Vec<Writer> = dbs.iter().map(|db| Writer::start(db, 100)).collect();
    for db in &dbs {
        d.sync_wait(db);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let syncer = {
        let (stop, socket, dbs) = (stop.clone(), d.socket.clone(), dbs.clone());
        std::thread::spawn(move || {
            let (mut lat, mut errors, mut i) = (vec![], vec![], 0);
            while !stop.load(Ordering::SeqCst) {
                let body = format!(
                    r#"{{"path":"{}","wait":true,"timeout":30}}"#,
                    dbs[i % dbs.len()].display()
                );
                let t = Instant::now();
                match request(&socket, "POST", "/sync", &body) {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => errors.push(e),
                }
                i += 1;
            }
            (lat, errors)
        })
    };

    println!(
        "ipc_latency: {clients} clients, {n_dbs} databases replicating (100 rows/s each), {secs} s"
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (socket, dbs) = (d.socket.clone(), dbs.clone());
            std::thread::spawn(move || {
                let (mut list, mut txid, mut errors) = (vec![], vec![], vec![]);
                let mut i = c;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let r = if i % 2 == 0 {
                        request(&socket, "GET", "/list", "").map(|_| list.push(t.elapsed()))
                    } else {
                        let path = format!("/txid?path={}", dbs[i % dbs.len()].display());
                        request(&socket, "GET", &path, "").map(|_| txid.push(t.elapsed()))
                    };
                    if let Err(e) = r {
                        errors.push(e);
                    }
                    i += 1;
                }
                (list, txid, errors)
            })
        })
        .collect();
    let (mut list, mut txid, mut errors) = (vec![], vec![], vec![]);
    for h in handles {
        let (l, t, e) = h.join().unwrap();
        list.extend(l);
        txid.extend(t);
        errors.extend(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let (syncs, sync_errors) = syncer.join().unwrap();
    for w in writers {
        w.stop();
    }

    let mut all = list.clone();
    all.extend(&txid);
    report("GET /list", list, elapsed);
    report("GET /txid", txid, elapsed);
    report("both", all, elapsed);
    report("POST /sync*", syncs, elapsed);
    println!("  (* waited syncs, one at a time, while the clients ran)");
    println!(
        "errors: {} client, {} sync",
        errors.len(),
        sync_errors.len()
    );
    for e in errors.iter().chain(&sync_errors).take(5) {
        println!("  {e}");
    }
    assert!(
        errors.is_empty() && sync_errors.is_empty(),
        "requests failed under load"
    );
    assert_eq!(d.terminate(), 0);
}
