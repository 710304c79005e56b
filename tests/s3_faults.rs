//! Replica faults (issue 9): the real daemon and `litestream restore` against s3s-fs behind
//! a fault proxy that answers 5xx and 429, resets connections mid-upload and mid-download,
//! truncates downloads, loses answers and stalls. Each test is a story of what must hold:
//! nothing acknowledged is lost, errors show and clear, retries back off, a restore gives the
//! right database or a clear error and nothing on disk, a stalled replica holds up nothing
//! else.

mod common;
#[path = "common/s3.rs"]
mod s3server;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use litestream::ltx::{Level, TxId};
use litestream::replica::s3::S3ReplicaClient;
use litestream::replica::url::{parse_replica_url, ReplicaTarget};
use litestream::replica::ReplicaClient;
use s3server::*;

/// A config for `dbs` (path, replica URL) with the test credentials, a 100 ms monitor
/// interval, and no compaction or L0 retention run during a test (their requests would mix
/// with the ones a test counts).
fn s3_config(dir: &TestDir, dbs: &[(&Path, &str)], extra_top: &str) -> PathBuf {
    let extra_db = format!(
        "{}    monitor-interval: 100ms\n",
        credentials_yaml(ACCESS_KEY, SECRET_KEY)
    );
    let top = format!("levels:\n  - interval: 1h\nl0-retention-check-interval: 1h\n{extra_top}");
    write_config(dir.dir.path(), dbs, &extra_db, &top)
}

/// Our `restore` of a replica URL into `out`, credentials from the environment.
fn restore_url(url: &str, out: &Path) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(["restore", "-o", out.to_str().unwrap(), url]);
    with_credentials(&mut cmd).output().unwrap()
}

/// Polls `/list` on a thread and keeps every distinct `replica_error` it shows for `db`.
struct ErrorWatch {
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ErrorWatch {
    fn start(socket: &Path, db: &Path) -> ErrorWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(vec![]));
        let (s, e, socket, db) = (
            stop.clone(),
            errors.clone(),
            socket.to_path_buf(),
            db.to_str().unwrap().to_string(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let v = http(&socket, "GET", "/list", None).json();
                let entry = v["databases"]
                    .as_array()
                    .and_then(|a| a.iter().find(|d| d["path"].as_str() == Some(&db)).cloned());
                if let Some(err) = entry.and_then(|d| d["replica_error"].as_str().map(String::from))
                {
                    let mut errors = e.lock().unwrap();
                    if !errors.contains(&err) {
                        errors.push(err);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        ErrorWatch {
            stop,
            errors,
            thread: Some(thread),
        }
    }

    /// Stops polling; the errors seen, in order.
    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.errors.lock().unwrap().clone()
    }
}

/// The names of the entries in `dir`.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The first attempt after `after` to PUT the same object.
fn next_put<'a>(seen: &'a [Seen], after: &Seen) -> Option<&'a Seen> {
    seen.iter()
        .find(|s| s.at > after.at && s.kind == "PUT" && s.path() == after.path())
}

