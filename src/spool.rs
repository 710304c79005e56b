//! The local spool: LTX files written beside the database (`.<db>-litestream/ltx/0/`) before
//! they are uploaded. It holds every file the replica has not confirmed, plus the newest one,
//! whose header records the WAL position a restarted daemon resumes from.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::durable;
use crate::ltx::{self, TxId};

/// One spooled LTX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolFile {
    pub min: TxId,
    pub max: TxId,
    pub path: PathBuf,
}

/// The spool directory of one database.
pub struct Spool {
    dir: PathBuf,
}

/// The default metadata directory of a database: `.<name>-litestream` beside it.
pub fn default_meta_dir(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db.with_file_name(format!(".{name}-litestream"))
}

/// The spooled files of `meta_dir` as they are now, for readers outside the database's thread
/// (`/metrics`, `litestream status`): nothing is created and nothing cleaned up, so a
/// temporary file the thread is writing is never removed under it (that is
/// [`Spool::open`]'s job, in the thread that owns the spool). No spool yet: no files.
pub fn list(meta_dir: &Path) -> io::Result<Vec<SpoolFile>> {
    let spool = Spool {
        dir: meta_dir.join("ltx").join("0"),
    };
    match spool.files() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        listed => listed,
    }
}

impl Spool {
    /// Opens (creating) `<meta_dir>/ltx/0` and removes temporary files a crash left behind.
    pub fn open(meta_dir: &Path) -> io::Result<Spool> {
        let dir = meta_dir.join("ltx").join("0");
        durable::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Spool { dir })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file for `min..=max` lives. Recreates the directory if someone removed it
    /// (`litestream reset` while the daemon runs), so the next write still lands.
    pub fn path(&self, min: TxId, max: TxId) -> io::Result<PathBuf> {
        durable::create_dir_all(&self.dir)?;
        Ok(self.dir.join(ltx::file_name(min, max)))
    }

    /// Every spooled file, oldest first.
    pub fn files(&self) -> io::Result<Vec<SpoolFile>> {
        let mut files = vec![];
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some((min, max)) = ltx::parse_file_name(&entry.file_name().to_string_lossy()) {
                files.push(SpoolFile {
                    min,
                    max,
                    path: entry.path(),
                });
            }
        }
        files.sort_by_key(|f| (f.max, f.min));
        Ok(files)
    }

    /// Deletes files whose transactions the replica confirmed (`max <= confirmed`), except the
    /// newest file of all, which the next restart resumes from.
    pub fn prune(&self, confirmed: TxId) -> io::Result<()> {
        let files = self.files()?;
        let newest = files.last().map(|f| f.max);
        for f in &files {
            if f.max <= confirmed && Some(f.max) != newest {
                fs::remove_file(&f.path)?;
            }
        }
        Ok(())
    }

    /// Deletes every spooled file (`litestream reset`, or a replica that is ahead of us).
    pub fn clear(&self) -> io::Result<()> {
        for f in self.files()? {
            fs::remove_file(&f.path)?;
        }
        durable::sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers outside the database's thread list without side effects: no directory made,
    /// and a temporary file being written stays (only `Spool::open` cleans up).
    #[test]
    fn listing_leaves_the_spool_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join(".app.db-litestream");
        assert_eq!(list(&meta).unwrap(), vec![]);
        assert!(!meta.exists(), "listing created the spool");
        let spool = Spool::open(&meta).unwrap();
        let file = spool.path(TxId::new(1), TxId::new(2)).unwrap();
        fs::write(&file, b"x").unwrap();
        let tmp = spool
            .dir()
            .join(".0000000000000003-0000000000000003.ltx.tmp");
        fs::write(&tmp, b"being written").unwrap();
        let listed = list(&meta).unwrap();
        assert_eq!(
            listed,
            vec![SpoolFile {
                min: TxId::new(1),
                max: TxId::new(2),
                path: file
            }]
        );
        assert!(tmp.exists(), "listing removed a temporary file");
        Spool::open(&meta).unwrap();
        assert!(!tmp.exists(), "open cleans up");
    }
}
