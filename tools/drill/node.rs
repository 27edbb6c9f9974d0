//! Real `strata-server` processes for the drills.
//!
//! Each node runs from the built binary on loopback ports the OS picks;
//! its stderr is read on a thread, and the startup log says where it
//! listens, its certificate fingerprint, how many WAL records recovery
//! replayed and whether crash points are armed. A [`Node`] SIGKILLs its
//! process when dropped, and a [`Scratch`] directory removes itself, so an
//! interrupted or failed drill leaves nothing behind.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata::net::client::{Client, ClientConfig, ClientError, ErrorCode, ServerTrust};
use strata::net::tls::parse_fingerprint;
use tokio::sync::mpsc;

use crate::workload::wall_ms;

/// How long a node may take from spawn to "serving" (WAL replay included).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long replicas may take to match the primary once writes stop.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Log lines kept per node for error reports.
const LOG_TAIL: usize = 60;
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

/// Runs `strata-admin gen-certs` for `nodes` into `dir` (the CA there is
/// reused when it exists).
pub fn gen_certs(bins: &Binaries, dir: &Path, nodes: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new(&bins.admin);
    cmd.arg("gen-certs").arg("--out").arg(dir);
    for node in nodes {
        cmd.args(["--node", node]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bins.admin.display()))?;
    if !out.status.success() {
        bail!(
            "strata-admin gen-certs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A loopback UDP address that was free a moment ago: a fixed replication
/// address that survives restarts.
pub fn free_udp_addr() -> anyhow::Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding a probe UDP socket")?;
    Ok(socket.local_addr()?)
}

/// A node failed to come up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The process ended before it served.
    #[error("{name} exited ({status}) before serving; its log ends:\n{tail}")]
    Exited {
        name: String,
        status: String,
        tail: String,
    },
    /// No "serving" line in time.
    #[error("{name} did not serve within {secs} s; its log ends:\n{tail}")]
    Timeout {
        name: String,
        secs: u64,
        tail: String,
    },
    /// The process could not be spawned.
    #[error("spawning {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

struct Running {
    child: Child,
    logs: mpsc::UnboundedReceiver<String>,
    /// The log channel closed: the process is gone (or closed stderr).
    eof: bool,
}

/// One strata node: a data directory, its flags, and the process when running.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    /// The fixed replication address, for nodes in a cluster.
    pub repl_addr: Option<SocketAddr>,
    server: PathBuf,
    base_args: Vec<String>,
    running: Option<Running>,
    /// Client address and certificate fingerprint of the current process.
    pub addr: Option<SocketAddr>,
    pub fingerprint: String,
    /// `replayed_bytes=` (WAL bytes replayed) of the current process's
    /// "store opened" line.
    pub replayed: Option<u64>,
    /// The current process logged "crash point armed".
    pub crash_armed: bool,
    /// Crash points the processes of this node reported reaching.
    pub crash_points_hit: Vec<String>,
    tail: VecDeque<String>,
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
        Node {
            name: name.to_string(),
            dir,
            repl_addr,
            server: bins.server.clone(),
            base_args,
            running: None,
            addr: None,
            fingerprint: String::new(),
            replayed: None,
            crash_armed: false,
            crash_points_hit: Vec::new(),
            tail: VecDeque::new(),
        }
    }

    /// The flags that make a cluster node: name, replication listener and
    /// cluster certificates from `certs`.
    pub fn cluster_args(certs: &Path, name: &str, repl: SocketAddr) -> Vec<String> {
        let file = |f: String| certs.join(f).display().to_string();
        vec![
            "--node-name".into(),
            name.into(),
            "--repl-listen".into(),
            repl.to_string(),
            "--repl-ca".into(),
            file("ca.crt".into()),
            "--repl-cert".into(),
            file(format!("{name}.crt")),
            "--repl-key".into(),
            file(format!("{name}.key")),
        ]
    }

    /// Spawns the process (killing a running one first) with `extra` flags
    /// and, when set, `STRATA_CRASH_AT`; does not wait for it to serve.
    pub fn launch(&mut self, extra: &[String], crash_at: Option<&str>) -> Result<(), StartError> {
        self.kill();
        let mut cmd = Command::new(&self.server);
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--memory-bytes", NODE_MEMORY_BYTES])
            .args(&self.base_args)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match crash_at {
            Some(spec) => cmd.env("STRATA_CRASH_AT", spec),
            None => cmd.env_remove("STRATA_CRASH_AT"),
        };
        let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
            name: self.name.clone(),
            source,
        })?;
        #[expect(clippy::expect_used, reason = "the command pipes stderr")]
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, logs) = mpsc::unbounded_channel();
        // Every process of the node appends to `<dir>.log` (kept with
        // --keep-dirs).
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .ok();
        // Drains stderr for the life of the process so it never blocks on a
        // full pipe; ends at EOF (the process is gone).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.running = Some(Running {
            child,
            logs,
            eof: false,
        });
        self.addr = None;
        self.fingerprint.clear();
        self.replayed = None;
        self.crash_armed = false;
        Ok(())
    }

    fn absorb(&mut self, line: String) {
        if line.contains("strata node serving") {
            self.addr = field(&line, "listen").and_then(|a| a.parse().ok());
            self.fingerprint = field(&line, "fingerprint").unwrap_or_default();
        }
        if line.contains("store opened") {
            self.replayed = field(&line, "replayed_bytes").and_then(|n| n.parse().ok());
        }
        if line.contains("crash point armed") {
            self.crash_armed = true;
        }
        if let Some(rest) = line.split("crash point ").nth(1)
            && let Some(point) = rest.strip_suffix(" reached: aborting")
        {
            self.crash_points_hit.push(point.to_string());
        }
        if self.tail.len() == LOG_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// Where the node's processes log: `<dir>.log`.
    pub fn log_path(&self) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push(".log");
        self.dir.with_file_name(name)
    }

    /// Takes in the log lines written so far.
    fn drain(&mut self) {
        let mut lines = Vec::new();
        if let Some(r) = self.running.as_mut() {
            loop {
                match r.logs.try_recv() {
                    Ok(line) => lines.push(line),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        r.eof = true;
                        break;
                    }
                }
            }
        }
        for line in lines {
            self.absorb(line);
        }
    }

    /// The last log lines, for error reports.
    pub fn log_tail(&self) -> String {
        let skip = self.tail.len().saturating_sub(25);
        self.tail
            .iter()
            .skip(skip)
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the process logs that it serves.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.addr.is_some() && !self.fingerprint.is_empty() {
                return Ok(());
            }
            let Some(r) = self.running.as_mut() else {
                return Err(StartError::Exited {
                    name: self.name.clone(),
                    status: "not running".into(),
                    tail: self.log_tail(),
                });
            };
            if r.eof {
                let status = r
                    .child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                self.running = None;
                return Err(StartError::Exited {
                    name: self.name.clone(),
                    status,
                    tail: self.log_tail(),
                });
            }
            match tokio::time::timeout_at(deadline, r.logs.recv()).await {
                Ok(Some(line)) => self.absorb(line),
                Ok(None) => r.eof = true,
                Err(_) => {
                    self.kill();
                    return Err(StartError::Timeout {
                        name: self.name.clone(),
                        secs: timeout.as_secs(),
                        tail: self.log_tail(),
                    });
                }
            }
        }
    }

    /// Spawns the node and waits until it serves.
    pub async fn start(
        &mut self,
        extra: &[String],
        crash_at: Option<&str>,
    ) -> Result<(), StartError> {
        self.launch(extra, crash_at)?;
        self.wait_serving(START_TIMEOUT).await
    }

    /// Whether a process is running (as far as has been observed).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The exit status if the process has ended (reaping it), else `None`.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        self.drain();
        let r = self.running.as_mut()?;
        match r.child.try_wait() {
            Ok(Some(status)) => {
                // Collect what it wrote last (the crash point's own line).
                if let Some(mut r) = self.running.take() {
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while !r.eof && Instant::now() < deadline {
                        match r.logs.try_recv() {
                            Ok(line) => self.absorb(line),
                            Err(mpsc::error::TryRecvError::Empty) => {
                                std::thread::sleep(Duration::from_millis(5))
                            }
                            Err(mpsc::error::TryRecvError::Disconnected) => r.eof = true,
                        }
                    }
                }
                Some(status)
            }
            Ok(None) => None,
            Err(_) => None,
        }
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            if !self.is_running() || Instant::now() >= deadline {
                return None;
            }
            // Polled: a child's exit has no async notification without
            // tokio's process feature.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and wait for the process to be gone; returns when it was.
    pub fn kill(&mut self) -> Instant {
        self.drain();
        if let Some(mut r) = self.running.take() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        Instant::now()
    }

    /// A client pinned to the running process's certificate.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let addr = self
            .addr
            .with_context(|| format!("{} is not serving", self.name))?;
        let pin = parse_fingerprint(&self.fingerprint)
            .with_context(|| format!("{}: fingerprint {:?}", self.name, self.fingerprint))?;
        let config = ClientConfig::new(addr, ServerTrust::Pin(pin))
            .with_client_name("strata-drill")
            .with_connections(2)
            .with_connect_timeout(Duration::from_secs(5))
            .with_request_timeout(Duration::from_secs(5))
            .with_retries(0)
            .with_breaker_failures(0);
        Client::connect(config)
            .await
            .with_context(|| format!("connecting to {} at {addr}", self.name))
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

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
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
        let line = "INFO strata_server: strata node serving; clients: strata-cli --addr 127.0.0.1:5 --pin ab listen=127.0.0.1:5 fingerprint=ab data_dir=/d";
        assert_eq!(field(line, "listen").as_deref(), Some("127.0.0.1:5"));
        assert_eq!(field(line, "fingerprint").as_deref(), Some("ab"));
    }
}
