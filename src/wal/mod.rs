//! The write-ahead log: CRC-framed postcard records in size-rotated segment
//! files, a group-committing writer, a concurrent reader, and recovery.
//!
//! The byte layout is specified in `proto-docs/wal-format.md`; the `const`s
//! that define it ([`SEGMENT_MAGIC`], [`SEGMENT_VERSION`],
//! [`SEGMENT_HEADER_LEN`], [`FRAME_HEADER_LEN`]) point back to it.
//!
//! # Layout
//!
//! - `record`: [`WalRecord`] / [`Mutation`] and the frame codec.
//! - `segment`: segment header, file naming, the pure segment scanner.
//! - `fs`: the [`WalFs`] / [`WalFile`] traits and [`StdFs`], the real one.
//! - `sim`: [`SimFs`], an in-memory file system that can lose power
//!   (tests and the `test-util` feature only).
//! - `writer`: [`WalWriter`], appends, rotation, fsync policy, poisoning.
//! - `reader`: [`WalIter`], iteration from a seq while the writer appends.
//! - `recovery`: [`Wal::open`], scanning, validation and truncation.
//!
//! # Contract
//!
//! [`Wal::open`] returns a [`Recovered`]: a shareable [`Wal`] handle (for
//! readers, the checkpointer and metrics) and the single [`WalWriter`] (for
//! the store's commit thread). The writer appends batches of records whose
//! seqs continue the log; each batch is one `write_all` followed by at most
//! one fdatasync (group commit). Any write or fsync failure poisons the log
//! for good (DESIGN.md I9): the page cache may already have dropped the
//! dirty pages, so a retried fsync could report success for data that is
//! gone (Pillai et al., "All File Systems Are Not Created Equal", OSDI '14;
//! Rebello et al., "Can Applications Recover from fsync Failures?",
//! USENIX ATC '20).

mod fs;
pub mod inspect;
mod reader;
mod record;
mod recovery;
mod segment;
#[cfg(any(test, feature = "test-util"))]
mod sim;
#[cfg(test)]
mod test;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::Seq;

pub use fs::{StdFs, WalFile, WalFs};
pub use reader::WalIter;
pub use record::{FRAME_HEADER_LEN, Mutation, WalRecord, decode_frame, encode_frame_into};
pub use recovery::{RecoveryReport, TruncatedTail};
pub use segment::{
    HeaderError, MIN_SEGMENT_VERSION, SEGMENT_EXTENSION, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    SEGMENT_VERSION, SegmentHeader, parse_segment_name, segment_file_name,
};
#[cfg(any(test, feature = "test-util"))]
pub use sim::SimFs;
pub use writer::{AppendOutcome, WalWriter};

/// Default size at which the writer rotates to a new segment: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Default upper bound on one record's body: 64 MiB. A frame announcing a
/// longer body is treated as corruption, so a damaged length never makes the
/// reader allocate or skip gigabytes.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;

/// When the writer calls fdatasync, and therefore what a crash can cost.
///
/// Whatever the policy, `append` returns only after its `write_all` has
/// handed the bytes to the kernel, so a *process* crash (kill -9, panic,
/// OOM) never loses an appended batch. The policies differ on *power loss*
/// (or a kernel crash), where only fsynced bytes count. Sealed segments are
/// always synced before the next one is created, so a power loss can only
/// cut the log at its end, never open a gap in the middle.
///
/// The human form (TOML config, CLI) is `always`, `never` or
/// `interval:<ms>`, e.g. `interval:1000`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    /// fdatasync after every batch, before `append` returns (group commit:
    /// one fsync covers every record of the batch). Survives power loss:
    /// every batch whose `append` returned `Ok` is on stable storage.
    #[default]
    Always,
    /// fdatasync when the last sync is older than the interval, checked on
    /// every append and by [`WalWriter::sync_if_due`] (which the store calls
    /// on a timer). Survives a process crash; a power loss loses at most the
    /// batches appended since the last sync, i.e. about one interval (plus
    /// the timer's lag) of acknowledged writes.
    Interval(Duration),
    /// Never fdatasync on append; the kernel writes back when it likes (about
    /// 30 s on a default Linux). Survives a process crash; a power loss can
    /// lose everything since the active segment was created. For caches that
    /// can be refilled, and for benchmarks.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseModeError {
            what: "fsync policy",
            got: s.to_owned(),
            accepted: "always, never, interval:<ms> (e.g. interval:1000)",
        };
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let ms = s.strip_prefix("interval:").ok_or_else(bad)?;
                // NOTE: u64::from_str accepts a leading '+'; only plain digits are a documented form.
                if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let ms: u64 = ms.parse().map_err(|_| bad())?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = ParseModeError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<FsyncPolicy> for String {
    fn from(p: FsyncPolicy) -> String {
        p.to_string()
    }
}

