//! One daemon per database: an exclusive `flock` on `<meta-dir>/owner`, held while a daemon
//! replicates the database.
//!
//! Two daemons replicating one database would fight over its checkpoints, interleave their
//! files in the replica and remove each other's temporary files. The second one is refused
//! with the first one's pid and socket, which the holder writes into the file. `flock` locks
//! belong to the open file, not to the process's POSIX locks on the database, so taking and
//! dropping this one never touches SQLite's; the kernel releases it when its holder exits,
//! `kill -9` included, so a crash never leaves the database locked out. (Across machines, the
//! lease in the replica is what keeps two primaries apart.)

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};

use crate::durable;

/// The socket of this daemon, written into every owner file it takes so that a refused daemon
/// can say where the holder answers. Set once at startup ([`set_socket`]).
static SOCKET: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Records this daemon's control socket (`None`: it has none) for the owner files.
pub fn set_socket(socket: Option<&Path>) {
    let _ = SOCKET.set(socket.map(Path::to_path_buf));
}

/// The owner file of a meta directory.
pub fn path(meta_dir: &Path) -> PathBuf {
    meta_dir.join("owner")
}

/// Another daemon holds the database: the error that refuses this one.
#[derive(Debug)]
pub struct HeldByAnother {
    /// The database's meta directory.
    pub meta_dir: PathBuf,
    /// What the holder wrote: `pid=N socket=PATH` (or `socket=none`).
    pub holder: String,
}

impl std::fmt::Display for HeldByAnother {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another litestream daemon replicates this database ({}; lock {}); two daemons would fight over its checkpoints and its replica: stop one, or remove the database from one config",
            if self.holder.is_empty() { "pid unknown" } else { &self.holder },
            path(&self.meta_dir).display()
        )
    }
}

impl std::error::Error for HeldByAnother {}

/// The held lock; dropping it releases the database to another daemon.
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
}

impl OwnerLock {
    /// Takes the database whose local state is `meta_dir` (created if missing), or fails
    /// with [`HeldByAnother`] naming the daemon that has it.
    pub fn acquire(meta_dir: &Path) -> Result<OwnerLock> {
        let p = path(meta_dir);
        durable::create_dir_all(meta_dir)
            .with_context(|| format!("create meta directory {}", meta_dir.display()))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .with_context(|| format!("open {}", p.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns, with constant flags.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(HeldByAnother {
                    meta_dir: meta_dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                }
                .into());
            }
            return Err(err).with_context(|| format!("flock {}", p.display()));
        }
        // Who holds it, for the next daemon's error. Not fsynced: it only matters while this
        // process lives, and the lock, not the text, is what excludes.
        let socket = match SOCKET.get() {
            Some(Some(s)) => s.display().to_string(),
            _ => "none".into(),
        };
        let text = format!("pid={} socket={socket}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(text.as_bytes()))
            .with_context(|| format!("write {}", p.display()))?;
        Ok(OwnerLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("new").join(".app.db-litestream");
        let first = OwnerLock::acquire(&meta).unwrap();
        // Another open file description, as another process would have.
        let err = OwnerLock::acquire(&meta).unwrap_err();
        let held = err.downcast_ref::<HeldByAnother>().expect("HeldByAnother");
        assert!(
            held.holder
                .starts_with(&format!("pid={} ", std::process::id())),
            "{}",
            held.holder
        );
        assert!(err.to_string().contains("owner"), "{err}");
        drop(first);
        let _again = OwnerLock::acquire(&meta).unwrap();
    }
}
