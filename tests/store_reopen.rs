//! Reopen after a clean close and after an in-process crash, per fsync policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{b, config};
use strata::store::Store;
use strata::types::Condition;
use strata::wal::FsyncPolicy;

const POLICIES: [FsyncPolicy; 3] = [
    FsyncPolicy::Always,
    FsyncPolicy::Interval(Duration::from_millis(20)),
    FsyncPolicy::Never,
];

async fn write_keys(store: &Store, n: usize) {
    for i in 0..n {
        store
            .set(
                b(&format!("k{i}")),
                b(&format!("v{i}")),
                None,
                Condition::Always,
            )
            .await
            .unwrap();
    }
    store.delete(b("k0"), Condition::Always).await.unwrap();
}

async fn assert_keys(store: &Store, n: usize) {
    assert_eq!(store.get(b"k0").await.unwrap(), None, "delete survives");
    for i in 1..n {
        let got = store.get(format!("k{i}").as_bytes()).await.unwrap();
        assert_eq!(got.map(|e| e.value), Some(b(&format!("v{i}"))), "k{i}");
    }
}

#[tokio::test]
async fn reopen_after_clean_close_replays_nothing() {
    for policy in POLICIES {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path(), policy)).unwrap();
        write_keys(&store, 300).await;
        let applied = store.applied_seq();
        store.close().await.unwrap();

        let (store, report) =
            Store::open_with(config(dir.path(), policy), Default::default()).unwrap();
        assert_eq!(report.replayed, 0, "{policy:?}: close checkpointed");
        assert_eq!(report.disk_applied, applied);
        assert_keys(&store, 300).await;
        // New writes continue the seq.
        let ack = store
            .set(b("new"), b("x"), None, Condition::Always)
            .await
            .unwrap();
        assert!(matches!(ack, strata::store::WriteOutcome::Written(a) if a.seq > applied));
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn reopen_after_drop_replays_the_wal() {
    for policy in POLICIES {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path(), policy)).unwrap();
        write_keys(&store, 300).await;
        let applied = store.applied_seq();
        // No close: RocksDB loses its memtable, as in a crash.
        drop(store);

        let (store, report) =
            Store::open_with(config(dir.path(), policy), Default::default()).unwrap();
        assert_eq!(
            report.disk_applied,
            strata::types::Seq::ZERO,
            "{policy:?}: nothing was flushed"
        );
        assert_eq!(
            report.replayed, applied.0,
            "{policy:?}: every record replayed"
        );
        assert_keys(&store, 300).await;
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn checkpoint_deletes_covered_wal_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Always);
    cfg.wal_segment_bytes = 4096;
    let store = Store::open(cfg.clone()).unwrap();
    write_keys(&store, 200).await;
    let before = store.wal().total_bytes();
    let report = store.checkpoint().await.unwrap();
    assert_eq!(report.covered, store.applied_seq());
    assert!(report.segments_removed > 0);
    assert!(store.wal().total_bytes() < before);

    // A hold keeps later segments even across checkpoints.
    let hold = store.hold_wal(store.applied_seq().next());
    write_keys(&store, 200).await;
    let held = store.wal().first_seq().unwrap();
    store.checkpoint().await.unwrap();
    assert_eq!(store.wal().first_seq().unwrap(), held, "held segments stay");
    drop(hold);
    assert!(store.checkpoint().await.unwrap().segments_removed > 0);
    drop(store);

    let (store, report) = Store::open_with(cfg, Default::default()).unwrap();
    assert_eq!(report.replayed, 0);
    assert_keys(&store, 200).await;
}
