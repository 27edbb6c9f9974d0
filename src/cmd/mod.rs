//! Request handlers: a decoded [`Request`] becomes store calls and a
//! [`Response`]. No I/O of its own beyond the store; authentication state
//! comes from the connection.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::cluster::SlotSet;
use crate::cluster::migrate::WriteGate;
use crate::cluster::node::ClusterNode;
use crate::config::Role;
use crate::proto::{
    DeadlineState, Durability, Entry, ErrorCode, ErrorReply, HelloReply, Limits, PROTOCOL_VERSION,
    RawSnapshotItem, RawSnapshotPage, Request, Response, ScanPage, SetEntry, SnapshotItem,
    SnapshotPage, TtlState, WriteReply,
};
use crate::repl::{ReplError, Replication};
use crate::store::{self, Store, WriteAck, WriteOutcome};
use crate::types::{AckPolicy, Cancel, Score, ScoreRule, Seq, ValueKind};

/// What the handlers need from the node.
#[derive(Debug, Clone)]
pub struct Node {
    /// The storage engine.
    pub store: Store,
    /// Limits announced in `Hello` (and enforced by the store and server).
    pub limits: Limits,
    /// Whether clients must authenticate.
    pub auth_required: bool,
    /// Role, replicas and acknowledgements.
    pub repl: Arc<Replication>,
    /// Whole-database operations (`Digest`, `Snapshot`, `Checkpoint`)
    /// running at once are bounded by these permits.
    pub heavy: Arc<Semaphore>,
    /// In cluster mode: this node's part in its cluster, once started
    /// (until then keyed requests get `Unavailable`).
    pub cluster: Option<Arc<OnceLock<Arc<ClusterNode>>>>,
}

/// Whole-database operations one node runs at once by default.
pub const HEAVY_AT_ONCE: usize = 1;

impl Node {
    /// A node serving `repl`'s store with `limits`.
    pub fn new(repl: Arc<Replication>, limits: Limits, auth_required: bool) -> Node {
        Node {
            store: repl.store().clone(),
            limits,
            auth_required,
            repl,
            heavy: Arc::new(Semaphore::new(HEAVY_AT_ONCE)),
            cluster: None,
        }
    }

    /// The node as a member of a cluster: keyed requests are checked
    /// against the committed map and the cluster requests are served, once
    /// the returned slot holds the started member.
    pub fn cluster_member(mut self) -> (Node, Arc<OnceLock<Arc<ClusterNode>>>) {
        let slot = Arc::new(OnceLock::new());
        self.cluster = Some(slot.clone());
        (self, slot)
    }

    /// Every `interval`, deletes the elements of gone collections
    /// ([`Store::reclaim_elements`]) while this node may write: it is a
    /// primary and, in a cluster, the map's primary of its shard, holding
    /// its lease, with no migration under way. Runs until the store closes.
    pub async fn reclaim_elements_every(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let may_write = || {
                self.repl.is_primary()
                    && match self.cluster() {
                        Ok(None) => true,
                        Ok(Some(member)) => member.may_write(),
                        Err(_) => false,
                    }
            };
            if !may_write() {
                continue;
            }
            match self.store.reclaim_elements(may_write).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(elements = n, "deleted the elements of gone collections"),
                Err(store::StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reclaiming collection elements failed; trying again later")
                }
            }
        }
    }

    /// The cluster member: `None` outside cluster mode, `Unavailable`
    /// while it starts.
    pub(crate) fn cluster(&self) -> Result<Option<&Arc<ClusterNode>>, ErrorReply> {
        match &self.cluster {
            None => Ok(None),
            Some(slot) => slot.get().map(Some).ok_or_else(|| {
                ErrorReply::new(
                    ErrorCode::Unavailable,
                    "this node is still joining its cluster",
                )
                .with_retry_after_ms(500)
            }),
        }
    }
}

/// One page of a snapshot as the node read it.
struct SnapshotEntries {
    id: u64,
    seq: Seq,
    created_at_ms: u64,
    entries: Vec<store::SnapshotEntry>,
    next: Option<Bytes>,
}

