//! Replication over a bad link: a UDP relay between primary and replica
//! drops, delays and reorders datagrams, then partitions the link for a
//! while. Semi-sync acks still arrive, and the replica converges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Member, converged, gen_certs, pairs};
use strata::harness::relay::{Faults, UdpRelay};
use strata::net::client::{AckPolicy, OnTimeout, SetOptions, SetOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_converges_over_a_lossy_slow_link() {
    let seed = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    let primary = Member::start(root.path(), &certs, "p", &[]);
    let relay = UdpRelay::start(
        primary.repl_addr,
        Faults {
            drop: 0.05,
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
            reorder: 0.05,
            seed,
        },
    )
    .unwrap();
    let via = relay.local_addr().to_string();
    let r1 = Member::start(root.path(), &certs, "r1", &["--replica-of", &via]);
    let (pc, c1) = (primary.client().await, r1.client().await);

    // Semi-sync writes: each waits for the replica's ack across the bad link.
    let semi = AckPolicy::SemiSync {
        replicas: 1,
        timeout_ms: 20_000,
        on_timeout: OnTimeout::Fail,
    };
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let pc = pc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u32 {
                let value = format!("{t}-{i}-{}", "v".repeat(500));
                let options = SetOptions::new().with_ack(semi);
                match pc.set_with(format!("k{t}-{i}"), value, options).await {
                    Ok(SetOutcome::Written(w)) => assert_eq!(w.durability.replicas_acked, 1),
                    other => panic!("semi-sync write over the lossy link: {other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    converged(&pc, &[&c1]).await;
    let stats = relay.stats();
    assert!(stats.dropped > 0 && stats.reordered > 0, "{stats:?}");

    // A partition: the primary keeps taking async writes; the replica
    // notices the silence, and catches up when the link heals.
    relay.pause();
    for i in 0..200u32 {
        pc.set(format!("during-{i}"), format!("{i}")).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while pairs(c1.info().await.unwrap())["replication_state"] == "streaming" {
        assert!(
            Instant::now() < deadline,
            "the replica never noticed the partition"
        );
        // Polled: link state is only visible through Info.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.resume();
    let (_, keys, _) = converged(&pc, &[&c1]).await;
    assert_eq!(keys, 400);
}
