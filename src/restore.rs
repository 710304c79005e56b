//! Restore: choose the files that rebuild a database at a target, apply them, prove the result.
//!
//! The plan takes the newest snapshot (a file with min TXID 1, at any level) at or before the
//! target, then repeatedly the file reaching furthest that starts at or before the next TXID,
//! whatever its level, until the target. Applying writes each file's pages into a temporary
//! file and truncates it to the file's commit size. Every file's checksum is verified, and
//! where files carry our database checksums, the database built after each file must match
//! them; only then is the result fsynced and renamed into place.
//!
//! Applying uses two threads joined by bounded channels: the calling thread reads,
//! decompresses and verifies, a `restore-write` thread writes the pages and starts their
//! writeback, so a restore takes about as long as the slower of the two instead of their sum
//! (close to `cp` and `sync` of the same database), in a few MiB of memory whatever its size.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::durable;
use crate::ltx::{self, Checksum, Level, PageChecksums, TxId};

mod pipeline;
pub mod progress;
use crate::replica::{LtxFileInfo, ReplicaClient};

/// What state to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Latest,
    TxId(TxId),
    /// Milliseconds since the epoch: the newest transaction written at or before it.
    Timestamp(i64),
}

/// A chosen sequence of files and the TXID it reaches.
#[derive(Clone, Debug)]
pub struct Plan {
    pub files: Vec<LtxFileInfo>,
    pub txid: TxId,
}

/// What a finished restore proved.
#[derive(Clone, Debug)]
pub struct Report {
    pub txid: TxId,
    pub page_size: u32,
    pub commit: u32,
    pub checksum: Checksum,
    /// Files applied.
    pub files: usize,
    /// Files without our database checksums (written by Litestream): verified by their file
    /// checksum only.
    pub unverified_files: usize,
}

/// Every LTX file in the replica, all levels.
pub fn list_all(client: &dyn ReplicaClient) -> Result<Vec<LtxFileInfo>> {
    let mut all = vec![];
    for level in Level::all() {
        all.extend(
            client
                .ltx_files(level)
                .with_context(|| format!("{}: list level {level}", client.url()))?,
        );
    }
    Ok(all)
}

/// Chooses the files for `target` (see the module docs).
pub fn plan(client: &dyn ReplicaClient, target: Target) -> Result<Plan> {
    let files = list_all(client)?;
    if files.is_empty() {
        bail!("{}: no LTX files found in the replica", client.url());
    }
    let latest = files.iter().map(|f| f.max).max().expect("not empty");
    let target_txid = match target {
        Target::Latest => latest,
        Target::TxId(t) if t > latest => bail!(
            "{}: txid {t} is beyond the newest in the replica ({latest})",
            client.url()
        ),
        Target::TxId(t) => t,
        Target::Timestamp(ts) => txid_at(client, &files, ts)?,
    };
    plan_files(&files, target_txid).with_context(|| client.url().to_string())
}

/// The newest TXID whose file was written at or before `ts`, from the LTX headers.
fn txid_at(client: &dyn ReplicaClient, files: &[LtxFileInfo], ts: i64) -> Result<TxId> {
    let mut best: Option<TxId> = None;
    for f in files {
        if best.is_some_and(|b| f.max <= b) {
            continue;
        }
        let header = ltx::read_header(client.open_ltx(f.level, f.min, f.max)?)
            .with_context(|| format!("{}: read header", file_label(f)))?;
        if header.timestamp_ms <= ts {
            best = Some(f.max);
        }
    }
    best.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no transaction at or before {}",
            client.url(),
            crate::timefmt::rfc3339_ms(ts)
        )
    })
}

/// The planning rule on a listing, without I/O.
pub fn plan_files(files: &[LtxFileInfo], target: TxId) -> Result<Plan> {
    let snapshot = files
        .iter()
        .filter(|f| f.min == TxId::new(1) && f.max <= target)
        .max_by_key(|f| (f.max, f.level))
        .with_context(|| format!("no snapshot at or before txid {target}"))?;
    let mut chosen = vec![snapshot.clone()];
    let mut at = snapshot.max;
    while at < target {
        let next = files
            .iter()
            .filter(|f| at.next().is_some_and(|n| f.min <= n) && f.max > at && f.max <= target)
            .max_by_key(|f| (f.max, f.level));
        match next {
            Some(f) => {
                at = f.max;
                chosen.push(f.clone());
            }
            None => {
                bail!("no file continues after txid {at} (the replica has a gap before {target})")
            }
        }
    }
    Ok(Plan {
        files: chosen,
        txid: target,
    })
}

/// `ltx/<level>/<min>-<max>.ltx`, how errors name a replica file.
pub fn file_label(f: &LtxFileInfo) -> String {
    format!("ltx/{}/{}", f.level, ltx::file_name(f.min, f.max))
}

/// Applies `plan` to a new database at `output` (which must not exist unless `force`).
pub fn apply(
    client: &dyn ReplicaClient,
    plan: &Plan,
    output: &Path,
    force: bool,
) -> Result<Report> {
    apply_then(client, plan, output, force, |_| Ok(()), &mut |_| {})
}

