//! `strata-admin cluster add-shard | remove-shard | abort-migration`:
//! changing the ring's shards while the cluster serves (the keys of every
//! slot whose owner changes are copied first, then the owners switch in
//! one map version).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use strata::cluster::{MapCommand, ShardId};

use super::{Connect, await_version, propose, status};

/// How often progress is printed while a migration runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A node's `Info` as a map (empty if it does not answer).
async fn info_of(connect: &Connect, addr: &str) -> BTreeMap<String, String> {
    match connect.client(addr).await {
        Ok(client) => client
            .info()
            .await
            .map(|p| p.into_iter().collect())
            .unwrap_or_default(),
        Err(_) => BTreeMap::new(),
    }
}

/// The shards on the ring, as `addr`'s node says.
async fn ring_of(connect: &Connect, addr: &str) -> anyhow::Result<Vec<ShardId>> {
    let info = info_of(connect, addr).await;
    let line = info
        .get("cluster_ring")
        .ok_or_else(|| anyhow!("{addr} says nothing of the ring (is it a cluster member?)"))?;
    line.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Ok(ShardId(s.parse()?)))
        .collect()
}

/// A new shard of running nodes, the first its primary, then the slots the
/// ring gives it moved to it.
pub(super) async fn add_shard(
    connect: &Connect,
    addr: &str,
    shard: ShardId,
    nodes: &[String],
    wait: bool,
) -> anyhow::Result<()> {
    let mut members = Vec::new();
    for node in nodes {
        members.push(connect.member(node).await?);
    }
    let Some((primary, replicas)) = members.split_first() else {
        bail!("a shard needs at least one node");
    };
    let mut ring = ring_of(connect, addr).await?;
    if ring.contains(&shard) {
        bail!("shard {shard} is on the ring already");
    }
    let join = MapCommand::JoinShard {
        id: shard,
        primary: primary.id,
        info: primary.info(shard),
    };
    let mut version = propose(connect, addr, &join).await?;
    for replica in replicas {
        let cmd = MapCommand::AddNode {
            id: replica.id,
            info: replica.info(shard),
        };
        version = propose(connect, addr, &cmd).await?;
    }
    for member in &members {
        await_version(&member.client, &member.addr, version).await?;
    }
    eprintln!(
        "shard {shard} joined (map version {version}): {} node(s), owning no slots yet",
        members.len()
    );
    ring.push(shard);
    ring.sort_unstable();
    let watch = vec![primary.addr.clone()];
    migrate(connect, addr, ring, watch, wait).await
}

/// Moves every slot of `shard` to the other shards, then drops it and its
/// nodes from the map.
pub(super) async fn remove_shard(
    connect: &Connect,
    addr: &str,
    shard: ShardId,
    wait: bool,
) -> anyhow::Result<()> {
    let ring = ring_of(connect, addr).await?;
    if !ring.contains(&shard) {
        bail!("shard {shard} is not on the ring (shards on it: {ring:?})");
    }
    let rest: Vec<ShardId> = ring.into_iter().filter(|&s| s != shard).collect();
    let map = connect.client(addr).await?.cluster_map().await?;
    let watch = map
        .shards
        .iter()
        .filter(|s| s.id != shard.0)
        .filter_map(|s| map.nodes.iter().find(|n| n.id == s.primary))
        .map(|n| n.client_addr.clone())
        .collect();
    migrate(connect, addr, rest, watch, wait).await
}

/// Calls off the migration in progress.
pub(super) async fn abort(connect: &Connect, addr: &str) -> anyhow::Result<()> {
    let info = info_of(connect, addr).await;
    let Some(line) = info.get("cluster_migration") else {
        bail!("no migration is in progress");
    };
    let id = field(line, "id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("cannot read the migration's id from {line:?}"))?;
    let version = propose(connect, addr, &MapCommand::AbortMigration { id }).await?;
    println!(
        "migration {id} aborted at map version {version}: the owners keep their slots; \
         the receivers delete what they copied"
    );
    Ok(())
}

/// One `key=value` field of an `Info` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Starts the migration to `ring` and, with `wait`, follows it to its end,
/// printing the receivers' progress (`watch`: their primaries).
async fn migrate(
    connect: &Connect,
    addr: &str,
    ring: Vec<ShardId>,
    watch: Vec<String>,
    wait: bool,
) -> anyhow::Result<()> {
    let id = propose(
        connect,
        addr,
        &MapCommand::StartMigration { ring: ring.clone() },
    )
    .await?;
    eprintln!("migration {id} started towards the ring {ring:?}");
    if !wait {
        eprintln!("follow it with `strata-admin cluster status`; it goes on by itself");
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let info = info_of(connect, addr).await;
        let line = info.get("cluster_migration");
        if line.and_then(|l| field(l, "id")) != Some(id.to_string().as_str()) {
            break;
        }
        if let Some(line) = line {
            eprintln!("[{:>4} s] {line}", started.elapsed().as_secs());
        }
        for node in &watch {
            for (k, v) in info_of(connect, node).await {
                if let Some(owner) = k.strip_prefix("cluster_import.") {
                    eprintln!("         {node} from shard {owner}: {v}");
                }
            }
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
    let now = ring_of(connect, addr).await?;
    if now != ring {
        bail!(
            "migration {id} ended without reaching the ring {ring:?} (aborted?); the ring is {now:?}"
        );
    }
    eprintln!(
        "migration {id} finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    status(connect, addr).await
}
