//! The replica leases of this daemon's primaries: one thread takes each lease, renews it every
//! third of its TTL, and gives it back; a [`LeaseGate`] in front of each database's replica
//! client lets writes through only while the lease is held.
//!
//! Why a gate on the client rather than checks in the database thread: every writer of a
//! replica (the uploader, compaction, retention) goes through its client, so one check covers
//! them all, and the database thread never waits on a lease request.
//!
//! The rules:
//! - A write is allowed until `start + ttl - margin`, where `start` is when the last successful
//!   acquire or renewal was *sent* (a monotonic instant, so a clock step cannot extend it) and
//!   the margin is a tenth of the TTL (for skew between our clock and a taker's). A promotion
//!   elsewhere waits until the lease's `expires_at` has passed, which is after that instant.
//! - While the lease is being acquired or a renewal is overdue, writes fail as transient (the
//!   spool keeps everything and the uploader retries).
//! - Another owner's live lease at start refuses the database: it is stopped with an error
//!   naming the holder and expiry (`litestream start` tries again). A lease found taken over
//!   at a renewal is lost: writes stop at once, the database is stopped with an error saying
//!   who holds it now, and a `primaryChange` event says this node is no longer its primary.
//!   Neither is retried on its own: taking the replica back from another primary would bury
//!   what it wrote, which is for an operator to decide.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::db::DbCommand;
use crate::events::{Event, EventHub};
use crate::ltx::{Level, TxId};
use crate::registry::{LeaseView, Registry};
use crate::replica::error::{ErrorKind, ReplicaError};
use crate::replica::lease::{self, Lease, LeaseError, Leaser};
use crate::replica::{self, LtxFileInfo, ReplicaClient};
use crate::timefmt;

/// Whether the replica may be written now, shared by a database's replica client and the
/// keeper.
pub struct LeaseGate {
    url: String,
    state: Mutex<GateState>,
}

#[derive(Clone, Debug)]
enum GateState {
    /// The lease is being acquired.
    Waiting,
    /// Held; writes are allowed until this instant.
    Held { until: Instant },
    /// Refused or lost: why.
    Closed(String),
}

impl LeaseGate {
    fn new(url: &str) -> Arc<LeaseGate> {
        Arc::new(LeaseGate {
            url: url.to_string(),
            state: Mutex::new(GateState::Waiting),
        })
    }

    fn set(&self, state: GateState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// `Ok` when a write may go to the replica now; else the error the writer reports:
    /// transient while the lease is awaited, permanent once it was refused or lost.
    pub fn check(&self, op: &str, key: &str) -> replica::Result<()> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (kind, why) = match state {
            GateState::Held { until } if Instant::now() < until => return Ok(()),
            GateState::Held { .. } => (
                ErrorKind::Transient,
                "the replica's lease is due for renewal; not writing until it is renewed".into(),
            ),
            GateState::Waiting => (
                ErrorKind::Transient,
                "waiting for the replica's lease".into(),
            ),
            GateState::Closed(why) => (ErrorKind::Permanent, why),
        };
        Err(ReplicaError::new(kind, &self.url, op, key, why))
    }
}

/// A replica client whose writes pass through a [`LeaseGate`]; reads are not gated.
pub struct LeasedClient {
    inner: Arc<dyn ReplicaClient>,
    gate: Arc<LeaseGate>,
}

impl LeasedClient {
    /// `inner`, written only while `gate` allows.
    pub fn new(inner: Arc<dyn ReplicaClient>, gate: Arc<LeaseGate>) -> LeasedClient {
        LeasedClient { inner, gate }
    }
}

impl ReplicaClient for LeasedClient {
    fn url(&self) -> &str {
        self.inner.url()
    }

    fn ltx_files(&self, level: Level) -> replica::Result<Vec<LtxFileInfo>> {
        self.inner.ltx_files(level)
    }

    fn open_ltx(
        &self,
        level: Level,
        min: TxId,
        max: TxId,
    ) -> replica::Result<Box<dyn Read + Send>> {
        self.inner.open_ltx(level, min, max)
    }

    fn put_ltx(
        &self,
        level: Level,
        min: TxId,
        max: TxId,
        timestamp_ms: i64,
        src: &Path,
    ) -> replica::Result<()> {
        self.gate
            .check("put", &format!("{level}/{min}-{max}.ltx"))?;
        self.inner.put_ltx(level, min, max, timestamp_ms, src)
    }

    fn delete_ltx(&self, level: Level, files: &[(TxId, TxId)]) -> replica::Result<()> {
        self.gate.check("delete", &format!("{level}/"))?;
        self.inner.delete_ltx(level, files)
    }
}

enum Command {
    Hold {
        path: PathBuf,
        leaser: Arc<Leaser>,
        gate: Arc<LeaseGate>,
        lease: Option<Lease>,
    },
    Retry {
        path: PathBuf,
    },
    Release {
        path: PathBuf,
        reply: Sender<()>,
    },
    Stop {
        reply: Sender<()>,
    },
}

