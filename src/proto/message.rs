//! The messages: one [`Request`] from the client, one [`Response`] from the
//! server, per QUIC stream.
//!
//! Every type here is encoded with postcard in field declaration order, and
//! every enum by its variant index in declaration order. So the order of
//! fields and variants IS the wire format: each variant carries a
//! `// wire index N` comment, new variants are only appended, and
//! `proto-docs/wire-protocol.md` lists the same layout byte by byte.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ErrorCode, Limits};
use crate::types::{AckPolicy, Condition, End, Expiry, NodeId, Score, ScoreUpdate, Seq, ValueKind};

/// A client request. The body of a client-to-server frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Opens a session: checks the protocol version, authenticates the
    /// connection, and learns the server's limits. The first request on a
    /// connection when the server requires a token.
    // wire index 0
    Hello {
        /// The protocol major version the client speaks: [`super::PROTOCOL_VERSION`].
        protocol: u32,
        /// The shared secret, if the server requires one.
        token: Option<String>,
        /// A free-form name for the server's logs (never the token).
        client_name: Option<String>,
    },
    /// Liveness check; answered with [`Response::Pong`].
    // wire index 1
    Ping,
    /// Reads one key; answered with [`Response::Value`].
    // wire index 2
    Get {
        /// The key.
        key: Bytes,
    },
    /// Reads many keys; answered with [`Response::Values`], one slot per key,
    /// in request order.
    // wire index 3
    MultiGet {
        /// The keys (duplicates allowed).
        keys: Vec<Bytes>,
    },
    /// Counts how many of the keys exist; answered with [`Response::Count`].
    /// A key named twice is counted twice.
    // wire index 4
    Exists {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// Reads a key's remaining time to live; answered with [`Response::Ttl`].
    // wire index 5
    Ttl {
        /// The key.
        key: Bytes,
    },
    /// Writes one key if `condition` holds; answered with
    /// [`Response::Written`] or [`Response::NotWritten`].
    // wire index 6
    Set {
        /// The key.
        key: Bytes,
        /// The value (opaque bytes).
        value: Bytes,
        /// Time to live in ms from now; `None` stores the key without expiry
        /// (removing any previous TTL). Must not be `Some(0)`.
        ttl_ms: Option<u64>,
        /// When to write.
        condition: Condition,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Writes several keys atomically (all or none); answered with
    /// [`Response::Written`]. Every entry gets the reply's version.
    // wire index 7
    MultiSet {
        /// The entries; at least one. A key named twice keeps the last entry.
        entries: Vec<SetEntry>,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Deletes a key if `condition` holds; answered with
    /// [`Response::Deleted`] or [`Response::NotWritten`].
    // wire index 8
    Delete {
        /// The key.
        key: Bytes,
        /// [`Condition::Always`] or [`Condition::IfVersion`]; anything else is
        /// a `BadRequest`.
        condition: Condition,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Sets the TTL of an existing key; answered with [`Response::Updated`].
    // wire index 9
    Expire {
        /// The key.
        key: Bytes,
        /// Time to live in ms from now; must not be 0.
        ttl_ms: u64,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Removes the TTL of an existing key; answered with [`Response::Updated`].
    // wire index 10
    Persist {
        /// The key.
        key: Bytes,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Adds `delta` to the decimal integer stored at `key` (a missing key
    /// counts as 0); answered with [`Response::Int`].
    // wire index 11
    Incr {
        /// The key.
        key: Bytes,
        /// What to add (negative to decrement).
        delta: i64,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Lists keys starting with `prefix` in slot order (slot, then bytes), one page at
    /// a time; answered with [`Response::Page`].
    // wire index 12
    Scan {
        /// Only keys starting with these bytes (empty: every key).
        prefix: Bytes,
        /// `None` for the first page, then the previous page's `next_cursor`.
        cursor: Option<Bytes>,
        /// At most this many entries; 0 lets the server choose. The server
        /// caps it at its `max_keys_per_request`.
        limit: u32,
    },
    /// Node information and statistics; answered with [`Response::Info`].
    // wire index 13
    Info,
    /// Admin: makes this replica a primary with a new epoch; answered with
    /// [`Response::Info`] (`role`, `repl_id`, `repl_epoch`, `applied_seq`).
    // wire index 14
    Promote,
    /// Admin: makes this node a replica of `primary` (its replication
    /// address, `host:port`); answered with [`Response::Info`].
    // wire index 15
    ReplicaOf {
        /// The primary's replication address.
        primary: String,
    },
    /// A digest of the node's live data at one consistent seq, to compare
    /// nodes; answered with [`Response::Info`] (`seq`, `keys`, `sha256`).
    // wire index 16
    Digest {
        /// Entries expiring at or before this Unix time (ms) are left out, so
        /// nodes asked at slightly different times agree; 0 for "now".
        expired_before_ms: u64,
    },
    /// Admin: checkpoints now (RocksDB flush, then WAL segments it covers
    /// are deleted unless retained); answered with [`Response::Info`]
    /// (`covered`, `segments_removed`).
    // wire index 17
    Checkpoint,
    /// Admin: one page of a consistent snapshot of every live entry (an
    /// online dump); answered with [`Response::Snapshot`]. The first page
    /// (`snapshot: None`) takes a checkpoint at a known seq; later pages
    /// name it and continue after the previous page's `next`.
    // wire index 18
    Snapshot {
        /// The snapshot to continue, from a previous page.
        snapshot: Option<u64>,
        /// Continue after this key (the previous page's `next`).
        after: Option<Bytes>,
    },
    /// The node's committed cluster map; answered with
    /// [`Response::ClusterMap`]. `BadRequest` on a node not in cluster mode.
    // wire index 19
    ClusterMap,
    /// Admin: starts the cluster's metadata group with this node as its
    /// only voter (the others join as the map names them); answered with
    /// [`Response::Info`].
    // wire index 20
    ClusterInit,
    /// Admin: commits a change to the cluster map, the postcard encoding
    /// of a `MapCommand` (proto-docs/cluster.md §5); answered with
    /// [`Response::Info`] (`map_version`). Only the metadata leader takes
    /// it: another node answers `NotLeader` naming the leader.
    // wire index 21
    ClusterPropose {
        /// The encoded command.
        command: Bytes,
    },
    /// The node's committed cluster map if it is newer than `version` (the
    /// newest the client has), answered with [`Response::ClusterMap`];
    /// otherwise [`Response::ClusterMapCurrent`], which costs a few bytes
    /// instead of the whole map. `BadRequest` on a node not in cluster mode.
    // wire index 22
    ClusterMapSince {
        /// The version the client already has (0: none).
        version: u64,
    },
    /// Admin: a planned switchover of a shard's primary with no write lost
    /// (proto-docs/cluster.md §6); answered with [`Response::Info`]
    /// (`map_version`, `primary`) once the map names the new primary. Only
    /// the metadata leader takes it: another node answers `NotLeader`.
    // wire index 23
    ClusterFailover {
        /// The shard.
        shard: u32,
        /// The replica to promote, by name; `None`: the best caught-up one.
        to: Option<String>,
        /// For a shard whose primary failed and that cannot fail over
        /// cleanly (a replica stays silent): promote the best replica that
        /// did report, accepting the loss the reply states.
        unclean: bool,
        /// With `unclean`: only say whom it would promote and how far
        /// behind that replica is; change nothing.
        dry_run: bool,
    },
    /// Pushes `values`, in order, at `end` of the list at `key` (creating
    /// it unless `only_if_exists`); answered with [`Response::Length`].
    /// Pushing `a b` at the left end leaves `b a ...`.
    // wire index 24
    Push {
        /// The key.
        key: Bytes,
        /// Which end.
        end: End,
        /// At least one value.
        values: Vec<Bytes>,
        /// Push only onto an existing list (`LPUSHX`).
        only_if_exists: bool,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Takes up to `count` values from `end` of the list at `key`, deleting
    /// the list when it empties; answered with [`Response::Popped`].
    // wire index 25
    Pop {
        /// The key.
        key: Bytes,
        /// Which end.
        end: End,
        /// At most this many values; at most `max_keys_per_request`.
        count: u32,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// The values at positions `start..=stop` of the list at `key`
    /// (negative positions count from the right end); answered with
    /// [`Response::Elements`].
    // wire index 26
    ListRange {
        /// The key.
        key: Bytes,
        /// The first position.
        start: i64,
        /// The last position, included.
        stop: i64,
    },
    /// The length of the list at `key`; answered with [`Response::Count`].
    // wire index 27
    ListLen {
        /// The key.
        key: Bytes,
    },
    /// The value at `index` of the list at `key` (negative from the right
    /// end); answered with [`Response::Element`].
    // wire index 28
    ListIndex {
        /// The key.
        key: Bytes,
        /// The position.
        index: i64,
    },
    /// The kind of value at `key`; answered with [`Response::Kind`].
    // wire index 29
    Type {
        /// The key.
        key: Bytes,
    },
    /// Like [`Request::Scan`], but lists keys of every kind with their
    /// kinds and no values; answered with [`Response::Keys`].
    // wire index 30
    ScanKeys {
        /// Only keys starting with these bytes (empty: every key).
        prefix: Bytes,
        /// `None` for the first page, then the previous page's `next_cursor`.
        cursor: Option<Bytes>,
        /// At most this many keys; 0 lets the server choose. The server
        /// caps it at its `max_keys_per_request`.
        limit: u32,
        /// Only keys of this kind (`None`: every kind).
        kind: Option<ValueKind>,
    },
    /// Admin: like [`Request::Snapshot`], but one page of the store's
    /// entries as they are: of every kind, each with its kind, and a
    /// list's elements under their internal keys (an online dump that
    /// holds lists); answered with [`Response::RawSnapshot`].
    // wire index 31
    RawSnapshot {
        /// The snapshot to continue, from a previous page.
        snapshot: Option<u64>,
        /// Continue after this key (the previous page's `next`).
        after: Option<Bytes>,
    },
    /// Adds `members` (name and value; a set's values are empty) to the
    /// set or hash of `kind` at `key`, creating it; answered with
    /// [`Response::Counted`] (how many are new).
    // wire index 32
    AddMembers {
        /// The key.
        key: Bytes,
        /// `Set` or `Hash`.
        kind: ValueKind,
        /// At least one `(name, value)`.
        members: Vec<(Bytes, Bytes)>,
        /// Leave a member already there as it is (`HSETNX`).
        only_new: bool,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Removes `members` from the set, hash or sorted set of `kind` at
    /// `key`; answered with [`Response::Counted`] (how many were there).
    // wire index 33
    RemoveMembers {
        /// The key.
        key: Bytes,
        /// `Set`, `Hash` or `SortedSet`.
        kind: ValueKind,
        /// The members' names.
        members: Vec<Bytes>,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Takes up to `count` members of the set at `key`; answered with
    /// [`Response::Popped`].
    // wire index 34
    PopMembers {
        /// The key.
        key: Bytes,
        /// At most this many; at most `max_keys_per_request`.
        count: u32,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Adds `delta` to the decimal integer in `field` of the hash at `key`;
    /// answered with [`Response::Int`].
    // wire index 35
    IncrField {
        /// The key.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// What to add (negative to subtract).
        delta: i64,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// The values of `members` of the set or hash of `kind` at `key`;
    /// answered with [`Response::MemberValues`].
    // wire index 36
    MemberValues {
        /// The key.
        key: Bytes,
        /// `Set` or `Hash`.
        kind: ValueKind,
        /// The members' names.
        members: Vec<Bytes>,
    },
    /// One page of the members of the set or hash of `kind` at `key`, in
    /// byte order; answered with [`Response::Members`].
    // wire index 37
    ScanMembers {
        /// The key.
        key: Bytes,
        /// `Set` or `Hash`.
        kind: ValueKind,
        /// Continue after this member (the previous page's last).
        after: Option<Bytes>,
        /// At most this many; 0 lets the server choose. The server caps it
        /// at its `max_keys_per_request`.
        limit: u32,
    },
    /// How many members the set, hash or sorted set of `kind` at `key`
    /// holds; answered
    /// with [`Response::Count`].
    // wire index 38
    CountMembers {
        /// The key.
        key: Bytes,
        /// `Set`, `Hash` or `SortedSet`.
        kind: ValueKind,
    },
    /// Scores `members` in the sorted set at `key`, creating it, where
    /// `exists` and `update` allow (Redis's `ZADD`); answered with
    /// [`Response::Counted`] (how many are new, and with `count_changed`
    /// also how many changed score).
    // wire index 39
    AddScores {
        /// The key.
        key: Bytes,
        /// At least one `(member, score)`; no score is NaN.
        members: Vec<(Bytes, Score)>,
        /// `Some(false)`: only members not there yet (`NX`); `Some(true)`:
        /// only members already there (`XX`); `None`: either.
        exists: Option<bool>,
        /// Which changes of an existing member's score are allowed.
        update: ScoreUpdate,
        /// Count members whose score changed, not only new ones (`CH`).
        count_changed: bool,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Adds `delta` to the score of `member` (0 if absent) in the sorted
    /// set at `key`, where `exists` and `update` allow the result
    /// (`ZINCRBY`, `ZADD INCR`); answered with [`Response::Score`].
    // wire index 40
    IncrScore {
        /// The key.
        key: Bytes,
        /// The member.
        member: Bytes,
        /// What to add; not NaN.
        delta: Score,
        /// As for [`Request::AddScores`].
        exists: Option<bool>,
        /// As for [`Request::AddScores`].
        update: ScoreUpdate,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// The scores of `members` in the sorted set at `key`; answered with
    /// [`Response::Scores`].
    // wire index 41
    Scores {
        /// The key.
        key: Bytes,
        /// The members.
        members: Vec<Bytes>,
    },
    /// Takes up to `count` members from `end` of the sorted set at `key`
    /// (`Left`: the lowest scores first); answered with [`Response::Scored`].
    // wire index 42
    PopScores {
        /// The key.
        key: Bytes,
        /// Which end.
        end: End,
        /// At most this many; at most `max_keys_per_request`.
        count: u32,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// The members at ranks `start..=stop` of the sorted set at `key`, with
    /// their scores, ranked from `end` (`Left`: rank 0 is the lowest
    /// score; `Right`: the highest); answered with [`Response::Scored`].
    // wire index 43
    ScoreRange {
        /// The key.
        key: Bytes,
        /// First rank; negative counts from the other end.
        start: i64,
        /// Last rank, inclusive; negative counts from the other end.
        stop: i64,
        /// Which end rank 0 is.
        end: End,
    },
    /// [`Request::Set`] with an absolute expiry: the key expires at the
    /// Unix time `expires_at_ms`, as the node's clock reads it. Answered
    /// like `Set`.
    // wire index 44
    SetAt {
        /// The key.
        key: Bytes,
        /// The value (opaque bytes).
        value: Bytes,
        /// Unix time in ms; must not be 0. One already past writes the key
        /// expired: reads find nothing.
        expires_at_ms: u64,
        /// When to write.
        condition: Condition,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Sets an existing key to expire at a Unix time; answered with
    /// [`Response::Updated`].
    // wire index 45
    ExpireAt {
        /// The key.
        key: Bytes,
        /// Unix time in ms; must not be 0. One already past expires the
        /// key at once.
        at_ms: u64,
        /// Overrides the server's default acknowledgement policy.
        ack: Option<AckPolicy>,
    },
    /// Reads when a key expires, as a Unix time; answered with
    /// [`Response::Deadline`].
    // wire index 46
    Deadline {
        /// The key.
        key: Bytes,
    },
}

/// One entry of a [`Request::MultiSet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEntry {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Time to live in ms from now; `None` for no expiry. Must not be `Some(0)`.
    pub ttl_ms: Option<u64>,
}

/// A request's operation, numbered by its wire index (the postcard
/// variant index of [`Request`]): the per-operation metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Op {
    #[allow(missing_docs)]
    Hello,
    #[allow(missing_docs)]
    Ping,
    #[allow(missing_docs)]
    Get,
    #[allow(missing_docs)]
    MultiGet,
    #[allow(missing_docs)]
    Exists,
    #[allow(missing_docs)]
    Ttl,
    #[allow(missing_docs)]
    Set,
    #[allow(missing_docs)]
    MultiSet,
    #[allow(missing_docs)]
    Delete,
    #[allow(missing_docs)]
    Expire,
    #[allow(missing_docs)]
    Persist,
    #[allow(missing_docs)]
    Incr,
    #[allow(missing_docs)]
    Scan,
    #[allow(missing_docs)]
    Info,
    #[allow(missing_docs)]
    Promote,
    #[allow(missing_docs)]
    ReplicaOf,
    #[allow(missing_docs)]
    Digest,
    #[allow(missing_docs)]
    Checkpoint,
    #[allow(missing_docs)]
    Snapshot,
    #[allow(missing_docs)]
    ClusterMap,
    #[allow(missing_docs)]
    ClusterInit,
    #[allow(missing_docs)]
    ClusterPropose,
    #[allow(missing_docs)]
    ClusterMapSince,
    #[allow(missing_docs)]
    ClusterFailover,
    #[allow(missing_docs)]
    Push,
    #[allow(missing_docs)]
    Pop,
    #[allow(missing_docs)]
    ListRange,
    #[allow(missing_docs)]
    ListLen,
    #[allow(missing_docs)]
    ListIndex,
    #[allow(missing_docs)]
    Type,
    #[allow(missing_docs)]
    ScanKeys,
    #[allow(missing_docs)]
    RawSnapshot,
    #[allow(missing_docs)]
    AddMembers,
    #[allow(missing_docs)]
    RemoveMembers,
    #[allow(missing_docs)]
    PopMembers,
    #[allow(missing_docs)]
    IncrField,
    #[allow(missing_docs)]
    MemberValues,
    #[allow(missing_docs)]
    ScanMembers,
    #[allow(missing_docs)]
    CountMembers,
    #[allow(missing_docs)]
    AddScores,
    #[allow(missing_docs)]
    IncrScore,
    #[allow(missing_docs)]
    Scores,
    #[allow(missing_docs)]
    PopScores,
    #[allow(missing_docs)]
    ScoreRange,
    #[allow(missing_docs)]
    SetAt,
    #[allow(missing_docs)]
    ExpireAt,
    #[allow(missing_docs)]
    Deadline,
}

impl Op {
    /// Every operation, in wire order.
    pub const ALL: [Op; 47] = [
        Op::Hello,
        Op::Ping,
        Op::Get,
        Op::MultiGet,
        Op::Exists,
        Op::Ttl,
        Op::Set,
        Op::MultiSet,
        Op::Delete,
        Op::Expire,
        Op::Persist,
        Op::Incr,
        Op::Scan,
        Op::Info,
        Op::Promote,
        Op::ReplicaOf,
        Op::Digest,
        Op::Checkpoint,
        Op::Snapshot,
        Op::ClusterMap,
        Op::ClusterInit,
        Op::ClusterPropose,
        Op::ClusterMapSince,
        Op::ClusterFailover,
        Op::Push,
        Op::Pop,
        Op::ListRange,
        Op::ListLen,
        Op::ListIndex,
        Op::Type,
        Op::ScanKeys,
        Op::RawSnapshot,
        Op::AddMembers,
        Op::RemoveMembers,
        Op::PopMembers,
        Op::IncrField,
        Op::MemberValues,
        Op::ScanMembers,
        Op::CountMembers,
        Op::AddScores,
        Op::IncrScore,
        Op::Scores,
        Op::PopScores,
        Op::ScoreRange,
        Op::SetAt,
        Op::ExpireAt,
        Op::Deadline,
    ];

    /// The operation's snake_case name, for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::Ping => "ping",
            Op::Get => "get",
            Op::MultiGet => "multi_get",
            Op::Exists => "exists",
            Op::Ttl => "ttl",
            Op::Set => "set",
            Op::MultiSet => "multi_set",
            Op::Delete => "delete",
            Op::Expire => "expire",
            Op::Persist => "persist",
            Op::Incr => "incr",
            Op::Scan => "scan",
            Op::Info => "info",
            Op::Promote => "promote",
            Op::ReplicaOf => "replica_of",
            Op::Digest => "digest",
            Op::Checkpoint => "checkpoint",
            Op::Snapshot => "snapshot",
            Op::ClusterMap => "cluster_map",
            Op::ClusterInit => "cluster_init",
            Op::ClusterPropose => "cluster_propose",
            Op::ClusterMapSince => "cluster_map_since",
            Op::ClusterFailover => "cluster_failover",
            Op::Push => "push",
            Op::Pop => "pop",
            Op::ListRange => "list_range",
            Op::ListLen => "list_len",
            Op::ListIndex => "list_index",
            Op::Type => "type",
            Op::ScanKeys => "scan_keys",
            Op::RawSnapshot => "raw_snapshot",
            Op::AddMembers => "add_members",
            Op::RemoveMembers => "remove_members",
            Op::PopMembers => "pop_members",
            Op::IncrField => "incr_field",
            Op::MemberValues => "member_values",
            Op::ScanMembers => "scan_members",
            Op::CountMembers => "count_members",
            Op::AddScores => "add_scores",
            Op::IncrScore => "incr_score",
            Op::Scores => "scores",
            Op::PopScores => "pop_scores",
            Op::ScoreRange => "score_range",
            Op::SetAt => "set_at",
            Op::ExpireAt => "expire_at",
            Op::Deadline => "deadline",
        }
    }
}

impl Request {
    /// A write of `key` expiring as `expiry` says: a `SetAt` for a
    /// deadline, else a `Set`.
    pub fn set_expiring(
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
        condition: Condition,
        ack: Option<AckPolicy>,
    ) -> Request {
        match expiry {
            Expiry::AtMs(expires_at_ms) => Request::SetAt {
                key,
                value,
                expires_at_ms,
                condition,
                ack,
            },
            Expiry::Never | Expiry::InMs(_) => Request::Set {
                key,
                value,
                ttl_ms: expiry.ttl_ms(),
                condition,
                ack,
            },
        }
    }

    /// The operation: an exhaustive match, so a new request kind cannot be
    /// left out of the per-operation metrics.
    pub const fn op(&self) -> Op {
        match self {
            Request::Hello { .. } => Op::Hello,
            Request::Ping => Op::Ping,
            Request::Get { .. } => Op::Get,
            Request::MultiGet { .. } => Op::MultiGet,
            Request::Exists { .. } => Op::Exists,
            Request::Ttl { .. } => Op::Ttl,
            Request::Set { .. } => Op::Set,
            Request::MultiSet { .. } => Op::MultiSet,
            Request::Delete { .. } => Op::Delete,
            Request::Expire { .. } => Op::Expire,
            Request::Persist { .. } => Op::Persist,
            Request::Incr { .. } => Op::Incr,
            Request::Scan { .. } => Op::Scan,
            Request::Info => Op::Info,
            Request::Promote => Op::Promote,
            Request::ReplicaOf { .. } => Op::ReplicaOf,
            Request::Digest { .. } => Op::Digest,
            Request::Checkpoint => Op::Checkpoint,
            Request::Snapshot { .. } => Op::Snapshot,
            Request::ClusterMap => Op::ClusterMap,
            Request::ClusterInit => Op::ClusterInit,
            Request::ClusterPropose { .. } => Op::ClusterPropose,
            Request::ClusterMapSince { .. } => Op::ClusterMapSince,
            Request::ClusterFailover { .. } => Op::ClusterFailover,
            Request::Push { .. } => Op::Push,
            Request::Pop { .. } => Op::Pop,
            Request::ListRange { .. } => Op::ListRange,
            Request::ListLen { .. } => Op::ListLen,
            Request::ListIndex { .. } => Op::ListIndex,
            Request::Type { .. } => Op::Type,
            Request::ScanKeys { .. } => Op::ScanKeys,
            Request::RawSnapshot { .. } => Op::RawSnapshot,
            Request::AddMembers { .. } => Op::AddMembers,
            Request::RemoveMembers { .. } => Op::RemoveMembers,
            Request::PopMembers { .. } => Op::PopMembers,
            Request::IncrField { .. } => Op::IncrField,
            Request::MemberValues { .. } => Op::MemberValues,
            Request::ScanMembers { .. } => Op::ScanMembers,
            Request::CountMembers { .. } => Op::CountMembers,
            Request::AddScores { .. } => Op::AddScores,
            Request::IncrScore { .. } => Op::IncrScore,
            Request::Scores { .. } => Op::Scores,
            Request::PopScores { .. } => Op::PopScores,
            Request::ScoreRange { .. } => Op::ScoreRange,
            Request::SetAt { .. } => Op::SetAt,
            Request::ExpireAt { .. } => Op::ExpireAt,
            Request::Deadline { .. } => Op::Deadline,
        }
    }

    /// The name of the operation, for logs and metrics labels.
    pub const fn op_name(&self) -> &'static str {
        self.op().name()
    }

    /// Whether the request changes data. A replica refuses these with
    /// [`ErrorCode::ReadOnlyReplica`].
    pub const fn needs_write(&self) -> bool {
        match self {
            Request::Set { .. }
            | Request::MultiSet { .. }
            | Request::Delete { .. }
            | Request::Expire { .. }
            | Request::Persist { .. }
            | Request::Incr { .. }
            | Request::Push { .. }
            | Request::Pop { .. }
            | Request::AddMembers { .. }
            | Request::RemoveMembers { .. }
            | Request::PopMembers { .. }
            | Request::IncrField { .. }
            | Request::AddScores { .. }
            | Request::IncrScore { .. }
            | Request::PopScores { .. }
            | Request::SetAt { .. }
            | Request::ExpireAt { .. } => true,
            Request::Hello { .. }
            | Request::Ping
            | Request::Get { .. }
            | Request::MultiGet { .. }
            | Request::Exists { .. }
            | Request::Ttl { .. }
            | Request::Scan { .. }
            | Request::Info
            | Request::Promote
            | Request::ReplicaOf { .. }
            | Request::Digest { .. }
            | Request::Checkpoint
            | Request::Snapshot { .. }
            | Request::ClusterMap
            | Request::ClusterInit
            | Request::ClusterPropose { .. }
            | Request::ClusterMapSince { .. }
            | Request::ClusterFailover { .. }
            | Request::ListRange { .. }
            | Request::ListLen { .. }
            | Request::ListIndex { .. }
            | Request::Type { .. }
            | Request::ScanKeys { .. }
            | Request::RawSnapshot { .. }
            | Request::MemberValues { .. }
            | Request::ScanMembers { .. }
            | Request::CountMembers { .. }
            | Request::Scores { .. }
            | Request::ScoreRange { .. }
            | Request::Deadline { .. } => false,
        }
    }

    /// Whether a client may resend the request automatically when it does not
    /// know whether the first attempt was applied (a lost reply, or an error
    /// for which [`ErrorCode::write_may_have_applied`] is true).
    ///
    /// True when a second execution leaves the same data and answers with the
    /// same kind of reply as the first: every read, unconditional and
    /// `IfPresent` sets, an unconditional `SetAt`, `MultiSet`, `Delete`
    /// with `Always`, `Expire` (restarting the TTL clock), `ExpireAt` and
    /// `Persist`. False for `Incr`, which
    /// would add twice, `Push`, `Pop` and the member writes, which would
    /// push or take twice or report a count of 0 for what they changed,
    /// and for `IfAbsent` / `IfVersion` writes, whose retry would report
    /// `NotWritten` for a write that did succeed.
    pub const fn is_idempotent(&self) -> bool {
        match self {
            // A second proposal of the same command may be refused (a
            // duplicate node), though the first was committed.
            Request::Incr { .. }
            | Request::Push { .. }
            | Request::Pop { .. }
            | Request::AddMembers { .. }
            | Request::RemoveMembers { .. }
            | Request::PopMembers { .. }
            | Request::IncrField { .. }
            | Request::AddScores { .. }
            | Request::IncrScore { .. }
            | Request::PopScores { .. }
            | Request::ClusterPropose { .. }
            | Request::ClusterInit
            | Request::ClusterFailover { .. } => false,
            Request::Set { condition, .. } | Request::Delete { condition, .. } => {
                matches!(condition, Condition::Always | Condition::IfPresent)
            }
            // A deadline already past leaves the key absent, so a resent
            // `IfPresent` would report `NotWritten`.
            Request::SetAt { condition, .. } => matches!(condition, Condition::Always),
            Request::Hello { .. }
            | Request::Ping
            | Request::Get { .. }
            | Request::MultiGet { .. }
            | Request::Exists { .. }
            | Request::Ttl { .. }
            | Request::MultiSet { .. }
            | Request::Expire { .. }
            | Request::Persist { .. }
            | Request::Scan { .. }
            | Request::Info
            | Request::Promote
            | Request::ReplicaOf { .. }
            | Request::Digest { .. }
            | Request::Checkpoint
            | Request::Snapshot { .. }
            | Request::ClusterMap
            | Request::ClusterMapSince { .. }
            | Request::ListRange { .. }
            | Request::ListLen { .. }
            | Request::ListIndex { .. }
            | Request::Type { .. }
            | Request::ScanKeys { .. }
            | Request::RawSnapshot { .. }
            | Request::MemberValues { .. }
            | Request::ScanMembers { .. }
            | Request::CountMembers { .. }
            | Request::Scores { .. }
            | Request::ScoreRange { .. }
            | Request::ExpireAt { .. }
            | Request::Deadline { .. } => true,
        }
    }

    /// The acknowledgement policy this write asked for, if it overrides the
    /// server's default. `None` for reads.
    pub const fn ack(&self) -> Option<AckPolicy> {
        match self {
            Request::Set { ack, .. }
            | Request::MultiSet { ack, .. }
            | Request::Delete { ack, .. }
            | Request::Expire { ack, .. }
            | Request::Persist { ack, .. }
            | Request::Incr { ack, .. }
            | Request::Push { ack, .. }
            | Request::Pop { ack, .. }
            | Request::AddMembers { ack, .. }
            | Request::RemoveMembers { ack, .. }
            | Request::PopMembers { ack, .. }
            | Request::IncrField { ack, .. }
            | Request::AddScores { ack, .. }
            | Request::IncrScore { ack, .. }
            | Request::PopScores { ack, .. }
            | Request::SetAt { ack, .. }
            | Request::ExpireAt { ack, .. } => *ack,
            Request::Hello { .. }
            | Request::Ping
            | Request::Get { .. }
            | Request::MultiGet { .. }
            | Request::Exists { .. }
            | Request::Ttl { .. }
            | Request::Scan { .. }
            | Request::Info
            | Request::Promote
            | Request::ReplicaOf { .. }
            | Request::Digest { .. }
            | Request::Checkpoint
            | Request::Snapshot { .. }
            | Request::ClusterMap
            | Request::ClusterInit
            | Request::ClusterPropose { .. }
            | Request::ClusterMapSince { .. }
            | Request::ClusterFailover { .. }
            | Request::ListRange { .. }
            | Request::ListLen { .. }
            | Request::ListIndex { .. }
            | Request::Type { .. }
            | Request::ScanKeys { .. }
            | Request::RawSnapshot { .. }
            | Request::MemberValues { .. }
            | Request::ScanMembers { .. }
            | Request::CountMembers { .. }
            | Request::Scores { .. }
            | Request::ScoreRange { .. }
            | Request::Deadline { .. } => None,
        }
    }
}

/// The server's answer. The body of a server-to-client frame.
///
/// Each request kind has its documented success replies; any request may
/// instead get [`Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello(HelloReply), // wire index 0
    /// Answer to [`Request::Ping`].
    Pong, // wire index 1
    /// Answer to [`Request::Get`]: the entry, or `None` if absent or expired.
    Value(Option<Entry>), // wire index 2
    /// Answer to [`Request::MultiGet`]: one slot per requested key, in order.
    Values(Vec<Option<Entry>>), // wire index 3
    /// Answer to [`Request::Exists`]: how many of the keys exist.
    Count(u64), // wire index 4
    /// Answer to [`Request::Ttl`].
    Ttl(TtlState), // wire index 5
    /// A [`Request::Set`] or [`Request::MultiSet`] was applied.
    Written(WriteReply), // wire index 6
    /// The write's condition did not hold; nothing was written.
    // wire index 7
    NotWritten {
        /// The key's version now, or `None` if it is absent.
        current_version: Option<Seq>,
    },
    /// Answer to [`Request::Delete`].
    // wire index 8
    Deleted {
        /// Whether the key existed (and so was deleted).
        existed: bool,
        /// What the delete reached; `None` when nothing was written.
        durability: Option<Durability>,
    },
    /// Answer to [`Request::Expire`] and [`Request::Persist`].
    // wire index 9
    Updated {
        /// Whether the key existed.
        existed: bool,
        /// What the update reached; `None` when nothing was written (the key
        /// is absent, or `Persist` found no TTL to remove).
        durability: Option<Durability>,
    },
    /// Answer to [`Request::Incr`].
    // wire index 10
    Int {
        /// The value after the increment.
        value: i64,
        /// What the write reached.
        durability: Durability,
    },
    /// Answer to [`Request::Scan`].
    Page(ScanPage), // wire index 11
    /// Answer to [`Request::Info`]: ordered `(name, value)` pairs.
    Info(Vec<(String, String)>), // wire index 12
    /// The request failed.
    Error(ErrorReply), // wire index 13
    /// Answer to [`Request::Snapshot`].
    Snapshot(SnapshotPage), // wire index 14
    /// Answer to [`Request::ClusterMap`].
    ClusterMap(ClusterMapReply), // wire index 15
    /// Answer to [`Request::ClusterMapSince`] when the client's map is
    /// current: the node's map version, not newer than the one asked about.
    ClusterMapCurrent {
        /// The node's committed map version.
        version: u64,
    }, // wire index 16
    /// Answer to [`Request::Push`].
    // wire index 17
    Length {
        /// The list's length after the push; 0 when `only_if_exists` found
        /// no list.
        len: u64,
        /// What the push reached; `None` when nothing was written.
        durability: Option<Durability>,
    },
    /// Answer to [`Request::Pop`].
    // wire index 18
    Popped {
        /// The values taken, in the order taken; `None` when there is no
        /// list at the key.
        values: Option<Vec<Bytes>>,
        /// What the pop reached; `None` when nothing was written.
        durability: Option<Durability>,
    },
    /// Answer to [`Request::ListRange`]: the values, left to right.
    Elements(Vec<Bytes>), // wire index 19
    /// Answer to [`Request::ListIndex`]: the value, or `None` when there is
    /// no list or no such position.
    Element(Option<Bytes>), // wire index 20
    /// Answer to [`Request::Type`]: `None` when the key is absent.
    Kind(Option<ValueKind>), // wire index 21
    /// Answer to [`Request::ScanKeys`].
    Keys(KeyPage), // wire index 22
    /// Answer to [`Request::RawSnapshot`].
    RawSnapshot(RawSnapshotPage), // wire index 23
    /// Answer to [`Request::AddMembers`], [`Request::RemoveMembers`] and
    /// [`Request::AddScores`].
    // wire index 24
    Counted {
        /// How many members were added (new ones only; for `AddScores` with
        /// `count_changed`, also those whose score changed) or removed.
        count: u64,
        /// What the write reached; `None` when nothing was written.
        durability: Option<Durability>,
    },
    /// Answer to [`Request::MemberValues`]: one slot per member named, in
    /// order; `None` for one the collection lacks (or no collection).
    MemberValues(Vec<Option<Bytes>>), // wire index 25
    /// Answer to [`Request::ScanMembers`]: `(name, value)` pairs in byte
    /// order; fewer than the limit when the collection has no more.
    Members(Vec<(Bytes, Bytes)>), // wire index 26
    /// Answer to [`Request::IncrScore`].
    // wire index 27
    Score {
        /// The member's score after the increment; `None` when `exists`
        /// or `update` refused it.
        score: Option<Score>,
        /// What the write reached; `None` when nothing was written.
        durability: Option<Durability>,
    },
    /// Answer to [`Request::Scores`]: one slot per member named, in order;
    /// `None` for one the sorted set lacks (or no sorted set).
    Scores(Vec<Option<Score>>), // wire index 28
    /// Answer to [`Request::PopScores`] and [`Request::ScoreRange`].
    // wire index 29
    Scored {
        /// `(member, score)` in the order taken or ranked; empty when
        /// there is no sorted set.
        members: Vec<(Bytes, Score)>,
        /// What a pop reached; `None` when nothing was written (and
        /// always for a range).
        durability: Option<Durability>,
    },
    /// Answer to [`Request::Deadline`].
    Deadline(DeadlineState), // wire index 30
}

/// One page of a [`Request::RawSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawSnapshotPage {
    /// Names the snapshot: pass it back for the next page.
    pub snapshot: u64,
    /// Every write up to this seq, and none after it, is in the snapshot.
    pub seq: Seq,
    /// When the snapshot was taken, Unix ms.
    pub created_at_ms: u64,
    /// Live entries in slot order.
    pub entries: Vec<RawSnapshotItem>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<Bytes>,
}

/// One entry of a [`RawSnapshotPage`]: a [`SnapshotItem`] with its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawSnapshotItem {
    /// The key (an internal key for a list's element).
    pub key: Bytes,
    /// The value (a list's metadata for a list).
    pub value: Bytes,
    /// Its version.
    pub version: Seq,
    /// Absolute expiry, Unix ms; 0 = never.
    pub expires_at_ms: u64,
    /// What the value is.
    pub kind: ValueKind,
}

/// One page of a [`Request::ScanKeys`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPage {
    /// `(key, kind)` pairs in slot order.
    pub keys: Vec<(Bytes, ValueKind)>,
    /// Pass this back as `cursor` for the next page; `None` when the scan is
    /// complete. Opaque to clients.
    pub next_cursor: Option<Bytes>,
}

/// A node's committed cluster map ([`Request::ClusterMap`]): what a client
/// routes by. The slot table is not sent: the client computes it from the
/// shard ids and `vnodes` (proto-docs/cluster.md §2 and §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMapReply {
    /// Grows with every committed change; a client keeps the newest it saw.
    pub version: u64,
    /// Virtual nodes per shard on the ring.
    pub vnodes: u32,
    /// Every node, in ascending id order.
    pub nodes: Vec<ClusterNode>,
    /// Every shard, in ascending id order.
    pub shards: Vec<ClusterShard>,
}

/// One node of a [`ClusterMapReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its id (a `NodeId`: derived from the name).
    pub id: u64,
    /// Its name (its cluster certificate's common name).
    pub name: String,
    /// Where clients reach it (`host:port`).
    pub client_addr: String,
    /// Where other nodes reach it.
    pub link_addr: String,
    /// The shard it holds a copy of.
    pub shard: u32,
}

/// One shard of a [`ClusterMapReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterShard {
    /// Its id.
    pub id: u32,
    /// The node taking its writes.
    pub primary: u64,
    /// Its other nodes.
    pub replicas: Vec<u64>,
    /// Grows with every change of primary.
    pub epoch: u64,
}

/// One page of an online dump ([`Request::Snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPage {
    /// Names the snapshot: pass it back for the next page.
    pub snapshot: u64,
    /// Every write up to this seq, and none after it, is in the snapshot.
    pub seq: Seq,
    /// When the snapshot was taken, Unix ms.
    pub created_at_ms: u64,
    /// Live entries in ascending key order.
    pub entries: Vec<SnapshotItem>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<Bytes>,
}

/// One entry of a [`SnapshotPage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotItem {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Its version.
    pub version: Seq,
    /// Absolute expiry, Unix ms; 0 = never.
    pub expires_at_ms: u64,
}

impl Response {
    /// An error reply with just a code and a message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error(ErrorReply::new(code, message))
    }
}

/// What the server says in answer to [`Request::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The protocol major version the server speaks on this connection.
    pub protocol: u32,
    /// The server software and version, e.g. `"strata 0.1.0"`.
    pub server: String,
    /// The node's id, if it has one.
    pub node_id: Option<NodeId>,
    /// The node's role: `"primary"` or `"replica"` today; clients must
    /// tolerate other values.
    pub role: Option<String>,
    /// The limits this server enforces on requests.
    pub limits: Limits,
}

/// A stored value as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// The Seq of the last write to the key; usable in
    /// [`Condition::IfVersion`].
    pub version: Seq,
    /// Remaining time to live in ms, or `None` if the key does not expire.
    pub ttl_ms: Option<u64>,
}

