//! The replica lease (issue 11): `lock.json` in Litestream's leaser format, against a file
//! replica and a real S3-compatible server (s3s-fs): acquire, a second primary refused with
//! the holder and the expiry, renew, release, takeover after expiry, and a lost lease seen at
//! renewal. Time comes from a clock the test moves, so expiry needs no sleeping.

mod common;
#[path = "common/s3.rs"]
mod s3server;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use litestream::replica::lease::file::FileLeaseStore;
use litestream::replica::lease::s3::S3LeaseStore;
use litestream::replica::lease::{LeaseError, LeaseStore, Leaser, DEFAULT_TTL};
use litestream::replica::s3::S3ReplicaClient;
use litestream::replica::url::{parse_replica_url, ReplicaTarget};
use litestream::replica::ErrorKind;
use s3server::*;

/// A clock the test sets, shared by every leaser of a scenario.
#[derive(Clone)]
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn new() -> Clock {
        Clock(Arc::new(AtomicI64::new(1_750_000_000_000)))
    }
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
    fn leaser(&self, store: Box<dyn LeaseStore>, owner: &str) -> Leaser {
        let c = self.0.clone();
        Leaser::new(store)
            .with_owner(owner)
            .with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
    }
}

/// The whole life of a lease between two primaries, `a` and `b`, on one replica; `read`
/// gives `lock.json` as stored.
fn two_primaries(store: &dyn Fn() -> Box<dyn LeaseStore>, read: &dyn Fn() -> Option<String>) {
    let clock = Clock::new();
    let a = clock.leaser(store(), "host-a:1");
    let b = clock.leaser(store(), "host-b:2");
    assert!(a.inspect().unwrap().is_none());

    // A takes it: generation 1, 30 s, in Litestream's format.
    let lease = a.acquire().unwrap();
    assert_eq!(lease.generation, 1);
    assert_eq!(lease.owner, "host-a:1");
    assert_eq!(
        lease.expires_at_ms,
        clock.now() + DEFAULT_TTL.as_millis() as i64
    );
    let json: serde_json::Value = serde_json::from_str(&read().expect("lock.json")).unwrap();
    assert_eq!(json["generation"], 1, "{json}");
    assert_eq!(json["owner"], "host-a:1", "{json}");
    assert!(
        json["expires_at"].as_str().unwrap().ends_with('Z'),
        "{json}"
    );
    assert_eq!(b.inspect().unwrap().unwrap().owner, "host-a:1");

    // B is refused, told who holds it and until when; A too (a live lease is nobody's to
    // take, as Litestream's AcquireLease).
    for other in [&b, &a] {
        match other.acquire() {
            Err(LeaseError::Held {
                owner,
                expires_at_ms,
                ..
            }) => {
                assert_eq!(owner, "host-a:1");
                assert_eq!(expires_at_ms, lease.expires_at_ms);
            }
            other => panic!("not refused: {other:?}"),
        }
    }
    let msg = b.acquire().unwrap_err().to_string();
    assert!(
        msg.contains("lease already held by host-a:1 until 20"),
        "{msg}"
    );

    // A renews before expiry: later expiry, same generation; B still refused after the first
    // expiry has passed.
    clock.advance(Duration::from_secs(20));
    let renewed = a.renew(&lease).unwrap();
    assert_eq!(renewed.generation, 1);
    assert_eq!(renewed.expires_at_ms, clock.now() + 30_000);
    clock.advance(Duration::from_secs(20));
    assert!(matches!(b.acquire(), Err(LeaseError::Held { .. })));
    // Renewing from the old version fails: it was replaced.
    assert!(matches!(a.renew(&lease), Err(LeaseError::NotHeld { .. })));

    // A releases: B takes it at once, as the next generation.
    a.release(&renewed).unwrap();
    let b_lease = b.acquire().unwrap();
    assert_eq!(b_lease.generation, 2);
    assert_eq!(b_lease.owner, "host-b:2");
    // A's lease is gone: renewing or releasing it again says so, naming the new holder.
    match a.renew(&renewed) {
        Err(LeaseError::NotHeld {
            current: Some(c), ..
        }) => assert_eq!(c.owner, "host-b:2"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.release(&renewed),
        Err(LeaseError::NotHeld { .. })
    ));

    // B stops renewing (killed): once it has expired, A takes it over.
    clock.advance(Duration::from_secs(29));
    assert!(matches!(a.acquire(), Err(LeaseError::Held { .. })));
    clock.advance(Duration::from_secs(2));
    let taken = a.acquire().unwrap();
    assert_eq!(taken.generation, 3);
    assert_eq!(taken.owner, "host-a:1");
    // B comes back and finds out at its next renewal: it must stop writing.
    assert!(matches!(b.renew(&b_lease), Err(LeaseError::NotHeld { .. })));
    assert_eq!(a.inspect().unwrap().unwrap().generation, 3);
}

