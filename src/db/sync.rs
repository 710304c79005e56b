//! What a database's thread knows between passes ([`SyncState`]): its position in the WAL and
//! in TXIDs, the page checksums, the checkpoint and upload state; and how a written LTX file
//! is recorded. The phases that change it live beside it: `recovery` (the start), `wal_pass`
//! (the WAL read under a read lock) and `full_scan` (the whole database).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use crossbeam_channel::Sender;

use crate::events::Event;
use crate::ltx::{self, Checksum, Header, PageChecksums, TxId};
use crate::owner::OwnerLock;
use crate::registry::DbStatus;
use crate::replica::ReplicaClient;
use crate::spool::Spool;
use crate::sqlite::wal::{WalChecksum, WalHeader};
use crate::timefmt;

use super::upload::{PendingUpload, Uploads, Waiter};
use super::wal_pass::Scan;
use super::{DbCommand, DbOptions, Shared};

/// Where we are in the WAL: the end of the last committed frame we turned into LTX.
#[derive(Clone, Copy, Debug)]
pub(super) enum WalPos {
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
pub(super) struct ResumePoint {
    pub(super) salts: (u32, u32),
    pub(super) offset: u64,
}

/// Which pages a full scan writes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Include {
    /// Every page, written as a snapshot (min TXID 1) even when files came before it.
    Snapshot,
    /// Every page (a snapshot, or a state we cannot relate to the last file).
    All,
    /// Pages whose checksum differs from the known state.
    Changed,
    /// Pages last written by WAL frames at or after this offset (resuming the same generation).
    FramesFrom(u64),
}

/// Everything a pass reads and updates, apart from the SQLite connections (kept separate so a
/// checkpoint can borrow the connections while a tail read updates this). In named parts:
/// where the replicated state stands ([`Position`]), where the reader is in the WAL
/// ([`WalCursor`]), the checkpoint bookkeeping ([`CheckpointState`]), and the uploads with
/// the syncs waiting on them.
pub(super) struct SyncState {
    pub(super) opts: DbOptions,
    pub(super) wal_path: PathBuf,
    pub(super) replica: Arc<dyn ReplicaClient>,
    pub(super) shared: Shared,
    pub(super) ctl_tx: Sender<DbCommand>,
    pub(super) spool: Option<Spool>,
    /// This daemon's claim on the database (see [`crate::owner`]), taken before the first
    /// connection opens and held until the thread ends.
    pub(super) owner: Option<OwnerLock>,
    /// The database file, opened once and kept open while SQLite has it open: closing any
    /// descriptor of it would release SQLite's POSIX locks (and let another process delete
    /// the WAL under us). Read with pread for snapshots.
    pub(super) db_file: Option<File>,
    pub(super) position: Position,
    pub(super) wal: WalCursor,
    pub(super) checkpoint: CheckpointState,
    pub(super) uploads: Uploads,
    /// Waited syncs, answered once the replica confirms their TXID.
    pub(super) waiters: Vec<Waiter>,
    /// Set once the local spool and the replica position have been reconciled.
    pub(super) initialized: bool,
    /// The replica misses files the spool no longer has: the next pass writes a snapshot
    /// (min TXID 1) that restores can start from, uploaded to level 9.
    pub(super) needs_snapshot: bool,
}

/// The newest state written to the spool: its TXID and the database it describes.
#[derive(Default)]
pub(super) struct Position {
    /// The database's page size (0 until it is opened).
    pub(super) page_size: u32,
    pub(super) txid: TxId,
    /// Database checksum after `txid`; `None` when the replica's last file carried none.
    pub(super) post: Option<Checksum>,
    /// The database size in pages after `txid`.
    pub(super) commit: u32,
    /// Checksum of every page at `txid`; `None` until the first full scan.
    pub(super) table: Option<PageChecksums>,
    /// Page checksums saved at the last clean shutdown, for the state after `txid`: lets the
    /// first pass after a restart write only the changed pages when the WAL moved on.
    pub(super) saved_table: Option<PageChecksums>,
}

