//! A Litestream-compatible SQLite replication daemon: one OS thread per database, crossbeam
//! channels to an uploader pool, no async runtime. See DESIGN.md in the shared folder.

pub mod durable;
pub mod sqlite;
