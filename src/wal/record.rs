//! Records and their frames: `[u32 LE len][u32 LE crc32][postcard body]`.
//!
//! Layout: `proto-docs/wal-format.md`, section "Record frame".

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CorruptReason, WalError};
use crate::types::{Seq, ValueKind};

/// Bytes in front of every record body: `u32` LE body length, then `u32` LE
/// CRC-32 (IEEE, as computed by crc32fast) of the body.
/// Layout: `proto-docs/wal-format.md`, section "Record frame".
pub const FRAME_HEADER_LEN: usize = 8;

/// One committed write: the seq the commit pipeline assigned and the
/// effects it resolved. Conditions (if-absent, CAS, incr) were evaluated
/// before logging, so replaying a record is idempotent.
///
/// Encoded with postcard; the field order is part of the on-disk format
/// (`proto-docs/wal-format.md`, section "Record body").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    /// Position in the primary's history; consecutive across the log.
    pub seq: Seq,
    /// Effects, applied in order.
    pub mutations: Vec<Mutation>,
}

/// One resolved effect on one key. The variant order is part of the on-disk
/// format: never reorder; a new variant needs a new format version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Store `value` under `key`; `expires_at_ms` is absolute Unix ms, 0 = never.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// Absolute expiry in Unix ms; 0 means no expiry.
        expires_at_ms: u64,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Store a value of another kind than a string under `key`: a
    /// collection's metadata (`store::collection`). Segment version 2.
    PutTyped {
        /// The key.
        key: Bytes,
        /// What the value is.
        kind: ValueKind,
        /// The encoded metadata.
        value: Bytes,
        /// Absolute expiry in Unix ms; 0 means no expiry.
        expires_at_ms: u64,
    },
}

impl Mutation {
    /// The mutation storing `value` of `kind` under `key`: a `Put` for a
    /// string (so a store of strings only logs what version 1 can read).
    pub fn put(key: Bytes, kind: ValueKind, value: Bytes, expires_at_ms: u64) -> Mutation {
        match kind {
            ValueKind::String => Mutation::Put {
                key,
                value,
                expires_at_ms,
            },
            kind => Mutation::PutTyped {
                key,
                kind,
                value,
                expires_at_ms,
            },
        }
    }

    /// Bytes of key and value it carries (for budgets and estimates).
    pub fn data_len(&self) -> u64 {
        match self {
            Mutation::Put { key, value, .. } | Mutation::PutTyped { key, value, .. } => {
                (key.len() + value.len()) as u64
            }
            Mutation::Delete { key } => key.len() as u64,
        }
    }
}

/// Appends the frame of `record` to `buf` and returns the frame's length.
///
/// # Errors
///
/// [`WalError::RecordTooLarge`] if the body exceeds `max_record_bytes`
/// (`buf` is left as it was), [`WalError::Encode`] if postcard fails.
pub fn encode_frame_into(
    record: &WalRecord,
    buf: &mut Vec<u8>,
    max_record_bytes: u32,
) -> Result<usize, WalError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    if let Err(source) = postcard::to_io(record, &mut *buf) {
        buf.truncate(start);
        return Err(WalError::Encode {
            seq: record.seq,
            source,
        });
    }
    let body_start = start + FRAME_HEADER_LEN;
    let body_len = buf.len() - body_start;
    let len = match u32::try_from(body_len) {
        Ok(len) if len <= max_record_bytes => len,
        _ => {
            buf.truncate(start);
            return Err(WalError::RecordTooLarge {
                seq: record.seq,
                bytes: body_len as u64,
                max: max_record_bytes,
            });
        }
    };
    let crc = crc32fast::hash(&buf[body_start..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
    Ok(buf.len() - start)
}

/// Decodes the frame at the start of `buf`: checks the length against
/// `max_record_bytes` and the end of `buf`, the CRC, and the body. Returns
/// the record and the frame's length. Never panics; allocates only for the
/// decoded record, never from an unchecked length.
///
/// # Errors
///
/// The [`CorruptReason`] of the first check that fails.
pub fn decode_frame(
    buf: &[u8],
    max_record_bytes: u32,
) -> Result<(WalRecord, usize), CorruptReason> {
    let body = check_frame(buf, max_record_bytes)?;
    let record = decode_body(body)?;
    Ok((record, FRAME_HEADER_LEN + body.len()))
}

/// Checks the frame header and CRC at the start of `buf` and returns the body.
pub(crate) fn check_frame(buf: &[u8], max_record_bytes: u32) -> Result<&[u8], CorruptReason> {
    let body = frame_body(buf, max_record_bytes)?;
    let stored = read_u32(buf, 4);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(CorruptReason::Checksum { stored, computed });
    }
    Ok(body)
}

