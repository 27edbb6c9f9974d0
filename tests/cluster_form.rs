//! A 3 x 2 cluster formed as an operator forms one: six real
//! `strata-server --cluster` processes on loopback with cluster
//! certificates, `strata-admin cluster create --replicas 1`, then every
//! node serving the same map, each replica following its shard's
//! primary, keys refused with `WrongShard` off their shard, 10,000 keys
//! through the cluster client landing once each with every replica equal
//! to its primary, and the metadata group surviving the SIGKILL of its
//! leader, whose node comes back with its name and shard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::cluster::{Member, admin, converged, eventually, gen_certs, info, metric};
use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::cluster::{MapCommand, Ring, ShardId, key_slot};
use strata::net::client::{ClientError, ErrorCode, ServerTrust};
use strata::types::{AckPolicy, OnTimeout};

const NAMES: [&str; 6] = ["n1", "n2", "n3", "n4", "n5", "n6"];

/// The metadata leader is killed and restarted at moments of the test's
/// own choosing: no shard fails over meanwhile (tests/cluster_failover.rs
/// covers that), so map versions are the test's to count.
const NO_FAILOVER: Option<&str> = Some("auto_failover = false");

/// MultiGets the node has served, from its metrics.
fn multi_gets(m: &Member) -> f64 {
    metric(&m.node.metrics(), "strata_requests_total{op=\"multi_get\"}").unwrap_or(0.0)
}

