//! The scenarios, their shared context and the single-node drills.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::harness::HarnessError;

use crate::node::{Binaries, Node};
use crate::workload::{
    Findings, History, Load, ModeTally, Promise, Target, Totals, Workload, derive_seed, lock,
    verify,
};

/// Every scenario, in run order, with what it proves.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "single-always",
        "one node, fsync=always, SIGKILLed at random moments under load: every acknowledged write survives (I1), nothing is invented (I2), expired keys stay expired (I4)",
    ),
    (
        "single-interval",
        "the same with fsync=interval:1000: a process crash loses nothing either",
    ),
    (
        "single-never",
        "the same with fsync=never: a process crash loses nothing either",
    ),
    (
        "checkpoint",
        "16 KiB WAL segments and a checkpoint every 64 KiB or 200 ms, so kills land in checkpoints and segment deletion (I1, I7); plus aborts at checkpoint_after_flush and wal_segment_removed when the server has crash points",
    ),
    (
        "crash-points",
        "aborts between the WAL write and its fsync (wal_after_write_before_sync) and between the WAL and RocksDB (commit_after_wal_before_disk)",
    ),
    (
        "power-loss",
        "in-process power loss under fsync=always: the WAL's files keep only synced bytes plus a torn prefix of the rest, RocksDB loses its memtable; every acknowledged write survives",
    ),
    (
        "replica-kill",
        "a primary and 2 replicas under semi-sync:1 load, replicas SIGKILLed and restarted at random: nothing acknowledged is missing on the primary, and every replica's digest ends equal to the primary's (I5)",
    ),
    (
        "failover-sync",
        "the primary SIGKILLed under sync load; the most advanced replica promoted, the other re-pointed: no sync write that was not degraded is lost (I6); the deposed primary rejoins and every digest converges",
    ),
    ("failover-semi-sync", "the same under semi-sync:1 load"),
    (
        "install-crash",
        "a fresh replica joining a primary with a few MB aborts mid full sync (install_after_chunk); restarted, it resumes and converges",
    ),
    (
        "shard-kill",
        "a cluster of 2 shards x 3 nodes under sync, semi-sync:1 and async writers (cluster client); a random shard's primary SIGKILLed: a replica is promoted automatically, no sync/semi-sync write is lost, none is invented; recovery is the time until the shard takes a replicated write, async loss and its window (RPO) are reported; the old primary rejoins as a replica and every shard's digests converge",
    ),
    (
        "shard-partition",
        "the same, but the primary is cut off from every other node (node links through UDP relays) while clients still reach it: it stops taking writes when its lease runs out, a replica is promoted, and after the heal it rejoins as a replica; what it acknowledged under async after the cut is the loss reported",
    ),
    (
        "leader-kill",
        "a shard's primary SIGKILLed, then the metadata leader SIGKILLed before the failover timeout ran out (and restarted after a random downtime): the next leader carries the failover out, nothing promised is lost",
    ),
    (
        "migration-kill",
        "2 shards x 2 nodes, ~1.5 MB preloaded; rounds add a third shard and remove it again under the mixed load, SIGKILLing the receiver or an owner's primary mid copy: the migration finishes by itself, nothing promised is lost, every key ends on the shard the ring names and on no other",
    ),
];

/// The seed of scenario `name`: depends on the run's seed and the name
/// only, so `--scenario NAME --seed S` replays it alone.
pub fn scenario_seed(seed: u64, name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    derive_seed(seed, &[hash])
}

/// Scenarios that need the server's crash points entirely.
pub const NEEDS_CRASH_POINTS: &[&str] = &["crash-points", "install-crash"];

/// How long writers may take to finish after a kill: replies already in
/// flight are taken in, the rest are cut off (their outcome is unknown;
/// a dead node answers nothing).
pub const GRACE_AFTER_KILL: Duration = Duration::from_millis(300);
/// How long writers may take to finish on a live node (request timeout + 1 s).
pub const GRACE_LIVE: Duration = Duration::from_secs(6);
/// Bound on a restarted node answering its first ping.
pub const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Passed,
    Failed,
    Skipped(String),
}

