//! A WAL hold protects its records from the moment it exists, even when it
//! is taken while a checkpoint is already deleting older segments (the
//! checkpoint once read the holds once, then deleted by that stale bound).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::hold::Hold;
use common::{b, config};
use strata::store::Store;
use strata::types::{Condition, Seq};
use strata::wal::FsyncPolicy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_taken_during_a_checkpoint_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    // Small segments: a few records each, so the log spans many of them.
    cfg.wal_segment_bytes = 4096;
    let store = Store::open(cfg).unwrap();
    for i in 0..60 {
        let value = vec![b'v'; 500];
        store
            .set(
                b(&format!("k{i:02}")),
                value.into(),
                None,
                Condition::Always,
            )
            .await
            .unwrap();
    }
    let segments = store.wal().segment_count();
    assert!(segments > 5, "only {segments} segments");

    // Stop the checkpoint after it deleted its first segment...
    let mut hold = Hold::arm("wal_segment_removed");
    let checkpoint = {
        let store = store.clone();
        tokio::spawn(async move { store.checkpoint().await })
    };
    hold.reached("the checkpoint's first deletion").await;
    // ...and take a hold on records well past it (as a replica session
    // or a full sync does), then let the checkpoint go on.
    let first_kept = store.wal().first_seq().unwrap();
    let held = Seq(first_kept.0 + 20);
    let _hold = store.hold_wal(held);
    hold.release();
    let report = checkpoint.await.unwrap().unwrap();
    assert!(report.segments_removed >= 1);

    // Everything from the hold on is still in the log.
    let records = store.records_from(held, u64::MAX).await.unwrap();
    assert_eq!(records.first().map(|r| r.seq), Some(held));
    assert_eq!(records.last().map(|r| r.seq), Some(store.applied_seq()));
}
