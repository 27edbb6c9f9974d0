//! The storage engine: the tiers and the order between them.
//!
//! ```text
//! WRITE  Store::set ... -> commit thread: order + CAS -> WAL (group commit)
//!                          -> RocksDB batch (+ applied_seq) -> memory tier -> reply
//! READ   memory tier hit -> else RocksDB get (blocking pool) -> version-checked fill
//! OPEN   lock dir -> open RocksDB -> applied_seq -> open WAL (repair tail)
//!        -> replay records after applied_seq into RocksDB -> serve
//! CHECKPOINT  RocksDB flush -> delete WAL segments it covers (I7)
//! ```
//!
//! A `Store` is a cheap handle (`Clone`); the engine stops when the last
//! handle is dropped. [`Store::close`] also checkpoints, so the next open
//! replays nothing; dropping without `close` is safe (the next open replays
//! the WAL), and is exactly what a crash looks like to RocksDB.

mod checkpoint;
mod commit;
pub mod disk;
mod error;
mod feed;
pub mod keys;
mod list;
mod lock;
mod members;
pub mod memory;
mod metrics;
mod sorted;
mod upgrade;
mod warm;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};

pub use checkpoint::{CheckpointReport, WalHold};
pub use commit::InstallStep;
pub use disk::{
    Compression, Digest, DiskConfig, InstallMarker, ScanLimit, SnapshotEntry, SnapshotReader,
    StoredValue,
};
pub use error::{Result, StoreError};
pub use memory::TierCounters;

use checkpoint::{Checkpointer, Holds, Wake};
use commit::{Applied, Committer, Msg, WriteOp};
use disk::DiskTier;
use feed::Feed;
pub use list::ListMeta;
pub use lock::DirLock;
use memory::{FillToken, Lookup, MemoryTier};
pub use metrics::StoreMetrics;
pub use upgrade::{Upgraded, upgrade_layout};

use crate::clock::{Clock, SystemClock};
use crate::cluster::SlotSet;
use crate::types::{Cancel, Condition, End, Expiry, Seq, ValueKind};
use crate::wal::{FsyncPolicy, Mutation, RecoveryMode, StdFs, Wal, WalConfig, WalFs, WalRecord};

/// Size limits on what clients may store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest key, bytes (default 16 KiB).
    pub max_key_bytes: usize,
    /// Longest value, bytes (default 8 MiB).
    pub max_value_bytes: usize,
    /// Most keys in one multi-get / multi-set / exists (default 1024, the
    /// protocol's documented default, proto-docs/wire-protocol.md §5).
    pub max_batch_keys: usize,
    /// Most entries one scan page returns (default 1024).
    pub max_scan_limit: usize,
}

impl Limits {
    /// The most keys, or values, one request names or one reply holds:
    /// what clients are told as `max_keys_per_request`.
    pub fn max_keys_per_request(&self) -> usize {
        self.max_batch_keys.min(self.max_scan_limit)
    }

    /// These limits as the protocol states them, with `max_frame_bytes`.
    pub fn announced(&self, max_frame_bytes: u32) -> crate::proto::Limits {
        crate::proto::Limits {
            max_key_bytes: u32_of(self.max_key_bytes),
            max_value_bytes: u32_of(self.max_value_bytes),
            max_keys_per_request: u32_of(self.max_keys_per_request()),
            max_frame_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 16 << 10,
            max_value_bytes: 8 << 20,
            max_batch_keys: crate::proto::DEFAULT_MAX_KEYS_PER_REQUEST as usize,
            max_scan_limit: crate::proto::DEFAULT_MAX_KEYS_PER_REQUEST as usize,
        }
    }
}

/// How a store is laid out and tuned. Directory layout under `data_dir`:
/// `LOCK` (held while open), `wal/` (our log), `db/` (RocksDB).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The data directory (created if missing). Not read from the `[store]`
    /// table of a config file: the server's top-level `data_dir` sets it.
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// Byte budget of the memory tier: keys + values + 352 B per entry, what
    /// an entry costs in RSS (`memory::ENTRY_OVERHEAD_BYTES`).
    pub memory_budget_bytes: u64,
    /// When the WAL is fsynced; see [`FsyncPolicy`] for what survives what.
    pub fsync: FsyncPolicy,
    /// What opening does with a damaged WAL.
    pub recovery: RecoveryMode,
    /// WAL segment size before rotation, bytes.
    pub wal_segment_bytes: u64,
    /// Periodic checkpoint interval, ms (0 = only by WAL size and on demand).
    pub checkpoint_interval_ms: u64,
    /// Checkpoint early once the WAL holds this many bytes.
    pub checkpoint_wal_bytes: u64,
    /// How often a primary deletes the elements of gone collections
    /// ([`Store::reclaim_elements`]), ms (0 = never).
    pub reclaim_interval_ms: u64,
    /// Most writes queued for the commit thread; more are shed with
    /// `Overloaded` (nothing done).
    pub max_pending_writes: usize,
    /// Most memory-tier keys saved for a warm restart (0: start cold).
    pub warm_keys_max: usize,
    /// How often the hot keys are saved (they also are on a clean close);
    /// 0 saves them only on close.
    pub warm_save_interval_ms: u64,
    /// Memory for recently committed records kept for replication, bytes;
    /// a replica further behind reads them back from the WAL.
    pub repl_feed_bytes: u64,
    /// Client-facing size limits.
    pub limits: Limits,
    /// RocksDB tuning.
    pub disk: DiskConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("strata-data"),
            memory_budget_bytes: 256 << 20,
            fsync: FsyncPolicy::Always,
            recovery: RecoveryMode::TolerateCorruptTail,
            wal_segment_bytes: 64 << 20,
            checkpoint_interval_ms: 60_000,
            checkpoint_wal_bytes: 256 << 20,
            reclaim_interval_ms: 60_000,
            max_pending_writes: 16_384,
            repl_feed_bytes: 64 << 20,
            warm_keys_max: 1_000_000,
            warm_save_interval_ms: 60_000,
            limits: Limits::default(),
            disk: DiskConfig::default(),
        }
    }
}

impl StoreConfig {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            ..StoreConfig::default()
        }
    }

    /// Sets the fsync policy.
    pub fn with_fsync(mut self, fsync: FsyncPolicy) -> StoreConfig {
        self.fsync = fsync;
        self
    }

    /// Sets the memory-tier budget.
    pub fn with_memory_budget(mut self, bytes: u64) -> StoreConfig {
        self.memory_budget_bytes = bytes;
        self
    }

    /// Checks values that would make the store misbehave, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(StoreError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if self.memory_budget_bytes == 0 {
            return bad("memory_budget_bytes", "must be above 0");
        }
        if self.wal_segment_bytes < 4096 {
            return bad("wal_segment_bytes", "must be at least 4096");
        }
        if self.max_pending_writes == 0 {
            return bad("max_pending_writes", "must be above 0");
        }
        let l = &self.limits;
        if l.max_key_bytes == 0 || l.max_value_bytes == 0 {
            return bad(
                "limits",
                "max_key_bytes and max_value_bytes must be above 0",
            );
        }
        if l.max_key_bytes + l.max_value_bytes > (1 << 30) {
            return bad("limits", "a key plus a value must fit in 1 GiB");
        }
        if l.max_batch_keys == 0 || l.max_scan_limit == 0 {
            return bad(
                "limits",
                "max_batch_keys and max_scan_limit must be above 0",
            );
        }
        Ok(())
    }

    fn wal_config(&self) -> WalConfig {
        let record_bytes = self.limits.max_batch_keys as u64
            * (self.limits.max_key_bytes + self.limits.max_value_bytes + 64) as u64;
        WalConfig {
            dir: self.data_dir.join("wal"),
            segment_bytes: self.wal_segment_bytes,
            // Large enough for the largest write a client may send.
            max_record_bytes: u32::try_from(record_bytes.max(64 << 20)).unwrap_or(u32::MAX),
            fsync: self.fsync,
            recovery: self.recovery,
        }
    }
}

