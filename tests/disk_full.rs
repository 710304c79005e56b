//! Full disks (issue 9, fault suite), with the real binary: a file replica whose filesystem
//! fills; a database whose local state (`meta-path`, the spool) sits on a full filesystem,
//! filled from outside or by the spool itself while the replica is away; a restart while it
//! is full.
//! Each is a small tmpfs mounted in the test's directory (this needs root, or at least the
//! right to mount). The daemon must stay up, say what is full and where, never answer a waited
//! `/sync` with success for data the replica does not hold, never block the application's
//! writer, and catch up on its own once there is room, losing no acknowledged row.
//!
//! Without the right to mount these tests fail, unless `LITESTREAM_TEST_NO_MOUNT=1` says to
//! skip them knowingly (`tests/run.sh` sets it when a trial mount fails).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use rusqlite::Connection;

const WAIT: Duration = Duration::from_secs(30);
/// Long enough for the upload backoff (capped at a minute) after a few failures.
const RECOVER: Duration = Duration::from_secs(90);
const ENOSPC: &str = "No space left on device";

/// A tmpfs mounted on a directory for the life of a test, unmounted (lazily) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`mount -o`, e.g. `size=1m`) on `dir`, creating it. `None`
    /// when mounting is not permitted and `LITESTREAM_TEST_NO_MOUNT=1` says to skip; panics
    /// otherwise.
    fn mount(dir: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output();
        let why = match o {
            Ok(o) if o.status.success() => {
                return Some(Tmpfs {
                    dir: dir.to_path_buf(),
                })
            }
            Ok(o) => String::from_utf8_lossy(&o.stderr)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("cannot run mount: {e}"),
        };
        if std::env::var("LITESTREAM_TEST_NO_MOUNT").as_deref() == Ok("1") {
            eprintln!("SKIPPED: cannot mount a tmpfs ({why}), so the full-disk test did NOT run (LITESTREAM_TEST_NO_MOUNT=1)");
            return None;
        }
        panic!("mounting a small tmpfs is needed for the full-disk tests (run as root, or with CAP_SYS_ADMIN): {why}; or set LITESTREAM_TEST_NO_MOUNT=1 to skip them knowingly");
    }

    /// Changes the size (`mount -o remount,size=`).
    fn resize(&self, size: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "remount {} to {size}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Fills the filesystem with a file `dummy` but for about `keep` bytes; returns its path.
    fn fill_but(&self, keep: u64) -> PathBuf {
        let dummy = self.dir.join("dummy");
        let free = self.available();
        std::fs::write(&dummy, vec![0u8; free.saturating_sub(keep) as usize]).unwrap();
        dummy
    }

    /// Bytes still free.
    fn available(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs on a NUL-terminated path into a zeroed struct we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

/// `app.db` replicating to `replica`, its `meta-path` (`meta`, returned third) on a tmpfs
/// mounted with `options` (returned second); `extra_top` is added to the config. `None` when
/// the test is to be skipped (see [`Tmpfs::mount`]). Bind the parts in this order, so that the
/// tmpfs is unmounted before the directory it is mounted in is removed.
fn meta_on_tmpfs(options: &str, extra_top: &str) -> Option<(OneDb, Tmpfs, PathBuf)> {
    let dir = TestDir::new();
    let fs = Tmpfs::mount(&dir.path("meta-fs"), options)?;
    let meta = fs.dir.join("meta");
    let replica = dir.path("replica");
    let extra_db = format!("    meta-path: {}\n", meta.display());
    Some((OneDb::in_dir(dir, replica, &extra_db, extra_top), fs, meta))
}

/// The start every test shares: the database opened (for bulk inserts), the daemon started, a
/// writer committing 100 rows a second seen moving, and a first waited sync.
fn start_writing(db: &Path, config: &Path) -> (Connection, Daemon, Writer) {
    let conn = create_db(db);
    let daemon = Daemon::start(config);
    let writer = Writer::start(db, 100);
    assert_writer_moves(&writer, 10, "at the start");
    daemon.sync_wait(db);
    (conn, daemon, writer)
}

/// Bulk transactions, each synced without waiting, until the `/list` entry's `field`
/// (`error`: the spool; `replica_error`: the uploads) names ENOSPC.
fn fill_until_enospc(conn: &Connection, d: &Daemon, db: &Path, field: &str, what: &str) {
    wait_until(WAIT, what, || {
        bulk_insert(conn);
        sync_now(d, db);
        list_entry(d, db)[field]
            .as_str()
            .is_some_and(|e| e.contains(ENOSPC))
    });
}

/// Waits (up to `RECOVER`) until the entry shows neither `error` nor `replica_error`; returns
/// how long that took.
fn wait_errors_clear(d: &Daemon, db: &Path, what: &str) -> Duration {
    let started = Instant::now();
    wait_until(RECOVER, what, || {
        let e = list_entry(d, db);
        e["error"].is_null() && e["replica_error"].is_null()
    });
    started.elapsed()
}

/// Adds about 200 KB of incompressible rows to table `bulk` in one transaction.
fn bulk_insert(conn: &Connection) {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS bulk(b BLOB);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100)
         INSERT INTO bulk(b) SELECT randomblob(2000) FROM c;",
    )
    .unwrap();
}

