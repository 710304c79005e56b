//! The crash loop (issue 9's fault suite): the daemon is killed with SIGKILL at random moments
//! (mid-sync, mid-upload, mid-checkpoint, mid-compaction) while a writer runs and lets SQLite
//! checkpoint on its own; between some trials, while the daemon is down, the application
//! changes the page size, VACUUMs, or switches `journal_mode` away from WAL and back. After
//! every trial every acknowledged row must be in the restore, and once the writer pauses the
//! restored database must equal the source.
//!
//! `cargo test --test crash_loop` runs `CRASH_TRIALS` trials (default 50, what CI runs);
//! `CRASH_TRIALS=1000 cargo test --release --test crash_loop -- --nocapture` is the long run.
//! `CRASH_SEED` replays a run (the seed is printed).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rusqlite::Connection;

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// What the application does to its database while the daemon is down.
#[derive(Clone, Copy, Debug)]
enum Offline {
    Nothing,
    Vacuum,
    PageSize(u32),
    JournalModeRoundTrip,
}

fn apply(db: &Path, what: Offline) {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    match what {
        Offline::Nothing => {}
        Offline::Vacuum => conn.execute_batch("VACUUM;").unwrap(),
        Offline::PageSize(size) => conn
            .execute_batch(&format!(
                "PRAGMA journal_mode=delete; PRAGMA page_size={size}; VACUUM; PRAGMA journal_mode=wal;"
            ))
            .unwrap(),
        Offline::JournalModeRoundTrip => conn
            .execute_batch(
                "PRAGMA journal_mode=delete; INSERT INTO t(v) VALUES ('in delete mode'); PRAGMA journal_mode=wal;",
            )
            .unwrap(),
    }
}

#[test]
fn crash_loop_loses_no_acknowledged_row() {
    let trials: usize = std::env::var("CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand_range(1, u64::MAX - 1));
    eprintln!("crash loop: {trials} trials, CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    // A small checkpoint threshold (many WAL generations) and fast compaction levels, so the
    // kills land in checkpoints and compactions as well as in syncs and uploads.
    let OneDb {
        dir,
        db,
        replica,
        config,
    } = OneDb::with_config(
        "    min-checkpoint-page-count: 64\n",
        "levels:\n  - interval: 1s\n  - interval: 3s\n",
    );
    create_db(&db);
    let replica = file_url(&replica);
    let mut acked: i64 = 0;
    let mut offline_done = vec![];
    let started = Instant::now();
    for trial in 0..trials {
        let writer = Writer::start(&db, rng.range(200, 2000) as u32);
        let daemon = Daemon::start(&config);
        let until = Instant::now() + Duration::from_millis(rng.range(100, 700));
        while Instant::now() < until {
            let before = writer.last_id.load(std::sync::atomic::Ordering::SeqCst);
            daemon.sync_wait(&db);
            acked = acked.max(before);
            std::thread::sleep(Duration::from_millis(rng.range(1, 60)));
        }
        // Let it run into the middle of something, then SIGKILL.
        std::thread::sleep(Duration::from_millis(rng.range(0, 40)));
        daemon.kill9();
        writer.stop();
        let what = match rng.range(0, 12) {
            0 => Offline::Vacuum,
            1 => Offline::PageSize([1024, 2048, 4096, 8192][rng.range(0, 4) as usize]),
            2 => Offline::JournalModeRoundTrip,
            _ => Offline::Nothing,
        };
        apply(&db, what);
        if !matches!(what, Offline::Nothing) {
            offline_done.push(what);
        }
        // Every acknowledged row is in the replica, whatever state the daemon died in.
        let out = dir.path(&format!("trial-{trial}.db"));
        restore(&replica, &out, &[]);
        assert_eq!(integrity(&out), "ok", "trial {trial} (seed {seed})");
        let got: BTreeSet<i64> = ids(&out).into_iter().collect();
        let missing: Vec<i64> = (1..=acked).filter(|i| !got.contains(i)).take(10).collect();
        assert!(
            missing.is_empty(),
            "trial {trial} (seed {seed}): acknowledged rows missing {missing:?} (acked up to {acked})"
        );
        std::fs::remove_file(&out).unwrap();
        // With the writer paused, a restarted daemon brings the replica to the source exactly.
        if trial % 5 == 4 || trial + 1 == trials {
            let daemon = Daemon::start(&config);
            daemon.sync_wait(&db);
            let out = dir.path(&format!("equal-{trial}.db"));
            restore(&replica, &out, &[]);
            assert_same_ids(
                &ids(&out),
                &ids(&db),
                &format!("trial {trial} (seed {seed}) after a clean sync"),
            );
            std::fs::remove_file(&out).unwrap();
            assert_eq!(daemon.terminate(), 0);
        }
        if (trial + 1) % 50 == 0 {
            eprintln!(
                "crash loop: {} trials in {:?}, {acked} rows acknowledged, 0 lost",
                trial + 1,
                started.elapsed()
            );
        }
    }
    eprintln!(
        "crash loop: {trials} trials in {:?}, {acked} rows acknowledged, 0 lost; offline changes: {offline_done:?}",
        started.elapsed()
    );
    assert!(acked > 0);
}
