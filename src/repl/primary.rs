//! The primary's side: serving replicas, full syncs, WAL retention.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::core::SessionId;
use super::proto::{
    self, Position, REPL_PROTOCOL, Resume, SnapshotFrame, Start, ToPrimary, ToReplica,
};
use super::{ReplError, Replication, lock};
use crate::net::REPL_ALPN;
use crate::net::link::{FrameReceiver, FrameSender, Link, LinkEndpoint};
use crate::store::{SnapshotEntry, SnapshotReader, StoreError, WalHold};
use crate::types::Seq;

/// Most record bytes sent in one `Records` frame.
const BATCH_BYTES: u64 = 1 << 20;

/// How long a replica may take to say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A checkpoint being sent to replicas, kept for resuming.
pub(super) struct SnapshotSession {
    id: u64,
    created_at_ms: u64,
    reader: SnapshotReader,
    dir: PathBuf,
    total_entries: u64,
    total_bytes: u64,
    last_used: Mutex<Instant>,
    /// Keeps the WAL after the snapshot's seq, so the replica can follow
    /// on from it: a full sync must not loop.
    _hold: WalHold,
}

impl Drop for SnapshotSession {
    fn drop(&mut self) {
        let dir = self.dir.clone();
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "cannot remove a full-sync checkpoint");
            }
        };
        // Deleting a checkpoint's files is blocking work: not on an async thread.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Snapshots served at once (clients paging with `Snapshot`, replicas in
/// a full sync): each pins a RocksDB checkpoint's files and the WAL after
/// it, so a client looping on new snapshots must not pile them up.
pub const MAX_LIVE_SNAPSHOTS: usize = 4;

/// The snapshots a primary is serving, by id.
pub(super) struct Snapshots {
    dir: PathBuf,
    sessions: Mutex<HashMap<u64, Arc<SnapshotSession>>>,
}

impl Snapshots {
    pub(super) fn new(dir: PathBuf) -> Snapshots {
        Snapshots {
            dir,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn get(&self, id: u64) -> Option<Arc<SnapshotSession>> {
        let session = lock(&self.sessions).get(&id).cloned()?;
        *lock(&session.last_used) = Instant::now();
        Some(session)
    }

    async fn create(&self, repl: &Replication) -> Result<Arc<SnapshotSession>, ReplError> {
        let live = lock(&self.sessions).len();
        if live >= MAX_LIVE_SNAPSHOTS {
            return Err(ReplError::Busy(format!(
                "{live} snapshots are open (the limit is {MAX_LIVE_SNAPSHOTS}): finish paging \
                 one, or wait until one is idle for {} s",
                repl.cfg.retention_idle_secs.min(600)
            )));
        }
        let id: u64 = rand::random();
        std::fs::create_dir_all(&self.dir).map_err(|source| ReplError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let dir = self.dir.join(format!("{id:016x}"));
        let (reader, hold) = repl.store.snapshot(dir.clone()).await?;
        let now = repl.store.now_ms();
        let (total_entries, total_bytes) = reader.totals();
        let session = Arc::new(SnapshotSession {
            id,
            created_at_ms: now,
            reader,
            dir,
            total_entries,
            total_bytes,
            last_used: Mutex::new(Instant::now()),
            _hold: hold,
        });
        info!(
            snapshot = %format!("{id:016x}"), seq = %session.reader.seq(),
            entries = total_entries, bytes = total_bytes,
            "full-sync checkpoint taken"
        );
        lock(&self.sessions).insert(id, session.clone());
        Ok(session)
    }

    fn remove(&self, id: u64) {
        lock(&self.sessions).remove(&id);
    }

    fn expire_idle(&self, idle: Duration) {
        lock(&self.sessions).retain(|_, s| lock(&s.last_used).elapsed() < idle);
    }
}

impl Replication {
    /// One page (about `max_bytes` of keys and values) of a consistent
    /// snapshot for an online dump: `id: None` takes a new checkpoint;
    /// later pages name it and continue after `after`. Returns the
    /// snapshot's id, seq, creation time, the entries, and whether more follow.
    pub async fn snapshot_page(
        &self,
        id: Option<u64>,
        after: Option<Bytes>,
        max_bytes: usize,
    ) -> Result<(u64, Seq, u64, Vec<crate::store::SnapshotEntry>, bool), ReplError> {
        let session = match id {
            None => self.snapshots.create(self).await?,
            Some(id) => self.snapshots.get(id).ok_or_else(|| {
                ReplError::Protocol(format!(
                    "snapshot {id:016x} is gone (finished, or idle too long): start over"
                ))
            })?,
        };
        let (s, now) = (session.clone(), self.store.now_ms());
        let entries = tokio::task::spawn_blocking(move || {
            s.reader.read_chunk(after.as_deref(), max_bytes, now)
        })
        .await
        .map_err(|e| ReplError::Link(e.to_string()))??;
        let more = !entries.is_empty();
        if !more {
            self.snapshots.remove(session.id);
        }
        Ok((
            session.id,
            session.reader.seq(),
            session.created_at_ms,
            entries,
            more,
        ))
    }
}

/// Accepts replica connections until the endpoint closes.
pub(super) async fn serve(repl: Arc<Replication>, endpoint: LinkEndpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let repl = repl.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            let conn = match incoming.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(%peer, error = %e, "replication handshake failed");
                    return;
                }
            };
            if let Some(alpn) = conn.alpn().filter(|alpn| alpn != REPL_ALPN) {
                match repl.protocol_for(&alpn) {
                    Some(tx) if tx.try_send(conn.clone()).is_ok() => {}
                    _ => conn.close(2, "protocol not served here"),
                }
                return;
            }
            if let Err(e) = serve_replica(&repl, &conn).await {
                warn!(%peer, error = %e, "replica session ended");
            }
            conn.close(0, "session ended");
        });
    }
}

