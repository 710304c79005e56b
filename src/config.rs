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

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::duration;
use crate::replica::url::{
    self, clean_path, redact, redact_url, ReplicaTarget, S3Keys, S3UrlParts, UrlError,
};

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

/// Top-level keys Litestream 0.5.17 knows and this build ignores (with a warning).
const TOP_LEVEL_NOT_YET: &[&str] = &[
    "mcp-addr",
    "validation",
    "verify-compaction",
    "retention",
    "heartbeat-url",
    "heartbeat-interval",
];
/// Keys of Litestream's `ReplicaSettings` (valid globally and per replica) not implemented here.
const REPLICA_SETTINGS_NOT_YET: &[&str] = &[
    "validation-interval",
    "max-sync-ltx-files",
    "auto-recover",
    "sign-payload",
    "sign-accept-encoding",
    "require-content-md5",
    "storage-class",
    "part-size",
    "concurrency",
    "sse-customer-algorithm",
    "sse-customer-key",
    "sse-customer-key-path",
    "sse-kms-key-id",
    "account-name",
    "account-key",
    "sas-token",
    "host",
    "user",
    "password",
    "key-path",
    "concurrent-writes",
    "host-key",
    "webdav-url",
    "webdav-username",
    "webdav-password",
    "jwt",
    "seed",
    "creds",
    "nkey",
    "username",
    "token",
    "tls",
    "root-cas",
    "client-cert",
    "client-key",
    "max-reconnects",
    "reconnect-wait",
    "timeout",
];
/// Per-database keys Litestream 0.5.17 knows and this build ignores (with a warning).
const DB_NOT_YET: &[&str] = &[
    "dir",
    "pattern",
    "recursive",
    "watch",
    "meta-dir",
    "max-sync-wal-bytes",
    "restore-if-db-not-exists",
];
/// Logging keys Litestream 0.5.17 knows and this build ignores.
const LOGGING_NOT_YET: &[&str] = &["source"];
/// Key names whose values are credentials: never echoed in messages.
const SECRET_KEYS: &[&str] = &[
    "access-key-id",
    "secret-access-key",
    "password",
    "account-key",
    "sas-token",
    "sse-customer-key",
    "webdav-password",
    "token",
    "seed",
    "nkey",
    "jwt",
    "client-key",
];

// ---------------------------------------------------------------------------------------------
// Errors and warnings
// ---------------------------------------------------------------------------------------------

/// What went wrong, so callers can pick an exit code or a fallback (e.g. a missing default
/// config file) without matching on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The config file does not exist.
    NotFound,
    /// The config file could not be read.
    Io,
    /// The text is not valid YAML.
    Syntax,
    /// A key holds the wrong kind of value (a list where a string belongs, a bad duration...).
    Type,
    /// Values are well-formed but not acceptable (zero interval, duplicate database...).
    Invalid,
    /// A replica URL or replica description cannot be used.
    Replica,
}

/// A config problem with everything a user needs to fix it: file, line, column, key, message.
/// Messages never contain credential values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Category of the failure.
    pub kind: ConfigErrorKind,
    /// File name (or other source name) the config came from, if any.
    pub source_name: Option<String>,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<u64>,
    /// 1-based column of the offending key or value, when known.
    pub column: Option<u64>,
    /// Key path such as `dbs[0].replica.url`, when the error belongs to a key.
    pub key: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl ConfigError {
    /// An error without location, used for replica URLs given outside a config file.
    fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            source_name: None,
            line: None,
            column: None,
            key: None,
            message: message.into(),
        }
    }

    /// Attaches a file, location and key unless the error already carries them.
    fn located(mut self, source: &str, at: &Node, key: &str) -> Self {
        self.source_name.get_or_insert_with(|| source.to_string());
        if self.line.is_none() {
            self.line = Some(at.line);
            self.column = Some(at.column);
        }
        if self.key.is_none() && !key.is_empty() {
            self.key = Some(key.to_string());
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = &self.source_name {
            match (self.line, self.column) {
                (Some(line), Some(column)) => write!(f, "{source}:{line}:{column}: ")?,
                (Some(line), None) => write!(f, "{source}:{line}: ")?,
                _ => write!(f, "{source}: ")?,
            }
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Something in the config that does not stop loading but that the user should see:
/// an unknown key, a key this build ignores, a duplicate key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// File name (or other source name) the config came from.
    pub source_name: String,
    /// 1-based line of the key.
    pub line: u64,
    /// 1-based column of the key.
    pub column: u64,
    /// Key path such as `dbs[0].replica.storage-class`.
    pub key: String,
    /// The whole message, naming the key (e.g. `unknown key "dbz" (ignored)`).
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source_name, self.line, self.column, self.message
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Public configuration types
// ---------------------------------------------------------------------------------------------

/// The whole `litestream.yml`, with defaults filled in and validated. Everything the daemon and
/// the CLI read from the config comes from here.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Databases to replicate (`dbs`), paths absolute and unique.
    pub dbs: Vec<DbConfig>,
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
            addr: None,
            socket: SocketConfig::default(),
            logging: LoggingConfig::default(),
            defaults: ReplicaDefaults::default(),
            exec: None,
            shutdown_sync_timeout: DEFAULT_SHUTDOWN_SYNC_TIMEOUT,
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
    /// `access-key-id`.
    pub access_key_id: Option<String>,
    /// `secret-access-key`.
    pub secret_access_key: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// `bucket` (not applied to replicas that name their bucket in `url`).
    pub bucket: Option<String>,
    /// `endpoint`.
    pub endpoint: Option<String>,
    /// `force-path-style`.
    pub force_path_style: Option<bool>,
    /// `skip-verify`.
    pub skip_verify: Option<bool>,
    /// `sync-interval`.
    pub sync_interval: Option<Duration>,
}

impl fmt::Debug for ReplicaDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaDefaults")
            .field("access_key_id", &redact(&self.access_key_id))
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
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
    /// `region`.
    pub region: Option<String>,
    /// `endpoint`.
    pub endpoint: Option<String>,
    /// `force-path-style`.
    pub force_path_style: Option<bool>,
    /// `skip-verify` (skip TLS certificate checks).
    pub skip_verify: Option<bool>,
    /// `access-key-id`.
    pub access_key_id: Option<String>,
    /// `secret-access-key`.
    pub secret_access_key: Option<String>,
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
            region: None,
            endpoint: None,
            force_path_style: None,
            skip_verify: None,
            access_key_id: None,
            secret_access_key: None,
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
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("access_key_id", &redact(&self.access_key_id))
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("sync_interval", &self.sync_interval)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Public functions
// ---------------------------------------------------------------------------------------------

/// The config path to use when `-config` is not given: `$LITESTREAM_CONFIG` if set and not
/// empty, else `/etc/litestream.yml` (main.go `DefaultConfigPath`).
pub fn default_config_path(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    env(CONFIG_PATH_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from)
}

/// The process environment as Litestream's expansion sees it: `$PID` is this process's id
/// (main.go `ParseConfig`), everything else comes from `std::env`.
pub fn process_env(name: &str) -> Option<String> {
    if name == "PID" {
        return Some(std::process::id().to_string());
    }
    std::env::var(name).ok()
}

/// Expands `$VAR` and `${VAR}` exactly like Go's `os.Expand`, which Litestream applies to the
/// raw config text: undefined variables become empty; `$` followed by a shell special character
/// (`$$`, `$1`, `$@`, `$-`, ...) expands that one-character variable; `${}` and an unclosed `${`
/// are dropped; `$` before anything else (or at the end) stays as is. `${A:-x}` is not shell
/// syntax here: it looks up a variable literally named `A:-x`.
pub fn expand_env(text: &str, env: impl Fn(&str) -> Option<String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0; // bytes[..copied] are already in `out`
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[copied..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                Some(name) => out.push_str(&env(name).unwrap_or_default()),
                None if width == 0 => out.push('$'),
                None => {} // bad syntax: the characters are eaten, as in Go
            }
            j += width;
            copied = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[copied.min(text.len())..]);
    out
}

impl Config {
    /// Reads and parses the config file at `path` (`~` expanded), logging each warning with
    /// `log::warn!`. A missing file is [`ConfigErrorKind::NotFound`].
    pub fn load(path: &Path, expand_env: bool) -> Result<Config, ConfigError> {
        let (config, warnings) = Config::load_with_warnings(path, expand_env)?;
        for warning in &warnings {
            log::warn!("{warning}");
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

    /// The database whose configured path is `path`, if any.
    pub fn db(&self, path: &Path) -> Option<&DbConfig> {
        self.dbs.iter().find(|db| db.path == path)
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
        let keys = S3Keys {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            force_path_style: self.force_path_style,
            skip_verify: self.skip_verify,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        };
        Ok(ReplicaTarget::S3(parts.finish(keys)?))
    }
}

// ---------------------------------------------------------------------------------------------
// YAML tree with locations
// ---------------------------------------------------------------------------------------------

/// A YAML value as serde-saphyr infers it, each node with its source location.
#[derive(Debug)]
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float,
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

/// Serde visitor that keeps whatever YAML holds; types are checked later, per key.
struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        // Only values beyond i128 fail here; they are far outside any config range anyway.
        Ok(i128::try_from(v).map_or(Raw::Float, Raw::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Raw, E> {
        Ok(Raw::Float)
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            pairs.push((key, value));
        }
        Ok(Raw::Map(pairs))
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// A located YAML node. `text` is the source spelling of scalars, so a string key that YAML
/// resolved to a number or boolean (`bucket: 123`, `path: yes`) keeps its spelling, as yaml.v2
/// does for string fields.
#[derive(Debug)]
struct Node {
    kind: Kind,
    line: u64,
    column: u64,
    text: String,
}

#[derive(Debug)]
enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    /// A float; only its spelling (`Node::text`) is ever used.
    Float,
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Converts serde-saphyr's spanned value, slicing scalar spellings out of `src`.
    fn from_spanned(spanned: Spanned<Raw>, src: &str) -> Node {
        let at = spanned.referenced;
        let span = spanned.defined.span(); // for aliases: the anchored scalar's own spelling
        let text = match (span.byte_offset(), span.byte_len()) {
            (Some(off), Some(len)) => usize::try_from(off)
                .ok()
                .zip(usize::try_from(off + len).ok())
                .and_then(|(a, b)| src.get(a..b))
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        };
        let kind = match spanned.value {
            Raw::Null => Kind::Null,
            Raw::Bool(b) => Kind::Bool(b),
            Raw::Int(i) => Kind::Int(i),
            Raw::Float => Kind::Float,
            Raw::Str(s) => Kind::Str(s),
            Raw::Seq(items) => Kind::Seq(
                items
                    .into_iter()
                    .map(|n| Node::from_spanned(n, src))
                    .collect(),
            ),
            Raw::Map(pairs) => Kind::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (Node::from_spanned(k, src), Node::from_spanned(v, src)))
                    .collect(),
            ),
        };
        Node {
            kind,
            line: at.line(),
            column: at.column(),
            text,
        }
    }

    /// The key as a string: its text for strings, its spelling otherwise.
    fn key_name(&self) -> String {
        match &self.kind {
            Kind::Str(s) => s.clone(),
            _ => self.text.clone(),
        }
    }

    /// "a sequence", `string "abc"`, ... for messages; values of secret keys are not shown.
    fn describe(&self, secret: bool) -> String {
        let kind = match &self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a sequence",
            Kind::Map(_) => "a mapping",
        };
        match &self.kind {
            Kind::Str(s) if !secret => format!("string {}", quote(s)),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float if !secret => {
                format!("{kind} ({})", self.text)
            }
            _ => kind.to_string(),
        }
    }
}

/// Parses YAML text into a located tree. YAML 1.1 octal (`0600`) is honoured, as in yaml.v2;
/// duplicate keys reach us so we can warn about them.
fn parse_tree(text: &str, source: &str) -> Result<Node, ConfigError> {
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(Node::from_spanned(raw, text)),
        Err(e) => Err(syntax_error(&e, source)),
    }
}

