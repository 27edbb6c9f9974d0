//! Automatic failover: one shard of three real `strata-server --cluster`
//! processes (a primary and two replicas) on loopback. Under a write load
//! through the cluster client, the shard's primary is SIGKILLed; the
//! metadata leader promotes a replica by itself, the client goes on
//! writing to it, and the old primary, restarted, rejoins as a replica.
//! Three rounds, `sync`, `semi-sync:1` and `async`: no `sync` or
//! `semi-sync` acknowledged write is missing afterwards (the `async` ones
//! lost are counted and printed), none is invented, and every node ends
//! with the same data.
//! Then a planned switchover with `strata-admin cluster failover --to`
//! under a `sync` load: nothing lost, the old primary continues as a
//! replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use common::cluster::{Member, admin, converged, eventually, gen_certs, info, metric, missing};
use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::net::client::{Client, ServerTrust, SetOptions};
use strata::types::{AckPolicy, OnTimeout};

const NAMES: [&str; 3] = ["f1", "f2", "f3"];

/// Short clocks, so a round takes seconds: heartbeats every 200 ms, a
/// lease of 1 s, failover after 2.5 s of silence.
const TIMING: &str = "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 2500";

/// Acknowledged writes a round waits for before the kill, and after the
/// promotion.
const BEFORE: u64 = 200;
const AFTER: u64 = 100;

/// The index of the shard's primary in `members`, by the map of `asker`.
async fn primary_index(asker: &Client, members: &[Member]) -> usize {
    let map = asker.cluster_map().await.unwrap();
    let primary = map.shards[0].primary;
    let name = &map.nodes.iter().find(|n| n.id == primary).unwrap().name;
    members.iter().position(|m| &m.name == name).unwrap()
}

