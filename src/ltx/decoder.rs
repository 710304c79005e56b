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
#[path = "decoder_tests.rs"]
mod tests;
