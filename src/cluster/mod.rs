//! Sharding: which shard owns a key.
//!
//! A key hashes to one of [`SLOTS`] slots exactly as in Redis Cluster
//! ([`slot`]); a consistent-hash ring with virtual nodes assigns each slot
//! to a shard ([`ring`]). Both steps are pure functions of the key, the
//! shard ids and the virtual-node count, specified byte by byte in
//! proto-docs/cluster.md, so clients and nodes compute one table alike.
//! The cluster map ([`map`]) holds the nodes and shards that feed it; the
//! metadata group ([`raft`]) replicates it, as the state machine of a Raft
//! group of the nodes.

pub mod client;
pub mod failover;
pub mod health;
mod in_sync;
pub mod map;
mod metrics;
pub mod migrate;
pub mod node;
pub mod raft;
pub mod ring;
pub mod slot;

pub use map::{ClusterMap, MapCommand, MapError, Migration, NodeInfo, ShardInfo};
pub use raft::{
    Inbound, LeaderRef, MAX_VOTERS, META_ALPN, MetaConfig, MetaError, MetaGroup, MetaRole,
    MetaStatus, MetaTiming, pick_voters,
};
pub use ring::{
    Balance, DEFAULT_VNODES, MAX_VNODES, Ring, RingError, ShardId, SlotRange, SlotTable,
    balance_options, choose_vnodes, point_position, slot_position,
};
pub use slot::{SLOTS, Slot, SlotSet, crc16, hashed_part, key_slot};

#[cfg(test)]
mod doc_vectors;
