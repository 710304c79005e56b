//! One database being replicated: its thread, its sync loop and its position.
//!
//! Each pass (every `monitor-interval`, or on `/sync`) takes a new read lock before releasing
//! the old one, reads the WAL from the last position to the last commit frame, and writes the
//! pages those transactions changed as one L0 LTX file into the spool, which the uploader pool
//! then copies to the replica. The running database checksum (8 bytes per page) goes into
//! every file, so a restore can prove it rebuilt exactly this database.
//!
//! When the position cannot be trusted (first start, restart of the daemon with a WAL of
//! another generation, an error between reading and recording frames) the pass reads the
//! whole database through its read lock instead and writes what differs from the known state:
//! a snapshot when nothing is known, only the changed pages otherwise.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use crate::durable;
use crate::events::{Event, EventHub};
use crate::ltx::{self, Checksum, Encoder, Header, PageChecksums, TxId};
use crate::registry::{DbStatus, Registry};
use crate::replica::uploader::{UploadJob, UploadQueue};
use crate::replica::{self, ReplicaClient};
use crate::spool::{Spool, SpoolFile};
use crate::sqlite::conn::{self, CheckpointMode, ReadLocks};
use crate::sqlite::shm::{self, WalIndexHeader};
use crate::sqlite::wal::{self, CommitEnd, Frame, WalChecksum, WalHeader, WAL_HEADER_SIZE};
use crate::sqlite::{self as sq};
use crate::timefmt;

/// Settings of one database (from `dbs:` in the config, or `/register`).
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub path: PathBuf,
    /// Where the spool lives: `.<name>-litestream` beside the database by default.
    pub meta_dir: PathBuf,
    pub monitor_interval: Duration,
    pub checkpoint_interval: Duration,
    pub busy_timeout: Duration,
    pub min_checkpoint_page_count: u64,
    pub truncate_page_n: u64,
}

/// Outcome of a sync request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStatus {
    /// New transactions were written to the spool (not waited for the replica).
    SyncedLocal,
    /// The replica confirmed every transaction up to `txid`.
    Synced,
    /// Nothing new since the last pass.
    NoChange,
}

impl SyncStatus {
    /// The word in `/sync` answers.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::SyncedLocal => "synced_local",
            SyncStatus::Synced => "synced",
            SyncStatus::NoChange => "no_change",
        }
    }
}

/// Answer to [`DbCommand::Sync`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReply {
    pub status: SyncStatus,
    pub txid: TxId,
    pub replicated_txid: TxId,
}

/// Messages to a database thread.
pub enum DbCommand {
    /// Run a pass now; with `wait`, answer only once the replica holds the result.
    Sync {
        wait: bool,
        reply: Sender<Result<SyncReply, String>>,
    },
    /// An upload finished (sent by the uploader pool).
    Uploaded {
        max: TxId,
        result: Result<(), String>,
    },
    /// Stop replicating (release the database) but stay registered; answers whether it was running.
    Pause { reply: Sender<bool> },
    /// Resume after `Pause`; answers whether it was stopped.
    Resume { reply: Sender<bool> },
    /// Final pass, then wait for uploads until `deadline`, then exit.
    Shutdown {
        deadline: Instant,
        reply: Sender<()>,
    },
}

/// A running database thread.
pub struct DbHandle {
    pub path: PathBuf,
    pub ctl: Sender<DbCommand>,
    pub thread: JoinHandle<()>,
}

/// What the thread shares with the rest of the daemon.
#[derive(Clone)]
pub struct Shared {
    pub registry: Arc<Registry>,
    pub events: Arc<EventHub>,
    pub uploads: UploadQueue,
}

/// Starts the thread for one database. The caller has registered it in the registry with the
/// returned channel's sender.
pub fn spawn(
    opts: DbOptions,
    replica: Arc<dyn ReplicaClient>,
    shared: Shared,
    ctl: (Sender<DbCommand>, Receiver<DbCommand>),
) -> io::Result<DbHandle> {
    let path = opts.path.clone();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tx, rx) = ctl;
    let mut db = DbThread::new(opts, replica, shared, tx.clone(), rx);
    let thread = thread::Builder::new()
        .name(format!("db:{name}"))
        .spawn(move || db.run())?;
    Ok(DbHandle {
        path,
        ctl: tx,
        thread,
    })
}

/// A new command channel for a database thread.
pub fn channel() -> (Sender<DbCommand>, Receiver<DbCommand>) {
    unbounded()
}

/// Where we are in the WAL: the end of the last committed frame we turned into LTX.
#[derive(Clone, Copy, Debug)]
enum WalPos {
    /// The WAL had no generation (empty file); everything is in the database file.
    Empty,
    At {
        header: WalHeader,
        offset: u64,
        checksum: WalChecksum,
    },
}

/// Where the newest spooled file says the WAL stood: used once after a restart.
#[derive(Clone, Copy, Debug)]
struct ResumePoint {
    salts: (u32, u32),
    offset: u64,
}

/// Which pages a full scan writes.
#[derive(Clone, Copy, Debug)]
enum Include {
    /// Every page, written as a snapshot (min TXID 1) even when files came before it.
    Snapshot,
    /// Every page (a snapshot, or a state we cannot relate to the last file).
    All,
    /// Pages whose checksum differs from the known state.
    Changed,
    /// Pages last written by WAL frames at or after this offset (resuming the same generation).
    FramesFrom(u64),
}

struct Uploads {
    /// Spooled files not yet confirmed, oldest first.
    queue: VecDeque<PendingUpload>,
    in_flight: bool,
    retry_at: Option<Instant>,
    failures: u32,
    replicated: TxId,
}

