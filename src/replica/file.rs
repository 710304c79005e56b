//! A replica in a local (or mounted) directory: `<root>/ltx/<level>/<min>-<max>.ltx`.
//!
//! A file counts as replicated only once its bytes, its name and every directory above it up
//! to the root's parent are durable. An upload or delete retried after a crash re-syncs what
//! the interrupted attempt may have left in the page cache, so "already there" and "already
//! gone" are answers only after a directory fsync.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use super::error::{ErrorKind, ReplicaError, Result};
use super::{LtxFileInfo, ReplicaClient};
use crate::durable;
use crate::ltx::{self, Level, TxId};

/// A directory replica. Writes go through [`durable::write_file`] (temp file, fsync, rename,
/// directory fsync), so a listed file is always complete.
pub struct FileReplicaClient {
    url: String,
    root: PathBuf,
    /// Levels whose directories this process has made durable and cleared of temporary files
    /// that killed writers left, both done once, on the first write into the level.
    prepared: [AtomicBool; Level::COUNT],
    /// Fsyncs a directory: [`durable::sync_dir`], which tests replace to observe or fail it.
    sync_dir: fn(&Path) -> io::Result<()>,
}

impl FileReplicaClient {
    /// A client for the directory `root` (created on the first write), known to users as `url`.
    pub fn new(url: &str, root: &Path) -> Self {
        FileReplicaClient {
            url: url.to_string(),
            root: root.to_path_buf(),
            prepared: std::array::from_fn(|_| AtomicBool::new(false)),
            sync_dir: durable::sync_dir,
        }
    }

    /// A client whose directory fsyncs go through `sync_dir`, for tests that watch them.
    #[cfg(test)]
    fn with_sync_dir(url: &str, root: &Path, sync_dir: fn(&Path) -> io::Result<()>) -> Self {
        FileReplicaClient {
            sync_dir,
            ..FileReplicaClient::new(url, root)
        }
    }

    fn level_dir(&self, level: Level) -> PathBuf {
        self.root.join("ltx").join(level.to_string())
    }

    fn file_path(&self, level: Level, min: TxId, max: TxId) -> PathBuf {
        self.level_dir(level).join(ltx::file_name(min, max))
    }

    /// Makes sure `ltx/<level>` exists and is durable before a file is written into it.
    ///
    /// [`durable::create_dir_all`] fsyncs only the parents of directories it creates itself, so
    /// directories a killed process created (and never fsynced the parents of) would pass
    /// unnoticed: on the first write into a level this process syncs the whole chain, and
    /// removes the temporary files killed writers left there.
    fn prepare_level(&self, level: Level) -> Result<PathBuf> {
        let dir = self.level_dir(level);
        let prepared = &self.prepared[level.index()];
        if let Err(e) = durable::create_dir_all(&dir) {
            // Removed behind our back and only partly recreated: sync everything next time.
            prepared.store(false, Ordering::Relaxed);
            // `EEXIST` here is a file where the directory belongs, not a lost write.
            let kind = match ErrorKind::from_io(&e) {
                ErrorKind::Conflict => ErrorKind::Permanent,
                kind => kind,
            };
            return Err(ReplicaError::io_as(kind, &self.url, "create", &dir, e));
        }
        if !prepared.load(Ordering::Relaxed) {
            self.remove_stale_temps(&dir);
            self.sync_dirs(&dir)?;
            prepared.store(true, Ordering::Relaxed);
        }
        Ok(dir)
    }

