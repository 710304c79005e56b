//! The two connections the daemon keeps on every database, used as alternating read locks.
//!
//! Why two: SQLite restarts the WAL (overwriting it from the start) only when no reader holds
//! a read mark above zero, and backfills (checkpoints) only up to the oldest reader's mark.
//! A sync pass takes a read transaction on the idle connection *before* it releases the one
//! held since the previous pass and reads the log while holding both, so there is never a
//! moment in which an application checkpoint plus a restart could overwrite frames we have
//! not read.
//!
//! Our own checkpoints ([`ReadLocks::checkpoint_frozen`]) briefly hold SQLite's write lock
//! (`BEGIN IMMEDIATE`, which writes nothing) so no frame can be appended between our last read
//! and the backfill; the lock taken afterwards then sits on read mark 0 when the backfill was
//! complete, which lets the application's next write restart the log with nothing unread.
//! Writers wait only for as long as the checkpoint itself takes. See DESIGN.md, "Durability
//! rules".

use std::os::raw::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{ffi, Connection, OpenFlags};

/// The result of `PRAGMA wal_checkpoint`: whether it was blocked, frames in the log, frames
/// backfilled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointResult {
    pub busy: bool,
    pub log_frames: i64,
    pub checkpointed_frames: i64,
}

/// Checkpoint modes the daemon uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    /// Copies what it can without blocking anyone.
    Passive,
    /// Waits for writers and readers, copies everything and truncates the log to zero bytes.
    Truncate,
}

impl CheckpointMode {
    /// The mode as SQLite and Litestream's metrics name it (`PASSIVE`, `TRUNCATE`).
    pub fn name(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "PASSIVE",
            CheckpointMode::Truncate => "TRUNCATE",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            CheckpointMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        }
    }
}

/// Opens one daemon connection: read-write (checkpoints need it, and switching to WAL mode),
/// a small page cache (we read pages from the files, not through SQLite), a busy timeout, and
/// the WAL kept on close so our own shutdown never deletes the log our position points into.
pub fn open(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    configure_sqlite_memory();
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    disable_lookaside(&conn);
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch("PRAGMA cache_size = -64;")?;
    set_persist_wal(&conn)?;
    Ok(conn)
}

/// Turns off SQLite's up-front page-cache allocation (about 87 KB per connection), once per
/// process and before SQLite initialises: the daemon holds two connections per database and
/// reads pages from the files itself, so with 100 databases that memory was most of its heap.
/// If SQLite is already initialised (a test opened a connection first), the call is refused
/// and nothing changes.
fn configure_sqlite_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_PAGECACHE takes (void*, int, int); a null buffer with 0 lines
        // means "no initial bulk allocation". Called before any connection is opened here.
        unsafe {
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_PAGECACHE,
                std::ptr::null_mut::<c_void>(),
                0 as c_int,
                0 as c_int,
            );
        }
    });
}

/// Frees the connection's lookaside buffer (48 KB): our connections run a handful of tiny
/// statements per pass, where the small-allocation cache buys nothing.
fn disable_lookaside(conn: &Connection) {
    // SAFETY: valid handle, no statement has run yet so no lookaside memory is outstanding;
    // SQLITE_DBCONFIG_LOOKASIDE takes (void*, int, int).
    unsafe {
        ffi::sqlite3_db_config(
            conn.handle(),
            ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<c_void>(),
            0 as c_int,
            0 as c_int,
        );
    }
}

/// Sets SQLITE_FCNTL_PERSIST_WAL on the main database of `conn`.
fn set_persist_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut on: c_int = 1;
    // SAFETY: the handle is valid for the life of `conn`, the schema name is a NUL-terminated
    // static string, and PERSIST_WAL takes a pointer to an int that outlives the call.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_PERSIST_WAL,
            &mut on as *mut c_int as *mut c_void,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some("set persist_wal".into()),
        ))
    }
}

/// The journal mode of the database as SQLite reports it (`wal`, `delete`, ...).
pub fn journal_mode(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
        .map(|m| m.to_lowercase())
}

/// Switches the database to WAL mode, which Litestream requires; SQLite needs a moment with
/// no other connection in a transaction to do it.
pub fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row("PRAGMA journal_mode = wal", [], |r| r.get::<_, String>(0))
        .map(|m| m.to_lowercase())
}

