//! The sharded-cluster drills: a shard's primary SIGKILLed or cut off
//! from the majority (automatic failover), the metadata leader killed in
//! the middle of a failover, and a node killed in the middle of a
//! migration. The load runs through the cluster client, which follows the
//! map, with one writer per acknowledgement mode; every key is read back
//! through it after each fault, and each shard's nodes must end with equal
//! digests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use strata::cluster::ShardId;
use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::harness::relay::{Faults, UdpRelay};
use strata::harness::{cluster_args, free_udp_addr, gen_certs};
use strata::net::client::{AckPolicy, Client, OnTimeout, ServerTrust};
use strata::proto::ClusterMapReply;
use strata::types::NodeId;

use crate::node::{Node, converge, digest, info};
use crate::scenario::{Ctx, GRACE_LIVE};
use crate::workload::{
    Load, Op, Promise, Target, Workload, lock, preload, wall_ms, write_recorded,
};

/// Short clocks, so a failover takes seconds: heartbeats every 200 ms, a
/// 1 s lease, a primary failed after 2.5 s of silence.
const TIMING: &str = "heartbeat_ms = 200\nlease_ms = 1000\nfailover_timeout_ms = 2500\n\
                      in_sync_lag_ms = 2000\n";
/// `failover_timeout_ms` above.
const FAILOVER_TIMEOUT: Duration = Duration::from_millis(2500);
/// Bound on any recovery the drill waits for (a failover, a rejoin, a
/// migration's end); far above what they take.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(180);
/// How often the drill looks at the cluster while it waits.
const POLL: Duration = Duration::from_millis(50);
/// The probe's writes: acknowledged only by a primary that reached a
/// replica, so an old primary that is cut off cannot pass for recovered.
const PROBE_ACK: AckPolicy = AckPolicy::SemiSync {
    replicas: 1,
    timeout_ms: 1000,
    on_timeout: OnTimeout::Fail,
};

/// One writer per mode: `sync`, `semi-sync:1` and `async` (repeated for
/// more writers), so the report shows what each mode loses.
fn mixed_workload(writers: usize) -> Workload {
    let modes = [
        AckPolicy::Sync { timeout_ms: 2000 },
        AckPolicy::SemiSync {
            replicas: 1,
            timeout_ms: 2000,
            on_timeout: OnTimeout::Degrade,
        },
        AckPolicy::Async,
    ];
    let mut w = Workload::uniform(writers.max(3), None, Promise::Replicated);
    for (i, p) in w.policies.iter_mut().enumerate() {
        *p = Some(modes[i % modes.len()]);
    }
    w
}

/// A cluster of real nodes and a cluster client over them.
struct Sharded {
    certs: PathBuf,
    nodes: Vec<Node>,
    /// When the node links run through relays: one in front of each node's
    /// link listener, at the index of its node.
    relays: Vec<UdpRelay>,
    cluster: Arc<ClusterClient>,
}

impl Sharded {
    /// Starts `names` as cluster nodes (`settings`: extra `[cluster]`
    /// lines) and forms the first `formed` of them into shards of a
    /// primary and `replicas` replicas.
    async fn start(
        ctx: &Ctx,
        names: &[&str],
        formed: usize,
        replicas: u32,
        settings: &str,
        relayed: bool,
    ) -> anyhow::Result<Sharded> {
        let certs = ctx.dir.join("certs");
        gen_certs(&ctx.bins.admin, &certs, names)?;
        let (mut nodes, mut relays) = (Vec::new(), Vec::new());
        for name in names {
            let (node, relay) = start_node(ctx, &certs, name, settings, relayed).await?;
            nodes.push(node);
            relays.extend(relay);
        }
        let addrs: Vec<String> = nodes[..formed].iter().map(client_addr).collect();
        let ca = certs.join("ca.crt").display().to_string();
        let replicas = replicas.to_string();
        let mut args = vec!["cluster", "create", "--replicas", &replicas, "--ca", &ca];
        args.extend(addrs.iter().map(String::as_str));
        admin(ctx, &args).await?;
        let cluster = Arc::new(connect(&certs, &addrs, Duration::from_secs(5), 8).await?);
        Ok(Sharded {
            certs,
            nodes,
            relays,
            cluster,
        })
    }

