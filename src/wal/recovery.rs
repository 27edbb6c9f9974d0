//! [`Wal::open`]: list the segments, validate every header and record,
//! and deal with damage according to the [`RecoveryMode`].
//!
//! Rules: `proto-docs/wal-format.md`, section "Recovery".

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::fs::WalFs;
use super::segment::{
    HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_name, scan_records,
};
use super::writer::{Active, WalWriter};
use super::{
    CorruptReason, Recovered, RecoveryMode, SEGMENT_EXTENSION, SegmentMeta, Shared, State, Wal,
    WalConfig, WalError,
};
use crate::types::Seq;

/// What [`Wal::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in the log after recovery.
    pub segments: usize,
    /// Valid records in the log after recovery.
    pub records: u64,
    /// Seq of the first record, `None` if the log is empty.
    pub first_seq: Option<Seq>,
    /// Seq of the last record, `None` if the log is empty.
    pub last_seq: Option<Seq>,
    /// Set if recovery cut the log: a torn tail, or a point-in-time cut.
    pub truncated: Option<TruncatedTail>,
}

/// Where and how much recovery cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment that was cut (or deleted, if `offset` is 0).
    pub file: PathBuf,
    /// Its new length: the end of its last good record; 0 if the file was
    /// deleted (a torn or bad header).
    pub offset: u64,
    /// Bytes dropped from `file`.
    pub bytes_dropped: u64,
    /// Segment files deleted: `file` itself if `offset` is 0, plus every
    /// later segment under [`RecoveryMode::PointInTime`].
    pub segments_removed: usize,
    /// What was wrong at `offset`.
    pub reason: CorruptReason,
}

