//! systemd's notification protocol (`Type=notify`): one datagram per state change to the
//! socket named by `$NOTIFY_SOCKET`, so a unit is "started" only once the daemon serves its
//! socket and has its databases, "stopping" while it syncs on the way out, and, when the
//! unit sets `WatchdogSec`, pinged at half that interval by a thread that ends with the
//! process. Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing. The protocol
//! is a few lines; no crate needed (sd_notify(3)).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::thread;
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`) to systemd; `Ok(false)` when not run by systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        // An abstract socket: '@' stands for the leading NUL byte.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(&path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// `notify`, with a failure logged rather than returned: systemd being unreachable must not
/// stop replication.
pub fn notify_logged(state: &str) {
    if let Err(e) = notify(state) {
        log::warn!(state, error:% = e; "cannot notify systemd");
    }
}

/// The watchdog interval systemd asks for (`$WATCHDOG_USEC`, for this process when
/// `$WATCHDOG_PID` names one), if any.
fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Starts pinging the watchdog (`WATCHDOG=1`) at half its interval, if the unit set one,
/// each time `alive` answers: a check that blocks (a deadlocked registry, say) stops the
/// pings, and systemd restarts the daemon.
pub fn start_watchdog(alive: impl Fn() -> bool + Send + 'static) {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let every = interval / 2;
    let spawned = thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            if alive() {
                notify_logged("WATCHDOG=1");
            }
            thread::sleep(every);
        });
    match spawned {
        Ok(_) => log::info!(interval:? = interval; "systemd watchdog"),
        Err(e) => log::warn!(error:% = e; "cannot start the systemd watchdog thread"),
    }
}