/// A YAML syntax error as `file:line:col: yaml: <message>`, without the source snippet (which
/// could show a secret).
fn syntax_error(e: &serde_saphyr::Error, source: &str) -> ConfigError {
    let mut message = e.without_snippet().to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    let location = e.location();
    ConfigError {
        kind: ConfigErrorKind::Syntax,
        source_name: Some(source.to_string()),
        line: location.map(|l| l.line()),
        column: location.map(|l| l.column()),
        key: None,
        message: format!("yaml: {message}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Typed walk over the tree
// ---------------------------------------------------------------------------------------------

/// State of one parse: where messages point, how to look up `HOME`, collected warnings.
struct Ctx<'a> {
    source: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    cwd: PathBuf,
    warnings: Vec<ConfigWarning>,
}

impl Ctx<'_> {
    /// An error located at `at`, belonging to `key`.
    fn error(
        &self,
        kind: ConfigErrorKind,
        at: &Node,
        key: &str,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(kind, msg).located(self.source, at, key)
    }

    /// Records a warning located at `at`.
    fn warn(&mut self, at: &Node, key: &str, message: String) {
        self.warnings.push(ConfigWarning {
            source_name: self.source.to_string(),
            line: at.line,
            column: at.column,
            key: key.to_string(),
            message,
        });
    }

    /// `~` expansion and absolutizing against the working directory, as Litestream's `expand`.
    fn resolve_path(&self, text: &str) -> Result<PathBuf, String> {
        Ok(absolutize(&expand_user_path(text, self.env)?, &self.cwd))
    }
}

/// A key and its value, with the dotted path used in messages.
struct Field<'n> {
    path: String,
    key: &'n Node,
    value: &'n Node,
}

impl<'n> Field<'n> {
    /// An error about this key, pointing at the key.
    fn error(&self, ctx: &Ctx, kind: ConfigErrorKind, msg: impl Into<String>) -> ConfigError {
        ctx.error(kind, self.key, &self.path, msg)
    }

    /// "expected X, found Y", never showing a secret value.
    fn type_error(&self, ctx: &Ctx, expected: &str) -> ConfigError {
        let found = self.value.describe(is_secret_key(&self.path));
        self.error(
            ctx,
            ConfigErrorKind::Type,
            format!("expected {expected}, found {found}"),
        )
    }

    /// A string; `None` for null or empty (Litestream treats "" as unset). Numbers and
    /// booleans keep their spelling, as yaml.v2 does for string fields.
    fn string(&self, ctx: &Ctx) -> Result<Option<String>, ConfigError> {
        match &self.value.kind {
            Kind::Null => Ok(None),
            Kind::Str(s) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
            Kind::Bool(_) | Kind::Int(_) | Kind::Float => Ok(Some(self.value.text.clone())),
            _ => Err(self.type_error(ctx, "a string")),
        }
    }

    /// A boolean (`true`/`false`, or YAML 1.1 `yes`/`no`/`on`/`off`); `None` for null.
    fn bool(&self, ctx: &Ctx) -> Result<Option<bool>, ConfigError> {
        match self.value.kind {
            Kind::Null => Ok(None),
            Kind::Bool(b) => Ok(Some(b)),
            _ => Err(self.type_error(ctx, "true or false")),
        }
    }

    /// A whole number in `T`'s range; `None` for null.
    fn int<T: TryFrom<i128>>(&self, ctx: &Ctx) -> Result<Option<T>, ConfigError> {
        match self.value.kind {
            Kind::Null => Ok(None),
            Kind::Int(i) => T::try_from(i).map(Some).map_err(|_| {
                self.error(
                    ctx,
                    ConfigErrorKind::Invalid,
                    format!("{i} is out of range"),
                )
            }),
            _ => Err(self.type_error(ctx, "an integer")),
        }
    }

    /// A Go-syntax duration as signed nanoseconds; `None` for null. A bare `0` is accepted;
    /// other bare numbers need a unit (Litestream would read them as nanoseconds).
    fn duration(&self, ctx: &Ctx) -> Result<Option<i64>, ConfigError> {
        match &self.value.kind {
            Kind::Null => Ok(None),
            Kind::Int(0) => Ok(Some(0)),
            Kind::Str(s) => duration::parse_nanos(s).map(Some).ok_or_else(|| {
                self.error(
                    ctx,
                    ConfigErrorKind::Type,
                    format!("invalid duration {}", quote(s)),
                )
            }),
            Kind::Int(i) => Err(self.error(
                ctx,
                ConfigErrorKind::Type,
                format!("invalid duration {i}: a unit is required, e.g. \"{i}s\""),
            )),
            _ => Err(self.type_error(ctx, "a duration such as \"1s\" or \"5m\"")),
        }
    }

    /// A duration that must be greater than zero.
    fn positive_duration(&self, ctx: &Ctx) -> Result<Option<Duration>, ConfigError> {
        self.bounded_duration(ctx, false)
    }

    /// A duration that may be zero (meaning "off") but not negative.
    fn non_negative_duration(&self, ctx: &Ctx) -> Result<Option<Duration>, ConfigError> {
        self.bounded_duration(ctx, true)
    }

    fn bounded_duration(&self, ctx: &Ctx, zero_ok: bool) -> Result<Option<Duration>, ConfigError> {
        let Some(nanos) = self.duration(ctx)? else {
            return Ok(None);
        };
        if nanos > 0 || (zero_ok && nanos == 0) {
            return Ok(Some(Duration::from_nanos(nanos.unsigned_abs())));
        }
        let rule = if zero_ok {
            "must be >= 0"
        } else {
            "must be greater than 0"
        };
        Err(self.error(
            ctx,
            ConfigErrorKind::Invalid,
            format!("{rule} (got {})", duration::format_nanos(nanos)),
        ))
    }

    /// The items of a sequence; empty for null.
    fn seq(&self, ctx: &Ctx, expected: &str) -> Result<&'n [Node], ConfigError> {
        match &self.value.kind {
            Kind::Null => Ok(&[]),
            Kind::Seq(items) => Ok(items),
            _ => Err(self.type_error(ctx, expected)),
        }
    }

    /// The value as a mapping to read keys from.
    fn map(&self, ctx: &mut Ctx) -> Result<MapView<'n>, ConfigError> {
        MapView::new(ctx, self.value, self.key, &self.path)
    }
}

/// The entries of one YAML mapping; keys are taken by name, and whatever is left at
/// [`MapView::finish`] becomes a warning.
struct MapView<'n> {
    path: String,
    entries: Vec<(String, &'n Node, &'n Node, bool)>,
}

impl<'n> MapView<'n> {
    /// Views `node` (a mapping, or null for an empty one) whose key path is `path`; a wrong
    /// type is reported at `at` (the key, or the node itself for list items and the root).
    /// Repeated keys warn; the last one wins, as in yaml.v2.
    fn new(
        ctx: &mut Ctx,
        node: &'n Node,
        at: &Node,
        path: &str,
    ) -> Result<MapView<'n>, ConfigError> {
        let pairs: &'n [(Node, Node)] = match &node.kind {
            Kind::Map(pairs) => pairs,
            Kind::Null => &[],
            _ => {
                let expected = if path.is_empty() {
                    "a mapping of keys at the top level"
                } else {
                    "a mapping of keys"
                };
                let found = node.describe(false);
                let msg = format!("expected {expected}, found {found}");
                return Err(ctx.error(ConfigErrorKind::Type, at, path, msg));
            }
        };
        let mut entries: Vec<(String, &'n Node, &'n Node, bool)> = Vec::new();
        for (key, value) in pairs {
            let name = key.key_name();
            if let Some(first) = entries.iter().find(|e| e.0 == name) {
                let msg = format!(
                    "duplicate key {} (first set on line {}); the last value wins",
                    quote(&child_path(path, &name)),
                    first.1.line
                );
                ctx.warn(key, &child_path(path, &name), msg);
            }
            entries.push((name, key, value, false));
        }
        Ok(MapView {
            path: path.to_string(),
            entries,
        })
    }

    /// Takes key `name` (its last occurrence), marking it as read.
    fn take(&mut self, name: &str) -> Option<Field<'n>> {
        let mut found = None;
        for entry in self.entries.iter_mut().filter(|e| e.0 == name) {
            entry.3 = true;
            found = Some((entry.1, entry.2));
        }
        found.map(|(key, value)| Field {
            path: child_path(&self.path, name),
            key,
            value,
        })
    }

    /// Whether key `name` is present (without taking it).
    fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.0 == name)
    }

    /// Warns about every key not taken: "not supported yet" for keys in `not_yet`,
    /// "unknown" for the rest.
    fn finish(self, ctx: &mut Ctx, not_yet: &[&[&str]]) {
        for (name, key, _, used) in self.entries {
            if used {
                continue;
            }
            let path = child_path(&self.path, &name);
            let known = not_yet.iter().any(|list| list.contains(&name.as_str()));
            let message = if known {
                format!("key {} is not supported yet (ignored)", quote(&path))
            } else {
                format!("unknown key {} (ignored)", quote(&path))
            };
            ctx.warn(key, &path, message);
        }
    }
}

