//! One database being replicated: its thread, its sync loop and its position.
//!
//! Each pass (every `monitor-interval`, or on `/sync`) takes a new read lock before releasing
//! the old one, reads the WAL from the last position to the last commit frame, and writes the
//! pages those transactions changed as one L0 LTX file into the spool, which the uploader pool
//! then copies to the replica. The running database checksum (8 bytes per page) goes into
//! every file, so a restore can prove it rebuilt exactly this database.
//!
//! Between passes the thread sleeps until its WAL changes (the inotify watcher wakes it) or
//! `monitor-interval` passes, and looks at the WAL index first: a pass runs only when there is
//! something new, and at once, without waiting for the interval, when the log has grown to
//! three quarters of `min-checkpoint-page-count` frames. Then it reads them and checkpoints,
//! so the application's writes restart the log at about the size they would without us (a
//! write burst would otherwise grow it by every frame until the next interval).
//!
//! When the position cannot be trusted (first start, restart of the daemon with a WAL of
//! another generation, an error between reading and recording frames) the pass reads the
//! whole database through its read lock instead and writes what differs from the known state:
//! a snapshot when nothing is known, only the changed pages otherwise.
//!
//! This file holds the thread: its commands, its loop, a pass with its bookkeeping, the
//! checkpoints and the shutdown. Beside it: `pace.rs` when to look at the WAL and when a pass
//! is due (bursts, the pressure threshold, idle databases); `sync.rs` the state in named parts;
//! `recovery.rs` the start and the gap decision; `wal_pass.rs` the WAL read; `full_scan.rs` the
//! whole-database read; `saved_pages.rs` the page checksums kept across restarts; `upload.rs`
//! the upload queue and the waited syncs.

mod full_scan;
mod pace;
mod recovery;
mod saved_pages;
mod sync;
mod upload;
mod wal_pass;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use self::sync::{CheckpointState, Position, SyncState, WalCursor, WalPos};
use self::upload::Uploads;
use self::wal_pass::WalProbe;
use crate::events::EventHub;
use crate::ltx::TxId;
use crate::registry::{Activity, DbStatus, Registry};
use crate::replica::uploader::UploadQueue;
use crate::replica::ReplicaClient;
use crate::sqlite::conn::{CheckpointMode, Frozen, ReadLocks};
use crate::sqlite::wal::WAL_HEADER_SIZE;
use crate::sqlite::{self as sq};
use crate::watch::{Subscription, Watcher};

/// Settings of one database (from `dbs:` in the config, or `/register`).
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// The database file as configured or registered.
    pub path: PathBuf,
    /// Where the spool lives: `.<name>-litestream` beside the database by default.
    pub meta_dir: PathBuf,
    pub monitor_interval: Duration,
    pub checkpoint_interval: Duration,
    pub busy_timeout: Duration,
    /// WAL frames at which a PASSIVE checkpoint is due.
    pub min_checkpoint_page_count: u64,
    /// WAL frames at which a TRUNCATE checkpoint is due (`u64::MAX`: never).
    pub truncate_page_n: u64,
}

