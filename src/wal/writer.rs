//! [`WalWriter`]: batches in, one `write_all` and at most one fdatasync out.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::fs::WalFile;
use super::record::encode_frame_into;
use super::segment::{SEGMENT_HEADER_LEN, SegmentHeader, segment_file_name};
use super::{FsyncPolicy, SegmentMeta, Shared, WalError, WalRecord};
use crate::types::Seq;

/// What one [`WalWriter::append`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Whether an fsync covering this batch completed before `append`
    /// returned (always under [`FsyncPolicy::Always`]). If `false` the batch
    /// survives a process crash but not a power loss, until a later sync.
    pub synced: bool,
    /// Bytes the batch's frames took in the log.
    pub bytes: u64,
}

/// What seq the next record must have.
#[derive(Clone, Copy)]
enum Next {
    /// The log is empty: any.
    Any,
    Exactly(Seq),
    /// The previous record had seq `u64::MAX`.
    Exhausted,
}

impl Next {
    fn after(seq: Seq) -> Next {
        seq.0
            .checked_add(1)
            .map_or(Next::Exhausted, |s| Next::Exactly(Seq(s)))
    }
}

/// The segment the writer appends to.
pub(super) struct Active {
    pub file: Box<dyn WalFile>,
    pub path: PathBuf,
    pub first_seq: Seq,
    /// Bytes in the file: header plus complete frames.
    pub len: u64,
}

/// The single writer of a log, owned by the store's commit thread.
///
/// # Poisoning
///
/// If a write or fsync fails, that call returns the error and the log is
/// poisoned for good: every later `append`, `sync` or `sync_if_due` returns
/// [`WalError::Poisoned`]. fsync is never retried, because after a failed
/// fsync the kernel may have dropped the dirty pages and a second fsync
/// would report success for lost data. The node must restart; recovery then
/// keeps exactly what reached the disk.
///
/// Dropping the writer does not sync: call [`WalWriter::sync`] first on a
/// clean shutdown under `Interval` or `Never`.
pub struct WalWriter {
    shared: Arc<Shared>,
    active: Option<Active>,
    /// Last seq written.
    last_seq: Option<Seq>,
    /// Reused encoding buffer: one batch, all frames.
    buf: Vec<u8>,
    /// Bytes written to the active segment since its last fdatasync.
    unsynced_bytes: u64,
    last_sync: Instant,
}

impl fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalWriter")
            .field("active", &self.active.as_ref().map(|a| (&a.path, a.len)))
            .field("last_seq", &self.last_seq)
            .field("unsynced_bytes", &self.unsynced_bytes)
            .finish_non_exhaustive()
    }
}

impl WalWriter {
    pub(super) fn new(shared: Arc<Shared>, active: Option<Active>, last_seq: Option<Seq>) -> Self {
        WalWriter {
            shared,
            active,
            last_seq,
            buf: Vec::new(),
            unsynced_bytes: 0,
            last_sync: Instant::now(),
        }
    }

    /// Appends a batch of records with one `write_all`, then syncs per the
    /// [`FsyncPolicy`] (at most one fdatasync for the whole batch: group
    /// commit).
    ///
    /// The seqs must be consecutive and continue [`WalWriter::last_seq`]; if
    /// the log is empty, the batch may start at any seq and starts a segment
    /// named by it. Before the batch, if the active segment has reached
    /// `segment_bytes`, the writer syncs it, creates the next segment, writes
    /// and syncs its header and syncs the directory. An empty batch does
    /// nothing. Readers see the batch once `write_all` has returned.
    ///
    /// # Errors
    ///
    /// - [`WalError::Poisoned`] if an earlier write or fsync failed.
    /// - [`WalError::SeqGap`] / [`WalError::RecordTooLarge`] /
    ///   [`WalError::Encode`]: the batch was refused, nothing was written,
    ///   the log is still usable.
    /// - [`WalError::Io`] / [`WalError::SyncFailed`]: a write or fsync
    ///   failed; the log is now poisoned and the batch must be treated as
    ///   not durable (it may or may not survive a restart).
    pub fn append(&mut self, records: &[WalRecord]) -> Result<AppendOutcome, WalError> {
        // IMPORTANT: the poison check comes first: after a failed write or
        // fsync nothing may be appended (or acknowledged) again.
        if self.shared.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(AppendOutcome {
                synced: self.unsynced_bytes == 0,
                bytes: 0,
            });
        };
        self.check_seqs(records)?;

