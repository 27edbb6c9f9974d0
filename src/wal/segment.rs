//! Segment files: naming, the header, and the pure (I/O-free) scanner that
//! recovery and the tests run over a segment's bytes.
//!
//! Layout: `proto-docs/wal-format.md`, sections "Directory and file names"
//! and "Segment header".

use super::CorruptReason;
use super::record::{FRAME_HEADER_LEN, check_frame, decode_body, peek_seq, skim_body};
use crate::types::Seq;

/// First eight bytes of every segment.
/// Layout: `proto-docs/wal-format.md`, section "Segment header".
pub const SEGMENT_MAGIC: [u8; 8] = *b"STRATWAL";

/// Format version written by this build. It also reads version 1, whose
/// records never hold a [`Mutation::PutTyped`](super::Mutation::PutTyped).
/// Layout: `proto-docs/wal-format.md`, section "Versioning".
pub const SEGMENT_VERSION: u32 = 2;

/// The oldest format version this build reads.
pub const MIN_SEGMENT_VERSION: u32 = 1;

/// Size of the segment header: magic (8), version (4), reserved (4),
/// first seq (8), CRC-32 of the previous 24 bytes (4).
/// Layout: `proto-docs/wal-format.md`, section "Segment header".
pub const SEGMENT_HEADER_LEN: usize = 28;

/// Extension of segment files; the stem is the first seq in 20 decimal digits.
/// Layout: `proto-docs/wal-format.md`, section "Directory and file names".
pub const SEGMENT_EXTENSION: &str = "wal";

/// Digits in a segment file name's stem (enough for any `u64`).
const NAME_DIGITS: usize = 20;

/// Bytes of CRC work the torn-tail probe may spend per scan beyond the
/// size of the tail itself (see [`valid_record_after`]).
const PROBE_BUDGET_BASE: u64 = 64 * 1024 * 1024;

/// The file name of the segment whose first record has seq `first_seq`.
pub fn segment_file_name(first_seq: Seq) -> String {
    format!(
        "{:0width$}.{SEGMENT_EXTENSION}",
        first_seq.0,
        width = NAME_DIGITS
    )
}

/// The first seq named by a segment file name, `None` if `name` is not one.
pub fn parse_segment_name(name: &str) -> Option<Seq> {
    let stem = name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    if stem.len() != NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Seq)
}

/// The fixed header at the start of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Seq of the segment's first record (also its file name).
    pub first_seq: Seq,
}

/// Why a segment header could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Damaged (or too short).
    Corrupt(CorruptReason),
    /// Intact magic but a version this build does not know.
    Version(u32),
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        // 12..16: reserved, zero.
        out[16..24].copy_from_slice(&self.first_seq.0.to_le_bytes());
        let crc = crc32fast::hash(&out[0..24]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses the header at the start of `buf` (the whole file is fine).
    /// Checks, in this order: length, magic, version, CRC.
    ///
    /// # Errors
    ///
    /// [`HeaderError::Version`] for an intact magic with an unknown
    /// version, [`HeaderError::Corrupt`] for anything else.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let Some(h) = buf.get(..SEGMENT_HEADER_LEN) else {
            return Err(HeaderError::Corrupt(CorruptReason::ShortHeader {
                len: buf.len() as u64,
            }));
        };
        let mut magic = [0; 8];
        magic.copy_from_slice(&h[0..8]);
        if magic != SEGMENT_MAGIC {
            return Err(HeaderError::Corrupt(CorruptReason::BadMagic {
                found: magic,
            }));
        }
        // The version comes before the CRC: a future version may lay out
        // (and checksum) the rest of its header differently.
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if !(MIN_SEGMENT_VERSION..=SEGMENT_VERSION).contains(&version) {
            return Err(HeaderError::Version(version));
        }
        let stored = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
        let computed = crc32fast::hash(&h[0..24]);
        if stored != computed {
            return Err(HeaderError::Corrupt(CorruptReason::HeaderChecksum {
                stored,
                computed,
            }));
        }
        let mut seq = [0; 8];
        seq.copy_from_slice(&h[16..24]);
        Ok(SegmentHeader {
            first_seq: Seq(u64::from_le_bytes(seq)),
        })
    }
}

/// The result of scanning a segment's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Good records before the first bad one (or the end).
    pub records: u64,
    /// Seq of the last good record.
    pub last_seq: Option<Seq>,
    /// Offset just past the last good record (the header's end if none).
    pub good_end: usize,
    /// The first bad record, if any.
    pub bad: Option<BadRecord>,
}

