//! Followers and leases (issue 11), measured beside a baseline from the same run:
//!
//! - (g) follower lag and cost: one primary (our daemon) writes `BENCH_RATE` one-row tx/s for
//!   `BENCH_SECONDS`; our daemon follows it (`follow: true`) and so does Litestream 0.5.17's
//!   `restore -f`, both every `BENCH_FOLLOW_INTERVAL`. Sampled every 50 ms: how far each
//!   follower's newest row is behind the writer (seconds since the writer committed it), and
//!   each follower process's CPU and RSS.
//! - (h) the lease's idle cost: `BENCH_IDLE_DBS` idle databases in our daemon with `lease: true`
//!   (renewed every 10 s) against the same without a lease: idle CPU and RSS, the median of
//!   `BENCH_ROUNDS` interleaved rounds (a 10 ms tick over a 20 s window is noisy alone).
//! - (i) promotion: time from `/demote` on the primary to the follower's `/promote` answer,
//!   and from kill -9 of the primary to the answer (this host's dead pid is taken over at once).
//!
//! Run with `cargo bench --bench failover`, or one part with other settings:
//! `BENCH_ONLY=g BENCH_SECONDS=30 BENCH_RATE=200 cargo bench --bench failover`.
//!
//! Not a test: it prints its figures (and asserts only that the followers end up complete).

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The newest row id of a follower's database (0 while it does not exist or is being
/// created).
fn max_id(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0))
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A follower being measured: its database and its process.
struct Measured {
    name: &'static str,
    db: PathBuf,
    pid: u32,
    lags: Vec<f64>,
    cpu0: f64,
}