/// Writes `round:i` = `v{i}` until told to stop, and records what was
/// acknowledged: key -> value.
struct Writer {
    acked: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    count: Arc<AtomicU64>,
    attempted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(cluster: ClusterClient, round: &'static str, ack: AckPolicy) -> Writer {
        let acked = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let count = Arc::new(AtomicU64::new(0));
        let attempted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, t, s) = (
            acked.clone(),
            count.clone(),
            attempted.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let (key, value) = (format!("{round}:{i}"), format!("v{i}"));
                t.fetch_add(1, Ordering::Relaxed);
                if cluster
                    .set_with(
                        key.clone(),
                        value.clone(),
                        SetOptions {
                            ack: Some(ack),
                            ..SetOptions::new()
                        },
                    )
                    .await
                    .is_ok()
                {
                    a.lock().unwrap().insert(key, value);
                    c.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        });
        Writer {
            acked,
            count,
            attempted,
            stop,
            task,
        }
    }

    async fn until(&self, acks: u64) {
        eventually("acknowledged writes", || async {
            self.count.load(Ordering::Relaxed) >= acks
        })
        .await;
    }

    async fn finish(self) -> (BTreeMap<String, String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.attempted.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_without_losing_acknowledged_writes() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, Some(TIMING)))
        .collect();
    let addrs: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();
    let ca = certs.join("ca.crt").display().to_string();
    let mut args = vec!["cluster", "create", "--replicas", "2", "--ca", &ca];
    args.extend(addrs.iter().map(String::as_str));
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");

    let trust = ServerTrust::CaFile(certs.join("ca.crt"));
    let config = ClusterClientConfig::with_trust(trust, |c| c).with_max_attempts(8);
    let cluster = ClusterClient::connect(&addrs, config).await.unwrap();
    let mut held_total = 0;
    let mut attempted_total = 0;
    let mut acked_total = 0;
    let rounds = [
        ("sync", AckPolicy::Sync { timeout_ms: 5000 }),
        (
            "semi",
            AckPolicy::SemiSync {
                replicas: 1,
                timeout_ms: 5000,
                on_timeout: OnTimeout::Fail,
            },
        ),
        ("async", AckPolicy::Async),
    ];
    for (round, ack) in rounds {
        let asker = members[0].ca_client(&certs).await;
        let old = primary_index(&asker, &members).await;
        let survivor = (old + 1) % members.len();
        let survivor_client = members[survivor].ca_client(&certs).await;

        let writer = Writer::start(cluster.clone(), round, ack);
        let started = Instant::now();
        writer.until(BEFORE).await;
        members[old].node.kill();
        let killed_at = Instant::now();
        let rate = writer.count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        let old_name = members[old].name.clone();
        eventually(
            "a replica promoted in the killed primary's place",
            || async { primary_index(&survivor_client, &members).await != old },
        )
        .await;
        let promoted_after = killed_at.elapsed();
        let new = primary_index(&survivor_client, &members).await;
        let acks_then = writer.count.load(Ordering::Relaxed);
        writer.until(acks_then + AFTER).await;
        let written_after = killed_at.elapsed();
        let (acked, attempted) = writer.finish().await;
        println!(
            "round {round}: {old_name} killed; {} promoted after {promoted_after:?}, \
             writes acknowledged again within {written_after:?}",
            members[new].name
        );

        // The old primary comes back as a replica of the new one.
        members[old].node.restart();
        let back = members[old].ca_client(&certs).await;
        let new_link = members[new].repl_addr.to_string();
        eventually("the old primary following the new one", || async {
            let i = info(&back).await;
            i.get("role").map(String::as_str) == Some("replica")
                && i.get("primary") == Some(&new_link)
        })
        .await;

        // Every acknowledged write is there, read through the cluster; an
        // async write promises nothing beyond the primary: its loss is
        // measured.
        let lost = missing(&cluster, &acked).await;
        assert!(ack == AckPolicy::Async || lost.is_empty(), "lost: {lost:?}");
        let lost = lost.len() as u64;
        if ack == AckPolicy::Async {
            println!(
                "round async: {lost} of {} acknowledged writes lost, {:.0} ms of writes at \
                 {rate:.0}/s",
                acked.len(),
                lost as f64 * 1000.0 / rate
            );
        }
        // Every node holds the same data, and no key that was never written.
        let primary = members[new].ca_client(&certs).await;
        let mut others = Vec::new();
        for (i, m) in members.iter().enumerate().filter(|(i, _)| *i != new) {
            others.push((i, m.ca_client(&certs).await));
        }
        let refs: Vec<&Client> = others.iter().map(|(_, c)| c).collect();
        let (_, held, _) = converged(&primary, &refs).await;
        acked_total += acked.len() as u64 - lost;
        attempted_total += attempted;
        held_total = held;
        assert!(
            held >= acked_total,
            "{held} keys held, {acked_total} acknowledged"
        );
        assert!(
            held <= attempted_total,
            "{held} keys held, {attempted_total} attempted"
        );
        let i = info(&survivor_client).await;
        assert!(i.contains_key("cluster_lease_left_ms"), "{i:?}");
    }
    println!("{acked_total} acknowledged, {held_total} held, {attempted_total} attempted");

    // A planned switchover under a sync load, through the tool, to a named
    // replica: no acknowledged write lost, and the old primary continues
    // as a replica.
    let asker = members[0].ca_client(&certs).await;
    let old = primary_index(&asker, &members).await;
    let target = (old + 1) % members.len();
    let writer = Writer::start(
        cluster.clone(),
        "planned",
        AckPolicy::Sync { timeout_ms: 5000 },
    );
    writer.until(BEFORE).await;
    let shard = "1".to_string();
    let switch_started = Instant::now();
    let (ok, text) = admin(&[
        "cluster",
        "failover",
        "--ca",
        &ca,
        "--addr",
        &addrs[old],
        "--to",
        NAMES[target],
        &shard,
    ]);
    assert!(ok, "{text}");
    println!(
        "switchover to {} took {:?}",
        NAMES[target],
        switch_started.elapsed()
    );
    assert!(
        text.contains(&format!("{} is the primary", NAMES[target])),
        "{text}"
    );
    eventually("every node's map naming the new primary", || async {
        primary_index(&asker, &members).await == target
    })
    .await;
    let acks_then = writer.count.load(Ordering::Relaxed);
    writer.until(acks_then + AFTER).await;
    let (acked, _) = writer.finish().await;
    assert_eq!(
        missing(&cluster, &acked).await,
        Vec::<String>::new(),
        "lost"
    );
    let old_link = members[target].repl_addr.to_string();
    let back = members[old].ca_client(&certs).await;
    eventually("the old primary following its successor", || async {
        let i = info(&back).await;
        i.get("role").map(String::as_str) == Some("replica") && i.get("primary") == Some(&old_link)
    })
    .await;
    let primary = members[target].ca_client(&certs).await;
    let mut others = Vec::new();
    for (i, m) in members.iter().enumerate().filter(|(i, _)| *i != target) {
        others.push((i, m.ca_client(&certs).await));
    }
    let refs: Vec<&Client> = others.iter().map(|(_, c)| c).collect();
    converged(&primary, &refs).await;
    let leader_infos = {
        let mut all = Vec::new();
        for m in &members {
            all.push(info(&m.ca_client(&certs).await).await);
        }
        all
    };
    assert!(
        leader_infos.iter().any(|i| i
            .get("cluster_failover_last")
            .is_some_and(|l| l.contains("switchover asked for"))),
        "the leader records the switchover: {leader_infos:?}"
    );
    let metric_sum = |series: &str| -> f64 {
        members
            .iter()
            .map(|m| metric(&m.node.metrics(), series).unwrap_or(0.0))
            .sum()
    };
    assert!(metric_sum("strata_cluster_failovers_total") >= 1.0);
    assert!(metric_sum("strata_cluster_map_version") > 0.0);
}
