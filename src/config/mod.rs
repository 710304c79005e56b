//! `litestream.yml`: read the file the way Litestream 0.5.17 reads it, and say more when it is
//! wrong.
//!
//! Litestream parses its config in `cmd/litestream/main.go` (`ParseConfig`): the raw text goes
//! through Go's `os.Expand` (unless `-no-expand-env`), then `gopkg.in/yaml.v2` (YAML 1.1: `0600`
//! is octal, `yes`/`on` are booleans) fills structs whose zero values are replaced by defaults.
//! We keep every key name, default and rule of 0.5.17 for the keys we implement, and do better
//! where it is silent or sloppy:
//!
//! - every error names the file, the line and column, and the key path
//!   (`litestream.yml:7:5: dbs[0].monitor-interval: invalid duration "abc"`);
//! - unknown keys are warnings naming the key and line, not silence; keys that 0.5.17 knows but
//!   this build does not implement yet say so;
//! - zero or negative intervals, impossible socket modes and duplicate databases are errors at
//!   load time, not panics or surprises at run time;
//! - secrets never appear in `Debug` output or in error messages.
//!
//! Pipeline: text → [`expand_env`] → YAML tree with locations (serde-saphyr `Spanned`) → a typed
//! walk over the keys we know ([`Config::parse`]) → [`Config`]. Replica URLs are resolved by
//! [`crate::replica::url`] and [`ReplicaConfig::target`].
//!
//! Files: this one holds the model (the types, defaults, `load` and `parse`); `yaml.rs` the tree
//! with locations and the typed walk over it; `sections.rs` one parser per section;
//! `replica_section.rs` the replica mappings and the replica settings they share with the top
//! level; `directory.rs` `dir:` entries; `env.rs` variable expansion and paths; `error.rs`
//! errors and warnings.

mod directory;
mod env;
mod error;
mod replica_section;
mod sections;
#[cfg(test)]
mod tests;
mod yaml;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::replica::url::{self, clean_path, redact_url, ReplicaTarget, S3Keys, S3UrlParts};

pub use directory::DirConfig;
pub use env::{default_config_path, expand_env, process_env};
pub use error::{ConfigError, ConfigErrorKind, ConfigWarning};

use env::{absolutize, current_dir, default_meta_path, expand_user_path};
use error::{file_error, replica_error};
use replica_section::merge_settings;
use sections::parse_root;
use yaml::{parse_tree, Ctx};

// ---------------------------------------------------------------------------------------------
// Defaults (each checked against the Litestream 0.5.17 source named beside it)
// ---------------------------------------------------------------------------------------------

/// Config file used when neither `-config` nor `$LITESTREAM_CONFIG` is given
/// (cmd/litestream/main_notwindows.go `defaultConfigPath`).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/litestream.yml";
/// Environment variable that overrides [`DEFAULT_CONFIG_PATH`] (main.go `DefaultConfigPath`).
pub const CONFIG_PATH_ENV: &str = "LITESTREAM_CONFIG";
/// Control socket path when `socket.path` is not set (server.go `DefaultSocketConfig`).
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/litestream.sock";
/// Control socket mode when `socket.permissions` is not set (server.go `DefaultSocketConfig`).
pub const DEFAULT_SOCKET_PERMISSIONS: u32 = 0o600;
/// How often a database's WAL is checked (db.go `DefaultMonitorInterval`).
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(1);
/// Time-based PASSIVE checkpoint period; 0 disables it (db.go `DefaultCheckpointInterval`).
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// SQLite busy timeout (db.go `DefaultBusyTimeout`).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// WAL pages before a PASSIVE checkpoint (db.go `DefaultMinCheckpointPageN`).
pub const DEFAULT_MIN_CHECKPOINT_PAGE_COUNT: u32 = 1000;
/// WAL pages before a blocking TRUNCATE checkpoint; 0 disables it (db.go `DefaultTruncatePageN`).
pub const DEFAULT_TRUNCATE_PAGE_N: u32 = 121_359;
/// How often a replica uploads (replica.go `DefaultSyncInterval`).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often a snapshot is taken (main.go `DefaultConfig`, store.go `DefaultSnapshotInterval`).
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// How long snapshots are kept (main.go `DefaultConfig`, store.go `DefaultSnapshotRetention`).
pub const DEFAULT_SNAPSHOT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long L0 files outlive their compaction into L1 (store.go `DefaultL0Retention`).
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(5 * 60);
/// How often L0 retention is enforced (store.go `DefaultL0RetentionCheckInterval`).
pub const DEFAULT_L0_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// `heartbeat-interval` when not set (Litestream's `DefaultHeartbeatInterval`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(300);
/// The shortest `heartbeat-interval` accepted (Litestream's `MinHeartbeatInterval`).
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// How long shutdown keeps retrying the final sync; 0 means no retry
/// (db.go `DefaultShutdownSyncTimeout`).
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between shutdown sync retries (db.go `DefaultShutdownSyncInterval`).
pub const DEFAULT_SHUTDOWN_SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// Intervals of compaction levels L1..L3 (compaction_level.go `DefaultCompactionLevels`).
pub const DEFAULT_COMPACTION_INTERVALS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(5 * 60),
    Duration::from_secs(3600),
];
/// Most compaction levels `levels:` may list: L1..L8, since L9 holds snapshots
/// (compaction_level.go `SnapshotLevel` and `CompactionLevels.Validate`).
pub const MAX_COMPACTION_LEVELS: usize = 8;
/// Uploader threads (ours; Litestream has no such key).
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 4;
/// Suffix of the local state directory `.<db name>-litestream` (litestream.go `MetaDirSuffix`).
pub const META_DIR_SUFFIX: &str = "-litestream";

