//! The commands that talk to a running daemon over the control socket: `list`, `info`,
//! `register`, `unregister`, `sync`, `start`, `stop`, and our `txid`. Output as Litestream's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use argh::FromArgs;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::ipc::client::{Client, JsonResponse};
use crate::ipc::server::client_socket_path;

/// Escapes a value for a URL query.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn client(socket: Option<PathBuf>, timeout: f64) -> Result<Client> {
    if !(timeout.is_finite() && timeout > 0.0) {
        bail!("timeout must be greater than 0");
    }
    let socket = socket.unwrap_or_else(client_socket_path);
    Ok(Client::new(&socket, Some(Duration::from_secs_f64(timeout))))
}

/// One database path argument, made absolute.
pub(super) fn one_path(args: &[String], cmd: &str, hint: &str) -> Result<PathBuf> {
    match args {
        [] => bail!("database path required\nTry: litestream {cmd} {hint}/path/to/db"),
        [p] => super::absolute(p),
        _ => bail!("too many arguments"),
    }
}

/// The answer of a successful call, or the daemon's error as `<cmd> failed: <error>`.
pub(super) fn ok(resp: JsonResponse, cmd: &str) -> Result<Value> {
    if resp.status == 200 {
        Ok(resp.body)
    } else {
        bail!("{cmd} failed: {}", resp.error_message())
    }
}

/// Pretty-prints a `-json` answer with its fields in the order of the type (Litestream's).
fn print_ordered<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output types serialise")
    );
}

/// A `/list` entry: Litestream's fields in its order, then ours.
#[derive(Deserialize, Serialize)]
struct DbEntry {
    path: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sync_at: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize, Serialize)]
struct ListOutput {
    databases: Vec<DbEntry>,
}

#[derive(Deserialize, Serialize)]
struct InfoOutput {
    version: String,
    pid: u64,
    uptime_seconds: u64,
    started_at: String,
    database_count: u64,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Decodes an answer into its output type.
fn decode<T: for<'de> Deserialize<'de>>(body: Value, cmd: &str) -> Result<T> {
    serde_json::from_value(body)
        .map_err(|e| anyhow::anyhow!("{cmd}: unexpected answer from the daemon: {e}"))
}

#[derive(Serialize)]
struct RegisterOutput<'a> {
    status: &'a str,
    db_path: &'a Path,
    replica: &'a str,
    socket: &'a Path,
}

#[derive(Serialize)]
struct UnregisterOutput<'a> {
    status: &'a str,
    db_path: &'a Path,
    final_txid: u64,
    socket: &'a Path,
}

#[derive(Serialize)]
struct SyncOutput<'a> {
    db_path: &'a Path,
    txid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica_txid: Option<u64>,
    duration_ms: u64,
}

#[derive(Serialize)]
struct TxidOutput {
    txid: u64,
    replicated_txid: u64,
}

#[derive(Serialize)]
struct StartStopOutput<'a> {
    status: &'a str,
    db_path: &'a Path,
    state: &'a str,
    txid: u64,
    socket: &'a Path,
}

pub(super) fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn u64_field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

#[derive(FromArgs)]
/// Lists the databases of the running daemon.
#[argh(subcommand, name = "list")]
pub struct ListArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// seconds to wait for the daemon (default: 10)
    #[argh(option, default = "10.0")]
    timeout: f64,
    /// no positional arguments are taken
    #[argh(positional, greedy)]
    extra: Vec<String>,
}

#[derive(FromArgs)]
/// Shows information about the running daemon.
#[argh(subcommand, name = "info")]
pub struct InfoArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// seconds to wait for the daemon (default: 10)
    #[argh(option, default = "10.0")]
    timeout: f64,
    /// no positional arguments are taken
    #[argh(positional, greedy)]
    extra: Vec<String>,
}

#[derive(FromArgs)]
/// Registers a database for replication with the running daemon.
#[argh(subcommand, name = "register")]
pub struct RegisterArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// seconds to wait for the daemon (default: 30)
    #[argh(option, default = "30.0")]
    timeout: f64,
    /// replica destination URL (file:///path or s3://bucket/prefix); required
    #[argh(option)]
    replica: Option<String>,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

#[derive(FromArgs)]
/// Unregisters a database (after a last sync) from the running daemon.
#[argh(subcommand, name = "unregister")]
pub struct UnregisterArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// seconds to wait for the daemon (default: 30)
    #[argh(option, default = "30.0")]
    timeout: f64,
    /// show what would be unregistered without asking the daemon
    #[argh(switch)]
    dry_run: bool,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

#[derive(FromArgs)]
/// Forces an immediate sync of a database.
#[argh(subcommand, name = "sync")]
pub struct SyncArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// seconds to wait for the daemon (default: 30)
    #[argh(option, default = "30.0")]
    timeout: f64,
    /// block until the replica holds the result (default: false)
    #[argh(switch)]
    wait: bool,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

