//! Groups of real members on loopback QUIC with real certificates: each
//! test waits for events (the map channel, the status channel), never for
//! time; `BOUND` only keeps a broken test from hanging.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cluster::map::NodeInfo;
use crate::cluster::ring::ShardId;
use crate::net::TransportLimits;
use crate::net::tls::test_certs::{cluster_identities, node_cert, test_ca, write_cluster_files};
use crate::net::tls::{ClusterIdentity, ClusterTls, REPL_ALPN};

const BOUND: Duration = Duration::from_secs(30);

/// Short but sane: elections well above a loopback round trip.
fn timing() -> MetaTiming {
    MetaTiming {
        heartbeat_ms: 50,
        election_min_ms: 600,
        election_max_ms: 1200,
        connect_timeout_ms: 500,
        rpc_timeout_ms: 5000,
        retry_ms: 100,
    }
}

/// One node: its identity, endpoint and data directory, and its member
/// of the group while it runs.
struct Node {
    id: NodeId,
    dir: PathBuf,
    addr: String,
    endpoint: LinkEndpoint,
    inbound: Inbound,
    group: Option<Arc<MetaGroup>>,
    /// With [`Inbound::Dispatched`]: the node's own accept loop.
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// A node whose endpoint serves only the group's protocol
    /// ([`Inbound::Accept`]), or also replication's, accepted by the node
    /// ([`Inbound::Dispatched`]).
    fn new(root: &Path, identity: ClusterIdentity, inbound: Inbound) -> Node {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let limits = TransportLimits {
            keep_alive: Some(Duration::from_secs(1)),
            ..TransportLimits::default()
        };
        let id = identity.node_id();
        let dir = root.join(identity.name());
        let alpns: &[&[u8]] = match inbound {
            Inbound::Accept => &[META_ALPN],
            Inbound::Dispatched => &[REPL_ALPN, META_ALPN],
        };
        let endpoint = LinkEndpoint::listen_for(loopback, identity, limits, alpns).unwrap();
        let addr = format!("127.0.0.1:{}", endpoint.local_addr().unwrap().port());
        Node {
            id,
            dir,
            addr,
            endpoint,
            inbound,
            group: None,
            dispatcher: None,
        }
    }

    /// Starts (or restarts, from the same directory) its member.
    async fn start(&mut self, snapshots: (u64, u64)) {
        let config = MetaConfig::new(self.dir.clone(), self.addr.clone(), self.endpoint.clone())
            .with_inbound(self.inbound)
            .with_timing(timing())
            .with_snapshots(snapshots.0, snapshots.1);
        let group = Arc::new(MetaGroup::start(config).await.unwrap());
        if self.inbound == Inbound::Dispatched {
            self.dispatcher = Some(tokio::spawn(dispatch(self.endpoint.clone(), group.clone())));
        }
        self.group = Some(group);
    }

    fn group(&self) -> &MetaGroup {
        self.group.as_ref().expect("a running member")
    }

    async fn stop(&mut self) {
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.abort();
        }
        if let Some(group) = self.group.take() {
            group.shutdown().await;
        }
    }

    async fn await_version(&self, version: u64) -> Arc<ClusterMap> {
        let mut map = self.group().map();
        let seen = tokio::time::timeout(BOUND, map.wait_for(|m| m.version() >= version))
            .await
            .unwrap_or_else(|_| panic!("node {} never saw version {version}", self.id.0))
            .unwrap();
        seen.clone()
    }

    async fn await_leader(&self, not: Option<NodeId>) -> NodeId {
        let status = self
            .group()
            .await_status(BOUND, "a new leader", |s| {
                s.leader.is_some() && s.leader != not
            })
            .await
            .unwrap();
        status.leader.unwrap()
    }
}

/// A node's accept loop over an endpoint shared by two protocols: the
/// group's links go to the group, the others are refused here.
async fn dispatch(endpoint: LinkEndpoint, group: Arc<MetaGroup>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(link) = incoming.accept().await else {
            continue;
        };
        if link.alpn().as_deref() == Some(META_ALPN) {
            group.serve_link(link);
        } else {
            link.close(0, "no replication in this test");
        }
    }
}

