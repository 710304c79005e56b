//! S3 requests per hour, ours next to Litestream 0.5.17, at 10 transactions per second and at
//! idle, against the same local S3 server (s3s-fs).
//!
//! Each daemon talks to the server through its own counting proxy (tests/common/s3.rs), which
//! parses the HTTP requests passing through and counts them by kind, so the numbers are what
//! crossed the wire, retries included, whatever the client library does. Each phase measures
//! a window after a settling period and extrapolates to one hour; the startup requests are
//! shown apart. Litestream's compactions run every 30 s (L1), 5 min (L2) and 1 h (L3): a
//! window shorter than those intervals sees only the L1 ones, so its hourly figure is a lower
//! bound.
//!
//! Run: `cargo bench --bench s3_requests` (window: `S3_BENCH_SECS`, default 120 s per phase;
//! needs s3s-fs and Litestream 0.5.17, see tests/install-s3-server.sh and tests/run.sh).

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/s3.rs"]
mod s3server;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use s3server::*;

/// Request kinds shown, in order; `DELETE` includes DeleteObjects batches, `PUT` includes
/// multipart creation and completion.
const KINDS: [&str; 5] = ["PUT", "GET", "HEAD", "LIST", "DELETE"];

/// Requests by kind (one of [`KINDS`]).
type Counts = BTreeMap<&'static str, u64>;

fn bucketed(counts: &BTreeMap<String, u64>) -> Counts {
    let mut out: Counts = KINDS.iter().map(|k| (*k, 0)).collect();
    for (k, v) in counts {
        let kind = match k.as_str() {
            "PUT" | "POST-multipart" => "PUT",
            "GET" => "GET",
            "HEAD" => "HEAD",
            "LIST" => "LIST",
            "DELETE" | "POST-delete" => "DELETE",
            other => panic!("unexpected request kind {other}"),
        };
        *out.get_mut(kind).unwrap() += v;
    }
    out
}

struct Litestream {
    child: Child,
}

impl Drop for Litestream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_litestream(dir: &Path, db: &Path, url: &str) -> Litestream {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      url: {url}\n",
            db.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("litestream.log")).unwrap();
    let mut cmd = Command::new(reference_bin());
    cmd.args(["replicate", "-config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    Litestream {
        child: with_credentials(&mut cmd).spawn().unwrap(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run either way.
    let window = Duration::from_secs(
        std::env::var("S3_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
    let settle = Duration::from_secs(10);
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let (ours_proxy, theirs_proxy) = (
        CountingProxy::start(server.port),
        CountingProxy::start(server.port),
    );

    let ours_db = dir.path("ours.db");
    let theirs_db = dir.path("theirs.db");
    create_db(&ours_db);
    create_db(&theirs_db);
    let ours_dir = dir.path("ours");
    std::fs::create_dir_all(&ours_dir).unwrap();
    let config = write_config(
        &ours_dir,
        &[(&ours_db, &url_for(ours_proxy.port, "ours/app.db"))],
        &credentials_yaml(ACCESS_KEY, SECRET_KEY),
        "",
    );
    let started = Instant::now();
    let daemon = Daemon::start(&config);
    let litestream = start_litestream(
        &dir.path("theirs"),
        &theirs_db,
        &url_for(theirs_proxy.port, "theirs/app.db"),
    );

    // Startup: both have written their first snapshot.
    wait_until(Duration::from_secs(60), "both first uploads", || {
        ours_proxy.counts().contains_key("PUT") && theirs_proxy.counts().contains_key("PUT")
    });
    std::thread::sleep(settle);
    let startup = (
        bucketed(&ours_proxy.counts()),
        bucketed(&theirs_proxy.counts()),
    );
    eprintln!("startup measured over {:?}", started.elapsed());

    let mut rows: Vec<(String, Counts, Counts)> = vec![];
    let measure = |label: &str| {
        ours_proxy.reset();
        theirs_proxy.reset();
        eprintln!("measuring {label} for {window:?}");
        // The measurement window itself: wall time is what is being measured.
        std::thread::sleep(window);
        (
            label.to_string(),
            bucketed(&ours_proxy.counts()),
            bucketed(&theirs_proxy.counts()),
        )
    };

    let w1 = Writer::start(&ours_db, 10);
    let w2 = Writer::start(&theirs_db, 10);
    std::thread::sleep(settle);
    rows.push(measure("10 tx/s"));
    let (n1, n2) = (w1.stop(), w2.stop());
    eprintln!("rows written: ours {n1}, litestream {n2}");
    std::thread::sleep(settle);
    rows.push(measure("idle"));

    let per_hour = |n: u64| n as f64 * 3600.0 / window.as_secs_f64();
    println!();
    println!(
        "S3 requests per hour (window {}s per phase, extrapolated; s3s-fs 0.14.1 via a counting proxy)",
        window.as_secs()
    );
    println!(
        "{:<10} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "load", "daemon", "PUT", "GET", "HEAD", "LIST", "DELETE", "total"
    );
    let line = |load: &str, who: &str, c: &Counts, scale: &dyn Fn(u64) -> f64| {
        let total: u64 = c.values().sum();
        println!(
            "{:<10} {:<12} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            load,
            who,
            scale(c["PUT"]),
            scale(c["GET"]),
            scale(c["HEAD"]),
            scale(c["LIST"]),
            scale(c["DELETE"]),
            scale(total)
        );
    };
    let ratio = |a: u64, b: u64| -> String {
        match (a, b) {
            (0, 0) => "-".into(),
            (_, 0) => "inf".into(),
            _ => format!("{:.2}", a as f64 / b as f64),
        }
    };
    for (label, ours, theirs) in &rows {
        line(label, "ours", ours, &per_hour);
        line(label, "litestream", theirs, &per_hour);
        let total = |c: &Counts| c.values().sum::<u64>();
        println!(
            "{:<10} {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            label,
            "ls/ours",
            ratio(theirs["PUT"], ours["PUT"]),
            ratio(theirs["GET"], ours["GET"]),
            ratio(theirs["HEAD"], ours["HEAD"]),
            ratio(theirs["LIST"], ours["LIST"]),
            ratio(theirs["DELETE"], ours["DELETE"]),
            ratio(total(theirs), total(ours))
        );
    }
    let raw = |n: u64| n as f64;
    line("startup", "ours", &startup.0, &raw);
    line("startup", "litestream", &startup.1, &raw);
    println!("(startup: requests from start until 10 s after the first upload, not extrapolated)");

    drop(litestream);
    assert_eq!(daemon.terminate(), 0, "our daemon exited uncleanly");
}
