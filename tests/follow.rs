//! `restore -f`: a follower kept up to date from a replica while the primary writes, its
//! readers, kill -9 and resume, a gap healed from a snapshot, a Litestream 0.5.17 replica,
//! and the flags it refuses.

mod common;
#[path = "common/s3.rs"]
mod s3server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rusqlite::{Connection, OpenFlags};
use s3server::*;

/// A running `litestream restore -f`.
struct Follower {
    child: Child,
    log: PathBuf,
    out: PathBuf,
}

impl Follower {
    /// Starts following `url` into `out`, polling every 100 ms, and waits until the database
    /// and its txid sidecar exist.
    fn start(url: &str, out: &Path) -> Follower {
        Self::start_with(url, out, &[])
    }

    fn start_with(url: &str, out: &Path, env: &[(&str, &str)]) -> Follower {
        let log = out.with_extension(format!("follow-{}.log", rand_range(0, 1 << 40)));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .args(["restore", "-f", "-follow-interval", "100ms", "-o"])
            .arg(out)
            .arg(url)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut f = Follower {
            child,
            log,
            out: out.to_path_buf(),
        };
        wait_until(
            Duration::from_secs(60),
            "the follower's first restore",
            || {
                if let Some(status) = f.child.try_wait().unwrap() {
                    panic!("follower exited ({status}): {}", f.log_text());
                }
                f.out.exists()
                    && sidecar(&f.out).is_some()
                    && f.log_text().contains("entering follow mode")
            },
        );
        f
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.log_text()
    }

    /// SIGTERM; returns the exit code and the log.
    fn terminate(self) -> (i32, String) {
        self.signal(libc::SIGTERM)
    }

