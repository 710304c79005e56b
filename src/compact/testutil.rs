//! A file replica in a temporary directory, filled from the LTX fixtures, for the tests of
//! per-database compaction and of the scheduler.

use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::db::DbCompaction;
use crate::ltx::testutil::README_TABLE;
use crate::ltx::{self, TxId};
use crate::replica::file::FileReplicaClient;
use crate::replica::ReplicaClient;
use crate::restore;

/// A file replica in a temp dir, and its compaction state.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    root: PathBuf,
    pub client: Arc<dyn ReplicaClient>,
    pub work: DbCompaction,
}

/// Base of the fake clock: files are "written" at T0 + their txid seconds.
pub const T0: i64 = 1_800_000_000_000;
pub const MIN: Duration = Duration::from_secs(60);

impl Fixture {
    pub fn new() -> Fixture {
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
    pub fn add(&self, fixture: &str, level: u8, min: u64, max: u64) {
        let name = ltx::file_name(TxId::new(min), TxId::new(max));
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

    pub fn l0(&self, fixture: &str, txids: std::ops::RangeInclusive<u64>) {
        for t in txids {
            self.add(fixture, 0, t, t);
        }
    }

    /// `(level, min, max)` of every file in the replica.
    pub fn files(&self) -> Vec<(u8, u64, u64)> {
        restore::list_all(self.client.as_ref())
            .unwrap()
            .iter()
            .map(|f| (f.level.get(), f.min.get(), f.max.get()))
            .collect()
    }

    /// Restores at `txid` and returns (database checksum, files applied, unverified).
    pub fn restore(&self, txid: u64) -> (u64, usize, usize) {
        let plan = restore::plan(self.client.as_ref(), restore::Target::TxId(TxId::new(txid)))
            .unwrap_or_else(|e| panic!("plan {txid}: {e:#}"));
        let out = self._dir.path().join(format!("restored-{txid}.db"));
        let r = restore::apply(self.client.as_ref(), &plan, &out, true)
            .unwrap_or_else(|e| panic!("restore {txid}: {e:#}"));
        (r.checksum.0, r.files, r.unverified_files)
    }
}

pub fn checksum_at(txid: u64) -> u64 {
    README_TABLE[txid as usize - 1].3
}
