//! The readiness line: what `strata-server --ready-json` prints on stdout,
//! once, when every listener is bound.
//!
//! Whatever starts nodes (the test and drill harness, a supervisor) learns
//! from it that the node serves and where, without reading the log, whose
//! wording is free to change. The fields of [`Ready`] are the contract;
//! the README shows the line.

use std::io::Write;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// One node's readiness, as one line of JSON. Absent values are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The server's process id: a starter that ran it through a wrapper
    /// still knows whom to signal.
    pub pid: u32,
    /// The bound QUIC address for clients (the real port when `:0` was asked).
    pub listen: SocketAddr,
    /// SHA-256 of the client-facing certificate, hex: what `--pin` takes.
    pub fingerprint: String,
    /// The bound `/metrics` address; `null` with `--metrics-listen off`.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The bound replication address; `null` without `--repl-listen`.
    #[serde(default)]
    pub repl_listen: Option<SocketAddr>,
    /// The configured node name; `null` when left to the certificate.
    #[serde(default)]
    pub node_name: Option<String>,
    /// The cluster node id; `null` without cluster certificates.
    #[serde(default)]
    pub node_id: Option<NodeId>,
    /// The bound RESP gateway address; `null` without `--resp-listen`.
    #[serde(default)]
    pub resp_listen: Option<SocketAddr>,
}

impl Ready {
    /// Writes the line (JSON, then a newline) and flushes, so a reader
    /// blocked on the pipe wakes now rather than at exit.
    ///
    /// # Errors
    /// Whatever writing to `out` returns.
    pub fn announce(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Reads a line [`Ready::announce`] wrote (trailing newline allowed).
    ///
    /// # Errors
    /// The line is not a readiness line.
    pub fn from_line(line: &str) -> Result<Ready, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_line_round_trips_and_names_every_field() {
        let ready = Ready {
            pid: 42,
            listen: "127.0.0.1:7379".parse().unwrap(),
            fingerprint: "ab".repeat(32),
            metrics_listen: Some("127.0.0.1:9379".parse().unwrap()),
            repl_listen: None,
            node_name: Some("p".into()),
            node_id: Some(NodeId(7)),
            resp_listen: Some("127.0.0.1:6379".parse().unwrap()),
        };
        let mut out = Vec::new();
        ready.announce(&mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        for key in [
            "pid",
            "listen",
            "fingerprint",
            "metrics_listen",
            "repl_listen",
            "node_name",
            "node_id",
            "resp_listen",
        ] {
            assert!(line.contains(&format!("\"{key}\":")), "{key} in {line}");
        }
        assert_eq!(Ready::from_line(&line).unwrap(), ready);
    }

    #[test]
    fn a_log_line_is_not_a_ready_line() {
        assert!(Ready::from_line("INFO strata: store opened").is_err());
        assert!(Ready::from_line("{\"pid\":1}").is_err());
    }
}
