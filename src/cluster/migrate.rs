//! Moving slots between shards while they serve (proto-docs/cluster.md §7).
//!
//! ```text
//! receiver's primary (one import per owner)             owner's primary (export)
//!   sweep its own copy of the ranges
//!   Begin{migration, receiver, ranges} --strata-move/1-->  checkpoint at seq C, WAL held
//!         <-- Start, Chunk ..., Copied{C}                  the ranges' keys, CRC-checked lz4
//!         <-- Records{mutations, through, owner_last}     its WAL after C, filtered to the ranges
//!   every owner caught up: ImportReady -> the map cuts over: owners refuse writes to moving slots
//!         <-- Fenced{F}                                    gate drained: no write to the ranges after F
//!   every owner fenced, imports durable on the in-sync set: ImportDone -> owners switch, one version
//! every primary, with no migration under way: sweep keys of slots its shard does not own
//! ```
//!
//! A key is writable on one shard at a time: the owner until it applies
//! the cut-over map (and its gate drains the writes that read the map
//! before), the receiver only once it applies the map that gives it the
//! slot, which is committed after every owner fenced. A broken link goes
//! on where it stopped (`Resume`) if the owner's node that served the
//! copy still has it parked; anything else (a failover on either side, a
//! restart) restarts that owner's import from a sweep. The owner serves
//! the moving slots until the cutover, none of them from then on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedRwLockReadGuard, RwLock, watch};
use tracing::{info, warn};

use super::map::ClusterMap;
use super::node::ClusterNode;
use super::raft::ImportStep;
use super::ring::ShardId;
use super::slot::{Slot, key_slot};
use crate::net::link::{FrameReceiver, FrameSender, Link};
use crate::proto::{ErrorCode, ErrorReply};
use crate::repl::proto::{SnapshotFrame, pack_chunk, unpack_chunk};
use crate::sync::lock;
use crate::types::{AckPolicy, NodeId, ReplId, Seq};
use crate::wal::Mutation;

/// The QUIC ALPN of migration links, beside replication's on the node-link
/// endpoint.
pub const MOVE_ALPN: &[u8] = b"strata-move/1";

/// Version of the migration protocol, sent in `Begin`.
pub const MOVE_PROTOCOL: u32 = 1;

/// About this many key and value bytes per chunk or records frame.
const FRAME_BYTES: usize = 1 << 20;

/// Most mutations in one import write (the store's batch bound is higher).
const IMPORT_BATCH: usize = 256;

/// An owner with nothing to send says so this often, so the receiver
/// knows how far behind it is and that the link lives.
const IDLE_EVERY: Duration = Duration::from_millis(250);

/// A receiver that hears nothing this long gives the link up.
const SILENCE: Duration = Duration::from_secs(15);

/// How long an owner waits for the map that started a migration it is
/// asked about: a third of the receiver's [`SILENCE`], which also covers
/// this wait, so that the checkpoint and the first frame keep the rest.
const CATCH_UP: Duration = Duration::from_secs(5);

/// How long an owner keeps a broken-off copy resumable (and the WAL after
/// it held): a link that breaks for less goes on where it stopped.
const RESUME_WITHIN: Duration = Duration::from_secs(60);

/// How long a receiver waits for its imports to reach its in-sync set.
const DURABLE_WITHIN: Duration = Duration::from_secs(10);

/// How long after a failed import an owner is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Receiver to owner: the one request of a migration link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveRequest {
    /// 0: send the keys of `ranges`, then the writes to them, until fenced.
    Begin {
        /// [`MOVE_PROTOCOL`].
        protocol: u32,
        /// The migration (its map version).
        migration: u64,
        /// The shard receiving the slots.
        receiver: ShardId,
        /// Inclusive slot ranges, ascending, each moving from the owner
        /// to `receiver`.
        ranges: Vec<(u16, u16)>,
    },
    /// 1: go on with a copy that broke off, on the node that served it:
    /// the keys after `after` (none: every key arrived), then the writes
    /// after `through`.
    Resume {
        /// [`MOVE_PROTOCOL`].
        protocol: u32,
        /// The migration (its map version).
        migration: u64,
        /// The shard receiving the slots.
        receiver: ShardId,
        /// As in `Begin`, and the same as the copy's.
        ranges: Vec<(u16, u16)>,
        /// The copy's checkpoint (its `Start`).
        checkpoint: Seq,
        /// The last key received while keys were coming; none once
        /// `Copied` came.
        after: Option<Bytes>,
        /// The owner seq applied through: `checkpoint` until `Copied`,
        /// then the last `Records`' `through`.
        through: Seq,
    },
}

impl MoveRequest {
    /// The migration asked about.
    fn migration(&self) -> u64 {
        match self {
            Self::Begin { migration, .. } | Self::Resume { migration, .. } => *migration,
        }
    }

    fn protocol(&self) -> u32 {
        match self {
            Self::Begin { protocol, .. } | Self::Resume { protocol, .. } => *protocol,
        }
    }
}

/// Owner to receiver, on the same stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveFrame {
    /// 0: the owner will not serve this request.
    Refused {
        /// Why.
        reason: String,
    },
    /// 1: a checkpoint was taken; its keys follow.
    Start {
        /// The checkpoint's seq.
        seq: Seq,
        /// Estimated live entries in the ranges.
        total_entries: u64,
        /// Estimated key and value bytes in the ranges.
        total_bytes: u64,
    },
    /// 2: keys of the ranges, in (slot, key) order: a full sync's chunk.
    Chunk {
        /// Entries in the chunk.
        entries: u32,
        /// Length of the uncompressed postcard `Vec<SnapshotEntry>`.
        raw_len: u32,
        /// CRC-32 of the uncompressed encoding.
        raw_crc: u32,
        /// The lz4 block.
        compressed: Bytes,
    },
    /// 3: every key of the checkpoint was sent.
    Copied {
        /// The checkpoint's seq: writes after it follow.
        seq: Seq,
    },
    /// 4: the owner's writes to the ranges, in order, through `through`.
    Records {
        /// The mutations of those writes on keys of the ranges.
        mutations: Vec<Mutation>,
        /// The last owner seq they cover.
        through: Seq,
        /// The owner's newest seq when it sent them.
        owner_last: Seq,
    },
    /// 5: the owner takes no more writes to the ranges; every write
    /// through `seq` was sent. Last frame.
    Fenced {
        /// The owner's seq at the fence.
        seq: Seq,
    },
}

/// Held by a write on a cluster member from its ownership check until it
/// is applied, so a fence can wait for writes that read an older map.
pub type WriteGate = OwnedRwLockReadGuard<()>;