    /// Fsyncs a level directory and each directory above it up to the root's parent, which
    /// makes durable a rename or unlink in the level and the entries of directories created
    /// for it.
    fn sync_dirs(&self, level_dir: &Path) -> Result<()> {
        let ltx_dir = self.root.join("ltx");
        for dir in [level_dir, &ltx_dir, &self.root] {
            (self.sync_dir)(dir)
                .map_err(|e| ReplicaError::io(&self.url, "fsync directory", dir, e))?;
        }
        let parent = match self.root.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            // The root is `/`: nothing above it.
            None => return Ok(()),
        };
        match (self.sync_dir)(parent) {
            Ok(()) => Ok(()),
            // A root made by an operator inside a directory we may enter but not read: its
            // entry is not ours to make durable, and refusing every upload would not help.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                log::warn!(
                    replica:% = self.url, dir:% = parent.display(), error:% = e;
                    "cannot fsync the replica root's parent"
                );
                Ok(())
            }
            Err(e) => Err(ReplicaError::io(&self.url, "fsync directory", parent, e)),
        }
    }

    /// Removes the temporary files ([`durable::temp_path`]) in `dir` whose writer is no longer
    /// running: a `kill -9` between the create and the rename leaves them, and nothing else
    /// ever would. Files of this process or of any live process (another daemon writing the
    /// same replica) are kept. Failures are logged and never fail the upload that triggered
    /// the sweep: the stale files only take space.
    fn remove_stale_temps(&self, dir: &Path) {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                log::warn!(
                    replica:% = self.url, dir:% = dir.display(), error:% = e;
                    "cannot list for stale temporary files; upload continues, any stay"
                );
                return;
            }
        };
        let (mut removed, mut failed) = (0, None);
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    failed.get_or_insert(e);
                    break;
                }
            };
            let Some(pid) = stale_temp_pid(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            if pid == std::process::id() || process_is_running(pid) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                // Another thread's sweep got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if removed > 0 {
            log::info!(
                replica:% = self.url, dir:% = dir.display(), count = removed;
                "removed temporary files of dead writers"
            );
        }
        if let Some(e) = failed {
            log::warn!(
                replica:% = self.url, dir:% = dir.display(), error:% = e;
                "cannot remove stale temporary files; upload continues, some stay"
            );
        }
    }

    /// The answer for an upload whose destination already exists: the same bytes are a retry
    /// after a crash and succeed once the file and the directories above it are fsynced (the
    /// interrupted attempt may have renamed it without its directory fsync); other bytes are
    /// an error, as replica files are immutable.
    fn accept_existing(
        &self,
        input: &mut File,
        src: &Path,
        mut existing: File,
        dest: &Path,
        dir: &Path,
    ) -> Result<()> {
        let same = same_bytes(input, &mut existing).map_err(|(which, e)| match which {
            Side::Src => spool_error(&self.url, "read spooled", src, e),
            Side::Dest => ReplicaError::io(&self.url, "read", dest, e),
        })?;
        if !same {
            return Err(ReplicaError::new(
                ErrorKind::Conflict,
                &self.url,
                "",
                dest.display().to_string(),
                "already exists with different content (another writer replicates to this replica?)",
            ));
        }
        existing
            .sync_all()
            .map_err(|e| ReplicaError::io(&self.url, "fsync", dest, e))?;
        self.sync_dirs(dir)
    }
}

/// An error reading the local spooled file an upload sends. A spooled file that vanished is
/// not the replica's "not found": the database thread notices it and writes a snapshot, so
/// it counts as transient.
pub(super) fn spool_error(url: &str, op: &str, src: &Path, e: io::Error) -> ReplicaError {
    let kind = match ErrorKind::from_io(&e) {
        ErrorKind::NotFound => ErrorKind::Transient,
        kind => kind,
    };
    ReplicaError::io_as(kind, url, op, src, e)
}

/// The writer's pid in a temporary file name `.<min>-<max>.ltx.<pid>.tmp`, as
/// [`durable::temp_path`] makes them; `None` for any other name (those are not ours to judge).
fn stale_temp_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (file, pid) = inner.rsplit_once('.')?;
    ltx::parse_file_name(file)?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Pid 0 and values beyond `pid_t` never name a single process (`kill` would signal a
    // process group): keep such files rather than guess.
    let pid: i32 = pid.parse().ok()?;
    (pid > 0).then_some(pid as u32)
}

