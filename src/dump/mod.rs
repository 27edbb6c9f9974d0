//! The portable dump format: every live entry of a store in one file, for
//! backups and for moving data between nodes (`strata-admin dump` /
//! `restore` / `verify --dump`).
//!
//! The byte layout is specified in `proto-docs/dump-format.md`; the
//! `const`s that define it ([`DUMP_MAGIC`], [`DUMP_VERSION`],
//! [`HEADER_FIXED_LEN`], [`FRAME_HEADER_LEN`], [`KIND_ENTRY`],
//! [`ENTRY_SLOT_BYTES`], [`KIND_TRAILER`], [`TRAILER_BODY_LEN`]) point back
//! to it.
//!
//! ```text
//! header   magic, version, seq, created_at, node name, header CRC
//! entries  [u32 len][u32 crc][u8 kind = 1][u16 slot][postcard DumpEntry]   (any number)
//! trailer  [u32 len][u32 crc][u8 kind = 2][u64 entries][u32 CRC of all bytes before it]
//! ```
//!
//! Version 3 (this build writes it) ends each entry body with the value's
//! kind, and holds a collection as the store does: its metadata under its
//! key and one entry per element under an internal key (`store::keys`).
//! Version 2 put each entry's cluster slot in front of its body and keeps
//! entries in strictly ascending (slot, key) order, so a dump can be
//! merged or restored slot range by slot range; its entries are strings.
//! Version 1 had no slot bytes and no order rule. Both are still read.
//!
//! # Layout
//!
//! - `write`: [`DumpWriter`], streaming: one entry in memory at a time.
//! - `read`: [`DumpReader`], an iterator of entries that checks every
//!   frame as it goes and the trailer at the end; any damage is a
//!   [`DumpError`] naming the byte offset.
//!
//! # Contract
//!
//! A reader yields entries before it has seen the trailer, so a consumer
//! that must not act on a damaged file (restore) stages what it reads and
//! commits only once the iterator has ended without an error: ending
//! without an error means the trailer was there and matched.
//!
//! Compatibility: every later version of this crate reads every earlier
//! format version (`tests/fixtures/dump-v1.sdump` pins version 1,
//! `dump-v2.sdump` version 2, `dump-v3.sdump` version 3).

mod read;
mod write;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::Slot;
use crate::store::SnapshotEntry;
use crate::store::keys::store_slot;
use crate::types::{Seq, ValueKind};

pub use read::DumpReader;
pub use write::DumpWriter;

/// First eight bytes of every dump file.
/// Layout: `proto-docs/dump-format.md`, section "Header".
pub const DUMP_MAGIC: [u8; 8] = *b"STRADUMP";

/// Format version this build writes. It reads every version from
/// [`MIN_READ_VERSION`] up to this one.
/// Layout: `proto-docs/dump-format.md`, section "Versions and compatibility".
pub const DUMP_VERSION: u32 = 3;

/// Oldest format version this build reads (always 1: nothing is dropped).
/// Layout: `proto-docs/dump-format.md`, section "Versions and compatibility".
pub const MIN_READ_VERSION: u32 = 1;

/// Bytes of the header before the node name: magic (8), version (4),
/// reserved (4), seq (8), created_at_ms (8), node name length (2). The
/// name and a CRC-32 (4) of everything before it follow.
/// Layout: `proto-docs/dump-format.md`, section "Header".
pub const HEADER_FIXED_LEN: usize = 34;

/// Longest node name a header holds, in bytes of UTF-8.
/// Layout: `proto-docs/dump-format.md`, section "Header".
pub const MAX_NODE_NAME_BYTES: usize = 255;

/// Bytes in front of every frame's payload: `u32` LE payload length, then
/// `u32` LE CRC-32 of the payload.
/// Layout: `proto-docs/dump-format.md`, section "Frames".
pub const FRAME_HEADER_LEN: usize = 8;

/// Frame kind (first payload byte) of an entry.
/// Layout: `proto-docs/dump-format.md`, section "Frames".
pub const KIND_ENTRY: u8 = 1;

/// The first format version whose entry frames carry the key's slot
/// (`[u8 kind][u16 LE slot][body]`) and whose entries must be in strictly
/// ascending (slot, key) order. Version 1 entry frames are `[u8 kind][body]`.
/// Layout: `proto-docs/dump-format.md`, section "Entry frames".
pub const FIRST_SLOTTED_VERSION: u32 = 2;

/// The first format version whose entry bodies end with the value's kind
/// and whose entries may be a collection's (its metadata and its
/// elements' internal keys). Earlier entries are strings.
/// Layout: `proto-docs/dump-format.md`, section "Entry body".
pub const FIRST_KINDED_VERSION: u32 = 3;

/// Bytes of the slot (`u16` LE) between an entry's kind byte and its body,
/// from [`FIRST_SLOTTED_VERSION`] on.
/// Layout: `proto-docs/dump-format.md`, section "Entry frames".
pub const ENTRY_SLOT_BYTES: usize = 2;

