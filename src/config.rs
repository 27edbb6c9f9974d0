//! The server's configuration: an optional TOML file, overridden by
//! command-line flags, validated with errors that name the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::proto::{DEFAULT_MAX_FRAME_BYTES, Limits};
use crate::store::StoreConfig;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads only: get, multi-get, exists, ttl, scan, info, ping.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
    /// Everything, including administrative requests.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read-only" => Ok(Role::ReadOnly),
            "read-write" => Ok(Role::ReadWrite),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role {s:?}: use read-only, read-write or admin"
            )),
        }
    }
}

/// One accepted client token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret a client sends in `Hello` (never logged).
    pub token: String,
    /// What it allows.
    pub role: Role,
}

/// TLS settings of the client listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key`. Unset: a self-signed pair is
    /// created in `<data_dir>/tls/` on first start.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Names (DNS or IP) put in a generated certificate.
    pub names: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

/// Limits that protect the node from clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetLimits {
    /// Client connections served at once; more are refused.
    pub max_connections: usize,
    /// Request streams one connection may have open at once.
    pub max_streams_per_connection: u32,
    /// Longest request frame, bytes (refused before its body is read).
    pub max_frame_bytes: u32,
    /// A request must arrive whole and be answered within this, ms.
    pub request_timeout_ms: u64,
    /// A connection with no traffic for this long is closed, ms.
    pub idle_timeout_ms: u64,
    /// On SIGINT/SIGTERM, in-flight requests get this long to finish, ms.
    pub shutdown_grace_ms: u64,
    /// Bytes of request frames being read or executed, node-wide; a request
    /// that would pass it is answered `Overloaded` without its body being
    /// read. A quarter is kept for frames of at most 64 KiB, so small
    /// requests are served while large ones are shed.
    pub request_bytes_budget: u64,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_connections: 1024,
            max_streams_per_connection: 256,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            request_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            request_bytes_budget: 256 << 20,
        }
    }
}

/// The RESP gateway: Redis clients and tools on a TCP listener of their
/// own (off unless `listen` is set).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RespConfig {
    /// TCP listen address for Redis clients; `None` (the default) serves none.
    pub listen: Option<SocketAddr>,
    /// TLS on that listener, with the node's client certificate (`[tls]`)
    /// and, when `tls.client_ca` is set, client certificates required.
    pub tls: bool,
    /// Connections served at once; more are told so and closed.
    pub max_connections: usize,
    /// A connection with no command for this long is closed, ms; 0 (the
    /// default, as Redis's `timeout 0`) keeps idle connections open. A
    /// command begun must arrive whole within `net.request_timeout_ms`.
    pub idle_timeout_ms: u64,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            listen: None,
            tls: false,
            max_connections: 1024,
            idle_timeout_ms: 0,
        }
    }
}

/// The whole server configuration (the TOML file's layout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the node keeps its data (`wal/`, `db/`, `tls/`).
    pub data_dir: PathBuf,
    /// QUIC listen address for clients.
    pub listen: SocketAddr,
    /// HTTP listen address for Prometheus `/metrics`; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// TLS identity and client certificates.
    pub tls: TlsConfig,
    /// Accepted tokens; empty means no authentication (every client is admin).
    pub tokens: Vec<TokenConfig>,
    /// Client-facing network limits.
    pub net: NetLimits,
    /// The storage engine.
    pub store: StoreConfig,
    /// Replication: role, node links, acknowledgements, retention.
    pub replication: crate::repl::ReplConfig,
    /// Cluster membership (off by default: a single replica group).
    pub cluster: crate::cluster::node::ClusterConfig,
    /// The RESP gateway for Redis clients (off by default).
    pub resp: RespConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("strata-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7379)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9379))),
            log_json: false,
            tls: TlsConfig::default(),
            tokens: Vec::new(),
            net: NetLimits::default(),
            store: StoreConfig::default(),
            replication: crate::repl::ReplConfig::default(),
            cluster: crate::cluster::node::ClusterConfig::default(),
            resp: RespConfig::default(),
        }
    }
}

/// A configuration that cannot be used, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this layout (the message names the key).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// Why it is wrong.
        reason: String,
    },
}

impl Config {
    /// The limits the node announces in `Hello` and checks every request
    /// against: the store's (which it enforces again on its own API) and
    /// the frame limit. The one place configuration becomes wire limits.
    pub fn announced_limits(&self) -> Limits {
        self.store.limits.announced(self.net.max_frame_bytes)
    }