impl DbOptions {
    /// WAL frames at which a pass and a checkpoint run at once, without waiting for the next
    /// `monitor-interval`: three quarters of `min-checkpoint-page-count`, so that ours lands
    /// before the application's own autocheckpoint (SQLite's default is 1000 pages, as ours),
    /// which our read lock would keep from restarting the log.
    pub fn pressure_frames(&self) -> u64 {
        (self.min_checkpoint_page_count.saturating_mul(3) / 4).max(1)
    }
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
    /// The WAL or the database file changed (sent by the file watcher, at most one pending).
    WalChanged,
    /// An upload finished (sent by the uploader pool).
    Uploaded {
        max: TxId,
        result: Result<(), crate::replica::ReplicaError>,
    },
    /// Stop replicating (release the database) but stay registered; answers whether it was running.
    Pause { reply: Sender<bool> },
    /// Resume after `Pause`; answers whether it was stopped.
    Resume { reply: Sender<bool> },
    /// Become the primary (a follower's thread only; see [`crate::follower`]): take the
    /// replica's lease, waiting until `deadline`, apply the rest, answer, and exit.
    Promote {
        deadline: Instant,
        reply: Sender<Result<crate::follower::Promotion, crate::follower::RoleError>>,
    },
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
    /// The daemon's inotify watcher; `None` where inotify is unavailable (the threads poll).
    pub watcher: Option<Arc<Watcher>>,
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

/// How many commands a database thread's channel holds.
pub const COMMAND_QUEUE: usize = 32;

/// Saves the page checksums of the state after `txid` where a primary thread starting on
/// `meta_dir` with an empty spool finds them when the replica's newest file is that state: a
/// promoted follower hands over what it knows of the database, so the first pass writes only
/// the pages that differ (SQLite's page-1 counter) instead of the whole database.
pub fn hand_over_page_checksums(
    meta_dir: &Path,
    page_size: u32,
    txid: TxId,
    table: &crate::ltx::PageChecksums,
) -> io::Result<()> {
    crate::durable::create_dir_all(meta_dir)?;
    saved_pages::save(meta_dir, page_size, txid, table)
}

/// Removes the page checksums saved in `meta_dir`, if any (`litestream reset`).
pub fn discard_page_checksums(meta_dir: &Path) {
    saved_pages::discard(meta_dir);
}

/// A new command channel for a database thread, bounded by construction: IPC requests give
/// up after their own timeout when it is full (`send_timeout`), the uploader's
/// acknowledgement waits for room (the thread drains its channel continuously and never waits
/// on the uploader, and each database has one upload in flight), and the watcher's wakeup is
/// a `try_send` (a full channel wakes the thread anyway).
pub fn channel() -> (Sender<DbCommand>, Receiver<DbCommand>) {
    bounded(COMMAND_QUEUE)
}

struct DbThread {
    /// Declared before `st` so the connections close before the kept database file handle.
    locks: Option<ReadLocks>,
    st: SyncState,
    ctl_rx: Receiver<DbCommand>,
    paused: bool,
    next_pass: Instant,
    last_error: Option<String>,
    /// Wakes this thread on WAL changes while it lives.
    subscription: Option<Subscription>,
    /// When to look at the WAL again while it grows (`None`: the watcher is armed instead).
    look_at: Option<Instant>,
    /// The watcher woke this thread (and disarmed itself) since the last look.
    woken: bool,
    /// The log grew at a burst's rate at the last look ([`pace::BURST_FRAMES_PER_SEC`]).
    burst: bool,
    /// How fast the log grew (frames per second) between the last two looks that saw it grow.
    rate: Option<f64>,
    /// When a look last found the log changed.
    last_change: Instant,
    /// The last look at the WAL index, to tell how fast the log grows.
    last_probe: Option<(Instant, WalProbe)>,
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
                owner: None,
                db_file: None,
                position: Position::default(),
                wal: WalCursor::default(),
                checkpoint: CheckpointState::new(),
                uploads: Uploads {
                    queue: VecDeque::new(),
                    in_flight: false,
                    retry_at: None,
                    failures: 0,
                    replicated: TxId::ZERO,
                    remote_known: false,
                },
                waiters: vec![],
                initialized: false,
                needs_snapshot: false,
            },
            ctl_rx,
            paused: false,
            next_pass: Instant::now(),
            last_error: None,
            subscription: None,
            look_at: None,
            woken: false,
            burst: false,
            rate: None,
            last_change: Instant::now(),
            last_probe: None,
        }
    }

    /// Asks the watcher to wake this thread when the WAL or the database file changes.
    fn subscribe(&mut self) {
        let Some(watcher) = self.st.shared.watcher.clone() else {
            return;
        };
        let path = &self.st.opts.path;
        // The directory SQLite puts the WAL in: that of the file itself, symlinks resolved.
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
            return;
        };
        let mut wal = name.to_os_string();
        wal.push("-wal");
        // The watcher disarms the subscription when it calls this, so at most one
        // `WalChanged` is queued until the thread re-arms it.
        let ctl = self.st.ctl_tx.clone();
        let wake = Arc::new(move || {
            let _ = ctl.try_send(DbCommand::WalChanged);
        });
        match watcher.subscribe(dir, vec![name.to_os_string(), wal.clone()], vec![wal], wake) {
            Ok(s) => self.subscription = Some(s),
            Err(e) => log::warn!(
                db:% = path.display(),
                dir:% = dir.display(),
                error:% = e,
                interval:? = self.st.opts.monitor_interval;
                "cannot watch the database directory; polling"
            ),
        }
    }

    fn path(&self) -> &Path {
        &self.st.opts.path
    }

    fn run(&mut self) {
        log::info!(
            db:% = self.path().display(),
            replica:% = self.st.replica.url();
            "replicating to"
        );
        self.subscribe();
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
            if let Some(t) = self.look_at {
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
            if !self.paused {
                self.pass_if_needed();
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
            DbCommand::WalChanged => self.woken = true,
            DbCommand::Uploaded { max, result } => self.st.on_uploaded(max, result),
            DbCommand::Pause { reply } => {
                let was_running = !self.paused;
                if was_running {
                    self.paused = true;
                    self.locks = None;
                    self.st.wal.continuous = false;
                    self.st.set_status(DbStatus::Stopped, None);
                    log::info!(db:% = self.path().display(); "replication stopped");
                }
                let _ = reply.send(was_running);
            }
            DbCommand::Resume { reply } => {
                let was_stopped = self.paused;
                if was_stopped {
                    self.paused = false;
                    self.next_pass = Instant::now();
                    // A start is an operator saying "try now": a replica that failed (or a
                    // lease that was refused) is tried again at once, not after its backoff.
                    if self.st.uploads.retry_at.is_some() {
                        self.st.uploads.retry_at = Some(Instant::now());
                        self.st.uploads.failures = 0;
                    }
                    self.st.set_status(DbStatus::Open, None);
                    log::info!(db:% = self.path().display(); "replication started");
                }
                let _ = reply.send(was_stopped);
            }
            DbCommand::Promote { reply, .. } => {
                let _ = reply.send(Err(crate::follower::RoleError::Conflict(format!(
                    "{} is a primary here, not a follower",
                    self.path().display()
                ))));
            }
            DbCommand::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    /// Records in the registry that an operation starts (`/debug/sync-status`).
    fn activity_begin(&self, operation: &'static str, phase: &'static str) {
        let st = &self.st;
        let wal_size = std::fs::metadata(&st.wal_path).map_or(0, |m| m.len());
        let offset = wal_offset(st.wal.pos);
        let snapshotting = st.needs_snapshot || st.position.table.is_none();
        st.shared.registry.update(&st.opts.path, |v| {
            v.activity = Activity::begin(operation, phase, wal_size, offset);
            v.activity.snapshotting = snapshotting;
        });
    }

    /// Records that the operation begun by [`DbThread::activity_begin`] ended.
    fn activity_end(&self, phase: &'static str, error: Option<String>) {
        let txid = self.st.position.txid;
        self.st
            .shared
            .registry
            .update(&self.st.opts.path, |v| v.activity.end(phase, txid, error));
    }

    /// One sync pass with its bookkeeping: registry status, error logging, checkpoints.
    fn pass(&mut self) -> Result<bool> {
        self.next_pass = Instant::now() + self.st.opts.monitor_interval;
        let started = Instant::now();
        self.activity_begin("sync", "verify_and_sync");
        let result = self.try_pass();
        self.activity_end(
            "sync_complete",
            result.as_ref().err().map(|e| format!("{e:#}")),
        );
        // A database that does not exist yet is waited for, not a failed sync.
        let waiting = result
            .as_ref()
            .is_err_and(|e| e.is::<recovery::DatabaseMissing>());
        if !waiting {
            let failed = result.as_ref().err();
            crate::metrics::global().sync_done(
                &self.st.opts.path,
                started.elapsed(),
                failed.is_some(),
                failed.is_some_and(crate::metrics::is_disk_full),
            );
        }
        match &result {
            Ok(_) => {
                if self.last_error.take().is_some() {
                    log::info!(db:% = self.path().display(); "sync recovered");
                }
                // Replicating, but a damaged WAL frame is still in this generation: say so.
                let warning = self.st.chain_break().map(str::to_string);
                self.st.set_status(DbStatus::Replicating, warning);
            }
            Err(e) if e.is::<recovery::DatabaseMissing>() => {
                // Not a failure: the application has not created it yet. One line, and the
                // status stays "open" until the file appears.
                let msg = format!("{e:#}");
                if self.last_error.as_deref() != Some(&msg) {
                    log::info!(
                        db:% = self.path().display();
                        "waiting for the database file to appear"
                    );
                }
                self.st.set_status(DbStatus::Open, Some(msg.clone()));
                self.last_error = Some(msg);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if self.last_error.as_deref() != Some(&msg) {
                    log::error!(db:% = self.path().display(), error = msg.as_str(); "sync error");
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
            let locked = locks.locked().expect("a lock is held");
            self.st.sync_locked(&|| page_count(locked))
        };
        locks.release_previous();
        self.st.wal.continuous = result.is_ok();
        let changed = result?;
        if let Err(e) = self.maybe_checkpoint() {
            log::warn!(db:% = self.path().display(), error = format!("{e:#}"); "checkpoint failed");
        }
        Ok(changed)
    }

    /// Runs our checkpoint policy after a successful pass.
    fn maybe_checkpoint(&mut self) -> Result<()> {
        let Some(WalPos::At { header, offset, .. }) = self.st.wal.pos else {
            return Ok(());
        };
        // Only after new transactions: a checkpoint of an unchanged log (idle database, or one
        // a reader kept us from finishing) would take the write lock every pass for nothing;
        // an unfinished one is retried with the next write or after `checkpoint-interval`.
        let frames = offset.saturating_sub(WAL_HEADER_SIZE) / header.frame_size();
        let opts = &self.st.opts;
        let since = self.st.checkpoint.last.elapsed();
        // `checkpoint-interval: 0` turns the time-based checkpoint off.
        let interval_due = !opts.checkpoint_interval.is_zero() && since >= opts.checkpoint_interval;
        let due =
            self.st.checkpoint.synced_since || (self.st.checkpoint.incomplete && interval_due);
        if !due {
            return Ok(());
        }
        let pressure = opts.pressure_frames();
        let mode = if frames >= opts.truncate_page_n {
            CheckpointMode::Truncate
        } else if frames >= pressure || interval_due {
            CheckpointMode::Passive
        } else {
            return Ok(());
        };
        let salts = header.salt_bytes();
        if mode == CheckpointMode::Passive
            && !interval_due
            && self.checkpoint_deferred(salts, frames)
        {
            return Ok(());
        }
        self.sync_wal();
        self.checkpoint(mode, salts, frames).map(|_| ())
    }

    /// Whether a size-triggered checkpoint waits: the last one could not finish in this
    /// generation and the log has not grown by another threshold since.
    fn checkpoint_deferred(&self, salts: [u8; 8], frames: u64) -> bool {
        self.st
            .checkpoint
            .retry
            .is_some_and(|(s, at)| s == salts && frames < at)
    }

    /// The log reached the pressure threshold: checkpoint at once. In a burst, reading what is
    /// new under the write lock (into a spool file that is fsynced after it), without a pass
    /// first, which would let the log grow by whatever the application writes meanwhile;
    /// otherwise with a pass first. `Ok(false)` when this does not apply.
    fn pressure_checkpoint(&mut self, probe: WalProbe) -> Result<bool> {
        let st = &self.st;
        let settled = self.locks.is_some()
            && st.position.table.is_some()
            && st.wal.continuous
            && st.wal.pos.is_some()
            && !st.needs_snapshot;
        let pressure = self.st.opts.pressure_frames();
        if !settled || probe.frames < pressure || probe.frames >= self.st.opts.truncate_page_n {
            return Ok(false);
        }
        // Nothing unread: the last checkpoint backfilled all of it and the application's
        // next write restarts the log.
        if probe.unread == 0 || self.checkpoint_deferred(probe.salts, probe.frames) {
            return Ok(false);
        }
        if !self.burst {
            // A steady writer: a pass now (the next one comes a full interval later) and the
            // checkpoint after it, whose tail is then short, rather than one more file for
            // the tail alone.
            return self.pass().map(|_| true);
        }
        self.sync_wal();
        self.checkpoint(CheckpointMode::Passive, probe.salts, probe.frames)
    }

    /// The checkpoint under our write lock ([`ReadLocks::checkpoint_frozen`]), then the
    /// transactions read under it written to the spool, and the bookkeeping. Returns whether
    /// it ran (not declined, nor kept from the write lock).
    fn checkpoint(&mut self, mode: CheckpointMode, salts: [u8; 8], frames: u64) -> Result<bool> {
        let locks = self.locks.as_mut().expect("open after a pass");
        let st = &mut self.st;
        let started = Instant::now();
        let wal_size = std::fs::metadata(&st.wal_path).map_or(0, |m| m.len());
        let offset = wal_offset(st.wal.pos);
        st.shared.registry.update(&st.opts.path, |v| {
            v.activity = Activity::begin("checkpoint", "checkpoint_exec", wal_size, offset);
            v.activity.checkpoint_mode = Some(mode.name());
        });
        let result = locks.checkpoint_frozen(mode, || st.collect_tail());
        let (error, txid) = (
            result.as_ref().err().map(|e| format!("{e:#}")),
            st.position.txid,
        );
        st.shared.registry.update(&st.opts.path, |v| {
            v.activity.end("checkpoint_exec", txid, error)
        });
        if matches!(result, Ok(Frozen::Done(..)) | Err(_)) {
            crate::metrics::global().checkpoint_done(
                &st.opts.path,
                mode.name(),
                started.elapsed(),
                result.is_err(),
            );
        }
        let display = st.opts.path.display().to_string();
        let retry_at = frames.saturating_add(st.opts.pressure_frames());
        match result {
            Ok(Frozen::Done(r, tail, locked)) => {
                // The write lock is released: now the tail's fsyncs cost the application nothing.
                if let Err(e) = st.write_tail(tail) {
                    log::warn!(
                        db = display.as_str(), error = format!("{e:#}");
                        "cannot write the transactions read during the checkpoint; the next pass compares the whole database"
                    );
                }
                st.checkpoint.last = Instant::now();
                st.checkpoint.synced_since = false;
                st.checkpoint.incomplete = r.busy || r.checkpointed_frames < r.log_frames;
                // Held back by an application reader. One that was only between its read and
                // its write (it stops a few frames short) is gone by the next attempt; one
                // that holds an old snapshot would make every attempt a wait for the writers.
                let held_back = r.busy || r.checkpointed_frames < r.log_frames / 2;
                st.checkpoint.retry = held_back.then_some((salts, retry_at));
                log::debug!(
                    db = display.as_str(),
                    mode:? = mode,
                    frames,
                    log = r.log_frames,
                    backfilled = r.checkpointed_frames,
                    busy = r.busy,
                    locked:? = locked,
                    elapsed:? = started.elapsed();
                    "checkpoint"
                );
                Ok(true)
            }
            Ok(Frozen::Busy) => {
                st.checkpoint.retry = Some((salts, retry_at));
                log::debug!(
                    db = display.as_str(), held:? = started.elapsed();
                    "checkpoint skipped: the application held the write lock"
                );
                Ok(false)
            }
            Ok(Frozen::Declined) => {
                log::debug!(db = display.as_str(); "checkpoint skipped: the position is being rebuilt");
                Ok(false)
            }
            Err(e) => {
                st.wal.continuous = locks.is_held() && st.wal.continuous;
                st.checkpoint.retry = Some((salts, retry_at));
                Err(e)
            }
        }
    }

    /// Fsyncs the WAL before a checkpoint takes the write lock. SQLite leaves the WAL's fsync
    /// to checkpoints (with `synchronous=NORMAL`), and the one under our write lock then has
    /// only the frames written since this one: the application's writers wait for less.
    fn sync_wal(&mut self) {
        if let Ok(wal) = self.st.wal_file() {
            let _ = wal.sync_data();
        }
    }

    fn shutdown(&mut self, deadline: Instant) {
        if !self.paused {
            if let Err(e) = self.pass() {
                // `pass` logs an error only when it changes; this one must be seen at exit.
                if self.locks.is_some() {
                    log::warn!(
                        db:% = self.path().display(),
                        error = format!("{e:#}"),
                        detail = "transactions it did not spool are still in the WAL and are replicated at the next start";
                        "shutting down without the final sync"
                    );
                }
            }
        }
        self.st.save_page_checksums();
        // Wait for the replica to confirm what is spooled, bounded by the deadline.
        while !self.st.uploads.queue.is_empty() && Instant::now() < deadline {
            self.st.pump_uploads();
            let wait = deadline.saturating_duration_since(Instant::now());
            let wait = self.st.upload_wakeup().map_or(wait, |t| {
                wait.min(t.saturating_duration_since(Instant::now()))
            });
            match self.ctl_rx.recv_timeout(wait) {
                Ok(DbCommand::Uploaded { max, result }) => self.st.on_uploaded(max, result),
                Ok(DbCommand::WalChanged) => {}
                Ok(DbCommand::Sync { reply, .. }) => {
                    let _ = reply.send(Err("shutting down".into()));
                }
                Ok(DbCommand::Pause { reply }) | Ok(DbCommand::Resume { reply }) => {
                    let _ = reply.send(false);
                }
                Ok(DbCommand::Shutdown { reply, .. }) => {
                    let _ = reply.send(());
                }
                Ok(DbCommand::Promote { reply, .. }) => {
                    let _ = reply.send(Err(crate::follower::RoleError::Conflict(
                        "shutting down".into(),
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if !self.st.uploads.queue.is_empty() {
            log::warn!(
                db:% = self.path().display(),
                files = self.st.uploads.queue.len();
                "shutting down with files not yet replicated; they stay in the spool for the next start"
            );
        }
        for w in self.st.waiters.drain(..) {
            let _ = w.reply.send(Err("shutting down".into()));
        }
        self.locks = None;
    }
}

/// The WAL offset a position stands at (0 without a generation).
fn wal_offset(pos: Option<WalPos>) -> u64 {
    match pos {
        Some(WalPos::At { offset, .. }) => offset,
        _ => 0,
    }
}

/// `PRAGMA page_count` in the held read transaction: the database size at our read mark.
fn page_count(conn: &rusqlite::Connection) -> Result<u32> {
    Ok(conn.query_row("PRAGMA page_count", [], |r| r.get::<_, u32>(0))?)
}
