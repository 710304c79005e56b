//! A real S3-compatible server for the tests: s3s-fs 0.14.1 (checks SigV4 signatures, keeps
//! objects on disk) on 127.0.0.1 at a free port, stopped when dropped; and a counting HTTP
//! proxy that tallies the requests a client sends through it.
//!
//! Include with `#[path = "common/s3.rs"] mod s3server;` next to `mod common;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The install command the tests print when the server is missing.
pub const INSTALL: &str = "cargo install s3s-fs@0.14.1 --features binary --locked";

pub const BUCKET: &str = "test-bucket";
pub const ACCESS_KEY: &str = "AKIATESTLITESTREAM01";
pub const SECRET_KEY: &str = "test-secret-key-0123456789abcdefghijklmn";

/// The s3s-fs binary: `$S3S_FS_BIN`, else on PATH, else `~/.cargo/bin/s3s-fs`. Panics with
/// the install command when none is there: the S3 tests must not pass without a server.
pub fn s3s_fs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("s3s-fs"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    let in_cargo = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"))
        .filter(|p| p.is_file());
    on_path.or(in_cargo).unwrap_or_else(|| {
        panic!("s3s-fs is needed for the S3 tests: {INSTALL} (or set S3S_FS_BIN)")
    })
}

/// A free TCP port on 127.0.0.1 (free when this returns; the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running s3s-fs with one bucket, [`BUCKET`], and the key pair [`ACCESS_KEY`] /
/// [`SECRET_KEY`].
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    /// The data directory (one subdirectory per bucket); kept across [`S3Server::restart`].
    pub root: PathBuf,
    log: PathBuf,
}

impl S3Server {
    /// Starts a server keeping its data under `dir/s3`.
    pub fn start(dir: &Path) -> S3Server {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let mut server = S3Server {
            child: None,
            port: 0,
            root,
            log: dir.join("s3s-fs.log"),
        };
        // Another process may take the port between probing and binding: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("s3s-fs did not start: {}", server.log_text());
    }

    /// Spawns the server on `self.port`; true once it accepts connections.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(s3s_fs_bin())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn s3s-fs ({INSTALL}): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not restart on port {}: {}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A replica URL for `prefix` in the test bucket, as users write it.
    pub fn url(&self, prefix: &str) -> String {
        url_for(self.port, prefix)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Object keys under `prefix` in the test bucket, from the data directory (not via S3).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = vec![];
        let base = self.root.join(BUCKET);
        let mut stack = vec![base.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&base) {
                    let k = rel.to_string_lossy().to_string();
                    if k.starts_with(prefix) && k.ends_with(".ltx") {
                        out.push(k);
                    }
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `s3://test-bucket/<prefix>?endpoint=http://127.0.0.1:<port>&region=us-east-1`.
pub fn url_for(port: u16, prefix: &str) -> String {
    format!("s3://{BUCKET}/{prefix}?endpoint=http://127.0.0.1:{port}&region=us-east-1")
}

/// Replica keys for a config written with `common::write_config` (its `extra_db` argument).
pub fn credentials_yaml(access: &str, secret: &str) -> String {
    format!("      access-key-id: {access}\n      secret-access-key: {secret}\n")
}

/// A command with the test credentials in `AWS_*` and no `AWS_CA_BUNDLE` (Litestream 0.5.17
/// refuses to start with it set).
pub fn with_credentials(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
}

/// A TCP proxy in front of the server that counts the HTTP requests passing through, by kind:
/// `PUT` (objects and parts), `GET` (objects), `LIST` (GET on the bucket), `HEAD`, `DELETE`
/// (single), `POST-delete` (DeleteObjects), `POST-multipart` (create/complete).
pub struct CountingProxy {
    pub port: u16,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    pub fn start(upstream: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let c = c.clone();
                std::thread::spawn(move || {
                    let _ = proxy_connection(client, upstream, &c);
                });
            }
        });
        CountingProxy { port, counts, stop }
    }

