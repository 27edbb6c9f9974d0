//! The write queue is bounded for real: a write's place in it is released
//! when the commit thread is done with the write, not when its caller stops
//! waiting (as a request that timed out does), and a full queue sheds new
//! writes with `Overloaded` instead of queueing them without bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{b, config};
use strata::store::{Store, StoreError};
use strata::types::Condition;
use strata::wal::FsyncPolicy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_write_keeps_its_place_until_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.max_pending_writes = 1;
    let store = Store::open(cfg).unwrap();

    // Hold the commit thread inside the first write's commit.
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    fail::cfg_callback("commit_after_wal_before_disk", move || {
        let _ = entered_tx.send(());
        let _ = release_rx
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(60));
    })
    .unwrap();
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.set(b("a"), b("1"), None, Condition::Always).await })
    };
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the first write reached the commit thread");
    // Its caller gives up (as a timed-out request does)...
    first.abort();
    let _ = first.await;

    // ...but the write still holds the queue's one place: the next is shed.
    let second = tokio::time::timeout(
        Duration::from_secs(60),
        store.set(b("b"), b("2"), None, Condition::Always),
    )
    .await
    .expect("a write beyond the queue's limit waited instead of being shed");
    assert!(
        matches!(second, Err(StoreError::Overloaded { pending: 1 })),
        "{second:?}"
    );

    // Once the commit thread is done with it, the place is free again, and
    // the abandoned write was committed all the same.
    fail::remove("commit_after_wal_before_disk");
    release.send(()).unwrap();
    let third = loop {
        match store.set(b("c"), b("3"), None, Condition::Always).await {
            Err(StoreError::Overloaded { .. }) => tokio::task::yield_now().await,
            other => break other,
        }
    };
    assert!(third.is_ok(), "{third:?}");
    assert_eq!(store.get(b"a").await.unwrap().unwrap().value, b("1"));
}
