//! One inotify thread for every database of the daemon: it tells a database thread, at once,
//! that its WAL (or its database file) changed, so the thread can sleep between changes
//! instead of polling and can keep up with a write burst as it happens.
//!
//! A watch is put on each database's directory, not on its files: the WAL may not exist yet,
//! and SQLite may remove and recreate it. Events are matched by file name to the subscribers
//! of that directory. Nothing here decides anything: a subscriber's `wake` function is called
//! (from the watcher thread, so it must not block), and the database thread looks for itself.
//!
//! A subscriber is woken once, then disarmed until it calls [`Subscription::arm`]: a database
//! thread that knows the log cannot reach its next threshold for a while sleeps that long
//! instead of hearing about every one of a thousand writes a second. While every subscriber
//! of a directory is disarmed, its watch stops asking for writes (`IN_MODIFY`) at all, so an
//! application writing steadily costs this thread nothing between re-arms. The thread also
//! reads at most one batch of events per millisecond (the kernel merges identical unread
//! events meanwhile).
//!
//! inotify sees every write made through this machine's kernel, whatever the filesystem; a
//! WAL-mode database must live on such a filesystem anyway (its `-shm` is shared memory). The
//! database threads still look at `monitor-interval`, so a missed event costs latency only.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

/// Called on the watcher thread when a watched file changes; must return at once.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What changes wake a subscriber: files created, renamed into place or removed (a restore, a
/// database that appears, a WAL that SQLite recreates), and, while it is armed, writes.
const MASK_ALWAYS: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE);

/// How long the thread waits in `poll` before looking at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(500);

/// Pause after each batch of events, so a busy writer's events merge in the kernel queue.
const BATCH_PAUSE: Duration = Duration::from_millis(1);

/// The running watcher thread. Dropping it stops the thread.
pub struct Watcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

struct State {
    /// The handle that adds and removes watches of the thread's inotify instance.
    watches: Watches,
    /// Every watched directory, by the descriptor inotify reports.
    dirs: HashMap<WatchDescriptor, Dir>,
    /// The descriptor of each watched directory.
    by_path: HashMap<PathBuf, WatchDescriptor>,
    next_id: u64,
}

struct Dir {
    path: PathBuf,
    subscribers: Vec<Subscriber>,
    /// Whether the watch currently asks for writes (some subscriber is armed).
    modify: bool,
}

struct Subscriber {
    id: u64,
    /// Files whose creation, removal or renaming into place wakes the subscriber.
    names: Vec<OsString>,
    /// Files whose writes wake it, while it is armed.
    written: Vec<OsString>,
    wake: Wake,
    /// Woken by the next event; cleared when woken, set again by [`Subscription::arm`].
    armed: bool,
}

/// A live subscription; dropping it unsubscribes (and unwatches the directory when it was
/// the last one there).
pub struct Subscription {
    shared: Weak<Shared>,
    dir: PathBuf,
    id: u64,
}

impl Watcher {
    /// Starts the watcher thread; `Err` when inotify is unavailable (no kernel support, or
    /// the per-user instance limit is reached), and the daemon then relies on polling.
    pub fn start() -> std::io::Result<Watcher> {
        let inotify = Inotify::init()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                watches: inotify.watches(),
                dirs: HashMap::new(),
                by_path: HashMap::new(),
                next_id: 0,
            }),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("watch".into())
                .spawn(move || run(inotify, &shared))?
        };
        Ok(Watcher {
            shared,
            thread: Some(thread),
        })
    }

    /// Calls `wake` whenever one of `names` in `dir` is created, renamed into place or
    /// removed, and (while armed) whenever one of `written` is written. Returns `Err` when the
    /// directory cannot be watched (it does not exist, or the per-user watch limit is reached).
    pub fn subscribe(
        &self,
        dir: &Path,
        names: Vec<OsString>,
        written: Vec<OsString>,
        wake: Wake,
    ) -> std::io::Result<Subscription> {
        let mut state = lock(&self.shared.state);
        let wd = match state.by_path.get(dir) {
            Some(wd) => wd.clone(),
            None => {
                let wd = state.watches.add(dir, MASK_ALWAYS | WatchMask::MODIFY)?;
                state.by_path.insert(dir.to_path_buf(), wd.clone());
                state.dirs.insert(
                    wd.clone(),
                    Dir {
                        path: dir.to_path_buf(),
                        subscribers: vec![],
                        modify: true,
                    },
                );
                wd
            }
        };
        state.next_id += 1;
        let id = state.next_id;
        let dir_entry = state.dirs.get_mut(&wd).expect("inserted above");
        dir_entry.subscribers.push(Subscriber {
            id,
            names,
            written,
            wake,
            armed: true,
        });
        set_modify(&mut state, &wd, true);
        Ok(Subscription {
            shared: Arc::downgrade(&self.shared),
            dir: dir.to_path_buf(),
            id,
        })
    }
}

