//! A migration survives the death of an owner's primary: shard 3 (d5)
//! joins a cluster of two shards (d1 + d2, d3 + d4) while a client writes
//! with `sync` acks; the copy is throttled so that it is still running
//! when d1, shard 1's primary, is SIGKILLed. Shard 1 fails over to d2, the
//! receiver starts its copy from shard 1 over against d2, and the
//! migration finishes by itself. No acknowledged write is lost, and each
//! primary holds exactly the keys its slots own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::cluster::{
    Member, admin, cluster_client, create_cluster, eventually, gen_certs, info, missing,
};
use common::rebalance::{each_shard_holds_its_keys, existing, write_until};
use strata::cluster::ShardId;
use strata::types::AckPolicy;

const NAMES: [&str; 5] = ["d1", "d2", "d3", "d4", "d5"];

/// Short clocks for a quick failover, and a copy of about 100 KB/s per
/// owner so that it outlasts the kill.
const SETTINGS: &str = "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 2500\n\
                        in_sync_lag_ms = 2000\nmigration_bytes_per_sec = 100000";

/// Keys of 1 KiB values written before the migration: about 1.2 MB of
/// them move to shard 3.
const KEYS: usize = 4000;

const SYNC: AckPolicy = AckPolicy::Sync { timeout_ms: 5000 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_outlives_an_owner_primary_killed_mid_copy() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, Some(SETTINGS)))
        .collect();
    let addrs = create_cluster(&members[..4], &certs, 1);
    let ca = certs.join("ca.crt").display().to_string();
    let cluster = Arc::new(cluster_client(&addrs, &certs).await);
    let mut acked = BTreeMap::new();
    let mut tried = Vec::new();
    let value = "x".repeat(1024);
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let entries: Vec<(String, String)> = batch
            .iter()
            .map(|i| (format!("k{i}"), value.clone()))
            .collect();
        cluster.set_many(entries.clone()).await.unwrap();
        for (key, value) in entries {
            tried.push(key.clone());
            acked.insert(key, value);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(cluster.clone(), "w", Some(SYNC), stop.clone()));

    let d5_addr = members[4].node.addr.to_string();
    let args = [
        "cluster",
        "add-shard",
        "--ca",
        &ca,
        "--addr",
        &addrs[2],
        "--shard",
        "3",
        "--no-wait",
        &d5_addr,
    ];
    let (ok, text) = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || admin(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    let d5 = members[4].ca_client(&certs).await;
    eventually("d5 copying from shard 1", || async {
        info(&d5)
            .await
            .get("cluster_import.1")
            .is_some_and(|s| s.starts_with("copying") && !s.starts_with("copying entries=0/"))
    })
    .await;
    members[0].node.kill();

    let d3 = members[2].ca_client(&certs).await;
    eventually("the migration finishing", || async {
        let info = info(&d3).await;
        info["cluster_ring"] == "1,2,3" && !info.contains_key("cluster_migration")
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (written, also) = writer.await.unwrap();
    eprintln!(
        "sync writes acked during the drill: {} of {}",
        written.len(),
        also.len()
    );
    let import = info(&d5).await["cluster_import.1"].clone();
    eprintln!("d5's import from shard 1: {import}");
    assert!(
        import.contains("failures="),
        "the copy from shard 1 started over: {import}"
    );
    acked.extend(written);
    tried.extend(also);

    cluster.refresh().await.unwrap();
    assert_eq!(missing(&cluster, &acked).await, Vec::<String>::new());
    let keys = existing(&cluster, &tried).await;
    let d2 = members[1].ca_client(&certs).await;
    let primaries = [(ShardId(1), &d2), (ShardId(2), &d3), (ShardId(3), &d5)];
    each_shard_holds_its_keys(&cluster, &primaries, &keys).await;
}
