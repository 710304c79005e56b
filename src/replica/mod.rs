//! Where LTX files go: the [`ReplicaClient`] trait, its file and S3 implementations, and the
//! uploader pool that moves spooled files to a replica.
//!
//! A replica holds `ltx/<level>/<min>-<max>.ltx` (file) or `<prefix>/<level as %04x>/...`
//! (S3), the layout Litestream 0.5.17 writes, so either tool restores the other's replicas.
//! Objects are written once under their final name and never overwritten.

pub mod error;
pub mod file;
pub mod lease;

pub mod metered;
pub mod s3;
pub mod s3_error;
pub mod uploader;
pub mod url;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::ltx::{Level, TxId};
use url::ReplicaTarget;

pub use error::{ErrorKind, ReplicaError, Result};

/// One LTX file in a replica, as a listing reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LtxFileInfo {
    pub level: Level,
    pub min: TxId,
    pub max: TxId,
    pub size: u64,
    /// When the file was written (its LTX header timestamp where the client knows it cheaply,
    /// the object's modification time otherwise), in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// How bytes reach a replica. Implementations are blocking and shared between the database
/// threads, the uploader pool and restore, hence `Send + Sync`. Every failure is a
/// [`ReplicaError`] whose [`ErrorKind`] says whether it is worth retrying.
pub trait ReplicaClient: Send + Sync {
    /// The replica's URL as users wrote it, without secrets: for logs, errors and `/list`.
    fn url(&self) -> &str;

    /// Every LTX file at `level`, sorted by min TXID then max TXID.
    fn ltx_files(&self, level: Level) -> Result<Vec<LtxFileInfo>>;

    /// Opens one LTX file for streaming; a missing file is [`ErrorKind::NotFound`].
    fn open_ltx(&self, level: Level, min: TxId, max: TxId) -> Result<Box<dyn Read + Send>>;

    /// Stores the local file `src` as `level/<min>-<max>.ltx`, stamped with `timestamp_ms`.
    /// Writing a file that already exists with the same bytes succeeds (a retry after a crash);
    /// with other bytes it fails with [`ErrorKind::Conflict`]: remote files are immutable.
    fn put_ltx(
        &self,
        level: Level,
        min: TxId,
        max: TxId,
        timestamp_ms: i64,
        src: &Path,
    ) -> Result<()>;

    /// Deletes files at `level` (compaction and retention; missing files are not an error).
    fn delete_ltx(&self, level: Level, files: &[(TxId, TxId)]) -> Result<()>;
}

/// Builds the client for a resolved replica target, counted for the metrics.
pub fn open_client(url: &str, target: &ReplicaTarget) -> anyhow::Result<Arc<dyn ReplicaClient>> {
    let (inner, replica_type): (Arc<dyn ReplicaClient>, _) = match target {
        ReplicaTarget::File { root } => (Arc::new(file::FileReplicaClient::new(url, root)), "file"),
        ReplicaTarget::S3(target) => (Arc::new(s3::S3ReplicaClient::new(url, target)?), "s3"),
    };
    Ok(Arc::new(metered::Metered::new(inner, replica_type)))
}

/// Reads until `buf` is full or the input ends; the number of bytes read. Comparing a local
/// file with a replica's copy block by block needs short reads told from the end.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
