//! What the gateway shares across connections ([`Gateway`]) and what one
//! connection holds ([`Session`]), with the requests the commands build:
//! every one goes through the same checks and `Node::dispatch` as a QUIC
//! client's, so roles, limits, ack policies and cluster checks apply alike.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::codec::InputLimits;
use super::reply::{self, Proto, Reply};
use crate::cluster::key_slot;
use crate::cmd::Node;
use crate::config::{Config, Role, TokenConfig};
use crate::proto::{
    DeadlineState, Entry, ErrorCode, KeyPage, Request, Response, SetEntry, TtlState,
};
use crate::sync::lock;
use crate::types::{AckPolicy, Cancel, Condition, End, Expiry, ValueKind};

/// Arguments of a connection that has not authenticated yet (when tokens
/// are required): room for `HELLO 3 AUTH user pass SETNAME name`, as
/// Redis limits such connections, so that a client without a token
/// cannot make the node buffer much.
const UNAUTHENTICATED: InputLimits = InputLimits {
    max_args: 10,
    max_bulk: 4096,
    max_command: 16 * 1024,
};

/// Tries of a read-modify-write before it gives up on a busy key.
const CAS_ATTEMPTS: usize = 32;

/// SCAN cursors the node remembers (strata's cursors are keys; Redis
/// clients want numbers), and the key bytes they may hold in all.
const MAX_CURSORS: usize = 4096;
const MAX_CURSOR_BYTES: usize = 16 << 20;

/// Configuration facts that `CONFIG GET`, `INFO` and `HELLO` report.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub fsync: String,
    pub memory_budget: u64,
    pub max_clients: usize,
    pub idle_timeout: Option<Duration>,
    pub data_dir: String,
    pub cluster: bool,
    pub request_timeout: Duration,
}

impl Facts {
    fn of(config: &Config) -> Facts {
        Facts {
            fsync: config.store.fsync.to_string(),
            memory_budget: config.store.memory_budget_bytes,
            max_clients: config.resp.max_connections,
            idle_timeout: (config.resp.idle_timeout_ms > 0)
                .then(|| Duration::from_millis(config.resp.idle_timeout_ms)),
            data_dir: config.data_dir.display().to_string(),
            cluster: config.cluster.enabled,
            request_timeout: Duration::from_millis(config.net.request_timeout_ms),
        }
    }
}

/// Numbered SCAN cursors, oldest forgotten first.
#[derive(Debug, Default)]
struct Cursors {
    next: u64,
    by_id: HashMap<u64, Bytes>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl Cursors {
    fn remember(&mut self, cursor: Bytes) -> u64 {
        while !self.order.is_empty()
            && (self.order.len() >= MAX_CURSORS || self.bytes + cursor.len() > MAX_CURSOR_BYTES)
        {
            if let Some(old) = self.order.pop_front().and_then(|id| self.by_id.remove(&id)) {
                self.bytes -= old.len();
            }
        }
        self.next += 1;
        self.bytes += cursor.len();
        self.by_id.insert(self.next, cursor);
        self.order.push_back(self.next);
        self.next
    }
}

/// What every connection of one node's gateway shares.
#[derive(Debug)]
pub(crate) struct Gateway {
    pub node: Node,
    tokens: Vec<TokenConfig>,
    pub facts: Facts,
    cursors: Mutex<Cursors>,
    next_client: AtomicU64,
    pub metrics: super::metrics::RespMetrics,
    pub started: Instant,
    /// Where the gateway listens (its port goes into `CONFIG GET port`).
    pub listen: SocketAddr,
}

impl Gateway {
    pub fn new(config: &Config, node: Node, listen: SocketAddr) -> Gateway {
        Gateway {
            node,
            tokens: config.tokens.clone(),
            facts: Facts::of(config),
            cursors: Mutex::new(Cursors::default()),
            next_client: AtomicU64::new(1),
            metrics: super::metrics::RespMetrics::default(),
            started: Instant::now(),
            listen,
        }
    }

