//! A primary and replicas as real `strata-server` processes on loopback,
//! with cluster certificates made by `strata-admin gen-certs`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::harness::{cluster_args, free_udp_addr};
use strata::net::client::{Client, ClientConfig, ClientError, ErrorCode, ServerTrust};
use strata::net::tls::parse_fingerprint;

use super::node::TestNode;

/// Bound for a replica to catch up once writes stop.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// Makes a CA and certificates for `nodes` in `dir` with the real tool.
pub fn gen_certs(dir: &Path, nodes: &[&str]) {
    let admin = Path::new(env!("CARGO_BIN_EXE_strata-admin"));
    strata::harness::gen_certs(admin, dir, nodes).unwrap_or_else(|e| panic!("{e}"));
}

/// One node of a test cluster.
pub struct Member {
    pub name: String,
    pub node: TestNode,
    pub repl_addr: SocketAddr,
    pub dir: PathBuf,
}

impl Member {
    /// Starts a node; `extra` adds flags such as `--replica-of`. Its
    /// replication address is fixed, so it survives restarts.
    pub fn start(root: &Path, certs: &Path, name: &str, extra: &[&str]) -> Member {
        let repl_addr = free_udp_addr().expect("a free loopback port");
        Member::start_at(root, certs, name, repl_addr, extra)
    }

    /// As [`Member::start`], its node links on `repl_addr`.
    pub fn start_at(
        root: &Path,
        certs: &Path,
        name: &str,
        repl_addr: SocketAddr,
        extra: &[&str],
    ) -> Member {
        let dir = root.join(name);
        let mut args = cluster_args(certs, name, repl_addr);
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = TestNode::start(&dir, &refs);
        Member {
            name: name.into(),
            node,
            repl_addr,
            dir,
        }
    }

    /// Waits for a log line containing `needle` (an event the node
    /// reports); `within` only bounds a test that would otherwise hang.
    pub fn await_log(&self, needle: &str, within: Duration) -> String {
        self.node.await_log(needle, within)
    }

    /// Starts a cluster-mode node (`--cluster`) that serves its cluster
    /// certificate to clients too, so one CA (`certs/ca.crt`) verifies
    /// every node for clients and tools.
    pub fn start_in_cluster(root: &Path, certs: &Path, name: &str) -> Member {
        Member::start_in_cluster_with(root, certs, name, None)
    }

    /// As [`Member::start_in_cluster`], with `[cluster]` settings (TOML
    /// lines, such as `auto_failover = false`) from a config file.
    pub fn start_in_cluster_with(
        root: &Path,
        certs: &Path,
        name: &str,
        cluster_settings: Option<&str>,
    ) -> Member {
        let repl_addr = free_udp_addr().expect("a free loopback port");
        Member::start_in_cluster_at(root, certs, name, repl_addr, cluster_settings)
    }

    /// As [`Member::start_in_cluster_with`], its node links on `repl_addr`.
    pub fn start_in_cluster_at(
        root: &Path,
        certs: &Path,
        name: &str,
        repl_addr: SocketAddr,
        cluster_settings: Option<&str>,
    ) -> Member {
        let file = |f: String| certs.join(f).display().to_string();
        let (cert, key) = (file(format!("{name}.crt")), file(format!("{name}.key")));
        let mut args = vec!["--cluster", "--tls-cert", &cert, "--tls-key", &key];
        let config = root.join(format!("{name}.toml"));
        let config_arg = config.display().to_string();
        if let Some(settings) = cluster_settings {
            std::fs::write(&config, format!("[cluster]\n{settings}\n")).expect("config file");
            args.extend(["--config", &config_arg]);
        }
        Member::start_at(root, certs, name, repl_addr, &args)
    }

    /// A client verifying this node by the cluster CA in `certs`.
    pub async fn ca_client(&self, certs: &Path) -> Client {
        let trust = ServerTrust::CaFile(certs.join("ca.crt"));
        Client::connect(ClientConfig::new(self.node.addr, trust))
            .await
            .expect("connect")
    }