/// The client alone through each fault, counting what reaches the server: rust-s3 repeats a
/// safe request (GET, LIST, HEAD) once, a second later, after a 5xx, 429 or reset before the
/// answer; never a PUT or a delete, whose failures go to the caller (the uploader's backoff).
/// Slow bodies arrive whole; a lost answer leaves the object stored, and the retry succeeds.
#[test]
fn the_client_through_each_fault() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = FaultProxy::start(server.port);
    let url = proxy.url("client/app.db");
    let ReplicaTarget::S3(mut target) = parse_replica_url(&url).unwrap() else {
        panic!("not s3")
    };
    target.access_key_id = Some(ACCESS_KEY.into());
    target.secret_access_key = Some(SECRET_KEY.into());
    let c = S3ReplicaClient::new(&url, &target).unwrap();
    let file = dir.path("f.ltx");
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let get = |min: u64| -> anyhow::Result<Vec<u8>> {
        let mut out = vec![];
        c.open_ltx(Level::L0, TxId::new(min), TxId::new(min))?
            .read_to_end(&mut out)?;
        Ok(out)
    };
    // Requests of `kind` since `from`, and the fault each met.
    let since = |from: usize, kind: &str| -> Vec<Option<Fault>> {
        proxy.seen()[from..]
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.fault.clone())
            .collect()
    };
    let at = || proxy.seen().len();

    // PUT: a 503 or a reset goes to the caller at once; a slow body arrives whole.
    let n = at();
    proxy.inject(Rule::new("PUT", Fault::Status(503), Times::Next(1)));
    let e = format!(
        "{:#}",
        c.put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &file)
            .unwrap_err()
    );
    assert!(e.contains("HTTP 503") && e.contains(&url), "{e}");
    proxy.inject(Rule::new(
        "PUT",
        Fault::ResetUpload { after: 1000 },
        Times::Next(1),
    ));
    let e = format!(
        "{:#}",
        c.put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &file)
            .unwrap_err()
    );
    assert!(e.contains("reset"), "{e}");
    assert_eq!(since(n, "PUT").len(), 2, "no PUT repeated by the client");
    proxy.inject(Rule::new(
        "PUT",
        Fault::SlowUpload {
            bytes: 4096,
            every: Duration::from_millis(20),
        },
        Times::Next(1),
    ));
    c.put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &file)
        .unwrap();
    assert!(get(1).unwrap() == data);
    // A lost answer: the retry is refused (412), compared, and succeeds.
    proxy.inject(Rule::new("PUT", Fault::DropResponse, Times::Next(1)));
    assert!(c
        .put_ltx(Level::L0, TxId::new(2), TxId::new(2), 0, &file)
        .is_err());
    assert_eq!(server.keys("client/app.db/0000/").len(), 2, "stored");
    c.put_ltx(Level::L0, TxId::new(2), TxId::new(2), 0, &file)
        .unwrap();

    // GET: one 503, 500 or 429, or a reset before the answer, is repeated once; two are not.
    for fault in [
        Fault::Status(503),
        Fault::Status(500),
        Fault::TooManyRequests {
            retry_after_secs: 2,
        },
        Fault::DropResponse,
    ] {
        let n = at();
        proxy.inject(Rule::new("GET", fault.clone(), Times::Next(1)));
        assert!(get(1).unwrap() == data, "{fault:?}");
        assert_eq!(since(n, "GET"), [Some(fault), None]);
    }
    let n = at();
    proxy.inject(Rule::new("GET", Fault::Status(503), Times::Next(2)));
    let e = format!("{:#}", get(1).unwrap_err());
    assert!(
        e.contains("HTTP 503") && e.contains("0000000000000001-0000000000000001.ltx"),
        "{e}"
    );
    assert_eq!(since(n, "GET").len(), 2);
    // Cut after the answer began: an error from the read (reset), or a short body
    // (truncated: the client cannot tell; the LTX decoder's checksums do).
    proxy.inject(Rule::new(
        "GET",
        Fault::ResetDownload { after: 5000 },
        Times::Next(1),
    ));
    let e = format!("{:#}", get(1).unwrap_err());
    assert!(e.contains("reset"), "{e}");
    proxy.inject(Rule::new(
        "GET",
        Fault::Truncate { keep: 5000 },
        Times::Next(1),
    ));
    assert_eq!(get(1).unwrap().len(), 5000);
    proxy.inject(Rule::new(
        "GET",
        Fault::SlowDownload {
            bytes: 1000,
            every: Duration::from_millis(5),
        },
        Times::Next(1),
    ));
    assert!(get(1).unwrap() == data);

    // LIST: repeated once, like a GET.
    let n = at();
    proxy.inject(Rule::new("LIST", Fault::Status(500), Times::Next(1)));
    assert_eq!(c.ltx_files(Level::L0).unwrap().len(), 2);
    proxy.inject(Rule::new("LIST", Fault::Status(503), Times::Next(2)));
    let e = format!("{:#}", c.ltx_files(Level::L0).unwrap_err());
    assert!(e.contains("LIST") && e.contains("HTTP 503"), "{e}");
    assert_eq!(since(n, "LIST").len(), 4);

    // The batch delete: a 503 goes to the caller, and nothing is deleted.
    let n = at();
    proxy.inject(Rule::new("POST-delete", Fault::Status(503), Times::Next(1)));
    let pairs = [(TxId::new(1), TxId::new(1)), (TxId::new(2), TxId::new(2))];
    let e = format!("{:#}", c.delete_ltx(Level::L0, &pairs).unwrap_err());
    assert!(e.contains("DeleteObjects") && e.contains("HTTP 503"), "{e}");
    assert_eq!(server.keys("client/app.db/0000/").len(), 2);
    c.delete_ltx(Level::L0, &pairs).unwrap();
    assert!(server.keys("client/app.db/0000/").is_empty());
    assert_eq!(since(n, "POST-delete").len(), 2);
}

