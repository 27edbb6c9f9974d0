//! Slot → shard: consistent hashing with virtual nodes
//! (proto-docs/cluster.md §2, §3).
//!
//! Each shard owns V points on a 64-bit ring and each slot has a position
//! on it; a slot belongs to the shard of the first point at or after its
//! position. Adding a shard only takes slots over (from whichever shards
//! held them), removing one only hands its own slots out: the slot table
//! changes as little as it can, so little data moves.
//!
//! Points are hashed with SHA-256, in every language's standard library or
//! its common crypto package, and fixed forever by the domain string
//! `strata-ring-v1`; slots are evenly spaced, slot `s` at `s << 50`. Any
//! client can compute the same table from the shard list and V alone.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::slot::Slot;

/// Identifies a shard (a replica group) within a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Virtual nodes per shard a cluster is created with: in the ring_balance
/// example the busiest of 3 or 10 shards holds about 11% more than an even
/// share, and a table takes under a millisecond.
pub const DEFAULT_VNODES: u32 = 256;

/// The most virtual nodes per shard. Beyond it little is gained while
/// building the ring costs ever more hashes: once the N × V points
/// outnumber the slots, which shard's point first follows each slot is
/// close to a fresh draw per slot, so the shares stop evening out and the
/// table approaches one range per slot.
pub const MAX_VNODES: u32 = 4096;

const RING_DOMAIN: &[u8] = b"strata-ring-v1";

/// log2 of the ring's size (2^64) over [`SLOTS`](super::SLOTS) (2^14): the
/// shift that spaces the slots evenly.
const SLOT_SHIFT: u32 = 64 - super::SLOTS.trailing_zeros();

/// Why a ring cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    #[error("a ring needs at least one shard")]
    NoShards,
    #[error("shard {0} is listed more than once")]
    DuplicateShard(ShardId),
    #[error("virtual nodes per shard must be 1..={MAX_VNODES}, not {0}")]
    VnodesOutOfRange(u32),
}

/// The position of virtual node `index` of `shard`: the first 8 bytes,
/// little-endian, of SHA-256(`strata-ring-v1` ‖ shard u32 LE ‖ index u32 LE).
pub fn point_position(shard: ShardId, index: u32) -> u64 {
    let mut input = [0u8; RING_DOMAIN.len() + 8];
    input[..RING_DOMAIN.len()].copy_from_slice(RING_DOMAIN);
    input[RING_DOMAIN.len()..][..4].copy_from_slice(&shard.0.to_le_bytes());
    input[RING_DOMAIN.len() + 4..].copy_from_slice(&index.to_le_bytes());
    sha256_prefix_u64(&input)
}

/// The position of `slot` on the ring: `slot << 50`, that is
/// slot × 2^64 / [`SLOTS`](super::SLOTS), the start of the slot's
/// 1/16384 arc of the ring.
///
/// Evenly spaced, not hashed: consecutive slots stay in ring order, so all
/// the slots between two neighbouring points go to one shard and the table
/// is at most N × V + 1 runs of consecutive slots, a short listing for
/// CLUSTER SLOTS-style clients. While the points are fewer than the slots,
/// each shard's share is decided by its points' arcs alone, with no
/// sampling noise of slot positions on top ([`MAX_VNODES`] says what
/// happens beyond).
pub fn slot_position(slot: Slot) -> u64 {
    u64::from(slot.get()) << SLOT_SHIFT
}

fn sha256_prefix_u64(input: &[u8]) -> u64 {
    let digest = ::ring::digest::digest(&::ring::digest::SHA256, input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(first)
}

/// One virtual node. Ordered by position, then shard, then index: the
/// order of the ring, with ties between equal positions going to the
/// smaller (shard, index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    position: u64,
    shard: ShardId,
    index: u32,
}

/// A consistent-hash ring over a set of shards.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Sorted once at construction; every lookup is a binary search.
    points: Vec<Point>,
    shards: Vec<ShardId>,
    vnodes: u32,
}

