//! Failure detection and the choice of a shard's new primary, on the
//! metadata leader: a pure state machine of heartbeats and the committed
//! map, driven by the node (`node.rs`) and by seeded simulations here.
//!
//! ```text
//! every node --Report (heartbeat_ms)--> leader: Detector::observe
//!   reply: Lease { granted_ms } to the map's primaries, while the leader
//!          is confirmed by a quorum and the shard is not failing over
//! leader, each tick: Detector::failed(now) -> shards whose primary is
//!   silent for failover_timeout -> Detector::choose(shard, declared_at)
//!   -> SetPrimary committed (the epoch grows; replicas re-point)
//! ```
//!
//! Why a silent primary's writes have stopped before a replica is chosen:
//! its lease runs from when it *sent* the report that earned it and lasts
//! `lease_ms`; the leader fails it over only `failover_timeout_ms` after it
//! last *received* a report, and `failover_timeout_ms >= 2 * lease_ms`
//! leaves room for any real clock's drift. A new leader counts every node
//! as heard at its election, so a lease its predecessor granted also runs
//! out before it acts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::map::ClusterMap;
use super::ring::ShardId;
use crate::types::NodeId;

/// What a node tells the metadata leader, every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The reporting node (its certificate must name it).
    pub node: NodeId,
    /// The map version it routes by.
    pub map_version: u64,
    /// Whether its replication role is primary.
    pub primary: bool,
    /// Its history (`repl_id`) and that history's epoch.
    pub repl_id: [u8; 16],
    /// See `repl_id`.
    pub epoch: u64,
    /// The last seq its store applied.
    pub applied_seq: u64,
    /// Whether it is in a full sync (its data is not whole).
    pub full_sync: bool,
}

/// The leader's answer to a [`NodeReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReply {
    /// For the map's primary of a shard: how long, from when the report
    /// was sent, it may take writes. 0: no lease.
    pub granted_ms: u64,
    /// The leader's map version.
    pub map_version: u64,
}

/// Timing of detection and leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTiming {
    /// How often a node reports.
    pub heartbeat_ms: u64,
    /// How long a lease lasts.
    pub lease_ms: u64,
    /// Silence after which a primary is failed over.
    pub failover_timeout_ms: u64,
}

/// Why no replica can be promoted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// These replicas have not reported since the primary was declared
    /// failed: one of them may hold writes the others lack.
    Positions(Vec<NodeId>),
    /// No replica of the primary's history has its data whole.
    NoCandidate,
    /// A planned switchover: the primary's lease is running out.
    Fencing {
        /// Until the primary has surely stopped writing.
        left_ms: u64,
    },
    /// A planned switchover: the primary's final position is not known
    /// yet, or no candidate has caught up with it.
    CatchingUp {
        /// The primary's final applied seq, once heard.
        primary_seq: Option<u64>,
    },
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::Positions(nodes) => {
                let ids: Vec<String> = nodes.iter().map(|n| n.0.to_string()).collect();
                write!(
                    f,
                    "waiting for the positions of replica(s) {}: promoting without them could \
                     lose acknowledged writes",
                    ids.join(", ")
                )
            }
            Waiting::NoCandidate => write!(
                f,
                "no replica holds the failed primary's history with its data whole"
            ),
            Waiting::Fencing { left_ms } => write!(
                f,
                "switchover: waiting {left_ms} ms more for the primary's lease to run out"
            ),
            Waiting::CatchingUp { primary_seq: None } => {
                write!(f, "switchover: waiting for the primary's final position")
            }
            Waiting::CatchingUp {
                primary_seq: Some(seq),
            } => write!(
                f,
                "switchover: waiting for a replica to catch up with the primary's seq {seq}"
            ),
        }
    }
}

/// The candidate of an unclean promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unclean {
    /// The replica to promote.
    pub node: NodeId,
    /// Records the failed primary had applied, at its last report, that
    /// this replica lacks (`None`: the primary was never heard). Writes
    /// after that report may be lost too.
    pub behind: Option<u64>,
}