    /// Sends `sig` and waits for the exit; returns the exit code and the log.
    fn signal(mut self, sig: i32) -> (i32, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        (code, self.log_text())
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The txid in `<out>-txid`.
fn sidecar(out: &Path) -> Option<u64> {
    let mut p = out.as_os_str().to_owned();
    p.push("-txid");
    let text = std::fs::read_to_string(PathBuf::from(p)).ok()?;
    u64::from_str_radix(text.trim(), 16).ok()
}

/// The highest id in table `t` of a database (0 when empty).
fn max_id(path: &Path) -> i64 {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// Waits until the follower's rows are the primary's (the primary no longer writing).
fn wait_same_rows(db: &Path, out: &Path, f: &Follower) {
    let want = ids(db);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = ids(out);
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            assert_same_ids(
                &got,
                &want,
                &format!("follower after 30 s: {}", f.log_text()),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ACCOUNTS: i64 = 400;
const BALANCE: i64 = 1000;

/// Creates `acct`: ACCOUNTS rows with BALANCE each and a 300-byte pad, spread over dozens of
/// pages, so that a transaction moving an amount between two far rows changes two pages.
fn create_accounts(db: &Path) {
    let conn = create_db(db);
    conn.execute_batch(&format!(
        "CREATE TABLE acct(id INTEGER PRIMARY KEY, v INTEGER, pad TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ACCOUNTS})
         INSERT INTO acct SELECT i, {BALANCE}, hex(randomblob(150)) FROM n;"
    ))
    .unwrap();
}

/// A writer moving amounts between accounts (the total never changes) and inserting a row
/// into `t`, one transaction each, as fast as it can with a short pause.
struct Transfers {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Transfers {
    fn start(db: &Path) -> Transfers {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, path) = (stop.clone(), db.to_path_buf());
        let handle = std::thread::spawn(move || {
            let mut conn = create_db(&path);
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                let (a, b) = (
                    rand_range(1, ACCOUNTS as u64 + 1) as i64,
                    rand_range(1, ACCOUNTS as u64 + 1) as i64,
                );
                let k = rand_range(1, 50) as i64;
                let tx = conn.transaction().unwrap();
                tx.execute("UPDATE acct SET v = v - ?1 WHERE id = ?2", (k, a))
                    .unwrap();
                tx.execute("UPDATE acct SET v = v + ?1 WHERE id = ?2", (k, b))
                    .unwrap();
                tx.execute("INSERT INTO t(v) VALUES (hex(randomblob(64)))", [])
                    .unwrap();
                tx.commit().unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        });
        Transfers {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Transfers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What a reader of the follower saw.
#[derive(Default)]
struct Seen {
    reads: AtomicU64,
    errors: AtomicU64,
    torn: AtomicU64,
    first_problem: std::sync::Mutex<Option<String>>,
}

/// Reads the follower the way its man page says (read-only, busy timeout) in a loop, each
/// read one statement, until `stop`: the total of `acct` must always be the starting one.
fn reader(out: PathBuf, stop: Arc<AtomicBool>, seen: Arc<Seen>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let problem = |what: String| {
            seen.first_problem.lock().unwrap().get_or_insert(what);
        };
        let conn = Connection::open_with_flags(
            format!("file:{}?mode=ro", out.display()),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        while !stop.load(Ordering::SeqCst) {
            let r = conn.query_row("SELECT sum(v), count(*) FROM acct", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            });
            match r {
                Ok((sum, count)) if (sum, count) == (ACCOUNTS * BALANCE, ACCOUNTS) => {}
                Ok(other) => {
                    seen.torn.fetch_add(1, Ordering::SeqCst);
                    problem(format!("read {other:?}"));
                }
                Err(e) => {
                    seen.errors.fetch_add(1, Ordering::SeqCst);
                    problem(format!("error: {e}"));
                }
            }
            seen.reads.fetch_add(1, Ordering::SeqCst);
            // Pacing only (2 cores shared): the reads still overlap the follower's writes.
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// The follower keeps within a few intervals of a primary that writes all along, and a
/// reader reading it throughout never fails and never sees a transaction half applied.
#[test]
fn follower_keeps_up_and_its_readers_never_see_a_partial_transaction() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::new();
    create_accounts(&db);
    let daemon = Daemon::start(&config);
    wait_replicated(&daemon, &db);
    daemon.sync_wait(&db);
    let out = dir.path("follower.db");
    let follower = Follower::start(&file_url(&replica), &out);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let reading = reader(out.clone(), stop.clone(), seen.clone());
    let writer = Transfers::start(&db);
    // While it writes: what a waited sync put in the replica reaches the follower quickly.
    let mut lags = vec![];
    let mut target = 0;
    for _ in 0..8 {
        // Each round measures transactions the writer made since the last one.
        wait_until(Duration::from_secs(10), "new transactions", || {
            max_id(&db) > target
        });
        target = max_id(&db);
        daemon.sync_wait(&db);
        let synced = Instant::now();
        wait_until(Duration::from_secs(10), "the follower to catch up", || {
            max_id(&out) >= target
        });
        lags.push(synced.elapsed());
    }
    let transfers = writer.stop();
    daemon.sync_wait(&db);
    wait_same_rows(&db, &out, &follower);
    stop.store(true, Ordering::SeqCst);
    reading.join().unwrap();
    lags.sort();
    eprintln!(
        "follow lag after a waited sync (100 ms interval): median {:?}, max {:?}; {transfers} transfers; {} reads",
        lags[lags.len() / 2],
        lags[lags.len() - 1],
        seen.reads.load(Ordering::SeqCst)
    );
    assert!(lags[lags.len() - 1] < Duration::from_secs(2), "{lags:?}");
    assert_eq!(
        (
            seen.errors.load(Ordering::SeqCst),
            seen.torn.load(Ordering::SeqCst)
        ),
        (0, 0),
        "{:?}",
        seen.first_problem.lock().unwrap()
    );
    assert!(seen.reads.load(Ordering::SeqCst) > 100);
    let conn = Connection::open(&out).unwrap();
    let rows = |c: &Connection| -> Vec<(i64, i64)> {
        let mut s = c.prepare("SELECT id, v FROM acct ORDER BY id").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(rows(&conn), rows(&create_db(&db)));
    assert_eq!(integrity(&out), "ok");
    let (code, log) = follower.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("follow mode stopped"), "{log}");
    assert!(!log.contains("error"), "{log}");
}

/// kill -9 of the follower at random moments while the primary writes: every time the
/// database it leaves is consistent, and a restart resumes from its sidecar to the same rows.
#[test]
fn kill_9_at_any_moment_leaves_a_consistent_database_that_resumes() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::new();
    let daemon = start_replicating(&db, &config);
    let url = file_url(&replica);
    let out = dir.path("follower.db");
    let writer = Writer::start(&db, 200);
    let mut follower = Follower::start(&url, &out);
    for round in 0..4 {
        daemon.sync_wait(&db);
        std::thread::sleep(Duration::from_millis(rand_range(0, 400)));
        let before = sidecar(&out).unwrap();
        follower.kill9();
        // Consistent as left: SQLite recovers the WAL, the check passes, no row is torn.
        let conn = Connection::open(&out).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        drop(conn);
        follower = Follower::start(&url, &out);
        let log = follower.log_text();
        assert!(
            log.contains("resuming follow mode from crash recovery"),
            "{log}"
        );
        assert!(sidecar(&out).unwrap() >= before, "round {round}");
    }
    let last = writer.stop();
    daemon.sync_wait(&db);
    wait_same_rows(&db, &out, &follower);
    assert_eq!(max_id(&out), last);
    assert_eq!(integrity(&out), "ok");
    let log = follower.kill9();
    assert!(!log.contains("mismatch"), "{log}");
}

/// A missing level-0 file is a gap: logged once with its txids, and healed from the
/// snapshot past it; SIGTERM then stops the follower cleanly.
#[test]
fn a_gap_in_the_replica_is_logged_once_and_healed_from_the_next_snapshot() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config(
        "",
        "levels: []\nsnapshot:\n  interval: 1s\n  retention: 1h\nl0-retention: 1h\n",
    );
    let daemon = start_replicating(&db, &config);
    daemon.sync_wait(&db);
    let out = dir.path("follower.db");
    let follower = Follower::start(&file_url(&replica), &out);
    let (code, log) = follower.signal(libc::SIGINT);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("follow mode stopped"), "{log}");
    let at = sidecar(&out).unwrap();
    // Five more files while the follower is away, one per waited sync.
    for _ in 0..5 {
        insert(&db);
        daemon.sync_wait(&db);
    }
    let newest = daemon.sync_wait(&db)["replicated_txid"].as_u64().unwrap();
    let ltx = |level: u32| -> Vec<(u64, u64, PathBuf)> {
        let dir = replica.join(format!("ltx/{level}"));
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v.into_iter()
            .filter_map(|p| {
                let name = p.file_stem()?.to_str()?.to_string();
                let (a, b) = name.split_once('-')?;
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                    p,
                ))
            })
            .collect()
    };
    wait_until(
        Duration::from_secs(30),
        "a snapshot of the newest txid",
        || ltx(9).iter().any(|&(_, max, _)| max >= newest),
    );
    let later: Vec<_> = ltx(0).into_iter().filter(|&(min, _, _)| min > at).collect();
    assert!(later.len() >= 5, "{later:?}");
    let (gone_min, gone_max, gone) = later[1].clone();
    std::fs::remove_file(&gone).unwrap();
    let follower = Follower::start(&file_url(&replica), &out);
    wait_same_rows(&db, &out, &follower);
    // The sidecar follows each COMMIT.
    wait_until(
        Duration::from_secs(10),
        "the sidecar at the newest txid",
        || sidecar(&out) == Some(newest),
    );
    let (code, log) = follower.terminate();
    assert_eq!(code, 0, "{log}");
    let gaps: Vec<_> = log.lines().filter(|l| l.contains("has a gap")).collect();
    assert_eq!(gaps.len(), 1, "{log}");
    assert!(
        gaps[0].contains(&format!("after_txid={:016x}", gone_min - 1))
            && gaps[0].contains(&format!("next_txid={:016x}", gone_max + 1)),
        "{log}"
    );
    assert!(log.contains("healed from snapshot"), "{log}");
    assert_eq!(integrity(&out), "ok");
}

/// A replica that Litestream 0.5.17 writes can be followed as it grows.
#[test]
fn a_litestream_replica_can_be_followed() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let replica = file_url(&dir.path("replica"));
    let config = write_config(dir.dir.path(), &[(&db, &replica)], "", "  enabled: true\n");
    let theirs = ReferenceDaemon::start(&config);
    let sync = || theirs.sync_wait(&db);
    let write = |n: usize| {
        for _ in 0..n {
            conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(200)))", [])
                .unwrap();
        }
        sync();
    };
    write(20);
    let out = dir.path("follower.db");
    let follower = Follower::start(&replica, &out);
    for _ in 0..5 {
        write(20);
        let want = ids(&db);
        wait_until(Duration::from_secs(20), "the follower to catch up", || {
            ids(&out) == want
        });
    }
    drop(theirs);
    assert_eq!(integrity(&out), "ok");
    let (code, log) = follower.terminate();
    assert_eq!(code, 0, "{log}");
    // Its files carry no database checksums: said once by the restore, once by the follower.
    for said in [
        "restored without database checksums",
        "applying files without database checksums",
    ] {
        assert_eq!(log.matches(said).count(), 1, "{log}");
    }
}

/// The local S3 server as the replica.
#[test]
fn an_s3_replica_can_be_followed() {
    let dir = TestDir::new();
    let s3 = S3Server::start(dir.dir.path());
    let db = dir.path("app.db");
    let url = s3.url("follow/app.db");
    let config = write_config(
        dir.dir.path(),
        &[(&db, &url)],
        &credentials_yaml(ACCESS_KEY, SECRET_KEY),
        "",
    );
    let daemon = start_replicating(&db, &config);
    let out = dir.path("follower.db");
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let follower = Follower::start_with(&url, &out, &env);
    assert!(!s3.keys("follow/app.db").is_empty());
    let writer = Writer::start(&db, 100);
    for _ in 0..3 {
        let target = max_id(&db);
        daemon.sync_wait(&db);
        wait_until(Duration::from_secs(10), "the follower to catch up", || {
            max_id(&out) >= target
        });
    }
    writer.stop();
    daemon.sync_wait(&db);
    wait_same_rows(&db, &out, &follower);
    let (code, log) = follower.terminate();
    assert_eq!(code, 0, "{log}");
}

/// `-f` with `-txid`, `-timestamp` or `-dry-run` is refused as Litestream 0.5.17 refuses it,
/// and so is resuming a database without its txid sidecar.
#[test]
fn follow_refuses_what_litestream_refuses() {
    let dir = TestDir::new();
    let url = format!(
        "file://{}",
        fixture("litestream-0.5.17-file-replica").display()
    );
    let out = dir.path("out.db");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["-txid", "0000000000000002"],
            "cannot use follow mode with -txid",
        ),
        (
            &["-timestamp", "2020-01-01T00:00:00Z"],
            "cannot use follow mode with -timestamp",
        ),
        (&["-dry-run"], "cannot use -dry-run with -f"),
    ];
    let reference = std::env::var_os("LITESTREAM_REFERENCE_BIN").map(PathBuf::from);
    for (flags, message) in cases {
        let mut args = vec!["restore", "-f"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-o", o, &url]);
        let ours = run(&args);
        assert_eq!(ours.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&ours).contains(message),
            "{args:?}: {}",
            stderr(&ours)
        );
        if let Some(reference) = &reference {
            let theirs = Command::new(reference).args(&args).output().unwrap();
            assert_eq!(theirs.status.code(), Some(1), "{args:?}");
            // 0.5.17 answers `-f -timestamp` with "timestamp does not exist" whatever the
            // time (its source has the refusal we print, behind that check).
            if flags[0] != "-timestamp" {
                assert!(
                    stderr(&theirs).contains(message),
                    "Litestream says otherwise for {args:?}: {}",
                    stderr(&theirs)
                );
            }
        }
        assert!(!out.exists());
    }
    std::fs::write(&out, b"not a follower").unwrap();
    let o = run(&["restore", "-f", "-o", out.to_str().unwrap(), &url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot resume follow mode: database exists but no -txid file found"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "restore",
        "-f",
        "-follow-interval",
        "soon",
        "-o",
        "/tmp/x.db",
        &url,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("-follow-interval"), "{}", stderr(&o));
}

