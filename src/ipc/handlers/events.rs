//! `GET /events`: the event stream, newline-delimited JSON in HTTP chunks, with a heartbeat
//! and a send deadline so a client that stops reading is dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use tiny_http::Request;

use super::reply::{not_found, respond, ApiError};
use super::request::query_param;
use super::Ctx;
use crate::events::Event;
use crate::registry::Role;

/// How often an idle event stream writes a blank line to find out whether its client is gone.
const EVENTS_HEARTBEAT: Duration = Duration::from_secs(30);

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

/// The stream's first event: this node's role for the database the stream is filtered to, or
/// for the node as a whole (a primary unless it follows a database; then the host name of
/// the first followed database's primary, when known).
fn init_event(ctx: &Ctx, filter: Option<&Path>) -> Event {
    let registry = ctx.daemon.store.registry();
    let views = match filter {
        Some(p) => registry.get(p).into_iter().collect(),
        None => registry.list(),
    };
    let follower = views.into_iter().find(|v| v.role == Role::Follower);
    Event::Init {
        is_primary: follower.is_none(),
        hostname: follower.and_then(|v| v.primary_host),
    }
}

/// `GET /events`: newline-delimited JSON, one chunk per event, flushed as it happens.
pub(super) fn stream_events(rq: Request, query: &str, ctx: &Ctx) {
    let filter = match query_param(query, "db")
        .map(|db| events_filter(&db, ctx))
        .transpose()
    {
        Ok(f) => f,
        Err(e) => return respond(rq, Err(e)),
    };
    let _long = ctx.long_requests.begin();
    let hub = ctx.daemon.store.events().clone();
    let filter_path = filter.clone();
    let sub = hub.subscribe(filter);
    // A write blocked for longer than the deadline (the client stopped reading) fails, and
    // the loop below ends the stream and closes the connection.
    crate::ipc::server::bound_send_time_of_accepted(crate::ipc::server::SEND_DEADLINE);
    let mut w = rq.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    let init = init_event(ctx, filter_path.as_deref()).to_json();
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
                deadline:? = crate::ipc::server::SEND_DEADLINE;
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
