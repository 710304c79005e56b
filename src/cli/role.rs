//! The commands that change a database's role in the running daemon: `promote` (a follower
//! takes the replica's lease and becomes its primary) and `demote` (the primary hands the
//! lease back and follows its replica). They talk to `POST /promote` and `POST /demote` of
//! the control socket and report errors as `start`, `stop` and `sync` do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use argh::FromArgs;
use serde::Serialize;
use serde_json::{json, Value};

use super::control::{ok, one_path, str_field};
use crate::ipc::client::Client;
use crate::ipc::server::client_socket_path;

/// `promote`'s default wait for the current primary's lease: two lease TTLs (30 s each), so a
/// primary that died a moment ago has certainly expired by then.
const DEFAULT_PROMOTE_TIMEOUT: &str = "60s";

/// How much longer than the request's own bound the command waits for the daemon's answer.
/// The daemon bounds its waits (the lease by `timeout`, the replica by its retries) and then
/// answers; this only keeps a daemon that never answers from hanging the command, and leaves
/// room for applying the files a follower has not applied yet.
const ANSWER_GRACE: Duration = Duration::from_secs(300);

#[derive(FromArgs)]
/// Promotes a followed database to primary: waits until the replica's lease is released or expires, takes it, applies what is left and replicates to it.
#[argh(subcommand, name = "promote")]
pub struct PromoteArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// longest wait for the current primary's lease, a duration such as 60s or 2m, or seconds (default: 60s)
    #[argh(option, default = "DEFAULT_PROMOTE_TIMEOUT.to_string()")]
    timeout: String,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

#[derive(FromArgs)]
/// Demotes a primary database to follower: syncs, waits until the replica holds every transaction, releases the lease and follows the replica.
#[argh(subcommand, name = "demote")]
pub struct DemoteArgs {
    /// control socket (default: /var/run/litestream.sock, else $XDG_RUNTIME_DIR/litestream.sock)
    #[argh(option)]
    socket: Option<PathBuf>,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
    /// database path
    #[argh(positional, greedy, arg_name = "DB_PATH")]
    path: Vec<String>,
}

/// The `-json` output: the answer's status, the database, the role it now has, the TXID it
/// had when the role changed (16 hex digits, as the daemon answers it) and the socket asked.
#[derive(Serialize)]
struct RoleOutput<'a> {
    status: &'a str,
    db_path: &'a Path,
    role: &'a str,
    txid: String,
    socket: &'a Path,
}

/// `litestream promote [-timeout 60s] DB_PATH`.
pub fn promote(a: PromoteArgs) -> Result<i32> {
    print!("{}", promote_output(a)?);
    Ok(0)
}

/// `litestream demote DB_PATH`.
pub fn demote(a: DemoteArgs) -> Result<i32> {
    print!("{}", demote_output(a)?);
    Ok(0)
}

/// What `promote` prints, after asking the daemon.
fn promote_output(a: PromoteArgs) -> Result<String> {
    let path = one_path(&a.path, "promote", "")?;
    let timeout = parse_timeout(&a.timeout)?;
    let socket = a.socket.unwrap_or_else(client_socket_path);
    let c = Client::new(&socket, Some(timeout.saturating_add(ANSWER_GRACE)));
    let body = json!({"path": path, "timeout": crate::duration::format(timeout)});
    let answer = ok(c.post("/promote", &body)?, "promote")?;
    render(&answer, &path, &socket, a.json, "promote", "primary")
}

/// What `demote` prints, after asking the daemon.
fn demote_output(a: DemoteArgs) -> Result<String> {
    let path = one_path(&a.path, "demote", "")?;
    let socket = a.socket.unwrap_or_else(client_socket_path);
    let c = Client::new(&socket, Some(ANSWER_GRACE));
    let answer = ok(c.post("/demote", &json!({"path": path}))?, "demote")?;
    render(&answer, &path, &socket, a.json, "demote", "follower")
}

