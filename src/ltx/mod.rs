//! The LTX file format, as Litestream 0.5.16+ writes it (superfly/ltx v0.5.2), plus our
//! checksum extension in the header's reserved bytes.
//!
//! This module encodes, decodes, checksums and compacts LTX files and nothing else: it takes
//! `std::io::Read`/`Write`, returns typed values, and knows no policy (no files, no logging, no
//! config). The byte layout is documented in `shared/reference/LTX.md`.

pub mod checksum;
pub mod decoder;
pub mod encoder;
pub mod header;
pub mod level;
pub mod merge;

pub use checksum::{lock_pgno, page_checksum, Checksum, PageChecksums, CHECKSUM_FLAG};
pub use decoder::{read_header, Decoder, Trailer};
pub use encoder::Encoder;
pub use header::{Header, EXT_TAG, FLAG_NO_CHECKSUM, HEADER_SIZE};
pub use level::Level;
pub use merge::{compact, compact_with, CompactOptions};

use std::fmt;
use std::io;
use std::str::FromStr;

/// Size of a page frame's header: pgno u32, flags u16, compressed size u32.
pub const PAGE_FRAME_HEADER_SIZE: usize = 10;

/// Size of the marker that ends the page frames: a zero pgno and zero flags.
pub const END_MARKER_SIZE: usize = 6;

/// Size of the trailer: post-apply database checksum, then file checksum.
pub const TRAILER_SIZE: usize = 16;

/// The only page frame flag LTX v0.5.2 defines: a 4-byte compressed size follows, and the
/// payload is a raw LZ4 block. Every frame Litestream 0.5.16+ writes carries it.
pub const PAGE_FLAG_SIZE: u16 = 0x0001;

/// Transaction id: the position of a database in its replication history.
///
/// A newtype so that a txid never mixes with a page count; it prints as 16 lowercase hex
/// digits, the way Litestream names files and reports positions.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(u64);

impl TxId {
    /// "Nothing yet": the position of a database with no transaction replicated, and of a
    /// `-txid` flag meaning "the newest". Real TXIDs start at 1.
    pub const ZERO: TxId = TxId(0);

    /// The TXID with this number, as read from a file name, a header or a flag. A constructor
    /// rather than a public field so that a txid is never treated as arithmetic by accident:
    /// the only step from one txid to another is [`TxId::next`].
    pub const fn new(v: u64) -> TxId {
        TxId(v)
    }

