//! Compaction, snapshots and retention: one `compact` thread per store keeps every replica
//! from growing one level-0 file per sync forever, and keeps restores short.
//!
//! What it does, per database, as Litestream 0.5.17 does it (notes §8.5):
//! - Level L (1..=8, one per `levels:` entry) every `interval`, on wall-clock boundaries
//!   (`now` rounded down to the interval, plus the interval), the first time on the first
//!   boundary after the database is added (so a restart is not a burst): the contiguous run
//!   of level L-1 files after the newest level-L file merges into one level-L file. Skipped ("compaction too early") when the newest level-L file was
//!   written in the current interval already, as after a restart.
//! - Level 9 every `snapshot.interval`: the newest snapshot plus the files after it (the
//!   restore plan to the newest TXID in the replica, any level) merge into one file with min
//!   TXID 1, stamped with the time it was taken. Its max is therefore always a TXID the
//!   replica confirmed. When none of the inputs carried our database checksums (a replica
//!   Litestream started), the snapshot gets them: it is a full image, so its checksum is the
//!   XOR of its pages.
//! - L0 retention every `l0-retention-check-interval` and after each level-1 compaction:
//!   level-0 files older than `l0-retention` are deleted once a level-1 file covers them,
//!   a whole level-1 range at a time and oldest first (so every TXID a remaining file ends
//!   at stays restorable), never the newest level-0 file (Litestream reads the replica's
//!   position from level 0).
//! - Snapshot retention after each snapshot tick: snapshots older than `snapshot.retention`
//!   are deleted, keeping the newest; then files of levels 1..=8 entirely below the oldest
//!   kept snapshot (keeping each level's last file), and level-0 files below it that are
//!   older than `l0-retention` (not the newest; so a config with `levels: []` still stops
//!   growing).
//!
//! Durability first: every merge reads its inputs through their checksums, the output is
//! decoded and verified locally before it is uploaded, nothing is deleted before the file
//! that replaces it is stored, and before any deletion the restore planner must reach the
//! newest TXID from what would remain; otherwise nothing is deleted and the refusal is logged.
//!
//! Requests: listings are kept between runs. Levels 1..=8 are written only by this thread,
//! so their listing is read once and then kept up to date by our own puts and deletes;
//! level 0 (written by the database thread) is listed before each level-1 compaction, and
//! every level once per snapshot. A run with nothing new (the database's replicated TXID, from
//! the registry, is not past what the level holds) makes no request at all, so an idle
//! database costs nothing. On S3 one level-1 compaction of n files is 1 LIST, n GETs and 1
//! PUT; a level-L compaction (L > 1) n GETs and 1 PUT; a snapshot 10 LISTs, a GET per plan
//! file and 1 PUT (multipart when large); retention one DeleteObjects per level with files to
//! delete. Any error drops the kept listings, so the next run starts from a fresh LIST.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::config::Config;
use crate::durable;
use crate::ltx::{self, Checksum, CompactOptions, Decoder, Encoder, Header, TxId, CHECKSUM_FLAG};
use crate::registry::Registry;
use crate::replica::{LtxFileInfo, ReplicaClient, SNAPSHOT_LEVEL};
use crate::restore;
use crate::timefmt;

/// Most files merged into one output. A backlog larger than this (a replica that grew for a
/// long time before compaction existed) becomes several outputs in one run, so open inputs
/// (file descriptors, S3 download threads and their buffers) stay bounded.
pub const MAX_INPUTS: usize = 64;

/// Levels a replica can hold, 0 to 9.
const LEVELS: usize = SNAPSHOT_LEVEL as usize + 1;

/// How often a database whose replica position is not known yet (its thread has not
/// confirmed anything) is looked at again.
const NOT_READY_RETRY: Duration = Duration::from_secs(1);

/// The compaction settings of a daemon (`levels`, `snapshot`, `l0-retention`,
/// `l0-retention-check-interval`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Compaction interval of level 1, 2, ... (`levels[i].interval` is level i + 1).
    pub levels: Vec<Duration>,
    pub snapshot_interval: Duration,
    pub snapshot_retention: Duration,
    pub l0_retention: Duration,
    pub l0_retention_check_interval: Duration,
}

impl Schedule {
    /// The schedule a config asks for.
    pub fn from_config(config: &Config) -> Schedule {
        Schedule {
            levels: config.levels.iter().map(|l| l.interval).collect(),
            snapshot_interval: config.snapshot.interval,
            snapshot_retention: config.snapshot.retention,
            l0_retention: config.l0_retention,
            l0_retention_check_interval: config.l0_retention_check_interval,
        }
    }
}

impl Default for Schedule {
    /// Litestream's defaults: L1 30 s, L2 5 min, L3 1 h, snapshots daily kept a day, L0 kept
    /// 5 min after compaction, checked every 15 s.
    fn default() -> Self {
        Schedule::from_config(&Config::default())
    }
}

/// The first wall-clock boundary of `interval` after `now_ms` (Go's
/// `now.Truncate(interval).Add(interval)`).
pub fn next_boundary(now_ms: i64, interval: Duration) -> i64 {
    let step = (interval.as_millis() as i64).max(1);
    now_ms.div_euclid(step) * step + step
}

