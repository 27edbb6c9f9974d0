//! The gateway's Prometheus families. Its commands run through
//! `Node::dispatch` but not through the QUIC server, so the per-operation
//! request families count QUIC requests only; these count RESP traffic.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Registry;

/// Connection and command counts of one gateway.
#[derive(Debug, Default)]
pub struct RespMetrics {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections refused at `resp.max_connections`.
    pub refused: Counter,
    /// Connections open now.
    pub open: Gauge,
    /// Commands run.
    pub commands: Counter,
    /// Commands answered with an error.
    pub errors: Counter,
    /// Connections closed for input that was not RESP or broke a limit
    /// (slow senders included).
    pub protocol_errors: Counter,
}

impl RespMetrics {
    /// Registers the families.
    pub fn register(&self, registry: &mut Registry) {
        let families: [(&str, &str, &Counter); 5] = [
            (
                "strata_resp_connections",
                "RESP connections accepted",
                &self.connections,
            ),
            (
                "strata_resp_refused_connections",
                "RESP connections refused at resp.max_connections",
                &self.refused,
            ),
            ("strata_resp_commands", "RESP commands run", &self.commands),
            (
                "strata_resp_command_errors",
                "RESP commands answered with an error",
                &self.errors,
            ),
            (
                "strata_resp_protocol_errors",
                "RESP connections closed for bad, oversized or too slow input",
                &self.protocol_errors,
            ),
        ];
        for (name, help, counter) in families {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "strata_resp_open_connections",
            "RESP connections open now",
            self.open.clone(),
        );
    }
}
