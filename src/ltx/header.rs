//! The 100-byte LTX header, including our checksum extension in its reserved bytes.

use super::checksum::Checksum;
use super::{Error, Result, TxId};

/// Size of the header on disk.
pub const HEADER_SIZE: usize = 100;

/// Header flag: the file tracks no database checksums (header pre-apply and trailer
/// post-apply are 0). The only flag LTX v0.5.2 defines; Litestream 0.5.17 always sets it.
pub const FLAG_NO_CHECKSUM: u32 = 0x2;

/// Tag in header bytes 96..100 marking our extension: bytes 80..88 hold the pre-apply and
/// 88..96 the post-apply database checksum. Litestream ignores these reserved bytes, so files
/// carrying them still restore with Litestream 0.5.17.
pub const EXT_TAG: &[u8; 4] = b"CKSM";

/// The magic every LTX file starts with.
const MAGIC: &[u8; 4] = b"LTX1";

/// Offset of the reserved bytes where our extension lives.
const EXT_OFFSET: usize = 80;

/// The LTX header: what a file holds (txid range, page size, database size) and where it
/// came from (WAL position), read before any page so a restore can plan without decoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Header flags; only [`FLAG_NO_CHECKSUM`] is defined.
    pub flags: u32,
    /// Database page size: a power of two in 512..=65536.
    pub page_size: u32,
    /// Database size in pages after this file is applied.
    pub commit: u32,
    /// First transaction in the file.
    pub min_txid: TxId,
    /// Last transaction in the file.
    pub max_txid: TxId,
    /// When the file was written, in ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Database checksum before applying (0 with NoChecksum, and for snapshots).
    pub pre_apply_checksum: Checksum,
    /// Offset in the WAL of the frames this file came from (0 if not from a WAL).
    pub wal_offset: i64,
    /// Size of that WAL segment.
    pub wal_size: i64,
    /// WAL header salt 1 of the generation the frames belong to.
    pub wal_salt1: u32,
    /// WAL header salt 2.
    pub wal_salt2: u32,
    /// Node that wrote the file (0 if unset).
    pub node_id: u64,
    /// Our extension in the reserved bytes 80..100: (pre-apply, post-apply) database
    /// checksums, present iff bytes 96..100 == "CKSM".
    pub ext_checksums: Option<(Checksum, Checksum)>,
}

