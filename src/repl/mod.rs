//! Replication: a primary ships its WAL to replicas over QUIC; writes wait
//! for the acknowledgements their [`AckPolicy`] asks for (DESIGN §4, I5–I7).
//! Byte-level spec: `proto-docs/replication.md`.
//!
//! ```text
//! PRIMARY  serve_replicas: accept (mTLS, REPL_ALPN) -> Hello -> PSYNC2 check
//!            -> Stream: records from the feed/WAL on the control stream
//!            -> FullSync: RocksDB checkpoint -> throttled lz4 chunks on a
//!               uni stream -> Installed -> Stream
//!          writes: store commit -> Replication::await_acks(seq, policy)
//! REPLICA  follow: connect -> Hello(history, seq, resume) -> apply records
//!            with their seqs (I5) -> Ack(received, durable)
//! ```
//!
//! Every node runs the same [`Replication`] handle; its role decides
//! whether it accepts writes (primary) or follows a primary (replica).

pub mod core;
mod meta;
mod metrics;
mod primary;
pub mod proto;
mod replica;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::core::Acked;
pub use meta::ReplMeta;
pub use primary::MAX_LIVE_SNAPSHOTS;
pub use proto::Position;

use self::core::{
    Action, FollowState, Phase, PrimaryConfig, PrimaryCore, Reached, ReplicaCore, SessionId,
};

use self::metrics::{ReplMetrics, eta};
use crate::net::link::{Link, LinkEndpoint, LinkError};
use crate::net::tls::{ClusterIdentity, ClusterTls, REPL_ALPN, TlsError};
use crate::proto::{ErrorCode, ErrorReply};
use crate::store::{Store, StoreError, WalHold};
use crate::types::{AckPolicy, AckPolicyText, Epoch, ReplId, Seq};

/// Replication settings (`[replication]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplConfig {
    /// Where this node accepts replicas (and is reached by a promoted
    /// peer's replicas). `None`: no replica can follow this node.
    pub listen: Option<SocketAddr>,
    /// Follow this primary (its replication address, `host:port`).
    pub replica_of: Option<String>,
    /// Cluster CA and this node's certificate (`strata-admin gen-certs`):
    /// node links use mutual TLS.
    pub tls: Option<ClusterTls>,
    /// This node's name. With cluster certificates it is the name in the
    /// certificate (its subject common name), which is how other nodes know
    /// it; set here, it must be that name. Without them it only labels
    /// logs (default: the client listen address).
    pub node_name: Option<String>,
    /// What a write waits for when the request names no policy.
    pub default_ack: AckPolicyText,
    /// WAL bytes kept for disconnected or lagging replicas; a replica
    /// needing more gets a full sync instead (I7).
    pub retention_bytes: u64,
    /// A replica not seen for this long no longer holds WAL back.
    pub retention_idle_secs: u64,
    /// Full-sync transfer rate limit, bytes/s of compressed chunks (0: none),
    /// so a primary keeps serving while it seeds a replica.
    pub full_sync_bytes_per_sec: u64,
    /// Uncompressed size of one full-sync chunk.
    pub full_sync_chunk_bytes: usize,
    /// Idle heartbeat period; a link silent for 5× this is considered down.
    pub heartbeat_ms: u64,
}

impl Default for ReplConfig {
    fn default() -> Self {
        ReplConfig {
            listen: None,
            replica_of: None,
            tls: None,
            node_name: None,
            default_ack: AckPolicyText::default(),
            retention_bytes: 1 << 30,
            retention_idle_secs: 3600,
            full_sync_bytes_per_sec: 64 << 20,
            full_sync_chunk_bytes: 256 << 10,
            heartbeat_ms: 1000,
        }
    }
}

impl ReplConfig {
    /// Checks the settings; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if (self.listen.is_some() || self.replica_of.is_some()) && self.tls.is_none() {
            return Err(
                "replication.tls (ca, cert, key) is required for node-to-node links; \
                        make them with `strata-admin gen-certs`"
                    .into(),
            );
        }
        if let Some(primary) = &self.replica_of
            && split_host(primary).is_none()
        {
            return Err(format!(
                "replication.replica_of: expected HOST:PORT, got {primary:?}"
            ));
        }
        if self.full_sync_chunk_bytes < 1024 || self.full_sync_chunk_bytes > 64 << 20 {
            return Err("replication.full_sync_chunk_bytes must be within 1 KiB..64 MiB".into());
        }
        if self.heartbeat_ms == 0 {
            return Err("replication.heartbeat_ms must be above 0".into());
        }
        Ok(())
    }
}