impl Wal {
    /// Opens the log in `cfg.dir` (created if missing) and recovers it.
    ///
    /// Scans every segment in seq order and checks each header, each
    /// record's length, CRC and encoding, and seq continuity within and
    /// across segments. Damage is handled per [`RecoveryMode`]: a torn
    /// tail (damage in the last segment with no valid record after it, or
    /// a last segment shorter than a header) is cut under
    /// `TolerateCorruptTail` and `PointInTime`; anything else stops the
    /// open unless the mode is `PointInTime`, which cuts the log at the
    /// first bad record and deletes later segments. Whatever it keeps is
    /// fsynced before `open` returns.
    ///
    /// The returned writer continues the last segment, or starts a new one
    /// at the first append if the log is empty.
    ///
    /// # Errors
    ///
    /// - [`WalError::Corrupt`] (names the file and byte offset, and says
    ///   how to proceed) or, under `Strict`, [`WalError::TornTail`].
    /// - [`WalError::UnsupportedVersion`] in any mode: a segment from an
    ///   unknown format version is never cut.
    /// - [`WalError::Io`] / [`WalError::SyncFailed`] from the file system,
    ///   [`WalError::InvalidConfig`].
    pub fn open(cfg: WalConfig, fs: Arc<dyn WalFs>) -> Result<Recovered, WalError> {
        cfg.validate()?;
        fs.create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let files = list_segments(&*fs, &cfg.dir)?;

        let mut rec = Recovery {
            cfg: &cfg,
            fs: &*fs,
            kept: Vec::new(),
            records: 0,
            last_seq: None,
            truncated: None,
        };
        for (i, (first_seq, path)) in files.iter().enumerate() {
            let is_last = i + 1 == files.len();
            if let Some(damage) = rec.segment(*first_seq, path, is_last)? {
                rec.cut(path, &files[i + 1..], damage)?;
                break;
            }
        }
        rec.drop_empty_log()?;
        let Recovery {
            kept,
            records,
            last_seq,
            truncated,
            ..
        } = rec;

        let active = match kept.last() {
            Some(seg) => {
                let mut file = fs.open_append(&seg.path).map_err(io_err(&seg.path))?;
                // IMPORTANT: after a process crash, the page cache may hold
                // bytes that were never fsynced. Recovery just read them and
                // the store will replay them, so make them durable now: a
                // power loss must not take back what was already replayed.
                file.sync_data().map_err(|source| WalError::SyncFailed {
                    path: seg.path.clone(),
                    source,
                })?;
                Some(Active {
                    file,
                    path: seg.path.clone(),
                    first_seq: seg.first_seq,
                    len: seg.len,
                })
            }
            None => None,
        };
        // Persist whatever recovery deleted (and any earlier creations).
        fs.sync_dir(&cfg.dir)
            .map_err(|source| WalError::SyncFailed {
                path: cfg.dir.clone(),
                source,
            })?;

        let report = RecoveryReport {
            segments: kept.len(),
            records,
            first_seq: if records > 0 {
                kept.first().map(|s| s.first_seq)
            } else {
                None
            },
            last_seq,
            truncated,
        };
        tracing::info!(
            dir = %cfg.dir.display(),
            segments = report.segments,
            records = report.records,
            first_seq = ?report.first_seq,
            last_seq = ?report.last_seq,
            truncated = report.truncated.is_some(),
            "wal recovered"
        );
        let shared = Arc::new(Shared {
            cfg,
            fs,
            poisoned: AtomicBool::new(false),
            state: Mutex::new(State {
                segments: kept,
                last_seq,
                durable_seq: last_seq,
            }),
            remove_lock: Mutex::new(()),
        });
        Ok(Recovered {
            wal: Wal {
                shared: Arc::clone(&shared),
            },
            writer: WalWriter::new(shared, active, last_seq),
            report,
        })
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The segment files in `dir`, sorted by first seq. Files that do not look
/// like segments are left alone.
pub(super) fn list_segments(fs: &dyn WalFs, dir: &Path) -> Result<Vec<(Seq, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for path in fs.list(dir).map_err(io_err(dir))? {
        match path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_name)
        {
            Some(seq) => out.push((seq, path)),
            None if path.extension().is_some_and(|e| e == SEGMENT_EXTENSION) => {
                tracing::warn!(path = %path.display(), "ignoring a .wal file whose name is not a segment name");
            }
            None => {}
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// The first damage found in a segment.
struct Damage {
    /// Byte offset of the bad frame; 0 if the whole file is unusable.
    offset: u64,
    reason: CorruptReason,
    /// Whether it qualifies as a torn tail.
    torn: bool,
    /// The file's length.
    file_len: u64,
}

struct Recovery<'a> {
    cfg: &'a WalConfig,
    fs: &'a dyn WalFs,
    /// Segments kept so far, with their (post-cut) lengths.
    kept: Vec<SegmentMeta>,
    records: u64,
    last_seq: Option<Seq>,
    truncated: Option<TruncatedTail>,
}

impl Recovery<'_> {
    /// Validates one segment. Returns its damage, if any; a segment whose
    /// records are (at least partly) usable is added to `kept`.
    fn segment(
        &mut self,
        first_seq: Seq,
        path: &Path,
        is_last: bool,
    ) -> Result<Option<Damage>, WalError> {
        let data = self.fs.read(path).map_err(io_err(path))?;
        let file_len = data.len() as u64;
        let whole_file = |reason, torn| {
            Some(Damage {
                offset: 0,
                reason,
                torn,
                file_len,
            })
        };

        // Continuity across segments: this one must start where the kept
        // ones end (an empty kept segment still fixes the next seq).
        let expected = match (self.last_seq, self.kept.last()) {
            (Some(last), _) => Some(Seq(last.0.saturating_add(1))),
            (None, Some(seg)) => Some(seg.first_seq),
            (None, None) => None,
        };
        if let Some(expected) = expected
            && expected != first_seq
        {
            return Ok(whole_file(
                CorruptReason::SegmentGap {
                    expected,
                    found: first_seq,
                },
                false,
            ));
        }

        match SegmentHeader::decode(&data) {
            Ok(h) if h.first_seq == first_seq => {}
            Ok(h) => {
                return Ok(whole_file(
                    CorruptReason::HeaderSeqMismatch {
                        header: h.first_seq,
                        name: first_seq,
                    },
                    false,
                ));
            }
            Err(HeaderError::Version(version)) => {
                return Err(WalError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    version,
                });
            }
            Err(HeaderError::Corrupt(reason)) => {
                // A crash while rotating can leave the newest segment shorter
                // than its header (the header is synced before any record).
                let torn = is_last && matches!(reason, CorruptReason::ShortHeader { .. });
                return Ok(whole_file(reason, torn));
            }
        }

        let scan = scan_records(
            &data,
            SEGMENT_HEADER_LEN,
            first_seq,
            self.cfg.max_record_bytes,
            |_, _| {},
        );
        self.records += scan.records;
        if scan.last_seq.is_some() {
            self.last_seq = scan.last_seq;
        }
        self.kept.push(SegmentMeta {
            first_seq,
            path: path.to_path_buf(),
            len: scan.good_end as u64,
        });
        Ok(scan.bad.map(|bad| Damage {
            offset: bad.offset as u64,
            reason: bad.reason,
            torn: is_last && !bad.later_valid,
            file_len,
        }))
    }

    /// Applies the recovery mode to `damage` in `path`; `later` are the
    /// segments after it.
    fn cut(
        &mut self,
        path: &Path,
        later: &[(Seq, PathBuf)],
        damage: Damage,
    ) -> Result<(), WalError> {
        let Damage {
            offset,
            reason,
            torn,
            file_len,
        } = damage;
        let dropped = file_len.saturating_sub(offset);
        match (self.cfg.recovery, torn) {
            (RecoveryMode::Strict, true) => {
                return Err(WalError::TornTail {
                    path: path.to_path_buf(),
                    offset,
                    reason,
                    dropped,
                });
            }
            (RecoveryMode::Strict | RecoveryMode::TolerateCorruptTail, false) => {
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset,
                    reason,
                });
            }
            (RecoveryMode::TolerateCorruptTail | RecoveryMode::PointInTime, true)
            | (RecoveryMode::PointInTime, false) => {}
        }

