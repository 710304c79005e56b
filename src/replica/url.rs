//! Replica URLs: `file:///dir`, a plain absolute path, or `s3://bucket/prefix?query`, resolved
//! into the [`ReplicaTarget`] a replica client is built from (Litestream's `replica_url.go` and
//! s3 `ParseHost`). The config merges a replica's explicit keys on top ([`S3Keys`]); nothing
//! here reads a config file.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode_str;

/// Region Litestream assumes for `bucket.host:port` URLs (s3/replica_client.go `DefaultRegion`).
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// Replica URL schemes Litestream 0.5.17 supports and this build does not.
const UNSUPPORTED_SCHEMES: &[&str] = &["gs", "abs", "sftp", "webdav", "webdavs", "nats", "oss"];
/// What `Debug` prints in place of a secret.
const REDACTED: &str = "[redacted]";

/// A replica URL that cannot be used, in words that never contain its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UrlError {}

/// Where a replica's bytes go, fully resolved: what the replica clients are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaTarget {
    /// A directory on the local file system.
    File {
        /// Absolute directory that holds `ltx/<level>/...`.
        root: PathBuf,
    },
    /// An S3 or S3-compatible bucket.
    S3(S3Target),
}

/// An S3 destination. `Debug` redacts the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Target {
    /// Bucket name (or access point ARN).
    pub bucket: String,
    /// Key prefix, without leading or trailing `/` (empty for the bucket root).
    pub path: String,
    /// Region; `None` lets the client pick (AWS default chain or `us-east-1`).
    pub region: Option<String>,
    /// Endpoint URL with scheme (`http://` for local hosts, `https://` otherwise).
    pub endpoint: Option<String>,
    /// Path-style addressing; true when an endpoint is set unless explicitly false.
    pub force_path_style: bool,
    /// Access key id from the config, or from the environment after
    /// [`S3Target::with_env_credentials`].
    pub access_key_id: Option<String>,
    /// Secret access key, same sources as `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Skip TLS certificate verification.
    pub skip_verify: bool,
}

impl fmt::Debug for S3Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target")
            .field("bucket", &self.bucket)
            .field("path", &self.path)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &redact(&self.access_key_id))
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("skip_verify", &self.skip_verify)
            .finish()
    }
}

impl S3Target {
    /// Fills missing credentials from the environment in Litestream's order: the config wins,
    /// then `AWS_*`, then `LITESTREAM_*` (Litestream copies `LITESTREAM_*` into `AWS_*` only
    /// when `AWS_*` is unset: main.go `applyLitestreamEnv`). Empty variables count as unset.
    /// `env` is injected so tests do not touch the process environment.
    pub fn with_env_credentials(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        let lookup = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|name| env(name).filter(|v| !v.is_empty()))
        };
        if self.access_key_id.is_none() {
            self.access_key_id = lookup(["AWS_ACCESS_KEY_ID", "LITESTREAM_ACCESS_KEY_ID"]);
        }
        if self.secret_access_key.is_none() {
            self.secret_access_key =
                lookup(["AWS_SECRET_ACCESS_KEY", "LITESTREAM_SECRET_ACCESS_KEY"]);
        }
        self
    }
}

/// Parses a replica URL on its own (no config keys merged): `file:///abs/dir`, a plain absolute
/// path, or `s3://bucket/prefix?endpoint=...&region=...&forcePathStyle=true&skipVerify=true`.
/// Schemes Litestream supports but this build does not are refused with "not supported by this
/// build". Errors never echo credentials embedded in the URL.
pub fn parse_replica_url(url: &str) -> Result<ReplicaTarget, UrlError> {
    let parts = split_url(url)?;
    match parts.scheme.as_deref() {
        None => plain_path_target(url),
        Some("file") => file_url_target(url, &parts),
        Some("s3") => {
            let s3 = s3_url_parts(url, &parts)?;
            finish_s3(s3, &S3Keys::default()).map(ReplicaTarget::S3)
        }
        Some(scheme) => Err(unsupported_type(scheme)),
    }
}

/// A replica's S3 settings as written in the config (`region`, `endpoint`, `force-path-style`,
/// `skip-verify`, `access-key-id`, `secret-access-key`), each `None` when not given. The config
/// holds them once, at the top level and per replica; resolving a target lets them win over
/// what the URL says. Credentials come only from here or the environment, never from the URL.
/// `Debug` redacts the credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Keys {
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
}

