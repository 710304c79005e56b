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

mod saved_pages;
mod sync;
mod upload;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use self::sync::{SyncState, WalPos};
use self::upload::Uploads;
use crate::events::EventHub;
use crate::ltx::TxId;
use crate::registry::{DbStatus, Registry};
use crate::replica::uploader::UploadQueue;
use crate::replica::ReplicaClient;
use crate::spool::{Spool, SpoolFile};
use crate::sqlite::conn::{CheckpointMode, ReadLocks};
use crate::sqlite::wal::WAL_HEADER_SIZE;
use crate::sqlite::{self as sq};

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
                saved_table: None,
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

/// Spooled files (for `litestream ltx` and reset), exposed for the CLI.
pub fn spooled_files(meta_dir: &Path) -> io::Result<Vec<SpoolFile>> {
    Spool::open(meta_dir)?.files()
}
