//! The control socket: a blocking tiny_http server on a Unix socket (and optionally on the
//! `addr:` TCP port), with a thread per request so a slow `/sync` or a long `/events` stream
//! never holds up the others.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::handlers::{self, Ctx, LongRequests};

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
/// directory is writable, else `$XDG_RUNTIME_DIR/litestream.sock`; `None` when there is no
/// configured path and neither default is usable (an unprivileged user without a runtime
/// directory): the daemon then replicates without a socket rather than not at all.
pub fn daemon_socket_path(configured: Option<&Path>) -> Option<PathBuf> {
    choose_daemon_socket(
        configured,
        Path::new(DEFAULT_SOCKET),
        fallback_socket_path(),
        dir_writable,
    )
}

/// The rule of [`daemon_socket_path`], with its inputs passed in (tests run as root, for whom
/// every directory is writable).
fn choose_daemon_socket(
    configured: Option<&Path>,
    default: &Path,
    fallback: Option<PathBuf>,
    writable: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(p) = configured {
        return Some(p.to_path_buf());
    }
    if writable(default.parent().unwrap_or(Path::new("/"))) {
        return Some(default.to_path_buf());
    }
    fallback
}

/// The socket a client command talks to when `-socket` is not given: the default if a socket
/// exists there, else the runtime-directory one if it exists, else the default.
pub fn client_socket_path() -> PathBuf {
    choose_client_socket(Path::new(DEFAULT_SOCKET), fallback_socket_path(), is_socket)
}

/// The rule of [`client_socket_path`], with its inputs passed in.
fn choose_client_socket(
    default: &Path,
    fallback: Option<PathBuf>,
    is_socket: impl Fn(&Path) -> bool,
) -> PathBuf {
    if is_socket(default) {
        return default.to_path_buf();
    }
    match fallback {
        Some(p) if is_socket(&p) => p,
        _ => default.to_path_buf(),
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

/// The error of [`bind_socket`] when a live daemon already answers on the socket: the caller
/// tells it apart (`downcast_ref`) because a default socket held by another daemon is not fatal.
#[derive(Debug)]
pub struct SocketInUse(pub PathBuf);

impl std::fmt::Display for SocketInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: another litestream daemon is already listening on this socket",
            self.0.display()
        )
    }
}

impl std::error::Error for SocketInUse {}

/// Binds the Unix socket with `mode` permissions from the first moment it is visible: it is
/// bound under a temporary name, chmod-ed, then hard-linked into place. The link fails if the
/// name exists, so of several daemons started at once exactly one gets the socket (a rename
/// would let the last one silently take it from the others). A socket file left by a crashed
/// daemon is replaced; a live daemon on it is reported ([`SocketInUse`]), not displaced.
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener> {
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
        .and_then(|_| claim_socket_path(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    result.map(|_| listener)
}

/// Links the bound socket `tmp` to `path` unless a live daemon has it: a stale socket there
/// is removed first (a few tries, in case another starting daemon races for it).
fn claim_socket_path(tmp: &Path, path: &Path) -> Result<()> {
    for _ in 0..5 {
        match std::fs::hard_link(tmp, path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("link socket to {}", path.display())),
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if socket_is_live(path) {
                    return Err(SocketInUse(path.to_path_buf()).into());
                }
                log::info!(
                    socket:% = path.display();
                    "removing a stale socket left by a previous daemon"
                );
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
                }
            }
            Ok(_) => bail!(
                "{}: exists and is not a socket; refusing to replace it",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
        }
    }
    bail!(
        "{}: could not claim the socket (another daemon keeps replacing it)",
        path.display()
    )
}

