//! The replica URL parser's tests (file and S3 URLs, host forms, query options, credentials
//! from the environment, errors without secrets), and the `s3` helper the config tests share.

use super::*;

/// An environment made of the given pairs.
fn env_of(pairs: &'static [(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

pub(crate) fn s3(target: ReplicaTarget) -> S3Target {
    match target {
        ReplicaTarget::S3(t) => t,
        other => panic!("expected s3, got {other:?}"),
    }
}

// --- replica URLs -----------------------------------------------------------------------

#[test]
fn file_urls_and_plain_absolute_paths() {
    let file = |p: &str| ReplicaTarget::File { root: p.into() };
    assert_eq!(
        parse_replica_url("file:///var/backups/app").unwrap(),
        file("/var/backups/app")
    );
    assert_eq!(
        parse_replica_url("file:///var/backups/app/?x=1").unwrap(),
        file("/var/backups/app")
    );
    assert_eq!(
        parse_replica_url("FILE:///a/./b/../c").unwrap(),
        file("/a/c")
    );
    assert_eq!(
        parse_replica_url("file:///with%20space").unwrap(),
        file("/with space")
    );
    assert_eq!(
        parse_replica_url("/srv/replica").unwrap(),
        file("/srv/replica")
    );
}

#[test]
fn bad_file_urls_are_refused_with_reasons() {
    let msg = |u: &str| parse_replica_url(u).unwrap_err().to_string();
    assert!(
        msg("relative/dir").contains("scheme required"),
        "{}",
        msg("relative/dir")
    );
    assert!(msg("file://host/dir").contains("names a host"));
    assert!(msg("file:relative").contains("must be absolute"));
    assert!(msg("file://").contains("must be absolute"));
    assert_eq!(msg(""), "replica url is empty");
}

#[test]
fn s3_urls_with_query_parameters() {
    let t = s3(parse_replica_url(
        "s3://bkt/some/prefix/?endpoint=localhost:9000&region=eu-1&skipVerify=true",
    )
    .unwrap());
    assert_eq!(t.bucket, "bkt");
    assert_eq!(t.path, "some/prefix");
    assert_eq!(t.endpoint.as_deref(), Some("http://localhost:9000"));
    assert_eq!(t.region.as_deref(), Some("eu-1"));
    assert!(t.force_path_style, "endpoint implies path style");
    assert!(t.skip_verify);

    let t = s3(parse_replica_url("s3://bkt?endpoint=s3.example.com&forcePathStyle=false").unwrap());
    assert_eq!(t.path, "");
    assert_eq!(t.endpoint.as_deref(), Some("https://s3.example.com"));
    assert!(!t.force_path_style, "explicit false wins");

    let t = s3(parse_replica_url("s3://bkt/p?forcePathStyle=true").unwrap());
    assert!(t.force_path_style);
    assert_eq!(t.endpoint, None);

    let t = s3(parse_replica_url("s3://bkt/a%2Fb/c").unwrap());
    assert_eq!(t.path, "a/b/c");
}

#[test]
fn s3_host_forms() {
    let t = s3(parse_replica_url("s3://bkt.s3.us-west-2.amazonaws.com/p").unwrap());
    assert_eq!(
        (
            t.bucket.as_str(),
            t.region.as_deref(),
            t.endpoint.as_deref()
        ),
        ("bkt", Some("us-west-2"), None)
    );
    let t = s3(parse_replica_url("s3://bkt.s3.amazonaws.com/p").unwrap());
    assert_eq!((t.bucket.as_str(), t.region.as_deref()), ("bkt", None));
    let t = s3(parse_replica_url("s3://bkt.minio:9000/p").unwrap());
    assert_eq!(t.bucket, "bkt");
    assert_eq!(t.endpoint.as_deref(), Some("http://minio:9000"));
    assert_eq!(t.region.as_deref(), Some("us-east-1"));
    assert!(t.force_path_style);
    let t = s3(parse_replica_url("s3://bkt.nyc3.digitaloceanspaces.com/p").unwrap());
    assert_eq!(
        t.endpoint.as_deref(),
        Some("https://nyc3.digitaloceanspaces.com")
    );
    assert_eq!(t.bucket, "bkt");
    let t = s3(parse_replica_url(
        "s3://arn:aws:s3:us-east-1:123456789012:accesspoint/my-ap/pre/fix",
    )
    .unwrap());
    assert_eq!(
        t.bucket,
        "arn:aws:s3:us-east-1:123456789012:accesspoint/my-ap"
    );
    assert_eq!(t.path, "pre/fix");
    assert_eq!(t.region.as_deref(), Some("us-east-1"));
}

#[test]
fn bad_s3_urls_are_refused_with_reasons() {
    let msg = |u: &str| parse_replica_url(u).unwrap_err().to_string();
    assert_eq!(msg("s3:///prefix"), "bucket required for s3 replica");
    assert_eq!(
        msg("s3://b/p?forcePathStyle=maybe"),
        "invalid value for query parameter \"forcePathStyle\": \"maybe\" (expected true or false)"
    );
    assert!(msg("s3://b/p?skipVerify=2").contains("skipVerify"));
    assert!(msg("s3://b/%zz").contains("invalid %-escape"));
}

#[test]
fn other_schemes_are_named_as_unsupported_or_unknown() {
    for scheme in ["gs", "abs", "sftp", "webdav", "webdavs", "nats", "oss"] {
        let e = parse_replica_url(&format!("{scheme}://host/path")).unwrap_err();
        assert!(e.message.contains("not supported by this build"), "{e}");
    }
    assert!(parse_replica_url("gcs://b/p")
        .unwrap_err()
        .message
        .contains("gs://"));
    assert_eq!(
        parse_replica_url("ftp://h/p").unwrap_err().message,
        "unknown replica type \"ftp\" (supported: file, s3)"
    );
}

#[test]
fn env_credentials_fill_gaps_in_litestream_order() {
    let base = || s3(parse_replica_url("s3://b/p").unwrap());
    let both = env_of(&[
        ("AWS_ACCESS_KEY_ID", "aws-id"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
        ("LITESTREAM_ACCESS_KEY_ID", "ls-id"),
        ("LITESTREAM_SECRET_ACCESS_KEY", "ls-secret"),
    ]);
    let t = base().with_env_credentials(&both);
    assert_eq!(t.access_key_id.as_deref(), Some("aws-id"));
    assert_eq!(t.secret_access_key.as_deref(), Some("aws-secret"));

    let ls_only = env_of(&[
        ("AWS_ACCESS_KEY_ID", ""),
        ("LITESTREAM_ACCESS_KEY_ID", "ls-id"),
        ("LITESTREAM_SECRET_ACCESS_KEY", "ls-secret"),
    ]);
    let t = base().with_env_credentials(ls_only);
    assert_eq!(t.access_key_id.as_deref(), Some("ls-id"));
    assert_eq!(t.secret_access_key.as_deref(), Some("ls-secret"));

    let mut configured = base();
    configured.access_key_id = Some("cfg-id".into());
    let t = configured.with_env_credentials(&both);
    assert_eq!(t.access_key_id.as_deref(), Some("cfg-id"), "config wins");
    assert_eq!(t.secret_access_key.as_deref(), Some("aws-secret"));

    assert_eq!(
        base().with_env_credentials(|_: &str| None).access_key_id,
        None
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    let e = parse_replica_url("s3://user:hunter2@b/p").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = parse_replica_url("s3://user:hunter2@b/%zz").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = parse_replica_url("ftp://user:hunter2@h/p").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn percent_escapes_decode_as_go_does() {
    assert_eq!(percent_decode("a+b%20c", false).unwrap(), "a+b c");
    assert_eq!(percent_decode("a+b%2Bc", true).unwrap(), "a b+c");
    for bad in ["%", "%2", "%zz", "%+1", "a%g0"] {
        assert_eq!(
            percent_decode(bad, false),
            Err("invalid %-escape".into()),
            "{bad}"
        );
    }
    assert!(percent_decode("%ff", false).unwrap_err().contains("UTF-8"));
}

#[test]
fn join_path_appends_the_relative_path_as_litestream_does() {
    let cases = [
        ("file:///backup", "app.db", "file:///backup/app.db"),
        ("file:///backup/", "sub/app.db", "file:///backup/sub/app.db"),
        ("s3://bucket", "a/b.db", "s3://bucket/a/b.db"),
        (
            "s3://bucket/prefix?endpoint=http://127.0.0.1:9000&forcePathStyle=true",
            "t1/app.db",
            "s3://bucket/prefix/t1/app.db?endpoint=http://127.0.0.1:9000&forcePathStyle=true",
        ),
        ("/backup", "sub/app.db", "/backup/sub/app.db"),
        (
            "file:///backup",
            "with space/%.db",
            "file:///backup/with%20space/%25.db",
        ),
        ("file:///backup", "", "file:///backup"),
    ];
    for (url, rel, want) in cases {
        assert_eq!(join_path(url, rel), want, "{url} + {rel}");
    }
    // What it builds parses back to the joined location.
    match parse_replica_url(&join_path("file:///backup", "with space/x.db")).unwrap() {
        ReplicaTarget::File { root } => {
            assert_eq!(root, PathBuf::from("/backup/with space/x.db"))
        }
        other => panic!("{other:?}"),
    }
    let t = s3(parse_replica_url(&join_path("s3://bucket/prefix", "t1/app.db")).unwrap());
    assert_eq!(t.path, "prefix/t1/app.db");
}

#[test]
fn s3_keys_given_win_and_the_fallback_fills_the_rest() {
    let own = S3Keys {
        region: Some("own".into()),
        force_path_style: Some(false),
        ..S3Keys::default()
    };
    let fallback = S3Keys {
        region: Some("top".into()),
        endpoint: Some("http://top:9000".into()),
        force_path_style: Some(true),
        skip_verify: Some(true),
        access_key_id: Some("top-id".into()),
        secret_access_key: Some("top-secret".into()),
    };
    let merged = own.or(&fallback);
    assert_eq!(
        merged,
        S3Keys {
            region: Some("own".into()),
            force_path_style: Some(false),
            ..fallback.clone()
        }
    );
    let shown = format!("{merged:?}");
    assert!(
        !shown.contains("top-secret") && !shown.contains("top-id"),
        "{shown}"
    );
}