/// The body the frame header at the start of `buf` announces, if its length
/// is plausible; the CRC is not checked.
fn frame_body(buf: &[u8], max_record_bytes: u32) -> Result<&[u8], CorruptReason> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(CorruptReason::ShortFrame {
            available: buf.len() as u64,
        });
    }
    let len = read_u32(buf, 0);
    if len == 0 || len > max_record_bytes {
        return Err(CorruptReason::BadLength {
            len,
            max: max_record_bytes,
        });
    }
    let available = buf.len() - FRAME_HEADER_LEN;
    if len as usize > available {
        return Err(CorruptReason::Overrun {
            len,
            available: available as u64,
        });
    }
    Ok(&buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len as usize])
}

/// Decodes a body whose CRC was checked; it must be exactly one record.
pub(crate) fn decode_body(body: &[u8]) -> Result<WalRecord, CorruptReason> {
    // NOTE: postcard bounds its preallocation for sequences (serde's
    // "cautious" size hint) and checks every byte-string length against the
    // input, so a lying length inside the body cannot make it allocate much.
    let (record, rest) =
        postcard::take_from_bytes::<WalRecord>(body).map_err(CorruptReason::Decode)?;
    if !rest.is_empty() {
        return Err(CorruptReason::TrailingBytes {
            extra: rest.len() as u64,
        });
    }
    Ok(record)
}

/// The seq of a body without decoding the rest: postcard puts `seq` first,
/// as a varint.
pub(crate) fn peek_seq(body: &[u8]) -> Option<Seq> {
    let mut pos = 0;
    varint(body, &mut pos).map(Seq)
}

/// Walks the postcard encoding of a [`WalRecord`] without allocating and
/// returns its seq if the structure is plausible and ends exactly at the end
/// of `body`.
///
/// Used to reject garbage cheaply before computing a CRC when recovery looks
/// for valid records after a bad one. It must accept every body postcard
/// produces (a false "no" could turn corruption into a silently truncated
/// "torn tail"); accepting some bodies postcard would reject is harmless,
/// because the CRC and a real decode follow.
pub(crate) fn skim_body(body: &[u8]) -> Option<Seq> {
    let mut pos = 0;
    let seq = varint(body, &mut pos)?;
    let count = varint(body, &mut pos)?;
    // Every mutation takes at least two bytes, so `count` cannot make this
    // loop run longer than the body.
    for _ in 0..count {
        match varint(body, &mut pos)? {
            0 => {
                skip_bytes(body, &mut pos)?;
                skip_bytes(body, &mut pos)?;
                varint(body, &mut pos)?;
            }
            1 => skip_bytes(body, &mut pos)?,
            _ => return None,
        }
    }
    (pos == body.len()).then_some(Seq(seq))
}