struct PendingUpload {
    min: TxId,
    max: TxId,
    timestamp_ms: i64,
    path: PathBuf,
}

impl PendingUpload {
    /// Where the file goes: a snapshot taken to bridge a gap (min 1, max > 1) is a level-9
    /// snapshot, as Litestream stores them; everything else, including the first file, L0.
    fn level(&self) -> u8 {
        if self.min == TxId(1) && self.max > TxId(1) {
            replica::SNAPSHOT_LEVEL
        } else {
            0
        }
    }
}

struct Waiter {
    txid: TxId,
    changed: bool,
    reply: Sender<Result<SyncReply, String>>,
}

/// Everything a pass reads and updates, apart from the SQLite connections (kept separate so a
/// checkpoint can borrow the connections while a tail read updates this).
struct SyncState {
    opts: DbOptions,
    wal_path: PathBuf,
    replica: Arc<dyn ReplicaClient>,
    shared: Shared,
    ctl_tx: Sender<DbCommand>,
    spool: Option<Spool>,
    /// The database file, opened once and kept open while SQLite has it open: closing any
    /// descriptor of it would release SQLite's POSIX locks (and let another process delete
    /// the WAL under us). Read with pread for snapshots.
    db_file: Option<File>,
    /// The WAL index (`-shm`), kept open for the same reason as `db_file`.
    shm_file: Option<File>,
    page_size: u32,
    txid: TxId,
    /// Database checksum after `txid`; `None` when the replica's last file carried none.
    post: Option<Checksum>,
    commit: u32,
    /// Checksum of every page at `txid`; `None` until the first full scan.
    table: Option<PageChecksums>,
    pos: Option<WalPos>,
    /// Whether a read lock has been held without a gap since the last successful read, which
    /// proves that a new WAL generation cannot hide frames we did not read.
    continuous: bool,
    resume: Option<ResumePoint>,
    uploads: Uploads,
    waiters: Vec<Waiter>,
    last_checkpoint: Instant,
    synced_since_checkpoint: bool,
    /// The last checkpoint could not backfill everything (application readers).
    checkpoint_incomplete: bool,
    /// Set once the local spool and the replica position have been reconciled.
    initialized: bool,
    /// The replica misses files the spool no longer has: the next pass writes a snapshot
    /// (min TXID 1) that restores can start from, uploaded to level 9.
    needs_snapshot: bool,
}

struct DbThread {
    /// Declared before `st` so the connections close before the kept database file handle.
    locks: Option<ReadLocks>,
    st: SyncState,
    ctl_rx: Receiver<DbCommand>,
    paused: bool,
    next_pass: Instant,
    last_error: Option<String>,
}

impl DbThread {
    fn new(
        opts: DbOptions,
        replica: Arc<dyn ReplicaClient>,
        shared: Shared,
        ctl_tx: Sender<DbCommand>,
        ctl_rx: Receiver<DbCommand>,
    ) -> DbThread {
        let wal_path = sq::wal_path(&opts.path);
        DbThread {
            locks: None,
            st: SyncState {
                opts,
                wal_path,
                replica,
                shared,
                ctl_tx,
                spool: None,
                db_file: None,
                shm_file: None,
                page_size: 0,
                txid: TxId(0),
                post: None,
                commit: 0,
                table: None,
                pos: None,
                continuous: false,
                resume: None,
                uploads: Uploads {
                    queue: VecDeque::new(),
                    in_flight: false,
                    retry_at: None,
                    failures: 0,
                    replicated: TxId(0),
                },
                waiters: vec![],
                last_checkpoint: Instant::now(),
                synced_since_checkpoint: false,
                checkpoint_incomplete: false,
                initialized: false,
                needs_snapshot: false,
            },
            ctl_rx,
            paused: false,
            next_pass: Instant::now(),
            last_error: None,
        }
    }

    fn path(&self) -> &Path {
        &self.st.opts.path
    }

    fn run(&mut self) {
        log::info!(
            "db={} replica={}: replicating",
            self.path().display(),
            self.st.replica.url()
        );
        loop {
            let now = Instant::now();
            let mut wake = if self.paused {
                now + Duration::from_secs(3600)
            } else {
                self.next_pass
            };
            if let Some(t) = self.st.upload_wakeup() {
                wake = wake.min(t);
            }
            match self
                .ctl_rx
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(DbCommand::Shutdown { deadline, reply }) => {
                    self.shutdown(deadline);
                    let _ = reply.send(());
                    return;
                }
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if !self.paused && Instant::now() >= self.next_pass {
                let _ = self.pass();
            }
            self.st.pump_uploads();
        }
    }

