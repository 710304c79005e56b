//! The endpoints: routing, request parsing, and the JSON answers of seed 000 (plus Litestream's
//! `/start` and `/stop`, our `/events`). Every error is JSON `{"error", "details"}`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::daemon::{Daemon, RegisterError};
use crate::db::{DbCommand, SyncReply};
use crate::events::Event;
use crate::registry::DbStatus;
use crate::store::Added;
use crate::timefmt;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// `/sync` wait when the request gives no timeout (seconds), as the seed.
pub const DEFAULT_SYNC_TIMEOUT: f64 = 30.0;
/// How often an idle event stream writes a blank line to find out whether its client is gone.
const EVENTS_HEARTBEAT: Duration = Duration::from_secs(30);

/// What handlers share.
pub struct Ctx {
    pub daemon: Arc<Daemon>,
    /// Requests that stay open (event streams, waited syncs, CPU profiles); see `server.rs`.
    pub long_requests: Arc<LongRequests>,
    /// The TCP listener serves only read-only endpoints.
    pub control: bool,
}

/// A JSON error answer.
struct ApiError {
    status: u16,
    error: String,
    details: Option<String>,
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: u16, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            details: None,
            allow: None,
        }
    }
    fn details(mut self, d: impl Into<String>) -> Self {
        self.details = Some(d.into());
        self
    }
}

/// A successful answer: status and JSON text (fields in the seed's order).
type Answer = Result<(u16, String), ApiError>;

/// JSON text of an answer body; these types cannot fail to serialise.
fn body<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("answer types serialise")
}

fn ok<T: Serialize>(value: &T) -> Answer {
    Ok((200, body(value)))
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
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
        ("/list" | "/info" | "/txid" | "/events" | "/metrics" | "/debug/sync-status", _) => {
            allow("GET")
        }
        ("/register" | "/unregister" | "/sync" | "/start" | "/stop", _) => allow("POST"),
        _ => Err(ApiError::new(404, "not found").details(format!("no endpoint {path}"))),
    }
}

fn respond(rq: Request, answer: Answer) {
    let (status, mut text, allow) = match answer {
        Ok((status, text)) => (status, text, None),
        Err(e) => {
            let text = body(&ErrorBody {
                error: &e.error,
                details: e.details.as_deref(),
            });
            (e.status, text, e.allow)
        }
    };
    // A newline after the JSON, as Go's json.Encoder writes it.
    text.push('\n');
    let mut response = Response::from_string(text)
        .with_status_code(StatusCode(status))
        .with_header(json_header());
    if let Some(a) = allow {
        response.add_header(Header::from_bytes("Allow", a).expect("static header"));
    }
    // The client may have gone away; nothing to do about it.
    let _ = rq.respond(response);
}

/// The database `?db=` names: an absolute path, or the name the events themselves carry in
/// `db` (the file name); it must be registered, and a name must be unambiguous.
fn events_filter(db: &str, ctx: &Ctx) -> Result<PathBuf, ApiError> {
    let registry = ctx.daemon.store.registry();
    if Path::new(db).is_absolute() {
        let p = PathBuf::from(db);
        return match registry.get(&p) {
            Some(_) => Ok(p),
            None => Err(not_found(&p)),
        };
    }
    let matches: Vec<PathBuf> = registry
        .list()
        .into_iter()
        .map(|v| v.path)
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == db))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::new(404, "database not found")
            .details(format!("no registered database is named {db:?}"))),
        several => Err(
            ApiError::new(400, "ambiguous database name").details(format!(
                "{db:?} names {}; give the absolute path",
                several
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
    }
}

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
fn sync_status(query: &str, ctx: &Ctx) -> Answer {
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
                txid: nonzero(a.txid.0),
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
fn serve_metrics(rq: Request, ctx: &Ctx) {
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

fn json_header() -> Header {
    Header::from_bytes("Content-Type", "application/json").expect("static header")
}

/// Reads and parses a JSON body of at most [`MAX_BODY`] bytes.
fn read_json<T: for<'de> Deserialize<'de>>(rq: &mut Request) -> Result<T, ApiError> {
    if rq.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::new(413, "request body too large")
            .details(format!("limit is {MAX_BODY} bytes")));
    }
    let mut body = Vec::new();
    rq.as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::new(400, "invalid request body").details(e.to_string()))?;
    if body.len() > MAX_BODY {
        return Err(ApiError::new(413, "request body too large")
            .details(format!("limit is {MAX_BODY} bytes")));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, "invalid request body").details(e.to_string()))
}

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
}

