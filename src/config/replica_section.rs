//! The replica sections of `litestream.yml`: a database's `replica` (or legacy `replicas`), one
//! replica mapping, and the replica settings that are valid both at the top level and in a
//! replica, merged with Litestream 0.5.17's precedence.

use super::error::{quote, ConfigError, ConfigErrorKind};
use super::yaml::{Ctx, Kind, MapView, Node};
use super::{DbConfig, ReplicaConfig, ReplicaDefaults, DEFAULT_SYNC_INTERVAL};
use crate::replica::url;

/// Keys of Litestream's `ReplicaSettings` (valid globally and per replica) not implemented here.
pub(super) const REPLICA_SETTINGS_NOT_YET: &[&str] = &[
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

/// `replica` / legacy `replicas`: exactly one replica in total (main.go `NewDBFromConfig`).
pub(super) fn parse_db_replicas(
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
pub(super) fn parse_replica(
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
pub(super) fn parse_replica_settings(
    ctx: &mut Ctx,
    m: &mut MapView,
) -> Result<ReplicaDefaults, ConfigError> {
    let mut s = ReplicaDefaults::default();
    let strings: [(&str, &mut Option<String>); 5] = [
        ("access-key-id", &mut s.s3.access_key_id),
        ("secret-access-key", &mut s.s3.secret_access_key),
        ("region", &mut s.s3.region),
        ("bucket", &mut s.bucket),
        ("endpoint", &mut s.s3.endpoint),
    ];
    for (name, slot) in strings {
        if let Some(f) = m.take(name) {
            *slot = f.string(ctx)?;
        }
    }
    if let Some(f) = m.take("force-path-style") {
        s.s3.force_path_style = f.bool(ctx)?;
    }
    if let Some(f) = m.take("skip-verify") {
        s.s3.skip_verify = f.bool(ctx)?;
    }
    if let Some(f) = m.take("sync-interval") {
        s.sync_interval = f.positive_duration(ctx)?;
    }
    Ok(s)
}

/// Litestream refuses `age` encryption settings (it would upload plaintext); so do we. An
/// empty `age:` section is only ignored.
pub(super) fn reject_age(ctx: &mut Ctx, m: &mut MapView) -> Result<(), ConfigError> {
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
pub(super) fn merge_settings(
    rc: &mut ReplicaConfig,
    own: ReplicaDefaults,
    defaults: &ReplicaDefaults,
) {
    let has_url = rc.url.is_some();
    rc.s3 = own.s3.or(&defaults.s3);
    rc.bucket = own
        .bucket
        .or_else(|| defaults.bucket.clone().filter(|_| !has_url));
    rc.sync_interval = own
        .sync_interval
        .or(defaults.sync_interval)
        .unwrap_or(DEFAULT_SYNC_INTERVAL);
}
