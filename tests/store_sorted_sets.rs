//! Sorted sets in the store: scoring by ZADD's rules, ranges and pops from
//! both ends, removal, and that they survive a restart, reach a replica
//! and leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{b, config};
use strata::store::{Store, StoreError};
use strata::types::{Cancel, Condition, End, ScoreRule, ScoreUpdate, Seq, ValueKind};
use strata::wal::FsyncPolicy;

const ZSET: ValueKind = ValueKind::SortedSet;

async fn zadd(store: &Store, key: &str, items: &[(f64, &str)]) -> u64 {
    let members = items.iter().map(|(s, m)| (b(m), *s)).collect();
    let rule = ScoreRule::default();
    store
        .add_scores(b(key), members, rule, false)
        .await
        .unwrap()
        .0
}

async fn range(store: &Store, key: &str, start: i64, stop: i64, end: End) -> Vec<(String, f64)> {
    let found = store.score_range(b(key), start, stop, end).await.unwrap();
    found
        .into_iter()
        .map(|(m, s)| (String::from_utf8(m.to_vec()).unwrap(), s))
        .collect()
}

fn pairs(items: &[(&str, f64)]) -> Vec<(String, f64)> {
    items.iter().map(|(m, s)| (m.to_string(), *s)).collect()
}

#[tokio::test]
async fn members_rank_by_score_then_bytes_from_either_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    let added = zadd(
        &store,
        "z",
        &[
            (2.0, "b"),
            (-1.5, "neg"),
            (2.0, "a"),
            (f64::INFINITY, "inf"),
            (0.0, "zero"),
        ],
    )
    .await;
    assert_eq!(added, 5);
    assert_eq!(store.kind_of(b"z").await.unwrap(), Some(ZSET));
    assert_eq!(store.member_count(b("z"), ZSET).await.unwrap(), 5);
    let all = pairs(&[
        ("neg", -1.5),
        ("zero", 0.0),
        ("a", 2.0),
        ("b", 2.0),
        ("inf", f64::INFINITY),
    ]);
    assert_eq!(range(&store, "z", 0, -1, End::Left).await, all);
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(range(&store, "z", 0, -1, End::Right).await, reversed);
    assert_eq!(range(&store, "z", 1, 2, End::Left).await, all[1..=2]);
    assert_eq!(range(&store, "z", -2, -1, End::Right).await, reversed[3..]);
    assert!(range(&store, "z", 3, 1, End::Left).await.is_empty());
    assert!(range(&store, "none", 0, -1, End::Left).await.is_empty());
    // A new score moves a member; the same score writes nothing.
    assert_eq!(zadd(&store, "z", &[(-9.0, "b")]).await, 0);
    assert_eq!(
        range(&store, "z", 0, 0, End::Left).await,
        pairs(&[("b", -9.0)])
    );
    let (n, ack) = store
        .add_scores(b("z"), vec![(b("b"), -9.0)], ScoreRule::default(), true)
        .await
        .unwrap();
    assert_eq!((n, ack), (0, None), "nothing changed, nothing written");
    let scores = store
        .scores(b("z"), vec![b("b"), b("missing"), b("inf")])
        .await
        .unwrap();
    assert_eq!(scores, [Some(-9.0), None, Some(f64::INFINITY)]);
    assert_eq!(store.scores(b("none"), vec![b("m")]).await.unwrap(), [None]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn zadd_rules_and_increments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    zadd(&store, "z", &[(1.0, "a"), (5.0, "b")]).await;
    let add = |items: Vec<(Bytes, f64)>, rule: ScoreRule, ch: bool| {
        let store = store.clone();
        async move { store.add_scores(b("z"), items, rule, ch).await.unwrap().0 }
    };
    let nx = ScoreRule {
        exists: Some(false),
        update: ScoreUpdate::Any,
    };
    let xx = ScoreRule {
        exists: Some(true),
        update: ScoreUpdate::Any,
    };
    let gt = ScoreRule {
        exists: None,
        update: ScoreUpdate::Greater,
    };
    // NX adds only new members; XX changes only old ones; CH counts changes.
    assert_eq!(add(vec![(b("a"), 9.0), (b("c"), 3.0)], nx, true).await, 1);
    assert_eq!(add(vec![(b("a"), 2.0), (b("d"), 3.0)], xx, true).await, 1);
    // GT still adds new members, and only raises old ones.
    assert_eq!(
        add(vec![(b("b"), 4.0), (b("a"), 7.0), (b("e"), 0.5)], gt, true).await,
        2
    );
    let scores = store
        .scores(b("z"), vec![b("a"), b("b"), b("c"), b("d"), b("e")])
        .await
        .unwrap();
    assert_eq!(scores, [Some(7.0), Some(5.0), Some(3.0), None, Some(0.5)]);
    // Increments: from 0 for a new member; refused by the rule; never NaN.
    let incr = |m: &str, d: f64, rule: ScoreRule| {
        let (store, m) = (store.clone(), b(m));
        async move { store.incr_score(b("z"), m, d, rule).await }
    };
    assert_eq!(
        incr("new", 2.5, ScoreRule::default()).await.unwrap().0,
        Some(2.5)
    );
    assert_eq!(
        incr("a", -1.0, ScoreRule::default()).await.unwrap().0,
        Some(6.0)
    );
    assert_eq!(incr("a", -1.0, gt).await.unwrap(), (None, None));
    assert_eq!(incr("absent", 1.0, xx).await.unwrap(), (None, None));
    incr("inf", f64::INFINITY, ScoreRule::default())
        .await
        .unwrap();
    assert!(matches!(
        incr("inf", f64::NEG_INFINITY, ScoreRule::default()).await,
        Err(StoreError::NanScore)
    ));
    assert!(matches!(
        store
            .add_scores(
                b("z"),
                vec![(b("x"), f64::NAN)],
                ScoreRule::default(),
                false
            )
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.member_count(b("z"), ZSET).await.unwrap(), 6);
    store.close().await.unwrap();
}

#[tokio::test]
async fn pops_and_removes_keep_both_entries_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    zadd(
        &store,
        "z",
        &[(1.0, "a"), (2.0, "b"), (3.0, "c"), (4.0, "d")],
    )
    .await;
    let (low, ack) = store.pop_scores(b("z"), End::Left, 1).await.unwrap();
    assert_eq!(low, [(b("a"), 1.0)]);
    assert!(ack.is_some());
    let (high, _) = store.pop_scores(b("z"), End::Right, 2).await.unwrap();
    assert_eq!(high, [(b("d"), 4.0), (b("c"), 3.0)]);
    let (n, _) = store
        .remove_members(b("z"), ZSET, vec![b("b"), b("b"), b("nope")])
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Emptied: the key is gone, and so is every internal key.
    assert_eq!(store.kind_of(b"z").await.unwrap(), None);
    assert_eq!(store.digest(0, Cancel::default()).await.unwrap().keys, 0);
    assert_eq!(store.reclaim_elements(|| true).await.unwrap(), 0);
    assert_eq!(
        store.pop_scores(b("z"), End::Left, 1).await.unwrap(),
        (vec![], None)
    );
    // A delete takes the members with it.
    zadd(&store, "z", &[(1.0, "a"), (2.0, "b")]).await;
    store.delete(b("z"), Condition::Always).await.unwrap();
    assert_eq!(store.reclaim_elements(|| true).await.unwrap(), 0);
    assert_eq!(store.digest(0, Cancel::default()).await.unwrap().keys, 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sorted_sets_do_not_mix_with_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    zadd(&store, "z", &[(1.0, "a")]).await;
    store
        .set(b("str"), b("v"), None, Condition::Always)
        .await
        .unwrap();
    let rule = ScoreRule::default();
    assert!(matches!(
        store
            .add_scores(b("str"), vec![(b("m"), 1.0)], rule, false)
            .await,
        Err(StoreError::WrongType)
    ));
    assert!(matches!(store.get(b"z").await, Err(StoreError::WrongType)));
    assert!(matches!(
        store
            .member_values(b("z"), ValueKind::Set, vec![b("a")])
            .await,
        Err(StoreError::WrongType)
    ));
    assert!(matches!(
        store.member_values(b("z"), ZSET, vec![b("a")]).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.score_range(b("str"), 0, -1, End::Left).await,
        Err(StoreError::WrongType)
    ));
    // A string over a sorted set leaves both entries for the reclaim pass.
    store
        .set(b("z"), b("now a string"), None, Condition::Always)
        .await
        .unwrap();
    assert_eq!(store.reclaim_elements(|| true).await.unwrap(), 2);
    store.close().await.unwrap();
}

/// Pops and adds racing on one sorted set share commit batches: a pop sees
/// the batch's earlier writes, so nothing is taken twice or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_adds_and_pops_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), FsyncPolicy::Never)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let end = if i % 2 == 0 { End::Left } else { End::Right };
            if i % 3 == 2 {
                store.pop_scores(b("z"), end, 2).await.unwrap().0
            } else {
                let member = Bytes::from(format!("m{i:03}"));
                let rule = ScoreRule::default();
                let members = vec![(member, f64::from(i % 7))];
                store
                    .add_scores(b("z"), members, rule, false)
                    .await
                    .unwrap();
                vec![]
            }
        }));
    }
    let mut seen: Vec<Bytes> = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap().into_iter().map(|(m, _)| m));
    }
    let left = store.score_range(b("z"), 0, -1, End::Left).await.unwrap();
    let in_order = left
        .windows(2)
        .all(|w| (w[0].1, &w[0].0) <= (w[1].1, &w[1].0));
    assert!(in_order, "what is left is in rank order");
    seen.extend(left.iter().map(|(m, _)| m.clone()));
    seen.sort();
    let added: Vec<Bytes> = (0..400)
        .filter(|i| i % 3 != 2)
        .map(|i| Bytes::from(format!("m{i:03}")))
        .collect();
    assert_eq!(seen, added, "every member popped once or still there");
    assert_eq!(
        store.member_count(b("z"), ZSET).await.unwrap(),
        left.len() as u64
    );
    store.close().await.unwrap();
}

