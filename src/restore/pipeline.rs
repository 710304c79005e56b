//! Applying a restore plan: the calling thread reads, decompresses and verifies each file,
//! a `restore-write` thread writes the pages, joined by bounded channels of recycled page
//! batches (see [`build`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};

use super::progress::Done;
use super::{file_label, Plan, Report};
use crate::ltx::{self, Checksum, PageChecksums, TxId};
use crate::replica::ReplicaClient;

/// Bytes of pages handed to the writer at a time (at least one page): large enough that a
/// snapshot is written with few system calls and thread wakeups, small enough that the
/// batches in flight keep a restore's memory at a few MiB whatever the database's size.
/// Measured on a 200 MB restore: 64 and 128 KiB were a little slower, 1 MiB twice as slow
/// (most of the writer's time went to copying the batches into the page cache, as if they no
/// longer came from the CPU cache).
const BATCH_BYTES: usize = 256 * 1024;

/// Page batches in circulation between the two threads (filling, queued, being written).
const BATCHES: usize = 4;

/// After this many bytes written, the writer asks the kernel to start writing them to disk
/// (`sync_file_range`), so that the device works while we decode and the final fsync only
/// waits for the tail instead of the whole database (without it, the 200 MB restore took
/// about 40% longer; 2 to 32 MiB all did about as well).
const WRITEBACK_BYTES: u64 = 8 << 20;

/// Pages on their way from the decoding thread to the writing thread, reused batch after
/// batch so that a restore allocates them once.
struct PageBatch {
    /// The database's page size (0 until first used).
    page_size: usize,
    /// Page numbers, in file order; page `i` is `data[i * page_size..][..page_size]`.
    pgnos: Vec<u32>,
    /// Room for a whole batch of pages.
    data: Vec<u8>,
}

impl PageBatch {
    /// Empty, with room for `BATCH_BYTES` of `page_size`-byte pages.
    fn reset(&mut self, page_size: usize) {
        let pages = (BATCH_BYTES / page_size).max(1);
        self.page_size = page_size;
        self.pgnos.clear();
        self.data.resize(pages * page_size, 0);
    }

    /// True when another page would not fit: time to hand the batch over.
    fn is_full(&self) -> bool {
        (self.pgnos.len() + 1) * self.page_size > self.data.len()
    }
}

/// What the decoding thread asks of the writing thread, in the order the plan applies it.
enum WriteOp {
    /// Write these pages at their place.
    Pages(PageBatch),
    /// Set the database's length (a file's commit), after the pages before it.
    SetLen(u64),
}

/// The writer stopped early; its own error is the one to report.
#[derive(Debug)]
struct WriterStopped;

impl std::fmt::Display for WriterStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the restore writer stopped")
    }
}

impl std::error::Error for WriterStopped {}

/// Writes the database into `tmp`, verifying as it goes, and fsyncs it.
///
/// Two threads, so that a restore runs at the speed of the slower of decoding and writing
/// rather than their sum: this one reads, decompresses and verifies every file (file
/// checksum, pre- and post-apply database checksums), and hands the pages in bounded,
/// recycled batches to a `restore-write` thread that writes them with `pwrite` and starts
/// their writeback early. Any error on either side stops both; the caller removes `tmp`.
pub(super) fn build(
    client: &dyn ReplicaClient,
    plan: &Plan,
    tmp: &Path,
    progress: &mut dyn FnMut(Done),
) -> Result<Report> {
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    let report = pipeline(client, plan, &out, tmp, progress)?;
    out.sync_all()
        .with_context(|| format!("fsync {}", tmp.display()))?;
    Ok(report)
}

/// Runs the two threads of [`build`] over the open output `out` (named `tmp` in errors).
fn pipeline(
    client: &dyn ReplicaClient,
    plan: &Plan,
    out: &File,
    tmp: &Path,
    progress: &mut dyn FnMut(Done),
) -> Result<Report> {
    let (op_tx, op_rx) = crossbeam_channel::bounded::<WriteOp>(BATCHES);
    let (free_tx, free_rx) = crossbeam_channel::bounded::<PageBatch>(BATCHES);
    for _ in 0..BATCHES {
        let empty = PageBatch {
            page_size: 0,
            pgnos: Vec::new(),
            data: Vec::new(),
        };
        // The channel has room for every batch, and its receiver is alive right here.
        free_tx.send(empty).expect("room for every batch");
    }
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("restore-write".into())
            .spawn_scoped(scope, move || write_pages(out, tmp, op_rx, free_tx))
            .context("start the restore writer thread")?;
        let decoded = decode_plan(client, plan, &op_tx, &free_rx, progress);
        drop(op_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the restore writer thread panicked")));
        match (decoded, written) {
            (Ok(report), Ok(())) => Ok(report),
            // The writer's own error explains why the decoder saw it stop.
            (Err(e), Err(w)) if e.is::<WriterStopped>() => Err(w),
            (Err(e), _) => Err(e),
            (Ok(_), Err(w)) => Err(w),
        }
    })
}

