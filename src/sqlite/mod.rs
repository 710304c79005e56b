//! Everything that touches SQLite itself: the WAL reader ([`wal`]) and the connections the
//! daemon holds on each database ([`conn`]) to pin the log and run checkpoints.

pub mod conn;
pub mod shm;
pub mod wal;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Path of the WAL index (shared memory) beside a database.
pub fn shm_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-shm");
    PathBuf::from(s)
}

/// Path of the WAL beside a database.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// What the database file's first page says, read without SQLite (for input checks and for
/// the page size before any connection is open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbFileHeader {
    pub page_size: u32,
    /// Bytes 18 and 19 are 2 in WAL mode, 1 in rollback-journal mode.
    pub wal_mode: bool,
}

/// Reads the database header: `Ok(None)` for an empty file (SQLite creates the header on the
/// first write), an error naming the problem for a file that is not a SQLite database.
///
/// Only for processes that do not have the database open through SQLite: closing any file
/// descriptor of a file drops every POSIX lock the process holds on it, SQLite's included.
/// The daemon uses [`read_db_header_from`] on the handle it keeps open instead.
pub fn read_db_header(path: &Path) -> io::Result<Option<DbFileHeader>> {
    read_db_header_from(&File::open(path)?)
}

/// [`read_db_header`] on an open file.
pub fn read_db_header_from(file: &File) -> io::Result<Option<DbFileHeader>> {
    if file.metadata()?.len() == 0 {
        return Ok(None);
    }
    let mut buf = [0u8; 100];
    file.read_exact_at(&mut buf, 0)
        .map_err(|_| not_sqlite("file is shorter than a SQLite header"))?;
    if &buf[..16] != SQLITE_MAGIC {
        return Err(not_sqlite("file does not start with the SQLite header"));
    }
    let raw = u16::from_be_bytes([buf[16], buf[17]]);
    let page_size = if raw == 1 { 65536 } else { u32::from(raw) };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(not_sqlite("invalid page size in the SQLite header"));
    }
    Ok(Some(DbFileHeader {
        page_size,
        wal_mode: buf[18] == 2 && buf[19] == 2,
    }))
}

fn not_sqlite(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a SQLite database: {why}"),
    )
}