/// Whether a daemon listens on the socket file. Only "connection refused" proves the file is
/// stale: a busy daemon can fail a connect with EAGAIN (its backlog full), and taking its
/// socket over would leave two daemons replicating the same databases. So other errors are
/// retried a few times and, if they persist, count as live.
fn socket_is_live(path: &Path) -> bool {
    for _ in 0..5 {
        match UnixStream::connect(path) {
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return false,
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    true
}

/// A running HTTP listener (Unix socket or TCP).
pub struct Listener {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    socket_path: Option<PathBuf>,
    local_addr: Option<SocketAddr>,
    in_flight: Arc<AtomicUsize>,
}

/// How long a write to a client may block (its receive buffer full, the client not reading)
/// before it fails: an `/events` subscriber that stops reading must not hold a thread and its
/// queue until the daemon exits. A client that reads at least once per heartbeat interval
/// (30 s) is never cut.
pub const SEND_DEADLINE: Duration = Duration::from_secs(15);

/// Gives the accepted Unix-socket connections a send timeout of `timeout`: a write that blocks
/// that long fails, and the event stream writing it ends, releasing its thread and its queue.
/// tiny_http accepts the connections and does not expose them, and on Linux (unlike TCP) an
/// accepted Unix socket does not inherit the listener's timeout; so the process's descriptors
/// are looked through for connected Unix stream sockets bound to a path (the server side of a
/// connection to our listener; sockets this process opens as a client have no name). Run when
/// an event stream starts, after its connection was accepted. (tiny_http keeps the socket
/// itself open until the client closes it or sends another request: without the descriptor
/// there is no way to shut it down from here.)
pub fn bound_send_time_of_accepted(timeout: Duration) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<std::os::fd::RawFd>().ok())
        else {
            continue;
        };
        if is_accepted_unix_stream(fd) {
            let _ = set_timeout(fd, libc::SO_SNDTIMEO, timeout);
        }
    }
}