/// A writer runs and every sync waits for the replica while L0 uploads fail: 503, 500, a
/// reset mid-upload, a lost answer (the object arrived, the daemon never heard), four in a
/// row; later half of the uploads reset. No acknowledged row is lost and the restore equals
/// the source; `/list` shows each failure and clears after; the same file is retried with
/// growing backoff and nothing else is sent meanwhile; the lost answer is reconciled by
/// comparing, not by overwriting.
#[test]
fn upload_faults_lose_no_acknowledged_row_and_back_off() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = FaultProxy::start(server.port);
    let db = dir.path("app.db");
    create_db(&db);
    let url = proxy.url("uploads/app.db");
    let config = s3_config(&dir, &[(&db, &url)], "");
    let daemon = Daemon::start(&config);
    let writer = Writer::start(&db, 100);
    daemon.sync_wait(&db);
    // No compaction request mixes with the ones counted below: every level waits for its
    // interval boundary (an hour or a day away), even at startup.

    let l0 = "uploads/app.db/0000/";
    for fault in [
        Fault::Status(503),
        Fault::Status(500),
        Fault::ResetUpload { after: 64 },
        Fault::DropResponse,
    ] {
        proxy.inject(Rule::new("PUT", fault, Times::Next(1)).key(l0));
    }
    let watch = ErrorWatch::start(&daemon.socket, &db);
    let mut acked = 0;
    // The first waited sync outlasts the four failures; a few more follow.
    let mut after_faults = 0;
    while after_faults < 3 {
        let before = writer.last_id.load(Ordering::SeqCst);
        daemon.sync_wait(&db);
        acked = before;
        if proxy.faults_left() == 0 {
            after_faults += 1;
        }
    }
    let errors = watch.stop();
    assert!(
        list_entry(&daemon, &db)["replica_error"].is_null(),
        "the error clears once uploads go through"
    );
    for (what, shown) in [
        ("a 503", "HTTP 503 ServiceUnavailable"),
        ("a 500", "HTTP 500 InternalError"),
        ("a reset", "reset"),
    ] {
        assert!(
            errors.iter().any(|e| e.contains(shown)),
            "/list never showed {what} ({shown:?}): {errors:#?}"
        );
    }
    assert!(
        errors.iter().all(|e| e.contains(&url)),
        "every error names the replica: {errors:#?}"
    );

    // The same file, retried after 1, 2, 4, 8 s (each ±20%), and nothing else sent meanwhile.
    let seen = proxy.seen();
    let faulted: Vec<&Seen> = seen.iter().filter(|s| s.fault.is_some()).collect();
    assert_eq!(faulted.len(), 4, "{faulted:#?}");
    assert!(
        faulted.iter().all(|s| s.path() == faulted[0].path()),
        "the same file is retried: {faulted:#?}"
    );
    let fifth = next_put(&seen, faulted[3]).expect("a fifth attempt");
    let attempts: Vec<Instant> = faulted.iter().map(|s| s.at).chain([fifth.at]).collect();
    for (i, w) in attempts.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let least = Duration::from_millis(800) * 2u32.pow(i as u32);
        let most = Duration::from_millis(1200) * 2u32.pow(i as u32) + Duration::from_secs(2);
        assert!(
            gap >= least && gap <= most,
            "attempt {} came {gap:?} after the one before (backoff {least:?}..{most:?})",
            i + 2
        );
    }
    let meanwhile: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at >= attempts[0] && s.at <= attempts[4])
        .collect();
    let uploads = meanwhile.iter().filter(|s| s.path().contains(l0)).count();
    assert_eq!(
        uploads, 5,
        "only the five attempts reached the server: {meanwhile:#?}"
    );
    // The lost answer: the object is there; the retry is refused (If-None-Match) and the
    // bytes compared (HEAD, GET) instead of overwritten.
    let after_fifth: Vec<&str> = seen
        .iter()
        .filter(|s| s.at > fifth.at && s.path() == fifth.path())
        .map(|s| s.kind.as_str())
        .collect();
    assert_eq!(after_fifth, ["HEAD", "GET"], "{seen:#?}");
    let log = daemon.log_text();
    assert!(log.contains(" attempt=4 "), "{log}");
    assert!(log.contains("uploads resumed"), "{log}");

    // Half the uploads reset mid-upload: each failure is retried after about a second, as
    // the backoff starts over after every success.
    let failed_before = log.matches(" attempt=1 ").count();
    proxy.inject(
        Rule::new(
            "PUT",
            Fault::ResetUpload { after: 100 },
            Times::Fraction(0.5),
        )
        .key(l0),
    );
    let faults = || proxy.seen().iter().filter(|s| s.fault.is_some()).count();
    while faults() < 4 + 4 {
        let before = writer.last_id.load(Ordering::SeqCst);
        daemon.sync_wait(&db);
        acked = before;
    }
    proxy.clear();
    let log = daemon.log_text();
    assert!(
        log.matches(" attempt=1 ").count() >= failed_before + 4,
        "{log}"
    );
    assert_eq!(
        log.matches(" attempt=2 ").count(),
        1,
        "no second failure in a row while half the uploads fail: {log}"
    );

    let last = writer.stop();
    daemon.sync_wait(&db);
    let out = dir.path("restored.db");
    let o = restore_url(&server.url("uploads/app.db"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(integrity(&out), "ok");
    let got = ids(&out);
    let have: BTreeSet<i64> = got.iter().copied().collect();
    let missing: Vec<i64> = (1..=acked).filter(|i| !have.contains(i)).take(10).collect();
    assert!(missing.is_empty(), "acknowledged rows missing: {missing:?}");
    assert_same_ids(&got, &ids(&db), "restore after the faults");
    assert_eq!(got.len() as i64, last);
    assert_eq!(daemon.terminate(), 0);
}

/// An upload whose answer is lost, retried: the object is there, so the retry compares it
/// with the local file, and that download is cut short. A short download is a failed
/// download, retried; it is not "different content", which would accuse another writer.
#[test]
fn a_cut_comparison_download_is_a_failed_download_not_a_conflict() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = FaultProxy::start(server.port);
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = proxy.url("compare/app.db");
    let config = s3_config(&dir, &[(&db, &url)], "");
    let daemon = Daemon::start(&config);
    conn.execute("INSERT INTO t(v) VALUES ('first')", [])
        .unwrap();
    daemon.sync_wait(&db);
    // No compaction request mixes with the ones below: every level waits for its interval
    // boundary (an hour or a day away), even at startup.

    let l0 = "compare/app.db/0000/";
    proxy.inject(Rule::new("PUT", Fault::DropResponse, Times::Next(1)).key(l0));
    proxy.inject(Rule::new("GET", Fault::Truncate { keep: 10 }, Times::Next(1)).key(l0));
    let watch = ErrorWatch::start(&daemon.socket, &db);
    conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(3000)))", [])
        .unwrap();
    daemon.sync_wait(&db);
    let errors = watch.stop();
    assert_eq!(proxy.faults_left(), 0, "{:#?}", proxy.seen());
    let log = daemon.log_text();
    assert!(log.contains(" attempt=2 "), "{log}");
    assert!(
        !log.contains("different content")
            && errors.iter().all(|e| !e.contains("different content")),
        "a cut download taken for a conflict: {errors:#?}"
    );
    let cut = errors
        .iter()
        .find(|e| e.contains(" GET "))
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert!(cut.contains("ended after"), "{cut}");
    eprintln!("{errors:#?}");
    let out = dir.path("restored.db");
    let o = restore_url(&server.url("compare/app.db"), &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ids(&out), ids(&db));
    assert_eq!(daemon.terminate(), 0);
}