/// [`apply`], running `before_rename` once the database is built, verified and fsynced under
/// its temporary name, before it takes `output`'s name: follow mode records the txid it
/// resumes from there, so that no crash can leave `output` without it. An error from it
/// leaves nothing behind. `progress` hears how far the restore is as it goes (the progress
/// line; see [`progress`]).
pub fn apply_then(
    client: &dyn ReplicaClient,
    plan: &Plan,
    output: &Path,
    force: bool,
    before_rename: impl FnOnce(&Report) -> Result<()>,
    progress: &mut dyn FnMut(progress::Done),
) -> Result<Report> {
    if output.exists() && !force {
        bail!("{}: output file already exists", output.display());
    }
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        durable::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let tmp = temp_output(output);
    let result =
        pipeline::build(client, plan, &tmp, progress).and_then(|r| before_rename(&r).map(|()| r));
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if force {
        // A stale WAL beside the old database would be replayed over the restored one.
        for suffix in ["-wal", "-shm"] {
            let mut p = output.as_os_str().to_owned();
            p.push(suffix);
            durable::remove_file(Path::new(&p))
                .with_context(|| format!("remove {}", Path::new(&p).display()))?;
        }
    }
    fs::rename(&tmp, output)
        .with_context(|| format!("rename {} to {}", tmp.display(), output.display()))?;
    durable::sync_parent_dir(output)
        .with_context(|| format!("sync directory of {}", output.display()))?;
    Ok(report)
}

fn temp_output(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.restore-{}.tmp", std::process::id()))
}

/// Reads a database file and computes its LTX database checksum (for tests and `status`).
pub fn database_checksum(path: &Path) -> io::Result<(u32, Checksum)> {
    let header = crate::sqlite::read_db_header(path)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty database"))?;
    let file = File::open(path)?;
    let pages = (file.metadata()?.len() / u64::from(header.page_size)) as u32;
    let mut table = PageChecksums::new(header.page_size);
    let mut page = vec![0u8; header.page_size as usize];
    let lock = ltx::lock_pgno(header.page_size);
    for pgno in (1..=pages).filter(|&p| p != lock) {
        file.read_exact_at(&mut page, u64::from(pgno - 1) * u64::from(header.page_size))?;
        table.set(pgno, ltx::page_checksum(pgno, &page));
    }
    Ok((pages, table.checksum()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An LTX file of `level` covering `min..=max`, for plans built in tests.
    pub(crate) fn f(level: u8, min: u64, max: u64) -> LtxFileInfo {
        LtxFileInfo {
            level: Level::new(level).unwrap(),
            min: TxId::new(min),
            max: TxId::new(max),
            size: 1,
            created_ms: 0,
        }
    }

    /// The layout of the Litestream fixture: L0 1..a, L1 1-2, 3-3, 4-7, 8-a, L9 1-1.
    fn fixture_listing() -> Vec<LtxFileInfo> {
        let mut v: Vec<_> = (1..=10).map(|t| f(0, t, t)).collect();
        v.extend([f(1, 1, 2), f(1, 3, 3), f(1, 4, 7), f(1, 8, 10), f(9, 1, 1)]);
        v
    }

    fn names(p: &Plan) -> Vec<String> {
        p.files.iter().map(file_label).collect()
    }

    #[test]
    fn plan_prefers_compacted_files_and_falls_back_to_l0() {
        let files = fixture_listing();
        let latest = plan_files(&files, TxId::new(10)).unwrap();
        assert_eq!(
            names(&latest),
            // L1 1-2 starts at txid 1, so it is a snapshot itself and reaches further than L9 1-1.
            [
                "ltx/1/0000000000000001-0000000000000002.ltx",
                "ltx/1/0000000000000003-0000000000000003.ltx",
                "ltx/1/0000000000000004-0000000000000007.ltx",
                "ltx/1/0000000000000008-000000000000000a.ltx"
            ]
        );
        let at5 = plan_files(&files, TxId::new(5)).unwrap();
        assert_eq!(
            at5.files
                .iter()
                .map(|f| (f.level.get(), f.max.get()))
                .collect::<Vec<_>>(),
            [(1, 2), (1, 3), (0, 4), (0, 5)]
        );
        let at1 = plan_files(&files, TxId::new(1)).unwrap();
        assert_eq!(
            at1.files
                .iter()
                .map(|f| (f.level.get(), f.max.get()))
                .collect::<Vec<_>>(),
            [(9, 1)]
        );
    }

    #[test]
    fn plan_reports_gaps_and_missing_snapshots() {
        let files = vec![f(0, 1, 1), f(0, 2, 2), f(0, 4, 4)];
        let err = plan_files(&files, TxId::new(4)).unwrap_err().to_string();
        assert!(err.contains("after txid 0000000000000002"), "{err}");
        let err = plan_files(&[f(0, 2, 2)], TxId::new(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no snapshot"), "{err}");
    }
}
