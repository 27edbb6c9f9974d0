//! Simulated power loss: the WAL runs on a file layer that keeps written
//! and synced bytes apart and, on "power loss", keeps only the synced bytes
//! (plus a torn prefix of the rest). RocksDB loses its memtable (the store
//! is dropped without a checkpoint), so recovery depends on the WAL alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use common::{b, config};
use rand::{Rng, SeedableRng};
use strata::clock::SystemClock;
use strata::store::{Env, Store, StoreConfig, WriteOutcome};
use strata::types::Condition;
use strata::wal::{FsyncPolicy, SimFs};

fn env(fs: &SimFs) -> Env {
    Env {
        clock: Arc::new(SystemClock),
        wal_fs: Arc::new(fs.clone()),
    }
}

/// Runs concurrent writers, then a power loss at a random point; returns
/// what was acknowledged and the store reopened after the loss.
async fn write_then_lose_power(
    cfg: StoreConfig,
    fs: &SimFs,
    seed: u64,
) -> (BTreeMap<Bytes, Bytes>, Store) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let writes = rng.random_range(100..600u64);
    let checkpoint_at = rng.random_range(0..writes);
    let (store, _) = Store::open_with(cfg.clone(), env(fs)).unwrap();
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in (w..writes).step_by(16) {
                let (key, value) = (b(&format!("k{}", i % 97)), b(&format!("v{i}")));
                if i == checkpoint_at {
                    store.checkpoint().await.unwrap();
                }
                let outcome = store
                    .set(key.clone(), value.clone(), None, Condition::Always)
                    .await
                    .unwrap();
                let WriteOutcome::Written(ack) = outcome else {
                    panic!("{outcome:?}")
                };
                acked.push((ack.seq, key, value));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    // Power fails while the store is still running: nothing gets a chance
    // to sync on the way down.
    fs.power_loss_torn(seed);
    drop(store);
    // The last acknowledged version of each key is what must be there.
    acked.sort();
    let expected = acked.into_iter().map(|(_, k, v)| (k, v)).collect();
    let (store, _) = Store::open_with(cfg, env(fs)).unwrap();
    (expected, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_always_keeps_every_acknowledged_write() {
    let seed: u64 = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    for round in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let fs = SimFs::new();
        let mut cfg = config(dir.path(), FsyncPolicy::Always);
        cfg.wal_segment_bytes = 4096;
        let (expected, store) = write_then_lose_power(cfg, &fs, seed + round).await;
        for (key, value) in &expected {
            let got = store.get(key).await.unwrap().map(|e| e.value);
            assert_eq!(
                got.as_ref(),
                Some(value),
                "seed {}: {key:?} lost",
                seed + round
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_never_loses_writes_on_power_loss() {
    // The simulation has teeth: without fsync, acknowledged writes vanish.
    let dir = tempfile::tempdir().unwrap();
    let fs = SimFs::new();
    let (expected, store) =
        write_then_lose_power(config(dir.path(), FsyncPolicy::Never), &fs, 7).await;
    let mut lost = 0;
    for (key, value) in &expected {
        if store.get(key).await.unwrap().map(|e| e.value).as_ref() != Some(value) {
            lost += 1;
        }
    }
    assert!(
        lost > 0,
        "power loss under fsync=never dropped nothing: the simulation is not simulating"
    );
}

#[tokio::test]
async fn writes_continue_when_rocksdb_is_ahead_of_the_wal() {
    // Under fsync=never a checkpoint can make RocksDB durable beyond what
    // the WAL keeps after a power loss; the store must carry on from
    // RocksDB's seq rather than refuse writes or reuse seqs.
    let dir = tempfile::tempdir().unwrap();
    let fs = SimFs::new();
    let cfg = config(dir.path(), FsyncPolicy::Never);
    let (store, _) = Store::open_with(cfg.clone(), env(&fs)).unwrap();
    for i in 0..50 {
        store
            .set(b(&format!("k{i}")), b("before"), None, Condition::Always)
            .await
            .unwrap();
        if i == 25 {
            // The WAL is durable up to here only.
            store.sync().await.unwrap();
        }
    }
    store.checkpoint().await.unwrap();
    let checkpointed = store.applied_seq();
    for i in 0..50 {
        store
            .set(b(&format!("k{i}")), b("lost"), None, Condition::Always)
            .await
            .unwrap();
    }
    fs.power_loss();
    drop(store);

    let (store, report) = Store::open_with(cfg.clone(), env(&fs)).unwrap();
    assert_eq!(report.last_seq, checkpointed);
    assert_eq!(store.get(b"k1").await.unwrap().unwrap().value, b("before"));
    let WriteOutcome::Written(ack) = store
        .set(b("k1"), b("after"), None, Condition::Always)
        .await
        .unwrap()
    else {
        panic!("write refused");
    };
    assert_eq!(ack.seq, checkpointed.next());
    drop(store);
    let (store, _) = Store::open_with(cfg, env(&fs)).unwrap();
    assert_eq!(store.get(b"k1").await.unwrap().unwrap().value, b("after"));
}
