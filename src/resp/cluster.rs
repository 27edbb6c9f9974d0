//! The gateway as a Redis Cluster node: `CLUSTER` and redirects.
//!
//! Outside a cluster the node is one shard owning every slot, so
//! cluster-aware clients pointed at it route everything here. In cluster
//! mode the topology is the committed map's: its shards, the slot table,
//! and each node's gateway address as the node registered it
//! (`MapCommand::SetGateway`). A keyed command for a slot of another shard
//! gets `-MOVED slot host:port` naming that shard's primary's gateway; a
//! write on a replica, or a read there without `READONLY`, is sent to the
//! shard's primary the same way; keys of one command must share a slot
//! (`-CROSSSLOT`); a slot cutting over to another shard gets `-TRYAGAIN`.
//! strata moves a slot's keys before it hands the slot over, so it never
//! answers `-ASK` (`ASKING` is accepted and changes nothing).

use bytes::Bytes;

use super::commands::{Spec, is, unknown_subcommand, wrong_arity};
use super::reply::{OK, Reply};
use super::session::Session;
use crate::cluster::ring::ShardId;
use crate::cluster::slot::{SLOTS, Slot, key_slot};
use crate::cluster::{ClusterMap, node::ClusterNode};
use crate::types::NodeId;

/// The last slot.
const LAST_SLOT: u16 = SLOTS - 1;

pub(crate) fn run(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let sub = &a[1];
    if is(sub, "keyslot") {
        return match a.len() {
            3 => Ok(Reply::Int(key_slot(&a[2]).get().into())),
            _ => Err(wrong_arity("cluster|keyslot")),
        };
    }
    let topology = Topology::of(s)?;
    match () {
        () if is(sub, "myid") => Ok(Reply::bulk(topology.me.clone())),
        () if is(sub, "myshardid") => Ok(Reply::bulk(topology.my_shard.clone())),
        () if is(sub, "info") => Ok(Reply::Text(topology.info())),
        () if is(sub, "nodes") => Ok(Reply::Text(topology.nodes())),
        () if is(sub, "slots") => Ok(topology.slots()),
        () if is(sub, "shards") => Ok(topology.shards()),
        () if is(sub, "countkeysinslot") || is(sub, "getkeysinslot") => Err(Reply::err(
            "ERR strata does not count or list keys by slot through the gateway",
        )),
        () if is(sub, "reset") || is(sub, "saveconfig") => Ok(OK),
        () => Err(unknown_subcommand("cluster", sub)),
    }
}

/// Redis's 40-hex-digit form of an id.
fn redis_id(id: u64) -> String {
    format!("{id:040x}")
}

/// One node as `CLUSTER` describes it.
struct Member {
    id: String,
    host: String,
    port: u16,
    primary: bool,
    myself: bool,
}

/// One shard: its slot ranges and its nodes with a gateway, primary first.
struct Shard {
    epoch: u64,
    ranges: Vec<(u16, u16)>,
    members: Vec<Member>,
}

/// What `CLUSTER SLOTS`, `SHARDS`, `NODES` and `INFO` describe.
struct Topology {
    me: String,
    my_shard: String,
    my_epoch: u64,
    shards: Vec<Shard>,
    /// Whether every slot has an owner whose primary clients can reach.
    ok: bool,
}

impl Topology {
    fn of(s: &Session) -> Result<Topology, Reply> {
        match s.gw.node.cluster() {
            Ok(Some(member)) => Ok(Self::of_map(&member.map(), member.id())),
            Ok(None) => Ok(Self::standalone(s)),
            Err(e) => Err(super::reply::from_error(&e)),
        }
    }

    /// One shard of this node alone, reached where the client reached it.
    fn standalone(s: &Session) -> Topology {
        let seed = match s.gw.node.repl.node_id() {
            Some(id) => id.0,
            None => u64::from(s.gw.listen.port()),
        };
        let me = Member {
            id: redis_id(seed),
            host: s.local.ip().to_string(),
            port: s.local.port(),
            primary: true,
            myself: true,
        };
        Topology {
            me: me.id.clone(),
            my_shard: me.id.clone(),
            my_epoch: 1,
            shards: vec![Shard {
                epoch: 1,
                ranges: vec![(0, LAST_SLOT)],
                members: vec![me],
            }],
            ok: true,
        }
    }

