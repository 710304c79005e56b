//! The store: every database of a running daemon, the uploader pool they share, the registry
//! and the event hub. `replicate` builds one; the IPC server adds and removes databases
//! through it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Sender};

use crate::compact::{Compactor, Schedule};
use crate::db::{self, DbCommand, DbOptions, Shared};
use crate::events::{Event, EventHub};
use crate::follower::{self, FollowerOptions, RoleError};
use crate::lease_keeper::{LeaseKeeper, LeasedClient};
use crate::ltx::TxId;
use crate::registry::{DbStatus, DbView, FileId, Inserted, Registry, Role};
use crate::replica::lease::{Lease, Leaser};
use crate::replica::uploader::UploaderPool;
use crate::replica::ReplicaClient;
use crate::spool::Spool;
use crate::watch::Watcher;

/// How to run one database in either role: kept by the store for the life of the database,
/// so a promotion or demotion can start the thread of the other role.
#[derive(Clone)]
pub struct DbSpec {
    /// The primary's settings (the path is the follower's too).
    pub opts: DbOptions,
    pub replica: Arc<dyn ReplicaClient>,
    /// The replica's lease (no request is made until it is used).
    pub leaser: Arc<Leaser>,
    /// Whether a primary holds the lease while it writes (`lease: true`).
    pub hold_lease: bool,
    /// `Some(interval)`: start as a follower (`follow: true`).
    pub follow_interval: Option<Duration>,
}

