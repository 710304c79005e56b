//! Where a database's replication stands after a (re)start: opening the database under
//! this daemon's claim, the position recovered from the spool, and the one decision taken from
//! the replica's listing (which spooled files to upload, or a snapshot to bridge a gap).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::ltx::{self, Checksum, Header, Level, TxId};
use crate::owner::OwnerLock;
use crate::replica::{self, ReplicaClient};
use crate::spool::{Spool, SpoolFile};
use crate::sqlite::conn::{self, ReadLocks};
use crate::sqlite::{self as sq};

use super::saved_pages;
use super::sync::{ResumePoint, SyncState};
use super::upload::PendingUpload;

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
        self.wal.shm_file = None;
        self.wal.wal_file = None;
        let mut locks = ReadLocks::open(&path, self.opts.busy_timeout)
            .with_context(|| format!("{display}: open"))?;
        let mode = conn::journal_mode(locks.idle()?)
            .with_context(|| format!("{display}: read journal mode"))?;
        if mode != "wal" {
            let now = conn::enable_wal(locks.idle()?)
                .with_context(|| format!("{display}: database is in {mode} journal mode and switching to WAL failed (is another process holding it?)"))?;
            if now != "wal" {
                bail!("{display}: database is in {mode} journal mode and SQLite refused to switch it to WAL ({now})");
            }
            log::info!(db:% = display, from:% = mode; "switched journal mode to wal");
        }
        let page_size = match header {
            Some(h) => h.page_size,
            None => locks
                .idle()?
                .query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0))?,
        };
        if self.position.page_size != 0 && self.position.page_size != page_size {
            // Changed while replication was stopped (journal_mode=delete, page_size, VACUUM):
            // nothing known about the old pages applies; the next file is a snapshot.
            log::info!(
                db:% = display, from = self.position.page_size, to = page_size;
                "page size changed; the next file is a snapshot"
            );
            self.start_over();
        }
        self.position.page_size = page_size;
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
        let Some(table) = &self.position.table else {
            return;
        };
        if self.position.post != Some(table.checksum()) || self.spool.is_none() {
            return;
        }
        if let Err(e) = saved_pages::save(
            &self.opts.meta_dir,
            self.position.page_size,
            self.position.txid,
            table,
        ) {
            log::warn!(
                db:% = self.opts.path.display(), error:% = e;
                "cannot save page checksums for the next start"
            );
        }
    }

    /// Forgets what is known of the database's pages and position: the next pass writes a
    /// snapshot (min TXID 1, uploaded to level 9), which restores start from.
    pub(super) fn start_over(&mut self) {
        self.needs_snapshot = true;
        self.position.table = None;
        self.wal.pos = None;
        self.wal.resume = None;
        self.position.saved_table = None;
        self.wal.scan = None;
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
            self.position.txid = local;
            self.position.post = header.ext_checksums.map(|(_, post)| post);
            self.position.saved_table = self.position.post.and_then(|post| {
                saved_pages::load(&self.opts.meta_dir, self.position.page_size, local, post)
            });
            self.position.commit = header.commit;
            if header.wal_offset > 0 {
                self.wal.resume = Some(ResumePoint {
                    salts: (header.wal_salt1, header.wal_salt2),
                    offset: (header.wal_offset + header.wal_size) as u64,
                });
            }
            if header.page_size != self.position.page_size {
                log::info!(
                    db = display.as_str(), from = header.page_size, to = self.position.page_size;
                    "page size changed since the last file; the next file is a snapshot"
                );
                self.start_over();
            }
        }
        // Used at most once: a crash from here on must not find it looking current. With an
        // empty spool it is kept for `reconcile_remote`: a promoted follower leaves the table
        // of the replica's newest state there (see `Store::promote`).
        if self.position.txid > TxId::ZERO {
            saved_pages::discard(&self.opts.meta_dir);
        }
        self.initialized = true;
        if let Err(e) = self.reconcile_remote() {
            self.uploads.remote_known = false;
            self.uploads.failures += 1;
            let kind = replica::error::kind_of(&e);
            let delay = super::upload::retry_delay(kind, self.uploads.failures);
            self.uploads.retry_at = Some(Instant::now() + delay);
            log::log!(
                super::upload::failure_level(kind),
                db = display.as_str(),
                replica:% = self.replica.url(),
                error = format!("{e:#}"),
                backoff:? = delay,
                retry = super::upload::retry_note(kind);
                "cannot list replica; spooling locally and retrying"
            );
            self.shared.registry.update(&self.opts.path, |v| {
                v.replica_error = Some(format!("{e:#}"))
            });
        }
        let txid = self.position.txid;
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
        let local = files.last().map_or(TxId::ZERO, |f| f.max);
        let remote_max = remote.txid;
        self.uploads.queue.clear();
        match decide(&files, remote_max) {
            Decision::ReplicaAhead => {
                // The replica is ahead of this spool (spool deleted by `reset`, or restored
                // elsewhere): continue its TXID sequence. The first pass reads the whole
                // database: nothing is written if it is the state the newest file describes,
                // else every page (which restores whatever came before), or a snapshot when
                // the page size differs.
                log::warn!(
                    db = display.as_str(),
                    replica:% = self.replica.url(),
                    replica_txid:% = remote_max,
                    spool_txid:% = local;
                    "replica is ahead of the local spool; continuing from the replica"
                );
                self.spool()
                    .clear()
                    .with_context(|| format!("{display}: clear spool"))?;
                self.position.txid = remote_max;
                self.position.post = remote.post;
                self.position.commit = remote.commit;
                self.wal.resume = None;
                // The page checksums of exactly the replica's newest state, if saved (by a
                // promotion): the first pass then writes only the pages that differ from it
                // instead of every page. Keyed by txid and database checksum, so a table of
                // any other state is never taken.
                self.position.saved_table = remote.post.and_then(|post| {
                    saved_pages::load(
                        &self.opts.meta_dir,
                        self.position.page_size,
                        remote_max,
                        post,
                    )
                });
                saved_pages::discard(&self.opts.meta_dir);
                self.position.table = None;
                self.wal.pos = None;
                if remote
                    .page_size
                    .is_some_and(|p| p != self.position.page_size)
                {
                    log::info!(
                        db = display.as_str(),
                        replica_page_size = remote.page_size.unwrap_or(0),
                        page_size = self.position.page_size;
                        "the replica's page size differs from the database's; the next file is a snapshot"
                    );
                    self.start_over();
                }
            }
            Decision::Gap => {
                log::warn!(
                    db = display.as_str(),
                    replica:% = self.replica.url(),
                    replica_txid:% = remote_max;
                    "the spool no longer has the files after the replica's newest; writing a snapshot to bridge the gap"
                );
                self.start_over();
            }
            Decision::Upload { first } => {
                for f in &files[first..] {
                    let header = read_verified_header(&f.path)
                        .with_context(|| format!("{display}: spooled {}", f.path.display()))?;
                    self.uploads.queue.push_back(PendingUpload {
                        min: f.min,
                        max: f.max,
                        timestamp_ms: header.timestamp_ms,
                        path: f.path.clone(),
                    });
                }
            }
        }
        self.uploads.replicated = remote_max;
        self.uploads.remote_known = true;
        self.uploads.failures = 0;
        self.uploads.retry_at = None;
        let (txid, replicated) = (self.position.txid, remote_max);
        self.shared.registry.update(&self.opts.path, |v| {
            v.txid = txid;
            v.replicated_txid = replicated;
            v.replica_error = None;
        });
        Ok(())
    }
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