    fn handle(&mut self, cmd: DbCommand) {
        match cmd {
            DbCommand::Sync { wait, reply } => {
                if self.paused {
                    let _ = reply.send(Err("database is stopped; start it first".into()));
                    return;
                }
                if wait && self.st.uploads.retry_at.is_some() {
                    // Someone waits for the replica: try it now rather than at the end of a
                    // backoff that may have grown to a minute while it was unreachable.
                    self.st.uploads.retry_at = Some(Instant::now());
                }
                match self.pass() {
                    Ok(changed) => self.st.answer_sync(changed, wait, reply),
                    Err(e) => {
                        let _ = reply.send(Err(format!("{e:#}")));
                    }
                }
            }
            DbCommand::Uploaded { max, result } => self.st.on_uploaded(max, result),
            DbCommand::Pause { reply } => {
                let was_running = !self.paused;
                if was_running {
                    self.paused = true;
                    self.locks = None;
                    self.st.continuous = false;
                    self.st.set_status(DbStatus::Stopped, None);
                    log::info!("db={}: stopped", self.path().display());
                }
                let _ = reply.send(was_running);
            }
            DbCommand::Resume { reply } => {
                let was_stopped = self.paused;
                if was_stopped {
                    self.paused = false;
                    self.next_pass = Instant::now();
                    self.st.set_status(DbStatus::Open, None);
                    log::info!("db={}: started", self.path().display());
                }
                let _ = reply.send(was_stopped);
            }
            DbCommand::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    /// One sync pass with its bookkeeping: registry status, error logging, checkpoints.
    fn pass(&mut self) -> Result<bool> {
        self.next_pass = Instant::now() + self.st.opts.monitor_interval;
        let result = self.try_pass();
        match &result {
            Ok(_) => {
                if self.last_error.take().is_some() {
                    log::info!("db={}: sync recovered", self.path().display());
                }
                self.st.set_status(DbStatus::Replicating, None);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if self.last_error.as_deref() != Some(&msg) {
                    log::error!("db={}: sync failed: {msg}", self.path().display());
                }
                self.st.set_status(DbStatus::Error, Some(msg.clone()));
                self.last_error = Some(msg);
            }
        }
        result
    }

    fn try_pass(&mut self) -> Result<bool> {
        if self.locks.is_none() {
            self.locks = Some(self.st.open_database()?);
        }
        if !self.st.initialized {
            self.st.initialize()?;
        }
        let locks = self.locks.as_mut().expect("opened above");
        locks
            .acquire_next()
            .with_context(|| format!("{}: begin read transaction", self.st.opts.path.display()))?;
        let result = {
            let locked = locks.locked().expect("lock just acquired");
            self.st.sync_locked(&|| page_count(locked))
        };
        locks.release_previous();
        self.st.continuous = result.is_ok();
        let changed = result?;
        if let Err(e) = self.maybe_checkpoint() {
            log::warn!("db={}: checkpoint failed: {e:#}", self.path().display());
        }
        Ok(changed)
    }

    /// Runs our checkpoint policy after a successful pass.
    fn maybe_checkpoint(&mut self) -> Result<()> {
        let Some(WalPos::At { header, offset, .. }) = self.st.pos else {
            return Ok(());
        };
        // Only after new transactions: a checkpoint of an unchanged log (idle database, or one
        // a reader kept us from finishing) would take the write lock every pass for nothing;
        // an unfinished one is retried with the next write or after `checkpoint-interval`.
        let frames = offset.saturating_sub(WAL_HEADER_SIZE) / header.frame_size();
        let opts = &self.st.opts;
        let since = self.st.last_checkpoint.elapsed();
        // `checkpoint-interval: 0` turns the time-based checkpoint off.
        let interval_due = !opts.checkpoint_interval.is_zero() && since >= opts.checkpoint_interval;
        let due =
            self.st.synced_since_checkpoint || (self.st.checkpoint_incomplete && interval_due);
        if !due {
            return Ok(());
        }
        let mode = if frames >= opts.truncate_page_n {
            CheckpointMode::Truncate
        } else if frames >= opts.min_checkpoint_page_count || interval_due {
            CheckpointMode::Passive
        } else {
            return Ok(());
        };
        let locks = self.locks.as_mut().expect("open after a pass");
        let st = &mut self.st;
        let started = Instant::now();
        let result = locks.checkpoint_frozen::<anyhow::Error>(mode, || {
            // Nothing can be appended now: record the tail so the backfill copies nothing unread.
            st.sync_locked(&|| bail!("page count unavailable during a checkpoint"))
                .map(|_| ())
        });
        match result {
            Ok(Some(r)) => {
                st.last_checkpoint = Instant::now();
                st.synced_since_checkpoint = false;
                st.checkpoint_incomplete = r.busy || r.checkpointed_frames < r.log_frames;
                log::debug!(
                    "db={} checkpoint mode={mode:?} frames={frames} log={} backfilled={} busy={} elapsed={:?}",
                    st.opts.path.display(),
                    r.log_frames,
                    r.checkpointed_frames,
                    r.busy,
                    started.elapsed()
                );
                Ok(())
            }
            Ok(None) => {
                log::debug!(
                    "db={} checkpoint skipped: the application holds the write lock",
                    st.opts.path.display()
                );
                Ok(())
            }
            Err(e) => {
                st.continuous = locks.is_held() && st.continuous;
                Err(e)
            }
        }
    }

    fn shutdown(&mut self, deadline: Instant) {
        if !self.paused {
            let _ = self.pass();
        }
        // Wait for the replica to confirm what is spooled, bounded by the deadline.
        while !self.st.uploads.queue.is_empty() && Instant::now() < deadline {
            self.st.pump_uploads();
            let wait = deadline.saturating_duration_since(Instant::now());
            let wait = self.st.upload_wakeup().map_or(wait, |t| {
                wait.min(t.saturating_duration_since(Instant::now()))
            });
            match self.ctl_rx.recv_timeout(wait) {
                Ok(DbCommand::Uploaded { max, result }) => self.st.on_uploaded(max, result),
                Ok(DbCommand::Sync { reply, .. }) => {
                    let _ = reply.send(Err("shutting down".into()));
                }
                Ok(DbCommand::Pause { reply }) | Ok(DbCommand::Resume { reply }) => {
                    let _ = reply.send(false);
                }
                Ok(DbCommand::Shutdown { reply, .. }) => {
                    let _ = reply.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if !self.st.uploads.queue.is_empty() {
            log::warn!(
                "db={}: shutting down with {} file(s) not yet replicated (kept in the spool for the next start)",
                self.path().display(),
                self.st.uploads.queue.len()
            );
        }
        for w in self.st.waiters.drain(..) {
            let _ = w.reply.send(Err("shutting down".into()));
        }
        self.locks = None;
    }
}

/// `PRAGMA page_count` in the held read transaction: the database size at our read mark.
fn page_count(conn: &rusqlite::Connection) -> Result<u32> {
    Ok(conn.query_row("PRAGMA page_count", [], |r| r.get::<_, u32>(0))?)
}

impl SyncState {
    /// Opens the connections after checking the file: it must exist, be a SQLite database,
    /// and be (or be switched to) WAL mode.
    fn open_database(&mut self) -> Result<ReadLocks> {
        let path = self.opts.path.clone();
        let display = path.display();
        // No SQLite connection of ours is open here, so replacing the kept handle is safe.
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                bail!("{display}: database file does not exist")
            }
            Err(e) => return Err(anyhow!(e)).with_context(|| format!("{display}: open")),
        };
        let header = sq::read_db_header_from(&file).with_context(|| format!("{display}"))?;
        self.db_file = Some(file);
        self.shm_file = None;
        let locks = ReadLocks::open(&path, self.opts.busy_timeout)
            .with_context(|| format!("{display}: open"))?;
        let mode = conn::journal_mode(locks.idle())
            .with_context(|| format!("{display}: read journal mode"))?;
        if mode != "wal" {
            let now = conn::enable_wal(locks.idle())
                .with_context(|| format!("{display}: database is in {mode} journal mode and switching to WAL failed (is another process holding it?)"))?;
            if now != "wal" {
                bail!("{display}: database is in {mode} journal mode and SQLite refused to switch it to WAL ({now})");
            }
            log::info!("db={display}: switched journal mode from {mode} to wal");
        }
        let page_size = match header {
            Some(h) => h.page_size,
            None => locks
                .idle()
                .query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0))?,
        };
        if self.page_size != 0 && self.page_size != page_size {
            bail!("{display}: page size changed from {} to {page_size}; run `litestream reset` and restart", self.page_size);
        }
        self.page_size = page_size;
        if self.spool.is_none() {
            let spool = Spool::open(&self.opts.meta_dir).with_context(|| {
                format!(
                    "{display}: create spool directory in {}",
                    self.opts.meta_dir.display()
                )
            })?;
            self.spool = Some(spool);
        }
        Ok(locks)
    }

    fn spool(&self) -> &Spool {
        self.spool.as_ref().expect("spool opened before use")
    }

    /// Reconciles the spool with the replica once: where to resume, what to upload.
    fn initialize(&mut self) -> Result<()> {
        let display = self.opts.path.display().to_string();
        let files = self
            .spool()
            .files()
            .with_context(|| format!("{display}: list spool"))?;
        let mut local = TxId(0);
        if let Some(last) = files.last() {
            let header = read_verified_header(&last.path).with_context(|| {
                format!(
                    "{display}: spooled file {} is unreadable; run `litestream reset {display}`",
                    last.path.display()
                )
            })?;
            local = header.max_txid;
            self.txid = local;
            self.post = header.ext_checksums.map(|(_, post)| post);
            self.commit = header.commit;
            if header.wal_offset > 0 {
                self.resume = Some(ResumePoint {
                    salts: (header.wal_salt1, header.wal_salt2),
                    offset: (header.wal_offset + header.wal_size) as u64,
                });
            }
        }
        let remote = match replica_position(self.replica.as_ref()) {
            Ok(r) => Some(r),
            Err(e) => {
                log::warn!(
                    "db={display}: cannot list replica {} ({e:#}); uploading every spooled file",
                    self.replica.url()
                );
                None
            }
        };
        let remote_max = remote.as_ref().map_or(TxId(0), |r| r.txid);
        if remote_max > local {
            // The replica is ahead of this spool (spool deleted, or restored elsewhere): continue
            // its TXID sequence; the first pass writes the whole database unless it matches.
            let (post, commit) = remote.map_or((None, 0), |r| (r.post, r.commit));
            log::warn!(
                "db={display}: replica {} is at txid {remote_max}, ahead of the local spool ({local}); continuing from the replica",
                self.replica.url()
            );
            self.spool()
                .clear()
                .with_context(|| format!("{display}: clear spool"))?;
            self.txid = remote_max;
            self.post = post;
            self.commit = commit;
            self.resume = None;
            self.uploads.replicated = remote_max;
        } else {
            self.uploads.replicated = remote_max;
            for f in files.iter().filter(|f| f.max > remote_max) {
                let header = read_verified_header(&f.path)
                    .with_context(|| format!("{display}: spooled {}", f.path.display()))?;
                self.uploads.queue.push_back(PendingUpload {
                    min: f.min,
                    max: f.max,
                    timestamp_ms: header.timestamp_ms,
                    path: f.path.clone(),
                });
            }
            let gap = match self.uploads.queue.front() {
                Some(first) => first.min.0 > remote_max.0 + 1,
                None => remote.is_some() && remote_max < local,
            };
            if gap {
                log::warn!(
                    "db={display}: replica {} is at txid {remote_max} and the spool no longer has the files after it; writing a snapshot to bridge the gap",
                    self.replica.url()
                );
                self.uploads.queue.clear();
                self.needs_snapshot = true;
            }
        }
        let (txid, replicated) = (self.txid, self.uploads.replicated);
        self.shared.registry.update(&self.opts.path, |v| {
            v.txid = txid;
            v.replicated_txid = replicated;
        });
        self.initialized = true;
        Ok(())
    }

    /// The body of a pass, under a freshly taken read lock. Returns whether an LTX file was written.
    fn sync_locked(&mut self, page_count: &dyn Fn() -> Result<u32>) -> Result<bool> {
        let wal = match File::open(&self.wal_path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("open {}", self.wal_path.display())),
        };
        let header = match &wal {
            Some(f) => {
                WalHeader::read(f).with_context(|| format!("read {}", self.wal_path.display()))?
            }
            None => None,
        };
        let current = match (&wal, header) {
            (Some(file), Some(header)) => {
                let index = self.wal_index()?;
                if index.salt != header.salt_bytes() {
                    // The log was restarted and SQLite has not published a commit in the new
                    // generation yet: nothing is committed that we could read.
                    return Ok(false);
                }
                Some(Log {
                    file,
                    header,
                    limit: header.frame_end(index.max_frame),
                })
            }
            _ => None,
        };
        if self.needs_snapshot {
            return self.full_scan(current, Include::Snapshot, page_count);
        }
        if self.table.is_none() {
            let include = match (self.resume.take(), header) {
                _ if self.txid == TxId(0) => Include::All,
                (Some(r), Some(h))
                    if r.salts == (h.salt1, h.salt2) && r.offset >= WAL_HEADER_SIZE =>
                {
                    Include::FramesFrom(r.offset)
                }
                _ => Include::All,
            };
            return self.full_scan(current, include, page_count);
        }
        match (self.pos, current) {
            (
                Some(WalPos::At {
                    header: h0,
                    offset,
                    checksum,
                }),
                Some(log),
            ) if h0.salt_bytes() == log.header.salt_bytes() && offset <= log.limit => {
                self.sync_frames(log, offset, checksum)
            }
            // A new generation while our lock was held throughout: the old one ended where we
            // stopped reading (see sqlite::conn), so its frames are all recorded.
            (Some(WalPos::At { header: h0, .. }), Some(log))
                if self.continuous && h0.salt_bytes() != log.header.salt_bytes() =>
            {
                self.sync_frames(log, WAL_HEADER_SIZE, log.header.checksum)
            }
            (Some(WalPos::Empty), Some(log)) if self.continuous => {
                self.sync_frames(log, WAL_HEADER_SIZE, log.header.checksum)
            }
            (_, None) if self.continuous => {
                self.pos = Some(WalPos::Empty);
                Ok(false)
            }
            _ => {
                log::info!(
                    "db={}: WAL position lost (new generation after a gap, or the log is shorter than what was read); comparing the whole database",
                    self.opts.path.display()
                );
                self.full_scan(current, Include::Changed, page_count)
            }
        }
    }