fn s3_client(server: &S3Server, prefix: &str) -> S3ReplicaClient {
    let url = server.url(prefix);
    let ReplicaTarget::S3(mut target) = parse_replica_url(&url).unwrap() else {
        panic!("not s3")
    };
    target.access_key_id = Some(ACCESS_KEY.into());
    target.secret_access_key = Some(SECRET_KEY.into());
    S3ReplicaClient::new(&url, &target).unwrap()
}

fn object(server: &S3Server, key: &str) -> Option<String> {
    std::fs::read_to_string(server.root.join(BUCKET).join(key)).ok()
}

#[test]
fn file_replica_lease() {
    let dir = TestDir::new();
    let root = dir.path("replica");
    let url = format!("file://{}", root.display());
    let store = || Box::new(FileLeaseStore::new(&url, &root)) as Box<dyn LeaseStore>;
    two_primaries(&store, &|| {
        std::fs::read_to_string(root.join("lock.json")).ok()
    });
    // Nothing left behind but the lease and its lock file.
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["lock.json", "lock.json.lock"]);
}

#[test]
fn file_replica_lease_races_have_one_winner() {
    let dir = TestDir::new();
    let root = dir.path("replica");
    let url = format!("file://{}", root.display());
    let clock = Clock::new();
    // Eight primaries start at once, on a free lease and then on an expired one.
    for round in 0..2 {
        let winners: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let leaser = clock.leaser(
                        Box::new(FileLeaseStore::new(&url, &root)),
                        &format!("host-{i}:{i}"),
                    );
                    s.spawn(move || leaser.acquire().is_ok())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            winners.iter().filter(|w| **w).count(),
            1,
            "round {round}: {winners:?}"
        );
        clock.advance(Duration::from_secs(31));
    }
}

#[test]
fn s3_replica_lease() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let prefix = "leased/app.db";
    let store = || Box::new(S3LeaseStore::new(s3_client(&server, prefix))) as Box<dyn LeaseStore>;
    two_primaries(&store, &|| object(&server, "leased/app.db/lock.json"));

    // s3s-fs 0.14.1 honours both conditions: the probe after the first write says so, and
    // the conditions hold (a create over an existing object, a replace of another version).
    let store = S3LeaseStore::new(s3_client(&server, "probed"));
    assert_eq!(store.conditional_put(), None);
    let etag = store.write(b"{}", None).unwrap();
    assert_eq!(store.conditional_put(), Some(true));
    assert_eq!(object(&server, "probed/lock.json").as_deref(), Some("{}"));
    let e = store.write(b"[]", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e:#}");
    let e = store.write(b"[]", Some("\"0123\"")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e:#}");
    store.write(b"[1]", Some(&etag)).unwrap();
    assert_eq!(object(&server, "probed/lock.json").as_deref(), Some("[1]"));
}

/// Where the server ignores conditional PUT, the store reads before and after writing: the
/// whole story still holds for primaries that do not start in the same instant.
#[test]
fn s3_replica_lease_without_conditional_put() {
    let dir = TestDir::new();
    let server = S3Server::start(dir.dir.path());
    let store = || {
        let s = S3LeaseStore::new(s3_client(&server, "plain"));
        s.assume_no_conditional_put();
        Box::new(s) as Box<dyn LeaseStore>
    };
    two_primaries(&store, &|| object(&server, "plain/lock.json"));
}

/// A `lock.json` that is not a lease is an error naming the file, never taken for "free".
#[test]
fn a_corrupt_lock_file_is_an_error() {
    let dir = TestDir::new();
    let root = dir.path("replica");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("lock.json"), b"not json").unwrap();
    let url = format!("file://{}", root.display());
    let leaser = Leaser::new(Box::new(FileLeaseStore::new(&url, Path::new(&root))));
    let e = leaser.acquire().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LeaseError::Replica(_)), "{msg}");
    assert!(
        msg.contains("lock.json") && msg.contains("not a lease"),
        "{msg}"
    );
}
