//! Merging LTX files: contiguous files become one, as Litestream's level compaction and
//! snapshots merge them ([`compact`], [`compact_with`]).

use std::io::{Read, Write};

use super::checksum::Checksum;
use super::decoder::{Decoder, Trailer};
use super::encoder::Encoder;
use super::header::{Header, FLAG_NO_CHECKSUM};
use super::{Error, Result};

/// One input being merged: its decoder and its current (not yet merged) page.
struct Input<R: Read> {
    dec: Decoder<R>,
    page: Vec<u8>,
    /// Page number of `page`, `None` once the input's pages are exhausted.
    pgno: Option<u32>,
}

impl<R: Read> Input<R> {
    /// Loads the input's next page into `page`.
    fn advance(&mut self) -> Result<()> {
        self.pgno = self.dec.next_page(&mut self.page)?;
        Ok(())
    }
}

/// What [`compact_with`] may set differently from the inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactOptions {
    /// The output's timestamp (ms since the epoch) instead of the last input's: a snapshot
    /// is stamped with the time it was taken, as Litestream stamps its level-9 files.
    pub timestamp_ms: Option<i64>,
}

/// Merges contiguous LTX files (oldest first) into one file written to `w`, and returns
/// its header and trailer.
///
/// Each input must start at or before the previous one's max txid + 1 and end after it
/// (superfly/ltx's `IsContiguous`): inputs may overlap, as a restore plan's files do when a
/// snapshot ends inside a compacted file. A file applied over a later state than its own
/// start still gives its own end state, since it holds the newest copy of every page
/// changed in its whole range.
///
/// The newest copy of each page wins, and pages past the last file's commit are dropped.
/// The output header takes min txid from the first input and max txid, commit and timestamp
/// from the last; pre-apply checksums (standard and our extension's) from the first and
/// post-apply from the last; NoChecksum if any input has it. WAL fields and node id are 0,
/// as superfly/ltx's compactor (and so Litestream 0.5.17's L1 files) writes them: a merged
/// file comes from no single WAL segment. Our extension is kept only if every input has it
/// (one file without it breaks the chain of proof), and where one input starts right after
/// the previous one, its extension pre-apply must equal the previous one's post-apply.
///
/// Inputs are read as streams in one k-way merge, so memory is a page and a read buffer per
/// input whatever the data size (plus the output's page index, ~10 bytes per page written). Every input's file checksum is verified (by its decoder's
/// `finish`) before the output's trailer is written, so a bad input leaves the output
/// incomplete: callers must discard it on error.
pub fn compact<R: Read, W: Write>(inputs: Vec<R>, w: W) -> Result<(Header, Trailer)> {
    compact_with(inputs, w, CompactOptions::default())
}

/// [`compact`], with the output's header adjusted by `opts`.
pub fn compact_with<R: Read, W: Write>(
    inputs: Vec<R>,
    w: W,
    opts: CompactOptions,
) -> Result<(Header, Trailer)> {
    let mut inputs = open_inputs(inputs)?;
    let headers: Vec<Header> = inputs.iter().map(|i| i.dec.header().clone()).collect();
    check_sequence(&headers)?;
    let mut header = merged_header(&headers);
    if let Some(ts) = opts.timestamp_ms {
        header.timestamp_ms = ts;
    }
    let mut enc = Encoder::new(w, &header)?;

    for (i, input) in inputs.iter_mut().enumerate() {
        input.advance().map_err(|e| input_error(&headers, i, e))?;
    }
    while let Some(pgno) = inputs.iter().filter_map(|i| i.pgno).min() {
        // The newest input holding the page wins; every input holding it moves on.
        if let Some(newest) = inputs.iter().rev().find(|i| i.pgno == Some(pgno)) {
            if pgno <= header.commit {
                enc.encode_page(pgno, &newest.page)?;
            }
        }
        for (i, input) in inputs.iter_mut().enumerate() {
            if input.pgno == Some(pgno) {
                input.advance().map_err(|e| input_error(&headers, i, e))?;
            }
        }
    }

    let mut last_trailer = None;
    for (i, input) in inputs.into_iter().enumerate() {
        last_trailer = Some(
            input
                .dec
                .finish()
                .map_err(|e| input_error(&headers, i, e))?,
        );
    }
    let post_apply = last_trailer.map_or(Checksum(0), |t| t.post_apply_checksum);
    let (trailer, mut w) = enc.finish(post_apply)?;
    // Flush here so a buffered writer's error is reported, not lost when it is dropped.
    w.flush().map_err(|source| Error::Io {
        context: "flush compacted file",
        source,
    })?;
    Ok((header, trailer))
}

