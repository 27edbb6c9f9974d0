//! Request handlers: a decoded [`Request`] becomes store calls and a
//! [`Response`]. No I/O of its own beyond the store; authentication state
//! comes from the connection.

use std::time::Duration;

use crate::config::Role;
use crate::proto::{
    Durability, Entry, ErrorCode, ErrorReply, HelloReply, Limits, PROTOCOL_VERSION, Request,
    Response, ScanPage, TtlState, WriteReply,
};
use crate::store::{self, Store, WriteAck, WriteOutcome};
use crate::types::AckPolicy;

/// What the handlers need from the node.
#[derive(Debug, Clone)]
pub struct Node {
    /// The storage engine.
    pub store: Store,
    /// Limits announced in `Hello` (and enforced by the store and server).
    pub limits: Limits,
    /// Whether clients must authenticate.
    pub auth_required: bool,
}

/// The right a request needs.
pub fn required_role(req: &Request) -> Option<Role> {
    match req {
        Request::Hello { .. } | Request::Ping => None,
        _ if req.needs_write() => Some(Role::ReadWrite),
        _ => Some(Role::ReadOnly),
    }
}

fn durability(ack: WriteAck, requested: Option<AckPolicy>) -> Durability {
    // A node without replicas reaches local durability only; say exactly
    // that. `sync` waits for every in-sync replica, of which there are none;
    // `semi-sync:k` asked for k acknowledgements it did not get.
    let requested = requested.unwrap_or_default();
    Durability {
        local_synced: ack.synced,
        replicas_acked: 0,
        requested,
        degraded: matches!(requested, AckPolicy::SemiSync { replicas, .. } if replicas > 0),
    }
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
    /// Serves one request that has passed authentication.
    pub async fn dispatch(&self, req: Request) -> Response {
        let ack = req.ack();
        let store = &self.store;
        let result = match req {
            Request::Hello { protocol, .. } => {
                if protocol != PROTOCOL_VERSION {
                    return Response::error(
                        ErrorCode::UnsupportedProtocol,
                        format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}"),
                    );
                }
                return Response::Hello(HelloReply {
                    protocol: PROTOCOL_VERSION,
                    server: format!("strata {}", env!("CARGO_PKG_VERSION")),
                    node_id: None,
                    role: Some("primary".into()),
                    limits: self.limits,
                });
            }
            Request::Ping => return Response::Pong,
            Request::Info => return Response::Info(self.info()),
            Request::Get { key } => store.get(&key).await.map(|e| Response::Value(e.map(entry))),
            Request::MultiGet { keys } => store
                .get_many(&keys)
                .await
                .map(|v| Response::Values(v.into_iter().map(|e| e.map(entry)).collect())),
            Request::Exists { keys } => store.exists(&keys).await.map(Response::Count),
            Request::Ttl { key } => store.ttl(&key).await.map(|t| {
                Response::Ttl(match t {
                    store::TtlState::Missing => TtlState::Missing,
                    store::TtlState::Persistent => TtlState::Persistent,
                    store::TtlState::ExpiresInMs(ms) => TtlState::ExpiresIn(ms),
                })
            }),
            Request::Set {
                key,
                value,
                ttl_ms,
                condition,
                ..
            } => store
                .set(key, value, ttl(ttl_ms), condition)
                .await
                .map(|outcome| match outcome {
                    WriteOutcome::Written(a) => Response::Written(WriteReply {
                        version: a.seq,
                        durability: durability(a, ack),
                    }),
                    WriteOutcome::ConditionFailed { current } => Response::NotWritten {
                        current_version: current,
                    },
                    WriteOutcome::NotFound | WriteOutcome::Unchanged => Response::NotWritten {
                        current_version: None,
                    },
                }),
            Request::MultiSet { entries, .. } => {
                let entries = entries
                    .into_iter()
                    .map(|e| (e.key, e.value, ttl(e.ttl_ms)))
                    .collect();
                store.set_many(entries).await.map(|a| {
                    Response::Written(WriteReply {
                        version: a.seq,
                        durability: durability(a, ack),
                    })
                })
            }
            Request::Delete { key, condition, .. } => {
                store
                    .delete(key, condition)
                    .await
                    .map(|outcome| match outcome {
                        WriteOutcome::Written(a) => Response::Deleted {
                            existed: true,
                            durability: Some(durability(a, ack)),
                        },
                        WriteOutcome::ConditionFailed { current } => Response::NotWritten {
                            current_version: current,
                        },
                        WriteOutcome::NotFound | WriteOutcome::Unchanged => Response::Deleted {
                            existed: false,
                            durability: None,
                        },
                    })
            }
            Request::Expire { key, ttl_ms, .. } => store
                .expire(key, Duration::from_millis(ttl_ms))
                .await
                .map(|o| updated(o, ack)),
            Request::Persist { key, .. } => store.persist(key).await.map(|o| updated(o, ack)),
            Request::Incr { key, delta, .. } => {
                store
                    .incr(key, delta)
                    .await
                    .map(|(value, a)| Response::Int {
                        value,
                        durability: durability(a, ack),
                    })
            }
            Request::Scan {
                prefix,
                cursor,
                limit,
            } => {
                let limit = self.limits.scan_page_len(limit) as usize;
                store.scan(prefix, cursor, limit).await.map(|page| {
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
        };
        result.unwrap_or_else(|e| error(&e))
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
            ("role".into(), "primary".into()),
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
            ("disk_hit_ratio".into(), ratio(s.disk_hits, s.disk_misses)),
            ("wal_bytes".into(), s.wal_bytes.to_string()),
            ("fsync".into(), self.store.config().fsync.to_string()),
        ];
        if let Some(reason) = s.poisoned {
            out.push(("writes_refused".into(), reason));
        }
        out
    }
}

fn updated(outcome: WriteOutcome, ack: Option<AckPolicy>) -> Response {
    match outcome {
        WriteOutcome::Written(a) => Response::Updated {
            existed: true,
            durability: Some(durability(a, ack)),
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
    let Some(needed) = required_role(req) else {
        return Ok(());
    };
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
            format!(
                "{} needs a {needed:?} token; this connection has {role:?}",
                req.op_name()
            ),
        )),
    }
}
