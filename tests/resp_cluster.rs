//! The RESP gateway in cluster mode is a Redis Cluster node as clients
//! know it: two shards of two nodes (c1..c4, each with a gateway), whose
//! `CLUSTER SLOTS`, `SHARDS`, `NODES` and `INFO` describe the committed
//! map with every node's gateway address, and whose keyed commands
//! redirect with `-MOVED` to the owner's primary (reads on a replica too,
//! until `READONLY`), refuse keys of two slots with `-CROSSSLOT`, and
//! route a client that follows redirects to every key it wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use common::cluster::{Member, create_cluster, eventually, gen_certs};
use common::resp::{Conn, Value};
use strata::cluster::key_slot;

const NAMES: [&str; 4] = ["c1", "c2", "c3", "c4"];

const SETTINGS: &str = "heartbeat_ms = 200\n[resp]\nlisten = \"127.0.0.1:0\"";

/// Each shard's primary and replica gateways, from the QUIC map.
struct Layout {
    /// By shard id: (primary gateway, replica gateway).
    shards: BTreeMap<u64, (SocketAddr, SocketAddr)>,
}

impl Layout {
    async fn of(members: &[Member], certs: &std::path::Path) -> Layout {
        let map = members[0]
            .ca_client(certs)
            .await
            .cluster_map()
            .await
            .unwrap();
        let gateway = |id: u64| {
            let name = &map.nodes.iter().find(|n| n.id == id).unwrap().name;
            let member = members.iter().find(|m| &m.name == name).unwrap();
            member.node.resp_addr.unwrap()
        };
        let shards = map
            .shards
            .iter()
            .map(|s| {
                (
                    u64::from(s.id),
                    (gateway(s.primary), gateway(s.replicas[0])),
                )
            })
            .collect();
        Layout { shards }
    }

    fn primaries(&self) -> BTreeSet<SocketAddr> {
        self.shards.values().map(|&(p, _)| p).collect()
    }
}

