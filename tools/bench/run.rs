//! Driving the load: the preload pass and the measured run, each as
//! `connections × inflight` tasks sharing one [`Target`] (a [`Client`] pool,
//! or a [`ClusterClient`] with a pool per primary), plus the once-a-second
//! progress loop.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata::cluster::client::ClusterClient;
use strata::net::client::{AckPolicy, Client, Entry, Limits, SetEntry, SetOptions, SetOutcome};
use tokio::task::JoinSet;

use crate::stats::{OpKind, Percentiles, Recorder, Samples, Tally, lock};
use crate::workload::{KeyChooser, KeySpace, Mix, Rng, check_value, make_value, mix64};

/// Above this many keys the run keeps no per-key record of acknowledged
/// versions (8 bytes a key), and verification checks content only.
pub const MAX_TRACKED_KEYS: u64 = 16 << 20;

/// Pause after a failed request, so that a refusing or unreachable server
/// (an open circuit breaker fails calls at once) does not turn the tasks
/// into busy loops.
const ERROR_PAUSE: Duration = Duration::from_millis(5);

/// Preload batches: at most this many bytes of keys and values.
const PRELOAD_BATCH_BYTES: usize = 128 << 10;
/// Preload batches: at most this many keys.
const PRELOAD_BATCH_KEYS: usize = 256;

/// Where the load goes: one node, or a cluster with keys routed to their
/// shards' primaries.
#[derive(Clone)]
pub enum Target {
    Node(Client),
    Cluster {
        cluster: ClusterClient,
        /// The seed node: its limits stand for every node's.
        seed: Client,
    },
}

impl Target {
    /// The limits requests are sized by.
    pub fn limits(&self) -> Limits {
        match self {
            Target::Node(c) | Target::Cluster { seed: c, .. } => c.server_info().limits,
        }
    }

    /// The shard `key` belongs to by the map the client now routes by (0
    /// for one node): versions are a shard's seqs, comparable only within
    /// one shard (a migration gives moved keys the receiver's).
    fn shard_of(&self, key: &[u8]) -> u32 {
        match self {
            Target::Node(_) => 0,
            Target::Cluster { cluster, .. } => cluster.shard_of(key).0,
        }
    }

    /// What routing has been through so far: the map version and the
    /// redirects followed (nothing for one node). Equal before and after a
    /// request, the shard its key maps to then is the shard that answered.
    fn routing_mark(&self) -> (u64, u64) {
        match self {
            Target::Node(_) => (0, 0),
            Target::Cluster { cluster, .. } => (cluster.map_version(), cluster.redirects()),
        }
    }

    async fn get(&self, key: Bytes) -> Result<Option<Entry>, String> {
        match self {
            Target::Node(c) => c.get(key).await.map_err(|e| e.to_string()),
            Target::Cluster { cluster, .. } => cluster.get(key).await.map_err(|e| e.to_string()),
        }
    }