// ---------------------------------------------------------------------------------------------
// Public configuration types
// ---------------------------------------------------------------------------------------------

/// The whole `litestream.yml`, with defaults filled in and validated. Everything the daemon and
/// the CLI read from the config comes from here.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Databases to replicate (`dbs`), paths absolute and unique.
    pub dbs: Vec<DbConfig>,
    /// Directories whose databases are replicated (`dbs` entries with `dir`).
    pub dirs: Vec<DirConfig>,
    /// Bind address of the metrics/events HTTP listener (`addr`), e.g. `":9090"`.
    pub addr: Option<String>,
    /// Control socket (`socket`).
    pub socket: SocketConfig,
    /// Logging (`logging`).
    pub logging: LoggingConfig,
    /// Replica settings given at the top level (`access-key-id`, `region`, ...). They are already
    /// merged into every database's replica; kept for replicas added later (`/register`).
    pub defaults: ReplicaDefaults,
    /// Command to run while replicating; the daemon exits with it (`exec`).
    pub exec: Option<String>,
    /// How long shutdown retries the final sync (`shutdown-sync-timeout`, 0 = no retry).
    pub shutdown_sync_timeout: Duration,
    /// `heartbeat-url`: an HTTP(S) URL to GET while every database replicates.
    pub heartbeat_url: Option<String>,
    /// `heartbeat-interval` (default 5m, at least 1m, as Litestream).
    pub heartbeat_interval: Duration,
    /// Pause between shutdown sync retries (`shutdown-sync-interval`).
    pub shutdown_sync_interval: Duration,
    /// Snapshot schedule (`snapshot`).
    pub snapshot: SnapshotConfig,
    /// Compaction levels L1.. in order (`levels`); L0 and the snapshot level are implied.
    pub levels: Vec<CompactionLevelConfig>,
    /// How long L0 files outlive their compaction (`l0-retention`).
    pub l0_retention: Duration,
    /// How often L0 retention is enforced (`l0-retention-check-interval`).
    pub l0_retention_check_interval: Duration,
    /// Uploader threads (`upload-concurrency`, ours).
    pub upload_concurrency: usize,
    /// The file this config was loaded from, when it came from [`Config::load`].
    pub config_path: Option<PathBuf>,
}

impl Default for Config {
    /// The configuration of an empty `litestream.yml`.
    fn default() -> Self {
        Config {
            dbs: Vec::new(),
            dirs: Vec::new(),
            addr: None,
            socket: SocketConfig::default(),
            logging: LoggingConfig::default(),
            defaults: ReplicaDefaults::default(),
            exec: None,
            shutdown_sync_timeout: DEFAULT_SHUTDOWN_SYNC_TIMEOUT,
            heartbeat_url: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            shutdown_sync_interval: DEFAULT_SHUTDOWN_SYNC_INTERVAL,
            snapshot: SnapshotConfig::default(),
            levels: DEFAULT_COMPACTION_INTERVALS
                .iter()
                .map(|&interval| CompactionLevelConfig { interval })
                .collect(),
            l0_retention: DEFAULT_L0_RETENTION,
            l0_retention_check_interval: DEFAULT_L0_RETENTION_CHECK_INTERVAL,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            config_path: None,
        }
    }
}

/// The control socket (`socket:`). Unlike Litestream (off unless enabled) ours is on by
/// default, because the seed says the socket exists whenever replication runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// Whether `replicate` serves the socket (`enabled`, default true).
    pub enabled: bool,
    /// Socket path (`path`); `None` means [`DEFAULT_SOCKET_PATH`].
    pub path: Option<PathBuf>,
    /// File mode of the socket (`permissions`, octal, default 0600).
    pub permissions: u32,
}

