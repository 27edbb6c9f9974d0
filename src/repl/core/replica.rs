//! A replica's replication state, sans-io: where it stands in its
//! primary's stream, what it must apply next (I5: in order, no gap), and
//! when to acknowledge. The async task in `repl::replica` moves frames and
//! applies records; this decides.

use crate::types::Seq;
use crate::wal::WalRecord;

/// How the link to the primary stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FollowState {
    /// Connecting, or waiting for `Welcome`.
    #[default]
    Connecting,
    /// Installing a snapshot: no reads served, never promoted.
    FullSync,
    /// Applying the primary's WAL.
    Streaming,
}

impl FollowState {
    /// Its name in `Info` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            FollowState::Connecting => "connecting",
            FollowState::FullSync => "full_sync",
            FollowState::Streaming => "streaming",
        }
    }
}

/// An acknowledgement to send: `received` appended to the WAL, `durable`
/// fsynced there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckMsg {
    /// Highest seq appended.
    pub received: Seq,
    /// Highest seq fsynced (never above `received`).
    pub durable: Seq,
}

/// Why a session must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Records do not continue where this node is (I5).
    #[error("records resume at {got}, expected {expected}")]
    Gap {
        /// The first seq received.
        got: Seq,
        /// The seq expected.
        expected: Seq,
    },
    /// Nothing heard for too long.
    #[error("primary silent for {0} ms")]
    Silent(u64),
}

/// A replica's view of its link.
#[derive(Debug, Clone, Default)]
pub struct ReplicaCore {
    /// The state of the link.
    pub state: FollowState,
    /// The primary's last seq, as it last said.
    pub primary_last: Seq,
    /// Where the primary serves clients (for `ReadOnlyReplica` hints).
    pub primary_client_addr: Option<String>,
    /// When the primary was last heard from, ms.
    pub last_contact_ms: Option<u64>,
    /// Full-sync progress: bytes done, total, start ms.
    pub full_sync: Option<(u64, u64, u64)>,
    /// Why the last session ended.
    pub last_error: Option<String>,
    next: Seq,
    received: Seq,
    durable: Seq,
    last_ack: Option<AckMsg>,
}

impl ReplicaCore {
    /// A new session is being set up; `installing` if an unfinished full
    /// sync is on disk (reads stay refused until it completes).
    pub fn connecting(&mut self, installing: bool) {
        self.state = if installing {
            FollowState::FullSync
        } else {
            FollowState::Connecting
        };
        self.last_ack = None;
    }

    /// A snapshot install starts (or resumes at `done` bytes).
    pub fn full_sync(&mut self, done: u64, total: u64, now_ms: u64) {
        self.state = FollowState::FullSync;
        self.full_sync = Some((done, total, now_ms));
    }

    /// More of the snapshot is installed.
    pub fn full_sync_progress(&mut self, done: u64) {
        if let Some((d, _, _)) = &mut self.full_sync {
            *d = done;
        }
    }

    /// The node streams after `applied` (the primary agreed to send from
    /// `applied + 1`, or a snapshot up to `applied` is installed); returns
    /// the first ack to send.
    pub fn streaming(&mut self, applied: Seq, durable: Seq, now_ms: u64) -> AckMsg {
        self.state = FollowState::Streaming;
        self.full_sync = None;
        self.last_error = None;
        self.last_contact_ms = Some(now_ms);
        self.next = applied.next();
        self.received = applied;
        self.durable = durable.min(applied);
        self.ack_now()
    }

    /// The seq the next record must have.
    pub fn next(&self) -> Seq {
        self.next
    }

