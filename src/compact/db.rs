//! Compaction of one database's replica: merging a level's files into the next, snapshots,
//! retention deletes, and the listings kept between runs (see the module docs of
//! [`crate::compact`]). Every output is verified locally before it is uploaded, and every
//! deletion is proven safe first ([`check_deletable`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::policy::{check_deletable, l0_expired, next_run, snapshot_expired, window_start};
use crate::durable;
use crate::ltx::{self, Checksum, CompactOptions, Decoder, Encoder, Header, Level, TxId};
use crate::replica::{LtxFileInfo, ReplicaClient};
use crate::restore;
use crate::timefmt;

/// Most files merged into one output. A backlog larger than this (a replica that grew for a
/// long time before compaction existed) becomes several outputs in one run, so open inputs
/// (file descriptors, S3 download threads and their buffers) stay bounded.
pub const MAX_INPUTS: usize = 64;

/// `ltx/<level>/<min>-<max>.ltx` of the first and last of `files`, for logs.
fn span(files: &[LtxFileInfo]) -> String {
    match (files.first(), files.last()) {
        (Some(a), Some(b)) if files.len() > 1 => {
            format!("{} .. {}", restore::file_label(a), restore::file_label(b))
        }
        (Some(a), _) => restore::file_label(a),
        _ => String::new(),
    }
}

/// One input of a merge: a file in the replica, or a partial merge on local disk.
enum Source {
    Replica(LtxFileInfo),
    Local(PathBuf),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Replica(f) => restore::file_label(f),
            Source::Local(p) => p.display().to_string(),
        }
    }
}

/// Compaction of one database's replica: the work, and the listings kept between runs.
pub struct DbCompaction {
    /// The database, for logs.
    path: PathBuf,
    replica: Arc<dyn ReplicaClient>,
    /// Where temporary outputs are written (the database's meta directory).
    meta_dir: PathBuf,
    /// The replica's files per level as last listed and since updated by our own writes;
    /// `None`: not known, list before use.
    listings: [Option<Vec<LtxFileInfo>>; Level::COUNT],
    /// Most inputs one merge opens ([`MAX_INPUTS`]; smaller in tests).
    max_inputs: usize,
    /// Set at shutdown: every read of a merge fails from then on, so the work in progress
    /// ends within one buffer instead of holding up the exit (see [`super::Compactor::cancel`]).
    cancel: Arc<AtomicBool>,
}

impl DbCompaction {
    /// Compaction for the database at `path` replicating to `replica`, with temporary
    /// files in `meta_dir` (leftovers of a crash are removed here).
    pub fn new(path: &Path, replica: Arc<dyn ReplicaClient>, meta_dir: &Path) -> DbCompaction {
        if let Ok(entries) = fs::read_dir(meta_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".compact-") && name.ends_with(".tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        DbCompaction {
            path: path.to_path_buf(),
            replica,
            meta_dir: meta_dir.to_path_buf(),
            listings: Default::default(),
            max_inputs: MAX_INPUTS,
            cancel: Arc::default(),
        }
    }

    /// The same, ended early by `cancel` (the compactor's shutdown flag).
    pub(super) fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> DbCompaction {
        self.cancel = cancel;
        self
    }

    fn db(&self) -> String {
        self.path.display().to_string()
    }

    /// Drops every kept listing: the next run lists again (after an error, or when someone
    /// else may have changed the replica).
    pub fn forget_listings(&mut self) {
        self.listings = Default::default();
    }

    /// The files at `level`: the kept listing, or a LIST.
    fn listing(&mut self, level: Level) -> Result<Vec<LtxFileInfo>> {
        if let Some(files) = &self.listings[level.index()] {
            return Ok(files.clone());
        }
        self.relist(level)
    }

    /// LISTs `level` and keeps the result.
    fn relist(&mut self, level: Level) -> Result<Vec<LtxFileInfo>> {
        let files = self
            .replica
            .ltx_files(level)
            .with_context(|| format!("{}: list level {level}", self.replica.url()))?;
        self.listings[level.index()] = Some(files.clone());
        Ok(files)
    }

