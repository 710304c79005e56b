//! The full scan: the whole database read through the current WAL generation (or, after a
//! broken checksum chain, through SQLite's WAL index), written as a snapshot or as the pages
//! that changed since the saved page checksums.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::durable;
use crate::ltx::{self, Encoder, PageChecksums, TxId};
use crate::sqlite::wal::{self, Frame, WalHeader, WAL_HEADER_SIZE};

use super::sync::{Include, SyncState, WalPos};
use super::wal_pass::{read_wal_page, Log};

impl SyncState {
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
    pub(super) fn write_full_scan(
        &mut self,
        current: Option<Log<'_>>,
        overlay: &Overlay,
        commit: u32,
        new_pos: WalPos,
        include: Include,
        started: Instant,
    ) -> Result<bool> {
        self.position.saved_table = None;
        let wal_display = self.wal_path.display().to_string();
        let db_display = self.opts.path.display().to_string();
        let include = match include {
            // Continuing a replica whose newest file carries no database checksum (Litestream
            // wrote it): a file starting at the next txid would have no pre-apply checksum to
            // record. A snapshot needs none, and costs no more: with no known state, every
            // page is written either way.
            _ if self.position.txid > TxId::ZERO && self.position.post.is_none() => {
                Include::Snapshot
            }
            other => other,
        };
        let db = self.db_file.as_ref().context("database file not open")?;
        let lock = ltx::lock_pgno(self.position.page_size);
        let mut page = vec![0u8; self.position.page_size as usize];
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
                    .read_exact_at(
                        page,
                        u64::from(pgno - 1) * u64::from(self.position.page_size),
                    )
                    .with_context(|| format!("read page {pgno} of {db_display}")),
            }
        };
        // First pass: the checksum of every page.
        let mut table = PageChecksums::new(self.position.page_size);
        for pgno in (1..=commit).filter(|&p| p != lock) {
            read_page(pgno, &mut page)?;
            table.set(pgno, ltx::page_checksum(pgno, &page));
        }
        let post = table.checksum();
        let old = self.position.table.take();
        let selected = |pgno: u32| match include {
            Include::All | Include::Snapshot => true,
            Include::Changed => old.as_ref().and_then(|t| t.get(pgno)) != table.get(pgno),
            Include::FramesFrom(off) => overlay.offset(pgno).is_some_and(|o| o >= off),
        };
        let unchanged = !matches!(include, Include::Snapshot)
            && self.position.txid > TxId::ZERO
            && self.position.post == Some(post)
            && self.position.commit == commit;
        if unchanged || commit == 0 {
            self.position.table = Some(table);
            self.wal.pos = Some(new_pos);
            log::debug!(
                db = db_display.as_str(),
                txid:% = self.position.txid,
                elapsed:? = started.elapsed();
                "full scan: unchanged"
            );
            return Ok(false);
        }
        let txid = self.next_txid()?;
        let min = if self.position.txid == TxId::ZERO || matches!(include, Include::Snapshot) {
            TxId::new(1)
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
        self.position.table = Some(table);
        self.wal.pos = Some(new_pos);
        self.needs_snapshot = false;
        log::info!(
            db = db_display.as_str(),
            txid:% = txid,
            mode:? = include,
            pages = written,
            commit,
            elapsed:? = started.elapsed();
            "full scan"
        );
        self.recorded(&ltx_header, post, path, written);
        Ok(true)
    }
}

/// Where a full scan reads the pages the current WAL generation changed.
pub(super) enum Overlay {
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
pub(super) fn read_indexed_page(
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