#[derive(FromArgs)]
/// Starts replication of a stopped database.
#[argh(subcommand, name = "start")]
pub struct StartArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// seconds to wait for the daemon (default: 30)
    #[argh(option, default = "30.0")]
    timeout: f64,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

#[derive(FromArgs)]
/// Stops replication of a database (it stays registered).
#[argh(subcommand, name = "stop")]
pub struct StopArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// seconds to wait for the daemon (default: 30)
    #[argh(option, default = "30.0")]
    timeout: f64,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

#[derive(FromArgs)]
/// Prints a database's current and replicated transaction IDs.
#[argh(subcommand, name = "txid")]
pub struct TxidArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// seconds to wait for the daemon (default: 10)
    #[argh(option, default = "10.0")]
    timeout: f64,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

/// `litestream list`.
pub fn list(a: ListArgs) -> Result<i32> {
    if !a.extra.is_empty() {
        bail!("too many arguments");
    }
    let body = ok(client(a.socket, a.timeout)?.get("/list")?, "list")?;
    let list: ListOutput = decode(body, "list")?;
    if a.json {
        print_ordered(&list);
        return Ok(0);
    }
    if list.databases.is_empty() {
        println!("No databases configured");
    }
    for db in &list.databases {
        let last = match &db.last_sync_at {
            Some(t) => crate::timefmt::parse_rfc3339(t)
                .map_or_else(|_| t.to_string(), crate::timefmt::rfc3339_secs),
            None => "never".to_string(),
        };
        println!("{} [{}] (last sync: {last})", db.path, db.status);
        // Ours: why a database is not replicating.
        for key in ["error", "replica_error", "compaction_error"] {
            if let Some(e) = db.rest.get(key).and_then(Value::as_str) {
                println!("  {}: {e}", key.replace('_', " "));
            }
        }
    }
    Ok(0)
}

/// Whole seconds as Go prints a `time.Duration` (`1h0m5s`), as Litestream's CLI does.
fn go_duration(secs: u64) -> String {
    crate::duration::format(std::time::Duration::from_secs(secs))
}

/// `litestream info`.
pub fn info(a: InfoArgs) -> Result<i32> {
    if !a.extra.is_empty() {
        bail!("too many arguments");
    }
    let body = ok(client(a.socket, a.timeout)?.get("/info")?, "info")?;
    let info: InfoOutput = decode(body, "info")?;
    if a.json {
        print_ordered(&info);
        return Ok(0);
    }
    let started = crate::timefmt::parse_rfc3339(&info.started_at)
        .map_or_else(|_| info.started_at.clone(), crate::timefmt::rfc3339_secs);
    println!("Litestream {}", info.version);
    println!("  PID:        {}", info.pid);
    println!("  Uptime:     {}", go_duration(info.uptime_seconds));
    println!("  Started at: {started}");
    println!("  Databases:  {}", info.database_count);
    Ok(0)
}

/// `litestream register -replica URL DB_PATH`.
pub fn register(a: RegisterArgs) -> Result<i32> {
    let path = one_path(&a.path, "register", "-replica s3://bucket/prefix ")?;
    let Some(url) = a.replica else {
        bail!("-replica is required\nTry: litestream register -replica s3://bucket/prefix /path/to/db");
    };
    let c = client(a.socket, a.timeout)?;
    let body = ok(
        c.post("/register", &json!({"path": path, "replica_url": url}))?,
        "register",
    )?;
    let status = str_field(&body, "status").to_string();
    if a.json {
        print_ordered(&RegisterOutput {
            status: &status,
            db_path: &path,
            replica: &url,
            socket: c.socket(),
        });
    } else {
        println!(
            "status: {}",
            status.replace("already_registered", "already registered")
        );
        println!("db_path: {}", path.display());
        println!("replica: {url}");
        println!("socket: {}", c.socket().display());
    }
    Ok(0)
}

