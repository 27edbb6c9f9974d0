//! Hand-written proptest strategies for every message type (tests only).
//!
//! Each `prop_oneof!` lists one arm per variant; the pinning tests in
//! `message.rs` fail to compile when a variant is added, which is the
//! reminder to add an arm here too.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::{
    Condition, DeadlineState, Durability, Entry, ErrorCode, ErrorReply, HelloReply, KeyPage,
    Limits, RawSnapshotItem, RawSnapshotPage, Request, Response, ScanPage, SetEntry, SnapshotItem,
    SnapshotPage, TtlState, WriteReply,
};
use crate::types::{AckPolicy, End, NodeId, OnTimeout, Score, ScoreUpdate, Seq, ValueKind};

/// Short byte strings, including empty ones.
pub(crate) fn arb_bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

/// Short strings of arbitrary (multi-byte) characters.
fn arb_string() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn arb_seq() -> impl Strategy<Value = Seq> {
    any::<u64>().prop_map(Seq)
}

fn arb_ack() -> impl Strategy<Value = AckPolicy> {
    let on_timeout = prop_oneof![Just(OnTimeout::Degrade), Just(OnTimeout::Fail)];
    prop_oneof![
        Just(AckPolicy::Async),
        (any::<u32>(), any::<u64>(), on_timeout).prop_map(|(replicas, timeout_ms, on_timeout)| {
            AckPolicy::SemiSync {
                replicas,
                timeout_ms,
                on_timeout,
            }
        }),
        any::<u64>().prop_map(|timeout_ms| AckPolicy::Sync { timeout_ms }),
    ]
}

fn arb_condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        Just(Condition::Always),
        Just(Condition::IfAbsent),
        Just(Condition::IfPresent),
        arb_seq().prop_map(Condition::IfVersion),
    ]
}

fn arb_keys() -> impl Strategy<Value = Vec<Bytes>> {
    vec(arb_bytes(), 0..6)
}

