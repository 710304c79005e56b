//! The pure decisions of compaction: when a task is due (wall-clock boundaries), which files
//! a run merges, and which files retention may delete. Listings and times in, values out: no
//! I/O, so every rule is tested with vectors alone.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::ltx::{Level, TxId};
use crate::replica::LtxFileInfo;
use crate::restore;

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

/// `now_ms` rounded down to a boundary of `interval`.
pub fn window_start(now_ms: i64, interval: Duration) -> i64 {
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
    let mut snapshots: Vec<&LtxFileInfo> = files
        .iter()
        .filter(|f| f.level == Level::SNAPSHOT)
        .collect();
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
    for level in Level::all().filter(|&l| l != Level::SNAPSHOT) {
        let at: Vec<&LtxFileInfo> = files.iter().filter(|f| f.level == level).collect();
        let Some(last) = at.iter().map(|f| f.max).max() else {
            continue;
        };
        doomed.extend(
            at.into_iter()
                .filter(|f| f.max < oldest_kept && f.max != last)
                .filter(|f| level != Level::L0 || f.created_ms <= l0_cutoff_ms)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(level: u8, min: u64, max: u64, created_ms: i64) -> LtxFileInfo {
        LtxFileInfo {
            level: Level::new(level).unwrap(),
            min: TxId::new(min),
            max: TxId::new(max),
            size: 1,
            created_ms,
        }
    }

    #[test]
    fn boundaries_are_wall_clock_aligned() {
        let s = Duration::from_secs(30);
        assert_eq!(next_boundary(61_000, s), 90_000);
        assert_eq!(next_boundary(60_000, s), 90_000);
        assert_eq!(window_start(89_999, s), 60_000);
        assert_eq!(next_boundary(5, Duration::ZERO), 6);
    }

    #[test]
    fn a_run_is_contiguous_after_the_destination_and_bounded() {
        let src: Vec<_> = [(1, 1), (2, 2), (3, 3), (5, 5), (6, 6)]
            .iter()
            .map(|&(a, b)| info(0, a, b, 0))
            .collect();
        let maxes = |r: Vec<LtxFileInfo>| r.iter().map(|f| f.max.get()).collect::<Vec<_>>();
        assert_eq!(maxes(next_run(&src, TxId::ZERO, 64)), [1, 2, 3]);
        assert_eq!(maxes(next_run(&src, TxId::new(1), 2)), [2, 3]);
        // After the gap at 4 (bridged by a snapshot in the replica), the run starts at 5.
        assert_eq!(maxes(next_run(&src, TxId::new(3), 64)), [5, 6]);
        assert!(next_run(&src, TxId::new(6), 64).is_empty());
    }

    #[test]
    fn l0_retention_deletes_whole_old_level_1_ranges_but_never_the_newest() {
        let l0: Vec<_> = (1..=9).map(|t| info(0, t, t, t as i64)).collect();
        let l1 = vec![info(1, 1, 3, 3), info(1, 4, 6, 6), info(1, 7, 9, 9)];
        let maxes = |v: Vec<LtxFileInfo>| v.iter().map(|f| f.max.get()).collect::<Vec<_>>();
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
                .map(|f| (f.level.get(), f.min.get(), f.max.get()))
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

    /// The check behind every retention deletion (the refusal end to end is in `db`).
    #[test]
    fn deletions_must_leave_a_restore_to_the_newest_txid() {
        let files = vec![info(0, 1, 1, 0), info(0, 2, 2, 0), info(1, 1, 2, 0)];
        assert!(check_deletable(&files, &files[..1]).is_ok());
        assert!(check_deletable(&files, &files[2..]).is_ok());
        assert!(check_deletable(&files, &[files[0].clone(), files[2].clone()]).is_err());
    }
}