/// `a.b` for nested keys, `b` at the top level.
fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// Whether the last segment of a key path names a credential.
fn is_secret_key(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    SECRET_KEYS.contains(&last)
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

/// The top-level mapping.
fn parse_root(ctx: &mut Ctx, root: &Node) -> Result<Config, ConfigError> {
    let mut m = MapView::new(ctx, root, root, "")?;
    let mut config = Config {
        defaults: parse_replica_settings(ctx, &mut m)?,
        ..Config::default()
    };
    reject_age(ctx, &mut m)?;
    if let Some(f) = m.take("addr") {
        config.addr = f.string(ctx)?;
    }
    if let Some(f) = m.take("exec") {
        config.exec = f.string(ctx)?;
    }
    if let Some(f) = m.take("socket") {
        config.socket = parse_socket(ctx, &f)?;
    }
    if let Some(f) = m.take("logging") {
        config.logging = parse_logging(ctx, &f)?;
    }
    parse_schedules(ctx, &mut m, &mut config)?;
    let snapshot_set = take_snapshot(ctx, &mut m, &mut config.snapshot)?;
    if let Some(f) = m.take("dbs") {
        let db_snapshots = parse_dbs(ctx, &f, &config.defaults, &mut config.dbs)?;
        fold_db_snapshots(ctx, db_snapshots, snapshot_set, &mut config.snapshot)?;
    }
    m.finish(ctx, &[TOP_LEVEL_NOT_YET, REPLICA_SETTINGS_NOT_YET]);
    Ok(config)
}

/// Top-level timing keys: levels, L0 retention, shutdown sync, upload concurrency.
fn parse_schedules(ctx: &mut Ctx, m: &mut MapView, config: &mut Config) -> Result<(), ConfigError> {
    if let Some(f) = m.take("levels") {
        config.levels = parse_levels(ctx, &f)?;
    }
    if let Some(v) = take_positive(ctx, m, "l0-retention")? {
        config.l0_retention = v;
    }
    if let Some(v) = take_positive(ctx, m, "l0-retention-check-interval")? {
        config.l0_retention_check_interval = v;
    }
    if let Some(f) = m.take("shutdown-sync-timeout") {
        if let Some(v) = f.non_negative_duration(ctx)? {
            config.shutdown_sync_timeout = v;
        }
    }
    if let Some(v) = take_positive(ctx, m, "shutdown-sync-interval")? {
        config.shutdown_sync_interval = v;
    }
    if let Some(f) = m.take("upload-concurrency") {
        if let Some(n) = f.int::<usize>(ctx)? {
            if !(1..=1024).contains(&n) {
                return Err(f.error(
                    ctx,
                    ConfigErrorKind::Invalid,
                    format!("must be between 1 and 1024 (got {n})"),
                ));
            }
            config.upload_concurrency = n;
        }
    }
    Ok(())
}

/// Takes key `name` as a duration that must be greater than zero.
fn take_positive(
    ctx: &mut Ctx,
    m: &mut MapView,
    name: &str,
) -> Result<Option<Duration>, ConfigError> {
    match m.take(name) {
        Some(f) => f.positive_duration(ctx),
        None => Ok(None),
    }
}

/// `socket:`; a null section keeps the defaults (yaml.v2 would zero them).
fn parse_socket(ctx: &mut Ctx, f: &Field) -> Result<SocketConfig, ConfigError> {
    let mut m = f.map(ctx)?;
    let mut socket = SocketConfig::default();
    if let Some(f) = m.take("enabled") {
        socket.enabled = f.bool(ctx)?.unwrap_or(socket.enabled);
    }
    if let Some(f) = m.take("path") {
        socket.path = f.string(ctx)?.map(PathBuf::from);
    }
    if let Some(f) = m.take("permissions") {
        if let Some(mode) = parse_permissions(ctx, &f)? {
            socket.permissions = mode;
        }
    }
    m.finish(ctx, &[]);
    Ok(socket)
}

/// `socket.permissions`: an octal mode 0..=0777 written `0600`, `0o600`, `"0600"` or as a
/// decimal number (384). A decimal that looks like octal (`400`) is read as YAML says but warned.
fn parse_permissions(ctx: &mut Ctx, f: &Field) -> Result<Option<u32>, ConfigError> {
    let mode = match &f.value.kind {
        Kind::Null => return Ok(None),
        Kind::Int(i) => u32::try_from(*i).ok(),
        Kind::Str(s) => parse_octal(s),
        _ => return Err(f.type_error(ctx, "an octal file mode such as 0600")),
    };
    let Some(mode) = mode.filter(|m| *m <= 0o777) else {
        let shown = match &f.value.kind {
            Kind::Str(s) => quote(s),
            _ => f.value.text.clone(),
        };
        return Err(f.error(
            ctx,
            ConfigErrorKind::Invalid,
            format!("invalid permissions {shown}: must be an octal file mode between 0000 and 0777, e.g. 0600"),
        ));
    };
    let text = f.value.text.as_str();
    let decimal_looks_octal = matches!(f.value.kind, Kind::Int(_))
        && mode > 7
        && !text.starts_with('0')
        && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if decimal_looks_octal {
        let msg = format!(
            "permissions {text} is a decimal number (octal {mode:04o}); write 0{text} if you meant octal"
        );
        ctx.warn(f.key, &f.path, format!("{}: {msg}", f.path));
    }
    Ok(Some(mode))
}

/// Parses `0600`, `600`, `0o600` as octal.
fn parse_octal(s: &str) -> Option<u32> {
    let digits = s
        .strip_prefix("0o")
        .or_else(|| s.strip_prefix("0O"))
        .unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// `logging:`. An unknown level falls back to info with a warning (Litestream: silently);
/// an unknown type is an error (Litestream: a nil-handler panic).
fn parse_logging(ctx: &mut Ctx, f: &Field) -> Result<LoggingConfig, ConfigError> {
    let mut m = f.map(ctx)?;
    let mut logging = LoggingConfig::default();
    if let Some(f) = m.take("level") {
        if let Some(name) = f.string(ctx)? {
            logging.level = LogLevel::parse(&name).unwrap_or_else(|| {
                let msg = format!("{}: unknown level {} (using info)", f.path, quote(&name));
                ctx.warn(f.key, &f.path, msg);
                LogLevel::Info
            });
        }
    }
    if let Some(f) = m.take("type") {
        logging.format = match f.string(ctx)?.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some("pretty") => {
                let msg = format!("{}: \"pretty\" is not supported yet (using text)", f.path);
                ctx.warn(f.key, &f.path, msg);
                LogFormat::Text
            }
            Some(other) => {
                return Err(f.error(
                    ctx,
                    ConfigErrorKind::Invalid,
                    format!(
                        "unknown log type {} (expected \"text\" or \"json\")",
                        quote(other)
                    ),
                ))
            }
        };
    }
    if let Some(f) = m.take("stderr") {
        logging.stderr = f.bool(ctx)?.unwrap_or(false);
    }
    m.finish(ctx, &[LOGGING_NOT_YET]);
    Ok(logging)
}

/// `levels:`: a list of `{interval}`. Null keeps the defaults; `[]` means L0 only.
fn parse_levels(ctx: &mut Ctx, f: &Field) -> Result<Vec<CompactionLevelConfig>, ConfigError> {
    if matches!(f.value.kind, Kind::Null) {
        return Ok(Config::default().levels);
    }
    let items = f.seq(ctx, "a sequence of levels such as [{interval: 30s}]")?;
    if items.len() > MAX_COMPACTION_LEVELS {
        return Err(f.error(
            ctx,
            ConfigErrorKind::Invalid,
            format!(
                "at most {MAX_COMPACTION_LEVELS} levels (L1..L8) can be listed, got {}",
                items.len()
            ),
        ));
    }
    let mut levels = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", f.path);
        let mut m = MapView::new(ctx, item, item, &path)?;
        let interval = match m.take("interval") {
            Some(f) => f.positive_duration(ctx)?,
            None => None,
        };
        let Some(interval) = interval else {
            return Err(ctx.error(
                ConfigErrorKind::Invalid,
                item,
                &path,
                "missing required key \"interval\"",
            ));
        };
        m.finish(ctx, &[]);
        levels.push(CompactionLevelConfig { interval });
    }
    Ok(levels)
}

/// `snapshot:` into `snapshot`; returns which of interval/retention the file set.
fn take_snapshot(
    ctx: &mut Ctx,
    m: &mut MapView,
    snapshot: &mut SnapshotConfig,
) -> Result<(bool, bool), ConfigError> {
    let Some(f) = m.take("snapshot") else {
        return Ok((false, false));
    };
    let parsed = parse_snapshot_section(ctx, &f)?;
    if let Some(v) = &parsed.interval {
        snapshot.interval = v.value;
    }
    if let Some(v) = &parsed.retention {
        snapshot.retention = v.value;
    }
    Ok((parsed.interval.is_some(), parsed.retention.is_some()))
}

/// A value with the place it was written, for checks that compare several entries.
struct Located<T> {
    value: T,
    line: u64,
    column: u64,
    key: String,
}

impl<T> Located<T> {
    fn at(value: T, f: &Field) -> Located<T> {
        Located {
            value,
            line: f.key.line,
            column: f.key.column,
            key: f.path.clone(),
        }
    }

    /// An error pointing at where this value was written.
    fn error(&self, ctx: &Ctx, msg: impl Into<String>) -> ConfigError {
        ConfigError {
            kind: ConfigErrorKind::Invalid,
            source_name: Some(ctx.source.to_string()),
            line: Some(self.line),
            column: Some(self.column),
            key: Some(self.key.clone()),
            message: msg.into(),
        }
    }
}

/// A `snapshot:` section as written (top level or per database).
#[derive(Default)]
struct SnapshotSection {
    interval: Option<Located<Duration>>,
    retention: Option<Located<Duration>>,
}

fn parse_snapshot_section(ctx: &mut Ctx, f: &Field) -> Result<SnapshotSection, ConfigError> {
    let mut m = f.map(ctx)?;
    let mut section = SnapshotSection::default();
    if let Some(f) = m.take("interval") {
        section.interval = f.positive_duration(ctx)?.map(|v| Located::at(v, &f));
    }
    if let Some(f) = m.take("retention") {
        section.retention = f.positive_duration(ctx)?.map(|v| Located::at(v, &f));
    }
    m.finish(ctx, &[]);
    Ok(section)
}