/// `names` on loopback, each started (not initialized); the last one
/// shares its endpoint with replication ([`Inbound::Dispatched`]).
async fn nodes(root: &Path, names: &[&str], snapshots: (u64, u64)) -> Vec<Node> {
    let count = names.len();
    let mut nodes: Vec<Node> = cluster_identities(root, names)
        .into_iter()
        .enumerate()
        .map(|(i, identity)| {
            let inbound = if count > 1 && i == count - 1 {
                Inbound::Dispatched
            } else {
                Inbound::Accept
            };
            Node::new(root, identity, inbound)
        })
        .collect();
    for node in &mut nodes {
        node.start(snapshots).await;
    }
    nodes
}

fn members(nodes: &[Node]) -> BTreeMap<NodeId, String> {
    nodes.iter().map(|n| (n.id, n.addr.clone())).collect()
}

fn by_id(nodes: &[Node], id: NodeId) -> &Node {
    nodes.iter().find(|n| n.id == id).expect("a known node")
}

fn info(name: &str, shard: u32) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        client_addr: format!("{name}:7000"),
        link_addr: format!("{name}:7001"),
        shard: ShardId(shard),
    }
}

/// The `n`-th command of a test history: create, then one shard per step.
fn command(n: u32) -> MapCommand {
    if n == 0 {
        return MapCommand::Create { vnodes: 16 };
    }
    let name = format!("s{n}");
    MapCommand::AddShard {
        id: ShardId(n),
        primary: NodeId::of_name(&name),
        info: info(&name, n),
    }
}

/// Proposes commands `range` on `leader`, checking the versions it reports.
async fn propose_all(leader: &Node, range: std::ops::Range<u32>) -> u64 {
    let mut version = 0;
    for n in range {
        version = leader.group().propose(command(n)).await.unwrap();
        assert_eq!(version, u64::from(n) + 1);
    }
    version
}

#[test]
fn voters_are_picked_deterministically() {
    let ids = |v: &[u64]| v.iter().map(|&i| NodeId(i)).collect::<BTreeSet<_>>();
    assert_eq!(pick_voters(&ids(&[]), &ids(&[1])), ids(&[1]));
    assert_eq!(pick_voters(&ids(&[]), &ids(&[2, 1])), ids(&[1]));
    assert_eq!(pick_voters(&ids(&[]), &ids(&[4, 3, 2, 1])), ids(&[1, 2, 3]));
    assert_eq!(
        pick_voters(&ids(&[]), &ids(&[1, 2, 3, 4, 5, 6, 7])).len(),
        5
    );
    // Current voters stay while they are there; a gone one is replaced.
    assert_eq!(
        pick_voters(&ids(&[5, 6, 7]), &ids(&[1, 2, 3, 4, 5, 6, 7])),
        ids(&[1, 2, 5, 6, 7])
    );
    assert_eq!(
        pick_voters(&ids(&[5, 6, 9]), &ids(&[1, 2, 5, 6])),
        ids(&[1, 5, 6])
    );
}

/// Three voters form a group; every member's channel shows the same
/// committed map; a follower answers with the leader; a refused command is
/// committed without changing the map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_agree_on_the_map() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = nodes(root.path(), &["n1", "n2", "n3"], (1000, 100)).await;
    nodes[0].group().initialize(&members(&nodes)).await.unwrap();
    let leader_id = nodes[0].await_leader(None).await;
    let leader = by_id(&nodes, leader_id);
    let version = propose_all(leader, 0..4).await;
    let refused = leader.group().propose(command(2)).await.unwrap_err();
    assert!(
        matches!(refused, MetaError::Refused(MapError::DuplicateShard { .. })),
        "{refused}"
    );
    let first = nodes[0].await_version(version).await;
    for node in &nodes {
        let map = node.await_version(version).await;
        assert_eq!(*map, *first, "node {} has another map", node.id.0);
        assert_eq!(
            map.version(),
            version,
            "the refused command changed nothing"
        );
    }
    let follower = nodes.iter().find(|n| n.id != leader_id).unwrap();
    match follower.group().propose(command(9)).await {
        Err(MetaError::NotLeader {
            leader: Some(LeaderRef { id, addr }),
        }) => {
            assert_eq!(id, leader_id);
            assert_eq!(addr.as_deref(), Some(leader.addr.as_str()));
        }
        other => panic!("a follower took a proposal: {other:?}"),
    }
    let status = leader.group().status();
    assert_eq!(status.role, MetaRole::Leader);
    assert_eq!(status.voters, members(&nodes).into_keys().collect());
    assert!(status.learners.is_empty());
    assert_eq!(status.members, members(&nodes));
    assert!(status.committed_index >= status.applied_index);
    assert_eq!(
        nodes[0]
            .group()
            .initialize(&members(&nodes))
            .await
            .unwrap_err()
            .to_string(),
        MetaError::AlreadyInitialized.to_string()
    );
    for node in &mut nodes {
        node.stop().await;
    }
}

