//! The primary's replication state, sans-io: which replicas it has, what
//! each acknowledged, what the WAL must keep for them (I7), and the one
//! published [`Reached`] that writers waiting for acks compare against
//! (I6). The async tasks in `repl::primary` feed it events and carry out
//! the actions it returns; time comes in with the events, so a simulation
//! can drive it deterministically.

use std::collections::BTreeMap;

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
    session: SessionId,
}

/// What the streaming replicas have reached, published once per change.
/// `received[k - 1]` is the highest seq that at least `k` streaming
/// replicas received; `durable` likewise for fsynced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reached {
    received: Vec<Seq>,
    durable: Vec<Seq>,
}

impl Reached {
    /// Streaming replicas.
    pub fn streaming(&self) -> u32 {
        self.received.len() as u32
    }

    /// Streaming replicas that received `seq`.
    pub fn received(&self, seq: Seq) -> u32 {
        self.received.iter().take_while(|s| **s >= seq).count() as u32
    }

    /// Streaming replicas that made `seq` durable.
    pub fn durable(&self, seq: Seq) -> u32 {
        self.durable.iter().take_while(|s| **s >= seq).count() as u32
    }

    /// Whether every streaming replica made `seq` durable (false with none).
    pub fn all_durable(&self, seq: Seq) -> bool {
        self.durable.last().is_some_and(|min| *min >= seq)
    }

    fn of<'a>(replicas: impl Iterator<Item = &'a ReplicaView>) -> Reached {
        let mut r = Reached::default();
        for v in replicas.filter(|v| v.phase == Phase::Streaming) {
            r.received.push(v.received);
            r.durable.push(v.durable);
        }
        r.received.sort_unstable_by(|a, b| b.cmp(a));
        r.durable.sort_unstable_by(|a, b| b.cmp(a));
        r
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
    next_session: u64,
    published: Reached,
}

impl PrimaryCore {
    /// No replicas yet.
    pub fn new(cfg: PrimaryConfig) -> PrimaryCore {
        PrimaryCore {
            cfg,
            replicas: BTreeMap::new(),
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
                session,
            });
        view.session = session;
        view.phase = Phase::Handshake;
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
        view.phase = Phase::Streaming;
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
        view.phase = Phase::FullSync {
            done: 0,
            total,
            started_ms: now_ms,
        };
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
        view.phase = Phase::Disconnected;
        view.last_seen_ms = now_ms;
        self.publish(out);
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
        let reached = Reached::of(self.replicas.values());
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
        assert_eq!(c.reached().streaming(), 2);
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
        assert_eq!(c.reached().streaming(), 2);
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
}