    /// Every file of every level (listing the levels not known yet).
    fn all_files(&mut self) -> Result<Vec<LtxFileInfo>> {
        let mut all = vec![];
        for level in Level::all() {
            all.extend(self.listing(level)?);
        }
        Ok(all)
    }

    /// Records a file we stored.
    fn remember(&mut self, f: &LtxFileInfo) {
        if let Some(files) = self.listings[f.level.index()].as_mut() {
            files.retain(|g| (g.min, g.max) != (f.min, f.max));
            files.push(f.clone());
            files.sort_by_key(|g| (g.min, g.max));
        }
    }

    /// Newest max TXID at `level` (0 when empty).
    fn level_max(&mut self, level: Level) -> Result<TxId> {
        Ok(self
            .listing(level)?
            .iter()
            .map(|f| f.max)
            .max()
            .unwrap_or(TxId::ZERO))
    }

    /// Compacts level `level - 1` into `level` (see the module docs). `replicated` is the
    /// newest TXID the database thread knows the replica holds; when a level-1 compaction
    /// would find nothing past it, no request is made. With `interval`, the run is skipped
    /// if the level's newest file was written in the current interval. Returns the files
    /// written.
    pub fn compact_level(
        &mut self,
        level: Level,
        interval: Option<Duration>,
        replicated: TxId,
        now_ms: i64,
    ) -> Result<Vec<LtxFileInfo>> {
        let Some(below) = level.below().filter(|_| level.is_compacted()) else {
            bail!("level {level} is not a compaction level (1..=8)");
        };
        let dst = self.listing(level)?;
        let dst_max = dst.iter().map(|f| f.max).max().unwrap_or(TxId::ZERO);
        if replicated <= dst_max {
            return Ok(vec![]);
        }
        if below != Level::L0 && self.level_max(below)? <= dst_max {
            return Ok(vec![]);
        }
        if let (Some(interval), Some(newest)) = (interval, dst.iter().map(|f| f.created_ms).max()) {
            if newest >= window_start(now_ms, interval) {
                log::debug!(
                    db:% = self.db(),
                    compaction_level = level.get(),
                    newest = timefmt::rfc3339_ms(newest);
                    "compaction too early"
                );
                return Ok(vec![]);
            }
        }
        // Level 0 grows behind our back (the database thread uploads): list it afresh.
        let src = if below == Level::L0 {
            self.relist(below)?
        } else {
            self.listing(below)?
        };
        let mut written = vec![];
        let mut after = dst_max;
        loop {
            let run = next_run(&src, after, self.max_inputs);
            if run.is_empty() {
                break;
            }
            let out = self.merge(level, &run, CompactOptions::default())?;
            log::info!(
                db:% = self.db(),
                compaction_level = level.get(),
                "txid.min":% = out.min,
                "txid.max":% = out.max,
                size = out.size,
                files = run.len();
                "compaction complete"
            );
            after = out.max;
            written.push(out);
        }
        Ok(written)
    }

    /// Takes a snapshot (see the module docs) unless the newest one already holds
    /// `replicated`, or (with `interval`) was taken in the current interval. Returns it.
    pub fn snapshot(
        &mut self,
        interval: Option<Duration>,
        replicated: TxId,
        now_ms: i64,
    ) -> Result<Option<LtxFileInfo>> {
        let snapshots = self.listing(Level::SNAPSHOT)?;
        let newest = snapshots.iter().max_by_key(|f| (f.max, f.created_ms));
        if newest.is_some_and(|s| s.max >= replicated) {
            return Ok(None);
        }
        if let (Some(interval), Some(s)) = (interval, newest) {
            if s.created_ms >= window_start(now_ms, interval) {
                log::debug!(db:% = self.db(); "snapshot too early");
                return Ok(None);
            }
        }
        // The planner needs every level as it is now: list them all (also refreshing what
        // we keep, against changes made by anyone else).
        for level in Level::all() {
            self.relist(level)?;
        }
        let files = self.all_files()?;
        let Some(latest) = files.iter().map(|f| f.max).max() else {
            return Ok(None);
        };
        if files
            .iter()
            .any(|f| f.level == Level::SNAPSHOT && f.max == latest)
        {
            return Ok(None);
        }
        let plan = restore::plan_files(&files, latest)
            .with_context(|| format!("{}: plan the snapshot", self.replica.url()))?;
        let opts = CompactOptions {
            timestamp_ms: Some(now_ms),
        };
        let out = self.merge(Level::SNAPSHOT, &plan.files, opts)?;
        log::info!(
            db:% = self.db(),
            txid:% = out.max,
            size = out.size,
            files = plan.files.len();
            "snapshot complete"
        );
        Ok(Some(out))
    }

