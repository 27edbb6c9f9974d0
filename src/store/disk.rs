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
//! [u8 format = 2][u64 seq][u64 expires_at_ms][u8 kind][metadata bytes ...]
//! ```
//!
//! Format 1 is a string; format 2 any other kind (`ValueKind::to_byte`),
//! a collection's metadata.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{
    AsRawPtr, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBCompressionType, Direction, ErrorKind, FlushOptions, IteratorMode, Options, ReadOptions,
    ReadTier, WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use super::keys;
use super::list::ListMeta;
use super::members::MemberMeta;
use super::sorted;
use crate::clock::Clock;
use crate::cluster::{Slot, SlotSet};
use crate::types::{Cancel, End, Seq, ValueKind};
use crate::wal::{Mutation, WalRecord};

const CF_DATA: &str = "data";
const CF_META: &str = "meta";
const APPLIED_SEQ_KEY: &[u8] = b"applied_seq";
/// Present while a full-sync install is incomplete: the data family is partial.
const INSTALL_KEY: &[u8] = b"install";
/// The key layout of the data family, `u32` LE; absent in layout 1.
const LAYOUT_KEY: &[u8] = b"layout";

/// The key layout this build reads and writes: 2, every key behind its
/// slot ([`keys`]). Layout 1 (no `meta/layout`) stored keys bare.
pub const DISK_LAYOUT: u32 = 2;

const VALUE_FORMAT: u8 = 1;
/// The value format of a kind other than a string.
const TYPED_VALUE_FORMAT: u8 = 2;
/// Bytes in front of every stored string.
pub const VALUE_HEADER_BYTES: usize = 17;
/// Bytes in front of every stored value of another kind.
const TYPED_HEADER_BYTES: usize = VALUE_HEADER_BYTES + 1;

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
    /// Answer a memory-tier miss on the async thread when RocksDB holds
    /// the key in its memtables or block cache (no I/O); off, every miss
    /// goes to the blocking pool. On by default: the handoff costs more
    /// than such a read.
    pub inline_reads: bool,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            block_cache_bytes: 64 << 20,
            bloom_bits_per_key: 10.0,
            compression: Compression::Lz4,
            write_buffer_bytes: 64 << 20,
            inline_reads: true,
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
    /// The user's bytes, or a collection's metadata.
    pub value: Bytes,
    /// What the value is.
    pub kind: ValueKind,
}

impl StoredValue {
    /// A string value.
    pub fn string(seq: Seq, expires_at_ms: u64, value: Bytes) -> StoredValue {
        StoredValue {
            seq,
            expires_at_ms,
            value,
            kind: ValueKind::String,
        }
    }

    /// Whether it has expired at `now_ms` (I4: an expired key is never returned).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        is_expired(self.expires_at_ms, now_ms)
    }
}

/// How long past its expiry a collection's elements are kept: a node whose
/// clock is behind the primary's may still read it as live meanwhile.
pub(crate) const RECLAIM_GRACE_MS: u64 = 5 * 60 * 1000;

/// Whether `value`, stored at `key`, is the collection `id`, and so its
/// elements must be kept: it is, and it has not expired, or expired less
/// than [`RECLAIM_GRACE_MS`] ago.
pub(crate) fn holds_collection(
    key: &[u8],
    value: Option<&StoredValue>,
    id: u64,
    now_ms: u64,
) -> Result<bool> {
    let Some(value) = value else {
        return Ok(false);
    };
    let never = value.expires_at_ms == 0;
    if !never && is_expired(value.expires_at_ms.saturating_add(RECLAIM_GRACE_MS), now_ms) {
        return Ok(false);
    }
    Ok(match value.kind {
        ValueKind::String => false,
        ValueKind::List => ListMeta::decode(key, &value.value)?.id == id,
        ValueKind::Set | ValueKind::Hash | ValueKind::SortedSet => {
            MemberMeta::decode(key, &value.value)?.id == id
        }
    })
}

/// Puts an iterator from `prefix_iter` on its first key (`end` `Left`) or
/// its last (`Right`).
fn seek_edge(iter: &mut rocksdb::DBRawIterator<'_>, end: End) {
    match end {
        End::Left => iter.seek_to_first(),
        End::Right => iter.seek_to_last(),
    }
}

/// Moves `iter` one key on, towards the other end from `end`.
fn step(iter: &mut rocksdb::DBRawIterator<'_>, end: End) {
    match end {
        End::Left => iter.next(),
        End::Right => iter.prev(),
    }
}

/// Whether a deadline (0 = never) has passed.
pub(crate) fn is_expired(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms != 0 && expires_at_ms <= now_ms
}

fn encode_value(seq: Seq, expires_at_ms: u64, kind: ValueKind, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TYPED_HEADER_BYTES + value.len());
    let typed = kind != ValueKind::String;
    out.push(if typed {
        TYPED_VALUE_FORMAT
    } else {
        VALUE_FORMAT
    });
    out.extend_from_slice(&seq.0.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    if typed {
        out.push(kind.to_byte());
    }
    out.extend_from_slice(value);
    out
}

/// A stored value's header fields and the bytes after the header.
struct RawValue<'a> {
    seq: Seq,
    expires_at_ms: u64,
    kind: ValueKind,
    value: &'a [u8],
}