impl Subscription {
    /// Asks to be woken by the next write again (after the last wakeup disarmed it).
    pub fn arm(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut state = lock(&shared.state);
        let Some(wd) = state.by_path.get(&self.dir).cloned() else {
            return;
        };
        if let Some(dir) = state.dirs.get_mut(&wd) {
            for s in dir.subscribers.iter_mut().filter(|s| s.id == self.id) {
                s.armed = true;
            }
        }
        set_modify(&mut state, &wd, true);
    }
}

/// Turns the watch's interest in writes on or off (off only when no subscriber is armed).
/// A failure leaves it as it was: at worst a disarmed subscriber's writes keep coming.
fn set_modify(state: &mut State, wd: &WatchDescriptor, want: bool) {
    let Some(dir) = state.dirs.get(wd) else {
        return;
    };
    let want = want || dir.subscribers.iter().any(|s| s.armed);
    if dir.modify == want {
        return;
    }
    let mask = if want {
        MASK_ALWAYS | WatchMask::MODIFY
    } else {
        MASK_ALWAYS
    };
    let path = dir.path.clone();
    // On a watched path inotify_add_watch replaces the mask and returns the same descriptor.
    if state.watches.add(&path, mask).is_ok() {
        if let Some(dir) = state.dirs.get_mut(wd) {
            dir.modify = want;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut state = lock(&shared.state);
        let Some(wd) = state.by_path.get(&self.dir).cloned() else {
            return;
        };
        let empty = match state.dirs.get_mut(&wd) {
            Some(dir) => {
                dir.subscribers.retain(|s| s.id != self.id);
                dir.subscribers.is_empty()
            }
            None => false,
        };
        if empty {
            state.dirs.remove(&wd);
            state.by_path.remove(&self.dir);
            // Fails only if the directory is gone already, which removed the watch too.
            let _ = state.watches.remove(wd);
        } else {
            set_modify(&mut state, &wd, false);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The thread: wait for events (checking the stop flag twice a second), wake the subscribers
/// they name, pause a millisecond, repeat.
fn run(mut inotify: Inotify, shared: &Shared) {
    let mut buffer = [0u8; 4096];
    while !shared.stop.load(Ordering::Acquire) {
        let mut pfd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, STOP_CHECK.as_millis() as libc::c_int) };
        if ready <= 0 {
            continue;
        }
        let events = match inotify.read_events(&mut buffer) {
            Ok(events) => events,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                log::error!(error:% = e; "file watcher stopped; databases fall back to polling");
                return;
            }
        };
        let mut woken: Vec<Wake> = vec![];
        {
            let mut state = lock(&shared.state);
            let mut touched: Vec<WatchDescriptor> = vec![];
            for event in events {
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    // Events were dropped: wake everyone to look.
                    for (wd, dir) in state.dirs.iter_mut() {
                        for s in &mut dir.subscribers {
                            s.armed = false;
                            woken.push(s.wake.clone());
                        }
                        touched.push(wd.clone());
                    }
                    continue;
                }
                let Some(name) = event.name else { continue };
                let Some(dir) = state.dirs.get_mut(&event.wd) else {
                    continue;
                };
                let write = event.mask.contains(EventMask::MODIFY);
                for s in &mut dir.subscribers {
                    let wakes = if write {
                        s.armed && s.written.iter().any(|n| n == name)
                    } else {
                        s.names.iter().any(|n| n == name)
                    };
                    if wakes {
                        s.armed = false;
                        woken.push(s.wake.clone());
                    }
                }
                touched.push(event.wd.clone());
            }
            for wd in touched {
                set_modify(&mut state, &wd, false);
            }
        }
        woken.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for wake in woken {
            wake();
        }
        thread::sleep(BATCH_PAUSE);
    }
}
