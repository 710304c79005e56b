//! `litestream replicate`: the daemon. Starts a thread per database, the uploader pool, the
//! control socket, and waits for SIGTERM/SIGINT or the `-exec` child; then syncs once more
//! (bounded by `shutdown-sync-timeout`) and exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use crossbeam_channel::{bounded, select, Receiver};

use crate::compact::Schedule;
use crate::config::{Config, ConfigWarning, DbConfig, LogLevel, ReplicaConfig};
use crate::daemon::{self, Daemon};
use crate::db::DbCommand;
use crate::directory::DirectoryMonitor;
use crate::ipc::handlers::{Ctx, LongRequests};
use crate::ipc::server::{self, Listener};
use crate::restore;
use crate::store::Store;

#[derive(FromArgs)]
/// Runs the daemon that replicates the databases of the config file, or DB_PATH to REPLICA_URL.
#[argh(subcommand, name = "replicate")]
pub struct Args {
    /// configuration file (default: $LITESTREAM_CONFIG or /etc/litestream.yml)
    #[argh(option)]
    config: Option<PathBuf>,
    /// run this command (through sh -c) and exit when it exits, with its exit code
    #[argh(option)]
    exec: Option<String>,
    /// sync every database and its replica once, then exit (not with -exec)
    #[argh(switch)]
    once: bool,
    /// log level: trace, debug, info, warn, error (default: from the config, else info)
    #[argh(option)]
    log_level: Option<String>,
    /// do not expand $VAR and ${VAR} in the configuration file
    #[argh(switch)]
    no_expand_env: bool,
    /// restore a database from its replica first when the file does not exist
    #[argh(switch)]
    restore_if_db_not_exists: bool,
    /// DB_PATH REPLICA_URL (instead of a config file)
    #[argh(positional, greedy, arg_name = "DB_PATH REPLICA_URL")]
    args: Vec<String>,
}

/// How the daemon was asked to stop.
enum Stop {
    Signal(i32),
    ChildExited(Option<i32>),
}

/// Builds the configuration from the flags: the file, or one database from the arguments;
/// with the file's warnings, printed once the logger exists.
fn load(args: &Args) -> Result<(Config, Vec<ConfigWarning>)> {
    match args.args.as_slice() {
        [] => super::load_config_with_warnings(args.config.as_deref(), args.no_expand_env),
        [db] => bail!("must specify at least one replica URL for {db}"),
        [db, url] => {
            if args.config.is_some() {
                bail!("cannot specify a replica URL and the -config flag");
            }
            let mut config = Config::default();
            let path = super::absolute(db)?;
            let rc = ReplicaConfig::from_url(url, &config.defaults);
            rc.target().with_context(|| format!("replica {url}"))?;
            let mut db = DbConfig::new(path.clone(), rc);
            db.meta_path = crate::spool::default_meta_dir(&path);
            config.dbs.push(db);
            Ok((config, vec![]))
        }
        _ => bail!("too many arguments: want DB_PATH REPLICA_URL"),
    }
}