/// Where the reader is in the WAL, and what it may assume about it.
#[derive(Default)]
pub(super) struct WalCursor {
    /// The WAL, kept open between passes for the reads between them ([`SyncState::wal_file`]).
    pub(super) wal_file: Option<File>,
    /// The WAL index (`-shm`), kept open for the same reason as the database file.
    pub(super) shm_file: Option<File>,
    pub(super) pos: Option<WalPos>,
    /// Whether a read lock has been held without a gap since the last successful read, which
    /// proves that a new WAL generation cannot hide frames we did not read.
    pub(super) continuous: bool,
    /// Where a restart resumes reading, from the newest spooled file's header.
    pub(super) resume: Option<ResumePoint>,
    /// Frames read ahead of the position between checkpoints; dropped whenever the position
    /// moves (it would no longer start there).
    pub(super) scan: Option<Scan>,
    /// A broken checksum chain met in a WAL generation (its salts) and the message: the
    /// generation was replicated through SQLite's index instead ([`SyncState::chain_break`]).
    pub(super) chain_break: Option<([u8; 8], String)>,
}

/// When and how the last checkpoint went.
pub(super) struct CheckpointState {
    /// When the last checkpoint ran (or the thread started).
    pub(super) last: Instant,
    /// Something was synced since the last checkpoint (time-based checkpoints wait for it).
    pub(super) synced_since: bool,
    /// The last checkpoint could not backfill everything (application readers).
    pub(super) incomplete: bool,
    /// After a checkpoint that could not finish: the generation (salts) and the frame count
    /// below which the next size-triggered attempt waits, since each attempt makes the
    /// application's writers wait for our write lock.
    pub(super) retry: Option<([u8; 8], u64)>,
    /// The WAL's frame count when its writeback was last started.
    pub(super) writeback_at: Option<u64>,
}

impl CheckpointState {
    /// No checkpoint yet; the interval counts from now.
    pub(super) fn new() -> CheckpointState {
        CheckpointState {
            last: Instant::now(),
            synced_since: false,
            incomplete: false,
            retry: None,
            writeback_at: None,
        }
    }
}

impl SyncState {
    pub(super) fn spool(&self) -> &Spool {
        self.spool.as_ref().expect("spool opened before use")
    }

    /// The TXID of the next file; an error past the largest one (a replica whose newest
    /// file name says so cannot be continued).
    pub(super) fn next_txid(&self) -> Result<TxId> {
        self.position.txid.next().with_context(|| {
            format!(
                "{}: txid {} is the largest possible; the replica cannot be continued (run `litestream reset` and use a new replica)",
                self.opts.path.display(),
                self.position.txid
            )
        })
    }

    /// The header of a file this daemon writes: NoChecksum (so Litestream restores it) with
    /// the database checksums in the reserved bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ltx_header(
        &self,
        min: TxId,
        max: TxId,
        commit: u32,
        wal_offset: u64,
        wal_size: u64,
        wal_salts: (u32, u32),
        post: Checksum,
    ) -> Header {
        let pre = if min == TxId::new(1) {
            Checksum(0)
        } else {
            self.position.post.unwrap_or(Checksum(0))
        };
        Header {
            flags: ltx::FLAG_NO_CHECKSUM,
            page_size: self.position.page_size,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: timefmt::now_ms(),
            pre_apply_checksum: Checksum(0),
            wal_offset: wal_offset as i64,
            wal_size: wal_size as i64,
            wal_salt1: wal_salts.0,
            wal_salt2: wal_salts.1,
            node_id: 0,
            ext_checksums: Some((pre, post)),
        }
    }

    /// Bookkeeping after an LTX file is durable in the spool.
    pub(super) fn recorded(
        &mut self,
        header: &Header,
        post: Checksum,
        path: PathBuf,
        pages: usize,
    ) {
        self.position.txid = header.max_txid;
        self.position.post = Some(post);
        self.position.commit = header.commit;
        self.checkpoint.synced_since = true;
        crate::metrics::global().wal_bytes(
            &self.opts.path,
            pages as u64 * u64::from(self.position.page_size),
        );
        log::debug!(
            db:% = self.opts.path.display(),
            txid:% = header.max_txid,
            pages,
            commit = header.commit,
            checksum:% = post;
            "sync"
        );
        let (txid, now) = (self.position.txid, SystemTime::now());
        self.shared.registry.update(&self.opts.path, |v| {
            v.txid = txid;
            v.last_sync_at = Some(now);
        });
        self.shared.events.publish(&Event::Tx {
            path: self.opts.path.clone(),
            txid,
            post_apply_checksum: post,
            page_size: self.position.page_size,
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

    pub(super) fn set_status(&self, status: DbStatus, error: Option<String>) {
        let now = SystemTime::now();
        self.shared.registry.update(&self.opts.path, |v| {
            v.status = status;
            if status == DbStatus::Replicating {
                v.last_sync_at = Some(now);
            }
            v.last_error = error;
        });
    }
}
