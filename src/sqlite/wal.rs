//! Reading SQLite's write-ahead log directly: the header, frames, salts and the cumulative
//! frame checksum that tells the frames of the current generation from stale ones.
//!
//! Layout (https://www.sqlite.org/fileformat2.html#walformat): a 32-byte header, then frames
//! of a 24-byte header and one page each. A frame belongs to the current generation when its
//! salts equal the header's and its checksum continues the chain that starts at the header
//! checksum; the first frame that fails either test ends the log, whatever follows it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Size of the WAL header.
pub const WAL_HEADER_SIZE: u64 = 32;
/// Size of a frame header.
pub const FRAME_HEADER_SIZE: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const SUPPORTED_VERSION: u32 = 3_007_000;

/// The running checksum of the WAL: two 32-bit sums, chained through every frame.
pub type WalChecksum = (u32, u32);

/// The WAL header of the current generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    /// Whether the checksums sum big-endian words (magic 0x377f0683).
    pub big_endian_checksum: bool,
    pub page_size: u32,
    /// Checkpoint sequence number. Not a reliable generation counter: a connection that did not
    /// restart the log itself may write 0 here with fresh random salts.
    pub checkpoint_seq: u32,
    /// Salt 1 and 2 change on every restart of the log: together they name a generation.
    pub salt1: u32,
    pub salt2: u32,
    /// The header checksum, which seeds the frame checksum chain.
    pub checksum: WalChecksum,
}

impl WalHeader {
    /// Reads and validates the header; `Ok(None)` when the file is shorter than a header or
    /// the header is not a valid one (an empty or freshly truncated WAL has no generation).
    pub fn read(file: &File) -> io::Result<Option<WalHeader>> {
        let mut buf = [0u8; WAL_HEADER_SIZE as usize];
        match file.read_exact_at(&mut buf, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Self::decode(&buf))
    }

    /// Decodes a header from its 32 bytes; `None` when the magic, version, page size or
    /// checksum is wrong.
    pub fn decode(buf: &[u8; WAL_HEADER_SIZE as usize]) -> Option<WalHeader> {
        let magic = be32(buf, 0);
        let big_endian_checksum = match magic {
            MAGIC_LE => false,
            MAGIC_BE => true,
            _ => return None,
        };
        if be32(buf, 4) != SUPPORTED_VERSION {
            return None;
        }
        let page_size = be32(buf, 8);
        let page_size = if page_size == 1 { 65536 } else { page_size };
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return None;
        }
        let checksum = (be32(buf, 24), be32(buf, 28));
        if wal_checksum(big_endian_checksum, (0, 0), &buf[..24]) != checksum {
            return None;
        }
        Some(WalHeader {
            big_endian_checksum,
            page_size,
            checkpoint_seq: be32(buf, 12),
            salt1: be32(buf, 16),
            salt2: be32(buf, 20),
            checksum,
        })
    }

    /// The salts as stored on disk (header bytes 16..24), as the WAL index copies them.
    pub fn salt_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.salt1.to_be_bytes());
        b[4..].copy_from_slice(&self.salt2.to_be_bytes());
        b
    }

    /// Offset just past frame number `frames` (a count from the start of the log).
    pub fn frame_end(&self, frames: u32) -> u64 {
        WAL_HEADER_SIZE + u64::from(frames) * self.frame_size()
    }

    /// Size of one frame (header and page) in this log.
    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE + u64::from(self.page_size)
    }
}

/// One valid frame as the scanner found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub pgno: u32,
    /// Database size in pages after the transaction, for a commit frame; 0 otherwise.
    pub commit: u32,
    /// Offset of the frame header in the WAL file.
    pub offset: u64,
    /// The chain checksum before this frame, so the frame can be re-read and re-verified.
    pub prev_checksum: WalChecksum,
    /// The chain checksum after this frame (stored in its header).
    pub checksum: WalChecksum,
}

/// Iterates the valid frames of one generation from a known position in the chain.
///
/// It reads through a buffer in large sequential reads; a frame that fails the salt or
/// checksum test, a zero page number, or a short read ends the iteration (`Ok(None)`).
pub struct FrameScanner<'a> {
    header: WalHeader,
    /// Offset past which no frame is read (the committed end SQLite published).
    limit: u64,
    reader: io::BufReader<OffsetReader<'a>>,
    offset: u64,
    checksum: WalChecksum,
    page: Vec<u8>,
    done: bool,
}

