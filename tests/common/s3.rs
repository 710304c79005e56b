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

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
