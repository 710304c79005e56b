//! Compaction, snapshots and retention as a user sees them: a daemon with short intervals and
//! a writer, then restores (ours and Litestream 0.5.17's) at every point the replica still
//! offers, before and after retention deleted files; a replica Litestream wrote, compacted by
//! us; and what a compaction costs on S3.

mod common;
#[path = "common/s3.rs"]
mod s3server;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn max_at(root: &Path, level: u8) -> u64 {
    level_files(root, level)
        .iter()
        .map(|f| f.1)
        .max()
        .unwrap_or(0)
}

/// Our `restore -json` at `txid` into `out`; panics on failure.
fn restore_at(url: &str, txid: u64, out: &Path) -> Value {
    let o = run(&[
        "restore",
        "-json",
        "-txid",
        &format!("{txid:016x}"),
        "-o",
        out.to_str().unwrap(),
        url,
    ]);
    assert!(
        o.status.success(),
        "restore -txid {txid:x} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// How many files our restore plan at `txid` (0: latest) fetches.
fn plan_files(url: &str, txid: u64) -> usize {
    let o = run(&[
        "restore",
        "-dry-run",
        "-json",
        "-txid",
        &format!("{txid:016x}"),
        "-o",
        "/nonexistent/x.db",
        url,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    plan["files"].as_array().unwrap().len()
}

/// Litestream 0.5.17's restore at `txid` (0: latest) into `out`.
fn reference_restore(url: &str, txid: u64, out: &Path, s3: bool) {
    let mut cmd = Command::new(reference_bin());
    cmd.args(["restore", "-o", out.to_str().unwrap()]);
    if txid > 0 {
        cmd.args(["-txid", &format!("{txid:016x}")]);
    }
    cmd.arg(url);
    if s3 {
        s3server::with_credentials(&mut cmd);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "Litestream 0.5.17 failed to restore {url} at {txid:x}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// The rows of a restore are a prefix 1..=k of what the writer inserted (one row per
/// transaction, never deleted); returns k.
fn prefix_len(db: &Path, what: &str) -> usize {
    let got = ids(db);
    let want: Vec<i64> = (1..=got.len() as i64).collect();
    assert_same_ids(&got, &want, what);
    got.len()
}

/// A level's files follow each other without gaps, from at or before `from` to `latest`.
fn assert_contiguous(all: &[(u8, u64, u64)], level: u8, from: u64, latest: u64) {
    let fs: Vec<_> = at_level(all, level)
        .into_iter()
        .filter(|f| f.1 >= from)
        .collect();
    assert!(!fs.is_empty(), "no level-{level} files: {all:?}");
    assert!(fs[0].0 <= from, "level {level} covers {from:x}: {fs:?}");
    for w in fs.windows(2) {
        assert_eq!(w[1].0, w[0].1 + 1, "level {level} is contiguous: {fs:?}");
    }
    assert_eq!(
        fs.last().unwrap().1,
        latest,
        "level {level} reaches {latest}"
    );
}

const LEVELS: &str = "levels:\n  - interval: 1s\n  - interval: 2s\n  - interval: 4s\n";
const FAST_DB: &str = "    monitor-interval: 100ms\n";

/// Everything the restores of one TXID must agree on: our restore's database checksum.
type Checksums = BTreeMap<u64, String>;

/// Restores at every txid in `txids` and checks each: verified end to end (no file without
/// our checksums), rows a prefix of the writer's that grows with the txid, the same database
/// as `expected` says where it has the txid. Returns the checksums.
fn restore_every(url: &str, dir: &TestDir, txids: &[u64], expected: &Checksums) -> Checksums {
    let mut out = Checksums::new();
    let mut rows = 0;
    for &t in txids {
        let db = dir.path(&format!("r-{t:x}-{}.db", rand_range(0, 1 << 40)));
        let summary = restore_at(url, t, &db);
        assert_eq!(summary["unverified_files"], 0, "txid {t:x}: {summary}");
        let ck = summary["checksum"].as_str().unwrap().to_string();
        if let Some(want) = expected.get(&t) {
            assert_eq!(
                &ck, want,
                "txid {t:x}: the same database as before compaction"
            );
        }
        let n = prefix_len(&db, &format!("restore at {t:x}"));
        assert!(n >= rows, "txid {t:x} has {n} rows, an earlier one {rows}");
        rows = n;
        out.insert(t, ck);
        std::fs::remove_file(&db).unwrap();
    }
    out
}

/// Litestream restores the same bytes as we do at each of `txids`.
fn reference_agrees(url: &str, dir: &TestDir, txids: &[u64]) {
    for &t in txids {
        let n = rand_range(0, 1 << 40);
        let (ours, theirs) = (
            dir.path(&format!("o-{t}-{n}.db")),
            dir.path(&format!("t-{t}-{n}.db")),
        );
        restore_at(url, t, &ours);
        reference_restore(url, t, &theirs, false);
        assert!(
            same_bytes(&ours, &theirs),
            "txid {t:x}: byte-identical restores"
        );
        assert_eq!(integrity(&theirs), "ok");
    }
}

/// A few txids spread over `all` (first, last, and some between), for the slower restores.
fn sample(all: &[u64], n: usize) -> Vec<u64> {
    let step = (all.len() / n).max(1);
    let mut s: Vec<u64> = all.iter().copied().step_by(step).collect();
    s.extend(all.last());
    s.dedup();
    s
}

#[test]
fn levels_snapshots_and_retention_keep_every_restore_point() {
    let dir = TestDir::new();
    let db = dir.path("app.db");
    let replica = dir.path("replica");
    let url = format!("file://{}", replica.display());
    create_db(&db);

    // Phase 1: compaction and snapshots, no retention yet.
    let top = format!(
        "{LEVELS}snapshot:\n  interval: 3s\n  retention: 1h\nl0-retention: 1h\nl0-retention-check-interval: 1s\n"
    );
    let config = write_config(dir.dir.path(), &[(&db, &url)], FAST_DB, &top);
    let daemon = Daemon::start(&config);
    let writer = Writer::start(&db, 50);
    wait_until(
        Duration::from_secs(30),
        "two L3 files and two snapshots",
        || {
            let all = replica_files(&replica);
            at_level(&all, 3).len() >= 2 && at_level(&all, 9).len() >= 2
        },
    );
    writer.stop();
    let t1 = daemon.sync_wait(&db)["replicated_txid"].as_u64().unwrap();
    wait_until(
        Duration::from_secs(20),
        "every level and a snapshot at the end",
        || [1, 2, 3, 9].iter().all(|&l| max_at(&replica, l) == t1),
    );
    let log = daemon.log_text();
    assert_eq!(daemon.terminate(), 0);
    for line in [
        "compaction complete",
        "compaction_level=3",
        "snapshot complete",
    ] {
        assert!(log.contains(line), "log has {line:?}: {log}");
    }
    assert!(!log.contains("ERROR"), "{log}");

    let all = replica_files(&replica);
    let l0: Vec<u64> = at_level(&all, 0).iter().map(|f| f.1).collect();
    assert_eq!(l0, (1..=t1).collect::<Vec<_>>(), "no L0 file deleted yet");
    // Snapshot retention keeps no level-1..3 file entirely below the oldest snapshot (but
    // each level's last), as Litestream; from there on every level covers every txid.
    let oldest = at_level(&all, 9).iter().map(|f| f.1).min().unwrap();
    for level in 1..=3 {
        assert_contiguous(&all, level, oldest, t1);
        let below = at_level(&all, level)
            .iter()
            .filter(|f| f.1 < oldest)
            .count();
        assert!(below <= 1, "level {level}: {all:?}");
    }
    // Each level's boundaries are boundaries of the level below: whole files were merged.
    for level in 2..=3u8 {
        let below: Vec<u64> = at_level(&all, level - 1).iter().map(|f| f.1).collect();
        for (_, max) in at_level(&all, level) {
            assert!(
                below.contains(&max),
                "level {level} ends at {max:x}: {all:?}"
            );
        }
    }
    for (min, max) in at_level(&all, 9) {
        assert_eq!(min, 1, "snapshots start at txid 1");
        assert!(max <= t1);
    }
    assert!(at_level(&all, 1).len() < l0.len(), "{all:?}");

    // Every txid restores, verified, and Litestream agrees byte for byte.
    let before = restore_every(&url, &dir, &l0, &Checksums::new());
    let latest = dir.path("latest.db");
    restore_at(&url, t1, &latest);
    assert_eq!(ids(&latest), ids(&db));
    reference_agrees(&url, &dir, &sample(&l0, 6));
    assert!(
        plan_files(&url, 0) <= 2,
        "a compacted replica restores from one or two files"
    );
    let raw_plan = plan_files(&url, t1 - 1);
    assert!(
        raw_plan < l0.len() / 2,
        "txid {:x}: {raw_plan} files",
        t1 - 1
    );

    // Phase 2: the same replica with L0 retention: level-0 files go once level 1 holds them.
    let top = format!(
        "{LEVELS}snapshot:\n  interval: 2s\n  retention: 1h\nl0-retention: 1s\nl0-retention-check-interval: 1s\n"
    );
    write_config(dir.dir.path(), &[(&db, &url)], FAST_DB, &top);
    let daemon = Daemon::start(&config);
    let writer = Writer::start(&db, 50);
    wait_until(
        Duration::from_secs(30),
        "L0 retention and new writes",
        || {
            let l0 = at_level(&replica_files(&replica), 0);
            l0.first().is_some_and(|f| f.0 > 1) && l0.last().is_some_and(|f| f.1 > t1 + 20)
        },
    );
    writer.stop();
    let t2 = daemon.sync_wait(&db)["replicated_txid"].as_u64().unwrap();
    wait_until(
        Duration::from_secs(20),
        "compaction of the last writes",
        || [1, 2, 3, 9].iter().all(|&l| max_at(&replica, l) == t2),
    );
    let log = daemon.log_text();
    assert_eq!(daemon.terminate(), 0);
    assert!(log.contains("retention deleted"), "{log}");
    assert!(!log.contains("retention refused"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");

    let all = replica_files(&replica);
    let l0 = at_level(&all, 0);
    assert_eq!(
        l0.last().unwrap().1,
        t2,
        "the newest L0 file is never deleted"
    );
    assert!(l0.len() < (t2 as usize) / 2, "{all:?}");
    // What the replica still offers: every txid a file ends at, from the oldest snapshot on.
    let oldest = at_level(&all, 9).iter().map(|f| f.1).min().unwrap();
    let mut offered: Vec<u64> = all.iter().map(|f| f.2).filter(|&t| t >= oldest).collect();
    offered.sort();
    offered.dedup();
    let again: Vec<u64> = offered
        .iter()
        .copied()
        .filter(|t| before.contains_key(t))
        .collect();
    assert!(
        again.len() > 3,
        "txids restored before and after L0 retention: {all:?}"
    );
    restore_every(&url, &dir, &offered, &before);
    let latest = dir.path("latest-2.db");
    restore_at(&url, t2, &latest);
    assert_eq!(ids(&latest), ids(&db));
    reference_agrees(&url, &dir, &sample(&offered, 5));
    assert!(plan_files(&url, 0) <= 2);

    // Phase 3: snapshot retention: all but the newest snapshot expire, then everything below
    // it goes, except the newest level-0 file and each level's last.
    let top = format!(
        "{LEVELS}snapshot:\n  interval: 1s\n  retention: 1s\nl0-retention: 1s\nl0-retention-check-interval: 1s\n"
    );
    write_config(dir.dir.path(), &[(&db, &url)], FAST_DB, &top);
    let daemon = Daemon::start(&config);
    wait_until(Duration::from_secs(20), "snapshot retention", || {
        at_level(&replica_files(&replica), 9) == [(1, t2)]
    });
    assert_eq!(daemon.terminate(), 0);
    let all = replica_files(&replica);
    assert_eq!(at_level(&all, 0), [(t2, t2)], "{all:?}");
    for level in 1..=3 {
        assert_eq!(at_level(&all, level).len(), 1, "{all:?}");
    }
    assert_eq!(plan_files(&url, 0), 1);
    let latest = dir.path("latest-3.db");
    restore_at(&url, t2, &latest);
    assert_eq!(ids(&latest), ids(&db));
    reference_agrees(&url, &dir, &[t2]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The fixture's database checksum at each txid (its README).
const FIXTURE_CHECKSUMS: [&str; 10] = [
    "dda6d5f12099881c",
    "e1ebe1c5cb2ffa61",
    "9db0b0a0dbe60492",
    "e2b13f33f57531ab",
    "b97564bf206f5211",
    "cf1209c7eb1f8f26",
    "fabb2a9c930229de",
    "ce3941bc2298df25",
    "8772698b6f7f5c68",
    "964acda739482407",
];

#[test]
fn we_compact_a_replica_litestream_wrote() {
    let dir = TestDir::new();
    let replica = dir.path("replica");
    copy_dir(
        &fixture("litestream-0.5.17-file-replica/ltx"),
        &replica.join("ltx"),
    );
    let url = format!("file://{}", replica.display());
    let db = dir.path("app.db");
    restore(&url, &db, &[]);
    let top = format!(
        "{LEVELS}snapshot:\n  interval: 2s\n  retention: 1h\nl0-retention: 1h\nl0-retention-check-interval: 1s\n"
    );
    let config = write_config(dir.dir.path(), &[(&db, &url)], FAST_DB, &top);
    let daemon = Daemon::start(&config);
    let conn = rusqlite::Connection::open(&db).unwrap();
    for _ in 0..3 {
        conn.execute("INSERT INTO t(v) VALUES ('ours')", [])
            .unwrap();
        daemon.sync_wait(&db);
    }
    let latest = daemon.sync_wait(&db)["replicated_txid"].as_u64().unwrap();
    assert!(latest > 10);
    wait_until(
        Duration::from_secs(20),
        "levels 1-3 and a snapshot past 0xa",
        || [1, 2, 3, 9].iter().all(|&l| max_at(&replica, l) == latest),
    );
    let log = daemon.log_text();
    assert_eq!(daemon.terminate(), 0);
    assert!(!log.contains("ERROR"), "{log}");

    let all = replica_files(&replica);
    // Litestream's last file carries no database checksum to continue from: our first file
    // is a snapshot, 1-b.
    assert!(all.contains(&(9, 1, 11)), "{all:?}");
    // Litestream's own L1 files stay; ours continue after them, and L2 merged both.
    // Txid 0xb is only in that snapshot, so level 1 has a gap there (left as it is: a
    // restore bridges it with the snapshot); level 2 starts over after it.
    for f in [(1, 1, 2), (1, 3, 3), (1, 4, 7), (1, 8, 10)] {
        assert!(all.contains(&f), "{all:?}");
    }
    assert_contiguous(&all, 1, 12, latest);
    assert_contiguous(&all, 2, 12, latest);
    assert!(all.contains(&(2, 1, 10)), "{all:?}");
    // The snapshot carries checksums computed from its pages, so the restore from it is
    // verified end to end although Litestream's files carry none.
    let ours = dir.path("ours.db");
    let summary = restore_at(&url, latest, &ours);
    assert_eq!(summary["unverified_files"], 0, "{summary}");
    assert_eq!(summary["files"], 1, "{summary}");
    assert_eq!(ids(&ours), ids(&db));
    let theirs = dir.path("theirs.db");
    reference_restore(&url, 0, &theirs, false);
    assert!(same_bytes(&ours, &theirs));
    // Litestream's history is still there, exact.
    for (i, want) in FIXTURE_CHECKSUMS.iter().enumerate() {
        let t = i as u64 + 1;
        let out = dir.path(&format!("fixture-{t}.db"));
        assert_eq!(restore_at(&url, t, &out)["checksum"], *want, "txid {t}");
    }
    reference_agrees(&url, &dir, &[2, 7, latest - 1]);
}

#[test]
fn compaction_on_s3_costs_what_it_says_and_idle_costs_nothing() {
    use s3server::*;
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let proxy = CountingProxy::start(server.port);
    let url = url_for(proxy.port, "c/app.db");
    let db = dir.path("app.db");
    let conn = create_db(&db);
    let top =
        "levels:\n  - interval: 1s\nsnapshot:\n  interval: 1h\n  retention: 1h\nl0-retention: 1h\n";
    let extra = format!("{}{FAST_DB}", credentials_yaml(ACCESS_KEY, SECRET_KEY));
    let config = write_config(dir.dir.path(), &[(&db, &url)], &extra, top);
    let daemon = Daemon::start(&config);
    let level_max = |hex_level: &str| {
        server
            .keys(&format!("c/app.db/{hex_level}/"))
            .iter()
            .filter_map(|k| litestream::ltx::parse_file_name(k.rsplit('/').next().unwrap()))
            .map(|(_, max)| max.get())
            .max()
            .unwrap_or(0)
    };
    for _ in 0..3 {
        conn.execute("INSERT INTO t(v) VALUES ('x')", []).unwrap();
        daemon.sync_wait(&db);
    }
    let t = daemon.sync_wait(&db)["replicated_txid"].as_u64().unwrap();
    wait_until(Duration::from_secs(20), "L1", || level_max("0001") == t);
    // Every level waits for its interval boundary, even at startup: no snapshot within the hour.
    assert_eq!(level_max("0009"), 0, "a snapshot before its interval");

    // Compactions cost 1 LIST (level 0), a GET per merged file and 1 PUT each; the two
    // syncs a PUT each; nothing else. (The two files may land in one L1 file or two,
    // depending on where the 1 s boundaries fall.)
    let l1_before = server.keys("c/app.db/0001/").len() as u64;
    proxy.reset();
    for _ in 0..2 {
        conn.execute("INSERT INTO t(v) VALUES ('y')", []).unwrap();
        daemon.sync_wait(&db);
    }
    let t2 = daemon.sync_wait(&db)["replicated_txid"].as_u64().unwrap();
    assert_eq!(t2, t + 2);
    wait_until(Duration::from_secs(10), "the L1 compaction", || {
        level_max("0001") == t2
    });
    let compactions = server.keys("c/app.db/0001/").len() as u64 - l1_before;
    let counts = proxy.counts();
    let want: BTreeMap<String, u64> = [("PUT", 2 + compactions), ("LIST", compactions), ("GET", 2)]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(
        counts, want,
        "requests of two syncs and {compactions} compaction(s)"
    );

    // Idle: ticks come and go every second, and find nothing to do without asking S3. (The
    // sleep is the window measured, not a synchronisation.)
    proxy.reset();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(proxy.counts().is_empty(), "{:?}", proxy.counts());
    let entry = &daemon.request("GET", "/list", None).json()["databases"][0];
    assert!(entry.get("compaction_error").is_none(), "{entry}");
    assert_eq!(daemon.terminate(), 0);

    // Both tools restore the compacted S3 replica.
    let ours = dir.path("ours.db");
    let mut cmd = Command::new(bin());
    cmd.args(["restore", "-o", ours.to_str().unwrap(), &url]);
    let o = with_credentials(&mut cmd).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs = dir.path("theirs.db");
    reference_restore(&url, 0, &theirs, true);
    assert!(same_bytes(&ours, &theirs));
    assert_eq!(ids(&ours), ids(&db));
}
