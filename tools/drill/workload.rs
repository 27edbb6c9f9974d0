//! The drill's write workload and its checker.
//!
//! Every write is recorded in a [`History`] before it is sent and updated
//! when its reply (or failure) arrives, so after a crash the drill knows,
//! for every key, the order of the writes issued to it and which of them
//! were acknowledged with a durability that promises to survive.
//!
//! Values are self-describing: `"{key}#{gen}#"` followed by filler derived
//! from the key and the generation (a number unique across the whole run),
//! so a value read back names the write it came from and a torn or mixed
//! value cannot pass for a whole one.
//!
//! Each writer owns its keys and has at most one write in flight, so the
//! writes to one key are totally ordered. A key read back must hold:
//! - (I2) a value written to that key, byte for byte, or nothing;
//! - (I1, I6) the latest promised write to it, or a later write (absence is
//!   a later write when a delete or an expiring TTL at or after the promised
//!   write explains it);
//! - (I4) nothing whose TTL has certainly run out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata::cluster::client::ClusterClient;
use strata::net::client::{
    AckPolicy, Client, ClientError, Durability, SetEntry, SetOptions, SetOutcome,
};
use tokio::task::JoinHandle;

/// Slack on TTL comparisons: the server rounds and stamps expiries in whole
/// milliseconds.
const TTL_SLACK_MS: u64 = 25;

/// Keys per batch when reading a node back.
const READ_BATCH: usize = 256;

/// How long a writer pauses after a failed write, so a dead node is not
/// hammered while the drill notices.
const ERROR_PAUSE: Duration = Duration::from_millis(25);

/// Unix time in milliseconds: the clock the server stamps expiries with.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// splitmix64: the seed mixer and filler generator.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed for one part of a scenario, from the scenario seed and labels.
pub fn derive_seed(seed: u64, labels: &[u64]) -> u64 {
    let mut state = seed;
    for label in labels {
        let mut l = *label;
        state ^= splitmix(&mut l);
        splitmix(&mut state);
    }
    splitmix(&mut state)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The value of write `gen` to `key`, `len` bytes long (at least its header).
pub fn value_for(key: &str, gen_: u64, len: u32) -> Bytes {
    let mut out = format!("{key}#{gen_}#").into_bytes();
    let mut state = fnv(key.as_bytes()) ^ gen_;
    while out.len() < len as usize {
        let word = splitmix(&mut state);
        for byte in word.to_le_bytes() {
            if out.len() < len as usize {
                out.push(b'a' + byte % 26);
            }
        }
    }
    Bytes::from(out)
}

/// The generation a value names, if it is shaped like one of ours for `key`.
fn parse_gen(key: &str, value: &[u8]) -> Option<u64> {
    let rest = value.strip_prefix(key.as_bytes())?.strip_prefix(b"#")?;
    let end = rest.iter().position(|b| *b == b'#')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Sets the key to the write's value, with an optional TTL.
    Set { len: u32, ttl_ms: Option<u64> },
    /// Deletes the key.
    Delete,
}

/// Where a write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sent, no answer yet.
    Pending,
    /// Acknowledged; `promised` when its durability promises it survives
    /// what the scenario does to the nodes.
    Acked { promised: bool, degraded: bool },
    /// Failed or cut off: it may or may not have been applied.
    Unknown,
}

/// One write issued by the drill.
#[derive(Debug, Clone)]
pub struct Write {
    key: u32,
    gen_: u64,
    op: Op,
    /// The acknowledgement it asked for (`None`: the server's default).
    ack: Option<AckPolicy>,
    /// Wall clock (ms) when it was sent and when its answer came.
    sent_ms: u64,
    done_ms: Option<u64>,
    state: State,
}

/// Every write of a scenario, by key, in issue order.
#[derive(Debug, Default)]
pub struct History {
    keys: Vec<String>,
    key_ids: HashMap<String, u32>,
    per_key: Vec<Vec<usize>>,
    writes: Vec<Write>,
    next_gen: u64,
    /// Acknowledged writes found missing, promised or not (counted once).
    lost_promised: BTreeSet<usize>,
    lost_unpromised: BTreeSet<usize>,
}

