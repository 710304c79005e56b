//! Restore: point in time (`-txid`, `-timestamp`), the fixtures written by Litestream 0.5.17
//! and by an independent encoder, corrupt replicas, and interop with Litestream both ways.

mod common;
#[path = "common/s3.rs"]
mod s3server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// The fixtures' README table: txid, rows, bytes, database checksum.
const FIXTURE_STATES: [(u64, usize, u64, &str); 10] = [
    (1, 0, 16384, "dda6d5f12099881c"),
    (2, 40, 16384, "e1ebe1c5cb2ffa61"),
    (3, 80, 24576, "9db0b0a0dbe60492"),
    (4, 120, 28672, "e2b13f33f57531ab"),
    (5, 160, 32768, "b97564bf206f5211"),
    (6, 200, 36864, "cf1209c7eb1f8f26"),
    (7, 200, 36864, "fabb2a9c930229de"),
    (8, 240, 36864, "ce3941bc2298df25"),
    (9, 280, 40960, "8772698b6f7f5c68"),
    (10, 320, 45056, "964acda739482407"),
];

#[test]
fn restores_both_fixtures_at_every_txid() {
    let dir = TestDir::new();
    for name in ["litestream-0.5.17-file-replica", "ext-checksum-replica"] {
        let url = format!("file://{}", fixture(name).display());
        for (txid, rows, bytes, checksum) in FIXTURE_STATES {
            let out = dir.path(&format!("{name}-{txid}.db"));
            let o = run(&[
                "restore",
                "-json",
                "-txid",
                &format!("{txid:016x}"),
                "-o",
                out.to_str().unwrap(),
                &url,
            ]);
            assert!(o.status.success(), "{name} txid {txid}: {}", stderr(&o));
            let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(summary["checksum"], checksum, "{name} txid {txid}");
            assert_eq!(summary["txid"], format!("{txid:016x}"));
            // Litestream's files carry no database checksums; ours do, and are all verified.
            let unverified = summary["unverified_files"].as_u64().unwrap();
            if name.starts_with("ext") {
                assert_eq!(unverified, 0, "{summary}");
            } else {
                assert!(unverified > 0, "{summary}");
                assert!(
                    stdout_or_log(&o).contains("restored without database checksums"),
                    "the restore says so"
                );
            }
            assert_eq!(std::fs::metadata(&out).unwrap().len(), bytes);
            assert_eq!(ids(&out).len(), rows);
            assert_eq!(integrity(&out), "ok");
        }
    }
}

fn stdout_or_log(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

/// Copies a fixture replica so a test can damage it.
fn copy_replica(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
        let mut perms = std::fs::metadata(&dest).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&dest, perms).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "ltx") {
            out.push(p);
        }
    }
    out
}

#[test]
fn corrupt_or_truncated_files_are_refused_by_name() {
    let dir = TestDir::new();
    let replica = dir.path("replica");
    copy_replica(&fixture("ext-checksum-replica"), &replica);
    // Keep only L0 so the plan must read the damaged file.
    std::fs::remove_dir_all(replica.join("ltx/1")).unwrap();
    std::fs::remove_dir_all(replica.join("ltx/9")).unwrap();
    let victim = replica.join("ltx/0/0000000000000004-0000000000000004.ltx");
    let good = std::fs::read(&victim).unwrap();
    let url = format!("file://{}", replica.display());
    let out = dir.path("out.db");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("flipped page byte", {
            let mut b = good.clone();
            b[200] ^= 0x55;
            b
        }),
        ("truncated", good[..good.len() - 30].to_vec()),
        ("empty", vec![]),
    ];
    for (what, bytes) in cases {
        std::fs::write(&victim, &bytes).unwrap();
        let o = run(&["restore", "-o", out.to_str().unwrap(), &url]);
        assert!(!o.status.success(), "{what}: restore succeeded");
        let err = stderr(&o);
        assert!(
            err.contains("ltx/0/0000000000000004-0000000000000004.ltx"),
            "{what}: error does not name the file: {err}"
        );
        assert!(!out.exists(), "{what}: a partial output was left behind");
        assert_eq!(
            std::fs::read_dir(dir.dir.path())
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp"))
                .count(),
            0
        );
    }
    // Restoring up to the txid before the damage still works.
    let o = run(&[
        "restore",
        "-txid",
        "0000000000000003",
        "-o",
        out.to_str().unwrap(),
        &url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&out).len(), 80);
}