    /// L0 retention (see the module docs); returns how many files it deleted.
    pub fn enforce_l0_retention(&mut self, retention: Duration, now_ms: i64) -> Result<usize> {
        let l1 = self.listing(Level::L1)?;
        if l1.is_empty() {
            return Ok(0);
        }
        let l0 = self.listing(Level::L0)?;
        let doomed = l0_expired(&l0, &l1, now_ms - retention.as_millis() as i64);
        self.delete(&doomed, "l0 retention")
    }

    /// Snapshot retention (see the module docs); returns how many files it deleted.
    pub fn enforce_snapshot_retention(
        &mut self,
        retention: Duration,
        l0_retention: Duration,
        now_ms: i64,
    ) -> Result<usize> {
        if self.listing(Level::SNAPSHOT)?.is_empty() {
            return Ok(0);
        }
        let files = self.all_files()?;
        let doomed = snapshot_expired(
            &files,
            now_ms - retention.as_millis() as i64,
            now_ms - l0_retention.as_millis() as i64,
        );
        self.delete(&doomed, "snapshot retention")
    }

    /// Deletes `doomed` (any levels) after proving the replica still restores to its newest
    /// TXID without them; refuses otherwise.
    fn delete(&mut self, doomed: &[LtxFileInfo], why: &str) -> Result<usize> {
        if doomed.is_empty() {
            return Ok(0);
        }
        let files = self.all_files()?;
        if let Err(e) = check_deletable(&files, doomed) {
            log::error!(
                db:% = self.db(),
                reason = why,
                files = doomed.len(),
                first = span(doomed),
                error = format!("{e:#}");
                "retention refused"
            );
            return Err(e.context(format!(
                "{why}: refused to delete {} files ({})",
                doomed.len(),
                span(doomed)
            )));
        }
        let mut by_level: BTreeMap<Level, Vec<LtxFileInfo>> = BTreeMap::new();
        for f in doomed {
            by_level.entry(f.level).or_default().push(f.clone());
        }
        let mut deleted = 0;
        for (level, files) in by_level {
            let pairs: Vec<(TxId, TxId)> = files.iter().map(|f| (f.min, f.max)).collect();
            let result = self.replica.delete_ltx(level, &pairs);
            // Even a failed batch may have deleted some: forget them all (a smaller listing
            // is only ever more cautious), and list afresh next time.
            if let Some(kept) = self.listings[level.index()].as_mut() {
                kept.retain(|f| !files.contains(f));
            }
            result.with_context(|| format!("{}: delete {}", self.replica.url(), span(&files)))?;
            deleted += files.len();
            log::info!(
                db:% = self.db(),
                reason = why,
                compaction_level = level.get(),
                files = files.len(),
                "txid.min":% = files.first().map_or(TxId::ZERO, |f| f.min),
                "txid.max":% = files.last().map_or(TxId::ZERO, |f| f.max);
                "retention deleted files"
            );
        }
        Ok(deleted)
    }

    /// Where a merge is written before it is uploaded.
    fn temp_path(&self, level: Level, suffix: &str) -> PathBuf {
        self.meta_dir.join(format!(".compact-{level}{suffix}.tmp"))
    }