/// The keys a request reads or writes (none for the others).
pub(crate) fn request_keys(req: &Request) -> Box<dyn Iterator<Item = &[u8]> + '_> {
    match req {
        Request::Get { key }
        | Request::Ttl { key }
        | Request::Set { key, .. }
        | Request::Delete { key, .. }
        | Request::Expire { key, .. }
        | Request::Persist { key, .. }
        | Request::Incr { key, .. }
        | Request::Push { key, .. }
        | Request::Pop { key, .. }
        | Request::ListRange { key, .. }
        | Request::ListLen { key }
        | Request::ListIndex { key, .. }
        | Request::Type { key }
        | Request::AddMembers { key, .. }
        | Request::RemoveMembers { key, .. }
        | Request::PopMembers { key, .. }
        | Request::IncrField { key, .. }
        | Request::MemberValues { key, .. }
        | Request::ScanMembers { key, .. }
        | Request::CountMembers { key, .. }
        | Request::AddScores { key, .. }
        | Request::IncrScore { key, .. }
        | Request::Scores { key, .. }
        | Request::PopScores { key, .. }
        | Request::ScoreRange { key, .. }
        | Request::SetAt { key, .. }
        | Request::ExpireAt { key, .. }
        | Request::Deadline { key } => Box::new(std::iter::once(&key[..])),
        Request::MultiGet { keys } | Request::Exists { keys } => {
            Box::new(keys.iter().map(|k| &k[..]))
        }
        Request::MultiSet { entries, .. } => Box::new(entries.iter().map(|e| &e.key[..])),
        // Exhaustive: a new request naming keys must be routed by them.
        Request::Hello { .. }
        | Request::Ping
        | Request::Scan { .. }
        | Request::ScanKeys { .. }
        | Request::Info
        | Request::Promote
        | Request::ReplicaOf { .. }
        | Request::Digest { .. }
        | Request::Checkpoint
        | Request::Snapshot { .. }
        | Request::RawSnapshot { .. }
        | Request::ClusterMap
        | Request::ClusterInit
        | Request::ClusterPropose { .. }
        | Request::ClusterMapSince { .. }
        | Request::ClusterFailover { .. } => Box::new(std::iter::empty()),
    }
}

/// Whether `req` reads or writes the whole database, and so is admin-only,
/// bounded in number and stopped when its client is gone.
fn is_heavy(req: &Request) -> bool {
    matches!(
        req,
        Request::Digest { .. }
            | Request::Snapshot { .. }
            | Request::RawSnapshot { .. }
            | Request::Checkpoint
    )
}

/// The right a request needs.
pub fn required_role(req: &Request) -> Option<Role> {
    match req {
        // §3: with tokens configured, everything but Hello needs one.
        Request::Hello { .. } => None,
        Request::Promote
        | Request::ReplicaOf { .. }
        | Request::ClusterInit
        | Request::ClusterPropose { .. }
        | Request::ClusterFailover { .. } => Some(Role::Admin),
        _ if is_heavy(req) => Some(Role::Admin),
        _ if req.needs_write() => Some(Role::ReadWrite),
        _ => Some(Role::ReadOnly),
    }
}

/// The local part of a write's durability; `dispatch` adds the replicas'
/// part once they answered. Notes the write's seq in `written`.
fn durability(ack: WriteAck, requested: AckPolicy, written: &mut Option<Seq>) -> Durability {
    *written = Some(ack.seq);
    Durability {
        local_synced: ack.synced,
        replicas_acked: 0,
        requested,
        degraded: false,
    }
}

/// The durability report inside a write's reply, if it has one.
fn durability_of(response: &mut Response) -> Option<&mut Durability> {
    match response {
        Response::Written(WriteReply { durability, .. }) | Response::Int { durability, .. } => {
            Some(durability)
        }
        Response::Deleted { durability, .. }
        | Response::Updated { durability, .. }
        | Response::Length { durability, .. }
        | Response::Popped { durability, .. }
        | Response::Counted { durability, .. }
        | Response::Score { durability, .. }
        | Response::Scored { durability, .. } => durability.as_mut(),
        _ => None,
    }
}

/// The reply to a pop: what it took (`None`: no collection) and what its
/// write reached, if it wrote.
fn popped_reply(
    popped: Option<(Vec<Bytes>, Option<WriteAck>)>,
    requested: AckPolicy,
    written: &mut Option<Seq>,
) -> Response {
    match popped {
        Some((values, a)) => Response::Popped {
            values: Some(values),
            durability: a.map(|a| durability(a, requested, written)),
        },
        None => Response::Popped {
            values: None,
            durability: None,
        },
    }
}

/// The reply to a members write: the count, and what its write reached.
fn counted(
    count: u64,
    a: Option<WriteAck>,
    requested: AckPolicy,
    written: &mut Option<Seq>,
) -> Response {
    Response::Counted {
        count,
        durability: a.map(|a| durability(a, requested, written)),
    }
}

