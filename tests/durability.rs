//! Nothing acknowledged is lost: a writer at ~1000 rows/s, waited syncs, and the daemon killed
//! with SIGKILL at random moments, restarted each time; then a restore must hold every row
//! up to the last acknowledged one, and after a final sync exactly the source's rows.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// Kills per run of the main test (the suite needs at least 20).
const KILLS: usize = 20;

#[test]
fn kill9_during_writes_loses_no_acknowledged_row() {
    // Small checkpoint threshold so the WAL restarts (new generations) many times.
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config("    min-checkpoint-page-count: 50\n", "");
    create_db(&db);
    let replica = file_url(&replica);
    let writer = Writer::start(&db, 1000);
    let mut acked: i64 = 0;
    let mut daemon = Daemon::start(&config);
    let mut logs = String::new();
    for kill in 0..KILLS {
        let until = Instant::now() + Duration::from_millis(rand_range(200, 900));
        while Instant::now() < until {
            // The id committed before the sync request is durable once it answers.
            let before = writer.last_id.load(std::sync::atomic::Ordering::SeqCst);
            daemon.sync_wait(&db);
            acked = acked.max(before);
            std::thread::sleep(Duration::from_millis(rand_range(20, 200)));
        }
        logs.push_str(&daemon.log_text());
        daemon.kill9();
        if kill % 5 == 4 {
            // Mid-run check: what was acknowledged is restorable right now.
            let out = dir.path(&format!("mid-{kill}.db"));
            restore(&replica, &out, &[]);
            assert_eq!(integrity(&out), "ok");
            let got: BTreeSet<i64> = ids(&out).into_iter().collect();
            let missing: Vec<i64> = (1..=acked).filter(|i| !got.contains(i)).take(10).collect();
            assert!(
                missing.is_empty(),
                "after kill {kill}: acknowledged rows missing: {missing:?} (acked up to {acked})"
            );
        }
        daemon = Daemon::start(&config);
    }
    let last = writer.stop();
    let v = daemon.sync_wait(&db);
    assert!(
        v["replicated_txid"].as_u64().unwrap() >= v["txid"].as_u64().unwrap(),
        "{v}"
    );
    let out = dir.path("final.db");
    restore(&replica, &out, &[]);
    assert_eq!(integrity(&out), "ok");
    let source = ids(&db);
    let restored = ids(&out);
    assert_eq!(source.len() as i64, last, "writer ids are dense");
    assert_eq!(
        restored.len(),
        source.len(),
        "restored {} rows, source has {}",
        restored.len(),
        source.len()
    );
    assert_same_ids(&restored, &source, "final restore");
    assert!(
        acked > 1000,
        "the test acknowledged too little to mean anything: {acked}"
    );
    // Restarts resumed from the spool: same WAL generation (frames after the recorded
    // position) or a new one (the whole database); report which, so a run shows what it tested.
    let count = |s: &str| logs.matches(s).count();
    eprintln!(
        "restarts: resumed in the same WAL generation {}, full database after a new generation {}, unchanged {}",
        count("mode=FramesFrom"),
        count("mode=All") - 1,
        count("full scan: unchanged")
    );
    assert_eq!(daemon.terminate(), 0);
}

/// The workload that lost 84 rows in Litestream 0.5.17 (reference, "falls short" 1): 1000 rows/s
/// for 10 s with a waited sync every 200 ms, then 20 single-row writes each followed by a
/// waited sync. Every row must come back, and both restores must agree.
#[test]
fn reference_workload_loses_nothing() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config("", "");
    let conn = create_db(&db);
    let replica = file_url(&replica);
    let daemon = Daemon::start(&config);
    let writer = Writer::start(&db, 1000);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        daemon.sync_wait(&db);
        std::thread::sleep(Duration::from_millis(200));
    }
    writer.stop();
    for _ in 0..20 {
        conn.execute("INSERT INTO t(v) VALUES ('tail')", [])
            .unwrap();
        daemon.sync_wait(&db);
    }
    let source = ids(&db);
    assert!(
        source.len() > 8000,
        "writer too slow: {} rows",
        source.len()
    );
    let out = dir.path("ours.db");
    restore(&replica, &out, &[]);
    assert_eq!(integrity(&out), "ok");
    assert_same_ids(&ids(&out), &source, "our restore");
    eprintln!(
        "reference workload: {} rows written, {} restored, 0 missing",
        source.len(),
        ids(&out).len()
    );
    assert_eq!(daemon.terminate(), 0);
}

