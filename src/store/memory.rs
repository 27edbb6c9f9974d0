//! The memory tier: a moka cache of hot keys in front of the disk tier.
//!
//! Write-through: the commit pipeline updates (or drops) a key here after RocksDB, so it
//! never holds dirty state and is purely a read accelerator. The one hazard
//! is a read-miss *fill* racing a write (I3):
//!
//! 1. a reader misses here and reads v1 from RocksDB,
//! 2. a writer commits v2 (or a delete) and updates this tier,
//! 3. the reader inserts the stale v1.
//!
//! Every key hashes to a stripe holding a counter. Writers bump the counter
//! and update the cache under the stripe lock; a reader takes the counter
//! *before* its disk read ([`MemoryTier::fill_token`]) and fills only if it is
//! unchanged, checked under the same lock ([`MemoryTier::fill`]). A fill that
//! raced a write to any key of its stripe is simply skipped.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use moka::sync::Cache;

use crate::clock::Clock;
use crate::store::disk::StoredValue;
use crate::types::{Seq, ValueKind};

/// Stripes of the fill guard: enough that unrelated keys rarely share one.
const STRIPES: usize = 4096;

/// Bytes charged per entry beyond key and value: moka's node, its deques,
/// the entry's allocation and their allocator headers. Measured
/// (`tests/memory_tier_cost.rs`): a 16-byte key with a 100-byte value costs
/// 468 bytes of RSS, so 352 beyond the two. Of those, moka itself takes
/// about 300: an entry of an 8-byte key and an 8-byte value costs 308.
pub const ENTRY_OVERHEAD_BYTES: u32 = 352;

/// Entries whose key and value together are at most this long are packed
/// into one allocation; longer ones keep their buffers, so caching a large
/// value copies nothing.
const PACK_MAX_BYTES: usize = 4096;

/// What the budget is charged for one entry of a `key_len`-byte key and a
/// `value_len`-byte value: the two plus [`ENTRY_OVERHEAD_BYTES`].
pub fn entry_charge(key_len: usize, value_len: usize) -> u32 {
    u32::try_from(key_len.saturating_add(value_len))
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD_BYTES)
}

/// One cached key and its value.
///
/// moka is keyed by the key's 64-bit hash rather than the key itself: moka
/// wraps every key in an `Arc` of its own, so a `Bytes` key costs two more
/// allocations. The entry keeps the whole key, and a lookup whose key
/// differs (a hash collision) is a miss; a colliding insert only replaces
/// the other key's entry, which that key's next read fills again.
#[derive(Clone)]
enum Entry {
    /// `seq (u64 LE) | expires_at_ms (u64 LE) | key_len (u32 LE) | key | value`.
    Packed(Arc<[u8]>),
    /// A large entry: the key and value in their own buffers.
    Split(Arc<(Bytes, StoredValue)>),
}

/// Bytes of a packed entry before its key: seq, expiry, key length.
const PACKED_HEADER: usize = 20;

impl Entry {
    fn new(key: &[u8], value: StoredValue) -> Entry {
        let len = key.len() + value.value.len();
        if len > PACK_MAX_BYTES {
            return Entry::Split(Arc::new((Bytes::copy_from_slice(key), value)));
        }
        let mut packed = Vec::with_capacity(PACKED_HEADER + len);
        packed.extend_from_slice(&value.seq.0.to_le_bytes());
        packed.extend_from_slice(&value.expires_at_ms.to_le_bytes());
        // A packed key is at most PACK_MAX_BYTES long.
        packed.extend_from_slice(&(key.len() as u32).to_le_bytes());
        packed.extend_from_slice(key);
        packed.extend_from_slice(&value.value);
        Entry::Packed(Arc::from(packed))
    }

