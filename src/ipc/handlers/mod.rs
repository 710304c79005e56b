//! The endpoints: routing, request parsing, and the JSON answers of seed 000 (plus Litestream's
//! `/start` and `/stop`, our `/events`). Every error is JSON `{"error", "details"}`.
//!
//! This file dispatches a request to its endpoint; each group of endpoints has its own file:
//! `databases.rs` (`/list`, `/info`, `/txid`), `lifecycle.rs` (`/register`, `/unregister`,
//! `/start`, `/stop`), `roles.rs` (`/promote`, `/demote`), `sync.rs` (`/sync`), `events.rs` (`/events`), `diagnostics.rs`
//! (`/debug/sync-status`, `/metrics`); `request.rs` and `reply.rs` parse requests and write
//! answers and errors for all of them; `long_requests.rs` counts the requests that stay open.

mod databases;
mod diagnostics;
mod events;
mod lifecycle;
mod long_requests;
mod reply;
mod request;
mod roles;
mod sync;

use std::sync::Arc;

use tiny_http::{Method, Request};

use crate::daemon::Daemon;

use self::databases::{info, list, txid};
use self::diagnostics::{serve_metrics, sync_status};
use self::events::stream_events;
use self::lifecycle::{register, start_stop, unregister};
use self::reply::{ok, respond, Answer, ApiError};
use self::request::read_json;
use self::roles::change_role;
use self::sync::sync;

pub use self::long_requests::{LongRequest, LongRequests};
pub use self::request::MAX_BODY;
pub use self::sync::DEFAULT_SYNC_TIMEOUT;

/// What handlers share.
pub struct Ctx {
    pub daemon: Arc<Daemon>,
    /// Requests that stay open (event streams, waited syncs, CPU profiles); see `server.rs`.
    pub long_requests: Arc<LongRequests>,
    /// The TCP listener serves only read-only endpoints.
    pub control: bool,
}

/// Largest declared body that is still answered (with 413 when over [`MAX_BODY`]). Past it,
/// the request is abandoned unanswered: tiny_http 0.12 drains a declared body when a request
/// is dropped by allocating one buffer of the declared size, so a request claiming a huge
/// `Content-Length` would abort the whole process on that allocation. Forgetting the request
/// skips that drop; it leaks the connection until the client closes it.
const MAX_DECLARED_BODY: usize = 64 * 1024 * 1024;

/// Handles one request on its own thread.
pub fn handle(mut rq: Request, ctx: &Ctx) {
    if rq.body_length().is_some_and(|n| n > MAX_DECLARED_BODY) {
        log::warn!(
            method:% = rq.method(),
            url = rq.url(),
            body_length = rq.body_length().unwrap_or(0);
            "ipc: declared body is absurd; dropping the request unanswered"
        );
        std::mem::forget(rq);
        return;
    }
    let url = rq.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let path = path.to_string();
    let query = query.to_string();
    let method = rq.method().clone();
    if path == "/events" && method == Method::Get {
        return stream_events(rq, &query, ctx);
    }
    if path == "/metrics" && method == Method::Get {
        return serve_metrics(rq, ctx);
    }
    if let Some(rest) = path.strip_prefix("/debug/pprof") {
        if !ctx.control {
            // Profiles reveal the command line and cost CPU: only for the 0600 control socket,
            // never for an `addr:` that may listen on every interface.
            let e = ApiError::new(404, "not found")
                .details(format!("{path} is only served on the control socket"));
            return respond(rq, Err(e));
        }
        return super::pprof::handle(rq, rest, &query, ctx);
    }
    let answer = route(&mut rq, &method, &path, &query, ctx);
    respond(rq, answer);
}

fn route(rq: &mut Request, method: &Method, path: &str, query: &str, ctx: &Ctx) -> Answer {
    let allow = |m: &'static str| {
        Err(ApiError {
            allow: Some(m),
            ..ApiError::new(405, "method not allowed").details(format!("{path} accepts {m}"))
        })
    };
    if !ctx.control && !matches!(path, "/events" | "/metrics" | "/info" | "/list" | "/txid") {
        return Err(ApiError::new(404, "not found")
            .details(format!("{path} is only served on the control socket")));
    }
    match (path, method) {
        ("/list", Method::Get) => ok(&list(ctx)),
        ("/info", Method::Get) => ok(&info(ctx)),
        ("/txid", Method::Get) => txid(query, ctx),
        ("/debug/sync-status", Method::Get) => sync_status(query, ctx),
        ("/register", Method::Post) => register(read_json(rq)?, ctx),
        ("/unregister", Method::Post) => unregister(read_json(rq)?, ctx),
        ("/sync", Method::Post) => sync(read_json(rq)?, ctx),
        ("/start", Method::Post) => start_stop(read_json(rq)?, ctx, true),
        ("/stop", Method::Post) => start_stop(read_json(rq)?, ctx, false),
        ("/promote", Method::Post) => change_role(read_json(rq)?, ctx, true),
        ("/demote", Method::Post) => change_role(read_json(rq)?, ctx, false),
        ("/list" | "/info" | "/txid" | "/events" | "/metrics" | "/debug/sync-status", _) => {
            allow("GET")
        }
        (
            "/register" | "/unregister" | "/sync" | "/start" | "/stop" | "/promote" | "/demote",
            _,
        ) => allow("POST"),
        _ => Err(ApiError::new(404, "not found").details(format!("no endpoint {path}"))),
    }
}

/// Answers a request that arrived while the daemon shuts down.
pub fn unavailable(rq: Request) {
    respond(
        rq,
        Err(ApiError::new(503, "shutting down").details("the daemon is stopping")),
    );
}

/// Answers a request that arrived while `limit` requests are already running (each holds a
/// thread: an event stream, a waited sync), so a flood of clients cannot exhaust threads.
pub fn overloaded(rq: Request, limit: usize) {
    respond(
        rq,
        Err(ApiError::new(503, "too many requests").details(format!(
            "{limit} requests are in progress (event streams count); try again later"
        ))),
    );
}
