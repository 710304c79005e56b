//! The lease of an S3 replica: `<prefix>/lock.json`, written with a conditional PUT
//! (`If-None-Match: *` to create, `If-Match: <etag>` to replace), as Litestream's S3 leaser.
//!
//! Not every S3-compatible server honours the conditions. Each store finds out on its first
//! successful write, with two PUTs of the same bytes: `If-None-Match: *` on the object just
//! written and `If-Match` with an ETag no object has must both answer 412. Where one does
//! not (or the server answers 501), the store falls back to read, compare, write, read back:
//! a second primary is still refused while the first's lease is live, but two primaries
//! taking a free lease in the same instant may both believe they won until the next renewal,
//! when the loser finds the other's lease and stops. A warning says so once.

use std::sync::atomic::{AtomicU8, Ordering};

use s3::error::S3Error;

use super::{LeaseStore, LEASE_FILE};
use crate::replica::error::{ErrorKind, ReplicaError};
use crate::replica::s3::S3ReplicaClient;
use crate::replica::ReplicaClient;

const CONDITIONAL_UNKNOWN: u8 = 0;
const CONDITIONAL_YES: u8 = 1;
const CONDITIONAL_NO: u8 = 2;

/// An ETag no object has, for the `If-Match` probe.
const PROBE_ETAG: &str = "\"00000000000000000000000000000000\"";

/// `<prefix>/lock.json` in a bucket.
pub struct S3LeaseStore {
    client: S3ReplicaClient,
    key: String,
    conditional: AtomicU8,
}

impl S3LeaseStore {
    /// The lease store of the replica `client` writes to.
    pub fn new(client: S3ReplicaClient) -> S3LeaseStore {
        let key = client.root_key(LEASE_FILE);
        S3LeaseStore {
            client,
            key,
            conditional: AtomicU8::new(CONDITIONAL_UNKNOWN),
        }
    }

    /// Whether the server honours conditional PUT, once a write has found out.
    pub fn conditional_put(&self) -> Option<bool> {
        match self.conditional.load(Ordering::Relaxed) {
            CONDITIONAL_YES => Some(true),
            CONDITIONAL_NO => Some(false),
            _ => None,
        }
    }

    /// Makes the store behave as with a server that ignores the conditions, so tests can
    /// exercise that path against one that honours them.
    #[doc(hidden)]
    pub fn assume_no_conditional_put(&self) {
        self.conditional.store(CONDITIONAL_NO, Ordering::Relaxed);
    }

    /// One PUT of `data`, with `header` as its condition; the new ETag.
    fn put(&self, data: &[u8], header: Option<(&str, &str)>) -> Result<String, S3Error> {
        let mut req = self
            .client
            .bucket()
            .put_object_builder(&self.key, data)
            .with_content_type("application/json");
        if let Some((name, value)) = header {
            req = req.with_header(name, value)?;
        }
        let resp = req.execute()?;
        // rust-s3 hands a PUT's ETag header back as the body.
        Ok(resp.as_str().map(str::to_string).unwrap_or_default())
    }

    fn fail(&self, op: &str, e: &S3Error) -> ReplicaError {
        self.client.fail(op, &self.key, e)
    }

    fn conflict(&self, message: &str) -> ReplicaError {
        ReplicaError::new(
            ErrorKind::Conflict,
            self.client.url(),
            "PUT",
            &self.key,
            message,
        )
    }

    /// A write with the condition in the request.
    fn write_conditional(
        &self,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<Option<String>, ReplicaError> {
        let header = match expected {
            None => ("If-None-Match", "*"),
            Some(etag) => ("If-Match", etag),
        };
        match self.put(data, Some(header)) {
            Ok(etag) => Ok(Some(etag)),
            // Servers that refuse the headers outright.
            Err(S3Error::HttpFailWithBody(501, _)) => Ok(None),
            // `If-Match` on a missing object: AWS answers 404, and it is a lost condition.
            Err(e) if expected.is_some() && crate::replica::s3::kind(&e) == ErrorKind::NotFound => {
                Err(self.conflict("does not exist"))
            }
            Err(e) => Err(self.fail("PUT", &e)),
        }
    }

    /// After the first conditional write succeeded: whether the server honoured it, by two
    /// PUTs of the same bytes that must both fail with 412. Returns the object's ETag (a
    /// server that ignored a probe wrote the bytes again).
    fn probe(&self, data: &[u8], etag: String) -> Result<String, ReplicaError> {
        let mut etag = etag;
        let mut honoured = true;
        for header in [("If-None-Match", "*"), ("If-Match", PROBE_ETAG)] {
            match self.put(data, Some(header)) {
                Err(e) if crate::replica::s3::kind(&e) == ErrorKind::Conflict => {}
                Ok(new) => {
                    honoured = false;
                    etag = new;
                    log::warn!(
                        header = header.0,
                        replica:% = self.client.url(),
                        key:% = self.key;
                        "the S3 server ignores a conditional header on PUT; the lease is checked by reading it back, which cannot stop two primaries starting in the same instant"
                    );
                }
                Err(S3Error::HttpFailWithBody(501, _)) => honoured = false,
                Err(e) => return Err(self.fail("PUT", &e)),
            }
        }
        let state = if honoured {
            CONDITIONAL_YES
        } else {
            CONDITIONAL_NO
        };
        self.conditional.store(state, Ordering::Relaxed);
        Ok(etag)
    }

    /// A write where the server does not check conditions: compare, write, read back.
    fn write_checked(&self, data: &[u8], expected: Option<&str>) -> Result<String, ReplicaError> {
        let current = self.read()?;
        if current.as_ref().map(|(_, etag)| etag.as_str()) != expected {
            return Err(self.conflict("was replaced by another writer"));
        }
        self.put(data, None).map_err(|e| self.fail("PUT", &e))?;
        match self.read()? {
            Some((now, etag)) if now == data => Ok(etag),
            _ => Err(self.conflict("overwritten by another writer at the same time")),
        }
    }
}

impl LeaseStore for S3LeaseStore {
    fn url(&self) -> &str {
        self.client.url()
    }

    fn read(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError> {
        match self.client.bucket().get_object(&self.key) {
            Ok(resp) => {
                let etag = resp
                    .headers()
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                Ok(Some((resp.to_vec(), etag)))
            }
            Err(e) if crate::replica::s3::kind(&e) == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail("GET", &e)),
        }
    }

    fn write(&self, data: &[u8], expected: Option<&str>) -> Result<String, ReplicaError> {
        if self.conditional.load(Ordering::Relaxed) == CONDITIONAL_NO {
            return self.write_checked(data, expected);
        }
        match self.write_conditional(data, expected)? {
            Some(etag) if self.conditional.load(Ordering::Relaxed) == CONDITIONAL_UNKNOWN => {
                self.probe(data, etag)
            }
            Some(etag) => Ok(etag),
            None => {
                log::warn!(
                    replica:% = self.client.url();
                    "the S3 server does not support conditional PUT; the lease is checked by reading it back"
                );
                self.conditional.store(CONDITIONAL_NO, Ordering::Relaxed);
                self.write_checked(data, expected)
            }
        }
    }
}
