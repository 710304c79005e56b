//! A database replicating to a file replica, and what the control socket says of it: the
//! one-database fixture, and the `/list` and `/txid` lookups the tests share.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
        let dir = TestDir::new();
        let db = dir.path("app.db");
        let replica = dir.path("replica");
        let config = write_config(dir.dir.path(), &[(&db, &file_url(&replica))], "", "");
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
}