/// Members with their scores as the wire carries them.
fn scored(members: Vec<(Bytes, f64)>) -> Vec<(Bytes, Score)> {
    members.into_iter().map(|(m, s)| (m, Score(s))).collect()
}

fn entry(e: store::Entry) -> Entry {
    Entry {
        value: e.value,
        version: e.version,
        ttl_ms: e.ttl_ms,
    }
}

fn error(e: &store::StoreError) -> Response {
    Response::Error(ErrorReply::from(e))
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl Node {
    /// Serves one request that has passed authentication. `cancel` is set
    /// when its client is gone or its time is up; whole-database operations
    /// stop then, others finish (a write may already be committed).
    pub async fn dispatch(&self, req: Request, cancel: Cancel) -> Response {
        // C2: a key is served only by the shard the committed map gives it;
        // a write holds the gate until it is applied (a migration's fence).
        let gate = match self.check_owner(&req).await {
            Ok(gate) => gate,
            Err(e) => return Response::Error(e),
        };
        if req.needs_write() && !self.repl.is_primary() {
            let mut e = ErrorReply::new(
                ErrorCode::ReadOnlyReplica,
                match self.repl.leader_hint() {
                    Some(primary) => {
                        format!("this node is a replica; write to the primary at {primary}")
                    }
                    None => "this node is a replica; write to its primary".to_string(),
                },
            );
            e.leader_hint = self.repl.leader_hint();
            return Response::Error(e);
        }
        let reads = !req.needs_write()
            && !matches!(
                req,
                Request::Hello { .. }
                    | Request::Ping
                    | Request::Info
                    | Request::Promote
                    | Request::ReplicaOf { .. }
                    | Request::ClusterMap
                    | Request::ClusterInit
                    | Request::ClusterPropose { .. }
                    | Request::ClusterMapSince { .. }
                    | Request::ClusterFailover { .. }
            );
        if reads && !self.repl.serves_reads() {
            return Response::error(
                ErrorCode::Unavailable,
                "this replica is being re-seeded by a full sync and serves no reads until it completes",
            );
        }
        // Held until the response is built: bounds whole-database work.
        let _heavy = if is_heavy(&req) {
            match self.heavy.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Response::Error(
                        ErrorReply::new(
                            ErrorCode::Overloaded,
                            format!(
                                "{} whole-database operation(s) (digest, snapshot, checkpoint) \
                                 already running on this node",
                                HEAVY_AT_ONCE
                            ),
                        )
                        .with_retry_after_ms(1000),
                    );
                }
            }
        } else {
            None
        };
        let policy = self.repl.ack_policy(req.ack());
        let mut written = None;
        let mut response = self.execute(req, policy, &mut written, cancel).await;
        drop(gate);
        if let Some(seq) = written
            && let Some(durability) = durability_of(&mut response)
        {
            // I6: the reply says what was reached, never more.
            match self.repl.await_acks(seq, policy).await {
                Ok(acked) => {
                    durability.replicas_acked = acked.replicas;
                    durability.degraded = acked.degraded;
                }
                Err(e) => return Response::Error(e),
            }
        }
        response
    }

    /// Runs `req` and builds its reply; a write notes its seq in `written`
    /// so `dispatch` can wait for the replicas.
    async fn execute(
        &self,
        req: Request,
        ack: AckPolicy,
        written: &mut Option<Seq>,
        cancel: Cancel,
    ) -> Response {
        let store = &self.store;
        let result = match req {
            // Session and replication: their own errors, not the store's.
            Request::Hello { protocol, .. } => return self.hello(protocol),
            Request::Ping => return Response::Pong,
            Request::Info => return Response::Info(self.info()),
            Request::Promote => return self.promote().await,
            Request::ReplicaOf { primary } => return self.replica_of(primary).await,
            // Whole-database operations.
            Request::Digest { expired_before_ms } => self.digest(expired_before_ms, cancel).await,
            Request::Snapshot { snapshot, after } => {
                return self.snapshot_page(snapshot, after).await;
            }
            Request::RawSnapshot { snapshot, after } => {
                return self.raw_snapshot_page(snapshot, after).await;
            }
            Request::Checkpoint => self.checkpoint().await,
            // The cluster.
            Request::ClusterMap
            | Request::ClusterInit
            | Request::ClusterPropose { .. }
            | Request::ClusterMapSince { .. }
            | Request::ClusterFailover { .. } => {
                return self.cluster_request(req).await;
            }
            // Reads.
            Request::Get { key } => store.get(&key).await.map(|e| Response::Value(e.map(entry))),
            Request::MultiGet { keys } => store
                .get_many(&keys)
                .await
                .map(|v| Response::Values(v.into_iter().map(|e| e.map(entry)).collect())),
            Request::Exists { keys } => store.exists(&keys).await.map(Response::Count),
            Request::Ttl { key } => store.ttl(&key).await.map(|t| Response::Ttl(ttl_state(t))),
            Request::Deadline { key } => store
                .deadline(&key)
                .await
                .map(|at| Response::Deadline(deadline_state(at))),
            Request::Scan {
                prefix,
                cursor,
                limit,
            } => match self.scan_only() {
                Ok(only) => self.scan(prefix, cursor, limit, only).await,
                Err(reply) => return Response::Error(reply),
            },
            Request::ScanKeys {
                prefix,
                cursor,
                limit,
                kind,
            } => match self.scan_only() {
                Ok(only) => store
                    .scan_keys(prefix, cursor, self.scan_limit(limit), only, kind)
                    .await
                    .map(Response::Keys),
                Err(reply) => return Response::Error(reply),
            },
            Request::Type { key } => store.kind_of(&key).await.map(Response::Kind),
            // Writes.
            Request::Set {
                key,
                value,
                ttl_ms,
                condition,
                ..
            } => store
                .set(key, value, ttl(ttl_ms), condition)
                .await
                .map(|o| set_reply(o, ack, written)),
            Request::MultiSet { entries, .. } => store
                .set_many(entries.into_iter().map(set_entry).collect())
                .await
                .map(|a| write_reply(a, ack, written)),
            Request::Delete { key, condition, .. } => store
                .delete(key, condition)
                .await
                .map(|o| delete_reply(o, ack, written)),
            Request::SetAt {
                key,
                value,
                expires_at_ms,
                condition,
                ..
            } => store
                .set_at(key, value, expires_at_ms, condition)
                .await
                .map(|o| set_reply(o, ack, written)),
            Request::Expire { key, ttl_ms, .. } => store
                .expire(key, Duration::from_millis(ttl_ms))
                .await
                .map(|o| updated(o, ack, written)),
            Request::ExpireAt { key, at_ms, .. } => store
                .expire_at(key, at_ms)
                .await
                .map(|o| updated(o, ack, written)),
            Request::Persist { key, .. } => {
                store.persist(key).await.map(|o| updated(o, ack, written))
            }
            Request::Incr { key, delta, .. } => store
                .incr(key, delta)
                .await
                .map(|(value, a)| int_reply(value, a, ack, written)),
            // Lists, sets, hashes and sorted sets.
            Request::ListRange { .. }
            | Request::ListLen { .. }
            | Request::ListIndex { .. }
            | Request::MemberValues { .. }
            | Request::ScanMembers { .. }
            | Request::CountMembers { .. }
            | Request::Push { .. }
            | Request::Pop { .. }
            | Request::AddMembers { .. }
            | Request::RemoveMembers { .. }
            | Request::PopMembers { .. }
            | Request::IncrField { .. } => self.collection_request(req, ack, written).await,
            Request::AddScores { .. }
            | Request::IncrScore { .. }
            | Request::Scores { .. }
            | Request::PopScores { .. }
            | Request::ScoreRange { .. } => self.scored_request(req, ack, written).await,
        };
        result.unwrap_or_else(|e| error(&e))
    }

    /// The list, set and hash requests: `execute`'s part for collections.
    async fn collection_request(
        &self,
        req: Request,
        ack: AckPolicy,
        written: &mut Option<Seq>,
    ) -> store::Result<Response> {
        let store = &self.store;
        match req {
            Request::ListRange { key, start, stop } => store
                .list_range(key, start, stop)
                .await
                .map(Response::Elements),
            Request::ListLen { key } => store.list_len(key).await.map(Response::Count),
            Request::ListIndex { key, index } => {
                store.list_index(key, index).await.map(Response::Element)
            }
            Request::MemberValues { key, kind, members } => store
                .member_values(key, kind, members)
                .await
                .map(Response::MemberValues),
            Request::ScanMembers {
                key,
                kind,
                after,
                limit,
            } => store
                .member_page(key, kind, after, self.limits.scan_page_len(limit) as usize)
                .await
                .map(Response::Members),
            Request::CountMembers { key, kind } => {
                store.member_count(key, kind).await.map(Response::Count)
            }
            Request::Push {
                key,
                end,
                values,
                only_if_exists,
                ..
            } => store
                .push(key, end, values, only_if_exists)
                .await
                .map(|pushed| match pushed {
                    Some((len, a)) => Response::Length {
                        len,
                        durability: Some(durability(a, ack, written)),
                    },
                    // `only_if_exists` found no list: nothing written.
                    None => Response::Length {
                        len: 0,
                        durability: None,
                    },
                }),
            Request::AddMembers {
                key,
                kind,
                members,
                only_new,
                ..
            } => store
                .add_members(key, kind, members, only_new)
                .await
                .map(|(count, a)| counted(count, a, ack, written)),
            Request::RemoveMembers {
                key, kind, members, ..
            } => store
                .remove_members(key, kind, members)
                .await
                .map(|(count, a)| counted(count, a, ack, written)),
            Request::PopMembers { key, count, .. } => store
                .pop_members(key, u64::from(count))
                .await
                .map(|popped| popped_reply(popped, ack, written)),
            Request::IncrField {
                key, field, delta, ..
            } => store
                .incr_field(key, field, delta)
                .await
                .map(|(value, a)| int_reply(value, a, ack, written)),
            Request::Pop {
                key, end, count, ..
            } => store
                .pop(key, end, u64::from(count))
                .await
                .map(|popped| popped_reply(popped, ack, written)),
            other => Ok(Response::error(
                ErrorCode::Internal,
                format!("{} is not a collection request", other.op_name()),
            )),
        }
    }

    /// The sorted-set requests: `execute`'s part for them.
    async fn scored_request(
        &self,
        req: Request,
        ack: AckPolicy,
        written: &mut Option<Seq>,
    ) -> store::Result<Response> {
        let store = &self.store;
        let rule = |exists, update| ScoreRule { exists, update };
        match req {
            Request::AddScores {
                key,
                members,
                exists,
                update,
                count_changed,
                ..
            } => {
                let members = members.into_iter().map(|(m, s)| (m, s.0)).collect();
                let rule = rule(exists, update);
                store
                    .add_scores(key, members, rule, count_changed)
                    .await
                    .map(|(count, a)| counted(count, a, ack, written))
            }
            Request::IncrScore {
                key,
                member,
                delta,
                exists,
                update,
                ..
            } => store
                .incr_score(key, member, delta.0, rule(exists, update))
                .await
                .map(|(score, a)| Response::Score {
                    score: score.map(Score),
                    durability: a.map(|a| durability(a, ack, written)),
                }),
            Request::Scores { key, members } => store
                .scores(key, members)
                .await
                .map(|found| Response::Scores(found.into_iter().map(|s| s.map(Score)).collect())),
            Request::PopScores {
                key, end, count, ..
            } => store
                .pop_scores(key, end, u64::from(count))
                .await
                .map(|(taken, a)| Response::Scored {
                    members: scored(taken),
                    durability: a.map(|a| durability(a, ack, written)),
                }),
            Request::ScoreRange {
                key,
                start,
                stop,
                end,
            } => store
                .score_range(key, start, stop, end)
                .await
                .map(|found| Response::Scored {
                    members: scored(found),
                    durability: None,
                }),
            other => Ok(Response::error(
                ErrorCode::Internal,
                format!("{} is not a sorted-set request", other.op_name()),
            )),
        }
    }

    /// In cluster mode, that this node's shard owns every key of `req`;
    /// a write gets the gate to hold while it is applied.
    async fn check_owner(&self, req: &Request) -> Result<Option<WriteGate>, ErrorReply> {
        if request_keys(req).next().is_none() {
            return Ok(None);
        }
        let Some(cluster) = self.cluster()? else {
            return Ok(None);
        };
        let write = req.needs_write();
        // IMPORTANT: the gate before the map is read (in check_keys).
        let gate = match write {
            true => Some(cluster.migrations().gate().await),
            false => None,
        };
        cluster.check_keys(request_keys(req), write)?;
        Ok(gate)
    }

    async fn cluster_request(&self, req: Request) -> Response {
        let cluster = match self.cluster() {
            Ok(Some(cluster)) => cluster,
            Ok(None) => {
                return Response::error(
                    ErrorCode::BadRequest,
                    "this node is not in cluster mode ([cluster] enabled = false)",
                );
            }
            Err(e) => return Response::Error(e),
        };
        let result = match req {
            Request::ClusterMap => return Response::ClusterMap(cluster.map_reply()),
            Request::ClusterMapSince { version } => {
                let map = cluster.map();
                return if map.version() > version {
                    Response::ClusterMap(crate::cluster::node::map_reply(&map))
                } else {
                    Response::ClusterMapCurrent {
                        version: map.version(),
                    }
                };
            }
            Request::ClusterInit => cluster
                .init()
                .await
                .map(|()| Response::Info(vec![("meta_leader".into(), cluster.id().0.to_string())])),
            Request::ClusterPropose { command } => cluster
                .propose(&command)
                .await
                .map(|v| Response::Info(vec![("map_version".into(), v.to_string())])),
            Request::ClusterFailover {
                shard,
                to,
                unclean: false,
                ..
            } => cluster
                .switchover(shard, to.as_deref())
                .await
                .map(Response::Info),
            Request::ClusterFailover {
                shard,
                to,
                unclean: true,
                dry_run,
            } => cluster
                .unclean_failover(shard, to.as_deref(), dry_run)
                .await
                .map(Response::Info),
            _ => return Response::error(ErrorCode::Internal, "not a cluster request"),
        };
        result.unwrap_or_else(Response::Error)
    }

    fn hello(&self, protocol: u32) -> Response {
        if protocol != PROTOCOL_VERSION {
            return Response::error(
                ErrorCode::UnsupportedProtocol,
                format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}"),
            );
        }
        Response::Hello(HelloReply {
            protocol: PROTOCOL_VERSION,
            server: format!("strata {}", env!("CARGO_PKG_VERSION")),
            node_id: self.repl.node_id(),
            role: Some(
                if self.repl.is_primary() {
                    "primary"
                } else {
                    "replica"
                }
                .into(),
            ),
            limits: self.limits,
        })
    }

    async fn promote(&self) -> Response {
        match self.repl.promote().await {
            Ok(meta) => Response::Info(vec![
                ("role".into(), "primary".into()),
                ("repl_id".into(), hex::encode(meta.repl_id.0)),
                ("repl_epoch".into(), meta.epoch.0.to_string()),
                ("applied_seq".into(), self.store.applied_seq().to_string()),
            ]),
            Err(e) => Response::Error(e),
        }
    }

    async fn replica_of(&self, primary: String) -> Response {
        match self.repl.replicate_from(primary.clone()).await {
            Ok(()) => Response::Info(vec![
                ("role".into(), "replica".into()),
                ("primary".into(), primary),
            ]),
            Err(e) => Response::Error(e),
        }
    }

    async fn digest(&self, expired_before_ms: u64, cancel: Cancel) -> store::Result<Response> {
        let cutoff = if expired_before_ms == 0 {
            self.store.now_ms()
        } else {
            expired_before_ms
        };
        self.store.digest(cutoff, cancel).await.map(|d| {
            Response::Info(vec![
                ("seq".into(), d.seq.to_string()),
                ("keys".into(), d.keys.to_string()),
                ("sha256".into(), d.sha256),
                ("expired_before_ms".into(), cutoff.to_string()),
            ])
        })
    }

    /// One page of a snapshot, for `Snapshot` and `RawSnapshot`.
    async fn snapshot_entries(
        &self,
        snapshot: Option<u64>,
        after: Option<Bytes>,
    ) -> Result<SnapshotEntries, Response> {
        // Leave room for framing within the client's frame limit.
        let budget = (self.limits.max_frame_bytes as usize / 2).clamp(1024, 4 << 20);
        match self.repl.snapshot_page(snapshot, after, budget).await {
            Ok((id, seq, created_at_ms, entries, more)) => {
                let next = more
                    .then(|| entries.last().map(|e| e.key.clone()))
                    .flatten();
                Ok(SnapshotEntries {
                    id,
                    seq,
                    created_at_ms,
                    entries,
                    next,
                })
            }
            Err(ReplError::Busy(why)) => Err(Response::Error(
                ErrorReply::new(ErrorCode::Overloaded, why).with_retry_after_ms(1000),
            )),
            Err(e) => Err(Response::error(ErrorCode::BadRequest, e.to_string())),
        }
    }

    async fn snapshot_page(&self, snapshot: Option<u64>, after: Option<Bytes>) -> Response {
        let page = match self.snapshot_entries(snapshot, after).await {
            Ok(page) => page,
            Err(response) => return response,
        };
        // A list's metadata, or its elements' internal keys.
        if page
            .entries
            .iter()
            .any(|e| e.kind != ValueKind::String || store::keys::is_internal(&e.key))
        {
            return Response::error(
                ErrorCode::BadRequest,
                "the snapshot holds collections (lists, sets, ...), which a Snapshot page cannot \
                 carry; ask with RawSnapshot (strata-admin dump does)",
            );
        }
        Response::Snapshot(SnapshotPage {
            snapshot: page.id,
            seq: page.seq,
            created_at_ms: page.created_at_ms,
            entries: page
                .entries
                .into_iter()
                .map(|e| SnapshotItem {
                    key: e.key,
                    value: e.value,
                    version: e.version,
                    expires_at_ms: e.expires_at_ms,
                })
                .collect(),
            next: page.next,
        })
    }

    async fn raw_snapshot_page(&self, snapshot: Option<u64>, after: Option<Bytes>) -> Response {
        let page = match self.snapshot_entries(snapshot, after).await {
            Ok(page) => page,
            Err(response) => return response,
        };
        Response::RawSnapshot(RawSnapshotPage {
            snapshot: page.id,
            seq: page.seq,
            created_at_ms: page.created_at_ms,
            entries: page
                .entries
                .into_iter()
                .map(|e| RawSnapshotItem {
                    key: e.key,
                    value: e.value,
                    version: e.version,
                    expires_at_ms: e.expires_at_ms,
                    kind: e.kind,
                })
                .collect(),
            next: page.next,
        })
    }

    async fn checkpoint(&self) -> store::Result<Response> {
        self.store.checkpoint().await.map(|r| {
            Response::Info(vec![
                ("covered".into(), r.covered.to_string()),
                ("segments_removed".into(), r.segments_removed.to_string()),
            ])
        })
    }

    async fn scan(
        &self,
        prefix: Bytes,
        cursor: Option<Bytes>,
        limit: u32,
        only: Option<SlotSet>,
    ) -> store::Result<Response> {
        let limit = self.scan_limit(limit);
        self.store
            .scan_page(prefix, cursor, limit, only)
            .await
            .map(|page| {
                Response::Page(ScanPage {
                    entries: page
                        .entries
                        .into_iter()
                        .map(|(k, e)| (k, entry(e)))
                        .collect(),
                    next_cursor: page.next_cursor,
                })
            })
    }

    /// The slots a scan may list: in cluster mode, those of the node's
    /// shard (and `Unavailable` while they are cut over).
    fn scan_only(&self) -> Result<Option<SlotSet>, ErrorReply> {
        self.cluster()
            .and_then(|c| c.map(|c| c.scan_slots()).transpose())
    }

    /// A `Scan` page's bounds: `limit` entries (capped, §8), and no more
    /// bytes than fit a response frame with its cursor (§4: pages are cut
    /// short, never refused).
    fn scan_limit(&self, limit: u32) -> store::ScanLimit {
        let l = &self.limits;
        // Response index, entry count, and `next_cursor` (a key), each with
        // its length prefix.
        let page_overhead = l.max_key_bytes as usize + 32;
        store::ScanLimit {
            entries: l.scan_page_len(limit) as usize,
            bytes: (l.max_frame_bytes as usize).saturating_sub(page_overhead),
        }
    }

    /// `(name, value)` pairs for `Info` and `strata-cli info`.
    pub fn info(&self) -> Vec<(String, String)> {
        let s = self.store.stats();
        let ratio = |hits: u64, misses: u64| {
            if hits + misses == 0 {
                "n/a".to_string()
            } else {
                format!("{:.4}", hits as f64 / (hits + misses) as f64)
            }
        };
        let mut out = vec![
            ("version".into(), env!("CARGO_PKG_VERSION").into()),
            ("applied_seq".into(), s.applied_seq.to_string()),
            ("checkpoint_seq".into(), s.checkpoint_seq.to_string()),
            (
                "checkpoint_age_secs".into(),
                format!("{:.1}", s.checkpoint_age_secs),
            ),
            ("memory_entries".into(), s.memory_entries.to_string()),
            ("memory_bytes".into(), s.memory_bytes.to_string()),
            (
                "memory_budget_bytes".into(),
                s.memory_budget_bytes.to_string(),
            ),
            (
                "memory_hit_ratio".into(),
                ratio(s.memory_hits, s.memory_misses),
            ),
            ("memory_hits".into(), s.memory_hits.to_string()),
            ("memory_misses".into(), s.memory_misses.to_string()),
            ("disk_hit_ratio".into(), ratio(s.disk_hits, s.disk_misses)),
            (
                "memory_warmed_keys".into(),
                s.memory_warmed_keys.to_string(),
            ),
            ("wal_bytes".into(), s.wal_bytes.to_string()),
            ("fsync".into(), self.store.config().fsync.to_string()),
        ];
        if let Some(reason) = s.poisoned {
            out.push(("writes_refused".into(), reason));
        }
        // Replication: role first after the version, then its state.
        let mut repl = self.repl.info().into_iter();
        if let Some(role) = repl.next() {
            out.insert(1, role);
        }
        out.extend(repl);
        if let Ok(Some(cluster)) = self.cluster() {
            out.extend(cluster.info());
        }
        out
    }
}

