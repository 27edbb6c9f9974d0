//! Unit tests of the dump format: round trips, the worked examples of
//! `proto-docs/dump-format.md`, the checked-in version-1, -2 and -3
//! fixtures, the slot and (slot, key) order rules of versions 2 and 3,
//! and damage (every flipped byte, every truncation) found with its offset.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::cluster::SLOTS;

fn entry(key: &[u8], value: &[u8], version: u64, expires_at_ms: u64) -> DumpEntry {
    DumpEntry {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        version: Seq(version),
        expires_at_ms,
        kind: ValueKind::String,
    }
}

fn of_kind(kind: ValueKind, e: DumpEntry) -> DumpEntry {
    DumpEntry { kind, ..e }
}

fn write(header: &DumpHeader, entries: &[DumpEntry]) -> Vec<u8> {
    let mut w = DumpWriter::new(Vec::new(), header).unwrap();
    for e in entries {
        w.write_entry(e).unwrap();
    }
    let (out, summary) = w.finish().unwrap();
    assert_eq!(summary.entries, entries.len() as u64);
    assert_eq!(summary.file_bytes, out.len() as u64);
    out
}

fn read(bytes: &[u8]) -> Result<(DumpHeader, Vec<DumpEntry>, DumpSummary), DumpError> {
    let mut r = DumpReader::new(bytes)?;
    let mut got = Vec::new();
    for e in r.by_ref() {
        got.push(e?);
    }
    let summary = r
        .summary()
        .expect("an iteration without error verified the trailer");
    Ok((r.header().clone(), got, summary))
}

/// `entries` in the order a version-2 dump holds them: ascending (slot,
/// key), each key once (the first of duplicates kept).
fn in_dump_order(mut entries: Vec<DumpEntry>) -> Vec<DumpEntry> {
    entries.sort_by(|a, b| (a.slot(), &a.key).cmp(&(b.slot(), &b.key)));
    entries.dedup_by(|later, earlier| later.key == earlier.key);
    entries
}

fn sample() -> (DumpHeader, Vec<DumpEntry>) {
    (
        DumpHeader::new("n1", Seq(42), 1_800_000_000_000),
        in_dump_order(vec![
            // The empty key is a valid key (slot 0).
            entry(b"", b"empty key", 2, 0),
            entry(b"a", b"1", 3, 0),
            entry(&[0, 0xff, 7], &[9; 300], 17, 1_800_000_060_000),
            entry(b"empty", b"", 40, 0),
            entry(b"z", b"last", 42, 1),
        ]),
    )
}

// Dumps built by hand, frame by frame, so that tests can make files the
// writer refuses to make: version 1, wrong slots, out-of-order entries.

/// A header of any `version` with a correct CRC.
fn header_bytes(version: u32, header: &DumpHeader) -> Vec<u8> {
    let mut out = DUMP_MAGIC.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&header.seq.0.to_le_bytes());
    out.extend_from_slice(&header.created_at_ms.to_le_bytes());
    out.extend_from_slice(&(header.node.len() as u16).to_le_bytes());
    out.extend_from_slice(header.node.as_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The body of a version-1 or -2 entry: a string's, without the kind.
fn string_body(e: &DumpEntry) -> Vec<u8> {
    assert_eq!(e.kind, ValueKind::String, "versions 1 and 2 hold strings");
    postcard::to_stdvec(&(&e.key, &e.value, e.version, e.expires_at_ms)).unwrap()
}

/// A version-1 entry payload: kind, body.
fn v1_payload(e: &DumpEntry) -> Vec<u8> {
    let mut out = vec![KIND_ENTRY];
    out.extend_from_slice(&string_body(e));
    out
}

/// A version-2 entry payload claiming `slot`: kind, slot, body.
fn v2_payload(slot: u16, e: &DumpEntry) -> Vec<u8> {
    let mut out = vec![KIND_ENTRY];
    out.extend_from_slice(&slot.to_le_bytes());
    out.extend_from_slice(&string_body(e));
    out
}

/// A version-3 entry payload claiming `slot`: kind, slot, body with kind.
fn v3_payload(slot: u16, e: &DumpEntry) -> Vec<u8> {
    let mut out = vec![KIND_ENTRY];
    out.extend_from_slice(&slot.to_le_bytes());
    out.extend_from_slice(&postcard::to_stdvec(e).unwrap());
    out
}

/// A whole file: `header`, one frame per payload, a matching trailer.
/// Returns it with the offset of each entry frame.
fn assemble(header: Vec<u8>, payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<u64>) {
    let mut out = header;
    let mut offsets = Vec::new();
    let frame = |out: &mut Vec<u8>, payload: &[u8]| {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
    };
    for payload in payloads {
        offsets.push(out.len() as u64);
        frame(&mut out, payload);
    }
    let mut trailer = vec![KIND_TRAILER];
    trailer.extend_from_slice(&(payloads.len() as u64).to_le_bytes());
    trailer.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    frame(&mut out, &trailer);
    (out, offsets)
}

/// A version-1 dump of `entries`, in the order given.
fn v1_dump(header: &DumpHeader, entries: &[DumpEntry]) -> Vec<u8> {
    let payloads: Vec<Vec<u8>> = entries.iter().map(v1_payload).collect();
    assemble(header_bytes(1, header), &payloads).0
}

/// A version-2 dump of `entries` with their true slots, in the order given
/// (which may break the order rule); with the entry frame offsets.
fn v2_dump(header: &DumpHeader, entries: &[DumpEntry]) -> (Vec<u8>, Vec<u64>) {
    let payloads: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| v2_payload(e.slot().get(), e))
        .collect();
    assemble(header_bytes(2, header), &payloads)
}

