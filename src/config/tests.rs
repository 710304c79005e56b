//! `Config::parse` and `Config::load` end to end: defaults, every key, warnings, errors.

use super::*;
use crate::replica::url::tests::s3;
use std::collections::HashMap;

/// An environment made of the given pairs.
pub(super) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

pub(super) fn no_env(_: &str) -> Option<String> {
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
    assert_eq!(c.defaults.s3.access_key_id.as_deref(), Some("AKIAGLOBAL"));
    assert_eq!(
        c.defaults.s3.secret_access_key.as_deref(),
        Some("globalsecret")
    );
    assert_eq!(c.defaults.s3.region.as_deref(), Some("eu-west-1"));
    assert_eq!(c.defaults.sync_interval, Some(Duration::from_secs(10)));
    assert_eq!(c.defaults.s3.skip_verify, Some(true));
    assert_eq!(c.defaults.s3.force_path_style, Some(false));

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
    assert_eq!(r.s3.access_key_id.as_deref(), Some("AKIAGLOBAL"));
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
fn explicit_keys_win_over_the_url() {
    let rc = ReplicaConfig {
        url: Some("s3://bkt/p?region=url-region&endpoint=http://url:9000&skipVerify=true".into()),
        s3: S3Keys {
            region: Some("key-region".into()),
            endpoint: Some("https://key.example.com".into()),
            force_path_style: Some(false),
            skip_verify: Some(false),
            ..S3Keys::default()
        },
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
    let e =
        parse_err("dbs:\n  - path: /a.db\n    busy-timeout: 5\n    replica: {url: file:///b}\n");
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
        ("dbs:\n  - replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0]: must specify either 'path' or 'dir'"),
        ("dbs:\n  - dir: /data\n    replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0]: 'pattern' is required when using 'dir'"),
        ("dbs:\n  - dir: /data\n    path: /data/a.db\n    pattern: \"*.db\"\n    replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0]: cannot specify both 'path' and 'dir'"),
        ("dbs:\n  - path: /data/a.db\n    watch: true\n    replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0]: 'watch' can only be used with a directory ('dir')"),
        ("dbs:\n  - path: /data/a.db\n    meta-dir: /m\n    replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0]: 'meta-dir' can only be used with a directory ('dir')"),
        ("dbs:\n  - dir: /data\n    pattern: \"*.db\"\n    meta-dir: /m\n    meta-path: /n\n    replica: {url: file:///b}\n", "litestream.yml:2:5: dbs[0]: cannot specify both 'meta-path' and 'meta-dir'"),
        ("dbs:\n  - dir: /data\n    pattern: \"[*.db\"\n    replica: {url: file:///b}\n", "litestream.yml:3:5: dbs[0].pattern: invalid pattern \"[*.db\": Pattern syntax error near position 0: invalid range pattern"),
        ("dbs:\n  - dir: /data\n    pattern: \"*.db\"\n", "litestream.yml:2:5: dbs[0]: must specify replica for database"),
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

#[test]
fn directory_entries_give_each_database_its_replica_and_state() {
    let text = "dbs:
  - dir: /data
    pattern: \"*.db\"
    recursive: true
    watch: true
    monitor-interval: 5s
    replica:
      url: s3://bucket/prefix?endpoint=http://127.0.0.1:9000
  - dir: /other
    pattern: \"t?.sqlite\"
    meta-dir: /var/lib/ls
    replica:
      type: file
      path: /backup
  - dir: /third
    pattern: \"*\"
    meta-path: /state
    replica:
      url: file:///b3
";
    let config = parse_ok(text);
    assert!(config.dbs.is_empty());
    let [a, b, c] = &config.dirs[..] else {
        panic!("three directories: {:?}", config.dirs)
    };
    assert!(a.recursive && a.watch && !b.recursive && !b.watch);
    assert!(a.matches("x.db".as_ref()) && !a.matches("x.db-wal".as_ref()));
    assert!(b.matches("t1.sqlite".as_ref()) && !b.matches("t12.sqlite".as_ref()));

    let e = a.entry(Path::new("/data/tenants/t1.db"));
    assert_eq!(e.path, PathBuf::from("/data/tenants/t1.db"));
    assert_eq!(e.monitor_interval, Duration::from_secs(5));
    assert_eq!(
        e.meta_path,
        PathBuf::from("/data/tenants/.t1.db-litestream")
    );
    assert_eq!(
        e.active_replica().unwrap().url.as_deref(),
        Some("s3://bucket/prefix/tenants/t1.db?endpoint=http://127.0.0.1:9000")
    );

    let e = b.entry(Path::new("/other/t1.sqlite"));
    assert_eq!(
        e.meta_path,
        PathBuf::from("/var/lib/ls/t1.sqlite-litestream")
    );
    assert_eq!(
        e.active_replica().unwrap().path.as_deref(),
        Some("/backup/t1.sqlite")
    );

    let e = c.entry(Path::new("/third/x/y.db"));
    assert_eq!(e.meta_path, PathBuf::from("/state/x/.y.db-litestream"));
    assert_eq!(
        e.active_replica().unwrap().url.as_deref(),
        Some("file:///b3/x/y.db")
    );
}

#[test]
fn pattern_and_recursive_on_a_path_entry_are_warned_about() {
    let text = "dbs:\n  - path: /a.db\n    pattern: \"*.db\"\n    replica: {url: file:///b}\n";
    assert_eq!(
        warnings(text),
        ["litestream.yml:3:5: key \"dbs[0].pattern\" is only used with 'dir' (ignored)"]
    );
}

// --- roles: follow and lease -------------------------------------------------------------

#[test]
fn role_keys_default_to_a_primary_without_a_lease() {
    let c = parse_ok("dbs:\n  - path: /d/a.db\n    replica:\n      url: file:///r\n");
    assert_eq!(c.dbs[0].role, RoleConfig::default());
    assert!(!c.dbs[0].role.follow && !c.dbs[0].role.lease);
    assert_eq!(c.dbs[0].role.lease_ttl, Duration::from_secs(30));
    assert_eq!(c.dbs[0].role.follow_interval, Duration::from_secs(1));
    let c = parse_ok(
        "dbs:\n  - path: /d/a.db\n    follow: true\n    follow-interval: 250ms\n    lease: true\n    lease-ttl: 1m\n    replica:\n      url: file:///r\n",
    );
    let role = &c.dbs[0].role;
    assert!(role.follow && role.lease);
    assert_eq!(role.follow_interval, Duration::from_millis(250));
    assert_eq!(role.lease_ttl, Duration::from_secs(60));
}

#[test]
fn role_keys_are_checked() {
    let e = parse_err(
        "dbs:\n  - path: /d/a.db\n    lease-ttl: 1s\n    replica:\n      url: file:///r\n",
    );
    assert!(e.to_string().contains("lease-ttl"), "{e}");
    assert!(e.to_string().contains("at least 3s"), "{e}");
    let e = parse_err(
        "dbs:\n  - path: /d/a.db\n    follow: maybe\n    replica:\n      url: file:///r\n",
    );
    assert!(e.to_string().contains("follow"), "{e}");
    let e = parse_err(
        "dbs:\n  - path: /d/a.db\n    follow-interval: 0s\n    replica:\n      url: file:///r\n",
    );
    assert!(e.to_string().contains("follow-interval"), "{e}");
    let e = parse_err(
        "dbs:\n  - dir: /d\n    pattern: '*.db'\n    follow: true\n    replica:\n      url: file:///r\n",
    );
    assert!(
        e.to_string()
            .contains("'follow' is not supported with 'dir'"),
        "{e}"
    );
    // A directory's databases may hold the lease.
    let c = parse_ok(
        "dbs:\n  - dir: /d\n    pattern: '*.db'\n    lease: true\n    replica:\n      url: file:///r\n",
    );
    assert!(c.dirs[0].entry(Path::new("/d/a.db")).role.lease);
    let w = warnings(
        "dbs:\n  - path: /d/a.db\n    follow-interval: 5s\n    replica:\n      url: file:///r\n",
    );
    assert!(
        w.iter()
            .any(|w| w.contains("follow-interval") && w.contains("follow: true")),
        "{w:?}"
    );
}
