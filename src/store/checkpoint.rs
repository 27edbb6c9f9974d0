//! Checkpoints: make RocksDB durable on its own, then drop the WAL it covers.
//!
//! A checkpoint reads the applied seq, flushes RocksDB (waiting), and then
//! deletes WAL segments wholly at or below both that seq and the lowest
//! seq anything still holds (replication, later) — I7. Runs periodically on
//! its own thread, when the WAL grows past a size, and on demand.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Status;
use super::disk::DiskTier;
use super::error::Result;
use crate::types::Seq;
use crate::wal::Wal;

/// What one checkpoint achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Every record up to this seq is now durable in RocksDB.
    pub covered: Seq,
    /// WAL segments deleted.
    pub segments_removed: usize,
}

/// Seqs that WAL retention must keep (e.g. what a replica still needs).
#[derive(Debug, Default)]
pub(crate) struct Holds {
    next_id: u64,
    by_id: BTreeMap<u64, Seq>,
}

/// Keeps WAL records from `seq` on from being deleted while it lives.
#[derive(Debug)]
pub struct WalHold {
    id: u64,
    holds: Arc<Mutex<Holds>>,
}

impl WalHold {
    pub(crate) fn new(holds: &Arc<Mutex<Holds>>, seq: Seq) -> WalHold {
        let mut guard = lock(holds);
        let id = guard.next_id;
        guard.next_id += 1;
        guard.by_id.insert(id, seq);
        WalHold {
            id,
            holds: holds.clone(),
        }
    }

    /// Moves the hold forward (the holder no longer needs older records).
    pub fn advance(&self, seq: Seq) {
        lock(&self.holds).by_id.insert(self.id, seq);
    }
}

impl Drop for WalHold {
    fn drop(&mut self) {
        lock(&self.holds).by_id.remove(&self.id);
    }
}

use crate::sync::lock;

/// The checkpoint procedure, shared by the periodic thread and callers.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    pub disk: Arc<DiskTier>,
    pub wal: Wal,
    pub status: Arc<Status>,
    pub holds: Arc<Mutex<Holds>>,
    /// Serialises checkpoints.
    pub running: Mutex<()>,
}

impl Checkpointer {
    pub fn checkpoint(&self) -> Result<CheckpointReport> {
        let _one_at_a_time = lock(&self.running);
        // IMPORTANT: read the applied seq *before* the flush: everything up
        // to it was written to RocksDB before the flush began, so it is in
        // the flushed files afterwards.
        let covered = self.status.applied();
        self.disk.flush()?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("checkpoint_after_flush");
        // The holds are read again before each segment goes (under the
        // WAL's segment lock; lock order: segments, then holds), so a hold
        // taken while older segments are being deleted is honoured.
        let deletable = || {
            let mut keep_from = covered.next();
            if let Some(held) = lock(&self.holds).by_id.values().min() {
                keep_from = keep_from.min(*held);
            }
            Seq(keep_from.0.saturating_sub(1))
        };
        let segments_removed = self.wal.remove_covered_by(deletable)?;
        self.status.checkpoint_done(covered);
        tracing::debug!(%covered, segments_removed, "checkpoint");
        Ok(CheckpointReport {
            covered,
            segments_removed,
        })
    }

    /// The periodic loop: every `interval`, or sooner when asked.
    pub fn run(&self, interval: Option<Duration>, wake: &(Mutex<Wake>, Condvar)) {
        let (state, cvar) = wake;
        let mut last = Instant::now();
        loop {
            let mut guard = lock(state);
            loop {
                if guard.stop {
                    return;
                }
                if guard.requested {
                    break;
                }
                if let Some(interval) = interval {
                    let elapsed = last.elapsed();
                    if elapsed >= interval {
                        break;
                    }
                    guard = cvar
                        .wait_timeout(guard, interval - elapsed)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                } else {
                    guard = cvar.wait(guard).unwrap_or_else(|p| p.into_inner());
                }
            }
            guard.requested = false;
            drop(guard);
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "periodic checkpoint failed; will retry");
            }
            last = Instant::now();
        }
    }
}

/// Wake-up flags of the checkpoint thread.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pub requested: bool,
    pub stop: bool,
}
