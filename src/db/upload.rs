//! The upload side of a database: the queue of spooled files not yet confirmed by the replica
//! (one in flight at a time, so the replica only ever grows by the next TXID), retries with
//! backoff, and the `/sync` callers waiting for the replica.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam_channel::Sender;

use crate::events::Event;
use crate::ltx::{Level, TxId};
use crate::replica::uploader::UploadJob;
use crate::replica::{self, ErrorKind, ReplicaError};

use super::sync::SyncState;
use super::{DbCommand, SyncReply, SyncStatus};

pub(super) struct Uploads {
    /// Spooled files not yet confirmed, oldest first.
    pub(super) queue: VecDeque<PendingUpload>,
    pub(super) in_flight: bool,
    pub(super) retry_at: Option<Instant>,
    pub(super) failures: u32,
    pub(super) replicated: TxId,
    /// Whether the replica's position is known ([`SyncState::reconcile_remote`] succeeded);
    /// until it is, `retry_at` is when to list it again and nothing is uploaded.
    pub(super) remote_known: bool,
}

pub(super) struct PendingUpload {
    pub(super) min: TxId,
    pub(super) max: TxId,
    pub(super) timestamp_ms: i64,
    pub(super) path: PathBuf,
}

impl PendingUpload {
    /// Where the file goes: a snapshot taken to bridge a gap (min 1, max > 1) is a level-9
    /// snapshot, as Litestream stores them; everything else, including the first file, L0.
    pub(super) fn level(&self) -> Level {
        if self.min == TxId::new(1) && self.max > TxId::new(1) {
            Level::SNAPSHOT
        } else {
            Level::L0
        }
    }
}

pub(super) struct Waiter {
    pub(super) txid: TxId,
    pub(super) changed: bool,
    pub(super) reply: Sender<Result<SyncReply, String>>,
}

impl SyncState {
    /// When the next upload attempt is due, if one is waiting.
    pub(super) fn upload_wakeup(&self) -> Option<Instant> {
        if self.initialized && !self.uploads.remote_known {
            return self.uploads.retry_at;
        }
        if self.uploads.in_flight || self.uploads.queue.is_empty() {
            return None;
        }
        Some(self.uploads.retry_at.unwrap_or_else(Instant::now))
    }

    /// Hands the oldest unconfirmed file to the pool if none is in flight and no backoff runs.
    pub(super) fn pump_uploads(&mut self) {
        if !self.uploads.remote_known {
            self.retry_reconcile();
            if !self.uploads.remote_known {
                return;
            }
        }
        let u = &mut self.uploads;
        if u.in_flight || u.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some(next) = u.queue.front() else { return };
        if !next.path.exists() {
            // Removed behind our back (`litestream reset` while running): the replica would
            // get a gap. Drop what is gone and bridge it with a snapshot on the next pass.
            log::warn!(
                db:% = self.opts.path.display(),
                path:% = next.path.display();
                "spooled file disappeared before upload; the next sync writes a snapshot"
            );
            u.queue.retain(|f| f.path.exists());
            self.needs_snapshot = true;
            return;
        }
        let ctl = self.ctl_tx.clone();
        let max = next.max;
        let job = UploadJob {
            replica: self.replica.clone(),
            level: next.level(),
            min: next.min,
            max,
            timestamp_ms: next.timestamp_ms,
            path: next.path.clone(),
            on_done: Box::new(move |result| {
                let _ = ctl.send(DbCommand::Uploaded { max, result });
            }),
        };
        match self.shared.uploads.try_submit(job) {
            Ok(()) => {
                u.in_flight = true;
                u.retry_at = None;
            }
            // The pool is saturated: try again shortly.
            Err(_) => u.retry_at = Some(Instant::now() + Duration::from_millis(50)),
        }
    }

    /// Lists the replica again once the backoff after a failed listing has passed.
    fn retry_reconcile(&mut self) {
        if !self.initialized || self.uploads.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if let Err(e) = self.reconcile_remote() {
            self.uploads.failures += 1;
            let kind = replica::error::kind_of(&e);
            let delay = retry_delay(kind, self.uploads.failures);
            self.uploads.retry_at = Some(Instant::now() + delay);
            log::log!(
                failure_level(kind),
                db:% = self.opts.path.display(),
                replica:% = self.replica.url(),
                error = format!("{e:#}"),
                backoff:? = delay,
                retry = retry_note(kind);
                "cannot list replica; retrying"
            );
            let msg = format!("{e:#}");
            self.shared
                .registry
                .update(&self.opts.path, |v| v.replica_error = Some(msg));
        } else {
            log::info!(
                db:% = self.opts.path.display(),
                replica:% = self.replica.url();
                "replica listed; uploads start"
            );
        }
    }

