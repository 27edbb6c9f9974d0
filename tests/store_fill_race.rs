//! I3: read-miss fills racing writes and deletes never leave the memory
//! tier holding a value older than the disk tier's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{b, config};
use strata::store::{Store, WriteOutcome};
use strata::types::Condition;
use strata::wal::FsyncPolicy;

const KEYS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_never_resurrect_older_values() {
    race(true).await;
}

/// The same with every miss read on the blocking pool (the keys live in
/// the memtable, which inline reads would answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_from_the_blocking_pool_never_resurrect_older_values() {
    race(false).await;
}

async fn race(inline_reads: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), FsyncPolicy::Never);
    config.disk.inline_reads = inline_reads;
    let store = Store::open(config).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Per key, the highest version whose write or delete has completed.
    let floor: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for w in 0..3 {
        let (store, stop, floor) = (store.clone(), stop.clone(), floor.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = n as usize % KEYS;
                let key = b(&format!("k{k}"));
                let outcome = if w == 2 {
                    store.delete(key, Condition::Always).await.unwrap()
                } else {
                    store
                        .set(key, b(&format!("w{w}-{n}")), None, Condition::Always)
                        .await
                        .unwrap()
                };
                if let WriteOutcome::Written(ack) = outcome {
                    floor[k].fetch_max(ack.seq.0, Ordering::SeqCst);
                }
                n += 1;
            }
        }));
    }
    // Readers that keep evicting, so nearly every read is a racing disk
    // fill: one key at a time, and every key in one get_many.
    for batched in [false, true] {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if batched {
                    let keys: Vec<_> = (0..KEYS).map(|k| b(&format!("k{k}"))).collect();
                    for key in &keys {
                        store.evict_from_memory(key);
                    }
                    let _ = store.get_many(&keys).await.unwrap();
                } else {
                    let key = format!("k{}", n % KEYS);
                    store.evict_from_memory(key.as_bytes());
                    let _ = store.get(key.as_bytes()).await.unwrap();
                }
                n += 1;
            }
        }));
    }
    // A checking reader: a read never returns a version older than a write
    // that completed before the read began (a stale fill would).
    let checker = {
        let (store, floor) = (store.clone(), floor.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut reads = 0u64;
            while Instant::now() < deadline {
                let k = reads as usize % KEYS;
                let before = floor[k].load(Ordering::SeqCst);
                if let Some(e) = store.get(format!("k{k}").as_bytes()).await.unwrap() {
                    assert!(
                        e.version.0 >= before,
                        "k{k}: read version {} after {before} completed",
                        e.version
                    );
                }
                reads += 1;
            }
            reads
        })
    };
    let reads = checker.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(reads > 100, "the checker ran ({reads} reads)");
    // At rest the memory tier agrees with the disk tier.
    for k in 0..KEYS {
        let key = format!("k{k}");
        let disk = store.disk_get(key.as_bytes()).unwrap();
        if let Some((value, seq)) = store.memory_peek(key.as_bytes()) {
            let disk =
                disk.unwrap_or_else(|| panic!("{key}: memory holds {value:?}@{seq}, disk none"));
            assert_eq!(
                (value, seq),
                (disk.value, disk.seq),
                "{key}: memory tier is stale"
            );
        }
    }
}
