//! [`DumpWriter`]: header, entry frames, trailer, streamed to any `Write`.
//!
//! Layout: `proto-docs/dump-format.md`.

use std::io::{self, Write};

use super::{
    DUMP_MAGIC, DUMP_VERSION, DumpEntry, DumpHeader, DumpSummary, FRAME_HEADER_LEN,
    HEADER_FIXED_LEN, KIND_ENTRY, KIND_TRAILER, MAX_NODE_NAME_BYTES, SlotOrder, TRAILER_BODY_LEN,
};

/// A reused frame buffer larger than this is dropped after use, so one huge
/// value does not pin its size for the rest of the dump.
const KEEP_BUFFER_BYTES: usize = 16 << 20;

/// Writes a dump, one entry at a time: memory use is one entry, whatever
/// the dump's size.
///
/// Entries must come in strictly ascending (slot, key) order
/// ([`DumpEntry::slot`]), each key once: the order of a store's full scan.
/// An entry out of that order is refused and nothing of it is written; the
/// writer does not sort (that would take memory for the whole dump).
///
/// Call [`DumpWriter::finish`] at the end: a dump without its trailer is
/// rejected by every reader. The writer does not buffer; give it a
/// `BufWriter`. Making the file durable (fsync, rename into place) is the
/// caller's job, on the `W` that `finish` returns.
#[derive(Debug)]
pub struct DumpWriter<W: Write> {
    out: W,
    /// CRC-32 of every byte written so far (the trailer's file checksum).
    crc: crc32fast::Hasher,
    offset: u64,
    entries: u64,
    data_bytes: u64,
    buf: Vec<u8>,
    /// The previous entry's (slot, key): the next must be greater.
    order: SlotOrder,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl<W: Write> DumpWriter<W> {
    /// Writes the header and returns the writer.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `header.version` is not [`DUMP_VERSION`] (this
    /// build writes only its own version) or the node name is longer than
    /// [`MAX_NODE_NAME_BYTES`]; any error of `out`.
    pub fn new(mut out: W, header: &DumpHeader) -> io::Result<DumpWriter<W>> {
        if header.version != DUMP_VERSION {
            return Err(invalid(format!(
                "this build writes dump format version {DUMP_VERSION}, not {}",
                header.version
            )));
        }
        let node = header.node.as_bytes();
        if node.len() > MAX_NODE_NAME_BYTES {
            return Err(invalid(format!(
                "node name is {} bytes; a dump header holds at most {MAX_NODE_NAME_BYTES}",
                node.len()
            )));
        }
        let mut buf = Vec::with_capacity(HEADER_FIXED_LEN + node.len() + 4);
        buf.extend_from_slice(&DUMP_MAGIC);
        buf.extend_from_slice(&DUMP_VERSION.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes()); // reserved
        buf.extend_from_slice(&header.seq.0.to_le_bytes());
        buf.extend_from_slice(&header.created_at_ms.to_le_bytes());
        // NOTE: checked above: at most MAX_NODE_NAME_BYTES (255).
        buf.extend_from_slice(&(node.len() as u16).to_le_bytes());
        buf.extend_from_slice(node);
        let header_crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&header_crc.to_le_bytes());
        out.write_all(&buf)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&buf);
        Ok(DumpWriter {
            out,
            crc,
            offset: buf.len() as u64,
            entries: 0,
            data_bytes: 0,
            buf: Vec::new(),
            order: SlotOrder::default(),
        })
    }

    /// Appends one entry frame: `[kind][u16 LE slot][postcard entry]`.
    ///
    /// # Errors
    ///
    /// `InvalidInput`, with nothing written, for an entry whose (slot, key)
    /// is not greater than the previous entry's, or whose encoding does
    /// not fit a `u32` length; any error of `out`, after which the file is
    /// unusable.
    pub fn write_entry(&mut self, entry: &DumpEntry) -> io::Result<()> {
        let slot = entry.slot();
        self.order.check(slot, &entry.key).map_err(invalid)?;
        self.buf.clear();
        self.buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        self.buf.push(KIND_ENTRY);
        self.buf.extend_from_slice(&slot.get().to_le_bytes());
        postcard::to_io(entry, &mut self.buf)
            .map_err(|e| invalid(format!("dump entry does not encode: {e}")))?;
        self.write_frame()?;
        self.order.advance(slot, &entry.key);
        self.entries += 1;
        self.data_bytes += (entry.key.len() + entry.value.len()) as u64;
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Fills in the frame header of the payload in `buf[FRAME_HEADER_LEN..]`
    /// and writes the frame.
    fn write_frame(&mut self) -> io::Result<()> {
        let payload_len = self.buf.len() - FRAME_HEADER_LEN;
        let len = u32::try_from(payload_len)
            .map_err(|_| invalid(format!("dump frame of {payload_len} bytes is too large")))?;
        let crc = crc32fast::hash(&self.buf[FRAME_HEADER_LEN..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&self.buf)?;
        self.crc.update(&self.buf);
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Sum of the key and value lengths written so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Writes the trailer, flushes `out` and returns it with the summary.
    ///
    /// # Errors
    ///
    /// Any error of `out`.
    pub fn finish(mut self) -> io::Result<(W, DumpSummary)> {
        // IMPORTANT: the file checksum covers every byte before the trailer
        // frame, header included, so it is taken before the trailer is built.
        let file_crc = self.crc.clone().finalize();
        self.buf.clear();
        self.buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        self.buf.push(KIND_TRAILER);
        self.buf.extend_from_slice(&self.entries.to_le_bytes());
        self.buf.extend_from_slice(&file_crc.to_le_bytes());
        debug_assert_eq!(self.buf.len(), FRAME_HEADER_LEN + 1 + TRAILER_BODY_LEN);
        self.write_frame()?;
        self.out.flush()?;
        let summary = DumpSummary {
            entries: self.entries,
            file_bytes: self.offset,
            data_bytes: self.data_bytes,
        };
        Ok((self.out, summary))
    }
}
