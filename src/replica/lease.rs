//! A lease in the replica, so that two primaries never write one replica: `<replica>/lock.json`
//! holding `{"generation": N, "expires_at": "<RFC 3339>", "owner": "host:pid"}`, the object
//! Litestream's own leaser (`leaser.go`, `s3/leaser.go`, v0.5.14 on) writes, so both tools
//! respect each other's lease.
//!
//! The rules, as Litestream's `AcquireLease` / `RenewLease` / `ReleaseLease`:
//! - acquire: read `lock.json`; a lease that has not expired is refused with
//!   [`LeaseError::Held`] naming its owner and expiry (whoever the owner is, us included);
//!   otherwise write a new one (generation + 1, or 1) conditionally: only if there is none
//!   (`If-None-Match: *`), or only if it is still the expired one read (`If-Match: <etag>`).
//!   Losing that race is [`LeaseError::Held`] by the winner.
//! - renew: rewrite it with a new expiry, only if it is still the version we wrote
//!   (`If-Match`); else [`LeaseError::NotHeld`]: someone took it over after it expired.
//! - release: one difference from Litestream, which deletes `lock.json` with `If-Match`:
//!   we rewrite it conditionally with `expires_at` one TTL before the release. S3-compatible
//!   servers that honour `If-Match` on PUT do not all honour it on DELETE (s3s-fs ignores it),
//!   and an unconditional delete could remove a lease someone else took over. Both tools
//!   take an expired lease at once, so the effect is the same.
//!
//! Every write is a compare-and-swap in a [`LeaseStore`]: on S3 the conditional PUT
//! ([`s3::S3LeaseStore`]), on a file replica an exclusive create and a rename under a lock
//! ([`file::FileLeaseStore`]).
//!
//! Litestream 0.5.17's `replicate` never takes this lease (its leaser is library code no
//! command calls; the 0.5.17 binary does not even contain it): a Litestream primary and ours
//! on one replica are not kept apart by it. Two of our daemons are.

pub mod file;
pub mod s3;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{ErrorKind, ReplicaError};
use super::s3::S3ReplicaClient;
use super::url::ReplicaTarget;
use crate::timefmt;

/// How long a lease lasts unless renewed: Litestream's `DefaultLeaseTTL`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The lease's name under the replica's root (file) or prefix (S3): Litestream's
/// `DefaultLeasePath`.
pub const LEASE_FILE: &str = "lock.json";

/// A lease as read from or written to `lock.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Counts the holders: 1 for the first, one more at each takeover.
    pub generation: i64,
    /// When the lease lapses unless renewed, in milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
    /// Who holds it: `host:pid` (`pid-<pid>` without a host name), as Litestream names owners.
    pub owner: String,
    /// The version of `lock.json` this lease was read or written as (the S3 ETag; a checksum
    /// of the content on a file replica): renew and release succeed only on this version.
    pub etag: String,
}

impl Lease {
    /// Whether the lease has lapsed at `now_ms` (Litestream: `time.Now().After(ExpiresAt)`).
    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms > self.expires_at_ms
    }

    /// `lock.json`'s content for this lease (Litestream's JSON field names and order).
    fn to_json(&self) -> Vec<u8> {
        let doc = LeaseDoc {
            generation: self.generation,
            expires_at: timefmt::rfc3339_ms(self.expires_at_ms),
            owner: (!self.owner.is_empty()).then(|| self.owner.clone()),
        };
        serde_json::to_vec(&doc).expect("a struct of strings and numbers serializes")
    }

    /// Parses `lock.json` as Litestream or we wrote it.
    fn parse(data: &[u8], etag: String) -> Result<Lease, String> {
        let doc: LeaseDoc = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let expires_at_ms = timefmt::parse_rfc3339(&doc.expires_at)?;
        Ok(Lease {
            generation: doc.generation,
            expires_at_ms,
            owner: doc.owner.unwrap_or_default(),
            etag,
        })
    }
}

