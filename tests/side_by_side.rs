//! Several daemons on one machine (issue 14), as Litestream's own concurrency scenario runs
//! them: one `litestream replicate DB URL` per application, all with default settings. Also
//! what a user sees at startup and shutdown: a database that does not exist yet, and a
//! shutdown that does not wait for compaction.
//!
//! The default socket is `/var/run/litestream.sock`. So that these tests never touch the
//! machine's, daemons that use it run in a private mount namespace whose `/run` is an empty
//! tmpfs (`unshare`, `nsenter`; root). Without the right to mount, the tests fail, unless
//! `LITESTREAM_TEST_NO_MOUNT=1` says to skip them knowingly (tests/run.sh sets it when a trial
//! mount fails).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A private mount namespace with an empty tmpfs on `/run` (where `/var/run` points), held
/// open by a `sleep` that ends by itself.
struct PrivateRun {
    holder: Child,
}

impl PrivateRun {
    /// `None` (after saying so) when mounting is not possible and the skip is allowed.
    fn start() -> Option<PrivateRun> {
        let run = std::fs::canonicalize("/var/run").unwrap_or_else(|_| PathBuf::from("/run"));
        let script = format!(
            "mount -t tmpfs -o size=4m tmpfs {} && echo ready && exec sleep 600",
            run.display()
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() == "ready" {
            return Some(PrivateRun { holder });
        }
        let _ = holder.wait();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut holder.stderr.take().unwrap(), &mut err);
        if std::env::var("LITESTREAM_TEST_NO_MOUNT").as_deref() == Ok("1") {
            eprintln!("SKIPPED: no private /run could be mounted ({}), so daemons with the default socket were NOT tested (LITESTREAM_TEST_NO_MOUNT=1)", err.trim());
            return None;
        }
        panic!(
            "these tests need to mount a tmpfs in a private mount namespace (root): {}; or set LITESTREAM_TEST_NO_MOUNT=1 to skip them knowingly",
            err.trim()
        );
    }

    /// `program` run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "--", program]);
        c
    }
}

impl Drop for PrivateRun {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A daemon process and the file its output goes to.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code and how long the exit took.
    fn terminate(&mut self) -> (i32, Duration) {
        let t = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), t.elapsed())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn insert_rows(db: &Path, n: usize) {
    let conn = create_db(db);
    for _ in 0..n {
        conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(64)))", [])
            .unwrap();
    }
}

/// Whether the file replica under `root` holds a level-0 file yet.
fn has_l0(root: &Path) -> bool {
    std::fs::read_dir(root.join("ltx").join("0")).is_ok_and(|mut d| d.next().is_some())
}

#[test]
fn five_daemons_with_default_settings_each_replicate_their_own_database() {
    let Some(ns) = PrivateRun::start() else {
        return;
    };
    let dir = TestDir::new();
    let n = 5;
    let dbs: Vec<PathBuf> = (0..n).map(|i| dir.path(&format!("app{i}.db"))).collect();
    let replicas: Vec<PathBuf> = (0..n).map(|i| dir.path(&format!("replica{i}"))).collect();
    for db in &dbs {
        insert_rows(db, 50);
    }
    // All five at once, each a one-liner with no config file.
    let mut daemons: Vec<Proc> = (0..n)
        .map(|i| {
            let mut cmd = ns.command(bin());
            cmd.args([
                "replicate",
                dbs[i].to_str().unwrap(),
                &format!("file://{}", replicas[i].display()),
            ]);
            Proc::spawn(cmd, dir.path(&format!("daemon{i}.log")))
        })
        .collect();
    wait_until(Duration::from_secs(30), "all five replicating", || {
        replicas.iter().all(|r| has_l0(r))
    });
    for d in &mut daemons {
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "a daemon exited: {}",
            d.log_text()
        );
    }
    // Exactly one has the default socket; each other one says in one warning line that it
    // runs without one, naming the socket and the way out.
    let owners: Vec<usize> = (0..n)
        .filter(|&i| daemons[i].log_text().contains("control socket listening"))
        .collect();
    assert_eq!(owners.len(), 1, "socket owners {owners:?}");
    for (i, d) in daemons.iter().enumerate() {
        if i == owners[0] {
            continue;
        }
        let log = d.log_text();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("control socket disabled"))
            .collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(
            warnings[0].contains("level=WARN")
                && warnings[0].contains("/var/run/litestream.sock")
                && warnings[0].contains("socket.path"),
            "{}",
            warnings[0]
        );
    }
    // `litestream list` with the default socket talks to the daemon that owns it.
    let list = ns.command(bin()).arg("list").output().unwrap();
    assert!(list.status.success(), "{list:?}");
    let text = String::from_utf8_lossy(&list.stdout);
    for (i, db) in dbs.iter().enumerate() {
        assert_eq!(
            text.contains(db.to_str().unwrap()),
            i == owners[0],
            "{text}"
        );
    }
    for db in &dbs {
        insert_rows(db, 50);
    }
    for d in &mut daemons {
        let (code, _) = d.terminate();
        assert_eq!(code, 0, "{}", d.log_text());
    }
    for i in 0..n {
        let out = dir.path(&format!("restored{i}.db"));
        restore(&format!("file://{}", replicas[i].display()), &out, &[]);
        assert_same_ids(&ids(&out), &ids(&dbs[i]), &format!("database {i}"));
        assert_eq!(ids(&out).len(), 100);
    }
}

