//! The disk tier: RocksDB holding every key, with its own WAL disabled.
//!
//! Our WAL is the source of durability; RocksDB is a materialised view of
//! it. Each commit batch is one RocksDB `WriteBatch` that carries the
//! entries *and* `applied_seq`, so the state RocksDB recovers to after a
//! crash names the last seq it contains, and recovery replays our WAL from
//! there (DESIGN §2 BOOT). `atomic_flush` keeps the two column families
//! consistent with each other when RocksDB flushes.
//!
//! Stored value layout (all integers little-endian):
//!
//! ```text
//! [u8 format = 1][u64 seq][u64 expires_at_ms (0 = never)][value bytes ...]
//! ```

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{
    AsRawPtr, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBCompressionType, Direction, FlushOptions, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions,
};
use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use crate::clock::Clock;
use crate::types::{Cancel, Seq};
use crate::wal::{Mutation, WalRecord};

const CF_DATA: &str = "data";
const CF_META: &str = "meta";
const APPLIED_SEQ_KEY: &[u8] = b"applied_seq";
/// Present while a full-sync install is incomplete: the data family is partial.
const INSTALL_KEY: &[u8] = b"install";

const VALUE_FORMAT: u8 = 1;
/// Bytes in front of every stored value.
pub const VALUE_HEADER_BYTES: usize = 17;

/// Block compression of the data column family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4 on every level (fast), ZSTD on the bottom level (small).
    #[default]
    Lz4,
    /// ZSTD on every level.
    Zstd,
}

/// Tuning of the disk tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskConfig {
    /// RocksDB block cache (uncompressed blocks), bytes.
    pub block_cache_bytes: usize,
    /// Bloom filter bits per key; 0 disables it. 10 gives ~1% false positives,
    /// which makes a miss nearly free.
    pub bloom_bits_per_key: f64,
    /// Block compression.
    pub compression: Compression,
    /// Memtable size, bytes: larger absorbs more writes between flushes.
    pub write_buffer_bytes: usize,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            block_cache_bytes: 64 << 20,
            bloom_bits_per_key: 10.0,
            compression: Compression::Lz4,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// A value as the disk tier keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// Seq of the write that stored it: the key's version.
    pub seq: Seq,
    /// Absolute expiry in Unix ms; 0 = never.
    pub expires_at_ms: u64,
    /// The user's bytes.
    pub value: Bytes,
}

impl StoredValue {
    /// Whether it has expired at `now_ms` (I4: an expired key is never returned).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        is_expired(self.expires_at_ms, now_ms)
    }
}

/// Whether a deadline (0 = never) has passed.
fn is_expired(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms != 0 && expires_at_ms <= now_ms
}

fn encode_value(seq: Seq, expires_at_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_HEADER_BYTES + value.len());
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&seq.0.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Reads the header; `None` if the bytes are not a stored value of this format.
fn decode_header(raw: &[u8]) -> Option<(Seq, u64)> {
    if raw.len() < VALUE_HEADER_BYTES || raw[0] != VALUE_FORMAT {
        return None;
    }
    let seq = u64::from_le_bytes(raw[1..9].try_into().ok()?);
    let expires = u64::from_le_bytes(raw[9..17].try_into().ok()?);
    Some((Seq(seq), expires))
}

fn decode_value(key: &[u8], raw: &[u8]) -> Result<StoredValue> {
    let (seq, expires_at_ms) = decode_header(raw).ok_or_else(|| StoreError::DamagedValue {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "short or unknown value header",
    })?;
    Ok(StoredValue {
        seq,
        expires_at_ms,
        value: Bytes::copy_from_slice(&raw[VALUE_HEADER_BYTES..]),
    })
}

/// Drops expired entries during compaction. Reads check expiry themselves,
/// so this only reclaims space. RocksDB turns `Remove` of a plain value into
/// a tombstone, so an older version below cannot resurface.
struct TtlFilter {
    now_ms: u64,
}