/// Whether a process with this pid exists (in our pid namespace). Only "no such process" counts
/// as gone: a process we may not signal (`EPERM`) is alive.
fn process_is_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the pid exists. `pid` is
    // positive, so it names one process, never a group.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl ReplicaClient for FileReplicaClient {
    fn url(&self) -> &str {
        &self.url
    }

    fn ltx_files(&self, level: Level) -> Result<Vec<LtxFileInfo>> {
        let dir = self.level_dir(level);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(ReplicaError::io(&self.url, "list", &dir, e)),
        };
        let mut files = vec![];
        for entry in entries {
            let entry = entry.map_err(|e| ReplicaError::io(&self.url, "list", &dir, e))?;
            let name = entry.file_name();
            let Some((min, max)) = ltx::parse_file_name(&name.to_string_lossy()) else {
                continue;
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted between the listing and the stat (compaction): not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ReplicaError::io(&self.url, "stat", &entry.path(), e)),
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

    fn open_ltx(&self, level: Level, min: TxId, max: TxId) -> Result<Box<dyn Read + Send>> {
        let path = self.file_path(level, min, max);
        let file = File::open(&path).map_err(|e| ReplicaError::io(&self.url, "open", &path, e))?;
        Ok(Box::new(io::BufReader::with_capacity(64 * 1024, file)))
    }

    fn put_ltx(
        &self,
        level: Level,
        min: TxId,
        max: TxId,
        timestamp_ms: i64,
        src: &Path,
    ) -> Result<()> {
        let dir = self.prepare_level(level)?;
        let dest = dir.join(ltx::file_name(min, max));
        let mut input =
            File::open(src).map_err(|e| spool_error(&self.url, "open spooled", src, e))?;
        match File::open(&dest) {
            Ok(existing) => return self.accept_existing(&mut input, src, existing, &dest, &dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ReplicaError::io(&self.url, "open", &dest, e)),
        }
        // Stamped with its LTX timestamp before the rename, as listings report modification
        // times (Litestream does the same), without opening the file a second time.
        let mtime = UNIX_EPOCH + std::time::Duration::from_millis(timestamp_ms.max(0) as u64);
        durable::write_file(&dest, |w| {
            io::copy(&mut input, w)?;
            w.flush()?;
            w.get_ref().set_modified(mtime)
        })
        .map_err(|e| ReplicaError::io(&self.url, "write", &dest, e))?;
        Ok(())
    }

    fn delete_ltx(&self, level: Level, files: &[(TxId, TxId)]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let dir = self.level_dir(level);
        let mut failed = None;
        for &(min, max) in files {
            let path = self.file_path(level, min, max);
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Already gone, perhaps by an attempt killed before its directory fsync: the
                // sync below makes that unlink durable too.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    failed = Some(ReplicaError::io(&self.url, "delete", &path, e));
                    break;
                }
            }
        }
        // One fsync for the whole batch; after a failure too, so what was unlinked stays so.
        let synced = match (self.sync_dir)(&dir) {
            // No level directory: nothing was ever there to delete.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            synced => synced.map_err(|e| ReplicaError::io(&self.url, "fsync directory", &dir, e)),
        };
        match failed {
            Some(e) => Err(e),
            None => synced,
        }
    }
}

/// Which file a comparison failed to read.
enum Side {
    Src,
    Dest,
}