    fn field(packed: &[u8], at: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&packed[at..at + 8]);
        u64::from_le_bytes(bytes)
    }

    fn key_range(packed: &[u8]) -> Range<usize> {
        let mut len = [0u8; 4];
        len.copy_from_slice(&packed[16..PACKED_HEADER]);
        PACKED_HEADER..PACKED_HEADER + u32::from_le_bytes(len) as usize
    }

    fn key(&self) -> &[u8] {
        match self {
            Entry::Packed(packed) => &packed[Entry::key_range(packed)],
            Entry::Split(split) => &split.0,
        }
    }

    fn expires_at_ms(&self) -> u64 {
        match self {
            Entry::Packed(packed) => Entry::field(packed, 8),
            Entry::Split(split) => split.1.expires_at_ms,
        }
    }

    /// What the budget is charged for it (the weigher).
    fn charge(&self) -> u32 {
        match self {
            Entry::Packed(packed) => entry_charge(packed.len() - PACKED_HEADER, 0),
            Entry::Split(split) => entry_charge(split.0.len(), split.1.value.len()),
        }
    }

    /// The value as the store hands it out; a packed value is lent out of
    /// the entry's allocation without a copy.
    fn stored(&self) -> StoredValue {
        match self {
            Entry::Packed(packed) => StoredValue::string(
                Seq(Entry::field(packed, 0)),
                Entry::field(packed, 8),
                Bytes::from_owner(PackedValue(packed.clone())),
            ),
            Entry::Split(split) => split.1.clone(),
        }
    }
}

/// A packed entry's value part, as a `Bytes` owner.
struct PackedValue(Arc<[u8]>);

impl AsRef<[u8]> for PackedValue {
    fn as_ref(&self) -> &[u8] {
        &self.0[Entry::key_range(&self.0).end..]
    }
}

/// What a memory-tier lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A live value.
    Hit(StoredValue),
    /// The key's current value has expired: the key is absent (no disk read needed).
    Expired,
    /// Not cached: ask the disk tier.
    Miss,
}

/// Proof of the stripe counter seen before a disk read.
#[derive(Debug, Clone, Copy)]
pub struct FillToken(u64);

/// Hit and miss counts of one tier (moka keeps none of its own).
#[derive(Debug, Default)]
pub struct TierCounters {
    /// Lookups that found a live value.
    pub hits: AtomicU64,
    /// Lookups that did not.
    pub misses: AtomicU64,
}

