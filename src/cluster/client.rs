//! The cluster-mode client ("smart client"): routes every keyed request to
//! the primary of the key's shard, computed locally from the cluster map
//! (proto-docs/cluster.md §1–§3), over [`Client`] connections opened lazily,
//! one pool per primary.
//!
//! ```text
//! ClusterClient::connect(seeds) --ClusterMap--> Routing { map, slot table }
//! get(key) -> key_slot -> SlotTable::owner -> shard's primary -> Client
//!    WrongShard / connection failure -> refresh the map -> resend (bounded)
//! ```
//!
//! # Trust
//!
//! Every node is dialled with a [`ClientConfig`] made by the
//! [`ClusterClientConfig`]'s factory for that node's client address. A
//! cluster needs trust that holds for every node: a [`ServerTrust::CaFile`]
//! whose CA signed every node's client certificate (e.g. the cluster CA of
//! `strata-admin gen-certs`, with each node serving its cluster certificate
//! via `--tls-cert`/`--tls-key`), or a factory that pins each node's own
//! fingerprint. One [`ServerTrust::Pin`] for all nodes fails on every node
//! but the pinned one.
//!
//! # Multi-key requests
//!
//! `get_many`, `exists` and `set_many` are split by shard, the parts sent
//! concurrently and the answers merged in request order (`exists` sums).
//! A `set_many` is atomic **per shard only**: across shards some parts may
//! be applied while another fails. Keys sharing a hash tag (`{user1}.a`,
//! `{user1}.b`) share a slot, so such a `set_many` stays one atomic request
//! on one shard.
//!
//! # Redirects and retries
//!
//! A `WrongShard` reply means the node applied nothing, so the request is
//! always resent after the map is refreshed (from the hinted node first).
//! After a transport failure the request is resent only if it was never
//! sent, or if [`Request::is_idempotent`]; the [`Client`] underneath has
//! already applied its own retry rules. `Unavailable` waits its
//! `retry_after_ms`, then refreshes the map from the other nodes first (a
//! primary that lost its lease may be cut off, its own map stale). All of
//! this within [`ClusterClientConfig::with_max_attempts`] attempts, except
//! that rounds in which every miss was an `Unavailable` do not count while
//! their waits add up to at most [`ClusterClientConfig::with_unavailable_patience`]
//! (5 s by default): a slot cutting over answers `Unavailable` for a moment,
//! and a client sees at most a delay. A map is only ever replaced by one
//! with a higher version.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::task::JoinSet;

use super::ring::{Ring, RingError, ShardId, SlotTable};
use super::slot::key_slot;
use crate::net::client::{
    AckPolicy, Client, ClientConfig, ClientError, ClusterMapReply, Condition, DeadlineState,
    DeleteOutcome, Deleted, Entry, ErrorCode, Incremented, Request, Response, Seq, ServerTrust,
    SetEntry, SetOptions, SetOutcome, TtlState, Updated, WriteReply,
};

/// Default bound on the attempts of one request (the first included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// How often a request waiting on a shard's primary has the map looked
/// at again, to give up on a primary that was failed over.
const MAP_WATCH: Duration = Duration::from_secs(1);

/// Wait before resending after `Unavailable` without a `retry_after_ms`.
const UNAVAILABLE_WAIT: Duration = Duration::from_millis(100);

/// Longest wait honoured from a `retry_after_ms`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Default for [`ClusterClientConfig::with_unavailable_patience`].
pub const DEFAULT_UNAVAILABLE_PATIENCE: Duration = Duration::from_secs(5);

/// Why a cluster-client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterClientError {
    /// The configuration cannot work (no seeds, zero attempts).
    #[error("invalid cluster client configuration: {0}")]
    Config(String),
    /// No node answered with a cluster map.
    #[error("no node answered with a cluster map ({tried} tried): {last}")]
    NoMap {
        /// How many addresses were tried.
        tried: usize,
        /// The last failure.
        last: String,
    },
    /// The map cannot route keys: no shards yet, or a shard's primary is
    /// not among the nodes.
    #[error("cluster map version {version} cannot route keys: {reason}")]
    BadMap {
        /// The map's version.
        version: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A node failed the request (after the retries that were allowed).
    #[error("{addr}: {source}")]
    Node {
        /// The node's client address.
        addr: String,
        /// What it answered, or how the connection failed.
        #[source]
        source: ClientError,
    },
    /// A scan cursor that this client did not make.
    #[error("invalid cluster scan cursor: {0}")]
    BadCursor(String),
}

