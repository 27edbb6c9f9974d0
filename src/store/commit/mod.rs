//! The commit pipeline: one thread that orders, logs and applies writes.
//!
//! Concurrent writers send [`WriteOp`]s over a channel; the thread drains
//! whatever is queued into one batch (group commit) and, for that batch:
//!
//! 1. evaluates each op against the current state *in order* (conditions,
//!    CAS, incr) and assigns consecutive seqs, so conditional ops are atomic;
//! 2. appends the records to the WAL with one write and at most one fsync;
//! 3. applies them to RocksDB as one batch carrying `applied_seq`;
//! 4. updates the memory tier;
//! 5. publishes the new applied seq and replies.
//!
//! Running RocksDB and fsync here keeps blocking work off the async reactor.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::Status;
use super::disk::{DiskTier, InstallMarker, SnapshotEntry, StoredValue};
use super::error::{Result, StoreError};
use super::feed::Feed;
use super::memory::{Lookup, MemoryTier};
use crate::clock::Clock;
use crate::types::End;
use crate::types::ScoreRule;
use crate::types::{Condition, Expiry, Seq, ValueKind};
use crate::wal::{Mutation, WalRecord, WalWriter};
use collections::list_elements;

mod collections;
mod scores;

/// A full-sync install flushes RocksDB after about this many bytes, which
/// is what a crashed install can resume from.
const INSTALL_FLUSH_BYTES: u64 = 8 << 20;

/// A queued write: the op, where its outcome goes, and its place in the
/// bounded queue (released only once the reply is sent).
type Queued = (WriteOp, oneshot::Sender<Reply>, OwnedSemaphorePermit);

/// Most key and value bytes folded into one commit batch: the batch is
/// copied into the WAL's buffer and RocksDB's write batch, so this bounds
/// those copies (a flood of large values otherwise multiplied what the
/// request budget holds by the batch).
const MAX_BATCH_BYTES: usize = 16 << 20;

/// Most ops folded into one commit batch.
const MAX_BATCH_OPS: usize = 1024;

/// A write as a client asked for it, before it is resolved against state.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Set {
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
        condition: Condition,
    },
    SetMany {
        entries: Vec<(Bytes, Bytes, Expiry)>,
    },
    Delete {
        key: Bytes,
        condition: Condition,
    },
    /// `Expiry::Never` removes the expiry (persist).
    Expire {
        key: Bytes,
        expiry: Expiry,
    },
    Incr {
        key: Bytes,
        delta: i64,
    },
    /// Pushes `values` one by one at `end` of the list at `key` (creating
    /// it, unless `only_if_exists`).
    Push {
        key: Bytes,
        end: End,
        values: Vec<Bytes>,
        only_if_exists: bool,
    },
    /// Pops up to `count` elements from `end` of the list at `key`, and
    /// no more than fit `max_bytes` (one at least), so that a reply can
    /// carry what was taken.
    Pop {
        key: Bytes,
        end: End,
        count: u64,
        max_bytes: u64,
    },
    /// Adds `members` (name, value) to the set or hash of `kind` at `key`,
    /// creating it; a member already there takes its new value, unless
    /// `only_new`. A member named twice counts once; its last value wins.
    AddMembers {
        key: Bytes,
        kind: ValueKind,
        members: Vec<(Bytes, Bytes)>,
        only_new: bool,
    },
    /// Removes `members` from the set, hash or sorted set of `kind` at `key`.
    RemoveMembers {
        key: Bytes,
        kind: ValueKind,
        members: Vec<Bytes>,
    },
    /// Takes up to `count` members of the set at `key`, the first in byte
    /// order, and no more than fit `max_bytes` (one at least).
    PopMembers {
        key: Bytes,
        count: u64,
        max_bytes: u64,
    },
    /// Adds `delta` to the decimal integer in `field` of the hash at `key`
    /// (a missing field or hash counts as 0).
    IncrField {
        key: Bytes,
        field: Bytes,
        delta: i64,
    },
    /// Scores `members` (name, score) in the sorted set at `key`, creating
    /// it, where `rule` allows; counts the new members, and with
    /// `count_changed` also those whose score changed.
    AddScores {
        key: Bytes,
        members: Vec<(Bytes, f64)>,
        rule: ScoreRule,
        count_changed: bool,
    },
    /// Adds `delta` to the score of `member` (0 if absent) in the sorted
    /// set at `key`, where `rule` allows the result.
    IncrScore {
        key: Bytes,
        member: Bytes,
        delta: f64,
        rule: ScoreRule,
    },
    /// Takes up to `count` members from `end` of the sorted set at `key`
    /// (`Left`: the lowest scores), no more than fit `max_bytes` (one at least).
    PopScores {
        key: Bytes,
        end: End,
        count: u64,
        max_bytes: u64,
    },
    /// Deletes of the element keys whose collection, as of this batch, is
    /// gone (the reclaim pass's candidates, judged again here, where no
    /// write can come between the judgement and the delete).
    Reclaim {
        elements: Vec<Bytes>,
    },
    /// Mutations as another shard logged them (a slot migration), or
    /// deletes sweeping keys this shard no longer owns: written as they
    /// are, unconditionally, in one record.
    Import {
        mutations: Vec<Mutation>,
    },
}

