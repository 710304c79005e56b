//! The sync pass: reading the WAL (or the whole database) under a read lock and writing the
//! result as one LTX file into the spool; where the daemon stands (position, TXID, page
//! checksums) and how it is recovered after a restart.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::Sender;

use crate::durable;
use crate::events::Event;
use crate::ltx::{self, Checksum, Encoder, Header, PageChecksums, TxId};
use crate::owner::OwnerLock;
use crate::registry::DbStatus;
use crate::replica::{self, ReplicaClient};
use crate::spool::Spool;
use crate::sqlite::conn::{self, ReadLocks};
use crate::sqlite::shm::{self, WalIndexHeader};
use crate::sqlite::wal::{self, CommitEnd, Frame, WalChecksum, WalHeader, WAL_HEADER_SIZE};
use crate::sqlite::{self as sq};
use crate::timefmt;

use super::saved_pages;
use super::upload::{PendingUpload, Uploads, Waiter};
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
/// checkpoint can borrow the connections while a tail read updates this).
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
    /// The WAL index (`-shm`), kept open for the same reason as `db_file`.
    pub(super) shm_file: Option<File>,
    /// The WAL, kept open between passes for the reads between them ([`SyncState::wal_file`]).
    pub(super) wal_file: Option<File>,
    pub(super) page_size: u32,
    pub(super) txid: TxId,
    /// Database checksum after `txid`; `None` when the replica's last file carried none.
    pub(super) post: Option<Checksum>,
    pub(super) commit: u32,
    /// Checksum of every page at `txid`; `None` until the first full scan.
    pub(super) table: Option<PageChecksums>,
    pub(super) pos: Option<WalPos>,
    /// Whether a read lock has been held without a gap since the last successful read, which
    /// proves that a new WAL generation cannot hide frames we did not read.
    pub(super) continuous: bool,
    pub(super) resume: Option<ResumePoint>,
    /// Page checksums saved at the last clean shutdown, for the state after `txid`: lets the
    /// first pass after a restart write only the changed pages when the WAL moved on.
    pub(super) saved_table: Option<PageChecksums>,
    pub(super) uploads: Uploads,
    pub(super) waiters: Vec<Waiter>,
    pub(super) last_checkpoint: Instant,
    pub(super) synced_since_checkpoint: bool,
    /// The last checkpoint could not backfill everything (application readers).
    pub(super) checkpoint_incomplete: bool,
    /// After a checkpoint that could not finish: the generation (salts) and the frame count
    /// below which the next size-triggered attempt waits, since each attempt makes the
    /// application's writers wait for our write lock.
    pub(super) checkpoint_retry: Option<([u8; 8], u64)>,
    /// The WAL's frame count when its writeback was last started.
    pub(super) writeback_at: Option<u64>,
    /// Frames read ahead of the position between checkpoints; dropped whenever the position
    /// moves (it would no longer start there).
    pub(super) scan: Option<Scan>,
    /// A broken checksum chain met in a WAL generation (its salts) and the message: the
    /// generation was replicated through SQLite's index instead ([`SyncState::chain_break`]).
    pub(super) chain_break: Option<([u8; 8], String)>,
    /// Set once the local spool and the replica position have been reconciled.
    pub(super) initialized: bool,
    /// The replica misses files the spool no longer has: the next pass writes a snapshot
    /// (min TXID 1) that restores can start from, uploaded to level 9.
    pub(super) needs_snapshot: bool,
}

/// The database file does not exist (yet): the thread waits for it, quietly, as Litestream
/// does, instead of reporting a failure at every pass.
#[derive(Debug)]
pub(super) struct DatabaseMissing(pub PathBuf);

impl std::fmt::Display for DatabaseMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: database file does not exist; waiting for it",
            self.0.display()
        )
    }
}

impl std::error::Error for DatabaseMissing {}

