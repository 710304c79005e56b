//! The decoder's tests: Litestream's and our own fixtures decoded, and every malformed input
//! rejected with its typed error.

use super::super::testutil::{
    decode_all, encode_all, fixture, fixture_files, test_page, Decoded, EXT, LITESTREAM,
    README_TABLE,
};
use super::super::{page_checksum, Encoder, PageChecksums, TxId, FLAG_NO_CHECKSUM};
use super::*;

/// Pages 1..=commit (a snapshot) or a few scattered ones, for `page_size`.
fn pages_for(page_size: u32, snapshot: bool, commit: u32, salt: u32) -> Vec<(u32, Vec<u8>)> {
    (1..=commit)
        .filter(|pgno| snapshot || pgno % 3 != 1)
        .map(|pgno| (pgno, test_page(pgno, page_size, salt)))
        .collect()
}

#[test]
fn round_trips_every_shape() {
    for page_size in [512, 4096, 65536] {
        for snapshot in [true, false] {
            for ext in [false, true] {
                for no_checksum in [true, false] {
                    round_trip(page_size, snapshot, ext, no_checksum);
                }
            }
        }
    }
}

/// Encodes then decodes one file, checking every field and page comes back.
fn round_trip(page_size: u32, snapshot: bool, ext: bool, no_checksum: bool) {
    let commit = if page_size == 65536 { 5 } else { 12 };
    let pages = pages_for(page_size, snapshot, commit, 7);
    // Database checksums: before = some earlier database, after = with these pages.
    let mut cks = PageChecksums::new(page_size);
    if !snapshot {
        for pgno in 1..=commit {
            cks.set(pgno, page_checksum(pgno, &test_page(pgno, page_size, 1)));
        }
    }
    let pre = if snapshot {
        Checksum(0)
    } else {
        cks.checksum()
    };
    for (pgno, page) in &pages {
        cks.set(*pgno, page_checksum(*pgno, page));
    }
    let post = cks.checksum();
    let min = if snapshot { 1 } else { 5 };
    let header = Header {
        flags: if no_checksum { FLAG_NO_CHECKSUM } else { 0 },
        page_size,
        commit,
        min_txid: TxId(min),
        max_txid: TxId(min + 2),
        timestamp_ms: 1_795_556_957_691,
        pre_apply_checksum: if no_checksum { Checksum(0) } else { pre },
        wal_offset: 32,
        wal_size: 4120,
        wal_salt1: 1,
        wal_salt2: 2,
        node_id: 3,
        ext_checksums: ext.then_some((pre, post)),
    };
    let what =
        format!("page size {page_size} snapshot {snapshot} ext {ext} nochecksum {no_checksum}");
    let (trailer, bytes) = encode_all(&header, &pages, post);
    let expected_post = if no_checksum { Checksum(0) } else { post };
    assert_eq!(trailer.post_apply_checksum, expected_post, "{what}");
    let decoded = decode_all(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        decoded,
        Decoded {
            header: header.clone(),
            pages: pages.clone(),
            trailer
        },
        "{what}"
    );
    assert_eq!(read_header(&bytes[..]).unwrap(), header, "{what}");

    // Stopping after one page: finish() drains the rest and still verifies.
    let mut dec = Decoder::new(&bytes[..]).unwrap();
    let mut buf = vec![0u8; page_size as usize];
    assert_eq!(dec.next_page(&mut buf).unwrap(), Some(pages[0].0));
    assert_eq!(dec.finish().unwrap(), trailer, "{what}");
}

