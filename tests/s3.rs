//! S3 replicas against a real S3-compatible server (s3s-fs, SigV4 checked, on disk) on
//! 127.0.0.1: the client's requests, kill -9 and restore through S3, interop both ways with
//! Litestream 0.5.17, a 30 s outage under load, and wrong credentials.

mod common;
#[path = "common/s3.rs"]
mod s3server;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use litestream::ltx::{Level, TxId};
use litestream::replica::s3::S3ReplicaClient;
use litestream::replica::url::{parse_replica_url, ReplicaTarget};
use litestream::replica::ReplicaClient;
use s3server::*;

/// A client for `prefix` in the test bucket, with the given secret.
fn client(server: &S3Server, prefix: &str, secret: &str) -> S3ReplicaClient {
    let url = server.url(prefix);
    let ReplicaTarget::S3(mut target) = parse_replica_url(&url).unwrap() else {
        panic!("not s3")
    };
    target.access_key_id = Some(ACCESS_KEY.into());
    target.secret_access_key = Some(secret.into());
    S3ReplicaClient::new(&url, &target).unwrap()
}

/// Our `restore` of an S3 URL, credentials from the environment.
fn restore_s3(url: &str, out: &Path, extra: &[&str]) {
    let mut cmd = Command::new(bin());
    cmd.args(["restore", "-o", out.to_str().unwrap()])
        .args(extra)
        .arg(url);
    let o = with_credentials(&mut cmd).output().unwrap();
    assert!(
        o.status.success(),
        "restore {url} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A config for one database replicating to `url` with the test credentials.
fn s3_config(dir: &Path, db: &Path, url: &str, secret: &str, extra_db: &str) -> std::path::PathBuf {
    let extra = format!("{}{extra_db}", credentials_yaml(ACCESS_KEY, secret));
    write_config(dir, &[(db, url)], &extra, "")
}

#[test]
fn client_round_trip_immutability_multipart_and_paging() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let c = client(&server, "lib/app.db", SECRET_KEY);
    assert!(c.ltx_files(Level::L0).unwrap().is_empty());

    // One small file: the key layout, the metadata, a round trip.
    let small = dir.path("small.ltx");
    std::fs::write(&small, b"small file bytes").unwrap();
    let ts = 1_790_000_000_123;
    c.put_ltx(Level::L0, TxId::new(1), TxId::new(2), ts, &small)
        .unwrap();
    assert_eq!(
        server.keys("lib/app.db/"),
        ["lib/app.db/0000/0000000000000001-0000000000000002.ltx"]
    );
    let files = c.ltx_files(Level::L0).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].min, files[0].max, files[0].size),
        (TxId::new(1), TxId::new(2), 16)
    );
    assert!(files[0].created_ms > 1_700_000_000_000, "{files:?}");
    assert_eq!(
        c.object_timestamp(Level::L0, TxId::new(1), TxId::new(2))
            .unwrap(),
        Some(ts)
    );
    let mut back = vec![];
    c.open_ltx(Level::L0, TxId::new(1), TxId::new(2))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, b"small file bytes");
    assert_eq!(
        c.conditional_put(),
        Some(true),
        "s3s-fs honours If-None-Match"
    );

    // Immutable: the same bytes again succeed (a retry), other bytes fail and change nothing.
    c.put_ltx(Level::L0, TxId::new(1), TxId::new(2), ts, &small)
        .unwrap();
    let other = dir.path("other.ltx");
    std::fs::write(&other, b"other file bytes").unwrap();
    let e = format!(
        "{:#}",
        c.put_ltx(Level::L0, TxId::new(1), TxId::new(2), ts, &other)
            .unwrap_err()
    );
    assert!(e.contains("already exists with different content"), "{e}");
    assert!(
        e.contains(&server.url("lib/app.db")),
        "names the replica: {e}"
    );
    assert!(
        e.contains("0000/0000000000000001-0000000000000002.ltx"),
        "names the key: {e}"
    );
    let mut back = vec![];
    c.open_ltx(Level::L0, TxId::new(1), TxId::new(2))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, b"small file bytes");

    // Against a server that ignores If-None-Match the client checks with HEAD first: same
    // bytes succeed, other bytes fail, a new key goes up.
    let fallback = client(&server, "lib/app.db", SECRET_KEY);
    fallback.assume_no_conditional_put();
    fallback
        .put_ltx(Level::L0, TxId::new(1), TxId::new(2), ts, &small)
        .unwrap();
    let e = format!(
        "{:#}",
        fallback
            .put_ltx(Level::L0, TxId::new(1), TxId::new(2), ts, &other)
            .unwrap_err()
    );
    assert!(e.contains("already exists with different content"), "{e}");
    fallback
        .put_ltx(Level::L0, TxId::new(3), TxId::new(3), ts, &other)
        .unwrap();
    assert_eq!(fallback.ltx_files(Level::L0).unwrap().len(), 2);
    fallback
        .delete_ltx(Level::L0, &[(TxId::new(3), TxId::new(3))])
        .unwrap();
    assert_eq!(fallback.conditional_put(), Some(false));

    // A missing object: an error from open_ltx that names the replica and the key.
    let e = format!(
        "{:#}",
        c.open_ltx(Level::L0, TxId::new(7), TxId::new(7))
            .err()
            .unwrap()
    );
    assert!(
        e.contains(&server.url("lib/app.db"))
            && e.contains("0000000000000007-0000000000000007.ltx"),
        "{e}"
    );
    assert!(e.contains("404") || e.contains("NoSuchKey"), "{e}");

    // A snapshot larger than one part goes up multipart and comes back intact, streamed.
    let big = dir.path("big.ltx");
    let size = 2 * litestream::replica::s3::PART_SIZE + 12_345;
    let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &content).unwrap();
    c.put_ltx(Level::SNAPSHOT, TxId::new(1), TxId::new(0x2a), ts + 1, &big)
        .unwrap();
    let snaps = c.ltx_files(Level::SNAPSHOT).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].size, size as u64);
    assert_eq!(
        c.object_timestamp(Level::SNAPSHOT, TxId::new(1), TxId::new(0x2a))
            .unwrap(),
        Some(ts + 1)
    );
    let mut back = Vec::with_capacity(size);
    c.open_ltx(Level::SNAPSHOT, TxId::new(1), TxId::new(0x2a))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == content, "multipart object differs");
    // Immutable for multipart too (HEAD first): same bytes fine, others refused.
    c.put_ltx(Level::SNAPSHOT, TxId::new(1), TxId::new(0x2a), ts + 1, &big)
        .unwrap();
    let e = format!(
        "{:#}",
        c.put_ltx(Level::SNAPSHOT, TxId::new(1), TxId::new(0x2a), ts, &small)
            .unwrap_err()
    );
    assert!(e.contains("already exists with different content"), "{e}");
    // Reading only the header of a big object stops early without error.
    let mut head = [0u8; 100];
    c.open_ltx(Level::SNAPSHOT, TxId::new(1), TxId::new(0x2a))
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(&head[..], &content[..100]);

    // More keys than one LIST page (1000), then a batch delete.
    let c = Arc::new(c);
    let n: u64 = 1100;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (c, small) = (c.clone(), small.clone());
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    c.put_ltx(Level::L1, TxId::new(i + 1), TxId::new(i + 1), ts, &small)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let listed = c.ltx_files(Level::L1).unwrap();
    assert_eq!(listed.len() as u64, n);
    assert!(listed.windows(2).all(|w| w[0].min < w[1].min), "sorted");
    let mut all: Vec<(TxId, TxId)> = listed.iter().map(|f| (f.min, f.max)).collect();
    all.push((TxId::new(99_999), TxId::new(99_999))); // missing: not an error
    c.delete_ltx(Level::L1, &all).unwrap();
    assert!(c.ltx_files(Level::L1).unwrap().is_empty());
    assert_eq!(
        c.ltx_files(Level::L0).unwrap().len(),
        1,
        "other levels untouched"
    );
}

