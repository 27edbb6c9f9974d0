//! Newtypes shared by every layer: sequence numbers, node and history ids.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// Position of a committed write in one primary's history.
///
/// Every WAL record carries one; it is also the version a `get` reports and a
/// compare-and-set names. Seqs start at 1; `Seq::ZERO` means "nothing yet".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Before the first write.
    pub const ZERO: Seq = Seq(0);

    /// The seq after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies a node within a cluster: derived from the node name in its
/// cluster certificate ([`NodeId::of_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The id of the node named `name`: the first 8 bytes, little-endian,
    /// of the SHA-256 of the name's UTF-8 bytes (proto-docs/wire-protocol.md
    /// §3), so every node computes every other's id alike.
    pub fn of_name(name: &str) -> NodeId {
        let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        NodeId(u64::from_le_bytes(first))
    }
}

#[cfg(test)]
mod node_id_tests {
    use super::NodeId;

    /// The example in proto-docs/wire-protocol.md §3.
    #[test]
    fn node_id_matches_the_documented_example() {
        assert_eq!(NodeId::of_name("node-7").0, 17_316_377_514_827_007_683);
        assert!(include_str!("../proto-docs/wire-protocol.md").contains("17316377514827007683"));
    }
}

/// Names one replication history (a primary's lineage of Seqs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplId(pub [u8; 16]);

/// Increases on every promotion; fences writes from a deposed primary.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

/// What a write waits for before it is acknowledged (DESIGN §4).
///
/// A node without replicas treats every policy as `Async`: the reply's
/// durability report says what was actually reached, never more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckPolicy {
    /// Reply after the local commit (WAL written, synced per the fsync policy).
    #[default]
    Async,
    /// Reply after `replicas` replicas have received and appended the record.
    SemiSync {
        /// How many replica acknowledgements to wait for.
        replicas: u32,
        /// How long to wait for them.
        timeout_ms: u64,
        /// What a timeout does to the write.
        on_timeout: OnTimeout,
    },
    /// Reply after every in-sync replica has made the record durable.
    Sync {
        /// How long to wait for the replicas.
        timeout_ms: u64,
    },
}

/// Wait for replica acknowledgements when a policy's text names no timeout.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 1000;

/// `async`, `semi-sync:K[:TIMEOUT_MS[:fail|degrade]]` or `sync[:TIMEOUT_MS]`.
impl std::str::FromStr for AckPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<AckPolicy, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let num = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{what} must be a whole number, got {s:?}"))
        };
        match parts.as_slice() {
            ["async"] => Ok(AckPolicy::Async),
            ["sync"] => Ok(AckPolicy::Sync {
                timeout_ms: DEFAULT_ACK_TIMEOUT_MS,
            }),
            ["sync", t] => Ok(AckPolicy::Sync {
                timeout_ms: num(t, "TIMEOUT_MS")?,
            }),
            ["semi-sync", rest @ ..] if !rest.is_empty() && rest.len() <= 3 => {
                let replicas = u32::try_from(num(rest[0], "K")?).map_err(|_| "K is too large")?;
                let timeout_ms = match rest.get(1) {
                    Some(t) => num(t, "TIMEOUT_MS")?,
                    None => DEFAULT_ACK_TIMEOUT_MS,
                };
                let on_timeout = match rest.get(2) {
                    None | Some(&"degrade") => OnTimeout::Degrade,
                    Some(&"fail") => OnTimeout::Fail,
                    Some(other) => {
                        return Err(format!("expected `fail` or `degrade`, got {other:?}"));
                    }
                };
                Ok(AckPolicy::SemiSync {
                    replicas,
                    timeout_ms,
                    on_timeout,
                })
            }
            _ => Err("expected async, semi-sync:K[:TIMEOUT_MS[:fail]] or sync[:TIMEOUT_MS]".into()),
        }
    }
}

impl fmt::Display for AckPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckPolicy::Async => f.write_str("async"),
            AckPolicy::SemiSync {
                replicas,
                timeout_ms,
                on_timeout,
            } => {
                let fail = match on_timeout {
                    OnTimeout::Fail => ":fail",
                    OnTimeout::Degrade => "",
                };
                write!(f, "semi-sync:{replicas}:{timeout_ms}{fail}")
            }
            AckPolicy::Sync { timeout_ms } => write!(f, "sync:{timeout_ms}"),
        }
    }
}

impl Serialize for AckPolicyText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AckPolicyText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(AckPolicyText)
            .map_err(serde::de::Error::custom)
    }
}

/// An [`AckPolicy`] that config files spell as text (`"semi-sync:1:500"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckPolicyText(pub AckPolicy);

/// What a semi-sync write does when its replicas do not answer in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnTimeout {
    /// Reply anyway, reporting the lower durability reached (counted in metrics).
    #[default]
    Degrade,
    /// Fail the write with a timeout error (the write may still be applied locally).
    Fail,
}

/// What kind of value a key holds. A string is the user's bytes as they
/// are; the others are collections, whose stored value is their metadata
/// and whose elements live under internal keys (`store::keys`). The
/// discriminants are part of the WAL, snapshot and dump formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueKind {
    /// Bytes: what `get` and `set` read and write.
    #[default]
    String,
    /// A list of byte strings, pushed and popped at both ends.
    List,
    /// A set of distinct byte strings.
    Set,
    /// A map of fields to values, both byte strings.
    Hash,
    /// A set of distinct byte strings, each with a score, ordered by score.
    SortedSet,
}

