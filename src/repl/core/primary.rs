//! The primary's replication state, sans-io: which replicas it has, what
//! each acknowledged, what the WAL must keep for them (I7), and the one
//! published [`Reached`] that writers waiting for acks compare against
//! (I6). The async tasks in `repl::primary` feed it events and carry out
//! the actions it returns; time comes in with the events, so a simulation
//! can drive it deterministically.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::types::Seq;

/// Names one session of one replica; a reconnect gets a new one, so events
/// of a session that is gone are told apart and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// How a replica stands, as the primary sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its session is set up but it has not been told where it starts.
    Handshake,
    /// Receiving a snapshot: never counted for acks.
    FullSync {
        /// Bytes sent so far.
        done: u64,
        /// Bytes in the snapshot.
        total: u64,
        /// When it started, ms on the caller's clock.
        started_ms: u64,
    },
    /// Following the WAL: counted for acks.
    Streaming,
    /// Not connected; its WAL hold lasts until the retention limits.
    Disconnected,
}

impl ReplicaView {
    fn set_phase(&mut self, phase: Phase, now_ms: u64) {
        if std::mem::discriminant(&phase) != std::mem::discriminant(&self.phase) {
            self.phase_since_ms = now_ms;
        }
        self.phase = phase;
    }
}

impl Phase {
    /// Its name in `info` and in the metrics' `phase` label.
    pub const fn name(&self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::FullSync { .. } => "full_sync",
            Phase::Streaming => "streaming",
            Phase::Disconnected => "disconnected",
        }
    }
}

/// One replica.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    /// Its phase.
    pub phase: Phase,
    /// The last seq it said it has received (appended to its WAL).
    pub received: Seq,
    /// The last seq it said is fsynced in its WAL.
    pub durable: Seq,
    /// The seq from which the WAL is held for it, if it is.
    pub held_from: Option<Seq>,
    /// When it was last heard from, ms.
    pub last_seen_ms: u64,
    /// When its phase last changed, ms: how long a replica of the in-sync
    /// set has been away.
    pub phase_since_ms: u64,
    session: SessionId,
}

/// What the counted replicas have reached, published once per change.
/// `received[k - 1]` is the highest seq that at least `k` counted
/// replicas received; `durable` likewise for fsynced.
///
/// Counted are the streaming replicas of a lone replica group, or every
/// member of a cluster shard's committed in-sync set, streaming or not: a
/// member that is away counts as having reached nothing, so a `sync`
/// write waits for it until its removal from the set is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reached {
    received: Vec<Seq>,
    durable: Vec<Seq>,
}

impl Reached {
    /// Replicas whose acks count.
    pub fn counted(&self) -> u32 {
        self.received.len() as u32
    }

    /// Counted replicas that received `seq`.
    pub fn received(&self, seq: Seq) -> u32 {
        self.received.iter().take_while(|s| **s >= seq).count() as u32
    }

    /// Counted replicas that made `seq` durable.
    pub fn durable(&self, seq: Seq) -> u32 {
        self.durable.iter().take_while(|s| **s >= seq).count() as u32
    }

    /// Whether every counted replica made `seq` durable (false with none).
    pub fn all_durable(&self, seq: Seq) -> bool {
        self.durable.last().is_some_and(|min| *min >= seq)
    }

    fn of(replicas: &BTreeMap<String, ReplicaView>, in_sync: Option<&InSync>) -> Reached {
        let mut r = Reached::default();
        let mut count = |v: Option<&ReplicaView>| {
            let (received, durable) = v
                .filter(|v| v.phase == Phase::Streaming)
                .map_or((Seq::ZERO, Seq::ZERO), |v| (v.received, v.durable));
            r.received.push(received);
            r.durable.push(durable);
        };
        match in_sync {
            None => replicas
                .values()
                .filter(|v| v.phase == Phase::Streaming)
                .for_each(|v| count(Some(v))),
            Some(set) => set
                .members
                .iter()
                .for_each(|name| count(replicas.get(name))),
        }
        r.received.sort_unstable_by(|a, b| b.cmp(a));
        r.durable.sort_unstable_by(|a, b| b.cmp(a));
        r
    }
}