    /// The counts so far.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    pub fn reset(&self) {
        self.counts.lock().unwrap().clear();
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Relays one client connection: answers are copied back raw; requests are parsed just enough
/// (request line, headers, body by Content-Length or chunked) to count each one.
fn proxy_connection(
    client: TcpStream,
    upstream: u16,
    counts: &Mutex<BTreeMap<String, u64>>,
) -> io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream))?;
    let (mut server_r, mut client_w) = (server.try_clone()?, client.try_clone()?);
    let back = std::thread::spawn(move || {
        let _ = io::copy(&mut server_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Write);
    });
    let mut reader = BufReader::new(client);
    let mut server_w = server;
    let result = (|| -> io::Result<()> {
        loop {
            let mut head = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if head.is_empty() && line.trim().is_empty() {
                    continue;
                }
                head.push_str(&line);
                if line == "\r\n" || line == "\n" {
                    break;
                }
            }
            let first = head.lines().next().unwrap_or_default().to_string();
            let mut parts = first.split_whitespace();
            let (method, target) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let header = |name: &str| {
                head.lines().skip(1).find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            *counts
                .lock()
                .unwrap()
                .entry(classify(method, target))
                .or_default() += 1;
            server_w.write_all(head.as_bytes())?;
            let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
            if chunked {
                copy_chunked(&mut reader, &mut server_w)?;
            } else if let Some(n) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
                let copied = io::copy(&mut (&mut reader).take(n), &mut server_w)?;
                if copied < n {
                    return Ok(());
                }
            }
        }
    })();
    let _ = server_w.shutdown(Shutdown::Write);
    let _ = back.join();
    result
}

fn copy_chunked(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> io::Result<()> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        w.write_all(line.as_bytes())?;
        let size =
            usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                w.write_all(line.as_bytes())?;
                if line == "\r\n" || line == "\n" {
                    return Ok(());
                }
            }
        }
        io::copy(&mut r.take(size as u64 + 2), w)?;
    }
}

/// The kind of an S3 request from its method and target (path-style addressing).
pub fn classify(method: &str, target: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    // Path style: "/bucket" or "/bucket/" is the bucket itself, anything longer an object.
    let on_bucket = path.trim_matches('/').split('/').count() <= 1;
    match method {
        "GET" if on_bucket => "LIST",
        "GET" => "GET",
        "PUT" => "PUT",
        "HEAD" => "HEAD",
        "DELETE" => "DELETE",
        "POST" if has("delete") => "POST-delete",
        "POST" if has("uploads") || has("uploadId") => "POST-multipart",
        other => return other.to_string(),
    }
    .to_string()
}

/// What [`FaultProxy`] does to a request one of its [`Rule`]s picks.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer this status (500, 503, ...) with an S3 XML error; nothing reaches the server.
    Status(u16),
    /// Answer 429 with `Retry-After: <retry_after_secs>`; nothing reaches the server.
    TooManyRequests { retry_after_secs: u64 },
    /// Forward the request, then hold the answer back this long.
    Delay(Duration),
    /// Forward the request body `bytes` at a time, one piece every `every` (a slow upload).
    SlowUpload { bytes: usize, every: Duration },
    /// Relay the answer's body `bytes` at a time, one piece every `every` (a slow download).
    SlowDownload { bytes: usize, every: Duration },
    /// Read the request head and `after` bytes of its body (at most all but one), then reset
    /// the connection; nothing reaches the server.
    ResetUpload { after: usize },
    /// Forward; send the answer's head and `after` bytes of its body (at most all but one),
    /// then reset the connection.
    ResetDownload { after: usize },
    /// Forward; send the answer's head, Content-Length unchanged, and `keep` bytes of its body
    /// (at most all but one), then close the connection cleanly.
    Truncate { keep: usize },
    /// Forward the whole request (the server acts on it), then reset the connection instead
    /// of answering: an answer lost on the way back.
    DropResponse,
}

/// How many of the requests a [`Rule`] matches get its fault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Times {
    /// The next `n`, then the rule is spent.
    Next(u64),
    /// This fraction of them, spread evenly and deterministically (0.5: every second one,
    /// starting with the second), until the rules are cleared.
    Fraction(f64),
    /// Every one, until the rules are cleared.
    Always,
}

/// A fault for requests of one kind, optionally only those whose path contains a string.
#[derive(Clone, Debug)]
pub struct Rule {
    kind: String,
    key: Option<String>,
    fault: Fault,
    times: Times,
    matched: u64,
}

impl Rule {
    /// `fault` for requests of `kind` as [`classify`] names them (`PUT`, `GET`, `LIST`,
    /// `HEAD`, `DELETE`, `POST-delete` (the batch delete), `POST-multipart`), or `*` for any.
    pub fn new(kind: &str, fault: Fault, times: Times) -> Rule {
        Rule {
            kind: kind.to_string(),
            key: None,
            fault,
            times,
            matched: 0,
        }
    }

    /// Only requests whose path contains `part`: a database's prefix, a level (`/0000/`), a
    /// file name.
    pub fn key(mut self, part: &str) -> Rule {
        self.key = Some(part.to_string());
        self
    }