/// Totals over a history.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub acked: u64,
    pub promised: u64,
    pub degraded: u64,
    pub unknown: u64,
    pub lost_promised: u64,
    pub lost_unpromised: u64,
}

/// Writes of one acknowledgement mode.
#[derive(Debug, Default, Clone, Copy)]
pub struct ModeTally {
    pub acked: u64,
    /// Acknowledged with a promise, and found missing (violations).
    pub lost_promised: u64,
    /// Acknowledged without one (`async`, or degraded), and found missing.
    pub lost_unpromised: u64,
}

/// The name of an acknowledgement mode, for reports.
pub fn mode_name(ack: Option<AckPolicy>) -> &'static str {
    match ack {
        None => "default",
        Some(AckPolicy::Async) => "async",
        Some(AckPolicy::SemiSync { .. }) => "semi-sync",
        Some(AckPolicy::Sync { .. }) => "sync",
    }
}

/// What one read-back found wrong.
#[derive(Debug, Default)]
pub struct Findings {
    /// Keys read.
    pub keys: usize,
    /// Promised writes newly found missing (I1 / I6).
    pub lost: Vec<String>,
    /// Acknowledged, unpromised writes newly found missing (async loss).
    pub lost_unpromised: usize,
    /// When each of those that asked for `async` was acknowledged (wall
    /// clock, ms): the loss window.
    pub lost_unpromised_acked_ms: Vec<u64>,
    /// Values (or keys) that were never written (I2).
    pub invented: Vec<String>,
    /// Values returned after their TTL had certainly run out (I4).
    pub expired: Vec<String>,
}