/// A version-3 dump of `entries` with their true slots, in the order given;
/// with the entry frame offsets.
fn v3_dump(header: &DumpHeader, entries: &[DumpEntry]) -> (Vec<u8>, Vec<u64>) {
    let payloads: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| v3_payload(e.slot().get(), e))
        .collect();
    assemble(header_bytes(3, header), &payloads)
}

/// The entries of `tests/fixtures/dump-v1.sdump`, in file (key) order
/// (`tests/admin_dump.rs` lists the same).
fn fixture_entries() -> (DumpHeader, Vec<DumpEntry>) {
    let mut header = DumpHeader::new("fixture-node", Seq(12), 1_763_800_000_000);
    header.version = 1;
    (
        header,
        vec![
            entry(&[0x00, 0xff, 0x10], &[1, 2, 3, 0, 255], 8, 0),
            entry(b"alpha", b"first value", 3, 0),
            entry(b"beta/ttl", b"expires", 7, 1_900_000_000_000),
            entry(b"empty-value", b"", 9, 0),
            entry(
                "unicode-ключ".as_bytes(),
                "значение ✓".as_bytes(),
                12,
                2_000_000_000_123,
            ),
        ],
    )
}

/// The entries of `tests/fixtures/dump-v2.sdump`, in file order: ascending
/// (slot, key), which is not key order (`tests/admin_dump.rs` lists the
/// same). Slots: alpha 865, the binary key 4558, the unicode key 7912,
/// both `{user:1}` keys 10778 (one hash tag, one slot), beta/ttl 14028,
/// empty-value 15889.
fn v2_fixture_entries() -> (DumpHeader, Vec<DumpEntry>) {
    let mut header = DumpHeader::new("fixture-node", Seq(20), 1_764_000_000_000);
    header.version = 2;
    (
        header,
        vec![
            entry(b"alpha", b"first value", 3, 0),
            entry(&[0x00, 0xff, 0x10], &[1, 2, 3, 0, 255], 8, 0),
            entry(
                "unicode-ключ".as_bytes(),
                "значение ✓".as_bytes(),
                12,
                2_000_000_000_123,
            ),
            entry(b"{user:1}:email", b"ada@example.com", 15, 1_950_000_000_000),
            entry(b"{user:1}:name", b"Ada", 14, 0),
            entry(b"beta/ttl", b"expires", 7, 1_900_000_000_000),
            entry(b"empty-value", b"", 20, 0),
        ],
    )
}

/// The entries of `tests/fixtures/dump-v3.sdump`, in file order: strings
/// and the list `{user:1}:jobs` (`b a`), its metadata under its key and
/// its two elements under internal keys, which sort at the end of the
/// list's slot (10778). Slots: alpha 865, `{user:1}` 10778, beta/ttl
/// 14028.
fn v3_fixture_entries() -> (DumpHeader, Vec<DumpEntry>) {
    use crate::store::ListMeta;
    let meta = ListMeta {
        id: 17,
        head: (1 << 63) - 1,
        len: 2,
    };
    let list = Bytes::from_static(b"{user:1}:jobs");
    let element = |pos, value: &[u8], version| DumpEntry {
        key: meta.element(&list, pos),
        value: Bytes::copy_from_slice(value),
        version: Seq(version),
        expires_at_ms: 0,
        kind: ValueKind::String,
    };
    (
        DumpHeader::new("fixture-node", Seq(30), 1_765_000_000_000),
        vec![
            entry(b"alpha", b"first value", 3, 0),
            entry(b"{user:1}:email", b"ada@example.com", 15, 1_950_000_000_000),
            of_kind(
                ValueKind::List,
                entry(&list, &meta.encode(), 18, 1_960_000_000_000),
            ),
            element(0, b"b", 18),
            element(1, b"a", 17),
            entry(b"beta/ttl", b"expires", 7, 1_900_000_000_000),
        ],
    )
}