impl Ring {
    /// The ring of `shards` (in any order), each with `vnodes` points.
    ///
    /// # Errors
    ///
    /// [`RingError`] when `shards` is empty or names a shard twice, or
    /// `vnodes` is 0 or above [`MAX_VNODES`].
    pub fn new(shards: &[ShardId], vnodes: u32) -> Result<Ring, RingError> {
        if shards.is_empty() {
            return Err(RingError::NoShards);
        }
        if !(1..=MAX_VNODES).contains(&vnodes) {
            return Err(RingError::VnodesOutOfRange(vnodes));
        }
        let mut sorted = shards.to_vec();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(RingError::DuplicateShard(pair[0]));
        }
        let mut points: Vec<Point> = sorted
            .iter()
            .flat_map(|&shard| {
                (0..vnodes).map(move |index| Point {
                    position: point_position(shard, index),
                    shard,
                    index,
                })
            })
            .collect();
        points.sort_unstable();
        Ok(Ring {
            points,
            shards: sorted,
            vnodes,
        })
    }

    /// The ring's shards, in id order.
    pub fn shards(&self) -> &[ShardId] {
        &self.shards
    }

    /// Virtual nodes per shard.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The shard owning `slot`: that of the first point at or after the
    /// slot's position, or past the largest point, of the smallest.
    pub fn owner(&self, slot: Slot) -> ShardId {
        let position = slot_position(slot);
        let successor = self.points.partition_point(|p| p.position < position);
        // `new` refuses an empty ring, so index 0 exists.
        self.points.get(successor).unwrap_or(&self.points[0]).shard
    }

    /// Every slot's owner.
    pub fn slot_table(&self) -> SlotTable {
        SlotTable {
            owners: Slot::all().map(|slot| self.owner(slot)).collect(),
        }
    }
}

/// The owner of every slot: what a router consults per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    /// Exactly [`SLOTS`](super::SLOTS) entries, indexed by slot number.
    owners: Box<[ShardId]>,
}

/// A maximal run of consecutive slots with one owner, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRange {
    pub first: Slot,
    pub last: Slot,
    pub shard: ShardId,
}

impl SlotTable {
    /// The shard owning `slot`.
    pub fn owner(&self, slot: Slot) -> ShardId {
        self.owners[slot.index()]
    }

    /// The table as maximal runs in slot order, the way Redis's
    /// CLUSTER SLOTS lists it; together they cover every slot once.
    pub fn ranges(&self) -> Vec<SlotRange> {
        let mut ranges: Vec<SlotRange> = Vec::new();
        for (slot, &shard) in Slot::all().zip(self.owners.iter()) {
            match ranges.last_mut() {
                Some(run) if run.shard == shard => run.last = slot,
                _ => ranges.push(SlotRange {
                    first: slot,
                    last: slot,
                    shard,
                }),
            }
        }
        ranges
    }

    /// How many slots each shard owns; a shard owning none is absent.
    pub fn shares(&self) -> BTreeMap<ShardId, u32> {
        let mut shares = BTreeMap::new();
        for &shard in self.owners.iter() {
            *shares.entry(shard).or_insert(0) += 1;
        }
        shares
    }

    /// How many slots have a different owner in `other`: what a change of
    /// the ring moves.
    pub fn moved(&self, other: &SlotTable) -> usize {
        self.owners
            .iter()
            .zip(other.owners.iter())
            .filter(|(a, b)| a != b)
            .count()
    }

    /// Every slot with its owner, in slot order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Slot, ShardId)> + '_ {
        Slot::all().zip(self.owners.iter().copied())
    }
}

/// How evenly a ring of some shards with `vnodes` points each shares the
/// slots, and how many slots it would move from a current table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    pub vnodes: u32,
    /// The busiest shard's share over an even one, less 1: 0.11 is 11%
    /// more slots than 16384 / N.
    pub skew: f64,
    /// Slots whose owner differs from the current table's.
    pub moved: usize,
}

/// The balance of `shards` at V = `from` and at every doubling of it up to
/// [`MAX_VNODES`] (which comes last in any case): what `cluster
/// rebalance` chooses from.
///
/// # Errors
///
/// [`RingError`] as [`Ring::new`] says for `shards` and `from`.
pub fn balance_options(shards: &[ShardId], from: u32) -> Result<Vec<Balance>, RingError> {
    let current = Ring::new(shards, from)?.slot_table();
    let even = f64::from(super::SLOTS) / shards.len() as f64;
    let mut options = Vec::new();
    let mut vnodes = from;
    loop {
        let table = Ring::new(shards, vnodes)?.slot_table();
        let busiest = table.shares().values().copied().max().unwrap_or(0);
        options.push(Balance {
            vnodes,
            skew: f64::from(busiest) / even - 1.0,
            moved: current.moved(&table),
        });
        if vnodes >= MAX_VNODES {
            return Ok(options);
        }
        vnodes = vnodes.saturating_mul(2).min(MAX_VNODES);
    }
}

