//! A primary cut off from the majority: one shard of three real nodes
//! whose node links pass through UDP relays, so the test can partition the
//! primary (q1) from both replicas while clients still reach every node.
//! q1 stops taking writes with a retryable `Unavailable` naming its lease;
//! a replica is promoted; writes go on there; when the partition heals, q1
//! rejoins as a replica and ends with the same data. No `sync` write is
//! lost. The `async` writes q1 acknowledged after the cut, which no replica
//! received, are the loss `async` allows: the test counts them and prints
//! how long after the cut q1 kept acknowledging (its lease).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{
    CONVERGE, Member, cluster_client, converged, create_cluster, eventually, gen_certs, info,
};
use strata::cluster::client::ClusterClient;
use strata::harness::free_udp_addr;
use strata::harness::relay::{Faults, UdpRelay};
use strata::net::client::{Client, ClientError, ErrorCode, SetOptions, SetOutcome};
use strata::types::{AckPolicy, NodeId};

const NAMES: [&str; 3] = ["q1", "q2", "q3"];

const SYNC: AckPolicy = AckPolicy::Sync { timeout_ms: 5000 };

/// `sync` writes of `prefix:0..n` through the cluster client; a write the
/// shard cannot take yet (a new primary waiting for its first lease) is
/// retried.
async fn sync_writes(cluster: &ClusterClient, prefix: &str, n: u32) -> Vec<String> {
    let mut keys = Vec::new();
    let deadline = Instant::now() + CONVERGE;
    for i in 0..n {
        let key = format!("{prefix}:{i}");
        loop {
            let options = SetOptions::new().with_ack(SYNC);
            match cluster.set_with(key.clone(), key.clone(), options).await {
                Ok(SetOutcome::Written(w)) => {
                    assert!(w.durability.replicas_acked >= 1, "{key}");
                    break;
                }
                Err(e) if e.code() == Some(ErrorCode::Unavailable) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("sync write {key}: {other:?}"),
            }
        }
        keys.push(key);
    }
    keys
}

/// Async writes straight to the cut-off primary until it refuses one:
/// the keys it acknowledged, when the last was acknowledged and when the
/// refusal came (both since `cut`), and the refusal's text.
async fn write_until_refused(
    q1: &Client,
    cut: Instant,
) -> (Vec<String>, Duration, Duration, String) {
    let mut acked = Vec::new();
    let mut last_ack = Duration::ZERO;
    for i in 0u64.. {
        assert!(
            cut.elapsed() < CONVERGE,
            "the cut-off primary never refused a write"
        );
        let key = format!("cut:{i}");
        let options = SetOptions::new().with_ack(AckPolicy::Async);
        match q1.set_with(key.clone(), key.clone(), options).await {
            Ok(_) => {
                last_ack = cut.elapsed();
                acked.push(key);
            }
            Err(ClientError::Server {
                code: ErrorCode::Unavailable,
                message,
                ..
            }) => return (acked, last_ack, cut.elapsed(), message),
            Err(e) => panic!("write to the cut-off primary: {e}"),
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_the_majority_stops_and_rejoins_as_a_replica() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut relays = Vec::new();
    let mut members = Vec::new();
    for name in NAMES {
        let link = free_udp_addr().unwrap();
        let relay = UdpRelay::start(link, Faults::none()).unwrap();
        // Other nodes reach this one through its relay only.
        let settings = format!(
            "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 2500\n\
             advertise_link = \"{}\"",
            relay.local_addr()
        );
        let member = Member::start_in_cluster_at(root.path(), &certs, name, link, Some(&settings));
        members.push(member);
        relays.push(relay);
    }
    let addrs = create_cluster(&members, &certs, 2);
    let cluster = cluster_client(&addrs, &certs).await;
    let q1 = members[0].ca_client(&certs).await;
    let q2 = members[1].ca_client(&certs).await;
    eventually("q2 and q3 in q1's in-sync set", || async {
        info(&q1).await.get("in_sync").map(String::as_str) == Some("q2,q3")
    })
    .await;
    let mut synced = sync_writes(&cluster, "before", 100).await;

    // Cut q1 off from both replicas, both ways: q1's relay forwards
    // nothing, the others' drop whatever q1 sends them.
    let q1_link = members[0].repl_addr;
    relays[0].pause();
    relays[1].cut(q1_link);
    relays[2].cut(q1_link);
    let cut = Instant::now();
    let (cut_acked, last_ack, refused_at, message) = write_until_refused(&q1, cut).await;
    assert!(message.contains("no write lease"), "{message}");

    let q1_id = NodeId::of_name("q1").0;
    eventually("a replica promoted in q1's place", || async {
        q2.cluster_map()
            .await
            .is_ok_and(|m| m.shards[0].primary != q1_id)
    })
    .await;
    let promoted_at = cut.elapsed();
    synced.extend(sync_writes(&cluster, "after", 100).await);

    // Healed, q1 follows the new primary as its replica.
    relays[0].resume();
    relays[1].heal();
    relays[2].heal();
    let map = q2.cluster_map().await.unwrap();
    let new_primary = map.shards[0].primary;
    let new = members
        .iter()
        .position(|m| NodeId::of_name(&m.name).0 == new_primary)
        .unwrap();
    // Nodes know each other by their advertised (relayed) link addresses.
    let new_link = relays[new].local_addr().to_string();
    eventually("q1 following the new primary", || async {
        let i = info(&q1).await;
        i.get("role").map(String::as_str) == Some("replica") && i.get("primary") == Some(&new_link)
    })
    .await;

    let got = cluster.get_many(synced.iter().cloned()).await.unwrap();
    for (key, entry) in synced.iter().zip(got) {
        let entry = entry.unwrap_or_else(|| panic!("sync write {key} lost"));
        assert_eq!(entry.value, key.as_bytes());
    }
    let got = cluster.get_many(cut_acked.iter().cloned()).await.unwrap();
    let kept: BTreeSet<&String> = cut_acked
        .iter()
        .zip(&got)
        .filter_map(|(k, e)| e.as_ref().map(|_| k))
        .collect();
    let primary = members[new].ca_client(&certs).await;
    let mut others = Vec::new();
    for (i, m) in members.iter().enumerate().filter(|(i, _)| *i != new) {
        others.push((i, m.ca_client(&certs).await));
    }
    let refs: Vec<&Client> = others.iter().map(|(_, c)| c).collect();
    converged(&primary, &refs).await;
    println!(
        "cut-off primary: {} async writes acknowledged after the cut, the last {last_ack:?} \
         after it, {} of them lost; refused from {refused_at:?}; {} promoted {promoted_at:?} \
         after the cut",
        cut_acked.len(),
        cut_acked.len() - kept.len(),
        members[new].name
    );
}