/// The reason of a `BadRecord` at `offset`; panics on anything else.
#[track_caller]
fn bad_record_at(
    result: Result<(DumpHeader, Vec<DumpEntry>, DumpSummary), DumpError>,
    offset: u64,
) -> String {
    match result {
        Err(e @ DumpError::BadRecord { .. }) => {
            assert_eq!(e.offset(), offset, "{e}");
            e.to_string()
        }
        other => panic!("expected a bad record at byte {offset}, got {other:?}"),
    }
}

#[test]
fn round_trip_keeps_header_and_entries() {
    let (header, entries) = sample();
    let bytes = write(&header, &entries);
    let (h, got, summary) = read(&bytes).unwrap();
    assert_eq!(h, header);
    assert_eq!(h.version, 3);
    assert_eq!(got, entries);
    assert_eq!(summary.entries, 5);
    assert_eq!(summary.file_bytes, bytes.len() as u64);
    assert_eq!(summary.data_bytes, 9 + 1 + 1 + 3 + 300 + 5 + 1 + 4);
}

#[test]
fn entry_frames_carry_the_key_slot_before_the_body() {
    let (header, entries) = sample();
    let bytes = write(&header, &entries);
    let (by_hand, _) = v3_dump(&header, &entries);
    assert_eq!(bytes, by_hand);
    // The first frame's payload: kind, then the slot of its key.
    let at = HEADER_FIXED_LEN + header.node.len() + 4 + FRAME_HEADER_LEN;
    assert_eq!(bytes[at], KIND_ENTRY);
    let slot = u16::from_le_bytes([bytes[at + 1], bytes[at + 2]]);
    assert_eq!(slot, entries[0].slot().get());
    assert_eq!(DumpEntry::slot(&entry(b"foo", b"", 1, 0)).get(), 12182);
}

#[test]
fn empty_dump_round_trips() {
    let header = DumpHeader::new("", Seq::ZERO, 0);
    let bytes = write(&header, &[]);
    let (h, got, summary) = read(&bytes).unwrap();
    assert_eq!(h, header);
    assert!(got.is_empty());
    assert_eq!(summary.entries, 0);
    let (h2, s2) = DumpReader::new(&bytes[..])
        .unwrap()
        .verify_to_end()
        .unwrap();
    assert_eq!((h2, s2), (header, summary));
}

#[test]
fn writer_refuses_what_the_format_cannot_hold() {
    let long = DumpHeader::new("x".repeat(MAX_NODE_NAME_BYTES + 1), Seq(1), 0);
    assert!(DumpWriter::new(Vec::new(), &long).is_err());
    let mut future = DumpHeader::new("n", Seq(1), 0);
    future.version = DUMP_VERSION + 1;
    assert!(DumpWriter::new(Vec::new(), &future).is_err());
    // Earlier versions are read, never written.
    for version in [1, 2] {
        let mut old = DumpHeader::new("n", Seq(1), 0);
        old.version = version;
        assert!(DumpWriter::new(Vec::new(), &old).is_err());
    }
}

#[test]
fn writer_refuses_entries_out_of_slot_key_order_and_writes_nothing_of_them() {
    // "a" sorts before "b" by key, but its slot (15495) is after b's (3300).
    let (a, b) = (entry(b"a", b"1", 1, 0), entry(b"b", b"2", 2, 0));
    assert!(a.slot() > b.slot());
    // One hash tag, one slot (15891, after both): there key order decides.
    let (ta, tb) = (entry(b"{t}a", b"3", 3, 0), entry(b"{t}b", b"4", 4, 0));
    assert_eq!(ta.slot(), tb.slot());
    assert!(a.slot() < ta.slot());

    let header = DumpHeader::new("n", Seq(9), 0);
    let mut w = DumpWriter::new(Vec::new(), &header).unwrap();
    w.write_entry(&b).unwrap();
    w.write_entry(&a).unwrap();
    let before = (w.entries(), w.bytes_written());
    // An earlier slot, then the same (slot, key) again.
    for refused in [&b, &a] {
        let err = w.write_entry(refused).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        let message = err.to_string();
        assert!(
            message.contains("out of order") && message.contains("(slot, key)"),
            "{message}"
        );
        assert_eq!((w.entries(), w.bytes_written()), before);
    }
    w.write_entry(&tb).unwrap();
    // The same slot, a smaller key.
    let err = w.write_entry(&ta).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("\"{t}a\" (slot 15891)"), "{err}");
    let (out, summary) = w.finish().unwrap();
    assert_eq!(summary.entries, 3);
    // Nothing of the refused entries is in the file.
    assert_eq!(out, v3_dump(&header, &[b.clone(), a.clone(), tb.clone()]).0);
    assert_eq!(read(&out).unwrap().1, [b, a, tb]);
}