/// A duration as Go prints it (`30s`, `5m0s`, `1h0m0s`, `1.5s`, `500ms`), as in Litestream's
/// log lines.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let secs = ms % 60_000;
    let s = if secs % 1000 == 0 {
        format!("{}s", secs / 1000)
    } else {
        let frac = format!("{:03}", secs % 1000);
        format!("{}.{}s", secs / 1000, frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => s,
        (0, _) => format!("{m}m{s}"),
        _ => format!("{h}h{m}m{s}"),
    }
}

/// `now_ms` rounded down to a boundary of `interval`.
fn window_start(now_ms: i64, interval: Duration) -> i64 {
    let step = (interval.as_millis() as i64).max(1);
    now_ms.div_euclid(step) * step
}

/// The contiguous run of `src` files (sorted by min, max) that a compaction after `after`
/// merges: starting at the first file whose min is past `after` (a gap before it is left
/// as the source level has it; a restore bridges it with a snapshot), each next file
/// starting right after the previous one, at most `limit` files.
pub fn next_run(src: &[LtxFileInfo], after: TxId, limit: usize) -> Vec<LtxFileInfo> {
    let mut run: Vec<LtxFileInfo> = vec![];
    for f in src.iter().filter(|f| f.min > after) {
        if run.len() >= limit {
            break;
        }
        match run.last() {
            None => run.push(f.clone()),
            Some(prev) if prev.max.next() == Some(f.min) => run.push(f.clone()),
            // Another file with the same start as one already taken (not written by us).
            Some(prev) if f.min <= prev.max => continue,
            Some(_) => break,
        }
    }
    run
}

/// Level-0 files L0 retention deletes: oldest first, whole level-1 ranges at a time, each
/// file created at or before `cutoff_ms`; never the newest level-0 file. Stops at the first
/// range that does not qualify, so what remains of level 0 starts right after a level-1
/// file ends.
pub fn l0_expired(l0: &[LtxFileInfo], l1: &[LtxFileInfo], cutoff_ms: i64) -> Vec<LtxFileInfo> {
    let Some(newest) = l0.iter().map(|f| f.max).max() else {
        return vec![];
    };
    let mut doomed = vec![];
    let mut i = 0;
    while i < l0.len() {
        let Some(cover) = l1.iter().find(|c| c.min <= l0[i].min && l0[i].max <= c.max) else {
            break;
        };
        let group: Vec<&LtxFileInfo> = l0[i..]
            .iter()
            .take_while(|f| f.min >= cover.min && f.max <= cover.max)
            .collect();
        let ok = group
            .iter()
            .all(|f| f.max != newest && f.created_ms <= cutoff_ms);
        if !ok {
            break;
        }
        i += group.len();
        doomed.extend(group.into_iter().cloned());
    }
    doomed
}

/// What snapshot retention deletes from `files` (every level): snapshots created before
/// `snapshot_cutoff_ms` except the newest; then, below the oldest kept snapshot's max, the
/// files of levels 1..=8 except each level's last, and level-0 files created at or before
/// `l0_cutoff_ms` except the newest level-0 file.
pub fn snapshot_expired(
    files: &[LtxFileInfo],
    snapshot_cutoff_ms: i64,
    l0_cutoff_ms: i64,
) -> Vec<LtxFileInfo> {
    let mut snapshots: Vec<&LtxFileInfo> =
        files.iter().filter(|f| f.level == SNAPSHOT_LEVEL).collect();
    snapshots.sort_by_key(|f| (f.max, f.min));
    let Some(&newest) = snapshots.last() else {
        return vec![];
    };
    let mut doomed: Vec<LtxFileInfo> = snapshots
        .iter()
        .filter(|f| **f != newest && f.created_ms < snapshot_cutoff_ms)
        .map(|f| (*f).clone())
        .collect();
    let oldest_kept = snapshots
        .iter()
        .filter(|f| !doomed.contains(f))
        .map(|f| f.max)
        .min()
        .unwrap_or(newest.max);
    for level in 0..SNAPSHOT_LEVEL {
        let at: Vec<&LtxFileInfo> = files.iter().filter(|f| f.level == level).collect();
        let Some(last) = at.iter().map(|f| f.max).max() else {
            continue;
        };
        doomed.extend(
            at.into_iter()
                .filter(|f| f.max < oldest_kept && f.max != last)
                .filter(|f| level > 0 || f.created_ms <= l0_cutoff_ms)
                .cloned(),
        );
    }
    doomed
}

