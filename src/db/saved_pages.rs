//! The page checksums of the last recorded state, saved on a clean shutdown.
//!
//! After a restart the daemon usually finds the WAL in a new generation (the application
//! checkpointed while it was down), and without the old page checksums it can only write the
//! whole database again. With them it reads the database once and writes only the pages that
//! changed. The file (`<meta>/pages`) is written once, at shutdown, with the durable-write
//! helper, and used only when it matches the newest spooled file exactly: same TXID, same
//! database checksum (which the entries must XOR to), same page size, intact CRC. After a
//! crash (no clean shutdown) it is stale and ignored, and the daemon falls back to a full
//! snapshot as before.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::durable;
use crate::ltx::checksum::CRC64;
use crate::ltx::{Checksum, PageChecksums, TxId};

const MAGIC: &[u8; 8] = b"LSPAGES1";
const HEADER_SIZE: usize = 8 + 4 + 4 + 8 + 8;

/// Where the file lives.
pub fn path(meta_dir: &Path) -> PathBuf {
    meta_dir.join("pages")
}

/// Writes the table for the state after `txid` (whose database checksum is `table.checksum()`).
pub fn save(meta_dir: &Path, page_size: u32, txid: TxId, table: &PageChecksums) -> io::Result<()> {
    let count = table.page_count();
    let mut bytes = Vec::with_capacity(HEADER_SIZE + 8 * count as usize + 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&page_size.to_be_bytes());
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend_from_slice(&txid.get().to_be_bytes());
    bytes.extend_from_slice(&table.checksum().0.to_be_bytes());
    for pgno in 1..=count {
        bytes.extend_from_slice(&table.get(pgno).map_or(0, |c| c.0).to_be_bytes());
    }
    let crc = CRC64.checksum(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    durable::write_file(&path(meta_dir), |w| w.write_all(&bytes))
}

/// Reads the table if it describes exactly the state after `txid` with checksum `post`;
/// `None` for a missing, stale or damaged file.
pub fn load(meta_dir: &Path, page_size: u32, txid: TxId, post: Checksum) -> Option<PageChecksums> {
    let bytes = std::fs::read(path(meta_dir)).ok()?;
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    if CRC64.checksum(body).to_be_bytes() != crc || body.len() < HEADER_SIZE || &body[..8] != MAGIC
    {
        return None;
    }
    let u32_at = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let count = u32_at(12);
    if u32_at(8) != page_size || u64_at(16) != txid.get() || u64_at(24) != post.0 {
        return None;
    }
    if body.len() != HEADER_SIZE + 8 * count as usize {
        return None;
    }
    let mut table = PageChecksums::new(page_size);
    for pgno in 1..=count {
        let ck = u64_at(HEADER_SIZE + 8 * (pgno as usize - 1));
        if ck != 0 {
            table.set(pgno, Checksum(ck));
        }
    }
    table.truncate(count);
    (table.checksum() == post).then_some(table)
}

/// Removes the file, so a crash later cannot leave a table that looks current.
pub fn discard(meta_dir: &Path) {
    let _ = durable::remove_file(&path(meta_dir));
}

/// A table from literal pages, for tests.
#[cfg(test)]
fn table_of(page_size: u32, pages: &[(u32, u8)]) -> PageChecksums {
    use crate::ltx::page_checksum;
    let mut t = PageChecksums::new(page_size);
    for &(pgno, fill) in pages {
        t.set(pgno, page_checksum(pgno, &vec![fill; page_size as usize]));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_mismatch_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = tmp.path();
        let table = table_of(512, &[(1, 1), (2, 2), (4, 4)]);
        let post = table.checksum();
        save(meta, 512, TxId::new(7), &table).unwrap();
        let back = load(meta, 512, TxId::new(7), post).expect("valid file");
        assert_eq!(back.checksum(), post);
        assert_eq!(back.get(3), None);
        assert_eq!(back.get(4), table.get(4));
        // Another txid, checksum or page size: stale.
        assert!(load(meta, 512, TxId::new(8), post).is_none());
        assert!(load(meta, 512, TxId::new(7), Checksum(post.0 ^ 1)).is_none());
        assert!(load(meta, 1024, TxId::new(7), post).is_none());
        // A flipped byte anywhere: damaged.
        let good = std::fs::read(path(meta)).unwrap();
        for i in [0, 9, 20, 30, 40, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(path(meta), &bad).unwrap();
            assert!(load(meta, 512, TxId::new(7), post).is_none(), "byte {i}");
        }
        std::fs::write(path(meta), &good[..good.len() - 3]).unwrap();
        assert!(load(meta, 512, TxId::new(7), post).is_none());
        discard(meta);
        assert!(load(meta, 512, TxId::new(7), post).is_none());
    }
}