/// What one scenario did and found.
#[derive(Debug, Clone)]
pub struct Stats {
    pub name: &'static str,
    pub seed: u64,
    pub status: Status,
    /// SIGKILLs, crash-point aborts and power losses.
    pub kills: u64,
    /// Of those, aborts at a crash point.
    pub crash_point_aborts: u64,
    pub totals: Totals,
    pub invented: u64,
    pub expired: u64,
    /// Kill (or abort) to the first successful ping after restart; for a
    /// failover, to the promoted replica answering; for power loss, the reopen.
    pub recovery: Vec<Duration>,
    /// WAL bytes replayed at each restart.
    pub replayed: Vec<u64>,
    /// Whether async-equivalent loss is reported (failovers).
    pub reports_async_loss: bool,
    /// Per fault that lost acknowledged unpromised writes: the span of
    /// their acknowledgements, the fault's moment included (the RPO).
    pub loss_windows: Vec<Duration>,
    /// Acknowledged and lost writes per acknowledgement mode asked for.
    pub by_mode: BTreeMap<&'static str, ModeTally>,
    pub notes: Vec<String>,
    /// The first violations, for the report.
    pub violations: Vec<String>,
    pub violation_count: u64,
    pub elapsed: Duration,
}

impl Stats {
    pub fn new(name: &'static str, seed: u64) -> Stats {
        Stats {
            name,
            seed,
            status: Status::Passed,
            kills: 0,
            crash_point_aborts: 0,
            totals: Totals::default(),
            invented: 0,
            expired: 0,
            recovery: Vec::new(),
            replayed: Vec::new(),
            reports_async_loss: false,
            loss_windows: Vec::new(),
            by_mode: BTreeMap::new(),
            notes: Vec::new(),
            violations: Vec::new(),
            violation_count: 0,
            elapsed: Duration::ZERO,
        }
    }
}

/// Violations kept verbatim per scenario.
const KEPT_VIOLATIONS: usize = 20;

/// The run's settings, the same for every scenario.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rounds: u32,
    /// Load per round before the kill window (which is as long again).
    pub duration: Duration,
    pub writers: usize,
    pub bins: Binaries,
    /// The server has crash points (`failpoints` feature).
    pub crash_points: bool,
    /// Progress lines on stderr.
    pub verbose: bool,
}

/// Everything a scenario run needs.
pub struct Ctx {
    pub seed: u64,
    pub rounds: u32,
    pub duration: Duration,
    pub writers: usize,
    pub bins: Binaries,
    /// The scenario's own scratch directory.
    pub dir: PathBuf,
    pub rng: StdRng,
    pub history: Arc<Mutex<History>>,
    pub stats: Stats,
    pub crash_points: bool,
    pub verbose: bool,
    /// When the writes the last [`Ctx::verify`] found lost (acknowledged,
    /// unpromised) were acknowledged, wall clock ms.
    pub lost_acked_ms: Vec<u64>,
}

impl Ctx {
    pub fn new(stats: Stats, settings: &Settings, dir: PathBuf) -> Ctx {
        Ctx {
            seed: stats.seed,
            rounds: settings.rounds,
            duration: settings.duration,
            writers: settings.writers,
            bins: settings.bins.clone(),
            dir,
            rng: StdRng::seed_from_u64(stats.seed),
            history: Arc::new(Mutex::new(History::default())),
            stats,
            crash_points: settings.crash_points,
            verbose: settings.verbose,
            lost_acked_ms: Vec::new(),
        }
    }

    /// When to kill: after `duration` of load, at a random moment of the
    /// following `duration`.
    pub fn kill_delay(&mut self) -> Duration {
        let window = self.duration.as_millis().max(1) as u64;
        self.duration + Duration::from_millis(self.rng.random_range(0..window))
    }

    /// A seed for round `round`, part `part`.
    pub fn seed_for(&self, round: u32, part: u64) -> u64 {
        derive_seed(self.seed, &[u64::from(round), part])
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.stats.notes.contains(&note) {
            self.stats.notes.push(note);
        }
    }

    pub fn violation(&mut self, what: impl Into<String>) {
        let what = what.into();
        if self.verbose {
            eprintln!("  {}: VIOLATION {what}", self.stats.name);
        }
        self.stats.violation_count += 1;
        if self.stats.violations.len() < KEPT_VIOLATIONS {
            self.stats.violations.push(what);
        }
    }

    pub fn progress(&self, line: impl AsRef<str>) {
        if self.verbose {
            eprintln!("  {}: {}", self.stats.name, line.as_ref());
        }
    }