/// A cluster shard's committed in-sync set, as this primary counts it,
/// and the history it judges members' lag by.
#[derive(Debug, Clone)]
struct InSync {
    /// The replicas whose acks count (by identity).
    members: BTreeSet<String>,
    /// A member that has not received what this primary had `lag_ms` ago,
    /// or that has been away that long, should leave the set.
    lag_ms: u64,
    /// `(ms, last seq)` of this primary at each tick, oldest first,
    /// covering at least the last `lag_ms`.
    marks: VecDeque<(u64, Seq)>,
    /// When the set was installed, ms: members never seen since are away
    /// from then.
    since_ms: u64,
}

impl InSync {
    /// What this primary had `window` ms before `now_ms`, if its marks go
    /// back that far.
    fn had(&self, now_ms: u64, window: u64) -> Option<Seq> {
        let at = now_ms.checked_sub(window)?;
        self.marks
            .iter()
            .rev()
            .find(|(ms, _)| *ms <= at)
            .map(|(_, seq)| *seq)
    }
}

/// Why a replica's session was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another session of the same identity is alive.
    #[error(
        "a replica named {identity:?} is already connected and was heard from {age_ms} ms ago: \
         two nodes share one identity (certificate); give each replica its own"
    )]
    Duplicate {
        /// The identity.
        identity: String,
        /// How long ago the live session was heard from.
        age_ms: u64,
    },
}

/// What the driver must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Hold the WAL for `replica` from `from` on (replacing any hold it has).
    Hold {
        /// The replica.
        replica: String,
        /// The first seq kept.
        from: Seq,
    },
    /// Release the WAL held for `replica`.
    Release {
        /// The replica.
        replica: String,
    },
    /// End a session (replaced by a newer one of the same replica).
    EndSession(SessionId),
    /// Writers waiting for acks compare against this now.
    Publish(Reached),
}

/// Retention and liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct PrimaryConfig {
    /// A session not heard from for this long may be replaced by a new one
    /// of the same identity (the old one is presumed dead).
    pub stale_after_ms: u64,
    /// A disconnected replica unseen for this long is forgotten, and its
    /// WAL hold released.
    pub retention_idle_ms: u64,
    /// WAL bytes kept for lagging replicas before the furthest behind loses
    /// its hold (and will need a full sync).
    pub retention_bytes: u64,
}

/// The primary's side of replication.
#[derive(Debug)]
pub struct PrimaryCore {
    cfg: PrimaryConfig,
    replicas: BTreeMap<String, ReplicaView>,
    /// `None` in a lone replica group: every streaming replica counts.
    in_sync: Option<InSync>,
    next_session: u64,
    published: Reached,
}

impl PrimaryCore {
    /// No replicas yet.
    pub fn new(cfg: PrimaryConfig) -> PrimaryCore {
        PrimaryCore {
            cfg,
            replicas: BTreeMap::new(),
            in_sync: None,
            next_session: 1,
            published: Reached::default(),
        }
    }

    /// The replicas, by identity.
    pub fn replicas(&self) -> &BTreeMap<String, ReplicaView> {
        &self.replicas
    }

    /// What was last published.
    pub fn reached(&self) -> &Reached {
        &self.published
    }

    /// A replica said `Hello`: opens its session, or refuses it while
    /// another session of the same identity is alive.
    pub fn connect(
        &mut self,
        identity: &str,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) -> Result<SessionId, Refusal> {
        if let Some(old) = self.replicas.get(identity)
            && old.phase != Phase::Disconnected
        {
            let age_ms = now_ms.saturating_sub(old.last_seen_ms);
            if age_ms < self.cfg.stale_after_ms {
                return Err(Refusal::Duplicate {
                    identity: identity.to_string(),
                    age_ms,
                });
            }
            out.push(Action::EndSession(old.session));
        }
        let session = SessionId(self.next_session);
        self.next_session += 1;
        let view = self
            .replicas
            .entry(identity.to_string())
            .or_insert(ReplicaView {
                phase: Phase::Handshake,
                received: Seq::ZERO,
                durable: Seq::ZERO,
                held_from: None,
                last_seen_ms: now_ms,
                phase_since_ms: now_ms,
                session,
            });
        view.session = session;
        view.set_phase(Phase::Handshake, now_ms);
        view.last_seen_ms = now_ms;
        self.publish(out);
        Ok(session)
    }

