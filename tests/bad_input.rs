//! Bad input gets a clear error and loses nothing, and the daemon keeps replicating the other
//! databases: a file that is not SQLite, a database in rollback-journal mode, a database that
//! does not exist yet, an unwritable replica, a broken config.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn bad_databases_and_replicas_do_not_stop_the_good_one() {
    let dir = TestDir::new();
    let good = dir.path("good.db");
    let good_conn = create_db(&good);
    let not_sqlite = dir.path("notes.txt");
    let text = "this is not a database, just some text that is long enough".repeat(10);
    std::fs::write(&not_sqlite, &text).unwrap();
    let rollback = dir.path("rollback.db");
    {
        let c = rusqlite::Connection::open(&rollback).unwrap();
        c.execute_batch("PRAGMA journal_mode=delete; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('r');").unwrap();
    }
    let later = dir.path("later.db");
    let blocked = dir.path("blocked.db");
    create_db(&blocked)
        .execute("INSERT INTO t(v) VALUES ('b')", [])
        .unwrap();
    // A replica path below a regular file can never be created.
    let file_in_the_way = dir.path("in-the-way");
    std::fs::write(&file_in_the_way, "x").unwrap();
    let url = |name: &str| format!("file://{}", dir.path(name).display());
    let blocked_url = format!("file://{}/replica", file_in_the_way.display());
    let config = write_config(
        dir.dir.path(),
        &[
            (&good, &url("r-good")),
            (&not_sqlite, &url("r-notes")),
            (&rollback, &url("r-rollback")),
            (&later, &url("r-later")),
            (&blocked, &blocked_url),
        ],
        "",
        // The blocked replica never confirms: keep the bounded shutdown wait short.
        "shutdown-sync-timeout: 2s\n",
    );
    let daemon = Daemon::start(&config);

    // The good database replicates.
    good_conn
        .execute("INSERT INTO t(v) VALUES ('g')", [])
        .unwrap();
    daemon.sync_wait(&good);

    // Not SQLite: an error that says so, in /list and on /sync.
    wait_until(
        Duration::from_secs(10),
        "error status for the text file",
        || list_entry(&daemon, &not_sqlite)["status"] == "error",
    );
    let e = list_entry(&daemon, &not_sqlite);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("not a SQLite database"),
        "{e}"
    );
    let r = daemon.request(
        "POST",
        "/sync",
        Some(&format!(r#"{{"path":"{}"}}"#, not_sqlite.display())),
    );
    assert_eq!(r.status, 500);
    assert!(
        r.json()["details"]
            .as_str()
            .unwrap()
            .contains("not a SQLite database"),
        "{}",
        r.body
    );
    assert_eq!(
        std::fs::read_to_string(&not_sqlite).unwrap(),
        text,
        "the file was not touched"
    );

    // Rollback journal mode: switched to WAL (as Litestream does) and replicated.
    daemon.sync_wait(&rollback);
    let mode: String = rusqlite::Connection::open(&rollback)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("msg=\"switched journal mode to wal\"")
                && l.contains(" from=delete")),
        "{}",
        daemon.log_text()
    );

    // Not there yet: an error naming the path; replicated as soon as it exists.
    let e = list_entry(&daemon, &later);
    assert!(
        e["error"].as_str().unwrap_or("").contains("does not exist"),
        "{e}"
    );
    create_db(&later)
        .execute("INSERT INTO t(v) VALUES ('late')", [])
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the late database to replicate",
        || list_entry(&daemon, &later)["status"] == "replicating",
    );
    daemon.sync_wait(&later);

    // Unwritable replica: the upload error is visible, syncs still record locally, the spool
    // keeps every file, and the good database is unaffected.
    wait_until(
        Duration::from_secs(10),
        "replica error for the blocked db",
        || list_entry(&daemon, &blocked).get("replica_error").is_some(),
    );
    let e = list_entry(&daemon, &blocked);
    assert!(
        e["replica_error"].as_str().unwrap().contains("in-the-way"),
        "the error names the replica: {e}"
    );
    let r = daemon.request(
        "POST",
        "/sync",
        Some(&format!(r#"{{"path":"{}"}}"#, blocked.display())),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = daemon.request(
        "POST",
        "/sync",
        Some(&format!(
            r#"{{"path":"{}","wait":true,"timeout":0.5}}"#,
            blocked.display()
        )),
    );
    assert_eq!(r.status, 503, "a waited sync cannot succeed: {}", r.body);
    let spooled = std::fs::read_dir(dir.path(".blocked.db-litestream/ltx/0"))
        .unwrap()
        .count();
    assert!(spooled >= 1);
    good_conn
        .execute("INSERT INTO t(v) VALUES ('g2')", [])
        .unwrap();
    daemon.sync_wait(&good);
    let out = dir.path("good-restored.db");
    restore(&url("r-good"), &out, &[]);
    assert_eq!(ids(&out), ids(&good));
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn bad_config_names_the_key_and_line() {
    let dir = TestDir::new();
    let cases = [
        ("dbs:\n  - path: /tmp/x.db\n    replica:\n      url: file:///tmp/r\n    monitor-interval: soon\n", "5", "monitor-interval"),
        ("dbs:\n  - path: /tmp/x.db\n", "", "replica"),
        ("dbs: [\n", "1", ""),
        ("dbs:\n  - path: /tmp/x.db\n    replica:\n      url: ftp://host/x\n", "4", "url"),
    ];
    for (yml, line, key) in cases {
        let path = dir.path("bad.yml");
        std::fs::write(&path, yml).unwrap();
        let o = run(&["replicate", "-config", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{yml}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("Error: "), "{err}");
        assert!(
            err.contains(&format!("bad.yml:{line}")),
            "no line {line} in: {err}"
        );
        assert!(err.contains(key), "no key {key} in: {err}");
    }
    // Unknown keys warn with their line and do not stop the daemon from loading the config.
    let path = dir.path("warn.yml");
    std::fs::write(&path, "dbz: []\ndbs: []\n").unwrap();
    let o = run(&["databases", "-config", path.to_str().unwrap()]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warn.yml line=1 ") && err.contains("key=dbz "),
        "{err}"
    );
    // A missing config file.
    let o = run(&[
        "replicate",
        "-config",
        dir.path("none.yml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("config file not found"));
}

/// A flood of clients that hold their requests open (event streams here) gets a clear 503
/// past the cap instead of one thread each without bound; the daemon answers again once they
/// go, and replication never stopped.
#[test]
fn a_flood_of_open_requests_is_refused_past_the_cap_and_recovers() {
    use litestream::ipc::server::MAX_REQUESTS_IN_FLIGHT;
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let url = format!("file://{}", dir.path("replica").display());
    let d = Daemon::start(&write_config(dir.dir.path(), &[(&db, &url)], "", ""));
    let streams: Vec<EventStream> = (0..MAX_REQUESTS_IN_FLIGHT)
        .map(|_| {
            let s = EventStream::unix(&d.socket, "/events");
            assert_eq!(s.status, 200);
            s
        })
        .collect();
    let r = d.request("GET", "/list", None);
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"], "too many requests", "{v}");
    assert!(
        v["details"]
            .as_str()
            .unwrap()
            .contains(&MAX_REQUESTS_IN_FLIGHT.to_string()),
        "{v}"
    );
    // Replication goes on meanwhile.
    conn.execute("INSERT INTO t(v) VALUES ('during the flood')", [])
        .unwrap();
    // The subscribers leave; the next event each stream writes fails and frees its thread.
    drop(streams);
    wait_until(
        Duration::from_secs(30),
        "the daemon to answer again",
        || {
            conn.execute("INSERT INTO t(v) VALUES ('nudge')", [])
                .unwrap();
            d.request("GET", "/list", None).status == 200
        },
    );
    d.sync_wait(&db);
    let out = dir.path("out.db");
    restore(&url, &out, &[]);
    assert_same_ids(&ids(&out), &ids(&db), "after the flood");
}

/// `replicate` prints the config's warnings itself (it loads the file before its logger
/// exists; the warnings used to be lost there and shown only by `databases`).
#[test]
fn replicate_prints_the_warnings_of_its_config() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    create_db(&db);
    let url = format!("file://{}", dir.path("replica").display());
    let config = write_config(dir.dir.path(), &[(&db, &url)], "    frobnicate: 1\n", "");
    let d = Daemon::start(&config);
    d.sync_wait(&db);
    let log = d.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("frobnicate"))
        .unwrap_or_else(|| panic!("no warning for the unknown key: {log}"));
    assert!(
        warning.contains("level=WARN")
            && warning.contains("litestream.yml line=5 column=5 key=dbs[0].frobnicate ")
            && warning.contains(r#"warning="unknown key \"dbs[0].frobnicate\" (ignored)""#),
        "{warning}"
    );
}