impl CompactionFilter for TtlFilter {
    fn filter(&mut self, _level: u32, _key: &[u8], value: &[u8]) -> Decision {
        match decode_header(value) {
            Some((_, expires)) if is_expired(expires, self.now_ms) => Decision::Remove,
            _ => Decision::Keep,
        }
    }

    fn name(&self) -> &CStr {
        c"strata-ttl"
    }
}

/// One filter per compaction, so `now` is read once per compaction.
struct TtlFilterFactory {
    clock: Arc<dyn Clock>,
}

impl CompactionFilterFactory for TtlFilterFactory {
    type Filter = TtlFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> TtlFilter {
        TtlFilter {
            now_ms: self.clock.now_ms(),
        }
    }

    fn name(&self) -> &CStr {
        c"strata-ttl-factory"
    }
}

/// RocksDB behind the operations the store needs.
pub struct DiskTier {
    db: DB,
    path: PathBuf,
    write_opts: WriteOptions,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("path", &self.path)
            .finish()
    }
}

impl DiskTier {
    /// Opens (creating if missing) the RocksDB directory at `path`.
    pub fn open(path: &Path, cfg: &DiskConfig, clock: Arc<dyn Clock>) -> Result<DiskTier> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // IMPORTANT: with RocksDB's WAL off, atomic flush is what keeps the data
        // and meta column families (entries and applied_seq) flushed together.
        db_opts.set_atomic_flush(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(4);
        // IMPORTANT: a close must not flush behind our back: the store flushes
        // explicitly (checkpoint) and a drop without close must behave like a
        // crash, which the in-process crash tests rely on.
        // SAFETY: `inner` is a valid options pointer owned by `db_opts` for this call.
        #[allow(unsafe_code)]
        unsafe {
            librocksdb_sys::rocksdb_options_set_avoid_flush_during_shutdown(
                db_opts.as_raw_ptr(),
                1,
            );
        }

        let mut table = BlockBasedOptions::default();
        if cfg.block_cache_bytes > 0 {
            table.set_block_cache(&Cache::new_lru_cache(cfg.block_cache_bytes));
        } else {
            table.disable_cache();
        }
        if cfg.bloom_bits_per_key > 0.0 {
            table.set_bloom_filter(cfg.bloom_bits_per_key, false);
            table.set_whole_key_filtering(true);
        }
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);

        let mut data = Options::default();
        data.set_block_based_table_factory(&table);
        data.set_write_buffer_size(cfg.write_buffer_bytes);
        match cfg.compression {
            Compression::None => data.set_compression_type(DBCompressionType::None),
            Compression::Lz4 => {
                data.set_compression_type(DBCompressionType::Lz4);
                data.set_bottommost_compression_type(DBCompressionType::Zstd);
            }
            Compression::Zstd => data.set_compression_type(DBCompressionType::Zstd),
        }
        data.set_compaction_filter_factory(TtlFilterFactory { clock });
        // Cold bottom-level files are otherwise never compacted, so expired
        // keys there would keep their space forever.
        data.set_periodic_compaction_seconds(24 * 3600);

