//! The running daemon as the control socket sees it: the store plus what `/register` needs
//! (defaults for new databases) and the file that keeps runtime registrations across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{DbConfig, ReplicaConfig, ReplicaDefaults};
use crate::db::{DbCommand, DbOptions};
use crate::durable;
use crate::ltx::TxId;
use crate::registry::{FileId, Registry};
use crate::replica::url::ReplicaTarget;
use crate::replica::{self, ReplicaClient};
use crate::store::{Added, DbSpec, Store};

/// How long `/unregister` waits for the database's last sync and uploads by default.
pub const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a registration was refused.
pub enum RegisterError {
    /// The request is wrong (HTTP 400): message and details.
    BadRequest(String, String),
    /// The database's file is replicated already under another path (HTTP 409): message and
    /// details.
    Conflict(String, String),
    /// Something failed on our side (HTTP 500).
    Internal(anyhow::Error),
}

/// The daemon's shared state for IPC handlers.
pub struct Daemon {
    pub store: Store,
    /// Top-level replica settings applied to URLs given to `/register`.
    pub replica_defaults: ReplicaDefaults,
    /// Where runtime registrations are kept (`None`: not persisted).
    pub registrations_path: Option<PathBuf>,
    /// Writes the registrations file (when there is one).
    saver: Option<Saver>,
}

/// One persisted runtime registration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub path: PathBuf,
    pub replica_url: String,
}

#[derive(Serialize, Deserialize, Default)]
struct RegistrationFile {
    databases: Vec<Registration>,
}

/// The options a database thread runs with, from its config entry.
pub fn db_options(db: &DbConfig) -> DbOptions {
    DbOptions {
        path: db.path.clone(),
        meta_dir: db.meta_path.clone(),
        monitor_interval: db.monitor_interval,
        checkpoint_interval: db.checkpoint_interval,
        busy_timeout: db.busy_timeout,
        min_checkpoint_page_count: u64::from(db.min_checkpoint_page_count),
        truncate_page_n: if db.truncate_page_n == 0 {
            u64::MAX
        } else {
            u64::from(db.truncate_page_n)
        },
    }
}

/// How a replica is shown to users: its URL, or one built from `type`/`path`.
pub fn replica_display_url(rc: &ReplicaConfig) -> String {
    if let Some(u) = rc.url.as_deref().filter(|u| !u.is_empty()) {
        return u.to_string();
    }
    match rc.target() {
        Ok(ReplicaTarget::File { root }) => format!("file://{}", root.display()),
        Ok(ReplicaTarget::S3(s3)) => format!("s3://{}/{}", s3.bucket, s3.path),
        Err(_) => rc.type_name(),
    }
}

/// How the store runs a database entry: its role, replica and lease.
pub fn db_spec(db: &DbConfig) -> Result<DbSpec> {
    let (url, target) = replica_target(db)?;
    let client = replica::open_client(&url, &target)?;
    let leaser = replica::lease::open(&url, &target)?.with_ttl(db.role.lease_ttl);
    Ok(DbSpec {
        opts: db_options(db),
        replica: client,
        leaser: Arc::new(leaser),
        hold_lease: db.role.lease,
        follow_interval: db.role.follow.then_some(db.role.follow_interval),
    })
}

/// A database entry's replica: its URL as shown to users, and where it writes.
fn replica_target(db: &DbConfig) -> Result<(String, ReplicaTarget)> {
    let rc = db
        .active_replica()
        .with_context(|| format!("{}: no replica configured", db.path.display()))?;
    let url = replica_display_url(rc);
    let target = rc
        .target()
        .with_context(|| format!("{}: replica {url}", db.path.display()))?;
    Ok((url, target))
}

/// Opens the replica client of a database entry.
pub fn replica_client(db: &DbConfig) -> Result<Arc<dyn ReplicaClient>> {
    let (url, target) = replica_target(db)?;
    replica::open_client(&url, &target)
}

/// Where `/unregister` left a database.
#[derive(Debug)]
pub struct Unregistered {
    /// Its last TXID.
    pub txid: TxId,
    /// The newest TXID its replica confirmed (below `txid` when the final sync could not
    /// reach the replica in time).
    pub replicated_txid: TxId,
    /// Its local state, where unconfirmed files stay.
    pub meta_dir: PathBuf,
}