/// Proves that a restore to the newest TXID of `files` is still possible once `doomed` is
/// gone, by running the restore planner on what would remain.
pub fn check_deletable(files: &[LtxFileInfo], doomed: &[LtxFileInfo]) -> Result<()> {
    let Some(latest) = files.iter().map(|f| f.max).max() else {
        return Ok(());
    };
    let remaining: Vec<LtxFileInfo> = files
        .iter()
        .filter(|f| !doomed.contains(f))
        .cloned()
        .collect();
    restore::plan_files(&remaining, latest)
        .map(|_| ())
        .with_context(|| format!("a restore to txid {latest} would no longer be possible"))
}

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
    listings: [Option<Vec<LtxFileInfo>>; LEVELS],
    /// Most inputs one merge opens ([`MAX_INPUTS`]; smaller in tests).
    max_inputs: usize,
    /// Set at shutdown: every read of a merge fails from then on, so the work in progress
    /// ends within one buffer instead of holding up the exit (see [`Compactor::cancel`]).
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
    fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> DbCompaction {
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
    fn listing(&mut self, level: u8) -> Result<Vec<LtxFileInfo>> {
        if let Some(files) = &self.listings[level as usize] {
            return Ok(files.clone());
        }
        self.relist(level)
    }

    /// LISTs `level` and keeps the result.
    fn relist(&mut self, level: u8) -> Result<Vec<LtxFileInfo>> {
        let files = self
            .replica
            .ltx_files(level)
            .with_context(|| format!("{}: list level {level}", self.replica.url()))?;
        self.listings[level as usize] = Some(files.clone());
        Ok(files)
    }

    /// Every file of every level (listing the levels not known yet).
    fn all_files(&mut self) -> Result<Vec<LtxFileInfo>> {
        let mut all = vec![];
        for level in 0..=SNAPSHOT_LEVEL {
            all.extend(self.listing(level)?);
        }
        Ok(all)
    }

    /// Records a file we stored.
    fn remember(&mut self, f: &LtxFileInfo) {
        if let Some(files) = self.listings[f.level as usize].as_mut() {
            files.retain(|g| (g.min, g.max) != (f.min, f.max));
            files.push(f.clone());
            files.sort_by_key(|g| (g.min, g.max));
        }
    }

    /// Newest max TXID at `level` (0 when empty).
    fn level_max(&mut self, level: u8) -> Result<TxId> {
        Ok(self
            .listing(level)?
            .iter()
            .map(|f| f.max)
            .max()
            .unwrap_or(TxId(0)))
    }

    /// Compacts level `level - 1` into `level` (see the module docs). `replicated` is the
    /// newest TXID the database thread knows the replica holds; when a level-1 compaction
    /// would find nothing past it, no request is made. With `interval`, the run is skipped
    /// if the level's newest file was written in the current interval. Returns the files
    /// written.
    pub fn compact_level(
        &mut self,
        level: u8,
        interval: Option<Duration>,
        replicated: TxId,
        now_ms: i64,
    ) -> Result<Vec<LtxFileInfo>> {
        if level == 0 || level >= SNAPSHOT_LEVEL {
            bail!("level {level} is not a compaction level (1..=8)");
        }
        let dst = self.listing(level)?;
        let dst_max = dst.iter().map(|f| f.max).max().unwrap_or(TxId(0));
        if replicated <= dst_max {
            return Ok(vec![]);
        }
        if level > 1 && self.level_max(level - 1)? <= dst_max {
            return Ok(vec![]);
        }
        if let (Some(interval), Some(newest)) = (interval, dst.iter().map(|f| f.created_ms).max()) {
            if newest >= window_start(now_ms, interval) {
                log::debug!(
                    "db={} level={level}: compaction too early (newest file written {})",
                    self.db(),
                    timefmt::rfc3339_ms(newest)
                );
                return Ok(vec![]);
            }
        }
        // Level 0 grows behind our back (the database thread uploads): list it afresh.
        let src = if level == 1 {
            self.relist(0)?
        } else {
            self.listing(level - 1)?
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
                "msg=\"compaction complete\" db={} level={level} txid.min={} txid.max={} size={} files={}",
                self.db(),
                out.min,
                out.max,
                out.size,
                run.len()
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
        let snapshots = self.listing(SNAPSHOT_LEVEL)?;
        let newest = snapshots.iter().max_by_key(|f| (f.max, f.created_ms));
        if newest.is_some_and(|s| s.max >= replicated) {
            return Ok(None);
        }
        if let (Some(interval), Some(s)) = (interval, newest) {
            if s.created_ms >= window_start(now_ms, interval) {
                log::debug!("db={}: snapshot too early", self.db());
                return Ok(None);
            }
        }
        // The planner needs every level as it is now: list them all (also refreshing what
        // we keep, against changes made by anyone else).
        for level in 0..=SNAPSHOT_LEVEL {
            self.relist(level)?;
        }
        let files = self.all_files()?;
        let Some(latest) = files.iter().map(|f| f.max).max() else {
            return Ok(None);
        };
        if files
            .iter()
            .any(|f| f.level == SNAPSHOT_LEVEL && f.max == latest)
        {
            return Ok(None);
        }
        let plan = restore::plan_files(&files, latest)
            .with_context(|| format!("{}: plan the snapshot", self.replica.url()))?;
        let opts = CompactOptions {
            timestamp_ms: Some(now_ms),
        };
        let out = self.merge(SNAPSHOT_LEVEL, &plan.files, opts)?;
        log::info!(
            "msg=\"snapshot complete\" db={} txid={} size={} files={}",
            self.db(),
            out.max,
            out.size,
            plan.files.len()
        );
        Ok(Some(out))
    }

    /// L0 retention (see the module docs); returns how many files it deleted.
    pub fn enforce_l0_retention(&mut self, retention: Duration, now_ms: i64) -> Result<usize> {
        let l1 = self.listing(1)?;
        if l1.is_empty() {
            return Ok(0);
        }
        let l0 = self.listing(0)?;
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
        if self.listing(SNAPSHOT_LEVEL)?.is_empty() {
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
                "msg=\"retention refused\" db={} reason={why} files={} first={}: {e:#}",
                self.db(),
                doomed.len(),
                span(doomed)
            );
            return Err(e.context(format!(
                "{why}: refused to delete {} files ({})",
                doomed.len(),
                span(doomed)
            )));
        }
        let mut by_level: BTreeMap<u8, Vec<LtxFileInfo>> = BTreeMap::new();
        for f in doomed {
            by_level.entry(f.level).or_default().push(f.clone());
        }
        let mut deleted = 0;
        for (level, files) in by_level {
            let pairs: Vec<(TxId, TxId)> = files.iter().map(|f| (f.min, f.max)).collect();
            let result = self.replica.delete_ltx(level, &pairs);
            // Even a failed batch may have deleted some: forget them all (a smaller listing
            // is only ever more cautious), and list afresh next time.
            if let Some(kept) = self.listings[level as usize].as_mut() {
                kept.retain(|f| !files.contains(f));
            }
            result.with_context(|| format!("{}: delete {}", self.replica.url(), span(&files)))?;
            deleted += files.len();
            log::info!(
                "msg=\"retention deleted {} files\" db={} reason={why} level={level} txid.min={} txid.max={}",
                files.len(),
                self.db(),
                files.first().map_or(TxId(0), |f| f.min),
                files.last().map_or(TxId(0), |f| f.max),
            );
        }
        Ok(deleted)
    }

    /// Where a merge is written before it is uploaded.
    fn temp_path(&self, level: u8, suffix: &str) -> PathBuf {
        self.meta_dir.join(format!(".compact-{level}{suffix}.tmp"))
    }

    /// Merges `inputs` into one file at `level`: into a temporary file, verified, uploaded.
    /// More than [`MAX_INPUTS`] inputs are reduced first: everything after the first input
    /// (a snapshot, read once) merges in groups into local files, which then take its place.
    fn merge(
        &mut self,
        level: u8,
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
        level: u8,
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
        let header = self.verify_output(tmp, header)?;
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
        let mut dec = Decoder::new(open(tmp)?).with_context(what)?;
        let mut page = vec![0u8; header.page_size as usize];
        let mut xor = 0u64;
        while let Some(pgno) = dec.next_page(&mut page).with_context(what)? {
            xor ^= ltx::page_checksum(pgno, &page).0;
        }
        let trailer = dec.finish().with_context(what)?;
        if !header.is_snapshot() || header.ext_checksums.is_some() {
            return Ok(header);
        }
        // A full image: its database checksum is the XOR of its pages.
        let sealed = Header {
            ext_checksums: Some((Checksum(0), Checksum(CHECKSUM_FLAG | xor))),
            ..header
        };
        let ck_tmp = self.temp_path(SNAPSHOT_LEVEL, "-ck");
        {
            let mut dec = Decoder::new(open(tmp)?).with_context(what)?;
            let out =
                File::create(&ck_tmp).with_context(|| format!("create {}", ck_tmp.display()))?;
            let mut enc = Encoder::new(BufWriter::with_capacity(64 * 1024, out), &sealed)?;
            while let Some(pgno) = dec.next_page(&mut page).with_context(what)? {
                enc.encode_page(pgno, &page)?;
            }
            dec.finish().with_context(what)?;
            let (_, mut w) = enc.finish(trailer.post_apply_checksum)?;
            w.flush()
                .with_context(|| format!("write {}", ck_tmp.display()))?;
        }
        // The decoder checks the new checksum against the pages once more.
        let mut dec = Decoder::new(open(&ck_tmp)?).with_context(what)?;
        while dec.next_page(&mut page).with_context(what)?.is_some() {}
        dec.finish().with_context(what)?;
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

/// One kind of scheduled work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    /// Compaction into level 1..=8.
    Level(u8),
    /// A snapshot, then snapshot retention.
    Snapshot,
    /// L0 retention.
    L0Retention,
}

impl Task {
    fn name(self) -> String {
        match self {
            Task::Level(l) => format!("level {l} compaction"),
            Task::Snapshot => "snapshot".into(),
            Task::L0Retention => "l0 retention".into(),
        }
    }
}

/// A database the thread looks after.
struct Entry {
    work: DbCompaction,
    /// When each task is next due, in ms since the epoch.
    due: BTreeMap<Task, i64>,
    /// Set once the database thread has confirmed a position, after which every task runs
    /// once at once (catching up after a restart), then on its schedule.
    started: bool,
    /// The last error of each failing task.
    errors: BTreeMap<Task, String>,
}

/// Messages to the compactor thread.
enum Command {
    Add {
        path: PathBuf,
        replica: Arc<dyn ReplicaClient>,
        meta_dir: PathBuf,
    },
    Remove(PathBuf),
    Stop,
}

/// The running `compact` thread of a store.
pub struct Compactor {
    tx: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    /// Shared with the thread and every [`DbCompaction`]: set by [`Compactor::cancel`].
    cancel: Arc<AtomicBool>,
}

impl Compactor {
    /// Starts the thread. It reads each database's replicated TXID from `registry` and
    /// reports failures in its `compaction_error`.
    pub fn start(schedule: Schedule, registry: Arc<Registry>) -> std::io::Result<Compactor> {
        // Bounded: one add or remove per registration change; a sender waits for room only
        // while the thread is in the middle of a compaction and 1024 changes are queued.
        let (tx, rx) = bounded(1024);
        let cancel = Arc::new(AtomicBool::new(false));
        let worker_cancel = cancel.clone();
        let thread = thread::Builder::new()
            .name("compact".into())
            .spawn(move || {
                Worker {
                    schedule,
                    registry,
                    dbs: BTreeMap::new(),
                    cancel: worker_cancel,
                }
                .run(rx)
            })?;
        Ok(Compactor {
            tx,
            thread: Some(thread),
            cancel,
        })
    }

    /// Starts looking after a database.
    pub fn add(&self, path: &Path, replica: Arc<dyn ReplicaClient>, meta_dir: &Path) {
        let _ = self.tx.send(Command::Add {
            path: path.to_path_buf(),
            replica,
            meta_dir: meta_dir.to_path_buf(),
        });
    }

    /// Stops looking after a database (after the work in progress, if any).
    pub fn remove(&self, path: &Path) {
        let _ = self.tx.send(Command::Remove(path.to_path_buf()));
    }

    /// Stops the work in progress at its next read and the thread after it, without
    /// waiting: at shutdown only the final sync is worth waiting for. Compaction is
    /// idempotent (a half-written output is a temporary file, removed at the next start;
    /// deletions only ever follow a proof), so it simply runs again after the restart.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Command::Stop);
    }

    /// Stops the thread, waiting up to `timeout` for it to end; past it (an upload or a
    /// listing in flight, which reads cannot interrupt), it is abandoned with the process.
    pub fn stop(&mut self, timeout: Duration) {
        let _ = self.tx.send(Command::Stop);
        let Some(t) = self.thread.take() else { return };
        let deadline = Instant::now() + timeout;
        while !t.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::info!(
                "msg=\"compaction interrupted by shutdown; it runs again at the next start\""
            );
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
    }
}

