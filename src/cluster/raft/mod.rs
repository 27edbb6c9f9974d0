//! The cluster-metadata group: the [`ClusterMap`] as the state machine of
//! an embedded Raft group (DESIGN §9). Only metadata goes through it.
//!
//! # Layout
//!
//! ```text
//! mod.rs      MetaGroup: start / initialize / propose / map / status / membership
//! wire.rs     our messages (postcard), specified in proto-docs/cluster.md §5
//! convert.rs  the consensus library's type config; our types <-> its types
//! store.rs    LogDb: log, vote, commit mark in a small synced RocksDB
//! log.rs      the library's log-storage traits over LogDb (blocking pool)
//! machine.rs  the state machine: ClusterMap + snapshot file; publishes the map
//! network.rs  outgoing RPCs over node links (ALPN strata-raft/5)
//! serve.rs    incoming RPCs
//! ```
//!
//! The consensus library (openraft, the 0.9 line) is named nowhere outside
//! this directory: [`MetaGroup`] and its types are ours, and so are the
//! bytes on the wire and on disk, so that a new major version of the
//! library is a change to this module only.
//!
//! On disk, under `<data-dir>/cluster/`: `log/` (RocksDB with its WAL on,
//! vote and entries written with `sync`) and `snapshot.bin` (replaced
//! atomically). A restarted node has its vote, log, membership and, before
//! [`MetaGroup::start`] returns, its map as of the last commit it recorded.

mod convert;
mod log;
mod machine;
mod network;
mod serve;
mod store;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::cluster::health::{LeaseReply, NodeReport};

use crate::cluster::map::{ClusterMap, MapCommand, MapError};
use crate::net::link::{Link, LinkEndpoint};
use crate::sync::lock;
use crate::types::NodeId;
use convert::{Peer, Types};
use log::{CommittedMark, LogStore};
use machine::MapMachine;

pub use machine::{SnapshotError, SnapshotFile};
pub use store::StoreError;
pub use wire::{GatewayAddr, ImportStep, InSyncChange, MAX_META_FRAME_BYTES, META_ALPN};

/// At most this many voters; every other member is a learner, which still
/// receives the map.
pub const MAX_VOTERS: usize = 5;

/// The group's clocks. Elections must outlast a heartbeat round trip by a
/// wide margin; every network wait is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaTiming {
    /// How often a leader heartbeats (and the deadline of one append).
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in
    /// `election_min_ms..election_max_ms` stands for election; the minimum
    /// is also the deadline of one vote request.
    pub election_min_ms: u64,
    /// See `election_min_ms`.
    pub election_max_ms: u64,
    /// Bound on making a link to a peer.
    pub connect_timeout_ms: u64,
    /// Bound on one snapshot transfer, and on a request's arrival on an
    /// accepted stream.
    pub rpc_timeout_ms: u64,
    /// Pause before retrying an unreachable peer.
    pub retry_ms: u64,
}

impl Default for MetaTiming {
    /// For datacenter links: a leader's loss is noticed within 1–2 s.
    fn default() -> Self {
        MetaTiming {
            heartbeat_ms: 200,
            election_min_ms: 1000,
            election_max_ms: 2000,
            connect_timeout_ms: 1000,
            rpc_timeout_ms: 10_000,
            retry_ms: 500,
        }
    }
}

/// Who accepts the group's incoming links.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Inbound {
    /// The group runs the endpoint's accept loop itself and closes links
    /// of any other protocol: for an endpoint of its own.
    #[default]
    Accept,
    /// The endpoint's owner accepts, dispatches by [`Link::alpn`] and hands
    /// the group its links with [`MetaGroup::serve_link`]: for one endpoint
    /// shared with replication.
    Dispatched,
}

/// How to start a node's member of the group.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// The node's data directory; the group keeps `cluster/` in it.
    pub data_dir: PathBuf,
    /// `host:port` where the other members reach this node's endpoint.
    pub addr: String,
    /// The node-link endpoint (it carries the cluster identity, whose
    /// node name gives this member's [`NodeId`]).
    pub endpoint: LinkEndpoint,
    /// Who accepts incoming links.
    pub inbound: Inbound,
    /// The clocks.
    pub timing: MetaTiming,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging
    /// member catches up by entries rather than a whole snapshot.
    pub keep_entries_after_snapshot: u64,
}

