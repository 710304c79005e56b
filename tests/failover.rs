//! Two daemons on one replica (issue 11): a primary and a follower in separate directories,
//! on a file replica and on the local S3 server. The follower keeps up while the primary
//! writes; killing the primary and promoting the follower loses no acknowledged transaction;
//! the lease refuses a second primary while it is live; demotion and promotion hand the
//! replica over both ways; the event streams say each node's role.

mod common;
#[path = "common/s3.rs"]
mod s3server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use s3server::{credentials_yaml, with_credentials, S3Server, ACCESS_KEY, SECRET_KEY};
use serde_json::Value;

/// The TTL of the leases in these tests: short, so an expiry is awaited in seconds.
const TTL: &str = "3s";

/// One node: a directory with its database path, config and socket.
struct Node {
    dir: TestDir,
    db: PathBuf,
    config: PathBuf,
}

impl Node {
    /// A node whose `app.db` is a primary (`lease: true`) or a follower of `url`.
    fn new(url: &str, follower: bool) -> Node {
        let dir = TestDir::new();
        let db = dir.path("app.db");
        let role = if follower {
            format!("    follow: true\n    follow-interval: 100ms\n    lease-ttl: {TTL}\n")
        } else {
            format!("    lease: true\n    lease-ttl: {TTL}\n")
        };
        // The replica section's last key comes first: the role keys belong to the database.
        let extra = if url.starts_with("s3:") {
            format!("{}{role}", credentials_yaml(ACCESS_KEY, SECRET_KEY))
        } else {
            role
        };
        let config = write_config(dir.dir.path(), &[(&db, url)], &extra, "");
        Node { dir, db, config }
    }

    fn start(&self) -> Daemon {
        Daemon::start(&self.config)
    }
}