impl TierCounters {
    /// Counts one lookup.
    pub fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(hits, misses)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// The hasher of the cache's keys, which are hashes already: a u64 is
/// its own hash.
#[derive(Debug, Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        debug_assert!(false, "the memory tier's cache keys are u64 hashes");
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The hot-key cache with its fill guard and counters.
pub struct MemoryTier {
    /// Keyed by the key's hash ([`Entry`]), which moka need not hash again.
    cache: Cache<u64, Entry, BuildHasherDefault<KeyIsHash>>,
    stripes: Box<[Mutex<u64>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    budget_bytes: u64,
    /// Tests make every key collide with this.
    #[cfg(test)]
    hash_mask: u64,
    /// Hits and misses of reads that consulted this tier.
    pub counters: TierCounters,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("budget_bytes", &self.budget_bytes)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl MemoryTier {
    /// A tier holding at most about `budget_bytes` of keys and values.
    pub fn new(budget_bytes: u64, clock: Arc<dyn Clock>) -> MemoryTier {
        let cache = Cache::builder()
            .max_capacity(budget_bytes)
            .weigher(|_: &u64, entry: &Entry| entry.charge())
            .build_with_hasher(BuildHasherDefault::default());
        MemoryTier {
            cache,
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: RandomState::new(),
            clock,
            budget_bytes,
            #[cfg(test)]
            hash_mask: u64::MAX,
            counters: TierCounters::default(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        let hash = self.hasher.hash_one(key);
        #[cfg(test)]
        let hash = hash & self.hash_mask;
        hash
    }

    fn stripe(&self, hash: u64) -> MutexGuard<'_, u64> {
        let index = (hash as usize) % STRIPES;
        // A poisoned stripe only means a panic elsewhere while it was held;
        // the counter itself is still meaningful.
        self.stripes[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks `key` up for a client read, counting a hit or a miss.
    pub fn get(&self, key: &[u8]) -> Lookup {
        let lookup = self.peek(key);
        self.counters.record(matches!(lookup, Lookup::Hit(_)));
        lookup
    }

    /// Looks `key` up without counting it (the commit pipeline's reads).
    pub fn peek(&self, key: &[u8]) -> Lookup {
        let hash = self.hash(key);
        match self.cache.get(&hash) {
            Some(entry) if entry.key() == key => self.live(hash, &entry),
            _ => Lookup::Miss,
        }
    }

    fn live(&self, hash: u64, entry: &Entry) -> Lookup {
        match entry {
            // I4: expiry is checked here, exactly, on every read. moka keeps
            // no per-entry timers (they cost 48 B per entry with a TTL,
            // measured); an expired entry goes when it is read, written,
            // or evicted for room, and its bytes count against the budget
            // until then.
            entry if super::disk::is_expired(entry.expires_at_ms(), self.clock.now_ms()) => {
                self.cache.invalidate(&hash);
                Lookup::Expired
            }
            entry => Lookup::Hit(entry.stored()),
        }
    }

    /// Takes the stripe counter before a disk read; see [`MemoryTier::fill`].
    pub fn fill_token(&self, key: &[u8]) -> FillToken {
        FillToken(*self.stripe(self.hash(key)))
    }

    /// Caches a value read from the disk tier, unless a write to the key's
    /// stripe happened since `token` was taken (it might be newer: I3).
    pub fn fill(&self, key: &[u8], value: StoredValue, token: FillToken) -> bool {
        let hash = self.hash(key);
        let stripe = self.stripe(hash);
        // Only strings are cached: a collection's metadata is read by its
        // own ops, through the disk tier.
        if *stripe != token.0 || value.kind != ValueKind::String {
            return false;
        }
        self.cache.insert(hash, Entry::new(key, value));
        drop(stripe);
        true
    }

    /// Records a committed write. Called after the disk tier has it.
    ///
    /// Write-update, no write-allocate: a key already cached takes the new
    /// value (hot keys stay hot and current); any other key, and every
    /// delete, is dropped, and the next read fills it. Inserting every
    /// written key cost ~4 µs of a 6.5 µs set (never/64 writers: 153 K/s
    /// with insert, 420 K/s without), and a key written but not read gains
    /// nothing from it.
    pub fn apply_write(&self, key: &[u8], value: Option<StoredValue>) {
        let hash = self.hash(key);
        let mut stripe = self.stripe(hash);
        // IMPORTANT: bump before touching the cache, under the stripe lock,
        // so a fill that read the disk before this write sees the change.
        *stripe = stripe.wrapping_add(1);
        match value {
            // A colliding key's entry is replaced too: it only goes cold.
            Some(value) if value.kind == ValueKind::String && self.cache.contains_key(&hash) => {
                self.cache.insert(hash, Entry::new(key, value))
            }
            // Also clears an entry moka already considers expired.
            _ => self.cache.invalidate(&hash),
        }
        drop(stripe);
    }

    /// Drops every entry (a full-sync install replaced the data). Bumps every
    /// stripe first, so a fill that read the old data cannot land after.
    pub fn clear(&self) {
        let mut guards: Vec<_> = self
            .stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
            .collect();
        for stripe in &mut guards {
            **stripe = stripe.wrapping_add(1);
        }
        self.cache.invalidate_all();
        drop(guards);
    }

    /// Up to `max` of the keys held (for warm restarts), in no particular order.
    pub fn keys(&self, max: usize) -> Vec<Bytes> {
        self.cache
            .iter()
            .take(max)
            .map(|(_, entry)| Bytes::copy_from_slice(entry.key()))
            .collect()
    }

    /// Drops `key` from this tier only (tests force read-miss fills with it).
    pub fn evict(&self, key: &[u8]) {
        self.cache.invalidate(&self.hash(key));
    }

    /// Entries and weighted bytes currently held (after pending maintenance).
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// The configured byte budget.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn stored(value: &'static [u8], seq: u64) -> StoredValue {
        StoredValue::string(crate::types::Seq(seq), 0, Bytes::from_static(value))
    }

    /// I3, step by step: a fill that read the disk before a write to the
    /// key is refused, so the older value never lands over the newer one.
    /// (`tests/store_fill_race.rs` is the same race under real threads.)
    #[test]
    fn a_fill_that_raced_a_write_is_refused() {
        let tier = MemoryTier::new(1 << 20, Arc::new(SystemClock));
        let key = Bytes::from_static(b"k");
        // A read misses and reads v1 from the disk...
        let token = tier.fill_token(&key);
        // ...meanwhile v2 is committed (the key is not cached: dropped)...
        tier.apply_write(&key, Some(stored(b"v2", 2)));
        // ...so the read's fill of v1 must not land.
        assert!(!tier.fill(&key, stored(b"v1", 1), token));
        assert!(matches!(tier.peek(&key), Lookup::Miss));
        // A fill with nothing in between lands.
        let token = tier.fill_token(&key);
        assert!(tier.fill(&key, stored(b"v2", 2), token));
        assert!(matches!(tier.peek(&key), Lookup::Hit(v) if v.value == "v2"));
        // A delete between token and fill refuses it too.
        let token = tier.fill_token(&key);
        tier.apply_write(&key, None);
        assert!(!tier.fill(&key, stored(b"v2", 2), token));
        assert!(matches!(tier.peek(&key), Lookup::Miss));
    }

    /// Keys whose hashes collide never read each other's values: a lookup
    /// checks the whole key, and a colliding write only pushes the other
    /// key out.
    #[test]
    fn colliding_keys_never_answer_for_each_other() {
        let mut tier = MemoryTier::new(1 << 20, Arc::new(SystemClock));
        tier.hash_mask = 0;
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        assert!(tier.fill(&a, stored(b"va", 1), tier.fill_token(&a)));
        assert!(matches!(tier.peek(&b), Lookup::Miss));
        assert!(tier.fill(&b, stored(b"vb", 2), tier.fill_token(&b)));
        assert!(matches!(tier.peek(&a), Lookup::Miss));
        assert!(matches!(tier.peek(&b), Lookup::Hit(v) if v.value == "vb" && v.seq.0 == 2));
        // A write of the evicted key takes the slot (write-update of a
        // cached hash), and the other key is a miss again.
        tier.apply_write(&a, Some(stored(b"va2", 3)));
        assert!(matches!(tier.peek(&a), Lookup::Hit(v) if v.value == "va2"));
        assert!(matches!(tier.peek(&b), Lookup::Miss));
        // A delete of b drops whatever shares its hash: a goes cold, never stale.
        tier.apply_write(&b, None);
        assert!(matches!(tier.peek(&a), Lookup::Miss));
        assert_eq!(tier.keys(10), Vec::<Bytes>::new());
    }

    /// A value too large to pack keeps its buffer and reads back whole,
    /// with its version and expiry.
    #[test]
    fn large_and_small_entries_read_back_as_written() {
        let tier = MemoryTier::new(1 << 30, Arc::new(SystemClock));
        for len in [
            0,
            1,
            100,
            PACK_MAX_BYTES - 1,
            PACK_MAX_BYTES,
            PACK_MAX_BYTES + 1,
            1 << 20,
        ] {
            let key = Bytes::from(format!("key-{len}"));
            let value = StoredValue::string(
                crate::types::Seq(len as u64 + 1),
                u64::MAX - len as u64,
                Bytes::from(vec![(len % 251) as u8; len]),
            );
            assert!(tier.fill(&key, value.clone(), tier.fill_token(&key)));
            match tier.peek(&key) {
                Lookup::Hit(found) => assert_eq!(found, value, "{len}"),
                other => panic!("{len}: {other:?}"),
            }
        }
        let mut keys = tier.keys(100);
        keys.sort();
        assert_eq!(keys.len(), 7);
        assert!(keys.contains(&Bytes::from("key-1048576")));
    }
}