impl ValueKind {
    /// Every kind.
    pub const ALL: [ValueKind; 5] = [
        ValueKind::String,
        ValueKind::List,
        ValueKind::Set,
        ValueKind::Hash,
        ValueKind::SortedSet,
    ];

    /// The collections whose members the set and hash operations name
    /// (`AddMembers`, `MemberValues`, `ScanMembers`).
    pub const SETS_AND_HASHES: &'static [ValueKind] = &[ValueKind::Set, ValueKind::Hash];

    /// The collections whose members can be removed and counted by name.
    pub const MEMBER_KINDS: &'static [ValueKind] =
        &[ValueKind::Set, ValueKind::Hash, ValueKind::SortedSet];

    /// The byte that stands for it in the disk tier's value header.
    pub fn to_byte(self) -> u8 {
        match self {
            ValueKind::String => 0,
            ValueKind::List => 1,
            ValueKind::Set => 2,
            ValueKind::Hash => 3,
            ValueKind::SortedSet => 4,
        }
    }

    /// The kind a value-header byte stands for, if any.
    pub fn from_byte(byte: u8) -> Option<ValueKind> {
        match byte {
            0 => Some(ValueKind::String),
            1 => Some(ValueKind::List),
            2 => Some(ValueKind::Set),
            3 => Some(ValueKind::Hash),
            4 => Some(ValueKind::SortedSet),
            _ => None,
        }
    }

    /// Its name as Redis's `TYPE` reports it.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::String => "string",
            ValueKind::List => "list",
            ValueKind::Set => "set",
            ValueKind::Hash => "hash",
            ValueKind::SortedSet => "zset",
        }
    }
}

/// Which end of a list. Part of the wire format (a postcard variant
/// index: 0 left, 1 right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum End {
    /// The head: index 0, where `LPUSH` and `LPOP` work.
    Left,
    /// The tail: index -1, where `RPUSH` and `RPOP` work.
    Right,
}

/// A sorted-set member's score: an `f64`, never NaN where the store
/// keeps it. Part of the wire format (8 bytes, IEEE 754, little-endian).
/// Equal when the bits are, so messages that carry one compare exactly.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Score) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Score {}

/// Which scores a sorted-set write may change (Redis's `ZADD` `GT` and
/// `LT`). Part of the wire format (a postcard variant index).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScoreUpdate {
    /// Any.
    #[default]
    Any,
    /// Only to a greater score.
    Greater,
    /// Only to a lesser score.
    Less,
}

impl ScoreUpdate {
    /// Whether a member scored `old` may take `new`.
    pub fn allows(self, old: f64, new: f64) -> bool {
        match self {
            ScoreUpdate::Any => true,
            ScoreUpdate::Greater => new > old,
            ScoreUpdate::Less => new < old,
        }
    }
}

/// Which members a sorted-set write may score (Redis's `ZADD` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScoreRule {
    /// `Some(false)`: only members not there yet (`NX`); `Some(true)`:
    /// only members already there (`XX`); `None`: either.
    pub exists: Option<bool>,
    /// Which changes of an existing member's score are allowed (`GT`, `LT`).
    pub update: ScoreUpdate,
}

impl ScoreRule {
    /// Whether a member scored `old` (`None`: not there) may be scored `new`.
    pub fn allows(&self, old: Option<f64>, new: f64) -> bool {
        match (self.exists, old) {
            (Some(true), None) | (Some(false), Some(_)) => false,
            (_, None) => true,
            (_, Some(old)) => self.update.allows(old, new),
        }
    }
}

/// When a conditional write may go ahead, judged against the key's live
/// (unexpired) state at the moment the write is ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Unconditionally.
    #[default]
    Always,
    /// Only if the key is absent (or expired).
    IfAbsent,
    /// Only if the key is present.
    IfPresent,
    /// Only if the key's current version is exactly this (compare-and-set).
    IfVersion(Seq),
}

/// When a key a write stores expires. A TTL is counted from the write's
/// commit on the node; a deadline is kept exactly as given, read against
/// the node's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry (a write without one removes the key's old one).
    #[default]
    Never,
    /// This many ms after the commit; above 0.
    InMs(u64),
    /// At this Unix time in ms; above 0 (0 means never in the stored
    /// formats).
    AtMs(u64),
}

impl Expiry {
    /// Whether a key given this expiry at `now_ms` is expired at once.
    pub fn is_past(self, now_ms: u64) -> bool {
        matches!(self, Expiry::AtMs(at) if at <= now_ms)
    }

    /// The TTL in ms, for a relative expiry.
    pub fn ttl_ms(self) -> Option<u64> {
        match self {
            Expiry::InMs(ms) => Some(ms),
            Expiry::Never | Expiry::AtMs(_) => None,
        }
    }
}

/// Set when whoever asked for a long operation is gone (its client left, or
/// its request timed out): the operation checks it as it goes and stops.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the operation to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether it was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