/// Runs a checkpoint on a connection that is not in a transaction.
pub fn checkpoint(conn: &Connection, mode: CheckpointMode) -> rusqlite::Result<CheckpointResult> {
    conn.prepare_cached(mode.sql())?.query_row([], |r| {
        Ok(CheckpointResult {
            busy: r.get::<_, i64>(0)? != 0,
            log_frames: r.get(1)?,
            checkpointed_frames: r.get(2)?,
        })
    })
}

/// How long a checkpoint under our write lock waits for the checkpoint lock. The application
/// runs its own (automatic) checkpoint right after a commit, holding that lock; with our write
/// lock held it cannot start another, so the wait ends when the one running does.
const CKPT_LOCK_WAIT: Duration = Duration::from_millis(50);

/// A PASSIVE checkpoint, retried for up to `wait` while another connection's checkpoint holds
/// the checkpoint lock (SQLite answers `busy` at once then, without calling a busy handler).
fn checkpoint_waiting(conn: &Connection, wait: Duration) -> rusqlite::Result<CheckpointResult> {
    let deadline = std::time::Instant::now() + wait;
    let mut pause = Duration::from_micros(50);
    loop {
        let r = checkpoint(conn, CheckpointMode::Passive)?;
        let now = std::time::Instant::now();
        if !r.busy || now >= deadline {
            return Ok(r);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

/// What [`ReadLocks::checkpoint_frozen`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Frozen<T> {
    /// The application held the write lock for the whole busy timeout; nothing was done.
    Busy,
    /// The tail reader declined; the write lock was released and nothing was checkpointed.
    Declined,
    /// The checkpoint ran; `T` is what the tail reader returned, and the duration how long the
    /// application's writers were kept waiting by our write lock.
    Done(CheckpointResult, T, Duration),
}

/// Two connections used as alternating read locks (see the module docs). The one not holding
/// the lock is opened when a pass needs it and closed again while the database is idle
/// ([`ReadLocks::hibernate`]): an idle database then costs one connection, not two.
pub struct ReadLocks {
    conns: [Option<Connection>; 2],
    path: PathBuf,
    busy_timeout: Duration,
    /// Index of the connection holding the current lock, if any.
    held: Option<usize>,
    /// Index of a lock taken by [`ReadLocks::acquire_next`] and not yet promoted.
    next: Option<usize>,
}

impl ReadLocks {
    /// Opens the first connection (the second is opened when a pass needs it).
    pub fn open(path: &Path, busy_timeout: Duration) -> rusqlite::Result<ReadLocks> {
        Ok(ReadLocks {
            conns: [Some(open(path, busy_timeout)?), None],
            path: path.to_path_buf(),
            busy_timeout,
            held: None,
            next: None,
        })
    }

    /// Opens connection `i` if it is closed.
    fn ensure(&mut self, i: usize) -> rusqlite::Result<()> {
        if self.conns[i].is_none() {
            self.conns[i] = Some(open(&self.path, self.busy_timeout)?);
        }
        Ok(())
    }

    /// Connection `i`, which the caller knows is open (it holds a lock, or `ensure` ran).
    fn conn(&self, i: usize) -> &Connection {
        self.conns[i].as_ref().expect("a connection in use is open")
    }

    /// The connection not holding the current lock: for checkpoints and pragmas.
    pub fn idle(&mut self) -> rusqlite::Result<&Connection> {
        let i = 1 - self.held.unwrap_or(1);
        self.ensure(i)?;
        Ok(self.conn(i))
    }

    /// The connection holding the newest read transaction, if any.
    pub fn locked(&self) -> Option<&Connection> {
        self.next.or(self.held).map(|i| self.conn(i))
    }

    /// Closes the connection that holds no lock, while the database is idle; the lock held
    /// stays. SQLite keeps the file descriptors of a closed connection whose file another
    /// connection of the process still locks, so closing it cannot drop our read mark.
    /// Returns whether a connection was closed.
    pub fn hibernate(&mut self) -> bool {
        match (self.held, self.next) {
            (Some(h), None) => self.conns[1 - h].take().is_some(),
            _ => false,
        }
    }

    /// Whether a read lock is held.
    pub fn is_held(&self) -> bool {
        self.held.is_some() || self.next.is_some()
    }

    /// Begins a read transaction on the idle connection while the current one stays held.
    pub fn acquire_next(&mut self) -> rusqlite::Result<()> {
        debug_assert!(self.next.is_none());
        let i = match self.held {
            Some(h) => 1 - h,
            None => 0,
        };
        self.ensure(i)?;
        begin_read(self.conn(i))?;
        self.next = Some(i);
        Ok(())
    }

    /// Releases the previously held lock, keeping the one taken by `acquire_next`.
    pub fn release_previous(&mut self) {
        if let Some(n) = self.next.take() {
            if let Some(h) = self.held.replace(n) {
                end_read(self.conn(h));
            }
        }
    }

    /// Checkpoints without ever letting a frame we have not read be backfilled:
    ///
    /// 1. `BEGIN IMMEDIATE` on the idle connection ([`begin_immediate`]): no writer can append
    ///    from here on;
    /// 2. `read_tail()` reads the log to its end (under both locks); it returns `None` to
    ///    decline (the tail is too large to hold), and nothing is checkpointed;
    /// 3. the previous read lock is released and a PASSIVE checkpoint runs on its connection,
    ///    backfilling up to the frozen end (unless application readers hold it back);
    /// 4. a new read lock is taken on that connection (read mark 0 if the backfill was complete)
    ///    before the write lock is released, so a lock is held at every moment;
    /// 5. for [`CheckpointMode::Truncate`], and only after a complete backfill, a TRUNCATE
    ///    checkpoint follows; our mark-0 lock makes it fail rather than backfill anything new.
    ///
    /// The application's writers wait for steps 2 to 4 only: `read_tail` should read into
    /// memory and leave slow work (fsyncs) for after the return.
    pub fn checkpoint_frozen<T, E: From<rusqlite::Error>>(
        &mut self,
        mode: CheckpointMode,
        read_tail: impl FnOnce() -> Result<Option<T>, E>,
    ) -> Result<Frozen<T>, E> {
        self.release_previous();
        let held = match self.held {
            Some(h) => h,
            None => {
                self.acquire_next()?;
                self.release_previous();
                self.held.unwrap_or(0)
            }
        };
        let writer = 1 - held;
        self.ensure(writer)?;
        if !begin_immediate(self.conn(writer), self.busy_timeout)? {
            return Ok(Frozen::Busy);
        }
        let locked_at = std::time::Instant::now();
        let result = (|| {
            let Some(tail) = read_tail()? else {
                return Ok(None);
            };
            end_read(self.conn(held));
            self.held = None;
            let result = checkpoint_waiting(self.conn(held), CKPT_LOCK_WAIT)?;
            begin_read(self.conn(held))?;
            self.held = Some(held);
            Ok(Some((result, tail)))
        })();
        end_read(self.conn(writer));
        let locked = locked_at.elapsed();
        let (mut result, tail): (CheckpointResult, T) = match result {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(Frozen::Declined),
            Err(e) => {
                // Leave a lock held whatever failed, so continuity is only lost if even that fails.
                if self.held.is_none() && begin_read(self.conn(held)).is_ok() {
                    self.held = Some(held);
                }
                return Err(e);
            }
        };
        let complete = !result.busy && result.log_frames == result.checkpointed_frames;
        if mode == CheckpointMode::Truncate && complete {
            result = checkpoint(self.conn(writer), CheckpointMode::Truncate)?;
        }
        Ok(Frozen::Done(result, tail, locked))
    }

    /// Releases every lock (before a checkpoint that must wait for all readers).
    pub fn release_all(&mut self) {
        for i in [self.next.take(), self.held.take()].into_iter().flatten() {
            end_read(self.conn(i));
        }
    }
}

/// Takes SQLite's write lock (`BEGIN IMMEDIATE`, which writes nothing) within `timeout`;
/// `Ok(false)` when the application kept it that long.
///
/// SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between attempts, and during a
/// write burst (a transaction every few microseconds, with gaps of a microsecond or two
/// between them) a try only lands in a gap now and then. So this tries every 50 µs for the
/// first 20 ms (a few percent of one core while it lasts), then backs off, doubling to 5 ms,
/// which bounds the cost while an application transaction runs long.
pub fn begin_immediate(conn: &Connection, timeout: Duration) -> rusqlite::Result<bool> {
    conn.busy_timeout(Duration::ZERO)?;
    let started = std::time::Instant::now();
    let deadline = started + timeout;
    let mut pause = Duration::from_micros(50);
    let result = loop {
        match run_cached(conn, "BEGIN IMMEDIATE") {
            Ok(()) => break Ok(true),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break Ok(false);
                }
                std::thread::sleep(pause.min(deadline - now));
                if now - started >= Duration::from_millis(20) {
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
            Err(e) => break Err(e),
        }
    };
    conn.busy_timeout(timeout)?;
    result
}

/// Starts a read transaction and reads the schema so SQLite takes its read mark now.
fn begin_read(conn: &Connection) -> rusqlite::Result<()> {
    run_cached(conn, "BEGIN")?;
    let read = conn
        .prepare_cached("SELECT count(*) FROM sqlite_master")
        .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)));
    match read {
        Ok(_) => Ok(()),
        Err(e) => {
            end_read(conn);
            Err(e)
        }
    }
}

