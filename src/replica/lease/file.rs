//! The lease of a file replica: `<root>/lock.json`, created exclusively (a hard link of a
//! fully written temporary file, which fails when the name is taken) and replaced by an atomic
//! rename, so a reader never sees it missing or half written while it is held.
//!
//! The compare and the swap happen under an exclusive `flock` on `<root>/lock.json.lock` (a
//! file that is never removed), so two processes, on this host or over NFS (where Linux maps
//! `flock` to NFS byte-range locks), cannot both see the old version and both replace it. A
//! file system without locks (`ENOLCK`, `EOPNOTSUPP`) is used without: the window left is the
//! moment between reading `lock.json` and renaming over it, reachable only by a primary
//! renewing a lease that already expired while another takes it over.
//!
//! A version ("etag") is a CRC-64 of the content: every write carries a new expiry, so no two
//! versions share their bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{LeaseStore, LEASE_FILE};
use crate::durable;
use crate::replica::error::{ErrorKind, ReplicaError};

/// `lock.json` in a replica directory.
pub struct FileLeaseStore {
    url: String,
    root: PathBuf,
}

impl FileLeaseStore {
    /// The lease store of the file replica at `root`, known to users as `url`.
    pub fn new(url: &str, root: &Path) -> FileLeaseStore {
        FileLeaseStore {
            url: url.to_string(),
            root: root.to_path_buf(),
        }
    }

    fn path(&self) -> PathBuf {
        self.root.join(LEASE_FILE)
    }

    fn io(&self, op: &str, path: &Path, e: io::Error) -> ReplicaError {
        ReplicaError::io(&self.url, op, path, e)
    }

    /// Holds the exclusive lock on `lock.json.lock` until the returned guard is dropped;
    /// `None` where the file system has no locks.
    fn lock(&self) -> Result<Option<File>, ReplicaError> {
        durable::create_dir_all(&self.root).map_err(|e| {
            ReplicaError::io(&self.url, "create", &self.root, e).with_kind(ErrorKind::Permanent)
        })?;
        let path = self.root.join(format!("{LEASE_FILE}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io("open", &path, e))?;
        loop {
            // SAFETY: flock on a descriptor this function owns; blocks until granted.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Some(file));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOLCK | libc::EOPNOTSUPP) => {
                    log::warn!(
                        replica:% = self.url,
                        path:% = path.display(),
                        error:% = e;
                        "no file locks on the replica's file system; the lease is checked without one"
                    );
                    return Ok(None);
                }
                _ => return Err(self.io("lock", &path, e)),
            }
        }
    }

    fn read_unlocked(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(data) => {
                let etag = etag(&data);
                Ok(Some((data, etag)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read", &path, e)),
        }
    }
}

/// The version of a content.
fn etag(data: &[u8]) -> String {
    const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO);
    format!("{:016x}", CRC64.checksum(data))
}

impl LeaseStore for FileLeaseStore {
    fn url(&self) -> &str {
        &self.url
    }

    fn read(&self) -> Result<Option<(Vec<u8>, String)>, ReplicaError> {
        self.read_unlocked()
    }

    fn write(&self, data: &[u8], expected: Option<&str>) -> Result<String, ReplicaError> {
        let _guard = self.lock()?;
        let current = self.read_unlocked()?.map(|(_, etag)| etag);
        if current.as_deref() != expected {
            let message = match (&current, expected) {
                (Some(_), None) => "already exists".to_string(),
                (None, Some(_)) => "does not exist".to_string(),
                _ => "was replaced by another writer".to_string(),
            };
            return Err(ReplicaError::new(
                ErrorKind::Conflict,
                &self.url,
                "write",
                self.path().display().to_string(),
                message,
            ));
        }
        let path = self.path();
        let (staged, ()) = durable::stage_file(&path, |w| w.write_all(data))
            .map_err(|e| self.io("write", &path, e))?;
        // A replacement is a renewal or a release: its directory entry need not be fsynced
        // (see `commit_replacing`), which halves what a renewal costs.
        let committed = if expected.is_none() {
            staged.commit_new()
        } else {
            staged.commit_replacing()
        };
        committed.map_err(|e| self.io("write", &path, e))?;
        Ok(etag(data))
    }
}
