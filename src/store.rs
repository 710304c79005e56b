//! The store: every database of a running daemon, the uploader pool they share, the registry
//! and the event hub. `replicate` builds one; the IPC server adds and removes databases
//! through it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use crossbeam_channel::bounded;

use crate::compact::{Compactor, Schedule};
use crate::db::{self, DbCommand, DbOptions, Shared};
use crate::events::EventHub;
use crate::ltx::TxId;
use crate::registry::{DbStatus, DbView, FileId, Inserted, Registry};
use crate::replica::uploader::UploaderPool;
use crate::replica::ReplicaClient;
use crate::watch::Watcher;

/// All databases of one daemon.
pub struct Store {
    registry: Arc<Registry>,
    events: Arc<EventHub>,
    /// Kept for the life of the store: its threads serve every database.
    _pool: UploaderPool,
    shared: Shared,
    threads: Mutex<HashMap<PathBuf, JoinHandle<()>>>,
    /// The `compact` thread, when the store compacts (not for `replicate -once`).
    compactor: Mutex<Option<Compactor>>,
}

/// Outcome of [`Store::add`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    Registered,
    AlreadyRegistered,
    /// The same file is replicated already, under this path: refused.
    SameFileAs(PathBuf),
}

impl Store {
    /// A store with an uploader pool of `upload_threads` threads, compacting its replicas
    /// on `compaction`'s schedule (`None`: never).
    pub fn new(upload_threads: usize, compaction: Option<Schedule>) -> Result<Store> {
        let registry = Arc::new(Registry::default());
        let events = Arc::new(EventHub::default());
        // Each database keeps at most one upload in flight, so a small queue per thread suffices;
        // a full queue only delays a database's next attempt by a few milliseconds.
        let pool = UploaderPool::start(upload_threads, upload_threads * 16)
            .context("start uploader threads")?;
        let watcher = match Watcher::start() {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                log::warn!(
                    error:% = e;
                    "inotify is unavailable; databases are polled every monitor-interval"
                );
                None
            }
        };
        let shared = Shared {
            registry: registry.clone(),
            events: events.clone(),
            uploads: pool.queue(),
            watcher,
        };
        let compactor = match compaction {
            Some(schedule) => Some(
                Compactor::start(schedule, registry.clone()).context("start compaction thread")?,
            ),
            None => None,
        };
        Ok(Store {
            registry,
            events,
            _pool: pool,
            shared,
            threads: Mutex::new(HashMap::new()),
            compactor: Mutex::new(compactor),
        })
    }

    /// The registry the IPC server answers from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The hub `/events` subscribes to.
    pub fn events(&self) -> &Arc<EventHub> {
        &self.events
    }

    /// Starts replicating a database; a path already registered is left as it is.
    pub fn add(
        &self,
        opts: DbOptions,
        replica: Arc<dyn ReplicaClient>,
        dynamic: bool,
    ) -> Result<Added> {
        let path = opts.path.clone();
        let file_id = FileId::of(&path).with_context(|| format!("{}: stat", path.display()))?;
        let (tx, rx) = db::channel();
        let view = DbView {
            path: path.clone(),
            file_id,
            replica_url: replica.url().to_string(),
            status: DbStatus::Open,
            txid: TxId::ZERO,
            replicated_txid: TxId::ZERO,
            last_sync_at: None,
            last_error: None,
            replica_error: None,
            compaction_error: None,
            dynamic,
            meta_dir: opts.meta_dir.clone(),
            behind_since: None,
            activity: Default::default(),
        };
        match self.registry.insert(view, tx.clone()) {
            Inserted::Added => {}
            Inserted::SamePath => return Ok(Added::AlreadyRegistered),
            Inserted::SameFile(other) => return Ok(Added::SameFileAs(other)),
        }
        let meta_dir = opts.meta_dir.clone();
        match db::spawn(opts, replica.clone(), self.shared.clone(), (tx, rx)) {
            Ok(handle) => {
                if let Some(c) = self.lock_compactor().as_ref() {
                    c.add(&path, replica, &meta_dir);
                }
                self.lock_threads().insert(path, handle.thread);
                Ok(Added::Registered)
            }
            Err(e) => {
                self.registry.remove(&path);
                Err(e).with_context(|| format!("{}: start thread", path.display()))
            }
        }
    }

    /// Stops replicating a database (a last sync, uploads bounded by `timeout`) and forgets it.
    /// Returns its last TXID, or `None` when it was not registered.
    pub fn remove(&self, path: &Path, timeout: Duration) -> Option<(DbView, TxId)> {
        let (view, ctl) = self.registry.remove(path)?;
        if let Some(c) = self.lock_compactor().as_ref() {
            c.remove(path);
        }
        let (tx, rx) = bounded(1);
        let deadline = Instant::now() + timeout;
        if ctl
            .send_timeout(
                DbCommand::Shutdown {
                    deadline,
                    reply: tx,
                },
                deadline.saturating_duration_since(Instant::now()),
            )
            .is_ok()
        {
            let _ = rx.recv_timeout(timeout + Duration::from_secs(5));
        }
        let thread = self.lock_threads().remove(path);
        if let Some(t) = thread {
            if !join_within(t, Instant::now() + THREAD_EXIT) {
                log::warn!(db:% = path.display(); "database did not stop within the timeout; abandoning it");
            }
        }
        let txid = view.txid;
        Some((view, txid))
    }

    /// Stops every database (each syncs once more and waits for its uploads until the
    /// deadline), then the uploader pool.
    pub fn shutdown(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // Compaction stops at once (it runs again at the next start): only the final sync
        // below is worth waiting for.
        let mut compactor = self.lock_compactor().take();
        if let Some(c) = compactor.as_ref() {
            c.cancel();
        }
        let mut replies = vec![];
        for view in self.registry.list() {
            if let Some((_, ctl)) = self.registry.remove(&view.path) {
                let (tx, rx) = bounded(1);
                if ctl
                    .send_timeout(
                        DbCommand::Shutdown {
                            deadline,
                            reply: tx,
                        },
                        deadline.saturating_duration_since(Instant::now()),
                    )
                    .is_ok()
                {
                    replies.push(rx);
                }
            }
        }
        for rx in replies {
            let _ = rx.recv_timeout(
                deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5),
            );
        }
        // A thread that did not answer by now is stuck in I/O (a hung NFS mount, say): leave it
        // to the process exit rather than hang the shutdown past the deadline.
        let threads: Vec<_> = self.lock_threads().drain().collect();
        let exit_by = Instant::now() + THREAD_EXIT;
        for (path, t) in threads {
            if !join_within(t, exit_by) {
                log::warn!(
                    db:% = path.display();
                    "database did not stop within the shutdown timeout; abandoning it"
                );
            }
        }
        if let Some(c) = compactor.as_mut() {
            c.stop(COMPACTION_EXIT);
        }
        self.events.close_all();
        // Uploader threads are idle once every database thread has finished; an upload still
        // running past the deadline is abandoned with the process (its file stays spooled).
    }

    fn lock_compactor(&self) -> std::sync::MutexGuard<'_, Option<Compactor>> {
        self.compactor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uptime-related facts for `/info`.
    pub fn started_at(&self) -> SystemTime {
        self.registry.started_at()
    }
}

/// How long a database thread that answered `Shutdown` gets to return: after its reply it
/// only closes its connections and files.
const THREAD_EXIT: Duration = Duration::from_secs(2);

/// How long the cancelled compaction thread gets to end at shutdown (a merge ends at its next
/// read; an upload or listing in flight cannot be interrupted and is left to the exit).
const COMPACTION_EXIT: Duration = Duration::from_millis(500);

/// Joins `thread` if it finishes by `deadline` (checked every millisecond: std has no join
/// with a timeout); `false` when it is still running then, and it is left to the process exit.
fn join_within(thread: JoinHandle<()>, deadline: Instant) -> bool {
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = thread.join();
    true
}
