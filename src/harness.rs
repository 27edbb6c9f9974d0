//! Real `strata-server` processes for the integration tests and the crash
//! drills (feature `test-util`): one harness, so both start, watch and stop
//! nodes alike.
//!
//! A node is ready when it prints its [`Ready`] line (`--ready-json`): a
//! thread blocks on the stdout pipe for it, so readiness is an event, and
//! [`NodeProcess::wait_ready`] bounds the wait, failing with the log's
//! tail. Another thread drains stderr (the log) for the life of the
//! process into the [`Output`], so a node never stalls on a full pipe and
//! callers may still assert on what it logged. A node's pipes close when
//! it exits; that is the exit event the waits below use.
//!
//! The core is synchronous (most tests are plain `#[test]`s); the `_async`
//! variants run the same waits on tokio's blocking pool for the drill.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::ready::Ready;
use crate::sync::lock;

pub mod relay;

/// Log lines kept per process; past this the oldest go, so a long drill
/// does not grow without bound (start-up lines are long found by then).
const MAX_LOG_LINES: usize = 100_000;
/// How long a process that closed its pipes, or was killed, may take to
/// be reaped and hand over its last lines.
const EXIT_GRACE: Duration = Duration::from_secs(10);
/// Log lines quoted in an error.
const TAIL_LINES: usize = 40;

/// Starting, signalling or waiting for a node, or a tool it needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The program could not be run.
    #[error("running {program} for {label}: {source}")]
    Spawn {
        label: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The process ended (or closed stdout) before its ready line.
    #[error("{label} exited ({status}) before it was ready; its log ends:\n{tail}")]
    Exited {
        label: String,
        status: String,
        tail: String,
    },
    /// No ready line in time; the process was killed.
    #[error("{label} was not ready within {secs} s; its log ends:\n{tail}")]
    Timeout {
        label: String,
        secs: u64,
        tail: String,
    },
    /// The first stdout line was not a [`Ready`] line (a server without
    /// `--ready-json`, or another program); the process was killed.
    #[error("{label} printed {line:?}, not a ready line ({reason}); its log ends:\n{tail}")]
    NotReadyLine {
        label: String,
        line: String,
        reason: String,
        tail: String,
    },
    /// Signalling or reaping the process failed.
    #[error("{what} {label}: {source}")]
    Process {
        label: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A helper tool (`strata-admin`, `kill`) reported failure.
    #[error("{program} failed ({status}): {stderr}")]
    Tool {
        program: String,
        status: String,
        stderr: String,
    },
}

/// What a node would start with: program, data directory and flags.
/// Cheap to clone, so a restart is the same spec spawned again.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    program: PathBuf,
    data_dir: PathBuf,
    label: String,
    listen: SocketAddr,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    log_file: Option<PathBuf>,
}

impl NodeSpec {
    /// `program` (a `strata-server`) on `data_dir`, serving clients and
    /// metrics on loopback ports the OS picks. Labelled by the directory's
    /// name in errors.
    pub fn new(program: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> NodeSpec {
        let data_dir = data_dir.into();
        let label = data_dir
            .file_name()
            .map_or_else(|| "node".into(), |n| n.to_string_lossy().into_owned());
        NodeSpec {
            program: program.into(),
            data_dir,
            label,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            args: Vec::new(),
            env: Vec::new(),
            log_file: None,
        }
    }

    /// The name errors give the node.
    pub fn with_label(mut self, label: &str) -> NodeSpec {
        self.label = label.to_string();
        self
    }

    /// A fixed client address (a restart keeps its port this way).
    pub fn with_listen(mut self, listen: SocketAddr) -> NodeSpec {
        self.listen = listen;
        self
    }

    /// More flags, after the harness's own (`--data-dir`, `--listen`,
    /// `--metrics-listen`, `--ready-json`), which they must not repeat.
    pub fn with_args<I, S>(mut self, args: I) -> NodeSpec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets `key` in the node's environment, or with `None` removes it.
    pub fn with_env(mut self, key: &str, value: Option<&str>) -> NodeSpec {
        self.env.push((key.into(), value.map(OsString::from)));
        self
    }

    /// Also appends every log line to `path` (kept after the node is gone).
    pub fn with_log_file(mut self, path: impl Into<PathBuf>) -> NodeSpec {
        self.log_file = Some(path.into());
        self
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Spawns the process; does not wait for it to be ready.
    ///
    /// # Errors
    /// [`HarnessError::Spawn`] if the program cannot be run.
    pub fn spawn(&self) -> Result<NodeProcess, HarnessError> {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.listen.to_string())
            .args(["--metrics-listen", "127.0.0.1:0", "--ready-json"])
            .args(&self.args)
            // Only the flags above configure the node.
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_DATA_DIR")
            .env_remove("STRATA_CRASH_AT")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let spawn_error = |source| HarnessError::Spawn {
            label: self.label.clone(),
            program: self.program.display().to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let output = Output::default();
        let log_file = self.log_file.as_ref().and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(std::io::Error::other("no stdout/stderr pipe")));
        };
        let out = output.clone();
        std::thread::spawn(move || out.read_stdout(stdout));
        let out = output.clone();
        std::thread::spawn(move || out.read_stderr(stderr, log_file));
        Ok(NodeProcess {
            label: self.label.clone(),
            child,
            output,
            exit: None,
        })
    }

