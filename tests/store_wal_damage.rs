//! Opening a store on a damaged WAL: a torn tail is truncated with a
//! warning; damage before the tail stops the open with an error naming the
//! file and offset, unless the operator chooses point-in-time recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{b, config};
use strata::store::{Env, Store, StoreConfig, StoreError};
use strata::types::Condition;
use strata::wal::{FsyncPolicy, RecoveryMode, WalError};

const KEYS: usize = 200;

/// Writes KEYS keys over several small segments and "crashes" (no
/// checkpoint), so every record must come back from the WAL.
async fn crashed_store(dir: &Path) -> StoreConfig {
    let mut cfg = config(dir, FsyncPolicy::Always);
    cfg.wal_segment_bytes = 4096;
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..KEYS {
        store
            .set(b(&format!("k{i:03}")), value(i), None, Condition::Always)
            .await
            .unwrap();
    }
    drop(store);
    cfg
}

fn value(i: usize) -> bytes::Bytes {
    b(&format!("value-{i}-{}", "x".repeat(100)))
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

async fn present(store: &Store) -> usize {
    let mut n = 0;
    for i in 0..KEYS {
        if let Some(e) = store.get(format!("k{i:03}").as_bytes()).await.unwrap() {
            assert_eq!(e.value, value(i), "never a damaged value");
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn torn_tail_is_truncated_and_every_record_kept() {
    for garbage in [
        &b"09pmu35w3a9mp53bao9upw3ab5up"[..],
        &[0u8; 64][..],
        &[0xff, 0xff, 0x00][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crashed_store(dir.path()).await;
        let last = segments(dir.path()).pop().unwrap();
        OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap()
            .write_all(garbage)
            .unwrap();

        let (store, report) = Store::open_with(cfg, Env::default()).unwrap();
        let torn = report.wal.truncated.expect("the torn tail is reported");
        assert_eq!(torn.file, last);
        assert_eq!(present(&store).await, KEYS);
        // And the log keeps working after the repair.
        store
            .set(b("after"), b("x"), None, Condition::Always)
            .await
            .unwrap();
        drop(store);
        let (store, _) =
            Store::open_with(config(dir.path(), FsyncPolicy::Always), Env::default()).unwrap();
        assert_eq!(store.get(b"after").await.unwrap().unwrap().value, b("x"));
    }
}

#[tokio::test]
async fn strict_mode_refuses_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crashed_store(dir.path()).await;
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    // Cut the last record in half.
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    cfg.recovery = RecoveryMode::Strict;
    let err = Store::open_with(cfg, Env::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::Wal(WalError::TornTail { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&last.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn damage_before_the_tail_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crashed_store(dir.path()).await;
    let files = segments(dir.path());
    assert!(
        files.len() >= 3,
        "want several segments, got {}",
        files.len()
    );
    let victim = &files[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let offset = bytes.len() / 2;
    bytes[offset] ^= 0x5a;
    std::fs::write(victim, &bytes).unwrap();

    let err = Store::open_with(cfg.clone(), Env::default()).unwrap_err();
    let StoreError::Wal(WalError::Corrupt {
        path, offset: at, ..
    }) = &err
    else {
        panic!("expected corruption, got {err:?}");
    };
    assert_eq!(path, victim);
    assert!(
        *at <= offset as u64,
        "offset {at} is at or before the flipped byte {offset}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&victim.display().to_string()) && message.contains(&format!("byte {at}")),
        "{message}"
    );
    assert!(
        message.contains("point-in-time"),
        "says how to proceed: {message}"
    );

    // Told otherwise, the operator gets the consistent prefix.
    cfg.recovery = RecoveryMode::PointInTime;
    let (store, report) = Store::open_with(cfg, Env::default()).unwrap();
    assert!(report.wal.truncated.is_some());
    let kept = present(&store).await;
    assert!(kept > 0 && kept < KEYS, "kept the prefix only: {kept}");
    // The prefix is exactly k000..k(kept-1): no holes.
    for i in 0..kept {
        assert!(
            store
                .get(format!("k{i:03}").as_bytes())
                .await
                .unwrap()
                .is_some(),
            "hole at k{i:03}"
        );
    }
}