    fn of_map(map: &ClusterMap, me: NodeId) -> Topology {
        let ranges = map.slot_table().map(|t| t.ranges()).unwrap_or_default();
        let member = |id: NodeId, primary: bool| {
            let (host, port) = crate::net::split_host_port(map.gateway(id)?)?;
            Some(Member {
                id: redis_id(id.0),
                host: host.to_string(),
                port,
                primary,
                myself: id == me,
            })
        };
        let shards: Vec<Shard> = map
            .shards()
            .iter()
            .map(|(&shard, info)| Shard {
                epoch: info.epoch,
                ranges: ranges
                    .iter()
                    .filter(|r| r.shard == shard)
                    .map(|r| (r.first.get(), r.last.get()))
                    .collect(),
                members: std::iter::once(member(info.primary, true))
                    .chain(info.replicas.iter().map(|&r| member(r, false)))
                    .flatten()
                    .collect(),
            })
            .collect();
        let reachable = |s: &Shard| s.members.first().is_some_and(|m| m.primary);
        let my_shard = map.nodes().get(&me).map(|n| n.shard);
        Topology {
            me: redis_id(me.0),
            my_shard: redis_id(my_shard.map_or(0, |s| s.0.into())),
            my_epoch: my_shard
                .and_then(|s| map.shards().get(&s))
                .map_or(0, |s| s.epoch),
            ok: !ranges.is_empty() && shards.iter().all(|s| s.ranges.is_empty() || reachable(s)),
            shards,
        }
    }

    fn info(&self) -> String {
        let assigned: u32 = self
            .shards
            .iter()
            .flat_map(|s| &s.ranges)
            .map(|&(a, b)| u32::from(b - a) + 1)
            .sum();
        let known: usize = self.shards.iter().map(|s| s.members.len()).sum();
        let size = self.shards.iter().filter(|s| !s.ranges.is_empty()).count();
        let current = self.shards.iter().map(|s| s.epoch).max().unwrap_or(0);
        let state = if self.ok { "ok" } else { "fail" };
        format!(
            "cluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\n\
             cluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
             cluster_known_nodes:{known}\r\ncluster_size:{size}\r\n\
             cluster_current_epoch:{current}\r\ncluster_my_epoch:{}\r\n",
            self.my_epoch
        )
    }

    /// `CLUSTER NODES`: a line per node, the primary's carrying its slots.
    fn nodes(&self) -> String {
        let mut out = String::new();
        for shard in &self.shards {
            let primary = shard.members.iter().find(|m| m.primary);
            for m in &shard.members {
                let role = if m.primary { "master" } else { "slave" };
                let flags = if m.myself {
                    format!("myself,{role}")
                } else {
                    role.to_string()
                };
                let master = match (m.primary, primary) {
                    (false, Some(p)) => p.id.as_str(),
                    _ => "-",
                };
                out.push_str(&format!(
                    "{} {}:{}@0 {flags} {master} 0 0 {} connected",
                    m.id, m.host, m.port, shard.epoch
                ));
                if m.primary {
                    for &(a, b) in &shard.ranges {
                        match a == b {
                            true => out.push_str(&format!(" {a}")),
                            false => out.push_str(&format!(" {a}-{b}")),
                        }
                    }
                }
                out.push('\n');
            }
        }
        out
    }

    /// `CLUSTER SLOTS`: each range with its primary, then its replicas; a
    /// range whose primary has no gateway is left out.
    fn slots(&self) -> Reply {
        let mut ranges: Vec<(u16, u16, &Shard)> = self
            .shards
            .iter()
            .filter(|s| s.members.first().is_some_and(|m| m.primary))
            .flat_map(|s| s.ranges.iter().map(move |&(a, b)| (a, b, s)))
            .collect();
        ranges.sort_unstable_by_key(|&(a, _, _)| a);
        let node = |m: &Member| {
            Reply::Array(vec![
                Reply::bulk(m.host.clone()),
                Reply::Int(m.port.into()),
                Reply::bulk(m.id.clone()),
                Reply::Array(vec![]),
            ])
        };
        let entries = ranges.into_iter().map(|(a, b, shard)| {
            let head = [Reply::Int(a.into()), Reply::Int(b.into())];
            Reply::Array(
                head.into_iter()
                    .chain(shard.members.iter().map(node))
                    .collect(),
            )
        });
        Reply::Array(entries.collect())
    }

    fn shards(&self) -> Reply {
        let node = |m: &Member| {
            let role = if m.primary { "master" } else { "replica" };
            Reply::Map(vec![
                (Reply::bulk("id"), Reply::bulk(m.id.clone())),
                (Reply::bulk("port"), Reply::Int(m.port.into())),
                (Reply::bulk("ip"), Reply::bulk(m.host.clone())),
                (Reply::bulk("endpoint"), Reply::bulk(m.host.clone())),
                (Reply::bulk("role"), Reply::bulk(role)),
                (Reply::bulk("replication-offset"), Reply::Int(0)),
                (Reply::bulk("health"), Reply::bulk("online")),
            ])
        };
        let shard = |s: &Shard| {
            let slots = s
                .ranges
                .iter()
                .flat_map(|&(a, b)| [Reply::Int(a.into()), Reply::Int(b.into())]);
            Reply::Map(vec![
                (Reply::bulk("slots"), Reply::Array(slots.collect())),
                (
                    Reply::bulk("nodes"),
                    Reply::Array(s.members.iter().map(node).collect()),
                ),
            ])
        };
        Reply::Array(self.shards.iter().map(shard).collect())
    }
}