    /// Spawns the process and waits up to `within` for it to be ready.
    ///
    /// # Errors
    /// As [`NodeSpec::spawn`] and [`NodeProcess::wait_ready`].
    pub fn start(&self, within: Duration) -> Result<NodeProcess, HarnessError> {
        let mut process = self.spawn()?;
        process.wait_ready(within)?;
        Ok(process)
    }
}

/// One running (or ended) `strata-server` process; SIGKILLed when dropped,
/// so a failed test or drill leaves no node behind.
#[derive(Debug)]
pub struct NodeProcess {
    label: String,
    child: Child,
    output: Output,
    /// Set once the process is reaped.
    exit: Option<ExitStatus>,
}

impl NodeProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process has printed so far (shared with its reader threads).
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// The ready line, once it came.
    pub fn ready(&self) -> Option<Ready> {
        self.output.ready()
    }

    /// How the process ended, if it has been seen to.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// Blocks until the ready line, the process's end, or `within`.
    ///
    /// # Errors
    /// [`HarnessError::Exited`] if it ended first; [`HarnessError::Timeout`]
    /// or [`HarnessError::NotReadyLine`], after which it is killed.
    pub fn wait_ready(&mut self, within: Duration) -> Result<Ready, HarnessError> {
        let seen = self.output.wait_ready(within);
        self.settle_ready(seen, within)
    }

    /// [`NodeProcess::wait_ready`] without blocking the async runtime.
    ///
    /// # Errors
    /// As [`NodeProcess::wait_ready`].
    pub async fn wait_ready_async(&mut self, within: Duration) -> Result<Ready, HarnessError> {
        let output = self.output.clone();
        // A failed join (the runtime is shutting down) counts as no line.
        let seen = tokio::task::spawn_blocking(move || output.wait_ready(within))
            .await
            .unwrap_or(ReadyState::Pending);
        self.settle_ready(seen, within)
    }

    fn settle_ready(&mut self, seen: ReadyState, within: Duration) -> Result<Ready, HarnessError> {
        let label = self.label.clone();
        match seen {
            ReadyState::Ready(ready) => Ok(ready),
            ReadyState::Pending => {
                self.kill();
                Err(HarnessError::Timeout {
                    label,
                    secs: within.as_secs(),
                    tail: self.output.tail(TAIL_LINES),
                })
            }
            ReadyState::Missing => {
                let status = match self.wait_exit(EXIT_GRACE) {
                    Some(status) => status.to_string(),
                    None => {
                        self.kill();
                        "closed stdout without a ready line; killed".into()
                    }
                };
                let tail = self.output.tail(TAIL_LINES);
                Err(HarnessError::Exited {
                    label,
                    status,
                    tail,
                })
            }
            ReadyState::Invalid { line, reason } => {
                self.kill();
                Err(HarnessError::NotReadyLine {
                    label,
                    line,
                    reason,
                    tail: self.output.tail(TAIL_LINES),
                })
            }
        }
    }

    /// SIGKILL, and returns once the process is gone and reaped.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        // Its last lines, for whoever reports on it next.
        self.output.wait_closed(EXIT_GRACE);
    }

    /// SIGTERM (a graceful stop), and waits for the exit status.
    ///
    /// # Errors
    /// If `kill -TERM` fails or the process cannot be reaped.
    pub fn terminate(&mut self) -> Result<ExitStatus, HarnessError> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        // std has no SIGTERM, and the crate has no unsafe code for libc.
        let out = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Process {
                label: self.label.clone(),
                what: "signalling",
                source,
            })?;
        tool_status("kill", &out)?;
        let status = self.child.wait().map_err(|source| HarnessError::Process {
            label: self.label.clone(),
            what: "reaping",
            source,
        })?;
        self.exit = Some(status);
        Ok(status)
    }

    /// The exit status if the process has ended (reaping it), else `None`
    /// at once.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(status);
            // The lines it wrote last (a crash point's own).
            self.output.wait_closed(EXIT_GRACE);
        }
        self.exit
    }

    /// Waits up to `within` for the process to end by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let closed = self.output.wait_closed(within);
        self.reap(closed)
    }

    /// [`NodeProcess::wait_exit`] without blocking the async runtime.
    pub async fn wait_exit_async(&mut self, within: Duration) -> Option<ExitStatus> {
        let output = self.output.clone();
        let closed = tokio::task::spawn_blocking(move || output.wait_closed(within))
            .await
            .unwrap_or(false);
        self.reap(closed)
    }

    /// Reaps the process once its pipes closed (it is exiting).
    fn reap(&mut self, closed: bool) -> Option<ExitStatus> {
        if closed && self.exit.is_none() {
            self.exit = self.child.wait().ok();
        }
        self.try_exit()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where a process stands with its ready line.
#[derive(Debug, Clone, Default)]
enum ReadyState {
    /// Nothing on stdout yet.
    #[default]
    Pending,
    Ready(Ready),
    /// Stdout closed without a line: the process is gone or going.
    Missing,
    /// The first line was something else.
    Invalid {
        line: String,
        reason: String,
    },
}

#[derive(Debug, Default)]
struct State {
    ready: ReadyState,
    lines: VecDeque<String>,
    stdout_closed: bool,
    stderr_closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// What one process printed: its ready line and its log lines, filled by
/// the threads reading its pipes. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Output {
    shared: Arc<Shared>,
}

impl Output {
    /// The ready line, once it came.
    pub fn ready(&self) -> Option<Ready> {
        match &lock(&self.shared.state).ready {
            ReadyState::Ready(ready) => Some(ready.clone()),
            _ => None,
        }
    }

    /// Every log line kept so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.shared.state).lines.iter().cloned().collect()
    }

    /// The first log line containing `needle`, if one came yet.
    pub fn find(&self, needle: &str) -> Option<String> {
        find(&lock(&self.shared.state), needle)
    }

    /// The first log line containing `needle` since the process started,
    /// waiting for it up to `within`; `None` if none came in time or the
    /// process is gone.
    pub fn wait_for(&self, needle: &str, within: Duration) -> Option<String> {
        self.wait_until(within, |s| match find(s, needle) {
            Some(line) => Some(Some(line)),
            None if s.stderr_closed => Some(None),
            None => None,
        })
        .flatten()
    }

    /// The last `n` log lines, indented, for error reports.
    pub fn tail(&self, n: usize) -> String {
        let state = lock(&self.shared.state);
        let skip = state.lines.len().saturating_sub(n);
        let lines: Vec<String> = state
            .lines
            .iter()
            .skip(skip)
            .map(|l| format!("    {l}"))
            .collect();
        lines.join("\n")
    }

    /// Whether both pipes closed (the process is gone), waiting up to `within`.
    pub fn wait_closed(&self, within: Duration) -> bool {
        self.wait_until(within, |s| {
            (s.stdout_closed && s.stderr_closed).then_some(())
        })
        .is_some()
    }

    fn wait_ready(&self, within: Duration) -> ReadyState {
        self.wait_until(within, |s| match s.ready {
            ReadyState::Pending => None,
            ref seen => Some(seen.clone()),
        })
        .unwrap_or_default()
    }

    /// Blocks until `check` gives a value or `within` passes: the one
    /// wait, woken by every change the reader threads make.
    fn wait_until<T>(
        &self,
        within: Duration,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        // No deadline (an absurd `within`) waits for the event alone.
        let deadline = Instant::now().checked_add(within);
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(found) = check(&state) {
                return Some(found);
            }
            let left = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return None;
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut lock(&self.shared.state));
        self.shared.changed.notify_all();
    }

    fn push(&self, line: String) {
        self.update(|s| {
            if s.lines.len() == MAX_LOG_LINES {
                s.lines.pop_front();
            }
            s.lines.push_back(line);
        });
    }

    /// The stdout thread: the ready line first, then (never expected)
    /// anything else, kept with the log.
    fn read_stdout(&self, stdout: impl Read) {
        let mut first = true;
        each_line(stdout, |line| {
            if std::mem::take(&mut first) {
                let seen = match Ready::from_line(&line) {
                    Ok(ready) => ReadyState::Ready(ready),
                    Err(e) => ReadyState::Invalid {
                        line,
                        reason: e.to_string(),
                    },
                };
                self.update(|s| s.ready = seen);
            } else {
                self.push(format!("stdout: {line}"));
            }
        });
        self.update(|s| {
            s.stdout_closed = true;
            if matches!(s.ready, ReadyState::Pending) {
                s.ready = ReadyState::Missing;
            }
        });
    }

    /// The stderr thread: every log line, until the process is gone.
    fn read_stderr(&self, stderr: impl Read, mut file: Option<std::fs::File>) {
        each_line(stderr, |line| {
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            self.push(line);
        });
        self.update(|s| s.stderr_closed = true);
    }
}