/// A report as the leader keeps it.
#[derive(Debug, Clone)]
struct Heard {
    at_ms: u64,
    report: NodeReport,
}

/// A shard whose primary was declared failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    /// The failed primary.
    pub primary: NodeId,
    /// When it was declared failed: positions reported after this are final.
    pub declared_ms: u64,
    /// A promotion is being committed: no lease, no change of mind.
    pub committing: bool,
    /// A switchover an operator asked for (the primary is alive), to this
    /// replica or the best one: `Some(to)`.
    pub planned: Option<Option<NodeId>>,
}

/// The leader's view of the nodes' heartbeats.
#[derive(Debug, Clone)]
pub struct Detector {
    timing: HealthTiming,
    heard: BTreeMap<NodeId, Heard>,
    /// When this leadership began: nobody is failed before
    /// `failover_timeout_ms` after it.
    since_ms: u64,
    /// The last history each primary reported, kept across its silence.
    primary_history: BTreeMap<NodeId, [u8; 16]>,
    failing: BTreeMap<ShardId, Failover>,
}

impl Detector {
    /// A detector for a leadership that began at `now_ms`.
    pub fn new(timing: HealthTiming, now_ms: u64) -> Detector {
        Detector {
            timing,
            heard: BTreeMap::new(),
            since_ms: now_ms,
            primary_history: BTreeMap::new(),
            failing: BTreeMap::new(),
        }
    }

    /// The timing it runs by.
    pub fn timing(&self) -> HealthTiming {
        self.timing
    }

    /// Notes a report received at `now_ms`. A failed primary heard again
    /// before its replacement is being committed keeps its shard: nothing
    /// was decided yet.
    pub fn observe(&mut self, now_ms: u64, report: NodeReport) {
        if report.primary && !report.full_sync {
            self.primary_history.insert(report.node, report.repl_id);
        }
        self.failing
            .retain(|_, f| f.committing || f.planned.is_some() || f.primary != report.node);
        self.heard.insert(
            report.node,
            Heard {
                at_ms: now_ms,
                report,
            },
        );
    }

    /// How long ago `node` was last heard (from the leadership's start if
    /// never).
    pub fn silence_ms(&self, node: NodeId, now_ms: u64) -> u64 {
        let at = self.heard.get(&node).map_or(self.since_ms, |h| h.at_ms);
        now_ms.saturating_sub(at.max(self.since_ms))
    }

    /// The last report of `node`, and how long ago it came.
    pub fn last_report(&self, node: NodeId, now_ms: u64) -> Option<(&NodeReport, u64)> {
        let heard = self.heard.get(&node)?;
        Some((&heard.report, now_ms.saturating_sub(heard.at_ms)))
    }

    /// The shards failing over.
    pub fn failing(&self) -> &BTreeMap<ShardId, Failover> {
        &self.failing
    }

    /// One pass at `now_ms`: shards whose primary has been silent for the
    /// failover timeout are declared failed (as of last heard + timeout);
    /// failovers the map has carried out, or that no longer apply, end.
    /// Returns, for each shard failing over and not being committed, the
    /// replica to promote or why there is none yet.
    pub fn tick(
        &mut self,
        map: &ClusterMap,
        now_ms: u64,
    ) -> Vec<(ShardId, Result<NodeId, Waiting>)> {
        self.failing.retain(|id, f| {
            map.shards()
                .get(id)
                .is_some_and(|s| s.primary == f.primary && !s.replicas.is_empty())
        });
        let timeout = self.timing.failover_timeout_ms;
        for (id, s) in map.shards() {
            let silence = self.silence_ms(s.primary, now_ms);
            if s.replicas.is_empty() || silence < timeout || self.failing.contains_key(id) {
                continue;
            }
            self.failing.insert(
                *id,
                Failover {
                    primary: s.primary,
                    declared_ms: now_ms - silence + timeout,
                    committing: false,
                    planned: None,
                },
            );
        }
        self.failing
            .iter()
            .filter(|(_, f)| !f.committing)
            .map(|(id, f)| {
                let choice = match f.planned {
                    Some(to) => self.choose_planned(map, *id, f, to, now_ms),
                    None => self.choose(map, *id, f.declared_ms),
                };
                (*id, choice)
            })
            .collect()
    }