/// What the replica's newest TXID means for the spool: the one decision a listing makes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// The replica is past everything spooled: continue its TXID sequence.
    ReplicaAhead,
    /// The replica misses transactions the spool no longer has: bridge with a snapshot.
    Gap,
    /// Upload the spooled files from index `first` on (those past the replica, in order).
    Upload { first: usize },
}

/// Decides from the spooled files (sorted as [`Spool::files`] gives them) and the replica's
/// newest TXID. Pure, so every case is tested without a replica.
pub(super) fn decide(spooled: &[SpoolFile], remote_max: TxId) -> Decision {
    let local = spooled.last().map_or(TxId::ZERO, |f| f.max);
    if remote_max > local {
        return Decision::ReplicaAhead;
    }
    // Sorted by max TXID: the files past the replica are a suffix.
    let first = spooled.partition_point(|f| f.max <= remote_max);
    match spooled.get(first) {
        Some(next) if remote_max.next().is_none_or(|n| next.min > n) => Decision::Gap,
        _ => Decision::Upload { first },
    }
}

/// Reads and fully verifies a local LTX file, returning its header.
pub(super) fn read_verified_header(path: &Path) -> Result<Header> {
    let file = File::open(path)?;
    Ok(ltx::verify(io::BufReader::new(file))?.header)
}

