//! The S3 client's tests: the object key layout, S3 errors described, classified and masked,
//! and credentials kept out of `Debug`.

use super::*;

fn target(path: &str) -> S3Target {
    S3Target {
        bucket: "bkt".into(),
        path: path.into(),
        region: Some("us-east-1".into()),
        endpoint: Some("http://127.0.0.1:9".into()),
        force_path_style: true,
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("very-secret-key".into()),
        skip_verify: false,
    }
}

#[test]
fn keys_follow_litestream_layout() {
    let c = S3ReplicaClient::new("s3://bkt/prod/app.db", &target("prod/app.db")).unwrap();
    assert_eq!(
        c.key(Level::L0, TxId::new(1), TxId::new(1)),
        "prod/app.db/0000/0000000000000001-0000000000000001.ltx"
    );
    assert_eq!(
        c.key(Level::SNAPSHOT, TxId::new(1), TxId::new(0xab)),
        "prod/app.db/0009/0000000000000001-00000000000000ab.ltx"
    );
    let root = S3ReplicaClient::new("s3://bkt", &target("")).unwrap();
    assert_eq!(root.level_prefix(Level::SNAPSHOT), "0009/");
}

#[test]
fn errors_are_reduced_and_masked() {
    let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message><StringToSign>very-secret-key</StringToSign></Error>";
    let e = S3Error::HttpFailWithBody(403, body.into());
    assert_eq!(
        describe(&e),
        "HTTP 403 SignatureDoesNotMatch: The request signature we calculated does not match (access denied: check access-key-id and secret-access-key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    );
    let c = S3ReplicaClient::new("s3://bkt/x", &target("x")).unwrap();
    let e = S3Error::HttpFailWithBody(
        500,
        "<Error><Code>X</Code><Message>very-secret-key</Message></Error>".into(),
    );
    let text = format!("{:#}", c.fail("PUT", "x/0000/a.ltx", &e));
    assert!(!text.contains("very-secret-key"), "{text}");
    assert!(
        text.starts_with("s3://bkt/x: PUT x/0000/a.ltx: HTTP 500 X"),
        "{text}"
    );
    assert_eq!(
        describe(&S3Error::HttpFailWithBody(403, String::new())),
        "HTTP 403 (access denied: check access-key-id and secret-access-key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    );
}

#[test]
fn s3_errors_map_to_kinds() {
    let body = |code: &str| format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
    let http = |status, code: &str| S3Error::HttpFailWithBody(status, body(code));
    assert_eq!(kind(&http(404, "NoSuchKey")), ErrorKind::NotFound);
    assert_eq!(kind(&http(404, "NoSuchBucket")), ErrorKind::Permanent);
    assert_eq!(kind(&http(412, "PreconditionFailed")), ErrorKind::Conflict);
    assert_eq!(
        kind(&http(409, "ConditionalRequestConflict")),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(&http(403, "SignatureDoesNotMatch")),
        ErrorKind::Permanent
    );
    assert_eq!(kind(&http(403, "AccessDenied")), ErrorKind::Permanent);
    assert_eq!(kind(&http(400, "RequestTimeout")), ErrorKind::Transient);
    assert_eq!(kind(&http(429, "TooManyRequests")), ErrorKind::Transient);
    assert_eq!(kind(&http(503, "SlowDown")), ErrorKind::Transient);
    assert_eq!(kind(&http(500, "InternalError")), ErrorKind::Transient);
    assert_eq!(kind(&http(501, "NotImplemented")), ErrorKind::Permanent);
    assert_eq!(kind(&http(301, "PermanentRedirect")), ErrorKind::Permanent);
    // A HEAD has no body: the status alone decides.
    assert_eq!(
        kind(&S3Error::HttpFailWithBody(404, String::new())),
        ErrorKind::NotFound
    );
    assert_eq!(kind(&S3Error::HttpFail), ErrorKind::Transient);
    // The network: refused, reset, timed out.
    for errno in [libc::ECONNREFUSED, libc::ECONNRESET, libc::ETIMEDOUT] {
        let io = std::io::Error::from_raw_os_error(errno);
        assert_eq!(kind(&S3Error::Io(io)), ErrorKind::Transient, "{errno}");
    }
    // A request that cannot be made.
    assert_eq!(
        kind(&S3Error::HttpFailWithBody(400, body("InvalidArgument"))),
        ErrorKind::Permanent
    );
    assert_eq!(kind(&S3Error::MaxExpiry(1)), ErrorKind::Permanent);

    // Through the client: the kind travels with the message.
    let c = S3ReplicaClient::new("s3://bkt/x", &target("x")).unwrap();
    let e = c.fail("GET", "x/0000/a.ltx", &http(404, "NoSuchKey"));
    assert!(e.is_not_found());
    assert_eq!(
        e.to_string(),
        "s3://bkt/x: GET x/0000/a.ltx: HTTP 404 NoSuchKey: m (no such bucket or key)"
    );
    assert_eq!(
        c.fail("PUT", "k", &http(403, "AccessDenied")).kind(),
        ErrorKind::Permanent
    );
}

#[test]
fn an_unreachable_server_is_transient() {
    // Port 9 on localhost: nothing listens, the connection is refused.
    let c = S3ReplicaClient::new("s3://bkt/x", &target("x")).unwrap();
    let e = c.ltx_files(Level::L0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e:#}");
    let e = c
        .open_ltx(Level::L0, TxId::new(1), TxId::new(1))
        .err()
        .expect("an error");
    assert_eq!(e.kind(), ErrorKind::Transient, "{e:#}");
    assert!(e.to_string().starts_with("s3://bkt/x: GET x/0000/"), "{e}");
}

#[test]
fn debug_hides_credentials() {
    let c = S3ReplicaClient::new("s3://bkt/x", &target("x")).unwrap();
    let d = format!("{c:?}");
    assert!(
        !d.contains("very-secret-key") && !d.contains("AKIDEXAMPLE"),
        "{d}"
    );
}
