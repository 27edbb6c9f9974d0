//! The messages of the cluster-metadata group, as they travel and as they
//! are stored: our own types, encoded with postcard, specified byte by byte
//! in proto-docs/cluster.md §5 ("The metadata log").
//!
//! Nothing here knows the consensus library: `convert.rs` maps these to
//! and from its types, so the bytes stay what the spec says whatever the
//! library's own layout does. Every enum names a variant by its index:
//! variants are only ever appended, never reordered, removed or changed in
//! their fields; a change that cannot be expressed by a new variant takes a
//! new ALPN ([`META_ALPN`]).

use serde::{Deserialize, Serialize};

use crate::cluster::health::{LeaseReply, NodeReport};
use crate::cluster::map::{ClusterMap, MapCommand};
use crate::cluster::ring::ShardId;
use crate::types::NodeId;

/// The QUIC ALPN protocol id of cluster-metadata links; beside
/// [`crate::net::REPL_ALPN`] on the same node-link endpoint.
pub const META_ALPN: &[u8] = b"strata-raft/5";

/// Largest request or response body either side accepts (a snapshot of
/// the map is one message; 32 MiB is some hundred thousand nodes).
pub const MAX_META_FRAME_BYTES: u32 = 32 << 20;

/// The position of one log entry: the term and node of the leader that
/// created it, and its index (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPos {
    /// The leader's term.
    pub term: u64,
    /// The leader.
    pub leader: NodeId,
    /// The entry's index.
    pub index: u64,
}

/// A vote: the candidate or leader `node` in `term`; `committed` once a
/// quorum granted it (the node is then the term's leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The term.
    pub term: u64,
    /// Who the vote is for.
    pub node: NodeId,
    /// Granted by a quorum.
    pub committed: bool,
}

/// One member of the group and where its node-link endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// `host:port` of its node-link endpoint; the host is also the name
    /// its certificate must carry.
    pub addr: String,
}

/// The group's membership: one voter set, or two while a change is in
/// joint consensus; every member, voters and learners, with its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voter sets, each in ascending id order.
    pub voters: Vec<Vec<NodeId>>,
    /// Every member in ascending id order; those in no voter set are learners.
    pub members: Vec<Member>,
}

/// What one log entry carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// 0: nothing (a new leader's first entry).
    Blank,
    /// 1: a change to the cluster map.
    Command(MapCommand),
    /// 2: a new membership of the group.
    Membership(Membership),
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its position.
    pub pos: LogPos,
    /// What it carries.
    pub payload: Payload,
}

/// What a snapshot covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last entry applied to the map it holds.
    pub last: Option<LogPos>,
    /// The entry that set `membership`.
    pub membership_pos: Option<LogPos>,
    /// The membership as of `last`.
    pub membership: Membership,
    /// Names this snapshot among those built from the same entry.
    pub id: String,
}

/// A request: the first frame on a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaRequest {
    /// 0: a candidate asks for a vote.
    Vote {
        /// The candidate's vote for itself.
        vote: Vote,
        /// The candidate's last log entry.
        last: Option<LogPos>,
    },
    /// 1: a leader appends entries (none: a heartbeat).
    Append {
        /// The leader's vote.
        vote: Vote,
        /// The entry right before `entries`.
        prev: Option<LogPos>,
        /// Entries to append, consecutive.
        entries: Vec<Entry>,
        /// The leader's last committed entry.
        commit: Option<LogPos>,
    },
    /// 2: a leader replaces the receiver's state with a whole snapshot.
    Snapshot {
        /// The leader's vote.
        vote: Vote,
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The map as of `meta.last`.
        map: Box<ClusterMap>,
    },
    /// 3: a node's heartbeat to the leader: its state, for failure
    /// detection; a shard primary gets its write lease in the answer.
    Report(NodeReport),
    /// 4: a shard's primary asks the leader to commit its in-sync set.
    InSync(InSyncChange),
    /// 5: a receiving shard's primary asks the leader to commit a step of
    /// a migration.
    Import(ImportStep),
    /// 6: a member asks the leader to commit its RESP gateway's address.
    Gateway(GatewayAddr),
}

