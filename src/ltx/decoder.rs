//! Streams the pages of one LTX file from a reader and verifies everything it can.

use std::io::{self, BufRead, BufReader, Read};

use super::checksum::{
    crc64_finish, crc64_update, lock_pgno, Checksum, ZeroShift, CHECKSUM_FLAG, CRC64, CRC64_INIT,
};
use super::encoder::{check_page_sequence, next_snapshot_pgno, put_index_entry};
use super::header::{Header, HEADER_SIZE};
use super::{read_exact, Error, Result, PAGE_FLAG_SIZE, PAGE_FRAME_HEADER_SIZE, TRAILER_SIZE};

/// Size of the page index length field between the index and the trailer.
const INDEX_LENGTH_SIZE: usize = 8;

/// The bytes at the end of a file that are not page index: its length field and the trailer.
const TAIL_SIZE: usize = INDEX_LENGTH_SIZE + TRAILER_SIZE;

/// The last 16 bytes of an LTX file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Database checksum after applying the file (0 with the NoChecksum flag).
    pub post_apply_checksum: Checksum,
    /// FLAG | CRC-64 of everything before it, with pages uncompressed (see LTX.md).
    pub file_checksum: Checksum,
}

/// Reads and validates just the 100-byte header, so that a restore can plan (txids, page
/// size, commit, our checksums) without downloading or decoding the pages.
pub fn read_header<R: Read>(mut r: R) -> Result<Header> {
    let mut b = [0u8; HEADER_SIZE];
    read_exact(&mut r, &mut b, "header", 0)?;
    let header = Header::decode(&b)?;
    header.validate()?;
    Ok(header)
}

/// Streams the pages of one LTX file in order; [`Decoder::finish`] then reads the end
/// marker, page index and trailer and verifies them.
///
/// Memory stays at one compressed page and the read buffer (8 KiB, or as given to
/// [`Decoder::with_capacity`]) whatever the file's size: the index is checked against the
/// frames by comparing a CRC-64 of the index the frames call for (built as they stream past)
/// with a CRC-64 of the index read. Each page is hashed once, for both the file checksum and
/// its page checksum ([`Decoder::next_page_checksummed`]). A page handed out by
/// [`Decoder::next_page`] has passed every per-page check (order, range, lock page,
/// decompressed length) but the file as a whole is only proven by `finish()`, which checks
/// the file checksum: callers must not treat pages as committed before it returns `Ok`.
///
/// `finish()` verifies: the file checksum; that the page index lists exactly the frames
/// seen (pgno, offset, size); that nothing follows the trailer; the trailer's post-apply
/// checksum against the flags; and for a snapshot that claims a post-apply checksum
/// (standard or our extension), that it matches the pages.
pub struct Decoder<R: Read> {
    r: BufReader<R>,
    header: Header,
    /// Raw CRC-64 register of the file checksum so far (see `checksum::crc64_update`).
    hash: u64,
    /// Joins a page hashed once into both the file checksum and its page checksum.
    shift: &'static ZeroShift,
    /// Bytes read so far.
    offset: u64,
    /// Frames read so far.
    frames: u64,
    /// CRC-64 of the page index the frames read call for, and its length.
    expected_index: crc::Digest<'static, u64, crc::Table<16>>,
    expected_index_len: u64,
    /// Scratch space for one encoded index entry.
    entry: Vec<u8>,
    /// Scratch space for one compressed page.
    compressed: Vec<u8>,
    /// Largest LZ4 payload one page can need; anything larger is refused before allocating.
    max_compressed: usize,
    prev_pgno: u32,
    lock_pgno: u32,
    /// True once the end marker has been read.
    pages_done: bool,
    /// XOR of page checksums, kept for snapshots that claim a post-apply checksum.
    snapshot_xor: Option<u64>,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header, buffering reads by 8 KiB.
    pub fn new(r: R) -> Result<Self> {
        Self::with_capacity(8 * 1024, r)
    }