/// Replicate through S3 under a writer, kill -9 the daemon at random moments, restart, and
/// restore: every acknowledged row is there, and at the end exactly the source's rows.
#[test]
fn kill9_restart_and_restore_through_s3() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let db = dir.path("app.db");
    create_db(&db);
    let url = server.url("kill9/app.db");
    let config = s3_config(
        dir.dir.path(),
        &db,
        &url,
        SECRET_KEY,
        "    min-checkpoint-page-count: 50\n",
    );
    let writer = Writer::start(&db, 300);
    let mut daemon = Daemon::start(&config);
    let mut acked = 0;
    for kill in 0..4 {
        let until = Instant::now() + Duration::from_millis(rand_range(500, 1500));
        while Instant::now() < until {
            let before = writer.last_id.load(Ordering::SeqCst);
            daemon.sync_wait(&db);
            acked = acked.max(before);
        }
        daemon.kill9();
        if kill == 1 {
            let out = dir.path("mid.db");
            restore_s3(&url, &out, &[]);
            assert_eq!(integrity(&out), "ok");
            let got: BTreeSet<i64> = ids(&out).into_iter().collect();
            let missing: Vec<i64> = (1..=acked).filter(|i| !got.contains(i)).take(10).collect();
            assert!(missing.is_empty(), "acknowledged rows missing: {missing:?}");
        }
        daemon = Daemon::start(&config);
    }
    writer.stop();
    daemon.sync_wait(&db);
    let out = dir.path("final.db");
    restore_s3(&url, &out, &[]);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(ids(&out), ids(&db));
    assert!(
        acked > 300,
        "acknowledged too little to mean anything: {acked}"
    );
    assert!(
        server.keys("kill9/app.db/0000/").len() > 5,
        "L0 files under <prefix>/0000/"
    );
    assert_eq!(daemon.terminate(), 0);
}

