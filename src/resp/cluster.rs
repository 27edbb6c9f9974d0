//! `CLUSTER`: outside a cluster, the node is one shard owning every slot,
//! so cluster-aware clients pointed at it route everything here. In
//! cluster mode only `KEYSLOT` is answered: the cluster map names each
//! node's QUIC address, not its gateway's, so the gateway cannot yet say
//! where a slot lives (nor answer `-MOVED`).

use bytes::Bytes;

use super::commands::{is, unknown_subcommand, wrong_arity};
use super::reply::{OK, Reply};
use super::session::Session;
use crate::cluster::slot::{SLOTS, key_slot};

/// The last slot.
const LAST_SLOT: i64 = SLOTS as i64 - 1;

pub(crate) fn run(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let sub = &a[1];
    if is(sub, "keyslot") {
        return match a.len() {
            3 => Ok(Reply::Int(key_slot(&a[2]).get().into())),
            _ => Err(wrong_arity("cluster|keyslot")),
        };
    }
    let topology = ["shards", "slots", "nodes", "info", "myid", "myshardid"];
    if s.gw.facts.cluster && topology.iter().any(|t| is(sub, t)) {
        return Err(Reply::err(
            "ERR this node is in a strata cluster, whose topology the RESP gateway does not \
             describe yet: use a client per node, or strata's own cluster client",
        ));
    }
    let me = Me::of(s);
    match () {
        () if is(sub, "myid") => Ok(Reply::bulk(me.id)),
        () if is(sub, "myshardid") => Ok(Reply::bulk(me.id)),
        () if is(sub, "info") => Ok(Reply::Text(info())),
        () if is(sub, "nodes") => Ok(Reply::Text(format!(
            "{} {}:{}@0 myself,master - 0 0 1 connected 0-{LAST_SLOT}\n",
            me.id, me.ip, me.port
        ))),
        () if is(sub, "slots") => Ok(Reply::Array(vec![Reply::Array(vec![
            Reply::Int(0),
            Reply::Int(LAST_SLOT),
            Reply::Array(vec![
                Reply::bulk(me.ip.clone()),
                Reply::Int(me.port.into()),
                Reply::bulk(me.id.clone()),
                Reply::Array(vec![]),
            ]),
        ])])),
        () if is(sub, "shards") => Ok(Reply::Array(vec![shard(&me)])),
        () if is(sub, "countkeysinslot") || is(sub, "getkeysinslot") => Err(Reply::err(
            "ERR strata does not index keys by slot outside a cluster",
        )),
        () if is(sub, "reset") || is(sub, "saveconfig") => Ok(OK),
        () => Err(unknown_subcommand("cluster", sub)),
    }
}

/// This node as the one member of its one shard.
struct Me {
    /// 40 hex digits, as Redis node ids are.
    id: String,
    /// Where the client reached the gateway: the address it can use again.
    ip: String,
    port: u16,
}

impl Me {
    fn of(s: &Session) -> Me {
        let seed = match s.gw.node.repl.node_id() {
            Some(id) => id.0,
            None => u64::from(s.gw.listen.port()),
        };
        Me {
            id: format!("{seed:040x}"),
            ip: s.local.ip().to_string(),
            port: s.local.port(),
        }
    }
}

fn info() -> String {
    format!(
        "cluster_state:ok\r\ncluster_slots_assigned:{SLOTS}\r\ncluster_slots_ok:{SLOTS}\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\n\
         cluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n"
    )
}

fn shard(me: &Me) -> Reply {
    let node = Reply::Map(vec![
        (Reply::bulk("id"), Reply::bulk(me.id.clone())),
        (Reply::bulk("port"), Reply::Int(me.port.into())),
        (Reply::bulk("ip"), Reply::bulk(me.ip.clone())),
        (Reply::bulk("endpoint"), Reply::bulk(me.ip.clone())),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("replication-offset"), Reply::Int(0)),
        (Reply::bulk("health"), Reply::bulk("online")),
    ]);
    Reply::Map(vec![
        (
            Reply::bulk("slots"),
            Reply::Array(vec![Reply::Int(0), Reply::Int(LAST_SLOT)]),
        ),
        (Reply::bulk("nodes"), Reply::Array(vec![node])),
    ])
}