fn end_read(conn: &Connection) {
    // A read-only transaction cannot fail to end in a way that leaves a lock behind; if SQLite
    // reports an error the connection is no longer in a transaction either way.
    let _ = run_cached(conn, "ROLLBACK");
}

/// Runs a statement kept in the connection's statement cache: passes run these every second
/// for every database, so they are parsed once.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::wal::WalHeader;
    use std::fs::File;

    fn app_db(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join("app.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
            .unwrap();
        conn
    }

    /// Our two connections on `app.db` in `dir`.
    fn locks_of(dir: &Path) -> ReadLocks {
        ReadLocks::open(&dir.join("app.db"), Duration::from_secs(1)).unwrap()
    }

    /// One application transaction of one 100-byte row.
    fn write_row(app: &Connection) {
        app.execute("INSERT INTO t(v) VALUES (randomblob(100))", [])
            .unwrap();
    }

    /// The application's own PASSIVE checkpoint.
    fn app_checkpoint(app: &Connection) {
        app.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
    }

    fn wal_header(dir: &Path) -> WalHeader {
        WalHeader::read(&File::open(dir.join("app.db-wal")).unwrap())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn held_lock_prevents_wal_restart_by_application_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        write_row(&app);
        let mut locks = locks_of(tmp.path());
        locks.acquire_next().unwrap();
        locks.release_previous();
        let before = wal_header(tmp.path());
        // The app checkpoints and writes again: with our lock held, the log cannot restart.
        app_checkpoint(&app);
        write_row(&app);
        assert_eq!(wal_header(tmp.path()), before);
        // Handing the lock over to the other connection keeps it pinned too.
        locks.acquire_next().unwrap();
        locks.release_previous();
        app_checkpoint(&app);
        write_row(&app);
        assert_eq!(wal_header(tmp.path()).salt2, before.salt2);
        // Without any lock, a full checkpoint lets the next write restart the log.
        locks.release_all();
        let r = checkpoint(locks.idle().unwrap(), CheckpointMode::Passive).unwrap();
        assert_eq!(r.log_frames, r.checkpointed_frames);
        write_row(&app);
        assert_ne!(wal_header(tmp.path()).salt2, before.salt2);
    }

    #[test]
    fn hibernating_closes_the_spare_connection_and_keeps_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        write_row(&app);
        let mut locks = locks_of(tmp.path());
        assert!(!locks.hibernate(), "nothing held: nothing to close");
        locks.acquire_next().unwrap();
        locks.release_previous();
        locks.acquire_next().unwrap();
        locks.release_previous();
        assert!(locks.hibernate());
        assert!(!locks.hibernate(), "closed already");
        let before = wal_header(tmp.path());
        // The lock still pins the log: a checkpoint and a write do not restart it.
        app_checkpoint(&app);
        write_row(&app);
        assert_eq!(wal_header(tmp.path()), before);
        // The next pass reopens the spare and hands the lock over as before.
        locks.acquire_next().unwrap();
        locks.release_previous();
        assert!(locks.is_held());
        let r = checkpoint(locks.idle().unwrap(), CheckpointMode::Passive).unwrap();
        assert_eq!(r.log_frames, r.checkpointed_frames, "{r:?}");
    }

    #[test]
    fn passive_checkpoint_on_idle_connection_stops_at_the_held_mark() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        write_row(&app);
        let mut locks = locks_of(tmp.path());
        locks.acquire_next().unwrap();
        locks.release_previous();
        write_row(&app);
        let r = checkpoint(locks.idle().unwrap(), CheckpointMode::Passive).unwrap();
        assert!(r.checkpointed_frames < r.log_frames, "{r:?}");
    }

    #[test]
    fn frozen_checkpoint_lets_the_next_write_restart_with_nothing_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        write_row(&app);
        let mut locks = locks_of(tmp.path());
        locks.acquire_next().unwrap();
        locks.release_previous();
        write_row(&app);
        let before = wal_header(tmp.path());
        let wal_len = || {
            std::fs::metadata(tmp.path().join("app.db-wal"))
                .unwrap()
                .len()
        };
        let Frozen::Done(r, tail_len, _) = locks
            .checkpoint_frozen::<_, rusqlite::Error>(CheckpointMode::Passive, || {
                Ok(Some(wal_len()))
            })
            .unwrap()
        else {
            panic!("checkpoint did not run")
        };
        assert_eq!(
            r.log_frames, r.checkpointed_frames,
            "complete backfill: {r:?}"
        );
        assert!(locks.is_held());
        // Nothing was appended after the tail was read.
        assert_eq!(wal_len(), tail_len);
        // The app's next write restarts the log even though we hold a lock (mark 0).
        write_row(&app);
        assert_ne!(wal_header(tmp.path()).salt2, before.salt2);
    }

    #[test]
    fn frozen_truncate_checkpoint_empties_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        for _ in 0..10 {
            app.execute("INSERT INTO t(v) VALUES (randomblob(1000))", [])
                .unwrap();
        }
        let before = wal_header(tmp.path());
        let mut locks = locks_of(tmp.path());
        locks.acquire_next().unwrap();
        locks.release_previous();
        let r = locks
            .checkpoint_frozen::<_, rusqlite::Error>(CheckpointMode::Truncate, || Ok(Some(())))
            .unwrap();
        assert!(matches!(r, Frozen::Done(..)), "{r:?}");
        assert_eq!(
            std::fs::metadata(tmp.path().join("app.db-wal"))
                .unwrap()
                .len(),
            0
        );
        write_row(&app);
        let after = wal_header(tmp.path());
        assert_ne!(after.salt2, before.salt2);
    }

    #[test]
    fn frozen_checkpoint_gives_up_while_the_app_holds_a_write_transaction() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        let mut locks =
            ReadLocks::open(&tmp.path().join("app.db"), Duration::from_millis(50)).unwrap();
        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO t(v) VALUES (1);")
            .unwrap();
        let r = locks
            .checkpoint_frozen::<(), rusqlite::Error>(CheckpointMode::Passive, || {
                panic!("no tail read")
            })
            .unwrap();
        assert_eq!(r, Frozen::Busy);
        app.execute_batch("COMMIT").unwrap();
    }

    #[test]
    fn declined_tail_leaves_the_log_unchanged_and_a_lock_held() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        let mut locks = locks_of(tmp.path());
        locks.acquire_next().unwrap();
        locks.release_previous();
        write_row(&app);
        let before = wal_header(tmp.path());
        let r = locks
            .checkpoint_frozen::<(), rusqlite::Error>(CheckpointMode::Passive, || Ok(None))
            .unwrap();
        assert_eq!(r, Frozen::Declined);
        assert!(locks.is_held());
        // Nothing was backfilled past our mark, so the next write cannot restart the log.
        write_row(&app);
        assert_eq!(wal_header(tmp.path()).salt2, before.salt2);
    }

    #[test]
    fn begin_immediate_waits_for_a_short_application_transaction() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        let ours = open(&tmp.path().join("app.db"), Duration::from_secs(5)).unwrap();
        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO t(v) VALUES (1);")
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let committer = std::thread::spawn(move || {
            // Commits once the daemon side has given up once and starts waiting again.
            rx.recv().unwrap();
            app.execute_batch("COMMIT").unwrap();
        });
        assert!(!begin_immediate(&ours, Duration::from_millis(20)).unwrap());
        tx.send(()).unwrap();
        assert!(begin_immediate(&ours, Duration::from_secs(5)).unwrap());
        run_cached(&ours, "ROLLBACK").unwrap();
        committer.join().unwrap();
    }

    #[test]
    fn persist_wal_keeps_the_log_when_the_last_connection_closes() {
        let tmp = tempfile::tempdir().unwrap();
        let app = app_db(tmp.path());
        write_row(&app);
        let header = wal_header(tmp.path());
        let ours = open(&tmp.path().join("app.db"), Duration::from_secs(1)).unwrap();
        drop(app);
        drop(ours);
        assert_eq!(wal_header(tmp.path()), header);
    }
}