/// Sorted sets survive a restart and reach a replica, equal by digest.
#[tokio::test]
async fn a_restart_and_a_replica_keep_sorted_sets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let store = Store::open(config(&path, FsyncPolicy::Always)).unwrap();
    zadd(&store, "z", &[(3.0, "c"), (1.0, "a"), (2.0, "b")]).await;
    store.pop_scores(b("z"), End::Right, 1).await.unwrap();
    store.close().await.unwrap();
    let store = Store::open(config(&path, FsyncPolicy::Always)).unwrap();
    let expect = pairs(&[("a", 1.0), ("b", 2.0)]);
    assert_eq!(range(&store, "z", 0, -1, End::Left).await, expect);

    let replica = Store::open(config(&dir.path().join("r"), FsyncPolicy::Never)).unwrap();
    let records = store.records_from(Seq(1), u64::MAX).await.unwrap();
    replica.apply_replicated(records).await.unwrap();
    assert_eq!(range(&replica, "z", 0, -1, End::Left).await, expect);
    let (p, r) = (
        store.digest(0, Cancel::default()).await.unwrap(),
        replica.digest(0, Cancel::default()).await.unwrap(),
    );
    assert_eq!((p.keys, &p.sha256), (r.keys, &r.sha256));
    for store in [store, replica] {
        store.close().await.unwrap();
    }
}