    /// A client pinned to this node's certificate.
    pub async fn client(&self) -> Client {
        let pin = parse_fingerprint(&self.node.fingerprint).expect("fingerprint");
        Client::connect(ClientConfig::new(self.node.addr, ServerTrust::Pin(pin)))
            .await
            .expect("connect")
    }
}

/// `Info`-style pairs as a map.
pub fn pairs(p: Vec<(String, String)>) -> HashMap<String, String> {
    p.into_iter().collect()
}

/// The digest of a node as `(seq, keys, sha256)`, at a fixed expiry cutoff.
pub async fn digest(client: &Client, cutoff_ms: u64) -> (u64, u64, String) {
    let d = pairs(client.digest(cutoff_ms).await.expect("digest"));
    (
        d["seq"].parse().unwrap(),
        d["keys"].parse().unwrap(),
        d["sha256"].clone(),
    )
}

/// Waits until every replica's digest equals the primary's (writes have
/// stopped), and returns it. Panics with the last digests after `CONVERGE`.
pub async fn converged(primary: &Client, replicas: &[&Client]) -> (u64, u64, String) {
    // A cutoff after every digest below: compaction removes expired entries
    // at different moments on different nodes, but only ones expired by then.
    let cutoff = now_ms() + 2 * CONVERGE.as_millis() as u64;
    let want = digest(primary, cutoff).await;
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mut got = Vec::new();
        for r in replicas {
            // A replica in a full sync answers Unavailable: not there yet.
            got.push(match r.digest(cutoff).await {
                Ok(d) => {
                    let d = pairs(d);
                    Some((
                        d["seq"].parse().unwrap(),
                        d["keys"].parse().unwrap(),
                        d["sha256"].clone(),
                    ))
                }
                Err(ClientError::Server {
                    code: ErrorCode::Unavailable,
                    ..
                }) => None,
                Err(e) => panic!("digest: {e}"),
            });
        }
        if got.iter().all(|d| d.as_ref() == Some(&want)) {
            return want;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge: primary {want:?}, replicas {got:?}"
        );
        // Polled: convergence has no event a test process can subscribe to.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The value of a metric series (first match of `name{labels}`), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs `strata-admin` with `args`: whether it succeeded, and its stdout
/// and stderr together.
pub fn admin(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata-admin"))
        .args(args)
        .output()
        .expect("run strata-admin");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Polls `check` until it holds, for at most `CONVERGE`: a cluster's
/// state is only visible by asking its nodes.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + CONVERGE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node's `Info`, by name.
pub async fn info(client: &Client) -> BTreeMap<String, String> {
    client.info().await.expect("info").into_iter().collect()
}

/// `strata-admin cluster create --replicas R` over `members`, in order
/// (the first ones become the shards' primaries): their client addresses.
pub fn create_cluster(members: &[Member], certs: &Path, replicas: u32) -> Vec<String> {
    let addrs: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();
    let ca = certs.join("ca.crt").display().to_string();
    let replicas = replicas.to_string();
    let mut args = vec!["cluster", "create", "--replicas", &replicas, "--ca", &ca];
    args.extend(addrs.iter().map(String::as_str));
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");
    addrs
}

/// A cluster client over `addrs` trusting the CA in `certs`, with room to
/// follow a failover (8 attempts a request).
pub async fn cluster_client(addrs: &[String], certs: &Path) -> ClusterClient {
    let trust = ServerTrust::CaFile(certs.join("ca.crt"));
    let config = ClusterClientConfig::with_trust(trust, |c| c).with_max_attempts(8);
    ClusterClient::connect(addrs, config)
        .await
        .expect("cluster client")
}

/// Reads every key of `acked` back through `cluster`; the keys missing
/// (a value that differs panics).
pub async fn missing(cluster: &ClusterClient, acked: &BTreeMap<String, String>) -> Vec<String> {
    let keys: Vec<String> = acked.keys().cloned().collect();
    let mut missing = Vec::new();
    for batch in keys.chunks(500) {
        let got = cluster
            .get_many(batch.iter().cloned())
            .await
            .expect("get_many");
        for (key, entry) in batch.iter().zip(got) {
            match entry {
                Some(entry) => assert_eq!(entry.value, acked[key].as_bytes(), "{key}"),
                None => missing.push(key.clone()),
            }
        }
    }
    missing
}