/// Whether a replica at `position` can continue from our WAL (PSYNC2):
/// same history and not ahead of us, or the history we continued, up to
/// where we left it.
fn continues(ours: &super::ReplMeta, position: &Position, applied: Seq) -> bool {
    (position.repl_id == ours.repl_id && position.seq <= applied)
        || ours
            .previous
            .is_some_and(|p| p.repl_id == position.repl_id && position.seq <= p.seq)
}

async fn serve_replica(repl: &Arc<Replication>, conn: &Link) -> Result<(), ReplError> {
    let (send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept())
        .await
        .map_err(|_| ReplError::Protocol("no control stream within 10 s".into()))??;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, recv.recv::<ToPrimary>())
        .await
        .map_err(|_| ReplError::Protocol("no Hello within 10 s".into()))??;
    let Some(ToPrimary::Hello {
        protocol,
        node,
        position,
        resume,
    }) = hello
    else {
        return Err(ReplError::Protocol("expected Hello".into()));
    };
    // Who the replica is: the name in the certificate the handshake
    // verified, not what its Hello says.
    let claimed = node;
    let Some(node) = conn.peer_name() else {
        let reason = "the replica's certificate names no node (no subject common name)".to_string();
        warn!(replica = %claimed, %reason, "replica refused");
        return refuse(send, reason).await;
    };
    if claimed != node {
        info!(replica = %node, says = %claimed, "replica's Hello names it otherwise; its certificate decides");
    }
    let meta = repl.meta();
    let refusal = if protocol != REPL_PROTOCOL {
        Some(format!(
            "replication protocol {protocol} is not supported (this node speaks {REPL_PROTOCOL})"
        ))
    } else if !repl.is_primary() {
        Some("this node is not a primary".to_string())
    } else if position.epoch > meta.epoch {
        // Fencing: a replica that has seen a newer epoch must not follow us.
        Some(format!(
            "this primary is at epoch {}, the replica has seen epoch {}: this node was superseded",
            meta.epoch.0, position.epoch.0
        ))
    } else {
        None
    };
    if let Some(reason) = refusal {
        warn!(replica = %node, %reason, "replica refused");
        return refuse(send, reason).await;
    }

    let session = match repl.with_primary(|p, now, out| p.connect(&node, now, out)) {
        Ok(session) => session,
        Err(refusal) => {
            let reason = refusal.to_string();
            warn!(replica = %node, %reason, "replica refused");
            return refuse(send, reason).await;
        }
    };
    lock(&repl.state).sessions.insert(session, conn.clone());
    let result = serve_session(repl, conn, &node, session, position, resume, send, recv).await;
    repl.with_primary(|p, now, out| p.disconnect(session, now, out));
    lock(&repl.state).sessions.remove(&session);
    result
}

/// Tells a replica why it is refused, and lets the words arrive before the
/// connection closes (closing drops unsent stream data).
async fn refuse(mut send: FrameSender, reason: String) -> Result<(), ReplError> {
    send.send(&ToReplica::Refused { reason }).await?;
    send.finish();
    send.delivered(HELLO_TIMEOUT).await;
    Ok(())
}