    /// Merges `inputs` into one file at `level`: into a temporary file, verified, uploaded.
    /// More than [`MAX_INPUTS`] inputs are reduced first: everything after the first input
    /// (a snapshot, read once) merges in groups into local files, which then take its place.
    fn merge(
        &mut self,
        level: Level,
        inputs: &[LtxFileInfo],
        opts: CompactOptions,
    ) -> Result<LtxFileInfo> {
        durable::create_dir_all(&self.meta_dir)
            .with_context(|| format!("create {}", self.meta_dir.display()))?;
        let tmp = self.temp_path(level, "");
        let mut parts = vec![];
        let result = self.merge_into(level, inputs, opts, &tmp, &mut parts);
        for p in parts.iter().chain([&tmp, &self.temp_path(level, "-ck")]) {
            let _ = fs::remove_file(p);
        }
        let out = result?;
        self.remember(&out);
        Ok(out)
    }

    fn merge_into(
        &self,
        level: Level,
        inputs: &[LtxFileInfo],
        opts: CompactOptions,
        tmp: &Path,
        parts: &mut Vec<PathBuf>,
    ) -> Result<LtxFileInfo> {
        let url = self.replica.url();
        let mut sources: Vec<Source> = inputs.iter().cloned().map(Source::Replica).collect();
        let max = self.max_inputs.max(2);
        while sources.len() > max {
            let mut rest = sources.split_off(1);
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(max));
                let group = std::mem::replace(&mut rest, tail);
                if group.len() == 1 {
                    sources.extend(group);
                    continue;
                }
                let part = self.temp_path(level, &format!("-part{}", parts.len()));
                parts.push(part.clone());
                self.compact_sources(&group, &part, CompactOptions::default())?;
                sources.push(Source::Local(part));
            }
        }
        let header = self.compact_sources(&sources, tmp, opts)?;
        let (first, last) = (&inputs[0], &inputs[inputs.len() - 1]);
        if (header.min_txid, header.max_txid) != (first.min, last.max) {
            bail!(
                "{url}: compacting {} gave txids {}-{}",
                span(inputs),
                header.min_txid,
                header.max_txid
            );
        }
        let header = self.verify_output(tmp, header).inspect_err(|_| {
            if !self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                crate::metrics::global().compaction_verify_error(&self.path);
            }
        })?;
        let size = fs::metadata(tmp)
            .with_context(|| format!("stat {}", tmp.display()))?
            .len();
        self.replica
            .put_ltx(
                level,
                header.min_txid,
                header.max_txid,
                header.timestamp_ms,
                tmp,
            )
            .with_context(|| {
                format!(
                    "{url}: upload ltx/{level}/{}",
                    ltx::file_name(header.min_txid, header.max_txid)
                )
            })?;
        Ok(LtxFileInfo {
            level,
            min: header.min_txid,
            max: header.max_txid,
            size,
            created_ms: header.timestamp_ms,
        })
    }

    /// Merges `sources` into the local file `out` (not verified yet); returns its header.
    fn compact_sources(
        &self,
        sources: &[Source],
        out: &Path,
        opts: CompactOptions,
    ) -> Result<Header> {
        let url = self.replica.url();
        let mut readers: Vec<Box<dyn Read + Send>> = Vec::with_capacity(sources.len());
        for s in sources {
            let r: Box<dyn Read + Send> = match s {
                Source::Replica(f) => self
                    .replica
                    .open_ltx(f.level, f.min, f.max)
                    .with_context(|| format!("{url}: open {}", restore::file_label(f)))?,
                Source::Local(p) => Box::new(BufReader::with_capacity(
                    64 * 1024,
                    File::open(p).with_context(|| format!("open {}", p.display()))?,
                )),
            };
            readers.push(Box::new(Cancellable {
                inner: r,
                cancel: self.cancel.clone(),
            }));
        }
        let file = File::create(out).with_context(|| format!("create {}", out.display()))?;
        let (header, _) =
            ltx::compact_with(readers, BufWriter::with_capacity(64 * 1024, file), opts).map_err(
                |e| match &e {
                    ltx::Error::Input { index, .. } if *index < sources.len() => {
                        anyhow!("{url}: {}: {e}", sources[*index].label())
                    }
                    _ => anyhow!("{url}: compact into {}: {e}", out.display()),
                },
            )?;
        Ok(header)
    }

    /// Decodes the merged file end to end before it goes anywhere (file checksum, page
    /// index, and for a snapshot every page and its database checksum). A snapshot without
    /// our database checksums (inputs written by Litestream) is rewritten with them, from
    /// its pages. Returns the final header.
    fn verify_output(&self, tmp: &Path, header: Header) -> Result<Header> {
        let what = || format!("verify compacted {}", tmp.display());
        let open = |p: &Path| -> Result<Cancellable<BufReader<File>>> {
            Ok(Cancellable {
                inner: BufReader::new(File::open(p).with_context(what)?),
                cancel: self.cancel.clone(),
            })
        };
        let verified = ltx::verify(open(tmp)?).with_context(what)?;
        if !header.is_snapshot() || header.ext_checksums.is_some() {
            return Ok(header);
        }
        // A full image: its database checksum is the XOR of its pages.
        let sealed = Header {
            ext_checksums: Some((Checksum(0), verified.pages_checksum)),
            ..header
        };
        let ck_tmp = self.temp_path(Level::SNAPSHOT, "-ck");
        {
            let mut dec = Decoder::new(open(tmp)?).with_context(what)?;
            let mut page = vec![0u8; sealed.page_size as usize];
            let out =
                File::create(&ck_tmp).with_context(|| format!("create {}", ck_tmp.display()))?;
            let mut enc = Encoder::new(BufWriter::with_capacity(64 * 1024, out), &sealed)?;
            while let Some(pgno) = dec.next_page(&mut page).with_context(what)? {
                enc.encode_page(pgno, &page)?;
            }
            dec.finish().with_context(what)?;
            let (_, mut w) = enc.finish(verified.trailer.post_apply_checksum)?;
            w.flush()
                .with_context(|| format!("write {}", ck_tmp.display()))?;
        }
        // The decoder checks the new checksum against the pages once more.
        ltx::verify(open(&ck_tmp)?).with_context(what)?;
        fs::rename(&ck_tmp, tmp).with_context(|| format!("rename {}", ck_tmp.display()))?;
        Ok(sealed)
    }
}

