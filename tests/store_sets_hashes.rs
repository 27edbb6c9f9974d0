//! Sets and hashes in the store: their ops, kinds that do not mix, and
//! that they survive a restart, reach a replica through the WAL and leave
//! nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{b, config};
use strata::store::{Store, StoreError, WriteOutcome};
use strata::types::{Cancel, Condition, Seq, ValueKind};
use strata::wal::FsyncPolicy;

const SET: ValueKind = ValueKind::Set;
const HASH: ValueKind = ValueKind::Hash;

fn names(items: &[&str]) -> Vec<Bytes> {
    items.iter().map(|s| b(s)).collect()
}

async fn sadd(store: &Store, key: &str, items: &[&str]) -> u64 {
    let members = items.iter().map(|m| (b(m), Bytes::new())).collect();
    store
        .add_members(b(key), SET, members, false)
        .await
        .unwrap()
        .0
}

async fn hset(store: &Store, key: &str, pairs: &[(&str, &str)]) -> u64 {
    let members = pairs.iter().map(|(f, v)| (b(f), b(v))).collect();
    store
        .add_members(b(key), HASH, members, false)
        .await
        .unwrap()
        .0
}

async fn members(store: &Store, key: &str, kind: ValueKind) -> Vec<(Bytes, Bytes)> {
    store.member_page(b(key), kind, None, 1000).await.unwrap()
}

async fn live_keys(store: &Store) -> u64 {
    store.digest(0, Cancel::default()).await.unwrap().keys
}

#[tokio::test]
async fn sets_add_remove_pop_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    // A member named twice counts once; members already there count 0.
    assert_eq!(sadd(&store, "s", &["b", "a", "c", "a"]).await, 3);
    assert_eq!(sadd(&store, "s", &["a", "d"]).await, 1);
    let (added, ack) = store
        .add_members(b("s"), SET, vec![(b("a"), Bytes::new())], false)
        .await
        .unwrap();
    assert_eq!((added, ack), (0, None), "nothing changed, nothing written");
    assert_eq!(store.member_count(b("s"), SET).await.unwrap(), 4);
    assert_eq!(store.kind_of(b"s").await.unwrap(), Some(SET));
    // Members come in byte order, each with an empty value.
    let all = members(&store, "s", SET).await;
    assert_eq!(
        all,
        names(&["a", "b", "c", "d"])
            .into_iter()
            .map(|m| (m, Bytes::new()))
            .collect::<Vec<_>>()
    );
    let page = store
        .member_page(b("s"), SET, Some(b("b")), 1)
        .await
        .unwrap();
    assert_eq!(page, [(b("c"), Bytes::new())], "a page after a member");
    assert_eq!(
        store
            .member_values(b("s"), SET, names(&["a", "zz"]))
            .await
            .unwrap(),
        [Some(Bytes::new()), None]
    );
    // Remove, then pop the first in byte order; the emptied set is gone.
    let (removed, _) = store
        .remove_members(b("s"), SET, names(&["a", "a", "zz"]))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let (popped, ack) = store.pop_members(b("s"), 2).await.unwrap().unwrap();
    assert_eq!(popped, names(&["b", "c"]));
    assert!(ack.is_some());
    let (popped, _) = store.pop_members(b("s"), 5).await.unwrap().unwrap();
    assert_eq!(popped, names(&["d"]));
    assert_eq!(store.kind_of(b"s").await.unwrap(), None);
    assert_eq!(store.pop_members(b("s"), 1).await.unwrap(), None);
    assert_eq!(live_keys(&store).await, 0, "nothing is left on disk");
    // Values are refused for set members.
    let refused = store
        .add_members(b("s"), SET, vec![(b("m"), b("v"))], false)
        .await;
    assert!(matches!(refused, Err(StoreError::InvalidArgument(_))));
    store.close().await.unwrap();
}

