//! `POST /sync`: asking a database's thread for a sync pass and, with `wait`, for the
//! replica's confirmation, bounded by a timeout.

use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError};
use serde::{Deserialize, Serialize};

use super::reply::{not_found, not_open, ok, Answer, ApiError};
use super::request::{db_path, timeout_field};
use super::Ctx;
use crate::db::{DbCommand, SyncReply};
use crate::registry::DbStatus;

/// `/sync` wait when the request gives no timeout (seconds), as the seed.
pub const DEFAULT_SYNC_TIMEOUT: f64 = 30.0;

#[derive(Deserialize)]
pub(super) struct SyncRequest {
    path: Option<String>,
    #[serde(default)]
    wait: bool,
    timeout: Option<f64>,
}

#[derive(Serialize)]
struct SyncBody<'a> {
    status: &'static str,
    path: &'a Path,
    txid: u64,
    replicated_txid: u64,
    duration_ms: u64,
}

/// A command the database thread's channel did not take: full for as long as the request
/// could wait (503), or the thread is gone (404, it was removed meanwhile).
pub(super) fn queue_refused(path: &Path, full: bool) -> ApiError {
    if full {
        ApiError::new(503, "database busy").details(format!(
            "{}: {} commands are queued for its thread",
            path.display(),
            crate::db::COMMAND_QUEUE
        ))
    } else {
        not_found(path)
    }
}

/// The database thread's message for a sync of a stopped database (db.rs).
const STOPPED_MESSAGE: &str = "database is stopped; start it first";

/// Asks the database thread for a sync pass and waits for its answer (bounded by `timeout`).
pub(super) fn run_sync(
    ctx: &Ctx,
    path: &Path,
    wait: bool,
    timeout: Duration,
) -> Result<SyncReply, ApiError> {
    let registry = ctx.daemon.store.registry();
    let view = registry.get(path).ok_or_else(|| not_found(path))?;
    if view.status == DbStatus::Stopped {
        return Err(not_open(path));
    }
    let ctl = registry.ctl(path).ok_or_else(|| not_found(path))?;
    let (tx, rx) = bounded(1);
    let started = Instant::now();
    ctl.send_timeout(DbCommand::Sync { wait, reply: tx }, timeout)
        .map_err(|e| queue_refused(path, e.is_timeout()))?;
    match rx.recv_timeout(timeout.saturating_sub(started.elapsed())) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(msg)) if msg == STOPPED_MESSAGE => Err(not_open(path)),
        Ok(Err(msg)) => Err(ApiError::new(500, "sync database").details(msg)),
        Err(RecvTimeoutError::Timeout) => {
            let view = registry.get(path);
            let (t, r) = view
                .as_ref()
                .map_or((0, 0), |v| (v.txid.get(), v.replicated_txid.get()));
            let what = if wait {
                format!("the replica has not confirmed txid {t} (replicated_txid {r})")
            } else {
                "the database thread has not finished its sync pass".to_string()
            };
            // Why, when the daemon knows: the replica's or the database's last error.
            let cause = view
                .and_then(|v| v.replica_error.or(v.last_error))
                .map_or(String::new(), |e| format!("; last error: {e}"));
            Err(ApiError::new(503, "sync timed out").details(format!(
                "{what} within {}{cause}",
                crate::duration::format(timeout)
            )))
        }
        Err(RecvTimeoutError::Disconnected) => Err(not_found(path)),
    }
}

pub(super) fn sync(rq: SyncRequest, ctx: &Ctx) -> Answer {
    let path = db_path(rq.path)?;
    let timeout = timeout_field(rq.timeout, DEFAULT_SYNC_TIMEOUT)?;
    let _long = rq.wait.then(|| ctx.long_requests.begin());
    let started = Instant::now();
    let r = run_sync(ctx, &path, rq.wait, timeout)?;
    ok(&SyncBody {
        status: r.status.as_str(),
        path: &path,
        txid: r.txid.get(),
        replicated_txid: r.replicated_txid.get(),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}
