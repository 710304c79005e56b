//! The endpoints: routing, request parsing, and the JSON answers of seed 000 (plus Litestream's
//! `/start` and `/stop`, our `/events`). Every error is JSON `{"error", "details"}`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, RecvTimeoutError};
use serde::Deserialize;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::daemon::{Daemon, RegisterError};
use crate::db::{DbCommand, SyncStatus};
use crate::events::Event;
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
    pub long_requests: Arc<AtomicUsize>,
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

type Answer = Result<(u16, Value), ApiError>;

/// Handles one request on its own thread.
pub fn handle(mut rq: Request, ctx: &Ctx) {
    let url = rq.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let path = path.to_string();
    let query = query.to_string();
    let method = rq.method().clone();
    if path == "/events" && method == Method::Get {
        return stream_events(rq, &query, ctx);
    }
    if let Some(rest) = path.strip_prefix("/debug/pprof") {
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
        ("/list", Method::Get) => Ok((200, list(ctx))),
        ("/info", Method::Get) => Ok((200, info(ctx))),
        ("/txid", Method::Get) => txid(query, ctx),
        ("/register", Method::Post) => register(read_json(rq)?, ctx),
        ("/unregister", Method::Post) => unregister(read_json(rq)?, ctx),
        ("/sync", Method::Post) => sync(read_json(rq)?, ctx),
        ("/start", Method::Post) => start_stop(read_json(rq)?, ctx, true),
        ("/stop", Method::Post) => start_stop(read_json(rq)?, ctx, false),
        ("/list" | "/info" | "/txid" | "/events", _) => allow("GET"),
        ("/register" | "/unregister" | "/sync" | "/start" | "/stop", _) => allow("POST"),
        _ => Err(ApiError::new(404, "not found").details(format!("no endpoint {path}"))),
    }
}

fn respond(rq: Request, answer: Answer) {
    let (status, body, allow) = match answer {
        Ok((status, body)) => (status, body, None),
        Err(e) => {
            let mut body = json!({ "error": e.error });
            if let Some(d) = e.details {
                body["details"] = json!(d);
            }
            (e.status, body, e.allow)
        }
    };
    let mut text = body.to_string();
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

fn txid_json(t: crate::ltx::TxId) -> Value {
    json!(t.0)
}

fn list(ctx: &Ctx) -> Value {
    let dbs: Vec<Value> = ctx
        .daemon
        .store
        .registry()
        .list()
        .into_iter()
        .map(|v| {
            let mut o = json!({
                "path": v.path.display().to_string(),
                "status": v.status.as_str(),
                "replica_url": v.replica_url,
                "txid": txid_json(v.txid),
                "replicated_txid": txid_json(v.replicated_txid),
            });
            if let Some(t) = v.last_sync_at {
                o["last_sync_at"] = json!(timefmt::rfc3339_nanos(t));
            }
            if let Some(e) = v.last_error {
                o["error"] = json!(e);
            }
            if let Some(e) = v.replica_error {
                o["replica_error"] = json!(e);
            }
            o
        })
        .collect();
    json!({ "databases": dbs })
}

fn info(ctx: &Ctx) -> Value {
    let started = ctx.daemon.store.started_at();
    let uptime = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default()
        .as_secs();
    json!({
        "version": crate::VERSION,
        "pid": std::process::id(),
        "uptime_seconds": uptime,
        "started_at": timefmt::rfc3339_nanos(started),
        "database_count": ctx.daemon.store.registry().len(),
    })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Decodes `%XX` escapes and `+` in a query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A database path from a request: required and absolute.
fn db_path(path: Option<String>) -> Result<PathBuf, ApiError> {
    let p = path
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::new(400, "path required"))?;
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

fn txid(query: &str, ctx: &Ctx) -> Answer {
    let path = db_path(query_param(query, "path"))?;
    let view = ctx
        .daemon
        .store
        .registry()
        .get(&path)
        .ok_or_else(|| not_found(&path))?;
    Ok((
        200,
        json!({ "txid": txid_json(view.txid), "replicated_txid": txid_json(view.replicated_txid) }),
    ))
}

#[derive(Deserialize)]
struct RegisterRequest {
    path: Option<String>,
    replica_url: Option<String>,
}

fn register(rq: RegisterRequest, ctx: &Ctx) -> Answer {
    let path = db_path(rq.path)?;
    let url = rq
        .replica_url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::new(400, "replica_url required"))?;
    match ctx.daemon.register(&path, &url) {
        Ok(Added::Registered) => Ok((200, json!({"status": "registered", "path": path}))),
        Ok(Added::AlreadyRegistered) => {
            Ok((200, json!({"status": "already_registered", "path": path})))
        }
        Err(RegisterError::BadRequest(msg, details)) => {
            Err(ApiError::new(400, msg).details(details))
        }
        Err(RegisterError::Internal(e)) => {
            Err(ApiError::new(500, "register failed").details(format!("{e:#}")))
        }
    }
}

#[derive(Deserialize)]
struct PathRequest {
    path: Option<String>,
}

fn unregister(rq: PathRequest, ctx: &Ctx) -> Answer {
    let path = db_path(rq.path)?;
    match ctx.daemon.unregister(&path) {
        Ok(Some(txid)) => Ok((
            200,
            json!({"status": "unregistered", "path": path, "txid": txid_json(txid)}),
        )),
        Ok(None) => Ok((
            200,
            json!({"status": "already_unregistered", "path": path, "txid": 0}),
        )),
        Err(e) => Err(ApiError::new(500, "unregister failed").details(format!("{e:#}"))),
    }
}

#[derive(Deserialize)]
struct SyncRequest {
    path: Option<String>,
    #[serde(default)]
    wait: bool,
    timeout: Option<f64>,
}

/// Counts a long request for as long as it lives (see `server.rs`).
pub struct LongRequest<'a>(&'a AtomicUsize);

