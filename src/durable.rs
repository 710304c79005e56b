//! Durable local writes: the one helper every local state file goes through.
//!
//! A file counts as written only after its bytes are fsynced under a temporary name, renamed
//! over the final name, and the directory is fsynced, so a crash or power loss leaves either
//! the old file or the complete new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary name a file is written under before it is renamed into place. The leading
/// dot and `.tmp` suffix keep listings (which match `*.ltx`) from ever seeing it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes a file durably: `fill` writes the content into a temporary file, which is fsynced,
/// renamed to `path` (replacing any older file) and made durable by fsyncing the directory.
/// On any error the temporary file is removed and `path` is untouched.
pub fn write_file<T>(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<&File>) -> io::Result<T>,
) -> io::Result<T> {
    let (staged, value) = stage_file(path, fill)?;
    staged.commit()?;
    Ok(value)
}

/// The first half of [`write_file`]: the content written under the temporary name, not yet
/// fsynced. For writes whose content must be taken at a moment that should stay short (under
/// SQLite's write lock) while the fsyncs can wait until after it.
pub fn stage_file<T>(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<&File>) -> io::Result<T>,
) -> io::Result<(Staged, T)> {
    let tmp = temp_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let staged = Staged {
        tmp,
        path: path.to_path_buf(),
        file: Some(file),
    };
    let value = {
        let file = staged.file.as_ref().expect("just opened");
        let mut w = io::BufWriter::with_capacity(64 * 1024, file);
        let value = fill(&mut w)?;
        w.flush()?;
        value
    };
    Ok((staged, value))
}

/// A file written under its temporary name by [`stage_file`]: [`Staged::commit`] makes it
/// durable under its final name; dropping it uncommitted removes it.
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<File>,
}

impl Staged {
    /// Fsyncs the file, renames it into place and fsyncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("committed once");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.path)?;
        self.tmp = PathBuf::new();
        sync_parent_dir(&self.path)
    }

    /// Like [`Staged::commit`] without the directory's fsync: for a file replaced over and
    /// over whose previous version is as good as the new one after a power loss (the rename
    /// may be lost then, never the content of either version, which is fsynced first). A
    /// renewed lease is one: an older version only expires sooner.
    pub fn commit_replacing(mut self) -> io::Result<()> {
        let file = self.file.take().expect("committed once");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.path)?;
        self.tmp = PathBuf::new();
        Ok(())
    }

    /// Like [`Staged::commit`], but only if nothing exists under the final name: the file is
    /// hard-linked into place (which fails with `AlreadyExists` when the name is taken, unlike
    /// a rename), so an exclusive create never exposes a partly written file.
    pub fn commit_new(mut self) -> io::Result<()> {
        let file = self.file.take().expect("committed once");
        file.sync_all()?;
        drop(file);
        fs::hard_link(&self.tmp, &self.path)?;
        // The temporary name goes in `Drop`; the directory sync covers both entries.
        sync_parent_dir(&self.path)
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Fsyncs the directory holding `path`, which makes a rename or an unlink in it durable.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// Fsyncs a directory itself (its entries), not the files in it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a directory and its missing parents, fsyncing each parent whose entries changed,
/// so a directory made before a durable write survives a power loss as well as the file.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir_all(parent)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_parent_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a file and makes the removal durable; a file that is already gone is not an error.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_atomically_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("state.json");
        write_file(&path, |w| w.write_all(b"one")).unwrap();
        write_file(&path, |w| w.write_all(b"two")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "only the final file remains: {names:?}");
    }

    #[test]
    fn failed_fill_keeps_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("state.json");
        write_file(&path, |w| w.write_all(b"old")).unwrap();
        let err = write_file(&path, |w| {
            w.write_all(b"partial")?;
            Err::<(), _>(io::Error::other("boom"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
    }

    #[test]
    fn create_dir_all_makes_nested_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_all(&nested).unwrap();
    }
}