/// Decodes and verifies every file of `plan` in order, keeping the database checksum, and
/// sends the pages (and each file's truncation) to the writer; tells `progress` after each
/// batch and each file.
fn decode_plan(
    client: &dyn ReplicaClient,
    plan: &Plan,
    ops: &Sender<WriteOp>,
    free: &Receiver<PageBatch>,
    progress: &mut dyn FnMut(Done),
) -> Result<Report> {
    let mut done = Done::default();
    let mut table: Option<PageChecksums> = None;
    let mut page_size = 0u32;
    let mut commit = 0u32;
    let mut at = TxId::ZERO;
    let mut unverified = 0;
    let mut batch: Option<PageBatch> = None;
    for f in &plan.files {
        let label = file_label(f);
        let reader = client
            .open_ltx(f.level, f.min, f.max)
            .with_context(|| format!("open {label}"))?;
        let mut dec =
            ltx::Decoder::with_capacity(256 * 1024, reader).with_context(|| label.clone())?;
        let header = dec.header().clone();
        if (header.min_txid, header.max_txid) != (f.min, f.max) {
            bail!(
                "{label}: header says txids {}-{}",
                header.min_txid,
                header.max_txid
            );
        }
        if page_size == 0 {
            page_size = header.page_size;
        } else if header.page_size != page_size {
            bail!(
                "{label}: page size {} differs from {page_size}",
                header.page_size
            );
        }
        let table = table.get_or_insert_with(|| PageChecksums::new(page_size));
        // The pre-apply checksum is only comparable when the file starts right after our state.
        if let Some((pre, _)) = header.ext_checksums {
            if pre.0 != 0 && at.next() == Some(header.min_txid) && table.checksum() != pre {
                bail!(
                    "{label}: pre-apply checksum mismatch: the database at txid {at} has checksum {}, the file expects {pre}",
                    table.checksum()
                );
            }
        }
        let size = page_size as usize;
        loop {
            let b = match batch.as_mut() {
                Some(b) => b,
                None => {
                    let mut b = free.recv().map_err(|_| WriterStopped)?;
                    b.reset(size);
                    batch.insert(b)
                }
            };
            let at_byte = b.pgnos.len() * size;
            let slot = &mut b.data[at_byte..at_byte + size];
            let Some((pgno, ck)) = dec
                .next_page_checksummed(slot)
                .with_context(|| label.clone())?
            else {
                break;
            };
            b.pgnos.push(pgno);
            table.set(pgno, ck);
            if b.is_full() {
                send_pages(ops, &mut batch)?;
                progress(Done {
                    files: done.files,
                    bytes: done.bytes + dec.bytes_read(),
                });
            }
        }
        // A file's pages are all written before its truncation, which comes before the next
        // file's pages.
        send_pages(ops, &mut batch)?;
        dec.finish().with_context(|| label.clone())?;
        commit = header.commit;
        table.truncate(commit);
        ops.send(WriteOp::SetLen(u64::from(commit) * u64::from(page_size)))
            .map_err(|_| WriterStopped)?;
        match header.ext_checksums {
            Some((_, post)) if table.checksum() != post => bail!(
                "{label}: database checksum mismatch after applying it: built {}, the file says {post}",
                table.checksum()
            ),
            Some(_) => {}
            None => unverified += 1,
        }
        at = header.max_txid;
        done.files += 1;
        done.bytes += f.size;
        progress(done);
    }
    let checksum = table.map_or(Checksum(ltx::CHECKSUM_FLAG), |t| t.checksum());
    Ok(Report {
        txid: at,
        page_size,
        commit,
        checksum,
        files: plan.files.len(),
        unverified_files: unverified,
    })
}

/// Hands the batch being filled, if it holds any page, to the writer.
fn send_pages(ops: &Sender<WriteOp>, batch: &mut Option<PageBatch>) -> Result<()> {
    match batch.take() {
        Some(b) if !b.pgnos.is_empty() => {
            ops.send(WriteOp::Pages(b)).map_err(|_| WriterStopped)?;
        }
        unsent => *batch = unsent,
    }
    Ok(())
}

