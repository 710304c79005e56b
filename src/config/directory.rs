//! Directory replication (`dbs[i].dir`): one config entry for every SQLite database under a
//! directory whose file name matches `pattern`, with Litestream 0.5.17's keys, rules and
//! replica layout (main.go `NewDBsFromDirectoryConfig`, `newDBFromDirectoryEntry`).
//!
//! Each database found keeps its path relative to the directory in its replica: a database
//! `sub/app.db` under a directory replicated to `s3://bucket/prefix` goes to
//! `s3://bucket/prefix/sub/app.db`, as Litestream lays it out, so either tool restores what
//! the other wrote. Finding the databases (and following the directory with `watch`) is the
//! daemon's job (`crate::directory`); this module only says what one database's entry is.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrorKind};
use super::replica_section::parse_db_replicas;
use super::sections::{parse_db_role, parse_db_timings, parse_snapshot_section, SnapshotSection};
use super::yaml::{Ctx, MapView, Node};
use super::{default_meta_path, DbConfig, ReplicaConfig, ReplicaDefaults, META_DIR_SUFFIX};
use crate::replica::url::join_path;

/// One `dbs[i]` entry with `dir:`.
#[derive(Clone, Debug, PartialEq)]
pub struct DirConfig {
    /// The directory (`dir`), absolute.
    pub dir: PathBuf,
    /// The glob a file name must match (`pattern`, e.g. `*.db`), as Go's `filepath.Match`.
    pub pattern: String,
    /// Whether subdirectories are searched too (`recursive`).
    pub recursive: bool,
    /// Whether databases created or removed while the daemon runs are picked up (`watch`).
    pub watch: bool,
    /// `meta-dir`: each database's local state goes to `<meta-dir>/<relative path>-litestream`.
    pub meta_dir: Option<PathBuf>,
    /// `meta-path` on a directory: the base under which each database gets
    /// `<meta-path>/<relative dir>/.<name>-litestream`.
    pub meta_path: Option<PathBuf>,
    /// What every database found starts from: the timings and the replica, whose URL or path
    /// is the base the relative path is appended to. Its `path` is the directory.
    pub template: DbConfig,
    glob: glob::Pattern,
}

impl DirConfig {
    /// Whether a file name matches `pattern`.
    pub fn matches(&self, name: &OsStr) -> bool {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        name.to_str()
            .is_some_and(|n| self.glob.matches_with(n, options))
    }

    /// The path of `db` under the directory, `None` when it is not under it.
    pub fn relative<'p>(&self, db: &'p Path) -> Option<&'p Path> {
        db.strip_prefix(&self.dir)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
    }

    /// Whether a database at `path` belongs to this entry: under the directory (directly,
    /// unless recursive) and named to match the pattern.
    pub fn covers(&self, path: &Path) -> bool {
        let Some(relative) = self.relative(path) else {
            return false;
        };
        (self.recursive || relative.components().count() == 1)
            && path.file_name().is_some_and(|n| self.matches(n))
    }

    /// The config entry of one database found under the directory: the template with its
    /// own path, local state directory and replica.
    pub fn entry(&self, db: &Path) -> DbConfig {
        let mut entry = self.template.clone();
        entry.path = db.to_path_buf();
        let relative = self.relative(db).unwrap_or(Path::new(""));
        entry.meta_path = match (&self.meta_dir, &self.meta_path) {
            (Some(base), _) => {
                let mut name = base.join(relative).into_os_string();
                name.push(META_DIR_SUFFIX);
                PathBuf::from(name)
            }
            (None, Some(base)) => {
                let dir = relative.parent().map_or(base.clone(), |p| base.join(p));
                default_meta_path(&dir.join(relative.file_name().unwrap_or_default()))
            }
            (None, None) => default_meta_path(db),
        };
        let rel = relative.to_string_lossy().replace('\\', "/");
        entry.replica = entry.replica.take().map(|rc| with_relative(rc, &rel));
        entry.replicas = std::mem::take(&mut entry.replicas)
            .into_iter()
            .map(|rc| with_relative(rc, &rel))
            .collect();
        entry
    }
}

