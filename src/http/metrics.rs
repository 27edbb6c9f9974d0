//! The HTTP listener's Prometheus families. Its requests run through the
//! checked dispatch but not through the QUIC server, so the per-operation
//! request families count QUIC requests only; these count HTTP traffic.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Registry;

/// `endpoint` and `code` (the HTTP status) of a served request.
pub type RequestLabels = Vec<(&'static str, String)>;

/// Connection and request counts of the HTTP listener.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections closed unread at `net.max_connections`.
    pub refused: Counter,
    /// Connections open now.
    pub open: Gauge,
    /// Requests answered, by endpoint and status.
    pub requests: Family<RequestLabels, Counter>,
}

impl HttpMetrics {
    /// Counts one answered request.
    pub fn answered(&self, endpoint: &'static str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("endpoint", endpoint.into()),
                ("code", status.to_string()),
            ])
            .inc();
    }

    /// Registers the families.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "strata_http_connections",
            "HTTP connections accepted",
            self.connections.clone(),
        );
        registry.register(
            "strata_http_refused_connections",
            "HTTP connections closed unread at net.max_connections",
            self.refused.clone(),
        );
        registry.register(
            "strata_http_open_connections",
            "HTTP connections open now",
            self.open.clone(),
        );
        registry.register(
            "strata_http_requests",
            "HTTP requests answered, by endpoint and status code",
            self.requests.clone(),
        );
    }
}

/// The endpoint a path names, for the `endpoint` label (bounded: never
/// the key).
pub fn endpoint(path: &str) -> &'static str {
    match path {
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/v1/info" => "info",
        "/v1/cluster" => "cluster",
        "/v1/keys" => "scan",
        p if p.starts_with("/v1/keys/") => "key",
        _ => "other",
    }
}
