//! [`WalIter`]: records from a seq on, across segments, while the writer
//! keeps appending.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{FRAME_HEADER_LEN, check_frame, peek_seq};
use super::segment::{HeaderError, SEGMENT_HEADER_LEN, SegmentHeader, next_record};
use super::{CorruptReason, SegmentMeta, Shared, WalError, WalRecord};
use crate::types::Seq;

/// Iterator returned by [`Wal::read_from`](super::Wal::read_from).
///
/// Reads one segment into memory at a time. Covers the records that were
/// completely written when it was created; yields an error at most once,
/// then ends.
pub struct WalIter {
    shared: Arc<Shared>,
    from: Seq,
    /// Segments still to read, each with the length published when the
    /// iterator was created (bytes below it never change).
    pending: VecDeque<SegmentMeta>,
    current: Option<Cursor>,
    done: bool,
    /// Frame bytes of the records yielded so far.
    yielded_bytes: u64,
}

struct Cursor {
    path: PathBuf,
    data: Vec<u8>,
    pos: usize,
    /// Seq the next frame must carry.
    expected: Option<Seq>,
}

impl fmt::Debug for WalIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalIter")
            .field("from", &self.from)
            .field("pending", &self.pending.len())
            .field("current", &self.current.as_ref().map(|c| (&c.path, c.pos)))
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl WalIter {
    /// Snapshot of the (locked) shared state.
    pub(super) fn new(
        shared: Arc<Shared>,
        segments: &[SegmentMeta],
        last_seq: Option<Seq>,
        from: Seq,
    ) -> WalIter {
        let mut pending = VecDeque::new();
        if last_seq.is_some_and(|last| from <= last) {
            for (i, seg) in segments.iter().enumerate() {
                // Skip segments whose records all lie below `from`.
                let below = segments
                    .get(i + 1)
                    .is_some_and(|next| next.first_seq <= from);
                if !below && seg.len > SEGMENT_HEADER_LEN as u64 {
                    pending.push_back(seg.clone());
                }
            }
        }
        WalIter {
            shared,
            from,
            pending,
            current: None,
            done: false,
            yielded_bytes: 0,
        }
    }

    fn corrupt(path: &Path, offset: usize, reason: CorruptReason) -> WalError {
        WalError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason,
        }
    }

    /// Loads the next pending segment.
    fn load(&self, seg: SegmentMeta) -> Result<Cursor, WalError> {
        let removed = WalError::SegmentRemoved {
            first_seq: seg.first_seq,
        };
        let still_listed = self
            .shared
            .state()
            .segments
            .iter()
            .any(|s| s.first_seq == seg.first_seq);
        if !still_listed {
            return Err(removed);
        }
        let mut data = match self.shared.fs.read(&seg.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(removed),
            Err(source) => {
                return Err(WalError::Io {
                    path: seg.path,
                    source,
                });
            }
        };
        let Ok(len) = usize::try_from(seg.len) else {
            return Err(Self::corrupt(
                &seg.path,
                0,
                CorruptReason::Shrunk {
                    len: data.len() as u64,
                    expected: seg.len,
                },
            ));
        };
        if data.len() < len {
            return Err(Self::corrupt(
                &seg.path,
                data.len(),
                CorruptReason::Shrunk {
                    len: data.len() as u64,
                    expected: seg.len,
                },
            ));
        }
        // IMPORTANT: bytes past the published length may be a frame the
        // writer is still writing; never look at them.
        data.truncate(len);
        match SegmentHeader::decode(&data) {
            Ok(h) if h.first_seq == seg.first_seq => {}
            Ok(h) => {
                return Err(Self::corrupt(
                    &seg.path,
                    0,
                    CorruptReason::HeaderSeqMismatch {
                        header: h.first_seq,
                        name: seg.first_seq,
                    },
                ));
            }
            Err(HeaderError::Corrupt(reason)) => return Err(Self::corrupt(&seg.path, 0, reason)),
            Err(HeaderError::Version(version)) => {
                return Err(WalError::UnsupportedVersion {
                    path: seg.path,
                    version,
                });
            }
        }
        Ok(Cursor {
            path: seg.path,
            data,
            pos: SEGMENT_HEADER_LEN,
            expected: Some(seg.first_seq),
        })
    }

    fn step(&mut self) -> Option<Result<WalRecord, WalError>> {
        let max = self.shared.cfg.max_record_bytes;
        loop {
            let exhausted = self.current.as_ref().is_none_or(|c| c.pos >= c.data.len());
            if exhausted {
                self.current = None;
                let seg = self.pending.pop_front()?;
                match self.load(seg) {
                    Ok(c) => self.current = Some(c),
                    Err(e) => return Some(Err(e)),
                }
            }
            let cursor = self.current.as_mut()?;
            let buf = &cursor.data[cursor.pos..];
            // Records below `from` are only framed and CRC-checked, not decoded.
            let body = match check_frame(buf, max) {
                Ok(body) => body,
                Err(reason) => return Some(Err(Self::corrupt(&cursor.path, cursor.pos, reason))),
            };
            if let (Some(seq), Some(expected)) = (peek_seq(body), cursor.expected)
                && seq == expected
                && seq < self.from
            {
                cursor.pos += FRAME_HEADER_LEN + body.len();
                cursor.expected = seq.0.checked_add(1).map(Seq);
                continue;
            }
            return match next_record(buf, cursor.expected, max) {
                Ok((record, len)) => {
                    cursor.pos += len;
                    self.yielded_bytes += len as u64;
                    cursor.expected = record.seq.0.checked_add(1).map(Seq);
                    Some(Ok(record))
                }
                Err(reason) => Some(Err(Self::corrupt(&cursor.path, cursor.pos, reason))),
            };
        }
    }
}

impl WalIter {
    /// WAL bytes (whole frames) of the records yielded so far.
    pub fn bytes_read(&self) -> u64 {
        self.yielded_bytes
    }
}

impl Iterator for WalIter {
    type Item = Result<WalRecord, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
            self.current = None;
            self.pending.clear();
        }
        item
    }
}
