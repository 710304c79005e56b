//! `restore -f`: after a restore, keep applying the replica's new LTX files as they appear.
//!
//! Where the pages go: through SQLite. The follower keeps the restored database open with
//! rusqlite in WAL mode and writes each LTX file's pages with `INSERT INTO sqlite_dbpage`
//! between `BEGIN IMMEDIATE` and `COMMIT` (SQLite's own `sqlite3_rsync` writes a live replica
//! the same way). The pages reach the WAL as one commit, so readers in other processes, who
//! never wait for a WAL writer, see the database as it was before a file or after it, never in
//! between; and a kill -9 at any moment leaves the last committed file applied and the one in
//! progress absent (SQLite's WAL recovery). Page 1 is written last in each transaction: it
//! holds the schema cookie, and a statement run after the cookie changed makes SQLite reload
//! the schema from the transaction's pages, which must be whole by then.
//!
//! After each committed file its max txid goes to `<output>-txid` (fsync + rename, the sidecar
//! Litestream 0.5.17 writes and reads); a restart resumes from it. A crash between the COMMIT
//! and the sidecar leaves the database one file ahead of the sidecar: the file applied next is
//! a page image of a state at or past the database's, so applying it again is harmless.
//!
//! Every file is verified before its COMMIT (file checksum, and where the file carries our
//! database checksums, the database before and after it), against a table of page checksums
//! kept as the primary's pages. One difference is SQLite's own: a commit that writes page 1
//! sets its change counter and SQLite version (bytes 24..28, 92..100) to the follower's, so
//! those bytes differ from the primary's, which readers cannot notice and the table accounts
//! for (the one file after a restart whose checksums cannot be compared is said in
//! [`Follower::open`]).
//!
//! Each poll lists level 0 and applies what continues from the follower's txid. When level 0
//! cannot continue (compaction or retention removed files, one is missing) every level is
//! listed: a compacted file that continues is applied; failing that, a gap is logged once with
//! its txids and healed by applying the newest snapshot past it, a whole database in one
//! transaction, as soon as one exists.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossbeam_channel::Receiver;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::durable;
use crate::ltx::{self, Checksum, Level, PageChecksums, TxId};
use crate::replica::{LtxFileInfo, ReplicaClient};
use crate::restore;

/// How often a follower lists the replica unless told otherwise (Litestream's default).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The WAL is cut back to this size when SQLite restarts it, so that healing from a large
/// snapshot does not leave a WAL of the database's size behind.
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// `<output>-txid`: the txid the database at `output` was built to (Litestream's name, beside
/// SQLite's `-wal` and `-shm`).
pub fn txid_path(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push("-txid");
    PathBuf::from(p)
}

/// The txid recorded beside `output`, `None` when there is no sidecar.
pub fn read_txid(output: &Path) -> Result<Option<TxId>> {
    let path = txid_path(output);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{}: not a txid: {:?}", path.display(), text.trim())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Records durably that the database at `output` is at `txid` (16 hex digits and a newline,
/// as Litestream writes it).
pub fn write_txid(output: &Path, txid: TxId) -> Result<()> {
    let path = txid_path(output);
    durable::write_file(&path, |w| writeln!(w, "{txid}"))
        .with_context(|| format!("write {}", path.display()))
}

/// Where a follower of `client` starts on `output`: `Some(txid)` to resume the database
/// already there from its sidecar, `None` when there is nothing there (absent or empty) and
/// it must be restored first. A database without a sidecar, or with one ahead of the replica,
/// is refused: it was not built from this replica, and following it would mix two databases.
pub fn resume_point(client: &dyn ReplicaClient, output: &Path) -> Result<Option<TxId>> {
    if !fs::metadata(output).is_ok_and(|m| m.len() > 0) {
        return Ok(None);
    }
    let Some(txid) = read_txid(output)? else {
        bail!(
            "cannot resume follow mode: database exists but no -txid file found; delete the database to re-restore: {}",
            output.display()
        );
    };
    let newest = restore::list_all(client)?.iter().map(|f| f.max).max();
    match newest {
        None => bail!("{}: no LTX files found in the replica", client.url()),
        Some(newest) if txid > newest => bail!(
            "cannot resume follow mode: saved TXID {txid} is ahead of the replica's newest ({newest}); delete {} and {} to re-restore",
            output.display(),
            txid_path(output).display()
        ),
        Some(_) => Ok(Some(txid)),
    }
}

/// What a follower at some txid does next with a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Apply this file: it continues from the follower's txid.
    Apply(LtxFileInfo),
    /// No file continues from `after` (the next one starts at `next`, if any besides
    /// snapshots): apply `snapshot`, a whole database past `after`.
    Heal {
        after: TxId,
        next: Option<TxId>,
        snapshot: LtxFileInfo,
    },
    /// No file continues from `after` and no snapshot reaches past it yet.
    Gap { after: TxId, next: TxId },
    /// The replica holds nothing newer.
    UpToDate,
    /// The replica's newest txid is older than the follower's: it was reset or replaced.
    Behind { newest: TxId },
}

