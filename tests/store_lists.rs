//! Lists in the store: their ops, and that they survive a restart, reach a
//! replica through the WAL and a full sync, and leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{b, config, manual_clock, open_with_clock};
use strata::clock::Clock;
use strata::store::{InstallMarker, InstallStep, Store, StoreError, TtlState, WriteOutcome};
use strata::types::{Cancel, Condition, End, Seq, ValueKind};
use strata::wal::FsyncPolicy;

fn values(items: &[&str]) -> Vec<Bytes> {
    items.iter().map(|s| b(s)).collect()
}

async fn push(store: &Store, key: &str, end: End, items: &[&str]) -> u64 {
    let (len, _) = store
        .push(b(key), end, values(items), false)
        .await
        .unwrap()
        .unwrap();
    len
}

async fn all(store: &Store, key: &str) -> Vec<Bytes> {
    store.list_range(b(key), 0, -1).await.unwrap()
}

#[tokio::test]
async fn pushes_pops_and_reads_follow_redis() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    // LPUSH a b c leaves c b a; RPUSH appends in order.
    assert_eq!(push(&store, "l", End::Left, &["a", "b", "c"]).await, 3);
    assert_eq!(push(&store, "l", End::Right, &["x", "y"]).await, 5);
    assert_eq!(all(&store, "l").await, values(&["c", "b", "a", "x", "y"]));
    assert_eq!(store.list_len(b("l")).await.unwrap(), 5);
    assert_eq!(
        store.list_range(b("l"), 1, 2).await.unwrap(),
        values(&["b", "a"])
    );
    assert_eq!(
        store.list_range(b("l"), -2, 99).await.unwrap(),
        values(&["x", "y"])
    );
    assert_eq!(store.list_range(b("l"), 3, 1).await.unwrap(), values(&[]));
    assert_eq!(store.list_index(b("l"), -1).await.unwrap(), Some(b("y")));
    assert_eq!(store.list_index(b("l"), 5).await.unwrap(), None);
    assert_eq!(store.kind_of(b"l").await.unwrap(), Some(ValueKind::List));

    let (popped, ack) = store.pop(b("l"), End::Left, 2).await.unwrap().unwrap();
    assert_eq!(popped, values(&["c", "b"]));
    assert!(ack.is_some());
    let (popped, _) = store.pop(b("l"), End::Right, 1).await.unwrap().unwrap();
    assert_eq!(popped, values(&["y"]));
    assert_eq!(all(&store, "l").await, values(&["a", "x"]));
    // A pop of 0 changes nothing; popping past the end empties and deletes it.
    let (popped, ack) = store.pop(b("l"), End::Left, 0).await.unwrap().unwrap();
    assert!(popped.is_empty() && ack.is_none());
    let (popped, _) = store.pop(b("l"), End::Right, 10).await.unwrap().unwrap();
    assert_eq!(popped, values(&["x", "a"]));
    assert_eq!(store.kind_of(b"l").await.unwrap(), None);
    assert_eq!(store.pop(b("l"), End::Left, 1).await.unwrap(), None);
    assert_eq!(store.list_len(b("l")).await.unwrap(), 0);
    // PUSHX on no list does nothing.
    assert_eq!(
        store
            .push(b("l"), End::Left, values(&["z"]), true)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.kind_of(b"l").await.unwrap(), None);
    store.close().await.unwrap();
}