    /// The session streams from the WAL after `position` (which it holds).
    pub fn stream(
        &mut self,
        session: SessionId,
        position: Seq,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some((name, view)) = self.session_mut(session) else {
            return;
        };
        view.set_phase(Phase::Streaming, now_ms);
        view.received = position;
        // IMPORTANT: what it made durable is unknown until its first ack;
        // a reply must never claim more (I6).
        view.durable = Seq::ZERO;
        view.last_seen_ms = now_ms;
        view.held_from = Some(position.next());
        out.push(Action::Hold {
            replica: name,
            from: position.next(),
        });
        self.publish(out);
    }

    /// The session gets a snapshot of `total` bytes: not counted for acks,
    /// and its own WAL hold goes (the snapshot's hold covers it).
    pub fn full_sync(
        &mut self,
        session: SessionId,
        total: u64,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some((name, view)) = self.session_mut(session) else {
            return;
        };
        view.set_phase(
            Phase::FullSync {
                done: 0,
                total,
                started_ms: now_ms,
            },
            now_ms,
        );
        view.received = Seq::ZERO;
        view.durable = Seq::ZERO;
        view.last_seen_ms = now_ms;
        if view.held_from.take().is_some() {
            out.push(Action::Release { replica: name });
        }
        self.publish(out);
    }

    /// Snapshot bytes sent so far.
    pub fn full_sync_progress(&mut self, session: SessionId, done: u64) {
        if let Some((_, view)) = self.session_mut(session)
            && let Phase::FullSync { done: d, .. } = &mut view.phase
        {
            *d = done;
        }
    }

    /// The replica acknowledged: `received` appended, `durable` fsynced.
    pub fn ack(
        &mut self,
        session: SessionId,
        received: Seq,
        durable: Seq,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some((name, view)) = self.session_mut(session) else {
            return;
        };
        view.last_seen_ms = now_ms;
        if view.phase != Phase::Streaming {
            return;
        }
        // Acks on one stream only grow; a smaller one is a confused peer,
        // and never lowers what was reached.
        view.received = view.received.max(received);
        view.durable = view.durable.max(durable.min(view.received));
        if let Some(from) = view.held_from
            && view.received.next() > from
        {
            view.held_from = Some(view.received.next());
            out.push(Action::Hold {
                replica: name,
                from: view.received.next(),
            });
        }
        self.publish(out);
    }

    /// The session is over (link lost, error, or ended).
    pub fn disconnect(&mut self, session: SessionId, now_ms: u64, out: &mut Vec<Action>) {
        let Some((_, view)) = self.session_mut(session) else {
            return;
        };
        view.set_phase(Phase::Disconnected, now_ms);
        view.last_seen_ms = now_ms;
        self.publish(out);
    }

    /// Installs a cluster shard's committed in-sync set (`None`: a lone
    /// replica group, where every streaming replica counts); members that
    /// fall `lag_ms` behind are proposed for removal by
    /// [`PrimaryCore::wanted_in_sync`].
    pub fn set_in_sync(
        &mut self,
        members: Option<BTreeSet<String>>,
        lag_ms: u64,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        self.in_sync = members.map(|members| {
            let (marks, since_ms) = match self.in_sync.take() {
                Some(old) => (old.marks, old.since_ms),
                None => (VecDeque::new(), now_ms),
            };
            InSync {
                members,
                lag_ms,
                marks,
                since_ms,
            }
        });
        self.publish(out);
    }

    /// The committed in-sync set, if this is a cluster shard's primary.
    pub fn in_sync(&self) -> Option<&BTreeSet<String>> {
        self.in_sync.as_ref().map(|s| &s.members)
    }

