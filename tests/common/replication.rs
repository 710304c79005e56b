//! A database replicating to a file replica, and what the control socket says of it: the
//! one-database fixture, the `/list` and `/txid` lookups the tests share, the LTX files a file
//! replica holds, and a replica directory made unreachable for a while.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;

use super::{create_db, wait_until, write_config, Daemon, TestDir};

/// The `file://` URL of a replica directory.
pub fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// Commits one row (`'x'`) to table `t` of `db`, creating the database when needed.
pub fn insert(db: &Path) {
    create_db(db)
        .execute("INSERT INTO t(v) VALUES ('x')", [])
        .unwrap();
}

/// `GET /txid?path=` of `db`: its txid; asserts a 200.
pub fn txid_of(d: &Daemon, db: &Path) -> u64 {
    let r = d.request("GET", &format!("/txid?path={}", db.display()), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["txid"].as_u64().unwrap()
}

/// The `/list` entry of `db`, or `None` when it is not listed; asserts a 200.
pub fn find_list_entry(d: &Daemon, db: &Path) -> Option<Value> {
    let r = d.request("GET", "/list", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == db.display().to_string())
        .cloned()
}

/// The `/list` entry of `db`; panics when it is not listed.
pub fn list_entry(d: &Daemon, db: &Path) -> Value {
    let r = d.request("GET", "/list", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == db.display().to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{} not in /list: {}", db.display(), r.body))
}

/// Waits (up to 30 s) until `db` is listed as replicating with at least one transaction on
/// its replica.
pub fn wait_replicated(d: &Daemon, db: &Path) {
    wait_until(
        Duration::from_secs(30),
        &format!("{} to replicate", db.display()),
        || {
            find_list_entry(d, db).is_some_and(|e| {
                e["status"] == "replicating" && e["replicated_txid"].as_u64().unwrap_or(0) >= 1
            })
        },
    );
}

/// One database, `app.db`, replicating to the file replica `replica` in a directory of its
/// own, with the config written (`litestream.yml`, socket `ls.sock`) and the daemon not yet
/// started. Destructure it (`let OneDb { dir, db, replica, config } = OneDb::new();`) or call
/// [`OneDb::start`].
pub struct OneDb {
    pub dir: TestDir,
    pub db: PathBuf,
    pub replica: PathBuf,
    pub config: PathBuf,
}

impl OneDb {
    pub fn new() -> OneDb {
        OneDb::with_config("", "")
    }

    /// [`OneDb::new`] with `extra_db` appended to the database entry (e.g.
    /// `"    monitor-interval: 1h\n"`) and `extra_top` to the file (e.g. `"levels: []\n"`).
    pub fn with_config(extra_db: &str, extra_top: &str) -> OneDb {
        let dir = TestDir::new();
        let replica = dir.path("replica");
        OneDb::in_dir(dir, replica, extra_db, extra_top)
    }

    /// `app.db` in `dir` replicating to the file replica `replica` (which may be anywhere, e.g.
    /// on a filesystem mounted in `dir`), with the extras of [`OneDb::with_config`].
    pub fn in_dir(dir: TestDir, replica: PathBuf, extra_db: &str, extra_top: &str) -> OneDb {
        let db = dir.path("app.db");
        let config = write_config(
            dir.dir.path(),
            &[(&db, &file_url(&replica))],
            extra_db,
            extra_top,
        );
        OneDb {
            dir,
            db,
            replica,
            config,
        }
    }

    /// Starts the daemon on the config and waits for its socket.
    pub fn start(&self) -> Daemon {
        Daemon::start(&self.config)
    }

    /// Commits one row, starts the daemon, and waits until `/list` shows the database
    /// replicating with that row on the replica.
    pub fn start_replicating(&self) -> Daemon {
        start_replicating(&self.db, &self.config)
    }
}

/// Commits one row to `db`, starts the daemon on `config`, and waits until `/list` shows the
/// database replicating with that row on the replica.
pub fn start_replicating(db: &Path, config: &Path) -> Daemon {
    insert(db);
    let d = Daemon::start(config);
    wait_replicated(&d, db);
    d
}

/// Opens `db` (creating it) and commits one row, starts the daemon on `config`, and syncs
/// with wait: the connection (for the test's later writes), the daemon, and the txid the row
/// reached the replica at.
pub fn start_synced(db: &Path, config: &Path) -> (Connection, Daemon, u64) {
    let conn = create_db(db);
    conn.execute("INSERT INTO t(v) VALUES ('x')", []).unwrap();
    let d = Daemon::start(config);
    let txid = d.sync_wait(db)["txid"].as_u64().unwrap();
    (conn, d, txid)
}

/// `(level, min, max)` of every LTX file in the file replica at `root`, sorted; names that are
/// not LTX file names are skipped.
pub fn replica_files(root: &Path) -> Vec<(u8, u64, u64)> {
    let mut out = vec![];
    for level in 0..=9u8 {
        let Ok(rd) = std::fs::read_dir(root.join("ltx").join(level.to_string())) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((min, max)) = litestream::ltx::parse_file_name(&name) {
                out.push((level, min.get(), max.get()));
            }
        }
    }
    out.sort();
    out
}

/// The `(min, max)` of the files of `all` (from [`replica_files`]) at `level`, in order.
pub fn at_level(all: &[(u8, u64, u64)], level: u8) -> Vec<(u64, u64)> {
    all.iter()
        .filter(|f| f.0 == level)
        .map(|f| (f.1, f.2))
        .collect()
}

/// The `(min, max)` of the LTX files at `level` of the file replica at `root`, in order.
pub fn level_files(root: &Path, level: u8) -> Vec<(u64, u64)> {
    at_level(&replica_files(root), level)
}

/// A directory of a file replica replaced by a plain file, as a replica that cannot be reached
/// looks to the daemon: `ltx` makes listing fail, `ltx/0` uploads. [`Blocked::unblock`] puts
/// it back as it was.
pub struct Blocked {
    dir: PathBuf,
    aside: PathBuf,
}

impl Blocked {
    /// Moves `dir` aside (to `<dir>.aside`) and writes a file in its place.
    pub fn dir(dir: &Path) -> Blocked {
        let mut aside = dir.as_os_str().to_owned();
        aside.push(".aside");
        let aside = PathBuf::from(aside);
        std::fs::rename(dir, &aside).unwrap();
        std::fs::write(dir, b"not a directory").unwrap();
        Blocked {
            dir: dir.to_path_buf(),
            aside,
        }
    }

    /// Removes the file and moves the directory back.
    pub fn unblock(self) {
        std::fs::remove_file(&self.dir).unwrap();
        std::fs::rename(&self.aside, &self.dir).unwrap();
    }
}

/// The JSON body `{"path": db}` of `/sync`, `/stop` and `/start`.
pub fn path_body(db: &Path) -> String {
    format!(r#"{{"path":"{}"}}"#, db.display())
}