/// Where one owner's import stands on the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Deleting what an earlier attempt left, connecting.
    Starting,
    /// Copying the checkpoint's keys.
    Copying,
    /// Following the owner's writes.
    Following,
    /// Every write the owner took is here.
    Fenced,
}

/// One owner's import, as `Info` and the metrics show it.
#[derive(Debug, Clone)]
pub struct Import {
    /// The migration.
    pub migration: u64,
    /// The receiving shard's epoch it runs under: a node promoted again
    /// later starts over, since what it held may have been swept since.
    pub epoch: u64,
    /// Where it stands.
    pub phase: Phase,
    /// Entries and bytes copied from the checkpoint.
    pub entries: u64,
    pub bytes: u64,
    /// The owner's estimate of the ranges' entries and bytes.
    pub total_entries: u64,
    pub total_bytes: u64,
    /// When this attempt began.
    pub started: Instant,
    /// Owner seqs: followed through, and its newest when last heard.
    pub through: u64,
    pub owner_last: u64,
    /// Whether this attempt heard the owner's newest seq (a `Records`):
    /// until then `owner_last` says nothing.
    pub heard_owner: bool,
    /// Attempts that failed, and the last one's reason.
    pub failures: u64,
    pub error: Option<String>,
    /// Where a broken-off attempt can go on from.
    pub resume: Option<ResumePoint>,
    /// Attempts that went on from an earlier one's resume point.
    pub resumes: u64,
}

/// What a receiver has of one copy: enough for its owner's node to go on
/// with it (`MoveRequest::Resume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The owner's node that served it.
    pub node: NodeId,
    /// Its checkpoint.
    pub checkpoint: Seq,
    /// The last key applied while keys were coming.
    pub after: Option<Bytes>,
    /// Whether every key of the checkpoint was applied.
    pub copied: bool,
    /// The owner seq applied through.
    pub through: Seq,
}

impl ResumePoint {
    /// Whether going on saves anything over starting over.
    fn worth_it(&self) -> bool {
        self.copied || self.after.is_some()
    }
}

impl Import {
    fn new(migration: u64, epoch: u64) -> Import {
        Import {
            migration,
            epoch,
            phase: Phase::Starting,
            entries: 0,
            bytes: 0,
            total_entries: 0,
            total_bytes: 0,
            started: Instant::now(),
            through: 0,
            owner_last: 0,
            heard_owner: false,
            failures: 0,
            error: None,
            resume: None,
            resumes: 0,
        }
    }

    /// The next attempt after this one failed with `error`: it keeps the
    /// progress, which a resumed copy goes on from.
    fn again(mut self, error: String) -> Import {
        self.phase = Phase::Starting;
        self.heard_owner = false;
        self.failures += 1;
        self.error = Some(error);
        self
    }

    /// Back to nothing copied, for an attempt that starts over.
    fn restart(&mut self) {
        let fresh = Import::new(self.migration, self.epoch);
        *self = Import {
            failures: self.failures,
            error: self.error.take(),
            resumes: self.resumes,
            ..fresh
        };
    }

    /// Copied and within a frame of the owner's newest write, as the
    /// owner last said.
    fn caught_up(&self) -> bool {
        self.phase == Phase::Fenced
            || (self.phase == Phase::Following
                && self.heard_owner
                && self.through >= self.owner_last)
    }

    /// `Info`'s words for it: phase, progress, estimated time left. An
    /// import of another migration than `current` (the one under way, if
    /// any) is over: its phase reads `done`.
    pub fn describe(&self, current: Option<u64>) -> String {
        let phase = if current == Some(self.migration) {
            format!("{:?}", self.phase).to_lowercase()
        } else {
            "done".to_string()
        };
        // The owner's totals are estimates: never below what arrived.
        let mut out = format!(
            "{phase} entries={}/{} bytes={}/{} lag={}",
            self.entries,
            self.total_entries.max(self.entries),
            self.bytes,
            self.total_bytes.max(self.bytes),
            self.owner_last.saturating_sub(self.through)
        );
        if phase == "copying" && self.bytes > 0 {
            let secs = self.started.elapsed().as_secs_f64();
            let left = self.total_bytes.saturating_sub(self.bytes) as f64;
            out.push_str(&format!(" eta_s={:.0}", left * secs / self.bytes as f64));
        }
        if self.failures > 0 {
            out.push_str(&format!(" failures={}", self.failures));
        }
        if self.resumes > 0 {
            out.push_str(&format!(" resumed={}", self.resumes));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!(" last_error={e:?}"));
        }
        out
    }
}

/// What an import task runs under: the migration and the receiving
/// shard's epoch.
type Attempt = (u64, u64);

/// A member's migrations: its write gate, its imports by owner shard, and
/// the sweep lock.
#[derive(Debug)]
pub struct Migrations {
    gate: Arc<RwLock<()>>,
    imports: Mutex<BTreeMap<ShardId, Import>>,
    /// Import tasks running, by owner shard, with their migration.
    running: Mutex<BTreeMap<ShardId, (Attempt, tokio::task::AbortHandle)>>,
    /// Held by a sweep batch from its check to its write, and by an import
    /// before its own sweep: a sweep never deletes what an import copied.
    sweeping: tokio::sync::Mutex<()>,
    /// The (map version, ring) a sweep last ran for: a map version
    /// without a migration after one (finished or aborted) sweeps again.
    swept: Mutex<Option<(u64, Vec<ShardId>)>>,
    /// Exports that broke off, resumable for a while.
    parked: Mutex<Vec<Parked>>,
    bytes_per_sec: u64,
    /// Keys the sweeps deleted.
    pub swept_keys: std::sync::atomic::AtomicU64,
}