impl History {
    fn key_id(&mut self, key: &str) -> u32 {
        if let Some(id) = self.key_ids.get(key) {
            return *id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(key.to_string());
        self.key_ids.insert(key.to_string(), id);
        self.per_key.push(Vec::new());
        id
    }

    /// Records a write about to be sent with `ack`; returns its id and,
    /// for a set, the value.
    pub fn begin(&mut self, key: &str, op: Op, ack: Option<AckPolicy>) -> (usize, Option<Bytes>) {
        let key_id = self.key_id(key);
        self.next_gen += 1;
        let gen_ = self.next_gen;
        let id = self.writes.len();
        self.writes.push(Write {
            key: key_id,
            gen_,
            op,
            ack,
            sent_ms: wall_ms(),
            done_ms: None,
            state: State::Pending,
        });
        self.per_key[key_id as usize].push(id);
        let value = match op {
            Op::Set { len, .. } => Some(value_for(key, gen_, len)),
            Op::Delete => None,
        };
        (id, value)
    }

    /// Records a write's answer.
    pub fn finish(&mut self, id: usize, state: State) {
        let w = &mut self.writes[id];
        w.state = state;
        w.done_ms = Some(wall_ms());
    }

    /// Marks every write still waiting for an answer as unknown (the load
    /// was cut off).
    pub fn cut_pending(&mut self) {
        let now = wall_ms();
        for w in &mut self.writes {
            if w.state == State::Pending {
                w.state = State::Unknown;
                w.done_ms = Some(now);
            }
        }
    }

    /// Every key written so far.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Counts over every write.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for w in &self.writes {
            match w.state {
                State::Acked { promised, degraded } => {
                    t.acked += 1;
                    t.promised += u64::from(promised);
                    t.degraded += u64::from(degraded);
                }
                State::Unknown | State::Pending => t.unknown += 1,
            }
        }
        t.lost_promised = self.lost_promised.len() as u64;
        t.lost_unpromised = self.lost_unpromised.len() as u64;
        t
    }

    /// Acknowledged and lost writes per acknowledgement mode asked for.
    pub fn by_mode(&self) -> BTreeMap<&'static str, ModeTally> {
        let mut out: BTreeMap<&'static str, ModeTally> = BTreeMap::new();
        for (id, w) in self.writes.iter().enumerate() {
            if let State::Acked { .. } = w.state {
                let tally = out.entry(mode_name(w.ack)).or_default();
                tally.acked += 1;
                tally.lost_promised += u64::from(self.lost_promised.contains(&id));
                tally.lost_unpromised += u64::from(self.lost_unpromised.contains(&id));
            }
        }
        out
    }

    fn describe(&self, id: usize) -> String {
        let w = &self.writes[id];
        let what = match w.op {
            Op::Set { ttl_ms: None, .. } => "set".to_string(),
            Op::Set {
                ttl_ms: Some(ttl), ..
            } => format!("set ttl {ttl} ms"),
            Op::Delete => "delete".to_string(),
        };
        format!("{} gen {} ({what})", self.keys[w.key as usize], w.gen_)
    }

    /// The position (among `key`'s writes) of the write whose value `bytes`
    /// is, if any: the whole value must match.
    fn identify(&self, key: &str, bytes: &[u8]) -> Option<usize> {
        let ids = &self.per_key[*self.key_ids.get(key)? as usize];
        let g = parse_gen(key, bytes)?;
        let pos = ids.iter().position(|id| self.writes[*id].gen_ == g)?;
        let w = &self.writes[ids[pos]];
        matches!(w.op, Op::Set { len, .. } if value_for(key, w.gen_, len).as_ref() == bytes)
            .then_some(pos)
    }

    /// I2 and I4 for one value read at `read_start_ms` (wall clock): it was
    /// written to `key`, whole, and its TTL has not certainly run out.
    /// Returns its position among the key's writes, `None` if it is invented.
    fn check_value(
        &self,
        key: &str,
        bytes: &[u8],
        read_start_ms: u64,
        out: &mut Findings,
    ) -> Option<usize> {
        let Some(pos) = self.identify(key, bytes) else {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]);
            out.invented.push(if self.key_ids.contains_key(key) {
                format!(
                    "{key}: a {}-byte value never written to it ({shown:?}...)",
                    bytes.len()
                )
            } else {
                format!("{key}: a key never written ({shown:?}...)")
            });
            return None;
        };
        let id = self.per_key[self.key_ids[key] as usize][pos];
        let w = &self.writes[id];
        if let Op::Set {
            ttl_ms: Some(ttl), ..
        } = w.op
        {
            // The server stamped the expiry no later than the answer (or the
            // moment the drill gave up on it).
            let latest_expiry = w.done_ms.unwrap_or(read_start_ms) + ttl;
            if read_start_ms > latest_expiry + TTL_SLACK_MS {
                out.expired.push(format!(
                    "{} returned {} ms after its TTL ran out",
                    self.describe(id),
                    read_start_ms - latest_expiry
                ));
            }
        }
        Some(pos)
    }

    /// A value (or key) found by a scan: I2 and I4 only.
    pub fn check_scanned(&self, key: &str, bytes: &[u8], read_start_ms: u64, out: &mut Findings) {
        self.check_value(key, bytes, read_start_ms, out);
    }

    /// Checks what a node returned for one key read between `read_start_ms`
    /// and `read_end_ms` (wall clock); `value` is `None` for an absent key.
    pub fn check(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        read_start_ms: u64,
        read_end_ms: u64,
        out: &mut Findings,
    ) {
        out.keys += 1;
        let observed = match value {
            None => None,
            Some(bytes) => match self.check_value(key, bytes, read_start_ms, out) {
                Some(pos) => Some(pos),
                // Invented: nothing to say about which write survived.
                None => return,
            },
        };
        let Some(&key_id) = self.key_ids.get(key) else {
            return;
        };
        let ids = &self.per_key[key_id as usize];
        // absent_ok[i]: some write at or after position i may have left the
        // key absent (a delete, or a TTL that may have run out).
        let mut absent_ok = vec![false; ids.len() + 1];
        for pos in (0..ids.len()).rev() {
            let w = &self.writes[ids[pos]];
            let may_vanish = match w.op {
                Op::Delete => true,
                Op::Set {
                    ttl_ms: Some(ttl), ..
                } => w.sent_ms + ttl <= read_end_ms + TTL_SLACK_MS,
                Op::Set { ttl_ms: None, .. } => false,
            };
            absent_ok[pos] = may_vanish || absent_ok[pos + 1];
        }
        let mut newly_lost = Vec::new();
        for (pos, id) in ids.iter().enumerate() {
            let State::Acked { promised, .. } = self.writes[*id].state else {
                continue;
            };
            let survived = match observed {
                Some(seen) => seen >= pos,
                None => absent_ok[pos],
            };
            if !survived {
                newly_lost.push((*id, promised));
            }
        }
        let seen = observed.map_or("absent".to_string(), |pos| {
            format!("gen {}", self.writes[ids[pos]].gen_)
        });
        for (id, promised) in newly_lost {
            if promised {
                if self.lost_promised.insert(id) {
                    let what = self.describe(id);
                    out.lost.push(format!("{what} acknowledged, read {seen}"));
                }
            } else if self.lost_unpromised.insert(id) {
                out.lost_unpromised += 1;
                let w = &self.writes[id];
                // The window is async's: a degraded write is acknowledged
                // only once its replica wait timed out.
                if w.ack == Some(AckPolicy::Async)
                    && let Some(ms) = w.done_ms
                {
                    out.lost_unpromised_acked_ms.push(ms);
                }
            }
        }
    }
}