/// Opens a decoder (reading and validating the header) for each input.
fn open_inputs<R: Read>(readers: Vec<R>) -> Result<Vec<Input<R>>> {
    if readers.is_empty() {
        return Err(Error::NoInputs);
    }
    readers
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let dec = Decoder::new(r).map_err(|e| Error::Input {
                index,
                range: None,
                source: Box::new(e),
            })?;
            let page = vec![0; dec.header().page_size as usize];
            Ok(Input {
                dec,
                page,
                pgno: None,
            })
        })
        .collect()
}

/// Inputs must share a page size, follow each other without gaps (overlaps allowed, see
/// [`compact_with`]), and (where one starts right after the other and both carry our
/// extension) chain their database checksums.
fn check_sequence(headers: &[Header]) -> Result<()> {
    for (i, pair) in headers.windows(2).enumerate() {
        let (prev, next) = (&pair[0], &pair[1]);
        let err = |e: Error| Err(input_error(headers, i + 1, e));
        if next.page_size != prev.page_size {
            return err(Error::PageSizeMismatch {
                expected: prev.page_size,
                found: next.page_size,
            });
        }
        let adjacent = prev.max_txid.0.checked_add(1) == Some(next.min_txid.0);
        let overlapping = next.min_txid <= prev.max_txid && next.max_txid > prev.max_txid;
        if !adjacent && !overlapping {
            return err(Error::NotContiguous {
                prev_max: prev.max_txid,
                next_min: next.min_txid,
                next_max: next.max_txid,
            });
        }
        if let (true, Some((_, prev_post)), Some((next_pre, _))) =
            (adjacent, prev.ext_checksums, next.ext_checksums)
        {
            if next_pre != prev_post {
                let what = "pre-apply vs the previous file's post-apply";
                return err(Error::DatabaseChecksumMismatch {
                    what,
                    expected: prev_post,
                    found: next_pre,
                });
            }
        }
    }
    Ok(())
}

/// The output header (see [`compact`] for where each field comes from).
fn merged_header(headers: &[Header]) -> Header {
    let (first, last) = (&headers[0], &headers[headers.len() - 1]);
    let no_checksum = headers.iter().any(Header::no_checksum);
    let ext_pre = first.ext_checksums.map(|(pre, _)| pre);
    let ext_post = last.ext_checksums.map(|(_, post)| post);
    let all_ext = headers.iter().all(|h| h.ext_checksums.is_some());
    Header {
        flags: if no_checksum { FLAG_NO_CHECKSUM } else { 0 },
        page_size: first.page_size,
        commit: last.commit,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        pre_apply_checksum: if no_checksum {
            Checksum(0)
        } else {
            first.pre_apply_checksum
        },
        wal_offset: 0,
        wal_size: 0,
        wal_salt1: 0,
        wal_salt2: 0,
        node_id: 0,
        ext_checksums: ext_pre.zip(ext_post).filter(|_| all_ext),
    }
}

