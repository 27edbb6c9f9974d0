//! Online rebalancing with real nodes: a cluster of two shards (m1 + m2,
//! m3 + m4) takes a third (m5 + m6) with `strata-admin cluster
//! add-shard` while a client writes, then gives shard 1 up with
//! `cluster remove-shard`, still under writes. Every acknowledged write is
//! readable afterwards, each shard's primary holds exactly the keys its
//! slots own (the old owners swept what they gave away), the new shard's
//! replica holds what its primary imported, and a node asked for a key it
//! gave away answers `WrongShard` naming the new owner.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::cluster::{
    Member, cluster_client, converged, create_cluster, gen_certs, info, missing,
};
use common::rebalance::{each_shard_holds_its_keys, existing, under_writes};
use strata::cluster::ShardId;
use strata::net::client::{ClientError, ErrorCode};

const NAMES: [&str; 6] = ["m1", "m2", "m3", "m4", "m5", "m6"];

/// Keys written before the migrations.
const KEYS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_join_and_leave_under_writes_losing_nothing() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster(root.path(), &certs, n))
        .collect();
    let addrs = create_cluster(&members[..4], &certs, 1);
    let ca = certs.join("ca.crt").display().to_string();
    let cluster = Arc::new(cluster_client(&addrs, &certs).await);
    let mut acked = BTreeMap::new();
    let mut tried = Vec::new();
    for i in 0..KEYS {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        cluster.set(key.clone(), value.clone()).await.unwrap();
        tried.push(key.clone());
        acked.insert(key, value);
    }

    // Shard 3 joins, m5 its primary, m6 its replica.
    let new = [
        members[4].node.addr.to_string(),
        members[5].node.addr.to_string(),
    ];
    let args = [
        "cluster",
        "add-shard",
        "--ca",
        &ca,
        "--addr",
        &addrs[0],
        "--shard",
        "3",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.extend(new.iter().cloned());
    let ((written, also), text) = under_writes(&cluster, "a", None, args).await;
    assert!(text.contains("finished"), "{text}");
    eprintln!("{text}");
    eprintln!(
        "during add-shard: {} writes acked of {}",
        written.len(),
        also.len()
    );
    assert!(!written.is_empty());
    acked.extend(written);
    tried.extend(also);
    let m1 = members[0].ca_client(&certs).await;
    assert_eq!(info(&m1).await["cluster_ring"], "1,2,3");

    cluster.refresh().await.unwrap();
    assert_eq!(missing(&cluster, &acked).await, Vec::<String>::new());
    let keys = existing(&cluster, &tried).await;
    let (m3, m5) = (
        members[2].ca_client(&certs).await,
        members[4].ca_client(&certs).await,
    );
    let primaries = [(ShardId(1), &m1), (ShardId(2), &m3), (ShardId(3), &m5)];
    each_shard_holds_its_keys(&cluster, &primaries, &keys).await;
    let m6 = members[5].ca_client(&certs).await;
    converged(&m5, &[&m6]).await;

    // A node asked for a key it gave away sends the client to its owner.
    let moved = keys
        .iter()
        .find(|k| cluster.shard_of(k.as_bytes()) == ShardId(3))
        .unwrap();
    match m1.get(moved.clone()).await {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::WrongShard);
            assert!(message.contains("shard 3"), "{message}");
        }
        other => panic!("m1 served a key it gave away: {other:?}"),
    }

    // Shard 1 leaves; its slots go to shards 2 and 3.
    let args = [
        "cluster",
        "remove-shard",
        "--ca",
        &ca,
        "--addr",
        &addrs[2],
        "1",
    ];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let ((written, also), text) = under_writes(&cluster, "r", None, args).await;
    assert!(text.contains("finished"), "{text}");
    eprintln!(
        "during remove-shard: {} writes acked of {}",
        written.len(),
        also.len()
    );
    acked.extend(written);
    tried.extend(also);
    assert_eq!(info(&m3).await["cluster_ring"], "2,3");
    let map = m3.cluster_map().await.unwrap();
    let names: Vec<&str> = map.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.len(), 4, "m1 and m2 left with their shard: {names:?}");
    assert!(!names.contains(&"m1") && !names.contains(&"m2"));

    cluster.refresh().await.unwrap();
    assert_eq!(missing(&cluster, &acked).await, Vec::<String>::new());
    let keys = existing(&cluster, &tried).await;
    let primaries = [(ShardId(2), &m3), (ShardId(3), &m5)];
    each_shard_holds_its_keys(&cluster, &primaries, &keys).await;
}