/// The keeper thread's handle.
pub struct LeaseKeeper {
    tx: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// How long a release or stop waits for the keeper (one lease request per lease).
const RELEASE_WAIT: Duration = Duration::from_secs(10);

impl LeaseKeeper {
    /// Starts the keeper thread.
    pub fn start(registry: Arc<Registry>, events: Arc<EventHub>) -> std::io::Result<LeaseKeeper> {
        let (tx, rx) = bounded(64);
        let thread = thread::Builder::new()
            .name("leases".into())
            .spawn(move || {
                Keeper {
                    rx,
                    registry,
                    events,
                    slots: BTreeMap::new(),
                }
                .run()
            })?;
        Ok(LeaseKeeper {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Keeps the lease of `path`'s replica: takes it (`lease: None`) or goes on renewing one
    /// just taken. Returns the gate its replica client must write through.
    pub fn hold(&self, path: &Path, leaser: Arc<Leaser>, lease: Option<Lease>) -> Arc<LeaseGate> {
        let gate = LeaseGate::new(leaser.url());
        if lease.is_some() {
            gate.set(GateState::Held {
                until: Instant::now() + valid_for(leaser.ttl()),
            });
        }
        let _ = self.tx.send(Command::Hold {
            path: path.to_path_buf(),
            leaser,
            gate: gate.clone(),
            lease,
        });
        gate
    }

    /// Tries again to take a lease that was refused or lost (`litestream start`).
    pub fn retry(&self, path: &Path) {
        let _ = self.tx.send(Command::Retry {
            path: path.to_path_buf(),
        });
    }

    /// Gives `path`'s lease back (if held) and forgets it; waits for the request.
    pub fn release(&self, path: &Path) {
        let (reply, done) = bounded(1);
        let cmd = Command::Release {
            path: path.to_path_buf(),
            reply,
        };
        if self.tx.send(cmd).is_ok() {
            let _ = done.recv_timeout(RELEASE_WAIT);
        }
    }

    /// Gives every lease back and ends the thread (daemon shutdown, after the final uploads).
    pub fn stop(&self) {
        let (reply, done) = bounded(1);
        if self.tx.send(Command::Stop { reply }).is_ok() {
            let _ = done.recv_timeout(RELEASE_WAIT);
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// How long after sending a successful acquire or renewal writes stay allowed.
fn valid_for(ttl: Duration) -> Duration {
    ttl - ttl / 10
}

/// How often a held lease is renewed: a third of its TTL, so two renewals can fail before
/// it lapses.
fn renew_every(ttl: Duration) -> Duration {
    ttl / 3
}

/// The most a failed acquire or renewal waits before the next try.
const MAX_RETRY: Duration = Duration::from_secs(5);

struct Slot {
    leaser: Arc<Leaser>,
    gate: Arc<LeaseGate>,
    lease: Option<Lease>,
    /// When to act next; `None`: nothing to do (refused or lost).
    due: Option<Instant>,
    /// Failed requests in a row, for the retry delay and to log a run once.
    failures: u32,
}

struct Keeper {
    rx: Receiver<Command>,
    registry: Arc<Registry>,
    events: Arc<EventHub>,
    slots: BTreeMap<PathBuf, Slot>,
}

impl Keeper {
    fn run(&mut self) {
        loop {
            let now = Instant::now();
            let next = self.slots.values().filter_map(|s| s.due).min();
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(now)
            });
            match self.rx.recv_timeout(wait) {
                Ok(Command::Stop { reply }) => {
                    let paths: Vec<_> = self.slots.keys().cloned().collect();
                    for p in paths {
                        self.give_back(&p);
                    }
                    let _ = reply.send(());
                    return;
                }
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            let due: Vec<PathBuf> = self
                .slots
                .iter()
                .filter(|(_, s)| s.due.is_some_and(|d| d <= now))
                .map(|(p, _)| p.clone())
                .collect();
            for path in due {
                self.tend(&path);
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Hold {
                path,
                leaser,
                gate,
                lease,
            } => {
                let due = match &lease {
                    Some(_) => Instant::now() + renew_every(leaser.ttl()),
                    None => Instant::now(),
                };
                if let Some(l) = &lease {
                    self.show(&path, Some(l));
                }
                self.slots.insert(
                    path,
                    Slot {
                        leaser,
                        gate,
                        lease,
                        due: Some(due),
                        failures: 0,
                    },
                );
            }
            Command::Retry { path } => {
                if let Some(s) = self.slots.get_mut(&path) {
                    if s.due.is_none() {
                        s.lease = None;
                        s.gate.set(GateState::Waiting);
                        s.due = Some(Instant::now());
                    }
                }
            }
            Command::Release { path, reply } => {
                self.give_back(&path);
                let _ = reply.send(());
            }
            Command::Stop { .. } => unreachable!("handled in run"),
        }
    }

    /// Releases `path`'s lease if it is held, and forgets the slot.
    fn give_back(&mut self, path: &Path) {
        let Some(slot) = self.slots.remove(path) else {
            return;
        };
        slot.gate
            .set(GateState::Closed("the lease was released".into()));
        if let Some(l) = &slot.lease {
            match slot.leaser.release(l) {
                Ok(()) => log::info!(
                    db:% = path.display(),
                    replica:% = slot.leaser.url(),
                    generation = l.generation;
                    "lease released"
                ),
                Err(e) => log::warn!(
                    db:% = path.display(),
                    error:% = e;
                    "cannot release the lease; it lapses at its expiry"
                ),
            }
        }
        self.registry.update(path, |v| v.lease = None);
    }

    /// Acquires or renews `path`'s lease, whichever is due.
    fn tend(&mut self, path: &Path) {
        let Some(slot) = self.slots.get_mut(path) else {
            return;
        };
        let sent = Instant::now();
        let ttl = slot.leaser.ttl();
        let result = match &slot.lease {
            Some(l) => slot.leaser.renew(l),
            None => match slot.leaser.acquire() {
                Err(LeaseError::Held { owner, .. }) if lease::owner_is_gone_or_us(&owner) => {
                    take_over_own(&slot.leaser)
                }
                other => other,
            },
        };
        match result {
            Ok(l) => {
                if slot.lease.is_none() || slot.failures > 0 {
                    log::info!(
                        db:% = path.display(),
                        replica:% = slot.leaser.url(),
                        generation = l.generation,
                        expires_at:% = timefmt::rfc3339_ms(l.expires_at_ms);
                        "lease held"
                    );
                }
                slot.gate.set(GateState::Held {
                    until: sent + valid_for(ttl),
                });
                slot.due = Some(sent + renew_every(ttl));
                slot.failures = 0;
                slot.lease = Some(l.clone());
                self.show(path, Some(&l));
            }
            Err(e @ (LeaseError::Held { .. } | LeaseError::NotHeld { .. })) => {
                let lost = slot.lease.is_some();
                let holder = match &e {
                    LeaseError::Held { owner, .. } => Some(owner.clone()),
                    LeaseError::NotHeld { current, .. } => {
                        current.as_ref().map(|c| c.owner.clone())
                    }
                    LeaseError::Replica(_) => None,
                };
                let why = if lost {
                    format!("lease lost: {e}; not writing the replica (`litestream start` takes it again once it is free)")
                } else {
                    format!("refused: {e}; another primary writes this replica (`litestream start` tries again)")
                };
                log::error!(db:% = path.display(), error = why.as_str(); "replica lease not held; replication stopped");
                slot.gate.set(GateState::Closed(why.clone()));
                slot.lease = None;
                slot.due = None;
                self.registry.update(path, |v| v.lease = None);
                stop_database(&self.registry, path, &why);
                if lost {
                    self.events.publish(&Event::PrimaryChange {
                        is_primary: false,
                        hostname: holder
                            .as_deref()
                            .and_then(lease::owner_host)
                            .map(str::to_string),
                        path: Some(path.to_path_buf()),
                    });
                }
            }
            Err(LeaseError::Replica(e)) => {
                slot.failures += 1;
                let delay = (renew_every(ttl) / 4).min(MAX_RETRY);
                if slot.failures == 1 {
                    log::warn!(
                        db:% = path.display(),
                        error = format!("{e:#}"),
                        retry_in:? = delay;
                        "cannot reach the replica's lease; retrying"
                    );
                }
                slot.due = Some(Instant::now() + delay);
            }
        }
    }

    /// Shows the lease in `/list`.
    fn show(&self, path: &Path, lease: Option<&Lease>) {
        let view = lease.map(|l| LeaseView {
            owner: l.owner.clone(),
            generation: l.generation,
            expires_at_ms: l.expires_at_ms,
        });
        self.registry.update(path, |v| v.lease = view);
    }
}

/// Takes over the lease left by this host's exited process (or by this process).
fn take_over_own(leaser: &Leaser) -> Result<Lease, LeaseError> {
    match leaser.inspect()? {
        Some(stale) if lease::owner_is_gone_or_us(&stale.owner) => {
            log::info!(
                replica:% = leaser.url(),
                owner:% = stale.owner;
                "taking over the lease of this host's exited process"
            );
            leaser.take_over(&stale)
        }
        _ => leaser.acquire(),
    }
}

/// Stops the database's thread (it stays registered) and records why, so `/list` says it.
fn stop_database(registry: &Registry, path: &Path, why: &str) {
    if let Some(ctl) = registry.ctl(path) {
        let (reply, done) = bounded(1);
        if ctl
            .send_timeout(DbCommand::Pause { reply }, Duration::from_secs(5))
            .is_ok()
        {
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }
    registry.update(path, |v| v.last_error = Some(why.to_string()));
}
