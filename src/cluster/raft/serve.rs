//! Incoming RPCs: links speaking [`META_ALPN`], each bi-stream one request
//! frame answered by one response frame.

use std::time::Duration;

use openraft::Raft;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::Snapshot;
use tokio::task::JoinSet;

use super::Reports;
use super::convert::{self, Types};
use super::wire::{MAX_META_FRAME_BYTES, META_ALPN, MetaRequest, MetaResponse};
use crate::net::link::{FrameReceiver, FrameSender, Incoming, Link, LinkEndpoint};
use crate::types::NodeId;

/// What incoming RPCs are served by: the group, and the node's handler
/// of heartbeats.
#[derive(Clone)]
pub(crate) struct Served {
    pub(crate) raft: Raft<Types>,
    pub(crate) reports: Reports,
    pub(crate) map: tokio::sync::watch::Receiver<std::sync::Arc<crate::cluster::ClusterMap>>,
}

/// Accepts links on `endpoint` until it closes: those speaking
/// [`META_ALPN`] are served, any other is closed (an endpoint shared with
/// another protocol dispatches itself and calls [`serve_link`] instead).
pub(crate) async fn accept_loop(endpoint: LinkEndpoint, served: Served, bound: Duration) {
    let mut links = JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        links.spawn(handshake(incoming, served.clone(), bound));
        while links.try_join_next().is_some() {}
    }
}

async fn handshake(incoming: Incoming, served: Served, bound: Duration) {
    let remote = incoming.remote_address();
    let link = match tokio::time::timeout(bound, incoming.accept()).await {
        Ok(Ok(link)) => link,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "metadata link handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "metadata link handshake timed out");
            return;
        }
    };
    if link.alpn().as_deref() != Some(META_ALPN) {
        link.close(0, "not a metadata link");
        return;
    }
    serve_link(link, served, bound).await;
}

/// Serves the RPCs of one link until it closes; each request may take
/// `bound` to arrive.
pub(crate) async fn serve_link(link: Link, served: Served, bound: Duration) {
    let Some(peer) = link.peer_name() else {
        link.close(0, "no node name in the certificate");
        return;
    };
    tracing::debug!(peer, remote = %link.remote_address(), "metadata link accepted");
    let peer_id = NodeId::of_name(&peer);
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = link.accept() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(serve_stream(served.clone(), peer_id, send, recv, bound));
                }
                Err(e) => {
                    tracing::debug!(peer, error = %e, "metadata link closed");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

async fn serve_stream(
    served: Served,
    peer: NodeId,
    mut send: FrameSender,
    mut recv: FrameReceiver,
    bound: Duration,
) {
    let request = tokio::time::timeout(bound, recv.recv_bounded(MAX_META_FRAME_BYTES)).await;
    let response = match request {
        Ok(Ok(Some(request))) => match speaker(&request) {
            // A node speaks only for itself: its certificate names it, so
            // no member can stand or lead in another's name.
            node if node != peer => MetaResponse::Refused {
                reason: format!(
                    "a request in the name of node {} from node {}",
                    node.0, peer.0
                ),
            },
            _ => dispatch(&served, request).await,
        },
        Ok(Ok(None)) => return,
        Ok(Err(e)) => MetaResponse::Refused {
            reason: e.to_string(),
        },
        Err(_) => return,
    };
    if send.send(&response).await.is_ok() {
        send.finish();
    }
}

/// The node a request speaks for: the candidate or the leader.
fn speaker(request: &MetaRequest) -> NodeId {
    match request {
        MetaRequest::Vote { vote, .. }
        | MetaRequest::Append { vote, .. }
        | MetaRequest::Snapshot { vote, .. } => vote.node,
        MetaRequest::Report(report) => report.node,
        MetaRequest::InSync(change) => change.node,
        MetaRequest::Import(step) => step.node,
        MetaRequest::Gateway(gateway) => gateway.node,
    }
}

/// Hands one request to the group and words its answer.
async fn dispatch(served: &Served, request: MetaRequest) -> MetaResponse {
    let raft = &served.raft;
    let refused = |e: &dyn std::fmt::Display| MetaResponse::Refused {
        reason: e.to_string(),
    };
    match request {
        MetaRequest::Vote { vote, last } => {
            let rpc = VoteRequest::new(convert::raft_vote(vote), convert::opt_log_id(last));
            match raft.vote(rpc).await {
                Ok(resp) => convert::vote_reply(&resp),
                Err(e) => refused(&e),
            }
        }
        MetaRequest::Append {
            vote,
            prev,
            entries,
            commit,
        } => {
            let rpc = AppendEntriesRequest {
                vote: convert::raft_vote(vote),
                prev_log_id: convert::opt_log_id(prev),
                entries: entries.into_iter().map(convert::raft_entry).collect(),
                leader_commit: convert::opt_log_id(commit),
            };
            match raft.append_entries(rpc).await {
                Ok(resp) => MetaResponse::Append(convert::append_reply(&resp)),
                Err(e) => refused(&e),
            }
        }
        MetaRequest::Snapshot { vote, meta, map } => {
            let snapshot = Snapshot {
                meta: convert::raft_snapshot_meta(&meta),
                snapshot: map,
            };
            match raft
                .install_full_snapshot(convert::raft_vote(vote), snapshot)
                .await
            {
                Ok(resp) => MetaResponse::Snapshot {
                    vote: convert::vote_of(&resp.vote),
                },
                Err(e) => refused(&e),
            }
        }
        MetaRequest::Report(report) => match served.reports.answer(report).await {
            Ok(lease) => MetaResponse::Lease(lease),
            Err(e) => refused(&e),
        },
        MetaRequest::InSync(_) | MetaRequest::Import(_) | MetaRequest::Gateway(_) => {
            let map = served.map.borrow().clone();
            match super::commit_for_member(raft, &map, request).await {
                Ok(version) => MetaResponse::Committed { version },
                Err(e) => refused(&e),
            }
        }
    }
}