/// What [`Wal::open`] does when it finds damage. Modelled on RocksDB's WAL
/// recovery modes.
///
/// A *torn tail* is damage in the last segment after which no valid record
/// follows: the signature of a crash in the middle of an append. Anything
/// else (a bad record followed by a valid one, a bad record in an older
/// segment, a missing segment) is *corruption before the tail*: records
/// that were once durable are unreadable, and dropping them silently would
/// break the durability promise.
///
/// The human form is `tolerate-corrupt-tail`, `strict` or `point-in-time`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RecoveryMode {
    /// Truncate a torn tail (with a warning, reported in
    /// [`RecoveryReport::truncated`]); refuse to start on corruption before
    /// the tail. Loses only writes that were never acknowledged as durable
    /// under [`FsyncPolicy::Always`].
    #[default]
    TolerateCorruptTail,
    /// Refuse to start on any damage, a torn tail included
    /// ([`WalError::TornTail`]). For investigating a suspect disk.
    Strict,
    /// Truncate the log at the first bad record, whatever follows it, and
    /// delete every later segment: recover a consistent prefix, losing the
    /// records after the damage (which may include acknowledged writes).
    /// The operator's way past a [`WalError::Corrupt`] after taking a backup.
    PointInTime,
}

impl fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecoveryMode::TolerateCorruptTail => "tolerate-corrupt-tail",
            RecoveryMode::Strict => "strict",
            RecoveryMode::PointInTime => "point-in-time",
        })
    }
}

impl FromStr for RecoveryMode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tolerate-corrupt-tail" => Ok(RecoveryMode::TolerateCorruptTail),
            "strict" => Ok(RecoveryMode::Strict),
            "point-in-time" => Ok(RecoveryMode::PointInTime),
            _ => Err(ParseModeError {
                what: "recovery mode",
                got: s.to_owned(),
                accepted: "tolerate-corrupt-tail, strict, point-in-time",
            }),
        }
    }
}

impl TryFrom<String> for RecoveryMode {
    type Error = ParseModeError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RecoveryMode> for String {
    fn from(m: RecoveryMode) -> String {
        m.to_string()
    }
}

/// A string that is not one of the accepted forms of [`FsyncPolicy`] or
/// [`RecoveryMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {got:?}; accepted: {accepted}")]
pub struct ParseModeError {
    what: &'static str,
    got: String,
    accepted: &'static str,
}

/// How to open and write the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Directory holding the segment files (created if missing). The WAL
    /// owns it: files named like segments are read and may be truncated or
    /// deleted by recovery; other files are ignored.
    pub dir: PathBuf,
    /// The writer starts a new segment before a batch once the active one
    /// has reached this size. Segments are the unit of deletion after a
    /// checkpoint, so smaller segments free disk sooner but cost more files
    /// and more rotation fsyncs. Default [`DEFAULT_SEGMENT_BYTES`].
    pub segment_bytes: u64,
    /// Largest accepted record body. Bounds what a damaged length can make
    /// the reader do; appending a larger record fails with
    /// [`WalError::RecordTooLarge`]. Default [`DEFAULT_MAX_RECORD_BYTES`].
    pub max_record_bytes: u32,
    /// When appends are fsynced; see [`FsyncPolicy`].
    pub fsync: FsyncPolicy,
    /// What open does with damage; see [`RecoveryMode`].
    pub recovery: RecoveryMode,
}