/// One replica session, from the PSYNC2 decision to the link's end.
#[allow(clippy::too_many_arguments)]
async fn serve_session(
    repl: &Arc<Replication>,
    conn: &Link,
    node: &str,
    session: SessionId,
    position: Position,
    resume: Option<Resume>,
    mut send: FrameSender,
    mut recv: FrameReceiver,
) -> Result<(), ReplError> {
    let meta = repl.meta();
    let applied = repl.store.applied_seq();
    // IMPORTANT: hold the WAL before checking it still has what the replica needs.
    let hold = repl.store.hold_wal(position.seq.next());
    let can_stream = continues(&meta, &position, applied)
        && resume.is_none()
        && (position.seq == applied
            || repl
                .store
                .records_from(position.seq.next(), 1)
                .await
                .is_ok());
    let from = if can_stream {
        info!(replica = %node, from = %position.seq.next(), "replica continues from the WAL");
        // The session's own hold (from the machine) replaces the check's.
        repl.with_primary(|p, now, out| p.stream(session, position.seq, now, out));
        drop(hold);
        welcome(
            repl,
            &meta,
            Start::Stream {
                from: position.seq.next(),
            },
            &mut send,
        )
        .await?;
        position.seq.next()
    } else {
        drop(hold);
        let seq = full_sync(repl, conn, node, session, resume, &mut send, &mut recv).await?;
        seq.next()
    };
    stream(repl, session, from, &mut send, recv).await
}

/// Sends `Welcome` with our history.
async fn welcome(
    repl: &Replication,
    meta: &super::ReplMeta,
    start: Start,
    send: &mut FrameSender,
) -> Result<(), ReplError> {
    let msg = ToReplica::Welcome {
        repl_id: meta.repl_id,
        epoch: meta.epoch,
        previous: meta.previous,
        client_addr: repl.client_addr.get().cloned(),
        start,
    };
    Ok(send.send(&msg).await?)
}