/// The leader stops: the other two elect one of themselves, and
/// proposals go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_elects_a_new_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = nodes(root.path(), &["n1", "n2", "n3"], (1000, 100)).await;
    nodes[0].group().initialize(&members(&nodes)).await.unwrap();
    let old = nodes[0].await_leader(None).await;
    let version = propose_all(by_id(&nodes, old), 0..2).await;
    let at = nodes.iter().position(|n| n.id == old).unwrap();
    let mut gone = nodes.remove(at);
    gone.stop().await;
    let new = nodes[0].await_leader(Some(old)).await;
    assert_ne!(new, old);
    assert_eq!(nodes[1].await_leader(Some(old)).await, new);
    let leader = by_id(&nodes, new);
    assert!(leader.group().status().term > 0);
    let next = leader.group().propose(command(2)).await.unwrap();
    assert_eq!(next, version + 1);
    for node in &nodes {
        assert_eq!(node.await_version(next).await.version(), next);
    }
    for node in &mut nodes {
        node.stop().await;
    }
}

/// A member restarted from its directory has its vote, log, membership
/// and map before it hears from anyone, then catches up with what it
/// missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_vote_log_and_map() {
    let root = tempfile::tempdir().unwrap();
    // Snapshots every 3 entries, so the restart reads a snapshot and the
    // entries after it.
    let mut nodes = nodes(root.path(), &["n1", "n2", "n3"], (3, 1)).await;
    nodes[0].group().initialize(&members(&nodes)).await.unwrap();
    let leader_id = nodes[0].await_leader(None).await;
    let version = propose_all(by_id(&nodes, leader_id), 0..5).await;
    let at = nodes.iter().position(|n| n.id != leader_id).unwrap();
    let before_map = nodes[at].await_version(version).await;
    let before = nodes[at].group().status();
    nodes[at].stop().await;
    nodes[at].start((3, 1)).await;
    let after = nodes[at].group().status();
    let map = nodes[at].group().map().borrow().clone();
    assert_eq!(*map, *before_map, "the map is back before any message");
    assert!(after.term >= before.term);
    // `status` is the library's metrics, which may trail the map watch by
    // an append: the log is back at least as far as it was seen.
    assert!(after.last_log_index >= before.last_log_index);
    assert_eq!(after.members, before.members);
    assert!(after.applied_index >= before.applied_index);
    assert!(
        after.snapshot_index.is_some(),
        "it restarted from a snapshot"
    );
    // It rejoins: new commands reach it.
    let leader = by_id(&nodes, leader_id);
    let next = leader.group().propose(command(5)).await.unwrap();
    assert_eq!(nodes[at].await_version(next).await.version(), next);
    for node in &mut nodes {
        node.stop().await;
    }
}

/// A lone voter restarted comes back as the leader of its group with its
/// map, and takes proposals again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_member_restarts_as_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = nodes(root.path(), &["n1"], (1000, 100)).await;
    nodes[0].group().initialize(&members(&nodes)).await.unwrap();
    nodes[0].await_leader(None).await;
    let version = propose_all(&nodes[0], 0..3).await;
    nodes[0].stop().await;
    nodes[0].start((1000, 100)).await;
    assert_eq!(nodes[0].group().map().borrow().version(), version);
    assert_eq!(nodes[0].await_leader(None).await, nodes[0].id);
    assert_eq!(propose_all(&nodes[0], 3..4).await, version + 1);
    nodes[0].stop().await;
}