impl MetaConfig {
    /// A config with default clocks and snapshot policy.
    pub fn new(data_dir: PathBuf, addr: String, endpoint: LinkEndpoint) -> MetaConfig {
        MetaConfig {
            data_dir,
            addr,
            endpoint,
            inbound: Inbound::default(),
            timing: MetaTiming::default(),
            snapshot_every_entries: 1000,
            keep_entries_after_snapshot: 100,
        }
    }

    /// Sets who accepts incoming links.
    pub fn with_inbound(mut self, inbound: Inbound) -> MetaConfig {
        self.inbound = inbound;
        self
    }

    /// Sets the clocks.
    pub fn with_timing(mut self, timing: MetaTiming) -> MetaConfig {
        self.timing = timing;
        self
    }

    /// Sets the snapshot policy.
    pub fn with_snapshots(mut self, every_entries: u64, keep_entries: u64) -> MetaConfig {
        self.snapshot_every_entries = every_entries;
        self.keep_entries_after_snapshot = keep_entries;
        self
    }
}

/// The leader, as far as a member knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRef {
    /// Its id.
    pub id: NodeId,
    /// Its endpoint, when the membership lists it.
    pub addr: Option<String>,
}

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The durable log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The snapshot file failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The group's own directory could not be made.
    #[error("metadata directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The clocks or policy do not make a valid configuration.
    #[error("metadata group configuration: {0}")]
    Config(String),
    /// Only the leader takes proposals and membership changes.
    #[error("not the leader of the metadata group; the leader is {leader:?}")]
    NotLeader {
        /// The leader, if this member knows one.
        leader: Option<LeaderRef>,
    },
    /// The command was committed but the map refused it (every member
    /// refuses it alike; the map's version is unchanged).
    #[error("the cluster map refused the command: {0}")]
    Refused(#[from] MapError),
    /// The group was initialized before.
    #[error("the metadata group is already initialized")]
    AlreadyInitialized,
    /// Initializing a group this member is not a voter of.
    #[error("node {} is not among the initial voters", node.0)]
    NotInMembers {
        /// This member.
        node: NodeId,
    },
    /// A voter set of the wrong size.
    #[error("a voter set needs 1..={MAX_VOTERS} members, not {0}")]
    VoterCount(usize),
    /// The group refused a membership change (one in progress, a voter
    /// that is not a learner yet, ...).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The group has stopped (shut down, or a fatal storage error).
    #[error("the metadata group has stopped: {0}")]
    Stopped(String),
    /// A wait for a status did not end in time.
    #[error("waiting for the metadata group: {0}")]
    Timeout(String),
    /// A heartbeat did not reach the leader, or was not answered.
    #[error("heartbeat to the metadata leader: {0}")]
    Report(String),
}

impl MetaError {
    fn from_write(e: RaftError<u64, ClientWriteError<u64, Peer>>) -> MetaError {
        match e {
            RaftError::Fatal(fatal) => MetaError::Stopped(fatal.to_string()),
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MetaError::NotLeader {
                leader: f.leader_id.map(|id| LeaderRef {
                    id: NodeId(id),
                    addr: f.leader_node.map(|peer| peer.addr),
                }),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                MetaError::Membership(e.to_string())
            }
        }
    }
}

/// A member's role in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaRole {
    /// Takes proposals.
    Leader,
    /// Standing for election.
    Candidate,
    /// A voter following the leader.
    Follower,
    /// Receives the map, does not vote (or not initialized yet).
    Learner,
    /// Stopped.
    Stopped,
}

/// What a member knows of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaStatus {
    /// This member.
    pub id: NodeId,
    /// Its role.
    pub role: MetaRole,
    /// The leader it follows, if any.
    pub leader: Option<NodeId>,
    /// Its current term.
    pub term: u64,
    /// The voters (of both sets while a change is in joint consensus).
    pub voters: BTreeSet<NodeId>,
    /// The learners.
    pub learners: BTreeSet<NodeId>,
    /// Every member and its endpoint.
    pub members: BTreeMap<NodeId, String>,
    /// The last entry in its log.
    pub last_log_index: Option<u64>,
    /// The last entry it knows committed.
    pub committed_index: Option<u64>,
    /// The last entry applied to its map.
    pub applied_index: Option<u64>,
    /// The last entry its latest snapshot covers.
    pub snapshot_index: Option<u64>,
    /// The last entry removed from its log (a snapshot holds it).
    pub purged_index: Option<u64>,
    /// Whether the voter set is one set (no joint change under way) and
    /// the entry that made it is committed: until then a minority lost
    /// may still stall the group.
    pub membership_settled: bool,
}