/// Environment a store runs in; tests swap in a simulated WAL filesystem
/// and a manual clock.
#[derive(Debug, Clone)]
pub struct Env {
    /// Wall clock for TTLs.
    pub clock: Arc<dyn Clock>,
    /// Filesystem under the WAL.
    pub wal_fs: Arc<dyn WalFs>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            clock: Arc::new(SystemClock),
            wal_fs: Arc::new(StdFs),
        }
    }
}

/// A live value as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// Its version: the seq of the write that stored it (for compare-and-set).
    pub version: Seq,
    /// Time left before it expires, ms; `None` = no expiry.
    pub ttl_ms: Option<u64>,
}

/// What a committed write reached locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAck {
    /// The seq (new version) of the write.
    pub seq: Seq,
    /// Whether an fsync covering it completed before the reply.
    pub synced: bool,
}

/// The result of a write that may not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Committed.
    Written(WriteAck),
    /// A condition did not hold; nothing written. `current` is the live version.
    ConditionFailed {
        /// The key's live version, if present.
        current: Option<Seq>,
    },
    /// The key was absent; nothing written.
    NotFound,
    /// Nothing needed writing (persist on a key without expiry).
    Unchanged,
}

/// A key's expiry state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlState {
    /// No such (live) key.
    Missing,
    /// Present, no expiry.
    Persistent,
    /// Present, expiring in this many ms.
    ExpiresInMs(u64),
}

/// One page of a prefix scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// Entries in slot order (slot, then key bytes).
    pub entries: Vec<(Bytes, Entry)>,
    /// Pass back as `cursor` for the next page; `None` when done.
    pub next_cursor: Option<Bytes>,
}

/// Counters and gauges for metrics and `info`.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Last seq applied to both tiers.
    pub applied_seq: Seq,
    /// Seq covered by the last checkpoint.
    pub checkpoint_seq: Seq,
    /// Seconds since the last checkpoint (since open if none).
    pub checkpoint_age_secs: f64,
    /// Memory tier (hits, misses).
    pub memory_hits: u64,
    /// Memory tier misses.
    pub memory_misses: u64,
    /// Disk tier hits (reads that found a live key after a memory miss).
    pub disk_hits: u64,
    /// Disk tier misses.
    pub disk_misses: u64,
    /// Memory tier entries.
    pub memory_entries: u64,
    /// Memory tier weighted bytes.
    pub memory_bytes: u64,
    /// Memory tier budget.
    pub memory_budget_bytes: u64,
    /// WAL bytes on disk.
    pub wal_bytes: u64,
    /// Why writes are refused, if they are.
    pub poisoned: Option<String>,
    /// Keys the warm restart put back into the memory tier since open.
    pub memory_warmed_keys: u64,
}

/// State shared between handles, the commit thread and the checkpointer.
#[derive(Debug)]
pub(crate) struct Status {
    applied: AtomicU64,
    checkpoint_seq: AtomicU64,
    checkpoint_at: Mutex<std::time::Instant>,
    is_poisoned: AtomicBool,
    poison_reason: Mutex<Option<String>>,
    wal: Wal,
    checkpoint_wal_bytes: u64,
    wake: Arc<(Mutex<Wake>, Condvar)>,
}

impl Status {
    pub fn applied(&self) -> Seq {
        Seq(self.applied.load(Ordering::Acquire))
    }

    pub fn publish_applied(&self, seq: Seq) {
        self.applied.store(seq.0, Ordering::Release);
    }

    pub fn poison(&self, reason: String) {
        let mut slot = self.poison_reason.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(reason);
        self.is_poisoned.store(true, Ordering::Release);
    }

    pub fn poisoned(&self) -> Option<String> {
        if !self.is_poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.poison_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn checkpoint_done(&self, covered: Seq) {
        self.checkpoint_seq.store(covered.0, Ordering::Relaxed);
        *self.checkpoint_at.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    /// Wakes the checkpointer once the WAL has grown past its threshold.
    pub fn maybe_request_checkpoint(&self) {
        if self.wal.total_bytes() > self.checkpoint_wal_bytes {
            let (state, cvar) = &*self.wake;
            let mut wake = state.lock().unwrap_or_else(|p| p.into_inner());
            if !wake.requested {
                wake.requested = true;
                cvar.notify_one();
            }
        }
    }
}

struct Shared {
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    memory: Arc<MemoryTier>,
    disk: Arc<DiskTier>,
    disk_counters: TierCounters,
    status: Arc<Status>,
    checkpointer: Arc<Checkpointer>,
    commit_tx: mpsc::Sender<Msg>,
    pending: Arc<Semaphore>,
    metrics: Arc<StoreMetrics>,
    feed: Arc<Feed>,
    /// Keys the warm restart put back into the memory tier.
    warmed: Arc<AtomicU64>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    wal: Wal,
    // NOTE: declared last so it is released after RocksDB has closed.
    _lock: DirLock,
}

impl Shared {
    /// A disk-tier read's answer: expired values dropped, the read counted,
    /// and a live value put in the memory tier (unless its stripe was
    /// written since `token` was taken).
    fn filled(
        &self,
        key: &[u8],
        stored: Option<StoredValue>,
        token: FillToken,
    ) -> Option<StoredValue> {
        let now = self.clock.now_ms();
        let stored = stored.filter(|v| !v.is_expired(now));
        self.disk_counters.record(stored.is_some());
        if let Some(stored) = &stored {
            self.memory.fill(key, stored.clone(), token);
        }
        stored
    }

    /// Stops the threads; with `checkpoint`, leaves RocksDB covering everything.
    fn stop(&self, checkpoint: bool) -> Result<()> {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        if threads.is_empty() {
            return Ok(());
        }
        let _ = self.commit_tx.send(Msg::Shutdown);
        {
            let (state, cvar) = &*self.status.wake;
            state.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
            cvar.notify_all();
        }
        for thread in threads {
            let _ = thread.join();
        }
        if checkpoint {
            self.checkpointer.checkpoint()?;
            if self.config.warm_keys_max > 0
                && let Err(e) = warm::save(
                    &self.config.data_dir,
                    &self.memory,
                    self.config.warm_keys_max,
                )
            {
                tracing::warn!(error = %e, "cannot save the hot-key list");
            }
        }
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // No checkpoint: a plain drop must look like a crash (the WAL has it all).
        let _ = self.stop(false);
    }
}

/// The tiered store. Cheap to clone; all methods take `&self`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.config.data_dir)
            .finish()
    }
}

/// What opening found and did (for logs and the operator tools).
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Seq RocksDB had applied before replay.
    pub disk_applied: Seq,
    /// WAL records replayed into RocksDB.
    pub replayed: u64,
    /// WAL bytes those records took.
    pub replayed_bytes: u64,
    /// Last seq after recovery.
    pub last_seq: Seq,
    /// The WAL's own findings (segments, torn tail).
    pub wal: crate::wal::RecoveryReport,
    /// An unfinished full-sync install: the data is partial until a primary
    /// completes it.
    pub install: Option<InstallMarker>,
}

