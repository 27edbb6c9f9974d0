//! [`ErrorCode`]: the stable, machine-readable reason carried by every error
//! reply. `proto-docs/errors.md` describes each code for client authors.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a request failed, as sent on the wire inside an
/// [`ErrorReply`](super::ErrorReply).
///
/// On the wire a code is its `u16` number as a postcard varint (the same bytes
/// a derived enum's variant index would give). The numbers are stable: a code
/// is never renumbered or reused, and new codes are only appended. A decoder
/// that meets a number it does not know yields [`ErrorCode::Unrecognized`]
/// instead of failing, so an older client still understands that the request
/// failed, and can show the reply's message.
///
/// See `proto-docs/errors.md` for what a client should do with each code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum ErrorCode {
    /// The request could not be decoded, names an unknown operation, or has
    /// an invalid argument (for example a zero TTL or an empty batch).
    BadRequest = 0, // wire index 0
    /// The request frame is longer than the server's frame limit, or the
    /// response would be.
    FrameTooLarge = 1, // wire index 1
    /// `Hello` named a protocol version this server does not speak.
    UnsupportedProtocol = 2, // wire index 2
    /// The server requires a token and this connection has not presented a
    /// valid one in `Hello`.
    Unauthenticated = 3, // wire index 3
    /// The connection is authenticated but not allowed to do this.
    PermissionDenied = 4, // wire index 4
    /// A key is longer than the server's `max_key_bytes`.
    KeyTooLarge = 5, // wire index 5
    /// A value is longer than the server's `max_value_bytes`.
    ValueTooLarge = 6, // wire index 6
    /// A multi-key request names more keys than `max_keys_per_request`.
    TooManyKeys = 7, // wire index 7
    /// `Incr` on a value that is not a decimal `i64`.
    NotAnInteger = 8, // wire index 8
    /// `Incr` would overflow an `i64`; the value is unchanged.
    Overflow = 9, // wire index 9
    /// A write was sent to a replica; `leader_hint` names the primary when
    /// the replica knows it.
    ReadOnlyReplica = 10, // wire index 10
    /// The node cannot make writes durable (an fsync or disk error poisoned
    /// its write-ahead log); it refuses writes until restarted.
    StorageFailed = 11, // wire index 11
    /// The server gave up on the request before it completed.
    Timeout = 12, // wire index 12
    /// The server shed the request before doing anything; retry after
    /// `retry_after_ms`.
    Overloaded = 13, // wire index 13
    /// The server is shutting down and did not execute the request.
    ShuttingDown = 14, // wire index 14
    /// A bug in the server.
    Internal = 15, // wire index 15
    /// A `semi-sync` (with `on_timeout: Fail`) or `sync` write was committed
    /// locally, but not enough replicas acknowledged it in time.
    ReplicationTimeout = 16, // wire index 16
    /// The node cannot serve requests yet (starting, recovering, or
    /// re-seeding from its primary) and did not execute the request.
    Unavailable = 17, // wire index 17
    /// In a cluster: a key of the request belongs to another shard, per
    /// the node's committed map. `leader_hint` names that shard's primary;
    /// the message names the slot, the shard and the map version. Fetch
    /// the map again (`ClusterMap`) and resend there.
    WrongShard = 18, // wire index 18
    /// A cluster-map change was sent to a node that is not the metadata
    /// group's leader; `leader_hint` names the leader's client address
    /// when the node knows it.
    NotLeader = 19, // wire index 19
    /// The key holds another kind of value than the request works on: a
    /// string request (`Get`, `Incr`, ...) on a list a RESP client made.
    WrongType = 20, // wire index 20
    /// A code newer than this decoder. Never sent by a server: a decoder maps
    /// every number it does not know to this variant, and encodes it as
    /// `u16::MAX`.
    Unrecognized = u16::MAX, // wire number 65535, decoder-side only
}

