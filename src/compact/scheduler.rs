//! The `compact` thread of a store: one per daemon, looking after every database's
//! [`DbCompaction`], running each task (a level, a snapshot, L0 retention) on its interval
//! boundaries, reporting failures in the registry, and cancelled at shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use super::db::DbCompaction;
use super::policy::{next_boundary, Schedule};
use crate::duration;
use crate::ltx::{Level, TxId};
use crate::registry::{DbStatus, Registry};
use crate::replica::ReplicaClient;
use crate::timefmt;

/// "Now" in milliseconds since the Unix epoch: [`timefmt::now_ms`] in the daemon, a fake
/// clock in tests, so that they move time instead of sleeping.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// How often a database whose replica position is not known yet (its thread has not
/// confirmed anything) is looked at again.
const NOT_READY_RETRY: Duration = Duration::from_secs(1);

/// One kind of scheduled work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    /// Compaction into level 1..=8.
    Level(Level),
    /// A snapshot, then snapshot retention.
    Snapshot,
    /// L0 retention.
    L0Retention,
}

impl Task {
    fn name(self) -> String {
        match self {
            Task::Level(l) => format!("level {l} compaction"),
            Task::Snapshot => "snapshot".into(),
            Task::L0Retention => "l0 retention".into(),
        }
    }
}

/// A database the thread looks after.
struct Entry {
    work: DbCompaction,
    /// When each task is next due, in ms since the epoch.
    due: BTreeMap<Task, i64>,
    /// Set once the database thread has confirmed a position, after which every task runs
    /// once at once (catching up after a restart), then on its schedule.
    started: bool,
    /// The last error of each failing task.
    errors: BTreeMap<Task, String>,
}

/// Messages to the compactor thread.
enum Command {
    Add {
        path: PathBuf,
        replica: Arc<dyn ReplicaClient>,
        meta_dir: PathBuf,
    },
    Remove(PathBuf),
    Stop,
}

/// The running `compact` thread of a store.
pub struct Compactor {
    tx: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    /// Shared with the thread and every [`DbCompaction`]: set by [`Compactor::cancel`].
    cancel: Arc<AtomicBool>,
}

impl Compactor {
    /// Starts the thread. It reads each database's replicated TXID from `registry` and
    /// reports failures in its `compaction_error`.
    pub fn start(schedule: Schedule, registry: Arc<Registry>) -> std::io::Result<Compactor> {
        // Bounded: one add or remove per registration change; a sender waits for room only
        // while the thread is in the middle of a compaction and 1024 changes are queued.
        let (tx, rx) = bounded(1024);
        let cancel = Arc::new(AtomicBool::new(false));
        let worker_cancel = cancel.clone();
        let thread = thread::Builder::new()
            .name("compact".into())
            .spawn(move || {
                let clock: Clock = Arc::new(timefmt::now_ms);
                Worker::new(schedule, registry, worker_cancel, clock).run(rx)
            })?;
        Ok(Compactor {
            tx,
            thread: Some(thread),
            cancel,
        })
    }

    /// Starts looking after a database.
    pub fn add(&self, path: &Path, replica: Arc<dyn ReplicaClient>, meta_dir: &Path) {
        let _ = self.tx.send(Command::Add {
            path: path.to_path_buf(),
            replica,
            meta_dir: meta_dir.to_path_buf(),
        });
    }

    /// Stops looking after a database (after the work in progress, if any).
    pub fn remove(&self, path: &Path) {
        let _ = self.tx.send(Command::Remove(path.to_path_buf()));
    }

    /// Stops the work in progress at its next read and the thread after it, without
    /// waiting: at shutdown only the final sync is worth waiting for. Compaction is
    /// idempotent (a half-written output is a temporary file, removed at the next start;
    /// deletions only ever follow a proof), so it simply runs again after the restart.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Command::Stop);
    }

    /// Stops the thread, waiting up to `timeout` for it to end; past it (an upload or a
    /// listing in flight, which reads cannot interrupt), it is abandoned with the process.
    pub fn stop(&mut self, timeout: Duration) {
        let _ = self.tx.send(Command::Stop);
        let Some(t) = self.thread.take() else { return };
        let deadline = Instant::now() + timeout;
        while !t.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::info!("compaction interrupted by shutdown; it runs again at the next start");
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
    }
}

struct Worker {
    schedule: Schedule,
    registry: Arc<Registry>,
    dbs: BTreeMap<PathBuf, Entry>,
    /// See [`Compactor::cancel`].
    cancel: Arc<AtomicBool>,
    /// What "now" is: when tasks are due, and the time each task runs at.
    clock: Clock,
}

impl Worker {
    fn new(
        schedule: Schedule,
        registry: Arc<Registry>,
        cancel: Arc<AtomicBool>,
        clock: Clock,
    ) -> Worker {
        Worker {
            schedule,
            registry,
            dbs: BTreeMap::new(),
            cancel,
            clock,
        }
    }