/// A sync pass without waiting for the replica, so each bulk transaction gets its own LTX
/// file (the answer does not matter here: it fails while the spool cannot be written).
fn sync_now(d: &Daemon, db: &Path) {
    d.request("POST", "/sync", Some(&path_body(db)));
}

/// Every row of `bulk` as (rowid, blob), to compare a restore with the source.
fn bulk_rows(path: &Path) -> Vec<(i64, Vec<u8>)> {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn
        .prepare("SELECT rowid, b FROM bulk ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A waited `/sync` with a short timeout; it must not report success.
fn assert_sync_not_acknowledged(d: &Daemon, db: &Path, what: &str) {
    let body = format!(r#"{{"path":"{}","wait":true,"timeout":3}}"#, db.display());
    let started = Instant::now();
    let r = d.request("POST", "/sync", Some(&body));
    assert!(
        r.status >= 400,
        "{what}: a waited sync answered {} {} after {:?}",
        r.status,
        r.body,
        started.elapsed()
    );
    let v = r.json();
    assert!(v["error"].is_string(), "{what}: {v}");
    // The answer says why: a timeout names the last error, a failed pass is that error.
    let details = v["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("No space left on device") || details.contains("os error 28"),
        "{what}: the answer does not give the cause: {v}"
    );
}

/// The writer commits `n` more rows within `WAIT`.
fn assert_writer_moves(writer: &Writer, n: i64, what: &str) {
    let from = writer.last_id.load(Ordering::SeqCst);
    wait_until(
        WAIT,
        &format!("the writer to commit {n} rows {what}"),
        || writer.last_id.load(Ordering::SeqCst) >= from + n,
    );
}

fn assert_running(d: &mut Daemon) {
    if let Some(status) = d.child.try_wait().unwrap() {
        panic!("the daemon exited ({status}): {}", d.log_text());
    }
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Temporary files anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(temp_files(&p));
        } else if e.file_name().to_string_lossy().ends_with(".tmp") {
            out.push(p);
        }
    }
    out
}

/// After recovery: the writer stopped, a clean waited sync, then a restore into `out` equal to
/// the source (every row the writer committed, and every bulk row).
fn assert_restore_equals_source(writer: Writer, d: &Daemon, db: &Path, replica: &Path, out: &Path) {
    let last = writer.stop();
    d.sync_wait(db);
    restore(&file_url(replica), out, &[]);
    assert_eq!(integrity(out), "ok");
    let want = ids(db);
    assert!(
        want.last().copied().unwrap_or(0) >= last,
        "the source lacks the writer's last row {last}"
    );
    assert_same_ids(&ids(out), &want, "restore after the disk was full");
    assert!(bulk_rows(out) == bulk_rows(db), "bulk rows differ");
}

/// The replica's filesystem fills while the application writes: an error in `/list` that
/// names the cause and the path, no waited sync acknowledged, the writer unhindered; once the
/// filesystem grows, the error clears on its own, and a restore has every row.
#[test]
fn a_full_replica_directory_is_an_error_until_it_has_room_and_loses_nothing() {
    let dir = TestDir::new();
    let Some(fs) = Tmpfs::mount(&dir.path("replica-fs"), "size=1m") else {
        return;
    };
    let replica = fs.dir.join("replica");
    // Compaction every second or two writes into the full replica too.
    let OneDb {
        dir, db, config, ..
    } = OneDb::in_dir(
        dir,
        replica.clone(),
        "",
        "levels:\n  - interval: 1s\n  - interval: 2s\n",
    );
    let (conn, mut daemon, writer) = start_writing(&db, &config);

    // Fill the replica: 200 KB transactions until an upload fails for want of space.
    let started = Instant::now();
    fill_until_enospc(
        &conn,
        &daemon,
        &db,
        "replica_error",
        "an upload to fail with ENOSPC",
    );
    eprintln!("replica full after {:?}", started.elapsed());
    let entry = list_entry(&daemon, &db);
    let error = entry["replica_error"].as_str().unwrap();
    assert!(
        error.contains(&replica.display().to_string()),
        "the error names the replica path: {entry}"
    );
    assert!(
        entry["replicated_txid"].as_u64() < entry["txid"].as_u64(),
        "{entry}"
    );
    assert!(daemon.log_text().contains(ENOSPC), "{}", daemon.log_text());

    // While full: the writer goes on, waited syncs are refused, the daemon stays up.
    bulk_insert(&conn);
    assert_writer_moves(&writer, 50, "while the replica is full");
    assert_sync_not_acknowledged(&daemon, &db, "replica full");
    assert_writer_moves(&writer, 50, "after the refused sync");
    assert_running(&mut daemon);
    let entry = list_entry(&daemon, &db);
    assert!(
        entry["replica_error"]
            .as_str()
            .is_some_and(|e| e.contains(ENOSPC)),
        "{entry}"
    );
    wait_until(WAIT, "compaction to fail too", || {
        daemon.log_text().contains("compaction: ")
    });
    if let Some(e) = list_entry(&daemon, &db)["compaction_error"].as_str() {
        assert!(
            e.contains(ENOSPC) && e.contains(&replica.display().to_string()),
            "{e}"
        );
    }

    // Room again: the error clears without help, and everything arrives.
    fs.resize("64m");
    let started = Instant::now();
    wait_until(RECOVER, "the replica error to clear", || {
        list_entry(&daemon, &db)["replica_error"].is_null()
    });
    eprintln!(
        "replica error cleared {:?} after the remount",
        started.elapsed()
    );
    daemon.sync_wait(&db);
    assert_writer_moves(&writer, 10, "after recovery");
    let out = dir.path("restored.db");
    assert_restore_equals_source(writer, &daemon, &db, &replica, &out);
    wait_until(WAIT, "the compaction error to clear", || {
        list_entry(&daemon, &db)["compaction_error"].is_null()
    });
    let entry = list_entry(&daemon, &db);
    assert!(entry["replica_error"].is_null(), "{entry}");
    assert!(entry["error"].is_null(), "{entry}");
    assert_eq!(temp_files(&replica), Vec::<PathBuf>::new());
    assert_running(&mut daemon);
    assert_eq!(daemon.terminate(), 0);
}

/// The database's local state (`meta-path`: the spool the daemon writes every transaction to
/// before uploading it) is on a full filesystem while the database itself is not: an error in
/// `/list` naming the cause and the path, no waited sync acknowledged, the writer unhindered,
/// no panic; once space is freed, replication catches up and a restore equals the source.
#[test]
fn a_full_meta_path_is_an_error_until_it_has_room_and_loses_nothing() {
    let Some((
        OneDb {
            dir,
            db,
            replica,
            config,
        },
        fs,
        meta,
    )) = meta_on_tmpfs("size=16m", "")
    else {
        return;
    };
    let (conn, mut daemon, writer) = start_writing(&db, &config);
    assert!(
        meta.join("ltx").join("0").is_dir(),
        "the spool is not under meta-path"
    );

    // Fill the filesystem but ~100 KB, then write more than that.
    let dummy = fs.fill_but(100 * 1024);
    let started = Instant::now();
    fill_until_enospc(
        &conn,
        &daemon,
        &db,
        "error",
        "the spool to fail with ENOSPC",
    );
    eprintln!("meta-path full after {:?}", started.elapsed());
    let entry = list_entry(&daemon, &db);
    let error = entry["error"].as_str().unwrap();
    assert!(
        error.contains(&meta.display().to_string()),
        "the error names the meta-path: {entry}"
    );
    assert!(daemon.log_text().contains(ENOSPC), "{}", daemon.log_text());

    // While full: the writer goes on, waited syncs are refused, the daemon stays up. Past
    // 1000 pages of WAL, SQLite's own checkpoint (on `conn`) may restart the log under frames
    // the daemon could not spool.
    let wal = dir.path("app.db-wal");
    let wal_before = std::fs::metadata(&wal).unwrap().len();
    for _ in 0..25 {
        bulk_insert(&conn);
    }
    eprintln!(
        "WAL {} KB before the bulk inserts while full, {} KB after",
        wal_before / 1024,
        std::fs::metadata(&wal).unwrap().len() / 1024
    );
    assert_writer_moves(&writer, 50, "while meta-path is full");
    assert_sync_not_acknowledged(&daemon, &db, "meta-path full");
    assert_writer_moves(&writer, 50, "after the refused sync");
    assert_running(&mut daemon);

    // Room again: the error clears without help, and everything arrives.
    std::fs::remove_file(&dummy).unwrap();
    let took = wait_errors_clear(&daemon, &db, "the error to clear");
    eprintln!("meta-path error cleared {took:?} after freeing space");
    daemon.sync_wait(&db);
    assert_writer_moves(&writer, 10, "after recovery");
    let out = dir.path("restored.db");
    assert_restore_equals_source(writer, &daemon, &db, &replica, &out);
    assert_eq!(temp_files(&meta), Vec::<PathBuf>::new());
    assert_eq!(temp_files(&replica), Vec::<PathBuf>::new());
    assert_running(&mut daemon);
    assert_eq!(daemon.terminate(), 0);
}

/// The spool fills its filesystem on its own: the replica is unreachable (its `ltx` directory
/// replaced by a file), so every transaction stays spooled until `meta-path` is full. When
/// the replica comes back, the uploads drain the spool, pruning frees the space, and spooling
/// resumes without anyone freeing space by hand; nothing acknowledged is lost.
#[test]
fn a_spool_that_fills_while_the_replica_is_away_drains_when_it_returns() {
    let Some((
        OneDb {
            dir,
            db,
            replica,
            config,
        },
        fs,
        meta,
    )) = meta_on_tmpfs("size=2m", "")
    else {
        return;
    };
    let (conn, mut daemon, writer) = start_writing(&db, &config);

    // The replica goes away.
    let away = Blocked::dir(&replica.join("ltx"));
    let started = Instant::now();
    fill_until_enospc(&conn, &daemon, &db, "error", "the spool to fill meta-path");
    eprintln!(
        "meta-path full after {:?}, {} KB free",
        started.elapsed(),
        fs.available() / 1024
    );
    let entry = list_entry(&daemon, &db);
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains(&meta.display().to_string()),
        "the error names the meta-path: {entry}"
    );
    assert!(!entry["replica_error"].is_null(), "{entry}");
    bulk_insert(&conn);
    assert_writer_moves(&writer, 50, "while the spool is full");
    assert_sync_not_acknowledged(&daemon, &db, "spool full, replica away");
    assert_running(&mut daemon);

    // The replica returns; nobody touches meta-path.
    away.unblock();
    let took = wait_errors_clear(&daemon, &db, "the errors to clear");
    eprintln!("errors cleared {took:?} after the replica returned");
    daemon.sync_wait(&db);
    assert_writer_moves(&writer, 10, "after recovery");
    let out = dir.path("restored.db");
    assert_restore_equals_source(writer, &daemon, &db, &replica, &out);
    assert_eq!(temp_files(&meta), Vec::<PathBuf>::new());
    assert_eq!(temp_files(&replica), Vec::<PathBuf>::new());
    assert_running(&mut daemon);
    assert_eq!(daemon.terminate(), 0);
}

