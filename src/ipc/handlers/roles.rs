//! `POST /promote` and `/demote`: a followed database becomes its replica's primary, or a
//! primary hands its replica to another node and follows it (see `crate::follower` and
//! `Store::promote`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::reply::{not_found, ok, Answer, ApiError};
use super::request::{db_path, timeout_value, TimeoutValue};
use super::Ctx;
use crate::follower::RoleError;
use crate::ltx::TxId;

/// How long a promotion waits for the primary's lease by default: past Litestream's 30 s TTL.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a demotion waits for the replica to confirm every transaction by default.
const DEMOTE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
pub(super) struct RoleRequest {
    path: Option<String>,
    timeout: Option<TimeoutValue>,
}

#[derive(Serialize)]
struct RoleBody<'a> {
    status: &'static str,
    path: &'a Path,
    txid: String,
}

/// `/promote`, or `/demote` when `promote` is false.
pub(super) fn change_role(rq: RoleRequest, ctx: &Ctx, promote: bool) -> Answer {
    let path = db_path(rq.path)?;
    let default = if promote {
        PROMOTE_TIMEOUT
    } else {
        DEMOTE_TIMEOUT
    };
    let timeout = timeout_value(rq.timeout, default)?;
    let store = &ctx.daemon.store;
    if !store.registry().contains(&path) {
        return Err(not_found(&path));
    }
    let _long = ctx.long_requests.begin();
    let result: Result<TxId, RoleError> = if promote {
        store.promote(&path, timeout)
    } else {
        store.demote(&path, timeout)
    };
    let status = if promote { "promoted" } else { "demoted" };
    match result {
        Ok(txid) => ok(&RoleBody {
            status,
            path: &path,
            txid: txid.to_string(),
        }),
        // The CLI prints `<command> failed: <error>: <details>`.
        Err(RoleError::Conflict(m)) => Err(ApiError::new(409, "refused").details(m)),
        Err(RoleError::Unavailable(m)) => Err(ApiError::new(503, "replica unavailable").details(m)),
    }
}
