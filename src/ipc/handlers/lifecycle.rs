//! `POST /register`, `/unregister`, `/start` and `/stop`: adding and removing a database, and
//! pausing or resuming its thread.

use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use serde::{Deserialize, Serialize};

use super::reply::{not_found, ok, Answer, ApiError};
use super::request::{db_path, timeout_field};
use super::sync::{queue_refused, run_sync};
use super::Ctx;
use crate::daemon::RegisterError;
use crate::db::DbCommand;
use crate::registry::DbStatus;
use crate::store::Added;

#[derive(Deserialize)]
pub(super) struct RegisterRequest {
    path: Option<String>,
    replica_url: Option<String>,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    status: &'a str,
    path: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    txid: Option<u64>,
}

pub(super) fn register(rq: RegisterRequest, ctx: &Ctx) -> Answer {
    let path = db_path(rq.path)?;
    let url = rq.replica_url.filter(|u| !u.is_empty()).ok_or_else(|| {
        ApiError::new(400, "replica_url required")
            .details("e.g. file:///var/backups/app.db or s3://bucket/path")
    })?;
    let status = match ctx.daemon.register(&path, &url) {
        Ok(Added::Registered) => "registered",
        Ok(Added::AlreadyRegistered) => "already_registered",
        Ok(Added::SameFileAs(other)) => {
            return Err(ApiError::new(409, "database already registered")
                .details(format!("same file as {}", other.display())))
        }
        Err(RegisterError::BadRequest(msg, details)) => {
            return Err(ApiError::new(400, msg).details(details))
        }
        Err(RegisterError::Conflict(msg, details)) => {
            return Err(ApiError::new(409, msg).details(details))
        }
        Err(RegisterError::Internal(e)) => {
            return Err(ApiError::new(500, "register failed").details(format!("{e:#}")))
        }
    };
    ok(&StatusBody {
        status,
        path: &path,
        txid: None,
    })
}

#[derive(Deserialize)]
pub(super) struct PathRequest {
    path: Option<String>,
    timeout: Option<f64>,
}

pub(super) fn unregister(rq: PathRequest, ctx: &Ctx) -> Answer {
    let path = db_path(rq.path)?;
    let timeout = timeout_field(rq.timeout, crate::daemon::UNREGISTER_TIMEOUT.as_secs_f64())?;
    let _long = ctx.long_requests.begin();
    match ctx.daemon.unregister(&path, timeout) {
        Ok(Some(u)) => ok(&UnregisterBody {
            status: "unregistered",
            path: &path,
            txid: u.txid.get(),
            replicated_txid: u.replicated_txid.get(),
            // Said in the answer, not only in the log: what the replica does not have.
            warning: (u.replicated_txid < u.txid).then(|| {
                format!(
                    "the replica confirmed txid {} of {}; the rest stays spooled in {} and is uploaded if the database is registered again",
                    u.replicated_txid,
                    u.txid,
                    u.meta_dir.display()
                )
            }),
        }),
        Ok(None) => ok(&StatusBody {
            status: "already_unregistered",
            path: &path,
            txid: Some(0),
        }),
        Err(e) => Err(ApiError::new(500, "unregister failed").details(format!("{e:#}"))),
    }
}

/// `/unregister`'s answer: Litestream's `status`, `path` and `txid`, plus what the replica
/// confirmed and, when that is less, a warning saying where the rest is.
#[derive(Serialize)]
struct UnregisterBody<'a> {
    status: &'a str,
    path: &'a Path,
    txid: u64,
    replicated_txid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

/// `/start` resumes a stopped database. `/stop` syncs once more and waits for the replica
/// (bounded by `timeout`, default 30 s, as Litestream's "stop always waits for shutdown and
/// final sync"), then releases the database; it stays registered.
pub(super) fn start_stop(rq: PathRequest, ctx: &Ctx, start: bool) -> Answer {
    let path = db_path(rq.path)?;
    let timeout = timeout_field(rq.timeout, 30.0)?;
    let deadline = Instant::now() + timeout;
    let registry = ctx.daemon.store.registry();
    let view = registry.get(&path).ok_or_else(|| not_found(&path))?;
    let _long = ctx.long_requests.begin();
    if !start && view.status != DbStatus::Stopped {
        match run_sync(ctx, &path, true, timeout) {
            Ok(_) => {}
            Err(e) if e.status == 404 => return Err(e),
            // Stop anyway: the spool keeps what the replica has not confirmed, and a later
            // start uploads it.
            Err(e) => log::warn!(
                db:% = path.display(),
                error:% = e.error,
                details = e.details.as_deref().unwrap_or("");
                "stop: final sync did not complete"
            ),
        }
    }
    let ctl = registry.ctl(&path).ok_or_else(|| not_found(&path))?;
    let (tx, rx) = bounded(1);
    let cmd = if start {
        DbCommand::Resume { reply: tx }
    } else {
        DbCommand::Pause { reply: tx }
    };
    ctl.send_timeout(cmd, deadline.saturating_duration_since(Instant::now()))
        .map_err(|e| queue_refused(&path, e.is_timeout()))?;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let changed = rx.recv_timeout(wait).map_err(|_| {
        ApiError::new(503, "database thread did not answer")
            .details(format!("within {}", crate::duration::format(timeout)))
    })?;
    if start {
        // A database stopped because its replica's lease was refused or lost: try again.
        ctx.daemon.store.retry_lease(&path);
    }
    let status = match (start, changed) {
        (true, true) => "started",
        (true, false) => "already_running",
        (false, true) => "stopped",
        (false, false) => "already_stopped",
    };
    let txid = registry.get(&path).map_or(0, |v| v.txid.get());
    ok(&StatusBody {
        status,
        path: &path,
        txid: Some(txid),
    })
}
