//! Outgoing RPCs: one QUIC link per peer (ALPN [`META_ALPN`]), one
//! bi-stream per RPC carrying one request frame and one response frame.
//!
//! Everything is bounded: a connection attempt by the connect timeout, an
//! RPC by the library's deadline (heartbeat interval for appends, election
//! timeout for votes) or ours for snapshots, a frame by
//! [`MAX_META_FRAME_BYTES`]. A peer that is down costs one timed-out
//! attempt per retry period and never holds up the others: each peer has
//! its own replication task and its own link slot.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, PayloadTooLarge, RPCError, RaftError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot};

use super::MetaTiming;
use super::convert::{self, Peer, RaftVote, Types};
use super::wire::{MAX_META_FRAME_BYTES, META_ALPN, MetaRequest, MetaResponse};
use crate::net::link::{FRAME_HEADER_BYTES, Link, LinkEndpoint, LinkError, encode};
use crate::sync::lock;
use crate::types::NodeId;

/// Why one RPC failed, before the library's classification.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RpcFailure {
    /// No link to the peer: connecting failed or timed out (back off).
    #[error("peer {target} at {addr} unreachable: {reason}")]
    Unreachable {
        target: u64,
        addr: String,
        reason: String,
    },
    /// The link broke during the exchange, or the peer refused it.
    #[error("rpc to peer {target}: {reason}")]
    Failed { target: u64, reason: String },
    /// The request is over the frame limit.
    #[error("rpc to peer {target}: request of {bytes} bytes is over {MAX_META_FRAME_BYTES}")]
    TooLarge { target: u64, bytes: usize },
}

/// One peer's link, shared by every RPC to it (the library opens several
/// clients per peer: replication, elections).
type LinkSlot = Arc<tokio::sync::Mutex<Option<Link>>>;

/// Makes the per-peer RPC clients; holds the link of every peer.
#[derive(Clone)]
pub(crate) struct Network {
    endpoint: LinkEndpoint,
    timing: MetaTiming,
    links: Arc<Mutex<HashMap<u64, LinkSlot>>>,
}

impl Network {
    pub(crate) fn new(endpoint: LinkEndpoint, timing: MetaTiming) -> Network {
        Network {
            endpoint,
            timing,
            links: Arc::default(),
        }
    }
}

impl Network {
    /// A client of peer `target` at `addr`, sharing its link with the
    /// group's own RPCs.
    pub(crate) fn peer(&self, target: u64, addr: String) -> PeerClient {
        let slot = lock(&self.links).entry(target).or_default().clone();
        PeerClient {
            target,
            addr,
            endpoint: self.endpoint.clone(),
            timing: self.timing.clone(),
            slot,
        }
    }
}

impl RaftNetworkFactory<Types> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &Peer) -> PeerClient {
        self.peer(target, node.addr.clone())
    }
}

/// RPCs to one peer.
pub(crate) struct PeerClient {
    target: u64,
    addr: String,
    endpoint: LinkEndpoint,
    timing: MetaTiming,
    slot: LinkSlot,
}

/// `host` of `host:port` (brackets of an IPv6 literal removed): the name
/// the peer's certificate must carry.
fn host_of(addr: &str) -> Option<&str> {
    crate::net::split_host_port(addr).map(|(host, _)| host)
}