impl WriteOp {
    /// Whether resolving it reads the keys' current state (a condition,
    /// an old value, a collection's elements). New kinds read by default.
    fn reads_state(&self) -> bool {
        !matches!(
            self,
            WriteOp::Set {
                condition: Condition::Always,
                ..
            } | WriteOp::SetMany { .. }
                | WriteOp::Import { .. }
        )
    }

    /// Bytes of keys and values it carries (what its record will hold).
    fn data_len(&self) -> usize {
        match self {
            WriteOp::Set { key, value, .. } => key.len() + value.len(),
            WriteOp::SetMany { entries } => entries.iter().map(|(k, v, _)| k.len() + v.len()).sum(),
            WriteOp::Delete { key, .. }
            | WriteOp::Expire { key, .. }
            | WriteOp::Incr { key, .. }
            | WriteOp::Pop { key, .. } => key.len(),
            WriteOp::Push { key, values, .. } => {
                key.len() + values.iter().map(Bytes::len).sum::<usize>()
            }
            WriteOp::AddMembers { key, members, .. } => {
                key.len()
                    + members
                        .iter()
                        .map(|(m, v)| m.len() + v.len())
                        .sum::<usize>()
            }
            WriteOp::RemoveMembers { key, members, .. } => {
                key.len() + members.iter().map(Bytes::len).sum::<usize>()
            }
            WriteOp::PopMembers { key, .. } | WriteOp::PopScores { key, .. } => key.len(),
            WriteOp::AddScores { key, members, .. } => {
                key.len() + members.iter().map(|(m, _)| m.len() + 8).sum::<usize>()
            }
            WriteOp::IncrScore { key, member, .. } => key.len() + member.len() + 8,
            WriteOp::Reclaim { elements } => elements.iter().map(Bytes::len).sum(),
            WriteOp::IncrField { key, field, .. } => key.len() + field.len(),
            WriteOp::Import { mutations } => mutations.iter().map(|m| m.data_len() as usize).sum(),
        }
    }
}

/// What the pipeline did with one op.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Applied {
    /// Committed at this seq.
    Written(Seq),
    /// A condition did not hold; `current` is the live version, if any.
    ConditionFailed { current: Option<Seq> },
    /// The key was absent; nothing written.
    NotFound,
    /// Nothing needed writing.
    Unchanged,
    /// `incr` committed at this seq, leaving this value.
    Int(i64, Seq),
    /// A push committed at this seq, leaving the list this long.
    Len(u64, Seq),
    /// A pop took these values, committed at this seq (if it took any).
    Popped(Vec<Bytes>, Option<Seq>),
    /// This many members were added or removed, committed at this seq (if
    /// anything changed).
    Counted(u64, Option<Seq>),
    /// A sorted-set member's score after an increment (`None`: the rule
    /// refused it), committed at this seq (if anything changed).
    Score(Option<f64>, Option<Seq>),
    /// A pop took these members with their scores, committed at this seq
    /// (if it took any).
    Scored(Vec<(Bytes, f64)>, Option<Seq>),
}

/// The reply to one op: what happened, and whether its record is fsynced.
pub(crate) type Reply = Result<(Applied, bool)>;

