//! A deterministic simulation of one primary and its replicas, driving the
//! sans-io machines through seeded schedules of a hostile link: sessions
//! cut at any moment (each side noticing at its own time), messages of a
//! dead session delivered late, slow replicas, replica crashes that lose
//! what was not fsynced, retention running out, full syncs, clock jumps.
//!
//! After every step it checks I5 (a replica applies in order, no gap), I6
//! (a write's reply never claims more replicas than hold it: received for
//! `semi-sync`, fsynced for `sync`), and I7 (the WAL keeps what every held
//! replica needs; when replicas are gone for good, every hold goes).

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    AckMsg, Acked, Action, Phase, PrimaryConfig, PrimaryCore, Reached, ReplicaCore, SessionId,
    timed_out, verdict,
};
use crate::types::{AckPolicy, OnTimeout, Seq};
use crate::wal::{Mutation, WalRecord};

const REPLICAS: usize = 3;
const SILENCE_MS: u64 = 500;
const IDLE_MS: u64 = 5_000;

/// Frames from the primary to a replica.
#[derive(Debug)]
enum Down {
    /// `Welcome` with a start in the WAL after this seq.
    Stream(Seq),
    /// A snapshot up to this seq (a full sync, installed on arrival).
    Snapshot(Seq),
    Records(Vec<WalRecord>, Seq),
    Heartbeat(Seq),
}

/// Frames from a replica to the primary.
#[derive(Debug)]
enum Up {
    /// The snapshot up to this seq is installed.
    Installed(Seq),
    Ack(AckMsg),
}

/// One link session between the primary and replica `r`.
#[derive(Debug)]
struct Link {
    r: usize,
    id: SessionId,
    /// The primary still thinks it is up.
    primary_up: bool,
    /// The replica still thinks it is up.
    replica_up: bool,
    /// Cut: nothing more is delivered either way.
    cut: bool,
    down: VecDeque<Down>,
    up: VecDeque<Up>,
    /// The primary's next seq to send; `None` until it streams.
    next: Option<Seq>,
}

/// A replica's storage: what it has appended and what is fsynced.
#[derive(Debug, Default)]
struct ReplicaStore {
    applied: Seq,
    durable: Seq,
    /// The most it ever appended: a `semi-sync` ack is a claim about the
    /// moment it was sent, which a later crash (losing what was not
    /// fsynced) does not make false.
    ever_applied: Seq,
}

struct Waiter {
    seq: Seq,
    policy: AckPolicy,
    deadline: u64,
}

struct Sim {
    rng: StdRng,
    now: u64,
    core: PrimaryCore,
    /// The primary's WAL: seqs `first..=last` are kept.
    wal_first: Seq,
    last: Seq,
    holds: BTreeMap<String, Seq>,
    /// A full sync's own hold, while its snapshot is in flight.
    snapshot_holds: BTreeMap<SessionId, Seq>,
    replicas: Vec<(ReplicaCore, ReplicaStore)>,
    links: Vec<Link>,
    waiters: Vec<Waiter>,
    stats: Stats,
}

/// What the schedules exercised, so that a harness gone vacuous fails.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    /// `sync` writes acknowledged by at least one replica.
    sync_acked: u64,
    /// `semi-sync` writes acknowledged by their k replicas.
    semi_sync_acked: u64,
    /// Writes that timed out (degraded or failed).
    timed_out: u64,
    full_syncs: u64,
    refused_duplicates: u64,
    gaps: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.sync_acked += o.sync_acked;
        self.semi_sync_acked += o.semi_sync_acked;
        self.timed_out += o.timed_out;
        self.full_syncs += o.full_syncs;
        self.refused_duplicates += o.refused_duplicates;
        self.gaps += o.gaps;
    }
}

fn name(r: usize) -> String {
    format!("r{r}")
}

