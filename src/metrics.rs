//! Prometheus metrics: lock-free counters and fixed-bucket histograms,
//! rendered in the Prometheus text format, and the `/metrics` HTTP endpoint.
//!
//! Handles are created once (struct fields indexed by op), so recording is
//! an atomic add or two; nothing is looked up by label on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, seconds: 25 µs to 10 s, roughly
/// ×2.5 apart, enough to read p50/p95/p99 from.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`] (plus +Inf).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// Builds Prometheus text exposition (format 0.0.4).
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample; `labels` as `key="value"` pairs.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let mut cumulative = 0;
        for (i, bucket) in h.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {sum}");
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {cumulative}");
        self
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
}

/// Renders the storage engine's metrics.
pub fn render_store(store: &crate::store::Store, e: &mut Exposition) {
    let s = store.stats();
    let m = store.metrics();
    e.family(
        "strata_tier_reads_total",
        "counter",
        "Reads that consulted a tier, by tier and result (hit ratio = hit / (hit + miss)).",
    )
    .sample(
        "strata_tier_reads_total",
        &[("tier", "memory"), ("result", "hit")],
        s.memory_hits as f64,
    )
    .sample(
        "strata_tier_reads_total",
        &[("tier", "memory"), ("result", "miss")],
        s.memory_misses as f64,
    )
    .sample(
        "strata_tier_reads_total",
        &[("tier", "disk"), ("result", "hit")],
        s.disk_hits as f64,
    )
    .sample(
        "strata_tier_reads_total",
        &[("tier", "disk"), ("result", "miss")],
        s.disk_misses as f64,
    );
    e.family(
        "strata_tier_read_duration_seconds",
        "histogram",
        "Read latency by the tier that answered.",
    )
    .histogram(
        "strata_tier_read_duration_seconds",
        &[("tier", "memory")],
        &m.read_memory,
    )
    .histogram(
        "strata_tier_read_duration_seconds",
        &[("tier", "disk")],
        &m.read_disk,
    );
    e.family(
        "strata_memory_tier_bytes",
        "gauge",
        "Weighted bytes held by the memory tier.",
    )
    .sample("strata_memory_tier_bytes", &[], s.memory_bytes as f64);
    e.family(
        "strata_memory_tier_budget_bytes",
        "gauge",
        "The memory tier's byte budget.",
    )
    .sample(
        "strata_memory_tier_budget_bytes",
        &[],
        s.memory_budget_bytes as f64,
    );
    e.family(
        "strata_memory_tier_entries",
        "gauge",
        "Entries held by the memory tier.",
    )
    .sample("strata_memory_tier_entries", &[], s.memory_entries as f64);
    e.family(
        "strata_disk_tier_bytes",
        "gauge",
        "Size of the disk tier's SST files.",
    )
    .sample("strata_disk_tier_bytes", &[], store.disk_bytes() as f64);
    e.family(
        "strata_wal_append_duration_seconds",
        "histogram",
        "WAL append of one commit batch, including its fsync when there is one.",
    )
    .histogram("strata_wal_append_duration_seconds", &[], &m.wal_append);
    e.family(
        "strata_wal_syncs_total",
        "counter",
        "WAL fsyncs done with a commit batch.",
    )
    .sample("strata_wal_syncs_total", &[], m.wal_syncs.get() as f64);
    e.family(
        "strata_wal_appended_bytes_total",
        "counter",
        "Bytes appended to the WAL.",
    )
    .sample(
        "strata_wal_appended_bytes_total",
        &[],
        m.wal_bytes.get() as f64,
    );
    e.family(
        "strata_wal_bytes",
        "gauge",
        "Bytes of WAL segments on disk.",
    )
    .sample("strata_wal_bytes", &[], s.wal_bytes as f64);
    e.family(
        "strata_commit_batches_total",
        "counter",
        "Group commits (one WAL write each).",
    )
    .sample(
        "strata_commit_batches_total",
        &[],
        m.commit_batches.get() as f64,
    );
    e.family(
        "strata_commit_records_total",
        "counter",
        "Records committed.",
    )
    .sample(
        "strata_commit_records_total",
        &[],
        m.commit_records.get() as f64,
    );
    e.family(
        "strata_applied_seq",
        "gauge",
        "Last seq applied to both tiers.",
    )
    .sample("strata_applied_seq", &[], s.applied_seq.0 as f64);
    e.family(
        "strata_checkpoint_age_seconds",
        "gauge",
        "Seconds since the last checkpoint (since start if none).",
    )
    .sample("strata_checkpoint_age_seconds", &[], s.checkpoint_age_secs);
    e.family(
        "strata_sync_queue_depth",
        "gauge",
        "Writes accepted but not yet acknowledged.",
    )
    .sample(
        "strata_sync_queue_depth",
        &[],
        store.pending_writes() as f64,
    );
    e.family(
        "strata_writes_refused",
        "gauge",
        "1 while the store refuses writes after a WAL or disk failure.",
    )
    .sample(
        "strata_writes_refused",
        &[],
        f64::from(u8::from(s.poisoned.is_some())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut e = Exposition::default();
        e.family("lat_seconds", "histogram", "test")
            .histogram("lat_seconds", &[("op", "get")], &h);
        let text = e.finish();
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"0.000025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_count{op=\"get\"} 3"), "{text}");
        assert_eq!(h.count(), 3);
    }
}
