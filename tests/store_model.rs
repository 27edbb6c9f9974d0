//! A model test: random operations, clean reopens and crashes, checked
//! after every step against a `BTreeMap` that predicts values, versions and
//! expiry exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{b, config, manual_clock, open_with_clock};
use proptest::prelude::*;
use strata::store::{Store, StoreError, WriteOutcome};
use strata::types::{Condition, Seq};
use strata::wal::FsyncPolicy;

const KEYS: u8 = 5;

#[derive(Debug, Clone)]
enum Op {
    Set {
        key: u8,
        value: u8,
        ttl_s: Option<u64>,
    },
    SetIfAbsent {
        key: u8,
        value: u8,
    },
    /// Compare-and-set with the current version (or a wrong one).
    Cas {
        key: u8,
        value: u8,
        stale: bool,
    },
    Delete {
        key: u8,
    },
    Incr {
        key: u8,
        delta: i8,
    },
    Expire {
        key: u8,
        ttl_s: u64,
    },
    Persist {
        key: u8,
    },
    SetMany {
        keys: Vec<u8>,
        value: u8,
    },
    Advance {
        secs: u64,
    },
    Checkpoint,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    prop_oneof![
        4 => (key.clone(), any::<u8>(), proptest::option::of(1..4u64))
            .prop_map(|(key, value, ttl_s)| Op::Set { key, value, ttl_s }),
        1 => (key.clone(), any::<u8>()).prop_map(|(key, value)| Op::SetIfAbsent { key, value }),
        2 => (key.clone(), any::<u8>(), any::<bool>()).prop_map(|(key, value, stale)| Op::Cas { key, value, stale }),
        2 => key.clone().prop_map(|key| Op::Delete { key }),
        2 => (key.clone(), any::<i8>()).prop_map(|(key, delta)| Op::Incr { key, delta }),
        1 => (key.clone(), 1..4u64).prop_map(|(key, ttl_s)| Op::Expire { key, ttl_s }),
        1 => key.clone().prop_map(|key| Op::Persist { key }),
        1 => (proptest::collection::vec(key, 1..4), any::<u8>()).prop_map(|(keys, value)| Op::SetMany { keys, value }),
        1 => (1..3u64).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Modeled {
    value: Bytes,
    version: Seq,
    expires_at_ms: u64,
}

struct Model {
    map: BTreeMap<u8, Modeled>,
    last_seq: Seq,
    now_ms: u64,
}

impl Model {
    fn live(&self, key: u8) -> Option<&Modeled> {
        self.map
            .get(&key)
            .filter(|m| m.expires_at_ms == 0 || m.expires_at_ms > self.now_ms)
    }

    fn write(&mut self, key: u8, value: Bytes, expires_at_ms: u64) -> Seq {
        self.last_seq = self.last_seq.next();
        let version = self.last_seq;
        self.map.insert(
            key,
            Modeled {
                value,
                version,
                expires_at_ms,
            },
        );
        version
    }
}

fn k(key: u8) -> Bytes {
    b(&format!("key{key}"))
}

fn written(outcome: WriteOutcome) -> Option<Seq> {
    match outcome {
        WriteOutcome::Written(ack) => Some(ack.seq),
        _ => None,
    }
}

async fn run(ops: Vec<Op>, fsync: FsyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let cfg = config(dir.path(), fsync);
    let mut store = Some(open_with_clock(cfg.clone(), clock.clone()));
    let mut model = Model {
        map: BTreeMap::new(),
        last_seq: Seq::ZERO,
        now_ms: clock_now(&clock),
    };
    for op in ops {
        let s: &Store = store.as_ref().unwrap();
        let ttl = |secs: Option<u64>| secs.map(Duration::from_secs);
        let deadline = |secs: Option<u64>, now: u64| secs.map_or(0, |s| now + s * 1000);
        match op {
            Op::Set { key, value, ttl_s } => {
                let got = written(
                    s.set(k(key), b(&value.to_string()), ttl(ttl_s), Condition::Always)
                        .await
                        .unwrap(),
                );
                let want = model.write(key, b(&value.to_string()), deadline(ttl_s, model.now_ms));
                assert_eq!(got, Some(want));
            }
            Op::SetIfAbsent { key, value } => {
                let got = s
                    .set(k(key), b(&value.to_string()), None, Condition::IfAbsent)
                    .await
                    .unwrap();
                match model.live(key).map(|m| m.version) {
                    Some(current) => assert_eq!(
                        got,
                        WriteOutcome::ConditionFailed {
                            current: Some(current)
                        }
                    ),
                    None => assert_eq!(
                        written(got),
                        Some(model.write(key, b(&value.to_string()), 0))
                    ),
                }
            }
            Op::Cas { key, value, stale } => {
                let current = model.live(key).map(|m| m.version);
                let named = match (current, stale) {
                    (Some(v), false) => v,
                    (Some(v), true) => Seq(v.0 + 1000),
                    (None, _) => Seq(7),
                };
                let got = s
                    .set(
                        k(key),
                        b(&value.to_string()),
                        None,
                        Condition::IfVersion(named),
                    )
                    .await
                    .unwrap();
                if current == Some(named) {
                    assert_eq!(
                        written(got),
                        Some(model.write(key, b(&value.to_string()), 0))
                    );
                } else {
                    assert_eq!(got, WriteOutcome::ConditionFailed { current });
                }
            }
            Op::Delete { key } => {
                let got = s.delete(k(key), Condition::Always).await.unwrap();
                if model.live(key).is_some() {
                    model.last_seq = model.last_seq.next();
                    model.map.remove(&key);
                    assert_eq!(written(got), Some(model.last_seq));
                } else {
                    assert_eq!(got, WriteOutcome::NotFound);
                }
            }
            Op::Incr { key, delta } => {
                let got = s.incr(k(key), delta as i64).await;
                let current = model.live(key).cloned();
                let base = current.as_ref().map_or(Some(0), |m| {
                    std::str::from_utf8(&m.value)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                });
                match base {
                    Some(base) => {
                        let n = base + delta as i64;
                        let expires = current.map_or(0, |m| m.expires_at_ms);
                        let version = model.write(key, b(&n.to_string()), expires);
                        let (value, ack) = got.unwrap();
                        assert_eq!((value, ack.seq), (n, version));
                    }
                    None => assert!(matches!(got, Err(StoreError::NotAnInteger))),
                }
            }
            Op::Expire { key, ttl_s } => {
                let got = s.expire(k(key), Duration::from_secs(ttl_s)).await.unwrap();
                match model.live(key).cloned() {
                    Some(m) => {
                        let v = model.write(key, m.value, model.now_ms + ttl_s * 1000);
                        assert_eq!(written(got), Some(v));
                    }
                    None => assert_eq!(got, WriteOutcome::NotFound),
                }
            }
            Op::Persist { key } => {
                let got = s.persist(k(key)).await.unwrap();
                match model.live(key).cloned() {
                    Some(m) if m.expires_at_ms != 0 => {
                        assert_eq!(written(got), Some(model.write(key, m.value, 0)));
                    }
                    Some(_) => assert_eq!(got, WriteOutcome::Unchanged),
                    None => assert_eq!(got, WriteOutcome::NotFound),
                }
            }
            Op::SetMany { keys, value } => {
                let entries = keys
                    .iter()
                    .map(|key| (k(*key), b(&value.to_string()), None))
                    .collect();
                let ack = s.set_many(entries).await.unwrap();
                model.last_seq = model.last_seq.next();
                for key in keys {
                    model.map.insert(
                        key,
                        Modeled {
                            value: b(&value.to_string()),
                            version: model.last_seq,
                            expires_at_ms: 0,
                        },
                    );
                }
                assert_eq!(ack.seq, model.last_seq);
            }
            Op::Advance { secs } => {
                clock.advance_ms(secs * 1000);
                model.now_ms += secs * 1000;
            }
            Op::Checkpoint => {
                s.checkpoint().await.unwrap();
            }
            Op::Reopen => {
                store.take().unwrap().close().await.unwrap();
                store = Some(open_with_clock(cfg.clone(), clock.clone()));
            }
            Op::Crash => {
                drop(store.take());
                store = Some(open_with_clock(cfg.clone(), clock.clone()));
            }
        }
        check(store.as_ref().unwrap(), &model).await;
    }
}

fn clock_now(clock: &strata::clock::ManualClock) -> u64 {
    use strata::clock::Clock;
    clock.now_ms()
}

async fn check(store: &Store, model: &Model) {
    for key in 0..KEYS {
        let got = store.get(&k(key)).await.unwrap();
        let want = model.live(key);
        assert_eq!(
            got.as_ref().map(|e| (&e.value, e.version)),
            want.map(|m| (&m.value, m.version)),
            "key{key}"
        );
        if let (Some(e), Some(m)) = (got, want) {
            let ttl = (m.expires_at_ms != 0).then(|| m.expires_at_ms - model.now_ms);
            assert_eq!(e.ttl_ms, ttl, "key{key} ttl");
        }
    }
    assert_eq!(store.applied_seq(), model.last_seq);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60), always in any::<bool>()) {
        let fsync = if always { FsyncPolicy::Always } else { FsyncPolicy::Never };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops, fsync));
    }
}