/// A replica config moved down to one database's place (Litestream's
/// `cloneReplicaConfigWithRelativePath`): the relative path goes on the URL when there is one,
/// else on `path` (joined as a file path for file replicas, with `/` for object stores).
fn with_relative(mut rc: ReplicaConfig, relative: &str) -> ReplicaConfig {
    if let Some(url) = rc.url.as_deref().filter(|u| !u.is_empty()) {
        rc.url = Some(join_path(url, relative));
        return rc;
    }
    let base = rc.path.take().unwrap_or_default();
    rc.path = Some(if rc.type_name() == "file" {
        Path::new(&base)
            .join(relative)
            .to_string_lossy()
            .into_owned()
    } else if base.is_empty() {
        relative.to_string()
    } else {
        format!("{}/{relative}", base.trim_end_matches('/'))
    });
    rc
}

/// Parses a `dbs[i]` entry that has `dir:` (the caller saw the key).
pub(super) fn parse_dir_entry(
    ctx: &mut Ctx,
    mut m: MapView,
    node: &Node,
    path: &str,
    defaults: &ReplicaDefaults,
) -> Result<(DirConfig, SnapshotSection), ConfigError> {
    let invalid = |ctx: &Ctx, msg: &str| ctx.error(ConfigErrorKind::Invalid, node, path, msg);
    if m.has("path") {
        return Err(invalid(ctx, "cannot specify both 'path' and 'dir'"));
    }
    let dir_field = m.take("dir").expect("the caller saw 'dir'");
    let Some(text) = dir_field.string(ctx)? else {
        return Err(dir_field.error(ctx, ConfigErrorKind::Invalid, "must not be empty"));
    };
    let dir = ctx
        .resolve_path(&text)
        .map_err(|e| dir_field.error(ctx, ConfigErrorKind::Invalid, e))?;
    let Some(pattern_field) = m.take("pattern") else {
        return Err(invalid(ctx, "'pattern' is required when using 'dir'"));
    };
    let Some(pattern) = pattern_field.string(ctx)? else {
        return Err(invalid(ctx, "'pattern' is required when using 'dir'"));
    };
    let glob = glob::Pattern::new(&pattern).map_err(|e| {
        pattern_field.error(
            ctx,
            ConfigErrorKind::Invalid,
            format!("invalid pattern {pattern:?}: {e}"),
        )
    })?;
    let mut flag = |ctx: &mut Ctx, key: &str| -> Result<bool, ConfigError> {
        Ok(match m.take(key) {
            Some(f) => f.bool(ctx)?.unwrap_or(false),
            None => false,
        })
    };
    let recursive = flag(ctx, "recursive")?;
    let watch = flag(ctx, "watch")?;
    let mut base_path = |ctx: &mut Ctx, key: &str| -> Result<Option<PathBuf>, ConfigError> {
        let Some(f) = m.take(key) else {
            return Ok(None);
        };
        match f.string(ctx)? {
            Some(text) => ctx
                .resolve_path(&text)
                .map(Some)
                .map_err(|e| f.error(ctx, ConfigErrorKind::Invalid, e)),
            None => Ok(None),
        }
    };
    let meta_dir = base_path(ctx, "meta-dir")?;
    let meta_path = base_path(ctx, "meta-path")?;
    if meta_dir.is_some() && meta_path.is_some() {
        return Err(invalid(
            ctx,
            "cannot specify both 'meta-path' and 'meta-dir'",
        ));
    }
    let mut template = DbConfig::new(dir.clone(), ReplicaConfig::default());
    template.replica = None;
    parse_db_timings(ctx, &mut m, &mut template)?;
    if m.has("follow") {
        // A follower would have to discover the primary's databases in the replica.
        return Err(invalid(ctx, "'follow' is not supported with 'dir'"));
    }
    parse_db_role(ctx, &mut m, &mut template)?;
    let snapshot = match m.take("snapshot") {
        Some(f) => parse_snapshot_section(ctx, &f)?,
        None => SnapshotSection::default(),
    };
    parse_db_replicas(ctx, &mut m, node, path, defaults, &mut template)?;
    m.finish(ctx, &[super::sections::DB_NOT_YET]);
    Ok((
        DirConfig {
            dir,
            pattern,
            recursive,
            watch,
            meta_dir,
            meta_path,
            template,
            glob,
        },
        snapshot,
    ))
}