#[derive(Serialize)]
struct ListBody {
    databases: Vec<DbSummary>,
}

fn list(ctx: &Ctx) -> ListBody {
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
            txid: v.txid.0,
            replicated_txid: v.replicated_txid.0,
            error: v.last_error,
            replica_error: v.replica_error,
            compaction_error: v.compaction_error,
        })
        .collect();
    ListBody { databases }
}

#[derive(Serialize)]
struct InfoBody {
    version: &'static str,
    pid: u32,
    uptime_seconds: u64,
    started_at: String,
    database_count: usize,
}

fn info(ctx: &Ctx) -> InfoBody {
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

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Decodes `%XX` escapes and `+` in a query value; a `%` not followed by two hex digits is
/// kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A database path from a request: required and absolute.
fn db_path(path: Option<String>) -> Result<PathBuf, ApiError> {
    let p = path.filter(|p| !p.is_empty()).ok_or_else(|| {
        ApiError::new(400, "path required").details("give the database's absolute path")
    })?;
    let p = PathBuf::from(p);
    if !p.is_absolute() {
        return Err(ApiError::new(400, "path must be absolute")
            .details(format!("got {:?}", p.display().to_string())));
    }
    Ok(p)
}

fn not_found(path: &Path) -> ApiError {
    ApiError::new(404, "database not found").details(path.display().to_string())
}

fn not_open(path: &Path) -> ApiError {
    ApiError::new(409, "database not open")
        .details(format!("{} is stopped; start it first", path.display()))
}

/// A `timeout` field: seconds, more than 0; `default` when absent.
fn timeout_field(t: Option<f64>, default: f64) -> Result<Duration, ApiError> {
    let t = t.unwrap_or(default);
    if !(t.is_finite() && t > 0.0) {
        return Err(
            ApiError::new(400, "invalid timeout").details(format!("{t} (want seconds > 0)"))
        );
    }
    Ok(Duration::from_secs_f64(t.min(86_400.0)))
}

#[derive(Serialize)]
struct TxidBody {
    txid: u64,
    replicated_txid: u64,
}

fn txid(query: &str, ctx: &Ctx) -> Answer {
    let path = db_path(query_param(query, "path"))?;
    let view = ctx
        .daemon
        .store
        .registry()
        .get(&path)
        .ok_or_else(|| not_found(&path))?;
    ok(&TxidBody {
        txid: view.txid.0,
        replicated_txid: view.replicated_txid.0,
    })
}

#[derive(Deserialize)]
struct RegisterRequest {
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

fn register(rq: RegisterRequest, ctx: &Ctx) -> Answer {
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
struct PathRequest {
    path: Option<String>,
    timeout: Option<f64>,
}

fn unregister(rq: PathRequest, ctx: &Ctx) -> Answer {
    let path = db_path(rq.path)?;
    let timeout = timeout_field(rq.timeout, crate::daemon::UNREGISTER_TIMEOUT.as_secs_f64())?;
    let _long = ctx.long_requests.begin();
    match ctx.daemon.unregister(&path, timeout) {
        Ok(Some(u)) => ok(&UnregisterBody {
            status: "unregistered",
            path: &path,
            txid: u.txid.0,
            replicated_txid: u.replicated_txid.0,
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

#[derive(Deserialize)]
struct SyncRequest {
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

/// Counts a long request for as long as it lives (see `server.rs`).
/// The long requests in progress (event streams, waited syncs, profiles), which the
/// listener's kick thread watches (see `ipc::server`): it kicks every 50 ms while any runs
/// and sleeps a second otherwise, woken when the first one starts.
pub struct LongRequests {
    count: AtomicUsize,
    started_tx: Sender<()>,
    started_rx: Receiver<()>,
}

impl Default for LongRequests {
    fn default() -> Self {
        let (started_tx, started_rx) = bounded(1);
        LongRequests {
            count: AtomicUsize::new(0),
            started_tx,
            started_rx,
        }
    }
}

impl LongRequests {
    /// Counts a long request for as long as the returned guard lives.
    pub fn begin(&self) -> LongRequest<'_> {
        if self.count.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = self.started_tx.try_send(());
        }
        LongRequest(self)
    }

    /// How many are in progress.
    pub fn in_progress(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for a first long request to start; true if one did.
    pub fn wait_for_start(&self, timeout: Duration) -> bool {
        self.started_rx.recv_timeout(timeout).is_ok()
    }
}

/// One long request being counted; see [`LongRequests`].
pub struct LongRequest<'a>(&'a LongRequests);

impl Drop for LongRequest<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A command the database thread's channel did not take: full for as long as the request
/// could wait (503), or the thread is gone (404, it was removed meanwhile).
fn queue_refused(path: &Path, full: bool) -> ApiError {
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
fn run_sync(ctx: &Ctx, path: &Path, wait: bool, timeout: Duration) -> Result<SyncReply, ApiError> {
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
                .map_or((0, 0), |v| (v.txid.0, v.replicated_txid.0));
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

fn sync(rq: SyncRequest, ctx: &Ctx) -> Answer {
    let path = db_path(rq.path)?;
    let timeout = timeout_field(rq.timeout, DEFAULT_SYNC_TIMEOUT)?;
    let _long = rq.wait.then(|| ctx.long_requests.begin());
    let started = Instant::now();
    let r = run_sync(ctx, &path, rq.wait, timeout)?;
    ok(&SyncBody {
        status: r.status.as_str(),
        path: &path,
        txid: r.txid.0,
        replicated_txid: r.replicated_txid.0,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// `/start` resumes a stopped database. `/stop` syncs once more and waits for the replica
/// (bounded by `timeout`, default 30 s, as Litestream's "stop always waits for shutdown and
/// final sync"), then releases the database; it stays registered.
fn start_stop(rq: PathRequest, ctx: &Ctx, start: bool) -> Answer {
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
    let status = match (start, changed) {
        (true, true) => "started",
        (true, false) => "already_running",
        (false, true) => "stopped",
        (false, false) => "already_stopped",
    };
    let txid = registry.get(&path).map_or(0, |v| v.txid.0);
    ok(&StatusBody {
        status,
        path: &path,
        txid: Some(txid),
    })
}

/// `GET /events`: newline-delimited JSON, one chunk per event, flushed as it happens.
fn stream_events(rq: Request, query: &str, ctx: &Ctx) {
    let filter = match query_param(query, "db")
        .map(|db| events_filter(&db, ctx))
        .transpose()
    {
        Ok(f) => f,
        Err(e) => return respond(rq, Err(e)),
    };
    let _long = ctx.long_requests.begin();
    let hub = ctx.daemon.store.events().clone();
    let sub = hub.subscribe(filter);
    // A write blocked for longer than the deadline (the client stopped reading) fails, and
    // the loop below ends the stream and closes the connection.
    super::server::bound_send_time_of_accepted(super::server::SEND_DEADLINE);
    let mut w = rq.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    let init = Event::Init {
        is_primary: true,
        hostname: None,
    }
    .to_json();
    if w.write_all(head.as_bytes())
        .and_then(|_| write_chunk(&mut w, &init))
        .is_err()
    {
        hub.unsubscribe(sub.id);
        return;
    }
    let closed = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            log::warn!(
                deadline:? = super::server::SEND_DEADLINE;
                "events subscriber has not read in time; ending its stream"
            );
        }
    };
    loop {
        match sub.rx.recv_timeout(EVENTS_HEARTBEAT) {
            Ok(line) => {
                if let Err(e) = write_chunk(&mut w, &line) {
                    closed(e);
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = write_raw_chunk(&mut w, b"\n") {
                    closed(e);
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Shutdown or fell behind: end the stream properly.
                if let Err(e) = w.write_all(b"0\r\n\r\n").and_then(|_| w.flush()) {
                    closed(e);
                }
                break;
            }
        }
    }
    hub.unsubscribe(sub.id);
}

fn write_chunk(w: &mut dyn Write, line: &str) -> std::io::Result<()> {
    let mut data = Vec::with_capacity(line.len() + 1);
    data.extend_from_slice(line.as_bytes());
    data.push(b'\n');
    write_raw_chunk(w, &data)
}

fn write_raw_chunk(w: &mut dyn Write, data: &[u8]) -> std::io::Result<()> {
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("path=/a%20b.db&x=1", "path").as_deref(),
            Some("/a b.db")
        );
        assert_eq!(
            query_param("x=1&path=%2Fdata%2Fapp.db", "path").as_deref(),
            Some("/data/app.db")
        );
        assert_eq!(query_param("x=1", "path"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
