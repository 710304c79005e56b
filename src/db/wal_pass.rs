//! The WAL pass: following SQLite's WAL under a read lock, from the position to the end SQLite
//! published as committed, and turning the committed transactions into one LTX file in the
//! spool (also the tail read under a checkpoint's write lock, and the read-ahead in bursts).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::durable;
use crate::ltx::{self, Checksum, Encoder, Header, TxId};
use crate::sqlite::shm::{self, WalIndexHeader};
use crate::sqlite::wal::{self, CommitEnd, Frame, WalChecksum, WalHeader, WAL_HEADER_SIZE};
use crate::sqlite::{self as sq};

use super::full_scan::Overlay;
use super::sync::{Include, SyncState, WalPos};

impl SyncState {
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
    pub(super) fn snapshot_as_sqlite_reads(&mut self, why: anyhow::Error) -> Result<bool> {
        let display = self.opts.path.display().to_string();
        log::error!(
            db = display.as_str(), error = format!("{why:#}");
            "WAL checksum chain broken; replicating a snapshot of the database as SQLite reads it instead"
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
        self.wal.chain_break = Some((header.salt_bytes(), format!("{why:#}")));
        Ok(written)
    }

    /// The break found in the current WAL generation, if any: shown in `/list` until the log
    /// restarts.
    pub(super) fn chain_break(&self) -> Option<&str> {
        let (salts, msg) = self.wal.chain_break.as_ref()?;
        match self.wal.pos {
            Some(WalPos::At { header, .. }) if header.salt_bytes() == *salts => Some(msg),
            _ => None,
        }
    }

    pub(super) fn sync_locked_inner(
        &mut self,
        page_count: &dyn Fn() -> Result<u32>,
    ) -> Result<bool> {
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
        if self.position.table.is_none() {
            let include = match (self.wal.resume.take(), header) {
                _ if self.position.txid == TxId::ZERO => Include::All,
                (Some(r), Some(h))
                    if r.salts == (h.salt1, h.salt2) && r.offset >= WAL_HEADER_SIZE =>
                {
                    Include::FramesFrom(r.offset)
                }
                _ => match self.position.saved_table.take() {
                    Some(table) => {
                        self.position.table = Some(table);
                        Include::Changed
                    }
                    None => Include::All,
                },
            };
            return self.full_scan(current, include, page_count);
        }
        match (self.wal.pos, current) {
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
                if self.wal.continuous && h0.salt_bytes() != log.header.salt_bytes() =>
            {
                self.sync_frames(log, WAL_HEADER_SIZE, log.header.checksum)
            }
            (Some(WalPos::Empty), Some(log)) if self.wal.continuous => {
                self.sync_frames(log, WAL_HEADER_SIZE, log.header.checksum)
            }
            (_, None) if self.wal.continuous => {
                self.wal.pos = Some(WalPos::Empty);
                Ok(false)
            }
            _ => {
                log::info!(
                    db:% = self.opts.path.display(),
                    reason = "new generation after a gap, or the log is shorter than what was read";
                    "WAL position lost; comparing the whole database"
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
        let index = shm::read_header(self.wal.shm_file.as_ref()?).ok()??;
        let unread = match self.wal.pos? {
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
        if self.wal.shm_file.is_none() {
            let shm_path = sq::shm_path(&self.opts.path);
            let f =
                File::open(&shm_path).with_context(|| format!("open {}", shm_path.display()))?;
            self.wal.shm_file = Some(f);
        }
        Ok(self.wal.shm_file.as_ref().expect("opened above"))
    }

    /// Asks the kernel to start writing the WAL back once it grew by `every` frames since the
    /// last time (`sync_file_range`, which does not wait): the WAL's dirty pages then do not
    /// pile up for the fsync before a checkpoint, which the application waits for.
    pub(super) fn start_wal_writeback(&mut self, p: WalProbe, every: u64) {
        let last = self.checkpoint.writeback_at.unwrap_or(0);
        if p.frames >= last && p.frames - last < every {
            return;
        }
        self.checkpoint.writeback_at = Some(p.frames);
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
        let stale = match &self.wal.wal_file {
            Some(f) => f.metadata().map_or(true, |m| m.nlink() == 0),
            None => true,
        };
        if stale {
            self.wal.wal_file = Some(File::open(&self.wal_path)?);
        }
        Ok(self.wal.wal_file.as_ref().expect("opened above"))
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
    pub(super) fn no_commit_since(&mut self, header: WalHeader, from: u64, seed: WalChecksum) {
        if from == WAL_HEADER_SIZE {
            self.wal.pos = Some(WalPos::At {
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
        let scan = self.wal.scan.take().expect("kept by scan_ahead");
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
    /// keeps what it found (`self.wal.scan`), so that the next call (the one under a checkpoint's
    /// write lock) only reads what was appended since. Safe without the write lock: under our
    /// read lock the log cannot restart, so these frames stay as they are until a pass or a
    /// checkpoint records them. `None` when the position is not an incremental one.
    pub(super) fn scan_ahead(&mut self) -> Result<Option<File>> {
        if self.position.table.is_none() || self.needs_snapshot {
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
        let (from, seed) = match self.wal.pos {
            Some(WalPos::At {
                header: h0,
                offset,
                checksum,
            }) if h0.salt_bytes() == header.salt_bytes() && offset <= limit => (offset, checksum),
            Some(WalPos::At { .. }) | Some(WalPos::Empty) if self.wal.continuous => {
                (WAL_HEADER_SIZE, header.checksum)
            }
            _ => return Ok(None),
        };
        let committed = self.scan_committed(&wal, header, from, seed, limit)?;
        self.wal.scan = Some(Scan {
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
    pub(super) fn scan_committed(
        &mut self,
        wal: &File,
        header: WalHeader,
        from: u64,
        seed: WalChecksum,
        limit: u64,
    ) -> Result<wal::Committed> {
        let mut committed = match self.wal.scan.take() {
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
    pub(super) fn ensure_complete(&self, reached: u64, limit: u64) -> Result<()> {
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
            self.wal.pos = None;
            self.wal.continuous = false;
        }
        result
    }

    /// Writes the pages of the transactions between `from` and `end` (each page's newest
    /// version, read through `read`) as the next LTX file, under its temporary name and not
    /// yet durable; [`SyncState::commit_staged`] finishes it and moves the position to `end`.
    pub(super) fn stage_incremental<P>(
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
        if header.page_size != self.position.page_size {
            bail!(
                "{}: page size {} differs from the database's {}",
                self.wal_path.display(),
                header.page_size,
                self.position.page_size
            );
        }
        let lock = ltx::lock_pgno(self.position.page_size);
        let selected = |pgno: u32| pgno <= commit && pgno != lock;
        // First pass: checksums of the new pages, for the post-apply checksum in the header.
        let table = self
            .position
            .table
            .as_ref()
            .expect("incremental sync needs the page table");
        let mut page = vec![0u8; self.position.page_size as usize];
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
    pub(super) fn commit_staged(&mut self, staged: StagedLtx) -> Result<()> {
        let path = staged.file.path().to_path_buf();
        staged
            .file
            .commit()
            .with_context(|| format!("write {}", path.display()))?;
        let pages = staged.new_sums.len();
        let commit = staged.header.commit;
        let table = self
            .position
            .table
            .as_mut()
            .expect("staged from the page table");
        for (pgno, ck) in staged.new_sums {
            table.set(pgno, ck);
        }
        table.truncate(commit);
        debug_assert_eq!(table.checksum(), staged.post);
        self.wal.pos = Some(staged.pos);
        self.recorded(&staged.header, staged.post, path, pages);
        Ok(())
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
    pub(super) file: durable::Staged,
    pub(super) header: Header,
    pub(super) post: Checksum,
    /// The new checksums of the pages it holds.
    pub(super) new_sums: Vec<(u32, Checksum)>,
    /// Where the WAL position moves once it is durable.
    pub(super) pos: WalPos,
}

/// The committed frames found after the position so far (see [`SyncState::scan_ahead`]).
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) header: WalHeader,
    /// Where the scan started (the position) and the chain checksum there.
    pub(super) from: u64,
    pub(super) seed: WalChecksum,
    pub(super) committed: wal::Committed,
}

/// Transactions read under a checkpoint's write lock, staged in the spool.
pub(super) struct Tail {
    pub(super) header: WalHeader,
    pub(super) from: u64,
    pub(super) seed: WalChecksum,
    /// `None` when nothing was committed since the position.
    pub(super) staged: Option<StagedLtx>,
}

/// The WAL's checksum chain ends before the end SQLite published as committed: a frame was
/// damaged (bit rot, a bug elsewhere) or written behind SQLite's back. The committed
/// transactions after it must not be taken for the end of the log.
#[derive(Debug)]
pub(super) struct BrokenChain {
    pub(super) wal: PathBuf,
    pub(super) at: u64,
    pub(super) limit: u64,
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

/// The current WAL generation as a pass reads it: the file, its header, and the end of what
/// SQLite has published as committed (from the WAL index).
#[derive(Clone, Copy)]
pub(super) struct Log<'a> {
    pub(super) file: &'a File,
    pub(super) header: WalHeader,
    pub(super) limit: u64,
}

/// Re-reads a frame's page and proves it unchanged since the scan.
pub(super) fn read_wal_page(
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
