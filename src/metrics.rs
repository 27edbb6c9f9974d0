//! Prometheus metrics, on the `prometheus-client` crate.
//!
//! Each subsystem owns its metric handles and registers its own families
//! with the node's [`Registry`] (`ServerMetrics::register`,
//! `Store::register_metrics`, `Replication::register_metrics`); this module
//! holds only what they share: the latency buckets, the text rendering and
//! a helper for values read at scrape time. It imports no subsystem, so
//! none of them depends on another through it.

use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, seconds: 25 µs to 10 s, roughly
/// ×2.5 apart, enough to read p50/p95/p99 from.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`] (plus +Inf).
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Records `d` in a latency histogram, in seconds.
pub fn observe(histogram: &Histogram, d: Duration) {
    histogram.observe(d.as_secs_f64());
}

/// The registry in the Prometheus text format (0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; a collector's error would be a bug,
    // and a partial page is more use to an operator than none.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Families whose values are read at scrape time (gauges of current state,
/// counters kept elsewhere), for a `Collector` to encode.
pub struct ScrapeEncoder<'a>(DescriptorEncoder<'a>);

impl<'a> ScrapeEncoder<'a> {
    /// Wraps a collector's encoder.
    pub fn new(encoder: DescriptorEncoder<'a>) -> Self {
        ScrapeEncoder(encoder)
    }

    /// A gauge family: one sample per label set (none is fine: the family
    /// is still described).
    pub fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> std::fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.family(name, help, MetricType::Gauge, samples)
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> std::fmt::Result {
        let family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(family)
    }

    /// A counter family kept outside the registry (`name` without the
    /// `_total` the encoder appends).
    pub fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) -> std::fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.family(name, help, MetricType::Counter, samples)
    }

    /// One family of `kind`, a sample per label set.
    fn family<L: EncodeLabelSet, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (L, M)>,
    ) -> std::fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, None, kind)?;
        for (labels, metric) in samples {
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::metrics::family::Family;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let mut registry = Registry::default();
        let family = Family::<Vec<(&'static str, &'static str)>, Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register("lat_seconds", "test", family.clone());
        let h = family.get_or_create(&vec![("op", "get")]);
        observe(&h, Duration::from_micros(10));
        observe(&h, Duration::from_millis(3));
        observe(&h, Duration::from_secs(20));
        drop(h);
        let text = render(&registry);
        for line in [
            "lat_seconds_bucket{op=\"get\",le=\"2.5e-05\"} 1",
            "lat_seconds_bucket{op=\"get\",le=\"0.005\"} 2",
            "lat_seconds_bucket{op=\"get\",le=\"10\"} 2",
            "lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 3",
            "lat_seconds_count{op=\"get\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
            let mut e = ScrapeEncoder::new(encoder);
            e.gauge("depth", "Queue depth", 3.0)?;
            e.gauges("lag", "Lag", [([("replica", "r1")], 7.0)])?;
            e.counters("reads", "Reads", [([("tier", "disk")], 9)])
        }
    }

    #[test]
    fn scrape_time_values_render_as_typed_families() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let text = render(&registry);
        for line in [
            "# TYPE depth gauge",
            "depth 3.0",
            "lag{replica=\"r1\"} 7.0",
            "# TYPE reads_total counter",
            "reads_total{tier=\"disk\"} 9",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