/// The follower's next step at `at` (pure, for tests): the file reaching furthest among those
/// that continue from `at`, snapshots (min txid 1, a whole database) only when no other file
/// does.
pub fn next_step(files: &[LtxFileInfo], at: TxId) -> Step {
    let Some(next) = at.next() else {
        return Step::UpToDate;
    };
    let newer = || files.iter().filter(move |f| f.max > at);
    let incremental = newer()
        .filter(|f| f.min > TxId::new(1) && f.min <= next)
        .max_by_key(|f| (f.max, f.level));
    if let Some(f) = incremental {
        return Step::Apply(f.clone());
    }
    let snapshot = newer()
        .filter(|f| f.min == TxId::new(1))
        .max_by_key(|f| (f.max, f.level));
    let next_min = newer().map(|f| f.min).filter(|&m| m > TxId::new(1)).min();
    match (snapshot, next_min) {
        (Some(s), next) => Step::Heal {
            after: at,
            next,
            snapshot: s.clone(),
        },
        (None, Some(next)) => Step::Gap { after: at, next },
        (None, None) => match files.iter().map(|f| f.max).max() {
            Some(newest) if newest < at => Step::Behind { newest },
            _ => Step::UpToDate,
        },
    }
}

/// One LTX file a follower applied: the replication position it reached, for the daemon's
/// `tx` events and registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The file's max txid (the primary's).
    pub txid: TxId,
    /// The database's checksum after it (the primary's, page 1 included once known).
    pub post_apply_checksum: Checksum,
    pub page_size: u32,
    /// The database's size in pages after it.
    pub commit: u32,
    /// When the primary wrote the file.
    pub timestamp_ms: i64,
}

/// A restored database being kept up to date from its replica.
pub struct Follower<'a> {
    client: &'a dyn ReplicaClient,
    output: PathBuf,
    conn: Connection,
    page_size: u32,
    /// The database checksum, page by page, as of `at`.
    table: PageChecksums,
    at: TxId,
    /// Whether `table` holds the checksum of the primary's page 1. SQLite rewrites bytes
    /// 24..28 and 92..100 of page 1 at every commit that writes it (change counter, SQLite
    /// version), so ours differs from the primary's there and a table read back from our
    /// database after a restart cannot know the primary's (see [`Follower::open`]).
    page1_known: bool,
    /// The condition last logged (a gap, the replica behind), so each is logged once.
    condition: Option<String>,
    /// The error last logged, so a run of identical ones is logged once (and every 60th).
    last_error: Option<String>,
    /// Failed polls in a row.
    errors: u64,
    /// Files applied without our database checksums (written by Litestream, or the one file
    /// after a restart that tells the primary's page 1).
    unverified_files: u64,
    /// Whether the warning about files without database checksums was logged.
    said_unverified: bool,
    /// The files applied since the last [`Follower::take_applied`], when recording.
    applied: Option<Vec<Applied>>,
}

impl<'a> Follower<'a> {
    /// Opens the database at `output`, which the replica's files up to `at` built. `resumed`
    /// says it comes from a sidecar rather than a restore this process just made: then page
    /// 1 as the primary has it is unknown (see `page1_known`) and the database may be one
    /// file past `at` (see the module docs), so the first file's pre-apply checksum is not
    /// compared, and unless it carries page 1 its post-apply checksum tells the primary's page
    /// 1 instead of being checked; every later file is checked in full.
    pub fn open(
        client: &'a dyn ReplicaClient,
        output: &Path,
        at: TxId,
        resumed: bool,
    ) -> Result<Self> {
        let conn = open_db(output).with_context(|| format!("open {}", output.display()))?;
        let (page_size, table) =
            read_checksums(&conn).with_context(|| format!("read {}", output.display()))?;
        Ok(Follower {
            client,
            output: output.to_path_buf(),
            conn,
            page_size,
            table,
            at,
            page1_known: !resumed,
            condition: None,
            last_error: None,
            errors: 0,
            unverified_files: 0,
            said_unverified: false,
            applied: None,
        })
    }

