//! Warm restart: the keys the memory tier held at a clean close are back
//! in it after the next open, filled in the background from the disk tier;
//! a damaged hot-key list means a cold start, not a failed one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{b, config};
use strata::store::Store;
use strata::types::Condition;
use strata::wal::FsyncPolicy;

async fn wait_warmed(store: &Store, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stats().memory_warmed_keys < want {
        assert!(
            Instant::now() < deadline,
            "only {} keys re-warmed",
            store.stats().memory_warmed_keys
        );
        // Polled: the warm thread reports progress only through stats.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn hot_keys_are_back_in_memory_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    for i in 0..200 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        store
            .set(b(&k), b(&v), None, Condition::Always)
            .await
            .unwrap();
    }
    // Reads fill the memory tier (writes alone do not): the even keys are hot.
    for i in (0..200).step_by(2) {
        store.get(format!("k{i}").as_bytes()).await.unwrap();
    }
    store.close().await.unwrap();

    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    wait_warmed(&store, 100).await;
    assert_eq!(store.stats().memory_warmed_keys, 100);
    for i in 0..200 {
        let cached = store.memory_peek(format!("k{i}").as_bytes());
        if i % 2 == 0 {
            assert_eq!(cached.map(|(v, _)| v), Some(b(&format!("v{i}"))), "k{i}");
        } else {
            assert!(cached.is_none(), "k{i} was never hot");
        }
    }
    // The first read of a warmed key is a memory-tier hit.
    let before = store.stats().memory_hits;
    store.get(b"k10").await.unwrap();
    assert_eq!(store.stats().memory_hits, before + 1);
    store.close().await.unwrap();

    // A damaged list is ignored.
    let list = dir.path().join("hot-keys");
    let mut bytes = std::fs::read(&list).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&list, bytes).unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    assert_eq!(
        store.get(b"k10").await.unwrap().map(|e| e.value),
        Some(b("v10"))
    );
    assert_eq!(store.stats().memory_warmed_keys, 0);
}
