//! Pacing a database thread between passes: when to look at the WAL index again while the log
//! grows (faster in a burst), when the pressure threshold calls for a checkpoint at once, and
//! when a pass at `monitor-interval` has anything to do (an idle database is looked at less
//! often and hibernates its spare connection).

use std::time::{Duration, Instant};

use super::wal_pass::WalProbe;
use super::DbThread;

/// New WAL frames after which, during a burst, the kernel is asked to start writing the WAL
/// back (without waiting), so the fsync before a checkpoint finds little left to write.
const WRITEBACK_FRAMES: u64 = 128;

/// WAL frames per second from which the log is considered in a burst: the thread then looks
/// every [`WRITEBACK_FRAMES`], starts the WAL's writeback and reads ahead as it grows, so the
/// checkpoint at the threshold holds the write lock as briefly as possible. Below it (a
/// steady writer) it looks only at half the threshold and at the threshold.
const BURST_FRAMES_PER_SEC: f64 = 10_000.0;

/// While the watcher is armed, an idle database is looked at once every this many
/// `monitor-interval`s, as a safety net for a write whose event was lost; any write wakes it
/// at once and brings the next pass back within `monitor-interval`.
const IDLE_TICKS: u32 = 10;

/// The longest between two looks at a growing WAL: how long a burst starting while a steady
/// writer runs can grow the log before this thread sees it (at 60,000 frames a second, about
/// 3,000 frames; the check after it then comes at once).
const MAX_UNSEEN: Duration = Duration::from_millis(50);

/// The same during a burst, which also bounds how late its end is noticed.
const MAX_UNSEEN_IN_BURST: Duration = Duration::from_millis(10);

impl DbThread {
    /// Follows a log that grows: after the watcher's wakeup (which disarmed it), the thread
    /// looks at the WAL index again when the log could reach its next threshold at the rate it
    /// grew (at least 1 ms later, at most [`MAX_UNSEEN`]), for as long as it keeps growing;
    /// one look that finds nothing new re-arms the watcher. A steady writer thus costs a
    /// read of the WAL index every few dozen milliseconds, not an event per write.
    fn follow_growth(&mut self, probe: Option<WalProbe>, woken: bool) {
        let now = Instant::now();
        if woken {
            // Writes after a quiet spell: how fast they come is not known yet, and the pass
            // that records them is due within `monitor-interval` (ticks were sparse meanwhile).
            self.rate = None;
            self.next_pass = self.next_pass.min(now + self.st.opts.monitor_interval);
        }
        let last = self.last_probe.map(|(_, p)| p);
        if let (Some(p), Some((then, before))) = (probe, self.last_probe) {
            if p.salts == before.salts && p.frames > before.frames {
                let rate = (p.frames - before.frames) as f64
                    / now.duration_since(then).as_secs_f64().max(1e-6);
                self.rate = Some(rate);
                self.burst = rate >= BURST_FRAMES_PER_SEC;
            }
        }
        if woken || probe.is_none() || probe != last {
            self.last_change = now;
        }
        self.last_probe = probe.map(|p| (now, p));
        if now.duration_since(self.last_change) >= MAX_UNSEEN_IN_BURST {
            // Quiet for a while (a checkpoint's pause is shorter): sleep until the next write.
            self.look_at = None;
            self.burst = false;
            if let Some(s) = &self.subscription {
                s.arm();
                // A write between the look above and the arming raised no event: look once
                // more now that the next one will.
                if self.st.probe() != probe {
                    self.last_change = now;
                    self.look_at = Some(now + Duration::from_millis(1));
                }
            }
            return;
        }
        let unseen = if self.burst {
            MAX_UNSEEN_IN_BURST
        } else {
            MAX_UNSEEN
        };
        let max = self
            .st
            .opts
            .monitor_interval
            .clamp(Duration::from_millis(1), unseen);
        let delay = match (probe, self.rate) {
            (Some(p), Some(rate)) => {
                let left = self.frames_to_next_action(p) as f64;
                Duration::from_secs_f64((left / rate).min(max.as_secs_f64()))
            }
            // No rate yet (the first writes after a start): look again soon.
            _ => Duration::ZERO,
        };
        self.look_at = Some(now + delay.clamp(Duration::from_millis(1), max));
    }

