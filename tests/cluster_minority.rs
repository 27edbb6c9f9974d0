//! The metadata group surviving the loss of a minority of its voters: a
//! 3 x 2 cluster of six real `strata-server --cluster` processes (five
//! voters, one learner), SIGKILL of the metadata leader and of a second
//! voter, then a new leader among the three voters left that commits map
//! changes, and both killed nodes back with the map.
//!
//! A node that was SIGKILLed sends nothing more: a request to it waits out
//! the client's timeout, so proposals go to the live nodes only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::cluster::{Member, admin, eventually, gen_certs, info};
use strata::cluster::{MapCommand, ShardId};
use strata::net::client::{ClientError, ErrorCode};

const NAMES: [&str; 6] = ["n1", "n2", "n3", "n4", "n5", "n6"];

/// Voters are killed at moments of the test's own choosing: no shard fails
/// over meanwhile, so map versions are the test's to count.
const NO_FAILOVER: Option<&str> = Some("auto_failover = false");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_group_survives_two_of_five_voters_killed() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, NO_FAILOVER))
        .collect();
    let addrs: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();

    let ca = certs.join("ca.crt").display().to_string();
    let mut args = vec!["cluster", "create", "--replicas", "1", "--ca", &ca];
    args.extend(addrs.iter().map(String::as_str));
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");
    // 1 Create + 3 AddShard + 3 AddNode.
    assert!(text.contains("map version 7"), "{text}");

    let mut clients = Vec::new();
    for m in &members {
        clients.push(m.ca_client(&certs).await);
    }
    let mut ids = Vec::new();
    for c in &clients {
        ids.push(info(c).await["cluster_node_id"].clone());
    }

    // The first node started the group and leads it; it makes five of the
    // six nodes voters, a change at a time, and the last change commits.
    let leader = info(&clients[0]).await["cluster_meta_leader"].clone();
    assert_eq!(leader, ids[0]);
    eventually("five metadata voters", || async {
        let i = info(&clients[0]).await;
        i["cluster_meta_voters"].split(',').count() == 5
            && i["cluster_meta_learners"].split(',').count() == 1
            && i["cluster_meta_settled"] == "true"
    })
    .await;
    let voters = info(&clients[0]).await["cluster_meta_voters"].clone();
    let is_voter = |i: usize| voters.split(',').any(|v| v == ids[i]);

    // SIGKILL the leader and a second voter: two of five, a minority.
    let second = (1..5).find(|&i| is_voter(i)).expect("five voters of six");
    members[0].node.kill();
    members[second].node.kill();
    let alive: Vec<usize> = (1..6).filter(|&i| i != second).collect();
    assert_eq!(alive.iter().filter(|&&i| is_voter(i)).count(), 3);

    // The three voters left elect one of them.
    let survivor = &clients[alive[0]];
    eventually("a new metadata leader", || async {
        let i = info(survivor).await;
        !i["cluster_meta_leader"].is_empty() && i["cluster_meta_leader"] != leader
    })
    .await;
    let new_leader = info(survivor).await["cluster_meta_leader"].clone();
    assert!(
        alive.iter().any(|&i| ids[i] == new_leader && is_voter(i)),
        "the new leader {new_leader} is not a live voter"
    );

    // A change the map refuses still proves the group commits: removing a
    // shard's last copy is refused by name, the version unchanged.
    let command =
        Bytes::from(postcard::to_stdvec(&MapCommand::RemoveShard { id: ShardId(2) }).unwrap());
    let mut answer = None;
    for &i in &alive {
        match clients[i].cluster_propose(command.clone()).await {
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                ..
            }) => continue,
            other => {
                answer = Some(other);
                break;
            }
        }
    }
    match answer {
        Some(Err(ClientError::Server {
            code: ErrorCode::BadRequest,
            message,
            ..
        })) => assert!(message.contains("refused"), "{message}"),
        other => panic!("RemoveShard of a shard with replicas: {other:?}"),
    }

    // And real changes, through the tool (it follows NotLeader): n6 leaves
    // and joins shard 3 again.
    let any = &addrs[alive[0]];
    let (ok, text) = admin(&["cluster", "remove-node", "--ca", &ca, "--addr", any, "n6"]);
    assert!(ok, "{text}");
    assert!(text.contains("map version 8"), "{text}");
    let (ok, text) = admin(&[
        "cluster", "add-node", "--ca", &ca, "--addr", any, "--shard", "3", &addrs[5],
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("map version 9"), "{text}");

    // The killed nodes come back with their identity, shard and the map.
    for killed in [0, second] {
        members[killed].node.restart();
        let back = members[killed].ca_client(&certs).await;
        eventually("a restarted node serving the map", || async {
            back.cluster_map().await.is_ok_and(|m| m.version == 9)
        })
        .await;
        let i = info(&back).await;
        assert_eq!(i["cluster_node_name"], NAMES[killed]);
        assert_eq!(i["cluster_node_id"], ids[killed]);
        assert_eq!(i["cluster_shard"], (killed / 2 + 1).to_string());
    }
}