impl WalConfig {
    /// The defaults for a log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            fsync: FsyncPolicy::default(),
            recovery: RecoveryMode::default(),
        }
    }

    fn validate(&self) -> Result<(), WalError> {
        if self.segment_bytes == 0 {
            return Err(WalError::InvalidConfig {
                reason: "segment_bytes must be greater than 0",
            });
        }
        if self.max_record_bytes == 0 {
            return Err(WalError::InvalidConfig {
                reason: "max_record_bytes must be greater than 0",
            });
        }
        Ok(())
    }
}

/// Why a segment or record is considered damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// The file is shorter than a segment header.
    #[error("segment header truncated: file has {len} bytes, a header needs {SEGMENT_HEADER_LEN}")]
    ShortHeader {
        /// File length.
        len: u64,
    },
    /// The header does not start with [`SEGMENT_MAGIC`].
    #[error("bad segment magic {found:02x?}")]
    BadMagic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// The header's CRC does not match its bytes.
    #[error("segment header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC of the header bytes as read.
        computed: u32,
    },
    /// The header names a different first seq than the file name.
    #[error("segment header says first seq {header}, file name says {name}")]
    HeaderSeqMismatch {
        /// Seq in the header.
        header: Seq,
        /// Seq in the file name.
        name: Seq,
    },
    /// A segment does not start where the previous one ended.
    #[error(
        "segment starts at seq {found} but the log continues at seq {expected} (missing or overlapping segment)"
    )]
    SegmentGap {
        /// The seq the previous segments lead to.
        expected: Seq,
        /// The segment's first seq.
        found: Seq,
    },
    /// Fewer bytes than a frame header remain.
    #[error(
        "frame header truncated: {available} bytes left, a frame header needs {FRAME_HEADER_LEN}"
    )]
    ShortFrame {
        /// Bytes left in the file.
        available: u64,
    },
    /// The frame length is 0 or above `max_record_bytes`.
    #[error("bad record length {len} (must be 1..={max})")]
    BadLength {
        /// Length field.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// The frame length runs past the end of the file.
    #[error("record length {len} runs past end of file ({available} body bytes left)")]
    Overrun {
        /// Length field.
        len: u32,
        /// Bytes after the frame header.
        available: u64,
    },
    /// The body's CRC does not match.
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC field.
        stored: u32,
        /// CRC of the body as read.
        computed: u32,
    },
    /// The body is not a valid postcard `WalRecord`.
    #[error("record body does not decode: {0}")]
    Decode(postcard::Error),
    /// The body decodes but leaves bytes over.
    #[error("record body has {extra} bytes after the record")]
    TrailingBytes {
        /// Bytes left after decoding.
        extra: u64,
    },
    /// The record's seq does not continue the log.
    #[error("record seq {got} breaks continuity (expected {expected})")]
    SeqBreak {
        /// The seq that should come next.
        expected: Seq,
        /// The record's seq.
        got: Seq,
    },
    /// The file is shorter than the length the writer published for it.
    #[error("segment is {len} bytes, shorter than the {expected} bytes already written to it")]
    Shrunk {
        /// File length now.
        len: u64,
        /// Bytes known to be written.
        expected: u64,
    },
}

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O operation failed. In the append path this also poisons the log.
    #[error("wal i/o on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// fdatasync (of a segment or of the directory) failed. The log is now
    /// poisoned: the kernel may have dropped the dirty pages, so neither
    /// this batch nor anything unsynced before it can be called durable.
    #[error("fsync of {path} failed, wal poisoned; restart the node: {source}")]
    SyncFailed {
        /// File or directory being synced.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier write or fsync failed; the log accepts no more writes.
    /// Restart the node: recovery will keep what is really on disk.
    #[error("wal poisoned by an earlier write/fsync failure; restart the node")]
    Poisoned,
    /// A batch's seqs do not continue the log (a gap, a repeat, or going
    /// backwards). Nothing was written.
    #[error("wal seq gap: expected seq {expected}, got {got}")]
    SeqGap {
        /// The seq the log needs next.
        expected: Seq,
        /// The seq offered.
        got: Seq,
    },
    /// A record would follow seq `u64::MAX`.
    #[error("wal seq space exhausted: no seq follows {}", u64::MAX)]
    SeqOverflow,
    /// A record encodes to more than `max_record_bytes`. Nothing was written.
    #[error("wal record {seq} is {bytes} bytes, above the limit of {max}")]
    RecordTooLarge {
        /// The record's seq.
        seq: Seq,
        /// Its encoded body length.
        bytes: u64,
        /// `max_record_bytes`.
        max: u32,
    },
    /// Damage that recovery must not silently drop: a bad record that is
    /// not a torn tail, a bad header, or a missing segment. Also returned by
    /// [`WalIter`] if a segment changes under it.
    #[error(
        "wal segment {path} is corrupt at byte {offset}: {reason}. Records from this point on cannot be read. \
         To start anyway, back up the wal directory and start with recovery mode point-in-time, \
         which truncates the log here and deletes later segments, losing every later record"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad frame (0 for a bad header or a gap).
        offset: u64,
        /// What is wrong.
        reason: CorruptReason,
    },
    /// A torn tail (a crash in the middle of an append) found under
    /// [`RecoveryMode::Strict`].
    #[error(
        "wal segment {path} has a torn tail at byte {offset} ({reason}), as a crash during an append leaves it; \
         recovery mode strict refuses to drop it. Start with recovery mode tolerate-corrupt-tail (the default) \
         to truncate the {dropped} bytes after the last good record"
    )]
    TornTail {
        /// The segment file.
        path: PathBuf,
        /// Byte offset where the torn record starts.
        offset: u64,
        /// What is wrong with it.
        reason: CorruptReason,
        /// Bytes that truncation would drop.
        dropped: u64,
    },
    /// A segment written by an unknown format version (a newer strata?).
    /// Never truncated or deleted, whatever the recovery mode.
    #[error(
        "wal segment {path} has format version {version}; this build reads versions {MIN_SEGMENT_VERSION} to {SEGMENT_VERSION}"
    )]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version in its header.
        version: u32,
    },
    /// A segment that [`WalIter`] was about to read was deleted by
    /// [`Wal::remove_covered`] in the meantime.
    #[error("wal segment starting at seq {first_seq} was removed while being read")]
    SegmentRemoved {
        /// The segment's first seq.
        first_seq: Seq,
    },
    /// A record could not be serialised (not expected for these types).
    #[error("wal record {seq} does not encode: {source}")]
    Encode {
        /// The record's seq.
        seq: Seq,
        /// What postcard said.
        #[source]
        source: postcard::Error,
    },
    /// The configuration cannot work.
    #[error("invalid wal config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
}