/// The worked example in proto-docs/dump-format.md (section "Worked
/// example", version 3), byte for byte.
#[test]
fn bytes_match_the_worked_example_in_the_format_doc() {
    let header = DumpHeader::new("n1", Seq(7), 1_800_000_000_000);
    let bytes = write(&header, &[entry(b"k1", b"hello", 5, 0)]);
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        // header
        0x53, 0x54, 0x52, 0x41, 0x44, 0x55, 0x4d, 0x50, // "STRADUMP"
        0x03, 0x00, 0x00, 0x00,                         // version 3
        0x00, 0x00, 0x00, 0x00,                         // reserved
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // seq 7
        0x00, 0x50, 0x5c, 0x18, 0xa3, 0x01, 0x00, 0x00, // created_at_ms 1800000000000
        0x02, 0x00,                                     // node name length 2
        0x6e, 0x31,                                     // "n1"
        0xfc, 0x95, 0x8a, 0x82,                         // header crc 0x828a95fc
        // entry frame
        0x0f, 0x00, 0x00, 0x00,                         // len 15
        0x07, 0x34, 0x2c, 0xd5,                         // crc of the payload 0xd52c3407
        0x01,                                           // kind 1: entry
        0xa2, 0x31,                                     // slot 12706 = 0x31a2, the slot of "k1"
        0x02, 0x6b, 0x31,                               // key: len 2, "k1"
        0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f,             // value: len 5, "hello"
        0x05,                                           // version 5
        0x00,                                           // expires_at_ms 0
        0x00,                                           // kind 0: string
        // trailer frame
        0x0d, 0x00, 0x00, 0x00,                         // len 13
        0x4c, 0x12, 0x10, 0x18,                         // crc of the payload 0x1810124c
        0x02,                                           // kind 2: trailer
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1 entry
        0x93, 0xa4, 0xb0, 0x09,                         // crc of bytes 0..63: 0x09b0a493
    ];
    assert_eq!(
        bytes,
        expected,
        "\n got: {}\nwant: {}",
        hex::encode(&bytes),
        hex::encode(&expected)
    );
}

/// The version-2 example in proto-docs/dump-format.md (section "Versions
/// and compatibility"): still read, and laid out like the hand-built
/// version-2 dumps below.
#[test]
fn v2_example_in_the_format_doc_still_reads() {
    #[rustfmt::skip]
    let v2: Vec<u8> = vec![
        // header
        0x53, 0x54, 0x52, 0x41, 0x44, 0x55, 0x4d, 0x50, // "STRADUMP"
        0x02, 0x00, 0x00, 0x00,                         // version 2
        0x00, 0x00, 0x00, 0x00,                         // reserved
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // seq 7
        0x00, 0x50, 0x5c, 0x18, 0xa3, 0x01, 0x00, 0x00, // created_at_ms 1800000000000
        0x02, 0x00,                                     // node name length 2
        0x6e, 0x31,                                     // "n1"
        0xe1, 0x68, 0x3f, 0x83,                         // header crc 0x833f68e1
        // entry frame
        0x0e, 0x00, 0x00, 0x00,                         // len 14
        0x04, 0x93, 0x1f, 0x43,                         // crc of the payload 0x431f9304
        0x01,                                           // kind 1: entry
        0xa2, 0x31,                                     // slot 12706 = 0x31a2, the slot of "k1"
        0x02, 0x6b, 0x31,                               // key: len 2, "k1"
        0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f,             // value: len 5, "hello"
        0x05,                                           // version 5
        0x00,                                           // expires_at_ms 0
        // trailer frame
        0x0d, 0x00, 0x00, 0x00,                         // len 13
        0x30, 0x1e, 0x32, 0x87,                         // crc of the payload 0x87321e30
        0x02,                                           // kind 2: trailer
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1 entry
        0xc6, 0xbe, 0x5e, 0xb0,                         // crc of bytes 0..62: 0xb05ebec6
    ];
    let header = DumpHeader::new("n1", Seq(7), 1_800_000_000_000);
    let k1 = entry(b"k1", b"hello", 5, 0);
    let (h, got, _) = read(&v2).unwrap();
    assert_eq!(h.version, 2);
    assert_eq!(got, std::slice::from_ref(&k1));
    assert_eq!(v2_dump(&header, &[k1]).0, v2);
}

