//! Page, database and file checksums: CRC-64/ISO (Go's `crc64.ISO`) with bit 63 set.
//!
//! The database checksum is the XOR of every page's checksum, so it can be kept up to date
//! one page at a time: that is what lets a restore prove, without re-reading the database,
//! that it rebuilt exactly the database the writer had.

use std::fmt;
use std::str::FromStr;

use crc::{Crc, Table, CRC_64_GO_ISO};

use super::{parse_hex_u64, Error, Result};

/// Bit 63, ORed into every stored checksum so that a real checksum is never zero (zero means
/// "not tracked" in LTX).
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// SQLite's PENDING_BYTE: the page holding it (the lock page) is never stored or checksummed.
const PENDING_BYTE: u32 = 0x4000_0000;

/// CRC-64/ISO with a 16-way sliced table: pages are hashed twice (page and file checksum),
/// so the faster table pays for its 32 KiB.
pub(crate) static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_GO_ISO);

/// A 64-bit LTX checksum (page, database or file).
///
/// A newtype so that it never mixes with a txid; prints as 16 lowercase hex digits, as
/// Litestream and our events show it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checksum(pub u64);

impl Checksum {
    /// The checksum of an empty database (no pages): just the flag.
    pub const EMPTY: Checksum = Checksum(CHECKSUM_FLAG);