impl PeerClient {
    fn unreachable(&self, reason: impl ToString) -> RpcFailure {
        RpcFailure::Unreachable {
            target: self.target,
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    fn failed(&self, reason: impl ToString) -> RpcFailure {
        RpcFailure::Failed {
            target: self.target,
            reason: reason.to_string(),
        }
    }

    /// The peer's link, made if need be. The attempt runs in a task of its
    /// own, so an RPC given up on by its deadline still leaves the link
    /// ready for the next one.
    async fn link(&self) -> Result<Link, RpcFailure> {
        if let Ok(held) = self.slot.try_lock()
            && let Some(link) = held.as_ref().filter(|link| !link.is_closed())
        {
            return Ok(link.clone());
        }
        let slot = self.slot.clone();
        let endpoint = self.endpoint.clone();
        let (target, addr) = (self.target, self.addr.clone());
        let timeout = Duration::from_millis(self.timing.connect_timeout_ms);
        let attempt = tokio::spawn(async move {
            let mut held = slot.lock().await;
            if let Some(link) = held.as_ref().filter(|link| !link.is_closed()) {
                return Ok(link.clone());
            }
            *held = None;
            let link = connect(&endpoint, target, &addr, timeout).await?;
            *held = Some(link.clone());
            Ok(link)
        });
        match attempt.await {
            Ok(result) => result.map_err(|reason: String| self.unreachable(reason)),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    /// Closes `link` after a failure on it and forgets it, so the next
    /// RPC makes a new one (unless another has replaced it already).
    async fn drop_link(&self, link: &Link) {
        link.close(0, "rpc failed");
        let mut held = self.slot.lock().await;
        if held.as_ref().is_some_and(Link::is_closed) {
            *held = None;
        }
    }

    /// Sends `request` and waits for its response, within `deadline`.
    pub(crate) async fn call(
        &self,
        request: &MetaRequest,
        deadline: Duration,
    ) -> Result<MetaResponse, RpcFailure> {
        let frame = encode(request);
        if frame.len() - FRAME_HEADER_BYTES > MAX_META_FRAME_BYTES as usize {
            return Err(RpcFailure::TooLarge {
                target: self.target,
                bytes: frame.len(),
            });
        }
        let started = tokio::time::Instant::now();
        // No link by the deadline counts as unreachable, so the library
        // backs off while the attempt goes on in its own task.
        let link = tokio::time::timeout(deadline, self.link())
            .await
            .map_err(|_| self.unreachable(format!("no link within {deadline:?}")))??;
        let left = deadline.saturating_sub(started.elapsed());
        let response = match tokio::time::timeout(left, exchange(&link, &frame)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                self.drop_link(&link).await;
                return Err(self.failed(e));
            }
            Err(_) => return Err(self.failed(format!("no response within {deadline:?}"))),
        };
        if let MetaResponse::Refused { reason } = &response {
            return Err(self.failed(format!("refused: {reason}")));
        }
        Ok(response)
    }

    fn unexpected(&self, response: &MetaResponse) -> RpcFailure {
        self.failed(format!("unexpected response {response:?}"))
    }
}

/// One request frame out, one response frame back, on a new stream.
async fn exchange(link: &Link, frame: &[u8]) -> Result<MetaResponse, LinkError> {
    let (mut send, mut recv) = link.open().await?;
    send.send_encoded(frame).await?;
    send.finish();
    recv.recv_bounded::<MetaResponse>(MAX_META_FRAME_BYTES)
        .await?
        .ok_or_else(|| LinkError::Transport("stream ended without a response".into()))
}

/// Opens a link to node `target` at `addr` and checks that the node that
/// answered is `target` (its certificate names the node; the cluster CA
/// vouches for the name).
async fn connect(
    endpoint: &LinkEndpoint,
    target: u64,
    addr: &str,
    timeout: Duration,
) -> Result<Link, String> {
    let host = host_of(addr).ok_or_else(|| format!("bad address {addr:?}"))?;
    let resolve = tokio::time::timeout(timeout, tokio::net::lookup_host(addr));
    let socket: SocketAddr = resolve
        .await
        .map_err(|_| format!("resolving {addr} took over {timeout:?}"))?
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let link = endpoint
        .connect_for(socket, host, META_ALPN, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let name = link.peer_name().unwrap_or_default();
    if NodeId::of_name(&name).0 != target {
        link.close(0, "not the node asked for");
        return Err(format!("{addr} is node {name:?}, not node {target}"));
    }
    tracing::debug!(target, addr, "metadata link up");
    Ok(link)
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, Peer, RaftError<u64, E>>>;

/// The library's name for a failure: unreachable peers are backed off.
fn rpc_error<E: std::error::Error>(failure: RpcFailure) -> RPCError<u64, Peer, RaftError<u64, E>> {
    match failure {
        RpcFailure::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&failure)),
        RpcFailure::TooLarge { .. } => RPCError::Network(NetworkError::new(&failure)),
        RpcFailure::Failed { .. } => RPCError::Network(NetworkError::new(&failure)),
    }
}

impl RaftNetwork<Types> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        let entries = rpc.entries.len() as u64;
        let request = convert::append_request(&rpc);
        match self.call(&request, option.hard_ttl()).await {
            Ok(MetaResponse::Append(reply)) => Ok(convert::raft_append_reply(reply)),
            Ok(other) => Err(rpc_error(self.unexpected(&other))),
            Err(RpcFailure::TooLarge { .. }) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            )),
            Err(failure) => Err(rpc_error(failure)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        let request = convert::vote_request(&rpc);
        match self.call(&request, option.hard_ttl()).await {
            Ok(MetaResponse::Vote {
                vote,
                granted,
                last,
            }) => Ok(convert::raft_vote_reply(vote, granted, last)),
            Ok(other) => Err(rpc_error(self.unexpected(&other))),
            Err(failure) => Err(rpc_error(failure)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: RaftVote,
        snapshot: Snapshot<Types>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<Types, Fatal<u64>>> {
        let request = MetaRequest::Snapshot {
            vote: convert::vote_of(&vote),
            meta: convert::snapshot_meta_of(&snapshot.meta),
            map: snapshot.snapshot,
        };
        let deadline = Duration::from_millis(self.timing.rpc_timeout_ms);
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            result = self.call(&request, deadline) => result,
        };
        match result {
            Ok(MetaResponse::Snapshot { vote }) => {
                Ok(SnapshotResponse::new(convert::raft_vote(vote)))
            }
            Ok(other) => Err(StreamingError::Network(NetworkError::new(
                &self.unexpected(&other),
            ))),
            Err(failure @ RpcFailure::Unreachable { .. }) => {
                Err(StreamingError::Unreachable(Unreachable::new(&failure)))
            }
            Err(failure) => Err(StreamingError::Network(NetworkError::new(&failure))),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(
            self.timing.retry_ms,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7000"), Some("127.0.0.1"));
        assert_eq!(host_of("[::1]:7000"), Some("::1"));
        assert_eq!(host_of("node-1.example:1"), Some("node-1.example"));
        assert_eq!(host_of("nohost"), None);
        assert_eq!(host_of("h:notaport"), None);
    }
}