    /// Whether this rule's fault applies to the next request it matches (and counts it).
    fn fires(&mut self) -> bool {
        let i = self.matched as f64;
        self.matched += 1;
        match &mut self.times {
            Times::Next(0) => false,
            Times::Next(n) => {
                *n -= 1;
                true
            }
            Times::Always => true,
            Times::Fraction(p) => ((i + 1.0) * *p).floor() > (i * *p).floor(),
        }
    }
}

/// One request the fault proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// As [`classify`] names it.
    pub kind: String,
    /// Path and query.
    pub target: String,
    pub at: Instant,
    /// The fault it met, if any.
    pub fault: Option<Fault>,
}

impl Seen {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// An HTTP proxy in front of the server that injects faults, as its [`Rule`]s say, into the
/// requests passing through (a thread per connection; each request parsed, forwarded on its
/// own, and its answer read whole before it is relayed, so that a fault can cut it anywhere),
/// and remembers every request it saw. Stalls end early when the rules are cleared or the
/// proxy is dropped.
pub struct FaultProxy {
    pub port: u16,
    state: Arc<FaultState>,
}

struct FaultState {
    upstream: u16,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    /// Bumped by [`FaultProxy::clear`]: stalls in progress end.
    generation: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(FaultState {
            upstream,
            rules: Mutex::new(vec![]),
            seen: Mutex::new(vec![]),
            generation: Default::default(),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve_with_faults(client, &st);
                });
            }
        });
        FaultProxy { port, state }
    }

    /// A replica URL for `prefix` in the test bucket, through this proxy.
    pub fn url(&self, prefix: &str) -> String {
        url_for(self.port, prefix)
    }

    /// Adds a rule after the others; a request meets the fault of the first rule that matches
    /// it and fires.
    pub fn inject(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push(rule);
    }

    /// Removes every rule and ends the stalls in progress (their requests go on normally).
    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Faults still to come from [`Times::Next`] rules.
    pub fn faults_left(&self) -> u64 {
        self.state
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|r| match r.times {
                Times::Next(n) => n,
                _ => 0,
            })
            .sum()
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl FaultState {
    /// The fault for this request, if a rule picks it; records the request either way.
    fn decide(&self, kind: &str, target: &str) -> Option<Fault> {
        let path = target.split('?').next().unwrap_or_default();
        let fault = self
            .rules
            .lock()
            .unwrap()
            .iter_mut()
            .filter(|r| r.kind == "*" || r.kind == kind)
            .filter(|r| r.key.as_ref().is_none_or(|k| path.contains(k.as_str())))
            .find_map(|r| r.fires().then(|| r.fault.clone()));
        self.seen.lock().unwrap().push(Seen {
            kind: kind.to_string(),
            target: target.to_string(),
            at: Instant::now(),
            fault: fault.clone(),
        });
        fault
    }

    /// Sleeps `d`, less if the rules are cleared or the proxy dropped meanwhile; false then.
    fn pause(&self, d: Duration) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        let until = Instant::now() + d;
        loop {
            if self.generation.load(Ordering::SeqCst) != generation {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(10)));
        }
    }

    /// Writes `data` `bytes` at a time, pausing `every` between pieces (all at once after a
    /// release).
    fn trickle(
        &self,
        w: &mut impl Write,
        data: &[u8],
        bytes: usize,
        every: Duration,
    ) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(bytes.max(1).min(rest.len()));
            w.write_all(piece)?;
            w.flush()?;
            rest = tail;
            if !rest.is_empty() && !self.pause(every) {
                return w.write_all(rest);
            }
        }
        Ok(())
    }
}

/// The head of an HTTP message: the raw bytes up to and including the blank line, its first
/// line and its headers.
struct MessageHead {
    raw: String,
    first: String,
    headers: Vec<(String, String)>,
}