/// Picks the voters among `nodes`, deterministically: the current voters
/// that are still there first, then the others by id, up to
/// [`MAX_VOTERS`] and an odd count (a fourth voter adds no fault
/// tolerance over three, only a larger quorum). Every other node is a
/// learner.
pub fn pick_voters(current: &BTreeSet<NodeId>, nodes: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let mut want = nodes.len().min(MAX_VOTERS);
    if want > 1 && want.is_multiple_of(2) {
        want -= 1;
    }
    let kept = current.iter().filter(|id| nodes.contains(id));
    let others = nodes.iter().filter(|id| !current.contains(id));
    kept.chain(others).take(want).copied().collect()
}

/// Commits an in-sync set asked for by `change.node`, which `map` must
/// name its shard's primary (the epoch is checked again when the command
/// applies, so a primary deposed meanwhile changes nothing).
async fn commit_for_member(
    raft: &Raft<Types>,
    map: &ClusterMap,
    request: wire::MetaRequest,
) -> Result<u64, MetaError> {
    let (node, shard, cmd) = match request {
        // Any member may say where its own gateway is.
        wire::MetaRequest::Gateway(gateway) => {
            if !map.nodes().contains_key(&gateway.node) {
                return Err(MetaError::Report(format!(
                    "node {} is not in map version {}",
                    gateway.node.0,
                    map.version()
                )));
            }
            let cmd = MapCommand::SetGateway {
                node: gateway.node,
                addr: gateway.addr,
            };
            return commit(raft, cmd).await;
        }
        wire::MetaRequest::InSync(change) => (
            change.node,
            change.shard,
            MapCommand::SetInSync {
                shard: change.shard,
                epoch: change.epoch,
                in_sync: change.in_sync,
            },
        ),
        wire::MetaRequest::Import(step) => {
            let (id, shard, epoch) = (step.id, step.shard, step.epoch);
            let cmd = match step.done {
                false => MapCommand::ImportReady { id, shard, epoch },
                true => MapCommand::ImportDone { id, shard, epoch },
            };
            (step.node, shard, cmd)
        }
        other => {
            return Err(MetaError::Report(format!(
                "not a request of a shard's primary: {other:?}"
            )));
        }
    };
    let primary = map.shards().get(&shard).map(|s| s.primary);
    if primary != Some(node) {
        return Err(MetaError::Report(format!(
            "node {} is not shard {shard}'s primary in map version {}",
            node.0,
            map.version()
        )));
    }
    commit(raft, cmd).await
}

/// Commits `cmd` through `raft` (which must lead): the map's version after
/// it, or why the map refused it.
async fn commit(raft: &Raft<Types>, cmd: MapCommand) -> Result<u64, MetaError> {
    let response = raft
        .client_write(cmd)
        .await
        .map_err(MetaError::from_write)?;
    match response.data.refused {
        Some(e) => Err(MetaError::Refused(e)),
        None => Ok(response.data.version),
    }
}

/// Why a request to the leader got no answer of the kind it asked for.
fn leader_failed<E: std::fmt::Display>(answer: Result<wire::MetaResponse, E>) -> MetaError {
    match answer {
        Ok(wire::MetaResponse::Refused { reason }) => MetaError::Report(reason),
        Ok(other) => MetaError::Report(format!("unexpected answer {other:?}")),
        Err(e) => MetaError::Report(e.to_string()),
    }
}

/// A heartbeat handed to the node's handler, and where its answer goes.
#[derive(Debug)]
pub struct ReportCall {
    /// The heartbeat.
    pub report: NodeReport,
    /// The answer.
    pub reply: oneshot::Sender<LeaseReply>,
}

