//! The control socket (issue 3, seed 000): every endpoint, status and error with its exact
//! JSON, over raw HTTP on the Unix socket of the real binary; the seed's curl examples; the
//! CLI commands; socket life cycle (stale, live, permissions, disabled); registrations across
//! restarts; clients that stall; many clients at once; and the profiling endpoints.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn get(d: &Daemon, path: &str) -> HttpResponse {
    d.request("GET", path, None)
}

fn post(d: &Daemon, path: &str, body: &str) -> HttpResponse {
    d.request("POST", path, Some(body))
}

/// Asserts the status, the JSON content type and the exact JSON body of an answer.
#[track_caller]
fn assert_answer(r: &HttpResponse, status: u16, expected: Value) {
    assert_eq!(r.status, status, "status of {:?}", r.body);
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{r:?}");
    assert!(
        r.body.ends_with("}\n"),
        "one JSON object and a newline: {:?}",
        r.body
    );
    assert_eq!(r.json(), expected);
}

/// An RFC 3339 UTC timestamp with nanoseconds, as Go's `time.RFC3339Nano`.
fn is_rfc3339(s: &str) -> bool {
    s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

/// A daemon replicating `app.db` (one row) to a file replica, once that row is on the
/// replica: the fixture of the per-endpoint tests. `t` is the txid `/list` shows then.
struct Replicating {
    // Declared first so the daemon stops before the directory goes.
    d: Daemon,
    one: OneDb,
    /// The database's path as text.
    dbs: String,
    t: u64,
}

impl Replicating {
    fn start() -> Replicating {
        let one = OneDb::new();
        let d = one.start_replicating();
        let t = list_entry(&d, &one.db)["txid"].as_u64().unwrap();
        Replicating {
            dbs: one.db.display().to_string(),
            d,
            one,
            t,
        }
    }

    /// `POST /register` of `path` with `url`.
    fn register(&self, path: &str, url: &str) -> HttpResponse {
        post(
            &self.d,
            "/register",
            &format!(r#"{{"path":"{path}","replica_url":"{url}"}}"#),
        )
    }

    /// Registers `b.db` (one row) with the file replica `replica-b`, and waits until it has
    /// replicated.
    fn register_b(&self) -> PathBuf {
        let b = self.one.dir.path("b.db");
        insert(&b);
        let bs = b.display().to_string();
        assert_answer(
            &self.register(&bs, &file_url(&self.one.dir.path("replica-b"))),
            200,
            json!({"status": "registered", "path": bs}),
        );
        wait_replicated(&self.d, &b);
        b
    }

    #[track_caller]
    fn assert_kept_running(&self) {
        assert!(
            self.d.log_text().contains("replicating"),
            "the daemon kept running"
        );
    }
}

/// `GET /list`: the seed's fields in its order, then ours.
#[test]
fn list_answers_the_seed_fields_in_order_then_ours() {
    let f = Replicating::start();
    let (d, dbs) = (&f.d, &f.dbs);
    let r = get(d, "/list");
    assert!(
        r.body.starts_with(&format!(
            r#"{{"databases":[{{"path":"{dbs}","status":"replicating","last_sync_at":""#
        )),
        "{}",
        r.body
    );
    let e = &r.json()["databases"][0];
    let (t, last) = (e["txid"].as_u64().unwrap(), e["last_sync_at"].clone());
    assert!(is_rfc3339(last.as_str().unwrap()), "{last}");
    assert_answer(
        &r,
        200,
        json!({"databases": [{"path": dbs, "status": "replicating", "last_sync_at": last,
            "replica_url": file_url(&f.one.replica), "txid": t, "replicated_txid": t,
            "role": "primary"}]}),
    );
    f.assert_kept_running();
}

/// `GET /info`: version, pid, uptime, start time and database count.
#[test]
fn info_answers_version_pid_uptime_and_database_count() {
    let f = Replicating::start();
    let d = &f.d;
    let r = get(d, "/info");
    assert!(r.body.starts_with(r#"{"version":"#), "{}", r.body);
    let v = r.json();
    assert!(is_rfc3339(v["started_at"].as_str().unwrap()));
    assert_answer(
        &r,
        200,
        json!({"version": env!("CARGO_PKG_VERSION"), "pid": d.child.id(),
            "uptime_seconds": v["uptime_seconds"].as_u64().unwrap(), "started_at": v["started_at"],
            "database_count": 1}),
    );
    f.assert_kept_running();
}

/// `GET /txid`, with the path plain and percent-encoded, and its errors.
#[test]
fn txid_answers_and_refuses_missing_unknown_and_relative_paths() {
    let f = Replicating::start();
    let (d, dbs, t) = (&f.d, &f.dbs, f.t);
    assert_answer(
        &get(d, &format!("/txid?path={dbs}")),
        200,
        json!({"txid": t, "replicated_txid": t}),
    );
    let escaped = dbs.replace('/', "%2F");
    assert_answer(
        &get(d, &format!("/txid?path={escaped}")),
        200,
        json!({"txid": t, "replicated_txid": t}),
    );
    assert_answer(
        &get(d, "/txid"),
        400,
        json!({"error": "path required", "details": "give the database's absolute path"}),
    );
    assert_answer(
        &get(d, "/txid?path=/nope.db"),
        404,
        json!({"error": "database not found", "details": "/nope.db"}),
    );
    assert_answer(
        &get(d, "/txid?path=app.db"),
        400,
        json!({"error": "path must be absolute", "details": "got \"app.db\""}),
    );
    f.assert_kept_running();
}

/// `POST /sync`: no_change, synced_local (fire-and-forget), synced (wait), and errors.
#[test]
fn sync_answers_each_status_and_refuses_bad_requests() {
    let f = Replicating::start();
    let (d, db, dbs, t) = (&f.d, &f.one.db, &f.dbs, f.t);
    let sync = |body: String| {
        let r = post(d, "/sync", &body);
        let ms = r.json()["duration_ms"].as_u64();
        (r, ms)
    };
    let (r, ms) = sync(format!(r#"{{"path":"{dbs}"}}"#));
    assert!(r.body.starts_with(r#"{"status":"#), "{}", r.body);
    assert_answer(
        &r,
        200,
        json!({"status": "no_change", "path": dbs, "txid": t, "replicated_txid": t, "duration_ms": ms}),
    );
    insert(db);
    let (r, ms) = sync(format!(r#"{{"path":"{dbs}"}}"#));
    let replicated = r.json()["replicated_txid"].as_u64().unwrap();
    assert!(replicated == t || replicated == t + 1, "{}", r.body);
    assert_answer(
        &r,
        200,
        json!({"status": "synced_local", "path": dbs, "txid": t + 1, "replicated_txid": replicated, "duration_ms": ms}),
    );
    insert(db);
    let (r, ms) = sync(format!(r#"{{"path":"{dbs}","wait":true,"timeout":60}}"#));
    assert_answer(
        &r,
        200,
        json!({"status": "synced", "path": dbs, "txid": t + 2, "replicated_txid": t + 2, "duration_ms": ms}),
    );
    let (r, ms) = sync(format!(r#"{{"path":"{dbs}","wait":true}}"#));
    assert_answer(
        &r,
        200,
        json!({"status": "no_change", "path": dbs, "txid": t + 2, "replicated_txid": t + 2, "duration_ms": ms}),
    );
    assert!(f
        .one
        .replica
        .join(format!("ltx/0/{:016x}-{:016x}.ltx", t + 2, t + 2))
        .exists());
    assert_answer(
        &post(d, "/sync", "{bad"),
        400,
        json!({"error": "invalid request body", "details": "key must be a string at line 1 column 2"}),
    );
    assert_answer(
        &post(d, "/sync", ""),
        400,
        json!({"error": "invalid request body", "details": "EOF while parsing a value at line 1 column 0"}),
    );
    assert_answer(
        &post(d, "/sync", "{}"),
        400,
        json!({"error": "path required", "details": "give the database's absolute path"}),
    );
    assert_answer(
        &post(d, "/sync", r#"{"path":"/nope.db"}"#),
        404,
        json!({"error": "database not found", "details": "/nope.db"}),
    );
    assert_answer(
        &post(d, "/sync", &format!(r#"{{"path":"{dbs}","timeout":0}}"#)),
        400,
        json!({"error": "invalid timeout", "details": "0 (want seconds > 0)"}),
    );
    assert_answer(
        &post(d, "/sync", &format!(r#"{{"path":"{dbs}","wait":"yes"}}"#)),
        400,
        json!({"error": "invalid request body", "details": "invalid type: string \"yes\", expected a boolean at line 1 column 44"
            .replace("44", &(dbs.len() + 23).to_string())}),
    );
    f.assert_kept_running();
}

/// `POST /register`: registered, already_registered, and every refusal.
#[test]
fn register_answers_registered_already_registered_and_every_refusal() {
    let f = Replicating::start();
    let (d, dir) = (&f.d, &f.one.dir);
    let b = dir.path("b.db");
    insert(&b);
    let (bs, b_url) = (b.display().to_string(), file_url(&dir.path("replica-b")));
    let r = f.register(&bs, &b_url);
    assert_eq!(
        r.body,
        format!("{{\"status\":\"registered\",\"path\":\"{bs}\"}}\n")
    );
    assert_answer(&r, 200, json!({"status": "registered", "path": bs}));
    assert_answer(
        &f.register(&bs, &b_url),
        200,
        json!({"status": "already_registered", "path": bs}),
    );
    // Another replica for a registered database is refused, naming the one in use (the old
    // answer was 200 already_registered, and the new URL was silently dropped).
    let other_url = file_url(&dir.path("replica-b2"));
    assert_answer(
        &f.register(&bs, &other_url),
        409,
        json!({"error": "database already registered",
            "details": format!("{bs} replicates to {b_url}; unregister it first to change its replica")}),
    );
    assert_answer(
        &f.register("b.db", &b_url),
        400,
        json!({"error": "path must be absolute", "details": "got \"b.db\""}),
    );
    let cfg = f.one.config.display().to_string();
    assert_answer(
        &f.register(&cfg, &b_url),
        400,
        json!({"error": "invalid database",
            "details": format!("{cfg}: not a SQLite database: file does not start with the SQLite header")}),
    );
    let missing = dir.path("missing.db").display().to_string();
    assert_answer(
        &f.register(&missing, &b_url),
        400,
        json!({"error": "invalid database", "details": format!("{missing}: database file does not exist")}),
    );
    let c = dir.path("c.db");
    insert(&c);
    let cs = c.display().to_string();
    assert_answer(
        &f.register(&cs, "bogus://x/y"),
        400,
        json!({"error": "invalid replica url", "details": "unknown replica type \"bogus\" (supported: file, s3)"}),
    );
    assert_answer(
        &f.register(&cs, "file://relative/dir"),
        400,
        json!({"error": "invalid replica url",
            "details": "invalid file replica url \"file://relative/dir\": it names a host; use file:///absolute/path"}),
    );
    assert_answer(
        &post(d, "/register", &format!(r#"{{"path":"{cs}"}}"#)),
        400,
        json!({"error": "replica_url required", "details": "e.g. file:///var/backups/app.db or s3://bucket/path"}),
    );
    assert_answer(
        &post(d, "/register", r#"{"replica_url":"file:///tmp/x"}"#),
        400,
        json!({"error": "path required", "details": "give the database's absolute path"}),
    );
    assert!(
        find_list_entry(d, &c).is_none(),
        "a refused database is not registered"
    );
    wait_replicated(d, &b);
    f.assert_kept_running();
}

/// `POST /stop` and `/start`: each status, and what a stopped database answers.
#[test]
fn stop_and_start_answer_each_status_and_a_stopped_database_refuses_sync() {
    let f = Replicating::start();
    let d = &f.d;
    let b = f.register_b();
    let bs = b.display().to_string();
    let bt = txid_of(d, &b);
    let path_body = format!(r#"{{"path":"{bs}"}}"#);
    assert_answer(
        &post(d, "/stop", &path_body),
        200,
        json!({"status": "stopped", "path": bs, "txid": bt}),
    );
    assert_answer(
        &post(d, "/stop", &path_body),
        200,
        json!({"status": "already_stopped", "path": bs, "txid": bt}),
    );
    assert_eq!(list_entry(d, &b)["status"], "stopped");
    assert_answer(
        &post(d, "/sync", &path_body),
        409,
        json!({"error": "database not open", "details": format!("{bs} is stopped; start it first")}),
    );
    assert_answer(
        &post(d, "/start", &path_body),
        200,
        json!({"status": "started", "path": bs, "txid": bt}),
    );
    assert_answer(
        &post(d, "/start", &path_body),
        200,
        json!({"status": "already_running", "path": bs, "txid": bt}),
    );
    wait_until(WAIT, "b.db to replicate again", || {
        list_entry(d, &b)["status"] == "replicating"
    });
    assert_answer(
        &post(d, "/start", r#"{"path":"/nope.db"}"#),
        404,
        json!({"error": "database not found", "details": "/nope.db"}),
    );
    assert_answer(
        &post(d, "/stop", r#"{"path":"/nope.db"}"#),
        404,
        json!({"error": "database not found", "details": "/nope.db"}),
    );
    f.assert_kept_running();
}

/// `POST /unregister`: a final sync, then gone.
/// `/unregister` of a database whose replica is unreachable: the answer itself says what the
/// replica does not have and where the rest is (not only the log).
#[test]
fn unregister_says_in_its_answer_what_the_replica_did_not_confirm() {
    let one = OneDb::new();
    let d = one.start_replicating();
    let confirmed = txid_of(&d, &one.db);
    let _down = Blocked::dir(&one.replica.join("ltx/0"));
    insert(&one.db);
    let path = one.db.display().to_string();
    let r = post(
        &d,
        "/unregister",
        &format!(r#"{{"path":"{path}","timeout":1}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "unregistered", "{v}");
    assert_eq!(v["txid"], confirmed + 1, "{v}");
    assert_eq!(v["replicated_txid"], confirmed, "{v}");
    let meta = one.dir.path(".app.db-litestream");
    assert_eq!(
        v["warning"],
        format!(
            "the replica confirmed txid {confirmed:016x} of {:016x}; the rest stays spooled in {} and is uploaded if the database is registered again",
            confirmed + 1,
            meta.display()
        ),
        "{v}"
    );
}

#[test]
fn unregister_syncs_a_last_time_then_forgets_the_database() {
    let f = Replicating::start();
    let d = &f.d;
    let b = f.register_b();
    let bs = b.display().to_string();
    let bt = txid_of(d, &b);
    let path_body = format!(r#"{{"path":"{bs}"}}"#);
    insert(&b);
    let r = post(d, "/unregister", &path_body);
    assert_answer(
        &r,
        200,
        // Litestream's fields, plus what the replica confirmed (all of it: no warning).
        json!({"status": "unregistered", "path": bs, "txid": bt + 1, "replicated_txid": bt + 1}),
    );
    assert!(f
        .one
        .dir
        .path("replica-b")
        .join(format!("ltx/0/{:016x}-{:016x}.ltx", bt + 1, bt + 1))
        .exists());
    assert_answer(
        &post(d, "/unregister", &path_body),
        200,
        json!({"status": "already_unregistered", "path": bs, "txid": 0}),
    );
    assert!(find_list_entry(d, &b).is_none());
    assert_eq!(get(d, "/info").json()["database_count"], 1);
    f.assert_kept_running();
}

/// Unknown paths and wrong methods: JSON, with Allow on 405.
#[test]
fn unknown_paths_and_wrong_methods_answer_json_with_allow() {
    let f = Replicating::start();
    let d = &f.d;
    assert_answer(
        &get(d, "/nope"),
        404,
        json!({"error": "not found", "details": "no endpoint /nope"}),
    );
    assert_answer(
        &post(d, "/", "{}"),
        404,
        json!({"error": "not found", "details": "no endpoint /"}),
    );
    for (method, path, allow) in [
        ("DELETE", "/list", "GET"),
        ("POST", "/info", "GET"),
        ("PUT", "/txid", "GET"),
        ("POST", "/events", "GET"),
        ("GET", "/sync", "POST"),
        ("GET", "/register", "POST"),
        ("GET", "/unregister", "POST"),
        ("GET", "/start", "POST"),
        ("DELETE", "/stop", "POST"),
    ] {
        let r = d.request(method, path, None);
        assert_eq!(r.header("Allow"), Some(allow), "{method} {path}");
        assert_answer(
            &r,
            405,
            json!({"error": "method not allowed", "details": format!("{path} accepts {allow}")}),
        );
    }
    let r = d.request("POST", "/debug/pprof/heap", None);
    assert_eq!(r.header("Allow"), Some("GET"));
    assert_answer(
        &r,
        405,
        json!({"error": "method not allowed", "details": "pprof endpoints accept GET"}),
    );
    f.assert_kept_running();
}

#[test]
fn bodies_over_one_mib_are_refused_and_absurd_lengths_do_not_crash() {
    let OneDb {
        dir: _dir,
        db,
        config,
        ..
    } = OneDb::with_config("", "");
    insert(&db);
    let d = Daemon::start(&config);
    let too_large = json!({"error": "request body too large", "details": "limit is 1048576 bytes"});

    // A declared length over the limit.
    let big = format!(
        r#"{{"path":"{}","pad":"{}"}}"#,
        db.display(),
        "x".repeat(1 << 20)
    );
    assert_answer(&post(&d, "/sync", &big), 413, too_large.clone());
    // A chunked body that grows past the limit (no declared length).
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "POST /register HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = "y".repeat(64 * 1024);
    let mut sent = 0;
    while sent <= 1 << 20 {
        if write!(s, "{:x}\r\n{chunk}\r\n", chunk.len()).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n");
    // The daemon answers without reading the rest, and closes: the answer may be followed by
    // a reset rather than an end of file (the unread body), as curl would see it too.
    let mut raw = vec![];
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_answer(&parse_response(&raw), 413, too_large);
    // Exactly at the limit is read (and then refused for what it says, not for its size).
    let pad = (1 << 20) - r#"{"path":"/nope.db","pad":""}"#.len();
    let at_limit = format!(r#"{{"path":"/nope.db","pad":"{}"}}"#, "x".repeat(pad));
    assert_eq!(at_limit.len(), 1 << 20);
    assert_eq!(post(&d, "/sync", &at_limit).status, 404);

    // tiny_http drains a dropped request's declared body into one buffer of that size: a
    // claim of 100 TB used to abort the daemon. It is now left unanswered instead.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000\r\n\r\n{{}}"
    )
    .unwrap();
    wait_until(WAIT, "the absurd request to be logged", || {
        d.log_text().contains("body_length=100000000000000")
    });
    drop(s);
    assert_eq!(get(&d, "/info").status, 200, "the daemon survived");
}

#[test]
fn sync_wait_times_out_while_the_replica_is_down_then_completes() {
    let OneDb {
        dir: _dir,
        db,
        replica,
        config,
    } = OneDb::new();
    let d = start_replicating(&db, &config);
    let dbs = db.display().to_string();
    let t = txid_of(&d, &db);

    // Make uploads fail: the level-0 directory becomes a file.
    let l0 = replica.join("ltx/0");
    let down = Blocked::dir(&l0);
    insert(&db);
    let started = Instant::now();
    let r = post(
        &d,
        "/sync",
        &format!(r#"{{"path":"{dbs}","wait":true,"timeout":1}}"#),
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // The answer says what is missing and why: the upload's error, naming the replica.
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"], "sync timed out", "{v}");
    let details = v["details"].as_str().unwrap();
    let want = format!(
        "the replica has not confirmed txid {} (replicated_txid {t}) within 1s; last error: {}: ",
        t + 1,
        file_url(&replica)
    );
    assert!(details.starts_with(&want), "{details}");
    // Fire-and-forget still works: the spool has it.
    let r = post(&d, "/sync", &format!(r#"{{"path":"{dbs}"}}"#));
    assert_eq!(r.json()["status"], "no_change", "{}", r.body);
    assert_eq!(r.json()["txid"], t + 1);
    assert_eq!(r.json()["replicated_txid"], t);
    wait_until(WAIT, "/list to show the replica error", || {
        list_entry(&d, &db)["replica_error"].is_string()
    });

    // The replica comes back: the waited sync completes.
    down.unblock();
    let r = post(
        &d,
        "/sync",
        &format!(r#"{{"path":"{dbs}","wait":true,"timeout":60}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replicated_txid"], t + 1);
    assert!(l0
        .join(format!("{:016x}-{:016x}.ltx", t + 1, t + 1))
        .exists());
    assert!(list_entry(&d, &db).get("replica_error").is_none());
}

#[test]
fn stalled_clients_do_not_block_other_requests() {
    let OneDb {
        dir: _dir,
        db,
        config,
        ..
    } = OneDb::with_config("", "");
    insert(&db);
    let d = Daemon::start(&config);
    wait_replicated(&d, &db);
    // Clients that stop halfway: in the request line, in the headers, and in a body (small
    // bodies are read by tiny_http's pool, larger ones by our handler thread).
    let mut stalled = vec![];
    for partial in [
        "GET /li".to_string(),
        "GET /list HTTP/1.1\r\nHost: x\r\nX-Half: ".to_string(),
        format!(
            "POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"path\":\"{}\"",
            db.display()
        ),
        "POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"path\":".to_string(),
    ] {
        for _ in 0..3 {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.write_all(partial.as_bytes()).unwrap();
            stalled.push(s);
        }
    }
    // Everyone else is served, one request at a time and in bursts.
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(&d, "/list").status, 200);
    }
    let socket = d.socket.clone();
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || http(&socket, "GET", "/info", None).status)
        })
        .collect();
    for h in burst {
        assert_eq!(h.join().unwrap(), 200);
    }
    insert(&db);
    d.sync_wait(&db);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
    assert_eq!(get(&d, "/list").status, 200);
}

#[test]
fn registrations_survive_a_restart() {
    let OneDb {
        dir, db, config, ..
    } = OneDb::with_config("", "");
    insert(&db);
    let b = dir.path("b.db");
    insert(&b);
    let b_url = file_url(&dir.path("replica-b"));
    let d = Daemon::start(&config);
    let r = post(
        &d,
        "/register",
        &format!(r#"{{"path":"{}","replica_url":"{b_url}"}}"#, b.display()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_replicated(&d, &b);
    let state = PathBuf::from(format!("{}.registrations.json", d.socket.display()));
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        saved,
        json!({"databases": [{"path": b.display().to_string(), "replica_url": b_url}]}),
        "only the runtime registration is kept"
    );
    assert_eq!(d.terminate(), 0);

    let d = Daemon::start(&config);
    wait_replicated(&d, &b);
    let e = list_entry(&d, &b);
    assert_eq!(e["replica_url"], b_url);
    assert_eq!(get(&d, "/info").json()["database_count"], 2);
    insert(&b);
    let t = d.sync_wait(&b)["txid"].as_u64().unwrap();
    assert!(dir
        .path("replica-b")
        .join(format!("ltx/0/{t:016x}-{t:016x}.ltx"))
        .exists());
    // Unregistered is forgotten for good.
    let r = post(
        &d,
        "/unregister",
        &format!(r#"{{"path":"{}"}}"#, b.display()),
    );
    assert_eq!(r.json()["status"], "unregistered");
    assert_eq!(d.terminate(), 0);
    let d = Daemon::start(&config);
    assert!(find_list_entry(&d, &b).is_none());
    assert!(find_list_entry(&d, &db).is_some());
}

#[test]
fn stale_socket_is_replaced_and_a_live_daemon_is_not_displaced() {
    let OneDb {
        dir, db, config, ..
    } = OneDb::with_config("", "");
    insert(&db);
    let socket = dir.path("ls.sock");
    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(UnixStream::connect(&socket).is_err());
    let d = Daemon::start(&config);
    assert!(
        d.log_text().contains("removing a stale socket"),
        "{}",
        d.log_text()
    );
    assert_eq!(get(&d, "/info").json()["pid"], d.child.id());

    // A second daemon on the same socket: refused, with a clear error; the first goes on.
    let (mut second, log) = spawn_daemon(&config);
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!(
            "Error: {}: another litestream daemon is already listening on this socket",
            socket.display()
        )),
        "{text}"
    );
    assert_eq!(get(&d, "/info").json()["pid"], d.child.id());
    insert(&db);
    d.sync_wait(&db);
    assert_eq!(d.terminate(), 0);
    assert!(!socket.exists(), "the socket is removed on shutdown");

    // Something that is not a socket is never replaced.
    std::fs::write(&socket, b"precious").unwrap();
    let (mut third, log) = spawn_daemon(&config);
    assert_eq!(third.wait().unwrap().code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("exists and is not a socket; refusing to replace it"),
        "{text}"
    );
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
}

#[test]
fn socket_permissions_and_a_disabled_socket() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    insert(&db);
    let url = file_url(&dir.path("replica"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;

    let config = write_config(dir.dir.path(), &[(&db, &url)], "", "");
    let d = Daemon::start(&config);
    assert_eq!(mode(&d.socket), 0o600);
    assert_eq!(d.terminate(), 0);

    let config = write_config(dir.dir.path(), &[(&db, &url)], "", "  permissions: 0660\n");
    let d = Daemon::start(&config);
    assert_eq!(mode(&d.socket), 0o660);
    assert_eq!(get(&d, "/list").status, 200);
    assert_eq!(d.terminate(), 0);

    // Off: the daemon replicates (to a new replica, so its first file tells it is up and
    // its signal handlers are installed), and no socket appears.
    let fresh = file_url(&dir.path("replica-fresh"));
    let config = write_config(dir.dir.path(), &[(&db, &fresh)], "", "  enabled: false\n");
    let (mut child, log) = spawn_daemon(&config);
    insert(&db);
    wait_until(WAIT, "replication without a socket", || {
        dir.path("replica-fresh/ltx/0")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    });
    assert!(!dir.path("ls.sock").exists());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("control socket listening"), "{text}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Runs a shell command line (the seed's curl examples use backslash continuations).
fn sh(script: &str) -> (i32, String) {
    // curl prints a progress meter on stderr when its output is redirected, as a user sees it.
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8(o.stdout).unwrap(),
    )
}

#[test]
fn the_seed_curl_examples_work_verbatim() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl is needed for this test (apt-get install curl)"
    );
    let OneDb {
        dir, db, config, ..
    } = OneDb::with_config("", "");
    insert(&db);
    let d = Daemon::start(&config);
    wait_replicated(&d, &db);
    let my_db = dir.path("my.db");
    insert(&my_db);
    // The seed's text, with the socket path, the database path and the replica URL changed
    // (the example bucket is not reachable from a test).
    let my_replica = file_url(&dir.path("my-replica"));
    let seed = |text: &str| {
        text.replace("/var/run/litestream.sock", &d.socket.display().to_string())
            .replace("/path/to/my.db", &my_db.display().to_string())
            .replace("s3://mybucket/my.db", &my_replica)
    };
    let json_of = |out: &str| -> Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };

    let (code, out) = sh(&seed(
        "curl --unix-socket /var/run/litestream.sock \\\nhttp://localhost/list",
    ));
    assert_eq!(code, 0);
    let e = &json_of(&out)["databases"][0];
    assert_eq!(e["path"], db.display().to_string());
    assert_eq!(e["status"], "replicating");
    assert!(is_rfc3339(e["last_sync_at"].as_str().unwrap()));

    let (_, out) = sh(&seed(
        "curl --unix-socket /var/run/litestream.sock \\\nhttp://localhost/info",
    ));
    let v = json_of(&out);
    for k in [
        "version",
        "pid",
        "uptime_seconds",
        "started_at",
        "database_count",
    ] {
        assert!(v.get(k).is_some(), "{k} in {v}");
    }

    let (_, out) = sh(&seed(
        "curl --unix-socket /var/run/litestream.sock \\\n-X POST http://localhost/register \\\n-H \"Content-Type: application/json\" \\\n-d '{\"path\":\"/path/to/my.db\",\"replica_url\":\"s3://mybucket/my.db\"}'",
    ));
    assert_eq!(
        json_of(&out),
        json!({"status": "registered", "path": my_db.display().to_string()})
    );
    let (_, out) = sh(&seed(
        "curl --unix-socket /var/run/litestream.sock \\\n\"http://localhost/txid?path=/path/to/my.db\"",
    ));
    assert!(json_of(&out)["txid"].is_u64(), "{out}");
    let (_, out) = sh(&seed(
        "curl --unix-socket /var/run/litestream.sock \\\n-X POST http://localhost/unregister \\\n-H \"Content-Type: application/json\" \\\n-d '{\"path\":\"/path/to/my.db\"}'",
    ));
    assert_eq!(json_of(&out)["status"], "unregistered", "{out}");

    // /sync against the configured database (the example's path changed to it).
    let seed_sync =
        |text: &str| seed(text).replace(&my_db.display().to_string(), &db.display().to_string());
    insert(&db);
    let (_, out) = sh(&seed_sync(
        "curl --unix-socket /var/run/litestream.sock \\\n-X POST http://localhost/sync \\\n-H \"Content-Type: application/json\" \\\n-d '{\"path\":\"/path/to/my.db\"}'",
    ));
    let v = json_of(&out);
    assert_eq!(v["status"], "synced_local", "{out}");
    assert_eq!(v["path"], db.display().to_string());
    insert(&db);
    let (_, out) = sh(&seed_sync(
        "curl --unix-socket /var/run/litestream.sock \\\n-X POST http://localhost/sync \\\n-H \"Content-Type: application/json\" \\\n-d '{\"path\":\"/path/to/my.db\",\"wait\":true,\"timeout\":60}'",
    ));
    let v = json_of(&out);
    assert_eq!(v["status"], "synced", "{out}");
    assert_eq!(v["txid"], v["replicated_txid"]);

    // Profiling: the heap example answers a JSON 501 (written to heap.pprof, as the seed
    // redirects it); the goroutine dump lists the threads. (The CPU example samples for 30 s;
    // the profile test covers it with ?seconds=1.)
    let heap = dir.path("heap.pprof");
    let (code, _) = sh(&format!(
        "cd {} && {}",
        dir.dir.path().display(),
        seed("curl --unix-socket /var/run/litestream.sock \\\nhttp://localhost/debug/pprof/heap > heap.pprof")
    ));
    assert_eq!(code, 0);
    assert_eq!(
        json_of(&std::fs::read_to_string(&heap).unwrap())["error"],
        "heap profile not available"
    );
    let (_, out) = sh(&seed(
        "curl --unix-socket /var/run/litestream.sock \\\n\"http://localhost/debug/pprof/goroutine?debug=2\"",
    ));
    assert!(out.contains(": db:app.db\n"), "{out}");
}

/// Runs our CLI; returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let o = run(args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

#[test]
fn cli_commands_print_what_litestream_prints() {
    let OneDb {
        dir, db, config, ..
    } = OneDb::with_config("", "");
    insert(&db);
    let d = Daemon::start(&config);
    wait_replicated(&d, &db);
    let s = d.socket.display().to_string();
    let b = dir.path("b.db");
    insert(&b);
    let bs = b.display().to_string();
    let url = file_url(&dir.path("replica-b"));
    let ok = |args: &[&str]| {
        let (code, out, err) = cli(args);
        assert_eq!((code, err.as_str()), (0, ""), "{args:?}: {out}");
        out
    };
    let fails = |args: &[&str]| {
        let (code, out, err) = cli(args);
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}: {err}");
        err
    };

    // register: text, again ("already registered" with a space), -json (underscore).
    assert_eq!(
        ok(&["register", "-socket", &s, "-replica", &url, &bs]),
        format!("status: registered\ndb_path: {bs}\nreplica: {url}\nsocket: {s}\n")
    );
    assert_eq!(
        ok(&["register", "-socket", &s, "-replica", &url, &bs]),
        format!("status: already registered\ndb_path: {bs}\nreplica: {url}\nsocket: {s}\n")
    );
    assert_eq!(
        ok(&["register", "-socket", &s, "-json", "-replica", &url, &bs]),
        format!("{{\n  \"status\": \"already_registered\",\n  \"db_path\": \"{bs}\",\n  \"replica\": \"{url}\",\n  \"socket\": \"{s}\"\n}}\n")
    );
    wait_replicated(&d, &b);

    // stop / start.
    let bt = txid_of(&d, &b);
    assert_eq!(
        ok(&["stop", "-socket", &s, &bs]),
        format!("status: stopped\ndb_path: {bs}\nstate: stopped\ntxid: {bt}\nsocket: {s}\n")
    );
    assert_eq!(
        ok(&["stop", "-socket", &s, &bs]),
        format!(
            "status: already_stopped\ndb_path: {bs}\nstate: stopped\ntxid: {bt}\nsocket: {s}\n"
        )
    );
    assert_eq!(
        fails(&["sync", "-socket", &s, &bs]),
        format!("Error: sync failed: database not open: {bs} is stopped; start it first\n")
    );
    assert_eq!(
        ok(&["start", "-socket", &s, "-json", &bs]),
        format!("{{\n  \"status\": \"started\",\n  \"db_path\": \"{bs}\",\n  \"state\": \"running\",\n  \"txid\": {bt},\n  \"socket\": \"{s}\"\n}}\n")
    );
    assert_eq!(
        ok(&["start", "-socket", &s, &bs]),
        format!(
            "status: already_running\ndb_path: {bs}\nstate: running\ntxid: {bt}\nsocket: {s}\n"
        )
    );
    assert_eq!(
        ok(&["stop", "-socket", &s, "-json", &bs]),
        format!("{{\n  \"status\": \"stopped\",\n  \"db_path\": \"{bs}\",\n  \"state\": \"stopped\",\n  \"txid\": {bt},\n  \"socket\": \"{s}\"\n}}\n")
    );
    ok(&["start", "-socket", &s, &bs]);
    wait_until(WAIT, "b.db to run again", || {
        list_entry(&d, &b)["status"] == "replicating"
    });

    // sync: decimal txids; replica_txid only with -wait; a relative path is resolved.
    let lines = |out: String| out.lines().map(str::to_string).collect::<Vec<_>>();
    insert(&b);
    let out = lines(ok(&["sync", "-socket", &s, &bs]));
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], format!("db_path: {bs}"));
    assert_eq!(out[1], format!("txid: {}", bt + 1));
    assert!(out[2]
        .strip_prefix("duration_ms: ")
        .unwrap()
        .parse::<u64>()
        .is_ok());
    insert(&b);
    let out = lines(ok(&["sync", "-socket", &s, "-wait", &bs]));
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(
        out[1..3],
        [
            format!("txid: {}", bt + 2),
            format!("replica_txid: {}", bt + 2)
        ]
    );
    let o = Command::new(bin())
        .current_dir(dir.dir.path())
        .args(["sync", "-socket", &s, "-wait", "-json", "b.db"])
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    let ms = serde_json::from_str::<Value>(&out).unwrap()["duration_ms"]
        .as_u64()
        .unwrap();
    assert_eq!(
        out,
        format!("{{\n  \"db_path\": \"{bs}\",\n  \"txid\": {},\n  \"replica_txid\": {},\n  \"duration_ms\": {ms}\n}}\n", bt + 2, bt + 2)
    );

    // txid (ours).
    assert_eq!(
        ok(&["txid", "-socket", &s, &bs]),
        format!("txid: {}\nreplicated_txid: {}\n", bt + 2, bt + 2)
    );
    assert_eq!(
        ok(&["txid", "-socket", &s, "-json", &bs]),
        format!(
            "{{\n  \"txid\": {},\n  \"replicated_txid\": {}\n}}\n",
            bt + 2,
            bt + 2
        )
    );

    // list and info.
    let out = ok(&["list", "-socket", &s]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, p) in rows.iter().zip([&db, &b]) {
        let rest = row
            .strip_prefix(&format!("{} [replicating] (last sync: ", p.display()))
            .unwrap_or_else(|| panic!("{row}"));
        assert!(rest.len() == 21 && rest.ends_with("Z)"), "{row}");
    }
    let out = ok(&["list", "-socket", &s, "-json"]);
    assert!(
        out.starts_with(&format!(
            "{{\n  \"databases\": [\n    {{\n      \"path\": \"{}\",\n      \"status\": \"replicating\",\n      \"last_sync_at\": \"",
            db.display()
        )),
        "{out}"
    );
    let out = ok(&["info", "-socket", &s]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], format!("Litestream {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(rows[1], format!("  PID:        {}", d.child.id()));
    assert!(
        rows[2].starts_with("  Uptime:     ") && rows[2].ends_with('s'),
        "{out}"
    );
    assert!(
        rows[3].starts_with("  Started at: ") && rows[3].len() == 34,
        "{out}"
    );
    assert_eq!(rows[4], "  Databases:  2");
    assert_eq!(rows.len(), 5);
    let out = ok(&["info", "-socket", &s, "-json"]);
    assert!(
        out.starts_with(&format!(
            "{{\n  \"version\": \"{}\",\n  \"pid\": {},\n  \"uptime_seconds\": ",
            env!("CARGO_PKG_VERSION"),
            d.child.id()
        )),
        "{out}"
    );

    // unregister: dry run (no request), then for real, then again.
    assert_eq!(
        ok(&["unregister", "-socket", &s, "-dry-run", &bs]),
        format!("Dry run: unregister request preview\n  database: {bs}\n  socket: {s}\n  replicas: daemon-managed replica for this database\n  final sync: daemon close will sync the database and replica before the command completes\n  timeout: 30s\nNo unregister request was sent.\n")
    );
    assert!(find_list_entry(&d, &b).is_some());
    assert_eq!(
        ok(&["unregister", "-socket", &s, "-json", &bs]),
        format!("{{\n  \"status\": \"unregistered\",\n  \"db_path\": \"{bs}\",\n  \"final_txid\": {},\n  \"socket\": \"{s}\"\n}}\n", bt + 2)
    );
    assert_eq!(
        ok(&["unregister", "-socket", &s, &bs]),
        format!("status: already_unregistered\ndb_path: {bs}\nfinal_txid: 0\nsocket: {s}\n")
    );

    // Errors: relayed from the daemon, or before any request.
    let nope = dir.path("nope.db").display().to_string();
    assert_eq!(
        fails(&["sync", "-socket", &s, &nope]),
        format!("Error: sync failed: database not found: {nope}\n")
    );
    assert_eq!(
        fails(&["start", "-socket", &s, &nope]),
        format!("Error: start failed: database not found: {nope}\n")
    );
    assert_eq!(
        fails(&["register", "-socket", &s, "-replica", "bogus://x", &bs]),
        "Error: register failed: invalid replica url: unknown replica type \"bogus\" (supported: file, s3)\n"
    );
    assert_eq!(
        fails(&["sync", "-socket", &s, "-timeout", "0", &bs]),
        "Error: timeout must be greater than 0\n"
    );
    assert_eq!(
        fails(&["sync", "-socket", &s]),
        "Error: database path required\nTry: litestream sync /path/to/db\n"
    );
    assert_eq!(
        fails(&["register", "-socket", &s, &bs]),
        "Error: -replica is required\nTry: litestream register -replica s3://bucket/prefix /path/to/db\n"
    );
    assert_eq!(
        fails(&["list", "-socket", &s, "extra"]),
        "Error: too many arguments\n"
    );
    let gone = dir.path("gone.sock").display().to_string();
    assert_eq!(
        fails(&["list", "-socket", &gone]),
        format!("Error: failed to connect to control socket: Get \"http://localhost/list\": dial unix {gone}: connect: no such file or directory\n")
    );
    assert_eq!(
        fails(&["sync", "-socket", &gone, "-json", &bs]),
        format!("Error: failed to connect to control socket: Post \"http://localhost/sync\": dial unix {gone}: connect: no such file or directory\n")
    );
    let not_socket = config.display().to_string();
    assert_eq!(
        fails(&["info", "-socket", &not_socket]),
        format!("Error: failed to connect to control socket: Get \"http://localhost/info\": dial unix {not_socket}: connect: connection refused\n")
    );
}

#[test]
fn fifty_clients_hammer_list_and_txid_while_ten_databases_replicate() {
    let dir = TestDir::new();
    let dbs: Vec<PathBuf> = (0..10).map(|i| dir.path(&format!("db{i}.db"))).collect();
    let urls: Vec<String> = (0..10)
        .map(|i| file_url(&dir.path(&format!("replica{i}"))))
        .collect();
    for db in &dbs {
        insert(db);
    }
    let pairs: Vec<(&Path, &str)> = dbs
        .iter()
        .zip(&urls)
        .map(|(d, u)| (d.as_path(), u.as_str()))
        .collect();
    let config = write_config(dir.dir.path(), &pairs, "    monitor-interval: 100ms\n", "");
    let d = Daemon::start(&config);
    for db in &dbs {
        wait_replicated(&d, db);
    }
    let writers: Vec<Writer> = dbs.iter().map(|db| Writer::start(db, 100)).collect();

    // Waited syncs, round robin, for as long as the clients run.
    let done = Arc::new(AtomicBool::new(false));
    let syncs = Arc::new(AtomicU64::new(0));
    let syncer = {
        let (done, syncs, socket, dbs) =
            (done.clone(), syncs.clone(), d.socket.clone(), dbs.clone());
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                let db = &dbs[i % dbs.len()];
                let started = Instant::now();
                let r = http(
                    &socket,
                    "POST",
                    "/sync",
                    Some(&format!(
                        r#"{{"path":"{}","wait":true,"timeout":30}}"#,
                        db.display()
                    )),
                );
                assert_eq!(r.status, 200, "{}", r.body);
                assert!(matches!(
                    r.json()["status"].as_str(),
                    Some("synced" | "no_change")
                ));
                slowest = slowest.max(started.elapsed());
                syncs.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            slowest
        })
    };

    let clients: Vec<_> = (0..50)
        .map(|c| {
            let (socket, dbs) = (d.socket.clone(), dbs.clone());
            std::thread::spawn(move || {
                for i in 0..40 {
                    if (c + i) % 2 == 0 {
                        let r = http(&socket, "GET", "/list", None);
                        assert_eq!(r.status, 200, "{}", r.body);
                        assert_eq!(r.json()["databases"].as_array().unwrap().len(), 10);
                    } else {
                        let db = &dbs[(c + i) % dbs.len()];
                        let r = http(
                            &socket,
                            "GET",
                            &format!("/txid?path={}", db.display()),
                            None,
                        );
                        assert_eq!(r.status, 200, "{}", r.body);
                        assert!(r.json()["txid"].as_u64().unwrap() >= 1);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let syncs_before = syncs.load(Ordering::SeqCst);
    for c in clients {
        c.join().expect("a client saw an error");
    }
    let hammer = started.elapsed();
    // Syncs kept completing while the clients ran, and go on after.
    wait_until(WAIT, "syncs to keep completing", || {
        syncs.load(Ordering::SeqCst) >= syncs_before + 10
    });
    done.store(true, Ordering::SeqCst);
    let slowest = syncer.join().expect("a sync failed");
    assert!(
        slowest < Duration::from_secs(10),
        "a waited sync took {slowest:?}"
    );
    assert!(
        hammer < Duration::from_secs(60),
        "2000 requests took {hammer:?}"
    );
    for (db, w) in dbs.iter().zip(writers) {
        let last = w.stop();
        let v = d.sync_wait(db);
        assert_eq!(v["txid"], v["replicated_txid"]);
        assert!(last > 0);
    }
    eprintln!(
        "2000 requests from 50 clients in {hammer:?}; {} waited syncs, slowest {slowest:?}",
        syncs.load(Ordering::SeqCst)
    );
}

/// A daemon kept busy: a writer at ~2000 rows/s and a client forcing syncs.
struct Busy {
    dir: TestDir,
    d: Daemon,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    writer: Option<Writer>,
}

impl Busy {
    fn start() -> Busy {
        let OneDb {
            dir, db, config, ..
        } = OneDb::with_config("    monitor-interval: 10ms\n", "");
        insert(&db);
        let d = Daemon::start(&config);
        wait_replicated(&d, &db);
        let writer = Writer::start(&db, 2000);
        let stop = Arc::new(AtomicBool::new(false));
        let syncer = {
            let (stop, socket) = (stop.clone(), d.socket.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let body = format!(r#"{{"path":"{}"}}"#, db.display());
                    assert_eq!(http(&socket, "POST", "/sync", Some(&body)).status, 200);
                }
            })
        };
        Busy {
            dir,
            d,
            stop,
            threads: vec![syncer],
            writer: Some(writer),
        }
    }

    fn profile(&self) -> Vec<u8> {
        let r = raw_get(&self.d.socket, "/debug/pprof/profile?seconds=1");
        assert_eq!(r.0, 200, "{}", String::from_utf8_lossy(&r.1));
        r.1
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        drop(self.writer.take());
    }
}

/// A GET whose body may be binary: status, body bytes (de-chunked) and the head.
fn raw_get(socket: &Path, path: &str) -> (u16, Vec<u8>, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = vec![];
        chunked_transfer::Decoder::new(body.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        body = out;
    }
    (status, body, head)
}

#[test]
fn cpu_profile_parses_and_has_samples_and_other_profiles_answer_honestly() {
    use pprof::protos::Message;
    let busy = Busy::start();
    // Three seconds: the daemon spends a few tens of ms of CPU a second on this load, and at
    // 100 samples per CPU second one second can come back empty on a loaded machine.
    let (status, body, head) = raw_get(&busy.d.socket, "/debug/pprof/profile?seconds=3");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        head.contains("Content-Type: application/octet-stream"),
        "{head}"
    );
    let profile = pprof::protos::Profile::decode(body.as_slice()).unwrap_or_else(|e| {
        let keep =
            std::env::temp_dir().join(format!("litestream-bad-profile-{}.pb", std::process::id()));
        std::fs::write(&keep, &body).unwrap();
        panic!("not a profile.proto ({e}); kept in {}", keep.display())
    });
    let total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
    assert!(total > 0, "no samples in {} bytes", body.len());
    assert!(
        profile
            .string_table
            .iter()
            .any(|s| s.contains("litestream")),
        "function names are resolved"
    );
    eprintln!(
        "CPU profile: {} samples, {total} counts",
        profile.sample.len()
    );

    let (status, svg, head) = raw_get(&busy.d.socket, "/debug/pprof/profile?seconds=1&format=svg");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: image/svg+xml"), "{head}");
    let svg = String::from_utf8(svg).unwrap();
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{}",
        &svg[svg.len().saturating_sub(300)..]
    );

    let socket = &busy.d.socket;
    assert_answer(
        &http(socket, "GET", "/debug/pprof/profile?seconds=0", None),
        400,
        json!({"error": "invalid seconds", "details": "want an integer from 1 to 300"}),
    );
    let threads = http(socket, "GET", "/debug/pprof/goroutine?debug=2", None);
    assert_eq!(threads.status, 200);
    for name in [
        ": db:app.db\n",
        ": upload-0\n",
        ": upload-3\n",
        ": ipc\n",
        ": ipc-kick\n",
        ": signals\n",
    ] {
        assert!(threads.body.contains(name), "{name:?} in {}", threads.body);
    }
    let v = http(socket, "GET", "/debug/pprof/goroutine?format=json", None).json();
    assert!(v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "db:app.db"));
    assert_eq!(
        http(socket, "GET", "/debug/pprof/threadcreate", None).status,
        200
    );
    for name in ["heap", "allocs", "block", "mutex", "trace"] {
        let r = http(socket, "GET", &format!("/debug/pprof/{name}"), None);
        assert_eq!(r.status, 501, "{name}");
        let v = r.json();
        assert_eq!(v["error"], format!("{name} profile not available"));
        assert!(v["details"].as_str().unwrap().len() > 20, "a reason: {v}");
    }
    assert_eq!(http(socket, "GET", "/debug/pprof/nope", None).status, 404);
    assert_eq!(http(socket, "GET", "/debug/pprof/", None).status, 200);
    let _ = &busy.dir;
}

#[test]
fn cpu_profile_reads_with_go_tool_pprof() {
    let go = Command::new("go").arg("version").output();
    if go.is_err() {
        if std::env::var("LITESTREAM_TEST_NO_GO").as_deref() == Ok("1") {
            eprintln!("SKIPPED: `go` is not installed, so `go tool pprof -top` was NOT run on the CPU profile (LITESTREAM_TEST_NO_GO=1)");
            return;
        }
        panic!("`go` is needed to check the CPU profile with `go tool pprof` (apt-get install golang-go), or set LITESTREAM_TEST_NO_GO=1 to skip this check knowingly");
    }
    let busy = Busy::start();
    let file = busy.dir.path("cpu.pprof");
    std::fs::write(&file, busy.profile()).unwrap();
    let o = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&file)
        .env("HOME", busy.dir.dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "go tool pprof failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("flat%"), "{out}");
    let rows = out
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(rows > 0, "no functions listed: {out}");
    eprintln!("{}", out.lines().take(12).collect::<Vec<_>>().join("\n"));
}

/// A second path to a file the daemon replicates (a symlinked directory, `..`) is refused with
/// 409 naming the first path, before the daemon opens the file: opening and closing it would
/// drop SQLite's locks, after which the application's last close deletes the WAL under us and
/// replication silently stops. Replication goes on, and the alias is not persisted.
#[test]
fn a_second_path_to_a_replicated_file_is_refused_and_replication_goes_on() {
    let dir = TestDir::new();
    let data = dir.path("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("app.db");
    insert(&db);
    let alias_dir = dir.path("alias");
    std::os::unix::fs::symlink(&data, &alias_dir).unwrap();
    let replica = dir.path("replica");
    let config = write_config(dir.dir.path(), &[(&db, &file_url(&replica))], "", "");
    let d = Daemon::start(&config);
    wait_replicated(&d, &db);
    // The application keeps a connection open while the alias is registered.
    let app = create_db(&db);
    app.execute("INSERT INTO t(v) VALUES ('before')", [])
        .unwrap();
    let dotdot = data.join("..").join("data").join("app.db");
    for alias in [alias_dir.join("app.db"), dotdot] {
        let r = post(
            &d,
            "/register",
            &format!(
                r#"{{"path":"{}","replica_url":"{}"}}"#,
                alias.display(),
                file_url(&dir.path("replica-2"))
            ),
        );
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(r.json()["error"], "database already registered");
        let details = r.json()["details"].as_str().unwrap().to_string();
        assert!(details.contains(&db.display().to_string()), "{details}");
        assert!(find_list_entry(&d, &alias).is_none());
    }
    // The application's last connection closes: with our locks intact, SQLite cannot take
    // the exclusive lock it needs to checkpoint and delete the WAL.
    app.execute("INSERT INTO t(v) VALUES ('after')", [])
        .unwrap();
    drop(app);
    assert!(
        dir.path("data/app.db-wal").exists(),
        "the WAL was deleted: our locks were dropped"
    );
    insert(&db);
    d.sync_wait(&db);
    let out = dir.path("out.db");
    restore(&file_url(&replica), &out, &[]);
    assert_same_ids(&ids(&out), &ids(&db), "restore after the refused alias");
    assert!(!dir.path("replica-2").exists());
    let state = PathBuf::from(format!("{}.registrations.json", d.socket.display()));
    assert!(!state.exists() || !std::fs::read_to_string(&state).unwrap().contains("alias"));
    assert_eq!(d.terminate(), 0);
}

/// `GET /debug/sync-status`: Litestream 0.5.17's diagnostics shape, for the last pass.
#[test]
fn sync_status_reports_the_last_pass_in_litestreams_shape() {
    let one = OneDb::new();
    let d = one.start_replicating();
    insert(&one.db);
    let synced = d.sync_wait(&one.db);
    let path = one.db.display().to_string();
    let r = get(&d, &format!("/debug/sync-status?path={path}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let dbs = v["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 1, "{v}");
    let s = &dbs[0];
    assert_eq!(s["path"], path.as_str(), "{s}");
    assert_eq!(s["active"], false, "{s}");
    assert!(
        matches!(
            (s["operation"].as_str(), s["phase"].as_str()),
            (Some("sync"), Some("sync_complete")) | (Some("checkpoint"), Some("checkpoint_exec"))
        ),
        "{s}"
    );
    assert_eq!(s["txid"], synced["txid"], "{s}");
    assert!(
        s["started_at"].is_string() && s["updated_at"].is_string(),
        "{s}"
    );
    assert!(s.get("error").is_none(), "{s}");
    // All databases without ?path=; an unknown path is 404, a relative one 400.
    let all = get(&d, "/debug/sync-status").json();
    assert_eq!(all["databases"].as_array().unwrap().len(), 1, "{all}");
    assert_answer(
        &get(&d, "/debug/sync-status?path=/nowhere.db"),
        404,
        json!({"error": "database not found", "details": "/nowhere.db"}),
    );
    assert_eq!(get(&d, "/debug/sync-status?path=x.db").status, 400);
}