#[test]
fn a_socket_set_explicitly_and_held_by_a_live_daemon_stays_a_startup_error() {
    let dir = TestDir::new();
    let a = dir.path("a.db");
    insert_rows(&a, 1);
    let config = write_config(
        dir.dir.path(),
        &[(&a, &format!("file://{}", dir.path("ra").display()))],
        "",
        "",
    );
    let first = Daemon::start(&config);
    // A sixth daemon for another database, asking for the same socket by name.
    let other = dir.path("other");
    std::fs::create_dir(&other).unwrap();
    let b = other.join("b.db");
    insert_rows(&b, 1);
    let yml = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: file://{}\nsocket:\n  path: {}\n",
        b.display(),
        other.join("rb").display(),
        first.socket.display()
    );
    std::fs::write(other.join("litestream.yml"), yml).unwrap();
    let o = run(&[
        "replicate",
        "-config",
        other.join("litestream.yml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}: another litestream daemon is already listening on this socket",
            first.socket.display()
        )),
        "{err}"
    );
    assert!(!other.join("rb").exists(), "it replicated anyway");
    // The first one is untouched.
    first.sync_wait(&a);
    assert_eq!(first.terminate(), 0);
}

#[test]
fn a_second_daemon_for_the_same_database_is_refused_naming_the_first() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    insert_rows(&db, 10);
    let first = Daemon::start(&write_config(
        dir.dir.path(),
        &[(&db, &format!("file://{}", dir.path("r1").display()))],
        "    monitor-interval: 100ms\n",
        "",
    ));
    first.sync_wait(&db);
    // The second has its own socket and replica, and one more database of its own, which it
    // replicates: the refusal costs only the contested database.
    let second_dir = dir.path("second");
    std::fs::create_dir(&second_dir).unwrap();
    let own = second_dir.join("own.db");
    insert_rows(&own, 3);
    let second = Daemon::start(&write_config(
        &second_dir,
        &[
            (&db, &format!("file://{}", dir.path("r2").display())),
            (&own, &format!("file://{}", dir.path("r-own").display())),
        ],
        "    monitor-interval: 100ms\n",
        "",
    ));
    second.sync_wait(&own);
    wait_until(Duration::from_secs(10), "the refusal in /list", || {
        list_entry(&second, &db)["error"]
            .as_str()
            .is_some_and(|e| e.contains("another litestream daemon"))
    });
    let e = list_entry(&second, &db);
    let error = e["error"].as_str().unwrap();
    assert_eq!(e["status"], "error", "{e}");
    assert!(
        error.contains(&format!("pid={}", pid_of(&first)))
            && error.contains(first.socket.to_str().unwrap()),
        "{error}"
    );
    assert!(
        second
            .log_text()
            .matches("another litestream daemon")
            .count()
            == 1,
        "logged once: {}",
        second.log_text()
    );
    assert!(
        !dir.path("r2").exists(),
        "the refused daemon wrote a replica"
    );
    // Once the first stops, the second takes the database over.
    assert_eq!(first.terminate(), 0);
    insert_rows(&db, 5);
    wait_until(Duration::from_secs(10), "the takeover", || {
        list_entry(&second, &db)["status"] == "replicating"
    });
    second.sync_wait(&db);
    let out = dir.path("r2.db");
    restore(&format!("file://{}", dir.path("r2").display()), &out, &[]);
    assert_same_ids(&ids(&out), &ids(&db), "after the takeover");
    assert_eq!(second.terminate(), 0);
}

#[test]
fn a_database_that_does_not_exist_yet_is_waited_for_quietly() {
    let dir = TestDir::new();
    let db = dir.path("later.db");
    let url = format!("file://{}", dir.path("replica").display());
    let daemon = Daemon::start(&write_config(
        dir.dir.path(),
        &[(&db, &url)],
        "    monitor-interval: 50ms\n",
        "",
    ));
    let status = || {
        daemon.request("GET", "/list", None).json()["databases"][0]["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait_until(Duration::from_secs(10), "the waiting line", || {
        daemon
            .log_text()
            .contains("waiting for the database file to appear")
    });
    assert_eq!(status(), "open");
    // Ten passes later (the sleep is the window observed, not a synchronisation): still one
    // line, and no error at all.
    std::thread::sleep(Duration::from_millis(500));
    let log = daemon.log_text();
    assert_eq!(
        log.matches("waiting for the database file to appear")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("level=ERROR"), "{log}");
    insert_rows(&db, 20);
    wait_until(Duration::from_secs(10), "replicating", || {
        status() == "replicating"
    });
    daemon.sync_wait(&db);
    let out = dir.path("out.db");
    restore(&url, &out, &[]);
    assert_same_ids(&ids(&out), &ids(&db), "the database that came later");
    assert_eq!(daemon.terminate(), 0);
}