/// A 429 with `Retry-After: 2` on an upload, and on a download during restore: the retry
/// waits (the daemon's backoff, rust-s3's second of pause for a restore), is not a storm, and
/// succeeds. Neither honours `Retry-After` itself (see the report in the commit message):
/// rust-s3's `fail-on-err` drops the answer's headers, so the client never sees it.
#[test]
fn throttled_requests_wait_before_retrying() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = FaultProxy::start(server.port);
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = proxy.url("throttled/app.db");
    let config = s3_config(&dir, &[(&db, &url)], "");
    let daemon = Daemon::start(&config);
    conn.execute("INSERT INTO t(v) VALUES ('first')", [])
        .unwrap();
    daemon.sync_wait(&db);

    let throttle = Fault::TooManyRequests {
        retry_after_secs: 2,
    };
    proxy.inject(Rule::new("PUT", throttle.clone(), Times::Next(1)).key("throttled/app.db/0000/"));
    conn.execute("INSERT INTO t(v) VALUES ('second')", [])
        .unwrap();
    daemon.sync_wait(&db);
    let seen = proxy.seen();
    let throttled = seen.iter().find(|s| s.fault.is_some()).expect("a 429");
    let retry = next_put(&seen, throttled).expect("a retry");
    let gap = retry.at - throttled.at;
    eprintln!("upload retried {gap:?} after a 429 with Retry-After: 2");
    assert!(
        gap >= Duration::from_millis(800),
        "retried {gap:?} after a 429: no backoff"
    );
    let puts = seen
        .iter()
        .filter(|s| s.kind == "PUT" && s.path() == throttled.path())
        .count();
    assert_eq!(puts, 2, "one 429, one retry: {seen:#?}");
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("upload failed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("HTTP 429 TooManyRequests") && line.contains(" backoff="),
        "{line}"
    );
    assert_eq!(daemon.terminate(), 0);

    // A restore whose first download is throttled: rust-s3 retries it after a second.
    let first_get = proxy.seen().len();
    proxy.inject(Rule::new("GET", throttle, Times::Next(1)));
    let out = dir.path("restored.db");
    let o = restore_url(&url, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ids(&out), ids(&db));
    let seen = proxy.seen().split_off(first_get);
    let throttled = seen.iter().find(|s| s.fault.is_some()).expect("a 429");
    let retry = seen
        .iter()
        .find(|s| s.at > throttled.at && s.kind == "GET" && s.path() == throttled.path())
        .expect("a retry");
    let gap = retry.at - throttled.at;
    eprintln!("download retried {gap:?} after a 429 with Retry-After: 2");
    assert!(gap >= Duration::from_millis(900), "{gap:?}");
}