    /// Reads every key back through `target` and records what is wrong.
    pub async fn verify(&mut self, target: &Target, on: &str) -> anyhow::Result<usize> {
        let findings: Findings = verify(target, &self.history)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("reading the keys back from {on}"))?;
        for lost in &findings.lost {
            self.violation(format!("lost on {on}: {lost}"));
        }
        for invented in &findings.invented {
            self.violation(format!("invented on {on} (I2): {invented}"));
        }
        for expired in &findings.expired {
            self.violation(format!("expired value on {on} (I4): {expired}"));
        }
        self.stats.invented += findings.invented.len() as u64;
        self.stats.expired += findings.expired.len() as u64;
        self.lost_acked_ms = findings.lost_unpromised_acked_ms;
        Ok(findings.keys)
    }

    /// Records the loss window of the fault at `fault_ms` (wall clock)
    /// from what the last [`Ctx::verify`] found: the acknowledged,
    /// unpromised writes lost and the span of their acknowledgements,
    /// the fault included. `None` when it lost none.
    pub fn loss_window(&mut self, fault_ms: u64) -> Option<(usize, Duration)> {
        let first = self.lost_acked_ms.iter().min()?.min(&fault_ms);
        let last = self.lost_acked_ms.iter().max()?.max(&fault_ms);
        let window = Duration::from_millis(last - first);
        self.stats.loss_windows.push(window);
        Some((self.lost_acked_ms.len(), window))
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> u64 {
        lock(&self.history).totals().acked
    }

    /// Records a recovery: its time and what the node replayed.
    pub fn recovered(&mut self, since: Instant, replayed: Option<u64>) -> Duration {
        let took = since.elapsed();
        self.stats.recovery.push(took);
        if let Some(n) = replayed {
            self.stats.replayed.push(n);
        }
        took
    }
}

