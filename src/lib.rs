//! strata: a persistent, tiered, replicated cache.
//!
//! Hot keys live in a memory tier (moka); every key lives in a disk tier
//! (RocksDB); a write-ahead log of our own makes every acknowledged write
//! survive a crash and is also the replication stream. Clients speak a
//! binary protocol over QUIC; primaries ship their WAL to replicas over
//! QUIC with mutual TLS.
//!
//! # Layout
//!
//! - [`types`]: `Seq`, `NodeId`, `ReplId`, `Epoch`, `AckPolicy`, `Condition`.
//! - [`clock`]: wall-clock time behind a trait (TTL tests move it by hand).
//! - [`config`]: the server's configuration (TOML + flags) and its validation.
//! - [`error`]: the node's top-level error and the one mapping from internal
//!   errors to wire error codes.
//! - [`proto`]: the client wire protocol, sans-io (no tokio, no quinn).
//! - [`net`]: everything that touches QUIC and TLS: endpoint, server, client.
//! - [`cmd`]: request handlers: `Request` → store calls → `Response`.
//! - [`store`]: the tiers and the order between them: memory tier, disk
//!   tier, commit pipeline, recovery, TTL, checkpoints.
//! - [`wal`]: segments, CRC-framed postcard records, group-commit writer,
//!   reader, recovery, read-only inspection.
//! - [`repl`]: replication: the node-to-node protocol (sans-io), the
//!   primary's sessions and full syncs, the replica's follower, acks.
//! - [`cluster`]: sharding: key → slot (Redis Cluster's CRC16 and hash
//!   tags) → shard (a consistent-hash ring with virtual nodes).
//! - [`resp`]: the RESP gateway: Redis's protocol on a TCP listener, each
//!   command run as requests through `cmd::Node::dispatch`.
//! - [`http`]: the HTTP listener: `/metrics`, health probes, and a JSON and
//!   raw-bytes API over the keys, through the same checked dispatch.
//! - [`dump`]: the portable dump format of the operator tools.
//! - [`metrics`]: Prometheus counters and histograms, rendered as text.
//! - [`ready`]: the line `strata-server --ready-json` prints once it serves.
//! - `harness` (feature `test-util`): real server processes for the tests
//!   and the crash drills, started and watched through that line.
//!
//! # Data path
//!
//! ```text
//! client --QUIC bi-stream--> net::server --proto frame--> cmd::Node::dispatch --> store
//!
//! WRITE  commit thread: conditions + Seq -> WAL append (group commit, fsync policy)
//!        -> RocksDB WriteBatch (+ applied_seq) -> memory tier -> reply with durability
//! READ   memory tier hit -> else RocksDB get (blocking pool) -> version-checked fill
//! BOOT   lock data dir -> RocksDB -> applied_seq -> replay WAL after it -> serve
//!        (the memory tier re-warms from the saved hot keys in the background)
//! REPL   committed records -> feed / WAL -> replica: same seqs into its WAL and
//!        tiers -> Ack(received, durable) -> writes waiting for their AckPolicy reply
//! ```

pub mod clock;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod dump;
pub mod error;
#[cfg(feature = "test-util")]
pub mod harness;
pub mod http;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod ready;
pub mod repl;
pub mod resp;
pub mod store;
pub mod sync;
pub mod types;
pub mod wal;
