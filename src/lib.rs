//! strata: a persistent, tiered, replicated cache.
//!
//! # Layout
//!
//! - [`types`]: `Seq`, `NodeId`, `ReplId`, `Epoch`.
//! - [`clock`]: wall-clock time behind a trait (TTL tests move it by hand).
//! - [`wal`]: the write-ahead log: CRC-framed postcard records in segment
//!   files, group commit, fsync policy, recovery. It is also the replication
//!   stream.
//! - [`store`]: the tiers and the order between them: memory tier (moka),
//!   disk tier (RocksDB), the commit pipeline, recovery, TTL, checkpoints.
//! - [`proto`]: the client wire protocol, sans-io.

pub mod clock;
pub mod proto;
pub mod store;
pub mod types;
pub mod wal;