/// What a write's reply promises, per scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promise {
    /// Every acknowledged write: the node is only ever killed (a process
    /// crash loses nothing under any fsync policy), or it is never killed.
    Acked,
    /// Only writes whose fsync completed before the reply (power loss).
    #[cfg(feature = "test-util")]
    Synced,
    /// `sync` / `semi-sync` writes that were not degraded (failover).
    Replicated,
}

/// What a write reached, as far as the drill can tell.
#[derive(Debug, Clone, Copy)]
struct Reached {
    /// Something was written (a delete of an absent key writes nothing).
    wrote: bool,
    /// An fsync covered it before the reply (what power loss spares).
    #[cfg_attr(
        not(feature = "test-util"),
        expect(dead_code, reason = "read by the power-loss drill only")
    )]
    synced: bool,
    durability: Option<Durability>,
}

impl Promise {
    fn state(self, r: Reached) -> State {
        let degraded = r.durability.is_some_and(|d| d.degraded);
        let promised = r.wrote
            && match self {
                Promise::Acked => true,
                #[cfg(feature = "test-util")]
                Promise::Synced => r.synced,
                Promise::Replicated => r.durability.is_some_and(|d| {
                    d.requested != AckPolicy::Async && !d.degraded && d.replicas_acked > 0
                }),
            };
        State::Acked { promised, degraded }
    }
}

/// Where writes and reads go.
#[derive(Clone)]
pub enum Target {
    /// A node over the network.
    Remote(Client),
    /// A sharded cluster, each key at its shard's primary.
    Cluster(Arc<ClusterClient>),
    /// A store in this process (power-loss drill).
    #[cfg(feature = "test-util")]
    Local(strata::store::Store),
}

fn client_err(e: ClientError) -> String {
    e.to_string()
}

fn set_options(ttl_ms: Option<u64>, ack: Option<AckPolicy>) -> SetOptions {
    let mut options = SetOptions::new();
    if let Some(ttl) = ttl_ms {
        options = options.with_ttl(Duration::from_millis(ttl));
    }
    if let Some(ack) = ack {
        options = options.with_ack(ack);
    }
    options
}

fn set_reached(outcome: Result<SetOutcome, String>) -> Result<Reached, String> {
    match outcome? {
        SetOutcome::Written(reply) => Ok(Reached {
            wrote: true,
            synced: reply.durability.local_synced,
            durability: Some(reply.durability),
        }),
        other => Err(format!("unconditional set answered {other:?}")),
    }
}

/// A delete of an absent key writes nothing (and reports no durability).
fn deleted_reached(durability: Option<Durability>) -> Reached {
    Reached {
        wrote: durability.is_some(),
        synced: durability.is_some_and(|d| d.local_synced),
        durability,
    }
}