        let descriptors = vec![
            ColumnFamilyDescriptor::new(CF_DATA, data),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, descriptors)?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        Ok(DiskTier {
            db,
            path: path.to_path_buf(),
            write_opts,
        })
    }

    #[expect(clippy::expect_used, reason = "both families are created at open")]
    fn data(&self) -> &ColumnFamily {
        self.db
            .cf_handle(CF_DATA)
            .expect("data column family exists")
    }

    #[expect(clippy::expect_used, reason = "both families are created at open")]
    fn meta(&self) -> &ColumnFamily {
        self.db
            .cf_handle(CF_META)
            .expect("meta column family exists")
    }

    /// The RocksDB directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The seq of the last record RocksDB has applied (recovered state after a crash).
    pub fn applied_seq(&self) -> Result<Seq> {
        decode_applied_seq(
            self.db
                .get_pinned_cf(self.meta(), APPLIED_SEQ_KEY)?
                .as_deref(),
        )
    }

    /// The stored value for `key`, expired or not (callers check expiry).
    pub fn get(&self, key: &[u8]) -> Result<Option<StoredValue>> {
        match self.db.get_pinned_cf(self.data(), key)? {
            None => Ok(None),
            Some(raw) => decode_value(key, &raw).map(Some),
        }
    }

    /// Applies records, in order, as one atomic RocksDB batch that also
    /// advances `applied_seq` to the last record's seq.
    pub fn apply(&self, records: &[WalRecord]) -> Result<()> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let (data, meta) = (self.data(), self.meta());
        let mut batch = WriteBatch::default();
        for record in records {
            for mutation in &record.mutations {
                match mutation {
                    Mutation::Put {
                        key,
                        value,
                        expires_at_ms,
                    } => batch.put_cf(data, key, encode_value(record.seq, *expires_at_ms, value)),
                    Mutation::Delete { key } => batch.delete_cf(data, key),
                }
            }
        }
        // IMPORTANT: applied_seq rides in the same batch as the entries it covers.
        batch.put_cf(meta, APPLIED_SEQ_KEY, last.seq.0.to_le_bytes());
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }

    /// Flushes memtables to SST files and waits: everything applied before
    /// the call is durable in RocksDB afterwards.
    pub fn flush(&self) -> Result<()> {
        let mut opts = FlushOptions::default();
        opts.set_wait(true);
        self.db.flush_cfs_opt(&[self.data(), self.meta()], &opts)?;
        Ok(())
    }

    /// Compacts the whole data column family (drops expired entries now).
    pub fn compact(&self) {
        self.db
            .compact_range_cf(self.data(), None::<&[u8]>, None::<&[u8]>);
    }

    /// Entries whose key starts with `prefix` and sorts after `after` (or
    /// from the start of the prefix), skipping expired ones, up to `limit`.
    /// Also returns where the next page resumes (the last key examined), or
    /// `None` when the prefix is done. Expired entries count towards the
    /// work bound (`ScanLimit::examined`), so a page over a range of dead
    /// keys ends early (possibly empty) instead of walking all of them.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: ScanLimit,
        now_ms: u64,
    ) -> Result<(ScanEntries, Option<Bytes>)> {
        let mut opts = ReadOptions::default();
        // A scan should not push hot point-lookup blocks out of the cache.
        opts.fill_cache(false);
        let start: &[u8] = match after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let iter = self.db.iterator_cf_opt(
            self.data(),
            opts,
            IteratorMode::From(start, Direction::Forward),
        );
        let mut out: Vec<(Bytes, StoredValue)> = Vec::new();
        let (mut bytes, mut examined) = (0, 0);
        let mut last: Option<Bytes> = None;
        for item in iter {
            let (key, raw) = item?;
            if !key.starts_with(prefix) {
                return Ok((out, None));
            }
            if after.is_some_and(|after| &*key <= after) {
                continue;
            }
            if out.len() == limit.entries || examined == limit.examined() {
                return Ok((out, last));
            }
            examined += 1;
            let value = decode_value(&key, &raw)?;
            let key = Bytes::from(key.into_vec());
            if value.is_expired(now_ms) {
                last = Some(key);
                continue;
            }
            // The first entry always goes in: one key and value fit a frame.
            let size = ScanLimit::entry_bytes(key.len(), value.value.len());
            if !out.is_empty() && bytes + size > limit.bytes {
                return Ok((out, last));
            }
            bytes += size;
            last = Some(key.clone());
            out.push((key, value));
        }
        Ok((out, None))
    }

    /// Bytes of SST files in the data family (0 if RocksDB cannot say).
    pub fn size_bytes(&self) -> u64 {
        self.db
            .property_int_value_cf(self.data(), "rocksdb.total-sst-files-size")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// A digest of every live entry (key, version, expiry, value) at one
    /// consistent point, with the seq that point has applied. Entries that
    /// expire at or before `expired_before_ms` are left out, so nodes that
    /// compact at different times still agree.
    pub fn digest(&self, expired_before_ms: u64, cancel: &Cancel) -> Result<Digest> {
        let snapshot = self.db.snapshot();
        // IMPORTANT: applied_seq read through the same snapshot as the data,
        // so the seq names exactly the state hashed.
        let seq = decode_applied_seq(snapshot.get_cf(self.meta(), APPLIED_SEQ_KEY)?.as_deref())?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut keys = 0u64;
        for (n, item) in snapshot
            .iterator_cf(self.data(), IteratorMode::Start)
            .enumerate()
        {
            if n % 1024 == 0 {
                #[cfg(feature = "failpoints")]
                fail::fail_point!("digest_every_1024_entries");
                if cancel.is_cancelled() {
                    return Err(StoreError::Cancelled);
                }
            }
            let (key, raw) = item?;
            let Some((version, expires)) = decode_header(&raw) else {
                return Err(StoreError::DamagedValue {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "short or unknown value header",
                });
            };
            if is_expired(expires, expired_before_ms) {
                continue;
            }
            keys += 1;
            // Length-prefixed fields, so no two different entry lists hash alike.
            ctx.update(&(key.len() as u64).to_le_bytes());
            ctx.update(&key);
            ctx.update(&version.0.to_le_bytes());
            ctx.update(&expires.to_le_bytes());
            let value = &raw[VALUE_HEADER_BYTES..];
            ctx.update(&(value.len() as u64).to_le_bytes());
            ctx.update(value);
        }
        Ok(Digest {
            seq,
            keys,
            sha256: hex::encode(ctx.finish().as_ref()),
        })
    }

    /// Writes a RocksDB checkpoint (hard-linked SST files, memtables flushed
    /// first) to `dir`, which must not exist. Its applied_seq names its seq.
    pub fn create_checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// The unfinished full-sync install this directory holds, if any.
    pub fn install_marker(&self) -> Result<Option<InstallMarker>> {
        match self.db.get_pinned_cf(self.meta(), INSTALL_KEY)? {
            None => Ok(None),
            Some(raw) => {
                postcard::from_bytes(&raw)
                    .map(Some)
                    .map_err(|_| StoreError::DamagedValue {
                        key: "meta/install".into(),
                        reason: "unreadable install marker",
                    })
            }
        }
    }

    /// Starts a full-sync install: drops every entry, records the marker
    /// and resets applied_seq, as one batch, then flushes so a crash after
    /// this point can never mix old entries with the snapshot's.
    pub fn begin_install(&self, marker: &InstallMarker) -> Result<()> {
        let mut batch = WriteBatch::default();
        // A range delete up to the last key, plus the last key itself, empties
        // the family in one cheap tombstone whatever the key lengths are.
        let last = self
            .db
            .iterator_cf(self.data(), IteratorMode::End)
            .next()
            .transpose()?;
        if let Some((last, _)) = last {
            batch.delete_range_cf(self.data(), [].as_slice(), &*last);
            batch.delete_cf(self.data(), &*last);
        }
        batch.put_cf(self.meta(), INSTALL_KEY, encode_marker(marker));
        batch.put_cf(self.meta(), APPLIED_SEQ_KEY, 0u64.to_le_bytes());
        self.db.write_opt(batch, &self.write_opts)?;
        self.flush()
    }

    /// Writes snapshot entries and the marker naming the last of them, as
    /// one batch: whatever survives a crash is a prefix the marker describes.
    pub fn install_chunk(&self, entries: &[SnapshotEntry], marker: &InstallMarker) -> Result<()> {
        let mut batch = WriteBatch::default();
        for e in entries {
            batch.put_cf(
                self.data(),
                &e.key,
                encode_value(e.version, e.expires_at_ms, &e.value),
            );
        }
        batch.put_cf(self.meta(), INSTALL_KEY, encode_marker(marker));
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }

    /// Completes an install: the data family now is the snapshot at `seq`.
    pub fn finish_install(&self, seq: Seq) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.meta(), INSTALL_KEY);
        batch.put_cf(self.meta(), APPLIED_SEQ_KEY, seq.0.to_le_bytes());
        self.db.write_opt(batch, &self.write_opts)?;
        self.flush()
    }

    /// Counts raw entries in the data family, expired ones included (tests, verify).
    pub fn raw_len(&self) -> Result<u64> {
        let mut n = 0;
        for item in self.db.iterator_cf(self.data(), IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// A scan page's entries: keys with their stored values.
pub type ScanEntries = Vec<(Bytes, StoredValue)>;

/// How much one scan page may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimit {
    /// Most entries.
    pub entries: usize,
    /// Most bytes of keys and values, counted with
    /// [`entry_bytes`](Self::entry_bytes); a page always holds at least one
    /// entry when one is left.
    pub bytes: usize,
}

impl ScanLimit {
    /// At most `entries`, with no byte bound.
    pub fn entries(entries: usize) -> ScanLimit {
        ScanLimit {
            entries,
            bytes: usize::MAX,
        }
    }

    /// Most entries one page examines, expired ones included: a few pages'
    /// worth, so a page over dead keys ends early.
    pub fn examined(&self) -> usize {
        self.entries.saturating_mul(4).saturating_add(64)
    }

    /// An upper bound of what one entry costs in a `Page` response: its key
    /// and value plus their length prefixes, version and TTL (varints of at
    /// most 10 bytes each, and the TTL's option tag).
    pub fn entry_bytes(key_len: usize, value_len: usize) -> usize {
        key_len + value_len + 4 * 10 + 1
    }
}

/// `meta/applied_seq` as stored: 8 bytes little-endian; absent means none yet.
fn decode_applied_seq(raw: Option<&[u8]>) -> Result<Seq> {
    let Some(raw) = raw else {
        return Ok(Seq::ZERO);
    };
    let bytes: [u8; 8] = raw.try_into().map_err(|_| StoreError::DamagedValue {
        key: "meta/applied_seq".into(),
        reason: "not 8 bytes",
    })?;
    Ok(Seq(u64::from_le_bytes(bytes)))
}

#[expect(
    clippy::expect_used,
    reason = "a plain struct of integers and bytes always encodes"
)]
fn encode_marker(marker: &InstallMarker) -> Vec<u8> {
    postcard::to_allocvec(marker).expect("install marker encodes")
}