impl<'a> LongRequest<'a> {
    pub fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        LongRequest(counter)
    }
}

impl Drop for LongRequest<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn sync(rq: SyncRequest, ctx: &Ctx) -> Answer {
    let path = db_path(rq.path)?;
    let timeout = rq.timeout.unwrap_or(DEFAULT_SYNC_TIMEOUT);
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(
            ApiError::new(400, "invalid timeout").details(format!("{timeout} (want seconds > 0)"))
        );
    }
    let timeout = Duration::from_secs_f64(timeout.min(86_400.0));
    let ctl = ctx
        .daemon
        .store
        .registry()
        .ctl(&path)
        .ok_or_else(|| not_found(&path))?;
    let _long = rq.wait.then(|| LongRequest::new(&ctx.long_requests));
    let (tx, rx) = bounded(1);
    let started = Instant::now();
    ctl.send(DbCommand::Sync {
        wait: rq.wait,
        reply: tx,
    })
    .map_err(|_| not_found(&path))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(r)) => {
            let mut body = json!({
                "status": r.status.as_str(),
                "path": path,
                "txid": txid_json(r.txid),
                "replicated_txid": txid_json(r.replicated_txid),
            });
            body["duration_ms"] = json!(started.elapsed().as_millis() as u64);
            debug_assert!(rq.wait || r.status != SyncStatus::Synced);
            Ok((200, body))
        }
        Ok(Err(msg)) => Err(ApiError::new(500, "sync failed").details(msg)),
        Err(RecvTimeoutError::Timeout) => {
            let view = ctx.daemon.store.registry().get(&path);
            let (t, r) = view.map_or((0, 0), |v| (v.txid.0, v.replicated_txid.0));
            Err(ApiError::new(503, "sync timed out").details(format!(
                "the replica has not confirmed txid {t} within {:?} (replicated_txid {r})",
                timeout
            )))
        }
        Err(RecvTimeoutError::Disconnected) => Err(not_found(&path)),
    }
}

fn start_stop(rq: PathRequest, ctx: &Ctx, start: bool) -> Answer {
    let path = db_path(rq.path)?;
    let ctl = ctx
        .daemon
        .store
        .registry()
        .ctl(&path)
        .ok_or_else(|| not_found(&path))?;
    let (tx, rx) = bounded(1);
    let cmd = if start {
        DbCommand::Resume { reply: tx }
    } else {
        DbCommand::Pause { reply: tx }
    };
    ctl.send(cmd).map_err(|_| not_found(&path))?;
    let changed = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| ApiError::new(503, "database thread did not answer"))?;
    let status = match (start, changed) {
        (true, true) => "started",
        (true, false) => "already_running",
        (false, true) => "stopped",
        (false, false) => "already_stopped",
    };
    if let Err(e) = ctx.daemon.save_registrations() {
        log::warn!("ipc: {e:#}");
    }
    let txid = ctx
        .daemon
        .store
        .registry()
        .get(&path)
        .map_or(0, |v| v.txid.0);
    Ok((200, json!({"status": status, "path": path, "txid": txid})))
}

/// `GET /events`: newline-delimited JSON, one chunk per event, flushed as it happens.
fn stream_events(rq: Request, query: &str, ctx: &Ctx) {
    let filter = match query_param(query, "db")
        .map(|p| db_path(Some(p)))
        .transpose()
    {
        Ok(f) => f,
        Err(e) => return respond(rq, Err(e)),
    };
    let _long = LongRequest::new(&ctx.long_requests);
    let hub = ctx.daemon.store.events().clone();
    let sub = hub.subscribe(filter);
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
    loop {
        match sub.rx.recv_timeout(EVENTS_HEARTBEAT) {
            Ok(line) => {
                if write_chunk(&mut w, &line).is_err() {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if write_raw_chunk(&mut w, b"\n").is_err() {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Shutdown or fell behind: end the stream properly.
                let _ = w.write_all(b"0\r\n\r\n").and_then(|_| w.flush());
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