/// What a member asks for in [`MetaRequest::Gateway`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayAddr {
    /// The asking node (its certificate must name it).
    pub node: NodeId,
    /// Where its gateway serves Redis clients; empty: it has none.
    pub addr: String,
}

/// What a receiving shard's primary asks for in [`MetaRequest::Import`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportStep {
    /// The asking node: the shard's primary (its certificate must name it).
    pub node: NodeId,
    /// The migration.
    pub id: u64,
    /// Its shard, receiving slots.
    pub shard: ShardId,
    /// The shard's epoch it is primary of.
    pub epoch: u64,
    /// `false`: ready (`ImportReady`); `true`: done (`ImportDone`).
    pub done: bool,
}

/// What a shard's primary asks for in [`MetaRequest::InSync`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InSyncChange {
    /// The asking node: the shard's primary (its certificate must name it).
    pub node: NodeId,
    /// Its shard.
    pub shard: ShardId,
    /// The shard's epoch it is primary of.
    pub epoch: u64,
    /// The replicas whose acks it should count.
    pub in_sync: Vec<NodeId>,
}

/// How a follower answered [`MetaRequest::Append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendReply {
    /// 0: every entry is in its log.
    Success,
    /// 1: entries up to `matching` are in its log, the rest not yet.
    PartialSuccess {
        /// The last entry known to match.
        matching: Option<LogPos>,
    },
    /// 2: its log does not hold `prev`: the leader steps back.
    Conflict,
    /// 3: it has seen a newer vote: the sender is no longer leader.
    HigherVote {
        /// That vote.
        vote: Vote,
    },
}