impl S3Keys {
    /// Each key given here, else the one in `fallback`: how the top-level settings fill in
    /// what a replica leaves out (main.go `ReplicaSettings.SetDefaults`).
    pub fn or(self, fallback: &S3Keys) -> S3Keys {
        S3Keys {
            region: self.region.or_else(|| fallback.region.clone()),
            endpoint: self.endpoint.or_else(|| fallback.endpoint.clone()),
            force_path_style: self.force_path_style.or(fallback.force_path_style),
            skip_verify: self.skip_verify.or(fallback.skip_verify),
            access_key_id: self
                .access_key_id
                .or_else(|| fallback.access_key_id.clone()),
            secret_access_key: self
                .secret_access_key
                .or_else(|| fallback.secret_access_key.clone()),
        }
    }
}

impl fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Keys")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("access_key_id", &redact(&self.access_key_id))
            .field("secret_access_key", &redact(&self.secret_access_key))
            .finish()
    }
}

/// A URL split the way Go's `url.Parse` does, path and query decoded.
#[derive(Default)]
struct UrlParts {
    scheme: Option<String>,
    authority: Option<String>,
    userinfo: bool,
    host: String,
    path: String,
    query: Vec<(String, String)>,
}

/// Splits `scheme://[user@]host/path?query#fragment`. Strings without a scheme come back with
/// `scheme: None` and the whole text as path.
fn split_url(url: &str) -> Result<UrlParts, UrlError> {
    let Some(scheme_len) = scheme_length(url) else {
        return Ok(UrlParts {
            path: url.to_string(),
            ..UrlParts::default()
        });
    };
    let bad = |what: &str| {
        replica_error(format!(
            "invalid replica url {}: {what}",
            quote(&redact_url(url))
        ))
    };
    let rest = &url[scheme_len + 1..];
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, raw_path) = match rest.strip_prefix("//") {
        Some(after) => {
            let i = after.find('/').unwrap_or(after.len());
            (Some(after[..i].to_string()), &after[i..])
        }
        None => (None, rest),
    };
    let (userinfo, host) = match authority.as_deref().and_then(|a| a.rsplit_once('@')) {
        Some((_, host)) => (true, host.to_string()),
        None => (false, authority.clone().unwrap_or_default()),
    };
    if let Some(c) = host.chars().find(|&c| !is_host_char(c)) {
        return Err(bad(&format!("invalid character {c:?} in host name")));
    }
    Ok(UrlParts {
        scheme: Some(url[..scheme_len].to_ascii_lowercase()),
        authority,
        userinfo,
        host,
        path: percent_decode(raw_path, false).map_err(|e| bad(&e))?,
        query: parse_query(query).map_err(|e| bad(&e))?,
    })
}

/// Characters Go's `url.Parse` accepts in a host (unreserved, sub-delims, `:`, `[]`, `%`).
fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]%".contains(c)
}

/// Length of a leading RFC 3986 scheme followed by `:`, if any.
fn scheme_length(s: &str) -> Option<usize> {
    let i = s.find(':')?;
    let scheme = &s[..i];
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some(i)
}

/// The lowercase scheme of a URL that looks like `word://...` (Litestream's `IsURL`).
pub(crate) fn url_scheme(url: &str) -> Option<String> {
    if !is_url(url) {
        return None;
    }
    scheme_length(url).map(|n| url[..n].to_ascii_lowercase())
}