    /// Frames the log can grow by before this thread should look again: the checkpoint at
    /// the pressure threshold; before it, half way (to read ahead), and in a burst every few
    /// frames (to keep the WAL's writeback going).
    fn frames_to_next_action(&self, p: WalProbe) -> u64 {
        let pressure = self.st.opts.pressure_frames();
        let left = pressure.saturating_sub(p.frames);
        if self.burst {
            left.clamp(1, WRITEBACK_FRAMES)
        } else {
            match (pressure / 2).saturating_sub(p.frames) {
                0 => left.max(1),
                to_half => to_half,
            }
        }
    }

    /// Checkpoints at once when the WAL grew to the pressure threshold, and runs a pass at
    /// `monitor-interval` when anything is to be done; otherwise only reschedules (an idle
    /// database costs one read of its WAL index per interval).
    pub(super) fn pass_if_needed(&mut self) {
        let probe = self.st.probe();
        let woken = std::mem::take(&mut self.woken);
        if woken || self.look_at.is_some_and(|t| Instant::now() >= t) {
            self.follow_growth(probe, woken);
        }
        if let Some(p) = probe {
            match self.pressure_checkpoint(p) {
                Ok(true) => return,
                Ok(false) => {
                    if self.burst {
                        self.st.start_wal_writeback(p, WRITEBACK_FRAMES);
                    }
                    if self.burst && p.unread > 0 && self.locks.is_some() && self.st.wal.continuous
                    {
                        if let Err(e) = self.st.scan_ahead() {
                            log::debug!(db:% = self.path().display(), error = format!("{e:#}"); "read ahead failed");
                        }
                    }
                }
                Err(e) => log::warn!(
                    db:% = self.path().display(), error = format!("{e:#}");
                    "checkpoint failed"
                ),
            }
        }
        let now = Instant::now();
        if now < self.next_pass {
            return;
        }
        if self.tick_needs_pass(probe) {
            let _ = self.pass();
        } else {
            // Nothing to do. With the watcher armed a write wakes this thread at once, so the
            // look at an idle database is only a safety net and comes less often.
            let idle = self.subscription.is_some() && self.look_at.is_none();
            let ticks = if idle { IDLE_TICKS } else { 1 };
            if idle {
                // An idle database holds what protects its position and no more: the read
                // lock's connection and the files whose descriptors carry SQLite's locks. The
                // spare connection and our WAL descriptor (SQLite locks the index, never the
                // log) are opened again by the next pass.
                if let Some(locks) = self.locks.as_mut() {
                    locks.hibernate();
                }
                self.st.wal.wal_file = None;
            }
            self.next_pass = now + self.st.opts.monitor_interval * ticks;
        }
    }

    /// Whether a pass at the interval has anything to do.
    fn tick_needs_pass(&self, probe: Option<WalProbe>) -> bool {
        let st = &self.st;
        let settled = self.locks.is_some()
            && st.initialized
            && st.wal.continuous
            && self.last_error.is_none()
            && !st.needs_snapshot
            && st.position.table.is_some();
        if !settled || self.time_checkpoint_due() {
            return true;
        }
        probe.is_none_or(|p| p.unread > 0)
    }

    /// A checkpoint is due by `checkpoint-interval` (something was synced, or the last one
    /// was held back by readers).
    fn time_checkpoint_due(&self) -> bool {
        let st = &self.st;
        let interval = st.opts.checkpoint_interval;
        !interval.is_zero()
            && st.checkpoint.last.elapsed() >= interval
            && (st.checkpoint.synced_since || st.checkpoint.incomplete)
    }
}