#[test]
fn file_with_valid_file_checksum_but_wrong_pages_fails_the_database_checksum() {
    // Re-encode txid 8 of the ext fixture with one page byte changed: the file is well formed
    // (its file checksum is recomputed), but the database it builds is not the one its header
    // promises. Litestream cannot notice this; our database checksums do.
    use litestream::ltx::{Decoder, Encoder};
    let dir = TestDir::new();
    let replica = dir.path("replica");
    copy_replica(&fixture("ext-checksum-replica"), &replica);
    std::fs::remove_dir_all(replica.join("ltx/1")).unwrap();
    std::fs::remove_dir_all(replica.join("ltx/9")).unwrap();
    let victim = replica.join("ltx/0/0000000000000008-0000000000000008.ltx");
    let mut dec = Decoder::new(std::fs::File::open(&victim).unwrap()).unwrap();
    let header = dec.header().clone();
    assert!(header.ext_checksums.is_some());
    let mut pages = vec![];
    let mut buf = vec![0u8; header.page_size as usize];
    while let Some(pgno) = dec.next_page(&mut buf).unwrap() {
        pages.push((pgno, buf.clone()));
    }
    let trailer = dec.finish().unwrap();
    pages.last_mut().unwrap().1[3000] ^= 1;
    let mut bytes = vec![];
    let mut enc = Encoder::new(&mut bytes, &header).unwrap();
    for (pgno, page) in &pages {
        enc.encode_page(*pgno, page).unwrap();
    }
    enc.finish(trailer.post_apply_checksum).unwrap();
    std::fs::write(&victim, &bytes).unwrap();
    let out = dir.path("out.db");
    let o = run(&[
        "restore",
        "-o",
        out.to_str().unwrap(),
        &format!("file://{}", replica.display()),
    ]);
    assert!(!o.status.success(), "a wrong database was restored");
    let err = stderr(&o);
    assert!(
        err.contains("0000000000000008-0000000000000008.ltx") && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn file_whose_header_disagrees_with_its_name_is_refused() {
    let dir = TestDir::new();
    let replica = dir.path("replica");
    copy_replica(&fixture("ext-checksum-replica"), &replica);
    std::fs::remove_dir_all(replica.join("ltx/1")).unwrap();
    std::fs::remove_dir_all(replica.join("ltx/9")).unwrap();
    let l0 = replica.join("ltx/0");
    std::fs::copy(
        l0.join("0000000000000006-0000000000000006.ltx"),
        l0.join("0000000000000007-0000000000000007.ltx"),
    )
    .unwrap();
    let out = dir.path("out.db");
    let o = run(&[
        "restore",
        "-o",
        out.to_str().unwrap(),
        &format!("file://{}", replica.display()),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("0000000000000007-0000000000000007.ltx"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn point_in_time_by_txid_and_timestamp() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config("", "");
    let conn = create_db(&db);
    let replica = file_url(&replica);
    let daemon = Daemon::start(&config);
    // After each batch: (txid, rows, a time between this batch's file and the next one's).
    let mut points = vec![];
    for batch in 1..=6 {
        conn.execute_batch("BEGIN").unwrap();
        for _ in 0..batch * 7 {
            conn.execute("INSERT INTO t(v) VALUES ('x')", []).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        let v = daemon.sync_wait(&db);
        let txid = v["txid"].as_u64().unwrap();
        let rows = ids(&db).len();
        // Let the clock move past this file's millisecond before the next batch.
        let stamp = std::time::SystemTime::now();
        wait_until(Duration::from_secs(2), "clock to advance", || {
            stamp.elapsed().unwrap() >= Duration::from_millis(5)
        });
        points.push((txid, rows, stamp));
    }
    let txids: Vec<u64> = points.iter().map(|p| p.0).collect();
    assert!(txids.windows(2).all(|w| w[1] > w[0]), "{txids:?}");
    for (txid, rows, stamp) in &points {
        let out = dir.path(&format!("tx-{txid}.db"));
        restore(&replica, &out, &["-txid", &format!("{txid:x}")]);
        assert_eq!(ids(&out).len(), *rows, "-txid {txid:x}");
        let ts = time::OffsetDateTime::from(*stamp)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let out = dir.path(&format!("ts-{txid}.db"));
        restore(&replica, &out, &["-timestamp", &ts]);
        assert_eq!(ids(&out).len(), *rows, "-timestamp {ts}");
    }
    // Before the first file: nothing to restore, and it says so.
    let out = dir.path("too-early.db");
    let o = run(&[
        "restore",
        "-timestamp",
        "2000-01-01T00:00:00Z",
        "-o",
        out.to_str().unwrap(),
        &replica,
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no transaction at or before"),
        "{}",
        stderr(&o)
    );
    // Beyond the newest txid.
    let o = run(&[
        "restore",
        "-txid",
        "ffffff",
        "-o",
        out.to_str().unwrap(),
        &replica,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("beyond the newest"), "{}", stderr(&o));
    // -dry-run prints the plan and writes nothing.
    let o = run(&["restore", "-dry-run", "-o", out.to_str().unwrap(), &replica]);
    assert!(o.status.success());
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains("Files to fetch:") && plan.contains("0000000000000001-0000000000000001.ltx"),
        "{plan}"
    );
    assert!(!out.exists());
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn restore_flags_guard_existing_output() {
    let dir = TestDir::new();
    let url = format!("file://{}", fixture("ext-checksum-replica").display());
    let out = dir.path("out.db");
    restore(&url, &out, &[]);
    // Exists: refused without -force, skipped with -if-db-not-exists, replaced with -force.
    let o = run(&["restore", "-o", out.to_str().unwrap(), &url]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = run(&[
        "restore",
        "-if-db-not-exists",
        "-o",
        out.to_str().unwrap(),
        &url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(out.with_file_name("out.db-wal"), b"stale wal").unwrap();
    restore(&url, &out, &["-force", "-txid", "3"]);
    assert!(
        !out.with_file_name("out.db-wal").exists(),
        "a stale WAL beside the output must go"
    );
    assert_eq!(ids(&out).len(), 80);
    // An empty replica: an error, or exit 0 with -if-replica-exists.
    let empty = format!("file://{}", dir.path("nothing").display());
    let o = run(&["restore", "-o", dir.path("x.db").to_str().unwrap(), &empty]);
    assert!(!o.status.success());
    let o = run(&[
        "restore",
        "-if-replica-exists",
        "-o",
        dir.path("x.db").to_str().unwrap(),
        &empty,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dir.path("x.db").exists());
}

/// Our replica (with checkpoints in the middle) restored by Litestream 0.5.17, byte for byte
/// equal to ours.
#[test]
fn litestream_restores_our_replica() {
    let reference = reference_bin();
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config("    min-checkpoint-page-count: 20\n", "");
    let conn = create_db(&db);
    let replica = file_url(&replica);
    let daemon = Daemon::start(&config);
    let mut mid_txid = 0;
    for round in 0..12 {
        for _ in 0..50 {
            conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(200)))", [])
                .unwrap();
        }
        if round % 3 == 0 {
            conn.execute("DELETE FROM t WHERE id % 7 = 0", []).unwrap();
        }
        let v = daemon.sync_wait(&db);
        if round == 5 {
            mid_txid = v["txid"].as_u64().unwrap();
        }
    }
    let log = daemon.log_text();
    assert!(
        log.contains("checkpoint") || dir.path("app.db").metadata().unwrap().len() > 8192,
        "checkpoints ran"
    );
    let theirs = dir.path("theirs.db");
    let o = std::process::Command::new(&reference)
        .args(["restore", "-o", theirs.to_str().unwrap(), &replica])
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "Litestream failed to restore our replica: {}",
        stderr(&o)
    );
    let ours = dir.path("ours.db");
    restore(&replica, &ours, &[]);
    assert_eq!(ids(&theirs), ids(&db));
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        std::fs::read(&ours).unwrap(),
        "byte-identical restores"
    );
    // And at a point in time.
    let theirs_mid = dir.path("theirs-mid.db");
    let o = std::process::Command::new(&reference)
        .args([
            "restore",
            "-txid",
            &format!("{mid_txid:016x}"),
            "-o",
            theirs_mid.to_str().unwrap(),
            &replica,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ours_mid = dir.path("ours-mid.db");
    restore(&replica, &ours_mid, &["-txid", &format!("{mid_txid:x}")]);
    assert_eq!(
        std::fs::read(&theirs_mid).unwrap(),
        std::fs::read(&ours_mid).unwrap()
    );
    assert_eq!(integrity(&theirs_mid), "ok");
    assert_eq!(daemon.terminate(), 0);
}

/// A replica written by Litestream 0.5.17 (with its checkpoints) restored by ours.
#[test]
fn we_restore_a_litestream_replica() {
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config("    min-checkpoint-page-count: 20\n", "  enabled: true\n");
    let conn = create_db(&db);
    let replica = file_url(&replica);
    let theirs = ReferenceDaemon::start(&config);
    let sync = || theirs.sync_wait(&db);
    for round in 0..10 {
        for _ in 0..40 {
            conn.execute("INSERT INTO t(v) VALUES (hex(randomblob(300)))", [])
                .unwrap();
        }
        if round % 4 == 1 {
            conn.execute("UPDATE t SET v = 'u' WHERE id % 5 = 0", [])
                .unwrap();
        }
        sync();
    }
    let out = dir.path("ours.db");
    restore(&replica, &out, &[]);
    drop(theirs);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(ids(&out), ids(&db));
    assert_eq!(rows(&out), rows(&db));
}

/// A restore ends with one summary line on stderr (a log line: db, txid, pages, size, files,
/// time); off a terminal (here a pipe) it draws no progress line.
#[test]
fn restore_logs_one_summary_line_and_no_progress_off_a_terminal() {
    let dir = TestDir::new();
    let url = format!("file://{}", fixture("ext-checksum-replica").display());
    let out = dir.path("app.db");
    let o = run(&["restore", "-o", out.to_str().unwrap(), &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    let summaries: Vec<_> = err
        .lines()
        .filter(|l| l.contains("msg=\"restore complete\""))
        .collect();
    assert_eq!(summaries.len(), 1, "{err}");
    for part in [
        &format!("db={}", out.display()),
        "txid=000000000000000a",
        "pages=11",
        "page_size=4096",
        "size=\"44.0 KiB\"",
        "files=",
        "elapsed=",
    ] {
        assert!(summaries[0].contains(part), "{part}: {err}");
    }
    assert!(!err.contains('\r') && !err.contains("ETA"), "{err:?}");
    assert_eq!(ids(&out).len(), 320);
}

/// On a terminal, a restore that takes a while draws its progress line in place (`\r`,
/// bytes of the total, files, rate, ETA) and erases it before the summary line. The terminal
/// is a pseudo-terminal; the replica is S3 behind a proxy that slows its downloads.
#[test]
fn restore_draws_progress_on_a_terminal_and_erases_it() {
    use s3server::*;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::{Command, Stdio};

    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let db = dir.path("app.db");
    let conn = create_db(&db);
    for _ in 0..100 {
        conn.execute("INSERT INTO t(v) VALUES (randomblob(2000))", [])
            .unwrap();
    }
    drop(conn);
    let o = with_credentials(Command::new(bin()).args(["replicate", "-once"]))
        .arg(&db)
        .arg(server.url("p/app.db"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let proxy = FaultProxy::start(server.port);
    let slow = Fault::SlowDownload {
        bytes: 8192,
        every: Duration::from_millis(25),
    };
    proxy.inject(Rule::new("GET", slow, Times::Always));

    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors it opened into the two ints; the null pointers
    // ask for no name, default terminal settings and window size.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are ours alone from here on.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let out = dir.path("restored.db");
    let mut child = with_credentials(&mut Command::new(bin()))
        .args([
            "restore",
            "-o",
            out.to_str().unwrap(),
            &proxy.url("p/app.db"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // The parent's copy of the slave went with the Command; reading the master ends (EIO)
    // once the child's copy closes.
    let reading = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = master.read(&mut buf) {
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    assert!(child.wait().unwrap().success());
    let text = reading.join().unwrap();
    assert!(
        text.contains("\rrestored.db: ") && text.contains(" of ") && text.contains("ETA "),
        "{text:?}"
    );
    let erased = text.rfind("\r\x1b[K").expect("the line is erased");
    let summary = text.find("msg=\"restore complete\"").expect("a summary");
    assert!(erased < summary, "{text:?}");
    assert_eq!(ids(&out).len(), 100);
}