    /// The same follower, keeping a record of each file it applies for
    /// [`Follower::take_applied`] (the daemon's follower publishes them).
    pub fn recording(mut self) -> Self {
        self.applied = Some(Vec::new());
        self
    }

    /// The files applied since the last call (empty unless [`Follower::recording`]).
    pub fn take_applied(&mut self) -> Vec<Applied> {
        self.applied
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The txid the database is at.
    pub fn txid(&self) -> TxId {
        self.at
    }

    /// The database being kept up to date.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// The page size and the primary's page checksums as of [`Follower::txid`], when known
    /// in full (page 1 included; see `page1_known`).
    pub fn page_checksums(&self) -> Option<(u32, &PageChecksums)> {
        self.page1_known.then_some((self.page_size, &self.table))
    }

    /// Why the last poll could not reach the replica's newest file (a gap no snapshot heals
    /// yet, a replica behind the follower); `None` when it did.
    pub fn condition(&self) -> Option<&str> {
        self.condition.as_deref()
    }

    /// Applies everything the replica holds past the follower's txid (checking `stop` between
    /// files); returns how many files were applied.
    pub fn poll(&mut self, stop: &dyn Fn() -> bool) -> Result<usize> {
        let mut applied = 0;
        let l0 = self
            .client
            .ltx_files(Level::L0)
            .with_context(|| format!("{}: list level 0", self.client.url()))?;
        loop {
            if stop() {
                return Ok(applied);
            }
            match next_step(&l0, self.at) {
                Step::Apply(f) => applied += self.apply(&f)?,
                Step::UpToDate if !l0.is_empty() => {
                    self.settled();
                    return Ok(applied);
                }
                _ => break,
            }
        }
        let all = restore::list_all(self.client)?;
        loop {
            if stop() {
                return Ok(applied);
            }
            match next_step(&all, self.at) {
                Step::Apply(f) => applied += self.apply(&f)?,
                Step::Heal {
                    after,
                    next,
                    snapshot,
                } => {
                    self.report_gap(after, next);
                    let label = restore::file_label(&snapshot);
                    log::info!(snapshot = label.as_str(); "follow: healing from a snapshot");
                    applied += self.apply(&snapshot)?;
                    log::info!(
                        snapshot = label.as_str(),
                        txid:% = self.at,
                        output:% = self.output.display();
                        "follow: healed from snapshot"
                    );
                    self.condition = None;
                }
                Step::Gap { after, next } => {
                    self.report_gap(after, Some(next));
                    return Ok(applied);
                }
                Step::Behind { newest } => {
                    let (at, url) = (self.at, self.client.url().to_string());
                    self.report(format!("behind {newest}"), || {
                        log::warn!(
                            txid:% = at,
                            replica_txid:% = newest,
                            replica = url.as_str();
                            "follow: the replica is behind the follower (reset or replaced?), waiting"
                        )
                    });
                    return Ok(applied);
                }
                Step::UpToDate => {
                    self.settled();
                    return Ok(applied);
                }
            }
        }
    }

    /// Logs a condition (known by `key`, logged by `log`) once, until it changes or clears.
    fn report(&mut self, key: String, log: impl FnOnce()) {
        if self.condition.as_ref() != Some(&key) {
            log();
            self.condition = Some(key);
        }
    }

    /// Logs, once, that nothing continues after `after` (`next`: the first txid of the next
    /// file besides snapshots).
    fn report_gap(&mut self, after: TxId, next: Option<TxId>) {
        let next = next.map_or("none".to_string(), |n| n.to_string());
        let url = self.client.url().to_string();
        self.report(format!("gap {after}"), || {
            log::warn!(
                after_txid:% = after,
                next_txid:% = next,
                replica = url.as_str();
                "follow: the replica has a gap, healing from the next snapshot past it"
            )
        });
    }

    /// Nothing left to apply: a condition logged earlier is over.
    fn settled(&mut self) {
        if self.condition.take().is_some() {
            log::info!(
                txid:% = self.at,
                replica:% = self.client.url();
                "follow: the replica continues"
            );
        }
    }

    /// Logs a failed poll: the first of a run of identical errors, and every 60th.
    pub fn failed(&mut self, err: &anyhow::Error) {
        self.errors += 1;
        let line = format!("{err:#}");
        let repeated = self.last_error.as_ref() == Some(&line);
        if !repeated || self.errors % 60 == 0 {
            log::error!(
                error = line.as_str(),
                consecutive_errors = self.errors,
                txid:% = self.at;
                "follow: error applying updates"
            );
        }
        self.last_error = Some(line);
    }

    /// A poll went through: a run of errors is over.
    pub fn succeeded(&mut self) {
        self.errors = 0;
        self.last_error = None;
    }

    /// Applies one file in one SQLite transaction, verifies it before the COMMIT, and records
    /// the new txid. Returns 1 (the files applied).
    fn apply(&mut self, f: &LtxFileInfo) -> Result<usize> {
        let label = restore::file_label(f);
        self.apply_file(f)
            .with_context(|| format!("{}: {label}", self.client.url()))?;
        write_txid(&self.output, self.at)?;
        log::debug!(
            file = label.as_str(),
            txid:% = self.at,
            output:% = self.output.display();
            "follow: applied"
        );
        Ok(1)
    }

    fn apply_file(&mut self, f: &LtxFileInfo) -> Result<()> {
        let reader = self
            .client
            .open_ltx(f.level, f.min, f.max)
            .context("open")?;
        let mut dec = ltx::Decoder::with_capacity(256 * 1024, reader)?;
        let header = dec.header().clone();
        if (header.min_txid, header.max_txid) != (f.min, f.max) {
            bail!("header says txids {}-{}", header.min_txid, header.max_txid);
        }
        if header.page_size != self.page_size {
            bail!(
                "page size {} differs from the database's {}",
                header.page_size,
                self.page_size
            );
        }
        if let Some((pre, _)) = header.ext_checksums {
            let follows = self.at.next() == Some(header.min_txid);
            if pre.0 != 0 && follows && self.page1_known && self.table.checksum() != pre {
                bail!(
                    "pre-apply checksum mismatch: the database at txid {} has checksum {}, the file expects {pre}",
                    self.at,
                    self.table.checksum()
                );
            }
        }
        // A copy, so that a file refused before its COMMIT leaves the table as the database.
        let mut table = self.table.clone();
        let mut known = self.page1_known;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("begin a write transaction")?;
        {
            let mut put =
                tx.prepare_cached("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, ?2)")?;
            let mut page = vec![0u8; self.page_size as usize];
            let mut page1: Option<Vec<u8>> = None;
            while let Some((pgno, ck)) = dec.next_page_checksummed(&mut page)? {
                table.set(pgno, ck);
                if pgno == 1 {
                    page1 = Some(page.clone());
                    continue;
                }
                put.execute(rusqlite::params![pgno, &page[..]])
                    .with_context(|| format!("write page {pgno}"))?;
            }
            dec.finish()?;
            if let Some(p) = &page1 {
                put.execute(rusqlite::params![1, p])
                    .context("write page 1")?;
                known = true;
            }
            table.truncate(header.commit);
            let Some(end) = header.commit.checked_add(1) else {
                bail!("commit of {} pages is out of range", header.commit);
            };
            // A NULL page truncates the database to the pages before it, at COMMIT.
            tx.execute(
                "INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, NULL)",
                [end],
            )
            .with_context(|| format!("truncate to {} pages", header.commit))?;
        }
        match header.ext_checksums {
            Some((_, post)) if known && table.checksum() != post => bail!(
                "database checksum mismatch after applying it: built {}, the file says {post}",
                table.checksum()
            ),
            Some(_) if known => {}
            Some((_, post)) => {
                // The one unknown page: the primary's page 1 is what makes the rest add up.
                table.set(1, Checksum(0));
                let rest = table.checksum().0;
                table.set(1, Checksum((post.0 ^ rest) | ltx::CHECKSUM_FLAG));
                known = true;
                self.unverified_files += 1;
            }
            None => self.unverified_files += 1,
        }
        tx.commit().context("commit")?;
        if header.ext_checksums.is_none() && !self.said_unverified {
            self.said_unverified = true;
            log::warn!(
                detail = "written by a tool that does not record them (Litestream); each file's own checksum is verified",
                replica:% = self.client.url();
                "follow: applying files without database checksums"
            );
        }
        self.table = table;
        self.at = header.max_txid;
        self.page1_known = known;
        if let Some(applied) = self.applied.as_mut() {
            applied.push(Applied {
                txid: header.max_txid,
                post_apply_checksum: self.table.checksum(),
                page_size: header.page_size,
                commit: header.commit,
                timestamp_ms: header.timestamp_ms,
            });
        }
        Ok(())
    }
}

/// Opens the follower's database for writing pages: WAL mode (readers never wait for us),
/// `synchronous=FULL` (a commit is on disk before the sidecar says so).
fn open_db(output: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        output,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("cannot switch to WAL mode (journal_mode is {mode})");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.prepare("SELECT data FROM sqlite_dbpage WHERE pgno = 1")
        .context("this build's SQLite lacks the sqlite_dbpage table (SQLITE_ENABLE_DBPAGE_VTAB)")?;
    Ok(conn)
}

/// The database's page size and the checksum of each of its pages, read through SQLite (so
/// that committed pages still in the WAL count, and no second descriptor is opened on a file
/// SQLite holds locks on).
fn read_checksums(conn: &Connection) -> Result<(u32, PageChecksums)> {
    let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let mut table = PageChecksums::new(page_size);
    let mut stmt = conn.prepare("SELECT pgno, data FROM sqlite_dbpage")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let pgno: u32 = row.get(0)?;
        let data = row.get_ref(1)?.as_blob()?;
        table.set(pgno, ltx::page_checksum(pgno, data));
    }
    Ok((page_size, table))
}