/// A one-mutation record at `seq` (what it holds does not matter here).
pub(super) fn record(seq: Seq) -> WalRecord {
    WalRecord {
        seq,
        mutations: vec![Mutation::Delete {
            key: bytes::Bytes::new(),
        }],
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            core: PrimaryCore::new(PrimaryConfig {
                stale_after_ms: SILENCE_MS * 2,
                retention_idle_ms: IDLE_MS,
                retention_bytes: 40,
            }),
            wal_first: Seq(1),
            last: Seq::ZERO,
            holds: BTreeMap::new(),
            snapshot_holds: BTreeMap::new(),
            replicas: (0..REPLICAS).map(|_| Default::default()).collect(),
            links: Vec::new(),
            waiters: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Hold { replica, from } => {
                    // I7: a hold never asks for what the WAL already dropped
                    // while the replica streams (it was taken before the check).
                    self.holds.insert(replica, from);
                }
                Action::Release { replica } => {
                    self.holds.remove(&replica);
                }
                Action::EndSession(id) => {
                    if let Some(link) = self.links.iter_mut().find(|l| l.id == id) {
                        link.cut = true;
                    }
                }
                Action::Publish(_) => {}
            }
        }
    }

    fn live_link(&self, r: usize) -> bool {
        self.links.iter().any(|l| l.r == r && l.replica_up)
    }

    /// The replica (re)connects: the primary opens a session, or refuses a
    /// duplicate; then streams from the WAL or sends a snapshot.
    fn connect(&mut self, r: usize) {
        let mut out = Vec::new();
        let Ok(id) = self.core.connect(&name(r), self.now, &mut out) else {
            self.stats.refused_duplicates += 1;
            self.apply(out);
            return;
        };
        self.apply(out);
        self.replicas[r].0.connecting(false);
        let position = self.replicas[r].1.applied;
        let mut link = Link {
            r,
            id,
            primary_up: true,
            replica_up: true,
            cut: false,
            down: VecDeque::new(),
            up: VecDeque::new(),
            next: None,
        };
        let mut out = Vec::new();
        // As the driver does: hold first, then check the WAL has the rest.
        if position.next() >= self.wal_first && position <= self.last {
            self.core.stream(id, position, self.now, &mut out);
            link.down.push_back(Down::Stream(position));
            link.next = Some(position.next());
        } else {
            self.stats.full_syncs += 1;
            self.core.full_sync(id, 100, self.now, &mut out);
            self.snapshot_holds.insert(id, self.last.next());
            link.down.push_back(Down::Snapshot(self.last));
        }
        self.apply(out);
        self.links.push(link);
    }

    /// The primary sends what a streaming session has not had yet.
    fn send(&mut self, i: usize) {
        let link = &mut self.links[i];
        let Some(next) = link.next else { return };
        if !link.primary_up || link.cut {
            return;
        }
        if next < self.wal_first {
            // The WAL lost what it needs: the session ends (a full sync next).
            link.primary_up = false;
            let mut out = Vec::new();
            self.core.disconnect(link.id, self.now, &mut out);
            self.apply(out);
            return;
        }
        if next > self.last {
            link.down.push_back(Down::Heartbeat(self.last));
            return;
        }
        let end = Seq((next.0 + self.rng.random_range(0..4)).min(self.last.0));
        let records = (next.0..=end.0).map(|s| record(Seq(s))).collect();
        link.down.push_back(Down::Records(records, self.last));
        link.next = Some(end.next());
    }

    /// The replica receives one frame.
    fn deliver_down(&mut self, i: usize) {
        let link = &mut self.links[i];
        if link.cut || !link.replica_up {
            return;
        }
        let Some(frame) = link.down.pop_front() else {
            return;
        };
        let (r, now) = (link.r, self.now);
        let (core, store) = &mut self.replicas[r];
        let ack = match frame {
            Down::Stream(after) => {
                assert_eq!(
                    after, store.applied,
                    "the primary streams from where the replica is"
                );
                Some(core.streaming(store.applied, store.durable, now))
            }
            Down::Snapshot(seq) => {
                // Installed whole and fsynced; then it streams after it.
                store.applied = seq;
                store.durable = seq;
                store.ever_applied = store.ever_applied.max(seq);
                link.up.push_back(Up::Installed(seq));
                link.up.push_back(Up::Ack(core.streaming(seq, seq, now)));
                return;
            }
            Down::Records(records, last) => match core.records(records, last, now) {
                Ok(records) => {
                    for rec in &records {
                        // I5: applied in order, no gap, nothing twice.
                        assert_eq!(
                            rec.seq,
                            store.applied.next(),
                            "gap or repeat on replica {r}"
                        );
                        store.applied = rec.seq;
                    }
                    store.ever_applied = store.ever_applied.max(store.applied);
                    Some(core.applied(store.applied))
                }
                Err(_) => {
                    self.stats.gaps += 1;
                    link.replica_up = false;
                    None
                }
            },
            Down::Heartbeat(last) => Some(core.heartbeat(last, now)),
        };
        if let Some(ack) = ack {
            link.up.push_back(Up::Ack(ack));
        }
    }

    /// The primary receives one ack.
    fn deliver_up(&mut self, i: usize) {
        let link = &mut self.links[i];
        let dead = link.cut || !link.primary_up;
        let Some(frame) = link.up.pop_front() else {
            return;
        };
        let id = link.id;
        let mut out = Vec::new();
        match frame {
            // A dead session's ack arriving late: the core must ignore it.
            Up::Ack(ack) => self
                .core
                .ack(id, ack.received, ack.durable, self.now, &mut out),
            Up::Installed(_) if dead => {}
            Up::Installed(seq) => {
                // The snapshot's hold hands over to the replica's own, then
                // streaming follows on.
                self.core.stream(id, seq, self.now, &mut out);
                self.snapshot_holds.remove(&id);
                self.links[i].next = Some(seq.next());
            }
        }
        self.apply(out);
    }

    fn cut(&mut self, i: usize) {
        self.links[i].cut = true;
    }

    /// One side of a cut link notices.
    fn notice(&mut self, i: usize) {
        let link = &mut self.links[i];
        if !link.cut {
            return;
        }
        if link.primary_up && self.rng.random_bool(0.5) {
            link.primary_up = false;
            let mut out = Vec::new();
            self.core.disconnect(link.id, self.now, &mut out);
            self.snapshot_holds.remove(&link.id);
            self.apply(out);
        } else if link.replica_up {
            link.replica_up = false;
            self.replicas[link.r].0.lost("cut".into());
        }
    }

    fn write(&mut self) {
        self.last = self.last.next();
        let timeout_ms = self.rng.random_range(50..2_000);
        let policy = match self.rng.random_range(0..4) {
            0 => AckPolicy::Async,
            1 => AckPolicy::Sync { timeout_ms },
            2 => AckPolicy::SemiSync {
                replicas: self.rng.random_range(1..=REPLICAS as u32),
                timeout_ms,
                on_timeout: OnTimeout::Degrade,
            },
            _ => AckPolicy::SemiSync {
                replicas: self.rng.random_range(1..=REPLICAS as u32),
                timeout_ms,
                on_timeout: OnTimeout::Fail,
            },
        };
        self.waiters.push(Waiter {
            seq: self.last,
            policy,
            deadline: self.now + timeout_ms,
        });
    }

    /// Writers whose acks arrived, or whose timeout passed, get their reply;
    /// I6 is checked against what the replicas really hold.
    fn reply(&mut self) {
        let reached = self.core.reached().clone();
        let now = self.now;
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            let outcome = match verdict(&reached, w.seq, w.policy) {
                Some(acked) => Some(Ok(acked)),
                None if now >= w.deadline => Some(timed_out(&reached, w.seq, w.policy)),
                None => None,
            };
            match outcome {
                Some(Ok(acked)) => self.check_claim(&w, acked),
                Some(Err(acked)) => {
                    self.stats.timed_out += 1;
                    self.check_count(&w, acked);
                }
                None => keep.push(w),
            }
        }
        self.waiters = keep;
    }

    /// I6: the replicas claimed hold the write now.
    fn check_claim(&mut self, w: &Waiter, acked: Acked) {
        self.check_count(w, acked.replicas);
        if acked.degraded {
            self.stats.timed_out += 1;
            return;
        }
        match w.policy {
            AckPolicy::SemiSync { replicas, .. } => {
                assert!(acked.replicas >= replicas, "semi-sync reply short of k");
                self.stats.semi_sync_acked += 1;
            }
            AckPolicy::Sync { .. } => {
                assert!(acked.replicas > 0, "a sync ack names no replica");
                self.stats.sync_acked += 1;
            }
            AckPolicy::Async => {}
        }
    }

    fn check_count(&self, w: &Waiter, claimed: u32) {
        let holding = self
            .replicas
            .iter()
            .filter(|(_, s)| match w.policy {
                AckPolicy::Sync { .. } => s.durable >= w.seq,
                _ => s.ever_applied >= w.seq,
            })
            .count() as u32;
        assert!(
            claimed <= holding,
            "seq {} ({:?}) claims {claimed} replicas, {holding} hold it",
            w.seq,
            w.policy
        );
    }

    /// The WAL drops what no hold needs (a checkpoint); I7 says a streaming
    /// replica's next record is never dropped.
    fn truncate(&mut self) {
        let keep_from = self
            .holds
            .values()
            .chain(self.snapshot_holds.values())
            .min()
            .copied()
            .unwrap_or(self.last.next());
        self.wal_first = self.wal_first.max(keep_from.min(self.last.next()));
        for (name, view) in self.core.replicas() {
            if view.phase == Phase::Streaming && view.held_from.is_some() {
                assert!(
                    view.received.next() >= self.wal_first,
                    "the WAL dropped what streaming replica {name} needs"
                );
            }
        }
    }

    fn crash_replica(&mut self, r: usize) {
        for link in self.links.iter_mut().filter(|l| l.r == r) {
            link.cut = true;
            link.replica_up = false;
        }
        let (core, store) = &mut self.replicas[r];
        // What was not fsynced is gone.
        store.applied = store.durable;
        core.lost("crashed".into());
    }

    fn step(&mut self) {
        let n = self.links.len();
        match self.rng.random_range(0..100) {
            0..=14 => self.write(),
            15..=39 if n > 0 => {
                let i = self.rng.random_range(0..n);
                self.send(i);
            }
            40..=59 if n > 0 => {
                let i = self.rng.random_range(0..n);
                self.deliver_down(i);
            }
            60..=74 if n > 0 => {
                let i = self.rng.random_range(0..n);
                self.deliver_up(i);
            }
            75..=79 => {
                let r = self.rng.random_range(0..REPLICAS);
                let (core, store) = &mut self.replicas[r];
                store.durable = store.applied;
                if let Some(ack) = core.durable(store.durable)
                    && let Some(link) = self
                        .links
                        .iter_mut()
                        .rev()
                        .find(|l| l.r == r && l.replica_up)
                {
                    link.up.push_back(Up::Ack(ack));
                }
            }
            80..=82 if n > 0 => {
                let i = self.rng.random_range(0..n);
                self.cut(i);
            }
            83..=86 if n > 0 => {
                let i = self.rng.random_range(0..n);
                self.notice(i);
            }
            87..=89 => {
                let r = self.rng.random_range(0..REPLICAS);
                if !self.live_link(r) {
                    self.connect(r);
                }
            }
            90 => {
                let r = self.rng.random_range(0..REPLICAS);
                self.crash_replica(r);
            }
            91..=93 => self.truncate(),
            _ => {
                // Time passes: mostly a little, sometimes a jump.
                self.now += if self.rng.random_bool(0.05) {
                    self.rng.random_range(1_000..20_000)
                } else {
                    self.rng.random_range(1..100)
                };
                for link in self.links.iter_mut().filter(|l| l.replica_up) {
                    let core = &mut self.replicas[link.r].0;
                    if core.check_silence(self.now, SILENCE_MS).is_err() {
                        link.replica_up = false;
                        core.lost("silent".into());
                    }
                }
                let mut out = Vec::new();
                // One byte a record: what a hold from `seq` keeps.
                let (last, first) = (self.last, self.wal_first);
                let wal_bytes_from = |seq: Seq| last.0.saturating_sub(seq.0.max(first.0));
                self.core.tick(self.now, wal_bytes_from, &mut out);
                self.apply(out);
            }
        }
        self.reply();
    }

    /// Everything stops; once replicas are gone past the idle limit, no
    /// hold may remain (I7), and every writer got its reply.
    fn finish(&mut self) {
        for i in 0..self.links.len() {
            self.links[i].cut = true;
            let mut out = Vec::new();
            self.core.disconnect(self.links[i].id, self.now, &mut out);
            self.apply(out);
        }
        self.snapshot_holds.clear();
        self.now += IDLE_MS + 1;
        let mut out = Vec::new();
        self.core.tick(self.now, |_| 0, &mut out);
        self.apply(out);
        assert!(self.holds.is_empty(), "holds left: {:?}", self.holds);
        self.now += 10_000;
        self.reply();
        assert!(self.waiters.is_empty());
        assert_eq!(self.core.reached(), &Reached::default());
    }
}

/// Thousands of seeded schedules; a failure names its seed, and
/// `STRATA_SIM_SEED` replays just that one.
#[test]
fn replication_holds_i5_i6_i7_under_seeded_schedules() {
    let seeds: Vec<u64> = match std::env::var("STRATA_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("STRATA_SIM_SEED is a number")],
        Err(_) => (0..3000).collect(),
    };
    let mut stats = Stats::default();
    for seed in seeds {
        let run = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed);
            for _ in 0..400 {
                sim.step();
            }
            sim.finish();
            sim.stats
        });
        match run {
            Ok(s) => stats += s,
            Err(_) => panic!("seed {seed} failed: STRATA_SIM_SEED={seed} replays it"),
        }
    }
    // The schedules exercised what they are for.
    if std::env::var("STRATA_SIM_SEED").is_err() {
        eprintln!("{stats:?}");
        assert!(
            stats.sync_acked > 1000 && stats.semi_sync_acked > 1000,
            "{stats:?}"
        );
        assert!(stats.timed_out > 100 && stats.full_syncs > 100, "{stats:?}");
        assert!(
            stats.refused_duplicates > 10 && stats.gaps == 0,
            "{stats:?}"
        );
    }
}