/// A key's time to live, as [`Request::Ttl`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlState {
    /// The key is absent (or expired).
    Missing, // wire index 0
    /// The key exists and does not expire.
    Persistent, // wire index 1
    /// The key expires in this many ms.
    ExpiresIn(u64), // wire index 2
}

/// When a key expires, as [`Request::Deadline`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadlineState {
    /// The key is absent (or expired).
    Missing, // wire index 0
    /// The key exists and does not expire.
    Persistent, // wire index 1
    /// The key expires at this Unix time in ms.
    ExpiresAt(u64), // wire index 2
}

/// A successful [`Request::Set`] or [`Request::MultiSet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    /// The Seq the write was committed at: the key's (every entry's) new
    /// version.
    pub version: Seq,
    /// What the write reached before the reply.
    pub durability: Durability,
}

/// How durable a write was when the server replied (DESIGN §2, invariant I6):
/// never more than what was actually reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durability {
    /// The write is fsynced in the node's write-ahead log. False under the
    /// `interval` and `never` fsync policies until the next sync.
    pub local_synced: bool,
    /// How many replicas acknowledged the write before the reply.
    pub replicas_acked: u32,
    /// The policy the write ran under (the request's, or the server default).
    pub requested: AckPolicy,
    /// A `semi-sync` timeout with `on_timeout: Degrade` let the write reply
    /// with fewer acknowledgements than requested.
    pub degraded: bool,
}