    /// A batch of records arrived: returns them to apply, in order, or the
    /// gap that ends the session (I5: never a silent skip).
    pub fn records(
        &mut self,
        records: Vec<WalRecord>,
        primary_last: Seq,
        now_ms: u64,
    ) -> Result<Vec<WalRecord>, StreamError> {
        self.heard(primary_last, now_ms);
        if let Some(first) = records.first().map(|r| r.seq) {
            // Within a batch seqs are consecutive (the primary's WAL order),
            // so checking the first is checking them all.
            if first != self.next {
                return Err(StreamError::Gap {
                    got: first,
                    expected: self.next,
                });
            }
        }
        if let Some(last) = records.last().map(|r| r.seq) {
            self.next = last.next();
        }
        Ok(records)
    }

    /// Records up to `seq` are applied (in the WAL and both tiers); returns
    /// the ack to send.
    pub fn applied(&mut self, seq: Seq) -> AckMsg {
        self.received = self.received.max(seq);
        self.ack_now()
    }

    /// The primary said it is alive; returns the ack that tells it we are.
    pub fn heartbeat(&mut self, primary_last: Seq, now_ms: u64) -> AckMsg {
        self.heard(primary_last, now_ms);
        self.ack_now()
    }

    /// The local WAL is fsynced up to `seq`; returns an ack if that is news.
    pub fn durable(&mut self, seq: Seq) -> Option<AckMsg> {
        // Acks belong to a streaming session; an install reports by itself.
        if self.state != FollowState::Streaming {
            return None;
        }
        let durable = seq.min(self.received);
        if durable <= self.durable {
            return None;
        }
        self.durable = durable;
        let before = self.last_ack;
        let ack = self.ack_now();
        (before != Some(ack)).then_some(ack)
    }

    /// Checks the link's liveness at `now_ms`: silent for `limit_ms` ends it.
    pub fn check_silence(&self, now_ms: u64, limit_ms: u64) -> Result<(), StreamError> {
        match self.last_contact_ms {
            Some(at) if now_ms.saturating_sub(at) > limit_ms => {
                Err(StreamError::Silent(now_ms.saturating_sub(at)))
            }
            _ => Ok(()),
        }
    }

    /// The session ended with `error`.
    pub fn lost(&mut self, error: String) {
        self.last_error = Some(error);
        if self.state == FollowState::Streaming {
            self.state = FollowState::Connecting;
        }
    }

    fn heard(&mut self, primary_last: Seq, now_ms: u64) {
        self.primary_last = primary_last;
        self.last_contact_ms = Some(now_ms);
    }

    fn ack_now(&mut self) -> AckMsg {
        let ack = AckMsg {
            received: self.received,
            durable: self.durable.min(self.received),
        };
        self.last_ack = Some(ack);
        ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> WalRecord {
        super::super::sim::record(Seq(seq))
    }

    #[test]
    fn records_must_continue_without_a_gap() {
        let mut c = ReplicaCore::default();
        c.streaming(Seq(4), Seq(4), 0);
        assert_eq!(c.records(vec![rec(5), rec(6)], Seq(6), 1).unwrap().len(), 2);
        assert_eq!(
            c.records(vec![rec(8)], Seq(8), 2),
            Err(StreamError::Gap {
                got: Seq(8),
                expected: Seq(7)
            })
        );
        // A repeat of what was applied is a gap too: never applied twice.
        assert!(c.records(vec![rec(6)], Seq(8), 3).is_err());
    }

    #[test]
    fn acks_report_durable_only_up_to_received() {
        let mut c = ReplicaCore::default();
        c.streaming(Seq(0), Seq(0), 0);
        c.records(vec![rec(1), rec(2)], Seq(2), 1).unwrap();
        assert_eq!(
            c.applied(Seq(2)),
            AckMsg {
                received: Seq(2),
                durable: Seq(0)
            }
        );
        assert_eq!(
            c.durable(Seq(9)),
            Some(AckMsg {
                received: Seq(2),
                durable: Seq(2)
            })
        );
        assert_eq!(c.durable(Seq(9)), None, "no news, no ack");
        assert!(c.check_silence(100, 50).is_err());
        assert!(c.check_silence(40, 50).is_ok());
    }
}