/// Messages to the commit thread.
pub(crate) enum Msg {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Reply>,
        /// A place in the bounded queue, held until the commit thread is
        /// done with the write, even if its caller stopped waiting.
        permit: OwnedSemaphorePermit,
    },
    /// fsync the WAL now (a clean close under `never`/`interval`).
    Sync { reply: oneshot::Sender<Result<()>> },
    /// Records from the primary, with their seqs, to log and apply as is.
    Replicate {
        records: Vec<WalRecord>,
        reply: oneshot::Sender<Result<bool>>,
    },
    /// One step of a full-sync install.
    Install {
        step: InstallStep,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Finish what is queued before this, sync, and stop.
    Shutdown,
}

/// The steps of replacing the store's data with a primary's snapshot.
#[derive(Debug)]
pub enum InstallStep {
    /// Drop every entry and the WAL; the snapshot covers `marker.seq`.
    Begin(InstallMarker),
    /// Entries in key order, and the progress they bring the marker to.
    Chunk(Vec<SnapshotEntry>, InstallMarker),
    /// The snapshot is complete: the store is at `seq`.
    Finish(Seq),
}

pub(crate) struct Committer {
    pub rx: Receiver<Msg>,
    pub writer: WalWriter,
    pub disk: Arc<DiskTier>,
    pub memory: Arc<MemoryTier>,
    pub clock: Arc<dyn Clock>,
    pub status: Arc<Status>,
    pub metrics: Arc<super::StoreMetrics>,
    pub feed: Arc<Feed>,
    pub last_seq: Seq,
    /// Wake-up period for `FsyncPolicy::Interval`; `None` waits forever.
    pub sync_interval: Option<Duration>,
}

impl Committer {
    pub fn run(mut self) {
        loop {
            let first = match self.sync_interval {
                Some(period) => match self.rx.recv_timeout(period) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.sync_if_due();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            let mut shutdown = false;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Write { op, reply, permit } => {
                        batch_bytes += op.data_len();
                        batch.push((op, reply, permit));
                    }
                    Msg::Sync { reply } => {
                        // Everything queued before the sync request is committed first.
                        self.commit(std::mem::take(&mut batch));
                        let result = self.writer.sync().map_err(|e| self.wal_failed(&e));
                        if result.is_ok() {
                            self.feed.publish_durable(self.last_seq);
                        }
                        let _ = reply.send(result);
                    }
                    Msg::Replicate { records, reply } => {
                        self.commit(std::mem::take(&mut batch));
                        let _ = reply.send(self.replicate(records));
                    }
                    Msg::Install { step, reply } => {
                        self.commit(std::mem::take(&mut batch));
                        let _ = reply.send(self.install(step));
                    }
                    Msg::Shutdown => {
                        shutdown = true;
                        break;
                    }
                }
                if batch.len() < MAX_BATCH_OPS && batch_bytes < MAX_BATCH_BYTES {
                    // Empty or disconnected alike: the batch is complete.
                    next = self.rx.try_recv().ok();
                }
            }
            self.commit(batch);
            self.status.maybe_request_checkpoint();
            if shutdown {
                if let Err(e) = self.writer.sync() {
                    tracing::error!(error = %e, "final wal sync failed");
                }
                break;
            }
        }
    }

    fn sync_if_due(&mut self) {
        match self.writer.sync_if_due() {
            Ok(true) => self.feed.publish_durable(self.last_seq),
            Ok(false) => {}
            Err(e) => {
                self.wal_failed(&e);
            }
        }
    }

    fn wal_failed(&self, e: &crate::wal::WalError) -> StoreError {
        self.poison(format!("wal failure: {e}"))
    }

    /// Refuses writes from now on (I9) and returns the error to reply with.
    fn poison(&self, reason: String) -> StoreError {
        tracing::error!(%reason, "store poisoned");
        self.status.poison(reason.clone());
        StoreError::Poisoned(reason)
    }

    /// Fails every op of a batch whose records may not all have landed.
    fn fail_batch(batch: Vec<Queued>, err: &StoreError) {
        let reason = match err {
            StoreError::Poisoned(reason) => reason.clone(),
            other => other.to_string(),
        };
        for (_, reply, _permit) in batch {
            let _ = reply.send(Err(StoreError::Poisoned(reason.clone())));
        }
    }

    fn commit(&mut self, batch: Vec<Queued>) {
        if batch.is_empty() {
            return;
        }
        // IMPORTANT: check poison before ordering anything (fjall's TOCTOU note).
        if let Some(reason) = self.status.poisoned() {
            Self::fail_batch(batch, &StoreError::Poisoned(reason));
            return;
        }
        let mut state = BatchState::new(&self.disk, &self.memory, self.clock.now_ms());
        let ops: Vec<&WriteOp> = batch.iter().map(|(op, _, _)| op).collect();
        let (records, outcomes) = state.resolve(&ops, self.last_seq.next());

        let mut synced = false;
        if !records.is_empty() {
            match self.log_and_apply(records) {
                Ok(s) => synced = s,
                Err(e) => {
                    Self::fail_batch(batch, &e);
                    return;
                }
            }
        }
        for ((_, reply, _permit), outcome) in batch.into_iter().zip(outcomes) {
            let _ = reply.send(outcome.map(|applied| (applied, synced)));
        }
    }
}