/// What the writer has told the world about one segment.
#[derive(Debug, Clone)]
struct SegmentMeta {
    /// Seq of its first record (= its name).
    first_seq: Seq,
    path: PathBuf,
    /// Bytes known to be completely written: the header plus whole frames.
    /// Readers never look past this.
    len: u64,
}

/// State shared by the writer, readers and the checkpointer.
#[derive(Debug)]
struct State {
    /// Sorted by `first_seq`; the last one is the active segment.
    segments: Vec<SegmentMeta>,
    /// Last seq completely written (visible to readers).
    last_seq: Option<Seq>,
    /// Last seq covered by a completed fsync.
    durable_seq: Option<Seq>,
}

#[derive(Debug)]
struct Shared {
    cfg: WalConfig,
    fs: Arc<dyn WalFs>,
    poisoned: AtomicBool,
    state: Mutex<State>,
    /// Serialises [`Wal::remove_covered`] calls.
    remove_lock: Mutex<()>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // NOTE: no code panics while holding this lock; if something did, the
        // state is still consistent (every update is a single assignment).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poison(&self) {
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            tracing::error!(dir = %self.cfg.dir.display(), "wal poisoned: refusing further writes until restart");
        }
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }
}

/// A shareable handle on an open log: readers, retention, metrics.
///
/// Cheap to clone. Writing goes through the single [`WalWriter`] that
/// [`Wal::open`] returned alongside it.
#[derive(Debug, Clone)]
pub struct Wal {
    shared: Arc<Shared>,
}

/// The result of [`Wal::open`].
#[derive(Debug)]
pub struct Recovered {
    /// Handle for readers and the checkpointer.
    pub wal: Wal,
    /// The one writer; give it to the commit thread.
    pub writer: WalWriter,
    /// What recovery found and did.
    pub report: RecoveryReport,
}

