//! The event hub behind `GET /events`: database threads publish, each subscriber has its own
//! bounded queue, and one that falls behind is cut off instead of slowing replication.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::ltx::{Checksum, TxId};
use crate::timefmt;

/// How many events a subscriber may have queued before it is disconnected (as LiteFS).
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// An event of the stream (seed 003), plus our `replicated`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Always first on a stream.
    Init {
        is_primary: bool,
        hostname: Option<String>,
    },
    /// One LTX file written to the spool.
    Tx {
        path: PathBuf,
        txid: TxId,
        post_apply_checksum: Checksum,
        page_size: u32,
        commit: u32,
        timestamp_ms: i64,
    },
    /// The replica confirmed every transaction up to `txid`.
    Replicated { path: PathBuf, txid: TxId },
    /// The node's role for a database changed, or a follower saw another primary (`path`:
    /// the database, ours; `None` for the node as a whole).
    PrimaryChange {
        is_primary: bool,
        hostname: Option<String>,
        path: Option<PathBuf>,
    },
}

impl Event {
    /// The database the event is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Event::Tx { path, .. } | Event::Replicated { path, .. } => Some(path),
            Event::PrimaryChange { path, .. } => path.as_deref(),
            Event::Init { .. } => None,
        }
    }

    /// The event as one line of JSON, without the newline, with the seed's field names in the
    /// seed's order: `type`, `db`, `data` (`txID`, `postApplyChecksum`, `pageSize`, `commit`,
    /// `timestamp`); `path` (and the `replicated` event) are ours.
    pub fn to_json(&self) -> String {
        let line = match self {
            Event::Init {
                is_primary,
                hostname,
            } => Line {
                kind: "init",
                db: None,
                data: Data::Role {
                    is_primary: *is_primary,
                    hostname: hostname.as_deref(),
                    path: None,
                },
            },
            Event::PrimaryChange {
                is_primary,
                hostname,
                path,
            } => Line {
                kind: "primaryChange",
                db: path.as_deref().map(file_name),
                data: Data::Role {
                    is_primary: *is_primary,
                    hostname: hostname.as_deref(),
                    path: path.as_ref().map(|p| p.display().to_string()),
                },
            },
            Event::Tx {
                path,
                txid,
                post_apply_checksum,
                page_size,
                commit,
                timestamp_ms,
            } => Line {
                kind: "tx",
                db: Some(file_name(path)),
                data: Data::Tx {
                    tx_id: txid.to_string(),
                    post_apply_checksum: post_apply_checksum.to_string(),
                    page_size: *page_size,
                    commit: *commit,
                    timestamp: timefmt::rfc3339_ms(*timestamp_ms),
                    path: path.display().to_string(),
                },
            },
            Event::Replicated { path, txid } => Line {
                kind: "replicated",
                db: Some(file_name(path)),
                data: Data::Replicated {
                    tx_id: txid.to_string(),
                    path: path.display().to_string(),
                },
            },
        };
        serde_json::to_string(&line).expect("event lines serialise")
    }
}

/// One line of the stream, in the seed's field order.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    db: Option<String>,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Role {
        #[serde(rename = "isPrimary")]
        is_primary: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        hostname: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    Tx {
        #[serde(rename = "txID")]
        tx_id: String,
        #[serde(rename = "postApplyChecksum")]
        post_apply_checksum: String,
        #[serde(rename = "pageSize")]
        page_size: u32,
        commit: u32,
        timestamp: String,
        path: String,
    },
    Replicated {
        #[serde(rename = "txID")]
        tx_id: String,
        path: String,
    },
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct Subscriber {
    id: u64,
    filter: Option<PathBuf>,
    tx: Sender<Arc<str>>,
}

/// Fan-out of events to subscribers.
#[derive(Default)]
pub struct EventHub {
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
}

/// A subscriber's end: lines of JSON. The channel disconnects when the hub drops the
/// subscriber (it fell behind) or shuts down.
pub struct Subscription {
    pub id: u64,
    pub rx: Receiver<Arc<str>>,
}

impl EventHub {
    /// Adds a subscriber, optionally only for one database path.
    pub fn subscribe(&self, filter: Option<PathBuf>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(SUBSCRIBER_QUEUE);
        self.lock().push(Subscriber { id, filter, tx });
        Subscription { id, rx }
    }