/// A postcard varint (LEB128, at most 10 bytes) at `*pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        // Bits beyond 64 are dropped rather than rejected: see `skim_body`.
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Skips a length-prefixed byte string at `*pos`.
fn skip_bytes(buf: &[u8], pos: &mut usize) -> Option<()> {
    let len = usize::try_from(varint(buf, pos)?).ok()?;
    let end = pos.checked_add(len)?;
    if end > buf.len() {
        return None;
    }
    *pos = end;
    Some(())
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Strategies shared by the module's property tests.
#[cfg(test)]
pub(crate) mod strategy {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::{Mutation, WalRecord};
    use crate::types::Seq;

    pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    pub fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (bytes(40), bytes(200), any::<u64>()).prop_map(|(key, value, expires_at_ms)| {
                Mutation::Put {
                    key,
                    value,
                    expires_at_ms,
                }
            }),
            bytes(40).prop_map(|key| Mutation::Delete { key }),
        ]
    }

    pub fn record() -> impl Strategy<Value = WalRecord> {
        (any::<u64>(), proptest::collection::vec(mutation(), 0..6)).prop_map(|(seq, mutations)| {
            WalRecord {
                seq: Seq(seq),
                mutations,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn example() -> WalRecord {
        WalRecord {
            seq: Seq(7),
            mutations: vec![
                Mutation::Put {
                    key: Bytes::from_static(b"k1"),
                    value: Bytes::from_static(b"hello"),
                    expires_at_ms: 0,
                },
                Mutation::Delete {
                    key: Bytes::from_static(b"old"),
                },
            ],
        }
    }

    /// The worked example in proto-docs/wal-format.md; if this fails, the
    /// doc (or the format) changed.
    #[test]
    fn frame_matches_the_worked_example_in_the_format_doc() {
        let mut buf = Vec::new();
        let n = encode_frame_into(&example(), &mut buf, u32::MAX).unwrap();
        assert_eq!(n, buf.len());
        let expected: &[u8] = &[
            0x12, 0x00, 0x00, 0x00, // len = 18
            0xa9, 0xdb, 0xdb, 0x09, // crc32 = 0x09dbdba9
            0x07, // seq = 7
            0x02, // 2 mutations
            0x00, 0x02, b'k', b'1', 0x05, b'h', b'e', b'l', b'l', b'o', 0x00, // Put
            0x01, 0x03, b'o', b'l', b'd', // Delete
        ];
        assert_eq!(buf, expected, "{buf:02x?}");
    }

    #[test]
    fn oversized_record_is_refused_and_buffer_untouched() {
        let mut buf = vec![1, 2, 3];
        let err = encode_frame_into(&example(), &mut buf, 17).unwrap_err();
        assert!(matches!(
            err,
            WalError::RecordTooLarge {
                bytes: 18,
                max: 17,
                ..
            }
        ));
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn each_damage_has_its_reason() {
        let mut good = Vec::new();
        encode_frame_into(&example(), &mut good, u32::MAX).unwrap();

        assert!(matches!(
            decode_frame(&good[..5], 1024),
            Err(CorruptReason::ShortFrame { available: 5 })
        ));
        assert!(matches!(
            decode_frame(&good, 17),
            Err(CorruptReason::BadLength { len: 18, max: 17 })
        ));
        let mut zero = good.clone();
        zero[..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            decode_frame(&zero, 1024),
            Err(CorruptReason::BadLength { len: 0, .. })
        ));
        assert!(matches!(
            decode_frame(&good[..good.len() - 1], 1024),
            Err(CorruptReason::Overrun {
                len: 18,
                available: 17
            })
        ));
        let mut flipped = good.clone();
        flipped[12] ^= 0x40;
        assert!(matches!(
            decode_frame(&flipped, 1024),
            Err(CorruptReason::Checksum { .. })
        ));
        // A body with a valid CRC that is not a record (bad enum tag).
        let mut bad_tag = good.clone();
        bad_tag[10] = 9;
        let crc = crc32fast::hash(&bad_tag[8..]);
        bad_tag[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_frame(&bad_tag, 1024),
            Err(CorruptReason::Decode(_))
        ));
        assert_eq!(skim_body(&bad_tag[8..]), None);
    }

    #[test]
    fn trailing_bytes_in_a_body_are_corruption() {
        let mut body = postcard::to_stdvec(&example()).unwrap();
        body.push(0);
        assert!(matches!(
            decode_body(&body),
            Err(CorruptReason::TrailingBytes { extra: 1 })
        ));
    }

    proptest! {
        #[test]
        fn frame_round_trips(records in proptest::collection::vec(strategy::record(), 1..5)) {
            let mut buf = Vec::new();
            for r in &records {
                encode_frame_into(r, &mut buf, u32::MAX).unwrap();
            }
            let mut pos = 0;
            for r in &records {
                let (got, len) = decode_frame(&buf[pos..], u32::MAX).unwrap();
                prop_assert_eq!(&got, r);
                // The spec'd body encoding is plain postcard.
                let body = &buf[pos + FRAME_HEADER_LEN..pos + len];
                let plain = postcard::to_stdvec(r).unwrap();
                prop_assert_eq!(body, plain.as_slice());
                prop_assert_eq!(skim_body(body), Some(r.seq));
                prop_assert_eq!(peek_seq(body), Some(r.seq));
                pos += len;
            }
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn decode_frame_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 1u32..512) {
            let _ = decode_frame(&bytes, max);
            let _ = skim_body(&bytes);
            let _ = peek_seq(&bytes);
        }
    }
}
