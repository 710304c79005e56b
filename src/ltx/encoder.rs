//! Streams one LTX file to a writer, one page at a time.

use std::io::Write;

use super::checksum::{lock_pgno, Checksum, CHECKSUM_FLAG, CRC64};
use super::decoder::Trailer;
use super::header::{Header, HEADER_SIZE};
use super::{varint, Error, Result, END_MARKER_SIZE, PAGE_FLAG_SIZE, PAGE_FRAME_HEADER_SIZE};

/// Streams one LTX file: the header, then pages in strictly ascending pgno (each compressed
/// as a raw LZ4 block), then [`Encoder::finish`] writes the end marker, page index and
/// trailer.
///
/// Nothing is buffered beyond one compressed page and the encoded page index (about 10
/// bytes per page, which must wait for the end), so a snapshot of any size streams straight
/// to its spool file. The file checksum and the offsets for the index are tracked as bytes
/// go out.
///
/// It refuses what a reader would reject: a page past `commit`, the lock page, pages out of
/// order, a page of the wrong length, and a snapshot (min txid 1) missing any page
/// 1..=commit other than the lock page. Refused pages write nothing, so the encoder stays
/// usable; a failed write poisons it, since the output is then incomplete.
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    hash: crc::Digest<'static, u64, crc::Table<16>>,
    /// Bytes written so far: the next frame's offset.
    offset: u64,
    /// The page index entries so far, already encoded.
    index: Vec<u8>,
    /// Scratch space for one compressed page.
    compressed: Vec<u8>,
    /// The last page written (0 before the first).
    prev_pgno: u32,
    lock_pgno: u32,
    poisoned: bool,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it.
    pub fn new(w: W, header: &Header) -> Result<Self> {
        header.validate()?;
        let page_size = header.page_size as usize;
        let mut enc = Encoder {
            w,
            header: header.clone(),
            hash: CRC64.digest(),
            offset: 0,
            index: Vec::new(),
            compressed: vec![0; lz4_flex::block::get_maximum_output_size(page_size)],
            prev_pgno: 0,
            lock_pgno: lock_pgno(header.page_size),
            poisoned: false,
        };
        let bytes: [u8; HEADER_SIZE] = header.encode();
        enc.write_hashed(&bytes, "write header")?;
        Ok(enc)
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Compresses and writes page `pgno`. `page` must be exactly one page long.
    pub fn encode_page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        self.check_usable()?;
        self.check_page(pgno, page)?;
        let mut payload = std::mem::take(&mut self.compressed);
        let written = match lz4_flex::block::compress_into(page, &mut payload) {
            Ok(n) => self.write_frame(pgno, page, &payload[..n]),
            // The buffer has LZ4's worst-case size for one page, so this cannot happen; map
            // it anyway rather than unwrap.
            Err(e) => Err(Error::Io {
                context: "compress page",
                source: std::io::Error::other(e.to_string()),
            }),
        };
        self.compressed = payload;
        written
    }

    /// Writes one frame: header, then `payload` (the LZ4 block of `page`), recording it for
    /// the index. The file checksum covers the uncompressed page, not the LZ4 bytes.
    fn write_frame(&mut self, pgno: u32, page: &[u8], payload: &[u8]) -> Result<()> {
        let frame_offset = self.offset;
        let mut frame_header = [0u8; PAGE_FRAME_HEADER_SIZE];
        frame_header[0..4].copy_from_slice(&pgno.to_be_bytes());
        frame_header[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        frame_header[6..10].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        self.write_hashed(&frame_header, "write page frame header")?;
        self.hash.update(page);
        self.write_raw(payload, "write page data")?;
        let frame_size = (PAGE_FRAME_HEADER_SIZE + payload.len()) as u64;
        put_index_entry(&mut self.index, pgno, frame_offset, frame_size);
        self.prev_pgno = pgno;
        Ok(())
    }

    /// Writes a page with a given LZ4 payload (another compressor's), so tests can compare
    /// our framing with Litestream's byte for byte.
    #[cfg(test)]
    pub(crate) fn encode_page_with_payload(
        &mut self,
        pgno: u32,
        page: &[u8],
        payload: &[u8],
    ) -> Result<()> {
        self.check_usable()?;
        self.check_page(pgno, page)?;
        self.write_frame(pgno, page, payload)
    }

    /// Writes the end marker, the page index and the trailer, and hands back the trailer and
    /// the writer (not flushed: the caller decides about fsync).
    ///
    /// `post_apply` goes in the trailer only when the NoChecksum flag is clear; with the flag
    /// set the trailer's post-apply is 0, as Litestream writes it, and our extension carries
    /// the real value in the header.
    pub fn finish(mut self, post_apply: Checksum) -> Result<(Trailer, W)> {
        self.check_usable()?;
        self.check_complete()?;
        let post_apply = self.trailer_post_apply(post_apply)?;
        self.write_hashed(&[0u8; END_MARKER_SIZE], "write end marker")?;
        let mut index = std::mem::take(&mut self.index);
        varint::put(&mut index, 0);
        self.write_hashed(&index, "write page index")?;
        self.write_hashed(
            &(index.len() as u64).to_be_bytes(),
            "write page index length",
        )?;
        self.write_hashed(&post_apply.0.to_be_bytes(), "write trailer")?;
        let file_checksum = Checksum(CHECKSUM_FLAG | self.hash.clone().finalize());
        self.write_raw(&file_checksum.0.to_be_bytes(), "write trailer")?;
        let trailer = Trailer {
            post_apply_checksum: post_apply,
            file_checksum,
        };
        Ok((trailer, self.w))
    }

    /// Refuses to go on after a failed write.
    fn check_usable(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// The rules on one page: length, range, lock page, order, and snapshot completeness.
    fn check_page(&self, pgno: u32, page: &[u8]) -> Result<()> {
        let expected = self.header.page_size as usize;
        if page.len() != expected {
            return Err(Error::PageLength {
                pgno,
                expected,
                found: page.len(),
            });
        }
        check_page_sequence(&self.header, self.lock_pgno, self.prev_pgno, pgno)
    }

    /// A snapshot must have reached its commit.
    fn check_complete(&self) -> Result<()> {
        let next = next_snapshot_pgno(self.prev_pgno, self.lock_pgno);
        if self.header.is_snapshot() && next <= self.header.commit {
            return Err(Error::SnapshotMissingPage {
                expected: next,
                found: None,
            });
        }
        Ok(())
    }

    /// The post-apply checksum for the trailer, checked against the header's flags and our
    /// extension (superfly/ltx's `Trailer.Validate` rules).
    fn trailer_post_apply(&self, post_apply: Checksum) -> Result<Checksum> {
        if self.header.no_checksum() {
            return Ok(Checksum(0));
        }
        let invalid = |reason: String| Err(Error::InvalidTrailer { reason });
        if !post_apply.is_flagged() {
            return invalid(format!(
                "post-apply checksum {post_apply} must have bit 63 set"
            ));
        }
        if self.header.commit == 0 && post_apply != Checksum::EMPTY {
            return invalid(format!(
                "post-apply checksum {post_apply} of an empty database must be {}",
                Checksum::EMPTY
            ));
        }
        if let Some((_, ext_post)) = self.header.ext_checksums {
            if ext_post != post_apply {
                return invalid(format!(
                    "post-apply checksum {post_apply} differs from the header extension's {ext_post}"
                ));
            }
        }
        Ok(post_apply)
    }

    /// Writes bytes that the file checksum covers.
    fn write_hashed(&mut self, b: &[u8], context: &'static str) -> Result<()> {
        self.hash.update(b);
        self.write_raw(b, context)
    }

    /// Writes bytes and counts them; a failure poisons the encoder.
    fn write_raw(&mut self, b: &[u8], context: &'static str) -> Result<()> {
        if let Err(source) = self.w.write_all(b) {
            self.poisoned = true;
            return Err(Error::Io { context, source });
        }
        self.offset += b.len() as u64;
        Ok(())
    }
}

/// The ordering rules every page frame obeys, shared by the encoder and the decoder: within
/// 1..=commit, never the lock page, strictly ascending, and in a snapshot the very next page.
pub(crate) fn check_page_sequence(
    header: &Header,
    lock_pgno: u32,
    prev_pgno: u32,
    pgno: u32,
) -> Result<()> {
    let commit = header.commit;
    if pgno == 0 || pgno > commit {
        return Err(Error::PageBeyondCommit { pgno, commit });
    }
    if pgno == lock_pgno {
        return Err(Error::LockPage { pgno });
    }
    if pgno <= prev_pgno {
        return Err(Error::PageOutOfOrder {
            prev: prev_pgno,
            pgno,
        });
    }
    let next = next_snapshot_pgno(prev_pgno, lock_pgno);
    if header.is_snapshot() && pgno != next {
        return Err(Error::SnapshotMissingPage {
            expected: next,
            found: Some(pgno),
        });
    }
    Ok(())
}

/// The page a snapshot must hold after `prev` (0 = none yet): the next one, skipping the
/// lock page.
pub(crate) fn next_snapshot_pgno(prev: u32, lock_pgno: u32) -> u32 {
    let next = prev.saturating_add(1);
    if next == lock_pgno {
        next.saturating_add(1)
    } else {
        next
    }
}

/// Appends one page index entry: the pgno, the frame's absolute offset and its size (frame
/// header plus payload), as unsigned varints. Entries go in pgno order and a 0 ends them.
pub(crate) fn put_index_entry(out: &mut Vec<u8>, pgno: u32, offset: u64, frame_size: u64) {
    varint::put(out, u64::from(pgno));
    varint::put(out, offset);
    varint::put(out, frame_size);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::test_page;
    use super::super::{Decoder, TxId, FLAG_NO_CHECKSUM};
    use super::*;

    fn header(page_size: u32, min: u64, max: u64, commit: u32) -> Header {
        Header {
            flags: FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid: TxId(min),
            max_txid: TxId(max),
            timestamp_ms: 1_700_000_000_000,
            ..Header::default()
        }
    }

    #[test]
    fn writes_header_first_and_ends_with_the_trailer() {
        let h = header(512, 2, 2, 3);
        let mut enc = Encoder::new(Vec::new(), &h).unwrap();
        enc.encode_page(2, &test_page(2, 512, 0)).unwrap();
        let (trailer, bytes) = enc.finish(Checksum(0)).unwrap();
        assert_eq!(&bytes[..HEADER_SIZE], &h.encode());
        assert_eq!(&bytes[bytes.len() - 16..bytes.len() - 8], &[0u8; 8]);
        assert_eq!(
            &bytes[bytes.len() - 8..],
            &trailer.file_checksum.0.to_be_bytes()
        );
        assert!(trailer.file_checksum.is_flagged());
        // Frame: pgno 2, flags 0x0001, then the compressed size.
        assert_eq!(&bytes[100..106], &[0, 0, 0, 2, 0, 1]);
        // Index: one entry (2, 100, frame size), then 0, then its length.
        let frame_size = 10 + u32::from_be_bytes(bytes[106..110].try_into().unwrap());
        let mut index = Vec::new();
        put_index_entry(&mut index, 2, 100, u64::from(frame_size));
        index.push(0);
        let index_at = 100 + frame_size as usize + 6;
        assert_eq!(&bytes[index_at - 6..index_at], &[0u8; 6]);
        assert_eq!(&bytes[index_at..index_at + index.len()], &index[..]);
        assert_eq!(bytes.len(), index_at + index.len() + 8 + 16);
    }

    #[test]
    fn rejects_invalid_headers_and_pages() {
        let err = Encoder::new(Vec::new(), &header(1000, 2, 2, 3))
            .err()
            .unwrap();
        assert!(matches!(err, Error::InvalidHeader { .. }), "{err}");

        let mut enc = Encoder::new(Vec::new(), &header(512, 2, 2, 3)).unwrap();
        let page = test_page(1, 512, 0);
        let err = enc.encode_page(2, &page[..511]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::PageLength {
                    pgno: 2,
                    expected: 512,
                    found: 511
                }
            ),
            "{err}"
        );
        let err = enc.encode_page(4, &page).unwrap_err();
        assert!(
            matches!(err, Error::PageBeyondCommit { pgno: 4, commit: 3 }),
            "{err}"
        );
        let err = enc.encode_page(0, &page).unwrap_err();
        assert!(
            matches!(err, Error::PageBeyondCommit { pgno: 0, .. }),
            "{err}"
        );
        enc.encode_page(2, &page).unwrap();
        let err = enc.encode_page(2, &page).unwrap_err();
        assert!(
            matches!(err, Error::PageOutOfOrder { prev: 2, pgno: 2 }),
            "{err}"
        );
        let err = enc.encode_page(1, &page).unwrap_err();
        assert!(
            matches!(err, Error::PageOutOfOrder { prev: 2, pgno: 1 }),
            "{err}"
        );
        // Refused pages wrote nothing: the file still decodes.
        enc.encode_page(3, &page).unwrap();
        let (_, bytes) = enc.finish(Checksum(0)).unwrap();
        let mut dec = Decoder::new(&bytes[..]).unwrap();
        let mut buf = vec![0; 512];
        assert_eq!(dec.next_page(&mut buf).unwrap(), Some(2));
        assert_eq!(dec.next_page(&mut buf).unwrap(), Some(3));
        assert_eq!(dec.next_page(&mut buf).unwrap(), None);
        dec.finish().unwrap();
    }

    #[test]
    fn never_writes_the_lock_page() {
        let lock = lock_pgno(65536);
        let mut enc = Encoder::new(Vec::new(), &header(65536, 2, 2, lock + 1)).unwrap();
        let page = test_page(1, 65536, 0);
        enc.encode_page(lock - 1, &page).unwrap();
        let err = enc.encode_page(lock, &page).unwrap_err();
        assert!(
            matches!(err, Error::LockPage { pgno } if pgno == lock),
            "{err}"
        );
        assert!(err.to_string().contains("lock page"));
        enc.encode_page(lock + 1, &page).unwrap();
        enc.finish(Checksum(0)).unwrap();
    }

    #[test]
    fn snapshots_must_hold_every_page() {
        let page = test_page(1, 512, 0);
        let mut enc = Encoder::new(Vec::new(), &header(512, 1, 1, 3)).unwrap();
        let err = enc.encode_page(2, &page).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SnapshotMissingPage {
                    expected: 1,
                    found: Some(2)
                }
            ),
            "{err}"
        );
        enc.encode_page(1, &page).unwrap();
        let err = enc.encode_page(3, &page).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SnapshotMissingPage {
                    expected: 2,
                    found: Some(3)
                }
            ),
            "{err}"
        );
        enc.encode_page(2, &page).unwrap();
        let err = enc.finish(Checksum(0)).err().unwrap();
        assert!(
            matches!(
                err,
                Error::SnapshotMissingPage {
                    expected: 3,
                    found: None
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("missing page 3"));
    }

    #[test]
    fn snapshot_page_sequence_skips_the_lock_page() {
        assert_eq!(next_snapshot_pgno(0, 16385), 1);
        assert_eq!(next_snapshot_pgno(16383, 16385), 16384);
        assert_eq!(next_snapshot_pgno(16384, 16385), 16386);
        assert_eq!(next_snapshot_pgno(u32::MAX, 16385), u32::MAX);
    }

    #[test]
    fn empty_snapshot_of_an_empty_database() {
        let mut h = header(4096, 1, 1, 0);
        h.flags = 0;
        let enc = Encoder::new(Vec::new(), &h).unwrap();
        let err = Encoder::new(Vec::new(), &h)
            .unwrap()
            .finish(Checksum(CHECKSUM_FLAG | 1));
        assert!(matches!(err, Err(Error::InvalidTrailer { .. })));
        let (trailer, bytes) = enc.finish(Checksum::EMPTY).unwrap();
        assert_eq!(trailer.post_apply_checksum, Checksum::EMPTY);
        let dec = Decoder::new(&bytes[..]).unwrap();
        assert_eq!(dec.finish().unwrap(), trailer);
    }

    #[test]
    fn trailer_post_apply_follows_the_flags() {
        let page = test_page(2, 512, 0);
        // NoChecksum: the argument is ignored and 0 is written.
        let mut enc = Encoder::new(Vec::new(), &header(512, 2, 2, 2)).unwrap();
        enc.encode_page(2, &page).unwrap();
        let (trailer, _) = enc.finish(Checksum(CHECKSUM_FLAG | 9)).unwrap();
        assert_eq!(trailer.post_apply_checksum, Checksum(0));

        // Standard: must be flagged, and equal to the extension's when both are present.
        let mut h = header(512, 2, 2, 2);
        h.flags = 0;
        h.pre_apply_checksum = Checksum(CHECKSUM_FLAG | 1);
        let err = Encoder::new(Vec::new(), &h)
            .unwrap()
            .finish(Checksum(5))
            .err()
            .unwrap();
        assert!(err.to_string().contains("bit 63"), "{err}");
        h.ext_checksums = Some((h.pre_apply_checksum, Checksum(CHECKSUM_FLAG | 2)));
        let enc = Encoder::new(Vec::new(), &h).unwrap();
        let err = enc.finish(Checksum(CHECKSUM_FLAG | 3)).err().unwrap();
        assert!(err.to_string().contains("extension"), "{err}");
        let (trailer, _) = Encoder::new(Vec::new(), &h)
            .unwrap()
            .finish(Checksum(CHECKSUM_FLAG | 2))
            .unwrap();
        assert_eq!(trailer.post_apply_checksum, Checksum(CHECKSUM_FLAG | 2));
    }

    /// A writer that fails after `limit` bytes.
    struct FailingWriter {
        limit: usize,
        written: usize,
    }

    impl Write for FailingWriter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.written + b.len() > self.limit {
                return Err(std::io::Error::other("disk full"));
            }
            self.written += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_poisons_the_encoder() {
        let w = FailingWriter {
            limit: 120,
            written: 0,
        };
        let mut enc = Encoder::new(w, &header(512, 2, 2, 3)).unwrap();
        let err = enc.encode_page(2, &test_page(2, 512, 0)).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        let err = enc.encode_page(3, &test_page(3, 512, 0)).unwrap_err();
        assert!(matches!(err, Error::Poisoned), "{err}");
        assert!(matches!(enc.finish(Checksum(0)), Err(Error::Poisoned)));
    }
}