/// Any request, every variant with arbitrary fields.
pub(crate) fn arb_request() -> impl Strategy<Value = Request> {
    let ack = || option::of(arb_ack());
    prop_oneof![
        (
            any::<u32>(),
            option::of(arb_string()),
            option::of(arb_string())
        )
            .prop_map(|(protocol, token, client_name)| Request::Hello {
                protocol,
                token,
                client_name,
            }),
        Just(Request::Ping),
        arb_bytes().prop_map(|key| Request::Get { key }),
        arb_keys().prop_map(|keys| Request::MultiGet { keys }),
        arb_keys().prop_map(|keys| Request::Exists { keys }),
        arb_bytes().prop_map(|key| Request::Ttl { key }),
        (
            arb_bytes(),
            arb_bytes(),
            option::of(any::<u64>()),
            arb_condition(),
            ack()
        )
            .prop_map(|(key, value, ttl_ms, condition, ack)| Request::Set {
                key,
                value,
                ttl_ms,
                condition,
                ack,
            }),
        (
            vec(
                (arb_bytes(), arb_bytes(), option::of(any::<u64>()))
                    .prop_map(|(key, value, ttl_ms)| SetEntry { key, value, ttl_ms }),
                0..5
            ),
            ack()
        )
            .prop_map(|(entries, ack)| Request::MultiSet { entries, ack }),
        (arb_bytes(), arb_condition(), ack()).prop_map(|(key, condition, ack)| {
            Request::Delete {
                key,
                condition,
                ack,
            }
        }),
        (arb_bytes(), any::<u64>(), ack()).prop_map(|(key, ttl_ms, ack)| Request::Expire {
            key,
            ttl_ms,
            ack
        }),
        (arb_bytes(), ack()).prop_map(|(key, ack)| Request::Persist { key, ack }),
        (arb_bytes(), any::<i64>(), ack()).prop_map(|(key, delta, ack)| Request::Incr {
            key,
            delta,
            ack
        }),
        (arb_bytes(), option::of(arb_bytes()), any::<u32>()).prop_map(|(prefix, cursor, limit)| {
            Request::Scan {
                prefix,
                cursor,
                limit,
            }
        }),
        Just(Request::Info),
        Just(Request::Promote),
        arb_string().prop_map(|primary| Request::ReplicaOf { primary }),
        any::<u64>().prop_map(|expired_before_ms| Request::Digest { expired_before_ms }),
        Just(Request::Checkpoint),
        (option::of(any::<u64>()), option::of(arb_bytes()))
            .prop_map(|(snapshot, after)| Request::Snapshot { snapshot, after }),
        (option::of(any::<u64>()), option::of(arb_bytes()))
            .prop_map(|(snapshot, after)| Request::RawSnapshot { snapshot, after }),
        (
            arb_bytes(),
            arb_kind(),
            vec((arb_bytes(), arb_bytes()), 0..4),
            any::<bool>(),
            ack()
        )
            .prop_map(|(key, kind, members, only_new, ack)| Request::AddMembers {
                key,
                kind,
                members,
                only_new,
                ack,
            }),
        (arb_bytes(), arb_kind(), arb_keys(), ack()).prop_map(|(key, kind, members, ack)| {
            Request::RemoveMembers {
                key,
                kind,
                members,
                ack,
            }
        }),
        (arb_bytes(), any::<u32>(), ack()).prop_map(|(key, count, ack)| Request::PopMembers {
            key,
            count,
            ack
        }),
        (arb_bytes(), arb_bytes(), any::<i64>(), ack()).prop_map(|(key, field, delta, ack)| {
            Request::IncrField {
                key,
                field,
                delta,
                ack,
            }
        }),
        (arb_bytes(), arb_kind(), arb_keys())
            .prop_map(|(key, kind, members)| Request::MemberValues { key, kind, members }),
        (
            arb_bytes(),
            arb_kind(),
            option::of(arb_bytes()),
            any::<u32>()
        )
            .prop_map(|(key, kind, after, limit)| Request::ScanMembers {
                key,
                kind,
                after,
                limit,
            }),
        (arb_bytes(), arb_kind()).prop_map(|(key, kind)| Request::CountMembers { key, kind }),
        (arb_bytes(), arb_end(), arb_keys(), any::<bool>(), ack()).prop_map(
            |(key, end, values, only_if_exists, ack)| Request::Push {
                key,
                end,
                values,
                only_if_exists,
                ack,
            }
        ),
        (arb_bytes(), arb_end(), any::<u32>(), ack()).prop_map(|(key, end, count, ack)| {
            Request::Pop {
                key,
                end,
                count,
                ack,
            }
        }),
        (arb_bytes(), any::<i64>(), any::<i64>())
            .prop_map(|(key, start, stop)| Request::ListRange { key, start, stop }),
        arb_bytes().prop_map(|key| Request::ListLen { key }),
        (arb_bytes(), any::<i64>()).prop_map(|(key, index)| Request::ListIndex { key, index }),
        arb_bytes().prop_map(|key| Request::Type { key }),
        (
            arb_bytes(),
            option::of(arb_bytes()),
            any::<u32>(),
            option::of(arb_kind())
        )
            .prop_map(|(prefix, cursor, limit, kind)| Request::ScanKeys {
                prefix,
                cursor,
                limit,
                kind,
            }),
        (
            arb_bytes(),
            vec((arb_bytes(), arb_score()), 0..4),
            option::of(any::<bool>()),
            arb_update(),
            any::<bool>(),
            ack()
        )
            .prop_map(|(key, members, exists, update, count_changed, ack)| {
                Request::AddScores {
                    key,
                    members,
                    exists,
                    update,
                    count_changed,
                    ack,
                }
            }),
        (
            arb_bytes(),
            arb_bytes(),
            arb_score(),
            option::of(any::<bool>()),
            arb_update(),
            ack()
        )
            .prop_map(|(key, member, delta, exists, update, ack)| {
                Request::IncrScore {
                    key,
                    member,
                    delta,
                    exists,
                    update,
                    ack,
                }
            }),
        (arb_bytes(), arb_keys()).prop_map(|(key, members)| Request::Scores { key, members }),
        (arb_bytes(), arb_end(), any::<u32>(), ack()).prop_map(|(key, end, count, ack)| {
            Request::PopScores {
                key,
                end,
                count,
                ack,
            }
        }),
        (arb_bytes(), any::<i64>(), any::<i64>(), arb_end()).prop_map(|(key, start, stop, end)| {
            Request::ScoreRange {
                key,
                start,
                stop,
                end,
            }
        }),
        (
            arb_bytes(),
            arb_bytes(),
            any::<u64>(),
            arb_condition(),
            ack()
        )
            .prop_map(
                |(key, value, expires_at_ms, condition, ack)| Request::SetAt {
                    key,
                    value,
                    expires_at_ms,
                    condition,
                    ack,
                }
            ),
        (arb_bytes(), any::<u64>(), ack()).prop_map(|(key, at_ms, ack)| Request::ExpireAt {
            key,
            at_ms,
            ack
        }),
        arb_bytes().prop_map(|key| Request::Deadline { key }),
    ]
}

