//! Heartbeats, write leases and automatic failover on a cluster member
//! (the state machine they drive is [`super::health`]).
//!
//! ```text
//! every node:  heartbeat_loop --Report--> leader --Lease--> lease_until
//!              check_primary: writes only while lease_until is ahead
//! the leader:  answer_reports: Detector::observe, lease if may_lease and
//!                              a quorum confirms the leadership
//!              failover_loop:  Detector::tick -> commit SetPrimary
//! ```

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::health::{Detector, HealthTiming, LeaseReply, NodeReport, Waiting};
use super::map::MapCommand;
use super::node::ClusterNode;
use super::raft::{MetaGroup, MetaRole, ReportCall};
use super::ring::ShardId;
use crate::sync::lock;
use crate::types::NodeId;

/// This node's lease and, while it leads, its detector.
#[derive(Debug)]
pub struct Health {
    timing: HealthTiming,
    /// Whether the leader promotes replicas of failed primaries by itself.
    automatic: bool,
    /// When the monotonic clock of `now_ms` started.
    epoch: Instant,
    lease: Mutex<Lease>,
    /// The detector of the leadership of this term, if this node leads.
    leading: Mutex<Option<(u64, Detector)>>,
    failovers: Mutex<FailoverLog>,
}

/// This node's write lease.
#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    /// Writes are taken until then.
    until: Option<Instant>,
    /// When the last heartbeat was answered.
    renewed: Option<Instant>,
}

/// What the failovers this node carried out as leader were.
#[derive(Debug, Default, Clone)]
pub struct FailoverLog {
    /// Promotions committed.
    pub count: u64,
    /// The last one: shard, promoted node, why.
    pub last: Option<String>,
    /// Why a failing shard has no new primary yet.
    pub waiting: Option<String>,
}