/// The version-1 example in proto-docs/dump-format.md (section "Versions
/// and compatibility"): still read, and the hand-built version-1 dumps
/// below are laid out exactly like it.
#[test]
fn v1_example_in_the_format_doc_still_reads() {
    #[rustfmt::skip]
    let v1: Vec<u8> = vec![
        0x53, 0x54, 0x52, 0x41, 0x44, 0x55, 0x4d, 0x50, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x50, 0x5c, 0x18, 0xa3, 0x01, 0x00, 0x00, 0x02, 0x00, 0x6e, 0x31,
        0xc6, 0x6f, 0xe1, 0x81,
        0x0c, 0x00, 0x00, 0x00, 0x77, 0x20, 0x1f, 0x13,
        0x01, 0x02, 0x6b, 0x31, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x05, 0x00,
        0x0d, 0x00, 0x00, 0x00, 0x48, 0x01, 0x19, 0x30,
        0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xaf, 0x26, 0x8c, 0x8b,
    ];
    let k1 = entry(b"k1", b"hello", 5, 0);
    let (header, got, summary) = read(&v1).unwrap();
    assert_eq!(header.version, 1);
    assert_eq!((header.node.as_str(), header.seq), ("n1", Seq(7)));
    assert_eq!(got, std::slice::from_ref(&k1));
    assert_eq!(summary.file_bytes, 81);
    assert_eq!(
        v1_dump(&DumpHeader::new("n1", Seq(7), 1_800_000_000_000), &[k1]),
        v1
    );
}

/// Version 1 is read as it always was: no slot bytes, and entries in any
/// order, duplicates included (restore applies them in file order).
#[test]
fn v1_is_read_without_slots_or_an_order_rule() {
    let header = DumpHeader::new("old", Seq(9), 5);
    // Descending keys, slots in no order ("b" 3300, "a" 15495, "" 0), and
    // a repeated key.
    let entries = vec![
        entry(b"b", b"2", 2, 0),
        entry(b"a", b"1", 1, 0),
        entry(b"", b"empty", 3, 0),
        entry(b"b", b"again", 4, 0),
    ];
    let (h, got, summary) = read(&v1_dump(&header, &entries)).unwrap();
    assert_eq!(h.version, 1);
    assert_eq!(got, entries);
    assert_eq!(summary.entries, 4);
    // The same entries as version 2 break its order rule at the empty
    // key (slot 0 after slot 15495).
    let (v2, offsets) = v2_dump(&header, &entries);
    let reason = bad_record_at(read(&v2), offsets[2]);
    assert!(reason.contains("out of order"), "{reason}");
}

/// A version-1 body read as version 2 (its first two bytes taken for a
/// slot) is refused, not misread: the version decides the layout.
#[test]
fn v1_frames_under_a_v2_header_are_refused() {
    let header = DumpHeader::new("n", Seq(1), 0);
    let e = entry(b"k1", b"hello", 1, 0);
    let (bytes, offsets) = assemble(header_bytes(2, &header), &[v1_payload(&e)]);
    bad_record_at(read(&bytes), offsets[0]);
}

