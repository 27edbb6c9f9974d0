//! `strata-admin dump`, `restore`, `verify` and `wal-inspect` as an operator
//! runs them: real `strata-server` processes, real data directories, the
//! real binary. A node's data goes through a dump file into a fresh
//! directory and a node started there serves the same values, versions
//! and TTLs; busy, non-empty and damaged inputs are refused without
//! leaving anything half-done behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::node::TestNode;
use strata::cluster::key_slot;
use strata::dump::{DumpEntry, DumpHeader, DumpReader};
use strata::net::client::{Client, ClientConfig, ServerTrust, SetEntry, SetOptions};
use strata::net::tls::parse_fingerprint;
use strata::store::{Store, StoreConfig};
use strata::types::{End, Seq, ValueKind};

/// How long anything polled may take.
const DEADLINE: Duration = Duration::from_secs(30);

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata-admin"))
        .args(args)
        .output()
        .expect("run strata-admin")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Asserts the exit code and returns (stdout, stderr).
#[track_caller]
fn expect_exit(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

async fn connect(node: &TestNode) -> Client {
    let pin = parse_fingerprint(&node.fingerprint).expect("node prints a fingerprint");
    Client::connect(ClientConfig::new(node.addr, ServerTrust::Pin(pin)))
        .await
        .expect("connect")
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read_dump(path: &Path) -> (DumpHeader, Vec<DumpEntry>) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = DumpReader::new(file).unwrap();
    let entries = reader.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    assert!(reader.summary().is_some());
    (reader.header().clone(), entries)
}

/// What a key read back as: value, version, remaining TTL.
type Seen = BTreeMap<Bytes, (Bytes, Seq, Option<u64>)>;

#[tokio::test]
async fn dump_and_restore_carry_values_versions_and_ttls_to_a_new_node() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("node-a");
    let dump = tmp.path().join("backup.sdump");
    let dst = tmp.path().join("node-b");

    // Write through a real node: overwrites, TTLs, an expired key, a
    // deleted key, a binary key, an incr, and enough keys for several
    // scan pages.
    let mut node = TestNode::start(&src, &[]);
    let client = connect(&node).await;
    client.set("plain", "v1").await.unwrap();
    client.set("plain", "v2").await.unwrap();
    let hour = SetOptions::new().with_ttl(Duration::from_secs(3600));
    client.set_with("ttl-key", "lives", hour).await.unwrap();
    let blink = SetOptions::new().with_ttl(Duration::from_millis(1));
    client.set_with("short", "gone soon", blink).await.unwrap();
    client.set("deleted", "x").await.unwrap();
    client.delete("deleted").await.unwrap();
    let binary = Bytes::from_static(&[0x00, 0x9f, 0xff, 0x10]);
    client
        .set(binary.clone(), Bytes::from_static(&[1, 2, 3]))
        .await
        .unwrap();
    client.incr("counter", 41).await.unwrap();
    client.incr("counter", 1).await.unwrap();
    let bulk: Vec<SetEntry> = (0..700)
        .map(|i| SetEntry {
            key: Bytes::from(format!("bulk/{i:04}")),
            value: Bytes::from(format!("value {i}")),
            ttl_ms: (i % 7 == 0).then_some(7_200_000),
        })
        .collect();
    client.set_many_with(bulk, None).await.unwrap();
    // The 1 ms key expires on its own; poll (bounded) until the node agrees.
    let deadline = Instant::now() + DEADLINE;
    while client.get("short").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "short never expired");
        tokio::task::yield_now().await;
    }

    let mut keys: Vec<Bytes> = vec![
        Bytes::from("plain"),
        Bytes::from("ttl-key"),
        binary.clone(),
        Bytes::from("counter"),
    ];
    keys.extend((0..700).map(|i| Bytes::from(format!("bulk/{i:04}"))));
    let read_at = Instant::now();
    let mut before = Seen::new();
    for key in &keys {
        let e = client.get(key.clone()).await.unwrap().expect("written");
        before.insert(key.clone(), (e.value, e.version, e.ttl_ms));
    }

    // A running node's directory is refused, and no file appears.
    let (_, err) = expect_exit(
        &admin(&["dump", "--data-dir", p(&src), "--out", p(&dump)]),
        1,
    );
    assert!(err.contains("in use by another strata process"), "{err}");
    assert!(!dump.exists());
    let (_, err) = expect_exit(&admin(&["verify", "--data-dir", p(&src)]), 1);
    assert!(err.contains("in use"), "{err}");

    client.close().await;
    assert!(node.terminate().success());

    let (out, _) = expect_exit(
        &admin(&["dump", "--data-dir", p(&src), "--out", p(&dump)]),
        0,
    );
    assert!(
        out.contains(&format!("dumped {} entries", keys.len())),
        "{out}"
    );
    assert!(out.contains("node \"node-a\""), "{out}");
    assert_eq!(
        listing(tmp.path()),
        ["backup.sdump", "node-a"],
        "no temp file left"
    );
    let (out, _) = expect_exit(&admin(&["verify", "--dump", p(&dump)]), 0);
    assert!(out.contains("healthy"), "{out}");
    assert!(out.contains("format        version 3\n"), "{out}");
    // Dumping again over an existing file needs --force.
    let (_, err) = expect_exit(
        &admin(&["dump", "--data-dir", p(&src), "--out", p(&dump)]),
        1,
    );
    assert!(err.contains("--force"), "{err}");

    // The file itself: every live key once, in (slot, key) order, expired
    // and deleted keys absent, versions as the node reported them.
    let (header, entries) = read_dump(&dump);
    assert_eq!(header.node, "node-a");
    assert_eq!(header.version, 3);
    let max_version = before.values().map(|v| v.1).max().unwrap();
    assert!(header.seq >= max_version, "{header:?}");
    let dumped: Vec<(u16, &Bytes)> = entries
        .iter()
        .map(|e| (key_slot(&e.key).get(), &e.key))
        .collect();
    assert!(
        dumped.windows(2).all(|w| w[0] < w[1]),
        "not in strictly ascending (slot, key) order"
    );
    assert_eq!(entries.len(), keys.len());
    for e in &entries {
        let (value, version, ttl) = &before[&e.key];
        assert_eq!((&e.value, e.version), (value, *version), "{:?}", e.key);
        assert_eq!(e.expires_at_ms != 0, ttl.is_some(), "{:?}", e.key);
    }

    // Restore into a fresh directory; a second restore needs --force.
    let (out, _) = expect_exit(
        &admin(&["restore", "--in", p(&dump), "--data-dir", p(&dst)]),
        0,
    );
    assert!(
        out.contains(&format!("restored {} entries", keys.len())),
        "{out}"
    );
    let (_, err) = expect_exit(
        &admin(&["restore", "--in", p(&dump), "--data-dir", p(&dst)]),
        1,
    );
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    let (out, _) = expect_exit(&admin(&["verify", "--data-dir", p(&dst)]), 0);
    assert!(
        out.contains(&format!("applied seq {}", header.seq)),
        "{out}"
    );
    assert_eq!(listing(tmp.path()), ["backup.sdump", "node-a", "node-b"]);

    // A node started on the restored directory serves the same data.
    let node_b = TestNode::start(&dst, &[]);
    let client = connect(&node_b).await;
    for (key, (value, version, ttl)) in &before {
        let e = client.get(key.clone()).await.unwrap().expect("restored");
        assert_eq!((&e.value, e.version), (value, *version), "{key:?}");
        match (ttl, e.ttl_ms) {
            (None, None) => {}
            (Some(was), Some(now)) => {
                // Same absolute expiry: only the time since the first read has passed.
                let elapsed = read_at.elapsed().as_millis() as u64;
                assert!(
                    now <= *was && was - now <= elapsed + 50,
                    "{key:?}: {was} -> {now}"
                );
            }
            other => panic!("{key:?}: ttl {other:?}"),
        }
    }
    assert_eq!(client.get("short").await.unwrap(), None);
    assert_eq!(client.get("deleted").await.unwrap(), None);
    // New writes continue after the dump's seq, so versions stay unique.
    let next = client.set("after-restore", "new").await.unwrap();
    assert!(next.version > header.seq, "{next:?} vs {header:?}");

    // A directory a running node holds is refused, even with --force.
    let other = tmp.path().join("other.sdump");
    let (_, err) = expect_exit(
        &admin(&["dump", "--data-dir", p(&dst), "--out", p(&other)]),
        1,
    );
    assert!(err.contains("in use by another strata process"), "{err}");
    let args = [
        "restore",
        "--in",
        p(&dump),
        "--data-dir",
        p(&dst),
        "--force",
    ];
    let (_, err) = expect_exit(&admin(&args), 1);
    assert!(err.contains("in use by another strata process"), "{err}");
    client.close().await;

    // Over a stopped node's directory with --force: the data is replaced,
    // the node keeps its TLS identity.
    let mut node_b = node_b;
    let fingerprint = node_b.fingerprint.clone();
    assert!(node_b.terminate().success());
    let (out, _) = expect_exit(&admin(&args), 0);
    assert!(out.contains("restored"), "{out}");
    let node_b = TestNode::start(&dst, &[]);
    assert_eq!(node_b.fingerprint, fingerprint);
    let client = connect(&node_b).await;
    assert_eq!(client.get("after-restore").await.unwrap(), None);
    let e = client.get("plain").await.unwrap().unwrap();
    assert_eq!(
        (&e.value[..], e.version),
        (&b"v2"[..], before[&Bytes::from("plain")].1)
    );
    client.close().await;
    assert_eq!(listing(tmp.path()), ["backup.sdump", "node-a", "node-b"]);
}