/// Frame kind (first payload byte) of the trailer, the last frame.
/// Layout: `proto-docs/dump-format.md`, section "Trailer".
pub const KIND_TRAILER: u8 = 2;

/// Bytes of the trailer's body after its kind byte: entry count (`u64` LE)
/// and the CRC-32 of every file byte before the trailer frame (`u32` LE).
/// Layout: `proto-docs/dump-format.md`, section "Trailer".
pub const TRAILER_BODY_LEN: usize = 12;

/// Largest frame payload a reader accepts by default: a key plus a value
/// may take up to 1 GiB in a store (`StoreConfig::validate`), plus room
/// for the encoding. A damaged length above it is reported as damage
/// rather than read.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = (1 << 30) + 4096;

/// The usual file name extension of a dump.
pub const FILE_EXTENSION: &str = "sdump";

/// What a dump's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpHeader {
    /// The format version the file was written in ([`DUMP_VERSION`] for a
    /// file this build writes).
    pub version: u32,
    /// The node the data came from (at most [`MAX_NODE_NAME_BYTES`]).
    pub node: String,
    /// The seq the data covers: every write up to it is in the dump (minus
    /// entries deleted or expired by then), none after it. Restoring sets
    /// the store's applied seq to it.
    pub seq: Seq,
    /// When the dump was taken, Unix ms; entries that had expired by then
    /// were left out.
    pub created_at_ms: u64,
}

impl DumpHeader {
    /// A header for a dump this build writes.
    pub fn new(node: impl Into<String>, seq: Seq, created_at_ms: u64) -> DumpHeader {
        DumpHeader {
            version: DUMP_VERSION,
            node: node.into(),
            seq,
            created_at_ms,
        }
    }
}

/// One live entry. Encoded with postcard; the field order is part of the
/// format (`proto-docs/dump-format.md`, section "Entry body").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpEntry {
    /// The key (never empty).
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Its version: the seq of the write that stored it, kept by restore so
    /// that compare-and-set versions stay valid.
    pub version: Seq,
    /// Absolute expiry, Unix ms; 0 = never. Absolute, so a restored key
    /// expires when the original would have.
    pub expires_at_ms: u64,
    /// What the value is (from version 3; earlier entries are strings).
    pub kind: ValueKind,
}

impl DumpEntry {
    /// The cluster slot the entry is kept in, what an entry frame carries
    /// and orders by: its key's (Redis Cluster's CRC16 with hash tags), or
    /// for a list element's internal key its list's.
    pub fn slot(&self) -> Slot {
        store_slot(&self.key)
    }
}

impl From<DumpEntry> for SnapshotEntry {
    fn from(e: DumpEntry) -> Self {
        SnapshotEntry {
            key: e.key,
            version: e.version,
            expires_at_ms: e.expires_at_ms,
            value: e.value,
            kind: e.kind,
        }
    }
}

impl From<SnapshotEntry> for DumpEntry {
    fn from(e: SnapshotEntry) -> Self {
        DumpEntry {
            key: e.key,
            value: e.value,
            version: e.version,
            expires_at_ms: e.expires_at_ms,
            kind: e.kind,
        }
    }
}

/// What a complete dump holds, from its trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpSummary {
    /// Entries in the file.
    pub entries: u64,
    /// Length of the whole file, bytes.
    pub file_bytes: u64,
    /// Sum of the entries' key and value lengths, bytes.
    pub data_bytes: u64,
}

