//! The replication protocol between nodes (sans-io): messages and framing.
//! Byte-level spec: `proto-docs/replication.md`.
//!
//! A replica opens one QUIC connection (ALPN [`crate::net::REPL_ALPN`],
//! mutual TLS) and one bidirectional *control* stream. It sends
//! [`ToPrimary::Hello`]; the primary answers [`ToReplica::Welcome`] and then
//! streams [`ToReplica::Records`] on it, while the replica sends
//! [`ToPrimary::Ack`]s back. A full sync travels on its own unidirectional
//! stream opened by the primary: [`SnapshotFrame::Chunk`]s, then
//! [`SnapshotFrame::Done`].
//!
//! Frames are the node links' (`crate::net::link`, re-exported here):
//! `[u32 len][u32 crc32(body)][body]`, little-endian, with a postcard body;
//! enums are encoded by variant index, so variants are only ever appended.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::SnapshotEntry;
use crate::types::{Epoch, ReplId, Seq};
use crate::wal::WalRecord;

/// Version of this protocol, sent in `Hello`. 2: full-sync chunks come in
/// (slot, key) order, the disk tier's since keys carry their slot, so a
/// resume point of version 1 (key order) would skip or repeat keys. 3:
/// each full-sync entry ends with its value's kind (`SnapshotEntry::kind`).
pub const REPL_PROTOCOL: u32 = 3;

pub use crate::net::link::{
    FRAME_HEADER_BYTES, FrameError, MAX_FRAME_BYTES, decode_body, decode_header, encode,
};

/// Where a replica stands in a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The history its records belong to.
    pub repl_id: ReplId,
    /// The epoch of that history.
    pub epoch: Epoch,
    /// Its last applied seq.
    pub seq: Seq,
}

/// An unfinished full-sync install the replica wants to continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The primary's snapshot it was installing.
    pub snapshot_id: u64,
    /// The last key it installed.
    pub last_key: Option<Bytes>,
    /// Entries installed so far.
    pub entries: u64,
    /// Key + value bytes installed so far.
    pub bytes: u64,
}

/// Replica to primary, on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToPrimary {
    /// First frame: who the replica is and where it stands.
    // wire index 0
    Hello {
        /// [`REPL_PROTOCOL`].
        protocol: u32,
        /// The replica's name (for metrics and logs).
        node: String,
        /// Its history and last applied seq.
        position: Position,
        /// A full sync it can continue instead of starting over.
        resume: Option<Resume>,
    },
    /// Progress: records received and appended to its WAL, and records
    /// fsynced there.
    // wire index 1
    Ack {
        /// Last seq appended to the replica's WAL (and applied).
        received: Seq,
        /// Last seq fsynced in the replica's WAL.
        durable: Seq,
    },
    /// The snapshot at `seq` is installed; stream records after it.
    // wire index 2
    Installed {
        /// The snapshot's seq.
        seq: Seq,
    },
}

/// How the primary will bring the replica up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Start {
    /// Records follow on the control stream from this seq on.
    // wire index 0
    Stream {
        /// The first seq that will be sent.
        from: Seq,
    },
    /// A snapshot follows on a unidirectional stream.
    // wire index 1
    FullSync {
        /// Names the snapshot (for resuming).
        snapshot_id: u64,
        /// The seq the snapshot covers.
        seq: Seq,
        /// Live entries in the snapshot.
        total_entries: u64,
        /// Key + value bytes in the snapshot.
        total_bytes: u64,
        /// The transfer continues after this key (a resumed transfer).
        resume_after: Option<Bytes>,
    },
}

/// Primary to replica, on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToReplica {
    /// Answer to `Hello`.
    // wire index 0
    Welcome {
        /// The primary's history, which the replica adopts.
        repl_id: ReplId,
        /// The primary's epoch.
        epoch: Epoch,
        /// The history the primary continued at promotion, and the last seq
        /// of it: a replica of that history up to there can continue.
        previous: Option<Position>,
        /// Where clients reach the primary (for `ReadOnlyReplica` hints).
        client_addr: Option<String>,
        /// Stream or full sync.
        start: Start,
    },
    /// Answer to `Hello`: the primary will not serve this replica.
    // wire index 1
    Refused {
        /// Why, for the replica's log.
        reason: String,
    },
    /// Consecutive records.
    // wire index 2
    Records {
        /// In seq order, continuing exactly where the last frame ended.
        records: Vec<WalRecord>,
        /// The primary's newest seq when sent (for the replica's lag).
        primary_last: Seq,
    },
    /// Sent when idle, so the replica knows the link and its lag.
    // wire index 3
    Heartbeat {
        /// The primary's newest seq.
        primary_last: Seq,
    },
}

