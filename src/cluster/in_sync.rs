//! A shard's in-sync set: the replicas whose acks its primary counts,
//! committed in the map before the primary relies on a change.
//!
//! ```text
//! primary: repl judges members every 100 ms (PrimaryCore::wanted_in_sync)
//!   -> in_sync_wanted watch -> in_sync_loop: SetInSync through the leader
//! every node, on each map: the map's primary of the shard counts acks
//!   from the map's in-sync set only (Replication::set_in_sync)
//! ```
//!
//! A member leaves when it has not received what the primary had
//! `in_sync_lag_ms` ago (or has been away that long); until the smaller
//! set is committed and applied here, writes that need its ack wait or
//! time out. A failover promotes only a member (`health.rs`), so a write
//! acknowledged by the whole set survives the loss of any replica that
//! left it. A replica joins once it has caught up by WAL.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{info, warn};

use super::map::{ClusterMap, ShardInfo};
use super::node::ClusterNode;
use super::raft::InSyncChange;
use super::ring::ShardId;
use crate::repl::Replication;
use crate::types::NodeId;

/// On every map: the map's primary of this node's shard counts acks from
/// the shard's committed in-sync set. A deposed primary keeps the last set
/// it had: a write still waiting there is acknowledged by those members
/// or times out, never by whichever replicas happen to stream.
pub(super) fn apply(repl: &Replication, me: NodeId, map: &ClusterMap, lag_ms: u64) {
    if let Some((_, shard)) = primary_of(map, me) {
        repl.set_in_sync(Some(names(map, &shard.in_sync).collect()), lag_ms);
    }
}

/// `me`'s shard, if `map` names `me` its primary.
pub(super) fn primary_of(map: &ClusterMap, me: NodeId) -> Option<(ShardId, &ShardInfo)> {
    let shard_id = map.nodes().get(&me)?.shard;
    let shard = map.shards().get(&shard_id)?;
    (shard.primary == me).then_some((shard_id, shard))
}

/// The names `map` gives `ids` (replica identities, as replication knows
/// them).
fn names<'a>(map: &'a ClusterMap, ids: &'a [NodeId]) -> impl Iterator<Item = String> + 'a {
    ids.iter()
        .filter_map(|id| map.nodes().get(id).map(|n| n.name.clone()))
}

/// Commits the in-sync set this node's replication wants while it is its
/// shard's primary, on each change and again every heartbeat until the
/// map has it, until the node goes.
pub(super) async fn in_sync_loop(node: Weak<ClusterNode>) {
    let Some(mut wanted) = node.upgrade().map(|n| n.repl().in_sync_wanted()) else {
        return;
    };
    loop {
        let Some(strong) = node.upgrade() else {
            return;
        };
        let every = Duration::from_millis(strong.health().timing().heartbeat_ms);
        let want = wanted.borrow_and_update().clone();
        if let Some(want) = want {
            commit(&strong, &want, every * 2).await;
        }
        drop(strong);
        if let Ok(Err(_)) = tokio::time::timeout(every, wanted.changed()).await {
            return;
        }
    }
}

/// Asks the leader for `want` (replica names) if the map names this node
/// its shard's primary and has another set.
async fn commit(node: &Arc<ClusterNode>, want: &BTreeSet<String>, deadline: Duration) {
    let map = node.map();
    let me = node.id();
    let Some((shard_id, shard)) = primary_of(&map, me) else {
        return;
    };
    let mut in_sync: Vec<NodeId> = want
        .iter()
        .map(|name| NodeId::of_name(name))
        .filter(|id| shard.replicas.contains(id))
        .collect();
    in_sync.sort_unstable();
    if in_sync == shard.in_sync {
        return;
    }
    let was: Vec<String> = names(&map, &shard.in_sync).collect();
    let now: Vec<String> = names(&map, &in_sync).collect();
    let change = InSyncChange {
        node: me,
        shard: shard_id,
        epoch: shard.epoch,
        in_sync,
    };
    match node.group().change_in_sync(change, deadline).await {
        Ok(version) if now.len() < was.len() => warn!(
            shard = shard_id.0,
            ?was,
            ?now,
            version,
            "in-sync set shrunk: a replica fell behind; writes no longer wait for it"
        ),
        Ok(version) => info!(
            shard = shard_id.0,
            ?was,
            ?now,
            version,
            "in-sync set changed"
        ),
        Err(e) => warn!(shard = shard_id.0, error = %e, "in-sync set change not committed yet"),
    }
}
