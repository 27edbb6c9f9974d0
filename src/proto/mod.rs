//! The client wire protocol, sans-io: messages, the frame codec and error
//! codes. No sockets, no tasks, no clocks; `net` moves the bytes.
//!
//! The byte-level specification, complete enough to write a client in another
//! language, is `proto-docs/wire-protocol.md`; error codes are described in
//! `proto-docs/errors.md`. In short:
//!
//! - QUIC (TLS 1.3) with ALPN [`ALPN`] (`strata/1`);
//! - one bidirectional stream per request: the client writes one request
//!   frame and finishes its side, the server writes one response frame and
//!   finishes;
//! - a frame is `[u32 LE body_len][postcard body]`
//!   ([`encode_request`], [`encode_response`], [`decode_frame`]);
//! - the body is a [`Request`] or a [`Response`]; a failed request gets
//!   [`Response::Error`] with an [`ErrorCode`].
//!
//! # Layout
//!
//! - `message`: [`Request`], [`Response`] and the structs inside them.
//! - `codec`: framing, [`ProtoError`].
//! - `error_code`: [`ErrorCode`].
//! - `limits`: [`Limits`] and [`Request::validate`].

mod codec;
mod error_code;
mod limits;
mod message;
#[cfg(test)]
mod strategy;

/// Re-exported from [`crate::types`]: the store judges conditions too. Its
/// variant order is part of this wire format (pinned by a test here).
pub use crate::types::Condition;
pub use codec::{
    FRAME_HEADER_BYTES, MalformedCause, ProtoError, decode_body, decode_frame, encode_frame,
    encode_request, encode_response, frame_len,
};
pub use error_code::ErrorCode;
pub use limits::{
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_KEYS_PER_REQUEST,
    DEFAULT_MAX_VALUE_BYTES, Limits, RequestError, check_deadline, check_key_count, check_key_len,
    check_value_len,
};
pub use message::{
    ClusterMapReply, ClusterNode, ClusterShard, DeadlineState, Durability, Entry, ErrorReply,
    HelloReply, KeyPage, Op, RawSnapshotItem, RawSnapshotPage, Request, Response, ScanPage,
    SetEntry, SnapshotItem, SnapshotPage, TtlState, WriteReply,
};

/// The QUIC ALPN protocol id of this protocol. It names the major version: an
/// incompatible successor gets `strata/2`, and a server may offer both.
/// See `proto-docs/wire-protocol.md`, "Versioning".
pub const ALPN: &[u8] = b"strata/1";

/// The protocol major version a client names in [`Request::Hello`], the
/// number in [`ALPN`].
pub const PROTOCOL_VERSION: u32 = 1;

/// QUIC application error codes this protocol uses in `STOP_SENDING`,
/// `RESET_STREAM` and `CONNECTION_CLOSE` frames. See
/// `proto-docs/wire-protocol.md`, "QUIC application error codes". Peers must
/// tolerate codes they do not know.
pub mod quic_code {
    /// Normal close of a connection.
    pub const NO_ERROR: u32 = 0;
    /// The server stops reading a request frame longer than its limit, after
    /// replying `FrameTooLarge`.
    pub const FRAME_TOO_LARGE: u32 = 1;
    /// A peer broke the one-frame-per-stream rules.
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// The server closes connections as it shuts down.
    pub const SHUTTING_DOWN: u32 = 3;
    /// The server stops reading a request frame that did not arrive within
    /// its request timeout, after replying `Timeout`.
    pub const REQUEST_TIMEOUT: u32 = 4;
    /// The server stops reading a request it shed for load, after replying
    /// `Overloaded`.
    pub const OVERLOADED: u32 = 5;
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::types::{AckPolicy, End, NodeId, OnTimeout, Score, ScoreUpdate, Seq, ValueKind};

    const WIRE_DOC: &str = include_str!("../../proto-docs/wire-protocol.md");

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    enum Msg {
        Req(Request),
        Resp(Response),
    }