impl SocketConfig {
    /// The path to bind or connect to: the configured one or [`DEFAULT_SOCKET_PATH`].
    pub fn path_or_default(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH))
    }
}

impl Default for SocketConfig {
    /// Socket on, default path, mode 0600.
    fn default() -> Self {
        SocketConfig {
            enabled: true,
            path: None,
            permissions: DEFAULT_SOCKET_PERMISSIONS,
        }
    }
}

/// Logging settings (`logging:`), applied by the CLI when it sets up the logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoggingConfig {
    /// Minimum level (`level`, default info; `$LOG_LEVEL` overrides it as in Litestream).
    pub level: LogLevel,
    /// Line format (YAML key `type`: `text` or `json`).
    pub format: LogFormat,
    /// Write logs to stderr instead of stdout (`stderr`).
    pub stderr: bool,
}

/// Log levels Litestream accepts (case-insensitive; `warning` means `warn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything, including per-frame detail.
    Trace,
    /// Every sync.
    Debug,
    /// State changes (default).
    #[default]
    Info,
    /// Problems that do not stop replication.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// Parses a level the way Litestream's `InitLog` does; `None` for unknown names.
    pub fn parse(name: &str) -> Option<LogLevel> {
        match name.to_ascii_uppercase().as_str() {
            "TRACE" => Some(LogLevel::Trace),
            "DEBUG" => Some(LogLevel::Debug),
            "INFO" => Some(LogLevel::Info),
            "WARN" | "WARNING" => Some(LogLevel::Warn),
            "ERROR" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// Log line formats (`logging.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `key=value` text lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Snapshot schedule (`snapshot:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Time between snapshots (`interval`, default 24h).
    pub interval: Duration,
    /// How long snapshots are kept (`retention`, default 24h).
    pub retention: Duration,
}

impl Default for SnapshotConfig {
    /// 24h and 24h, as in Litestream.
    fn default() -> Self {
        SnapshotConfig {
            interval: DEFAULT_SNAPSHOT_INTERVAL,
            retention: DEFAULT_SNAPSHOT_RETENTION,
        }
    }
}

/// One compaction level (`levels[i]`): level `i + 1` is compacted every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionLevelConfig {
    /// Compaction period of this level (`interval`).
    pub interval: Duration,
}

/// Replica settings written at the top level of the file; Litestream copies each into every
/// replica that does not set it (main.go `ReplicaSettings.SetDefaults`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ReplicaDefaults {
    /// `region`, `endpoint`, `force-path-style`, `skip-verify` and the credentials.
    pub s3: S3Keys,
    /// `bucket` (not applied to replicas that name their bucket in `url`).
    pub bucket: Option<String>,
    /// `sync-interval`.
    pub sync_interval: Option<Duration>,
}

impl fmt::Debug for ReplicaDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaDefaults")
            .field("s3", &self.s3)
            .field("bucket", &self.bucket)
            .field("sync_interval", &self.sync_interval)
            .finish()
    }
}

/// One database to replicate (`dbs[i]`), every setting resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct DbConfig {
    /// Absolute database path: `~` expanded, `sqlite://` stripped, relative paths resolved
    /// against the working directory (Litestream's `filepath.Abs`), cleaned.
    pub path: PathBuf,
    /// Local state directory (`meta-path`, default `<dir>/.<name>-litestream`), absolute.
    pub meta_path: PathBuf,
    /// WAL polling period (`monitor-interval`, default 1s).
    pub monitor_interval: Duration,
    /// Time-based PASSIVE checkpoint period (`checkpoint-interval`, default 1m, 0 = off).
    pub checkpoint_interval: Duration,
    /// SQLite busy timeout (`busy-timeout`, default 1s).
    pub busy_timeout: Duration,
    /// WAL pages before a PASSIVE checkpoint (`min-checkpoint-page-count`, default 1000).
    pub min_checkpoint_page_count: u32,
    /// WAL pages before a TRUNCATE checkpoint (`truncate-page-n`, default 121359, 0 = off).
    pub truncate_page_n: u32,
    /// The replica (`replica`).
    pub replica: Option<ReplicaConfig>,
    /// Legacy list form (`replicas`); 0.5 accepts at most one entry and never both forms.
    pub replicas: Vec<ReplicaConfig>,
    /// The database's role in this daemon (`follow`, `follow-interval`, `lease`, `lease-ttl`).
    pub role: RoleConfig,
}

