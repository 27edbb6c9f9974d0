//! `strata-admin cluster rebalance` with real nodes: a cluster of two
//! shards (m1 + m2, m3 + m4) created with 16 virtual nodes per shard, so
//! its shares are uneven, is rebalanced to the V the tool picks while a
//! client writes. The map then has that V, its slot table is the ring's
//! for it, the busiest shard is within the skew asked for, every
//! acknowledged write is readable and each primary holds exactly its
//! slots' keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::cluster::{Member, admin, cluster_client, gen_certs, missing};
use common::rebalance::{admin_ok, each_shard_holds_its_keys, existing, under_writes};
use strata::cluster::{Ring, SLOTS, ShardId, Slot, key_slot};

const NAMES: [&str; 4] = ["v1", "v2", "v3", "v4"];

/// Keys written before the rebalance.
const KEYS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_evens_out_the_shares_under_writes_losing_nothing() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster(root.path(), &certs, n))
        .collect();
    let addrs: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();
    let ca = certs.join("ca.crt").display().to_string();
    let mut args = vec!["cluster", "create", "--replicas", "1", "--vnodes", "16"];
    args.extend(["--ca", &ca]);
    args.extend(addrs.iter().map(String::as_str));
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");
    let cluster = Arc::new(cluster_client(&addrs, &certs).await);
    let mut acked = BTreeMap::new();
    let mut tried = Vec::new();
    for i in 0..KEYS {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        cluster.set(key.clone(), value.clone()).await.unwrap();
        tried.push(key.clone());
        acked.insert(key, value);
    }
    let ring = [ShardId(1), ShardId(2)];
    let skew = |vnodes| {
        let table = Ring::new(&ring, vnodes).unwrap().slot_table();
        let busiest = table.shares().values().copied().max().unwrap();
        f64::from(busiest) * 2.0 / f64::from(SLOTS) - 1.0
    };
    assert!(skew(16) > 0.05, "V = 16 is uneven enough to rebalance");

    let rebalance = |extra: &[&str]| {
        let mut args = vec!["cluster", "rebalance", "--ca", &ca, "--addr", &addrs[0]];
        args.extend(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let plan = admin_ok(rebalance(&["--dry-run"])).await;
    eprintln!("{plan}");
    let chosen: u32 = plan
        .lines()
        .find_map(|l| l.strip_prefix("would move to V = "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no choice in {plan}"));
    assert!(chosen > 16 && skew(chosen) <= 0.05, "chose V = {chosen}");
    let m1 = members[0].ca_client(&certs).await;
    assert_eq!(
        m1.cluster_map().await.unwrap().vnodes,
        16,
        "a dry run changes nothing"
    );

    let ((written, also), text) = under_writes(&cluster, "w", None, rebalance(&[])).await;
    eprintln!("{text}");
    assert!(text.contains("finished"), "{text}");
    eprintln!(
        "during the rebalance: {} writes acked of {}",
        written.len(),
        also.len()
    );
    assert!(!written.is_empty());
    acked.extend(written);
    tried.extend(also);

    let map = m1.cluster_map().await.unwrap();
    assert_eq!(map.vnodes, chosen);
    cluster.refresh().await.unwrap();
    let table = Ring::new(&ring, chosen).unwrap().slot_table();
    for slot in Slot::all().step_by(97) {
        let key = tried.iter().find(|k| key_slot(k.as_bytes()) == slot);
        if let Some(key) = key {
            assert_eq!(cluster.shard_of(key.as_bytes()), table.owner(slot));
        }
    }
    assert_eq!(missing(&cluster, &acked).await, Vec::<String>::new());
    let keys = existing(&cluster, &tried).await;
    let m3 = members[2].ca_client(&certs).await;
    let primaries = [(ShardId(1), &m1), (ShardId(2), &m3)];
    each_shard_holds_its_keys(&cluster, &primaries, &keys).await;

    let again = admin_ok(rebalance(&[])).await;
    assert!(again.contains("nothing to do"), "{again}");
}
