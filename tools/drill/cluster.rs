//! The replication drills: replicas killed under load, failovers, and a
//! crash in the middle of a full-sync install.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use strata::harness::{cluster_args, free_udp_addr, gen_certs};
use strata::net::client::{AckPolicy, Client};

use crate::node::{Node, converge, info, link_down, wait_replica_streaming, wait_streaming};
use crate::scenario::{Ctx, GRACE_AFTER_KILL, GRACE_LIVE, PING_TIMEOUT};
use crate::workload::{Load, Promise, Target, Workload, lock, preload};

/// Bound on replicas reaching `streaming`.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on a replica noticing its primary is gone (5 heartbeats of 100 ms
/// plus a loaded machine).
const LINK_DOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Fast failure detection: a link silent for 5 × 100 ms is down.
const CLUSTER_TOML: &str = "[replication]\nheartbeat_ms = 100\n";

fn replica_of(addr: SocketAddr) -> Vec<String> {
    vec!["--replica-of".to_string(), addr.to_string()]
}

/// A cluster node named `name` with its own fixed replication address.
fn cluster_node(ctx: &Ctx, certs: &Path, conf: &Path, name: &str) -> anyhow::Result<Node> {
    let repl = free_udp_addr()?;
    let mut args = vec!["--config".to_string(), conf.display().to_string()];
    args.extend(cluster_args(certs, name, repl));
    Ok(Node::new(
        name,
        ctx.dir.join(name),
        &ctx.bins,
        args,
        Some(repl),
    ))
}

#[expect(clippy::expect_used, reason = "every cluster node is started with one")]
fn repl_addr(node: &Node) -> SocketAddr {
    node.repl_addr
        .expect("cluster nodes have a replication address")
}

/// Certificates for `names` and the config file, in the scenario directory.
fn setup(
    ctx: &Ctx,
    names: &[&str],
    toml: &str,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let certs = ctx.dir.join("certs");
    gen_certs(&ctx.bins.admin, &certs, names)?;
    let conf = ctx.dir.join("node.toml");
    std::fs::write(&conf, toml).with_context(|| format!("writing {}", conf.display()))?;
    Ok((certs, conf))
}

/// A primary and two replicas under semi-sync:1 load; a random replica is
/// SIGKILLed each round and restarted after a random downtime.
pub async fn replica_kill(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (certs, conf) = setup(ctx, &["p", "r1", "r2"], CLUSTER_TOML)?;
    let mut nodes = [
        cluster_node(ctx, &certs, &conf, "p")?,
        cluster_node(ctx, &certs, &conf, "r1")?,
        cluster_node(ctx, &certs, &conf, "r2")?,
    ];
    let upstream = replica_of(repl_addr(&nodes[0]));
    nodes[0].start(&[], None).await?;
    nodes[1].start(&upstream, None).await?;
    nodes[2].start(&upstream, None).await?;
    let primary = nodes[0].ready_client(PING_TIMEOUT).await?;
    let mut replicas = [
        nodes[1].ready_client(PING_TIMEOUT).await?,
        nodes[2].ready_client(PING_TIMEOUT).await?,
    ];
    wait_streaming(&primary, &[&replicas[0], &replicas[1]], STREAMING_TIMEOUT).await?;
    let policy = AckPolicy::SemiSync {
        replicas: 1,
        timeout_ms: 2000,
        on_timeout: strata::net::client::OnTimeout::Degrade,
    };
    // The primary is never killed: every acknowledged write must be on it.
    let workload = Workload::uniform(ctx.writers, Some(policy), Promise::Acked);
    for round in 0..ctx.rounds {
        let load = Load::start(
            Target::Remote(primary.clone()),
            &workload,
            ctx.history.clone(),
            ctx.seed_for(round, 0),
        );
        tokio::time::sleep(ctx.kill_delay()).await;
        let victim = ctx.rng.random_range(1..3usize);
        nodes[victim].kill();
        ctx.stats.kills += 1;
        let downtime = Duration::from_millis(ctx.rng.random_range(0..1000));
        tokio::time::sleep(downtime).await;
        // Recovery is timed from the restart: the downtime is the drill's.
        let restarted_at = Instant::now();
        if let Err(e) = nodes[victim].start(&upstream, None).await {
            load.stop(GRACE_LIVE).await;
            ctx.violation(format!("{} did not restart: {e}", nodes[victim].name));
            return Ok(());
        }
        replicas[victim - 1] = nodes[victim].ready_client(PING_TIMEOUT).await?;
        let took = ctx.recovered(restarted_at, nodes[victim].replayed());
        // Catching up happens under load.
        tokio::time::sleep(Duration::from_millis(500)).await;
        load.stop(GRACE_LIVE).await;
        let keys = ctx
            .verify(&Target::Remote(primary.clone()), "the primary")
            .await?;
        let named = [("r1", &replicas[0]), ("r2", &replicas[1])];
        match converge(&primary, &named).await {
            Ok((seq, n)) => ctx.progress(format!(
                "round {}/{}: {} SIGKILLed, down {} ms, serving {} ms after its restart; {keys} keys checked on the primary; digests equal at seq {seq} ({n} keys)",
                round + 1,
                ctx.rounds,
                nodes[victim].name,
                downtime.as_millis(),
                took.as_millis()
            )),
            Err(e) => ctx.violation(format!("{e:#}")),
        }
    }
    let t = lock(&ctx.history).totals();
    if t.degraded > 0 {
        ctx.note(format!(
            "{} writes degraded (semi-sync timed out while a replica was down)",
            t.degraded
        ));
    }
    Ok(())
}