impl DbSpec {
    /// A primary without a lease, as Litestream runs every database.
    pub fn primary(
        opts: DbOptions,
        replica: Arc<dyn ReplicaClient>,
        leaser: Arc<Leaser>,
    ) -> DbSpec {
        DbSpec {
            opts,
            replica,
            leaser,
            hold_lease: false,
            follow_interval: None,
        }
    }
}

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
    /// Takes and renews the primaries' replica leases.
    keeper: LeaseKeeper,
    /// How each database runs, for role changes.
    specs: Mutex<HashMap<PathBuf, DbSpec>>,
    /// Databases whose role is being changed: a second promotion or demotion of one is
    /// refused rather than queued behind the first.
    changing: Mutex<std::collections::HashSet<PathBuf>>,
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
        let keeper = LeaseKeeper::start(registry.clone(), events.clone())
            .context("start the lease thread")?;
        Ok(Store {
            registry,
            events,
            _pool: pool,
            shared,
            threads: Mutex::new(HashMap::new()),
            compactor: Mutex::new(compactor),
            keeper,
            specs: Mutex::new(HashMap::new()),
            changing: Mutex::new(Default::default()),
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

    /// Starts a database in the role its spec says; a path already registered is left as it
    /// is.
    pub fn add(&self, spec: DbSpec, dynamic: bool) -> Result<Added> {
        let path = spec.opts.path.clone();
        let file_id = FileId::of(&path).with_context(|| format!("{}: stat", path.display()))?;
        let (tx, rx) = db::channel();
        let role = match spec.follow_interval {
            Some(_) => Role::Follower,
            None => Role::Primary,
        };
        let mut view = DbView::new(path.clone(), file_id, spec.replica.url().to_string(), role);
        view.dynamic = dynamic;
        view.meta_dir = spec.opts.meta_dir.clone();
        match self.registry.insert(view, tx.clone()) {
            Inserted::Added => {}
            Inserted::SamePath => return Ok(Added::AlreadyRegistered),
            Inserted::SameFile(other) => return Ok(Added::SameFileAs(other)),
        }
        self.lock_specs().insert(path.clone(), spec.clone());
        match self.start_thread(&spec, role, None, (tx, rx)) {
            Ok(()) => Ok(Added::Registered),
            Err(e) => {
                self.registry.remove(&path);
                self.lock_specs().remove(&path);
                Err(e).with_context(|| format!("{}: start thread", path.display()))
            }
        }
    }

    /// Starts the thread of `role` for a registered database. A primary writes through the
    /// lease's gate when it holds the lease (`held`: one a promotion just took).
    fn start_thread(
        &self,
        spec: &DbSpec,
        role: Role,
        held: Option<Lease>,
        (tx, rx): (
            crossbeam_channel::Sender<DbCommand>,
            crossbeam_channel::Receiver<DbCommand>,
        ),
    ) -> Result<()> {
        let path = spec.opts.path.clone();
        if let Some(interval) = spec.follow_interval.filter(|_| role == Role::Follower) {
            let opts = FollowerOptions {
                path: path.clone(),
                interval,
            };
            let thread = follower::spawn(
                opts,
                spec.replica.clone(),
                spec.leaser.clone(),
                self.shared.clone(),
                rx,
            )?;
            self.lock_threads().insert(path, thread);
            return Ok(());
        }
        let client: Arc<dyn ReplicaClient> = if spec.hold_lease || held.is_some() {
            let gate = self.keeper.hold(&path, spec.leaser.clone(), held);
            Arc::new(LeasedClient::new(spec.replica.clone(), gate))
        } else {
            spec.replica.clone()
        };
        let handle = match db::spawn(
            spec.opts.clone(),
            client.clone(),
            self.shared.clone(),
            (tx, rx),
        ) {
            Ok(h) => h,
            Err(e) => {
                self.keeper.release(&path);
                return Err(e.into());
            }
        };
        if let Some(c) = self.lock_compactor().as_ref() {
            c.add(&path, client, &spec.opts.meta_dir);
        }
        self.lock_threads().insert(path, handle.thread);
        Ok(())
    }

    /// `/promote`: the follower of `path` takes the replica's lease (waiting up to `timeout`
    /// for the primary's to be released or to expire), applies the rest, and a primary thread
    /// replaces it. Returns the txid it starts from.
    pub fn promote(&self, path: &Path, timeout: Duration) -> Result<TxId, RoleError> {
        let (_changing, mut spec, ctl) = self.begin_role_change(path, Role::Follower)?;
        let (cmd, answer) = follower::promote_command(Instant::now() + timeout);
        ctl.send_timeout(cmd, COMMAND_WAIT).map_err(|_| {
            RoleError::Unavailable(format!(
                "{}: the follower's thread did not take the request",
                path.display()
            ))
        })?;
        // The wait for the lease is bounded by `timeout`; applying the replica's last files
        // after it is not (it ends when they are applied), but a hung replica is.
        let promotion = answer
            .recv_timeout(timeout + PROMOTE_CATCH_UP)
            .map_err(|_| {
                RoleError::Unavailable(format!("{}: the follower did not answer", path.display()))
            })??;
        if let Some(t) = self.lock_threads().remove(path) {
            join_within(t, Instant::now() + THREAD_EXIT);
        }
        // The follower's txid record goes: a primary moves past it, and a follower started
        // later on this file must not resume from it (it would apply files over newer pages).
        let sidecar = crate::follow::txid_path(path);
        if let Err(e) = crate::durable::remove_file(&sidecar) {
            log::warn!(path:% = sidecar.display(), error:% = e; "cannot remove the follower's txid file");
        }
        // A spool left from an earlier time as primary describes another history.
        if let Err(e) = Spool::open(&spec.opts.meta_dir).and_then(|s| s.clear()) {
            log::warn!(db:% = path.display(), error:% = e; "cannot clear the old spool");
        }
        if let Some((page_size, table)) = &promotion.pages {
            let meta = &spec.opts.meta_dir;
            if let Err(e) = db::hand_over_page_checksums(meta, *page_size, promotion.txid, table) {
                log::warn!(db:% = path.display(), error:% = e; "cannot hand the page checksums over; the first pass writes every page");
            }
        }
        // A promoted primary keeps the lease it took, whatever its config said.
        spec.hold_lease = true;
        self.lock_specs().insert(path.to_path_buf(), spec.clone());
        let (tx, rx) = db::channel();
        self.registry.replace_ctl(path, tx.clone(), |v| {
            v.role = Role::Primary;
            v.status = DbStatus::Open;
            v.primary_host = None;
            v.last_error = None;
        });
        if let Err(e) = self.start_thread(&spec, Role::Primary, Some(promotion.lease), (tx, rx)) {
            let msg = format!(
                "{}: promoted, but the primary thread did not start: {e:#}",
                path.display()
            );
            log::error!(db:% = path.display(), error = msg.as_str(); "promotion failed");
            self.registry.update(path, |v| {
                v.status = DbStatus::Error;
                v.last_error = Some(msg.clone());
            });
            return Err(RoleError::Unavailable(msg));
        }
        self.events.publish(&Event::PrimaryChange {
            is_primary: true,
            hostname: None,
            path: Some(path.to_path_buf()),
        });
        Ok(promotion.txid)
    }

    /// `/demote`: the primary of `path` syncs and waits for the replica to hold every
    /// transaction, stops, gives the lease back, and a follower of its replica replaces it.
    /// Nothing changes when the replica cannot confirm within `timeout`.
    pub fn demote(&self, path: &Path, timeout: Duration) -> Result<TxId, RoleError> {
        let (_changing, mut spec, ctl) = self.begin_role_change(path, Role::Primary)?;
        let deadline = Instant::now() + timeout;
        let (reply, answer) = bounded(1);
        ctl.send_timeout(DbCommand::Sync { wait: true, reply }, COMMAND_WAIT)
            .map_err(|_| {
                RoleError::Unavailable(format!(
                    "{}: the database thread did not take the request",
                    path.display()
                ))
            })?;
        let synced = answer
            .recv_timeout(timeout)
            .map_err(|_| {
                RoleError::Unavailable(format!(
                    "{}: the replica did not confirm every transaction within {}; nothing changed",
                    path.display(),
                    crate::duration::format(timeout)
                ))
            })?
            .map_err(|e| {
                RoleError::Unavailable(format!(
                    "{}: cannot sync before demoting: {e}; nothing changed",
                    path.display()
                ))
            })?;
        if synced.replicated_txid < synced.txid {
            return Err(RoleError::Unavailable(format!(
                "{}: the replica holds txid {} of {}; nothing changed",
                path.display(),
                synced.replicated_txid,
                synced.txid
            )));
        }
        let (done, stopped) = bounded(1);
        let _ = ctl.send_timeout(
            DbCommand::Shutdown {
                deadline,
                reply: done,
            },
            COMMAND_WAIT,
        );
        let _ = stopped.recv_timeout(timeout + Duration::from_secs(5));
        if let Some(c) = self.lock_compactor().as_ref() {
            c.remove(path);
        }
        if let Some(t) = self.lock_threads().remove(path) {
            join_within(t, Instant::now() + THREAD_EXIT);
        }
        let view = self
            .registry
            .get(path)
            .ok_or_else(|| not_registered(path))?;
        if view.replicated_txid < view.txid {
            // Written between the sync and the stop, and not confirmed: stay primary.
            let (tx, rx) = db::channel();
            self.registry.replace_ctl(path, tx.clone(), |_| {});
            // The lease is still ours: the keeper takes it over as this process's.
            if let Err(e) = self.start_thread(&spec, Role::Primary, None, (tx, rx)) {
                log::error!(db:% = path.display(), error = format!("{e:#}"); "cannot restart the primary thread");
            }
            return Err(RoleError::Unavailable(format!(
                "{}: new transactions reached txid {} but the replica holds {}; still the primary",
                path.display(),
                view.txid,
                view.replicated_txid
            )));
        }
        self.keeper.release(path);
        let txid = view.replicated_txid;
        if let Err(e) = crate::follow::write_txid(path, txid) {
            log::error!(db:% = path.display(), error = format!("{e:#}"); "cannot record the txid for following");
        }
        spec.follow_interval = Some(
            spec.follow_interval
                .unwrap_or(crate::follow::DEFAULT_INTERVAL),
        );
        self.lock_specs().insert(path.to_path_buf(), spec.clone());
        let (tx, rx) = db::channel();
        self.registry.replace_ctl(path, tx.clone(), |v| {
            v.role = Role::Follower;
            v.status = DbStatus::Open;
            v.lease = None;
            v.last_error = None;
        });
        if let Err(e) = self.start_thread(&spec, Role::Follower, None, (tx, rx)) {
            let msg = format!(
                "{}: demoted, but the follower thread did not start: {e:#}",
                path.display()
            );
            self.registry.update(path, |v| {
                v.status = DbStatus::Error;
                v.last_error = Some(msg.clone());
            });
            return Err(RoleError::Unavailable(msg));
        }
        self.events.publish(&Event::PrimaryChange {
            is_primary: false,
            hostname: None,
            path: Some(path.to_path_buf()),
        });
        Ok(txid)
    }

    /// Starts a role change of `path`, which must be in role `from`: marks it as changing
    /// until the returned guard drops (a second change meanwhile is refused), and returns
    /// its spec and its thread's channel.
    fn begin_role_change(
        &self,
        path: &Path,
        from: Role,
    ) -> Result<(RoleChange<'_>, DbSpec, Sender<DbCommand>), RoleError> {
        {
            let mut changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
            if !changing.insert(path.to_path_buf()) {
                return Err(RoleError::Conflict(format!(
                    "{}: a promotion or demotion is already in progress",
                    path.display()
                )));
            }
        }
        let guard = RoleChange {
            store: self,
            path: path.to_path_buf(),
        };
        let view = self
            .registry
            .get(path)
            .ok_or_else(|| not_registered(path))?;
        if view.role != from {
            let other = match from {
                Role::Primary => Role::Follower,
                Role::Follower => Role::Primary,
            };
            return Err(RoleError::Conflict(format!(
                "{} is a {} here, not a {}",
                path.display(),
                other.as_str(),
                from.as_str()
            )));
        }
        let spec = self
            .lock_specs()
            .get(path)
            .cloned()
            .ok_or_else(|| not_registered(path))?;
        let ctl = self
            .registry
            .ctl(path)
            .ok_or_else(|| not_registered(path))?;
        Ok((guard, spec, ctl))
    }

    /// `litestream start` of a database whose lease was refused or lost: try to take it again.
    pub fn retry_lease(&self, path: &Path) {
        self.keeper.retry(path);
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
        self.keeper.release(path);
        self.lock_specs().remove(path);
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
        // After the final uploads: the next primary may take the leases at once.
        self.keeper.stop();
        self.events.close_all();
        // Uploader threads are idle once every database thread has finished; an upload still
        // running past the deadline is abandoned with the process (its file stays spooled).
    }

    fn lock_compactor(&self) -> std::sync::MutexGuard<'_, Option<Compactor>> {
        self.compactor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_specs(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, DbSpec>> {
        self.specs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uptime-related facts for `/info`.
    pub fn started_at(&self) -> SystemTime {
        self.registry.started_at()
    }
}

/// A role change in progress (see [`Store::begin_role_change`]).
struct RoleChange<'a> {
    store: &'a Store,
    path: PathBuf,
}

impl Drop for RoleChange<'_> {
    fn drop(&mut self) {
        let mut changing = self
            .store
            .changing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        changing.remove(&self.path);
    }
}

/// How long a role change waits for a database thread to take its command.
const COMMAND_WAIT: Duration = Duration::from_secs(5);

/// How long a promotion may take past its wait for the lease: applying the replica's last
/// files.
const PROMOTE_CATCH_UP: Duration = Duration::from_secs(300);

fn not_registered(path: &Path) -> RoleError {
    RoleError::Conflict(format!("{}: not registered", path.display()))
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