/// Where the heartbeats this member receives go: the node's handler, once
/// it has taken them ([`MetaGroup::take_reports`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Reports(Arc<std::sync::OnceLock<mpsc::Sender<ReportCall>>>);

impl Reports {
    /// The handler's answer to `report`.
    pub(crate) async fn answer(&self, report: NodeReport) -> Result<LeaseReply, MetaError> {
        let handler = self
            .0
            .get()
            .ok_or_else(|| MetaError::Report("this member takes no heartbeats yet".into()))?;
        let (reply, answer) = oneshot::channel();
        handler
            .send(ReportCall { report, reply })
            .await
            .map_err(|_| MetaError::Report("the heartbeat handler has stopped".into()))?;
        answer
            .await
            .map_err(|_| MetaError::Report("the heartbeat was dropped unanswered".into()))
    }
}

/// This node's member of the cluster-metadata group.
pub struct MetaGroup {
    id: NodeId,
    /// Where the other members reach this one.
    addr: String,
    raft: Raft<Types>,
    map: watch::Receiver<Arc<ClusterMap>>,
    committed: CommittedMark,
    timing: MetaTiming,
    network: network::Network,
    reports: Reports,
    /// The accept loop and the links it or the owner handed over: ended
    /// with the group.
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for MetaGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaGroup").field("id", &self.id).finish()
    }
}

