//! [`DumpReader`]: checks the header, then yields entries while checking
//! every frame, and the trailer at the end.
//!
//! Layout: `proto-docs/dump-format.md`.

use std::io::{self, BufReader, Read};

use super::{
    DEFAULT_MAX_FRAME_BYTES, DUMP_MAGIC, DUMP_VERSION, DumpEntry, DumpError, DumpHeader,
    DumpSummary, ENTRY_SLOT_BYTES, FIRST_KINDED_VERSION, FIRST_SLOTTED_VERSION, FRAME_HEADER_LEN,
    HEADER_FIXED_LEN, KIND_ENTRY, KIND_TRAILER, MAX_NODE_NAME_BYTES, MIN_READ_VERSION, SlotOrder,
    TRAILER_BODY_LEN, printable,
};
use bytes::Bytes;

use crate::cluster::{SLOTS, Slot};
use crate::store::keys::is_internal;
use crate::types::{Seq, ValueKind};

/// Read-ahead buffer of the underlying reader.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// Where the reader is.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Between frames.
    Reading,
    /// The trailer was read and matched.
    Done(DumpSummary),
    /// An error was returned; nothing more is read.
    Failed,
}

/// Reads a dump as an iterator of entries.
///
/// [`DumpReader::new`] checks the header. Each `next` reads one frame and
/// checks its length, CRC and body before yielding the entry (from
/// version 2 on also its slot against its key and that it comes after
/// the previous entry in (slot, key) order); at the
/// trailer it checks the entry count, the checksum of the whole file and
/// that nothing follows, then ends. The iterator yields at most one error
/// (naming the byte offset of the damage) and then ends, so **an iteration
/// that ends without an error has verified the whole file**; entries
/// yielded before an error were intact themselves but the file as a whole
/// is not. Memory use is one entry at a time.
///
/// The underlying reader is buffered internally.
#[derive(Debug)]
pub struct DumpReader<R: Read> {
    inner: BufReader<R>,
    header: DumpHeader,
    /// Bytes read and accepted so far (the start of the next frame).
    offset: u64,
    /// CRC-32 of every accepted byte (checked against the trailer).
    crc: crc32fast::Hasher,
    entries: u64,
    data_bytes: u64,
    max_frame_bytes: u32,
    state: State,
    buf: Vec<u8>,
    /// The previous entry's (slot, key), from version 2 on.
    order: SlotOrder,
}

