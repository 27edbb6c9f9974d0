//! A node as a cluster member: its member of the metadata group, the
//! committed map it routes by, and the loop that makes the node what the
//! map says (DESIGN C2: it acts only on committed entries).
//!
//! ```text
//! links (ALPN strata-raft/5, accepted by replication) -> MetaGroup
//! MetaGroup.map() --watch--> ClusterNode::check_keys   (WrongShard)
//!                       \--> reconcile: follow my shard's primary
//!                                       leader: every map node a member,
//!                                               up to 5 of them voters
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::failover::{self, Health};
use super::health::{HealthTiming, NodeReport};
use super::map::{ClusterMap, MapCommand};
use super::migrate::Migrations;
use super::raft::{GatewayAddr, META_ALPN, MetaConfig, MetaError, MetaGroup, MetaRole, MetaTiming};
use super::slot::{Slot, SlotSet, key_slot};
use crate::net::link::Link;
use crate::proto::{ClusterMapReply, ClusterNode as WireNode, ClusterShard, ErrorCode, ErrorReply};
use crate::repl::Replication;
use crate::types::NodeId;

/// How often the reconciler looks again without a map change (a peer that
/// was down, a leadership that moved).
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// Bound on one commit through the metadata group (a proposal, a
/// membership change): a leader that lost its quorum must not hold the
/// caller, or the reconcile loop, forever.
const GROUP_CALL_WITHIN: Duration = Duration::from_secs(10);

/// How long a switchover waits, once the primary's lease ran out, for a
/// replica to catch up with it before it is called off.
const SWITCHOVER_CATCH_UP: Duration = Duration::from_secs(30);

/// The `[cluster]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Run as a cluster member: the metadata group on the replication
    /// listener, keyed requests checked against the committed map, and
    /// replication set up as the map says.
    pub enabled: bool,
    /// `host:port` where other nodes reach this node's replication
    /// listener; default its bound address (which then must not be an
    /// unspecified address such as 0.0.0.0).
    pub advertise_link: Option<String>,
    /// `host:port` where clients reach this node; default the client
    /// listener's bound address, under the same rule.
    pub advertise_client: Option<String>,
    /// `host:port` where Redis clients reach this node's RESP gateway (what
    /// other gateways name in `-MOVED` and `CLUSTER SLOTS`); default
    /// `resp.listen`'s bound address, under the same rule.
    pub advertise_resp: Option<String>,
    /// How often a node sends its heartbeat to the metadata leader.
    pub heartbeat_ms: u64,
    /// How long a shard primary may take writes after a heartbeat the
    /// leader answered; at least 2 × `heartbeat_ms`.
    pub lease_ms: u64,
    /// A shard primary silent this long is failed over; at least
    /// 2 × `lease_ms`, so its lease has surely run out by then whatever
    /// the clocks' drift.
    pub failover_timeout_ms: u64,
    /// Whether the metadata leader promotes a failed primary's replica by
    /// itself (else an operator runs `strata-admin cluster failover`).
    pub auto_failover: bool,
    /// A replica that has not received what its primary had this long ago,
    /// or was away this long, leaves the shard's in-sync set: writes stop
    /// waiting for it once that is committed.
    pub in_sync_lag_ms: u64,
    /// Bytes per second a shard's primary sends of the keys moving to
    /// another shard (a migration's copy), so serving goes on; 0 for no
    /// bound.
    pub migration_bytes_per_sec: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            advertise_link: None,
            advertise_client: None,
            advertise_resp: None,
            heartbeat_ms: 500,
            lease_ms: 2000,
            failover_timeout_ms: 5000,
            auto_failover: true,
            in_sync_lag_ms: 1000,
            migration_bytes_per_sec: 64 << 20,
        }
    }
}

