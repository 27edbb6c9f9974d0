//! A cluster member's metrics, read at scrape time: its map version, its
//! write lease, and on the metadata leader the heartbeat age of every node,
//! the failovers it carried out and the shards failing over now.

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::node::ClusterNode;
use crate::metrics::{Registry, ScrapeEncoder};

impl ClusterNode {
    /// Registers the member's families with the node's registry.
    pub fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(ClusterCollector(Arc::downgrade(self))));
    }
}

/// Weak, so that the registry never keeps the member alive.
#[derive(Debug)]
struct ClusterCollector(Weak<ClusterNode>);

impl Collector for ClusterCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        match self.0.upgrade() {
            Some(node) => encode(&node, &mut ScrapeEncoder::new(encoder)),
            None => Ok(()),
        }
    }
}

fn encode(node: &ClusterNode, e: &mut ScrapeEncoder) -> std::fmt::Result {
    let map = node.map();
    let health = node.health();
    e.gauge(
        "strata_cluster_map_version",
        "The committed cluster map version this node routes by",
        map.version() as f64,
    )?;
    e.gauge(
        "strata_cluster_lease_remaining_seconds",
        "Time left on this node's write lease (0: it takes no writes as a primary)",
        health.lease_left_ms() as f64 / 1000.0,
    )?;
    let failovers = health.failovers();
    e.counters(
        "strata_cluster_failovers",
        "Shard primaries this node replaced as metadata leader",
        [([] as [(&str, &str); 0], failovers.count)],
    )?;
    e.gauge(
        "strata_cluster_failover_waiting",
        "1 while a shard whose primary failed has no new primary yet (on the leader)",
        if failovers.waiting.is_some() {
            1.0
        } else {
            0.0
        },
    )?;
    encode_migrations(node, &map, e)?;
    let ids: Vec<_> = map.nodes().keys().copied().collect();
    if let Some(ages) = health.heartbeat_ages(node.group(), &ids) {
        let samples = ids.iter().zip(ages).map(|(id, age)| {
            let name = map
                .nodes()
                .get(id)
                .map_or(String::new(), |n| n.name.clone());
            ([("node", name)], age as f64 / 1000.0)
        });
        e.gauges(
            "strata_cluster_heartbeat_age_seconds",
            "Since the metadata leader last heard each node (on the leader)",
            samples,
        )?;
    }
    Ok(())
}

/// The migration this node's map shows, and its own imports and sweeps.
fn encode_migrations(
    node: &ClusterNode,
    map: &super::map::ClusterMap,
    e: &mut ScrapeEncoder,
) -> std::fmt::Result {
    let migrating = map.migration().is_some();
    e.gauge(
        "strata_cluster_migration_in_progress",
        "1 while the cluster map has a slot migration under way",
        if migrating { 1.0 } else { 0.0 },
    )?;
    let moving = if migrating { map.moves().len() } else { 0 };
    e.gauge(
        "strata_cluster_migration_moving_slots",
        "Slots changing shard in the migration under way",
        moving as f64,
    )?;
    let imports = node.migrations().imports();
    let live = imports
        .values()
        .filter(|i| map.migration().is_some_and(|m| m.id == i.migration));
    let (mut left, mut lag) = (0u64, 0u64);
    for import in live {
        left += import.total_bytes.saturating_sub(import.bytes);
        lag = lag.max(import.owner_last.saturating_sub(import.through));
    }
    e.gauge(
        "strata_cluster_import_remaining_bytes",
        "Estimated key and value bytes this receiver has still to copy",
        left as f64,
    )?;
    e.gauge(
        "strata_cluster_import_lag_records",
        "Owner writes this receiver has yet to follow (the largest over its owners)",
        lag as f64,
    )?;
    let swept = node
        .migrations()
        .swept_keys
        .load(std::sync::atomic::Ordering::Relaxed);
    e.counters(
        "strata_cluster_swept_keys",
        "Keys this node deleted as a primary because its shard gave their slots away",
        [([] as [(&str, &str); 0], swept)],
    )
}
