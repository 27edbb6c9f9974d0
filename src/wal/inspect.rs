//! Read-only inspection of a WAL directory, for the operator tools
//! (`strata-admin verify` and `wal-inspect`).
//!
//! [`inspect_dir`] checks every segment the way [`Wal::open`](super::Wal::open)
//! does (header, each frame's length, CRC and body, seq continuity within
//! and across segments) and classifies the first damage the same way
//! (`proto-docs/wal-format.md`, section "Recovery"), with the same segment
//! scanner, but never truncates, deletes or syncs anything: it only reads.
//! Like recovery, it stops at the first damage: records after it cannot be
//! trusted to continue the log.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::fs::{StdFs, WalFs};
use super::recovery::list_segments;
use super::segment::{HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, scan_records};
use super::{CorruptReason, WalError, WalRecord};
use crate::types::Seq;

/// What to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectOptions {
    /// Largest record body accepted as plausible. The store's default
    /// limits give `u32::MAX` (any length that fits in the file), which is
    /// the default here too.
    pub max_record_bytes: u32,
    /// Segments all of whose records lie below this seq are not read (and
    /// so not checked); the records of the segments read are all passed
    /// to the callback, below `from` or not.
    pub from: Seq,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            max_record_bytes: u32::MAX,
            from: Seq::ZERO,
        }
    }
}

/// One valid record and where its frame starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAt<'a> {
    /// The segment file.
    pub path: &'a Path,
    /// Byte offset of the record's frame in that file.
    pub offset: u64,
    /// The decoded record.
    pub record: WalRecord,
}

/// One segment file as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// The first seq its name gives.
    pub first_seq: Seq,
    /// File length, bytes (0 if it was not read).
    pub len: u64,
    /// Valid records read from it, before any damage.
    pub records: u64,
    /// Seq of its last valid record.
    pub last_seq: Option<Seq>,
    /// Whether it was read and checked (false: skipped by
    /// [`InspectOptions::from`], or after the damage, or after the
    /// callback stopped the inspection).
    pub checked: bool,
}

/// The first damage found, classified as recovery would classify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalDamage {
    /// Damage in the last segment with no valid record after it (or a last
    /// segment shorter than its header): what a crash during an append
    /// leaves. The node truncates it at start under the default recovery
    /// mode (`tolerate-corrupt-tail`) and refuses to start under `strict`.
    TornTail {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the torn frame (0 for a torn header).
        offset: u64,
        /// What is wrong there.
        reason: CorruptReason,
        /// Bytes from `offset` to the end of the file.
        dropped: u64,
    },
    /// Damage before the tail: records that were once written are
    /// unreadable. The node refuses to start unless the recovery mode is
    /// `point-in-time`, which cuts the log here.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad frame (0 for a bad header or a gap).
        offset: u64,
        /// What is wrong there.
        reason: CorruptReason,
        /// Segment files after this one, which a point-in-time cut would delete.
        later_segments: usize,
    },
    /// A segment with a format version this build does not read.
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version in its header.
        version: u32,
    },
}

impl WalDamage {
    /// The segment file the damage is in.
    pub fn path(&self) -> &Path {
        match self {
            WalDamage::TornTail { path, .. }
            | WalDamage::Corrupt { path, .. }
            | WalDamage::UnsupportedVersion { path, .. } => path,
        }
    }

    /// Byte offset of the damage in [`WalDamage::path`] (0 for a header).
    pub fn offset(&self) -> u64 {
        match self {
            WalDamage::TornTail { offset, .. } | WalDamage::Corrupt { offset, .. } => *offset,
            WalDamage::UnsupportedVersion { .. } => 0,
        }
    }

    /// Whether this is only a torn tail (what a crash leaves, which the
    /// default recovery mode repairs).
    pub fn is_torn_tail(&self) -> bool {
        matches!(self, WalDamage::TornTail { .. })
    }
}

impl std::fmt::Display for WalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalDamage::TornTail {
                path,
                offset,
                reason,
                dropped,
            } => write!(
                f,
                "torn tail in {} at byte {offset}: {reason} ({dropped} bytes after the last good record, \
                 which the node drops at start)",
                path.display()
            ),
            WalDamage::Corrupt {
                path,
                offset,
                reason,
                later_segments,
            } => {
                write!(
                    f,
                    "corrupt wal segment {} at byte {offset}: {reason} (records from there on cannot be read",
                    path.display()
                )?;
                if *later_segments > 0 {
                    write!(f, ", nor the {later_segments} later segment file(s)")?;
                }
                f.write_str(")")
            }
            WalDamage::UnsupportedVersion { path, version } => write!(
                f,
                "wal segment {} has format version {version}, which this build does not read",
                path.display()
            ),
        }
    }
}

