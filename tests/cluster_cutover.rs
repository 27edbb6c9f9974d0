//! No node answers for a moving slot from the cutover on: the old owner
//! cannot know when the new owner starts taking writes, so from the map
//! with `cutover` on it refuses reads as well as writes of moving slots
//! until it applies the map that hands them over, and then redirects.
//!
//! Shard 3 (c5 + c6) joins two shards of two (c1 + c2, c3 + c4); c6 is
//! stopped (SIGSTOP) as soon as the migration starts, so the new shard
//! cannot make its imports durable on a replica and the migration stays
//! cut over. Meanwhile c1, the owner of moving keys, answers a read and a
//! write of them with a retryable `Unavailable` while keys that stay are
//! served, and a scan of c1 is refused too, while one of c5 lists no key
//! it is still importing; once c6 runs again the migration finishes, c1
//! answers `WrongShard` and c5 serves the keys, and each node's scan lists
//! its own keys only. A cluster client allowed two attempts waits the
//! cutover out (its patience with `Unavailable`) and then reads the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{Member, admin, create_cluster, eventually, gen_certs, info};
use std::sync::Arc;
use std::time::Duration;
use strata::cluster::{Ring, ShardId, key_slot};

use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::net::client::{Client, ClientError, ErrorCode, ServerTrust};

const NAMES: [&str; 6] = ["c1", "c2", "c3", "c4", "c5", "c6"];

const SETTINGS: &str = "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 2500\n\
                        in_sync_lag_ms = 1000";

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn unavailable(result: Result<impl std::fmt::Debug, ClientError>, what: &str) -> String {
    match result {
        Err(ClientError::Server {
            code: ErrorCode::Unavailable,
            message,
            retry_after_ms,
            ..
        }) => {
            assert!(retry_after_ms.is_some(), "{what}: retryable");
            message
        }
        other => panic!("{what} during the cutover: {other:?}"),
    }
}

/// Every key a scan of `client` lists, page by page.
async fn scan_keys(client: &Client) -> Result<Vec<String>, ClientError> {
    let (mut keys, mut cursor) = (Vec::new(), None);
    loop {
        let page = client.scan("", cursor, 0).await?;
        keys.extend(
            page.entries
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned()),
        );
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_owner_serves_no_moving_slot_during_the_cutover() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, Some(SETTINGS)))
        .collect();
    let addrs = create_cluster(&members[..4], &certs, 1);
    let c1 = members[0].ca_client(&certs).await;
    let map = c1.cluster_map().await.unwrap();
    let (now, then) = (
        Ring::new(&[ShardId(1), ShardId(2)], map.vnodes)
            .unwrap()
            .slot_table(),
        Ring::new(&[ShardId(1), ShardId(2), ShardId(3)], map.vnodes)
            .unwrap()
            .slot_table(),
    );
    let shard_of =
        |key: &str, table: &strata::cluster::SlotTable| table.owner(key_slot(key.as_bytes()));
    let moving = (0..)
        .map(|i| format!("m{i}"))
        .find(|k| shard_of(k, &now) == ShardId(1) && shard_of(k, &then) == ShardId(3))
        .unwrap();
    let staying = (0..)
        .map(|i| format!("s{i}"))
        .find(|k| shard_of(k, &now) == ShardId(1) && shard_of(k, &then) == ShardId(1))
        .unwrap();
    c1.set(moving.clone(), "before").await.unwrap();
    c1.set(staying.clone(), "here").await.unwrap();

    let ca = certs.join("ca.crt").display().to_string();
    let (c5, c6) = (
        members[4].node.addr.to_string(),
        members[5].node.addr.to_string(),
    );
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
    let mut args = args.to_vec();
    args.extend([c5.as_str(), c6.as_str(), "--no-wait"]);
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");
    signal(members[5].node.pid(), "-STOP");

    eventually("the migration cutting over", || async {
        info(&c1)
            .await
            .get("cluster_migration")
            .is_some_and(|l| l.contains("cutover=true"))
    })
    .await;
    let read = unavailable(c1.get(moving.clone()).await, "a read of a moving key");
    assert!(read.contains("moving to shard 3"), "{read}");
    unavailable(
        c1.set(moving.clone(), "during").await,
        "a write of a moving key",
    );
    let entry = c1.get(staying.clone()).await.unwrap().unwrap();
    assert_eq!(entry.value, "here", "a key that stays is served");
    let scan = unavailable(scan_keys(&c1).await, "a scan of the old owner");
    assert!(scan.contains("moving to shard"), "{scan}");
    let new_owner = members[4].ca_client(&certs).await;
    let importing = scan_keys(&new_owner).await.unwrap();
    assert!(!importing.contains(&moving), "half imported: {importing:?}");
    let line = info(&c1).await["cluster_migration"].clone();
    assert!(line.contains("cutover=true"), "still cut over: {line}");

    // A cluster client with two attempts waits the cutover out: rounds
    // that were only told to wait do not count (its patience), the final
    // redirect to the new owner is the second attempt.
    let seeds: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();
    let trust = ServerTrust::CaFile(certs.join("ca.crt"));
    let config = ClusterClientConfig::with_trust(trust, |c| c)
        .with_max_attempts(2)
        .with_unavailable_patience(Duration::from_secs(600));
    let patient = Arc::new(ClusterClient::connect(&seeds, config).await.unwrap());
    let waiting = tokio::spawn({
        let (patient, moving) = (patient.clone(), moving.clone());
        async move { patient.get(moving).await }
    });
    eventually(
        "the patient read refused more than its attempts",
        || async { patient.requests_by_shard().values().sum::<u64>() > 2 },
    )
    .await;
    assert!(!waiting.is_finished(), "the patient read gave up");

    signal(members[5].node.pid(), "-CONT");
    let entry = waiting.await.unwrap().expect("the patient read");
    assert_eq!(entry.unwrap().value, "before");
    eventually("the migration finishing", || async {
        let info = info(&c1).await;
        info["cluster_ring"] == "1,2,3" && !info.contains_key("cluster_migration")
    })
    .await;
    match c1.get(moving.clone()).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::WrongShard),
        other => panic!("the old owner after the migration: {other:?}"),
    }
    // The new owner serves the key once it has applied that map too (it
    // may apply it a moment after c1 does).
    let done = c1.cluster_map().await.unwrap().version;
    eventually("the new owner applying the final map", || async {
        new_owner.cluster_map().await.unwrap().version >= done
    })
    .await;
    let entry = new_owner.get(moving.clone()).await.unwrap().unwrap();
    assert_eq!(entry.value, "before");
    let old_keys = scan_keys(&c1).await.unwrap();
    assert!(old_keys.contains(&staying), "{old_keys:?}");
    assert!(!old_keys.contains(&moving), "moved away: {old_keys:?}");
    assert!(scan_keys(&new_owner).await.unwrap().contains(&moving));
}