    /// The input limits of an authenticated connection: the node's own.
    fn input_limits(&self) -> InputLimits {
        let l = &self.node.limits;
        InputLimits {
            // MSET of the most keys a request may name, with its name.
            max_args: 2 * l.max_keys_per_request as usize + 16,
            max_bulk: l.max_value_bytes.max(l.max_key_bytes) as usize,
            max_command: l.max_frame_bytes as usize,
        }
    }

    /// The cursor key a SCAN cursor number stands for (`None`: forgotten
    /// or never given).
    pub fn cursor(&self, id: u64) -> Option<Bytes> {
        lock(&self.cursors).by_id.get(&id).cloned()
    }

    /// A number for a page's next cursor.
    pub fn remember_cursor(&self, cursor: Bytes) -> u64 {
        lock(&self.cursors).remember(cursor)
    }
}

/// One client connection's state.
#[derive(Debug)]
pub(crate) struct Session {
    pub gw: std::sync::Arc<Gateway>,
    pub id: u64,
    pub proto: Proto,
    /// `None` until a valid token was given, when tokens are required.
    pub role: Option<Role>,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub since: Instant,
    pub last_command: &'static str,
    /// Set by QUIT: close once the reply is sent.
    pub closing: bool,
    /// The ack policy of this connection's writes (`CLIENT DURABILITY`);
    /// `None`: the node's `replication.default_ack`.
    pub ack: Option<AckPolicy>,
    /// In cluster mode, whether this connection said `READONLY`: a
    /// replica serves its reads instead of redirecting them.
    pub readonly: bool,
}

impl Session {
    pub fn new(gw: std::sync::Arc<Gateway>, peer: SocketAddr, local: SocketAddr) -> Session {
        let id = gw.next_client.fetch_add(1, Ordering::Relaxed);
        Session {
            role: Self::initial_role(&gw),
            gw,
            id,
            proto: Proto::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            peer,
            local,
            since: Instant::now(),
            last_command: "NULL",
            closing: false,
            ack: None,
            readonly: false,
        }
    }

    /// Without configured tokens every client may do everything (as on QUIC).
    fn initial_role(gw: &Gateway) -> Option<Role> {
        (!gw.node.auth_required).then_some(Role::Admin)
    }

    /// Back to a new connection's state (`RESET`).
    pub fn reset(&mut self) {
        self.proto = Proto::Resp2;
        self.role = Self::initial_role(&self.gw);
        self.name = None;
        self.ack = None;
        self.readonly = false;
    }

    pub fn input_limits(&self) -> InputLimits {
        if self.role.is_some() {
            self.gw.input_limits()
        } else {
            UNAUTHENTICATED
        }
    }

    /// Checks `token` against the node's tokens; a failure drops whatever
    /// role the connection had (fail closed, as on QUIC).
    pub fn authenticate(&mut self, token: &[u8]) -> bool {
        let token = std::str::from_utf8(token).ok();
        self.role = crate::net::server::authenticate(&self.gw.tokens, token);
        self.role.is_some()
    }

    /// Whether the connection may run an admin-only command.
    pub fn require_admin(&self, command: &str) -> Result<(), Reply> {
        crate::cmd::check_role(&self.gw.node, self.role, Role::Admin, command)
            .map_err(|e| reply::from_error(&e))
    }