        // Encode the whole batch before touching the file, so a refused
        // record leaves nothing behind.
        self.buf.clear();
        for record in records {
            encode_frame_into(record, &mut self.buf, self.shared.cfg.max_record_bytes)?;
        }
        let bytes = self.buf.len() as u64;

        let rotate = match &self.active {
            None => true,
            Some(a) => a.len >= self.shared.cfg.segment_bytes,
        };
        if rotate {
            self.rotate(first.seq)
                .inspect_err(|_| self.shared.poison())?;
        }
        let Some(active) = self.active.as_mut() else {
            // `rotate` either installs a segment or fails.
            return Err(WalError::Poisoned);
        };

        #[cfg(feature = "failpoints")]
        fail::fail_point!("wal_before_write");
        if let Err(source) = active.file.write_all(&self.buf) {
            self.shared.poison();
            return Err(WalError::Io {
                path: active.path.clone(),
                source,
            });
        }
        active.len += bytes;
        self.unsynced_bytes += bytes;
        self.last_seq = Some(last.seq);
        // IMPORTANT: publish the watermark only after write_all returned, so
        // a concurrent reader never sees a partly written frame.
        {
            let len = active.len;
            let mut state = self.shared.state();
            if let Some(seg) = state.segments.last_mut() {
                seg.len = len;
            }
            state.last_seq = Some(last.seq);
        }
        #[cfg(feature = "failpoints")]
        fail::fail_point!("wal_after_write_before_sync");