    /// Starts one more cluster node (not yet in the map); its index.
    async fn add_node(&mut self, ctx: &Ctx, name: &str, settings: &str) -> anyhow::Result<usize> {
        let (node, _) = start_node(ctx, &self.certs, name, settings, false).await?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// The newest map any running node has (a node cut off from the
    /// others may hold an old one).
    async fn map(&self) -> anyhow::Result<ClusterMapReply> {
        let mut newest: Option<ClusterMapReply> = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            if let Ok(client) = node.client().await {
                if let Ok(map) = client.cluster_map().await
                    && newest.as_ref().is_none_or(|n| map.version > n.version)
                {
                    newest = Some(map);
                }
                client.close().await;
            }
        }
        newest.context("no node answered with the cluster map")
    }

    /// The index of the node with id `id`.
    fn index_of(&self, id: u64) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| NodeId::of_name(&n.name).0 == id)
    }

    /// `shard`'s primary in `map`, by index.
    fn primary_in(&self, map: &ClusterMapReply, shard: u32) -> anyhow::Result<usize> {
        let entry = map
            .shards
            .iter()
            .find(|s| s.id == shard)
            .with_context(|| format!("shard {shard} is not in the map"))?;
        self.index_of(entry.primary)
            .with_context(|| format!("shard {shard} has no primary the drill knows"))
    }

    /// A node's `Info` (an error while it is down).
    async fn info_of(&self, i: usize) -> anyhow::Result<std::collections::HashMap<String, String>> {
        let client = self.nodes[i].client().await?;
        let out = info(&client).await;
        client.close().await;
        out
    }

    /// Waits until every shard's primary counts all its replicas in its
    /// in-sync set: only then can a failover promote any of them.
    async fn wait_in_sync(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            let mut whole = true;
            let map = self.map().await?;
            for shard in &map.shards {
                let p = self.primary_in(&map, shard.id)?;
                let members = self
                    .info_of(p)
                    .await
                    .ok()
                    .and_then(|i| i.get("in_sync").cloned())
                    .unwrap_or_default();
                let count = members.split(',').filter(|m| !m.is_empty()).count();
                whole &= count == shard.replicas.len();
            }
            if whole {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the in-sync sets were not whole within {RECOVERY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes to a key of `shard` (a probe, recorded in the history) until
    /// one is acknowledged with a replica's ack: when the shard took writes
    /// again. Each attempt is short.
    async fn probe(&self, ctx: &Ctx, shard: u32) -> anyhow::Result<Instant> {
        let seeds: Vec<String> = self.nodes.iter().map(client_addr).collect();
        // Two attempts: a failed one refreshes the map, asking the node
        // that failed last (a cut-off primary knows no newer map).
        let probe = connect(&self.certs, &seeds, Duration::from_millis(1500), 2).await?;
        let key = (0u32..)
            .map(|i| format!("probe-{shard}-{i}"))
            .find(|k| probe.shard_of(k.as_bytes()) == ShardId(shard))
            .context("no probe key")?;
        let target = Target::Cluster(Arc::new(probe));
        let op = Op::Set {
            len: 64,
            ttl_ms: None,
        };
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            let promise = Promise::Replicated;
            if write_recorded(&target, &ctx.history, &key, op, Some(PROBE_ACK), promise).await {
                return Ok(Instant::now());
            }
            if Instant::now() >= deadline {
                bail!("shard {shard} took no write within {RECOVERY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until node `i` is in the map as a replica of the shard it was
    /// in and follows that shard's primary.
    async fn wait_rejoined(&self, i: usize) -> anyhow::Result<()> {
        let id = NodeId::of_name(&self.nodes[i].name).0;
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            let map = self.map().await?;
            let replica = map.shards.iter().any(|s| s.replicas.contains(&id));
            let role = self
                .info_of(i)
                .await
                .ok()
                .and_then(|i| i.get("role").cloned());
            if replica && role.as_deref() == Some("replica") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not rejoin as a replica within {RECOVERY_TIMEOUT:?} (role {role:?})",
                    self.nodes[i].name
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every shard's replicas end with their primary's digest.
    async fn converge_all(&self) -> anyhow::Result<Vec<String>> {
        let map = self.map().await?;
        let mut out = Vec::new();
        for shard in &map.shards {
            let p = self.primary_in(&map, shard.id)?;
            let primary = self.nodes[p].client().await?;
            let mut replicas = Vec::new();
            for r in &shard.replicas {
                let i = self
                    .index_of(*r)
                    .context("a replica the drill does not know")?;
                replicas.push((self.nodes[i].name.clone(), self.nodes[i].client().await?));
            }
            let named: Vec<(&str, &Client)> =
                replicas.iter().map(|(n, c)| (n.as_str(), c)).collect();
            let (seq, keys) = converge(&primary, &named)
                .await
                .with_context(|| format!("shard {}", shard.id))?;
            out.push(format!("shard {} at seq {seq} ({keys} keys)", shard.id));
        }
        Ok(out)
    }

    /// Reads every key back through the cluster client.
    async fn verify(&self, ctx: &mut Ctx) -> anyhow::Result<usize> {
        let _ = self.cluster.refresh().await;
        ctx.verify(&Target::Cluster(self.cluster.clone()), "the cluster")
            .await
    }

    /// A failover round up to its fault: whole in-sync sets, then the load
    /// for the kill delay. The running load, and the map to pick a victim
    /// from.
    async fn load_until_fault(
        &self,
        ctx: &mut Ctx,
        workload: &Workload,
        round: u32,
    ) -> anyhow::Result<(Load, ClusterMapReply)> {
        self.wait_in_sync().await?;
        let load = self.load(ctx, workload, round);
        tokio::time::sleep(ctx.kill_delay()).await;
        Ok((load, self.map().await?))
    }

    /// Records how long after `fault_at` `shard` took a replicated write
    /// again (the probe's); when it did.
    async fn recovered(
        &self,
        ctx: &mut Ctx,
        shard: u32,
        fault_at: Instant,
    ) -> anyhow::Result<Instant> {
        let writable = self.probe(ctx, shard).await?;
        ctx.stats.recovery.push(writable - fault_at);
        Ok(writable)
    }

    fn load(&self, ctx: &Ctx, workload: &Workload, round: u32) -> Load {
        Load::start(
            Target::Cluster(self.cluster.clone()),
            workload,
            ctx.history.clone(),
            ctx.seed_for(round, 0),
        )
    }
}

/// Starts a cluster node `name` (`settings`: extra `[cluster]` lines),
/// its node links behind a relay of its own when `relayed`.
async fn start_node(
    ctx: &Ctx,
    certs: &Path,
    name: &str,
    settings: &str,
    relayed: bool,
) -> anyhow::Result<(Node, Option<UdpRelay>)> {
    let link = free_udp_addr()?;
    let mut settings = format!("[cluster]\n{TIMING}{settings}");
    let relay = if relayed {
        let relay = UdpRelay::start(link, Faults::none())?;
        // Other nodes reach this one through its relay only.
        settings.push_str(&format!("advertise_link = \"{}\"\n", relay.local_addr()));
        Some(relay)
    } else {
        None
    };
    let conf = ctx.dir.join(format!("{name}.toml"));
    std::fs::write(&conf, settings).with_context(|| format!("writing {}", conf.display()))?;
    let file = |f: String| certs.join(f).display().to_string();
    let mut args = vec![
        "--cluster".to_string(),
        "--tls-cert".into(),
        file(format!("{name}.crt")),
        "--tls-key".into(),
        file(format!("{name}.key")),
        "--config".into(),
        conf.display().to_string(),
    ];
    args.extend(cluster_args(certs, name, link));
    let mut node = Node::new(name, ctx.dir.join(name), &ctx.bins, args, Some(link));
    node.start(&[], None).await?;
    node.keep_addr();
    Ok((node, relay))
}

/// A cluster client over `seeds` trusting the cluster CA in `certs`.
async fn connect(
    certs: &Path,
    seeds: &[String],
    request_timeout: Duration,
    attempts: u32,
) -> anyhow::Result<ClusterClient> {
    let trust = ServerTrust::CaFile(certs.join("ca.crt"));
    let config = ClusterClientConfig::with_trust(trust, move |c| {
        c.with_client_name("strata-drill")
            .with_connect_timeout(request_timeout)
            .with_request_timeout(request_timeout)
            .with_retries(0)
            .with_breaker_failures(0)
    })
    .with_max_attempts(attempts);
    Ok(ClusterClient::connect(seeds, config).await?)
}

/// Runs `strata-admin` with `args`; its output, or an error holding it.
async fn admin(ctx: &Ctx, args: &[&str]) -> anyhow::Result<String> {
    let admin = ctx.bins.admin.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let shown = args.join(" ");
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new(admin).args(&args).output())
            .await??;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("strata-admin {shown} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// A shard of `map`, at random.
fn random_shard(ctx: &mut Ctx, map: &ClusterMapReply) -> u32 {
    map.shards[ctx.rng.random_range(0..map.shards.len())].id
}

fn client_addr(node: &Node) -> String {
    node.addr().map(|a| a.to_string()).unwrap_or_default()
}

/// Progress and the async loss of one fault, for the round's line.
fn loss_text(ctx: &mut Ctx, fault_ms: u64) -> String {
    match ctx.loss_window(fault_ms) {
        Some((n, window)) => format!(
            "{n} acknowledged async write(s) lost, acknowledged within {} ms of the fault",
            window.as_millis()
        ),
        None => "no acknowledged write lost".to_string(),
    }
}

const SIX: [&str; 6] = ["a1", "a2", "a3", "b1", "b2", "b3"];

/// Two shards of a primary and two replicas; each round a random shard's
/// primary is SIGKILLed under the mixed load. A replica is promoted by
/// the metadata leader; the time until the shard takes a replicated write
/// again is the recovery. The old primary restarts and must rejoin as a
/// replica with the same data.
pub async fn shard_kill(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.stats.reports_async_loss = true;
    let mut s = Sharded::start(ctx, &SIX, 6, 2, "", false).await?;
    let workload = mixed_workload(ctx.writers);
    for round in 0..ctx.rounds {
        let (load, map) = s.load_until_fault(ctx, &workload, round).await?;
        let shard = random_shard(ctx, &map);
        let victim = s.primary_in(&map, shard)?;
        let (killed_at, killed_ms) = (s.nodes[victim].kill(), wall_ms());
        ctx.stats.kills += 1;
        let writable = s.recovered(ctx, shard, killed_at).await?;
        load.stop(GRACE_LIVE).await;
        let keys = s.verify(ctx).await?;
        let lost = loss_text(ctx, killed_ms);
        let new = s.primary_in(&s.map().await?, shard)?;
        s.nodes[victim].start(&[], None).await?;
        s.wait_rejoined(victim).await?;
        let digests = s.converge_all().await?;
        ctx.progress(format!(
            "round {}/{}: shard {shard}'s primary {} SIGKILLed; {} promoted, writable after {} ms; {keys} keys checked, {lost}; {} rejoined; {}",
            round + 1,
            ctx.rounds,
            s.nodes[victim].name,
            s.nodes[new].name,
            (writable - killed_at).as_millis(),
            s.nodes[victim].name,
            digests.join(", ")
        ));
    }
    Ok(())
}

/// As [`shard_kill`], but the primary is cut off from every other node
/// (its node links pass through relays) while clients still reach it: it
/// must stop taking writes when its lease runs out, a replica is
/// promoted, and after the heal it rejoins as a replica.
pub async fn shard_partition(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.stats.reports_async_loss = true;
    let s = Sharded::start(ctx, &SIX, 6, 2, "", true).await?;
    let workload = mixed_workload(ctx.writers);
    for round in 0..ctx.rounds {
        let (load, map) = s.load_until_fault(ctx, &workload, round).await?;
        let shard = random_shard(ctx, &map);
        let victim = s.primary_in(&map, shard)?;
        let link = s.nodes[victim]
            .repl_addr
            .context("cluster nodes have a link address")?;
        s.relays[victim].pause();
        for (i, relay) in s.relays.iter().enumerate() {
            if i != victim {
                relay.cut(link);
            }
        }
        let (cut_at, cut_ms) = (Instant::now(), wall_ms());
        ctx.stats.kills += 1;
        let writable = s.recovered(ctx, shard, cut_at).await?;
        load.stop(GRACE_LIVE).await;
        let new = s.primary_in(&s.map().await?, shard)?;
        s.relays[victim].resume();
        for relay in &s.relays {
            relay.heal();
        }
        s.wait_rejoined(victim).await?;
        // Read back after the heal: the cut-off primary's async writes
        // are gone from the shard by now, or never were.
        let keys = s.verify(ctx).await?;
        let lost = loss_text(ctx, cut_ms);
        let digests = s.converge_all().await?;
        ctx.progress(format!(
            "round {}/{}: shard {shard}'s primary {} cut off; {} promoted, writable after {} ms; healed, {} rejoined; {keys} keys checked, {lost}; {}",
            round + 1,
            ctx.rounds,
            s.nodes[victim].name,
            s.nodes[new].name,
            (writable - cut_at).as_millis(),
            s.nodes[victim].name,
            digests.join(", ")
        ));
    }
    Ok(())
}

/// A shard's primary is SIGKILLed, and while the metadata leader waits
/// out the failover timeout, the leader is SIGKILLed too (and restarted
/// after a random downtime): the next leader must carry the failover
/// out, with nothing acknowledged lost.
pub async fn leader_kill(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.stats.reports_async_loss = true;
    let mut s = Sharded::start(ctx, &SIX, 6, 2, "", false).await?;
    let workload = mixed_workload(ctx.writers);
    for round in 0..ctx.rounds {
        let (load, map) = s.load_until_fault(ctx, &workload, round).await?;
        let leader = s.meta_leader().await?;
        // A shard whose primary is not the leader: the leader dies
        // mid failover, not as the failing primary.
        let candidates: Vec<u32> = map
            .shards
            .iter()
            .map(|sh| sh.id)
            .filter(|&sh| s.primary_in(&map, sh).ok() != Some(leader))
            .collect();
        if candidates.is_empty() {
            bail!("every shard's primary leads the metadata group");
        }
        let shard = candidates[ctx.rng.random_range(0..candidates.len())];
        let victim = s.primary_in(&map, shard)?;
        let (killed_at, killed_ms) = (s.nodes[victim].kill(), wall_ms());
        // Before the failover timeout: the failover is still pending.
        let margin = 200;
        let upto = FAILOVER_TIMEOUT.as_millis() as u64 - margin;
        tokio::time::sleep(Duration::from_millis(ctx.rng.random_range(margin..upto))).await;
        s.nodes[leader].kill();
        let leader_killed = killed_at.elapsed();
        ctx.stats.kills += 2;
        let downtime = Duration::from_millis(ctx.rng.random_range(0..1500));
        tokio::time::sleep(downtime).await;
        s.nodes[leader].start(&[], None).await?;
        let writable = s.recovered(ctx, shard, killed_at).await?;
        // The leader may have been the other shard's primary.
        for other in map.shards.iter().map(|sh| sh.id).filter(|&sh| sh != shard) {
            s.probe(ctx, other).await?;
        }
        load.stop(GRACE_LIVE).await;
        let keys = s.verify(ctx).await?;
        let lost = loss_text(ctx, killed_ms);
        let new = s.primary_in(&s.map().await?, shard)?;
        s.nodes[victim].start(&[], None).await?;
        s.wait_rejoined(victim).await?;
        let digests = s.converge_all().await?;
        ctx.progress(format!(
            "round {}/{}: shard {shard}'s primary {} SIGKILLed, the leader {} {} ms later (down {} ms); {} promoted, writable after {} ms; {keys} keys checked, {lost}; {}",
            round + 1,
            ctx.rounds,
            s.nodes[victim].name,
            s.nodes[leader].name,
            leader_killed.as_millis(),
            downtime.as_millis(),
            s.nodes[new].name,
            (writable - killed_at).as_millis(),
            digests.join(", ")
        ));
    }
    Ok(())
}

/// A copy of about 100 KB/s per owner, so a migration of the preload
/// lasts a few seconds and a kill lands inside it.
const MIGRATION: &str = "migration_bytes_per_sec = 100000\n";

/// Two shards of a primary and a replica, preloaded with ~1.5 MB. Rounds
/// alternate: a third shard (a fresh node) is added, then removed again,
/// under the mixed load; each time a random node the migration involves
/// (the receiver, or an owner's primary) is SIGKILLed mid copy and
/// restarted after a random downtime. The migration must finish by
/// itself; every key is then on the shard the ring names, on no other.
pub async fn migration_kill(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.stats.reports_async_loss = true;
    let names = ["m1", "m2", "m3", "m4"];
    let mut s = Sharded::start(ctx, &names, 4, 1, MIGRATION, false).await?;
    let target = Target::Cluster(s.cluster.clone());
    preload(&target, &ctx.history, 1500, 1000, 50, 2)
        .await
        .map_err(anyhow::Error::msg)?;
    let workload = mixed_workload(ctx.writers);
    let seed = client_addr(&s.nodes[0]);
    let ca = s.certs.join("ca.crt").display().to_string();
    let mut third: Option<usize> = None;
    for round in 0..ctx.rounds {
        s.wait_in_sync().await?;
        let load = s.load(ctx, &workload, round);
        tokio::time::sleep(ctx.duration).await;
        let (what, ring) = match third {
            None => {
                let name = format!("x{}", round + 1);
                gen_certs(&ctx.bins.admin, &s.certs, &[&name])?;
                let i = s.add_node(ctx, &name, MIGRATION).await?;
                let addr = client_addr(&s.nodes[i]);
                let args = ["cluster", "add-shard", "--ca", &ca, "--addr", &seed];
                let mut args = args.to_vec();
                args.extend(["--shard", "3", "--no-wait", &addr]);
                admin(ctx, &args).await?;
                third = Some(i);
                (format!("shard 3 ({name}) added"), "1,2,3")
            }
            Some(i) => {
                let args = ["cluster", "remove-shard", "--ca", &ca, "--addr", &seed];
                let mut args = args.to_vec();
                args.extend(["--no-wait", "3"]);
                admin(ctx, &args).await?;
                (format!("shard 3 ({}) removed", s.nodes[i].name), "1,2")
            }
        };
        let x = third.context("shard 3's node")?;
        let map = s.map().await?;
        let involved = [x, s.primary_in(&map, 1)?, s.primary_in(&map, 2)?];
        s.wait_copying(&involved).await?;
        tokio::time::sleep(Duration::from_millis(ctx.rng.random_range(0..1000))).await;
        let victim = involved[ctx.rng.random_range(0..involved.len())];
        let phase = s.imports(&involved).await;
        let (killed_at, killed_ms) = (s.nodes[victim].kill(), wall_ms());
        ctx.stats.kills += 1;
        let downtime = Duration::from_millis(ctx.rng.random_range(0..1000));
        tokio::time::sleep(downtime).await;
        s.nodes[victim].start(&[], None).await?;
        ctx.recovered(killed_at, s.nodes[victim].replayed());
        s.wait_ring(ring).await?;
        let moved = killed_at.elapsed();
        load.stop(GRACE_LIVE).await;
        let keys = s.verify(ctx).await?;
        let lost = loss_text(ctx, killed_ms);
        if ring == "1,2" {
            // Out of the map: the node goes.
            s.nodes[x].kill();
            let _ = std::fs::remove_dir_all(&s.nodes[x].dir);
            third = None;
        }
        s.wait_placed(ctx).await?;
        let digests = s.converge_all().await?;
        ctx.progress(format!(
            "round {}/{}: {what}; {} SIGKILLed with the imports at [{phase}], down {} ms; ring {ring} {} ms after the kill; {keys} keys checked, {lost}; every key on its owner only; {}",
            round + 1,
            ctx.rounds,
            s.nodes[victim].name,
            downtime.as_millis(),
            moved.as_millis(),
            digests.join(", ")
        ));
    }
    Ok(())
}

impl Sharded {
    /// Waits until one of `nodes` reports an import that has copied
    /// something: the migration is under way.
    async fn wait_copying(&self, nodes: &[usize]) -> anyhow::Result<()> {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            for &i in nodes {
                let copying = self.info_of(i).await.ok().is_some_and(|info| {
                    info.iter().any(|(k, v)| {
                        k.starts_with("cluster_import.")
                            && v.starts_with("copying")
                            && !v.starts_with("copying entries=0/")
                    })
                });
                if copying {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("no import started copying within {RECOVERY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the imports on `nodes` are doing, for the progress line.
    async fn imports(&self, nodes: &[usize]) -> String {
        let mut out = Vec::new();
        for &i in nodes {
            let Ok(info) = self.info_of(i).await else {
                continue;
            };
            for (k, v) in info {
                if let Some(owner) = k.strip_prefix("cluster_import.") {
                    let phase = v.split(' ').next().unwrap_or_default().to_string();
                    out.push(format!(
                        "{} from shard {owner}: {phase}",
                        self.nodes[i].name
                    ));
                }
            }
        }
        out.sort();
        out.join(", ")
    }

    /// Waits until the migration is over with the ring `ring` (as
    /// `cluster_ring` says it).
    async fn wait_ring(&self, ring: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() {
                    continue;
                }
                if let Ok(info) = self.info_of(i).await
                    && info.get("cluster_ring").map(String::as_str) == Some(ring)
                    && !info.contains_key("cluster_migration")
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("the migration to the ring {ring} did not end within {RECOVERY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every shard's primary holds exactly the keys of the
    /// history that its shard owns: the old owners' sweeps are done and no
    /// key is on two shards. (A node's scan shows only the slots it owns;
    /// its digest counts every key it holds.)
    async fn wait_placed(&self, ctx: &Ctx) -> anyhow::Result<()> {
        let _ = self.cluster.refresh().await;
        // Short-TTL keys (`s...`) have all expired by the cutoff: left out.
        let cutoff = wall_ms() + 60_000;
        let keys: Vec<String> = lock(&ctx.history)
            .keys()
            .iter()
            .filter(|k| !k.starts_with('s'))
            .cloned()
            .collect();
        let mut want = std::collections::BTreeMap::<u32, u64>::new();
        for batch in keys.chunks(500) {
            let got = self.cluster.get_many(batch.iter().cloned()).await?;
            for (key, entry) in batch.iter().zip(got) {
                if entry.is_some() {
                    *want
                        .entry(self.cluster.shard_of(key.as_bytes()).0)
                        .or_default() += 1;
                }
            }
        }
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            let map = self.map().await?;
            let mut off = Vec::new();
            for shard in &map.shards {
                let p = self.primary_in(&map, shard.id)?;
                let client = self.nodes[p].client().await?;
                let held = digest(&client, cutoff).await?.map(|d| d.1);
                client.close().await;
                let owns = want.get(&shard.id).copied().unwrap_or(0);
                if held != Some(owns) {
                    off.push(format!(
                        "shard {} holds {held:?} keys, owns {owns}",
                        shard.id
                    ));
                }
            }
            if off.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("keys not where the ring says: {}", off.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node that leads the metadata group: the one that says it does
    /// (a follower's word may be stale).
    async fn meta_leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            for i in (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running()) {
                let leads = self.info_of(i).await.ok().is_some_and(|info| {
                    info.get("cluster_meta_role").map(String::as_str) == Some("leader")
                });
                if leads {
                    return Ok(i);
                }
            }
            if Instant::now() >= deadline {
                bail!("no node led the metadata group within {RECOVERY_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
