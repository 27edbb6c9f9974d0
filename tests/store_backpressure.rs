//! The write queue is bounded for real: a write's place in it is released
//! when the commit thread is done with the write, not when its caller stops
//! waiting (as a request that timed out does), and a full queue sheds new
//! writes with `Overloaded` instead of queueing them without bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::hold::Hold;
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
    let mut hold = Hold::arm("commit_after_wal_before_disk");
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store.set(b("a"), b("1"), None, Condition::Always).await })
    };
    hold.reached("the first write").await;
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
    hold.release();
    let third = loop {
        match store.set(b("c"), b("3"), None, Condition::Always).await {
            Err(StoreError::Overloaded { .. }) => tokio::task::yield_now().await,
            other => break other,
        }
    };
    assert!(third.is_ok(), "{third:?}");
    assert_eq!(store.get(b"a").await.unwrap().unwrap().value, b("1"));
}