/// What `cluster status` says that must not depend on the node asked:
/// its header line (map version, V, leader, term) and each shard row's
/// shard, epoch, primary and share (lease and lag columns vary).
fn status_view(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("map version"))
        .map(str::to_string)
        .collect();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 5 && cols[0].parse::<u32>().is_ok() {
            let share = cols.iter().find(|c| c.ends_with('%')).copied();
            out.push(format!(
                "{} {} {} {} {:?}",
                cols[0], cols[1], cols[2], cols[3], share
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_of_two_form_route_and_survive_the_metadata_leader() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, NO_FAILOVER))
        .collect();
    let addrs: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();

    let mut args = vec!["cluster", "create", "--replicas", "1", "--ca"];
    let ca = certs.join("ca.crt").display().to_string();
    args.push(&ca);
    args.extend(addrs.iter().map(String::as_str));
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");
    // 1 Create + 3 AddShard + 3 AddNode.
    assert!(text.contains("map version 7"), "{text}");
    // Run again (as after a run cut short): it commits only what is
    // missing, here nothing; a different grouping is refused.
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");
    assert!(text.contains("already holds map version 7"), "{text}");
    let mut regroup = args.clone();
    regroup[3] = "2";
    let (ok, text) = admin(&regroup);
    assert!(!ok && text.contains("is already in shard 2"), "{text}");

    let mut clients = Vec::new();
    for m in &members {
        clients.push(m.ca_client(&certs).await);
    }
    for c in &clients {
        let map = c.cluster_map().await.unwrap();
        assert_eq!(map.version, 7);
        assert_eq!(map.shards.len(), 3);
        assert_eq!(map.nodes.len(), 6);
    }
    // Each replica follows its shard's primary (the map says so).
    for (i, c) in clients.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let primary_link = members[i - 1].repl_addr.to_string();
        eventually("a replica following its shard's primary", || async {
            let info = info(c).await;
            info.get("role").map(String::as_str) == Some("replica")
                && info.get("primary") == Some(&primary_link)
        })
        .await;
    }

    // Keys: written to each owner's primary, refused elsewhere.
    let map = clients[0].cluster_map().await.unwrap();
    let ids: Vec<ShardId> = map.shards.iter().map(|s| ShardId(s.id)).collect();
    let table = Ring::new(&ids, map.vnodes).unwrap().slot_table();
    let primary_of = |shard: ShardId| (shard.0 as usize - 1) * 2;
    for i in 0..300 {
        let key = format!("key:{i}");
        let owner = table.owner(key_slot(key.as_bytes()));
        let right = &clients[primary_of(owner)];
        right.set(key.clone(), Bytes::from("v")).await.unwrap();
        let wrong = &clients[primary_of(ShardId(owner.0 % 3 + 1))];
        match wrong.get(key.clone()).await {
            Err(ClientError::Server {
                code: ErrorCode::WrongShard,
                leader_hint,
                message,
                ..
            }) => {
                let primary = addrs[primary_of(owner)].clone();
                // errors.md gives the message's form, for clients that
                // want the slot and version without a map.
                let want = format!(
                    "slot {} belongs to shard {} (cluster map version 7), primary {primary}",
                    key_slot(key.as_bytes()).get(),
                    owner.0
                );
                assert_eq!(message, want);
                assert_eq!(leader_hint, Some(primary));
            }
            other => panic!("{key} on the wrong shard: {other:?}"),
        }
    }

    // 10,000 keys through the cluster client, in batches it splits by
    // shard; each shard's replica ends with exactly its primary's data.
    let config = ClusterClientConfig::with_trust(ServerTrust::CaFile(certs.join("ca.crt")), |c| c)
        .with_default_ack(Some(AckPolicy::SemiSync {
            replicas: 1,
            timeout_ms: 10_000,
            on_timeout: OnTimeout::Fail,
        }));
    let cluster = ClusterClient::connect(&addrs[..1], config).await.unwrap();
    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i}")).collect();
    for batch in keys.chunks(500) {
        let entries = batch.iter().map(|k| (k.clone(), format!("v-{k}")));
        cluster.set_many(entries).await.unwrap();
    }
    for batch in keys.chunks(500) {
        let got = cluster.get_many(batch.iter().cloned()).await.unwrap();
        for (key, entry) in batch.iter().zip(got) {
            assert_eq!(entry.unwrap().value, format!("v-{key}").as_bytes(), "{key}");
        }
    }
    let mut total = 0;
    for shard in 0..3 {
        let (primary, replica) = (&clients[shard * 2], &clients[shard * 2 + 1]);
        let (_, keys_held, _) = converged(primary, &[replica]).await;
        total += keys_held;
    }
    // 10,000 user keys and the 300 above, each on one shard only.
    assert_eq!(total, 10_300);
    // Every node, replicas included, holds only keys the ring gives its
    // shard, and all of them.
    for (i, c) in clients.iter().enumerate() {
        let shard = ShardId(i as u32 / 2 + 1);
        let held = c.scan_all("").await.unwrap();
        let want = keys
            .iter()
            .filter(|k| table.owner(key_slot(k.as_bytes())) == shard)
            .count();
        let users = held.iter().filter(|(k, _)| k.starts_with(b"user:")).count();
        assert_eq!(users, want, "{} holds the shard's user keys", NAMES[i]);
        for (k, _) in &held {
            assert_eq!(table.owner(key_slot(k)), shard, "{k:?} on {}", NAMES[i]);
        }
    }

    // Reads spread over primaries and replicas find every key too (the
    // semi-sync writes above reached the replicas), and replicas served
    // some of them.
    let before: Vec<f64> = members.iter().map(multi_gets).collect();
    let spread = ClusterClientConfig::with_trust(ServerTrust::CaFile(certs.join("ca.crt")), |c| c)
        .with_read_from_replicas(true);
    let readers = ClusterClient::connect(&addrs[..1], spread).await.unwrap();
    for batch in keys.chunks(500) {
        let got = readers.get_many(batch.iter().cloned()).await.unwrap();
        assert!(
            got.iter().all(Option::is_some),
            "a key missing on a replica"
        );
    }
    for (i, m) in members.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        assert!(
            multi_gets(m) > before[i],
            "replica {} served no read",
            m.name
        );
    }

    // The status table, asked of any node, names every shard and node,
    // and every node tells the same: map version, leader, term, and each
    // shard's epoch, primary and ring share.
    let mut views = Vec::new();
    for addr in &addrs {
        let (ok, text) = admin(&["cluster", "status", "--ca", &ca, "--addr", addr]);
        assert!(ok, "{text}");
        views.push(status_view(&text));
        assert!(text.contains("map version 7"), "{addr}: {text}");
        for name in NAMES {
            assert!(text.contains(name), "{name} missing from {addr}'s\n{text}");
            assert!(
                text.contains(&format!("{name} ")) && text.contains("heartbeats last heard"),
                "no heartbeat age of {name} in {addr}'s\n{text}"
            );
        }
        assert!(text.contains("failovers by this leader: 0"), "{text}");
        assert!(text.contains("lease"), "{text}");
    }
    assert_eq!(views[0].len(), 4, "a header and three shards: {views:?}");
    assert!(views.iter().all(|v| *v == views[0]), "{views:#?}");

    // SIGKILL the metadata leader (the first node: it started the group);
    // the others elect a new one, which takes the next map change.
    let leader = info(&clients[0]).await["cluster_meta_leader"].clone();
    assert_eq!(leader, info(&clients[0]).await["cluster_node_id"]);
    // The leader makes five of the six nodes voters, a change at a time.
    eventually("five metadata voters", || async {
        let i = info(&clients[0]).await;
        i["cluster_meta_voters"].split(',').count() == 5
            && i["cluster_meta_learners"].split(',').count() == 1
            && i["cluster_meta_settled"] == "true"
    })
    .await;
    members[0].node.kill();
    let survivor = &clients[2];
    eventually("a new metadata leader", || async {
        let i = info(survivor).await;
        !i["cluster_meta_leader"].is_empty() && i["cluster_meta_leader"] != leader
    })
    .await;
    // A change the map refuses still proves the group commits: removing a
    // shard's last copy is refused by name, the version unchanged.
    let command =
        Bytes::from(postcard::to_stdvec(&MapCommand::RemoveShard { id: ShardId(2) }).unwrap());
    let mut refused = None;
    for c in &clients[1..] {
        match c.cluster_propose(command.clone()).await {
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                ..
            }) => continue,
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    match refused {
        Some(Err(ClientError::Server {
            code: ErrorCode::BadRequest,
            message,
            ..
        })) => {
            assert!(message.contains("refused"), "{message}");
        }
        other => panic!("RemoveShard of a shard with replicas: {other:?}"),
    }
    // And real changes, through the tool (it follows NotLeader): n6 leaves
    // and joins shard 3 again.
    let any = &addrs[2];
    let (ok, text) = admin(&["cluster", "remove-node", "--ca", &ca, "--addr", any, "n6"]);
    assert!(ok, "{text}");
    assert!(text.contains("map version 8"), "{text}");
    let (ok, text) = admin(&[
        "cluster", "add-node", "--ca", &ca, "--addr", any, "--shard", "3", &addrs[5],
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("map version 9"), "{text}");

    // The killed node comes back with its identity and shard.
    members[0].node.restart();
    let back = members[0].ca_client(&certs).await;
    eventually("the restarted node serving the map", || async {
        back.cluster_map().await.is_ok_and(|m| m.version == 9)
    })
    .await;
    let i = info(&back).await;
    assert_eq!(i["cluster_node_name"], "n1");
    assert_eq!(i["cluster_shard"], "1");
}