/// What [`DiskTier::digest`] computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The seq the hashed state had applied.
    pub seq: Seq,
    /// Live entries hashed.
    pub keys: u64,
    /// SHA-256 over the entries in key order, hex.
    pub sha256: String,
}

/// One entry of a full-sync snapshot, as it travels and is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// The key.
    pub key: Bytes,
    /// Its version (the seq that wrote it on the primary).
    pub version: Seq,
    /// Absolute expiry in Unix ms; 0 = never.
    pub expires_at_ms: u64,
    /// The value.
    pub value: Bytes,
}

impl SnapshotEntry {
    /// Bytes of key and value: the unit full-sync progress is counted in.
    pub fn data_len(&self) -> u64 {
        (self.key.len() + self.value.len()) as u64
    }
}

/// Progress of an unfinished full-sync install, kept in RocksDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallMarker {
    /// The primary's snapshot being installed.
    pub snapshot_id: u64,
    /// The seq the snapshot covers.
    pub seq: Seq,
    /// The last key installed; the transfer resumes after it.
    pub last_key: Option<Bytes>,
    /// Entries and bytes (keys + values) installed so far.
    pub entries: u64,
    /// Bytes of keys and values installed so far.
    pub bytes: u64,
}

/// A read-only view of a checkpoint directory: the source of a full sync.
pub struct SnapshotReader {
    db: DB,
    seq: Seq,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("seq", &self.seq)
            .finish()
    }
}

