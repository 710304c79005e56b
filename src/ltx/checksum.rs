//! Page, database and file checksums: CRC-64/ISO (Go's `crc64.ISO`) with bit 63 set.
//!
//! The database checksum is the XOR of every page's checksum, so it can be kept up to date
//! one page at a time: that is what lets a restore prove, without re-reading the database,
//! that it rebuilt exactly the database the writer had.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crc::{Crc, Table, CRC_64_GO_ISO};
use crc_fast::CrcAlgorithm;

use super::{parse_hex_u64, Error, Result};

/// Bit 63, ORed into every stored checksum so that a real checksum is never zero (zero means
/// "not tracked" in LTX).
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// SQLite's PENDING_BYTE: the page holding it (the lock page) is never stored or checksummed.
const PENDING_BYTE: u32 = 0x4000_0000;

/// CRC-64/ISO with a 16-way sliced table: pages are hashed twice (page and file checksum),
/// so the faster table pays for its 32 KiB.
pub(crate) static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_GO_ISO);

/// The raw CRC-64/ISO register before any byte (the algorithm's init, in register order).
pub(crate) const CRC64_INIT: u64 = CRC_64_GO_ISO.init.reverse_bits();

/// What CRC-64/ISO XORs into the final register to give the checksum.
const CRC64_XOROUT: u64 = CRC_64_GO_ISO.xorout;

/// Continues a CRC-64/ISO computation: the raw register after `bytes`, starting from the raw
/// register `reg` ([`CRC64_INIT`] for a new computation, 0 for a piece to join later with
/// [`ZeroShift`]); the checksum of the whole is `reg ^ 0xffff_ffff_ffff_ffff`.
///
/// Raw registers, unlike `crc::Digest`, can be taken apart and joined, which is what lets the
/// decoder hash each page once for both the file checksum and the page checksum.
///
/// The bytes go through `crc-fast`, which picks a carry-less multiply at run time (PCLMULQDQ
/// or VPCLMULQDQ on x86_64, PMULL on aarch64) and falls back to a sliced table on CPUs without
/// one: restore hashes every page of the database, and with tables alone that hashing was the
/// slower half of it. For a reflected CRC-64 its digest state is this same raw register.
pub(crate) fn crc64_update(reg: u64, bytes: &[u8]) -> u64 {
    let mut digest = crc_fast::Digest::new_with_init_state(CrcAlgorithm::Crc64GoIso, reg);
    digest.update(bytes);
    digest.get_state()
}

/// The final CRC-64/ISO value of a raw register (see [`crc64_update`]).
pub(crate) fn crc64_finish(reg: u64) -> u64 {
    reg ^ CRC64_XOROUT
}

/// Advances a raw CRC-64/ISO register over a run of zero bytes of one length (a page), in 8
/// table lookups instead of hashing the run.
///
/// CRC is linear: the register after `a ++ b` is the register after `a`, advanced over
/// `len(b)` zero bytes, XOR the register of `b` hashed from 0. So a page hashed once from 0
/// joins both the file checksum (after its frame header) and its page checksum (after its
/// page number): restore hashes each page once instead of two or three times, which was most
/// of its CPU time. One table per page size, built on first use (16 KiB each, at most 8).
pub(crate) struct ZeroShift {
    /// `tables[j][v]`: the advanced register for a register holding byte `v` at byte `j`.
    tables: [[u64; 256]; 8],
}

