//! The uploader pool: N named threads taking [`UploadJob`]s from one bounded channel.
//!
//! Database threads never wait on a replica: they hand a job over with `try_send` and hear
//! back through the job's `on_done` callback (which posts to their own command channel).
//! Each database keeps at most one upload in flight, so files reach a replica in TXID order
//! and a replica never holds a file whose predecessor is missing.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::{ReplicaClient, ReplicaError};
use crate::ltx::{Level, TxId};

/// One spooled LTX file to store in a replica.
pub struct UploadJob {
    pub replica: Arc<dyn ReplicaClient>,
    pub level: Level,
    pub min: TxId,
    pub max: TxId,
    pub timestamp_ms: i64,
    /// The spooled file to read.
    pub path: PathBuf,
    /// Called on the uploader thread with the outcome; must not block. The error's kind tells
    /// the database thread how soon to try again.
    pub on_done: Box<dyn FnOnce(Result<(), ReplicaError>) + Send>,
}

/// The running pool. Dropping every [`UploadQueue`] and calling [`UploaderPool::join`] stops it.
pub struct UploaderPool {
    queue: UploadQueue,
    threads: Vec<JoinHandle<()>>,
}

/// The sending side of the pool, cloned into every database thread.
#[derive(Clone)]
pub struct UploadQueue {
    tx: Sender<UploadJob>,
}

impl UploadQueue {
    /// Hands a job to the pool without blocking; gives it back when the queue is full.
    pub fn try_submit(&self, job: UploadJob) -> Result<(), UploadJob> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }
}

impl UploaderPool {
    /// Starts `threads` uploaders (at least one) sharing a queue of `capacity` jobs.
    pub fn start(threads: usize, capacity: usize) -> std::io::Result<UploaderPool> {
        let (tx, rx) = bounded::<UploadJob>(capacity.max(1));
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                thread::Builder::new()
                    .name(format!("upload-{i}"))
                    .spawn(move || run(rx))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(UploaderPool {
            queue: UploadQueue { tx },
            threads,
        })
    }

    /// A handle for submitting jobs.
    pub fn queue(&self) -> UploadQueue {
        self.queue.clone()
    }

    /// Waits for the threads after the last queue handle is gone (they finish queued jobs first).
    pub fn join(self) {
        drop(self.queue);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<UploadJob>) {
    for job in rx {
        let started = Instant::now();
        let result = job
            .replica
            .put_ltx(job.level, job.min, job.max, job.timestamp_ms, &job.path);
        log::debug!(
            replica:% = job.replica.url(),
            compaction_level = job.level.get(),
            minTXID:% = job.min,
            maxTXID:% = job.max,
            elapsed:? = started.elapsed(),
            ok = result.is_ok();
            "ltx file upload"
        );
        (job.on_done)(result);
    }
}