/// A restart while `meta-path` is full: the daemon stops cleanly, starts again (it must not
/// refuse to start or exit), reports the error, and catches up once space is freed.
#[test]
fn a_restart_with_a_full_meta_path_starts_and_catches_up() {
    let Some((
        OneDb {
            dir,
            db,
            replica,
            config,
        },
        fs,
        meta,
    )) = meta_on_tmpfs("size=16m", "")
    else {
        return;
    };
    let (conn, daemon, writer) = start_writing(&db, &config);

    let dummy = fs.fill_but(100 * 1024);
    fill_until_enospc(
        &conn,
        &daemon,
        &db,
        "error",
        "the spool to fail with ENOSPC",
    );
    // The transactions that could not be spooled are still in the WAL for the next start,
    // and the stop says so.
    let log = daemon.log.clone();
    assert_eq!(daemon.terminate(), 0, "a clean stop with meta-path full");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.lines().any(|l| l.contains("level=WARN")
            && l.contains("shutting down without the final sync")
            && l.contains(ENOSPC)),
        "{log}"
    );
    bulk_insert(&conn);
    assert_writer_moves(&writer, 20, "while the daemon is down");

    let mut daemon = Daemon::start(&config);
    wait_until(WAIT, "the error after the restart", || {
        list_entry(&daemon, &db)["error"]
            .as_str()
            .is_some_and(|e| e.contains(ENOSPC) && e.contains(&meta.display().to_string()))
    });
    assert_sync_not_acknowledged(&daemon, &db, "restarted with meta-path full");
    assert_writer_moves(&writer, 50, "after the restart");
    assert_running(&mut daemon);

    std::fs::remove_file(&dummy).unwrap();
    let took = wait_errors_clear(&daemon, &db, "the error to clear");
    eprintln!("error cleared {took:?} after freeing space");
    let out = dir.path("restored.db");
    assert_restore_equals_source(writer, &daemon, &db, &replica, &out);
    assert_eq!(temp_files(&meta), Vec::<PathBuf>::new());
    assert_running(&mut daemon);
    assert_eq!(daemon.terminate(), 0);
}

