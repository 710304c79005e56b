//! Directory replication at run time: finds the SQLite databases under each `dir:` entry of
//! the config, starts them as if each had its own `path:` entry, and with `watch: true`
//! follows the directory: databases that appear are added, databases that are deleted are
//! stopped and reported.
//!
//! Only real SQLite databases in WAL mode are taken (the header's magic, and read/write
//! versions 2): a file that matches the pattern but is not one is skipped with one log line,
//! and looked at again only when it changes. An application that creates a database and
//! switches it to WAL mode makes SQLite create its `-wal` file, which is the event that gets
//! it picked up; a database copied in is picked up when its writer closes it.
//!
//! One thread follows every watched directory with its own inotify instance (the database
//! threads' watcher, `crate::watch`, follows files, this one follows names). Events are
//! handled in batches a quarter of a second after the first (Litestream's debounce), so a
//! file being written is looked at once. A full rescan every ten `monitor-interval`s catches
//! what inotify cannot see (a change made on another machine of a network filesystem); where
//! inotify is unavailable the rescan runs every `monitor-interval` instead.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::config::{DirConfig, META_DIR_SUFFIX};
use crate::daemon::Daemon;
use crate::store::Added;

/// How long events are gathered after the first before they are handled.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// How often the thread looks at its stop flag while nothing happens.
const STOP_CHECK: Duration = Duration::from_millis(500);

/// With inotify working, a full rescan every this many `monitor-interval`s.
const RESCAN_TICKS: u32 = 10;

/// How long stopping a deleted database may take (its last pass and uploads).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Directory events that can make or unmake a database.
const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::ONLYDIR);

/// Set by tests to exercise the polling fallback as if inotify were unavailable.
const NO_INOTIFY_ENV: &str = "LITESTREAM_TEST_NO_INOTIFY";

/// What a file that matches a pattern turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    /// A SQLite database in WAL mode: replicated.
    WalDatabase,
    /// A SQLite database in rollback-journal mode: skipped (its application did not choose WAL).
    NotWal,
    /// Not a SQLite database (or shorter than its 100-byte header): skipped.
    NotSqlite,
    /// Empty, or gone: nothing to say yet.
    Nothing,
}

/// Reads the first 100 bytes of `path`: the SQLite header says whether it is a database and
/// whether it is in WAL mode (bytes 18 and 19, the write and read versions, are 2).
pub fn classify(path: &Path) -> Candidate {
    let Ok(mut file) = File::open(path) else {
        return Candidate::Nothing;
    };
    let mut header = [0u8; 100];
    let read = crate::replica::read_full(&mut file, &mut header).unwrap_or(0);
    if read == 0 {
        Candidate::Nothing
    } else if read < header.len() || &header[..16] != b"SQLite format 3\0" {
        Candidate::NotSqlite
    } else if header[18] == 2 && header[19] == 2 {
        Candidate::WalDatabase
    } else {
        Candidate::NotWal
    }
}

/// Files that are never databases themselves: SQLite's side files.
fn is_side_file(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    [b"-wal".as_slice(), b"-shm", b"-journal"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Directories never searched: our own local state (`.<name>-litestream`).
fn is_state_dir(name: &OsStr) -> bool {
    name.as_encoded_bytes()
        .ends_with(META_DIR_SUFFIX.as_bytes())
}

/// The WAL-mode SQLite databases a `dir:` entry takes now, sorted (for `litestream databases`).
pub fn find(entry: &DirConfig) -> Vec<PathBuf> {
    let mut files = BTreeSet::new();
    collect(entry, &entry.dir, &mut files, false);
    files
        .into_iter()
        .filter(|p| classify(p) == Candidate::WalDatabase)
        .collect()
}

/// Adds every file under `dir` (searched as `entry` says) whose name matches its pattern;
/// with `report`, says why a directory cannot be read.
fn collect(entry: &DirConfig, dir: &Path, files: &mut BTreeSet<PathBuf>, report: bool) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            if report && (e.kind() != io::ErrorKind::NotFound || dir == entry.dir) {
                log::warn!(dir:% = dir.display(), error:% = e; "cannot read directory");
            }
            return;
        }
    };
    for item in entries.flatten() {
        let name = item.file_name();
        let Ok(kind) = item.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if entry.recursive && !is_state_dir(&name) {
                collect(entry, &item.path(), files, report);
            }
        } else if !is_side_file(&name) && entry.matches(&name) {
            files.insert(item.path());
        }
    }
}