/// Whether this daemon writes a database's replica or follows it, and how the replica's lease
/// is used. Flat keys on the database entry, as Litestream's other per-database settings and
/// as `restore -f -follow-interval`: a follower needs every setting of the replica section a
/// primary has, and promotion makes that same replica the one it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleConfig {
    /// `follow: true`: keep the database a copy of the replica instead of replicating it.
    pub follow: bool,
    /// `follow-interval` (default 1s): how often a follower lists the replica.
    pub follow_interval: Duration,
    /// `lease: true`: as a primary, hold the replica's lease (`lock.json`) while writing it.
    pub lease: bool,
    /// `lease-ttl` (default 30s): how long a lease lasts unless renewed.
    pub lease_ttl: Duration,
}

impl Default for RoleConfig {
    fn default() -> RoleConfig {
        RoleConfig {
            follow: false,
            follow_interval: crate::follow::DEFAULT_INTERVAL,
            lease: false,
            lease_ttl: crate::replica::lease::DEFAULT_TTL,
        }
    }
}

impl DbConfig {
    /// A database with every default, for databases added at run time (`/register`).
    pub fn new(path: PathBuf, replica: ReplicaConfig) -> DbConfig {
        DbConfig {
            meta_path: default_meta_path(&path),
            path,
            monitor_interval: DEFAULT_MONITOR_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            min_checkpoint_page_count: DEFAULT_MIN_CHECKPOINT_PAGE_COUNT,
            truncate_page_n: DEFAULT_TRUNCATE_PAGE_N,
            replica: Some(replica),
            replicas: Vec::new(),
            role: RoleConfig::default(),
        }
    }

    /// The one replica of this database, whichever form the file used. Always `Some` for a
    /// config that passed [`Config::parse`].
    pub fn active_replica(&self) -> Option<&ReplicaConfig> {
        self.replica.as_ref().or(self.replicas.first())
    }
}

/// A replica as written in the file (`replica:`), global defaults already merged in.
/// [`ReplicaConfig::target`] turns it into where the bytes go.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `url`, e.g. `s3://bucket/prefix?endpoint=...` or `file:///backups/app`.
    pub url: Option<String>,
    /// `type` (`file`, `s3`, ...); the URL scheme wins when both are given, as in Litestream.
    pub replica_type: Option<String>,
    /// `path`: the directory of a file replica (absolute after loading) or the S3 key prefix.
    pub path: Option<String>,
    /// `bucket`.
    pub bucket: Option<String>,
    /// `region`, `endpoint`, `force-path-style`, `skip-verify` and the credentials.
    pub s3: S3Keys,
    /// `sync-interval` (default 1s).
    pub sync_interval: Duration,
}

impl Default for ReplicaConfig {
    /// Nothing set, sync every second.
    fn default() -> Self {
        ReplicaConfig {
            url: None,
            replica_type: None,
            path: None,
            bucket: None,
            s3: S3Keys::default(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
        }
    }
}

impl fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("replica_type", &self.replica_type)
            .field("path", &self.path)
            .field("bucket", &self.bucket)
            .field("s3", &self.s3)
            .field("sync_interval", &self.sync_interval)
            .finish()
    }
}

impl Config {
    /// Reads and parses the config file at `path` (`~` expanded), logging each warning with
    /// `log::warn!`. A missing file is [`ConfigErrorKind::NotFound`].
    pub fn load(path: &Path, expand_env: bool) -> Result<Config, ConfigError> {
        let (config, warnings) = Config::load_with_warnings(path, expand_env)?;
        for warning in &warnings {
            warning.log();
        }
        Ok(config)
    }