/// The primary is SIGKILLed under `policy` load (plus one async writer);
/// the most advanced replica is promoted, the other re-pointed, and the
/// deposed primary restarted as a replica of the new one. The roles rotate
/// round after round.
pub async fn failover(ctx: &mut Ctx, policy: AckPolicy) -> anyhow::Result<()> {
    ctx.stats.reports_async_loss = true;
    let names = ["n0", "n1", "n2"];
    let (certs, conf) = setup(ctx, &names, CLUSTER_TOML)?;
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(cluster_node(ctx, &certs, &conf, name)?);
    }
    let upstream = replica_of(repl_addr(&nodes[0]));
    nodes[0].start(&[], None).await?;
    nodes[1].start(&upstream, None).await?;
    nodes[2].start(&upstream, None).await?;
    let mut clients: Vec<Client> = Vec::new();
    for n in &mut nodes {
        clients.push(n.ready_client(PING_TIMEOUT).await?);
    }
    let mut workload = Workload::uniform(ctx.writers.max(2), Some(policy), Promise::Replicated);
    // One async writer: what a failover loses without replica acks.
    if let Some(last) = workload.policies.last_mut() {
        *last = Some(AckPolicy::Async);
    }
    let mut primary = 0usize;
    for round in 0..ctx.rounds {
        let others: Vec<usize> = (0..3).filter(|i| *i != primary).collect();
        wait_streaming(
            &clients[primary],
            &[&clients[others[0]], &clients[others[1]]],
            STREAMING_TIMEOUT,
        )
        .await?;
        let load = Load::start(
            Target::Remote(clients[primary].clone()),
            &workload,
            ctx.history.clone(),
            ctx.seed_for(round, 0),
        );
        let delay = ctx.kill_delay();
        tokio::time::sleep(delay).await;
        let killed_at = nodes[primary].kill();
        ctx.stats.kills += 1;
        let stopping = tokio::spawn(load.stop(GRACE_AFTER_KILL));

        // Promote the most advanced replica; re-point the other to it.
        let mut seqs = Vec::new();
        for i in &others {
            seqs.push(link_down(&clients[*i], LINK_DOWN_TIMEOUT).await?);
        }
        let (new, other) = if seqs[0] >= seqs[1] {
            (others[0], others[1])
        } else {
            (others[1], others[0])
        };
        let promoted: std::collections::HashMap<_, _> =
            clients[new].promote().await?.into_iter().collect();
        if promoted.get("role").map(String::as_str) != Some("primary") {
            bail!("promoting {} answered {promoted:?}", nodes[new].name);
        }
        clients[other]
            .replica_of(&repl_addr(&nodes[new]).to_string())
            .await
            .with_context(|| format!("re-pointing {}", nodes[other].name))?;
        clients[new].ping().await?;
        let took = ctx.recovered(killed_at, None);
        stopping.await.context("stopping the writers")?;

        let lost_async_before = lock(&ctx.history).totals().lost_unpromised;
        let keys = ctx
            .verify(
                &Target::Remote(clients[new].clone()),
                "the promoted replica",
            )
            .await?;
        let lost_async = lock(&ctx.history).totals().lost_unpromised - lost_async_before;
        if let Err(e) = converge(&clients[new], &[(&nodes[other].name, &clients[other])]).await {
            ctx.violation(format!("after the promotion: {e:#}"));
            return Ok(());
        }

        // The deposed primary rejoins as a replica of the new one.
        let old = primary;
        let rejoin = replica_of(repl_addr(&nodes[new]));
        if let Err(e) = nodes[old].start(&rejoin, None).await {
            ctx.violation(format!("the deposed primary did not restart: {e}"));
            return Ok(());
        }
        if let Some(n) = nodes[old].replayed() {
            ctx.stats.replayed.push(n);
        }
        clients[old] = nodes[old].ready_client(PING_TIMEOUT).await?;
        let rejoined = [
            (nodes[other].name.as_str(), &clients[other]),
            (nodes[old].name.as_str(), &clients[old]),
        ];
        match converge(&clients[new], &rejoined).await {
            Ok((seq, n)) => ctx.progress(format!(
                "round {}/{}: {} SIGKILLed after {:.2} s; {} promoted (applied seq {}) and writable in {} ms; {keys} keys checked, {lost_async} unpromised writes lost; all digests equal at seq {seq} ({n} keys)",
                round + 1,
                ctx.rounds,
                nodes[old].name,
                delay.as_secs_f64(),
                nodes[new].name,
                seqs[0].max(seqs[1]),
                took.as_millis()
            )),
            Err(e) => {
                ctx.violation(format!("after the deposed primary rejoined: {e:#}"));
                return Ok(());
            }
        }
        primary = new;
    }
    Ok(())
}