/// The dump file of a small store, made with the real binary.
async fn small_dump(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let store = Store::open(StoreConfig::new(&data)).unwrap();
    for i in 0..50 {
        store
            .set(
                Bytes::from(format!("key-{i:02}")),
                Bytes::from(vec![b'v'; 100 + i]),
                None,
                strata::types::Condition::Always,
            )
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    let file = dir.join("small.sdump");
    expect_exit(
        &admin(&["dump", "--data-dir", p(&data), "--out", p(&file)]),
        0,
    );
    file
}

/// The offset a restore or verify error names ("... at byte N ...").
fn named_offset(message: &str) -> u64 {
    let rest = message
        .split("at byte ")
        .nth(1)
        .unwrap_or_else(|| panic!("no offset in: {message}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn damaged_or_truncated_dumps_are_rejected_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let good = small_dump(tmp.path()).await;
    let bytes = std::fs::read(&good).unwrap();

    // Flip one byte in the middle of the payload of the frame in the
    // middle of the file (frames: [u32 len][u32 crc][payload]).
    let (header, _) = read_dump(&good);
    let mut frame = 34 + header.node.len() + 4;
    loop {
        let len = u32::from_le_bytes(bytes[frame..frame + 4].try_into().unwrap()) as usize;
        if frame + 8 + len >= bytes.len() / 2 {
            break;
        }
        frame += 8 + len;
    }
    let at = frame + 8 + 20;
    let flipped = tmp.path().join("flipped.sdump");
    let mut damaged = bytes.clone();
    damaged[at] ^= 0x01;
    std::fs::write(&flipped, &damaged).unwrap();
    let truncated = tmp.path().join("truncated.sdump");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();

    // An existing, non-empty target that must stay exactly as it is.
    let kept = tmp.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    std::fs::write(kept.join("precious"), b"do not touch").unwrap();

    for (file, what) in [(&flipped, "checksum"), (&truncated, "truncated")] {
        let fresh = tmp.path().join("fresh");
        let (_, err) = expect_exit(
            &admin(&["restore", "--in", p(file), "--data-dir", p(&fresh)]),
            1,
        );
        assert!(err.contains(what), "{err}");
        let offset = named_offset(&err);
        assert!(offset <= bytes.len() as u64, "{err}");
        if what == "checksum" {
            assert_eq!(offset, frame as u64, "{err}");
        }
        assert!(
            !fresh.exists(),
            "a failed restore created {}",
            fresh.display()
        );

        let args = [
            "restore",
            "--in",
            p(file),
            "--data-dir",
            p(&kept),
            "--force",
        ];
        let (_, err) = expect_exit(&admin(&args), 1);
        assert!(err.contains("at byte"), "{err}");
        assert_eq!(listing(&kept), ["precious"]);
        assert_eq!(
            std::fs::read(kept.join("precious")).unwrap(),
            b"do not touch"
        );

        let (out, _) = expect_exit(&admin(&["verify", "--dump", p(file)]), 1);
        assert!(out.contains("DAMAGED") && out.contains("at byte"), "{out}");
        assert!(out.contains("format        version 3\n"), "{out}");
    }
    // No temporary directory survives any of it.
    assert_eq!(
        listing(tmp.path()),
        [
            "data",
            "flipped.sdump",
            "kept",
            "small.sdump",
            "truncated.sdump"
        ]
    );

    // Not a dump at all.
    let (_, err) = expect_exit(
        &admin(&[
            "restore",
            "--in",
            p(&kept.join("precious")),
            "--data-dir",
            p(&tmp.path().join("x")),
        ]),
        1,
    );
    assert!(err.contains("not a strata dump"), "{err}");

    // The good dump replaces the target with --force.
    let args = [
        "restore",
        "--in",
        p(&good),
        "--data-dir",
        p(&kept),
        "--force",
    ];
    let (out, _) = expect_exit(&admin(&args), 0);
    assert!(out.contains("restored 50 entries"), "{out}");
    assert!(!kept.join("precious").exists());
    let store = Store::open(StoreConfig::new(&kept)).unwrap();
    let e = store.get(b"key-07").await.unwrap().unwrap();
    assert_eq!(e.value.len(), 107);
    assert_eq!(e.version, Seq(8));
    store.close().await.unwrap();
    assert_eq!(
        listing(tmp.path()),
        [
            "data",
            "flipped.sdump",
            "kept",
            "small.sdump",
            "truncated.sdump"
        ]
    );
}

/// Opens a store, writes `n` keys one record each, and closes it cleanly.
async fn store_with_records(dir: &Path, n: usize) {
    let store = Store::open(StoreConfig::new(dir)).unwrap();
    for i in 0..n {
        store
            .set(
                Bytes::from(format!("wal-key-{i}")),
                Bytes::from(format!("value-{i}")),
                (i == 2).then(|| Duration::from_secs(600)),
                strata::types::Condition::Always,
            )
            .await
            .unwrap();
    }
    store
        .delete(Bytes::from("wal-key-0"), strata::types::Condition::Always)
        .await
        .unwrap();
    store.close().await.unwrap();
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn verify_and_wal_inspect_find_a_flipped_wal_byte_without_changing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    store_with_records(&dir, 8).await;

    let (out, _) = expect_exit(&admin(&["verify", "--data-dir", p(&dir)]), 0);
    assert!(out.contains("result          healthy"), "{out}");
    assert!(out.contains("applied seq 9"), "{out}");
    assert!(
        out.contains("1 segment file(s)") && out.contains("seqs 1..=9"),
        "{out}"
    );
    assert!(out.contains("torn tail       none"), "{out}");

    let (out, _) = expect_exit(&admin(&["wal-inspect", "--data-dir", p(&dir), "--json"]), 0);
    let lines = json_lines(&out);
    let records: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "record").collect();
    assert_eq!(records.len(), 9);
    for (i, r) in records.iter().take(8).enumerate() {
        assert_eq!(r["seq"], i as u64 + 1);
        assert_eq!(r["op"], "put");
        assert_eq!(r["key"], format!("wal-key-{i}"));
        assert_eq!(r["key_encoding"], "utf8");
        assert_eq!(r["value_len"], format!("value-{i}").len());
        assert_eq!(r["expires_at_ms"].is_u64(), i == 2, "{r}");
    }
    assert_eq!(records[8]["op"], "delete");
    assert_eq!(records[8]["key"], "wal-key-0");
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["records"], 9);

    // --from and --limit select; text output names the keys.
    let args = [
        "wal-inspect",
        "--data-dir",
        p(&dir),
        "--from",
        "4",
        "--limit",
        "2",
    ];
    let (out, _) = expect_exit(&admin(&args), 0);
    let printed: Vec<&str> = out.lines().filter(|l| l.starts_with("seq=")).collect();
    assert_eq!(printed.len(), 2, "{out}");
    assert!(
        printed[0].starts_with("seq=4 op=put key=\"wal-key-3\" value_len=7"),
        "{out}"
    );

    // Flip one byte inside the body of a record in the middle of the segment.
    let segment = dir
        .join("wal")
        .join(records[4]["segment"].as_str().unwrap());
    let offset = records[4]["offset"].as_u64().unwrap();
    let mut data = std::fs::read(&segment).unwrap();
    data[offset as usize + 10] ^= 0x20;
    std::fs::write(&segment, &data).unwrap();

    let (out, err) = expect_exit(&admin(&["verify", "--data-dir", p(&dir)]), 1);
    assert!(out.contains("DAMAGED"), "{out}");
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains(name) && out.contains(&format!("at byte {offset}")),
        "{out}"
    );
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        data,
        "verify changed the segment"
    );

    let (out, _) = expect_exit(&admin(&["wal-inspect", "--data-dir", p(&dir), "--json"]), 1);
    let lines = json_lines(&out);
    assert_eq!(lines.iter().filter(|l| l["type"] == "record").count(), 4);
    let damage = lines
        .iter()
        .find(|l| l["type"] == "damage")
        .expect("damage line");
    assert_eq!(damage["damage"], "corrupt");
    assert_eq!(damage["offset"], offset);
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        data,
        "wal-inspect changed the segment"
    );
}