/// Litestream's `IsURL`: `^\w+://`.
pub(crate) fn is_url(s: &str) -> bool {
    s.find("://").is_some_and(|i| {
        i > 0
            && s[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// A replica URL without scheme: only an absolute path is accepted.
fn plain_path_target(url: &str) -> Result<ReplicaTarget, UrlError> {
    if url.is_empty() {
        return Err(replica_error("replica url is empty"));
    }
    let path = Path::new(url);
    if !path.is_absolute() {
        return Err(replica_error(format!(
            "replica url scheme required: {} (use file:///absolute/path or s3://bucket/path)",
            quote(&redact_url(url))
        )));
    }
    Ok(ReplicaTarget::File {
        root: clean_path(path),
    })
}

/// `file:///abs/dir`. Litestream turns `file://host/dir` into `/host/dir` and `file:dir` into a
/// path relative to the working directory; both are refused here as almost surely mistakes.
fn file_url_target(url: &str, parts: &UrlParts) -> Result<ReplicaTarget, UrlError> {
    let shown = quote(&redact_url(url));
    if parts.authority.as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(replica_error(format!(
            "invalid file replica url {shown}: it names a host; use file:///absolute/path"
        )));
    }
    if !parts.path.starts_with('/') {
        return Err(replica_error(format!(
            "invalid file replica url {shown}: the path must be absolute, e.g. file:///var/lib/backups/app"
        )));
    }
    Ok(ReplicaTarget::File {
        root: clean_path(Path::new(&parts.path)),
    })
}

/// What an `s3://` URL says, before explicit keys are merged in.
#[derive(Default)]
pub(crate) struct S3UrlParts {
    bucket: String,
    path: String,
    region: Option<String>,
    endpoint: Option<String>,
    /// `forcePathStyle` given in the query.
    force_path_style: Option<bool>,
    /// The host form implies path style (`bucket.host:port`, Backblaze).
    host_path_style: bool,
    skip_verify: Option<bool>,
}

impl S3UrlParts {
    /// What an `s3://` URL says.
    pub(crate) fn from_url(url: &str) -> Result<S3UrlParts, UrlError> {
        s3_url_parts(url, &split_url(url)?)
    }

    /// A replica written as `bucket` and `path` keys instead of a URL.
    pub(crate) fn from_keys(bucket: &str, path: &str) -> S3UrlParts {
        S3UrlParts {
            bucket: bucket.to_string(),
            path: clean_prefix(path),
            ..S3UrlParts::default()
        }
    }

    /// The target, with `keys` winning over what the URL said.
    pub(crate) fn finish(self, keys: &S3Keys) -> Result<S3Target, UrlError> {
        finish_s3(self, keys)
    }
}

/// Reads bucket, prefix, region and endpoint from an `s3://` URL (main.go
/// `NewS3ReplicaClientFromConfig`, s3 `ParseHost`, litestream.go `ParseReplicaURLWithQuery`).
fn s3_url_parts(url: &str, parts: &UrlParts) -> Result<S3UrlParts, UrlError> {
    if parts.userinfo {
        return Err(replica_error(
            "credentials in the replica url are not supported; use access-key-id and secret-access-key",
        ));
    }
    let mut s3 = if parts.host.to_ascii_lowercase().starts_with("arn:") {
        s3_access_point(url, parts)?
    } else {
        let host = parse_s3_host(&parts.host);
        S3UrlParts {
            bucket: host.bucket,
            path: clean_prefix(&parts.path),
            region: host.region,
            endpoint: host.endpoint,
            host_path_style: host.force_path_style,
            ..S3UrlParts::default()
        }
    };
    let get = |key: &str| query_get(&parts.query, key).filter(|v| !v.is_empty());
    if let Some(endpoint) = get("endpoint") {
        s3.endpoint = Some(ensure_endpoint_scheme(endpoint));
    }
    if let Some(region) = get("region") {
        s3.region = Some(region.to_string());
    }
    if let Some(v) = get("forcePathStyle") {
        s3.force_path_style = Some(query_bool("forcePathStyle", v)?);
    }
    if let Some(v) = get("skipVerify") {
        s3.skip_verify = Some(query_bool("skipVerify", v)?);
    }
    Ok(s3)
}

/// `s3://arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME/prefix` (litestream.go
/// `parseS3AccessPointURL`): the bucket is the ARN up to the access point name.
fn s3_access_point(url: &str, parts: &UrlParts) -> Result<S3UrlParts, UrlError> {
    let path = parts.path.trim_start_matches('/');
    let (name, prefix) = path.split_once('/').unwrap_or((path, ""));
    if !parts.host.to_ascii_lowercase().ends_with(":accesspoint") || name.is_empty() {
        return Err(replica_error(format!(
            "invalid s3 access point arn in {}",
            quote(&redact_url(url))
        )));
    }
    Ok(S3UrlParts {
        bucket: format!("{}/{name}", parts.host),
        path: clean_prefix(prefix),
        region: parts
            .host
            .split(':')
            .nth(3)
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        ..S3UrlParts::default()
    })
}

/// Combines URL parts with a replica's explicit keys (explicit wins) into the final target.
fn finish_s3(url: S3UrlParts, keys: &S3Keys) -> Result<S3Target, UrlError> {
    let endpoint = keys
        .endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(ensure_endpoint_scheme)
        .or(url.endpoint);
    let implied = endpoint.is_some()
        || url.host_path_style
        || endpoint.as_deref().is_some_and(requires_path_style);
    let target = S3Target {
        bucket: url.bucket,
        path: url.path,
        region: keys.region.clone().filter(|r| !r.is_empty()).or(url.region),
        force_path_style: keys
            .force_path_style
            .or(url.force_path_style)
            .unwrap_or(implied),
        endpoint,
        access_key_id: keys.access_key_id.clone(),
        secret_access_key: keys.secret_access_key.clone(),
        skip_verify: keys.skip_verify.or(url.skip_verify).unwrap_or(false),
    };
    if target.bucket.is_empty() {
        return Err(replica_error("bucket required for s3 replica"));
    }
    Ok(target)
}

/// What an S3 URL host says (s3/replica_client.go `ParseHost`).
struct S3Host {
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
    force_path_style: bool,
}

/// Recognises `bucket.host:port` (MinIO style), AWS virtual-host names and the providers
/// Litestream knows; any other host is the bucket name.
fn parse_s3_host(host: &str) -> S3Host {
    let mk = |bucket: &str, region: Option<&str>, endpoint: Option<String>, fps: bool| S3Host {
        bucket: bucket.to_string(),
        region: region.map(str::to_string),
        endpoint,
        force_path_style: fps,
    };
    if host.contains(':') && !host.contains(".com") {
        return match host.split_once('.') {
            Some((bucket, rest)) => mk(
                bucket,
                Some(DEFAULT_S3_REGION),
                Some(format!("http://{rest}")),
                true,
            ),
            None => mk("", None, Some(format!("http://{host}")), true),
        };
    }
    if let Some(rest) = host.strip_suffix(".amazonaws.com") {
        if let Some(bucket) = rest.strip_suffix(".s3") {
            return mk(bucket, None, None, false);
        }
        if let Some((pre, region)) = rest.rsplit_once('.') {
            if let Some(bucket) = pre.strip_suffix(".s3") {
                return mk(bucket, Some(region), None, false);
            }
        }
    }
    if let Some(rest) = host.strip_suffix(".digitaloceanspaces.com") {
        let (bucket, region) = rest.rsplit_once('.').unwrap_or(("", rest));
        let endpoint = format!("https://{region}.digitaloceanspaces.com");
        return mk(bucket, Some(region), Some(endpoint), false);
    }
    if let Some((bucket, region)) = provider_host(host, ".backblazeb2.com") {
        let endpoint = format!("https://s3.{region}.backblazeb2.com");
        return mk(&bucket, Some(&region), Some(endpoint), true);
    }
    if host == "s3.filebase.com" || host.ends_with(".s3.filebase.com") {
        let bucket = host
            .strip_suffix("s3.filebase.com")
            .unwrap_or("")
            .trim_end_matches('.');
        return mk(
            bucket,
            None,
            Some("https://s3.filebase.com".to_string()),
            false,
        );
    }
    if let Some((bucket, region)) = provider_host(host, ".scw.cloud") {
        let endpoint = format!("https://s3.{region}.scw.cloud");
        return mk(&bucket, Some(&region), Some(endpoint), false);
    }
    mk(host, None, None, false)
}

/// Matches `[bucket.]s3.REGION<suffix>` and returns (bucket, region).
fn provider_host(host: &str, suffix: &str) -> Option<(String, String)> {
    let rest = host.strip_suffix(suffix)?;
    let (pre, region) = rest.rsplit_once('.')?;
    let bucket = if pre == "s3" {
        ""
    } else {
        pre.strip_suffix(".s3")?
    };
    Some((bucket.to_string(), region.to_string()))
}

/// Providers that need path-style requests when not told otherwise (main.go: Filebase,
/// Backblaze B2, MinIO-like `host:port`, Supabase).
fn requires_path_style(endpoint: &str) -> bool {
    let host = endpoint_host(endpoint);
    let known_cloud = [
        ".amazonaws.com",
        ".digitaloceanspaces.com",
        ".backblazeb2.com",
        ".filebase.com",
        ".scw.cloud",
        ".r2.cloudflarestorage.com",
        "tigris.dev",
        "t3.storage.dev",
        ".supabase.co",
    ];
    host.ends_with(".backblazeb2.com")
        || host == "s3.filebase.com"
        || host.ends_with(".supabase.co")
        || (host.contains(':') && !known_cloud.iter().any(|k| host.contains(k)))
}

/// Adds `http://` to local endpoints and `https://` to others (litestream.go
/// `EnsureEndpointScheme`).
fn ensure_endpoint_scheme(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.to_string();
    }
    if is_local_endpoint(endpoint) {
        format!("http://{endpoint}")
    } else {
        format!("https://{endpoint}")
    }
}

/// Host (with port) of an endpoint, lowercase, scheme and path removed.
fn endpoint_host(endpoint: &str) -> String {
    let lower = endpoint.trim().to_ascii_lowercase();
    let no_scheme = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .unwrap_or(&lower);
    no_scheme.split('/').next().unwrap_or("").to_string()
}

/// localhost, loopback, private networks, `.local` (litestream.go `IsLocalEndpoint`).
fn is_local_endpoint(endpoint: &str) -> bool {
    let host = endpoint_host(endpoint);
    let host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    let private_172 = host
        .strip_prefix("172.")
        .and_then(|r| r.split('.').next())
        .and_then(|o| o.parse::<u8>().ok())
        .is_some_and(|o| (16..=31).contains(&o));
    host == "localhost"
        || host == "127.0.0.1"
        || host.starts_with("192.168.")
        || host.starts_with("10.")
        || private_172
        || host.ends_with(".local")
        || host.ends_with(".localhost")
}

/// A boolean query value: true/1/t/yes or false/0/f/no, any case.
fn query_bool(name: &str, value: &str) -> Result<bool, UrlError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" | "yes" => Ok(true),
        "false" | "0" | "f" | "no" => Ok(false),
        _ => Err(replica_error(format!(
            "invalid value for query parameter {}: {} (expected true or false)",
            quote(name),
            quote(value)
        ))),
    }
}

