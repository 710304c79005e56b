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
//!
//! The module, one job a file: [`policy`] holds the pure decisions (boundaries, which files
//! a run merges, which files retention deletes), [`db`] the work on one database's replica
//! (merge, verify, upload, delete), [`scheduler`] the `compact` thread that runs that work
//! when it is due.

pub mod db;
pub mod policy;
pub mod scheduler;
#[cfg(test)]
mod testutil;

pub use db::{DbCompaction, MAX_INPUTS};
pub use policy::{
    check_deletable, l0_expired, next_boundary, next_run, snapshot_expired, Schedule,
};
pub use scheduler::{Clock, Compactor};