#[test]
fn v2_entry_whose_slot_is_not_its_keys_is_a_bad_record_at_its_frame() {
    let header = DumpHeader::new("n", Seq(9), 0);
    let first = entry(b"alpha", b"1", 1, 0); // slot 865
    let bad = entry(b"bad\xffkey", b"2", 2, 0); // slot 8899
    assert_eq!(bad.slot().get(), 8899);
    let payloads = [
        v2_payload(first.slot().get(), &first),
        v2_payload(8900, &bad),
    ];
    let (bytes, offsets) = assemble(header_bytes(2, &header), &payloads);
    let mut r = DumpReader::new(&bytes[..]).unwrap();
    assert_eq!(r.next().unwrap().unwrap(), first);
    let err = r.next().unwrap().unwrap_err();
    assert!(matches!(err, DumpError::BadRecord { .. }), "{err}");
    assert_eq!(err.offset(), offsets[1]);
    let message = err.to_string();
    assert!(
        message.contains(&format!("at byte {}", offsets[1]))
            && message.contains("slot 8900")
            && message.contains("8899")
            && message.contains(r#""bad\xffkey""#),
        "{message}"
    );
    assert!(r.next().is_none());

    // A slot number that is no slot at all.
    let payloads = [v2_payload(SLOTS, &first)];
    let (bytes, offsets) = assemble(header_bytes(2, &header), &payloads);
    let reason = bad_record_at(read(&bytes), offsets[0]);
    assert!(
        reason.contains("16384") && reason.contains("out of range"),
        "{reason}"
    );
    // A payload too short to hold a slot.
    let (bytes, offsets) = assemble(header_bytes(2, &header), &[vec![KIND_ENTRY, 0]]);
    let reason = bad_record_at(read(&bytes), offsets[0]);
    assert!(reason.contains("too short"), "{reason}");
}

#[test]
fn v2_entries_out_of_slot_key_order_are_a_bad_record() {
    let header = DumpHeader::new("n", Seq(9), 0);
    let (a, b) = (entry(b"a", b"1", 1, 0), entry(b"b", b"2", 2, 0));
    let (ta, tb) = (entry(b"{t}a", b"3", 3, 0), entry(b"{t}b", b"4", 4, 0));
    for (case, entries) in [
        // Ascending keys, descending slots (15495, then 3300).
        ("key order", vec![a.clone(), b.clone()]),
        ("duplicate", vec![b.clone(), a.clone(), a.clone()]),
        (
            "same slot, smaller key",
            vec![b.clone(), tb.clone(), ta.clone()],
        ),
    ] {
        let (bytes, offsets) = v2_dump(&header, &entries);
        let bad_at = *offsets.last().unwrap();
        let reason = bad_record_at(read(&bytes), bad_at);
        assert!(reason.contains("out of order"), "{case}: {reason}");
    }
    // In (slot, key) order the same entries read.
    let ok = [b.clone(), a.clone(), ta.clone(), tb.clone()];
    assert_eq!(read(&v2_dump(&header, &ok).0).unwrap().1, ok);
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compatibility: the checked-in version-1 dump still reads, with exactly
/// the entries it was written with.
#[test]
fn checked_in_v1_fixture_reads() {
    let bytes = std::fs::read(fixture_path("dump-v1.sdump")).unwrap();
    let (header, entries) = fixture_entries();
    let (h, got, _) = read(&bytes).unwrap();
    assert_eq!(h, header);
    assert_eq!(got, entries);
    // It was written by the version-1 writer, frame for frame as built here.
    assert_eq!(v1_dump(&header, &entries), bytes);
}

/// Compatibility: the checked-in version-2 dump reads, with exactly its
/// entries, in (slot, key) order. It was written once by this build's
/// `DumpWriter` from `v2_fixture_entries()` (a throwaway test that wrote
/// `write(&header, &entries)` to the file, since removed) and checked in;
/// never regenerate it: later builds must read these bytes as they are.
#[test]
fn checked_in_v2_fixture_reads() {
    let bytes = std::fs::read(fixture_path("dump-v2.sdump")).unwrap();
    let (header, entries) = v2_fixture_entries();
    let (h, got, summary) = read(&bytes).unwrap();
    assert_eq!(h, header);
    assert_eq!(h.version, 2);
    assert_eq!(got, entries);
    assert_eq!(summary.entries, 7);
    assert_eq!(in_dump_order(got.clone()), got);
    assert_eq!(
        got[3].slot(),
        got[4].slot(),
        "the {{user:1}} keys share a slot"
    );
    let mut by_key = got.clone();
    by_key.sort_by(|x, y| x.key.cmp(&y.key));
    assert_ne!(by_key, got, "slot order is not key order here");
    // Every entry frame holds its key's slot.
    assert_eq!(v2_dump(&header, &entries).0, bytes);
}

/// Compatibility: the checked-in version-3 dump reads, with exactly its
/// entries: strings and a list, its elements under internal keys at the
/// end of its slot. Written once by this build's `DumpWriter` from
/// `v3_fixture_entries()` (a throwaway test that wrote it, since removed)
/// and checked in; never regenerate it.
#[test]
fn checked_in_v3_fixture_reads() {
    let bytes = std::fs::read(fixture_path("dump-v3.sdump")).unwrap();
    let (header, entries) = v3_fixture_entries();
    let (h, got, summary) = read(&bytes).unwrap();
    assert_eq!(h, header);
    assert_eq!(h.version, 3);
    assert_eq!(got, entries);
    assert_eq!(summary.entries, 6);
    assert_eq!(got[2].kind, ValueKind::List);
    assert!(got[3..5].iter().all(|e| e.slot() == got[2].slot()));
    assert_eq!(v3_dump(&header, &entries).0, bytes);
}

/// While this build writes version 3, it writes the v3 fixture's exact
/// bytes: an accidental change to the format fails here.
#[test]
fn writer_reproduces_the_v3_fixture_while_it_writes_v3() {
    assert_eq!(
        DUMP_VERSION, 3,
        "a new version: add its fixture and move this test to it"
    );
    let (header, entries) = v3_fixture_entries();
    assert_eq!(
        write(&header, &entries),
        std::fs::read(fixture_path("dump-v3.sdump")).unwrap()
    );
}

/// A version-1 or -2 entry whose key has the prefix this build keeps for
/// list elements is refused: restored, it would be unreachable.
#[test]
fn reserved_keys_in_a_string_only_version_are_a_bad_record() {
    let header = DumpHeader::new("n", Seq(9), 0);
    let reserved = entry(&[0xff, 0xff, 0xff, 0xff, b'x'], b"v", 1, 0);
    let (v2, offsets) = v2_dump(&header, std::slice::from_ref(&reserved));
    let reason = bad_record_at(read(&v2), offsets[0]);
    assert!(reason.contains("ff ff ff ff"), "{reason}");
    let v1 = v1_dump(&header, std::slice::from_ref(&reserved));
    assert!(matches!(read(&v1), Err(DumpError::BadRecord { .. })));
}

#[test]
fn every_flipped_byte_is_found_at_or_before_its_offset() {
    let (header, entries) = sample();
    let bytes = write(&header, &entries);
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut damaged = bytes.clone();
            damaged[i] ^= bit;
            match read(&damaged) {
                Ok(_) => panic!("flip of bit {bit:#x} at byte {i} went unnoticed"),
                Err(e) => assert!(e.offset() <= i as u64, "byte {i}: {e} names a later offset"),
            }
        }
    }
}