impl SyncState {
    /// Opens the connections after checking the file: it must exist, be a SQLite database,
    /// and be (or be switched to) WAL mode.
    pub(super) fn open_database(&mut self) -> Result<ReadLocks> {
        let path = self.opts.path.clone();
        let display = path.display();
        // No SQLite connection of ours is open here, so replacing the kept handle is safe.
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DatabaseMissing(path.clone()).into())
            }
            Err(e) => return Err(anyhow!(e)).with_context(|| format!("{display}: open")),
        };
        let header = sq::read_db_header_from(&file).with_context(|| format!("{display}"))?;
        // Before any connection: another daemon's would pin the WAL it checkpoints.
        if self.owner.is_none() {
            self.owner = Some(
                OwnerLock::acquire(&self.opts.meta_dir).with_context(|| format!("{display}"))?,
            );
        }
        self.db_file = Some(file);
        self.shm_file = None;
        self.wal_file = None;
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
            // Changed while replication was stopped (journal_mode=delete, page_size, VACUUM):
            // nothing known about the old pages applies; the next file is a snapshot.
            log::info!(
                "db={display}: page size changed from {} to {page_size}; the next file is a snapshot",
                self.page_size
            );
            self.start_over();
        }
        self.page_size = page_size;
        // Our connections have read the database in WAL mode, so the index exists; if not
        // (yet), the first pass opens it.
        let _ = self.open_shm();
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

    /// Saves the page checksums of the current state for the next start (clean shutdown).
    pub(super) fn save_page_checksums(&self) {
        let Some(table) = &self.table else { return };
        if self.post != Some(table.checksum()) || self.spool.is_none() {
            return;
        }
        if let Err(e) = saved_pages::save(&self.opts.meta_dir, self.page_size, self.txid, table) {
            log::warn!(
                "db={}: cannot save page checksums for the next start: {e}",
                self.opts.path.display()
            );
        }
    }

    pub(super) fn spool(&self) -> &Spool {
        self.spool.as_ref().expect("spool opened before use")
    }

    /// Forgets what is known of the database's pages and position: the next pass writes a
    /// snapshot (min TXID 1, uploaded to level 9), which restores start from.
    pub(super) fn start_over(&mut self) {
        self.needs_snapshot = true;
        self.table = None;
        self.pos = None;
        self.resume = None;
        self.saved_table = None;
        self.scan = None;
    }

    /// Reads where the local spool stands (once, at the first pass), then tries to learn where
    /// the replica stands ([`SyncState::reconcile_remote`]). A replica that cannot be listed
    /// now is retried later, with backoff, while passes go on spooling locally: nothing is
    /// decided from a failed listing.
    pub(super) fn initialize(&mut self) -> Result<()> {
        let display = self.opts.path.display().to_string();
        let files = self
            .spool()
            .files()
            .with_context(|| format!("{display}: list spool"))?;
        if let Some(last) = files.last() {
            let header = read_verified_header(&last.path).with_context(|| {
                format!(
                    "{display}: spooled file {} is unreadable; run `litestream reset {display}`",
                    last.path.display()
                )
            })?;
            let local = header.max_txid;
            self.txid = local;
            self.post = header.ext_checksums.map(|(_, post)| post);
            self.saved_table = self.post.and_then(|post| {
                saved_pages::load(&self.opts.meta_dir, self.page_size, local, post)
            });
            self.commit = header.commit;
            if header.wal_offset > 0 {
                self.resume = Some(ResumePoint {
                    salts: (header.wal_salt1, header.wal_salt2),
                    offset: (header.wal_offset + header.wal_size) as u64,
                });
            }
            if header.page_size != self.page_size {
                log::info!(
                    "db={display}: page size changed from {} to {} since the last file; the next file is a snapshot",
                    header.page_size,
                    self.page_size
                );
                self.start_over();
            }
        }
        // Used at most once: a crash from here on must not find it looking current.
        saved_pages::discard(&self.opts.meta_dir);
        self.initialized = true;
        if let Err(e) = self.reconcile_remote() {
            self.uploads.remote_known = false;
            self.uploads.failures += 1;
            let delay = super::upload::backoff(self.uploads.failures);
            self.uploads.retry_at = Some(Instant::now() + delay);
            log::warn!(
                "db={display}: cannot list replica {} ({e:#}); spooling locally and retrying in {delay:?}",
                self.replica.url()
            );
            self.shared.registry.update(&self.opts.path, |v| {
                v.replica_error = Some(format!("{e:#}"))
            });
        }
        let txid = self.txid;
        self.shared
            .registry
            .update(&self.opts.path, |v| v.txid = txid);
        Ok(())
    }

    /// Lists the replica and decides from its newest file: which spooled files to upload, where
    /// to continue when it is ahead of the spool (which `litestream reset` leaves so), and
    /// whether the next file must be a snapshot (it misses files the spool no longer has, or
    /// its page size is not the database's). Until this succeeds nothing is uploaded.
    pub(super) fn reconcile_remote(&mut self) -> Result<()> {
        let display = self.opts.path.display().to_string();
        let remote = replica_position(self.replica.as_ref())?;
        let files = self
            .spool()
            .files()
            .with_context(|| format!("{display}: list spool"))?;
        let local = files.last().map_or(TxId(0), |f| f.max);
        let remote_max = remote.txid;
        self.uploads.queue.clear();
        if remote_max > local {
            // The replica is ahead of this spool (spool deleted by `reset`, or restored
            // elsewhere): continue its TXID sequence. The first pass reads the whole database:
            // nothing is written if it is the state the newest file describes, else every page
            // (which restores whatever came before), or a snapshot when the page size differs.
            log::warn!(
                "db={display}: replica {} is at txid {remote_max}, ahead of the local spool ({local}); continuing from the replica",
                self.replica.url()
            );
            self.spool()
                .clear()
                .with_context(|| format!("{display}: clear spool"))?;
            self.txid = remote_max;
            self.post = remote.post;
            self.commit = remote.commit;
            self.resume = None;
            self.saved_table = None;
            self.table = None;
            self.pos = None;
            if remote.page_size.is_some_and(|p| p != self.page_size) {
                log::info!(
                    "db={display}: the replica's newest file has page size {}, the database {}; the next file is a snapshot",
                    remote.page_size.unwrap_or(0),
                    self.page_size
                );
                self.start_over();
            }
        } else {
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
                Some(first) => remote_max.next().is_none_or(|n| first.min > n),
                None => remote_max < local,
            };
            if gap {
                log::warn!(
                    "db={display}: replica {} is at txid {remote_max} and the spool no longer has the files after it; writing a snapshot to bridge the gap",
                    self.replica.url()
                );
                self.uploads.queue.clear();
                self.start_over();
            }
        }
        self.uploads.replicated = remote_max;
        self.uploads.remote_known = true;
        self.uploads.failures = 0;
        self.uploads.retry_at = None;
        let (txid, replicated) = (self.txid, remote_max);
        self.shared.registry.update(&self.opts.path, |v| {
            v.txid = txid;
            v.replicated_txid = replicated;
            v.replica_error = None;
        });
        Ok(())
    }

    /// The body of a pass, under a freshly taken read lock. Returns whether an LTX file was written.
    pub(super) fn sync_locked(&mut self, page_count: &dyn Fn() -> Result<u32>) -> Result<bool> {
        match self.sync_locked_inner(page_count) {
            Err(e) if e.is::<BrokenChain>() => self.snapshot_as_sqlite_reads(e),
            other => other,
        }
    }

    /// After a [`BrokenChain`]: reads the whole database as SQLite's own readers do (the WAL
    /// index lists each committed frame's page; no checksum chain) and writes it as a
    /// snapshot, then continues from the committed end with the chain value SQLite keeps in the
    /// index. The break stays reported in `/list` for the rest of this WAL generation.
    fn snapshot_as_sqlite_reads(&mut self, why: anyhow::Error) -> Result<bool> {
        let display = self.opts.path.display().to_string();
        log::error!(
            "db={display}: {why:#}; replicating a snapshot of the database as SQLite reads it instead"
        );
        let wal = File::open(&self.wal_path)
            .with_context(|| format!("open {}", self.wal_path.display()))?;
        let header = WalHeader::read(&wal)
            .with_context(|| format!("read {}", self.wal_path.display()))?
            .with_context(|| format!("{}: no WAL header", self.wal_path.display()))?;
        let index = self.wal_index()?;
        if index.salt != header.salt_bytes() {
            // Restarted meanwhile: the next pass reads the new generation.
            return Err(why);
        }
        let shm = self.open_shm()?;
        let pages = shm::frame_pages(shm, index.max_frame)
            .with_context(|| format!("read the WAL index of {display}"))?;
        let mut overlay = BTreeMap::new();
        for (i, &pgno) in pages.iter().enumerate() {
            // A later frame of the same page replaces an earlier one, as in SQLite's lookup.
            overlay.insert(pgno, header.frame_end(i as u32));
        }
        let log = Log {
            file: &wal,
            header,
            limit: header.frame_end(index.max_frame),
        };
        let new_pos = WalPos::At {
            header,
            offset: log.limit,
            checksum: index.frame_checksum,
        };
        let written = self.write_full_scan(
            Some(log),
            &Overlay::Index(overlay),
            index.db_pages,
            new_pos,
            Include::Snapshot,
            Instant::now(),
        )?;
        self.chain_break = Some((header.salt_bytes(), format!("{why:#}")));
        Ok(written)
    }

    /// The break found in the current WAL generation, if any: shown in `/list` until the log
    /// restarts.
    pub(super) fn chain_break(&self) -> Option<&str> {
        let (salts, msg) = self.chain_break.as_ref()?;
        match self.pos {
            Some(WalPos::At { header, .. }) if header.salt_bytes() == *salts => Some(msg),
            _ => None,
        }
    }

    fn sync_locked_inner(&mut self, page_count: &dyn Fn() -> Result<u32>) -> Result<bool> {
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
                _ => match self.saved_table.take() {
                    Some(table) => {
                        self.table = Some(table);
                        Include::Changed
                    }
                    None => Include::All,
                },
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

    /// How much the WAL holds, from the WAL index alone: one read, no lock, no SQLite call,
    /// so a database thread can look after every wakeup. `None` when it cannot tell (the
    /// index is not open yet or a writer is updating it, or there is no position): then a
    /// pass finds out.
    pub(super) fn probe(&self) -> Option<WalProbe> {
        let index = shm::read_header(self.shm_file.as_ref()?).ok()??;
        let unread = match self.pos? {
            WalPos::At { header, offset, .. } if header.salt_bytes() == index.salt => {
                let end = header.frame_end(index.max_frame);
                end.saturating_sub(offset) / header.frame_size()
            }
            // A new generation (or one after an empty log): every committed frame is new.
            WalPos::At { .. } | WalPos::Empty => u64::from(index.max_frame),
        };
        Some(WalProbe {
            salts: index.salt,
            frames: u64::from(index.max_frame),
            unread,
        })
    }

    /// Opens the WAL index (`-shm`) once, for [`SyncState::probe`] and the passes. SQLite
    /// creates it when a connection first reads the database in WAL mode.
    pub(super) fn open_shm(&mut self) -> Result<&File> {
        if self.shm_file.is_none() {
            let shm_path = sq::shm_path(&self.opts.path);
            let f =
                File::open(&shm_path).with_context(|| format!("open {}", shm_path.display()))?;
            self.shm_file = Some(f);
        }
        Ok(self.shm_file.as_ref().expect("opened above"))
    }

    /// Asks the kernel to start writing the WAL back once it grew by `every` frames since the
    /// last time (`sync_file_range`, which does not wait): the WAL's dirty pages then do not
    /// pile up for the fsync before a checkpoint, which the application waits for.
    pub(super) fn start_wal_writeback(&mut self, p: WalProbe, every: u64) {
        let last = self.writeback_at.unwrap_or(0);
        if p.frames >= last && p.frames - last < every {
            return;
        }
        self.writeback_at = Some(p.frames);
        if let Ok(wal) = self.wal_file() {
            // SAFETY: a valid descriptor; offset 0 and length 0 mean the whole file.
            unsafe {
                libc::sync_file_range(
                    std::os::fd::AsRawFd::as_raw_fd(wal),
                    0,
                    0,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
    }

    /// The WAL, opened once and kept while the connections are (SQLite neither removes nor
    /// replaces it while we hold them); reopened if it was unlinked all the same.
    pub(super) fn wal_file(&mut self) -> io::Result<&File> {
        let stale = match &self.wal_file {
            Some(f) => f.metadata().map_or(true, |m| m.nlink() == 0),
            None => true,
        };
        if stale {
            self.wal_file = Some(File::open(&self.wal_path)?);
        }
        Ok(self.wal_file.as_ref().expect("opened above"))
    }

    /// The WAL index header, retried while a writer is publishing a commit.
    pub(super) fn wal_index(&mut self) -> Result<WalIndexHeader> {
        let shm_path = sq::shm_path(&self.opts.path);
        let shm = self.open_shm()?;
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
    pub(super) fn sync_frames(
        &mut self,
        log: Log<'_>,
        from: u64,
        seed: WalChecksum,
    ) -> Result<bool> {
        let (wal, header) = (log.file, log.header);
        let wal_display = self.wal_path.display().to_string();
        let scanned = self.scan_committed(wal, header, from, seed, log.limit)?;
        let Some(end) = scanned.end else {
            self.no_commit_since(header, from, seed);
            return Ok(false);
        };
        let staged = self.stage_incremental(header, from, end, &scanned.pages, |frame, page| {
            read_wal_page(wal, &header, frame, page, &wal_display)
        })?;
        self.commit_staged(staged)?;
        Ok(true)
    }

    /// A scan from `from` found no committed transaction: at the start of a new generation,
    /// read it from there on.
    fn no_commit_since(&mut self, header: WalHeader, from: u64, seed: WalChecksum) {
        if from == WAL_HEADER_SIZE {
            self.pos = Some(WalPos::At {
                header,
                offset: from,
                checksum: seed,
            });
        }
    }

    /// Reads, under the write lock of a checkpoint, what was committed since the last pass and
    /// writes it into the spool under a temporary name, without fsyncs: the checkpoint may
    /// then backfill and restart the log, and [`SyncState::write_tail`] makes the file durable
    /// after the write lock is released, so the application waits for page-cache copies only.
    ///
    /// Declines (`Ok(None)`) when the position is not an incremental one: the caller then
    /// skips this checkpoint and the next pass reads the log as usual.
    pub(super) fn collect_tail(&mut self) -> Result<Option<Tail>> {
        let Some(wal) = self.scan_ahead()? else {
            return Ok(None);
        };
        let scan = self.scan.take().expect("kept by scan_ahead");
        let (header, from, seed) = (scan.header, scan.from, scan.seed);
        let wal_display = self.wal_path.display().to_string();
        let staged = match scan.committed.end {
            Some(end) => Some(self.stage_incremental(
                header,
                from,
                end,
                &scan.committed.pages,
                |frame, page| read_wal_page(&wal, &header, frame, page, &wal_display),
            )?),
            None => None,
        };
        Ok(Some(Tail {
            header,
            from,
            seed,
            staged,
        }))
    }

    /// Reads the committed frames after the position up to the end SQLite published, and
    /// keeps what it found (`self.scan`), so that the next call (the one under a checkpoint's
    /// write lock) only reads what was appended since. Safe without the write lock: under our
    /// read lock the log cannot restart, so these frames stay as they are until a pass or a
    /// checkpoint records them. `None` when the position is not an incremental one.
    pub(super) fn scan_ahead(&mut self) -> Result<Option<File>> {
        if self.table.is_none() || self.needs_snapshot {
            return Ok(None);
        }
        let wal = self
            .wal_file()
            .and_then(|f| f.try_clone())
            .with_context(|| format!("open {}", self.wal_path.display()))?;
        let Some(header) =
            WalHeader::read(&wal).with_context(|| format!("read {}", self.wal_path.display()))?
        else {
            return Ok(None);
        };
        let index = self.wal_index()?;
        if index.salt != header.salt_bytes() {
            return Ok(None);
        }
        let limit = header.frame_end(index.max_frame);
        let (from, seed) = match self.pos {
            Some(WalPos::At {
                header: h0,
                offset,
                checksum,
            }) if h0.salt_bytes() == header.salt_bytes() && offset <= limit => (offset, checksum),
            Some(WalPos::At { .. }) | Some(WalPos::Empty) if self.continuous => {
                (WAL_HEADER_SIZE, header.checksum)
            }
            _ => return Ok(None),
        };
        let committed = self.scan_committed(&wal, header, from, seed, limit)?;
        self.scan = Some(Scan {
            header,
            from,
            seed,
            committed,
        });
        Ok(Some(wal))
    }

    /// The committed frames from `from` (chain checksum `seed`) up to `limit`, continuing the
    /// kept read-ahead when it started from the same place in the same generation, so frames
    /// read between passes are not read again.
    fn scan_committed(
        &mut self,
        wal: &File,
        header: WalHeader,
        from: u64,
        seed: WalChecksum,
        limit: u64,
    ) -> Result<wal::Committed> {
        let mut committed = match self.scan.take() {
            Some(s) if s.header == header && s.from == from && s.seed == seed => s.committed,
            _ => wal::Committed::default(),
        };
        let (at, chain) = committed
            .end
            .map_or((from, seed), |e| (e.offset, e.checksum));
        let more = wal::scan_committed(wal, header, at, chain, limit)
            .with_context(|| format!("read {}", self.wal_path.display()))?;
        if more.end.is_some() {
            committed.pages.extend(more.pages);
            committed.end = more.end;
        }
        let reached = committed.end.map_or(from, |e| e.offset);
        self.ensure_complete(reached, limit)?;
        Ok(committed)
    }

    /// A scan that stopped before the end SQLite published as committed met a frame that does
    /// not chain (bit rot, a bug elsewhere): an error, never the end of the log.
    fn ensure_complete(&self, reached: u64, limit: u64) -> Result<()> {
        if reached < limit {
            return Err(anyhow::Error::new(BrokenChain {
                wal: self.wal_path.clone(),
                at: reached,
                limit,
            }));
        }
        Ok(())
    }

    /// Makes what [`SyncState::collect_tail`] wrote durable. On failure the frames may already
    /// be gone from the log (the checkpoint backfilled them and a writer restarted it), so the
    /// position is dropped and the next pass compares the whole database instead.
    pub(super) fn write_tail(&mut self, tail: Tail) -> Result<()> {
        let Some(staged) = tail.staged else {
            self.no_commit_since(tail.header, tail.from, tail.seed);
            return Ok(());
        };
        let result = self.commit_staged(staged);
        if result.is_err() {
            self.pos = None;
            self.continuous = false;
        }
        result
    }

    /// Writes the pages of the transactions between `from` and `end` (each page's newest
    /// version, read through `read`) as the next LTX file, under its temporary name and not
    /// yet durable; [`SyncState::commit_staged`] finishes it and moves the position to `end`.
    fn stage_incremental<P>(
        &self,
        header: WalHeader,
        from: u64,
        end: CommitEnd,
        dirty: &BTreeMap<u32, P>,
        read: impl Fn(&P, &mut [u8]) -> Result<()>,
    ) -> Result<StagedLtx> {
        let CommitEnd {
            offset: end_offset,
            checksum: end_checksum,
            commit,
        } = end;
        if header.page_size != self.page_size {
            bail!(
                "{}: page size {} differs from the database's {}",
                self.wal_path.display(),
                header.page_size,
                self.page_size
            );
        }
        let lock = ltx::lock_pgno(self.page_size);
        let selected = |pgno: u32| pgno <= commit && pgno != lock;
        // First pass: checksums of the new pages, for the post-apply checksum in the header.
        let table = self
            .table
            .as_ref()
            .expect("incremental sync needs the page table");
        let mut page = vec![0u8; self.page_size as usize];
        let mut post = table.checksum().0 & !ltx::CHECKSUM_FLAG;
        let mut new_sums = Vec::with_capacity(dirty.len());
        for (&pgno, source) in dirty.iter().filter(|(&p, _)| selected(p)) {
            read(source, &mut page)?;
            let ck = ltx::page_checksum(pgno, &page);
            post ^= table.get(pgno).map_or(0, |c| c.0 & !ltx::CHECKSUM_FLAG)
                ^ (ck.0 & !ltx::CHECKSUM_FLAG);
            new_sums.push((pgno, ck));
        }
        // Pages past the new end are gone (none of them is selected above).
        for pgno in commit + 1..=table.page_count() {
            post ^= table.get(pgno).map_or(0, |c| c.0 & !ltx::CHECKSUM_FLAG);
        }
        let post = Checksum(post | ltx::CHECKSUM_FLAG);
        let txid = self.next_txid()?;
        let ltx_header = self.ltx_header(
            txid,
            txid,
            commit,
            from,
            end_offset - from,
            (header.salt1, header.salt2),
            post,
        );
        let path = self.spool().path(txid, txid).context("spool directory")?;
        let (file, ()) = durable::stage_file(&path, |w| {
            let mut enc = Encoder::new(w, &ltx_header).map_err(io::Error::other)?;
            for (&pgno, source) in dirty.iter().filter(|(&p, _)| selected(p)) {
                read(source, &mut page).map_err(io::Error::other)?;
                enc.encode_page(pgno, &page).map_err(io::Error::other)?;
            }
            enc.finish(post).map_err(io::Error::other)?;
            Ok(())
        })
        .with_context(|| format!("write {}", path.display()))?;
        Ok(StagedLtx {
            file,
            header: ltx_header,
            post,
            new_sums,
            pos: WalPos::At {
                header,
                offset: end_offset,
                checksum: end_checksum,
            },
        })
    }

    /// Makes a staged LTX file durable and records it: the page table, the position, the
    /// registry, the `tx` event, the upload queue.
    fn commit_staged(&mut self, staged: StagedLtx) -> Result<()> {
        let path = staged.file.path().to_path_buf();
        staged
            .file
            .commit()
            .with_context(|| format!("write {}", path.display()))?;
        let pages = staged.new_sums.len();
        let commit = staged.header.commit;
        let table = self.table.as_mut().expect("staged from the page table");
        for (pgno, ck) in staged.new_sums {
            table.set(pgno, ck);
        }
        table.truncate(commit);
        debug_assert_eq!(table.checksum(), staged.post);
        self.pos = Some(staged.pos);
        self.recorded(&staged.header, staged.post, path, pages);
        Ok(())
    }

    /// Reads the whole database as of our read lock (the database file overlaid with the
    /// current generation's committed frames), rebuilds the page table, and writes the pages
    /// `include` selects as one LTX file (none if nothing changed).
    pub(super) fn full_scan(
        &mut self,
        current: Option<Log<'_>>,
        include: Include,
        page_count: &dyn Fn() -> Result<u32>,
    ) -> Result<bool> {
        let started = Instant::now();
        let wal_display = self.wal_path.display().to_string();
        // The committed frames of the current generation: newest frame of each page.
        let scanned = match current {
            Some(log) => {
                let scanned = wal::scan_committed(
                    log.file,
                    log.header,
                    WAL_HEADER_SIZE,
                    log.header.checksum,
                    log.limit,
                )
                .with_context(|| format!("read {wal_display}"))?;
                self.ensure_complete(scanned.end.map_or(WAL_HEADER_SIZE, |e| e.offset), log.limit)?;
                scanned
            }
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
        self.write_full_scan(
            current,
            &Overlay::Chain(overlay),
            commit,
            new_pos,
            include,
            started,
        )
    }

    /// The second half of a full scan: the checksum of every page (from `overlay` where the
    /// current generation changed it, else from the database file), then the pages `include`
    /// selects as one LTX file (none if nothing changed), and the position moved to `new_pos`.
    fn write_full_scan(
        &mut self,
        current: Option<Log<'_>>,
        overlay: &Overlay,
        commit: u32,
        new_pos: WalPos,
        include: Include,
        started: Instant,
    ) -> Result<bool> {
        self.saved_table = None;
        let wal_display = self.wal_path.display().to_string();
        let db_display = self.opts.path.display().to_string();
        let include = match include {
            // Continuing a replica whose newest file carries no database checksum (Litestream
            // wrote it): a file starting at the next txid would have no pre-apply checksum to
            // record. A snapshot needs none, and costs no more: with no known state, every
            // page is written either way.
            _ if self.txid > TxId(0) && self.post.is_none() => Include::Snapshot,
            other => other,
        };
        let db = self.db_file.as_ref().context("database file not open")?;
        let lock = ltx::lock_pgno(self.page_size);
        let mut page = vec![0u8; self.page_size as usize];
        let read_page = |pgno: u32, page: &mut [u8]| -> Result<()> {
            match (overlay, current) {
                (Overlay::Chain(frames), Some(log)) if frames.contains_key(&pgno) => {
                    read_wal_page(log.file, &log.header, &frames[&pgno], page, &wal_display)
                }
                (Overlay::Index(offsets), Some(log)) if offsets.contains_key(&pgno) => {
                    read_indexed_page(log.file, &log.header, pgno, offsets[&pgno], page)
                        .with_context(|| format!("read page {pgno} from {wal_display}"))
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
            Include::FramesFrom(off) => overlay.offset(pgno).is_some_and(|o| o >= off),
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
        let txid = self.next_txid()?;
        let min = if self.txid == TxId(0) || matches!(include, Include::Snapshot) {
            TxId(1)
        } else {
            txid
        };
        let (wal_offset, wal_size, wal_header) = match new_pos {
            WalPos::At { header, offset, .. } => (offset, 0, Some(header)),
            WalPos::Empty => (0, 0, None),
        };
        // No WAL generation: salts 0, which no real log has, so a restart will not resume here.
        let salts = wal_header.map_or((0, 0), |h| (h.salt1, h.salt2));
        let ltx_header = self.ltx_header(min, txid, commit, wal_offset, wal_size, salts, post);
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

    /// The TXID of the next file; an error past the largest one (a replica whose newest
    /// file name says so cannot be continued).
    fn next_txid(&self) -> Result<TxId> {
        self.txid.next().with_context(|| {
            format!(
                "{}: txid {} is the largest possible; the replica cannot be continued (run `litestream reset` and use a new replica)",
                self.opts.path.display(),
                self.txid
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

/// The WAL as its index shows it between passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WalProbe {
    /// The current generation's salts.
    pub(super) salts: [u8; 8],
    /// Committed frames in the current generation.
    pub(super) frames: u64,
    /// Of those, how many no pass has read yet.
    pub(super) unread: u64,
}

/// An LTX file written under its temporary name, with what recording it will change.
pub(super) struct StagedLtx {
    file: durable::Staged,
    header: Header,
    post: Checksum,
    /// The new checksums of the pages it holds.
    new_sums: Vec<(u32, Checksum)>,
    /// Where the WAL position moves once it is durable.
    pos: WalPos,
}

/// The committed frames found after the position so far (see [`SyncState::scan_ahead`]).
#[derive(Debug)]
pub(super) struct Scan {
    header: WalHeader,
    /// Where the scan started (the position) and the chain checksum there.
    from: u64,
    seed: WalChecksum,
    committed: wal::Committed,
}

/// Transactions read under a checkpoint's write lock, staged in the spool.
pub(super) struct Tail {
    header: WalHeader,
    from: u64,
    seed: WalChecksum,
    /// `None` when nothing was committed since the position.
    staged: Option<StagedLtx>,
}

/// The WAL's checksum chain ends before the end SQLite published as committed: a frame was
/// damaged (bit rot, a bug elsewhere) or written behind SQLite's back. The committed
/// transactions after it must not be taken for the end of the log.
#[derive(Debug)]
pub(super) struct BrokenChain {
    wal: PathBuf,
    at: u64,
    limit: u64,
}

impl std::fmt::Display for BrokenChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the checksum chain breaks at offset {}, before the committed end at offset {} (a damaged frame)",
            self.wal.display(),
            self.at,
            self.limit
        )
    }
}

impl std::error::Error for BrokenChain {}

/// Where a full scan reads the pages the current WAL generation changed.
enum Overlay {
    /// The committed frames found by following the checksum chain (re-verified on read).
    Chain(BTreeMap<u32, Frame>),
    /// The newest frame of each page as SQLite's WAL index lists it (frame offsets), read as
    /// SQLite reads them: after a [`BrokenChain`].
    Index(BTreeMap<u32, u64>),
}

impl Overlay {
    /// The offset of the frame a page is read from, if the WAL has it.
    fn offset(&self, pgno: u32) -> Option<u64> {
        match self {
            Overlay::Chain(frames) => frames.get(&pgno).map(|f| f.offset),
            Overlay::Index(offsets) => offsets.get(&pgno).copied(),
        }
    }
}

/// Reads the page of the frame at `offset` as SQLite's readers do (no checksum), after
/// checking the frame header names this page and this generation's salts.
fn read_indexed_page(
    wal: &File,
    header: &WalHeader,
    pgno: u32,
    offset: u64,
    page: &mut [u8],
) -> Result<()> {
    let mut fh = [0u8; wal::FRAME_HEADER_SIZE as usize];
    wal.read_exact_at(&mut fh, offset)?;
    let word = |at: usize| u32::from_be_bytes([fh[at], fh[at + 1], fh[at + 2], fh[at + 3]]);
    if word(0) != pgno || (word(8), word(12)) != (header.salt1, header.salt2) {
        bail!("frame at offset {offset} is not page {pgno} of this WAL generation");
    }
    wal.read_exact_at(page, offset + wal::FRAME_HEADER_SIZE)?;
    Ok(())
}

/// The current WAL generation as a pass reads it: the file, its header, and the end of what
/// SQLite has published as committed (from the WAL index).
#[derive(Clone, Copy)]
pub(super) struct Log<'a> {
    file: &'a File,
    header: WalHeader,
    limit: u64,
}

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
pub(super) fn read_verified_header(path: &Path) -> Result<Header> {
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
            page_size: None,
        });
    };
    let reader = client.open_ltx(best.level, best.min, best.max)?;
    let header = ltx::read_header(reader)?;
    Ok(ReplicaPosition {
        txid: best.max,
        post: header.ext_checksums.map(|(_, post)| post),
        commit: header.commit,
        page_size: Some(header.page_size),
    })
}

/// The newest state a replica holds.
struct ReplicaPosition {
    txid: TxId,
    /// The database checksum after it, when the file carries our extension.
    post: Option<Checksum>,
    /// The database size in pages after it.
    commit: u32,
    /// Its page size (`None`: the replica is empty).
    page_size: Option<u32>,
}
