//! A migration's copy goes on where it stopped after its link breaks:
//! shard 3 (e5) joins two shards of two (e1 + e2, e3 + e4) while a client
//! writes with `sync` acks, the copy throttled so that it is still sending
//! keys when the test cuts e5 off from e3 (shard 2's primary, whose node
//! links pass through a UDP relay). The link dies, e5's attempts to reach
//! e3 fail, and once the relay heals e5 resumes the copy from e3 instead
//! of starting over (`resumed=1`, one failure at least). The migration
//! finishes; no acknowledged write is lost and each primary holds exactly
//! the keys its slots own.
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
use strata::harness::free_udp_addr;
use strata::harness::relay::{Faults, UdpRelay};
use strata::types::AckPolicy;

const NAMES: [&str; 5] = ["e1", "e2", "e3", "e4", "e5"];

/// A copy of about 100 KB/s per owner, so that it outlasts the cut; node
/// links that notice a dead peer within a second (5 replication
/// heartbeats).
const SETTINGS: &str = "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 2500\n\
                        in_sync_lag_ms = 2000\nmigration_bytes_per_sec = 100000";
const LINKS: &str = "[replication]\nheartbeat_ms = 200";

/// Keys of 1 KiB values written before the migration: about 1.3 MB of
/// them move to shard 3, half from each owner.
const KEYS: usize = 4000;

const SYNC: AckPolicy = AckPolicy::Sync { timeout_ms: 5000 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_copy_resumes_where_it_stopped() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let e3_link = free_udp_addr().unwrap();
    let relay = UdpRelay::start(e3_link, Faults::none()).unwrap();
    let members: Vec<Member> = NAMES
        .iter()
        .map(|&n| {
            let link = if n == "e3" {
                e3_link
            } else {
                free_udp_addr().unwrap()
            };
            let advertise = if n == "e3" {
                format!("\nadvertise_link = \"{}\"", relay.local_addr())
            } else {
                String::new()
            };
            let settings = format!("{SETTINGS}{advertise}\n{LINKS}");
            Member::start_in_cluster_at(root.path(), &certs, n, link, Some(&settings))
        })
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

    let e5_addr = members[4].node.addr.to_string();
    let args = [
        "cluster",
        "add-shard",
        "--ca",
        &ca,
        "--addr",
        &addrs[0],
        "--shard",
        "3",
        "--no-wait",
        &e5_addr,
    ];
    let (ok, text) = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || admin(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    let e5 = members[4].ca_client(&certs).await;
    let import = || async {
        info(&e5)
            .await
            .get("cluster_import.2")
            .cloned()
            .unwrap_or_default()
    };
    eventually("e5 copying from shard 2", || async {
        let line = import().await;
        line.starts_with("copying") && !line.starts_with("copying entries=0/")
    })
    .await;

    // Cut e5 off from e3 until its copy from shard 2 has failed once more
    // (an earlier attempt may have failed for another reason).
    let before = failures(&import().await);
    relay.cut(members[4].repl_addr);
    eventually("the copy from shard 2 breaking off", || async {
        failures(&import().await) > before
    })
    .await;
    let broken = import().await;
    relay.heal();
    eprintln!("e5's import from shard 2 when it broke off: {broken}");
    assert!(
        !broken.contains("refused"),
        "the failure counted is the cut's, not a refusal: {broken}"
    );

    let e1 = members[0].ca_client(&certs).await;
    eventually("the migration finishing", || async {
        let info = info(&e1).await;
        info["cluster_ring"] == "1,2,3" && !info.contains_key("cluster_migration")
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (written, also) = writer.await.unwrap();
    eprintln!(
        "sync writes acked during the migration: {} of {}",
        written.len(),
        also.len()
    );
    let done = import().await;
    eprintln!("e5's import from shard 2 at the end: {done}");
    assert!(done.contains("resumed="), "the copy went on: {done}");
    assert!(
        !done.contains("refused"),
        "no resume was refused, so none started over: {done}"
    );
    acked.extend(written);
    tried.extend(also);

    cluster.refresh().await.unwrap();
    assert_eq!(missing(&cluster, &acked).await, Vec::<String>::new());
    let keys = existing(&cluster, &tried).await;
    let e3 = members[2].ca_client(&certs).await;
    let primaries = [(ShardId(1), &e1), (ShardId(2), &e3), (ShardId(3), &e5)];
    each_shard_holds_its_keys(&cluster, &primaries, &keys).await;
}

/// The failures an import line counts (`failures=N`, absent when none).
fn failures(line: &str) -> u64 {
    line.split(' ')
        .find_map(|field| field.strip_prefix("failures="))
        .map_or(0, |n| n.parse().unwrap())
}