        let synced = match self.shared.cfg.fsync {
            FsyncPolicy::Always => {
                self.sync_now()?;
                true
            }
            FsyncPolicy::Interval(every) => {
                if self.last_sync.elapsed() >= every {
                    self.sync_now()?;
                    true
                } else {
                    false
                }
            }
            FsyncPolicy::Never => false,
        };
        Ok(AppendOutcome { synced, bytes })
    }

    /// Under [`FsyncPolicy::Interval`], syncs if unsynced bytes exist and
    /// the last sync is at least one interval old; call it on a timer.
    /// Returns whether it synced. Does nothing under the other policies.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`], or [`WalError::SyncFailed`] (which poisons).
    pub fn sync_if_due(&mut self) -> Result<bool, WalError> {
        if self.shared.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        match self.shared.cfg.fsync {
            FsyncPolicy::Interval(every)
                if self.unsynced_bytes > 0 && self.last_sync.elapsed() >= every =>
            {
                self.sync_now()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Makes everything appended so far durable (whatever the policy).
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`], or [`WalError::SyncFailed`] (which poisons).
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.shared.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        if self.unsynced_bytes > 0 {
            self.sync_now()?;
        }
        Ok(())
    }

    /// Discards the whole log and makes the next append start at `next`.
    ///
    /// For a store whose disk tier is ahead of the log (a power loss under
    /// `interval` or `never` after the disk tier had flushed): every record
    /// in the log is covered, and new writes must continue after the disk
    /// tier's seq instead of reusing seqs. Deletes every segment (oldest
    /// first, each deletion made durable), then creates an empty segment
    /// named `next`. Does nothing if `next` already follows
    /// [`WalWriter::last_seq`].
    ///
    /// # Errors
    ///
    /// - [`WalError::Poisoned`].
    /// - [`WalError::SeqGap`] if `next` is not beyond the last seq (that
    ///   would reuse seqs); nothing is changed.
    /// - [`WalError::Io`] / [`WalError::SyncFailed`]: the log is poisoned.
    pub fn restart_at(&mut self, next: Seq) -> Result<(), WalError> {
        if self.shared.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        if let Some(last) = self.last_seq {
            let follows = last.0.checked_add(1);
            if follows == Some(next.0) {
                return Ok(());
            }
            if next <= last {
                return Err(WalError::SeqGap {
                    expected: Seq(last.0.saturating_add(1)),
                    got: next,
                });
            }
        }
        tracing::warn!(
            dir = %self.shared.cfg.dir.display(), %next,
            "wal restarted: every record was covered by the disk tier"
        );
        self.restart(next).inspect_err(|_| self.shared.poison())
    }

    /// Deletes every segment and starts an empty log whose next record is
    /// `next`, whatever came before: a full-sync install replaced the state
    /// the old records led to. The caller guarantees the disk tier holds
    /// everything up to `next - 1`.
    ///
    /// # Errors
    ///
    /// [`WalError::Poisoned`]; [`WalError::Io`] / [`WalError::SyncFailed`]
    /// poison the log.
    pub fn reset(&mut self, next: Seq) -> Result<(), WalError> {
        if self.shared.is_poisoned() {
            return Err(WalError::Poisoned);
        }
        tracing::info!(dir = %self.shared.cfg.dir.display(), %next, "wal reset for a full-sync install");
        self.restart(next).inspect_err(|_| self.shared.poison())
    }

    fn restart(&mut self, next: Seq) -> Result<(), WalError> {
        // Keep `remove_covered` out while the segment list is rebuilt.
        let shared = Arc::clone(&self.shared);
        let _serial = shared.remove_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.active = None;
        self.last_seq = None;
        self.unsynced_bytes = 0;
        let old = {
            let mut state = shared.state();
            state.last_seq = None;
            state.durable_seq = None;
            std::mem::take(&mut state.segments)
        };
        let dir = &shared.cfg.dir;
        for seg in &old {
            match shared.fs.remove(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(WalError::Io {
                        path: seg.path.clone(),
                        source,
                    });
                }
            }
            // IMPORTANT: oldest first, each removal durable before the next,
            // and all of them before the new segment exists: a power loss
            // must never leave old segments and the new one with a gap between.
            shared
                .fs
                .sync_dir(dir)
                .map_err(|source| WalError::SyncFailed {
                    path: dir.clone(),
                    source,
                })?;
        }
        tracing::debug!(dir = %dir.display(), segments_removed = old.len(), %next, "wal emptied");
        self.rotate(next)
    }

    /// Seq of the last record appended, `None` if the log is empty.
    pub fn last_seq(&self) -> Option<Seq> {
        self.last_seq
    }

    fn check_seqs(&self, records: &[WalRecord]) -> Result<(), WalError> {
        let mut next = match (self.last_seq, &self.active) {
            (Some(last), _) => Next::after(last),
            // An empty active segment still fixes the next seq: its name.
            (None, Some(active)) => Next::Exactly(active.first_seq),
            (None, None) => Next::Any,
        };
        for record in records {
            match next {
                Next::Exactly(want) if record.seq != want => {
                    return Err(WalError::SeqGap {
                        expected: want,
                        got: record.seq,
                    });
                }
                Next::Exhausted => return Err(WalError::SeqOverflow),
                _ => {}
            }
            next = Next::after(record.seq);
        }
        Ok(())
    }

    /// fdatasync of the active segment; poisons on failure.
    fn sync_now(&mut self) -> Result<(), WalError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        if let Err(source) = active.file.sync_data() {
            // IMPORTANT: never retry: the failed pages may be gone already.
            self.shared.poison();
            return Err(WalError::SyncFailed {
                path: active.path.clone(),
                source,
            });
        }
        self.unsynced_bytes = 0;
        self.last_sync = Instant::now();
        self.shared.state().durable_seq = self.last_seq;
        Ok(())
    }

    /// Seals the active segment (if any) and starts one named `first_seq`.
    /// The caller poisons the log on error.
    fn rotate(&mut self, first_seq: Seq) -> Result<(), WalError> {
        // IMPORTANT: sync the old segment before creating the next one. If the
        // new segment could survive a power loss while the old one's tail did
        // not, recovery would find a gap in the middle of the log.
        if self.unsynced_bytes > 0 {
            self.sync_now()?;
        }
        let dir = &self.shared.cfg.dir;
        let fs = &self.shared.fs;
        let path = dir.join(segment_file_name(first_seq));
        let io = |source| WalError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs.create(&path).map_err(io)?;
        file.write_all(&SegmentHeader { first_seq }.encode())
            .map_err(io)?;
        // IMPORTANT: the header, then the directory entry, are durable before
        // any record goes in, so a power loss leaves either no file or a file
        // with a valid header.
        file.sync_data().map_err(|source| WalError::SyncFailed {
            path: path.clone(),
            source,
        })?;
        fs.sync_dir(dir).map_err(|source| WalError::SyncFailed {
            path: dir.clone(),
            source,
        })?;
        tracing::debug!(path = %path.display(), "wal segment created");
        self.shared.state().segments.push(SegmentMeta {
            first_seq,
            path: path.clone(),
            len: SEGMENT_HEADER_LEN as u64,
        });
        self.active = Some(Active {
            file,
            path,
            first_seq,
            len: SEGMENT_HEADER_LEN as u64,
        });
        self.unsynced_bytes = 0;
        Ok(())
    }
}