    /// Records that this primary's last seq is `last` at `now_ms`, and
    /// says which in-sync set it should have: members that have not
    /// received what it had `lag_ms` ago, or were away for `lag_ms`,
    /// leave; streaming replicas that received what it had `lag_ms / 2`
    /// ago join (the gap between the two keeps a replica at the edge from
    /// flapping). `None` outside a cluster.
    pub fn wanted_in_sync(&mut self, now_ms: u64, last: Seq) -> Option<BTreeSet<String>> {
        let set = self.in_sync.as_mut()?;
        set.marks.push_back((now_ms, last));
        let horizon = now_ms.saturating_sub(set.lag_ms);
        while set.marks.get(1).is_some_and(|(ms, _)| *ms <= horizon) {
            set.marks.pop_front();
        }
        let set = &*set;
        let lag = set.lag_ms;
        let stays = |name: &String| match self.replicas.get(name) {
            Some(v) if v.phase == Phase::Streaming => {
                set.had(now_ms, lag).is_none_or(|had| v.received >= had)
            }
            Some(v) => now_ms.saturating_sub(v.phase_since_ms) < lag,
            None => now_ms.saturating_sub(set.since_ms) < lag,
        };
        let joins = |(name, v): (&String, &ReplicaView)| {
            let had = set.had(now_ms, lag / 2).unwrap_or(last);
            (v.phase == Phase::Streaming && v.received >= had).then(|| name.clone())
        };
        let received = |name: &String| self.replicas.get(name).map_or(Seq::ZERO, |v| v.received);
        let (staying, leaving): (Vec<&String>, Vec<&String>) =
            set.members.iter().partition(|n| stays(n));
        let mut wanted: BTreeSet<String> = staying.into_iter().cloned().collect();
        // IMPORTANT: a leaving member may hold writes acknowledged with its
        // ack (semi-sync); it leaves only if every member that stays has
        // received as much, so the set keeps every acknowledged write.
        // Leaving the set empty is safe too: a failover then waits for
        // every replica (health.rs).
        if let Some(floor) = wanted.iter().map(received).min() {
            let held: Vec<String> = leaving
                .into_iter()
                .filter(|n| received(n) > floor)
                .cloned()
                .collect();
            wanted.extend(held);
        }
        wanted.extend(self.replicas.iter().filter_map(joins));
        Some(wanted)
    }