impl ZeroShift {
    /// The shift over one page of `page_size` bytes; `None` unless the page size is a power of
    /// two from 512 to 65536 (the only valid ones, which a validated header guarantees).
    pub(crate) fn for_page_size(page_size: u32) -> Option<&'static ZeroShift> {
        static TABLES: [OnceLock<ZeroShift>; 8] = [const { OnceLock::new() }; 8];
        if !page_size.is_power_of_two() {
            return None;
        }
        let slot = (page_size.trailing_zeros() as usize).checked_sub(9)?;
        let cell = TABLES.get(slot)?;
        Some(cell.get_or_init(|| ZeroShift::new(page_size as usize)))
    }

    /// Builds the shift over `len` zero bytes: the map over one zero byte, raised to the power
    /// `len` by squaring (as 64x64 bit matrices), then spread into byte tables.
    fn new(len: usize) -> ZeroShift {
        let one: [u64; 64] = std::array::from_fn(|bit| crc64_update(1 << bit, &[0]));
        let mut power: [u64; 64] = std::array::from_fn(|bit| 1 << bit);
        let mut base = one;
        let mut n = len;
        while n > 0 {
            if n & 1 == 1 {
                power = compose(&base, &power);
            }
            base = compose(&base, &base);
            n >>= 1;
        }
        let mut tables = [[0u64; 256]; 8];
        for (j, table) in tables.iter_mut().enumerate() {
            for v in 1..256usize {
                let low = v.trailing_zeros() as usize;
                table[v] = table[v & (v - 1)] ^ power[8 * j + low];
            }
        }
        ZeroShift { tables }
    }

    /// The register `reg` advanced over the zero bytes.
    pub(crate) fn apply(&self, reg: u64) -> u64 {
        let b = reg.to_le_bytes();
        let mut out = 0;
        for (table, byte) in self.tables.iter().zip(b) {
            out ^= table[byte as usize];
        }
        out
    }

    /// The page checksum of page `pgno` whose bytes hash to `page_reg` from register 0 (the
    /// same value as [`page_checksum`], without hashing the page again).
    pub(crate) fn page_checksum(&self, pgno: u32, page_reg: u64) -> Checksum {
        let head = crc64_update(CRC64_INIT, &pgno.to_be_bytes());
        Checksum(CHECKSUM_FLAG | crc64_finish(self.apply(head) ^ page_reg))
    }
}

/// A linear map on 64-bit registers (the image of each bit) applied to `v`.
fn apply_matrix(m: &[u64; 64], mut v: u64) -> u64 {
    let mut out = 0;
    while v != 0 {
        out ^= m[v.trailing_zeros() as usize];
        v &= v - 1;
    }
    out
}

/// `a` after `b`, as linear maps.
fn compose(a: &[u64; 64], b: &[u64; 64]) -> [u64; 64] {
    std::array::from_fn(|bit| apply_matrix(a, b[bit]))
}

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
    let head = crc64_update(CRC64_INIT, &pgno.to_be_bytes());
    Checksum(CHECKSUM_FLAG | crc64_finish(crc64_update(head, page)))
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

/// Page checksums per chunk of [`PageChecksums`]: 8 KiB chunks, so a database of n pages
/// costs about 8n bytes while one far page number costs one chunk, not 8 bytes per number
/// below it.
const CHUNK_PAGES: u32 = 1024;

/// The database checksum, kept up to date one page at a time.
///
/// Holds 8 bytes per page (each page's checksum, so that overwriting a page can XOR its old
/// checksum out) plus the running XOR. Restore and the sync loop both apply pages in order,
/// and this gives the database checksum after each file without re-reading the database.
///
/// The checksums live in chunks of [`CHUNK_PAGES`] created as pages arrive, so memory follows
/// the pages present: restore fills this table from a replica file before that file's own
/// checksum has been verified, and one page numbered near `u32::MAX` (a valid number in a
/// header that claims such a database) must not make it allocate 32 GiB.
#[derive(Clone, Debug)]
pub struct PageChecksums {
    /// Page checksums by chunk (pgno - 1) / CHUNK_PAGES; 0 means "page absent" (real ones
    /// have the flag).
    chunks: BTreeMap<u32, Box<[u64; CHUNK_PAGES as usize]>>,
    /// One past the highest page number the table covers (see [`PageChecksums::page_count`]).
    len: u32,
    /// XOR of every entry in `chunks`, without the flag.
    xor: u64,
    /// The lock page for this page size, which is never counted.
    lock_pgno: u32,
}

