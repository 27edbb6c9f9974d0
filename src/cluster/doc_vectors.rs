//! The test-vector tables of proto-docs/cluster.md, checked cell by cell
//! against the code: the document and the code cannot drift.

use std::collections::BTreeMap;

use super::*;

const CLUSTER_DOC: &str = include_str!("../../proto-docs/cluster.md");

/// One `<!-- vectors: NAME key=value ... -->` marker and the rows of the
/// table right after it (header and separator dropped, cells trimmed,
/// backticks removed).
struct Vectors {
    name: String,
    params: BTreeMap<String, String>,
    rows: Vec<Vec<String>>,
}

fn doc_vectors() -> Vec<Vectors> {
    const OPEN: &str = "<!-- vectors: ";
    let mut found = Vec::new();
    let mut rest = CLUSTER_DOC;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let end = after.find("-->").expect("unclosed vectors marker");
        let mut words = after[..end].split_whitespace();
        let name = words
            .next()
            .expect("vectors marker without a name")
            .to_string();
        let params = words
            .map(|word| {
                let (key, value) = word.split_once('=').expect("param is key=value");
                (key.to_string(), value.to_string())
            })
            .collect();
        let rows = table_rows(&after[end..]);
        assert!(
            !rows.is_empty(),
            "vectors {name}: no table after the marker"
        );
        found.push(Vectors { name, params, rows });
        rest = &after[end..];
    }
    found
}

/// The body rows of the first table in `text`.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip(1)
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn number<T: std::str::FromStr>(cell: &str) -> T {
    cell.parse()
        .unwrap_or_else(|_| panic!("not a number: {cell:?}"))
}

fn slot(cell: &str) -> Slot {
    Slot::new(number(cell)).expect("slot below SLOTS")
}

/// The ring a table's marker names: `shards=1,2,3 vnodes=256`.
fn ring_of(vectors: &Vectors) -> Ring {
    let shards: Vec<ShardId> = vectors.params["shards"]
        .split(',')
        .map(|id| ShardId(number(id)))
        .collect();
    Ring::new(&shards, number(&vectors.params["vnodes"])).expect("valid ring")
}

/// | key | hashed part | CRC16 | slot |
fn check_key_slots(rows: &[Vec<String>]) {
    for row in rows {
        let key = row[0].as_bytes();
        assert_eq!(
            hashed_part(key),
            row[1].as_bytes(),
            "hashed part of {row:?}"
        );
        assert_eq!(
            format!("0x{:04x}", crc16(hashed_part(key))),
            row[2],
            "{row:?}"
        );
        assert_eq!(key_slot(key), slot(&row[3]), "{row:?}");
    }
}

/// | shard | index | SHA-256 input (hex) | first 8 bytes (hex) | point |
fn check_points(rows: &[Vec<String>]) {
    for row in rows {
        let (shard, index) = (ShardId(number(&row[0])), number::<u32>(&row[1]));
        let input = [
            b"strata-ring-v1".as_slice(),
            &shard.0.to_le_bytes(),
            &index.to_le_bytes(),
        ]
        .concat();
        assert_eq!(hex(&input), row[2], "{row:?}");
        let point = point_position(shard, index);
        assert_eq!(hex(&point.to_le_bytes()), row[3], "{row:?}");
        assert_eq!(point, number::<u64>(&row[4]), "{row:?}");
    }
}

/// | slot | position (hex, most significant first) | position |
fn check_slot_positions(rows: &[Vec<String>]) {
    for row in rows {
        let position = slot_position(slot(&row[0]));
        assert_eq!(format!("{position:#018x}"), row[1], "{row:?}");
        assert_eq!(position, number::<u64>(&row[2]), "{row:?}");
    }
}

/// | position | shard | index |: the whole ring, in ring order.
fn check_ring(vectors: &Vectors) {
    let ring = ring_of(vectors);
    let mut points: Vec<(u64, u32, u32)> = ring
        .shards()
        .iter()
        .flat_map(|&s| (0..ring.vnodes()).map(move |i| (point_position(s, i), s.0, i)))
        .collect();
    points.sort_unstable();
    let doc: Vec<(u64, u32, u32)> = vectors
        .rows
        .iter()
        .map(|row| (number(&row[0]), number(&row[1]), number(&row[2])))
        .collect();
    assert_eq!(doc, points, "ring {:?}", vectors.params);
}

/// | key | slot | slot position | shard |
fn check_owners(vectors: &Vectors) {
    let table = ring_of(vectors).slot_table();
    for row in &vectors.rows {
        let slot = key_slot(row[0].as_bytes());
        assert_eq!(slot, self::slot(&row[1]), "{row:?}");
        assert_eq!(slot_position(slot), number::<u64>(&row[2]), "{row:?}");
        assert_eq!(table.owner(slot), ShardId(number(&row[3])), "{row:?}");
    }
}

/// | shard | slots |: every shard of the ring, with how many slots it owns.
fn check_shares(vectors: &Vectors) {
    let ring = ring_of(vectors);
    let shares = ring.slot_table().shares();
    let code: Vec<(ShardId, u32)> = ring
        .shards()
        .iter()
        .map(|&shard| (shard, shares.get(&shard).copied().unwrap_or(0)))
        .collect();
    let doc: Vec<(ShardId, u32)> = vectors
        .rows
        .iter()
        .map(|row| (ShardId(number(&row[0])), number(&row[1])))
        .collect();
    assert_eq!(doc, code, "shares {:?}", vectors.params);
}

/// | first slot | last slot | shard |: the first ranges of the table.
fn check_ranges(vectors: &Vectors) {
    let ranges = ring_of(vectors).slot_table().ranges();
    assert!(vectors.rows.len() <= ranges.len());
    for (row, range) in vectors.rows.iter().zip(&ranges) {
        let doc = (slot(&row[0]), slot(&row[1]), ShardId(number(&row[2])));
        assert_eq!(doc, (range.first, range.last, range.shard), "{row:?}");
    }
    if let Some(total) = vectors.params.get("total") {
        assert_eq!(ranges.len(), number::<usize>(total), "{:?}", vectors.params);
    }
}

#[test]
fn cluster_doc_vectors_match_the_code() {
    let vectors = doc_vectors();
    assert_eq!(vectors.len(), 10, "vector tables missing from the doc");
    for table in &vectors {
        match table.name.as_str() {
            "key-slot" => check_key_slots(&table.rows),
            "points" => check_points(&table.rows),
            "slot-positions" => check_slot_positions(&table.rows),
            "ring" => check_ring(table),
            "owners" => check_owners(table),
            "ranges" => check_ranges(table),
            "shares" => check_shares(table),
            other => panic!("unknown vectors table {other:?}"),
        }
    }
}

#[test]
fn cluster_doc_states_the_constants() {
    assert!(CLUSTER_DOC.contains(&format!("{SLOTS} slots")));
    assert!(CLUSTER_DOC.contains(&format!("V = {DEFAULT_VNODES}")));
    assert!(CLUSTER_DOC.contains(&format!("1 ≤ V ≤ {MAX_VNODES}")));
}