    /// The WAL index header, retried while a writer is publishing a commit.
    fn wal_index(&mut self) -> Result<WalIndexHeader> {
        let shm_path = sq::shm_path(&self.opts.path);
        if self.shm_file.is_none() {
            let f =
                File::open(&shm_path).with_context(|| format!("open {}", shm_path.display()))?;
            self.shm_file = Some(f);
        }
        let shm = self.shm_file.as_ref().expect("opened above");
        for _ in 0..1000 {
            if let Some(h) =
                shm::read_header(shm).with_context(|| format!("read {}", shm_path.display()))?
            {
                return Ok(h);
            }
            std::thread::yield_now();
        }
        bail!("{}: the WAL index header stays unreadable (is the database open in exclusive locking mode?)", shm_path.display())
    }

    /// Turns the committed frames after `from` into one LTX file.
    fn sync_frames(&mut self, log: Log<'_>, from: u64, seed: WalChecksum) -> Result<bool> {
        let (wal, header) = (log.file, log.header);
        let wal_display = self.wal_path.display().to_string();
        let scanned = wal::scan_committed(wal, header, from, seed, log.limit)
            .with_context(|| format!("read {wal_display}"))?;
        let mut dirty = scanned.pages;
        let Some(CommitEnd {
            offset: end_offset,
            checksum: end_checksum,
            commit,
        }) = scanned.end
        else {
            if from == WAL_HEADER_SIZE {
                // A new generation with nothing committed yet: start reading it from here on.
                self.pos = Some(WalPos::At {
                    header,
                    offset: from,
                    checksum: seed,
                });
            }
            return Ok(false);
        };
        if header.page_size != self.page_size {
            bail!(
                "{wal_display}: page size {} differs from the database's {}",
                header.page_size,
                self.page_size
            );
        }
        let lock = ltx::lock_pgno(self.page_size);
        dirty.retain(|&pgno, _| pgno <= commit && pgno != lock);
        // First pass: checksums of the new pages, for the post-apply checksum in the header.
        let table = self
            .table
            .as_ref()
            .expect("incremental sync needs the page table");
        let mut page = vec![0u8; self.page_size as usize];
        let mut post = table.checksum().0 & !ltx::CHECKSUM_FLAG;
        let mut new_sums = Vec::with_capacity(dirty.len());
        for (&pgno, frame) in &dirty {
            read_wal_page(wal, &header, frame, &mut page, &wal_display)?;
            let ck = ltx::page_checksum(pgno, &page);
            post ^= table.get(pgno).map_or(0, |c| c.0 & !ltx::CHECKSUM_FLAG)
                ^ (ck.0 & !ltx::CHECKSUM_FLAG);
            new_sums.push((pgno, ck));
        }
        for pgno in commit + 1..=table.page_count() {
            if !dirty.contains_key(&pgno) {
                post ^= table.get(pgno).map_or(0, |c| c.0 & !ltx::CHECKSUM_FLAG);
            }
        }
        let post = Checksum(post | ltx::CHECKSUM_FLAG);
        let txid = TxId(self.txid.0 + 1);
        let ltx_header =
            self.ltx_header(txid, txid, commit, from, end_offset - from, &header, post);
        let path = self.spool().path(txid, txid).context("spool directory")?;
        durable::write_file(&path, |w| {
            let mut enc = Encoder::new(w, &ltx_header).map_err(io::Error::other)?;
            for (&pgno, frame) in &dirty {
                read_wal_page(wal, &header, frame, &mut page, &wal_display)
                    .map_err(io::Error::other)?;
                enc.encode_page(pgno, &page).map_err(io::Error::other)?;
            }
            enc.finish(post).map_err(io::Error::other)?;
            Ok(())
        })
        .with_context(|| format!("write {}", path.display()))?;
        let table = self.table.as_mut().expect("checked above");
        for (pgno, ck) in new_sums {
            table.set(pgno, ck);
        }
        table.truncate(commit);
        debug_assert_eq!(table.checksum(), post);
        self.pos = Some(WalPos::At {
            header,
            offset: end_offset,
            checksum: end_checksum,
        });
        self.recorded(&ltx_header, post, path, dirty.len());
        Ok(true)
    }

