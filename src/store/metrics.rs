//! The storage engine's metrics: handles recorded on the read and commit
//! paths, and the families it registers (current state read at scrape time).

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::{Shared, Store};
use crate::metrics::{Registry, ScrapeEncoder, latency_histogram};

/// The `tier` label of the read latency family.
type TierLabel = [(&'static str, &'static str); 1];

/// Latency and volume the engine records for metrics.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Read latency by tier; `read_memory` and `read_disk` are its members.
    tier_reads: Family<TierLabel, Histogram, fn() -> Histogram>,
    /// Reads answered by the memory tier.
    pub read_memory: Histogram,
    /// Reads that went to the disk tier (hit or miss).
    pub read_disk: Histogram,
    /// WAL append of one commit batch, including its fsync when there is one.
    pub wal_append: Histogram,
    /// fsyncs of the WAL (under `always`, one per batch).
    pub wal_syncs: Counter,
    /// Bytes appended to the WAL.
    pub wal_bytes: Counter,
    /// Commit batches (group commits).
    pub commit_batches: Counter,
    /// Records committed.
    pub commit_records: Counter,
    /// Elements of gone collections deleted by `Store::reclaim_elements`.
    pub reclaimed_elements: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        let tier_reads = Family::<TierLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        StoreMetrics {
            // Owned handles share their member's state: recording needs no
            // lookup by label.
            read_memory: tier_reads.get_or_create_owned(&[("tier", "memory")]),
            read_disk: tier_reads.get_or_create_owned(&[("tier", "disk")]),
            tier_reads,
            wal_append: latency_histogram(),
            wal_syncs: Counter::default(),
            wal_bytes: Counter::default(),
            commit_batches: Counter::default(),
            commit_records: Counter::default(),
            reclaimed_elements: Counter::default(),
        }
    }
}

impl Store {
    /// Registers the engine's families: the recorded histograms and
    /// counters, and the tiers' state read at each scrape.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "strata_tier_read_duration_seconds",
            "Read latency by the tier that answered",
            m.tier_reads.clone(),
        );
        registry.register(
            "strata_wal_append_duration_seconds",
            "WAL append of one commit batch, including its fsync when there is one",
            m.wal_append.clone(),
        );
        registry.register(
            "strata_wal_syncs",
            "WAL fsyncs done with a commit batch",
            m.wal_syncs.clone(),
        );
        registry.register(
            "strata_wal_appended_bytes",
            "Bytes appended to the WAL",
            m.wal_bytes.clone(),
        );
        registry.register(
            "strata_commit_batches",
            "Group commits (one WAL write each)",
            m.commit_batches.clone(),
        );
        registry.register(
            "strata_commit_records",
            "Records committed",
            m.commit_records.clone(),
        );
        registry.register(
            "strata_reclaimed_elements",
            "Elements of deleted, replaced or expired collections deleted by the background reclaim",
            m.reclaimed_elements.clone(),
        );
        registry.register_collector(Box::new(StateCollector(Arc::downgrade(&self.inner))));
    }
}

/// The engine's current state, read at scrape time. Weak, so that the
/// registry never keeps a closed store alive.
#[derive(Debug)]
struct StateCollector(Weak<Shared>);

impl Collector for StateCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let store = Store { inner };
        let s = store.stats();
        let mut e = ScrapeEncoder::new(encoder);
        e.counters(
            "strata_tier_reads",
            "Reads that consulted a tier, by tier and result (hit ratio = hit / (hit + miss))",
            [
                ([("tier", "memory"), ("result", "hit")], s.memory_hits),
                ([("tier", "memory"), ("result", "miss")], s.memory_misses),
                ([("tier", "disk"), ("result", "hit")], s.disk_hits),
                ([("tier", "disk"), ("result", "miss")], s.disk_misses),
            ],
        )?;
        let gauges = [
            (
                "strata_memory_tier_bytes",
                "Weighted bytes held by the memory tier",
                s.memory_bytes as f64,
            ),
            (
                "strata_memory_tier_budget_bytes",
                "The memory tier's byte budget",
                s.memory_budget_bytes as f64,
            ),
            (
                "strata_memory_tier_entries",
                "Entries held by the memory tier",
                s.memory_entries as f64,
            ),
            (
                "strata_disk_tier_bytes",
                "Size of the disk tier's SST files",
                store.disk_bytes() as f64,
            ),
            (
                "strata_wal_bytes",
                "Bytes of WAL segments on disk",
                s.wal_bytes as f64,
            ),
            (
                "strata_applied_seq",
                "Last seq applied to both tiers",
                s.applied_seq.0 as f64,
            ),
            (
                "strata_checkpoint_age_seconds",
                "Seconds since the last checkpoint (since start if none)",
                s.checkpoint_age_secs,
            ),
            (
                "strata_sync_queue_depth",
                "Writes accepted but not yet acknowledged",
                store.pending_writes() as f64,
            ),
            (
                "strata_writes_refused",
                "1 while the store refuses writes after a WAL or disk failure",
                f64::from(u8::from(s.poisoned.is_some())),
            ),
        ];
        for (name, help, value) in gauges {
            e.gauge(name, help, value)?;
        }
        Ok(())
    }
}
