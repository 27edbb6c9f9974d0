//! Starts real `strata-server` processes on loopback for tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a node may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `strata-server` child process.
pub struct TestNode {
    child: Option<Child>,
    /// Its data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// QUIC address.
    pub addr: SocketAddr,
    /// HTTP metrics address.
    pub metrics_addr: SocketAddr,
    /// SHA-256 fingerprint of its certificate, hex.
    pub fingerprint: String,
    extra_args: Vec<String>,
    /// Log lines the node wrote (stderr) after it was ready, as they arrive.
    pub logs: mpsc::Receiver<String>,
    /// Log lines up to and including "serving".
    pub startup_log: Vec<String>,
}

impl TestNode {
    /// Starts a node in `data_dir` on loopback ports chosen by the OS.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> TestNode {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir, "127.0.0.1:0".parse().unwrap(), extra_args)
    }

    fn spawn(data_dir: &Path, listen: SocketAddr, extra_args: Vec<String>) -> TestNode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata-server"))
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--listen",
                &listen.to_string(),
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(&extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata-server");
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        // Keep draining stderr so the node never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = TestNode {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            addr: listen,
            metrics_addr: listen,
            fingerprint: String::new(),
            extra_args,
            logs,
            startup_log: Vec::new(),
        };
        node.wait_ready();
        node
    }

    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() || metrics.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match self.logs.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!("node did not start; its log:\n{}", seen.join("\n")),
            };
            if let Some(rest) = line.split("metrics on http://").nth(1) {
                metrics = rest.split('/').next().and_then(|a| a.parse().ok());
            }
            if line.contains("strata node serving") {
                addr = field(&line, "listen=").and_then(|a| a.parse().ok());
                self.fingerprint = field(&line, "fingerprint=").unwrap_or_default();
            }
            seen.push(line);
        }
        self.addr = addr.unwrap();
        self.metrics_addr = metrics.unwrap();
        self.startup_log = seen;
    }

    /// The pid of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        child.wait().expect("wait for strata-server")
    }

    /// Starts the node again on the same data directory and QUIC port.
    pub fn restart(&mut self) {
        self.kill();
        let fresh = Self::spawn(&self.data_dir.clone(), self.addr, self.extra_args.clone());
        *self = fresh;
    }

    /// Fetches `/metrics` as text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics_addr).expect("connect to metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
    }
}

/// The value of `name=value` in a tracing text log line.
fn field(line: &str, name: &str) -> Option<String> {
    let rest = line.split(name).nth(1)?;
    Some(
        rest.split_whitespace()
            .next()?
            .trim_matches(',')
            .to_string(),
    )
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}