impl Wal {
    /// Iterates over the records with `seq >= from`, in seq order, across
    /// segments: replay at boot, and the replication stream.
    ///
    /// Safe while the writer appends: the iterator covers exactly the
    /// records completely written when `read_from` was called (the writer
    /// publishes a per-segment byte watermark after each `write_all`), never
    /// a half-written one; call again to see later records. The records may
    /// not be fsynced yet.
    ///
    /// If `from` is below [`Wal::first_seq`] the iteration starts at the
    /// first retained record; a caller that needs continuity compares the
    /// first yielded seq with `from`.
    ///
    /// # Errors
    ///
    /// The iterator yields [`WalError::Io`], [`WalError::Corrupt`] (the
    /// bytes changed since open) or [`WalError::SegmentRemoved`] (a
    /// concurrent [`Wal::remove_covered`] deleted a segment it had not read
    /// yet), then ends. `read_from` itself does not fail today; the
    /// `Result` leaves room for an index lookup.
    pub fn read_from(&self, from: Seq) -> Result<WalIter, WalError> {
        let state = self.shared.state();
        Ok(WalIter::new(
            Arc::clone(&self.shared),
            &state.segments,
            state.last_seq,
            from,
        ))
    }

    /// Seq of the oldest retained record, `None` if the log is empty.
    pub fn first_seq(&self) -> Option<Seq> {
        let state = self.shared.state();
        state.last_seq?;
        state.segments.first().map(|s| s.first_seq)
    }

    /// Seq of the newest completely written record, `None` if the log is
    /// empty.
    pub fn last_seq(&self) -> Option<Seq> {
        self.shared.state().last_seq
    }

    /// Seq of the newest record covered by a completed fsync (everything at
    /// or below it survives power loss). After open, everything recovered.
    pub fn durable_seq(&self) -> Option<Seq> {
        self.shared.state().durable_seq
    }

    /// Deletes the sealed segments all of whose records have
    /// `seq <= covered`, i.e. whose successor starts at or below
    /// `covered + 1`, oldest first; never the active segment. Returns how
    /// many were deleted.
    ///
    /// The caller guarantees (DESIGN.md I7) that the disk tier has flushed
    /// everything up to `covered` and that no replica still needs it. Safe
    /// to call while the writer appends. Each deletion is followed by a
    /// directory fsync, so a power loss can never bring back an older
    /// segment without the ones after it (which would look like a gap).
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if deleting or the directory fsync fails; segments
    /// deleted before the failure stay deleted. Does not poison the log.
    pub fn remove_covered(&self, covered: Seq) -> Result<usize, WalError> {
        self.remove_covered_by(|| covered)
    }

    /// [`remove_covered`](Self::remove_covered) with the bound asked
    /// afresh before each segment goes, while the segment list is locked:
    /// a WAL hold taken while earlier segments are being deleted protects
    /// its records (the caller's `covered` reads the holds, so it must not
    /// take the segment list's lock itself).
    pub fn remove_covered_by(&self, covered: impl Fn() -> Seq) -> Result<usize, WalError> {
        let _serial = self
            .shared
            .remove_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut removed = 0;
        loop {
            let victim = {
                let mut state = self.shared.state();
                let limit = covered().0.saturating_add(1);
                // IMPORTANT: only a segment with a successor is sealed; the
                // last one is the writer's active segment and is never removed.
                match state.segments.get(1) {
                    Some(next) if next.first_seq.0 <= limit => state.segments.remove(0),
                    _ => break,
                }
            };
            // The victim is out of the shared list, so new readers skip it;
            // a reader that listed it earlier gets `SegmentRemoved`.
            let result = match self.shared.fs.remove(&victim.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(WalError::Io {
                    path: victim.path.clone(),
                    source: e,
                }),
            }
            // IMPORTANT: make each deletion durable before the next one, oldest
            // first, so a power loss cannot resurrect a segment whose successor is gone.
            .and_then(|()| {
                self.shared
                    .fs
                    .sync_dir(&self.shared.cfg.dir)
                    .map_err(|e| WalError::Io {
                        path: self.shared.cfg.dir.clone(),
                        source: e,
                    })
            });
            if let Err(e) = result {
                // Only this function pops segments and it is serialised, so
                // putting the victim back at the front restores the order.
                self.shared.state().segments.insert(0, victim);
                return Err(e);
            }
            tracing::debug!(path = %victim.path.display(), "wal segment removed");
            removed += 1;
            #[cfg(feature = "failpoints")]
            fail::fail_point!("wal_segment_removed");
        }
        Ok(removed)
    }