/// Per-database `snapshot:` values apply globally when the top level does not set them, and
/// must agree with each other (main.go `applyDBSnapshotConfig`). Where the top level wins we
/// warn instead of ignoring silently.
fn fold_db_snapshots(
    ctx: &mut Ctx,
    sections: Vec<SnapshotSection>,
    (interval_set, retention_set): (bool, bool),
    snapshot: &mut SnapshotConfig,
) -> Result<(), ConfigError> {
    let intervals = sections
        .iter()
        .filter_map(|s| s.interval.as_ref())
        .collect();
    let retentions = sections
        .iter()
        .filter_map(|s| s.retention.as_ref())
        .collect();
    if let Some(v) = fold_one(ctx, intervals, interval_set, "snapshot.interval")? {
        snapshot.interval = v;
    }
    if let Some(v) = fold_one(ctx, retentions, retention_set, "snapshot.retention")? {
        snapshot.retention = v;
    }
    Ok(())
}

fn fold_one(
    ctx: &mut Ctx,
    values: Vec<&Located<Duration>>,
    global_set: bool,
    global_key: &str,
) -> Result<Option<Duration>, ConfigError> {
    let mut chosen: Option<&Located<Duration>> = None;
    for v in values {
        if global_set {
            let msg = format!(
                "{}: ignored because the top-level {global_key} is set",
                v.key
            );
            ctx.warnings.push(ConfigWarning {
                source_name: ctx.source.to_string(),
                line: v.line,
                column: v.column,
                key: v.key.clone(),
                message: msg,
            });
            continue;
        }
        match chosen {
            Some(first) if first.value != v.value => {
                return Err(v.error(
                    ctx,
                    format!(
                        "conflicting database snapshot settings: {} is {} but {} is {}",
                        first.key,
                        duration::format(first.value),
                        v.key,
                        duration::format(v.value)
                    ),
                ));
            }
            _ => chosen = Some(v),
        }
    }
    Ok(chosen.map(|v| v.value))
}

/// `dbs:`; returns each database's `snapshot:` section for [`fold_db_snapshots`].
fn parse_dbs(
    ctx: &mut Ctx,
    f: &Field,
    defaults: &ReplicaDefaults,
    dbs: &mut Vec<DbConfig>,
) -> Result<Vec<SnapshotSection>, ConfigError> {
    let items = f.seq(ctx, "a sequence of databases (\"- path: ...\")")?;
    let mut seen: Vec<Located<PathBuf>> = Vec::new();
    let mut snapshots = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("dbs[{i}]");
        let (db, located_path, snapshot) = parse_db(ctx, item, &path, defaults)?;
        if let Some(first) = seen.iter().find(|p| p.value == db.path) {
            return Err(located_path.error(
                ctx,
                format!(
                    "duplicate database path \"{}\" (already used by {} on line {}); each database can be listed only once",
                    db.path.display(),
                    first.key,
                    first.line
                ),
            ));
        }
        if let Some(other) = dbs.iter().position(|d| d.meta_path == db.meta_path) {
            return Err(located_path.error(
                ctx,
                format!(
                    "meta-path \"{}\" is also used by dbs[{other}]; two databases cannot share local state",
                    db.meta_path.display()
                ),
            ));
        }
        seen.push(located_path);
        snapshots.push(snapshot);
        dbs.push(db);
    }
    Ok(snapshots)
}

/// One `dbs[i]` entry.
fn parse_db(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    defaults: &ReplicaDefaults,
) -> Result<(DbConfig, Located<PathBuf>, SnapshotSection), ConfigError> {
    let mut m = MapView::new(ctx, node, node, path)?;
    let db_path = take_db_path(ctx, &mut m, node, path)?;
    let mut db = DbConfig::new(db_path.value.clone(), ReplicaConfig::default());
    db.replica = None;
    if let Some(f) = m.take("meta-path") {
        if let Some(text) = f.string(ctx)? {
            db.meta_path = ctx
                .resolve_path(&text)
                .map_err(|e| f.error(ctx, ConfigErrorKind::Invalid, e))?;
        }
    }
    parse_db_timings(ctx, &mut m, &mut db)?;
    let snapshot = match m.take("snapshot") {
        Some(f) => parse_snapshot_section(ctx, &f)?,
        None => SnapshotSection::default(),
    };
    parse_db_replicas(ctx, &mut m, node, path, defaults, &mut db)?;
    m.finish(ctx, &[DB_NOT_YET]);
    Ok((db, db_path, snapshot))
}

/// `dbs[i].path`: required, expanded and absolute.
fn take_db_path(
    ctx: &mut Ctx,
    m: &mut MapView,
    node: &Node,
    path: &str,
) -> Result<Located<PathBuf>, ConfigError> {
    let Some(f) = m.take("path") else {
        let msg = if m.has("dir") {
            "directory replication ('dir') is not supported yet; list each database with 'path'"
        } else {
            "missing required key \"path\""
        };
        return Err(ctx.error(ConfigErrorKind::Invalid, node, path, msg));
    };
    let Some(text) = f.string(ctx)? else {
        return Err(f.error(ctx, ConfigErrorKind::Invalid, "must not be empty"));
    };
    let resolved = ctx
        .resolve_path(strip_sqlite_prefix(&text))
        .map_err(|e| f.error(ctx, ConfigErrorKind::Invalid, e))?;
    Ok(Located::at(resolved, &f))
}

/// The per-database checkpoint and polling settings.
fn parse_db_timings(ctx: &mut Ctx, m: &mut MapView, db: &mut DbConfig) -> Result<(), ConfigError> {
    if let Some(v) = take_positive(ctx, m, "monitor-interval")? {
        db.monitor_interval = v;
    }
    if let Some(f) = m.take("checkpoint-interval") {
        db.checkpoint_interval = f
            .non_negative_duration(ctx)?
            .unwrap_or(db.checkpoint_interval);
    }
    if let Some(f) = m.take("busy-timeout") {
        db.busy_timeout = f.non_negative_duration(ctx)?.unwrap_or(db.busy_timeout);
    }
    let min = m.take("min-checkpoint-page-count");
    if let Some(f) = &min {
        db.min_checkpoint_page_count = f.int::<u32>(ctx)?.unwrap_or(db.min_checkpoint_page_count);
        if db.min_checkpoint_page_count == 0 {
            return Err(f.error(
                ctx,
                ConfigErrorKind::Invalid,
                "must be greater than 0 (got 0)",
            ));
        }
    }
    let truncate = m.take("truncate-page-n");
    if let Some(f) = &truncate {
        db.truncate_page_n = f.int::<u32>(ctx)?.unwrap_or(db.truncate_page_n);
    }
    // The defaults are consistent, so a conflict always comes from a key that is present.
    let conflict = db.truncate_page_n > 0 && db.min_checkpoint_page_count > db.truncate_page_n;
    if let Some(at) = min.as_ref().or(truncate.as_ref()).filter(|_| conflict) {
        return Err(at.error(
            ctx,
            ConfigErrorKind::Invalid,
            format!(
                "min-checkpoint-page-count ({}) must not exceed truncate-page-n ({}); set truncate-page-n to 0 to disable truncation",
                db.min_checkpoint_page_count, db.truncate_page_n
            ),
        ));
    }
    Ok(())
}

/// `replica` / legacy `replicas`: exactly one replica in total (main.go `NewDBFromConfig`).
fn parse_db_replicas(
    ctx: &mut Ctx,
    m: &mut MapView,
    node: &Node,
    path: &str,
    defaults: &ReplicaDefaults,
    db: &mut DbConfig,
) -> Result<(), ConfigError> {
    let replica_field = m.take("replica");
    if let Some(f) = &replica_field {
        if !matches!(f.value.kind, Kind::Null) {
            db.replica = Some(parse_replica(ctx, f.value, f.key, &f.path, defaults)?);
        }
    }
    if let Some(f) = m.take("replicas") {
        for (i, item) in f.seq(ctx, "a sequence of replicas")?.iter().enumerate() {
            let item_path = format!("{}[{i}]", f.path);
            if i == 1 {
                return Err(ctx.error(
                    ConfigErrorKind::Invalid,
                    item,
                    &item_path,
                    "multiple replicas on a single database are no longer supported (Litestream 0.5 keeps one replica per database)",
                ));
            }
            db.replicas
                .push(parse_replica(ctx, item, item, &item_path, defaults)?);
        }
        if db.replica.is_some() && !db.replicas.is_empty() {
            return Err(f.error(
                ctx,
                ConfigErrorKind::Invalid,
                "cannot specify 'replica' and 'replicas' on a database",
            ));
        }
    }
    if db.active_replica().is_none() {
        return Err(ctx.error(
            ConfigErrorKind::Invalid,
            node,
            path,
            "must specify replica for database",
        ));
    }
    Ok(())
}

/// One replica mapping, global defaults merged, checked by resolving its target.
fn parse_replica(
    ctx: &mut Ctx,
    node: &Node,
    at: &Node,
    path: &str,
    defaults: &ReplicaDefaults,
) -> Result<ReplicaConfig, ConfigError> {
    let mut m = MapView::new(ctx, node, at, path)?;
    let own = parse_replica_settings(ctx, &mut m)?;
    reject_age(ctx, &mut m)?;
    let mut rc = ReplicaConfig::default();
    let url_field = m.take("url");
    if let Some(f) = &url_field {
        rc.url = f.string(ctx)?;
    }
    if let Some(f) = m.take("type") {
        rc.replica_type = f.string(ctx)?;
    }
    let path_field = m.take("path");
    if let Some(f) = &path_field {
        rc.path = f.string(ctx)?;
        if rc.path.as_deref().is_some_and(url::is_url) {
            return Err(f.error(
                ctx,
                ConfigErrorKind::Replica,
                "replica path cannot be a url, please use the 'url' field instead",
            ));
        }
    }
    if let Some(f) = m.take("name") {
        let msg = format!("key {} is deprecated (ignored)", quote(&f.path));
        ctx.warn(f.key, &f.path, msg);
    }
    merge_settings(&mut rc, own, defaults);
    if rc.type_name() == "file" {
        if let (Some(text), Some(f)) = (rc.path.clone(), &path_field) {
            let resolved = ctx
                .resolve_path(&text)
                .map_err(|e| f.error(ctx, ConfigErrorKind::Invalid, e))?;
            rc.path = Some(resolved.to_string_lossy().into_owned());
        }
    }
    if let Err(e) = rc.target() {
        // Point at `url` when there is one: most replica errors are about it.
        let (at, key) = match &url_field {
            Some(f) if rc.url.is_some() => (f.key, f.path.as_str()),
            _ => (at, path),
        };
        return Err(e.located(ctx.source, at, key));
    }
    m.finish(ctx, &[REPLICA_SETTINGS_NOT_YET]);
    Ok(rc)
}