    /// Like [`Config::load`] but hands the warnings back, for callers that print them before
    /// the logger exists.
    pub fn load_with_warnings(
        path: &Path,
        expand_env: bool,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let source_name = path.display().to_string();
        let resolved = expand_user_path(&source_name, &process_env)
            .map_err(|message| file_error(ConfigErrorKind::Io, &source_name, message))?;
        let text = std::fs::read_to_string(&resolved).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => file_error(
                ConfigErrorKind::NotFound,
                &source_name,
                "config file not found",
            ),
            _ => file_error(
                ConfigErrorKind::Io,
                &source_name,
                format!("cannot read config file: {e}"),
            ),
        })?;
        let (mut config, warnings) = Config::parse(&text, &source_name, expand_env, process_env)?;
        let cwd = current_dir(&source_name)?;
        config.config_path = Some(absolutize(&resolved, &cwd));
        Ok((config, warnings))
    }

    /// Parses config text. `source_name` names it in messages; `expand_env` applies
    /// [`expand_env`] first; `env` supplies variables for expansion, `HOME` for `~` and
    /// `LOG_LEVEL` (which overrides `logging.level`, as in Litestream). Relative paths resolve
    /// against the working directory, as Litestream's `filepath.Abs` does.
    pub fn parse(
        text: &str,
        source_name: &str,
        expand_env: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let expanded;
        let text = if expand_env {
            expanded = self::expand_env(text, &env);
            expanded.as_str()
        } else {
            text
        };
        let root = parse_tree(text, source_name)?;
        let mut ctx = Ctx {
            source: source_name,
            env: &env,
            cwd: current_dir(source_name)?,
            warnings: Vec::new(),
        };
        let mut config = parse_root(&mut ctx, &root)?;
        if let Some(level) = env("LOG_LEVEL").filter(|v| !v.is_empty()) {
            config.logging.level = LogLevel::parse(&level).unwrap_or_default();
        }
        let mut warnings = ctx.warnings;
        warnings.sort_by_key(|w| (w.line, w.column));
        Ok((config, warnings))
    }

    /// The entry of the database at `path`: listed with `path:`, or one a `dir:` entry would
    /// take (under its directory, matching its pattern, whether or not the file exists yet),
    /// so `restore` and `ltx` work for databases of replicated directories too.
    pub fn db(&self, path: &Path) -> Option<Cow<'_, DbConfig>> {
        if let Some(db) = self.dbs.iter().find(|db| db.path == path) {
            return Some(Cow::Borrowed(db));
        }
        self.dirs
            .iter()
            .find(|d| d.covers(path))
            .map(|d| Cow::Owned(d.entry(path)))
    }
}

impl ReplicaConfig {
    /// A replica for `url` with the file's top-level settings applied, as a replica written in
    /// the config would get them: for databases registered at run time (`/register`).
    pub fn from_url(url: &str, defaults: &ReplicaDefaults) -> ReplicaConfig {
        let mut rc = ReplicaConfig {
            url: Some(url.to_string()),
            ..ReplicaConfig::default()
        };
        merge_settings(&mut rc, ReplicaDefaults::default(), defaults);
        rc
    }

    /// The replica type as Litestream decides it (main.go `ReplicaType`): the URL scheme if the
    /// URL has one, else `type`, else `file`.
    pub fn type_name(&self) -> String {
        if let Some(scheme) = self.url.as_deref().and_then(url::url_scheme) {
            return if scheme == "webdavs" {
                "webdav".to_string()
            } else {
                scheme
            };
        }
        match self.replica_type.as_deref() {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => "file".to_string(),
        }
    }

    /// Resolves where this replica writes, merging `url` with the explicit keys: explicit
    /// `region`, `endpoint`, `force-path-style` and `skip-verify` win over the URL's; `url`
    /// together with `path` or `bucket` is an error, as in Litestream.
    pub fn target(&self) -> Result<ReplicaTarget, ConfigError> {
        let url = self.url.as_deref().filter(|u| !u.is_empty());
        match self.type_name().as_str() {
            "file" => self.file_target(url),
            "s3" => self.s3_target(url),
            other => Err(url::unsupported_type(other).into()),
        }
    }

    /// `file` replicas: a URL or a `path`, absolute.
    fn file_target(&self, url: Option<&str>) -> Result<ReplicaTarget, ConfigError> {
        let path = self.path.as_deref().filter(|p| !p.is_empty());
        let root = match (url, path) {
            (Some(_), Some(_)) => {
                return Err(replica_error("cannot specify url & path for file replica"))
            }
            (Some(url), None) => return Ok(url::parse_replica_url(url)?),
            (None, Some(path)) => PathBuf::from(path),
            (None, None) => return Err(replica_error("file replica path required")),
        };
        if !root.is_absolute() {
            return Err(replica_error(format!(
                "file replica path must be absolute: {}",
                root.display()
            )));
        }
        Ok(ReplicaTarget::File {
            root: clean_path(&root),
        })
    }

    /// `s3` replicas: URL parts, then explicit keys on top.
    fn s3_target(&self, url: Option<&str>) -> Result<ReplicaTarget, ConfigError> {
        let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if url.is_some() && has(&self.path) {
            return Err(replica_error("cannot specify url & path for s3 replica"));
        }
        if url.is_some() && has(&self.bucket) {
            return Err(replica_error("cannot specify url & bucket for s3 replica"));
        }
        let parts = match url {
            Some(url) => S3UrlParts::from_url(url)?,
            None => S3UrlParts::from_keys(
                self.bucket.as_deref().unwrap_or(""),
                self.path.as_deref().unwrap_or(""),
            ),
        };
        Ok(ReplicaTarget::S3(parts.finish(&self.s3)?))
    }
}