impl SnapshotReader {
    /// Opens a checkpoint written by [`DiskTier::create_checkpoint`].
    pub fn open(dir: &Path) -> Result<SnapshotReader> {
        let opts = Options::default();
        let db = DB::open_cf_for_read_only(&opts, dir, [CF_DATA, CF_META], false)?;
        #[expect(clippy::expect_used, reason = "opened with both families")]
        let meta = db.cf_handle(CF_META).expect("meta column family exists");
        let seq = decode_applied_seq(db.get_pinned_cf(meta, APPLIED_SEQ_KEY)?.as_deref())?;
        Ok(SnapshotReader { db, seq })
    }

    /// The seq the snapshot covers.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// Live entries after `after` (from the start if `None`), in key order,
    /// until about `max_bytes` of keys and values; an empty result means
    /// the end.
    pub fn read_chunk(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
        now_ms: u64,
    ) -> Result<Vec<SnapshotEntry>> {
        #[expect(clippy::expect_used, reason = "opened with both families")]
        let data = self
            .db
            .cf_handle(CF_DATA)
            .expect("data column family exists");
        let mode = match after {
            Some(after) => IteratorMode::From(after, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.db.iterator_cf_opt(data, opts, mode) {
            let (key, raw) = item?;
            if after.is_some_and(|after| &*key <= after) {
                continue;
            }
            let value = decode_value(&key, &raw)?;
            if value.is_expired(now_ms) {
                continue;
            }
            bytes += key.len() + value.value.len();
            out.push(SnapshotEntry {
                key: Bytes::from(key.into_vec()),
                version: value.seq,
                expires_at_ms: value.expires_at_ms,
                value: value.value,
            });
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Entries and key + value bytes in the snapshot, estimated from
    /// RocksDB's table properties (no scan: reading a large snapshot twice
    /// would double a full sync's load on the primary). Counts every stored
    /// version, so it errs high; `(0, 0)` if RocksDB cannot say.
    pub fn totals(&self) -> (u64, u64) {
        #[expect(clippy::expect_used, reason = "opened with both families")]
        let data = self
            .db
            .cf_handle(CF_DATA)
            .expect("data column family exists");
        let props = self
            .db
            .property_value_cf(data, "rocksdb.aggregated-table-properties")
            .ok()
            .flatten()
            .unwrap_or_default();
        let field = |name: &str| -> u64 {
            props
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim() == name)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let entries = field("# entries");
        // Raw key sizes include RocksDB's 8-byte internal suffix; raw values
        // include our value header.
        let bytes = (field("raw key size") + field("raw value size"))
            .saturating_sub(entries * (8 + VALUE_HEADER_BYTES as u64));
        (entries, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn snapshot_reads_chunks_and_estimates_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::open(
            &dir.path().join("db"),
            &DiskConfig::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let records: Vec<WalRecord> = (1..=500u64)
            .map(|i| WalRecord {
                seq: Seq(i),
                mutations: vec![Mutation::Put {
                    key: Bytes::from(format!("key-{i:04}")),
                    value: Bytes::from(vec![b'v'; 100]),
                    expires_at_ms: 0,
                }],
            })
            .collect();
        disk.apply(&records).unwrap();
        let snap_dir = dir.path().join("snap");
        disk.create_checkpoint(&snap_dir).unwrap();
        let reader = SnapshotReader::open(&snap_dir).unwrap();
        assert_eq!(reader.seq(), Seq(500));
        let (entries, bytes) = reader.totals();
        assert_eq!(entries, 500);
        assert_eq!(bytes, 500 * (8 + 100));

        let mut after: Option<Bytes> = None;
        let mut seen = 0;
        loop {
            let chunk = reader.read_chunk(after.as_deref(), 4096, 0).unwrap();
            let Some(last) = chunk.last() else { break };
            assert!(chunk.len() <= 40, "chunks stop near the byte budget");
            after = Some(last.key.clone());
            seen += chunk.len();
        }
        assert_eq!(seen, 500);
    }
}