    /// Runs a request as a QUIC client's would run; strata's error replies
    /// become Redis errors.
    pub async fn call(&self, request: Request) -> Result<Response, Reply> {
        // Refused for a map that changed since the command was routed:
        // redirected by the one now applied.
        let routed = match self.gw.node.cluster() {
            Ok(Some(member)) => crate::cmd::request_keys(&request)
                .next()
                .map(|key| (member, key_slot(key), request.needs_write())),
            _ => None,
        };
        let response = crate::net::server::checked_dispatch(
            &self.gw.node,
            self.role,
            request,
            Cancel::default(),
        )
        .await;
        match response {
            Response::Error(e) => Err(routed
                .filter(|_| {
                    matches!(
                        e.code,
                        ErrorCode::WrongShard | ErrorCode::ReadOnlyReplica | ErrorCode::Unavailable
                    )
                })
                .and_then(|(member, slot, write)| {
                    super::cluster::redirect(member, slot, write, self.readonly)
                })
                .unwrap_or_else(|| reply::from_error(&e))),
            other => Ok(other),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.gw.node.store.now_ms()
    }

    /// A key's value, version and TTL.
    pub async fn get(&self, key: &Bytes) -> Result<Option<Entry>, Reply> {
        match self.call(Request::Get { key: key.clone() }).await? {
            Response::Value(entry) => Ok(entry),
            other => Err(unexpected(&other)),
        }
    }

    /// Values of `keys` in order, in requests of at most the node's
    /// keys-per-request limit.
    pub async fn get_many(&self, keys: &[Bytes]) -> Result<Vec<Option<Entry>>, Reply> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(self.chunk()) {
            let keys = chunk.to_vec();
            match self.call(Request::MultiGet { keys }).await? {
                Response::Values(values) => out.extend(values),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(out)
    }

    /// How many of `keys` exist (a key named twice counts twice).
    pub async fn exists(&self, keys: &[Bytes]) -> Result<i64, Reply> {
        let mut n = 0;
        for chunk in keys.chunks(self.chunk()) {
            let keys = chunk.to_vec();
            match self.call(Request::Exists { keys }).await? {
                Response::Count(c) => n += c as i64,
                other => return Err(unexpected(&other)),
            }
        }
        Ok(n)
    }

    /// Keys one store request may carry.
    pub(crate) fn chunk(&self) -> usize {
        (self.gw.node.limits.max_keys_per_request as usize).max(1)
    }

    /// Writes `key` if `condition` holds; whether it was written.
    pub async fn set(
        &self,
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
        condition: Condition,
    ) -> Result<bool, Reply> {
        let request = Request::set_expiring(key, value, expiry, condition, self.ack);
        match self.call(request).await? {
            Response::Written(_) => Ok(true),
            Response::NotWritten { .. } => Ok(false),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes every entry at once.
    pub async fn set_many(&self, entries: Vec<SetEntry>) -> Result<(), Reply> {
        match self
            .call(Request::MultiSet {
                entries,
                ack: self.ack,
            })
            .await?
        {
            Response::Written(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes `key` if `condition` holds: `Some(existed)`, or `None`
    /// when the condition failed.
    pub async fn delete(&self, key: Bytes, condition: Condition) -> Result<Option<bool>, Reply> {
        let request = Request::Delete {
            key,
            condition,
            ack: self.ack,
        };
        match self.call(request).await? {
            Response::Deleted { existed, .. } => Ok(Some(existed)),
            Response::NotWritten { .. } => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets a TTL, or a deadline; whether the key existed.
    pub async fn expire(&self, key: Bytes, expiry: Expiry) -> Result<bool, Reply> {
        let ack = self.ack;
        let request = match expiry {
            Expiry::AtMs(at_ms) => Request::ExpireAt { key, at_ms, ack },
            Expiry::InMs(ttl_ms) => Request::Expire { key, ttl_ms, ack },
            Expiry::Never => Request::Persist { key, ack },
        };
        match self.call(request).await? {
            Response::Updated { existed, .. } => Ok(existed),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes a TTL; whether there was one.
    pub async fn persist(&self, key: Bytes) -> Result<bool, Reply> {
        match self.call(Request::Persist { key, ack: self.ack }).await? {
            Response::Updated { durability, .. } => Ok(durability.is_some()),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn incr(&self, key: Bytes, delta: i64) -> Result<i64, Reply> {
        let request = Request::Incr {
            key,
            delta,
            ack: self.ack,
        };
        match self.call(request).await? {
            Response::Int { value, .. } => Ok(value),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn ttl(&self, key: Bytes) -> Result<TtlState, Reply> {
        match self.call(Request::Ttl { key }).await? {
            Response::Ttl(state) => Ok(state),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn deadline(&self, key: Bytes) -> Result<DeadlineState, Reply> {
        match self.call(Request::Deadline { key }).await? {
            Response::Deadline(state) => Ok(state),
            other => Err(unexpected(&other)),
        }
    }

    /// Pushes `values` at `end` of the list at `key`: its new length (0
    /// when `only_if_exists` found no list).
    pub async fn push(
        &self,
        key: Bytes,
        end: End,
        values: Vec<Bytes>,
        only_if_exists: bool,
    ) -> Result<u64, Reply> {
        let request = Request::Push {
            key,
            end,
            values,
            only_if_exists,
            ack: self.ack,
        };
        match self.call(request).await? {
            Response::Length { len, .. } => Ok(len),
            other => Err(unexpected(&other)),
        }
    }

    /// Takes up to `count` values from `end` of the list at `key`
    /// (`None`: no list).
    pub async fn pop(&self, key: Bytes, end: End, count: u32) -> Result<Option<Vec<Bytes>>, Reply> {
        let request = Request::Pop {
            key,
            end,
            count,
            ack: self.ack,
        };
        match self.call(request).await? {
            Response::Popped { values, .. } => Ok(values),
            other => Err(unexpected(&other)),
        }
    }

    /// Values `start..=stop` of the list at `key`, at most a request's worth.
    pub async fn list_range(&self, key: Bytes, start: i64, stop: i64) -> Result<Vec<Bytes>, Reply> {
        match self.call(Request::ListRange { key, start, stop }).await? {
            Response::Elements(values) => Ok(values),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_len(&self, key: Bytes) -> Result<u64, Reply> {
        match self.call(Request::ListLen { key }).await? {
            Response::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_index(&self, key: Bytes, index: i64) -> Result<Option<Bytes>, Reply> {
        match self.call(Request::ListIndex { key, index }).await? {
            Response::Element(value) => Ok(value),
            other => Err(unexpected(&other)),
        }
    }

    /// The kind of value at `key` (`None`: absent).
    pub async fn kind(&self, key: Bytes) -> Result<Option<ValueKind>, Reply> {
        match self.call(Request::Type { key }).await? {
            Response::Kind(kind) => Ok(kind),
            other => Err(unexpected(&other)),
        }
    }

    /// One page of keys of every kind (or of `kind`) starting with
    /// `prefix`, after `cursor`.
    pub async fn scan_keys(
        &self,
        prefix: Bytes,
        cursor: Option<Bytes>,
        limit: u32,
        kind: Option<ValueKind>,
    ) -> Result<KeyPage, Reply> {
        let request = Request::ScanKeys {
            prefix,
            cursor,
            limit,
            kind,
        };
        match self.call(request).await? {
            Response::Keys(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Adds `members` to the set or hash of `kind` at `key`: how many are new.
    pub async fn add_members(
        &self,
        key: Bytes,
        kind: ValueKind,
        members: Vec<(Bytes, Bytes)>,
        only_new: bool,
    ) -> Result<u64, Reply> {
        let request = Request::AddMembers {
            key,
            kind,
            members,
            only_new,
            ack: self.ack,
        };
        match self.call(request).await? {
            Response::Counted { count, .. } => Ok(count),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes `members` from the set, hash or sorted set of `kind` at `key`: how many
    /// were there.
    pub async fn remove_members(
        &self,
        key: Bytes,
        kind: ValueKind,
        members: Vec<Bytes>,
    ) -> Result<u64, Reply> {
        let request = Request::RemoveMembers {
            key,
            kind,
            members,
            ack: self.ack,
        };
        match self.call(request).await? {
            Response::Counted { count, .. } => Ok(count),
            other => Err(unexpected(&other)),
        }
    }

    /// Takes up to `count` members of the set at `key` (`None`: no set).
    pub async fn pop_members(&self, key: Bytes, count: u32) -> Result<Option<Vec<Bytes>>, Reply> {
        let request = Request::PopMembers {
            key,
            count,
            ack: self.ack,
        };
        match self.call(request).await? {
            Response::Popped { values, .. } => Ok(values),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn incr_field(&self, key: Bytes, field: Bytes, delta: i64) -> Result<i64, Reply> {
        let request = Request::IncrField {
            key,
            field,
            delta,
            ack: self.ack,
        };
        match self.call(request).await? {
            Response::Int { value, .. } => Ok(value),
            other => Err(unexpected(&other)),
        }
    }

    /// The values of `members` of the set or hash of `kind` at `key`, in
    /// requests of at most the node's keys-per-request limit.
    pub async fn member_values(
        &self,
        key: &Bytes,
        kind: ValueKind,
        members: &[Bytes],
    ) -> Result<Vec<Option<Bytes>>, Reply> {
        let mut out = Vec::with_capacity(members.len());
        for chunk in members.chunks(self.chunk()) {
            let request = Request::MemberValues {
                key: key.clone(),
                kind,
                members: chunk.to_vec(),
            };
            match self.call(request).await? {
                Response::MemberValues(values) => out.extend(values),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(out)
    }

    /// One page of members of the set or hash of `kind` at `key`.
    pub async fn scan_members(
        &self,
        key: Bytes,
        kind: ValueKind,
        after: Option<Bytes>,
    ) -> Result<Vec<(Bytes, Bytes)>, Reply> {
        let request = Request::ScanMembers {
            key,
            kind,
            after,
            limit: 0,
        };
        match self.call(request).await? {
            Response::Members(members) => Ok(members),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn count_members(&self, key: Bytes, kind: ValueKind) -> Result<u64, Reply> {
        match self.call(Request::CountMembers { key, kind }).await? {
            Response::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads `key`, lets `decide` choose a change from what it found, and
    /// makes it only if the key is still as read (its version, or still
    /// absent), reading again after a lost race. Returns `decide`'s answer
    /// of the try that took effect.
    pub async fn update<T>(
        &self,
        key: &Bytes,
        mut decide: impl FnMut(Option<&Entry>) -> Result<(Change, T), Reply>,
    ) -> Result<T, Reply> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.get(key).await?;
            let (change, answer) = decide(current.as_ref())?;
            let condition = match &current {
                Some(e) => Condition::IfVersion(e.version),
                None => Condition::IfAbsent,
            };
            let took = match (change, &current) {
                (Change::Keep, _) | (Change::Delete, None) => true,
                (Change::Write { value, expiry }, _) => {
                    self.set(key.clone(), value, expiry, condition).await?
                }
                (Change::Delete, Some(_)) => self.delete(key.clone(), condition).await?.is_some(),
            };
            if took {
                return Ok(answer);
            }
        }
        Err(Reply::err(format!(
            "ERR the key changed {CAS_ATTEMPTS} times while this command read and wrote it; retry"
        )))
    }
}

/// What a read-modify-write does with the entry it read.
#[derive(Debug)]
pub(crate) enum Change {
    /// Nothing.
    Keep,
    /// Writes this value, expiring as `expiry` says.
    Write { value: Bytes, expiry: Expiry },
    /// Deletes the key.
    Delete,
}

/// The TTL a read reported, kept as it is (`KEEPTTL`, `APPEND`): the time
/// left at the read, to the millisecond, as the protocol's reads carry it.
pub(crate) fn kept_ttl(entry: Option<&Entry>) -> Expiry {
    match entry.and_then(|e| e.ttl_ms) {
        Some(ms) => Expiry::InMs(ms.max(1)),
        None => Expiry::Never,
    }
}

/// A response of a kind its request never gets: a bug, reported rather
/// than panicked on.
pub(crate) fn unexpected(_: &Response) -> Reply {
    Reply::err("ERR internal error: a reply of the wrong kind for its request")
}