/// Our S3 replica (with checkpoints) restored by Litestream 0.5.17, byte-identical to ours,
/// at the latest state and at a TXID in the middle.
#[test]
fn litestream_restores_our_s3_replica() {
    let reference = reference_bin();
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = server.url("ours/app.db");
    let config = s3_config(
        dir.dir.path(),
        &db,
        &url,
        SECRET_KEY,
        "    min-checkpoint-page-count: 20\n",
    );
    let daemon = Daemon::start(&config);
    let (mut mid_txid, mut mid_ms) = (0, 0);
    for round in 0..12 {
        for _ in 0..50 {
            conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(200)))", [])
                .unwrap();
        }
        if round % 3 == 0 {
            conn.execute("DELETE FROM t WHERE id % 7 = 0", []).unwrap();
        }
        let v = daemon.sync_wait(&db);
        if round == 5 {
            mid_txid = v["txid"].as_u64().unwrap();
            mid_ms = litestream::timefmt::now_ms();
            // The next round's files must carry a later timestamp.
            wait_until(Duration::from_secs(1), "the clock to move", || {
                litestream::timefmt::now_ms() > mid_ms
            });
        }
    }
    // `litestream ltx` on the S3 URL lists what the daemon uploaded.
    let mut cmd = Command::new(bin());
    cmd.args(["ltx", &url]);
    let o = with_credentials(&mut cmd).output().unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(listing.contains(&format!("{mid_txid:016x}")), "{listing}");
    let theirs = dir.path("theirs.db");
    let mut cmd = Command::new(&reference);
    cmd.args(["restore", "-o", theirs.to_str().unwrap(), &url]);
    let o = with_credentials(&mut cmd).output().unwrap();
    assert!(
        o.status.success(),
        "Litestream failed to restore our S3 replica: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ours = dir.path("ours.db");
    restore_s3(&url, &ours, &[]);
    assert_eq!(ids(&theirs), ids(&db));
    assert!(
        std::fs::read(&theirs).unwrap() == std::fs::read(&ours).unwrap(),
        "byte-identical restores"
    );
    let theirs_mid = dir.path("theirs-mid.db");
    let mut cmd = Command::new(&reference);
    cmd.args(["restore", "-txid", &format!("{mid_txid:016x}"), "-o"])
        .arg(&theirs_mid)
        .arg(&url);
    let o = with_credentials(&mut cmd).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours_mid = dir.path("ours-mid.db");
    restore_s3(&url, &ours_mid, &["-txid", &format!("{mid_txid:x}")]);
    assert!(std::fs::read(&theirs_mid).unwrap() == std::fs::read(&ours_mid).unwrap());
    assert_eq!(integrity(&theirs_mid), "ok");
    // Point in time through S3: both tools pick the same state for the same timestamp.
    let at = litestream::timefmt::rfc3339_ms(mid_ms);
    let theirs_at = dir.path("theirs-at.db");
    let mut cmd = Command::new(&reference);
    cmd.args(["restore", "-timestamp", &at, "-o"])
        .arg(&theirs_at)
        .arg(&url);
    let o = with_credentials(&mut cmd).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours_at = dir.path("ours-at.db");
    restore_s3(&url, &ours_at, &["-timestamp", &at]);
    assert!(
        std::fs::read(&ours_at).unwrap() == std::fs::read(&ours_mid).unwrap(),
        "our restore at {at} is the state at txid {mid_txid:x}"
    );
    assert!(std::fs::read(&theirs_at).unwrap() == std::fs::read(&ours_at).unwrap());
    assert_eq!(daemon.terminate(), 0);
}