/// What one restore through the proxy did.
#[derive(Debug)]
enum Outcome {
    Restored,
    Failed(String),
}

/// Downloads fail during `litestream restore`: a reset mid-body (small and large objects),
/// truncated bodies (half, all but the last byte), 5xx. A restore either retries and gives
/// the source's database, or fails with an error naming the file; it never leaves a database
/// (or a temporary file) behind on failure.
#[test]
fn restore_download_faults_give_the_right_database_or_a_clear_error() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = FaultProxy::start(server.port);
    let db = dir.path("app.db");
    let conn = create_db(&db);
    // The first file large enough to arrive in several 64 KiB pieces.
    for _ in 0..300 {
        conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(600)))", [])
            .unwrap();
    }
    let prefix = "restore/app.db";
    let config = s3_config(&dir, &[(&db, &server.url(prefix))], "");
    let daemon = Daemon::start(&config);
    daemon.sync_wait(&db);
    for round in 0..4 {
        for _ in 0..20 {
            conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(100)))", [])
                .unwrap();
        }
        if round == 2 {
            conn.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
        }
        daemon.sync_wait(&db);
    }
    assert_eq!(daemon.terminate(), 0);
    let want = ids(&db);
    let keys = server.keys(&format!("{prefix}/"));
    assert!(keys.len() >= 5, "{keys:?}");
    let size = |k: &str| {
        std::fs::metadata(server.root.join(BUCKET).join(k))
            .unwrap()
            .len() as usize
    };
    let (first, last) = (keys[0].clone(), keys[keys.len() - 1].clone());
    let (first_size, last_size) = (size(&first), size(&last));
    assert!(first_size > 3 * 64 * 1024, "{first}: {first_size} bytes");
    let name = |k: &str| k.rsplit('/').next().unwrap().to_string();

    let url = proxy.url(prefix);
    let run = |label: &str, rules: Vec<Rule>| -> Outcome {
        proxy.clear();
        for r in rules {
            proxy.inject(r);
        }
        let out_dir = dir.path(&format!("out-{}", label.replace(' ', "-")));
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("app.db");
        let o = restore_url(&url, &out);
        let faulted = proxy.seen().iter().filter(|s| s.fault.is_some()).count();
        assert!(faulted > 0, "{label}: no fault was injected");
        proxy.clear();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let outcome = if o.status.success() {
            // (Before SQLite opens it and adds its -wal and -shm.)
            assert_eq!(dir_names(&out_dir), ["app.db"], "{label}");
            assert_eq!(integrity(&out), "ok", "{label}");
            assert_same_ids(&ids(&out), &want, label);
            Outcome::Restored
        } else {
            assert!(
                dir_names(&out_dir).is_empty(),
                "{label}: a failed restore left {:?} behind ({stderr})",
                dir_names(&out_dir)
            );
            Outcome::Failed(stderr)
        };
        eprintln!("{label}: {outcome:?}");
        outcome
    };
    let fails_naming = |outcome: Outcome, file: &str, why: &[&str]| match outcome {
        Outcome::Failed(e) => {
            assert!(e.contains(&name(file)), "the error names {file}: {e}");
            assert!(
                why.iter().any(|w| e.contains(w)),
                "the error says why ({why:?}): {e}"
            );
        }
        Outcome::Restored => panic!("restored despite a broken download of {file}"),
    };
    let get = |fault: Fault, times: Times, key: &str| vec![Rule::new("GET", fault, times).key(key)];

    // A reset after the first 64 KiB pieces of a large file, and inside a small one.
    let o = run(
        "reset large",
        get(
            Fault::ResetDownload { after: 100_000 },
            Times::Next(1),
            &first,
        ),
    );
    fails_naming(o, &first, &["reset", "Connection"]);
    let o = run(
        "reset small",
        get(
            Fault::ResetDownload {
                after: last_size / 2,
            },
            Times::Next(1),
            &last,
        ),
    );
    fails_naming(o, &last, &["reset", "Connection"]);
    // Truncated: half of the large file, all but the last byte of the last file.
    let o = run(
        "truncated half",
        get(
            Fault::Truncate {
                keep: first_size / 2,
            },
            Times::Next(1),
            &first,
        ),
    );
    fails_naming(
        o,
        &first,
        &["truncated", "end of file", "unexpected end", "EOF", "eof"],
    );
    let o = run(
        "truncated last byte",
        get(
            Fault::Truncate {
                keep: last_size - 1,
            },
            Times::Next(1),
            &last,
        ),
    );
    fails_naming(
        o,
        &last,
        &["truncated", "end of file", "unexpected end", "EOF", "eof"],
    );
    // One 503 (or 500) on a download or a listing: retried, and the restore succeeds.
    assert!(matches!(
        run("503 once", get(Fault::Status(503), Times::Next(1), &last)),
        Outcome::Restored
    ));
    assert!(matches!(
        run(
            "500 on list once",
            vec![Rule::new("LIST", Fault::Status(500), Times::Next(1))]
        ),
        Outcome::Restored
    ));
    // A download that keeps failing: an error naming the file and the status.
    let o = run("503 always", get(Fault::Status(503), Times::Always, &last));
    fails_naming(o, &last, &["HTTP 503"]);
    // A slow but steady download arrives whole.
    assert!(matches!(
        run(
            "slow download",
            get(
                Fault::SlowDownload {
                    bytes: 256,
                    every: Duration::from_millis(5)
                },
                Times::Always,
                &last
            )
        ),
        Outcome::Restored
    ));
}

