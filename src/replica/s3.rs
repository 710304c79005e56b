//! A replica in an S3 or S3-compatible bucket, through rust-s3's blocking client (no async
//! runtime): `<prefix>/<level as %04x>/<min>-<max>.ltx`, each object carrying the user metadata
//! `litestream-timestamp` (RFC 3339, UTC, milliseconds), the layout Litestream 0.5.17 writes.
//!
//! Requests, and why there are no more of them:
//! - `put_ltx`: one PUT per file up to [`PART_SIZE`], sent with `If-None-Match: *` so an
//!   existing object is never replaced (the server answers 412 and the bytes are compared
//!   instead). Servers that ignore the header are found out once per client: the first upload
//!   is repeated with the header (same bytes, harmless); a 200 the second time means the
//!   server does not honour it, and the client falls back to HEAD before every PUT. Larger
//!   files (snapshots) go up multipart through one reusable [`PART_SIZE`] buffer, after a HEAD.
//! - `ltx_files`: LIST of one level, paginated (1000 keys a page). `created_ms` is the
//!   object's LastModified: reading `litestream-timestamp` needs a HEAD per object, and a
//!   point-in-time restore reads each file's LTX header anyway.
//! - `open_ltx`: one streamed GET. A helper thread copies the response body into a bounded
//!   channel of 64 KiB chunks, so memory stays bounded whatever the object size, and a reader
//!   that stops early (a header read) closes the connection after at most a few chunks.
//! - `delete_ltx`: DeleteObjects, 1000 keys a request.
//!
//! Errors name the replica URL and the key and never carry credentials: S3 error bodies are
//! reduced to their `Code` and `Message`, and the secret key is masked should it ever appear.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::anyhow;
use crossbeam_channel::{bounded, Receiver, Sender};
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::serde_types::{ObjectIdentifier, Part};
use s3::{Bucket, Region};

use super::error::{ErrorKind, ReplicaError, Result};
use super::file::spool_error;
use super::s3_error::{delete_code_kind, status};
pub use super::s3_error::{describe, kind};
use super::url::{S3Target, DEFAULT_S3_REGION};
use super::{LtxFileInfo, ReplicaClient};
use crate::ltx::{self, Level, TxId};
use crate::timefmt;

/// Files up to this size go up in one PUT; larger ones multipart in parts of this size (S3's
/// minimum part is 5 MiB). This is also the most an upload holds in memory.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// S3 allows 10,000 parts; parts grow past [`PART_SIZE`] only for files above ~78 GiB.
const MAX_PARTS: u64 = 9_000;

/// Chunks a download hands to its reader, and how many may wait in the channel.
const GET_CHUNK: usize = 64 * 1024;
const GET_CHUNKS_BUFFERED: usize = 4;

/// How long one request may take before it fails (and the uploader backs off).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The user metadata key holding the file's timestamp.
pub const TIMESTAMP_METADATA: &str = "litestream-timestamp";

const CONTENT_TYPE: &str = "application/octet-stream";

/// Whether the server honours `If-None-Match: *` on PUT.
const CONDITIONAL_UNKNOWN: u8 = 0;
const CONDITIONAL_YES: u8 = 1;
const CONDITIONAL_NO: u8 = 2;

/// An S3 replica. `Debug` shows neither credentials nor the bucket's signing state.
pub struct S3ReplicaClient {
    url: String,
    bucket: Box<Bucket>,
    /// Key prefix without leading or trailing `/` (empty: the bucket root).
    prefix: String,
    /// Strings masked out of every error message (the secret key).
    secrets: Vec<String>,
    conditional_put: AtomicU8,
}

