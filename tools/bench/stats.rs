//! Recording: per-kind HDR latency histograms and counters, sharded so that
//! the request tasks almost never contend, drained once a second by the
//! progress loop.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Slowest latency a histogram tells apart; slower ones are recorded as
/// this (requests time out well before it unless `--timeout-ms` says
/// otherwise).
const MAX_LATENCY_US: u64 = 60_000_000;

/// At most this many shards: with more tasks, tasks share shards (each lock
/// is held for one record, so sharing costs little); each shard holds two
/// histograms of ~140 KB.
const MAX_SHARDS: usize = 64;

/// Sample messages kept for the report, per list.
const MAX_SAMPLES: usize = 5;

/// The two operations of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Set,
}

impl OpKind {
    pub const ALL: [OpKind; 2] = [OpKind::Get, OpKind::Set];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What happened to one kind of operation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Answered without error (latency recorded).
    pub ok: u64,
    /// Failed: transport failures, timeouts, server errors.
    pub errors: u64,
    /// GET only: the key was found.
    pub hits: u64,
    /// GET only: the key was absent.
    pub misses: u64,
    /// GET only: answers checked (content, and version/presence against the
    /// run's own acknowledged writes).
    pub verified: u64,
    /// GET only: checked answers that were wrong.
    pub mismatches: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.hits += other.hits;
        self.misses += other.misses;
        self.verified += other.verified;
        self.mismatches += other.mismatches;
    }
}

/// Latencies (µs) and counts per [`OpKind`].
pub struct Tally {
    hist: [Histogram<u64>; 2],
    counts: [Counts; 2],
}

impl Tally {
    pub fn new() -> Tally {
        #[expect(clippy::expect_used, reason = "constant, valid bounds")]
        let hist =
            || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Tally {
            hist: [hist(), hist()],
            counts: [Counts::default(); 2],
        }
    }

    /// A successful operation that took `latency`.
    pub fn record_ok(&mut self, kind: OpKind, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.hist[kind.index()].saturating_record(us);
        self.counts[kind.index()].ok += 1;
    }

    pub fn counts_mut(&mut self, kind: OpKind) -> &mut Counts {
        &mut self.counts[kind.index()]
    }

    pub fn counts(&self, kind: OpKind) -> &Counts {
        &self.counts[kind.index()]
    }

    pub fn histogram(&self, kind: OpKind) -> &Histogram<u64> {
        &self.hist[kind.index()]
    }

    /// Sum of a counter over both kinds.
    pub fn total(&self, field: impl Fn(&Counts) -> u64) -> u64 {
        self.counts.iter().map(field).sum()
    }

    /// Adds `other` into `self` and clears `other`.
    fn absorb(&mut self, other: &mut Tally) {
        for kind in OpKind::ALL {
            let i = kind.index();
            // Every tally's histograms share one set of bounds.
            let _ = self.hist[i].add(&other.hist[i]);
            other.hist[i].reset();
            self.counts[i].add(&other.counts[i]);
            other.counts[i] = Counts::default();
        }
    }

    /// Adds `other` into `self`, leaving `other` as it is.
    pub fn add(&mut self, other: &Tally) {
        for kind in OpKind::ALL {
            let i = kind.index();
            // Every tally's histograms share one set of bounds.
            let _ = self.hist[i].add(&other.hist[i]);
            self.counts[i].add(&other.counts[i]);
        }
    }
}

/// The first few distinct error and mismatch descriptions.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    pub errors: Vec<String>,
    pub mismatches: Vec<String>,
}

/// Where the request tasks record. Each task locks only its own shard (or
/// one shared with a few others), once per operation.
pub struct Recorder {
    shards: Box<[Mutex<Tally>]>,
    samples: Mutex<Samples>,
}

impl Recorder {
    pub fn new(tasks: usize) -> Recorder {
        let n = tasks.clamp(1, MAX_SHARDS);
        Recorder {
            shards: (0..n).map(|_| Mutex::new(Tally::new())).collect(),
            samples: Mutex::new(Samples::default()),
        }
    }

    /// The shard task number `task` records into.
    pub fn shard(&self, task: usize) -> &Mutex<Tally> {
        &self.shards[task % self.shards.len()]
    }

    /// Moves everything recorded since the last drain into `into`.
    pub fn drain_into(&self, into: &mut Tally) {
        for shard in self.shards.iter() {
            into.absorb(&mut lock(shard));
        }
    }

    /// Keeps `message` as an error sample if it is new and there is room.
    pub fn note_error(&self, kind: OpKind, message: String) {
        let text = format!("{}: {message}", kind.name());
        let mut samples = lock(&self.samples);
        if samples.errors.len() < MAX_SAMPLES && !samples.errors.contains(&text) {
            samples.errors.push(text);
        }
    }

    /// Keeps `message` as a mismatch sample if it is new and there is room.
    pub fn note_mismatch(&self, message: String) {
        let mut samples = lock(&self.samples);
        if samples.mismatches.len() < MAX_SAMPLES && !samples.mismatches.contains(&message) {
            samples.mismatches.push(message);
        }
    }

    pub fn samples(&self) -> Samples {
        lock(&self.samples).clone()
    }
}

pub use strata::sync::lock;

/// Latency summary of one histogram, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_move_counts_and_latencies_once() {
        let recorder = Recorder::new(3);
        lock(recorder.shard(0)).record_ok(OpKind::Get, Duration::from_micros(100));
        lock(recorder.shard(1)).record_ok(OpKind::Get, Duration::from_micros(300));
        lock(recorder.shard(2)).record_ok(OpKind::Set, Duration::from_millis(2));
        lock(recorder.shard(4)).counts_mut(OpKind::Set).errors += 1;
        let mut totals = Tally::new();
        recorder.drain_into(&mut totals);
        recorder.drain_into(&mut totals);
        assert_eq!(totals.counts(OpKind::Get).ok, 2);
        assert_eq!(totals.counts(OpKind::Set).ok, 1);
        assert_eq!(totals.counts(OpKind::Set).errors, 1);
        let get = Percentiles::of(totals.histogram(OpKind::Get));
        assert_eq!((get.min, get.p50), (100, 100));
        assert!((299..=301).contains(&get.max), "{get:?}");
        let set = Percentiles::of(totals.histogram(OpKind::Set));
        assert!(set.p50 <= set.p99 && set.p99 <= set.max);
        assert_eq!(
            Percentiles::of(&Tally::new().hist[0]),
            Percentiles::default()
        );
    }

    #[test]
    fn samples_are_distinct_and_bounded() {
        let recorder = Recorder::new(1);
        for i in 0..20 {
            recorder.note_error(OpKind::Get, format!("e{}", i % 2));
            recorder.note_mismatch(format!("m{i}"));
        }
        let samples = recorder.samples();
        assert_eq!(samples.errors, ["get: e0", "get: e1"]);
        assert_eq!(samples.mismatches.len(), MAX_SAMPLES);
    }
}
