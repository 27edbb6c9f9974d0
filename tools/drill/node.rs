//! Real `strata-server` processes for the drills, through
//! `strata::harness`.
//!
//! Each node runs from the built binary on loopback ports the OS picks; it
//! says on stdout when it serves, where, and its certificate fingerprint
//! (`--ready-json`). What the drills learn beyond that comes from its log:
//! how many WAL bytes recovery replayed, whether crash points are armed
//! and which one it reached. A [`Node`]'s process is SIGKILLed when
//! dropped, and a [`Scratch`] directory removes itself, so an interrupted
//! or failed drill leaves nothing behind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata::harness::{HarnessError, NodeProcess, NodeSpec};
use strata::net::client::{Client, ClientConfig, ClientError, ErrorCode, ServerTrust};
use strata::net::tls::parse_fingerprint;

use crate::workload::wall_ms;

/// How long a node may take from spawn to serving (WAL replay included).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long replicas may take to match the primary once writes stop.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Memory tier of each drill node: small, several nodes share the machine.
const NODE_MEMORY_BYTES: &str = "33554432";

/// The binaries the drill runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub server: PathBuf,
    pub admin: PathBuf,
}

impl Binaries {
    /// `strata-server` and `strata-admin` in `dir`, or next to this executable.
    pub fn locate(dir: Option<&Path>) -> anyhow::Result<Binaries> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::current_exe()
                .context("locating the drill's own executable")?
                .parent()
                .context("the drill's executable has no directory")?
                .to_path_buf(),
        };
        let exe = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let bins = Binaries {
            server: exe("strata-server"),
            admin: exe("strata-admin"),
        };
        for bin in [&bins.server, &bins.admin] {
            if !bin.is_file() {
                bail!(
                    "{} not found; build every binary first \
                     (`cargo build --all-features --bins`, with --release for a release drill) \
                     or point --bin-dir at them",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A directory removed (with everything in it) when dropped, unless kept.
#[derive(Debug)]
pub struct Scratch {
    pub path: PathBuf,
    pub keep: bool,
}

impl Scratch {
    /// A fresh directory under the system temp dir.
    pub fn create(label: &str, keep: bool) -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "strata-drill-{label}-{}-{nanos:09}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch { path, keep })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One strata node: a data directory, its flags, and its latest process
/// (kept after it ends, for its log).
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    /// The fixed replication address, for nodes in a cluster.
    pub repl_addr: Option<SocketAddr>,
    spec: NodeSpec,
    process: Option<NodeProcess>,
    /// Crash points that earlier processes of this node reported reaching.
    earlier_crash_points: Vec<String>,
}

impl Node {
    /// A node (not started) in `dir` with `base_args` on every start.
    pub fn new(
        name: &str,
        dir: PathBuf,
        bins: &Binaries,
        base_args: Vec<String>,
        repl_addr: Option<SocketAddr>,
    ) -> Node {
        // Every process of the node appends to `<dir>.log` (kept with
        // --keep-dirs).
        let mut log = dir.file_name().unwrap_or_default().to_os_string();
        log.push(".log");
        let spec = NodeSpec::new(&bins.server, &dir)
            .with_label(name)
            .with_args(["--memory-bytes", NODE_MEMORY_BYTES])
            .with_args(base_args)
            .with_log_file(dir.with_file_name(log));
        Node {
            name: name.to_string(),
            dir,
            repl_addr,
            spec,
            process: None,
            earlier_crash_points: Vec::new(),
        }
    }

    /// Spawns the process (killing a running one first) with `extra` flags
    /// and, when set, `STRATA_CRASH_AT`; does not wait for it to serve.
    pub fn launch(&mut self, extra: &[String], crash_at: Option<&str>) -> Result<(), HarnessError> {
        self.kill();
        if let Some(old) = self.process.take() {
            self.earlier_crash_points.extend(crash_points(&old));
        }
        let spec = self
            .spec
            .clone()
            .with_args(extra)
            .with_env("STRATA_CRASH_AT", crash_at);
        self.process = Some(spec.spawn()?);
        Ok(())
    }

    /// Waits until the process prints its ready line.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        match self.process.as_mut() {
            Some(p) => p.wait_ready_async(timeout).await.map(|_| ()),
            None => Err(HarnessError::Exited {
                label: self.name.clone(),
                status: "never started".into(),
                tail: String::new(),
            }),
        }
    }

    /// Spawns the node and waits until it serves.
    pub async fn start(
        &mut self,
        extra: &[String],
        crash_at: Option<&str>,
    ) -> Result<(), HarnessError> {
        self.launch(extra, crash_at)?;
        self.wait_serving(START_TIMEOUT).await
    }

    /// Keeps the client address the current process got for every later
    /// start: a cluster names its nodes' client addresses in its map.
    pub fn keep_addr(&mut self) {
        if let Some(addr) = self.addr() {
            self.spec = self.spec.clone().with_listen(addr);
        }
    }

    /// Where the current process serves clients, once it is ready.
    pub fn addr(&self) -> Option<SocketAddr> {
        Some(self.process.as_ref()?.ready()?.listen)
    }

    /// WAL bytes the current process replayed at start ("store opened").
    pub fn replayed(&self) -> Option<u64> {
        let line = self.process.as_ref()?.output().find("store opened")?;
        field(&line, "replayed_bytes")?.parse().ok()
    }

    /// Whether the current process armed its crash points (a server built
    /// without them ignores `STRATA_CRASH_AT`).
    pub fn crash_armed(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|p| p.output().find("crash point armed").is_some())
    }

    /// Crash points the processes of this node reported reaching, in order.
    pub fn crash_points_hit(&self) -> Vec<String> {
        let mut hit = self.earlier_crash_points.clone();
        hit.extend(self.process.iter().flat_map(crash_points));
        hit
    }

    /// The last log lines of the current process, for error reports.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map_or_else(String::new, |p| p.output().tail(25))
    }

    /// Whether a process is running (as far as has been observed).
    pub fn is_running(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|p| p.exit_status().is_none())
    }

    /// The exit status if the process has ended (reaping it), else `None`.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        self.process.as_mut()?.try_exit()
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.as_mut()?.wait_exit_async(timeout).await
    }

    /// SIGKILL, and wait for the process to be gone; returns when it was.
    pub fn kill(&mut self) -> Instant {
        if let Some(p) = self.process.as_mut() {
            p.kill();
        }
        Instant::now()
    }

    /// A client pinned to the running process's certificate.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let ready = self
            .process
            .as_ref()
            .and_then(NodeProcess::ready)
            .with_context(|| format!("{} is not serving", self.name))?;
        let pin = parse_fingerprint(&ready.fingerprint)
            .with_context(|| format!("{}: fingerprint {:?}", self.name, ready.fingerprint))?;
        let config = ClientConfig::new(ready.listen, ServerTrust::Pin(pin))
            .with_client_name("strata-drill")
            .with_connections(2)
            .with_connect_timeout(Duration::from_secs(5))
            .with_request_timeout(Duration::from_secs(5))
            .with_retries(0)
            .with_breaker_failures(0);
        Client::connect(config)
            .await
            .with_context(|| format!("connecting to {} at {}", self.name, ready.listen))
    }

    /// Connects and pings until it answers (bounded by `timeout`).
    /// Fails at once if the process is gone.
    pub async fn ready_client(&mut self, timeout: Duration) -> anyhow::Result<Client> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                bail!(
                    "{} exited ({status}); its log ends:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if !self.is_running() {
                bail!("{} is not running", self.name);
            }
            let attempt = async {
                let c = self.client().await?;
                c.ping().await?;
                anyhow::Ok(c)
            };
            match attempt.await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("{} never answered a ping", self.name)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// The crash points a process reported reaching ("crash point NAME
