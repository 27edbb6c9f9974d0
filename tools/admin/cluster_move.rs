//! `strata-admin cluster add-shard | remove-shard | rebalance |
//! abort-migration`: changing the ring's shards or its V while the cluster
//! serves (the keys of every slot whose owner changes are copied first,
//! then the owners switch in one map version).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use strata::cluster::{MAX_VNODES, MapCommand, ShardId, balance_options, choose_vnodes};

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
    let cmd = MapCommand::StartMigration { ring: ring.clone() };
    let vnodes = connect.client(addr).await?.cluster_map().await?.vnodes;
    migrate(connect, addr, cmd, (ring, vnodes), watch, wait).await
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
        bail!(
            "shard {shard} is not on the ring (shards on it: {})",
            ring_text(&ring)
        );
    }
    let rest: Vec<ShardId> = ring.into_iter().filter(|&s| s != shard).collect();
    let map = connect.client(addr).await?.cluster_map().await?;
    let watch = primaries(&map, |s| s != shard);
    let cmd = MapCommand::StartMigration { ring: rest.clone() };
    migrate(connect, addr, cmd, (rest, map.vnodes), watch, wait).await
}

/// The client addresses of the primaries of `map`'s shards that `keep`
/// picks.
fn primaries(
    map: &strata::net::client::ClusterMapReply,
    keep: impl Fn(ShardId) -> bool,
) -> Vec<String> {
    map.shards
        .iter()
        .filter(|s| keep(ShardId(s.id)))
        .filter_map(|s| map.nodes.iter().find(|n| n.id == s.primary))
        .map(|n| n.client_addr.clone())
        .collect()
}

/// Evens out the ring shares by giving every shard `vnodes` points, or the
/// fewest points (by doublings of V) that bring the busiest shard within
/// `max_skew` of an even share.
pub(super) async fn rebalance(
    connect: &Connect,
    addr: &str,
    vnodes: Option<u32>,
    max_skew: f64,
    dry_run: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let map = connect.client(addr).await?.cluster_map().await?;
    let ring: Vec<ShardId> = map.shards.iter().map(|s| ShardId(s.id)).collect();
    let options = balance_options(&ring, map.vnodes)?;
    println!(
        "{} shard(s) on the ring, V = {}; the busiest shard's share over an even one:",
        ring.len(),
        map.vnodes
    );
    println!("{:>6}  {:>7}  {:>12}", "V", "skew", "slots moved");
    for o in &options {
        println!(
            "{:>6}  {:>6.1}%  {:>5} ({:>4.1}%)",
            o.vnodes,
            o.skew * 100.0,
            o.moved,
            o.moved as f64 * 100.0 / f64::from(strata::cluster::SLOTS)
        );
    }
    let chosen = match vnodes {
        Some(v) if (1..=MAX_VNODES).contains(&v) => v,
        Some(v) => bail!("--vnodes must be 1..={MAX_VNODES}, not {v}"),
        None => match choose_vnodes(&options, max_skew / 100.0) {
            Some(v) => v,
            None if options[0].skew <= max_skew / 100.0 => {
                println!("already within {max_skew}% of an even share: nothing to do");
                return Ok(());
            }
            None => {
                println!(
                    "no V up to {MAX_VNODES} is more even than V = {}",
                    map.vnodes
                );
                return Ok(());
            }
        },
    };
    if dry_run {
        println!("would move to V = {chosen} (--dry-run: nothing changed)");
        return Ok(());
    }
    let watch = primaries(&map, |_| true);
    let cmd = MapCommand::Rebalance { vnodes: chosen };
    migrate(connect, addr, cmd, (ring, chosen), watch, wait).await
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

/// Shard ids as `1,2,3`.
fn ring_text(ring: &[ShardId]) -> String {
    let ids: Vec<String> = ring.iter().map(|s| s.0.to_string()).collect();
    ids.join(",")
}

/// One `key=value` field of an `Info` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Proposes `cmd`, a migration to `target` (its ring and V), and with
/// `wait` follows it to its end, printing the receivers' progress
/// (`watch`: the primaries that may receive).
async fn migrate(
    connect: &Connect,
    addr: &str,
    cmd: MapCommand,
    target: (Vec<ShardId>, u32),
    watch: Vec<String>,
    wait: bool,
) -> anyhow::Result<()> {
    let (ring, vnodes) = target;
    let id = propose(connect, addr, &cmd).await?;
    eprintln!(
        "migration {id} started towards the ring {} with V = {vnodes}",
        ring_text(&ring)
    );
    if !wait {
        eprintln!("follow it with `strata-admin cluster status`; it goes on by itself");
        return Ok(());
    }
    // The node proposed through may apply the new map a moment later:
    // until then it shows no migration, which would read as finished.
    await_version(&connect.client(addr).await?, addr, id).await?;
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
    let now_vnodes = connect.client(addr).await?.cluster_map().await?.vnodes;
    if (&now, now_vnodes) != (&ring, vnodes) {
        bail!(
            "migration {id} ended without reaching the ring {} with V = {vnodes} \
             (aborted?); the ring is {} with V = {now_vnodes}",
            ring_text(&ring),
            ring_text(&now)
        );
    }
    eprintln!(
        "migration {id} finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    status(connect, addr).await
}