/// Learners added after the log was compacted receive the map by a
/// snapshot, then by entries; promoted, they vote and the group goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_receive_the_map_and_can_be_promoted() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = nodes(root.path(), &["n1", "n2", "n3"], (3, 0)).await;
    let first = &nodes[0];
    first.group().initialize(&BTreeMap::new()).await.unwrap();
    first.await_leader(None).await;
    let version = propose_all(first, 0..6).await;
    first
        .group()
        .await_status(BOUND, "a purged log", |s| s.purged_index.is_some())
        .await
        .unwrap();
    for learner in &nodes[1..] {
        first
            .group()
            .add_learner(learner.id, learner.addr.clone())
            .await
            .unwrap();
    }
    for learner in &nodes[1..] {
        let map = learner.await_version(version).await;
        assert_eq!(*map, *first.await_version(version).await);
        let status = learner.group().status();
        assert_eq!(status.role, MetaRole::Learner);
        assert_eq!(status.leader, Some(first.id));
    }
    let status = first.group().status();
    assert_eq!(status.learners, nodes[1..].iter().map(|n| n.id).collect());
    assert_eq!(status.members[&first.id], first.group().addr());
    let all: BTreeSet<NodeId> = nodes.iter().map(|n| n.id).collect();
    let too_many = first.group().change_voters(&BTreeSet::new()).await;
    assert!(matches!(too_many, Err(MetaError::VoterCount(0))));
    first
        .group()
        .change_voters(&pick_voters(&status.voters, &all))
        .await
        .unwrap();
    let status = first.group().status();
    assert_eq!(status.voters, all);
    assert!(status.learners.is_empty());
    let next = first.group().propose(command(6)).await.unwrap();
    for node in &nodes {
        assert_eq!(node.await_version(next).await.version(), next);
    }
    // The last node leaves: demoted to learner, then removed.
    let leaving = BTreeSet::from([nodes[2].id]);
    let still_voter = first.group().remove_learners(&leaving).await;
    assert!(
        matches!(still_voter, Err(MetaError::Membership(_))),
        "{still_voter:?}"
    );
    let staying: BTreeSet<NodeId> = all.difference(&leaving).copied().collect();
    first.group().change_voters(&staying).await.unwrap();
    first.group().remove_learners(&leaving).await.unwrap();
    let status = first.group().status();
    assert_eq!(status.voters, staying);
    assert_eq!(
        status.members.keys().copied().collect::<BTreeSet<_>>(),
        staying
    );
    let last = first.group().propose(command(7)).await.unwrap();
    for node in &nodes[..2] {
        assert_eq!(node.await_version(last).await.version(), last);
    }
    for node in &mut nodes {
        node.stop().await;
    }
}

/// Names the data directory of [`crash_child`], and makes it run.
const CRASH_CHILD_DIR: &str = "STRATA_RAFT_CRASH_CHILD_DIR";

/// Prefix of the lines [`crash_child`] prints per acknowledged proposal.
const ACKNOWLEDGED: &str = "acknowledged version ";

/// A lone member proposing until killed with SIGKILL: the child process of
/// [`kill_9_keeps_acknowledged_proposals`], which runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of kill_9_keeps_acknowledged_proposals"]
async fn crash_child() {
    let Ok(root) = std::env::var(CRASH_CHILD_DIR) else {
        return;
    };
    let root = PathBuf::from(root);
    let identity = node_files(&root).load().unwrap();
    let mut node = Node::new(&root, identity, Inbound::Accept);
    node.start((4, 1)).await;
    let alone = BTreeMap::from([(node.id, node.addr.clone())]);
    node.group().initialize(&alone).await.unwrap();
    node.await_leader(None).await;
    for n in 0.. {
        let version = node.group().propose(command(n)).await.unwrap();
        println!("{ACKNOWLEDGED}{version}");
    }
}

/// The certificate files of the crash test's node.
fn node_files(root: &Path) -> ClusterTls {
    ClusterTls {
        ca: root.join("ca.crt"),
        cert: root.join("n1.crt"),
        key: root.join("n1.key"),
    }
}

/// A member killed with SIGKILL in the middle of proposing comes back
/// with every proposal it acknowledged, in its map as soon as it starts,
/// and goes on leading.
#[test]
fn kill_9_keeps_acknowledged_proposals() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let root = tempfile::tempdir().unwrap();
    let ca = test_ca("cluster");
    write_cluster_files(root.path(), &ca, "n1", &node_cert(&ca, "n1"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cluster::raft::tests::crash_child"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_DIR, root.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(version) = line.strip_prefix(ACKNOWLEDGED)
                && tx.send(version.parse::<u64>().unwrap()).is_err()
            {
                break;
            }
        }
    });
    let mut acknowledged = 0;
    while acknowledged < 20 {
        acknowledged = rx
            .recv_timeout(BOUND)
            .expect("the child acknowledges proposals");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let identity = node_files(root.path()).load().unwrap();
        let mut node = Node::new(root.path(), identity, Inbound::Accept);
        node.start((4, 1)).await;
        let version = node.group().map().borrow().version();
        assert!(
            version >= acknowledged,
            "restarted at version {version}, below the acknowledged {acknowledged}"
        );
        assert_eq!(node.await_leader(None).await, node.id);
        let next = node.group().propose(command(999)).await.unwrap();
        assert!(next > version);
        node.stop().await;
    });
}