    async fn set_with(
        &self,
        key: Bytes,
        value: Bytes,
        options: SetOptions,
    ) -> Result<SetOutcome, String> {
        match self {
            Target::Node(c) => c
                .set_with(key, value, options)
                .await
                .map_err(|e| e.to_string()),
            Target::Cluster { cluster, .. } => cluster
                .set_with(key, value, options)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Writes a batch; returns a version every entry is at or above.
    async fn set_many_with(
        &self,
        entries: Vec<SetEntry>,
        ack: Option<AckPolicy>,
    ) -> Result<u64, String> {
        match self {
            Target::Node(c) => c
                .set_many_with(entries, ack)
                .await
                .map(|r| r.version.0)
                .map_err(|e| e.to_string()),
            // NOTE: one part per shard, each at its own node's seq; the
            // smallest bounds them all (a weaker floor, never a false one).
            Target::Cluster { cluster, .. } => cluster
                .set_many_with(entries, ack)
                .await
                .map(|parts| parts.iter().map(|r| r.version.0).min().unwrap_or(0))
                .map_err(|e| e.to_string()),
        }
    }

    /// The node's `info`, for the hit ratio; `None` in cluster mode (one
    /// node's counters are not the cluster's).
    async fn info(&self) -> Option<Vec<(String, String)>> {
        match self {
            Target::Node(c) => c.info().await.ok(),
            Target::Cluster { .. } => None,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Target::Node(c) => c.close().await,
            Target::Cluster { cluster, .. } => cluster.close().await,
        }
    }
}

/// What to send.
#[derive(Debug)]
pub struct Workload {
    pub space: KeySpace,
    pub chooser: KeyChooser,
    pub mix: Mix,
    pub value_size: usize,
    /// Share of GETs whose answer is checked, in `[0, 1]`.
    pub verify_ratio: f64,
    /// For SETs; `None`: the server's default.
    pub ack: Option<AckPolicy>,
}

/// When the measured run ends.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    Elapsed(Duration),
    Requests(u64),
}

/// State shared by the request tasks of the measured run.
struct Shared {
    client: Target,
    workload: Arc<Workload>,
    /// Per key, the highest version a write of this run was acknowledged at
    /// and its shard ([`Floor`]; 0: none): a GET that starts after that
    /// acknowledgement must see that version or a newer one. Empty when
    /// nothing is verified or the key space is too large to track.
    acked: Arc<[AtomicU64]>,
    recorder: Recorder,
    /// Operations started before this are warmup: not recorded.
    measure_start: Instant,
    deadline: Option<Instant>,
    requests: Option<u64>,
    /// Measured requests started so far (for `Until::Requests`).
    issued: AtomicU64,
    /// Operations finished during warmup (for the progress line only).
    warmup_ops: AtomicU64,
    /// Set on Ctrl-C: tasks stop starting requests.
    stop: AtomicBool,
}

/// The version floor of one key: the shard that acknowledged it in the
/// top 16 bits, the version in the rest (a seq; 2^48 writes are beyond any
/// run).
struct Floor;

impl Floor {
    const SHARD_SHIFT: u32 = 48;

    fn pack(shard: u32, version: u64) -> u64 {
        (u64::from(shard) << Self::SHARD_SHIFT) | (version & ((1 << Self::SHARD_SHIFT) - 1))
    }

    fn unpack(packed: u64) -> (u32, u64) {
        (
            (packed >> Self::SHARD_SHIFT) as u32,
            packed & ((1 << Self::SHARD_SHIFT) - 1),
        )
    }

    /// Records a write acknowledged at `version` by `shard`: a higher
    /// version of the same shard raises the floor; another shard's (the
    /// key moved) replaces it, since the two shards' versions do not
    /// compare.
    fn raise(slot: &AtomicU64, shard: u32, version: u64) {
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
            let (old_shard, old_version) = Floor::unpack(old);
            let raise = old == 0 || old_shard != shard || version > old_version;
            raise.then(|| Floor::pack(shard, version))
        });
    }
}

/// A per-key table of acknowledged versions for `space`, empty when it is
/// not needed or too large.
pub fn acked_table(space: &KeySpace, verify_ratio: f64) -> Arc<[AtomicU64]> {
    if verify_ratio <= 0.0 || space.len() > MAX_TRACKED_KEYS {
        return Arc::from(Vec::new());
    }
    (0..space.len()).map(|_| AtomicU64::new(0)).collect()
}

/// What the preload did.
#[derive(Debug, Clone, Copy)]
pub struct PreloadReport {
    pub keys: u64,
    pub elapsed: Duration,
}

