//! A replica in a local (or mounted) directory: `<root>/ltx/<level>/<min>-<max>.ltx`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};

use super::{LtxFileInfo, ReplicaClient};
use crate::durable;
use crate::ltx::{self, TxId};

/// A directory replica. Writes go through [`durable::write_file`] (temp file, fsync, rename,
/// directory fsync), so a listed file is always complete.
pub struct FileReplicaClient {
    url: String,
    root: PathBuf,
}

impl FileReplicaClient {
    /// A client for the directory `root` (created on the first write), known to users as `url`.
    pub fn new(url: &str, root: &Path) -> Self {
        FileReplicaClient {
            url: url.to_string(),
            root: root.to_path_buf(),
        }
    }

    fn level_dir(&self, level: u8) -> PathBuf {
        self.root.join("ltx").join(level.to_string())
    }

    fn file_path(&self, level: u8, min: TxId, max: TxId) -> PathBuf {
        self.level_dir(level).join(ltx::file_name(min, max))
    }
}

impl ReplicaClient for FileReplicaClient {
    fn url(&self) -> &str {
        &self.url
    }

    fn ltx_files(&self, level: u8) -> Result<Vec<LtxFileInfo>> {
        let dir = self.level_dir(level);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => {
                return Err(e).with_context(|| format!("{}: list {}", self.url, dir.display()))
            }
        };
        let mut files = vec![];
        for entry in entries {
            let entry = entry.with_context(|| format!("{}: list {}", self.url, dir.display()))?;
            let name = entry.file_name();
            let Some((min, max)) = ltx::parse_file_name(&name.to_string_lossy()) else {
                continue;
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted between the listing and the stat (compaction): not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("{}: stat {}", self.url, entry.path().display()))
                }
            };
            let created_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            files.push(LtxFileInfo {
                level,
                min,
                max,
                size: meta.len(),
                created_ms,
            });
        }
        files.sort_by_key(|f| (f.min, f.max));
        Ok(files)
    }

    fn open_ltx(&self, level: u8, min: TxId, max: TxId) -> Result<Box<dyn Read + Send>> {
        let path = self.file_path(level, min, max);
        let file =
            File::open(&path).with_context(|| format!("{}: open {}", self.url, path.display()))?;
        Ok(Box::new(io::BufReader::with_capacity(64 * 1024, file)))
    }

    fn put_ltx(
        &self,
        level: u8,
        min: TxId,
        max: TxId,
        timestamp_ms: i64,
        src: &Path,
    ) -> Result<()> {
        let dest = self.file_path(level, min, max);
        if dest.exists() {
            return same_bytes(src, &dest)
                .with_context(|| format!("{}: {}", self.url, dest.display()));
        }
        let dir = self.level_dir(level);
        durable::create_dir_all(&dir)
            .with_context(|| format!("{}: create {}", self.url, dir.display()))?;
        let mut input =
            File::open(src).with_context(|| format!("open spooled {}", src.display()))?;
        // Stamped with its LTX timestamp before the rename, as listings report modification
        // times (Litestream does the same), without opening the file a second time.
        let mtime = UNIX_EPOCH + std::time::Duration::from_millis(timestamp_ms.max(0) as u64);
        durable::write_file(&dest, |w| {
            io::copy(&mut input, w)?;
            w.flush()?;
            w.get_ref().set_modified(mtime)
        })
        .with_context(|| format!("{}: write {}", self.url, dest.display()))?;
        Ok(())
    }

    fn delete_ltx(&self, level: u8, files: &[(TxId, TxId)]) -> Result<()> {
        for &(min, max) in files {
            let path = self.file_path(level, min, max);
            durable::remove_file(&path)
                .with_context(|| format!("{}: delete {}", self.url, path.display()))?;
        }
        Ok(())
    }
}

/// Succeeds when the existing replica file holds exactly the bytes being uploaded.
fn same_bytes(src: &Path, dest: &Path) -> Result<()> {
    let (a, b) = (fs::read(src)?, fs::read(dest)?);
    if a != b {
        bail!("already exists with different content (another writer replicates to this replica?)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_immutable_and_stamped_with_the_ltx_time() {
        let tmp = tempfile::tempdir().unwrap();
        let client = FileReplicaClient::new("file:///r", &tmp.path().join("r"));
        let src = tmp.path().join("a.ltx");
        std::fs::write(&src, b"one").unwrap();
        let ts = 1_700_000_000_123;
        client.put_ltx(0, TxId(1), TxId(1), ts, &src).unwrap();
        let files = client.ltx_files(0).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].created_ms, ts, "mtime carries the LTX timestamp");
        // The same bytes again: a retry after a crash, accepted.
        client.put_ltx(0, TxId(1), TxId(1), ts, &src).unwrap();
        // Other bytes under the same name: refused, the replica keeps the original.
        std::fs::write(&src, b"two").unwrap();
        let err = client.put_ltx(0, TxId(1), TxId(1), ts, &src).unwrap_err();
        assert!(format!("{err:#}").contains("different content"), "{err:#}");
        let mut kept = String::new();
        client
            .open_ltx(0, TxId(1), TxId(1))
            .unwrap()
            .read_to_string(&mut kept)
            .unwrap();
        assert_eq!(kept, "one");
    }
}
