//! `GET /list`, `/info` and `/txid`: what the registry says about the daemon and each
//! database.

use std::time::SystemTime;

use serde::Serialize;

use super::reply::{not_found, ok, Answer};
use super::request::{db_path, query_param};
use super::Ctx;
use crate::timefmt;

/// One database in `/list`: the seed's fields first, then ours.
#[derive(Serialize)]
struct DbSummary {
    path: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sync_at: Option<String>,
    replica_url: String,
    txid: u64,
    replicated_txid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compaction_error: Option<String>,
    /// `primary` or `follower`.
    role: &'static str,
    /// A follower's primary, by host name (from the replica's lease), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<String>,
    /// The replica lease this daemon holds for the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseSummary>,
}

#[derive(Serialize)]
struct LeaseSummary {
    owner: String,
    generation: i64,
    expires_at: String,
}

#[derive(Serialize)]
pub(super) struct ListBody {
    databases: Vec<DbSummary>,
}

pub(super) fn list(ctx: &Ctx) -> ListBody {
    let databases = ctx
        .daemon
        .store
        .registry()
        .list()
        .into_iter()
        .map(|v| DbSummary {
            path: v.path.display().to_string(),
            status: v.status.as_str(),
            last_sync_at: v.last_sync_at.map(timefmt::rfc3339_nanos),
            replica_url: v.replica_url,
            txid: v.txid.get(),
            replicated_txid: v.replicated_txid.get(),
            error: v.last_error,
            replica_error: v.replica_error,
            compaction_error: v.compaction_error,
            role: v.role.as_str(),
            primary: v.primary_host,
            lease: v.lease.map(|l| LeaseSummary {
                owner: l.owner,
                generation: l.generation,
                expires_at: timefmt::rfc3339_ms(l.expires_at_ms),
            }),
        })
        .collect();
    ListBody { databases }
}

#[derive(Serialize)]
pub(super) struct InfoBody {
    version: &'static str,
    pid: u32,
    uptime_seconds: u64,
    started_at: String,
    database_count: usize,
}

pub(super) fn info(ctx: &Ctx) -> InfoBody {
    let started = ctx.daemon.store.started_at();
    let uptime = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default()
        .as_secs();
    InfoBody {
        version: crate::VERSION,
        pid: std::process::id(),
        uptime_seconds: uptime,
        started_at: timefmt::rfc3339_nanos(started),
        database_count: ctx.daemon.store.registry().len(),
    }
}

#[derive(Serialize)]
struct TxidBody {
    txid: u64,
    replicated_txid: u64,
}

pub(super) fn txid(query: &str, ctx: &Ctx) -> Answer {
    let path = db_path(query_param(query, "path"))?;
    let view = ctx
        .daemon
        .store
        .registry()
        .get(&path)
        .ok_or_else(|| not_found(&path))?;
    ok(&TxidBody {
        txid: view.txid.get(),
        replicated_txid: view.replicated_txid.get(),
    })
}