#[tokio::test]
async fn hashes_set_overwrite_increment_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    assert_eq!(
        hset(&store, "h", &[("name", "ada"), ("age", "36")]).await,
        2
    );
    // An overwrite counts 0 but changes the value; `only_new` keeps it.
    assert_eq!(hset(&store, "h", &[("name", "bob")]).await, 0);
    let (added, ack) = store
        .add_members(b("h"), HASH, vec![(b("name"), b("cy"))], true)
        .await
        .unwrap();
    assert_eq!((added, ack), (0, None));
    assert_eq!(
        store
            .member_values(b("h"), HASH, names(&["name", "age", "nope"]))
            .await
            .unwrap(),
        [Some(b("bob")), Some(b("36")), None]
    );
    // Field increments, with Redis's integer rules.
    assert_eq!(store.incr_field(b("h"), b("age"), 4).await.unwrap().0, 40);
    assert_eq!(store.incr_field(b("h"), b("new"), -2).await.unwrap().0, -2);
    assert!(matches!(
        store.incr_field(b("h"), b("name"), 1).await,
        Err(StoreError::NotAnInteger)
    ));
    assert_eq!(store.member_count(b("h"), HASH).await.unwrap(), 3);
    assert_eq!(
        members(&store, "h", HASH).await,
        [
            (b("age"), b("40")),
            (b("name"), b("bob")),
            (b("new"), b("-2"))
        ]
    );
    // A delete takes the fields with it; a new hash at the key starts empty.
    assert_eq!(live_keys(&store).await, 4);
    assert!(matches!(
        store.delete(b("h"), Condition::Always).await.unwrap(),
        WriteOutcome::Written(_)
    ));
    assert_eq!(live_keys(&store).await, 0);
    assert_eq!(hset(&store, "h", &[("x", "1")]).await, 1);
    assert_eq!(members(&store, "h", HASH).await, [(b("x"), b("1"))]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn kinds_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    sadd(&store, "s", &["m"]).await;
    hset(&store, "h", &[("f", "v")]).await;
    store
        .set(b("str"), b("v"), None, Condition::Always)
        .await
        .unwrap();
    let wrong = |r: Result<(u64, Option<strata::store::WriteAck>), StoreError>| {
        matches!(r, Err(StoreError::WrongType))
    };
    assert!(wrong(
        store
            .add_members(b("h"), SET, vec![(b("m"), Bytes::new())], false)
            .await
    ));
    assert!(wrong(
        store
            .add_members(b("str"), HASH, vec![(b("f"), b("v"))], false)
            .await
    ));
    assert!(wrong(
        store.remove_members(b("s"), HASH, names(&["m"])).await
    ));
    assert!(matches!(store.get(b"s").await, Err(StoreError::WrongType)));
    assert!(matches!(
        store.incr_field(b("s"), b("f"), 1).await,
        Err(StoreError::WrongType)
    ));
    assert!(matches!(
        store.member_count(b("str"), SET).await,
        Err(StoreError::WrongType)
    ));
    assert!(matches!(
        store.pop_members(b("h"), 1).await,
        Err(StoreError::WrongType)
    ));
    // A string over a set leaves its member for the reclaim pass.
    store
        .set(b("s"), b("now a string"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(store.reclaim_elements(|| true).await.unwrap(), 1);
    store.close().await.unwrap();
}

/// Sets and hashes survive a restart and reach a replica, equal by digest.
#[tokio::test]
async fn a_restart_and_a_replica_keep_sets_and_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let store = Store::open(config(&path, FsyncPolicy::Always)).unwrap();
    sadd(&store, "{t}s", &["x", "y"]).await;
    hset(&store, "{t}h", &[("f", "v"), ("g", "w")]).await;
    store.pop_members(b("{t}s"), 1).await.unwrap();
    store.close().await.unwrap();
    let store = Store::open(config(&path, FsyncPolicy::Always)).unwrap();
    assert_eq!(members(&store, "{t}s", SET).await, [(b("y"), Bytes::new())]);
    assert_eq!(members(&store, "{t}h", HASH).await.len(), 2);

    let replica = Store::open(config(&dir.path().join("r"), FsyncPolicy::Never)).unwrap();
    let records = store.records_from(Seq(1), u64::MAX).await.unwrap();
    replica.apply_replicated(records).await.unwrap();
    assert_eq!(
        members(&replica, "{t}h", HASH).await,
        members(&store, "{t}h", HASH).await
    );
    let (p, r) = (
        store.digest(0, Cancel::default()).await.unwrap(),
        replica.digest(0, Cancel::default()).await.unwrap(),
    );
    assert_eq!((p.keys, &p.sha256), (r.keys, &r.sha256));
    for store in [store, replica] {
        store.close().await.unwrap();
    }
}

/// Adds and pops racing on one set land in shared commit batches, where a
/// pop must see the batch's earlier adds and pops: nothing is taken twice
/// or lost, and the count stays true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_adds_and_pops_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 3 == 2 {
                let popped = store.pop_members(b("s"), 2).await.unwrap();
                popped.map(|(names, _)| names).unwrap_or_default()
            } else {
                let member = Bytes::from(format!("m{i:03}"));
                let members = vec![(member, Bytes::new())];
                store
                    .add_members(b("s"), SET, members, false)
                    .await
                    .unwrap();
                vec![]
            }
        }));
    }
    let mut popped = Vec::new();
    for task in tasks {
        popped.extend(task.await.unwrap());
    }
    let left: Vec<Bytes> = members(&store, "s", SET)
        .await
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    let mut all: Vec<Bytes> = popped.iter().chain(&left).cloned().collect();
    all.sort();
    let added: Vec<Bytes> = (0..400)
        .filter(|i| i % 3 != 2)
        .map(|i| Bytes::from(format!("m{i:03}")))
        .collect();
    assert_eq!(all, added, "every member popped once or still there");
    assert_eq!(
        store.member_count(b("s"), SET).await.unwrap(),
        left.len() as u64
    );
    store.close().await.unwrap();
}

/// A set's pop is cut short by bytes as a list's is.
#[tokio::test]
async fn a_set_pop_is_cut_short_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), FsyncPolicy::Never);
    config.limits.max_value_bytes = 1000;
    let store = Store::open(config).unwrap();
    let big = |c: u8| Bytes::from(vec![c; 600]);
    let members = [b'a', b'b'].map(|c| (big(c), Bytes::new())).to_vec();
    store
        .add_members(b("s"), SET, members, false)
        .await
        .unwrap();
    let (taken, _) = store.pop_members(b("s"), 2).await.unwrap().unwrap();
    assert_eq!(taken, [big(b'a')]);
    let (taken, _) = store.pop_members(b("s"), 2).await.unwrap().unwrap();
    assert_eq!(taken, [big(b'b')]);
    store.close().await.unwrap();
}