#[test]
fn every_truncation_is_found() {
    let (header, entries) = sample();
    let bytes = write(&header, &entries);
    for len in 0..bytes.len() {
        match read(&bytes[..len]) {
            Ok(_) => panic!("dump cut to {len} bytes read as complete"),
            Err(e @ (DumpError::Truncated { .. } | DumpError::MissingTrailer { .. })) => {
                assert!(e.offset() <= len as u64, "{len}: {e}");
            }
            Err(e) => panic!("cut to {len}: unexpected {e}"),
        }
    }
    // Cut exactly after the header and after each entry: no trailer.
    let err = read(&bytes[..bytes.len() - FRAME_HEADER_LEN - 1 - TRAILER_BODY_LEN]).unwrap_err();
    assert!(
        matches!(err, DumpError::MissingTrailer { entries: 5, .. }),
        "{err}"
    );
}

#[test]
fn entries_before_damage_are_yielded_then_one_error_then_nothing() {
    let (header, entries) = sample();
    let mut bytes = write(&header, &entries);
    let at = bytes.len() - 30;
    bytes[at] ^= 0x10;
    let mut r = DumpReader::new(&bytes[..]).unwrap();
    let mut good = 0;
    let err = loop {
        match r.next().expect("an error before the end") {
            Ok(_) => good += 1,
            Err(e) => break e,
        }
    };
    assert!(good < entries.len());
    assert!(matches!(err, DumpError::Checksum { .. }), "{err}");
    assert!(r.next().is_none());
    assert!(r.summary().is_none());
}