#[tokio::test]
async fn verify_reports_a_torn_tail_as_healthy_unless_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    store_with_records(&dir, 4).await;
    let (out, _) = expect_exit(&admin(&["wal-inspect", "--data-dir", p(&dir), "--json"]), 0);
    let lines = json_lines(&out);
    let last = lines.iter().rfind(|l| l["type"] == "record").unwrap();
    let segment = dir.join("wal").join(last["segment"].as_str().unwrap());
    let offset = last["offset"].as_u64().unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    // A crash in the middle of the last append.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let (out, _) = expect_exit(&admin(&["verify", "--data-dir", p(&dir)]), 0);
    assert!(
        out.contains(&format!("at byte {offset}")) && out.contains("healthy"),
        "{out}"
    );
    let (out, _) = expect_exit(&admin(&["verify", "--data-dir", p(&dir), "--strict"]), 1);
    assert!(out.contains("torn tail"), "{out}");
    let (out, _) = expect_exit(&admin(&["wal-inspect", "--data-dir", p(&dir)]), 0);
    assert!(out.contains("# torn tail"), "{out}");
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        len - 3,
        "not truncated"
    );
}

fn fixture_entry(key: &[u8], value: &[u8], version: u64, expires_at_ms: u64) -> DumpEntry {
    DumpEntry {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        version: Seq(version),
        expires_at_ms,
        kind: ValueKind::String,
    }
}