/// Writes every key once, `tasks` batches in flight, printing progress to
/// stderr unless `quiet`.
///
/// # Errors
///
/// A description of the failures when any batch failed.
pub async fn preload(
    client: &Target,
    workload: &Arc<Workload>,
    acked: &Arc<[AtomicU64]>,
    tasks: usize,
    seed: u64,
    quiet: bool,
) -> Result<PreloadReport, String> {
    let limits = client.limits();
    let entry_bytes = workload.space.key_size() + workload.value_size;
    let batch = (PRELOAD_BATCH_BYTES / entry_bytes.max(1))
        .min(PRELOAD_BATCH_KEYS)
        .min(limits.max_keys_per_request as usize)
        .min((limits.max_frame_bytes as usize / 2) / entry_bytes.max(1))
        .max(1) as u64;
    let total = workload.space.len();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for task in 0..tasks {
        let (client, workload, acked) = (client.clone(), workload.clone(), acked.clone());
        let (next, done, failures, first_error) = (
            next.clone(),
            done.clone(),
            failures.clone(),
            first_error.clone(),
        );
        let mut rng = Rng::new(mix64(seed ^ 0x5052_454c_4f41_4400 ^ task as u64));
        set.spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= total {
                    break;
                }
                let to = (from + batch).min(total);
                let entries: Vec<SetEntry> = (from..to)
                    .map(|i| {
                        let key = workload.space.key(i);
                        let value = make_value(&key, rng.next_u64() as u32, workload.value_size);
                        SetEntry {
                            key: Bytes::from(key),
                            value: Bytes::from(value),
                            ttl_ms: None,
                        }
                    })
                    .collect();
                let shards: Vec<u32> = entries.iter().map(|e| client.shard_of(&e.key)).collect();
                match client.set_many_with(entries, workload.ack).await {
                    Ok(version) => {
                        for (i, shard) in (from..to).zip(shards) {
                            if let Some(slot) = acked.get(i as usize) {
                                Floor::raise(slot, shard, version);
                            }
                        }
                        done.fetch_add(to - from, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        lock(&first_error).get_or_insert(e);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
        });
    }
    let mut line = ProgressLine::new(quiet);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(format!("a preload task failed: {e}")),
            },
            _ = ticker.tick() => {
                let n = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                line.show(&format!(
                    "preload: {n}/{total} keys ({:.0}%), {:.0} keys/s, {} failed batches",
                    n as f64 * 100.0 / total as f64,
                    n as f64 / secs,
                    failures.load(Ordering::Relaxed),
                ));
            }
        }
    }
    line.finish();
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        let first = lock(&first_error).clone().unwrap_or_default();
        return Err(format!(
            "preload failed: {failed} batches of up to {batch} keys were not written; \
             first error: {first}"
        ));
    }
    Ok(PreloadReport {
        keys: total,
        elapsed: started.elapsed(),
    })
}

/// The result of the measured run.
pub struct RunReport {
    pub totals: Tally,
    /// From the end of the warmup to the last answer.
    pub elapsed: Duration,
    pub samples: Samples,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    /// Operations answered during the warmup (not in `totals`): with
    /// them, the work the client's CPU time covers.
    pub warmup_ops: u64,
    /// Server `info` right after the warmup and right after the run.
    pub info_before: Option<Vec<(String, String)>>,
    pub info_after: Option<Vec<(String, String)>>,
}

/// How many tasks and for how long.
#[derive(Debug, Clone, Copy)]
pub struct RunPlan {
    pub tasks: usize,
    pub warmup: Duration,
    pub until: Until,
    pub seed: u64,
    pub quiet: bool,
}