    /// Starts a switchover of `shard` to `to` (or its best replica): no
    /// lease from now on, so the primary stops writing within twice a
    /// lease; then the replica that has caught up with the primary's final
    /// position is promoted (zero loss). Refused for an unknown shard, one
    /// without replicas or failing over already, or a `to` not a replica.
    ///
    /// # Errors
    ///
    /// Why it cannot start.
    pub fn plan(
        &mut self,
        map: &ClusterMap,
        shard: ShardId,
        to: Option<NodeId>,
        now_ms: u64,
    ) -> Result<(), String> {
        let info = map
            .shards()
            .get(&shard)
            .ok_or_else(|| format!("no shard {shard} in the map"))?;
        if info.replicas.is_empty() {
            return Err(format!("shard {shard} has no replica to switch to"));
        }
        if let Some(to) = to
            && !info.replicas.contains(&to)
        {
            return Err(format!("node {} is not a replica of shard {shard}", to.0));
        }
        if self.failing.contains_key(&shard) {
            return Err(format!("shard {shard} is failing over already"));
        }
        self.failing.insert(
            shard,
            Failover {
                primary: info.primary,
                declared_ms: now_ms + 2 * self.timing.lease_ms,
                committing: false,
                planned: Some(to),
            },
        );
        Ok(())
    }

    /// For a shard failing over that cannot promote cleanly (a replica
    /// stays silent): the replica of the failed primary's history that
    /// reported after the declaration with the highest applied seq (`to`,
    /// if given), and how far it is behind the primary's last report. With
    /// `mark`, the shard is marked as being committed: the caller commits.
    ///
    /// # Errors
    ///
    /// Why there is no candidate.
    pub fn unclean(
        &mut self,
        map: &ClusterMap,
        shard: ShardId,
        to: Option<NodeId>,
        mark: bool,
    ) -> Result<Unclean, String> {
        let f = *self.failing.get(&shard).ok_or_else(|| {
            format!(
                "shard {shard}'s primary has not failed: an unclean promotion is for a dead primary"
            )
        })?;
        if f.committing || f.planned.is_some() {
            return Err(format!("shard {shard} is being switched over already"));
        }
        let info = map
            .shards()
            .get(&shard)
            .ok_or_else(|| format!("no shard {shard}"))?;
        let last = self.heard.get(&f.primary).map(|h| &h.report);
        let candidate = info
            .replicas
            .iter()
            .filter(|r| to.is_none_or(|t| t == **r))
            .filter_map(|r| self.heard.get(r).filter(|h| h.at_ms > f.declared_ms))
            .map(|h| &h.report)
            .filter(|r| !r.full_sync && last.is_none_or(|l| l.repl_id == r.repl_id))
            .max_by_key(|r| (r.applied_seq, std::cmp::Reverse(r.node)))
            .ok_or_else(|| {
                format!(
                    "no replica of shard {shard} has reported its position since its primary failed"
                )
            })?;
        let unclean = Unclean {
            node: candidate.node,
            behind: last.map(|l| l.applied_seq.saturating_sub(candidate.applied_seq)),
        };
        if mark {
            self.committing(shard, true);
        }
        Ok(unclean)
    }

    /// Gives up a switchover not being committed: the primary gets its
    /// lease again.
    pub fn cancel(&mut self, shard: ShardId) {
        self.failing
            .retain(|id, f| *id != shard || f.committing || f.planned.is_none());
    }