#[tokio::test]
async fn kinds_do_not_mix_and_internal_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    push(&store, "list", End::Right, &["a"]).await;
    store
        .set(b("str"), b("1"), None, Condition::Always)
        .await
        .unwrap();
    assert!(matches!(
        store.get(b"list").await,
        Err(StoreError::WrongType)
    ));
    assert!(matches!(
        store.incr(b("list"), 1).await,
        Err(StoreError::WrongType)
    ));
    assert!(matches!(
        store.push(b("str"), End::Left, values(&["x"]), false).await,
        Err(StoreError::WrongType)
    ));
    assert!(matches!(
        store.pop(b("str"), End::Left, 1).await,
        Err(StoreError::WrongType)
    ));
    assert!(matches!(
        store.list_range(b("str"), 0, -1).await,
        Err(StoreError::WrongType)
    ));
    // A multi-get reads a list as absent, as MGET does; EXISTS counts it.
    let found = store.get_many(&[b("list"), b("str")]).await.unwrap();
    assert!(found[0].is_none() && found[1].is_some());
    assert_eq!(store.exists(&[b("list"), b("str")]).await.unwrap(), 2);
    // A scan lists strings only: its pages carry values.
    let page = store.scan(Bytes::new(), None, 100).await.unwrap();
    let keys: Vec<_> = page.entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![b("str")]);
    // Nobody names an element key.
    let internal = Bytes::from_static(b"\xff\xff\xff\xffanything");
    assert!(matches!(
        store.get(&internal).await,
        Err(StoreError::ReservedKey)
    ));
    assert!(matches!(
        store.set(internal, b("v"), None, Condition::Always).await,
        Err(StoreError::ReservedKey)
    ));
    // SET replaces a list with a string, as in Redis.
    store
        .set(b("list"), b("now a string"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(
        store.get(b"list").await.unwrap().unwrap().value,
        b("now a string")
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_list_keeps_its_kind_through_expire_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), FsyncPolicy::Always);
    let store = Store::open(cfg.clone()).unwrap();
    push(&store, "l", End::Right, &["1", "2", "3"]).await;
    assert!(matches!(
        store
            .expire(b("l"), Duration::from_secs(3600))
            .await
            .unwrap(),
        WriteOutcome::Written(_)
    ));
    assert!(matches!(
        store.ttl(b"l").await.unwrap(),
        TtlState::ExpiresInMs(ms) if ms > 3_000_000
    ));
    assert_eq!(store.kind_of(b"l").await.unwrap(), Some(ValueKind::List));
    // Dropped without a clean close: the WAL replays into RocksDB.
    drop(store);
    let store = Store::open(cfg).unwrap();
    assert_eq!(all(&store, "l").await, values(&["1", "2", "3"]));
    assert!(matches!(
        store.ttl(b"l").await.unwrap(),
        TtlState::ExpiresInMs(_)
    ));
    store.close().await.unwrap();
}

#[tokio::test]
async fn deleting_a_list_removes_its_elements() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    push(&store, "l", End::Right, &["a", "b", "c"]).await;
    let digest = store.digest(0, Cancel::default()).await.unwrap();
    assert_eq!(digest.keys, 4, "the metadata and three elements");
    assert!(matches!(
        store.delete(b("l"), Condition::Always).await.unwrap(),
        WriteOutcome::Written(_)
    ));
    let digest = store.digest(0, Cancel::default()).await.unwrap();
    assert_eq!(digest.keys, 0, "nothing is left on disk");
    // A new list at the same key starts empty.
    push(&store, "l", End::Left, &["z"]).await;
    assert_eq!(all(&store, "l").await, values(&["z"]));
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_replica_gets_lists_through_the_wal_and_a_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Store::open(config(&dir.path().join("p"), FsyncPolicy::Never)).unwrap();
    push(&primary, "l", End::Right, &["a", "b", "c", "d"]).await;
    primary.pop(b("l"), End::Left, 1).await.unwrap();
    push(&primary, "other", End::Left, &["x"]).await;

    // The WAL stream, as a replica applies it.
    let replica = Store::open(config(&dir.path().join("r"), FsyncPolicy::Never)).unwrap();
    let records = primary.records_from(Seq(1), u64::MAX).await.unwrap();
    replica.apply_replicated(records).await.unwrap();
    assert_eq!(all(&replica, "l").await, values(&["b", "c", "d"]));
    let (p, r) = (
        primary.digest(0, Cancel::default()).await.unwrap(),
        replica.digest(0, Cancel::default()).await.unwrap(),
    );
    assert_eq!((p.keys, &p.sha256), (r.keys, &r.sha256));

    // A full sync: the snapshot's entries installed on an empty store.
    let (reader, _hold) = primary.snapshot(dir.path().join("snap")).await.unwrap();
    let entries = reader.read_chunk(None, usize::MAX, 0).unwrap();
    assert!(entries.iter().any(|e| e.kind == ValueKind::List));
    let seq = reader.seq();
    let fresh = Store::open(config(&dir.path().join("f"), FsyncPolicy::Never)).unwrap();
    let marker = InstallMarker {
        snapshot_id: 1,
        seq,
        last_key: None,
        entries: 0,
        bytes: 0,
    };
    fresh
        .install(InstallStep::Begin(marker.clone()))
        .await
        .unwrap();
    // The marker after a chunk counts what it brought.
    let after = InstallMarker {
        last_key: entries.last().map(|e| e.key.clone()),
        entries: entries.len() as u64,
        bytes: entries.iter().map(|e| e.data_len()).sum(),
        ..marker
    };
    fresh
        .install(InstallStep::Chunk(entries, after))
        .await
        .unwrap();
    fresh.install(InstallStep::Finish(seq)).await.unwrap();
    assert_eq!(all(&fresh, "l").await, values(&["b", "c", "d"]));
    assert_eq!(
        fresh.kind_of(b"other").await.unwrap(),
        Some(ValueKind::List)
    );
    let f = fresh.digest(0, Cancel::default()).await.unwrap();
    assert_eq!((f.keys, &f.sha256), (p.keys, &p.sha256));
    for store in [primary, replica, fresh] {
        store.close().await.unwrap();
    }
}