    /// Reads the whole database as of our read lock (the database file overlaid with the
    /// current generation's committed frames), rebuilds the page table, and writes the pages
    /// `include` selects as one LTX file (none if nothing changed).
    fn full_scan(
        &mut self,
        current: Option<Log<'_>>,
        include: Include,
        page_count: &dyn Fn() -> Result<u32>,
    ) -> Result<bool> {
        let started = Instant::now();
        let wal_display = self.wal_path.display().to_string();
        let db_display = self.opts.path.display().to_string();
        // The committed frames of the current generation: newest frame of each page.
        let scanned = match current {
            Some(log) => wal::scan_committed(
                log.file,
                log.header,
                WAL_HEADER_SIZE,
                log.header.checksum,
                log.limit,
            )
            .with_context(|| format!("read {wal_display}"))?,
            None => wal::Committed::default(),
        };
        let (overlay, end) = (scanned.pages, scanned.end);
        let include = match include {
            Include::FramesFrom(off) if end.is_none_or(|e| off > e.offset) => Include::All,
            other => other,
        };
        let commit = match end {
            Some(e) => e.commit,
            None => page_count()?,
        };
        let db = self.db_file.as_ref().context("database file not open")?;
        let lock = ltx::lock_pgno(self.page_size);
        let mut page = vec![0u8; self.page_size as usize];
        let read_page = |pgno: u32, page: &mut [u8]| -> Result<()> {
            match (overlay.get(&pgno), current) {
                (Some(frame), Some(log)) => {
                    read_wal_page(log.file, &log.header, frame, page, &wal_display)
                }
                _ => db
                    .read_exact_at(page, u64::from(pgno - 1) * u64::from(self.page_size))
                    .with_context(|| format!("read page {pgno} of {db_display}")),
            }
        };
        // First pass: the checksum of every page.
        let mut table = PageChecksums::new(self.page_size);
        for pgno in (1..=commit).filter(|&p| p != lock) {
            read_page(pgno, &mut page)?;
            table.set(pgno, ltx::page_checksum(pgno, &page));
        }
        let post = table.checksum();
        let old = self.table.take();
        let selected = |pgno: u32| match include {
            Include::All | Include::Snapshot => true,
            Include::Changed => old.as_ref().and_then(|t| t.get(pgno)) != table.get(pgno),
            Include::FramesFrom(off) => overlay.get(&pgno).is_some_and(|f| f.offset >= off),
        };
        let new_pos = match (current, end) {
            (Some(log), Some(e)) => WalPos::At {
                header: log.header,
                offset: e.offset,
                checksum: e.checksum,
            },
            (Some(log), None) => WalPos::At {
                header: log.header,
                offset: WAL_HEADER_SIZE,
                checksum: log.header.checksum,
            },
            (None, _) => WalPos::Empty,
        };
        let unchanged = !matches!(include, Include::Snapshot)
            && self.txid > TxId(0)
            && self.post == Some(post)
            && self.commit == commit;
        if unchanged || commit == 0 {
            self.table = Some(table);
            self.pos = Some(new_pos);
            log::debug!(
                "db={db_display} full scan: unchanged at txid {} ({:?})",
                self.txid,
                started.elapsed()
            );
            return Ok(false);
        }
        let txid = TxId(self.txid.0 + 1);
        let min = if self.txid == TxId(0) || matches!(include, Include::Snapshot) {
            TxId(1)
        } else {
            txid
        };
        let (wal_offset, wal_size, wal_header) = match new_pos {
            WalPos::At { header, offset, .. } => (offset, 0, Some(header)),
            WalPos::Empty => (0, 0, None),
        };
        let mut ltx_header = self.ltx_header(
            min,
            txid,
            commit,
            wal_offset,
            wal_size,
            &wal_header.unwrap_or(EMPTY_WAL),
            post,
        );
        if wal_header.is_none() {
            (ltx_header.wal_salt1, ltx_header.wal_salt2) = (0, 0);
        }
        let path = self.spool().path(min, txid).context("spool directory")?;
        let mut written = 0usize;
        durable::write_file(&path, |w| {
            let mut enc = Encoder::new(w, &ltx_header).map_err(io::Error::other)?;
            for pgno in (1..=commit).filter(|&p| p != lock && selected(p)) {
                read_page(pgno, &mut page).map_err(io::Error::other)?;
                enc.encode_page(pgno, &page).map_err(io::Error::other)?;
                written += 1;
            }
            enc.finish(post).map_err(io::Error::other)?;
            Ok(())
        })
        .with_context(|| format!("write {}", path.display()))?;
        self.table = Some(table);
        self.pos = Some(new_pos);
        self.needs_snapshot = false;
        log::info!(
            "db={db_display} full scan: txid={txid} mode={include:?} pages={written}/{commit} elapsed={:?}",
            started.elapsed()
        );
        self.recorded(&ltx_header, post, path, written);
        Ok(true)
    }