/// Primary to replica, on the full-sync stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotFrame {
    /// Entries in key order, lz4-compressed postcard `Vec<SnapshotEntry>`.
    // wire index 0
    Chunk {
        /// Entries in the chunk.
        entries: u32,
        /// Length of the uncompressed postcard encoding.
        raw_len: u32,
        /// CRC-32 of the uncompressed encoding.
        raw_crc: u32,
        /// The lz4 block.
        compressed: Bytes,
    },
    /// Every entry was sent.
    // wire index 1
    Done {
        /// The snapshot's seq.
        seq: Seq,
    },
}

/// Packs snapshot entries into a chunk frame.
pub fn pack_chunk(entries: &[SnapshotEntry]) -> SnapshotFrame {
    #[expect(clippy::expect_used, reason = "bytes and integers always encode")]
    let raw = postcard::to_allocvec(entries).expect("snapshot entries encode");
    SnapshotFrame::Chunk {
        entries: entries.len() as u32,
        raw_len: raw.len() as u32,
        raw_crc: crc32fast::hash(&raw),
        compressed: Bytes::from(lz4_flex::block::compress(&raw)),
    }
}

/// Unpacks and checks a chunk's entries.
pub fn unpack_chunk(
    entries: u32,
    raw_len: u32,
    raw_crc: u32,
    compressed: &[u8],
) -> Result<Vec<SnapshotEntry>, FrameError> {
    if raw_len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: raw_len });
    }
    let raw = lz4_flex::block::decompress(compressed, raw_len as usize)
        .map_err(|e| FrameError::Decode(format!("chunk decompression: {e}")))?;
    let computed = crc32fast::hash(&raw);
    if computed != raw_crc {
        return Err(FrameError::Checksum {
            stored: raw_crc,
            computed,
        });
    }
    let list: Vec<SnapshotEntry> =
        postcard::from_bytes(&raw).map_err(|e| FrameError::Decode(e.to_string()))?;
    if list.len() != entries as usize {
        return Err(FrameError::Decode(format!(
            "chunk says {entries} entries, holds {}",
            list.len()
        )));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Mutation;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(msg: T) {
        let frame = encode(&msg);
        let header: [u8; FRAME_HEADER_BYTES] = frame[..FRAME_HEADER_BYTES].try_into().unwrap();
        let (len, crc) = decode_header(header).unwrap();
        assert_eq!(len as usize, frame.len() - FRAME_HEADER_BYTES);
        let back: T = decode_body(crc, &frame[FRAME_HEADER_BYTES..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn messages_round_trip() {
        let position = Position {
            repl_id: ReplId([7; 16]),
            epoch: Epoch(3),
            seq: Seq(42),
        };
        round_trip(ToPrimary::Hello {
            protocol: REPL_PROTOCOL,
            node: "n2".into(),
            position,
            resume: Some(Resume {
                snapshot_id: 9,
                last_key: Some(Bytes::from_static(b"k")),
                entries: 1,
                bytes: 2,
            }),
        });
        round_trip(ToPrimary::Ack {
            received: Seq(5),
            durable: Seq(4),
        });
        round_trip(ToReplica::Records {
            records: vec![WalRecord {
                seq: Seq(1),
                mutations: vec![Mutation::Delete {
                    key: Bytes::from_static(b"x"),
                }],
            }],
            primary_last: Seq(1),
        });
        round_trip(ToReplica::Welcome {
            repl_id: ReplId([1; 16]),
            epoch: Epoch(1),
            previous: Some(position),
            client_addr: Some("127.0.0.1:7379".into()),
            start: Start::FullSync {
                snapshot_id: 1,
                seq: Seq(10),
                total_entries: 3,
                total_bytes: 30,
                resume_after: None,
            },
        });
    }

    /// The examples in proto-docs/replication.md §3.
    #[test]
    fn worked_examples() {
        let hex = |bytes: &[u8]| {
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let ack = ToPrimary::Ack {
            received: Seq(5),
            durable: Seq(4),
        };
        assert_eq!(hex(&encode(&ack)), "03 00 00 00 79 83 99 84 01 05 04");
        let installed = ToPrimary::Installed { seq: Seq(42) };
        assert_eq!(hex(&encode(&installed)), "02 00 00 00 ab b9 54 a8 02 2a");
    }

    #[test]
    fn damage_is_detected() {
        let mut frame = encode(&ToPrimary::Installed { seq: Seq(3) });
        let last = frame.len() - 1;
        frame[last] ^= 0x40;
        let header: [u8; FRAME_HEADER_BYTES] = frame[..FRAME_HEADER_BYTES].try_into().unwrap();
        let (_, crc) = decode_header(header).unwrap();
        let err = decode_body::<ToPrimary>(crc, &frame[FRAME_HEADER_BYTES..]).unwrap_err();
        assert!(matches!(err, FrameError::Checksum { .. }), "{err}");

        let mut huge = [0u8; FRAME_HEADER_BYTES];
        huge[..4].copy_from_slice(&(MAX_FRAME_BYTES + 1).to_le_bytes());
        assert!(matches!(
            decode_header(huge),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn chunks_round_trip_and_reject_damage() {
        let entries: Vec<SnapshotEntry> = (0..100u64)
            .map(|i| SnapshotEntry {
                key: Bytes::from(format!("key-{i:05}")),
                version: Seq(i + 1),
                expires_at_ms: if i % 2 == 0 { 0 } else { 1_000 + i },
                value: Bytes::from(vec![b'v'; 64]),
                kind: if i % 3 == 0 {
                    crate::types::ValueKind::List
                } else {
                    crate::types::ValueKind::String
                },
            })
            .collect();
        let SnapshotFrame::Chunk {
            entries: n,
            raw_len,
            raw_crc,
            compressed,
        } = pack_chunk(&entries)
        else {
            unreachable!()
        };
        assert!(
            compressed.len() < raw_len as usize,
            "repetitive values compress"
        );
        assert_eq!(
            unpack_chunk(n, raw_len, raw_crc, &compressed).unwrap(),
            entries
        );
        let mut bad = compressed.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(unpack_chunk(n, raw_len, raw_crc, &bad).is_err());
        assert!(unpack_chunk(n + 1, raw_len, raw_crc, &compressed).is_err());
    }

    /// Decodes a frame of raw bytes as every message type, with its own CRC
    /// and with a matching one (to reach postcard): typed errors, no panic.
    fn decode_all(bytes: &[u8]) {
        if bytes.len() < FRAME_HEADER_BYTES {
            return;
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header.copy_from_slice(&bytes[..FRAME_HEADER_BYTES]);
        let body = &bytes[FRAME_HEADER_BYTES..];
        if let Ok((_, crc)) = decode_header(header) {
            let _ = decode_body::<ToPrimary>(crc, body);
        }
        let crc = crc32fast::hash(body);
        let _ = decode_body::<ToPrimary>(crc, body);
        let _ = decode_body::<ToReplica>(crc, body);
        let _ = decode_body::<SnapshotFrame>(crc, body);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            decode_all(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8),
            cut in 0usize..4096,
        ) {
            let records = (1..5)
                .map(|i| crate::wal::WalRecord {
                    seq: Seq(i),
                    mutations: vec![Mutation::Put {
                        key: bytes::Bytes::from(vec![b'k'; i as usize]),
                        value: bytes::Bytes::from(vec![b'v'; 40]),
                        expires_at_ms: i,
                    }],
                })
                .collect();
            let mut frame = encode(&ToReplica::Records { records, primary_last: Seq(9) });
            for (at, x) in flips {
                let at = FRAME_HEADER_BYTES + at % (frame.len() - FRAME_HEADER_BYTES);
                frame[at] ^= x | 1;
            }
            frame.truncate(FRAME_HEADER_BYTES.max(cut % (frame.len() + 1)));
            decode_all(&frame);
        }

        #[test]
        fn arbitrary_chunks_never_panic(
            entries in proptest::prelude::any::<u32>(),
            raw_len in 0u32..(1 << 16),
            raw_crc in proptest::prelude::any::<u32>(),
            compressed in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let _ = unpack_chunk(entries, raw_len, raw_crc, &compressed);
            // With the CRC of whatever decompresses, to reach the decoder.
            if let Ok(raw) = lz4_flex::block::decompress(&compressed, raw_len as usize) {
                let _ = unpack_chunk(entries, raw_len, crc32fast::hash(&raw), &compressed);
            }
        }
    }
}