/// `lock.json` on the wire. Go's `time.Time` marshals as RFC 3339 with nanoseconds; ours
/// carries milliseconds, which Go parses too.
#[derive(Serialize, Deserialize)]
struct LeaseDoc {
    generation: i64,
    expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// Why a lease operation failed.
#[derive(Debug)]
pub enum LeaseError {
    /// Someone holds a lease that has not expired: Litestream's `LeaseExistsError`.
    Held {
        url: String,
        owner: String,
        expires_at_ms: i64,
    },
    /// The lease we renew or release is no longer ours (it expired and was taken over, or
    /// `lock.json` was removed): Litestream's `ErrLeaseNotHeld`. `current` is who has it now.
    NotHeld { url: String, current: Option<Lease> },
    /// The replica could not be read or written, or `lock.json` is not a lease.
    Replica(ReplicaError),
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseError::Held {
                url,
                owner,
                expires_at_ms,
            } => {
                let until = timefmt::rfc3339_secs(*expires_at_ms);
                if owner.is_empty() {
                    write!(f, "{url}: lease already held until {until}")
                } else {
                    write!(f, "{url}: lease already held by {owner} until {until}")
                }
            }
            LeaseError::NotHeld { url, current } => {
                write!(f, "{url}: lease not held")?;
                if let Some(c) = current {
                    write!(
                        f,
                        " (now generation {} held by {} until {})",
                        c.generation,
                        c.owner,
                        timefmt::rfc3339_secs(c.expires_at_ms)
                    )?;
                }
                Ok(())
            }
            LeaseError::Replica(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for LeaseError {}

impl From<ReplicaError> for LeaseError {
    fn from(e: ReplicaError) -> LeaseError {
        LeaseError::Replica(e)
    }
}

/// One object with compare-and-swap writes, where a lease lives.
pub trait LeaseStore: Send + Sync {
    /// The replica's URL, for errors.
    fn url(&self) -> &str;

    /// The current content and its version, `None` when there is none.
    fn read(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError>;

    /// Writes `data` only if the current version is `expected` (`None`: only if there is
    /// none), and returns the new version. A failed condition is [`ErrorKind::Conflict`].
    fn write(&self, data: &[u8], expected: Option<&str>) -> Result<String, ReplicaError>;
}

/// The current time in milliseconds since the epoch; replaced in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Takes, keeps and gives back the lease of one replica.
pub struct Leaser {
    store: Box<dyn LeaseStore>,
    owner: String,
    ttl: Duration,
    clock: Clock,
}

impl Leaser {
    /// A leaser for `store` owned by this process (`host:pid`), with [`DEFAULT_TTL`].
    pub fn new(store: Box<dyn LeaseStore>) -> Leaser {
        Leaser {
            store,
            owner: default_owner(),
            ttl: DEFAULT_TTL,
            clock: Arc::new(timefmt::now_ms),
        }
    }

    /// The same leaser with another owner name.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Leaser {
        self.owner = owner.into();
        self
    }

    /// The same leaser with another time to live.
    pub fn with_ttl(mut self, ttl: Duration) -> Leaser {
        self.ttl = ttl;
        self
    }

    /// The same leaser reading the time from `clock` (tests).
    pub fn with_clock(mut self, clock: Clock) -> Leaser {
        self.clock = clock;
        self
    }

    /// The replica's URL, for logs and errors.
    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// Who this leaser takes leases as.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How long a lease lasts unless renewed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease in the replica now, expired or not; `None` when there is none.
    pub fn inspect(&self) -> Result<Option<Lease>, LeaseError> {
        match self.store.read()? {
            None => Ok(None),
            Some((data, etag)) => Ok(Some(self.parse(&data, etag)?)),
        }
    }

    /// Takes the lease: refused with [`LeaseError::Held`] while someone's lease is live.
    pub fn acquire(&self) -> Result<Lease, LeaseError> {
        let existing = self.inspect()?;
        let now = (self.clock)();
        if let Some(e) = existing.as_ref().filter(|e| !e.is_expired(now)) {
            return Err(self.held(e));
        }
        self.replace(existing.as_ref())
    }

    /// Takes over `stale`, a lease whose holder is known to be gone although it has not
    /// expired (this host's process that held it has exited): written only if `lock.json` is
    /// still that version.
    pub fn take_over(&self, stale: &Lease) -> Result<Lease, LeaseError> {
        self.replace(Some(stale))
    }

    /// Writes a new lease of ours over `existing` (`None`: there is none), conditionally.
    fn replace(&self, existing: Option<&Lease>) -> Result<Lease, LeaseError> {
        let now = (self.clock)();
        let mut lease = Lease {
            generation: existing.map_or(1, |e| e.generation + 1),
            expires_at_ms: now + self.ttl.as_millis() as i64,
            owner: self.owner.clone(),
            etag: String::new(),
        };
        match self
            .store
            .write(&lease.to_json(), existing.map(|e| e.etag.as_str()))
        {
            Ok(etag) => {
                lease.etag = etag;
                // A server may check the condition and write in two steps (s3s-fs does): two
                // creates at once can both succeed, the later one overwriting. Reading it back
                // makes the overwritten one concede now rather than at its first renewal.
                match self.inspect()? {
                    Some(current) if current.etag == lease.etag => {}
                    Some(current) => return Err(self.held(&current)),
                    None => {
                        return Err(LeaseError::NotHeld {
                            url: self.store.url().to_string(),
                            current: None,
                        })
                    }
                }
                log::debug!(
                    replica:% = self.store.url(),
                    generation = lease.generation,
                    owner:% = lease.owner,
                    expires_at:% = timefmt::rfc3339_ms(lease.expires_at_ms);
                    "lease acquired"
                );
                Ok(lease)
            }
            // Someone else wrote first: name the winner.
            Err(e) if e.kind() == ErrorKind::Conflict => match self.inspect()? {
                Some(current) => Err(self.held(&current)),
                None => Err(LeaseError::Replica(e)),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Extends a lease we hold by the TTL from now; [`LeaseError::NotHeld`] when it is no
    /// longer ours.
    pub fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let expires_at_ms = (self.clock)() + self.ttl.as_millis() as i64;
        self.rewrite(lease, expires_at_ms)
    }

    /// Gives a lease back, so another primary can take it at once; [`LeaseError::NotHeld`]
    /// when it is no longer ours. The lease is written as having expired one TTL ago, so a
    /// reader whose clock is behind ours by less than that sees it expired too.
    pub fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let expired = (self.clock)() - self.ttl.as_millis() as i64;
        self.rewrite(lease, expired).map(|_| ())
    }

    /// Writes `lease` with a new expiry over the version it was written as.
    fn rewrite(&self, lease: &Lease, expires_at_ms: i64) -> Result<Lease, LeaseError> {
        let mut next = Lease {
            generation: lease.generation,
            expires_at_ms,
            owner: self.owner.clone(),
            etag: String::new(),
        };
        match self.store.write(&next.to_json(), Some(&lease.etag)) {
            Ok(etag) => {
                next.etag = etag;
                Ok(next)
            }
            Err(e) if e.kind() == ErrorKind::Conflict => Err(LeaseError::NotHeld {
                url: self.store.url().to_string(),
                current: self.inspect().ok().flatten(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn held(&self, lease: &Lease) -> LeaseError {
        LeaseError::Held {
            url: self.store.url().to_string(),
            owner: lease.owner.clone(),
            expires_at_ms: lease.expires_at_ms,
        }
    }

    fn parse(&self, data: &[u8], etag: String) -> Result<Lease, LeaseError> {
        Lease::parse(data, etag).map_err(|e| {
            LeaseError::Replica(ReplicaError::new(
                ErrorKind::Permanent,
                self.store.url(),
                "read",
                LEASE_FILE,
                format!("not a lease ({e}); remove it if no primary holds it"),
            ))
        })
    }
}

/// The leaser of the replica at `target`, known to users as `url`. No request is made here.
pub fn open(url: &str, target: &ReplicaTarget) -> anyhow::Result<Leaser> {
    let store: Box<dyn LeaseStore> = match target {
        ReplicaTarget::File { root } => Box::new(file::FileLeaseStore::new(url, root)),
        ReplicaTarget::S3(t) => Box::new(s3::S3LeaseStore::new(S3ReplicaClient::new(url, t)?)),
    };
    Ok(Leaser::new(store))
}

/// The host part of an owner name (`host:pid`); `None` for `pid-<pid>` or an empty owner.
pub fn owner_host(owner: &str) -> Option<&str> {
    match owner.rsplit_once(':') {
        Some((host, pid)) if !host.is_empty() && pid.parse::<u32>().is_ok() => Some(host),
        _ => None,
    }
}

/// Whether `owner` names a process of this host that no longer runs (or this very process):
/// a lease it left behind after a crash can be taken over at once instead of after its TTL,
/// since the meta directory's owner lock already keeps two daemons of one host apart.
pub fn owner_is_gone_or_us(owner: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if hostname().as_deref() != Some(host) {
        return false;
    }
    if pid == std::process::id() as i32 {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// `host:pid`, or `pid-<pid>` without a host name: how Litestream's `NewLeaser` names owners.
pub fn default_owner() -> String {
    let pid = std::process::id();
    match hostname() {
        Some(host) => format!("{host}:{pid}"),
        None => format!("pid-{pid}"),
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and the last byte stays 0 as we pass one less.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_json_reads_as_litestream_writes_it() {
        // Go's time.Time marshals with nanoseconds and the zone offset.
        let go = br#"{"generation":3,"expires_at":"2025-06-01T12:00:30.123456789Z","owner":"web-1:4242"}"#;
        let lease = Lease::parse(go, "\"abc\"".into()).unwrap();
        assert_eq!(lease.generation, 3);
        assert_eq!(lease.owner, "web-1:4242");
        assert_eq!(
            timefmt::rfc3339_ms(lease.expires_at_ms),
            "2025-06-01T12:00:30.123Z"
        );
        // Owner is `omitempty` in Go.
        let anon = Lease::parse(
            br#"{"generation":1,"expires_at":"2025-06-01T12:00:30Z"}"#,
            String::new(),
        )
        .unwrap();
        assert_eq!(anon.owner, "");
        let written = String::from_utf8(lease.to_json()).unwrap();
        assert_eq!(
            written,
            r#"{"generation":3,"expires_at":"2025-06-01T12:00:30.123Z","owner":"web-1:4242"}"#
        );
        assert!(Lease::parse(b"{}", String::new()).is_err());
    }

    #[test]
    fn held_reads_as_litestream_says_it() {
        let e = LeaseError::Held {
            url: "s3://b/p".into(),
            owner: "web-1:4242".into(),
            expires_at_ms: 1_748_779_230_000,
        };
        assert_eq!(
            e.to_string(),
            "s3://b/p: lease already held by web-1:4242 until 2025-06-01T12:00:30Z"
        );
    }

    #[test]
    fn owner_names_tell_their_host_and_whether_they_are_gone() {
        assert_eq!(owner_host("web-1:4242"), Some("web-1"));
        assert_eq!(owner_host("pid-4242"), None);
        assert_eq!(owner_host(""), None);
        assert!(owner_is_gone_or_us(&default_owner()) || default_owner().starts_with("pid-"));
        let host = hostname().unwrap_or_default();
        // Our parent runs; a pid beyond the kernel's maximum never does.
        let parent = std::os::unix::process::parent_id();
        assert!(!owner_is_gone_or_us(&format!("{host}:{parent}")));
        assert_eq!(
            owner_is_gone_or_us(&format!("{host}:2147483647")),
            !host.is_empty()
        );
        assert!(!owner_is_gone_or_us("another-host-of-the-fleet:2147483647"));
    }

    #[test]
    fn the_owner_is_host_and_pid() {
        let owner = default_owner();
        assert!(
            owner.ends_with(&format!(":{}", std::process::id())) || owner.starts_with("pid-"),
            "{owner}"
        );
    }
}