/// Splits `a=1&b=2` into decoded pairs.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Ok((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// The first value of `key`, as Go's `url.Values.Get`.
fn query_get<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Decodes `%XX` escapes (and `+` as space in queries). A `%` without two hex digits after it
/// is an error, as in Go's `url.Parse` (percent-encoding alone would keep it as text).
fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let valid_escape = |i: usize| {
        bytes
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    };
    if (0..bytes.len()).any(|i| bytes[i] == b'%' && !valid_escape(i)) {
        return Err("invalid %-escape".to_string());
    }
    let spaced;
    let s = if plus_is_space && s.contains('+') {
        spaced = s.replace('+', " ");
        spaced.as_str()
    } else {
        s
    };
    percent_decode_str(s)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "escapes do not form UTF-8".to_string())
}

/// `path.Clean` of an object prefix, without leading or trailing `/`.
fn clean_prefix(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Characters escaped in a URL path segment, as Go's `url.PathEscape` leaves the rest.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b',')
    .remove(b':')
    .remove(b';')
    .remove(b'=')
    .remove(b'@');

/// The replica URL of one database found by directory replication: `relative` (its path under
/// the directory, `/`-separated) appended to the URL's path, query kept, as Litestream 0.5's
/// `appendRelativePathToURL` does (`s3://bucket/prefix` and `sub/app.db` give
/// `s3://bucket/prefix/sub/app.db`), so a replica written by either tool is found by the
/// other. A URL without scheme is a plain path and is joined as one.
pub fn join_path(url: &str, relative: &str) -> String {
    let segments: Vec<&str> = relative
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if segments.is_empty() {
        return url.to_string();
    }
    if scheme_length(url).is_none() {
        let base = url.trim_end_matches('/');
        return format!("{base}/{}", segments.join("/"));
    }
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let (head, tail) = url.split_at(cut);
    // After `scheme://authority` (or `scheme:`), the path.
    let path_start = match head.find("://") {
        Some(i) => head[i + 3..].find('/').map_or(head.len(), |j| i + 3 + j),
        None => head.find(':').map_or(0, |i| i + 1),
    };
    let (origin, path) = head.split_at(path_start);
    let escaped: Vec<String> = segments
        .iter()
        .map(|s| percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string())
        .collect();
    let base = path.trim_end_matches('/');
    format!("{origin}{base}/{}{tail}", escaped.join("/"))
}

/// The URL with any `user:password@` replaced, safe to show.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_string();
    };
    let after = &url[i + 3..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    match after[..end].rfind('@') {
        Some(at) => format!("{}{REDACTED}@{}", &url[..i + 3], &after[at + 1..]),
        None => url.to_string(),
    }
}

/// "unknown replica type" or "not supported by this build", with a hint for `gcs`.
pub(crate) fn unsupported_type(scheme: &str) -> UrlError {
    if UNSUPPORTED_SCHEMES.contains(&scheme) {
        return replica_error(format!(
            "replica type {} is not supported by this build (supported: file, s3)",
            quote(scheme)
        ));
    }
    let hint = if scheme == "gcs" {
        " (Google Cloud Storage uses gs://, which is not supported by this build)"
    } else {
        " (supported: file, s3)"
    };
    replica_error(format!("unknown replica type {}{hint}", quote(scheme)))
}

fn replica_error(message: impl Into<String>) -> UrlError {
    UrlError {
        message: message.into(),
    }
}

/// Lexical `filepath.Clean`: drops `.`, resolves `..`, never climbs above `/`.
pub(crate) fn clean_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if out.file_name().is_some() {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            Component::Normal(s) => out.push(s),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `"text"` with quotes and escapes, for messages.
fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// What `Debug` shows for an optional secret.
pub(crate) fn redact(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

#[cfg(test)]
#[path = "url_tests.rs"]
pub(crate) mod tests;