fn error(value: &Value) -> String {
    match value {
        Value::Error(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// `MOVED slot addr` as its parts.
fn moved(value: &Value) -> (u16, SocketAddr) {
    let e = error(value);
    let mut words = e.split(' ');
    assert_eq!(words.next(), Some("MOVED"), "{e}");
    let slot = words.next().unwrap().parse().unwrap();
    (slot, words.next().unwrap().parse().unwrap())
}

/// Runs `args` the way a cluster client does: at `start`, then wherever
/// `-MOVED` points (at most twice). The reply and where it came from.
async fn routed(start: SocketAddr, args: &[&str]) -> (Value, SocketAddr) {
    let mut at = start;
    for _ in 0..3 {
        let reply = Conn::connect(at).await.cmd(args).await;
        match &reply {
            Value::Error(e) if e.starts_with("MOVED ") => at = moved(&reply).1,
            _ => return (reply, at),
        }
    }
    panic!("{args:?} redirected more than twice");
}

/// The `(first, last, [node addresses])` entries of `CLUSTER SLOTS`.
fn slot_entries(value: Value) -> Vec<(i64, i64, Vec<SocketAddr>)> {
    let Value::Array(entries) = value else {
        panic!("CLUSTER SLOTS: {value:?}")
    };
    let int = |v: &Value| match v {
        Value::Int(n) => *n,
        other => panic!("not an int: {other:?}"),
    };
    entries
        .into_iter()
        .map(|e| {
            let Value::Array(items) = e else { panic!() };
            let nodes = items[2..]
                .iter()
                .map(|n| {
                    let Value::Array(n) = n else { panic!() };
                    format!("{}:{}", n[0].text(), int(&n[1])).parse().unwrap()
                })
                .collect();
            (int(&items[0]), int(&items[1]), nodes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_a_redis_cluster_node() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, Some(SETTINGS)))
        .collect();
    create_cluster(&members, &certs, 1);
    let layout = Layout::of(&members, &certs).await;
    let c1 = members[0].node.resp_addr.unwrap();

    // Every node registers its gateway; the map then lists all four.
    eventually("every gateway in the map", || async {
        let nodes = Conn::connect(c1).await.cmd(&["CLUSTER", "NODES"]).await;
        nodes.text().lines().count() == 4
    })
    .await;

    // SLOTS: every slot once, each range with its shard's primary first.
    let entries = slot_entries(Conn::connect(c1).await.cmd(&["CLUSTER", "SLOTS"]).await);
    let mut next = 0;
    for (first, last, nodes) in &entries {
        assert_eq!(*first, next, "ranges in order, without a gap");
        assert!(last >= first);
        next = last + 1;
        let shard = layout.shards.values().find(|(p, _)| *p == nodes[0]);
        let &(_, replica) = shard.unwrap_or_else(|| panic!("{nodes:?}: a primary first"));
        assert_eq!(nodes[1..], [replica]);
    }
    assert_eq!(next, 16384);
    assert!(
        entries.len() > 2,
        "a ring of 256 points a shard: many ranges"
    );

    let mut conn = Conn::connect(c1).await;
    let Value::Array(shards) = conn.cmd(&["CLUSTER", "SHARDS"]).await else {
        panic!()
    };
    assert_eq!(shards.len(), 2);
    let mut owned = 0;
    for shard in &shards {
        let Value::Array(bounds) = shard.get("slots") else {
            panic!()
        };
        for pair in bounds.chunks(2) {
            let [Value::Int(a), Value::Int(b)] = pair else {
                panic!()
            };
            owned += b - a + 1;
        }
        let Value::Array(nodes) = shard.get("nodes") else {
            panic!()
        };
        let roles: Vec<String> = nodes.iter().map(|n| n.get("role").text()).collect();
        assert_eq!(roles, ["master", "replica"]);
    }
    assert_eq!(owned, 16384);
    let info = conn.cmd(&["CLUSTER", "INFO"]).await.text();
    for line in [
        "cluster_state:ok",
        "cluster_known_nodes:4",
        "cluster_size:2",
    ] {
        assert!(info.contains(line), "{line} in {info}");
    }
    let myself: Vec<String> = conn
        .cmd(&["CLUSTER", "NODES"])
        .await
        .text()
        .lines()
        .filter(|l| l.contains("myself"))
        .map(String::from)
        .collect();
    assert_eq!(myself.len(), 1);
    assert!(myself[0].contains(&format!("127.0.0.1:{}@0 myself,master", c1.port())));
    conn.cmd(&["HELLO", "3"]).await;
    assert_eq!(conn.cmd(&["HELLO"]).await.get("mode").text(), "cluster");

    // A key of the other shard: MOVED to its primary's gateway.
    let (&other, &(owner, replica)) = layout.shards.iter().find(|(_, (p, _))| *p != c1).unwrap();
    let owner_of = |key: &str| {
        let slot = i64::from(key_slot(key.as_bytes()).get());
        let entry = entries.iter().find(|(a, b, _)| (*a..=*b).contains(&slot));
        entry.unwrap().2[0]
    };
    let key = (0..)
        .map(|i| format!("key:{i}"))
        .find(|k| owner_of(k) == owner)
        .unwrap();
    let slot = key_slot(key.as_bytes()).get();
    let mut conn = Conn::connect(c1).await;
    assert_eq!(moved(&conn.cmd(&["SET", &key, "v"]).await), (slot, owner));
    assert_eq!(moved(&conn.cmd(&["GET", &key]).await), (slot, owner));
    let mut at_owner = Conn::connect(owner).await;
    assert_eq!(at_owner.cmd(&["SET", &key, "v"]).await, Value::ok());

    // Its replica sends reads to the primary until READONLY, and writes
    // always.
    let mut at_replica = Conn::connect(replica).await;
    assert_eq!(moved(&at_replica.cmd(&["GET", &key]).await), (slot, owner));
    assert_eq!(at_replica.cmd(&["READONLY"]).await, Value::ok());
    eventually("the replica serving the key", || async {
        let mut c = Conn::connect(replica).await;
        c.cmd(&["READONLY"]).await;
        c.cmd(&["GET", &key]).await == Value::bulk("v")
    })
    .await;
    assert_eq!(
        moved(&at_replica.cmd(&["SET", &key, "w"]).await),
        (slot, owner)
    );
    assert_eq!(at_replica.cmd(&["READWRITE"]).await, Value::ok());
    assert_eq!(moved(&at_replica.cmd(&["GET", &key]).await), (slot, owner));

    // Keys of one command share a slot, or the command is refused.
    let (a, b) = ("{x}a", "nope:b");
    assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    let cross = error(&at_owner.cmd(&["MSET", a, "1", b, "2"]).await);
    assert_eq!(
        cross,
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    let (reply, _) = routed(c1, &["MSET", "{x}a", "1", "{x}b", "2"]).await;
    assert_eq!(reply, Value::ok());
    let (reply, _) = routed(c1, &["MGET", "{x}a", "{x}b"]).await;
    assert_eq!(reply, Value::bulks(&["1", "2"]));

    // A client that follows MOVED from one node reaches every key, on the
    // shard whose primary owns its slot.
    let mut served = BTreeMap::new();
    for i in 0..100 {
        let key = format!("user:{i}");
        let (reply, at) = routed(c1, &["SET", &key, &i.to_string()]).await;
        assert_eq!(reply, Value::ok());
        served.insert(key, at);
    }
    for (key, at) in &served {
        assert!(layout.primaries().contains(at));
        let (reply, again) = routed(c1, &["GET", key]).await;
        assert_eq!(reply, Value::bulk(&key[5..]));
        assert_eq!(again, *at);
    }
    let used: BTreeSet<&SocketAddr> = served.values().collect();
    assert_eq!(
        used.len(),
        2,
        "both shards took keys (shard {other} among them)"
    );
}
