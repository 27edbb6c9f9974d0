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

mod meta;
mod primary;
pub mod proto;
mod replica;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use meta::ReplMeta;
pub use proto::Position;

use crate::metrics::{Counter, Exposition};
use crate::net::tls::{ClusterIdentity, ClusterTls, TlsError};
use crate::proto::{ErrorCode, ErrorReply};
use crate::store::{Store, StoreError, WalHold};
use crate::types::{AckPolicy, AckPolicyText, Epoch, OnTimeout, ReplId, Seq};

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
    /// This node's name in the primary's metrics and logs (default: the
    /// client listen address).
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

/// Splits `host:port` (or `[v6]:port`) into the TLS server name and port.
fn split_host(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
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
    /// A malformed frame.
    #[error(transparent)]
    Frame(#[from] proto::FrameError),
    /// The peer refused or broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl From<quinn::ConnectionError> for ReplError {
    fn from(e: quinn::ConnectionError) -> Self {
        ReplError::Link(e.to_string())
    }
}

impl From<quinn::WriteError> for ReplError {
    fn from(e: quinn::WriteError) -> Self {
        ReplError::Link(e.to_string())
    }
}

impl From<quinn::ReadExactError> for ReplError {
    fn from(e: quinn::ReadExactError) -> Self {
        ReplError::Link(e.to_string())
    }
}

/// How a replica session stands, as the primary sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a snapshot: never counted for acks.
    FullSync { done: u64, total: u64 },
    /// Following the WAL.
    Streaming,
    /// Not connected.
    Disconnected,
}

/// One replica, as the primary tracks it.
#[derive(Debug)]
struct ReplicaEntry {
    phase: Phase,
    received: Seq,
    durable: Seq,
    last_seen: Instant,
    /// Keeps the WAL it still needs (retention, I7); dropped past the budget.
    hold: Option<WalHold>,
    /// The full sync's start, for the ETA.
    full_sync_started: Option<Instant>,
    /// Which session owns the entry (a reconnect replaces an older one).
    generation: u64,
}

/// What a replica knows about its own link.
#[derive(Debug, Clone, Default)]
struct FollowStatus {
    state: FollowState,
    primary_last: Seq,
    primary_client_addr: Option<String>,
    last_contact: Option<Instant>,
    full_sync: Option<(u64, u64, Instant)>,
    last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum FollowState {
    #[default]
    Connecting,
    FullSync,
    Streaming,
}

impl FollowState {
    fn name(self) -> &'static str {
        match self {
            FollowState::Connecting => "connecting",
            FollowState::FullSync => "full_sync",
            FollowState::Streaming => "streaming",
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct ReplMetrics {
    acks_reached: Counter,
    acks_degraded: Counter,
    acks_timed_out: Counter,
    waiting: AtomicI64,
    full_syncs_started: Counter,
    full_syncs_resumed: Counter,
    full_syncs_completed: Counter,
    full_sync_bytes_sent: Counter,
    records_sent: Counter,
    records_applied: Counter,
}

/// What a write reached before its reply (I6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Replicas that acknowledged it.
    pub replicas: u32,
    /// Fewer than the policy asked for (a degraded semi-sync, or a sync
    /// with no replica in sync).
    pub degraded: bool,
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
    endpoint: Mutex<Option<quinn::Endpoint>>,
    meta: Mutex<ReplMeta>,
    /// `Some(primary)` while this node is a replica.
    following: Mutex<Option<String>>,
    follower: Mutex<Option<JoinHandle<()>>>,
    follow: Mutex<FollowStatus>,
    replicas: Mutex<HashMap<String, ReplicaEntry>>,
    /// Bumped on every acknowledgement; writers waiting for acks watch it.
    acks: watch::Sender<u64>,
    snapshots: primary::Snapshots,
    metrics: ReplMetrics,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("node", &self.node_name())
            .field("following", &*lock(&self.following))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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
        let snapshots_dir = data_dir.join("repl-snapshots");
        // Leftovers of a previous run are useless: their sessions are gone.
        let _ = std::fs::remove_dir_all(&snapshots_dir);
        Ok(Arc::new(Replication {
            store,
            following: Mutex::new(cfg.replica_of.clone()),
            cfg,
            data_dir: data_dir.to_path_buf(),
            node_name: OnceLock::new(),
            client_addr: OnceLock::new(),
            identity,
            endpoint: Mutex::new(None),
            meta: Mutex::new(meta),
            follower: Mutex::new(None),
            follow: Mutex::new(FollowStatus::default()),
            replicas: Mutex::new(HashMap::new()),
            acks: watch::Sender::new(0),
            snapshots: primary::Snapshots::new(snapshots_dir),
            metrics: ReplMetrics::default(),
        }))
    }