/// Follows until `stop` receives (or is dropped): polls every `interval`, logging failures
/// and retrying them on the next poll.
pub fn run(follower: &mut Follower<'_>, interval: Duration, stop: &Receiver<()>) {
    log::info!(
        output:% = follower.output.display(),
        txid:% = follower.at,
        interval = crate::duration::format(interval).as_str();
        "entering follow mode"
    );
    let stopping = || !stop.is_empty();
    loop {
        match follower.poll(&stopping) {
            Ok(n) => {
                follower.succeeded();
                if n > 0 {
                    log::info!(files = n, txid:% = follower.at; "follow: applied updates");
                }
            }
            Err(e) => follower.failed(&e),
        }
        crossbeam_channel::select! {
            recv(stop) -> _ => break,
            default(interval) => {}
        }
    }
    log::info!(
        output:% = follower.output.display(),
        txid:% = follower.at;
        "follow mode stopped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::tests::f;

    #[test]
    fn next_step_continues_prefers_increments_and_heals_gaps_from_snapshots() {
        let l0: Vec<_> = (5..=8).map(|t| f(0, t, t)).collect();
        assert_eq!(next_step(&l0, TxId::new(4)), Step::Apply(f(0, 5, 5)));
        assert_eq!(next_step(&l0, TxId::new(8)), Step::UpToDate);
        assert_eq!(
            next_step(&l0, TxId::new(9)),
            Step::Behind {
                newest: TxId::new(8)
            }
        );
        // A compacted file that overlaps the follower's position and reaches further wins.
        let mut files = l0.clone();
        files.extend([f(1, 3, 7), f(9, 1, 8)]);
        assert_eq!(next_step(&files, TxId::new(4)), Step::Apply(f(1, 3, 7)));
        // L0 5 is gone: level 0 alone has a gap...
        let gap: Vec<_> = (6..=8).map(|t| f(0, t, t)).collect();
        assert_eq!(
            next_step(&gap, TxId::new(4)),
            Step::Gap {
                after: TxId::new(4),
                next: TxId::new(6)
            }
        );
        // ...that the newest snapshot past it heals.
        let mut healed = gap.clone();
        healed.extend([f(9, 1, 3), f(9, 1, 7)]);
        assert_eq!(
            next_step(&healed, TxId::new(4)),
            Step::Heal {
                after: TxId::new(4),
                next: Some(TxId::new(6)),
                snapshot: f(9, 1, 7)
            }
        );
        // A snapshot older than the follower is no help.
        let mut old = gap;
        old.push(f(9, 1, 3));
        assert!(matches!(next_step(&old, TxId::new(4)), Step::Gap { .. }));
    }

    #[test]
    fn txid_sidecar_round_trips_in_litestreams_format() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        assert_eq!(read_txid(&db).unwrap(), None);
        write_txid(&db, TxId::new(0xa1)).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("app.db-txid")).unwrap(),
            "00000000000000a1\n"
        );
        assert_eq!(read_txid(&db).unwrap(), Some(TxId::new(0xa1)));
        fs::write(txid_path(&db), "zz\n").unwrap();
        let err = format!("{:#}", read_txid(&db).unwrap_err());
        assert!(err.contains("app.db-txid: not a txid"), "{err}");
    }
}