/// A gap with no snapshot past it yet: logged once however many polls see it (counted as
/// LIST requests through a proxy), never a silent stall, and healed as soon as a snapshot
/// past it appears.
#[test]
fn a_gap_without_a_snapshot_is_logged_once_while_waiting_then_healed() {
    let dir = TestDir::new();
    let s3 = S3Server::start(dir.dir.path());
    let proxy = CountingProxy::start(s3.port);
    let db = dir.path("app.db");
    let config = write_config(
        dir.dir.path(),
        &[(&db, &s3.url("g/app.db"))],
        &credentials_yaml(ACCESS_KEY, SECRET_KEY),
        "levels: []\nsnapshot:\n  interval: 1s\n  retention: 1h\nl0-retention: 1h\n",
    );
    let daemon = start_replicating(&db, &config);
    daemon.sync_wait(&db);
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let url = url_for(proxy.port, "g/app.db");
    let out = dir.path("follower.db");
    let (code, log) = Follower::start_with(&url, &out, &env).terminate();
    assert_eq!(code, 0, "{log}");
    let at = sidecar(&out).unwrap();
    for _ in 0..5 {
        insert(&db);
        daemon.sync_wait(&db);
    }
    let newest = daemon.sync_wait(&db)["replicated_txid"].as_u64().unwrap();
    // Objects as files in the server's data directory: (min, max, path).
    let objects = |level: &str| -> Vec<(u64, u64, PathBuf)> {
        s3.keys(&format!("g/app.db/{level}/"))
            .into_iter()
            .filter_map(|k| {
                let (min, max) = litestream::ltx::parse_file_name(k.rsplit('/').next()?)?;
                Some((min.get(), max.get(), s3.root.join(BUCKET).join(&k)))
            })
            .collect()
    };
    wait_until(
        Duration::from_secs(30),
        "a snapshot of the newest txid",
        || objects("0009").iter().any(|&(_, max, _)| max >= newest),
    );
    // Every snapshot past the follower goes aside, and the second file after it is lost.
    let aside = dir.path("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let mut moved = vec![];
    for (i, (_, max, path)) in objects("0009").into_iter().enumerate() {
        if max > at {
            let to = aside.join(format!("{i}.ltx"));
            std::fs::rename(&path, &to).unwrap();
            moved.push((to, path));
        }
    }
    let later: Vec<_> = objects("0000")
        .into_iter()
        .filter(|&(min, _, _)| min > at)
        .collect();
    assert!(later.len() >= 5, "{later:?}");
    std::fs::remove_file(&later[1].2).unwrap();
    let follower = Follower::start_with(&url, &out, &env);
    wait_until(Duration::from_secs(10), "the gap to be logged", || {
        follower.log_text().contains("has a gap")
    });
    // Each poll in a gap is 11 LISTs (level 0, then all ten levels): wait for several polls.
    proxy.reset();
    wait_until(Duration::from_secs(10), "five polls in the gap", || {
        proxy.counts().get("LIST").copied().unwrap_or(0) >= 55
    });
    let gap_lines = |log: &str| log.lines().filter(|l| l.contains("has a gap")).count();
    assert_eq!(
        gap_lines(&follower.log_text()),
        1,
        "{}",
        follower.log_text()
    );
    assert_eq!(sidecar(&out), Some(later[0].1), "applied up to the gap");
    for (from, to) in moved {
        std::fs::rename(from, to).unwrap();
    }
    wait_same_rows(&db, &out, &follower);
    wait_until(
        Duration::from_secs(10),
        "the sidecar at the newest txid",
        || sidecar(&out) == Some(newest),
    );
    let (code, log) = follower.terminate();
    assert_eq!(code, 0, "{log}");
    assert_eq!(gap_lines(&log), 1, "{log}");
    let gap = log.lines().find(|l| l.contains("has a gap")).unwrap();
    assert!(
        gap.contains(&format!("after_txid={:016x}", later[0].1))
            && gap.contains(&format!("next_txid={:016x}", later[2].0)),
        "{gap}"
    );
    assert!(log.contains("healed from snapshot"), "{log}");
    assert_eq!(integrity(&out), "ok");
}