/// `litestream unregister DB_PATH`.
pub fn unregister(a: UnregisterArgs) -> Result<i32> {
    let path = one_path(&a.path, "unregister", "")?;
    let c = client(a.socket, a.timeout)?;
    if a.dry_run {
        // As Litestream, except that the path shown is the absolute one a real request sends.
        println!("Dry run: unregister request preview");
        println!("  database: {}", path.display());
        println!("  socket: {}", c.socket().display());
        println!("  replicas: daemon-managed replica for this database");
        println!("  final sync: daemon close will sync the database and replica before the command completes");
        println!("  timeout: {}", go_duration(a.timeout as u64));
        println!("No unregister request was sent.");
        return Ok(0);
    }
    let c = Client::new(c.socket(), Some(Duration::from_secs_f64(a.timeout + 1.0)));
    let body = ok(
        c.post("/unregister", &json!({"path": path, "timeout": a.timeout}))?,
        "unregister",
    )?;
    if a.json {
        print_ordered(&UnregisterOutput {
            status: str_field(&body, "status"),
            db_path: &path,
            final_txid: u64_field(&body, "txid"),
            socket: c.socket(),
        });
    } else {
        println!("status: {}", str_field(&body, "status"));
        println!("db_path: {}", path.display());
        println!("final_txid: {}", u64_field(&body, "txid"));
        println!("socket: {}", c.socket().display());
    }
    // The replica did not confirm everything: said on stderr whatever the format, and in
    // the exit status, so a script notices.
    if let Some(w) = body.get("warning").and_then(|w| w.as_str()) {
        eprintln!("warning: {w}");
        return Ok(1);
    }
    Ok(0)
}

/// `litestream sync [-wait] DB_PATH`.
pub fn sync(a: SyncArgs) -> Result<i32> {
    let path = one_path(&a.path, "sync", "")?;
    let c = client(a.socket, a.timeout)?;
    // The daemon bounds the sync by `timeout`; the connection waits a little longer.
    let c = Client::new(c.socket(), Some(Duration::from_secs_f64(a.timeout + 1.0)));
    let body = ok(
        c.post(
            "/sync",
            &json!({"path": path, "wait": a.wait, "timeout": a.timeout}),
        )?,
        "sync",
    )?;
    if a.json {
        print_ordered(&SyncOutput {
            db_path: &path,
            txid: u64_field(&body, "txid"),
            replica_txid: a.wait.then(|| u64_field(&body, "replicated_txid")),
            duration_ms: u64_field(&body, "duration_ms"),
        });
    } else {
        println!("db_path: {}", path.display());
        println!("txid: {}", u64_field(&body, "txid"));
        if a.wait {
            println!("replica_txid: {}", u64_field(&body, "replicated_txid"));
        }
        println!("duration_ms: {}", u64_field(&body, "duration_ms"));
    }
    Ok(0)
}

fn start_stop(
    socket: Option<PathBuf>,
    timeout: f64,
    json_out: bool,
    path: &[String],
    start: bool,
) -> Result<i32> {
    let cmd = if start { "start" } else { "stop" };
    let path = one_path(path, cmd, "")?;
    let c = client(socket, timeout)?;
    // The daemon bounds its work by `timeout`; the connection waits a little longer.
    let c = Client::new(c.socket(), Some(Duration::from_secs_f64(timeout + 1.0)));
    let body = ok(
        c.post(
            &format!("/{cmd}"),
            &json!({"path": path, "timeout": timeout}),
        )?,
        cmd,
    )?;
    let state = if start { "running" } else { "stopped" };
    if json_out {
        print_ordered(&StartStopOutput {
            status: str_field(&body, "status"),
            db_path: &path,
            state,
            txid: u64_field(&body, "txid"),
            socket: c.socket(),
        });
    } else {
        println!("status: {}", str_field(&body, "status"));
        println!("db_path: {}", path.display());
        println!("state: {state}");
        println!("txid: {}", u64_field(&body, "txid"));
        println!("socket: {}", c.socket().display());
    }
    Ok(0)
}

/// `litestream start DB_PATH`.
pub fn start(a: StartArgs) -> Result<i32> {
    start_stop(a.socket, a.timeout, a.json, &a.path, true)
}

/// `litestream stop DB_PATH`.
pub fn stop(a: StopArgs) -> Result<i32> {
    start_stop(a.socket, a.timeout, a.json, &a.path, false)
}

/// `litestream txid DB_PATH` (ours; Litestream has only the endpoint).
pub fn txid(a: TxidArgs) -> Result<i32> {
    let path = one_path(&a.path, "txid", "")?;
    let c = client(a.socket, a.timeout)?;
    let body = ok(
        c.get(&format!(
            "/txid?path={}",
            query_escape(&path.to_string_lossy())
        ))?,
        "txid",
    )?;
    if a.json {
        print_ordered(&TxidOutput {
            txid: u64_field(&body, "txid"),
            replicated_txid: u64_field(&body, "replicated_txid"),
        });
    } else {
        println!("txid: {}", u64_field(&body, "txid"));
        println!("replicated_txid: {}", u64_field(&body, "replicated_txid"));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(27), "27s");
        assert_eq!(go_duration(69), "1m9s");
        assert_eq!(go_duration(3605), "1h0m5s");
        assert_eq!(go_duration(0), "0s");
    }

    #[test]
    fn query_escape_keeps_paths_readable() {
        assert_eq!(query_escape("/a b/c&d.db"), "/a%20b/c%26d.db");
    }
}