#[test]
fn decodes_every_litestream_fixture_file() {
    for level in [0, 1, 9] {
        for (min, max, bytes) in fixture_files(LITESTREAM, level) {
            let name = format!("ltx/{level}/{}", super::super::file_name(min, max));
            let d = decode_all(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((d.header.min_txid, d.header.max_txid), (min, max), "{name}");
            assert!(d.header.no_checksum(), "{name}");
            assert_eq!(d.header.ext_checksums, None, "{name}");
            assert_eq!(d.trailer.post_apply_checksum, Checksum(0), "{name}");
            assert_eq!(d.header.page_size, 4096, "{name}");
        }
    }
}

#[test]
fn decodes_every_ext_fixture_file_and_the_checksums_chain() {
    for level in [0, 1, 9] {
        let mut prev_post: Option<Checksum> = None;
        for (min, max, bytes) in fixture_files(EXT, level) {
            let name = format!("ltx/{level}/{}", super::super::file_name(min, max));
            let d = decode_all(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&bytes[96..100], b"CKSM", "{name}");
            let (pre, post) = d.header.ext_checksums.unwrap();
            assert_eq!((d.header.min_txid, d.header.max_txid), (min, max), "{name}");
            if min == TxId(1) {
                assert_eq!(pre, Checksum(0), "{name}");
            } else if level != 9 {
                assert_eq!(
                    Some(pre),
                    prev_post,
                    "{name}: pre-apply vs previous post-apply"
                );
            }
            prev_post = Some(post);
        }
    }
}

/// Replays ltx/0 files 1..=N into an in-memory database, for every N, and checks its
/// checksum (computed from scratch and incrementally) against the README and the
/// extension fixture's post-apply checksums.
#[test]
fn replaying_fixture_l0_files_gives_the_readme_checksums() {
    let l0 = fixture_files(LITESTREAM, 0);
    let ext_l0 = fixture_files(EXT, 0);
    assert_eq!(l0.len(), README_TABLE.len());
    let mut db: Vec<Vec<u8>> = Vec::new();
    let mut incremental = PageChecksums::new(4096);
    for (i, (_, max, bytes)) in l0.iter().enumerate() {
        let d = decode_all(bytes).unwrap();
        let ext = decode_all(&ext_l0[i].2).unwrap();
        assert_eq!(
            ext.pages, d.pages,
            "ext fixture holds the same pages, txid {max}"
        );
        for (pgno, page) in &d.pages {
            let i = *pgno as usize - 1;
            if db.len() <= i {
                db.resize(i + 1, vec![0; 4096]);
            }
            db[i] = page.clone();
            incremental.set(*pgno, page_checksum(*pgno, page));
        }
        db.truncate(d.header.commit as usize);
        incremental.truncate(d.header.commit);

        let mut full = PageChecksums::new(4096);
        for (i, page) in db.iter().enumerate() {
            full.set(i as u32 + 1, page_checksum(i as u32 + 1, page));
        }
        let (txid, _rows, size, checksum) = README_TABLE[i];
        assert_eq!(max.0, txid);
        assert_eq!(db.len() as u64 * 4096, size, "txid {max}");
        assert_eq!(full.checksum(), Checksum(checksum), "txid {max}");
        assert_eq!(incremental.checksum(), Checksum(checksum), "txid {max}");
        assert_eq!(
            ext.header.ext_checksums.unwrap().1,
            Checksum(checksum),
            "txid {max}"
        );
    }
}

/// Parsed raw frames of a file: (pgno, flags, LZ4 payload), and where the frames end.
fn raw_frames(bytes: &[u8]) -> (Vec<(u32, u16, Vec<u8>)>, usize) {
    let mut at = HEADER_SIZE;
    let mut frames = Vec::new();
    loop {
        let pgno = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let flags = u16::from_be_bytes(bytes[at + 4..at + 6].try_into().unwrap());
        if pgno == 0 {
            return (frames, at + 6);
        }
        let size = u32::from_be_bytes(bytes[at + 6..at + 10].try_into().unwrap()) as usize;
        frames.push((pgno, flags, bytes[at + 10..at + 10 + size].to_vec()));
        at += 10 + size;
    }
}

/// Our encoder, given a Litestream file's header and pages, writes the same bytes except
/// the LZ4 payloads (lz4_flex compresses differently from Go's pierrec/lz4, and sizes,
/// offsets and the file checksum follow); given Litestream's own payloads, it writes the
/// file byte for byte.
#[test]
fn re_encoding_litestream_files_matches_byte_for_byte_except_lz4() {
    for (replica, level) in [0, 1, 9]
        .into_iter()
        .flat_map(|l| [(LITESTREAM, l), (EXT, l)])
    {
        for (min, max, original) in fixture_files(replica, level) {
            let name = format!("{replica}/{level}/{}", super::super::file_name(min, max));
            let d = decode_all(&original).unwrap();
            let (their_frames, _) = raw_frames(&original);

            let (trailer, ours) = encode_all(&d.header, &d.pages, Checksum(0));
            assert_eq!(
                ours[..HEADER_SIZE],
                original[..HEADER_SIZE],
                "{name}: header"
            );
            let (our_frames, _) = raw_frames(&ours);
            let pgno_flags =
                |f: &[(u32, u16, Vec<u8>)]| f.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>();
            assert_eq!(pgno_flags(&our_frames), pgno_flags(&their_frames), "{name}");
            assert_eq!(decode_all(&ours).unwrap().pages, d.pages, "{name}");
            assert_eq!(
                trailer.post_apply_checksum, d.trailer.post_apply_checksum,
                "{name}"
            );

            let mut enc = Encoder::new(Vec::new(), &d.header).unwrap();
            for ((pgno, page), (_, _, payload)) in d.pages.iter().zip(&their_frames) {
                enc.encode_page_with_payload(*pgno, page, payload).unwrap();
            }
            let (trailer, same_payloads) = enc.finish(Checksum(0)).unwrap();
            assert!(same_payloads == original, "{name}: not byte-identical");
            assert_eq!(trailer, d.trailer, "{name}");
        }
    }
}

/// `bytes` with byte `at` inverted.
fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0xff;
    b
}