/// Sends a snapshot; returns its seq once the replica installed it.
async fn full_sync(
    repl: &Arc<Replication>,
    conn: &Link,
    node: &str,
    session_id: SessionId,
    resume: Option<Resume>,
    send: &mut FrameSender,
    recv: &mut FrameReceiver,
) -> Result<Seq, ReplError> {
    let resumed = resume.and_then(|r| repl.snapshots.get(r.snapshot_id).map(|s| (s, r)));
    let (session, after, mut done) = match resumed {
        Some((session, r)) => {
            repl.metrics.full_syncs_resumed.inc();
            info!(
                replica = %node, snapshot = %format!("{:016x}", session.id),
                done_bytes = r.bytes, "full sync resumes"
            );
            (session, r.last_key, r.bytes)
        }
        None => {
            repl.metrics.full_syncs_started.inc();
            info!(replica = %node, "full sync starts");
            (repl.snapshots.create(repl).await?, None, 0)
        }
    };
    let seq = session.reader.seq();
    let total = session.total_bytes;
    repl.with_primary(|p, now, out| {
        p.full_sync(session_id, total, now, out);
        p.full_sync_progress(session_id, done);
    });
    let start = Start::FullSync {
        snapshot_id: session.id,
        seq,
        total_entries: session.total_entries,
        total_bytes: total,
        resume_after: after.clone(),
    };
    welcome(repl, &repl.meta(), start, send).await?;

    let mut uni = conn.open_one_way().await?;
    let rate = repl.cfg.full_sync_bytes_per_sec;
    let chunk_bytes = repl.cfg.full_sync_chunk_bytes;
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    let mut after: Option<Bytes> = after;
    loop {
        let (s, from) = (session.clone(), after.clone());
        let now = repl.store.now_ms();
        // Reading, encoding and compressing a chunk is CPU work: keep it off
        // the async threads that serve clients.
        let chunk = tokio::task::spawn_blocking(move || {
            let entries = s.reader.read_chunk(from.as_deref(), chunk_bytes, now)?;
            let Some(last) = entries.last().map(|e| e.key.clone()) else {
                return Ok::<_, ReplError>(None);
            };
            let raw: u64 = entries.iter().map(SnapshotEntry::data_len).sum();
            Ok(Some((
                last,
                raw,
                proto::encode(&proto::pack_chunk(&entries)),
            )))
        })
        .await
        .map_err(|e| ReplError::Link(e.to_string()))??;
        let Some((last, raw, frame)) = chunk else {
            break;
        };
        after = Some(last);
        done += raw;
        uni.send_encoded(&frame).await?;
        sent += frame.len() as u64;
        repl.metrics.full_sync_bytes_sent.inc_by(frame.len() as u64);
        *lock(&session.last_used) = Instant::now();
        repl.with_primary(|p, _, _| p.full_sync_progress(session_id, done));
        if rate > 0 {
            // Pace the transfer so the primary keeps serving its clients.
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    uni.send(&SnapshotFrame::Done { seq }).await?;
    uni.finish();
    info!(replica = %node, %seq, bytes = done, "full sync sent; waiting for the install");
    match recv.recv::<ToPrimary>().await? {
        Some(ToPrimary::Installed { seq: installed }) if installed == seq => {}
        other => {
            return Err(ReplError::Protocol(format!(
                "expected Installed {{ seq: {seq} }}, got {other:?}"
            )));
        }
    }
    // IMPORTANT: the replica's own hold replaces the snapshot's before it goes.
    repl.with_primary(|p, now, out| p.stream(session_id, seq, now, out));
    repl.snapshots.remove(session.id);
    repl.metrics.full_syncs_completed.inc();
    info!(replica = %node, %seq, "full sync installed; streaming from the WAL");
    Ok(seq)
}

/// Streams records from `from` on, and takes the replica's acks, until
/// the link breaks.
async fn stream(
    repl: &Arc<Replication>,
    session: SessionId,
    mut next: Seq,
    send: &mut FrameSender,
    mut recv: FrameReceiver,
) -> Result<(), ReplError> {
    // Acks are read on their own task: a frame read must never be cut short.
    let (closed_tx, mut closed) = mpsc::channel::<ReplError>(1);
    let reader = {
        let repl = repl.clone();
        tokio::spawn(async move {
            let err = loop {
                match recv.recv::<ToPrimary>().await {
                    Ok(Some(ToPrimary::Ack { received, durable })) => {
                        repl.with_primary(|p, now, out| {
                            p.ack(session, received, durable, now, out);
                        });
                    }
                    Ok(Some(other)) => {
                        break ReplError::Protocol(format!("unexpected {other:?}"));
                    }
                    Ok(None) => break ReplError::Link("replica closed the stream".into()),
                    Err(e) => break e.into(),
                }
            };
            let _ = closed_tx.send(err).await;
        })
    };
    let result = send_records(repl, &mut next, send, &mut closed).await;
    reader.abort();
    result
}

async fn send_records(
    repl: &Arc<Replication>,
    next: &mut Seq,
    send: &mut FrameSender,
    closed: &mut mpsc::Receiver<ReplError>,
) -> Result<(), ReplError> {
    let mut applied = repl.store.watch_applied();
    let heartbeat = Duration::from_millis(repl.cfg.heartbeat_ms);
    loop {
        let last = *applied.borrow_and_update();
        if *next <= last {
            let records = match repl.store.records_from(*next, BATCH_BYTES).await {
                Ok(records) => records,
                Err(StoreError::NotRetained { from, first }) => {
                    return Err(ReplError::Protocol(format!(
                        "the WAL no longer holds seq {from} (oldest {first:?}); \
                         the replica will be re-seeded by a full sync"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(end) = records.last().map(|r| r.seq) {
                let n = records.len() as u64;
                let msg = ToReplica::Records {
                    records,
                    primary_last: last,
                };
                send.send(&msg).await?;
                repl.metrics.records_sent.inc_by(n);
                *next = end.next();
                continue;
            }
        }
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return Err(ReplError::Link("store closed".into()));
                }
            }
            () = tokio::time::sleep(heartbeat) => {
                send.send(&ToReplica::Heartbeat { primary_last: last }).await?;
            }
            err = closed.recv() => {
                return Err(err.unwrap_or_else(|| ReplError::Link("ack reader stopped".into())));
            }
        }
    }
}

/// Enforces WAL retention for replicas (I7) and drops idle snapshots.
pub(super) async fn retention(repl: Weak<Replication>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(repl) = repl.upgrade() else { return };
        let idle = Duration::from_secs(repl.cfg.retention_idle_secs);
        repl.snapshots
            .expire_idle(idle.min(Duration::from_secs(600)));
        let wal = repl.store.wal();
        repl.with_primary(|p, now, out| {
            p.tick(now, |seq| wal.bytes_from(seq), out);
            let released = out.iter().filter_map(|a| match a {
                super::core::Action::Release { replica } => Some(replica),
                _ => None,
            });
            for name in released {
                match p.replicas().get(name.as_str()) {
                    None => info!(replica = %name, "replica unseen for too long; no longer retaining WAL for it"),
                    Some(r) => warn!(
                        replica = %name, received = %r.received, budget = repl.cfg.retention_bytes,
                        "replica is behind the WAL retention budget; it will need a full sync"
                    ),
                }
            }
        });
    }
}

/// A cluster shard's primary, every 100 ms: which replicas should be in
/// its in-sync set, published for the cluster to commit.
pub(super) async fn judge_in_sync(repl: Weak<Replication>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(repl) = repl.upgrade() else { return };
        if !repl.is_primary() {
            continue;
        }
        let last = repl.store.applied_seq();
        let wanted = repl.with_primary(|p, now, _| p.wanted_in_sync(now, last));
        repl.in_sync_wanted.send_if_modified(|w| {
            let changed = *w != wanted;
            *w = wanted;
            changed
        });
    }
}