impl ClusterClientError {
    /// The server's error code, when a node answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClusterClientError::Node { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The underlying single-node error, if any.
    pub fn client_error(&self) -> Option<&ClientError> {
        match self {
            ClusterClientError::Node { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Makes the [`ClientConfig`] for one node from its client address.
pub type NodeConfigFn = dyn Fn(&str) -> ClientConfig + Send + Sync;

/// How a [`ClusterClient`] reaches the nodes.
#[derive(Clone)]
pub struct ClusterClientConfig {
    /// Called with a node's client address (`host:port`) for every pool the
    /// client opens: trust, token, timeouts are the same as for [`Client`].
    node_config: Arc<NodeConfigFn>,
    max_attempts: u32,
    /// Applied to writes that do not name their own policy. (The
    /// [`ClientConfig`]'s own default applies only to [`Client`]'s typed
    /// calls, which this client does not use.)
    default_ack: Option<AckPolicy>,
    /// Spread reads over each shard's primary and replicas.
    read_from_replicas: bool,
    /// How long in all a request waits out `Unavailable` answers that name
    /// a retry time, before those count as attempts.
    unavailable_patience: Duration,
}

impl fmt::Debug for ClusterClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterClientConfig")
            .field("max_attempts", &self.max_attempts)
            .field("unavailable_patience", &self.unavailable_patience)
            .field("default_ack", &self.default_ack)
            .finish_non_exhaustive()
    }
}

impl ClusterClientConfig {
    /// Every node dialled with `node_config(client_addr)`.
    pub fn new(node_config: impl Fn(&str) -> ClientConfig + Send + Sync + 'static) -> Self {
        ClusterClientConfig {
            node_config: Arc::new(node_config),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            default_ack: None,
            read_from_replicas: false,
            unavailable_patience: DEFAULT_UNAVAILABLE_PATIENCE,
        }
    }

    /// Every node dialled with `ClientConfig::new(addr, trust)`, then
    /// `customize` (token, timeouts, ...). `trust` must hold for every node:
    /// a CA, not one node's pin (see the module docs).
    pub fn with_trust(
        trust: ServerTrust,
        customize: impl Fn(ClientConfig) -> ClientConfig + Send + Sync + 'static,
    ) -> Self {
        Self::new(move |addr| customize(ClientConfig::new(addr, trust.clone())))
    }

    /// At most this many attempts per request (at least 1; default
    /// [`DEFAULT_MAX_ATTEMPTS`]).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Send reads (`get`, `get_many`, `exists`, `ttl`) round-robin to each
    /// shard's primary and replicas instead of the primary alone (default
    /// off). Replication is asynchronous unless writes ask for more, so a
    /// read from a replica may miss a write the primary has acknowledged;
    /// a replica in a full sync answers `Unavailable` and the read is
    /// retried on the next node.
    pub fn with_read_from_replicas(mut self, on: bool) -> Self {
        self.read_from_replicas = on;
        self
    }

    /// How long in all one request sleeps on `Unavailable` answers (a
    /// slot cutting over to its new shard, a primary waiting for its first
    /// lease) without counting them as attempts (default
    /// [`DEFAULT_UNAVAILABLE_PATIENCE`]; zero: every answer is an
    /// attempt). Such a refusal applied nothing, and lasts a moment. Only
    /// the sleeps (the answer's `retry_after_ms`, else 100 ms) count
    /// towards it, not the requests and map refreshes between them.
    pub fn with_unavailable_patience(mut self, patience: Duration) -> Self {
        self.unavailable_patience = patience;
        self
    }

    /// The acknowledgement policy of writes that name none (default: each
    /// node's own default).
    pub fn with_default_ack(mut self, ack: Option<AckPolicy>) -> Self {
        self.default_ack = ack;
        self
    }
}

/// What the client routes by: one map and its slot table.
struct Routing {
    map: ClusterMapReply,
    table: SlotTable,
    /// Each shard's primary's client address.
    primaries: BTreeMap<ShardId, String>,
    /// Each shard's replicas' client addresses.
    replicas: BTreeMap<ShardId, Vec<String>>,
}

impl Routing {
    fn new(map: ClusterMapReply) -> Result<Routing, ClusterClientError> {
        let bad = |reason: String| ClusterClientError::BadMap {
            version: map.version,
            reason,
        };
        let ids: Vec<ShardId> = map.shards.iter().map(|s| ShardId(s.id)).collect();
        let table = Ring::new(&ids, map.vnodes)
            .map_err(|e: RingError| bad(e.to_string()))?
            .slot_table();
        let mut primaries = BTreeMap::new();
        for shard in &map.shards {
            let node = map
                .nodes
                .iter()
                .find(|n| n.id == shard.primary)
                .ok_or_else(|| {
                    bad(format!(
                        "shard {}'s primary {} is not a node of the map",
                        shard.id, shard.primary
                    ))
                })?;
            primaries.insert(ShardId(shard.id), node.client_addr.clone());
        }
        let replicas = map
            .shards
            .iter()
            .map(|shard| {
                let addrs = shard
                    .replicas
                    .iter()
                    .filter_map(|id| map.nodes.iter().find(|n| n.id == *id))
                    .map(|n| n.client_addr.clone())
                    .collect();
                (ShardId(shard.id), addrs)
            })
            .collect();
        Ok(Routing {
            map,
            table,
            primaries,
            replicas,
        })
    }

    fn shard_of(&self, key: &[u8]) -> ShardId {
        self.table.owner(key_slot(key))
    }

    /// The `turn`-th of the shard's primary and replicas, round-robin.
    fn reader(&self, shard: ShardId, turn: u64) -> Result<&str, ClusterClientError> {
        let replicas = self.replicas.get(&shard).map_or(&[][..], Vec::as_slice);
        let n = replicas.len() as u64 + 1;
        match usize::try_from(turn % n)
            .ok()
            .and_then(|i| i.checked_sub(1))
        {
            Some(i) if i < replicas.len() => Ok(replicas[i].as_str()),
            _ => self.primary(shard),
        }
    }

    fn primary(&self, shard: ShardId) -> Result<&str, ClusterClientError> {
        self.primaries
            .get(&shard)
            .map(String::as_str)
            .ok_or_else(|| ClusterClientError::BadMap {
                version: self.map.version,
                reason: format!("no shard {shard}"),
            })
    }
}

/// One page of [`ClusterClient::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterScanPage {
    /// `(key, entry)` pairs: ascending key order within one shard; shards
    /// follow each other in shard id order.
    pub entries: Vec<(Bytes, Entry)>,
    /// Pass back as `cursor` for the next page; `None` when every shard
    /// has been scanned. Opaque.
    pub next_cursor: Option<Bytes>,
}

/// Version byte of an encoded [`ClusterClient::scan`] cursor.
const CURSOR_V1: u8 = 1;

/// `[1][shard id u32 LE][node cursor...]`; an empty node cursor starts the
/// shard from its first key.
fn encode_cursor(shard: ShardId, node_cursor: Option<&Bytes>) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + node_cursor.map_or(0, Bytes::len));
    out.put_u8(CURSOR_V1);
    out.put_u32_le(shard.0);
    if let Some(c) = node_cursor {
        out.put_slice(c);
    }
    out.freeze()
}