/// `-timeout`: a Go duration (`60s`, `2m`, `1m30s`) or, as the sibling commands take it, a
/// number of seconds; more than zero.
fn parse_timeout(text: &str) -> Result<Duration> {
    let invalid =
        || anyhow!("invalid -timeout {text:?}: want a duration such as 60s or 2m, or seconds");
    let timeout = match text.trim().parse::<f64>() {
        Ok(secs) if secs <= 0.0 => Duration::ZERO,
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| invalid())?,
        Err(_) => match crate::duration::parse_nanos(text.trim()) {
            Some(n) if n <= 0 => Duration::ZERO,
            Some(n) => Duration::from_nanos(n.unsigned_abs()),
            None => return Err(invalid()),
        },
    };
    if timeout.is_zero() {
        bail!("-timeout must be greater than 0 (got {text:?})");
    }
    Ok(timeout)
}

/// The line (or JSON) printed for a successful answer: `promoted DB_PATH at txid TXID`.
fn render(
    answer: &Value,
    path: &Path,
    socket: &Path,
    json_out: bool,
    cmd: &str,
    role: &str,
) -> Result<String> {
    let txid = match answer.get("txid") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            format!("{:016x}", n.as_u64().unwrap_or_default())
        }
        _ => bail!("{cmd}: unexpected answer from the daemon (no txid): {answer}"),
    };
    let status = match str_field(answer, "status") {
        "" => format!("{cmd}d"),
        s => s.to_string(),
    };
    if json_out {
        let out = RoleOutput {
            status: &status,
            db_path: path,
            role,
            txid,
            socket,
        };
        let text = serde_json::to_string_pretty(&out).expect("output types serialise");
        return Ok(format!("{text}\n"));
    }
    Ok(format!("{status} {} at txid {txid}\n", path.display()))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    use super::*;

    /// A daemon stand-in: answers one request on `socket` with `status` and `body`, and hands
    /// back the request line and JSON body it received.
    fn fake_daemon(
        socket: &Path,
        status: u16,
        body: Value,
    ) -> JoinHandle<(String, serde_json::Value)> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap();
                    }
                }
            }
            let mut raw = vec![0; length];
            reader.read_exact(&mut raw).unwrap();
            let text = body.to_string();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
            .unwrap();
            (
                request_line.trim_end().to_string(),
                serde_json::from_slice(&raw).unwrap(),
            )
        })
    }

    fn promote_args(args: &[&str]) -> Result<PromoteArgs, argh::EarlyExit> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let normalized = super::super::normalize_args(&args);
        let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
        PromoteArgs::from_args(&["promote"], &refs)
    }

    fn demote_args(args: &[&str]) -> Result<DemoteArgs, argh::EarlyExit> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let normalized = super::super::normalize_args(&args);
        let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
        DemoteArgs::from_args(&["demote"], &refs)
    }

    #[test]
    fn timeout_takes_go_durations_and_seconds() {
        assert_eq!(parse_timeout("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_timeout("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        for zero in ["0", "0s", "-5s", "-1"] {
            let e = parse_timeout(zero).unwrap_err().to_string();
            assert_eq!(e, format!("-timeout must be greater than 0 (got {zero:?})"));
        }
        for bad in ["abc", "", "5x", "1e400"] {
            let e = parse_timeout(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("invalid -timeout {bad:?}: want a duration such as 60s or 2m, or seconds")
            );
        }
    }

    #[test]
    fn flags_parse_in_go_and_argh_spellings() {
        let a = promote_args(&["-socket=/s.sock", "-timeout=2m", "-json", "/db"]).unwrap();
        assert_eq!(a.socket.as_deref(), Some(Path::new("/s.sock")));
        assert_eq!(a.timeout, "2m");
        assert!(a.json);
        assert_eq!(a.path, ["/db"]);
        let a = promote_args(&["--timeout", "5", "/db"]).unwrap();
        assert_eq!(a.timeout, "5");
        assert!(!a.json);
        assert_eq!(promote_args(&["/db"]).unwrap().timeout, "60s");
        let a = demote_args(&["-socket", "/s.sock", "-json=false", "/db"]).unwrap();
        assert!(!a.json);
        assert_eq!(a.path, ["/db"]);
        // demote waits for the replica as the daemon bounds it: no -timeout.
        let e = demote_args(&["-timeout", "5", "/db"]).err().unwrap();
        assert!(e.output.contains("timeout"), "{}", e.output);
    }

    #[test]
    fn arguments_are_checked_before_the_daemon_is_asked() {
        let missing = PathBuf::from("/nonexistent/ls.sock");
        let socket = || Some(missing.clone());
        let e = promote_output(PromoteArgs {
            socket: socket(),
            json: false,
            timeout: "soon".into(),
            path: vec!["/db".into()],
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("invalid -timeout \"soon\""),
            "{e}"
        );
        let e = promote_output(PromoteArgs {
            socket: socket(),
            json: false,
            timeout: "60s".into(),
            path: vec![],
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "database path required\nTry: litestream promote /path/to/db"
        );
        let e = demote_output(DemoteArgs {
            socket: socket(),
            json: false,
            path: vec!["/a".into(), "/b".into()],
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "too many arguments");
        // No daemon: the sibling commands' words.
        let e = demote_output(DemoteArgs {
            socket: socket(),
            json: false,
            path: vec!["/db".into()],
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "failed to connect to control socket: Post \"http://localhost/demote\": dial unix /nonexistent/ls.sock"
            ),
            "{e}"
        );
    }

    #[test]
    fn promote_sends_path_and_timeout_and_prints_the_txid() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ls.sock");
        let daemon = fake_daemon(
            &socket,
            200,
            json!({"status": "promoted", "path": "/data/app.db", "txid": "00000000000000a1"}),
        );
        let out = promote_output(PromoteArgs {
            socket: Some(socket.clone()),
            json: false,
            timeout: "90".into(),
            path: vec!["/data/app.db".into()],
        })
        .unwrap();
        assert_eq!(out, "promoted /data/app.db at txid 00000000000000a1\n");
        let (line, body) = daemon.join().unwrap();
        assert_eq!(line, "POST /promote HTTP/1.1");
        assert_eq!(body, json!({"path": "/data/app.db", "timeout": "1m30s"}));
    }

    #[test]
    fn a_relative_path_is_sent_absolute_and_json_has_the_role() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ls.sock");
        let daemon = fake_daemon(
            &socket,
            200,
            json!({"status": "demoted", "path": "x", "txid": "0000000000000007"}),
        );
        let out = demote_output(DemoteArgs {
            socket: Some(socket.clone()),
            json: true,
            path: vec!["app.db".into()],
        })
        .unwrap();
        let abs = std::env::current_dir().unwrap().join("app.db");
        let (line, body) = daemon.join().unwrap();
        assert_eq!(line, "POST /demote HTTP/1.1");
        assert_eq!(body, json!({"path": abs}));
        let printed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            printed,
            json!({"status": "demoted", "db_path": abs, "role": "follower",
                   "txid": "0000000000000007", "socket": socket})
        );
        // Field order as the sibling commands print theirs: status first, socket last.
        assert!(
            out.starts_with("{\n  \"status\": \"demoted\",\n  \"db_path\""),
            "{out}"
        );
    }

    #[test]
    fn the_daemons_refusal_is_the_error_with_its_details() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ls.sock");
        let daemon = fake_daemon(
            &socket,
            409,
            json!({"error": "lease still held",
                   "details": "s3://b/app.db: lease already held by web-1:42 until 2026-01-01T00:00:30Z"}),
        );
        let e = promote_output(PromoteArgs {
            socket: Some(socket.clone()),
            json: false,
            timeout: "1s".into(),
            path: vec!["/data/app.db".into()],
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "promote failed: lease still held: s3://b/app.db: lease already held by web-1:42 until 2026-01-01T00:00:30Z"
        );
        assert_eq!(daemon.join().unwrap().1["timeout"], "1s");
        // An answer without a txid is not taken for a success.
        let socket2 = dir.path().join("ls2.sock");
        let daemon = fake_daemon(&socket2, 200, json!({"status": "demoted"}));
        let e = demote_output(DemoteArgs {
            socket: Some(socket2),
            json: false,
            path: vec!["/data/app.db".into()],
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("demote: unexpected answer from the daemon (no txid)"),
            "{e}"
        );
        daemon.join().unwrap();
    }
}
