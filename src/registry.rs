//! The registry: what the daemon knows about each database, behind one mutex.
//!
//! Database threads write their entry after each sync pass and upload; the IPC server reads it
//! to answer `/list`, `/txid`, `/info` without ever waiting on a database thread. No lock is
//! held across I/O: every method copies what it needs and returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crossbeam_channel::Sender;
use serde::Serialize;

use crate::db::DbCommand;
use crate::ltx::TxId;

/// A database's state as `/list` reports it (Litestream's words, plus `error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbStatus {
    /// Registered; the first sync has not completed yet.
    Open,
    /// Syncing and uploading normally.
    Replicating,
    /// Stopped with `/stop`; registered but not replicating.
    Stopped,
    /// The last sync failed; `last_error` says why. The thread keeps retrying.
    Error,
    /// A follower keeping the database a copy of its replica.
    Following,
}

impl DbStatus {
    /// The status word used in JSON and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            DbStatus::Open => "open",
            DbStatus::Replicating => "replicating",
            DbStatus::Stopped => "stopped",
            DbStatus::Error => "error",
            DbStatus::Following => "following",
        }
    }
}

/// Whether this daemon writes a database's replica or follows it (`role` in `/list`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Replicates the database to its replica.
    #[default]
    Primary,
    /// Applies what another primary writes to the replica.
    Follower,
}

impl Role {
    /// The word in JSON and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Follower => "follower",
        }
    }
}

/// The replica lease this daemon holds for a database, as `/list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub owner: String,
    pub generation: i64,
    /// When it lapses unless renewed, in milliseconds since the epoch.
    pub expires_at_ms: i64,
}