/// Runs the daemon until it is told to stop.
pub fn run(args: Args) -> Result<i32> {
    if args.once && args.exec.is_some() {
        bail!("cannot specify -once flag with -exec");
    }
    let (config, warnings) = load(&args)?;
    // Before anything a supervisor could see (the socket): a SIGTERM from then on is a clean
    // shutdown, never the default kill.
    let signals = signal_channel()?;
    let level = match args.log_level.as_deref() {
        Some(l) => LogLevel::parse(l).with_context(|| {
            format!("invalid -log-level {l:?}: want trace, debug, info, warn or error")
        })?,
        None => config.logging.level,
    };
    crate::logging::init(level, config.logging.format, config.logging.stderr);
    // The config's own warnings (unknown or unsupported keys) once there is a log to see them.
    for warning in &warnings {
        warning.log();
    }
    log::info!(version = crate::VERSION; "litestream");
    raise_open_file_limit();
    let exec = args.exec.clone().or_else(|| config.exec.clone());

    if args.restore_if_db_not_exists {
        for db in &config.dbs {
            restore_missing(db)?;
        }
    }

    // `-once` syncs and exits: no compaction (Litestream's `-once` does not compact either).
    let compaction = (!args.once).then(|| Schedule::from_config(&config));
    let store = Store::new(config.upload_concurrency, compaction)?;
    // `-once` exits right after one sync: nobody could use a socket.
    let mut socket_path = if config.socket.enabled && !args.once {
        let p = server::daemon_socket_path(config.socket.path.as_deref());
        if p.is_none() {
            log::warn!(
                dir:% = Path::new(server::DEFAULT_SOCKET).parent().unwrap_or(Path::new("/")).display(),
                reason = "the directory is not writable and XDG_RUNTIME_DIR is not set",
                hint = "set socket.path in the config";
                "control socket disabled"
            );
        }
        p
    } else {
        None
    };
    // Bind before starting anything: a live daemon on the socket is never taken over. On a
    // socket the user chose that is an error; on the default one this daemon replicates
    // without a socket (one daemon per application is common: template units, one-liners).
    let unix_listener = match &socket_path {
        Some(p) => match server::bind_socket(p, config.socket.permissions) {
            Ok(l) => Some(l),
            Err(e) if config.socket.path.is_none() && e.is::<server::SocketInUse>() => {
                log::warn!(
                    socket:% = p.display(),
                    reason = "another litestream daemon serves the default socket; this one replicates without a socket, so list, info, sync, register and events are not available for it",
                    hint = "give each daemon its own socket.path in its config";
                    "control socket disabled"
                );
                socket_path = None;
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    // Written into each database's owner lock, for a second daemon's refusal to name.
    crate::owner::set_socket(socket_path.as_deref());
    let daemon = Arc::new(Daemon::new(
        store,
        config.defaults.clone(),
        socket_path.as_deref().map(daemon::registrations_path_for),
    ));
    for db in &config.dbs {
        if let Err(e) = daemon.add_configured(db) {
            log::error!(db:% = db.path.display(), error = format!("{e:#}"); "database not replicated");
        }
    }
    daemon.restore_registrations();
    let directories = if config.dirs.is_empty() {
        None
    } else {
        Some(DirectoryMonitor::start(
            config.dirs.clone(),
            daemon.clone(),
        )?)
    };
    warn_if_short_of_files(daemon.store.registry().len());

    let long_requests = Arc::new(LongRequests::default());
    let mut listeners = vec![];
    if let (Some(l), Some(p)) = (unix_listener, &socket_path) {
        let ctx = Arc::new(Ctx {
            daemon: daemon.clone(),
            long_requests: long_requests.clone(),
            control: true,
        });
        listeners.push(Listener::unix(l, p, ctx)?);
        log::info!(path:% = p.display(); "control socket listening");
    }
    if let Some(addr) = config.addr.as_ref().filter(|_| !args.once) {
        let ctx = Arc::new(Ctx {
            daemon: daemon.clone(),
            long_requests,
            control: false,
        });
        let l = match Listener::tcp(addr, ctx) {
            Ok(l) => l,
            Err(e) => {
                // Leave nothing behind: the socket file goes with its listener.
                for l in listeners {
                    l.shutdown();
                }
                daemon.store.shutdown(Duration::ZERO);
                return Err(e);
            }
        };
        let bound = l
            .local_addr()
            .map_or_else(|| addr.clone(), |a| a.to_string());
        log::info!(addr:% = bound; "http server listening");
        listeners.push(l);
    }
    if let (Some(url), false) = (&config.heartbeat_url, args.once) {
        crate::heartbeat::start(
            url.clone(),
            config.heartbeat_interval,
            daemon.store.registry().clone(),
        );
    }
    if !args.once {
        // The socket answers and every configured database is registered: ready.
        crate::notify::notify_logged("READY=1");
        let watched = daemon.clone();
        crate::notify::start_watchdog(move || {
            // Blocks if the registry's lock is stuck, which stops the pings.
            let _ = watched.store.registry().list();
            true
        });
    }

    let code = if args.once {
        once(&daemon, config.shutdown_sync_timeout)
    } else {
        let (child, child_exit) = match &exec {
            Some(cmd) => {
                let (pid, rx) = spawn_exec(cmd)?;
                (Some(pid), rx)
            }
            None => (None, crossbeam_channel::never()),
        };
        let stop = select! {
            recv(signals) -> sig => Stop::Signal(sig.unwrap_or(libc::SIGTERM)),
            recv(child_exit) -> code => Stop::ChildExited(code.ok().flatten()),
        };
        match stop {
            Stop::Signal(sig) => {
                let name = if sig == libc::SIGINT {
                    "interrupt"
                } else {
                    "terminated"
                };
                log::info!(signal = name; "signal received, litestream shutting down");
                if let Some(pid) = child {
                    log::info!(pid; "sending signal to exec process");
                    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
                    unsafe { libc::kill(pid as libc::pid_t, sig) };
                    log::info!("waiting for exec process to close");
                    let _ = child_exit.recv();
                }
                0
            }
            Stop::ChildExited(code) => {
                log::info!(code; "subprocess exited, litestream shutting down");
                code.unwrap_or(1)
            }
        }
    };
    // Stop taking requests, sync and close every database (event streams see the last
    // events), then let the listeners finish: streams end with their final chunk.
    if !args.once {
        crate::notify::notify_logged("STOPPING=1");
    }
    for l in &listeners {
        l.stop_accepting();
    }
    if let Some(d) = directories {
        d.stop();
    }
    daemon.store.shutdown(config.shutdown_sync_timeout);
    for l in listeners {
        l.shutdown();
    }
    log::info!("litestream shut down");
    Ok(code)
}

/// `-restore-if-db-not-exists` for one database.
fn restore_missing(db: &DbConfig) -> Result<()> {
    if db.path.exists() {
        return Ok(());
    }
    log::info!(path:% = db.path.display(); "attempting restore before replication");
    let client = daemon::replica_client(db)?;
    if restore::list_all(client.as_ref())?.is_empty() {
        log::info!(path:% = db.path.display(); "no backup found, starting fresh");
        return Ok(());
    }
    let plan = restore::plan(client.as_ref(), restore::Target::Latest)?;
    let report = restore::apply(client.as_ref(), &plan, &db.path, false)?;
    log::info!(
        path:% = db.path.display(), txid:% = report.txid, checksum:% = report.checksum;
        "restore completed"
    );
    Ok(())
}

/// `-once`: one waited sync of every database; exit 1 if any failed.
fn once(daemon: &Daemon, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout.max(Duration::from_secs(1));
    let mut failed = false;
    for view in daemon.store.registry().list() {
        let Some(ctl) = daemon.store.registry().ctl(&view.path) else {
            continue;
        };
        log::info!(path:% = view.path.display(); "syncing database");
        let (tx, rx) = bounded(1);
        let _ = ctl.send_timeout(
            DbCommand::Sync {
                wait: true,
                reply: tx,
            },
            deadline.saturating_duration_since(Instant::now()),
        );
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(r)) => log::info!(
                path:% = view.path.display(),
                txid:% = r.txid,
                replicated_txid:% = r.replicated_txid;
                "database synced"
            ),
            Ok(Err(e)) => {
                eprintln!("Error: sync {}: {e}", view.path.display());
                failed = true;
            }
            Err(_) => {
                eprintln!(
                    "Error: sync {}: the replica did not confirm within {timeout:?}",
                    view.path.display()
                );
                failed = true;
            }
        }
    }
    log::info!("one-shot replication complete");
    i32::from(failed)
}

/// Starts the `-exec` command; a thread owns it and reports its exit code. Returns its pid
/// (for forwarding signals) and the channel.
fn spawn_exec(cmd: &str) -> Result<(u32, Receiver<Option<i32>>)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .spawn()
        .with_context(|| format!("cannot start exec command {cmd:?}"))?;
    let pid = child.id();
    let (tx, rx) = bounded(1);
    std::thread::Builder::new()
        .name("exec-wait".into())
        .spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code());
            let _ = tx.send(code);
        })?;
    Ok((pid, rx))
}