fn follower_lag(seconds: u64, rate: u32, interval: &str) {
    println!(
        "(g) follower lag: primary at {rate} tx/s for {seconds} s, followers every {interval}"
    );
    let base = TestDir::new();
    let url = file_url(&base.path("replica"));
    let primary_dir = TestDir::new();
    let primary_db = primary_dir.path("app.db");
    create_db(&primary_db);
    let config = write_config(primary_dir.dir.path(), &[(&primary_db, &url)], "", "");
    let primary = Daemon::start(&config);
    insert(&primary_db);
    primary.sync_wait(&primary_db);

    let ours_dir = TestDir::new();
    let ours_db = ours_dir.path("app.db");
    let extra = format!("    follow: true\n    follow-interval: {interval}\n");
    let ours_config = write_config(ours_dir.dir.path(), &[(&ours_db, &url)], &extra, "");
    let ours = Daemon::start(&ours_config);
    let theirs_db = base.path("theirs.db");
    let mut theirs: Child = Command::new(reference_bin())
        .args(["restore", "-f", "-follow-interval", interval, "-o"])
        .arg(&theirs_db)
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(base.path("theirs.log")).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "both followers to restore", || {
        max_id(&ours_db) >= 1 && max_id(&theirs_db) >= 1
    });

    let mut followers = [
        Measured {
            name: "ours (daemon, follow: true)",
            db: ours_db.clone(),
            pid: pid_of(&ours),
            lags: vec![],
            cpu0: 0.0,
        },
        Measured {
            name: "Litestream 0.5.17 restore -f",
            db: theirs_db.clone(),
            pid: theirs.id(),
            lags: vec![],
            cpu0: 0.0,
        },
    ];
    for f in &mut followers {
        f.cpu0 = cpu_seconds(f.pid);
    }
    // When the writer committed each id: the writer's last id, sampled as it goes.
    let writer = Writer::start(&primary_db, rate);
    let started = Instant::now();
    let mut committed: Vec<(i64, Instant)> = vec![];
    while started.elapsed() < Duration::from_secs(seconds) {
        let now = Instant::now();
        committed.push((
            writer.last_id.load(std::sync::atomic::Ordering::SeqCst),
            now,
        ));
        for f in &mut followers {
            let id = max_id(&f.db);
            // The first sample at which the writer had committed past the follower's newest
            // row: the follower is at most that far behind.
            let since = committed
                .iter()
                .find(|(w, _)| *w > id)
                .map_or(0.0, |(_, t)| now.duration_since(*t).as_secs_f64());
            f.lags.push(since);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let last = writer.stop();
    primary.sync_wait(&primary_db);
    for f in &followers {
        wait_until(Duration::from_secs(60), "the follower to finish", || {
            max_id(&f.db) == last
        });
    }
    println!(
        "  {:<30} {:>9} {:>9} {:>9} {:>12} {:>9}",
        "follower", "lag p50", "lag p90", "lag max", "CPU ms/s", "RSS MiB"
    );
    let mut cpu = vec![];
    for f in &mut followers {
        f.lags.sort_by(f64::total_cmp);
        let c = (cpu_seconds(f.pid) - f.cpu0) * 1000.0 / elapsed;
        cpu.push(c);
        println!(
            "  {:<30} {:>8.2}s {:>8.2}s {:>8.2}s {:>12.1} {:>9.1}",
            f.name,
            percentile(&f.lags, 0.5),
            percentile(&f.lags, 0.9),
            f.lags.last().copied().unwrap_or(f64::NAN),
            c,
            rss_mib(f.pid)
        );
    }
    println!(
        "  ours/Litestream: lag p50 {:.2}, CPU {:.2}",
        percentile(&followers[0].lags, 0.5) / percentile(&followers[1].lags, 0.5),
        cpu[0] / cpu[1]
    );
    assert_eq!(
        ids(&ours_db),
        ids(&primary_db),
        "our follower is incomplete"
    );
    let _ = theirs.kill();
    let _ = theirs.wait();
}

/// Idle CPU (ms/s) and RSS (MiB) of our daemon with `n` idle databases, with or without
/// `lease: true`.
fn idle_daemon(n: usize, settle: u64, lease: bool) -> (f64, f64) {
    let dir = TestDir::new();
    let dbs: Vec<(PathBuf, String)> = (0..n)
        .map(|i| {
            let db = dir.path(&format!("db{i:03}.db"));
            insert(&db);
            (db, file_url(&dir.path(&format!("replica{i:03}"))))
        })
        .collect();
    let pairs: Vec<(&Path, &str)> = dbs.iter().map(|(d, u)| (d.as_path(), u.as_str())).collect();
    let extra = if lease { "    lease: true\n" } else { "" };
    let config = write_config(dir.dir.path(), &pairs, extra, "");
    let d = Daemon::start(&config);
    for (db, _) in &dbs {
        d.sync_wait(db);
    }
    if lease {
        wait_until(Duration::from_secs(60), "every lease", || {
            let r = d.request("GET", "/list", None);
            r.json()["databases"]
                .as_array()
                .is_some_and(|a| a.iter().all(|e| e.get("lease").is_some()))
        });
    }
    std::thread::sleep(Duration::from_secs(settle));
    let pid = pid_of(&d);
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(settle));
    let cpu = (cpu_seconds(pid) - cpu0) * 1000.0 / t0.elapsed().as_secs_f64();
    let rss = rss_mib(pid);
    assert_eq!(d.terminate(), 0);
    (cpu, rss)
}