    /// The number behind this TXID, for encoding it (headers, file names, JSON) and for the
    /// rare comparisons a position needs. Not for arithmetic: use [`TxId::next`].
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The TXID after this one; `None` past the largest (a replica file named with it, real
    /// or crafted, cannot be followed).
    pub fn next(self) -> Option<TxId> {
        self.0.checked_add(1).map(TxId)
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::LowerHex for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for TxId {
    type Err = Error;

    /// Parses hex digits, with or without leading zeros, so that users may type `a1` for
    /// `00000000000000a1`. Rejects empty input, signs, non-hex characters and overflow.
    fn from_str(s: &str) -> Result<Self> {
        parse_hex_u64(s)
            .map(TxId)
            .ok_or_else(|| Error::InvalidTxId {
                input: s.to_owned(),
            })
    }
}

/// Parses a non-empty string of hex digits (no sign, no prefix) into a u64.
pub(crate) fn parse_hex_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The file name of the LTX file holding transactions `min..=max`: `%016x-%016x.ltx`.
///
/// Litestream lists replicas by name, so the name alone must carry the txid range.
pub fn file_name(min: TxId, max: TxId) -> String {
    format!("{min}-{max}.ltx")
}

/// Parses a name made by [`file_name`]; `None` for anything else (other files in a replica
/// directory, upper-case digits, wrong widths).
pub fn parse_file_name(name: &str) -> Option<(TxId, TxId)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    let is_txid =
        |s: &str| s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_txid(min) || !is_txid(max) {
        return None;
    }
    let (min, max) = (TxId(parse_hex_u64(min)?), TxId(parse_hex_u64(max)?));
    // TXIDs start at 1 and a file covers min..=max: anything else is not a file we can use.
    (min.0 >= 1 && min <= max).then_some((min, max))
}

/// What [`verify`] proved of a whole LTX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub header: Header,
    pub trailer: Trailer,
    /// The XOR of every page's [`page_checksum`], flagged: for a file holding a full image
    /// (a snapshot), the database checksum of that image.
    pub pages_checksum: Checksum,
}

/// Reads a whole LTX file through every check the decoder makes (each page, the page index,
/// the file checksum, and the database checksums the file claims where its pages can prove
/// them) and returns its header, trailer and [`Verified::pages_checksum`]. The one way to
/// verify a file without applying it.
pub fn verify<R: io::Read>(r: R) -> Result<Verified> {
    let mut dec = Decoder::new(r)?;
    let header = dec.header().clone();
    let mut page = vec![0u8; header.page_size as usize];
    let mut xor = 0u64;
    while let Some((_, checksum)) = dec.next_page_checksummed(&mut page)? {
        xor ^= checksum.0;
    }
    let trailer = dec.finish()?;
    Ok(Verified {
        header,
        trailer,
        pages_checksum: Checksum(CHECKSUM_FLAG | xor),
    })
}

/// Everything that can go wrong encoding, decoding or compacting an LTX file.
///
/// Each variant says what was wrong and, where it applies, what was expected and what was
/// found, so that callers can name the file and act (re-fetch, re-snapshot) without guessing.
/// Decoding never panics: every malformed input ends up as one of these.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The underlying reader or writer failed (other than by ending early).
    Io {
        /// What was being read or written.
        context: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The input ended in the middle of a section.
    Truncated {
        /// The section being read: "header", "page frame header", ...
        section: &'static str,
        /// Byte offset in the file where that read started.
        offset: u64,
    },
    /// The file does not start with `LTX1`.
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A header field breaks a rule of LTX.md (also raised for headers given to the encoder).
    InvalidHeader {
        /// Which rule, with the offending value.
        reason: String,
    },
    /// A page frame header is malformed (unknown flags, impossible compressed size).
    InvalidPageFrame {
        /// Byte offset of the frame.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Pages must be in strictly ascending order.
    PageOutOfOrder {
        /// The previous page number.
        prev: u32,
        /// The page number that followed it.
        pgno: u32,
    },
    /// A page number past the database size the header declares.
    PageBeyondCommit {
        /// The page number.
        pgno: u32,
        /// The header's commit (database size in pages).
        commit: u32,
    },
    /// The lock page (the one holding SQLite's PENDING_BYTE) is never stored.
    LockPage {
        /// The lock page number for this page size.
        pgno: u32,
    },
    /// A page buffer or a decompressed page is not exactly one page long.
    PageLength {
        /// The page number concerned.
        pgno: u32,
        /// The header's page size.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// An LZ4 payload does not decompress.
    Decompress {
        /// The page number of the frame.
        pgno: u32,
        /// The LZ4 decoder's complaint.
        reason: String,
    },
    /// The caller's page buffer is not one page long.
    BufferSize {
        /// The header's page size.
        expected: usize,
        /// The buffer's length.
        found: usize,
    },
    /// A snapshot must hold every page 1..=commit except the lock page.
    SnapshotMissingPage {
        /// The page number that should have come next.
        expected: u32,
        /// The page number that came instead, `None` if the pages ended.
        found: Option<u32>,
    },
    /// The page index is malformed or disagrees with the page frames.
    InvalidIndex {
        /// What disagrees, with expected and found values.
        reason: String,
    },
    /// A trailer field breaks a rule (post-apply checksum vs the NoChecksum flag).
    InvalidTrailer {
        /// Which rule, with the offending value.
        reason: String,
    },
    /// The file checksum in the trailer is not the CRC-64 of the file's contents.
    FileChecksumMismatch {
        /// The checksum stored in the trailer.
        stored: Checksum,
        /// The checksum computed over the bytes read.
        computed: Checksum,
    },
    /// A database checksum that can be recomputed (a snapshot's post-apply checksum, or one
    /// file's pre-apply against the previous file's post-apply) does not match.
    DatabaseChecksumMismatch {
        /// Which checksum: "snapshot post-apply", "pre-apply vs previous post-apply", ...
        what: &'static str,
        /// The checksum the file claims.
        expected: Checksum,
        /// The checksum found.
        found: Checksum,
    },
    /// Bytes follow the trailer.
    TrailingBytes {
        /// Offset of the first unexpected byte.
        offset: u64,
    },
    /// A string is not a hex transaction id.
    InvalidTxId {
        /// The string given.
        input: String,
    },
    /// A string is not a hex checksum.
    InvalidChecksum {
        /// The string given.
        input: String,
    },
    /// `compact` needs at least one input.
    NoInputs,
    /// Compaction inputs must follow each other: each starts at or before the previous
    /// max + 1 and ends after it.
    NotContiguous {
        /// The previous input's max txid.
        prev_max: TxId,
        /// The next input's min txid.
        next_min: TxId,
        /// The next input's max txid.
        next_max: TxId,
    },
    /// Compaction inputs must share one page size.
    PageSizeMismatch {
        /// The first input's page size.
        expected: u32,
        /// The page size found.
        found: u32,
    },
    /// A compaction input failed; `index` is its position in the input list.
    Input {
        /// Position of the input (0 = oldest).
        index: usize,
        /// Its (min, max) txids, if its header could be read.
        range: Option<(TxId, TxId)>,
        /// What went wrong with it.
        source: Box<Error>,
    },
    /// The encoder's writer failed earlier, so the output is incomplete and must be discarded.
    Poisoned,
}

/// Result of every fallible LTX operation.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            Io { context, source } => write!(f, "{context}: {source}"),
            Truncated { section, offset } => {
                write!(
                    f,
                    "truncated file: {section} at offset {offset} is incomplete"
                )
            }
            BadMagic { found } => {
                write!(f, "not an LTX file: magic is {found:?}, expected \"LTX1\"")
            }
            InvalidHeader { reason } => write!(f, "invalid header: {reason}"),
            InvalidPageFrame { offset, reason } => {
                write!(f, "invalid page frame at offset {offset}: {reason}")
            }
            PageOutOfOrder { prev, pgno } => {
                write!(
                    f,
                    "page {pgno} follows page {prev}: pages must be in ascending order"
                )
            }
            PageBeyondCommit { pgno, commit } => {
                write!(f, "page {pgno} is past the database size of {commit} pages")
            }
            LockPage { pgno } => write!(f, "page {pgno} is the lock page, which is never stored"),
            PageLength {
                pgno,
                expected,
                found,
            } => {
                write!(
                    f,
                    "page {pgno} is {found} bytes, expected the page size {expected}"
                )
            }
            Decompress { pgno, reason } => {
                write!(f, "page {pgno}: LZ4 decompression failed: {reason}")
            }
            BufferSize { expected, found } => {
                write!(
                    f,
                    "page buffer is {found} bytes, expected the page size {expected}"
                )
            }
            SnapshotMissingPage {
                expected,
                found: Some(found),
            } => {
                write!(
                    f,
                    "snapshot is missing page {expected} (found page {found})"
                )
            }
            SnapshotMissingPage {
                expected,
                found: None,
            } => {
                write!(f, "snapshot is missing page {expected} (pages ended)")
            }
            InvalidIndex { reason } => write!(f, "invalid page index: {reason}"),
            InvalidTrailer { reason } => write!(f, "invalid trailer: {reason}"),
            FileChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "file checksum mismatch: trailer says {stored}, contents give {computed}"
                )
            }
            DatabaseChecksumMismatch {
                what,
                expected,
                found,
            } => {
                write!(
                    f,
                    "database checksum mismatch ({what}): expected {expected}, found {found}"
                )
            }
            TrailingBytes { offset } => {
                write!(f, "unexpected bytes after the trailer at offset {offset}")
            }
            InvalidTxId { input } => {
                write!(f, "invalid transaction id {input:?}: expected hex digits")
            }
            InvalidChecksum { input } => {
                write!(f, "invalid checksum {input:?}: expected hex digits")
            }
            NoInputs => write!(f, "compaction needs at least one input file"),
            NotContiguous {
                prev_max,
                next_min,
                next_max,
            } if next_min.0 > prev_max.0.saturating_add(1) => write!(
                f,
                "inputs are not contiguous: max txid {prev_max} is followed by min txid {next_min}"
            ),
            NotContiguous {
                prev_max,
                next_min,
                next_max,
            } => write!(
                f,
                "inputs are out of order: max txid {prev_max} is followed by txids {next_min}-{next_max}, which end no later"
            ),
            PageSizeMismatch { expected, found } => {
                write!(
                    f,
                    "inputs have different page sizes: {expected} and {found}"
                )
            }
            Input {
                index,
                range: Some((min, max)),
                source,
            } => {
                write!(f, "input {index} ({}): {source}", file_name(*min, *max))
            }
            Input {
                index,
                range: None,
                source,
            } => write!(f, "input {index}: {source}"),
            Poisoned => write!(
                f,
                "encoder output is incomplete after an earlier write error"
            ),
        }
    }
}