    /// Reads a TOML file; missing fields take their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text; missing fields take their defaults. The error is
    /// the parser's message (it names the line and the field).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The store config with the data directory filled in.
    pub fn store_config(&self) -> StoreConfig {
        let mut store = StoreConfig {
            data_dir: self.data_dir.clone(),
            ..self.store.clone()
        };
        if self.replication.listen.is_none() {
            // No replica can follow a node without a replication listener:
            // keeping recent records in memory for them would only cost RAM.
            store.repl_feed_bytes = 0;
        }
        store
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: &str| {
            Err(ConfigError::Invalid {
                field: field.into(),
                reason: reason.into(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert", "tls.cert and tls.key must be given together");
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.len() < 8 {
                return bad(
                    &format!("tokens[{i}].token"),
                    "must be at least 8 characters",
                );
            }
        }
        let n = &self.net;
        if n.max_connections == 0 {
            return bad("net.max_connections", "must be above 0");
        }
        if n.max_streams_per_connection == 0 {
            return bad("net.max_streams_per_connection", "must be above 0");
        }
        if (n.max_frame_bytes as u64) < 1024 {
            return bad("net.max_frame_bytes", "must be at least 1024");
        }
        // The largest message: a scan page of one maximal entry plus its
        // cursor (a key), with their varints (wire-protocol.md §4).
        let limits = &self.store.limits;
        let largest_message = limits.max_value_bytes as u64 + 2 * limits.max_key_bytes as u64 + 128;
        if (n.max_frame_bytes as u64) < largest_message {
            return bad(
                "net.max_frame_bytes",
                "must fit the largest key plus value and their framing \
                 (store.limits.max_value_bytes + 2 * max_key_bytes + 128)",
            );
        }
        // The large-frame share (three quarters) must fit the largest frame.
        if n.request_bytes_budget / 4 * 3 < n.max_frame_bytes as u64
            || n.request_bytes_budget / 4 < 64 << 10
        {
            return bad(
                "net.request_bytes_budget",
                "must be at least 4/3 of net.max_frame_bytes (so the largest request fits) \
                 and at least 256 KiB (a quarter is kept for frames up to 64 KiB)",
            );
        }
        if n.request_timeout_ms == 0 || n.idle_timeout_ms == 0 {
            return bad("net.request_timeout_ms", "timeouts must be above 0");
        }
        if self.resp.max_connections == 0 {
            return bad("resp.max_connections", "must be above 0");
        }
        if let Err(reason) = self.replication.validate() {
            return Err(ConfigError::Invalid {
                field: "replication".into(),
                reason,
            });
        }
        if let Err((field, reason)) = self.cluster.validate(&self.replication) {
            return Err(ConfigError::Invalid {
                field: field.into(),
                reason,
            });
        }
        self.store_config()
            .validate()
            .map_err(|e| ConfigError::Invalid {
                field: "store".into(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_and_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/strata\"\n[store]\nfsync = \"interval:250\"\nmemory_budget_bytes = 1048576\n[[tokens]]\ntoken = \"0123456789\"\nrole = \"read-only\"\n",
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/strata"));
        assert_eq!(config.store.fsync.to_string(), "interval:250");
        assert_eq!(config.tokens[0].role, Role::ReadOnly);
        config.validate().unwrap();

        std::fs::write(&path, "[store]\nfsync = \"sometimes\"\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("fsync") && err.contains("interval:"), "{err}");

        std::fs::write(&path, "listen_addr = \"x\"\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("listen_addr"), "{err}");

        let mut config = Config::default();
        config.net.max_frame_bytes = 2048;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("net.max_frame_bytes"), "{err}");
    }

    proptest::proptest! {
        /// Untrusted config text gives a typed error (or a config that
        /// validation then judges), never a panic.
        #[test]
        fn arbitrary_config_text_never_panics(text in "\\PC{0,200}") {
            if let Ok(config) = Config::from_toml(&text) {
                let _ = config.validate();
            }
        }

        #[test]
        fn mutated_config_never_panics(
            flips in proptest::collection::vec((0usize..512, proptest::prelude::any::<u8>()), 1..6),
        ) {
            let mut text = b"data_dir = \"/var/lib/strata\"\nlisten = \"0.0.0.0:7379\"\n[net]\nmax_connections = 1024\nmax_frame_bytes = 16842752\n[store]\nfsync = \"interval:1000\"\nmemory_budget_bytes = 268435456\n[store.limits]\nmax_key_bytes = 16384\n[[tokens]]\ntoken = \"a-long-secret\"\nrole = \"admin\"\n".to_vec();
            for (at, x) in flips {
                let at = at % text.len();
                text[at] ^= x;
            }
            if let Ok(config) = Config::from_toml(&String::from_utf8_lossy(&text)) {
                let _ = config.validate();
            }
        }
    }
}