#[test]
fn other_files_versions_and_trailing_bytes_are_refused() {
    assert!(matches!(
        read(b"hello, this is not a dump at all, not even close"),
        Err(DumpError::BadMagic { .. })
    ));
    assert!(matches!(read(b"{}"), Err(DumpError::BadMagic { .. })));
    assert!(matches!(read(b"STRA"), Err(DumpError::Truncated { .. })));
    assert!(matches!(read(b""), Err(DumpError::Truncated { .. })));

    let (header, entries) = sample();
    let bytes = write(&header, &entries);
    for version in [0u32, 4, u32::MAX] {
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&version.to_le_bytes());
        match read(&newer) {
            Err(e @ DumpError::UnsupportedVersion { version: v }) if v == version => {
                assert_eq!(e.offset(), 8);
                assert!(e.to_string().contains("reads versions 1 to 3"), "{e}");
            }
            other => panic!("version {version}: {other:?}"),
        }
    }
    // With a correct header CRC too: version 4 is refused, not guessed at.
    let (v4, _) = assemble(header_bytes(4, &header), &[]);
    assert!(matches!(
        read(&v4),
        Err(DumpError::UnsupportedVersion { version: 4 })
    ));

    let mut extra = bytes.clone();
    extra.push(0);
    match read(&extra) {
        Err(DumpError::TrailingBytes { offset }) => assert_eq!(offset, bytes.len() as u64),
        other => panic!("{other:?}"),
    }

    // A frame with a valid CRC but a kind this version does not know.
    let mut unknown = bytes[..bytes.len() - (FRAME_HEADER_LEN + 1 + TRAILER_BODY_LEN)].to_vec();
    let at = unknown.len() as u64;
    let payload = [9u8, 1, 2, 3];
    unknown.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    unknown.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    unknown.extend_from_slice(&payload);
    match read(&unknown) {
        Err(DumpError::UnknownKind { offset, kind: 9 }) => assert_eq!(offset, at),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lying_length_is_bounded_by_the_limit() {
    let (header, entries) = sample();
    let bytes = write(&header, &entries);
    let first_frame = HEADER_FIXED_LEN + header.node.len() + 4;
    let mut long = bytes.clone();
    long[first_frame..first_frame + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    match read(&long) {
        Err(DumpError::BadLength { offset, .. }) => assert_eq!(offset, first_frame as u64),
        other => panic!("{other:?}"),
    }
    let r = DumpReader::new(&bytes[..])
        .unwrap()
        .with_max_frame_bytes(100);
    let err = r.verify_to_end().unwrap_err();
    assert!(
        matches!(err, DumpError::BadLength { len, max: 100, .. } if len > 100),
        "{err}"
    );
}

fn arb_entry() -> impl Strategy<Value = DumpEntry> {
    (
        proptest::collection::vec(any::<u8>(), 1..40),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(k, v, version, exp, list)| {
            let kind = if list {
                ValueKind::List
            } else {
                ValueKind::String
            };
            of_kind(kind, entry(&k, &v, version, exp))
        })
}

proptest! {
    #[test]
    fn any_entries_round_trip(
        node in "[a-z0-9.-]{0,40}",
        seq in any::<u64>(),
        created in any::<u64>(),
        entries in proptest::collection::vec(arb_entry(), 0..20),
    ) {
        let header = DumpHeader::new(node, Seq(seq), created);
        let entries = in_dump_order(entries);
        let bytes = write(&header, &entries);
        let (h, got, _) = read(&bytes).unwrap();
        prop_assert_eq!(h, header);
        prop_assert_eq!(got, entries);
    }

    /// Writer and reader agree on the order rule: a sequence is written
    /// and read whole exactly when it is strictly ascending in (slot, key);
    /// otherwise the writer refuses the first entry that breaks it, and
    /// the reader names that entry's frame.
    #[test]
    fn writer_and_reader_enforce_the_same_order(
        entries in proptest::collection::vec(arb_entry(), 0..12),
    ) {
        let header = DumpHeader::new("n", Seq(1), 0);
        let first_bad = (1..entries.len()).find(|&i| {
            (entries[i].slot(), &entries[i].key) <= (entries[i - 1].slot(), &entries[i - 1].key)
        });
        let mut w = DumpWriter::new(Vec::new(), &header).unwrap();
        let refused = entries.iter().position(|e| w.write_entry(e).is_err());
        prop_assert_eq!(refused, first_bad);
        let (bytes, offsets) = v3_dump(&header, &entries);
        match (read(&bytes), first_bad) {
            (Ok((_, got, _)), None) => prop_assert_eq!(got, entries),
            (Err(e @ DumpError::BadRecord { .. }), Some(i)) => {
                prop_assert_eq!(e.offset(), offsets[i]);
                prop_assert!(e.to_string().contains("out of order"));
            }
            (other, _) => prop_assert!(false, "{:?} for first_bad {:?}", other.map(|r| r.1), first_bad),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = read(&data);
        let mut prefixed = DUMP_MAGIC.to_vec();
        prefixed.extend_from_slice(&data);
        let _ = read(&prefixed);
    }

    #[test]
    fn damaged_dumps_never_yield_an_entry_that_was_not_written(
        entries in proptest::collection::vec(arb_entry(), 1..8),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let entries = in_dump_order(entries);
        let bytes = write(&DumpHeader::new("n", Seq(1), 0), &entries);
        let mut damaged = bytes.clone();
        for (at, x) in flips {
            let i = at.index(damaged.len());
            damaged[i] ^= x;
        }
        let Ok(r) = DumpReader::new(&damaged[..]) else { return Ok(()); };
        let mut got = Vec::new();
        let mut failed = false;
        for e in r {
            match e {
                Ok(e) => got.push(e),
                Err(_) => { failed = true; break; }
            }
        }
        prop_assert!(got.len() <= entries.len());
        prop_assert_eq!(&got[..], &entries[..got.len()]);
        prop_assert!(failed || damaged == bytes);
    }
}