/// A record that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRecord {
    /// Where its frame starts.
    pub offset: usize,
    /// What is wrong with it.
    pub reason: CorruptReason,
    /// Whether a valid record with a higher seq exists later in the data
    /// (so the damage is not a torn tail).
    pub later_valid: bool,
}

/// The seq after `seq`, `None` at the end of the seq space.
fn successor(seq: Seq) -> Option<Seq> {
    seq.0.checked_add(1).map(Seq)
}

/// Validates the records of a segment whose header (ending at `start`)
/// names `first_seq`: each frame's length, CRC and body, and seq continuity
/// starting at `first_seq`. Calls `on_record` with each good record and its
/// offset. Stops at the first bad record and probes the rest of the data for
/// a later valid one. Never panics, whatever `data` holds.
pub(crate) fn scan_records(
    data: &[u8],
    start: usize,
    first_seq: Seq,
    max_record_bytes: u32,
    mut on_record: impl FnMut(usize, super::WalRecord),
) -> Scan {
    let mut scan = Scan {
        records: 0,
        last_seq: None,
        good_end: start.min(data.len()),
        bad: None,
    };
    // `None` once the seq space is exhausted: no record may follow.
    let mut expected = Some(first_seq);
    let mut pos = scan.good_end;
    while pos < data.len() {
        match next_record(&data[pos..], expected, max_record_bytes) {
            Ok((record, len)) => {
                expected = successor(record.seq);
                scan.records += 1;
                scan.last_seq = Some(record.seq);
                on_record(pos, record);
                pos += len;
                scan.good_end = pos;
            }
            Err(reason) => {
                let later_valid = match expected {
                    Some(min_seq) => valid_record_after(data, pos, min_seq, max_record_bytes),
                    None => false,
                };
                scan.bad = Some(BadRecord {
                    offset: pos,
                    reason,
                    later_valid,
                });
                break;
            }
        }
    }
    scan
}

/// Decodes the frame at the start of `buf` and checks that its seq is
/// `expected` (`None`: no seq may follow).
pub(crate) fn next_record(
    buf: &[u8],
    expected: Option<Seq>,
    max_record_bytes: u32,
) -> Result<(super::WalRecord, usize), CorruptReason> {
    let body = check_frame(buf, max_record_bytes)?;
    let record = decode_body(body)?;
    if Some(record.seq) != expected {
        return Err(CorruptReason::SeqBreak {
            expected: expected.unwrap_or(Seq(u64::MAX)),
            got: record.seq,
        });
    }
    Ok((record, FRAME_HEADER_LEN + body.len()))
}