        // IMPORTANT: delete later segments newest first and make that durable
        // before cutting this one: an interrupted cut then leaves damage that
        // the next open finds again, never a log that skips records.
        for (_, p) in later.iter().rev() {
            self.fs.remove(p).map_err(io_err(p))?;
        }
        if !later.is_empty() {
            self.sync_dir()?;
        }
        if offset == 0 {
            self.fs.remove(path).map_err(io_err(path))?;
            self.sync_dir()?;
        } else {
            self.fs.truncate(path, offset).map_err(io_err(path))?;
        }
        let segments_removed = later.len() + usize::from(offset == 0);

        if torn {
            tracing::warn!(
                file = %path.display(),
                offset,
                bytes_dropped = dropped,
                %reason,
                "wal: dropped a torn tail (a crash during an append)"
            );
        } else {
            tracing::error!(
                file = %path.display(),
                offset,
                bytes_dropped = dropped,
                segments_removed,
                %reason,
                "wal: POINT-IN-TIME RECOVERY cut the log at corrupt data; every later record is lost"
            );
        }
        self.truncated = Some(TruncatedTail {
            file: path.to_path_buf(),
            offset,
            bytes_dropped: dropped,
            segments_removed,
            reason,
        });
        Ok(())
    }

    /// A log without records keeps no segment: the first append may then
    /// start at any seq. (Only a single header-only segment can get here,
    /// e.g. after a crash right after rotation.)
    fn drop_empty_log(&mut self) -> Result<(), WalError> {
        if self.records > 0 || self.kept.is_empty() {
            return Ok(());
        }
        for seg in self.kept.drain(..) {
            self.fs.remove(&seg.path).map_err(io_err(&seg.path))?;
            tracing::debug!(path = %seg.path.display(), "removed a wal segment without records");
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), WalError> {
        self.fs
            .sync_dir(&self.cfg.dir)
            .map_err(|source| WalError::SyncFailed {
                path: self.cfg.dir.clone(),
                source,
            })
    }
}
