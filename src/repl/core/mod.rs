//! Replication's state machines, sans-io (as `quinn-proto` is to `quinn`):
//! [`primary::PrimaryCore`] tracks a primary's replicas, their acks and the
//! WAL they need; [`replica::ReplicaCore`] a replica's place in its
//! primary's stream. Events go in with the time they happen; actions come
//! out; the async drivers in `repl::primary` and `repl::replica` only move
//! bytes and apply records. [`verdict`] and [`timed_out`] are the one place
//! that decides what a waiting write may claim (I6).
//!
//! Being sans-io, the machines are tested in-process under thousands of
//! seeded schedules of a simulated link (`sim`, in tests).

pub mod primary;
pub mod replica;
#[cfg(test)]
mod sim;

pub use primary::{Action, Phase, PrimaryConfig, PrimaryCore, Reached, Refusal, SessionId};
pub use replica::{AckMsg, FollowState, ReplicaCore, StreamError};

use crate::types::{AckPolicy, OnTimeout, Seq};

/// What a write reached before its reply (I6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Replicas that acknowledged it.
    pub replicas: u32,
    /// Fewer than the policy asked for (a degraded semi-sync, or a sync
    /// with no replica streaming).
    pub degraded: bool,
}

/// Whether the write at `seq` has reached what `policy` asks, given what
/// the replicas reached: `Some` with what to report, or `None` to go on
/// waiting.
pub fn verdict(reached: &Reached, seq: Seq, policy: AckPolicy) -> Option<Acked> {
    let acked = |replicas| Acked {
        replicas,
        degraded: false,
    };
    match policy {
        AckPolicy::Async => Some(acked(reached.received(seq))),
        AckPolicy::SemiSync { replicas, .. } => {
            let got = reached.received(seq);
            (got >= replicas).then(|| acked(got))
        }
        // No replica to wait for: say so rather than wait out the timeout.
        AckPolicy::Sync { .. } if reached.counted() == 0 => Some(Acked {
            replicas: 0,
            degraded: true,
        }),
        AckPolicy::Sync { .. } => reached
            .all_durable(seq)
            .then(|| acked(reached.durable(seq))),
    }
}

/// The reply of a write whose policy's timeout passed before
/// [`verdict`] said yes: degraded (`Ok`), or `Err` with how many replicas
/// acknowledged it, for a `ReplicationTimeout`.
pub fn timed_out(reached: &Reached, seq: Seq, policy: AckPolicy) -> Result<Acked, u32> {
    match policy {
        AckPolicy::Async => Ok(Acked {
            replicas: reached.received(seq),
            degraded: false,
        }),
        AckPolicy::SemiSync {
            on_timeout: OnTimeout::Degrade,
            ..
        } => Ok(Acked {
            replicas: reached.received(seq),
            degraded: true,
        }),
        AckPolicy::SemiSync { .. } => Err(reached.received(seq)),
        AckPolicy::Sync { .. } => Err(reached.durable(seq)),
    }
}