/// Any `f64`, NaN included: messages compare scores by their bits.
fn arb_score() -> impl Strategy<Value = Score> {
    any::<u64>().prop_map(|bits| Score(f64::from_bits(bits)))
}

fn arb_update() -> impl Strategy<Value = ScoreUpdate> {
    prop_oneof![
        Just(ScoreUpdate::Any),
        Just(ScoreUpdate::Greater),
        Just(ScoreUpdate::Less),
    ]
}

fn arb_end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Left), Just(End::Right)]
}

fn arb_kind() -> impl Strategy<Value = ValueKind> {
    prop_oneof![
        Just(ValueKind::String),
        Just(ValueKind::List),
        Just(ValueKind::Set),
        Just(ValueKind::Hash),
        Just(ValueKind::SortedSet),
    ]
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (arb_bytes(), arb_seq(), option::of(any::<u64>())).prop_map(|(value, version, ttl_ms)| Entry {
        value,
        version,
        ttl_ms,
    })
}

fn arb_durability() -> impl Strategy<Value = Durability> {
    (any::<bool>(), any::<u32>(), arb_ack(), any::<bool>()).prop_map(
        |(local_synced, replicas_acked, requested, degraded)| Durability {
            local_synced,
            replicas_acked,
            requested,
            degraded,
        },
    )
}

fn arb_limits() -> impl Strategy<Value = Limits> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(k, v, n, f)| Limits {
        max_key_bytes: k,
        max_value_bytes: v,
        max_keys_per_request: n,
        max_frame_bytes: f,
    })
}

fn arb_error_code() -> impl Strategy<Value = ErrorCode> {
    let mut all = ErrorCode::ALL.to_vec();
    all.push(ErrorCode::Unrecognized);
    prop::sample::select(all)
}