/// A fresh replica joins a primary holding a few MB with
/// `install_after_chunk` armed, aborts mid install, is restarted without it
/// and must converge.
pub async fn install_crash(ctx: &mut Ctx) -> anyhow::Result<()> {
    // Small chunks: ~130 of them for the data set, so the crash point fires.
    let toml = format!("{CLUSTER_TOML}full_sync_chunk_bytes = 32768\n");
    let (certs, conf) = setup(ctx, &["p"], &toml)?;
    let mut p = cluster_node(ctx, &certs, &conf, "p")?;
    p.start(&[], None).await?;
    let primary = p.ready_client(PING_TIMEOUT).await?;
    let loaded = Instant::now();
    preload(
        &Target::Remote(primary.clone()),
        &ctx.history,
        2600,
        1600,
        50,
        4,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    ctx.progress(format!(
        "preloaded 2600 keys (~4 MB) in {} ms",
        loaded.elapsed().as_millis()
    ));
    let workload = Workload::uniform(2, None, Promise::Acked);
    let upstream = replica_of(repl_addr(&p));
    for round in 0..ctx.rounds {
        let name = format!("r{}", round + 1);
        gen_certs(&ctx.bins.admin, &certs, &[&name])?;
        let mut r = cluster_node(ctx, &certs, &conf, &name)?;
        let load = Load::start(
            Target::Remote(primary.clone()),
            &workload,
            ctx.history.clone(),
            ctx.seed_for(round, 0),
        );
        r.launch(&upstream, Some("install_after_chunk@0.05"))?;
        // Wait for the abort, or notice an install that finished first.
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut probe: Option<Client> = None;
        let killed_at = loop {
            if let Some(status) = r.poll_exit() {
                if r.crash_points_hit().is_empty() {
                    ctx.violation(format!(
                        "{name} exited ({status}) without reaching the crash point; its log ends:\n{}",
                        r.log_tail()
                    ));
                    load.stop(GRACE_LIVE).await;
                    return Ok(());
                }
                ctx.stats.crash_point_aborts += 1;
                break Instant::now();
            }
            if probe.is_none() && r.addr().is_some() {
                probe = r.client().await.ok();
            }
            if let Some(c) = &probe
                && let Ok(i) = info(c).await
                && i.get("replication_state").map(String::as_str) == Some("streaming")
            {
                ctx.note("in some round the install finished before the crash point fired; SIGKILLed after it instead");
                break r.kill();
            }
            if Instant::now() >= deadline {
                ctx.note(
                    "in some round the crash point did not fire within 90 s; SIGKILLed instead",
                );
                break r.kill();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        drop(probe);
        ctx.stats.kills += 1;
        if let Err(e) = r.start(&upstream, None).await {
            load.stop(GRACE_LIVE).await;
            ctx.violation(format!("{name} did not restart after the abort: {e}"));
            return Ok(());
        }
        let replica = r.ready_client(PING_TIMEOUT).await?;
        let took = ctx.recovered(killed_at, r.replayed());
        let resumed = Instant::now();
        let streaming = wait_replica_streaming(&replica, STREAMING_TIMEOUT).await;
        load.stop(GRACE_LIVE).await;
        if let Err(e) = streaming {
            ctx.violation(format!(
                "{name} never finished its full sync after the restart: {e:#}"
            ));
            return Ok(());
        }
        let keys = ctx
            .verify(&Target::Remote(primary.clone()), "the primary")
            .await?;
        match converge(&primary, &[(&name, &replica)]).await {
            Ok((seq, n)) => ctx.progress(format!(
                "round {}/{}: {name} aborted mid install, serving again in {} ms, installed in {} ms more; {keys} keys checked; digests equal at seq {seq} ({n} keys)",
                round + 1,
                ctx.rounds,
                took.as_millis(),
                resumed.elapsed().as_millis()
            )),
            Err(e) => {
                ctx.violation(format!("{e:#}"));
                return Ok(());
            }
        }
        // The next round seeds another fresh replica; this one goes.
        replica.close().await;
        r.kill();
        let _ = std::fs::remove_dir_all(&r.dir);
    }
    Ok(())
}