    /// Starts serving replicas (if a listener is configured), following the
    /// primary (if this node is a replica), and the retention task.
    /// `client_addr` is where this node serves clients. Returns the bound
    /// replication address.
    pub fn start(
        self: &Arc<Self>,
        client_addr: SocketAddr,
    ) -> Result<Option<SocketAddr>, ReplError> {
        let _ = self.client_addr.set(client_addr.to_string());
        let name = self
            .cfg
            .node_name
            .clone()
            .unwrap_or_else(|| client_addr.to_string());
        let _ = self.node_name.set(name);
        let mut bound = None;
        if let (Some(listen), Some(identity)) = (self.cfg.listen, &self.identity) {
            let server = identity.server_config(link_limits(&self.cfg).transport_config())?;
            let endpoint =
                crate::net::endpoint(listen, Some(server)).map_err(|source| ReplError::Io {
                    path: PathBuf::from(listen.to_string()),
                    source,
                })?;
            bound = Some(endpoint.local_addr().map_err(|source| ReplError::Io {
                path: PathBuf::from(listen.to_string()),
                source,
            })?);
            *lock(&self.endpoint) = Some(endpoint.clone());
            tokio::spawn(primary::serve(self.clone(), endpoint));
        }
        tokio::spawn(primary::retention(Arc::downgrade(self)));
        if let Some(primary) = lock(&self.following).clone() {
            self.spawn_follower(primary);
        }
        Ok(bound)
    }

    /// The store replicated.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn node_name(&self) -> &str {
        self.node_name.get().map_or("strata", String::as_str)
    }

    /// Whether this node accepts writes.
    pub fn is_primary(&self) -> bool {
        lock(&self.following).is_none()
    }

    /// For `ReadOnlyReplica` replies: where clients reach the primary.
    pub fn leader_hint(&self) -> Option<String> {
        let follow = lock(&self.follow);
        follow
            .primary_client_addr
            .clone()
            .or_else(|| lock(&self.following).clone())
    }

    /// Whether reads may be served: not while a full sync replaces the data.
    pub fn serves_reads(&self) -> bool {
        !(lock(&self.following).is_some() && lock(&self.follow).state == FollowState::FullSync)
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
        *lock(&self.meta)
    }

