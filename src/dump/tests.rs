//! Unit tests of the dump format: round trips, the worked example of
//! `proto-docs/dump-format.md`, the checked-in version-1 fixture, and
//! damage (every flipped byte, every truncation) found with its offset.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn entry(key: &[u8], value: &[u8], version: u64, expires_at_ms: u64) -> DumpEntry {
    DumpEntry {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        version: Seq(version),
        expires_at_ms,
    }
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

fn sample() -> (DumpHeader, Vec<DumpEntry>) {
    (
        DumpHeader::new("n1", Seq(42), 1_800_000_000_000),
        vec![
            // The empty key is a valid key.
            entry(b"", b"empty key", 2, 0),
            entry(b"a", b"1", 3, 0),
            entry(&[0, 0xff, 7], &[9; 300], 17, 1_800_000_060_000),
            entry(b"empty", b"", 40, 0),
            entry(b"z", b"last", 42, 1),
        ],
    )
}

/// The entries of `tests/fixtures/dump-v1.sdump`
/// (`tests/admin_dump.rs` lists the same).
fn fixture_entries() -> (DumpHeader, Vec<DumpEntry>) {
    (
        DumpHeader::new("fixture-node", Seq(12), 1_763_800_000_000),
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

#[test]
fn round_trip_keeps_header_and_entries() {
    let (header, entries) = sample();
    let bytes = write(&header, &entries);
    let (h, got, summary) = read(&bytes).unwrap();
    assert_eq!(h, header);
    assert_eq!(got, entries);
    assert_eq!(summary.entries, 5);
    assert_eq!(summary.file_bytes, bytes.len() as u64);
    assert_eq!(summary.data_bytes, 9 + 1 + 1 + 3 + 300 + 5 + 1 + 4);
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
}

/// The worked example in proto-docs/dump-format.md, byte for byte.
#[test]
fn bytes_match_the_worked_example_in_the_format_doc() {
    let header = DumpHeader::new("n1", Seq(7), 1_800_000_000_000);
    let bytes = write(&header, &[entry(b"k1", b"hello", 5, 0)]);
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        // header
        0x53, 0x54, 0x52, 0x41, 0x44, 0x55, 0x4d, 0x50, // "STRADUMP"
        0x01, 0x00, 0x00, 0x00,                         // version 1
        0x00, 0x00, 0x00, 0x00,                         // reserved
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // seq 7
        0x00, 0x50, 0x5c, 0x18, 0xa3, 0x01, 0x00, 0x00, // created_at_ms 1800000000000
        0x02, 0x00,                                     // node name length 2
        0x6e, 0x31,                                     // "n1"
        0xc6, 0x6f, 0xe1, 0x81,                         // header crc 0x81e16fc6
        // entry frame
        0x0c, 0x00, 0x00, 0x00,                         // len 12
        0x77, 0x20, 0x1f, 0x13,                         // crc of the payload 0x131f2077
        0x01,                                           // kind 1: entry
        0x02, 0x6b, 0x31,                               // key: len 2, "k1"
        0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f,             // value: len 5, "hello"
        0x05,                                           // version 5
        0x00,                                           // expires_at_ms 0
        // trailer frame
        0x0d, 0x00, 0x00, 0x00,                         // len 13
        0x48, 0x01, 0x19, 0x30,                         // crc of the payload 0x30190148
        0x02,                                           // kind 2: trailer
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1 entry
        0xaf, 0x26, 0x8c, 0x8b,                         // crc of bytes 0..60: 0x8b8c26af
    ];
    assert_eq!(
        bytes,
        expected,
        "\n got: {}\nwant: {}",
        hex::encode(&bytes),
        hex::encode(&expected)
    );
}

fn fixture_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dump-v1.sdump")
}

/// Compatibility: the checked-in version-1 dump still reads, with exactly
/// the entries it was written with.
#[test]
fn checked_in_v1_fixture_reads() {
    let bytes = std::fs::read(fixture_path()).unwrap();
    let (header, entries) = fixture_entries();
    let (h, got, _) = read(&bytes).unwrap();
    assert_eq!(h, header);
    assert_eq!(got, entries);
}

/// While this build writes version 1, it writes the fixture's exact bytes:
/// an accidental change to the format fails here.
#[test]
fn writer_reproduces_the_v1_fixture_while_it_writes_v1() {
    if DUMP_VERSION != 1 {
        return;
    }
    let (header, entries) = fixture_entries();
    assert_eq!(
        write(&header, &entries),
        std::fs::read(fixture_path()).unwrap()
    );
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
    let mut v2 = bytes.clone();
    v2[8] = 2;
    match read(&v2) {
        Err(e @ DumpError::UnsupportedVersion { version: 2 }) => {
            assert_eq!(e.offset(), 8);
            assert!(e.to_string().contains("reads versions 1 to 1"), "{e}");
        }
        other => panic!("{other:?}"),
    }

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
    )
        .prop_map(|(k, v, version, exp)| entry(&k, &v, version, exp))
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
        let bytes = write(&header, &entries);
        let (h, got, _) = read(&bytes).unwrap();
        prop_assert_eq!(h, header);
        prop_assert_eq!(got, entries);
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
