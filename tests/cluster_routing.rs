//! The cluster client against three real nodes in cluster mode, each the
//! only node of its own shard: keys land on their owner's node only, a node
//! refuses a foreign key with `WrongShard` naming the owner, a client with
//! a stale map follows the redirect, and multi-key requests split by shard
//! and merge in request order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{Member, gen_certs, pairs};
use strata::cluster::client::{ClusterClient, ClusterClientConfig, ClusterClientError};
use strata::cluster::{MapCommand, NodeInfo, ShardId};
use strata::net::client::{Client, ClientError, ClusterMapReply, ErrorCode, ServerTrust};
use strata::types::NodeId;

const NAMES: [&str; 3] = ["node-1", "node-2", "node-3"];
const KEYS: usize = 10_000;
/// Bounds only a test that would otherwise hang.
const FORMED: Duration = Duration::from_secs(60);

/// Starts a cluster-mode node serving its cluster certificate to clients
/// too, so that one CA verifies every node.
fn start(root: &Path, certs: &Path, name: &str) -> Member {
    let config = root.join(format!("{name}.toml"));
    std::fs::write(&config, "[cluster]\nenabled = true\n").expect("write config");
    let cert = certs.join(format!("{name}.crt"));
    let key = certs.join(format!("{name}.key"));
    let extra = [
        "--config".to_string(),
        config.display().to_string(),
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    Member::start(root, certs, name, &refs)
}

fn cluster_config(certs: &Path) -> ClusterClientConfig {
    ClusterClientConfig::with_trust(ServerTrust::CaFile(certs.join("ca.crt")), |c| c)
}

/// Commits `cmd` on the metadata leader, following `NotLeader` hints.
async fn propose(members: &[Member], clients: &[Client], cmd: &MapCommand) -> u64 {
    let bytes = Bytes::from(postcard::to_stdvec(cmd).expect("encode"));
    let deadline = Instant::now() + FORMED;
    let mut at = 0;
    loop {
        match clients[at].cluster_propose(bytes.clone()).await {
            Ok(reply) => return pairs(reply)["map_version"].parse().expect("map_version"),
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                leader_hint,
                ..
            }) => {
                if let Some(i) = leader_hint
                    .and_then(|hint| members.iter().position(|m| m.node.addr.to_string() == hint))
                {
                    at = i;
                }
            }
            Err(e) => panic!("proposing {cmd:?}: {e}"),
        }
        assert!(Instant::now() < deadline, "no leader took {cmd:?}");
        // Polled: a leadership change has no event a client can await.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn add_shard(member: &Member, shard: u32) -> MapCommand {
    MapCommand::AddShard {
        id: ShardId(shard),
        primary: NodeId::of_name(&member.name),
        info: NodeInfo {
            name: member.name.clone(),
            client_addr: member.node.addr.to_string(),
            link_addr: member.repl_addr.to_string(),
            shard: ShardId(shard),
        },
    }
}