/// Splits `host:port` (or `[v6]:port`) into the TLS server name and port;
/// `None` without a host.
fn split_host(addr: &str) -> Option<(String, u16)> {
    let (host, port) = crate::net::split_host_port(addr)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Why replication failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// Reading or writing a file.
    #[error("i/o on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `replication.meta` is unreadable.
    #[error("{path}: {reason}; move it away to start a fresh history (the node then full-syncs)")]
    DamagedMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The link to the peer.
    #[error("link: {0}")]
    Link(String),
    /// Too much of a bounded resource is in use; try again later.
    #[error("{0}")]
    Busy(String),
    /// A malformed frame.
    #[error(transparent)]
    Frame(#[from] proto::FrameError),
    /// The peer refused or broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Settings that contradict each other.
    #[error("replication settings: {0}")]
    Config(String),
}

impl From<LinkError> for ReplError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Frame(e) => ReplError::Frame(e),
            LinkError::Tls(e) => ReplError::Tls(e),
            other => ReplError::Link(other.to_string()),
        }
    }
}

/// Everything replication knows, in one lock domain: taken for short,
/// non-blocking updates, never across an `.await` and never while another
/// lock of this module is held, so no two locks can be taken in opposite
/// orders.
struct State {
    meta: ReplMeta,
    /// `Some(primary)` while this node is a replica.
    following: Option<String>,
    /// The replica side: this node's place in its primary's stream.
    follow: ReplicaCore,
    /// The primary side: this node's replicas.
    primary: PrimaryCore,
    /// The WAL holds the primary side asked for, by replica.
    holds: HashMap<String, WalHold>,
    /// Live replica sessions' connections, to end one a newer session of
    /// the same replica replaced.
    sessions: HashMap<SessionId, Link>,
}

/// What `info` and the metrics show, copied out of [`State`].
struct View {
    meta: ReplMeta,
    following: Option<String>,
    follow: ReplicaCore,
    replicas: std::collections::BTreeMap<String, self::core::primary::ReplicaView>,
    in_sync: Option<BTreeSet<String>>,
    now_ms: u64,
}

/// A node's replication: role, replicas, acknowledgements.
pub struct Replication {
    store: Store,
    cfg: ReplConfig,
    data_dir: PathBuf,
    /// Set by `start`: this node's name and client address.
    node_name: OnceLock<String>,
    client_addr: OnceLock<String>,
    identity: Option<ClusterIdentity>,
    /// The node-link endpoint (its own lock: only ever taken alone).
    endpoint: Mutex<Option<LinkEndpoint>>,
    /// Other node-link protocols the endpoint accepts, by ALPN, and where
    /// their links go (its own lock: only ever taken alone).
    protocols: Mutex<Vec<(&'static [u8], mpsc::Sender<Link>)>>,
    /// The task following the primary (its own lock: only ever taken alone).
    follower: Mutex<Option<JoinHandle<()>>>,
    state: Mutex<State>,
    /// What the counted replicas reached, published by the primary side
    /// once per change; writers waiting for acks compare against it.
    reached: watch::Sender<Reached>,
    /// The in-sync set this primary should have (by identity), for the
    /// cluster to commit; `None` outside a cluster.
    in_sync_wanted: watch::Sender<Option<BTreeSet<String>>>,
    /// The state machines' clock starts here.
    clock_start: Instant,
    snapshots: primary::Snapshots,
    metrics: ReplMetrics,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("node", &self.node_name())
            .field("following", &lock(&self.state).following)
            .finish_non_exhaustive()
    }
}

use crate::sync::lock;

