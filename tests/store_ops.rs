//! Every store operation against a real RocksDB directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{b, config};
use strata::cluster::key_slot;
use strata::proto::RequestError;
use strata::store::{Store, StoreError, TtlState, WriteOutcome};
use strata::types::{Condition, Seq};
use strata::wal::FsyncPolicy;

fn written(outcome: WriteOutcome) -> Seq {
    match outcome {
        WriteOutcome::Written(ack) => ack.seq,
        other => panic!("expected a write, got {other:?}"),
    }
}

#[tokio::test]
async fn set_get_delete_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Always)).unwrap();
    assert_eq!(store.get(b"k").await.unwrap(), None);

    let v1 = written(
        store
            .set(b("k"), b("one"), None, Condition::Always)
            .await
            .unwrap(),
    );
    let e = store.get(b"k").await.unwrap().unwrap();
    assert_eq!((e.value, e.version, e.ttl_ms), (b("one"), v1, None));

    let v2 = written(
        store
            .set(b("k"), b("two"), None, Condition::Always)
            .await
            .unwrap(),
    );
    assert!(v2 > v1, "versions increase");
    // From the disk tier too, not only the memory tier.
    store.evict_from_memory(b"k");
    assert_eq!(store.get(b"k").await.unwrap().unwrap().version, v2);

    assert!(matches!(
        store.delete(b("k"), Condition::Always).await.unwrap(),
        WriteOutcome::Written(_)
    ));
    assert_eq!(store.get(b"k").await.unwrap(), None);
    assert_eq!(
        store.delete(b("k"), Condition::Always).await.unwrap(),
        WriteOutcome::NotFound
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn conditions_and_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();

    assert_eq!(
        store
            .set(b("k"), b("x"), None, Condition::IfPresent)
            .await
            .unwrap(),
        WriteOutcome::ConditionFailed { current: None }
    );
    let v1 = written(
        store
            .set(b("k"), b("a"), None, Condition::IfAbsent)
            .await
            .unwrap(),
    );
    assert_eq!(
        store
            .set(b("k"), b("b"), None, Condition::IfAbsent)
            .await
            .unwrap(),
        WriteOutcome::ConditionFailed { current: Some(v1) }
    );
    // CAS with a stale version fails and reports the current one.
    let v2 = written(
        store
            .set(b("k"), b("c"), None, Condition::IfVersion(v1))
            .await
            .unwrap(),
    );
    assert_eq!(
        store
            .set(b("k"), b("d"), None, Condition::IfVersion(v1))
            .await
            .unwrap(),
        WriteOutcome::ConditionFailed { current: Some(v2) }
    );
    assert_eq!(store.get(b"k").await.unwrap().unwrap().value, b("c"));
    // Conditional delete.
    assert_eq!(
        store
            .delete(b("k"), Condition::IfVersion(v1))
            .await
            .unwrap(),
        WriteOutcome::ConditionFailed { current: Some(v2) }
    );
    written(
        store
            .delete(b("k"), Condition::IfVersion(v2))
            .await
            .unwrap(),
    );
    // Delete takes only Always and IfVersion, whether or not the key exists.
    for condition in [Condition::IfAbsent, Condition::IfPresent] {
        assert!(matches!(
            store.delete(b("gone"), condition).await,
            Err(StoreError::InvalidArgument(_))
        ));
    }
    written(
        store
            .set(b("k"), b("e"), None, Condition::Always)
            .await
            .unwrap(),
    );
    assert!(matches!(
        store.delete(b("k"), Condition::IfAbsent).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn concurrent_cas_increments_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    store
        .set(b("n"), b("0"), None, Condition::Always)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 25 {
                let e = store.get(b"n").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&e.value).unwrap().parse().unwrap();
                let next = b(&(n + 1).to_string());
                if let WriteOutcome::Written(_) = store
                    .set(b("n"), next, None, Condition::IfVersion(e.version))
                    .await
                    .unwrap()
                {
                    done += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.get(b"n").await.unwrap().unwrap().value, b("200"));
}

#[tokio::test]
async fn incr_multi_and_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Always)).unwrap();
    assert_eq!(store.incr(b("c"), 5).await.unwrap().0, 5);
    assert_eq!(store.incr(b("c"), -7).await.unwrap().0, -2);
    assert_eq!(store.get(b"c").await.unwrap().unwrap().value, b("-2"));
    store
        .set(b("s"), b("abc"), None, Condition::Always)
        .await
        .unwrap();
    assert!(matches!(
        store.incr(b("s"), 1).await,
        Err(StoreError::NotAnInteger)
    ));
    store
        .set(b("m"), b(&i64::MAX.to_string()), None, Condition::Always)
        .await
        .unwrap();
    assert!(matches!(
        store.incr(b("m"), 1).await,
        Err(StoreError::Overflow)
    ));

    let ack = store
        .set_many(vec![
            (b("a"), b("1"), None),
            (b("b"), b("2"), Some(Duration::from_secs(60))),
        ])
        .await
        .unwrap();
    // One atomic record: both keys share its version.
    let got = store.get_many(&[b("a"), b("b"), b("zz")]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().version, ack.seq);
    assert_eq!(got[1].as_ref().unwrap().version, ack.seq);
    assert!(got[1].as_ref().unwrap().ttl_ms.unwrap() <= 60_000);
    assert!(got[2].is_none());
    assert_eq!(
        store
            .exists(&[b("a"), b("b"), b("zz"), b("a")])
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn expire_persist_and_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Always)).unwrap();
    assert_eq!(store.ttl(b"k").await.unwrap(), TtlState::Missing);
    assert_eq!(
        store.expire(b("k"), Duration::from_secs(5)).await.unwrap(),
        WriteOutcome::NotFound
    );
    store
        .set(b("k"), b("v"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(store.ttl(b"k").await.unwrap(), TtlState::Persistent);
    assert_eq!(
        store.persist(b("k")).await.unwrap(),
        WriteOutcome::Unchanged
    );
    written(
        store
            .expire(b("k"), Duration::from_secs(100))
            .await
            .unwrap(),
    );
    match store.ttl(b"k").await.unwrap() {
        TtlState::ExpiresInMs(ms) => assert!(ms > 90_000 && ms <= 100_000, "{ms}"),
        other => panic!("{other:?}"),
    }
    written(store.persist(b("k")).await.unwrap());
    assert_eq!(store.ttl(b"k").await.unwrap(), TtlState::Persistent);
    // A zero TTL is refused, as for set (proto-docs/wire-protocol.md §8),
    // and the key is untouched.
    assert!(matches!(
        store.expire(b("k"), Duration::ZERO).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.ttl(b"k").await.unwrap(), TtlState::Persistent);
}

#[tokio::test]
async fn prefix_scan_pages_with_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    for i in 0..25 {
        store
            .set(
                b(&format!("user:{i:03}")),
                b(&i.to_string()),
                None,
                Condition::Always,
            )
            .await
            .unwrap();
    }
    store
        .set(b("other"), b("x"), None, Condition::Always)
        .await
        .unwrap();
    store
        .set(b("user:999"), b("gone"), None, Condition::Always)
        .await
        .unwrap();
    store
        .delete(b("user:999"), Condition::Always)
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.scan(b("user:"), cursor, 10).await.unwrap();
        assert!(page.entries.len() <= 10);
        seen.extend(page.entries.into_iter().map(|(k, e)| (k, e.value)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected: Vec<_> = (0..25)
        .map(|i| (b(&format!("user:{i:03}")), b(&i.to_string())))
        .collect();
    // Slot order: by Redis Cluster slot, then bytewise.
    expected.sort_by_key(|(k, _)| (key_slot(k), k.clone()));
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn limits_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.limits.max_key_bytes = 8;
    cfg.limits.max_value_bytes = 16;
    cfg.limits.max_batch_keys = 2;
    let store = Store::open(cfg).unwrap();
    assert!(matches!(
        store
            .set(b("123456789"), b("v"), None, Condition::Always)
            .await,
        Err(StoreError::Limit(RequestError::KeyTooLarge {
            len: 9,
            max: 8
        }))
    ));
    assert!(matches!(
        store
            .set(b("k"), b(&"x".repeat(17)), None, Condition::Always)
            .await,
        Err(StoreError::Limit(RequestError::ValueTooLarge {
            len: 17,
            max: 16
        }))
    ));
    assert!(matches!(
        store.get_many(&[b("a"), b("b"), b("c")]).await,
        Err(StoreError::Limit(RequestError::TooManyKeys {
            count: 3,
            max: 2
        }))
    ));
    // The empty key is a key (proto-docs/wire-protocol.md §8).
    assert!(matches!(store.get(b"").await, Ok(None)));
    assert!(matches!(
        store
            .set(b("k"), b("v"), Some(Duration::ZERO), Condition::Always)
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    // The store still works after refusing bad input.
    store
        .set(b("k"), b("v"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(store.get(b"k").await.unwrap().unwrap().value, b("v"));
}

#[tokio::test]
async fn second_opener_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    let err = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another strata process"),
        "{err}"
    );
    store.close().await.unwrap();
    // Released on close.
    Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
}

#[tokio::test]
async fn bad_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), FsyncPolicy::Never);
    cfg.memory_budget_bytes = 0;
    let err = Store::open(cfg).unwrap_err();
    assert!(err.to_string().contains("memory_budget_bytes"), "{err}");
}