/// A reader that fails once `cancel` is set: how a merge in progress stops at shutdown.
/// Stopping anywhere is safe: outputs are temporary files until uploaded whole, and the
/// next start removes them and compacts again.
struct Cancellable<R> {
    inner: R,
    cancel: Arc<AtomicBool>,
}

impl<R: Read> Read for Cancellable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(CANCELLED));
        }
        self.inner.read(buf)
    }
}

/// The error a cancelled merge ends with (not logged as a failure).
const CANCELLED: &str = "compaction cancelled by shutdown";

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::compact::testutil::{checksum_at, Fixture, MIN, T0};
    use crate::ltx::testutil::{EXT, LITESTREAM};

    /// A cancelled compaction's reads fail at once, whatever they read.
    #[test]
    fn a_cancelled_merge_stops_at_its_next_read() {
        let cancel = Arc::new(AtomicBool::new(false));
        let mut r = Cancellable {
            inner: &[1u8, 2, 3, 4][..],
            cancel: cancel.clone(),
        };
        let mut buf = [0u8; 2];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        cancel.store(true, Ordering::Relaxed);
        assert_eq!(r.read(&mut buf).unwrap_err().to_string(), CANCELLED);
    }

    /// Our own files (with database checksums): L1 in two steps, L2 over them, a snapshot
    /// from the plan, L0 retention; restores stay exact and fully verified throughout.
    #[test]
    fn compaction_levels_snapshot_and_retention_on_our_files() {
        let mut fx = Fixture::new();
        fx.l0(EXT, 1..=4);
        let now = T0 + 60_000;
        let out = fx
            .work
            .compact_level(Level::L1, None, TxId::new(4), now)
            .unwrap();
        assert_eq!(
            out.iter()
                .map(|f| (f.min.get(), f.max.get()))
                .collect::<Vec<_>>(),
            [(1, 4)]
        );
        // Nothing new past level 1: no work (and no request: see the counting test).
        assert!(fx
            .work
            .compact_level(Level::L1, None, TxId::new(4), now)
            .unwrap()
            .is_empty());

        fx.l0(EXT, 5..=10);
        // Written in the current 1-minute window already: too early. (A file replica dates
        // a compacted file with its LTX timestamp, the last input's.)
        let written = fx.work.listing(Level::L1).unwrap()[0].created_ms;
        let in_window = written + 1;
        assert!(window_start(in_window, MIN) <= written);
        assert!(fx
            .work
            .compact_level(Level::L1, Some(MIN), TxId::new(10), in_window)
            .unwrap()
            .is_empty());
        let later = written.max(now) + 120_000;
        let out = fx
            .work
            .compact_level(Level::L1, Some(MIN), TxId::new(10), later)
            .unwrap();
        assert_eq!(
            out.iter()
                .map(|f| (f.min.get(), f.max.get()))
                .collect::<Vec<_>>(),
            [(5, 10)]
        );
        let out = fx
            .work
            .compact_level(Level::new(2).unwrap(), None, TxId::new(10), later)
            .unwrap();
        assert_eq!(
            out.iter()
                .map(|f| (f.min.get(), f.max.get()))
                .collect::<Vec<_>>(),
            [(1, 10)]
        );
        assert!(fx
            .work
            .compact_level(Level::new(3).unwrap(), None, TxId::ZERO, later)
            .unwrap()
            .is_empty());

        // The snapshot: L2 1-a is the plan to a, and becomes L9 1-a stamped now.
        let snap = fx
            .work
            .snapshot(None, TxId::new(10), later)
            .unwrap()
            .unwrap();
        assert_eq!(
            (snap.min.get(), snap.max.get(), snap.created_ms),
            (1, 10, later)
        );
        assert!(fx
            .work
            .snapshot(None, TxId::new(10), later)
            .unwrap()
            .is_none());

        for txid in [1, 4, 7, 10] {
            let (ck, _, unverified) = fx.restore(txid);
            assert_eq!(ck, checksum_at(txid), "txid {txid}");
            assert_eq!(unverified, 0, "txid {txid}");
        }
        let (_, files, _) = fx.restore(10);
        assert_eq!(files, 1, "the snapshot alone");

        // L0 retention an hour later: range 1-4 goes; 5-a holds the newest L0 file, stays.
        let deleted = fx
            .work
            .enforce_l0_retention(MIN, later + 3_600_000)
            .unwrap();
        assert_eq!(deleted, 4);
        let l0: Vec<_> = fx.files().into_iter().filter(|f| f.0 == 0).collect();
        assert_eq!(l0.first(), Some(&(0, 5, 5)));
        // Every txid a remaining file ends at still restores, exactly.
        for txid in [4, 5, 6, 9, 10] {
            assert_eq!(fx.restore(txid).0, checksum_at(txid), "txid {txid}");
        }
    }

    /// A replica Litestream wrote (no database checksums): levels merge, and the snapshot
    /// gains checksums computed from its pages, so a restore from it is verified again.
    #[test]
    fn compacting_a_litestream_replica_seals_its_snapshot() {
        let mut fx = Fixture::new();
        fx.l0(LITESTREAM, 1..=10);
        for (a, b) in [(1, 2), (3, 3), (4, 7), (8, 10)] {
            fx.add(LITESTREAM, 1, a, b);
        }
        fx.add(LITESTREAM, 9, 1, 1);
        let now = T0 + 60_000;
        assert!(fx
            .work
            .compact_level(Level::L1, None, TxId::new(10), now)
            .unwrap()
            .is_empty());
        let l2 = fx
            .work
            .compact_level(Level::new(2).unwrap(), None, TxId::new(10), now)
            .unwrap();
        assert_eq!(
            l2.iter()
                .map(|f| (f.min.get(), f.max.get()))
                .collect::<Vec<_>>(),
            [(1, 10)]
        );
        // Starting at txid 1, it is a full image too: sealed with its checksum.
        let (ck, files, unverified) = fx.restore(10);
        assert_eq!((ck, files, unverified), (checksum_at(10), 1, 0));

        let snap = fx.work.snapshot(None, TxId::new(10), now).unwrap().unwrap();
        assert_eq!((snap.min.get(), snap.max.get()), (1, 10));
        let header = ltx::read_header(
            fx.client
                .open_ltx(Level::SNAPSHOT, TxId::new(1), TxId::new(10))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header.ext_checksums,
            Some((Checksum(0), Checksum(checksum_at(10))))
        );
        assert!(
            header.no_checksum(),
            "NoChecksum, as Litestream 0.5.17 requires"
        );
        assert_eq!(
            (header.wal_offset, header.wal_size, header.node_id),
            (0, 0, 0)
        );
        let (ck, files, unverified) = fx.restore(10);
        assert_eq!((ck, files, unverified), (checksum_at(10), 1, 0));
        for txid in 1..=10 {
            assert_eq!(fx.restore(txid).0, checksum_at(txid), "txid {txid}");
        }
    }

    /// A backlog past the fan-in limit: level 1 gets several files in one run, and a
    /// snapshot over a long level-0 tail (`levels: []`) is reduced locally, one upload.
    #[test]
    fn backlogs_stay_within_the_fan_in_limit() {
        let mut fx = Fixture::new();
        fx.work.max_inputs = 3;
        fx.l0(EXT, 1..=10);
        let snap = fx.work.snapshot(None, TxId::new(10), T0).unwrap().unwrap();
        assert_eq!((snap.min.get(), snap.max.get()), (1, 10));
        assert_eq!(
            fx.files().iter().filter(|f| f.0 == 9).count(),
            1,
            "one upload"
        );
        let leftovers: Vec<_> = fs::read_dir(&fx.work.meta_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let (ck, files, unverified) = fx.restore(10);
        assert_eq!((ck, files, unverified), (checksum_at(10), 1, 0));

        let l1 = fx
            .work
            .compact_level(Level::L1, None, TxId::new(10), T0)
            .unwrap();
        let ranges: Vec<_> = l1.iter().map(|f| (f.min.get(), f.max.get())).collect();
        assert_eq!(ranges, [(1, 3), (4, 6), (7, 9), (10, 10)]);
        for txid in [3, 6, 9] {
            assert_eq!(fx.restore(txid).0, checksum_at(txid));
        }
    }

    #[test]
    fn retention_refuses_deletions_that_break_the_restore_and_keeps_the_files() {
        let mut fx = Fixture::new();
        fx.l0(EXT, 1..=3);
        // Deleting the only file with txid 1 would leave no snapshot to start from.
        let doomed = fx.work.listing(Level::L0).unwrap()[..1].to_vec();
        let err = fx.work.delete(&doomed, "test").unwrap_err();
        assert!(
            format!("{err:#}").contains("would no longer be possible"),
            "{err:#}"
        );
        assert_eq!(fx.files().len(), 3);
    }

    /// Snapshot retention end to end: an old snapshot goes, and the files below the kept one.
    #[test]
    fn snapshot_retention_deletes_below_the_oldest_kept_snapshot() {
        let mut fx = Fixture::new();
        fx.l0(EXT, 1..=5);
        let t1 = T0 + 60_000;
        fx.work
            .compact_level(Level::L1, None, TxId::new(5), t1)
            .unwrap();
        fx.work.snapshot(None, TxId::new(5), t1).unwrap().unwrap();
        fx.l0(EXT, 6..=10);
        let t2 = t1 + 3_600_000;
        fx.work
            .compact_level(Level::L1, None, TxId::new(10), t2)
            .unwrap();
        fx.work.snapshot(None, TxId::new(10), t2).unwrap().unwrap();
        let deleted = fx
            .work
            .enforce_snapshot_retention(MIN * 30, MIN, t2 + 1000)
            .unwrap();
        // L9 1-5 (an hour old); below 1-a: L1 1-5 (level 1's last, 6-a, stays), L0 1..9.
        assert_eq!(deleted, 1 + 1 + 9);
        assert_eq!(fx.files(), [(0, 10, 10), (1, 6, 10), (9, 1, 10)]);
        assert_eq!(fx.restore(10).0, checksum_at(10));
    }
}