/// Replica settings valid both at the top level and in a replica (main.go `ReplicaSettings`).
fn parse_replica_settings(ctx: &mut Ctx, m: &mut MapView) -> Result<ReplicaDefaults, ConfigError> {
    let mut s = ReplicaDefaults::default();
    let strings: [(&str, &mut Option<String>); 5] = [
        ("access-key-id", &mut s.access_key_id),
        ("secret-access-key", &mut s.secret_access_key),
        ("region", &mut s.region),
        ("bucket", &mut s.bucket),
        ("endpoint", &mut s.endpoint),
    ];
    for (name, slot) in strings {
        if let Some(f) = m.take(name) {
            *slot = f.string(ctx)?;
        }
    }
    if let Some(f) = m.take("force-path-style") {
        s.force_path_style = f.bool(ctx)?;
    }
    if let Some(f) = m.take("skip-verify") {
        s.skip_verify = f.bool(ctx)?;
    }
    if let Some(f) = m.take("sync-interval") {
        s.sync_interval = f.positive_duration(ctx)?;
    }
    Ok(s)
}

/// Litestream refuses `age` encryption settings (it would upload plaintext); so do we. An
/// empty `age:` section is only ignored.
fn reject_age(ctx: &mut Ctx, m: &mut MapView) -> Result<(), ConfigError> {
    let Some(f) = m.take("age") else {
        return Ok(());
    };
    let configured = match &f.value.kind {
        Kind::Map(pairs) => pairs.iter().any(|(_, v)| {
            !matches!(&v.kind, Kind::Null) && !matches!(&v.kind, Kind::Seq(s) if s.is_empty())
        }),
        Kind::Null => false,
        _ => true,
    };
    if configured {
        return Err(f.error(
            ctx,
            ConfigErrorKind::Invalid,
            "age encryption is not currently supported, if you need encryption please revert back to Litestream v0.3.x",
        ));
    }
    let msg = format!("key {} is not supported yet (ignored)", quote(&f.path));
    ctx.warn(f.key, &f.path, msg);
    Ok(())
}

/// Replica's own settings first, then the top-level ones. A top-level `bucket` is not applied
/// to a replica with a `url` (Litestream would then fail with "cannot specify url & bucket").
fn merge_settings(rc: &mut ReplicaConfig, own: ReplicaDefaults, defaults: &ReplicaDefaults) {
    let has_url = rc.url.is_some();
    rc.access_key_id = own.access_key_id.or_else(|| defaults.access_key_id.clone());
    rc.secret_access_key = own
        .secret_access_key
        .or_else(|| defaults.secret_access_key.clone());
    rc.region = own.region.or_else(|| defaults.region.clone());
    rc.bucket = own
        .bucket
        .or_else(|| defaults.bucket.clone().filter(|_| !has_url));
    rc.endpoint = own.endpoint.or_else(|| defaults.endpoint.clone());
    rc.force_path_style = own.force_path_style.or(defaults.force_path_style);
    rc.skip_verify = own.skip_verify.or(defaults.skip_verify);
    rc.sync_interval = own
        .sync_interval
        .or(defaults.sync_interval)
        .unwrap_or(DEFAULT_SYNC_INTERVAL);
}

fn replica_error(message: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::Replica, message)
}

impl From<UrlError> for ConfigError {
    fn from(e: UrlError) -> ConfigError {
        replica_error(e.message)
    }
}

// ---------------------------------------------------------------------------------------------
// Paths, durations, small helpers
// ---------------------------------------------------------------------------------------------

/// Litestream's `StripSQLitePrefix`: `sqlite://` and `sqlite3://` are removed from db paths.
fn strip_sqlite_prefix(s: &str) -> &str {
    s.strip_prefix("sqlite3://")
        .or_else(|| s.strip_prefix("sqlite://"))
        .unwrap_or(s)
}

/// `~` and `~/x` become `$HOME` and `$HOME/x`; other `~` forms are left alone, as in Litestream.
fn expand_user_path(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, String> {
    if s != "~" && !s.starts_with("~/") {
        return Ok(PathBuf::from(s));
    }
    let home = env("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("cannot expand path {s}, no home directory available"))?;
    Ok(Path::new(&home).join(s.trim_start_matches('~').trim_start_matches('/')))
}

/// `filepath.Abs`: join with `cwd` when relative, then clean.
fn absolutize(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() {
        clean_path(p)
    } else {
        clean_path(&cwd.join(p))
    }
}

/// Default local state directory: `.<name>-litestream` beside the database (db.go `NewDB`).
fn default_meta_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let dir = db.parent().unwrap_or_else(|| Path::new("/"));
    dir.join(format!(".{name}{META_DIR_SUFFIX}"))
}

/// The working directory, for resolving relative paths.
fn current_dir(source: &str) -> Result<PathBuf, ConfigError> {
    std::env::current_dir().map_err(|e| {
        file_error(
            ConfigErrorKind::Io,
            source,
            format!("cannot read the working directory: {e}"),
        )
    })
}

fn file_error(kind: ConfigErrorKind, source: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        source_name: Some(source.to_string()),
        ..ConfigError::new(kind, message)
    }
}

/// Go's shell-name rule for `os.Expand`: returns (name, bytes consumed after `$`).
/// `(None, 0)` leaves the `$`; `(None, n > 0)` eats bad syntax.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    let special = |c: u8| b"*#$@!?-0123456789".contains(&c);
    if b[0] == b'{' {
        if b.len() > 2 && special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s[1..].find('}') {
            Some(0) => (None, 2),
            Some(i) => (Some(&s[1..=i]), i + 2),
            None => (None, 1),
        };
    }
    if special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