/// The running directory monitor. Dropping it stops its thread.
pub struct DirectoryMonitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DirectoryMonitor {
    /// Scans every directory once and starts what it finds (on the caller's thread, so the
    /// daemon reports ready with them), then follows the `watch: true` ones on a thread.
    pub fn start(dirs: Vec<DirConfig>, daemon: Arc<Daemon>) -> io::Result<DirectoryMonitor> {
        let mut monitor = Monitor {
            dirs,
            daemon,
            ours: HashMap::new(),
            skipped: HashMap::new(),
        };
        for i in 0..monitor.dirs.len() {
            let found = monitor.scan(i);
            if found == 0 && !monitor.dirs[i].watch {
                let dir = &monitor.dirs[i];
                log::error!(
                    dir:% = dir.dir.display(),
                    pattern:% = dir.pattern,
                    hint = "set 'watch: true' to pick up databases created later";
                    "no SQLite databases found in directory; nothing from it is replicated"
                );
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if monitor.dirs.iter().any(|d| d.watch) {
            let stop = stop.clone();
            Some(
                thread::Builder::new()
                    .name("dir-watch".into())
                    .spawn(move || monitor.follow(&stop))?,
            )
        } else {
            None
        };
        Ok(DirectoryMonitor { stop, thread })
    }

    /// Stops the thread (databases it added keep running until the store shuts down).
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DirectoryMonitor {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

struct Monitor {
    dirs: Vec<DirConfig>,
    daemon: Arc<Daemon>,
    /// Databases this monitor started, and the directory entry each came from.
    ours: HashMap<PathBuf, usize>,
    /// Files skipped, with why, so each is reported once (again only if the reason changes).
    skipped: HashMap<PathBuf, Candidate>,
}

impl Monitor {
    /// Every file under directory `i` (and its subdirectories when recursive) that matches
    /// its pattern; returns how many are replicated.
    fn scan(&mut self, i: usize) -> usize {
        let mut files = BTreeSet::new();
        let root = self.dirs[i].dir.clone();
        collect(&self.dirs[i], &root, &mut files, true);
        let mut replicated = 0;
        for path in files {
            if self.consider(i, &path) {
                replicated += 1;
            }
        }
        replicated
    }

    /// Looks at one file that matches directory `i`'s pattern: starts it if it is a WAL
    /// database not replicated yet, says once why not otherwise. Returns whether it is
    /// replicated (by this monitor) afterwards.
    fn consider(&mut self, i: usize, path: &Path) -> bool {
        if self.ours.contains_key(path) {
            return true;
        }
        let what = classify(path);
        if what != Candidate::WalDatabase {
            if what != Candidate::Nothing && self.skipped.get(path) != Some(&what) {
                let why = match what {
                    Candidate::NotWal => "a SQLite database not in WAL mode (its application must set journal_mode=WAL)",
                    _ => "not a SQLite database",
                };
                log::info!(
                    dir:% = self.dirs[i].dir.display(),
                    path:% = path.display(),
                    reason = why;
                    "skipping file in directory"
                );
            }
            self.skipped.insert(path.to_path_buf(), what);
            return false;
        }
        self.skipped.remove(path);
        let entry = self.dirs[i].entry(path);
        match self.daemon.add_configured(&entry) {
            Ok(Added::Registered) => {
                log::info!(
                    path:% = path.display(),
                    dir:% = self.dirs[i].dir.display(),
                    replica:% = crate::daemon::replica_display_url(
                        entry
                            .active_replica()
                            .expect("parsed entries have a replica")
                    );
                    "added database to replication"
                );
                self.ours.insert(path.to_path_buf(), i);
                true
            }
            // Listed in the config with `path:` too (or registered): that entry wins.
            Ok(_) => false,
            Err(e) => {
                log::error!(db:% = path.display(), error = format!("{e:#}"); "database not replicated");
                false
            }
        }
    }

    /// Stops a database this monitor started whose file is gone.
    fn forget(&mut self, path: &Path) {
        self.skipped.remove(path);
        if self.ours.remove(path).is_none() {
            return;
        }
        match self.daemon.store.remove(path, REMOVE_TIMEOUT) {
            Some((view, txid)) => log::info!(
                path:% = path.display(),
                txid:% = txid,
                replicated_txid:% = view.replicated_txid;
                "removed database from replication"
            ),
            None => log::info!(
                path:% = path.display(),
                detail = "it was unregistered already";
                "removed database from replication"
            ),
        }
    }

    /// Databases this monitor started under `dir` (or `dir` itself).
    fn ours_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.ours
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect()
    }

    /// The `watch: true` directories' loop, until `stop`.
    fn follow(mut self, stop: &AtomicBool) {
        let watched: Vec<usize> = (0..self.dirs.len())
            .filter(|&i| self.dirs[i].watch)
            .collect();
        let interval = watched
            .iter()
            .map(|&i| self.dirs[i].template.monitor_interval)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let mut inotify = if std::env::var_os(NO_INOTIFY_ENV).is_some() {
            None
        } else {
            match Inotify::init() {
                Ok(n) => Some(n),
                Err(e) => {
                    log::warn!(error:% = e, interval:? = interval; "directory watch: inotify unavailable; rescanning instead");
                    None
                }
            }
        };
        let mut wds: HashMap<WatchDescriptor, (usize, PathBuf)> = HashMap::new();
        if let Some(n) = &inotify {
            for &i in &watched {
                let root = self.dirs[i].dir.clone();
                self.watch_tree(n, i, &root, &mut wds);
            }
            // What appeared between the first scan and the watches.
            for &i in &watched {
                self.scan(i);
            }
        }
        let rescan_every = if inotify.is_some() {
            interval * RESCAN_TICKS
        } else {
            interval
        };
        let mut next_rescan = Instant::now() + rescan_every;
        let mut pending: BTreeSet<(usize, PathBuf)> = BTreeSet::new();
        let mut pending_since: Option<Instant> = None;
        let mut buffer = vec![0u8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut wait = STOP_CHECK.min(next_rescan.saturating_duration_since(now));
            if let Some(t) = pending_since {
                wait = wait.min((t + DEBOUNCE).saturating_duration_since(now));
            }
            let mut changed_dirs = Vec::new();
            if let Some(n) = inotify.as_mut() {
                if wait_readable(n, wait) {
                    self.read_events(n, &mut buffer, &mut wds, &mut pending, &mut changed_dirs);
                }
            } else {
                thread::sleep(wait);
            }
            if !pending.is_empty() && pending_since.is_none() {
                pending_since = Some(Instant::now());
            }
            for (i, dir) in changed_dirs {
                if let Some(n) = &inotify {
                    self.watch_tree(n, i, &dir, &mut wds);
                }
                let mut files = BTreeSet::new();
                collect(&self.dirs[i], &dir, &mut files, true);
                pending.extend(files.into_iter().map(|f| (i, f)));
                pending_since.get_or_insert_with(Instant::now);
            }
            if pending_since.is_some_and(|t| t.elapsed() >= DEBOUNCE) {
                for (i, path) in std::mem::take(&mut pending) {
                    if path.exists() {
                        self.consider(i, &path);
                    } else {
                        self.forget(&path);
                    }
                }
                pending_since = None;
            }
            if Instant::now() >= next_rescan {
                for &i in &watched {
                    self.scan(i);
                }
                let gone: Vec<PathBuf> =
                    self.ours.keys().filter(|p| !p.exists()).cloned().collect();
                for path in gone {
                    self.forget(&path);
                }
                next_rescan = Instant::now() + rescan_every;
            }
        }
    }

    /// Watches `dir` (and, for a recursive entry, every directory under it).
    fn watch_tree(
        &self,
        inotify: &Inotify,
        i: usize,
        dir: &Path,
        wds: &mut HashMap<WatchDescriptor, (usize, PathBuf)>,
    ) {
        match inotify.watches().add(dir, MASK) {
            Ok(wd) => {
                wds.insert(wd, (i, dir.to_path_buf()));
            }
            Err(e) => {
                log::warn!(
                    dir:% = dir.display(), error:% = e;
                    "cannot watch directory; changes are seen at the next rescan"
                );
                return;
            }
        }
        if !self.dirs[i].recursive {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && !is_state_dir(&name) {
                self.watch_tree(inotify, i, &entry.path(), wds);
            }
        }
    }

    /// Reads what inotify has: files to look at (after the debounce), databases whose file
    /// is gone (stopped at once), and new subdirectories (watched and searched).
    fn read_events(
        &mut self,
        inotify: &mut Inotify,
        buffer: &mut [u8],
        wds: &mut HashMap<WatchDescriptor, (usize, PathBuf)>,
        pending: &mut BTreeSet<(usize, PathBuf)>,
        changed_dirs: &mut Vec<(usize, PathBuf)>,
    ) {
        let mut gone = Vec::new();
        let events = match inotify.read_events(buffer) {
            Ok(events) => events,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log::warn!(error:% = e; "directory watch: cannot read events");
                return;
            }
        };
        for event in events {
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                // Events were lost: look at everything.
                for (i, dir) in wds.values() {
                    changed_dirs.push((*i, dir.clone()));
                }
                continue;
            }
            if event.mask.contains(EventMask::IGNORED) {
                wds.remove(&event.wd);
                continue;
            }
            let (Some((i, dir)), Some(name)) = (wds.get(&event.wd), event.name) else {
                continue;
            };
            let (i, path) = (*i, dir.join(name));
            if event.mask.contains(EventMask::ISDIR) {
                if event
                    .mask
                    .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                {
                    if self.dirs[i].recursive && !is_state_dir(name) {
                        changed_dirs.push((i, path));
                    }
                } else if event
                    .mask
                    .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
                {
                    gone.extend(self.ours_under(&path));
                }
                continue;
            }
            // SQLite creates `X-wal` when a database X is used in WAL mode.
            if let Some(db) = name.to_str().and_then(|n| n.strip_suffix("-wal")) {
                if event.mask.contains(EventMask::CREATE) && self.dirs[i].matches(db.as_ref()) {
                    pending.insert((i, dir.join(db)));
                }
                continue;
            }
            if is_side_file(name) || !self.dirs[i].matches(name) {
                continue;
            }
            if event
                .mask
                .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
            {
                gone.push(path);
            } else {
                pending.insert((i, path));
            }
        }
        for path in gone {
            pending.retain(|(_, p)| p != &path);
            self.forget(&path);
        }
    }
}

/// Waits up to `timeout` for inotify events; whether there are some.
fn wait_readable(inotify: &Inotify, timeout: Duration) -> bool {
    let mut fds = [libc::pollfd {
        fd: inotify.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
    n > 0 && fds[0].revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_tells_wal_databases_from_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal.db");
        let conn = rusqlite::Connection::open(&wal).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        let rollback = dir.path().join("rollback.db");
        rusqlite::Connection::open(&rollback)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        let text = dir.path().join("notes.db");
        std::fs::write(
            &text,
            "not a database, but long enough to have a header: ".repeat(4),
        )
        .unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(classify(&wal), Candidate::WalDatabase);
        assert_eq!(classify(&rollback), Candidate::NotWal);
        assert_eq!(classify(&text), Candidate::NotSqlite);
        assert_eq!(classify(&empty), Candidate::Nothing);
        assert_eq!(classify(&dir.path().join("missing.db")), Candidate::Nothing);
    }

    #[test]
    fn side_files_and_state_dirs_are_never_taken() {
        assert!(is_side_file(OsStr::new("a.db-wal")));
        assert!(is_side_file(OsStr::new("a.db-shm")));
        assert!(is_side_file(OsStr::new("a.db-journal")));
        assert!(!is_side_file(OsStr::new("a.db")));
        assert!(is_state_dir(OsStr::new(".a.db-litestream")));
        assert!(!is_state_dir(OsStr::new("tenants")));
    }
}