impl Header {
    /// The on-disk bytes. Without the extension the reserved bytes are zero, as Litestream
    /// writes them.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.0.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.0.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.0.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        if let Some((pre, post)) = self.ext_checksums {
            b[80..88].copy_from_slice(&pre.0.to_be_bytes());
            b[88..96].copy_from_slice(&post.0.to_be_bytes());
            b[96..100].copy_from_slice(EXT_TAG);
        }
        b
    }

    /// Parses the on-disk bytes. Only the magic is checked here; call [`Header::validate`]
    /// for the field rules. Reserved bytes without the `CKSM` tag are ignored, as Litestream
    /// ignores them (the file checksum still covers them).
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Result<Header> {
        let magic = [b[0], b[1], b[2], b[3]];
        if &magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let ext_checksums = (&b[96..100] == EXT_TAG).then(|| {
            (
                Checksum(be_u64(b, EXT_OFFSET)),
                Checksum(be_u64(b, EXT_OFFSET + 8)),
            )
        });
        Ok(Header {
            flags: be_u32(b, 4),
            page_size: be_u32(b, 8),
            commit: be_u32(b, 12),
            min_txid: TxId(be_u64(b, 16)),
            max_txid: TxId(be_u64(b, 24)),
            timestamp_ms: be_u64(b, 32) as i64,
            pre_apply_checksum: Checksum(be_u64(b, 40)),
            wal_offset: be_u64(b, 48) as i64,
            wal_size: be_u64(b, 56) as i64,
            wal_salt1: be_u32(b, 64),
            wal_salt2: be_u32(b, 68),
            node_id: be_u64(b, 72),
            ext_checksums,
        })
    }

    /// Checks the rules of LTX.md (and superfly/ltx's `Header.Validate`), so that neither
    /// the encoder writes nor the decoder accepts a header Litestream would reject:
    /// known flags; page size a power of two in 512..=65536; txids non-zero and ordered;
    /// WAL offset and size not negative, and the offset set when a salt or the size is;
    /// a snapshot's pre-apply checksum 0; with NoChecksum the pre-apply checksum 0, without
    /// it non-zero with bit 63 set. For the extension: its pre-apply is 0 on a snapshot and
    /// flagged otherwise, its post-apply flagged, and without NoChecksum its pre-apply equals
    /// the header's.
    pub fn validate(&self) -> Result<()> {
        self.validate_fields()?;
        self.validate_checksums()?;
        self.validate_ext()
    }

    /// True for a snapshot (min txid 1): it holds every page of the database.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == TxId(1)
    }

    /// True when the file tracks no database checksums in the standard fields.
    pub fn no_checksum(&self) -> bool {
        self.flags & FLAG_NO_CHECKSUM != 0
    }

    /// The rules on flags, page size, txids and WAL fields.
    fn validate_fields(&self) -> Result<()> {
        if self.flags & !FLAG_NO_CHECKSUM != 0 {
            return invalid(format!(
                "unknown flags 0x{:08x} (only 0x00000002 is defined)",
                self.flags
            ));
        }
        if !(512..=65536).contains(&self.page_size) || !self.page_size.is_power_of_two() {
            return invalid(format!(
                "page size {} is not a power of two in 512..=65536",
                self.page_size
            ));
        }
        if self.min_txid.0 == 0 || self.max_txid.0 == 0 {
            return invalid(format!(
                "txids must be non-zero (min {}, max {})",
                self.min_txid, self.max_txid
            ));
        }
        if self.min_txid > self.max_txid {
            return invalid(format!(
                "min txid {} is after max txid {}",
                self.min_txid, self.max_txid
            ));
        }
        if self.wal_offset < 0 || self.wal_size < 0 {
            return invalid(format!(
                "WAL offset {} and size {} must not be negative",
                self.wal_offset, self.wal_size
            ));
        }
        if self.wal_offset == 0
            && (self.wal_salt1 != 0 || self.wal_salt2 != 0 || self.wal_size != 0)
        {
            return invalid(format!(
                "WAL offset is 0 but WAL salts ({:08x}, {:08x}) or size ({}) are set",
                self.wal_salt1, self.wal_salt2, self.wal_size
            ));
        }
        Ok(())
    }

    /// The rules on the standard pre-apply checksum.
    fn validate_checksums(&self) -> Result<()> {
        let pre = self.pre_apply_checksum;
        if self.is_snapshot() || self.no_checksum() {
            if pre.0 != 0 {
                let why = if self.is_snapshot() {
                    "a snapshot"
                } else {
                    "the NoChecksum flag"
                };
                return invalid(format!("pre-apply checksum {pre} must be 0 with {why}"));
            }
        } else if !pre.is_flagged() {
            return invalid(format!(
                "pre-apply checksum {pre} must be non-zero with bit 63 set (NoChecksum is clear)"
            ));
        }
        Ok(())
    }

    /// The rules on our extension's checksums.
    fn validate_ext(&self) -> Result<()> {
        let Some((pre, post)) = self.ext_checksums else {
            return Ok(());
        };
        if self.is_snapshot() {
            if pre.0 != 0 {
                return invalid(format!(
                    "extension pre-apply checksum {pre} must be 0 on a snapshot"
                ));
            }
        } else if !pre.is_flagged() {
            return invalid(format!(
                "extension pre-apply checksum {pre} must have bit 63 set"
            ));
        }
        if !post.is_flagged() {
            return invalid(format!(
                "extension post-apply checksum {post} must have bit 63 set"
            ));
        }
        if !self.no_checksum() && pre != self.pre_apply_checksum {
            return invalid(format!(
                "extension pre-apply checksum {pre} differs from the header's {}",
                self.pre_apply_checksum
            ));
        }
        Ok(())
    }
}