    /// The header of a file this daemon writes: NoChecksum (so Litestream restores it) with
    /// the database checksums in the reserved bytes.
    #[allow(clippy::too_many_arguments)]
    fn ltx_header(
        &self,
        min: TxId,
        max: TxId,
        commit: u32,
        wal_offset: u64,
        wal_size: u64,
        wal: &WalHeader,
        post: Checksum,
    ) -> Header {
        let pre = if min == TxId(1) {
            Checksum(0)
        } else {
            self.post.unwrap_or(Checksum(0))
        };
        Header {
            flags: ltx::FLAG_NO_CHECKSUM,
            page_size: self.page_size,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: timefmt::now_ms(),
            pre_apply_checksum: Checksum(0),
            wal_offset: wal_offset as i64,
            wal_size: wal_size as i64,
            wal_salt1: wal.salt1,
            wal_salt2: wal.salt2,
            node_id: 0,
            ext_checksums: Some((pre, post)),
        }
    }

    /// Bookkeeping after an LTX file is durable in the spool.
    fn recorded(&mut self, header: &Header, post: Checksum, path: PathBuf, pages: usize) {
        self.txid = header.max_txid;
        self.post = Some(post);
        self.commit = header.commit;
        self.synced_since_checkpoint = true;
        log::debug!(
            "db={} txid={} pages={pages} commit={} checksum={post}",
            self.opts.path.display(),
            header.max_txid,
            header.commit
        );
        let (txid, now) = (self.txid, SystemTime::now());
        self.shared.registry.update(&self.opts.path, |v| {
            v.txid = txid;
            v.last_sync_at = Some(now);
        });
        self.shared.events.publish(&Event::Tx {
            path: self.opts.path.clone(),
            txid,
            post_apply_checksum: post,
            page_size: self.page_size,
            commit: header.commit,
            timestamp_ms: header.timestamp_ms,
        });
        self.uploads.queue.push_back(PendingUpload {
            min: header.min_txid,
            max: header.max_txid,
            timestamp_ms: header.timestamp_ms,
            path,
        });
        self.pump_uploads();
    }