impl ClusterConfig {
    /// Checks the section against the replication settings it needs.
    ///
    /// # Errors
    ///
    /// The field at fault and why.
    pub fn validate(&self, repl: &crate::repl::ReplConfig) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if repl.listen.is_none() || repl.tls.is_none() {
            return Err((
                "cluster.enabled",
                "a cluster member needs replication.listen and replication.tls: the \
                 metadata group speaks over the node links"
                    .into(),
            ));
        }
        if repl.replica_of.is_some() {
            return Err((
                "replication.replica_of",
                "in a cluster the map says whom a node follows; drop replica_of".into(),
            ));
        }
        if !(50..=60_000).contains(&self.heartbeat_ms) {
            return Err(("cluster.heartbeat_ms", "must be within 50..=60000".into()));
        }
        if self.lease_ms < 2 * self.heartbeat_ms {
            return Err((
                "cluster.lease_ms",
                format!(
                    "must be at least 2 x heartbeat_ms ({}), so one lost heartbeat does not \
                     stop writes",
                    2 * self.heartbeat_ms
                ),
            ));
        }
        if !(200..=600_000).contains(&self.in_sync_lag_ms) {
            return Err((
                "cluster.in_sync_lag_ms",
                "must be within 200..=600000".into(),
            ));
        }
        if self.failover_timeout_ms < 2 * self.lease_ms {
            return Err((
                "cluster.failover_timeout_ms",
                format!(
                    "must be at least 2 x lease_ms ({}): a failed primary's lease must have \
                     run out before a replica replaces it",
                    2 * self.lease_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// An address to advertise is missing or unusable.
    #[error("cluster: {0}")]
    Config(String),
    /// The metadata group did not start.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// This node's part in the cluster.
pub struct ClusterNode {
    id: NodeId,
    /// The node's name, from its cluster certificate.
    name: String,
    /// Where clients reach it, as advertised.
    client_addr: String,
    group: Arc<MetaGroup>,
    repl: Arc<Replication>,
    link_addr: String,
    health: Arc<Health>,
    in_sync_lag_ms: u64,
    migrations: Arc<Migrations>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id)
            .field("link_addr", &self.link_addr)
            .finish_non_exhaustive()
    }
}

/// The address to tell others: the configured one, else the bound one if
/// it names a host.
fn advertised(
    configured: &Option<String>,
    bound: SocketAddr,
    what: &str,
) -> Result<String, ClusterError> {
    match configured {
        Some(addr) => Ok(addr.clone()),
        None if bound.ip().is_unspecified() => Err(ClusterError::Config(format!(
            "the {what} listener is bound to {bound}, which other nodes cannot dial; \
             set cluster.advertise_{what}"
        ))),
        None => Ok(bound.to_string()),
    }
}

impl ClusterNode {
    /// Starts this node's member of the metadata group on `repl`'s link
    /// endpoint, fed by `links` (from [`Replication::accept_protocol`] of
    /// [`META_ALPN`], taken before replication started), and the loop that
    /// follows the map. `link` and `client` are the bound addresses.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] for an address others cannot dial;
    /// [`ClusterError::Meta`] when the group's storage does not open.
    pub async fn start(
        cfg: &ClusterConfig,
        client_addr: String,
        data_dir: &Path,
        repl: Arc<Replication>,
        links: LinkProtocols,
        link: SocketAddr,
    ) -> Result<Arc<ClusterNode>, ClusterError> {
        let LinkProtocols {
            meta: mut links,
            moves,
        } = links;
        let link_addr = advertised(&cfg.advertise_link, link, "link")?;
        let endpoint = repl
            .link_endpoint()
            .ok_or_else(|| ClusterError::Config("replication has no listener".into()))?;
        let name = endpoint.identity().name().to_string();
        let config = MetaConfig::new(data_dir.to_path_buf(), link_addr.clone(), endpoint)
            .with_inbound(super::raft::Inbound::Dispatched)
            .with_timing(MetaTiming::default());
        let group = Arc::new(MetaGroup::start(config).await?);
        let id = group.id();
        let serving = group.clone();
        tokio::spawn(async move {
            while let Some(link) = links.recv().await {
                serving.serve_link(link);
            }
        });
        let timing = HealthTiming {
            heartbeat_ms: cfg.heartbeat_ms,
            lease_ms: cfg.lease_ms,
            failover_timeout_ms: cfg.failover_timeout_ms,
        };
        let reports = group.take_reports();
        let node = Arc::new(ClusterNode {
            id,
            name,
            client_addr,
            group,
            repl,
            link_addr,
            health: Arc::new(Health::new(timing, cfg.auto_failover)),
            in_sync_lag_ms: cfg.in_sync_lag_ms,
            migrations: Arc::new(Migrations::new(cfg.migration_bytes_per_sec)),
        });
        tokio::spawn(super::migrate::serve_exports(Arc::downgrade(&node), moves));
        tokio::spawn(super::migrate::migration_loop(Arc::downgrade(&node)));
        tokio::spawn(super::in_sync::in_sync_loop(Arc::downgrade(&node)));
        tokio::spawn(reconcile_loop(Arc::downgrade(&node)));
        tokio::spawn(failover::heartbeat_loop(Arc::downgrade(&node)));
        tokio::spawn(failover::failover_loop(Arc::downgrade(&node)));
        if let Some(calls) = reports {
            tokio::spawn(failover::answer_reports(Arc::downgrade(&node), calls));
        }
        info!(node = id.0, link = %node.link_addr, "cluster member started");
        Ok(node)
    }

    /// The client address to advertise for this node (see [`ClusterConfig`]).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] for an unspecified bound address.
    pub fn client_addr(cfg: &ClusterConfig, bound: SocketAddr) -> Result<String, ClusterError> {
        advertised(&cfg.advertise_client, bound, "client")
    }

    /// The RESP gateway address to advertise for this node.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] for an unspecified bound address.
    pub fn resp_addr(cfg: &ClusterConfig, bound: SocketAddr) -> Result<String, ClusterError> {
        advertised(&cfg.advertise_resp, bound, "resp")
    }

    /// Keeps this node's RESP gateway address in the committed map, `addr`
    /// or none, from now on (a node that restarts without its gateway
    /// takes it out).
    pub fn announce_gateway(self: &Arc<Self>, addr: Option<String>) {
        tokio::spawn(gateway_loop(Arc::downgrade(self), addr.unwrap_or_default()));
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its replication.
    pub fn repl(&self) -> &Arc<Replication> {
        &self.repl
    }

    /// Its lease and failure detection.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Its member of the metadata group.
    pub fn group(&self) -> &MetaGroup {
        &self.group
    }

    /// Its slot migrations.
    pub fn migrations(&self) -> &Arc<Migrations> {
        &self.migrations
    }

    /// Its name, from its cluster certificate.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its heartbeat: what the leader detects failures and chooses new
    /// primaries by.
    pub fn report(&self) -> NodeReport {
        let meta = self.repl.meta();
        NodeReport {
            node: self.id,
            map_version: self.map().version(),
            primary: self.repl.is_primary(),
            repl_id: meta.repl_id.0,
            epoch: meta.epoch.0,
            applied_seq: self.repl.store().applied_seq().0,
            full_sync: !self.repl.serves_reads(),
        }
    }

    /// The committed map as this node last applied it.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.group.map().borrow().clone()
    }

    /// Checks that every key belongs to this node's shard in the committed
    /// map: `WrongShard` naming the owner's primary otherwise, and
    /// `Unavailable` while the map has no shards or does not list this
    /// node, or for a slot of a migration that is cutting over.
    ///
    /// A write takes [`Migrations::gate`] first and holds it until it is
    /// applied: a migration's fence waits for the writes that checked an
    /// older map.
    ///
    /// # Errors
    ///
    /// The reply to send instead of serving the request.
    pub fn check_keys<'a>(
        &self,
        mut keys: impl Iterator<Item = &'a [u8]>,
        write: bool,
    ) -> Result<(), ErrorReply> {
        let map = &*self.map();
        let (Some(table), Some(me)) = (map.slot_table(), map.nodes().get(&self.id)) else {
            return Err(not_placed());
        };
        // Reads wait out a cutover too: the old owner cannot know when the
        // new one starts taking writes, and must not serve a value older
        // than one already acknowledged there.
        let mut moving = None;
        let foreign = keys.find(|key| {
            let slot = key_slot(key);
            if moving.is_none() {
                moving = super::migrate::fenced(map, slot);
            }
            table.owner(slot) != me.shard
        });
        let Some(key) = foreign else {
            if let Some(reply) = moving {
                return Err(reply);
            }
            return if write {
                self.check_primary(map, me.shard)
            } else {
                Ok(())
            };
        };
        let slot = key_slot(key);
        let owner = table.owner(slot);
        let primary = map
            .shards()
            .get(&owner)
            .and_then(|shard| map.nodes().get(&shard.primary));
        let mut reply = ErrorReply::new(
            ErrorCode::WrongShard,
            format!(
                "slot {} belongs to shard {} (cluster map version {}){}",
                slot.get(),
                owner.0,
                map.version(),
                primary.map_or(String::new(), |p| format!(", primary {}", p.client_addr)),
            ),
        );
        reply.leader_hint = primary.map(|p| p.client_addr.clone());
        Err(reply)
    }

    /// The slots a scan on this node lists: its shard's in the committed
    /// map, so keys half imported, or moved away and not yet swept, stay
    /// hidden.
    ///
    /// # Errors
    ///
    /// `Unavailable` while the map does not list this node in a shard, or
    /// while one of its slots is cutting over (a page could list a key the
    /// new owner has since deleted).
    pub fn scan_slots(&self) -> Result<SlotSet, ErrorReply> {
        let map = &*self.map();
        let (Some(table), Some(me)) = (map.slot_table(), map.nodes().get(&self.id)) else {
            return Err(not_placed());
        };
        let mine: SlotSet = Slot::all()
            .filter(|&s| table.owner(s) == me.shard)
            .collect();
        let cutting_over = Slot::all()
            .filter(|&s| mine.contains(s))
            .find_map(|s| super::migrate::fenced(map, s));
        match cutting_over {
            Some(reply) => Err(reply),
            None => Ok(mine),
        }
    }

    /// A write is taken only by the node the committed map names its
    /// shard's primary, whatever its replication role says: a node that
    /// restarted (every node starts as a primary) or was deposed sends the
    /// writer to the map's primary.
    fn check_primary(
        &self,
        map: &ClusterMap,
        shard: super::ring::ShardId,
    ) -> Result<(), ErrorReply> {
        let Some(info) = map.shards().get(&shard) else {
            return Ok(());
        };
        if info.primary == self.id {
            return self.check_lease();
        }
        let primary = map
            .nodes()
            .get(&info.primary)
            .map(|p| p.client_addr.clone());
        let mut reply = ErrorReply::new(
            ErrorCode::ReadOnlyReplica,
            format!(
                "the cluster map (version {}) makes this node a replica of shard {}{}",
                map.version(),
                shard.0,
                primary
                    .as_ref()
                    .map_or(String::new(), |p| format!("; write to its primary at {p}")),
            ),
        );
        reply.leader_hint = primary;
        Err(reply)
    }

    /// Whether this node may write its shard's keys now: the committed map
    /// names it its shard's primary, it holds its lease, and no migration
    /// is moving slots (whose keys the migration copies and sweeps).
    pub(crate) fn may_write(&self) -> bool {
        let map = self.map();
        map.migration().is_none()
            && super::in_sync::primary_of(&map, self.id).is_some()
            && self.check_lease().is_ok()
    }

    /// A primary takes writes only while it holds its lease: one cut off
    /// from the metadata majority stops before a replica can replace it.
    fn check_lease(&self) -> Result<(), ErrorReply> {
        let Err(renewed) = self.health.lease_held() else {
            return Ok(());
        };
        let since = renewed.map_or("never renewed yet".to_string(), |ago| {
            format!("last renewed {} ms ago", ago.as_millis())
        });
        Err(ErrorReply::new(
            ErrorCode::Unavailable,
            format!(
                "this primary holds no write lease from the metadata leader ({since}); \
                 writes wait until it is renewed, or the shard fails over"
            ),
        )
        .with_retry_after_ms(self.health.timing().heartbeat_ms))
    }

    /// The committed map in its wire form.
    pub fn map_reply(&self) -> ClusterMapReply {
        map_reply(&self.map())
    }

    /// Starts the metadata group with this node as its only voter; the
    /// others join as the map names them.
    ///
    /// # Errors
    ///
    /// `BadRequest` when the group exists already.
    pub async fn init(&self) -> Result<(), ErrorReply> {
        let voters = [(self.id, self.link_addr.clone())].into_iter().collect();
        self.group
            .initialize(&voters)
            .await
            .map_err(|e| meta_error(&e, &self.map()))?;
        self.group
            .await_status(Duration::from_secs(10), "leadership", |s| {
                s.role == MetaRole::Leader
            })
            .await
            .map_err(|e| meta_error(&e, &self.map()))?;
        Ok(())
    }

    /// Commits `command` (postcard `MapCommand`), returning the map version.
    ///
    /// # Errors
    ///
    /// `BadRequest` for an undecodable or refused command, `NotLeader`.
    pub async fn propose(&self, command: &[u8]) -> Result<u64, ErrorReply> {
        let cmd: MapCommand = postcard::from_bytes(command).map_err(|e| {
            ErrorReply::new(
                ErrorCode::BadRequest,
                format!("not a cluster-map command: {e}"),
            )
        })?;
        let proposed = tokio::time::timeout(GROUP_CALL_WITHIN, self.group.propose(cmd))
            .await
            .unwrap_or_else(|_| {
                Err(MetaError::Timeout(format!(
                    "the commit within {GROUP_CALL_WITHIN:?}"
                )))
            });
        proposed.map_err(|e| meta_error(&e, &self.map()))
    }

    /// A planned switchover of `shard`'s primary to the replica named `to`
    /// (or the best caught-up one), with no write lost: waits until the map
    /// names the new primary.
    ///
    /// # Errors
    ///
    /// `NotLeader`; `BadRequest` for a switchover the map does not allow;
    /// `Timeout` when no replica caught up in time (the primary then takes
    /// writes again).
    pub async fn switchover(
        &self,
        shard: u32,
        to: Option<&str>,
    ) -> Result<Vec<(String, String)>, ErrorReply> {
        let map = self.map();
        let shard = super::ring::ShardId(shard);
        let old = map.shards().get(&shard).map(|s| s.primary);
        let planned = self
            .health
            .plan(&self.group, &map, shard, to.map(NodeId::of_name));
        let Some(planned) = planned else {
            return Err(self.not_leader(&map));
        };
        planned.map_err(|e| ErrorReply::new(ErrorCode::BadRequest, e))?;
        let t = self.health.timing();
        let within = Duration::from_millis(2 * t.lease_ms) + SWITCHOVER_CATCH_UP;
        let mut maps = self.group.map();
        let moved = tokio::time::timeout(
            within,
            maps.wait_for(|m| m.shards().get(&shard).map(|s| s.primary) != old),
        )
        .await;
        let Ok(Ok(map)) = moved else {
            self.health.cancel(&self.group, shard);
            return Err(ErrorReply::new(
                ErrorCode::Timeout,
                format!(
                    "no replica of shard {shard} caught up with its primary within {within:?}; \
                     the primary takes writes again"
                ),
            ));
        };
        let primary = map
            .shards()
            .get(&shard)
            .and_then(|s| map.nodes().get(&s.primary))
            .map_or(String::new(), |n| n.name.clone());
        Ok(vec![
            ("map_version".into(), map.version().to_string()),
            ("primary".into(), primary),
        ])
    }

    /// An unclean promotion for a shard whose primary failed and that
    /// cannot fail over cleanly: the best replica that reported (or `to`)
    /// becomes primary, and the reply says how many records it was behind
    /// the primary's last report; `dry_run` only says so.
    ///
    /// # Errors
    ///
    /// `NotLeader`; `BadRequest` when the shard is not failing over or no
    /// replica reported; `Timeout` when the commit did not land.
    pub async fn unclean_failover(
        &self,
        shard: u32,
        to: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<(String, String)>, ErrorReply> {
        let map = self.map();
        let shard = super::ring::ShardId(shard);
        let to = to.map(NodeId::of_name);
        let Some(chosen) = self.health.unclean(&self.group, &map, shard, to, !dry_run) else {
            return Err(self.not_leader(&map));
        };
        let chosen = chosen.map_err(|e| ErrorReply::new(ErrorCode::BadRequest, e))?;
        let name = map
            .nodes()
            .get(&chosen.node)
            .map_or(String::new(), |n| n.name.clone());
        let behind = chosen
            .behind
            .map_or("unknown".to_string(), |b| b.to_string());
        let mut out = vec![
            ("promote".into(), name.clone()),
            ("behind_records".into(), behind.clone()),
        ];
        if dry_run {
            return Ok(out);
        }
        let cause = format!(
            "unclean failover asked for; {name} was {behind} records behind the primary's last report"
        );
        failover::promote(self, shard, chosen.node, &cause).await;
        let map = self.map();
        if map.shards().get(&shard).map(|s| s.primary) != Some(chosen.node) {
            return Err(ErrorReply::new(
                ErrorCode::Timeout,
                format!("the promotion of {name} was not committed; see the leader's log"),
            ));
        }
        out.push(("map_version".into(), map.version().to_string()));
        Ok(out)
    }

    fn not_leader(&self, map: &ClusterMap) -> ErrorReply {
        let status = self.group.status();
        let leader = status.leader.map(|id| super::raft::LeaderRef {
            id,
            addr: status.members.get(&id).cloned(),
        });
        meta_error(&MetaError::NotLeader { leader }, map)
    }

    /// `cluster_*` lines for `Info`.
    pub fn info(&self) -> Vec<(String, String)> {
        let status = self.group.status();
        let map = self.map();
        let ids = |set: &BTreeSet<NodeId>| {
            set.iter()
                .map(|id| id.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = vec![
            ("cluster_node_id".into(), self.id.0.to_string()),
            ("cluster_node_name".into(), self.name.clone()),
            ("cluster_link_addr".into(), self.link_addr.clone()),
            ("cluster_client_addr".into(), self.client_addr.clone()),
            ("cluster_map_version".into(), map.version().to_string()),
            (
                "cluster_meta_role".into(),
                format!("{:?}", status.role).to_lowercase(),
            ),
            ("cluster_meta_term".into(), status.term.to_string()),
            (
                "cluster_meta_leader".into(),
                status.leader.map_or(String::new(), |id| id.0.to_string()),
            ),
            ("cluster_meta_voters".into(), ids(&status.voters)),
            ("cluster_meta_learners".into(), ids(&status.learners)),
            (
                "cluster_meta_settled".into(),
                status.membership_settled.to_string(),
            ),
        ];
        if let Some(me) = map.nodes().get(&self.id) {
            out.push(("cluster_shard".into(), me.shard.0.to_string()));
        }
        out.extend(super::migrate::info(self, &map));
        out.push((
            "cluster_lease_left_ms".into(),
            self.health.lease_left_ms().to_string(),
        ));
        let failovers = self.health.failovers();
        out.push(("cluster_failovers".into(), failovers.count.to_string()));
        if let Some(last) = failovers.last {
            out.push(("cluster_failover_last".into(), last));
        }
        if let Some(waiting) = failovers.waiting {
            out.push(("cluster_failover_waiting".into(), waiting));
        }
        let ids: Vec<NodeId> = map.nodes().keys().copied().collect();
        if let Some(ages) = self.health.heartbeat_ages(&self.group, &ids) {
            for (id, age) in ids.iter().zip(ages) {
                let name = map.nodes().get(id).map_or("?", |n| n.name.as_str());
                out.push((format!("cluster_heartbeat_age_ms.{name}"), age.to_string()));
            }
        }
        out
    }

    /// Stops the member (its data stays for the next start).
    pub async fn shutdown(&self) {
        self.group.shutdown().await;
    }

    /// One pass: replication as the map says, and on the leader the
    /// group's membership as the map says.
    async fn reconcile(&self, map: &ClusterMap) {
        // Before a promotion: the new primary counts only the set's acks.
        super::in_sync::apply(&self.repl, self.id, map, self.in_sync_lag_ms);
        self.follow_my_primary(map).await;
        if self.group.status().role != MetaRole::Leader {
            return;
        }
        let synced = tokio::time::timeout(GROUP_CALL_WITHIN, self.sync_membership(map))
            .await
            .unwrap_or_else(|_| {
                Err(MetaError::Timeout(format!(
                    "membership within {GROUP_CALL_WITHIN:?}"
                )))
            });
        if let Err(e) = synced {
            warn!(error = %e, "metadata membership not brought in line with the map yet");
        }
    }

    /// A replica of its shard follows the shard's primary; a node the map
    /// made primary stops following.
    async fn follow_my_primary(&self, map: &ClusterMap) {
        let Some(me) = map.nodes().get(&self.id) else {
            return;
        };
        let Some(shard) = map.shards().get(&me.shard) else {
            return;
        };
        if shard.primary == self.id {
            if !self.repl.is_primary() && !self.repl.serves_reads() {
                // Mid full sync: promoting now would abort the sync and fail,
                // once a second; wait until the data is whole.
                warn!(
                    shard = me.shard.0,
                    "the map makes this node primary, but it is in a full sync; promoting after it"
                );
            } else if !self.repl.is_primary() {
                info!(
                    shard = me.shard.0,
                    epoch = shard.epoch,
                    "the map makes this node its shard's primary"
                );
                if let Err(e) = self.repl.promote().await {
                    warn!(error = %e.message, "promotion the map asked for failed");
                }
            }
            return;
        }
        let Some(primary) = map.nodes().get(&shard.primary) else {
            return;
        };
        if self.repl.following().as_deref() != Some(primary.link_addr.as_str()) {
            info!(shard = me.shard.0, primary = %primary.link_addr, "following the shard's primary");
            if let Err(e) = self.repl.replicate_from(primary.link_addr.clone()).await {
                warn!(error = %e.message, "could not follow the shard's primary");
            }
        }
    }

    /// On the leader: the group's members are the map's nodes (the leader
    /// alone while the map has none), up to five of them voters; nodes
    /// that left the map leave the group, a leader that left included.
    async fn sync_membership(&self, map: &ClusterMap) -> Result<(), MetaError> {
        let mut nodes: std::collections::BTreeMap<NodeId, String> = map
            .nodes()
            .iter()
            .map(|(id, node)| (*id, node.link_addr.clone()))
            .collect();
        if nodes.is_empty() {
            // A cluster being formed: the map has no nodes yet.
            nodes.insert(self.id, self.link_addr.clone());
        }
        self.group.reconcile_members(&nodes).await?;
        Ok(())
    }
}

/// Follows map changes (and looks again now and then) until the node goes.
async fn reconcile_loop(node: std::sync::Weak<ClusterNode>) {
    let Some(mut maps) = node.upgrade().map(|n| n.group.map()) else {
        return;
    };
    loop {
        let map = maps.borrow_and_update().clone();
        let Some(strong) = node.upgrade() else {
            return;
        };
        strong.reconcile(&map).await;
        drop(strong);
        tokio::select! {
            changed = maps.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    }
}

/// Commits `addr` as this node's gateway whenever the map lists the node
/// with another (empty: none), until the node goes.
async fn gateway_loop(node: std::sync::Weak<ClusterNode>, addr: String) {
    let Some(mut maps) = node.upgrade().map(|n| n.group.map()) else {
        return;
    };
    loop {
        let map = maps.borrow_and_update().clone();
        let Some(strong) = node.upgrade() else {
            return;
        };
        let id = strong.id;
        if map.nodes().contains_key(&id) && map.gateway(id).unwrap_or("") != addr {
            let asked = GatewayAddr {
                node: id,
                addr: addr.clone(),
            };
            match strong.group.set_gateway(asked, GROUP_CALL_WITHIN).await {
                Ok(version) => info!(version, gateway = %addr, "RESP gateway address committed"),
                Err(e) => {
                    warn!(error = %e, "RESP gateway address not committed yet; trying again");
                    drop(strong);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        drop(strong);
        if maps.changed().await.is_err() {
            return;
        }
    }
}

/// A group error as the client sees it.
fn meta_error(e: &MetaError, map: &ClusterMap) -> ErrorReply {
    match e {
        MetaError::NotLeader { leader } => {
            let client = leader
                .as_ref()
                .and_then(|l| map.nodes().get(&l.id))
                .map(|n| n.client_addr.clone());
            let mut reply = ErrorReply::new(
                ErrorCode::NotLeader,
                match &client {
                    Some(addr) => format!("not the metadata leader; the leader is {addr}"),
                    None => "not the metadata leader, and no leader is known yet".to_string(),
                },
            );
            reply.leader_hint = client;
            reply
        }
        MetaError::Refused(_) | MetaError::AlreadyInitialized | MetaError::NotInMembers { .. } => {
            ErrorReply::new(ErrorCode::BadRequest, e.to_string())
        }
        MetaError::Timeout(_) => ErrorReply::new(ErrorCode::Timeout, e.to_string()),
        _ => ErrorReply::new(ErrorCode::Unavailable, e.to_string()).with_retry_after_ms(1000),
    }
}

/// A map in its wire form: what clients route by, so the shards on the
/// ring and their nodes (a joining shard owns no slots and is left out).
pub fn map_reply(map: &ClusterMap) -> ClusterMapReply {
    let on_ring = |shard: &super::ring::ShardId| map.ring().contains(shard);
    ClusterMapReply {
        version: map.version(),
        vnodes: map.vnodes(),
        nodes: map
            .nodes()
            .iter()
            .filter(|(_, n)| on_ring(&n.shard))
            .map(|(id, n)| WireNode {
                id: id.0,
                name: n.name.clone(),
                client_addr: n.client_addr.clone(),
                link_addr: n.link_addr.clone(),
                shard: n.shard.0,
            })
            .collect(),
        shards: map
            .shards()
            .iter()
            .filter(|(id, _)| on_ring(id))
            .map(|(id, s)| ClusterShard {
                id: id.0,
                primary: s.primary.0,
                replicas: s.replicas.iter().map(|r| r.0).collect(),
                epoch: s.epoch,
            })
            .collect(),
    }
}

/// The links a member serves beside replication's, each from
/// [`Replication::accept_protocol`] of its ALPN ([`LinkProtocols::ALPNS`]),
/// taken before replication starts.
#[derive(Debug)]
pub struct LinkProtocols {
    /// The metadata group's ([`META_ALPN`]).
    pub meta: mpsc::Receiver<Link>,
    /// Slot migrations' ([`super::migrate::MOVE_ALPN`]).
    pub moves: mpsc::Receiver<Link>,
}

impl LinkProtocols {
    /// The protocols, in the order of the fields.
    pub const ALPNS: [&'static [u8]; 2] = [META_ALPN, super::migrate::MOVE_ALPN];

    /// Takes each protocol's links from `repl`.
    pub fn accept(repl: &Replication) -> LinkProtocols {
        let [meta, moves] = Self::ALPNS.map(|alpn| repl.accept_protocol(alpn));
        LinkProtocols { meta, moves }
    }
}

/// The refusal of a keyed request while the map places this node in no
/// shard.
fn not_placed() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::Unavailable,
        "this node is not in a shard of the cluster map yet (see `strata-admin cluster status`)",
    )
    .with_retry_after_ms(1000)
}
