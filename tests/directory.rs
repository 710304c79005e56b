//! Directory replication (`dbs: [{dir, pattern, recursive, watch}]`): nested databases and
//! files that are not databases, databases created, written and deleted while the daemon
//! runs, the inotify path and the polling fallback, and restores of the directory replica's
//! databases with ours and with Litestream 0.5.17.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A config replicating `data` (pattern `*.db`) to the file replica `replica`; `extra` goes
/// into the entry (e.g. `"    watch: true\n"`).
fn dir_config(t: &TestDir, extra: &str) -> PathBuf {
    let yml = format!(
        "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n{extra}    replica:\n      url: {}\nsocket:\n  path: {}\n",
        t.path("data").display(),
        file_url(&t.path("replica")),
        t.path("ls.sock").display()
    );
    let config = t.path("litestream.yml");
    std::fs::write(&config, yml).unwrap();
    config
}

/// Paths in `/list`, sorted.
fn listed(d: &Daemon) -> Vec<PathBuf> {
    let r = d.request("GET", "/list", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let mut paths: Vec<PathBuf> = r.json()["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| PathBuf::from(e["path"].as_str().unwrap()))
        .collect();
    paths.sort();
    paths
}

/// Inserts `n` rows into `db` and waits until the daemon says they are on the replica.
fn write_and_sync(d: &Daemon, db: &Path, n: usize) {
    for _ in 0..n {
        insert(db);
    }
    d.sync_wait(db);
}

/// Restores the database at `relative` under the directory replica with our binary and with
/// Litestream 0.5.17, and checks both have `want`'s rows.
fn restore_both_ways(t: &TestDir, relative: &str, want: &Path) {
    let url = file_url(&t.path("replica").join(relative));
    let name = relative.replace('/', "_");
    let ours = t.path(&format!("ours-{name}"));
    restore(&url, &ours, &[]);
    assert_same_ids(&ids(&ours), &ids(want), &format!("ours: {relative}"));
    assert_eq!(integrity(&ours), "ok");
    let theirs = t.path(&format!("theirs-{name}"));
    let o = Command::new(reference_bin())
        .args(["restore", "-o"])
        .arg(&theirs)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "Litestream 0.5.17 restore of {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_ids(
        &ids(&theirs),
        &ids(want),
        &format!("Litestream: {relative}"),
    );
}

#[test]
fn nested_databases_replicate_under_their_relative_paths() {
    let t = TestDir::new();
    let data = t.path("data");
    std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
    let dbs = [
        data.join("a.db"),
        data.join("sub/b.db"),
        data.join("sub/deeper/c.db"),
    ];
    for db in &dbs {
        insert(db);
    }
    // Matches the pattern but is not a database; a rollback-journal database; not matching.
    std::fs::write(data.join("notes.db"), "plain text, not SQLite ".repeat(10)).unwrap();
    rusqlite::Connection::open(data.join("sub/rollback.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    insert(&data.join("other.sqlite"));
    let d = Daemon::start(&dir_config(&t, "    recursive: true\n"));
    assert_eq!(listed(&d), dbs.to_vec(), "{}", d.log_text());
    for db in &dbs {
        wait_replicated(&d, db);
        write_and_sync(&d, db, 3);
    }
    let log = d.log_text();
    for (file, why) in [
        ("notes.db", "not a SQLite database"),
        ("sub/rollback.db", "not in WAL mode"),
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("skipping") && l.contains(file))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {file}: {log}");
        assert!(lines[0].contains(why), "{}", lines[0]);
    }
    assert!(!log.contains("other.sqlite"), "{log}");
    for (db, relative) in dbs.iter().zip(["a.db", "sub/b.db", "sub/deeper/c.db"]) {
        restore_both_ways(&t, relative, db);
    }
    assert_eq!(d.terminate(), 0);

    // The CLI knows the directory's databases from the config too.
    let config = t.path("litestream.yml");
    let config = config.to_str().unwrap();
    let o = run(&["databases", "-config", config]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for db in &dbs {
        assert!(out.contains(&*db.to_string_lossy()), "{out}");
    }
    assert!(
        !out.contains("notes.db") && !out.contains("rollback.db"),
        "{out}"
    );
    let restored = t.path("by-path.db");
    let o = run(&[
        "restore",
        "-config",
        config,
        "-o",
        restored.to_str().unwrap(),
        dbs[1].to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_ids(&ids(&restored), &ids(&dbs[1]), "restore by path");
}

#[test]
fn without_recursive_only_the_top_directory_is_searched() {
    let t = TestDir::new();
    let data = t.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    insert(&data.join("top.db"));
    insert(&data.join("sub/nested.db"));
    let d = Daemon::start(&dir_config(&t, ""));
    assert_eq!(listed(&d), vec![data.join("top.db")]);
}

/// With `watch: true`: a database created at run time (also in a new subdirectory) is
/// replicated, one deleted is stopped and reported, and what it replicated restores.
fn watch_follows_the_directory(env: &[(&str, &str)]) {
    let t = TestDir::new();
    let data = t.path("data");
    std::fs::create_dir_all(&data).unwrap();
    insert(&data.join("first.db"));
    let config = dir_config(
        &t,
        "    recursive: true\n    watch: true\n    monitor-interval: 200ms\n",
    );
    let d = Daemon::start_with_env(&config, env);
    assert_eq!(listed(&d), vec![data.join("first.db")]);

    let created = data.join("created.db");
    insert(&created);
    wait_until(Duration::from_secs(20), "created.db to be listed", || {
        listed(&d).contains(&created)
    });
    wait_replicated(&d, &created);
    write_and_sync(&d, &created, 5);

    std::fs::create_dir_all(data.join("tenant")).unwrap();
    let nested = data.join("tenant/new.db");
    insert(&nested);
    wait_until(
        Duration::from_secs(20),
        "tenant/new.db to be listed",
        || listed(&d).contains(&nested),
    );
    wait_replicated(&d, &nested);
    write_and_sync(&d, &nested, 2);
    restore_both_ways(&t, "created.db", &created);
    restore_both_ways(&t, "tenant/new.db", &nested);

    for suffix in ["", "-wal", "-shm"] {
        let mut p = created.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    wait_until(Duration::from_secs(20), "created.db to be dropped", || {
        !listed(&d).contains(&created)
    });
    // Reported once its thread stopped (after /list dropped it).
    wait_until(Duration::from_secs(20), "the removal to be logged", || {
        d.log_text().lines().any(|l| {
            l.contains("removed database from replication")
                && l.contains(&*created.to_string_lossy())
        })
    });
    assert_eq!(listed(&d), vec![data.join("first.db"), nested.clone()]);
    // The others keep replicating.
    write_and_sync(&d, &data.join("first.db"), 1);
    assert_eq!(d.terminate(), 0);
}

#[test]
fn watch_adds_created_and_stops_deleted_databases_with_inotify() {
    watch_follows_the_directory(&[]);
}

#[test]
fn watch_works_by_polling_where_inotify_is_unavailable() {
    watch_follows_the_directory(&[("LITESTREAM_TEST_NO_INOTIFY", "1")]);
}

#[test]
fn a_database_switched_to_wal_later_is_picked_up() {
    let t = TestDir::new();
    let data = t.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir_config(&t, "    watch: true\n");
    let d = Daemon::start(&config);
    let db = data.join("late.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    drop(conn);
    wait_until(Duration::from_secs(20), "the skip to be logged", || {
        d.log_text().contains("not in WAL mode")
    });
    assert!(listed(&d).is_empty());
    insert(&db); // create_db switches it to WAL
    wait_until(Duration::from_secs(20), "late.db to be listed", || {
        listed(&d).contains(&db)
    });
    wait_replicated(&d, &db);
}