impl MessageHead {
    /// Reads a head (skipping blank lines before it); `None` at the end of the stream.
    fn read(r: &mut impl BufRead) -> io::Result<Option<MessageHead>> {
        let mut raw = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return if raw.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            if raw.is_empty() && line.trim().is_empty() {
                continue;
            }
            raw.push_str(&line);
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        let mut lines = raw.lines();
        let first = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Some(MessageHead {
            raw,
            first,
            headers,
        }))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads a body as framed by its head (Content-Length, or chunked: kept raw, framing and
/// all); `to_eof` for an answer without either, which ends with the connection.
fn read_body(r: &mut impl BufRead, head: &MessageHead, to_eof: bool) -> io::Result<Vec<u8>> {
    let mut body = vec![];
    if head.chunked() {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(line.as_bytes());
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 {
                        return Ok(body);
                    }
                    body.extend_from_slice(line.as_bytes());
                    if line == "\r\n" || line == "\n" {
                        return Ok(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..])?;
        }
    } else if let Some(n) = head.content_length() {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if to_eof {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// Makes dropping `s` reset the connection (RST) instead of closing it.
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor `s` keeps open across the call, reading a `linger`
    // that lives across the call, with its size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// An S3 error answer of `status`, with `extra` header lines; no body for a HEAD.
fn error_answer(status: u16, extra: &str, head_only: bool, close: bool) -> Vec<u8> {
    let (reason, code) = match status {
        429 => ("Too Many Requests", "TooManyRequests"),
        500 => ("Internal Server Error", "InternalError"),
        502 => ("Bad Gateway", "BadGateway"),
        503 => ("Service Unavailable", "ServiceUnavailable"),
        _ => ("Error", "InjectedFault"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test fault proxy</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{extra}{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    if !head_only {
        out.push_str(&body);
    }
    out.into_bytes()
}

/// Serves one client connection of the fault proxy, request by request.
fn serve_with_faults(client: TcpStream, st: &FaultState) -> io::Result<()> {
    let mut client = BufReader::new(client);
    let mut upstream: Option<(BufReader<TcpStream>, TcpStream)> = None;
    loop {
        let Some(req) = MessageHead::read(&mut client)? else {
            return Ok(());
        };
        let mut parts = req.first.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let head_only = method == "HEAD";
        let fault = st.decide(&classify(&method, &target), &target);
        match fault {
            Some(Fault::Status(status)) => {
                read_body(&mut client, &req, false)?;
                let answer = error_answer(status, "", head_only, req.wants_close());
                client.get_mut().write_all(&answer)?;
                if req.wants_close() {
                    return Ok(());
                }
                continue;
            }
            Some(Fault::TooManyRequests { retry_after_secs }) => {
                read_body(&mut client, &req, false)?;
                let extra = format!("Retry-After: {retry_after_secs}\r\n");
                let answer = error_answer(429, &extra, head_only, req.wants_close());
                client.get_mut().write_all(&answer)?;
                if req.wants_close() {
                    return Ok(());
                }
                continue;
            }
            Some(Fault::ResetUpload { after }) => {
                let len = req.content_length().unwrap_or(0);
                let mut part = vec![0u8; after.min(len.saturating_sub(1))];
                client.read_exact(&mut part)?;
                reset_on_close(client.get_ref());
                return Ok(());
            }
            _ => {}
        }
        let body = read_body(&mut client, &req, false)?;
        if upstream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", st.upstream))?;
            upstream = Some((BufReader::new(s.try_clone()?), s));
        }
        let (up_r, up_w) = upstream.as_mut().expect("connected above");
        up_w.write_all(req.raw.as_bytes())?;
        match &fault {
            Some(Fault::SlowUpload { bytes, every }) => st.trickle(up_w, &body, *bytes, *every)?,
            _ => up_w.write_all(&body)?,
        }
        let resp = MessageHead::read(up_r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let status: u16 = resp
            .first
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let bodiless = head_only || status < 200 || status == 204 || status == 304;
        let resp_body = if bodiless {
            vec![]
        } else {
            read_body(up_r, &resp, true)?
        };
        // The server closes after an answer delimited by the end of the connection.
        let delimited_by_close = !bodiless && !resp.chunked() && resp.content_length().is_none();
        let close = req.wants_close() || resp.wants_close() || delimited_by_close;
        if close {
            upstream = None;
        }
        let c = client.get_mut();
        let cut = |n: usize| n.min(resp_body.len().saturating_sub(1));
        match fault {
            Some(Fault::DropResponse) => {
                reset_on_close(c);
                return Ok(());
            }
            Some(Fault::Delay(d)) => {
                st.pause(d);
            }
            _ => {}
        }
        c.write_all(resp.raw.as_bytes())?;
        match fault {
            Some(Fault::SlowDownload { bytes, every }) => {
                st.trickle(c, &resp_body, bytes, every)?
            }
            Some(Fault::ResetDownload { after }) => {
                c.write_all(&resp_body[..cut(after)])?;
                c.flush()?;
                // Let the part sent arrive before the reset does.
                std::thread::sleep(Duration::from_millis(50));
                reset_on_close(c);
                return Ok(());
            }
            Some(Fault::Truncate { keep }) => {
                c.write_all(&resp_body[..cut(keep)])?;
                c.shutdown(Shutdown::Both)?;
                return Ok(());
            }
            _ => c.write_all(&resp_body)?,
        }
        if close {
            let _ = c.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}