/// One kill/restart cycle of a single-node scenario.
#[derive(Debug, Clone, Copy)]
pub enum Cycle {
    /// SIGKILL at a random moment.
    Kill,
    /// Run with `STRATA_CRASH_AT` set to this spec until it aborts.
    Crash(&'static str),
}

/// Runs `cycles` each round on one node with `--fsync fsync` (and a config
/// file holding `config`), verifying every write after each restart.
pub async fn single(
    ctx: &mut Ctx,
    fsync: &str,
    config: Option<&str>,
    cycles: &[Cycle],
) -> anyhow::Result<()> {
    let mut args = vec!["--fsync".to_string(), fsync.to_string()];
    if let Some(toml) = config {
        let path = ctx.dir.join("node.toml");
        std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
        args.extend(["--config".to_string(), path.display().to_string()]);
    }
    let mut node = Node::new("node", ctx.dir.join("node"), &ctx.bins, args, None);
    node.start(&[], None).await?;
    let workload = Workload::uniform(ctx.writers, None, Promise::Acked);
    for round in 0..ctx.rounds {
        for (part, cycle) in cycles.iter().enumerate() {
            let hits_before = node.crash_points_hit().len();
            let mut crashed_at = None;
            // Every recovery runs without crash points; a crash cycle
            // restarts the (idle) node with its point armed first. That
            // restart is not a drill kill.
            if let Cycle::Crash(spec) = cycle {
                node.kill();
                match node.start(&[], Some(spec)).await {
                    Ok(()) => {}
                    Err(HarnessError::Exited { .. })
                        if node.crash_points_hit().len() > hits_before =>
                    {
                        crashed_at = Some(Instant::now());
                    }
                    Err(e) => return Err(e.into()),
                }
                if crashed_at.is_none() && !node.crash_armed() {
                    bail!(
                        "STRATA_CRASH_AT={spec} set, but the node logged no \"crash point armed\""
                    );
                }
            }
            // A crash point may also fire before the drill's first ping.
            let mut client = None;
            if crashed_at.is_none() {
                match node.ready_client(PING_TIMEOUT).await {
                    Ok(c) => client = Some(c),
                    Err(_) if node.crash_points_hit().len() > hits_before && !node.is_running() => {
                        crashed_at = Some(Instant::now());
                    }
                    Err(e) => return Err(e),
                }
            }
            let what;
            let mut stopping = None;
            let killed_at = match client {
                None => {
                    what = "aborted during start-up".to_string();
                    ctx.stats.crash_point_aborts += 1;
                    crashed_at.unwrap_or_else(Instant::now)
                }
                Some(client) => {
                    let load = Load::start(
                        Target::Remote(client),
                        &workload,
                        ctx.history.clone(),
                        ctx.seed_for(round, part as u64),
                    );
                    let started = Instant::now();
                    let at = match cycle {
                        Cycle::Kill => {
                            tokio::time::sleep(ctx.kill_delay()).await;
                            what =
                                format!("SIGKILL after {:.2} s", started.elapsed().as_secs_f64());
                            node.kill()
                        }
                        Cycle::Crash(spec) => {
                            let limit = ctx.duration * 2 + Duration::from_secs(30);
                            match node.wait_exit(limit).await {
                                Some(_) if node.crash_points_hit().len() > hits_before => {
                                    let point =
                                        node.crash_points_hit().last().cloned().unwrap_or_default();
                                    what = format!(
                                        "aborted at {point} after {:.2} s",
                                        started.elapsed().as_secs_f64()
                                    );
                                    ctx.stats.crash_point_aborts += 1;
                                    Instant::now()
                                }
                                Some(status) => {
                                    ctx.violation(format!(
                                        "the node exited ({status}) without reaching a crash point; its log ends:\n{}",
                                        node.log_tail()
                                    ));
                                    what = format!("exited ({status})");
                                    Instant::now()
                                }
                                None => {
                                    ctx.note(format!("{spec} did not fire within {} s at least once; SIGKILLed instead", limit.as_secs()));
                                    what = "SIGKILL (crash point did not fire)".to_string();
                                    node.kill()
                                }
                            }
                        }
                    };
                    // The node restarts while the writers take in their last replies.
                    node.launch(&[], None)?;
                    stopping = Some(tokio::spawn(load.stop(GRACE_AFTER_KILL)));
                    at
                }
            };
            ctx.stats.kills += 1;
            if !node.is_running() {
                node.launch(&[], None)?;
            }
            if let Err(e) = node.wait_serving(crate::node::START_TIMEOUT).await {
                ctx.violation(format!("the node did not recover: {e}"));
                if let Some(stopping) = stopping {
                    let _ = stopping.await;
                }
                return Ok(());
            }
            let client = node.ready_client(PING_TIMEOUT).await?;
            let took = ctx.recovered(killed_at, node.replayed());
            if let Some(stopping) = stopping {
                stopping.await.context("stopping the writers")?;
            }
            let keys = ctx
                .verify(&Target::Remote(client.clone()), "the node")
                .await?;
            client.close().await;
            ctx.progress(format!(
                "round {}/{}: {what}; serving again in {} ms (replayed {} records); {} keys checked, {} writes acknowledged so far",
                round + 1,
                ctx.rounds,
                took.as_millis(),
                node.replayed().unwrap_or(0),
                keys,
                ctx.acked()
            ));
        }
    }
    node.kill();
    Ok(())
}

/// Runs the scenario `name`.
pub async fn run(name: &str, ctx: &mut Ctx) -> anyhow::Result<()> {
    const CHECKPOINT_TOML: &str = "[store]\nwal_segment_bytes = 16384\ncheckpoint_wal_bytes = 65536\ncheckpoint_interval_ms = 200\n";
    match name {
        "single-always" => single(ctx, "always", None, &[Cycle::Kill]).await,
        "single-interval" => single(ctx, "interval:1000", None, &[Cycle::Kill]).await,
        "single-never" => single(ctx, "never", None, &[Cycle::Kill]).await,
        "checkpoint" => {
            let cycles: &[Cycle] = if ctx.crash_points {
                &[
                    Cycle::Kill,
                    Cycle::Crash("checkpoint_after_flush@0.2"),
                    Cycle::Crash("wal_segment_removed@0.2"),
                ]
            } else {
                ctx.note("the server has no crash points (built without the failpoints feature): SIGKILLs only");
                &[Cycle::Kill]
            };
            single(ctx, "always", Some(CHECKPOINT_TOML), cycles).await
        }
        "crash-points" => {
            let cycles = [
                Cycle::Crash("wal_after_write_before_sync@0.002"),
                Cycle::Crash("commit_after_wal_before_disk@0.002"),
            ];
            single(ctx, "always", None, &cycles).await
        }
        "power-loss" => crate::power::run(ctx).await,
        "replica-kill" => crate::cluster::replica_kill(ctx).await,
        "failover-sync" => {
            let policy = strata::net::client::AckPolicy::Sync { timeout_ms: 2000 };
            crate::cluster::failover(ctx, policy).await
        }
        "failover-semi-sync" => {
            let policy = strata::net::client::AckPolicy::SemiSync {
                replicas: 1,
                timeout_ms: 2000,
                on_timeout: strata::net::client::OnTimeout::Degrade,
            };
            crate::cluster::failover(ctx, policy).await
        }
        "install-crash" => crate::cluster::install_crash(ctx).await,
        "shard-kill" => crate::sharded::shard_kill(ctx).await,
        "shard-partition" => crate::sharded::shard_partition(ctx).await,
        "leader-kill" => crate::sharded::leader_kill(ctx).await,
        "migration-kill" => crate::sharded::migration_kill(ctx).await,
        other => bail!("unknown scenario {other:?}"),
    }
}