struct Worker {
    schedule: Schedule,
    registry: Arc<Registry>,
    dbs: BTreeMap<PathBuf, Entry>,
    /// See [`Compactor::cancel`].
    cancel: Arc<AtomicBool>,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Command>) {
        let s = &self.schedule;
        for (i, interval) in s.levels.iter().enumerate() {
            log::info!(
                "msg=\"starting compaction monitor\" level={} interval={}",
                i + 1,
                go_duration(*interval)
            );
        }
        log::info!(
            "msg=\"starting compaction monitor\" level={SNAPSHOT_LEVEL} interval={} retention={}",
            go_duration(s.snapshot_interval),
            go_duration(s.snapshot_retention)
        );
        if !s.levels.is_empty() {
            log::info!(
                "msg=\"starting L0 retention monitor\" interval={} retention={}",
                go_duration(s.l0_retention_check_interval),
                go_duration(s.l0_retention)
            );
        }
        loop {
            let now = timefmt::now_ms();
            let next = self
                .dbs
                .values()
                .flat_map(|e| e.due.values().copied())
                .min();
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis((t - now).max(0) as u64)
            });
            match rx.recv_timeout(wait) {
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Commands first: a stop or removal is not held up by a backlog of work.
            while let Ok(cmd) = rx.try_recv() {
                if matches!(cmd, Command::Stop) {
                    return;
                }
                self.handle(cmd);
            }
            self.run_due();
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add {
                path,
                replica,
                meta_dir,
            } => {
                // Each task first runs on its next interval boundary, as Litestream's: a
                // restart of many databases does not begin with a burst of requests, and a
                // level already written in this interval is not rewritten.
                let now = timefmt::now_ms();
                let work =
                    DbCompaction::new(&path, replica, &meta_dir).with_cancel(self.cancel.clone());
                let due = self
                    .tasks()
                    .into_iter()
                    .map(|t| (t, self.next_due(t, now)))
                    .collect();
                self.dbs.insert(
                    path,
                    Entry {
                        work,
                        due,
                        started: false,
                        errors: BTreeMap::new(),
                    },
                );
            }
            Command::Remove(path) => {
                self.dbs.remove(&path);
            }
            Command::Stop => {}
        }
    }

    /// The tasks of every database, in the order they run when due together.
    fn tasks(&self) -> Vec<Task> {
        let mut tasks: Vec<Task> = (1..=self.schedule.levels.len() as u8)
            .map(Task::Level)
            .collect();
        tasks.push(Task::Snapshot);
        if !self.schedule.levels.is_empty() {
            tasks.push(Task::L0Retention);
        }
        tasks
    }

    /// When `task` is next due after `now`.
    fn next_due(&self, task: Task, now: i64) -> i64 {
        match task {
            Task::Level(l) => next_boundary(now, self.schedule.levels[l as usize - 1]),
            Task::Snapshot => next_boundary(now, self.schedule.snapshot_interval),
            Task::L0Retention => now + self.schedule.l0_retention_check_interval.as_millis() as i64,
        }
    }

    fn run_due(&mut self) {
        let paths: Vec<PathBuf> = self.dbs.keys().cloned().collect();
        for path in paths {
            let now = timefmt::now_ms();
            let replicated = self
                .registry
                .get(&path)
                .map_or(TxId(0), |v| v.replicated_txid);
            let tasks = self.tasks();
            let Some(entry) = self.dbs.get_mut(&path) else {
                continue;
            };
            if !entry.started {
                if replicated == TxId(0) {
                    // The database thread has not confirmed anything yet: look again soon.
                    let retry = now + NOT_READY_RETRY.as_millis() as i64;
                    for due in entry.due.values_mut() {
                        *due = (*due).max(retry);
                    }
                    continue;
                }
                entry.started = true;
            }
            let due: Vec<Task> = tasks
                .into_iter()
                .filter(|t| entry.due.get(t).is_some_and(|&d| d <= now))
                .collect();
            let mut l1_wrote = false;
            for task in due {
                if self.cancel.load(Ordering::Relaxed) {
                    return;
                }
                let now = timefmt::now_ms();
                let result = self.run_task(&path, task, replicated, now, &mut l1_wrote);
                let next = self.next_due(task, now);
                let Some(entry) = self.dbs.get_mut(&path) else {
                    break;
                };
                entry.due.insert(task, next);
                match result {
                    Ok(()) => {
                        if entry.errors.remove(&task).is_some() {
                            log::info!("db={}: {} recovered", path.display(), task.name());
                        }
                    }
                    Err(_) if self.cancel.load(Ordering::Relaxed) => return,
                    Err(e) => {
                        let msg = format!("{}: {e:#}", task.name());
                        if entry.errors.get(&task) != Some(&msg) {
                            log::error!("db={}: {msg}", path.display());
                        }
                        entry.errors.insert(task, msg);
                        entry.work.forget_listings();
                    }
                }
                let error = entry.errors.values().next().cloned();
                self.registry.update(&path, |v| v.compaction_error = error);
            }
        }
    }

    fn run_task(
        &mut self,
        path: &Path,
        task: Task,
        replicated: TxId,
        now: i64,
        l1_wrote: &mut bool,
    ) -> Result<()> {
        let schedule = self.schedule.clone();
        let Some(entry) = self.dbs.get_mut(path) else {
            return Ok(());
        };
        let work = &mut entry.work;
        match task {
            Task::Level(level) => {
                let interval = schedule.levels[level as usize - 1];
                let written = work.compact_level(level, Some(interval), replicated, now)?;
                if level == 1 && !written.is_empty() {
                    *l1_wrote = true;
                    work.enforce_l0_retention(schedule.l0_retention, now)?;
                }
            }
            Task::Snapshot => {
                work.snapshot(Some(schedule.snapshot_interval), replicated, now)?;
                work.enforce_snapshot_retention(
                    schedule.snapshot_retention,
                    schedule.l0_retention,
                    now,
                )?;
            }
            Task::L0Retention => {
                if !*l1_wrote {
                    work.enforce_l0_retention(schedule.l0_retention, now)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::testutil::{EXT, LITESTREAM, README_TABLE};
    use crate::replica::file::FileReplicaClient;
    use std::time::UNIX_EPOCH;

    /// A file replica in a temp dir, and its compaction state.
    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        client: Arc<dyn ReplicaClient>,
        work: DbCompaction,
    }

    /// Base of the fake clock: files are "written" at T0 + their txid seconds.
    const T0: i64 = 1_800_000_000_000;
    const MIN: Duration = Duration::from_secs(60);

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("replica");
            let client: Arc<dyn ReplicaClient> =
                Arc::new(FileReplicaClient::new("file:///replica", &root));
            let work = DbCompaction::new(
                &dir.path().join("db"),
                client.clone(),
                &dir.path().join("meta"),
            );
            Fixture {
                _dir: dir,
                root,
                client,
                work,
            }
        }

        /// Copies `fixture`'s level-`level` file min-max in, dated T0 + max seconds.
        fn add(&self, fixture: &str, level: u8, min: u64, max: u64) {
            let name = ltx::file_name(TxId(min), TxId(max));
            let dir = self.root.join("ltx").join(level.to_string());
            fs::create_dir_all(&dir).unwrap();
            fs::copy(format!("{fixture}/{level}/{name}"), dir.join(&name)).unwrap();
            let t = UNIX_EPOCH + Duration::from_millis((T0 + max as i64 * 1000) as u64);
            File::options()
                .write(true)
                .open(dir.join(&name))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }

        fn l0(&self, fixture: &str, txids: std::ops::RangeInclusive<u64>) {
            for t in txids {
                self.add(fixture, 0, t, t);
            }
        }

        /// `(level, min, max)` of every file in the replica.
        fn files(&self) -> Vec<(u8, u64, u64)> {
            restore::list_all(self.client.as_ref())
                .unwrap()
                .iter()
                .map(|f| (f.level, f.min.0, f.max.0))
                .collect()
        }

        /// Restores at `txid` and returns (database checksum, files applied, unverified).
        fn restore(&self, txid: u64) -> (u64, usize, usize) {
            let plan = restore::plan(self.client.as_ref(), restore::Target::TxId(TxId(txid)))
                .unwrap_or_else(|e| panic!("plan {txid}: {e:#}"));
            let out = self._dir.path().join(format!("restored-{txid}.db"));
            let r = restore::apply(self.client.as_ref(), &plan, &out, true)
                .unwrap_or_else(|e| panic!("restore {txid}: {e:#}"));
            (r.checksum.0, r.files, r.unverified_files)
        }
    }

    fn checksum_at(txid: u64) -> u64 {
        README_TABLE[txid as usize - 1].3
    }

    fn info(level: u8, min: u64, max: u64, created_ms: i64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min: TxId(min),
            max: TxId(max),
            size: 1,
            created_ms,
        }
    }

    /// A database added (at startup or by `/register`) waits for each task's next interval
    /// boundary: a restart of many databases is not a burst of compactions.
    #[test]
    fn an_added_database_first_compacts_on_the_next_boundaries() {
        let fx = Fixture::new();
        let mut worker = Worker {
            schedule: Schedule::default(),
            registry: Arc::new(Registry::default()),
            dbs: BTreeMap::new(),
            cancel: Arc::default(),
        };
        let before = timefmt::now_ms();
        worker.handle(Command::Add {
            path: "/db".into(),
            replica: fx.client.clone(),
            meta_dir: fx._dir.path().join("meta"),
        });
        let after = timefmt::now_ms();
        let due = &worker.dbs[Path::new("/db")].due;
        assert_eq!(due.len(), worker.tasks().len());
        for (task, &at) in due {
            let earliest = worker.next_due(*task, before);
            assert!(
                at >= earliest && at <= worker.next_due(*task, after) && at > after,
                "{task:?} due at {at}, now {after}"
            );
        }
        let s = &worker.schedule;
        assert!(due[&Task::Level(3)] >= next_boundary(before, s.levels[2]));
        assert!(due[&Task::Snapshot] >= next_boundary(before, s.snapshot_interval));
    }

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

    #[test]
    fn boundaries_are_wall_clock_aligned() {
        let s = Duration::from_secs(30);
        assert_eq!(next_boundary(61_000, s), 90_000);
        assert_eq!(next_boundary(60_000, s), 90_000);
        assert_eq!(window_start(89_999, s), 60_000);
        assert_eq!(next_boundary(5, Duration::ZERO), 6);
        let go = |ms| go_duration(Duration::from_millis(ms));
        assert_eq!(
            [
                go(500),
                go(1500),
                go(30_000),
                go(300_000),
                go(3_600_000),
                go(86_400_000)
            ],
            ["500ms", "1.5s", "30s", "5m0s", "1h0m0s", "24h0m0s"]
        );
    }

    #[test]
    fn a_run_is_contiguous_after_the_destination_and_bounded() {
        let src: Vec<_> = [(1, 1), (2, 2), (3, 3), (5, 5), (6, 6)]
            .iter()
            .map(|&(a, b)| info(0, a, b, 0))
            .collect();
        let maxes = |r: Vec<LtxFileInfo>| r.iter().map(|f| f.max.0).collect::<Vec<_>>();
        assert_eq!(maxes(next_run(&src, TxId(0), 64)), [1, 2, 3]);
        assert_eq!(maxes(next_run(&src, TxId(1), 2)), [2, 3]);
        // After the gap at 4 (bridged by a snapshot in the replica), the run starts at 5.
        assert_eq!(maxes(next_run(&src, TxId(3), 64)), [5, 6]);
        assert!(next_run(&src, TxId(6), 64).is_empty());
    }

    #[test]
    fn l0_retention_deletes_whole_old_level_1_ranges_but_never_the_newest() {
        let l0: Vec<_> = (1..=9).map(|t| info(0, t, t, t as i64)).collect();
        let l1 = vec![info(1, 1, 3, 3), info(1, 4, 6, 6), info(1, 7, 9, 9)];
        let maxes = |v: Vec<LtxFileInfo>| v.iter().map(|f| f.max.0).collect::<Vec<_>>();
        assert_eq!(maxes(l0_expired(&l0, &l1, 100)), [1, 2, 3, 4, 5, 6]);
        // File 5 is too young: its whole range stays, and everything after it.
        assert_eq!(maxes(l0_expired(&l0, &l1, 4)), [1, 2, 3]);
        // Not covered by level 1 (yet): kept.
        assert!(l0_expired(&l0, &l1[1..], 100).is_empty());
        assert!(l0_expired(&l0, &[], 100).is_empty());
    }

    #[test]
    fn snapshot_retention_keeps_the_newest_snapshot_and_what_it_needs() {
        let files = vec![
            info(9, 1, 3, 10),
            info(9, 1, 6, 20),
            info(9, 1, 9, 30),
            info(1, 1, 3, 3),
            info(1, 4, 6, 6),
            info(1, 7, 9, 9),
            info(2, 1, 9, 9),
            info(0, 5, 5, 5),
            info(0, 8, 8, 8),
            info(0, 9, 9, 9),
        ];
        let names = |v: Vec<LtxFileInfo>| {
            v.iter()
                .map(|f| (f.level, f.min.0, f.max.0))
                .collect::<Vec<_>>()
        };
        // Snapshots before 25 expire: 1-3 and 1-6; the oldest kept is 1-9. Below 9: L1 1-3
        // and 4-6 (7-9 is level 1's last), L0 5 and 8 (old enough; 9 is the newest).
        assert_eq!(
            names(snapshot_expired(&files, 25, 100)),
            [
                (9, 1, 3),
                (9, 1, 6),
                (0, 5, 5),
                (0, 8, 8),
                (1, 1, 3),
                (1, 4, 6)
            ]
        );
        // Young level-0 files stay.
        assert_eq!(
            names(snapshot_expired(&files, 25, 6)),
            [(9, 1, 3), (9, 1, 6), (0, 5, 5), (1, 1, 3), (1, 4, 6)]
        );
        // Everything is younger than the retention: the oldest kept is 1-3, nothing below it.
        assert!(snapshot_expired(&files, 0, 100).is_empty());
        // The newest snapshot is kept however old.
        let only = vec![info(9, 1, 9, 1), info(0, 9, 9, 9)];
        assert!(snapshot_expired(&only, 1000, 1000).is_empty());
    }

    /// Our own files (with database checksums): L1 in two steps, L2 over them, a snapshot
    /// from the plan, L0 retention; restores stay exact and fully verified throughout.
    #[test]
    fn compaction_levels_snapshot_and_retention_on_our_files() {
        let mut fx = Fixture::new();
        fx.l0(EXT, 1..=4);
        let now = T0 + 60_000;
        let out = fx.work.compact_level(1, None, TxId(4), now).unwrap();
        assert_eq!(
            out.iter().map(|f| (f.min.0, f.max.0)).collect::<Vec<_>>(),
            [(1, 4)]
        );
        // Nothing new past level 1: no work (and no request: see the counting test).
        assert!(fx
            .work
            .compact_level(1, None, TxId(4), now)
            .unwrap()
            .is_empty());

        fx.l0(EXT, 5..=10);
        // Written in the current 1-minute window already: too early. (A file replica dates
        // a compacted file with its LTX timestamp, the last input's.)
        let written = fx.work.listing(1).unwrap()[0].created_ms;
        let in_window = written + 1;
        assert!(window_start(in_window, MIN) <= written);
        assert!(fx
            .work
            .compact_level(1, Some(MIN), TxId(10), in_window)
            .unwrap()
            .is_empty());
        let later = written.max(now) + 120_000;
        let out = fx
            .work
            .compact_level(1, Some(MIN), TxId(10), later)
            .unwrap();
        assert_eq!(
            out.iter().map(|f| (f.min.0, f.max.0)).collect::<Vec<_>>(),
            [(5, 10)]
        );
        let out = fx.work.compact_level(2, None, TxId(10), later).unwrap();
        assert_eq!(
            out.iter().map(|f| (f.min.0, f.max.0)).collect::<Vec<_>>(),
            [(1, 10)]
        );
        assert!(fx
            .work
            .compact_level(3, None, TxId(0), later)
            .unwrap()
            .is_empty());

        // The snapshot: L2 1-a is the plan to a, and becomes L9 1-a stamped now.
        let snap = fx.work.snapshot(None, TxId(10), later).unwrap().unwrap();
        assert_eq!((snap.min.0, snap.max.0, snap.created_ms), (1, 10, later));
        assert!(fx.work.snapshot(None, TxId(10), later).unwrap().is_none());

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
            .compact_level(1, None, TxId(10), now)
            .unwrap()
            .is_empty());
        let l2 = fx.work.compact_level(2, None, TxId(10), now).unwrap();
        assert_eq!(
            l2.iter().map(|f| (f.min.0, f.max.0)).collect::<Vec<_>>(),
            [(1, 10)]
        );
        // Starting at txid 1, it is a full image too: sealed with its checksum.
        let (ck, files, unverified) = fx.restore(10);
        assert_eq!((ck, files, unverified), (checksum_at(10), 1, 0));

        let snap = fx.work.snapshot(None, TxId(10), now).unwrap().unwrap();
        assert_eq!((snap.min.0, snap.max.0), (1, 10));
        let header = ltx::read_header(fx.client.open_ltx(9, TxId(1), TxId(10)).unwrap()).unwrap();
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
        let snap = fx.work.snapshot(None, TxId(10), T0).unwrap().unwrap();
        assert_eq!((snap.min.0, snap.max.0), (1, 10));
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

        let l1 = fx.work.compact_level(1, None, TxId(10), T0).unwrap();
        let ranges: Vec<_> = l1.iter().map(|f| (f.min.0, f.max.0)).collect();
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
        let doomed = fx.work.listing(0).unwrap()[..1].to_vec();
        let err = fx.work.delete(&doomed, "test").unwrap_err();
        assert!(
            format!("{err:#}").contains("would no longer be possible"),
            "{err:#}"
        );
        assert_eq!(fx.files().len(), 3);

        let files = vec![info(0, 1, 1, 0), info(0, 2, 2, 0), info(1, 1, 2, 0)];
        assert!(check_deletable(&files, &files[..1]).is_ok());
        assert!(check_deletable(&files, &files[2..]).is_ok());
        assert!(check_deletable(&files, &[files[0].clone(), files[2].clone()]).is_err());
    }

    /// Snapshot retention end to end: an old snapshot goes, and the files below the kept one.
    #[test]
    fn snapshot_retention_deletes_below_the_oldest_kept_snapshot() {
        let mut fx = Fixture::new();
        fx.l0(EXT, 1..=5);
        let t1 = T0 + 60_000;
        fx.work.compact_level(1, None, TxId(5), t1).unwrap();
        fx.work.snapshot(None, TxId(5), t1).unwrap().unwrap();
        fx.l0(EXT, 6..=10);
        let t2 = t1 + 3_600_000;
        fx.work.compact_level(1, None, TxId(10), t2).unwrap();
        fx.work.snapshot(None, TxId(10), t2).unwrap().unwrap();
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
