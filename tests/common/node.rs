//! Real `strata-server` processes on loopback for tests, through
//! `strata::harness` (feature `test-util`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use strata::harness::{NodeProcess, NodeSpec};

/// How long a node may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `strata-server` child process, SIGKILLed when dropped.
pub struct TestNode {
    process: NodeProcess,
    spec: NodeSpec,
    /// Its data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// QUIC address.
    pub addr: SocketAddr,
    /// HTTP metrics address.
    pub metrics_addr: SocketAddr,
    /// SHA-256 fingerprint of its certificate, hex.
    pub fingerprint: String,
    /// The RESP gateway's address, when started with `--resp-listen`.
    pub resp_addr: Option<SocketAddr>,
}

impl TestNode {
    /// Starts a node in `data_dir` on loopback ports chosen by the OS.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> TestNode {
        let spec =
            NodeSpec::new(env!("CARGO_BIN_EXE_strata-server"), data_dir).with_args(extra_args);
        Self::from_spec(spec)
    }

    fn from_spec(spec: NodeSpec) -> TestNode {
        let process = spec.start(START_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        let ready = process.ready().expect("started nodes are ready");
        TestNode {
            process,
            data_dir: spec.data_dir().to_path_buf(),
            spec,
            addr: ready.listen,
            metrics_addr: ready.metrics_listen.expect("the harness asks for metrics"),
            fingerprint: ready.fingerprint,
            resp_addr: ready.resp_listen,
        }
    }

    /// The pid of the running process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.process.terminate().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the node again on the same data directory and QUIC port.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::from_spec(self.spec.clone().with_listen(self.addr));
    }

    /// Every line the current process has logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.process.output().lines()
    }

    /// The first log line containing `needle` (an event the node reports),
    /// waiting for it; `within` only bounds a test that would otherwise hang.
    pub fn await_log(&self, needle: &str, within: Duration) -> String {
        self.process
            .output()
            .wait_for(needle, within)
            .unwrap_or_else(|| {
                panic!(
                    "{} never logged {needle:?}; its log ends:\n{}",
                    self.data_dir.display(),
                    self.process.output().tail(40)
                )
            })
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