impl Target {
    async fn write(
        &self,
        key: &str,
        op: Op,
        value: Option<Bytes>,
        ack: Option<AckPolicy>,
    ) -> Result<Reached, String> {
        let key = Bytes::copy_from_slice(key.as_bytes());
        match self {
            Target::Remote(client) => match op {
                Op::Set { ttl_ms, .. } => {
                    let options = set_options(ttl_ms, ack);
                    let value = value.unwrap_or_default();
                    set_reached(
                        client
                            .set_with(key, value, options)
                            .await
                            .map_err(client_err),
                    )
                }
                Op::Delete => client
                    .delete(key)
                    .await
                    .map(|d| deleted_reached(d.durability))
                    .map_err(client_err),
            },
            Target::Cluster(cluster) => match op {
                Op::Set { ttl_ms, .. } => {
                    let options = set_options(ttl_ms, ack);
                    let value = value.unwrap_or_default();
                    let written = cluster.set_with(key, value, options).await;
                    set_reached(written.map_err(|e| e.to_string()))
                }
                Op::Delete => cluster
                    .delete(key)
                    .await
                    .map(|d| deleted_reached(d.durability))
                    .map_err(|e| e.to_string()),
            },
            #[cfg(feature = "test-util")]
            Target::Local(store) => {
                use strata::store::WriteOutcome;
                use strata::types::Condition;
                let outcome = match op {
                    Op::Set { ttl_ms, .. } => {
                        store
                            .set(
                                key,
                                value.unwrap_or_default(),
                                ttl_ms.map(Duration::from_millis),
                                Condition::Always,
                            )
                            .await
                    }
                    Op::Delete => store.delete(key, Condition::Always).await,
                };
                match outcome {
                    Ok(WriteOutcome::Written(ack)) => Ok(Reached {
                        wrote: true,
                        synced: ack.synced,
                        durability: None,
                    }),
                    Ok(_) => Ok(Reached {
                        wrote: false,
                        synced: false,
                        durability: None,
                    }),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Writes `entries` in one request per shard (preloads).
    async fn set_many(&self, entries: Vec<SetEntry>) -> Result<(), String> {
        match self {
            Target::Remote(client) => client
                .set_many_with(entries, None)
                .await
                .map(|_| ())
                .map_err(client_err),
            Target::Cluster(cluster) => cluster
                .set_many_with(entries, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            #[cfg(feature = "test-util")]
            Target::Local(_) => Err("preloads go to a node".into()),
        }
    }

    /// Reads `keys`: one slot per key.
    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, String> {
        let keys: Vec<Bytes> = keys
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect();
        match self {
            Target::Remote(client) => client
                .get_many(keys)
                .await
                .map(|v| v.into_iter().map(|e| e.map(|e| e.value)).collect())
                .map_err(client_err),
            Target::Cluster(cluster) => cluster
                .get_many(keys)
                .await
                .map(|v| v.into_iter().map(|e| e.map(|e| e.value)).collect())
                .map_err(|e| e.to_string()),
            #[cfg(feature = "test-util")]
            Target::Local(store) => store
                .get_many(&keys)
                .await
                .map(|v| v.into_iter().map(|e| e.map(|e| e.value)).collect())
                .map_err(|e| e.to_string()),
        }
    }

    /// Every live key with its value, page by page.
    async fn scan_all(&self) -> Result<Vec<(Bytes, Bytes)>, String> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (entries, next) = match self {
                Target::Remote(client) => {
                    let page = client
                        .scan(Bytes::new(), cursor, 1000)
                        .await
                        .map_err(client_err)?;
                    (values(page.entries, |e| e.value), page.next_cursor)
                }
                Target::Cluster(cluster) => {
                    let page = cluster
                        .scan(Bytes::new(), cursor, 1000)
                        .await
                        .map_err(|e| e.to_string())?;
                    (values(page.entries, |e| e.value), page.next_cursor)
                }
                #[cfg(feature = "test-util")]
                Target::Local(store) => {
                    let page = store
                        .scan(Bytes::new(), cursor, 1000)
                        .await
                        .map_err(|e| e.to_string())?;
                    (values(page.entries, |e| e.value), page.next_cursor)
                }
            };
            out.extend(entries);
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }
}

/// A scan page's entries as key and value.
fn values<E>(entries: Vec<(Bytes, E)>, value: impl Fn(E) -> Bytes) -> Vec<(Bytes, Bytes)> {
    entries.into_iter().map(|(k, e)| (k, value(e))).collect()
}

/// Reads every key of `history` back from `target` (and scans for keys the
/// drill never wrote) and checks them.
pub async fn verify(target: &Target, history: &Mutex<History>) -> Result<Findings, String> {
    let keys = lock(history).keys().to_vec();
    let mut findings = Findings::default();
    for batch in keys.chunks(READ_BATCH) {
        let start = wall_ms();
        let values = target.read(batch).await?;
        let end = wall_ms();
        let mut h = lock(history);
        for (key, value) in batch.iter().zip(&values) {
            h.check(key, value.as_deref(), start, end, &mut findings);
        }
    }
    // Keys never written; a scan must not return expired entries either.
    let start = wall_ms();
    let entries = target.scan_all().await?;
    let h = lock(history);
    for (key, value) in &entries {
        h.check_scanned(&String::from_utf8_lossy(key), value, start, &mut findings);
    }
    Ok(findings)
}

pub use strata::sync::lock;

/// The shape of the load: key spaces and who writes with which policy.
#[derive(Debug, Clone)]
pub struct Workload {
    /// One entry per writer: its acknowledgement policy (`None`: the
    /// server's default).
    pub policies: Vec<Option<AckPolicy>>,
    /// What an acknowledgement promises.
    pub promise: Promise,
    /// Keys per writer without TTL (overwritten and deleted).
    pub plain_keys: u32,
    /// Keys per writer with a TTL far beyond the drill.
    pub long_ttl_keys: u32,
    /// Keys per writer with TTLs of 100 ms to 3 s.
    pub short_ttl_keys: u32,
}

impl Workload {
    /// `writers` writers with the same policy.
    pub fn uniform(writers: usize, policy: Option<AckPolicy>, promise: Promise) -> Workload {
        Workload {
            policies: vec![policy; writers.max(1)],
            promise,
            plain_keys: 150,
            long_ttl_keys: 20,
            short_ttl_keys: 30,
        }
    }
}

/// Running writer tasks.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    history: Arc<Mutex<History>>,
}

impl Load {
    /// Starts one task per writer of `workload` against `target`.
    pub fn start(
        target: Target,
        workload: &Workload,
        history: Arc<Mutex<History>>,
        seed: u64,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = workload
            .policies
            .iter()
            .enumerate()
            .map(|(w, policy)| {
                let rng = StdRng::seed_from_u64(derive_seed(seed, &[w as u64]));
                tokio::spawn(writer(
                    target.clone(),
                    workload.clone(),
                    *policy,
                    w,
                    rng,
                    history.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Load {
            stop,
            tasks,
            history,
        }
    }

    /// Stops the writers: each finishes its write in flight, or is cut off
    /// after `grace` (its write's outcome is then unknown).
    pub async fn stop(self, grace: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        lock(&self.history).cut_pending();
    }
}

/// Sends one write through `target`, recorded in `history`; whether it
/// was acknowledged.
pub async fn write_recorded(
    target: &Target,
    history: &Mutex<History>,
    key: &str,
    op: Op,
    ack: Option<AckPolicy>,
    promise: Promise,
) -> bool {
    // IMPORTANT: recorded before it is sent, so a write cut off by a
    // crash is known to be possibly applied.
    let (id, value) = lock(history).begin(key, op, ack);
    let result = target.write(key, op, value, ack).await;
    let acked = result.is_ok();
    let state = match result {
        Ok(reached) => promise.state(reached),
        Err(_) => State::Unknown,
    };
    lock(history).finish(id, state);
    acked
}

async fn writer(
    target: Target,
    workload: Workload,
    policy: Option<AckPolicy>,
    w: usize,
    mut rng: StdRng,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let roll = rng.random_range(0..100u32);
        let len = rng.random_range(24..1500u32);
        let (key, op) = if roll < 70 {
            let k = rng.random_range(0..workload.plain_keys);
            (format!("p{w}-{k:04}"), Op::Set { len, ttl_ms: None })
        } else if roll < 78 {
            let k = rng.random_range(0..workload.long_ttl_keys);
            let ttl_ms = Some(600_000);
            (format!("t{w}-{k:04}"), Op::Set { len, ttl_ms })
        } else if roll < 94 {
            let k = rng.random_range(0..workload.short_ttl_keys);
            let ttl_ms = Some(rng.random_range(100..3000u64));
            (format!("s{w}-{k:04}"), Op::Set { len, ttl_ms })
        } else {
            let k = rng.random_range(0..workload.plain_keys);
            (format!("p{w}-{k:04}"), Op::Delete)
        };
        if !write_recorded(&target, &history, &key, op, policy, workload.promise).await {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

/// Writes `count` keys of `value_bytes` each (`bulk-NNNNNN`) through
/// `client`, `batch` at a time per request, from `tasks` tasks: a data set
/// for a full sync. Every entry is recorded in `history`.
pub async fn preload(
    target: &Target,
    history: &Arc<Mutex<History>>,
    count: u32,
    value_bytes: u32,
    batch: u32,
    tasks: u32,
) -> Result<(), String> {
    let mut handles: Vec<JoinHandle<Result<(), String>>> = Vec::new();
    for t in 0..tasks {
        let (target, history) = (target.clone(), history.clone());
        handles.push(tokio::spawn(async move {
            let mut i = t * batch;
            while i < count {
                let end = (i + batch).min(count);
                let mut ids = Vec::new();
                let mut entries = Vec::new();
                {
                    let mut h = lock(&history);
                    for k in i..end {
                        let key = format!("bulk-{k:06}");
                        let op = Op::Set {
                            len: value_bytes,
                            ttl_ms: None,
                        };
                        let (id, value) = h.begin(&key, op, None);
                        ids.push(id);
                        entries.push(SetEntry {
                            key: Bytes::from(key),
                            value: value.unwrap_or_default(),
                            ttl_ms: None,
                        });
                    }
                }
                let result = target.set_many(entries).await;
                let mut h = lock(&history);
                for id in ids {
                    h.finish(
                        id,
                        match result {
                            Ok(_) => State::Acked {
                                promised: true,
                                degraded: false,
                            },
                            Err(_) => State::Unknown,
                        },
                    );
                }
                result.map_err(|e| format!("preload: {e}"))?;
                i += batch * tasks;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.await.map_err(|e| format!("preload task: {e}"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(h: &mut History, key: &str, op: Op, promised: bool) -> usize {
        let (id, _) = h.begin(key, op, None);
        h.finish(
            id,
            State::Acked {
                promised,
                degraded: false,
            },
        );
        id
    }

    const SET: Op = Op::Set {
        len: 64,
        ttl_ms: None,
    };

    #[test]
    fn values_name_their_write() {
        let v = value_for("p1-0003", 42, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(parse_gen("p1-0003", &v), Some(42));
        assert_eq!(parse_gen("p1-0004", &v), None);
    }

    #[test]
    fn checker_classifies_reads() {
        let mut h = History::default();
        acked(&mut h, "k", SET, true);
        let second = acked(&mut h, "k", SET, true);
        let gen2 = h.writes[second].gen_;
        let now = wall_ms();
        let mut f = Findings::default();
        h.check("k", Some(&value_for("k", gen2, 64)), now, now, &mut f);
        assert!(f.lost.is_empty() && f.invented.is_empty());
        // The older value: the promised second write is lost.
        let gen1 = h.writes[0].gen_;
        h.check("k", Some(&value_for("k", gen1, 64)), now, now, &mut f);
        assert_eq!(f.lost.len(), 1);
        // Absent, with no delete or TTL to explain it: the first write is
        // lost now too; the second is not counted again.
        h.check("k", None, now, now, &mut f);
        assert_eq!(f.lost.len(), 2);
        // A torn value and an unknown key are inventions.
        let mut torn = value_for("k", gen2, 64).to_vec();
        torn[40] ^= 1;
        h.check("k", Some(&torn), now, now, &mut f);
        h.check("zz", Some(b"x"), now, now, &mut f);
        assert_eq!(f.invented.len(), 2);
    }

    #[test]
    fn deletes_and_ttls_explain_absence() {
        let mut h = History::default();
        acked(&mut h, "a", SET, true);
        acked(&mut h, "a", Op::Delete, true);
        let ttl = Op::Set {
            len: 64,
            ttl_ms: Some(100),
        };
        let t = acked(&mut h, "t", ttl, true);
        let now = wall_ms();
        let mut f = Findings::default();
        h.check("a", None, now, now, &mut f);
        // Absent long after the TTL: fine. Present long after: expired (I4).
        h.check("t", None, now + 1000, now + 1000, &mut f);
        assert!(f.lost.is_empty(), "{:?}", f.lost);
        let v = value_for("t", h.writes[t].gen_, 64);
        h.check("t", Some(&v), now + 1000, now + 1000, &mut f);
        assert_eq!(f.expired.len(), 1);
    }
}