    /// Whether a write or fsync failure has poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.shared.is_poisoned()
    }

    /// Sum of the segments' sizes in bytes (headers included), as far as
    /// completely written. For checkpoint triggers and metrics.
    pub fn total_bytes(&self) -> u64 {
        self.shared.state().segments.iter().map(|s| s.len).sum()
    }

    /// Bytes of the segments holding records from `seq` on (whole
    /// segments: what a hold from `seq` keeps on disk).
    pub fn bytes_from(&self, seq: Seq) -> u64 {
        let state = self.shared.state();
        let segments = &state.segments;
        segments
            .iter()
            .enumerate()
            // A segment ends where its successor starts; the last is open.
            .filter(|(i, _)| segments.get(i + 1).is_none_or(|next| next.first_seq > seq))
            .map(|(_, s)| s.len)
            .sum()
    }

    /// Number of segment files, the active one included.
    pub fn segment_count(&self) -> usize {
        self.shared.state().segments.len()
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.shared.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_forms_round_trip() {
        for (s, p) in [
            ("always", FsyncPolicy::Always),
            ("never", FsyncPolicy::Never),
            (
                "interval:1000",
                FsyncPolicy::Interval(Duration::from_millis(1000)),
            ),
            ("interval:0", FsyncPolicy::Interval(Duration::ZERO)),
        ] {
            assert_eq!(s.parse::<FsyncPolicy>(), Ok(p));
            assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn fsync_policy_rejects_bad_forms_listing_the_good_ones() {
        for bad in [
            "",
            "Always",
            "interval",
            "interval:",
            "interval:-1",
            "interval:+5",
            "interval:1s",
            "sometimes",
        ] {
            let err = bad.parse::<FsyncPolicy>().unwrap_err().to_string();
            assert!(
                err.contains("always, never, interval:<ms>"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn recovery_mode_forms_round_trip() {
        for m in [
            RecoveryMode::TolerateCorruptTail,
            RecoveryMode::Strict,
            RecoveryMode::PointInTime,
        ] {
            assert_eq!(m.to_string().parse::<RecoveryMode>(), Ok(m));
        }
        let err = "lenient".parse::<RecoveryMode>().unwrap_err().to_string();
        assert!(err.contains("tolerate-corrupt-tail, strict, point-in-time"));
    }

    #[test]
    fn modes_serde_as_strings() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Cfg {
            fsync: FsyncPolicy,
            recovery: RecoveryMode,
        }
        let cfg: Cfg =
            toml::from_str("fsync = \"interval:250\"\nrecovery = \"point-in-time\"\n").unwrap();
        assert_eq!(
            cfg,
            Cfg {
                fsync: FsyncPolicy::Interval(Duration::from_millis(250)),
                recovery: RecoveryMode::PointInTime,
            }
        );
        let text = toml::to_string(&cfg).unwrap();
        assert!(text.contains("fsync = \"interval:250\""), "{text}");
        let bad = toml::from_str::<Cfg>("fsync = \"often\"\nrecovery = \"strict\"\n");
        let err = bad.unwrap_err().to_string();
        assert!(err.contains("interval:<ms>"), "{err}");
    }

    #[test]
    fn defaults_are_documented_ones() {
        let cfg = WalConfig::new("wal");
        assert_eq!(cfg.fsync, FsyncPolicy::Always);
        assert_eq!(cfg.recovery, RecoveryMode::TolerateCorruptTail);
        assert_eq!(cfg.segment_bytes, 64 * 1024 * 1024);
        assert_eq!(cfg.max_record_bytes, 64 * 1024 * 1024);
    }
}