/// The writing thread: applies `ops` to `out` in order until the decoder hangs up, each run
/// of consecutive pages in one `pwrite`, and returns every batch for reuse.
fn write_pages(
    out: &File,
    tmp: &Path,
    ops: Receiver<WriteOp>,
    free: Sender<PageBatch>,
) -> Result<()> {
    let mut writeback = Writeback::default();
    for op in ops {
        match op {
            WriteOp::Pages(batch) => {
                let size = batch.page_size;
                let mut rest = &batch.pgnos[..];
                let mut data = &batch.data[..];
                while let Some(&first) = rest.first() {
                    let run = 1 + rest
                        .windows(2)
                        .take_while(|w| w[0].checked_add(1) == Some(w[1]))
                        .count();
                    let offset = u64::from(first - 1) * size as u64;
                    let (bytes, tail) = data.split_at(run * size);
                    out.write_all_at(bytes, offset).with_context(|| {
                        let last = first + (run as u32 - 1);
                        format!("write pages {first}-{last} to {}", tmp.display())
                    })?;
                    writeback.wrote(out, offset, bytes.len() as u64);
                    rest = &rest[run..];
                    data = tail;
                }
                // The decoder may have stopped already: then the batch is simply dropped.
                let _ = free.send(batch);
            }
            WriteOp::SetLen(len) => out
                .set_len(len)
                .with_context(|| format!("truncate {}", tmp.display()))?,
        }
    }
    Ok(())
}

/// The range written since the kernel was last asked to start writing it to disk.
#[derive(Default)]
struct Writeback {
    start: u64,
    end: u64,
    bytes: u64,
}

impl Writeback {
    /// Notes `len` bytes written at `offset`; every `WRITEBACK_BYTES`, starts their writeback.
    fn wrote(&mut self, out: &File, offset: u64, len: u64) {
        if self.bytes == 0 {
            (self.start, self.end) = (offset, offset + len);
        } else {
            self.start = self.start.min(offset);
            self.end = self.end.max(offset + len);
        }
        self.bytes += len;
        if self.bytes >= WRITEBACK_BYTES {
            start_writeback(out, self.start, self.end - self.start);
            self.bytes = 0;
        }
    }
}