/// Reads the header; `None` if the bytes are not a stored value of a
/// format (and kind) this build knows.
fn decode_raw(raw: &[u8]) -> Option<RawValue<'_>> {
    let field = |at: usize| raw.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes);
    let (kind, header) = match *raw.first()? {
        VALUE_FORMAT => (ValueKind::String, VALUE_HEADER_BYTES),
        TYPED_VALUE_FORMAT => (ValueKind::from_byte(*raw.get(17)?)?, TYPED_HEADER_BYTES),
        _ => return None,
    };
    Some(RawValue {
        seq: Seq(field(1)?),
        expires_at_ms: field(9)?,
        kind,
        value: raw.get(header..)?,
    })
}

/// Reads the header's seq and expiry; `None` as for [`decode_raw`].
fn decode_header(raw: &[u8]) -> Option<(Seq, u64)> {
    decode_raw(raw).map(|v| (v.seq, v.expires_at_ms))
}

fn decode_value(key: &[u8], raw: &[u8]) -> Result<StoredValue> {
    let v = decode_raw(raw).ok_or_else(|| StoreError::DamagedValue {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "short or unknown value header",
    })?;
    Ok(StoredValue {
        seq: v.seq,
        expires_at_ms: v.expires_at_ms,
        value: Bytes::copy_from_slice(v.value),
        kind: v.kind,
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
    /// Reads that may use only memtables and cached blocks ([`Self::get_cached`]).
    cached_read: ReadOptions,
    /// [`DiskConfig::inline_reads`].
    inline_reads: bool,
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
        let mut cached_read = ReadOptions::default();
        cached_read.set_read_tier(ReadTier::BlockCache);
        let disk = DiskTier {
            db,
            path: path.to_path_buf(),
            write_opts,
            cached_read,
            inline_reads: cfg.inline_reads,
        };
        disk.check_layout()?;
        Ok(disk)
    }

    /// Refuses a directory of another key layout; stamps a new one.
    fn check_layout(&self) -> Result<()> {
        let found = read_layout(&self.db, self.meta(), self.data())?;
        match found {
            Some(DISK_LAYOUT) => Ok(()),
            Some(found) => Err(layout_error(&self.path, found)),
            None => {
                self.db.put_cf_opt(
                    self.meta(),
                    LAYOUT_KEY,
                    DISK_LAYOUT.to_le_bytes(),
                    &self.write_opts,
                )?;
                self.flush()
            }
        }
    }

    /// Copies every entry of a layout-1 RocksDB directory (opened read
    /// only) into this fresh one behind its slot, with its applied seq;
    /// `progress` hears the entries copied so far. Refuses a directory
    /// holding an unfinished full sync, whose resume point has no meaning
    /// in the new order.
    pub(super) fn import_layout_1(&self, old: &Path, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        let from = DB::open_cf_for_read_only(&Options::default(), old, [CF_DATA, CF_META], false)?;
        let (old_data, old_meta) = (cf(&from, CF_DATA), cf(&from, CF_META));
        if from.get_pinned_cf(old_meta, INSTALL_KEY)?.is_some() {
            return Err(StoreError::UnfinishedInstall {
                data_dir: data_dir_of(&self.path),
            });
        }
        let applied =
            decode_applied_seq(from.get_pinned_cf(old_meta, APPLIED_SEQ_KEY)?.as_deref())?;
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        let (mut batch, mut batch_bytes, mut copied) = (WriteBatch::default(), 0, 0u64);
        for item in from.iterator_cf_opt(old_data, opts, IteratorMode::Start) {
            let (key, raw) = item?;
            batch_bytes += key.len() + raw.len();
            batch.put_cf(self.data(), keys::disk_key(&key), &raw);
            copied += 1;
            if batch_bytes >= 4 << 20 {
                self.db
                    .write_opt(std::mem::take(&mut batch), &self.write_opts)?;
                batch_bytes = 0;
                progress(copied);
            }
        }
        batch.put_cf(self.meta(), APPLIED_SEQ_KEY, applied.0.to_le_bytes());
        self.db.write_opt(batch, &self.write_opts)?;
        progress(copied);
        self.flush()?;
        Ok(copied)
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
        match self.db.get_pinned_cf(self.data(), keys::disk_key(key))? {
            None => Ok(None),
            Some(raw) => decode_value(key, &raw).map(Some),
        }
    }

    /// [`Self::get`] for several keys: one RocksDB `MultiGet`, which reads
    /// the blocks the keys need together. Answers in key order.
    pub fn get_many(&self, keys: &[Bytes]) -> Result<Vec<Option<StoredValue>>> {
        let disk_keys: Vec<Vec<u8>> = keys.iter().map(|k| keys::disk_key(k)).collect();
        self.db
            .batched_multi_get_cf(self.data(), disk_keys.iter(), false)
            .into_iter()
            .zip(keys)
            .map(|(found, key)| match found? {
                None => Ok(None),
                Some(raw) => decode_value(key, &raw).map(Some),
            })
            .collect()
    }

    /// Like [`Self::get`], but only from what RocksDB holds in memory (its
    /// memtables and block cache): `None` when answering would read a file.
    /// It does no I/O, so it may run on an async worker thread.
    /// Always `None` when [`DiskConfig::inline_reads`] is off.
    pub fn get_cached(&self, key: &[u8]) -> Result<Option<Option<StoredValue>>> {
        if !self.inline_reads {
            return Ok(None);
        }
        match self
            .db
            .get_pinned_cf_opt(self.data(), keys::disk_key(key), &self.cached_read)
        {
            Ok(None) => Ok(Some(None)),
            Ok(Some(raw)) => decode_value(key, &raw).map(|v| Some(Some(v))),
            Err(e) if e.kind() == ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A consistent read of the list at `key`: its metadata and the
    /// elements at the positions `span` picks from it (both ends
    /// inclusive; `None` reads none). `None` if the key is absent or
    /// expired at `now_ms`, `WrongType` if it holds something else.
    pub fn read_list(
        &self,
        key: &[u8],
        now_ms: u64,
        span: impl FnOnce(&ListMeta) -> Option<(u64, u64)>,
    ) -> Result<Option<(ListMeta, Vec<Bytes>)>> {
        let snapshot = self.db.snapshot();
        let found =
            self.collection_in(&snapshot, key, ValueKind::List, now_ms, ListMeta::decode)?;
        let Some(meta) = found else {
            return Ok(None);
        };
        let Some((first, last)) = span(&meta) else {
            return Ok(Some((meta, vec![])));
        };
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        let mut iter = self.db.raw_iterator_cf_opt(self.data(), opts);
        // Element keys differ only in their last 8 bytes, the index.
        let mut expected = keys::disk_key(&meta.element(key, first));
        let index_at = expected.len() - 8;
        iter.seek(&expected);
        let mut out = Vec::with_capacity((last - first + 1).min(1024) as usize);
        for pos in first..=last {
            let index = meta.head.wrapping_add(pos).to_be_bytes();
            expected[index_at..].copy_from_slice(&index);
            match (iter.key(), iter.value()) {
                (Some(k), Some(raw)) if k == expected.as_slice() => {
                    out.push(decode_value(k, raw)?.value);
                }
                _ => {
                    iter.status()?;
                    return Err(ListMeta::missing_element(key));
                }
            }
            iter.next();
        }
        Ok(Some((meta, out)))
    }

    /// The metadata (read by `decode`) of the collection of `kind` at `key`
    /// in `snapshot`: `None` if the key is absent or expired at `now_ms`,
    /// `WrongType` if it holds another kind.
    fn collection_in<M>(
        &self,
        snapshot: &rocksdb::Snapshot<'_>,
        key: &[u8],
        kind: ValueKind,
        now_ms: u64,
        decode: fn(&[u8], &[u8]) -> Result<M>,
    ) -> Result<Option<M>> {
        let Some(raw) = snapshot.get_cf(self.data(), keys::disk_key(key))? else {
            return Ok(None);
        };
        let value = decode_value(key, &raw)?;
        if value.is_expired(now_ms) {
            return Ok(None);
        }
        if value.kind != kind {
            return Err(StoreError::WrongType);
        }
        decode(key, &value.value).map(Some)
    }

    /// A consistent read of the values of `members` in the set or hash of
    /// `kind` at `key` (a set member's is empty), in order, `None` for one
    /// it lacks; with the collection's metadata. `None` if there is no such
    /// collection, `WrongType` if the key holds another kind.
    pub fn member_values(
        &self,
        key: &[u8],
        kind: ValueKind,
        now_ms: u64,
        members: &[Bytes],
    ) -> Result<Option<(MemberMeta, Vec<Option<Bytes>>)>> {
        let snapshot = self.db.snapshot();
        let Some(meta) = self.collection_in(&snapshot, key, kind, now_ms, MemberMeta::decode)?
        else {
            return Ok(None);
        };
        let mut values = Vec::with_capacity(members.len());
        for member in members {
            let element = keys::disk_key(&meta.member(key, member));
            let raw = snapshot.get_cf(self.data(), &element)?;
            values.push(match raw {
                Some(raw) => Some(decode_value(&element, &raw)?.value),
                None => None,
            });
        }
        Ok(Some((meta, values)))
    }

    /// A consistent read of up to `limit` members (name and value) of the
    /// set or hash of `kind` at `key`, in byte order after `after`. `None`
    /// and `WrongType` as for [`member_values`](Self::member_values).
    pub fn member_page(
        &self,
        key: &[u8],
        kind: ValueKind,
        now_ms: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Option<Vec<(Bytes, Bytes)>>> {
        let snapshot = self.db.snapshot();
        let Some(meta) = self.collection_in(&snapshot, key, kind, now_ms, MemberMeta::decode)?
        else {
            return Ok(None);
        };
        let prefix = keys::disk_key(&meta.prefix(key));
        let mut iter = self.prefix_iter(&prefix, Some(&snapshot));
        match after {
            Some(after) => {
                let mut from = keys::disk_key(&meta.member(key, after));
                from.push(0);
                iter.seek(&from);
            }
            None => iter.seek(&prefix),
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let (Some(k), Some(raw)) = (iter.key(), iter.value()) else {
                iter.status()?;
                break;
            };
            let Some(member) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push((Bytes::copy_from_slice(member), decode_value(k, raw)?.value));
            iter.next();
        }
        Ok(Some(out))
    }

    /// A consistent read of the members, with their scores, at the ranks
    /// `span` picks (both ends inclusive) from the sorted set at `key`,
    /// ranked from `end` (`Left`: rank 0 is the lowest score; `Right`: the
    /// highest), in rank order. `None` if there is no sorted set,
    /// `WrongType` if the key holds another kind. Reaching rank `n` walks
    /// the `n` before it.
    pub fn score_range(
        &self,
        key: &[u8],
        now_ms: u64,
        end: End,
        span: impl FnOnce(&MemberMeta) -> Option<(u64, u64)>,
    ) -> Result<Option<Vec<(Bytes, f64)>>> {
        let snapshot = self.db.snapshot();
        let kind = ValueKind::SortedSet;
        let Some(meta) = self.collection_in(&snapshot, key, kind, now_ms, MemberMeta::decode)?
        else {
            return Ok(None);
        };
        let Some((first, last)) = span(&meta) else {
            return Ok(Some(vec![]));
        };
        let prefix = keys::disk_key(&sorted::rank_prefix(&meta, key));
        let mut iter = self.prefix_iter(&prefix, Some(&snapshot));
        seek_edge(&mut iter, end);
        let mut out = Vec::new();
        for rank in 0..=last {
            let Some(k) = iter.key() else {
                iter.status()?;
                break;
            };
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if rank >= first {
                out.push(sorted::split_rank(key, rest)?);
            }
            step(&mut iter, end);
        }
        Ok(Some(out))
    }

    /// Up to `limit` stored keys that start with the internal key prefix
    /// `prefix`, from `end` (`Left`: byte order; `Right`: the last first):
    /// the latest state, for the commit thread.
    pub fn edge_keys_with_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
        end: End,
    ) -> Result<Vec<Bytes>> {
        let disk_prefix = keys::disk_key(prefix);
        let mut iter = self.prefix_iter(&disk_prefix, None);
        seek_edge(&mut iter, end);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(k) = iter.key() else {
                iter.status()?;
                break;
            };
            if !k.starts_with(&disk_prefix) {
                break;
            }
            out.push(Bytes::copy_from_slice(stored_key(k)?));
            step(&mut iter, end);
        }
        Ok(out)
    }

    /// An iterator over the keys under the disk-key prefix `prefix` only
    /// (as of `snapshot`, when given): bounded both ways, so that a seek
    /// never walks the deletes of the keys around the prefix, which after
    /// many pops (each deleting elements) would cost a walk over all of
    /// them.
    fn prefix_iter<'a>(
        &'a self,
        prefix: &[u8],
        snapshot: Option<&rocksdb::Snapshot<'a>>,
    ) -> rocksdb::DBRawIterator<'a> {
        let mut opts = ReadOptions::default();
        if let Some(snapshot) = snapshot {
            opts.set_snapshot(snapshot);
        }
        opts.set_iterate_lower_bound(prefix.to_vec());
        if let Some(past) = keys::prefix_end(prefix) {
            opts.set_iterate_upper_bound(past);
        }
        self.db.raw_iterator_cf_opt(self.data(), opts)
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
                    } => batch.put_cf(
                        data,
                        keys::disk_key(key),
                        encode_value(record.seq, *expires_at_ms, ValueKind::String, value),
                    ),
                    Mutation::PutTyped {
                        key,
                        kind,
                        value,
                        expires_at_ms,
                    } => batch.put_cf(
                        data,
                        keys::disk_key(key),
                        encode_value(record.seq, *expires_at_ms, *kind, value),
                    ),
                    Mutation::Delete { key } => batch.delete_cf(data, keys::disk_key(key)),
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

    /// Entries whose key starts with `prefix` and comes after `after` in
    /// (slot, key) order (or from the start), skipping expired ones, up to
    /// `limit`. Also returns where the next page resumes (the last key
    /// examined), or `None` when the scan is done. Expired entries count
    /// towards the work bound (`ScanLimit::examined`), so a page over a
    /// range of dead keys ends early (possibly empty) instead of walking
    /// all of them. A prefix visits each slot's range with one seek; one
    /// holding a complete `{tag}` visits only the tag's slot, and with
    /// `only` the scan visits only those slots (a cluster node's own).
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: ScanLimit,
        only: Option<&SlotSet>,
        now_ms: u64,
    ) -> Result<(ScanEntries, Option<Bytes>)> {
        let mut opts = ReadOptions::default();
        // A scan should not push hot point-lookup blocks out of the cache.
        opts.fill_cache(false);
        let mut iter = self.db.raw_iterator_cf_opt(self.data(), opts);
        let (_, last_slot) = keys::scan_slots(prefix);
        let (mut slot, mut skip_to) = keys::resume_point(prefix, after);
        let mut page = ScanPage::new(limit);
        while slot <= last_slot {
            if let Some(only) = only {
                match only.first_from(slot) {
                    Some(next) if next.get() == slot => {}
                    Some(next) => (slot, skip_to) = (next.get(), None),
                    None => break,
                }
                if slot > last_slot {
                    break;
                }
            }
            if page.is_full() {
                return Ok(page.resume());
            }
            let range = keys::slot_key(slot_of(slot), prefix);
            let start = match skip_to {
                Some(after) if after > prefix => keys::slot_key(slot_of(slot), after),
                _ => range.clone(),
            };
            if !iter
                .key()
                .is_some_and(|k| k.starts_with(&range) && *k >= *start)
            {
                iter.seek(&start);
            }
            while let (Some(key), Some(raw)) = (iter.key(), iter.value()) {
                if !key.starts_with(&range) {
                    break;
                }
                let user = &key[keys::SLOT_PREFIX_BYTES..];
                if keys::is_internal(user) {
                    // The rest of the slot is collections' elements.
                    break;
                }
                if skip_to.is_none_or(|after| user > after) {
                    if page.is_full() {
                        return Ok(page.resume());
                    }
                    page.offer(user, decode_value(user, raw)?, now_ms);
                }
                iter.next();
            }
            iter.status()?;
            skip_to = None;
            // The key the iterator rests on names the next slot with any
            // keys at all, so empty slots cost no seek.
            slot = match iter.key().and_then(keys::split) {
                Some((next, _)) if next.get() > slot => next.get(),
                Some(_) => slot + 1,
                None => break,
            };
        }
        Ok(page.done())
    }

    /// Up to `limit` element keys whose collection is gone (its key absent,
    /// expired past the grace period, or holding something else now: a
    /// string, or a newer collection, which has another id), in disk order
    /// from the disk key `from` (`None`: the start), and the disk key to go
    /// on from (`None`: the pass is over). A slot's user keys cost one seek,
    /// a live collection's elements one more; one call takes a bounded
    /// number of steps, so it may return none with a place to go on from.
    pub fn orphan_elements(
        &self,
        from: Option<&[u8]>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<Bytes>, Option<Vec<u8>>)> {
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        let mut iter = self.db.raw_iterator_cf_opt(self.data(), opts);
        let internal = |slot| keys::slot_key(slot, &keys::INTERNAL_PREFIX);
        iter.seek(from.map_or_else(|| internal(Slot::FIRST), <[u8]>::to_vec));
        let mut out = Vec::new();
        // Bounds the work of one call, orphans found or not.
        let mut steps = limit.saturating_mul(16).max(1024);
        // The last collection judged, and whether it is live.
        let mut judged: Option<(Vec<u8>, u64, bool)> = None;
        loop {
            let Some(disk_key) = iter.key() else {
                iter.status()?;
                return Ok((out, None));
            };
            if steps == 0 {
                return Ok((out, Some(disk_key.to_vec())));
            }
            steps -= 1;
            let Some((slot, key)) = keys::split(disk_key) else {
                iter.next(); // damaged: left for an operator to look at
                continue;
            };
            if !keys::is_internal(key) {
                // A slot's internal keys are the tail of its range.
                iter.seek(internal(slot));
                continue;
            }
            let Some((owner, id)) = keys::collection_of(key) else {
                iter.next();
                continue;
            };
            let live = match &judged {
                Some((o, i, live)) if o.as_slice() == owner && *i == id => *live,
                _ => {
                    let live = self.holds_collection(owner, id, now_ms)?;
                    judged = Some((owner.to_vec(), id, live));
                    live
                }
            };
            if live {
                match id.checked_add(1) {
                    // Past every element of this collection.
                    Some(after) => {
                        iter.seek(keys::slot_key(slot, &keys::element_prefix(owner, after)));
                    }
                    None => iter.next(),
                }
                continue;
            }
            out.push(Bytes::copy_from_slice(key));
            if out.len() >= limit {
                let mut next = disk_key.to_vec();
                next.push(0);
                return Ok((out, Some(next)));
            }
            iter.next();
        }
    }

    /// Whether `key` holds the collection `id` (see [`holds_collection`]).
    fn holds_collection(&self, key: &[u8], id: u64, now_ms: u64) -> Result<bool> {
        let raw = self.db.get_pinned_cf(self.data(), keys::disk_key(key))?;
        let value = raw.map(|raw| decode_value(key, &raw)).transpose()?;
        holds_collection(key, value.as_ref(), id, now_ms)
    }

    /// Up to `limit` stored keys (live or expired) of the slots of
    /// `ranges`, after the user key `after`: what a sweep deletes.
    pub fn keys_in_slots(
        &self,
        ranges: &SlotRanges,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        walk_slots(&self.db, self.data(), ranges, after, |key, _| {
            out.push(Bytes::copy_from_slice(key));
            Ok(out.len() < limit)
        })?;
        Ok(out)
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
            let key = stored_key(&key)?;
            let Some(v) = decode_raw(&raw) else {
                return Err(StoreError::DamagedValue {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "short or unknown value header",
                });
            };
            if is_expired(v.expires_at_ms, expired_before_ms) {
                continue;
            }
            keys += 1;
            // Length-prefixed fields, so no two different entry lists hash alike.
            ctx.update(&(key.len() as u64).to_le_bytes());
            ctx.update(key);
            ctx.update(&v.seq.0.to_le_bytes());
            ctx.update(&v.expires_at_ms.to_le_bytes());
            if v.kind != ValueKind::String {
                // Strings hash as they always did.
                ctx.update(&[v.kind.to_byte()]);
            }
            ctx.update(&(v.value.len() as u64).to_le_bytes());
            ctx.update(v.value);
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
                keys::disk_key(&e.key),
                encode_value(e.version, e.expires_at_ms, e.kind, &e.value),
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

/// One scan page as it fills: the entries, their bytes, the work done.
struct ScanPage {
    limit: ScanLimit,
    out: ScanEntries,
    bytes: usize,
    examined: usize,
    /// The last key examined: where the next page resumes.
    last: Option<Bytes>,
    /// The byte bound stopped the page.
    full: bool,
}

impl ScanPage {
    fn new(limit: ScanLimit) -> ScanPage {
        ScanPage {
            limit,
            out: Vec::new(),
            bytes: 0,
            examined: 0,
            last: None,
            full: false,
        }
    }

    /// Whether the page may take no more entries.
    fn is_full(&self) -> bool {
        self.full || self.out.len() == self.limit.entries || self.examined == self.limit.examined()
    }

    /// Examines one entry: an expired one only moves the resume point; a
    /// live one goes in unless it would break the byte bound (the first
    /// always goes in: one key and value fit a frame).
    fn offer(&mut self, key: &[u8], value: StoredValue, now_ms: u64) {
        self.examined += 1;
        let key = Bytes::copy_from_slice(key);
        if value.is_expired(now_ms) {
            self.last = Some(key);
            return;
        }
        let size = ScanLimit::entry_bytes(key.len(), value.value.len());
        if !self.out.is_empty() && self.bytes + size > self.limit.bytes {
            self.full = true;
            return;
        }
        self.bytes += size;
        self.last = Some(key.clone());
        self.out.push((key, value));
    }

    /// The page with a cursor: more may follow.
    fn resume(self) -> (ScanEntries, Option<Bytes>) {
        (self.out, self.last)
    }

    /// The final page.
    fn done(self) -> (ScanEntries, Option<Bytes>) {
        if self.full {
            return (self.out, self.last);
        }
        (self.out, None)
    }
}

/// A slot number the scan loop bounds below [`SLOTS`].
#[expect(clippy::expect_used, reason = "callers loop below SLOTS")]
fn slot_of(n: u16) -> Slot {
    Slot::new(n).expect("slot below SLOTS")
}

/// A set of slots as inclusive ranges `(first, last)`, ascending and
/// disjoint: what a migration moves between two shards.
pub type SlotRanges = [(u16, u16)];

/// Visits the entries of `ranges` in (slot, key) order, after the user key
/// `after` (which must lie in one of the ranges, or be `None`), until
/// `visit` says stop by returning `false`.
fn walk_slots(
    db: &DB,
    data: &ColumnFamily,
    ranges: &SlotRanges,
    after: Option<&[u8]>,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    let mut opts = ReadOptions::default();
    // A migration or a sweep must not push hot blocks out of the cache.
    opts.fill_cache(false);
    let mut iter = db.raw_iterator_cf_opt(data, opts);
    let after = after.map(keys::disk_key);
    for &(first, last) in ranges {
        let start = keys::slot_key(slot_of(first), b"");
        // The prefix of slot `last + 1` (0x4000 past the last slot, which
        // no stored key reaches).
        let end = (last + 1).to_be_bytes();
        let end = end.as_slice();
        match &after {
            Some(after) if after.as_slice() >= end => continue,
            Some(after) if after.as_slice() >= start.as_slice() => iter.seek(after),
            _ => iter.seek(&start),
        }
        while let (Some(key), Some(raw)) = (iter.key(), iter.value()) {
            if key >= end {
                break;
            }
            if after.as_deref() == Some(key) {
                iter.next();
                continue;
            }
            if !visit(stored_key(key)?, raw)? {
                return Ok(());
            }
            iter.next();
        }
        iter.status()?;
    }
    Ok(())
}

/// The user key of a stored key; a key with no slot prefix is damage.
fn stored_key(disk_key: &[u8]) -> Result<&[u8]> {
    keys::split(disk_key)
        .map(|(_, key)| key)
        .ok_or_else(|| StoreError::DamagedValue {
            key: String::from_utf8_lossy(disk_key).into_owned(),
            reason: "stored key has no slot prefix",
        })
}

/// A column family the directory was opened with.
#[expect(clippy::expect_used, reason = "every open names both families")]
fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).expect("column family opened")
}