/// The V to rebalance to among `options` (from [`balance_options`], the
/// current V first): the smallest above the current whose skew is at most
/// `max_skew`, else the least skewed one; none when the current V is
/// within `max_skew` already or no other option beats it.
pub fn choose_vnodes(options: &[Balance], max_skew: f64) -> Option<u32> {
    let (current, others) = options.split_first()?;
    if current.skew <= max_skew {
        return None;
    }
    let good = others.iter().find(|o| o.skew <= max_skew);
    let least = others.iter().min_by(|a, b| a.skew.total_cmp(&b.skew));
    good.or(least)
        .filter(|o| o.skew < current.skew)
        .map(|o| o.vnodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::slot::SLOTS;
    use proptest::prelude::*;

    fn ids(ids: &[u32]) -> Vec<ShardId> {
        ids.iter().copied().map(ShardId).collect()
    }

    #[test]
    fn invalid_rings_are_refused() {
        assert_eq!(Ring::new(&[], 4).err(), Some(RingError::NoShards));
        assert_eq!(
            Ring::new(&ids(&[3, 1, 3]), 4).err(),
            Some(RingError::DuplicateShard(ShardId(3)))
        );
        assert_eq!(
            Ring::new(&ids(&[1]), 0).err(),
            Some(RingError::VnodesOutOfRange(0))
        );
        assert_eq!(
            Ring::new(&ids(&[1]), MAX_VNODES + 1).err(),
            Some(RingError::VnodesOutOfRange(MAX_VNODES + 1))
        );
        assert!(Ring::new(&ids(&[1]), MAX_VNODES).is_ok());
    }

    #[test]
    fn shard_order_does_not_matter() {
        let a = Ring::new(&ids(&[1, 2, 3]), 16).unwrap().slot_table();
        let b = Ring::new(&ids(&[3, 1, 2]), 16).unwrap().slot_table();
        assert_eq!(a, b);
    }

    #[test]
    fn one_shard_owns_everything() {
        let table = Ring::new(&ids(&[7]), 1).unwrap().slot_table();
        assert_eq!(table.ranges().len(), 1);
        assert_eq!(table.shares().get(&ShardId(7)), Some(&u32::from(SLOTS)));
    }

    #[test]
    fn slots_past_the_largest_point_wrap_to_the_smallest() {
        let ring = Ring::new(&ids(&[1, 2, 3]), 4).unwrap();
        let largest = ring.points.last().unwrap().position;
        let smallest = ring.points[0];
        let wrapped: Vec<Slot> = Slot::all()
            .filter(|&slot| slot_position(slot) > largest)
            .collect();
        assert!(!wrapped.is_empty(), "no slot past the largest point");
        for slot in wrapped {
            assert_eq!(ring.owner(slot), smallest.shard);
        }
    }

    #[test]
    fn slots_are_evenly_spaced_from_zero() {
        let at = |n| slot_position(Slot::new(n).unwrap());
        assert_eq!(at(0), 0);
        assert_eq!(at(1), 1 << 50);
        assert_eq!(at(8192), 1 << 63);
        assert_eq!(at(SLOTS - 1), u64::MAX - (1 << 50) + 1);
        for pair in Slot::all().collect::<Vec<_>>().windows(2) {
            assert_eq!(slot_position(pair[1]) - slot_position(pair[0]), 1 << 50);
        }
    }

    #[test]
    fn equal_points_go_to_the_smaller_shard_and_index() {
        let at_five = |shard, index| Point {
            position: 5,
            shard: ShardId(shard),
            index,
        };
        let mut points = [at_five(2, 0), at_five(1, 9), at_five(1, 3)];
        points.sort_unstable();
        assert_eq!((points[0].shard, points[0].index), (ShardId(1), 3));
    }

    #[test]
    fn ranges_cover_every_slot_once_in_order() {
        let table = Ring::new(&ids(&[1, 2, 3]), 64).unwrap().slot_table();
        let ranges = table.ranges();
        assert_eq!(ranges[0].first.get(), 0);
        assert_eq!(ranges.last().unwrap().last.get(), SLOTS - 1);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].last.get() + 1, pair[1].first.get());
            assert_ne!(pair[0].shard, pair[1].shard, "runs are maximal");
        }
        for range in &ranges {
            for n in range.first.get()..=range.last.get() {
                assert_eq!(table.owner(Slot::new(n).unwrap()), range.shard);
            }
        }
        let total: u32 = table.shares().values().sum();
        assert_eq!(total, u32::from(SLOTS));
    }

    /// 1 to 12 distinct shard ids, some large, and V up to 64: enough to
    /// vary the ring, small enough to build two tables per case quickly.
    fn shard_sets() -> impl Strategy<Value = (Vec<u32>, u32)> {
        (
            proptest::collection::btree_set(any::<u32>(), 1..12),
            1u32..=64,
        )
            .prop_map(|(set, vnodes)| (set.into_iter().collect(), vnodes))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn every_slot_maps_to_a_listed_shard((shards, vnodes) in shard_sets()) {
            let ring = Ring::new(&ids(&shards), vnodes).unwrap();
            for (_, owner) in ring.slot_table().iter() {
                prop_assert!(shards.contains(&owner.0));
            }
        }

        #[test]
        fn ranges_are_at_most_one_per_point_plus_one((shards, vnodes) in shard_sets()) {
            // Slots are in ring order, so the owner changes between two
            // consecutive slots only where a point lies between them.
            let ring = Ring::new(&ids(&shards), vnodes).unwrap();
            let points = shards.len() * vnodes as usize;
            prop_assert!(ring.slot_table().ranges().len() <= points + 1);
        }

        #[test]
        fn a_joining_shard_only_takes_slots(
            (shards, vnodes) in shard_sets(),
            joining in any::<u32>(),
        ) {
            prop_assume!(!shards.contains(&joining));
            let before = Ring::new(&ids(&shards), vnodes).unwrap().slot_table();
            let mut grown = shards.clone();
            grown.push(joining);
            let after = Ring::new(&ids(&grown), vnodes).unwrap().slot_table();
            for ((slot, old), (_, new)) in before.iter().zip(after.iter()) {
                prop_assert!(
                    new == old || new == ShardId(joining),
                    "slot {} moved {} -> {}, not to the new shard {}", slot, old, new, joining
                );
            }
        }

        #[test]
        fn a_leaving_shard_only_gives_its_slots(
            (shards, vnodes) in shard_sets(),
            pick in any::<prop::sample::Index>(),
        ) {
            prop_assume!(shards.len() >= 2);
            let leaving = shards[pick.index(shards.len())];
            let before = Ring::new(&ids(&shards), vnodes).unwrap().slot_table();
            let shrunk: Vec<u32> = shards.iter().copied().filter(|&s| s != leaving).collect();
            let after = Ring::new(&ids(&shrunk), vnodes).unwrap().slot_table();
            for ((slot, old), (_, new)) in before.iter().zip(after.iter()) {
                prop_assert!(
                    new == old || old == ShardId(leaving),
                    "slot {} moved {} -> {}, though {} did not leave", slot, old, new, old
                );
                prop_assert_ne!(new, ShardId(leaving));
            }
            prop_assert_eq!(
                before.moved(&after),
                before.shares().get(&ShardId(leaving)).copied().unwrap_or(0) as usize
            );
        }
    }

    #[test]
    fn rebalance_options_double_v_and_measure_against_the_current_table() {
        let shards = ids(&[1, 2, 3]);
        let options = balance_options(&shards, 16).unwrap();
        let vs: Vec<u32> = options.iter().map(|o| o.vnodes).collect();
        assert_eq!(vs, [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]);
        assert_eq!(options[0].moved, 0);
        let at_256 = Ring::new(&shards, 256).unwrap().slot_table();
        let at_16 = Ring::new(&shards, 16).unwrap().slot_table();
        assert_eq!(options[4].moved, at_16.moved(&at_256));
        let busiest = at_256.shares().values().copied().max().unwrap();
        let skew = f64::from(busiest) * 3.0 / f64::from(SLOTS) - 1.0;
        assert!((options[4].skew - skew).abs() < 1e-12);
        // A V that is not a power of two ends on the largest V.
        let vs: Vec<u32> = balance_options(&shards, 1500)
            .unwrap()
            .iter()
            .map(|o| o.vnodes)
            .collect();
        assert_eq!(vs, [1500, 3000, 4096]);
    }

    #[test]
    fn choose_vnodes_takes_the_smallest_good_enough_v() {
        let opt = |vnodes, skew| Balance {
            vnodes,
            skew,
            moved: 0,
        };
        let options = [opt(16, 0.4), opt(32, 0.2), opt(64, 0.04), opt(128, 0.01)];
        assert_eq!(choose_vnodes(&options, 0.05), Some(64));
        assert_eq!(choose_vnodes(&options, 0.5), None, "already within");
        assert_eq!(
            choose_vnodes(&options, 0.001),
            Some(128),
            "the least skewed"
        );
        let worse = [opt(16, 0.1), opt(32, 0.2)];
        assert_eq!(
            choose_vnodes(&worse, 0.05),
            None,
            "nothing beats the current V"
        );
    }
}