/// Asks the kernel to start writing a range of `out` to disk without waiting for it. Only a
/// hint: the fsync at the end waits for every byte and reports any write error, so a failure
/// here (a file system without support) changes nothing but the timing.
#[cfg(target_os = "linux")]
fn start_writeback(out: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the whole call (`out` is borrowed), and
    // sync_file_range only reads its integer arguments.
    let _ =
        unsafe { libc::sync_file_range(out.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Elsewhere the final fsync does all the writing.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_out: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::super::{apply, plan, Target};
    use super::*;

    /// A replica on disk built from a model database: each file's pages applied to `pages`,
    /// with our pre- and post-apply checksums (or a wrong post-apply one, for the tests that
    /// want one).
    struct ReplicaBuilder {
        root: tempfile::TempDir,
        page_size: u32,
        pages: Vec<Vec<u8>>,
        table: PageChecksums,
    }

    impl ReplicaBuilder {
        fn new(page_size: u32) -> Self {
            ReplicaBuilder {
                root: tempfile::tempdir().unwrap(),
                page_size,
                pages: Vec::new(),
                table: PageChecksums::new(page_size),
            }
        }

        fn client(&self) -> crate::replica::file::FileReplicaClient {
            crate::replica::file::FileReplicaClient::new("file:///test-replica", self.root.path())
        }

        /// Writes `ltx/0/<txid>-<txid>.ltx` (txid 1: a snapshot of every page) holding
        /// `pgnos` with contents from `salt`, leaving the database `commit` pages long.
        fn file(&mut self, txid: u64, commit: u32, pgnos: &[u32], salt: u32, wrong_post: bool) {
            let pre = if txid == 1 {
                Checksum(0)
            } else {
                self.table.checksum()
            };
            let mut encoded = Vec::new();
            for &pgno in pgnos {
                let page = ltx::testutil::test_page(pgno, self.page_size, salt);
                let i = (pgno - 1) as usize;
                if self.pages.len() <= i {
                    self.pages.resize(i + 1, vec![0; self.page_size as usize]);
                }
                self.pages[i] = page.clone();
                self.table.set(pgno, ltx::page_checksum(pgno, &page));
                encoded.push((pgno, page));
            }
            self.pages.truncate(commit as usize);
            self.table.truncate(commit);
            let post = match wrong_post {
                true => Checksum(self.table.checksum().0 ^ 1),
                false => self.table.checksum(),
            };
            let header = ltx::Header {
                flags: ltx::FLAG_NO_CHECKSUM,
                page_size: self.page_size,
                commit,
                min_txid: TxId::new(txid),
                max_txid: TxId::new(txid),
                ext_checksums: Some((pre, post)),
                ..ltx::Header::default()
            };
            let (_, bytes) = ltx::testutil::encode_all(&header, &encoded, Checksum(0));
            let dir = self.root.path().join("ltx/0");
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join(ltx::file_name(TxId::new(txid), TxId::new(txid))),
                bytes,
            )
            .unwrap();
        }

        fn path(&self, txid: u64) -> PathBuf {
            let name = ltx::file_name(TxId::new(txid), TxId::new(txid));
            self.root.path().join("ltx/0").join(name)
        }

        /// A snapshot, then files that overwrite pages, shrink and grow the database; enough
        /// pages that a file spans several writer batches.
        fn standard(page_size: u32, bad: Option<(u64, Corruption)>) -> Self {
            let mut r = ReplicaBuilder::new(page_size);
            let n = (3 * BATCH_BYTES as u32 / page_size).max(5) + 7;
            let wrong = |txid| bad == Some((txid, Corruption::WrongPostApply));
            r.file(1, n, &(1..=n).collect::<Vec<_>>(), 0, wrong(1));
            r.file(2, n, &[2, 3, 4, n / 2, n], 2, wrong(2));
            r.file(3, n - 3, &[1, 3], 3, wrong(3));
            r.file(4, n + 1, &[n - 2, n - 1, n, n + 1], 4, wrong(4));
            if let Some((txid, Corruption::PageByte)) = bad {
                // A byte in the middle of the first page frame's LZ4 payload.
                let path = r.path(txid);
                let mut bytes = fs::read(&path).unwrap();
                bytes[ltx::HEADER_SIZE + 10 + 40] ^= 0x55;
                fs::write(&path, bytes).unwrap();
            }
            r
        }
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Corruption {
        PageByte,
        WrongPostApply,
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn restores_a_multi_file_plan_through_the_pipeline() {
        for page_size in [512, 4096, 65536] {
            let replica = ReplicaBuilder::standard(page_size, None);
            let client = replica.client();
            let plan = plan(&client, Target::Latest).unwrap();
            assert_eq!(plan.files.len(), 4);
            let out_dir = tempfile::tempdir().unwrap();
            let out = out_dir.path().join("app.db");
            let report = apply(&client, &plan, &out, false).unwrap();
            assert_eq!(
                fs::read(&out).unwrap(),
                replica.pages.concat(),
                "{page_size}"
            );
            assert_eq!(report.checksum, replica.table.checksum());
            assert_eq!(report.commit as usize, replica.pages.len());
            assert_eq!((report.files, report.unverified_files), (4, 0));
            assert_eq!(report.txid, TxId::new(4));
            assert_eq!(dir_names(out_dir.path()), ["app.db"]);
        }
    }

    #[test]
    fn progress_counts_every_batch_and_file_up_to_the_plan_totals() {
        let replica = ReplicaBuilder::standard(4096, None);
        let client = replica.client();
        let plan = plan(&client, Target::Latest).unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let mut seen = vec![];
        super::super::apply_then(
            &client,
            &plan,
            &out_dir.path().join("app.db"),
            false,
            |_| Ok(()),
            &mut |d| seen.push(d),
        )
        .unwrap();
        assert!(
            seen.len() > plan.files.len(),
            "batches as well as files: {seen:?}"
        );
        assert!(seen
            .windows(2)
            .all(|w| w[0].bytes <= w[1].bytes && w[0].files <= w[1].files));
        assert_eq!(seen.last(), Some(&Done::total(&plan)));
    }

    #[test]
    fn a_bad_file_anywhere_in_the_plan_fails_by_name_and_leaves_nothing() {
        for txid in 1..=4 {
            for corruption in [Corruption::PageByte, Corruption::WrongPostApply] {
                let replica = ReplicaBuilder::standard(512, Some((txid, corruption)));
                let client = replica.client();
                let plan = plan(&client, Target::Latest).unwrap();
                let out_dir = tempfile::tempdir().unwrap();
                let out = out_dir.path().join("app.db");
                let err = format!("{:#}", apply(&client, &plan, &out, false).unwrap_err());
                let label = format!("ltx/0/{}", ltx::file_name(TxId::new(txid), TxId::new(txid)));
                assert!(err.contains(&label), "{txid} {corruption:?}: {err}");
                let what = match corruption {
                    Corruption::PageByte => "checksum mismatch",
                    Corruption::WrongPostApply => "database checksum mismatch",
                };
                assert!(err.contains(what), "{txid} {corruption:?}: {err}");
                assert!(
                    dir_names(out_dir.path()).is_empty(),
                    "{txid} {corruption:?}"
                );
            }
        }
    }

    #[test]
    fn a_write_error_stops_the_decoder_and_is_the_error_reported() {
        let replica = ReplicaBuilder::standard(4096, None);
        let client = replica.client();
        let plan = plan(&client, Target::Latest).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("read-only.db");
        fs::write(&tmp, b"").unwrap();
        // Opened for reading only: every pwrite fails (EBADF).
        let out = File::open(&tmp).unwrap();
        let err = format!(
            "{:#}",
            pipeline(&client, &plan, &out, &tmp, &mut |_| {}).unwrap_err()
        );
        assert!(
            err.starts_with(&format!("write pages 1-64 to {}", tmp.display())),
            "{err}"
        );
    }
}