    fn set_status(&self, status: DbStatus, error: Option<String>) {
        let now = SystemTime::now();
        self.shared.registry.update(&self.opts.path, |v| {
            v.status = status;
            if status == DbStatus::Replicating {
                v.last_sync_at = Some(now);
            }
            v.last_error = error;
        });
    }

    /// When the next upload attempt is due, if one is waiting.
    fn upload_wakeup(&self) -> Option<Instant> {
        if self.uploads.in_flight || self.uploads.queue.is_empty() {
            return None;
        }
        Some(self.uploads.retry_at.unwrap_or_else(Instant::now))
    }

    /// Hands the oldest unconfirmed file to the pool if none is in flight and no backoff runs.
    fn pump_uploads(&mut self) {
        let u = &mut self.uploads;
        if u.in_flight || u.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some(next) = u.queue.front() else { return };
        if !next.path.exists() {
            // Removed behind our back (`litestream reset` while running): the replica would
            // get a gap. Drop what is gone and bridge it with a snapshot on the next pass.
            log::warn!(
                "db={}: spooled {} disappeared before upload; the next sync writes a snapshot",
                self.opts.path.display(),
                next.path.display()
            );
            u.queue.retain(|f| f.path.exists());
            self.needs_snapshot = true;
            return;
        }
        let ctl = self.ctl_tx.clone();
        let max = next.max;
        let job = UploadJob {
            replica: self.replica.clone(),
            level: next.level(),
            min: next.min,
            max,
            timestamp_ms: next.timestamp_ms,
            path: next.path.clone(),
            on_done: Box::new(move |result| {
                let _ = ctl.send(DbCommand::Uploaded {
                    max,
                    result: result.map_err(|e| format!("{e:#}")),
                });
            }),
        };
        match self.shared.uploads.try_submit(job) {
            Ok(()) => {
                u.in_flight = true;
                u.retry_at = None;
            }
            // The pool is saturated: try again shortly.
            Err(_) => u.retry_at = Some(Instant::now() + Duration::from_millis(50)),
        }
    }