/// A replica Litestream 0.5.17 wrote to S3 (with its checkpoints) restored by ours.
#[test]
fn we_restore_a_litestream_s3_replica() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = server.url("theirs/app.db");
    let config = write_config(
        dir.dir.path(),
        &[(&db, &url)],
        "    min-checkpoint-page-count: 20\n",
        "  enabled: true\n",
    );
    let theirs = ReferenceDaemon::start_with(&config, with_credentials);
    let sync = || theirs.sync_wait(&db);
    for round in 0..10 {
        for _ in 0..40 {
            conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(300)))", [])
                .unwrap();
        }
        if round % 4 == 1 {
            conn.execute("UPDATE t SET v = 'u' WHERE id % 5 = 0", [])
                .unwrap();
        }
        sync();
    }
    let out = dir.path("ours.db");
    restore_s3(&url, &out, &[]);
    drop(theirs);
    assert!(
        !server.keys("theirs/app.db/0000/").is_empty(),
        "Litestream wrote <prefix>/0000/ keys"
    );
    assert_eq!(integrity(&out), "ok");
    assert_eq!(rows(&out), rows(&db));
}

/// The S3 server is gone for 30 s under a steady writer: syncs keep completing locally,
/// `/list` shows the replica error, and once it is back the replica catches up and a restore
/// has every row.
#[test]
fn s3_outage_of_30s_under_load() {
    let dir = TestDir::new();
    let mut server = S3Server::start(dir.dir.path());
    let db = dir.path("app.db");
    create_db(&db);
    let url = server.url("outage/app.db");
    let config = s3_config(
        dir.dir.path(),
        &db,
        &url,
        SECRET_KEY,
        "    min-checkpoint-page-count: 100\n",
    );
    let daemon = Daemon::start(&config);
    let writer = Writer::start(&db, 50);
    daemon.sync_wait(&db);

    server.stop();
    let outage = Instant::now();
    let sync = format!(r#"{{"path":"{}"}}"#, db.display());
    let mut local_syncs = 0;
    let mut saw_error = None;
    let mut txid_during = 0;
    // The deliberate outage: 30 s of wall time, during which the daemon must keep serving.
    while outage.elapsed() < Duration::from_secs(30) {
        let r = daemon.request("POST", "/sync", Some(&sync));
        assert_eq!(r.status, 200, "sync during the outage: {}", r.body);
        let v = r.json();
        assert!(
            matches!(v["status"].as_str(), Some("synced_local" | "no_change")),
            "{v}"
        );
        local_syncs += 1;
        txid_during = v["txid"].as_u64().unwrap();
        let entry = list_entry(&daemon, &db);
        if let Some(e) = entry["replica_error"].as_str() {
            saw_error = Some(e.to_string());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let e = saw_error.expect("/list showed no replica error during the outage");
    assert!(e.contains(&url), "the error names the replica: {e}");
    let entry = list_entry(&daemon, &db);
    assert!(
        entry["replicated_txid"].as_u64().unwrap() < entry["txid"].as_u64().unwrap(),
        "transactions piled up locally: {entry}"
    );
    assert!(local_syncs > 20 && txid_during > 0);

    server.restart();
    let restarted = Instant::now();
    wait_until(Duration::from_secs(120), "the replica to catch up", || {
        let e = list_entry(&daemon, &db);
        e["replicated_txid"].as_u64().unwrap() >= txid_during && e["replica_error"].is_null()
    });
    eprintln!(
        "caught up {:?} after the server came back; failed attempts during the outage: {}",
        restarted.elapsed(),
        daemon
            .log_text()
            .matches("msg=\"upload failed; retrying\"")
            .count()
    );
    let last = writer.stop();
    daemon.sync_wait(&db);
    // Credentials from LITESTREAM_* alone work too.
    let out = dir.path("restored.db");
    let o = Command::new(bin())
        .args(["restore", "-o", out.to_str().unwrap(), &url])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY)
        .env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(integrity(&out), "ok");
    let got = ids(&out);
    assert_eq!(got.len() as i64, last, "every row the writer committed");
    assert_eq!(got, ids(&db));
    let log = daemon.log_text();
    assert!(log.contains("uploads resumed"), "{log}");
    assert_eq!(daemon.terminate(), 0);
}

/// Wrong credentials: a permanent failure (403). A clear error naming the replica (and not
/// the secret) in `/list` and the log at once, then retries at the slow pace of permanent
/// failures (about every minute) instead of the quick backoff of transient ones, which
/// would have sent 4 requests in these 10 s; a waited sync still tries at once.
#[test]
fn wrong_credentials_are_reported_at_once_and_retried_slowly() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = CountingProxy::start(server.port);
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = url_for(proxy.port, "badcreds/app.db");
    let wrong = "this-is-the-wrong-secret-key-0000";
    let config = s3_config(dir.dir.path(), &db, &url, wrong, "");
    let daemon = Daemon::start(&config);
    let started = Instant::now();
    conn.execute("INSERT INTO t(v) VALUES ('x')", []).unwrap();
    // The replica cannot even be listed with these credentials: the daemon retries the
    // listing (it uploads nothing before it knows where the replica stands).
    let failed = |l: &&str| l.contains("cannot list replica") || l.contains("upload failed");
    let failures = |log: &str| log.lines().filter(failed).count();
    wait_until(Duration::from_secs(10), "the error in /list", || {
        list_entry(&daemon, &db)["replica_error"].is_string()
    });
    let reported = started.elapsed();
    let requests = || proxy.counts().values().sum::<u64>();
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(failed)
        .unwrap_or_else(|| panic!("{log}"))
        .to_string();
    assert!(line.contains("level=ERROR"), "{line}");
    assert!(line.contains("permanent"), "{line}");
    assert!(line.contains(" backoff="), "{line}");
    assert!(line.contains(&url), "names the replica: {line}");
    assert!(
        line.contains("SignatureDoesNotMatch") || line.contains("403"),
        "says why: {line}"
    );
    let entry = list_entry(&daemon, &db);
    let e = entry["replica_error"].as_str().unwrap_or_default();
    assert!(
        e.contains("SignatureDoesNotMatch") || e.contains("403"),
        "{entry}"
    );
    assert!(
        e.contains("check access-key-id and secret-access-key"),
        "{e}"
    );
    assert!(
        !entry.to_string().contains(wrong),
        "the secret leaked into /list"
    );
    assert_eq!(entry["replicated_txid"].as_u64(), Some(0));

    // No quick retries: the transient backoff (1, 2, 4, 8 s) would have made 4 more.
    let before = requests();
    assert_eq!(before, 1, "{:?}", proxy.counts());
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(10) {
        assert_eq!(requests(), before, "a retry storm: {:?}", proxy.counts());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(failures(&daemon.log_text()), 1, "{}", daemon.log_text());

    // Someone waits for the replica: it is tried now, and still refused.
    let body = format!(r#"{{"path":"{}","wait":true,"timeout":2}}"#, db.display());
    let r = daemon.request("POST", "/sync", Some(&body));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(requests(), before + 1, "{:?}", proxy.counts());
    let log = daemon.log_text();
    assert!(!log.contains(wrong), "the secret leaked into the log");
    eprintln!("reported after {reported:?}: {line}");
    // (A clean shutdown would spend shutdown-sync-timeout retrying: not what this tests.)
    daemon.kill9();
}