/// No `source()`: every message already ends with its cause (an OS error, an input's own
/// error), and a source as well would print it twice in `{:#}` chains ("No space left on
/// device (os error 28): No space left on device (os error 28)").
impl std::error::Error for Error {}

/// Unsigned LEB128 varints, as Go's `encoding/binary` writes them in the page index.
pub(crate) mod varint {
    /// Appends `v` to `out`.
    pub fn put(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
}

/// Reads exactly `buf.len()` bytes, naming the section and offset when the input ends early.
pub(crate) fn read_exact<R: io::Read>(
    r: &mut R,
    buf: &mut [u8],
    section: &'static str,
    offset: u64,
) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated { section, offset },
        _ => Error::Io {
            context: section,
            source: e,
        },
    })
}

/// Helpers shared by the tests of this module: fixtures, page contents, whole-file codecs.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// The replica Litestream 0.5.17 wrote.
    pub const LITESTREAM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/fixtures/litestream-0.5.17-file-replica/ltx"
    );

    /// The same replica re-encoded with our checksum extension.
    pub const EXT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/fixtures/ext-checksum-replica/ltx"
    );

    /// The README's restore table: (txid, rows, database bytes, database checksum).
    pub const README_TABLE: [(u64, u32, u64, u64); 10] = [
        (0x1, 0, 16384, 0xdda6d5f12099881c),
        (0x2, 40, 16384, 0xe1ebe1c5cb2ffa61),
        (0x3, 80, 24576, 0x9db0b0a0dbe60492),
        (0x4, 120, 28672, 0xe2b13f33f57531ab),
        (0x5, 160, 32768, 0xb97564bf206f5211),
        (0x6, 200, 36864, 0xcf1209c7eb1f8f26),
        (0x7, 200, 36864, 0xfabb2a9c930229de),
        (0x8, 240, 36864, 0xce3941bc2298df25),
        (0x9, 280, 40960, 0x8772698b6f7f5c68),
        (0xa, 320, 45056, 0x964acda739482407),
    ];

    /// The files of one level of a fixture replica, sorted by txid: (min, max, bytes).
    pub fn fixture_files(replica: &str, level: u32) -> Vec<(TxId, TxId, Vec<u8>)> {
        let dir = format!("{replica}/{level}");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                let (min, max) = parse_file_name(&name).unwrap_or_else(|| panic!("{name}"));
                (min, max, std::fs::read(entry.path()).unwrap())
            })
            .collect();
        files.sort_by_key(|f| f.0);
        files
    }

    /// One fixture file's bytes.
    pub fn fixture(replica: &str, level: u32, min: u64, max: u64) -> Vec<u8> {
        let path = format!("{replica}/{level}/{}", file_name(TxId(min), TxId(max)));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Deterministic page contents: half pseudo-random, half repeated, so LZ4 has work.
    pub fn test_page(pgno: u32, page_size: u32, salt: u32) -> Vec<u8> {
        let mut x = (pgno.wrapping_mul(0x9e37_79b9) ^ salt.wrapping_mul(0x85eb_ca6b)) | 1;
        (0..page_size as usize)
            .map(|i| {
                if i % 64 < 32 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                } else {
                    (pgno as u8).wrapping_add(salt as u8)
                }
            })
            .collect()
    }

    /// A whole decoded file.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Decoded {
        pub header: Header,
        pub pages: Vec<(u32, Vec<u8>)>,
        pub trailer: Trailer,
    }

    /// Decodes and verifies a whole file held in memory.
    pub fn decode_all(bytes: &[u8]) -> Result<Decoded> {
        let mut dec = Decoder::new(bytes)?;
        let header = dec.header().clone();
        let mut pages = Vec::new();
        let mut buf = vec![0u8; header.page_size as usize];
        while let Some(pgno) = dec.next_page(&mut buf)? {
            pages.push((pgno, buf.clone()));
        }
        let trailer = dec.finish()?;
        Ok(Decoded {
            header,
            pages,
            trailer,
        })
    }

    /// Encodes a whole file into memory.
    pub fn encode_all(
        header: &Header,
        pages: &[(u32, Vec<u8>)],
        post: Checksum,
    ) -> (Trailer, Vec<u8>) {
        let mut enc = Encoder::new(Vec::new(), header).unwrap();
        for (pgno, page) in pages {
            enc.encode_page(*pgno, page).unwrap();
        }
        enc.finish(post).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `verify` gives what decoding page by page gives, the XOR of the page checksums (a
    /// snapshot's equals its post-apply checksum), and refuses a file with a flipped byte.
    #[test]
    fn verify_proves_a_whole_file_and_xors_its_page_checksums() {
        use testutil::{decode_all, fixture_files, EXT, LITESTREAM};
        for replica in [LITESTREAM, EXT] {
            for level in [0, 1] {
                for (min, max, bytes) in fixture_files(replica, level) {
                    let what = format!("{replica}/{level}/{}", file_name(min, max));
                    let v = verify(&bytes[..]).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let d = decode_all(&bytes).unwrap();
                    assert_eq!((&v.header, &v.trailer), (&d.header, &d.trailer), "{what}");
                    let xor = d
                        .pages
                        .iter()
                        .fold(0, |x, (pgno, page)| x ^ page_checksum(*pgno, page).0);
                    assert_eq!(v.pages_checksum, Checksum(CHECKSUM_FLAG | xor), "{what}");
                    if v.header.is_snapshot() && !v.header.no_checksum() {
                        assert_eq!(v.pages_checksum, v.trailer.post_apply_checksum, "{what}");
                    }
                    let mut bad = bytes.clone();
                    let mid = bad.len() / 2;
                    bad[mid] ^= 0x40;
                    assert!(verify(&bad[..]).is_err(), "{what}: a flipped byte passed");
                }
            }
        }
    }

    #[test]
    fn txid_display_is_16_lower_hex_digits() {
        assert_eq!(TxId(0xa1).to_string(), "00000000000000a1");
        assert_eq!(format!("{:x}", TxId(u64::MAX)), "ffffffffffffffff");
    }

    #[test]
    fn txid_new_and_get_round_trip_and_zero_is_the_default() {
        for v in [0, 1, 0xa1, u64::MAX] {
            assert_eq!(TxId::new(v).get(), v);
        }
        assert_eq!(TxId::ZERO, TxId::default());
        assert_eq!(TxId::ZERO.next(), Some(TxId::new(1)));
        assert_eq!(TxId::new(u64::MAX).next(), None);
    }

    #[test]
    fn txid_parses_hex_with_or_without_leading_zeros() {
        assert_eq!("a1".parse::<TxId>().unwrap(), TxId(0xa1));
        assert_eq!("00000000000000A1".parse::<TxId>().unwrap(), TxId(0xa1));
        assert_eq!("ffffffffffffffff".parse::<TxId>().unwrap(), TxId(u64::MAX));
        for bad in ["", "+1", "-1", "0x1", "g", " 1", "1 ", "10000000000000000"] {
            let err = bad.parse::<TxId>().unwrap_err();
            assert!(matches!(err, Error::InvalidTxId { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn file_names_round_trip() {
        let name = file_name(TxId(1), TxId(0xa));
        assert_eq!(name, "0000000000000001-000000000000000a.ltx");
        assert_eq!(parse_file_name(&name), Some((TxId(1), TxId(0xa))));
        for bad in [
            "0000000000000001-000000000000000A.ltx",
            "0000000000000001-000000000000000a.ltx.tmp",
            "000000000000001-000000000000000a.ltx",
            "0000000000000001_000000000000000a.ltx",
            "0000000000000001-000000000000000a",
            "+000000000000001-000000000000000a.ltx",
            "",
            // No TXID 0, and no file that ends before it starts.
            "0000000000000000-000000000000000a.ltx",
            "000000000000000b-000000000000000a.ltx",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        let last = "ffffffffffffffff-ffffffffffffffff.ltx";
        assert_eq!(
            parse_file_name(last),
            Some((TxId(u64::MAX), TxId(u64::MAX)))
        );
    }

    #[test]
    fn the_txid_after_the_largest_is_none() {
        assert_eq!(TxId(1).next(), Some(TxId(2)));
        assert_eq!(TxId(u64::MAX).next(), None);
    }

    #[test]
    fn varints_match_go_encoding() {
        for (v, bytes) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            varint::put(&mut out, v);
            assert_eq!(out, bytes, "{v}");
        }
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let e = Error::FileChecksumMismatch {
            stored: Checksum(1),
            computed: Checksum(2),
        };
        assert_eq!(
            e.to_string(),
            "file checksum mismatch: trailer says 0000000000000001, contents give 0000000000000002"
        );
        let e = Error::Input {
            index: 1,
            range: Some((TxId(4), TxId(7))),
            source: Box::new(e),
        };
        assert!(e
            .to_string()
            .starts_with("input 1 (0000000000000004-0000000000000007.ltx): file"));
        // The cause is in the message, so not also a source (it would print twice).
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e))
                .matches("checksum")
                .count(),
            1
        );
    }
}
