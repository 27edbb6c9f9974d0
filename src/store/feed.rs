//! The recent-records feed: what the commit thread just applied, kept in
//! memory so replication streams it without reading the WAL back.
//!
//! A bounded window of whole commit batches. A reader that falls behind
//! the window reads the WAL instead (`Store::records_from`). Each batch also
//! remembers when it was committed and the WAL bytes up to it, which is
//! what replication lag in seconds and bytes is measured against.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::types::Seq;
use crate::wal::WalRecord;

struct Batch {
    first: Seq,
    last: Seq,
    records: Arc<[WalRecord]>,
    /// WAL bytes appended up to and including this batch.
    bytes_end: u64,
    /// WAL bytes of this batch.
    bytes: u64,
    /// What the batch's records take in memory (approximately).
    held: u64,
    at: Instant,
}

#[derive(Default)]
struct Window {
    batches: VecDeque<Batch>,
    held_bytes: u64,
    bytes_total: u64,
}

/// Recently committed records plus a watch on the applied seq.
pub(crate) struct Feed {
    window: Mutex<Window>,
    max_bytes: u64,
    applied: watch::Sender<Seq>,
    durable: watch::Sender<Seq>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl Feed {
    pub fn new(max_bytes: u64, applied: Seq, durable: Seq) -> Feed {
        Feed {
            window: Mutex::new(Window::default()),
            max_bytes,
            applied: watch::Sender::new(applied),
            durable: watch::Sender::new(durable),
        }
    }

    /// Announces that the WAL is fsynced up to `seq`.
    pub fn publish_durable(&self, seq: Seq) {
        self.durable.send_if_modified(|d| {
            let newer = seq > *d;
            if newer {
                *d = seq;
            }
            newer
        });
    }

    pub fn subscribe_durable(&self) -> watch::Receiver<Seq> {
        self.durable.subscribe()
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a committed batch of `bytes` WAL bytes and announces its last seq.
    pub fn push(&self, records: Vec<WalRecord>, bytes: u64) {
        let (Some(first), Some(last)) = (
            records.first().map(|r| r.seq),
            records.last().map(|r| r.seq),
        ) else {
            return;
        };
        // In memory a record costs its keys and values plus the structs
        // around them, well above its WAL frame: budget what is held.
        let held: u64 = records
            .iter()
            .flat_map(|r| &r.mutations)
            .map(|m| m.data_len() + 96)
            .sum();
        {
            let mut w = self.window();
            w.bytes_total += bytes;
            let bytes_end = w.bytes_total;
            w.held_bytes += held;
            w.batches.push_back(Batch {
                first,
                last,
                records: records.into(),
                bytes_end,
                bytes,
                held,
                at: Instant::now(),
            });
            while w.held_bytes > self.max_bytes && w.batches.len() > 1 {
                if let Some(old) = w.batches.pop_front() {
                    w.held_bytes -= old.held;
                }
            }
        }
        self.applied.send_replace(last);
    }

    /// Forgets everything (a full-sync install replaced the data) and
    /// announces `applied`.
    pub fn reset(&self, applied: Seq) {
        let mut w = self.window();
        w.batches.clear();
        w.held_bytes = 0;
        drop(w);
        self.applied.send_replace(applied);
        // An installed snapshot is flushed to RocksDB: durable as a whole.
        self.durable.send_replace(applied);
    }

    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.applied.subscribe()
    }

    /// Records from `from` on, up to about `max_bytes`, if the window still
    /// holds `from`; `None` means read the WAL.
    pub fn read(&self, from: Seq, max_bytes: u64) -> Option<Vec<WalRecord>> {
        let w = self.window();
        let start = w.batches.iter().position(|b| b.last >= from)?;
        if w.batches[start].first > from {
            return None;
        }
        let mut out = Vec::new();
        let mut taken = 0;
        for batch in w.batches.range(start..) {
            out.extend(batch.records.iter().filter(|r| r.seq >= from).cloned());
            taken += batch.bytes;
            if taken >= max_bytes {
                break;
            }
        }
        Some(out)
    }

    /// How far `acked` is behind the newest batch: WAL bytes and the age
    /// of the oldest batch it lacks. Beyond the window: the window's span.
    pub fn lag(&self, acked: Seq) -> (u64, f64) {
        let w = self.window();
        let Some(newest) = w.batches.back() else {
            return (0, 0.0);
        };
        if acked >= newest.last {
            return (0, 0.0);
        }
        let missing = w.batches.iter().find(|b| b.last > acked).unwrap_or(newest);
        let before = missing.bytes_end - missing.bytes;
        (
            newest.bytes_end - before,
            missing.at.elapsed().as_secs_f64(),
        )
    }
}