/// Whether some offset from `bad` on starts a valid frame whose record has
/// `seq >= min_seq`: the test that tells a torn tail (nothing valid follows)
/// from corruption in the middle of the log. `bad` itself counts: a valid
/// frame whose seq skips ahead is a missing record, not a torn write.
///
/// Scans byte by byte, cheapest checks first: a length that is zero, above
/// the maximum or past the end of the data (runs of zeros, garbage, a
/// truncated write) costs a few instructions; then the seq varint, then a
/// non-allocating structural walk of the body; only then the CRC and a real
/// decode. The CRC work is capped at the tail's size plus
/// [`PROBE_BUDGET_BASE`]; if the cap is hit the answer is a conservative
/// `true` (refuse to call it a torn tail rather than drop data silently).
pub(crate) fn valid_record_after(
    data: &[u8],
    bad: usize,
    min_seq: Seq,
    max_record_bytes: u32,
) -> bool {
    let tail = data.len().saturating_sub(bad) as u64;
    let mut budget = tail.saturating_mul(4).saturating_add(PROBE_BUDGET_BASE);
    let mut pos = bad;
    while pos + FRAME_HEADER_LEN < data.len() {
        let at = pos;
        pos += 1;
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        if len == 0 || len > max_record_bytes {
            continue;
        }
        let body_start = at + FRAME_HEADER_LEN;
        let Some(body) = data.get(body_start..body_start + len as usize) else {
            continue;
        };
        match peek_seq(body) {
            Some(seq) if seq >= min_seq => {}
            _ => continue,
        }
        if skim_body(body).is_none() {
            continue;
        }
        if budget < u64::from(len) {
            tracing::warn!(
                offset = bad,
                "wal torn-tail probe ran out of budget; treating the damage as corruption"
            );
            return true;
        }
        budget -= u64::from(len);
        if check_frame(&data[at..], max_record_bytes).is_ok() && decode_body(body).is_ok() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wal::record::{encode_frame_into, strategy};
    use crate::wal::{Mutation, WalRecord};

    fn rec(seq: u64, value_len: usize) -> WalRecord {
        WalRecord {
            seq: Seq(seq),
            mutations: vec![Mutation::Put {
                key: bytes::Bytes::from(format!("key-{seq}")),
                value: bytes::Bytes::from(vec![seq as u8; value_len]),
                expires_at_ms: 0,
            }],
        }
    }

    /// A segment holding records `first..first + n`; returns it and the
    /// offset of each frame.
    fn segment(first: u64, n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut data = SegmentHeader {
            first_seq: Seq(first),
        }
        .encode()
        .to_vec();
        let mut offsets = Vec::new();
        for s in first..first + n {
            offsets.push(data.len());
            encode_frame_into(&rec(s, 30), &mut data, u32::MAX).unwrap();
        }
        (data, offsets)
    }

    fn scan(data: &[u8], first: u64) -> (Scan, Vec<WalRecord>) {
        let mut got = Vec::new();
        let s = scan_records(data, SEGMENT_HEADER_LEN, Seq(first), 1 << 20, |_, r| {
            got.push(r)
        });
        (s, got)
    }

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(Seq(42)), "00000000000000000042.wal");
        assert_eq!(
            parse_segment_name("00000000000000000042.wal"),
            Some(Seq(42))
        );
        assert_eq!(
            parse_segment_name(&segment_file_name(Seq(u64::MAX))),
            Some(Seq(u64::MAX))
        );
        for bad in [
            "42.wal",
            "00000000000000000042.wal.tmp",
            "0000000000000000004x.wal",
            "99999999999999999999.wal",
            "00000000000000000042.log",
            "+0000000000000000042.wal",
            "00000000000000000042wal",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    /// The header example in proto-docs/wal-format.md.
    #[test]
    fn header_matches_the_worked_example_in_the_format_doc() {
        let expected: [u8; SEGMENT_HEADER_LEN] = [
            0x53, 0x54, 0x52, 0x41, 0x54, 0x57, 0x41, 0x4c, // "STRATWAL"
            0x02, 0x00, 0x00, 0x00, // version 2
            0x00, 0x00, 0x00, 0x00, // reserved
            0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first_seq 7
            0x5b, 0xed, 0x1d, 0x1f, // crc 0x1f1ded5b
        ];
        assert_eq!(SegmentHeader { first_seq: Seq(7) }.encode(), expected);
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = SegmentHeader { first_seq: Seq(9) };
        let bytes = h.encode();
        assert_eq!(&bytes[..8], b"STRATWAL");
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        assert!(matches!(
            SegmentHeader::decode(&bytes[..27]),
            Err(HeaderError::Corrupt(CorruptReason::ShortHeader { len: 27 }))
        ));
        let mut v3 = bytes;
        v3[8] = 3;
        assert_eq!(SegmentHeader::decode(&v3), Err(HeaderError::Version(3)));
        let mut v1 = bytes;
        v1[8] = 1;
        // A version 1 header is read too (its CRC is of its own bytes).
        let crc = crc32fast::hash(&v1[0..24]);
        v1[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&v1), Ok(h));
        let mut flipped = bytes;
        flipped[17] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&flipped),
            Err(HeaderError::Corrupt(CorruptReason::HeaderChecksum { .. }))
        ));
        let mut magic = bytes;
        magic[0] = b's';
        assert!(matches!(
            SegmentHeader::decode(&magic),
            Err(HeaderError::Corrupt(CorruptReason::BadMagic { .. }))
        ));
    }

    #[test]
    fn clean_segment_scans_fully() {
        let (data, _) = segment(5, 10);
        let (s, got) = scan(&data, 5);
        assert_eq!(s.records, 10);
        assert_eq!(s.last_seq, Some(Seq(14)));
        assert_eq!(s.good_end, data.len());
        assert_eq!(s.bad, None);
        assert_eq!(got, (5..15).map(|i| rec(i, 30)).collect::<Vec<_>>());
    }

    #[test]
    fn truncated_last_record_is_a_torn_tail() {
        let (data, offsets) = segment(1, 5);
        let cut = &data[..data.len() - 3];
        let (s, _) = scan(cut, 1);
        assert_eq!(s.records, 4);
        assert_eq!(s.good_end, offsets[4]);
        let bad = s.bad.unwrap();
        assert_eq!(bad.offset, offsets[4]);
        assert!(matches!(bad.reason, CorruptReason::Overrun { .. }));
        assert!(!bad.later_valid);
    }

    #[test]
    fn zeros_and_garbage_after_the_last_record_are_a_torn_tail() {
        let (data, _) = segment(1, 5);
        for tail in [vec![0u8; 5000], b"09pmu35w3a9mp53bao9upw3ab5up".to_vec()] {
            let mut d = data.clone();
            d.extend_from_slice(&tail);
            let (s, _) = scan(&d, 1);
            assert_eq!(s.records, 5);
            assert_eq!(s.good_end, data.len());
            let bad = s.bad.unwrap();
            assert_eq!(bad.offset, data.len());
            assert!(!bad.later_valid);
        }
    }

    #[test]
    fn flipped_byte_before_a_valid_record_is_not_a_torn_tail() {
        let (mut data, offsets) = segment(1, 5);
        data[offsets[2] + 12] ^= 0x55;
        let (s, _) = scan(&data, 1);
        assert_eq!(s.records, 2);
        let bad = s.bad.unwrap();
        assert_eq!(bad.offset, offsets[2]);
        assert!(matches!(bad.reason, CorruptReason::Checksum { .. }));
        assert!(bad.later_valid);
    }

    #[test]
    fn stale_records_with_old_seqs_after_the_tail_do_not_count_as_valid() {
        // A reused block can hold frames of an older segment: valid CRC but
        // seqs the log has already passed. They must not block truncation.
        let (mut data, _) = segment(100, 3);
        let (old, old_offsets) = segment(1, 3);
        data.extend_from_slice(&[0xff; 3]);
        data.extend_from_slice(&old[old_offsets[0]..]);
        let (s, _) = scan(&data, 100);
        assert_eq!(s.records, 3);
        assert!(!s.bad.unwrap().later_valid);
    }

    #[test]
    fn seq_break_is_bad() {
        let mut data = SegmentHeader { first_seq: Seq(1) }.encode().to_vec();
        encode_frame_into(&rec(1, 3), &mut data, u32::MAX).unwrap();
        let at = data.len();
        encode_frame_into(&rec(3, 3), &mut data, u32::MAX).unwrap();
        let (s, _) = scan(&data, 1);
        assert_eq!(s.records, 1);
        let bad = s.bad.unwrap();
        assert_eq!(bad.offset, at);
        assert_eq!(
            bad.reason,
            CorruptReason::SeqBreak {
                expected: Seq(2),
                got: Seq(3)
            }
        );
        // The record itself is valid and has a higher seq: not a torn tail.
        assert!(bad.later_valid);
    }

    proptest! {
        #[test]
        fn scanner_never_panics_on_arbitrary_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            first in any::<u64>(),
            max in 1u32..1024,
        ) {
            let _ = SegmentHeader::decode(&data);
            let s = scan_records(&data, SEGMENT_HEADER_LEN, Seq(first), max, |_, _| {});
            prop_assert!(s.good_end <= data.len().max(SEGMENT_HEADER_LEN));
        }

        /// Flipping bytes of a valid segment never panics the scanner and
        /// never makes it return a record that was not written (I2).
        #[test]
        fn scanner_on_damaged_segment_returns_only_written_records(
            records in proptest::collection::vec(strategy::record(), 1..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let first = records[0].seq;
            let records: Vec<WalRecord> = records
                .into_iter()
                .enumerate()
                .map(|(i, mut r)| { r.seq = Seq(first.0.wrapping_add(i as u64)); r })
                .collect();
            let mut data = SegmentHeader { first_seq: first }.encode().to_vec();
            for r in &records {
                encode_frame_into(r, &mut data, u32::MAX).unwrap();
            }
            for (at, x) in flips {
                let i = at.index(data.len());
                data[i] ^= x;
            }
            let mut got = Vec::new();
            let _ = scan_records(&data, SEGMENT_HEADER_LEN, first, 1 << 16, |_, r| got.push(r));
            prop_assert!(got.len() <= records.len());
            prop_assert_eq!(&got[..], &records[..got.len()]);
        }
    }
}