/// This machine's name, from `hostname(1)`: an oracle independent of the daemon's own lookup.
fn this_host() -> String {
    let out = Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Inserts `n` rows into `db` (one transaction each).
fn write_rows(db: &Path, n: usize) {
    for _ in 0..n {
        insert(db);
    }
}

/// Waits until `node`'s database is at `txid` by `/txid`.
fn wait_txid(d: &Daemon, db: &Path, txid: u64) {
    wait_until(
        Duration::from_secs(30),
        &format!("{} at txid {txid:x}", db.display()),
        || {
            let r = d.request("GET", &format!("/txid?path={}", db.display()), None);
            r.status == 200 && r.json()["txid"].as_u64() == Some(txid)
        },
    );
}

fn post(d: &Daemon, endpoint: &str, db: &Path, extra: &str) -> HttpResponse {
    let body = format!(r#"{{"path":"{}"{extra}}}"#, db.display());
    d.request("POST", endpoint, Some(&body))
}

fn events(d: &Daemon, db: &Path) -> EventStream {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    let s = EventStream::unix(&d.socket, &format!("/events?db={name}"));
    assert_eq!(s.status, 200);
    s
}

fn role_change(e: &Value) -> bool {
    e["type"] == "primaryChange"
}

/// A primary writes while a follower keeps up; the primary is killed (-9) and the follower
/// promoted: every transaction a waited `/sync` acknowledged is in the promoted database and,
/// after it writes more, in a restore of the replica (by us and by Litestream 0.5.17).
fn follow_then_promote_after_kill_9(url: &str, restore_with: impl Fn(&str, &Path)) {
    let primary = Node::new(url, false);
    let follower = Node::new(url, true);
    let p = primary.start();
    write_rows(&primary.db, 3);
    p.sync_wait(&primary.db);
    let entry = list_entry(&p, &primary.db);
    assert_eq!(entry["role"], "primary", "{entry}");
    let owner = format!("{}:{}", this_host(), pid_of(&p));
    assert_eq!(entry["lease"]["owner"], owner.as_str(), "{entry}");

    let f = follower.start();
    wait_until(
        Duration::from_secs(30),
        "the follower to know its primary",
        || find_list_entry(&f, &follower.db).is_some_and(|e| e["primary"] == this_host().as_str()),
    );
    let entry = list_entry(&f, &follower.db);
    assert_eq!(entry["role"], "follower", "{entry}");
    assert_eq!(entry["status"], "following", "{entry}");
    let mut f_events = events(&f, &follower.db);
    let init = f_events.next_event().unwrap();
    assert_eq!(init["type"], "init", "{init}");
    assert_eq!(init["data"]["isPrimary"], false, "{init}");
    assert_eq!(init["data"]["hostname"], this_host().as_str(), "{init}");
    let mut p_events = events(&p, &primary.db);
    assert_eq!(p_events.next_event().unwrap()["data"]["isPrimary"], true);

    // The follower applies every transaction the primary writes, as the primary wrote it.
    let mut lag = Duration::ZERO;
    for round in 0..5 {
        write_rows(&primary.db, 4);
        let txid = p.sync_wait(&primary.db)["txid"].as_u64().unwrap();
        let replicated = Instant::now();
        wait_txid(&f, &follower.db, txid);
        lag = lag.max(replicated.elapsed());
        assert_eq!(ids(&follower.db), ids(&primary.db), "round {round}");
        let hex = format!("{txid:016x}");
        let theirs = p_events.until("the primary's tx", |e| {
            e["type"] == "tx" && e["data"]["txID"] == hex.as_str()
        });
        let ours = f_events.until("the follower's tx", |e| {
            e["type"] == "tx" && e["data"]["txID"] == hex.as_str()
        });
        assert_eq!(
            ours["data"]["postApplyChecksum"],
            theirs["data"]["postApplyChecksum"]
        );
        assert_eq!(ours["data"]["commit"], theirs["data"]["commit"]);
    }
    eprintln!("follower lag after a waited sync, worst of 5: {lag:?} (interval 100ms)");

    // While the primary writes without pause, the follower only ever shows a state the
    // primary had (its rows are a prefix of the primary's), and it keeps moving.
    let writer = Writer::start(&primary.db, 200);
    let started = Instant::now();
    let mut seen = 0;
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let theirs = ids(&follower.db);
        let ours = ids(&primary.db);
        assert!(
            theirs.len() <= ours.len() && ours[..theirs.len()] == theirs[..],
            "the follower has rows the primary never had"
        );
        seen = seen.max(theirs.len());
        samples += 1;
    }
    let last = writer.stop();
    let txid = p.sync_wait(&primary.db)["txid"].as_u64().unwrap();
    wait_txid(&f, &follower.db, txid);
    assert_eq!(ids(&follower.db).last(), Some(&last));
    assert!(
        seen > 20,
        "the follower did not move while the primary wrote ({seen} rows, {samples} samples)"
    );
    assert_eq!(integrity(&follower.db), "ok");

    // Acknowledged, then the primary dies. A large row makes the database ~60 pages, so a
    // promotion that re-sent it whole would show.
    create_db(&primary.db)
        .execute("INSERT INTO t(v) VALUES (hex(randomblob(120000)))", [])
        .unwrap();
    write_rows(&primary.db, 5);
    let acked = p.sync_wait(&primary.db)["txid"].as_u64().unwrap();
    let acked_ids = ids(&primary.db);
    p.kill9();

    let r = post(&f, "/promote", &follower.db, r#","timeout":"30s""#);
    assert_eq!(r.status, 200, "{} {}", r.body, f.log_text());
    assert_eq!(r.json()["status"], "promoted");
    assert_eq!(r.json()["txid"], format!("{acked:016x}").as_str());
    let change = f_events.until("primaryChange", role_change);
    assert_eq!(change["data"]["isPrimary"], true, "{change}");
    assert_eq!(
        ids(&follower.db),
        acked_ids,
        "the promoted database lacks acknowledged rows"
    );
    let mut sidecar = follower.db.clone().into_os_string();
    sidecar.push("-txid");
    assert!(
        !Path::new(&sidecar).exists(),
        "a primary keeps no follower's txid file"
    );
    // The follower handed its page checksums over: the first pass writes what differs
    // (page 1, whose change counter SQLite keeps per node), not the whole database.
    let mut first_scan = String::new();
    wait_until(
        Duration::from_secs(30),
        "the promoted primary's first pass",
        || {
            first_scan = f
                .log_text()
                .lines()
                .find(|l| l.contains("msg=\"full scan\""))
                .unwrap_or_default()
                .to_string();
            !first_scan.is_empty()
        },
    );
    assert!(first_scan.contains("mode=Changed"), "{first_scan}");
    let pages: u32 = first_scan
        .split("pages=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        pages <= 2,
        "the promotion re-sent {pages} pages: {first_scan}"
    );
    let entry = list_entry(&f, &follower.db);
    assert_eq!(entry["role"], "primary", "{entry}");
    assert_eq!(
        entry["lease"]["owner"],
        format!("{}:{}", this_host(), pid_of(&f)).as_str(),
        "{entry}"
    );

    // The new primary writes the same replica, continuing its txids.
    write_rows(&follower.db, 3);
    let v = f.sync_wait(&follower.db);
    assert!(v["txid"].as_u64().unwrap() > acked, "{v}");
    let all = ids(&follower.db);
    for tool in [bin(), reference_bin().to_str().unwrap()] {
        let restored = follower
            .dir
            .path(&format!("restored-{}.db", rand_range(0, u64::MAX)));
        restore_with(tool, &restored);
        assert_eq!(ids(&restored), all, "restored by {tool}");
        assert_eq!(integrity(&restored), "ok");
    }
    drop(f);
}

#[test]
fn a_follower_keeps_up_and_is_promoted_after_the_primary_is_killed() {
    let base = TestDir::new();
    let url = file_url(&base.path("replica"));
    follow_then_promote_after_kill_9(&url, |tool, out| {
        let o = Command::new(tool)
            .args(["restore", "-o"])
            .arg(out)
            .arg(&url)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    });
}

#[test]
fn an_s3_follower_keeps_up_and_is_promoted_after_the_primary_is_killed() {
    let base = TestDir::new();
    let server = S3Server::start(base.dir.path());
    let url = server.url("failover");
    follow_then_promote_after_kill_9(&url, |tool, out| {
        let mut cmd = Command::new(tool);
        cmd.args(["restore", "-o"]).arg(out).arg(&url);
        let o = with_credentials(&mut cmd).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    });
}

/// Demotion syncs, releases the lease and follows; promotion of the other node is then
/// immediate; the replica goes back and forth without losing a row.
#[test]
fn demote_and_promote_hand_the_replica_over_both_ways() {
    let base = TestDir::new();
    let url = file_url(&base.path("replica"));
    let a = Node::new(&url, false);
    let b = Node::new(&url, true);
    let da = a.start();
    write_rows(&a.db, 5);
    let t = da.sync_wait(&a.db)["txid"].as_u64().unwrap();
    let db_ = b.start();
    wait_txid(&db_, &b.db, t);
    let mut a_events = events(&da, &a.db);
    a_events.next_event().unwrap();

    // Refused while the other side is what it is.
    let r = post(&db_, "/demote", &b.db, "");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("follower"), "{}", r.body);
    let r = post(&da, "/promote", &a.db, "");
    assert_eq!(r.status, 409, "{}", r.body);

    // A primary that has not handed over refuses the follower's promotion at the timeout.
    let r = post(&db_, "/promote", &b.db, r#","timeout":0.5"#);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("lease already held by"), "{}", r.body);
    assert_eq!(list_entry(&db_, &b.db)["role"], "follower");

    write_rows(&a.db, 2);
    let r = post(&da, "/demote", &a.db, "");
    assert_eq!(r.status, 200, "{} {}", r.body, da.log_text());
    let demoted_at = u64::from_str_radix(r.json()["txid"].as_str().unwrap(), 16).unwrap();
    let change = a_events.until("primaryChange", role_change);
    assert_eq!(change["data"]["isPrimary"], false, "{change}");
    let entry = list_entry(&da, &a.db);
    assert_eq!(entry["role"], "follower", "{entry}");
    assert!(entry.get("lease").is_none(), "{entry}");

    let started = Instant::now();
    let r = post(&db_, "/promote", &b.db, "");
    assert_eq!(r.status, 200, "{} {}", r.body, db_.log_text());
    assert_eq!(
        r.json()["txid"],
        format!("{demoted_at:016x}").as_str(),
        "the promoted node starts where the demoted one stopped"
    );
    eprintln!("promotion after a demotion took {:?}", started.elapsed());
    assert_eq!(ids(&b.db), ids(&a.db));

    // Now A follows B.
    write_rows(&b.db, 4);
    let t = db_.sync_wait(&b.db)["txid"].as_u64().unwrap();
    wait_txid(&da, &a.db, t);
    assert_eq!(ids(&a.db), ids(&b.db));
    wait_until(Duration::from_secs(30), "A to see B as its primary", || {
        find_list_entry(&da, &a.db).is_some_and(|e| e["primary"] == this_host().as_str())
    });

    // And back.
    let r = post(&db_, "/demote", &b.db, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&da, "/promote", &a.db, "");
    assert_eq!(r.status, 200, "{} {}", r.body, da.log_text());
    write_rows(&a.db, 1);
    let t = da.sync_wait(&a.db)["txid"].as_u64().unwrap();
    wait_txid(&db_, &b.db, t);
    assert_eq!(ids(&b.db), ids(&a.db));
    let restored = base.path("restored.db");
    restore(&url, &restored, &[]);
    assert_eq!(ids(&restored), ids(&a.db));
}

/// While a primary holds the lease a second primary of the same replica is stopped with an
/// error naming the holder and its expiry, and writes nothing; after the first hands the
/// lease back (or a foreign lease expires) `litestream start` lets it in.
#[test]
fn a_second_primary_is_refused_while_the_lease_is_live() {
    let base = TestDir::new();
    let replica = base.path("replica");
    let url = file_url(&replica);
    let first = Node::new(&url, false);
    let second = Node::new(&url, false);
    let d1 = first.start();
    write_rows(&first.db, 2);
    d1.sync_wait(&first.db);
    write_rows(&second.db, 7);
    let d2 = second.start();
    let holder = format!("{}:{}", this_host(), pid_of(&d1));
    wait_until(
        Duration::from_secs(30),
        "the second primary to be refused",
        || find_list_entry(&d2, &second.db).is_some_and(|e| e["status"] == "stopped"),
    );
    let entry = list_entry(&d2, &second.db);
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("lease already held by {holder} until ")),
        "{entry}"
    );
    let r = post(&d2, "/sync", &second.db, r#","wait":true,"timeout":2"#);
    assert_ne!(r.status, 200, "a refused primary must not sync: {}", r.body);
    // The replica holds the first primary's rows only.
    let restored = base.path("check.db");
    restore(&url, &restored, &[]);
    assert_eq!(ids(&restored), ids(&first.db));

    // A start while the lease is live is refused again.
    let r = post(&d2, "/start", &second.db, "");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(Duration::from_secs(30), "the retry to be refused", || {
        find_list_entry(&d2, &second.db).is_some_and(|e| e["status"] == "stopped")
    });

    // A clean shutdown releases the lease; the second takes it when started.
    assert_eq!(d1.terminate(), 0);
    let r = post(&d2, "/start", &second.db, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let owner = format!("{}:{}", this_host(), pid_of(&d2));
    wait_until(
        Duration::from_secs(30),
        "the second primary to take the lease",
        || find_list_entry(&d2, &second.db).is_some_and(|e| e["lease"]["owner"] == owner.as_str()),
    );
    // It continues the replica's txids with its own database.
    let v = d2.sync_wait(&second.db);
    assert!(v["replicated_txid"].as_u64().unwrap() >= 2, "{v}");
    let restored = base.path("second.db");
    restore(&url, &restored, &[]);
    assert_eq!(ids(&restored), ids(&second.db));
    drop(d2);

    // A lease of another host (alive, as far as we can tell) is waited out to its expiry.
    let expires = foreign_lease(&replica, 41, 3);
    let d3 = second.start();
    wait_until(
        Duration::from_secs(30),
        "the foreign lease to refuse",
        || {
            find_list_entry(&d3, &second.db).is_some_and(|e| {
                e["status"] == "stopped"
                    && e["error"]
                        .as_str()
                        .is_some_and(|m| m.contains("another-host:1234"))
            })
        },
    );
    wait_until(
        Duration::from_secs(10),
        "the foreign lease to expire",
        || std::time::SystemTime::now() > expires + Duration::from_millis(100),
    );
    let r = post(&d3, "/start", &second.db, "");
    assert_eq!(r.status, 200, "{}", r.body);
    write_rows(&second.db, 1);
    d3.sync_wait(&second.db);
    let entry = list_entry(&d3, &second.db);
    assert_eq!(entry["lease"]["generation"], 42, "{entry}");
}

/// Our daemon follows a replica Litestream 0.5.17 writes.
#[test]
fn a_litestream_primary_can_be_followed_by_the_daemon() {
    let base = TestDir::new();
    let url = file_url(&base.path("replica"));
    let primary_dir = TestDir::new();
    let primary_db = primary_dir.path("app.db");
    create_db(&primary_db);
    let config = write_config(
        primary_dir.dir.path(),
        &[(&primary_db, &url)],
        "",
        "  enabled: true\n",
    );
    let lit = ReferenceDaemon::start(&config);
    write_rows(&primary_db, 3);
    lit.sync_wait(&primary_db);
    let follower = Node::new(&url, true);
    let f = follower.start();
    wait_until(Duration::from_secs(30), "the follower to restore", || {
        find_list_entry(&f, &follower.db).is_some_and(|e| e["status"] == "following")
    });
    for _ in 0..3 {
        write_rows(&primary_db, 2);
        lit.sync_wait(&primary_db);
        let want = ids(&primary_db);
        wait_until(
            Duration::from_secs(30),
            "the follower to apply Litestream's files",
            || follower.db.exists() && ids(&follower.db) == want,
        );
    }
    assert_eq!(integrity(&follower.db), "ok");
    // Litestream takes no lease: the follower knows no primary host.
    assert!(list_entry(&f, &follower.db).get("primary").is_none());
}

/// Writes a lease of another host into a file replica, expiring in `secs` seconds; returns
/// its expiry.
fn foreign_lease(replica: &Path, generation: i64, secs: u64) -> std::time::SystemTime {
    let expires = std::time::SystemTime::now() + Duration::from_secs(secs);
    let expires_ms = expires
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let lock = serde_json::json!({
        "generation": generation,
        "expires_at": litestream::timefmt::rfc3339_ms(expires_ms),
        "owner": "another-host:1234",
    });
    std::fs::write(replica.join("lock.json"), lock.to_string()).unwrap();
    expires
}

/// A primary whose lease another host took over stops writing the replica at once, says so
/// in `/list`, and its event stream says it is no longer the primary.
#[test]
fn a_primary_that_loses_its_lease_stops_writing_and_says_so() {
    let base = TestDir::new();
    let replica = base.path("replica");
    let url = file_url(&replica);
    let node = Node::new(&url, false);
    let d = node.start();
    write_rows(&node.db, 2);
    let before = d.sync_wait(&node.db)["replicated_txid"].as_u64().unwrap();
    let mut stream = events(&d, &node.db);
    stream.next_event().unwrap();
    let generation = list_entry(&d, &node.db)["lease"]["generation"]
        .as_i64()
        .unwrap();
    foreign_lease(&replica, generation + 1, 60);
    let change = stream.until("primaryChange", role_change);
    assert_eq!(change["data"]["isPrimary"], false, "{change}");
    assert_eq!(change["data"]["hostname"], "another-host", "{change}");
    let entry = list_entry(&d, &node.db);
    assert_eq!(entry["status"], "stopped", "{entry}");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(error.contains("lease lost"), "{entry}");
    assert!(error.contains("another-host:1234"), "{entry}");
    assert!(entry.get("lease").is_none(), "{entry}");
    // Nothing more reaches the replica.
    write_rows(&node.db, 3);
    let r = post(&d, "/sync", &node.db, r#","wait":true,"timeout":1"#);
    assert_ne!(r.status, 200, "{}", r.body);
    let restored = base.path("check.db");
    restore(&url, &restored, &[]);
    assert_eq!(
        ids(&restored).len(),
        2,
        "rows written after the loss reached the replica"
    );
    let r = d.request("GET", &format!("/txid?path={}", node.db.display()), None);
    assert_eq!(r.json()["replicated_txid"].as_u64(), Some(before));
}

/// A promotion waits for a live lease of another host to expire, then takes it.
#[test]
fn a_promotion_waits_for_the_primary_lease_to_expire() {
    let base = TestDir::new();
    let replica = base.path("replica");
    let url = file_url(&replica);
    let primary = Node::new(&url, false);
    let p = primary.start();
    write_rows(&primary.db, 3);
    let txid = p.sync_wait(&primary.db)["txid"].as_u64().unwrap();
    assert_eq!(p.terminate(), 0);
    let follower = Node::new(&url, true);
    let f = follower.start();
    wait_txid(&f, &follower.db, txid);
    // A primary elsewhere that is silent: its lease runs for 8 more seconds (the follower
    // reads the lease every 5 s).
    let expires = foreign_lease(&replica, 7, 8);
    wait_until(
        Duration::from_secs(30),
        "the follower to see that primary",
        || find_list_entry(&f, &follower.db).is_some_and(|e| e["primary"] == "another-host"),
    );
    let r = post(&f, "/promote", &follower.db, r#","timeout":"30s""#);
    assert_eq!(r.status, 200, "{} {}", r.body, f.log_text());
    assert!(
        std::time::SystemTime::now() >= expires,
        "promoted before the other primary's lease expired"
    );
    let entry = list_entry(&f, &follower.db);
    assert_eq!(entry["lease"]["generation"], 8, "{entry}");
    assert_eq!(ids(&follower.db), ids(&primary.db));
}

/// A follower refuses a database file it did not build (no `-txid` beside it), with an
/// error in `/list` naming the file; the file is left alone.
#[test]
fn a_follower_refuses_a_database_it_did_not_build() {
    let base = TestDir::new();
    let url = file_url(&base.path("replica"));
    let primary = Node::new(&url, false);
    let p = primary.start();
    write_rows(&primary.db, 1);
    p.sync_wait(&primary.db);
    let follower = Node::new(&url, true);
    write_rows(&follower.db, 4);
    let f = follower.start();
    wait_until(Duration::from_secs(30), "the follower to refuse", || {
        find_list_entry(&f, &follower.db).is_some_and(|e| e["status"] == "error")
    });
    let entry = list_entry(&f, &follower.db);
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(error.contains("no -txid file found"), "{entry}");
    assert!(
        error.contains(&follower.db.display().to_string()),
        "{entry}"
    );
    assert_eq!(ids(&follower.db).len(), 4);
}