    /// A switchover's candidate: once the primary's lease has run out, a
    /// replica (`to`, or any) of its history whose applied seq reached the
    /// primary's final one. A primary that went silent meanwhile is failed
    /// over as any other.
    fn choose_planned(
        &self,
        map: &ClusterMap,
        shard: ShardId,
        f: &Failover,
        to: Option<NodeId>,
        now_ms: u64,
    ) -> Result<NodeId, Waiting> {
        if now_ms <= f.declared_ms {
            return Err(Waiting::Fencing {
                left_ms: f.declared_ms - now_ms,
            });
        }
        let fresh = |n: &NodeId| {
            self.heard
                .get(n)
                .filter(|h| h.at_ms > f.declared_ms)
                .map(|h| &h.report)
        };
        let Some(last) = fresh(&f.primary) else {
            if self.silence_ms(f.primary, now_ms) >= self.timing.failover_timeout_ms {
                return self.choose(map, shard, f.declared_ms);
            }
            return Err(Waiting::CatchingUp { primary_seq: None });
        };
        let info = map.shards().get(&shard).ok_or(Waiting::NoCandidate)?;
        info.replicas
            .iter()
            .filter(|r| to.is_none_or(|t| t == **r))
            .filter_map(fresh)
            .filter(|r| !r.full_sync && r.repl_id == last.repl_id)
            .filter(|r| r.applied_seq >= last.applied_seq)
            .max_by_key(|r| (r.applied_seq, std::cmp::Reverse(r.node)))
            .map(|r| r.node)
            .ok_or(Waiting::CatchingUp {
                primary_seq: Some(last.applied_seq),
            })
    }

    /// Marks `shard`'s promotion as being committed (`true`) or, after a
    /// commit that failed, as open again (`false`).
    pub fn committing(&mut self, shard: ShardId, committing: bool) {
        if let Some(f) = self.failing.get_mut(&shard) {
            f.committing = committing;
        }
    }

    /// The replica of `shard` to promote in place of its failed primary,
    /// declared failed at `declared_ms`: the one with the highest applied
    /// seq of the primary's history, once every member of the shard's
    /// in-sync set has reported after `declared_ms` (any of them may have
    /// acknowledged the last writes, and only their acks counted). Never
    /// one outside the set, in a full sync or of another history. With an
    /// empty set (none has joined, or all have left, which a member holding
    /// writes nobody else has never does alone) every replica must report,
    /// and the furthest is chosen.
    fn choose(
        &self,
        map: &ClusterMap,
        shard: ShardId,
        declared_ms: u64,
    ) -> Result<NodeId, Waiting> {
        let Some(info) = map.shards().get(&shard) else {
            return Err(Waiting::NoCandidate);
        };
        let fresh = |r: &NodeId| {
            self.heard
                .get(r)
                .filter(|h| h.at_ms > declared_ms)
                .map(|h| &h.report)
        };
        let members = if info.in_sync.is_empty() {
            &info.replicas
        } else {
            &info.in_sync
        };
        let silent: Vec<NodeId> = members
            .iter()
            .filter(|r| fresh(r).is_none())
            .copied()
            .collect();
        if !silent.is_empty() {
            return Err(Waiting::Positions(silent));
        }
        let whole: Vec<&NodeReport> = members
            .iter()
            .filter_map(fresh)
            .filter(|r| !r.full_sync)
            .collect();
        // The primary's last history, else the one its replicas agree on.
        let history = match self.primary_history.get(&info.primary) {
            Some(h) => *h,
            None => {
                let mut histories = whole.iter().map(|r| r.repl_id);
                let first = histories.next().ok_or(Waiting::NoCandidate)?;
                if histories.any(|h| h != first) {
                    return Err(Waiting::NoCandidate);
                }
                first
            }
        };
        whole
            .iter()
            .filter(|r| r.repl_id == history)
            .max_by_key(|r| (r.epoch, r.applied_seq, std::cmp::Reverse(r.node)))
            .map(|r| r.node)
            .ok_or(Waiting::NoCandidate)
    }

    /// Whether `node` may hold a lease now: it is the map's primary of its
    /// shard, and that shard is not failing over.
    pub fn may_lease(&self, map: &ClusterMap, node: NodeId) -> bool {
        let Some(me) = map.nodes().get(&node) else {
            return false;
        };
        map.shards()
            .get(&me.shard)
            .is_some_and(|s| s.primary == node)
            && !self.failing.contains_key(&me.shard)
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