/// An `InvalidHeader` error.
fn invalid(reason: String) -> Result<()> {
    Err(Error::InvalidHeader { reason })
}

/// Big-endian u32 at `at` (callers pass offsets inside the fixed-size header).
fn be_u32(b: &[u8; HEADER_SIZE], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Big-endian u64 at `at` (callers pass offsets inside the fixed-size header).
fn be_u64(b: &[u8; HEADER_SIZE], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::super::CHECKSUM_FLAG;
    use super::*;

    /// A valid incremental header in Litestream's style (NoChecksum, WAL position set).
    fn incremental() -> Header {
        Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: 4096,
            commit: 9,
            min_txid: TxId(7),
            max_txid: TxId(7),
            timestamp_ms: 1795556957691,
            wal_offset: 32,
            wal_size: 4120,
            wal_salt1: 2677461774,
            wal_salt2: 146597125,
            ..Header::default()
        }
    }

    #[test]
    fn round_trip_without_extension() {
        let h = Header {
            node_id: 0x0102030405060708,
            ..incremental()
        };
        let b = h.encode();
        assert_eq!(&b[0..4], b"LTX1");
        assert_eq!(&b[80..100], &[0u8; 20]);
        assert_eq!(Header::decode(&b).unwrap(), h);
        h.validate().unwrap();
    }

    #[test]
    fn round_trip_with_extension() {
        let h = Header {
            ext_checksums: Some((Checksum(0xcf1209c7eb1f8f26), Checksum(0xfabb2a9c930229de))),
            ..incremental()
        };
        let b = h.encode();
        assert_eq!(&b[80..88], &0xcf1209c7eb1f8f26u64.to_be_bytes());
        assert_eq!(&b[88..96], &0xfabb2a9c930229deu64.to_be_bytes());
        assert_eq!(&b[96..100], b"CKSM");
        assert_eq!(Header::decode(&b).unwrap(), h);
        h.validate().unwrap();
    }

    #[test]
    fn field_offsets_match_the_layout() {
        let h = Header {
            flags: 0,
            page_size: 0x1000,
            commit: 0x0a0b0c0d,
            min_txid: TxId(0x1112131415161718),
            max_txid: TxId(0x2122232425262728),
            timestamp_ms: 0x3132333435363738,
            pre_apply_checksum: Checksum(0x4142434445464748),
            wal_offset: 0x5152535455565758,
            wal_size: 0x6162636465666768,
            wal_salt1: 0x71727374,
            wal_salt2: 0x75767778,
            node_id: 0x8182838485868788,
            ext_checksums: None,
        };
        let b = h.encode();
        assert_eq!(b[12], 0x0a);
        assert_eq!(b[16], 0x11);
        assert_eq!(b[24], 0x21);
        assert_eq!(b[32], 0x31);
        assert_eq!(b[40], 0x41);
        assert_eq!(b[48], 0x51);
        assert_eq!(b[56], 0x61);
        assert_eq!(b[64], 0x71);
        assert_eq!(b[68], 0x75);
        assert_eq!(b[72], 0x81);
        assert_eq!(b[79], 0x88);
        assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn decode_rejects_bad_magic_and_ignores_untagged_reserved_bytes() {
        let mut b = incremental().encode();
        b[85] = 7;
        assert_eq!(Header::decode(&b).unwrap().ext_checksums, None);
        b[3] = b'2';
        let err = Header::decode(&b).unwrap_err();
        assert!(
            matches!(err, Error::BadMagic { found } if &found == b"LTX2"),
            "{err}"
        );
        assert!(err.to_string().contains("magic"));
    }

    #[test]
    fn validate_accepts_the_good_shapes() {
        incremental().validate().unwrap();
        let snapshot = Header {
            min_txid: TxId(1),
            max_txid: TxId(1),
            ..incremental()
        };
        snapshot.validate().unwrap();
        let snapshot_ext = Header {
            ext_checksums: Some((Checksum(0), Checksum::EMPTY)),
            ..snapshot
        };
        snapshot_ext.validate().unwrap();
        let standard = Header {
            flags: 0,
            pre_apply_checksum: Checksum(CHECKSUM_FLAG | 5),
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            ..incremental()
        };
        standard.validate().unwrap();
        for page_size in [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
            Header {
                page_size,
                ..incremental()
            }
            .validate()
            .unwrap();
        }
    }

    #[test]
    fn validate_rejects_each_rule() {
        let flagged = Checksum(CHECKSUM_FLAG | 5);
        let cases: Vec<(&str, Header)> = vec![
            (
                "unknown flags",
                Header {
                    flags: 0x1,
                    ..incremental()
                },
            ),
            (
                "unknown flags",
                Header {
                    flags: 0x8000_0002,
                    ..incremental()
                },
            ),
            (
                "page size",
                Header {
                    page_size: 0,
                    ..incremental()
                },
            ),
            (
                "page size",
                Header {
                    page_size: 256,
                    ..incremental()
                },
            ),
            (
                "page size",
                Header {
                    page_size: 4095,
                    ..incremental()
                },
            ),
            (
                "page size",
                Header {
                    page_size: 131072,
                    ..incremental()
                },
            ),
            (
                "non-zero",
                Header {
                    min_txid: TxId(0),
                    ..incremental()
                },
            ),
            (
                "non-zero",
                Header {
                    max_txid: TxId(0),
                    ..incremental()
                },
            ),
            (
                "after max",
                Header {
                    min_txid: TxId(8),
                    max_txid: TxId(7),
                    ..incremental()
                },
            ),
            (
                "negative",
                Header {
                    wal_offset: -1,
                    ..incremental()
                },
            ),
            (
                "negative",
                Header {
                    wal_size: -1,
                    ..incremental()
                },
            ),
            (
                "WAL offset is 0",
                Header {
                    wal_offset: 0,
                    wal_size: 0,
                    wal_salt2: 0,
                    ..incremental()
                },
            ),
            (
                "WAL offset is 0",
                Header {
                    wal_offset: 0,
                    wal_salt1: 0,
                    wal_salt2: 0,
                    ..incremental()
                },
            ),
            (
                "must be 0 with a snapshot",
                Header {
                    flags: 0,
                    min_txid: TxId(1),
                    pre_apply_checksum: flagged,
                    ..incremental()
                },
            ),
            (
                "must be 0 with the NoChecksum",
                Header {
                    pre_apply_checksum: flagged,
                    ..incremental()
                },
            ),
            (
                "bit 63",
                Header {
                    flags: 0,
                    ..incremental()
                },
            ),
            (
                "bit 63",
                Header {
                    flags: 0,
                    pre_apply_checksum: Checksum(5),
                    ..incremental()
                },
            ),
            (
                "extension pre-apply checksum 8000000000000005 must be 0",
                Header {
                    min_txid: TxId(1),
                    ext_checksums: Some((flagged, flagged)),
                    ..incremental()
                },
            ),
            (
                "extension pre-apply checksum 0000000000000000 must have bit 63",
                Header {
                    ext_checksums: Some((Checksum(0), flagged)),
                    ..incremental()
                },
            ),
            (
                "extension post-apply",
                Header {
                    ext_checksums: Some((flagged, Checksum(5))),
                    ..incremental()
                },
            ),
            (
                "differs from the header",
                Header {
                    flags: 0,
                    pre_apply_checksum: flagged,
                    ext_checksums: Some((Checksum(CHECKSUM_FLAG | 6), flagged)),
                    ..incremental()
                },
            ),
        ];
        for (want, h) in cases {
            let err = h.validate().expect_err(want);
            assert!(matches!(err, Error::InvalidHeader { .. }), "{want}: {err}");
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn snapshot_and_flags_helpers() {
        assert!(!incremental().is_snapshot());
        assert!(Header {
            min_txid: TxId(1),
            ..incremental()
        }
        .is_snapshot());
        assert!(incremental().no_checksum());
        assert!(!Header {
            flags: 0,
            ..incremental()
        }
        .no_checksum());
    }
}
