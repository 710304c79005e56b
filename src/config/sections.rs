//! The sections of `litestream.yml`, one parser each: the top level, `socket`, `logging`,
//! `levels`, `snapshot` and `dbs`, with Litestream 0.5.17's keys and rules; the replicas are
//! parsed in `replica_section.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::directory::{parse_dir_entry, DirConfig};
use super::env::strip_sqlite_prefix;
use super::error::{quote, ConfigError, ConfigErrorKind, ConfigWarning};
use super::replica_section::{
    parse_db_replicas, parse_replica_settings, reject_age, REPLICA_SETTINGS_NOT_YET,
};
use super::yaml::{Ctx, Field, Kind, MapView, Node};
use super::{
    CompactionLevelConfig, Config, DbConfig, LogFormat, LogLevel, LoggingConfig, ReplicaConfig,
    ReplicaDefaults, SnapshotConfig, SocketConfig, MAX_COMPACTION_LEVELS,
};
use crate::duration;

/// Top-level keys Litestream 0.5.17 knows and this build ignores (with a warning).
pub(super) const TOP_LEVEL_NOT_YET: &[&str] =
    &["mcp-addr", "validation", "verify-compaction", "retention"];
/// Per-database keys Litestream 0.5.17 knows and this build ignores (with a warning).
pub(super) const DB_NOT_YET: &[&str] = &["max-sync-wal-bytes", "restore-if-db-not-exists"];
/// Logging keys Litestream 0.5.17 knows and this build ignores.
pub(super) const LOGGING_NOT_YET: &[&str] = &["source"];

/// The top-level mapping.
pub(super) fn parse_root(ctx: &mut Ctx, root: &Node) -> Result<Config, ConfigError> {
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
        let db_snapshots = parse_dbs(ctx, &f, &config.defaults, &mut config.dbs, &mut config.dirs)?;
        fold_db_snapshots(ctx, db_snapshots, snapshot_set, &mut config.snapshot)?;
    }
    m.finish(ctx, &[TOP_LEVEL_NOT_YET, REPLICA_SETTINGS_NOT_YET]);
    Ok(config)
}

