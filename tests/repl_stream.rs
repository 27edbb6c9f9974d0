//! A primary and two replicas (real processes, QUIC with mutual TLS):
//! replicas follow the WAL under a concurrent write load and end with the
//! primary's digest; acknowledgement policies report what they reached;
//! replicas refuse writes and name the primary; lag is visible.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::cluster::{Member, converged, gen_certs, metric, pairs};
use strata::net::client::{AckPolicy, ClientError, ErrorCode, OnTimeout, SetOptions, SetOutcome};

fn written(outcome: SetOutcome) -> strata::proto::WriteReply {
    match outcome {
        SetOutcome::Written(w) => w,
        other => panic!("expected a write, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_and_acks_report_what_was_reached() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1", "r2"]);
    let primary = Member::start(root.path(), &certs, "p", &[]);
    let upstream = primary.repl_addr.to_string();
    let r1 = Member::start(root.path(), &certs, "r1", &["--replica-of", &upstream]);
    let r2 = Member::start(root.path(), &certs, "r2", &["--replica-of", &upstream]);
    let (pc, c1, c2) = (primary.client().await, r1.client().await, r2.client().await);

    // A concurrent load: sets, overwrites, deletes, TTLs, counters.
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let pc = pc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..150u32 {
                let key = format!("k{}", (t * 1000 + i) % 600);
                match i % 5 {
                    0 => {
                        pc.delete(key).await.unwrap();
                    }
                    1 => {
                        let options =
                            SetOptions::new().with_ttl(std::time::Duration::from_secs(600));
                        pc.set_with(key, format!("ttl-{t}-{i}"), options)
                            .await
                            .unwrap();
                    }
                    2 => {
                        pc.incr(format!("counter{t}"), 1).await.unwrap();
                    }
                    _ => {
                        pc.set(key, format!("v-{t}-{i}")).await.unwrap();
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (seq, keys, _) = converged(&pc, &[&c1, &c2]).await;
    assert!(seq >= 900, "the load wrote ({seq})");
    assert!(keys > 0);
    // A replica serves the data it received.
    assert_eq!(
        c1.get("counter3").await.unwrap().map(|e| e.value),
        Some(Bytes::from("30")),
        "i % 5 == 2 for 30 of the 150 ops"
    );

    // semi-sync:2 waits for both replicas; sync for both to fsync.
    let semi = AckPolicy::SemiSync {
        replicas: 2,
        timeout_ms: 10_000,
        on_timeout: OnTimeout::Fail,
    };
    let w = written(
        pc.set_with("acked", "semi", SetOptions::new().with_ack(semi))
            .await
            .unwrap(),
    );
    assert_eq!(w.durability.replicas_acked, 2, "{:?}", w.durability);
    assert!(!w.durability.degraded);
    let sync = AckPolicy::Sync { timeout_ms: 10_000 };
    let w = written(
        pc.set_with("acked", "sync", SetOptions::new().with_ack(sync))
            .await
            .unwrap(),
    );
    assert_eq!(w.durability.replicas_acked, 2, "{:?}", w.durability);
    assert!(w.durability.local_synced && !w.durability.degraded);
    // A sync write is on both replicas by the time it is acknowledged.
    for c in [&c1, &c2] {
        let entry = c.get("acked").await.unwrap().expect("replicated");
        assert_eq!(entry.value, Bytes::from("sync"));
        assert_eq!(entry.version, w.version, "same version on every node");
    }
    // Asking for more replicas than exist degrades (reported) or fails (typed).
    let three = AckPolicy::SemiSync {
        replicas: 3,
        timeout_ms: 200,
        on_timeout: OnTimeout::Degrade,
    };
    let w = written(
        pc.set_with("acked", "three", SetOptions::new().with_ack(three))
            .await
            .unwrap(),
    );
    assert!(w.durability.degraded, "{:?}", w.durability);
    assert_eq!(w.durability.replicas_acked, 2);
    let three_fail = AckPolicy::SemiSync {
        replicas: 3,
        timeout_ms: 200,
        on_timeout: OnTimeout::Fail,
    };
    match pc
        .set_with("acked", "three", SetOptions::new().with_ack(three_fail))
        .await
    {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::ReplicationTimeout),
        other => panic!("expected ReplicationTimeout, got {other:?}"),
    }

    // Replicas refuse writes and name the primary's client address.
    match c1.set("nope", "x").await {
        Err(ClientError::Server {
            code, leader_hint, ..
        }) => {
            assert_eq!(code, ErrorCode::ReadOnlyReplica);
            assert_eq!(leader_hint, Some(primary.node.addr.to_string()));
        }
        other => panic!("expected ReadOnlyReplica, got {other:?}"),
    }

    // Replication state and lag are visible.
    let info = pairs(c1.info().await.unwrap());
    assert_eq!(info["role"], "replica");
    assert_eq!(info["replication_state"], "streaming");
    let info = pairs(pc.info().await.unwrap());
    assert_eq!(info["role"], "primary");
    assert_eq!(info["connected_replicas"], "2");
    let m = primary.node.metrics();
    for r in ["r1", "r2"] {
        let lag = metric(
            &m,
            &format!("strata_replication_lag_records{{replica=\"{r}\"}}"),
        );
        assert_eq!(lag, Some(0.0), "lag of {r} in:\n{m}");
    }
    assert!(metric(&m, "strata_replication_acks_total{outcome=\"degraded\"}").unwrap() >= 1.0);
    assert!(metric(&m, "strata_replication_acks_total{outcome=\"timeout\"}").unwrap() >= 1.0);
}

/// A `sync` write waits for the replica's fsync; under the replica's
/// `interval` policy that comes with its next periodic sync, announced as
/// an event (no polling), and the reply then counts the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_waits_for_a_replica_fsyncing_on_an_interval() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    let primary = Member::start(root.path(), &certs, "p", &[]);
    let upstream = primary.repl_addr.to_string();
    let r1 = Member::start(
        root.path(),
        &certs,
        "r1",
        &["--replica-of", &upstream, "--fsync", "interval:300"],
    );
    let pc = primary.client().await;
    // The replica is in sync once a first write reached it.
    let semi = AckPolicy::SemiSync {
        replicas: 1,
        timeout_ms: 10_000,
        on_timeout: OnTimeout::Fail,
    };
    written(
        pc.set_with("warm", "up", SetOptions::new().with_ack(semi))
            .await
            .unwrap(),
    );
    let sync = AckPolicy::Sync { timeout_ms: 10_000 };
    for i in 0..5 {
        // A sync write that times out is an error (ReplicationTimeout), so
        // each reply here was released by the replica's periodic fsync.
        let w = written(
            pc.set_with(format!("k{i}"), "v", SetOptions::new().with_ack(sync))
                .await
                .unwrap(),
        );
        assert_eq!(w.durability.replicas_acked, 1, "{:?}", w.durability);
        assert!(!w.durability.degraded);
    }
    let entry = r1.client().await.get("k4").await.unwrap();
    assert!(entry.is_some());
}