/// The decode error for `bytes`, which must not decode.
fn decode_err(bytes: &[u8], what: &str) -> Error {
    match decode_all(bytes) {
        Ok(_) => panic!("{what}: decoded without error"),
        Err(e) => e,
    }
}

/// Byte offsets of the LZ4 payloads of a file's frames.
fn payload_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut at = HEADER_SIZE;
    let mut ranges = Vec::new();
    while bytes[at..at + 4] != [0; 4] {
        let size = u32::from_be_bytes(bytes[at + 6..at + 10].try_into().unwrap()) as usize;
        ranges.push(at + 10..at + 10 + size);
        at += 10 + size;
    }
    ranges
}

/// Recomputes a file's checksum after a deliberate edit, so that the edit itself (not
/// the checksum) is what the decoder has to catch.
fn reseal(bytes: &mut [u8], pages: &[(u32, Vec<u8>)]) {
    let mut hash = CRC64.digest();
    hash.update(&bytes[..HEADER_SIZE]);
    let mut at = HEADER_SIZE;
    for (_, page) in pages {
        let size = u32::from_be_bytes(bytes[at + 6..at + 10].try_into().unwrap()) as usize;
        hash.update(&bytes[at..at + 10]);
        hash.update(page);
        at += 10 + size;
    }
    let end = bytes.len() - 8;
    hash.update(&bytes[at..end]);
    let ck = CHECKSUM_FLAG | hash.finalize();
    bytes[end..].copy_from_slice(&ck.to_be_bytes());
}

#[test]
fn flipping_any_byte_is_an_error_or_harmless() {
    for (replica, min) in [(LITESTREAM, 1), (LITESTREAM, 2), (LITESTREAM, 7), (EXT, 7)] {
        let original = fixture(replica, 0, min, min);
        let good = decode_all(&original).unwrap();
        let payloads = payload_ranges(&original);
        for at in 0..original.len() {
            let what = format!("{replica} {min}: byte {at} flipped");
            match decode_all(&flipped(&original, at)) {
                Err(e) => assert!(!e.to_string().is_empty(), "{what}"),
                // Only an LZ4 payload can change without changing what it decodes to.
                Ok(d) => {
                    assert_eq!(d, good, "{what}: decoded to something else");
                    assert!(
                        payloads.iter().any(|r| r.contains(&at)),
                        "{what}: went unnoticed"
                    );
                }
            }
        }
    }
}

#[test]
fn corrupt_bytes_are_named() {
    // ltx/0/7: header, one frame (pgno 3, 47-byte payload) at 100, end marker at 157,
    // 4-byte index at 163, length at 167, trailer at 175.
    let file = fixture(LITESTREAM, 0, 7, 7);
    assert_eq!(file.len(), 191);
    let cases: [(usize, &str); 12] = [
        (0, "not an LTX file"),
        (7, "invalid header: unknown flags"),
        (39, "file checksum mismatch"),
        (85, "file checksum mismatch"),
        (103, "page 252 is past the database size of 9 pages"),
        (105, "flags 0x00fe"),
        (106, "compressed size"),
        (130, "page 3"),
        (160, "page frame"),
        (164, "file checksum mismatch"),
        (170, "invalid page index: length field says"),
        (180, "file checksum mismatch"),
    ];
    for (at, want) in cases {
        let err = decode_err(&flipped(&file, at), &format!("byte {at}"));
        assert!(err.to_string().contains(want), "byte {at}: {err}");
    }
    let err = decode_err(&flipped(&file, 190), "stored file checksum");
    assert!(matches!(err, Error::FileChecksumMismatch { .. }), "{err}");
}