/// Why a dump file cannot be read. Every variant names the byte offset of
/// the damage ([`DumpError::offset`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// Reading the file failed.
    #[error("dump i/o error at byte {offset}: {source}")]
    Io {
        /// Bytes read before the failure.
        offset: u64,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with [`DUMP_MAGIC`].
    #[error(
        "not a strata dump: bad magic {found:02x?} at byte 0 (a dump starts with \"STRADUMP\")"
    )]
    BadMagic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// A format version this build does not read (a newer strata wrote it).
    #[error(
        "dump format version {version} (at byte 8) is not supported: this build reads versions {MIN_READ_VERSION} to {DUMP_VERSION}"
    )]
    UnsupportedVersion {
        /// The version in the header.
        version: u32,
    },
    /// The header's fields or checksum are wrong.
    #[error("dump header is damaged at byte {offset}: {reason}")]
    BadHeader {
        /// Where the bad field is (0 for a checksum mismatch).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file ends inside the header or a frame.
    #[error(
        "dump is truncated: the {what} starting at byte {offset} needs {needed} bytes, but the file ends after {available} of them (at byte {})",
        offset + available
    )]
    Truncated {
        /// Where the incomplete piece starts.
        offset: u64,
        /// Which piece (`header`, `frame header`, `frame`).
        what: &'static str,
        /// Bytes the piece needs.
        needed: u64,
        /// Bytes of it the file has.
        available: u64,
    },
    /// The file ends cleanly after a frame but has no trailer (an
    /// interrupted dump, or a file cut at a frame boundary).
    #[error(
        "dump has no trailer: the file ends at byte {offset} after {entries} entries (an interrupted or truncated dump)"
    )]
    MissingTrailer {
        /// The file's length.
        offset: u64,
        /// Entries read.
        entries: u64,
    },
    /// A frame length of 0 or above the limit: a damaged length field.
    #[error("dump frame at byte {offset} has a bad length {len} (must be 1..={max})")]
    BadLength {
        /// Where the frame starts.
        offset: u64,
        /// The length field.
        len: u32,
        /// The reader's limit.
        max: u32,
    },
    /// A frame's payload does not match its CRC.
    #[error(
        "dump frame at byte {offset} is damaged: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        /// Where the frame starts.
        offset: u64,
        /// The CRC in the frame header.
        stored: u32,
        /// The CRC of the payload as read.
        computed: u32,
    },
    /// A frame kind this version does not define.
    #[error("dump frame at byte {offset} has unknown kind {kind}")]
    UnknownKind {
        /// Where the frame starts.
        offset: u64,
        /// The kind byte.
        kind: u8,
    },
    /// A frame whose CRC matches but whose body is not a valid record, or
    /// (version 2 on) whose slot is not its key's or which is out of (slot,
    /// key) order: written by a faulty writer.
    #[error("dump frame at byte {offset} holds a bad record: {reason}")]
    BadRecord {
        /// Where the frame starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The trailer counts a different number of entries than the file has.
    #[error("dump trailer at byte {offset} counts {expected} entries, but the file has {found}")]
    CountMismatch {
        /// Where the trailer frame starts.
        offset: u64,
        /// The trailer's count.
        expected: u64,
        /// Entries read.
        found: u64,
    },
    /// The trailer's CRC of everything before it does not match.
    #[error(
        "dump trailer at byte {offset}: checksum of the file before it mismatches (stored {stored:#010x}, computed {computed:#010x})"
    )]
    FileChecksum {
        /// Where the trailer frame starts.
        offset: u64,
        /// The CRC in the trailer.
        stored: u32,
        /// The CRC of the bytes as read.
        computed: u32,
    },
    /// Bytes follow the trailer.
    #[error("dump has unexpected bytes after its trailer, from byte {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: u64,
    },
}

impl DumpError {
    /// The byte offset of the damage in the file.
    pub fn offset(&self) -> u64 {
        match self {
            DumpError::BadMagic { .. } => 0,
            DumpError::UnsupportedVersion { .. } => 8,
            DumpError::Io { offset, .. }
            | DumpError::BadHeader { offset, .. }
            | DumpError::Truncated { offset, .. }
            | DumpError::MissingTrailer { offset, .. }
            | DumpError::BadLength { offset, .. }
            | DumpError::Checksum { offset, .. }
            | DumpError::UnknownKind { offset, .. }
            | DumpError::BadRecord { offset, .. }
            | DumpError::CountMismatch { offset, .. }
            | DumpError::FileChecksum { offset, .. }
            | DumpError::TrailingBytes { offset } => *offset,
        }
    }
}

/// The order check of a version-2 dump, shared by reader and writer:
/// every entry's (slot, key) must be greater than the one before it. It
/// keeps only the previous entry's slot and key.
#[derive(Debug, Default)]
struct SlotOrder {
    last: Option<(Slot, Vec<u8>)>,
}

impl SlotOrder {
    /// Why `(slot, key)` may not follow the previous entry, if it may not.
    fn check(&self, slot: Slot, key: &[u8]) -> Result<(), String> {
        match &self.last {
            Some((last_slot, last_key)) if (slot, key) <= (*last_slot, last_key.as_slice()) => {
                Err(format!(
                    "entry out of order: key {} (slot {slot}) does not come after key {} (slot \
                     {last_slot}); entries must be in strictly ascending (slot, key) order",
                    printable(key),
                    printable(last_key)
                ))
            }
            _ => Ok(()),
        }
    }

    /// Records `(slot, key)` as the previous entry (reusing the buffer).
    fn advance(&mut self, slot: Slot, key: &[u8]) {
        match &mut self.last {
            Some((last_slot, last_key)) => {
                *last_slot = slot;
                last_key.clear();
                last_key.extend_from_slice(key);
            }
            None => self.last = Some((slot, key.to_vec())),
        }
    }
}

/// Longest stretch of a key an error message quotes.
const PRINTABLE_KEY_BYTES: usize = 64;

/// `key` quoted for a message, non-printable bytes escaped (`\xff`); a long
/// key is cut, with its length.
fn printable(key: &[u8]) -> String {
    if key.len() <= PRINTABLE_KEY_BYTES {
        format!("\"{}\"", key.escape_ascii())
    } else {
        format!(
            "\"{}\"... ({} bytes)",
            key[..PRINTABLE_KEY_BYTES].escape_ascii(),
            key.len()
        )
    }
}

#[cfg(test)]
mod tests;
