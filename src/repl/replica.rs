//! The replica's side: follow a primary, install full syncs, ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::core::AckMsg;
use super::proto::{
    self, Position, REPL_PROTOCOL, Resume, SnapshotFrame, Start, ToPrimary, ToReplica,
};
use super::{ReplError, ReplMeta, Replication, split_host};
use crate::net::link::{FrameReceiver, FrameSender, Link};
use crate::store::{InstallMarker, InstallStep, SnapshotEntry};
use crate::types::Seq;

/// How long to wait for a connection and the primary's `Welcome`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Follows `primary` until the task is aborted, reconnecting with backoff.
pub(super) async fn follow(repl: Arc<Replication>, primary: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let installing = matches!(repl.store.install_marker().await, Ok(Some(_)));
        // An unfinished install keeps reads refused until it completes.
        repl.with_follow(|f| f.connecting(installing));
        let started = Instant::now();
        match session(&repl, &primary).await {
            Ok(()) => {}
            Err(e) => {
                warn!(%primary, error = %e, "replication link down; reconnecting");
                repl.with_follow(|f| f.lost(e.to_string()));
            }
        }
        if started.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn connect(repl: &Replication, primary: &str) -> Result<Link, ReplError> {
    let (host, _) =
        split_host(primary).ok_or_else(|| ReplError::Link(format!("bad address {primary:?}")))?;
    let addr = tokio::net::lookup_host(primary)
        .await
        .map_err(|e| ReplError::Link(format!("resolving {primary}: {e}")))?
        .next()
        .ok_or_else(|| ReplError::Link(format!("{primary} resolves to nothing")))?;
    let endpoint = repl.client_endpoint(addr)?;
    Ok(endpoint.connect(addr, &host, CONNECT_TIMEOUT).await?)
}

async fn session(repl: &Arc<Replication>, primary: &str) -> Result<(), ReplError> {
    let conn = connect(repl, primary).await?;
    let (mut send, mut recv) = conn.open().await?;
    let store = &repl.store;
    let meta = repl.meta();
    let marker = store.install_marker().await?;
    let position = Position {
        repl_id: meta.repl_id,
        epoch: meta.epoch,
        seq: store.applied_seq(),
    };
    let resume = marker.as_ref().map(|m| Resume {
        snapshot_id: m.snapshot_id,
        last_key: m.last_key.clone(),
        entries: m.entries,
        bytes: m.bytes,
    });
    let hello = ToPrimary::Hello {
        protocol: REPL_PROTOCOL,
        node: repl.node_name().to_string(),
        position,
        resume,
    };
    send.send(&hello).await?;
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, recv.recv::<ToReplica>())
        .await
        .map_err(|_| ReplError::Link("no Welcome within 10 s".into()))??;
    let (adopted, client_addr, start) = match answer {
        Some(ToReplica::Welcome {
            repl_id,
            epoch,
            previous,
            client_addr,
            start,
        }) => (
            ReplMeta {
                repl_id,
                epoch,
                previous,
            },
            client_addr,
            start,
        ),
        Some(ToReplica::Refused { reason }) => {
            return Err(ReplError::Protocol(format!("primary refused: {reason}")));
        }
        other => {
            return Err(ReplError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
    };
    if adopted.epoch < meta.epoch {
        // Fencing: never follow a primary older than the history we have seen.
        return Err(ReplError::Protocol(format!(
            "primary is at epoch {}, this node has seen epoch {}: refusing to follow a superseded primary",
            adopted.epoch.0, meta.epoch.0
        )));
    }
    repl.with_follow(|f| f.primary_client_addr = client_addr);
    let next = match start {
        Start::Stream { from } => {
            let expected = store.applied_seq().next();
            if from != expected {
                return Err(ReplError::Protocol(format!(
                    "primary streams from {from}, this node needs {expected}"
                )));
            }
            if adopted != meta {
                repl.set_meta(adopted).await?;
            }
            info!(%primary, %from, "following the primary's WAL");
            from
        }
        Start::FullSync {
            snapshot_id,
            seq,
            total_entries,
            total_bytes,
            resume_after,
        } => {
            let installed = install(
                repl,
                &conn,
                InstallPlan {
                    snapshot_id,
                    seq,
                    total_entries,
                    total_bytes,
                    resume_after,
                    marker,
                    adopted,
                },
            )
            .await?;
            send.send(&ToPrimary::Installed { seq: installed }).await?;
            installed.next()
        }
    };
    let (applied, durable, now) = (store.applied_seq(), store.durable_seq(), repl.now_ms());
    debug_assert_eq!(applied.next(), next);
    let first = repl.with_follow(|f| f.streaming(applied, durable, now));
    ack(&mut send, first).await?;
    apply_stream(repl, &mut send, recv).await
}

struct InstallPlan {
    snapshot_id: u64,
    seq: Seq,
    total_entries: u64,
    total_bytes: u64,
    resume_after: Option<bytes::Bytes>,
    marker: Option<InstallMarker>,
    /// The primary's history, adopted with the snapshot.
    adopted: ReplMeta,
}

/// Receives and installs a snapshot; returns its seq.
async fn install(repl: &Replication, conn: &Link, plan: InstallPlan) -> Result<Seq, ReplError> {
    let store = &repl.store;
    let resuming = plan.resume_after.is_some()
        && plan
            .marker
            .as_ref()
            .is_some_and(|m| m.snapshot_id == plan.snapshot_id && m.last_key == plan.resume_after);
    let mut marker = match plan.marker {
        Some(marker) if resuming => marker,
        _ => {
            let marker = InstallMarker {
                snapshot_id: plan.snapshot_id,
                seq: plan.seq,
                last_key: None,
                entries: 0,
                bytes: 0,
            };
            store.install(InstallStep::Begin(marker.clone())).await?;
            marker
        }
    };
    info!(
        snapshot = %format!("{:016x}", plan.snapshot_id), seq = %plan.seq,
        entries = plan.total_entries, bytes = plan.total_bytes,
        resumed_at_bytes = marker.bytes, "full sync: installing the primary's snapshot"
    );
    let started = Instant::now();
    let now = repl.now_ms();
    repl.with_follow(|f| f.full_sync(marker.bytes, plan.total_bytes, now));
    let mut uni = conn.accept_one_way().await?;
    let mut logged = Instant::now();
    loop {
        let frame = uni
            .recv::<SnapshotFrame>()
            .await?
            .ok_or_else(|| ReplError::Link("snapshot stream ended early".into()))?;
        match frame {
            SnapshotFrame::Chunk {
                entries,
                raw_len,
                raw_crc,
                compressed,
            } => {
                // Decompressing and decoding is CPU work: off the async threads.
                let entries = tokio::task::spawn_blocking(move || {
                    proto::unpack_chunk(entries, raw_len, raw_crc, &compressed)
                })
                .await
                .map_err(|e| ReplError::Link(e.to_string()))??;
                let Some(last) = entries.last() else { continue };
                marker.last_key = Some(last.key.clone());
                marker.entries += entries.len() as u64;
                marker.bytes += entries.iter().map(SnapshotEntry::data_len).sum::<u64>();
                store
                    .install(InstallStep::Chunk(entries, marker.clone()))
                    .await?;
                repl.with_follow(|f| f.full_sync_progress(marker.bytes));
                if logged.elapsed() > Duration::from_secs(2) {
                    logged = Instant::now();
                    info!(
                        done_bytes = marker.bytes, total_bytes = plan.total_bytes,
                        eta_secs = %format!("{:.0}", super::eta(
                            marker.bytes,
                            plan.total_bytes,
                            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        )),
                        "full sync progress"
                    );
                }
            }
            SnapshotFrame::Done { seq } => {
                if seq != plan.seq {
                    return Err(ReplError::Protocol(format!(
                        "snapshot ends at {seq}, announced {}",
                        plan.seq
                    )));
                }
                // IMPORTANT: the history first: a crash between the two leaves
                // an install marker (the sync resumes), never complete data
                // under a foreign history (which would cost a second full sync).
                repl.set_meta(plan.adopted).await?;
                store.install(InstallStep::Finish(seq)).await?;
                repl.metrics.full_syncs_completed.inc();
                info!(%seq, entries = marker.entries, bytes = marker.bytes, "full sync installed");
                return Ok(seq);
            }
        }
    }
}

async fn ack(send: &mut FrameSender, ack: AckMsg) -> Result<(), ReplError> {
    let msg = ToPrimary::Ack {
        received: ack.received,
        durable: ack.durable,
    };
    Ok(send.send(&msg).await?)
}

/// Applies streamed records in order (I5) and acknowledges them; the
/// order, the gap check and the acks are the replica machine's.
async fn apply_stream(
    repl: &Arc<Replication>,
    send: &mut FrameSender,
    mut recv: FrameReceiver,
) -> Result<(), ReplError> {
    // Frames are read on their own task: a read must never be cut short.
    let (tx, mut frames) = mpsc::channel::<Result<ToReplica, ReplError>>(8);
    let reader = tokio::spawn(async move {
        loop {
            let frame = match recv.recv::<ToReplica>().await {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => Err(ReplError::Link("primary closed the stream".into())),
                Err(e) => Err(e.into()),
            };
            let stop = frame.is_err();
            if tx.send(frame).await.is_err() || stop {
                return;
            }
        }
    });
    let result = apply_frames(repl, send, &mut frames).await;
    reader.abort();
    result
}

async fn apply_frames(
    repl: &Arc<Replication>,
    send: &mut FrameSender,
    frames: &mut mpsc::Receiver<Result<ToReplica, ReplError>>,
) -> Result<(), ReplError> {
    let silence = Duration::from_millis(repl.cfg.heartbeat_ms * 5);
    let mut durable = repl.store.watch_durable();
    loop {
        let next_frame = tokio::select! {
            frame = tokio::time::timeout(silence, frames.recv()) => frame,
            changed = durable.changed() => {
                if changed.is_err() {
                    return Err(ReplError::Link("store closed".into()));
                }
                // Report fsync progress (interval policy) without new records.
                let seq = *durable.borrow_and_update();
                if let Some(msg) = repl.with_follow(|f| f.durable(seq)) {
                    ack(send, msg).await?;
                }
                continue;
            }
        };
        let frame = match next_frame {
            Ok(Some(frame)) => frame?,
            Ok(None) => return Err(ReplError::Link("frame reader stopped".into())),
            Err(_) => {
                return Err(ReplError::Link(format!(
                    "primary silent for {} ms",
                    silence.as_millis()
                )));
            }
        };
        let now = repl.now_ms();
        let msg = match frame {
            ToReplica::Records {
                records,
                primary_last,
            } => {
                let records = repl
                    .with_follow(|f| f.records(records, primary_last, now))
                    .map_err(|e| ReplError::Protocol(e.to_string()))?;
                let Some(last) = records.last().map(|r| r.seq) else {
                    continue;
                };
                let n = records.len() as u64;
                repl.store.apply_replicated(records).await?;
                repl.metrics.records_applied.inc_by(n);
                repl.with_follow(|f| f.applied(last))
            }
            ToReplica::Heartbeat { primary_last } => {
                repl.with_follow(|f| f.heartbeat(primary_last, now))
            }
            other => return Err(ReplError::Protocol(format!("unexpected {other:?}"))),
        };
        ack(send, msg).await?;
    }
}