fn decode_cursor(cursor: &Bytes) -> Result<(ShardId, Option<Bytes>), ClusterClientError> {
    if cursor.len() < 5 || cursor[0] != CURSOR_V1 {
        return Err(ClusterClientError::BadCursor(format!(
            "{} bytes, not a version {CURSOR_V1} cursor",
            cursor.len()
        )));
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&cursor[1..5]);
    let rest = cursor.slice(5..);
    Ok((
        ShardId(u32::from_le_bytes(id)),
        (!rest.is_empty()).then_some(rest),
    ))
}

/// How one attempt at a part of a request ended, when not with a reply.
enum Miss {
    /// Resend after a refresh; `hint` names where the owner is said to be.
    Redirect { hint: Option<String> },
    /// Resend after `wait`.
    Wait(Duration),
    /// The node could not be reached or the connection failed; resend
    /// after a refresh if the request allows it.
    Transport,
}

/// A cheaply clonable handle on a cluster: the newest map seen and a pool
/// per primary. Every method may be called from many tasks at once.
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterClientConfig,
    seeds: Vec<String>,
    routing: RwLock<Arc<Routing>>,
    /// One refresh at a time; the others wait for it and use its result.
    refreshing: tokio::sync::Mutex<()>,
    pools: Mutex<HashMap<String, Client>>,
    redirects: AtomicU64,
    refreshes: AtomicU64,
    per_shard: Mutex<BTreeMap<ShardId, u64>>,
    /// Turns of the replica round-robin.
    read_turn: AtomicU64,
}

impl fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterClient")
            .field("seeds", &self.inner.seeds)
            .field("map_version", &self.map_version())
            .field("redirects", &self.redirects())
            .finish_non_exhaustive()
    }
}

/// A read lock that survives a panicked writer (the data is a whole
/// `Arc` swapped at once, so it is never half-written).
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unexpected(op: &str, response: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected reply to {op}: {response:?}"))
}

impl ClusterClient {
    /// Fetches the map from the first of `seeds` (client addresses of any
    /// nodes) that answers, and builds the routing from it. No primary is
    /// dialled until a request needs it.
    ///
    /// # Errors
    ///
    /// [`ClusterClientError::Config`] without seeds,
    /// [`ClusterClientError::NoMap`] if no seed answers, and
    /// [`ClusterClientError::BadMap`] if the map has no shards yet.
    pub async fn connect(
        seeds: &[impl AsRef<str>],
        config: ClusterClientConfig,
    ) -> Result<ClusterClient, ClusterClientError> {
        let seeds: Vec<String> = seeds.iter().map(|s| s.as_ref().to_string()).collect();
        if seeds.is_empty() {
            return Err(ClusterClientError::Config("no seed addresses".into()));
        }
        let (map, addr, client) = fetch_first(&config, &seeds).await?;
        let this = Self::build(map, seeds, config)?;
        lock(&this.inner.pools).insert(addr, client);
        Ok(this)
    }

    /// A client that starts from `map` (fetched earlier, perhaps stale)
    /// instead of asking a seed; it refreshes like any other on a redirect.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), without the network.
    pub fn with_map(
        map: ClusterMapReply,
        seeds: &[impl AsRef<str>],
        config: ClusterClientConfig,
    ) -> Result<ClusterClient, ClusterClientError> {
        let seeds = seeds.iter().map(|s| s.as_ref().to_string()).collect();
        Self::build(map, seeds, config)
    }

    fn build(
        map: ClusterMapReply,
        seeds: Vec<String>,
        config: ClusterClientConfig,
    ) -> Result<ClusterClient, ClusterClientError> {
        if config.max_attempts == 0 {
            return Err(ClusterClientError::Config(
                "max_attempts must be at least 1".into(),
            ));
        }
        let routing = Routing::new(map)?;
        Ok(ClusterClient {
            inner: Arc::new(Inner {
                config,
                seeds,
                routing: RwLock::new(Arc::new(routing)),
                refreshing: tokio::sync::Mutex::new(()),
                pools: Mutex::new(HashMap::new()),
                redirects: AtomicU64::new(0),
                refreshes: AtomicU64::new(0),
                per_shard: Mutex::new(BTreeMap::new()),
                read_turn: AtomicU64::new(0),
            }),
        })
    }

    /// The version of the map the client routes by.
    pub fn map_version(&self) -> u64 {
        read(&self.inner.routing).map.version
    }

    /// The map the client routes by.
    pub fn map(&self) -> ClusterMapReply {
        read(&self.inner.routing).map.clone()
    }

    /// The slot table of the map the client routes by.
    pub fn slot_table(&self) -> SlotTable {
        read(&self.inner.routing).table.clone()
    }

    /// The shard owning `key` under the current map.
    pub fn shard_of(&self, key: &[u8]) -> ShardId {
        read(&self.inner.routing).shard_of(key)
    }

    /// `WrongShard` replies followed so far.
    pub fn redirects(&self) -> u64 {
        self.inner.redirects.load(Ordering::Relaxed)
    }