    /// Applies the retention limits: forgets replicas disconnected for
    /// longer than the idle limit, and releases the hold of the replica
    /// furthest behind among those whose hold alone keeps more than the
    /// byte budget of WAL (`wal_bytes_from(seq)`: bytes of WAL from `seq`
    /// on). A caught-up replica is never released because the WAL is large
    /// for other reasons (records not yet checkpointed).
    pub fn tick(
        &mut self,
        now_ms: u64,
        wal_bytes_from: impl Fn(Seq) -> u64,
        out: &mut Vec<Action>,
    ) {
        let idle = self.cfg.retention_idle_ms;
        let forgotten: Vec<String> = self
            .replicas
            .iter()
            .filter(|(_, v)| {
                v.phase == Phase::Disconnected && now_ms.saturating_sub(v.last_seen_ms) >= idle
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in forgotten {
            if let Some(view) = self.replicas.remove(&name)
                && view.held_from.is_some()
            {
                out.push(Action::Release { replica: name });
            }
        }
        let budget = self.cfg.retention_bytes;
        if let Some((name, view)) = self
            .replicas
            .iter_mut()
            .filter(|(_, v)| {
                v.held_from
                    .is_some_and(|from| wal_bytes_from(from) > budget)
            })
            .min_by_key(|(_, v)| v.received)
        {
            view.held_from = None;
            out.push(Action::Release {
                replica: name.clone(),
            });
        }
    }

    /// Forgets every replica (this node stops being a primary).
    pub fn clear(&mut self, out: &mut Vec<Action>) {
        for (name, view) in std::mem::take(&mut self.replicas) {
            if view.phase != Phase::Disconnected {
                out.push(Action::EndSession(view.session));
            }
            if view.held_from.is_some() {
                out.push(Action::Release { replica: name });
            }
        }
        self.publish(out);
    }

    /// The live session's identity, if `session` is it.
    pub fn identity(&self, session: SessionId) -> Option<&str> {
        self.replicas
            .iter()
            .find(|(_, v)| v.session == session && v.phase != Phase::Disconnected)
            .map(|(name, _)| name.as_str())
    }

    fn session_mut(&mut self, session: SessionId) -> Option<(String, &mut ReplicaView)> {
        self.replicas
            .iter_mut()
            .find(|(_, v)| v.session == session && v.phase != Phase::Disconnected)
            .map(|(name, v)| (name.clone(), v))
    }

    fn publish(&mut self, out: &mut Vec<Action>) {
        let reached = Reached::of(&self.replicas, self.in_sync.as_ref());
        if reached != self.published {
            self.published = reached.clone();
            out.push(Action::Publish(reached));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> PrimaryCore {
        PrimaryCore::new(PrimaryConfig {
            stale_after_ms: 2000,
            retention_idle_ms: 10_000,
            retention_bytes: 1000,
        })
    }

    #[test]
    fn a_second_live_session_of_one_identity_is_refused() {
        let mut c = core();
        let mut out = Vec::new();
        let a = c.connect("r1", 0, &mut out).unwrap();
        c.stream(a, Seq(5), 0, &mut out);
        assert!(matches!(
            c.connect("r1", 100, &mut out),
            Err(Refusal::Duplicate { .. })
        ));
        // A different identity is a second replica, counted as such.
        let b = c.connect("r2", 100, &mut out).unwrap();
        c.stream(b, Seq(5), 100, &mut out);
        assert_eq!(c.reached().counted(), 2);
        // Once the first is silent past the stale limit, it is replaced.
        out.clear();
        let a2 = c.connect("r1", 5000, &mut out).unwrap();
        assert!(out.contains(&Action::EndSession(a)));
        // Events of the replaced session are ignored.
        c.ack(a, Seq(9), Seq(9), 5001, &mut out);
        assert_eq!(c.replicas()["r1"].received, Seq(5));
        c.stream(a2, Seq(7), 5001, &mut out);
        assert_eq!(c.reached().received(Seq(7)), 1);
    }

    #[test]
    fn reached_is_per_ack_level() {
        let mut c = core();
        let mut out = Vec::new();
        let ids: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                let s = c.connect(n, 0, &mut out).unwrap();
                c.stream(s, Seq::ZERO, 0, &mut out);
                s
            })
            .collect();
        c.ack(ids[0], Seq(10), Seq(4), 1, &mut out);
        c.ack(ids[1], Seq(7), Seq(7), 1, &mut out);
        c.ack(ids[2], Seq(3), Seq(1), 1, &mut out);
        let r = c.reached();
        assert_eq!(r.received(Seq(7)), 2);
        assert_eq!(r.received(Seq(8)), 1);
        assert_eq!(r.durable(Seq(4)), 2);
        assert!(r.all_durable(Seq(1)));
        assert!(!r.all_durable(Seq(2)));
        // A replica in full sync does not count.
        c.full_sync(ids[2], 100, 2, &mut out);
        assert!(c.reached().all_durable(Seq(4)));
        assert_eq!(c.reached().counted(), 2);
    }

    #[test]
    fn holds_follow_acks_and_retention_releases_them() {
        let mut c = core();
        let mut out = Vec::new();
        let s = c.connect("r", 0, &mut out).unwrap();
        c.stream(s, Seq(3), 0, &mut out);
        assert!(out.contains(&Action::Hold {
            replica: "r".into(),
            from: Seq(4)
        }));
        out.clear();
        c.ack(s, Seq(8), Seq(8), 1, &mut out);
        assert!(out.contains(&Action::Hold {
            replica: "r".into(),
            from: Seq(9)
        }));
        c.disconnect(s, 10, &mut out);
        out.clear();
        c.tick(5000, |_| 0, &mut out);
        assert!(out.is_empty(), "kept while within the idle limit");
        c.tick(10_010, |_| 0, &mut out);
        assert_eq!(
            out,
            vec![Action::Release {
                replica: "r".into()
            }]
        );
        assert!(c.replicas().is_empty());
    }

    #[test]
    fn the_budget_releases_only_a_replica_whose_own_hold_is_too_large() {
        let mut c = core();
        let mut out = Vec::new();
        let near = c.connect("near", 0, &mut out).unwrap();
        c.stream(near, Seq(99), 0, &mut out);
        let far = c.connect("far", 0, &mut out).unwrap();
        c.stream(far, Seq(9), 0, &mut out);
        // 20 bytes a record from seq 1 to 100: 2000 bytes of WAL in all,
        // over the 1000-byte budget, most of it not yet checkpointed.
        let wal_bytes_from = |seq: Seq| 20 * 100u64.saturating_sub(seq.0 - 1);
        out.clear();
        c.tick(1, wal_bytes_from, &mut out);
        assert_eq!(
            out,
            vec![Action::Release {
                replica: "far".into()
            }]
        );
        // The caught-up replica keeps its hold, though the WAL as a whole
        // stays over the budget.
        out.clear();
        c.tick(2, wal_bytes_from, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn only_members_of_the_in_sync_set_count_and_an_absent_one_holds_sync_writes() {
        let mut c = core();
        let mut out = Vec::new();
        let a = c.connect("a", 0, &mut out).unwrap();
        c.stream(a, Seq(0), 0, &mut out);
        let b = c.connect("b", 0, &mut out).unwrap();
        c.stream(b, Seq(0), 0, &mut out);
        c.set_in_sync(Some(names(&["a", "gone"])), 1000, 0, &mut out);
        c.ack(a, Seq(5), Seq(5), 1, &mut out);
        c.ack(b, Seq(5), Seq(5), 1, &mut out);
        let r = c.reached();
        // b streams but is not a member; "gone" is a member that is away.
        assert_eq!(r.counted(), 2);
        assert_eq!(r.received(Seq(5)), 1);
        assert!(!r.all_durable(Seq(5)), "sync waits for the absent member");
        // Its removal committed, the same write is acknowledged by a alone.
        c.set_in_sync(Some(names(&["a"])), 1000, 2, &mut out);
        assert!(c.reached().all_durable(Seq(5)));
        assert_eq!(c.reached().durable(Seq(5)), 1);
        // An empty set: a sync write has no replica to wait for.
        c.set_in_sync(Some(BTreeSet::new()), 1000, 3, &mut out);
        assert_eq!(c.reached().counted(), 0);
        // Outside a cluster every streaming replica counts again.
        c.set_in_sync(None, 1000, 4, &mut out);
        assert_eq!(c.reached().counted(), 2);
        assert_eq!(c.wanted_in_sync(5, Seq(5)), None);
    }

    #[test]
    fn members_that_lag_or_are_away_leave_and_caught_up_replicas_join() {
        let mut c = core();
        let mut out = Vec::new();
        let streaming = |c: &mut PrimaryCore, name: &str, out: &mut Vec<Action>| {
            let s = c.connect(name, 0, out).unwrap();
            c.stream(s, Seq(0), 0, out);
            s
        };
        let fast = streaming(&mut c, "fast", &mut out);
        let slow = streaming(&mut c, "slow", &mut out);
        let away = streaming(&mut c, "away", &mut out);
        let new = streaming(&mut c, "new", &mut out);
        c.set_in_sync(Some(names(&["fast", "slow", "away"])), 1000, 0, &mut out);
        c.disconnect(away, 100, &mut out);
        // The primary writes 10 records every 100 ms; fast and new keep
        // up, slow stops at 20.
        for tick in 0..=20u64 {
            let now = tick * 100;
            let last = Seq(tick * 10);
            c.ack(fast, last, last, now, &mut out);
            c.ack(new, last, last, now, &mut out);
            c.ack(slow, last.min(Seq(20)), Seq(0), now, &mut out);
            let wanted = c.wanted_in_sync(now, last).unwrap();
            match now {
                // Nobody is behind what the primary had a second ago yet,
                // and the away member has not been away for a second.
                0..=1000 => assert!(wanted.is_superset(&names(&["fast", "slow", "away"]))),
                1100..=1200 => assert_eq!(wanted, names(&["fast", "slow", "new"]), "at {now}"),
                _ => assert_eq!(wanted, names(&["fast", "new"]), "at {now}"),
            }
        }
    }

    #[test]
    fn a_member_holding_more_than_those_that_stay_does_not_leave() {
        let mut c = core();
        let mut out = Vec::new();
        let ahead = c.connect("ahead", 0, &mut out).unwrap();
        c.stream(ahead, Seq(0), 0, &mut out);
        let behind = c.connect("behind", 0, &mut out).unwrap();
        c.stream(behind, Seq(0), 0, &mut out);
        c.set_in_sync(Some(names(&["ahead", "behind"])), 1000, 0, &mut out);
        // ahead acks seq 50 (a semi-sync:1 write may rest on it) and goes;
        // behind, still streaming, has 30 and is judged in time.
        c.ack(ahead, Seq(50), Seq(50), 0, &mut out);
        c.ack(behind, Seq(30), Seq(30), 0, &mut out);
        c.disconnect(ahead, 0, &mut out);
        for tick in 0..=15u64 {
            c.wanted_in_sync(tick * 100, Seq(30));
        }
        let wanted = c.wanted_in_sync(1600, Seq(30)).unwrap();
        assert_eq!(
            wanted,
            names(&["ahead", "behind"]),
            "ahead holds 31..=50 alone"
        );
        // Once behind has what ahead had, ahead may leave.
        c.ack(behind, Seq(50), Seq(50), 1700, &mut out);
        let wanted = c.wanted_in_sync(1700, Seq(50)).unwrap();
        assert_eq!(wanted, names(&["behind"]));
    }
}