    /// The list `l` = `["a"]` in a raw snapshot: metadata, then element.
    fn raw_snapshot_reply() -> Response {
        let meta = crate::store::ListMeta {
            id: 5,
            head: (1 << 63) - 1,
            len: 1,
        };
        let item = |key, value, kind| super::RawSnapshotItem {
            key,
            value,
            version: Seq(5),
            expires_at_ms: 0,
            kind,
        };
        Response::RawSnapshot(super::RawSnapshotPage {
            snapshot: 1,
            seq: Seq(5),
            created_at_ms: 1_800_000_000_000,
            entries: vec![
                item(b("l"), meta.encode(), ValueKind::List),
                item(meta.element(b"l", 0), b("a"), ValueKind::String),
            ],
            next: None,
        })
    }

    /// A write fsynced locally, with no replicas asked for.
    fn local() -> Durability {
        Durability {
            local_synced: true,
            replicas_acked: 0,
            requested: AckPolicy::Async,
            degraded: false,
        }
    }

    /// The worked examples of `proto-docs/wire-protocol.md`, by the name the
    /// document gives them.
    fn doc_examples() -> Vec<(&'static str, Msg)> {
        use Msg::{Req, Resp};
        vec![
            (
                "hello-request",
                Req(Request::Hello {
                    protocol: PROTOCOL_VERSION,
                    token: Some("s3cret".into()),
                    client_name: Some("app".into()),
                }),
            ),
            (
                "hello-reply",
                Resp(Response::Hello(HelloReply {
                    protocol: PROTOCOL_VERSION,
                    server: "strata 0.1.0".into(),
                    node_id: Some(NodeId(1)),
                    role: Some("primary".into()),
                    limits: Limits::default(),
                })),
            ),
            ("get-request", Req(Request::Get { key: b("user:42") })),
            (
                "get-reply-found",
                Resp(Response::Value(Some(Entry {
                    value: b("hello"),
                    version: Seq(7),
                    ttl_ms: Some(1500),
                }))),
            ),
            ("get-reply-missing", Resp(Response::Value(None))),
            (
                "set-request",
                Req(Request::Set {
                    key: b("user:42"),
                    value: b("hello"),
                    ttl_ms: Some(60_000),
                    condition: Condition::Always,
                    ack: None,
                }),
            ),
            (
                "set-reply-written",
                Resp(Response::Written(WriteReply {
                    version: Seq(8),
                    durability: Durability {
                        local_synced: true,
                        replicas_acked: 0,
                        requested: AckPolicy::Async,
                        degraded: false,
                    },
                })),
            ),
            (
                "cas-set-request",
                Req(Request::Set {
                    key: b("user:42"),
                    value: b("bye"),
                    ttl_ms: None,
                    condition: Condition::IfVersion(Seq(8)),
                    ack: Some(AckPolicy::SemiSync {
                        replicas: 1,
                        timeout_ms: 500,
                        on_timeout: OnTimeout::Fail,
                    }),
                }),
            ),
            (
                "not-written-reply",
                Resp(Response::NotWritten {
                    current_version: Some(Seq(9)),
                }),
            ),
            (
                "incr-request",
                Req(Request::Incr {
                    key: b("hits"),
                    delta: -1,
                    ack: None,
                }),
            ),
            (
                "int-reply",
                Resp(Response::Int {
                    value: 41,
                    durability: Durability {
                        local_synced: true,
                        replicas_acked: 0,
                        requested: AckPolicy::Async,
                        degraded: false,
                    },
                }),
            ),
            (
                "multi-set-request",
                Req(Request::MultiSet {
                    entries: vec![
                        SetEntry {
                            key: b("a"),
                            value: b("1"),
                            ttl_ms: None,
                        },
                        SetEntry {
                            key: b("b"),
                            value: b("2"),
                            ttl_ms: Some(60_000),
                        },
                    ],
                    ack: Some(AckPolicy::Sync { timeout_ms: 1000 }),
                }),
            ),
            (
                "multi-set-reply",
                Resp(Response::Written(WriteReply {
                    version: Seq(9),
                    durability: Durability {
                        local_synced: true,
                        replicas_acked: 2,
                        requested: AckPolicy::Sync { timeout_ms: 1000 },
                        degraded: false,
                    },
                })),
            ),
            (
                "multi-get-request",
                Req(Request::MultiGet {
                    keys: vec![b("a"), b("nope")],
                }),
            ),
            (
                "values-reply",
                Resp(Response::Values(vec![
                    Some(Entry {
                        value: b("1"),
                        version: Seq(9),
                        ttl_ms: None,
                    }),
                    None,
                ])),
            ),
            (
                "exists-request",
                Req(Request::Exists {
                    keys: vec![b("a"), b("a"), b("nope")],
                }),
            ),
            ("count-reply", Resp(Response::Count(2))),
            (
                "delete-request",
                Req(Request::Delete {
                    key: b("a"),
                    condition: Condition::IfVersion(Seq(9)),
                    ack: None,
                }),
            ),
            (
                "deleted-reply",
                Resp(Response::Deleted {
                    existed: true,
                    durability: Some(Durability {
                        local_synced: true,
                        replicas_acked: 1,
                        requested: AckPolicy::SemiSync {
                            replicas: 1,
                            timeout_ms: 500,
                            on_timeout: OnTimeout::Degrade,
                        },
                        degraded: false,
                    }),
                }),
            ),
            (
                "deleted-reply-absent",
                Resp(Response::Deleted {
                    existed: false,
                    durability: None,
                }),
            ),
            (
                "expire-request",
                Req(Request::Expire {
                    key: b("b"),
                    ttl_ms: 5000,
                    ack: None,
                }),
            ),
            (
                "updated-reply",
                Resp(Response::Updated {
                    existed: true,
                    durability: Some(Durability {
                        local_synced: false,
                        replicas_acked: 0,
                        requested: AckPolicy::Async,
                        degraded: false,
                    }),
                }),
            ),
            (
                "set-at-request",
                Req(Request::SetAt {
                    key: b("s"),
                    value: b("v"),
                    expires_at_ms: 1_800_000_000_123,
                    condition: Condition::IfAbsent,
                    ack: None,
                }),
            ),
            (
                "expire-at-request",
                Req(Request::ExpireAt {
                    key: b("b"),
                    at_ms: 1_800_000_060_000,
                    ack: None,
                }),
            ),
            ("deadline-request", Req(Request::Deadline { key: b("b") })),
            (
                "deadline-reply",
                Resp(Response::Deadline(DeadlineState::ExpiresAt(
                    1_800_000_060_000,
                ))),
            ),
            (
                "scan-request",
                Req(Request::Scan {
                    prefix: b("user:"),
                    cursor: None,
                    limit: 2,
                }),
            ),
            (
                "page-reply",
                Resp(Response::Page(ScanPage {
                    entries: vec![
                        (
                            b("user:3"),
                            Entry {
                                value: b("ann"),
                                version: Seq(3),
                                ttl_ms: None,
                            },
                        ),
                        (
                            b("user:2"),
                            Entry {
                                value: b("bob"),
                                version: Seq(5),
                                ttl_ms: Some(1000),
                            },
                        ),
                    ],
                    next_cursor: Some(b("user:2")),
                })),
            ),
            (
                "scan-next-request",
                Req(Request::Scan {
                    prefix: b("user:"),
                    cursor: Some(b("user:2")),
                    limit: 2,
                }),
            ),
            (
                "page-reply-last",
                Resp(Response::Page(ScanPage {
                    entries: vec![(
                        b("user:1"),
                        Entry {
                            value: b("cy"),
                            version: Seq(6),
                            ttl_ms: None,
                        },
                    )],
                    next_cursor: None,
                })),
            ),
            (
                "snapshot-request",
                Req(Request::Snapshot {
                    snapshot: None,
                    after: None,
                }),
            ),
            (
                "snapshot-reply",
                Resp(Response::Snapshot(SnapshotPage {
                    snapshot: 1,
                    seq: Seq(12),
                    created_at_ms: 1_800_000_000_000,
                    entries: vec![
                        SnapshotItem {
                            key: b("a"),
                            value: b("1"),
                            version: Seq(9),
                            expires_at_ms: 0,
                        },
                        SnapshotItem {
                            key: b("b"),
                            value: b("2"),
                            version: Seq(9),
                            expires_at_ms: 1_800_000_060_000,
                        },
                    ],
                    next: Some(b("b")),
                })),
            ),
            (
                "snapshot-next-request",
                Req(Request::Snapshot {
                    snapshot: Some(1),
                    after: Some(b("b")),
                }),
            ),
            (
                "raw-snapshot-request",
                Req(Request::RawSnapshot {
                    snapshot: None,
                    after: None,
                }),
            ),
            ("raw-snapshot-reply", Resp(raw_snapshot_reply())),
            ("cluster-map-request", Req(Request::ClusterMap)),
            (
                "cluster-map-reply",
                Resp(Response::ClusterMap(super::ClusterMapReply {
                    version: 3,
                    vnodes: 256,
                    nodes: vec![super::ClusterNode {
                        id: 7,
                        name: "n1".into(),
                        client_addr: "127.0.0.1:7379".into(),
                        link_addr: "127.0.0.1:7380".into(),
                        shard: 1,
                    }],
                    shards: vec![super::ClusterShard {
                        id: 1,
                        primary: 7,
                        replicas: vec![],
                        epoch: 1,
                    }],
                })),
            ),
            (
                "cluster-failover-request",
                Req(Request::ClusterFailover {
                    shard: 1,
                    to: Some("n2".into()),
                    unclean: false,
                    dry_run: false,
                }),
            ),
            (
                "cluster-map-since-request",
                Req(Request::ClusterMapSince { version: 3 }),
            ),
            (
                "cluster-map-current-reply",
                Resp(Response::ClusterMapCurrent { version: 3 }),
            ),
            (
                "push-request",
                Req(Request::Push {
                    key: b("jobs"),
                    end: End::Left,
                    values: vec![b("a"), b("b")],
                    only_if_exists: false,
                    ack: None,
                }),
            ),
            (
                "length-reply",
                Resp(Response::Length {
                    len: 2,
                    durability: Some(local()),
                }),
            ),
            (
                "pop-request",
                Req(Request::Pop {
                    key: b("jobs"),
                    end: End::Right,
                    count: 1,
                    ack: None,
                }),
            ),
            (
                "popped-reply",
                Resp(Response::Popped {
                    values: Some(vec![b("a")]),
                    durability: Some(local()),
                }),
            ),
            (
                "list-range-request",
                Req(Request::ListRange {
                    key: b("jobs"),
                    start: 0,
                    stop: -1,
                }),
            ),
            ("elements-reply", Resp(Response::Elements(vec![b("b")]))),
            ("type-request", Req(Request::Type { key: b("jobs") })),
            ("kind-reply", Resp(Response::Kind(Some(ValueKind::List)))),
            (
                "scan-keys-request",
                Req(Request::ScanKeys {
                    prefix: b(""),
                    cursor: None,
                    limit: 10,
                    kind: Some(ValueKind::List),
                }),
            ),
            (
                "keys-reply",
                Resp(Response::Keys(KeyPage {
                    keys: vec![(b("jobs"), ValueKind::List)],
                    next_cursor: None,
                })),
            ),
            (
                "add-members-request",
                Req(Request::AddMembers {
                    key: b("user:1"),
                    kind: ValueKind::Hash,
                    members: vec![(b("name"), b("ada"))],
                    only_new: false,
                    ack: None,
                }),
            ),
            (
                "counted-reply",
                Resp(Response::Counted {
                    count: 1,
                    durability: Some(local()),
                }),
            ),
            (
                "scan-members-request",
                Req(Request::ScanMembers {
                    key: b("user:1"),
                    kind: ValueKind::Hash,
                    after: None,
                    limit: 0,
                }),
            ),
            (
                "members-reply",
                Resp(Response::Members(vec![(b("name"), b("ada"))])),
            ),
            (
                "add-scores-request",
                Req(Request::AddScores {
                    key: b("board"),
                    members: vec![(b("ann"), Score(1.5))],
                    exists: None,
                    update: ScoreUpdate::Any,
                    count_changed: false,
                    ack: None,
                }),
            ),
            (
                "score-range-request",
                Req(Request::ScoreRange {
                    key: b("board"),
                    start: 0,
                    stop: -1,
                    end: End::Right,
                }),
            ),
            (
                "scored-reply",
                Resp(Response::Scored {
                    members: vec![(b("ann"), Score(1.5))],
                    durability: None,
                }),
            ),
            (
                "error-reply",
                Resp(Response::Error(
                    ErrorReply::new(ErrorCode::ReadOnlyReplica, "read-only replica")
                        .with_leader_hint("10.0.0.1:7400"),
                )),
            ),
            (
                "overloaded-reply",
                Resp(Response::Error(
                    ErrorReply::new(ErrorCode::Overloaded, "busy").with_retry_after_ms(250),
                )),
            ),
        ]
    }

