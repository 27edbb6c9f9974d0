//! Helpers of the rebalancing tests: writers that run beside a
//! migration, and the checks that follow one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strata::cluster::ShardId;
use strata::cluster::client::ClusterClient;
use strata::net::client::{Client, SetOptions};
use strata::types::AckPolicy;

use super::cluster::{admin, digest, eventually};

/// Writes `prefix{i}` = `v{i}` (with `ack`, else the node's default)
/// until `stop`, as fast as acks come: the
/// keys acknowledged, and every key tried (an error leaves its outcome
/// unknown).
pub async fn write_until(
    cluster: Arc<ClusterClient>,
    prefix: &'static str,
    ack: Option<AckPolicy>,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let (mut acked, mut tried) = (BTreeMap::new(), Vec::new());
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (key, value) = (format!("{prefix}{i}"), format!("v{i}"));
        tried.push(key.clone());
        let options = SetOptions {
            ack,
            ..SetOptions::new()
        };
        if cluster
            .set_with(key.clone(), value.clone(), options)
            .await
            .is_ok()
        {
            acked.insert(key, value);
        }
        i += 1;
    }
    (acked, tried)
}

/// Runs `strata-admin` off the async threads; asserts it succeeded.
pub async fn admin_ok(args: Vec<String>) -> String {
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
pub async fn under_writes(
    cluster: &Arc<ClusterClient>,
    prefix: &'static str,
    ack: Option<AckPolicy>,
    args: Vec<String>,
) -> ((BTreeMap<String, String>, Vec<String>), String) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(cluster.clone(), prefix, ack, stop.clone()));
    let text = admin_ok(args).await;
    stop.store(true, Ordering::Relaxed);
    (writer.await.unwrap(), text)
}

/// The keys of `tried` that exist, read through the cluster.
pub async fn existing(cluster: &ClusterClient, tried: &[String]) -> BTreeSet<String> {
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
pub async fn each_shard_holds_its_keys(
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
