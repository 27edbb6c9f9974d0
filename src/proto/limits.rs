//! [`Limits`]: the sizes a server accepts, and [`Request::validate`], the
//! argument checks every server applies before executing a request.
//!
//! Keeping the checks here, next to the messages, lets the server and a
//! client (which learns the limits from `Hello`) reject the same requests
//! for the same reasons.

use serde::{Deserialize, Serialize};

use super::{Condition, Request, SetEntry};
use crate::types::{Score, ValueKind};

/// Default [`Limits::max_frame_bytes`]: one maximal value plus room for its
/// key and the message around it.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024 + 64 * 1024;
/// Default [`Limits::max_key_bytes`].
pub const DEFAULT_MAX_KEY_BYTES: u32 = 16 * 1024;
/// Default [`Limits::max_value_bytes`].
pub const DEFAULT_MAX_VALUE_BYTES: u32 = 8 * 1024 * 1024;
/// Default [`Limits::max_keys_per_request`].
pub const DEFAULT_MAX_KEYS_PER_REQUEST: u32 = 1024;

/// What a server accepts. Configured on the server and reported to clients in
/// [`HelloReply::limits`](super::HelloReply::limits).
///
/// On the wire: four `u32` varints in field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key_bytes: u32,
    /// Longest value, in bytes.
    pub max_value_bytes: u32,
    /// Most keys in one `MultiGet`, `Exists` or `MultiSet`, values in one
    /// `Push` or `Pop`, and the largest `Scan` or `ScanKeys` page.
    pub max_keys_per_request: u32,
    /// Longest frame body (the 4-byte header excluded), in either direction.
    /// The server refuses longer request frames before reading their body and
    /// never sends a longer response.
    pub max_frame_bytes: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_keys_per_request: DEFAULT_MAX_KEYS_PER_REQUEST,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl Limits {
    /// The page size a `Scan` with `limit` actually gets: `limit` capped at
    /// [`max_keys_per_request`](Self::max_keys_per_request), and that cap
    /// when `limit` is 0.
    pub fn scan_page_len(&self, limit: u32) -> u32 {
        if limit == 0 {
            self.max_keys_per_request
        } else {
            limit.min(self.max_keys_per_request)
        }
    }
}

/// A request whose arguments break the protocol's rules or a server limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A key (or a `Scan` prefix) is longer than `max_key_bytes`.
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// A value is longer than `max_value_bytes`.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// A multi-key request names more keys than `max_keys_per_request`.
    #[error("{count} keys exceed the limit of {max} per request")]
    TooManyKeys {
        /// How many keys the request names.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// A TTL of 0 ms (use `Delete` to remove a key now).
    #[error("a ttl must be at least 1 ms")]
    ZeroTtl,
    /// An absolute expiry time of 0 (which the stored format reads as
    /// "never").
    #[error("an expiry time must be at least 1 (ms since the Unix epoch)")]
    ZeroDeadline,
    /// A `MultiSet` without entries, or a `Push` without values.
    #[error("{op} needs at least one value")]
    EmptyBatch {
        /// The operation.
        op: &'static str,
    },
    /// A member request naming a kind it does not work on (`AddMembers`,
    /// `MemberValues` and `ScanMembers` take `Set` or `Hash`;
    /// `RemoveMembers` and `CountMembers` also `SortedSet`).
    #[error("{op} does not work on a {}", kind.name())]
    NotMembers {
        /// The operation.
        op: &'static str,
        /// The kind it was given.
        kind: ValueKind,
    },
    /// A sorted-set score or increment that is NaN.
    #[error("{op} needs scores that are numbers, not NaN")]
    NanScore {
        /// The operation.
        op: &'static str,
    },
    /// A condition the operation does not support (`Delete` accepts only
    /// `Always` and `IfVersion`).
    #[error("{op} does not support the condition {condition:?}")]
    UnsupportedCondition {
        /// The operation.
        op: &'static str,
        /// The condition it was given.
        condition: Condition,
    },
}

/// The key-length rule, for every layer that enforces it (the server
/// through [`Request::validate`], the store on its own API).
pub fn check_key_len(len: usize, max: u32) -> Result<(), RequestError> {
    if len > max as usize {
        return Err(RequestError::KeyTooLarge { len, max });
    }
    Ok(())
}

/// The value-length rule, for every layer that enforces it.
pub fn check_value_len(len: usize, max: u32) -> Result<(), RequestError> {
    if len > max as usize {
        return Err(RequestError::ValueTooLarge { len, max });
    }
    Ok(())
}