    fn on_uploaded(&mut self, max: TxId, result: Result<(), String>) {
        self.uploads.in_flight = false;
        let url = self.replica.url().to_string();
        let path = self.opts.path.clone();
        match result {
            Ok(()) => {
                if self.uploads.queue.front().is_some_and(|f| f.max == max) {
                    self.uploads.queue.pop_front();
                }
                if self.uploads.failures > 0 {
                    log::info!(
                        "db={} replica={url}: uploads resumed at txid {max}",
                        path.display()
                    );
                }
                self.uploads.failures = 0;
                self.uploads.retry_at = None;
                self.uploads.replicated = self.uploads.replicated.max(max);
                let replicated = self.uploads.replicated;
                self.shared.registry.update(&path, |v| {
                    v.replicated_txid = replicated;
                    v.replica_error = None;
                });
                self.shared.events.publish(&Event::Replicated {
                    path: path.clone(),
                    txid: replicated,
                });
                if let Err(e) = self.spool().prune(replicated) {
                    log::warn!("db={}: prune spool: {e}", path.display());
                }
                let status_txid = self.txid;
                let waiters = std::mem::take(&mut self.waiters);
                for w in waiters {
                    if replicated >= w.txid {
                        let status = if w.changed {
                            SyncStatus::Synced
                        } else {
                            SyncStatus::NoChange
                        };
                        let _ = w.reply.send(Ok(SyncReply {
                            status,
                            txid: status_txid,
                            replicated_txid: replicated,
                        }));
                    } else {
                        self.waiters.push(w);
                    }
                }
            }
            Err(e) => {
                self.uploads.failures += 1;
                let delay = backoff(self.uploads.failures);
                self.uploads.retry_at = Some(Instant::now() + delay);
                log::warn!(
                    "db={} replica={url} txid={max}: upload failed (attempt {}), retrying in {delay:?}: {e}",
                    path.display(),
                    self.uploads.failures
                );
                self.shared
                    .registry
                    .update(&path, |v| v.replica_error = Some(e));
            }
        }
        self.pump_uploads();
    }

    /// Answers a sync request after its pass: at once, or when the replica catches up.
    fn answer_sync(&mut self, changed: bool, wait: bool, reply: Sender<Result<SyncReply, String>>) {
        let replicated = self.uploads.replicated;
        let reply_now = |status| SyncReply {
            status,
            txid: self.txid,
            replicated_txid: replicated,
        };
        if !wait {
            let status = if changed {
                SyncStatus::SyncedLocal
            } else {
                SyncStatus::NoChange
            };
            let _ = reply.send(Ok(reply_now(status)));
        } else if replicated >= self.txid {
            let status = if changed {
                SyncStatus::Synced
            } else {
                SyncStatus::NoChange
            };
            let _ = reply.send(Ok(reply_now(status)));
        } else {
            self.waiters.push(Waiter {
                txid: self.txid,
                changed: true,
                reply,
            });
        }
    }
}

/// The current WAL generation as a pass reads it: the file, its header, and the end of what
/// SQLite has published as committed (from the WAL index).
#[derive(Clone, Copy)]
struct Log<'a> {
    file: &'a File,
    header: WalHeader,
    limit: u64,
}

/// A WAL header standing in when the WAL has no generation (salts are zeroed by the caller).
const EMPTY_WAL: WalHeader = WalHeader {
    big_endian_checksum: false,
    page_size: 0,
    checkpoint_seq: 0,
    salt1: 0,
    salt2: 0,
    checksum: (0, 0),
};

/// Re-reads a frame's page and proves it unchanged since the scan.
fn read_wal_page(
    wal: &File,
    header: &WalHeader,
    frame: &Frame,
    page: &mut [u8],
    wal_display: &str,
) -> Result<()> {
    let same = wal::read_frame_page(wal, header, frame, page)
        .with_context(|| format!("read frame at offset {} of {wal_display}", frame.offset))?;
    if !same {
        bail!(
            "{wal_display}: frame at offset {} changed while it was being read (WAL overwritten)",
            frame.offset
        );
    }
    Ok(())
}

/// Reads and fully verifies a local LTX file, returning its header.
fn read_verified_header(path: &Path) -> Result<Header> {
    let file = File::open(path)?;
    let mut dec = ltx::Decoder::new(io::BufReader::new(file))?;
    let header = dec.header().clone();
    let mut page = vec![0u8; header.page_size as usize];
    while dec.next_page(&mut page)?.is_some() {}
    dec.finish()?;
    Ok(header)
}

/// The highest TXID in a replica at any level, and the database checksum after it when the
/// file carries our extension.
fn replica_position(client: &dyn ReplicaClient) -> Result<ReplicaPosition> {
    let mut best: Option<replica::LtxFileInfo> = None;
    for level in replica::all_levels() {
        for f in client.ltx_files(level)? {
            if best.as_ref().is_none_or(|b| f.max > b.max) {
                best = Some(f);
            }
        }
    }
    let Some(best) = best else {
        return Ok(ReplicaPosition {
            txid: TxId(0),
            post: None,
            commit: 0,
        });
    };
    let reader = client.open_ltx(best.level, best.min, best.max)?;
    let header = ltx::read_header(reader)?;
    Ok(ReplicaPosition {
        txid: best.max,
        post: header.ext_checksums.map(|(_, post)| post),
        commit: header.commit,
    })
}

/// The newest state a replica holds.
struct ReplicaPosition {
    txid: TxId,
    /// The database checksum after it, when the file carries our extension.
    post: Option<Checksum>,
    /// The database size in pages after it.
    commit: u32,
}

/// Capped exponential backoff with jitter: 1s, 2s, 4s ... 60s, each ±20%.
fn backoff(failures: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = Duration::from_secs(1) * 2u32.saturating_pow(failures.saturating_sub(1).min(6));
    let base = base.min(Duration::from_secs(60));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(failures);
    let jitter = (h.finish() % 400) as f64 / 1000.0 - 0.2;
    base.mul_f64(1.0 + jitter)
}

/// Spooled files (for `litestream ltx` and reset), exposed for the CLI.
pub fn spooled_files(meta_dir: &Path) -> io::Result<Vec<SpoolFile>> {
    Spool::open(meta_dir)?.files()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b1 = backoff(1);
        assert!(
            b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200),
            "{b1:?}"
        );
        let b3 = backoff(3);
        assert!(
            b3 >= Duration::from_millis(3200) && b3 <= Duration::from_millis(4800),
            "{b3:?}"
        );
        let b20 = backoff(20);
        assert!(b20 <= Duration::from_secs(72), "{b20:?}");
    }
}