/// `"text"` with quotes and escapes, for messages.
fn quote(s: &str) -> String {
    format!("{s:?}")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::url::tests::s3;
    use std::collections::HashMap;

    /// An environment made of the given pairs.
    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        Config::parse(text, "litestream.yml", true, env_of(&[("HOME", "/home/u")]))
    }

    fn parse_ok(text: &str) -> Config {
        match parse(text) {
            Ok((config, _)) => config,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok((config, _)) => panic!("expected an error, got {config:?}"),
            Err(e) => e,
        }
    }

    fn warnings(text: &str) -> Vec<String> {
        parse(text)
            .expect("parses")
            .1
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const ONE_DB: &str = "dbs:\n  - path: /data/app.db\n    replica:\n      url: s3://bkt/app\n";

    // --- defaults ---------------------------------------------------------------------------

    #[test]
    fn empty_file_gives_every_top_level_default() {
        let c = parse_ok("");
        assert!(c.dbs.is_empty());
        assert_eq!(c.addr, None);
        assert_eq!(c.exec, None);
        assert!(c.socket.enabled, "our socket is on by default");
        assert_eq!(c.socket.path, None);
        assert_eq!(
            c.socket.path_or_default(),
            PathBuf::from("/var/run/litestream.sock")
        );
        assert_eq!(c.socket.permissions, 0o600);
        assert_eq!(c.logging.level, LogLevel::Info);
        assert_eq!(c.logging.format, LogFormat::Text);
        assert!(!c.logging.stderr);
        assert_eq!(c.shutdown_sync_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_sync_interval, Duration::from_millis(500));
        assert_eq!(c.snapshot.interval, Duration::from_secs(86_400));
        assert_eq!(c.snapshot.retention, Duration::from_secs(86_400));
        let levels: Vec<u64> = c.levels.iter().map(|l| l.interval.as_secs()).collect();
        assert_eq!(levels, vec![30, 300, 3600]);
        assert_eq!(c.l0_retention, Duration::from_secs(300));
        assert_eq!(c.l0_retention_check_interval, Duration::from_secs(15));
        assert_eq!(c.upload_concurrency, 4);
        assert_eq!(c.defaults, ReplicaDefaults::default());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn comment_only_file_and_null_sections_keep_defaults() {
        let c = parse_ok("# nothing here\nsocket:\nsnapshot:\nlogging:\nlevels:\ndbs:\n");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn minimal_db_gets_every_db_and_replica_default() {
        let c = parse_ok(ONE_DB);
        let db = &c.dbs[0];
        assert_eq!(db.path, PathBuf::from("/data/app.db"));
        assert_eq!(db.meta_path, PathBuf::from("/data/.app.db-litestream"));
        assert_eq!(db.monitor_interval, Duration::from_secs(1));
        assert_eq!(db.checkpoint_interval, Duration::from_secs(60));
        assert_eq!(db.busy_timeout, Duration::from_secs(1));
        assert_eq!(db.min_checkpoint_page_count, 1000);
        assert_eq!(db.truncate_page_n, 121_359);
        assert!(db.replicas.is_empty());
        let r = db.replica.as_ref().expect("replica");
        assert_eq!(r.sync_interval, Duration::from_secs(1));
        assert_eq!(db.active_replica(), Some(r));
        let t = s3(r.target().expect("target"));
        assert_eq!(t.bucket, "bkt");
        assert_eq!(t.path, "app");
        assert_eq!(t.region, None);
        assert_eq!(t.endpoint, None);
        assert!(!t.force_path_style);
        assert!(!t.skip_verify);
    }

    #[test]
    fn default_config_path_follows_litestream_config_env() {
        assert_eq!(
            default_config_path(no_env),
            PathBuf::from("/etc/litestream.yml")
        );
        assert_eq!(
            default_config_path(env_of(&[("LITESTREAM_CONFIG", "/srv/ls.yml")])),
            PathBuf::from("/srv/ls.yml")
        );
        assert_eq!(
            default_config_path(env_of(&[("LITESTREAM_CONFIG", "")])),
            PathBuf::from("/etc/litestream.yml")
        );
    }

    // --- every key -------------------------------------------------------------------------

    const EVERY_KEY: &str = r#"
access-key-id: AKIAGLOBAL
secret-access-key: globalsecret
region: eu-west-1
endpoint: minio.internal:9000
force-path-style: false
skip-verify: true
sync-interval: 10s
addr: ":9090"
exec: "myapp -serve"
socket:
  enabled: false
  path: /run/ls.sock
  permissions: 0660
logging:
  level: DEBUG
  type: json
  stderr: true
shutdown-sync-timeout: 0s
shutdown-sync-interval: 250ms
snapshot:
  interval: 12h
  retention: 72h
levels:
  - interval: 1m
  - interval: 10m
l0-retention: 10m
l0-retention-check-interval: 30s
upload-concurrency: 8
dbs:
  - path: /data/a.db
    meta-path: /var/lib/ls/a
    monitor-interval: 250ms
    checkpoint-interval: 0s
    busy-timeout: 5s
    min-checkpoint-page-count: 500
    truncate-page-n: 0
    replica:
      type: s3
      bucket: own-bucket
      path: /a/prefix/
      region: us-west-2
      endpoint: https://s3.example.com
      force-path-style: true
      skip-verify: false
      access-key-id: AKIAOWN
      secret-access-key: ownsecret
      sync-interval: 2s
  - path: /data/b.db
    replicas:
      - url: file:///backups/b
"#;

    #[test]
    fn every_supported_key_is_read() {
        let c = parse_ok(EVERY_KEY);
        assert_eq!(c.addr.as_deref(), Some(":9090"));
        assert_eq!(c.exec.as_deref(), Some("myapp -serve"));
        assert_eq!(
            c.socket,
            SocketConfig {
                enabled: false,
                path: Some("/run/ls.sock".into()),
                permissions: 0o660
            }
        );
        assert_eq!(
            c.logging,
            LoggingConfig {
                level: LogLevel::Debug,
                format: LogFormat::Json,
                stderr: true
            }
        );
        assert_eq!(c.shutdown_sync_timeout, Duration::ZERO);
        assert_eq!(c.shutdown_sync_interval, Duration::from_millis(250));
        assert_eq!(c.snapshot.interval, Duration::from_secs(12 * 3600));
        assert_eq!(c.snapshot.retention, Duration::from_secs(72 * 3600));
        let levels: Vec<u64> = c.levels.iter().map(|l| l.interval.as_secs()).collect();
        assert_eq!(levels, vec![60, 600]);
        assert_eq!(c.l0_retention, Duration::from_secs(600));
        assert_eq!(c.l0_retention_check_interval, Duration::from_secs(30));
        assert_eq!(c.upload_concurrency, 8);
        assert_eq!(c.defaults.access_key_id.as_deref(), Some("AKIAGLOBAL"));
        assert_eq!(
            c.defaults.secret_access_key.as_deref(),
            Some("globalsecret")
        );
        assert_eq!(c.defaults.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.defaults.sync_interval, Some(Duration::from_secs(10)));
        assert_eq!(c.defaults.skip_verify, Some(true));
        assert_eq!(c.defaults.force_path_style, Some(false));

        let a = &c.dbs[0];
        assert_eq!(a.meta_path, PathBuf::from("/var/lib/ls/a"));
        assert_eq!(a.monitor_interval, Duration::from_millis(250));
        assert_eq!(a.checkpoint_interval, Duration::ZERO);
        assert_eq!(a.busy_timeout, Duration::from_secs(5));
        assert_eq!(a.min_checkpoint_page_count, 500);
        assert_eq!(a.truncate_page_n, 0);
        let r = a.replica.as_ref().expect("replica");
        assert_eq!(r.replica_type.as_deref(), Some("s3"));
        assert_eq!(r.sync_interval, Duration::from_secs(2));
        let t = s3(r.target().expect("target"));
        assert_eq!(t.bucket, "own-bucket");
        assert_eq!(t.path, "a/prefix");
        assert_eq!(t.region.as_deref(), Some("us-west-2"));
        assert_eq!(t.endpoint.as_deref(), Some("https://s3.example.com"));
        assert!(t.force_path_style);
        assert!(!t.skip_verify);
        assert_eq!(t.access_key_id.as_deref(), Some("AKIAOWN"));
        assert_eq!(t.secret_access_key.as_deref(), Some("ownsecret"));

        let b = &c.dbs[1];
        assert!(b.replica.is_none());
        assert_eq!(b.replicas.len(), 1);
        let r = b.active_replica().expect("legacy replica");
        assert_eq!(
            r.sync_interval,
            Duration::from_secs(10),
            "global sync-interval applies"
        );
        assert_eq!(r.access_key_id.as_deref(), Some("AKIAGLOBAL"));
        assert_eq!(
            r.target().expect("target"),
            ReplicaTarget::File {
                root: "/backups/b".into()
            }
        );
    }

    #[test]
    fn every_key_config_warns_about_nothing() {
        assert_eq!(warnings(EVERY_KEY), Vec::<String>::new());
    }

    #[test]
    fn global_settings_fill_replica_gaps_but_global_bucket_leaves_url_replicas_alone() {
        let c = parse_ok(
            "bucket: gb\nregion: eu-central-1\ndbs:\n  - path: /a.db\n    replica: {url: s3://ub/p}\n  - path: /b.db\n    replica: {type: s3, path: q}\n",
        );
        let a = s3(c.dbs[0].replica.as_ref().unwrap().target().unwrap());
        assert_eq!(
            (a.bucket.as_str(), a.region.as_deref()),
            ("ub", Some("eu-central-1"))
        );
        let b = s3(c.dbs[1].replica.as_ref().unwrap().target().unwrap());
        assert_eq!((b.bucket.as_str(), b.path.as_str()), ("gb", "q"));
    }

    #[test]
    fn realistic_documented_config_parses() {
        // Shaped after litestream.io/reference/config for 0.5.x.
        let text = r#"
# Global AWS credentials, shared by every replica.
access-key-id: ${AWS_KEY}
secret-access-key: ${AWS_SECRET}

addr: ":9090"

logging:
  level: info
  type: text
  stderr: false

snapshot:
  interval: 24h
  retention: 168h

levels:
  - interval: 30s
  - interval: 5m
  - interval: 1h

dbs:
  - path: /var/lib/app/db.sqlite
    replica:
      url: s3://mybkt.litestream.io/db1
      sync-interval: 1s

  - path: /var/lib/app/other.sqlite
    monitor-interval: 1s
    checkpoint-interval: 1m
    replica:
      type: s3
      bucket: mybkt
      path: other
      endpoint: fly.storage.tigris.dev
      region: auto

  - path: /var/lib/app/local.sqlite
    replica:
      type: file
      path: /backup/local
"#;
        let env = env_of(&[("AWS_KEY", "AKIADOC"), ("AWS_SECRET", "docsecret")]);
        let (c, w) = Config::parse(text, "litestream.yml", true, env).expect("parses");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.dbs.len(), 3);
        assert_eq!(c.snapshot.retention, Duration::from_secs(168 * 3600));
        let first = s3(c.dbs[0].active_replica().unwrap().target().unwrap());
        assert_eq!(first.bucket, "mybkt.litestream.io");
        assert_eq!(first.path, "db1");
        assert_eq!(first.secret_access_key.as_deref(), Some("docsecret"));
        let second = s3(c.dbs[1].active_replica().unwrap().target().unwrap());
        assert_eq!(
            second.endpoint.as_deref(),
            Some("https://fly.storage.tigris.dev")
        );
        assert!(second.force_path_style, "an endpoint implies path style");
        assert_eq!(second.region.as_deref(), Some("auto"));
        assert_eq!(
            c.dbs[2].active_replica().unwrap().target().unwrap(),
            ReplicaTarget::File {
                root: "/backup/local".into()
            }
        );
    }

    // --- paths ------------------------------------------------------------------------------

    #[test]
    fn db_paths_expand_home_strip_sqlite_prefix_and_resolve_against_cwd() {
        let text = "dbs:\n  - path: ~/app.db\n    replica: {url: file:///b1}\n  - path: sqlite3:///tmp/x/../y.db\n    replica: {url: file:///b2}\n  - path: rel/z.db\n    meta-path: ~/state\n    replica: {path: relrep}\n";
        let c = parse_ok(text);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.dbs[0].path, PathBuf::from("/home/u/app.db"));
        assert_eq!(c.dbs[1].path, PathBuf::from("/tmp/y.db"));
        assert_eq!(c.dbs[2].path, cwd.join("rel/z.db"));
        assert_eq!(c.dbs[2].meta_path, PathBuf::from("/home/u/state"));
        assert_eq!(
            c.dbs[2].active_replica().unwrap().target().unwrap(),
            ReplicaTarget::File {
                root: cwd.join("relrep")
            }
        );
    }

    #[test]
    fn home_expansion_without_home_is_an_error_with_line() {
        let e = Config::parse(
            "dbs:\n  - path: ~/a.db\n    replica: {url: file:///b}\n",
            "x.yml",
            false,
            no_env,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.yml:2:5: dbs[0].path: cannot expand path ~/a.db, no home directory available"
        );
    }

    // --- env expansion ----------------------------------------------------------------------

    #[test]
    fn expand_env_follows_go_os_expand() {
        let env = env_of(&[("FOO", "foo"), ("A_1", "x")]);
        assert_eq!(expand_env("$FOO ${FOO} $A_1", &env), "foo foo x");
        assert_eq!(expand_env("${FOO}bar $FOObar", &env), "foobar ");
        assert_eq!(expand_env("$NOPE|${NOPE}|", &env), "||");
        assert_eq!(expand_env("a$$b $1 $@ $-x", &env), "ab   x");
        assert_eq!(expand_env("${}x ${unclosed", &env), "x unclosed");
        assert_eq!(expand_env("${BAR:-dflt}", &env), "");
        assert_eq!(
            expand_env("cost: 5$ and $ alone, end$", &env),
            "cost: 5$ and $ alone, end$"
        );
        assert_eq!(expand_env("p/$/q $.x", &env), "p/$/q $.x");
        assert_eq!(expand_env("no dollars", &env), "no dollars");
        assert_eq!(expand_env("ünïcode $FOO ✓", &env), "ünïcode foo ✓");
    }

    #[test]
    fn config_expands_env_unless_disabled() {
        let text = "dbs:\n  - path: /data/$NAME.db\n    replica:\n      url: s3://${BUCKET}/x\n";
        let env = env_of(&[("NAME", "app"), ("BUCKET", "bk")]);
        let (c, _) = Config::parse(text, "l.yml", true, &env).unwrap();
        assert_eq!(c.dbs[0].path, PathBuf::from("/data/app.db"));
        assert_eq!(
            s3(c.dbs[0].active_replica().unwrap().target().unwrap()).bucket,
            "bk"
        );

        let e = Config::parse(text, "l.yml", false, &env).unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::Replica, "{e}");
        let (c, _) = Config::parse(
            "dbs:\n  - path: /data/$NAME.db\n    replica: {url: file:///b}\n",
            "l.yml",
            false,
            &env,
        )
        .unwrap();
        assert_eq!(c.dbs[0].path, PathBuf::from("/data/$NAME.db"));
    }

    #[test]
    fn undefined_variables_expand_to_empty() {
        let c = parse_ok("addr: \"${UNSET_ADDR}\"\n");
        assert_eq!(c.addr, None);
    }

    #[test]
    fn process_env_knows_pid() {
        assert_eq!(process_env("PID"), Some(std::process::id().to_string()));
    }

    #[test]
    fn explicit_keys_win_over_the_url() {
        let rc = ReplicaConfig {
            url: Some(
                "s3://bkt/p?region=url-region&endpoint=http://url:9000&skipVerify=true".into(),
            ),
            region: Some("key-region".into()),
            endpoint: Some("https://key.example.com".into()),
            force_path_style: Some(false),
            skip_verify: Some(false),
            ..ReplicaConfig::default()
        };
        let t = s3(rc.target().unwrap());
        assert_eq!(t.region.as_deref(), Some("key-region"));
        assert_eq!(t.endpoint.as_deref(), Some("https://key.example.com"));
        assert!(!t.force_path_style);
        assert!(!t.skip_verify);
    }

    #[test]
    fn replica_config_conflicts_and_gaps() {
        let err = |rc: ReplicaConfig| rc.target().unwrap_err().message;
        let url = |u: &str| Some(u.to_string());
        assert_eq!(
            err(ReplicaConfig {
                url: url("s3://b/p"),
                path: url("x"),
                ..Default::default()
            }),
            "cannot specify url & path for s3 replica"
        );
        assert_eq!(
            err(ReplicaConfig {
                url: url("s3://b/p"),
                bucket: url("c"),
                ..Default::default()
            }),
            "cannot specify url & bucket for s3 replica"
        );
        assert_eq!(
            err(ReplicaConfig {
                url: url("file:///a"),
                path: url("/b"),
                ..Default::default()
            }),
            "cannot specify url & path for file replica"
        );
        assert_eq!(err(ReplicaConfig::default()), "file replica path required");
        assert_eq!(
            err(ReplicaConfig {
                replica_type: url("s3"),
                path: url("p"),
                ..Default::default()
            }),
            "bucket required for s3 replica"
        );
        assert!(err(ReplicaConfig {
            path: url("rel"),
            ..Default::default()
        })
        .contains("absolute"));
        assert!(err(ReplicaConfig {
            replica_type: url("sftp"),
            ..Default::default()
        })
        .contains("not supported by this build"));
        for scheme in ["gs", "abs", "sftp", "webdav", "webdavs", "nats", "oss"] {
            let rc = ReplicaConfig {
                url: Some(format!("{scheme}://host/path")),
                ..Default::default()
            };
            assert_eq!(rc.target().unwrap_err().kind, ConfigErrorKind::Replica);
        }
        // The URL scheme decides the type, as in Litestream.
        let rc = ReplicaConfig {
            url: url("s3://b/p"),
            replica_type: url("file"),
            ..Default::default()
        };
        assert_eq!(rc.type_name(), "s3");
    }

    // --- warnings ---------------------------------------------------------------------------

    #[test]
    fn unknown_keys_warn_with_path_and_line() {
        let text = "addr: \":9090\"\n\ndbz:\n  - path: /x\ndbs:\n  - path: /a.db\n    replica:\n      url: s3://b/p\n      colour: blue\n    frobnicate: 1\nsocket:\n  perms: 1\n";
        assert_eq!(
            warnings(text),
            vec![
                "litestream.yml:3:1: unknown key \"dbz\" (ignored)",
                "litestream.yml:9:7: unknown key \"dbs[0].replica.colour\" (ignored)",
                "litestream.yml:10:5: unknown key \"dbs[0].frobnicate\" (ignored)",
                "litestream.yml:12:3: unknown key \"socket.perms\" (ignored)",
            ]
        );
    }

    #[test]
    fn known_but_unimplemented_keys_say_not_supported_yet() {
        let text = "mcp-addr: \":3001\"\nstorage-class: STANDARD_IA\nlogging:\n  source: true\ndbs:\n  - path: /a.db\n    restore-if-db-not-exists: true\n    replica:\n      url: s3://b/p\n      part-size: 5MB\n      name: old\n";
        assert_eq!(
            warnings(text),
            vec![
                "litestream.yml:1:1: key \"mcp-addr\" is not supported yet (ignored)",
                "litestream.yml:2:1: key \"storage-class\" is not supported yet (ignored)",
                "litestream.yml:4:3: key \"logging.source\" is not supported yet (ignored)",
                "litestream.yml:7:5: key \"dbs[0].restore-if-db-not-exists\" is not supported yet (ignored)",
                "litestream.yml:10:7: key \"dbs[0].replica.part-size\" is not supported yet (ignored)",
                "litestream.yml:11:7: key \"dbs[0].replica.name\" is deprecated (ignored)",
            ]
        );
    }

    #[test]
    fn duplicate_keys_warn_and_the_last_wins() {
        let text = "addr: \":1\"\naddr: \":2\"\n";
        let (c, w) = parse(text).unwrap();
        assert_eq!(c.addr.as_deref(), Some(":2"));
        assert_eq!(
            w[0].to_string(),
            "litestream.yml:2:1: duplicate key \"addr\" (first set on line 1); the last value wins"
        );
    }

    #[test]
    fn decimal_permissions_that_look_octal_warn() {
        let (c, w) = parse("socket:\n  permissions: 400\n").unwrap();
        assert_eq!(c.socket.permissions, 400);
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("write 0400"), "{}", w[0]);
        assert_eq!((w[0].line, w[0].column), (2, 3));
    }

    #[test]
    fn db_level_snapshot_settings_apply_or_warn() {
        let c = parse_ok(
            "dbs:\n  - path: /a.db\n    snapshot: {interval: 1h}\n    replica: {url: file:///b}\n",
        );
        assert_eq!(c.snapshot.interval, Duration::from_secs(3600));
        let text = "snapshot: {interval: 2h}\ndbs:\n  - path: /a.db\n    snapshot: {interval: 1h}\n    replica: {url: file:///b}\n";
        let (c, w) = parse(text).unwrap();
        assert_eq!(c.snapshot.interval, Duration::from_secs(7200));
        assert_eq!(
            w[0].to_string(),
            "litestream.yml:4:16: dbs[0].snapshot.interval: ignored because the top-level snapshot.interval is set"
        );
        let e = parse_err("dbs:\n  - path: /a.db\n    snapshot: {interval: 1h}\n    replica: {url: file:///b}\n  - path: /b.db\n    snapshot: {interval: 2h}\n    replica: {url: file:///c}\n");
        assert_eq!(e.line, Some(6));
        assert!(
            e.message.contains("conflicting database snapshot settings"),
            "{e}"
        );
    }

    // --- errors -----------------------------------------------------------------------------

    #[test]
    fn invalid_duration_names_file_line_column_and_key() {
        let text = "addr: \":9090\"\n# databases\ndbs:\n  - path: /data/app.db\n    replica:\n      url: s3://b/p\n    monitor-interval: abc\n";
        assert_eq!(
            parse_err(text).to_string(),
            "litestream.yml:7:5: dbs[0].monitor-interval: invalid duration \"abc\""
        );
        let e = parse_err(
            "dbs:\n  - path: /a.db\n    busy-timeout: 5\n    replica: {url: file:///b}\n",
        );
        assert_eq!(
            e.to_string(),
            "litestream.yml:3:5: dbs[0].busy-timeout: invalid duration 5: a unit is required, e.g. \"5s\""
        );
        assert_eq!(e.kind, ConfigErrorKind::Type);
    }

    #[test]
    fn yaml_syntax_errors_carry_line_and_column() {
        let e = parse_err("dbs:\n  - path: \"/a\n");
        assert_eq!(e.kind, ConfigErrorKind::Syntax);
        assert_eq!((e.line, e.column), (Some(2), Some(11)));
        assert!(
            e.to_string().starts_with("litestream.yml:2:11: yaml: "),
            "{e}"
        );
        let e = parse_err("dbs:\n  - path: /a\n   replica: x\n");
        assert_eq!((e.kind, e.line), (ConfigErrorKind::Syntax, Some(3)));
        let e = parse_err("a: [1, 2\nb: 3\n");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn wrong_types_name_the_key_and_line() {
        let cases = [
            ("dbs: x\n", "litestream.yml:1:1: dbs: expected a sequence of databases (\"- path: ...\"), found string \"x\""),
            ("dbs:\n  - path: [1]\n", "litestream.yml:2:5: dbs[0].path: expected a string, found a sequence"),
            ("socket:\n  enabled: maybe\n", "litestream.yml:2:3: socket.enabled: expected true or false, found string \"maybe\""),
            ("socket: [1]\n", "litestream.yml:1:1: socket: expected a mapping of keys, found a sequence"),
            ("upload-concurrency: \"4\"\n", "litestream.yml:1:1: upload-concurrency: expected an integer, found string \"4\""),
            ("- a\n- b\n", "litestream.yml:1:1: expected a mapping of keys at the top level, found a sequence"),
            ("force-path-style: \"true\"\n", "litestream.yml:1:1: force-path-style: expected true or false, found string \"true\""),
        ];
        for (text, want) in cases {
            let e = parse_err(text);
            assert_eq!(e.to_string(), want, "for {text:?}");
        }
    }

    #[test]
    fn validation_errors_name_key_and_line() {
        let cases: &[(&str, &str)] = &[
            ("dbs:\n  - replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0]: missing required key \"path\""),
            ("dbs:\n  - dir: /data\n    pattern: \"*.db\"\n    replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0]: directory replication ('dir') is not supported yet; list each database with 'path'"),
            ("dbs:\n  - path: /a.db\n    replica: {url: file:///b}\n  - path: /a.db\n    replica: {url: file:///c}\n", "litestream.yml:4:5: dbs[1].path: duplicate database path \"/a.db\" (already used by dbs[0].path on line 2); each database can be listed only once"),
            ("dbs:\n  - path: /a.db\n    replica: {url: file:///b}\n    replicas: [{url: file:///c}]\n", "litestream.yml:4:5: dbs[0].replicas: cannot specify 'replica' and 'replicas' on a database"),
            ("dbs:\n  - path: /a.db\n    replicas:\n      - url: file:///b\n      - url: file:///c\n", "litestream.yml:5:9: dbs[0].replicas[1]: multiple replicas on a single database are no longer supported (Litestream 0.5 keeps one replica per database)"),
            ("dbs:\n  - path: /a.db\n", "litestream.yml:2:5: dbs[0]: must specify replica for database"),
            ("dbs:\n  - path: \"\"\n    replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0].path: must not be empty"),
            ("dbs:\n  - path: /a.db\n    replica: s3://b/p\n", "litestream.yml:3:5: dbs[0].replica: expected a mapping of keys, found string \"s3://b/p\""),
            ("dbs:\n  - path: /a.db\n    replica:\n      type: s3\n      path: p\n", "litestream.yml:3:5: dbs[0].replica: bucket required for s3 replica"),
            ("dbs:\n  - path: /a.db\n    replica:\n      type: file\n      url: file://host/x\n", "litestream.yml:5:7: dbs[0].replica.url: invalid file replica url \"file://host/x\": it names a host; use file:///absolute/path"),
            ("dbs:\n  - path: /a.db\n    meta-path: /m\n    replica: {url: file:///b}\n  - path: /b.db\n    meta-path: /m\n    replica: {url: file:///c}\n", "litestream.yml:5:5: dbs[1].path: meta-path \"/m\" is also used by dbs[0]; two databases cannot share local state"),
            ("dbs:\n  - path: /a.db\n    monitor-interval: 0s\n    replica: {url: file:///b}\n", "litestream.yml:3:5: dbs[0].monitor-interval: must be greater than 0 (got 0s)"),
            ("dbs:\n  - path: /a.db\n    checkpoint-interval: -1m\n    replica: {url: file:///b}\n", "litestream.yml:3:5: dbs[0].checkpoint-interval: must be >= 0 (got -1m0s)"),
            ("dbs:\n  - path: /a.db\n    min-checkpoint-page-count: 2000\n    truncate-page-n: 1000\n    replica: {url: file:///b}\n", "litestream.yml:3:5: dbs[0].min-checkpoint-page-count: min-checkpoint-page-count (2000) must not exceed truncate-page-n (1000); set truncate-page-n to 0 to disable truncation"),
            ("dbs:\n  - path: /a.db\n    min-checkpoint-page-count: -5\n    replica: {url: file:///b}\n", "litestream.yml:3:5: dbs[0].min-checkpoint-page-count: -5 is out of range"),
            ("dbs:\n  - path: /a.db\n    replica: {url: file:///b, sync-interval: 0s}\n", "litestream.yml:3:31: dbs[0].replica.sync-interval: must be greater than 0 (got 0s)"),
            ("dbs:\n  - path: /a.db\n    replica:\n      url: gs://b/p\n", "litestream.yml:4:7: dbs[0].replica.url: replica type \"gs\" is not supported by this build (supported: file, s3)"),
            ("dbs:\n  - path: /a.db\n    replica:\n      path: s3://b/p\n", "litestream.yml:4:7: dbs[0].replica.path: replica path cannot be a url, please use the 'url' field instead"),
            ("snapshot:\n  retention: 0s\n", "litestream.yml:2:3: snapshot.retention: must be greater than 0 (got 0s)"),
            ("levels:\n  - interval: 0s\n", "litestream.yml:2:5: levels[0].interval: must be greater than 0 (got 0s)"),
            ("levels:\n  - {}\n", "litestream.yml:2:5: levels[0]: missing required key \"interval\""),
            ("l0-retention: 0s\n", "litestream.yml:1:1: l0-retention: must be greater than 0 (got 0s)"),
            ("shutdown-sync-timeout: -1s\n", "litestream.yml:1:1: shutdown-sync-timeout: must be >= 0 (got -1s)"),
            ("shutdown-sync-interval: 0s\n", "litestream.yml:1:1: shutdown-sync-interval: must be greater than 0 (got 0s)"),
            ("upload-concurrency: 0\n", "litestream.yml:1:1: upload-concurrency: must be between 1 and 1024 (got 0)"),
            ("socket:\n  permissions: 01000\n", "litestream.yml:2:3: socket.permissions: invalid permissions 01000: must be an octal file mode between 0000 and 0777, e.g. 0600"),
            ("socket:\n  permissions: \"0abc\"\n", "litestream.yml:2:3: socket.permissions: invalid permissions \"0abc\": must be an octal file mode between 0000 and 0777, e.g. 0600"),
            ("socket:\n  permissions: 644\n", "litestream.yml:2:3: socket.permissions: invalid permissions 644: must be an octal file mode between 0000 and 0777, e.g. 0600"),
            ("logging:\n  type: xml\n", "litestream.yml:2:3: logging.type: unknown log type \"xml\" (expected \"text\" or \"json\")"),
            ("age:\n  recipients: [age1xyz]\n", "litestream.yml:1:1: age: age encryption is not currently supported, if you need encryption please revert back to Litestream v0.3.x"),
        ];
        for (text, want) in cases {
            let e = parse_err(text);
            assert_eq!(&e.to_string(), want, "for {text:?}");
        }
    }

    #[test]
    fn nine_levels_are_too_many() {
        let text = format!("levels:\n{}", "  - interval: 1m\n".repeat(9));
        assert!(parse_err(&text).message.contains("at most 8 levels"));
    }

    #[test]
    fn socket_permission_spellings() {
        for (text, mode) in [
            ("0600", 0o600),
            ("\"0600\"", 0o600),
            ("384", 0o600),
            ("0o640", 0o640),
            ("\"755\"", 0o755),
            ("0", 0),
        ] {
            let c = parse_ok(&format!("socket:\n  permissions: {text}\n"));
            assert_eq!(c.socket.permissions, mode, "{text}");
        }
    }

    #[test]
    fn logging_level_names_and_log_level_env() {
        assert_eq!(
            parse_ok("logging: {level: warning}\n").logging.level,
            LogLevel::Warn
        );
        assert_eq!(
            parse_ok("logging: {level: Trace}\n").logging.level,
            LogLevel::Trace
        );
        let (c, w) = parse("logging: {level: loud}\n").unwrap();
        assert_eq!(c.logging.level, LogLevel::Info);
        assert!(w[0].message.contains("unknown level"), "{}", w[0]);
        let (c, _) = Config::parse(
            "logging: {level: info}\n",
            "l",
            true,
            env_of(&[("LOG_LEVEL", "error")]),
        )
        .unwrap();
        assert_eq!(c.logging.level, LogLevel::Error);
    }

    // --- secrets ----------------------------------------------------------------------------

    #[test]
    fn secrets_are_redacted_in_debug() {
        let text = "access-key-id: AKIASECRETID\nsecret-access-key: topsecretvalue\ndbs:\n  - path: /a.db\n    replica:\n      url: s3://b/p\n";
        let c = parse_ok(text);
        let shown = format!("{c:?}");
        assert!(!shown.contains("topsecretvalue"), "{shown}");
        assert!(!shown.contains("AKIASECRETID"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let target = c.dbs[0].active_replica().unwrap().target().unwrap();
        let shown = format!("{target:?}");
        assert!(
            !shown.contains("topsecretvalue") && shown.contains("[redacted]"),
            "{shown}"
        );
        let rc = ReplicaConfig {
            url: Some("s3://user:hunter2@b/p".into()),
            ..Default::default()
        };
        assert!(!format!("{rc:?}").contains("hunter2"));
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let e = parse_err("secret-access-key: [topsecretvalue]\n");
        assert_eq!(
            e.to_string(),
            "litestream.yml:1:1: secret-access-key: expected a string, found a sequence"
        );
        let e = parse_err("dbs:\n  - path: /a.db\n    replica:\n      access-key-id: {id: AKIAHIDDEN}\n      url: s3://b/p\n");
        assert!(!e.to_string().contains("AKIAHIDDEN"), "{e}");
    }

    // --- loading ----------------------------------------------------------------------------

    #[test]
    fn load_reads_a_file_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("ls-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("litestream.yml");
        std::fs::write(
            &file,
            "dbs:\n  - path: /a.db\n    replica:\n      url: file:///b\n    bogus: 1\n",
        )
        .unwrap();
        let (c, w) = Config::load_with_warnings(&file, true).unwrap();
        assert_eq!(c.config_path.as_deref(), Some(file.as_path()));
        assert_eq!(c.dbs[0].path, PathBuf::from("/a.db"));
        assert_eq!(
            w[0].to_string(),
            format!(
                "{}:5:5: unknown key \"dbs[0].bogus\" (ignored)",
                file.display()
            )
        );
        assert!(Config::load(&file, false).is_ok());

        std::fs::write(&file, "dbs:\n  - path: /a.db\n    monitor-interval: nope\n").unwrap();
        let e = Config::load(&file, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3:5: dbs[0].monitor-interval: invalid duration \"nope\"",
                file.display()
            )
        );

        let missing = dir.join("missing.yml");
        let e = Config::load(&missing, true).unwrap_err();
        assert_eq!(e.kind, ConfigErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            format!("{}: config file not found", missing.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_url_applies_top_level_settings() {
        let c = parse_ok("access-key-id: AKIA1\nregion: eu-2\nbucket: gb\nsync-interval: 5s\n");
        let rc = ReplicaConfig::from_url("s3://ub/p", &c.defaults);
        assert_eq!(rc.sync_interval, Duration::from_secs(5));
        let t = s3(rc.target().unwrap());
        assert_eq!(t.bucket, "ub");
        assert_eq!(t.region.as_deref(), Some("eu-2"));
        assert_eq!(t.access_key_id.as_deref(), Some("AKIA1"));
    }

    #[test]
    fn db_new_uses_defaults() {
        let db = DbConfig::new(
            "/x/y.db".into(),
            ReplicaConfig {
                url: Some("file:///r".into()),
                ..Default::default()
            },
        );
        assert_eq!(db.meta_path, PathBuf::from("/x/.y.db-litestream"));
        assert_eq!(db.monitor_interval, DEFAULT_MONITOR_INTERVAL);
        assert!(db.active_replica().is_some());
    }
}