/// The directory's key layout: `meta/layout`, or 1 for a directory
/// without it that holds anything; `None` for an empty one, which takes
/// this build's layout.
fn read_layout(db: &DB, meta: &ColumnFamily, data: &ColumnFamily) -> Result<Option<u32>> {
    if let Some(raw) = db.get_pinned_cf(meta, LAYOUT_KEY)? {
        let bytes: [u8; 4] = (*raw).try_into().map_err(|_| StoreError::DamagedValue {
            key: "meta/layout".into(),
            reason: "not 4 bytes",
        })?;
        return Ok(Some(u32::from_le_bytes(bytes)));
    }
    let empty = db
        .iterator_cf(data, IteratorMode::Start)
        .next()
        .transpose()?
        .is_none()
        && db.get_pinned_cf(meta, APPLIED_SEQ_KEY)?.is_none()
        && db.get_pinned_cf(meta, INSTALL_KEY)?.is_none();
    Ok((!empty).then_some(1))
}

/// The error for a directory in `found` layout, by age.
fn layout_error(db_dir: &Path, found: u32) -> StoreError {
    let data_dir = data_dir_of(db_dir);
    if found > DISK_LAYOUT {
        StoreError::NewerLayout {
            data_dir,
            found,
            expected: DISK_LAYOUT,
        }
    } else {
        StoreError::OldLayout {
            data_dir,
            found,
            expected: DISK_LAYOUT,
        }
    }
}