    pub(super) fn on_uploaded(&mut self, max: TxId, result: Result<(), ReplicaError>) {
        self.uploads.in_flight = false;
        let url = self.replica.url().to_string();
        let path = self.opts.path.clone();
        match result {
            Ok(()) => {
                if self.uploads.queue.front().is_some_and(|f| f.max == max) {
                    self.uploads.queue.pop_front();
                }
                if self.uploads.failures > 0 {
                    log::info!(
                        db:% = path.display(), replica = url.as_str(), txid:% = max;
                        "uploads resumed"
                    );
                }
                self.uploads.failures = 0;
                self.uploads.retry_at = None;
                self.uploads.replicated = self.uploads.replicated.max(max);
                let replicated = self.uploads.replicated;
                self.shared.registry.update(&path, |v| {
                    v.replicated_txid = replicated;
                    v.replica_error = None;
                });
                self.shared.events.publish(&Event::Replicated {
                    path: path.clone(),
                    txid: replicated,
                });
                if let Err(e) = self.spool().prune(replicated) {
                    log::warn!(db:% = path.display(), error:% = e; "cannot prune the spool");
                }
                let status_txid = self.position.txid;
                let waiters = std::mem::take(&mut self.waiters);
                for w in waiters {
                    if replicated >= w.txid {
                        let status = if w.changed {
                            SyncStatus::Synced
                        } else {
                            SyncStatus::NoChange
                        };
                        let _ = w.reply.send(Ok(SyncReply {
                            status,
                            txid: status_txid,
                            replicated_txid: replicated,
                        }));
                    } else {
                        self.waiters.push(w);
                    }
                }
            }
            Err(e) => {
                self.uploads.failures += 1;
                let kind = Some(e.kind());
                let delay = retry_delay(kind, self.uploads.failures);
                self.uploads.retry_at = Some(Instant::now() + delay);
                log::log!(
                    failure_level(kind),
                    db:% = path.display(),
                    replica = url.as_str(),
                    txid:% = max,
                    attempt = self.uploads.failures,
                    backoff:? = delay,
                    retry = retry_note(kind),
                    error = format!("{e:#}");
                    "upload failed; retrying"
                );
                let msg = format!("{e:#}");
                self.shared
                    .registry
                    .update(&path, |v| v.replica_error = Some(msg));
            }
        }
        self.pump_uploads();
    }

    /// Answers a sync request after its pass: at once, or when the replica catches up.
    pub(super) fn answer_sync(
        &mut self,
        changed: bool,
        wait: bool,
        reply: Sender<Result<SyncReply, String>>,
    ) {
        let replicated = self.uploads.replicated;
        let reply_now = |status| SyncReply {
            status,
            txid: self.position.txid,
            replicated_txid: replicated,
        };
        if !wait {
            let status = if changed {
                SyncStatus::SyncedLocal
            } else {
                SyncStatus::NoChange
            };
            let _ = reply.send(Ok(reply_now(status)));
        } else if replicated >= self.position.txid {
            let status = if changed {
                SyncStatus::Synced
            } else {
                SyncStatus::NoChange
            };
            let _ = reply.send(Ok(reply_now(status)));
        } else {
            self.waiters.push(Waiter {
                txid: self.position.txid,
                changed: true,
                reply,
            });
        }
    }
}

/// The pace of retries after a failure no retry fixes by itself (credentials, a missing
/// bucket, permissions, another writer's file): the slowest pace of the transient backoff at
/// once, which does not hammer a server that refuses us, and recovers within about a minute
/// of an operator's fix (a replica directory mounted again, a key corrected) without a
/// restart. A waited `/sync` tries at once whatever the pace.
pub(super) const PERMANENT_RETRY: Duration = Duration::from_secs(60);

/// How long to wait after `failures` failures in a row, the last of `kind` (`None`: not the
/// replica's, e.g. a local spool file): [`PERMANENT_RETRY`] (±20%) after a permanent failure
/// or a conflict, else [`backoff`].
pub(super) fn retry_delay(kind: Option<ErrorKind>, failures: u32) -> Duration {
    match kind {
        Some(ErrorKind::Permanent | ErrorKind::Conflict) => jitter(PERMANENT_RETRY, failures),
        Some(ErrorKind::Transient | ErrorKind::NotFound) | None => backoff(failures),
    }
}

/// The level of a failed replica request's log line: an error for a failure that needs someone
/// to act, a warning for one that backoff should ride out.
pub(super) fn failure_level(kind: Option<ErrorKind>) -> log::Level {
    match kind {
        Some(ErrorKind::Permanent | ErrorKind::Conflict) => log::Level::Error,
        _ => log::Level::Warn,
    }
}

/// What a log line adds about the kind of a failure (its `retry` key).
pub(super) fn retry_note(kind: Option<ErrorKind>) -> &'static str {
    match kind {
        Some(ErrorKind::Permanent) => "permanent: retrying slowly until fixed",
        Some(ErrorKind::Conflict) => "conflict: retrying slowly",
        _ => "transient: backing off",
    }
}

/// Capped exponential backoff with jitter: 1s, 2s, 4s ... 60s, each ±20%.
pub(super) fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1) * 2u32.saturating_pow(failures.saturating_sub(1).min(6));
    jitter(base.min(Duration::from_secs(60)), failures)
}

/// `base` ±20%, so databases failing together do not retry together.
fn jitter(base: Duration, failures: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(failures);
    let jitter = (h.finish() % 400) as f64 / 1000.0 - 0.2;
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b1 = backoff(1);
        assert!(
            b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200),
            "{b1:?}"
        );
        let b3 = backoff(3);
        assert!(
            b3 >= Duration::from_millis(3200) && b3 <= Duration::from_millis(4800),
            "{b3:?}"
        );
        let b20 = backoff(20);
        assert!(b20 <= Duration::from_secs(72), "{b20:?}");
    }

    #[test]
    fn permanent_failures_retry_slowly_transient_ones_back_off() {
        let slow = |d: Duration| d >= Duration::from_secs(48) && d <= Duration::from_secs(72);
        for kind in [ErrorKind::Permanent, ErrorKind::Conflict] {
            // From the first failure on: no burst of quick retries against a refusing server.
            for failures in [1, 2, 10] {
                let d = retry_delay(Some(kind), failures);
                assert!(slow(d), "{kind} after {failures}: {d:?}");
            }
        }
        for kind in [Some(ErrorKind::Transient), Some(ErrorKind::NotFound), None] {
            let d = retry_delay(kind, 1);
            assert!(d <= Duration::from_millis(1200), "{kind:?}: {d:?}");
            let d = retry_delay(kind, 20);
            assert!(d <= Duration::from_secs(72), "{kind:?}: {d:?}");
        }
    }
}