impl Migrations {
    pub fn new(bytes_per_sec: u64) -> Migrations {
        Migrations {
            gate: Arc::new(RwLock::new(())),
            imports: Mutex::new(BTreeMap::new()),
            running: Mutex::new(BTreeMap::new()),
            sweeping: tokio::sync::Mutex::new(()),
            swept: Mutex::new(None),
            parked: Mutex::new(Vec::new()),
            bytes_per_sec,
            swept_keys: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The gate a write holds while it is checked and applied.
    pub async fn gate(&self) -> WriteGate {
        self.gate.clone().read_owned().await
    }

    /// Waits for every write holding the gate: those that read a map
    /// older than the one now applied.
    async fn drain_writes(&self) {
        drop(self.gate.write().await);
    }

    /// The imports this node runs or ran, by owner shard.
    pub fn imports(&self) -> BTreeMap<ShardId, Import> {
        lock(&self.imports).clone()
    }

    fn update(&self, owner: ShardId, f: impl FnOnce(&mut Import)) {
        if let Some(import) = lock(&self.imports).get_mut(&owner) {
            f(import);
        }
    }

    fn park(&self, parked: Parked) {
        let mut all = lock(&self.parked);
        all.retain(|p| p.at.elapsed() < RESUME_WITHIN);
        all.push(parked);
    }

    /// The parked export of `x` from `checkpoint`, taken out.
    fn unpark(&self, x: &Export, checkpoint: Seq) -> Option<Parked> {
        let mut all = lock(&self.parked);
        all.retain(|p| p.at.elapsed() < RESUME_WITHIN);
        let at = all.iter().position(|p| {
            (p.migration, p.receiver, p.epoch, p.history, p.checkpoint)
                == (x.migration, x.receiver, x.epoch, x.history, checkpoint)
                && p.ranges == x.ranges
        })?;
        Some(all.swap_remove(at))
    }

    /// Lets go of parked exports that are too old or of another migration
    /// than `current`, and of the WAL they hold.
    fn prune_parked(&self, current: Option<u64>) {
        lock(&self.parked)
            .retain(|p| p.at.elapsed() < RESUME_WITHIN && Some(p.migration) == current);
    }

    fn stop_imports(&self) {
        for (_, (_, task)) in std::mem::take(&mut *lock(&self.running)) {
            task.abort();
        }
    }
}

/// The refusal of a request for `slot` while it is cut over: the owner's
/// reads and writes of it wait for the new owner.
pub fn fenced(map: &ClusterMap, slot: Slot) -> Option<ErrorReply> {
    let migration = map.migration().filter(|m| m.cutover)?;
    let (_, to) = map.moving(slot)?;
    Some(
        ErrorReply::new(
            ErrorCode::Unavailable,
            format!(
                "slot {} is moving to shard {to} (migration {}): requests for it wait for \
                 the cutover, a moment",
                slot.get(),
                migration.id
            ),
        )
        .with_retry_after_ms(100),
    )
}

/// `slots` (ascending) as inclusive ranges.
fn ranges_of(slots: impl IntoIterator<Item = Slot>) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for slot in slots {
        let n = slot.get();
        match out.last_mut() {
            Some((_, last)) if *last + 1 == n => *last = n,
            _ => out.push((n, n)),
        }
    }
    out
}

fn in_ranges(ranges: &[(u16, u16)], slot: Slot) -> bool {
    let n = slot.get();
    let at = ranges.partition_point(|&(_, last)| last < n);
    ranges.get(at).is_some_and(|&(first, _)| first <= n)
}

/// The ranges moving from `from` to `to` in `map`'s migration.
fn moving_ranges(map: &ClusterMap, from: ShardId, to: ShardId) -> Vec<(u16, u16)> {
    ranges_of(
        map.moves()
            .into_iter()
            .filter(|&(_, f, t)| f == from && t == to)
            .map(|(slot, _, _)| slot),
    )
}

/// `me`'s shard, if `map` names `me` its primary.
fn primary_shard(map: &ClusterMap, me: NodeId) -> Option<ShardId> {
    super::in_sync::primary_of(map, me).map(|(shard, _)| shard)
}

/// `cluster_ring`, `cluster_migration`, `cluster_import.<owner>` and
/// `cluster_swept_keys` lines for `Info`.
pub(super) fn info(node: &ClusterNode, map: &ClusterMap) -> Vec<(String, String)> {
    let ids = |list: &[ShardId]| {
        list.iter()
            .map(|s| s.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = vec![("cluster_ring".to_string(), ids(map.ring()))];
    if let Some(m) = map.migration() {
        let line = format!(
            "id={} ring={} vnodes={} receivers={} ready={} cutover={} done={} moving_slots={}",
            m.id,
            ids(&m.ring),
            m.vnodes,
            ids(&map.receivers()),
            ids(&m.ready),
            m.cutover,
            ids(&m.done),
            map.moves().len()
        );
        out.push(("cluster_migration".into(), line));
    }
    let current = map.migration().map(|m| m.id);
    for (owner, import) in node.migrations().imports() {
        let line = import.describe(current);
        out.push((format!("cluster_import.{}", owner.0), line));
    }
    let swept = node
        .migrations()
        .swept_keys
        .load(std::sync::atomic::Ordering::Relaxed);
    out.push(("cluster_swept_keys".into(), swept.to_string()));
    out
}

// ---------------------------------------------------------------- owner

/// Serves migration links until the node goes.
pub(super) async fn serve_exports(
    node: Weak<ClusterNode>,
    mut links: tokio::sync::mpsc::Receiver<Link>,
) {
    while let Some(link) = links.recv().await {
        let Some(strong) = node.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let peer = link.peer_name().unwrap_or_default();
            match export(&strong, &link).await {
                Ok(()) => info!(receiver = %peer, "slot export finished: fenced"),
                Err(e) => warn!(receiver = %peer, error = %e, "slot export ended"),
            }
            link.close(0, "export ended");
        });
    }
}

/// A checkpoint's directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let dir = self.0.clone();
        drop(tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(dir);
        }));
    }
}

/// A checkpoint being copied from. Dropped, it closes the reader off the
/// reactor (RocksDB's close can block), then removes the files.
struct Copy {
    open: Option<(Arc<crate::store::SnapshotReader>, Scratch)>,
    /// Keys after this one are sent (all for none).
    after: Option<Bytes>,
}

impl Copy {
    fn reader(&self) -> &Arc<crate::store::SnapshotReader> {
        let (reader, _) = self
            .open
            .as_ref()
            .unwrap_or_else(|| unreachable!("open until dropped"));
        reader
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let open = self.open.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(open))),
            Err(_) => drop(open),
        }
    }
}

/// An export that the owner will serve, as checked.
struct Export {
    migration: u64,
    receiver: ShardId,
    ranges: Vec<(u16, u16)>,
    /// The owner shard's epoch and this node's replication history: a
    /// resumed copy must come from the same, and a copy stops when either
    /// changes (its seqs would name another history's writes).
    epoch: u64,
    history: ReplId,
    /// Slots the owner shard owns (the checkpoint's share to estimate by).
    owned: u64,
}