/// Runs the workload: warmup, then the measured part, printing a progress
/// line every second.
///
/// # Errors
///
/// Only if a request task panicked.
pub async fn run(
    client: &Target,
    workload: Arc<Workload>,
    acked: Arc<[AtomicU64]>,
    plan: RunPlan,
) -> Result<RunReport, String> {
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let (deadline, requests) = match plan.until {
        Until::Elapsed(d) => (Some(measure_start + d), None),
        Until::Requests(n) => (None, Some(n)),
    };
    let shared = Arc::new(Shared {
        client: client.clone(),
        workload,
        acked,
        recorder: Recorder::new(plan.tasks),
        measure_start,
        deadline,
        requests,
        issued: AtomicU64::new(0),
        warmup_ops: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let mut set = JoinSet::new();
    for task in 0..plan.tasks {
        let seed = mix64(plan.seed ^ mix64(task as u64 + 1));
        set.spawn(worker(shared.clone(), task, seed));
    }

    let mut totals = Tally::new();
    let mut interval = Tally::new();
    let mut line = ProgressLine::new(plan.quiet);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut last_tick = Instant::now();
    let mut last_warmup_ops = 0;
    let mut info_before = None;
    let info_at = tokio::time::sleep_until(measure_start.into());
    tokio::pin!(info_at);
    let mut measuring = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(format!("a request task failed: {e}")),
            },
            () = &mut info_at, if !measuring => {
                // The measured part starts: progress intervals restart here.
                measuring = true;
                ticker.reset();
                last_tick = Instant::now();
                info_before = client.info().await;
            }
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                shared.stop.store(true, Ordering::Relaxed);
                line.show("interrupted: finishing the requests in flight");
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let secs = now.duration_since(last_tick).as_secs_f64();
                last_tick = now;
                shared.recorder.drain_into(&mut interval);
                totals.add(&interval);
                if !measuring {
                    let warm = shared.warmup_ops.load(Ordering::Relaxed);
                    line.show(&format!(
                        "[warmup {:>4.0}s] {:>9.0} ops/s",
                        now.duration_since(start).as_secs_f64(),
                        (warm - last_warmup_ops) as f64 / secs,
                    ));
                    last_warmup_ops = warm;
                } else {
                    line.show(&progress_text(
                        now.duration_since(measure_start),
                        &interval,
                        &totals,
                        secs,
                    ));
                }
                interval = Tally::new();
            }
        }
    }
    let end = Instant::now();
    shared.recorder.drain_into(&mut totals);
    line.finish();
    let info_after = if measuring { client.info().await } else { None };
    Ok(RunReport {
        totals,
        elapsed: end.saturating_duration_since(measure_start),
        samples: shared.recorder.samples(),
        interrupted,
        warmup_ops: shared.warmup_ops.load(Ordering::Relaxed),
        info_before,
        info_after,
    })
}

fn progress_text(at: Duration, interval: &Tally, totals: &Tally, secs: f64) -> String {
    let ops = interval.total(|c| c.ok);
    let mut text = format!(
        "[{:>6.0}s] {:>9.0} ops/s",
        at.as_secs_f64(),
        ops as f64 / secs
    );
    for kind in OpKind::ALL {
        if totals.counts(kind).ok > 0 {
            let p = Percentiles::of(totals.histogram(kind));
            text.push_str(&format!(" | {} p99 {}", kind.name(), micros(p.p99)));
        }
    }
    text.push_str(&format!(
        " | errors {} | mismatches {}",
        totals.total(|c| c.errors),
        totals.total(|c| c.mismatches)
    ));
    text
}

