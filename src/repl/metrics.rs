//! Replication's metrics: ack outcomes and stream volume recorded as they
//! happen, and per-replica lag and full-sync progress read at scrape time
//! from one consistent [`View`](super::View).

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::Replication;
use super::core::Phase;
use crate::metrics::{Registry, ScrapeEncoder};

/// A one-label family's label set.
type OneLabel = [(&'static str, &'static str); 1];

/// Handles recorded by the ack path and the stream tasks.
#[derive(Debug)]
pub(super) struct ReplMetrics {
    acks: Family<OneLabel, Counter>,
    pub(super) acks_reached: Counter,
    pub(super) acks_degraded: Counter,
    pub(super) acks_timed_out: Counter,
    pub(super) waiting: Gauge,
    full_syncs: Family<OneLabel, Counter>,
    pub(super) full_syncs_started: Counter,
    pub(super) full_syncs_resumed: Counter,
    pub(super) full_syncs_completed: Counter,
    pub(super) full_sync_bytes_sent: Counter,
    pub(super) records_sent: Counter,
    pub(super) records_applied: Counter,
}

impl Default for ReplMetrics {
    fn default() -> Self {
        let acks = Family::<OneLabel, Counter>::default();
        let full_syncs = Family::<OneLabel, Counter>::default();
        // Owned members share their family's state: no lookup per record.
        let outcome = |o| acks.get_or_create_owned(&[("outcome", o)]);
        let event = |e| full_syncs.get_or_create_owned(&[("event", e)]);
        ReplMetrics {
            acks_reached: outcome("reached"),
            acks_degraded: outcome("degraded"),
            acks_timed_out: outcome("timeout"),
            full_syncs_started: event("started"),
            full_syncs_resumed: event("resumed"),
            full_syncs_completed: event("completed"),
            acks,
            full_syncs,
            waiting: Gauge::default(),
            full_sync_bytes_sent: Counter::default(),
            records_sent: Counter::default(),
            records_applied: Counter::default(),
        }
    }
}

impl Replication {
    /// Registers replication's families with the node's registry.
    pub fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "strata_replication_acks",
            "Writes that waited for replica acks, by outcome",
            m.acks.clone(),
        );
        registry.register(
            "strata_replication_waiting_writes",
            "Writes committed locally and waiting for replica acks",
            m.waiting.clone(),
        );
        registry.register(
            "strata_replication_records_sent",
            "WAL records sent to replicas",
            m.records_sent.clone(),
        );
        registry.register(
            "strata_replication_records_applied",
            "Records this replica applied from its primary",
            m.records_applied.clone(),
        );
        registry.register(
            "strata_full_syncs",
            "Full syncs, by event (started and resumed as primary, completed as either)",
            m.full_syncs.clone(),
        );
        registry.register(
            "strata_full_sync_sent_bytes",
            "Compressed full-sync bytes sent to replicas",
            m.full_sync_bytes_sent.clone(),
        );
        registry.register_collector(Box::new(StateCollector(Arc::downgrade(self))));
    }
}

/// Per-replica state, read at scrape time. Weak, so that the registry
/// never keeps replication alive.
#[derive(Debug)]
struct StateCollector(Weak<Replication>);

impl Collector for StateCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        match self.0.upgrade() {
            Some(repl) => encode_state(&repl, &mut ScrapeEncoder::new(encoder)),
            None => Ok(()),
        }
    }
}

fn encode_state(repl: &Replication, e: &mut ScrapeEncoder) -> std::fmt::Result {
    let last = repl.store.applied_seq();
    let v = repl.view();
    let lag: Vec<_> = v
        .replicas
        .iter()
        .map(|(name, r)| {
            let (bytes, secs) = repl.store.lag_behind(r.received);
            let records = last.0.saturating_sub(r.received.0) as f64;
            ([("replica", name.clone())], records, bytes as f64, secs)
        })
        .collect();
    e.gauges(
        "strata_replication_lag_records",
        "Records a replica has not yet acknowledged",
        lag.iter().map(|(l, records, _, _)| (l.clone(), *records)),
    )?;
    e.gauges(
        "strata_replication_lag_bytes",
        "WAL bytes a replica has not yet acknowledged",
        lag.iter().map(|(l, _, bytes, _)| (l.clone(), *bytes)),
    )?;
    e.gauges(
        "strata_replication_lag_seconds",
        "Age of the oldest record a replica has not acknowledged",
        lag.iter().map(|(l, _, _, secs)| (l.clone(), *secs)),
    )?;
    e.gauges(
        "strata_replica_connected",
        "1 while a replica is connected (by phase)",
        v.replicas.iter().map(|(name, r)| {
            let up = f64::from(u8::from(r.phase != Phase::Disconnected));
            (
                [
                    ("replica", name.clone()),
                    ("phase", r.phase.name().to_string()),
                ],
                up,
            )
        }),
    )?;
    encode_full_sync_progress(&v, e)?;
    e.gauges(
        "strata_replica_lag_records",
        "On a replica: records its primary has that it has not applied",
        v.following.as_ref().map(|_| {
            let behind = v.follow.primary_last.0.saturating_sub(last.0) as f64;
            (Vec::<(String, String)>::new(), behind)
        }),
    )
}

/// Full-sync progress: the primary's sends, and this replica's receive
/// (labelled `self`).
fn encode_full_sync_progress(v: &super::View, e: &mut ScrapeEncoder) -> std::fmt::Result {
    let elapsed = |started_ms: u64| v.now_ms.saturating_sub(started_ms);
    let mut progress: Vec<(String, u64, u64, f64)> = v
        .replicas
        .iter()
        .filter_map(|(name, r)| match r.phase {
            Phase::FullSync {
                done,
                total,
                started_ms,
            } => Some((
                name.clone(),
                done,
                total,
                eta(done, total, elapsed(started_ms)),
            )),
            _ => None,
        })
        .collect();
    if let Some((done, total, started_ms)) = v.follow.full_sync {
        progress.push((
            "self".into(),
            done,
            total,
            eta(done, total, elapsed(started_ms)),
        ));
    }
    let label = |name: &String| [("replica", name.clone())];
    e.gauges(
        "strata_full_sync_bytes_done",
        "Full-sync bytes transferred so far",
        progress
            .iter()
            .map(|(n, done, _, _)| (label(n), *done as f64)),
    )?;
    e.gauges(
        "strata_full_sync_bytes_total",
        "Full-sync bytes to transfer",
        progress
            .iter()
            .map(|(n, _, total, _)| (label(n), *total as f64)),
    )?;
    e.gauges(
        "strata_full_sync_eta_seconds",
        "Estimated seconds until a full sync completes",
        progress.iter().map(|(n, _, _, eta)| (label(n), *eta)),
    )
}

/// Seconds left at the average rate so far, `elapsed_ms` into the transfer.
pub(super) fn eta(done: u64, total: u64, elapsed_ms: u64) -> f64 {
    if done == 0 || elapsed_ms == 0 {
        return 0.0;
    }
    total.saturating_sub(done) as f64 * (elapsed_ms as f64 / 1000.0) / done as f64
}