/// The keys-per-request rule, for every layer that enforces it.
pub fn check_key_count(count: usize, max: u32) -> Result<(), RequestError> {
    if count > max as usize {
        return Err(RequestError::TooManyKeys { count, max });
    }
    Ok(())
}

fn check_key(key: &[u8], limits: &Limits) -> Result<(), RequestError> {
    check_key_len(key.len(), limits.max_key_bytes)
}

fn check_value(value: &[u8], limits: &Limits) -> Result<(), RequestError> {
    check_value_len(value.len(), limits.max_value_bytes)
}

fn check_count(count: usize, limits: &Limits) -> Result<(), RequestError> {
    check_key_count(count, limits.max_keys_per_request)
}

/// A member request's key, kind (one of `kinds`), and member names
/// (bounded like keys) and their number.
fn check_members<'a>(
    req: &Request,
    key: &[u8],
    (kinds, kind): (&[ValueKind], ValueKind),
    names: impl ExactSizeIterator<Item = &'a bytes::Bytes>,
    limits: &Limits,
) -> Result<(), RequestError> {
    check_key(key, limits)?;
    if !kinds.contains(&kind) {
        return Err(RequestError::NotMembers {
            op: req.op_name(),
            kind,
        });
    }
    check_count(names.len(), limits)?;
    names.into_iter().try_for_each(|n| check_key(n, limits))
}

/// What a sorted-set request names its kind as.
const SCORED: (&[ValueKind], ValueKind) = (&[ValueKind::SortedSet], ValueKind::SortedSet);

fn check_scores(
    req: &Request,
    mut scores: impl Iterator<Item = Score>,
) -> Result<(), RequestError> {
    match scores.any(|s| s.0.is_nan()) {
        true => Err(RequestError::NanScore { op: req.op_name() }),
        false => Ok(()),
    }
}

fn check_ttl(ttl_ms: Option<u64>) -> Result<(), RequestError> {
    match ttl_ms {
        Some(0) => Err(RequestError::ZeroTtl),
        _ => Ok(()),
    }
}

/// The expiry-time rule, for every layer that enforces it: 0 would read
/// as "never" in the stored formats.
pub fn check_deadline(at_ms: u64) -> Result<(), RequestError> {
    match at_ms {
        0 => Err(RequestError::ZeroDeadline),
        _ => Ok(()),
    }
}

