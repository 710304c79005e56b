//! systemd's `Type=notify` protocol (issue 13): the daemon tells the socket in
//! `$NOTIFY_SOCKET` when it is ready (its control socket answers), pings the watchdog when the
//! unit sets one, and says when it is stopping. The test plays systemd's side.

mod common;

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Datagrams received until `until` holds for them or `timeout` passes.
fn receive_until(
    sock: &UnixDatagram,
    got: &mut Vec<String>,
    timeout: Duration,
    until: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    while !until(got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; received {got:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

fn run_under_systemd(notify_socket: &str, sock: &UnixDatagram) {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    create_db(&db);
    let config = write_config(
        dir.dir.path(),
        &[(&db, &format!("file://{}", dir.path("replica").display()))],
        "",
        "",
    );
    let socket = dir.path("ls.sock");
    let mut child = Command::new(bin())
        .args(["replicate", "-config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = vec![];
    receive_until(sock, &mut got, Duration::from_secs(20), |g| {
        g.iter().any(|m| m == "READY=1")
    });
    // Ready means ready: the control socket answers by then.
    assert!(
        UnixStream::connect(&socket).is_ok(),
        "READY=1 before the socket"
    );
    assert_eq!(got[0], "READY=1", "{got:?}");
    // The watchdog (200 ms) is pinged every 100 ms.
    receive_until(sock, &mut got, Duration::from_secs(10), |g| {
        g.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3
    });
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    receive_until(sock, &mut got, Duration::from_secs(20), |g| {
        g.iter().any(|m| m == "STOPPING=1")
    });
    assert!(child.wait().unwrap().success());
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = TestDir::new();
    let path = dir.path("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    run_under_systemd(path.to_str().unwrap(), &sock);
}

#[test]
fn an_abstract_notify_socket_works_too() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "litestream-test-{}-{}",
        std::process::id(),
        rand_range(0, 1 << 40)
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    run_under_systemd(&format!("@{name}"), &sock);
}
