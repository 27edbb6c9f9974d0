//! How evenly the ring spreads the 16384 slots over the shards, how many
//! slots move when a shard joins, and how long a slot table takes to
//! compute, for a few shard counts and virtual-node counts.
//!
//! `cargo run --release --example ring_balance` prints a Markdown table
//! (the one in the README).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use strata::cluster::{Ring, SLOTS, ShardId, SlotTable};

const VNODES: [u32; 4] = [16, 64, 256, 1024];
const SHARD_COUNTS: [u32; 3] = [3, 10, 100];
/// Timings are the best of this many builds, to keep scheduler noise out.
const TIMING_RUNS: usize = 5;

fn main() {
    println!(
        "| V | shards | min slots | max slots | max / ideal | stddev (% of ideal) \
         | moved when shard N+1 joins | ideal 1/(N+1) | ranges | ring + table time |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for vnodes in VNODES {
        for shards in SHARD_COUNTS {
            println!("{}", row(vnodes, shards));
        }
    }
}

fn row(vnodes: u32, shard_count: u32) -> String {
    let shards: Vec<ShardId> = (1..=shard_count).map(ShardId).collect();
    let (table, elapsed) = timed_table(&shards, vnodes);
    let balance = Balance::of(&table, &shards);
    let mut grown = shards.clone();
    grown.push(ShardId(shard_count + 1));
    let (grown_table, _) = timed_table(&grown, vnodes);
    let moved = table.moved(&grown_table) as f64 / f64::from(SLOTS);
    format!(
        "| {vnodes} | {shard_count} | {} | {} | {:.3} | {:.1}% | {:.2}% | {:.2}% | {} | {:.2} ms |",
        balance.min,
        balance.max,
        balance.max_over_ideal,
        balance.stddev_pct_of_ideal,
        moved * 100.0,
        100.0 / f64::from(shard_count + 1),
        table.ranges().len(),
        elapsed.as_secs_f64() * 1000.0,
    )
}

/// Builds the ring and its table `TIMING_RUNS` times; the fastest time.
fn timed_table(shards: &[ShardId], vnodes: u32) -> (SlotTable, Duration) {
    let mut best = Duration::MAX;
    let mut table = None;
    for _ in 0..TIMING_RUNS {
        let start = Instant::now();
        let built = Ring::new(shards, vnodes).unwrap().slot_table();
        best = best.min(start.elapsed());
        table = Some(built);
    }
    (table.unwrap(), best)
}

/// The spread of per-shard slot counts around the ideal, SLOTS / N.
struct Balance {
    min: u32,
    max: u32,
    max_over_ideal: f64,
    stddev_pct_of_ideal: f64,
}

impl Balance {
    fn of(table: &SlotTable, shards: &[ShardId]) -> Balance {
        let shares = table.shares();
        // A shard owning no slot is absent from `shares`, and counts as 0.
        let counts: Vec<u32> = shards
            .iter()
            .map(|shard| shares.get(shard).copied().unwrap_or(0))
            .collect();
        let ideal = f64::from(SLOTS) / counts.len() as f64;
        let variance = counts
            .iter()
            .map(|&count| (f64::from(count) - ideal).powi(2))
            .sum::<f64>()
            / counts.len() as f64;
        let max = counts.iter().copied().max().unwrap();
        Balance {
            min: counts.iter().copied().min().unwrap(),
            max,
            max_over_ideal: f64::from(max) / ideal,
            stddev_pct_of_ideal: variance.sqrt() / ideal * 100.0,
        }
    }
}