/// What `open_with` has once recovery is done: the directory held, RocksDB
/// caught up with the WAL, and the writer ready to append after it.
struct Recovery {
    lock: DirLock,
    disk: Arc<DiskTier>,
    wal: Wal,
    writer: crate::wal::WalWriter,
    report: OpenReport,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir` with the real clock and filesystem.
    pub fn open(config: StoreConfig) -> Result<Store> {
        Store::open_with(config, Env::default()).map(|(store, _)| store)
    }

    /// Opens with an explicit environment and returns what recovery did.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process holds the directory, WAL
    /// corruption before its tail, RocksDB failures, bad config.
    pub fn open_with(config: StoreConfig, env: Env) -> Result<(Store, OpenReport)> {
        config.validate()?;
        let Recovery {
            lock,
            disk,
            wal,
            writer,
            report,
        } = Store::recover(&config, &env)?;
        let memory = Arc::new(MemoryTier::new(
            config.memory_budget_bytes,
            env.clock.clone(),
        ));
        let metrics = Arc::new(StoreMetrics::default());
        let durable = wal
            .durable_seq()
            .unwrap_or(Seq::ZERO)
            .max(report.disk_applied);
        let feed = Arc::new(Feed::new(config.repl_feed_bytes, report.last_seq, durable));
        let status = Arc::new(Status {
            applied: AtomicU64::new(report.last_seq.0),
            checkpoint_seq: AtomicU64::new(report.disk_applied.0),
            checkpoint_at: Mutex::new(std::time::Instant::now()),
            is_poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(None),
            wal: wal.clone(),
            checkpoint_wal_bytes: config.checkpoint_wal_bytes,
            wake: Arc::new((Mutex::new(Wake::default()), Condvar::new())),
        });
        let checkpointer = Arc::new(Checkpointer {
            disk: disk.clone(),
            wal: wal.clone(),
            status: status.clone(),
            holds: Arc::new(Mutex::new(Holds::default())),
            running: Mutex::new(()),
        });
        let (commit_tx, rx) = mpsc::channel();
        let mut shared = Shared {
            pending: Arc::new(Semaphore::new(config.max_pending_writes)),
            metrics,
            feed,
            warmed: Arc::new(AtomicU64::new(0)),
            config,
            clock: env.clock,
            memory,
            disk,
            disk_counters: TierCounters::default(),
            status,
            checkpointer,
            commit_tx,
            // Filled below: a failed spawn drops `shared` with no thread to stop.
            threads: Mutex::default(),
            wal,
            _lock: lock,
        };
        shared.threads = Mutex::new(Store::start_threads(&shared, rx, writer, report.last_seq)?);
        let inner = Arc::new(shared);
        Ok((Store { inner }, report))
    }

    /// Locks the data directory, then brings RocksDB up to the end of the WAL.
    fn recover(config: &StoreConfig, env: &Env) -> Result<Recovery> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let lock = DirLock::acquire(dir)?;
        upgrade::check_not_interrupted(dir)?;
        let disk = Arc::new(DiskTier::open(
            &dir.join("db"),
            &config.disk,
            env.clock.clone(),
        )?);
        let disk_applied = disk.applied_seq()?;
        let install = disk.install_marker()?;
        let recovered = Wal::open(config.wal_config(), env.wal_fs.clone())?;
        let (wal, mut writer) = (recovered.wal, recovered.writer);
        if let Some(first) = wal.first_seq()
            && first > disk_applied.next()
        {
            return Err(StoreError::WalGap {
                wal_first: first,
                applied: disk_applied,
            });
        }
        let (replayed, replayed_bytes) = replay(&disk, &wal, disk_applied)?;
        if wal.last_seq().is_some_and(|last| last < disk_applied) {
            // RocksDB was flushed past what the WAL kept (a power loss under
            // `never`/`interval`): its records are all covered; continue after
            // RocksDB's seq rather than reuse seqs.
            writer.restart_at(disk_applied.next())?;
        }
        let last_seq = wal.last_seq().unwrap_or(Seq::ZERO).max(disk_applied);
        tracing::info!(
            dir = %dir.display(), %disk_applied, replayed, replayed_bytes, %last_seq,
            "store opened"
        );
        let report = OpenReport {
            disk_applied,
            replayed,
            replayed_bytes,
            last_seq,
            wal: recovered.report,
            install,
        };
        Ok(Recovery {
            lock,
            disk,
            wal,
            writer,
            report,
        })
    }

    /// Starts the commit thread, the checkpointer and, when configured, the
    /// warm restart, on `shared`'s tiers.
    fn start_threads(
        shared: &Shared,
        rx: mpsc::Receiver<Msg>,
        writer: crate::wal::WalWriter,
        last_seq: Seq,
    ) -> Result<Vec<JoinHandle<()>>> {
        let committer = Committer {
            rx,
            writer,
            disk: shared.disk.clone(),
            memory: shared.memory.clone(),
            clock: shared.clock.clone(),
            status: shared.status.clone(),
            metrics: shared.metrics.clone(),
            feed: shared.feed.clone(),
            last_seq,
            sync_interval: match shared.config.fsync {
                FsyncPolicy::Interval(period) => Some(period),
                _ => None,
            },
        };
        let commit = Store::spawn_thread("strata-commit", move || committer.run())?;
        let mut threads = vec![commit];
        let interval = (shared.config.checkpoint_interval_ms > 0)
            .then(|| Duration::from_millis(shared.config.checkpoint_interval_ms));
        let periodic = shared.checkpointer.clone();
        let checkpoint_wake = shared.status.wake.clone();
        threads.push(Store::spawn_thread("strata-checkpoint", move || {
            periodic.run(interval, &checkpoint_wake)
        })?);
        if shared.config.warm_keys_max > 0 {
            threads.push(Store::start_warmer(shared)?);
        }
        Ok(threads)
    }

    /// Off the open path: the node serves while its memory tier warms.
    fn start_warmer(shared: &Shared) -> Result<JoinHandle<()>> {
        let config = &shared.config;
        let (dir, disk, memory, clock) = (
            config.data_dir.clone(),
            shared.disk.clone(),
            shared.memory.clone(),
            shared.clock.clone(),
        );
        let (wake, warmed, max_keys) = (
            shared.status.wake.clone(),
            shared.warmed.clone(),
            config.warm_keys_max,
        );
        let interval = (config.warm_save_interval_ms > 0)
            .then(|| Duration::from_millis(config.warm_save_interval_ms));
        Store::spawn_thread("strata-warm", move || {
            warm::Warmer {
                dir: &dir,
                disk: &disk,
                memory: &memory,
                clock: &*clock,
                wake: &wake,
                warmed: &warmed,
                max_keys,
                interval,
            }
            .run()
        })
    }

    fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|source| StoreError::Io {
                path: PathBuf::from(name),
                source,
            })
    }

    /// Stops the store cleanly: finishes queued writes, syncs the WAL and
    /// checkpoints, so the next open replays nothing.
    pub async fn close(self) -> Result<()> {
        let inner = self.inner.clone();
        drop(self);
        tokio::task::spawn_blocking(move || inner.stop(true))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    // The limits' rules are the protocol's (one place: proto/limits.rs);
    // the store applies them to its own API too, for callers other than
    // the server. The empty key is a valid key (wire-protocol.md §8).
    /// A client's key: within the limits and not internal.
    fn check_key(&self, key: &[u8]) -> Result<()> {
        if keys::is_internal(key) {
            return Err(StoreError::ReservedKey);
        }
        self.check_key_len(key)
    }

    fn check_key_len(&self, key: &[u8]) -> Result<()> {
        let max = u32_of(self.inner.config.limits.max_key_bytes);
        Ok(crate::proto::check_key_len(key.len(), max)?)
    }

    /// A key as the store keeps it: a client's key within `max_key_bytes`,
    /// or an element key whose owner and element part each are.
    fn check_stored_key(&self, key: &[u8]) -> Result<()> {
        let Some((owner, _)) = keys::collection_of(key) else {
            return self.check_key_len(key);
        };
        self.check_key_len(owner)?;
        let element_at = keys::element_prefix(owner, 0).len();
        self.check_key_len(&key[element_at..])
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = u32_of(self.inner.config.limits.max_value_bytes);
        Ok(crate::proto::check_value_len(value.len(), max)?)
    }

    fn check_batch(&self, count: usize) -> Result<()> {
        let max = u32_of(self.inner.config.limits.max_batch_keys);
        Ok(crate::proto::check_key_count(count, max)?)
    }

    fn check_ttl(ttl: Option<Duration>) -> Result<Expiry> {
        match ttl {
            None => Ok(Expiry::Never),
            Some(ttl) if ttl.is_zero() => Err(StoreError::InvalidArgument("ttl must be above 0")),
            Some(ttl) => Ok(Expiry::InMs(
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            )),
        }
    }

    /// A deadline as a write takes it (the protocol's rule: not 0). One
    /// already past is allowed: the key is written expired.
    fn check_deadline(at_ms: u64) -> Result<Expiry> {
        crate::proto::check_deadline(at_ms)?;
        Ok(Expiry::AtMs(at_ms))
    }

    fn entry(&self, value: StoredValue) -> Entry {
        let now = self.inner.clock.now_ms();
        Entry {
            value: value.value,
            version: value.seq,
            ttl_ms: (value.expires_at_ms != 0).then(|| value.expires_at_ms.saturating_sub(now)),
        }
    }

    /// The live value of `key`, with its version and remaining TTL;
    /// `WrongType` if it holds something else than a string.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        match self.lookup(key).await? {
            Some(value) if value.kind != ValueKind::String => Err(StoreError::WrongType),
            found => Ok(found.map(|value| self.entry(value))),
        }
    }

    /// What kind of value `key` holds, if it is live.
    pub async fn kind_of(&self, key: &[u8]) -> Result<Option<ValueKind>> {
        Ok(self.lookup(key).await?.map(|value| value.kind))
    }

    /// The live stored value of `key`, of any kind.
    async fn lookup(&self, key: &[u8]) -> Result<Option<StoredValue>> {
        self.check_key(key)?;
        let started = std::time::Instant::now();
        match self.inner.memory.get(key) {
            Lookup::Hit(value) => {
                crate::metrics::observe(&self.inner.metrics.read_memory, started.elapsed());
                return Ok(Some(value));
            }
            Lookup::Expired => return Ok(None),
            Lookup::Miss => {}
        }
        // IMPORTANT: take the fill token before reading the disk tier (I3).
        let token = self.inner.memory.fill_token(key);
        // What RocksDB can answer from memory is answered here: a handoff to
        // the blocking pool costs more than such a read. Only a read that
        // needs a file goes there.
        let found = match self.inner.disk.get_cached(key)? {
            Some(stored) => {
                // It never waits, so it spends the task's cooperative budget
                // instead: a loop of such reads still lets other tasks run.
                tokio::task::consume_budget().await;
                self.inner.filled(key, stored, token)
            }
            None => {
                let inner = self.inner.clone();
                let key = Bytes::copy_from_slice(key);
                tokio::task::spawn_blocking(move || -> Result<Option<StoredValue>> {
                    let stored = inner.disk.get(&key)?;
                    Ok(inner.filled(&key, stored, token))
                })
                .await
                .map_err(|_| StoreError::Closed)??
            }
        };
        crate::metrics::observe(&self.inner.metrics.read_disk, started.elapsed());
        Ok(found)
    }

    /// Reads several keys; each answer is in the position of its key. As
    /// [`Self::get`] for each, except that a key holding another kind than
    /// a string reads as absent (as Redis's `MGET` answers), and that the
    /// keys that need a file are read together: one handoff to the
    /// blocking pool and one RocksDB `MultiGet` for all of them.
    pub async fn get_many(&self, keys: &[Bytes]) -> Result<Vec<Option<Entry>>> {
        Ok(self
            .lookup_many(keys)
            .await?
            .into_iter()
            .map(|found| {
                found
                    .filter(|value| value.kind == ValueKind::String)
                    .map(|value| self.entry(value))
            })
            .collect())
    }

    /// [`Self::lookup`] for several keys, as [`Self::get_many`] reads them.
    async fn lookup_many(&self, keys: &[Bytes]) -> Result<Vec<Option<StoredValue>>> {
        self.check_batch(keys.len())?;
        for key in keys {
            self.check_key(key)?;
        }
        let started = std::time::Instant::now();
        let mut out: Vec<Option<StoredValue>> = vec![None; keys.len()];
        // Keys only a file can answer: position, key, fill token.
        let mut misses = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match self.inner.memory.get(key) {
                Lookup::Hit(value) => out[i] = Some(value),
                Lookup::Expired => {}
                Lookup::Miss => {
                    // IMPORTANT: take the fill token before reading the disk tier (I3).
                    let token = self.inner.memory.fill_token(key);
                    match self.inner.disk.get_cached(key)? {
                        Some(stored) => {
                            out[i] = self.inner.filled(key, stored, token);
                        }
                        None => misses.push((i, key.clone(), token)),
                    }
                }
            }
        }
        // The inline reads never wait: they spend the task's budget instead.
        tokio::task::consume_budget().await;
        if misses.is_empty() {
            crate::metrics::observe(&self.inner.metrics.read_memory, started.elapsed());
            return Ok(out);
        }
        let inner = self.inner.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<Vec<_>> {
            let keys: Vec<Bytes> = misses.iter().map(|(_, key, _)| key.clone()).collect();
            let stored = inner.disk.get_many(&keys)?;
            Ok(misses
                .into_iter()
                .zip(stored)
                .map(|((i, key, token), stored)| (i, inner.filled(&key, stored, token)))
                .collect())
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        for (i, value) in found {
            out[i] = value;
        }
        crate::metrics::observe(&self.inner.metrics.read_disk, started.elapsed());
        Ok(out)
    }

    /// How many of `keys` are live (a key named twice counts twice, as in Redis).
    pub async fn exists(&self, keys: &[Bytes]) -> Result<u64> {
        let found = self.lookup_many(keys).await?;
        Ok(found.iter().filter(|e| e.is_some()).count() as u64)
    }

    /// When `key` expires, as the stored format has it: `None` when there
    /// is no live key, `Some(0)` when it does not expire, else the Unix
    /// time in ms.
    pub async fn deadline(&self, key: &[u8]) -> Result<Option<u64>> {
        Ok(self.lookup(key).await?.map(|value| value.expires_at_ms))
    }

    /// The expiry state of `key`.
    pub async fn ttl(&self, key: &[u8]) -> Result<TtlState> {
        Ok(
            match self.lookup(key).await?.map(|value| self.entry(value)) {
                None => TtlState::Missing,
                Some(Entry { ttl_ms: None, .. }) => TtlState::Persistent,
                Some(Entry {
                    ttl_ms: Some(ms), ..
                }) => TtlState::ExpiresInMs(ms),
            },
        )
    }

    async fn submit(&self, op: WriteOp) -> Result<(Applied, bool)> {
        // Backpressure: a full queue sheds the write (nothing done) rather
        // than queueing without bound. The permit travels with the write
        // and is released by the commit thread once it is done with it, so
        // a caller that stops waiting (a request timeout) does not free
        // its place early.
        let permit = match self.inner.pending.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                return Err(StoreError::Overloaded {
                    pending: self.inner.config.max_pending_writes,
                });
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(StoreError::Closed),
        };
        let (reply, rx) = oneshot::channel();
        self.inner
            .commit_tx
            .send(Msg::Write { op, reply, permit })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn outcome((applied, synced): (Applied, bool)) -> WriteOutcome {
        match applied {
            Applied::Written(seq)
            | Applied::Int(_, seq)
            | Applied::Len(_, seq)
            | Applied::Popped(_, Some(seq))
            | Applied::Counted(_, Some(seq))
            | Applied::Score(_, Some(seq))
            | Applied::Scored(_, Some(seq)) => WriteOutcome::Written(WriteAck { seq, synced }),
            Applied::Popped(_, None)
            | Applied::Counted(_, None)
            | Applied::Score(_, None)
            | Applied::Scored(_, None) => WriteOutcome::Unchanged,
            Applied::ConditionFailed { current } => WriteOutcome::ConditionFailed { current },
            Applied::NotFound => WriteOutcome::NotFound,
            Applied::Unchanged => WriteOutcome::Unchanged,
        }
    }

    /// Stores `value` under `key` if `condition` holds, expiring after `ttl`.
    pub async fn set(
        &self,
        key: Bytes,
        value: Bytes,
        ttl: Option<Duration>,
        condition: Condition,
    ) -> Result<WriteOutcome> {
        let expiry = Self::check_ttl(ttl)?;
        self.set_expiring(key, value, expiry, condition).await
    }

    /// Stores `value` under `key` if `condition` holds, expiring at the
    /// Unix time `at_ms` (already past: written expired).
    pub async fn set_at(
        &self,
        key: Bytes,
        value: Bytes,
        at_ms: u64,
        condition: Condition,
    ) -> Result<WriteOutcome> {
        let expiry = Self::check_deadline(at_ms)?;
        self.set_expiring(key, value, expiry, condition).await
    }

    async fn set_expiring(
        &self,
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
        condition: Condition,
    ) -> Result<WriteOutcome> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        let op = WriteOp::Set {
            key,
            value,
            expiry,
            condition,
        };
        self.submit(op).await.map(Self::outcome)
    }

    /// Stores every entry atomically: all of them or, on error, none.
    pub async fn set_many(
        &self,
        entries: Vec<(Bytes, Bytes, Option<Duration>)>,
    ) -> Result<WriteAck> {
        self.check_batch(entries.len())?;
        if entries.is_empty() {
            return Err(StoreError::InvalidArgument(
                "set_many needs at least one entry",
            ));
        }
        let mut resolved = Vec::with_capacity(entries.len());
        for (key, value, ttl) in entries {
            self.check_key(&key)?;
            self.check_value(&value)?;
            resolved.push((key, value, Self::check_ttl(ttl)?));
        }
        match Self::outcome(self.submit(WriteOp::SetMany { entries: resolved }).await?) {
            WriteOutcome::Written(ack) => Ok(ack),
            other => unreachable!("set_many always writes, got {other:?}"),
        }
    }

    /// Up to `limit` stored keys of the slots of `ranges` after `after`
    /// (see [`DiskTier::keys_in_slots`]).
    pub async fn keys_in_slots(
        &self,
        ranges: Vec<(u16, u16)>,
        after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<Bytes>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.disk.keys_in_slots(&ranges, after.as_deref(), limit)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Writes `mutations` as they are, in one record, bypassing the
    /// conditions and the TTL bounds a client's write meets (its keys and
    /// values are still checked): keys copied from the shard that owned
    /// their slot, and deletes of keys this shard gave away. Replicas get
    /// them through the WAL like any write.
    pub async fn import(&self, mutations: Vec<Mutation>) -> Result<WriteAck> {
        self.check_batch(mutations.len())?;
        if mutations.is_empty() {
            return Err(StoreError::InvalidArgument("an import needs a mutation"));
        }
        // Internal keys are allowed: a collection's elements move with it.
        for mutation in &mutations {
            match mutation {
                Mutation::Put { key, value, .. } | Mutation::PutTyped { key, value, .. } => {
                    self.check_stored_key(key)?;
                    self.check_value(value)?;
                }
                Mutation::Delete { key } => self.check_stored_key(key)?,
            }
        }
        match Self::outcome(self.submit(WriteOp::Import { mutations }).await?) {
            WriteOutcome::Written(ack) => Ok(ack),
            other => unreachable!("an import always writes, got {other:?}"),
        }
    }

    /// Deletes the elements of collections that are gone (a list deleted
    /// with more elements than its delete's record takes, replaced by a
    /// string, or expired), in records of at most `max_batch_keys`
    /// deletes: one pass over the internal keys, which costs a seek per
    /// slot and per live collection. Returns how many it deleted. For a
    /// primary only: the deletes are writes, which replicas get through
    /// the WAL like any other.
    /// `may_write` is asked before each record: a node that stopped being
    /// the one that writes (demoted, its lease lost) stops there.
    pub async fn reclaim_elements(&self, may_write: impl Fn() -> bool) -> Result<u64> {
        let limit = self.inner.config.limits.max_batch_keys.max(1);
        let (mut from, mut deleted) = (None::<Vec<u8>>, 0);
        loop {
            let inner = self.inner.clone();
            let (found, next) = tokio::task::spawn_blocking(move || {
                let now = inner.clock.now_ms();
                inner.disk.orphan_elements(from.as_deref(), limit, now)
            })
            .await
            .map_err(|_| StoreError::Closed)??;
            if !found.is_empty() {
                if !may_write() {
                    return Ok(deleted);
                }
                // Judged again by the commit thread, as of its batch.
                let elements = WriteOp::Reclaim { elements: found };
                let (n, _) = self.counted(elements).await?;
                self.inner.metrics.reclaimed_elements.inc_by(n);
                deleted += n;
            }
            match next {
                Some(next) => from = Some(next),
                None => return Ok(deleted),
            }
        }
    }

    /// Deletes `key` (if `condition` holds: `Always` or `IfVersion`; the
    /// others are refused whether or not the key exists).
    pub async fn delete(&self, key: Bytes, condition: Condition) -> Result<WriteOutcome> {
        self.check_key(&key)?;
        if matches!(condition, Condition::IfAbsent | Condition::IfPresent) {
            return Err(StoreError::InvalidArgument(
                "delete takes only the conditions Always and IfVersion",
            ));
        }
        self.submit(WriteOp::Delete { key, condition })
            .await
            .map(Self::outcome)
    }

    /// Sets `key` to expire `ttl` from now. A zero `ttl` is refused, as for
    /// `set`: deleting is `delete`'s job.
    pub async fn expire(&self, key: Bytes, ttl: Duration) -> Result<WriteOutcome> {
        let expiry = Self::check_ttl(Some(ttl))?;
        self.set_expiry(key, expiry).await
    }

    /// Sets `key` to expire at the Unix time `at_ms`; one already past
    /// leaves the key expired (gone to reads at once).
    pub async fn expire_at(&self, key: Bytes, at_ms: u64) -> Result<WriteOutcome> {
        let expiry = Self::check_deadline(at_ms)?;
        self.set_expiry(key, expiry).await
    }

    /// Removes `key`'s expiry.
    pub async fn persist(&self, key: Bytes) -> Result<WriteOutcome> {
        self.set_expiry(key, Expiry::Never).await
    }

    async fn set_expiry(&self, key: Bytes, expiry: Expiry) -> Result<WriteOutcome> {
        self.check_key(&key)?;
        self.submit(WriteOp::Expire { key, expiry })
            .await
            .map(Self::outcome)
    }

    /// Adds `delta` to the decimal integer stored at `key` (absent = 0),
    /// keeping its expiry; returns the new value.
    pub async fn incr(&self, key: Bytes, delta: i64) -> Result<(i64, WriteAck)> {
        self.check_key(&key)?;
        match self.submit(WriteOp::Incr { key, delta }).await? {
            (Applied::Int(value, seq), synced) => Ok((value, WriteAck { seq, synced })),
            other => unreachable!("incr always writes or fails, got {other:?}"),
        }
    }

    /// Pushes `values`, in order, at `end` of the list at `key`, creating
    /// it unless `only_if_exists`: the list's new length, or `None` when
    /// `only_if_exists` found no list. `WrongType` on another kind.
    pub async fn push(
        &self,
        key: Bytes,
        end: End,
        values: Vec<Bytes>,
        only_if_exists: bool,
    ) -> Result<Option<(u64, WriteAck)>> {
        self.check_key(&key)?;
        self.check_batch(values.len())?;
        if values.is_empty() {
            return Err(StoreError::InvalidArgument(
                "a push needs at least one value",
            ));
        }
        for value in &values {
            self.check_value(value)?;
        }
        let op = WriteOp::Push {
            key,
            end,
            values,
            only_if_exists,
        };
        match self.submit(op).await? {
            (Applied::Len(len, seq), synced) => Ok(Some((len, WriteAck { seq, synced }))),
            (Applied::NotFound, _) => Ok(None),
            other => unreachable!("a push writes or finds no list, got {other:?}"),
        }
    }

    /// Pops up to `count` values from `end` of the list at `key` (deleting
    /// it when it empties): `None` if there is no list; the write's ack
    /// when it took any. `WrongType` on another kind.
    pub async fn pop(
        &self,
        key: Bytes,
        end: End,
        count: u64,
    ) -> Result<Option<(Vec<Bytes>, Option<WriteAck>)>> {
        self.check_key(&key)?;
        self.check_batch(usize::try_from(count).unwrap_or(usize::MAX))?;
        let max_bytes = self.pop_bytes();
        self.popped(WriteOp::Pop {
            key,
            end,
            count,
            max_bytes,
        })
        .await
    }

    /// What one pop may take: a reply carrying it fits a frame.
    fn pop_bytes(&self) -> u64 {
        self.inner.config.limits.max_value_bytes as u64
    }

    /// A pop's outcome: what it took and its ack, or `None` for no collection.
    async fn popped(&self, op: WriteOp) -> Result<Option<(Vec<Bytes>, Option<WriteAck>)>> {
        match self.submit(op).await? {
            (Applied::Popped(taken, seq), synced) => {
                Ok(Some((taken, seq.map(|seq| WriteAck { seq, synced }))))
            }
            (Applied::NotFound, _) => Ok(None),
            other => unreachable!("a pop takes some or finds nothing, got {other:?}"),
        }
    }

    /// The values at positions `start..=stop` of the list at `key`, with
    /// Redis's index rules (negative counts from the right end; clamped);
    /// empty for no list, and at most `max_keys_per_request` values from
    /// `start` (what the protocol promises a `ListRange` reply holds).
    pub async fn list_range(&self, key: Bytes, start: i64, stop: i64) -> Result<Vec<Bytes>> {
        let max = self.inner.config.limits.max_keys_per_request() as u64;
        let found = self
            .read_list(key, move |meta| {
                meta.range(start, stop)
                    .map(|(first, last)| (first, last.min(first + max.max(1) - 1)))
            })
            .await?;
        Ok(found.map(|(_, values)| values).unwrap_or_default())
    }

    /// The length of the list at `key` (0 for no list).
    pub async fn list_len(&self, key: Bytes) -> Result<u64> {
        let found = self.read_list(key, |_| None).await?;
        Ok(found.map_or(0, |(meta, _)| meta.len))
    }

    /// The value at `index` of the list at `key` (negative from the right end).
    pub async fn list_index(&self, key: Bytes, index: i64) -> Result<Option<Bytes>> {
        let found = self
            .read_list(key, move |meta| meta.position(index).map(|pos| (pos, pos)))
            .await?;
        Ok(found.and_then(|(_, values)| values.into_iter().next()))
    }

    /// Adds `members` (name and value; a set's values are empty) to the set
    /// or hash of `kind` at `key`, creating it; a member already there
    /// takes its new value unless `only_new`. Returns how many members are
    /// new, with the write's ack when anything changed. `WrongType` on
    /// another kind. Names are bounded like keys, values like values.
    pub async fn add_members(
        &self,
        key: Bytes,
        kind: ValueKind,
        members: Vec<(Bytes, Bytes)>,
        only_new: bool,
    ) -> Result<(u64, Option<WriteAck>)> {
        self.check_members(
            &key,
            ValueKind::SETS_AND_HASHES,
            kind,
            members.iter().map(|(m, _)| m),
        )?;
        if members.is_empty() {
            return Err(StoreError::InvalidArgument(
                "an add needs at least one member",
            ));
        }
        for (_, value) in &members {
            if kind == ValueKind::Set && !value.is_empty() {
                return Err(StoreError::InvalidArgument(
                    "a set's members carry no value",
                ));
            }
            self.check_value(value)?;
        }
        let op = WriteOp::AddMembers {
            key,
            kind,
            members,
            only_new,
        };
        self.counted(op).await
    }

    /// Removes `members` from the set, hash or sorted set of `kind` at `key` (deleting
    /// it when it empties): how many were there, with the write's ack when
    /// any was.
    pub async fn remove_members(
        &self,
        key: Bytes,
        kind: ValueKind,
        members: Vec<Bytes>,
    ) -> Result<(u64, Option<WriteAck>)> {
        self.check_members(&key, ValueKind::MEMBER_KINDS, kind, members.iter())?;
        self.counted(WriteOp::RemoveMembers { key, kind, members })
            .await
    }

    async fn counted(&self, op: WriteOp) -> Result<(u64, Option<WriteAck>)> {
        match self.submit(op).await? {
            (Applied::Counted(n, seq), synced) => Ok((n, seq.map(|seq| WriteAck { seq, synced }))),
            other => unreachable!("an add, remove or reclaim counts, got {other:?}"),
        }
    }

    /// Takes up to `count` members of the set at `key`, the first in byte
    /// order (deleting it when it empties): `None` if there is no set; the
    /// write's ack when it took any.
    pub async fn pop_members(
        &self,
        key: Bytes,
        count: u64,
    ) -> Result<Option<(Vec<Bytes>, Option<WriteAck>)>> {
        self.check_key(&key)?;
        self.check_batch(usize::try_from(count).unwrap_or(usize::MAX))?;
        let max_bytes = self.pop_bytes();
        self.popped(WriteOp::PopMembers {
            key,
            count,
            max_bytes,
        })
        .await
    }

    /// Adds `delta` to the decimal integer in `field` of the hash at `key`
    /// (a missing field or hash counts as 0): the new value.
    /// `NotAnInteger`, `Overflow` and `WrongType` as for [`incr`](Self::incr).
    pub async fn incr_field(
        &self,
        key: Bytes,
        field: Bytes,
        delta: i64,
    ) -> Result<(i64, WriteAck)> {
        self.check_members(
            &key,
            ValueKind::SETS_AND_HASHES,
            ValueKind::Hash,
            std::iter::once(&field),
        )?;
        match self
            .submit(WriteOp::IncrField { key, field, delta })
            .await?
        {
            (Applied::Int(value, seq), synced) => Ok((value, WriteAck { seq, synced })),
            other => unreachable!("a field increment writes, got {other:?}"),
        }
    }

    /// The values of `members` of the set or hash of `kind` at `key` (a
    /// set member's is empty), in order; `None` for a member it lacks, and
    /// for every one when there is no such collection.
    pub async fn member_values(
        &self,
        key: Bytes,
        kind: ValueKind,
        members: Vec<Bytes>,
    ) -> Result<Vec<Option<Bytes>>> {
        self.check_members(&key, ValueKind::SETS_AND_HASHES, kind, members.iter())?;
        let inner = self.inner.clone();
        let n = members.len();
        let found = tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_ms();
            inner.disk.member_values(&key, kind, now, &members)
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        Ok(found.map_or_else(|| vec![None; n], |(_, values)| values))
    }

    /// Up to `limit` members (name and value) of the set or hash of `kind`
    /// at `key` in byte order after `after`, at most `max_batch_keys`;
    /// empty for no collection.
    pub async fn member_page(
        &self,
        key: Bytes,
        kind: ValueKind,
        after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.check_members(&key, ValueKind::SETS_AND_HASHES, kind, after.iter())?;
        let limit = limit.clamp(1, self.inner.config.limits.max_batch_keys.max(1));
        let inner = self.inner.clone();
        let found = tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_ms();
            inner
                .disk
                .member_page(&key, kind, now, after.as_deref(), limit)
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        Ok(found.unwrap_or_default())
    }

    /// How many members the set, hash or sorted set of `kind` at `key` holds (0 for none).
    pub async fn member_count(&self, key: Bytes, kind: ValueKind) -> Result<u64> {
        self.check_members(&key, ValueKind::MEMBER_KINDS, kind, std::iter::empty())?;
        let inner = self.inner.clone();
        let found = tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_ms();
            inner.disk.member_values(&key, kind, now, &[])
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        Ok(found.map_or(0, |(meta, _)| meta.len))
    }

    /// The checks of a member request: its key, its kind (one of `kinds`),
    /// and its member names (bounded like keys) and their number.
    fn check_members<'a>(
        &self,
        key: &[u8],
        kinds: &[ValueKind],
        kind: ValueKind,
        names: impl ExactSizeIterator<Item = &'a Bytes>,
    ) -> Result<()> {
        self.check_key(key)?;
        if !kinds.contains(&kind) {
            return Err(StoreError::InvalidArgument(
                "this member operation does not work on that kind of collection",
            ));
        }
        self.check_batch(names.len())?;
        for name in names {
            self.check_key_len(name)?;
        }
        Ok(())
    }

    async fn read_list(
        &self,
        key: Bytes,
        span: impl FnOnce(&list::ListMeta) -> Option<(u64, u64)> + Send + 'static,
    ) -> Result<Option<(list::ListMeta, Vec<Bytes>)>> {
        self.check_key(&key)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_ms();
            inner.disk.read_list(&key, now, span)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Live entries whose keys start with `prefix`, in slot order, after
    /// `cursor` (the previous page's `next_cursor`), at most `limit`.
    pub async fn scan(
        &self,
        prefix: Bytes,
        cursor: Option<Bytes>,
        limit: usize,
    ) -> Result<ScanPage> {
        self.scan_page(prefix, cursor, ScanLimit::entries(limit), None)
            .await
    }

    /// [`scan`](Self::scan) with a byte bound as well: the page is cut
    /// short (with a `next_cursor`) before it would hold more than
    /// `limit.bytes` of entries, so that it fits a response frame; with
    /// `only`, keys of other slots are passed over.
    pub async fn scan_page(
        &self,
        prefix: Bytes,
        cursor: Option<Bytes>,
        limit: ScanLimit,
        only: Option<SlotSet>,
    ) -> Result<ScanPage> {
        let (found, next_cursor) = self.scan_raw(prefix, cursor, limit, only).await?;
        // Collections are left out: a page carries values, and theirs are
        // metadata (a page may come back empty, with a cursor, for it).
        let entries = found
            .into_iter()
            .filter(|(_, v)| v.kind == ValueKind::String)
            .map(|(key, v)| (key, self.entry(v)))
            .collect();
        Ok(ScanPage {
            entries,
            next_cursor,
        })
    }

    /// [`scan_page`](Self::scan_page) for keys of every kind (or only of
    /// `kind`), with their kinds and without values.
    pub async fn scan_keys(
        &self,
        prefix: Bytes,
        cursor: Option<Bytes>,
        limit: ScanLimit,
        only: Option<SlotSet>,
        kind: Option<ValueKind>,
    ) -> Result<crate::proto::KeyPage> {
        let (found, next_cursor) = self.scan_raw(prefix, cursor, limit, only).await?;
        let keys = found
            .into_iter()
            .filter(|(_, v)| kind.is_none_or(|k| k == v.kind))
            .map(|(key, v)| (key, v.kind))
            .collect();
        Ok(crate::proto::KeyPage { keys, next_cursor })
    }

    async fn scan_raw(
        &self,
        prefix: Bytes,
        cursor: Option<Bytes>,
        limit: ScanLimit,
        only: Option<SlotSet>,
    ) -> Result<(disk::ScanEntries, Option<Bytes>)> {
        self.check_key(&prefix)?;
        if limit.entries == 0 {
            return Err(StoreError::InvalidArgument(
                "a scan page needs room for an entry",
            ));
        }
        let max = u32_of(self.inner.config.limits.max_scan_limit);
        crate::proto::check_key_count(limit.entries, max)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_ms();
            let only = only.as_ref();
            inner
                .disk
                .scan(&prefix, cursor.as_deref(), limit, only, now)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Flushes RocksDB and deletes the WAL segments it now covers.
    pub async fn checkpoint(&self) -> Result<CheckpointReport> {
        let checkpointer = self.inner.checkpointer.clone();
        tokio::task::spawn_blocking(move || checkpointer.checkpoint())
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// fsyncs the WAL now (whatever the policy).
    pub async fn sync(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commit_tx
            .send(Msg::Sync { reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Keeps WAL records from `seq` on while the returned guard lives
    /// (replication holds what a replica still needs).
    pub fn hold_wal(&self, seq: Seq) -> WalHold {
        WalHold::new(&self.inner.checkpointer.holds, seq)
    }

    /// Watches the applied seq: changes after every commit batch (and
    /// replicated batch) is in both tiers.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<Seq> {
        self.inner.feed.subscribe()
    }

    /// Seq of the newest record whose WAL fsync completed.
    pub fn durable_seq(&self) -> Seq {
        self.inner.wal.durable_seq().unwrap_or(Seq::ZERO)
    }

    /// Watches the durable seq: changes after every WAL fsync.
    pub fn watch_durable(&self) -> tokio::sync::watch::Receiver<Seq> {
        self.inner.feed.subscribe_durable()
    }

    /// Committed records from `from` on (up to about `max_bytes`), for
    /// replication: from memory while recent, else read back from the WAL.
    ///
    /// # Errors
    /// [`StoreError::NotRetained`] when the WAL no longer holds `from`.
    pub async fn records_from(&self, from: Seq, max_bytes: u64) -> Result<Vec<WalRecord>> {
        // The feed only caches the WAL's tail: what retention let go of is
        // gone, so every node behind it is treated alike (full sync).
        let retained = self
            .inner
            .wal
            .first_seq()
            .is_some_and(|first| first <= from);
        if retained && let Some(records) = self.inner.feed.read(from, max_bytes) {
            return Ok(records);
        }
        let wal = self.inner.wal.clone();
        tokio::task::spawn_blocking(move || {
            let not_retained = || StoreError::NotRetained {
                from,
                first: wal.first_seq(),
            };
            if wal.first_seq().is_none_or(|first| first > from) {
                return Err(not_retained());
            }
            let mut out = Vec::new();
            let mut bytes = 0u64;
            for record in wal.read_from(from)? {
                let record = match record {
                    Ok(record) => record,
                    Err(crate::wal::WalError::SegmentRemoved { .. }) => return Err(not_retained()),
                    Err(e) => return Err(e.into()),
                };
                if out.is_empty() && record.seq != from {
                    return Err(not_retained());
                }
                bytes += record
                    .mutations
                    .iter()
                    .map(|m| m.data_len() + 16)
                    .sum::<u64>();
                out.push(record);
                if bytes >= max_bytes {
                    break;
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// How far a replica that acknowledged `acked` is behind: WAL bytes and
    /// seconds since the oldest record it lacks was committed.
    pub fn lag_behind(&self, acked: Seq) -> (u64, f64) {
        self.inner.feed.lag(acked)
    }

    /// Logs and applies records received from a primary, keeping their
    /// seqs; they must continue the log exactly (I5). Returns whether they
    /// are fsynced.
    ///
    /// # Errors
    /// [`StoreError::ReplicationGap`] if the first seq is not the next one.
    pub async fn apply_replicated(&self, records: Vec<WalRecord>) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commit_tx
            .send(Msg::Replicate { records, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// One step of replacing the data with a primary's snapshot.
    pub async fn install(&self, step: InstallStep) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commit_tx
            .send(Msg::Install { step, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The unfinished install this store holds, if any.
    pub async fn install_marker(&self) -> Result<Option<InstallMarker>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.disk.install_marker())
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// A digest of the live data at one consistent point (see
    /// [`DiskTier::digest`]), to prove that nodes hold the same data.
    /// Stops early (`Cancelled`) once `cancel` is set.
    pub async fn digest(&self, expired_before_ms: u64, cancel: Cancel) -> Result<Digest> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.disk.digest(expired_before_ms, &cancel))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Writes a RocksDB checkpoint to `dir` (which must not exist) and opens
    /// it for reading: the source of a full sync. The returned hold keeps
    /// every WAL record after the snapshot's seq until it is dropped, so the
    /// replica can continue from the WAL after installing it.
    pub async fn snapshot(&self, dir: PathBuf) -> Result<(SnapshotReader, WalHold)> {
        // IMPORTANT: hold before the checkpoint: its seq is at least this one.
        let hold = self.hold_wal(self.inner.status.applied());
        let inner = self.inner.clone();
        let reader = tokio::task::spawn_blocking(move || {
            inner.disk.create_checkpoint(&dir)?;
            SnapshotReader::open(&dir)
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        hold.advance(reader.seq().next());
        Ok((reader, hold))
    }

    /// The current time on the store's clock, Unix ms.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The WAL, for readers (replication, tools).
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// The last seq applied to both tiers.
    pub fn applied_seq(&self) -> Seq {
        self.inner.status.applied()
    }

    /// Latency histograms and volume counters.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Bytes of the disk tier's SST files.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.disk.size_bytes()
    }

    /// Writes waiting for (or in) the commit thread.
    pub fn pending_writes(&self) -> usize {
        self.inner.config.max_pending_writes - self.inner.pending.available_permits()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let (memory_hits, memory_misses) = self.inner.memory.counters.snapshot();
        let (disk_hits, disk_misses) = self.inner.disk_counters.snapshot();
        let (memory_entries, memory_bytes) = self.inner.memory.usage();
        let status = &self.inner.status;
        let checkpoint_at = *status
            .checkpoint_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        StoreStats {
            applied_seq: status.applied(),
            checkpoint_seq: Seq(status.checkpoint_seq.load(Ordering::Relaxed)),
            checkpoint_age_secs: checkpoint_at.elapsed().as_secs_f64(),
            memory_hits,
            memory_misses,
            disk_hits,
            disk_misses,
            memory_entries,
            memory_bytes,
            memory_budget_bytes: self.inner.memory.budget_bytes(),
            wal_bytes: self.inner.wal.total_bytes(),
            poisoned: status.poisoned(),
            memory_warmed_keys: self.inner.warmed.load(Ordering::Relaxed),
        }
    }
}

/// Test and tooling hooks that reach under the tiers.
#[cfg(any(test, feature = "test-util"))]
impl Store {
    /// Drops `key` from the memory tier only, forcing the next read to fill.
    pub fn evict_from_memory(&self, key: &[u8]) {
        self.inner.memory.evict(key);
    }

    /// What the memory tier holds for `key` (value, version), expired or not.
    pub fn memory_peek(&self, key: &[u8]) -> Option<(Bytes, Seq)> {
        match self.inner.memory.peek(key) {
            Lookup::Hit(v) => Some((v.value, v.seq)),
            _ => None,
        }
    }

    /// What the disk tier holds for `key`, expired or not.
    pub fn disk_get(&self, key: &[u8]) -> Result<Option<StoredValue>> {
        self.inner.disk.get(key)
    }

    /// Runs a full compaction (the TTL filter drops expired entries).
    pub fn compact(&self) {
        self.inner.disk.compact();
    }

    /// Raw entries in the disk tier, expired ones included.
    pub fn disk_raw_len(&self) -> Result<u64> {
        self.inner.disk.raw_len()
    }
}

/// Replays WAL records after `applied` into RocksDB, in batches.
/// Replays the WAL after `applied` into RocksDB; returns the records and
/// WAL bytes replayed.
fn replay(disk: &DiskTier, wal: &Wal, applied: Seq) -> Result<(u64, u64)> {
    const REPLAY_BATCH: usize = 1024;
    let mut batch: Vec<WalRecord> = Vec::with_capacity(REPLAY_BATCH);
    let mut replayed = 0;
    let mut records = wal.read_from(applied.next())?;
    for record in records.by_ref() {
        batch.push(record?);
        if batch.len() == REPLAY_BATCH {
            disk.apply(&batch)?;
            replayed += batch.len() as u64;
            batch.clear();
        }
    }
    disk.apply(&batch)?;
    replayed += batch.len() as u64;
    Ok((replayed, records.bytes_read()))
}

/// The data directory's RocksDB path (operator tools).
pub fn disk_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// A configured limit as the protocol states it (limits above 4 GiB are
/// refused by the config check long before).
fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