/// The library's configuration for `config`.
fn raft_config(config: &MetaConfig) -> Result<openraft::Config, MetaError> {
    let t = &config.timing;
    openraft::Config {
        cluster_name: "strata-meta".into(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_min_ms,
        election_timeout_max: t.election_max_ms,
        install_snapshot_timeout: t.rpc_timeout_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        max_in_snapshot_log_to_keep: config.keep_entries_after_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|e| MetaError::Config(e.to_string()))
}

impl MetaGroup {
    /// Starts this node's member from its data directory: a new one on
    /// first start (then [`Self::initialize`] it, or let a leader add it),
    /// else the one it was, with its vote, log, membership and map.
    ///
    /// # Errors
    ///
    /// The directory, log or snapshot failing to open, or a bad config.
    pub async fn start(config: MetaConfig) -> Result<MetaGroup, MetaError> {
        let id = config.endpoint.identity().node_id();
        let raft_config = Arc::new(raft_config(&config)?);
        let dir = config.data_dir.join("cluster");
        let log_dir = dir.join("log");
        let db = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&log_dir).map_err(|source| MetaError::Dir {
                path: log_dir.clone(),
                source,
            })?;
            Ok::<_, MetaError>(store::LogDb::open(&log_dir)?)
        })
        .await
        .map_err(|e| MetaError::Stopped(e.to_string()))??;
        let committed = CommittedMark::default();
        let log_store = LogStore::new(Arc::new(db), committed.clone());
        let (machine, map) = MapMachine::open(&dir).await?;
        let network = network::Network::new(config.endpoint.clone(), config.timing.clone());
        let raft = Raft::new(id.0, raft_config, network.clone(), log_store, machine)
            .await
            .map_err(|e| MetaError::Stopped(e.to_string()))?;
        // The library reports the state it loaded (term, log, membership)
        // once its start-up is done, before it takes any request: after
        // this answer, `status` shows the restored member.
        raft.is_initialized()
            .await
            .map_err(|e| MetaError::Stopped(e.to_string()))?;
        let mut tasks = JoinSet::new();
        let reports = Reports::default();
        if config.inbound == Inbound::Accept {
            let bound = Duration::from_millis(config.timing.rpc_timeout_ms);
            let served = serve::Served {
                raft: raft.clone(),
                reports: reports.clone(),
                map: map.clone(),
            };
            tasks.spawn(serve::accept_loop(config.endpoint, served, bound));
        }
        tracing::info!(
            node = id.0,
            addr = config.addr,
            version = map.borrow().version(),
            "metadata group started"
        );
        Ok(MetaGroup {
            id,
            addr: config.addr,
            raft,
            map,
            committed,
            timing: config.timing,
            network,
            reports,
            tasks: Mutex::new(tasks),
        })
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where the other members reach this one (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Serves a link that speaks [`META_ALPN`], accepted by the endpoint's
    /// owner ([`Inbound::Dispatched`]); it ends with the link or the group.
    pub fn serve_link(&self, link: Link) {
        let bound = Duration::from_millis(self.timing.rpc_timeout_ms);
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        let served = serve::Served {
            raft: self.raft.clone(),
            reports: self.reports.clone(),
            map: self.map.clone(),
        };
        tasks.spawn(serve::serve_link(link, served, bound));
    }

    /// The heartbeats other members send this one while it leads (and its
    /// own, through [`Self::report`]); once, for the node's handler, which
    /// answers each. Until taken, heartbeats are refused.
    pub fn take_reports(&self) -> Option<mpsc::Receiver<ReportCall>> {
        let (tx, rx) = mpsc::channel(64);
        self.reports.0.set(tx).ok().map(|()| rx)
    }

    /// Sends this node's heartbeat to the leader it knows (its own handler
    /// if it leads) and returns the answer, within `deadline`.
    ///
    /// # Errors
    ///
    /// [`MetaError::NotLeader`] when no leader is known;
    /// [`MetaError::Report`] when the leader could not be reached or
    /// refused.
    pub async fn report(
        &self,
        report: NodeReport,
        deadline: Duration,
    ) -> Result<LeaseReply, MetaError> {
        let Some(peer) = self.leader_peer()? else {
            return tokio::time::timeout(deadline, self.reports.answer(report))
                .await
                .map_err(|_| MetaError::Report(format!("not answered within {deadline:?}")))?;
        };
        match peer
            .call(&wire::MetaRequest::Report(report), deadline)
            .await
        {
            Ok(wire::MetaResponse::Lease(lease)) => Ok(lease),
            other => Err(leader_failed(other)),
        }
    }

    /// Commits `change`, this node's in-sync set as a shard's primary,
    /// through the leader it knows (itself, if it leads), within
    /// `deadline`; returns the map's version after it.
    ///
    /// # Errors
    ///
    /// [`MetaError::NotLeader`] when no leader is known;
    /// [`MetaError::Report`] when the leader could not be reached or
    /// refused (a deposed primary's change is refused).
    pub async fn change_in_sync(
        &self,
        change: wire::InSyncChange,
        deadline: Duration,
    ) -> Result<u64, MetaError> {
        self.commit_for_member(wire::MetaRequest::InSync(change), deadline)
            .await
    }

    /// Commits `step` of a migration, for a receiving shard's primary,
    /// like [`Self::change_in_sync`].
    ///
    /// # Errors
    ///
    /// As [`Self::change_in_sync`]; the map's refusal (a stale epoch, a
    /// migration that ended) comes back as [`MetaError::Report`].
    pub async fn import_step(
        &self,
        step: wire::ImportStep,
        deadline: Duration,
    ) -> Result<u64, MetaError> {
        self.commit_for_member(wire::MetaRequest::Import(step), deadline)
            .await
    }

    /// Commits this node's RESP gateway address (`addr`, empty for none)
    /// through the leader, like [`Self::change_in_sync`].
    ///
    /// # Errors
    ///
    /// As [`Self::change_in_sync`].
    pub async fn set_gateway(
        &self,
        gateway: wire::GatewayAddr,
        deadline: Duration,
    ) -> Result<u64, MetaError> {
        self.commit_for_member(wire::MetaRequest::Gateway(gateway), deadline)
            .await
    }

    /// Commits what a member asks in `request` through the leader it
    /// knows (itself, if it leads), within `deadline`.
    async fn commit_for_member(
        &self,
        request: wire::MetaRequest,
        deadline: Duration,
    ) -> Result<u64, MetaError> {
        let Some(peer) = self.leader_peer()? else {
            let map = self.map.borrow().clone();
            return tokio::time::timeout(deadline, commit_for_member(&self.raft, &map, request))
                .await
                .map_err(|_| MetaError::Timeout(format!("the commit within {deadline:?}")))?;
        };
        match peer.call(&request, deadline).await {
            Ok(wire::MetaResponse::Committed { version }) => Ok(version),
            other => Err(leader_failed(other)),
        }
    }

    /// Where a request for the leader goes: `None` when this node leads.
    fn leader_peer(&self) -> Result<Option<network::PeerClient>, MetaError> {
        let status = self.status();
        let leader = status.leader.ok_or(MetaError::NotLeader { leader: None })?;
        if leader == self.id {
            return Ok(None);
        }
        let addr = status.members.get(&leader).cloned().ok_or_else(|| {
            MetaError::Report(format!("the leader {} has no known address", leader.0))
        })?;
        Ok(Some(self.network.peer(leader.0, addr)))
    }

    /// Whether this member is the leader, confirmed by a quorum that has
    /// not seen a newer term, within `deadline`: what a lease rests on.
    pub async fn confirm_leadership(&self, deadline: Duration) -> bool {
        matches!(
            tokio::time::timeout(deadline, self.raft.ensure_linearizable()).await,
            Ok(Ok(_))
        )
    }

    /// Bootstraps a new group whose voters are `voters` (id → endpoint
    /// address), this member among them; none means this member alone
    /// (the others then join as learners). Once, on one member: the others
    /// learn the membership from the leader.
    ///
    /// # Errors
    ///
    /// [`MetaError::AlreadyInitialized`] when the group exists (a log or a
    /// vote), [`MetaError::NotInMembers`], [`MetaError::VoterCount`].
    pub async fn initialize(&self, voters: &BTreeMap<NodeId, String>) -> Result<(), MetaError> {
        if voters.len() > MAX_VOTERS {
            return Err(MetaError::VoterCount(voters.len()));
        }
        let mut nodes: BTreeMap<u64, Peer> = voters
            .iter()
            .map(|(id, addr)| (id.0, Peer { addr: addr.clone() }))
            .collect();
        if nodes.is_empty() {
            let me = Peer {
                addr: self.addr.clone(),
            };
            nodes.insert(self.id.0, me);
        }
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Err(MetaError::AlreadyInitialized)
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(_))) => {
                Err(MetaError::NotInMembers { node: self.id })
            }
            Err(RaftError::Fatal(fatal)) => Err(MetaError::Stopped(fatal.to_string())),
        }
    }

    /// Commits `cmd` to the map and returns the map's version once the
    /// leader has applied it.
    ///
    /// # Errors
    ///
    /// [`MetaError::NotLeader`] on any other member (with the leader to
    /// ask), [`MetaError::Refused`] when the map refused the committed
    /// command, [`MetaError::Stopped`].
    pub async fn propose(&self, cmd: MapCommand) -> Result<u64, MetaError> {
        commit(&self.raft, cmd).await
    }

    /// The committed and applied map, updated after each applied batch.
    pub fn map(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.map.clone()
    }

    /// What this member knows of the group now.
    pub fn status(&self) -> MetaStatus {
        let metrics = self.raft.metrics().borrow().clone();
        self.status_of(&metrics)
    }

    fn status_of(&self, m: &RaftMetrics<u64, Peer>) -> MetaStatus {
        let membership = m.membership_config.membership();
        let role = match (&m.running_state, m.state) {
            (Err(_), _) | (_, ServerState::Shutdown) => MetaRole::Stopped,
            (_, ServerState::Leader) => MetaRole::Leader,
            (_, ServerState::Candidate) => MetaRole::Candidate,
            (_, ServerState::Follower) => MetaRole::Follower,
            (_, ServerState::Learner) => MetaRole::Learner,
        };
        let committed = self.committed.load(Ordering::Acquire);
        MetaStatus {
            id: self.id,
            role,
            leader: m.current_leader.map(NodeId),
            term: m.current_term,
            voters: membership.voter_ids().map(NodeId).collect(),
            learners: membership.learner_ids().map(NodeId).collect(),
            members: membership
                .nodes()
                .map(|(&id, peer)| (NodeId(id), peer.addr.clone()))
                .collect(),
            last_log_index: m.last_log_index,
            committed_index: committed.checked_sub(1),
            applied_index: m.last_applied.map(|id| id.index),
            snapshot_index: m.snapshot.map(|id| id.index),
            purged_index: m.purged.map(|id| id.index),
            membership_settled: membership.get_joint_config().len() == 1
                && m.membership_config
                    .log_id()
                    .is_none_or(|id| committed.checked_sub(1).is_some_and(|c| c >= id.index)),
        }
    }

    /// Waits until this member's status satisfies `done` (e.g. a leader is
    /// known), at most `within`.
    ///
    /// # Errors
    ///
    /// [`MetaError::Timeout`] saying what was awaited.
    pub async fn await_status(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&MetaStatus) -> bool + Send,
    ) -> Result<MetaStatus, MetaError> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                let status = self.status_of(&metrics.borrow_and_update());
                if done(&status) {
                    return Ok(status);
                }
                if metrics.changed().await.is_err() {
                    return Err(MetaError::Stopped("metrics closed".into()));
                }
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| MetaError::Timeout(format!("{what} within {within:?}")))?
    }

    /// Adds `node` (reached at `addr`) as a learner: it receives every
    /// entry and the map, and votes on nothing. Returns once the change is
    /// committed, without waiting for the learner to catch up (one that is
    /// down must not hold the caller).
    ///
    /// # Errors
    ///
    /// [`MetaError::NotLeader`], [`MetaError::Membership`].
    pub async fn add_learner(&self, node: NodeId, addr: String) -> Result<(), MetaError> {
        self.raft
            .add_learner(node.0, Peer { addr }, false)
            .await
            .map_err(MetaError::from_write)?;
        Ok(())
    }

    /// Makes `voters` (each a member already) the voter set, through joint
    /// consensus; voters left out stay on as learners.
    ///
    /// # Errors
    ///
    /// [`MetaError::VoterCount`], [`MetaError::NotLeader`],
    /// [`MetaError::Membership`] (e.g. a voter that is not a member).
    pub async fn change_voters(&self, voters: &BTreeSet<NodeId>) -> Result<(), MetaError> {
        if voters.is_empty() || voters.len() > MAX_VOTERS {
            return Err(MetaError::VoterCount(voters.len()));
        }
        let ids: BTreeSet<u64> = voters.iter().map(|id| id.0).collect();
        self.raft
            .change_membership(ids, true)
            .await
            .map_err(MetaError::from_write)?;
        Ok(())
    }

    /// Removes the learners `nodes` from the group (a node leaving the
    /// cluster: make it a learner first with [`Self::change_voters`]);
    /// they receive nothing more.
    ///
    /// # Errors
    ///
    /// [`MetaError::NotLeader`], [`MetaError::Membership`] (e.g. one of
    /// them is still a voter).
    pub async fn remove_learners(&self, nodes: &BTreeSet<NodeId>) -> Result<(), MetaError> {
        let ids: BTreeSet<u64> = nodes.iter().map(|id| id.0).collect();
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(ids), true)
            .await
            .map_err(MetaError::from_write)?;
        Ok(())
    }

    /// Makes the group's members the nodes `nodes` (id → endpoint
    /// address): the new ones join as learners, the voters become
    /// [`pick_voters`] of them (so at most [`MAX_VOTERS`], the current
    /// ones kept where they can be), and members not in `nodes` are
    /// demoted and removed. Each step is one committed change; run on the
    /// leader, e.g. whenever the cluster map's node set changes. Returns
    /// the status after it.
    ///
    /// # Errors
    ///
    /// [`MetaError::NotLeader`], [`MetaError::Membership`] (a change
    /// already in progress: run it again later).
    pub async fn reconcile_members(
        &self,
        nodes: &BTreeMap<NodeId, String>,
    ) -> Result<MetaStatus, MetaError> {
        let status = self.status();
        for (&id, addr) in nodes {
            if !status.members.contains_key(&id) {
                self.add_learner(id, addr.clone()).await?;
            }
        }
        let wanted: BTreeSet<NodeId> = nodes.keys().copied().collect();
        let voters = pick_voters(&status.voters, &wanted);
        if !voters.is_empty() && voters != status.voters {
            self.change_voters(&voters).await?;
        }
        let leaving: BTreeSet<NodeId> = status
            .members
            .keys()
            .filter(|id| !nodes.contains_key(id))
            .copied()
            .collect();
        if !leaving.is_empty() {
            self.remove_learners(&leaving).await?;
        }
        Ok(self.status())
    }

    /// Stops this member: no more votes, entries or RPCs; the map channel
    /// keeps its last value. Its data stays for the next start.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata group did not stop cleanly");
        }
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        tasks.shutdown().await;
        tracing::info!(node = self.id.0, "metadata group stopped");
    }
}