    /// Removes a subscriber (its stream ended).
    pub fn unsubscribe(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }

    /// Number of live subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.lock().len()
    }

    /// Queues `event` for every interested subscriber without ever blocking; a subscriber whose
    /// queue is full is dropped (its stream ends after the queued events) with a log line.
    pub fn publish(&self, event: &Event) {
        let mut subs = self.lock();
        if subs.is_empty() {
            return;
        }
        let line: Arc<str> = Arc::from(event.to_json());
        subs.retain(|s| {
            if let (Some(f), Some(p)) = (&s.filter, event.path()) {
                if f != p {
                    return true;
                }
            }
            match s.tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    log::warn!(
                        subscriber = s.id,
                        queue = SUBSCRIBER_QUEUE;
                        "events subscriber fell behind; disconnecting it"
                    );
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// Disconnects every subscriber (shutdown): their streams end cleanly.
    pub fn close_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        // A panic while holding this lock cannot leave the list inconsistent (pushes and
        // retains are atomic from the list's point of view), so a poisoned lock is still usable.
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tx(path: &str, txid: u64) -> Event {
        Event::Tx {
            path: PathBuf::from(path),
            txid: TxId::new(txid),
            post_apply_checksum: Checksum(0x83b05248774ce767),
            page_size: 4096,
            commit: 2,
            timestamp_ms: 1_694_027_554_985,
        }
    }

    #[test]
    fn json_shapes_match_the_seed() {
        assert_eq!(
            Event::Init {
                is_primary: true,
                hostname: None
            }
            .to_json(),
            r#"{"type":"init","data":{"isPrimary":true}}"#
        );
        // The seed's example line, byte for byte (plus our `path`).
        assert_eq!(
            tx("/data/db", 0x27).to_json(),
            r#"{"type":"tx","db":"db","data":{"txID":"0000000000000027","postApplyChecksum":"83b05248774ce767","pageSize":4096,"commit":2,"timestamp":"2023-09-06T19:12:34.985Z","path":"/data/db"}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&tx("/data/db", 0x27).to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"tx","db":"db","data":{"txID":"0000000000000027","postApplyChecksum":"83b05248774ce767",
                "pageSize":4096,"commit":2,"timestamp":"2023-09-06T19:12:34.985Z","path":"/data/db"}})
        );
        let v: serde_json::Value = serde_json::from_str(
            &Event::PrimaryChange {
                is_primary: false,
                hostname: Some("h:20202".into()),
                path: None,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"primaryChange","data":{"isPrimary":false,"hostname":"h:20202"}})
        );
        // About one database: its name, as `tx` events, and its path (ours).
        let v: serde_json::Value = serde_json::from_str(
            &Event::PrimaryChange {
                is_primary: true,
                hostname: None,
                path: Some("/data/app.db".into()),
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"primaryChange","db":"app.db","data":{"isPrimary":true,"path":"/data/app.db"}})
        );
    }

    #[test]
    fn slow_subscriber_is_dropped_and_others_continue() {
        let hub = EventHub::default();
        let slow = hub.subscribe(None);
        let fast = hub.subscribe(None);
        for i in 0..SUBSCRIBER_QUEUE as u64 + 10 {
            hub.publish(&tx("/a.db", i + 1));
            assert!(fast.rx.recv().unwrap().contains("txID"));
        }
        assert_eq!(hub.subscriber_count(), 1);
        // The slow one gets what was queued, then a disconnect.
        assert_eq!(slow.rx.iter().count(), SUBSCRIBER_QUEUE);
    }

    #[test]
    fn filter_by_path() {
        let hub = EventHub::default();
        let only_a = hub.subscribe(Some(PathBuf::from("/a.db")));
        hub.publish(&tx("/b.db", 1));
        hub.publish(&tx("/a.db", 2));
        hub.publish(&Event::PrimaryChange {
            is_primary: true,
            hostname: None,
            path: None,
        });
        hub.publish(&Event::PrimaryChange {
            is_primary: true,
            hostname: None,
            path: Some("/b.db".into()),
        });
        let got: Vec<_> = only_a.rx.try_iter().collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("\"/a.db\""));
    }
}