fn ttl_state(t: store::TtlState) -> TtlState {
    match t {
        store::TtlState::Missing => TtlState::Missing,
        store::TtlState::Persistent => TtlState::Persistent,
        store::TtlState::ExpiresInMs(ms) => TtlState::ExpiresIn(ms),
    }
}

/// A key's deadline as the store has it (`Some(0)`: none) on the wire.
fn deadline_state(at: Option<u64>) -> DeadlineState {
    match at {
        None => DeadlineState::Missing,
        Some(0) => DeadlineState::Persistent,
        Some(at) => DeadlineState::ExpiresAt(at),
    }
}

fn set_entry(e: SetEntry) -> (Bytes, Bytes, Option<Duration>) {
    (e.key, e.value, ttl(e.ttl_ms))
}

fn write_reply(a: WriteAck, ack: AckPolicy, written: &mut Option<Seq>) -> Response {
    Response::Written(WriteReply {
        version: a.seq,
        durability: durability(a, ack, written),
    })
}

fn set_reply(outcome: WriteOutcome, ack: AckPolicy, written: &mut Option<Seq>) -> Response {
    match outcome {
        WriteOutcome::Written(a) => write_reply(a, ack, written),
        WriteOutcome::ConditionFailed { current } => Response::NotWritten {
            current_version: current,
        },
        WriteOutcome::NotFound | WriteOutcome::Unchanged => Response::NotWritten {
            current_version: None,
        },
    }
}