/// Top-level timing keys: levels, L0 retention, shutdown sync, upload concurrency.
pub(super) fn parse_schedules(
    ctx: &mut Ctx,
    m: &mut MapView,
    config: &mut Config,
) -> Result<(), ConfigError> {
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
    if let Some(f) = m.take("heartbeat-url") {
        if let Some(u) = f.string(ctx)? {
            let lower = u.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) || u.len() < 9 {
                return Err(f.error(
                    ctx,
                    ConfigErrorKind::Invalid,
                    format!("heartbeat URL must be a valid HTTP or HTTPS URL (got {u:?})"),
                ));
            }
            config.heartbeat_url = Some(u);
        }
    }
    if let Some(f) = m.take("heartbeat-interval") {
        if let Some(v) = f.non_negative_duration(ctx)? {
            if v < super::MIN_HEARTBEAT_INTERVAL {
                return Err(f.error(
                    ctx,
                    ConfigErrorKind::Invalid,
                    format!(
                        "heartbeat interval must be at least 1m0s (got {})",
                        crate::duration::format(v)
                    ),
                ));
            }
            config.heartbeat_interval = v;
        }
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
pub(super) fn take_positive(
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
pub(super) fn parse_socket(ctx: &mut Ctx, f: &Field) -> Result<SocketConfig, ConfigError> {
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
pub(super) fn parse_permissions(ctx: &mut Ctx, f: &Field) -> Result<Option<u32>, ConfigError> {
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
pub(super) fn parse_octal(s: &str) -> Option<u32> {
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
pub(super) fn parse_logging(ctx: &mut Ctx, f: &Field) -> Result<LoggingConfig, ConfigError> {
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
pub(super) fn parse_levels(
    ctx: &mut Ctx,
    f: &Field,
) -> Result<Vec<CompactionLevelConfig>, ConfigError> {
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
pub(super) fn take_snapshot(
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
pub(super) struct Located<T> {
    pub(super) value: T,
    pub(super) line: u64,
    pub(super) column: u64,
    pub(super) key: String,
}

impl<T> Located<T> {
    pub(super) fn at(value: T, f: &Field) -> Located<T> {
        Located {
            value,
            line: f.key.line,
            column: f.key.column,
            key: f.path.clone(),
        }
    }

    /// An error pointing at where this value was written.
    pub(super) fn error(&self, ctx: &Ctx, msg: impl Into<String>) -> ConfigError {
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
pub(super) struct SnapshotSection {
    pub(super) interval: Option<Located<Duration>>,
    pub(super) retention: Option<Located<Duration>>,
}

pub(super) fn parse_snapshot_section(
    ctx: &mut Ctx,
    f: &Field,
) -> Result<SnapshotSection, ConfigError> {
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
pub(super) fn fold_db_snapshots(
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

pub(super) fn fold_one(
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
pub(super) fn parse_dbs(
    ctx: &mut Ctx,
    f: &Field,
    defaults: &ReplicaDefaults,
    dbs: &mut Vec<DbConfig>,
    dirs: &mut Vec<DirConfig>,
) -> Result<Vec<SnapshotSection>, ConfigError> {
    let items = f.seq(ctx, "a sequence of databases (\"- path: ...\")")?;
    let mut seen: Vec<Located<PathBuf>> = Vec::new();
    let mut snapshots = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("dbs[{i}]");
        let (db, located_path, snapshot) = match parse_db(ctx, item, &path, defaults)? {
            Entry::Db(db, located_path, snapshot) => (db, located_path, snapshot),
            Entry::Dir(dir, snapshot) => {
                snapshots.push(snapshot);
                dirs.push(dir);
                continue;
            }
        };
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

/// One parsed `dbs[i]` entry: a database (`path:`) or a directory of them (`dir:`).
pub(super) enum Entry {
    Db(DbConfig, Located<PathBuf>, SnapshotSection),
    Dir(DirConfig, SnapshotSection),
}

/// One `dbs[i]` entry.
pub(super) fn parse_db(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    defaults: &ReplicaDefaults,
) -> Result<Entry, ConfigError> {
    let mut m = MapView::new(ctx, node, node, path)?;
    if m.has("dir") {
        let (dir, snapshot) = parse_dir_entry(ctx, m, node, path, defaults)?;
        return Ok(Entry::Dir(dir, snapshot));
    }
    for key in ["watch", "meta-dir"] {
        if m.has(key) {
            let msg = format!("'{key}' can only be used with a directory ('dir')");
            return Err(ctx.error(ConfigErrorKind::Invalid, node, path, msg));
        }
    }
    for key in ["pattern", "recursive"] {
        if let Some(f) = m.take(key) {
            let msg = format!("key {} is only used with 'dir' (ignored)", quote(&f.path));
            ctx.warn(f.key, &f.path, msg);
        }
    }
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
    parse_db_role(ctx, &mut m, &mut db)?;
    let snapshot = match m.take("snapshot") {
        Some(f) => parse_snapshot_section(ctx, &f)?,
        None => SnapshotSection::default(),
    };
    parse_db_replicas(ctx, &mut m, node, path, defaults, &mut db)?;
    m.finish(ctx, &[DB_NOT_YET]);
    Ok(Entry::Db(db, db_path, snapshot))
}

/// `dbs[i].path`: required, expanded and absolute.
pub(super) fn take_db_path(
    ctx: &mut Ctx,
    m: &mut MapView,
    node: &Node,
    path: &str,
) -> Result<Located<PathBuf>, ConfigError> {
    let Some(f) = m.take("path") else {
        let msg = "must specify either 'path' or 'dir'";
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

/// `follow`, `follow-interval`, `lease`, `lease-ttl`: the database's role (see
/// [`RoleConfig`](super::RoleConfig)).
pub(super) fn parse_db_role(
    ctx: &mut Ctx,
    m: &mut MapView,
    db: &mut DbConfig,
) -> Result<(), ConfigError> {
    let role = &mut db.role;
    if let Some(f) = m.take("follow") {
        role.follow = f.bool(ctx)?.unwrap_or(false);
    }
    let interval = m.take("follow-interval");
    if let Some(f) = &interval {
        role.follow_interval = f.positive_duration(ctx)?.unwrap_or(role.follow_interval);
    }
    if let Some(f) = m.take("lease") {
        role.lease = f.bool(ctx)?.unwrap_or(false);
    }
    if let Some(f) = m.take("lease-ttl") {
        let ttl = f.positive_duration(ctx)?.unwrap_or(role.lease_ttl);
        if ttl < MIN_LEASE_TTL {
            return Err(f.error(
                ctx,
                ConfigErrorKind::Invalid,
                format!(
                    "must be at least {} (got {}): the lease is renewed every third of it",
                    crate::duration::format(MIN_LEASE_TTL),
                    crate::duration::format(ttl)
                ),
            ));
        }
        role.lease_ttl = ttl;
    }
    if let Some(f) = interval.filter(|_| !db.role.follow) {
        let msg = format!(
            "key {} is only used with 'follow: true' (ignored)",
            quote(&f.path)
        );
        ctx.warn(f.key, &f.path, msg);
    }
    Ok(())
}

/// The shortest `lease-ttl`: renewals every third of it must fit a slow request.
const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// The per-database checkpoint and polling settings.
pub(super) fn parse_db_timings(
    ctx: &mut Ctx,
    m: &mut MapView,
    db: &mut DbConfig,
) -> Result<(), ConfigError> {
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