impl<'a> FrameScanner<'a> {
    /// Starts at `offset` (a frame boundary) with the chain checksum `checksum` of the frame
    /// before it (the header checksum for offset 32).
    pub fn new(file: &'a File, header: WalHeader, offset: u64, checksum: WalChecksum) -> Self {
        FrameScanner {
            header,
            limit: u64::MAX,
            // 64 KiB: large enough for sequential reads, small enough that the buffer's first
            // fill (which zeroes it) costs little; a scanner is made a couple of times a pass.
            reader: io::BufReader::with_capacity(64 * 1024, OffsetReader { file, offset }),
            offset,
            checksum,
            page: vec![0; header.page_size as usize],
            done: false,
        }
    }

    /// Starts at the first frame of the generation.
    pub fn from_start(file: &'a File, header: WalHeader) -> Self {
        Self::new(file, header, WAL_HEADER_SIZE, header.checksum)
    }

    /// Stops the scan at `limit` (an offset): frames at or past it are not read.
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// The page data of the frame last returned by [`FrameScanner::next_frame`].
    pub fn page(&self) -> &[u8] {
        &self.page
    }

    /// The next valid frame, or `None` at the end of the generation.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        // Checked: an offset within a frame of u64::MAX (no real WAL is that long) has no
        // frame past it, rather than wrapping around to a small offset.
        let end = self.offset.checked_add(self.header.frame_size());
        if self.done || end.is_none_or(|end| end > self.limit) {
            return Ok(None);
        }
        let mut fh = [0u8; FRAME_HEADER_SIZE as usize];
        if !read_full(&mut self.reader, &mut fh)? || !read_full(&mut self.reader, &mut self.page)? {
            self.done = true;
            return Ok(None);
        }
        match verify_frame(&self.header, self.checksum, &fh, &self.page) {
            Some((pgno, commit, checksum)) => {
                let frame = Frame {
                    pgno,
                    commit,
                    offset: self.offset,
                    prev_checksum: self.checksum,
                    checksum,
                };
                self.offset += self.header.frame_size();
                self.checksum = checksum;
                Ok(Some(frame))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// Where the last committed transaction of a scan ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitEnd {
    /// Offset just past the commit frame: where the next read starts.
    pub offset: u64,
    /// The chain checksum after the commit frame.
    pub checksum: WalChecksum,
    /// Database size in pages after the commit.
    pub commit: u32,
}

/// The committed frames of a generation from a position on.
#[derive(Debug, Default)]
pub struct Committed {
    /// The newest committed frame of each page.
    pub pages: BTreeMap<u32, Frame>,
    /// `None` when no transaction committed after the start position.
    pub end: Option<CommitEnd>,
}

/// Reads the valid frames from `offset` (with the chain checksum `seed` of the frame before)
/// up to `limit` and keeps those of committed transactions: frames after the last commit frame
/// belong to a transaction still being written (or rolled back) and are left for a later read.
pub fn scan_committed(
    file: &File,
    header: WalHeader,
    offset: u64,
    seed: WalChecksum,
    limit: u64,
) -> io::Result<Committed> {
    let mut scanner = FrameScanner::new(file, header, offset, seed).with_limit(limit);
    let mut txn: Vec<Frame> = vec![];
    let mut out = Committed::default();
    while let Some(f) = scanner.next_frame()? {
        txn.push(f);
        if f.commit > 0 {
            for t in txn.drain(..) {
                out.pages.insert(t.pgno, t);
            }
            out.end = Some(CommitEnd {
                offset: f.offset + header.frame_size(),
                checksum: f.checksum,
                commit: f.commit,
            });
        }
    }
    Ok(out)
}

/// Re-reads the page of a frame found earlier and proves it is still the same bytes (salts,
/// page number and chain checksum), so a restart that overwrote the log is caught instead of
/// copying a page of another generation.
pub fn read_frame_page(
    file: &File,
    header: &WalHeader,
    frame: &Frame,
    page: &mut [u8],
) -> io::Result<bool> {
    let mut fh = [0u8; FRAME_HEADER_SIZE as usize];
    file.read_exact_at(&mut fh, frame.offset)?;
    file.read_exact_at(page, frame.offset + FRAME_HEADER_SIZE)?;
    Ok(verify_frame(header, frame.prev_checksum, &fh, page)
        == Some((frame.pgno, frame.commit, frame.checksum)))
}

/// Checks one frame against the generation's salts and the chain; returns its page number,
/// commit size and checksum when valid.
fn verify_frame(
    header: &WalHeader,
    prev: WalChecksum,
    fh: &[u8; FRAME_HEADER_SIZE as usize],
    page: &[u8],
) -> Option<(u32, u32, WalChecksum)> {
    let pgno = be32(fh, 0);
    let commit = be32(fh, 4);
    if pgno == 0 || be32(fh, 8) != header.salt1 || be32(fh, 12) != header.salt2 {
        return None;
    }
    let sum = wal_checksum(header.big_endian_checksum, prev, &fh[..8]);
    let sum = wal_checksum(header.big_endian_checksum, sum, page);
    (sum == (be32(fh, 16), be32(fh, 20))).then_some((pgno, commit, sum))
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes) continuing from `seed`.
pub fn wal_checksum(big_endian: bool, seed: WalChecksum, data: &[u8]) -> WalChecksum {
    debug_assert!(data.len() % 8 == 0);
    // The byte order is chosen once, outside the loop: this runs over every byte of the WAL,
    // and the size-optimised build would otherwise test it for every word.
    if big_endian {
        checksum_words(seed, data, u32::from_be_bytes)
    } else {
        checksum_words(seed, data, u32::from_le_bytes)
    }
}

#[inline(always)]
fn checksum_words(seed: WalChecksum, data: &[u8], word: impl Fn([u8; 4]) -> u32) -> WalChecksum {
    let (mut s1, mut s2) = seed;
    for chunk in data.chunks_exact(8) {
        s1 = s1
            .wrapping_add(word([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .wrapping_add(s2);
        s2 = s2
            .wrapping_add(word([chunk[4], chunk[5], chunk[6], chunk[7]]))
            .wrapping_add(s1);
    }
    (s1, s2)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Fills `buf` completely; `Ok(false)` at end of file before it is full.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A `Read` over a shared `File` at an explicit offset (pread), so scanning never moves a
/// file cursor other code relies on.
struct OffsetReader<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for OffsetReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        // pread fails (EINVAL) past i64::MAX, so this never wraps.
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A real SQLite WAL: a writer with autocheckpoint off, so frames stay in the log.
    fn wal_db(dir: &std::path::Path) -> Connection {
        let conn = Connection::open(dir.join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
            .unwrap();
        conn
    }

    fn scan_all(file: &File) -> (WalHeader, Vec<Frame>) {
        let header = WalHeader::read(file).unwrap().expect("valid header");
        let mut scanner = FrameScanner::from_start(file, header);
        let mut frames = vec![];
        while let Some(f) = scanner.next_frame().unwrap() {
            frames.push(f);
        }
        (header, frames)
    }

    #[test]
    fn parses_real_wal_frames_and_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = wal_db(tmp.path());
        for i in 0..10 {
            conn.execute("INSERT INTO t(v) VALUES (randomblob(100))", [])
                .unwrap();
            let _ = i;
        }
        let file = File::open(tmp.path().join("t.db-wal")).unwrap();
        let (header, frames) = scan_all(&file);
        assert_eq!(header.page_size, 4096);
        let size = file.metadata().unwrap().len();
        assert_eq!(
            WAL_HEADER_SIZE + frames.len() as u64 * header.frame_size(),
            size
        );
        // CREATE TABLE plus 10 inserts: 11 commits, the last one commits the whole db.
        let commits: Vec<_> = frames.iter().filter(|f| f.commit > 0).collect();
        assert_eq!(commits.len(), 11);
        let page_count: u32 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        assert_eq!(commits.last().unwrap().commit, page_count);
        // Chain: each frame starts where the previous one ended.
        for pair in frames.windows(2) {
            assert_eq!(pair[1].prev_checksum, pair[0].checksum);
            assert_eq!(pair[1].offset, pair[0].offset + header.frame_size());
        }
        // Re-reading verifies; the page matches what the scanner saw.
        let mut page = vec![0; 4096];
        assert!(read_frame_page(&file, &header, &frames[3], &mut page).unwrap());
    }

    #[test]
    fn restart_changes_salts_and_stale_frames_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = wal_db(tmp.path());
        for _ in 0..20 {
            conn.execute("INSERT INTO t(v) VALUES (randomblob(3000))", [])
                .unwrap();
        }
        let wal_path = tmp.path().join("t.db-wal");
        let file = File::open(&wal_path).unwrap();
        let (old_header, old_frames) = scan_all(&file);
        assert!(old_frames.len() > 20);
        // Full checkpoint, then one write restarts the log at offset 32 with new salts.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        conn.execute("INSERT INTO t(v) VALUES (randomblob(10))", [])
            .unwrap();
        let (new_header, new_frames) = scan_all(&file);
        assert_ne!(
            (old_header.salt1, old_header.salt2),
            (new_header.salt1, new_header.salt2)
        );
        assert!(!new_frames.is_empty() && new_frames.len() < old_frames.len());
        // The file did not shrink: old frames are still there, but they fail the new salts.
        assert!(
            file.metadata().unwrap().len()
                > WAL_HEADER_SIZE + new_frames.len() as u64 * new_header.frame_size()
        );
        // And the old frame at a position past the new generation no longer verifies against
        // the new header, while it still does against the old one.
        let stale = old_frames.last().unwrap();
        let mut page = vec![0; 4096];
        assert!(!read_frame_page(&file, &new_header, stale, &mut page).unwrap());
        assert!(read_frame_page(&file, &old_header, stale, &mut page).unwrap());
        // Overwritten frames at the start fail re-verification against the old generation.
        assert!(!read_frame_page(&file, &old_header, &old_frames[0], &mut page).unwrap());
    }

    #[test]
    fn corrupt_frame_ends_the_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let tmp2 = tempfile::tempdir().unwrap();
        let conn = wal_db(tmp2.path());
        for _ in 0..5 {
            conn.execute("INSERT INTO t(v) VALUES (randomblob(100))", [])
                .unwrap();
        }
        let mut bytes = std::fs::read(tmp2.path().join("t.db-wal")).unwrap();
        let header = WalHeader::decode(bytes[..32].try_into().unwrap()).unwrap();
        let fs = header.frame_size() as usize;
        // Flip a byte in the page of frame 3: frames 0..3 stay valid, the rest are cut off.
        bytes[32 + 3 * fs + 24 + 100] ^= 0xff;
        let copy = tmp.path().join("copy-wal");
        std::fs::write(&copy, &bytes).unwrap();
        let (_, frames) = scan_all(&File::open(&copy).unwrap());
        assert_eq!(frames.len(), 3);
        // A bad header checksum means no generation at all.
        bytes[20] ^= 1;
        std::fs::write(&copy, &bytes).unwrap();
        assert_eq!(WalHeader::read(&File::open(&copy).unwrap()).unwrap(), None);
        // A short file has no header.
        std::fs::write(&copy, &bytes[..10]).unwrap();
        assert_eq!(WalHeader::read(&File::open(&copy).unwrap()).unwrap(), None);
    }

    #[test]
    fn scan_committed_ignores_an_open_transaction() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = wal_db(tmp.path());
        conn.execute("INSERT INTO t(v) VALUES (randomblob(100))", [])
            .unwrap();
        let file = File::open(tmp.path().join("t.db-wal")).unwrap();
        let header = WalHeader::read(&file).unwrap().unwrap();
        let done =
            scan_committed(&file, header, WAL_HEADER_SIZE, header.checksum, u64::MAX).unwrap();
        let end = done.end.unwrap();
        assert_eq!(end.offset, file.metadata().unwrap().len());
        // A big transaction spills frames into the log before it commits: they are not taken.
        conn.execute_batch("PRAGMA cache_size = 1; BEGIN;").unwrap();
        for _ in 0..50 {
            conn.execute("INSERT INTO t(v) VALUES (randomblob(3000))", [])
                .unwrap();
        }
        assert!(
            file.metadata().unwrap().len() > end.offset,
            "the open transaction spilled frames"
        );
        let again =
            scan_committed(&file, header, WAL_HEADER_SIZE, header.checksum, u64::MAX).unwrap();
        assert_eq!(again.end, Some(end));
        assert_eq!(again.pages, done.pages);
        // From the last position: nothing committed yet.
        let tail = scan_committed(&file, header, end.offset, end.checksum, u64::MAX).unwrap();
        assert!(tail.end.is_none() && tail.pages.is_empty());
        conn.execute_batch("COMMIT").unwrap();
        let tail = scan_committed(&file, header, end.offset, end.checksum, u64::MAX).unwrap();
        assert!(tail.pages.len() > 50, "{}", tail.pages.len());
    }

    #[test]
    fn checksum_matches_sqlite_definition_for_both_byte_orders() {
        // Words 1,2 then 3,4: s1 = 1 + 0, s2 = 2 + 1; s1 = 3 + 3 + 1... computed by hand.
        let data = [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
        let (s1, s2) = wal_checksum(true, (0, 0), &data);
        // First pair: s1 = 1, s2 = 2 + 1 = 3. Second: s1 = 1 + 3 + 3 = 7, s2 = 3 + 4 + 7 = 14.
        assert_eq!((s1, s2), (7, 14));
        let le: Vec<u8> = data
            .chunks(4)
            .flat_map(|c| [c[3], c[2], c[1], c[0]])
            .collect();
        assert_eq!(wal_checksum(false, (0, 0), &le), (7, 14));
    }
}