/// Names the input an error came from.
fn input_error(headers: &[Header], index: usize, e: Error) -> Error {
    let h = &headers[index];
    Error::Input {
        index,
        range: Some((h.min_txid, h.max_txid)),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{decode_all, encode_all, fixture, test_page, EXT, LITESTREAM};
    use super::super::{Checksum, TxId, CHECKSUM_FLAG};
    use super::*;

    /// Compacts in-memory files.
    fn compact_bytes(inputs: &[Vec<u8>]) -> Result<(Header, Trailer, Vec<u8>)> {
        let mut out = Vec::new();
        let readers = inputs.iter().map(|b| &b[..]).collect();
        let (header, trailer) = compact(readers, &mut out)?;
        Ok((header, trailer, out))
    }

    /// The L0 files min..=max of a fixture replica.
    fn l0(replica: &str, min: u64, max: u64) -> Vec<Vec<u8>> {
        (min..=max).map(|t| fixture(replica, 0, t, t)).collect()
    }

    /// Compacting the L0 files that Litestream compacted gives its L1 files: same header
    /// (min, max, commit, timestamp, zero WAL fields, our extension) and same pages.
    #[test]
    fn compacting_fixture_l0_files_gives_the_fixture_l1_files() {
        for replica in [LITESTREAM, EXT] {
            for (min, max) in [(1, 2), (3, 3), (4, 7), (8, 10)] {
                let what = format!("{replica} {min}..{max}");
                let (header, trailer, out) = compact_bytes(&l0(replica, min, max)).unwrap();
                let ours = decode_all(&out).unwrap_or_else(|e| panic!("{what}: {e}"));
                let theirs = decode_all(&fixture(replica, 1, min, max)).unwrap();
                assert_eq!(ours.header, theirs.header, "{what}");
                assert_eq!(header, theirs.header, "{what}");
                assert_eq!(ours.trailer, trailer, "{what}");
                assert_eq!(
                    trailer.post_apply_checksum, theirs.trailer.post_apply_checksum,
                    "{what}"
                );
                let pgnos: Vec<u32> = ours.pages.iter().map(|p| p.0).collect();
                let theirs_pgnos: Vec<u32> = theirs.pages.iter().map(|p| p.0).collect();
                assert_eq!(pgnos, theirs_pgnos, "{what}");
                assert!(ours.pages == theirs.pages, "{what}: page data differs");
            }
        }
    }

    /// Compacting all of L0 (a snapshot onward) gives a snapshot of the final database,
    /// whose extension post-apply checksum the decoder verifies against the pages.
    #[test]
    fn compacting_everything_gives_a_snapshot() {
        let (header, _, out) = compact_bytes(&l0(EXT, 1, 10)).unwrap();
        assert!(header.is_snapshot());
        assert_eq!(header.commit, 11);
        assert_eq!(
            header.ext_checksums,
            Some((Checksum(0), Checksum(0x964acda739482407)))
        );
        let d = decode_all(&out).unwrap();
        assert_eq!(
            d.pages.iter().map(|p| p.0).collect::<Vec<_>>(),
            (1..=11).collect::<Vec<_>>()
        );
        // Same pages as compacting the fixture's own L1 files.
        let l1: Vec<Vec<u8>> = [(1, 2), (3, 3), (4, 7), (8, 10)]
            .iter()
            .map(|&(a, b)| fixture(EXT, 1, a, b))
            .collect();
        let (_, _, from_l1) = compact_bytes(&l1).unwrap();
        assert_eq!(decode_all(&from_l1).unwrap().pages, d.pages);
    }

    fn header(min: u64, max: u64, commit: u32) -> Header {
        Header {
            flags: 0,
            page_size: 512,
            commit,
            min_txid: TxId(min),
            max_txid: TxId(max),
            timestamp_ms: min as i64 * 1000,
            pre_apply_checksum: Checksum(CHECKSUM_FLAG | min),
            wal_offset: 32,
            wal_size: 4120,
            wal_salt1: 9,
            wal_salt2: 9,
            node_id: 5,
            ext_checksums: None,
        }
    }

    fn file(h: &Header, pgnos: &[u32], salt: u32, post: u64) -> Vec<u8> {
        let pages: Vec<_> = pgnos
            .iter()
            .map(|&p| (p, test_page(p, 512, salt)))
            .collect();
        encode_all(h, &pages, Checksum(CHECKSUM_FLAG | post)).1
    }

    #[test]
    fn newest_page_wins_and_pages_past_the_last_commit_are_dropped() {
        let a = file(&header(2, 2, 6), &[2, 3, 6], 1, 20);
        let b = file(&header(3, 4, 5), &[3, 5], 2, 30);
        let c = file(&header(5, 5, 4), &[1, 3], 3, 40);
        let (h, trailer, out) = compact_bytes(&[a, b, c]).unwrap();
        let d = decode_all(&out).unwrap();
        let expected = vec![
            (1, test_page(1, 512, 3)),
            (2, test_page(2, 512, 1)),
            (3, test_page(3, 512, 3)),
        ];
        assert_eq!(d.pages, expected);
        // Standard checksums: pre from the first, post from the last; header fields.
        assert_eq!(h.pre_apply_checksum, Checksum(CHECKSUM_FLAG | 2));
        assert_eq!(trailer.post_apply_checksum, Checksum(CHECKSUM_FLAG | 40));
        assert_eq!(
            (h.min_txid, h.max_txid, h.commit, h.timestamp_ms),
            (TxId(2), TxId(5), 4, 5000)
        );
        assert_eq!(
            (h.wal_offset, h.wal_size, h.wal_salt1, h.node_id, h.flags),
            (0, 0, 0, 0, 0)
        );
    }

    #[test]
    fn no_checksum_if_any_input_has_it_and_extension_only_if_all_have_it() {
        let ck = |v: u64| Checksum(CHECKSUM_FLAG | v);
        let a = Header {
            ext_checksums: Some((ck(2), ck(20))),
            ..header(2, 2, 3)
        };
        let b = Header {
            flags: FLAG_NO_CHECKSUM,
            pre_apply_checksum: Checksum(0),
            ext_checksums: Some((ck(20), ck(30))),
            ..header(3, 3, 3)
        };
        let (h, trailer, _) =
            compact_bytes(&[file(&a, &[1], 0, 20), file(&b, &[2], 0, 0)]).unwrap();
        assert!(h.no_checksum());
        assert_eq!(h.pre_apply_checksum, Checksum(0));
        assert_eq!(trailer.post_apply_checksum, Checksum(0));
        assert_eq!(h.ext_checksums, Some((ck(2), ck(30))));

        let c = Header {
            ext_checksums: None,
            ..b.clone()
        };
        let (h, _, _) = compact_bytes(&[file(&a, &[1], 0, 20), file(&c, &[2], 0, 0)]).unwrap();
        assert_eq!(h.ext_checksums, None);

        let broken = Header {
            ext_checksums: Some((ck(21), ck(30))),
            ..b
        };
        let err = compact_bytes(&[file(&a, &[1], 0, 20), file(&broken, &[2], 0, 0)]).unwrap_err();
        assert!(
            err.to_string().contains("database checksum mismatch"),
            "{err}"
        );
    }

    #[test]
    fn inputs_must_be_contiguous_with_one_page_size() {
        let err = compact_bytes(&[]).unwrap_err();
        assert!(matches!(err, Error::NoInputs), "{err}");

        let err = compact_bytes(&[
            l0(LITESTREAM, 1, 1).remove(0),
            l0(LITESTREAM, 3, 3).remove(0),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("not contiguous: max txid 0000000000000001 is followed by min txid 0000000000000003"), "{err}");

        let small = file(&header(2, 2, 3), &[1], 0, 1);
        let err = compact_bytes(&[l0(LITESTREAM, 1, 1).remove(0), small]).unwrap_err();
        assert!(
            err.to_string()
                .contains("different page sizes: 4096 and 512"),
            "{err}"
        );
    }

    /// A restore plan's overlap: a snapshot 1-3 followed by a compacted 2-5 (starting inside
    /// it). The result is the state after 5; the extension chain is only checked where
    /// files touch, and the output takes pre from the first and post from the last.
    #[test]
    fn overlapping_inputs_merge_like_a_restore_applies_them() {
        let ck = |v: u64| Checksum(CHECKSUM_FLAG | v);
        // Database checksums of (pgno, salt) pages: snapshots are verified against them.
        let db_sum = |pages: &[(u32, u32)]| {
            let mut t = crate::ltx::PageChecksums::new(512);
            for &(p, salt) in pages {
                t.set(p, crate::ltx::page_checksum(p, &test_page(p, 512, salt)));
            }
            t.checksum()
        };
        let snap = Header {
            flags: FLAG_NO_CHECKSUM,
            pre_apply_checksum: Checksum(0),
            ext_checksums: Some((Checksum(0), db_sum(&[(1, 1), (2, 1), (3, 1)]))),
            ..header(1, 3, 3)
        };
        let end = db_sum(&[(1, 1), (2, 2), (3, 1), (4, 2)]);
        // Its pre-apply (the state after 1) is not the snapshot's post: not compared.
        let later = Header {
            flags: FLAG_NO_CHECKSUM,
            pre_apply_checksum: Checksum(0),
            ext_checksums: Some((ck(1), end)),
            ..header(2, 5, 4)
        };
        let a = file(&snap, &[1, 2, 3], 1, 0);
        let b = file(&later, &[2, 4], 2, 0);
        let (h, _, out) = compact_bytes(&[a.clone(), b.clone()]).unwrap();
        assert_eq!((h.min_txid, h.max_txid, h.commit), (TxId(1), TxId(5), 4));
        assert_eq!(h.ext_checksums, Some((Checksum(0), end)));
        let d = decode_all(&out).unwrap();
        let want = [(1, 1), (2, 2), (3, 1), (4, 2)]
            .map(|(p, salt)| (p, test_page(p, 512, salt)))
            .to_vec();
        assert_eq!(d.pages, want);

        // The timestamp can be replaced (snapshots are stamped when taken).
        let opts = CompactOptions {
            timestamp_ms: Some(42),
        };
        let (h, _) = compact_with(vec![&a[..], &b[..]], Vec::new(), opts).unwrap();
        assert_eq!(h.timestamp_ms, 42);

        // A file that ends no later than the previous one adds nothing: refused.
        let inner = Header {
            flags: FLAG_NO_CHECKSUM,
            pre_apply_checksum: Checksum(0),
            ext_checksums: None,
            ..header(2, 3, 3)
        };
        let err = compact_bytes(&[a, file(&inner, &[2], 3, 0)]).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
    }

    #[test]
    fn a_corrupt_input_is_named() {
        let mut inputs = l0(LITESTREAM, 4, 7);
        let last = inputs[2].len() - 1;
        inputs[2][last] ^= 1;
        let err = compact_bytes(&inputs).unwrap_err();
        assert!(
            matches!(&err, Error::Input { index: 2, source, .. } if matches!(**source, Error::FileChecksumMismatch { .. })),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("input 2 (0000000000000006-0000000000000006.ltx): file checksum"),
            "{err}"
        );

        inputs[2].truncate(10);
        let err = compact_bytes(&inputs).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("input 2: truncated file: header"),
            "{err}"
        );
    }
}