/// The highest TXID in a replica at any level, and the database checksum after it when the
/// file carries our extension.
pub(super) fn replica_position(client: &dyn ReplicaClient) -> Result<ReplicaPosition> {
    let mut best: Option<replica::LtxFileInfo> = None;
    for level in Level::all() {
        for f in client.ltx_files(level)? {
            if best.as_ref().is_none_or(|b| f.max > b.max) {
                best = Some(f);
            }
        }
    }
    let Some(best) = best else {
        return Ok(ReplicaPosition {
            txid: TxId::ZERO,
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
pub(super) struct ReplicaPosition {
    pub(super) txid: TxId,
    /// The database checksum after it, when the file carries our extension.
    pub(super) post: Option<Checksum>,
    /// The database size in pages after it.
    pub(super) commit: u32,
    /// Its page size (`None`: the replica is empty).
    pub(super) page_size: Option<u32>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::sync::Mutex;

    use super::*;
    use crate::ltx::{Encoder, CHECKSUM_FLAG, FLAG_NO_CHECKSUM};
    use crate::replica::LtxFileInfo;
    use crate::replica::{ErrorKind, ReplicaError};

    fn spooled(ranges: &[(u64, u64)]) -> Vec<SpoolFile> {
        ranges
            .iter()
            .map(|&(min, max)| SpoolFile {
                min: TxId::new(min),
                max: TxId::new(max),
                path: PathBuf::from(ltx::file_name(TxId::new(min), TxId::new(max))),
            })
            .collect()
    }

    #[test]
    fn the_gap_decision_in_every_case() {
        use Decision::*;
        let s = spooled(&[(1, 3), (4, 4), (5, 9)]);
        // An empty replica takes everything; one at a file boundary takes the rest.
        assert_eq!(decide(&s, TxId::ZERO), Upload { first: 0 });
        assert_eq!(decide(&s, TxId::new(3)), Upload { first: 1 });
        assert_eq!(decide(&s, TxId::new(4)), Upload { first: 2 });
        assert_eq!(decide(&s, TxId::new(9)), Upload { first: 3 });
        // Inside a file: that file covers the next TXID (it overlaps), so no gap.
        assert_eq!(decide(&s, TxId::new(6)), Upload { first: 2 });
        assert_eq!(decide(&s, TxId::new(10)), ReplicaAhead);
        // The spool no longer starts at the replica's next TXID (its early files uploaded
        // and removed, then the replica lost some): a snapshot bridges it.
        let late = spooled(&[(7, 8), (9, 9)]);
        assert_eq!(decide(&late, TxId::new(5)), Gap);
        assert_eq!(decide(&late, TxId::new(6)), Upload { first: 0 });
        assert_eq!(decide(&late, TxId::ZERO), Gap);
        // Nothing spooled.
        assert_eq!(decide(&[], TxId::ZERO), Upload { first: 0 });
        assert_eq!(decide(&[], TxId::new(3)), ReplicaAhead);
        // A replica claiming the last TXID there is: nothing can follow it.
        assert_eq!(
            decide(&spooled(&[(1, u64::MAX)]), TxId::new(u64::MAX)),
            Upload { first: 1 }
        );
    }

    /// A replica in memory: LTX files by (level, min, max), and a listing that can fail.
    #[derive(Default)]
    struct FakeReplica {
        files: Mutex<BTreeMap<(u8, u64, u64), Vec<u8>>>,
        fail_listing: bool,
    }

    impl FakeReplica {
        fn add(&self, level: u8, min: u64, max: u64, commit: u32, post: Option<u64>) {
            let header = ltx::Header {
                flags: if post.is_some() { 0 } else { FLAG_NO_CHECKSUM },
                page_size: 4096,
                commit,
                min_txid: TxId::new(min),
                max_txid: TxId::new(max),
                pre_apply_checksum: Checksum(if min == 1 || post.is_none() {
                    0
                } else {
                    CHECKSUM_FLAG
                }),
                ext_checksums: post.map(|p| (Checksum(0), Checksum(p))),
                ..ltx::Header::default()
            };
            let mut enc = Encoder::new(Vec::new(), &header).unwrap();
            for pgno in 1..=commit {
                enc.encode_page(pgno, &vec![pgno as u8; 4096]).unwrap();
            }
            let post = post.map_or(Checksum(0), Checksum);
            let (_, bytes) = enc.finish(post).unwrap();
            self.files.lock().unwrap().insert((level, min, max), bytes);
        }
    }

    impl ReplicaClient for FakeReplica {
        fn url(&self) -> &str {
            "fake://replica"
        }
        fn ltx_files(&self, level: Level) -> replica::Result<Vec<LtxFileInfo>> {
            if self.fail_listing {
                return Err(ReplicaError::new(
                    ErrorKind::Transient,
                    "fake://replica",
                    "LIST",
                    "",
                    "HTTP 503",
                ));
            }
            Ok(self
                .files
                .lock()
                .unwrap()
                .iter()
                .filter(|((l, _, _), _)| *l == level.get())
                .map(|(&(level, min, max), bytes)| LtxFileInfo {
                    level: Level::new(level).unwrap(),
                    min: TxId::new(min),
                    max: TxId::new(max),
                    size: bytes.len() as u64,
                    created_ms: 0,
                })
                .collect())
        }
        fn open_ltx(
            &self,
            level: Level,
            min: TxId,
            max: TxId,
        ) -> replica::Result<Box<dyn Read + Send>> {
            let bytes = self.files.lock().unwrap()[&(level.get(), min.get(), max.get())].clone();
            Ok(Box::new(std::io::Cursor::new(bytes)))
        }
        fn put_ltx(&self, _: Level, _: TxId, _: TxId, _: i64, _: &Path) -> replica::Result<()> {
            unreachable!("the position is read, never written")
        }
        fn delete_ltx(&self, _: Level, _: &[(TxId, TxId)]) -> replica::Result<()> {
            unreachable!("the position is read, never written")
        }
    }

    #[test]
    fn the_replica_position_is_its_newest_file_at_any_level() {
        let empty = FakeReplica::default();
        let p = replica_position(&empty).unwrap();
        assert_eq!(
            (p.txid, p.commit, p.page_size, p.post),
            (TxId::ZERO, 0, None, None)
        );

        let r = FakeReplica::default();
        r.add(0, 1, 5, 3, None);
        r.add(1, 1, 7, 4, None);
        // A snapshot is newest: its header gives the size and the checksum.
        let snapshot_post = {
            let mut t = ltx::PageChecksums::new(4096);
            for pgno in 1..=6u32 {
                t.set(pgno, ltx::page_checksum(pgno, &vec![pgno as u8; 4096]));
            }
            t.checksum().0
        };
        r.add(9, 1, 8, 6, Some(snapshot_post));
        let p = replica_position(&r).unwrap();
        assert_eq!(
            (p.txid, p.commit, p.page_size, p.post),
            (TxId::new(8), 6, Some(4096), Some(Checksum(snapshot_post)))
        );

        // A failed listing is an error, never position 0 (which would make every spooled
        // file look like a gap).
        let failing = FakeReplica {
            fail_listing: true,
            ..FakeReplica::default()
        };
        let e = replica_position(&failing).err().expect("an error");
        assert!(format!("{e:#}").contains("HTTP 503"), "{e:#}");
    }
}
