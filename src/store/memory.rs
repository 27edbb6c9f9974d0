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

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use moka::sync::Cache;

use crate::clock::Clock;
use crate::store::disk::StoredValue;

/// Stripes of the fill guard: enough that unrelated keys rarely share one.
const STRIPES: usize = 4096;

/// Bytes charged per entry beyond key and value: moka's node, its
/// frequency sketch and deques, the two `Bytes` allocations and their
/// allocator headers. Measured (`tests/memory_tier_cost.rs`): a 16-byte key
/// with a 100-byte value costs 548 bytes of RSS, so 432 beyond the two.
pub const ENTRY_OVERHEAD_BYTES: u32 = 432;

/// What the budget is charged for one entry of a `key_len`-byte key and a
/// `value_len`-byte value: the two plus [`ENTRY_OVERHEAD_BYTES`].
pub fn entry_charge(key_len: usize, value_len: usize) -> u32 {
    u32::try_from(key_len.saturating_add(value_len))
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD_BYTES)
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

/// The hot-key cache with its fill guard and counters.
pub struct MemoryTier {
    cache: Cache<Bytes, StoredValue>,
    stripes: Box<[Mutex<u64>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    budget_bytes: u64,
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
            .weigher(|key: &Bytes, value: &StoredValue| entry_charge(key.len(), value.value.len()))
            .build();
        MemoryTier {
            cache,
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: RandomState::new(),
            clock,
            budget_bytes,
            counters: TierCounters::default(),
        }
    }

    fn stripe(&self, key: &[u8]) -> MutexGuard<'_, u64> {
        let index = (self.hasher.hash_one(key) as usize) % STRIPES;
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
        match self.cache.get(key) {
            None => Lookup::Miss,
            // I4: expiry is checked here, exactly, on every read. moka keeps
            // no per-entry timers (they cost 48 B per entry with a TTL,
            // measured); an expired entry goes when it is read, written,
            // or evicted for room, and its bytes count against the budget
            // until then.
            Some(v) if v.is_expired(self.clock.now_ms()) => {
                self.cache.invalidate(key);
                Lookup::Expired
            }
            Some(v) => Lookup::Hit(v),
        }
    }

    /// Takes the stripe counter before a disk read; see [`MemoryTier::fill`].
    pub fn fill_token(&self, key: &[u8]) -> FillToken {
        FillToken(*self.stripe(key))
    }

    /// Caches a value read from the disk tier, unless a write to the key's
    /// stripe happened since `token` was taken (it might be newer: I3).
    pub fn fill(&self, key: Bytes, value: StoredValue, token: FillToken) -> bool {
        let stripe = self.stripe(&key);
        if *stripe != token.0 {
            return false;
        }
        self.cache.insert(key, value);
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
    pub fn apply_write(&self, key: &Bytes, value: Option<StoredValue>) {
        let mut stripe = self.stripe(key);
        // IMPORTANT: bump before touching the cache, under the stripe lock,
        // so a fill that read the disk before this write sees the change.
        *stripe = stripe.wrapping_add(1);
        match value {
            Some(value) if self.cache.contains_key(key) => self.cache.insert(key.clone(), value),
            // Also clears an entry moka already considers expired.
            _ => self.cache.invalidate(key),
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
            .map(|(k, _)| (*k).clone())
            .collect()
    }

    /// Drops `key` from this tier only (tests force read-miss fills with it).
    pub fn evict(&self, key: &[u8]) {
        self.cache.invalidate(key);
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
        StoredValue {
            value: Bytes::from_static(value),
            seq: crate::types::Seq(seq),
            expires_at_ms: 0,
        }
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
        assert!(!tier.fill(key.clone(), stored(b"v1", 1), token));
        assert!(matches!(tier.peek(&key), Lookup::Miss));
        // A fill with nothing in between lands.
        let token = tier.fill_token(&key);
        assert!(tier.fill(key.clone(), stored(b"v2", 2), token));
        assert!(matches!(tier.peek(&key), Lookup::Hit(v) if v.value == "v2"));
        // A delete between token and fill refuses it too.
        let token = tier.fill_token(&key);
        tier.apply_write(&key, None);
        assert!(!tier.fill(key.clone(), stored(b"v2", 2), token));
        assert!(matches!(tier.peek(&key), Lookup::Miss));
    }
}
