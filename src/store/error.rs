//! Errors of the storage engine.

use std::path::PathBuf;

use crate::types::Seq;
use crate::wal::WalError;

/// Everything that can go wrong in the store, typed so that callers (the
/// server's one error-to-wire mapping, the tools) can react precisely.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another `Store` in this one) holds the data directory.
    #[error(
        "data directory {path} is in use by another strata process (lock file {lock}); stop it first"
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The lock file inside it.
        lock: PathBuf,
    },
    /// Filesystem trouble outside the WAL and RocksDB.
    #[error("i/o on {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The write-ahead log failed (includes a poisoned log after an fsync error).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// RocksDB returned an error.
    #[error("disk tier: {0}")]
    Disk(#[from] rocksdb::Error),
    /// A value in the disk tier does not have the layout this version writes.
    #[error("disk tier holds a damaged value for key {key:?}: {reason}")]
    DamagedValue {
        /// The key (lossy UTF-8 for the message).
        key: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The WAL does not reach back to what the disk tier has applied, so
    /// acknowledged writes would be missing.
    #[error(
        "wal starts at seq {wal_first} but the disk tier has only applied up to {applied}: records in between are missing"
    )]
    WalGap {
        /// First seq the WAL holds.
        wal_first: Seq,
        /// What RocksDB says it has applied.
        applied: Seq,
    },
    /// The disk tier was written by an older strata, in a key layout this
    /// build does not read (layout 1 had no slot prefix).
    #[error(
        "data directory {data_dir} holds disk layout {found}, written by an older strata; this build \
         reads layout {expected} (every key behind its cluster slot). With the node stopped, convert \
         it in place with `strata-admin upgrade --data-dir {data_dir}`",
        data_dir = data_dir.display()
    )]
    OldLayout {
        /// The data directory.
        data_dir: PathBuf,
        /// The layout found.
        found: u32,
        /// The layout this build reads.
        expected: u32,
    },
    /// The disk tier names a layout newer than this build knows.
    #[error(
        "data directory {data_dir} holds disk layout {found}, newer than this build reads ({expected}); \
         run the strata version that wrote it",
        data_dir = data_dir.display()
    )]
    NewerLayout {
        /// The data directory.
        data_dir: PathBuf,
        /// The layout found.
        found: u32,
        /// The layout this build reads.
        expected: u32,
    },
    /// `strata-admin upgrade` stopped half way; the data is safe in one of
    /// the directories it names.
    #[error(
        "data directory {data_dir} holds an interrupted disk-layout upgrade ({leftover} is present); \
         finish it with `strata-admin upgrade --data-dir {data_dir}`",
        data_dir = data_dir.display(),
        leftover = leftover.display()
    )]
    InterruptedUpgrade {
        /// The data directory.
        data_dir: PathBuf,
        /// The upgrade's leftover directory.
        leftover: PathBuf,
    },
    /// A disk-layout upgrade found a full sync half installed: its resume
    /// point means nothing in the new key order.
    #[error(
        "data directory {data_dir} holds an unfinished full sync, which cannot be converted; \
         let the older strata finish it first, or empty the directory and let the node sync \
         again from its primary",
        data_dir = data_dir.display()
    )]
    UnfinishedInstall {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// A write failed earlier in a way that leaves the tiers unsure; the
    /// store refuses writes until restarted (recovery replays the WAL).
    #[error("store refuses writes after an earlier failure ({0}); restart the node to recover")]
    Poisoned(String),
    /// A key, value or key count over the configured limits (the same
    /// rules, and words, as the protocol's).
    #[error(transparent)]
    Limit(#[from] crate::proto::RequestError),
    /// An argument that can never be valid (empty key, zero TTL, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A score increment whose result is NaN (`inf` plus `-inf`); Redis's
    /// words, which the gateway passes on.
    #[error("resulting score is not a number (NaN)")]
    NanScore,
    /// `incr` on a value that is not a decimal i64.
    #[error("value is not a decimal 64-bit integer")]
    NotAnInteger,
    /// An operation on a key holding another kind of value (`incr` or
    /// `get` on a list, a list op on a string).
    #[error("the key holds another kind of value than this operation works on")]
    WrongType,
    /// A key in the internal namespace (`store::keys::INTERNAL_PREFIX`).
    #[error("keys starting with the bytes ff ff ff ff are reserved for strata's own use")]
    ReservedKey,
    /// `incr` would leave the i64 range.
    #[error("increment would overflow a 64-bit integer")]
    Overflow,
    /// The commit queue is full: the write was not queued (nothing done).
    #[error("{pending} writes are queued for the commit thread, its limit; retry shortly")]
    Overloaded {
        /// The queue's limit (`max_pending_writes`).
        pending: usize,
    },
    /// A replicated record that does not continue the log.
    #[error("replicated record {got} does not follow the last applied seq (expected {expected})")]
    ReplicationGap {
        /// The seq that would have continued the log.
        expected: Seq,
        /// The seq that arrived.
        got: Seq,
    },

    /// The WAL no longer holds a record a reader asked for.
    #[error("wal no longer holds seq {from} (oldest retained: {first:?})")]
    NotRetained {
        /// The seq asked for.
        from: Seq,
        /// The oldest seq still in the WAL.
        first: Option<Seq>,
    },
    /// A long operation stopped because its caller went away.
    #[error("stopped: whoever asked for it is gone")]
    Cancelled,
    /// The store is shutting down (or its commit thread stopped).
    #[error("store is closed")]
    Closed,
    /// A configuration value is unusable.
    #[error("bad store config `{field}`: {reason}")]
    Config {
        /// The config field.
        field: &'static str,
        /// Why it is wrong.
        reason: String,
    },
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