impl Committer {
    /// Steps 2–5 for records that already have their seqs: WAL, RocksDB,
    /// memory tier, publish. Returns whether the records are fsynced. On
    /// failure the store is poisoned and the error says why.
    fn log_and_apply(&mut self, records: Vec<WalRecord>) -> Result<bool> {
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(false);
        };
        // IMPORTANT: WAL first: nothing reaches RocksDB or memory (or a
        // reply) that the log does not hold.
        let started = std::time::Instant::now();
        let outcome = self
            .writer
            .append(&records)
            .map_err(|e| self.wal_failed(&e))?;
        crate::metrics::observe(&self.metrics.wal_append, started.elapsed());
        self.metrics.wal_bytes.inc_by(outcome.bytes);
        self.metrics.wal_syncs.inc_by(u64::from(outcome.synced));
        self.metrics.commit_batches.inc();
        self.metrics.commit_records.inc_by(records.len() as u64);
        #[cfg(feature = "failpoints")]
        fail::fail_point!("commit_after_wal_before_disk");
        if let Err(e) = self.disk.apply(&records) {
            // The WAL holds these records; a restart replays them.
            return Err(self.poison(format!("disk tier write failed: {e}")));
        }
        // IMPORTANT: the memory tier only after RocksDB (I3).
        for record in &records {
            for mutation in &record.mutations {
                let (key, value) = stored(mutation, record.seq);
                self.memory.apply_write(key, value);
            }
        }
        self.last_seq = last;
        self.status.publish_applied(last);
        self.feed.push(records, outcome.bytes);
        if outcome.synced {
            self.feed.publish_durable(last);
        }
        Ok(outcome.synced)
    }

    /// Logs and applies a primary's records (I5: exactly the next seqs).
    fn replicate(&mut self, records: Vec<WalRecord>) -> Result<bool> {
        if let Some(reason) = self.status.poisoned() {
            return Err(StoreError::Poisoned(reason));
        }
        let mut expected = self.last_seq.next();
        for record in &records {
            if record.seq != expected {
                return Err(StoreError::ReplicationGap {
                    expected,
                    got: record.seq,
                });
            }
            expected = expected.next();
        }
        self.log_and_apply(records)
    }

    fn install(&mut self, step: InstallStep) -> Result<()> {
        if let Some(reason) = self.status.poisoned() {
            return Err(StoreError::Poisoned(reason));
        }
        match step {
            InstallStep::Begin(marker) => {
                self.disk.begin_install(&marker)?;
                self.memory.clear();
                // IMPORTANT: the old WAL must not replay over the snapshot.
                self.writer
                    .reset(marker.seq.next())
                    .map_err(|e| self.wal_failed(&e))?;
                self.last_seq = marker.seq;
            }
            InstallStep::Chunk(entries, marker) => {
                let added: u64 = entries.iter().map(SnapshotEntry::data_len).sum();
                self.disk.install_chunk(&entries, &marker)?;
                #[cfg(feature = "failpoints")]
                fail::fail_point!("install_after_chunk");
                // Flush now and then, so a crash resumes near where it stopped.
                if marker.bytes / INSTALL_FLUSH_BYTES
                    != (marker.bytes - added) / INSTALL_FLUSH_BYTES
                {
                    self.disk.flush()?;
                }
            }
            InstallStep::Finish(seq) => {
                #[cfg(feature = "failpoints")]
                fail::fail_point!("install_before_finish");
                self.disk.finish_install(seq)?;
                self.memory.clear();
                self.writer
                    .reset(seq.next())
                    .map_err(|e| self.wal_failed(&e))?;
                self.last_seq = seq;
                self.status.publish_applied(seq);
                self.status.checkpoint_done(seq);
                self.feed.reset(seq);
            }
        }
        Ok(())
    }
}