/// Waits until every node has applied the map up to `version`.
async fn await_version(clients: &[Client], version: u64) -> ClusterMapReply {
    let deadline = Instant::now() + FORMED;
    loop {
        let mut maps = Vec::new();
        for c in clients {
            maps.push(c.cluster_map().await.ok());
        }
        if maps
            .iter()
            .all(|m| m.as_ref().is_some_and(|m| m.version >= version))
        {
            return maps.swap_remove(0).expect("checked above");
        }
        let got: Vec<_> = maps.iter().map(|m| m.as_ref().map(|m| m.version)).collect();
        assert!(
            Instant::now() < deadline,
            "the nodes did not reach map version {version}: {got:?}"
        );
        // Polled: the map's arrival on a node has no event a client can await.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a tool to completion and returns its stdout; panics on failure.
fn tool(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ADDR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("k:{i:05}"))
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("v{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_routes_splits_and_follows_redirects() {
    let root = tempfile::tempdir().expect("tempdir");
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let mut members: Vec<Member> = NAMES
        .iter()
        .map(|name| start(root.path(), &certs, name))
        .collect();
    let mut clients = Vec::new();
    for m in &members {
        clients.push(m.client().await);
    }

    // Form the cluster: node-1 starts the metadata group, then one shard
    // per node. The map before the last shard is kept for the stale client.
    clients[0].cluster_init().await.expect("cluster init");
    propose(&members, &clients, &MapCommand::Create { vnodes: 256 }).await;
    propose(&members, &clients, &add_shard(&members[0], 1)).await;
    let before_last = propose(&members, &clients, &add_shard(&members[1], 2)).await;
    let stale_map = await_version(&clients[..2], before_last).await;
    assert_eq!(stale_map.shards.len(), 2);
    let last = propose(&members, &clients, &add_shard(&members[2], 3)).await;
    let map = await_version(&clients, last).await;
    assert_eq!(map.version, last);
    assert_eq!(map.shards.len(), 3);
    // A client that has the current map is told so, without the map; one
    // a version behind gets the whole new one.
    assert_eq!(clients[0].cluster_map_since(last).await.unwrap(), None);
    assert_eq!(
        clients[0].cluster_map_since(last - 1).await.unwrap(),
        Some(map.clone())
    );

    let seeds: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();
    let cluster = ClusterClient::connect(&seeds, cluster_config(&certs))
        .await
        .expect("cluster client");
    assert_eq!(cluster.map_version(), last);
    let table = cluster.slot_table();
    let shares = table.shares();
    assert_eq!(shares.len(), 3, "every shard owns slots: {shares:?}");
    let node_of_shard =
        |shard: ShardId| -> usize { usize::try_from(shard.0 - 1).expect("shards are 1..=3") };

    // 10,000 keys through the cluster client, from a few tasks at once.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let cluster = cluster.clone();
        writers.spawn(async move {
            for i in (w..KEYS).step_by(8) {
                cluster.set(key(i), value(i)).await.expect("set");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    assert_eq!(cluster.redirects(), 0, "a fresh map needs no redirect");

    // All read back, in batches that span every shard: merged in order.
    let all: Vec<usize> = (0..KEYS).collect();
    for batch in all.chunks(700) {
        let got = cluster
            .get_many(batch.iter().map(|&i| key(i)))
            .await
            .expect("get_many");
        assert_eq!(got.len(), batch.len());
        for (&i, entry) in batch.iter().zip(got) {
            assert_eq!(entry.expect("written").value, value(i), "key {i}");
        }
    }

    // Each node holds exactly the keys its shard owns.
    let mut seen: BTreeMap<Bytes, usize> = BTreeMap::new();
    for (n, client) in clients.iter().enumerate() {
        for (k, _) in client.scan_all("").await.expect("scan") {
            let owner = node_of_shard(table.owner(strata::cluster::key_slot(&k)));
            assert_eq!(owner, n, "{k:?} is on node {n}, owned by node {owner}");
            assert!(seen.insert(k.clone(), n).is_none(), "{k:?} on two nodes");
        }
    }
    let expected: BTreeSet<Bytes> = (0..KEYS).map(key).collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for n in 0..3 {
        assert!(seen.values().any(|&at| at == n), "node {n} holds no key");
    }

    // A node refuses a foreign key, naming the owner's primary.
    let foreign = (0..KEYS)
        .map(key)
        .find(|k| node_of_shard(table.owner(strata::cluster::key_slot(k))) == 1)
        .expect("shard 2 owns some key");
    match clients[0].get(foreign.clone()).await {
        Err(ClientError::Server {
            code: ErrorCode::WrongShard,
            leader_hint,
            ..
        }) => assert_eq!(leader_hint, Some(members[1].node.addr.to_string())),
        other => panic!("expected WrongShard, got {other:?}"),
    }

    // Multi-key requests across shards: exists sums, get_many keeps order
    // (missing keys included).
    let mixed: Vec<Bytes> = vec![key(3), Bytes::from("absent:1"), key(9_999), key(3), key(42)];
    let shards: BTreeSet<ShardId> = mixed.iter().map(|k| cluster.shard_of(k)).collect();
    assert!(shards.len() > 1, "the mixed keys span shards");
    assert_eq!(cluster.exists(mixed.clone()).await.expect("exists"), 4);
    let got = cluster.get_many(mixed.clone()).await.expect("get_many");
    let values: Vec<Option<Bytes>> = got.into_iter().map(|e| e.map(|e| e.value)).collect();
    assert_eq!(
        values,
        vec![
            Some(value(3)),
            None,
            Some(value(9_999)),
            Some(value(3)),
            Some(value(42))
        ]
    );

    // Keys sharing a tag: one request on one shard.
    let tagged: Vec<(Bytes, Bytes)> = (0..20)
        .map(|i| (Bytes::from(format!("{{user7}}.f{i}")), value(i)))
        .collect();
    let tag_shard = cluster.shard_of(b"{user7}");
    let before = cluster.requests_by_shard();
    let replies = cluster.set_many(tagged.clone()).await.expect("set_many");
    assert_eq!(replies.len(), 1, "one shard, one atomic MultiSet");
    let after = cluster.requests_by_shard();
    for shard in [ShardId(1), ShardId(2), ShardId(3)] {
        let grew =
            after.get(&shard).copied().unwrap_or(0) - before.get(&shard).copied().unwrap_or(0);
        assert_eq!(grew, u64::from(shard == tag_shard), "shard {shard}");
    }
    let direct = clients[node_of_shard(tag_shard)]
        .get_many(tagged.iter().map(|(k, _)| k.clone()))
        .await
        .expect("the owner serves the whole tag in one request");
    assert!(direct.iter().all(Option::is_some));
    // A MultiSet spanning shards is split, one part per shard.
    let spread: Vec<(Bytes, Bytes)> = (0..30)
        .map(|i| (Bytes::from(format!("spread:{i}")), value(i)))
        .collect();
    let parts = cluster.set_many(spread.clone()).await.expect("set_many");
    assert_eq!(parts.len(), 3, "30 untagged keys reach every shard");

    // The paged scan walks every shard; together with scan_all it sees
    // every key once.
    let mut paged = BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = cluster.scan("", cursor, 500).await.expect("scan page");
        for (k, _) in page.entries {
            assert!(paged.insert(k.clone()), "{k:?} scanned twice");
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged.len(), KEYS + tagged.len() + spread.len());
    let everything = cluster.scan_all("k:").await.expect("scan_all");
    assert_eq!(everything.len(), KEYS);

    // A client routing by the map from before shard 3 sends some keys to
    // the wrong node, follows the redirect, and adopts the newer map.
    let stale = ClusterClient::with_map(stale_map.clone(), &seeds, cluster_config(&certs))
        .expect("stale client");
    assert_eq!(stale.map_version(), before_last);
    let moved = (0..KEYS)
        .find(|&i| cluster.shard_of(&key(i)) == ShardId(3))
        .expect("shard 3 owns some key");
    let entry = stale.get(key(moved)).await.expect("get through a redirect");
    assert_eq!(entry.expect("written").value, value(moved));
    assert!(stale.redirects() >= 1, "the stale client was redirected");
    assert_eq!(stale.map_version(), last);
    // Writes after the refresh go straight to the owner.
    let redirects = stale.redirects();
    stale.set(key(moved), "new").await.expect("set");
    assert_eq!(stale.redirects(), redirects);
    let direct = clients[2].get(key(moved)).await.expect("get on the owner");
    assert_eq!(direct.expect("written").value, Bytes::from("new"));

    // A stale client's split request follows redirects part by part.
    let stale2 =
        ClusterClient::with_map(stale_map, &seeds, cluster_config(&certs)).expect("stale client");
    let batch: Vec<Bytes> = (0..300).map(key).collect();
    let got = stale2.get_many(batch.clone()).await.expect("get_many");
    for (i, entry) in got.into_iter().enumerate() {
        let want = if i == moved {
            Bytes::from("new")
        } else {
            value(i)
        };
        assert_eq!(entry.expect("written").value, want, "key {i}");
    }
    assert!(stale2.redirects() >= 1);
    assert_eq!(stale2.map_version(), last);

    // strata-cli --cluster and strata-bench --cluster against the same nodes.
    let ca = certs.join("ca.crt").display().to_string();
    let addrs = seeds.join(",");
    let cli = |args: &[&str]| -> serde_json::Value {
        let out = tool(
            env!("CARGO_BIN_EXE_strata-cli"),
            &[
                &["--cluster", "--ca", &ca, "--addr", &addrs, "--json"],
                args,
            ]
            .concat(),
        );
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let written = cli(&[
        "mset", "cli:a", "1", "cli:b", "2", "cli:c", "3", "cli:d", "4",
    ]);
    assert_eq!(written["written"], true, "{written}");
    let read = cli(&["mget", "cli:d", "cli:a", "cli:none"]);
    assert_eq!(read["values"][0]["value"], "4", "{read}");
    assert_eq!(read["values"][1]["value"], "1", "{read}");
    assert!(read["values"][2]["value"].is_null(), "{read}");
    assert_eq!(cli(&["get", &format!("k:{moved:05}")])["value"], "new");
    let shown = cli(&["cluster-map"]);
    assert_eq!(shown["cluster_map"]["version"], last, "{shown}");
    let slots: u64 = shown["cluster_map"]["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["slots"].as_u64().expect("slots"))
        .sum();
    assert_eq!(slots, u64::from(strata::cluster::SLOTS));

    let bench = tool(
        env!("CARGO_BIN_EXE_strata-bench"),
        &[
            "--cluster",
            "--ca",
            &ca,
            "--addr",
            &addrs,
            "--connections",
            "1",
            "--inflight",
            "4",
            "--keys",
            "600",
            "--value-size",
            "32",
            "--preload",
            "--requests",
            "600",
            "--warmup",
            "0",
            "--verify-ratio",
            "1.0",
            "--seed",
            "3",
            "--json",
            "--quiet",
        ],
    );
    let summary: serde_json::Value =
        serde_json::from_str(bench.trim()).unwrap_or_else(|e| panic!("{e}: {bench}"));
    assert_eq!(summary["errors"], 0, "{summary:#}");
    assert_eq!(summary["mismatches"], 0, "{summary:#}");
    let by_shard = summary["requests_by_shard"].as_object().expect("per shard");
    assert_eq!(
        by_shard.len(),
        3,
        "the load reached every shard: {summary:#}"
    );

    // A primary that is gone: the other shards still answer; a read of its
    // keys gives up after the attempt bound, and an increment, whose
    // outcome a lost reply leaves unknown, is sent once only.
    let quick = ClusterClient::connect(
        &seeds,
        ClusterClientConfig::with_trust(ServerTrust::CaFile(certs.join("ca.crt")), |c| {
            c.with_request_timeout(Duration::from_millis(500))
                .with_connect_timeout(Duration::from_millis(500))
                .with_retries(0)
        }),
    )
    .await
    .expect("cluster client");
    let on_3 = key(moved);
    let on_1 = (0..KEYS)
        .map(key)
        .find(|k| quick.shard_of(k) == ShardId(1))
        .expect("shard 1 owns some key");
    assert!(quick.get(on_3.clone()).await.expect("get").is_some());
    members[2].node.kill();
    let sent = |c: &ClusterClient| c.requests_by_shard().get(&ShardId(3)).copied().unwrap_or(0);
    let counter = (0..)
        .map(|i| Bytes::from(format!("counter:{i}")))
        .find(|k| quick.shard_of(k) == ShardId(3))
        .expect("shard 3 owns some counter");
    let before = sent(&quick);
    match quick.incr(counter, 1).await {
        Err(ClusterClientError::Node { addr, .. }) => {
            assert_eq!(addr, members[2].node.addr.to_string())
        }
        other => panic!("incr on a dead primary: {other:?}"),
    }
    assert_eq!(sent(&quick) - before, 1, "an increment is never resent");
    let before = sent(&quick);
    assert!(matches!(
        quick.get(on_3).await,
        Err(ClusterClientError::Node { .. })
    ));
    assert_eq!(
        sent(&quick) - before,
        u64::from(strata::cluster::client::DEFAULT_MAX_ATTEMPTS),
        "a read is retried up to the bound"
    );
    assert!(quick.get(on_1).await.expect("shard 1 is up").is_some());

    cluster.close().await;
    stale.close().await;
    stale2.close().await;
    for c in &clients {
        c.close().await;
    }
}
