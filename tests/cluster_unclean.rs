//! When a shard's primary and one of its replicas die together, the
//! metadata leader cannot know which replica holds the last acknowledged
//! writes, so it does not promote by itself; `strata-admin cluster
//! failover --unclean` says what it would do and does it only with
//! `--yes`. Six real nodes on loopback, two shards of three, so that at
//! least three of the five metadata voters survive the two kills.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::cluster::{Member, admin, eventually, gen_certs, info};
use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::net::client::{Client, ServerTrust};
use strata::types::NodeId;

const NAMES: [&str; 6] = ["u1", "u2", "u3", "u4", "u5", "u6"];

const TIMING: &str = "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 2500";

/// Shard 1's primary by the map of `asker`.
async fn shard1_primary(asker: &Client) -> u64 {
    asker.cluster_map().await.unwrap().shards[0].primary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_lost_a_replica_too_waits_for_an_unclean_failover() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, Some(TIMING)))
        .collect();
    let addrs: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();
    let ca = certs.join("ca.crt").display().to_string();
    // Shard 1: u1 (primary), u2, u3; shard 2: u4 (primary), u5, u6.
    let mut args = vec!["cluster", "create", "--replicas", "2", "--ca", &ca];
    args.extend(addrs.iter().map(String::as_str));
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");

    let trust = ServerTrust::CaFile(certs.join("ca.crt"));
    let cluster = ClusterClient::connect(&addrs, ClusterClientConfig::with_trust(trust, |c| c))
        .await
        .unwrap();
    for i in 0..200 {
        cluster
            .set(format!("k{i}"), Bytes::from(format!("v{i}")))
            .await
            .unwrap();
    }
    let survivor = members[3].ca_client(&certs).await;
    let before = shard1_primary(&survivor).await;

    // Both replicas count (a replica outside the in-sync set would not be
    // waited for).
    let u1 = members[0].ca_client(&certs).await;
    eventually("u2 and u3 in u1's in-sync set", || async {
        info(&u1).await.get("in_sync").map(String::as_str) == Some("u2,u3")
    })
    .await;
    // The primary and one replica of shard 1 die together.
    members[0].node.kill();
    members[2].node.kill();
    // Waiting for u3 alone: u2 has reported its position since, so the
    // unclean promotion below has its candidate.
    let (u2, u3) = (
        NodeId::of_name("u2").0.to_string(),
        NodeId::of_name("u3").0.to_string(),
    );
    eventually("the leader waiting for u3 alone", || async {
        let mut waiting = false;
        for i in [1, 3, 4, 5] {
            let c = members[i].ca_client(&certs).await;
            waiting |= info(&c)
                .await
                .get("cluster_failover_waiting")
                .is_some_and(|w| {
                    w.contains("waiting for the positions") && w.contains(&u3) && !w.contains(&u2)
                });
        }
        waiting
    })
    .await;
    assert_eq!(
        shard1_primary(&survivor).await,
        before,
        "nothing promoted by itself"
    );

    // Asked without --yes, the tool only says what it would do.
    let any = &addrs[3];
    let (ok, text) = admin(&[
        "cluster",
        "failover",
        "--ca",
        &ca,
        "--addr",
        any,
        "--unclean",
        "1",
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("would promote u2"), "{text}");
    assert!(text.contains("Nothing was changed"), "{text}");
    assert_eq!(shard1_primary(&survivor).await, before);

    let (ok, text) = admin(&[
        "cluster",
        "failover",
        "--ca",
        &ca,
        "--addr",
        any,
        "--unclean",
        "--yes",
        "1",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("u2 is the primary"), "{text}");
    eventually("u2 taking shard 1's writes", || async {
        cluster.set("after", Bytes::from("x")).await.is_ok()
            && cluster.get("k7").await.is_ok_and(|e| e.is_some())
    })
    .await;
    let promoted = members[1].ca_client(&certs).await;
    assert_eq!(info(&promoted).await["role"], "primary");
}