/// The state a batch sees: the tiers plus the effects of its earlier ops.
struct BatchState<'a> {
    overlay: HashMap<Bytes, Option<StoredValue>>,
    disk: &'a DiskTier,
    memory: &'a MemoryTier,
    now_ms: u64,
}

impl<'a> BatchState<'a> {
    /// A batch's view of the tiers as of `now_ms`, before any of its ops.
    fn new(disk: &'a DiskTier, memory: &'a MemoryTier, now_ms: u64) -> BatchState<'a> {
        BatchState {
            overlay: HashMap::new(),
            disk,
            memory,
            now_ms,
        }
    }

    /// Resolves `ops` in order, the first that writes at `first`: the
    /// records to log and each op's outcome.
    fn resolve(&mut self, ops: &[&WriteOp], first: Seq) -> (Vec<WalRecord>, Vec<Result<Applied>>) {
        let mut records = Vec::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut next_seq = first;
        // Only ops that read state look at the overlay, so what is written
        // from the last of them on is not recorded: a run of plain sets
        // (a pipelined SET run is one `SetMany`) records nothing.
        let record_until = ops.iter().rposition(|op| op.reads_state()).unwrap_or(0);
        for (i, op) in ops.iter().enumerate() {
            let outcome = self.evaluate(op, next_seq).map(|(applied, mutations)| {
                if !mutations.is_empty() {
                    if i < record_until {
                        self.record(next_seq, &mutations);
                    }
                    records.push(WalRecord {
                        seq: next_seq,
                        mutations,
                    });
                    next_seq = next_seq.next();
                }
                applied
            });
            outcomes.push(outcome);
        }
        (records, outcomes)
    }

    /// The key's live value as of the ops ordered so far.
    fn live(&self, key: &Bytes) -> Result<Option<StoredValue>> {
        Ok(self.current(key)?.filter(|v| !v.is_expired(self.now_ms)))
    }

    /// The key's stored value as of the ops ordered so far, expired or not.
    fn current(&self, key: &Bytes) -> Result<Option<StoredValue>> {
        let current = match self.overlay.get(key) {
            Some(v) => v.clone(),
            // The memory tier is never older than the disk tier (I3), and
            // only this thread writes, so a cached entry is current.
            None => match self.memory.peek(key) {
                Lookup::Hit(v) => Some(v),
                Lookup::Expired => None,
                Lookup::Miss => self.disk.get(key)?,
            },
        };
        Ok(current)
    }

    fn record(&mut self, seq: Seq, mutations: &[Mutation]) {
        for mutation in mutations {
            let (key, value) = stored(mutation, seq);
            self.overlay.insert(key.clone(), value);
        }
    }

    fn deadline(&self, expiry: Expiry) -> u64 {
        match expiry {
            Expiry::Never => 0,
            Expiry::InMs(ttl) => self.now_ms.saturating_add(ttl),
            Expiry::AtMs(at) => at,
        }
    }

    /// Resolves one op into the mutations to log, or an outcome with none.
    fn evaluate(&self, op: &WriteOp, seq: Seq) -> Result<(Applied, Vec<Mutation>)> {
        match op {
            WriteOp::Set {
                key,
                value,
                expiry,
                condition,
            } => {
                if *condition != Condition::Always {
                    let current = self.live(key)?.map(|v| v.seq);
                    let holds = match condition {
                        Condition::Always => true,
                        Condition::IfAbsent => current.is_none(),
                        Condition::IfPresent => current.is_some(),
                        Condition::IfVersion(v) => current == Some(*v),
                    };
                    if !holds {
                        return Ok((Applied::ConditionFailed { current }, vec![]));
                    }
                }
                let put = Mutation::Put {
                    key: key.clone(),
                    value: value.clone(),
                    expires_at_ms: self.deadline(*expiry),
                };
                Ok((Applied::Written(seq), vec![put]))
            }
            WriteOp::Import { mutations } => Ok((Applied::Written(seq), mutations.clone())),
            WriteOp::SetMany { entries } => {
                let puts = entries
                    .iter()
                    .map(|(key, value, expiry)| Mutation::Put {
                        key: key.clone(),
                        value: value.clone(),
                        expires_at_ms: self.deadline(*expiry),
                    })
                    .collect();
                Ok((Applied::Written(seq), puts))
            }
            WriteOp::Delete { key, condition } => {
                let Some(current) = self.live(key)? else {
                    // A CAS delete names a version the absent key does not have.
                    let outcome = match condition {
                        Condition::IfVersion(_) => Applied::ConditionFailed { current: None },
                        _ => Applied::NotFound,
                    };
                    return Ok((outcome, vec![]));
                };
                // `Store::delete` lets only `Always` and `IfVersion` through.
                if let Condition::IfVersion(v) = condition
                    && *v != current.seq
                {
                    let current = Some(current.seq);
                    return Ok((Applied::ConditionFailed { current }, vec![]));
                }
                let mut mutations = vec![Mutation::Delete { key: key.clone() }];
                match current.kind {
                    ValueKind::String => {}
                    ValueKind::List => mutations.extend(list_elements(key, &current.value)?),
                    ValueKind::Set | ValueKind::Hash | ValueKind::SortedSet => {
                        mutations.extend(self.member_deletes(key, current.kind, &current.value)?);
                    }
                }
                Ok((Applied::Written(seq), mutations))
            }
            WriteOp::Expire { key, expiry } => {
                let Some(current) = self.live(key)? else {
                    return Ok((Applied::NotFound, vec![]));
                };
                if *expiry == Expiry::Never && current.expires_at_ms == 0 {
                    return Ok((Applied::Unchanged, vec![]));
                }
                // A deadline already past leaves the key expired, not
                // deleted: reads skip it and the sweep removes it.
                let put = Mutation::put(
                    key.clone(),
                    current.kind,
                    current.value,
                    self.deadline(*expiry),
                );
                Ok((Applied::Written(seq), vec![put]))
            }
            WriteOp::Incr { key, delta } => {
                let current = self.live(key)?;
                let (base, expires_at_ms) = match &current {
                    None => (0, 0),
                    Some(v) if v.kind != ValueKind::String => return Err(StoreError::WrongType),
                    Some(v) => (parse_i64(&v.value)?, v.expires_at_ms),
                };
                let value = base.checked_add(*delta).ok_or(StoreError::Overflow)?;
                let put = Mutation::Put {
                    key: key.clone(),
                    value: Bytes::from(value.to_string()),
                    expires_at_ms,
                };
                Ok((Applied::Int(value, seq), vec![put]))
            }
            WriteOp::Push {
                key,
                end,
                values,
                only_if_exists,
            } => self.push(seq, key, *end, values, *only_if_exists),
            WriteOp::Pop {
                key,
                end,
                count,
                max_bytes,
            } => self.pop(seq, key, *end, *count, *max_bytes),
            WriteOp::AddMembers {
                key,
                kind,
                members,
                only_new,
            } => self.add_members(seq, key, *kind, members, *only_new),
            WriteOp::RemoveMembers { key, kind, members } => {
                self.remove_members(seq, key, *kind, members)
            }
            WriteOp::PopMembers {
                key,
                count,
                max_bytes,
            } => self.pop_members(seq, key, *count, *max_bytes),
            WriteOp::IncrField { key, field, delta } => self.incr_field(seq, key, field, *delta),
            WriteOp::Reclaim { elements } => self.reclaim(seq, elements),
            WriteOp::AddScores {
                key,
                members,
                rule,
                count_changed,
            } => self.add_scores(seq, key, members, *rule, *count_changed),
            WriteOp::IncrScore {
                key,
                member,
                delta,
                rule,
            } => self.incr_score(seq, key, member, *delta, *rule),
            WriteOp::PopScores {
                key,
                end,
                count,
                max_bytes,
            } => self.pop_scores(seq, key, *end, *count, *max_bytes),
        }
    }
}