    /// True if this is a stored-checksum value: bit 63 set (zero means "not tracked").
    pub fn is_flagged(self) -> bool {
        self.0 & CHECKSUM_FLAG != 0
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::LowerHex for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Checksum {
    type Err = Error;

    /// Parses hex digits as printed by `Display` (leading zeros optional).
    fn from_str(s: &str) -> Result<Self> {
        parse_hex_u64(s)
            .map(Checksum)
            .ok_or_else(|| Error::InvalidChecksum {
                input: s.to_owned(),
            })
    }
}

/// The checksum of one page: FLAG | crc64(pgno as u32 big-endian ++ page bytes).
///
/// Including the page number means a page written at the wrong place changes the database
/// checksum.
pub fn page_checksum(pgno: u32, page: &[u8]) -> Checksum {
    let mut digest = CRC64.digest();
    digest.update(&pgno.to_be_bytes());
    digest.update(page);
    Checksum(CHECKSUM_FLAG | digest.finalize())
}

/// The page number of SQLite's lock page for `page_size`: `0x40000000 / page_size + 1`.
///
/// It holds the PENDING_BYTE and no data, so LTX never stores it and the database checksum
/// leaves it out. A `page_size` of 0 (never valid) gives `u32::MAX` rather than dividing by 0.
pub fn lock_pgno(page_size: u32) -> u32 {
    match PENDING_BYTE.checked_div(page_size) {
        Some(n) => n + 1,
        None => u32::MAX,
    }
}

/// The database checksum, kept up to date one page at a time.
///
/// Holds 8 bytes per page (each page's checksum, so that overwriting a page can XOR its old
/// checksum out) plus the running XOR. Restore and the sync loop both apply pages in order,
/// and this gives the database checksum after each file without re-reading the database.
#[derive(Clone, Debug)]
pub struct PageChecksums {
    /// Page checksums indexed by pgno - 1; 0 means "page absent" (real ones have the flag).
    pages: Vec<u64>,
    /// XOR of every entry in `pages`, without the flag.
    xor: u64,
    /// The lock page for this page size, which is never counted.
    lock_pgno: u32,
}

impl PageChecksums {
    /// An empty database of the given page size (the page size decides the lock page).
    pub fn new(page_size: u32) -> Self {
        PageChecksums {
            pages: Vec::new(),
            xor: 0,
            lock_pgno: lock_pgno(page_size),
        }
    }

    /// Records page `pgno`'s checksum, replacing any earlier one: XOR out the old, XOR in the
    /// new. Grows the table to `pgno`. The lock page and page 0 (neither ever holds data) are
    /// ignored.
    pub fn set(&mut self, pgno: u32, ck: Checksum) {
        if pgno == 0 || pgno == self.lock_pgno {
            return;
        }
        let i = (pgno - 1) as usize;
        if i >= self.pages.len() {
            self.pages.resize(i + 1, 0);
        }
        self.xor ^= self.pages[i] ^ ck.0;
        self.pages[i] = ck.0;
    }

    /// The checksum recorded for `pgno`, if that page is present.
    pub fn get(&self, pgno: u32) -> Option<Checksum> {
        let i = (pgno as usize).checked_sub(1)?;
        match self.pages.get(i) {
            Some(&ck) if ck != 0 => Some(Checksum(ck)),
            _ => None,
        }
    }

    /// Shrinks the database to `commit` pages: XORs out and drops every page past it, as when
    /// a transaction (or VACUUM) truncates the database.
    pub fn truncate(&mut self, commit: u32) {
        let keep = commit as usize;
        if keep >= self.pages.len() {
            return;
        }
        for &ck in &self.pages[keep..] {
            self.xor ^= ck;
        }
        self.pages.truncate(keep);
    }

    /// The highest page number held (the table's length): the database size in pages when
    /// every page 1..=n has been set, as after applying a snapshot.
    pub fn page_count(&self) -> u32 {
        // The table only grows through `set(pgno)`, so its length fits in a u32.
        self.pages.len() as u32
    }

    /// The database checksum: FLAG | XOR of all page checksums (an empty database gives
    /// `0x8000000000000000`).
    pub fn checksum(&self) -> Checksum {
        Checksum(CHECKSUM_FLAG | self.xor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Database checksum of `pages` (page i is pgno i + 1), computed through PageChecksums.
    fn db_checksum(page_size: u32, pages: &[Vec<u8>]) -> Checksum {
        let mut cks = PageChecksums::new(page_size);
        for (i, page) in pages.iter().enumerate() {
            let pgno = i as u32 + 1;
            cks.set(pgno, page_checksum(pgno, page));
        }
        cks.checksum()
    }

    #[test]
    fn crc64_iso_check_value() {
        assert_eq!(CRC64.checksum(b"123456789"), 0xb90956c775a41001);
        // The slicing table must agree with the plain CRC-64/ISO definition.
        let plain = Crc::<u64>::new(&CRC_64_GO_ISO);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        assert_eq!(CRC64.checksum(&data), plain.checksum(&data));
    }

    #[test]
    fn page_checksum_vector() {
        assert_eq!(page_checksum(1, &[1u8; 512]), Checksum(0xe4e4aaa102377eee));
    }

    #[test]
    fn database_checksum_vectors() {
        let fill = |b: u8, n: usize| vec![b; n];
        assert_eq!(
            db_checksum(512, &[fill(1, 512), fill(2, 512), fill(3, 512)]),
            Checksum(0xefffffffecd99000)
        );
        assert_eq!(
            db_checksum(1024, &[fill(b'2', 1024), fill(b'3', 1024)]),
            Checksum(0xe1899b6d587aaaaa)
        );
        assert_eq!(
            db_checksum(512, &[fill(b'2', 512), fill(b'3', 512)]),
            Checksum(0x8b87423eeeeeeeee)
        );
        assert_eq!(
            db_checksum(512, &[fill(b'1', 512)]),
            Checksum(0xeb1a999231044ddd)
        );
        assert_eq!(
            PageChecksums::new(4096).checksum(),
            Checksum(0x8000000000000000)
        );
    }

    /// 262155 pages of 4096 bytes: crosses the lock page (262145), which must not count.
    /// Setting it anyway checks that `set` ignores it. About 1 GiB of CRC: ~2 s unoptimized.
    #[test]
    fn database_checksum_vector_past_the_lock_page() {
        let page = vec![b'x'; 4096];
        assert_eq!(lock_pgno(4096), 262145);
        let mut cks = PageChecksums::new(4096);
        for pgno in 1..=262155u32 {
            cks.set(pgno, page_checksum(pgno, &page));
        }
        assert_eq!(cks.get(262145), None);
        assert_eq!(cks.page_count(), 262155);
        assert_eq!(cks.checksum(), Checksum(0xc19b668c376662c7));
    }

    #[test]
    fn lock_page_numbers() {
        assert_eq!(lock_pgno(512), 2097153);
        assert_eq!(lock_pgno(4096), 262145);
        assert_eq!(lock_pgno(65536), 16385);
        assert_eq!(lock_pgno(0), u32::MAX);
    }

    #[test]
    fn incremental_updates_match_a_full_recompute() {
        let page = |pgno: u32, gen: u8| vec![gen.wrapping_mul(31) ^ pgno as u8; 512];
        let mut cks = PageChecksums::new(512);
        for pgno in 1..=5 {
            cks.set(pgno, page_checksum(pgno, &page(pgno, 0)));
        }
        // Overwrite pages 2 and 5, then shrink to 3 pages and grow to 4 again.
        cks.set(2, page_checksum(2, &page(2, 1)));
        cks.set(5, page_checksum(5, &page(5, 1)));
        cks.truncate(3);
        assert_eq!(cks.page_count(), 3);
        assert_eq!(cks.get(4), None);
        cks.set(4, page_checksum(4, &page(4, 2)));
        let expected = db_checksum(512, &[page(1, 0), page(2, 1), page(3, 0), page(4, 2)]);
        assert_eq!(cks.checksum(), expected);
        assert_eq!(cks.get(2), Some(page_checksum(2, &page(2, 1))));
        assert_eq!(cks.get(0), None);
        cks.truncate(0);
        assert_eq!(cks.checksum(), Checksum::EMPTY);
        assert_eq!(cks.page_count(), 0);
    }

    #[test]
    fn checksum_text_form() {
        assert_eq!(Checksum(0xdda6d5f12099881c).to_string(), "dda6d5f12099881c");
        assert_eq!(Checksum(1).to_string(), "0000000000000001");
        assert_eq!(
            "dda6d5f12099881c".parse::<Checksum>().unwrap(),
            Checksum(0xdda6d5f12099881c)
        );
        assert!("xyz".parse::<Checksum>().is_err());
    }
}