fn find(state: &State, needle: &str) -> Option<String> {
    state.lines.iter().find(|l| l.contains(needle)).cloned()
}

/// Calls `f` with each line of `pipe` (lossy UTF-8, no newline) until EOF
/// or an error: never stops early, so the writer never blocks.
fn each_line(pipe: impl Read, mut f: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                f(line.trim_end_matches(['\n', '\r']).to_string());
            }
        }
    }
}

/// The flags that make a cluster node: its name, replication listener and
/// the certificates `strata-admin gen-certs` wrote to `certs`.
pub fn cluster_args(certs: &Path, name: &str, repl_listen: SocketAddr) -> Vec<String> {
    let file = |f: String| certs.join(f).display().to_string();
    vec![
        "--node-name".into(),
        name.into(),
        "--repl-listen".into(),
        repl_listen.to_string(),
        "--repl-ca".into(),
        file("ca.crt".into()),
        "--repl-cert".into(),
        file(format!("{name}.crt")),
        "--repl-key".into(),
        file(format!("{name}.key")),
    ]
}

/// Runs `admin gen-certs` (a `strata-admin`) for `nodes` into `dir`,
/// reusing the CA there if there is one.
///
/// # Errors
/// If the tool cannot be run or fails.
pub fn gen_certs(admin: &Path, dir: &Path, nodes: &[&str]) -> Result<(), HarnessError> {
    let mut cmd = Command::new(admin);
    cmd.arg("gen-certs").arg("--out").arg(dir);
    for node in nodes {
        cmd.args(["--node", node]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Spawn {
            label: "gen-certs".into(),
            program: admin.display().to_string(),
            source,
        })?;
    tool_status(&admin.display().to_string(), &out)
}

fn tool_status(program: &str, out: &std::process::Output) -> Result<(), HarnessError> {
    if out.status.success() {
        return Ok(());
    }
    Err(HarnessError::Tool {
        program: program.to_string(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A loopback UDP address that was free a moment ago: a fixed replication
/// address, so a restarted primary is found where its replicas look.
///
/// # Errors
/// If no loopback UDP socket can be bound.
pub fn free_udp_addr() -> std::io::Result<SocketAddr> {
    UdpSocket::bind("127.0.0.1:0")?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_read_whatever_its_bytes() {
        let mut lines = Vec::new();
        each_line(&b"one\r\n\xffbad\nlast"[..], |l| lines.push(l));
        assert_eq!(lines, ["one", "\u{fffd}bad", "last"]);
    }

    #[test]
    fn a_wait_ends_on_the_line_or_on_the_pipe_closing() {
        let output = Output::default();
        let writer = output.clone();
        let stderr = std::thread::spawn(move || {
            writer.read_stderr(&b"INFO starting\nINFO store opened replayed=0\n"[..], None)
        });
        let found = output.wait_for("store opened", Duration::from_secs(60));
        assert_eq!(found.as_deref(), Some("INFO store opened replayed=0"));
        stderr.join().unwrap();
        assert_eq!(
            output.wait_for("never logged", Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn stdout_closing_without_a_line_is_missing_not_pending() {
        let output = Output::default();
        output.read_stdout(&b""[..]);
        assert!(matches!(
            output.wait_ready(Duration::ZERO),
            ReadyState::Missing
        ));
        let output = Output::default();
        output.read_stdout(&b"hello\n"[..]);
        assert!(matches!(
            output.wait_ready(Duration::ZERO),
            ReadyState::Invalid { .. }
        ));
    }
}
