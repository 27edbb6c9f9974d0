//! I9: an fsync error poisons the store: the failing write and every later
//! one are refused with a clear error, reads go on, and a restart recovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{b, config};
use strata::clock::SystemClock;
use strata::store::{Env, Store, StoreError};
use strata::types::Condition;
use strata::wal::{FsyncPolicy, SimFs};

#[tokio::test]
async fn fsync_failure_poisons_writes() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SimFs::new();
    let env = Env {
        clock: Arc::new(SystemClock),
        wal_fs: Arc::new(fs.clone()),
    };
    let cfg = config(dir.path(), FsyncPolicy::Always);
    let (store, _) = Store::open_with(cfg.clone(), env.clone()).unwrap();
    store
        .set(b("ok"), b("1"), None, Condition::Always)
        .await
        .unwrap();

    fs.fail_syncs(true);
    let err = store
        .set(b("bad"), b("2"), None, Condition::Always)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Poisoned(_)), "{err:?}");
    assert!(err.to_string().contains("fsync"), "names the cause: {err}");
    assert!(
        err.to_string().contains("restart"),
        "says what to do: {err}"
    );

    // Even with the disk healthy again, no write is acknowledged any more.
    fs.fail_syncs(false);
    for _ in 0..3 {
        let err = store.incr(b("n"), 1).await.unwrap_err();
        assert!(matches!(err, StoreError::Poisoned(_)), "{err:?}");
    }
    assert!(store.stats().poisoned.is_some());
    // Reads still work, and the refused write is not visible.
    assert_eq!(store.get(b"ok").await.unwrap().unwrap().value, b("1"));
    assert_eq!(store.get(b"bad").await.unwrap(), None);
    drop(store);

    // A restart recovers what is really on disk and accepts writes again.
    let (store, _) = Store::open_with(cfg, env).unwrap();
    assert_eq!(store.get(b"ok").await.unwrap().unwrap().value, b("1"));
    store
        .set(b("after"), b("3"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(store.get(b"after").await.unwrap().unwrap().value, b("3"));
}