/// A database file's identity: its device and inode. Paths that name one file (through a
/// symlinked directory, a bind mount, `..`) are one database: two threads on it would fight
/// over its checkpoints and its replica, and reading it through a second path would open a
/// second descriptor, whose close drops every POSIX lock SQLite holds on the file in this
/// process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of the file at `path` (following symlinks, without opening it); `None`
    /// when there is no file there yet.
    pub fn of(path: &Path) -> std::io::Result<Option<FileId>> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileId {
                dev: m.dev(),
                ino: m.ino(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Outcome of [`Registry::insert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    Added,
    /// This path is registered already.
    SamePath,
    /// The same file is registered under this other path.
    SameFile(PathBuf),
}

/// A copy of one database's entry.
#[derive(Clone, Debug)]
pub struct DbView {
    pub path: PathBuf,
    /// The file's identity when it was registered (`None`: it did not exist yet).
    pub file_id: Option<FileId>,
    pub replica_url: String,
    pub status: DbStatus,
    /// TXID of the newest LTX file in the local spool.
    pub txid: TxId,
    /// Newest TXID the replica confirmed.
    pub replicated_txid: TxId,
    pub last_sync_at: Option<SystemTime>,
    /// Why the last sync failed, if it did.
    pub last_error: Option<String>,
    /// Why the last upload failed, if the replica is currently failing.
    pub replica_error: Option<String>,
    /// Why compaction, a snapshot or retention last failed, while it keeps failing.
    pub compaction_error: Option<String>,
    /// Whether it was added with `/register` (and is persisted for restarts).
    pub dynamic: bool,
    /// Its local state directory (the spool is under it).
    pub meta_dir: PathBuf,
    /// Since when the replica has been behind `txid` (`None`: caught up); kept by
    /// [`Registry::update`] for the replication lag metric.
    pub behind_since: Option<SystemTime>,
    /// What its thread is doing or last did, for `/debug/sync-status`.
    pub activity: Activity,
    /// Primary or follower.
    pub role: Role,
    /// For a follower, the host name of the primary holding the replica's lease, when known.
    pub primary_host: Option<String>,
    /// The replica lease this daemon holds for it, if any.
    pub lease: Option<LeaseView>,
}

impl DbView {
    /// The entry of a database just registered, before its thread has said anything.
    pub fn new(path: PathBuf, file_id: Option<FileId>, replica_url: String, role: Role) -> DbView {
        DbView {
            path,
            file_id,
            replica_url,
            status: DbStatus::Open,
            txid: TxId::ZERO,
            replicated_txid: TxId::ZERO,
            last_sync_at: None,
            last_error: None,
            replica_error: None,
            compaction_error: None,
            dynamic: false,
            meta_dir: PathBuf::new(),
            behind_since: None,
            activity: Activity::default(),
            role,
            primary_host: None,
            lease: None,
        }
    }
}

/// The current or last sync pass or checkpoint of a database, as Litestream 0.5.17's
/// `/debug/sync-status` reports it: so that a stuck pass shows which step and for how long.
#[derive(Clone, Debug, Default)]
pub struct Activity {
    /// A pass or checkpoint is running now.
    pub active: bool,
    /// `sync` or `checkpoint` (empty before the first).
    pub operation: &'static str,
    /// Where it is (Litestream's phase names where ours match: `verify_and_sync`,
    /// `sync_complete`, `checkpoint_exec`).
    pub phase: &'static str,
    pub started_at: Option<SystemTime>,
    pub updated_at: Option<SystemTime>,
    /// The TXID when it ended.
    pub txid: TxId,
    /// The WAL's size when it started.
    pub wal_size: u64,
    /// The WAL offset the daemon had read to when it started.
    pub last_synced_wal_offset: u64,
    /// The pass reads the whole database (no position to continue from).
    pub snapshotting: bool,
    /// `PASSIVE` or `TRUNCATE` for a checkpoint.
    pub checkpoint_mode: Option<&'static str>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Activity {
    /// An operation starting now.
    pub fn begin(
        operation: &'static str,
        phase: &'static str,
        wal_size: u64,
        offset: u64,
    ) -> Activity {
        let now = SystemTime::now();
        Activity {
            active: true,
            operation,
            phase,
            started_at: Some(now),
            updated_at: Some(now),
            wal_size,
            last_synced_wal_offset: offset,
            ..Activity::default()
        }
    }

    /// The operation ended in `phase`, at `txid`, with `error` if it failed.
    pub fn end(&mut self, phase: &'static str, txid: TxId, error: Option<String>) {
        self.active = false;
        self.phase = phase;
        self.updated_at = Some(SystemTime::now());
        self.txid = txid;
        self.error = error;
    }
}

struct Entry {
    view: DbView,
    ctl: Sender<DbCommand>,
}

/// All databases of the daemon.
pub struct Registry {
    entries: Mutex<BTreeMap<PathBuf, Entry>>,
    started_at: SystemTime,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(BTreeMap::new()),
            started_at: SystemTime::now(),
        }
    }
}

impl Registry {
    /// When the daemon started (for `/info`).
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Entry>> {
        // Entries are replaced whole under the lock, so a panic elsewhere cannot leave one
        // half-written: a poisoned lock is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a database, unless its path or its file ([`FileId`]) is registered already.
    pub fn insert(&self, view: DbView, ctl: Sender<DbCommand>) -> Inserted {
        let mut map = self.lock();
        if map.contains_key(&view.path) {
            return Inserted::SamePath;
        }
        if let Some(id) = view.file_id {
            if let Some(other) = map.values().find(|e| e.view.file_id == Some(id)) {
                return Inserted::SameFile(other.view.path.clone());
            }
        }
        map.insert(view.path.clone(), Entry { view, ctl });
        Inserted::Added
    }

    /// The path under which the file with this identity is registered, if any.
    pub fn path_of_file(&self, id: FileId) -> Option<PathBuf> {
        self.lock()
            .values()
            .find(|e| e.view.file_id == Some(id))
            .map(|e| e.view.path.clone())
    }

    /// Removes a database, returning its last view and command channel.
    pub fn remove(&self, path: &Path) -> Option<(DbView, Sender<DbCommand>)> {
        self.lock().remove(path).map(|e| (e.view, e.ctl))
    }

    /// Whether `path` is registered.
    pub fn contains(&self, path: &Path) -> bool {
        self.lock().contains_key(path)
    }

    /// A copy of one entry.
    pub fn get(&self, path: &Path) -> Option<DbView> {
        self.lock().get(path).map(|e| e.view.clone())
    }

    /// The command channel of a database's thread.
    pub fn ctl(&self, path: &Path) -> Option<Sender<DbCommand>> {
        self.lock().get(path).map(|e| e.ctl.clone())
    }

    /// Copies of every entry, sorted by path.
    pub fn list(&self) -> Vec<DbView> {
        self.lock().values().map(|e| e.view.clone()).collect()
    }

    /// Number of databases.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no database is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands a database to a new thread (a promotion or demotion): its command channel is
    /// replaced and its view changed by `f`; `false` when it was removed meanwhile.
    pub fn replace_ctl(
        &self,
        path: &Path,
        ctl: Sender<DbCommand>,
        f: impl FnOnce(&mut DbView),
    ) -> bool {
        match self.lock().get_mut(path) {
            Some(e) => {
                e.ctl = ctl;
                f(&mut e.view);
                true
            }
            None => false,
        }
    }

    /// Changes one entry in place (no-op if it was removed meanwhile).
    pub fn update(&self, path: &Path, f: impl FnOnce(&mut DbView)) {
        if let Some(e) = self.lock().get_mut(path) {
            f(&mut e.view);
            let v = &mut e.view;
            v.behind_since = match (v.replicated_txid < v.txid, v.behind_since) {
                (false, _) => None,
                (true, None) => Some(SystemTime::now()),
                (true, since) => since,
            };
        }
    }
}