/// `812µs`, `1.93ms`, `2.1s`.
pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// One request task: draws an operation and a key, sends it, records it;
/// until the deadline, the request budget, or Ctrl-C.
async fn worker(shared: Arc<Shared>, task: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let set_options = match shared.workload.ack {
        Some(ack) => SetOptions::new().with_ack(ack),
        None => SetOptions::new(),
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if shared.deadline.is_some_and(|d| now >= d) {
            break;
        }
        let measured = now >= shared.measure_start;
        if measured
            && let Some(n) = shared.requests
            && shared.issued.fetch_add(1, Ordering::Relaxed) >= n
        {
            break;
        }
        let index = shared.workload.chooser.next(&mut rng);
        let failed = if shared.workload.mix.next_is_get(&mut rng) {
            let verify = rng.next_f64() < shared.workload.verify_ratio;
            get(&shared, task, index, verify, measured).await
        } else {
            let generation = rng.next_u64() as u32;
            set(&shared, task, index, generation, set_options, measured).await
        };
        if failed {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

/// One GET; records it if `measured`, checks the answer if `verify`.
/// Returns whether it failed.
async fn get(shared: &Shared, task: usize, index: u64, verify: bool, measured: bool) -> bool {
    let key = Bytes::from(shared.workload.space.key(index));
    // IMPORTANT: read the floor before sending: only writes acknowledged
    // before the GET started bind its answer.
    let floor = shared
        .acked
        .get(index as usize)
        .map_or(0, |v| v.load(Ordering::Acquire));
    let mark = shared.client.routing_mark();
    let started = Instant::now();
    let result = shared.client.get(key.clone()).await;
    let latency = started.elapsed();
    // Versions compare only when this read was answered by the floor's
    // shard: routing did not move meanwhile (no new map, no redirect, of
    // any task) and the key maps there. Otherwise the floor bounds nothing
    // but the key's existence.
    let (floor_shard, floor_version) = Floor::unpack(floor);
    let comparable =
        mark == shared.client.routing_mark() && floor_shard == shared.client.shard_of(&key);
    if !measured {
        shared.warmup_ops.fetch_add(1, Ordering::Relaxed);
        return result.is_err();
    }
    let entry = match result {
        Ok(entry) => entry,
        Err(e) => {
            lock(shared.recorder.shard(task))
                .counts_mut(OpKind::Get)
                .errors += 1;
            shared.recorder.note_error(OpKind::Get, e);
            return true;
        }
    };
    let bad = if !verify {
        None
    } else if let Some(e) = &entry {
        match check_value(&key, &e.value) {
            Err(bad) => Some(bad.0),
            Ok(()) if comparable && e.version.0 < floor_version => Some(format!(
                "key {}: read version {} after a write of this run was acknowledged at \
                 version {floor_version} (stale read)",
                String::from_utf8_lossy(&key),
                e.version.0
            )),
            Ok(()) => None,
        }
    } else if floor > 0 {
        Some(format!(
            "key {}: absent after a write of this run was acknowledged at version {floor_version}",
            String::from_utf8_lossy(&key)
        ))
    } else {
        None
    };
    {
        let mut tally = lock(shared.recorder.shard(task));
        tally.record_ok(OpKind::Get, latency);
        let counts = tally.counts_mut(OpKind::Get);
        if entry.is_some() {
            counts.hits += 1;
        } else {
            counts.misses += 1;
        }
        if verify {
            counts.verified += 1;
            counts.mismatches += u64::from(bad.is_some());
        }
    }
    if let Some(message) = bad {
        shared.recorder.note_mismatch(message);
    }
    false
}

/// One SET of a fresh value of `generation`; records it if `measured`.
/// Returns whether it failed.
async fn set(
    shared: &Shared,
    task: usize,
    index: u64,
    generation: u32,
    options: SetOptions,
    measured: bool,
) -> bool {
    let key = Bytes::from(shared.workload.space.key(index));
    let value = make_value(&key, generation, shared.workload.value_size);
    let mark = shared.client.routing_mark();
    let started = Instant::now();
    let result = shared
        .client
        .set_with(key.clone(), Bytes::from(value), options)
        .await;
    let latency = started.elapsed();
    // Warmup writes count here too: later reads are checked against them.
    // Recorded only when the shard that acknowledged it is known: routing
    // did not move during the write (see `get`).
    if let (Some(slot), Ok(SetOutcome::Written(reply))) =
        (shared.acked.get(index as usize), &result)
        && mark == shared.client.routing_mark()
    {
        Floor::raise(slot, shared.client.shard_of(&key), reply.version.0);
    }
    if !measured {
        shared.warmup_ops.fetch_add(1, Ordering::Relaxed);
        return !matches!(result, Ok(SetOutcome::Written(_)));
    }
    let error = match result {
        Ok(SetOutcome::Written(_)) => {
            lock(shared.recorder.shard(task)).record_ok(OpKind::Set, latency);
            return false;
        }
        Ok(SetOutcome::NotWritten { current_version }) => {
            format!("an unconditional set was answered NotWritten (key at {current_version:?})")
        }
        Err(e) => e,
    };
    lock(shared.recorder.shard(task))
        .counts_mut(OpKind::Set)
        .errors += 1;
    shared.recorder.note_error(OpKind::Set, error);
    true
}

/// The live line on stderr: rewritten in place on a terminal, one line per
/// update otherwise (logs, pipes).
struct ProgressLine {
    quiet: bool,
    tty: bool,
    shown: bool,
}

impl ProgressLine {
    fn new(quiet: bool) -> ProgressLine {
        ProgressLine {
            quiet,
            tty: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn show(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{text}")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
        self.shown = true;
    }

    fn finish(&mut self) {
        if self.tty && self.shown {
            eprintln!();
        }
        self.shown = false;
    }
}