impl Replication {
    /// Loads the node's history and certificates; binds the replication
    /// listener if configured. Call [`Replication::start`] inside a runtime.
    pub fn new(
        store: Store,
        cfg: ReplConfig,
        data_dir: &Path,
    ) -> Result<Arc<Replication>, ReplError> {
        let meta = ReplMeta::load_or_create(data_dir)?;
        let identity = cfg.tls.as_ref().map(ClusterTls::load).transpose()?;
        if let (Some(identity), Some(name)) = (&identity, &cfg.node_name)
            && identity.name() != name
        {
            return Err(ReplError::Config(format!(
                "replication.node_name is {name:?}, but this node's cluster certificate names \
                 it {:?}: a node is known by its certificate; drop node_name or make them agree",
                identity.name()
            )));
        }
        let snapshots_dir = data_dir.join("repl-snapshots");
        // Leftovers of a previous run are useless: their sessions are gone.
        let _ = std::fs::remove_dir_all(&snapshots_dir);
        let primary = PrimaryCore::new(PrimaryConfig {
            // A live replica acks every heartbeat; one silent for two is
            // presumed dead and may be replaced by a new session.
            stale_after_ms: cfg.heartbeat_ms * 2,
            retention_idle_ms: cfg.retention_idle_secs.saturating_mul(1000),
            retention_bytes: cfg.retention_bytes,
        });
        let state = State {
            meta,
            following: cfg.replica_of.clone(),
            follow: ReplicaCore::default(),
            primary,
            holds: HashMap::new(),
            sessions: HashMap::new(),
        };
        Ok(Arc::new(Replication {
            store,
            cfg,
            data_dir: data_dir.to_path_buf(),
            node_name: OnceLock::new(),
            client_addr: OnceLock::new(),
            identity,
            endpoint: Mutex::new(None),
            protocols: Mutex::new(Vec::new()),
            follower: Mutex::new(None),
            state: Mutex::new(state),
            reached: watch::Sender::new(Reached::default()),
            in_sync_wanted: watch::Sender::new(None),
            clock_start: Instant::now(),
            snapshots: primary::Snapshots::new(snapshots_dir),
            metrics: ReplMetrics::default(),
        }))
    }

    /// Starts serving replicas (if a listener is configured), following the
    /// primary (if this node is a replica), and the retention task.
    /// `client_addr` is where this node serves clients. Returns the bound
    /// replication address.
    pub fn start(self: &Arc<Self>, client_addr: &str) -> Result<Option<SocketAddr>, ReplError> {
        let _ = self.client_addr.set(client_addr.to_string());
        let name = match (&self.identity, &self.cfg.node_name) {
            (Some(identity), _) => identity.name().to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => client_addr.to_string(),
        };
        let _ = self.node_name.set(name);
        let mut bound = None;
        if let (Some(listen), Some(identity)) = (self.cfg.listen, &self.identity) {
            let mut alpns = vec![REPL_ALPN];
            alpns.extend(lock(&self.protocols).iter().map(|(alpn, _)| *alpn));
            let limits = link_limits(&self.cfg);
            let endpoint = LinkEndpoint::listen_for(listen, identity.clone(), limits, &alpns)?;
            bound = Some(endpoint.local_addr()?);
            *lock(&self.endpoint) = Some(endpoint.clone());
            tokio::spawn(primary::serve(self.clone(), endpoint));
        }
        tokio::spawn(primary::retention(Arc::downgrade(self)));
        tokio::spawn(primary::judge_in_sync(Arc::downgrade(self)));
        let following = lock(&self.state).following.clone();
        if let Some(primary) = following {
            self.spawn_follower(primary);
        }
        Ok(bound)
    }

    /// The state machines' clock, ms.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock_start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `f` on the primary side's machine and carries out its actions,
    /// all under the one state lock.
    fn with_primary<R>(&self, f: impl FnOnce(&mut PrimaryCore, u64, &mut Vec<Action>) -> R) -> R {
        let now = self.now_ms();
        let mut actions = Vec::new();
        let mut state = lock(&self.state);
        let result = f(&mut state.primary, now, &mut actions);
        for action in actions {
            match action {
                Action::Hold { replica, from } => match state.holds.get(&replica) {
                    Some(hold) => hold.advance(from),
                    None => {
                        let hold = self.store.hold_wal(from);
                        state.holds.insert(replica, hold);
                    }
                },
                Action::Release { replica } => {
                    state.holds.remove(&replica);
                }
                Action::EndSession(session) => {
                    if let Some(conn) = state.sessions.remove(&session) {
                        conn.close(1, "replaced by a newer session");
                    }
                }
                Action::Publish(reached) => {
                    self.reached.send_replace(reached);
                }
            }
        }
        result
    }

