//! A database this daemon follows (`follow: true`): its thread keeps the file a copy of the
//! replica another primary writes, with the apply engine of `restore -f` ([`crate::follow`]),
//! answers the same commands as a primary's thread, and on `/promote` takes the replica's
//! lease and hands the database to a primary thread.
//!
//! What it publishes: the registry entry (`role: follower`, status `following`, its txid,
//! which the replica holds by construction, so it is also the replicated txid, and the
//! primary's host name read from the lease), a `tx` event per applied LTX file with the
//! primary's txid and checksum, and `primaryChange` when the lease names another primary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::db::{DbCommand, Shared, SyncReply, SyncStatus};
use crate::events::Event;
use crate::follow::{self, Follower};
use crate::ltx::TxId;
use crate::registry::DbStatus;
use crate::replica::lease::{self, Lease, LeaseError, Leaser};
use crate::replica::ReplicaClient;
use crate::restore::{self, Target};

/// How often a follower reads the lease to learn who the primary is.
const LEASE_LOOK: Duration = Duration::from_secs(5);

/// Settings of a followed database.
#[derive(Clone, Debug)]
pub struct FollowerOptions {
    pub path: PathBuf,
    /// How often the replica is listed.
    pub interval: Duration,
}

/// What a successful promotion hands over to the primary thread that replaces the follower.
#[derive(Debug)]
pub struct Promotion {
    /// The replica's lease, taken by the follower.
    pub lease: Lease,
    /// The txid the database is at: the replica's newest.
    pub txid: TxId,
    /// The page size and the primary's page checksums at `txid`, when the follower knows
    /// them in full: the primary thread then writes only what differs at its first pass.
    pub pages: Option<(u32, crate::ltx::PageChecksums)>,
}

/// Why a promotion or demotion did not happen (nothing changed).
#[derive(Debug)]
pub enum RoleError {
    /// The database is not in the role the request needs, or not ready (HTTP 409).
    Conflict(String),
    /// The replica could not be reached or could not confirm (HTTP 503).
    Unavailable(String),
}

impl RoleError {
    /// The same error, saying which database it is about.
    fn about(self, path: &Path) -> RoleError {
        match self {
            RoleError::Conflict(m) => RoleError::Conflict(format!("{}: {m}", path.display())),
            RoleError::Unavailable(m) => RoleError::Unavailable(format!("{}: {m}", path.display())),
        }
    }
}

impl std::fmt::Display for RoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoleError::Conflict(m) | RoleError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Starts the follower thread of one database; the caller registered it with `ctl`'s sender.
pub fn spawn(
    opts: FollowerOptions,
    replica: Arc<dyn ReplicaClient>,
    leaser: Arc<Leaser>,
    shared: Shared,
    ctl: Receiver<DbCommand>,
) -> std::io::Result<JoinHandle<()>> {
    let name = opts
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut t = FollowerThread {
        opts,
        leaser,
        shared,
        ctl,
        paused: false,
        next_poll: Instant::now(),
        next_lease_look: Instant::now(),
        primary_host: None,
        start_error: None,
        pending: None,
    };
    thread::Builder::new()
        .name(format!("follow:{name}"))
        .spawn(move || t.run(replica.as_ref()))
}

struct FollowerThread {
    opts: FollowerOptions,
    leaser: Arc<Leaser>,
    shared: Shared,
    ctl: Receiver<DbCommand>,
    paused: bool,
    next_poll: Instant,
    next_lease_look: Instant,
    /// The primary's host name as last read from the lease (outer `None`: not read yet).
    primary_host: Option<Option<String>>,
    /// Why the database could not be restored or resumed yet (logged once).
    start_error: Option<String>,
    /// A command that interrupted a promotion's wait, handled next.
    pending: Option<DbCommand>,
}

impl FollowerThread {
    fn path(&self) -> &Path {
        &self.opts.path
    }