/// One page of a [`Request::Scan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPage {
    /// `(key, entry)` pairs in ascending key order.
    pub entries: Vec<(Bytes, Entry)>,
    /// Pass this back as `cursor` for the next page; `None` when the scan is
    /// complete. Opaque to clients.
    pub next_cursor: Option<Bytes>,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The machine-readable reason.
    pub code: ErrorCode,
    /// A human-readable explanation (never contains secrets).
    pub message: String,
    /// For `Overloaded` (and optionally other retryable codes): wait at least
    /// this long before retrying.
    pub retry_after_ms: Option<u64>,
    /// For `ReadOnlyReplica`: the primary's `host:port`, when known.
    pub leader_hint: Option<String>,
}

impl ErrorReply {
    /// An error with no retry delay and no leader hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
            retry_after_ms: None,
            leader_hint: None,
        }
    }

    /// Sets [`retry_after_ms`](Self::retry_after_ms).
    pub fn with_retry_after_ms(mut self, ms: u64) -> ErrorReply {
        self.retry_after_ms = Some(ms);
        self
    }

    /// Sets [`leader_hint`](Self::leader_hint).
    pub fn with_leader_hint(mut self, addr: impl Into<String>) -> ErrorReply {
        self.leader_hint = Some(addr.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::OnTimeout;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Postcard bytes of a value, without a frame header.
    fn body<T: Serialize>(v: &T) -> Vec<u8> {
        postcard::to_allocvec(v).expect("encode")
    }

    /// The pinned wire index of every response kind. Exhaustive (no `_` arm):
    /// a new variant does not compile until it is pinned here.
    fn response_index(r: &Response) -> u8 {
        match r {
            Response::Hello(_) => 0,
            Response::Pong => 1,
            Response::Value(_) => 2,
            Response::Values(_) => 3,
            Response::Count(_) => 4,
            Response::Ttl(_) => 5,
            Response::Written(_) => 6,
            Response::NotWritten { .. } => 7,
            Response::Deleted { .. } => 8,
            Response::Updated { .. } => 9,
            Response::Int { .. } => 10,
            Response::Page(_) => 11,
            Response::Info(_) => 12,
            Response::Error(_) => 13,
            Response::Snapshot(_) => 14,
            Response::ClusterMap(_) => 15,
            Response::ClusterMapCurrent { .. } => 16,
            Response::Length { .. } => 17,
            Response::Popped { .. } => 18,
            Response::Elements(_) => 19,
            Response::Element(_) => 20,
            Response::Kind(_) => 21,
            Response::Keys(_) => 22,
            Response::RawSnapshot(_) => 23,
            Response::Counted { .. } => 24,
            Response::MemberValues(_) => 25,
            Response::Members(_) => 26,
            Response::Score { .. } => 27,
            Response::Scores(_) => 28,
            Response::Scored { .. } => 29,
            Response::Deadline(_) => 30,
        }
    }

    /// One request of every kind, in wire order.
    fn one_of_each_request() -> Vec<Request> {
        vec![
            Request::Hello {
                protocol: 1,
                token: None,
                client_name: None,
            },
            Request::Ping,
            Request::Get { key: b("k") },
            Request::MultiGet { keys: vec![] },
            Request::Exists { keys: vec![] },
            Request::Ttl { key: b("k") },
            Request::Set {
                key: b("k"),
                value: b("v"),
                ttl_ms: None,
                condition: Condition::Always,
                ack: None,
            },
            Request::MultiSet {
                entries: vec![],
                ack: None,
            },
            Request::Delete {
                key: b("k"),
                condition: Condition::Always,
                ack: None,
            },
            Request::Expire {
                key: b("k"),
                ttl_ms: 1,
                ack: None,
            },
            Request::Persist {
                key: b("k"),
                ack: None,
            },
            Request::Incr {
                key: b("k"),
                delta: 1,
                ack: None,
            },
            Request::Scan {
                prefix: b(""),
                cursor: None,
                limit: 0,
            },
            Request::Info,
            Request::Promote,
            Request::ReplicaOf {
                primary: "127.0.0.1:7380".into(),
            },
            Request::Digest {
                expired_before_ms: 0,
            },
            Request::Checkpoint,
            Request::Snapshot {
                snapshot: None,
                after: None,
            },
            Request::ClusterMap,
            Request::ClusterInit,
            Request::ClusterPropose {
                command: Bytes::from_static(&[0, 0x80, 0x02]),
            },
            Request::ClusterMapSince { version: 0 },
            Request::ClusterFailover {
                shard: 1,
                to: None,
                unclean: false,
                dry_run: false,
            },
            Request::Push {
                key: b("l"),
                end: End::Left,
                values: vec![b("v")],
                only_if_exists: false,
                ack: None,
            },
            Request::Pop {
                key: b("l"),
                end: End::Right,
                count: 1,
                ack: None,
            },
            Request::ListRange {
                key: b("l"),
                start: 0,
                stop: -1,
            },
            Request::ListLen { key: b("l") },
            Request::ListIndex {
                key: b("l"),
                index: 0,
            },
            Request::Type { key: b("l") },
            Request::ScanKeys {
                prefix: b(""),
                cursor: None,
                limit: 0,
                kind: None,
            },
            Request::RawSnapshot {
                snapshot: None,
                after: None,
            },
            Request::AddMembers {
                key: b("s"),
                kind: ValueKind::Set,
                members: vec![(b("m"), b(""))],
                only_new: false,
                ack: None,
            },
            Request::RemoveMembers {
                key: b("s"),
                kind: ValueKind::Set,
                members: vec![b("m")],
                ack: None,
            },
            Request::PopMembers {
                key: b("s"),
                count: 1,
                ack: None,
            },
            Request::IncrField {
                key: b("h"),
                field: b("f"),
                delta: 1,
                ack: None,
            },
            Request::MemberValues {
                key: b("h"),
                kind: ValueKind::Hash,
                members: vec![b("f")],
            },
            Request::ScanMembers {
                key: b("h"),
                kind: ValueKind::Hash,
                after: None,
                limit: 0,
            },
            Request::CountMembers {
                key: b("h"),
                kind: ValueKind::Hash,
            },
            Request::AddScores {
                key: b("z"),
                members: vec![(b("m"), Score(1.5))],
                exists: None,
                update: ScoreUpdate::Any,
                count_changed: false,
                ack: None,
            },
            Request::IncrScore {
                key: b("z"),
                member: b("m"),
                delta: Score(-1.0),
                exists: Some(true),
                update: ScoreUpdate::Greater,
                ack: None,
            },
            Request::Scores {
                key: b("z"),
                members: vec![b("m")],
            },
            Request::PopScores {
                key: b("z"),
                end: End::Left,
                count: 1,
                ack: None,
            },
            Request::ScoreRange {
                key: b("z"),
                start: 0,
                stop: -1,
                end: End::Right,
            },
            Request::SetAt {
                key: b("k"),
                value: b("v"),
                expires_at_ms: 1,
                condition: Condition::Always,
                ack: None,
            },
            Request::ExpireAt {
                key: b("k"),
                at_ms: 1,
                ack: None,
            },
            Request::Deadline { key: b("k") },
        ]
    }

    fn durability() -> Durability {
        Durability {
            local_synced: true,
            replicas_acked: 0,
            requested: AckPolicy::Async,
            degraded: false,
        }
    }

    /// One response of every kind, in wire order.
    fn one_of_each_response() -> Vec<Response> {
        vec![
            Response::Hello(HelloReply {
                protocol: 1,
                server: "strata".into(),
                node_id: None,
                role: None,
                limits: Limits::default(),
            }),
            Response::Pong,
            Response::Value(None),
            Response::Values(vec![]),
            Response::Count(0),
            Response::Ttl(TtlState::Missing),
            Response::Written(WriteReply {
                version: Seq(1),
                durability: durability(),
            }),
            Response::NotWritten {
                current_version: None,
            },
            Response::Deleted {
                existed: false,
                durability: None,
            },
            Response::Updated {
                existed: false,
                durability: None,
            },
            Response::Int {
                value: 0,
                durability: durability(),
            },
            Response::Page(ScanPage {
                entries: vec![],
                next_cursor: None,
            }),
            Response::Info(vec![]),
            Response::error(ErrorCode::Internal, ""),
            Response::Snapshot(SnapshotPage {
                snapshot: 1,
                seq: Seq(2),
                created_at_ms: 3,
                entries: vec![],
                next: None,
            }),
            Response::ClusterMap(ClusterMapReply {
                version: 1,
                vnodes: 256,
                nodes: vec![],
                shards: vec![],
            }),
            Response::ClusterMapCurrent { version: 1 },
            Response::Length {
                len: 1,
                durability: None,
            },
            Response::Popped {
                values: None,
                durability: None,
            },
            Response::Elements(vec![]),
            Response::Element(None),
            Response::Kind(None),
            Response::Keys(KeyPage {
                keys: vec![],
                next_cursor: None,
            }),
            Response::RawSnapshot(RawSnapshotPage {
                snapshot: 1,
                seq: Seq(2),
                created_at_ms: 3,
                entries: vec![],
                next: None,
            }),
            Response::Counted {
                count: 1,
                durability: None,
            },
            Response::MemberValues(vec![]),
            Response::Members(vec![]),
            Response::Score {
                score: None,
                durability: None,
            },
            Response::Scores(vec![]),
            Response::Scored {
                members: vec![],
                durability: None,
            },
            Response::Deadline(DeadlineState::Missing),
        ]
    }

    #[test]
    fn request_wire_indices_are_pinned() {
        // `Request::op` is the pinned table: an exhaustive match, so a
        // new variant does not compile until it is given its index there.
        let all = one_of_each_request();
        assert_eq!(all.len(), 47, "one sample per request kind");
        assert_eq!(all.len(), Op::ALL.len());
        for (i, req) in all.iter().enumerate() {
            let want = req.op() as usize;
            assert_eq!(want, i, "{} sample out of order", req.op_name());
            assert_eq!(
                usize::from(body(req)[0]),
                want,
                "{} renumbered",
                req.op_name()
            );
        }
    }

    #[test]
    fn response_wire_indices_are_pinned() {
        let all = one_of_each_response();
        assert_eq!(all.len(), 31, "one sample per response kind");
        for (i, resp) in all.iter().enumerate() {
            let want = response_index(resp);
            assert_eq!(usize::from(want), i, "{resp:?} sample out of order");
            assert_eq!(body(resp)[0], want, "{resp:?} renumbered");
        }
    }

    #[test]
    fn nested_enum_wire_indices_are_pinned() {
        // Condition
        assert_eq!(body(&Condition::Always), [0]);
        assert_eq!(body(&Condition::IfAbsent), [1]);
        assert_eq!(body(&Condition::IfPresent), [2]);
        assert_eq!(body(&Condition::IfVersion(Seq(5))), [3, 5]);
        // TtlState
        assert_eq!(body(&TtlState::Missing), [0]);
        assert_eq!(body(&TtlState::Persistent), [1]);
        assert_eq!(body(&TtlState::ExpiresIn(7)), [2, 7]);
        // DeadlineState
        assert_eq!(body(&DeadlineState::Missing), [0]);
        assert_eq!(body(&DeadlineState::Persistent), [1]);
        assert_eq!(body(&DeadlineState::ExpiresAt(7)), [2, 7]);
        // Condition, AckPolicy and OnTimeout live in crate::types but are
        // part of this wire format too, so they are pinned here.
        assert_eq!(body(&AckPolicy::Async), [0]);
        assert_eq!(
            body(&AckPolicy::SemiSync {
                replicas: 2,
                timeout_ms: 3,
                on_timeout: OnTimeout::Fail
            }),
            [1, 2, 3, 1]
        );
        assert_eq!(body(&AckPolicy::Sync { timeout_ms: 4 }), [2, 4]);
        assert_eq!(body(&OnTimeout::Degrade), [0]);
        assert_eq!(body(&OnTimeout::Fail), [1]);
        assert_eq!(body(&End::Left), [0]);
        assert_eq!(body(&End::Right), [1]);
        assert_eq!(body(&ValueKind::String), [0]);
        assert_eq!(body(&ValueKind::List), [1]);
        assert_eq!(body(&ValueKind::Set), [2]);
        assert_eq!(body(&ValueKind::Hash), [3]);
        assert_eq!(body(&ValueKind::SortedSet), [4]);
        assert_eq!(body(&ScoreUpdate::Any), [0]);
        assert_eq!(body(&ScoreUpdate::Greater), [1]);
        assert_eq!(body(&ScoreUpdate::Less), [2]);
        // A score: 8 bytes, IEEE 754, little-endian.
        assert_eq!(body(&Score(1.5)), [0, 0, 0, 0, 0, 0, 0xf8, 0x3f]);
    }

    #[test]
    fn op_names_are_unique_snake_case() {
        let mut names: Vec<_> = one_of_each_request().iter().map(|r| r.op_name()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Op::ALL.len());
    }

    #[test]
    fn write_and_idempotence_classification() {
        let writes: Vec<_> = one_of_each_request()
            .iter()
            .filter(|r| r.needs_write())
            .map(|r| r.op_name())
            .collect();
        assert_eq!(
            writes,
            [
                "set",
                "multi_set",
                "delete",
                "expire",
                "persist",
                "incr",
                "push",
                "pop",
                "add_members",
                "remove_members",
                "pop_members",
                "incr_field",
                "add_scores",
                "incr_score",
                "pop_scores",
                "set_at",
                "expire_at"
            ]
        );
        for req in one_of_each_request() {
            let expect = !matches!(
                req,
                Request::Incr { .. }
                    | Request::Push { .. }
                    | Request::Pop { .. }
                    | Request::AddMembers { .. }
                    | Request::RemoveMembers { .. }
                    | Request::PopMembers { .. }
                    | Request::IncrField { .. }
                    | Request::AddScores { .. }
                    | Request::IncrScore { .. }
                    | Request::PopScores { .. }
                    | Request::ClusterPropose { .. }
                    | Request::ClusterInit
                    | Request::ClusterFailover { .. }
            );
            assert_eq!(req.is_idempotent(), expect, "{}", req.op_name());
            if !req.needs_write() {
                assert_eq!(req.ack(), None);
            }
        }
        let set = |condition| Request::Set {
            key: b("k"),
            value: b("v"),
            ttl_ms: None,
            condition,
            ack: Some(AckPolicy::Sync { timeout_ms: 1 }),
        };
        assert!(set(Condition::IfPresent).is_idempotent());
        assert!(!set(Condition::IfAbsent).is_idempotent());
        assert!(!set(Condition::IfVersion(Seq(3))).is_idempotent());
        let set_at = |condition| Request::SetAt {
            key: b("k"),
            value: b("v"),
            expires_at_ms: 1,
            condition,
            ack: None,
        };
        assert!(set_at(Condition::Always).is_idempotent());
        assert!(!set_at(Condition::IfPresent).is_idempotent());
        assert_eq!(
            set(Condition::Always).ack(),
            Some(AckPolicy::Sync { timeout_ms: 1 })
        );
        let cas_delete = Request::Delete {
            key: b("k"),
            condition: Condition::IfVersion(Seq(1)),
            ack: None,
        };
        assert!(!cas_delete.is_idempotent());
    }

    #[test]
    fn error_reply_builders() {
        let e = ErrorReply::new(ErrorCode::ReadOnlyReplica, "replica")
            .with_leader_hint("10.0.0.1:7400")
            .with_retry_after_ms(5);
        assert_eq!(e.code, ErrorCode::ReadOnlyReplica);
        assert_eq!(e.leader_hint.as_deref(), Some("10.0.0.1:7400"));
        assert_eq!(e.retry_after_ms, Some(5));
    }
}