impl Request {
    /// Checks the request's arguments against the protocol's rules and
    /// `limits`, without touching any data.
    ///
    /// The checks: key, prefix and value lengths; the number of keys in
    /// multi-key requests; no zero TTL or expiry time; no empty
    /// `MultiSet`; `Delete` only with `Always` or `IfVersion`. `Hello`'s
    /// protocol version is checked by the connection, not here.
    ///
    /// # Errors
    ///
    /// The first rule the request breaks; [`RequestError::code`] gives the
    /// code to answer with.
    pub fn validate(&self, limits: &Limits) -> Result<(), RequestError> {
        match self {
            Request::Hello { .. }
            | Request::Ping
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
            | Request::ClusterFailover { .. } => Ok(()),
            Request::Get { key }
            | Request::Ttl { key }
            | Request::Deadline { key }
            | Request::Persist { key, .. }
            | Request::Incr { key, .. } => check_key(key, limits),
            Request::MultiGet { keys } | Request::Exists { keys } => {
                check_count(keys.len(), limits)?;
                keys.iter().try_for_each(|k| check_key(k, limits))
            }
            Request::Set {
                key, value, ttl_ms, ..
            } => {
                check_key(key, limits)?;
                check_value(value, limits)?;
                check_ttl(*ttl_ms)
            }
            Request::MultiSet { entries, .. } => {
                if entries.is_empty() {
                    return Err(RequestError::EmptyBatch { op: "multi_set" });
                }
                check_count(entries.len(), limits)?;
                entries
                    .iter()
                    .try_for_each(|SetEntry { key, value, ttl_ms }| {
                        check_key(key, limits)?;
                        check_value(value, limits)?;
                        check_ttl(*ttl_ms)
                    })
            }
            Request::Delete { key, condition, .. } => {
                check_key(key, limits)?;
                match condition {
                    Condition::Always | Condition::IfVersion(_) => Ok(()),
                    Condition::IfAbsent | Condition::IfPresent => {
                        Err(RequestError::UnsupportedCondition {
                            op: "delete",
                            condition: *condition,
                        })
                    }
                }
            }
            Request::Expire { key, ttl_ms, .. } => {
                check_key(key, limits)?;
                check_ttl(Some(*ttl_ms))
            }
            Request::SetAt {
                key,
                value,
                expires_at_ms,
                ..
            } => {
                check_key(key, limits)?;
                check_value(value, limits)?;
                check_deadline(*expires_at_ms)
            }
            Request::ExpireAt { key, at_ms, .. } => {
                check_key(key, limits)?;
                check_deadline(*at_ms)
            }
            Request::Scan { prefix, .. } | Request::ScanKeys { prefix, .. } => {
                check_key(prefix, limits)
            }
            Request::ListRange { key, .. }
            | Request::ListLen { key }
            | Request::ListIndex { key, .. }
            | Request::Type { key } => check_key(key, limits),
            Request::Push { key, values, .. } => {
                check_key(key, limits)?;
                if values.is_empty() {
                    return Err(RequestError::EmptyBatch { op: "push" });
                }
                check_count(values.len(), limits)?;
                values.iter().try_for_each(|v| check_value(v, limits))
            }
            Request::Pop { key, count, .. } | Request::PopMembers { key, count, .. } => {
                check_key(key, limits)?;
                check_count(*count as usize, limits)
            }
            Request::AddMembers {
                key, kind, members, ..
            } => {
                let names = members.iter().map(|(m, _)| m);
                check_members(
                    self,
                    key,
                    (ValueKind::SETS_AND_HASHES, *kind),
                    names,
                    limits,
                )?;
                if members.is_empty() {
                    return Err(RequestError::EmptyBatch { op: self.op_name() });
                }
                members.iter().try_for_each(|(_, v)| check_value(v, limits))
            }
            Request::RemoveMembers {
                key, kind, members, ..
            } => check_members(
                self,
                key,
                (ValueKind::MEMBER_KINDS, *kind),
                members.iter(),
                limits,
            ),
            Request::MemberValues { key, kind, members } => check_members(
                self,
                key,
                (ValueKind::SETS_AND_HASHES, *kind),
                members.iter(),
                limits,
            ),
            Request::ScanMembers {
                key, kind, after, ..
            } => check_members(
                self,
                key,
                (ValueKind::SETS_AND_HASHES, *kind),
                after.iter(),
                limits,
            ),
            Request::CountMembers { key, kind } => {
                let none = std::iter::empty();
                check_members(self, key, (ValueKind::MEMBER_KINDS, *kind), none, limits)
            }
            Request::IncrField { key, field, .. } => {
                let hash = (ValueKind::SETS_AND_HASHES, ValueKind::Hash);
                check_members(self, key, hash, std::iter::once(field), limits)
            }
            Request::AddScores { key, members, .. } => {
                let names = members.iter().map(|(m, _)| m);
                check_members(self, key, SCORED, names, limits)?;
                if members.is_empty() {
                    return Err(RequestError::EmptyBatch { op: self.op_name() });
                }
                check_scores(self, members.iter().map(|(_, s)| *s))
            }
            Request::IncrScore {
                key, member, delta, ..
            } => {
                check_members(self, key, SCORED, std::iter::once(member), limits)?;
                check_scores(self, std::iter::once(*delta))
            }
            Request::Scores { key, members } => {
                check_members(self, key, SCORED, members.iter(), limits)
            }
            Request::PopScores { key, count, .. } => {
                check_key(key, limits)?;
                check_count(*count as usize, limits)
            }
            Request::ScoreRange { key, .. } => check_key(key, limits),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::proto::ErrorCode;
    use crate::types::Seq;

    fn small() -> Limits {
        Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            max_keys_per_request: 2,
            max_frame_bytes: 64,
        }
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    fn set(key: usize, value: usize, ttl_ms: Option<u64>) -> Request {
        Request::Set {
            key: bytes(key),
            value: bytes(value),
            ttl_ms,
            condition: Condition::Always,
            ack: None,
        }
    }

    #[test]
    fn limits_at_the_boundary_pass_and_one_over_fails() {
        let l = small();
        assert_eq!(set(4, 8, Some(1)).validate(&l), Ok(()));
        assert_eq!(
            set(5, 8, None).validate(&l),
            Err(RequestError::KeyTooLarge { len: 5, max: 4 })
        );
        assert_eq!(
            set(4, 9, None).validate(&l),
            Err(RequestError::ValueTooLarge { len: 9, max: 8 })
        );
        let get = |n| Request::MultiGet {
            keys: vec![bytes(1); n],
        };
        assert_eq!(get(2).validate(&l), Ok(()));
        assert_eq!(
            get(3).validate(&l),
            Err(RequestError::TooManyKeys { count: 3, max: 2 })
        );
        let exists = Request::Exists {
            keys: vec![bytes(1), bytes(5)],
        };
        assert_eq!(
            exists.validate(&l).map_err(|e| ErrorCode::from(&e)),
            Err(ErrorCode::KeyTooLarge)
        );
        let scan = Request::Scan {
            prefix: bytes(5),
            cursor: None,
            limit: 0,
        };
        assert_eq!(
            scan.validate(&l).map_err(|e| ErrorCode::from(&e)),
            Err(ErrorCode::KeyTooLarge)
        );
    }

    #[test]
    fn argument_rules() {
        let l = small();
        assert_eq!(set(1, 1, Some(0)).validate(&l), Err(RequestError::ZeroTtl));
        let expire = Request::Expire {
            key: bytes(1),
            ttl_ms: 0,
            ack: None,
        };
        assert_eq!(expire.validate(&l), Err(RequestError::ZeroTtl));
        let expire_at = Request::ExpireAt {
            key: bytes(1),
            at_ms: 0,
            ack: None,
        };
        assert_eq!(expire_at.validate(&l), Err(RequestError::ZeroDeadline));
        let set_at = Request::SetAt {
            key: bytes(1),
            value: bytes(1),
            expires_at_ms: 0,
            condition: Condition::Always,
            ack: None,
        };
        assert_eq!(set_at.validate(&l), Err(RequestError::ZeroDeadline));
        let empty = Request::MultiSet {
            entries: vec![],
            ack: None,
        };
        assert_eq!(
            empty.validate(&l),
            Err(RequestError::EmptyBatch { op: "multi_set" })
        );
        assert_eq!(
            ErrorCode::from(&RequestError::EmptyBatch { op: "multi_set" }),
            ErrorCode::BadRequest
        );
        let push = |values| Request::Push {
            key: bytes(1),
            end: crate::types::End::Left,
            values,
            only_if_exists: false,
            ack: None,
        };
        assert_eq!(
            push(vec![]).validate(&l),
            Err(RequestError::EmptyBatch { op: "push" })
        );
        assert_eq!(push(vec![bytes(8); 2]).validate(&l), Ok(()));
        assert_eq!(
            push(vec![bytes(9)])
                .validate(&l)
                .map_err(|e| ErrorCode::from(&e)),
            Err(ErrorCode::ValueTooLarge)
        );
        assert_eq!(
            push(vec![bytes(1); 3])
                .validate(&l)
                .map_err(|e| ErrorCode::from(&e)),
            Err(ErrorCode::TooManyKeys)
        );
        let pop = |count| Request::Pop {
            key: bytes(1),
            end: crate::types::End::Right,
            count,
            ack: None,
        };
        assert_eq!(pop(2).validate(&l), Ok(()));
        assert_eq!(
            pop(3).validate(&l),
            Err(RequestError::TooManyKeys { count: 3, max: 2 })
        );
        let entry = |v| SetEntry {
            key: bytes(1),
            value: bytes(v),
            ttl_ms: None,
        };
        let batch = |entries| Request::MultiSet { entries, ack: None };
        assert_eq!(batch(vec![entry(1), entry(8)]).validate(&l), Ok(()));
        assert_eq!(
            batch(vec![entry(1), entry(9)])
                .validate(&l)
                .map_err(|e| ErrorCode::from(&e)),
            Err(ErrorCode::ValueTooLarge)
        );
        assert_eq!(
            batch(vec![entry(1); 3])
                .validate(&l)
                .map_err(|e| ErrorCode::from(&e)),
            Err(ErrorCode::TooManyKeys)
        );
        let delete = |condition| Request::Delete {
            key: bytes(1),
            condition,
            ack: None,
        };
        assert_eq!(delete(Condition::Always).validate(&l), Ok(()));
        assert_eq!(delete(Condition::IfVersion(Seq(3))).validate(&l), Ok(()));
        for c in [Condition::IfAbsent, Condition::IfPresent] {
            assert_eq!(
                delete(c).validate(&l).map_err(|e| ErrorCode::from(&e)),
                Err(ErrorCode::BadRequest)
            );
        }
    }

    #[test]
    fn scan_page_len_caps_and_defaults() {
        let l = small();
        assert_eq!(l.scan_page_len(0), 2);
        assert_eq!(l.scan_page_len(1), 1);
        assert_eq!(l.scan_page_len(100), 2);
    }

    #[test]
    fn default_limits_fit_a_maximal_set_in_one_frame() {
        let l = Limits::default();
        assert_eq!(l.max_frame_bytes, 16 * 1024 * 1024 + 64 * 1024);
        let max_set = set(
            l.max_key_bytes as usize,
            l.max_value_bytes as usize,
            Some(u64::MAX),
        );
        let frame = crate::proto::encode_request(&max_set).expect("encode");
        assert!(frame.len() - 4 <= l.max_frame_bytes as usize);
    }
}