    fn run(&mut self, client: &dyn ReplicaClient) {
        log::info!(
            db:% = self.path().display(),
            replica:% = client.url(),
            interval = crate::duration::format(self.opts.interval).as_str();
            "following"
        );
        let mut follower: Option<Follower<'_>> = None;
        loop {
            let now = Instant::now();
            if !self.paused && now >= self.next_poll {
                self.next_poll = now + self.opts.interval;
                let _ = self.poll(client, &mut follower);
            }
            if now >= self.next_lease_look {
                self.next_lease_look = now + LEASE_LOOK.max(self.opts.interval);
                self.look_at_lease();
            }
            let mut wake = self.next_lease_look;
            if !self.paused {
                wake = wake.min(self.next_poll);
            }
            let next = match self.pending.take() {
                Some(cmd) => Ok(cmd),
                None => self.ctl.recv_timeout(wake.saturating_duration_since(now)),
            };
            let cmd = match next {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match cmd {
                DbCommand::Shutdown { reply, .. } => {
                    drop(follower);
                    log::info!(db:% = self.path().display(); "follower stopped");
                    let _ = reply.send(());
                    return;
                }
                DbCommand::Sync { reply, .. } => {
                    let answer = if self.paused {
                        Err("database is stopped; start it first".to_string())
                    } else {
                        self.sync_now(client, &mut follower)
                    };
                    let _ = reply.send(answer);
                }
                DbCommand::Pause { reply } => {
                    let was_running = !self.paused;
                    if was_running {
                        self.paused = true;
                        // Closes our connection: nothing of ours stays open on the file.
                        follower = None;
                        self.set_status(DbStatus::Stopped, None);
                        log::info!(db:% = self.path().display(); "following stopped");
                    }
                    let _ = reply.send(was_running);
                }
                DbCommand::Resume { reply } => {
                    let was_stopped = self.paused;
                    if was_stopped {
                        self.paused = false;
                        self.next_poll = Instant::now();
                        self.set_status(DbStatus::Open, None);
                        log::info!(db:% = self.path().display(); "following started");
                    }
                    let _ = reply.send(was_stopped);
                }
                DbCommand::Promote { deadline, reply } => {
                    match self.promote(client, &mut follower, deadline) {
                        Ok(p) => {
                            // Our connection closes before the primary thread opens its own.
                            drop(follower);
                            let _ = reply.send(Ok(p));
                            return;
                        }
                        Err(e) => {
                            log::warn!(db:% = self.path().display(), error:% = e; "promotion refused");
                            let _ = reply.send(Err(e.about(self.path())));
                        }
                    }
                }
                DbCommand::WalChanged | DbCommand::Uploaded { .. } => {}
            }
        }
    }

    /// Opens the follower: resumes the database from its sidecar, or restores it first.
    fn start<'a>(&self, client: &'a dyn ReplicaClient) -> Result<Follower<'a>> {
        let path = self.path();
        if let Some(txid) = follow::resume_point(client, path)? {
            log::info!(db:% = path.display(), txid:% = txid; "follower resuming");
            return Ok(Follower::open(client, path, txid, true)?.recording());
        }
        if restore::list_all(client)?.is_empty() {
            bail!(
                "{}: the replica has no files yet; waiting for its primary",
                client.url()
            );
        }
        let plan = restore::plan(client, Target::Latest)?;
        // Nothing is there (absent or empty file): a -wal or -shm beside it belongs to no
        // database, and the txid is recorded before the database takes its name.
        let report = restore::apply_then(
            client,
            &plan,
            path,
            true,
            |r| follow::write_txid(path, r.txid),
            &mut |_| {},
        )
        .with_context(|| format!("{}: restore", path.display()))?;
        log::info!(
            db:% = path.display(),
            txid:% = report.txid,
            files = report.files;
            "follower restored the database"
        );
        Ok(Follower::open(client, path, report.txid, false)?.recording())
    }

    /// Opens the follower if it is not yet, then applies what the replica holds past it.
    /// Returns how many files were applied.
    fn poll<'a>(
        &mut self,
        client: &'a dyn ReplicaClient,
        follower: &mut Option<Follower<'a>>,
    ) -> Result<usize, String> {
        if follower.is_none() {
            match self.start(client) {
                Ok(f) => {
                    self.start_error = None;
                    let txid = f.txid();
                    self.shared.registry.update(&self.opts.path, |v| {
                        v.txid = txid;
                        v.replicated_txid = txid;
                        v.status = DbStatus::Following;
                        v.last_error = None;
                        v.last_sync_at = Some(SystemTime::now());
                    });
                    *follower = Some(f);
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if self.start_error.as_ref() != Some(&msg) {
                        log::error!(db:% = self.path().display(), error = msg.as_str(); "cannot start following; retrying");
                    }
                    self.set_status(DbStatus::Error, Some(msg.clone()));
                    self.start_error = Some(msg.clone());
                    return Err(msg);
                }
            }
        }
        let f = follower.as_mut().expect("opened above");
        let ctl = &self.ctl;
        let result = f.poll(&|| !ctl.is_empty());
        let applied = f.take_applied();
        let txid = f.txid();
        for a in &applied {
            self.shared.events.publish(&Event::Tx {
                path: self.opts.path.clone(),
                txid: a.txid,
                post_apply_checksum: a.post_apply_checksum,
                page_size: a.page_size,
                commit: a.commit,
                timestamp_ms: a.timestamp_ms,
            });
        }
        match result {
            Ok(n) => {
                f.succeeded();
                if n > 0 {
                    log::debug!(db:% = self.path().display(), files = n, txid:% = txid; "follower applied updates");
                }
                let condition = f.condition().map(str::to_string);
                self.shared.registry.update(&self.opts.path, |v| {
                    v.txid = txid;
                    v.replicated_txid = txid;
                    v.status = DbStatus::Following;
                    v.last_error = condition;
                    v.last_sync_at = Some(SystemTime::now());
                });
                Ok(n)
            }
            Err(e) => {
                f.failed(&e);
                let msg = format!("{e:#}");
                self.shared.registry.update(&self.opts.path, |v| {
                    v.txid = txid;
                    v.replicated_txid = txid;
                    v.status = DbStatus::Error;
                    v.last_error = Some(msg.clone());
                });
                Err(msg)
            }
        }
    }

    /// `/sync` on a follower: applies what the replica holds now.
    fn sync_now<'a>(
        &mut self,
        client: &'a dyn ReplicaClient,
        follower: &mut Option<Follower<'a>>,
    ) -> Result<SyncReply, String> {
        let n = self.poll(client, follower)?;
        let txid = follower.as_ref().map_or(TxId::ZERO, |f| f.txid());
        Ok(SyncReply {
            status: if n > 0 {
                SyncStatus::Synced
            } else {
                SyncStatus::NoChange
            },
            txid,
            replicated_txid: txid,
        })
    }

    /// Reads the lease to learn the primary's host name; a change is published.
    fn look_at_lease(&mut self) {
        let host = match self.leaser.inspect() {
            Ok(Some(l)) if !l.is_expired(crate::timefmt::now_ms()) => {
                lease::owner_host(&l.owner).map(str::to_string)
            }
            Ok(_) => None,
            Err(e) => {
                log::debug!(db:% = self.path().display(), error:% = e; "cannot read the lease");
                return;
            }
        };
        if self.primary_host.as_ref() == Some(&host) {
            return;
        }
        let first = self.primary_host.is_none();
        self.primary_host = Some(host.clone());
        self.shared
            .registry
            .update(&self.opts.path, |v| v.primary_host = host.clone());
        if !first || host.is_some() {
            log::info!(
                db:% = self.path().display(),
                primary = host.as_deref().unwrap_or("none");
                "follower sees a primary change"
            );
            self.shared.events.publish(&Event::PrimaryChange {
                is_primary: false,
                hostname: host,
                path: Some(self.opts.path.clone()),
            });
        }
    }

    /// Takes the lease (waiting until `deadline` for the primary's to be released or to
    /// expire, applying its last files meanwhile), then applies everything the replica holds.
    fn promote<'a>(
        &mut self,
        client: &'a dyn ReplicaClient,
        follower: &mut Option<Follower<'a>>,
        deadline: Instant,
    ) -> Result<Promotion, RoleError> {
        if self.paused {
            return Err(RoleError::Conflict(
                "the follower is stopped; start it first".into(),
            ));
        }
        if follower.is_none() {
            self.poll(client, follower)
                .map_err(|e| RoleError::Unavailable(format!("not restored yet: {e}")))?;
        }
        let lease = loop {
            let attempt = match self.leaser.acquire() {
                Err(LeaseError::Held { owner, .. }) if lease::owner_is_gone_or_us(&owner) => {
                    match self.leaser.inspect() {
                        Ok(Some(stale)) => self.leaser.take_over(&stale),
                        Ok(None) => self.leaser.acquire(),
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match attempt {
                Ok(l) => break l,
                Err(e @ LeaseError::Held { .. }) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(RoleError::Conflict(format!(
                            "{e}; the primary still holds the replica (demote it, or wait for its lease to expire)"
                        )));
                    }
                    // The primary may still be writing: keep up while waiting, and give way
                    // to any other command (a shutdown must not wait out the promotion).
                    let _ = self.poll(client, follower);
                    let pause = deadline
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(500));
                    if let Ok(cmd) = self.ctl.recv_timeout(pause) {
                        self.pending = Some(cmd);
                        return Err(RoleError::Unavailable(
                            "interrupted by another request to this database".into(),
                        ));
                    }
                }
                // Taken and lost between our read and write: look again.
                Err(LeaseError::NotHeld { .. }) => {}
                Err(LeaseError::Replica(e)) => {
                    return Err(RoleError::Unavailable(format!(
                        "cannot take the replica's lease: {e:#}"
                    )))
                }
            }
        };
        // Nobody writes the replica now: apply its last files.
        let caught_up = loop {
            match self.poll(client, follower) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        let f = follower.as_ref().expect("polled above");
        let refused = match (caught_up, f.condition()) {
            (Err(e), _) => Some(RoleError::Unavailable(format!(
                "cannot apply the replica's last files: {e}"
            ))),
            (Ok(()), Some(c)) => Some(RoleError::Conflict(format!(
                "the follower cannot reach the replica's newest state ({c}); promoting now would drop what follows"
            ))),
            (Ok(()), None) => None,
        };
        if let Some(e) = refused {
            if let Err(re) = self.leaser.release(&lease) {
                log::warn!(db:% = self.path().display(), error:% = re; "cannot release the lease after a failed promotion");
            }
            return Err(e);
        }
        let txid = f.txid();
        log::info!(
            db:% = self.path().display(),
            txid:% = txid,
            generation = lease.generation;
            "follower promoted: took the lease and applied the replica's last files"
        );
        let pages = f.page_checksums().map(|(size, t)| (size, t.clone()));
        Ok(Promotion { lease, txid, pages })
    }

    fn set_status(&self, status: DbStatus, error: Option<String>) {
        self.shared.registry.update(&self.opts.path, |v| {
            v.status = status;
            v.last_error = error;
        });
    }
}

/// A `Promote` command for a follower thread, and where its answer arrives.
pub fn promote_command(deadline: Instant) -> (DbCommand, Receiver<Result<Promotion, RoleError>>) {
    let (tx, rx): (Sender<Result<Promotion, RoleError>>, _) = crossbeam_channel::bounded(1);
    (
        DbCommand::Promote {
            deadline,
            reply: tx,
        },
        rx,
    )
}