    /// Map refreshes that adopted a newer map.
    pub fn refreshes(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// Requests (parts of split requests count one each) sent per shard.
    pub fn requests_by_shard(&self) -> BTreeMap<ShardId, u64> {
        lock(&self.inner.per_shard).clone()
    }

    /// Asks the nodes for the map and adopts it if it is newer; returns the
    /// version routed by afterwards.
    ///
    /// # Errors
    ///
    /// [`ClusterClientError::NoMap`] when no node answers;
    /// [`ClusterClientError::BadMap`] for a newer map that cannot route.
    pub async fn refresh(&self) -> Result<u64, ClusterClientError> {
        self.refresh_from(None, None, u64::MAX).await
    }

    /// Refreshes unless a map newer than `seen` was adopted meanwhile,
    /// asking `hint` first, then the map's nodes, then the seeds; `failed`
    /// (a node that just failed to answer) is asked last.
    async fn refresh_from(
        &self,
        hint: Option<&str>,
        failed: Option<&str>,
        seen: u64,
    ) -> Result<u64, ClusterClientError> {
        let _one = self.inner.refreshing.lock().await;
        let current = self.map_version();
        if seen != u64::MAX && current > seen {
            return Ok(current);
        }
        let mut candidates: Vec<String> = hint.map(str::to_string).into_iter().collect();
        {
            let routing = read(&self.inner.routing);
            candidates.extend(routing.primaries.values().cloned());
            candidates.extend(routing.map.nodes.iter().map(|n| n.client_addr.clone()));
        }
        candidates.extend(self.inner.seeds.iter().cloned());
        let mut seen_addrs = std::collections::HashSet::new();
        candidates.retain(|a| seen_addrs.insert(a.clone()));
        if let Some(failed) = failed
            && let Some(at) = candidates.iter().position(|a| a == failed)
        {
            let addr = candidates.remove(at);
            candidates.push(addr);
        }
        let mut last = String::from("no candidates");
        for addr in &candidates {
            let client = match self.pool(addr).await {
                Ok(client) => client,
                Err(e) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            match client.cluster_map_since(current).await {
                Ok(Some(map)) => return self.adopt(map),
                Ok(None) => return Ok(current),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(ClusterClientError::NoMap {
            tried: candidates.len(),
            last,
        })
    }

    /// Routes by `map` if it is newer than the current one.
    fn adopt(&self, map: ClusterMapReply) -> Result<u64, ClusterClientError> {
        let current = self.map_version();
        if map.version <= current {
            return Ok(current);
        }
        let routing = Arc::new(Routing::new(map)?);
        let mut slot = self
            .inner
            .routing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // IMPORTANT: a stale map is never adopted, even if a newer one
        // arrived while this one was being built.
        if routing.map.version > slot.map.version {
            *slot = routing;
            self.inner.refreshes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(slot.map.version)
    }

    /// The connection pool to the node at `addr` (a client address), for
    /// requests about the node itself (`info`, `digest`, admin), shared
    /// with the routing.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn node_client(&self, addr: &str) -> Result<Client, ClientError> {
        self.pool(addr).await
    }

    /// The pool for `addr`, connecting it on first use.
    async fn pool(&self, addr: &str) -> Result<Client, ClientError> {
        if let Some(client) = lock(&self.inner.pools).get(addr) {
            return Ok(client.clone());
        }
        let client = Client::connect((self.inner.config.node_config)(addr)).await?;
        let mut pools = lock(&self.inner.pools);
        // Another task may have connected meanwhile: keep the first.
        Ok(pools.entry(addr.to_string()).or_insert(client).clone())
    }

    fn routing(&self) -> Arc<Routing> {
        read(&self.inner.routing).clone()
    }

    /// Sends the parts of a request, one per shard of its keys, and resends
    /// the parts that missed, within the attempt bound. `build` makes the
    /// request for a set of key indices; the answer is each part's indices
    /// with its reply, in no particular order.
    async fn scatter(
        &self,
        keys: &[Bytes],
        build: impl Fn(&[usize]) -> Request,
    ) -> Result<Vec<(Vec<usize>, Response)>, ClusterClientError> {
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        let mut done = Vec::new();
        let mut attempt = 0u32;
        // Time spent waiting out `Unavailable` so far (see
        // `with_unavailable_patience`).
        let mut waited = Duration::ZERO;
        // Where the last WrongShard said a part's owner is, to ask there
        // directly if a refresh brings nothing newer.
        let mut hinted: HashMap<ShardId, String> = HashMap::new();
        loop {
            attempt += 1;
            let routing = self.routing();
            let mut parts: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
            for &i in &pending {
                parts.entry(routing.shard_of(&keys[i])).or_default().push(i);
            }
            let mut tasks = JoinSet::new();
            for (shard, indices) in parts {
                let request = build(&indices);
                let addr = match hinted.remove(&shard) {
                    Some(addr) => addr,
                    None if self.inner.config.read_from_replicas && !request.needs_write() => {
                        let turn = self.inner.read_turn.fetch_add(1, Ordering::Relaxed);
                        routing.reader(shard, turn)?.to_string()
                    }
                    None => routing.primary(shard)?.to_string(),
                };
                *lock(&self.inner.per_shard).entry(shard).or_insert(0) += 1;
                let to_primary = routing.primary(shard).ok() == Some(addr.as_str());
                let this = self.clone();
                tasks.spawn(async move {
                    let result = if to_primary {
                        this.send_to_primary(shard, &addr, request).await
                    } else {
                        this.send_to(&addr, request).await
                    };
                    (shard, addr, indices, result)
                });
            }
            pending.clear();
            let mut redirect_hint: Option<String> = None;
            // A node that failed to answer, or answered Unavailable: the
            // refresh asks it last.
            let mut ask_last: Option<String> = None;
            let mut wait = Duration::ZERO;
            // Whether every part that missed was told to wait.
            let mut only_waits = true;
            let mut failure: Option<ClusterClientError> = None;
            let mut failure_fatal = false;
            let mut retryable = true;
            while let Some(joined) = tasks.join_next().await {
                let (shard, addr, indices, result) =
                    joined.map_err(|e| ClusterClientError::Node {
                        addr: String::new(),
                        source: ClientError::Protocol(format!("request task failed: {e}")),
                    })?;
                match result {
                    Ok(response) => done.push((indices, response)),
                    Err((miss, error, may_resend)) => {
                        let resendable = miss.is_some() && may_resend;
                        retryable &= resendable;
                        only_waits &= matches!(miss, Some(Miss::Wait(_)));
                        match miss {
                            Some(Miss::Redirect { hint }) => {
                                self.inner.redirects.fetch_add(1, Ordering::Relaxed);
                                if let Some(h) = &hint {
                                    hinted.insert(shard, h.clone());
                                    redirect_hint.get_or_insert_with(|| h.clone());
                                }
                            }
                            // A primary without its lease may be cut off
                            // from the cluster, its own map stale.
                            Some(Miss::Wait(d)) => {
                                wait = wait.max(d);
                                ask_last.get_or_insert_with(|| addr.clone());
                            }
                            Some(Miss::Transport) => {
                                ask_last.get_or_insert_with(|| addr.clone());
                            }
                            None => {}
                        }
                        pending.extend(indices);
                        // The error reported is one whose part must not be
                        // resent when there is one: a caller told only of
                        // a redirect would think nothing was applied.
                        if failure.is_none() || (!resendable && !failure_fatal) {
                            failure = Some(ClusterClientError::Node {
                                addr,
                                source: error,
                            });
                            failure_fatal = !resendable;
                        }
                    }
                }
            }
            let Some(failure) = failure else {
                return Ok(done);
            };
            // A round that only waited is not an attempt while the
            // patience lasts: a cutover or a lease wait is a moment.
            let patient = only_waits
                && !wait.is_zero()
                && waited + wait <= self.inner.config.unavailable_patience;
            if patient {
                attempt -= 1;
                waited += wait;
            }
            if !retryable || attempt >= self.inner.config.max_attempts {
                return Err(failure);
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            // A refresh that fails leaves the current map: the hinted
            // address may still answer.
            let _ = self
                .refresh_from(
                    redirect_hint.as_deref(),
                    ask_last.as_deref(),
                    routing.map.version,
                )
                .await;
            if self.map_version() > routing.map.version {
                // The new map decides; hints from the old one do not.
                hinted.clear();
            }
            pending.sort_unstable();
        }
    }

    /// As [`Self::send_to`] for `shard`'s primary at `addr`, given up when
    /// the map, checked every [`MAP_WATCH`] meanwhile, names another
    /// primary: a primary that failed stays silent until the request times
    /// out, while the map names its replacement within the failover
    /// timeout. The request is then resent as after a lost connection.
    async fn send_to_primary(
        &self,
        shard: ShardId,
        addr: &str,
        request: Request,
    ) -> Result<Response, (Option<Miss>, ClientError, bool)> {
        let idempotent = request.is_idempotent();
        tokio::select! {
            result = self.send_to(addr, request) => result,
            version = self.primary_moved(shard, addr) => Err((
                Some(Miss::Transport),
                ClientError::ConnectionLost {
                    reason: format!(
                        "the cluster map (version {version}) made another node shard \
                         {shard}'s primary while the request waited on {addr}"
                    ),
                },
                idempotent,
            )),
        }
    }

    /// Resolves with the map version once the map no longer names `addr`
    /// `shard`'s primary, refreshing it every [`MAP_WATCH`] until then.
    async fn primary_moved(&self, shard: ShardId, addr: &str) -> u64 {
        loop {
            tokio::time::sleep(MAP_WATCH).await;
            // A failed refresh leaves the map as it was: look again later.
            let _ = self.refresh_from(None, Some(addr), u64::MAX).await;
            if self.routing().primary(shard).ok() != Some(addr) {
                return self.map_version();
            }
        }
    }

    /// One attempt at `request` on the node at `addr`. On failure: how it
    /// missed (`None`: not worth resending), the error, and whether the
    /// request may be resent.
    async fn send_to(
        &self,
        addr: &str,
        request: Request,
    ) -> Result<Response, (Option<Miss>, ClientError, bool)> {
        let idempotent = request.is_idempotent();
        let client = match self.pool(addr).await {
            Ok(client) => client,
            // Never sent: always safe to resend.
            Err(e) => return Err((transport_miss(&e), e, true)),
        };
        match client.request(request).await {
            Ok(response) => Ok(response),
            Err(e) => {
                let (miss, may_resend) = match &e {
                    // Nothing was applied (errors.md): always safe. A
                    // node that is no longer its shard's primary (the map
                    // moved on, or this client's map is stale) says
                    // ReadOnlyReplica: refresh and resend as for WrongShard.
                    ClientError::Server {
                        code: ErrorCode::WrongShard | ErrorCode::ReadOnlyReplica,
                        leader_hint,
                        ..
                    } => (
                        Some(Miss::Redirect {
                            hint: leader_hint.clone(),
                        }),
                        true,
                    ),
                    ClientError::Server {
                        code: ErrorCode::Unavailable,
                        retry_after_ms,
                        ..
                    } => (
                        Some(Miss::Wait(
                            retry_after_ms
                                .map(Duration::from_millis)
                                .unwrap_or(UNAVAILABLE_WAIT)
                                .min(MAX_RETRY_AFTER),
                        )),
                        true,
                    ),
                    ClientError::Server { code, .. } => {
                        (None, idempotent || !code.write_may_have_applied())
                    }
                    ClientError::Connect { .. } | ClientError::CircuitOpen { .. } => {
                        (transport_miss(&e), true)
                    }
                    ClientError::Timeout { .. }
                    | ClientError::ConnectionLost { .. }
                    | ClientError::StreamReset { .. } => (transport_miss(&e), idempotent),
                    _ => (None, false),
                };
                Err((miss, e, may_resend))
            }
        }
    }

    /// A single-key request, routed by `key`.
    async fn one(&self, key: &Bytes, request: Request) -> Result<Response, ClusterClientError> {
        let parts = self
            .scatter(std::slice::from_ref(key), |_| request.clone())
            .await?;
        parts
            .into_iter()
            .next()
            .map(|(_, response)| response)
            .ok_or_else(|| ClusterClientError::Node {
                addr: String::new(),
                source: ClientError::Protocol("no reply".into()),
            })
    }

    fn ack(&self, ack: Option<AckPolicy>) -> Option<AckPolicy> {
        ack.or(self.inner.config.default_ack)
    }

    fn protocol(op: &str, response: &Response) -> ClusterClientError {
        ClusterClientError::Node {
            addr: String::new(),
            source: unexpected(op, response),
        }
    }

    /// Reads a key from its shard's primary.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Entry>, ClusterClientError> {
        let key = key.into();
        match self.one(&key, Request::Get { key: key.clone() }).await? {
            Response::Value(entry) => Ok(entry),
            other => Err(Self::protocol("get", &other)),
        }
    }

    /// Writes a key unconditionally, without TTL.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<WriteReply, ClusterClientError> {
        match self.set_with(key, value, SetOptions::new()).await? {
            SetOutcome::Written(reply) => Ok(reply),
            SetOutcome::NotWritten { .. } => Err(ClusterClientError::Node {
                addr: String::new(),
                source: ClientError::Protocol(
                    "an unconditional set was answered NotWritten".into(),
                ),
            }),
        }
    }

    /// Writes a key with a TTL, a condition and an acknowledgement policy,
    /// as [`Client::set_with`].
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn set_with(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<SetOutcome, ClusterClientError> {
        let key = key.into();
        let request = options.request(key.clone(), value.into(), self.ack(options.ack));
        match self.one(&key, request).await? {
            Response::Written(reply) => Ok(SetOutcome::Written(reply)),
            Response::NotWritten { current_version } => {
                Ok(SetOutcome::NotWritten { current_version })
            }
            other => Err(Self::protocol("set", &other)),
        }
    }

    /// Deletes a key.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Deleted, ClusterClientError> {
        let key = key.into();
        let request = Request::Delete {
            key: key.clone(),
            condition: Condition::Always,
            ack: self.ack(None),
        };
        match self.one(&key, request).await? {
            Response::Deleted {
                existed,
                durability,
            } => Ok(Deleted {
                existed,
                durability,
            }),
            other => Err(Self::protocol("delete", &other)),
        }
    }

    /// Deletes a key only if it is at `version`.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn delete_if_version(
        &self,
        key: impl Into<Bytes>,
        version: Seq,
    ) -> Result<DeleteOutcome, ClusterClientError> {
        let key = key.into();
        let request = Request::Delete {
            key: key.clone(),
            condition: Condition::IfVersion(version),
            ack: self.ack(None),
        };
        match self.one(&key, request).await? {
            Response::Deleted {
                existed,
                durability,
            } => Ok(DeleteOutcome::Deleted(Deleted {
                existed,
                durability,
            })),
            Response::NotWritten { current_version } => {
                Ok(DeleteOutcome::NotWritten { current_version })
            }
            other => Err(Self::protocol("delete", &other)),
        }
    }

    /// Adds `delta` to the integer at `key`; never resent once it may have
    /// reached a node (it is not idempotent), except after `WrongShard`.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn incr(&self, key: impl Into<Bytes>, delta: i64) -> Result<i64, ClusterClientError> {
        Ok(self.incr_with(key, delta, None).await?.value)
    }

    /// [`incr`](Self::incr) with an acknowledgement policy, reporting the
    /// durability reached.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn incr_with(
        &self,
        key: impl Into<Bytes>,
        delta: i64,
        ack: Option<AckPolicy>,
    ) -> Result<Incremented, ClusterClientError> {
        let key = key.into();
        let request = Request::Incr {
            key: key.clone(),
            delta,
            ack: self.ack(ack),
        };
        match self.one(&key, request).await? {
            Response::Int { value, durability } => Ok(Incremented { value, durability }),
            other => Err(Self::protocol("incr", &other)),
        }
    }