/// What [`inspect_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Every segment file, in log order.
    pub segments: Vec<SegmentInfo>,
    /// Valid records read, in the segments checked.
    pub records: u64,
    /// Seq of the first valid record read.
    pub first_seq: Option<Seq>,
    /// Seq of the last valid record read.
    pub last_seq: Option<Seq>,
    /// Sum of the segment files' lengths, bytes (all of them, read or not).
    pub bytes: u64,
    /// The first damage, if any.
    pub damage: Option<WalDamage>,
    /// Whether the callback stopped the inspection before the end.
    pub stopped: bool,
}

/// Reads the WAL in `dir` without changing anything, calling `on_record`
/// with every valid record in log order; `on_record` may return
/// `ControlFlow::Break` to stop after the current segment (its remaining
/// records are not passed on).
///
/// A missing `dir` is an empty log.
///
/// # Errors
///
/// [`WalError::Io`] if the directory cannot be listed or a segment cannot
/// be read. Damage in the files is not an error: it is reported in
/// [`Inspection::damage`].
pub fn inspect_dir(
    dir: &Path,
    options: InspectOptions,
    mut on_record: impl FnMut(RecordAt<'_>) -> ControlFlow<()>,
) -> Result<Inspection, WalError> {
    let fs = StdFs;
    let files = match list_segments(&fs, dir) {
        Ok(files) => files,
        Err(WalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let mut out = Inspection::default();
    for (first_seq, path) in &files {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        out.bytes += len;
        out.segments.push(SegmentInfo {
            path: path.clone(),
            first_seq: *first_seq,
            len,
            records: 0,
            last_seq: None,
            checked: false,
        });
    }

    // The seq the next segment must start at (`None`: any).
    let mut expected: Option<Seq> = None;
    for i in 0..files.len() {
        let (first_seq, path) = &files[i];
        let is_last = i + 1 == files.len();
        let later_segments = files.len() - i - 1;
        if files
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= options.from)
        {
            expected = None;
            continue;
        }
        let data = fs.read(path).map_err(|source| WalError::Io {
            path: path.clone(),
            source,
        })?;
        let file_len = data.len() as u64;
        let seg = &mut out.segments[i];
        seg.len = file_len;
        seg.checked = true;
        let corrupt = |offset: u64, reason| WalDamage::Corrupt {
            path: path.clone(),
            offset,
            reason,
            later_segments,
        };

        if let Some(expected) = expected
            && expected != *first_seq
        {
            out.damage = Some(corrupt(
                0,
                CorruptReason::SegmentGap {
                    expected,
                    found: *first_seq,
                },
            ));
            break;
        }
        match SegmentHeader::decode(&data) {
            Ok(h) if h.first_seq == *first_seq => {}
            Ok(h) => {
                out.damage = Some(corrupt(
                    0,
                    CorruptReason::HeaderSeqMismatch {
                        header: h.first_seq,
                        name: *first_seq,
                    },
                ));
                break;
            }
            Err(HeaderError::Version(version)) => {
                out.damage = Some(WalDamage::UnsupportedVersion {
                    path: path.clone(),
                    version,
                });
                break;
            }
            Err(HeaderError::Corrupt(reason)) => {
                // A crash while rotating can leave the newest segment
                // shorter than its header: a torn tail, as in recovery.
                out.damage = Some(
                    if is_last && matches!(reason, CorruptReason::ShortHeader { .. }) {
                        WalDamage::TornTail {
                            path: path.clone(),
                            offset: 0,
                            reason,
                            dropped: file_len,
                        }
                    } else {
                        corrupt(0, reason)
                    },
                );
                break;
            }
        }

        let mut stop = false;
        let scan = scan_records(
            &data,
            SEGMENT_HEADER_LEN,
            *first_seq,
            options.max_record_bytes,
            |offset, record| {
                if !stop {
                    let at = RecordAt {
                        path,
                        offset: offset as u64,
                        record,
                    };
                    stop = on_record(at).is_break();
                }
            },
        );
        seg.records = scan.records;
        seg.last_seq = scan.last_seq;
        out.records += scan.records;
        if scan.records > 0 {
            out.first_seq = out.first_seq.or(Some(*first_seq));
            out.last_seq = scan.last_seq;
        }
        if let Some(bad) = scan.bad {
            let offset = bad.offset as u64;
            out.damage = Some(if is_last && !bad.later_valid {
                WalDamage::TornTail {
                    path: path.clone(),
                    offset,
                    reason: bad.reason,
                    dropped: file_len.saturating_sub(offset),
                }
            } else {
                corrupt(offset, bad.reason)
            });
            break;
        }
        // An empty segment still fixes where the next one starts.
        expected = Some(
            scan.last_seq
                .map_or(*first_seq, |s| Seq(s.0.saturating_add(1))),
        );
        if stop {
            out.stopped = true;
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::encode_frame_into;
    use crate::wal::{Mutation, segment_file_name};

    fn rec(seq: u64) -> WalRecord {
        WalRecord {
            seq: Seq(seq),
            mutations: vec![Mutation::Put {
                key: bytes::Bytes::from(format!("key-{seq}")),
                value: bytes::Bytes::from(vec![7u8; 20]),
                expires_at_ms: 0,
            }],
        }
    }

    /// Writes a segment with records `first..first + n`; returns its path
    /// and the offset of each frame.
    fn segment(dir: &Path, first: u64, n: u64) -> (PathBuf, Vec<usize>) {
        let mut data = SegmentHeader {
            first_seq: Seq(first),
        }
        .encode()
        .to_vec();
        let mut offsets = Vec::new();
        for s in first..first + n {
            offsets.push(data.len());
            encode_frame_into(&rec(s), &mut data, u32::MAX).unwrap();
        }
        let path = dir.join(segment_file_name(Seq(first)));
        std::fs::write(&path, &data).unwrap();
        (path, offsets)
    }

    fn all(dir: &Path) -> (Inspection, Vec<(u64, u64)>) {
        let mut seen = Vec::new();
        let found = inspect_dir(dir, InspectOptions::default(), |r| {
            seen.push((r.record.seq.0, r.offset));
            ControlFlow::Continue(())
        })
        .unwrap();
        (found, seen)
    }

    #[test]
    fn healthy_log_reads_every_record_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = segment(dir.path(), 1, 3);
        segment(dir.path(), 4, 2);
        let (found, seen) = all(dir.path());
        assert_eq!(found.damage, None);
        assert_eq!(found.records, 5);
        assert_eq!(found.first_seq, Some(Seq(1)));
        assert_eq!(found.last_seq, Some(Seq(5)));
        assert_eq!(found.segments.len(), 2);
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(seen[1].1, offsets[1] as u64);
    }

    #[test]
    fn missing_dir_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let (found, seen) = all(&dir.path().join("nope"));
        assert_eq!(found, Inspection::default());
        assert!(seen.is_empty());
    }

    #[test]
    fn flipped_byte_in_a_middle_record_is_corruption_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = segment(dir.path(), 1, 5);
        let mut data = std::fs::read(&path).unwrap();
        data[offsets[2] + 12] ^= 0x40;
        std::fs::write(&path, &data).unwrap();
        let (found, seen) = all(dir.path());
        assert_eq!(seen.len(), 2);
        match found.damage.unwrap() {
            WalDamage::Corrupt {
                path: p, offset, ..
            } => {
                assert_eq!(p, path);
                assert_eq!(offset, offsets[2] as u64);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), data, "read-only");
    }

    #[test]
    fn cut_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        segment(dir.path(), 1, 2);
        let (path, offsets) = segment(dir.path(), 3, 3);
        let data = std::fs::read(&path).unwrap();
        std::fs::write(&path, &data[..data.len() - 5]).unwrap();
        let (found, _) = all(dir.path());
        assert_eq!(found.last_seq, Some(Seq(4)));
        let damage = found.damage.unwrap();
        assert!(damage.is_torn_tail(), "{damage:?}");
        assert_eq!(damage.offset(), offsets[2] as u64);
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            data.len() - 5,
            "not truncated"
        );
    }

    #[test]
    fn gap_between_segments_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        segment(dir.path(), 1, 2);
        let (path, _) = segment(dir.path(), 5, 2);
        let (found, _) = all(dir.path());
        match found.damage.unwrap() {
            WalDamage::Corrupt {
                path: p,
                offset: 0,
                reason: CorruptReason::SegmentGap { expected, found },
                later_segments: 0,
            } => {
                assert_eq!(p, path);
                assert_eq!((expected, found), (Seq(3), Seq(5)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn from_skips_whole_segments_below_it_and_break_stops() {
        let dir = tempfile::tempdir().unwrap();
        segment(dir.path(), 1, 3);
        segment(dir.path(), 4, 3);
        segment(dir.path(), 7, 3);
        let options = InspectOptions {
            from: Seq(5),
            ..InspectOptions::default()
        };
        let mut seen = Vec::new();
        let found = inspect_dir(dir.path(), options, |r| {
            seen.push(r.record.seq.0);
            if r.record.seq.0 == 8 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(seen, vec![4, 5, 6, 7, 8]);
        assert!(!found.segments[0].checked);
        assert_eq!(found.damage, None);
        assert!(found.stopped);
    }
}