    /// Persists (fsynced, off the async threads) and adopts a history.
    async fn set_meta(&self, meta: ReplMeta) -> Result<(), ReplError> {
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || meta.save(&dir))
            .await
            .map_err(|e| ReplError::Link(e.to_string()))??;
        *lock(&self.meta) = meta;
        Ok(())
    }

    fn bump_acks(&self) {
        self.acks.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits until the write at `seq` reached what `policy` asks for, or
    /// its timeout. Never claims more than was reached (I6).
    ///
    /// # Errors
    /// `ReplicationTimeout` for a `sync` write, or a `semi-sync` one with
    /// `on_timeout: fail`, whose replicas did not answer in time (the write
    /// is committed on this node all the same).
    pub async fn await_acks(&self, seq: Seq, policy: AckPolicy) -> Result<Acked, ErrorReply> {
        let (want, timeout_ms, on_timeout) = match policy {
            AckPolicy::Async => {
                let (received, _, _) = self.count(seq);
                return Ok(Acked {
                    replicas: received,
                    degraded: false,
                });
            }
            AckPolicy::SemiSync {
                replicas,
                timeout_ms,
                on_timeout,
            } => (Want::Received(replicas), timeout_ms, on_timeout),
            AckPolicy::Sync { timeout_ms } => (Want::AllDurable, timeout_ms, OnTimeout::Fail),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        let mut changes = self.acks.subscribe();
        self.metrics.waiting.fetch_add(1, Ordering::Relaxed);
        let result = loop {
            changes.mark_unchanged();
            let (received, durable, in_sync) = self.count(seq);
            let reached = match want {
                Want::Received(k) => (received >= k).then_some(received),
                Want::AllDurable if in_sync == 0 => {
                    // No replica to wait for: say so rather than wait out the timeout.
                    break Ok(Acked {
                        replicas: 0,
                        degraded: true,
                    });
                }
                Want::AllDurable => (durable >= in_sync).then_some(durable),
            };
            if let Some(replicas) = reached {
                break Ok(Acked {
                    replicas,
                    degraded: false,
                });
            }
            let acked = match want {
                Want::Received(_) => received,
                Want::AllDurable => durable,
            };
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break Err(acked);
                    }
                }
                () = tokio::time::sleep_until(deadline) => break Err(acked),
            }
        };
        self.metrics.waiting.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(acked) if acked.degraded => {
                self.metrics.acks_degraded.inc();
                Ok(acked)
            }
            Ok(acked) => {
                self.metrics.acks_reached.inc();
                Ok(acked)
            }
            Err(acked) if on_timeout == OnTimeout::Degrade => {
                self.metrics.acks_degraded.inc();
                Ok(Acked {
                    replicas: acked,
                    degraded: true,
                })
            }
            Err(acked) => {
                self.metrics.acks_timed_out.inc();
                Err(ErrorReply::new(
                    ErrorCode::ReplicationTimeout,
                    format!(
                        "write committed on this node at version {seq}, but only {acked} \
                         replica(s) acknowledged it within {timeout_ms} ms ({policy})"
                    ),
                ))
            }
        }
    }

    /// Streaming replicas that received `seq`, that made it durable, and
    /// how many are in sync (streaming) at all.
    fn count(&self, seq: Seq) -> (u32, u32, u32) {
        let replicas = lock(&self.replicas);
        let mut out = (0, 0, 0);
        for r in replicas.values() {
            if r.phase != Phase::Streaming {
                continue;
            }
            out.2 += 1;
            out.0 += u32::from(r.received >= seq);
            out.1 += u32::from(r.durable >= seq);
        }
        out
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
            if let Some(primary) = lock(&self.following).clone() {
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
        *lock(&self.following) = None;
        *lock(&self.follow) = FollowStatus::default();
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
        *lock(&self.following) = Some(primary.clone());
        *lock(&self.follow) = FollowStatus::default();
        // Replicas of this node now have no primary here: drop them.
        lock(&self.replicas).clear();
        self.bump_acks();
        tracing::warn!(%primary, "now a replica");
        self.spawn_follower(primary);
        Ok(())
    }

    fn spawn_follower(self: &Arc<Self>, primary: String) {
        let task = tokio::spawn(replica::follow(self.clone(), primary));
        *lock(&self.follower) = Some(task);
    }

    async fn stop_follower(&self) {
        let task = lock(&self.follower).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// The endpoint for outgoing node links (the listener's, or a client-only one).
    fn client_endpoint(&self, peer: SocketAddr) -> Result<quinn::Endpoint, ReplError> {
        let mut slot = lock(&self.endpoint);
        if let Some(endpoint) = &*slot {
            return Ok(endpoint.clone());
        }
        let any: SocketAddr = if peer.is_ipv6() {
            "[::]:0".parse().expect("address")
        } else {
            "0.0.0.0:0".parse().expect("address")
        };
        let endpoint = crate::net::endpoint(any, None).map_err(|source| ReplError::Io {
            path: PathBuf::from(any.to_string()),
            source,
        })?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// `(name, value)` lines for `Info`.
    pub fn info(&self) -> Vec<(String, String)> {
        let meta = self.meta();
        let mut out = vec![
            (
                "role".to_string(),
                if self.is_primary() {
                    "primary".into()
                } else {
                    "replica".into()
                },
            ),
            ("repl_id".into(), hex::encode(meta.repl_id.0)),
            ("repl_epoch".into(), meta.epoch.0.to_string()),
            ("default_ack".into(), self.default_ack().to_string()),
        ];
        if let Some(primary) = lock(&self.following).clone() {
            let follow = lock(&self.follow).clone();
            let applied = self.store.applied_seq();
            out.push(("primary".into(), primary));
            out.push(("replication_state".into(), follow.state.name().into()));
            out.push((
                "lag_records".into(),
                follow.primary_last.0.saturating_sub(applied.0).to_string(),
            ));
            if let Some(at) = follow.last_contact {
                out.push((
                    "last_contact_secs".into(),
                    format!("{:.1}", at.elapsed().as_secs_f64()),
                ));
            }
            if let Some((done, total, started)) = follow.full_sync {
                out.push(("full_sync_bytes_done".into(), done.to_string()));
                out.push(("full_sync_bytes_total".into(), total.to_string()));
                out.push((
                    "full_sync_eta_secs".into(),
                    format!("{:.0}", eta(done, total, started)),
                ));
            }
            if let Some(e) = follow.last_error {
                out.push(("replication_error".into(), e));
            }
        }
        let last = self.store.applied_seq();
        let replicas = lock(&self.replicas);
        out.push(("connected_replicas".into(), {
            let n = replicas
                .values()
                .filter(|r| r.phase != Phase::Disconnected)
                .count();
            n.to_string()
        }));
        let mut names: Vec<_> = replicas.keys().cloned().collect();
        names.sort();
        for name in names {
            let r = &replicas[&name];
            let state = match r.phase {
                Phase::Streaming => "streaming".to_string(),
                Phase::Disconnected => "disconnected".to_string(),
                Phase::FullSync { done, total } => format!(
                    "full_sync {done}/{total} bytes, eta {:.0}s",
                    r.full_sync_started.map_or(0.0, |s| eta(done, total, s))
                ),
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

    /// Replication series for `/metrics`.
    pub fn render(&self, e: &mut Exposition) {
        let m = &self.metrics;
        e.family(
            "strata_replication_acks_total",
            "counter",
            "Writes that waited for replica acks, by outcome.",
        )
        .sample(
            "strata_replication_acks_total",
            &[("outcome", "reached")],
            m.acks_reached.get() as f64,
        )
        .sample(
            "strata_replication_acks_total",
            &[("outcome", "degraded")],
            m.acks_degraded.get() as f64,
        )
        .sample(
            "strata_replication_acks_total",
            &[("outcome", "timeout")],
            m.acks_timed_out.get() as f64,
        );
        e.family(
            "strata_replication_waiting_writes",
            "gauge",
            "Writes committed locally and waiting for replica acks.",
        )
        .sample(
            "strata_replication_waiting_writes",
            &[],
            m.waiting.load(Ordering::Relaxed) as f64,
        );
        e.family(
            "strata_replication_records_sent_total",
            "counter",
            "WAL records sent to replicas.",
        )
        .sample(
            "strata_replication_records_sent_total",
            &[],
            m.records_sent.get() as f64,
        );
        e.family(
            "strata_replication_records_applied_total",
            "counter",
            "Records this replica applied from its primary.",
        )
        .sample(
            "strata_replication_records_applied_total",
            &[],
            m.records_applied.get() as f64,
        );
        e.family(
            "strata_full_syncs_total",
            "counter",
            "Full syncs, by event (started and resumed as primary, completed as either).",
        )
        .sample(
            "strata_full_syncs_total",
            &[("event", "started")],
            m.full_syncs_started.get() as f64,
        )
        .sample(
            "strata_full_syncs_total",
            &[("event", "resumed")],
            m.full_syncs_resumed.get() as f64,
        )
        .sample(
            "strata_full_syncs_total",
            &[("event", "completed")],
            m.full_syncs_completed.get() as f64,
        );
        e.family(
            "strata_full_sync_sent_bytes_total",
            "counter",
            "Compressed full-sync bytes sent to replicas.",
        )
        .sample(
            "strata_full_sync_sent_bytes_total",
            &[],
            m.full_sync_bytes_sent.get() as f64,
        );

        let last = self.store.applied_seq();
        let replicas = lock(&self.replicas);
        for (family, help) in [
            (
                "strata_replication_lag_records",
                "Records a replica has not yet acknowledged.",
            ),
            (
                "strata_replication_lag_bytes",
                "WAL bytes a replica has not yet acknowledged.",
            ),
            (
                "strata_replication_lag_seconds",
                "Age of the oldest record a replica has not acknowledged.",
            ),
        ] {
            e.family(family, "gauge", help);
            for (name, r) in replicas.iter() {
                let (bytes, secs) = self.store.lag_behind(r.received);
                let value = match family {
                    "strata_replication_lag_records" => last.0.saturating_sub(r.received.0) as f64,
                    "strata_replication_lag_bytes" => bytes as f64,
                    _ => secs,
                };
                e.sample(family, &[("replica", name)], value);
            }
        }
        e.family(
            "strata_replica_connected",
            "gauge",
            "1 while a replica is connected (by phase).",
        );
        for (name, r) in replicas.iter() {
            let phase = match r.phase {
                Phase::Streaming => "streaming",
                Phase::FullSync { .. } => "full_sync",
                Phase::Disconnected => "disconnected",
            };
            e.sample(
                "strata_replica_connected",
                &[("replica", name), ("phase", phase)],
                f64::from(u8::from(r.phase != Phase::Disconnected)),
            );
        }
        drop(replicas);

        // Full-sync progress: the primary's sends and this replica's receive.
        let mut progress: Vec<(String, u64, u64, f64)> = lock(&self.replicas)
            .iter()
            .filter_map(|(name, r)| match r.phase {
                Phase::FullSync { done, total } => Some((
                    name.clone(),
                    done,
                    total,
                    r.full_sync_started.map_or(0.0, |s| eta(done, total, s)),
                )),
                _ => None,
            })
            .collect();
        if let Some((done, total, started)) = lock(&self.follow).full_sync {
            progress.push(("self".into(), done, total, eta(done, total, started)));
        }
        for (family, help) in [
            (
                "strata_full_sync_bytes_done",
                "Full-sync bytes transferred so far.",
            ),
            (
                "strata_full_sync_bytes_total",
                "Full-sync bytes to transfer.",
            ),
            (
                "strata_full_sync_eta_seconds",
                "Estimated seconds until a full sync completes.",
            ),
        ] {
            e.family(family, "gauge", help);
            for (name, done, total, eta) in &progress {
                let value = match family {
                    "strata_full_sync_bytes_done" => *done as f64,
                    "strata_full_sync_bytes_total" => *total as f64,
                    _ => *eta,
                };
                e.sample(family, &[("replica", name)], value);
            }
        }
        let follow = lock(&self.follow);
        e.family(
            "strata_replica_lag_records",
            "gauge",
            "On a replica: records its primary has that it has not applied.",
        );
        if !self.is_primary() {
            e.sample(
                "strata_replica_lag_records",
                &[],
                follow.primary_last.0.saturating_sub(last.0) as f64,
            );
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Received(u32),
    AllDurable,
}

/// Seconds left at the average rate so far.
fn eta(done: u64, total: u64, started: Instant) -> f64 {
    let elapsed = started.elapsed().as_secs_f64();
    if done == 0 || elapsed <= 0.0 {
        return 0.0;
    }
    total.saturating_sub(done) as f64 * elapsed / done as f64
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

/// Reads one frame from a QUIC stream; `None` at a clean end of stream.
async fn read_frame<T: for<'de> Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
) -> Result<Option<T>, ReplError> {
    let mut header = [0u8; proto::FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let (len, crc) = proto::decode_header(header)?;
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body).await?;
    Ok(Some(proto::decode_body(crc, &body)?))
}

/// Writes one frame.
async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, msg: &T) -> Result<(), ReplError> {
    send.write_all(&proto::encode(msg)).await?;
    Ok(())
}
