//! The consensus library's type configuration, and the one place that maps
//! its types to ours (`wire.rs`) and back. A new major version of the
//! library changes this file and its trait implementations, never the
//! bytes of the wire or of the disk.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, EntryPayload, LogId, StoredMembership};

use super::wire::{
    AppendReply, Entry, LogPos, Member, MetaRequest, MetaResponse, Payload, SnapshotMeta, Vote,
};
use crate::cluster::map::{ClusterMap, MapCommand, MapError};
use crate::types::NodeId;

openraft::declare_raft_types!(
    /// The group's types as the consensus library sees them.
    pub(crate) Types:
        D = MapCommand,
        R = Applied,
        NodeId = u64,
        Node = Peer,
        Entry = openraft::Entry<Types>,
        SnapshotData = ClusterMap,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A member's node as the library keeps it: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Peer {
    /// `host:port` of its node-link endpoint.
    pub addr: String,
}

/// What applying one entry did to the map.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    /// The map's version after the entry.
    pub version: u64,
    /// Why the map refused the entry's command, if it did (the version is
    /// then unchanged; every node refuses it alike).
    pub refused: Option<MapError>,
}

pub(crate) type RaftLogId = LogId<u64>;
pub(crate) type RaftVote = openraft::Vote<u64>;
pub(crate) type RaftEntry = openraft::Entry<Types>;
pub(crate) type RaftMembership = openraft::Membership<u64, Peer>;
pub(crate) type RaftStored = StoredMembership<u64, Peer>;
pub(crate) type RaftSnapshotMeta = openraft::SnapshotMeta<u64, Peer>;

pub(crate) fn pos_of(id: &RaftLogId) -> LogPos {
    LogPos {
        term: id.leader_id.term,
        leader: NodeId(id.leader_id.node_id),
        index: id.index,
    }
}

pub(crate) fn log_id_of(pos: LogPos) -> RaftLogId {
    LogId::new(CommittedLeaderId::new(pos.term, pos.leader.0), pos.index)
}

pub(crate) fn opt_pos(id: Option<&RaftLogId>) -> Option<LogPos> {
    id.map(pos_of)
}

pub(crate) fn opt_log_id(pos: Option<LogPos>) -> Option<RaftLogId> {
    pos.map(log_id_of)
}

pub(crate) fn vote_of(vote: &RaftVote) -> Vote {
    Vote {
        term: vote.leader_id.term,
        node: NodeId(vote.leader_id.node_id),
        committed: vote.committed,
    }
}

pub(crate) fn raft_vote(vote: Vote) -> RaftVote {
    if vote.committed {
        RaftVote::new_committed(vote.term, vote.node.0)
    } else {
        RaftVote::new(vote.term, vote.node.0)
    }
}

pub(crate) fn membership_of(m: &RaftMembership) -> super::wire::Membership {
    super::wire::Membership {
        voters: m
            .get_joint_config()
            .iter()
            .map(|set| set.iter().map(|&id| NodeId(id)).collect())
            .collect(),
        members: m
            .nodes()
            .map(|(&id, peer)| Member {
                id: NodeId(id),
                addr: peer.addr.clone(),
            })
            .collect(),
    }
}

pub(crate) fn raft_membership(m: &super::wire::Membership) -> RaftMembership {
    let configs: Vec<BTreeSet<u64>> = m
        .voters
        .iter()
        .map(|set| set.iter().map(|id| id.0).collect())
        .collect();
    let nodes: BTreeMap<u64, Peer> = m
        .members
        .iter()
        .map(|member| {
            let peer = Peer {
                addr: member.addr.clone(),
            };
            (member.id.0, peer)
        })
        .collect();
    openraft::Membership::new(configs, nodes)
}

pub(crate) fn entry_of(entry: &RaftEntry) -> Entry {
    let payload = match &entry.payload {
        EntryPayload::Blank => Payload::Blank,
        EntryPayload::Normal(cmd) => Payload::Command(cmd.clone()),
        EntryPayload::Membership(m) => Payload::Membership(membership_of(m)),
    };
    Entry {
        pos: pos_of(&entry.log_id),
        payload,
    }
}

pub(crate) fn raft_entry(entry: Entry) -> RaftEntry {
    let payload = match entry.payload {
        Payload::Blank => EntryPayload::Blank,
        Payload::Command(cmd) => EntryPayload::Normal(cmd),
        Payload::Membership(m) => EntryPayload::Membership(raft_membership(&m)),
    };
    openraft::Entry {
        log_id: log_id_of(entry.pos),
        payload,
    }
}