/// Whether two files hold the same bytes, compared in chunks (a snapshot may not fit in memory).
fn same_bytes(a: &mut File, b: &mut File) -> std::result::Result<bool, (Side, io::Error)> {
    let len_a = a.metadata().map_err(|e| (Side::Src, e))?.len();
    let len_b = b.metadata().map_err(|e| (Side::Dest, e))?.len();
    if len_a != len_b {
        return Ok(false);
    }
    let (mut buf_a, mut buf_b) = (vec![0; 64 * 1024], vec![0; 64 * 1024]);
    loop {
        let n = super::read_full(a, &mut buf_a).map_err(|e| (Side::Src, e))?;
        let m = super::read_full(b, &mut buf_b).map_err(|e| (Side::Dest, e))?;
        if buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n < buf_a.len() {
            return Ok(true);
        }
    }
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
        client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), ts, &src)
            .unwrap();
        let files = client.ltx_files(Level::L0).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].created_ms, ts, "mtime carries the LTX timestamp");
        // The same bytes again: a retry after a crash, accepted.
        client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), ts, &src)
            .unwrap();
        // Other bytes under the same name: refused, the replica keeps the original.
        std::fs::write(&src, b"two").unwrap();
        let err = client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), ts, &src)
            .unwrap_err();
        assert!(format!("{err:#}").contains("different content"), "{err:#}");
        let mut kept = String::new();
        client
            .open_ltx(Level::L0, TxId::new(1), TxId::new(1))
            .unwrap()
            .read_to_string(&mut kept)
            .unwrap();
        assert_eq!(kept, "one");
    }

    #[test]
    fn failures_carry_their_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        let client = FileReplicaClient::new("file:///r", &root);
        let e = client
            .open_ltx(Level::L0, TxId::new(1), TxId::new(1))
            .err()
            .expect("missing");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e:#}");
        assert!(
            e.to_string().starts_with("file:///r: open ") && e.to_string().ends_with(".ltx"),
            "{e}"
        );

        let src = tmp.path().join("a.ltx");
        std::fs::write(&src, b"one").unwrap();
        client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap();
        std::fs::write(&src, b"two").unwrap();
        let e = client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e:#}");

        // A file where a level directory belongs: nothing a retry fixes.
        std::fs::write(root.join("ltx/3"), b"in the way").unwrap();
        let e = client
            .put_ltx(Level::new(3).unwrap(), TxId::new(1), TxId::new(1), 0, &src)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e:#}");
        let e = client.ltx_files(Level::new(3).unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e:#}");

        // The spooled file vanished: the database thread's business, not a missing replica
        // file.
        let gone = tmp.path().join("gone.ltx");
        let e = client
            .put_ltx(Level::L0, TxId::new(2), TxId::new(2), 0, &gone)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{e:#}");
        assert!(format!("{e:#}").contains("gone.ltx"), "{e:#}");
    }

    thread_local! {
        static SYNCED: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// A directory sync that records which directories it made durable.
    fn recording_sync(dir: &Path) -> io::Result<()> {
        SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
        durable::sync_dir(dir)
    }

    fn take_synced() -> Vec<PathBuf> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    /// A directory sync that fails, as on a full or failing disk.
    fn failing_sync(dir: &Path) -> io::Result<()> {
        Err(io::Error::other(format!("fsync {} refused", dir.display())))
    }

    #[test]
    fn existing_file_counts_only_after_its_directories_are_synced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        let src = tmp.path().join("a.ltx");
        std::fs::write(&src, b"one").unwrap();
        // An earlier attempt renamed the file into place and was killed before (or its
        // directory fsync failed): the name is there, its durability unknown.
        FileReplicaClient::new("file:///r", &root)
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap();

        let failing = FileReplicaClient::with_sync_dir("file:///r", &root, failing_sync);
        let err = failing
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("file:///r") && msg.contains("refused"),
            "{msg}"
        );

        take_synced();
        let client = FileReplicaClient::with_sync_dir("file:///r", &root, recording_sync);
        client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap();
        let synced = take_synced();
        for dir in [root.join("ltx/0"), root.join("ltx"), root.clone()] {
            assert!(
                synced.contains(&dir),
                "{} not synced: {synced:?}",
                dir.display()
            );
        }
        // Every retry of an existing file syncs again, not only the first in this process.
        client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap();
        assert!(take_synced().contains(&root.join("ltx/0")));

        // Other bytes stay an error naming the file and the replica, whatever the syncs do.
        std::fs::write(&src, b"two").unwrap();
        let err = client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("file:///r")
                && msg.contains(&ltx::file_name(TxId::new(1), TxId::new(1)))
                && msg.contains("different content"),
            "{msg}"
        );
    }

    #[test]
    fn directories_an_interrupted_attempt_created_are_synced_on_first_write() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        // Created by a process killed before it fsynced their parents.
        std::fs::create_dir_all(root.join("ltx/0")).unwrap();
        let src = tmp.path().join("a.ltx");
        std::fs::write(&src, b"one").unwrap();
        take_synced();
        let client = FileReplicaClient::with_sync_dir("file:///r", &root, recording_sync);
        client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap();
        let synced = take_synced();
        for dir in [root.join("ltx"), root.clone(), tmp.path().to_path_buf()] {
            assert!(
                synced.contains(&dir),
                "{} not synced: {synced:?}",
                dir.display()
            );
        }
        assert_eq!(client.ltx_files(Level::L0).unwrap().len(), 1);
    }

    #[test]
    fn delete_counts_only_after_the_directory_is_synced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        let src = tmp.path().join("a.ltx");
        std::fs::write(&src, b"one").unwrap();
        let client = FileReplicaClient::with_sync_dir("file:///r", &root, recording_sync);
        for i in 1..=2 {
            client
                .put_ltx(Level::L0, TxId::new(i), TxId::new(i), 0, &src)
                .unwrap();
        }
        // An earlier attempt unlinked the first file and was killed before the directory
        // fsync: a retry that finds it gone must still make the removal durable.
        std::fs::remove_file(
            root.join("ltx/0")
                .join(ltx::file_name(TxId::new(1), TxId::new(1))),
        )
        .unwrap();
        let failing = FileReplicaClient::with_sync_dir("file:///r", &root, failing_sync);
        let err = failing
            .delete_ltx(Level::L0, &[(TxId::new(1), TxId::new(1))])
            .unwrap_err();
        assert!(format!("{err:#}").contains("file:///r"), "{err:#}");

        take_synced();
        client
            .delete_ltx(
                Level::L0,
                &[(TxId::new(1), TxId::new(1)), (TxId::new(2), TxId::new(2))],
            )
            .unwrap();
        assert!(take_synced().contains(&root.join("ltx/0")));
        assert!(client.ltx_files(Level::L0).unwrap().is_empty());
        // Deleting from a level that was never written is not an error.
        client
            .delete_ltx(Level::new(3).unwrap(), &[(TxId::new(1), TxId::new(1))])
            .unwrap();
    }

    /// Kills and reaps a child process when the test ends, even when it fails.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        let level_dir = root.join("ltx/0");
        std::fs::create_dir_all(&level_dir).unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let live = Child(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let name = ltx::file_name(TxId::new(5), TxId::new(5));
        let temp = |pid: &dyn std::fmt::Display| format!(".{name}.{pid}.tmp");
        let stale = temp(&dead_pid);
        let kept = [
            temp(&live.0.id()),
            temp(&std::process::id()),
            // Not ours to judge: other names, pids that are not a process's.
            format!(".state.json.{dead_pid}.tmp"),
            temp(&0),
            temp(&"x1"),
            temp(&-1),
        ];
        for n in kept.iter().chain([&stale]) {
            std::fs::write(level_dir.join(n), b"partial").unwrap();
        }

        let src = tmp.path().join("a.ltx");
        std::fs::write(&src, b"one").unwrap();
        let client = FileReplicaClient::new("file:///r", &root);
        client
            .put_ltx(Level::L0, TxId::new(1), TxId::new(1), 0, &src)
            .unwrap();
        assert!(!level_dir.join(&stale).exists(), "stale temp file left");
        for n in &kept {
            assert!(level_dir.join(n).exists(), "{n} removed");
        }
        assert_eq!(client.ltx_files(Level::L0).unwrap().len(), 1);
    }
}
