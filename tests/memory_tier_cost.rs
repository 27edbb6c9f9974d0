//! The memory tier's byte budget means memory: what the weigher charges
//! for an entry is what the entry costs the process, within 25%.
//!
//! One test in its own binary, so no other test allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use strata::clock::SystemClock;
use strata::store::StoredValue;
use strata::store::memory::{MemoryTier, entry_charge};
use strata::types::Seq;

const ENTRIES: usize = 200_000;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn fill(tier: &MemoryTier, from: usize, to: usize) {
    for i in from..to {
        let key = Bytes::from(format!("key-{i:012}"));
        assert_eq!(key.len(), KEY_BYTES);
        let value = StoredValue::string(Seq(i as u64 + 1), 0, Bytes::from(vec![7u8; VALUE_BYTES]));
        let token = tier.fill_token(&key);
        assert!(tier.fill(&key, value, token));
    }
    tier.usage();
}

#[test]
fn the_budget_charges_what_an_entry_costs() {
    let tier = MemoryTier::new(u64::MAX / 2, Arc::new(SystemClock));
    // Warm the allocator and the cache's structures up first.
    fill(&tier, 0, ENTRIES / 10);
    let before = rss_bytes();
    fill(&tier, ENTRIES / 10, ENTRIES + ENTRIES / 10);
    let measured = (rss_bytes() - before) as f64 / ENTRIES as f64;
    let charged = f64::from(entry_charge(KEY_BYTES, VALUE_BYTES));
    eprintln!("an entry costs {measured:.0} B of RSS; the budget charges {charged:.0} B");
    let off = (measured - charged).abs() / measured;
    assert!(
        off <= 0.25,
        "the budget charges {charged:.0} B per entry, the process pays {measured:.0} B ({:.0}% off)",
        off * 100.0
    );
    assert_eq!(tier.usage().0, (ENTRIES + ENTRIES / 10) as u64);
}