fn lease_idle_cost(n: usize, settle: u64, rounds: usize) {
    println!(
        "(h) {n} idle databases, file replicas: lease: true (renewed every 10 s) vs none, {rounds} interleaved rounds, medians"
    );
    let (mut none, mut leased) = (vec![], vec![]);
    for _ in 0..rounds {
        none.push(idle_daemon(n, settle, false));
        leased.push(idle_daemon(n, settle, true));
    }
    let median = |v: &[(f64, f64)]| {
        let mut cpu: Vec<f64> = v.iter().map(|r| r.0).collect();
        let mut rss: Vec<f64> = v.iter().map(|r| r.1).collect();
        cpu.sort_by(f64::total_cmp);
        rss.sort_by(f64::total_cmp);
        (percentile(&cpu, 0.5), percentile(&rss, 0.5))
    };
    let (n_cpu, n_rss) = median(&none);
    let (l_cpu, l_rss) = median(&leased);
    let all = |v: &[(f64, f64)]| {
        v.iter()
            .map(|r| format!("{:.2}", r.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  no lease     idle CPU {n_cpu:>7.2} ms/s   RSS {n_rss:>6.1} MiB   (CPU by round: {})",
        all(&none)
    );
    println!(
        "  lease: true  idle CPU {l_cpu:>7.2} ms/s   RSS {l_rss:>6.1} MiB   (CPU by round: {})",
        all(&leased)
    );
    println!(
        "  lease - none: {:.2} ms/s of CPU for {} renewals/s; RSS ratio {:.2}",
        l_cpu - n_cpu,
        n as f64 / 10.0,
        l_rss / n_rss
    );
}

fn promotion() {
    println!("(i) promotion");
    let base = TestDir::new();
    let url = file_url(&base.path("replica"));
    let node = |follow: bool| {
        let dir = TestDir::new();
        let db = dir.path("app.db");
        let role = if follow {
            "    follow: true\n    follow-interval: 1s\n"
        } else {
            "    lease: true\n"
        };
        let config = write_config(dir.dir.path(), &[(&db, &url)], role, "");
        (dir, db, config)
    };
    let (_pd, pdb, pconfig) = node(false);
    let (_fd, fdb, fconfig) = node(true);
    let p = Daemon::start(&pconfig);
    for _ in 0..100 {
        insert(&pdb);
    }
    let txid = p.sync_wait(&pdb)["txid"].as_u64().unwrap();
    let f = Daemon::start(&fconfig);
    wait_until(Duration::from_secs(60), "the follower", || {
        let r = f.request("GET", &format!("/txid?path={}", fdb.display()), None);
        r.status == 200 && r.json()["txid"].as_u64() == Some(txid)
    });
    let body = |db: &Path| format!(r#"{{"path":"{}"}}"#, db.display());
    let t0 = Instant::now();
    let r = p.request("POST", "/demote", Some(&body(&pdb)));
    assert_eq!(r.status, 200, "{}", r.body);
    let demoted = t0.elapsed();
    let r = f.request("POST", "/promote", Some(&body(&fdb)));
    assert_eq!(r.status, 200, "{}", r.body);
    println!(
        "  demote {:.1} ms, then promote {:.1} ms (handover {:.1} ms)",
        demoted.as_secs_f64() * 1e3,
        (t0.elapsed() - demoted).as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    );
    // Back: the old primary follows; kill -9 the new one and promote the old.
    for _ in 0..10 {
        insert(&fdb);
    }
    let txid = f.sync_wait(&fdb)["txid"].as_u64().unwrap();
    wait_until(Duration::from_secs(60), "the old primary to follow", || {
        let r = p.request("GET", &format!("/txid?path={}", pdb.display()), None);
        r.status == 200 && r.json()["txid"].as_u64() == Some(txid)
    });
    f.kill9();
    let t0 = Instant::now();
    let r = p.request("POST", "/promote", Some(&body(&pdb)));
    assert_eq!(r.status, 200, "{}", r.body);
    println!(
        "  kill -9 of the primary, then promote: {:.1} ms (this host's dead process's lease is taken over at once; another host's is waited out, at most lease-ttl)",
        t0.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "failover: run with `cargo bench --bench failover` (nothing to do under cargo test)"
        );
        return;
    }
    let only: String = env_or("BENCH_ONLY", "g,h,i".to_string());
    let runs = |s: &str| only.split(',').any(|o| o.trim() == s);
    println!(
        "reproduce: BENCH_ONLY={only} BENCH_SECONDS={} BENCH_RATE={} BENCH_FOLLOW_INTERVAL={} BENCH_IDLE_DBS={} BENCH_SETTLE={} BENCH_ROUNDS={} cargo bench --bench failover",
        env_or("BENCH_SECONDS", 20u64),
        env_or("BENCH_RATE", 100u32),
        env_or("BENCH_FOLLOW_INTERVAL", "1s".to_string()),
        env_or("BENCH_IDLE_DBS", 100usize),
        env_or("BENCH_SETTLE", 20u64),
        env_or("BENCH_ROUNDS", 3usize),
    );
    if runs("g") {
        follower_lag(
            env_or("BENCH_SECONDS", 20),
            env_or("BENCH_RATE", 100),
            &env_or("BENCH_FOLLOW_INTERVAL", "1s".to_string()),
        );
    }
    if runs("h") {
        lease_idle_cost(
            env_or("BENCH_IDLE_DBS", 100),
            env_or("BENCH_SETTLE", 20),
            env_or("BENCH_ROUNDS", 3),
        );
    }
    if runs("i") {
        promotion();
    }
}