pub(crate) fn snapshot_meta_of(meta: &RaftSnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        last: opt_pos(meta.last_log_id.as_ref()),
        membership_pos: opt_pos(meta.last_membership.log_id().as_ref()),
        membership: membership_of(meta.last_membership.membership()),
        id: meta.snapshot_id.clone(),
    }
}

pub(crate) fn raft_snapshot_meta(meta: &SnapshotMeta) -> RaftSnapshotMeta {
    openraft::SnapshotMeta {
        last_log_id: opt_log_id(meta.last),
        last_membership: StoredMembership::new(
            opt_log_id(meta.membership_pos),
            raft_membership(&meta.membership),
        ),
        snapshot_id: meta.id.clone(),
    }
}

// --- RPC messages -----------------------------------------------------------

pub(crate) fn vote_request(rpc: &openraft::raft::VoteRequest<u64>) -> MetaRequest {
    MetaRequest::Vote {
        vote: vote_of(&rpc.vote),
        last: opt_pos(rpc.last_log_id.as_ref()),
    }
}

pub(crate) fn append_request(rpc: &openraft::raft::AppendEntriesRequest<Types>) -> MetaRequest {
    MetaRequest::Append {
        vote: vote_of(&rpc.vote),
        prev: opt_pos(rpc.prev_log_id.as_ref()),
        entries: rpc.entries.iter().map(entry_of).collect(),
        commit: opt_pos(rpc.leader_commit.as_ref()),
    }
}

pub(crate) fn vote_reply(resp: &openraft::raft::VoteResponse<u64>) -> MetaResponse {
    MetaResponse::Vote {
        vote: vote_of(&resp.vote),
        granted: resp.vote_granted,
        last: opt_pos(resp.last_log_id.as_ref()),
    }
}

pub(crate) fn raft_vote_reply(
    vote: Vote,
    granted: bool,
    last: Option<LogPos>,
) -> openraft::raft::VoteResponse<u64> {
    openraft::raft::VoteResponse {
        vote: raft_vote(vote),
        vote_granted: granted,
        last_log_id: opt_log_id(last),
    }
}

pub(crate) fn append_reply(resp: &openraft::raft::AppendEntriesResponse<u64>) -> AppendReply {
    use openraft::raft::AppendEntriesResponse as R;
    match resp {
        R::Success => AppendReply::Success,
        R::PartialSuccess(matching) => AppendReply::PartialSuccess {
            matching: opt_pos(matching.as_ref()),
        },
        R::Conflict => AppendReply::Conflict,
        R::HigherVote(vote) => AppendReply::HigherVote {
            vote: vote_of(vote),
        },
    }
}

pub(crate) fn raft_append_reply(reply: AppendReply) -> openraft::raft::AppendEntriesResponse<u64> {
    use openraft::raft::AppendEntriesResponse as R;
    match reply {
        AppendReply::Success => R::Success,
        AppendReply::PartialSuccess { matching } => R::PartialSuccess(opt_log_id(matching)),
        AppendReply::Conflict => R::Conflict,
        AppendReply::HigherVote { vote } => R::HigherVote(raft_vote(vote)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        let pos = LogPos {
            term: 4,
            leader: NodeId(9),
            index: 12,
        };
        assert_eq!(pos_of(&log_id_of(pos)), pos);
        for committed in [false, true] {
            let vote = Vote {
                term: 4,
                node: NodeId(9),
                committed,
            };
            assert_eq!(vote_of(&raft_vote(vote)), vote);
        }
        let membership = super::super::wire::Membership {
            voters: vec![vec![NodeId(1), NodeId(2)], vec![NodeId(2), NodeId(3)]],
            members: (1..=4)
                .map(|id| Member {
                    id: NodeId(id),
                    addr: format!("127.0.0.1:{id}"),
                })
                .collect(),
        };
        assert_eq!(membership_of(&raft_membership(&membership)), membership);
        for payload in [
            Payload::Blank,
            Payload::Command(MapCommand::Create { vnodes: 8 }),
            Payload::Membership(membership.clone()),
        ] {
            let entry = Entry { pos, payload };
            assert_eq!(entry_of(&raft_entry(entry.clone())), entry);
        }
        for reply in [
            AppendReply::Success,
            AppendReply::PartialSuccess {
                matching: Some(pos),
            },
            AppendReply::PartialSuccess { matching: None },
            AppendReply::Conflict,
            AppendReply::HigherVote {
                vote: Vote {
                    term: 1,
                    node: NodeId(2),
                    committed: true,
                },
            },
        ] {
            assert_eq!(append_reply(&raft_append_reply(reply)), reply);
        }
    }
}