    /// Sets the TTL of an existing key.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn expire(
        &self,
        key: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<Updated, ClusterClientError> {
        let key = key.into();
        let request = Request::Expire {
            key: key.clone(),
            ttl_ms: ttl_ms(ttl),
            ack: self.ack(None),
        };
        self.updated("expire", &key, request).await
    }

    /// Sets an existing key to expire at the Unix time `at_ms`, as
    /// [`Client::expire_at`].
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn expire_at(
        &self,
        key: impl Into<Bytes>,
        at_ms: u64,
    ) -> Result<Updated, ClusterClientError> {
        let key = key.into();
        let request = Request::ExpireAt {
            key: key.clone(),
            at_ms,
            ack: self.ack(None),
        };
        self.updated("expire_at", &key, request).await
    }

    /// Removes the TTL of an existing key.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn persist(&self, key: impl Into<Bytes>) -> Result<Updated, ClusterClientError> {
        let key = key.into();
        let request = Request::Persist {
            key: key.clone(),
            ack: self.ack(None),
        };
        self.updated("persist", &key, request).await
    }

    async fn updated(
        &self,
        op: &str,
        key: &Bytes,
        request: Request,
    ) -> Result<Updated, ClusterClientError> {
        match self.one(key, request).await? {
            Response::Updated {
                existed,
                durability,
            } => Ok(Updated {
                existed,
                durability,
            }),
            other => Err(Self::protocol(op, &other)),
        }
    }

    /// A key's time to live.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn ttl(&self, key: impl Into<Bytes>) -> Result<TtlState, ClusterClientError> {
        let key = key.into();
        match self.one(&key, Request::Ttl { key: key.clone() }).await? {
            Response::Ttl(state) => Ok(state),
            other => Err(Self::protocol("ttl", &other)),
        }
    }

    /// When a key expires, as [`Client::deadline`].
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn deadline(
        &self,
        key: impl Into<Bytes>,
    ) -> Result<DeadlineState, ClusterClientError> {
        let key = key.into();
        match self
            .one(&key, Request::Deadline { key: key.clone() })
            .await?
        {
            Response::Deadline(state) => Ok(state),
            other => Err(Self::protocol("deadline", &other)),
        }
    }

    /// Reads many keys: split by shard, sent concurrently, one slot per key
    /// in request order.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`]; one failed part fails the call.
    pub async fn get_many<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Entry>>, ClusterClientError> {
        let keys: Vec<Bytes> = keys.into_iter().map(Into::into).collect();
        let parts = self
            .scatter(&keys, |idx| Request::MultiGet {
                keys: idx.iter().map(|&i| keys[i].clone()).collect(),
            })
            .await?;
        let mut out: Vec<Option<Entry>> = vec![None; keys.len()];
        for (indices, response) in parts {
            match response {
                Response::Values(values) if values.len() == indices.len() => {
                    for (i, value) in indices.into_iter().zip(values) {
                        out[i] = value;
                    }
                }
                other => return Err(Self::protocol("multi_get", &other)),
            }
        }
        Ok(out)
    }

    /// How many of the keys exist (a key named twice counts twice), summed
    /// over the shards.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn exists<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, ClusterClientError> {
        let keys: Vec<Bytes> = keys.into_iter().map(Into::into).collect();
        let parts = self
            .scatter(&keys, |idx| Request::Exists {
                keys: idx.iter().map(|&i| keys[i].clone()).collect(),
            })
            .await?;
        let mut total = 0u64;
        for (_, response) in parts {
            match response {
                Response::Count(n) => total += n,
                other => return Err(Self::protocol("exists", &other)),
            }
        }
        Ok(total)
    }

    /// Writes several keys: one atomic `MultiSet` per shard, sent
    /// concurrently. **Not atomic across shards**; keys sharing a hash tag
    /// stay one atomic request. Returns each shard part's reply.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`]; parts on other shards may have been
    /// applied when one fails.
    pub async fn set_many<K: Into<Bytes>, V: Into<Bytes>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Vec<WriteReply>, ClusterClientError> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| SetEntry {
                key: key.into(),
                value: value.into(),
                ttl_ms: None,
            })
            .collect();
        self.set_many_with(entries, None).await
    }

    /// [`set_many`](Self::set_many) with per-entry TTLs and an
    /// acknowledgement policy.
    ///
    /// # Errors
    ///
    /// As [`set_many`](Self::set_many).
    pub async fn set_many_with(
        &self,
        entries: Vec<SetEntry>,
        ack: Option<AckPolicy>,
    ) -> Result<Vec<WriteReply>, ClusterClientError> {
        let keys: Vec<Bytes> = entries.iter().map(|e| e.key.clone()).collect();
        let ack = self.ack(ack);
        let parts = self
            .scatter(&keys, |idx| Request::MultiSet {
                entries: idx.iter().map(|&i| entries[i].clone()).collect(),
                ack,
            })
            .await?;
        let mut out = Vec::with_capacity(parts.len());
        for (_, response) in parts {
            match response {
                Response::Written(reply) => out.push(reply),
                other => return Err(Self::protocol("multi_set", &other)),
            }
        }
        Ok(out)
    }

    /// One page of the keys starting with `prefix`: shard after shard (in
    /// shard id order), each scanned on its primary. Start with `cursor`
    /// `None`, pass each page's `next_cursor` until it is `None`. `limit`
    /// 0 lets the nodes choose. A page may be empty while more follow.
    ///
    /// Not a snapshot, and not exact while slots move between shards.
    ///
    /// # Errors
    ///
    /// [`ClusterClientError::BadCursor`] for a foreign cursor; see
    /// [`ClusterClientError`].
    pub async fn scan(
        &self,
        prefix: impl Into<Bytes>,
        cursor: Option<Bytes>,
        limit: u32,
    ) -> Result<ClusterScanPage, ClusterClientError> {
        let prefix = prefix.into();
        let shards: Vec<ShardId> = self.routing().primaries.keys().copied().collect();
        let (shard, node_cursor) = match &cursor {
            None => match shards.first() {
                Some(&first) => (first, None),
                None => {
                    return Ok(ClusterScanPage {
                        entries: Vec::new(),
                        next_cursor: None,
                    });
                }
            },
            Some(c) => decode_cursor(c)?,
        };
        let page = self
            .on_shard(shard, |client| {
                let prefix = prefix.clone();
                let node_cursor = node_cursor.clone();
                async move { client.scan(prefix, node_cursor, limit).await }
            })
            .await?;
        let next_cursor = match &page.next_cursor {
            Some(c) => Some(encode_cursor(shard, Some(c))),
            None => shards
                .iter()
                .find(|&&s| s > shard)
                .map(|&next| encode_cursor(next, None)),
        };
        Ok(ClusterScanPage {
            entries: page.entries,
            next_cursor,
        })
    }

    /// Every key starting with `prefix`, shard after shard.
    ///
    /// # Errors
    ///
    /// See [`ClusterClientError`].
    pub async fn scan_all(
        &self,
        prefix: impl Into<Bytes>,
    ) -> Result<Vec<(Bytes, Entry)>, ClusterClientError> {
        let prefix = prefix.into();
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.scan(prefix.clone(), cursor, 0).await?;
            out.extend(page.entries);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Runs a read on a shard's primary, refreshing the map and trying
    /// again after a transport failure, within the attempt bound.
    async fn on_shard<T, F, Fut>(&self, shard: ShardId, call: F) -> Result<T, ClusterClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let routing = self.routing();
            let addr = routing.primary(shard)?.to_string();
            let result = match self.pool(&addr).await {
                Ok(client) => call(client).await,
                Err(e) => Err(e),
            };
            *lock(&self.inner.per_shard).entry(shard).or_insert(0) += 1;
            match result {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let again =
                        transport_miss(&e).is_some() || e.code() == Some(ErrorCode::Unavailable);
                    if !again || attempt >= self.inner.config.max_attempts {
                        return Err(ClusterClientError::Node { addr, source: e });
                    }
                    if let ClientError::Server {
                        retry_after_ms: Some(ms),
                        ..
                    } = &e
                    {
                        tokio::time::sleep(Duration::from_millis(*ms).min(MAX_RETRY_AFTER)).await;
                    }
                    let _ = self
                        .refresh_from(None, Some(&addr), routing.map.version)
                        .await;
                }
            }
        }
    }

    /// Closes every pool.
    pub async fn close(&self) {
        let pools: Vec<Client> = lock(&self.inner.pools).drain().map(|(_, c)| c).collect();
        for pool in pools {
            pool.close().await;
        }
    }
}

