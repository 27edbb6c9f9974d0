//! Failure detection does not flap: one shard of three real nodes whose
//! node links (heartbeats, leases, the metadata log and replication) all
//! pass through fault-injecting UDP relays that drop 10 % of datagrams and
//! delay and reorder others. Under a write load, for a minute and until
//! every relay has dropped 150 datagrams (some 300 heartbeat rounds), the
//! healthy primary is never failed over: the shard keeps its primary and
//! epoch, no leader counts a failover, and every acknowledged write is
//! readable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{
    Member, cluster_client, create_cluster, eventually, gen_certs, info, missing,
};
use strata::harness::free_udp_addr;
use strata::harness::relay::{Faults, UdpRelay};
use strata::net::client::{SetOptions, SetOutcome};
use strata::types::{AckPolicy, NodeId, OnTimeout};

const NAMES: [&str; 3] = ["h1", "h2", "h3"];

/// Datagrams each relay drops before the test looks: the exposure is
/// counted in faults injected, and lasts at least [`EXPOSURE`].
const DROPS: u64 = 150;

/// The least time under the lossy links.
const EXPOSURE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_heartbeats_do_not_fail_over_a_healthy_primary() {
    let seed = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut relays = Vec::new();
    let mut members = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let link = free_udp_addr().unwrap();
        let relay = UdpRelay::start(
            link,
            Faults {
                drop: 0.10,
                delay: Duration::from_millis(5),
                jitter: Duration::from_millis(10),
                reorder: 0.05,
                seed: seed + i as u64,
            },
        )
        .unwrap();
        // Other nodes reach this one through its relay only.
        let settings = format!(
            "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 4000\n\
             advertise_link = \"{}\"",
            relay.local_addr()
        );
        members.push(Member::start_in_cluster_at(
            root.path(),
            &certs,
            name,
            link,
            Some(&settings),
        ));
        relays.push(relay);
    }
    let addrs = create_cluster(&members, &certs, 2);

    let h1 = members[0].ca_client(&certs).await;
    let before = h1.cluster_map().await.unwrap();
    let primary = before.shards[0].primary;
    assert_eq!(primary, NodeId::of_name("h1").0);

    let cluster = cluster_client(&addrs, &certs).await;
    let semi = AckPolicy::SemiSync {
        replicas: 1,
        timeout_ms: 10_000,
        on_timeout: OnTimeout::Fail,
    };
    let mut acked = BTreeMap::new();
    let mut refused = 0u64;
    let mut i = 0u64;
    let started = std::time::Instant::now();
    while started.elapsed() < EXPOSURE || relays.iter().any(|r| r.stats().dropped < DROPS) {
        let key = format!("k{i}");
        let options = SetOptions::new().with_ack(semi);
        match cluster
            .set_with(key.clone(), format!("v{i}"), options)
            .await
        {
            Ok(SetOutcome::Written(_)) => {
                acked.insert(key, format!("v{i}"));
            }
            // A lease that lapsed for a moment: retryable, and counted.
            Ok(SetOutcome::NotWritten { .. }) | Err(_) => refused += 1,
        }
        i += 1;
    }

    let after = h1.cluster_map().await.unwrap();
    assert_eq!(
        after.shards[0].primary, primary,
        "the primary was failed over"
    );
    assert_eq!(after.shards[0].epoch, before.shards[0].epoch);
    let mut failovers = 0;
    for m in &members {
        let i = info(&m.ca_client(&certs).await).await;
        failovers += i
            .get("cluster_failovers")
            .map_or(0, |n| n.parse::<u64>().unwrap());
    }
    assert_eq!(failovers, 0, "a leader declared a failover");
    assert!(!acked.is_empty());
    assert_eq!(
        missing(&cluster, &acked).await,
        Vec::<String>::new(),
        "lost"
    );
    eventually("the primary's in-sync set naming both replicas", || async {
        info(&h1).await.get("in_sync").map(String::as_str) == Some("h2,h3")
    })
    .await;
    let stats: Vec<_> = relays.iter().map(UdpRelay::stats).collect();
    println!(
        "{} writes acknowledged, {refused} refused or failed; relays: {stats:?}",
        acked.len()
    );
}