#[test]
fn every_truncation_is_an_error() {
    for (replica, min) in [(LITESTREAM, 7), (LITESTREAM, 2), (EXT, 7)] {
        let file = fixture(replica, 0, min, min);
        for len in 0..file.len() {
            let err = decode_err(&file[..len], &format!("{replica} {min}: {len} bytes"));
            let msg = err.to_string();
            assert!(
                msg.contains("truncated") || msg.contains("length field"),
                "{len}: {msg}"
            );
            if len < HEADER_SIZE {
                assert!(
                    matches!(
                        err,
                        Error::Truncated {
                            section: "header",
                            offset: 0
                        }
                    ),
                    "{msg}"
                );
                assert!(read_header(&file[..len]).is_err());
            }
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut file = fixture(LITESTREAM, 0, 7, 7);
    file.push(0);
    let err = decode_err(&file, "one extra byte");
    assert!(matches!(err, Error::TrailingBytes { offset: 191 }), "{err}");
    file.extend_from_slice(&[0xaa; 10_000]);
    let err = decode_err(&file, "many extra bytes");
    assert!(matches!(err, Error::TrailingBytes { offset: 191 }), "{err}");
}

#[test]
fn an_index_that_disagrees_with_the_frames_is_an_error_even_with_a_good_checksum() {
    let good = fixture(LITESTREAM, 0, 7, 7);
    let pages = decode_all(&good).unwrap().pages;
    // Index at 163: pgno 3, offset 100, size 57, terminator; its length at 167.
    assert_eq!(&good[163..167], &[3, 100, 57, 0]);
    let other = "it lists other pages, offsets or sizes than the 1 frames read";
    let cases: [(&[u8], &str); 6] = [
        (&[3, 101, 57, 0], other),
        (&[3, 100, 58, 0], other),
        (&[4, 100, 57, 0], other),
        (&[3, 100, 57, 1], other),
        // Shorter and longer indexes, each with its length field to match.
        (
            &[3, 100, 0],
            "it is 3 bytes, but the (pgno, offset, size) entries",
        ),
        (
            &[3, 100, 57, 5, 163, 1, 0],
            "more bytes follow the end marker than the 4-byte index",
        ),
    ];
    for (index, want) in cases {
        let mut bad = good[..163].to_vec();
        bad.extend_from_slice(index);
        bad.extend_from_slice(&(index.len() as u64).to_be_bytes());
        bad.extend_from_slice(&good[175..]);
        reseal(&mut bad, &pages);
        let err = decode_err(&bad, want);
        assert!(matches!(err, Error::InvalidIndex { .. }), "{want}: {err}");
        assert!(err.to_string().contains(want), "{index:?}: {err}");
    }
    // The unchanged bytes, resealed, still decode: the edits above are what is caught.
    let mut same = good.clone();
    reseal(&mut same, &pages);
    assert_eq!(same, good);
}

#[test]
fn header_rules_are_checked_against_the_pages() {
    // A snapshot (ltx/0/1, pages 1..=4) claiming 5 pages misses page 5.
    let mut file = fixture(LITESTREAM, 0, 1, 1);
    file[15] = 5;
    let err = decode_err(&file, "commit 5");
    assert!(
        matches!(
            err,
            Error::SnapshotMissingPage {
                expected: 5,
                found: None
            }
        ),
        "{err}"
    );
    // ltx/0/3 holds page 6; with commit 5 that page is out of range.
    let mut file = fixture(LITESTREAM, 0, 3, 3);
    file[15] = 5;
    let err = decode_err(&file, "commit 5");
    assert!(
        matches!(err, Error::PageBeyondCommit { pgno: 6, commit: 5 }),
        "{err}"
    );
}

#[test]
fn legacy_lz4_frame_pages_are_refused_by_name() {
    let mut file = fixture(LITESTREAM, 0, 7, 7);
    file[105] = 0;
    let err = decode_err(&file, "flags 0");
    assert!(err.to_string().contains("flags 0x0000"), "{err}");
}

#[test]
fn snapshot_post_apply_checksum_is_checked_against_its_pages() {
    let pages = pages_for(512, true, 3, 0);
    for ext in [false, true] {
        let wrong = Checksum(CHECKSUM_FLAG | 1);
        let header = Header {
            flags: if ext { FLAG_NO_CHECKSUM } else { 0 },
            page_size: 512,
            commit: 3,
            min_txid: TxId(1),
            max_txid: TxId(1),
            ext_checksums: ext.then_some((Checksum(0), wrong)),
            ..Header::default()
        };
        let (_, bytes) = encode_all(&header, &pages, wrong);
        let err = decode_err(&bytes, "wrong post-apply");
        assert!(
            matches!(err, Error::DatabaseChecksumMismatch { expected, .. } if expected == wrong),
            "{err}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    let header = fixture(LITESTREAM, 0, 2, 2)[..HEADER_SIZE].to_vec();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for len in (0..3000).step_by(7) {
        let mut garbage = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            garbage.push(x as u8);
        }
        assert!(decode_all(&garbage).is_err());
        let mut file = header.clone();
        // Start with a plausible frame header half the time.
        if len % 2 == 0 {
            file.extend_from_slice(&[0, 0, 0, 2, 0, 1, 0, 0, (len % 256) as u8, 0]);
        }
        file.extend_from_slice(&garbage);
        assert!(decode_all(&file).is_err(), "{len}");
    }
}

#[test]
fn page_checksums_come_with_the_pages() {
    for page_size in [512, 4096, 65536] {
        for snapshot in [true, false] {
            let pages = pages_for(page_size, snapshot, 6, 3);
            let header = Header {
                flags: FLAG_NO_CHECKSUM,
                page_size,
                commit: 6,
                min_txid: TxId(if snapshot { 1 } else { 4 }),
                max_txid: TxId(4),
                ..Header::default()
            };
            let (_, bytes) = encode_all(&header, &pages, Checksum(0));
            let mut dec = Decoder::with_capacity(100, &bytes[..]).unwrap();
            let mut buf = vec![0u8; page_size as usize];
            let mut seen = Vec::new();
            while let Some((pgno, ck)) = dec.next_page_checksummed(&mut buf).unwrap() {
                assert_eq!(ck, page_checksum(pgno, &buf), "{page_size} {pgno}");
                seen.push((pgno, buf.clone()));
            }
            assert_eq!(seen, pages);
            dec.finish().unwrap();
        }
    }
}

#[test]
fn page_buffers_must_be_one_page() {
    let file = fixture(LITESTREAM, 0, 7, 7);
    let mut dec = Decoder::new(&file[..]).unwrap();
    let err = dec.next_page(&mut [0u8; 512]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferSize {
                expected: 4096,
                found: 512
            }
        ),
        "{err}"
    );
    // The refused call consumed nothing.
    assert_eq!(dec.next_page(&mut [0u8; 4096]).unwrap(), Some(3));
    assert_eq!(dec.next_page(&mut [0u8; 4096]).unwrap(), None);
    assert_eq!(dec.next_page(&mut [0u8; 4096]).unwrap(), None);
    assert_eq!(dec.bytes_read(), 163);
    dec.finish().unwrap();
}

/// A reader that hands out one byte per call and is interrupted every other call.
struct Trickle<'a> {
    bytes: &'a [u8],
    interrupt: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let Some((first, rest)) = self.bytes.split_first() else {
            return Ok(0);
        };
        match buf.first_mut() {
            Some(b) => *b = *first,
            None => return Ok(0),
        }
        self.bytes = rest;
        Ok(1)
    }
}

#[test]
fn short_and_interrupted_reads_decode_the_same() {
    for (min, max) in [(1, 2), (4, 7)] {
        let file = fixture(LITESTREAM, 1, min, max);
        let expected = decode_all(&file).unwrap();
        let mut dec = Decoder::new(Trickle {
            bytes: &file,
            interrupt: false,
        })
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut pages = Vec::new();
        while let Some(pgno) = dec.next_page(&mut buf).unwrap() {
            pages.push((pgno, buf.clone()));
        }
        assert_eq!(pages, expected.pages);
        assert_eq!(dec.finish().unwrap(), expected.trailer);
    }
}