/// A transport failure worth a refresh and another attempt.
fn transport_miss(e: &ClientError) -> Option<Miss> {
    match e {
        ClientError::Connect { .. }
        | ClientError::CircuitOpen { .. }
        | ClientError::Timeout { .. }
        | ClientError::ConnectionLost { .. }
        | ClientError::StreamReset { .. } => Some(Miss::Transport),
        _ => None,
    }
}

/// Fetches the map from the first seed that answers.
async fn fetch_first(
    config: &ClusterClientConfig,
    seeds: &[String],
) -> Result<(ClusterMapReply, String, Client), ClusterClientError> {
    let mut last = String::new();
    for seed in seeds {
        let client = match Client::connect((config.node_config)(seed)).await {
            Ok(client) => client,
            Err(e) => {
                last = format!("{seed}: {e}");
                continue;
            }
        };
        match client.cluster_map().await {
            Ok(map) => return Ok((map, seed.clone(), client)),
            Err(e) => {
                last = format!("{seed}: {e}");
                client.close().await;
            }
        }
    }
    Err(ClusterClientError::NoMap {
        tried: seeds.len(),
        last,
    })
}

/// A TTL in whole ms, at least 1 (0 means "no TTL" nowhere on the wire).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::client::{ClusterNode, ClusterShard};

    fn map(version: u64, shards: &[u32]) -> ClusterMapReply {
        ClusterMapReply {
            version,
            vnodes: 64,
            nodes: shards
                .iter()
                .map(|&s| ClusterNode {
                    id: u64::from(s) + 100,
                    name: format!("n{s}"),
                    client_addr: format!("127.0.0.1:{}", 7000 + s),
                    link_addr: format!("127.0.0.1:{}", 8000 + s),
                    shard: s,
                })
                .collect(),
            shards: shards
                .iter()
                .map(|&s| ClusterShard {
                    id: s,
                    primary: u64::from(s) + 100,
                    replicas: vec![],
                    epoch: 1,
                })
                .collect(),
        }
    }

    fn config() -> ClusterClientConfig {
        ClusterClientConfig::with_trust(ServerTrust::Pin([0; 32]), |c| c)
    }

    #[test]
    fn routes_by_the_ring_of_the_map() {
        let client = ClusterClient::with_map(map(3, &[1, 2, 3]), &["x:1"], config()).unwrap();
        let ring = Ring::new(&[ShardId(1), ShardId(2), ShardId(3)], 64).unwrap();
        for key in ["a", "b", "user:42", "{t}x"] {
            assert_eq!(
                client.shard_of(key.as_bytes()),
                ring.owner(key_slot(key.as_bytes()))
            );
        }
        assert_eq!(client.map_version(), 3);
        // Keys sharing a tag share a shard.
        assert_eq!(client.shard_of(b"{u1}.a"), client.shard_of(b"{u1}.b"));
    }

    #[test]
    fn only_a_newer_map_is_adopted() {
        let client = ClusterClient::with_map(map(5, &[1, 2]), &["x:1"], config()).unwrap();
        assert_eq!(client.adopt(map(4, &[1, 2, 3])).unwrap(), 5);
        assert_eq!(client.map().shards.len(), 2);
        assert_eq!(client.adopt(map(5, &[1, 2, 3])).unwrap(), 5);
        assert_eq!(client.adopt(map(6, &[1, 2, 3])).unwrap(), 6);
        assert_eq!(client.map().shards.len(), 3);
        assert_eq!(client.refreshes(), 1);
    }

    #[test]
    fn a_map_without_shards_or_primaries_is_refused() {
        let empty = map(1, &[]);
        assert!(matches!(
            ClusterClient::with_map(empty, &["x:1"], config()),
            Err(ClusterClientError::BadMap { version: 1, .. })
        ));
        let mut orphan = map(2, &[1]);
        orphan.nodes.clear();
        assert!(matches!(
            ClusterClient::with_map(orphan, &["x:1"], config()),
            Err(ClusterClientError::BadMap { version: 2, .. })
        ));
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = encode_cursor(ShardId(7), Some(&Bytes::from_static(b"node")));
        assert_eq!(
            decode_cursor(&c).unwrap(),
            (ShardId(7), Some(Bytes::from_static(b"node")))
        );
        let start = encode_cursor(ShardId(2), None);
        assert_eq!(decode_cursor(&start).unwrap(), (ShardId(2), None));
        assert!(decode_cursor(&Bytes::from_static(b"\x02abcd")).is_err());
        assert!(decode_cursor(&Bytes::from_static(b"\x01ab")).is_err());
    }

    #[test]
    fn zero_attempts_is_a_config_error() {
        let cfg = config().with_max_attempts(0);
        assert!(matches!(
            ClusterClient::with_map(map(1, &[1]), &["x:1"], cfg),
            Err(ClusterClientError::Config(_))
        ));
    }
}