    /// The hex bytes of the example named `name` in the document: the fenced
    /// block after `<!-- example: name -->`, each line's hex pairs before its
    /// `|` annotation.
    fn doc_hex(name: &str) -> Option<Vec<u8>> {
        let marker = format!("<!-- example: {name} -->");
        let start = WIRE_DOC.find(&marker)? + marker.len();
        let rest = &WIRE_DOC[start..];
        let open = rest.find("```")?;
        let block = &rest[open..];
        let body_start = block.find('\n')? + 1;
        let body_end = body_start + block[body_start..].find("```")?;
        let mut out = Vec::new();
        for line in block[body_start..body_end].lines() {
            let hex = line.split('|').next().unwrap_or("");
            for token in hex.split_whitespace() {
                assert_eq!(token.len(), 2, "example {name}: bad hex token {token:?}");
                out.push(
                    u8::from_str_radix(token, 16)
                        .unwrap_or_else(|_| panic!("example {name}: bad hex token {token:?}")),
                );
            }
        }
        Some(out)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The document's hex dumps are exactly what the code produces, and
    /// decode back to the example messages: doc and code cannot drift.
    #[test]
    fn wire_doc_hex_examples_match_the_code() {
        let mut failures = Vec::new();
        for (name, msg) in doc_examples() {
            let frame = match &msg {
                Msg::Req(r) => encode_request(r),
                Msg::Resp(r) => encode_response(r),
            }
            .expect("encode");
            match doc_hex(name) {
                None => failures.push(format!("{name}: missing from the doc\n  {}", hex(&frame))),
                Some(doc) if doc != frame => failures.push(format!(
                    "{name}:\n  doc  {}\n  code {}",
                    hex(&doc),
                    hex(&frame)
                )),
                Some(_) => {}
            }
            let mut buf = BytesMut::from(&frame[..]);
            match msg {
                Msg::Req(r) => assert_eq!(decode_frame(&mut buf, u32::MAX), Ok(Some(r))),
                Msg::Resp(r) => assert_eq!(decode_frame(&mut buf, u32::MAX), Ok(Some(r))),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // Every example in the doc is checked here.
        let in_doc = WIRE_DOC.matches("<!-- example: ").count();
        assert_eq!(
            in_doc,
            doc_examples().len(),
            "unchecked examples in the doc"
        );
    }

    #[test]
    fn wire_doc_states_the_constants() {
        assert_eq!(ALPN, b"strata/1");
        assert!(WIRE_DOC.contains("`strata/1`"));
        assert!(WIRE_DOC.contains(&format!("{DEFAULT_MAX_FRAME_BYTES}")));
        assert!(WIRE_DOC.contains(&format!("{DEFAULT_MAX_KEY_BYTES}")));
        assert!(WIRE_DOC.contains(&format!("{DEFAULT_MAX_VALUE_BYTES}")));
        assert!(WIRE_DOC.contains(&format!("{DEFAULT_MAX_KEYS_PER_REQUEST}")));
        for (code, name) in [
            (quic_code::NO_ERROR, "NO_ERROR"),
            (quic_code::FRAME_TOO_LARGE, "FRAME_TOO_LARGE"),
            (quic_code::PROTOCOL_VIOLATION, "PROTOCOL_VIOLATION"),
            (quic_code::SHUTTING_DOWN, "SHUTTING_DOWN"),
            (quic_code::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
            (quic_code::OVERLOADED, "OVERLOADED"),
        ] {
            let row = format!("| {code:<4} | `{name}`");
            assert!(WIRE_DOC.contains(&row), "wire-protocol.md lacks {row:?}");
        }
    }

    #[test]
    fn errors_doc_lists_every_code_with_its_number() {
        let doc = include_str!("../../proto-docs/errors.md");
        for code in ErrorCode::ALL {
            let row = format!("| {} | `{:?}` |", code.as_u16(), code);
            assert!(doc.contains(&row), "errors.md lacks the row {row:?}");
        }
    }
}