impl Health {
    /// Health with `timing`; `automatic` lets the leader promote by itself.
    pub fn new(timing: HealthTiming, automatic: bool) -> Health {
        Health {
            timing,
            automatic,
            epoch: Instant::now(),
            lease: Mutex::new(Lease::default()),
            leading: Mutex::new(None),
            failovers: Mutex::new(FailoverLog::default()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `Ok` while this node holds a write lease; otherwise how long ago
    /// it was last renewed (`None`: never).
    pub fn lease_held(&self) -> Result<(), Option<Duration>> {
        let lease = *lock(&self.lease);
        match lease.until {
            Some(until) if Instant::now() < until => Ok(()),
            _ => Err(lease.renewed.map(|at| at.elapsed())),
        }
    }

    /// Time left on the lease, in ms (0 without one).
    pub fn lease_left_ms(&self) -> u64 {
        let until = lock(&self.lease).until;
        until.map_or(0, |u| {
            u64::try_from(u.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(0)
        })
    }

    /// The failovers carried out here.
    pub fn failovers(&self) -> FailoverLog {
        lock(&self.failovers).clone()
    }

    /// The timing.
    pub fn timing(&self) -> HealthTiming {
        self.timing
    }

    /// Starts a switchover of `shard` (see [`Detector::plan`]); `None` when
    /// this node does not lead.
    pub fn plan(
        &self,
        group: &MetaGroup,
        map: &super::map::ClusterMap,
        shard: ShardId,
        to: Option<NodeId>,
    ) -> Option<Result<(), String>> {
        let now = self.now_ms();
        self.with_detector(group, |d| d.plan(map, shard, to, now))
    }

    /// On the leader: how long ago each of `nodes` was last heard, in ms.
    pub fn heartbeat_ages(&self, group: &MetaGroup, nodes: &[NodeId]) -> Option<Vec<u64>> {
        let now = self.now_ms();
        self.with_detector(group, |d| {
            nodes.iter().map(|n| d.silence_ms(*n, now)).collect()
        })
    }

    /// An unclean promotion's candidate for a failing `shard` (see
    /// [`Detector::unclean`]); `None` when this node does not lead.
    pub fn unclean(
        &self,
        group: &MetaGroup,
        map: &super::map::ClusterMap,
        shard: ShardId,
        to: Option<NodeId>,
        mark: bool,
    ) -> Option<Result<super::health::Unclean, String>> {
        self.with_detector(group, |d| d.unclean(map, shard, to, mark))
    }

    /// Gives up a switchover that is not being committed.
    pub fn cancel(&self, group: &MetaGroup, shard: ShardId) {
        self.with_detector(group, |d| d.cancel(shard));
    }

    /// The detector for the current leadership, made anew for a new term;
    /// `None` when not leading.
    fn with_detector<T>(&self, group: &MetaGroup, f: impl FnOnce(&mut Detector) -> T) -> Option<T> {
        let status = group.status();
        let mut leading = lock(&self.leading);
        if status.role != MetaRole::Leader {
            *leading = None;
            return None;
        }
        if leading
            .as_ref()
            .is_none_or(|(term, _)| *term != status.term)
        {
            *leading = Some((status.term, Detector::new(self.timing, self.now_ms())));
        }
        leading.as_mut().map(|(_, d)| f(d))
    }
}

/// Sends this node's heartbeat every `heartbeat_ms` and keeps its lease,
/// until the node goes.
pub async fn heartbeat_loop(node: Weak<ClusterNode>) {
    loop {
        let Some(strong) = node.upgrade() else {
            return;
        };
        let health = strong.health().clone();
        let every = Duration::from_millis(health.timing.heartbeat_ms);
        let report = strong.report();
        let sent = Instant::now();
        let answer = strong.group().report(report, every * 2).await;
        drop(strong);
        match answer {
            Ok(LeaseReply { granted_ms, .. }) => {
                let mut lease = lock(&health.lease);
                lease.renewed = Some(Instant::now());
                if granted_ms > 0 {
                    let until = sent + Duration::from_millis(granted_ms);
                    lease.until = Some(lease.until.map_or(until, |u| u.max(until)));
                } else {
                    // Not (or no longer) the map's primary: whatever is
                    // left is given up, so a deposed node stops at once.
                    lease.until = None;
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat not answered"),
        }
        tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
    }
}

/// Answers the heartbeats this node receives (it answers only while it
/// leads), until the node goes.
pub async fn answer_reports(node: Weak<ClusterNode>, mut calls: mpsc::Receiver<ReportCall>) {
    while let Some(call) = calls.recv().await {
        let Some(strong) = node.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let lease = answer(&strong, call.report).await;
            // The sender may have given up waiting; nothing to do then.
            let _ = call.reply.send(lease);
        });
    }
}

async fn answer(node: &ClusterNode, report: NodeReport) -> LeaseReply {
    let health = node.health();
    let map = node.map();
    let reporter = report.node;
    let may = health.with_detector(node.group(), |d| {
        d.observe(health.now_ms(), report);
        d.may_lease(&map, reporter)
    });
    let quorum = Duration::from_millis(health.timing.heartbeat_ms * 2);
    let granted = may == Some(true) && node.group().confirm_leadership(quorum).await;
    LeaseReply {
        granted_ms: if granted { health.timing.lease_ms } else { 0 },
        map_version: map.version(),
    }
}

/// On the leader, every heartbeat: shards whose primary failed get the
/// replica the detector chooses, committed as their new primary.
pub async fn failover_loop(node: Weak<ClusterNode>) {
    loop {
        let Some(strong) = node.upgrade() else {
            return;
        };
        let every = Duration::from_millis(strong.health().timing.heartbeat_ms);
        failover_pass(&strong).await;
        drop(strong);
        tokio::time::sleep(every).await;
    }
}

async fn failover_pass(node: &ClusterNode) {
    let health = node.health();
    let map = node.map();
    let now = health.now_ms();
    let Some(decisions) = health.with_detector(node.group(), |d| {
        let decisions = d.tick(&map, now);
        // Without automatic failover only the switchovers asked for act.
        let planned = |shard: &ShardId| d.failing().get(shard).is_some_and(|f| f.planned.is_some());
        decisions
            .into_iter()
            .filter(|(shard, _)| health.automatic || planned(shard))
            .map(|(shard, decision)| (shard, decision, planned(&shard)))
            .collect::<Vec<_>>()
    }) else {
        return;
    };
    if decisions.is_empty() {
        lock(&health.failovers).waiting = None;
    }
    for (shard, decision, planned) in decisions {
        match decision {
            Ok(replica) => {
                let cause = if planned {
                    "switchover asked for".to_string()
                } else {
                    format!(
                        "primary silent for {} ms",
                        health.timing.failover_timeout_ms
                    )
                };
                promote(node, shard, replica, &cause).await;
            }
            Err(waiting) => note_waiting(health, shard, &waiting),
        }
    }
}

fn note_waiting(health: &Health, shard: ShardId, waiting: &Waiting) {
    let text = format!("shard {shard}: its primary failed; {waiting}");
    let mut log = lock(&health.failovers);
    if log.waiting.as_deref() != Some(text.as_str()) {
        warn!("{text}");
        log.waiting = Some(text);
    }
}

/// Commits `replica` as `shard`'s primary, for `cause` (logged and kept);
/// a commit that fails leaves the shard to the next pass.
pub(crate) async fn promote(node: &ClusterNode, shard: ShardId, replica: NodeId, cause: &str) {
    let health = node.health();
    let mark = |on: bool| {
        health.with_detector(node.group(), |d| d.committing(shard, on));
    };
    mark(true);
    let cmd = MapCommand::SetPrimary {
        shard,
        node: replica,
    };
    let within = Duration::from_millis(health.timing.failover_timeout_ms);
    match tokio::time::timeout(within, node.group().propose(cmd)).await {
        Ok(Ok(version)) => {
            let why = format!(
                "shard {shard}: {cause}; node {} promoted (map version {version})",
                replica.0
            );
            info!("{why}");
            let mut log = lock(&health.failovers);
            log.count += 1;
            log.last = Some(why);
            log.waiting = None;
        }
        Ok(Err(e)) => {
            warn!(shard = shard.0, error = %e, "failover not committed; trying again");
            mark(false);
        }
        Err(_) => {
            warn!(shard = shard.0, "failover commit timed out; trying again");
            mark(false);
        }
    }
}