/// A response: the only frame on a stream's way back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// 0: to [`MetaRequest::Vote`].
    Vote {
        /// The receiver's vote after the request.
        vote: Vote,
        /// Whether it voted for the candidate.
        granted: bool,
        /// The receiver's last log entry.
        last: Option<LogPos>,
    },
    /// 1: to [`MetaRequest::Append`].
    Append(AppendReply),
    /// 2: to [`MetaRequest::Snapshot`]: the receiver's vote after it.
    Snapshot {
        /// The vote.
        vote: Vote,
    },
    /// 3: the receiver could not serve the request (shutting down,
    /// undecodable, a storage failure); the sender retries later.
    Refused {
        /// Why, for the log.
        reason: String,
    },
    /// 4: to [`MetaRequest::Report`].
    Lease(LeaseReply),
    /// 5: to [`MetaRequest::InSync`], [`MetaRequest::Import`] and
    /// [`MetaRequest::Gateway`]: committed; the map's version.
    Committed {
        /// The version.
        version: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ring::ShardId;
    use crate::net::link::encode;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    const CLUSTER_DOC: &str = include_str!("../../../proto-docs/cluster.md");

    /// The worked examples of proto-docs/cluster.md §5: each frame there,
    /// byte for byte, is what the code sends.
    fn examples() -> Vec<(&'static str, Vec<u8>)> {
        let pos = LogPos {
            term: 2,
            leader: NodeId(7),
            index: 5,
        };
        let vote = MetaRequest::Vote {
            vote: Vote {
                term: 3,
                node: NodeId(7),
                committed: false,
            },
            last: Some(pos),
        };
        let append = MetaRequest::Append {
            vote: Vote {
                term: 2,
                node: NodeId(7),
                committed: true,
            },
            prev: Some(pos),
            entries: vec![Entry {
                pos: LogPos { index: 6, ..pos },
                payload: Payload::Command(MapCommand::Create { vnodes: 256 }),
            }],
            commit: Some(pos),
        };
        let reply = MetaResponse::Append(AppendReply::Conflict);
        let add = Payload::Command(MapCommand::AddNode {
            id: NodeId(1),
            info: crate::cluster::map::NodeInfo {
                name: "n1".into(),
                client_addr: "a:1".into(),
                link_addr: "b:2".into(),
                shard: ShardId(3),
            },
        });
        let mut map = ClusterMap::new();
        map.apply(MapCommand::Create { vnodes: 4 }).unwrap();
        map.apply(MapCommand::AddShard {
            id: ShardId(1),
            primary: NodeId::of_name("n1"),
            info: crate::cluster::map::NodeInfo {
                name: "n1".into(),
                client_addr: "a:1".into(),
                link_addr: "b:2".into(),
                shard: ShardId(1),
            },
        })
        .unwrap();
        vec![
            ("map", postcard::to_stdvec(&map).unwrap()),
            ("vote", encode(&vote)),
            ("append", encode(&append)),
            ("conflict", encode(&reply)),
            ("add-node", postcard::to_stdvec(&add).unwrap()),
            ("report", encode(&MetaRequest::Report(report_sample()))),
            (
                "gateway",
                encode(&MetaRequest::Gateway(GatewayAddr {
                    node: NodeId(7),
                    addr: "h:6379".into(),
                })),
            ),
            (
                "in-sync",
                encode(&MetaRequest::InSync(InSyncChange {
                    node: NodeId(7),
                    shard: ShardId(3),
                    epoch: 2,
                    in_sync: vec![NodeId(9)],
                })),
            ),
            (
                "committed",
                encode(&MetaResponse::Committed { version: 12 }),
            ),
            (
                "lease",
                encode(&MetaResponse::Lease(LeaseReply {
                    granted_ms: 2000,
                    map_version: 9,
                })),
            ),
        ]
    }

    fn report_sample() -> NodeReport {
        NodeReport {
            node: NodeId(7),
            map_version: 9,
            primary: true,
            repl_id: [0xab; 16],
            epoch: 2,
            applied_seq: 300,
            full_sync: false,
        }
    }

    #[test]
    fn worked_examples_match_the_doc() {
        for (name, bytes) in examples() {
            let marker = format!("<!-- bytes: {name} -->");
            let at = CLUSTER_DOC
                .find(&marker)
                .unwrap_or_else(|| panic!("no {marker} in the doc"));
            let block = &CLUSTER_DOC[at + marker.len()..];
            let start = block.find("```text\n").expect("a text block") + 8;
            let end = block[start..].find("```").expect("closed block") + start;
            let doc: String = block[start..end]
                .lines()
                .map(|line| line.split('#').next().unwrap_or("").trim())
                .filter(|hexes| !hexes.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(doc, hex(&bytes), "example {name}");
        }
    }

    #[test]
    fn messages_round_trip() {
        let map = {
            let mut map = ClusterMap::new();
            map.apply(MapCommand::Create { vnodes: 4 }).unwrap();
            map
        };
        let snapshot = MetaRequest::Snapshot {
            vote: Vote {
                term: 9,
                node: NodeId(u64::MAX),
                committed: true,
            },
            meta: SnapshotMeta {
                last: None,
                membership_pos: None,
                membership: Membership {
                    voters: vec![vec![NodeId(1), NodeId(2)], vec![NodeId(2)]],
                    members: vec![Member {
                        id: NodeId(1),
                        addr: "127.0.0.1:9".into(),
                    }],
                },
                id: "s-1".into(),
            },
            map: Box::new(map),
        };
        let bytes = postcard::to_stdvec(&snapshot).unwrap();
        assert_eq!(
            postcard::from_bytes::<MetaRequest>(&bytes).unwrap(),
            snapshot
        );
        for (_, frame) in examples().into_iter().skip(1).take(2) {
            let body = &frame[crate::net::link::FRAME_HEADER_BYTES..];
            let back: MetaRequest = postcard::from_bytes(body).unwrap();
            assert_eq!(encode(&back), frame);
        }
    }
}