/// The replica lost its newest files (restored from an older backup, say) while the spool no
/// longer has them: the daemon bridges the gap with a level-9 snapshot, and both restores
/// (ours and Litestream's) get every row.
#[test]
fn replica_missing_files_is_bridged_by_a_snapshot() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let replica_dir = dir.path("replica");
    let replica = format!("file://{}", replica_dir.display());
    let config = write_config(dir.dir.path(), &[(&db, &replica)], "", "");
    let daemon = Daemon::start(&config);
    for _ in 0..4 {
        conn.execute("INSERT INTO t(v) VALUES ('a')", []).unwrap();
        daemon.sync_wait(&db);
    }
    assert_eq!(daemon.terminate(), 0);
    // Remove the two newest L0 files from the replica.
    let l0 = replica_dir.join("ltx/0");
    let mut files: Vec<_> = std::fs::read_dir(&l0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files[files.len() - 2..] {
        std::fs::remove_file(f).unwrap();
    }
    let daemon = Daemon::start(&config);
    conn.execute("INSERT INTO t(v) VALUES ('after')", [])
        .unwrap();
    daemon.sync_wait(&db);
    assert!(
        daemon
            .log_text()
            .contains("writing a snapshot to bridge the gap"),
        "{}",
        daemon.log_text()
    );
    let snapshots: Vec<_> = std::fs::read_dir(replica_dir.join("ltx/9"))
        .unwrap()
        .collect();
    assert_eq!(snapshots.len(), 1);
    let out = dir.path("ours.db");
    restore(&replica, &out, &[]);
    assert_eq!(ids(&out), ids(&db));
    let theirs = dir.path("theirs.db");
    let o = std::process::Command::new(reference_bin())
        .args(["restore", "-o", theirs.to_str().unwrap(), &replica])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ids(&theirs), ids(&db));
    assert_eq!(daemon.terminate(), 0);
}

