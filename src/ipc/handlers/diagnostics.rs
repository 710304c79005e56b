//! `GET /debug/sync-status` (what each database's thread is doing, in Litestream's shape) and
//! `GET /metrics` (the Prometheus exposition).

use std::time::SystemTime;

use serde::Serialize;
use tiny_http::{Header, Request, Response};

use super::reply::{not_found, ok, Answer};
use super::request::{db_path, query_param};
use super::Ctx;
use crate::timefmt;

/// One database in `/debug/sync-status`, with Litestream 0.5.17's field names (empty fields
/// left out, as its `omitempty` does).
#[derive(Serialize)]
struct SyncDiagnostic {
    path: String,
    active: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    operation: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    phase: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    txid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wal_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_synced_wal_offset: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    snapshotting: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct SyncStatusBody {
    databases: Vec<SyncDiagnostic>,
}

/// `GET /debug/sync-status[?path=]`: what each database's thread is doing or last did, so
/// that the diagnostics scripts written for Litestream work here.
pub(super) fn sync_status(query: &str, ctx: &Ctx) -> Answer {
    let registry = ctx.daemon.store.registry();
    let views = match query_param(query, "path") {
        Some(p) => {
            let p = db_path(Some(p))?;
            vec![registry.get(&p).ok_or_else(|| not_found(&p))?]
        }
        None => registry.list(),
    };
    let now = SystemTime::now();
    let databases = views
        .into_iter()
        .map(|v| {
            let a = v.activity;
            let elapsed = a.started_at.map(|start| {
                let end = if a.active {
                    now
                } else {
                    a.updated_at.unwrap_or(now)
                };
                end.duration_since(start).unwrap_or_default().as_secs_f64()
            });
            let nonzero = |n: u64| (n > 0).then_some(n);
            SyncDiagnostic {
                path: v.path.display().to_string(),
                active: a.active,
                operation: a.operation,
                phase: a.phase,
                started_at: a.started_at.map(timefmt::rfc3339_nanos),
                updated_at: a.updated_at.map(timefmt::rfc3339_nanos),
                elapsed_seconds: elapsed.filter(|e| *e > 0.0),
                txid: nonzero(a.txid.get()),
                wal_size: nonzero(a.wal_size),
                last_synced_wal_offset: nonzero(a.last_synced_wal_offset),
                snapshotting: a.snapshotting,
                checkpoint_mode: a.checkpoint_mode,
                error: a.error,
            }
        })
        .collect();
    ok(&SyncStatusBody { databases })
}

/// `GET /metrics`: the Prometheus text exposition (see [`crate::metrics`]), on the control
/// socket and on `addr:`.
pub(super) fn serve_metrics(rq: Request, ctx: &Ctx) {
    let store = &ctx.daemon.store;
    let dbs: Vec<_> = store
        .registry()
        .list()
        .into_iter()
        .map(|v| {
            let spool = crate::spool::list(&v.meta_dir).ok().map(|files| {
                files
                    .iter()
                    .filter_map(|f| f.path.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            });
            (v, spool)
        })
        .collect();
    let text = crate::metrics::global().render(&dbs, store.events().subscriber_count());
    let header =
        Header::from_bytes("Content-Type", crate::metrics::CONTENT_TYPE).expect("static header");
    let _ = rq.respond(Response::from_string(text).with_header(header));
}
