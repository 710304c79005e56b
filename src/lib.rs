//! A Litestream-compatible SQLite replication daemon: one OS thread per database, crossbeam
//! channels to an uploader pool, no async runtime. See DESIGN.md in the shared folder.

pub mod cli;
pub mod compact;
pub mod config;
pub mod daemon;
pub mod db;
pub mod directory;
pub mod durable;
pub mod duration;
pub mod events;
pub mod follow;
pub mod follower;
pub mod heartbeat;
pub mod ipc;
pub mod lease_keeper;
pub mod logging;
pub mod ltx;
pub mod metrics;
pub mod notify;
pub mod owner;
pub mod registry;
pub mod replica;
pub mod restore;
pub mod spool;
pub mod sqlite;
pub mod store;
pub mod timefmt;
pub mod watch;

/// This build's version, reported by `version` and `/info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