impl<R: Read> DumpReader<R> {
    /// Reads and checks the header: magic, version, fields, checksum.
    ///
    /// # Errors
    ///
    /// [`DumpError::BadMagic`], [`DumpError::UnsupportedVersion`],
    /// [`DumpError::BadHeader`], [`DumpError::Truncated`],
    /// [`DumpError::Io`].
    pub fn new(reader: R) -> Result<DumpReader<R>, DumpError> {
        let mut inner = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
        let mut fixed = [0u8; HEADER_FIXED_LEN];
        let n =
            fill(&mut inner, &mut fixed).map_err(|source| DumpError::Io { offset: 0, source })?;
        // Magic first, even in a short file: a few bytes of something else
        // are "not a dump", not "a truncated dump".
        let magic_len = n.min(DUMP_MAGIC.len());
        if fixed[..magic_len] != DUMP_MAGIC[..magic_len] {
            let mut found = [0u8; 8];
            found.copy_from_slice(&fixed[..8]);
            return Err(DumpError::BadMagic { found });
        }
        if n >= 12 {
            let version = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
            // NOTE: checked before the CRC: a later version may lay out and
            // checksum its header differently.
            if !(MIN_READ_VERSION..=DUMP_VERSION).contains(&version) {
                return Err(DumpError::UnsupportedVersion { version });
            }
        }
        if n < HEADER_FIXED_LEN {
            return Err(DumpError::Truncated {
                offset: 0,
                what: "header",
                needed: (HEADER_FIXED_LEN + 4) as u64,
                available: n as u64,
            });
        }
        // Version 1 is the only layout so far; a later one dispatches here.
        let version = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        let seq = Seq(u64::from_le_bytes(le8(&fixed[16..24])));
        let created_at_ms = u64::from_le_bytes(le8(&fixed[24..32]));
        let node_len = usize::from(u16::from_le_bytes([fixed[32], fixed[33]]));
        if node_len > MAX_NODE_NAME_BYTES {
            return Err(DumpError::BadHeader {
                offset: 32,
                reason: format!(
                    "node name length {node_len} is above the maximum of {MAX_NODE_NAME_BYTES}"
                ),
            });
        }
        let mut rest = vec![0u8; node_len + 4];
        let m = fill(&mut inner, &mut rest).map_err(|source| DumpError::Io {
            offset: (HEADER_FIXED_LEN + n) as u64,
            source,
        })?;
        let header_len = HEADER_FIXED_LEN + node_len + 4;
        if m < rest.len() {
            return Err(DumpError::Truncated {
                offset: 0,
                what: "header",
                needed: header_len as u64,
                available: (HEADER_FIXED_LEN + m) as u64,
            });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&fixed);
        crc.update(&rest[..node_len]);
        let computed = crc.clone().finalize();
        let stored = u32::from_le_bytes([
            rest[node_len],
            rest[node_len + 1],
            rest[node_len + 2],
            rest[node_len + 3],
        ]);
        if stored != computed {
            return Err(DumpError::BadHeader {
                offset: 0,
                reason: format!(
                    "header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                ),
            });
        }
        crc.update(&rest[node_len..]);
        let node =
            String::from_utf8(rest[..node_len].to_vec()).map_err(|_| DumpError::BadHeader {
                offset: HEADER_FIXED_LEN as u64,
                reason: "node name is not UTF-8".into(),
            })?;
        Ok(DumpReader {
            inner,
            header: DumpHeader {
                version,
                node,
                seq,
                created_at_ms,
            },
            offset: header_len as u64,
            crc,
            entries: 0,
            data_bytes: 0,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            state: State::Reading,
            buf: Vec::new(),
            order: SlotOrder::default(),
        })
    }

    /// Sets the largest frame payload accepted (default
    /// [`DEFAULT_MAX_FRAME_BYTES`]); a longer length is reported as damage.
    pub fn with_max_frame_bytes(mut self, max: u32) -> DumpReader<R> {
        self.max_frame_bytes = max.max(1);
        self
    }

    /// The header.
    pub fn header(&self) -> &DumpHeader {
        &self.header
    }

    /// Bytes read and checked so far: where the next frame starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Entries yielded so far.
    pub fn entries_read(&self) -> u64 {
        self.entries
    }

    /// Sum of the key and value lengths of the entries yielded so far.
    pub fn data_bytes_read(&self) -> u64 {
        self.data_bytes
    }

    /// What the trailer confirmed, once the iteration has ended without
    /// an error; `None` before that or after an error.
    pub fn summary(&self) -> Option<DumpSummary> {
        match self.state {
            State::Done(summary) => Some(summary),
            _ => None,
        }
    }

    /// Reads (and checks) every remaining frame, keeping nothing.
    ///
    /// # Errors
    ///
    /// The first damage, as [`Iterator::next`] would yield it.
    pub fn verify_to_end(mut self) -> Result<(DumpHeader, DumpSummary), DumpError> {
        while self.next_entry()?.is_some() {}
        let summary = self.summary().ok_or(DumpError::MissingTrailer {
            offset: self.offset,
            entries: self.entries,
        })?;
        Ok((self.header, summary))
    }

    /// The next entry; `Ok(None)` once the trailer has been read and
    /// matched (or after an error has been returned).
    ///
    /// # Errors
    ///
    /// The damage found, with its byte offset; every later call returns
    /// `Ok(None)`.
    pub fn next_entry(&mut self) -> Result<Option<DumpEntry>, DumpError> {
        if !matches!(self.state, State::Reading) {
            return Ok(None);
        }
        let result = self.step();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn step(&mut self) -> Result<Option<DumpEntry>, DumpError> {
        let at = self.offset;
        let io = |offset: u64| move |source| DumpError::Io { offset, source };
        let mut head = [0u8; FRAME_HEADER_LEN];
        let n = fill(&mut self.inner, &mut head).map_err(io(at))?;
        if n == 0 {
            return Err(DumpError::MissingTrailer {
                offset: at,
                entries: self.entries,
            });
        }
        if n < FRAME_HEADER_LEN {
            return Err(DumpError::Truncated {
                offset: at,
                what: "frame header",
                needed: FRAME_HEADER_LEN as u64,
                available: n as u64,
            });
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let stored = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > self.max_frame_bytes {
            return Err(DumpError::BadLength {
                offset: at,
                len,
                max: self.max_frame_bytes,
            });
        }
        self.buf.clear();
        // NOTE: `take` + `read_to_end` grows the buffer as bytes arrive, so a
        // damaged length in a short file allocates no more than the file has.
        (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut self.buf)
            .map_err(io(at + FRAME_HEADER_LEN as u64))?;
        if self.buf.len() < len as usize {
            return Err(DumpError::Truncated {
                offset: at,
                what: "frame",
                needed: FRAME_HEADER_LEN as u64 + u64::from(len),
                available: (FRAME_HEADER_LEN + self.buf.len()) as u64,
            });
        }
        let computed = crc32fast::hash(&self.buf);
        if stored != computed {
            return Err(DumpError::Checksum {
                offset: at,
                stored,
                computed,
            });
        }
        let frame_len = FRAME_HEADER_LEN as u64 + u64::from(len);
        match self.buf[0] {
            KIND_ENTRY => self.accept_entry(at, &head, frame_len).map(Some),
            KIND_TRAILER => self.accept_trailer(at, frame_len).map(|()| None),
            kind => Err(DumpError::UnknownKind { offset: at, kind }),
        }
    }

    /// The entry in the checked frame at `at` (its header `head`, payload
    /// in `buf`), once it is accepted.
    fn accept_entry(
        &mut self,
        at: u64,
        head: &[u8; FRAME_HEADER_LEN],
        frame_len: u64,
    ) -> Result<DumpEntry, DumpError> {
        let entry = self.decode_entry(at)?;
        self.crc.update(head);
        self.crc.update(&self.buf);
        self.offset += frame_len;
        self.entries += 1;
        self.data_bytes += (entry.key.len() + entry.value.len()) as u64;
        if self.buf.capacity() > READ_BUFFER_BYTES * 64 {
            self.buf = Vec::new();
        }
        Ok(entry)
    }

    /// Checks the trailer in the checked frame at `at` (payload in `buf`)
    /// against everything read, and that nothing follows it.
    fn accept_trailer(&mut self, at: u64, frame_len: u64) -> Result<(), DumpError> {
        let bad = |reason: String| DumpError::BadRecord { offset: at, reason };
        let io = |offset: u64| move |source| DumpError::Io { offset, source };
        let body = &self.buf[1..];
        if body.len() != TRAILER_BODY_LEN {
            return Err(bad(format!(
                "trailer body is {} bytes, expected {TRAILER_BODY_LEN}",
                body.len()
            )));
        }
        let expected = u64::from_le_bytes(le8(&body[0..8]));
        let stored_all = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if expected != self.entries {
            return Err(DumpError::CountMismatch {
                offset: at,
                expected,
                found: self.entries,
            });
        }
        let computed_all = self.crc.clone().finalize();
        if stored_all != computed_all {
            return Err(DumpError::FileChecksum {
                offset: at,
                stored: stored_all,
                computed: computed_all,
            });
        }
        self.offset += frame_len;
        let mut extra = [0u8; 1];
        if fill(&mut self.inner, &mut extra).map_err(io(self.offset))? > 0 {
            return Err(DumpError::TrailingBytes {
                offset: self.offset,
            });
        }
        self.state = State::Done(DumpSummary {
            entries: self.entries,
            file_bytes: self.offset,
            data_bytes: self.data_bytes,
        });
        Ok(())
    }

    /// Decodes the entry frame payload in `buf` (the frame at `at`) as the
    /// header's version lays it out. From version 2 on, also checks the
    /// slot and the (slot, key) order, and records the entry as the
    /// previous one: call it only for a frame that is then accepted.
    fn decode_entry(&mut self, at: u64) -> Result<DumpEntry, DumpError> {
        let version = self.header.version;
        let payload = &self.buf[1..];
        if version < FIRST_SLOTTED_VERSION {
            return decode_string_body(payload, at);
        }
        let (slot, body) = split_slot(payload, at)?;
        let entry = if version < FIRST_KINDED_VERSION {
            decode_string_body(body, at)?
        } else {
            decode_body(body, at)?
        };
        let key_slot = entry.slot();
        if slot != key_slot {
            return Err(DumpError::BadRecord {
                offset: at,
                reason: format!(
                    "entry slot {slot} is not the slot of its key {}, which is {key_slot}",
                    printable(&entry.key)
                ),
            });
        }
        self.order
            .check(slot, &entry.key)
            .map_err(|reason| DumpError::BadRecord { offset: at, reason })?;
        self.order.advance(slot, &entry.key);
        Ok(entry)
    }
}

/// The slot in front of an entry body (version 2 on), checked to be a slot, and
/// the body after it.
fn split_slot(payload: &[u8], at: u64) -> Result<(Slot, &[u8]), DumpError> {
    let bad = |reason: String| DumpError::BadRecord { offset: at, reason };
    let Some((slot, body)) = payload.split_first_chunk::<ENTRY_SLOT_BYTES>() else {
        return Err(bad(format!(
            "entry is {} bytes, too short for its {ENTRY_SLOT_BYTES}-byte slot",
            payload.len()
        )));
    };
    let n = u16::from_le_bytes(*slot);
    let slot = Slot::new(n).ok_or_else(|| {
        bad(format!(
            "entry slot {n} is out of range (slots are 0..{SLOTS})"
        ))
    })?;
    Ok((slot, body))
}

/// One postcard `T` filling `body` exactly.
fn decode_exact<T: serde::de::DeserializeOwned>(body: &[u8], at: u64) -> Result<T, DumpError> {
    let bad = |reason: String| DumpError::BadRecord { offset: at, reason };
    let (entry, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| bad(format!("entry body: {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the entry body", rest.len())));
    }
    Ok(entry)
}

/// A version-3 entry body.
fn decode_body(body: &[u8], at: u64) -> Result<DumpEntry, DumpError> {
    decode_exact(body, at)
}

/// An entry body of version 1 or 2: a string, without the kind. Its key
/// must not have the prefix this build keeps for list elements: such a
/// key (which builds before lists allowed) would be restored unreachable.
fn decode_string_body(body: &[u8], at: u64) -> Result<DumpEntry, DumpError> {
    let (key, value, version, expires_at_ms): (Bytes, Bytes, Seq, u64) = decode_exact(body, at)?;
    if is_internal(&key) {
        return Err(DumpError::BadRecord {
            offset: at,
            reason: format!(
                "key {} starts with the bytes ff ff ff ff, which this build keeps for the \
                 elements of collections; restore this dump with the build that wrote it",
                printable(&key)
            ),
        });
    }
    Ok(DumpEntry {
        key,
        value,
        version,
        expires_at_ms,
        kind: ValueKind::String,
    })
}

impl<R: Read> Iterator for DumpReader<R> {
    type Item = Result<DumpEntry, DumpError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Eight bytes of a slice known to hold eight.
fn le8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}
