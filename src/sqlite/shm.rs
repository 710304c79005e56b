//! The WAL index (`-shm`) header: how far SQLite itself considers the log committed.
//!
//! A writer appends its frames (commit frame last) to the WAL and only then publishes the new
//! end (`mxFrame`) in the shared-memory header. A writer killed in between leaves frames in the
//! file that look committed, checksums and all, but no other connection sees them and the next
//! writer overwrites them. So the daemon replicates frames only up to the published `mxFrame`,
//! exactly what SQLite readers see (https://www.sqlite.org/walformat.html, "The WAL-Index").
//!
//! The file must stay open for as long as the process has SQLite connections on the database:
//! closing any descriptor of it would drop the POSIX locks SQLite holds on it (our read marks).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::wal::wal_checksum;

const HEADER_SIZE: usize = 48;
const VERSION: u32 = 3_007_000;

/// The published state of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalIndexHeader {
    /// Number of committed frames in the current generation.
    pub max_frame: u32,
    /// Size of the database in pages after the last committed transaction.
    pub db_pages: u32,
    /// The generation's salts, as the bytes stored in the WAL header (offset 16..24).
    pub salt: [u8; 8],
    /// The running checksum after frame `max_frame`.
    pub frame_checksum: (u32, u32),
}

/// Reads the header: `Ok(None)` while it is not initialised or a writer is updating it (the
/// two copies differ or the checksum fails); callers retry on their next pass.
pub fn read_header(shm: &File) -> io::Result<Option<WalIndexHeader>> {
    let mut buf = [0u8; 2 * HEADER_SIZE];
    match shm.read_exact_at(&mut buf, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(decode(&buf))
}

/// Decodes the two copies of the header; both must agree and carry a valid checksum.
pub fn decode(buf: &[u8; 2 * HEADER_SIZE]) -> Option<WalIndexHeader> {
    let (first, second) = buf.split_at(HEADER_SIZE);
    if first != second {
        return None;
    }
    // The wal-index is in the machine's byte order.
    let word =
        |at: usize| u32::from_ne_bytes([first[at], first[at + 1], first[at + 2], first[at + 3]]);
    if word(0) != VERSION || first[12] != 1 {
        return None;
    }
    let stored = (word(40), word(44));
    if wal_checksum(cfg!(target_endian = "big"), (0, 0), &first[..40]) != stored {
        return None;
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&first[32..40]);
    Some(WalIndexHeader {
        max_frame: word(16),
        db_pages: word(20),
        salt,
        frame_checksum: (word(24), word(28)),
    })
}

/// Size of the WAL index header region: two copies of the header and the checkpoint info.
const INDEX_HEADER_SIZE: u64 = 136;
/// Frames whose page numbers the first 32 KiB block of the index lists (after the header).
const FIRST_BLOCK_FRAMES: u32 = 4096 - (INDEX_HEADER_SIZE as u32) / 4;
/// Frames each later block lists, and the size of a block.
const BLOCK_FRAMES: u32 = 4096;
const BLOCK_SIZE: u64 = 32 * 1024;

/// The page number of every frame `1..=max_frame`, from the index's `aPgno` arrays: where
/// SQLite's own readers look a page up, without the WAL's checksum chain. The daemon reads the
/// log this way only when the chain is broken below the committed end (see `db::sync`), to
/// read the database exactly as SQLite does.
pub fn frame_pages(shm: &File, max_frame: u32) -> io::Result<Vec<u32>> {
    let mut pages = Vec::with_capacity(max_frame as usize);
    let mut frame = 1u32;
    let mut block = 0u64;
    while frame <= max_frame {
        let (start, count) = if block == 0 {
            (INDEX_HEADER_SIZE, FIRST_BLOCK_FRAMES)
        } else {
            (block * BLOCK_SIZE, BLOCK_FRAMES)
        };
        let n = count.min(max_frame - frame + 1);
        let mut buf = vec![0u8; n as usize * 4];
        shm.read_exact_at(&mut buf, start)?;
        pages.extend(
            buf.chunks_exact(4)
                .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]])),
        );
        frame += n;
        block += 1;
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::wal::{FrameScanner, WalHeader};
    use rusqlite::Connection;

    #[test]
    fn header_tracks_committed_frames_and_salts() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = Connection::open(tmp.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(5000));")
            .unwrap();
        let shm = File::open(tmp.path().join("t.db-shm")).unwrap();
        let wal = File::open(tmp.path().join("t.db-wal")).unwrap();
        let h = read_header(&shm).unwrap().expect("initialised header");
        let wal_header = WalHeader::read(&wal).unwrap().unwrap();
        let mut raw = [0u8; 32];
        wal.read_exact_at(&mut raw, 0).unwrap();
        assert_eq!(h.salt, raw[16..24]);
        let mut scanner = FrameScanner::from_start(&wal, wal_header);
        let mut frames = vec![];
        while let Some(f) = scanner.next_frame().unwrap() {
            frames.push(f);
        }
        assert_eq!(h.max_frame as usize, frames.len());
        assert_eq!(h.frame_checksum, frames.last().unwrap().checksum);
        // An open transaction spills frames but does not publish them.
        conn.execute_batch("PRAGMA cache_size = 1; BEGIN;").unwrap();
        for _ in 0..30 {
            conn.execute("INSERT INTO t VALUES (randomblob(3000))", [])
                .unwrap();
        }
        assert!(wal.metadata().unwrap().len() > 32 + u64::from(h.max_frame) * 4120);
        assert_eq!(read_header(&shm).unwrap().unwrap().max_frame, h.max_frame);
        conn.execute_batch("COMMIT").unwrap();
        assert!(read_header(&shm).unwrap().unwrap().max_frame > h.max_frame);
    }

    #[test]
    fn torn_or_uninitialised_headers_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = Connection::open(tmp.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.execute_batch("CREATE TABLE t(x);").unwrap();
        let mut buf = [0u8; 96];
        File::open(tmp.path().join("t.db-shm"))
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        assert!(decode(&buf).is_some());
        let mut torn = buf;
        torn[16] ^= 1; // first copy's mxFrame differs from the second's
        assert!(decode(&torn).is_none());
        let mut both = buf;
        both[16] ^= 1;
        both[48 + 16] ^= 1; // same in both copies, but the checksum no longer matches
        assert!(decode(&both).is_none());
        assert!(decode(&[0u8; 96]).is_none());
    }

    #[test]
    fn frame_pages_match_the_frames_across_index_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = Connection::open(tmp.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("PRAGMA page_size=512; CREATE TABLE t(x);")
            .unwrap();
        // More than the first index block lists (4062 frames).
        for _ in 0..2500 {
            conn.execute("INSERT INTO t VALUES (randomblob(2000))", [])
                .unwrap();
        }
        let shm = File::open(tmp.path().join("t.db-shm")).unwrap();
        let wal = File::open(tmp.path().join("t.db-wal")).unwrap();
        let h = read_header(&shm).unwrap().unwrap();
        assert!(h.max_frame > FIRST_BLOCK_FRAMES + 10, "{}", h.max_frame);
        let mut scanner = FrameScanner::from_start(&wal, WalHeader::read(&wal).unwrap().unwrap());
        let mut from_wal = vec![];
        while let Some(f) = scanner.next_frame().unwrap() {
            from_wal.push(f.pgno);
        }
        assert_eq!(frame_pages(&shm, h.max_frame).unwrap(), from_wal);
        let pages: u32 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        assert_eq!(h.db_pages, pages);
    }
}