/// The entries `tests/fixtures/dump-v1.sdump` was written with
/// (`src/dump/tests.rs` lists the same).
fn fixture_entries() -> Vec<DumpEntry> {
    let e = fixture_entry;
    vec![
        e(&[0x00, 0xff, 0x10], &[1, 2, 3, 0, 255], 8, 0),
        e(b"alpha", b"first value", 3, 0),
        e(b"beta/ttl", b"expires", 7, 1_900_000_000_000),
        e(b"empty-value", b"", 9, 0),
        e(
            "unicode-ключ".as_bytes(),
            "значение ✓".as_bytes(),
            12,
            2_000_000_000_123,
        ),
    ]
}

/// The entries `tests/fixtures/dump-v2.sdump` was written with, in its
/// (slot, key) order (`src/dump/tests.rs` lists the same and says how the
/// file was made).
fn v2_fixture_entries() -> Vec<DumpEntry> {
    let e = fixture_entry;
    vec![
        e(b"alpha", b"first value", 3, 0),
        e(&[0x00, 0xff, 0x10], &[1, 2, 3, 0, 255], 8, 0),
        e(
            "unicode-ключ".as_bytes(),
            "значение ✓".as_bytes(),
            12,
            2_000_000_000_123,
        ),
        e(b"{user:1}:email", b"ada@example.com", 15, 1_950_000_000_000),
        e(b"{user:1}:name", b"Ada", 14, 0),
        e(b"beta/ttl", b"expires", 7, 1_900_000_000_000),
        e(b"empty-value", b"", 20, 0),
    ]
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Restores `dump` with the tool into a fresh directory and checks that a
/// store opened there holds exactly `entries`, at the dump's seq.
async fn restore_and_check(dump: &Path, seq: Seq, entries: &[DumpEntry]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restored");
    let (out, _) = expect_exit(
        &admin(&["restore", "--in", p(dump), "--data-dir", p(&dir)]),
        0,
    );
    assert!(
        out.contains(&format!("restored {} entries", entries.len())),
        "{out}"
    );
    let store = Store::open(StoreConfig::new(&dir)).unwrap();
    assert_eq!(store.applied_seq(), seq);
    for want in entries {
        let got = store.get(&want.key).await.unwrap().expect("restored");
        assert_eq!((&got.value, got.version), (&want.value, want.version));
        assert_eq!(got.ttl_ms.is_some(), want.expires_at_ms != 0, "{want:?}");
    }
    let page = store.scan(Bytes::new(), None, 100).await.unwrap();
    assert_eq!(page.entries.len(), entries.len());
    store.close().await.unwrap();
}

/// Compatibility: the version-1 dump checked in with the format still reads,
/// with exactly its entries, through the library and the tool, and restores.
#[tokio::test]
async fn checked_in_v1_fixture_still_reads() {
    let fixture = fixture("dump-v1.sdump");
    let (header, entries) = read_dump(&fixture);
    assert_eq!(header.version, 1);
    assert_eq!(header.node, "fixture-node");
    assert_eq!(header.seq, Seq(12));
    assert_eq!(header.created_at_ms, 1_763_800_000_000);
    assert_eq!(entries, fixture_entries());
    let (out, _) = expect_exit(&admin(&["verify", "--dump", p(&fixture)]), 0);
    assert!(out.contains("entries       5"), "{out}");
    assert!(
        out.contains("format        version 1 (an older format"),
        "{out}"
    );
    restore_and_check(&fixture, Seq(12), &entries).await;
}

/// The version-2 fixture: read with its slots checked, verified by the tool
/// (which names the version), and restored.
#[tokio::test]
async fn checked_in_v2_fixture_reads_and_restores() {
    let fixture = fixture("dump-v2.sdump");
    let (header, entries) = read_dump(&fixture);
    assert_eq!(header.version, 2);
    assert_eq!(header.node, "fixture-node");
    assert_eq!(header.seq, Seq(20));
    assert_eq!(header.created_at_ms, 1_764_000_000_000);
    assert_eq!(entries, v2_fixture_entries());
    let (out, _) = expect_exit(&admin(&["verify", "--dump", p(&fixture)]), 0);
    assert!(out.contains("entries       7"), "{out}");
    assert!(
        out.contains("format        version 2 (an older format"),
        "{out}"
    );
    restore_and_check(&fixture, Seq(20), &entries).await;
}

#[test]
fn help_usage_errors_and_bad_paths() {
    for cmd in ["dump", "restore", "verify", "wal-inspect"] {
        let (out, _) = expect_exit(&admin(&[cmd, "--help"]), 0);
        assert!(out.contains("Usage: strata-admin"), "{out}");
        assert!(out.len() > 400, "{cmd} --help explains little:\n{out}");
        expect_exit(&admin(&[cmd]), 2);
    }
    expect_exit(&admin(&["verify", "--data-dir", "a", "--dump", "b"]), 2);
    expect_exit(
        &admin(&["wal-inspect", "--data-dir", "a", "--from", "-1"]),
        2,
    );

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let out = tmp.path().join("out.sdump");
    for args in [
        vec!["dump", "--data-dir", p(&missing), "--out", p(&out)],
        vec!["verify", "--data-dir", p(&missing)],
        vec!["wal-inspect", "--data-dir", p(&missing)],
        vec!["verify", "--dump", p(&missing)],
        vec![
            "restore",
            "--in",
            p(&missing),
            "--data-dir",
            p(&tmp.path().join("d")),
        ],
    ] {
        let (_, err) = expect_exit(&admin(&args), 1);
        assert!(err.starts_with("strata-admin: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A directory that is not a data directory is refused, never turned into one.
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let (_, err) = expect_exit(
        &admin(&["dump", "--data-dir", p(&plain), "--out", p(&out)]),
        1,
    );
    assert!(err.contains("not a strata data directory"), "{err}");
    assert!(listing(&plain).is_empty());
    assert_eq!(listing(tmp.path()), ["plain"]);
}

#[tokio::test]
async fn verify_finds_a_gap_between_the_disk_tier_and_the_wal() {
    use strata::wal::{Mutation, SegmentHeader, WalRecord, encode_frame_into, segment_file_name};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    store_with_records(&dir, 3).await; // applied seq 4
    // Replace the log with one that starts at seq 10: records 5..=9 are lost.
    let wal = dir.join("wal");
    for name in listing(&wal) {
        std::fs::remove_file(wal.join(name)).unwrap();
    }
    let mut data = SegmentHeader { first_seq: Seq(10) }.encode().to_vec();
    let record = WalRecord {
        seq: Seq(10),
        mutations: vec![Mutation::Delete {
            key: Bytes::from("k"),
        }],
    };
    encode_frame_into(&record, &mut data, u32::MAX).unwrap();
    std::fs::write(wal.join(segment_file_name(Seq(10))), &data).unwrap();

    let (out, _) = expect_exit(&admin(&["verify", "--data-dir", p(&dir)]), 1);
    assert!(out.contains("applied seq 4"), "{out}");
    assert!(
        out.contains("gap") && out.contains("records 5..=9 are missing"),
        "{out}"
    );
}

#[test]
fn restore_refuses_entries_newer_than_the_dump_seq() {
    use strata::dump::DumpWriter;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("odd.sdump");
    let mut w = DumpWriter::new(
        std::fs::File::create(&file).unwrap(),
        &DumpHeader::new("odd", Seq(5), 0),
    )
    .unwrap();
    w.write_entry(&DumpEntry {
        key: Bytes::from("k"),
        value: Bytes::from("v"),
        version: Seq(9),
        expires_at_ms: 0,
        kind: ValueKind::String,
    })
    .unwrap();
    w.finish().unwrap();
    let dst = tmp.path().join("dst");
    let (_, err) = expect_exit(
        &admin(&["restore", "--in", p(&file), "--data-dir", p(&dst)]),
        1,
    );
    assert!(err.contains("version 9, above the dump's seq 5"), "{err}");
    assert_eq!(listing(tmp.path()), ["odd.sdump"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_dump_is_a_consistent_snapshot_of_a_running_node() {
    let root = tempfile::tempdir().unwrap();
    let node = TestNode::start(&root.path().join("live"), &[]);
    let client = connect(&node).await;
    // Enough data for several pages (a page is at most a few MiB).
    let value = "v".repeat(4000);
    for i in 0..3000 {
        client
            .set(format!("key-{i:05}"), value.clone())
            .await
            .unwrap();
    }
    client.set("ttl", "t").await.unwrap();
    client
        .set_with(
            "ttl",
            "t",
            SetOptions::new().with_ttl(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let before = client.digest(1).await.unwrap();

    // Writes racing the dump land after its seq, and are not in it.
    let out = root.path().join("online.sdump");
    let racer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                client.set(format!("late-{i}"), "x").await.unwrap();
            }
        })
    };
    let dumped = admin(&[
        "dump",
        "--addr",
        &node.addr.to_string(),
        "--pin",
        &node.fingerprint,
        "--out",
        p(&out),
    ]);
    expect_exit(&dumped, 0);
    racer.await.unwrap();
    let (header, entries) = read_dump(&out);
    let late = entries
        .iter()
        .filter(|e| e.key.starts_with(b"late-"))
        .count() as u64;
    let base: std::collections::HashMap<_, _> = before.into_iter().collect();
    let base_seq: u64 = base["seq"].parse().unwrap();
    assert_eq!(
        header.seq.0,
        base_seq + late,
        "the dump holds exactly the writes up to its seq"
    );
    assert_eq!(entries.len() as u64, 3001 + late);
    let ttl = entries.iter().find(|e| e.key.as_ref() == b"ttl").unwrap();
    assert!(ttl.expires_at_ms > 0, "absolute expiry carried");

    // Restored elsewhere, it serves the same data at the same seq.
    let restored = root.path().join("restored");
    expect_exit(
        &admin(&["restore", "--in", p(&out), "--data-dir", p(&restored)]),
        0,
    );
    let copy = TestNode::start(&restored, &[]);
    let copy_client = connect(&copy).await;
    let digest = |pairs: Vec<(String, String)>| -> (String, String) {
        let m: std::collections::HashMap<_, _> = pairs.into_iter().collect();
        (m["seq"].clone(), m["keys"].clone())
    };
    let (seq, keys) = digest(copy_client.digest(1).await.unwrap());
    assert_eq!(seq, header.seq.0.to_string());
    assert_eq!(keys, (3001 + late).to_string());
}

/// The version-3 fixture, which holds a list: read, verified by the tool,
/// and restored into a store that serves the list in order.
#[tokio::test]
async fn checked_in_v3_fixture_restores_its_list() {
    let fixture = fixture("dump-v3.sdump");
    let (header, entries) = read_dump(&fixture);
    assert_eq!((header.version, header.seq), (3, Seq(30)));
    assert_eq!(entries.len(), 6);
    let (out, _) = expect_exit(&admin(&["verify", "--dump", p(&fixture)]), 0);
    assert!(out.contains("format        version 3\n"), "{out}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("restored");
    expect_exit(
        &admin(&["restore", "--in", p(&fixture), "--data-dir", p(&dir)]),
        0,
    );
    let store = Store::open(StoreConfig::new(&dir)).unwrap();
    let list = Bytes::from_static(b"{user:1}:jobs");
    assert_eq!(store.kind_of(&list).await.unwrap(), Some(ValueKind::List));
    assert_eq!(
        store.list_range(list.clone(), 0, -1).await.unwrap(),
        [Bytes::from("b"), Bytes::from("a")]
    );
    let strings = store.scan(Bytes::new(), None, 100).await.unwrap();
    assert_eq!(strings.entries.len(), 3, "the list's elements are not keys");
    store.close().await.unwrap();
}

/// Lists and sorted sets go through a dump, online and offline, and come
/// back whole: the same elements in order, the same TTL, and the same
/// digest as the source.
#[tokio::test]
async fn collections_survive_dump_and_restore_online_and_offline() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let mut node = TestNode::start(&src, &[]);
    let client = connect(&node).await;
    let values: Vec<String> = (0..50).map(|i| format!("job-{i}")).collect();
    client
        .push("queue", End::Right, values.clone(), false)
        .await
        .unwrap();
    client
        .expire("queue", Duration::from_secs(3600))
        .await
        .unwrap();
    client
        .push("{t}stack", End::Left, ["x", "y"], false)
        .await
        .unwrap();
    let board = vec![
        (Bytes::from("ann"), 7.5),
        (Bytes::from("bo"), -1.0),
        (Bytes::from("cy"), 7.5),
    ];
    let rule = strata::types::ScoreRule::default();
    client
        .add_scores("{t}board", board, rule, false)
        .await
        .unwrap();
    client.set("plain", "v").await.unwrap();
    let digest = |pairs: Vec<(String, String)>| -> (String, String, String) {
        let m: std::collections::HashMap<_, _> = pairs.into_iter().collect();
        (m["seq"].clone(), m["keys"].clone(), m["sha256"].clone())
    };
    let before = digest(client.digest(1).await.unwrap());

    let check = |dump: PathBuf, name: &'static str| {
        let root = root.path().to_path_buf();
        let (values, before) = (values.clone(), before.clone());
        async move {
            let (header, _) = read_dump(&dump);
            assert_eq!(header.version, 3);
            let dir = root.join(name);
            expect_exit(
                &admin(&["restore", "--in", p(&dump), "--data-dir", p(&dir)]),
                0,
            );
            let copy = TestNode::start(&dir, &[]);
            let c = connect(&copy).await;
            let got = c.list_range("queue", 0, -1).await.unwrap();
            assert_eq!(
                got,
                values
                    .iter()
                    .map(|v| Bytes::from(v.clone()))
                    .collect::<Vec<_>>()
            );
            assert!(matches!(
                c.ttl("queue").await.unwrap(),
                strata::proto::TtlState::ExpiresIn(_)
            ));
            let stack = c.list_range("{t}stack", 0, -1).await.unwrap();
            assert_eq!(stack, [Bytes::from("y"), Bytes::from("x")]);
            let board = c.score_range("{t}board", 0, -1, End::Right).await.unwrap();
            let ranked =
                [("cy", 7.5), ("ann", 7.5), ("bo", -1.0)].map(|(m, s)| (Bytes::from(m), s));
            assert_eq!(board, ranked);
            assert_eq!(digest(c.digest(1).await.unwrap()), before, "{name}");
            c.close().await;
        }
    };

    let online = root.path().join("online.sdump");
    let args = [
        "dump",
        "--addr",
        &node.addr.to_string(),
        "--pin",
        &node.fingerprint,
        "--out",
        p(&online),
    ];
    expect_exit(&admin(&args), 0);
    check(online, "from-online").await;

    client.close().await;
    assert!(node.terminate().success());
    let offline = root.path().join("offline.sdump");
    let (out, _) = expect_exit(
        &admin(&["dump", "--data-dir", p(&src), "--out", p(&offline)]),
        0,
    );
    // 4 keys, plus one entry per list element and two per sorted-set
    // member: 4 + 50 + 2 + 6.
    assert!(out.contains("dumped 62 entries"), "{out}");
    assert!(!src.join("dump-checkpoint").exists(), "checkpoint removed");
    check(offline, "from-offline").await;
}
