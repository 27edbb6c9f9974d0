//! `strata-admin upgrade` as an operator meets it: a node refuses a data
//! directory of the old disk layout (keys without their slot prefix) and
//! names the command; after the command, a node on the same directory
//! serves every key with its version, and scans find them all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::node::TestNode;
use rocksdb::{ColumnFamilyDescriptor, DB, Options};
use strata::harness::{HarnessError, NodeSpec};
use strata::net::client::{Client, ClientConfig, ServerTrust};
use strata::net::tls::parse_fingerprint;

const KEYS: u64 = 500;

/// A data directory as the previous release left it: RocksDB with bare
/// keys, values behind the 17-byte header (format 1, seq, expiry), the
/// applied seq in `meta`, and no `meta/layout`.
fn write_layout_1(data_dir: &Path) {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = DB::open_cf_descriptors(
        &opts,
        data_dir.join("db"),
        vec![
            ColumnFamilyDescriptor::new("data", Options::default()),
            ColumnFamilyDescriptor::new("meta", Options::default()),
        ],
    )
    .unwrap();
    let data = db.cf_handle("data").unwrap();
    for i in 1..=KEYS {
        let mut raw = vec![1u8];
        raw.extend_from_slice(&i.to_le_bytes());
        raw.extend_from_slice(&0u64.to_le_bytes());
        raw.extend_from_slice(format!("value-{i}").as_bytes());
        db.put_cf(data, format!("key:{i}"), raw).unwrap();
    }
    let meta = db.cf_handle("meta").unwrap();
    db.put_cf(meta, b"applied_seq", KEYS.to_le_bytes()).unwrap();
    db.flush_cf(data).unwrap();
    db.flush_cf(meta).unwrap();
}

fn admin_upgrade(data_dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-admin"))
        .args(["upgrade", "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn an_old_layout_is_refused_by_name_then_upgraded_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    write_layout_1(&data_dir);

    let refused = NodeSpec::new(env!("CARGO_BIN_EXE_strata-server"), &data_dir)
        .start(Duration::from_secs(60))
        .expect_err("a layout-1 directory is refused");
    let HarnessError::Exited { tail, .. } = &refused else {
        panic!("expected the node to exit: {refused}");
    };
    assert!(tail.contains("disk layout 1"), "{tail}");
    assert!(tail.contains("strata-admin upgrade --data-dir"), "{tail}");

    let (ok, text) = admin_upgrade(&data_dir);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("converted {KEYS} entries")),
        "{text}"
    );

    let node = TestNode::start(&data_dir, &[]);
    let pin = parse_fingerprint(&node.fingerprint).unwrap();
    let client = Client::connect(ClientConfig::new(node.addr, ServerTrust::Pin(pin)))
        .await
        .unwrap();
    for i in [1, 250, KEYS] {
        let entry = client.get(format!("key:{i}")).await.unwrap().unwrap();
        assert_eq!(entry.value, format!("value-{i}").as_bytes());
        assert_eq!(entry.version.0, i, "the version survives the upgrade");
    }
    let mut seen = 0;
    let mut cursor = None;
    loop {
        let page = client.scan("key:", cursor.take(), 100).await.unwrap();
        seen += page.entries.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, KEYS, "a scan finds every converted key once");
    drop(client);
    drop(node);

    let (ok, text) = admin_upgrade(&data_dir);
    assert!(ok, "{text}");
    assert!(
        text.contains("already has the current disk layout"),
        "{text}"
    );
}