/// The slot all of a command's keys (by its spec's key positions) share:
/// `None` for a command without keys, `-CROSSSLOT` if they do not share one.
pub(crate) fn command_slot(spec: &Spec, args: &[Bytes]) -> Result<Option<Slot>, Reply> {
    let (first, last, step) = spec.keys;
    if first <= 0 || step <= 0 {
        return Ok(None);
    }
    let n = args.len() as i64;
    let last = if last < 0 { n + last } else { last.min(n - 1) };
    let mut slots = (first..=last)
        .step_by(step as usize)
        .filter_map(|i| args.get(i as usize))
        .map(|key| key_slot(key));
    let Some(slot) = slots.next() else {
        return Ok(None);
    };
    match slots.all(|other| other == slot) {
        true => Ok(Some(slot)),
        false => Err(Reply::err(
            "CROSSSLOT Keys in request don't hash to the same slot",
        )),
    }
}

/// In cluster mode, the redirect (or `-CROSSSLOT`) a keyed command gets
/// instead of running here. A member still starting lets the command run
/// into the node's own refusal.
pub(crate) fn route(s: &Session, spec: &Spec, args: &[Bytes]) -> Result<(), Reply> {
    let Ok(Some(member)) = s.gw.node.cluster() else {
        return Ok(());
    };
    let Some(slot) = command_slot(spec, args)? else {
        return Ok(());
    };
    let write = spec.flags.contains(&"write");
    match redirect(member, slot, write, s.readonly) {
        Some(reply) => Err(reply),
        None => Ok(()),
    }
}

/// Where a command for `slot` must go instead of this node, Redis
/// Cluster's way, if anywhere: `write` commands go to the owner's primary,
/// reads too unless the connection said `READONLY` (then a replica of the
/// owner serves them).
pub(crate) fn redirect(
    member: &ClusterNode,
    slot: Slot,
    write: bool,
    readonly: bool,
) -> Option<Reply> {
    let map = member.map();
    let Some(table) = map.slot_table() else {
        return Some(Reply::err("CLUSTERDOWN Hash slot not served"));
    };
    let owner = table.owner(slot);
    let mine = map.nodes().get(&member.id()).map(|n| n.shard) == Some(owner);
    let primary = map.shards().get(&owner).map(|s| s.primary);
    if mine && (primary == Some(member.id()) || (!write && readonly)) {
        return crate::cluster::migrate::fenced(&map, slot).map(|_| {
            Reply::err(format!(
                "TRYAGAIN slot {} is moving to another shard; retry in a moment",
                slot.get()
            ))
        });
    }
    Some(moved(&map, slot, owner, primary))
}

/// `-MOVED slot host:port` to `owner`'s primary's gateway.
fn moved(map: &ClusterMap, slot: Slot, owner: ShardId, primary: Option<NodeId>) -> Reply {
    match primary.and_then(|p| map.gateway(p)) {
        Some(addr) => Reply::err(format!("MOVED {} {addr}", slot.get())),
        None => Reply::err(format!(
            "CLUSTERDOWN slot {} belongs to shard {owner}, whose primary has no RESP gateway \
             in the cluster map",
            slot.get()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::commands::lookup;

    fn slot_of(args: &[&str]) -> Result<Option<Slot>, Reply> {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        command_slot(lookup(&args[0]).unwrap(), &args)
    }

    #[test]
    fn a_commands_keys_share_a_slot_or_it_is_refused() {
        let tag = Some(key_slot(b"t"));
        assert_eq!(slot_of(&["GET", "{t}1"]).unwrap(), tag);
        // MSET's keys are every other argument: its values do not count.
        assert_eq!(slot_of(&["MSET", "{t}1", "x", "{t}2", "y"]).unwrap(), tag);
        assert_eq!(slot_of(&["DEL", "{t}1", "{t}2", "t"]).unwrap(), tag);
        assert_eq!(slot_of(&["PING"]).unwrap(), None);
        assert_eq!(slot_of(&["SCAN", "0"]).unwrap(), None);
        for cross in [
            &["MGET", "a", "b"][..],
            &["MSET", "{t}1", "x", "other", "y"],
        ] {
            let e = slot_of(cross).unwrap_err();
            assert_eq!(
                e,
                Reply::err("CROSSSLOT Keys in request don't hash to the same slot")
            );
        }
    }
}