/// SIGTERM and SIGINT as a channel.
fn signal_channel() -> Result<Receiver<i32>> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .context("install signal handlers")?;
    let (tx, rx) = bounded(4);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Open files one replicated database holds: SQLite's descriptors of the database, its WAL
/// and its index, ours of the database and the index (kept: closing a descriptor would drop
/// SQLite's locks), and the owner lock; more during a pass.
const FILES_PER_DATABASE: u64 = 8;

/// Says once, at start, when the open-file limit cannot hold every database, rather than
/// leaving the user to infer it from "Too many open files" errors of some databases.
fn warn_if_short_of_files(databases: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid resource and a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let need = databases as u64 * FILES_PER_DATABASE + 64;
    if limit.rlim_cur != libc::RLIM_INFINITY && need > limit.rlim_cur {
        log::warn!(
            databases = databases,
            need = need,
            limit = limit.rlim_cur,
            hint = "raise it: LimitNOFILE= in the systemd unit, ulimit -n";
            "the open-file limit cannot hold every database; some will fail with \"Too many open files\""
        );
    }
}

/// Raises the soft limit on open files to the hard limit, as Go programs (Litestream among
/// them) do at start: each database holds several descriptors (its file, WAL and index through
/// two SQLite connections, plus ours), so the common soft limit of 1024 would stop a daemon at
/// about 150 databases while the hard limit allows far more.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            log::debug!(soft_limit = soft; "cannot raise the open file limit");
        }
    }
}