/// An export that broke off, kept for [`RESUME_WITHIN`] in case its
/// receiver comes back: only this process, in this epoch, has the WAL
/// after its checkpoint as the receiver saw it.
struct Parked {
    migration: u64,
    receiver: ShardId,
    ranges: Vec<(u16, u16)>,
    epoch: u64,
    history: ReplId,
    checkpoint: Seq,
    /// Keeps the WAL from what was last sent on.
    _hold: crate::store::WalHold,
    at: Instant,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("migration", &self.migration)
            .field("receiver", &self.receiver)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

/// One export: checks the request, then streams a copy from its start or
/// from where a broken-off one stopped.
async fn export(node: &Arc<ClusterNode>, link: &Link) -> Result<(), String> {
    let (mut send, mut recv) = tokio::time::timeout(SILENCE, link.accept())
        .await
        .map_err(|_| "no request stream".to_string())?
        .map_err(|e| e.to_string())?;
    let request = tokio::time::timeout(SILENCE, recv.recv_bounded::<MoveRequest>(1 << 20))
        .await
        .map_err(|_| "no request".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("the stream ended before the request")?;
    // The receiver can learn of a migration before its owners do, and a
    // refusal would only make it ask again: wait for the map that started
    // it (its id is that map's version). A request this node cannot read
    // anyway is refused at once.
    if request.protocol() == MOVE_PROTOCOL {
        map_reaches(node.group().map(), request.migration(), CATCH_UP).await;
    }
    let result = match request {
        MoveRequest::Begin {
            protocol,
            migration,
            receiver,
            ranges,
        } => match check_export(node, link, protocol, migration, receiver, ranges) {
            Ok(x) => export_fresh(node, &x, &mut send).await,
            Err(reason) => Err(reason),
        },
        MoveRequest::Resume {
            protocol,
            migration,
            receiver,
            ranges,
            checkpoint,
            after,
            through,
        } => match check_export(node, link, protocol, migration, receiver, ranges) {
            Ok(x) => export_resumed(node, &x, checkpoint, after, through, &mut send).await,
            Err(reason) => Err(reason),
        },
    };
    match result {
        Ok(()) => {
            send.finish();
            send.delivered(SILENCE).await;
            Ok(())
        }
        Err(Refusal(reason)) => {
            let refused = MoveFrame::Refused {
                reason: reason.clone(),
            };
            let _ = send.send(&refused).await;
            send.finish();
            send.delivered(Duration::from_secs(1)).await;
            Err(reason)
        }
        Err(Broken(reason)) => Err(reason),
    }
}

/// Why an export did not finish.
enum ExportError {
    /// Before anything was sent: the receiver is told why.
    Refusal(String),
    /// Once streaming: the link or this node's state broke it off.
    Broken(String),
}
use ExportError::{Broken, Refusal};

impl From<String> for ExportError {
    fn from(reason: String) -> ExportError {
        Broken(reason)
    }
}

/// Takes a checkpoint for a copy of `x.ranges`; sends `Start`.
async fn start_copy(
    node: &ClusterNode,
    x: &Export,
    after: Option<Bytes>,
    send: &mut FrameSender,
) -> Result<(Copy, crate::store::WalHold), String> {
    let scratch_dir = node.repl().scratch_dir().to_path_buf();
    let dir = scratch_dir.join(format!("move-{:016x}", rand::random::<u64>()));
    let made = tokio::task::spawn_blocking(move || std::fs::create_dir_all(scratch_dir)).await;
    made.map_err(|e| e.to_string())?
        .map_err(|e| format!("scratch directory: {e}"))?;
    let scratch = Scratch(dir.clone());
    let (reader, hold) = node
        .repl()
        .store()
        .snapshot(dir)
        .await
        .map_err(|e| e.to_string())?;
    let reader = Arc::new(reader);
    let counted = reader.clone();
    let (entries, bytes) = tokio::task::spawn_blocking(move || counted.totals())
        .await
        .map_err(|e| e.to_string())?;
    // The checkpoint holds the owner's slots; the ranges are part of them.
    let moving: u64 = x.ranges.iter().map(|&(a, b)| u64::from(b - a) + 1).sum();
    let share = |n: u64| n * moving / x.owned.max(1);
    let start = MoveFrame::Start {
        seq: reader.seq(),
        total_entries: share(entries),
        total_bytes: share(bytes),
    };
    send.send(&start).await.map_err(|e| e.to_string())?;
    let copy = Copy {
        open: Some((reader, scratch)),
        after,
    };
    Ok((copy, hold))
}

/// A copy from the start: a checkpoint's keys, then the writes after it.
async fn export_fresh(
    node: &ClusterNode,
    x: &Export,
    send: &mut FrameSender,
) -> Result<(), ExportError> {
    let (copy, hold) = start_copy(node, x, None, send).await?;
    let seq = copy.reader().seq();
    stream(node, x, Some(copy), seq, seq, hold, send).await
}

/// A copy that broke off, gone on with: the keys after `after` from a new
/// checkpoint (none: all arrived), then the writes after `through`.
async fn export_resumed(
    node: &ClusterNode,
    x: &Export,
    checkpoint: Seq,
    after: Option<Bytes>,
    through: Seq,
    send: &mut FrameSender,
) -> Result<(), ExportError> {
    let store = node.repl().store();
    // Writes are followed only once every key arrived.
    let following_early = after.is_some() && through != checkpoint;
    if through < checkpoint || through > store.applied_seq() || following_early {
        return Err(Refusal(format!(
            "cannot resume through seq {} from checkpoint {}",
            through.0, checkpoint.0
        )));
    }
    let Some(parked) = node.migrations().unpark(x, checkpoint) else {
        return Err(Refusal(format!(
            "no broken-off copy from checkpoint {} here (restarted, another epoch, or more \
             than {RESUME_WITHIN:?} ago): start over",
            checkpoint.0
        )));
    };
    // Hold the WAL from where the receiver stopped before checking it is
    // still there, so it stays.
    let hold = store.hold_wal(through.next());
    drop(parked);
    if let Err(e) = store.records_from(through.next(), 1).await {
        return Err(Refusal(format!(
            "cannot resume after seq {}: {e}",
            through.0
        )));
    }
    let copy = match after {
        Some(key) => {
            let (copy, _its_hold) = start_copy(node, x, Some(key), send).await?;
            Some(copy)
        }
        None => None,
    };
    stream(node, x, copy, checkpoint, through, hold, send).await
}

/// Sends `copy`'s keys (if any), `Copied { through }`, then the writes
/// after `through` until fenced; parks the export if it breaks off.
async fn stream(
    node: &ClusterNode,
    x: &Export,
    copy: Option<Copy>,
    checkpoint: Seq,
    through: Seq,
    hold: crate::store::WalHold,
    send: &mut FrameSender,
) -> Result<(), ExportError> {
    let result = async {
        if let Some(copy) = copy {
            send_keys(node, copy.reader(), &x.ranges, copy.after.clone(), send).await?;
        }
        send.send(&MoveFrame::Copied { seq: through })
            .await
            .map_err(|e| e.to_string())?;
        follow_writes(node, x, through, &hold, send).await
    }
    .await;
    if result.is_err() {
        node.migrations().park(Parked {
            migration: x.migration,
            receiver: x.receiver,
            ranges: x.ranges.clone(),
            epoch: x.epoch,
            history: x.history,
            checkpoint,
            _hold: hold,
            at: Instant::now(),
        });
    }
    result.map_err(Broken)
}

/// Waits, for `limit` at most, until `maps` holds a map of `version` or
/// newer: whether it came.
async fn map_reaches(
    mut maps: watch::Receiver<Arc<ClusterMap>>,
    version: u64,
    limit: Duration,
) -> bool {
    let reached = tokio::time::timeout(limit, maps.wait_for(|m| m.version() >= version)).await;
    matches!(reached, Ok(Ok(_)))
}

/// Why this node will not export `ranges` to `receiver`, if it will not;
/// else what it will export.
fn check_export(
    node: &ClusterNode,
    link: &Link,
    protocol: u32,
    migration: u64,
    receiver: ShardId,
    ranges: Vec<(u16, u16)>,
) -> Result<Export, ExportError> {
    let refuse = |reason: String| Err(Refusal(reason));
    if protocol != MOVE_PROTOCOL {
        return refuse(format!(
            "migration protocol {protocol} is not supported (this node speaks {MOVE_PROTOCOL})"
        ));
    }
    let map = node.map();
    if map.migration().map(|m| m.id) != Some(migration) {
        return refuse(format!(
            "migration {migration} is not in progress in map version {}",
            map.version()
        ));
    }
    let Some((owner, epoch)) = super::in_sync::primary_of(&map, node.id())
        .map(|(shard, info)| (shard, info.epoch))
        .filter(|_| node.repl().is_primary())
    else {
        return refuse("this node is not a shard's primary".into());
    };
    let asker = link.peer_name().map(|name| NodeId::of_name(&name));
    if asker.is_none() || map.shards().get(&receiver).map(|s| s.primary) != asker {
        return refuse(format!("the peer is not shard {receiver}'s primary"));
    }
    let mut slots = ranges.iter().flat_map(|&(a, b)| a..=b);
    let wrong =
        slots.find(|&n| Slot::new(n).and_then(|slot| map.moving(slot)) != Some((owner, receiver)));
    if let Some(n) = wrong {
        return refuse(format!(
            "slot {n} does not move from shard {owner} to shard {receiver}"
        ));
    }
    let sorted = ranges.windows(2).all(|w| w[0].1 < w[1].0);
    if ranges.is_empty() || !sorted || ranges.iter().any(|&(a, b)| a > b) {
        return refuse("the ranges are not ascending and disjoint".into());
    }
    let owned = map
        .slot_table()
        .map_or(0, |t| t.shares().get(&owner).copied().unwrap_or(0));
    Ok(Export {
        migration,
        receiver,
        ranges,
        epoch,
        history: node.repl().meta().repl_id,
        owned: u64::from(owned),
    })
}

/// Sends the checkpoint's keys of `ranges`, at most `bytes_per_sec`.
async fn send_keys(
    node: &ClusterNode,
    reader: &Arc<crate::store::SnapshotReader>,
    ranges: &[(u16, u16)],
    mut after: Option<Bytes>,
    send: &mut FrameSender,
) -> Result<(), String> {
    let rate = node.migrations().bytes_per_sec;
    // About a second's worth at most, so the receiver hears from us well
    // within its patience however slow the rate.
    let chunk = match rate {
        0 => FRAME_BYTES,
        rate => FRAME_BYTES
            .min(usize::try_from(rate).unwrap_or(FRAME_BYTES))
            .max(1),
    };
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let (r, ranges, now) = (
            reader.clone(),
            ranges.to_vec(),
            node.repl().store().now_ms(),
        );
        let from = after.clone();
        let entries = tokio::task::spawn_blocking(move || {
            r.read_slots_chunk(&ranges, from.as_deref(), chunk, now)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let Some(last) = entries.last() else {
            return Ok(());
        };
        after = Some(last.key.clone());
        sent += entries.iter().map(|e| e.data_len()).sum::<u64>();
        let SnapshotFrame::Chunk {
            entries,
            raw_len,
            raw_crc,
            compressed,
        } = pack_chunk(&entries)
        else {
            unreachable!("pack_chunk makes chunks");
        };
        let chunk = MoveFrame::Chunk {
            entries,
            raw_len,
            raw_crc,
            compressed,
        };
        send.send(&chunk).await.map_err(|e| e.to_string())?;
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
    }
}

/// Sends the writes to `x.ranges` after `seq`, until the map cuts the
/// migration over and every write through the fence was sent.
async fn follow_writes(
    node: &ClusterNode,
    x: &Export,
    seq: Seq,
    hold: &crate::store::WalHold,
    send: &mut FrameSender,
) -> Result<(), String> {
    let store = node.repl().store().clone();
    let mut applied = store.watch_applied();
    let mut maps = node.group().map();
    let (mut from, mut fence, mut idle) = (seq.next(), None::<Seq>, Instant::now());
    loop {
        // A deposed primary's fence would miss its successor's writes.
        let still = super::in_sync::primary_of(&maps.borrow(), node.id())
            .is_some_and(|(_, info)| info.epoch == x.epoch);
        if !still || !node.repl().is_primary() || node.repl().meta().repl_id != x.history {
            return Err("this node is no longer its shard's primary in the same epoch".into());
        }
        if fence.is_none() {
            let map = maps.borrow_and_update().clone();
            match map.migration().filter(|m| m.id == x.migration) {
                None => return Err(format!("migration {} ended", x.migration)),
                Some(m) if m.cutover => {
                    node.migrations().drain_writes().await;
                    fence = Some(store.applied_seq());
                }
                Some(_) => {}
            }
        }
        let last = store.applied_seq();
        if let Some(f) = fence
            && from > f
        {
            return send
                .send(&MoveFrame::Fenced { seq: f })
                .await
                .map_err(|e| e.to_string());
        }
        if from <= last {
            let records = store
                .records_from(from, FRAME_BYTES as u64)
                .await
                .map_err(|e| e.to_string())?;
            let Some(through) = records.last().map(|r| r.seq) else {
                return Err(format!("the WAL gave nothing from seq {from}"));
            };
            let mutations = records
                .into_iter()
                .flat_map(|r| r.mutations)
                .filter(|m| in_ranges(&x.ranges, key_slot(mutation_key(m))))
                .collect();
            let frame = MoveFrame::Records {
                mutations,
                through,
                owner_last: store.applied_seq(),
            };
            send.send(&frame).await.map_err(|e| e.to_string())?;
            from = through.next();
            hold.advance(from);
            idle = Instant::now();
            continue;
        }
        if idle.elapsed() >= IDLE_EVERY {
            let through = Seq(from.0 - 1);
            let frame = MoveFrame::Records {
                mutations: Vec::new(),
                through,
                owner_last: last,
            };
            send.send(&frame).await.map_err(|e| e.to_string())?;
            idle = Instant::now();
        }
        tokio::select! {
            _ = applied.changed() => {}
            _ = maps.changed() => {}
            () = tokio::time::sleep(IDLE_EVERY) => {}
        }
    }
}

fn mutation_key(m: &Mutation) -> &[u8] {
    match m {
        Mutation::Put { key, .. } | Mutation::PutTyped { key, .. } | Mutation::Delete { key } => {
            key
        }
    }
}

// ------------------------------------------------------------- receiver

/// Drives this node's part in migrations (imports, ready and done steps)
/// and sweeps, on every map change and now and then, until it goes.
pub(super) async fn migration_loop(node: Weak<ClusterNode>) {
    let Some(mut maps) = node.upgrade().map(|n| n.group().map()) else {
        return;
    };
    loop {
        let map = maps.borrow_and_update().clone();
        let Some(strong) = node.upgrade() else {
            return;
        };
        drive(&strong, &map).await;
        sweep_if_due(&strong, &map);
        drop(strong);
        tokio::select! {
            changed = maps.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The receiving shard this node leads in `map`'s migration, with the
/// migration's id, if it has not finished its part.
fn receiving(node: &ClusterNode, map: &ClusterMap) -> Option<(u64, ShardId)> {
    let m = map.migration()?;
    let shard = primary_shard(map, node.id()).filter(|_| node.repl().is_primary())?;
    (map.receivers().contains(&shard) && !m.done.contains(&shard)).then_some((m.id, shard))
}

/// Starts the imports this node owes, and commits its ready and done steps.
async fn drive(node: &Arc<ClusterNode>, map: &ClusterMap) {
    let migrations = node.migrations();
    migrations.prune_parked(map.migration().map(|m| m.id));
    let Some((id, shard)) = receiving(node, map) else {
        migrations.stop_imports();
        return;
    };
    let mut owners: Vec<ShardId> = map
        .moves()
        .into_iter()
        .filter(|&(_, _, to)| to == shard)
        .map(|(_, from, _)| from)
        .collect();
    owners.sort_unstable();
    owners.dedup();
    let epoch = map.shards().get(&shard).map_or(0, |s| s.epoch);
    let current = |i: &Import| i.migration == id && i.epoch == epoch;
    {
        let mut running = lock(&migrations.running);
        running.retain(|_, (m, task)| {
            let keep = *m == (id, epoch) && !task.is_finished();
            if *m != (id, epoch) {
                task.abort();
            }
            keep
        });
        for &owner in &owners {
            if running.contains_key(&owner) {
                continue;
            }
            let done = migrations
                .imports()
                .get(&owner)
                .is_some_and(|i| current(i) && i.phase == Phase::Fenced);
            if done {
                continue;
            }
            let weak = Arc::downgrade(node);
            let task = tokio::spawn(import_until_fenced(weak, (id, epoch), shard, owner));
            running.insert(owner, ((id, epoch), task.abort_handle()));
        }
    }
    let imports = migrations.imports();
    let ours = |f: &dyn Fn(&Import) -> bool| {
        owners
            .iter()
            .all(|o| imports.get(o).is_some_and(|i| current(i) && f(i)))
    };
    let Some(m) = map.migration() else {
        return;
    };
    if !m.ready.contains(&shard) && ours(&Import::caught_up) {
        commit_step(node, id, shard, epoch, false).await;
    } else if m.cutover && ours(&|i| i.phase == Phase::Fenced) {
        // Everything applied so far: the imports' keys and writes, and the
        // deletes of each attempt's own sweep (which may be all it wrote).
        let last = node.repl().store().applied_seq();
        let policy = AckPolicy::Sync {
            timeout_ms: DURABLE_WITHIN.as_millis() as u64,
        };
        // `Ok` is every member of the committed in-sync set; degraded, the
        // set is empty, which will do only for a shard without replicas
        // (a new shard's replicas join the set once caught up). The
        // primary's own WAL is fsynced first.
        let alone = map
            .shards()
            .get(&shard)
            .is_none_or(|s| s.replicas.is_empty());
        if let Err(e) = node.repl().store().sync().await {
            warn!(shard = shard.0, error = %e, "imports not fsynced");
            return;
        }
        match node.repl().await_acks(last, policy).await {
            Ok(acked) if !acked.degraded || alone => {
                commit_step(node, id, shard, epoch, true).await;
            }
            Ok(_) => warn!(
                shard = shard.0,
                "no replica in the in-sync set holds the imports yet"
            ),
            Err(e) => {
                warn!(shard = shard.0, error = %e.message, "imports not on the in-sync set yet")
            }
        }
    }
}

async fn commit_step(node: &ClusterNode, id: u64, shard: ShardId, epoch: u64, done: bool) {
    let step = ImportStep {
        node: node.id(),
        id,
        shard,
        epoch,
        done,
    };
    let what = if done { "done" } else { "ready" };
    let deadline =
        Duration::from_millis(2 * node.health().timing().heartbeat_ms).max(Duration::from_secs(2));
    match node.group().import_step(step, deadline).await {
        Ok(version) => info!(migration = id, shard = shard.0, version, "import {what}"),
        Err(e) => {
            warn!(migration = id, shard = shard.0, error = %e, "import {what} not committed yet")
        }
    }
}

/// Imports from `owner` until fenced, going on (or starting over) after
/// each failure, while the migration lasts (the loop aborts it otherwise).
async fn import_until_fenced(
    node: Weak<ClusterNode>,
    (id, epoch): (u64, u64),
    shard: ShardId,
    owner: ShardId,
) {
    let mut attempt = Import::new(id, epoch);
    loop {
        let Some(strong) = node.upgrade() else {
            return;
        };
        lock(&strong.migrations().imports).insert(owner, attempt);
        let result = import(&strong, id, shard, owner).await;
        let last = strong.migrations().imports().remove(&owner);
        match (result, last) {
            (Ok(()), _) => {
                info!(
                    migration = id,
                    owner = owner.0,
                    "import fenced: every write is here"
                );
                return;
            }
            (Err(e), last) => {
                warn!(migration = id, owner = owner.0, error = %e, "import failed; trying again");
                attempt = last.unwrap_or_else(|| Import::new(id, epoch)).again(e);
            }
        }
        drop(strong);
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// One attempt: connect, then go on from where the last one stopped if
/// the same owner's node served it, else sweep and copy from the start;
/// follow until fenced.
async fn import(node: &ClusterNode, id: u64, shard: ShardId, owner: ShardId) -> Result<(), String> {
    let map = node.map();
    let ranges = moving_ranges(&map, owner, shard);
    let (primary_id, primary) = map
        .shards()
        .get(&owner)
        .and_then(|s| Some((s.primary, map.nodes().get(&s.primary)?.clone())))
        .ok_or_else(|| format!("shard {owner} has no primary in the map"))?;
    let migrations = node.migrations();
    let resume = migrations
        .imports()
        .get(&owner)
        .and_then(|i| i.resume.clone())
        .filter(|r| r.node == primary_id && r.worth_it());
    let link = connect(node, &primary.link_addr, &primary.name).await?;
    let request = match &resume {
        Some(r) => MoveRequest::Resume {
            protocol: MOVE_PROTOCOL,
            migration: id,
            receiver: shard,
            ranges,
            checkpoint: r.checkpoint,
            after: if r.copied { None } else { r.after.clone() },
            through: r.through,
        },
        None => {
            migrations.update(owner, Import::restart);
            let _sweeping = migrations.sweeping.lock().await;
            sweep_ranges(node, &ranges, &|_| true).await?;
            MoveRequest::Begin {
                protocol: MOVE_PROTOCOL,
                migration: id,
                receiver: shard,
                ranges,
            }
        }
    };
    let (mut send, mut recv) = link.open().await.map_err(|e| e.to_string())?;
    send.send(&request).await.map_err(|e| e.to_string())?;
    send.finish();
    let result = receive(node, owner, primary_id, resume.is_some(), &mut recv).await;
    link.close(0, "import ended");
    result
}

async fn connect(node: &ClusterNode, addr: &str, name: &str) -> Result<Link, String> {
    let endpoint = node
        .repl()
        .link_endpoint()
        .ok_or("replication has no link endpoint")?;
    let socket = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let host = crate::net::split_host_port(addr).map_or(addr, |(h, _)| h);
    let link = endpoint
        .connect_for(socket, host, MOVE_ALPN, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    if link.peer_name().as_deref() != Some(name) {
        link.close(0, "not the node asked for");
        return Err(format!("{addr} is not node {name}"));
    }
    Ok(link)
}

/// Applies the owner's frames until `Fenced`, keeping the import's resume
/// point at what is applied; `resuming`: the request was `Resume` to
/// `from`, the owner's node.
async fn receive(
    node: &ClusterNode,
    owner: ShardId,
    from: NodeId,
    resuming: bool,
    recv: &mut FrameReceiver,
) -> Result<(), String> {
    let migrations = node.migrations();
    let mut first = true;
    loop {
        let frame = tokio::time::timeout(SILENCE, recv.recv::<MoveFrame>())
            .await
            .map_err(|_| format!("the owner was silent for {SILENCE:?}"))?
            .map_err(|e| e.to_string())?
            .ok_or("the owner ended the stream before the fence")?;
        if let MoveFrame::Refused { reason } = frame {
            // Refused to go on: the next attempt starts over.
            migrations.update(owner, |i| i.resume = None);
            return Err(format!("refused: {reason}"));
        }
        if std::mem::take(&mut first) && resuming {
            migrations.update(owner, |i| i.resumes += 1);
        }
        match frame {
            MoveFrame::Refused { .. } => unreachable!("handled above"),
            MoveFrame::Start {
                seq,
                total_entries,
                total_bytes,
            } => migrations.update(owner, |i| {
                i.phase = Phase::Copying;
                (i.total_entries, i.total_bytes) = (total_entries, total_bytes);
                if !resuming {
                    i.resume = Some(ResumePoint {
                        node: from,
                        checkpoint: seq,
                        after: None,
                        copied: false,
                        through: seq,
                    });
                }
            }),
            MoveFrame::Chunk {
                entries,
                raw_len,
                raw_crc,
                compressed,
            } => {
                let list = unpack_chunk(entries, raw_len, raw_crc, &compressed)
                    .map_err(|e| e.to_string())?;
                let bytes: u64 = list.iter().map(|e| e.data_len()).sum();
                let count = list.len() as u64;
                let last_key = list.last().map(|e| e.key.clone());
                let puts = list
                    .into_iter()
                    .map(crate::store::SnapshotEntry::into_mutation);
                write(node, puts.collect()).await?;
                migrations.update(owner, |i| {
                    (i.entries, i.bytes) = (i.entries + count, i.bytes + bytes);
                    if let Some(r) = &mut i.resume {
                        r.after = last_key.or(r.after.take());
                    }
                });
            }
            MoveFrame::Copied { seq } => migrations.update(owner, |i| {
                i.phase = Phase::Following;
                i.through = seq.0;
                if let Some(r) = &mut i.resume {
                    (r.copied, r.after, r.through) = (true, None, seq);
                }
            }),
            MoveFrame::Records {
                mutations,
                through,
                owner_last,
            } => {
                write(node, mutations).await?;
                migrations.update(owner, |i| {
                    (i.through, i.owner_last) = (through.0, owner_last.0);
                    i.heard_owner = true;
                    if let Some(r) = &mut i.resume {
                        r.through = through;
                    }
                });
            }
            MoveFrame::Fenced { seq } => {
                migrations.update(owner, |i| {
                    i.phase = Phase::Fenced;
                    (i.through, i.owner_last) = (seq.0, seq.0);
                });
                return Ok(());
            }
        }
    }
}

/// Writes `mutations` in import batches.
async fn write(node: &ClusterNode, mutations: Vec<Mutation>) -> Result<(), String> {
    for batch in mutations.chunks(IMPORT_BATCH) {
        // A replica's WAL takes only its primary's records.
        if !node.repl().is_primary() || primary_shard(&node.map(), node.id()).is_none() {
            return Err("this node is no longer its shard's primary".into());
        }
        node.repl()
            .store()
            .import(batch.to_vec())
            .await
            .map_err(|e| format!("writing imported keys: {e}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- sweep

/// Deletes, in batches, every stored key of `ranges` for which `still`
/// holds when its batch is written.
async fn sweep_ranges(
    node: &ClusterNode,
    ranges: &[(u16, u16)],
    still: &(dyn Fn(&ClusterMap) -> bool + Sync),
) -> Result<u64, String> {
    let store = node.repl().store();
    let mut deleted = 0;
    let mut after = None;
    loop {
        let keys = store
            .keys_in_slots(ranges.to_vec(), after.clone(), IMPORT_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = keys.last() else {
            return Ok(deleted);
        };
        after = Some(last.clone());
        if !still(&node.map()) {
            return Ok(deleted);
        }
        deleted += keys.len() as u64;
        let deletes = keys
            .into_iter()
            .map(|key| Mutation::Delete { key })
            .collect();
        write(node, deletes).await?;
    }
}

/// Starts a sweep of the keys this node's shard does not own, once per
/// ring it is primary under, when no migration is under way.
fn sweep_if_due(node: &Arc<ClusterNode>, map: &ClusterMap) {
    if map.migration().is_some() || map.slot_table().is_none() || !node.repl().is_primary() {
        return;
    }
    let Some(shard) = primary_shard(map, node.id()) else {
        return;
    };
    let key = (map.version(), map.ring().to_vec());
    let migrations = node.migrations();
    if lock(&migrations.swept).as_ref() == Some(&key) {
        return;
    }
    let Ok(_running) = migrations.sweeping.try_lock() else {
        return;
    };
    *lock(&migrations.swept) = Some(key.clone());
    let node = node.clone();
    let (table, map_vnodes) = (map.slot_table().cloned(), map.vnodes());
    tokio::spawn(async move {
        let Some(table) = table else { return };
        let ranges = ranges_of(Slot::all().filter(|&s| table.owner(s) != shard));
        let migrations = node.migrations().clone();
        let _sweeping = migrations.sweeping.lock().await;
        let (me, ring, vnodes) = (node.id(), key.1.clone(), map_vnodes);
        let unchanged = |map: &ClusterMap| {
            map.migration().is_none()
                && map.ring() == ring.as_slice()
                && map.vnodes() == vnodes
                && primary_shard(map, me) == Some(shard)
        };
        let swept = sweep_ranges(&node, &ranges, &unchanged).await;
        if !unchanged(&node.map()) {
            // Cut short: the next quiet map sweeps again.
            *lock(&migrations.swept) = None;
        }
        match swept {
            Ok(0) => {}
            Ok(n) => {
                migrations
                    .swept_keys
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                info!(
                    shard = shard.0,
                    keys = n,
                    "swept keys of slots this shard gave away"
                );
            }
            Err(e) => {
                warn!(shard = shard.0, error = %e, "sweep failed; trying again");
                *lock(&migrations.swept) = None;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(list: &[u16]) -> Vec<Slot> {
        list.iter().map(|&n| Slot::new(n).unwrap()).collect()
    }

    #[test]
    fn an_import_is_caught_up_only_once_the_owner_said_how_far_it_is() {
        let mut import = Import::new(7, 1);
        import.phase = Phase::Following;
        import.through = 40;
        assert!(!import.caught_up(), "copied, but no Records heard yet");
        (import.owner_last, import.heard_owner) = (45, true);
        assert!(!import.caught_up(), "5 behind");
        import.through = 45;
        assert!(import.caught_up());
        let next = import.again("link lost".into());
        assert!(
            !next.heard_owner && !next.caught_up(),
            "a new attempt hears anew"
        );
    }

    #[tokio::test]
    async fn map_reaches_waits_for_the_version_until_its_limit() {
        let (tx, rx) = watch::channel(Arc::new(ClusterMap::new()));
        let mut next = ClusterMap::new();
        next.apply(crate::cluster::map::MapCommand::Create { vnodes: 16 })
            .unwrap();
        assert_eq!(next.version(), 1);
        let long = Duration::from_secs(60);
        let waiting = tokio::spawn(map_reaches(rx.clone(), 1, long));
        tx.send(Arc::new(next)).unwrap();
        assert!(waiting.await.unwrap(), "the map came while it waited");
        assert!(map_reaches(rx.clone(), 1, long).await, "already there");
        assert!(
            !map_reaches(rx, 2, Duration::from_millis(10)).await,
            "a map that never comes ends the wait at the limit"
        );
    }

    #[test]
    fn slots_make_ranges_and_ranges_hold_their_slots() {
        let ranges = ranges_of(slots(&[0, 1, 2, 5, 7, 8, 16383]));
        assert_eq!(ranges, [(0, 2), (5, 5), (7, 8), (16383, 16383)]);
        for n in [0, 1, 2, 5, 7, 8, 16383] {
            assert!(in_ranges(&ranges, Slot::new(n).unwrap()), "{n}");
        }
        for n in [3, 4, 6, 9, 16382] {
            assert!(!in_ranges(&ranges, Slot::new(n).unwrap()), "{n}");
        }
        assert!(ranges_of(Vec::new()).is_empty());
    }

    /// The worked examples of proto-docs/cluster.md §7.
    #[test]
    fn worked_examples_match_the_doc() {
        use crate::net::link::encode;
        const DOC: &str = include_str!("../../proto-docs/cluster.md");
        let begin = MoveRequest::Begin {
            protocol: MOVE_PROTOCOL,
            migration: 8,
            receiver: ShardId(3),
            ranges: vec![(0, 2), (5, 5)],
        };
        let resume = MoveRequest::Resume {
            protocol: MOVE_PROTOCOL,
            migration: 8,
            receiver: ShardId(3),
            ranges: vec![(0, 2)],
            checkpoint: Seq(40),
            after: Some(Bytes::from_static(b"k7")),
            through: Seq(40),
        };
        let examples = [
            ("move-begin", encode(&begin)),
            ("move-resume", encode(&resume)),
            ("move-fenced", encode(&MoveFrame::Fenced { seq: Seq(42) })),
        ];
        for (name, bytes) in examples {
            let marker = format!("<!-- bytes: {name} -->");
            let block = &DOC[DOC.find(&marker).expect("the example") + marker.len()..];
            let start = block.find("```text\n").expect("a text block") + 8;
            let end = block[start..].find("```").expect("closed") + start;
            let doc: Vec<u8> = block[start..end]
                .lines()
                .flat_map(|line| line.split('#').next().unwrap_or("").split_whitespace())
                .map(|hex| u8::from_str_radix(hex, 16).expect("hex"))
                .collect();
            assert_eq!(doc, bytes, "example {name}");
        }
    }

    #[test]
    fn frames_round_trip() {
        use crate::net::link::{FRAME_HEADER_BYTES, decode_body, decode_header, encode};
        let frames = [
            MoveFrame::Start {
                seq: Seq(9),
                total_entries: 3,
                total_bytes: 300,
            },
            MoveFrame::Records {
                mutations: vec![Mutation::Delete {
                    key: Bytes::from_static(b"k"),
                }],
                through: Seq(12),
                owner_last: Seq(14),
            },
            MoveFrame::Fenced { seq: Seq(20) },
        ];
        for frame in frames {
            let bytes = encode(&frame);
            let header: [u8; FRAME_HEADER_BYTES] = bytes[..FRAME_HEADER_BYTES].try_into().unwrap();
            let (_, crc) = decode_header(header).unwrap();
            let back: MoveFrame = decode_body(crc, &bytes[FRAME_HEADER_BYTES..]).unwrap();
            assert_eq!(back, frame);
        }
    }
}