/// A request in the name of another node than the one the peer's
/// certificate names is refused; in its own name it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_speaks_only_for_itself() {
    let root = tempfile::tempdir().unwrap();
    let mut identities = cluster_identities(root.path(), &["n1", "n2"]);
    let n2 = identities.pop().unwrap();
    let mut node = Node::new(root.path(), identities.pop().unwrap(), Inbound::Accept);
    node.start((1000, 100)).await;
    let server: SocketAddr = node.addr.parse().unwrap();
    let client = LinkEndpoint::client(server, n2.clone(), TransportLimits::default()).unwrap();
    let link = client
        .connect_for(server, "127.0.0.1", META_ALPN, BOUND)
        .await
        .unwrap();
    let ask = |node: NodeId| {
        let link = link.clone();
        async move {
            let (mut send, mut recv) = link.open().await.unwrap();
            let vote = wire::Vote {
                term: 1,
                node,
                committed: false,
            };
            send.send(&wire::MetaRequest::Vote { vote, last: None })
                .await
                .unwrap();
            send.finish();
            recv.recv::<wire::MetaResponse>().await.unwrap().unwrap()
        }
    };
    let forged = ask(NodeId::of_name("n3")).await;
    assert!(
        matches!(forged, wire::MetaResponse::Refused { .. }),
        "{forged:?}"
    );
    let own = ask(n2.node_id()).await;
    assert!(matches!(own, wire::MetaResponse::Vote { .. }), "{own:?}");
    node.stop().await;
}

/// A voter whose endpoint takes connections but never completes a
/// handshake (a hung node) holds up nothing: the two others form the
/// group and commit; started late, it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_voter_does_not_stall_the_group() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = cluster_identities(root.path(), &["n1", "n2", "n3"])
        .into_iter()
        .map(|identity| Node::new(root.path(), identity, Inbound::Accept))
        .collect();
    for node in &mut nodes[..2] {
        node.start((1000, 100)).await;
    }
    nodes[0].group().initialize(&members(&nodes)).await.unwrap();
    let leader_id = nodes[0].await_leader(None).await;
    assert_ne!(leader_id, nodes[2].id);
    let version = propose_all(by_id(&nodes, leader_id), 0..3).await;
    for node in &nodes[..2] {
        assert_eq!(node.await_version(version).await.version(), version);
    }
    nodes[2].start((1000, 100)).await;
    assert_eq!(nodes[2].await_version(version).await.version(), version);
    for node in &mut nodes {
        node.stop().await;
    }
}

/// The group follows a node set: four nodes make three voters and a
/// learner; when a voter leaves, the learner takes its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_follow_the_node_set() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = nodes(root.path(), &["n1", "n2", "n3", "n4"], (1000, 100)).await;
    nodes.sort_by_key(|n| n.id);
    let first = &nodes[3];
    first.group().initialize(&BTreeMap::new()).await.unwrap();
    first.await_leader(None).await;
    let status = first
        .group()
        .reconcile_members(&members(&nodes))
        .await
        .unwrap();
    let ids = |range: &[Node]| range.iter().map(|n| n.id).collect::<BTreeSet<_>>();
    // The current voter stays; the two lowest of the others join it.
    let voters: BTreeSet<NodeId> = ids(&nodes[..2]).into_iter().chain([first.id]).collect();
    assert_eq!(status.voters, voters);
    assert_eq!(status.learners, ids(&nodes[2..3]));
    let version = propose_all(first, 0..2).await;
    for node in &nodes {
        assert_eq!(node.await_version(version).await.version(), version);
    }
    // Node 0, a voter, leaves: node 2, the learner, becomes a voter.
    let gone = nodes[0].id;
    let staying = members(&nodes[1..]);
    let status = first.group().reconcile_members(&staying).await.unwrap();
    assert_eq!(status.voters, ids(&nodes[1..]));
    assert!(status.learners.is_empty());
    assert!(!status.members.contains_key(&gone));
    let next = propose_all(first, 2..3).await;
    for node in &nodes[1..] {
        assert_eq!(node.await_version(next).await.version(), next);
    }
    for node in &mut nodes {
        node.stop().await;
    }
}
