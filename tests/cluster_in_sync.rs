//! The in-sync set is committed, not guessed: the sequence that loses
//! `sync` writes when a primary counts whichever replicas happen to stream.
//! Shard 1 is a primary (i1) and two replicas (i2, i3) of six real nodes
//! on loopback (two shards, so a majority of the five metadata voters
//! survives two kills). i3 is SIGKILLed; `sync` writes go on once its
//! removal from the set is committed, acknowledged by i2 alone. Then i1
//! and i2 die and i3 comes back: it lacks those writes, so it must not be
//! promoted, and the leader waits for i2. i2 returns and is promoted;
//! every acknowledged write is there and every node ends with the same
//! data. Last, a replica out of the set is not waited for: with it down,
//! the primary's death promotes the member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::cluster::{
    Member, admin, cluster_client, converged, create_cluster, eventually, gen_certs, info, missing,
};
use strata::cluster::ShardId;
use strata::cluster::client::{ClusterClient, ClusterClientError};
use strata::net::client::{Client, ErrorCode, SetOptions, SetOutcome};
use strata::types::{AckPolicy, NodeId};

const NAMES: [&str; 6] = ["i1", "i2", "i3", "i4", "i5", "i6"];

/// Short clocks: heartbeats every 200 ms, a lease of 1 s, failover after
/// 2.5 s of silence; a member 2 s behind leaves the in-sync set (ample on
/// a loaded machine, so only the killed replica leaves).
const TIMING: &str =
    "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 2500\nin_sync_lag_ms = 2000";

const SYNC: AckPolicy = AckPolicy::Sync { timeout_ms: 5000 };

/// A `sync` write of `key` (its value too): how many replicas acked it.
async fn write(cluster: &ClusterClient, key: &str) -> Result<u32, ClusterClientError> {
    let options = SetOptions {
        ack: Some(SYNC),
        ..SetOptions::new()
    };
    match cluster
        .set_with(key.to_string(), key.to_string(), options)
        .await?
    {
        SetOutcome::Written(reply) => Ok(reply.durability.replicas_acked),
        SetOutcome::NotWritten { .. } => panic!("an unconditional set was not written"),
    }
}

/// Shard 1's primary's committed in-sync set, as its `Info` shows it.
async fn in_sync(primary: &Client) -> Option<String> {
    info(primary).await.get("in_sync").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_left_the_in_sync_set_is_never_promoted() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, Some(TIMING)))
        .collect();
    // Shard 1: i1 (primary), i2, i3; shard 2: i4 (primary), i5, i6.
    let addrs = create_cluster(&members, &certs, 2);
    let ca = certs.join("ca.crt").display().to_string();
    let cluster = cluster_client(&addrs, &certs).await;
    // Keys of shard 1 only: the shard whose nodes die.
    let mut keys = (0u64..)
        .map(|i| format!("k{i}"))
        .filter(|k| cluster.shard_of(k.as_bytes()) == ShardId(1));
    // Each key's value is the key.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();

    let i1 = members[0].ca_client(&certs).await;
    eventually("i2 and i3 joining shard 1's in-sync set", || async {
        in_sync(&i1).await.as_deref() == Some("i2,i3")
    })
    .await;
    for _ in 0..100 {
        let key = keys.next().unwrap();
        assert!(write(&cluster, &key).await.unwrap() >= 1, "{key}");
        acked.insert(key.clone(), key);
    }

    // i3 drops out; writes wait for it until its removal is committed,
    // then are acknowledged by i2 alone.
    members[2].node.kill();
    let mut timed_out = 0;
    while in_sync(&i1).await.as_deref() != Some("i2") {
        let key = keys.next().unwrap();
        match write(&cluster, &key).await {
            Ok(replicas) => {
                assert!(replicas >= 1, "{key} acknowledged on the primary alone");
                acked.insert(key.clone(), key);
            }
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::ReplicationTimeout), "{key}: {e}");
                timed_out += 1;
            }
        }
    }
    let mut after_drop = 0;
    for _ in 0..200 {
        let key = keys.next().unwrap();
        assert_eq!(write(&cluster, &key).await.unwrap(), 1, "{key}");
        acked.insert(key.clone(), key);
        after_drop += 1;
    }
    let status = admin(&["cluster", "status", "--ca", &ca, "--addr", &addrs[3]]);
    assert!(status.0, "{}", status.1);
    assert!(status.1.contains("*i2"), "{}", status.1);
    assert!(!status.1.contains("*i3"), "{}", status.1);

    // The primary and i2 die; i3, which lacks the last writes, returns.
    members[0].node.kill();
    members[1].node.kill();
    members[2].node.restart();
    let i4 = members[3].ca_client(&certs).await;
    let i2_id = NodeId::of_name("i2").0.to_string();
    let i3_id = NodeId::of_name("i3").0.to_string();
    eventually("the leader waiting for i2's position", || async {
        let mut waiting = false;
        for member in &members[3..] {
            let c = member.ca_client(&certs).await;
            waiting |= info(&c)
                .await
                .get("cluster_failover_waiting")
                .is_some_and(|w| w.contains(&i2_id) && !w.contains(&i3_id));
        }
        waiting
    })
    .await;
    let shard1 = |map: strata::net::client::ClusterMapReply| map.shards[0].primary;
    assert_eq!(
        shard1(i4.cluster_map().await.unwrap()),
        NodeId::of_name("i1").0,
        "i3, outside the in-sync set, was not promoted"
    );

    // i2 returns and is promoted; the old primary rejoins as a replica.
    members[1].node.restart();
    eventually("i2 promoted", || async {
        shard1(i4.cluster_map().await.unwrap()) == NodeId::of_name("i2").0
    })
    .await;
    members[0].node.restart();

    // Every acknowledged write is there, read through the cluster.
    assert_eq!(
        missing(&cluster, &acked).await,
        Vec::<String>::new(),
        "lost"
    );
    let i2 = members[1].ca_client(&certs).await;
    let others = [
        members[0].ca_client(&certs).await,
        members[2].ca_client(&certs).await,
    ];
    let (_, held, _) = converged(&i2, &[&others[0], &others[1]]).await;
    assert!(
        held >= acked.len() as u64,
        "{held} held, {} acked",
        acked.len()
    );

    // And a replica out of the set is not waited for: i3 drops out of i2's
    // set, i2 dies, and i1 is promoted while i3 is still down.
    eventually("i1 and i3 joining i2's in-sync set", || async {
        in_sync(&i2).await.as_deref() == Some("i1,i3")
    })
    .await;
    members[2].node.kill();
    while in_sync(&i2).await.as_deref() != Some("i1") {
        let key = keys.next().unwrap();
        if write(&cluster, &key).await.is_ok() {
            acked.insert(key.clone(), key);
        }
    }
    let key = keys.next().unwrap();
    assert_eq!(write(&cluster, &key).await.unwrap(), 1, "{key}");
    acked.insert(key.clone(), key.clone());
    members[1].node.kill();
    eventually("i1 promoted without waiting for i3", || async {
        shard1(i4.cluster_map().await.unwrap()) == NodeId::of_name("i1").0
    })
    .await;
    let entry = cluster.get(key.clone()).await.unwrap();
    assert_eq!(entry.map(|e| e.value), Some(Bytes::from(key)));
    println!(
        "{} acknowledged ({after_drop} by i2 alone), {timed_out} timed out \
         while i3's removal was committed",
        acked.len()
    );
}