/// `litestream reset` while the daemon replicates (Litestream then stops replicating until
/// a restart): ours recreates the spool and carries on without losing a row.
#[test]
fn reset_while_running_keeps_replicating() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config("", "");
    let conn = create_db(&db);
    let replica = file_url(&replica);
    let daemon = Daemon::start(&config);
    conn.execute("INSERT INTO t(v) VALUES ('a')", []).unwrap();
    daemon.sync_wait(&db);
    // Stop uploads from completing before the reset by writing and resetting in one go.
    conn.execute("INSERT INTO t(v) VALUES ('b')", []).unwrap();
    let o = run(&[
        "reset",
        "-config",
        config.to_str().unwrap(),
        db.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    conn.execute("INSERT INTO t(v) VALUES ('c')", []).unwrap();
    daemon.sync_wait(&db);
    let out = dir.path("out.db");
    restore(&replica, &out, &[]);
    assert_eq!(ids(&out), ids(&db));
    assert_eq!(daemon.terminate(), 0);
}

/// With the application's own checkpoints off, only ours keep the WAL small: under a steady
/// writer the log must keep restarting (each checkpoint holds the write lock only while it
/// runs, so the next write starts a new generation), never grow without bound, and lose
/// nothing across the generations.
#[test]
fn our_checkpoints_bound_the_wal_under_continuous_writes() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config("    min-checkpoint-page-count: 100\n", "");
    create_db(&db);
    let replica = file_url(&replica);
    let daemon = Daemon::start(&config);
    let writer = Writer::start_with(&db, 1000, |c| {
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    });
    let wal = dir.path("app.db-wal");
    let mut max_wal = 0;
    let until = Instant::now() + Duration::from_secs(6);
    let mut generations = BTreeSet::new();
    while Instant::now() < until {
        max_wal = max_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        if let Ok(bytes) = std::fs::read(&wal) {
            if bytes.len() >= 24 {
                generations.insert(bytes[16..24].to_vec());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.stop();
    daemon.sync_wait(&db);
    // About one monitor interval of writes (1000 one-row transactions, 1-2 frames each)
    // accumulates between passes; without restarts six seconds would take 25-50 MB.
    assert!(max_wal < 12 * 1024 * 1024, "WAL grew to {max_wal} bytes");
    assert!(
        generations.len() >= 3,
        "the log restarted only {} times",
        generations.len()
    );
    let out = dir.path("out.db");
    restore(&replica, &out, &[]);
    assert_eq!(ids(&out), ids(&db));
    assert_eq!(daemon.terminate(), 0);
}

/// The writer is killed with SIGKILL in the middle of multi-page transactions (its half-written
/// frames stay in the WAL): nothing uncommitted is replicated, nothing committed is lost.
#[test]
fn kill9_of_the_writer_mid_transaction() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config("", "");
    create_db(&db);
    let replica = file_url(&replica);
    let daemon = Daemon::start(&config);
    // Each transaction writes 40 rows of 2 KB (many pages), so a kill lands mid-transaction
    // most of the time; the small cache makes SQLite spill uncommitted frames to the WAL.
    let script = format!(
        "import sqlite3\nc = sqlite3.connect('{}', isolation_level=None)\nc.execute('PRAGMA cache_size=2')\n\
         while True:\n    c.execute('BEGIN')\n    for _ in range(40):\n        c.execute(\"INSERT INTO t(v) VALUES (hex(randomblob(1000)))\")\n    c.execute('COMMIT')\n",
        db.display()
    );
    for round in 0..6 {
        let mut writer = std::process::Command::new("python3")
            .arg("-c")
            .arg(&script)
            .spawn()
            .unwrap();
        let before = ids(&db).len();
        wait_until(Duration::from_secs(20), "the writer to commit", || {
            ids(&db).len() > before + 200
        });
        std::thread::sleep(Duration::from_millis(rand_range(0, 50)));
        writer.kill().unwrap();
        writer.wait().unwrap();
        let v = daemon.sync_wait(&db);
        let out = dir.path(&format!("round-{round}.db"));
        restore(&replica, &out, &[]);
        assert_eq!(integrity(&out), "ok");
        assert_same_ids(&ids(&out), &ids(&db), &format!("round {round}: {v}"));
        assert_eq!(ids(&out).len() % 40, 0, "only whole transactions");
    }
    assert_eq!(daemon.terminate(), 0);
}

/// After a clean shutdown the daemon keeps its page checksums, so when the application moved
/// the WAL to a new generation while it was down, the next start writes only the pages that
/// changed instead of the whole database (Litestream writes a full snapshot here).
#[test]
fn clean_restart_after_the_wal_moved_on_writes_only_changed_pages() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let conn = create_db(&db);
    conn.execute_batch("BEGIN").unwrap();
    for _ in 0..2000 {
        conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(500)))", [])
            .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    let replica = format!("file://{}", dir.path("replica").display());
    let config = write_config(dir.dir.path(), &[(&db, &replica)], "", "");
    let daemon = Daemon::start(&config);
    daemon.sync_wait(&db);
    assert_eq!(daemon.terminate(), 0);
    assert!(
        dir.path(".app.db-litestream/pages").exists(),
        "page checksums saved on shutdown"
    );
    // While the daemon is down: a few updates, a full checkpoint, more updates (new salts).
    conn.execute("UPDATE t SET v = 'changed' WHERE id IN (5, 500, 1500)", [])
        .unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    conn.execute("UPDATE t SET v = 'again' WHERE id = 1999", [])
        .unwrap();
    let daemon = Daemon::start(&config);
    daemon.sync_wait(&db);
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("msg=\"full scan\" "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("mode=Changed"), "{line}");
    let value = |key: &str| -> u32 {
        line.split(&format!(" {key}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}: {line}"))
    };
    let (written, total) = (value("pages"), value("commit"));
    assert!(
        total > 200 && written < 20,
        "wrote {written} of {total} pages"
    );
    assert!(
        !dir.path(".app.db-litestream/pages").exists(),
        "used once, then removed"
    );
    let out = dir.path("out.db");
    restore(&replica, &out, &[]);
    assert!(
        rows(&out) == rows(&db),
        "the restore differs from the source"
    );
    let theirs = dir.path("theirs.db");
    let o = std::process::Command::new(reference_bin())
        .args(["restore", "-o", theirs.to_str().unwrap(), &replica])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        rows(&theirs) == rows(&db),
        "Litestream's restore differs from the source"
    );
    assert_eq!(daemon.terminate(), 0);
}