impl Daemon {
    /// Wraps a store.
    pub fn new(
        store: Store,
        replica_defaults: ReplicaDefaults,
        registrations_path: Option<PathBuf>,
    ) -> Daemon {
        let saver = registrations_path
            .clone()
            .and_then(|path| match Saver::start(path, store.registry().clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::error!(error:% = e; "cannot start the registrations writer; registrations will not survive a restart");
                    None
                }
            });
        Daemon {
            store,
            replica_defaults,
            registrations_path,
            saver,
        }
    }

    /// Starts replicating a configured database.
    pub fn add_configured(&self, db: &DbConfig) -> Result<Added> {
        match self.store.add(db_spec(db)?, false)? {
            Added::SameFileAs(other) => anyhow::bail!(
                "{}: the same database file as {} (configured twice)",
                db.path.display(),
                other.display()
            ),
            added => Ok(added),
        }
    }

    /// `/register`: validates the path and URL, starts the database, persists the registration.
    pub fn register(&self, path: &Path, url: &str) -> Result<Added, RegisterError> {
        // Registered already: the same replica is a no-op, another one is refused (silently
        // keeping the old URL would hide that the new one is not used).
        if let Some(current) = self.store.registry().get(path).map(|v| v.replica_url) {
            if current != url && current != crate::replica::url::redact_url(url) {
                return Err(RegisterError::Conflict(
                    "database already registered".into(),
                    format!(
                        "{} replicates to {current}; unregister it first to change its replica",
                        path.display()
                    ),
                ));
            }
            return Ok(Added::AlreadyRegistered);
        }
        let bad = |why: String| {
            Err(RegisterError::BadRequest(
                "invalid database".into(),
                format!("{}: {why}", path.display()),
            ))
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return bad("not a regular file".into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return bad("database file does not exist".into())
            }
            Err(e) => return bad(e.to_string()),
        }
        // Before anything opens the file: if it is one we replicate (another path to it), a
        // descriptor opened and closed here would drop SQLite's locks on it in this process.
        let same_file = |other: &Path| {
            RegisterError::Conflict(
                "database already registered".into(),
                format!(
                    "{} is the same file as {}, which is already replicated",
                    path.display(),
                    other.display()
                ),
            )
        };
        match FileId::of(path) {
            Ok(Some(id)) => {
                if let Some(other) = self.store.registry().path_of_file(id) {
                    return Err(same_file(&other));
                }
            }
            Ok(None) => return bad("database file does not exist".into()),
            Err(e) => return bad(e.to_string()),
        }
        match crate::sqlite::read_db_header(path) {
            Ok(_) => {}
            Err(e) => {
                return Err(RegisterError::BadRequest(
                    "invalid database".into(),
                    format!("{}: {e}", path.display()),
                ))
            }
        }
        let rc = ReplicaConfig::from_url(url, &self.replica_defaults);
        let target = rc
            .target()
            .map_err(|e| RegisterError::BadRequest("invalid replica url".into(), e.to_string()))?;
        let client = replica::open_client(url, &target).map_err(|e| {
            RegisterError::BadRequest("invalid replica url".into(), format!("{e:#}"))
        })?;
        let leaser = replica::lease::open(url, &target).map_err(|e| {
            RegisterError::BadRequest("invalid replica url".into(), format!("{e:#}"))
        })?;
        let db = DbConfig::new(path.to_path_buf(), rc);
        let spec = DbSpec::primary(db_options(&db), client, Arc::new(leaser));
        let added = self
            .store
            .add(spec, true)
            .map_err(RegisterError::Internal)?;
        if let Added::SameFileAs(other) = &added {
            return Err(same_file(other));
        }
        self.save_registrations().map_err(RegisterError::Internal)?;
        log::info!(db:% = path.display(), replica:% = url; "registered");
        Ok(added)
    }

    /// `/unregister`: a last sync whose uploads are waited for (bounded by `timeout`), then
    /// forget the database. Returns where it ended, `None` if it was not registered.
    pub fn unregister(&self, path: &Path, timeout: Duration) -> Result<Option<Unregistered>> {
        let deadline = Instant::now() + timeout;
        // No lock is held here: a slow replica holds up this request only.
        let synced = self.final_sync(path, timeout);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some((view, txid)) = self.store.remove(path, remaining) else {
            return Ok(None);
        };
        let txid = synced.map_or(txid, |s| s.max(txid));
        // The waited sync answers once the replica confirmed its TXID.
        let replicated_txid = synced.map_or(view.replicated_txid, |s| s.max(view.replicated_txid));
        self.save_registrations()?;
        if replicated_txid < txid {
            log::warn!(
                db:% = path.display(),
                txid:% = txid,
                replica:% = view.replica_url,
                replicated_txid:% = replicated_txid,
                meta_path:% = view.meta_dir.display();
                "unregistered with transactions not yet replicated; they stay in the meta path"
            );
        } else {
            log::info!(db:% = path.display(), txid:% = txid; "unregistered");
        }
        Ok(Some(Unregistered {
            txid,
            replicated_txid,
            meta_dir: view.meta_dir,
        }))
    }

    /// A waited sync of a database about to be removed; its TXID, if it completed in time.
    fn final_sync(&self, path: &Path, timeout: Duration) -> Option<TxId> {
        let ctl = self.store.registry().ctl(path)?;
        let (tx, rx) = bounded(1);
        ctl.send_timeout(
            DbCommand::Sync {
                wait: true,
                reply: tx,
            },
            timeout,
        )
        .ok()?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(r)) => Some(r.txid),
            Ok(Err(e)) => {
                log::warn!(db:% = path.display(), error:% = e; "final sync before unregister failed");
                None
            }
            Err(_) => {
                log::warn!(
                    db:% = path.display(), timeout:? = timeout;
                    "final sync before unregister did not finish in time"
                );
                None
            }
        }
    }

    /// Writes the runtime registrations file (after `/register`, `/unregister`) and waits
    /// until a write that includes this change is durable.
    pub fn save_registrations(&self) -> Result<()> {
        match &self.saver {
            Some(saver) => saver.save(),
            None => Ok(()),
        }
    }

    /// Re-registers what the registrations file lists (skipping paths the config has).
    pub fn restore_registrations(&self) {
        let Some(path) = &self.registrations_path else {
            return;
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                log::error!(path:% = path.display(), error:% = e; "cannot read the registrations file");
                return;
            }
        };
        let file: RegistrationFile = match serde_json::from_slice(&text) {
            Ok(f) => f,
            Err(e) => {
                log::error!(
                    path:% = path.display(), error:% = e;
                    "registrations file is not valid JSON; ignoring it"
                );
                return;
            }
        };
        for r in file.databases {
            if self.store.registry().contains(&r.path) {
                continue;
            }
            match self.register(&r.path, &r.replica_url) {
                Ok(_) => {}
                Err(RegisterError::BadRequest(m, d)) | Err(RegisterError::Conflict(m, d)) => {
                    log::error!(
                        db:% = r.path.display(), error = format!("{m}: {d}");
                        "cannot restore registration"
                    )
                }
                Err(RegisterError::Internal(e)) => log::error!(
                    db:% = r.path.display(), error = format!("{e:#}");
                    "cannot restore registration"
                ),
            }
        }
    }
}