/// Lists gone without their elements (deleted with more elements than a
/// delete takes at once, replaced by a string, expired) leave elements on
/// disk until the reclaim pass deletes them; live lists keep theirs, and a
/// replica fed the WAL ends up equal.
#[tokio::test]
async fn reclaim_deletes_the_elements_of_gone_lists_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let store = open_with_clock(
        config(&dir.path().join("p"), FsyncPolicy::Never),
        clock.clone(),
    );
    // Live keys now (an expired list's metadata is not live).
    let keys = |store: &Store| {
        let (store, now) = (store.clone(), clock.now_ms());
        async move { store.digest(now, Cancel::default()).await.unwrap().keys }
    };
    // 10 001 elements: one more than a delete removes in its own record.
    let big: Vec<Bytes> = (0..10_001).map(|i| Bytes::from(i.to_string())).collect();
    for chunk in big.chunks(1000) {
        store
            .push(b("big"), End::Right, chunk.to_vec(), false)
            .await
            .unwrap();
    }
    push(&store, "replaced", End::Right, &["a", "b"]).await;
    push(&store, "expiring", End::Right, &["x", "y", "z"]).await;
    store
        .expire(b("expiring"), Duration::from_secs(10))
        .await
        .unwrap();
    push(&store, "live", End::Right, &["keep", "me"]).await;
    assert_eq!(
        store.reclaim_elements(|| true).await.unwrap(),
        0,
        "nothing is gone yet"
    );

    store.delete(b("big"), Condition::Always).await.unwrap();
    store
        .set(b("replaced"), b("now a string"), None, Condition::Always)
        .await
        .unwrap();
    clock.advance_ms(10_001);
    assert_eq!(
        keys(&store).await,
        10_001 + 1 + 2 + 3 + 3,
        "the gone lists' elements, the string, the live list"
    );
    // An expired list's elements wait out the grace period (a node whose
    // clock is behind may still read the list).
    assert_eq!(store.reclaim_elements(|| true).await.unwrap(), 10_001 + 2);
    clock.advance_ms(5 * 60 * 1000);
    assert_eq!(store.reclaim_elements(|| true).await.unwrap(), 3);
    assert_eq!(keys(&store).await, 1 + 3, "the string and the live list");
    assert_eq!(all(&store, "live").await, values(&["keep", "me"]));
    assert_eq!(
        store.reclaim_elements(|| true).await.unwrap(),
        0,
        "a second pass finds none"
    );
    // A node that may no longer write stops before its first record.
    push(&store, "again", End::Right, &["a"]).await;
    store
        .set(b("again"), b("a string"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(store.reclaim_elements(|| false).await.unwrap(), 0);
    assert_eq!(store.reclaim_elements(|| true).await.unwrap(), 1);

    // The deletes are records like any write: a replica follows.
    let replica = open_with_clock(
        config(&dir.path().join("r"), FsyncPolicy::Never),
        clock.clone(),
    );
    let records = store.records_from(Seq(1), u64::MAX).await.unwrap();
    replica.apply_replicated(records).await.unwrap();
    let (p, r) = (
        store.digest(0, Cancel::default()).await.unwrap(),
        replica.digest(0, Cancel::default()).await.unwrap(),
    );
    assert_eq!((p.keys, &p.sha256), (r.keys, &r.sha256));
    for store in [store, replica] {
        store.close().await.unwrap();
    }
}

/// A pop takes no more values than fit one value's size together (one at
/// least), so its reply always fits a frame; the rest waits for the next.
#[tokio::test]
async fn a_pop_is_cut_short_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), FsyncPolicy::Never);
    config.limits.max_value_bytes = 1000;
    let store = Store::open(config).unwrap();
    let big = |c: u8| Bytes::from(vec![c; 600]);
    store
        .push(
            b("l"),
            End::Right,
            vec![big(b'a'), big(b'b'), big(b'c')],
            false,
        )
        .await
        .unwrap();
    let (taken, _) = store.pop(b("l"), End::Left, 3).await.unwrap().unwrap();
    assert_eq!(taken, [big(b'a')], "two would be 1200 bytes");
    store
        .push(b("l"), End::Right, vec![b("x")], false)
        .await
        .unwrap();
    let (taken, _) = store.pop(b("l"), End::Left, 3).await.unwrap().unwrap();
    assert_eq!(taken, [big(b'b')]);
    let (taken, _) = store.pop(b("l"), End::Left, 3).await.unwrap().unwrap();
    assert_eq!(taken, [big(b'c'), b("x")], "601 bytes fit");
    store.close().await.unwrap();
}
