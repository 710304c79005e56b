//! Counting the requests that stay open (event streams, waited syncs, profiles), so the
//! listener knows when to kick its accept loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

/// Counts a long request for as long as it lives (see `server.rs`).
/// The long requests in progress (event streams, waited syncs, profiles), which the
/// listener's kick thread watches (see `ipc::server`): it kicks every 50 ms while any runs
/// and sleeps a second otherwise, woken when the first one starts.
pub struct LongRequests {
    count: AtomicUsize,
    started_tx: Sender<()>,
    started_rx: Receiver<()>,
}

impl Default for LongRequests {
    fn default() -> Self {
        let (started_tx, started_rx) = bounded(1);
        LongRequests {
            count: AtomicUsize::new(0),
            started_tx,
            started_rx,
        }
    }
}

impl LongRequests {
    /// Counts a long request for as long as the returned guard lives.
    pub fn begin(&self) -> LongRequest<'_> {
        if self.count.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = self.started_tx.try_send(());
        }
        LongRequest(self)
    }

    /// How many are in progress.
    pub fn in_progress(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for a first long request to start; true if one did.
    pub fn wait_for_start(&self, timeout: Duration) -> bool {
        self.started_rx.recv_timeout(timeout).is_ok()
    }
}

/// One long request being counted; see [`LongRequests`].
pub struct LongRequest<'a>(&'a LongRequests);

impl Drop for LongRequest<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}