/// Whether `fd` is a connected (not listening) Unix stream socket with a bound path.
fn is_accepted_unix_stream(fd: std::os::fd::RawFd) -> bool {
    let int_opt = |name| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`; a non-socket fails with
        // ENOTSOCK, which is reported as an error here.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                &mut v as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        (rc == 0).then_some(v)
    };
    if int_opt(libc::SO_TYPE) != Some(libc::SOCK_STREAM) || int_opt(libc::SO_ACCEPTCONN) != Some(0)
    {
        return false;
    }
    // SAFETY: sockaddr_un is plain old data; getsockname writes at most `len` bytes into it.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockname(
            fd,
            &mut addr as *mut libc::sockaddr_un as *mut libc::sockaddr,
            &mut len,
        )
    };
    let family_len = std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t;
    rc == 0
        && i32::from(addr.sun_family) == libc::AF_UNIX
        && len > family_len
        && addr.sun_path[0] != 0
}

/// Sets `SO_SNDTIMEO` or `SO_RCVTIMEO` on a socket.
fn set_timeout(
    fd: std::os::fd::RawFd,
    which: libc::c_int,
    timeout: Duration,
) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid timeval for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            which,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How long shutdown waits for open requests (event streams ending, waited syncs answering).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

impl Listener {
    /// Serves on a bound Unix socket at `path`.
    pub fn unix(listener: UnixListener, path: &Path, ctx: Arc<Ctx>) -> Result<Listener> {
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let kick = Kick::Unix(path.to_path_buf());
        Self::start(server, Some(path.to_path_buf()), None, kick, ctx)
    }

    /// Serves on a TCP address (`addr:` in the config). Go's `:PORT` form means every
    /// interface, as in Litestream.
    pub fn tcp(addr: &str, ctx: Arc<Ctx>) -> Result<Listener> {
        let bind = if addr.starts_with(':') {
            format!("0.0.0.0{addr}")
        } else {
            addr.to_string()
        };
        let listener =
            std::net::TcpListener::bind(&bind).with_context(|| format!("listen on {addr}"))?;
        // Accepted TCP connections inherit the listener's send timeout (see `SEND_DEADLINE`).
        set_timeout(listener.as_raw_fd(), libc::SO_SNDTIMEO, SEND_DEADLINE)
            .with_context(|| format!("{addr}: set the send timeout"))?;
        let local = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
        // Kicks go to the loopback address when the listener is on every interface.
        let mut target = local;
        if target.ip().is_unspecified() {
            target.set_ip(match target {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        Self::start(server, None, Some(local), Kick::Tcp(target), ctx)
    }

    fn start(
        server: tiny_http::Server,
        socket_path: Option<PathBuf>,
        local_addr: Option<SocketAddr>,
        kick: Kick,
        ctx: Arc<Ctx>,
    ) -> Result<Listener> {
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (server, stop, ctx, in_flight) =
                (server.clone(), stop.clone(), ctx.clone(), in_flight.clone());
            thread::Builder::new()
                .name("ipc".into())
                .spawn(move || serve(&server, &stop, ctx, &in_flight))?
        };
        let kicker = {
            let (stop, busy) = (stop.clone(), ctx.long_requests.clone());
            thread::Builder::new()
                .name("ipc-kick".into())
                .spawn(move || kick_forever(&kick, &stop, &busy))?
        };
        Ok(Listener {
            server,
            stop,
            threads: vec![accept, kicker],
            socket_path,
            local_addr,
            in_flight,
        })
    }

    /// The bound TCP address (for `addr: 127.0.0.1:0`), `None` for the Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Stops taking new requests; those already running go on (see [`Listener::shutdown`]).
    pub fn stop_accepting(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
    }

    /// Stops accepting, waits (bounded) for running requests to finish, such as event streams
    /// writing their final chunk once the event hub is closed, and removes the socket file.
    pub fn shutdown(self) {
        self.stop_accepting();
        for t in self.threads {
            let _ = t.join();
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let left = self.in_flight.load(Ordering::SeqCst);
        if left > 0 {
            log::warn!(requests = left; "ipc requests still running at shutdown; abandoning them");
        }
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Counts a running request thread for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The most requests one listener runs at once, each on its own thread; past it a request is
/// answered 503 at once. Far above what local tools open (a few event subscribers, some
/// waited syncs), far below what would exhaust a small machine's threads or memory.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 256;

fn serve(
    server: &tiny_http::Server,
    stop: &AtomicBool,
    ctx: Arc<Ctx>,
    in_flight: &Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv() {
            Ok(rq) => {
                if stop.load(Ordering::SeqCst) {
                    // Shutting down: answer rather than start something new.
                    handlers::unavailable(rq);
                    return;
                }
                if in_flight.load(Ordering::SeqCst) >= MAX_REQUESTS_IN_FLIGHT {
                    handlers::overloaded(rq, MAX_REQUESTS_IN_FLIGHT);
                    continue;
                }
                let ctx = ctx.clone();
                let guard = InFlight::new(in_flight);
                if let Err(e) = thread::Builder::new()
                    .name("ipc-req".into())
                    .spawn(move || {
                        let _guard = guard;
                        handlers::handle(rq, &ctx)
                    })
                {
                    log::error!(error:% = e; "ipc: cannot start a request thread");
                }
            }
            Err(e) => {
                if !stop.load(Ordering::SeqCst) {
                    log::error!(error:% = e; "ipc: accept failed");
                }
                return;
            }
        }
    }
}

/// How to open a throwaway connection to our own listener.
enum Kick {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// Works around tiny_http 0.12's connection pool, which can leave an accepted connection
/// queued with no thread to run it. Its pool counts a thread woken for a connection as idle
/// until that thread actually runs, so when several connections arrive at once, some are
/// queued for threads that then pick up connections that last: `/events` streams, waited
/// `/sync`s, CPU profiles, or a client that stalls halfway through its request (the pool
/// thread reading it blocks; tiny_http has no read timeout and gives no access to the socket).
/// The queued connection then waits for the next connection to arrive: a new connection that
/// finds no idle thread makes the pool spawn one, which drains the queue after its own.
///
/// So a throwaway connection is opened periodically: every 50 ms while long requests are
/// open, every second otherwise (a stalled client cannot be seen from here, but without long
/// requests a stranded short request is rare). It costs a connect and an accept, and bounds
/// how long any connection can be stranded.
fn kick_forever(kick: &Kick, stop: &AtomicBool, long: &LongRequests) {
    while !stop.load(Ordering::SeqCst) {
        if long.in_progress() > 0 {
            thread::sleep(Duration::from_millis(50));
        } else if long.wait_for_start(Duration::from_secs(1)) {
            // The first long request just started: kick at the 50 ms pace from now on.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_falls_back_to_the_runtime_dir_when_var_run_is_not_writable() {
        let default = Path::new("/var/run/litestream.sock");
        let xdg = Some(PathBuf::from("/run/user/1000/litestream.sock"));
        let configured = Path::new("/srv/ls.sock");
        let some = |p: &Path| Some(p.to_path_buf());
        let daemon = |configured, writable: bool, xdg: Option<PathBuf>| {
            choose_daemon_socket(configured, default, xdg, |_| writable)
        };
        assert_eq!(
            daemon(Some(configured), false, xdg.clone()),
            some(configured)
        );
        assert_eq!(daemon(None, true, xdg.clone()), some(default));
        assert_eq!(daemon(None, false, xdg.clone()), xdg.clone());
        // No runtime dir either: no socket (the daemon says so and replicates anyway).
        assert_eq!(daemon(None, false, None), None);
        // Clients look where a daemon would be: the default first, then the runtime dir.
        assert_eq!(
            choose_client_socket(default, xdg.clone(), |p| p == default),
            default
        );
        let only_xdg = xdg.clone().unwrap();
        assert_eq!(
            choose_client_socket(default, xdg.clone(), |p| p == only_xdg),
            only_xdg
        );
        assert_eq!(choose_client_socket(default, xdg, |_| false), default);
    }
}