fn int_reply(value: i64, a: WriteAck, ack: AckPolicy, written: &mut Option<Seq>) -> Response {
    Response::Int {
        value,
        durability: durability(a, ack, written),
    }
}

fn delete_reply(outcome: WriteOutcome, ack: AckPolicy, written: &mut Option<Seq>) -> Response {
    match outcome {
        WriteOutcome::Written(a) => Response::Deleted {
            existed: true,
            durability: Some(durability(a, ack, written)),
        },
        WriteOutcome::ConditionFailed { current } => Response::NotWritten {
            current_version: current,
        },
        WriteOutcome::NotFound | WriteOutcome::Unchanged => Response::Deleted {
            existed: false,
            durability: None,
        },
    }
}

fn updated(outcome: WriteOutcome, ack: AckPolicy, written: &mut Option<Seq>) -> Response {
    match outcome {
        WriteOutcome::Written(a) => Response::Updated {
            existed: true,
            durability: Some(durability(a, ack, written)),
        },
        WriteOutcome::Unchanged => Response::Updated {
            existed: true,
            durability: None,
        },
        WriteOutcome::NotFound | WriteOutcome::ConditionFailed { .. } => Response::Updated {
            existed: false,
            durability: None,
        },
    }
}

/// Whether a connection with `role` (None = not authenticated) may run `req`.
pub fn check_access(node: &Node, role: Option<Role>, req: &Request) -> Result<(), ErrorReply> {
    match required_role(req) {
        None => Ok(()),
        Some(needed) => check_role(node, role, needed, req.op_name()),
    }
}

/// Whether a connection with `role` may do `what`, which needs `needed`:
/// the rule behind [`check_access`], also for what is not one request
/// (the RESP gateway's `FLUSHALL`).
pub fn check_role(
    node: &Node,
    role: Option<Role>,
    needed: Role,
    what: &str,
) -> Result<(), ErrorReply> {
    if !node.auth_required {
        return Ok(());
    }
    match role {
        None => Err(ErrorReply::new(
            ErrorCode::Unauthenticated,
            "this server requires a token: send Hello with a valid token first",
        )),
        Some(role) if role >= needed => Ok(()),
        Some(role) => Err(ErrorReply::new(
            ErrorCode::PermissionDenied,
            format!("{what} needs a {needed:?} token; this connection has {role:?}"),
        )),
    }
}

impl crate::net::server::Service for Node {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn auth_required(&self) -> bool {
        self.auth_required
    }

    fn check_access(&self, role: Option<Role>, request: &Request) -> Result<(), ErrorReply> {
        check_access(self, role, request)
    }

    async fn dispatch(&self, request: Request, cancel: Cancel) -> Response {
        Node::dispatch(self, request, cancel).await
    }
}
