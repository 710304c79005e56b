//! A [`ReplicaClient`] that counts what the one inside it does, for the
//! `litestream_replica_operation_*` metrics: one wrapper for every replica type, so no
//! client counts on its own and none can forget to.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{LtxFileInfo, ReplicaClient, Result};
use crate::ltx::{Level, TxId};
use crate::metrics;

/// Counts the requests of `inner` as `replica_type` (`file`, `s3`).
pub struct Metered {
    inner: Arc<dyn ReplicaClient>,
    replica_type: &'static str,
}

impl Metered {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ReplicaClient>, replica_type: &'static str) -> Metered {
        Metered {
            inner,
            replica_type,
        }
    }

    fn count<T>(
        &self,
        operation: &'static str,
        bytes: impl FnOnce(&T) -> u64,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = f();
        let elapsed = started.elapsed();
        let moved = result.as_ref().map_or(0, bytes);
        metrics::global().replica_op(
            self.replica_type,
            operation,
            moved,
            elapsed,
            result.is_err(),
        );
        result
    }
}

impl ReplicaClient for Metered {
    fn url(&self) -> &str {
        self.inner.url()
    }

    fn ltx_files(&self, level: Level) -> Result<Vec<LtxFileInfo>> {
        self.count("LIST", |_| 0, || self.inner.ltx_files(level))
    }

    fn open_ltx(&self, level: Level, min: TxId, max: TxId) -> Result<Box<dyn Read + Send>> {
        let reader = self.count("GET", |_| 0, || self.inner.open_ltx(level, min, max))?;
        Ok(Box::new(CountingReader {
            inner: reader,
            replica_type: self.replica_type,
        }))
    }

    fn put_ltx(
        &self,
        level: Level,
        min: TxId,
        max: TxId,
        timestamp_ms: i64,
        src: &Path,
    ) -> Result<()> {
        let size = std::fs::metadata(src).map_or(0, |m| m.len());
        self.count(
            "PUT",
            |_| size,
            || self.inner.put_ltx(level, min, max, timestamp_ms, src),
        )
    }

    fn delete_ltx(&self, level: Level, files: &[(TxId, TxId)]) -> Result<()> {
        self.count("DELETE", |_| 0, || self.inner.delete_ltx(level, files))
    }
}

/// Adds the bytes of a GET's body as it is read (it streams after the request is counted).
struct CountingReader {
    inner: Box<dyn Read + Send>,
    replica_type: &'static str,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            metrics::global().replica_bytes(self.replica_type, "GET", n as u64);
        }
        Ok(n)
    }
}