impl PageChecksums {
    /// An empty database of the given page size (the page size decides the lock page).
    pub fn new(page_size: u32) -> Self {
        PageChecksums {
            chunks: BTreeMap::new(),
            len: 0,
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
        let i = pgno - 1;
        let chunk = self
            .chunks
            .entry(i / CHUNK_PAGES)
            .or_insert_with(|| Box::new([0; CHUNK_PAGES as usize]));
        let slot = &mut chunk[(i % CHUNK_PAGES) as usize];
        self.xor ^= *slot ^ ck.0;
        *slot = ck.0;
        self.len = self.len.max(pgno);
    }

    /// The checksum recorded for `pgno`, if that page is present.
    pub fn get(&self, pgno: u32) -> Option<Checksum> {
        let i = pgno.checked_sub(1)?;
        match self.chunks.get(&(i / CHUNK_PAGES))?[(i % CHUNK_PAGES) as usize] {
            0 => None,
            ck => Some(Checksum(ck)),
        }
    }

    /// Shrinks the database to `commit` pages: XORs out and drops every page past it, as when
    /// a transaction (or VACUUM) truncates the database.
    pub fn truncate(&mut self, commit: u32) {
        if commit >= self.len {
            return;
        }
        // Whole chunks past the new end go; the chunk holding the new end is cut inside.
        let first_dropped = commit.div_ceil(CHUNK_PAGES);
        for (_, chunk) in self.chunks.split_off(&first_dropped) {
            self.xor ^= chunk.iter().fold(0, |x, ck| x ^ ck);
        }
        if commit % CHUNK_PAGES != 0 {
            if let Some(chunk) = self.chunks.get_mut(&(commit / CHUNK_PAGES)) {
                for ck in &mut chunk[(commit % CHUNK_PAGES) as usize..] {
                    self.xor ^= *ck;
                    *ck = 0;
                }
            }
        }
        self.len = commit;
    }

    /// The highest page number held: the database size in pages when every page 1..=n has
    /// been set, as after applying a snapshot.
    pub fn page_count(&self) -> u32 {
        self.len
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
    fn raw_registers_continue_and_join() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        assert_eq!(
            crc64_finish(crc64_update(CRC64_INIT, b"123456789")),
            0xb90956c775a41001
        );
        let (a, b) = data.split_at(1234);
        let whole = crc64_update(CRC64_INIT, &data);
        assert_eq!(crc64_update(crc64_update(CRC64_INIT, a), b), whole);
        for page_size in (9..=16).map(|s| 1u32 << s) {
            let page = &data[..page_size as usize];
            let shift = ZeroShift::for_page_size(page_size).unwrap();
            let head = crc64_update(CRC64_INIT, b"frame head");
            assert_eq!(
                shift.apply(head) ^ crc64_update(0, page),
                crc64_update(head, page),
                "{page_size}"
            );
            for pgno in [1, 2, 0x1234_5678, u32::MAX] {
                assert_eq!(
                    shift.page_checksum(pgno, crc64_update(0, page)),
                    page_checksum(pgno, page),
                    "{page_size} {pgno}"
                );
            }
        }
        for bad in [0, 256, 1000, 1 << 17] {
            assert!(ZeroShift::for_page_size(bad).is_none(), "{bad}");
        }
        assert_eq!(
            ZeroShift::for_page_size(512)
                .unwrap()
                .page_checksum(1, crc64_update(0, &[1u8; 512])),
            Checksum(0xe4e4aaa102377eee)
        );
    }

    /// The `crc` crate's sliced table run on a raw register: the reference that
    /// [`crc64_update`] must match bit for bit. `digest_with_initial` bit-reverses its argument
    /// for a reflected CRC, and `finalize` only XORs the output value: undo both.
    fn table_update(reg: u64, bytes: &[u8]) -> u64 {
        let mut digest = CRC64.digest_with_initial(reg.reverse_bits());
        digest.update(bytes);
        digest.finalize() ^ CRC64_XOROUT
    }

    /// `len` bytes with no short period, so a misplaced block would change the CRC.
    fn test_bytes(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i * 7 + i / 13 + (i >> 9) * 31) as u8)
            .collect()
    }

    #[test]
    fn crc_fast_agrees_with_the_table() {
        let data = test_bytes((1 << 20) + 64);
        let regs = [0, 1, CRC64_INIT, 1 << 63, 0x1234_5678_9abc_def0];
        // Every short length (crc-fast has separate paths for 0-15, 16, 17-31 and 32-127
        // bytes, then blocks of 128 or 256 with tails), from aligned and unaligned starts.
        for len in 0..=700 {
            for start in [0, 1, 7] {
                let bytes = &data[start..start + len];
                for reg in regs {
                    assert_eq!(
                        crc64_update(reg, bytes),
                        table_update(reg, bytes),
                        "len {len} start {start} reg {reg:x}"
                    );
                }
            }
        }
        let large = [
            4095,
            4096,
            4097,
            65535,
            65536,
            70_000,
            1 << 20,
            (1 << 20) + 63,
        ];
        for len in large {
            for reg in regs {
                assert_eq!(
                    crc64_update(reg, &data[1..=len]),
                    table_update(reg, &data[1..=len]),
                    "len {len} reg {reg:x}"
                );
            }
        }
    }

    #[test]
    fn crc_fast_digest_streams_like_the_table() {
        let data = test_bytes(300_000);
        assert_eq!(
            crc_fast::checksum(CrcAlgorithm::Crc64GoIso, b"123456789"),
            0xb90956c775a41001
        );
        assert_eq!(
            crc_fast::checksum(CrcAlgorithm::Crc64GoIso, &data),
            CRC64.checksum(&data)
        );
        // Uneven pieces, empty ones included, straddling crc-fast's block sizes.
        let pieces = [
            0, 1, 3, 8, 15, 16, 17, 31, 32, 127, 128, 129, 255, 256, 4093, 65_537,
        ];
        let mut digest = crc_fast::Digest::new(CrcAlgorithm::Crc64GoIso);
        let mut reg = CRC64_INIT;
        let mut rest = &data[..];
        for &n in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            digest.update(piece);
            reg = table_update(reg, piece);
            assert_eq!(digest.get_state(), reg, "{} bytes left", rest.len());
            rest = tail;
        }
        assert_eq!(digest.finalize(), CRC64.checksum(&data));
        assert_eq!(crc64_finish(reg), CRC64.checksum(&data));
    }

    /// The chunked table against a plain vector, through sets, overwrites and truncations
    /// that cut inside chunks, at chunk edges and past the end.
    #[test]
    fn chunked_table_matches_a_plain_vector() {
        let mut table = PageChecksums::new(4096);
        let mut plain: Vec<u64> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..20_000 {
            let r = next();
            if step % 97 == 0 {
                let commit = (r % 5000) as u32;
                table.truncate(commit);
                plain.truncate(commit as usize);
            } else {
                let pgno = (r % 4500) as u32 + 1;
                let ck = CHECKSUM_FLAG | (next() >> 1);
                table.set(pgno, Checksum(ck));
                if plain.len() < pgno as usize {
                    plain.resize(pgno as usize, 0);
                }
                plain[pgno as usize - 1] = ck;
            }
            assert_eq!(table.page_count() as usize, plain.len(), "step {step}");
            let xor = plain.iter().fold(0, |a, b| a ^ b);
            assert_eq!(
                table.checksum(),
                Checksum(CHECKSUM_FLAG | xor),
                "step {step}"
            );
        }
        for (i, &ck) in plain.iter().enumerate() {
            assert_eq!(table.get(i as u32 + 1).map_or(0, |c| c.0), ck);
        }
        assert_eq!(table.get(plain.len() as u32 + 1), None);
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