impl fmt::Debug for S3ReplicaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ReplicaClient")
            .field("url", &self.url)
            .field("bucket", &self.bucket.name())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A variable from this process's environment (credentials, region).
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl S3ReplicaClient {
    /// A client for `target`, known to users as `url` (which must not hold secrets). Missing
    /// credentials come from `AWS_*` / `LITESTREAM_*`, then the AWS profile file; without any,
    /// requests are unsigned. No request is made here.
    pub fn new(url: &str, target: &S3Target) -> anyhow::Result<S3ReplicaClient> {
        let target = target.clone().with_env_credentials(process_env);
        // Without a configured region: the AWS SDK's variables, then us-east-1 (Litestream asks
        // AWS for the bucket's region instead; a wrong one fails with a message naming it).
        let region_name = target
            .region
            .clone()
            .or_else(|| {
                ["AWS_REGION", "AWS_DEFAULT_REGION"]
                    .iter()
                    .find_map(|v| process_env(v).filter(|r| !r.is_empty()))
            })
            .unwrap_or_else(|| DEFAULT_S3_REGION.to_string());
        let region = match &target.endpoint {
            Some(endpoint) => Region::Custom {
                region: region_name,
                endpoint: endpoint.trim_end_matches('/').to_string(),
            },
            None => region_name
                .parse::<Region>()
                .map_err(|e| anyhow!("{url}: invalid region {region_name:?}: {e}"))?,
        };
        let credentials = match &target.access_key_id {
            Some(key) => {
                // A session token only goes with the environment's own key pair.
                let session = std::env::var("AWS_SESSION_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
                    .filter(|_| std::env::var("AWS_ACCESS_KEY_ID").ok().as_ref() == Some(key));
                Credentials::new(
                    Some(key),
                    target.secret_access_key.as_deref(),
                    None,
                    session.as_deref(),
                    None,
                )
            }
            None => Credentials::default().or_else(|_| {
                log::info!(replica:% = url; "no S3 credentials found; requests are unsigned");
                Credentials::anonymous()
            }),
        }
        .map_err(|e| anyhow!("{url}: S3 credentials: {e}"))?;
        if target.skip_verify && !target.endpoint.as_deref().is_some_and(is_plain_http) {
            log::warn!(
                replica:% = url;
                "skip-verify is not supported by this build; TLS certificates are verified"
            );
        }
        let mut bucket = Bucket::new(&target.bucket, region, credentials)
            .map_err(|e| anyhow!("{url}: S3 client: {}", describe(&e)))?;
        if target.force_path_style {
            bucket = bucket.with_path_style();
        }
        bucket.set_request_timeout(Some(REQUEST_TIMEOUT));
        Ok(S3ReplicaClient {
            url: url.to_string(),
            bucket,
            prefix: target.path.trim_matches('/').to_string(),
            secrets: target
                .secret_access_key
                .into_iter()
                .filter(|s| s.len() >= 4)
                .collect(),
            conditional_put: AtomicU8::new(CONDITIONAL_UNKNOWN),
        })
    }

    /// The `litestream-timestamp` metadata of one file (one HEAD request), in milliseconds
    /// since the epoch; `None` when the object has none.
    pub fn object_timestamp(&self, level: Level, min: TxId, max: TxId) -> Result<Option<i64>> {
        let key = self.key(level, min, max);
        let (head, _) = self
            .bucket
            .head_object(&key)
            .map_err(|e| self.fail("HEAD", &key, &e))?;
        Ok(head
            .metadata
            .as_ref()
            .and_then(|m| m.get(TIMESTAMP_METADATA))
            .and_then(|v| timefmt::parse_rfc3339(v).ok()))
    }

    /// Whether the server honours `If-None-Match: *` on PUT, once an upload has found out.
    pub fn conditional_put(&self) -> Option<bool> {
        match self.conditional_put.load(Ordering::Relaxed) {
            CONDITIONAL_YES => Some(true),
            CONDITIONAL_NO => Some(false),
            _ => None,
        }
    }

    /// Makes the client behave as with a server that ignores `If-None-Match` (HEAD before each
    /// PUT), so tests can exercise that path against a server that honours it.
    #[doc(hidden)]
    pub fn assume_no_conditional_put(&self) {
        self.conditional_put
            .store(CONDITIONAL_NO, Ordering::Relaxed);
    }

    /// `<prefix>/<level as %04x>/`, the LIST prefix of one level.
    fn level_prefix(&self, level: Level) -> String {
        if self.prefix.is_empty() {
            format!("{:04x}/", level.get())
        } else {
            format!("{}/{:04x}/", self.prefix, level.get())
        }
    }

    /// The object key of one LTX file.
    pub fn key(&self, level: Level, min: TxId, max: TxId) -> String {
        format!("{}{}", self.level_prefix(level), ltx::file_name(min, max))
    }

    /// The key of `name` directly under the replica's prefix: `<prefix>/lock.json`, where
    /// Litestream's leaser keeps its lease.
    pub fn root_key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// The bucket, for requests this module does not wrap (the lease's conditional PUTs).
    pub(super) fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// An error for a failed request on `key`: the replica URL, the operation, the key, the
    /// S3 error reduced to what a user can act on, and its [`kind`].
    pub(super) fn fail(&self, op: &str, key: &str, e: &S3Error) -> ReplicaError {
        ReplicaError::new(kind(e), &self.url, op, key, self.mask(describe(e)))
    }

    fn mask(&self, mut s: String) -> String {
        for secret in &self.secrets {
            s = s.replace(secret.as_str(), "[REDACTED]");
        }
        s
    }

    /// HEAD: the object's size, or `None` when there is no such object.
    fn head_size(&self, key: &str) -> Result<Option<u64>> {
        match self.bucket.head_object(key) {
            Ok((head, _)) => Ok(Some(head.content_length.unwrap_or(0).max(0) as u64)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.fail("HEAD", key, &e)),
        }
    }

    /// One PUT of a whole (small) file, with the timestamp metadata; conditional when asked.
    fn put_object(
        &self,
        key: &str,
        data: &[u8],
        timestamp: &str,
        if_none_match: bool,
    ) -> Result<(), S3Error> {
        let mut req = self
            .bucket
            .put_object_builder(key, data)
            .with_content_type(CONTENT_TYPE)
            .with_metadata(TIMESTAMP_METADATA, timestamp)?;
        if if_none_match {
            req = req.with_header("If-None-Match", "*")?;
        }
        req.execute().map(|_| ())
    }

    /// Uploads a file of at most [`PART_SIZE`] bytes with one PUT, never replacing an object.
    fn put_small(&self, key: &str, src: &Path, timestamp: &str) -> Result<()> {
        let data =
            std::fs::read(src).map_err(|e| spool_error(&self.url, "read spooled", src, e))?;
        if self.conditional_put.load(Ordering::Relaxed) == CONDITIONAL_NO {
            if let Some(size) = self.head_size(key)? {
                return self.verify_existing(key, size, src);
            }
            return self
                .put_object(key, &data, timestamp, false)
                .map_err(|e| self.fail("PUT", key, &e));
        }
        match self.put_object(key, &data, timestamp, true) {
            Ok(()) => {
                if self.conditional_put.load(Ordering::Relaxed) == CONDITIONAL_UNKNOWN {
                    self.probe_conditional_put(key, &data, timestamp);
                }
                Ok(())
            }
            // The object exists: the same bytes (an upload whose answer was lost) are fine.
            Err(e) if status(&e) == Some(412) => {
                self.conditional_put
                    .store(CONDITIONAL_YES, Ordering::Relaxed);
                // Deleted between the two requests: the next attempt finds out more.
                let size = self.head_size(key)?.ok_or_else(|| {
                    ReplicaError::new(
                        ErrorKind::Transient,
                        &self.url,
                        "PUT",
                        key,
                        "412 but no object",
                    )
                })?;
                self.verify_existing(key, size, src)
            }
            // A server that refuses the header outright: HEAD before PUT from now on.
            Err(e) if status(&e) == Some(501) => {
                log::info!(
                    replica:% = self.url;
                    "the server does not support conditional PUT; checking with HEAD before each upload"
                );
                self.conditional_put
                    .store(CONDITIONAL_NO, Ordering::Relaxed);
                self.put_small(key, src, timestamp)
            }
            Err(e) => Err(self.fail("PUT", key, &e)),
        }
    }

    /// Repeats the first conditional PUT (same bytes): a 412 proves the server honours
    /// `If-None-Match`, a success proves it ignores it.
    fn probe_conditional_put(&self, key: &str, data: &[u8], timestamp: &str) {
        match self.put_object(key, data, timestamp, true) {
            Err(e) if status(&e) == Some(412) => {
                self.conditional_put
                    .store(CONDITIONAL_YES, Ordering::Relaxed);
            }
            Ok(()) => {
                log::info!(
                    replica:% = self.url;
                    "the server ignores If-None-Match; checking with HEAD before each upload"
                );
                self.conditional_put
                    .store(CONDITIONAL_NO, Ordering::Relaxed);
            }
            // Unknown still: the next upload probes again.
            Err(e) => log::debug!(
                replica:% = self.url, key, error:% = self.mask(describe(&e));
                "conditional PUT probe failed"
            ),
        }
    }

    /// Uploads a large file multipart, one [`PART_SIZE`] (or larger, past ~78 GiB) buffer at a
    /// time, after checking that no object exists under `key`.
    fn put_large(&self, key: &str, src: &Path, size: u64, timestamp: &str) -> Result<()> {
        if let Some(existing) = self.head_size(key)? {
            return self.verify_existing(key, existing, src);
        }
        let mut file =
            File::open(src).map_err(|e| spool_error(&self.url, "open spooled", src, e))?;
        let part_size = (PART_SIZE as u64).max(size.div_ceil(MAX_PARTS)) as usize;
        let mut meta = http::HeaderMap::new();
        meta.insert(
            http::HeaderName::from_static("x-amz-meta-litestream-timestamp"),
            timestamp.parse().map_err(|e| {
                ReplicaError::new(
                    ErrorKind::Permanent,
                    &self.url,
                    "PUT",
                    key,
                    format!("timestamp header {timestamp:?}: {e}"),
                )
            })?,
        );
        // Metadata goes with the initiation only (rust-s3 drops it from parts and completion).
        let with_meta = self
            .bucket
            .with_extra_headers(meta)
            .map_err(|e| self.fail("PUT", key, &e))?;
        let upload = with_meta
            .initiate_multipart_upload(key, CONTENT_TYPE)
            .map_err(|e| self.fail("CreateMultipartUpload", key, &e))?;
        let id = upload.upload_id;
        let result = (|| -> Result<()> {
            let mut buf = vec![0u8; part_size];
            let mut parts: Vec<Part> = vec![];
            loop {
                let n = super::read_full(&mut file, &mut buf)
                    .map_err(|e| spool_error(&self.url, "read spooled", src, e))?;
                if n == 0 {
                    break;
                }
                let number = parts.len() as u32 + 1;
                let part = self
                    .bucket
                    .put_multipart_chunk(&buf[..n], key, number, &id, CONTENT_TYPE)
                    .map_err(|e| self.fail(&format!("UploadPart {number} of"), key, &e))?;
                parts.push(part);
                if n < buf.len() {
                    break;
                }
            }
            self.bucket
                .complete_multipart_upload(key, &id, parts)
                .map_err(|e| self.fail("CompleteMultipartUpload", key, &e))?;
            Ok(())
        })();
        if result.is_err() {
            if let Err(e) = self.bucket.abort_upload(key, &id) {
                log::warn!(
                    replica:% = self.url, key, error:% = self.mask(describe(&e));
                    "cannot abort multipart upload"
                );
            }
        }
        result
    }

    /// Succeeds when the object under `key` (of `size` bytes) holds exactly the local file.
    fn verify_existing(&self, key: &str, size: u64, src: &Path) -> Result<()> {
        let local = std::fs::metadata(src)
            .map_err(|e| spool_error(&self.url, "stat spooled", src, e))?
            .len();
        let differ = || {
            ReplicaError::new(
                ErrorKind::Conflict,
                &self.url,
                "",
                key,
                "already exists with different content (another writer replicates to this replica?)",
            )
        };
        if local != size {
            return Err(differ());
        }
        let mut remote = self.get(key)?;
        let mut file =
            File::open(src).map_err(|e| spool_error(&self.url, "open spooled", src, e))?;
        let (mut a, mut b) = (vec![0u8; GET_CHUNK], vec![0u8; GET_CHUNK]);
        let mut got = 0u64;
        loop {
            let n = super::read_full(&mut file, &mut a)
                .map_err(|e| spool_error(&self.url, "read spooled", src, e))?;
            let m = super::read_full(&mut remote, &mut b).map_err(|e| self.read_error(key, e))?;
            got += m as u64;
            // A body that ends before the size HEAD gave is a cut download (the connection
            // closed early), not a different object: retry it rather than accuse a writer.
            if m < n && got < size {
                return Err(ReplicaError::new(
                    ErrorKind::Transient,
                    &self.url,
                    "GET",
                    key,
                    format!("the download ended after {got} of {size} bytes"),
                ));
            }
            if n != m || a[..n] != b[..m] {
                return Err(differ());
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// The error of a failed read from a streamed GET: the download's own [`ReplicaError`]
    /// when it sent one, else a transient failure of the GET.
    fn read_error(&self, key: &str, e: io::Error) -> ReplicaError {
        if e.get_ref().is_some_and(|inner| inner.is::<ReplicaError>()) {
            if let Some(Ok(inner)) = e.into_inner().map(|i| i.downcast::<ReplicaError>()) {
                return *inner;
            }
            unreachable!("checked to hold a ReplicaError just above");
        }
        ReplicaError::new(ErrorKind::Transient, &self.url, "GET", key, e.to_string())
    }

    /// Starts a streamed GET of `key`; errors before the first byte (404, 403, refused
    /// connection) are returned here, later ones from `read`.
    fn get(&self, key: &str) -> Result<ObjectReader> {
        let (tx, rx) = bounded::<Chunk>(GET_CHUNKS_BUFFERED);
        let bucket = self.bucket.clone();
        let path = key.to_string();
        let secrets = self.secrets.clone();
        let url = self.url.clone();
        thread::Builder::new()
            .name("s3-get".into())
            .spawn(move || {
                let mut w = ChunkWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(GET_CHUNK),
                };
                let result = bucket.get_object_to_writer(&path, &mut w);
                let msg = match result.map(|status| (status, w.flush_chunk())) {
                    Ok((200..=299, Ok(()))) => Chunk::End,
                    // The reader went away: nobody to tell.
                    Ok((_, Err(_))) => return,
                    Ok((status, _)) => Chunk::Err(ReplicaError::new(
                        ErrorKind::from_http_status(status, None),
                        &url,
                        "GET",
                        &path,
                        format!("HTTP {status}"),
                    )),
                    Err(e) => {
                        let mut text = describe(&e);
                        for s in &secrets {
                            text = text.replace(s.as_str(), "[REDACTED]");
                        }
                        Chunk::Err(ReplicaError::new(kind(&e), &url, "GET", &path, text))
                    }
                };
                let _ = tx.send(msg);
            })
            .map_err(|e| {
                ReplicaError::new(
                    ErrorKind::Transient,
                    &self.url,
                    "GET",
                    key,
                    format!("spawn s3-get thread: {e}"),
                )
            })?;
        let mut reader = ObjectReader {
            url: self.url.clone(),
            key: key.to_string(),
            rx,
            buf: vec![],
            pos: 0,
            done: false,
        };
        // Wait for the first chunk so a missing object fails `open_ltx` itself.
        reader.fill()?;
        Ok(reader)
    }
}

impl ReplicaClient for S3ReplicaClient {
    fn url(&self) -> &str {
        &self.url
    }

    fn ltx_files(&self, level: Level) -> Result<Vec<LtxFileInfo>> {
        let prefix = self.level_prefix(level);
        let mut files = vec![];
        let mut token: Option<String> = None;
        loop {
            let (page, _) = self
                .bucket
                .list_page(prefix.clone(), None, token.take(), None, None)
                .map_err(|e| self.fail("LIST", &prefix, &e))?;
            for obj in &page.contents {
                let Some(name) = obj.key.strip_prefix(&prefix) else {
                    continue;
                };
                let Some((min, max)) = ltx::parse_file_name(name) else {
                    continue;
                };
                files.push(LtxFileInfo {
                    level,
                    min,
                    max,
                    size: obj.size,
                    created_ms: timefmt::parse_rfc3339(&obj.last_modified).unwrap_or(0),
                });
            }
            match page.next_continuation_token {
                Some(t) if page.is_truncated && !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        files.sort_by_key(|f| (f.min, f.max));
        Ok(files)
    }

    fn open_ltx(&self, level: Level, min: TxId, max: TxId) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.get(&self.key(level, min, max))?))
    }

    fn put_ltx(
        &self,
        level: Level,
        min: TxId,
        max: TxId,
        timestamp_ms: i64,
        src: &Path,
    ) -> Result<()> {
        let key = self.key(level, min, max);
        let size = std::fs::metadata(src)
            .map_err(|e| spool_error(&self.url, "stat spooled", src, e))?
            .len();
        let timestamp = timefmt::rfc3339_ms(timestamp_ms);
        if size <= PART_SIZE as u64 {
            self.put_small(&key, src, &timestamp)
        } else {
            self.put_large(&key, src, size, &timestamp)
        }
    }

    fn delete_ltx(&self, level: Level, files: &[(TxId, TxId)]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let keys: Vec<ObjectIdentifier> = files
            .iter()
            .map(|&(min, max)| ObjectIdentifier::new(self.key(level, min, max)))
            .collect();
        let first = keys[0].key.clone();
        let result = self
            .bucket
            .delete_objects(keys)
            .map_err(|e| self.fail("DeleteObjects", &first, &e))?;
        let failed: Vec<_> = result
            .errors
            .iter()
            .filter(|e| e.code != "NoSuchKey")
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        // The batch answers 200 with a code per key: the worst one decides.
        let kind = if failed
            .iter()
            .any(|e| delete_code_kind(&e.code) == ErrorKind::Permanent)
        {
            ErrorKind::Permanent
        } else {
            ErrorKind::Transient
        };
        let text: Vec<String> = failed
            .iter()
            .map(|e| format!("{} ({}: {})", e.key, e.code, e.message))
            .collect();
        Err(ReplicaError::new(
            kind,
            &self.url,
            "delete",
            "",
            text.join(", "),
        ))
    }
}

fn is_plain_http(endpoint: &str) -> bool {
    endpoint.to_ascii_lowercase().starts_with("http://")
}

/// What a download thread hands its reader.
enum Chunk {
    Data(Vec<u8>),
    End,
    Err(ReplicaError),
}

/// The download thread's side: buffers [`GET_CHUNK`] bytes, then blocks on the bounded
/// channel, which holds the HTTP response back when the reader is slow.
struct ChunkWriter {
    tx: Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(GET_CHUNK));
        self.tx
            .send(Chunk::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader closed"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(GET_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= GET_CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading side of a streamed GET.
struct ObjectReader {
    url: String,
    key: String,
    rx: Receiver<Chunk>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ObjectReader {
    /// Waits for the next chunk unless the current one has bytes left.
    fn fill(&mut self) -> Result<()> {
        while self.pos >= self.buf.len() && !self.done {
            match self.rx.recv() {
                Ok(Chunk::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.done = true,
                Ok(Chunk::Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(ReplicaError::new(
                        ErrorKind::Transient,
                        &self.url,
                        "GET",
                        &self.key,
                        "download thread ended early",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Read for ObjectReader {
    /// Read errors carry the download's [`ReplicaError`] inside the [`io::Error`].
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.fill().map_err(io::Error::other)?;
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "s3_tests.rs"]
mod tests;