/// The key a mutation writes and what it leaves there.
fn stored(mutation: &Mutation, seq: Seq) -> (&Bytes, Option<StoredValue>) {
    match mutation {
        Mutation::Put {
            key,
            value,
            expires_at_ms,
        } => (
            key,
            Some(StoredValue::string(seq, *expires_at_ms, value.clone())),
        ),
        Mutation::PutTyped {
            key,
            kind,
            value,
            expires_at_ms,
        } => (
            key,
            Some(StoredValue {
                seq,
                expires_at_ms: *expires_at_ms,
                value: value.clone(),
                kind: *kind,
            }),
        ),
        Mutation::Delete { key } => (key, None),
    }
}

/// Parses a stored value as `incr` needs it: an optional `-`, then 1 to 19
/// ASCII digits, nothing else, within the i64 range
/// (proto-docs/wire-protocol.md §8). `str::parse` would also take a `+`
/// and any number of leading zeros.
fn parse_i64(value: &[u8]) -> Result<i64> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(StoreError::NotAnInteger);
    }
    // Only ASCII digits and a sign: valid UTF-8, and parse fails only on
    // leaving the i64 range.
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(StoreError::NotAnInteger)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which ops `resolve` counts as readers of state.
    #[test]
    fn only_blind_writes_skip_reading_state() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let set = |condition| WriteOp::Set {
            key: b("k"),
            value: b("v"),
            expiry: Expiry::Never,
            condition,
        };
        assert!(!set(Condition::Always).reads_state());
        for condition in [
            Condition::IfAbsent,
            Condition::IfPresent,
            Condition::IfVersion(Seq(1)),
        ] {
            assert!(set(condition).reads_state(), "{condition:?}");
        }
        let set_many = WriteOp::SetMany {
            entries: vec![(b("k"), b("v"), Expiry::InMs(5))],
        };
        assert!(!set_many.reads_state());
        let import = WriteOp::Import { mutations: vec![] };
        assert!(!import.reads_state());
        let readers = [
            WriteOp::Delete {
                key: b("k"),
                condition: Condition::Always,
            },
            WriteOp::Expire {
                key: b("k"),
                expiry: Expiry::AtMs(9),
            },
            WriteOp::Incr {
                key: b("k"),
                delta: 1,
            },
            WriteOp::Push {
                key: b("k"),
                end: End::Left,
                values: vec![b("v")],
                only_if_exists: false,
            },
        ];
        assert!(readers.iter().all(WriteOp::reads_state));
    }

    /// An empty disk tier in a temporary directory (kept alive by the
    /// first value) and a memory tier, for a `BatchState` over them.
    pub(super) fn scratch_tiers() -> (tempfile::TempDir, DiskTier, MemoryTier) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::SystemClock);
        let config = super::super::disk::DiskConfig::default();
        let disk = DiskTier::open(&dir.path().join("db"), &config, clock.clone()).unwrap();
        (dir, disk, MemoryTier::new(1 << 20, clock))
    }

    /// Ops later in a batch see what earlier ones wrote, whether or not
    /// the writes after the last reader are recorded.
    #[test]
    fn later_ops_of_a_batch_read_what_earlier_ones_wrote() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let (_dir, disk, memory) = scratch_tiers();
        let mut state = BatchState::new(&disk, &memory, 0);
        let set = |key: &str, value: &str, condition| WriteOp::Set {
            key: b(key),
            value: b(value),
            expiry: Expiry::Never,
            condition,
        };
        let ops = [
            set("a", "1", Condition::Always),
            set("a", "2", Condition::IfAbsent),
            WriteOp::SetMany {
                entries: vec![(b("n"), b("5"), Expiry::Never)],
            },
            WriteOp::Incr {
                key: b("n"),
                delta: 1,
            },
            // After the last reader: written, not recorded.
            set("z", "9", Condition::Always),
        ];
        let ops: Vec<&WriteOp> = ops.iter().collect();
        let (records, outcomes) = state.resolve(&ops, Seq(10));
        let outcomes: Vec<Applied> = outcomes.into_iter().map(|o| o.unwrap()).collect();
        assert!(matches!(outcomes[0], Applied::Written(Seq(10))));
        assert!(
            matches!(
                outcomes[1],
                Applied::ConditionFailed {
                    current: Some(Seq(10))
                }
            ),
            "{:?}",
            outcomes[1]
        );
        assert!(matches!(outcomes[2], Applied::Written(Seq(11))));
        assert!(
            matches!(outcomes[3], Applied::Int(6, Seq(12))),
            "{:?}",
            outcomes[3]
        );
        assert!(matches!(outcomes[4], Applied::Written(Seq(13))));
        let seqs: Vec<u64> = records.iter().map(|r| r.seq.0).collect();
        assert_eq!(seqs, [10, 11, 12, 13]);
        assert!(state.overlay.contains_key(&b("n")));
        assert!(!state.overlay.contains_key(&b("z")));
    }
}