    /// Like [`Decoder::new`] with a read buffer of `capacity` bytes: a caller streaming a
    /// large file hands over the unbuffered reader and a large buffer, so that every byte is
    /// copied once instead of through two buffers.
    pub fn with_capacity(capacity: usize, r: R) -> Result<Self> {
        let mut r = BufReader::with_capacity(capacity, r);
        let mut b = [0u8; HEADER_SIZE];
        read_exact(&mut r, &mut b, "header", 0)?;
        let header = Header::decode(&b)?;
        header.validate()?;
        let shift = ZeroShift::for_page_size(header.page_size).ok_or_else(|| {
            let reason = format!("page size {} is not supported", header.page_size);
            Error::InvalidHeader { reason }
        })?;
        let hash = crc64_update(CRC64_INIT, &b);
        let claims_post = !header.no_checksum() || header.ext_checksums.is_some();
        Ok(Decoder {
            r,
            hash,
            shift,
            offset: HEADER_SIZE as u64,
            frames: 0,
            expected_index: CRC64.digest(),
            expected_index_len: 0,
            entry: Vec::new(),
            compressed: Vec::new(),
            max_compressed: lz4_flex::block::get_maximum_output_size(header.page_size as usize),
            prev_pgno: 0,
            lock_pgno: lock_pgno(header.page_size),
            pages_done: false,
            snapshot_xor: (header.is_snapshot() && claims_post).then_some(0),
            header,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// Decodes the next page into `buf` (exactly one page long) and returns its page number;
    /// `Ok(None)` after the last page (the end marker was read).
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>> {
        Ok(self.next_page_checksummed(buf)?.map(|(pgno, _)| pgno))
    }

    /// Like [`Decoder::next_page`], also returning the page's checksum
    /// ([`super::page_checksum`]), which the decoder gets almost free from the one pass over
    /// the page that the file checksum needs: restore keeps its database checksum with it
    /// instead of hashing every page again.
    pub fn next_page_checksummed(&mut self, buf: &mut [u8]) -> Result<Option<(u32, Checksum)>> {
        if self.pages_done {
            return Ok(None);
        }
        let page_size = self.header.page_size as usize;
        if buf.len() != page_size {
            return Err(Error::BufferSize {
                expected: page_size,
                found: buf.len(),
            });
        }
        let frame_offset = self.offset;
        let mut fh = [0u8; PAGE_FRAME_HEADER_SIZE];
        read_exact(&mut self.r, &mut fh[..6], "page frame header", frame_offset)?;
        if fh[..6] == [0u8; 6] {
            return self.end_of_pages().map(|()| None);
        }
        let pgno = u32::from_be_bytes([fh[0], fh[1], fh[2], fh[3]]);
        let flags = u16::from_be_bytes([fh[4], fh[5]]);
        self.check_frame(frame_offset, pgno, flags)?;
        read_exact(
            &mut self.r,
            &mut fh[6..],
            "page frame size",
            frame_offset + 6,
        )?;
        let size = u32::from_be_bytes([fh[6], fh[7], fh[8], fh[9]]) as usize;
        if size == 0 || size > self.max_compressed {
            let reason = format!(
                "page {pgno}: compressed size {size} is impossible for a {page_size}-byte page"
            );
            return Err(Error::InvalidPageFrame {
                offset: frame_offset,
                reason,
            });
        }
        // Straight from the read buffer when the payload is all in it (nearly always with a
        // large buffer): one copy of every page fewer.
        let buffered = self.r.buffer();
        if buffered.len() >= size {
            decompress_page(pgno, &buffered[..size], buf)?;
            self.r.consume(size);
        } else {
            self.compressed.resize(size, 0);
            read_exact(
                &mut self.r,
                &mut self.compressed,
                "page data",
                frame_offset + 10,
            )?;
            decompress_page(pgno, &self.compressed, buf)?;
        }

        // One pass over the page, joined to both checksums (see `ZeroShift`).
        let page_reg = crc64_update(0, buf);
        self.hash = self.shift.apply(crc64_update(self.hash, &fh)) ^ page_reg;
        let checksum = self.shift.page_checksum(pgno, page_reg);
        let frame_size = (PAGE_FRAME_HEADER_SIZE + size) as u64;
        self.offset += frame_size;
        self.expect_index_entry(pgno, frame_offset, frame_size);
        self.frames += 1;
        self.prev_pgno = pgno;
        if let Some(xor) = self.snapshot_xor.as_mut() {
            *xor ^= checksum.0;
        }
        Ok(Some((pgno, checksum)))
    }

    /// Reads any pages the caller did not, then the page index and trailer, and verifies the
    /// whole file (see the type's documentation). Returns the trailer.
    pub fn finish(mut self) -> Result<Trailer> {
        let mut scratch = vec![0u8; self.header.page_size as usize];
        while self.next_page(&mut scratch)?.is_some() {}

        self.expected_index.update(&[0]); // the index terminator
        let expected_len = self.expected_index_len + 1;
        let tail = self.read_tail(expected_len)?;
        let expected_crc = self.expected_index.clone().finalize();
        if tail.overlong {
            return Err(self.overlong_tail(tail.index_crc == expected_crc, expected_len));
        }
        check_index_length(tail.index_len, tail.length_field)?;
        let computed = Checksum(CHECKSUM_FLAG | crc64_finish(self.hash));
        if computed != tail.trailer.file_checksum {
            let stored = tail.trailer.file_checksum;
            return Err(Error::FileChecksumMismatch { stored, computed });
        }
        if tail.index_len != expected_len || tail.index_crc != expected_crc {
            return Err(self.index_mismatch(tail.index_len, expected_len));
        }
        self.check_trailer(&tail.trailer)?;
        Ok(tail.trailer)
    }

    /// Adds the index entry a frame calls for to the expected index.
    fn expect_index_entry(&mut self, pgno: u32, offset: u64, frame_size: u64) {
        self.entry.clear();
        put_index_entry(&mut self.entry, pgno, offset, frame_size);
        self.expected_index.update(&self.entry);
        self.expected_index_len += self.entry.len() as u64;
    }

    /// The end marker: a snapshot must have reached its commit by now.
    fn end_of_pages(&mut self) -> Result<()> {
        let next = next_snapshot_pgno(self.prev_pgno, self.lock_pgno);
        if self.header.is_snapshot() && next <= self.header.commit {
            return Err(Error::SnapshotMissingPage {
                expected: next,
                found: None,
            });
        }
        self.hash = crc64_update(self.hash, &[0u8; 6]);
        self.offset += 6;
        self.pages_done = true;
        Ok(())
    }

    /// The rules on a frame header: known flags, then the page number's range and order.
    fn check_frame(&self, offset: u64, pgno: u32, flags: u16) -> Result<()> {
        if flags != PAGE_FLAG_SIZE {
            let reason = format!(
                "page {pgno}: flags 0x{flags:04x}, expected 0x0001 (raw LZ4 block with size; \
                 older LZ4-frame pages are not supported)"
            );
            return Err(Error::InvalidPageFrame { offset, reason });
        }
        check_page_sequence(&self.header, self.lock_pgno, self.prev_pgno, pgno)
    }

    /// Streams what follows the end marker. Everything but the last 24 bytes is page index:
    /// it goes into the file checksum and its own CRC as it passes (only its first
    /// `expected_len` bytes into the latter). Reads at most one byte more than a correct file
    /// has, so that trailing bytes are seen without reading an unbounded amount.
    fn read_tail(&mut self, expected_len: u64) -> Result<Tail> {
        let limit = expected_len + TAIL_SIZE as u64 + 1;
        let mut input = (&mut self.r).take(limit);
        let mut held = Vec::with_capacity(TAIL_SIZE + 4096);
        let mut chunk = [0u8; 4096];
        let mut index_len = 0u64;
        let mut index_crc = CRC64.digest();
        loop {
            let n = match input.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    let context = "read page index and trailer";
                    return Err(Error::Io { context, source });
                }
            };
            held.extend_from_slice(&chunk[..n]);
            let Some(passed) = held.len().checked_sub(TAIL_SIZE) else {
                continue;
            };
            self.hash = crc64_update(self.hash, &held[..passed]);
            let room = expected_len.saturating_sub(index_len).min(passed as u64) as usize;
            index_crc.update(&held[..room]);
            index_len += passed as u64;
            held.drain(..passed);
        }
        if index_len == 0 {
            let section = "page index and trailer";
            return Err(Error::Truncated {
                section,
                offset: self.offset,
            });
        }
        // What the file checksum covers of the tail: the length field and post-apply.
        self.hash = crc64_update(self.hash, &held[..16]);
        Ok(Tail {
            index_len,
            index_crc: index_crc.finalize(),
            length_field: be_u64(&held[..8]),
            trailer: Trailer {
                post_apply_checksum: Checksum(be_u64(&held[8..16])),
                file_checksum: Checksum(be_u64(&held[16..24])),
            },
            overlong: index_len + TAIL_SIZE as u64 == limit,
        })
    }

    /// The error for a file longer than its frames allow: trailing bytes if it starts with
    /// the right index, otherwise an index that does not match the frames.
    fn overlong_tail(&self, index_matches: bool, expected_len: u64) -> Error {
        if index_matches {
            let offset = self.offset + expected_len + TAIL_SIZE as u64;
            return Error::TrailingBytes { offset };
        }
        let reason = format!(
            "more bytes follow the end marker than the {expected_len}-byte index of the {} \
             frames read and the trailer",
            self.frames
        );
        Error::InvalidIndex { reason }
    }

    /// The error for an index that does not list the frames read.
    fn index_mismatch(&self, found_len: u64, expected_len: u64) -> Error {
        let frames = self.frames;
        let reason = if found_len != expected_len {
            format!(
                "it is {found_len} bytes, but the (pgno, offset, size) entries of the {frames} \
                 frames read take {expected_len}"
            )
        } else {
            format!("it lists other pages, offsets or sizes than the {frames} frames read")
        };
        Error::InvalidIndex { reason }
    }

    /// The trailer's post-apply checksum against the flags, and a snapshot's against its
    /// pages.
    fn check_trailer(&self, trailer: &Trailer) -> Result<()> {
        let post = trailer.post_apply_checksum;
        let invalid = |reason: String| Err(Error::InvalidTrailer { reason });
        if self.header.no_checksum() {
            if post.0 != 0 {
                return invalid(format!(
                    "post-apply checksum {post} must be 0 with NoChecksum"
                ));
            }
        } else if !post.is_flagged() {
            return invalid(format!("post-apply checksum {post} must have bit 63 set"));
        } else if self.header.commit == 0 && post != Checksum::EMPTY {
            // The same rule the encoder keeps: what decodes here must also re-encode (compact).
            return invalid(format!(
                "post-apply checksum {post} of an empty database must be {}",
                Checksum::EMPTY
            ));
        } else if let Some((_, ext_post)) = self.header.ext_checksums {
            if ext_post != post {
                return invalid(format!(
                    "post-apply checksum {post} differs from the header extension's {ext_post}"
                ));
            }
        }
        let Some(xor) = self.snapshot_xor else {
            return Ok(());
        };
        let found = Checksum(CHECKSUM_FLAG | xor);
        let claims = [
            (!self.header.no_checksum()).then_some(post),
            self.header.ext_checksums.map(|(_, post)| post),
        ];
        for expected in claims.into_iter().flatten() {
            if expected != found {
                let what = "snapshot post-apply vs its pages";
                return Err(Error::DatabaseChecksumMismatch {
                    what,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// Decompresses one raw LZ4 block into `buf`, which it must fill exactly.
fn decompress_page(pgno: u32, compressed: &[u8], buf: &mut [u8]) -> Result<()> {
    match lz4_flex::block::decompress_into(compressed, buf) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(Error::PageLength {
            pgno,
            expected: buf.len(),
            found: n,
        }),
        Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => Err(Error::Decompress {
            pgno,
            reason: format!("data decompresses to more than the page size {}", buf.len()),
        }),
        Err(e) => Err(Error::Decompress {
            pgno,
            reason: e.to_string(),
        }),
    }
}

/// The index length field must give the index's length (readers locate the index with it).
fn check_index_length(actual: u64, stored: u64) -> Result<()> {
    if stored != actual {
        let reason = format!(
            "length field says {stored} bytes, but {actual} bytes lie between the end marker and \
             the length field (file truncated or corrupt)"
        );
        return Err(Error::InvalidIndex { reason });
    }
    Ok(())
}

/// What follows the end marker, once read.
struct Tail {
    /// Bytes between the end marker and the length field.
    index_len: u64,
    /// CRC-64 of the first (expected length) of those bytes.
    index_crc: u64,
    /// The index length field.
    length_field: u64,
    /// The trailer.
    trailer: Trailer,
    /// The file goes on past where the index and trailer of the frames read must end.
    overlong: bool,
}

/// Big-endian u64 from an 8-byte slice.
fn be_u64(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(b);
    u64::from_be_bytes(v)
}

#[cfg(test)]
mod tests {
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
}