    /// Counts acks only from `members` (replica identities), a cluster
    /// shard's committed in-sync set; `None` counts every streaming replica.
    /// Members `lag_ms` behind are then wanted out of the set
    /// ([`Replication::in_sync_wanted`]).
    pub fn set_in_sync(&self, members: Option<BTreeSet<String>>, lag_ms: u64) {
        self.with_primary(|p, now, out| {
            if p.in_sync() != members.as_ref() {
                p.set_in_sync(members, lag_ms, now, out);
            }
        });
    }

    /// The in-sync set this node, as a cluster shard's primary, should
    /// have: changes as replicas fall behind and catch up.
    pub fn in_sync_wanted(&self) -> watch::Receiver<Option<BTreeSet<String>>> {
        self.in_sync_wanted.subscribe()
    }

    /// Runs `f` on the replica side's machine, under the state lock.
    fn with_follow<R>(&self, f: impl FnOnce(&mut ReplicaCore) -> R) -> R {
        f(&mut lock(&self.state).follow)
    }

    /// The store replicated.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn node_name(&self) -> &str {
        self.node_name.get().map_or("strata", String::as_str)
    }

    /// This node's id within a cluster, when it has a cluster identity.
    pub fn node_id(&self) -> Option<crate::types::NodeId> {
        self.identity.as_ref().map(ClusterIdentity::node_id)
    }

    /// Whether this node accepts writes.
    pub fn is_primary(&self) -> bool {
        lock(&self.state).following.is_none()
    }

    /// The replication address of the primary this node follows, if any.
    pub fn following(&self) -> Option<String> {
        lock(&self.state).following.clone()
    }

    /// For `ReadOnlyReplica` replies: where clients reach the primary.
    pub fn leader_hint(&self) -> Option<String> {
        let state = lock(&self.state);
        let following = state.following.as_ref()?;
        Some(
            state
                .follow
                .primary_client_addr
                .clone()
                .unwrap_or_else(|| following.clone()),
        )
    }

    /// Whether reads may be served: not while a full sync replaces the data.
    pub fn serves_reads(&self) -> bool {
        let state = lock(&self.state);
        !(state.following.is_some() && state.follow.state == FollowState::FullSync)
    }

    /// The default policy for writes that name none.
    pub fn default_ack(&self) -> AckPolicy {
        self.cfg.default_ack.0
    }

    /// The policy a write is held to: the one it names, else the default.
    /// A node without a replication listener can have no replica, so every
    /// policy is applied as `Async` there, and the reply's `requested` says
    /// so (wire-protocol.md §8). A node that accepts replicas holds writes
    /// to their policy even while none is connected.
    pub fn ack_policy(&self, requested: Option<AckPolicy>) -> AckPolicy {
        if self.cfg.listen.is_none() {
            return AckPolicy::Async;
        }
        requested.unwrap_or(self.cfg.default_ack.0)
    }

    /// The current history.
    pub fn meta(&self) -> ReplMeta {
        lock(&self.state).meta
    }

    /// Persists (fsynced, off the async threads) and adopts a history.
    async fn set_meta(&self, meta: ReplMeta) -> Result<(), ReplError> {
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || meta.save(&dir))
            .await
            .map_err(|e| ReplError::Link(e.to_string()))??;
        lock(&self.state).meta = meta;
        Ok(())
    }

    /// Waits until the write at `seq` reached what `policy` asks for, or
    /// its timeout. Never claims more than was reached (I6).
    ///
    /// # Errors
    /// `ReplicationTimeout` for a `sync` write, or a `semi-sync` one with
    /// `on_timeout: fail`, whose replicas did not answer in time (the write
    /// is committed on this node all the same).
    pub async fn await_acks(&self, seq: Seq, policy: AckPolicy) -> Result<Acked, ErrorReply> {
        let mut reached = self.reached.subscribe();
        let now = core::verdict(&reached.borrow_and_update(), seq, policy);
        let outcome = match now {
            Some(acked) => Ok(acked),
            None => {
                let timeout_ms = match policy {
                    AckPolicy::SemiSync { timeout_ms, .. } | AckPolicy::Sync { timeout_ms } => {
                        timeout_ms
                    }
                    AckPolicy::Async => 0,
                };
                self.metrics.waiting.inc();
                let waited = tokio::time::timeout(
                    Duration::from_millis(timeout_ms),
                    reached.wait_for(|r| core::verdict(r, seq, policy).is_some()),
                )
                .await;
                self.metrics.waiting.dec();
                let current = match waited {
                    Ok(Ok(r)) => r.clone(),
                    // Timed out, or replication stopped: judge what was reached.
                    _ => self.reached.borrow().clone(),
                };
                core::verdict(&current, seq, policy)
                    .map(Ok)
                    .unwrap_or_else(|| core::timed_out(&current, seq, policy))
            }
        };
        match outcome {
            Ok(acked) if policy == AckPolicy::Async => Ok(acked),
            Ok(acked) => {
                let counter = if acked.degraded {
                    &self.metrics.acks_degraded
                } else {
                    &self.metrics.acks_reached
                };
                counter.inc();
                Ok(acked)
            }
            Err(acked) => {
                self.metrics.acks_timed_out.inc();
                Err(ErrorReply::new(
                    ErrorCode::ReplicationTimeout,
                    format!(
                        "write committed on this node at version {seq}, but only {acked} \
                         replica(s) acknowledged it in time ({policy})"
                    ),
                ))
            }
        }
    }

    /// Makes this replica a primary with a new history that continues the
    /// one it followed (new epoch; replicas of the old history up to here
    /// continue by WAL).
    pub async fn promote(self: &Arc<Self>) -> Result<ReplMeta, ErrorReply> {
        if self.is_primary() {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "this node is already a primary",
            ));
        }
        self.stop_follower().await;
        if !matches!(self.store.install_marker().await, Ok(None)) {
            // Partial data must never become a primary: go on following.
            let following = lock(&self.state).following.clone();
            if let Some(primary) = following {
                self.spawn_follower(primary);
            }
            return Err(ErrorReply::new(
                ErrorCode::Unavailable,
                "this replica is in the middle of a full sync: its data is partial and it \
                 cannot be promoted; promote another replica",
            ));
        }
        let old = self.meta();
        let seq = self.store.applied_seq();
        let meta = ReplMeta {
            repl_id: ReplId(rand::random()),
            epoch: Epoch(old.epoch.0 + 1),
            previous: Some(Position {
                repl_id: old.repl_id,
                epoch: old.epoch,
                seq,
            }),
        };
        self.set_meta(meta)
            .await
            .map_err(|e| ErrorReply::new(ErrorCode::Internal, e.to_string()))?;
        {
            let mut state = lock(&self.state);
            state.following = None;
            state.follow = ReplicaCore::default();
        }
        tracing::warn!(epoch = meta.epoch.0, %seq, "promoted to primary");
        Ok(meta)
    }

    /// Makes this node follow `primary` (its replication address).
    pub async fn replicate_from(self: &Arc<Self>, primary: String) -> Result<(), ErrorReply> {
        if split_host(&primary).is_none() {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!("expected HOST:PORT, got {primary:?}"),
            ));
        }
        if self.identity.is_none() {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "this node has no cluster certificates (replication.tls)",
            ));
        }
        self.stop_follower().await;
        {
            let mut state = lock(&self.state);
            state.following = Some(primary.clone());
            state.follow = ReplicaCore::default();
        }
        // Replicas of this node now have no primary here: drop them.
        self.with_primary(|p, _, out| p.clear(out));
        tracing::warn!(%primary, "now a replica");
        self.spawn_follower(primary);
        Ok(())
    }

    fn spawn_follower(self: &Arc<Self>, primary: String) {
        let task = tokio::spawn(replica::follow(self.clone(), primary));
        // Never two followers: one racing role change must not leave the
        // old one applying another primary's records.
        if let Some(old) = lock(&self.follower).replace(task) {
            old.abort();
        }
    }

    async fn stop_follower(&self) {
        let task = lock(&self.follower).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Makes the replication listener also accept links speaking `alpn`
    /// and hand them to the returned receiver (a full one refuses them).
    /// Call before [`Replication::start`].
    pub fn accept_protocol(&self, alpn: &'static [u8]) -> mpsc::Receiver<Link> {
        let (tx, rx) = mpsc::channel(64);
        lock(&self.protocols).push((alpn, tx));
        rx
    }

    /// Where a link speaking `alpn` goes, if another protocol took it.
    fn protocol_for(&self, alpn: &[u8]) -> Option<mpsc::Sender<Link>> {
        lock(&self.protocols)
            .iter()
            .find(|(ours, _)| *ours == alpn)
            .map(|(_, tx)| tx.clone())
    }

    /// Where this node's checkpoints for others go (full syncs, slot
    /// migrations): emptied at every start.
    pub fn scratch_dir(&self) -> &std::path::Path {
        self.snapshots.dir()
    }

    /// The node-link endpoint, once [`Replication::start`] bound it.
    pub fn link_endpoint(&self) -> Option<LinkEndpoint> {
        lock(&self.endpoint).clone()
    }

    /// The endpoint for outgoing node links (the listener's, or a client-only one).
    fn client_endpoint(&self, peer: SocketAddr) -> Result<LinkEndpoint, ReplError> {
        let mut slot = lock(&self.endpoint);
        if let Some(endpoint) = &*slot {
            return Ok(endpoint.clone());
        }
        let identity = self
            .identity
            .clone()
            .ok_or_else(|| ReplError::Link("no cluster certificates".into()))?;
        let endpoint = LinkEndpoint::client(peer, identity, link_limits(&self.cfg))?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// A consistent copy of what `info` and the metrics show, taken under one
    /// lock (and released before any formatting).
    fn view(&self) -> View {
        let state = lock(&self.state);
        View {
            meta: state.meta,
            following: state.following.clone(),
            follow: state.follow.clone(),
            replicas: state.primary.replicas().clone(),
            in_sync: state.primary.in_sync().cloned(),
            now_ms: self.now_ms(),
        }
    }

    /// `(name, value)` lines for `Info`.
    pub fn info(&self) -> Vec<(String, String)> {
        let v = self.view();
        let role = if v.following.is_none() {
            "primary"
        } else {
            "replica"
        };
        let mut out = vec![
            ("role".to_string(), role.to_string()),
            ("repl_id".into(), hex::encode(v.meta.repl_id.0)),
            ("repl_epoch".into(), v.meta.epoch.0.to_string()),
            ("default_ack".into(), self.default_ack().to_string()),
        ];
        let last = self.store.applied_seq();
        if let Some(primary) = v.following {
            let follow = v.follow;
            out.push(("primary".into(), primary));
            out.push(("replication_state".into(), follow.state.name().into()));
            out.push((
                "lag_records".into(),
                follow.primary_last.0.saturating_sub(last.0).to_string(),
            ));
            if let Some(at) = follow.last_contact_ms {
                let secs = v.now_ms.saturating_sub(at) as f64 / 1000.0;
                out.push(("last_contact_secs".into(), format!("{secs:.1}")));
            }
            if let Some((done, total, started_ms)) = follow.full_sync {
                out.push(("full_sync_bytes_done".into(), done.to_string()));
                out.push(("full_sync_bytes_total".into(), total.to_string()));
                let eta = eta(done, total, v.now_ms.saturating_sub(started_ms));
                out.push(("full_sync_eta_secs".into(), format!("{eta:.0}")));
            }
            if let Some(e) = follow.last_error {
                out.push(("replication_error".into(), e));
            }
        }
        let connected = v
            .replicas
            .values()
            .filter(|r| r.phase != Phase::Disconnected)
            .count();
        out.push(("connected_replicas".into(), connected.to_string()));
        if let Some(members) = &v.in_sync {
            let names: Vec<&str> = members.iter().map(String::as_str).collect();
            out.push(("in_sync".into(), names.join(",")));
        }
        for (name, r) in &v.replicas {
            let state = match r.phase {
                Phase::FullSync {
                    done,
                    total,
                    started_ms,
                } => format!(
                    "{} {done}/{total} bytes, eta {:.0}s",
                    r.phase.name(),
                    eta(done, total, v.now_ms.saturating_sub(started_ms))
                ),
                phase => phase.name().to_string(),
            };
            out.push((
                format!("replica.{name}"),
                format!(
                    "{state}, received {}, durable {}, lag {} records",
                    r.received,
                    r.durable,
                    last.0.saturating_sub(r.received.0)
                ),
            ));
        }
        out
    }
}

/// Transport settings of node links: keep-alive, room for snapshot
/// streams and large record batches.
fn link_limits(cfg: &ReplConfig) -> crate::net::TransportLimits {
    crate::net::TransportLimits {
        max_streams: 16,
        // The same 5 missed heartbeats the replica waits before it reconnects,
        // so a dead replica stops holding `sync` writes back as soon.
        idle_timeout: Duration::from_millis(cfg.heartbeat_ms * 5),
        stream_window_bytes: 16 << 20,
        connection_window_bytes: 64 << 20,
        keep_alive: Some(Duration::from_millis(cfg.heartbeat_ms)),
        max_uni_streams: 4,
    }
}
