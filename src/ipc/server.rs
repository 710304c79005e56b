//! The control socket: a blocking tiny_http server on a Unix socket (and optionally on the
//! `addr:` TCP port), with a thread per request so a slow `/sync` or a long `/events` stream
//! never holds up the others.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::handlers::{self, Ctx};

/// The default socket path, as Litestream.
pub const DEFAULT_SOCKET: &str = "/var/run/litestream.sock";

/// Where the socket goes when the configured (or default) directory is not writable: the
/// user's runtime directory.
pub fn fallback_socket_path() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("litestream.sock"))
}

/// Picks the socket path the daemon binds: the configured one, else the default when its
/// directory is writable, else `$XDG_RUNTIME_DIR/litestream.sock`.
pub fn daemon_socket_path(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    let default = PathBuf::from(DEFAULT_SOCKET);
    if dir_writable(default.parent().unwrap_or(Path::new("/"))) {
        return default;
    }
    fallback_socket_path().unwrap_or(default)
}

/// The socket a client command talks to when `-socket` is not given: the default if a socket
/// exists there, else the runtime-directory one if it exists, else the default.
pub fn client_socket_path() -> PathBuf {
    let default = PathBuf::from(DEFAULT_SOCKET);
    if is_socket(&default) {
        return default;
    }
    match fallback_socket_path() {
        Some(p) if is_socket(&p) => p,
        _ => default,
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

fn dir_writable(dir: &Path) -> bool {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Binds the Unix socket with `mode` permissions from the first moment it is visible: it is
/// bound under a temporary name, chmod-ed, then renamed into place. A socket file left by a
/// crashed daemon is replaced; a live daemon on it is reported, not displaced.
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "{}: another litestream daemon is already listening on this socket",
                    path.display()
                );
            }
            log::info!(
                "socket {}: removing a stale socket left by a previous daemon",
                path.display()
            );
        }
        Ok(_) => bail!(
            "{}: exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create socket directory {}", dir.display()))?;
    let tmp = dir.join(format!(".litestream-{}.sock.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).with_context(|| format!("bind {}", tmp.display()))?;
    let result = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, tmp.display()))
        .and_then(|_| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("rename socket to {}", path.display()))
        });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// A running HTTP listener (Unix socket or TCP).
pub struct Listener {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    socket_path: Option<PathBuf>,
}

impl Listener {
    /// Serves on a bound Unix socket at `path`.
    pub fn unix(listener: UnixListener, path: &Path, ctx: Arc<Ctx>) -> Result<Listener> {
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let kick = Kick::Unix(path.to_path_buf());
        Self::start(server, Some(path.to_path_buf()), kick, ctx)
    }

    /// Serves on a TCP address (`addr:` in the config).
    pub fn tcp(addr: &str, ctx: Arc<Ctx>) -> Result<Listener> {
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("listen on {addr}"))?;
        let local = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
        Self::start(server, None, Kick::Tcp(local), ctx)
    }

    fn start(
        server: tiny_http::Server,
        socket_path: Option<PathBuf>,
        kick: Kick,
        ctx: Arc<Ctx>,
    ) -> Result<Listener> {
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (server, stop, ctx) = (server.clone(), stop.clone(), ctx.clone());
            thread::Builder::new()
                .name("ipc".into())
                .spawn(move || serve(&server, &stop, ctx))?
        };
        let kicker = {
            let (stop, busy) = (stop.clone(), ctx.long_requests.clone());
            thread::Builder::new()
                .name("ipc-kick".into())
                .spawn(move || kick_while_busy(&kick, &stop, &busy))?
        };
        Ok(Listener {
            server,
            stop,
            threads: vec![accept, kicker],
            socket_path,
        })
    }

    /// Stops accepting, and removes the socket file.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn serve(server: &tiny_http::Server, stop: &AtomicBool, ctx: Arc<Ctx>) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv() {
            Ok(rq) => {
                let ctx = ctx.clone();
                if let Err(e) = thread::Builder::new()
                    .name("ipc-req".into())
                    .spawn(move || handlers::handle(rq, &ctx))
                {
                    log::error!("ipc: cannot start a request thread: {e}");
                }
            }
            Err(e) => {
                if !stop.load(Ordering::SeqCst) {
                    log::error!("ipc: accept failed: {e}");
                }
                return;
            }
        }
    }
}

/// How to open a throwaway connection to our own listener.
enum Kick {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// Works around tiny_http 0.12's connection pool, which can leave accepted connections queued
/// with no thread to run them when several arrive at once while its threads are busy with
/// long-lived connections (`/events` streams, waited `/sync`s): its idle-thread count is
/// stale until the woken thread runs. Each extra connection that finds no idle thread makes
/// the pool spawn one, and that thread drains the queue after its own (empty) connection. So
/// while long requests are open, a throwaway connection every 50 ms rescues stuck ones; when
/// none are open every connection is short and the pool drains on its own, so nothing runs.
fn kick_while_busy(kick: &Kick, stop: &AtomicBool, busy: &AtomicUsize) {
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
        if busy.load(Ordering::SeqCst) == 0 {
            continue;
        }
        let _ = match kick {
            Kick::Unix(p) => UnixStream::connect(p).map(drop),
            Kick::Tcp(a) => {
                std::net::TcpStream::connect_timeout(a, Duration::from_millis(200)).map(drop)
            }
        };
    }
}