/// Out of inodes rather than bytes: `meta-path` on a tmpfs whose inodes are all taken, so the
/// spool cannot even create its temporary file (and compaction, which stages its output in
/// `meta-path`, cannot either). The same answers: errors naming the path, no acknowledged
/// sync, the writer unhindered, and a full catch-up once inodes are free.
#[test]
fn a_meta_path_out_of_inodes_is_an_error_until_freed_and_loses_nothing() {
    let Some((
        OneDb {
            dir,
            db,
            replica,
            config,
        },
        fs,
        meta,
    )) = meta_on_tmpfs("size=16m,nr_inodes=40", "levels:\n  - interval: 1s\n")
    else {
        return;
    };
    let (conn, mut daemon, writer) = start_writing(&db, &config);

    // Take every free inode with empty files.
    let mut taken = vec![];
    loop {
        let p = fs.dir.join(format!("inode-{}", taken.len()));
        match std::fs::write(&p, b"") {
            Ok(()) => taken.push(p),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("{}: {e}", p.display()),
        }
    }
    fill_until_enospc(
        &conn,
        &daemon,
        &db,
        "error",
        "the spool to fail with ENOSPC",
    );
    let entry = list_entry(&daemon, &db);
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains(&meta.display().to_string()),
        "the error names the meta-path: {entry}"
    );
    assert_writer_moves(&writer, 50, "while meta-path has no inodes");
    assert_sync_not_acknowledged(&daemon, &db, "meta-path out of inodes");
    wait_until(WAIT, "compaction to fail too", || {
        daemon.log_text().contains("compaction: ")
    });
    assert_running(&mut daemon);

    for p in &taken {
        std::fs::remove_file(p).unwrap();
    }
    wait_until(RECOVER, "the errors to clear", || {
        let e = list_entry(&daemon, &db);
        e["error"].is_null() && e["replica_error"].is_null() && e["compaction_error"].is_null()
    });
    let out = dir.path("restored.db");
    assert_restore_equals_source(writer, &daemon, &db, &replica, &out);
    assert_eq!(temp_files(&meta), Vec::<PathBuf>::new());
    assert_running(&mut daemon);
    assert_eq!(daemon.terminate(), 0);
}