/// Any response, every variant with arbitrary fields.
pub(crate) fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (
            any::<u32>(),
            arb_string(),
            option::of(any::<u64>().prop_map(NodeId)),
            option::of(arb_string()),
            arb_limits()
        )
            .prop_map(|(protocol, server, node_id, role, limits)| {
                Response::Hello(HelloReply {
                    protocol,
                    server,
                    node_id,
                    role,
                    limits,
                })
            }),
        Just(Response::Pong),
        option::of(arb_entry()).prop_map(Response::Value),
        vec(option::of(arb_entry()), 0..5).prop_map(Response::Values),
        any::<u64>().prop_map(Response::Count),
        prop_oneof![
            Just(TtlState::Missing),
            Just(TtlState::Persistent),
            any::<u64>().prop_map(TtlState::ExpiresIn),
        ]
        .prop_map(Response::Ttl),
        (arb_seq(), arb_durability()).prop_map(|(version, durability)| Response::Written(
            WriteReply {
                version,
                durability
            }
        )),
        option::of(arb_seq()).prop_map(|current_version| Response::NotWritten { current_version }),
        (any::<bool>(), option::of(arb_durability())).prop_map(|(existed, durability)| {
            Response::Deleted {
                existed,
                durability,
            }
        }),
        (any::<bool>(), option::of(arb_durability())).prop_map(|(existed, durability)| {
            Response::Updated {
                existed,
                durability,
            }
        }),
        (any::<i64>(), arb_durability())
            .prop_map(|(value, durability)| Response::Int { value, durability }),
        (
            vec((arb_bytes(), arb_entry()), 0..4),
            option::of(arb_bytes())
        )
            .prop_map(|(entries, next_cursor)| Response::Page(ScanPage {
                entries,
                next_cursor
            })),
        vec((arb_string(), arb_string()), 0..4).prop_map(Response::Info),
        (
            arb_error_code(),
            arb_string(),
            option::of(any::<u64>()),
            option::of(arb_string())
        )
            .prop_map(|(code, message, retry_after_ms, leader_hint)| {
                Response::Error(ErrorReply {
                    code,
                    message,
                    retry_after_ms,
                    leader_hint,
                })
            }),
        (
            any::<u64>(),
            any::<u64>(),
            vec(
                (arb_bytes(), arb_bytes(), any::<u64>(), any::<u64>()).prop_map(
                    |(key, value, version, expires_at_ms)| SnapshotItem {
                        key,
                        value,
                        version: Seq(version),
                        expires_at_ms,
                    }
                ),
                0..3
            ),
            option::of(arb_bytes())
        )
            .prop_map(
                |(snapshot, seq, entries, next)| Response::Snapshot(SnapshotPage {
                    snapshot,
                    seq: Seq(seq),
                    created_at_ms: 1,
                    entries,
                    next,
                })
            ),
        (any::<u64>(), option::of(arb_durability()))
            .prop_map(|(len, durability)| Response::Length { len, durability }),
        (option::of(arb_keys()), option::of(arb_durability()))
            .prop_map(|(values, durability)| Response::Popped { values, durability }),
        arb_keys().prop_map(Response::Elements),
        option::of(arb_bytes()).prop_map(Response::Element),
        option::of(arb_kind()).prop_map(Response::Kind),
        (
            vec((arb_bytes(), arb_kind()), 0..4),
            option::of(arb_bytes())
        )
            .prop_map(|(keys, next_cursor)| Response::Keys(KeyPage { keys, next_cursor })),
        (
            any::<u64>(),
            vec(
                (
                    arb_bytes(),
                    arb_bytes(),
                    any::<u64>(),
                    any::<u64>(),
                    arb_kind()
                )
                    .prop_map(|(key, value, version, expires_at_ms, kind)| {
                        RawSnapshotItem {
                            key,
                            value,
                            version: Seq(version),
                            expires_at_ms,
                            kind,
                        }
                    }),
                0..3
            ),
            option::of(arb_bytes())
        )
            .prop_map(
                |(seq, entries, next)| Response::RawSnapshot(RawSnapshotPage {
                    snapshot: 1,
                    seq: Seq(seq),
                    created_at_ms: 2,
                    entries,
                    next,
                })
            ),
        (any::<u64>(), option::of(arb_durability()))
            .prop_map(|(count, durability)| Response::Counted { count, durability }),
        vec(option::of(arb_bytes()), 0..4).prop_map(Response::MemberValues),
        vec((arb_bytes(), arb_bytes()), 0..4).prop_map(Response::Members),
        (option::of(arb_score()), option::of(arb_durability()))
            .prop_map(|(score, durability)| Response::Score { score, durability }),
        vec(option::of(arb_score()), 0..4).prop_map(Response::Scores),
        (
            vec((arb_bytes(), arb_score()), 0..4),
            option::of(arb_durability())
        )
            .prop_map(|(members, durability)| Response::Scored {
                members,
                durability
            }),
        prop_oneof![
            Just(DeadlineState::Missing),
            Just(DeadlineState::Persistent),
            any::<u64>().prop_map(DeadlineState::ExpiresAt),
        ]
        .prop_map(Response::Deadline),
    ]
}
