//! `strata-admin cluster`: forms a cluster out of running nodes and shows
//! or changes its map, through the nodes' client protocol (admin token).
//!
//! Every change is one `ClusterPropose` of a map command to the metadata
//! leader; a node that is not the leader answers `NotLeader` naming it,
//! and the command is sent there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use strata::cluster::{MapCommand, NodeInfo, Ring, ShardId};
use strata::net::client::{
    Client, ClientConfig, ClientError, ClusterMapReply, ErrorCode, ServerTrust,
};
use strata::types::NodeId;

use crate::dump::runtime;

#[path = "cluster_move.rs"]
mod moves;

/// How long a formed cluster may take to show the same map everywhere.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

/// `strata-admin cluster`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// How to reach and trust the nodes.
#[derive(clap::Args, Debug, Clone)]
struct Connect {
    /// PEM file of the CA that signed the nodes' client-facing
    /// certificates (every node of a cluster must be verifiable by it,
    /// e.g. nodes serving their cluster certificates from `gen-certs`).
    #[arg(long, value_name = "FILE", global = true)]
    ca: Option<PathBuf>,
    /// An admin token, if the nodes require tokens.
    #[arg(long, env = "STRATA_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Form a new cluster of running nodes (started with `[cluster]
    /// enabled = true`): shards of 1 + R nodes, in the order given, the
    /// first node of each shard its primary.
    #[command(after_help = "\
Example: strata-admin cluster create --replicas 1 --ca cluster-ca.crt \\
           10.0.0.1:7379 10.0.0.2:7379 10.0.0.3:7379 10.0.0.4:7379 10.0.0.5:7379 10.0.0.6:7379

makes three shards: (10.0.0.1 primary, 10.0.0.2 replica), (10.0.0.3, 10.0.0.4), \
(10.0.0.5, 10.0.0.6). The first node starts the metadata group; every other joins it \
as the map names it (up to 5 voters, the rest learners). The command waits until every \
node serves the final map and prints the status table.")]
    Create {
        /// Replicas per shard.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Virtual nodes per shard on the ring (changed later only by
        /// `cluster rebalance`).
        #[arg(long, default_value_t = strata::cluster::DEFAULT_VNODES)]
        vnodes: u32,
        /// The nodes' client addresses (host:port).
        #[arg(required = true, value_name = "ADDR")]
        nodes: Vec<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Print the cluster: shards, primaries, replicas with their lag, ring
    /// shares, the map version and the metadata group's leader and term.
    Status {
        /// Any node of the cluster.
        #[arg(long, value_name = "ADDR")]
        addr: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Add a running node to an existing shard, as a replica.
    AddNode {
        /// Any node of the cluster.
        #[arg(long, value_name = "ADDR")]
        addr: String,
        /// The shard the node joins.
        #[arg(long)]
        shard: u32,
        /// The new node's client address.
        #[arg(value_name = "NEW_ADDR")]
        node: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Remove a replica from the cluster (refused for a primary, and for
    /// a shard's last copy).
    RemoveNode {
        /// Any node of the cluster.
        #[arg(long, value_name = "ADDR")]
        addr: String,
        /// The node's name (or id).
        #[arg(value_name = "NODE")]
        node: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Switch a shard's primary to one of its replicas with no write lost:
    /// the primary's lease is withdrawn, so it stops taking writes; once a
    /// replica has caught up with it, that replica is made the primary.
    #[command(after_help = "\
Writes to the shard wait (clients retry) from the start until the new primary \
takes them: at least twice the cluster's lease_ms. If no replica catches up \
within 30 s more, the switchover is called off and the primary takes writes again.")]
    Failover {
        /// Any node of the cluster.
        #[arg(long, value_name = "ADDR")]
        addr: String,
        /// The shard whose primary changes.
        #[arg(value_name = "SHARD")]
        shard: u32,
        /// The replica to promote, by name (default: the best caught-up one).
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
        /// For a shard whose primary died and that cannot fail over by
        /// itself (a replica stays silent): promote the most advanced
        /// replica that reported. Says first how far behind it is; acts
        /// only with --yes.
        #[arg(long)]
        unclean: bool,
        /// With --unclean: do it, accepting the loss it stated.
        #[arg(long, requires = "unclean")]
        yes: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Add a shard of running nodes (the first its primary) and move to it,
    /// online, the slots the ring gives it.
    #[command(after_help = "\
The shard joins owning no slots. Then every slot whose ring successor becomes \
the new shard is copied from its owner (throttled by cluster.migration_bytes_per_sec \
on the owner), the owner's writes to it are followed, writes to the moving slots \
pause for a moment (clients retry), and the map gives the slots to the new shard \
in one version. The owners then delete the keys they gave away. Progress is printed \
until the end; interrupting this command does not stop the migration.")]
    AddShard {
        /// Any node of the cluster.
        #[arg(long, value_name = "ADDR")]
        addr: String,
        /// The new shard's id (unused so far).
        #[arg(long)]
        shard: u32,
        /// The new nodes' client addresses; the first becomes the primary.
        #[arg(required = true, value_name = "NEW_ADDR")]
        nodes: Vec<String>,
        /// Return once the migration has started.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Move every slot of a shard to the others, online, then drop the
    /// shard and its nodes from the cluster (they can be stopped after).
    RemoveShard {
        /// Any node of the cluster.
        #[arg(long, value_name = "ADDR")]
        addr: String,
        /// The shard to remove.
        #[arg(value_name = "SHARD")]
        shard: u32,
        /// Return once the migration has started.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Even out the shards' ring shares: give every shard more points on
    /// the ring (a larger V), moving the slots that change owner online.
    #[command(after_help = "\
A shard's share of the slots is decided by where its V points fall; with more \
points the shares come closer to even. Without --vnodes this prints, for the \
current V and each doubling of it up to 4096, the busiest shard's share over an \
even one and how many slots would move, and picks the smallest V within \
--max-skew. The slots then move as for add-shard (copied, followed, a short \
cutover, one map version); clients take the new V from the map.")]
    Rebalance {
        /// Any node of the cluster.
        #[arg(long, value_name = "ADDR")]
        addr: String,
        /// Move to exactly this many points per shard.
        #[arg(long)]
        vnodes: Option<u32>,
        /// Good enough: the busiest shard holds at most this many percent
        /// more slots than an even share.
        #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
        max_skew: f64,
        /// Print the options and the choice, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Return once the migration has started.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        connect: Connect,
    },
    /// Call off the migration in progress: the owners keep their slots.
    AbortMigration {
        /// Any node of the cluster.
        #[arg(long, value_name = "ADDR")]
        addr: String,
        #[command(flatten)]
        connect: Connect,
    },
}

/// Bound on one switchover request: twice a lease plus the catch-up wait
/// the node allows, with room to spare.
const SWITCHOVER_WITHIN: Duration = Duration::from_secs(120);

/// Runs `cluster`.
///
/// # Errors
///
/// Unreachable nodes, refusals of the map (with its reason), timeouts.
pub fn run(args: &Args) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match &args.command {
            Command::Create {
                replicas,
                vnodes,
                nodes,
                connect,
            } => create(connect, nodes, *replicas, *vnodes).await,
            Command::Status { addr, connect } => status(connect, addr).await,
            Command::AddNode {
                addr,
                shard,
                node,
                connect,
            } => add_node(connect, addr, ShardId(*shard), node).await,
            Command::RemoveNode {
                addr,
                node,
                connect,
            } => remove_node(connect, addr, node).await,
            Command::Failover {
                addr,
                shard,
                to,
                unclean: false,
                connect,
                ..
            } => failover(connect, addr, *shard, to.as_deref()).await,
            Command::Failover {
                addr,
                shard,
                to,
                unclean: true,
                yes,
                connect,
            } => unclean_failover(connect, addr, *shard, to.as_deref(), *yes).await,
            Command::AddShard {
                addr,
                shard,
                nodes,
                no_wait,
                connect,
            } => moves::add_shard(connect, addr, ShardId(*shard), nodes, !no_wait).await,
            Command::RemoveShard {
                addr,
                shard,
                no_wait,
                connect,
            } => moves::remove_shard(connect, addr, ShardId(*shard), !no_wait).await,
            Command::Rebalance {
                addr,
                vnodes,
                max_skew,
                dry_run,
                no_wait,
                connect,
            } => moves::rebalance(connect, addr, *vnodes, *max_skew, *dry_run, !no_wait).await,
            Command::AbortMigration { addr, connect } => moves::abort(connect, addr).await,
        }
    })
}

/// A connected node and what it says of itself.
struct Member {
    /// The address this tool dialled.
    addr: String,
    /// The address the node advertises to clients (what the map gets).
    client_addr: String,
    client: Client,
    id: NodeId,
    name: String,
    link_addr: String,
}

impl Connect {
    async fn client(&self, addr: &str) -> anyhow::Result<Client> {
        self.client_with(addr, |c| c).await
    }

    /// A client whose config `customize` adjusts (timeouts, retries).
    async fn client_with(
        &self,
        addr: &str,
        customize: impl FnOnce(ClientConfig) -> ClientConfig,
    ) -> anyhow::Result<Client> {
        let socket = tokio::net::lookup_host(addr)
            .await
            .with_context(|| format!("cannot resolve {addr}"))?
            .next()
            .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
        let ca = self
            .ca
            .clone()
            .ok_or_else(|| anyhow!("cluster commands need --ca FILE to verify the nodes"))?;
        let mut config = ClientConfig::new(socket, ServerTrust::CaFile(ca)).with_connections(1);
        if let Some(token) = &self.token {
            config = config.with_token(token.clone());
        }
        Client::connect(customize(config))
            .await
            .with_context(|| format!("cannot connect to {addr}"))
    }

    async fn member(&self, addr: &str) -> anyhow::Result<Member> {
        let client = self.client(addr).await?;
        let info: BTreeMap<String, String> = client.info().await?.into_iter().collect();
        let field = |name: &str| {
            info.get(name).cloned().ok_or_else(|| {
                anyhow!("{addr} is not in cluster mode (no {name} in its info); start it with [cluster] enabled = true")
            })
        };
        Ok(Member {
            addr: addr.to_string(),
            id: NodeId(
                field("cluster_node_id")?
                    .parse()
                    .context("cluster_node_id")?,
            ),
            name: field("cluster_node_name")?,
            link_addr: field("cluster_link_addr")?,
            client_addr: field("cluster_client_addr")?,
            client,
        })
    }
}

impl Member {
    fn info(&self, shard: ShardId) -> NodeInfo {
        NodeInfo {
            name: self.name.clone(),
            client_addr: self.client_addr.clone(),
            link_addr: self.link_addr.clone(),
            shard,
        }
    }
}

async fn create(
    connect: &Connect,
    addrs: &[String],
    replicas: usize,
    vnodes: u32,
) -> anyhow::Result<()> {
    let per_shard = replicas + 1;
    if !addrs.len().is_multiple_of(per_shard) {
        bail!(
            "{} nodes do not make shards of {per_shard} (1 primary + {replicas} replicas)",
            addrs.len()
        );
    }
    let mut members = Vec::new();
    for addr in addrs {
        members.push(connect.member(addr).await?);
    }
    let seed = &members[0];
    // A run cut short (a node unreachable half-way) left part of the map
    // committed: go on from there rather than refuse to run again.
    let before = seed
        .client
        .cluster_map()
        .await
        .with_context(|| format!("reading the map of {}", seed.addr))?;
    let mut init_error = None;
    if before.version == 0 {
        if let Err(e) = seed.client.cluster_init().await {
            // An earlier run may have started the group and stopped before
            // the first command: proposing tells.
            init_error = Some(e);
        }
    } else {
        eprintln!(
            "{} already holds map version {}: committing only what it lacks",
            seed.addr, before.version
        );
    }
    let mut commands = vec![MapCommand::Create { vnodes }];
    for (i, shard) in members.chunks(per_shard).enumerate() {
        let id = ShardId(u32::try_from(i + 1)?);
        commands.push(MapCommand::AddShard {
            id,
            primary: shard[0].id,
            info: shard[0].info(id),
        });
        for replica in &shard[1..] {
            commands.push(MapCommand::AddNode {
                id: replica.id,
                info: replica.info(id),
            });
        }
    }
    let mut version = before.version;
    for cmd in commands {
        if already_in(&before, &cmd)? {
            continue;
        }
        version = propose(connect, &seed.addr, &cmd)
            .await
            .map_err(|e| match &init_error {
                Some(init) => e.context(format!(
                    "starting the metadata group on {} failed first: {init}",
                    seed.addr
                )),
                None => e,
            })?;
    }
    eprintln!("map version {version} committed; waiting for every node to serve it");
    for member in &members {
        await_version(&member.client, &member.addr, version).await?;
    }
    status(connect, &seed.addr).await
}

/// Whether `map` (from an earlier, interrupted `create`) already holds what
/// `cmd` of this `create` would commit; an error if it holds something else.
fn already_in(map: &ClusterMapReply, cmd: &MapCommand) -> anyhow::Result<bool> {
    let node_shard = |id: NodeId| map.nodes.iter().find(|n| n.id == id.0).map(|n| n.shard);
    match cmd {
        MapCommand::Create { .. } if map.vnodes == 0 => Ok(false),
        MapCommand::Create { vnodes } if map.vnodes == *vnodes => Ok(true),
        MapCommand::Create { vnodes } => bail!(
            "the cluster was created with {} virtual nodes, not {vnodes}",
            map.vnodes
        ),
        MapCommand::AddShard { id, primary, .. } => {
            match map.shards.iter().find(|s| s.id == id.0) {
                None => Ok(false),
                Some(s) if s.primary == primary.0 => Ok(true),
                Some(_) => bail!(
                    "shard {} already exists with another primary: this is not the \
                     cluster an earlier `create` with these nodes made",
                    id.0
                ),
            }
        }
        MapCommand::AddNode { id, info } => match node_shard(*id) {
            None => Ok(false),
            Some(shard) if shard == info.shard.0 => Ok(true),
            Some(shard) => bail!("node {} is already in shard {shard}", info.name),
        },
        _ => Ok(false),
    }
}

/// Commits `cmd`, following `NotLeader` to the leader; the new version.
async fn propose(connect: &Connect, addr: &str, cmd: &MapCommand) -> anyhow::Result<u64> {
    let command = Bytes::from(postcard::to_stdvec(cmd)?);
    let mut target = addr.to_string();
    for _ in 0..5 {
        let client = connect.client(&target).await?;
        match client.cluster_propose(command.clone()).await {
            Ok(pairs) => {
                let version = pairs
                    .iter()
                    .find(|(k, _)| k == "map_version")
                    .and_then(|(_, v)| v.parse().ok())
                    .ok_or_else(|| anyhow!("{target} did not say the map version"))?;
                return Ok(version);
            }
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                leader_hint,
                ..
            }) => {
                let Some(leader) = leader_hint else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                target = leader;
            }
            Err(e) => return Err(anyhow!("{target} refused {cmd:?}: {e}")),
        }
    }
    bail!("no metadata leader took {cmd:?}")
}

/// Waits until `client`'s node serves map `version` or later.
async fn await_version(client: &Client, addr: &str, version: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let map = client.cluster_map().await?;
        if map.version >= version {
            return Ok(());
        }
        if started.elapsed() > CONVERGE_WITHIN {
            bail!(
                "{addr} still serves map version {} after {CONVERGE_WITHIN:?} (want {version})",
                map.version
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(connect: &Connect, addr: &str) -> anyhow::Result<()> {
    let client = connect.client(addr).await?;
    let map = client.cluster_map().await?;
    let info: BTreeMap<String, String> = client.info().await?.into_iter().collect();
    let shares = shares(&map)?;
    let name = |id: u64| {
        map.nodes.iter().find(|n| n.id == id).map_or_else(
            || id.to_string(),
            |n| format!("{} ({})", n.name, n.client_addr),
        )
    };
    println!(
        "map version {}  vnodes {}  metadata leader {}  term {}",
        map.version,
        map.vnodes,
        info.get("cluster_meta_leader")
            .map_or("?".into(), |l| l.parse().map_or(l.clone(), name)),
        info.get("cluster_meta_term").map_or("?", String::as_str),
    );
    println!(
        "{:<6} {:<8} {:<40} {:<12} {:<7} replicas (lag; * in the in-sync set)",
        "shard", "epoch", "primary", "lease", "share"
    );
    for shard in &map.shards {
        // The primary's Info names the committed set it counts acks from.
        let in_sync = node_info(connect, &map, shard.primary, "in_sync").await;
        let member = |id: u64| {
            let node = map.nodes.iter().find(|n| n.id == id);
            let names = in_sync.as_deref().unwrap_or("");
            node.is_some_and(|n| names.split(',').any(|m| m == n.name))
        };
        let mut lags = Vec::new();
        for replica in &shard.replicas {
            lags.push(format!(
                "{}{} {}",
                if member(*replica) { "*" } else { "" },
                name(*replica),
                replica_lag(connect, &map, *replica).await
            ));
        }
        let share = shares.get(&ShardId(shard.id)).copied().unwrap_or(0);
        let lease = node_info(connect, &map, shard.primary, "cluster_lease_left_ms")
            .await
            .map_or("?".to_string(), |ms| {
                if ms == "0" {
                    "none".to_string()
                } else {
                    format!("{ms} ms")
                }
            });
        println!(
            "{:<6} {:<8} {:<40} {:<12} {:>5.1}%  {}",
            shard.id,
            shard.epoch,
            name(shard.primary),
            lease,
            f64::from(share) * 100.0 / f64::from(strata::cluster::SLOTS),
            if lags.is_empty() {
                "-".to_string()
            } else {
                lags.join(", ")
            },
        );
    }
    if let Some(line) = info.get("cluster_migration") {
        println!("migration in progress: {line}");
    }
    leader_view(connect, &map, &info).await;
    Ok(())
}

/// What the metadata leader knows of the nodes' health: heartbeat ages,
/// the primaries' leases, failovers.
async fn leader_view(connect: &Connect, map: &ClusterMapReply, info: &BTreeMap<String, String>) {
    let leader = info
        .get("cluster_meta_leader")
        .and_then(|l| l.parse::<u64>().ok())
        .and_then(|id| map.nodes.iter().find(|n| n.id == id));
    let Some(leader) = leader else {
        println!("no metadata leader known: heartbeats and leases are not being answered");
        return;
    };
    let pairs = match connect.client(&leader.client_addr).await {
        Ok(client) => client.info().await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    let pairs: BTreeMap<String, String> = match pairs {
        Ok(p) => p.into_iter().collect(),
        Err(e) => {
            println!("the metadata leader {} did not answer: {e}", leader.name);
            return;
        }
    };
    let ages: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("cluster_heartbeat_age_ms.")?;
            Some(format!("{name} {v} ms"))
        })
        .collect();
    println!("heartbeats last heard by the leader: {}", ages.join(", "));
    let get = |k: &str| pairs.get(k).map_or("-", String::as_str);
    println!(
        "failovers by this leader: {}  last: {}",
        get("cluster_failovers"),
        get("cluster_failover_last")
    );
    if let Some(waiting) = pairs.get("cluster_failover_waiting") {
        println!("failing over now: {waiting}");
    }
}

/// Slots per shard, from the ring the map describes.
fn shares(map: &ClusterMapReply) -> anyhow::Result<BTreeMap<ShardId, u32>> {
    if map.shards.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ids: Vec<ShardId> = map.shards.iter().map(|s| ShardId(s.id)).collect();
    Ok(Ring::new(&ids, map.vnodes)?.slot_table().shares())
}

/// One field of a node's own `Info`, if it answers.
async fn node_info(
    connect: &Connect,
    map: &ClusterMapReply,
    id: u64,
    field: &str,
) -> Option<String> {
    let node = map.nodes.iter().find(|n| n.id == id)?;
    let pairs = connect
        .client(&node.client_addr)
        .await
        .ok()?
        .info()
        .await
        .ok()?;
    pairs.into_iter().find(|(k, _)| k == field).map(|(_, v)| v)
}

/// A replica's lag as its own `Info` tells it (or why it could not).
async fn replica_lag(connect: &Connect, map: &ClusterMapReply, id: u64) -> String {
    let Some(node) = map.nodes.iter().find(|n| n.id == id) else {
        return "(not in map)".into();
    };
    let info = match connect.client(&node.client_addr).await {
        Ok(client) => client.info().await,
        Err(e) => return format!("(unreachable: {e})"),
    };
    match info {
        Ok(pairs) => {
            let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            match (get("lag_records"), get("replication_state")) {
                (Some(lag), _) => format!("lag {lag}"),
                (None, Some(state)) => format!("({state})"),
                (None, None) => format!("applied {}", get("applied_seq").unwrap_or_default()),
            }
        }
        Err(e) => format!("(no info: {e})"),
    }
}

async fn add_node(connect: &Connect, addr: &str, shard: ShardId, node: &str) -> anyhow::Result<()> {
    let member = connect.member(node).await?;
    let version = propose(
        connect,
        addr,
        &MapCommand::AddNode {
            id: member.id,
            info: member.info(shard),
        },
    )
    .await?;
    await_version(&member.client, &member.addr, version).await?;
    println!(
        "{} joined shard {} (map version {version})",
        member.name, shard.0
    );
    Ok(())
}

async fn remove_node(connect: &Connect, addr: &str, node: &str) -> anyhow::Result<()> {
    let client = connect.client(addr).await?;
    let map = client.cluster_map().await?;
    let id = map
        .nodes
        .iter()
        .find(|n| n.name == node || n.id.to_string() == node)
        .map(|n| NodeId(n.id))
        .ok_or_else(|| anyhow!("no node {node:?} in the cluster map"))?;
    let version = propose(connect, addr, &MapCommand::RemoveNode { id }).await?;
    println!("{node} left the cluster (map version {version})");
    Ok(())
}

/// A planned switchover, sent to the metadata leader (following
/// `NotLeader`).
async fn failover(
    connect: &Connect,
    addr: &str,
    shard: u32,
    to: Option<&str>,
) -> anyhow::Result<()> {
    let mut target = addr.to_string();
    for _ in 0..5 {
        let client = connect
            .client_with(&target, |c| {
                c.with_request_timeout(SWITCHOVER_WITHIN).with_retries(0)
            })
            .await?;
        eprintln!("switching shard {shard} over via {target}; its writes wait meanwhile");
        match client.cluster_failover(shard, to).await {
            Ok(pairs) => {
                let get = |k: &str| {
                    pairs
                        .iter()
                        .find(|(key, _)| key == k)
                        .map_or(String::new(), |(_, v)| v.clone())
                };
                println!(
                    "shard {shard}: {} is the primary (map version {})",
                    get("primary"),
                    get("map_version")
                );
                return Ok(());
            }
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                leader_hint: Some(leader),
                ..
            }) => target = leader,
            Err(e) => bail!("switchover of shard {shard} failed: {e}"),
        }
    }
    bail!("no metadata leader took the switchover")
}

/// An unclean promotion: first what it would do, then, with `yes`, done.
async fn unclean_failover(
    connect: &Connect,
    addr: &str,
    shard: u32,
    to: Option<&str>,
    yes: bool,
) -> anyhow::Result<()> {
    let mut target = addr.to_string();
    for _ in 0..5 {
        let client = connect.client(&target).await?;
        match client.cluster_failover_unclean(shard, to, !yes).await {
            Ok(pairs) => {
                let get = |k: &str| {
                    pairs
                        .iter()
                        .find(|(key, _)| key == k)
                        .map_or(String::new(), |(_, v)| v.clone())
                };
                let (node, behind) = (get("promote"), get("behind_records"));
                if !yes {
                    bail!(
                        "an unclean failover of shard {shard} would promote {node}, {behind} \
                         record(s) behind the failed primary's last report; acknowledged \
                         writes among those, and any written after that report, would be \
                         lost. Nothing was changed: re-run with --yes to do it"
                    );
                }
                println!(
                    "shard {shard}: {node} is the primary (map version {}); it was {behind} \
                     record(s) behind the failed primary's last report",
                    get("map_version")
                );
                return Ok(());
            }
            Err(ClientError::Server {
                code: ErrorCode::NotLeader,
                leader_hint: Some(leader),
                ..
            }) => target = leader,
            Err(e) => bail!("unclean failover of shard {shard} refused: {e}"),
        }
    }
    bail!("no metadata leader took the unclean failover")
}