/// The node's data directory: the RocksDB directory's parent.
fn data_dir_of(db_dir: &Path) -> PathBuf {
    db_dir.parent().unwrap_or(db_dir).to_path_buf()
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
    /// What the value is (replication protocol 3, dump version 3).
    pub kind: ValueKind,
}

impl SnapshotEntry {
    /// The mutation that stores it as it is (a slot migration's copy).
    pub fn into_mutation(self) -> Mutation {
        Mutation::put(self.key, self.kind, self.value, self.expires_at_ms)
    }

    /// The entry of `key` holding `value`.
    pub fn of(key: &[u8], value: StoredValue) -> SnapshotEntry {
        SnapshotEntry {
            key: Bytes::copy_from_slice(key),
            version: value.seq,
            expires_at_ms: value.expires_at_ms,
            value: value.value,
            kind: value.kind,
        }
    }

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
        let (data, meta) = (cf(&db, CF_DATA), cf(&db, CF_META));
        match read_layout(&db, meta, data)? {
            Some(DISK_LAYOUT) | None => {}
            Some(found) => return Err(layout_error(dir, found)),
        }
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
        let after = after.map(keys::disk_key);
        let mode = match &after {
            Some(after) => IteratorMode::From(after, Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.db.iterator_cf_opt(data, opts, mode) {
            let (key, raw) = item?;
            if after.as_ref().is_some_and(|after| *key <= **after) {
                continue;
            }
            let key = stored_key(&key)?;
            let value = decode_value(key, &raw)?;
            if value.is_expired(now_ms) {
                continue;
            }
            bytes += key.len() + value.value.len();
            out.push(SnapshotEntry::of(key, value));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// [`Self::read_chunk`] over the slots of `ranges` only, after the
    /// user key `after`: the copy of a slot migration.
    pub fn read_slots_chunk(
        &self,
        ranges: &SlotRanges,
        after: Option<&[u8]>,
        max_bytes: usize,
        now_ms: u64,
    ) -> Result<Vec<SnapshotEntry>> {
        #[expect(clippy::expect_used, reason = "opened with both families")]
        let data = self
            .db
            .cf_handle(CF_DATA)
            .expect("data column family exists");
        let mut out = Vec::new();
        let mut bytes = 0;
        walk_slots(&self.db, data, ranges, after, |key, raw| {
            let value = decode_value(key, raw)?;
            if !value.is_expired(now_ms) {
                bytes += key.len() + value.value.len();
                out.push(SnapshotEntry::of(key, value));
            }
            Ok(bytes < max_bytes)
        })?;
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
        // Raw key sizes include RocksDB's 8-byte internal suffix and our
        // slot prefix; raw values include our value header.
        let overhead = 8 + keys::SLOT_PREFIX_BYTES + VALUE_HEADER_BYTES;
        let bytes = (field("raw key size") + field("raw value size"))
            .saturating_sub(entries * overhead as u64);
        (entries, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::cluster::key_slot;

    fn disk_with(dir: &Path, keys: &[String]) -> DiskTier {
        let disk = DiskTier::open(
            &dir.join("db"),
            &DiskConfig::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let records: Vec<WalRecord> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| WalRecord {
                seq: Seq(i as u64 + 1),
                mutations: vec![Mutation::Put {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from_static(b"v"),
                    expires_at_ms: 0,
                }],
            })
            .collect();
        disk.apply(&records).unwrap();
        disk
    }

    #[test]
    fn a_cached_read_answers_from_memory_or_says_it_would_read_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ["a".to_string(), "b".to_string()];
        let disk = disk_with(dir.path(), &keys);
        // In the memtable: answered, present or absent.
        let found = disk.get_cached(b"a").unwrap().unwrap().unwrap();
        assert_eq!(found.value, Bytes::from_static(b"v"));
        assert!(disk.get_cached(b"zz").unwrap().unwrap().is_none());
        // Flushed and reopened: the table's blocks are not cached yet.
        disk.flush().unwrap();
        drop(disk);
        let disk = DiskTier::open(
            &dir.path().join("db"),
            &DiskConfig::default(),
            Arc::new(SystemClock),
        )
        .unwrap();
        assert!(
            disk.get_cached(b"a").unwrap().is_none(),
            "a file read needed"
        );
        assert!(disk.get(b"a").unwrap().is_some());
        let found = disk
            .get_cached(b"a")
            .unwrap()
            .expect("its block is cached now");
        assert_eq!(found.unwrap().value, Bytes::from_static(b"v"));
    }

    #[test]
    fn a_slot_walk_visits_exactly_its_ranges_and_resumes_after_a_key() {
        let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
        let dir = tempfile::tempdir().unwrap();
        let disk = disk_with(dir.path(), &keys);
        let ranges = [(0, 4000), (9000, 9100), (16000, 16383)];
        let inside = |k: &String| {
            let slot = key_slot(k.as_bytes()).get();
            ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
        };
        let mut want: Vec<&String> = keys.iter().filter(|k| inside(k)).collect();
        want.sort_by_key(|k| (key_slot(k.as_bytes()).get(), k.as_bytes().to_vec()));
        let (mut got, mut after) = (Vec::new(), None::<Bytes>);
        loop {
            let page = disk.keys_in_slots(&ranges, after.as_deref(), 7).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            got.extend(page);
        }
        let want: Vec<Bytes> = want.into_iter().map(|k| Bytes::from(k.clone())).collect();
        assert_eq!(got, want);
        assert!(!got.is_empty() && got.len() < keys.len());
    }

    /// Every key of a scan for `prefix`, page by page of `per_page`.
    fn scan_all(disk: &DiskTier, prefix: &[u8], per_page: usize) -> Vec<Bytes> {
        scan_all_in(disk, prefix, per_page, None)
    }

    /// [`scan_all`] over the slots of `only`.
    fn scan_all_in(
        disk: &DiskTier,
        prefix: &[u8],
        per_page: usize,
        only: Option<&SlotSet>,
    ) -> Vec<Bytes> {
        let (mut out, mut cursor) = (Vec::new(), None::<Bytes>);
        loop {
            let limit = ScanLimit::entries(per_page);
            let (page, next) = disk
                .scan(prefix, cursor.as_deref(), limit, only, 0)
                .unwrap();
            out.extend(page.into_iter().map(|(k, _)| k));
            match next {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
    }

    #[test]
    fn a_scan_goes_in_slot_order_and_finds_every_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
        keys.extend((0..50).map(|i| format!("other:{i}")));
        keys.extend((0..40).map(|i| format!("{{t}}:{i}")));
        let disk = disk_with(dir.path(), &keys);

        for per_page in [1, 7, 1000] {
            let found = scan_all(&disk, b"user:", per_page);
            assert_eq!(found.len(), 300, "page size {per_page}");
            let order: Vec<(u16, &[u8])> =
                found.iter().map(|k| (key_slot(k).get(), &k[..])).collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "strictly slot order");
        }
        assert_eq!(scan_all(&disk, b"", 13).len(), keys.len());
        let tagged = scan_all(&disk, b"{t}:", 3);
        assert_eq!(tagged.len(), 40);
        assert!(tagged.windows(2).all(|w| w[0] < w[1]), "one slot: bytewise");
        assert!(scan_all(&disk, b"nope", 10).is_empty());
    }

    #[test]
    fn a_scan_over_some_slots_lists_exactly_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        keys.extend((0..20).map(|i| format!("{{t}}:{i}")));
        let disk = disk_with(dir.path(), &keys);
        // Every third slot that holds a key, and the tag's.
        let mut slots: Vec<Slot> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
        slots.sort();
        slots.dedup();
        let only: SlotSet = slots.iter().copied().step_by(3).collect();
        let mut want: Vec<Bytes> = keys
            .iter()
            .filter(|k| only.contains(key_slot(k.as_bytes())))
            .map(|k| Bytes::from(k.clone()))
            .collect();
        want.sort_by_key(|k| (key_slot(k).get(), k.clone()));
        assert!(!want.is_empty() && want.len() < keys.len());
        for per_page in [1, 5, 1000] {
            assert_eq!(scan_all_in(&disk, b"", per_page, Some(&only)), want);
        }
        let tag = key_slot(b"{t}");
        let (mut with_tag, mut without) = (only.clone(), SlotSet::empty());
        with_tag.insert(tag);
        slots
            .iter()
            .filter(|&&s| s != tag)
            .for_each(|&s| without.insert(s));
        assert_eq!(scan_all_in(&disk, b"{t}:", 4, Some(&with_tag)).len(), 20);
        assert!(scan_all_in(&disk, b"{t}:", 4, Some(&without)).is_empty());
        assert!(scan_all_in(&disk, b"", 10, Some(&SlotSet::empty())).is_empty());
    }

    #[test]
    fn a_scan_resumes_after_a_cursor_it_did_not_issue() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let disk = disk_with(dir.path(), &keys);
        let all = scan_all(&disk, b"k", 1000);
        // A cursor that is no key: the page starts after its position.
        let cursor = b"k-not-a-key";
        let (page, _) = disk
            .scan(b"k", Some(cursor), ScanLimit::entries(1000), None, 0)
            .unwrap();
        let position = (key_slot(cursor).get(), &cursor[..]);
        let expected: Vec<&Bytes> = all
            .iter()
            .filter(|k| (key_slot(k).get(), &k[..]) > position)
            .collect();
        let got: Vec<&Bytes> = page.iter().map(|(k, _)| k).collect();
        assert_eq!(got, expected);
    }

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