/// reached: aborting", written just before it aborts).
fn crash_points(process: &NodeProcess) -> Vec<String> {
    process
        .output()
        .lines()
        .iter()
        .filter_map(|line| {
            let rest = line.split("crash point ").nth(1)?;
            Some(rest.strip_suffix(" reached: aborting")?.to_string())
        })
        .collect()
}

/// The value of `name=value` in a tracing text log line.
fn field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_end_matches(',').to_string())
}

/// `Info` pairs as a map.
pub async fn info(client: &Client) -> anyhow::Result<HashMap<String, String>> {
    Ok(client.info().await?.into_iter().collect())
}

/// A node's digest at a fixed expiry cutoff, as `(seq, keys, sha256)`;
/// `None` while it is installing a full sync (it answers `Unavailable`).
pub async fn digest(client: &Client, cutoff_ms: u64) -> anyhow::Result<Option<(u64, u64, String)>> {
    match client.digest(cutoff_ms).await {
        Ok(pairs) => {
            let d: HashMap<String, String> = pairs.into_iter().collect();
            let num = |k: &str| d.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            Ok(Some((
                num("seq"),
                num("keys"),
                d.get("sha256").cloned().unwrap_or_default(),
            )))
        }
        Err(ClientError::Server {
            code: ErrorCode::Unavailable,
            ..
        }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Waits until every replica's digest equals the primary's (writes have
/// stopped); returns the primary's `(seq, keys)`.
///
/// NOTE: the expiry cutoff lies beyond the whole wait. Compaction drops
/// expired entries at different moments on different nodes, so digests at
/// a cutoff in the past can differ between nodes holding the same writes;
/// with a future cutoff every entry is either left out everywhere or live
/// (and so kept) everywhere.
pub async fn converge(
    primary: &Client,
    replicas: &[(&str, &Client)],
) -> anyhow::Result<(u64, u64)> {
    let cutoff = wall_ms() + CONVERGE_TIMEOUT.as_millis() as u64 + 60_000;
    let want = digest(primary, cutoff)
        .await?
        .context("the primary answered its digest with Unavailable")?;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let mut got = Vec::new();
        for (name, r) in replicas {
            // A replica may be reconnecting: an error is "not yet".
            let d = digest(r, cutoff).await.ok().flatten();
            got.push((*name, d));
        }
        if got.iter().all(|(_, d)| d.as_ref() == Some(&want)) {
            return Ok((want.0, want.1));
        }
        if Instant::now() >= deadline {
            bail!(
                "replicas did not converge within {} s: primary at seq {} with {} keys ({}), replicas {:?}",
                CONVERGE_TIMEOUT.as_secs(),
                want.0,
                want.1,
                &want.2[..want.2.len().min(16)],
                got.iter()
                    .map(|(n, d)| format!(
                        "{n}: {}",
                        d.as_ref().map_or("unavailable".to_string(), |d| format!(
                            "seq {} keys {} {}",
                            d.0,
                            d.1,
                            &d.2[..d.2.len().min(16)]
                        ))
                    ))
                    .collect::<Vec<_>>()
            );
        }
        // Polled: convergence has no event a client can subscribe to.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the primary counts `replicas.len()` connected replicas and
/// every replica reports `streaming`.
pub async fn wait_streaming(
    primary: &Client,
    replicas: &[&Client],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut ok = info(primary)
            .await?
            .get("connected_replicas")
            .map(String::as_str)
            == Some(&replicas.len().to_string());
        for r in replicas {
            ok &= info(r)
                .await
                .ok()
                .and_then(|i| i.get("replication_state").cloned())
                == Some("streaming".to_string());
        }
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "replicas were not all streaming within {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a replica reports `streaming` (its full sync, if any, done).
pub async fn wait_replica_streaming(replica: &Client, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = info(replica)
            .await
            .ok()
            .and_then(|i| i.get("replication_state").cloned());
        if state.as_deref() == Some("streaming") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the replica was not streaming within {} s (last state {state:?})",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a replica noticed its primary is gone; returns its applied seq.
pub async fn link_down(client: &Client, timeout: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let i = info(client).await?;
        if i.get("replication_state").map(String::as_str) != Some("streaming") {
            return i
                .get("applied_seq")
                .and_then(|s| s.parse().ok())
                .context("info has no applied_seq");
        }
        if Instant::now() >= deadline {
            bail!(
                "the replica still reports streaming {} s after the kill",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_of_a_log_line() {
        let line = "2026-11-22T03:20:09Z  INFO strata: store opened dir=strata-data disk_applied=3 replayed=17 replayed_bytes=1700 last_seq=20";
        assert_eq!(field(line, "replayed").as_deref(), Some("17"));
        assert_eq!(field(line, "replayed_bytes").as_deref(), Some("1700"));
        assert_eq!(field(line, "seq"), None);
    }
}
