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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::cluster::{
    Member, admin, cluster_client, converged, create_cluster, digest, eventually, gen_certs, info,
    missing,
};
use strata::cluster::ShardId;
use strata::cluster::client::ClusterClient;
use strata::net::client::{Client, ClientError, ErrorCode};

const NAMES: [&str; 6] = ["m1", "m2", "m3", "m4", "m5", "m6"];

/// Keys written before the migrations.
const KEYS: usize = 3000;

/// Writes `prefix{i}` = `v{i}` until `stop`, as fast as acks come: the
/// keys acknowledged, and every key tried (an error leaves its outcome
/// unknown).
async fn write_until(
    cluster: Arc<ClusterClient>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let (mut acked, mut tried) = (BTreeMap::new(), Vec::new());
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (key, value) = (format!("{prefix}{i}"), format!("v{i}"));
        tried.push(key.clone());
        if cluster.set(key.clone(), value.clone()).await.is_ok() {
            acked.insert(key, value);
        }
        i += 1;
    }
    (acked, tried)
}

/// Runs `strata-admin` off the async threads; asserts it succeeded.
async fn admin_ok(args: Vec<String>) -> String {
    let (ok, text) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        admin(&refs)
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    text
}

/// `strata-admin cluster add-shard` / `remove-shard` under a writer;
/// returns the writer's result and the tool's output.
async fn under_writes(
    cluster: &Arc<ClusterClient>,
    prefix: &'static str,
    args: Vec<String>,
) -> ((BTreeMap<String, String>, Vec<String>), String) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(cluster.clone(), prefix, stop.clone()));
    let text = admin_ok(args).await;
    stop.store(true, Ordering::Relaxed);
    (writer.await.unwrap(), text)
}

/// The keys of `tried` that exist, read through the cluster.
async fn existing(cluster: &ClusterClient, tried: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for batch in tried.chunks(500) {
        let got = cluster.get_many(batch.iter().cloned()).await.unwrap();
        for (key, entry) in batch.iter().zip(got) {
            if entry.is_some() {
                out.insert(key.clone());
            }
        }
    }
    out
}

/// Waits until each primary holds exactly the keys of `keys` its shard
/// owns: the sweeps are done and nothing was lost or left behind.
async fn each_shard_holds_its_keys(
    cluster: &ClusterClient,
    primaries: &[(ShardId, &Client)],
    keys: &BTreeSet<String>,
) {
    for (shard, client) in primaries {
        let want = keys
            .iter()
            .filter(|k| cluster.shard_of(k.as_bytes()) == *shard)
            .count() as u64;
        assert!(want > 0, "shard {shard} owns some of the keys");
        eventually(
            &format!("shard {shard} holding exactly its {want} keys"),
            || async { digest(client, 0).await.1 == want },
        )
        .await;
    }
}

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
    let ((written, also), text) = under_writes(&cluster, "a", args).await;
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
    let ((written, also), text) = under_writes(&cluster, "r", args).await;
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
