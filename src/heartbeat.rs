//! `heartbeat-url`: a GET to a dead man's switch (healthchecks.io and the like) while every
//! database replicates, as Litestream 0.5.17 sends it: never more often than
//! `heartbeat-interval`, and only when all databases are healthy, so a silent stall shows as
//! a missing ping. One thread, a check every few seconds, the request through the blocking
//! HTTP client rust-s3 already brings (no runtime).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::registry::{DbStatus, DbView, Registry};

/// How often the thread looks whether a ping is due (Litestream checks every 15 s).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long one ping may take (Litestream's `DefaultHeartbeatTimeout`).
const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a database counts as healthy for the heartbeat: replicating without an error, and
/// its replica not behind for longer than `interval` (an idle database is healthy: it has
/// nothing to sync).
pub fn healthy(v: &DbView, now: SystemTime, interval: Duration) -> bool {
    let stalled = v
        .behind_since
        .is_some_and(|since| now.duration_since(since).unwrap_or_default() > interval);
    v.status == DbStatus::Replicating && v.replica_error.is_none() && !stalled
}

/// Starts the thread that pings `url` (a thread that lives as long as the process).
pub fn start(url: String, interval: Duration, registry: Arc<Registry>) {
    let shown = crate::replica::url::redact_url(&url);
    let logged = shown.clone();
    let spawned = thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            let mut last_ping: Option<Instant> = None;
            loop {
                thread::sleep(CHECK_EVERY.min(interval));
                if last_ping.is_some_and(|t| t.elapsed() < interval) {
                    continue;
                }
                let now = SystemTime::now();
                let views = registry.list();
                if views.is_empty() || !views.iter().all(|v| healthy(v, now, interval)) {
                    continue;
                }
                // Counted before the request, as Litestream does: a failing endpoint is not
                // retried more often than the interval either.
                last_ping = Some(Instant::now());
                match attohttpc::get(&url).timeout(PING_TIMEOUT).send() {
                    Ok(r) if r.is_success() => {
                        log::debug!(url:% = shown; "heartbeat ping sent")
                    }
                    Ok(r) => log::error!(
                        url:% = shown, status = r.status().as_u16();
                        "heartbeat ping failed"
                    ),
                    Err(e) => {
                        log::error!(url:% = shown, error:% = e; "heartbeat ping failed")
                    }
                }
            }
        });
    match spawned {
        Ok(_) => log::info!(
            url:% = logged, interval:% = crate::duration::format(interval);
            "starting heartbeat monitor"
        ),
        Err(e) => log::error!(error:% = e; "cannot start the heartbeat thread"),
    }
}