/// The registrations file that goes with a socket path.
pub fn registrations_path_for(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".registrations.json");
    PathBuf::from(s)
}

/// The one thread that writes the registrations file, so that no lock is held across its
/// I/O and writes never interleave: each change asks for a save and waits for the write that
/// includes it (changes that arrive while a write runs share the next one).
struct Saver {
    requests: Sender<Sender<Result<(), String>>>,
}

impl Saver {
    fn start(path: PathBuf, registry: Arc<Registry>) -> std::io::Result<Saver> {
        let (requests, rx) = bounded::<Sender<Result<(), String>>>(1024);
        std::thread::Builder::new()
            .name("registrations".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let waiting: Vec<_> = std::iter::once(first).chain(rx.try_iter()).collect();
                    let result =
                        write_registrations(&path, &registry).map_err(|e| format!("{e:#}"));
                    for w in waiting {
                        let _ = w.send(result.clone());
                    }
                }
            })?;
        Ok(Saver { requests })
    }

    fn save(&self) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.requests
            .send(tx)
            .map_err(|_| anyhow::anyhow!("the registrations writer has stopped"))?;
        match rx.recv() {
            Ok(result) => result.map_err(|e| anyhow::anyhow!(e)),
            Err(_) => anyhow::bail!("the registrations writer has stopped"),
        }
    }
}

/// Writes what `/register` added (the databases not from the config) to `path`, durably.
fn write_registrations(path: &Path, registry: &Registry) -> Result<()> {
    let databases = registry
        .list()
        .into_iter()
        .filter(|v| v.dynamic)
        .map(|v| Registration {
            path: v.path,
            replica_url: v.replica_url,
        })
        .collect();
    let text = serde_json::to_vec_pretty(&RegistrationFile { databases })?;
    durable::write_file(path, |w| std::io::Write::write_all(w, &text))
        .with_context(|| format!("save registrations to {}", path.display()))
}