/// One database's replica stalls, first on an upload (the answer never comes), then, at the
/// next start, on a download (its bytes trickle): the other database keeps replicating with
/// waited syncs, and each shutdown finishes within shutdown-sync-timeout and a few seconds,
/// keeping the unconfirmed file spooled; once the replica answers again, it is uploaded (it
/// was stored: found with the same bytes) and both restore to their sources.
#[test]
fn a_stalled_replica_holds_up_neither_other_databases_nor_shutdown() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = FaultProxy::start(server.port);
    let (a, b) = (dir.path("a.db"), dir.path("b.db"));
    let (ca, cb) = (create_db(&a), create_db(&b));
    let (url_a, url_b) = (proxy.url("stall/a.db"), proxy.url("stall/b.db"));
    let timeout = Duration::from_secs(3);
    let config = s3_config(
        &dir,
        &[(&a, &url_a), (&b, &url_b)],
        "shutdown-sync-timeout: 3s\n",
    );
    let daemon = Daemon::start(&config);
    ca.execute("INSERT INTO t(v) VALUES ('a')", []).unwrap();
    cb.execute("INSERT INTO t(v) VALUES ('b')", []).unwrap();
    daemon.sync_wait(&a);
    daemon.sync_wait(&b);
    // b.db replicates, each waited sync answered in seconds, whatever a.db's replica does.
    let b_keeps_replicating = |daemon: &Daemon, round: &str| {
        for i in 0..5 {
            cb.execute("INSERT INTO t(v) VALUES (?1)", [format!("{round} {i}")])
                .unwrap();
            let t = Instant::now();
            daemon.sync_wait(&b);
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "b.db's sync took {:?} while a.db stalls ({round})",
                t.elapsed()
            );
        }
        let e = list_entry(daemon, &b);
        assert_eq!(e["replicated_txid"], e["txid"], "{e}");
    };
    // SIGTERM; the daemon's log after it exits.
    let shutdown = |daemon: Daemon, slack: Duration, round: &str| -> String {
        let log = daemon.log.clone();
        let started = Instant::now();
        let code = daemon.terminate();
        let took = started.elapsed();
        eprintln!("shutdown with a stalled {round} took {took:?}");
        assert!(
            took < timeout + slack,
            "shutdown with a stalled {round} took {took:?} (shutdown-sync-timeout {timeout:?})"
        );
        assert_eq!(code, 0);
        std::fs::read_to_string(log).unwrap()
    };

    // An upload that never gets its answer.
    proxy.inject(
        Rule::new("PUT", Fault::Delay(Duration::from_secs(600)), Times::Always).key("stall/a.db/"),
    );
    ca.execute("INSERT INTO t(v) VALUES ('a stalled')", [])
        .unwrap();
    let r = daemon.request(
        "POST",
        "/sync",
        Some(&format!(r#"{{"path":"{}"}}"#, a.display())),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(10), "a stalled upload of a.db", || {
        proxy.seen().iter().any(|s| s.fault.is_some())
    });
    b_keeps_replicating(&daemon, "upload");
    let e = list_entry(&daemon, &a);
    assert!(
        e["replicated_txid"].as_u64() < e["txid"].as_u64(),
        "a.db is behind: {e}"
    );
    // a.db's thread waits for its upload until the deadline, then leaves it spooled.
    let log = shutdown(daemon, Duration::from_secs(3), "upload");
    assert!(
        log.lines().any(
            |l| l.contains("msg=\"shutting down with files not yet replicated")
                && l.contains(" files=1")
        ),
        "{log}"
    );

    // At the next start a.db reads where its replica stands: a download that trickles.
    proxy.clear();
    proxy.inject(
        Rule::new(
            "GET",
            Fault::SlowDownload {
                bytes: 1,
                every: Duration::from_secs(1),
            },
            Times::Always,
        )
        .key("stall/a.db/"),
    );
    let daemon = Daemon::start(&config);
    wait_until(
        Duration::from_secs(10),
        "a trickling download of a.db",
        || proxy.seen().iter().any(|s| s.fault.is_some()),
    );
    b_keeps_replicating(&daemon, "download");
    // a.db's thread is inside the request (rust-s3 gives it 60 s): the shutdown waits for it
    // 5 s past the deadline and 2 s more for its exit, then leaves it to the process exit.
    let log = shutdown(daemon, Duration::from_secs(9), "download");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("a.db"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The replica answers again: a.db's spooled file goes up (it is there already, from the
    // upload whose answer was held back) and both databases restore.
    proxy.clear();
    let daemon = Daemon::start(&config);
    daemon.sync_wait(&a);
    daemon.sync_wait(&b);
    for (db, url) in [(&a, &url_a), (&b, &url_b)] {
        let out = dir.path(&format!(
            "restored-{}",
            db.file_name().unwrap().to_string_lossy()
        ));
        let o = restore_url(url, &out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(ids(&out), ids(db));
    }
    assert_eq!(daemon.terminate(), 0);
}

/// SIGTERM while a compaction trickles its inputs down: the daemon exits once its final sync
/// is done, not when the compaction would be (it runs again at the next start); nothing is
/// logged as failed, and the replica restores.
#[test]
fn shutdown_does_not_wait_for_a_compaction_in_progress() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = FaultProxy::start(server.port);
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = proxy.url("slow/app.db");
    let config = write_config(
        dir.dir.path(),
        &[(&db, &url)],
        &format!(
            "{}    monitor-interval: 100ms\n",
            credentials_yaml(ACCESS_KEY, SECRET_KEY)
        ),
        "levels:\n  - interval: 1s\nl0-retention-check-interval: 1h\nshutdown-sync-timeout: 20s\n",
    );
    let daemon = Daemon::start(&config);
    for i in 0..20 {
        conn.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")])
            .unwrap();
        daemon.sync_wait(&db);
    }
    // Level-1 compaction reads the level-0 files: 100 bytes a second from now on.
    proxy.inject(
        Rule::new(
            "GET",
            Fault::SlowDownload {
                bytes: 100,
                every: Duration::from_secs(1),
            },
            Times::Always,
        )
        .key("slow/app.db/0000/"),
    );
    wait_until(
        Duration::from_secs(10),
        "a compaction reading level 0",
        || proxy.seen().iter().any(|s| s.fault.is_some()),
    );
    conn.execute("INSERT INTO t(v) VALUES ('last')", [])
        .unwrap();
    let log = daemon.log.clone();
    let started = Instant::now();
    assert_eq!(daemon.terminate(), 0);
    let took = started.elapsed();
    let log = std::fs::read_to_string(log).unwrap();
    // The compaction alone would take minutes at this rate; the old shutdown waited for it
    // until shutdown-sync-timeout (20 s) had passed.
    assert!(
        took < Duration::from_secs(8),
        "shutdown took {took:?}: {log}"
    );
    assert!(!log.contains("level=ERROR"), "{log}");
    assert!(!log.contains("level=WARN"), "{log}");
    proxy.clear();
    let out = dir.path("out.db");
    let o = restore_url(&url, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_ids(&ids(&out), &ids(&db), "after the shutdown");
}