impl ErrorCode {
    /// Every code a server may send, in wire order.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::BadRequest,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedProtocol,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::KeyTooLarge,
        ErrorCode::ValueTooLarge,
        ErrorCode::TooManyKeys,
        ErrorCode::NotAnInteger,
        ErrorCode::Overflow,
        ErrorCode::ReadOnlyReplica,
        ErrorCode::StorageFailed,
        ErrorCode::Timeout,
        ErrorCode::Overloaded,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::ReplicationTimeout,
        ErrorCode::Unavailable,
        ErrorCode::WrongShard,
        ErrorCode::NotLeader,
        ErrorCode::WrongType,
    ];

    /// The code's number on the wire.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code with wire number `raw`, or `None` if this build does not
    /// know it (the decoder then uses [`ErrorCode::Unrecognized`]).
    pub fn from_u16(raw: u16) -> Option<ErrorCode> {
        if raw == ErrorCode::Unrecognized.as_u16() {
            return Some(ErrorCode::Unrecognized);
        }
        ErrorCode::ALL.get(usize::from(raw)).copied()
    }

    /// A stable `snake_case` name, for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedProtocol => "unsupported_protocol",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::KeyTooLarge => "key_too_large",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::TooManyKeys => "too_many_keys",
            ErrorCode::NotAnInteger => "not_an_integer",
            ErrorCode::Overflow => "overflow",
            ErrorCode::ReadOnlyReplica => "read_only_replica",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::ReplicationTimeout => "replication_timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::WrongShard => "wrong_shard",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::WrongType => "wrong_type",
            ErrorCode::Unrecognized => "unrecognized",
        }
    }

    /// Whether the condition is transient: the same request, unchanged, may
    /// succeed if sent again later (after `retry_after_ms` when given; for
    /// `ShuttingDown`, on a new connection or another node).
    ///
    /// This says nothing about safety. A write that failed with a code for
    /// which [`write_may_have_applied`](Self::write_may_have_applied) is true
    /// should only be resent if
    /// [`Request::is_idempotent`](super::Request::is_idempotent).
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Timeout
                | ErrorCode::Overloaded
                | ErrorCode::ShuttingDown
                | ErrorCode::ReplicationTimeout
                | ErrorCode::Unavailable
        )
    }

    /// Whether a write that failed with this code may nevertheless have been
    /// applied (its outcome is unknown, or, for `ReplicationTimeout`, it is
    /// committed locally but under-replicated).
    ///
    /// For every other code the server guarantees that it did not apply the
    /// request. Unknown codes count as "may have applied".
    pub const fn write_may_have_applied(self) -> bool {
        matches!(
            self,
            ErrorCode::StorageFailed
                | ErrorCode::Timeout
                | ErrorCode::Internal
                | ErrorCode::ReplicationTimeout
                | ErrorCode::Unrecognized
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = u16::deserialize(deserializer)?;
        // NOTE: an unknown number is not an error: servers append codes
        // within one protocol version, and clients must keep working.
        Ok(ErrorCode::from_u16(raw).unwrap_or(ErrorCode::Unrecognized))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire number of every code, written out by hand. An exhaustive
    /// match (no `_` arm) so that a new code cannot compile without being
    /// pinned here.
    fn pinned(code: ErrorCode) -> u16 {
        match code {
            ErrorCode::BadRequest => 0,
            ErrorCode::FrameTooLarge => 1,
            ErrorCode::UnsupportedProtocol => 2,
            ErrorCode::Unauthenticated => 3,
            ErrorCode::PermissionDenied => 4,
            ErrorCode::KeyTooLarge => 5,
            ErrorCode::ValueTooLarge => 6,
            ErrorCode::TooManyKeys => 7,
            ErrorCode::NotAnInteger => 8,
            ErrorCode::Overflow => 9,
            ErrorCode::ReadOnlyReplica => 10,
            ErrorCode::StorageFailed => 11,
            ErrorCode::Timeout => 12,
            ErrorCode::Overloaded => 13,
            ErrorCode::ShuttingDown => 14,
            ErrorCode::Internal => 15,
            ErrorCode::ReplicationTimeout => 16,
            ErrorCode::Unavailable => 17,
            ErrorCode::WrongShard => 18,
            ErrorCode::NotLeader => 19,
            ErrorCode::WrongType => 20,
            ErrorCode::Unrecognized => u16::MAX,
        }
    }

    #[test]
    fn error_code_wire_indices_are_pinned() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let want = pinned(*code);
            assert_eq!(usize::from(want), i, "{code} is out of order in ALL");
            assert_eq!(code.as_u16(), want, "{code} renumbered");
            let bytes = postcard::to_allocvec(code).expect("encode");
            // Every code below 128 is one varint byte equal to its number.
            assert_eq!(bytes, vec![u8::try_from(want).expect("< 128")], "{code}");
        }
        let bytes = postcard::to_allocvec(&ErrorCode::Unrecognized).expect("encode");
        assert_eq!(bytes, vec![0xff, 0xff, 0x03]);
    }

    #[test]
    fn error_code_roundtrips_and_unknown_numbers_decode_as_unrecognized() {
        for code in ErrorCode::ALL.iter().chain([&ErrorCode::Unrecognized]) {
            let bytes = postcard::to_allocvec(code).expect("encode");
            let back: ErrorCode = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back, *code);
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(*code));
        }
        for raw in [21u16, 22, 127, 128, 1000, u16::MAX - 1] {
            assert_eq!(ErrorCode::from_u16(raw), None);
            let bytes = postcard::to_allocvec(&raw).expect("encode");
            let back: ErrorCode = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back, ErrorCode::Unrecognized, "raw {raw}");
        }
        // Larger than a u16 is malformed, not unrecognized.
        let bytes = postcard::to_allocvec(&70_000u32).expect("encode");
        assert!(postcard::from_bytes::<ErrorCode>(&bytes).is_err());
    }

    #[test]
    fn retry_classification() {
        let retryable: Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|c| c.is_retryable())
            .copied()
            .collect();
        assert_eq!(
            retryable,
            vec![
                ErrorCode::Timeout,
                ErrorCode::Overloaded,
                ErrorCode::ShuttingDown,
                ErrorCode::ReplicationTimeout,
                ErrorCode::Unavailable,
            ]
        );
        assert!(!ErrorCode::Unrecognized.is_retryable());
        // Codes that refuse before executing must say so.
        for code in [
            ErrorCode::Overloaded,
            ErrorCode::ShuttingDown,
            ErrorCode::Unavailable,
            ErrorCode::ReadOnlyReplica,
            ErrorCode::BadRequest,
        ] {
            assert!(!code.write_may_have_applied(), "{code}");
        }
        assert!(ErrorCode::Timeout.write_may_have_applied());
        assert!(ErrorCode::ReplicationTimeout.write_may_have_applied());
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        names.push(ErrorCode::Unrecognized.name());
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