    fn run(&mut self, rx: Receiver<Command>) {
        let s = &self.schedule;
        for (i, interval) in s.levels.iter().enumerate() {
            log::info!(
                compaction_level = i + 1,
                interval:% = duration::format(*interval);
                "starting compaction monitor"
            );
        }
        log::info!(
            compaction_level = Level::SNAPSHOT.get(),
            interval:% = duration::format(s.snapshot_interval),
            retention:% = duration::format(s.snapshot_retention);
            "starting compaction monitor"
        );
        if !s.levels.is_empty() {
            log::info!(
                interval:% = duration::format(s.l0_retention_check_interval),
                retention:% = duration::format(s.l0_retention);
                "starting L0 retention monitor"
            );
        }
        loop {
            let now = (self.clock)();
            let next = self
                .dbs
                .values()
                .flat_map(|e| e.due.values().copied())
                .min();
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis((t - now).max(0) as u64)
            });
            match rx.recv_timeout(wait) {
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Commands first: a stop or removal is not held up by a backlog of work.
            while let Ok(cmd) = rx.try_recv() {
                if matches!(cmd, Command::Stop) {
                    return;
                }
                self.handle(cmd);
            }
            self.run_due();
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add {
                path,
                replica,
                meta_dir,
            } => {
                // Each task first runs on its next interval boundary, as Litestream's: a
                // restart of many databases does not begin with a burst of requests, and a
                // level already written in this interval is not rewritten.
                let now = (self.clock)();
                let work =
                    DbCompaction::new(&path, replica, &meta_dir).with_cancel(self.cancel.clone());
                let due = self
                    .tasks()
                    .into_iter()
                    .map(|t| (t, self.next_due(t, now)))
                    .collect();
                self.dbs.insert(
                    path,
                    Entry {
                        work,
                        due,
                        started: false,
                        errors: BTreeMap::new(),
                    },
                );
            }
            Command::Remove(path) => {
                self.dbs.remove(&path);
            }
            Command::Stop => {}
        }
    }

    /// The tasks of every database, in the order they run when due together.
    fn tasks(&self) -> Vec<Task> {
        let mut tasks: Vec<Task> = Level::all()
            .filter(|l| l.is_compacted())
            .take(self.schedule.levels.len())
            .map(Task::Level)
            .collect();
        tasks.push(Task::Snapshot);
        if !self.schedule.levels.is_empty() {
            tasks.push(Task::L0Retention);
        }
        tasks
    }

    /// When `task` is next due after `now`.
    fn next_due(&self, task: Task, now: i64) -> i64 {
        match task {
            Task::Level(l) => next_boundary(now, self.schedule.levels[l.index() - 1]),
            Task::Snapshot => next_boundary(now, self.schedule.snapshot_interval),
            Task::L0Retention => now + self.schedule.l0_retention_check_interval.as_millis() as i64,
        }
    }

    fn run_due(&mut self) {
        let paths: Vec<PathBuf> = self.dbs.keys().cloned().collect();
        for path in paths {
            let now = (self.clock)();
            let view = self.registry.get(&path);
            let stopped = view.as_ref().is_some_and(|v| v.status == DbStatus::Stopped);
            let replicated = view.map_or(TxId::ZERO, |v| v.replicated_txid);
            let tasks = self.tasks();
            let Some(entry) = self.dbs.get_mut(&path) else {
                continue;
            };
            // Not yet: the database thread has not confirmed anything, or it is stopped
            // (`litestream stop`, or its replica's lease refused or lost: not written by us,
            // so its replica is left as it is). Look again soon.
            if stopped || (!entry.started && replicated == TxId::ZERO) {
                let retry = now + NOT_READY_RETRY.as_millis() as i64;
                for due in entry.due.values_mut() {
                    *due = (*due).max(retry);
                }
                continue;
            }
            entry.started = true;
            let due: Vec<Task> = tasks
                .into_iter()
                .filter(|t| entry.due.get(t).is_some_and(|&d| d <= now))
                .collect();
            let mut l1_wrote = false;
            for task in due {
                if self.cancel.load(Ordering::Relaxed) {
                    return;
                }
                let now = (self.clock)();
                let result = self.run_task(&path, task, replicated, now, &mut l1_wrote);
                let next = self.next_due(task, now);
                let Some(entry) = self.dbs.get_mut(&path) else {
                    break;
                };
                entry.due.insert(task, next);
                match result {
                    Ok(()) => {
                        if entry.errors.remove(&task).is_some() {
                            log::info!(db:% = path.display(), task = task.name(); "compaction task recovered");
                        }
                    }
                    Err(_) if self.cancel.load(Ordering::Relaxed) => return,
                    Err(e) => {
                        let msg = format!("{}: {e:#}", task.name());
                        if entry.errors.get(&task) != Some(&msg) {
                            log::error!(db:% = path.display(), task = task.name(), error = msg.as_str(); "compaction task failed");
                        }
                        entry.errors.insert(task, msg);
                        entry.work.forget_listings();
                    }
                }
                let error = entry.errors.values().next().cloned();
                self.registry.update(&path, |v| v.compaction_error = error);
            }
        }
    }

    fn run_task(
        &mut self,
        path: &Path,
        task: Task,
        replicated: TxId,
        now: i64,
        l1_wrote: &mut bool,
    ) -> Result<()> {
        let schedule = self.schedule.clone();
        let Some(entry) = self.dbs.get_mut(path) else {
            return Ok(());
        };
        let work = &mut entry.work;
        match task {
            Task::Level(level) => {
                let interval = schedule.levels[level.index() - 1];
                let written = work.compact_level(level, Some(interval), replicated, now)?;
                if level == Level::L1 && !written.is_empty() {
                    *l1_wrote = true;
                    work.enforce_l0_retention(schedule.l0_retention, now)?;
                }
            }
            Task::Snapshot => {
                work.snapshot(Some(schedule.snapshot_interval), replicated, now)?;
                work.enforce_snapshot_retention(
                    schedule.snapshot_retention,
                    schedule.l0_retention,
                    now,
                )?;
            }
            Task::L0Retention => {
                if !*l1_wrote {
                    work.enforce_l0_retention(schedule.l0_retention, now)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;
    use crate::compact::testutil::{Fixture, MIN, T0};
    use crate::ltx::testutil::EXT;
    use crate::registry::{DbView, Role};

    /// A database added (at startup or by `/register`) waits for each task's next interval
    /// boundary: a restart of many databases is not a burst of compactions.
    #[test]
    fn an_added_database_first_compacts_on_the_next_boundaries() {
        let fx = Fixture::new();
        let clock: Clock = Arc::new(timefmt::now_ms);
        let mut worker = Worker::new(
            Schedule::default(),
            Arc::new(Registry::default()),
            Arc::default(),
            clock,
        );
        let before = timefmt::now_ms();
        worker.handle(Command::Add {
            path: "/db".into(),
            replica: fx.client.clone(),
            meta_dir: fx._dir.path().join("meta"),
        });
        let after = timefmt::now_ms();
        let due = &worker.dbs[Path::new("/db")].due;
        assert_eq!(due.len(), worker.tasks().len());
        for (task, &at) in due {
            let earliest = worker.next_due(*task, before);
            assert!(
                at >= earliest && at <= worker.next_due(*task, after) && at > after,
                "{task:?} due at {at}, now {after}"
            );
        }
        let s = &worker.schedule;
        assert!(due[&Task::Level(Level::new(3).unwrap())] >= next_boundary(before, s.levels[2]));
        assert!(due[&Task::Snapshot] >= next_boundary(before, s.snapshot_interval));
    }

    /// On a fake clock: level 1 is not compacted a millisecond before its first boundary,
    /// and is on the boundary; the next run waits for the boundary after that.
    #[test]
    fn a_level_compacts_when_its_boundary_passes_and_not_before() {
        let fx = Fixture::new();
        fx.l0(EXT, 1..=4);
        let registry = Arc::new(Registry::default());
        let (ctl, _ctl_rx) = bounded(1);
        let mut view = DbView::new(
            "/db".into(),
            None,
            fx.client.url().to_string(),
            Role::Primary,
        );
        view.status = DbStatus::Replicating;
        view.txid = TxId::new(4);
        view.replicated_txid = TxId::new(4);
        view.meta_dir = "/db-litestream".into();
        registry.insert(view, ctl);
        let now = Arc::new(AtomicI64::new(T0 + 1));
        let fake = now.clone();
        let clock: Clock = Arc::new(move || fake.load(Ordering::Relaxed));
        let schedule = Schedule {
            levels: vec![MIN],
            ..Schedule::default()
        };
        let mut worker = Worker::new(schedule, registry.clone(), Arc::default(), clock);
        worker.handle(Command::Add {
            path: "/db".into(),
            replica: fx.client.clone(),
            meta_dir: fx._dir.path().join("meta"),
        });
        let boundary = next_boundary(T0 + 1, MIN);
        assert_eq!(
            worker.dbs[Path::new("/db")].due[&Task::Level(Level::new(1).unwrap())],
            boundary
        );
        let level_1 = || -> Vec<(u64, u64)> {
            fx.files()
                .into_iter()
                .filter(|f| f.0 == 1)
                .map(|f| (f.1, f.2))
                .collect()
        };

        now.store(boundary - 1, Ordering::Relaxed);
        worker.run_due();
        assert!(level_1().is_empty(), "compacted before the boundary");

        now.store(boundary, Ordering::Relaxed);
        worker.run_due();
        assert_eq!(level_1(), [(1, 4)]);
        let entry = &worker.dbs[Path::new("/db")];
        assert_eq!(
            entry.due[&Task::Level(Level::new(1).unwrap())],
            boundary + MIN.as_millis() as i64
        );
        assert!(entry.errors.is_empty(), "{:?}", entry.errors);
        assert_eq!(
            registry.get(Path::new("/db")).unwrap().compaction_error,
            None
        );
    }
}
